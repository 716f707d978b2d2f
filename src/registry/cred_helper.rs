//! Docker credential helpers (spec §8.1): `<program> get` with the server name on stdin
//! answers `{"ServerURL","Username","Secret"}` on stdout; `<program> list` answers a JSON map
//! server → username. The helper inherits our environment and stderr.
//!
//! Helper credentials are fetched lazily, on the first request that needs credentials, and
//! kept for `credExpire` (default 1 h); after a failure the helper is run again no sooner than
//! 5 s later, and the last good credentials (or the configured ones) stay in use meanwhile.
//! Secrets never reach a log line or an error message.

use super::HostConfig;
use serde::Deserialize;
use slog::{debug, warn, Logger};
use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

/// Default cache time of helper credentials.
pub(crate) const DEFAULT_EXPIRE: Duration = Duration::from_secs(3600);
/// A failed helper is not run again before this has passed.
pub(crate) const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// A helper answering `Username: "<token>"` hands out an identity token.
const TOKEN_USER: &str = "<token>";
/// At most this much of a failing helper's stdout goes into the error text.
const OUTPUT_IN_ERROR: usize = 200;

/// The credentials a request may use: user/pass for Basic and token requests, an identity
/// (refresh) token for the bearer POST flow. `Debug` hides the secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Creds {
    pub user: String,
    pub pass: String,
    pub token: String,
}

impl Creds {
    /// The credentials written in the host's configuration.
    pub fn configured(h: &HostConfig) -> Creds {
        Creds {
            user: h.user.clone(),
            pass: h.pass.clone(),
            token: h.token.clone(),
        }
    }
}

impl std::fmt::Debug for Creds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = |s: &str| if s.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("Creds")
            .field("user", &self.user)
            .field("pass", &secret(&self.pass))
            .field("token", &secret(&self.token))
            .finish()
    }
}

#[derive(Deserialize)]
struct GetOutput {
    #[serde(rename = "ServerURL", default)]
    _server_url: String,
    #[serde(rename = "Username", default)]
    username: Option<String>,
    #[serde(rename = "Secret", default)]
    secret: Option<String>,
}

/// Run `<program> get` for `server`. Like regclient, a field the helper leaves out keeps its
/// value from `current`.
pub(crate) async fn get(program: &str, server: &str, current: &Creds) -> Result<Creds, String> {
    let out = run(program, "get", server.as_bytes()).await?;
    let parsed: GetOutput = serde_json::from_slice(&out).map_err(|e| {
        format!(
            "error reading credentials from {program}: {}",
            json_error(&e)
        )
    })?;
    let user = parsed.username.unwrap_or_else(|| current.user.clone());
    let secret = parsed.secret.unwrap_or_else(|| current.pass.clone());
    Ok(if user == TOKEN_USER {
        Creds {
            user: String::new(),
            pass: String::new(),
            token: secret,
        }
    } else {
        Creds {
            user,
            pass: secret,
            token: String::new(),
        }
    })
}

/// Why `<program> list` gave nothing.
#[derive(Debug)]
pub(crate) enum ListError {
    /// The helper did not finish within the time given; it has been killed.
    TimedOut(String),
    /// It could not be run, failed, or printed something else than a server map.
    Failed(String),
}

impl std::fmt::Display for ListError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListError::TimedOut(s) | ListError::Failed(s) => f.write_str(s),
        }
    }
}

