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

use super::counters::{Counter, Counters};
use crate::config::SyncStep;
use crate::reference::Reference;
use crate::state::{Deletion, StateHandle};
use crate::store::{tag_list_all, Store, StoreError};
use fancy_regex::Regex;
use std::collections::BTreeSet;

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
    if !ctx.dry_run {
        ctx.store.open(target).await;
    }
    for (tag, reason) in &plan.delete {
        let tagged = target.with_tag(tag);
        let digest = records
            .iter()
            .find(|r| &r.tag == tag)
            .map(|r| r.target_digest.clone())
            .unwrap_or_default();
        if ctx.dry_run {
            slog::info!(log, "Tag prune needed";
                "step" => ctx.name, "target" => tagged.common_name(), "reason" => reason.text());
            continue;
        }
        if let Err(e) = backup(ctx, &tagged).await {
            slog::error!(log, "Tag prune failed"; "target" => tagged.common_name(), "error" => &e);
            errors.push(format!(
                "{} {}: backup before pruning failed: {e}",
                ctx.name,
                tagged.common_name()
            ));
            continue;
        }
        match ctx.store.tag_delete(&tagged).await {
            Ok(()) => {}
            Err(StoreError::Unsupported(why)) => {
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
        slog::info!(log, "Tag pruned";
            "step" => ctx.name, "target" => tagged.common_name(), "digest" => &digest,
            "reason" => reason.text());
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

/// `backup` set: the tag about to go is kept under the backup name first. The backup is
/// written into the same store from the manifest the target holds (its blobs and children are
/// there already), so a backup name in another repository needs that repository to hold them.
async fn backup(ctx: &PruneCtx<'_>, tagged: &Reference) -> Result<(), String> {
    let step = ctx.step;
    if step.backup.is_empty() {
        return Ok(());
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
        .map_err(|e| e.to_string())
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
    fn nothing_managed_nothing_deleted() {
        let plan = run(&["a"], &["a"], &["a", "b", "c"], &[], 0).unwrap();
        assert!(plan.delete.is_empty());
        assert_eq!(plan.unmanaged, ["b", "c"]);
    }
}
