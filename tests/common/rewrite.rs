//! A small buffering reverse proxy whose exchanges pass through hooks, for registries that
//! misbehave in one precise way: a `Location` on another origin, a tag list with an invalid
//! tag, a blob body with the right length and the wrong bytes, a referrers API answering 403.
//!
//! Bodies are buffered whole (test images are small). The upstream sees
//! `X-Forwarded-Host: <proxy>`, so distribution's `Location`s name the proxy. Every request is
//! recorded ([`Seen`]), with whether it carried an `Authorization` header.

use super::{block_on, rt};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::sync::{Arc, Mutex};

/// One request as the proxy received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub authorization: Option<String>,
}

/// A response: from the upstream (then possibly changed by `after`) or made by `before`.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Reply {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_str(content_type).unwrap());
        Reply {
            status,
            headers,
            body: body.into(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn set_header(&mut self, name: &'static str, value: &str) {
        self.headers
            .insert(name, HeaderValue::from_str(value).unwrap());
    }
}

type Before = dyn Fn(&Seen) -> Option<Reply> + Send + Sync;
type After = dyn Fn(&Seen, &mut Reply) + Send + Sync;

#[derive(Clone, Default)]
pub struct RewriteOpts {
    /// Answer a request without asking the upstream.
    pub before: Option<Arc<Before>>,
    /// Change the upstream's answer.
    pub after: Option<Arc<After>>,
    /// Forward with these basic credentials instead of the client's `Authorization`.
    pub upstream_auth: Option<(String, String)>,
}

struct Shared {
    upstream: String,
    self_host: String,
    opts: RewriteOpts,
    seen: Mutex<Vec<Seen>>,
    client: reqwest::Client,
}

pub struct RewriteProxy {
    host: String,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl RewriteProxy {
    /// In front of `upstream_url` (`http://127.0.0.1:P`).
    pub fn start(upstream_url: &str, opts: RewriteOpts) -> RewriteProxy {
        let listener = block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
        let host = listener.local_addr().unwrap().to_string();
        let shared = Arc::new(Shared {
            upstream: upstream_url.trim_end_matches('/').to_string(),
            self_host: host.clone(),
            opts,
            seen: Mutex::new(Vec::new()),
            client: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        rt().spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        RewriteProxy {
            host,
            shared,
            shutdown: Some(tx),
        }
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        self.host.clone()
    }
    pub fn url(&self) -> String {
        format!("http://{}", self.host)
    }
    pub fn r(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.host)
    }
    /// Every request received so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }
}

impl Drop for RewriteProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl super::Endpoint for RewriteProxy {
    fn host(&self) -> String {
        RewriteProxy::host(self)
    }
    fn creds(&self) -> Option<(String, String)> {
        None
    }
}

impl From<&RewriteProxy> for super::Loc {
    fn from(p: &RewriteProxy) -> super::Loc {
        super::Loc::reg(&p.host())
    }
}

async fn handle(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let seen = Seen {
        method: req.method().to_string(),
        path: req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default(),
        authorization: req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    s.seen.lock().unwrap().push(seen.clone());
    let reply = match s.opts.before.as_ref().and_then(|b| b(&seen)) {
        Some(r) => r,
        None => match forward(&s, &seen, req).await {
            Ok(mut r) => {
                if let Some(after) = &s.opts.after {
                    after(&seen, &mut r);
                }
                r
            }
            Err(e) => return (StatusCode::BAD_GATEWAY, e).into_response(),
        },
    };
    let mut out = Response::builder().status(reply.status);
    for (k, v) in &reply.headers {
        if matches!(
            k.as_str(),
            "connection" | "keep-alive" | "transfer-encoding" | "content-length"
        ) {
            continue;
        }
        out = out.header(k.clone(), v.clone());
    }
    if seen.method == "HEAD" {
        // A HEAD answer keeps the upstream's length and has no body.
        if let Some(len) = reply.headers.get("content-length") {
            out = out.header("content-length", len.clone());
        }
        return out.body(Body::empty()).unwrap();
    }
    out.body(Body::from(reply.body)).unwrap()
}

async fn forward(s: &Shared, seen: &Seen, req: Request) -> Result<Reply, String> {
    let method = req.method().clone();
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in req.headers() {
        let name = k.as_str();
        let skip = matches!(
            name,
            "host" | "connection" | "keep-alive" | "transfer-encoding" | "te" | "upgrade"
        ) || (name == "authorization" && s.opts.upstream_auth.is_some());
        if !skip {
            headers.append(k.clone(), v.clone());
        }
    }
    headers.insert(
        "x-forwarded-host",
        HeaderValue::from_str(&s.self_host).unwrap(),
    );
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    let body = axum::body::to_bytes(req.into_body(), 1 << 30)
        .await
        .map_err(|e| e.to_string())?;
    let mut up = s
        .client
        .request(method, format!("{}{}", s.upstream, seen.path))
        .headers(headers)
        .body(body);
    if let Some((u, p)) = &s.opts.upstream_auth {
        up = up.basic_auth(u, Some(p));
    }
    let resp = up.send().await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.map_err(|e| e.to_string())?.to_vec();
    Ok(Reply {
        status,
        headers,
        body,
    })
}