/// Run `<program> list` (server → user), for `credsStore` once at start-up, before the async
/// runtime runs: it blocks the calling thread for at most `timeout`, then kills the helper
/// (a store waiting for a keychain prompt must not hold start-up for ever).
pub(crate) fn list_within(
    program: &str,
    timeout: Duration,
) -> Result<BTreeMap<String, String>, ListError> {
    use std::io::Read as _;
    let deadline = std::time::Instant::now() + timeout;
    let mut attempt = 0;
    let mut child = loop {
        let res = std::process::Command::new(program)
            .arg("list")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn();
        match res {
            Err(e) if text_busy(&e) && attempt < TEXT_BUSY_RETRIES => {
                attempt += 1;
                std::thread::sleep(TEXT_BUSY_WAIT);
            }
            res => break res.map_err(|e| ListError::Failed(spawn_error(program, &e)))?,
        }
    };
    let timed_out = |child: &mut std::process::Child| {
        let _ = child.kill();
        let _ = child.wait();
        ListError::TimedOut(format!(
            "credential helper {program} list did not answer within {}s",
            timeout.as_secs_f64()
        ))
    };
    // Read on a thread of its own: a helper printing more than a pipe holds must not block.
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let res = stdout.read_to_end(&mut buf).map(|_| buf);
        let _ = tx.send(res);
    });
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    let stdout = match rx.recv_timeout(left) {
        Ok(read) => read.map_err(|e| {
            ListError::Failed(format!("error running credential helper {program}: {e}"))
        })?,
        Err(_) => return Err(timed_out(&mut child)),
    };
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Ok(None) => return Err(timed_out(&mut child)),
            Err(e) => {
                return Err(ListError::Failed(format!(
                    "error running credential helper {program}: {e}"
                )))
            }
        }
    };
    if !status.success() {
        return Err(ListError::Failed(failed(program, "list", &status, &stdout)));
    }
    serde_json::from_slice(&stdout).map_err(|e| {
        ListError::Failed(format!(
            "error reading credential list from {program}: {}",
            json_error(&e)
        ))
    })
}

