//! Live progress on a terminal (operations issue, "Progress"): under a pseudo-terminal `once`
//! and `check` draw one line per running step (`sync[N] source -> target`, images done of
//! selected) and a total line, and take them down before the `Sync summary` line; in a pipe,
//! with `--progress=false`, `REGSYNC_PROGRESS=false`, `--logopt json` or in `server`, nothing
//! but log lines reaches stderr.
//!
//! Offline: the source is the OCI layout shipped in `config-examples/quickstart/hello` (three
//! tags), the targets are OCI layouts in a temp dir. The pseudo-terminal is util-linux
//! `script`, which runs the command on a pty and copies what it writes to our pipe.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_regsync");

/// The text a step's progress line starts with, as the tests' configs name the steps.
const STEP0: &str = "sync[0] ocidir://src/hello -> ocidir://mirror/hello";
const STEP1: &str = "sync[1] ocidir://src/hello:v1 -> ocidir://mirror/single:v1";
/// What only a progress line contains (log lines never write an arrow).
const ARROW: &str = " -> ";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// A scratch directory with the shipped layout as `src/hello` and `regsync.yml`: a repository
/// step (three tags) and an image step (one), relative paths so the lines stay short.
struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new() -> Work {
        Self::with_steps(
            "  - source: ocidir://src/hello\n    target: ocidir://mirror/hello\n    type: repository\n\
             \x20 - source: ocidir://src/hello:v1\n    target: ocidir://mirror/single:v1\n    type: image\n",
        )
    }

    fn with_steps(steps: &str) -> Work {
        let dir = tempfile::Builder::new()
            .prefix("regsync-progress")
            .tempdir()
            .unwrap();
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("config-examples/quickstart");
        copy_dir(&examples.join("hello"), &dir.path().join("src/hello"));
        let config =
            format!("version: 1\ndefaults:\n  parallel: 2\n  interval: 1h\nsync:\n{steps}");
        std::fs::write(dir.path().join("regsync.yml"), config).unwrap();
        Work { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn env(&self, cmd: &mut Command, env: &[(&str, &str)]) {
        cmd.current_dir(self.path())
            .env("TERM", "xterm")
            .env("DOCKER_CONFIG", self.path().join("docker"))
            .env_remove("REGSYNC_PROGRESS")
            .env_remove("REGSYNC_LISTEN")
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
    }

    /// `regsync <args> -c regsync.yml` on a pseudo-terminal (stdin, stdout and stderr all on
    /// it) of 200 columns, wide enough for every step's name; returns everything written there
    /// and the exit status of regsync.
    fn on_pty(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut line = String::from("stty cols 200 rows 50 && exec ");
        line.push_str(&shell_quote(BIN));
        for a in args.iter().chain(&["-c", "regsync.yml"]) {
            line.push(' ');
            line.push_str(&shell_quote(a));
        }
        let mut cmd = Command::new("/usr/bin/script");
        cmd.args(["-qec", &line, "/dev/null"]);
        self.env(&mut cmd, env);
        cmd.output().expect("run script(1)")
    }

    /// `regsync <args> -c regsync.yml` with stdout and stderr on pipes.
    fn in_pipe(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args).args(["-c", "regsync.yml"]);
        self.env(&mut cmd, env);
        cmd.output().expect("run regsync")
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `s` without ANSI escape sequences (CSI `ESC [ … final`, and two-byte `ESC x`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

/// The screen lines of a terminal transcript: escapes removed, split at `\r` and `\n`.
fn screen_lines(raw: &str) -> Vec<String> {
    strip_ansi(raw)
        .split(['\r', '\n'])
        .map(|l| l.trim_end().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The first `done/selected` of `text` (`3/3`), if it is numbers (not `3/?` while listing).
fn done_of_selected(text: &str) -> Option<(u64, u64)> {
    let word = text.split_whitespace().find(|w| w.contains('/'))?;
    let (a, b) = word.split_once('/')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Whether the display drew `name` followed by `done/selected` = `want` at least once. The
/// display's lines are as wide as the terminal and follow each other without a newline (the
/// terminal wraps them), so each drawing of `name` is read up to its first `N/M`.
fn drew(raw: &str, name: &str, want: (u64, u64)) -> bool {
    let screen = strip_ansi(raw);
    screen
        .match_indices(name)
        .any(|(at, _)| done_of_selected(&screen[at + name.len()..]) == Some(want))
}

/// Log lines and error lines only: no escape sequence, no carriage return other than the
/// terminal's own `\r\n`, no progress line.
fn assert_plain(raw: &str, what: &str) {
    assert!(
        !raw.contains('\x1b'),
        "{what}: escape sequences on stderr:\n{raw:?}"
    );
    assert!(
        !raw.replace("\r\n", "\n").contains('\r'),
        "{what}: a bare carriage return on stderr:\n{raw:?}"
    );
    assert!(
        !raw.contains(ARROW),
        "{what}: a progress line on stderr:\n{raw}"
    );
}

fn summary_line(raw: &str) -> String {
    screen_lines(raw)
        .into_iter()
        .rev()
        .find(|l| l.contains("msg=\"Sync summary\""))
        .unwrap_or_else(|| panic!("no Sync summary line:\n{raw}"))
}

#[test]
fn on_a_terminal_once_shows_each_step_done_of_selected_then_the_summary() {
    let work = Work::new();
    let out = work.on_pty(&["once"], &[]);
    let raw = text(&out);
    assert!(out.status.success(), "exit {:?}:\n{raw}", out.status);
    assert!(
        raw.contains('\x1b'),
        "no escape sequence: nothing was drawn\n{raw}"
    );
    let screen = strip_ansi(&raw);
    assert!(drew(&raw, STEP0, (3, 3)), "no `{STEP0} … 3/3`:\n{screen}");
    assert!(drew(&raw, STEP1, (1, 1)), "no `{STEP1} … 1/1`:\n{screen}");
    assert!(drew(&raw, "total ", (4, 4)), "no total 4/4:\n{screen}");

    // The summary is unchanged, and nothing of the display is drawn after it.
    let summary = summary_line(&raw);
    assert!(summary.contains("images_copied=4"), "{summary}");
    let at = raw.rfind("Sync summary").unwrap();
    assert!(
        !strip_ansi(&raw[at..]).contains(ARROW),
        "progress drawn after the summary:\n{:?}",
        &raw[at..]
    );
    // It copied for real.
    let index = std::fs::read_to_string(work.path().join("mirror/hello/index.json")).unwrap();
    for tag in ["latest", "v0", "v1"] {
        assert!(
            index.contains(&format!("\"org.opencontainers.image.ref.name\":\"{tag}\"")),
            "{tag} missing: {index}"
        );
    }
}

#[test]
fn on_a_terminal_check_shows_progress_too() {
    let work = Work::new();
    let out = work.on_pty(&["check"], &[]);
    let raw = text(&out);
    assert!(out.status.success(), "exit {:?}:\n{raw}", out.status);
    assert!(
        drew(&raw, STEP0, (3, 3)),
        "no `{STEP0} … 3/3`:\n{}",
        strip_ansi(&raw)
    );
    assert!(summary_line(&raw).contains("images_copied=0"));
}

#[test]
fn on_a_terminal_a_failing_run_keeps_its_exit_status_and_error_lines() {
    let work = Work::with_steps(
        "  - source: ocidir://src/nothere\n    target: ocidir://mirror/nothere\n    type: repository\n",
    );
    let out = work.on_pty(&["once"], &[]);
    let raw = text(&out);
    assert_eq!(out.status.code(), Some(1), "{raw}");
    let lines = screen_lines(&raw);
    let error = lines
        .iter()
        .rposition(|l| l.starts_with("sync[0] source \"ocidir://src/nothere\""))
        .unwrap_or_else(|| panic!("no error line:\n{}", lines.join("\n")));
    let summary = lines
        .iter()
        .rposition(|l| l.contains("msg=\"Sync summary\""))
        .unwrap();
    assert!(summary < error, "{}", lines.join("\n"));
    assert!(
        !strip_ansi(&raw[raw.rfind("Sync summary").unwrap()..]).contains(ARROW),
        "progress drawn after the summary:\n{raw:?}"
    );
}

#[test]
fn in_a_pipe_there_is_no_progress() {
    let work = Work::new();
    let out = work.in_pipe(&["once"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert_plain(&stderr, "pipe");
    assert!(summary_line(&stderr).contains("images_copied=4"));
    assert!(out.stdout.is_empty());
}

#[test]
fn progress_false_on_a_terminal_shows_none() {
    let work = Work::new();
    let out = work.on_pty(&["once", "--progress=false"], &[]);
    let raw = text(&out);
    assert!(out.status.success(), "{raw}");
    assert_plain(&raw, "--progress=false");
    assert!(summary_line(&raw).contains("images_copied=4"));
}

#[test]
fn regsync_progress_false_in_the_environment_shows_none() {
    let work = Work::new();
    let out = work.on_pty(&["once"], &[("REGSYNC_PROGRESS", "false")]);
    let raw = text(&out);
    assert!(out.status.success(), "{raw}");
    assert_plain(&raw, "REGSYNC_PROGRESS=false");
    assert!(summary_line(&raw).contains("images_copied=4"));
    // The flag wins over the environment.
    let work = Work::new();
    let out = work.on_pty(
        &["once", "--progress=true"],
        &[("REGSYNC_PROGRESS", "false")],
    );
    let raw = text(&out);
    assert!(out.status.success(), "{raw}");
    assert!(raw.contains(STEP0), "{raw}");
}

#[test]
fn json_logs_on_a_terminal_show_no_progress() {
    let work = Work::new();
    let out = work.on_pty(&["once", "--logopt", "json"], &[]);
    let raw = text(&out);
    assert!(out.status.success(), "{raw}");
    assert_plain(&raw, "--logopt json");
    let mut summary = None;
    for line in raw.split("\r\n").filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}\n{raw}"));
        if v["msg"] == "Sync summary" {
            summary = Some(v);
        }
    }
    assert_eq!(summary.expect("summary")["images_copied"], 4, "{raw}");
}

#[test]
fn server_on_a_terminal_shows_no_progress() {
    let work = Work::new();
    // The initial pass (well under a second unloaded; 8 s leaves room on a busy machine), then
    // SIGTERM: `server` exits 0 and logs its summary.
    let mut line = format!(
        "timeout --preserve-status -s TERM 8 {} server -c regsync.yml",
        shell_quote(BIN)
    );
    line.push_str("; echo exit=$?");
    let mut cmd = Command::new("/usr/bin/script");
    cmd.args(["-qec", &line, "/dev/null"]);
    work.env(&mut cmd, &[]);
    let out = cmd.output().expect("run script(1)");
    let raw = text(&out);
    assert!(raw.contains("exit=0"), "{raw}");
    assert_plain(&raw, "server");
    assert!(summary_line(&raw).contains("images_copied=4"), "{raw}");
}
