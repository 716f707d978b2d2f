//! Blob HEAD, streaming GET with Range resume, monolithic and chunked upload, cross-repository
//! mount (spec §6.3).

use super::client::{loggable, Body, Client, Host, Request, Response, IDLE_TIMEOUT};
use super::origin::{self, Reach};
use crate::oci::{Descriptor, Digest};
use crate::reference::Reference;
use crate::store::{verified, BlobStream, StoreError};
use bytes::BytesMut;
use futures::StreamExt;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use reqwest::Method;
use slog::debug;
use std::sync::Arc;
use tokio_util::task::task_tracker::TaskTrackerToken;
use url::Url;

/// How often an interrupted download is picked up again where it stopped.
const MAX_RESUMES: u32 = 5;
const DEFAULT_CHUNK: usize = 1 << 20;
/// Cap on the chunk held in memory, also for a registry's `OCI-Chunk-Min-Length` (the spec's
/// 1 GiB would let one header make every chunked upload hold 1 GiB).
const MAX_CHUNK: usize = 64 << 20;
const OCTET_STREAM: &str = "application/octet-stream";

pub(super) async fn head(
    client: &Client,
    repo: &Reference,
    digest: &Digest,
) -> Result<bool, StoreError> {
    let path = format!("blobs/{digest}");
    let headers = HeaderMap::new();
    match client
        .read(
            &repo.registry,
            Method::HEAD,
            &repo.repository,
            &path,
            &headers,
            &[200],
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

/// The download is lazy: the GET is sent when the stream is first polled. A copy therefore
/// holds no source request slot while it waits for the target's upload session (POST), only
/// while bytes actually flow.
pub(super) async fn get(
    client: Arc<Client>,
    repo: &Reference,
    desc: &Descriptor,
) -> Result<BlobStream, StoreError> {
    let host = client.host(&repo.registry);
    let path = format!("blobs/{}", desc.digest);
    // Build the request once up front so a malformed reference fails here, not mid-upload.
    host.request(Method::GET, &repo.repository, &path)?;
    let download = Download {
        hostname: host.config.hostname.clone(),
        source: Source {
            client,
            registry: repo.registry.clone(),
            repo: repo.repository.clone(),
            path,
            digest: desc.digest.clone(),
            expected: u64::try_from(desc.size).ok(),
        },
        total: u64::try_from(desc.size).ok(),
        offset: 0,
        resumes: 0,
        started: false,
        body: None,
    };
    Ok(verified(desc, download.into_stream()))
}

/// A blob download that survives dropped connections by asking for the rest with `Range`.
struct Download {
    source: Source,
    /// The host serving the body (a mirror or the registry), for error messages.
    hostname: String,
    /// Bytes the body must have; a body ending before is an interruption, not the end.
    total: Option<u64>,
    offset: u64,
    resumes: u32,
    /// Whether the first GET has been sent.
    started: bool,
    /// None before the first poll and once finished or failed.
    body: Option<BlobStream>,
}

impl Download {
    fn into_stream(self) -> BlobStream {
        futures::stream::unfold(self, |mut d| async move {
            if !d.started {
                d.started = true;
                match d.source.first().await {
                    Ok((hostname, body, announced)) => {
                        d.total = d.total.or(announced);
                        d.body = Some(body);
                        d.hostname = hostname;
                    }
                    Err(e) => return Some((Err(e), d)),
                }
            }
            loop {
                let body = d.body.as_mut()?;
                let interruption = match tokio::time::timeout(IDLE_TIMEOUT, body.next()).await {
                    Ok(Some(Ok(chunk))) => {
                        d.offset += chunk.len() as u64;
                        return Some((Ok(chunk), d));
                    }
                    Ok(Some(Err(e))) => e,
                    Ok(None) => match d.total {
                        Some(total) if d.offset < total => StoreError::ShortRead {
                            expected: total,
                            got: d.offset,
                        },
                        _ => return None,
                    },
                    Err(_) => StoreError::Network {
                        host: d.hostname.clone(),
                        detail: "timed out reading the blob".into(),
                    },
                };
                // Drop the old body (and its permit) before asking for a new one.
                d.body = None;
                if d.resumes >= MAX_RESUMES || d.total.is_none() {
                    return Some((Err(interruption), d));
                }
                d.resumes += 1;
                debug!(d.source.client.log, "resuming blob download";
                    "repo" => &d.source.repo, "path" => &d.source.path, "offset" => d.offset,
                    "error" => %interruption, "resume" => d.resumes);
                match d.source.resume(d.offset).await {
                    Ok((hostname, body)) => {
                        d.body = Some(body);
                        d.hostname = hostname;
                    }
                    Err(e) => return Some((Err(e), d)),
                }
            }
        })
        .boxed()
    }
}

/// Where a blob download comes from (kept apart from the body, which is not `Sync`): the
/// registry or, for each request anew, one of its mirrors (spec §7.1).
struct Source {
    client: Arc<Client>,
    registry: String,
    repo: String,
    path: String,
    digest: Digest,
    expected: Option<u64>,
}

impl Source {
    /// The initial GET; a registry announcing another size than the descriptor is refused
    /// before any byte is forwarded.
    async fn first(&self) -> Result<(String, BlobStream, Option<u64>), StoreError> {
        let (host, resp) = self
            .client
            .read(
                &self.registry,
                Method::GET,
                &self.repo,
                &self.path,
                &HeaderMap::new(),
                &[200],
            )
            .await?;
        let announced = resp.content_length();
        if let (Some(announced), Some(expected)) = (announced, self.expected) {
            if announced != expected {
                return Err(StoreError::Invalid(format!(
                    "blob {}: registry announces {announced} bytes, descriptor says {expected}",
                    self.digest
                )));
            }
        }
        Ok((host.config.hostname.clone(), resp.into_stream(), announced))
    }

    /// `Range: bytes=<offset>-`; only a 206 starting exactly at `offset` will do.
    async fn resume(&self, offset: u64) -> Result<(String, BlobStream), StoreError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            RANGE,
            HeaderValue::from_str(&format!("bytes={offset}-")).expect("digits"),
        );
        let (host, resp) = self
            .client
            .read(
                &self.registry,
                Method::GET,
                &self.repo,
                &self.path,
                &headers,
                &[206],
            )
            .await?;
        let start = resp
            .header("content-range")
            .and_then(|cr| cr.strip_prefix("bytes "))
            .and_then(|cr| cr.split('-').next())
            .and_then(|s| s.trim().parse::<u64>().ok());
        if start != Some(offset) {
            return Err(StoreError::Invalid(format!(
                "resumed blob download: expected content-range from {offset}, got {:?}",
                resp.header("content-range")
            )));
        }
        Ok((host.config.hostname.clone(), resp.into_stream()))
    }
}

