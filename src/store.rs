//! The one storage trait both schemes implement (`registry::RegistryStore`, `ocidir::OciDirStore`).
//! The copy algorithm in `engine/` is written once against it.

use crate::oci::{Descriptor, Digest, DigestVerifier, Manifest};
use crate::reference::Reference;
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use tokio::sync::mpsc;

/// Blob bytes on their way from a source to a target. Never collected whole.
pub type BlobStream = BoxStream<'static, Result<Bytes, StoreError>>;

/// Errors at the storage edge. Texts follow regclient's wording where callers match on them.
#[derive(Debug, thiserror::Error, Clone)]
pub enum StoreError {
    #[error("not found{}", .0.as_deref().map(|s| format!(": {s}")).unwrap_or_default())]
    NotFound(Option<String>),
    #[error("unauthorized [http {status}]{}", .detail.as_deref().map(|s| format!(": {s}")).unwrap_or_default())]
    Unauthorized { status: u16, detail: Option<String> },
    #[error("rate limit exceeded [http 429]")]
    RateLimited { retry_after: Option<u64> },
    #[error("unexpected http status code: {text} [http {status}]")]
    HttpStatus { status: u16, text: String },
    #[error("digest mismatch: expected {expected}, got {got}")]
    DigestMismatch { expected: String, got: String },
    #[error("short read: expected {expected} bytes, got {got}")]
    ShortRead { expected: u64, got: u64 },
    #[error("size limit exceeded: expected {expected} bytes, got more")]
    SizeExceeded { expected: u64 },
    #[error("failed to access {host}: {detail}")]
    Network { host: String, detail: String },
    /// The connection broke after the response headers arrived (a body cut short).
    #[error("failed reading the response from {host}: {detail}")]
    BodyInterrupted { host: String, detail: String },
    #[error("{0}")]
    Io(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("invalid response: {0}")]
    Invalid(String),
    #[error("task was canceled")]
    Canceled,
}

impl StoreError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound(_))
    }

    /// A network failure or a server-side status worth trying again.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Network { .. }
            | StoreError::BodyInterrupted { .. }
            | StoreError::RateLimited { .. }
            | StoreError::ShortRead { .. } => true,
            StoreError::HttpStatus { status, .. } => {
                matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
            }
            _ => false,
        }
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::NotFound {
            StoreError::NotFound(Some(e.to_string()))
        } else {
            StoreError::Io(e.to_string())
        }
    }
}

/// Storage for manifests, blobs and tags. `Reference`s name the repository (registry) or the
/// layout directory (ocidir); a manifest reference carries a tag and/or a digest.
#[async_trait]
pub trait Store: Send + Sync {
    /// HEAD a manifest. `Ok(None)` when it does not exist. The descriptor carries media type,
    /// digest (computed by GET when the HEAD lacks one) and size.
    async fn manifest_head(&self, r: &Reference) -> Result<Option<Descriptor>, StoreError>;
    /// GET a manifest; its digest is checked against `r.digest` when the reference has one.
    async fn manifest_get(&self, r: &Reference) -> Result<Manifest, StoreError>;
    /// Push the exact bytes under `r`'s tag, or by digest when it has none. `child` manifests
    /// (platform children, referrers) are not given a top-level entry where that matters (ocidir).
    async fn manifest_put(
        &self,
        r: &Reference,
        m: &Manifest,
        child: bool,
    ) -> Result<(), StoreError>;
    /// Does the repository hold this blob?
    async fn blob_head(&self, repo: &Reference, digest: &Digest) -> Result<bool, StoreError>;
    /// Stream a blob. The stream is already wrapped by [`verified`].
    async fn blob_get(&self, repo: &Reference, desc: &Descriptor)
        -> Result<BlobStream, StoreError>;
    /// Store a blob from a stream; committed only when size and digest match `desc`.
    async fn blob_put(
        &self,
        repo: &Reference,
        desc: &Descriptor,
        body: BlobStream,
    ) -> Result<(), StoreError>;
    /// Server-side copy from another repository of the same store. `Ok(false)` when the
    /// store cannot do it (the caller then streams the blob).
    async fn blob_mount(
        &self,
        repo: &Reference,
        from: &Reference,
        digest: &Digest,
    ) -> Result<bool, StoreError>;
    /// Send the repository's tags page by page (so copying can start before listing ends).
    async fn tag_list(
        &self,
        repo: &Reference,
        pages: mpsc::Sender<Vec<String>>,
    ) -> Result<(), StoreError>;
    /// An image copy into `r` begins. Paired with [`Store::close`]; an OCI layout uses the
    /// pair to garbage-collect only when no copy into it is in flight.
    async fn open(&self, _r: &Reference) {}
    /// An image copy into `r` ended (successfully or not). Spec §5.5 step 15.
    async fn close(&self, _r: &Reference) -> Result<(), StoreError> {
        Ok(())
    }
    /// Send the registry's repositories page by page (`_catalog`). `registry` is a reference
    /// whose repository is empty.
    async fn catalog(
        &self,
        registry: &Reference,
        pages: mpsc::Sender<Vec<String>>,
    ) -> Result<(), StoreError>;
}

