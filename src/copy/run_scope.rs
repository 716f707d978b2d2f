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

use crate::reference::Reference;
use hashlink::LruCache;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// The tables of one run. Keys: `<repo_key>@<digest>` for what landed in a repository,
/// `<registry key>@<digest>` for lenders, `<repo_key>` for empty repositories.
pub struct RunScope {
    tables: Mutex<Tables>,
}

struct Tables {
    blobs: LruCache<String, ()>,
    lenders: LruCache<String, Reference>,
    empty_repos: LruCache<String, ()>,
    manifests: LruCache<String, ()>,
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

    /// Whether this run saw the blob `key` land (or found it present).
    pub fn blob_landed(&self, key: &str) -> bool {
        self.lock().blobs.get(key).is_some()
    }

    /// The blob `key` is present; `lender` (`<registry key>@<digest>`, repository) is where
    /// siblings on the same registry can mount it from.
    pub fn blob_landed_in(&self, key: String, lender: Option<(String, Reference)>) {
        let mut t = self.lock();
        t.blobs.insert(key, ());
        if let Some((reg_key, repo)) = lender {
            // The first repository seen stays the lender while it is remembered.
            if t.lenders.get(&reg_key).is_none() {
                t.lenders.insert(reg_key, repo);
            }
        }
    }

    pub fn lender(&self, reg_key: &str) -> Option<Reference> {
        self.lock().lenders.get(reg_key).cloned()
    }

    /// The target repository had no tags when this run listed it.
    pub fn mark_empty_repo(&self, repo_key: String) {
        self.lock().empty_repos.insert(repo_key, ());
    }

    pub fn is_empty_repo(&self, repo_key: &str) -> bool {
        self.lock().empty_repos.get(repo_key).is_some()
    }

    /// Whether this run pushed the manifest `key` (or confirmed it present).
    pub fn manifest_landed(&self, key: &str) -> bool {
        self.lock().manifests.get(key).is_some()
    }

    pub fn manifest_landed_in(&self, key: String) {
        self.lock().manifests.insert(key, ());
    }
}

/// `<repo_key>@<digest>`: one object in one repository.
pub fn object_key(repo: &Reference, digest: &crate::oci::Digest) -> String {
    format!("{}@{}", repo.repo_key(), digest)
}

/// One async lock per key, held while that object is written; an entry lives only while a
/// writer holds or waits for it.
#[derive(Default)]
pub struct WriteLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Holds a key of [`WriteLocks`]; dropping it lets the next writer in.
pub struct WriteGuard<'a> {
    owner: &'a WriteLocks,
    key: String,
    lock: Option<Arc<tokio::sync::Mutex<()>>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl WriteLocks {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        self.locks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait until no one else writes `key`, then hold it.
    pub async fn write(&self, key: &str) -> WriteGuard<'_> {
        let lock = self.map().entry(key.to_string()).or_default().clone();
        let mut g = WriteGuard {
            owner: self,
            key: key.to_string(),
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

    #[test]
    fn tables_keep_the_entries_used_last_up_to_their_bound() {
        let s = RunScope::new(100);
        s.blob_landed_in("r@0".into(), None);
        for i in 1..150 {
            s.blob_landed_in(format!("r@{i}"), None);
            // Asked about all along: it stays.
            assert!(s.blob_landed("r@0"), "r@0 evicted at {i}");
        }
        assert!(s.lock().blobs.len() <= 100);
        assert!(s.blob_landed("r@149") && !s.blob_landed("r@1"));
        for i in 0..150 {
            s.mark_empty_repo(format!("r{i}"));
            s.manifest_landed_in(format!("r@m{i}"));
        }
        let t = s.lock();
        assert!(t.empty_repos.len() <= 100 && t.manifests.len() <= 100);
    }

    #[test]
    fn a_new_scope_knows_nothing() {
        let a = RunScope::new(10);
        a.blob_landed_in("r@d".into(), None);
        a.manifest_landed_in("r@m".into());
        a.mark_empty_repo("r".into());
        assert!(a.blob_landed("r@d") && a.manifest_landed("r@m") && a.is_empty_repo("r"));
        let b = RunScope::new(10);
        assert!(!b.blob_landed("r@d") && !b.manifest_landed("r@m") && !b.is_empty_repo("r"));
    }

    #[tokio::test(start_paused = true)]
    async fn writes_of_one_key_take_turns_and_leave_no_entry() {
        let locks = Arc::new(WriteLocks::default());
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..3 {
            let (locks, order) = (locks.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _g = locks.write("repo@d").await;
                order.lock().unwrap().push(format!("start {i}"));
                tokio::time::sleep(Duration::from_millis(10)).await;
                order.lock().unwrap().push(format!("end {i}"));
            }));
        }
        // Another key does not wait.
        let other = locks.write("repo@e").await;
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
