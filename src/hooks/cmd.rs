//! `type: cmd`: the rendered params are the argv of a child process, started directly (no
//! shell; `params[0]` is looked up in `PATH` when it has no `/`). The child inherits
//! regsync's environment and working directory, reads nothing (stdin is null), and runs in
//! its own process group, so that a timeout, the run's cancellation or the run being dropped
//! (abandoned at the shutdown deadline) kills it and everything it started. Its stdout and stderr are read as they come (a full pipe never blocks it); the
//! first [`OUTPUT_LIMIT`](super::OUTPUT_LIMIT) bytes of each are logged at debug.

use super::{shown_output, HookError, OUTPUT_LIMIT};
use slog::Logger;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// After the child exited, how long its output pipes may stay open (held by something it
/// left running in the background) before we stop reading them.
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// Runs `argv` (at least the program) to completion; `Ok` on exit status 0.
pub async fn run(
    argv: &[String],
    timeout: Duration,
    cancel: &CancellationToken,
    log: &Logger,
) -> Result<(), HookError> {
    let Some(program) = argv.first() else {
        return Err(HookError::Invalid("a cmd hook needs a program".into()));
    };
    slog::debug!(log, "Hook running"; "type" => "cmd", "program" => program,
        "args" => argv.len() - 1);
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| HookError::Spawn {
        program: program.clone(),
        reason: e.to_string(),
    })?;
    // Declared after `child`, so dropped before it: the group is killed while its leader is
    // still unreaped, also when this future is dropped mid-run.
    let mut group = Group(child.id());
    let mut stdout = child.stdout.take().map(|o| tokio::spawn(read_bounded(o)));
    let mut stderr = child.stderr.take().map(|e| tokio::spawn(read_bounded(e)));
    let stopped = tokio::select! {
        status = child.wait() => Ok(status),
        _ = tokio::time::sleep(timeout) => Err(HookError::Timeout {
            what: format!("command {program:?}"),
            after: timeout,
        }),
        _ = cancel.cancelled() => Err(HookError::Canceled),
    };
    let status = match stopped {
        Ok(status) => {
            group.reaped();
            status
        }
        Err(e) => {
            drop(group);
            let _ = child.start_kill();
            let _ = child.wait().await;
            for h in [stdout.take(), stderr.take()].into_iter().flatten() {
                h.abort();
            }
            if e != HookError::Canceled {
                slog::debug!(log, "Hook killed"; "program" => program, "error" => %e);
            }
            return Err(e);
        }
    };
    let out = collect(stdout).await;
    let err = collect(stderr).await;
    slog::debug!(log, "Hook output"; "program" => program, "status" => status_text(&status),
        "stdout" => out, "stderr" => err);
    let status = status.map_err(|e| HookError::Spawn {
        program: program.clone(),
        reason: e.to_string(),
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(HookError::Exit {
            program: program.clone(),
            status: exit_text(&status),
        })
    }
}

/// `exit status 3`, `signal 9`.
fn exit_text(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => status.to_string(),
    }
}

fn status_text(status: &std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(s) => exit_text(s),
        Err(e) => e.to_string(),
    }
}

/// The hook's process group, killed when this is dropped before [`Group::reaped`]: on a
/// timeout or a cancellation, and when the run itself is dropped (its tasks dropped with the
/// runtime at the shutdown deadline), where tokio's `kill_on_drop` would kill the command
/// alone and leave what it started running.
struct Group(Option<u32>);

impl Group {
    /// The command exited and was reaped: its id may be reused from now on, so nothing is
    /// killed. Whatever it left running in the background is left alone, as a shell would.
    fn reaped(&mut self) {
        self.0 = None;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            kill_group(pgid);
        }
    }
}

/// SIGKILL to the process group `pgid` (the hook and whatever it started).
fn kill_group(pgid: u32) {
    let Ok(pgid) = i32::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours. The group is the
    // hook's own (`process_group(0)`), and its leader has not been reaped (see [`Group`]), so
    // the id cannot have been reused by another group.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// The first [`OUTPUT_LIMIT`] bytes of `r`, and how many more there were (read and dropped).
async fn read_bounded(mut r: impl AsyncRead + Unpin) -> (Vec<u8>, usize) {
    let mut kept = Vec::new();
    let mut dropped = 0;
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = OUTPUT_LIMIT.saturating_sub(kept.len());
                let take = room.min(n);
                kept.extend_from_slice(&buf[..take]);
                dropped += n - take;
            }
        }
    }
    (kept, dropped)
}