async fn run(program: &str, verb: &str, input: &[u8]) -> Result<Vec<u8>, String> {
    let mut attempt = 0;
    let mut child = loop {
        let res = tokio::process::Command::new(program)
            .arg(verb)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn();
        match res {
            Err(e) if text_busy(&e) && attempt < TEXT_BUSY_RETRIES => {
                attempt += 1;
                tokio::time::sleep(TEXT_BUSY_WAIT).await;
            }
            res => break res.map_err(|e| spawn_error(program, &e))?,
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading its input is not our failure: its exit status
        // and output decide.
        let _ = stdin.write_all(input).await;
        drop(stdin);
    }
    // A hung helper must not block every request to its registry (the child is killed on
    // drop).
    let out = tokio::time::timeout(HELPER_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            format!(
                "credential helper {program} {verb} did not answer within {}s",
                HELPER_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| format!("error running credential helper {program}: {e}"))?;
    if !out.status.success() {
        return Err(failed(program, verb, &out.status, &out.stdout));
    }
    Ok(out.stdout)
}

/// How long a credential helper may take to answer.
pub(crate) const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// A helper script just written (e.g. by a test) can briefly be "text file busy" while a
/// concurrently forked process still holds its write handle: try again shortly.
const TEXT_BUSY_RETRIES: u32 = 20;
const TEXT_BUSY_WAIT: Duration = Duration::from_millis(50);

fn text_busy(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(26) // ETXTBSY
}

fn spawn_error(program: &str, e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::NotFound {
        format!("credential helper {program:?} not found")
    } else {
        format!("error running credential helper {program:?}: {e}")
    }
}

/// A helper's failure output is its message (e.g. `credentials not found in native
/// keychain`), not a secret; it is still cut short.
fn failed(program: &str, verb: &str, status: &std::process::ExitStatus, stdout: &[u8]) -> String {
    let text = String::from_utf8_lossy(stdout);
    // A helper that printed its credentials and then failed must not leak them into logs:
    // keep only a first line that does not look like the JSON answer.
    let first = text.trim().lines().next().unwrap_or("");
    let mut text = if first.contains("Secret") || first.trim_start().starts_with('{') {
        "<output withheld>".to_string()
    } else {
        first.to_string()
    };
    if text.len() > OUTPUT_IN_ERROR {
        let mut cut = OUTPUT_IN_ERROR;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    format!("error getting credentials from {program} {verb}, output: {text:?}, error: {status}")
}

/// serde's message without the input excerpt (which could hold the secret).
fn json_error(e: &serde_json::Error) -> String {
    format!(
        "invalid JSON ({:?} at line {} column {})",
        e.classify(),
        e.line(),
        e.column()
    )
}

/// Cached helper results, one entry per (registry name, helper, server name). Owned by one
/// registry client: two engines in one process run their helpers for themselves.
#[derive(Default)]
pub(crate) struct HelperCache {
    entries: Mutex<HashMap<CacheKey, Arc<tokio::sync::Mutex<Entry>>>>,
}

/// (registry name, helper program, server name given to it).
type CacheKey = (String, String, String);

struct Entry {
    creds: Creds,
    /// When to run the helper again; None before the first run.
    refresh_at: Option<Instant>,
}

impl HelperCache {
    /// The credentials for `host`: the configured ones, or with a `credHelper` the helper's
    /// (run when not cached or expired; a failure keeps the previous credentials).
    pub async fn creds(&self, host: &HostConfig, log: &Logger) -> Creds {
        if host.cred_helper.is_empty() {
            return Creds::configured(host);
        }
        let server = helper_server(host);
        let key = (host.name.clone(), host.cred_helper.clone(), server.clone());
        let slot = {
            let mut entries = self.entries.lock().unwrap();
            entries
                .entry(key)
                .or_insert_with(|| {
                    Arc::new(tokio::sync::Mutex::new(Entry {
                        creds: Creds::configured(host),
                        refresh_at: None,
                    }))
                })
                .clone()
        };
        // Held while the helper runs: concurrent requests wait for one run.
        let mut entry = slot.lock().await;
        if entry.refresh_at.is_some_and(|at| Instant::now() < at) {
            return entry.creds.clone();
        }
        match get(&host.cred_helper, &server, &entry.creds).await {
            Ok(creds) => {
                debug!(log, "Credential helper returned credentials";
                    "host" => &host.name, "helper" => &host.cred_helper, "server" => &server,
                    "user" => &creds.user, "token" => !creds.token.is_empty());
                entry.creds = creds;
                entry.refresh_at = Some(Instant::now() + expire(host));
            }
            Err(e) => {
                warn!(log, "Failed to run credential helper";
                    "host" => &host.name, "helper" => &host.cred_helper, "err" => e);
                entry.refresh_at = Some(Instant::now() + RETRY_AFTER_FAILURE);
            }
        }
        entry.creds.clone()
    }
}

/// The name given to the helper: `credHost`, else the hostname.
fn helper_server(h: &HostConfig) -> String {
    if !h.cred_host.is_empty() {
        h.cred_host.clone()
    } else if !h.hostname.is_empty() {
        h.hostname.clone()
    } else {
        HostConfig::for_name(&h.name).hostname
    }
}

fn expire(h: &HostConfig) -> Duration {
    if h.cred_expire > 0 {
        Duration::from_nanos(h.cred_expire as u64)
    } else {
        DEFAULT_EXPIRE
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    /// Write an executable `sh` script `name` into `dir`.
    pub(crate) fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// A helper that logs each call's verb and stdin to `calls`, then prints user/secret.
    fn logging_helper(dir: &Path, user: &str, secret: &str) -> (PathBuf, PathBuf) {
        let calls = dir.join("calls");
        let body = format!(
            "read -r server\necho \"$1 $server\" >> '{}'\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{secret}\"}}' \"$server\"",
            calls.display()
        );
        (script(dir, "docker-credential-log", &body), calls)
    }

    fn calls(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    fn log() -> Logger {
        Logger::root(slog::Discard, slog::o!())
    }

    fn host(helper: &Path) -> HostConfig {
        HostConfig {
            cred_helper: helper.display().to_string(),
            ..HostConfig::for_name("reg.example.com:5000")
        }
    }

    #[tokio::test]
    async fn get_parses_user_secret_and_identity_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let (helper, calls_file) = logging_helper(dir.path(), "alice", "s3cret");
        let c = get(
            helper.to_str().unwrap(),
            "reg.example.com",
            &Creds::default(),
        )
        .await
        .unwrap();
        assert_eq!((c.user.as_str(), c.pass.as_str()), ("alice", "s3cret"));
        assert!(c.token.is_empty());
        assert_eq!(calls(&calls_file), ["get reg.example.com"]);

        let tok = script(
            dir.path(),
            "tok",
            r#"cat >/dev/null; echo '{"ServerURL":"x","Username":"<token>","Secret":"idtok"}'"#,
        );
        let c = get(tok.to_str().unwrap(), "x", &Creds::default())
            .await
            .unwrap();
        assert_eq!(
            c,
            Creds {
                user: String::new(),
                pass: String::new(),
                token: "idtok".into()
            }
        );
    }

    #[tokio::test]
    async fn get_failures_never_show_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let bad_json = script(
            dir.path(),
            "badjson",
            r#"cat >/dev/null; echo '{"Username":"u","Secret":"hunter2"'"#,
        );
        let e = get(bad_json.to_str().unwrap(), "x", &Creds::default())
            .await
            .unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(e.contains("invalid JSON"), "{e}");

        let failing = script(
            dir.path(),
            "failing",
            "cat >/dev/null; echo 'credentials not found in native keychain'; exit 1",
        );
        let e = get(failing.to_str().unwrap(), "x", &Creds::default())
            .await
            .unwrap_err();
        assert!(e.contains("credentials not found"), "{e}");

        let e = get("/nonexistent/docker-credential-x", "x", &Creds::default())
            .await
            .unwrap_err();
        assert!(e.contains("not found"), "{e}");
    }

    #[tokio::test]
    async fn cache_runs_the_helper_lazily_once_per_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let (helper, calls_file) = logging_helper(dir.path(), "bob", "pw");
        let cache = HelperCache::default();
        let mut h = host(&helper);
        h.cred_host = "https://cred.example/".into();
        assert!(calls(&calls_file).is_empty(), "lazy: nothing runs up front");
        let c = cache.creds(&h, &log()).await;
        assert_eq!((c.user.as_str(), c.pass.as_str()), ("bob", "pw"));
        cache.creds(&h, &log()).await;
        assert_eq!(calls(&calls_file), ["get https://cred.example/"]);

        // A short credExpire (nanoseconds) makes it run again.
        let mut short = host(&helper);
        short.cred_expire = 50_000_000;
        cache.creds(&short, &log()).await;
        cache.creds(&short, &log()).await;
        assert_eq!(calls(&calls_file).len(), 2);
        tokio::time::sleep(Duration::from_millis(80)).await;
        cache.creds(&short, &log()).await;
        assert_eq!(
            calls(&calls_file)[1..],
            ["get reg.example.com:5000", "get reg.example.com:5000"]
        );
    }

    #[tokio::test]
    async fn failed_helper_keeps_old_creds_and_waits_before_retrying() {
        let dir = tempfile::tempdir().unwrap();
        let count = dir.path().join("count");
        let helper = script(
            dir.path(),
            "flaky",
            &format!("cat >/dev/null; echo x >> '{}'; exit 3", count.display()),
        );
        let cache = HelperCache::default();
        let h = HostConfig {
            user: "fallback".into(),
            pass: "fallbackpw".into(),
            ..host(&helper)
        };
        for _ in 0..3 {
            let c = cache.creds(&h, &log()).await;
            assert_eq!(c.user, "fallback");
        }
        assert_eq!(calls(&count).len(), 1, "retried within 5 s");
    }

    #[tokio::test]
    async fn no_helper_means_configured_creds() {
        let cache = HelperCache::default();
        let h = HostConfig {
            user: "u".into(),
            pass: "p".into(),
            token: "t".into(),
            ..HostConfig::for_name("r")
        };
        let c = cache.creds(&h, &log()).await;
        assert_eq!(
            (c.user.as_str(), c.pass.as_str(), c.token.as_str()),
            ("u", "p", "t")
        );
    }

    #[test]
    fn list_reads_the_server_map() {
        let dir = tempfile::tempdir().unwrap();
        let helper = script(
            dir.path(),
            "store",
            r#"[ "$1" = list ] || exit 1; echo '{"https://a.example/":"alice","b.example":"bob"}'"#,
        );
        let m = list_within(helper.to_str().unwrap(), HELPER_TIMEOUT).unwrap();
        assert_eq!(m["https://a.example/"], "alice");
        assert_eq!(m["b.example"], "bob");
        assert!(matches!(
            list_within("/nonexistent/helper", HELPER_TIMEOUT),
            Err(ListError::Failed(_))
        ));
    }

    #[test]
    fn a_hanging_list_gives_up_and_kills_the_helper() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let helper = script(
            dir.path(),
            "docker-credential-hang",
            &format!("echo $$ > '{}'\nexec sleep 60", pid_file.display()),
        );
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(list_within(
                helper.to_str().unwrap(),
                Duration::from_millis(300),
            ));
        });
        let res = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("list of a hanging helper never returned");
        let err = res.unwrap_err();
        assert!(matches!(err, ListError::TimedOut(_)), "{err:?}");
        // the helper does not outlive the attempt
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let alive = std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ");
        assert!(!alive, "helper {pid} still running");
    }

    #[test]
    fn creds_debug_hides_secrets() {
        let c = Creds {
            user: "alice".into(),
            pass: "hunter2".into(),
            token: "tok3n".into(),
        };
        let s = format!("{c:?}");
        assert!(s.contains("alice") && !s.contains("hunter2") && !s.contains("tok3n"));
    }
}
