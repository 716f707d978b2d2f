//! BlobMover: makes a blob present in a target repository, once.
//!
//! It owns the in-flight table: a second request for the same digest into the same target
//! repository joins the first instead of uploading again, and only hears back when the blob has
//! *landed*. A manifest therefore never gets pushed while one of its blobs is still uploading in
//! another image's task (the `MANIFEST_BLOB_UNKNOWN` race). Blobs already landed in another
//! repository of the same target registry are mounted from there instead of re-streamed.

use super::messages::{BlobMoved, BlobSettled, MoveBlob};
use super::report::bump;
use super::{on_pool, CopyError, RunCtx};
use crate::oci::Descriptor;
use crate::reference::Reference;
use crate::store::BlobStream;
use actix::{Actor, AsyncContext, Context, Handler, ResponseFuture};
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::Semaphore;

type Move = Shared<BoxFuture<'static, Result<BlobMoved, CopyError>>>;

/// How many times a failed blob stream is restarted from scratch (the registry layer already
/// resumes interrupted downloads; this covers failed uploads).
const BLOB_ATTEMPTS: u32 = 3;

pub struct BlobMover {
    run: Arc<RunCtx>,
    /// `<target repo key>@<digest>` → the move in progress.
    in_flight: HashMap<String, Move>,
    /// `<target registry key>@<digest>` → a repository there that has it (or is getting it).
    known: HashMap<String, (Reference, Move)>,
    /// A stream from a registry into itself needs two request slots of the same host (GET
    /// inside the PUT). Letting one such stream run at a time keeps the host's slots from all
    /// being held by PUTs waiting for their GETs (deadlock) whenever `reqConcurrent` ≥ 2.
    same_registry_streams: Arc<Semaphore>,
}

impl BlobMover {
    pub fn new(run: Arc<RunCtx>) -> Self {
        BlobMover {
            run,
            in_flight: HashMap::new(),
            known: HashMap::new(),
            same_registry_streams: Arc::new(Semaphore::new(1)),
        }
    }
}

impl Actor for BlobMover {
    type Context = Context<Self>;
}

fn registry_key(r: &Reference) -> String {
    match r.scheme {
        crate::reference::Scheme::Reg => format!("reg:{}", r.registry),
        crate::reference::Scheme::OciDir => format!("ocidir:{}", r.path),
    }
}

impl Handler<MoveBlob> for BlobMover {
    type Result = ResponseFuture<Result<BlobMoved, CopyError>>;

    fn handle(&mut self, msg: MoveBlob, ctx: &mut Context<Self>) -> Self::Result {
        let digest = msg.desc.digest.clone();
        let key = format!("{}@{}", msg.target.repo_key(), digest);
        if let Some(existing) = self.in_flight.get(&key) {
            bump(&self.run.counters.blobs_deduped);
            let existing = existing.clone();
            return Box::pin(async move { existing.await.map(|_| BlobMoved::Joined) });
        }
        // A sibling repository on the same target registry that has (or is getting) the blob
        // can lend it by mount; the source repository can when source and target share a
        // registry (spec §6.3 step 4).
        let reg_key = format!("{}@{}", registry_key(&msg.target), digest);
        let lender = match self.known.get(&reg_key) {
            Some((repo, mv)) if repo.repo_key() != msg.target.repo_key() => {
                Some((repo.clone(), Some(mv.clone())))
            }
            _ if msg.source.same_registry(&msg.target) => Some((msg.source.repo_only(), None)),
            _ => None,
        };
        let target_repo = msg.target.repo_only();
        let run = self.run.clone();
        let same_registry_streams = self.same_registry_streams.clone();
        let job = async move {
            if let Some((_, Some(mv))) = &lender {
                // Wait for the lender's own upload; its outcome does not matter here.
                let _ = mv.clone().await;
            }
            let from = lender.map(|(r, _)| r);
            on_pool(move_blob(run, msg, from, same_registry_streams), |e| {
                Err(CopyError::Invalid(e))
            })
            .await
        };
        let mv: Move = job.boxed().shared();
        self.in_flight.insert(key.clone(), mv.clone());
        self.known
            .entry(reg_key)
            .or_insert_with(|| (target_repo, mv.clone()));
        let addr = ctx.address();
        Box::pin(async move {
            let out = mv.await;
            addr.do_send(BlobSettled { key });
            out
        })
    }
}

