//! Manifest HEAD / GET / PUT (spec §6.4, §7.2). Reads may be served by mirrors, the PUT
//! always goes to the registry itself.
//!
//! With the cache on (spec §7.4, [`super::cache`]): a GET by digest is answered from
//! manifests read (by tag or digest) or pushed before; a HEAD by digest only from manifests this process pushed
//! into that repository (a target-side check), never from a source read, so a source HEAD
//! always reaches the registry with its rate-limit headers (spec §16 quirk 15, fixed). A
//! successful push, by tag or digest, primes the cache under the manifest's digest.

use super::client::{Body, Client};
use crate::oci::{media, Descriptor, Digest, Manifest};
use crate::reference::Reference;
use crate::store::StoreError;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::Method;
use slog::debug;

/// Spec Appendix B: manifest pull and push limits.
const PULL_LIMIT: usize = 8 << 20;
const PUSH_LIMIT: usize = 4 << 20;

/// What to ask for: the digest when the reference has one (it pins the content), else the tag.
fn lookup(r: &Reference) -> String {
    match (&r.digest, &r.tag) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.clone(),
        (None, None) => "latest".into(),
    }
}

/// Distribution only serves what `Accept` allows, and some proxies keep only one `Accept`
/// line: send all types in one header.
fn accept() -> HeaderMap {
    let mut h = HeaderMap::new();
    let value = HeaderValue::from_str(&media::MANIFEST_ACCEPT.join(", "))
        .expect("media types are valid header text");
    h.insert(ACCEPT, value);
    h
}

