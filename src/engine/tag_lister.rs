//! TagLister: turns a step into image jobs (spec §5.1–5.3). Catalog and tag pages are filtered
//! as they arrive and each selected image goes to the ManifestResolver at once, so the first
//! copy starts while later pages are still being read.

use super::manifest_resolver::ManifestResolver;
use super::messages::{ListStep, SyncImage};
use super::report::{ImageOutcome, StepResult};
use super::{on_pool, Mode, StepCtx};
use crate::filter::{filter_repos, filter_tags};
use crate::reference::Reference;
use actix::{Actor, Addr, Context, Handler, ResponseFuture};
use futures::stream::{FuturesUnordered, StreamExt};
use std::sync::Arc;
use tokio::sync::mpsc;

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
        };
        Box::pin(on_pool(lister.run(), |e| StepResult { errors: vec![e] }))
    }
}

/// Image jobs of one step that are waiting for their outcome, bounded so a catalog of
/// thousands of tags keeps memory flat.
struct Pending {
    futs: FuturesUnordered<futures::future::BoxFuture<'static, ImageOutcome>>,
    limit: usize,
    errors: Vec<String>,
}

impl Pending {
    async fn push(&mut self, f: futures::future::BoxFuture<'static, ImageOutcome>) {
        while self.futs.len() >= self.limit {
            self.next().await;
        }
        self.futs.push(f);
    }

    async fn next(&mut self) {
        if let Some(ImageOutcome::Failed(e)) = self.futs.next().await {
            self.errors.push(e);
        }
    }

    async fn drain(&mut self) {
        while !self.futs.is_empty() {
            self.next().await;
        }
    }
}

struct StepLister {
    step: Arc<StepCtx>,
    mode: Mode,
    resolver: Addr<ManifestResolver>,
}

impl StepLister {
    fn log(&self) -> &slog::Logger {
        &self.step.run.log
    }

