//! A Docker-Hub-like Bearer-token front for a [`Registry`](super::Registry): an axum reverse
//! proxy that answers `401 WWW-Authenticate: Bearer realm=".../token",service="test",scope=...`
//! to requests without a valid token, issues opaque tokens from `GET|POST /token` after
//! checking basic credentials, and streams request/response bodies to/from the upstream.
//! Requests are counted by kind (`manifest_head`, `manifest_get`, `manifest_put`, `blob_head`,
//! `blob_get`, `upload`, `tags`, `catalog`, `base`, `token`, `unauthorized`, ...), and the
//! scopes of every token request are kept in order. Like distribution, a `DELETE` needs the
//! `delete` action.

use super::{block_on, rt, Endpoint};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use base64::Engine as _;
use futures::TryStreamExt;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug, Default)]
pub struct ProxyOpts {
    /// Accepted `(user, pass)` pairs for the token endpoint.
    pub users: Vec<(String, String)>,
    /// Anonymous token requests get pull-only tokens (otherwise 401).
    pub anonymous: bool,
    /// Basic credentials the proxy adds towards the upstream registry.
    pub upstream_auth: Option<(String, String)>,
    /// Token requests asking for a `delete` action are refused (401), as by a token server
    /// that grants its users pull and push only.
    pub refuse_delete: bool,
    /// A `DELETE` needs `repository:X:*` instead of `repository:X:delete` (older
    /// distribution releases); the challenge names it.
    pub delete_needs_any: bool,
}

struct Shared {
    upstream: String,
    self_url: String,
    opts: ProxyOpts,
    tokens: Mutex<HashMap<String, Grant>>,
    counts: Mutex<HashMap<String, u64>>,
    /// The `scope` values of each token request, in arrival order (refused ones included).
    token_scopes: Mutex<Vec<Vec<String>>>,
    next: AtomicU64,
    client: reqwest::Client,
}

#[derive(Clone, Debug)]
struct Grant {
    user: Option<String>,
    scopes: BTreeSet<String>, // "repository:name:pull", "repository:name:push", "registry:catalog:*"
}

pub struct TokenProxy {
    host: String,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    user: Option<(String, String)>,
}

impl TokenProxy {
    /// Proxy in front of `upstream` accepting the single user `user:pass` (no anonymous access).
    pub fn start(upstream: &super::Registry, user: &str, pass: &str) -> TokenProxy {
        Self::start_with(
            upstream,
            ProxyOpts {
                users: vec![(user.into(), pass.into())],
                anonymous: false,
                upstream_auth: upstream.auth(),
                ..Default::default()
            },
        )
    }

    /// Proxy allowing anonymous pulls (tokens without credentials).
    pub fn anonymous(upstream: &super::Registry) -> TokenProxy {
        Self::start_with(
            upstream,
            ProxyOpts {
                users: vec![],
                anonymous: true,
                upstream_auth: upstream.auth(),
                ..Default::default()
            },
        )
    }

