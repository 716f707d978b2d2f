use super::super::{HostEvent, Permit, RequestKind, Tls};
use super::body::*;
use super::host::*;
use super::response::*;
use super::retry::*;
use super::*;
use crate::store::BlobStream;
use bytes::Bytes;
use futures::StreamExt;
use std::sync::atomic::{AtomicUsize, Ordering};

fn host(prefix: &str, tls: Tls) -> Host {
    let config = HostConfig {
        path_prefix: prefix.into(),
        tls,
        ..HostConfig::for_name("reg.example:5000")
    };
    Host::new(config, reqwest::Client::new())
}

#[test]
fn urls_with_and_without_path_prefix() {
    let h = host("", Tls::Enabled);
    assert_eq!(
        h.repo_url("library/alpine", "manifests/latest")
            .unwrap()
            .as_str(),
        "https://reg.example:5000/v2/library/alpine/manifests/latest"
    );
    let h = host("/mirror/hub/", Tls::Disabled);
    assert_eq!(h.repo_path("a/b"), "mirror/hub/a/b");
    assert_eq!(
        h.repo_url("a/b", "blobs/uploads/").unwrap().as_str(),
        "http://reg.example:5000/v2/mirror/hub/a/b/blobs/uploads/"
    );
    // The catalog is registry-wide.
    assert_eq!(
        h.catalog_url().unwrap().as_str(),
        "http://reg.example:5000/v2/_catalog"
    );
    let hub = Host::new(HostConfig::for_name("docker.io"), reqwest::Client::new());
    assert_eq!(
        hub.repo_url("library/x", "tags/list").unwrap().as_str(),
        "https://registry-1.docker.io/v2/library/x/tags/list"
    );
}

fn client(hosts: Vec<HostConfig>) -> Client {
    client_with(hosts, Arc::new(super::super::OpenGate))
}

fn client_with(hosts: Vec<HostConfig>, gate: Arc<dyn RequestGate>) -> Client {
    let log = Logger::root(slog::Discard, slog::o!());
    Client::with_certs_dir(hosts, gate, RegistryOptions::new("ua"), log, None).unwrap()
}

/// A gate that grants every request, records what it is told, and reports the pauses it
/// is given.
#[derive(Default)]
struct TestGate {
    paused: Mutex<HashMap<String, std::time::Instant>>,
    /// (hostname, status or None for no answer, attempt)
    events: Mutex<Vec<(String, Option<u16>, u32)>>,
    /// Never grant a slot (until cancelled).
    closed: bool,
}

#[async_trait::async_trait]
impl RequestGate for TestGate {
    async fn acquire(&self, _: &HostConfig, cancel: &CancellationToken) -> Option<Permit> {
        if self.closed {
            cancel.cancelled().await;
        }
        (!cancel.is_cancelled()).then(|| Permit::new(()))
    }
    fn observe(&self, host: &HostConfig, event: HostEvent<'_>) {
        let (status, attempt) = match event {
            HostEvent::Answered {
                status, exchange, ..
            } => (Some(status), exchange.attempt),
            HostEvent::Unreachable { exchange } => (None, exchange.attempt),
        };
        let e = (host.hostname.clone(), status, attempt);
        self.events.lock().unwrap().push(e);
    }
    async fn paused_until(&self, host: &HostConfig) -> Option<std::time::Instant> {
        let now = std::time::Instant::now();
        let paused = self.paused.lock().unwrap();
        paused.get(&host.hostname).copied().filter(|t| *t > now)
    }
}

fn names(hosts: &[Arc<Host>]) -> Vec<&str> {
    hosts.iter().map(|h| h.config.name.as_str()).collect()
}

