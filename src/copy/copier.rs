//! One image copy (spec §6): the recursive walk, the deferral of loops, the push order and
//! the referrers index upkeep. See the module text of [`super`] for the push order.

use super::drive::{check_now, drive, wait_all, Task};
use super::referrers::{digest_tags, index_entry, select_referrers, CopyOpts};
use super::run_scope::object_key;
use super::seen::{Fail, Seen, SeenGuard};
use super::{head_or_get, lock, pinned, CopyEnv, CopyError, Counter};
use crate::oci::{media, Descriptor, Digest, Manifest};
use crate::platform::Platform;
use crate::reference::{Reference, Scheme};
use crate::store::{fallback_merge, fallback_subject, tag_list_all, StoreError};
use futures::future::FutureExt;
use futures::stream::FuturesUnordered;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex as StdMutex};
use tokio::sync::{watch, OnceCell};

/// A manifest PUT refused over a reference that is present (distribution's link-file race,
/// see [`super::run_scope`]) is tried this many times in all, waiting a little longer each time.
const RACE_ATTEMPTS: u32 = 4;
const RACE_BACKOFF: std::time::Duration = std::time::Duration::from_millis(200);

/// distribution's answers when a manifest PUT reads a link file that a concurrent write of
/// the same object is rewriting: an empty link (`DIGEST_INVALID`) or none yet
/// (`MANIFEST_BLOB_UNKNOWN`).
fn is_link_race(e: &StoreError) -> bool {
    const CODES: [&str; 2] = ["DIGEST_INVALID", "MANIFEST_BLOB_UNKNOWN"];
    match e {
        StoreError::HttpStatus { status: 400, text } => CODES.iter().any(|c| text.ends_with(c)),
        StoreError::NotFound(Some(code)) => CODES.contains(&code.as_str()),
        _ => false,
    }
}

/// Deferred operations run after a copy are bounded (each normally finds its work done).
const MAX_DEFERRED: usize = 10_000;

/// What a manifest is to the copy.
#[derive(Clone, Debug)]
enum Role {
    /// The image itself (pushed by tag).
    Top,
    /// A child of an index (pushed by digest).
    Child,
    /// A referrer of `subject`, as listed (pushed by digest).
    Referrer {
        listed: Box<Descriptor>,
        subject: Digest,
    },
    /// A digest tag (pushed by tag).
    DigestTag,
}

impl Role {
    fn is_child(&self) -> bool {
        matches!(self, Role::Child | Role::Referrer { .. })
    }
}

/// A repository's tags, listed at most once per copy.
type TagList = Arc<OnceCell<Arc<Vec<String>>>>;

/// A referrer or digest-tag copy that ran into a loop, retried after the whole copy with no
/// parents (spec §6.2 steps 9–10).
struct Deferred {
    src: Reference,
    tgt: Reference,
    desc: Option<Descriptor>,
    role: Role,
}

tokio::task_local! {
    /// Set while a referrer or digest-tag copy (and everything below it) runs.
    static VIA_RELATED: bool;
}

/// One image copy (spec §6): a top-level reference and everything reachable from it, with its
/// seen table, deferred operations and cached tag lists.
///
/// Push order: blobs before their manifest; children before their index; referrers and digest
/// tags of a manifest before the manifest; the top-level tag last. Child manifests, blobs,
/// referrers and digest tags of one manifest are copied concurrently.
pub struct Copier<'a> {
    env: CopyEnv<'a>,
    opts: CopyOpts,
    seen: StdMutex<HashMap<String, Seen>>,
    deferred: StdMutex<VecDeque<Deferred>>,
    tag_lists: StdMutex<HashMap<String, TagList>>,
    /// The top-level target as the image decision just saw it (spec §5.5 step 3), so the
    /// copy does not HEAD it a second time.
    top_target: StdMutex<Option<(Reference, Option<Descriptor>)>>,
    /// The top-level source manifest when the image decision already read it whole (a tag
    /// the target is known not to have: GET instead of HEAD), so it is not read again.
    top_source: StdMutex<Option<Manifest>>,
}

impl<'a> Copier<'a> {
    pub fn new(env: CopyEnv<'a>, opts: CopyOpts) -> Self {
        Copier {
            env,
            opts,
            seen: StdMutex::new(HashMap::new()),
            deferred: StdMutex::new(VecDeque::new()),
            tag_lists: StdMutex::new(HashMap::new()),
            top_target: StdMutex::new(None),
            top_source: StdMutex::new(None),
        }
    }