    pub fn start_with(upstream: &super::Registry, opts: ProxyOpts) -> TokenProxy {
        let listener = block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let user = opts.users.first().cloned();
        let shared = Arc::new(Shared {
            upstream: upstream.url(),
            self_url: format!("http://{addr}"),
            opts,
            tokens: Mutex::new(HashMap::new()),
            counts: Mutex::new(HashMap::new()),
            token_scopes: Mutex::new(Vec::new()),
            next: AtomicU64::new(1),
            client: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        });
        let app = Router::new()
            .route("/token", any(token))
            .fallback(proxy)
            .with_state(shared.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        rt().spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        TokenProxy {
            host: addr.to_string(),
            shared,
            shutdown: Some(tx),
            user,
        }
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        self.host.clone()
    }
    pub fn url(&self) -> String {
        format!("http://{}", self.host)
    }
    /// First configured user (what regsync should be configured with).
    pub fn user(&self) -> Option<(String, String)> {
        self.user.clone()
    }
    pub fn r(&self, repo_tag: &str) -> String {
        format!("{}/{}", self.host, repo_tag)
    }
    /// Requests counted by kind so far.
    pub fn counts(&self) -> HashMap<String, u64> {
        self.shared.counts.lock().unwrap().clone()
    }
    pub fn count(&self, kind: &str) -> u64 {
        *self.shared.counts.lock().unwrap().get(kind).unwrap_or(&0)
    }
    /// The scopes each token request asked for, one entry per request, in arrival order.
    pub fn token_scopes(&self) -> Vec<Vec<String>> {
        self.shared.token_scopes.lock().unwrap().clone()
    }
    pub fn reset_counts(&self) {
        self.shared.counts.lock().unwrap().clear();
    }
}

impl Drop for TokenProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Endpoint for TokenProxy {
    fn host(&self) -> String {
        TokenProxy::host(self)
    }
    fn creds(&self) -> Option<(String, String)> {
        self.user()
    }
}

fn bump(s: &Shared, kind: &str) {
    *s.counts
        .lock()
        .unwrap()
        .entry(kind.to_string())
        .or_insert(0) += 1;
}

fn basic_creds(h: &HeaderMap) -> Option<(String, String)> {
    let v = h.get("authorization")?.to_str().ok()?;
    let b = v
        .strip_prefix("Basic ")
        .or_else(|| v.strip_prefix("basic "))?;
    let dec = base64::engine::general_purpose::STANDARD
        .decode(b.trim())
        .ok()?;
    let s = String::from_utf8(dec).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn json_error(status: StatusCode, code: &str, msg: &str) -> Response {
    let body = serde_json::json!({"errors": [{"code": code, "message": msg, "detail": null}]});
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

/// `GET /token?service=&scope=..&scope=..` (basic creds optional) or `POST /token` with an
/// OAuth2 form (`grant_type=password` with username/password, or `refresh_token`).
async fn token(State(s): State<Arc<Shared>>, req: Request) -> Response {
    bump(&s, "token");
    let headers = req.headers().clone();
    let method = req.method().clone();
    let query = req.uri().query().unwrap_or("").to_string();
    let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    if method == axum::http::Method::POST {
        let body = axum::body::to_bytes(req.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        pairs.extend(url::form_urlencoded::parse(&body).into_owned());
    }
    let asked: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_string))
        .filter(|v| !v.is_empty())
        .collect();
    s.token_scopes.lock().unwrap().push(asked.clone());
    let mut creds = basic_creds(&headers);
    if creds.is_none() {
        let get = |k: &str| pairs.iter().find(|(a, _)| a == k).map(|(_, b)| b.clone());
        if let (Some(u), Some(p)) = (get("username"), get("password")) {
            creds = Some((u, p));
        }
        if let Some(rt) = get("refresh_token") {
            // refresh tokens are "rt-<user>"
            if let Some(u) = rt.strip_prefix("rt-") {
                if let Some(p) = s.opts.users.iter().find(|(a, _)| a == u) {
                    creds = Some(p.clone());
                }
            }
        }
    }
    let user = match creds {
        Some((u, p)) => {
            if !s.opts.users.iter().any(|(a, b)| *a == u && *b == p) {
                bump(&s, "token_denied");
                return json_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "bad credentials");
            }
            Some(u)
        }
        None if s.opts.anonymous => None,
        None => {
            bump(&s, "token_denied");
            return json_error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "authentication required",
            );
        }
    };
    let mut scopes = BTreeSet::new();
    for one in &asked {
        // repository:name:pull,push  /  registry:catalog:*
        let mut parts = one.rsplitn(2, ':');
        let (Some(actions), Some(prefix)) = (parts.next(), parts.next()) else {
            continue;
        };
        for a in actions.split(',') {
            if a == "delete" && s.opts.refuse_delete {
                bump(&s, "token_denied");
                return json_error(
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHORIZED",
                    "delete is not granted",
                );
            }
            let allowed = user.is_some() || a == "pull";
            if allowed {
                scopes.insert(format!("{prefix}:{a}"));
            }
        }
    }
    let n = s.next.fetch_add(1, Ordering::SeqCst);
    let tok = format!("tok-{n}-{}", user.clone().unwrap_or_else(|| "anon".into()));
    s.tokens.lock().unwrap().insert(
        tok.clone(),
        Grant {
            user: user.clone(),
            scopes,
        },
    );
    let mut body = serde_json::json!({
        "token": tok,
        "access_token": tok,
        "expires_in": 300,
        "issued_at": chrono::Utc::now().to_rfc3339(),
    });
    if let Some(u) = &user {
        if pairs
            .iter()
            .any(|(k, v)| k == "grant_type" && v == "password")
        {
            body["refresh_token"] = serde_json::json!(format!("rt-{u}"));
        }
    }
    let mut r = (StatusCode::OK, body.to_string()).into_response();
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

/// (kind, scope needed) for a `/v2/...` path.
fn classify(method: &axum::http::Method, path: &str) -> (String, Option<String>) {
    let m = method.as_str();
    if path == "/v2/" || path == "/v2" {
        return ("base".into(), None);
    }
    if path.starts_with("/v2/_catalog") {
        return ("catalog".into(), Some("registry:catalog:*".into()));
    }
    let rest = path.trim_start_matches("/v2/");
    for (marker, what) in [
        ("/manifests/", "manifest"),
        ("/blobs/uploads", "upload"),
        ("/blobs/", "blob"),
        ("/tags/list", "tags"),
        ("/referrers/", "referrers"),
    ] {
        if let Some(i) = rest.find(marker) {
            let name = &rest[..i];
            let action = match m {
                "GET" | "HEAD" => "pull",
                "DELETE" => "delete",
                _ => "push",
            };
            let kind = match what {
                "upload" => "upload".to_string(),
                "tags" => "tags".to_string(),
                "referrers" => "referrers".to_string(),
                _ => format!("{what}_{}", m.to_ascii_lowercase()),
            };
            return (kind, Some(format!("repository:{name}:{action}")));
        }
    }
    ("other".into(), None)
}

async fn proxy(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| path.clone());
    let (kind, mut scope) = classify(req.method(), &path);
    if s.opts.delete_needs_any && req.method() == axum::http::Method::DELETE {
        scope = scope.map(|sc| sc.replace(":delete", ":*"));
    }
    bump(&s, &kind);