/// Upload a blob: `POST` an upload session, then one monolithic `PUT` or chunked `PATCH`es.
///
/// A streamed body cannot be sent twice, so an upload that fails mid-way is not retried
/// here: its session is cancelled (`DELETE <location>`) and the error returned; the engine's
/// blob mover starts over with a fresh download and a fresh session. A session abandoned
/// because the caller dropped the upload (cancellation) is cancelled in the background.
/// Either way the `DELETE` is sent also when the run was cancelled, within
/// [`CLEANUP_GRACE`](super::client::CLEANUP_GRACE).
pub(super) async fn put(
    client: Arc<Client>,
    repo: &Reference,
    desc: &Descriptor,
    body: BlobStream,
) -> Result<(), StoreError> {
    let host = client.host(&repo.registry);
    let req = host.request(Method::POST, &repo.repository, "blobs/uploads/")?;
    let (resp, duty) = client.send_opening(&host, req, &[202]).await?;
    let location = upload_location(&client, &resp)?;
    let min_chunk = resp
        .header("oci-chunk-min-length")
        .and_then(|v| v.parse::<usize>().ok());
    drop(resp);
    let mut session = Session {
        client: client.clone(),
        host: host.clone(),
        location: Some(location.clone()),
        repo: host.repo_path(&repo.repository),
        _duty: duty,
    };
    let client = &*client;

    let blob_max = host.config.blob_max;
    let chunked = desc.size < 0 || (blob_max > 0 && desc.size > blob_max);
    let result = if chunked {
        let configured = usize::try_from(host.config.blob_chunk)
            .ok()
            .filter(|c| *c > 0)
            .unwrap_or(DEFAULT_CHUNK);
        let chunk = configured.max(min_chunk.unwrap_or(0)).min(MAX_CHUNK);
        put_chunked(client, &host, repo, desc, &mut session, chunk, body).await
    } else {
        put_monolithic(client, &host, repo, desc, location.clone(), body).await
    };
    match &result {
        Ok(()) => session.done(),
        Err(e) => {
            debug!(client.log, "blob upload failed, cancelling it";
                "repo" => %repo, "digest" => %desc.digest, "error" => %e);
            session.cancel().await;
        }
    }
    result
}

