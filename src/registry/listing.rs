//! Tag list and catalog, page by page (spec §7.2, §5.2).

use super::client::{retry_body, Client, Request, Response};
use super::header::Lexer;
use crate::reference::Reference;
use crate::store::StoreError;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, LINK};
use reqwest::Method;
use serde::Deserialize;
use tokio::sync::mpsc;
use url::Url;

/// Listing pages are small JSON documents; this only guards against a runaway body.
const PAGE_LIMIT: usize = 32 << 20;
/// Catalog page size asked for. Registries that honour `n` (distribution 2.8) then answer
/// with a `Link` to the next page, which saves the extra request per page that paging with
/// `last=` alone needs to find the end; registries that ignore `n` page by `last=`.
const CATALOG_PAGE: &str = "1000";

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
    let (host, first_url, mut next, page) = retry_body(|| async {
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
    let mut seen = vec![first_url];
    loop {
        match next {
            // A registry sending us round in circles has no more pages.
            Some(url) if !seen.contains(&url) => {
                seen.push(url.clone());
                let (following, page) = retry_body(|| async {
                    let req =
                        Request::repo(Method::GET, url.clone(), &host.repo_path(&repo.repository))
                            .header(ACCEPT, "application/json")?;
                    let resp = client.send(&host, req, &[200]).await?;
                    let following = next_page(&resp)?;
                    let page: TagPage = read_json(resp).await?;
                    Ok((following, page))
                })
                .await?;
                send(&pages, page.tags.unwrap_or_default()).await?;
                next = following;
            }
            _ => return Ok(()),
        }
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
    loop {
        let (link, page) = retry_body(|| async {
            let req =
                Request::registry(Method::GET, url.clone()).header(ACCEPT, "application/json")?;
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
/// page must stay on the same origin: requests carry the registry's credentials, so a `Link`
/// naming another host (or https → http) is refused rather than followed.
pub(crate) fn next_page_url(base: &Url, headers: &HeaderMap) -> Result<Option<Url>, StoreError> {
    let Some(link) = next_link(headers) else {
        return Ok(None);
    };
    let next = base
        .join(&link)
        .map_err(|e| StoreError::Invalid(format!("invalid Link header: {e}")))?;
    if next.origin() != base.origin() {
        return Err(StoreError::Invalid(format!(
            "the registry's next-page Link leads to another origin ({}), not followed",
            super::client::loggable(&next)
        )));
    }
    Ok(Some(next))
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
}
