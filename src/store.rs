//! The one storage trait both schemes implement (`registry::RegistryStore`, `ocidir::OciDirStore`).
//! The copy algorithm in `copy/` is written once against it.

use crate::oci::{media, Descriptor, Digest, DigestVerifier, Manifest};
use crate::reference::Reference;
use async_trait::async_trait;
use bytes::Bytes;
use dashmap::DashMap;
use futures::stream::{BoxStream, StreamExt};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
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
    /// The referrers of `subject` in the repository `repo` (spec §6.5). The default reads
    /// the fallback tag `<alg>-<hex>` (absent: an empty list); a registry asks its referrers
    /// API first.
    async fn referrers(&self, repo: &Reference, subject: &Digest) -> Result<Referrers, StoreError> {
        fallback_referrers(self, repo, subject).await
    }
    /// `entry` (a manifest whose `subject` is `subject`) now exists in `repo`: make the
    /// repository's referrers listing show it. The default appends it to the fallback index
    /// unless it is listed already; a registry with the referrers API does nothing.
    /// Returns whether anything was written.
    async fn referrer_added(
        &self,
        repo: &Reference,
        subject: &Digest,
        entry: &Descriptor,
    ) -> Result<bool, StoreError> {
        fallback_add(self, repo, subject, entry).await
    }
    /// Delete the tag of `r` without deleting an image other tags still use (registries:
    /// `registry::tag_delete`; layouts: the `index.json` entry). A store that refuses deletes
    /// answers [`StoreError::Unsupported`].
    async fn tag_delete(&self, r: &Reference) -> Result<(), StoreError>;
    /// Delete the manifest `r` names by digest, with every tag pointing at it (callers make
    /// sure none does: pruning deletes only referrers nothing tags). Already gone is `Ok`; a
    /// store that refuses deletes answers [`StoreError::Unsupported`].
    async fn manifest_delete(&self, r: &Reference) -> Result<(), StoreError>;
    /// The locks this store's fallback-index writes take ([`fallback_add`], [`fallback_merge`]).
    fn fallback_locks(&self) -> &FallbackLocks;
}

/// Read-modify-write of fallback indexes is serialised per repository and subject, by the
/// store that writes them (several images may add referrers to one subject at once). Each
/// store owns its own: two engines in one process do not share them.
#[derive(Debug, Default)]
pub struct FallbackLocks {
    locks: DashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

/// A referrers listing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Referrers {
    pub descriptors: Vec<Descriptor>,
    /// The fallback tags the list was read from (a copy does not copy them again as digest
    /// tags).
    pub tags: Vec<String>,
}

