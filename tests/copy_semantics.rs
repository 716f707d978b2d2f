//! What a copy carries (spec §5.5, §5.7, §6, §11): `platform` / `platforms`, backups before an
//! overwrite, digest tags (including one that points at its own manifest), referrers through
//! the fallback tag schema (CNCF distribution 2.8 has no referrers API), referrer filters and
//! source/target repositories, loops, `fastCheck`, `forceRecursive`, `mediaTypes` and
//! `includeExternal`.

mod common;

use common::oci::{Manifest, MT_OCI_INDEX, MT_OCI_MANIFEST, REF_NAME};
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;

const MT_EMPTY: &str = "application/vnd.oci.empty.v1+json";

fn hex(d: &str) -> &str {
    d.strip_prefix("sha256:").unwrap_or(d)
}

fn fallback_tag(subject: &str) -> String {
    format!("sha256-{}", hex(subject))
}

fn empty_config() -> Blob {
    Blob::new(MT_EMPTY, b"{}".to_vec())
}

/// An OCI 1.1 artifact (image manifest with `artifactType`), optionally referring to
/// `subject` (its top manifest).
fn artifact(
    seed: u64,
    artifact_type: &str,
    subject: Option<&Manifest>,
    annotations: &[(&str, &str)],
) -> TestImage {
    let cfg = empty_config();
    let data = Blob::new(
        "application/octet-stream",
        format!("artifact payload {seed}").into_bytes(),
    );
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": MT_OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": cfg.descriptor(),
        "layers": [data.descriptor()],
    });
    if let Some(s) = subject {
        m["subject"] =
            json!({"mediaType": s.media_type, "digest": s.digest, "size": s.bytes.len()});
    }
    if !annotations.is_empty() {
        let a: serde_json::Map<String, Value> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        m["annotations"] = Value::Object(a);
    }
    TestImage {
        top: Manifest::from_json(MT_OCI_MANIFEST, &m),
        children: vec![],
        blobs: vec![cfg, data],
    }
}

