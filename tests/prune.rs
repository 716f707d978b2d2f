//! Tag pruning (`cleanupTags`) backed by the state database (`--state`), against real
//! registries: only tags regsync-rs wrote for the step are deleted, never a third party's,
//! never on an empty, failed or too sweeping listing; `check` only names them; an OCI layout
//! loses the index entry; a registry that refuses deletes is one line per step; a run killed
//! with SIGKILL leaves a database the next run makes consistent; a corrupt state file is one
//! line and exit 1; a second writer on a state file in use is refused, its readers are not.

mod common;

use common::server::Server;
use common::*;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const SRC_REPO: &str = "src/app";
const DST_REPO: &str = "mirror/app";

/// `n` distinct single-platform images as `v1..vn` in the source.
fn seed(src: &Registry, tags: &[&str]) {
    for (i, t) in tags.iter().enumerate() {
        push(src, SRC_REPO, t, &oci_image(9100 + i as u64));
    }
}

/// Delete a tag from a registry (its image is unique to it in these tests).
fn delete_tag(reg: &Registry, repo: &str, tag: &str) {
    let digest = manifest_digest(reg, repo, tag).expect("tag to delete");
    let status = block_on(async {
        http()
            .delete(format!("{}/v2/{repo}/manifests/{digest}", reg.url()))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(status, 202, "DELETE {repo}@{digest}");
}

/// A repository step with pruning on; `extra` lines are added to the step.
fn prune_config(src: &Registry, dst: &str, extra: &str, eps: &[&dyn Endpoint]) -> String {
    let mut step = format!(
        "source: {}/{SRC_REPO}\ntarget: {dst}\ntype: repository\ncleanupTags: true\n",
        src.host()
    );
    step.push_str(extra);
    config(eps, 2, &[step])
}

struct StateFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl StateFile {
    fn new() -> StateFile {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        StateFile { _dir: dir, path }
    }
    fn arg(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

fn once(cfg: &str, state: &StateFile) -> Output {
    regsync(&["once", "--state", state.arg()], cfg)
}

fn pruned(out: &Output) -> u64 {
    summary_field(out, "tags_pruned")
}

/// `regsync state list` of `state`: its stdout lines.
fn state_list(state: &StateFile) -> Vec<String> {
    let out = regsync_raw(&["state", "list", "--state", state.arg()]);
    assert!(out.success(), "{}", out.dump());
    out.stdout.lines().map(str::to_string).collect()
}

/// The tags the database records for `target` (a repository reference).
fn recorded(state: &StateFile, target: &str) -> Vec<String> {
    let mut tags: Vec<String> = state_list(state)
        .iter()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter_map(|r| r.strip_prefix(&format!("{target}:")).map(str::to_string))
        .collect();
    tags.sort();
    tags
}

#[test]
fn a_tag_removed_upstream_is_pruned_and_a_third_party_tag_is_kept() {
    let src = Registry::start();
    let dst = Registry::start();
    seed(&src, &["v1", "v2", "v3", "v4"]);
    let state = StateFile::new();
    let target = format!("{}/{DST_REPO}", dst.host());
    let cfg = prune_config(&src, &target, "", &[&src, &dst]);
    let first = once(&cfg, &state);
    first.assert_ok();
    assert_eq!(pruned(&first), 0);
    assert_eq!(recorded(&state, &target), ["v1", "v2", "v3", "v4"]);
    // somebody else tags the mirror's v4 image as their own: deleting v4 must keep it
    let v4 = manifest_digest(&dst, DST_REPO, "v4").unwrap();
    push(&dst, DST_REPO, "mine", &oci_image(9100 + 3));
    assert_eq!(
        manifest_digest(&dst, DST_REPO, "mine").as_deref(),
        Some(v4.as_str())
    );
    delete_tag(&src, SRC_REPO, "v4");

    let second = once(&cfg, &state);
    second.assert_ok();
    assert_eq!(tags(&dst, DST_REPO), ["mine", "v1", "v2", "v3"]);
    assert_eq!(manifest_digest(&dst, DST_REPO, "mine"), Some(v4));
    assert_eq!(pruned(&second), 1, "{}", second.dump());
    assert!(
        log_mentions(&second, "Tag pruned", "target", &format!("{target}:v4")),
        "{}",
        second.dump()
    );
    assert!(
        log_mentions(&second, "Unmanaged tags kept", "tags", "mine"),
        "{}",
        second.dump()
    );
    assert_eq!(recorded(&state, &target), ["v1", "v2", "v3"]);
    // the deletion is on record, with its reason
    let out = regsync_raw(&["state", "list", "deletions", "--state", state.arg()]);
    assert!(out.success(), "{}", out.dump());
    assert!(
        out.stdout.contains(&format!("{target}:v4")) && out.stdout.contains("gone from the source"),
        "{}",
        out.stdout
    );
    // show one record, forget it: that tag is then unmanaged and never pruned
    let show = regsync_raw(&[
        "state",
        "show",
        &format!("{target}:v3"),
        "--state",
        state.arg(),
    ]);
    assert!(show.success(), "{}", show.dump());
    assert!(show.stdout.contains("source_digest"), "{}", show.stdout);
    let forget = regsync_raw(&[
        "state",
        "forget",
        &format!("{target}:v3"),
        "--state",
        state.arg(),
    ]);
    assert!(forget.success(), "{}", forget.dump());
    assert_eq!(recorded(&state, &target), ["v1", "v2"]);
    delete_tag(&src, SRC_REPO, "v3");
    let third = once(&cfg, &state);
    third.assert_ok();
    assert_eq!(pruned(&third), 0);
    assert!(tags(&dst, DST_REPO).contains(&"v3".to_string()));
}

#[test]
fn a_changed_filter_prunes_and_an_exclude_pattern_keeps() {
    let src = Registry::start();
    let dst = Registry::start();
    seed(&src, &["v1", "v2", "v3", "v4", "v5", "v5.sig"]);
    let state = StateFile::new();
    let target = format!("{}/{DST_REPO}", dst.host());
    let all = prune_config(&src, &target, "cleanupTagsMaxPercent: 50\n", &[&src, &dst]);
    once(&all, &state).assert_ok();
    assert_eq!(tags(&dst, DST_REPO).len(), 6);
    // v2 now denied (pruned), v3 denied but excluded from pruning (kept), v5.sig gone
    // upstream but matched by the default excludes (kept)
    delete_tag(&src, SRC_REPO, "v5.sig");
    let narrowed = prune_config(
        &src,
        &target,
        "cleanupTagsMaxPercent: 50\ncleanupTagsExclude: ['v3', '.*\\.sig']\ntags:\n  deny: ['v2', 'v3']\n",
        &[&src, &dst],
    );
    let out = once(&narrowed, &state);
    out.assert_ok();
    assert_eq!(tags(&dst, DST_REPO), ["v1", "v3", "v4", "v5", "v5.sig"]);
    assert_eq!(pruned(&out), 1);
    assert!(
        log_mentions(
            &out,
            "Tag pruned",
            "reason",
            "excluded by the step's filters"
        ),
        "{}",
        out.dump()
    );
}

#[test]
fn the_default_excludes_keep_signatures() {
    let src = Registry::start();
    let dst = Registry::start();
    seed(&src, &["v1", "v2", "v3", "v4", "v4.sig", "v4.att"]);
    let state = StateFile::new();
    let target = format!("{}/{DST_REPO}", dst.host());
    let cfg = prune_config(&src, &target, "cleanupTagsMaxPercent: 100\n", &[&src, &dst]);
    once(&cfg, &state).assert_ok();
    delete_tag(&src, SRC_REPO, "v4.sig");
    delete_tag(&src, SRC_REPO, "v4.att");
    let out = once(&cfg, &state);
    out.assert_ok();
    assert_eq!(pruned(&out), 0, "{}", out.dump());
    assert_eq!(tags(&dst, DST_REPO).len(), 6);
}

#[test]
fn an_empty_or_failing_source_listing_deletes_nothing() {
    let mut src = Registry::start();
    let dst = Registry::start();
    seed(&src, &["v1", "v2"]);
    let state = StateFile::new();
    let target = format!("{}/{DST_REPO}", dst.host());
    let cfg = prune_config(&src, &target, "cleanupTagsMaxPercent: 100\n", &[&src, &dst]);
    once(&cfg, &state).assert_ok();
    // every tag gone upstream: an outage looks the same, so nothing is deleted
    delete_tag(&src, SRC_REPO, "v1");
    delete_tag(&src, SRC_REPO, "v2");
    let empty = once(&cfg, &state);
    assert_eq!(tags(&dst, DST_REPO), ["v1", "v2"], "{}", empty.dump());
    let warns: Vec<_> = empty
        .logs("Tag prune skipped")
        .into_iter()
        .filter(|l| l["level"] == "WARN")
        .collect();
    assert_eq!(warns.len(), 1, "{}", empty.dump());
    assert_eq!(pruned(&empty), 0);
    // the source down: the listing fails, nothing is deleted, one WARN
    src.stop();
    let failed = once(&cfg, &state);
    failed.assert_fail();
    assert_eq!(tags(&dst, DST_REPO), ["v1", "v2"]);
    assert_eq!(
        failed.logs("Tag prune skipped").len(),
        1,
        "{}",
        failed.dump()
    );
    assert!(
        log_mentions(&failed, "Tag prune skipped", "reason", "listing failed"),
        "{}",
        failed.dump()
    );
}

#[test]
fn more_than_the_percentage_deletes_nothing() {
    let src = Registry::start();
    let dst = Registry::start();
    seed(&src, &["v1", "v2", "v3", "v4"]);
    let state = StateFile::new();
    let target = format!("{}/{DST_REPO}", dst.host());
    let cfg = prune_config(&src, &target, "", &[&src, &dst]);
    once(&cfg, &state).assert_ok();
    delete_tag(&src, SRC_REPO, "v3");
    delete_tag(&src, SRC_REPO, "v4");
    let out = once(&cfg, &state);
    out.assert_ok();
    assert_eq!(tags(&dst, DST_REPO), ["v1", "v2", "v3", "v4"]);
    assert_eq!(pruned(&out), 0);
    let skipped = out.logs("Tag prune skipped");
    assert_eq!(skipped.len(), 1, "{}", out.dump());
    assert_eq!(skipped[0]["level"], "WARN");
    assert!(
        skipped[0]["reason"].as_str().unwrap().contains("25"),
        "{}",
        skipped[0]
    );
}

#[test]
fn check_names_each_tag_and_deletes_nothing() {
    let src = Registry::start();
    let dst = Registry::start();
    seed(&src, &["v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8"]);
    let state = StateFile::new();
    let target = format!("{}/{DST_REPO}", dst.host());
    let cfg = prune_config(&src, &target, "", &[&src, &dst]);
    once(&cfg, &state).assert_ok();
    delete_tag(&src, SRC_REPO, "v7");
    delete_tag(&src, SRC_REPO, "v8");
    let mark = dst.access_log().len();
    let out = regsync(&["check", "--state", state.arg()], &cfg);
    out.assert_ok();
    let named: Vec<&str> = out
        .logs("Tag prune needed")
        .iter()
        .filter_map(|l| l["target"].as_str())
        .collect();
    assert_eq!(
        named,
        [format!("{target}:v7"), format!("{target}:v8")],
        "{}",
        out.dump()
    );
    assert!(dst.writes_since(mark).is_empty(), "check wrote");
    assert_eq!(tags(&dst, DST_REPO).len(), 8);
    assert_eq!(recorded(&state, &target).len(), 8);
}

#[test]
fn an_oci_layout_target_loses_the_index_entry() {
    let src = Registry::start();
    seed(&src, &["v1", "v2", "v3", "v4"]);
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("app");
    let target = ocidir_ref(&layout, "");
    let state = StateFile::new();
    let cfg = prune_config(&src, &target, "", &[&src]);
    once(&cfg, &state).assert_ok();
    assert_eq!(tags(layout.as_path(), ""), ["v1", "v2", "v3", "v4"]);
    let v4 = manifest_digest(layout.as_path(), "", "v4").unwrap();
    delete_tag(&src, SRC_REPO, "v4");
    let out = once(&cfg, &state);
    out.assert_ok();
    assert_eq!(pruned(&out), 1, "{}", out.dump());
    assert_eq!(tags(layout.as_path(), ""), ["v1", "v2", "v3"]);
    // its manifest, no longer referenced, is collected
    let blob = layout.join("blobs/sha256").join(common::fixtures::hex(&v4));
    assert!(!blob.exists(), "{blob:?} still there");
}

#[test]
fn a_registry_refusing_deletes_is_one_line_per_step() {
    let src = Registry::start();
    let dst = Registry::start_with(RegistryOpts {
        no_delete: true,
        ..Default::default()
    });
    seed(&src, &["v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8"]);
    let state = StateFile::new();
    let target = format!("{}/{DST_REPO}", dst.host());
    let cfg = prune_config(&src, &target, "", &[&src, &dst]);
    once(&cfg, &state).assert_ok();
    delete_tag(&src, SRC_REPO, "v7");
    delete_tag(&src, SRC_REPO, "v8");
    let out = once(&cfg, &state);
    out.assert_fail();
    let line = out.assert_one_error_line(&["sync[0]"]);
    assert!(line.contains("refuses deletes"), "{line}");
    assert_eq!(tags(&dst, DST_REPO).len(), 8);
    // the records stay: nothing was deleted
    assert_eq!(recorded(&state, &target).len(), 8);
}

/// The same for a `registry` step: the registry's refusal is learnt once, at its first
/// repository, and is one line for the step, not one line (and one probe) per repository.
#[test]
fn a_registry_refusing_deletes_is_one_line_for_a_registry_step() {
    let src = Registry::start();
    let dst = Registry::start_with(RegistryOpts {
        no_delete: true,
        ..Default::default()
    });
    for (i, repo) in ["src/app", "src/other", "src/third"].iter().enumerate() {
        for (j, tag) in ["v1", "v2"].iter().enumerate() {
            push(&src, repo, tag, &oci_image(9200 + 10 * i as u64 + j as u64));
        }
    }
    let state = StateFile::new();
    let step = format!(
        "source: {}\ntarget: {}\ntype: registry\ncleanupTags: true\ncleanupTagsMaxPercent: 50\n",
        src.host(),
        dst.host()
    );
    let cfg = config(&[&src, &dst], 2, &[step]);
    once(&cfg, &state).assert_ok();
    for repo in ["src/app", "src/other", "src/third"] {
        delete_tag(&src, repo, "v2");
    }
    let mark = dst.mark();
    let out = once(&cfg, &state);
    out.assert_fail();
    let line = out.assert_one_error_line(&["sync[0]"]);
    assert!(line.contains("refuses deletes"), "{line}");
    let deletes = dst
        .access_since(mark)
        .iter()
        .filter(|l| l.method == "DELETE")
        .count();
    assert!(
        deletes <= 2,
        "{deletes} DELETE requests: one repository's tag delete and probe"
    );
}

/// Every record names a tag the target holds with that digest.
fn assert_consistent(state: &StateFile, dst: &Registry, target: &str) {
    let lines = state_list(state);
    for l in &lines {
        let mut f = l.split_whitespace();
        let (Some(r), Some(digest)) = (f.next(), f.next()) else {
            continue;
        };
        let Some(tag) = r.strip_prefix(&format!("{target}:")) else {
            continue;
        };
        assert_eq!(
            manifest_digest(dst, DST_REPO, tag).as_deref(),
            Some(digest),
            "record {l} without its tag"
        );
    }
}

#[test]
fn a_run_killed_mid_way_leaves_a_database_the_next_run_makes_consistent() {
    let src = Registry::start();
    let dst = Registry::start();
    let names: Vec<String> = (1..=24).map(|i| format!("v{i}")).collect();
    for (i, t) in names.iter().enumerate() {
        let img = ImageSpec::new(9300 + i as u64, Format::Oci)
            .layers(2, 256 * 1024)
            .build();
        push(&src, SRC_REPO, t, &img);
    }
    let state = StateFile::new();
    let target = format!("{}/{DST_REPO}", dst.host());
    let cfg = prune_config(&src, &target, "", &[&src, &dst]);
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("regsync.yml");
    std::fs::write(&cfg_path, &cfg).unwrap();
    let mut child = std::process::Command::new(common::run::bin())
        .args(["once", "--logopt", "json", "--state", state.arg(), "-c"])
        .arg(&cfg_path)
        .env("DOCKER_CONFIG", dir.path())
        .env("NO_PROXY", "127.0.0.1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // kill -9 once some tags landed and others did not
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while tags(&dst, DST_REPO).len() < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
    // whatever the database holds, the target holds it too
    assert_consistent(&state, &dst, &target);
    let rerun = once(&cfg, &state);
    rerun.assert_ok();
    assert_consistent(&state, &dst, &target);
    let mut want = names.clone();
    want.sort();
    assert_eq!(recorded(&state, &target), want);
    assert_eq!(tags(&dst, DST_REPO), want);
    // and pruning works from it
    delete_tag(&src, SRC_REPO, "v24");
    let after = once(&cfg, &state);
    after.assert_ok();
    assert_eq!(pruned(&after), 1);
    assert!(!tags(&dst, DST_REPO).contains(&"v24".to_string()));
}

#[test]
fn a_corrupt_state_file_is_one_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("state.db");
    std::fs::write(&bad, vec![0x5au8; 4096]).unwrap();
    let src = Registry::start();
    let cfg = config(
        &[&src],
        1,
        &[repo_step(
            &format!("{}/{SRC_REPO}", src.host()),
            &format!("{}/x", src.host()),
            &[],
            &[],
        )],
    );
    let mark = src.access_log().len();
    let out = regsync(&["once", "--state", bad.to_str().unwrap()], &cfg);
    out.assert_fail();
    out.assert_no_panic();
    out.assert_one_error_line(&[bad.to_str().unwrap(), "corrupt"]);
    assert!(
        src.access_since(mark).is_empty(),
        "requests before the check"
    );
    // the same through the environment, and for `state list`
    let out = regsync_env(&["once"], &cfg, &[("REGSYNC_STATE", bad.to_str().unwrap())]);
    out.assert_fail();
    out.assert_one_error_line(&[bad.to_str().unwrap()]);
    let out = regsync_raw(&["state", "list", "--state", bad.to_str().unwrap()]);
    out.assert_fail();
    out.assert_one_error_line(&[bad.to_str().unwrap()]);
}

#[test]
fn cleanup_tags_without_state_is_a_config_error() {
    let src = Registry::start();
    let cfg = prune_config(&src, &format!("{}/x", src.host()), "", &[&src]);
    let out = regsync(&["once"], &cfg);
    out.assert_fail();
    out.assert_no_panic();
    out.assert_one_error_line(&["sync[0]", "cleanupTags", "--state"]);
    // a bad exclude pattern names the field
    let bad = prune_config(
        &src,
        &format!("{}/x", src.host()),
        "cleanupTagsExclude: ['(']\n",
        &[&src],
    );
    let state = StateFile::new();
    let out = once(&bad, &state);
    out.assert_fail();
    out.assert_one_error_line(&["sync[0]", "cleanupTagsExclude"]);
    // without cleanupTags and without --state nothing changes (no state file appears)
    let plain = config(
        &[&src],
        1,
        &[repo_step(
            &format!("{}/{SRC_REPO}", src.host()),
            &format!("{}/x", src.host()),
            &[],
            &[],
        )],
    );
    let out = regsync(&["once"], &plain);
    assert!(out
        .json_logs
        .iter()
        .all(|l| l["msg"] != "Tag prune skipped"));
}

/// An SBOM referrer of `subject` (pushed by digest and listed in the referrers fallback tag
/// `sha256-<hex>`, as on a registry without the referrers API) and a cosign-style signature
/// under the digest tag `sha256-<hex>.sig`.
struct Followers {
    sbom: TestImage,
    sig: TestImage,
}

fn artifact(seed: u64, artifact_type: &str, subject: Option<&TestImage>) -> TestImage {
    let cfg = Blob::new("application/vnd.oci.empty.v1+json", b"{}".to_vec());
    let data = Blob::new(
        "application/octet-stream",
        format!("artifact payload {seed}").into_bytes(),
    );
    let mut m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": common::oci::MT_OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": cfg.descriptor(),
        "layers": [data.descriptor()],
    });
    if let Some(s) = subject {
        m["subject"] = serde_json::json!({
            "mediaType": s.top.media_type, "digest": s.top.digest, "size": s.top.bytes.len()
        });
    }
    TestImage {
        top: common::oci::Manifest::from_json(common::oci::MT_OCI_MANIFEST, &m),
        children: vec![],
        blobs: vec![cfg, data],
    }
}

fn add_followers(reg: &Registry, repo: &str, subject: &TestImage, seed: u64) -> Followers {
    let sbom = artifact(seed, "application/example.sbom", Some(subject));
    push(reg, repo, &sbom.top.digest.clone(), &sbom);
    let entry = serde_json::json!({
        "mediaType": sbom.top.media_type,
        "digest": sbom.top.digest,
        "size": sbom.top.bytes.len(),
        "artifactType": "application/example.sbom",
    });
    let index = TestImage {
        top: common::oci::Manifest::from_json(
            common::oci::MT_OCI_INDEX,
            &serde_json::json!({
                "schemaVersion": 2, "mediaType": common::oci::MT_OCI_INDEX, "manifests": [entry]
            }),
        ),
        children: vec![],
        blobs: vec![],
    };
    let hex = common::fixtures::hex(subject.digest()).to_string();
    push(reg, repo, &format!("sha256-{hex}"), &index);
    let sig = artifact(
        seed + 1,
        "application/vnd.dev.cosign.simplesigning.v1+json",
        None,
    );
    push(reg, repo, &format!("sha256-{hex}.sig"), &sig);
    Followers { sbom, sig }
}

/// The `Tag pruned` line of `tag`.
fn pruned_line<'a>(out: &'a Output, target: &str, tag: &str) -> &'a serde_json::Value {
    let want = format!("{target}:{tag}");
    out.logs("Tag pruned")
        .into_iter()
        .find(|l| l["target"].as_str() == Some(want.as_str()))
        .unwrap_or_else(|| panic!("no Tag pruned line for {want}\n{}", out.dump()))
}