    async fn run(self) -> StepResult {
        let step = &self.step.step;
        // `check` is always sequential (spec §13.3); otherwise look ahead far enough to keep
        // `parallel` copies busy while lookups of later images run.
        let limit = if self.mode == Mode::Check {
            1
        } else {
            (self.step.run.parallel.max(1) as usize) * 4
        };
        let mut pending = Pending {
            futs: FuturesUnordered::new(),
            limit,
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
                    "{}: type {other:?} not recognized, must be one of: registry, repository, or image",
                    self.step.name()
                ))
            }
        };
        pending.drain().await;
        let mut errors = pending.errors;
        if let Err(e) = result {
            self.step.run.failed();
            errors.push(e);
        }
        StepResult { errors }
    }

    fn dispatch(
        &self,
        source: Reference,
        target: Reference,
    ) -> futures::future::BoxFuture<'static, ImageOutcome> {
        let msg = SyncImage {
            step: self.step.clone(),
            source,
            target,
            mode: self.mode,
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
        pending.push(self.dispatch(src, tgt)).await;
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
        let step = &self.step.step;
        let src_store = self.step.run.stores.for_ref(&src);
        let (tx, mut rx) = mpsc::channel::<Vec<String>>(4);
        let src_repo = src.repo_only();
        let listing = src_store.tag_list(&src_repo, tx);
        tokio::pin!(listing);
        let mut listing_done = false;
        let mut listing_result = Ok(());
        let mut selected_all: Vec<String> = Vec::new();
        let mut available = 0usize;
        // Missing mode needs the target's tags first and processes in sorted order.
        let existing = if self.mode == Mode::Missing {
            let mut t = self.target_tags(&tgt).await;
            t.sort();
            Some(t)
        } else {
            None
        };
        loop {
            let page = tokio::select! {
                r = &mut listing, if !listing_done => {
                    listing_done = true;
                    listing_result = r;
                    continue;
                }
                p = rx.recv() => p,
            };
            let Some(page) = page else { break };
            available += page.len();
            let selected = filter_tags(&step.tags, &step.tag_sets, &page).map_err(|e| {
                slog::error!(self.log(), "Failed processing tag filters";
                    "source" => %src, "allow" => format!("{:?}", step.tags.allow),
                    "deny" => format!("{:?}", step.tags.deny), "error" => %e);
                format!("{} source {source:?}: {e}", self.step.name())
            })?;
            if let Some(existing) = &existing {
                selected_all.extend(
                    selected
                        .into_iter()
                        .filter(|t| existing.binary_search(t).is_err()),
                );
                continue;
            }
            for tag in selected {
                selected_all.push(tag.clone());
                self.dispatch_tag(source, target, &tag, pending).await?;
            }
            if self.step.run.cancel.is_cancelled() {
                break;
            }
        }
        if !listing_done {
            listing_result = listing.await;
        }
        if let Err(e) = listing_result {
            slog::error!(self.log(), "Failed getting source tags"; "source" => %src, "error" => %e);
            return Err(format!(
                "{} source {source:?}: failed getting source tags: {e}",
                self.step.name()
            ));
        }
        if existing.is_some() {
            selected_all.sort();
            selected_all.dedup();
            for tag in &selected_all {
                self.dispatch_tag(source, target, tag, pending).await?;
            }
        }
        if selected_all.is_empty() && existing.is_none() {
            slog::warn!(self.log(), "No matching tags found";
                "source" => %src, "tags" => format!("{:?}", step.tags), "available" => available);
        }
        Ok(())
    }

    async fn dispatch_tag(
        &self,
        source: &str,
        target: &str,
        tag: &str,
        pending: &mut Pending,
    ) -> Result<(), String> {
        if self.step.run.cancel.is_cancelled() {
            return Ok(());
        }
        let src = self.parse("source", &format!("{source}:{tag}"))?;
        let tgt = self.parse("target", &format!("{target}:{tag}"))?;
        pending.push(self.dispatch(src, tgt)).await;
        Ok(())
    }

    async fn target_tags(&self, tgt: &Reference) -> Vec<String> {
        let (tx, mut rx) = mpsc::channel::<Vec<String>>(4);
        let store = self.step.run.stores.for_ref(tgt);
        let repo = tgt.repo_only();
        let collect = async {
            let mut all = Vec::new();
            while let Some(p) = rx.recv().await {
                all.extend(p);
            }
            all
        };
        let (res, all) = futures::join!(store.tag_list(&repo, tx), collect);
        if let Err(e) = res {
            slog::debug!(self.log(), "Failed getting target tags"; "target" => %tgt, "error" => %e);
            return Vec::new();
        }
        all
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
        let store = self.step.run.stores.for_ref(&host);
        let (tx, mut rx) = mpsc::channel::<Vec<String>>(4);
        let listing = store.catalog(&host, tx);
        tokio::pin!(listing);
        let mut listing_done = false;
        let mut listing_result = Ok(());
        let mut repo_errors = Vec::new();
        loop {
            let page = tokio::select! {
                r = &mut listing, if !listing_done => {
                    listing_done = true;
                    listing_result = r;
                    continue;
                }
                p = rx.recv() => p,
            };
            let Some(page) = page else { break };
            let repos = filter_repos(&step.repos, &page).map_err(|e| {
                slog::error!(self.log(), "Failed processing repo filters";
                    "source" => source, "allow" => format!("{:?}", step.repos.allow),
                    "deny" => format!("{:?}", step.repos.deny), "error" => %e);
                format!("{} source {source:?}: {e}", self.step.name())
            })?;
            for repo in repos {
                if self.step.run.cancel.is_cancelled() {
                    break;
                }
                let src = format!("{source}/{repo}");
                let tgt = format!("{}/{repo}", step.target);
                if let Err(e) = self.repository(&src, &tgt, pending).await {
                    repo_errors.push(e);
                }
            }
        }
        if !listing_done {
            listing_result = listing.await;
        }
        if let Err(e) = listing_result {
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
