//! Build information for `regsync version` (spec §2.3): the git commit, its date (RFC 3339,
//! UTC), the tree state and an exact tag, read with `git` when it is available, and the rustc
//! version. Anything unknown is left empty (printed as `unknown`). `REGSYNC_VCS_TAG` in the
//! environment overrides the tag (release builds). The state is taken when the build script
//! runs (on a new commit or checkout), not on every edit.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=REGSYNC_VCS_TAG");
    // Only a repository that tracks these sources says which commit they are: one that
    // merely encloses them (a crate unpacked under a home directory kept in git) does not.
    let in_repo = git(&["ls-files", "--error-unmatch", "build.rs"]).is_some();
    // A new commit or checkout changes HEAD or the branch it names. `git rev-parse` finds
    // both where they are: in `.git`, or, in a linked worktree (`.git` is a file), HEAD in
    // the repository's `worktrees/<name>` and the branches in the repository's own directory.
    if let (true, Some(git_dir), Some(common_dir)) = (
        in_repo,
        git(&["rev-parse", "--git-dir"]),
        git(&["rev-parse", "--git-common-dir"]),
    ) {
        let head = Path::new(&git_dir).join("HEAD");
        println!("cargo:rerun-if-changed={}", head.display());
        if let Ok(text) = std::fs::read_to_string(&head) {
            if let Some(r) = text.trim().strip_prefix("ref: ") {
                let branch = Path::new(&common_dir).join(r);
                if branch.exists() {
                    println!("cargo:rerun-if-changed={}", branch.display());
                }
            }
        }
    }

    let commit = if in_repo {
        git(&["rev-parse", "HEAD"]).unwrap_or_default()
    } else {
        String::new()
    };
    let mut date = String::new();
    let mut state = String::new();
    let mut tag = std::env::var("REGSYNC_VCS_TAG").unwrap_or_default();
    if !commit.is_empty() {
        // committer date in UTC
        if let Ok(out) = Command::new("git")
            .args(["log", "-1", "--format=%cd", "--date=iso-strict-local"])
            .env("TZ", "UTC")
            .output()
        {
            let d = String::from_utf8_lossy(&out.stdout).trim().to_string();
            date = match d.strip_suffix("+00:00") {
                Some(base) => format!("{base}Z"),
                None => d,
            };
        }
        if let Some(status) = git(&["status", "--porcelain", "--untracked-files=no"]) {
            state = if status.is_empty() { "clean" } else { "dirty" }.to_string();
        }
        if tag.is_empty() {
            tag = git(&["describe", "--tags", "--exact-match", "HEAD"]).unwrap_or_default();
        }
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .and_then(|v| v.split_whitespace().nth(1).map(|ver| format!("rustc{ver}")))
        .unwrap_or_default();

    println!("cargo:rustc-env=REGSYNC_VCS_COMMIT={commit}");
    println!("cargo:rustc-env=REGSYNC_VCS_DATE={date}");
    println!("cargo:rustc-env=REGSYNC_VCS_STATE={state}");
    println!("cargo:rustc-env=REGSYNC_VCS_TAG={tag}");
    println!("cargo:rustc-env=REGSYNC_RUSTC_VERSION={rustc_version}");
}
