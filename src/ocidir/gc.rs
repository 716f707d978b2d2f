//! Garbage collection of OCI layouts (spec §10.4) and the per-layout bookkeeping it needs.
//!
//! Per layout (keyed by the normalised absolute path) the store ([`LayoutStates`], owned by one
//! `OciDirStore`) tracks:
//! * `holds` — image copies in flight (`Store::open` … `Store::close`); GC runs only when the
//!   last one closes;
//! * `modified` — something was written since the last GC; without it a close does nothing;
//! * `in_flight` — digests being written right now (blob and manifest puts); never deleted.
//!
//! Unlike regsync (spec §16 #20) the sweep never deletes a file another writer may still be
//! writing: names that are not a digest (temp files) go only once older than [`TEMP_MAX_AGE`].
//! A layout whose `index.json` cannot be fully read leaves everything in place.

use super::layout::blob_path;
use crate::oci::{media, Descriptor, Digest, Manifest};
use bytes::Bytes;
use dashmap::DashMap;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// Files under `blobs/<alg>/` whose name is not a digest (temp files of any writer) are only
/// deleted once they have not been modified for this long.
pub(super) const TEMP_MAX_AGE: Duration = Duration::from_secs(3600);

#[derive(Debug, Default)]
pub(super) struct LayoutState {
    holds: usize,
    modified: bool,
    in_flight: HashMap<Digest, usize>,
}

/// The GC bookkeeping of every layout one store writes, by normalised path. Owned by the
/// store: two stores in one process (two engines, tests) never see each other's holds.
#[derive(Debug, Default)]
pub(super) struct LayoutStates {
    layouts: DashMap<PathBuf, Arc<Mutex<LayoutState>>>,
}

fn lock(s: &Mutex<LayoutState>) -> MutexGuard<'_, LayoutState> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a close decided.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Release {
    /// Other copies into the layout are still in flight.
    StillHeld,
    /// Nothing written since the last GC.
    Unmodified,
    /// The caller must collect; the modified flag has been claimed (cleared).
    Collect,
}

impl LayoutStates {
    /// The state of the layout at `key` (created on first use).
    pub(super) fn state(&self, key: &Path) -> Arc<Mutex<LayoutState>> {
        self.layouts
            .entry(key.to_path_buf())
            .or_insert_with(|| Arc::new(Mutex::new(LayoutState::default())))
            .clone()
    }

    /// An image copy into the layout begins.
    pub(super) fn hold(&self, key: &Path) {
        lock(&self.state(key)).holds += 1;
    }

    /// An image copy into the layout ended. A close without a matching open (hold count
    /// already zero) is treated like the last close.
    pub(super) fn release(&self, key: &Path) -> (Release, bool) {
        let s = self.state(key);
        let mut st = lock(&s);
        let unpaired = st.holds == 0;
        st.holds = st.holds.saturating_sub(1);
        let r = if st.holds > 0 {
            Release::StillHeld
        } else if !st.modified {
            Release::Unmodified
        } else {
            st.modified = false;
            Release::Collect
        };
        (r, unpaired)
    }

    pub(super) fn is_held(&self, key: &Path) -> bool {
        lock(&self.state(key)).holds > 0
    }

    pub(super) fn mark_modified(&self, key: &Path) {
        lock(&self.state(key)).modified = true;
    }

    /// Protect `digest` in the layout at `key` from the sweep while the guard lives.
    pub(super) fn in_flight(&self, key: &Path, digest: &Digest) -> InFlight {
        let state = self.state(key);
        *lock(&state).in_flight.entry(digest.clone()).or_insert(0) += 1;
        InFlight {
            state,
            digest: digest.clone(),
        }
    }
}

/// A digest being written into a layout; the sweep leaves its file (and temp files) alone
/// while this guard lives. Dropping it (also on cancellation) ends the protection.
pub(super) struct InFlight {
    state: Arc<Mutex<LayoutState>>,
    digest: Digest,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut st = lock(&self.state);
        if let Some(n) = st.in_flight.get_mut(&self.digest) {
            *n -= 1;
            if *n == 0 {
                st.in_flight.remove(&self.digest);
            }
        }
    }
}

