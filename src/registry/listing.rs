//! Tag list and catalog, page by page (spec §7.2, §5.2).

use super::client::{Client, Request, Response};
use super::header::Lexer;
use super::origin::{self, Reach};
use crate::reference::Reference;
use crate::store::StoreError;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, LINK};
use reqwest::Method;
use serde::Deserialize;
use std::collections::HashSet;
use tokio::sync::mpsc;
use url::Url;

/// Listing pages are small JSON documents; this only guards against a runaway body.
const PAGE_LIMIT: usize = 32 << 20;
/// Catalog page size asked for. Registries that honour `n` (distribution 2.8) then answer
/// with a `Link` to the next page, which saves the extra request per page that paging with
/// `last=` alone needs to find the end; registries that ignore `n` page by `last=`.
const CATALOG_PAGE: &str = "1000";
/// A listing whose `Link`s lead to ever new pages stops with an error here (10,000 pages of
/// even 50 names each is far beyond any real repository or catalog).
pub(crate) const MAX_PAGES: usize = 10_000;

/// The pages of one listing (tags, catalog, referrers) asked for so far: a page asked again
/// means the registry's `Link`s go round in circles (every page of the circle has been read:
/// the listing is complete); more than [`MAX_PAGES`] pages is an error, never a listing
/// silently cut short.
pub(super) struct PagesSeen(HashSet<Url>);

impl PagesSeen {
    pub(super) fn new(first: &Url) -> Self {
        PagesSeen(HashSet::from([first.clone()]))
    }

    /// Whether `next` is a page not read yet.
    pub(super) fn is_new(&mut self, next: &Url) -> Result<bool, StoreError> {
        if self.0.contains(next) {
            return Ok(false);
        }
        if self.0.len() >= MAX_PAGES {
            return Err(StoreError::Invalid(format!(
                "the registry's listing goes on past {MAX_PAGES} pages, stopped"
            )));
        }
        self.0.insert(next.clone());
        Ok(true)
    }
}

