//! `OciDirStore`: reads and writes an OCI image layout (spec §10).
//!
//! * `oci-layout` — `{"imageLayoutVersion":"1.0.0"}`, (re)written with every index write.
//! * `index.json` — compact OCI index, replaced atomically (temp file + rename) under a
//!   per-layout async mutex so concurrent pushes into one layout never lose an entry.
//! * `blobs/<alg>/<hex>` — manifests and blobs, streamed to a uniquely named temp file in the
//!   same directory, verified (size and digest), then renamed: a crash or a mismatch never
//!   leaves a file under a digest name.
//! * Garbage collection (spec §10.4, [`super::gc`]) runs when the last image copy into a
//!   modified layout closes (`Store::open` / `Store::close`).

use super::gc::{self, LayoutStates, Release};
use crate::oci::{media, Descriptor, Digest, Manifest};
use crate::reference::{Reference, Scheme};
use crate::store::{verified, BlobStream, FallbackLocks, Store, StoreError};
use async_trait::async_trait;
use bytes::Bytes;
use dashmap::DashMap;
use futures::stream::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, Mutex, OwnedMutexGuard};
use tokio_util::io::ReaderStream;

pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";

const LAYOUT_FILE: &str = "oci-layout";
const LAYOUT_CONTENT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
const LAYOUT_VERSION: &str = "1.0.0";
const INDEX_FILE: &str = "index.json";
const BLOBS_DIR: &str = "blobs";
const DEFAULT_TAG: &str = "latest";
/// Read buffer for streaming blobs out of the layout.
const READ_CHUNK: usize = 128 * 1024;
/// Write buffer for streaming blobs into the layout.
const WRITE_BUFFER: usize = 256 * 1024;
/// Env var (sic, no H) that fixes the `created` annotation (spec §10.2, §16 #12).
const SOURCE_DATE_ENV: &str = "SOURCE_DATE_EPOC";

/// `index.json` as read and written. Field order follows the OCI/regclient encoding.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexFile {
    #[serde(default = "schema_v2")]
    schema_version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "map_is_empty")]
    annotations: Option<BTreeMap<String, String>>,
}

fn schema_v2() -> i64 {
    2
}

fn map_is_empty(m: &Option<BTreeMap<String, String>>) -> bool {
    m.as_ref().is_none_or(|m| m.is_empty())
}

fn null_as_empty<'de, D>(d: D) -> Result<Vec<Descriptor>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(Option::<Vec<Descriptor>>::deserialize(d)?.unwrap_or_default())
}

impl IndexFile {
    fn new() -> Self {
        IndexFile {
            schema_version: 2,
            media_type: Some(media::OCI_INDEX.to_string()),
            artifact_type: None,
            manifests: Vec::new(),
            subject: None,
            annotations: None,
        }
    }

    /// Lookup by tag: exact ref name, then a ref name ending in `:<tag>`.
    fn find_tag(&self, tag: &str) -> Option<&Descriptor> {
        let suffix = format!(":{tag}");
        self.manifests
            .iter()
            .find(|d| ref_name(d) == Some(tag))
            .or_else(|| {
                self.manifests
                    .iter()
                    .find(|d| ref_name(d).is_some_and(|n| n.ends_with(&suffix)))
            })
    }

    fn find_digest(&self, digest: &Digest) -> Option<&Descriptor> {
        self.manifests.iter().find(|d| &d.digest == digest)
    }

    /// Add or replace the entry for a push (spec §10.2). `desc` carries its annotations
    /// (ref name when tagged, created). Returns whether the index changed.
    fn set(&mut self, tag: Option<&str>, desc: Descriptor) -> bool {
        let Some(tag) = tag else {
            if self.find_digest(&desc.digest).is_some() {
                return false;
            }
            self.manifests.push(desc);
            return true;
        };
        let matches = |d: &Descriptor| match ref_name(d) {
            Some(name) => name == tag,
            None => d.digest == desc.digest,
        };
        let Some(pos) = self.manifests.iter().position(matches) else {
            self.manifests.push(desc);
            return true;
        };
        let mut changed = false;
        let cur = &self.manifests[pos];
        if !(ref_name(cur) == Some(tag) && cur.digest == desc.digest) {
            self.manifests[pos] = desc.clone();
            changed = true;
        }
        let mut i = 0;
        self.manifests.retain(|d| {
            let keep = i <= pos || !matches(d);
            i += 1;
            changed |= !keep;
            keep
        });
        changed
    }
}

fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_REF_NAME))
        .map(String::as_str)
        .filter(|n| !n.is_empty())
}

/// The `created` annotation value: `SOURCE_DATE_EPOC` seconds if set and valid, else now (UTC).
fn created_value(source_date: Option<String>) -> String {
    let fixed = source_date
        .and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0));
    let t = fixed.unwrap_or_else(chrono::Utc::now);
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Where a blob lives in a layout: `<layout>/blobs/<alg>/<hex>`.
pub fn blob_path(layout: &Path, digest: &Digest) -> Result<PathBuf, StoreError> {
    let alg = digest.algorithm();
    let hex = digest.hex();
    if alg.is_empty() || alg.starts_with('.') || hex.is_empty() {
        return Err(StoreError::Invalid(format!("invalid digest {digest}")));
    }
    Ok(layout.join(BLOBS_DIR).join(alg).join(hex))
}

/// Lexically normalised absolute path, so `./x` and `x` share one lock.
fn lock_key(dir: &Path) -> PathBuf {
    let abs = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(dir)
    };
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn random_suffix() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    let text = format!("{what} {}: {e}", path.display());
    if e.kind() == std::io::ErrorKind::NotFound {
        StoreError::NotFound(Some(text))
    } else {
        StoreError::Io(text)
    }
}

/// Write `data` to `dir/<final_name>` via `dir/<tmp_name>` + rename.
async fn write_atomic(dir: &Path, final_name: &str, data: &[u8]) -> Result<(), StoreError> {
    let tmp = dir.join(format!("{final_name}.{}.tmp", random_suffix()));
    let dest = dir.join(final_name);
    let res = async {
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| io_err("create", &tmp, e))?;
        file.write_all(data)
            .await
            .map_err(|e| io_err("write", &tmp, e))?;
        // On disk before the rename: after a power loss the name never points at a
        // partial file.
        file.sync_all().await.map_err(|e| io_err("sync", &tmp, e))?;
        drop(file);
        tokio::fs::rename(&tmp, &dest)
            .await
            .map_err(|e| io_err("rename to", &dest, e))
    }
    .await;
    if res.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    res
}

