//! Referrers on a registry (spec §6.5): the OCI 1.1 referrers API
//! (`GET /v2/<repo>/referrers/<digest>`, `Link` pages followed) when the registry has it,
//! else the fallback tag schema `<alg>-<hex>` ([`crate::store::fallback_referrers`]).
//!
//! Whether a repository has the API is remembered for [`API_MEMORY`]. CNCF distribution 2.8
//! has none: it answers `404` with the plain-text body `404 page not found` (no registry error
//! code), which is what marks the API absent. A `404` carrying a registry error code
//! (`NAME_UNKNOWN`, …) comes from an API that exists: the repository is just not there yet.
//! `405`, `400` and the `UNSUPPORTED` error code also mean "no API"; any other failure
//! (401/403, server or network errors after the retries, broken pages) fails the copy and is
//! not remembered.
//!
//! Keeping the target's listing current after a push of a manifest with a `subject`: a
//! registry with the API indexes it itself (that is what its `OCI-Subject` answer says); for
//! the others the fallback index is updated ([`crate::store::fallback_add`]).

use super::client::Request;
use super::listing::{next_page_url, PagesSeen};
use super::RegistryStore;
use crate::oci::{media, Descriptor, Digest, Manifest};
use crate::reference::Reference;
use crate::store::{fallback_add, fallback_referrers, Referrers, StoreError};
use dashmap::DashMap;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT};
use reqwest::Method;
use std::time::{Duration, Instant};

/// Bound on one subject's referrer list (memory; a registry could page for ever).
const MAX_REFERRERS: usize = 10_000;

/// How long the presence or absence of the referrers API is remembered per repository.
pub(super) const API_MEMORY: Duration = Duration::from_secs(300);
/// Repositories whose referrers API presence is remembered at most, per store.
const API_MEMORY_REPOS: usize = 10_000;
/// Referrers pages are indexes; same bound as a manifest pull.
const PAGE_LIMIT: usize = 8 << 20;

/// What one `RegistryStore` learned about the referrers API: `<registry>/<repository>` →
/// (API present, when learned). Owned by the store, so two engines in one process (or a
/// reloaded configuration pointing a name elsewhere) learn for themselves.
#[derive(Debug, Default)]
pub(super) struct ApiMemory {
    repos: DashMap<String, (bool, Instant)>,
}

fn repo_key(r: &Reference) -> String {
    format!("{}/{}", r.registry, r.repository)
}

impl ApiMemory {
    fn known(&self, r: &Reference) -> Option<bool> {
        let key = repo_key(r);
        let (present, at) = *self.repos.get(&key)?;
        if at.elapsed() < API_MEMORY {
            Some(present)
        } else {
            self.repos.remove(&key);
            None
        }
    }

    /// At most [`API_MEMORY_REPOS`] repositories: a full table drops what has expired, and
    /// starts over if nothing has. Forgetting is safe: the next listing or push in that
    /// repository asks the API again (one request) and learns the same answer.
    fn remember(&self, r: &Reference, present: bool) {
        let key = repo_key(r);
        if !self.repos.contains_key(&key) && self.repos.len() >= API_MEMORY_REPOS {
            self.repos.retain(|_, (_, at)| at.elapsed() < API_MEMORY);
            if self.repos.len() >= API_MEMORY_REPOS {
                self.repos.clear();
            }
        }
        self.repos.insert(key, (present, Instant::now()));
    }
}

/// What the API said.
enum Api {
    /// The listing (all pages).
    Listed(Vec<Descriptor>),
    /// No referrers API here (remember it).
    Absent,
    /// The API could not be asked (401/403, network, server error, a broken page, too many
    /// pages): an error of this copy, and nothing remembered. Guessing "no API" instead would
    /// copy an image without its signatures and SBOMs, or write fallback tags into a registry
    /// that indexes referrers itself.
    Failed(StoreError),
}