/// Every digest reachable from `roots` (the `index.json` entries): the roots themselves, and
/// recursively index children, configs, layers and artifact `blobs`. Err (with the reason)
/// when a manifest cannot be read, verified or parsed — the caller then deletes nothing. A
/// child of an index that is absent is normal (platform-filtered copy) and skipped.
pub(super) async fn reachable(
    layout: &Path,
    roots: &[Descriptor],
) -> Result<HashSet<Digest>, String> {
    let mut marked: HashSet<Digest> = HashSet::new();
    let mut walked: HashSet<Digest> = HashSet::new();
    let mut stack: Vec<(Descriptor, bool)> =
        roots.iter().rev().map(|d| (d.clone(), true)).collect();
    while let Some((desc, root)) = stack.pop() {
        marked.insert(desc.digest.clone());
        let mt = desc.media_type.as_str();
        if !(mt.is_empty() || media::is_manifest(mt)) || !walked.insert(desc.digest.clone()) {
            continue;
        }
        let path = blob_path(layout, &desc.digest).map_err(|e| e.to_string())?;
        let raw = match tokio::fs::read(&path).await {
            Ok(raw) => raw,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !root => continue,
            Err(e) => return Err(format!("cannot read manifest {}: {e}", desc.digest)),
        };
        if let Ok(mut v) = desc.digest.verifier() {
            v.update(&raw);
            let (got, ok) = v.finish();
            if !ok {
                return Err(format!("manifest {} has digest {got} on disk", desc.digest));
            }
        }
        let m = Manifest::from_bytes(Bytes::from(raw), Some(mt));
        if m.media_type == media::DOCKER_V1 || m.media_type == media::DOCKER_V1_SIGNED {
            for d in v1_layers(&m.bytes).map_err(|e| format!("manifest {}: {e}", desc.digest))? {
                marked.insert(d);
            }
            continue;
        }
        let links = m
            .links()
            .map_err(|e| format!("manifest {}: {e}", desc.digest))?;
        for blob in links.blobs {
            marked.insert(blob.digest);
        }
        stack.extend(links.children.into_iter().rev().map(|c| (c, false)));
    }
    Ok(marked)
}

/// Layers of a Docker schema 1 manifest (`fsLayers[].blobSum`).
fn v1_layers(bytes: &[u8]) -> Result<Vec<Digest>, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct V1 {
        #[serde(default)]
        fs_layers: Vec<FsLayer>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct FsLayer {
        blob_sum: Digest,
    }
    let v: V1 = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    Ok(v.fs_layers.into_iter().map(|l| l.blob_sum).collect())
}

/// What a sweep did.
#[derive(Debug, Default)]
pub(super) struct Sweep {
    /// `<alg>/<name>` of every deleted file.
    pub removed: Vec<String>,
    /// Unreachable files left because their digest is being written.
    pub kept_in_flight: usize,
    /// A copy into the layout started meanwhile; the sweep stopped early.
    pub interrupted: bool,
    pub errors: Vec<String>,
}

/// Delete every file under `<layout>/blobs/<alg>/` that is neither reachable nor protected.
/// Blocking (std::fs): run it on a blocking thread. Each delete happens under the layout's
/// state lock after re-checking holds and in-flight digests, so a writer that registers
/// first is never raced.
pub(super) fn sweep(
    layout: &Path,
    state: &Mutex<LayoutState>,
    reachable: &HashSet<Digest>,
    now: SystemTime,
) -> Sweep {
    let mut out = Sweep::default();
    let blobs = layout.join("blobs");
    let alg_dirs = match std::fs::read_dir(&blobs) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return out,
        Err(e) => {
            out.errors.push(format!("read {}: {e}", blobs.display()));
            return out;
        }
    };
    for alg_dir in alg_dirs {
        let alg_dir = match alg_dir {
            Ok(d) => d,
            Err(e) => {
                out.errors.push(format!("read {}: {e}", blobs.display()));
                continue;
            }
        };
        if !alg_dir.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let alg = alg_dir.file_name().to_string_lossy().into_owned();
        let files = match std::fs::read_dir(alg_dir.path()) {
            Ok(rd) => rd,
            Err(e) => {
                out.errors
                    .push(format!("read {}: {e}", alg_dir.path().display()));
                continue;
            }
        };
        for file in files {
            let file = match file {
                Ok(f) => f,
                Err(e) => {
                    out.errors
                        .push(format!("read {}: {e}", alg_dir.path().display()));
                    continue;
                }
            };
            if file.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = file.file_name().to_string_lossy().into_owned();
            let protect = match Digest::parse(&format!("{alg}:{name}")) {
                Ok(d) if reachable.contains(&d) => continue,
                Ok(d) => Some(d),
                Err(_) => {
                    // a temp file (ours: `<hex>.<random>.tmp`) or anything else: only when stale
                    let fresh = file
                        .metadata()
                        .and_then(|m| m.modified())
                        .map(|t| now.duration_since(t).unwrap_or_default() < TEMP_MAX_AGE)
                        .unwrap_or(true);
                    if fresh {
                        continue;
                    }
                    let prefix = name.split('.').next().unwrap_or_default();
                    Digest::parse(&format!("{alg}:{prefix}")).ok()
                }
            };
            let st = lock(state);
            if st.holds > 0 {
                out.interrupted = true;
                return out;
            }
            if protect.is_some_and(|d| st.in_flight.contains_key(&d)) {
                out.kept_in_flight += 1;
                continue;
            }
            match std::fs::remove_file(file.path()) {
                Ok(()) => out.removed.push(format!("{alg}/{name}")),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => out
                    .errors
                    .push(format!("remove {}: {e}", file.path().display())),
            }
            drop(st);
        }
    }
    out
}