/// Stream `body` into `<dir>/blobs/<alg>/<hex>`: temp file, size + digest check, rename.
/// An already present blob of the right size is success (the stream is dropped unread).
async fn write_blob(
    states: &LayoutStates,
    layout: &Path,
    desc: &Descriptor,
    body: BlobStream,
) -> Result<bool, StoreError> {
    let dest = blob_path(layout, &desc.digest)?;
    let key = lock_key(layout);
    // registered before the existence check, so a concurrent GC cannot delete the file
    // between that check and our caller using it
    let _in_flight = states.in_flight(&key, &desc.digest);
    if let Ok(meta) = tokio::fs::metadata(&dest).await {
        if meta.is_file() && (desc.size < 0 || meta.len() == desc.size as u64) {
            return Ok(false);
        }
    }
    let dir = dest.parent().expect("blob path has a parent").to_path_buf();
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| io_err("create directory", &dir, e))?;
    let tmp = dir.join(format!("{}.{}.tmp", desc.digest.hex(), random_suffix()));
    let res = async {
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .await
            .map_err(|e| io_err("create", &tmp, e))?;
        let mut out = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, file);
        let mut stream = verified(desc, body);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            out.write_all(&chunk)
                .await
                .map_err(|e| io_err("write", &tmp, e))?;
        }
        out.flush().await.map_err(|e| io_err("write", &tmp, e))?;
        out.get_ref()
            .sync_all()
            .await
            .map_err(|e| io_err("sync", &tmp, e))?;
        drop(out);
        tokio::fs::rename(&tmp, &dest)
            .await
            .map_err(|e| io_err("rename to", &dest, e))
    }
    .await;
    if res.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    } else {
        states.mark_modified(&key);
    }
    res.map(|_| true)
}

/// An image manifest is written only over blobs the layout holds: a manifest over a blob
/// that is missing (deleted by the layout GC after an earlier image failed, say) would look
/// complete to every later run, which compares digests only. External layers (`urls`) are not
/// copied by default, and the children of an index may be left out on purpose (`platforms`);
/// neither is required.
async fn check_blobs_present(dir: &Path, r: &Reference, m: &Manifest) -> Result<(), StoreError> {
    let Ok(links) = m.links() else {
        return Ok(());
    };
    for b in links.blobs.iter().filter(|b| !b.is_external()) {
        let path = blob_path(dir, &b.digest)?;
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_file() => {}
            _ => {
                return Err(StoreError::NotFound(Some(format!(
                    "blob {} of manifest {} is missing from the layout {}",
                    b.digest, m.digest, r.path
                ))))
            }
        }
    }
    Ok(())
}

/// Check that `dir` is an OCI layout of a supported version.
async fn check_layout(dir: &Path) -> Result<(), StoreError> {
    let path = dir.join(LAYOUT_FILE);
    let raw = tokio::fs::read(&path).await.map_err(|e| {
        let text = format!("{LAYOUT_FILE} cannot be open: {e}");
        if e.kind() == std::io::ErrorKind::NotFound {
            StoreError::NotFound(Some(text))
        } else {
            StoreError::Io(text)
        }
    })?;
    #[derive(Deserialize)]
    struct Layout {
        #[serde(rename = "imageLayoutVersion", default)]
        version: String,
    }
    let l: Layout = serde_json::from_slice(&raw).map_err(|e| {
        StoreError::Invalid(format!(
            "{LAYOUT_FILE} in {} is invalid: {e}",
            dir.display()
        ))
    })?;
    if l.version != LAYOUT_VERSION {
        return Err(StoreError::Invalid(format!(
            "unsupported oci-layout version {:?} in {}",
            l.version,
            dir.display()
        )));
    }
    Ok(())
}

/// Read `index.json` of an existing layout; a missing layout is `NotFound`. A layout holding
/// only blobs so far (no `index.json` yet) reads as an empty index.
async fn read_index(dir: &Path) -> Result<IndexFile, StoreError> {
    check_layout(dir).await?;
    let path = dir.join(INDEX_FILE);
    let raw = match tokio::fs::read(&path).await {
        Ok(raw) => raw,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(IndexFile::new()),
        Err(e) => {
            return Err(StoreError::Io(format!("{INDEX_FILE} cannot be open: {e}")));
        }
    };
    serde_json::from_slice(&raw)
        .map_err(|e| StoreError::Invalid(format!("{} is invalid: {e}", path.display())))
}

/// The index to modify: the existing one, or a new empty one when the layout is new.
async fn read_index_for_write(dir: &Path) -> Result<IndexFile, StoreError> {
    match read_index(dir).await {
        Ok(i) => Ok(i),
        Err(StoreError::NotFound(_)) => Ok(IndexFile::new()),
        Err(e) => Err(e),
    }
}

async fn write_index(
    states: &LayoutStates,
    dir: &Path,
    index: &IndexFile,
) -> Result<(), StoreError> {
    let mut index = index.clone();
    index.schema_version = 2;
    index.media_type = Some(media::OCI_INDEX.to_string());
    let data = serde_json::to_vec(&index)
        .map_err(|e| StoreError::Invalid(format!("encoding {INDEX_FILE}: {e}")))?;
    states.mark_modified(&lock_key(dir));
    write_atomic(dir, INDEX_FILE, &data).await?;
    write_atomic(dir, LAYOUT_FILE, LAYOUT_CONTENT).await
}

/// Create the layout directory and its `oci-layout` file when missing.
async fn init_layout(dir: &Path) -> Result<(), StoreError> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| io_err("create directory", dir, e))?;
    if tokio::fs::metadata(dir.join(LAYOUT_FILE)).await.is_err() {
        write_atomic(dir, LAYOUT_FILE, LAYOUT_CONTENT).await?;
    }
    Ok(())
}

fn layout_dir(r: &Reference) -> Result<PathBuf, StoreError> {
    if r.scheme != Scheme::OciDir || r.path.is_empty() {
        return Err(StoreError::Invalid(format!("not an ocidir reference: {r}")));
    }
    Ok(PathBuf::from(&r.path))
}

fn not_found(r: &Reference) -> StoreError {
    StoreError::NotFound(Some(format!("manifest {r}")))
}

/// An OCI image layout store. Content lives on disk; the store owns what one process must
/// coordinate about each layout it writes (index locks, GC holds and in-flight digests), so two
/// stores (two engines in one process) never share that state by accident.
pub struct OciDirStore {
    log: slog::Logger,
    /// Index read-modify-write locks, one per layout directory (normalised path).
    layout_locks: DashMap<PathBuf, Arc<Mutex<()>>>,
    /// GC bookkeeping per layout ([`gc::LayoutStates`]).
    gc: LayoutStates,
    /// The subjects' fallback referrers indexes this store rewrites.
    fallback_locks: FallbackLocks,
}

impl OciDirStore {
    pub fn new(log: slog::Logger) -> Self {
        OciDirStore {
            log,
            layout_locks: DashMap::new(),
            gc: LayoutStates::default(),
            fallback_locks: FallbackLocks::default(),
        }
    }

    /// Hold the index lock of the layout at `path` (e.g. for garbage collection); index
    /// writes by this store wait while the guard lives.
    pub async fn lock_layout(&self, path: &Path) -> OwnedMutexGuard<()> {
        let m = self
            .layout_locks
            .entry(lock_key(path))
            .or_insert_with(|| Arc::new(Mutex::new(())))
            .clone();
        m.lock_owned().await
    }

