//! TagLister: turns a step into image jobs (spec §5.1–5.3). Catalog and tag pages are filtered
//! as they arrive and each selected image goes to the ManifestResolver at once, so the first
//! copy starts while later pages are still being read.

use super::manifest_resolver::ManifestResolver;
use super::messages::{ListStep, SyncImage};
use super::report::{Counter, ImageOutcome, StepResult};
use super::{on_pool, Mode, StepCtx};
use crate::copy::prune::{prune_repository, PruneCtx, RefusedDeletes, SourceListing};
use crate::filter::{filter_repos, filter_tags};
use crate::reference::{Reference, Scheme};
use crate::store::{tag_list_all, StoreError};
use actix::{Actor, Addr, Context, Handler, ResponseFuture};
use futures::stream::{FuturesUnordered, StreamExt};
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use tokio::sync::mpsc;

/// A target tag listing longer than this is not kept to skip HEADs (the manifest HEADs are
/// sent as usual): what stays for the whole step run is bounded, whatever one repository
/// holds (the listing itself is read whole, as `--missing` always did).
const LISTED_TAGS_KEPT: usize = 10_000;

pub struct TagLister {
    resolver: Addr<ManifestResolver>,
}

impl TagLister {
    pub fn new(resolver: Addr<ManifestResolver>) -> Self {
        TagLister { resolver }
    }
}

impl Actor for TagLister {
    type Context = Context<Self>;
}

impl Handler<ListStep> for TagLister {
    type Result = ResponseFuture<StepResult>;

    fn handle(&mut self, msg: ListStep, _ctx: &mut Context<Self>) -> Self::Result {
        let lister = StepLister {
            step: msg.step,
            mode: msg.mode,
            resolver: self.resolver.clone(),
            slot: std::sync::Mutex::new(Some(msg.slot)),
            refused_deletes: RefusedDeletes::default(),
        };
        Box::pin(on_pool(lister.run(), |e| StepResult { errors: vec![e] }))
    }
}

/// Image jobs of one step that are waiting for their outcome, bounded so a catalog of
/// thousands of tags keeps memory flat: by `limit` for the step, and by one of the run's
/// `slots` each (every step of the run shares them), held until the image's outcome.
struct Pending {
    futs: FuturesUnordered<futures::future::BoxFuture<'static, ImageOutcome>>,
    limit: usize,
    slots: Arc<tokio::sync::Semaphore>,
    errors: Vec<String>,
}

impl Pending {
    async fn push(&mut self, f: futures::future::BoxFuture<'static, ImageOutcome>) {
        while self.futs.len() >= self.limit {
            self.next().await;
        }
        let slot = loop {
            // Our own images free slots too: wait for either.
            tokio::select! {
                slot = self.slots.clone().acquire_owned() => break slot.ok(),
                _ = self.next(), if !self.futs.is_empty() => {}
            }
        };
        // On a task of its own, so the slot comes back the moment the image is done, whatever
        // this lister is busy with (the next listing, pruning).
        let job = tokio::spawn(async move {
            let outcome = f.await;
            drop(slot);
            outcome
        });
        self.futs.push(Box::pin(async move {
            job.await
                .unwrap_or_else(|e| ImageOutcome::Failed(format!("internal error: image job: {e}")))
        }));
    }

    async fn next(&mut self) {
        if let Some(e) = self.futs.next().await.and_then(ImageOutcome::error_line) {
            self.errors.push(e);
        }
    }

    async fn drain(&mut self) {
        while !self.futs.is_empty() {
            self.next().await;
        }
    }
}

/// The pages of a listing running on its own task.
struct Pages {
    rx: mpsc::Receiver<Vec<String>>,
    task: tokio::task::JoinHandle<Result<(), StoreError>>,
}

impl Pages {
    async fn next(&mut self) -> Option<Vec<String>> {
        self.rx.recv().await
    }

    /// The listing's outcome. Closing our end first stops a listing we no longer read
    /// (abort, filter error) instead of leaving it blocked on a full channel.
    async fn finish(self) -> Result<(), StoreError> {
        drop(self.rx);
        self.task
            .await
            .unwrap_or_else(|e| Err(StoreError::Io(e.to_string())))
    }
}

