//! BlobMover: makes a blob present in a target repository, once.
//!
//! It owns the in-flight table (`<target repo>@<digest>`): a second request for a blob
//! already moving into the same repository joins the first and hears back only when the blob
//! has *landed*, so a manifest is never pushed while one of its blobs is still uploading in
//! another image's task (the `MANIFEST_BLOB_UNKNOWN` race). An entry lives while its move
//! runs, whatever run asked for it.
//!
//! What landed belongs to the run that asked ([`super::run_scope::RunScope`], reached from the
//! message's step): blobs this run made (or found) present — asked again, the answer needs no
//! request, and no re-mount, which on distribution rewrites the link file under a concurrent
//! manifest PUT; lenders, a sibling repository on the same target registry where the blob
//! landed, to mount from instead of streaming it again; repositories that had no tags when the
//! run listed them. A later run trusts none of it. An OCI layout is always asked (a HEAD there
//! is a stat), because its GC may have deleted, earlier in the same run, a blob that landed
//! for an image that then failed or was overwritten.
//!
//! Request slots: a streamed copy needs a slot on the source host (GET) and one on the target
//! host (PUT) at once; the RegistryThrottler says in which order to take them
//! ([`StreamSlots`](super::throttler::StreamSlots)).

use super::messages::{BlobMoved, BlobSettled, MoveBlob};
use super::report::{Counter, Counters};
use super::run_scope::{object_key, ScopeKey};
use super::{CopyError, RunCtx};
use crate::oci::Descriptor;
use crate::reference::{Reference, Scheme};
use crate::store::BlobStream;
use actix::{Actor, AsyncContext, Context, Handler, ResponseFuture};
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

type Move = Shared<BoxFuture<'static, Result<BlobMoved, CopyError>>>;

/// How many times a failed blob stream is restarted from scratch (the registry layer already
/// resumes interrupted downloads; this covers failed uploads).
const BLOB_ATTEMPTS: u32 = 6;

pub struct BlobMover {
    run: Arc<RunCtx>,
    in_flight: HashMap<ScopeKey, Move>,
}

impl BlobMover {
    pub fn new(run: Arc<RunCtx>) -> Self {
        BlobMover {
            run,
            in_flight: HashMap::new(),
        }
    }
}

impl Actor for BlobMover {
    type Context = Context<Self>;
}

impl Handler<MoveBlob> for BlobMover {
    type Result = ResponseFuture<Result<BlobMoved, CopyError>>;

    fn handle(&mut self, msg: MoveBlob, ctx: &mut Context<Self>) -> Self::Result {
        let digest = msg.desc.digest.clone();
        let key = object_key(&msg.target, &digest);
        let scope = msg.step.scope.clone();
        let counters = msg.step.counters.clone();
        if msg.target.scheme == Scheme::Reg && scope.blob_landed(&key) {
            counters.bump(Counter::BlobsSkipped);
            return Box::pin(async { Ok(BlobMoved::Present) });
        }
        let target_repo = msg.target.repo_only();
        if let Some(existing) = self.in_flight.get(&key) {
            counters.bump(Counter::BlobsDeduped);
            let existing = existing.clone();
            return Box::pin(async move {
                let out = existing.await;
                if out.is_ok() {
                    scope.blob_landed_in(&target_repo, &digest);
                }
                out.map(|_| BlobMoved::Joined)
            });
        }
        // Mount from a sibling repository where the blob landed in this run, or from the
        // source when source and target share a registry (spec §6.3 step 4).
        let lender = match scope.lender(&msg.target, &digest) {
            Some(repo) => Some(repo),
            None if msg.source.same_registry(&msg.target) => Some(msg.source.repo_only()),
            None => None,
        };
        let known_absent = scope.is_empty_repo(&msg.target);
        let run = self.run.clone();
        let addr = ctx.address();
        // Started now and settled by itself: the move leaves the in-flight table when it
        // ends, also when every image waiting for it was dropped meanwhile.
        let task = tokio::spawn(async move {
            let out = move_blob(run, msg, lender, known_absent).await;
            if out.is_ok() {
                scope.blob_landed_in(&target_repo, &digest);
            }
            addr.do_send(BlobSettled { key });
            out
        });
        let mv: Move = async move {
            task.await
                .unwrap_or_else(|e| Err(CopyError::Invalid(format!("internal error: {e}"))))
        }
        .boxed()
        .shared();
        self.in_flight.insert(key, mv.clone());
        Box::pin(mv)
    }
}