/// With `referrers` and `digestTags`, a pruned tag takes the referrers and digest tags of its
/// image along (the referrer manifest, the fallback tag, the `.sig` tag) — but not while
/// another tag of the target (here a third party's) still points at that image. `check` names
/// them and deletes nothing; `tags_pruned` counts tags only, the `Tag pruned` line counts the
/// followers.
#[test]
fn a_pruned_tag_takes_its_referrers_and_digest_tags_unless_its_image_is_still_tagged() {
    let src = Registry::start();
    let dst = Registry::start();
    let images: Vec<TestImage> = (0..4).map(|i| oci_image(9200 + i)).collect();
    for (i, img) in images.iter().enumerate() {
        push(&src, SRC_REPO, &format!("v{}", i + 1), img);
    }
    let f3 = add_followers(&src, SRC_REPO, &images[2], 9300);
    let f4 = add_followers(&src, SRC_REPO, &images[3], 9310);
    let hex3 = common::fixtures::hex(images[2].digest()).to_string();
    let hex4 = common::fixtures::hex(images[3].digest()).to_string();
    let state = StateFile::new();
    let target = format!("{}/{DST_REPO}", dst.host());
    let cfg = prune_config(
        &src,
        &target,
        "cleanupTagsMaxPercent: 50\nreferrers: true\ndigestTags: true\ntags:\n  allow: ['v[0-9]+']\n",
        &[&src, &dst],
    );
    once(&cfg, &state).assert_ok();
    let all = tags(&dst, DST_REPO);
    for t in [
        format!("sha256-{hex3}"),
        format!("sha256-{hex3}.sig"),
        format!("sha256-{hex4}"),
        format!("sha256-{hex4}.sig"),
    ] {
        assert!(all.contains(&t), "{t} not copied: {all:?}");
    }
    for f in [&f3, &f4] {
        assert!(get_manifest(&dst, DST_REPO, f.sbom.digest()).is_some());
    }
    // somebody else tags v3's image in the mirror: v3's followers must stay
    push(&dst, DST_REPO, "mine", &images[2]);
    delete_tag(&src, SRC_REPO, "v3");
    delete_tag(&src, SRC_REPO, "v4");

    // check: names v4's followers, nothing of v3's, writes nothing
    let mark = dst.access_log().len();
    let out = regsync(&["check", "--state", state.arg()], &cfg);
    out.assert_ok();
    let named: Vec<&str> = out
        .logs("Digest tag prune needed")
        .iter()
        .filter_map(|l| l["target"].as_str())
        .collect();
    assert_eq!(
        named,
        [
            format!("{target}:sha256-{hex4}"),
            format!("{target}:sha256-{hex4}.sig")
        ],
        "{}",
        out.dump()
    );
    assert!(
        log_mentions(
            &out,
            "Referrer prune needed",
            "target",
            &format!("{target}@{}", f4.sbom.digest())
        ),
        "{}",
        out.dump()
    );
    assert_eq!(out.logs("Referrer prune needed").len(), 1, "{}", out.dump());
    assert!(dst.writes_since(mark).is_empty(), "check wrote");

    let out = once(&cfg, &state);
    out.assert_ok();
    assert_eq!(
        pruned(&out),
        2,
        "tags_pruned counts tags only\n{}",
        out.dump()
    );
    assert_eq!(
        tags(&dst, DST_REPO),
        [
            "mine".to_string(),
            format!("sha256-{hex3}"),
            format!("sha256-{hex3}.sig"),
            "v1".to_string(),
            "v2".to_string()
        ]
    );
    assert!(
        get_manifest(&dst, DST_REPO, f4.sbom.digest()).is_none(),
        "v4's SBOM referrer is still in the target"
    );
    assert!(get_manifest(&dst, DST_REPO, f3.sbom.digest()).is_some());
    assert!(get_manifest(&dst, DST_REPO, f3.sig.digest()).is_some());
    // the image another tag uses is intact
    assert_eq!(
        manifest_digest(&dst, DST_REPO, "mine").as_deref(),
        Some(images[2].digest())
    );
    let l4 = pruned_line(&out, &target, "v4");
    assert_eq!(l4["digest_tags"].as_u64(), Some(2), "{l4}");
    assert_eq!(l4["referrers"].as_u64(), Some(1), "{l4}");
    let l3 = pruned_line(&out, &target, "v3");
    assert_eq!(l3["digest_tags"].as_u64(), Some(0), "{l3}");
    assert_eq!(l3["referrers"].as_u64(), Some(0), "{l3}");
    assert!(
        log_mentions(
            &out,
            "Referrer pruned",
            "target",
            &format!("{target}@{}", f4.sbom.digest())
        ),
        "{}",
        out.dump()
    );
    // on record, following their subject
    let deletions = regsync_raw(&["state", "list", "deletions", "--state", state.arg()]);
    assert!(deletions.success(), "{}", deletions.dump());
    assert!(
        deletions
            .stdout
            .contains(&format!("{target}:sha256-{hex4}.sig")),
        "{}",
        deletions.stdout
    );
}