    /// Garbage-collect the layout (spec §10.4): under the index lock, delete every file under
    /// `blobs/<alg>/` not reachable from `index.json`. Deletes nothing when `index.json` is
    /// missing or any manifest it reaches cannot be read (warning), when a copy into the
    /// layout is in flight, or for digests being written; temp files only when stale.
    async fn collect(&self, dir: &Path, key: &Path) -> Result<(), StoreError> {
        let _guard = self.lock_layout(dir).await;
        let layout = dir.display().to_string();
        if self.gc.is_held(key) {
            // a copy started while we waited; its close collects
            self.gc.mark_modified(key);
            slog::debug!(self.log, "ocidir GC deferred, layout in use"; "layout" => &layout);
            return Ok(());
        }
        match tokio::fs::metadata(dir.join(INDEX_FILE)).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                slog::debug!(self.log, "ocidir GC skipped, no index"; "layout" => &layout);
                return Ok(());
            }
            Err(e) => return Err(io_err("stat", &dir.join(INDEX_FILE), e)),
        }
        let skip = |reason: String| {
            self.gc.mark_modified(key);
            slog::warn!(self.log, "ocidir garbage collection skipped, nothing deleted";
                "layout" => &layout, "reason" => reason);
            Ok(())
        };
        let index = match read_index(dir).await {
            Ok(i) => i,
            Err(e) => return skip(e.to_string()),
        };
        let mut roots = index.manifests.clone();
        roots.extend(index.subject.clone());
        let reachable = match gc::reachable(dir, &roots).await {
            Ok(r) => r,
            Err(reason) => return skip(reason),
        };
        slog::debug!(self.log, "ocidir GC running";
            "layout" => &layout, "reachable" => reachable.len());
        let (d, state) = (dir.to_path_buf(), self.gc.state(key));
        let now = std::time::SystemTime::now();
        let swept = tokio::task::spawn_blocking(move || gc::sweep(&d, &state, &reachable, now))
            .await
            .map_err(|e| StoreError::Io(format!("ocidir GC of {layout}: {e}")))?;
        for f in &swept.removed {
            slog::debug!(self.log, "ocidir garbage collect"; "layout" => &layout, "file" => f);
        }
        if swept.interrupted {
            self.gc.mark_modified(key);
            slog::debug!(self.log, "ocidir GC interrupted, layout in use"; "layout" => &layout);
        }
        slog::debug!(self.log, "ocidir GC done"; "layout" => &layout,
            "removed" => swept.removed.len(), "kept_in_flight" => swept.kept_in_flight);
        match swept.errors.first() {
            None => Ok(()),
            Some(first) => {
                self.gc.mark_modified(key);
                Err(StoreError::Io(format!(
                    "ocidir garbage collection of {layout}: {first} ({} error(s))",
                    swept.errors.len()
                )))
            }
        }
    }

    /// Find the manifest `r` names: its index entry (if listed) and digest. `None` when the
    /// layout exists but does not hold it.
    async fn resolve(
        &self,
        dir: &Path,
        r: &Reference,
    ) -> Result<Option<(Option<Descriptor>, Digest)>, StoreError> {
        let index = read_index(dir).await?;
        if let Some(d) = &r.digest {
            if let Some(entry) = index.find_digest(d) {
                return Ok(Some((Some(entry.clone()), d.clone())));
            }
            let exists = tokio::fs::metadata(blob_path(dir, d)?)
                .await
                .is_ok_and(|m| m.is_file());
            return Ok(exists.then(|| (None, d.clone())));
        }
        let tag = r.tag.as_deref().unwrap_or(DEFAULT_TAG);
        Ok(index
            .find_tag(tag)
            .map(|e| (Some(e.clone()), e.digest.clone())))
    }

    /// A manifest with a `subject` was written: list it in the subject's fallback referrers
    /// index `sha256-<hex>` (spec §6.5, §10.2), keeping every entry already there.
    async fn track_subject(&self, r: &Reference, m: &Manifest) -> Result<(), StoreError> {
        let Ok(links) = m.links() else {
            return Ok(());
        };
        let Some(subject) = links.subject else {
            return Ok(());
        };
        let entry = m
            .referrer_entry()
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        if crate::store::fallback_add(self, &r.repo_only(), &subject.digest, &entry).await? {
            slog::debug!(self.log, "ocidir referrers index updated";
                "layout" => &r.path, "subject" => %subject.digest, "referrer" => %m.digest);
        }
        Ok(())
    }

    /// Read and verify a manifest blob; media type from the index entry, else the body.
    async fn read_manifest(
        &self,
        dir: &Path,
        entry: Option<&Descriptor>,
        digest: &Digest,
    ) -> Result<Manifest, StoreError> {
        let path = blob_path(dir, digest)?;
        let raw = tokio::fs::read(&path)
            .await
            .map_err(|e| io_err("manifest", &path, e))?;
        let mut v = digest
            .verifier()
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        v.update(&raw);
        let (got, ok) = v.finish();
        if !ok {
            return Err(StoreError::DigestMismatch {
                expected: digest.to_string(),
                got: got.to_string(),
            });
        }
        let bytes = Bytes::from(raw);
        let media_type = match entry.map(|e| e.media_type.as_str()) {
            Some(mt) if !mt.is_empty() => mt.to_string(),
            _ => Manifest::from_bytes(bytes.clone(), None).media_type,
        };
        Ok(Manifest {
            media_type,
            digest: digest.clone(),
            bytes,
        })
    }
}

#[async_trait]
impl Store for OciDirStore {
    fn fallback_locks(&self) -> &FallbackLocks {
        &self.fallback_locks
    }

    async fn manifest_head(&self, r: &Reference) -> Result<Option<Descriptor>, StoreError> {
        let dir = layout_dir(r)?;
        let Some((entry, digest)) = self.resolve(&dir, r).await? else {
            return Ok(None);
        };
        let path = blob_path(&dir, &digest)?;
        let meta = match tokio::fs::metadata(&path).await {
            Ok(m) if m.is_file() => m,
            // listed in the index but the blob is gone: treat as absent so it gets re-copied
            _ => return Ok(None),
        };
        match entry {
            Some(e) if !e.media_type.is_empty() => Ok(Some(Descriptor::new(
                &e.media_type,
                digest,
                meta.len() as i64,
            ))),
            _ => {
                let m = self.read_manifest(&dir, None, &digest).await?;
                Ok(Some(m.descriptor()))
            }
        }
    }

    async fn manifest_get(&self, r: &Reference) -> Result<Manifest, StoreError> {
        let dir = layout_dir(r)?;
        let (entry, digest) = self.resolve(&dir, r).await?.ok_or_else(|| not_found(r))?;
        match self.read_manifest(&dir, entry.as_ref(), &digest).await {
            Err(StoreError::NotFound(_)) => Err(not_found(r)),
            other => other,
        }
    }

    async fn manifest_put(
        &self,
        r: &Reference,
        m: &Manifest,
        child: bool,
    ) -> Result<(), StoreError> {
        let dir = layout_dir(r)?;
        if let Some(d) = &r.digest {
            if d != &m.digest {
                return Err(StoreError::DigestMismatch {
                    expected: d.to_string(),
                    got: m.digest.to_string(),
                });
            }
        }
        init_layout(&dir).await?;
        check_blobs_present(&dir, r, m).await?;
        // protect the manifest blob from GC until the index lists it
        let _in_flight = self.gc.in_flight(&lock_key(&dir), &m.digest);
        let desc = Descriptor::new(&m.media_type, m.digest.clone(), m.bytes.len() as i64);
        let body = futures::stream::once(futures::future::ready(Ok(m.bytes.clone()))).boxed();
        write_blob(&self.gc, &dir, &desc, body).await?;
        if child {
            slog::debug!(self.log, "ocidir child manifest written";
                "layout" => &r.path, "digest" => %m.digest);
            return self.track_subject(r, m).await;
        }
        // pushes without tag or digest use `latest`
        let tag = match (&r.tag, &r.digest) {
            (Some(t), _) => Some(t.as_str()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG),
        };
        let mut annotations = BTreeMap::new();
        annotations.insert(
            ANNOTATION_CREATED.to_string(),
            created_value(std::env::var(SOURCE_DATE_ENV).ok()),
        );
        if let Some(t) = tag {
            annotations.insert(ANNOTATION_REF_NAME.to_string(), t.to_string());
        }
        let mut entry = desc;
        entry.annotations = Some(annotations);

        {
            let _guard = self.lock_layout(&dir).await;
            let mut index = read_index_for_write(&dir).await?;
            if index.set(tag, entry) {
                write_index(&self.gc, &dir, &index).await?;
                slog::debug!(self.log, "ocidir index updated";
                    "layout" => &r.path, "tag" => tag.unwrap_or(""), "digest" => %m.digest);
            }
        }
        self.track_subject(r, m).await
    }