    /// The top-level source manifest as the caller already read it.
    pub fn with_top_source(self, manifest: Manifest) -> Self {
        *lock(&self.top_source) = Some(manifest);
        self
    }

    /// The manifest handed over by [`Self::with_top_source`] when it is the one `digest`
    /// names (taken once: only the top-level copy asks).
    fn take_top_source(&self, role: &Role, digest: Option<&Digest>) -> Option<Manifest> {
        if !matches!(role, Role::Top) {
            return None;
        }
        let mut top = lock(&self.top_source);
        match (top.as_ref(), digest) {
            (Some(m), Some(d)) if m.digest == *d => top.take(),
            (Some(_), None) => top.take(),
            _ => None,
        }
    }

    /// The top-level target as the caller just saw it (absent: `None`).
    pub fn with_top_target(self, target: &Reference, seen: Option<Descriptor>) -> Self {
        *lock(&self.top_target) = Some((target.clone(), seen));
        self
    }

    fn log(&self) -> &slog::Logger {
        self.env.log
    }

    fn store(&self, r: &Reference) -> &'a dyn crate::store::Store {
        self.env.stores.store_for(r)
    }

    /// Copy `src` (pinned to its digest) to `tgt`, then the deferred operations in order;
    /// stops with [`CopyError::Canceled`] when the run's cancellation fires.
    pub async fn copy(&self, src: Reference, tgt: Reference) -> Result<(), CopyError> {
        tokio::select! {
            r = self.copy_all(src, tgt) => r,
            _ = self.env.cancel.cancelled() => Err(CopyError::Canceled),
        }
    }

    async fn copy_all(&self, src: Reference, tgt: Reference) -> Result<(), CopyError> {
        self.copy_manifest(src, tgt, None, Role::Top, Vec::new())
            .await
            .map_err(Fail::into_copy)?;
        let mut ran = 0;
        loop {
            let next = lock(&self.deferred).pop_front();
            let Some(op) = next else { return Ok(()) };
            ran += 1;
            if ran > MAX_DEFERRED {
                return Err(CopyError::Invalid(
                    "too many deferred referrer and digest-tag copies".into(),
                ));
            }
            self.copy_manifest(op.src, op.tgt, op.desc, op.role, Vec::new())
                .await
                .map_err(Fail::into_copy)?;
        }
    }

    fn defer(&self, op: Deferred) {
        lock(&self.deferred).push_back(op);
    }

    /// Spec §6.2 step 1 (and again whenever the source digest becomes known): `Ok(true)` and
    /// the guard when this copy is ours to run; `Ok(false)` when it was done, by us before or
    /// by the copy we waited for; a loop when it is in progress further up this very path.
    async fn claim<'c>(
        &'c self,
        tgt: &Reference,
        dig: &Digest,
        parents: &[Digest],
        guard: &mut Option<SeenGuard<'c>>,
    ) -> Result<bool, Fail> {
        let key = format!(
            "{}/{}:{}",
            tgt.repo_key(),
            tgt.tag.as_deref().unwrap_or(""),
            dig
        );
        let mut rx = {
            let mut seen = lock(&self.seen);
            match seen.get(&key) {
                None => {
                    let (tx, rx) = watch::channel(None);
                    seen.insert(key.clone(), Seen::Running(rx));
                    *guard = Some(SeenGuard {
                        seen: &self.seen,
                        key,
                        tx: Some(tx),
                    });
                    return Ok(true);
                }
                Some(Seen::Done) => return Ok(false),
                Some(Seen::Running(_)) if parents.contains(dig) => return Err(Fail::Loop(key)),
                // Inside a referrer or digest-tag copy, two sibling branches can each wait
                // for a manifest the other is copying (referrers point anywhere): defer
                // instead of waiting, the deferred copy runs after the whole copy.
                Some(Seen::Running(_)) if VIA_RELATED.try_with(|v| *v).unwrap_or(false) => {
                    return Err(Fail::Loop(key))
                }
                Some(Seen::Running(rx)) => rx.clone(),
            }
        };
        let outcome = match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone(),
            Err(_) => None,
        };
        match outcome {
            Some(Ok(())) => Ok(false),
            Some(Err(e)) => Err(e),
            None => Err(Fail::Copy(CopyError::Canceled)),
        }
    }

    /// `copyManifest` (spec §6.2).
    fn copy_manifest(
        &self,
        src: Reference,
        tgt: Reference,
        desc: Option<Descriptor>,
        role: Role,
        parents: Vec<Digest>,
    ) -> Task<'_> {
        async move {
            let mut guard = None;
            let result = self
                .copy_inner(&src, &tgt, desc, &role, &parents, &mut guard)
                .await;
            if let Some(g) = guard.take() {
                g.finish(&result);
            }
            result
        }
        .boxed()
    }

    async fn copy_inner<'c>(
        &'c self,
        src: &Reference,
        tgt: &Reference,
        desc: Option<Descriptor>,
        role: &Role,
        parents: &[Digest],
        guard: &mut Option<SeenGuard<'c>>,
    ) -> Result<(), Fail> {
        let opts = &self.opts;
        let tgt_store = self.store(tgt);
        // 1. the source digest, when known, and the seen table
        let mut s_dig = desc
            .as_ref()
            .map(|d| d.digest.clone())
            .or_else(|| src.digest.clone());
        if let Some(d) = &s_dig {
            if !self.claim(tgt, d, parents, guard).await? {
                return Ok(());
            }
        }
        // 2. the target
        let known = match role {
            Role::Top => {
                let mut top = lock(&self.top_target);
                match top.take() {
                    Some((t, seen)) if t == *tgt => Some(seen),
                    other => {
                        *top = other;
                        None
                    }
                }
            }
            _ => None,
        };
        let tgt_head = match known {
            Some(seen) => seen,
            None => match tgt_store.manifest_head(tgt).await {
                Ok(d) => d,
                Err(e @ StoreError::Network { .. }) => {
                    return Err(CopyError::store("failed to access target registry", e).into())
                }
                Err(_) => None,
            },
        };
        let tgt_digest = tgt_head.as_ref().map(|t| t.digest.clone());
        // 3. a plain copy stops at a matching digest
        if tgt_head.is_some() && (opts.fast_check || !opts.recursive()) {
            if s_dig.is_none() {
                let d = self.head_source(src).await?.digest;
                if !self.claim(tgt, &d, parents, guard).await? {
                    return Ok(());
                }
                s_dig = Some(d);
            }
            if let (Some(d), true) = (&s_dig, s_dig == tgt_digest) {
                self.confirmed_present(tgt, d);
                return Ok(());
            }
        }
        // 4. referrers and digest tags only need the source digest
        if tgt_head.is_some() && s_dig.is_none() && !opts.force_recursive {
            let d = self.head_source(src).await?.digest;
            if !self.claim(tgt, &d, parents, guard).await? {
                return Ok(());
            }
            s_dig = Some(d);
        }
        // 5. the source manifest, when something is to be pushed or visited
        let tgt_is_index = tgt_head
            .as_ref()
            .is_some_and(|t| media::is_index(&t.media_type));
        let need_get = s_dig.is_none()
            || tgt_head.is_none()
            || s_dig != tgt_digest
            || opts.force_recursive
            || tgt_is_index;
        let manifest = if need_get {
            let get_ref = match &s_dig {
                Some(d) => pinned(src, d),
                None => src.clone(),
            };
            let m =
                match self.take_top_source(role, s_dig.as_ref()) {
                    Some(m) => m,
                    None => self.store(src).manifest_get(&get_ref).await.map_err(|e| {
                        CopyError::store(format!("failed to get manifest {src}"), e)
                    })?,
                };
            match &s_dig {
                None => {
                    if !self.claim(tgt, &m.digest, parents, guard).await? {
                        return Ok(());
                    }
                    s_dig = Some(m.digest.clone());
                }
                Some(d) if *d != m.digest => {
                    let e = StoreError::DigestMismatch {
                        expected: d.to_string(),
                        got: m.digest.to_string(),
                    };
                    return Err(CopyError::store(format!("manifest {src}"), e).into());
                }
                Some(_) => {}
            }
            Some(m)
        } else {
            None
        };
        let Some(s_dig) = s_dig else {
            return Err(CopyError::Invalid(format!("no digest for {src}")).into());
        };
        // A signed schema 1 manifest's digest covers its payload, not its bytes: an OCI
        // layout (content-addressed by the bytes) cannot hold it.
        if tgt.scheme == Scheme::OciDir
            && manifest
                .as_ref()
                .is_some_and(|m| m.media_type == media::DOCKER_V1_SIGNED)
        {
            return Err(CopyError::Invalid(format!(
                "cannot copy {src} to {tgt}: signed Docker schema 1 manifests ({}) are not \
                 supported in an OCI layout",
                media::DOCKER_V1_SIGNED
            ))
            .into());
        }
        let links = manifest
            .as_ref()
            .map(|m| m.links())
            .transpose()
            .map_err(|e| CopyError::Invalid(e.to_string()))?;
        let mut below = parents.to_vec();
        below.push(s_dig.clone());
        let mut tasks: FuturesUnordered<Task<'c>> = FuturesUnordered::new();
        let mut excluded: Vec<String> = Vec::new();
        if let (Some(m), Some(l)) = (&manifest, &links) {
            if !src.same_repository(tgt) {
                if m.is_index() {
                    // 6. children of an index
                    for c in &l.children {
                        if let Some(filter) = &opts.platforms {
                            let filter = filter.as_ref().map_err(|e| {
                                CopyError::Invalid(format!("invalid platforms: {e}"))
                            })?;
                            if !filter.keeps(c.platform.as_ref()) {
                                let p = platform_text(c);
                                slog::debug!(self.log(), "Platform excluded from copy";
                                    "platform" => &p);
                                excluded.push(p);
                                continue;
                            }
                        }
                        tasks.push(self.child_task(src, tgt, c.clone(), below.clone()));
                    }
                } else {
                    // 7. config and layers of an image
                    for (i, b) in l.blobs.iter().enumerate() {
                        let kind = if i == 0 && l.has_config {
                            BlobKind::Config
                        } else {
                            BlobKind::Layer
                        };
                        if b.is_external() && !opts.include_external {
                            slog::debug!(self.log(), "Skipping external layer";
                                "source" => %src, "target" => %tgt, "layer" => %b.digest);
                            continue;
                        }
                        let (s, t, b) = (src.clone(), tgt.clone(), b.clone());
                        tasks.push(
                            async move { self.copy_blob(&s, &t, &b, kind).await.map_err(Fail::from) }
                                .boxed(),
                        );
                    }
                }
            }
        }
        // 8. fail early on what has failed already, without waiting for the rest
        check_now(&mut tasks).await?;
        // 9.–10. referrers and digest tags, listed while the children and blobs move
        let related = drive(&mut tasks, self.related(src, tgt, &s_dig, &below)).await?;
        tasks.extend(related);
        // 11. everything
        wait_all(&mut tasks).await?;
        // 12. the manifest itself, bytes unchanged
        let mut pushed = false;
        if let Some(m) = &manifest {
            if tgt_digest.as_ref() != Some(&s_dig) || opts.force_recursive {
                pushed = self.push(tgt, m, links.as_ref(), role, &excluded).await?;
            } else {
                self.confirmed_present(tgt, &s_dig);
            }
        }
        self.track_referrer(tgt, manifest.as_ref(), links.as_ref(), role, pushed)
            .await
    }

    /// A child of an index (spec §6.2 step 6): a manifest, a blob, or whichever works.
    fn child_task<'c>(
        &'c self,
        src: &Reference,
        tgt: &Reference,
        c: Descriptor,
        parents: Vec<Digest>,
    ) -> Task<'c> {
        let (src, tgt) = (src.clone(), tgt.clone());
        async move {
            slog::debug!(self.log(), "Copy platform";
                "platform" => platform_text(&c), "digest" => %c.digest);
            let (csrc, ctgt) = (src.with_digest(&c.digest), tgt.with_digest(&c.digest));
            if media::is_manifest(&c.media_type) {
                self.copy_manifest(csrc, ctgt, Some(c), Role::Child, parents)
                    .await
            } else if media::is_known_blob(&c.media_type) {
                Ok(self.copy_blob(&src, &tgt, &c, BlobKind::Layer).await?)
            } else {
                match self
                    .copy_manifest(csrc, ctgt, Some(c.clone()), Role::Child, parents)
                    .await
                {
                    Ok(()) => Ok(()),
                    // Only "this is not a manifest" falls back to a blob copy; a loop, a
                    // cancellation or a network/server failure must not leave an index
                    // pointing at a child that landed as a mere blob.
                    Err(Fail::Copy(CopyError::Invalid(_)))
                    | Err(Fail::Copy(CopyError::Store {
                        source: StoreError::NotFound(_) | StoreError::Invalid(_),
                        ..
                    })) => Ok(self.copy_blob(&src, &tgt, &c, BlobKind::Layer).await?),
                    Err(e) => Err(e),
                }
            }
        }
        .boxed()
    }

    /// Spec §6.2 steps 9 and 10: start copies of the referrers and digest tags of `s_dig`.
    async fn related<'c>(
        &'c self,
        src: &Reference,
        tgt: &Reference,
        s_dig: &Digest,
        parents: &[Digest],
    ) -> Result<Vec<Task<'c>>, Fail> {
        let mut out: Vec<Task<'c>> = Vec::new();
        let mut fallback_tags = Vec::new();
        if let Some(filters) = &self.opts.referrers {
            let rsrc = self
                .opts
                .referrer_src
                .clone()
                .unwrap_or_else(|| src.repo_only());
            let rtgt = self
                .opts
                .referrer_tgt
                .clone()
                .unwrap_or_else(|| tgt.repo_only());
            let listed = self
                .store(&rsrc)
                .referrers(&rsrc, s_dig)
                .await
                .map_err(|e| {
                    CopyError::store(format!("failed to list referrers of {s_dig} in {rsrc}"), e)
                })?;
            if rsrc.same_repository(src) {
                fallback_tags = listed.tags.clone();
            }
            for d in select_referrers(&listed.descriptors, filters) {
                let (s, t) = (rsrc.with_digest(&d.digest), rtgt.with_digest(&d.digest));
                let role = Role::Referrer {
                    listed: Box::new(d.clone()),
                    subject: s_dig.clone(),
                };
                out.push(self.deferrable(s, t, Some(d), role, parents.to_vec()));
            }
        }
        if self.opts.digest_tags {
            let tags = match self.tags_of(src).await {
                Ok(t) => t,
                Err(e) => {
                    slog::warn!(self.log(), "Failed to list tags for digest-tag copy";
                        "source" => %src, "err" => %e);
                    return Err(CopyError::store(
                        format!("failed to list tags of {}", src.repo_only()),
                        e,
                    )
                    .into());
                }
            };
            for tag in digest_tags(&tags, s_dig, &fallback_tags) {
                let (s, t) = (src.with_tag(tag), tgt.with_tag(tag));
                out.push(self.deferrable(s, t, None, Role::DigestTag, parents.to_vec()));
            }
        }
        Ok(out)
    }

    /// A referrer or digest-tag copy: a loop is deferred to after the whole copy.
    fn deferrable(
        &self,
        src: Reference,
        tgt: Reference,
        desc: Option<Descriptor>,
        role: Role,
        parents: Vec<Digest>,
    ) -> Task<'_> {
        async move {
            let copy = self.copy_manifest(
                src.clone(),
                tgt.clone(),
                desc.clone(),
                role.clone(),
                parents,
            );
            let r = VIA_RELATED.scope(true, copy).await;
            match r {
                Err(Fail::Loop(key)) => {
                    slog::debug!(self.log(), "Loop detected, copy deferred";
                        "source" => %src, "target" => %tgt, "key" => key);
                    self.defer(Deferred {
                        src,
                        tgt,
                        desc,
                        role,
                    });
                    Ok(())
                }
                Err(e) if !e.canceled() => {
                    match &role {
                        Role::Referrer { listed, .. } => {
                            slog::warn!(self.log(), "Failed to copy referrer";
                                "digest" => %listed.digest, "src" => src.common_name(),
                                "tgt" => tgt.common_name())
                        }
                        _ => slog::warn!(self.log(), "Failed to copy digest-tag";
                            "tag" => src.tag.as_deref().unwrap_or(""),
                            "src" => src.common_name(), "tgt" => tgt.common_name()),
                    }
                    Err(e)
                }
                other => other,
            }
        }
        .boxed()
    }

    /// The tags of `repo`, listed once per copy.
    async fn tags_of(&self, repo: &Reference) -> Result<Arc<Vec<String>>, StoreError> {
        let cell = lock(&self.tag_lists)
            .entry(repo.repo_key())
            .or_default()
            .clone();
        let repo = repo.repo_only();
        cell.get_or_try_init(|| async {
            tag_list_all(self.store(&repo), &repo).await.map(Arc::new)
        })
        .await
        .cloned()
    }

    /// HEAD the source for its digest (GET where HEAD is disabled).
    async fn head_source(&self, src: &Reference) -> Result<Descriptor, Fail> {
        match head_or_get(self.store(src), src).await {
            Ok(Some(d)) => Ok(d),
            Ok(None) => Err(CopyError::store(
                format!("failed to get manifest {src}"),
                StoreError::NotFound(None),
            )
            .into()),
            Err(e) => Err(CopyError::store(format!("failed to get manifest {src}"), e).into()),
        }
    }

    /// A lookup in `tgt`'s repository found the manifest `d`: the run can count on it.
    fn confirmed_present(&self, tgt: &Reference, d: &Digest) {
        if tgt.scheme == Scheme::Reg {
            self.env.scope.manifest_landed_in(object_key(tgt, d));
        }
    }

    /// Spec §6.2 step 12 / §6.4: push the bytes as they are. A referrers index copied under
    /// its fallback tag is merged into the target's (never dropping entries other tools put
    /// there). Returns whether this copy wrote it.
    ///
    /// One object is never written twice at once into one repository (see
    /// [`super::run_scope`]): a manifest pushed by digest that landed earlier in this run —
    /// a child shared by several tags, a referrer of several images — is not pushed again,
    /// and a push waits while another copy writes the same manifest into the repository
    /// (the second tag of one index waits for the first).
    async fn push(
        &self,
        tgt: &Reference,
        m: &Manifest,
        links: Option<&crate::oci::ManifestLinks>,
        role: &Role,
        excluded: &[String],
    ) -> Result<bool, Fail> {
        let key = object_key(tgt, &m.digest);
        let scope = self.env.scope;
        // A layout is always written (its GC may have removed what landed earlier).
        let by_digest = role.is_child() && tgt.scheme == Scheme::Reg;
        if by_digest && scope.manifest_landed(&key) {
            slog::debug!(self.log(), "Manifest already pushed in this run";
                "target" => %tgt, "digest" => %m.digest);
            return Ok(false);
        }
        let _writing = self.env.manifest_writes.write(&key).await;
        if by_digest && scope.manifest_landed(&key) {
            slog::debug!(self.log(), "Manifest already pushed in this run";
                "target" => %tgt, "digest" => %m.digest);
            return Ok(false);
        }
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            let result = self.put_once(tgt, m, role).await;
            match &result {
                Err(e) if attempt < RACE_ATTEMPTS && is_link_race(e) => {
                    if !self.references_present(tgt, links, excluded).await {
                        break result;
                    }
                    slog::debug!(self.log(),
                        "Manifest push refused although every reference is present \
                         (registry link-file race), retrying";
                        "target" => %tgt, "digest" => %m.digest, "attempt" => attempt,
                        "err" => %e);
                    tokio::time::sleep(RACE_BACKOFF * attempt).await;
                }
                _ => break result,
            }
        };
        match result {
            Ok(()) => {
                self.env.counters.bump(Counter::ManifestsPushed);
                if tgt.scheme == Scheme::Reg {
                    scope.manifest_landed_in(key);
                }
                Ok(true)
            }
            Err(e) => {
                if !matches!(e, StoreError::Canceled) {
                    slog::warn!(self.log(), "Failed to push manifest"; "target" => %tgt, "err" => %e);
                }
                if !excluded.is_empty()
                    && m.is_index()
                    && matches!(e, StoreError::HttpStatus { status: 400, .. })
                {
                    return Err(CopyError::store(
                        format!(
                            "registry refused the index {tgt}: its children excluded by \
                             `platforms` ({}) are absent from the target, and this registry \
                             does not accept an index with absent children",
                            excluded.join(", ")
                        ),
                        e,
                    )
                    .into());
                }
                Err(CopyError::store(format!("failed to push manifest {tgt}"), e).into())
            }
        }
    }

    async fn put_once(&self, tgt: &Reference, m: &Manifest, role: &Role) -> Result<(), StoreError> {
        let store = self.store(tgt);
        let fallback = match (role.is_child(), &tgt.tag) {
            (false, Some(tag)) if m.media_type == media::OCI_INDEX => fallback_subject(tag),
            _ => None,
        };
        match fallback {
            Some(subject) => fallback_merge(store, &tgt.repo_only(), &subject, m)
                .await
                .map(|_| ()),
            None => store.manifest_put(tgt, m, role.is_child()).await,
        }
    }

    /// Whether this run has seen every reference of the manifest (`links`) land in `tgt`'s
    /// repository and a HEAD of each still finds it: then a refusal naming a missing or
    /// invalid reference is the registry's link-file race, not a missing object.
    async fn references_present(
        &self,
        tgt: &Reference,
        links: Option<&crate::oci::ManifestLinks>,
        excluded: &[String],
    ) -> bool {
        let Some(links) = links else { return false };
        if !excluded.is_empty() || tgt.scheme != Scheme::Reg {
            return false;
        }
        let repo = tgt.repo_only();
        let scope = self.env.scope;
        let blobs: Vec<&Descriptor> = links
            .blobs
            .iter()
            .filter(|b| self.opts.include_external || !b.is_external())
            .collect();
        let all_landed = blobs
            .iter()
            .all(|b| scope.blob_landed(&object_key(&repo, &b.digest)))
            && links
                .children
                .iter()
                .all(|c| scope.manifest_landed(&object_key(&repo, &c.digest)));
        if !all_landed {
            return false;
        }
        let store = self.store(&repo);
        for b in blobs {
            if !matches!(store.blob_head(&repo, &b.digest).await, Ok(true)) {
                return false;
            }
        }
        for c in &links.children {
            if !matches!(
                store.manifest_head(&repo.with_digest(&c.digest)).await,
                Ok(Some(_))
            ) {
                return false;
            }
        }
        true
    }

    /// Keep the target's referrers listing current (spec §6.5): after a push of a manifest
    /// with a `subject`, and for every referrer copied (also when it was there already, so
    /// that an index missing it gets repaired).
    async fn track_referrer(
        &self,
        tgt: &Reference,
        manifest: Option<&Manifest>,
        links: Option<&crate::oci::ManifestLinks>,
        role: &Role,
        pushed: bool,
    ) -> Result<(), Fail> {
        let is_referrer = matches!(role, Role::Referrer { .. });
        if !(pushed || is_referrer) {
            return Ok(());
        }
        let (subject, entry) = match (manifest, links, role) {
            (Some(m), Some(l), _) => match &l.subject {
                Some(s) => (
                    s.digest.clone(),
                    m.referrer_entry()
                        .map_err(|e| CopyError::Invalid(e.to_string()))?,
                ),
                None => return Ok(()),
            },
            (None, _, Role::Referrer { listed, subject }) => (subject.clone(), index_entry(listed)),
            _ => return Ok(()),
        };
        let repo = tgt.repo_only();
        self.store(&repo)
            .referrer_added(&repo, &subject, &entry)
            .await
            .map_err(|e| {
                CopyError::store(
                    format!("failed to update the referrers of {subject} in {repo}"),
                    e,
                )
            })?;
        Ok(())
    }

    async fn copy_blob(
        &self,
        src: &Reference,
        tgt: &Reference,
        blob: &Descriptor,
        kind: BlobKind,
    ) -> Result<(), CopyError> {
        // regsync's message names and fields (spec §14).
        match kind {
            BlobKind::Config => slog::info!(self.log(), "Copy config";
                "source" => %src, "target" => %tgt, "digest" => %blob.digest),
            BlobKind::Layer => slog::info!(self.log(), "Copy layer";
                "source" => %src, "target" => %tgt, "layer" => %blob.digest),
        }
        let moved = self
            .env
            .blobs
            .make_present(src.repo_only(), tgt.repo_only(), blob.clone())
            .await;
        match moved {
            Ok(()) => Ok(()),
            Err(e) => {
                match kind {
                    BlobKind::Config => slog::warn!(self.log(), "Failed to copy config";
                        "source" => %src, "target" => %tgt, "digest" => %blob.digest, "err" => %e),
                    BlobKind::Layer => slog::warn!(self.log(), "Failed to copy layer";
                        "source" => %src, "target" => %tgt, "layer" => %blob.digest, "err" => %e),
                }
                Err(e)
            }
        }
    }
}

fn platform_text(d: &Descriptor) -> String {
    d.platform
        .as_ref()
        .map(|p| Platform::from_descriptor(p).to_string())
        .unwrap_or_else(|| "unknown".into())
}

#[derive(Clone, Copy)]
enum BlobKind {
    Config,
    Layer,
}