#[tokio::test]
async fn read_hosts_order() {
    let cfg = |name: &str, priority: u64, mirrors: &[&str]| HostConfig {
        priority,
        mirrors: mirrors.iter().map(|m| m.to_string()).collect(),
        ..HostConfig::for_name(name)
    };
    let gate = Arc::new(TestGate::default());
    let c = client_with(
        vec![
            cfg("up", 0, &["m1", "m2", "up", "m3", "m1"]),
            cfg("m1", 2, &[]),
            cfg("m2", 1, &[]),
        ],
        gate.clone(),
    );
    let up = c.host("up");
    // Ascending priority (m3 is unconfigured: 0), mirrors before the upstream at equal
    // priority, duplicates and the upstream itself removed from the mirror list.
    assert_eq!(names(&c.read_hosts(&up).await), ["m3", "up", "m2", "m1"]);
    // A host the gate holds paused goes last, the soonest back first.
    let now = std::time::Instant::now();
    let pause = |h: &str, until| gate.paused.lock().unwrap().insert(h.to_string(), until);
    pause("m3", now + Duration::from_secs(60));
    pause("m2", now + Duration::from_secs(30));
    assert_eq!(names(&c.read_hosts(&up).await), ["up", "m1", "m2", "m3"]);
    // Pauses that are over do not count.
    pause("m3", now);
    assert_eq!(names(&c.read_hosts(&up).await), ["m3", "up", "m1", "m2"]);
    // Without mirrors: the upstream alone.
    assert_eq!(names(&c.read_hosts(&c.host("m1")).await), ["m1"]);
}

#[test]
fn unconfigured_hosts_follow_skip_docker_certs() {
    let c = client(vec![HostConfig {
        skip_docker_certs: true,
        ..HostConfig::for_name("a")
    }]);
    assert!(c.host("b").config.skip_docker_certs);
    let c = client(vec![HostConfig::for_name("a")]);
    assert!(!c.host("b").config.skip_docker_certs);
}

#[test]
fn scopes_follow_the_method() {
    let url = Url::parse("http://r/v2/a/manifests/x").unwrap();
    assert_eq!(
        Request::repo(Method::HEAD, url.clone(), "p/a").scopes,
        ["repository:p/a:pull"]
    );
    assert_eq!(
        Request::repo(Method::PUT, url.clone(), "p/a").scopes,
        ["repository:p/a:pull,push"]
    );
    assert!(Request::repo(Method::PUT, url.clone(), "p/a").keep_scopes);
    // A delete's token is its own: later requests do not ask for `delete`.
    let delete = Request::repo(Method::DELETE, url, "p/a");
    assert_eq!(delete.scopes, ["repository:p/a:delete"]);
    assert!(!delete.keep_scopes);
}