/// Without `referrers`/`digestTags` the step does not copy them, so pruning leaves them.
#[test]
fn followers_stay_when_the_step_does_not_copy_them() {
    let src = Registry::start();
    let dst = Registry::start();
    let images: Vec<TestImage> = (0..4).map(|i| oci_image(9240 + i)).collect();
    for (i, img) in images.iter().enumerate() {
        push(&src, SRC_REPO, &format!("v{}", i + 1), img);
    }
    let state = StateFile::new();
    let target = format!("{}/{DST_REPO}", dst.host());
    let cfg = prune_config(
        &src,
        &target,
        "tags:\n  allow: ['v[0-9]+']\n",
        &[&src, &dst],
    );
    once(&cfg, &state).assert_ok();
    // followers pushed into the target by someone else
    let f4 = add_followers(&dst, DST_REPO, &images[3], 9330);
    let hex4 = common::fixtures::hex(images[3].digest()).to_string();
    delete_tag(&src, SRC_REPO, "v4");
    let out = once(&cfg, &state);
    out.assert_ok();
    assert_eq!(pruned(&out), 1);
    let left = tags(&dst, DST_REPO);
    assert!(
        left.contains(&format!("sha256-{hex4}")) && left.contains(&format!("sha256-{hex4}.sig")),
        "{left:?}"
    );
    assert!(get_manifest(&dst, DST_REPO, f4.sbom.digest()).is_some());
    let l4 = pruned_line(&out, &target, "v4");
    assert_eq!(l4["digest_tags"].as_u64(), Some(0), "{l4}");
}

