//! Tag pruning (`cleanupTags`, README "Pruning"): the one place the rule lives.
//!
//! [`decide`] is the rule, a pure function tested on its own: a target tag is deleted when it
//! is no longer selected (gone from the source's complete listing, or excluded by the step's
//! filters) **and** the state database says this step wrote it **and** no
//! `cleanupTagsExclude` pattern matches it. It stops, deleting nothing, when the source listing
//! failed, listed no tags or selected none, or when the deletions would exceed
//! `cleanupTagsMaxPercent` of the step's managed tags in that repository.
//!
//! [`prune_repository`] carries a decision out against a [`Store`]: backup first when the
//! step has `backup`, then the store's tag delete, then the database (a record is dropped only
//! after the store confirmed the delete). `check` only names the tags.
//!
//! With `referrers`/`digestTags`, what the step copied along with a pruned image follows it
//! ([`Usage`]): its referrers and digest tags in the target, unless a tag that stays still
//! holds its digest.

use super::counters::{Counter, Counters};
use crate::config::SyncStep;
use crate::oci::{Descriptor, Digest};
use crate::reference::Reference;
use crate::state::{Deletion, StateHandle};
use crate::store::{fallback_tag, tag_list_all, Store, StoreError};
use fancy_regex::Regex;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use std::collections::{BTreeMap, BTreeSet};

/// Why a tag goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The source no longer lists it.
    GoneFromSource,
    /// The source lists it, the step's filters no longer select it.
    ExcludedByFilters,
}

impl Reason {
    pub fn text(self) -> &'static str {
        match self {
            Reason::GoneFromSource => "gone from the source",
            Reason::ExcludedByFilters => "excluded by the step's filters",
        }
    }
}

/// Why nothing is deleted in this repository this run (one WARN line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The source listing failed or was cut short.
    ListingFailed(String),
    /// The source listed no tags at all (an outage can look like this).
    NoSourceTags,
    /// The filters selected nothing (a filter typo can look like this).
    NothingSelected,
    /// The target could not be listed.
    TargetListingFailed(String),
    /// More than `max_percent` of the managed tags would go at once.
    TooMany {
        would: usize,
        managed: usize,
        max_percent: i64,
    },
}

impl Stop {
    pub fn text(&self) -> String {
        match self {
            Stop::ListingFailed(e) => format!("the source listing failed: {e}"),
            Stop::NoSourceTags => "the source listed no tags".into(),
            Stop::NothingSelected => "the step's filters selected no tag".into(),
            Stop::TargetListingFailed(e) => format!("the target listing failed: {e}"),
            Stop::TooMany {
                would,
                managed,
                max_percent,
            } => format!(
                "{would} of {managed} managed tags would be deleted, more than \
                 cleanupTagsMaxPercent ({max_percent}%)"
            ),
        }
    }
}

/// What the source listing gave.
pub enum SourceListing<'a> {
    Complete {
        /// Every tag the source listed.
        available: &'a BTreeSet<String>,
        /// Those the step's filters select.
        selected: &'a BTreeSet<String>,
    },
    Failed(String),
}

/// `cleanupTagsExclude`, compiled (anchored like every regsync pattern).
pub struct Excludes(Vec<Regex>);