/// The output read so far, waiting at most [`PIPE_GRACE`] for the pipe to close.
async fn collect(handle: Option<JoinHandle<(Vec<u8>, usize)>>) -> String {
    let Some(mut handle) = handle else {
        return String::new();
    };
    match tokio::time::timeout(PIPE_GRACE, &mut handle).await {
        Ok(Ok((kept, dropped))) => shown_output(&kept, dropped),
        Ok(Err(_)) => String::new(),
        Err(_) => {
            handle.abort();
            "(output still open after the command exited; not read)".to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn exit_status_and_start_failure() {
        let log = crate::log::discard();
        let cancel = CancellationToken::new();
        let t = Duration::from_secs(10);
        assert_eq!(
            run(&argv(&["/bin/sh", "-c", "exit 0"]), t, &cancel, &log).await,
            Ok(())
        );
        assert_eq!(
            run(
                &argv(&["/bin/sh", "-c", "echo out; echo err >&2; exit 3"]),
                t,
                &cancel,
                &log
            )
            .await,
            Err(HookError::Exit {
                program: "/bin/sh".into(),
                status: "exit status 3".into()
            })
        );
        let e = run(&argv(&["/nonexistent/hook"]), t, &cancel, &log)
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("command \"/nonexistent/hook\" failed to start: "),
            "{e}"
        );
    }

    #[tokio::test]
    async fn large_output_does_not_block_the_command() {
        let log = crate::log::discard();
        let cancel = CancellationToken::new();
        // 1 MiB on stdout, far more than a pipe holds.
        let r = run(
            &argv(&["/bin/sh", "-c", "head -c 1048576 /dev/zero"]),
            Duration::from_secs(20),
            &cancel,
            &log,
        )
        .await;
        assert_eq!(r, Ok(()));
    }

    /// `sh -c` that starts a background grandchild (which would keep the pipes open for
    /// 300 s) and writes its pid to the returned file.
    fn with_background_child(dir: &tempfile::TempDir) -> (Vec<String>, std::path::PathBuf) {
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
        (argv(&["/bin/sh", "-c", &script]), pidfile)
    }

    /// Waits (up to 2 s) for the process whose pid `pidfile` holds to be gone; true if it is.
    async fn gone(pidfile: &std::path::Path) -> bool {
        let mut pid = None;
        for _ in 0..100 {
            pid = std::fs::read_to_string(pidfile)
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok());
            if pid.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let pid = pid.expect("the hook wrote no pid");
        for _ in 0..100 {
            // The grandchild is reparented and reaped elsewhere, or is a zombie at worst.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .to_string();
            if stat.is_empty() || state.starts_with('Z') {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // SAFETY: kill(2) with plain integers; the pid is the test's own sleep, still alive.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        false
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let log = crate::log::discard();
        let cancel = CancellationToken::new();
        let dir = tempfile::tempdir().unwrap();
        let (argv, pidfile) = with_background_child(&dir);
        let start = std::time::Instant::now();
        // Long enough for `sh` to write the pid on a busy machine before the group goes.
        let r = run(&argv, Duration::from_secs(2), &cancel, &log).await;
        assert!(matches!(r, Err(HookError::Timeout { .. })), "{r:?}");
        // Not the grandchild's 300 s.
        assert!(start.elapsed() < Duration::from_secs(60));
        assert!(
            gone(&pidfile).await,
            "background process survived the timeout"
        );
    }

    /// A run dropped while its command runs (the run abandoned at the shutdown deadline, its
    /// tasks dropped with the runtime) kills the whole group too, not only the command.
    #[tokio::test]
    async fn dropping_a_running_hook_kills_the_whole_group() {
        let log = crate::log::discard();
        let cancel = CancellationToken::new();
        let dir = tempfile::tempdir().unwrap();
        let (argv, pidfile) = with_background_child(&dir);
        // Boxed, so that `drop` below drops the future itself.
        let mut running = Box::pin(run(&argv, Duration::from_secs(60), &cancel, &log));
        // Until the pid is written, the hook runs; then the future is dropped mid-run.
        let mut written = false;
        for _ in 0..250 {
            tokio::select! {
                r = &mut running => panic!("the hook ended by itself: {r:?}"),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            if std::fs::metadata(&pidfile).is_ok_and(|m| m.len() > 0) {
                written = true;
                break;
            }
        }
        assert!(written, "the hook never started its background process");
        drop(running);
        assert!(gone(&pidfile).await, "background process survived the drop");
    }

    #[tokio::test]
    async fn cancel_stops_the_command() {
        let log = crate::log::discard();
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            c.cancel();
        });
        let start = std::time::Instant::now();
        let r = run(
            &argv(&["sleep", "300"]),
            Duration::from_secs(60),
            &cancel,
            &log,
        )
        .await;
        assert_eq!(r, Err(HookError::Canceled));
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