impl Handler<BlobSettled> for BlobMover {
    type Result = ();

    fn handle(&mut self, msg: BlobSettled, _ctx: &mut Context<Self>) {
        self.in_flight.remove(&msg.key);
    }
}

/// HEAD the target; if absent mount from `lender`, else stream source → target with the
/// digest checked in flight.
async fn move_blob(
    run: Arc<RunCtx>,
    msg: MoveBlob,
    lender: Option<Reference>,
    known_absent: bool,
) -> Result<BlobMoved, CopyError> {
    let MoveBlob {
        step,
        source,
        target,
        desc,
    } = msg;
    let counters = &step.counters;
    let tgt_store = run.stores.for_ref(&target);
    let digest = &desc.digest;
    if source.same_repository(&target) {
        return Ok(BlobMoved::Present);
    }
    // In a repository that had no tags when the step began, a blob this run did not put
    // there is (almost always) absent: skip the HEAD. At worst an untagged leftover of an
    // interrupted run is uploaded again.
    let head = if known_absent {
        Ok(false)
    } else {
        tgt_store.blob_head(&target, digest).await
    };
    match head {
        Ok(true) => {
            counters.bump(Counter::BlobsSkipped);
            slog::debug!(run.log, "Blob copy skipped, already exists";
                "source" => %source, "target" => %target, "digest" => %digest);
            return Ok(BlobMoved::Present);
        }
        Ok(false) => {}
        Err(e) => {
            slog::debug!(run.log, "Blob HEAD failed, copying"; "target" => %target, "err" => %e)
        }
    }
    if let Some(from) = lender {
        match tgt_store.blob_mount(&target, &from, digest).await {
            Ok(true) => {
                counters.bump(Counter::BlobsMounted);
                slog::debug!(run.log, "Blob copy performed server side with registry mount";
                    "source" => %from, "target" => %target, "digest" => %digest);
                return Ok(BlobMoved::Mounted);
            }
            Ok(false) => {}
            Err(e) => slog::warn!(run.log, "Failed to mount blob";
                "source" => %from, "target" => %target, "digest" => %digest, "err" => %e),
        }
    }
    // A GET may be served by any of the source's mirrors: the slot order must hold for
    // whichever answers.
    let src_hosts = match source.scheme {
        Scheme::Reg => run.stores.registry.read_host_configs(&source.registry),
        Scheme::OciDir => Vec::new(),
    };
    let tgt_host = slot_host(&run, &target);
    let mut attempt = 0;
    loop {
        attempt += 1;
        if run.cancel.is_cancelled() {
            return Err(CopyError::Canceled);
        }
        let Some(slots) = run
            .throttle
            .stream_slots(&src_hosts, tgt_host.as_ref(), &run.cancel)
            .await
        else {
            return Err(CopyError::Canceled);
        };
        let e = match stream_once(&run, counters, &source, &target, &desc, slots.source_first).await
        {
            Ok(bytes) => {
                counters.bump(Counter::BlobsCopied);
                return Ok(BlobMoved::Copied { bytes });
            }
            // The registry layer has retried the source's GET and resumed its body already;
            // starting over would only multiply those retries for an object that keeps
            // failing (one broken blob must fail its image in seconds).
            Err(StreamFailure::Source(e)) => return Err(e),
            Err(StreamFailure::Target(e)) => e,
        };
        if attempt >= BLOB_ATTEMPTS || !e.is_transient() {
            return Err(e);
        }
        slog::warn!(run.log, "Failed to push blob";
            "source" => %source, "target" => %target, "digest" => %digest,
            "attempt" => attempt, "err" => %e);
        drop(slots);
        // This blob's own backoff (spec §7.3 schedule); the host's health is the throttler's.
        tokio::select! {
            _ = tokio::time::sleep(crate::registry::backoff(attempt - 1)) => {}
            _ = run.cancel.cancelled() => return Err(CopyError::Canceled),
        }
    }
}