/// These answers to the first request mean "this registry has no referrers API" (spec §6.5:
/// fall back to the tag schema): distribution 2.8's plain `404 page not found` (no registry
/// error code), `405 Method Not Allowed`, `400 Bad Request` (registries that reject the path
/// they do not know as a bad request), and the distribution spec's `UNSUPPORTED` error code.
/// An `Unauthorized` (401 after the auth flow ran, 403) is a refusal, not an absence; 5xx
/// and network errors (after the client's retries) come from a registry that may well have
/// the API and is briefly failing: neither is remembered, both fail this copy.
fn first_page_failure(e: StoreError) -> Api {
    match e {
        StoreError::NotFound(None) => Api::Absent,
        // an API that knows neither the repository nor the subject: nothing refers to it
        StoreError::NotFound(Some(_)) => Api::Listed(Vec::new()),
        StoreError::HttpStatus {
            status: 400 | 405, ..
        } => Api::Absent,
        StoreError::HttpStatus { ref text, .. } if text.ends_with(": UNSUPPORTED") => Api::Absent,
        e => Api::Failed(e),
    }
}

fn accept() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(ACCEPT, HeaderValue::from_static(media::OCI_INDEX));
    h
}

/// Descriptors of one page: an OCI index.
fn page_descriptors(bytes: bytes::Bytes, mt: Option<&str>) -> Option<Vec<Descriptor>> {
    let m = Manifest::from_bytes(bytes, mt);
    if m.media_type != media::OCI_INDEX {
        return None;
    }
    m.links().ok().map(|l| l.children)
}

async fn ask_api(store: &RegistryStore, repo: &Reference, subject: &Digest) -> Api {
    let client = &store.client;
    let path = format!("referrers/{subject}");
    let headers = accept();
    let first = client
        .retry_body(|| async {
            let (host, resp) = client
                .read(
                    &repo.registry,
                    Method::GET,
                    &repo.repository,
                    &path,
                    &headers,
                    &[200],
                )
                .await?;
            let url = resp.url().clone();
            let next = next_page_url(&url, resp.headers())?;
            let mt = resp.media_type();
            let bytes = resp.bytes(PAGE_LIMIT).await?;
            Ok((host, url, next, mt, bytes))
        })
        .await;
    let (host, url, mut next, mt, bytes) = match first {
        Ok(page) => page,
        Err(e) => return first_page_failure(e),
    };
    let Some(mut all) = page_descriptors(bytes, mt.as_deref()) else {
        // a 200 that is not an index (a web page, a proxy's answer): no API
        return Api::Absent;
    };
    // The same page rule as tag and catalog listings: a circle ends the listing, a chain
    // past the page bound fails this copy rather than passing for the whole list.
    let mut seen = PagesSeen::new(&url);
    while let Some(url) = next.take() {
        match seen.is_new(&url) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Api::Failed(e),
        }
        let page = client
            .retry_body(|| async {
                let req =
                    Request::repo(Method::GET, url.clone(), &host.repo_path(&repo.repository))
                        .header(ACCEPT, media::OCI_INDEX)?;
                let resp = client.send(&host, req, &[200]).await?;
                let following = next_page_url(resp.url(), resp.headers())?;
                let mt = resp.media_type();
                let bytes = resp.bytes(PAGE_LIMIT).await?;
                Ok((following, mt, bytes))
            })
            .await;
        match page {
            Ok((following, mt, bytes)) => match page_descriptors(bytes, mt.as_deref()) {
                Some(ds) => {
                    all.extend(ds);
                    if all.len() > MAX_REFERRERS {
                        return Api::Failed(StoreError::Invalid(format!(
                            "more than {MAX_REFERRERS} referrers listed, refusing the rest"
                        )));
                    }
                    next = following;
                }
                None => {
                    return Api::Failed(StoreError::Invalid(format!(
                        "referrers page {} is not an OCI index",
                        super::client::loggable(&url)
                    )))
                }
            },
            Err(e) => return Api::Failed(e),
        }
    }
    Api::Listed(all)
}