/// An open upload session; dropped while still open, it is cancelled in the background.
struct Session {
    client: Arc<Client>,
    host: Arc<Host>,
    /// `None` once committed or cancelled.
    location: Option<Url>,
    repo: String,
    /// Held while the session may still need its delete (dropped after the background
    /// delete is spawned, which the client tracks the same way).
    _duty: TaskTrackerToken,
}

impl Session {
    fn done(&mut self) {
        self.location = None;
    }

    async fn cancel(&mut self) {
        if let Some(location) = self.location.clone() {
            self.client
                .delete_quietly(&self.host, location, &self.repo)
                .await;
            // Only now: dropped half-way (the caller's copy was cancelled meanwhile), the
            // session is deleted in the background instead.
            self.location = None;
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(location) = self.location.take() {
            self.client.delete_in_background(
                self.host.clone(),
                location,
                std::mem::take(&mut self.repo),
            );
        }
    }
}

/// `PUT <location>?digest=` with the whole stream as the body (spec §6.3 c).
async fn put_monolithic(
    client: &Client,
    host: &Host,
    repo: &Reference,
    desc: &Descriptor,
    location: Url,
    body: BlobStream,
) -> Result<(), StoreError> {
    let req = upload_request(host, repo, Method::PUT, with_digest(location, &desc.digest))
        .header(CONTENT_TYPE, OCTET_STREAM)?
        .header(CONTENT_LENGTH, &desc.size.to_string())?
        .body(Body::Stream(body));
    client.send(host, req, &[201, 204]).await?;
    Ok(())
}

/// `PATCH` one chunk at a time, then `PUT ?digest=` with an empty body (spec §6.3 d). Only
/// one chunk is held in memory; each PATCH body is in memory, so it is retried like any
/// other request.
async fn put_chunked(
    client: &Client,
    host: &Host,
    repo: &Reference,
    desc: &Descriptor,
    session: &mut Session,
    chunk: usize,
    mut body: BlobStream,
) -> Result<(), StoreError> {
    let mut location = session.location.clone().expect("an open session");
    let mut buf = BytesMut::new();
    let mut offset: u64 = 0;
    let mut eof = false;
    loop {
        while !eof && buf.len() < chunk {
            match body.next().await {
                Some(Ok(bytes)) => buf.extend_from_slice(&bytes),
                Some(Err(e)) => return Err(e),
                None => eof = true,
            }
        }
        if buf.is_empty() {
            break;
        }
        let part = buf.split_to(buf.len().min(chunk)).freeze();
        let end = offset + part.len() as u64 - 1;
        let req = upload_request(host, repo, Method::PATCH, location)
            .header(CONTENT_TYPE, OCTET_STREAM)?
            // Distribution's form: no `bytes=` prefix, inclusive end.
            .header(CONTENT_RANGE, &format!("{offset}-{end}"))?
            .body(Body::Bytes(part));
        let resp = client.send(host, req, &[202, 201]).await?;
        location = upload_location(client, &resp)?;
        // Distribution's `_state` in the URL names the offset: a `DELETE` must use the
        // latest one (it refuses the `POST`'s once the offset moved on), also when the
        // answer is refused below (the registry stored the chunk all the same).
        session.location = Some(location.clone());
        if let Some(range) = resp.header("range") {
            let acked = range.rsplit('-').next().and_then(|e| e.parse::<u64>().ok());
            if acked != Some(end) {
                return Err(StoreError::Invalid(format!(
                    "chunked upload: registry acknowledged {range:?}, sent up to {end}"
                )));
            }
        }
        offset = end + 1;
    }
    let req = upload_request(host, repo, Method::PUT, with_digest(location, &desc.digest))
        .header(CONTENT_LENGTH, "0")?;
    client.send(host, req, &[201, 204]).await?;
    Ok(())
}

/// The upload URL a registry answered with (`Location`), checked by [`origin::check`] before
/// it is followed: from https to http or to a local address it is refused; on another origin
/// it is followed without the registry's credentials (`Client::send` adds them only on the
/// registry's own origin), as regclient and Docker do.
fn upload_location(client: &Client, resp: &Response) -> Result<Url, StoreError> {
    let location = resp.location()?;
    match origin::check(resp.url(), &location) {
        Ok(Reach::SameOrigin) => {}
        Ok(Reach::OtherOrigin) => {
            debug!(client.log, "upload location on another origin, followed without credentials";
                "location" => loggable(&location));
        }
        Err(why) => {
            return Err(StoreError::Invalid(format!(
                "the registry's upload Location leads to {} ({why}), not followed",
                loggable(&location)
            )))
        }
    }
    Ok(location)
}

/// A request on an upload URL (from `Location`), with the repository's push scope.
fn upload_request(host: &Host, repo: &Reference, method: Method, url: Url) -> Request {
    Request::repo(method, url, &host.repo_path(&repo.repository))
}

/// `<location>(?|&)digest=<digest>`: the location may already carry a query (upload state).
fn with_digest(mut url: Url, digest: &Digest) -> Url {
    url.query_pairs_mut().append_pair("digest", digest.as_str());
    url
}

/// Cross-repository mount (spec §6.3 step 4): only within one registry name.
pub(super) async fn mount(
    client: &Client,
    repo: &Reference,
    from: &Reference,
    digest: &Digest,
) -> Result<bool, StoreError> {
    if repo.registry != from.registry {
        return Ok(false);
    }
    let host = client.host(&repo.registry);
    let mut url = host.repo_url(&repo.repository, "blobs/uploads/")?;
    url.query_pairs_mut()
        .append_pair("mount", digest.as_str())
        .append_pair("from", &host.repo_path(&from.repository));
    let req = upload_request(&host, repo, Method::POST, url).scope(format!(
        "repository:{}:pull",
        host.repo_path(&from.repository)
    ));
    let (resp, _duty) = match client.send_opening(&host, req, &[201, 202]).await {
        Ok(answer) => answer,
        // No right to read the source, read-only target...: the caller streams instead.
        Err(
            e @ (StoreError::HttpStatus { .. }
            | StoreError::NotFound(_)
            | StoreError::Unauthorized { .. }),
        ) => {
            debug!(client.log, "blob mount refused"; "repo" => %repo, "from" => %from, "error" => %e);
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    if resp.status() == 201 {
        return Ok(true);
    }
    // 202: the registry started an ordinary upload instead; cancel it. The delete is owed by
    // the run, not by this copy: on a task of its own, which the exit waits for, so a copy
    // stopped meanwhile does not leave the session to the registry's purge (and the stream
    // that replaces the mount does not wait for it).
    if let Ok(location) = upload_location(client, &resp) {
        let path = host.repo_path(&repo.repository);
        client.delete_in_background(host, location, path);
    }
    drop(resp);
    slog::warn!(client.log, "Failed to mount blob"; "repo" => %repo, "from" => %from, "digest" => %digest);
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_query_is_appended() {
        let d = Digest::sha256_of(b"x");
        let u = with_digest(
            Url::parse("http://r/v2/a/blobs/uploads/u1?_state=abc").unwrap(),
            &d,
        );
        assert_eq!(
            u.as_str(),
            format!(
                "http://r/v2/a/blobs/uploads/u1?_state=abc&digest=sha256%3A{}",
                d.hex()
            )
        );
        let u = with_digest(Url::parse("http://r/v2/a/blobs/uploads/u1").unwrap(), &d);
        assert!(u
            .as_str()
            .ends_with(&format!("u1?digest=sha256%3A{}", d.hex())));
    }

    use super::super::client::test_util;
    use super::super::RegistryOptions;
    use axum::extract::Request as AxRequest;
    use axum::response::IntoResponse;
    use bytes::Bytes;
    use std::sync::Mutex;
    use std::time::Duration;

    fn data() -> Vec<u8> {
        (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn an_interrupted_download_resumes_with_range() {
        let blob = Bytes::from(data());
        let desc = Descriptor::new(OCTET_STREAM, Digest::sha256_of(&blob), blob.len() as i64);
        let ranges = Arc::new(Mutex::new(Vec::<String>::new()));
        let (b2, r2) = (blob.clone(), ranges.clone());
        let app = axum::Router::new().fallback(move |req: AxRequest| {
            let (blob, ranges) = (b2.clone(), r2.clone());
            async move {
                let total = blob.len();
                match req.headers().get("range").and_then(|v| v.to_str().ok()) {
                    None => {
                        // Half of the body, then (once it has gone out) the connection
                        // breaks.
                        let half = blob.slice(..total / 2);
                        let chunks: Vec<Result<Bytes, std::io::Error>> = half
                            .chunks(16 << 10)
                            .map(|c| Ok(Bytes::copy_from_slice(c)))
                            .collect();
                        let body =
                            futures::stream::iter(chunks).chain(futures::stream::once(async {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                Err(std::io::Error::other("dropped"))
                            }));
                        axum::http::Response::builder()
                            .status(200)
                            .header("content-length", total)
                            .body(axum::body::Body::from_stream(body))
                            .unwrap()
                    }
                    Some(r) => {
                        ranges.lock().unwrap().push(r.to_string());
                        let start: usize = r
                            .trim_start_matches("bytes=")
                            .trim_end_matches('-')
                            .parse()
                            .unwrap();
                        axum::http::Response::builder()
                            .status(206)
                            .header(
                                "content-range",
                                format!("bytes {start}-{}/{total}", total - 1),
                            )
                            .body(axum::body::Body::from(blob.slice(start..)))
                            .unwrap()
                    }
                }
            }
        });
        let addr = test_util::serve(app).await;
        let c = test_util::client(&[&addr], RegistryOptions::new("ua"), IDLE_TIMEOUT);
        let r = Reference::parse(&format!("{addr}/a:x")).unwrap();
        let mut stream = get(c, &r, &desc).await.unwrap();
        let mut got = Vec::new();
        while let Some(chunk) = stream.next().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(got, blob);
        let ranges = ranges.lock().unwrap().clone();
        assert_eq!(ranges.len(), 1, "{ranges:?}");
        // Open-ended: regsync's `bytes=<offset>-<size>` asks one byte too many (quirk 21).
        assert!(
            ranges[0].starts_with("bytes=") && ranges[0].ends_with('-'),
            "{ranges:?}"
        );
    }

    /// A registry whose monolithic PUT answers `put_status` (after reading the body), or
    /// never answers when it is `None`. Returns its address and the requests seen.
    async fn upload_registry(put_status: Option<u16>) -> (String, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let app = axum::Router::new().fallback(move |req: AxRequest| {
            let seen = s2.clone();
            async move {
                let method = req.method().to_string();
                seen.lock().unwrap().push(method.clone());
                match method.as_str() {
                    "POST" => axum::http::Response::builder()
                        .status(202)
                        .header("location", "/v2/a/blobs/uploads/u1?_state=s")
                        .body(axum::body::Body::empty())
                        .unwrap(),
                    "PUT" => {
                        let _ = axum::body::to_bytes(req.into_body(), usize::MAX).await;
                        match put_status {
                            Some(s) => axum::http::StatusCode::from_u16(s).unwrap().into_response(),
                            None => std::future::pending().await,
                        }
                    }
                    _ => axum::http::StatusCode::NO_CONTENT.into_response(),
                }
            }
        });
        (test_util::serve(app).await, seen)
    }

    fn body_of(blob: &Bytes) -> BlobStream {
        futures::stream::iter(vec![Ok(blob.clone())]).boxed()
    }

    #[tokio::test]
    async fn a_failed_upload_is_cancelled_not_retried() {
        let (addr, seen) = upload_registry(Some(500)).await;
        let c = test_util::client(&[&addr], RegistryOptions::new("ua"), IDLE_TIMEOUT);
        let r = Reference::parse(&format!("{addr}/a:x")).unwrap();
        let blob = Bytes::from(data());
        let desc = Descriptor::new(OCTET_STREAM, Digest::sha256_of(&blob), blob.len() as i64);
        let err = put(c, &r, &desc, body_of(&blob)).await.unwrap_err();
        assert!(
            matches!(err, StoreError::HttpStatus { status: 500, .. }),
            "{err}"
        );
        // Transient: the engine's blob mover starts over with a new session.
        assert!(err.is_transient());
        assert_eq!(*seen.lock().unwrap(), ["POST", "PUT", "DELETE"]);
    }

    #[tokio::test]
    async fn an_abandoned_upload_is_cancelled_in_the_background() {
        let (addr, seen) = upload_registry(None).await;
        let c = test_util::client(&[&addr], RegistryOptions::new("ua"), IDLE_TIMEOUT);
        let r = Reference::parse(&format!("{addr}/a:x")).unwrap();
        let blob = Bytes::from(data());
        let desc = Descriptor::new(OCTET_STREAM, Digest::sha256_of(&blob), blob.len() as i64);
        let upload = put(c, &r, &desc, body_of(&blob));
        assert!(tokio::time::timeout(Duration::from_millis(500), upload)
            .await
            .is_err());
        for _ in 0..100 {
            if seen.lock().unwrap().contains(&"DELETE".to_string()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(*seen.lock().unwrap(), ["POST", "PUT", "DELETE"]);
    }

    #[tokio::test]
    async fn an_upload_stopped_by_the_runs_cancellation_is_still_cancelled() {
        let (addr, seen) = upload_registry(None).await;
        let cancel = tokio_util::sync::CancellationToken::new();
        let options = RegistryOptions::new("ua").with_cancel(cancel.clone());
        let c = test_util::client(&[&addr], options, IDLE_TIMEOUT);
        let r = Reference::parse(&format!("{addr}/a:x")).unwrap();
        let blob = Bytes::from(data());
        let desc = Descriptor::new(OCTET_STREAM, Digest::sha256_of(&blob), blob.len() as i64);
        let upload = tokio::spawn(async move { put(c, &r, &desc, body_of(&blob)).await });
        while !seen.lock().unwrap().contains(&"PUT".to_string()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cancel.cancel();
        let err = upload.await.unwrap().unwrap_err();
        assert!(matches!(err, StoreError::Canceled), "{err}");
        // Sent under the clean-up's own cancellation, before `put` returned.
        assert_eq!(*seen.lock().unwrap(), ["POST", "PUT", "DELETE"]);
    }
}