/// Wrap a blob byte stream so it fails unless exactly `desc.size` bytes with `desc.digest`
/// pass through. The last item is an error on any mismatch, so an upload fed by this
/// stream is aborted rather than committed.
pub fn verified(desc: &Descriptor, inner: BlobStream) -> BlobStream {
    let expected_size = if desc.size >= 0 {
        Some(desc.size as u64)
    } else {
        None
    };
    let verifier = match desc.digest.verifier() {
        Ok(v) => v,
        Err(e) => {
            return futures::stream::once(async move { Err(StoreError::Invalid(e.to_string())) })
                .boxed()
        }
    };
    let expected_digest = desc.digest.to_string();
    let state = Some((inner, verifier));
    futures::stream::unfold(state, move |state| {
        let expected_digest = expected_digest.clone();
        async move {
            let (mut inner, mut verifier): (BlobStream, DigestVerifier) = state?;
            match inner.next().await {
                Some(Ok(chunk)) => {
                    verifier.update(&chunk);
                    if let Some(size) = expected_size {
                        if verifier.seen > size {
                            return Some((Err(StoreError::SizeExceeded { expected: size }), None));
                        }
                    }
                    Some((Ok(chunk), Some((inner, verifier))))
                }
                Some(Err(e)) => Some((Err(e), None)),
                None => {
                    let seen = verifier.seen;
                    if let Some(size) = expected_size {
                        if seen != size {
                            let err = StoreError::ShortRead {
                                expected: size,
                                got: seen,
                            };
                            return Some((Err(err), None));
                        }
                    }
                    let (got, ok) = verifier.finish();
                    if ok {
                        None
                    } else {
                        let err = StoreError::DigestMismatch {
                            expected: expected_digest,
                            got: got.to_string(),
                        };
                        Some((Err(err), None))
                    }
                }
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_of(parts: Vec<&'static [u8]>) -> BlobStream {
        futures::stream::iter(parts.into_iter().map(|p| Ok(Bytes::from_static(p)))).boxed()
    }

    async fn drain(mut s: BlobStream) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn verified_stream_checks_size_and_digest() {
        let d = Descriptor::new("x", Digest::sha256_of(b"abcdef"), 6);
        assert_eq!(
            drain(verified(&d, stream_of(vec![b"abc", b"def"])))
                .await
                .unwrap(),
            b"abcdef"
        );
        let short = drain(verified(&d, stream_of(vec![b"abc"]))).await;
        assert!(matches!(short, Err(StoreError::ShortRead { .. })));
        let bad = drain(verified(&d, stream_of(vec![b"abc", b"deF"]))).await;
        assert!(matches!(bad, Err(StoreError::DigestMismatch { .. })));
        let long = drain(verified(&d, stream_of(vec![b"abc", b"defg"]))).await;
        assert!(matches!(long, Err(StoreError::SizeExceeded { .. })));
    }
}