/// List the referrers of `subject` in `repo`: the API when the repository has it, else the
/// fallback tag.
pub(super) async fn list(
    store: &RegistryStore,
    repo: &Reference,
    subject: &Digest,
) -> Result<Referrers, StoreError> {
    if store.referrers_api.known(repo) != Some(false) {
        match ask_api(store, repo, subject).await {
            Api::Listed(descriptors) => {
                store.referrers_api.remember(repo, true);
                return Ok(Referrers {
                    descriptors,
                    tags: Vec::new(),
                });
            }
            Api::Absent => store.referrers_api.remember(repo, false),
            Api::Failed(e) => return Err(e),
        }
    }
    fallback_referrers(store, repo, subject).await
}

/// A manifest `entry` with `subject` landed in `repo`: nothing to do where the registry
/// indexes referrers itself; else the fallback index lists it.
pub(super) async fn added(
    store: &RegistryStore,
    repo: &Reference,
    subject: &Digest,
    entry: &Descriptor,
) -> Result<bool, StoreError> {
    let has_api = match store.referrers_api.known(repo) {
        Some(v) => v,
        None => match ask_api(store, repo, subject).await {
            Api::Listed(_) => {
                store.referrers_api.remember(repo, true);
                true
            }
            Api::Absent => {
                store.referrers_api.remember(repo, false);
                false
            }
            Api::Failed(e) => return Err(e),
        },
    };
    if has_api {
        return Ok(false);
    }
    fallback_add(store, repo, subject, entry).await
}

#[cfg(test)]
mod tests {
    use super::super::client::test_util;
    use super::super::RegistryOptions;
    use super::*;
    use crate::store::{fallback_tag, Store};
    use axum::extract::Request as AxRequest;
    use bytes::Bytes;
    use std::sync::{Arc, Mutex};

    fn store(addr: &str) -> RegistryStore {
        RegistryStore::with_client(test_util::client(
            &[addr],
            RegistryOptions::new("ua"),
            API_MEMORY,
        ))
    }

    fn entry(n: u8) -> Descriptor {
        let mut d = Descriptor::new(media::OCI_MANIFEST, Digest::sha256_of(&[n]), 10 + n as i64);
        d.artifact_type = Some("application/example.sbom".into());
        d
    }

    fn index(entries: &[Descriptor]) -> String {
        serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": entries})
            .to_string()
    }

    fn response(status: u16, ct: &str, body: String) -> axum::http::Response<axum::body::Body> {
        axum::http::Response::builder()
            .status(status)
            .header("content-type", ct)
            .body(axum::body::Body::from(body))
            .unwrap()
    }

    #[tokio::test]
    async fn the_api_is_used_with_its_pages() {
        let subject = Digest::sha256_of(b"subject");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let app = axum::Router::new().fallback(move |req: AxRequest| {
            let seen = s2.clone();
            async move {
                let uri = req.uri().to_string();
                seen.lock().unwrap().push(format!("{} {uri}", req.method()));
                if !uri.contains("/referrers/") {
                    return response(404, "text/plain", "404 page not found".into());
                }
                if uri.contains("page=2") {
                    return response(200, media::OCI_INDEX, index(&[entry(2)]));
                }
                let mut r = response(200, media::OCI_INDEX, index(&[entry(1)]));
                let link = format!("<{}?page=2>; rel=\"next\"", req.uri().path());
                r.headers_mut().insert("link", link.parse().unwrap());
                r
            }
        });
        let addr = test_util::serve(app).await;
        let s = store(&addr);
        let repo = Reference::parse(&format!("{addr}/app")).unwrap();
        let got = s.referrers(&repo, &subject).await.unwrap();
        assert_eq!(got.descriptors, vec![entry(1), entry(2)]);
        assert!(got.tags.is_empty());
        // the registry indexes pushed referrers itself: nothing to write
        assert!(!s.referrer_added(&repo, &subject, &entry(3)).await.unwrap());
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(seen
            .iter()
            .all(|l| l.starts_with("GET ") && l.contains("/referrers/")));
    }