#[derive(Deserialize)]
struct TagPage {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct CatalogPage {
    #[serde(default)]
    repositories: Option<Vec<String>>,
}

pub(super) async fn tag_list(
    client: &Client,
    repo: &Reference,
    pages: mpsc::Sender<Vec<String>>,
) -> Result<(), StoreError> {
    let mut headers = HeaderMap::new();
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    // The first page may come from a mirror (spec §7.1); its `Link`s lead on from there.
    // Each page is re-requested whole if its body is cut off (`retry_body`).
    let (host, first_url, mut next, page) = client
        .retry_body(|| async {
            let (host, resp) = client
                .read(
                    &repo.registry,
                    Method::GET,
                    &repo.repository,
                    "tags/list",
                    &headers,
                    &[200],
                )
                .await?;
            let url = resp.url().clone();
            let next = next_page(&resp)?;
            let page: TagPage = read_json(resp).await?;
            Ok((host, url, next, page))
        })
        .await?;
    send(&pages, page.tags.unwrap_or_default()).await?;
    let mut seen = PagesSeen::new(&first_url);
    loop {
        match next {
            Some(url) if seen.is_new(&url)? => {
                let (following, page) = client
                    .retry_body(|| async {
                        let req = Request::repo(
                            Method::GET,
                            url.clone(),
                            &host.repo_path(&repo.repository),
                        )
                        .header(ACCEPT, "application/json")?;
                        let resp = client.send(&host, req, &[200]).await?;
                        let following = next_page(&resp)?;
                        let page: TagPage = read_json(resp).await?;
                        Ok((following, page))
                    })
                    .await
                    .map_err(later_page_error)?;
                send(&pages, page.tags.unwrap_or_default()).await?;
                next = following;
            }
            _ => return Ok(()),
        }
    }
}

/// Only the first page's 404 says the repository is not there (its tags all absent); a
/// `Link` page that answers 404 is a broken listing.
fn later_page_error(e: StoreError) -> StoreError {
    match e {
        StoreError::NotFound(detail) => StoreError::HttpStatus {
            status: 404,
            text: format!(
                "tag listing page not found{}",
                detail.map(|d| format!(": {d}")).unwrap_or_default()
            ),
        },
        e => e,
    }
}

/// `GET /v2/_catalog?n=1000`, then the `Link` page if given, else `?last=<last repo>`, until a
/// page is empty or brings nothing past the previous one. A registry that paged by `Link`
/// and stops sending it is done: no extra `last=` request to confirm.
pub(super) async fn catalog(
    client: &Client,
    registry: &Reference,
    pages: mpsc::Sender<Vec<String>>,
) -> Result<(), StoreError> {
    let host = client.host(&registry.registry);
    let base = host.catalog_url()?;
    let mut url = base.clone();
    url.query_pairs_mut().append_pair("n", CATALOG_PAGE);
    let mut last: Option<String> = None;
    let mut linked = false;
    let mut seen = PagesSeen::new(&url);
    loop {
        let (link, page) = client
            .retry_body(|| async {
                let req = Request::registry(Method::GET, url.clone())
                    .header(ACCEPT, "application/json")?;
                let resp = client.send(&host, req, &[200]).await?;
                let link = next_page(&resp)?;
                let page: CatalogPage = read_json(resp).await?;
                Ok((link, page))
            })
            .await?;
        let repos = page.repositories.unwrap_or_default();
        let page_last = repos.last().cloned();
        if page_last.is_none() || page_last == last {
            return Ok(());
        }
        send(&pages, repos).await?;
        last = page_last;
        url = match link {
            Some(next) => {
                linked = true;
                next
            }
            None if linked => return Ok(()),
            None => {
                let mut next = base.clone();
                next.query_pairs_mut()
                    .append_pair("n", CATALOG_PAGE)
                    .append_pair("last", last.as_deref().unwrap_or(""));
                next
            }
        };
        if !seen.is_new(&url)? {
            return Ok(());
        }
    }
}

async fn send(pages: &mpsc::Sender<Vec<String>>, page: Vec<String>) -> Result<(), StoreError> {
    // The receiver is gone: whoever asked no longer wants the list.
    pages.send(page).await.map_err(|_| StoreError::Canceled)
}

/// Listing bodies are JSON, served as JSON, text/plain or without a type (spec §7.2).
async fn read_json<T: for<'de> Deserialize<'de>>(resp: Response) -> Result<T, StoreError> {
    if let Some(mt) = resp.media_type() {
        if mt != "application/json" && mt != "text/plain" {
            return Err(StoreError::Invalid(format!(
                "unexpected content type {mt:?} for a listing"
            )));
        }
    }
    let body = resp.bytes(PAGE_LIMIT).await?;
    serde_json::from_slice(&body).map_err(|e| StoreError::Invalid(format!("listing: {e}")))
}

/// The `rel="next"` link, resolved against the URL that returned it.
fn next_page(resp: &Response) -> Result<Option<Url>, StoreError> {
    next_page_url(resp.url(), resp.headers())
}

/// The `rel="next"` page of a listing, resolved against the URL that returned it. The next
/// page must stay on the same origin ([`origin::check`]): a `Link` naming another host (or
/// https → http) is refused rather than followed.
pub(crate) fn next_page_url(base: &Url, headers: &HeaderMap) -> Result<Option<Url>, StoreError> {
    let Some(link) = next_link(headers) else {
        return Ok(None);
    };
    let next = base
        .join(&link)
        .map_err(|e| StoreError::Invalid(format!("invalid Link header: {e}")))?;
    match origin::check(base, &next) {
        Ok(Reach::SameOrigin) => Ok(Some(next)),
        verdict => Err(StoreError::Invalid(format!(
            "the registry's next-page Link leads to {} ({}), not followed",
            super::client::loggable(&next),
            match verdict {
                Err(why) => why.to_string(),
                Ok(_) => "another origin".to_string(),
            }
        ))),
    }
}

/// The target of the first `Link: <url>; rel="next"` (RFC 8288), over all `Link` headers.
pub(crate) fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(parse_next_link)
}

