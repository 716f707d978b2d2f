//! What one run knows about its targets (design §1, "run-scoped tables"), and the writes in
//! flight that no two runs may overlap.
//!
//! A [`RunScope`] is made for one run of a step set — `once`/`check`, `server`'s initial
//! pass, one firing of one step — and dropped with it. It holds what the run saw land in a
//! target: blobs (and where they can be mounted from), manifests, repositories that had no
//! tags. Within one run this is trusted without asking the registry again; a later run
//! starts from nothing, so a target that lost content meanwhile (a registry GC, a retention
//! policy, a wiped volume) is looked at again instead of being written over missing blobs.
//!
//! [`WriteLocks`] lives for the engine: one lock per `<target repository>@<digest>` while a
//! manifest is being written. CNCF distribution rewrites a repository's link files in place
//! (not atomically), and a manifest PUT that reads a link a concurrent write of the same
//! object is rewriting answers `DIGEST_INVALID` or `MANIFEST_BLOB_UNKNOWN`. Entries exist
//! only while a write holds or waits for them.
//!
//! Every table is bounded by configuration (the caller sizes it from `parallel`), not by the
//! catalog: the least recently used entry goes first, which costs requests (a HEAD, a mount
//! or a PUT again), never correctness. Steps run a bounded number at a time, so what a run
//! still needs is what it used lately.
//!
//! Entries are small on purpose: a full table holds thousands of them for the whole run, so
//! a key is the 32-byte SHA-256 of its text ([`ScopeKey`]) rather than the ~100-byte text, and
//! a lender is its repository's name rather than a whole [`Reference`]. With string keys and
//! references the four full tables of a `parallel: 3` run took about 2 MB of heap.

use crate::oci::Digest;
use crate::reference::{Reference, Scheme};
use hashlink::LruCache;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// A key of the run's tables: the SHA-256 of `<repo_key>@<digest>` (an object in a
/// repository), `<registry key>@<digest>` (a lender) or `<repo_key>` (an empty repository).
/// Two different texts never share a key in practice (a SHA-256 collision), so a hit is as
/// good as a match of the texts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ScopeKey([u8; 32]);

impl ScopeKey {
    fn of(parts: &[&str]) -> ScopeKey {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p.as_bytes());
        }
        ScopeKey(h.finalize().into())
    }
}

/// `<repo_key>@<digest>`: one object in one repository.
pub fn object_key(repo: &Reference, digest: &Digest) -> ScopeKey {
    ScopeKey::of(&[&repo.repo_key(), "@", digest.as_str()])
}

/// One repository (or layout): the key of [`RunScope::mark_empty_repo`].
pub fn repo_key(repo: &Reference) -> ScopeKey {
    ScopeKey::of(&[&repo.repo_key()])
}

/// A blob anywhere on `repo`'s registry (or in its layout): the key of lenders. Mounts work
/// only within one registry.
pub fn lender_key(repo: &Reference, digest: &Digest) -> ScopeKey {
    match repo.scheme {
        Scheme::Reg => ScopeKey::of(&["reg:", &repo.registry, "@", digest.as_str()]),
        Scheme::OciDir => ScopeKey::of(&["ocidir:", &repo.path, "@", digest.as_str()]),
    }
}

/// The tables of one run.
pub struct RunScope {
    tables: Mutex<Tables>,
}

struct Tables {
    blobs: LruCache<ScopeKey, ()>,
    /// The repository (on the key's registry) where the blob landed first.
    lenders: LruCache<ScopeKey, Box<str>>,
    empty_repos: LruCache<ScopeKey, ()>,
    manifests: LruCache<ScopeKey, ()>,
}