/// `backup` on a pruning step: the tag is written under its backup name, from the manifest
/// the target holds, before it is deleted (the registry's own access log shows the order).
#[test]
fn backup_writes_the_backup_tag_before_the_delete() {
    let src = Registry::start();
    let dst = Registry::start();
    seed(&src, &["v1", "v2", "v3", "v4"]);
    let state = StateFile::new();
    let target = format!("{}/{DST_REPO}", dst.host());
    let cfg = prune_config(
        &src,
        &target,
        "backup: \"bak-{{.Ref.Tag}}\"\n",
        &[&src, &dst],
    );
    once(&cfg, &state).assert_ok();
    let v4 = manifest_digest(&dst, DST_REPO, "v4").unwrap();
    delete_tag(&src, SRC_REPO, "v4");
    let mark = dst.mark();
    let out = once(&cfg, &state);
    out.assert_ok();
    assert_eq!(pruned(&out), 1, "{}", out.dump());
    assert_eq!(tags(&dst, DST_REPO), ["bak-v4", "v1", "v2", "v3"]);
    assert_eq!(manifest_digest(&dst, DST_REPO, "bak-v4"), Some(v4));
    let writes = dst.writes_since(mark);
    let backup_put = writes
        .iter()
        .position(|l| l.method == "PUT" && l.path.ends_with("/manifests/bak-v4"))
        .unwrap_or_else(|| panic!("no backup PUT in {writes:?}"));
    let first_delete = writes
        .iter()
        .position(|l| l.method == "DELETE")
        .unwrap_or_else(|| panic!("no DELETE in {writes:?}"));
    assert!(
        backup_put < first_delete,
        "the backup was written after the delete: {writes:?}"
    );
    assert!(
        log_mentions(&out, "Saving backup", "backup", &format!("{target}:bak-v4")),
        "{}",
        out.dump()
    );
}