    #[tokio::test]
    async fn without_the_api_the_fallback_tag_is_read_and_maintained() {
        let subject = Digest::sha256_of(b"subject");
        let tag = fallback_tag(&subject);
        let stored: Arc<Mutex<Option<Bytes>>> = Arc::new(Mutex::new(None));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s2, st2) = (seen.clone(), stored.clone());
        let app = axum::Router::new().fallback(move |req: AxRequest| {
            let (seen, stored) = (s2.clone(), st2.clone());
            async move {
                let (method, path) = (req.method().clone(), req.uri().path().to_string());
                seen.lock().unwrap().push(format!("{method} {path}"));
                if path.contains("/referrers/") {
                    // distribution 2.8
                    return response(404, "text/plain", "404 page not found".into());
                }
                if method == Method::PUT {
                    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                        .await
                        .unwrap();
                    *stored.lock().unwrap() = Some(body);
                    return response(201, "text/plain", String::new());
                }
                match stored.lock().unwrap().clone() {
                    Some(b) => response(
                        200,
                        media::OCI_INDEX,
                        String::from_utf8(b.to_vec()).unwrap(),
                    ),
                    None => response(
                        404,
                        "application/json",
                        r#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#.into(),
                    ),
                }
            }
        });
        let addr = test_util::serve(app).await;
        let s = store(&addr);
        let repo = Reference::parse(&format!("{addr}/app")).unwrap();
        assert_eq!(
            s.referrers(&repo, &subject).await.unwrap(),
            Referrers::default()
        );
        assert!(s.referrer_added(&repo, &subject, &entry(1)).await.unwrap());
        assert!(s.referrer_added(&repo, &subject, &entry(2)).await.unwrap());
        assert!(!s.referrer_added(&repo, &subject, &entry(1)).await.unwrap());
        let got = s.referrers(&repo, &subject).await.unwrap();
        assert_eq!(got.descriptors, vec![entry(1), entry(2)]);
        assert_eq!(got.tags, vec![tag.clone()]);
        let seen = seen.lock().unwrap().clone();
        // the API was asked once; its absence is remembered
        assert_eq!(
            seen.iter().filter(|l| l.contains("/referrers/")).count(),
            1,
            "{seen:?}"
        );
        assert_eq!(
            seen.iter()
                .filter(|l| *l == &format!("PUT /v2/app/manifests/{tag}"))
                .count(),
            2
        );
    }

    /// A registry whose referrers API answers `status`; every request is recorded.
    async fn refusing(status: u16) -> (String, Arc<Mutex<Vec<String>>>) {
        answering(
            status,
            "application/json",
            r#"{"errors":[{"code":"DENIED"}]}"#,
        )
        .await
    }

    /// A registry whose referrers API answers `status` with `body`; every request is
    /// recorded; no fallback tag exists.
    async fn answering(
        status: u16,
        content_type: &'static str,
        body: &'static str,
    ) -> (String, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let app = axum::Router::new().fallback(move |req: AxRequest| {
            let seen = s2.clone();
            async move {
                let (method, path) = (req.method().clone(), req.uri().path().to_string());
                seen.lock().unwrap().push(format!("{method} {path}"));
                if path.contains("/referrers/") {
                    return response(status, content_type, body.to_string());
                }
                response(
                    404,
                    "application/json",
                    r#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#.into(),
                )
            }
        });
        (test_util::serve(app).await, seen)
    }

    #[tokio::test]
    async fn a_refused_listing_is_an_error_not_a_missing_api() {
        for status in [401, 403] {
            let subject = Digest::sha256_of(b"subject");
            let (addr, seen) = refusing(status).await;
            let s = store(&addr);
            let repo = Reference::parse(&format!("{addr}/app")).unwrap();
            let err = s.referrers(&repo, &subject).await.unwrap_err();
            assert!(
                matches!(err, StoreError::Unauthorized { .. }),
                "{status}: {err}"
            );
            let err = s
                .referrer_added(&repo, &subject, &entry(1))
                .await
                .unwrap_err();
            assert!(
                matches!(err, StoreError::Unauthorized { .. }),
                "{status}: {err}"
            );
            // nothing remembered, no fallback tag read or written
            assert_eq!(s.referrers_api.known(&repo), None);
            let seen = seen.lock().unwrap().clone();
            assert!(
                seen.iter().all(|l| l.contains("/referrers/")),
                "{status}: {seen:?}"
            );
        }
    }

    /// The answers of a registry without the API (spec §6.5: fall back to the tag schema):
    /// distribution's plain 404, 405, 400 (registries that reject the unknown path as a bad
    /// request) and the `UNSUPPORTED` code. The fallback tag is read and the absence remembered.
    #[tokio::test]
    async fn answers_of_a_registry_without_the_api_fall_back_to_the_tag() {
        let json = "application/json";
        let cases = [
            (404, "text/plain", "404 page not found"),
            (405, json, r#"{"errors":[{"code":"DENIED"}]}"#),
            (400, json, r#"{"errors":[{"code":"NAME_INVALID"}]}"#),
            (400, "text/plain", "bad request"),
            (501, json, r#"{"errors":[{"code":"UNSUPPORTED"}]}"#),
        ];
        for (status, ct, body) in cases {
            let subject = Digest::sha256_of(b"subject");
            let (addr, seen) = answering(status, ct, body).await;
            let s = store(&addr);
            let repo = Reference::parse(&format!("{addr}/app")).unwrap();
            let got = s.referrers(&repo, &subject).await;
            assert_eq!(got.ok(), Some(Referrers::default()), "{status} {body}");
            assert_eq!(s.referrers_api.known(&repo), Some(false), "{status} {body}");
            let tag = format!("GET /v2/app/manifests/{}", fallback_tag(&subject));
            assert!(
                seen.lock().unwrap().contains(&tag),
                "{status} {body}: fallback tag not read"
            );
        }
    }

    /// A registry that has the API but is failing right now (5xx after the retries, the
    /// network): an error of this copy, nothing remembered and no fallback tag read or
    /// written, so a registry that indexes referrers itself never gets fallback tags.
    #[tokio::test]
    async fn a_failing_api_is_an_error_not_a_missing_api() {
        let subject = Digest::sha256_of(b"subject");
        let (addr, seen) = answering(500, "text/plain", "oops").await;
        let s = store(&addr);
        let repo = Reference::parse(&format!("{addr}/app")).unwrap();
        let err = s.referrers(&repo, &subject).await.unwrap_err();
        assert!(
            matches!(err, StoreError::HttpStatus { status: 500, .. }),
            "{err}"
        );
        assert_eq!(s.referrers_api.known(&repo), None);
        let seen = seen.lock().unwrap().clone();
        assert!(seen.iter().all(|l| l.contains("/referrers/")), "{seen:?}");

        // nothing listens there any more
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let s = store(&closed);
        let repo = Reference::parse(&format!("{closed}/app")).unwrap();
        assert!(s.referrers(&repo, &subject).await.is_err());
        assert!(s.referrer_added(&repo, &subject, &entry(1)).await.is_err());
        assert_eq!(s.referrers_api.known(&repo), None);
    }

    /// A server syncing ever new repositories does not keep what it learned about each for
    /// ever: the table is bounded, and what was just learned is kept.
    #[test]
    fn the_api_memory_is_bounded() {
        let memory = ApiMemory::default();
        let repo = |i: usize| Reference::parse(&format!("reg.example/app{i}")).unwrap();
        for i in 0..API_MEMORY_REPOS * 2 + 1 {
            memory.remember(&repo(i), i % 2 == 0);
            assert!(memory.repos.len() <= API_MEMORY_REPOS, "{i}");
            assert_eq!(memory.known(&repo(i)), Some(i % 2 == 0));
        }
        // one already known is updated in place, not counted twice
        let n = memory.repos.len();
        memory.remember(&repo(API_MEMORY_REPOS * 2), false);
        assert_eq!(memory.repos.len(), n);
    }

    /// A registry whose referrers pages each hold `entry(page)` (none on page 0) and link to
    /// page `next(page)`; returns its address and how many pages were asked.
    async fn paging(next: fn(usize) -> usize, with_entries: bool) -> (String, Arc<Mutex<usize>>) {
        let asked = Arc::new(Mutex::new(0));
        let a2 = asked.clone();
        let app = axum::Router::new().fallback(move |req: AxRequest| {
            let asked = a2.clone();
            async move {
                *asked.lock().unwrap() += 1;
                let page: usize = req
                    .uri()
                    .query()
                    .and_then(|q| q.strip_prefix("page="))
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0);
                let entries = if with_entries && page > 0 {
                    vec![entry(page as u8)]
                } else {
                    Vec::new()
                };
                let mut r = response(200, media::OCI_INDEX, index(&entries));
                let link = format!("<{}?page={}>; rel=\"next\"", req.uri().path(), next(page));
                r.headers_mut().insert("link", link.parse().unwrap());
                r
            }
        });
        (test_util::serve(app).await, asked)
    }

    /// A listing cut short must not pass for the whole list: the referrers past the cut
    /// (signatures, SBOMs) would silently not be copied.
    #[tokio::test]
    async fn referrers_pages_that_never_end_are_an_error() {
        let subject = Digest::sha256_of(b"subject");
        let (addr, asked) = paging(|p| p + 1, false).await;
        let s = store(&addr);
        let repo = Reference::parse(&format!("{addr}/app")).unwrap();
        let err = s.referrers(&repo, &subject).await.unwrap_err();
        assert!(err.to_string().contains("pages"), "{err}");
        assert_eq!(*asked.lock().unwrap(), super::super::listing::MAX_PAGES);
        // the API is there; nothing remembered as absent, no fallback tag read
        assert_ne!(s.referrers_api.known(&repo), Some(false));
    }

    #[tokio::test]
    async fn referrers_pages_linking_back_end_after_the_circle() {
        // 0 → 1 → 2 → 1: every page of the circle has been read once
        let subject = Digest::sha256_of(b"subject");
        let (addr, asked) = paging(|p| if p == 2 { 1 } else { p + 1 }, true).await;
        let s = store(&addr);
        let repo = Reference::parse(&format!("{addr}/app")).unwrap();
        let got = s.referrers(&repo, &subject).await.unwrap();
        assert_eq!(got.descriptors, vec![entry(1), entry(2)]);
        assert_eq!(*asked.lock().unwrap(), 3);
    }

    /// What one store learned about a registry's referrers API stays with it: a second
    /// store in the same process (another engine, a reloaded configuration) asks for itself.
    #[tokio::test]
    async fn two_stores_do_not_share_what_they_learned_about_the_api() {
        let subject = Digest::sha256_of(b"subject");
        let (addr, seen) = refusing(405).await;
        let repo = Reference::parse(&format!("{addr}/app")).unwrap();
        let asked = || {
            seen.lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains("/referrers/"))
                .count()
        };
        let first = store(&addr);
        first.referrers(&repo, &subject).await.unwrap();
        first.referrers(&repo, &subject).await.unwrap();
        assert_eq!(asked(), 1, "the first store remembers the API is absent");
        let second = store(&addr);
        second.referrers(&repo, &subject).await.unwrap();
        assert_eq!(asked(), 2, "the second store asks for itself");
    }
}
