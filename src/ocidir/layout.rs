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
use super::index_file::{ref_name, IndexFile};
use crate::oci::{media, Descriptor, Digest, Manifest};
use crate::reference::{Reference, Scheme};
use crate::store::{verified, BlobStream, FallbackLocks, Store, StoreError};
use async_trait::async_trait;
use bytes::Bytes;
use dashmap::DashMap;
use futures::stream::{StreamExt, TryStreamExt};
use serde::Deserialize;
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

    /// Removes the tag's `index.json` entries; the blobs only it reached go at the next GC
    /// (the `close` after this `open`).
    async fn tag_delete(&self, r: &Reference) -> Result<(), StoreError> {
        let dir = layout_dir(r)?;
        let tag = r
            .tag
            .as_deref()
            .ok_or_else(|| StoreError::Invalid(format!("tag delete without a tag: {r}")))?;
        let _guard = self.lock_layout(&dir).await;
        let mut index = read_index(&dir).await?;
        let before = index.manifests.len();
        index
            .manifests
            .retain(|d| ref_name(d).is_none_or(|n| n != tag && n.rsplit(':').next() != Some(tag)));
        if index.manifests.len() != before {
            write_index(&self.gc, &dir, &index).await?;
            slog::debug!(self.log, "ocidir tag deleted"; "layout" => &r.path, "tag" => tag);
        }
        Ok(())
    }

    /// Removes the untagged `index.json` entries of the digest (a tagged one is left: the
    /// caller deletes only what nothing tags). A manifest no entry lists (a referrer, a child)
    /// goes at the next GC once nothing reaches it.
    async fn manifest_delete(&self, r: &Reference) -> Result<(), StoreError> {
        let dir = layout_dir(r)?;
        let digest = r
            .digest
            .as_ref()
            .ok_or_else(|| StoreError::Invalid(format!("manifest delete without a digest: {r}")))?;
        let _guard = self.lock_layout(&dir).await;
        let mut index = read_index(&dir).await?;
        let before = index.manifests.len();
        index
            .manifests
            .retain(|d| &d.digest != digest || ref_name(d).is_some());
        if index.manifests.len() != before {
            write_index(&self.gc, &dir, &index).await?;
            slog::debug!(self.log, "ocidir manifest deleted"; "layout" => &r.path, "digest" => %digest);
        }
        Ok(())
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
mod tests;