/// An OCI layout target: the pruned tag's digest tags and fallback tag leave `index.json`
/// and the referrer's manifest, reachable from nothing any more, is collected.
#[test]
fn an_oci_layout_target_loses_the_followers_too() {
    let src = Registry::start();
    let images: Vec<TestImage> = (0..4).map(|i| oci_image(9260 + i)).collect();
    for (i, img) in images.iter().enumerate() {
        push(&src, SRC_REPO, &format!("v{}", i + 1), img);
    }
    let f4 = add_followers(&src, SRC_REPO, &images[3], 9350);
    let hex4 = common::fixtures::hex(images[3].digest()).to_string();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("app");
    let target = ocidir_ref(&layout, "");
    let state = StateFile::new();
    let cfg = prune_config(
        &src,
        &target,
        "referrers: true\ndigestTags: true\ntags:\n  allow: ['v[0-9]+']\n",
        &[&src],
    );
    once(&cfg, &state).assert_ok();
    let sbom_blob = layout
        .join("blobs/sha256")
        .join(common::fixtures::hex(f4.sbom.digest()));
    assert!(sbom_blob.exists(), "the SBOM referrer was not copied");
    assert!(tags(layout.as_path(), "").contains(&format!("sha256-{hex4}.sig")));
    delete_tag(&src, SRC_REPO, "v4");
    let out = once(&cfg, &state);
    out.assert_ok();
    assert_eq!(pruned(&out), 1, "{}", out.dump());
    assert_eq!(tags(layout.as_path(), ""), ["v1", "v2", "v3"]);
    assert!(!sbom_blob.exists(), "{sbom_blob:?} still there");
    let l4 = pruned_line(&out, &target, "v4");
    assert_eq!(l4["digest_tags"].as_u64(), Some(2), "{l4}");
    assert_eq!(l4["referrers"].as_u64(), Some(1), "{l4}");
}