/// HEAD, from the registry or its mirrors. A host with `apiOpts.disableHead` is not asked;
/// when no host is left the error is `unsupported` (spec §3.3): the source lookup then reads
/// the manifest with GET, a target lookup takes the manifest as absent.
pub(super) async fn head(client: &Client, r: &Reference) -> Result<Option<Descriptor>, StoreError> {
    if let Some(digest) = &r.digest {
        if let Some(m) = client
            .cache
            .pushed_manifest(&r.registry, &r.repository, digest)
        {
            return Ok(Some(descriptor_for(r, &m)));
        }
    }
    let path = format!("manifests/{}", lookup(r));
    let (_, resp) = match client
        .read(
            &r.registry,
            Method::HEAD,
            &r.repository,
            &path,
            &accept(),
            &[200],
        )
        .await
    {
        Ok(resp) => resp,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let digest = resp
        .header("docker-content-digest")
        .and_then(|d| Digest::parse(d).ok());
    let media_type = resp.media_type().filter(|mt| media::is_manifest(mt));
    if let (Some(digest), Some(media_type), Some(size)) =
        (digest, media_type, resp.content_length())
    {
        check_digest(r, &digest)?;
        return Ok(Some(Descriptor::new(&media_type, digest, size as i64)));
    }
    drop(resp);
    debug!(client.log, "manifest HEAD incomplete, using GET"; "ref" => %r);
    match get(client, r).await {
        Ok(m) => Ok(Some(m.descriptor())),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// GET, from the registry or its mirrors.
pub(super) async fn get(client: &Client, r: &Reference) -> Result<Manifest, StoreError> {
    let Some(digest) = &r.digest else {
        // Read by tag: kept under its digest too, for the copies that read it by digest.
        let m = client.retry_body(|| get_once(client, r)).await?;
        client.cache.fetched(&r.registry, &r.repository, &m);
        return Ok(m);
    };
    if let Some(m) = client.cache.manifest(&r.registry, &r.repository, digest) {
        return Ok(m);
    }
    let m = client.retry_body(|| get_once(client, r)).await?;
    client.cache.fetched(&r.registry, &r.repository, &m);
    Ok(m)
}

/// The descriptor of a cached manifest, under the digest the reference asked for.
fn descriptor_for(r: &Reference, m: &Manifest) -> Descriptor {
    let mut d = m.descriptor();
    if let Some(digest) = &r.digest {
        d.digest = digest.clone();
    }
    d
}

async fn get_once(client: &Client, r: &Reference) -> Result<Manifest, StoreError> {
    let path = format!("manifests/{}", lookup(r));
    let (_, resp) = client
        .read(
            &r.registry,
            Method::GET,
            &r.repository,
            &path,
            &accept(),
            &[200],
        )
        .await?;
    let media_type = resp.media_type();
    let bytes = resp.bytes(PULL_LIMIT).await?;
    let mut m = Manifest::from_bytes(bytes, media_type.as_deref());
    if let Some(expected) = &r.digest {
        if *expected != m.digest {
            // A sha512 reference: hash the bytes with its algorithm.
            let mut verifier = expected
                .verifier()
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            verifier.update(&m.bytes);
            let (got, ok) = verifier.finish();
            if !ok {
                return Err(StoreError::DigestMismatch {
                    expected: expected.to_string(),
                    got: got.to_string(),
                });
            }
            m.digest = expected.clone();
        }
    }
    Ok(m)
}

pub(super) async fn put(client: &Client, r: &Reference, m: &Manifest) -> Result<(), StoreError> {
    if m.bytes.len() > PUSH_LIMIT {
        return Err(StoreError::SizeExceeded {
            expected: PUSH_LIMIT as u64,
        });
    }
    let target = match (&r.tag, &r.digest) {
        (Some(tag), _) => tag.clone(),
        (None, Some(d)) => {
            check_digest(r, &m.digest)?;
            d.to_string()
        }
        (None, None) => m.digest.to_string(),
    };
    let host = client.host(&r.registry);
    let req = host
        .request(Method::PUT, &r.repository, &format!("manifests/{target}"))?
        .header(CONTENT_TYPE, &m.media_type)?
        .body(Body::Bytes(m.bytes.clone()));
    let resp = client.send(&host, req, &[201]).await?;
    if let Some(got) = resp.header("docker-content-digest") {
        if got != m.digest.as_str() {
            return Err(StoreError::DigestMismatch {
                expected: m.digest.to_string(),
                got: got.to_string(),
            });
        }
    }
    drop(resp);
    client
        .cache
        .pushed(&r.registry, &r.repository, r.tag.as_deref(), m);
    Ok(())
}

fn check_digest(r: &Reference, got: &Digest) -> Result<(), StoreError> {
    match &r.digest {
        Some(expected) if expected != got => Err(StoreError::DigestMismatch {
            expected: expected.to_string(),
            got: got.to_string(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::client::test_util;
    use super::super::RegistryOptions;
    use super::*;
    use axum::extract::Request as AxRequest;
    use bytes::Bytes;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

    fn manifest() -> Manifest {
        let body = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;
        Manifest::from_bytes(Bytes::from_static(body.as_bytes()), Some(OCI_MANIFEST))
    }

    /// A registry holding `m` under every name; records `METHOD path` of each request.
    async fn registry(m: Manifest) -> (String, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let app = axum::Router::new().fallback(move |req: AxRequest| {
            let (seen, m) = (s2.clone(), m.clone());
            async move {
                let method = req.method().clone();
                seen.lock()
                    .unwrap()
                    .push(format!("{method} {}", req.uri().path()));
                let status = if method == Method::PUT { 201 } else { 200 };
                let body = if method == Method::GET {
                    axum::body::Body::from(m.bytes.clone())
                } else {
                    axum::body::Body::empty()
                };
                axum::http::Response::builder()
                    .status(status)
                    .header("content-type", OCI_MANIFEST)
                    .header("content-length", m.bytes.len())
                    .header("docker-content-digest", m.digest.as_str())
                    .body(body)
                    .unwrap()
            }
        });
        (test_util::serve(app).await, seen)
    }

    fn count(seen: &Mutex<Vec<String>>, method: &str) -> usize {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with(&format!("{method} ")))
            .count()
    }

    #[tokio::test]
    async fn the_cache_serves_gets_by_digest_and_heads_of_pushed_manifests() {
        let m = manifest();
        let (addr, seen) = registry(m.clone()).await;
        let options = RegistryOptions::new("ua").with_cache(100, "5m");
        let c = test_util::client(&[&addr], options, Duration::from_secs(10));
        let by_digest = Reference::parse(&format!("{addr}/src@{}", m.digest)).unwrap();
        let by_tag = Reference::parse(&format!("{addr}/src:v1")).unwrap();

        // GET by digest: once from the registry, then from the cache.
        for _ in 0..3 {
            assert_eq!(get(&c, &by_digest).await.unwrap().bytes, m.bytes);
        }
        assert_eq!(count(&seen, "GET"), 1);
        // By tag: always asked.
        get(&c, &by_tag).await.unwrap();
        get(&c, &by_tag).await.unwrap();
        assert_eq!(count(&seen, "GET"), 3);
        // A HEAD by digest of a manifest only read (a source) reaches the registry, so its
        // rate-limit headers are seen (quirk 15 fixed).
        let d = head(&c, &by_digest).await.unwrap().unwrap();
        assert_eq!(d.digest, m.digest);
        assert_eq!(count(&seen, "HEAD"), 1);

        // Pushed into a target: a HEAD by digest there is answered from the cache.
        let tgt_tag = Reference::parse(&format!("{addr}/tgt:v1")).unwrap();
        put(&c, &tgt_tag, &m).await.unwrap();
        let tgt_digest = tgt_tag.with_digest(&m.digest);
        let d = head(&c, &tgt_digest).await.unwrap().unwrap();
        assert_eq!((d.digest, d.media_type), (m.digest.clone(), m.media_type));
        assert_eq!(count(&seen, "HEAD"), 1);
        assert_eq!(get(&c, &tgt_digest).await.unwrap().bytes, m.bytes);
        assert_eq!(count(&seen, "GET"), 3);
    }

    #[tokio::test]
    async fn without_the_cache_every_read_is_asked() {
        let m = manifest();
        let (addr, seen) = registry(m.clone()).await;
        let c = test_util::client(
            &[&addr],
            RegistryOptions::new("ua"),
            Duration::from_secs(10),
        );
        let by_digest = Reference::parse(&format!("{addr}/a@{}", m.digest)).unwrap();
        put(&c, &by_digest, &m).await.unwrap();
        get(&c, &by_digest).await.unwrap();
        get(&c, &by_digest).await.unwrap();
        head(&c, &by_digest).await.unwrap();
        assert_eq!(count(&seen, "GET"), 2);
        assert_eq!(count(&seen, "HEAD"), 1);
    }
}