fn parse_next_link(value: &str) -> Option<String> {
    let mut l = Lexer::new(value);
    loop {
        l.take_while(|c| c == ' ' || c == '\t' || c == ',');
        if !l.eat('<') {
            return None;
        }
        let target = l.take_while(|c| c != '>').to_string();
        if !l.eat('>') {
            return None;
        }
        let mut is_next = false;
        loop {
            l.skip_ws();
            if !l.eat(';') {
                break;
            }
            l.skip_ws();
            let name = l.token().to_ascii_lowercase();
            l.skip_ws();
            let value = if l.eat('=') {
                l.skip_ws();
                l.value().ok()?
            } else {
                String::new()
            };
            if name == "rel"
                && value
                    .split_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("next"))
            {
                is_next = true;
            }
        }
        if is_next {
            return Some(target);
        }
        l.skip_ws();
        if !l.eat(',') {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header_next() {
        assert_eq!(
            parse_next_link(r#"</v2/_catalog?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/_catalog?last=b&n=2")
        );
        assert_eq!(
            parse_next_link(r#"<https://r/v2/a/tags/list?n=1&last=x,y>; rel=next"#).as_deref(),
            Some("https://r/v2/a/tags/list?n=1&last=x,y")
        );
        assert_eq!(
            parse_next_link(r#"</p1>; rel="prev"; title="a, b", </p3>;rel="last next""#).as_deref(),
            Some("/p3")
        );
        assert_eq!(parse_next_link(r#"</p1>; rel="prev""#), None);
        assert_eq!(parse_next_link("garbage"), None);
    }

    #[test]
    fn link_over_several_headers() {
        let mut h = HeaderMap::new();
        h.append(LINK, "</a>; rel=\"prev\"".parse().unwrap());
        h.append(LINK, "</b>; rel=\"next\"".parse().unwrap());
        assert_eq!(next_link(&h).as_deref(), Some("/b"));
        let base = Url::parse("http://r:5000/v2/_catalog?n=2").unwrap();
        assert_eq!(
            base.join("/v2/_catalog?last=b&n=2").unwrap().as_str(),
            "http://r:5000/v2/_catalog?last=b&n=2"
        );
    }

    use super::super::client::{test_util, IDLE_TIMEOUT};
    use super::super::RegistryOptions;
    use axum::extract::Request as AxRequest;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A registry whose catalog pages each hold one new repository and link to `next(n)`.
    async fn catalog_server(next: fn(usize) -> usize) -> (String, Arc<AtomicUsize>) {
        let asked = Arc::new(AtomicUsize::new(0));
        let a2 = asked.clone();
        let app = axum::Router::new().fallback(move |req: AxRequest| {
            let asked = a2.clone();
            async move {
                asked.fetch_add(1, Ordering::SeqCst);
                let page: usize = req
                    .uri()
                    .query()
                    .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("page=")))
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0);
                axum::http::Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .header(
                        "link",
                        format!("</v2/_catalog?page={}>; rel=\"next\"", next(page)),
                    )
                    .body(axum::body::Body::from(format!(
                        r#"{{"repositories":["r{page}"]}}"#
                    )))
                    .unwrap()
            }
        });
        (test_util::serve(app).await, asked)
    }

    async fn list_catalog(addr: &str) -> (Result<(), StoreError>, usize) {
        let c = test_util::client(&[addr], RegistryOptions::new("ua"), IDLE_TIMEOUT);
        let r = Reference::parse(&format!("{addr}/x")).unwrap();
        let (tx, mut rx) = mpsc::channel::<Vec<String>>(4);
        let count = tokio::spawn(async move {
            let mut n = 0;
            while let Some(p) = rx.recv().await {
                n += p.len();
            }
            n
        });
        let res = catalog(&c, &r, tx).await;
        (res, count.await.unwrap())
    }

    #[tokio::test]
    async fn a_catalog_that_never_ends_stops_with_an_error() {
        let (addr, asked) = catalog_server(|p| p + 1).await;
        let (res, repos) = list_catalog(&addr).await;
        let err = res.unwrap_err();
        assert!(err.to_string().contains("pages"), "{err}");
        assert_eq!(asked.load(Ordering::SeqCst), MAX_PAGES);
        assert_eq!(repos, MAX_PAGES);
    }

    #[tokio::test]
    async fn a_catalog_linking_back_ends_after_the_circle() {
        // 0 → 1 → 2 → 1: every page of the circle has been read once
        let (addr, asked) = catalog_server(|p| if p == 2 { 1 } else { p + 1 }).await;
        let (res, repos) = list_catalog(&addr).await;
        res.unwrap();
        assert_eq!(asked.load(Ordering::SeqCst), 3);
        assert_eq!(repos, 3);
    }
}