/// A backup tag written into the same repository holds the pruned image: its referrers and
/// digest tags stay with it.
#[test]
fn a_backup_in_the_same_repository_keeps_the_followers() {
    let src = Registry::start();
    let dst = Registry::start();
    let images: Vec<TestImage> = (0..4).map(|i| oci_image(9280 + i)).collect();
    for (i, img) in images.iter().enumerate() {
        push(&src, SRC_REPO, &format!("v{}", i + 1), img);
    }
    let f4 = add_followers(&src, SRC_REPO, &images[3], 9370);
    let hex4 = common::fixtures::hex(images[3].digest()).to_string();
    let state = StateFile::new();
    let target = format!("{}/{DST_REPO}", dst.host());
    let cfg = prune_config(
        &src,
        &target,
        "referrers: true\ndigestTags: true\nbackup: \"bak-{{.Ref.Tag}}\"\ntags:\n  allow: ['v[0-9]+']\n",
        &[&src, &dst],
    );
    once(&cfg, &state).assert_ok();
    delete_tag(&src, SRC_REPO, "v4");
    let out = once(&cfg, &state);
    out.assert_ok();
    assert_eq!(pruned(&out), 1, "{}", out.dump());
    let left = tags(&dst, DST_REPO);
    assert!(left.contains(&"bak-v4".to_string()), "{left:?}");
    assert!(
        left.contains(&format!("sha256-{hex4}")) && left.contains(&format!("sha256-{hex4}.sig")),
        "{left:?}"
    );
    assert!(get_manifest(&dst, DST_REPO, f4.sbom.digest()).is_some());
    let l4 = pruned_line(&out, &target, "v4");
    assert_eq!(l4["digest_tags"].as_u64(), Some(0), "{l4}");
}