#[derive(Clone, Copy)]
enum Listing {
    Tags,
    Catalog,
}

struct StepLister {
    step: Arc<StepCtx>,
    mode: Mode,
    resolver: Addr<ManifestResolver>,
    /// The run's step slot, given back once every image is dispatched: a long step waiting
    /// for its last images does not keep other steps from listing.
    slot: std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>,
    /// Registries that refused to delete during this step run (pruning).
    refused_deletes: RefusedDeletes,
}

impl StepLister {
    fn log(&self) -> &slog::Logger {
        &self.step.run.log
    }

    /// Lists the step and waits for its images. Counts for the progress display: the step run
    /// starts, its listing is done (every selected image counted), it ends.
    async fn run(self) -> StepResult {
        let counters = self.step.counters.clone();
        counters.bump(Counter::StepsStarted);
        let result = self.list_and_copy().await;
        counters.bump(Counter::StepsEnded);
        result
    }

    async fn list_and_copy(&self) -> StepResult {
        let step = &self.step.step;
        // `check` is always sequential (spec §13.3); otherwise look ahead far enough to keep
        // `parallel` copies busy while lookups of later images run.
        let limit = if self.mode == Mode::Check {
            1
        } else {
            self.step.run.parallel.look_ahead()
        };
        let mut pending = Pending {
            futs: FuturesUnordered::new(),
            limit,
            slots: self.step.run.image_slots.clone(),
            errors: Vec::new(),
        };
        let result = match step.kind.as_str() {
            "image" => self.image(&step.source, &step.target, &mut pending).await,
            "repository" => {
                self.repository(&step.source, &step.target, &mut pending)
                    .await
            }
            "registry" => self.registry(&mut pending).await,
            other => {
                slog::error!(self.log(), "Type not recognized, must be one of: registry, repository, or image";
                    "step" => self.step.index, "type" => other);
                Err(format!(
                    "{}: invalid input: type {other:?} not recognized, must be one of: registry, repository, or image",
                    self.step.name()
                ))
            }
        };
        self.step.counters.bump(Counter::StepsListed);
        if result.is_err() {
            // With --abort-on-error, stop the images still queued before waiting for them.
            self.step.run.failed();
        }
        drop(self.slot.lock().unwrap_or_else(|e| e.into_inner()).take());
        pending.drain().await;
        let mut errors = pending.errors;
        if let Err(e) = result {
            errors.push(e);
        }
        StepResult { errors }
    }