/// The fallback tag of a subject: `<alg>-<hex>`, algorithm cut to 32 and hex to 64
/// characters, anything outside `[A-Za-z0-9._-]` replaced by `-`.
pub fn fallback_tag(subject: &Digest) -> String {
    let clean = |s: &str, max: usize| -> String {
        s.chars()
            .take(max)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    format!(
        "{}-{}",
        clean(subject.algorithm(), 32),
        clean(subject.hex(), 64)
    )
}

/// Is `tag` the fallback tag of some subject? Then the subject's digest. The one rule every
/// caller uses: `sha256-` and exactly 64 lowercase hex digits, nothing after. The referrers
/// tag schema (`<alg>-<ref>`, distribution spec) cuts `<ref>` to 64 characters, so a sha512
/// subject cannot be read back from its tag; and a digest's hex is lowercase (OCI image spec),
/// so `sha256-<HEX>` is an ordinary tag.
pub fn fallback_subject(tag: &str) -> Option<Digest> {
    let hex = tag.strip_prefix("sha256-")?;
    let lower_hex = hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !lower_hex {
        return None;
    }
    Digest::parse(&format!("sha256:{hex}")).ok()
}

/// Referrers from the fallback tag: an OCI index of descriptors. A missing tag is an empty
/// list; a tag that holds something else is not a referrers index (and not reported).
pub async fn fallback_referrers<S: Store + ?Sized>(
    store: &S,
    repo: &Reference,
    subject: &Digest,
) -> Result<Referrers, StoreError> {
    let tag = fallback_tag(subject);
    let m = match store.manifest_get(&repo.with_tag(&tag)).await {
        Ok(m) => m,
        Err(StoreError::NotFound(_)) => return Ok(Referrers::default()),
        Err(e) => return Err(e),
    };
    if m.media_type != media::OCI_INDEX {
        return Ok(Referrers::default());
    }
    let links = m
        .links()
        .map_err(|e| StoreError::Invalid(format!("referrers index {tag}: {e}")))?;
    Ok(Referrers {
        descriptors: links.children,
        tags: vec![tag],
    })
}

async fn fallback_locked<S, F>(
    store: &S,
    repo: &Reference,
    subject: &Digest,
    change: F,
) -> Result<bool, StoreError>
where
    S: Store + ?Sized,
    F: FnOnce(Option<&Manifest>) -> Result<Option<Bytes>, StoreError> + Send,
{
    let key = format!("{}@{}", repo.repo_key(), subject);
    let locks = &store.fallback_locks().locks;
    let lock = locks
        .entry(key.clone())
        .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
        .clone();
    let result = async {
        let _held = lock.lock().await;
        let r = repo.with_tag(&fallback_tag(subject));
        let current = match store.manifest_get(&r).await {
            Ok(m) => Some(m),
            Err(StoreError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        match change(current.as_ref())? {
            None => Ok(false),
            Some(bytes) => {
                let m = Manifest::from_bytes(bytes, Some(media::OCI_INDEX));
                store.manifest_put(&r, &m, false).await.map(|_| true)
            }
        }
    }
    .await;
    // forget the lock when nobody else holds or waits for it
    locks.remove_if(&key, |_, l| Arc::strong_count(l) <= 2);
    drop(lock);
    result
}

/// Append `entry` to the fallback index of `subject` in `repo` unless it is listed.
pub async fn fallback_add<S: Store + ?Sized>(
    store: &S,
    repo: &Reference,
    subject: &Digest,
    entry: &Descriptor,
) -> Result<bool, StoreError> {
    let entry = entry.clone();
    fallback_locked(store, repo, subject, move |cur| {
        index_add(cur.map(|m| &m.bytes[..]), &entry)
    })
    .await
}

/// Store a referrers index copied under its fallback tag: as is when the target has none,
/// else merged into the target's (entries of either side are never dropped).
pub async fn fallback_merge<S: Store + ?Sized>(
    store: &S,
    repo: &Reference,
    subject: &Digest,
    index: &Manifest,
) -> Result<bool, StoreError> {
    let incoming = index.clone();
    fallback_locked(store, repo, subject, move |cur| {
        index_merge(cur.map(|m| &m.bytes[..]), &incoming)
    })
    .await
}

/// A referrers index as read and rewritten: known fields in the usual order, entries and
/// everything else kept as they were.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FallbackIndex {
    #[serde(default = "two")]
    schema_version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    artifact_type: Option<serde_json::Value>,
    #[serde(default)]
    manifests: Vec<Entry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    annotations: Option<serde_json::Value>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

fn two() -> i64 {
    2
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Entry {
    Kept(serde_json::Value),
    #[serde(skip_deserializing)]
    New(Box<Descriptor>),
}

impl Entry {
    fn digest(&self) -> Option<&str> {
        match self {
            Entry::Kept(v) => v.get("digest").and_then(|d| d.as_str()),
            Entry::New(d) => Some(d.digest.as_str()),
        }
    }
}

fn parse_index(bytes: &[u8]) -> Result<FallbackIndex, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Invalid(format!("referrers index is not valid JSON: {e}")))
}

fn encode_index(index: &FallbackIndex) -> Result<Bytes, StoreError> {
    serde_json::to_vec(index)
        .map(Bytes::from)
        .map_err(|e| StoreError::Invalid(format!("encoding referrers index: {e}")))
}

fn new_index() -> FallbackIndex {
    FallbackIndex {
        schema_version: 2,
        media_type: Some(media::OCI_INDEX.to_string()),
        artifact_type: None,
        manifests: Vec::new(),
        subject: None,
        annotations: None,
        other: BTreeMap::new(),
    }
}

/// The new bytes of a fallback index with `entry` appended; `None` when it is listed.
fn index_add(current: Option<&[u8]>, entry: &Descriptor) -> Result<Option<Bytes>, StoreError> {
    let mut index = match current {
        Some(b) => parse_index(b)?,
        None => new_index(),
    };
    if index
        .manifests
        .iter()
        .any(|e| e.digest() == Some(entry.digest.as_str()))
    {
        return Ok(None);
    }
    index.manifests.push(Entry::New(Box::new(entry.clone())));
    encode_index(&index).map(Some)
}

/// The new bytes of a fallback index receiving `incoming`; `None` when nothing changes.
/// When `incoming` lists everything the current index lists, it replaces it as is (a mirror
/// ends up byte-identical to its source); otherwise its missing entries are appended.
fn index_merge(current: Option<&[u8]>, incoming: &Manifest) -> Result<Option<Bytes>, StoreError> {
    let Some(current) = current else {
        return Ok(Some(incoming.bytes.clone()));
    };
    if current == &incoming.bytes[..] {
        return Ok(None);
    }
    let mut index = parse_index(current)?;
    let theirs = parse_index(&incoming.bytes)?.manifests;
    let covered = index.manifests.iter().all(|e| {
        e.digest()
            .is_some_and(|d| theirs.iter().any(|x| x.digest() == Some(d)))
    });
    if covered {
        return Ok(Some(incoming.bytes.clone()));
    }
    let mut added = false;
    for e in theirs {
        let present = e
            .digest()
            .is_some_and(|d| index.manifests.iter().any(|x| x.digest() == Some(d)));
        if !present {
            index.manifests.push(e);
            added = true;
        }
    }
    if added {
        encode_index(&index).map(Some)
    } else {
        Ok(None)
    }
}

/// Every tag of a repository (pages collected while they are produced).
pub async fn tag_list_all<S: Store + ?Sized>(
    store: &S,
    repo: &Reference,
) -> Result<Vec<String>, StoreError> {
    let (tx, mut rx) = mpsc::channel::<Vec<String>>(4);
    let collect = async move {
        let mut all = Vec::new();
        while let Some(page) = rx.recv().await {
            all.extend(page);
        }
        all
    };
    let (listed, all) = tokio::join!(store.tag_list(repo, tx), collect);
    listed.map(|_| all)
}

/// Wrap a blob byte stream so it fails unless exactly `desc.size` bytes with `desc.digest`
/// pass through. On any mismatch the stream ends with an error, so an upload fed by it is
/// aborted rather than committed.
///
/// With a known size the digest is checked when the last byte arrives, in place of handing
/// out the last chunk: an HTTP client sending the stream with a `Content-Length` stops polling
/// once it has that many bytes and never sees the end of the stream, so a check made only at
/// the end would let a monolithic upload of the wrong bytes through to the registry.
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
    let mismatch = move |got: Digest| StoreError::DigestMismatch {
        expected: expected_digest.clone(),
        got: got.to_string(),
    };
    struct Verifying {
        inner: BlobStream,
        /// `None` once the digest has been checked (at the last byte).
        verifier: Option<DigestVerifier>,
        seen: u64,
    }
    let state = Some(Verifying {
        inner,
        verifier: Some(verifier),
        seen: 0,
    });
    futures::stream::unfold(state, move |state| {
        let mismatch = mismatch.clone();
        async move {
            let mut st: Verifying = state?;
            match st.inner.next().await {
                Some(Ok(chunk)) => {
                    st.seen += chunk.len() as u64;
                    if let Some(size) = expected_size {
                        if st.seen > size {
                            return Some((Err(StoreError::SizeExceeded { expected: size }), None));
                        }
                    }
                    if let Some(v) = st.verifier.as_mut() {
                        v.update(&chunk);
                    }
                    if expected_size == Some(st.seen) {
                        if let Some(v) = st.verifier.take() {
                            let (got, ok) = v.finish();
                            if !ok {
                                return Some((Err(mismatch(got)), None));
                            }
                        }
                    }
                    Some((Ok(chunk), Some(st)))
                }
                Some(Err(e)) => Some((Err(e), None)),
                None => {
                    if let Some(size) = expected_size {
                        if st.seen != size {
                            let err = StoreError::ShortRead {
                                expected: size,
                                got: st.seen,
                            };
                            return Some((Err(err), None));
                        }
                    }
                    let (got, ok) = st.verifier.take()?.finish();
                    if ok {
                        None
                    } else {
                        Some((Err(mismatch(got)), None))
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

    fn digest(n: u8) -> Digest {
        Digest::sha256_of(&[n])
    }

    #[test]
    fn fallback_tag_names() {
        let d = digest(1);
        assert_eq!(fallback_tag(&d), format!("sha256-{}", d.hex()));
        assert_eq!(fallback_subject(&fallback_tag(&d)), Some(d.clone()));
        assert_eq!(fallback_subject(&format!("sha256-{}.sig", d.hex())), None);
        assert_eq!(fallback_subject("latest"), None);
        let odd = Digest::parse(&format!("a+b:{}", "ab".repeat(40))).unwrap();
        assert_eq!(fallback_tag(&odd), format!("a-b-{}", "ab".repeat(32)));
    }

    /// The referrers tag schema `<alg>-<ref>` (distribution spec) names a subject only for
    /// `sha256-<64 lowercase hex>`: a sha512 tag is cut to 64 characters (no digest to get
    /// back), and tags that merely look like `<word>-<hex>` are ordinary tags.
    #[test]
    fn fallback_subject_is_sha256_and_64_lowercase_hex_exactly() {
        let d = digest(7);
        let hex = d.hex().to_string();
        assert_eq!(fallback_subject(&format!("sha256-{hex}")), Some(d.clone()));
        for tag in [
            format!("sha256-{}", hex.to_uppercase()),
            format!("sha256-{}", &hex[..63]),
            format!("sha256-{hex}0"),
            format!("sha512-{hex}"),
            format!("sha512-{hex}{hex}"),
            format!("v1-{}", &hex[..32]),
            format!("build-{hex}"),
            format!("sha256:{hex}"),
            format!("SHA256-{hex}"),
        ] {
            assert_eq!(fallback_subject(&tag), None, "{tag}");
        }
    }

    #[test]
    fn fallback_index_add_keeps_foreign_entries() {
        let mut e = Descriptor::new(media::OCI_MANIFEST, digest(2), 42);
        e.artifact_type = Some("application/example.sbom".into());
        let created = index_add(None, &e).unwrap().unwrap();
        let text = std::str::from_utf8(&created).unwrap();
        assert!(text.starts_with(r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType""#), "{text}");
        assert!(text.contains(r#""artifactType":"application/example.sbom""#));
        assert!(
            index_add(Some(&created), &e).unwrap().is_none(),
            "listed already"
        );

        // another tool's entry with fields we do not know survives an append
        let foreign = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"x","digest":"{}","size":1,"data":"e30=","x-extra":{{"a":1}}}}],"annotations":{{"k":"v"}},"x-top":true}}"#,
            media::OCI_INDEX,
            digest(3)
        );
        let out = index_add(Some(foreign.as_bytes()), &e).unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["manifests"].as_array().unwrap().len(), 2);
        assert_eq!(v["manifests"][0]["x-extra"]["a"], 1);
        assert_eq!(v["manifests"][0]["data"], "e30=");
        assert_eq!(v["manifests"][1]["digest"], e.digest.as_str());
        assert_eq!(v["annotations"]["k"], "v");
        assert_eq!(v["x-top"], true);
    }

    #[test]
    fn fallback_index_merge() {
        let mk = |ds: &[u8]| {
            let entries: Vec<String> = ds
                .iter()
                .map(|n| format!(r#"{{"mediaType":"m","digest":"{}","size":1}}"#, digest(*n)))
                .collect();
            let body = format!(
                r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{}]}}"#,
                media::OCI_INDEX,
                entries.join(",")
            );
            Manifest::from_bytes(Bytes::from(body), Some(media::OCI_INDEX))
        };
        let src = mk(&[1, 2, 3]);
        // absent: copied byte for byte
        assert_eq!(index_merge(None, &src).unwrap().unwrap(), src.bytes);
        assert!(index_merge(Some(&src.bytes), &src).unwrap().is_none());
        // the target lists one the source lacks: union, target's first
        let tgt = mk(&[9, 2]);
        let out = index_merge(Some(&tgt.bytes), &src).unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let got: Vec<&str> = v["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["digest"].as_str().unwrap())
            .collect();
        let want: Vec<String> = [9u8, 2, 1, 3]
            .iter()
            .map(|n| digest(*n).to_string())
            .collect();
        assert_eq!(got, want);
        // the target lists a subset (its own appends): the source's bytes replace it
        assert_eq!(
            index_merge(Some(&mk(&[2, 1]).bytes), &src)
                .unwrap()
                .unwrap(),
            src.bytes
        );
        assert_eq!(
            index_merge(Some(&mk(&[3, 2, 1]).bytes), &src)
                .unwrap()
                .unwrap(),
            src.bytes
        );
        // a superset already: nothing to write
        assert!(index_merge(Some(&mk(&[3, 2, 1, 9]).bytes), &src)
            .unwrap()
            .is_none());
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

    /// An HTTP client sending a body with a `Content-Length` stops reading after that many
    /// bytes: the wrong bytes must fail before the last one is handed out.
    #[tokio::test]
    async fn a_consumer_stopping_at_the_size_still_sees_a_digest_mismatch() {
        let d = Descriptor::new("x", Digest::sha256_of(b"abcdef"), 6);
        let mut s = verified(&d, stream_of(vec![b"abc", b"deF"]));
        let mut taken = 0;
        let mut failed = None;
        while taken < 6 {
            match s.next().await {
                Some(Ok(c)) => taken += c.len(),
                Some(Err(e)) => {
                    failed = Some(e);
                    break;
                }
                None => break,
            }
        }
        assert!(
            matches!(failed, Some(StoreError::DigestMismatch { .. })),
            "{failed:?}, {taken} bytes handed out"
        );
        // the right bytes pass, and the stream still ends cleanly
        let mut s = verified(&d, stream_of(vec![b"abc", b"def"]));
        assert_eq!(&s.next().await.unwrap().unwrap()[..], b"abc");
        assert_eq!(&s.next().await.unwrap().unwrap()[..], b"def");
        assert!(s.next().await.is_none());
    }
}