impl Excludes {
    pub fn new(patterns: &[String]) -> Result<Excludes, String> {
        patterns
            .iter()
            .map(|p| {
                Regex::new(&format!("^{p}$"))
                    .map_err(|e| format!("cleanupTagsExclude: invalid pattern {p:?}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Excludes)
    }

    pub fn matches(&self, tag: &str) -> bool {
        // a pattern that errors while matching protects the tag
        self.0.iter().any(|re| re.is_match(tag).unwrap_or(true))
    }
}

/// The decision for one target repository.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Tags to delete, in tag order.
    pub delete: Vec<(String, Reason)>,
    /// Managed, no longer selected, but protected by an exclude.
    pub excluded: Vec<String>,
    /// In the target, not written by this step, not selected: never touched.
    pub unmanaged: Vec<String>,
    /// Records of tags the target no longer holds (dropped from the database).
    pub forget: Vec<String>,
}

/// A fallback referrers tag or a digest tag (`sha256-<hex>[.suffix]`): these follow their
/// subject and are not reported as unmanaged.
fn is_digest_tag(tag: &str) -> bool {
    let Some(rest) = tag.strip_prefix("sha256-") else {
        return false;
    };
    let hex: String = rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
    hex.len() == 64 && (rest.len() == 64 || rest[64..].starts_with('.'))
}

/// The pruning rule (see the module doc).
pub fn decide(
    source: SourceListing<'_>,
    target: Result<&[String], String>,
    managed: &BTreeSet<String>,
    excludes: &Excludes,
    max_percent: i64,
) -> Result<Plan, Stop> {
    let (available, selected) = match source {
        SourceListing::Failed(e) => return Err(Stop::ListingFailed(e)),
        SourceListing::Complete {
            available,
            selected,
        } => (available, selected),
    };
    if available.is_empty() {
        return Err(Stop::NoSourceTags);
    }
    if selected.is_empty() {
        return Err(Stop::NothingSelected);
    }
    let target = target.map_err(Stop::TargetListingFailed)?;
    let present: BTreeSet<&str> = target.iter().map(String::as_str).collect();
    let mut plan = Plan::default();
    let mut managed_present = 0usize;
    for tag in managed {
        if !present.contains(tag.as_str()) {
            plan.forget.push(tag.clone());
            continue;
        }
        managed_present += 1;
        if selected.contains(tag) {
            continue;
        }
        if excludes.matches(tag) {
            plan.excluded.push(tag.clone());
            continue;
        }
        let reason = if available.contains(tag) {
            Reason::ExcludedByFilters
        } else {
            Reason::GoneFromSource
        };
        plan.delete.push((tag.clone(), reason));
    }
    plan.unmanaged = target
        .iter()
        .filter(|t| !managed.contains(*t) && !selected.contains(*t) && !is_digest_tag(t))
        .cloned()
        .collect();
    plan.unmanaged.sort();
    let would = plan.delete.len();
    if would as i64 * 100 > max_percent * managed_present as i64 {
        return Err(Stop::TooMany {
            would,
            managed: managed_present,
            max_percent,
        });
    }
    Ok(plan)
}

/// What pruning one repository works with.
pub struct PruneCtx<'a> {
    pub store: &'a dyn Store,
    pub state: &'a StateHandle,
    pub step: &'a SyncStep,
    /// `sync[N]`, for error lines.
    pub name: &'a str,
    /// The step's key in the database ([`crate::state::step_key`]).
    pub step_key: &'a str,
    pub counters: &'a Counters,
    pub log: &'a slog::Logger,
    /// `check`: name the tags, delete nothing.
    pub dry_run: bool,
    /// The step run's registries that refused deletes so far.
    pub refused_deletes: &'a RefusedDeletes,
}

/// The registries (by host) that refused to delete during one step run: a registry with
/// deletes off refuses every repository, so once is enough to know, and to say. A `registry`
/// step over it gets one error line, and one probe, not one per repository.
#[derive(Default)]
pub struct RefusedDeletes(std::sync::Mutex<BTreeSet<String>>);

impl RefusedDeletes {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn knows(&self, target: &Reference) -> bool {
        self.lock().contains(&target.registry)
    }

    fn learn(&self, target: &Reference) {
        self.lock().insert(target.registry.clone());
    }
}

/// The database's name of a target repository: `registry/repo` or `ocidir://path`.
pub fn target_key(target: &Reference) -> String {
    target.repo_only().common_name()
}

/// Prunes the target repository `target` (no tag) after its source listing; returns error
/// lines (at most one for a registry that refuses deletes).
pub async fn prune_repository(
    ctx: &PruneCtx<'_>,
    target: &Reference,
    source: SourceListing<'_>,
) -> Vec<String> {
    let log = ctx.log;
    let key = target_key(target);
    let excludes = match Excludes::new(ctx.step.cleanup_tags_exclude.as_deref().unwrap_or_default())
    {
        Ok(e) => e,
        Err(e) => return vec![format!("{} target {key:?}: {e}", ctx.name)],
    };
    let max_percent = ctx
        .step
        .cleanup_tags_max_percent
        .unwrap_or(crate::config::DEFAULT_CLEANUP_MAX_PERCENT);
    let (step_key, repo) = (ctx.step_key.to_string(), key.clone());
    let records = match ctx
        .state
        .call(move |db| db.managed_tags(&step_key, &repo))
        .await
    {
        Ok(r) => r,
        Err(e) => return vec![format!("{} target {key:?}: {e}", ctx.name)],
    };
    let managed: BTreeSet<String> = records.iter().map(|r| r.tag.clone()).collect();
    let selected = match &source {
        SourceListing::Complete { selected, .. } => Some(*selected),
        SourceListing::Failed(_) => None,
    };
    let listed = match &source {
        SourceListing::Failed(_) => Ok(Vec::new()),
        SourceListing::Complete { .. } => tag_list_all(ctx.store, &target.repo_only())
            .await
            .or_else(|e| match e {
                StoreError::NotFound(_) => Ok(Vec::new()),
                e => Err(e.to_string()),
            }),
    };
    let plan = match decide(
        source,
        listed.as_deref().map_err(Clone::clone),
        &managed,
        &excludes,
        max_percent,
    ) {
        Ok(p) => p,
        Err(stop) if managed.is_empty() => {
            // nothing this step wrote is at stake
            slog::debug!(log, "Tag prune skipped";
                "step" => ctx.name, "target" => &key, "reason" => stop.text());
            return Vec::new();
        }
        Err(stop) => {
            slog::warn!(log, "Tag prune skipped";
                "step" => ctx.name, "target" => &key, "reason" => stop.text());
            return Vec::new();
        }
    };
    if !plan.unmanaged.is_empty() {
        slog::info!(log, "Unmanaged tags kept";
            "step" => ctx.name, "target" => &key, "tags" => plan.unmanaged.join(" "));
    }
    if !plan.forget.is_empty() && !ctx.dry_run {
        let (repo, gone) = (key.clone(), plan.forget.clone());
        if let Err(e) = ctx.state.call(move |db| db.forget_tags(&repo, &gone)).await {
            return vec![format!("{} target {key:?}: {e}", ctx.name)];
        }
    }
    let mut errors = Vec::new();
    if plan.delete.is_empty() {
        return errors;
    }
    if !ctx.dry_run && ctx.refused_deletes.knows(target) {
        // The step's error line said so at the first repository.
        slog::debug!(log, "Tag prune skipped"; "step" => ctx.name, "target" => &key,
            "reason" => "the registry refused deletes earlier in this step run");
        return errors;
    }
    if !ctx.dry_run {
        ctx.store.open(target).await;
    }
    // Referrers and digest tags follow their subject when the step copies them; which
    // digest every other tag holds decides whether a subject is still tagged.
    let mut usage = match Follow::of(ctx.step) {
        None => None,
        Some(follow) => {
            let present = listed.as_deref().unwrap_or_default();
            match Usage::read(ctx.store, target, present, follow, selected, &plan.delete).await {
                Ok(u) => Some(u),
                Err(e) => {
                    slog::warn!(log, "Referrers and digest tags kept";
                        "step" => ctx.name, "target" => &key,
                        "reason" => format!("the target's tags could not be read: {e}"));
                    None
                }
            }
        }
    };
    for (tag, reason) in &plan.delete {
        let tagged = target.with_tag(tag);
        // The target must still hold what this step wrote: a tag somebody pushed another
        // image over since is theirs now. It is kept, and its record forgotten.
        let written = records
            .iter()
            .find(|r| &r.tag == tag)
            .map(|r| r.target_digest.as_str());
        match ctx.store.manifest_head(&tagged).await {
            Ok(Some(d)) if Some(d.digest.as_str()) == written => {}
            Ok(held) => {
                slog::info!(log, "Tag overwritten by another writer, kept";
                    "step" => ctx.name, "target" => tagged.common_name(),
                    "digest" => held.map(|d| d.digest.as_str().to_string()).unwrap_or_default(),
                    "written" => written.unwrap_or_default());
                if !ctx.dry_run {
                    let (repo, gone) = (key.clone(), vec![tag.clone()]);
                    if let Err(e) = ctx.state.call(move |db| db.forget_tags(&repo, &gone)).await {
                        errors.push(format!("{} {}: {e}", ctx.name, tagged.common_name()));
                    }
                }
                continue;
            }
            Err(e) => {
                slog::error!(log, "Tag prune failed"; "target" => tagged.common_name(), "error" => %e);
                errors.push(format!(
                    "{} {}: reading the tag before pruning failed: {e}",
                    ctx.name,
                    tagged.common_name()
                ));
                if matches!(e, StoreError::Canceled) {
                    break;
                }
                continue;
            }
        }
        let digest = usage
            .as_ref()
            .and_then(|u| u.digests.get(tag))
            .map(|d| d.to_string())
            .or_else(|| {
                records
                    .iter()
                    .find(|r| &r.tag == tag)
                    .map(|r| r.target_digest.clone())
            })
            .unwrap_or_default();
        if ctx.dry_run {
            let followed = match usage.as_mut() {
                Some(u) => u.pruned(ctx, target, tag, &mut errors).await,
                None => Followed::default(),
            };
            slog::info!(log, "Tag prune needed";
                "step" => ctx.name, "target" => tagged.common_name(), "reason" => reason.text(),
                "digest_tags" => followed.digest_tags, "referrers" => followed.referrers);
            continue;
        }
        match backup(ctx, &tagged).await {
            Ok(Some(b)) if b.same_repository(target) => {
                // the backup tag now holds the image: its followers stay
                if let (Some(u), Some(b_tag), Ok(d)) =
                    (usage.as_mut(), b.tag.as_deref(), Digest::parse(&digest))
                {
                    u.digests.insert(b_tag.to_string(), d);
                }
            }
            Ok(_) => {}
            Err(e) => {
                slog::error!(log, "Tag prune failed"; "target" => tagged.common_name(), "error" => &e);
                errors.push(format!(
                    "{} {}: backup before pruning failed: {e}",
                    ctx.name,
                    tagged.common_name()
                ));
                continue;
            }
        }
        match ctx.store.tag_delete(&tagged).await {
            Ok(()) => {}
            Err(StoreError::Unsupported(why)) => {
                ctx.refused_deletes.learn(target);
                slog::error!(log, "Tag prune failed"; "target" => &key, "error" => &why);
                errors.push(format!("{} target {key:?}: cannot prune: {why}", ctx.name));
                break;
            }
            Err(e) => {
                slog::error!(log, "Tag prune failed";
                    "target" => tagged.common_name(), "error" => %e);
                errors.push(format!(
                    "{} {}: tag delete failed: {e}",
                    ctx.name,
                    tagged.common_name()
                ));
                if matches!(e, StoreError::Canceled) {
                    break;
                }
                continue;
            }
        }
        ctx.counters.bump(Counter::TagsPruned);
        let followed = match usage.as_mut() {
            Some(u) => u.pruned(ctx, target, tag, &mut errors).await,
            None => Followed::default(),
        };
        slog::info!(log, "Tag pruned";
            "step" => ctx.name, "target" => tagged.common_name(), "digest" => &digest,
            "reason" => reason.text(), "digest_tags" => followed.digest_tags,
            "referrers" => followed.referrers);
        let deletion = Deletion {
            at: crate::state::now(),
            step: ctx.step_key.to_string(),
            target: key.clone(),
            tag: tag.clone(),
            digest,
            reason: reason.text().to_string(),
        };
        if let Err(e) = ctx
            .state
            .call(move |db| db.record_deletion(&deletion))
            .await
        {
            errors.push(format!("{} {}: {e}", ctx.name, tagged.common_name()));
        }
    }
    if !ctx.dry_run {
        if let Err(e) = ctx.store.close(target).await {
            slog::error!(log, "Error closing ref"; "ref" => &key, "error" => %e);
        }
    }
    errors
}

/// Which followers of a pruned image the step copies (`digestTags`, `referrers`); `None`
/// when it copies neither.
#[derive(Clone, Copy, Debug)]
struct Follow {
    digest_tags: bool,
    referrers: bool,
}

impl Follow {
    fn of(step: &SyncStep) -> Option<Follow> {
        let f = Follow {
            digest_tags: step.digest_tags.unwrap_or(false),
            // referrers pushed into another repository (`referrerTarget`) are not followed
            referrers: step.referrers.unwrap_or(false) && step.referrer_target.is_empty(),
        };
        (f.digest_tags || f.referrers).then_some(f)
    }
}

/// What followed one pruned tag.
#[derive(Clone, Copy, Debug, Default)]
struct Followed {
    digest_tags: usize,
    referrers: usize,
}

/// How deep referrers of referrers are followed.
const FOLLOW_DEPTH: usize = 4;

/// The target repository's tags and the digest each holds, read once per pruning (a HEAD per
/// tag, only when a tag goes and the step copies followers); tags deleted since are `gone`.
struct Usage {
    follow: Follow,
    digests: BTreeMap<String, Digest>,
    gone: BTreeSet<String>,
    /// The step's selected tags (copied as tags of their own) and the tags the rule deletes:
    /// never followers.
    own: BTreeSet<String>,
}

impl Usage {
    async fn read(
        store: &dyn Store,
        target: &Reference,
        present: &[String],
        follow: Follow,
        selected: Option<&BTreeSet<String>>,
        planned: &[(String, Reason)],
    ) -> Result<Usage, StoreError> {
        type Head<'h> = BoxFuture<'h, (String, Result<Option<Descriptor>, StoreError>)>;
        let mut asks: Vec<Head<'_>> = Vec::with_capacity(present.len());
        for t in present {
            let (tag, r) = (t.clone(), target.with_tag(t));
            asks.push(async move { (tag, store.manifest_head(&r).await) }.boxed());
        }
        let heads: Vec<_> = futures::stream::iter(asks)
            .buffer_unordered(8)
            .collect()
            .await;
        let mut digests = BTreeMap::new();
        for (tag, head) in heads {
            if let Some(d) = head? {
                digests.insert(tag, d.digest);
            }
        }
        Ok(Usage {
            follow,
            digests,
            gone: BTreeSet::new(),
            own: selected
                .into_iter()
                .flatten()
                .cloned()
                .chain(planned.iter().map(|(t, _)| t.clone()))
                .collect(),
        })
    }

    /// Tags still in the target, other than `except`, that hold `d`.
    fn tagged(&self, d: &Digest, except: &BTreeSet<String>) -> Vec<&str> {
        self.digests
            .iter()
            .filter(|(t, have)| *have == d && !self.gone.contains(*t) && !except.contains(*t))
            .map(|(t, _)| t.as_str())
            .collect()
    }

    /// The digest tags of `d` in the target (`<alg>-<hex>` and anything after it, as
    /// `digestTags` copies them) that the step does not select as tags of their own.
    fn digest_tags_of(&self, d: &Digest) -> BTreeSet<String> {
        let prefix = format!("{}-{}", d.algorithm(), d.hex());
        self.digests
            .keys()
            .filter(|t| t.starts_with(&prefix) && !self.gone.contains(*t))
            .filter(|t| !self.own.contains(*t))
            .cloned()
            .collect()
    }

    /// `tag` was deleted (or would be, under `check`): when no other tag holds its image any
    /// more, its followers go too.
    async fn pruned(
        &mut self,
        ctx: &PruneCtx<'_>,
        target: &Reference,
        tag: &str,
        errors: &mut Vec<String>,
    ) -> Followed {
        self.gone.insert(tag.to_string());
        let mut out = Followed::default();
        let Some(d) = self.digests.get(tag).cloned() else {
            return out;
        };
        let subject = target.with_tag(tag).common_name();
        let none = BTreeSet::new();
        self.follow(ctx, target, d, &subject, &none, 0, &mut out, errors)
            .await;
        out
    }

    /// Deletes the followers of `d` unless a tag that stays (other than `going`, the digest
    /// tags about to follow `d`'s own subject) still holds `d`; referrers of referrers first,
    /// then the referrer, then the digest tags.
    #[allow(clippy::too_many_arguments)]
    fn follow<'s>(
        &'s mut self,
        ctx: &'s PruneCtx<'_>,
        target: &'s Reference,
        d: Digest,
        subject: &'s str,
        outer: &'s BTreeSet<String>,
        depth: usize,
        out: &'s mut Followed,
        errors: &'s mut Vec<String>,
    ) -> BoxFuture<'s, ()> {
        async move {
            let log = ctx.log;
            let mut going = if self.follow.digest_tags {
                self.digest_tags_of(&d)
            } else {
                BTreeSet::new()
            };
            let fallback = fallback_tag(&d);
            let mut except: BTreeSet<String> = going.union(outer).cloned().collect();
            if self.follow.referrers {
                except.insert(fallback.clone());
            }
            let holders = self.tagged(&d, &except);
            if !holders.is_empty() {
                slog::debug!(log, "Referrers and digest tags kept";
                    "step" => ctx.name, "subject" => subject, "digest" => %d,
                    "tagged" => holders.join(" "));
                return;
            }
            if self.follow.referrers {
                let listing = match ctx.store.referrers(&target.repo_only(), &d).await {
                    Ok(l) => l,
                    Err(e) => {
                        slog::error!(log, "Tag prune failed";
                            "target" => target.with_digest(&d).common_name(), "error" => %e);
                        errors.push(format!(
                            "{} {}: listing the referrers of {d} failed: {e}",
                            ctx.name, subject
                        ));
                        return;
                    }
                };
                for t in &listing.tags {
                    if self.digests.contains_key(t)
                        && !self.gone.contains(t)
                        && !self.own.contains(t)
                    {
                        going.insert(t.clone());
                    }
                }
                let around: BTreeSet<String> = going.union(outer).cloned().collect();
                for r in listing.descriptors {
                    let r = r.digest;
                    let holders = self.tagged(&r, &around);
                    if !holders.is_empty() {
                        slog::debug!(log, "Referrer kept";
                            "step" => ctx.name, "digest" => %r, "tagged" => holders.join(" "));
                        continue;
                    }
                    if depth + 1 < FOLLOW_DEPTH {
                        self.follow(
                            ctx,
                            target,
                            r.clone(),
                            subject,
                            &around,
                            depth + 1,
                            out,
                            errors,
                        )
                        .await;
                    }
                    let at = target.with_digest(&r);
                    if ctx.dry_run {
                        slog::info!(log, "Referrer prune needed";
                            "step" => ctx.name, "target" => at.common_name(), "subject" => subject);
                        out.referrers += 1;
                        continue;
                    }
                    match ctx.store.manifest_delete(&at).await {
                        Ok(()) => {
                            out.referrers += 1;
                            slog::info!(log, "Referrer pruned";
                                "step" => ctx.name, "target" => at.common_name(),
                                "subject" => subject);
                            record(ctx, target, &format!("@{r}"), &r, subject, errors).await;
                        }
                        Err(e) => {
                            slog::error!(log, "Tag prune failed";
                                "target" => at.common_name(), "error" => %e);
                            errors.push(format!(
                                "{} {}: referrer delete failed: {e}",
                                ctx.name,
                                at.common_name()
                            ));
                            if matches!(e, StoreError::Unsupported(_) | StoreError::Canceled) {
                                return;
                            }
                        }
                    }
                }
            }
            for t in going {
                let tagged = target.with_tag(&t);
                let held = self.digests.get(&t).cloned();
                if ctx.dry_run {
                    slog::info!(log, "Digest tag prune needed";
                        "step" => ctx.name, "target" => tagged.common_name(), "subject" => subject);
                    self.gone.insert(t);
                    out.digest_tags += 1;
                    continue;
                }
                match ctx.store.tag_delete(&tagged).await {
                    Ok(()) => {
                        out.digest_tags += 1;
                        slog::info!(log, "Digest tag pruned";
                            "step" => ctx.name, "target" => tagged.common_name(),
                            "subject" => subject);
                        if let Some(h) = &held {
                            record(ctx, target, &t, h, subject, errors).await;
                        }
                        self.gone.insert(t);
                    }
                    Err(e) => {
                        slog::error!(log, "Tag prune failed";
                            "target" => tagged.common_name(), "error" => %e);
                        errors.push(format!(
                            "{} {}: digest tag delete failed: {e}",
                            ctx.name,
                            tagged.common_name()
                        ));
                        if matches!(e, StoreError::Unsupported(_) | StoreError::Canceled) {
                            return;
                        }
                    }
                }
            }
        }
        .boxed()
    }
}