impl Handler<BlobSettled> for BlobMover {
    type Result = ();

    fn handle(&mut self, msg: BlobSettled, _ctx: &mut Context<Self>) {
        self.in_flight.remove(&msg.key);
    }
}

/// HEAD the target, else mount from `from`, else stream source → target with the digest
/// checked in flight.
async fn move_blob(
    run: Arc<RunCtx>,
    msg: MoveBlob,
    from: Option<Reference>,
    same_registry_streams: Arc<Semaphore>,
) -> Result<BlobMoved, CopyError> {
    let MoveBlob {
        source,
        target,
        desc,
        ..
    } = msg;
    let tgt_store = run.stores.for_ref(&target);
    let digest = &desc.digest;
    if source.same_repository(&target) {
        return Ok(BlobMoved::Present);
    }
    // A mount answers 201 whether or not the blob was there already, so with a lender it
    // replaces the HEAD (one request instead of two).
    if let Some(from) = from {
        match tgt_store.blob_mount(&target, &from, digest).await {
            Ok(true) => {
                bump(&run.counters.blobs_mounted);
                slog::debug!(run.log, "Blob copy performed server side with registry mount";
                    "source" => %from, "target" => %target, "digest" => %digest);
                return Ok(BlobMoved::Mounted);
            }
            Ok(false) => {}
            Err(e) => slog::warn!(run.log, "Failed to mount blob";
                "source" => %from, "target" => %target, "digest" => %digest, "err" => %e),
        }
    }
    match tgt_store.blob_head(&target, digest).await {
        Ok(true) => {
            bump(&run.counters.blobs_skipped);
            slog::debug!(run.log, "Blob copy skipped, already exists";
                "source" => %source, "target" => %target, "digest" => %digest);
            return Ok(BlobMoved::Present);
        }
        Ok(false) => {}
        Err(e) => {
            slog::debug!(run.log, "Blob HEAD failed, copying"; "target" => %target, "err" => %e)
        }
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        if run.cancel.is_cancelled() {
            return Err(CopyError::Canceled);
        }
        let _one_at_a_time = if source.same_registry(&target) {
            same_registry_streams.clone().acquire_owned().await.ok()
        } else {
            None
        };
        let result = stream_once(&run, &source, &target, &desc).await;
        match result {
            Ok(bytes) => {
                bump(&run.counters.blobs_copied);
                return Ok(BlobMoved::Copied { bytes });
            }
            Err(e) if attempt < BLOB_ATTEMPTS && e.is_transient() => {
                slog::warn!(run.log, "Failed to push blob, retrying";
                    "source" => %source, "target" => %target, "digest" => %digest,
                    "attempt" => attempt, "err" => %e);
            }
            Err(e) => return Err(e),
        }
    }
}

async fn stream_once(
    run: &Arc<RunCtx>,
    source: &Reference,
    target: &Reference,
    desc: &Descriptor,
) -> Result<u64, CopyError> {
    let src_store = run.stores.for_ref(source);
    let tgt_store = run.stores.for_ref(target);
    let body = src_store.blob_get(source, desc).await.map_err(|e| {
        CopyError::store(
            format!("failed to get blob {} from {source}", desc.digest),
            e,
        )
    })?;
    let counted = Arc::new(AtomicU64::new(0));
    let body = counting(body, counted.clone(), run.clone());
    tgt_store.blob_put(target, desc, body).await.map_err(|e| {
        CopyError::store(
            format!("failed to push blob {} to {target}", desc.digest),
            e,
        )
    })?;
    Ok(counted.load(Ordering::Relaxed))
}

/// Count bytes as they pass (for the run summary).
fn counting(body: BlobStream, seen: Arc<AtomicU64>, run: Arc<RunCtx>) -> BlobStream {
    body.inspect(move |chunk| {
        if let Ok(c) = chunk {
            seen.fetch_add(c.len() as u64, Ordering::Relaxed);
            run.counters
                .bytes_copied
                .fetch_add(c.len() as u64, Ordering::Relaxed);
        }
    })
    .boxed()
}