    // Authorization: a known token holding the needed scope.
    let tok = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_string());
    let grant = tok.and_then(|t| s.tokens.lock().unwrap().get(&t).cloned());
    let ok = match (&grant, &scope) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(g), Some(sc)) => {
            g.scopes.contains(sc)
                || (sc.ends_with(":pull") && g.scopes.contains(&sc.replace(":pull", ":push")))
        }
    };
    if !ok {
        bump(&s, "unauthorized");
        let chal_scope = scope.as_ref().map(|sc| {
            if sc.ends_with(":push") {
                sc.replace(":push", ":pull,push")
            } else {
                sc.clone()
            }
        });
        let mut chal = format!("Bearer realm=\"{}/token\",service=\"test\"", s.self_url);
        if let Some(sc) = chal_scope {
            chal.push_str(&format!(",scope=\"{sc}\""));
        }
        let (code, msg) = if grant.is_some() {
            ("DENIED", "insufficient_scope")
        } else {
            ("UNAUTHORIZED", "authentication required")
        };
        let mut r = json_error(StatusCode::UNAUTHORIZED, code, msg);
        if grant.is_some() {
            chal.push_str(",error=\"insufficient_scope\"");
        }
        r.headers_mut()
            .insert("www-authenticate", HeaderValue::from_str(&chal).unwrap());
        return r;
    }

    // Forward, streaming both bodies.
    let method = req.method().clone();
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in req.headers() {
        let name = k.as_str();
        if matches!(
            name,
            "host"
                | "authorization"
                | "connection"
                | "keep-alive"
                | "transfer-encoding"
                | "te"
                | "upgrade"
                | "proxy-authorization"
        ) {
            continue;
        }
        headers.append(k.clone(), v.clone());
    }
    headers.insert(
        "x-forwarded-host",
        HeaderValue::from_str(s.self_url.trim_start_matches("http://")).unwrap(),
    );
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    let body_stream = req.into_body().into_data_stream();
    let mut up = s
        .client
        .request(method.clone(), format!("{}{}", s.upstream, pq))
        .headers(headers);
    if method != axum::http::Method::GET && method != axum::http::Method::HEAD {
        up = up.body(reqwest::Body::wrap_stream(body_stream));
    }
    if let Some((u, p)) = &s.opts.upstream_auth {
        up = up.basic_auth(u, Some(p));
    }
    let resp = match up.send().await {
        Ok(r) => r,
        Err(e) => {
            bump(&s, "upstream_error");
            return json_error(StatusCode::BAD_GATEWAY, "UNKNOWN", &e.to_string());
        }
    };
    bump(&s, &format!("status_{}", resp.status().as_u16()));
    let mut out = Response::builder().status(resp.status().as_u16());
    for (k, v) in resp.headers() {
        if matches!(
            k.as_str(),
            "connection" | "keep-alive" | "transfer-encoding"
        ) {
            continue;
        }
        out = out.header(k.clone(), v.clone());
    }
    let stream = resp.bytes_stream().map_err(std::io::Error::other);
    out.body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