    /// One selected image, handed to the ManifestResolver.
    fn dispatch(
        &self,
        source: Reference,
        target: Reference,
        target_listed_absent: bool,
    ) -> futures::future::BoxFuture<'static, ImageOutcome> {
        self.step.counters.bump(Counter::ImagesSelected);
        let msg = SyncImage {
            step: self.step.clone(),
            source,
            target,
            mode: self.mode,
            target_listed_absent,
        };
        let resolver = self.resolver.clone();
        Box::pin(async move {
            match resolver.send(msg).await {
                Ok(o) => o,
                Err(e) => ImageOutcome::Failed(format!("internal error: resolver: {e}")),
            }
        })
    }

    fn parse(&self, what: &str, text: &str) -> Result<Reference, String> {
        Reference::parse(text).map_err(|e| {
            if what == "source" {
                slog::error!(self.log(), "Failed parsing source"; "source" => text, "error" => %e);
            } else {
                slog::error!(self.log(), "Failed parsing target"; "target" => text, "error" => %e);
            }
            format!("{} {what} {text:?}: {e}", self.step.name())
        })
    }

    async fn image(&self, source: &str, target: &str, pending: &mut Pending) -> Result<(), String> {
        let src = self.parse("source", source)?;
        let tgt = self.parse("target", target)?;
        if self.owned(&tgt) {
            pending.push(self.dispatch(src, tgt, false)).await;
        }
        Ok(())
    }

    /// Spec §5.3: list, filter, (missing: drop existing), one image job per tag.
    async fn repository(
        &self,
        source: &str,
        target: &str,
        pending: &mut Pending,
    ) -> Result<(), String> {
        let src = self.parse("source", source)?;
        let tgt = self.parse("target", target)?;
        // Another shard's repository: no tag listing, no manifest request.
        if !self.owned(&tgt) {
            return Ok(());
        }
        let step = &self.step.step;
        // The source listing runs on its own task while the target's is read.
        let mut pages = self.spawn_listing(src.repo_only(), Listing::Tags);
        // Missing mode needs the target's tags first and processes in sorted order. A copy
        // into a registry repository learns from them which tags are absent (no manifest
        // HEAD for those) and whether it has no tags yet (no blob HEADs either).
        let mut listed_tags: Option<HashSet<String>> = None;
        let existing = match self.mode {
            Mode::Missing => {
                let listed = self.target_tags(&tgt).await;
                self.note_if_empty(&tgt, &listed);
                // A failed listing copies every selected tag (regsync), but says nothing
                // about the repository being empty.
                let mut t = listed.unwrap_or_default();
                t.sort();
                Some(t)
            }
            Mode::Copy if tgt.scheme == Scheme::Reg => {
                let listed = self.target_tags(&tgt).await;
                self.note_if_empty(&tgt, &listed);
                // A failed listing proves nothing: every tag is asked about. Nor does a
                // listing that may be out of date when the old image matters: a `backup` of
                // it, or hooks given its digest (`.TargetDigest`).
                let hooks = &step.hooks;
                let old_image_matters = !step.backup.is_empty()
                    || hooks.pre.is_some()
                    || hooks.post.is_some()
                    || hooks.unchanged.is_some();
                listed_tags = listed_or_absent(listed)
                    .filter(|t| t.len() <= LISTED_TAGS_KEPT && !old_image_matters)
                    .map(|t| t.into_iter().collect());
                None
            }
            _ => None,
        };
        let mut available: Vec<String> = Vec::new();
        let mut selected_all: BTreeSet<String> = BTreeSet::new();
        let mut selected_any = false;
        let mut missing: Vec<String> = Vec::new();
        let mut failure = None;
        while let Some(page) = pages.next().await {
            let selected = match filter_tags(&step.tags, &step.tag_sets, &page) {
                Ok(s) => s,
                Err(e) => {
                    slog::error!(self.log(), "Failed processing tag filters";
                        "source" => %src, "allow" => format!("{:?}", step.tags.allow),
                        "deny" => format!("{:?}", step.tags.deny),
                        "semverRange" => format!("{:?}", step.tags.semver_range), "error" => %e);
                    failure = Some(format!("{} source {source:?}: {e}", self.step.name()));
                    break;
                }
            };
            available.extend(page);
            selected_any |= !selected.is_empty();
            if self.prunes() {
                selected_all.extend(selected.iter().cloned());
            }
            match &existing {
                Some(existing) => missing.extend(
                    selected
                        .into_iter()
                        .filter(|t| existing.binary_search(t).is_err()),
                ),
                None => {
                    for tag in selected {
                        let absent = listed_tags.as_ref().is_some_and(|l| !l.contains(&tag));
                        self.dispatch_tag(source, target, &tag, absent, pending)
                            .await;
                    }
                }
            }
            if self.step.run.cancel.is_cancelled() {
                break;
            }
        }
        let listed = pages.finish().await;
        if let Some(f) = failure {
            self.prune(&tgt, SourceListing::Failed(f.clone()), pending)
                .await;
            return Err(f);
        }
        if let Err(e) = listed {
            if self.step.run.cancel.is_cancelled() {
                return Ok(());
            }
            slog::error!(self.log(), "Failed getting source tags"; "source" => %src, "error" => %e);
            self.prune(&tgt, SourceListing::Failed(e.to_string()), pending)
                .await;
            return Err(format!(
                "{} source {source:?}: failed getting source tags: {e}",
                self.step.name()
            ));
        }
        // A listing stopped by the signal is incomplete: nothing is pruned from it.
        if !self.step.run.cancel.is_cancelled() {
            let available: BTreeSet<String> = available.iter().cloned().collect();
            let source = SourceListing::Complete {
                available: &available,
                selected: &selected_all,
            };
            self.prune(&tgt, source, pending).await;
        }
        if !selected_any {
            slog::warn!(self.log(), "No matching tags found";
                "source" => %src, "tags" => format!("{:?}", step.tags),
                "tagSets" => format!("{:?}", step.tag_sets),
                "available" => format!("[{}]", available.join(" ")));
            return Ok(());
        }
        missing.sort();
        missing.dedup();
        for tag in &missing {
            // Not in the (sorted) listing: absent when that listing succeeded.
            self.dispatch_tag(source, target, tag, false, pending).await;
        }
        Ok(())
    }

    /// Whether this run prunes the step's targets (README "Pruning"): `cleanupTags`, a state
    /// database, and `once`/`check` or a scheduled `server` run (never `--missing` or the
    /// server's first pass).
    fn prunes(&self) -> bool {
        self.step.flag(self.step.step.cleanup_tags)
            && self.step.run.state.is_some()
            && matches!(self.mode, Mode::Copy | Mode::Check)
    }

    /// Prunes the target repository `tgt` once its source listing ended
    /// ([`crate::copy::prune`]); error lines join the step's.
    async fn prune(&self, tgt: &Reference, source: SourceListing<'_>, pending: &mut Pending) {
        let Some(state) = self.step.run.state.as_ref().filter(|_| self.prunes()) else {
            return;
        };
        let name = self.step.name();
        let key = self.step.state_key();
        let ctx = PruneCtx {
            store: self.step.run.stores.for_ref(tgt),
            state,
            step: &self.step.step,
            name: &name,
            step_key: &key,
            counters: &self.step.counters,
            log: self.log(),
            dry_run: self.mode == Mode::Check,
            refused_deletes: &self.refused_deletes,
        };
        for e in prune_repository(&ctx, &tgt.repo_only(), source).await {
            self.step.run.failed();
            pending.errors.push(e);
        }
    }

    /// Whether this shard copies into `tgt`'s repository (`--shard`), counted either way.
    fn owned(&self, tgt: &Reference) -> bool {
        let shard = self.step.run.shard;
        let key = crate::shard::target_key(tgt);
        let owned = shard.owns(key);
        if owned {
            self.step.counters.bump(Counter::ReposOwned);
        } else {
            self.step.counters.bump(Counter::ReposOtherShards);
            slog::debug!(self.log(), "Repository belongs to another shard";
                "target" => key, "shard" => shard.to_string(),
                "owner" => crate::shard::owner(key, shard.count));
        }
        owned
    }

    /// List tags or repositories on a task of its own, so the listing never waits for us
    /// while holding one of the host's request slots (it waits only in the page channel).
    fn spawn_listing(&self, repo: Reference, what: Listing) -> Pages {
        let (tx, rx) = mpsc::channel::<Vec<String>>(4);
        let run = self.step.run.clone();
        let task = tokio::spawn(async move {
            let store = run.stores.for_ref(&repo);
            match what {
                Listing::Tags => store.tag_list(&repo, tx).await,
                Listing::Catalog => store.catalog(&repo, tx).await,
            }
        });
        Pages { rx, task }
    }

    /// One image job for `tag`. A tag no reference can name (a registry listing something
    /// distribution would refuse) fails alone, with its one error line: the repository's
    /// other tags still copy.
    async fn dispatch_tag(
        &self,
        source: &str,
        target: &str,
        tag: &str,
        target_listed_absent: bool,
        pending: &mut Pending,
    ) {
        if self.step.run.cancel.is_cancelled() {
            return;
        }
        let refs = self
            .parse("source", &format!("{source}:{tag}"))
            .and_then(|src| Ok((src, self.parse("target", &format!("{target}:{tag}"))?)));
        match refs {
            Ok((src, tgt)) => {
                pending
                    .push(self.dispatch(src, tgt, target_listed_absent))
                    .await
            }
            Err(e) => {
                self.step.run.failed();
                pending.errors.push(e);
            }
        }
    }

    /// The target repository's tags; a failure (e.g. the repository does not exist) is
    /// logged at debug and handed to the caller.
    async fn target_tags(&self, tgt: &Reference) -> Result<Vec<String>, StoreError> {
        let repo = tgt.repo_only();
        let listed = tag_list_all(self.step.run.stores.for_ref(&repo), &repo).await;
        if let Err(e) = &listed {
            slog::debug!(self.log(), "Failed getting target tags"; "target" => %tgt, "error" => %e);
        }
        listed
    }

    /// A registry repository that listed no tags (or does not exist) has no blob this run
    /// did not put there: its blob HEADs can be skipped, for this run only. A failed listing
    /// proves nothing.
    fn note_if_empty(&self, tgt: &Reference, listed: &Result<Vec<String>, StoreError>) {
        let empty = match listed {
            Ok(t) => t.is_empty(),
            Err(e) => e.is_not_found(),
        };
        if empty && tgt.scheme == Scheme::Reg {
            self.step.scope.mark_empty_repo(tgt);
        }
    }

    /// Spec §5.2: catalog pages → repo filter → one repository listing per repo.
    async fn registry(&self, pending: &mut Pending) -> Result<(), String> {
        let step = &self.step.step;
        let source = step.source.as_str();
        if source.chars().skip(1).any(|c| c == '/') || source.contains("://") {
            let e = format!("invalid hostname: {source}");
            slog::error!(self.log(), "Failed to list source repositories"; "source" => source, "error" => &e);
            return Err(format!("{} {e}", self.step.name()));
        }
        let host = self
            .parse("source", &format!("{source}/catalog-probe"))?
            .repo_only();
        let mut pages = self.spawn_listing(host, Listing::Catalog);
        let mut repo_errors = Vec::new();
        let mut failure = None;
        'pages: while let Some(page) = pages.next().await {
            let repos = match filter_repos(&step.repos, &page) {
                Ok(r) => r,
                Err(e) => {
                    slog::error!(self.log(), "Failed processing repo filters";
                        "source" => source, "allow" => format!("{:?}", step.repos.allow),
                        "deny" => format!("{:?}", step.repos.deny), "error" => %e);
                    failure = Some(format!("{} source {source:?}: {e}", self.step.name()));
                    break;
                }
            };
            for repo in repos {
                if self.step.run.cancel.is_cancelled() {
                    break 'pages;
                }
                let src = format!("{source}/{repo}");
                let tgt = format!("{}/{repo}", step.target);
                if let Err(e) = self.repository(&src, &tgt, pending).await {
                    // With --abort-on-error the first failing repository ends the step.
                    self.step.run.failed();
                    repo_errors.push(e);
                }
            }
        }
        let listed = pages.finish().await;
        if let Some(f) = failure {
            return Err(f);
        }
        if let Err(e) = listed {
            if self.step.run.cancel.is_cancelled() && !repo_errors.is_empty() {
                return Err(repo_errors.join("\n"));
            }
            slog::error!(self.log(), "Failed to list source repositories"; "source" => source, "error" => %e);
            // regsync reports only the catalog error here (spec §5.2).
            return Err(format!(
                "{} source {source:?}: failed to list source repositories: {e}",
                self.step.name()
            ));
        }
        if !repo_errors.is_empty() {
            return Err(repo_errors.join("\n"));
        }
        Ok(())
    }
}