/// The fallback referrers index a tool writes for `referrers` (regclient's entry form).
fn referrers_index(referrers: &[&TestImage]) -> TestImage {
    let entries: Vec<Value> = referrers
        .iter()
        .map(|r| {
            let v = r.top.json();
            let mut e = json!({
                "mediaType": r.top.media_type,
                "digest": r.top.digest,
                "size": r.top.bytes.len(),
                "artifactType": v["artifactType"],
            });
            if v.get("annotations").is_some() {
                e["annotations"] = v["annotations"].clone();
            }
            e
        })
        .collect();
    TestImage {
        top: Manifest::from_json(
            MT_OCI_INDEX,
            &json!({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": entries}),
        ),
        children: vec![],
        blobs: vec![],
    }
}

/// Push `img` by digest (children and blobs first).
fn push_by_digest(loc: impl Into<Loc>, repo: &str, img: &TestImage) {
    let d = img.top.digest.clone();
    push(loc, repo, &d, img);
}

fn fallback_entries(loc: impl Into<Loc>, repo: &str, subject: &str) -> Vec<Value> {
    let m = get_manifest(loc, repo, &fallback_tag(subject))
        .unwrap_or_else(|| panic!("no fallback index for {subject} in {repo}"));
    assert_eq!(m.json()["mediaType"], MT_OCI_INDEX);
    m.json()["manifests"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn entry_digests(entries: &[Value]) -> BTreeSet<String> {
    entries
        .iter()
        .map(|e| e["digest"].as_str().unwrap().to_string())
        .collect()
}

/// The blob digests (config and layers) of an image manifest.
fn manifest_blobs(m: &Manifest) -> Vec<String> {
    let v = m.json();
    let mut out = vec![v["config"]["digest"].as_str().unwrap().to_string()];
    for l in v["layers"].as_array().unwrap() {
        out.push(l["digest"].as_str().unwrap().to_string());
    }
    out
}

fn step_with(base: String, extra: &str) -> String {
    format!("{base}{extra}")
}

fn layout_index(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap()
}

fn layout_has_blob(dir: &Path, digest: &str) -> bool {
    dir.join("blobs/sha256").join(hex(digest)).exists()
}

// ---------------------------------------------------------------------------------------------
// platforms / platform (spec §11, §5.5 step 7, §6.2 step 6)
// ---------------------------------------------------------------------------------------------

#[test]
fn platforms_into_ocidir_pulls_only_the_selected_child() {
    let src = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let img = index_image(700, &["linux/amd64", "linux/arm64", "linux/arm/v7"]);
    push(&src, "app", "v1", &img);
    let (amd, others) = (&img.children[0], &img.children[1..]);
    let layout = tmp.path().join("out");
    let m = src.mark();
    let step = step_with(
        image_step(&src.r("app:v1"), &ocidir_ref(&layout, "v1")),
        "platforms: [linux/amd64]\n",
    );
    let out = regsync(
        &["once", "-v", "debug"],
        &config(&[&src], 0, std::slice::from_ref(&step)),
    );
    out.assert_ok();

    // only the amd64 child's blobs were pulled from the source
    let pulled: BTreeSet<String> = src
        .access_since(m)
        .into_iter()
        .filter(|l| l.method == "GET" && l.path.contains("/blobs/"))
        .map(|l| l.path.rsplit('/').next().unwrap().to_string())
        .collect();
    let want: BTreeSet<String> = manifest_blobs(amd).into_iter().collect();
    assert_eq!(pulled, want, "{}", out.dump());
    assert_eq!(src.count_since(m, "GET", "/blobs/"), want.len());
    // the index is stored byte for byte (same digest), with only the selected child
    assert_eq!(
        manifest_digest(tmp.path(), "out", "v1").as_deref(),
        Some(img.digest())
    );
    assert!(layout_has_blob(&layout, &amd.digest));
    for o in others {
        assert!(
            !layout_has_blob(&layout, &o.digest),
            "excluded child stored"
        );
        for b in manifest_blobs(o) {
            assert!(!layout_has_blob(&layout, &b));
        }
    }
    for b in manifest_blobs(amd) {
        assert!(layout_has_blob(&layout, &b));
    }
    assert_eq!(
        out.logs("Platform excluded from copy").len(),
        2,
        "{}",
        out.dump()
    );
    // GC tolerated the absent children (nothing reachable deleted), and a re-run matches
    let out = regsync(&["once"], &config(&[&src], 0, &[step]));
    out.assert_ok();
    assert_summary(&out, &[("images_matched", 1), ("images_copied", 0)]);
}

#[test]
fn platforms_into_distribution_fails_with_a_clear_message() {
    let (src, dst) = (Registry::start(), Registry::start());
    let img = index_image(701, &["linux/amd64", "linux/arm64"]);
    push(&src, "app", "v1", &img);
    let step = step_with(
        image_step(&src.r("app:v1"), &dst.r("app:v1")),
        "platforms: [linux/amd64]\n",
    );
    let out = regsync(&["once"], &config(&[&src, &dst], 0, &[step]));
    out.assert_fail();
    let line = out.assert_one_error_line(&["refused the index"]);
    assert!(line.contains("linux/arm64"), "{line}");
    assert!(line.contains(&dst.r("app:v1")), "{line}");
    assert!(!line.contains('\n'));
    // the selected child went in (by digest); the index did not
    assert!(get_manifest(&dst, "app", &img.children[0].digest).is_some());
    assert!(get_manifest(&dst, "app", &img.children[1].digest).is_none());
    assert_eq!(manifest_digest(&dst, "app", "v1"), None);
    assert_summary(&out, &[("images_failed", 1)]);
}

#[test]
fn platform_picks_the_best_child_and_warns_when_none_fits() {
    let (src, dst) = (Registry::start(), Registry::start());
    let img = index_image(702, &["linux/amd64", "linux/arm64", "linux/arm/v6"]);
    push(&src, "app", "v1", &img);
    let cfg = |platform: &str, tag: &str| {
        config(
            &[&src, &dst],
            0,
            &[step_with(
                image_step(&src.r("app:v1"), &dst.r(&format!("app:{tag}"))),
                &format!("platform: {platform}\n"),
            )],
        )
    };
    regsync(&["once"], &cfg("linux/arm64", "arm64")).assert_ok();
    assert_eq!(
        manifest_digest(&dst, "app", "arm64").as_deref(),
        Some(img.children[1].digest.as_str())
    );
    assert_has_image(
        &dst,
        "app",
        "arm64",
        &TestImage {
            top: img.children[1].clone(),
            children: vec![],
            blobs: img.blobs[3..6].to_vec(),
        },
    );
    // arm/v7 falls back to the v6 child
    regsync(&["once"], &cfg("linux/arm/v7", "armv7")).assert_ok();
    assert_eq!(
        manifest_digest(&dst, "app", "armv7").as_deref(),
        Some(img.children[2].digest.as_str())
    );
    // a second run matches the child
    let m = dst.mark();
    let out = regsync(&["once", "-v", "debug"], &cfg("linux/arm64", "arm64"));
    out.assert_ok();
    assert!(
        !out.logs("Image matches for platform").is_empty(),
        "{}",
        out.dump()
    );
    assert!(dst.writes_since(m).is_empty());

    // no compatible child: a warning listing what there is, and the image fails
    let out = regsync(&["once"], &cfg("linux/s390x", "s390x"));
    out.assert_fail();
    let warn = out.logs("Platform could not be found in source manifest list");
    assert_eq!(warn.len(), 1, "{}", out.dump());
    assert_eq!(warn[0]["platform"], "linux/s390x");
    assert_eq!(
        warn[0]["platforms"],
        "linux/amd64, linux/arm64, linux/arm/v6"
    );
    out.assert_one_error_line(&["not found"]);
    assert_eq!(manifest_digest(&dst, "app", "s390x"), None);
}

// ---------------------------------------------------------------------------------------------
// backup (spec §5.7)
// ---------------------------------------------------------------------------------------------

#[test]
fn backup_before_overwrite_as_tag_and_as_full_reference() {
    let (src, dst) = (Registry::start(), Registry::start());
    let (a, b, c) = (
        oci_image(710),
        index_image(711, &["linux/amd64"]),
        oci_image(712),
    );
    push(&src, "app", "a", &a);
    push(&src, "app", "b", &b);
    push(&src, "app", "c", &c);
    let run = |tag: &str, backup: &str| {
        let mut step = image_step(&src.r(&format!("app:{tag}")), &dst.r("app:latest"));
        if !backup.is_empty() {
            step.push_str(&format!("backup: '{backup}'\n"));
        }
        regsync(&["once"], &config(&[&src, &dst], 0, &[step]))
    };
    run("a", "old").assert_ok();
    assert_eq!(
        manifest_digest(&dst, "app", "old"),
        None,
        "nothing to back up"
    );
    // bare tag: same repository
    let out = run("b", "old");
    out.assert_ok();
    assert_eq!(
        manifest_digest(&dst, "app", "latest").as_deref(),
        Some(b.digest())
    );
    assert_eq!(
        manifest_digest(&dst, "app", "old").as_deref(),
        Some(a.digest())
    );
    let saving = out.logs("Saving backup");
    assert_eq!(saving.len(), 1, "{}", out.dump());
    assert_eq!(saving[0]["backup"], dst.r("app:old"));
    // full reference, rendered with .Ref: a copy into another repository
    let out = run("c", &format!("{}/backups:{{{{.Ref.Tag}}}}", dst.host()));
    out.assert_ok();
    assert_eq!(
        manifest_digest(&dst, "app", "latest").as_deref(),
        Some(c.digest())
    );
    assert_has_image(&dst, "backups", "latest", &b);
    assert_eq!(
        manifest_digest(&dst, "backups", "latest").as_deref(),
        Some(b.digest())
    );
    // a backup that fails is a warning; the overwrite goes on
    let out = run("a", "bad tag");
    out.assert_ok();
    let warn = out.logs("Failed to backup existing image");
    assert_eq!(warn.len(), 1, "{}", out.dump());
    assert_eq!(warn[0]["original"], dst.r("app:latest"));
    assert_eq!(
        manifest_digest(&dst, "app", "latest").as_deref(),
        Some(a.digest())
    );
    // a template that cannot be rendered fails the image before anything is written
    let m = dst.mark();
    let out = run("b", "{{ .Ref.Nope }}");
    out.assert_fail();
    assert_eq!(
        out.logs("Failed to expand backup template").len(),
        1,
        "{}",
        out.dump()
    );
    out.assert_one_error_line(&["backup"]);
    assert!(dst.writes_since(m).is_empty());
    // matching targets are not backed up
    let m = dst.mark();
    run("a", "old2").assert_ok();
    assert!(dst.writes_since(m).is_empty());
}

#[test]
fn backup_inside_an_oci_layout() {
    let src = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("lay");
    let (a, b) = (oci_image(715), oci_image(716));
    push(&src, "app", "a", &a);
    push(&src, "app", "b", &b);
    let run = |tag: &str| {
        let step = step_with(
            image_step(
                &src.r(&format!("app:{tag}")),
                &ocidir_ref(&layout, "latest"),
            ),
            "backup: 'bkup-{{.Ref.Tag}}'\n",
        );
        regsync(&["once"], &config(&[&src], 0, &[step]))
    };
    run("a").assert_ok();
    run("b").assert_ok();
    assert_eq!(
        manifest_digest(tmp.path(), "lay", "latest").as_deref(),
        Some(b.digest())
    );
    assert_eq!(
        manifest_digest(tmp.path(), "lay", "bkup-latest").as_deref(),
        Some(a.digest())
    );
    // GC after the copy kept both images whole
    assert_has_image(tmp.path(), "lay", "bkup-latest", &a);
    assert_has_image(tmp.path(), "lay", "latest", &b);
}

// ---------------------------------------------------------------------------------------------
// digest tags (spec §6.2 step 10)
// ---------------------------------------------------------------------------------------------

#[test]
fn digest_tags_follow_their_image_and_a_self_reference_terminates() {
    let (src, dst) = (Registry::start(), Registry::start());
    let v1 = index_image(720, &["linux/amd64", "linux/arm64"]);
    let v3 = oci_image(721);
    push(&src, "repo", "v1", &v1);
    push(&src, "repo", "v3", &v3);
    let sig = artifact(
        722,
        "application/vnd.dev.cosign.simplesigning.v1+json",
        None,
        &[],
    );
    let att = artifact(723, "application/vnd.dsse.envelope.v1+json", None, &[]);
    let d1 = hex(v1.digest()).to_string();
    let meta_tag = format!("sha256-{d1}.{}.meta", &hex(v3.digest())[..16]);
    push(&src, "repo", &format!("sha256-{d1}.sig"), &sig);
    push(&src, "repo", &format!("sha256-{d1}.att"), &att);
    push(&src, "repo", &meta_tag, &v3);
    // a digest tag on a platform child
    let child_sig = artifact(
        724,
        "application/vnd.dev.cosign.simplesigning.v1+json",
        None,
        &[],
    );
    let child_tag = format!("sha256-{}.sig", hex(&v1.children[1].digest));
    push(&src, "repo", &child_tag, &child_sig);
    // a manifest whose digest tag points at itself
    let mirror = artifact(725, "application/example.mirror", None, &[]);
    push(&src, "repo", "mirror", &mirror);
    push(&src, "repo", &fallback_tag(mirror.digest()), &mirror);
    // unrelated digest-looking tag
    push(
        &src,
        "repo",
        &format!("sha256-{}.sig", "0".repeat(64)),
        &sig,
    );

    let steps = vec![
        step_with(
            image_step(&src.r("repo:v1"), &dst.r("copy:v1")),
            "digestTags: true\n",
        ),
        step_with(
            image_step(&src.r("repo:mirror"), &dst.r("copy:mirror")),
            "digestTags: true\n",
        ),
    ];
    let out = regsync(&["once"], &config(&[&src, &dst], 0, &steps));
    out.assert_ok();
    assert_eq!(
        manifest_digest(&dst, "copy", "v1").as_deref(),
        Some(v1.digest())
    );
    for (tag, img) in [
        (format!("sha256-{d1}.sig"), &sig),
        (format!("sha256-{d1}.att"), &att),
        (meta_tag.clone(), &v3),
        (child_tag.clone(), &child_sig),
    ] {
        assert_eq!(
            manifest_digest(&dst, "copy", &tag).as_deref(),
            Some(img.digest()),
            "{tag}\n{}",
            out.dump()
        );
        assert_has_image(&dst, "copy", &tag, img);
    }
    assert_eq!(
        manifest_digest(&dst, "copy", "mirror").as_deref(),
        Some(mirror.digest())
    );
    assert_eq!(
        manifest_digest(&dst, "copy", &fallback_tag(mirror.digest())).as_deref(),
        Some(mirror.digest())
    );
    let copied: BTreeSet<String> = tags(&dst, "copy").into_iter().collect();
    assert!(
        !copied.iter().any(|t| t.contains(&"0".repeat(64))),
        "{copied:?}"
    );
    assert!(!copied.contains("v3"));

    // without digestTags nothing but the image moves
    let steps = vec![image_step(&src.r("repo:v1"), &dst.r("plain:v1"))];
    regsync(&["once"], &config(&[&src, &dst], 0, &steps)).assert_ok();
    assert_eq!(tags(&dst, "plain"), vec!["v1"]);
}

#[test]
fn self_referencing_digest_tag_between_layouts() {
    let tmp = tempfile::tempdir().unwrap();
    let mirror = artifact(730, "application/example.mirror", None, &[]);
    let src = tmp.path().join("testrepo");
    write_layout(&src, &mirror, "mirror");
    write_layout(&src, &mirror, &fallback_tag(mirror.digest()));
    let dst = tmp.path().join("test-mirror");
    let step = step_with(
        image_step(&ocidir_ref(&src, "mirror"), &ocidir_ref(&dst, "mirror")),
        "digestTags: true\n",
    );
    let out = regsync(&["once"], &config(&[], 0, &[step]));
    out.assert_ok();
    assert_eq!(
        manifest_digest(tmp.path(), "test-mirror", "mirror").as_deref(),
        Some(mirror.digest())
    );
    assert_eq!(
        manifest_digest(tmp.path(), "test-mirror", &fallback_tag(mirror.digest())).as_deref(),
        Some(mirror.digest())
    );
    assert_has_image(tmp.path(), "test-mirror", "mirror", &mirror);
}

// ---------------------------------------------------------------------------------------------
// referrers (spec §6.5)
// ---------------------------------------------------------------------------------------------

/// `repo:v1` (index of 2), 3 referrers in the fallback index `sha256-<v1>`, a referrer of
/// the arm64 child, and a `.sig` digest tag.
struct Seeded {
    v1: TestImage,
    referrers: Vec<TestImage>,
    child_referrer: TestImage,
    sig: TestImage,
}

fn seed_referrers(loc: impl Into<Loc> + Clone, repo: &str, seed: u64) -> Seeded {
    let v1 = index_image(seed, &["linux/amd64", "linux/arm64"]);
    push(loc.clone(), repo, "v1", &v1);
    let referrers = vec![
        artifact(
            seed + 1,
            "application/example.sbom",
            Some(&v1.top),
            &[("preference", "1")],
        ),
        artifact(
            seed + 2,
            "application/example.signature",
            Some(&v1.top),
            &[],
        ),
        artifact(
            seed + 3,
            "application/example.sbom",
            Some(&v1.top),
            &[("preference", "2")],
        ),
    ];
    for r in &referrers {
        push_by_digest(loc.clone(), repo, r);
    }
    let all: Vec<&TestImage> = referrers.iter().collect();
    push(
        loc.clone(),
        repo,
        &fallback_tag(v1.digest()),
        &referrers_index(&all),
    );
    let child_referrer = artifact(
        seed + 4,
        "application/example.arms",
        Some(&v1.children[1]),
        &[],
    );
    push_by_digest(loc.clone(), repo, &child_referrer);
    push(
        loc.clone(),
        repo,
        &fallback_tag(&v1.children[1].digest),
        &referrers_index(&[&child_referrer]),
    );
    let sig = artifact(
        seed + 5,
        "application/vnd.dev.cosign.simplesigning.v1+json",
        None,
        &[],
    );
    push(loc, repo, &format!("sha256-{}.sig", hex(v1.digest())), &sig);
    Seeded {
        v1,
        referrers,
        child_referrer,
        sig,
    }
}

fn assert_byte_identical(
    src: impl Into<Loc>,
    srepo: &str,
    dst: impl Into<Loc> + Clone,
    drepo: &str,
    img: &TestImage,
) {
    let s = get_manifest(src, srepo, img.digest()).expect("source referrer");
    let d = get_manifest(dst.clone(), drepo, img.digest())
        .unwrap_or_else(|| panic!("referrer {} missing in {drepo}", img.digest()));
    assert_eq!(s.bytes, d.bytes, "referrer manifest bytes differ");
    for b in &img.blobs {
        assert!(
            blob_exists(dst.clone(), drepo, &b.digest),
            "blob {} of a referrer",
            b.digest
        );
    }
}

#[test]
fn repository_copy_keeps_referrers_and_the_fallback_index() {
    let (src, dst) = (Registry::start(), Registry::start());
    let s = seed_referrers(&src, "repo", 740);
    // the target already lists something another tool put there
    let foreign = artifact(749, "application/other.tool", Some(&s.v1.top), &[]);
    push_by_digest(&dst, "repo", &foreign);
    push(
        &dst,
        "repo",
        &fallback_tag(s.v1.digest()),
        &referrers_index(&[&foreign]),
    );

    let step = step_with(
        repo_step(&src.r("repo"), &dst.r("repo"), &[], &[]),
        "referrers: true\ndigestTags: true\n",
    );
    let cfg = config(&[&src, &dst], 4, &[step]);
    let out = regsync(&["once"], &cfg);
    out.assert_ok();

    let entries = fallback_entries(&dst, "repo", s.v1.digest());
    let listed = entry_digests(&entries);
    for r in &s.referrers {
        assert!(listed.contains(r.digest()), "{listed:?}\n{}", out.dump());
        assert_byte_identical(&src, "repo", &dst, "repo", r);
    }
    assert!(
        listed.contains(foreign.digest()),
        "foreign entry dropped: {listed:?}"
    );
    assert_eq!(listed.len(), 4);
    // entries carry artifactType and annotations
    let sbom1 = entries
        .iter()
        .find(|e| e["digest"] == s.referrers[0].digest())
        .unwrap();
    assert_eq!(sbom1["artifactType"], "application/example.sbom");
    assert_eq!(sbom1["annotations"]["preference"], "1");
    // the child's referrer and the digest tag came along
    assert_byte_identical(&src, "repo", &dst, "repo", &s.child_referrer);
    assert!(
        entry_digests(&fallback_entries(&dst, "repo", &s.v1.children[1].digest))
            .contains(s.child_referrer.digest())
    );
    let sig_tag = format!("sha256-{}.sig", hex(s.v1.digest()));
    assert_eq!(
        manifest_digest(&dst, "repo", &sig_tag).as_deref(),
        Some(s.sig.digest())
    );
    assert_same_image(&src, &dst, "repo", "v1");

    // a second run leaves the index alone
    let m = dst.mark();
    regsync(&["once"], &cfg).assert_ok();
    assert_eq!(
        dst.count_since(
            m,
            "PUT",
            &format!("/manifests/{}", fallback_tag(s.v1.digest()))
        ),
        0
    );
    assert_eq!(
        entry_digests(&fallback_entries(&dst, "repo", s.v1.digest())).len(),
        4
    );
}

#[test]
fn image_copy_with_referrers_repairs_and_extends_the_target_index() {
    let (src, dst) = (Registry::start(), Registry::start());
    let s = seed_referrers(&src, "repo", 750);
    let step = step_with(
        image_step(&src.r("repo:v1"), &dst.r("copy:v1")),
        "referrers: true\n",
    );
    let cfg = config(&[&src, &dst], 0, &[step]);
    regsync(&["once"], &cfg).assert_ok();
    let listed = entry_digests(&fallback_entries(&dst, "copy", s.v1.digest()));
    assert_eq!(listed.len(), 3);
    for r in &s.referrers {
        assert_byte_identical(&src, "repo", &dst, "copy", r);
    }
    // the image copy carries no digest tags (digestTags is off) and no fallback tag of its own
    assert!(!tags(&dst, "copy").iter().any(|t| t.ends_with(".sig")));

    // a new referrer upstream: the refresh adds it
    let extra = artifact(759, "application/example.sbom", Some(&s.v1.top), &[]);
    push_by_digest(&src, "repo", &extra);
    let mut all: Vec<&TestImage> = s.referrers.iter().collect();
    all.push(&extra);
    push(
        &src,
        "repo",
        &fallback_tag(s.v1.digest()),
        &referrers_index(&all),
    );
    let out = regsync(&["once"], &cfg);
    out.assert_ok();
    assert_eq!(out.logs("Image refreshing").len(), 1, "{}", out.dump());
    assert!(entry_digests(&fallback_entries(&dst, "copy", s.v1.digest())).contains(extra.digest()));
    assert_byte_identical(&src, "repo", &dst, "copy", &extra);
}

#[test]
fn referrer_filters_and_source_and_target_repositories() {
    let (src, dst) = (Registry::start(), Registry::start());
    let s = seed_referrers(&src, "repo", 760);
    // more referrers of v1 kept in another repository
    let ext1 = artifact(
        765,
        "application/example.sbom",
        Some(&s.v1.top),
        &[("preference", "1")],
    );
    let ext2 = artifact(
        766,
        "application/example.sbom",
        Some(&s.v1.top),
        &[("preference", "2")],
    );
    let ext_sig = artifact(767, "application/example.signature", Some(&s.v1.top), &[]);
    for r in [&ext1, &ext2, &ext_sig] {
        push_by_digest(&src, "external", r);
    }
    push(
        &src,
        "external",
        &fallback_tag(s.v1.digest()),
        &referrers_index(&[&ext1, &ext2, &ext_sig]),
    );

    let filter_sbom =
        "referrers: true\nreferrerFilters:\n  - artifactType: application/example.sbom\n";
    let steps = vec![
        // 1. artifactType filter
        step_with(image_step(&src.r("repo:v1"), &dst.r("f1:v1")), filter_sbom),
        // 2. annotation filter, union with an artifactType filter
        step_with(
            image_step(&src.r("repo:v1"), &dst.r("f2:v1")),
            "referrers: true\nreferrerFilters:\n  - annotations:\n      preference: \"2\"\n  - artifactType: application/example.signature\n",
        ),
        // 3. referrers listed in another repository
        step_with(
            image_step(&src.r("repo:v1"), &dst.r("f3:v1")),
            &format!("{filter_sbom}referrerSource: {}\n", src.r("external")),
        ),
        // 4. … and pushed into yet another one
        step_with(
            image_step(&src.r("repo:v1"), &dst.r("f4:v1")),
            &format!(
                "{filter_sbom}referrerSource: {}\nreferrerTarget: {}\n",
                src.r("external"),
                dst.r("f4-tgt")
            ),
        ),
    ];
    let out = regsync(&["once"], &config(&[&src, &dst], 0, &steps));
    out.assert_ok();
    let exists = |repo: &str, d: &str| get_manifest(&dst, repo, d).is_some();
    let (sb1, sig, sb2) = (&s.referrers[0], &s.referrers[1], &s.referrers[2]);

    assert!(exists("f1", sb1.digest()) && exists("f1", sb2.digest()));
    assert!(!exists("f1", sig.digest()));
    assert_eq!(
        entry_digests(&fallback_entries(&dst, "f1", s.v1.digest())).len(),
        2
    );
    // filters only apply at the top? no: every level; the child's arms referrer is filtered out
    assert!(!exists("f1", s.child_referrer.digest()));

    assert!(exists("f2", sb2.digest()) && exists("f2", sig.digest()));
    assert!(!exists("f2", sb1.digest()));

    assert!(exists("f3", ext1.digest()) && exists("f3", ext2.digest()));
    for d in [ext_sig.digest(), sb1.digest(), sig.digest(), sb2.digest()] {
        assert!(!exists("f3", d));
    }
    assert_eq!(
        entry_digests(&fallback_entries(&dst, "f3", s.v1.digest())),
        [ext1.digest().to_string(), ext2.digest().to_string()].into()
    );

    assert_eq!(
        manifest_digest(&dst, "f4", "v1").as_deref(),
        Some(s.v1.digest())
    );
    assert!(exists("f4-tgt", ext1.digest()) && exists("f4-tgt", ext2.digest()));
    assert!(!exists("f4", ext1.digest()) && !exists("f4", ext2.digest()));
    assert_eq!(
        entry_digests(&fallback_entries(&dst, "f4-tgt", s.v1.digest())).len(),
        2
    );
    assert!(get_manifest(&dst, "f4", &fallback_tag(s.v1.digest())).is_none());
}

#[test]
fn referrers_into_a_layout_and_a_loop_that_terminates() {
    let src = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let s = seed_referrers(&src, "repo", 770);
    // `loop`: an index listing `child`, with `child` as its subject
    let child = artifact(775, "application/example.child", None, &[]);
    push_by_digest(&src, "repo", &child);
    let lp = Manifest::from_json(
        MT_OCI_INDEX,
        &json!({
            "schemaVersion": 2,
            "mediaType": MT_OCI_INDEX,
            "manifests": [{"mediaType": MT_OCI_MANIFEST, "digest": child.digest(), "size": child.top.bytes.len()}],
            "subject": {"mediaType": MT_OCI_MANIFEST, "digest": child.digest(), "size": child.top.bytes.len()},
        }),
    );
    let loop_img = TestImage {
        top: lp,
        children: vec![child.top.clone()],
        blobs: child.blobs.clone(),
    };
    push(&src, "repo", "loop", &loop_img);
    let loop_index = json!({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": [
        {"mediaType": MT_OCI_INDEX, "digest": loop_img.digest(), "size": loop_img.top.bytes.len()}]});
    push(
        &src,
        "repo",
        &fallback_tag(child.digest()),
        &TestImage {
            top: Manifest::from_json(MT_OCI_INDEX, &loop_index),
            children: vec![],
            blobs: vec![],
        },
    );

    let layout = tmp.path().join("lay");
    let steps = vec![
        step_with(
            image_step(&src.r("repo:v1"), &ocidir_ref(&layout, "v1")),
            "referrers: true\n",
        ),
        step_with(
            image_step(&src.r("repo:loop"), &ocidir_ref(&layout, "loop")),
            "referrers: true\n",
        ),
    ];
    let out = regsync(&["once"], &config(&[&src], 0, &steps));
    out.assert_ok();
    let listed = entry_digests(&fallback_entries(tmp.path(), "lay", s.v1.digest()));
    let want: BTreeSet<String> = s.referrers.iter().map(|r| r.digest().to_string()).collect();
    assert_eq!(listed, want);
    for r in &s.referrers {
        assert_byte_identical(&src, "repo", tmp.path(), "lay", r);
    }
    assert_byte_identical(&src, "repo", tmp.path(), "lay", &s.child_referrer);
    // the referrers are reachable (GC kept them) and not tagged entries
    let idx = layout_index(&layout);
    let names: BTreeSet<String> = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["annotations"][REF_NAME].as_str().map(String::from))
        .collect();
    assert!(names.contains("v1") && names.contains(&fallback_tag(s.v1.digest())));
    // the loop terminated with both manifests in place
    assert_eq!(
        manifest_digest(tmp.path(), "lay", "loop").as_deref(),
        Some(loop_img.digest())
    );
    assert!(get_manifest(tmp.path(), "lay", child.digest()).is_some());
    assert!(
        entry_digests(&fallback_entries(tmp.path(), "lay", child.digest()))
            .contains(loop_img.digest())
    );
}

// ---------------------------------------------------------------------------------------------
// fastCheck, forceRecursive, mediaTypes, includeExternal (spec §5.5 steps 4–6, §6.2 steps 3–7)
// ---------------------------------------------------------------------------------------------

#[test]
fn fast_check_skips_the_refresh_and_force_recursive_repushes() {
    let (src, dst) = (Registry::start(), Registry::start());
    let s = seed_referrers(&src, "repo", 780);
    let base = image_step(&src.r("repo:v1"), &dst.r("copy:v1"));
    regsync(
        &["once"],
        &config(&[&src, &dst], 0, std::slice::from_ref(&base)),
    )
    .assert_ok();
    // fastCheck: the matching top digest ends it, referrers are not looked at
    let m = dst.mark();
    let out = regsync(
        &["once"],
        &config(
            &[&src, &dst],
            0,
            &[step_with(
                base.clone(),
                "fastCheck: true\nreferrers: true\n",
            )],
        ),
    );
    out.assert_ok();
    assert_summary(&out, &[("images_matched", 1)]);
    assert!(dst.writes_since(m).is_empty());
    assert!(get_manifest(&dst, "copy", s.referrers[0].digest()).is_none());
    // referrers without fastCheck refresh the matching image
    let out = regsync(
        &["once"],
        &config(
            &[&src, &dst],
            0,
            &[step_with(base.clone(), "referrers: true\n")],
        ),
    );
    out.assert_ok();
    assert!(get_manifest(&dst, "copy", s.referrers[0].digest()).is_some());
    // forceRecursive pushes every manifest again (top, children, nothing skipped)
    let m = dst.mark();
    let out = regsync(
        &["once"],
        &config(
            &[&src, &dst],
            0,
            &[step_with(base, "forceRecursive: true\n")],
        ),
    );
    out.assert_ok();
    assert_eq!(
        dst.count_since(m, "PUT", "/v2/copy/manifests/"),
        3,
        "{}",
        out.dump()
    );
    assert_eq!(
        dst.count_since(m, "PUT", "/v2/copy/blobs/"),
        0,
        "blobs already there"
    );
}

#[test]
fn unsupported_media_types_are_skipped() {
    let (src, dst) = (Registry::start(), Registry::start());
    push(&src, "app", "v1", &index_image(790, &["linux/amd64"]));
    let step = step_with(
        image_step(&src.r("app:v1"), &dst.r("app:v1")),
        "mediaTypes: [application/vnd.oci.image.manifest.v1+json]\n",
    );
    let m = dst.mark();
    let out = regsync(&["once"], &config(&[&src, &dst], 0, &[step]));
    out.assert_ok();
    let skip = out.logs("Skipping unsupported media type");
    assert_eq!(skip.len(), 1, "{}", out.dump());
    assert_eq!(skip[0]["mediaType"], MT_OCI_INDEX);
    assert!(dst.writes_since(m).is_empty());
    assert_summary(&out, &[("images_skipped", 1), ("images_failed", 0)]);
}

#[test]
fn external_layers_only_with_include_external() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = Blob::new(
        "application/vnd.oci.image.config.v1+json",
        br#"{"os":"linux"}"#.to_vec(),
    );
    let inner = Blob::new(
        "application/vnd.oci.image.layer.v1.tar",
        b"regular layer".to_vec(),
    );
    let ext = Blob::new(
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        b"foreign layer".to_vec(),
    );
    let mut ext_desc = ext.descriptor();
    ext_desc["urls"] = json!(["https://example.invalid/layer.tgz"]);
    let m = Manifest::from_json(
        MT_OCI_MANIFEST,
        &json!({"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST, "config": cfg.descriptor(),
                "layers": [inner.descriptor(), ext_desc]}),
    );
    let img = TestImage {
        top: m,
        children: vec![],
        blobs: vec![cfg.clone(), inner.clone(), ext.clone()],
    };
    let src = tmp.path().join("src");
    write_layout(&src, &img, "v1");
    let run = |dst: &Path, extra: &str| {
        let step = step_with(
            image_step(&ocidir_ref(&src, "v1"), &ocidir_ref(dst, "v1")),
            extra,
        );
        regsync(&["once"], &config(&[], 0, &[step]))
    };
    let (without, with) = (tmp.path().join("without"), tmp.path().join("with"));
    run(&without, "").assert_ok();
    assert_eq!(
        manifest_digest(tmp.path(), "without", "v1").as_deref(),
        Some(img.digest())
    );
    assert!(layout_has_blob(&without, &inner.digest));
    assert!(
        !layout_has_blob(&without, &ext.digest),
        "external layer copied"
    );
    run(&with, "includeExternal: true\n").assert_ok();
    assert!(layout_has_blob(&with, &ext.digest));
    assert_has_image(tmp.path(), "with", "v1", &img);
}