/// A follower's deletion on record (`tag` is `@<digest>` for a referrer).
async fn record(
    ctx: &PruneCtx<'_>,
    target: &Reference,
    tag: &str,
    digest: &Digest,
    subject: &str,
    errors: &mut Vec<String>,
) {
    let deletion = Deletion {
        at: crate::state::now(),
        step: ctx.step_key.to_string(),
        target: target_key(target),
        tag: tag.to_string(),
        digest: digest.to_string(),
        reason: format!("follows its subject {subject}"),
    };
    if let Err(e) = ctx
        .state
        .call(move |db| db.record_deletion(&deletion))
        .await
    {
        errors.push(format!("{} {subject}: {e}", ctx.name));
    }
}

/// `backup` set: the tag about to go is kept under the backup name first (returned). The
/// backup is written into the same store from the manifest the target holds (its blobs and
/// children are there already), so a backup name in another repository needs that
/// repository to hold them.
async fn backup(ctx: &PruneCtx<'_>, tagged: &Reference) -> Result<Option<Reference>, String> {
    let step = ctx.step;
    if step.backup.is_empty() {
        return Ok(None);
    }
    let text = crate::config::render_backup(&step.backup, tagged, step)
        .map_err(|e| format!("failed to expand backup template {:?}: {e}", step.backup))?;
    let backup = if text.contains(':') || text.contains('/') {
        Reference::parse(&text).map_err(|e| e.to_string())?
    } else if text.is_empty() {
        return Err("the backup template expanded to an empty tag".into());
    } else {
        tagged.with_tag(&text)
    };
    let m = ctx
        .store
        .manifest_get(tagged)
        .await
        .map_err(|e| e.to_string())?;
    slog::info!(ctx.log, "Saving backup";
        "original" => tagged.common_name(), "backup" => backup.common_name());
    ctx.store
        .manifest_put(&backup, &m, false)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Some(backup))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn tags(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn default_excludes() -> Excludes {
        Excludes::new(
            &crate::config::DEFAULT_CLEANUP_EXCLUDE
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .unwrap()
    }

    fn run(
        available: &[&str],
        selected: &[&str],
        target: &[&str],
        managed: &[&str],
        max: i64,
    ) -> Result<Plan, Stop> {
        let (a, s) = (set(available), set(selected));
        let t = tags(target);
        decide(
            SourceListing::Complete {
                available: &a,
                selected: &s,
            },
            Ok(&t),
            &set(managed),
            &default_excludes(),
            max,
        )
    }

    #[test]
    fn only_managed_unselected_tags_go_with_their_reason() {
        let plan = run(
            &["v1", "v2", "v3"],
            &["v1", "v2"],
            &["v1", "v2", "v3", "v4", "mine"],
            &["v1", "v2", "v3", "v4"],
            100,
        )
        .unwrap();
        assert_eq!(
            plan.delete,
            [
                ("v3".to_string(), Reason::ExcludedByFilters),
                ("v4".to_string(), Reason::GoneFromSource)
            ]
        );
        assert_eq!(plan.unmanaged, ["mine"]);
        assert!(plan.excluded.is_empty() && plan.forget.is_empty());
    }

    #[test]
    fn excludes_protect_and_records_of_absent_tags_are_forgotten() {
        let plan = run(
            &["v1"],
            &["v1"],
            &[
                "v1",
                "v2.sig",
                "v3.sbom",
                "sha256-0000000000000000000000000000000000000000000000000000000000000000.att",
            ],
            &["v1", "v2.sig", "v3.sbom", "gone"],
            100,
        )
        .unwrap();
        assert!(plan.delete.is_empty(), "{plan:?}");
        assert_eq!(plan.excluded, ["v2.sig", "v3.sbom"]);
        assert_eq!(plan.forget, ["gone"]);
        assert!(plan.unmanaged.is_empty(), "digest tags are not unmanaged");
    }

    #[test]
    fn the_percentage_counts_managed_tags_present() {
        // 1 of 4 = 25%: allowed at 25
        assert_eq!(
            run(
                &["a", "b", "c"],
                &["a", "b", "c"],
                &["a", "b", "c", "d"],
                &["a", "b", "c", "d"],
                25
            )
            .unwrap()
            .delete
            .len(),
            1
        );
        // 2 of 4 = 50%: stopped
        assert_eq!(
            run(
                &["a", "b"],
                &["a", "b"],
                &["a", "b", "c", "d"],
                &["a", "b", "c", "d"],
                25
            ),
            Err(Stop::TooMany {
                would: 2,
                managed: 4,
                max_percent: 25
            })
        );
        // 0% allows nothing; unmanaged tags do not dilute the share
        assert!(run(&["a"], &["a"], &["a", "b", "x", "y", "z"], &["a", "b"], 0).is_err());
        assert!(run(&["a"], &["a"], &["a", "b", "x", "y", "z"], &["a", "b"], 49).is_err());
    }

    #[test]
    fn empty_or_failed_listings_stop() {
        let empty = BTreeSet::new();
        let t = tags(&["a"]);
        let managed = set(&["a"]);
        let ex = default_excludes();
        assert_eq!(
            decide(
                SourceListing::Failed("http 500".into()),
                Ok(&t),
                &managed,
                &ex,
                100
            ),
            Err(Stop::ListingFailed("http 500".into()))
        );
        assert_eq!(
            decide(
                SourceListing::Complete {
                    available: &empty,
                    selected: &empty
                },
                Ok(&t),
                &managed,
                &ex,
                100
            ),
            Err(Stop::NoSourceTags)
        );
        assert_eq!(
            run(&["b"], &[], &["a"], &["a"], 100),
            Err(Stop::NothingSelected)
        );
        let (a, s) = (set(&["b"]), set(&["b"]));
        assert!(matches!(
            decide(
                SourceListing::Complete {
                    available: &a,
                    selected: &s
                },
                Err("401".into()),
                &managed,
                &ex,
                100
            ),
            Err(Stop::TargetListingFailed(_))
        ));
    }

    #[test]
    fn followers_are_the_digest_tags_of_an_image_no_other_tag_holds() {
        let d = Digest::sha256_of(b"pruned");
        let other = Digest::sha256_of(b"other");
        let hex = d.hex().to_string();
        let mut digests = BTreeMap::new();
        for (t, dig) in [
            ("v4", &d),
            ("mine", &d),
            ("v1", &other),
            (&*format!("sha256-{hex}"), &other),
            (&*format!("sha256-{hex}.sig"), &other),
            (&*format!("sha256-{hex}.att"), &other),
            (&*format!("sha256-{}.sig", other.hex()), &other),
        ] {
            digests.insert(t.to_string(), dig.clone());
        }
        let mut u = Usage {
            follow: Follow {
                digest_tags: true,
                referrers: true,
            },
            digests,
            gone: BTreeSet::new(),
            own: set(&[&format!("sha256-{hex}.att")]),
        };
        // a digest tag the step selects is its own tag, not a follower
        assert_eq!(
            u.digest_tags_of(&d),
            set(&[&format!("sha256-{hex}"), &format!("sha256-{hex}.sig")])
        );
        u.gone.insert("v4".into());
        assert_eq!(u.tagged(&d, &BTreeSet::new()), ["mine"]);
        u.gone.insert("mine".into());
        assert!(u.tagged(&d, &BTreeSet::new()).is_empty());
        // tags about to follow are not holders
        let going = set(&["v1", &format!("sha256-{hex}")]);
        assert_eq!(
            u.tagged(&other, &going),
            [
                format!("sha256-{hex}.att"),
                format!("sha256-{hex}.sig"),
                format!("sha256-{}.sig", other.hex())
            ]
        );
    }

    #[test]
    fn nothing_managed_nothing_deleted() {
        let plan = run(&["a"], &["a"], &["a", "b", "c"], &[], 0).unwrap();
        assert!(plan.delete.is_empty());
        assert_eq!(plan.unmanaged, ["b", "c"]);
    }
}