/// The tags a target repository is known to hold: its listing, or none at all when the
/// repository does not exist (404: nothing there can match). Any other failure proves
/// nothing (`None`).
fn listed_or_absent(listed: Result<Vec<String>, StoreError>) -> Option<Vec<String>> {
    match listed {
        Ok(tags) => Some(tags),
        Err(e) if e.is_not_found() => Some(Vec::new()),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image that has finished gives its run-wide slot back at once, not when its lister
    /// next looks at its pending images (a lister busy listing or pruning would hold every
    /// other step's images back).
    #[tokio::test]
    async fn a_finished_image_frees_its_run_slot_without_its_lister_polling() {
        let slots = Arc::new(tokio::sync::Semaphore::new(2));
        let mut pending = Pending {
            futs: FuturesUnordered::new(),
            limit: 8,
            slots: slots.clone(),
            errors: Vec::new(),
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        pending
            .push(Box::pin(async move {
                let _ = rx.await;
                ImageOutcome::Matched
            }))
            .await;
        assert_eq!(slots.available_permits(), 1);
        tx.send(()).unwrap();
        // The lister does something else; the image's slot comes back meanwhile.
        let back = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while slots.available_permits() < 2 {
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(back.is_ok(), "the finished image still holds its slot");
        pending.drain().await;
    }
}