impl RunScope {
    /// A scope whose tables keep at most `entries` entries each (at least one).
    pub fn new(entries: usize) -> Arc<RunScope> {
        let n = entries.max(1);
        Arc::new(RunScope {
            tables: Mutex::new(Tables {
                blobs: LruCache::new(n),
                lenders: LruCache::new(n),
                empty_repos: LruCache::new(n),
                manifests: LruCache::new(n),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this run saw the blob ([`object_key`]) land (or found it present).
    pub fn blob_landed(&self, key: &ScopeKey) -> bool {
        self.lock().blobs.get(key).is_some()
    }

    /// The blob `digest` is present in `repo`, which siblings on the same registry can mount
    /// it from.
    pub fn blob_landed_in(&self, repo: &Reference, digest: &Digest) {
        let lender = lender_key(repo, digest);
        let mut t = self.lock();
        t.blobs.insert(object_key(repo, digest), ());
        // The first repository seen stays the lender while it is remembered.
        if t.lenders.get(&lender).is_none() {
            t.lenders.insert(lender, repo.repository.as_str().into());
        }
    }

    /// A repository of `target`'s registry where this run saw `digest` land: where to mount
    /// it from.
    pub fn lender(&self, target: &Reference, digest: &Digest) -> Option<Reference> {
        let repository = self
            .lock()
            .lenders
            .get(&lender_key(target, digest))?
            .clone();
        Some(target.sibling(&repository))
    }

    /// The target repository had no tags when this run listed it.
    pub fn mark_empty_repo(&self, repo: &Reference) {
        self.lock().empty_repos.insert(repo_key(repo), ());
    }

    pub fn is_empty_repo(&self, repo: &Reference) -> bool {
        self.lock().empty_repos.get(&repo_key(repo)).is_some()
    }

    /// Whether this run pushed the manifest ([`object_key`]) or confirmed it present.
    pub fn manifest_landed(&self, key: &ScopeKey) -> bool {
        self.lock().manifests.get(key).is_some()
    }

    pub fn manifest_landed_in(&self, key: ScopeKey) {
        self.lock().manifests.insert(key, ());
    }
}

/// One async lock per key, held while that object is written; an entry lives only while a
/// writer holds or waits for it.
#[derive(Default)]
pub struct WriteLocks {
    locks: Mutex<HashMap<ScopeKey, Arc<tokio::sync::Mutex<()>>>>,
}

/// Holds a key of [`WriteLocks`]; dropping it lets the next writer in.
pub struct WriteGuard<'a> {
    owner: &'a WriteLocks,
    key: ScopeKey,
    lock: Option<Arc<tokio::sync::Mutex<()>>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl WriteLocks {
    fn map(&self) -> MutexGuard<'_, HashMap<ScopeKey, Arc<tokio::sync::Mutex<()>>>> {
        self.locks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait until no one else writes `key`, then hold it.
    pub async fn write(&self, key: &ScopeKey) -> WriteGuard<'_> {
        let lock = self.map().entry(*key).or_default().clone();
        let mut g = WriteGuard {
            owner: self,
            key: *key,
            lock: Some(lock.clone()),
            guard: None,
        };
        // Cancelled while waiting: the guard's drop still cleans the entry up.
        g.guard = Some(lock.lock_owned().await);
        g
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map().len()
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let Some(lock) = self.lock.take() else { return };
        let mut map = self.owner.map();
        // Only the map and we hold it: no one waits, forget the key. (Clones are made under
        // the map lock, so no new waiter can appear meanwhile.)
        if Arc::strong_count(&lock) == 2 {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn repo(name: &str) -> Reference {
        Reference::parse(&format!("127.0.0.1:5000/{name}")).unwrap()
    }

    fn digest(i: usize) -> Digest {
        Digest::sha256_of(i.to_string().as_bytes())
    }

    #[test]
    fn tables_keep_the_entries_used_last_up_to_their_bound() {
        let s = RunScope::new(100);
        let r = repo("r");
        s.blob_landed_in(&r, &digest(0));
        for i in 1..150 {
            s.blob_landed_in(&r, &digest(i));
            // Asked about all along: it stays.
            assert!(
                s.blob_landed(&object_key(&r, &digest(0))),
                "blob 0 evicted at {i}"
            );
        }
        assert!(s.lock().blobs.len() <= 100 && s.lock().lenders.len() <= 100);
        assert!(s.blob_landed(&object_key(&r, &digest(149))));
        assert!(!s.blob_landed(&object_key(&r, &digest(1))));
        for i in 0..150 {
            s.mark_empty_repo(&repo(&format!("r{i}")));
            s.manifest_landed_in(object_key(&r, &digest(1000 + i)));
        }
        let t = s.lock();
        assert!(t.empty_repos.len() <= 100 && t.manifests.len() <= 100);
    }

    #[test]
    fn a_new_scope_knows_nothing() {
        let (r, d, m) = (repo("r"), digest(1), digest(2));
        let a = RunScope::new(10);
        a.blob_landed_in(&r, &d);
        a.manifest_landed_in(object_key(&r, &m));
        a.mark_empty_repo(&r);
        assert!(a.blob_landed(&object_key(&r, &d)));
        assert!(a.manifest_landed(&object_key(&r, &m)) && a.is_empty_repo(&r));
        let b = RunScope::new(10);
        assert!(!b.blob_landed(&object_key(&r, &d)));
        assert!(!b.manifest_landed(&object_key(&r, &m)) && !b.is_empty_repo(&r));
    }

    #[test]
    fn keys_tell_repositories_registries_and_digests_apart() {
        let s = RunScope::new(10);
        let (a, d) = (repo("a"), digest(1));
        s.blob_landed_in(&a, &d);
        // Same digest, other repository of the same registry: not landed there, but `a`
        // lends it.
        let b = repo("b");
        assert!(!s.blob_landed(&object_key(&b, &d)));
        assert_eq!(
            s.lender(&b, &d).map(|l| l.common_name()),
            Some(a.repo_only().common_name())
        );
        // Another registry, or another digest: nothing to lend.
        let elsewhere = Reference::parse("127.0.0.1:5001/b").unwrap();
        assert!(s.lender(&elsewhere, &d).is_none());
        assert!(s.lender(&b, &digest(2)).is_none());
        // The first repository stays the lender.
        s.blob_landed_in(&b, &d);
        assert_eq!(s.lender(&repo("c"), &d).unwrap().repository, "a");
        // `a/b` and `a` + `/b` are different repositories, not one key.
        assert_ne!(repo_key(&repo("a/b")), repo_key(&repo("a")));
        assert_ne!(object_key(&repo("ab"), &d), object_key(&repo("a"), &d));
    }

    #[tokio::test(start_paused = true)]
    async fn writes_of_one_key_take_turns_and_leave_no_entry() {
        let locks = Arc::new(WriteLocks::default());
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..3 {
            let (locks, order) = (locks.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _g = locks.write(&ScopeKey::of(&["repo@d"])).await;
                order.lock().unwrap().push(format!("start {i}"));
                tokio::time::sleep(Duration::from_millis(10)).await;
                order.lock().unwrap().push(format!("end {i}"));
            }));
        }
        // Another key does not wait.
        let other = locks.write(&ScopeKey::of(&["repo@e"])).await;
        drop(other);
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        for pair in order.chunks(2) {
            assert_eq!(pair[0].replace("start", ""), pair[1].replace("end", ""));
        }
        assert_eq!(locks.len(), 0);
    }
}
