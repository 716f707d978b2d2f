//! `--shard I/N`: which images this process copies when N processes share one config.
//!
//! The one place the decision lives: parsing `I/N`, finding it in the environment
//! (`REGSYNC_SHARD`, an Indexed Job's `JOB_COMPLETION_INDEX`, a StatefulSet pod's hostname
//! ordinal, each with `REGSYNC_SHARDS`), and the ownership function.
//!
//! Ownership is rendezvous (highest-random-weight) hashing of the *target repository path*
//! (`mirror/library/alpine`: the registry host is left out, an OCI layout is its path) over
//! the shard numbers `0..N`: shard `s` scores `hash("{s}\0{repo}")` and the highest score
//! owns the repository (ties, which need a 64-bit collision, go to the lower number). So every
//! repository has exactly one owner whatever the step order, and going from N to N+1 shards
//! moves a repository only when the new shard outscores its owner: about 1/(N+1) of them, all
//! to the new shard.
//!
//! The hash is FNV-1a 64 over the bytes of `"{s}\0{repo}"` (`s` in decimal ASCII), then
//! MurmurHash3's 64-bit finalizer (`fmix64`). It is fixed here for good: every shard of a
//! fleet, whatever its version, build or platform, must compute the same owners, so Rust's
//! `DefaultHasher` (randomly keyed per process) is out. FNV-1a is byte-exact, needs no key and
//! no dependency, and takes ten lines in any language; its high bits mix poorly on their own,
//! and the finalizer gives the full avalanche a maximum over N scores needs.

use std::fmt;

/// This process's part of the fleet: shard `index` of `count` (0-based). `0/1`, the default,
/// owns everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Shard { index: 0, count: 1 }
    }
}

/// More shards than this is a typo, not a fleet.
pub const MAX_SHARDS: u32 = 10_000;

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    /// `I/N` with `0 ≤ I < N ≤ 10000`.
    fn from_str(s: &str) -> Result<Shard, String> {
        let expected = "expected I/N with 0 <= I < N, e.g. 0/4 (shards are numbered from 0)";
        let (i, n) = s.split_once('/').ok_or_else(|| expected.to_string())?;
        let index = number(i).ok_or_else(|| format!("{i:?} is not a number; {expected}"))?;
        let count = shard_count(n)?;
        Shard::new(index, count)
    }
}

/// `--shard`'s value (also `REGSYNC_SHARD`): `I/N`, or empty for "not set" (a manifest may
/// leave the variable empty).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardFlag(pub Option<Shard>);

impl std::str::FromStr for ShardFlag {
    type Err = String;

    fn from_str(s: &str) -> Result<ShardFlag, String> {
        if s.trim().is_empty() {
            return Ok(ShardFlag(None));
        }
        s.parse().map(|v| ShardFlag(Some(v)))
    }
}

