//! Every message the engine's actors exchange. Messages carry references and decisions, never
//! blob bytes: bytes stream inside tokio tasks from a source response into a target upload.

use super::report::{ImageOutcome, RunReport, StepResult};
use super::{CopyError, Mode, StepCtx};
use crate::oci::Descriptor;
use crate::reference::Reference;
use crate::registry::{HostConfig, Permit};
use actix::Message;
use std::sync::Arc;

/// Scheduler ← caller: run these steps once in `mode` and report.
#[derive(Message)]
#[rtype(result = "RunReport")]
pub struct RunSteps {
    pub steps: Vec<Arc<StepCtx>>,
    pub mode: Mode,
}

/// TagLister ← Scheduler: list what a step names (catalog, tags) and hand every selected image
/// to the ManifestResolver as soon as its page arrives.
#[derive(Message)]
#[rtype(result = "StepResult")]
pub struct ListStep {
    pub step: Arc<StepCtx>,
    pub mode: Mode,
}

/// ManifestResolver ← TagLister: bring `target` up to date with `source`.
#[derive(Message)]
#[rtype(result = "ImageOutcome")]
pub struct SyncImage {
    pub step: Arc<StepCtx>,
    pub source: Reference,
    pub target: Reference,
    pub mode: Mode,
}

/// BlobMover ← ManifestResolver: make `desc` present in `target`'s repository. Answers once
/// the blob has landed (or failed), also when another image's task is the one uploading it.
#[derive(Message)]
#[rtype(result = "Result<BlobMoved, CopyError>")]
pub struct MoveBlob {
    pub step: Arc<StepCtx>,
    pub source: Reference,
    pub target: Reference,
    pub desc: Descriptor,
}

/// How a blob became present in the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobMoved {
    /// The target already had it.
    Present,
    /// Server-side cross-repository mount.
    Mounted,
    /// Streamed from the source.
    Copied { bytes: u64 },
    /// Another task was moving the same blob to the same repository; we waited for it.
    Joined,
}

/// BlobMover → itself: an in-flight move finished. On success `lender` names the target
/// registry key and the repository that now holds the blob.
#[derive(Message)]
#[rtype(result = "()")]
pub struct BlobSettled {
    pub key: String,
    pub lender: Option<(String, Reference)>,
}

/// RegistryThrottler ← HTTP layer: wait for a request slot on this host.
#[derive(Message)]
#[rtype(result = "Permit")]
pub struct AcquireSlot {
    pub host: HostConfig,
}