/// The host whose request slots `r` uses; layouts have none.
fn slot_host(run: &RunCtx, r: &Reference) -> Option<crate::registry::HostConfig> {
    match r.scheme {
        Scheme::Reg => Some(run.stores.registry.host_config(&r.registry)),
        Scheme::OciDir => None,
    }
}

/// Which side of a blob stream failed.
enum StreamFailure {
    /// The download (its request retries and body resumes are spent).
    Source(CopyError),
    /// The upload (a streamed body cannot be sent twice: only a fresh stream can retry it).
    Target(CopyError),
}

async fn stream_once(
    run: &Arc<RunCtx>,
    counters: &Arc<Counters>,
    source: &Reference,
    target: &Reference,
    desc: &Descriptor,
    source_first: bool,
) -> Result<u64, StreamFailure> {
    let src_store = run.stores.for_ref(source);
    let tgt_store = run.stores.for_ref(target);
    let get_failed = |e| {
        StreamFailure::Source(CopyError::store(
            format!("failed to get blob {} from {source}", desc.digest),
            e,
        ))
    };
    let body = src_store.blob_get(source, desc).await.map_err(get_failed)?;
    let body = if source_first {
        // Start the GET (taking the source slot) before the upload takes a target slot.
        let mut body = body.peekable();
        if let Some(Err(e)) = std::pin::Pin::new(&mut body).peek().await {
            return Err(get_failed(e.clone()));
        }
        body.boxed()
    } else {
        body
    };
    // The download may start (and fail) inside the upload: remember its error, which is the
    // real story whatever the upload reports.
    let source_error: Arc<std::sync::Mutex<Option<crate::store::StoreError>>> = Arc::default();
    let seen = source_error.clone();
    let body = body
        .inspect(move |item| {
            if let Err(e) = item {
                seen.lock().unwrap().get_or_insert_with(|| e.clone());
            }
        })
        .boxed();
    let counted = Arc::new(AtomicU64::new(0));
    let body = counting(body, counted.clone(), counters.clone());
    let put = tgt_store.blob_put(target, desc, body).await;
    if let Some(e) = source_error.lock().unwrap().take() {
        return Err(get_failed(e));
    }
    put.map_err(|e| {
        StreamFailure::Target(CopyError::store(
            format!("failed to push blob {} to {target}", desc.digest),
            e,
        ))
    })?;
    Ok(counted.load(Ordering::Relaxed))
}

/// Count bytes as they pass (for the step's and the run's summary).
fn counting(body: BlobStream, seen: Arc<AtomicU64>, counters: Arc<Counters>) -> BlobStream {
    body.inspect(move |chunk| {
        if let Ok(c) = chunk {
            seen.fetch_add(c.len() as u64, Ordering::Relaxed);
            counters.add(Counter::BytesCopied, c.len() as u64);
        }
    })
    .boxed()
}

/// The copy algorithm's [`BlobSink`](crate::copy::BlobSink) for one step run: every blob
/// goes through the BlobMover, which de-duplicates moves into the same repository.
pub struct MoverSink {
    pub step: Arc<super::StepCtx>,
    pub mover: actix::Addr<BlobMover>,
}

#[async_trait::async_trait]
impl crate::copy::BlobSink for MoverSink {
    async fn make_present(
        &self,
        source: Reference,
        target: Reference,
        desc: Descriptor,
    ) -> Result<(), CopyError> {
        let msg = MoveBlob {
            step: self.step.clone(),
            source,
            target,
            desc,
        };
        match self.mover.send(msg).await {
            Ok(r) => r.map(|_| ()),
            Err(e) => Err(CopyError::Invalid(format!(
                "internal error: blob mover: {e}"
            ))),
        }
    }
}