/// A tag this step wrote that somebody else has since pushed another image over is theirs
/// now: when the source drops it, it is kept (its record is forgotten), never deleted.
#[test]
fn a_recorded_tag_someone_else_overwrote_is_kept_and_forgotten() {
    let src = Registry::start();
    let dst = Registry::start();
    seed(&src, &["v1", "v2", "v3", "v4"]);
    let state = StateFile::new();
    let target = format!("{}/{DST_REPO}", dst.host());
    let cfg = prune_config(&src, &target, "", &[&src, &dst]);
    once(&cfg, &state).assert_ok();
    assert_eq!(recorded(&state, &target), ["v1", "v2", "v3", "v4"]);
    // an operator pushes a hotfix over the mirror's v4
    let hotfix = oci_image(9190);
    push(&dst, DST_REPO, "v4", &hotfix);
    let theirs = manifest_digest(&dst, DST_REPO, "v4").unwrap();
    delete_tag(&src, SRC_REPO, "v4");

    let out = once(&cfg, &state);
    out.assert_ok();
    assert_eq!(pruned(&out), 0, "{}", out.dump());
    assert_eq!(manifest_digest(&dst, DST_REPO, "v4"), Some(theirs));
    assert_eq!(recorded(&state, &target), ["v1", "v2", "v3"]);
}

/// One writer per state file, across processes: while a `server` holds the file, a `once`, a
/// second `server` and `state forget` on it are refused at start with one line naming the
/// file and the holder's pid, and write nothing (no request to either registry, the file's
/// bytes unchanged). Reading it keeps working meanwhile: `state list`, `state show` and
/// `check`. Once the server has stopped, the next writer gets the file.
#[test]
fn a_second_writer_on_a_state_file_in_use_is_refused_and_readers_keep_working() {
    let src = Registry::start();
    let dst = Registry::start();
    seed(&src, &["v1", "v2"]);
    let state = StateFile::new();
    let target = format!("{}/{DST_REPO}", dst.host());
    let extra = "interval: 1h\ncleanupTagsMaxPercent: 50\n";
    let cfg = prune_config(&src, &target, extra, &[&src, &dst]);
    let mut server = Server::start(&cfg, &["--state", state.arg()]);
    server.wait_logs("Step summary", 1, Duration::from_secs(60));
    // The end of the initial pass is written just after its summary line.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let runs = regsync_raw(&["state", "list", "runs", "--state", state.arg()]);
        assert!(runs.success(), "{}", runs.dump());
        if runs.stdout.contains("\tok\t") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no ended run recorded: {}",
            runs.stdout
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let bytes = || {
        ["", "-wal"].map(|end| std::fs::read(format!("{}{end}", state.arg())).unwrap_or_default())
    };
    let before = bytes();
    let (src_mark, dst_mark) = (src.mark(), dst.mark());
    let holder = format!("pid {}", server.pid());
    let refused = |what: &str, out: Output| {
        out.assert_fail();
        let line = out.assert_one_error_line(&[state.arg()]);
        assert!(
            line.contains("another regsync process") && line.contains(&holder),
            "{what}: {line}"
        );
    };
    refused("once", once(&cfg, &state));
    refused(
        "a second server",
        regsync(&["server", "--state", state.arg()], &cfg),
    );
    let forget = regsync_raw(&[
        "state",
        "forget",
        &format!("{target}:v1"),
        "--state",
        state.arg(),
    ]);
    refused("state forget", forget);
    assert!(before == bytes(), "a refused writer changed the state file");
    assert!(
        src.access_since(src_mark).is_empty(),
        "requests to the source"
    );
    assert!(
        dst.access_since(dst_mark).is_empty(),
        "requests to the target"
    );

    // Readers: the records, one of them shown, and a check that names what a run would prune.
    assert_eq!(recorded(&state, &target), ["v1", "v2"]);
    let show = regsync_raw(&[
        "state",
        "show",
        &format!("{target}:v2"),
        "--state",
        state.arg(),
    ]);
    assert!(show.success(), "{}", show.dump());
    delete_tag(&src, SRC_REPO, "v2");
    let check = regsync(&["check", "--state", state.arg()], &cfg);
    check.assert_ok();
    assert!(
        log_mentions(
            &check,
            "Tag prune needed",
            "target",
            &format!("{target}:v2")
        ),
        "{}",
        check.dump()
    );
    assert!(server.running(), "{}", server.stderr());

    server.signal(libc::SIGTERM);
    let (st, _) = server.wait_exit(Duration::from_secs(30));
    assert_eq!(st.code(), Some(0), "{}", server.stderr());
    let after = once(&cfg, &state);
    after.assert_ok();
    assert_eq!(pruned(&after), 1, "{}", after.dump());
}