#[test]
fn status_mapping() {
    let body = br#"{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown"}]}"#;
    match status_error(400, body, None) {
        StoreError::HttpStatus { status, text } => {
            assert_eq!(status, 400);
            assert_eq!(text, "400 Bad Request: MANIFEST_BLOB_UNKNOWN");
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(
        status_error(405, b"", None).to_string(),
        "unexpected http status code: 405 Method Not Allowed [http 405]"
    );
    assert!(matches!(
        status_error(401, b"", None),
        StoreError::Unauthorized { status: 401, .. }
    ));
    assert!(matches!(
        status_error(403, body, None),
        StoreError::Unauthorized { status: 403, .. }
    ));
    assert!(status_error(404, b"404 page not found", None).is_not_found());
    assert!(matches!(
        status_error(429, b"", Some(7)),
        StoreError::RateLimited {
            retry_after: Some(7)
        }
    ));
    assert!(status_error(503, b"", None).is_transient());
}

#[test]
fn logged_urls_hide_secrets() {
    let u =
        Url::parse("https://u:p@r.io/v2/a/blobs/uploads/x?_state=SECRET&digest=sha256:1").unwrap();
    let s = loggable(&u);
    assert!(!s.contains("SECRET") && !s.contains("u:p"), "{s}");
    assert!(s.contains("digest=sha256%3A1"), "{s}");
}

/// A small server answering `GET /v2/a/x` with the statuses in `script`, then 200.
async fn scripted(script: Vec<u16>) -> (String, Arc<Mutex<Vec<u16>>>) {
    let script = Arc::new(Mutex::new(script));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (s2, seen2) = (script.clone(), seen.clone());
    let app = axum::Router::new().fallback(move || {
        let (script, seen) = (s2.clone(), seen2.clone());
        async move {
            let mut script = script.lock().unwrap();
            let status = if script.is_empty() {
                200
            } else {
                script.remove(0)
            };
            seen.lock().unwrap().push(status);
            axum::http::StatusCode::from_u16(status).unwrap()
        }
    });
    (test_util::serve(app).await, seen)
}

fn tls_off(addr: &str) -> HostConfig {
    HostConfig {
        tls: Tls::Disabled,
        ..HostConfig::for_name(addr)
    }
}

#[tokio::test]
async fn retries_503_and_other_transient_statuses() {
    let (addr, seen) = scripted(vec![503, 502, 429]).await;
    let gate = Arc::new(TestGate::default());
    let c = client_with(vec![tls_off(&addr)], gate.clone());
    let h = c.host(&addr);
    let url = h.repo_url("a", "x").unwrap();
    let resp = c
        .execute(
            &h,
            RequestKind::of(&url),
            &Method::GET,
            &url,
            HeaderMap::new(),
            &mut Body::Empty,
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(*seen.lock().unwrap(), [503, 502, 429, 200]);
    // The gate is told which send of the request each answer belongs to: the host's
    // health is judged across requests, not across one request's retries.
    let events = gate.events.lock().unwrap().clone();
    let told: Vec<_> = events.iter().map(|(_, s, a)| (*s, *a)).collect();
    assert_eq!(
        told,
        [
            (Some(503), 0),
            (Some(502), 1),
            (Some(429), 2),
            (Some(200), 3)
        ]
    );
}

#[tokio::test]
async fn retries_end_after_five() {
    let (addr, seen) = scripted(vec![500; 10]).await;
    let c = test_util::client(&[&addr], RegistryOptions::new("ua"), IDLE_TIMEOUT);
    let h = c.host(&addr);
    // Backoff 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s, then the last answer is returned.
    let url = h.repo_url("a", "x").unwrap();
    let resp = c
        .execute(
            &h,
            RequestKind::of(&url),
            &Method::GET,
            &url,
            HeaderMap::new(),
            &mut Body::Empty,
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(seen.lock().unwrap().len(), 1 + MAX_RETRIES as usize);
}

#[tokio::test]
async fn a_cancelled_run_ends_gate_waits_and_retry_backoffs() {
    let (addr, seen) = scripted(vec![500; 10]).await;
    let cancel = CancellationToken::new();
    let log = Logger::root(slog::Discard, slog::o!());
    let closed = Arc::new(TestGate {
        closed: true,
        ..Default::default()
    });
    let options = RegistryOptions::new("ua").with_cancel(cancel.clone());
    let c = Client::with_certs_dir(
        vec![tls_off(&addr)],
        closed,
        options.clone(),
        log.clone(),
        None,
    )
    .unwrap();
    let h = c.host(&addr);
    let url = h.repo_url("a", "x").unwrap();
    let stop = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.cancel();
    });
    let started = std::time::Instant::now();
    // Waiting for a slot (a host paused for hours) ends with the run.
    let err = c
        .execute(
            &h,
            RequestKind::of(&url),
            &Method::GET,
            &url,
            HeaderMap::new(),
            &mut Body::Empty,
        )
        .await
        .err()
        .expect("cancelled");
    assert!(matches!(err, StoreError::Canceled), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(seen.lock().unwrap().is_empty());

    // A request backing off between retries stops too.
    let cancel = CancellationToken::new();
    let options = options.with_cancel(cancel.clone());
    let open = Arc::new(TestGate::default());
    let c = Client::with_certs_dir(vec![tls_off(&addr)], open, options, log, None).unwrap();
    let h = c.host(&addr);
    let stop = cancel.clone();
    tokio::spawn(async move {
        // After the first two answers, inside the 200 ms backoff before the third.
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.cancel();
    });
    let started = std::time::Instant::now();
    let err = c
        .execute(
            &h,
            RequestKind::of(&url),
            &Method::GET,
            &url,
            HeaderMap::new(),
            &mut Body::Empty,
        )
        .await
        .err()
        .expect("cancelled");
    assert!(matches!(err, StoreError::Canceled), "{err}");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(seen.lock().unwrap().len() < 4);
}

fn chunks(n: usize, every: Duration) -> BlobStream {
    futures::stream::unfold(0, move |i| async move {
        if i == n {
            return None;
        }
        tokio::time::sleep(every).await;
        Some((Ok(Bytes::from(vec![b'x'; 1000])), i + 1))
    })
    .boxed()
}

/// An upload endpoint that reads the whole body, then answers 201 after `delay`
/// (`None`: never).
async fn upload_server(delay: Option<Duration>) -> String {
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| async move {
        assert!(!body.is_empty());
        match delay {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending::<()>().await,
        }
        axum::http::StatusCode::CREATED
    });
    test_util::serve(app).await
}

#[tokio::test]
async fn a_streamed_upload_must_be_answered_in_time() {
    let addr = upload_server(None).await;
    let c = test_util::client(
        &[&addr],
        RegistryOptions::new("ua"),
        Duration::from_millis(500),
    );
    let h = c.host(&addr);
    let url = h.repo_url("a", "blobs/uploads/u").unwrap();
    let started = std::time::Instant::now();
    let mut body = Body::Stream(chunks(3, Duration::from_millis(10)));
    let err = c
        .execute(
            &h,
            RequestKind::of(&url),
            &Method::PUT,
            &url,
            HeaderMap::new(),
            &mut body,
        )
        .await
        .err()
        .expect("no answer must fail");
    assert!(
        err.to_string()
            .contains("timed out waiting for the response"),
        "{err}"
    );
    assert!(err.is_transient(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_slow_streamed_upload_is_not_cut_off() {
    // 6 chunks, 300 ms apart (1.8 s in all) against a 1 s idle timeout; the answer comes
    // 500 ms after the last byte.
    let addr = upload_server(Some(Duration::from_millis(500))).await;
    let c = test_util::client(&[&addr], RegistryOptions::new("ua"), Duration::from_secs(1));
    let h = c.host(&addr);
    let url = h.repo_url("a", "blobs/uploads/u").unwrap();
    let mut body = Body::Stream(chunks(6, Duration::from_millis(300)));
    let resp = c
        .execute(
            &h,
            RequestKind::of(&url),
            &Method::PUT,
            &url,
            HeaderMap::new(),
            &mut body,
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
}

#[tokio::test]
async fn progress_stalls_after_idle() {
    let p = Progress::new();
    let started = tokio::time::Instant::now();
    p.stalled(Duration::from_millis(100)).await;
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert!(!p.finished());
    p.finish();
    assert!(p.finished());
}

/// Every record logged: `LEVEL message`.
fn capturing_log() -> (Logger, Arc<Mutex<Vec<String>>>) {
    struct Capture(Arc<Mutex<Vec<String>>>);
    impl slog::Drain for Capture {
        type Ok = ();
        type Err = slog::Never;
        fn log(&self, r: &slog::Record, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
            let line = format!("{} {}", r.level().as_short_str(), r.msg());
            self.0.lock().unwrap().push(line);
            Ok(())
        }
    }
    let lines = Arc::new(Mutex::new(Vec::new()));
    (Logger::root(Capture(lines.clone()), slog::o!()), lines)
}

/// A registry that puts a request id in its `Warning`s must not grow the set of texts
/// already logged for the life of a server: past the bound, new texts go to debug level.
#[test]
fn warning_texts_remembered_are_bounded() {
    let (log, lines) = capturing_log();
    let c = Client::with_certs_dir(
        vec![],
        Arc::new(super::super::OpenGate),
        RegistryOptions::new("ua"),
        log,
        None,
    )
    .unwrap();
    let extra = 50;
    for i in 0..WARNINGS_KEPT + extra {
        let mut h = HeaderMap::new();
        let text = format!("299 - \"deprecated API (request {i})\"");
        h.insert("warning", text.parse().unwrap());
        c.log_warnings(&h);
        // the same text again is not logged again
        c.log_warnings(&h);
    }
    let lines = lines.lock().unwrap().clone();
    let count = |level: &str| {
        lines
            .iter()
            .filter(|l| l.starts_with(level) && l.contains("Registry warning message"))
            .count()
    };
    assert_eq!(count("WARN"), WARNINGS_KEPT);
    assert!(count("DEBG") >= extra, "{lines:?}");
    assert!(c.warnings.lock().unwrap().len() <= WARNINGS_KEPT);
}

/// With `repoAuth` a server syncing ever new repositories must not keep an auth state for
/// each for ever; a state in use by a request is never dropped.
#[test]
fn per_repository_auth_states_are_bounded() {
    let config = HostConfig {
        repo_auth: true,
        ..HostConfig::for_name("reg.example:5000")
    };
    let h = Host::new(config, reqwest::Client::new());
    let in_use = h.auth("kept");
    for i in 0..AUTH_STATES * 3 {
        h.auth(&format!("repo{i}"));
        assert!(h.auth_states() <= AUTH_STATES, "{i}: {}", h.auth_states());
    }
    assert!(Arc::ptr_eq(&h.auth("kept"), &in_use));
    // an idle state lives on until the table is full
    let idle = Arc::as_ptr(&h.auth("idle"));
    assert_eq!(Arc::as_ptr(&h.auth("idle")), idle);
}

/// A clean-up that never ends (a `DELETE` to a target that stopped answering, at the end of a
/// run no signal cancelled) holds the exit no longer than [`CLEANUP_GRACE`].
#[tokio::test(start_paused = true)]
async fn waiting_for_clean_ups_ends_after_the_grace() {
    let c = client(vec![]);
    let duty = c.cleanup_duty();
    let started = tokio::time::Instant::now();
    let waited = tokio::time::timeout(Duration::from_secs(3600), c.cleanups_done()).await;
    assert!(
        waited.is_ok(),
        "still waiting for the clean-up after an hour"
    );
    assert_eq!(started.elapsed(), CLEANUP_GRACE);
    drop(duty);
}

/// A gate of `slots` permits (the throttler's rule without its pacing and pauses).
struct CountedSlots(Arc<tokio::sync::Semaphore>);

#[async_trait::async_trait]
impl RequestGate for CountedSlots {
    async fn acquire(&self, _: &HostConfig, cancel: &CancellationToken) -> Option<Permit> {
        tokio::select! {
            p = self.0.clone().acquire_owned() => Some(Permit::new(p.ok())),
            _ = cancel.cancelled() => None,
        }
    }
    fn observe(&self, _: &HostConfig, _: HostEvent<'_>) {}
    async fn paused_until(&self, _: &HostConfig) -> Option<std::time::Instant> {
        None
    }
}

/// A plain-http client for `addr` whose requests pass through `slots`, under `cancel`.
fn client_with_slots(
    addr: &str,
    slots: Arc<tokio::sync::Semaphore>,
    cancel: &CancellationToken,
) -> Arc<Client> {
    let mut options = RegistryOptions::new("ua");
    options.cancel = cancel.clone();
    let cfg = HostConfig {
        tls: Tls::Disabled,
        ..HostConfig::for_name(addr)
    };
    let log = Logger::root(slog::Discard, slog::o!());
    Arc::new(
        Client::with_certs_dir(vec![cfg], Arc::new(CountedSlots(slots)), options, log, None)
            .unwrap(),
    )
}

/// An upload `POST` still waiting for its slot when the run is cancelled is never sent (it
/// would open a session only to delete it), and holds the exit no longer than that.
#[tokio::test]
async fn an_upload_post_queued_at_the_cancellation_is_not_sent() {
    let posts = Arc::new(AtomicUsize::new(0));
    let seen = posts.clone();
    let app = axum::Router::new().fallback(move || {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            axum::http::Response::builder()
                .status(202)
                .header("location", "/v2/a/blobs/uploads/u1")
                .body(axum::body::Body::empty())
                .unwrap()
        }
    });
    let addr = test_util::serve(app).await;
    let slots = Arc::new(tokio::sync::Semaphore::new(1));
    let cancel = CancellationToken::new();
    let c = client_with_slots(&addr, slots.clone(), &cancel);
    let busy = slots.clone().acquire_owned().await.unwrap();
    let opening = c.clone();
    let post = tokio::spawn(async move {
        let host = opening.host(&addr);
        let req = host.request(Method::POST, "a", "blobs/uploads/").unwrap();
        opening.send_opening(&host, req, &[202]).await.map(drop)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    cancel.cancel();
    let started = std::time::Instant::now();
    let exiting = c.clone();
    let exit = tokio::spawn(async move {
        exiting.cleanups_done().await;
        started.elapsed()
    });
    // The request holding the slot ends a second after the cancellation.
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(busy);
    assert!(matches!(post.await.unwrap(), Err(StoreError::Canceled)));
    assert_eq!(
        posts.load(Ordering::SeqCst),
        0,
        "POST sent after the cancellation"
    );
    let waited = exit.await.unwrap();
    assert!(waited < Duration::from_millis(500), "exit held {waited:?}");
}
