//! The copy algorithm (spec §6), written once against [`Store`]: one image and everything
//! reachable from it — children, blobs, referrers, digest tags — with its seen table and its
//! deferred operations. It knows nothing of actors: the engine hands it the stores, a
//! [`BlobSink`] that makes blobs present, the run's tables, a logger, the run's cancellation
//! and the counters to bump ([`CopyEnv`]).
//!
//! Push order, in one place ([`Copier`]): every blob and child manifest a manifest references,
//! and its referrers and digest tags, have landed in the target before that manifest is
//! pushed; children and referrers are pushed by digest; the tag is written last. Loops
//! between manifests (an index that is a referrer of its own child, a digest tag that points
//! at its own manifest) are detected through the seen table and the chain of parents, and the
//! referrer or digest-tag copy that closed the loop runs again after the whole copy.

mod copier;
pub mod counters;
mod drive;
pub mod prune;
pub mod referrers;
pub mod run_scope;
mod seen;

pub use copier::Copier;
pub use counters::{CountSnapshot, Counter, Counters};
pub use referrers::CopyOpts;

use crate::filter::FilterError;
use crate::oci::{Descriptor, Digest};
use crate::reference::{Reference, ReferenceError};
use crate::store::{Store, StoreError};
use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error, Clone)]
pub enum CopyError {
    #[error("{what}: {source}")]
    Store {
        what: String,
        #[source]
        source: StoreError,
    },
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error("{0}")]
    Invalid(String),
    #[error("task was canceled")]
    Canceled,
}

impl CopyError {
    pub fn store(what: impl Into<String>, source: StoreError) -> Self {
        CopyError::Store {
            what: what.into(),
            source,
        }
    }

    /// Stopped by the run's cancellation, not by a failure of its own.
    pub fn is_canceled(&self) -> bool {
        matches!(
            self,
            CopyError::Canceled
                | CopyError::Store {
                    source: StoreError::Canceled,
                    ..
                }
        )
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, CopyError::Store { source, .. } if source.is_transient())
    }
}

/// The store a reference names (registry or OCI layout).
pub trait StoreFor: Send + Sync {
    fn store_for(&self, r: &Reference) -> &dyn Store;
}

/// "Make this blob present in that repository": how the copy moves bytes without knowing
/// who moves them (the engine's BlobMover de-duplicates and streams).
#[async_trait]
pub trait BlobSink: Send + Sync {
    /// Make `desc`, read from the repository `source`, present in the repository `target`.
    /// Answers once the blob has landed (or failed).
    async fn make_present(
        &self,
        source: Reference,
        target: Reference,
        desc: Descriptor,
    ) -> Result<(), CopyError>;
}

/// What one copy works with, all owned by the caller.
#[derive(Clone, Copy)]
pub struct CopyEnv<'a> {
    pub stores: &'a dyn StoreFor,
    pub blobs: &'a dyn BlobSink,
    /// What this run saw land in its targets.
    pub scope: &'a run_scope::RunScope,
    /// Manifest writes in flight, whatever run they belong to.
    pub manifest_writes: &'a run_scope::WriteLocks,
    /// The step run's counters (`manifests_pushed`).
    pub counters: &'a Counters,
    pub log: &'a slog::Logger,
    /// The run's cancellation: a copy stops when it fires, before its tag is pushed.
    pub cancel: &'a CancellationToken,
}

/// HEAD a manifest, or GET it where HEAD is disabled (`apiOpts.disableHead`, spec §3.3).
pub async fn head_or_get(
    store: &dyn Store,
    r: &Reference,
) -> Result<Option<Descriptor>, StoreError> {
    match store.manifest_head(r).await {
        Err(StoreError::Unsupported(_)) => {
            store.manifest_get(r).await.map(|m| Some(m.descriptor()))
        }
        other => other,
    }
}

/// `r` pinned to `d` for reading; tag and text (for logs) kept.
pub fn pinned(r: &Reference, d: &Digest) -> Reference {
    let mut p = r.clone();
    p.digest = Some(d.clone());
    p
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