/// A plain decimal number (no sign, no spaces).
fn number(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn shard_count(n: &str) -> Result<u32, String> {
    match number(n) {
        Some(c) if (1..=MAX_SHARDS).contains(&c) => Ok(c),
        _ => Err(format!(
            "the shard count {n:?} must be a number from 1 to {MAX_SHARDS}"
        )),
    }
}

impl Shard {
    pub fn new(index: u32, count: u32) -> Result<Shard, String> {
        if count == 0 || count > MAX_SHARDS {
            return Err(format!(
                "the shard count {count} must be a number from 1 to {MAX_SHARDS}"
            ));
        }
        if index >= count {
            return Err(format!(
                "shard {index} does not exist among {count} shards (numbered 0 to {})",
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }

    /// More than one shard.
    pub fn is_sharded(&self) -> bool {
        self.count > 1
    }

    /// Whether this shard copies into the repository `repo` (see [`owner`]).
    pub fn owns(&self, repo: &str) -> bool {
        self.count <= 1 || owner(repo, self.count) == self.index
    }
}

/// The score of shard `shard` for `repo`: FNV-1a 64 of `"{shard}\0{repo}"`, then `fmix64`.
pub fn score(shard: u32, repo: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let digits = shard.to_string();
    for b in digits.bytes().chain([0u8]).chain(repo.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    fmix64(h)
}

/// MurmurHash3's 64-bit finalizer.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// The shard (of `count`) that owns `repo`: the highest [`score`]; the lower number on a tie.
pub fn owner(repo: &str, count: u32) -> u32 {
    let mut best = (0u32, score(0, repo));
    for s in 1..count.max(1) {
        let sc = score(s, repo);
        if sc > best.1 {
            best = (s, sc);
        }
    }
    best.0
}

/// What [`owner`] hashes for a target: the repository path at the registry (host left out,
/// so renaming the registry keeps every owner), or an OCI layout's directory.
pub fn target_key(target: &crate::reference::Reference) -> &str {
    match target.scheme {
        crate::reference::Scheme::Reg => &target.repository,
        crate::reference::Scheme::OciDir => &target.path,
    }
}

/// Where this process learns its shard, in this order (the first one set wins):
/// `--shard` / `REGSYNC_SHARD` (`I/N`, given as `flag`), then with `REGSYNC_SHARDS=N`:
/// `JOB_COMPLETION_INDEX` (a Kubernetes Indexed Job), else the number after the last `-` of
/// the hostname (a StatefulSet pod `regsync-2`; `HOSTNAME`, else the kernel's host name).
/// Neither set: `0/1`, everything.
pub struct ShardEnv {
    pub shards: Option<String>,
    pub job_index: Option<String>,
    pub hostname: Option<String>,
}

impl ShardEnv {
    /// The process environment (and the kernel's host name when `HOSTNAME` is unset).
    pub fn from_process() -> ShardEnv {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        ShardEnv {
            shards: var("REGSYNC_SHARDS"),
            job_index: var("JOB_COMPLETION_INDEX"),
            hostname: var("HOSTNAME").or_else(kernel_hostname),
        }
    }
}

fn kernel_hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..end].to_vec())
        .ok()
        .filter(|h| !h.is_empty())
}

/// This process's shard: `flag` (`--shard`/`REGSYNC_SHARD`, already parsed) or the
/// environment (see [`ShardEnv`]). The error is one line naming the variable to fix.
pub fn resolve(flag: Option<Shard>, env: &ShardEnv) -> Result<Shard, String> {
    if let Some(s) = flag {
        return Ok(s);
    }
    let Some(n) = env.shards.as_deref() else {
        return Ok(Shard::default());
    };
    let count = shard_count(n.trim()).map_err(|e| format!("REGSYNC_SHARDS: {e}"))?;
    if let Some(i) = env.job_index.as_deref() {
        let i = i.trim();
        let index = number(i).ok_or_else(|| {
            format!("JOB_COMPLETION_INDEX {i:?} is not a number (with REGSYNC_SHARDS={count})")
        })?;
        return Shard::new(index, count).map_err(|e| {
            format!("JOB_COMPLETION_INDEX={index} with REGSYNC_SHARDS={count}: {e} (completions must equal REGSYNC_SHARDS)")
        });
    }
    let host = env.hostname.as_deref().unwrap_or("");
    let ordinal = host.rsplit_once('-').and_then(|(_, o)| number(o));
    let Some(index) = ordinal else {
        return Err(format!(
            "REGSYNC_SHARDS={count} is set but nothing says which shard this is: set \
             --shard I/N or REGSYNC_SHARD, or run as an Indexed Job (JOB_COMPLETION_INDEX) or \
             a StatefulSet pod (hostname NAME-ORDINAL; the hostname is {host:?})"
        ));
    };
    Shard::new(index, count).map_err(|e| {
        format!("hostname {host:?} with REGSYNC_SHARDS={count}: {e} (replicas must equal REGSYNC_SHARDS)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("mirror/team-{}/repo-{i}", i % 7))
            .collect()
    }

    #[test]
    fn the_hash_is_pinned() {
        // Changing these values reshuffles every fleet: never change them.
        assert_eq!(score(0, ""), fmix64(0x07fc_2807_b4bd_3d5d));
        assert_eq!(score(0, "mirror/library/alpine"), 0x0bc8_2b50_fa5c_25cc);
        assert_eq!(score(3, "mirror/library/alpine"), 0xa86f_b5b1_793d_cfde);
        assert_eq!(owner("mirror/library/alpine", 4), 2);
        assert_eq!(owner("mirror/library/alpine", 5), 4);
        assert_eq!(owner("mirror/library/nginx", 4), 1);
    }

    #[test]
    fn every_repository_has_exactly_one_owner() {
        for count in [1u32, 2, 3, 4, 5, 16] {
            let mut per_shard = vec![0usize; count as usize];
            for repo in names(4000) {
                let owners: Vec<u32> = (0..count)
                    .filter(|&i| Shard { index: i, count }.owns(&repo))
                    .collect();
                assert_eq!(owners.len(), 1, "{repo} of {count}: {owners:?}");
                per_shard[owners[0] as usize] += 1;
            }
            // Balanced: every shard within 20% of its fair part.
            let fair = 4000.0 / f64::from(count);
            for (i, n) in per_shard.iter().enumerate() {
                let n = *n as f64;
                assert!((n - fair).abs() <= fair * 0.2, "{count}: shard {i} has {n}");
            }
        }
    }

    #[test]
    fn one_more_shard_moves_about_one_in_n_plus_one_and_only_to_itself() {
        let repos = names(20_000);
        for n in [1u32, 2, 4, 7] {
            let moved: Vec<&String> = repos
                .iter()
                .filter(|r| owner(r, n) != owner(r, n + 1))
                .collect();
            for r in &moved {
                assert_eq!(owner(r, n + 1), n, "{r} moved elsewhere than the new shard");
            }
            let frac = moved.len() as f64 / repos.len() as f64;
            let want = 1.0 / f64::from(n + 1);
            assert!((frac - want).abs() < 0.02, "{n}→{}: {frac}", n + 1);
        }
    }

    #[test]
    fn parse_and_display() {
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard { index: 2, count: 4 }));
        assert_eq!("".parse::<ShardFlag>(), Ok(ShardFlag(None)));
        assert_eq!(
            "1/2".parse::<ShardFlag>(),
            Ok(ShardFlag(Some(Shard { index: 1, count: 2 })))
        );
        assert_eq!("0/1".parse::<Shard>().unwrap().to_string(), "0/1");
        for bad in [
            "4/4", "1/0", "-1/4", "a/4", "1/b", "14", "", "1/4/2", " 1/4", "1/20000",
        ] {
            let e = bad.parse::<Shard>().unwrap_err();
            assert!(!e.contains('\n'), "{bad}: {e}");
            assert!(!e.is_empty(), "{bad}");
        }
        assert!("4/4"
            .parse::<Shard>()
            .unwrap_err()
            .contains("numbered 0 to 3"));
    }

    fn env(shards: Option<&str>, job: Option<&str>, host: Option<&str>) -> ShardEnv {
        ShardEnv {
            shards: shards.map(String::from),
            job_index: job.map(String::from),
            hostname: host.map(String::from),
        }
    }

    #[test]
    fn resolution_order() {
        let s = |i, n| Shard { index: i, count: n };
        let flag = Some(s(1, 3));
        assert_eq!(resolve(flag, &env(Some("4"), Some("2"), None)), Ok(s(1, 3)));
        assert_eq!(
            resolve(None, &env(None, Some("2"), Some("x-1"))),
            Ok(s(0, 1))
        );
        assert_eq!(
            resolve(None, &env(Some("4"), Some("2"), Some("x-1"))),
            Ok(s(2, 4))
        );
        assert_eq!(
            resolve(None, &env(Some("4"), None, Some("regsync-3"))),
            Ok(s(3, 4))
        );
        assert_eq!(
            resolve(None, &env(Some("5"), None, Some("mirror-sts-0"))),
            Ok(s(0, 5))
        );
        for (e, needle) in [
            (
                env(Some("4"), None, Some("myhost")),
                "nothing says which shard",
            ),
            (env(Some("4"), None, None), "nothing says which shard"),
            (env(Some("4"), Some("4"), None), "JOB_COMPLETION_INDEX=4"),
            (
                env(Some("4"), Some("x"), None),
                "JOB_COMPLETION_INDEX \"x\"",
            ),
            (env(Some("0"), Some("0"), None), "REGSYNC_SHARDS"),
            (
                env(Some("4"), None, Some("regsync-7")),
                "hostname \"regsync-7\"",
            ),
        ] {
            let err = resolve(None, &e).unwrap_err();
            assert!(err.contains(needle), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }
}
