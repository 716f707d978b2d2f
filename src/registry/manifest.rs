//! Manifest HEAD / GET / PUT (spec §6.4, §7.2). Reads may be served by mirrors, the PUT
//! always goes to the registry itself.

use super::client::{retry_body, Body, Client};
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
    retry_body(|| get_once(client, r)).await
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
