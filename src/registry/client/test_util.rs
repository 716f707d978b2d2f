//! Test helpers shared by the registry modules' unit tests: a local HTTP server and a client
//! for it.

use super::super::{HostConfig, OpenGate, RegistryOptions, Tls};
use super::Client;
use slog::Logger;
use std::sync::Arc;
use std::time::Duration;

/// Serve `app` on a free loopback port; returns `127.0.0.1:PORT`.
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr.to_string()
}

/// A client for plain-http `hosts` (with `options`) whose idle timeout is `idle`.
pub fn client(hosts: &[&str], options: RegistryOptions, idle: Duration) -> Arc<Client> {
    let hosts = hosts
        .iter()
        .map(|h| HostConfig {
            tls: Tls::Disabled,
            ..HostConfig::for_name(h)
        })
        .collect();
    let log = Logger::root(slog::Discard, slog::o!());
    let c = Client::with_certs_dir(hosts, Arc::new(OpenGate), options, log, None).unwrap();
    Arc::new(c.with_idle_timeout(idle))
}