    async fn blob_head(&self, repo: &Reference, digest: &Digest) -> Result<bool, StoreError> {
        let dir = layout_dir(repo)?;
        let path = blob_path(&dir, digest)?;
        match tokio::fs::metadata(&path).await {
            Ok(m) => Ok(m.is_file()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("stat", &path, e)),
        }
    }

    async fn blob_get(
        &self,
        repo: &Reference,
        desc: &Descriptor,
    ) -> Result<BlobStream, StoreError> {
        let dir = layout_dir(repo)?;
        let path = blob_path(&dir, &desc.digest)?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| io_err("blob", &path, e))?;
        let stream = ReaderStream::with_capacity(file, READ_CHUNK)
            .map_err(StoreError::from)
            .boxed();
        Ok(verified(desc, stream))
    }

    async fn blob_put(
        &self,
        repo: &Reference,
        desc: &Descriptor,
        body: BlobStream,
    ) -> Result<(), StoreError> {
        let dir = layout_dir(repo)?;
        init_layout(&dir).await?;
        if write_blob(&self.gc, &dir, desc, body).await? {
            slog::debug!(self.log, "ocidir blob written";
                "layout" => &repo.path, "digest" => %desc.digest, "size" => desc.size);
        }
        Ok(())
    }

    async fn blob_mount(
        &self,
        repo: &Reference,
        from: &Reference,
        digest: &Digest,
    ) -> Result<bool, StoreError> {
        if repo.scheme == Scheme::OciDir && repo.same_repository(from) {
            return self.blob_head(repo, digest).await;
        }
        Ok(false)
    }

    async fn tag_list(
        &self,
        repo: &Reference,
        pages: mpsc::Sender<Vec<String>>,
    ) -> Result<(), StoreError> {
        let dir = layout_dir(repo)?;
        let index = read_index(&dir).await?;
        let tags: BTreeSet<String> = index
            .manifests
            .iter()
            .filter_map(ref_name)
            .map(|n| n.rsplit(':').next().unwrap_or(n).to_string())
            .collect();
        pages
            .send(tags.into_iter().collect())
            .await
            .map_err(|_| StoreError::Canceled)
    }

    async fn open(&self, r: &Reference) {
        if let Ok(dir) = layout_dir(r) {
            self.gc.hold(&lock_key(&dir));
        }
    }

    async fn close(&self, r: &Reference) -> Result<(), StoreError> {
        let dir = layout_dir(r)?;
        let key = lock_key(&dir);
        let (release, unpaired) = self.gc.release(&key);
        if unpaired {
            slog::debug!(self.log, "ocidir close without open"; "layout" => &r.path);
        }
        match release {
            Release::StillHeld | Release::Unmodified => Ok(()),
            Release::Collect => self.collect(&dir, &key).await,
        }
    }

    async fn catalog(
        &self,
        _registry: &Reference,
        _pages: mpsc::Sender<Vec<String>>,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unsupported(
            "repository listing is not available for ocidir".to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> OciDirStore {
        OciDirStore::new(slog::Logger::root(slog::Discard, slog::o!()))
    }

    fn oref(dir: &Path, suffix: &str) -> Reference {
        Reference::parse(&format!("ocidir://{}{suffix}", dir.display())).unwrap()
    }

    /// `dir` holding the config blob every [`image`] names (manifests are only written over
    /// blobs the layout has).
    fn with_config(dir: PathBuf) -> PathBuf {
        let path = blob_path(&dir, &Digest::sha256_of(b"{}")).unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"{}").unwrap();
        dir
    }

    fn image(n: u32) -> Manifest {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[],"annotations":{{"n":"{n}"}}}}"#,
            media::OCI_MANIFEST,
            Digest::sha256_of(b"{}")
        );
        Manifest::from_bytes(Bytes::from(body), None)
    }

    fn bytes_stream(parts: Vec<&'static [u8]>) -> BlobStream {
        futures::stream::iter(parts.into_iter().map(|p| Ok(Bytes::from_static(p)))).boxed()
    }

    async fn index_of(dir: &Path) -> IndexFile {
        read_index(dir).await.unwrap()
    }

    fn names(idx: &IndexFile) -> Vec<(Option<String>, Digest)> {
        idx.manifests
            .iter()
            .map(|d| (ref_name(d).map(String::from), d.digest.clone()))
            .collect()
    }

    async fn files_under(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(mut rd) = tokio::fs::read_dir(&d).await else {
                continue;
            };
            while let Some(e) = rd.next_entry().await.unwrap() {
                if e.file_type().await.unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
                }
            }
        }
        out.sort();
        out
    }

    #[tokio::test]
    async fn put_get_head_by_tag_and_digest() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = with_config(tmp.path().join("layout"));
        let s = store();
        let m = image(1);
        s.manifest_put(&oref(&dir, ":v1"), &m, false).await.unwrap();

        assert_eq!(
            tokio::fs::read(dir.join("oci-layout")).await.unwrap(),
            LAYOUT_CONTENT
        );
        let raw = tokio::fs::read_to_string(dir.join("index.json"))
            .await
            .unwrap();
        assert!(raw.starts_with(
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:"#
        ));
        assert!(!raw.contains('\n') && !raw.contains(": "));
        let idx = index_of(&dir).await;
        assert_eq!(idx.manifests.len(), 1);
        let e = &idx.manifests[0];
        assert_eq!(e.size, m.bytes.len() as i64);
        let ann = e.annotations.as_ref().unwrap();
        assert_eq!(ann[ANNOTATION_REF_NAME], "v1");
        assert!(ann[ANNOTATION_CREATED].ends_with('Z'));
        assert!(e.platform.is_none() && e.urls.is_none());

        let head = s.manifest_head(&oref(&dir, ":v1")).await.unwrap().unwrap();
        assert_eq!(head, m.descriptor());
        let got = s.manifest_get(&oref(&dir, ":v1")).await.unwrap();
        assert_eq!(got.bytes, m.bytes);
        assert_eq!(got.media_type, media::OCI_MANIFEST);
        assert_eq!(got.digest, m.digest);

        let by_digest = oref(&dir, &format!("@{}", m.digest));
        assert_eq!(s.manifest_get(&by_digest).await.unwrap().bytes, m.bytes);
        assert_eq!(
            s.manifest_head(&by_digest).await.unwrap().unwrap().digest,
            m.digest
        );
        // tag and digest: the digest wins
        let both = oref(&dir, &format!(":nope@{}", m.digest));
        assert_eq!(s.manifest_get(&both).await.unwrap().digest, m.digest);

        // missing tag / digest
        assert!(s.manifest_head(&oref(&dir, ":v2")).await.unwrap().is_none());
        let e = s.manifest_get(&oref(&dir, ":v2")).await.unwrap_err();
        assert!(e.is_not_found(), "{e}");
        let other = oref(&dir, &format!("@{}", image(2).digest));
        assert!(s.manifest_head(&other).await.unwrap().is_none());
        assert!(s.manifest_get(&other).await.unwrap_err().is_not_found());
        // no tag, no digest → latest (absent here)
        assert!(s.manifest_head(&oref(&dir, "")).await.unwrap().is_none());
        s.manifest_put(&oref(&dir, ""), &image(3), false)
            .await
            .unwrap();
        assert_eq!(
            s.manifest_get(&oref(&dir, "")).await.unwrap().digest,
            image(3).digest
        );
        assert_eq!(
            s.manifest_get(&oref(&dir, ":latest")).await.unwrap().digest,
            image(3).digest
        );
    }

    #[tokio::test]
    async fn tag_replacement_and_duplicates() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = with_config(tmp.path().to_path_buf());
        let s = store();
        let (a, b, c) = (image(1), image(2), image(3));
        s.manifest_put(&oref(&dir, ":v1"), &a, false).await.unwrap();
        s.manifest_put(&oref(&dir, ":v2"), &b, false).await.unwrap();
        let before = index_of(&dir).await;

        // same tag, same digest: left as is (created annotation unchanged)
        s.manifest_put(&oref(&dir, ":v1"), &a, false).await.unwrap();
        assert_eq!(index_of(&dir).await.manifests, before.manifests);

        // same tag, new digest: replaced in place
        s.manifest_put(&oref(&dir, ":v1"), &c, false).await.unwrap();
        let idx = index_of(&dir).await;
        assert_eq!(
            names(&idx),
            vec![
                (Some("v1".into()), c.digest.clone()),
                (Some("v2".into()), b.digest.clone())
            ]
        );
        assert_eq!(
            s.manifest_get(&oref(&dir, ":v1")).await.unwrap().digest,
            c.digest
        );

        // later duplicates of a tag are removed
        let mut idx = idx;
        let mut dup = idx.manifests[0].clone();
        dup.digest = a.digest.clone();
        idx.manifests.push(dup);
        write_index(&s.gc, &dir, &idx).await.unwrap();
        s.manifest_put(&oref(&dir, ":v1"), &b, false).await.unwrap();
        assert_eq!(
            names(&index_of(&dir).await),
            vec![
                (Some("v1".into()), b.digest.clone()),
                (Some("v2".into()), b.digest.clone())
            ]
        );
    }

    #[tokio::test]
    async fn untagged_and_child_pushes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = with_config(tmp.path().to_path_buf());
        let s = store();
        let (a, b, c) = (image(1), image(2), image(3));

        // child: blob only
        s.manifest_put(&oref(&dir, ""), &a, true).await.unwrap();
        assert!(dir.join("oci-layout").exists());
        assert!(!dir.join("index.json").exists());
        assert!(s.blob_head(&oref(&dir, ""), &a.digest).await.unwrap());
        let by_digest = oref(&dir, &format!("@{}", a.digest));
        let got = s.manifest_get(&by_digest).await.unwrap();
        assert_eq!(got.media_type, media::OCI_MANIFEST);
        assert_eq!(
            s.manifest_head(&by_digest).await.unwrap().unwrap(),
            a.descriptor()
        );
        s.manifest_put(&oref(&dir, ":child"), &c, true)
            .await
            .unwrap();
        assert!(!dir.join("index.json").exists());

        // untagged non-child: entry without ref name, once
        let by_b = oref(&dir, &format!("@{}", b.digest));
        s.manifest_put(&by_b, &b, false).await.unwrap();
        s.manifest_put(&by_b, &b, false).await.unwrap();
        let idx = index_of(&dir).await;
        assert_eq!(names(&idx), vec![(None, b.digest.clone())]);
        assert!(idx.manifests[0].annotations.as_ref().unwrap()[ANNOTATION_CREATED].len() >= 20);

        // tagging it replaces the untagged entry
        s.manifest_put(&oref(&dir, ":v1"), &b, false).await.unwrap();
        assert_eq!(
            names(&index_of(&dir).await),
            vec![(Some("v1".into()), b.digest.clone())]
        );
        // an untagged push of a digest already listed (tagged) adds nothing
        s.manifest_put(&by_b, &b, false).await.unwrap();
        assert_eq!(index_of(&dir).await.manifests.len(), 1);

        // digest in the ref must match the manifest
        let e = s.manifest_put(&by_b, &a, false).await.unwrap_err();
        assert!(matches!(e, StoreError::DigestMismatch { .. }));
        assert!(s.tag_list_vec(&oref(&dir, "")).await.unwrap() == vec!["v1".to_string()]);
    }

    impl OciDirStore {
        async fn tag_list_vec(&self, r: &Reference) -> Result<Vec<String>, StoreError> {
            crate::store::tag_list_all(self, r).await
        }
    }

    #[tokio::test]
    async fn tag_lookup_by_suffix_and_listing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = with_config(tmp.path().to_path_buf());
        let s = store();
        let mut idx = IndexFile::new();
        for (i, name) in ["docker.io/library/alpine:3", "b", "x:b", "a", "3"]
            .iter()
            .enumerate()
        {
            let m = image(i as u32);
            s.manifest_put(&oref(&dir, ""), &m, true).await.unwrap();
            let mut d = m.descriptor();
            d.annotations = Some(BTreeMap::from([(
                ANNOTATION_REF_NAME.to_string(),
                name.to_string(),
            )]));
            idx.manifests.push(d);
        }
        idx.manifests.push(image(9).descriptor()); // no ref name
        write_index(&s.gc, &dir, &idx).await.unwrap();

        // exact match wins over suffix match
        let g = s.manifest_get(&oref(&dir, ":3")).await.unwrap();
        assert_eq!(g.digest, image(4).digest);
        let g = s.manifest_get(&oref(&dir, ":b")).await.unwrap();
        assert_eq!(g.digest, image(1).digest);
        let mut idx2 = idx.clone();
        idx2.manifests.remove(4);
        write_index(&s.gc, &dir, &idx2).await.unwrap();
        let g = s.manifest_get(&oref(&dir, ":3")).await.unwrap();
        assert_eq!(g.digest, image(0).digest);
        write_index(&s.gc, &dir, &idx).await.unwrap();

        assert_eq!(
            s.tag_list_vec(&oref(&dir, "")).await.unwrap(),
            vec!["3", "a", "b"]
        );
    }

    #[tokio::test]
    async fn blob_put_get_verify() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("new");
        let s = store();
        let r = oref(&dir, "");
        let data: &'static [u8] = b"hello, layout";
        let desc = Descriptor::new("application/octet-stream", Digest::sha256_of(data), 13);
        assert!(!s.blob_head(&r, &desc.digest).await.unwrap());
        s.blob_put(&r, &desc, bytes_stream(vec![b"hello", b", layout"]))
            .await
            .unwrap();
        assert!(s.blob_head(&r, &desc.digest).await.unwrap());
        assert_eq!(
            tokio::fs::read(blob_path(&dir, &desc.digest).unwrap())
                .await
                .unwrap(),
            data
        );
        assert_eq!(
            tokio::fs::read(dir.join("oci-layout")).await.unwrap(),
            LAYOUT_CONTENT
        );
        let got: Vec<Bytes> = s
            .blob_get(&r, &desc)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(got.concat(), data);

        // already present: success without reading the stream
        let never = futures::stream::once(async {
            panic!("stream must not be read");
            #[allow(unreachable_code)]
            Ok(Bytes::new())
        })
        .boxed();
        s.blob_put(&r, &desc, never).await.unwrap();

        // a corrupted file is caught on read
        tokio::fs::write(blob_path(&dir, &desc.digest).unwrap(), b"hello, layouT")
            .await
            .unwrap();
        let res: Result<Vec<Bytes>, _> = s.blob_get(&r, &desc).await.unwrap().try_collect().await;
        assert!(matches!(res, Err(StoreError::DigestMismatch { .. })));

        // missing blob
        let other = Descriptor::new("x", Digest::sha256_of(b"nope"), 4);
        assert!(s.blob_get(&r, &other).await.err().unwrap().is_not_found());

        // mount: only within the same layout
        assert!(s.blob_mount(&r, &r, &desc.digest).await.unwrap());
        let elsewhere = oref(&tmp.path().join("other"), "");
        assert!(!s.blob_mount(&elsewhere, &r, &desc.digest).await.unwrap());
        assert!(s.catalog(&r, mpsc::channel(1).0).await.is_err());
    }

    #[tokio::test]
    async fn blob_put_mismatch_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let s = store();
        let r = oref(&dir, "");
        let desc = Descriptor::new("x", Digest::sha256_of(b"abcdef"), 6);

        let e = s
            .blob_put(&r, &desc, bytes_stream(vec![b"abc", b"deF"]))
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::DigestMismatch { .. }), "{e}");
        let e = s
            .blob_put(&r, &desc, bytes_stream(vec![b"abc"]))
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::ShortRead { .. }), "{e}");
        let e = s
            .blob_put(&r, &desc, bytes_stream(vec![b"abc", b"defg"]))
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::SizeExceeded { .. }), "{e}");
        let failing = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"ab")),
            Err(StoreError::Network {
                host: "h".into(),
                detail: "reset".into(),
            }),
        ])
        .boxed();
        let e = s.blob_put(&r, &desc, failing).await.unwrap_err();
        assert!(matches!(e, StoreError::Network { .. }), "{e}");

        assert!(!s.blob_head(&r, &desc.digest).await.unwrap());
        assert_eq!(files_under(&dir).await, vec!["oci-layout".to_string()]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writes_lose_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = with_config(tmp.path().join("shared"));
        let s = Arc::new(store());
        let mut tasks = Vec::new();
        for i in 0..24u32 {
            let s = s.clone();
            let dir = dir.clone();
            tasks.push(tokio::spawn(async move {
                let m = image(i);
                // every task also writes the same shared blob
                let desc = Descriptor::new("x", Digest::sha256_of(b"shared blob"), 11);
                s.blob_put(
                    &oref(&dir, ""),
                    &desc,
                    bytes_stream(vec![b"shared", b" blob"]),
                )
                .await
                .unwrap();
                s.manifest_put(&oref(&dir, &format!(":t{i}")), &m, false)
                    .await
                    .unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let idx = index_of(&dir).await;
        assert_eq!(idx.manifests.len(), 24);
        let tags = s.tag_list_vec(&oref(&dir, "")).await.unwrap();
        assert_eq!(tags.len(), 24);
        for i in 0..24u32 {
            let g = s
                .manifest_get(&oref(&dir, &format!(":t{i}")))
                .await
                .unwrap();
            assert_eq!(g.digest, image(i).digest);
        }
        // no temp files remain anywhere
        let files = files_under(&dir).await;
        assert!(files.iter().all(|f| !f.ends_with(".tmp")), "{files:?}");
        // oci-layout, index.json, 24 manifests, the shared blob, the config blob
        assert_eq!(files.len(), 2 + 24 + 1 + 1);
    }

    #[tokio::test]
    async fn missing_layout_is_not_found() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("testmissing");
        let s = store();
        let e = s.manifest_get(&oref(&dir, ":v1")).await.unwrap_err();
        assert!(e.is_not_found());
        assert!(e.to_string().contains("oci-layout cannot be open"), "{e}");
        assert!(s
            .manifest_head(&oref(&dir, ":v1"))
            .await
            .unwrap_err()
            .is_not_found());
        let e = s.tag_list_vec(&oref(&dir, "")).await.unwrap_err();
        assert!(e.is_not_found() && e.to_string().contains("oci-layout cannot be open"));
        assert!(!s
            .blob_head(&oref(&dir, ""), &image(1).digest)
            .await
            .unwrap());
        assert!(!dir.exists(), "reads must not create the layout");

        // a bad layout version is rejected
        tokio::fs::create_dir_all(&dir).await.unwrap();
        tokio::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"2.0.0"}"#)
            .await
            .unwrap();
        let e = s.manifest_get(&oref(&dir, ":v1")).await.unwrap_err();
        assert!(matches!(e, StoreError::Invalid(_)), "{e}");
    }

    #[tokio::test]
    async fn corrupt_manifest_blob_is_detected() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = with_config(tmp.path().to_path_buf());
        let s = store();
        let m = image(1);
        s.manifest_put(&oref(&dir, ":v1"), &m, false).await.unwrap();
        tokio::fs::write(blob_path(&dir, &m.digest).unwrap(), b"{}")
            .await
            .unwrap();
        let e = s.manifest_get(&oref(&dir, ":v1")).await.unwrap_err();
        assert!(matches!(e, StoreError::DigestMismatch { .. }), "{e}");
    }

    #[test]
    fn created_annotation_value() {
        assert_eq!(created_value(Some("0".into())), "1970-01-01T00:00:00Z");
        assert_eq!(
            created_value(Some("1700000000".into())),
            "2023-11-14T22:13:20Z"
        );
        let now = created_value(None);
        assert_eq!(now.len(), 20);
        assert_eq!(created_value(Some("garbage".into())).len(), 20);
    }

    #[test]
    fn lock_keys_are_normalised() {
        assert_eq!(lock_key(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(lock_key(Path::new("x")), lock_key(Path::new("./x")));
    }

    #[test]
    fn index_set_rules() {
        let d = |n: u32, tag: Option<&str>| {
            let mut d = image(n).descriptor();
            if let Some(t) = tag {
                d.annotations = Some(BTreeMap::from([(
                    ANNOTATION_REF_NAME.to_string(),
                    t.to_string(),
                )]));
            }
            d
        };
        let mut idx = IndexFile::new();
        idx.manifests = vec![
            d(1, None),
            d(2, Some("a")),
            d(1, Some("b")),
            d(3, Some("a")),
        ];
        // tag "a" with digest 1: first match is the untagged digest-1 entry → replaced,
        // later "a" entries removed, "b" kept
        assert!(idx.set(Some("a"), d(1, Some("a"))));
        assert_eq!(
            names(&idx),
            vec![
                (Some("a".into()), image(1).digest),
                (Some("b".into()), image(1).digest)
            ]
        );
        assert!(!idx.set(Some("a"), d(1, Some("a"))));
        assert!(!idx.set(None, d(1, None)));
        assert!(idx.set(None, d(4, None)));
        assert_eq!(idx.manifests.len(), 3);
        assert!(idx.set(Some("c"), d(5, Some("c"))));
        assert_eq!(idx.manifests.len(), 4);
    }

    #[tokio::test]
    async fn pushing_a_referrer_maintains_the_fallback_index() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = with_config(tmp.path().join("refs"));
        let s = store();
        let subject = image(1);
        s.manifest_put(&oref(&dir, ":v1"), &subject, false)
            .await
            .unwrap();
        let referrer = |n: u32, at: Option<&str>| {
            let mut v = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": media::OCI_MANIFEST,
                "config": {"mediaType": "application/example.config", "digest": Digest::sha256_of(b"{}"), "size": 2},
                "layers": [],
                "subject": subject.descriptor(),
                "annotations": {"n": n.to_string()},
            });
            if let Some(at) = at {
                v["artifactType"] = serde_json::json!(at);
            }
            Manifest::from_bytes(Bytes::from(serde_json::to_vec(&v).unwrap()), None)
        };
        let (r1, r2) = (
            referrer(1, Some("application/example.sbom")),
            referrer(2, None),
        );
        s.manifest_put(&oref(&dir, &format!("@{}", r1.digest)), &r1, true)
            .await
            .unwrap();
        s.manifest_put(&oref(&dir, &format!("@{}", r2.digest)), &r2, true)
            .await
            .unwrap();
        // pushing one again changes nothing
        s.manifest_put(&oref(&dir, &format!("@{}", r1.digest)), &r1, true)
            .await
            .unwrap();
        let listed = s.referrers(&oref(&dir, ""), &subject.digest).await.unwrap();
        let tag = crate::store::fallback_tag(&subject.digest);
        assert_eq!(listed.tags, vec![tag.clone()]);
        let got: Vec<(Digest, Option<String>)> = listed
            .descriptors
            .iter()
            .map(|d| (d.digest.clone(), d.artifact_type.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (r1.digest.clone(), Some("application/example.sbom".into())),
                // no artifactType: the config media type
                (r2.digest.clone(), Some("application/example.config".into())),
            ]
        );
        assert_eq!(
            listed.descriptors[1].annotations.as_ref().unwrap()["n"],
            "2"
        );
        // the index is a tagged entry; the referrers are not
        let idx = index_of(&dir).await;
        let tagged: Vec<Option<String>> = names(&idx).into_iter().map(|(n, _)| n).collect();
        assert_eq!(tagged, vec![Some("v1".to_string()), Some(tag)]);
        // no referrers: an empty list
        let none = s.referrers(&oref(&dir, ""), &r1.digest).await.unwrap();
        assert!(none.descriptors.is_empty() && none.tags.is_empty());
    }

    // ---- garbage collection (spec §10.4) ----

    /// Put `data` as a blob; its descriptor.
    async fn put_blob(s: &OciDirStore, dir: &Path, mt: &str, data: &[u8]) -> Descriptor {
        let desc = Descriptor::new(mt, Digest::sha256_of(data), data.len() as i64);
        let body =
            futures::stream::once(futures::future::ready(Ok(Bytes::copy_from_slice(data)))).boxed();
        s.blob_put(&oref(dir, ""), &desc, body).await.unwrap();
        desc
    }

    fn json_manifest(v: serde_json::Value) -> Manifest {
        Manifest::from_bytes(Bytes::from(serde_json::to_vec(&v).unwrap()), None)
    }

    /// An image with its own config, the given layers, and `data` as a unique layer; blobs put.
    async fn put_image(s: &OciDirStore, dir: &Path, data: &str, shared: &[Descriptor]) -> Manifest {
        let config = put_blob(
            s,
            dir,
            "application/vnd.oci.image.config.v1+json",
            format!(r#"{{"c":"{data}"}}"#).as_bytes(),
        )
        .await;
        let mut layers = shared.to_vec();
        layers.push(
            put_blob(
                s,
                dir,
                "application/vnd.oci.image.layer.v1.tar",
                data.as_bytes(),
            )
            .await,
        );
        json_manifest(serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": config,
            "layers": layers,
        }))
    }

    fn blob_set(dir: &Path) -> BTreeSet<String> {
        std::fs::read_dir(dir.join("blobs/sha256"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn hexes<'a>(ds: impl IntoIterator<Item = &'a Digest>) -> BTreeSet<String> {
        ds.into_iter().map(|d| d.hex().to_string()).collect()
    }

    fn links_of(m: &Manifest) -> Vec<Digest> {
        m.links()
            .unwrap()
            .blobs
            .into_iter()
            .map(|d| d.digest)
            .collect()
    }

    #[tokio::test]
    async fn gc_after_tag_overwrite_keeps_only_reachable_blobs() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("gc");
        let s = store();
        let r = oref(&dir, ":v1");
        let shared = put_blob(
            &s,
            &dir,
            "application/vnd.oci.image.layer.v1.tar",
            b"shared",
        )
        .await;

        // v1 = image A; "multi" = an index over image C with one absent (sparse) child;
        // a subject-less referrer index listing an artifact manifest with `blobs`
        s.open(&r).await;
        let a = put_image(&s, &dir, "a-unique", std::slice::from_ref(&shared)).await;
        s.manifest_put(&r, &a, false).await.unwrap();
        let c = put_image(&s, &dir, "c-unique", &[]).await;
        s.manifest_put(&oref(&dir, ""), &c, true).await.unwrap();
        let missing = image(77).descriptor();
        let idx = json_manifest(serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_INDEX,
            "manifests": [c.descriptor(), missing],
        }));
        s.manifest_put(&oref(&dir, ":multi"), &idx, false)
            .await
            .unwrap();
        let art_blob = put_blob(&s, &dir, "text/plain", b"signature").await;
        let art = json_manifest(serde_json::json!({
            "mediaType": media::OCI_ARTIFACT,
            "artifactType": "application/example",
            "blobs": [art_blob],
        }));
        s.manifest_put(&oref(&dir, ""), &art, true).await.unwrap();
        let referrers = json_manifest(serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_INDEX,
            "manifests": [art.descriptor()],
        }));
        let fallback = format!(":sha256-{}", a.digest.hex());
        s.manifest_put(&oref(&dir, &fallback), &referrers, false)
            .await
            .unwrap();
        s.close(&r).await.unwrap();
        let before = blob_set(&dir);
        assert_eq!(before.len(), 11, "{before:?}");

        // overwrite v1 with B (shares one layer with A)
        s.open(&r).await;
        let b = put_image(&s, &dir, "b-unique", std::slice::from_ref(&shared)).await;
        s.manifest_put(&r, &b, false).await.unwrap();
        assert_eq!(blob_set(&dir).len(), 14, "nothing deleted while held");
        s.close(&r).await.unwrap();

        let mut gone = hexes([&a.digest]);
        gone.extend(hexes(&links_of(&a)));
        gone.remove(shared.digest.hex());
        assert_eq!(gone.len(), 3);
        let mut want = before.clone();
        want.retain(|h| !gone.contains(h));
        want.insert(b.digest.hex().to_string());
        want.extend(hexes(&links_of(&b)));
        assert_eq!(blob_set(&dir), want);
        assert!(want.contains(shared.digest.hex()));
        assert!(want.contains(art_blob.digest.hex()));
        assert_eq!(
            s.manifest_get(&r).await.unwrap().digest,
            b.digest,
            "the layout stays readable"
        );

        // a second close with nothing modified does nothing, even with new garbage on disk
        let stray = dir
            .join("blobs/sha256")
            .join(Digest::sha256_of(b"stray").hex());
        std::fs::write(&stray, b"stray").unwrap();
        s.open(&r).await;
        s.close(&r).await.unwrap();
        assert!(stray.exists());
    }

    #[tokio::test]
    async fn gc_waits_for_the_last_hold() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = with_config(tmp.path().join("held"));
        let s = store();
        let (r1, r2) = (oref(&dir, ":v1"), oref(&dir, ":v2"));
        s.manifest_put(&r1, &image(1), false).await.unwrap();
        s.manifest_put(&r2, &image(2), false).await.unwrap();
        s.open(&r1).await;
        s.open(&oref(&dir.join("."), ":v2")).await; // same layout, other spelling
        s.manifest_put(&r1, &image(3), false).await.unwrap();
        s.close(&r1).await.unwrap();
        assert!(
            blob_set(&dir).contains(image(1).digest.hex()),
            "held by the other copy"
        );
        s.close(&r2).await.unwrap();
        let left = blob_set(&dir);
        assert!(!left.contains(image(1).digest.hex()));
        assert!(left.contains(image(2).digest.hex()) && left.contains(image(3).digest.hex()));
        // a close without an open on an idle, unmodified layout is harmless
        s.close(&r1).await.unwrap();
        assert_eq!(blob_set(&dir), left);
    }

    /// Two stores in one process (two engines) keep their own layout bookkeeping: a copy
    /// one of them holds open does not defer the other's garbage collection.
    #[tokio::test]
    async fn two_stores_do_not_share_layout_holds() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = with_config(tmp.path().join("two"));
        let (a, b) = (store(), store());
        let r = oref(&dir, ":v1");
        b.manifest_put(&r, &image(1), false).await.unwrap();
        a.open(&r).await;
        b.open(&r).await;
        b.manifest_put(&r, &image(2), false).await.unwrap();
        b.close(&r).await.unwrap();
        let left = blob_set(&dir);
        assert!(
            !left.contains(image(1).digest.hex()),
            "collected by its own store's last close"
        );
        assert!(left.contains(image(2).digest.hex()));
        a.close(&r).await.unwrap();
    }

    #[tokio::test]
    async fn gc_spares_fresh_temp_files_and_in_flight_digests() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = with_config(tmp.path().join("tmpfiles"));
        let s = store();
        let r = oref(&dir, ":v1");
        s.manifest_put(&r, &image(1), false).await.unwrap();
        let blobs = dir.join("blobs/sha256");
        let writing = Digest::sha256_of(b"being written");
        let fresh = blobs.join(format!("{}.0123456789abcdef.tmp", writing.hex()));
        std::fs::write(&fresh, b"partial").unwrap();
        let foreign = blobs.join("upload-1234");
        std::fs::write(&foreign, b"another tool").unwrap();
        let old = blobs.join(format!(
            "{}.fedcba9876543210.tmp",
            Digest::sha256_of(b"x").hex()
        ));
        let f = std::fs::File::create(&old).unwrap();
        f.set_modified(std::time::SystemTime::now() - 2 * gc::TEMP_MAX_AGE)
            .unwrap();
        drop(f);
        // a finished, unreferenced blob whose digest is still held by a writer of this process
        let held = Digest::sha256_of(b"held");
        std::fs::write(blobs.join(held.hex()), b"held").unwrap();
        let guard = s.gc.in_flight(&lock_key(&dir), &held);

        s.open(&r).await;
        s.manifest_put(&r, &image(2), false).await.unwrap();
        s.close(&r).await.unwrap();
        assert!(
            fresh.exists() && foreign.exists(),
            "fresh temp files survive"
        );
        assert!(!old.exists(), "stale temp files go");
        assert!(blobs.join(held.hex()).exists(), "in-flight digest kept");
        assert!(!blobs.join(image(1).digest.hex()).exists());

        drop(guard);
        s.open(&r).await;
        s.manifest_put(&r, &image(3), false).await.unwrap();
        s.close(&r).await.unwrap();
        assert!(!blobs.join(held.hex()).exists());
        assert!(fresh.exists());
    }

    #[tokio::test]
    async fn gc_deletes_nothing_when_a_manifest_is_unreadable() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = with_config(tmp.path().join("broken"));
        let s = store();
        let r = oref(&dir, ":v1");
        s.manifest_put(&r, &image(1), false).await.unwrap();
        s.manifest_put(&oref(&dir, ":v2"), &image(2), false)
            .await
            .unwrap();
        // v2's manifest is corrupted on disk; v1 is overwritten (image 1 becomes garbage)
        std::fs::write(blob_path(&dir, &image(2).digest).unwrap(), b"{}").unwrap();
        s.open(&r).await;
        s.manifest_put(&r, &image(3), false).await.unwrap();
        s.close(&r).await.unwrap();
        assert!(blob_set(&dir).contains(image(1).digest.hex()));

        // an index entry whose manifest is missing also stops GC
        std::fs::remove_file(blob_path(&dir, &image(2).digest).unwrap()).unwrap();
        s.open(&r).await;
        s.close(&r).await.unwrap();
        assert!(blob_set(&dir).contains(image(1).digest.hex()));

        // repaired: the (still pending) collection goes ahead on the next close
        s.manifest_put(&oref(&dir, ":v2"), &image(4), false)
            .await
            .unwrap();
        s.open(&r).await;
        s.close(&r).await.unwrap();
        assert!(!blob_set(&dir).contains(image(1).digest.hex()));
        assert!(blob_set(&dir).contains(image(4).digest.hex()));
    }
    #[tokio::test]
    async fn a_manifest_over_a_missing_blob_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("strict");
        let s = store();
        let m = image(1);
        let config = Digest::sha256_of(b"{}");
        let e = s
            .manifest_put(&oref(&dir, ":v1"), &m, false)
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(config.as_str()) && text.contains(m.digest.as_str()),
            "{text}"
        );
        assert!(!dir.join("index.json").exists());
        assert!(!blob_path(&dir, &m.digest).unwrap().exists());
        // as a child too
        assert!(s.manifest_put(&oref(&dir, ""), &m, true).await.is_err());
        // once the blob is there, it is accepted
        let dir = with_config(dir);
        s.manifest_put(&oref(&dir, ":v1"), &m, false).await.unwrap();
        // an index is not held to its children (`platforms` leaves some out on purpose)
        let index = Manifest::from_bytes(
            Bytes::from(format!(
                r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{}","size":9}}]}}"#,
                media::OCI_INDEX,
                media::OCI_MANIFEST,
                Digest::sha256_of(b"absent child")
            )),
            None,
        );
        s.manifest_put(&oref(&dir, ":multi"), &index, false)
            .await
            .unwrap();
    }
}
