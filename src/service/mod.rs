//! `--listen ADDR`: the operations endpoints of a running regsync (`/metrics`, `/healthz`,
//! `/readyz`, `/status`).
//!
//! The listener is a client of the engine like any other: every request asks the scheduler
//! one [`GetSchedulerState`] message and builds its answer from the reply (design §3). It
//! never reads engine internals, so a scrape cannot block a copy and a wedged engine shows as
//! a health check that times out.

pub mod metrics;
pub mod report;
pub mod status;

use crate::engine::messages::GetSchedulerState;
use crate::engine::report::SchedulerState;
use actix::Recipient;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

/// How long `/healthz` (and every other endpoint) waits for the scheduler's answer.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// `--listen`'s value: `host:port`, `[v6]:port`, or `:port` (every interface, as Go's
/// `net.Listen` reads it). The host may be a name; it is resolved when the port is opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenAddr {
    /// Empty: every IPv4 interface.
    pub host: String,
    pub port: u16,
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("{why} (expected host:port or :port)");
        let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| bad("the port is not a number 0-65535"))?;
        let host = match host.strip_prefix('[') {
            Some(v6) => v6
                .strip_suffix(']')
                .filter(|h| h.parse::<std::net::Ipv6Addr>().is_ok())
                .ok_or_else(|| bad("not an IPv6 address in brackets"))?,
            None if host.contains(':') => return Err(bad("an IPv6 address needs brackets")),
            None => host,
        };
        if host.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(bad("not a host name or address"));
        }
        Ok(ListenAddr {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("--listen {addr}: cannot listen: {source}")]
pub struct ListenError {
    addr: ListenAddr,
    source: std::io::Error,
}

/// Opens the port (before any step runs, so a bad address stops the command at once).
pub async fn bind(addr: &ListenAddr) -> Result<tokio::net::TcpListener, ListenError> {
    let host = if addr.host.is_empty() {
        "0.0.0.0"
    } else {
        &addr.host
    };
    tokio::net::TcpListener::bind((host, addr.port))
        .await
        .map_err(|source| ListenError {
            addr: addr.clone(),
            source,
        })
}

/// What every endpoint asks.
#[derive(Clone)]
struct Ask {
    scheduler: Recipient<GetSchedulerState>,
    version: &'static str,
}

impl Ask {
    /// The scheduler's state, or why there is none within [`ANSWER_WITHIN`].
    async fn state(&self) -> Result<SchedulerState, Response> {
        match tokio::time::timeout(ANSWER_WITHIN, self.scheduler.send(GetSchedulerState)).await {
            Ok(Ok(state)) => Ok(state),
            Ok(Err(e)) => Err(unavailable(format!("scheduler unavailable: {e}"))),
            Err(_) => Err(unavailable(format!(
                "scheduler did not answer within {}s",
                ANSWER_WITHIN.as_secs()
            ))),
        }
    }
}

fn unavailable(why: String) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response()
}

/// Serves the endpoints on `listener` until the process ends; logs `Listening` with the bound
/// address (`127.0.0.1:0` picks a free port).
pub fn serve(
    listener: tokio::net::TcpListener,
    scheduler: Recipient<GetSchedulerState>,
    log: slog::Logger,
) -> tokio::task::JoinHandle<()> {
    let ask = Ask {
        scheduler,
        version: env!("CARGO_PKG_VERSION"),
    };
    let app = Router::new()
        .route("/metrics", get(metrics_endpoint))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status_endpoint))
        .with_state(ask);
    if let Ok(addr) = listener.local_addr() {
        slog::info!(log, "Listening"; "addr" => addr.to_string());
    }
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            slog::error!(log, "Listener stopped"; "err" => %e);
        }
    })
}

async fn metrics_endpoint(State(ask): State<Ask>) -> Response {
    match ask.state().await {
        Ok(state) => (
            [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
            metrics::render(&state, ask.version),
        )
            .into_response(),
        Err(r) => r,
    }
}

async fn healthz(State(ask): State<Ask>) -> Response {
    match ask.state().await {
        Ok(_) => "ok\n".into_response(),
        Err(r) => r,
    }
}

async fn readyz(State(ask): State<Ask>) -> Response {
    match ask.state().await {
        Ok(state) => match status::readiness(&state, SystemTime::now()) {
            Ok(()) => "ok\n".into_response(),
            Err(why) => unavailable(why),
        },
        Err(r) => r,
    }
}

async fn status_endpoint(State(ask): State<Ask>) -> Response {
    match ask.state().await {
        Ok(state) => {
            axum::Json(status::document(&state, ask.version, SystemTime::now())).into_response()
        }
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix::{Actor, Context, Handler, ResponseFuture};

    /// A scheduler that never answers in time (a wedged actor system).
    struct Wedged;

    impl Actor for Wedged {
        type Context = Context<Self>;
    }

    impl Handler<GetSchedulerState> for Wedged {
        type Result = ResponseFuture<SchedulerState>;

        fn handle(&mut self, _: GetSchedulerState, _: &mut Context<Self>) -> Self::Result {
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                unreachable!("answered after an hour")
            })
        }
    }

    #[test]
    fn healthz_is_503_when_the_scheduler_does_not_answer_within_2s() {
        actix::System::new().block_on(async {
            let ask = Ask {
                scheduler: Wedged.start().recipient(),
                version: "test",
            };
            let started = std::time::Instant::now();
            let r = healthz(State(ask.clone())).await;
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
            let waited = started.elapsed();
            assert!(
                waited >= ANSWER_WITHIN && waited < Duration::from_secs(15),
                "{waited:?}"
            );
            // Every endpoint gives up the same way rather than hanging the prober.
            let r = readyz(State(ask)).await;
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        });
    }

    #[test]
    fn listen_addresses() {
        let ok = |s: &str, host: &str, port: u16| {
            assert_eq!(
                s.parse::<ListenAddr>(),
                Ok(ListenAddr {
                    host: host.into(),
                    port
                }),
                "{s}"
            )
        };
        ok("127.0.0.1:9090", "127.0.0.1", 9090);
        ok(":9090", "", 9090);
        ok("127.0.0.1:0", "127.0.0.1", 0);
        ok("localhost:80", "localhost", 80);
        ok("[::1]:9090", "::1", 9090);
        assert_eq!(
            "[::1]:9090".parse::<ListenAddr>().unwrap().to_string(),
            "[::1]:9090"
        );
        for bad in [
            "9090",
            "",
            "host:",
            "host:70000",
            "host:-1",
            "::1:80",
            "[zz]:80",
            "a b:1",
        ] {
            let e = bad.parse::<ListenAddr>().unwrap_err();
            assert!(e.ends_with("(expected host:port or :port)"), "{bad}: {e}");
            assert!(!e.contains('\n'), "{bad}: {e}");
        }
    }
}