/// A reader of the state database run by an account that may read the file but not write
/// its directory (an operator's own account, a read-only mount): as root that is `nobody`
/// (`setpriv`), reading a root-owned directory; as another user, a directory without write
/// permission. Returns the argv prefix that runs a copy of the binary as that reader (the
/// copy sits in `dir`, so the reader needs no access to the checkout), and makes `dir`
/// read-only for the reader.
fn reader_of(dir: &std::path::Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("regsync-reader");
    std::fs::copy(bin_path(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = unsafe { libc::geteuid() } == 0;
    std::fs::set_permissions(
        dir,
        std::fs::Permissions::from_mode(if root { 0o755 } else { 0o555 }),
    )
    .unwrap();
    let mut argv: Vec<String> = if root {
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ]
        .map(String::from)
        .to_vec()
    } else {
        Vec::new()
    };
    argv.push(bin.display().to_string());
    argv
}

fn bin_path() -> String {
    env!("CARGO_BIN_EXE_regsync").to_string()
}

/// `reader` (from [`reader_of`]) runs `args`.
fn read_as(reader: &[String], args: &[&str]) -> Output {
    let mut argv: Vec<&str> = reader.iter().map(String::as_str).collect();
    argv.extend_from_slice(args);
    run_argv(&argv)
}

fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut f: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f != "regsync-reader")
        .collect();
    f.sort();
    f
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
}

/// A reader needs no write access: `state list` and `state show` by an account that may read
/// the state file but not write its directory work while no writer has the file open.
/// SQLite's WAL would have to create `FILE-shm` beside the file for a read-only connection,
/// and failed with "attempt to write a readonly database". A writer that ended leaves the
/// file whole: no `-wal` or `-shm`.
#[test]
fn a_reader_without_write_access_to_the_directory_reads_the_state() {
    let src = Registry::start();
    let dst = Registry::start();
    seed(&src, &["v1", "v2"]);
    let state = StateFile::new();
    let target = format!("{}/{DST_REPO}", dst.host());
    once(&prune_config(&src, &target, "", &[&src, &dst]), &state).assert_ok();
    let dir = state.path.parent().unwrap();
    // A writer that ended closed the database: everything is in the file itself (a copy of
    // it is a whole backup), no `-wal` or `-shm` is left beside it.
    assert_eq!(files_in(dir), ["state.db", "state.db.lock"]);
    let reader = reader_of(dir);
    set_mode(&state.path, 0o644);
    let list = read_as(&reader, &["state", "list", "--state", state.arg()]);
    let v2 = format!("{target}:v2");
    let show = read_as(&reader, &["state", "show", &v2, "--state", state.arg()]);
    set_mode(dir, 0o700);
    assert!(list.success(), "{}", list.dump());
    assert!(
        list.stdout.contains(&format!("{target}:v1")),
        "{}",
        list.dump()
    );
    assert!(show.success(), "{}", show.dump());
    assert_eq!(
        files_in(dir),
        ["state.db", "state.db.lock"],
        "a reader left files"
    );
}

/// The same reader, when a writer was killed and left records only in `FILE-wal` (with a
/// `FILE-shm` the reader may not use): it must not read the file alone and miss them, also
/// when `--state` names the file through a symlink (SQLite keeps the WAL beside the file the
/// link leads to). It fails with one line instead, as through the file's own path.
#[test]
fn a_reader_that_cannot_use_a_killed_writers_wal_fails_instead_of_reading_stale_records() {
    let src = Registry::start();
    let dst = Registry::start();
    seed(&src, &["v1", "v2"]);
    let state = StateFile::new();
    let target = format!("{}/{DST_REPO}", dst.host());
    let cfg = prune_config(&src, &target, "interval: 1h\n", &[&src, &dst]);
    // v1 and v2 in the file itself (a writer that ended), then v3 only in the WAL.
    once(&cfg, &state).assert_ok();
    push(&src, SRC_REPO, "v3", &oci_image(9150));
    let mut server = Server::start(&cfg, &["--state", state.arg()]);
    server.wait_logs("Step summary", 1, Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !recorded(&state, &target).contains(&"v3".to_string()) {
        assert!(Instant::now() < deadline, "v3 never recorded");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.signal(libc::SIGKILL);
    server.wait_exit(Duration::from_secs(10));
    let dir = state.path.parent().unwrap();
    assert!(
        files_in(dir).contains(&"state.db-wal".to_string()),
        "{:?}",
        files_in(dir)
    );
    let links = tempfile::tempdir().unwrap();
    let link = links.path().join("state.db");
    std::os::unix::fs::symlink(&state.path, &link).unwrap();
    set_mode(links.path(), 0o755);
    let reader = reader_of(dir);
    set_mode(&state.path, 0o644);
    set_mode(&dir.join("state.db-wal"), 0o644);
    set_mode(&dir.join("state.db-shm"), 0o000);
    let direct = read_as(&reader, &["state", "list", "--state", state.arg()]);
    let linked = read_as(
        &reader,
        &["state", "list", "--state", link.to_str().unwrap()],
    );
    set_mode(dir, 0o700);
    for (how, out) in [("the file's path", &direct), ("a symlink", &linked)] {
        assert!(!out.success(), "through {how}: {}", out.dump());
        assert!(
            !out.stdout.contains(&target),
            "through {how}, a partial read: {}",
            out.dump()
        );
    }
}

/// A writer that fails at start, after it opened the database (here: its `--listen` port is
/// taken), closes it too: the file is whole, nothing is left in a WAL beside it.
#[test]
fn a_writer_failing_at_start_leaves_the_state_file_whole() {
    let src = Registry::start();
    let dst = Registry::start();
    seed(&src, &["v1"]);
    let state = StateFile::new();
    let target = format!("{}/{DST_REPO}", dst.host());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let out = regsync(
        &["once", "--state", state.arg(), "--listen", &port],
        &prune_config(&src, &target, "", &[&src, &dst]),
    );
    out.assert_fail();
    assert_eq!(
        files_in(state.path.parent().unwrap()),
        ["state.db", "state.db.lock"]
    );
}
