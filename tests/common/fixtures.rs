//! The `testrepo` and `external` repositories of spec §15.1 (regsync's own acceptance
//! fixture, re-created deterministically): built in memory, written as one OCI layout per
//! repository (`<root>/testrepo`, `<root>/external`) and pushed into registries.
//!
//! `testrepo` holds:
//! * `b1`..`b3`: base OCI indexes over linux/amd64, arm64, arm/v7, arm/v6;
//! * `v1`: OCI index (amd64, arm64) plus two docker-style attestation manifests listed with
//!   platform `unknown/unknown`: `a-docker`, and `a-docker-oci`, which also has the arm64 child as
//!   its `subject` (so a fallback tag `sha256-<d1ARM hex>` lists it);
//! * `v2`: OCI index (amd64, arm64, arm/v7) with referrers `a1` (artifactType
//!   `application/example.sbom`) and `a2` (`application/example.signature`) in the fallback tag
//!   `sha256-<d2 hex>`, and one `application/example.arms` referrer per child (untagged, each in
//!   its child's fallback tag);
//! * `v3`: OCI index (4 platforms) with two `application/example.sbom` referrers pushed by
//!   digest (untagged index.json entries in the layout) whose fallback tag was deleted;
//! * `a3` (multi-layer artifact), `ai` (index of the artifacts a1, a2), `a-example` (artifact
//!   whose config descriptor embeds its data);
//! * digest tag `sha256-<d1 hex>.<first 16 hex of d3>.meta` → v3;
//! * `child` (artifact) and `loop` (index listing `child` with `child` as subject; fallback tag
//!   `sha256-<dChild hex>` lists `loop`);
//! * `mirror` (artifact) and its digest tag `sha256-<dMirror hex>` → mirror itself.
//!
//! `external` holds two `application/example.sbom` artifacts (annotations `preference=1|2`, tags
//! `a3`, `a4`) whose subject is `testrepo:v2`, listed in `external:sha256-<d2 hex>`.
//!
//! Fallback indexes list each referrer as `{mediaType, digest, size, artifactType,
//! annotations}` (artifactType = the manifest's `artifactType`, else its config media type),
//! as regclient writes them (spec §6.5, §10.2).

use super::oci::{
    layer, push, sha256_digest, Blob, Format, Loc, Manifest, TestImage, MT_OCI_CONFIG,
    MT_OCI_INDEX, MT_OCI_MANIFEST, REF_NAME,
};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

pub const MT_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const AT_SBOM: &str = "application/example.sbom";
pub const AT_SIG: &str = "application/example.signature";
pub const AT_ARMS: &str = "application/example.arms";

/// Digests (`sha256:…`) the §15.2 cases name, plus a few more for ad-hoc checks.
#[derive(Clone, Debug, Default)]
pub struct Digests {
    pub d1: String,
    pub d2: String,
    pub d3: String,
    pub d1_amd: String,
    pub d1_arm: String,
    pub d2_amd: String,
    pub d2_arm: String,
    pub d2_armv7: String,
    /// `a1`: the v2 SBOM referrer.
    pub sbom: String,
    /// `a2`: the v2 signature referrer.
    pub sig: String,
    /// `application/example.arms` referrers of v2's amd64, arm64, arm/v7 children.
    pub arms_amd: String,
    pub arms_arm: String,
    pub arms_armv7: String,
    /// The two SBOMs of v3 (no fallback tag).
    pub v3_sbom1: String,
    pub v3_sbom2: String,
    /// `external:a3` / `external:a4`: SBOMs of v2 with `preference=1|2`.
    pub ext1: String,
    pub ext2: String,
    pub a1: String,
    pub a2: String,
    pub a3: String,
    pub ai: String,
    pub a_docker: String,
    pub a_docker_oci: String,
    pub a_example: String,
    pub b1: String,
    pub b2: String,
    pub b3: String,
    pub child: String,
    pub loop_: String,
    pub mirror: String,
    /// The tag `sha256-<d1 hex>.<first 16 hex of d3>.meta` (→ d3).
    pub meta_tag: String,
}

/// Hex part of a `sha256:…` digest.
pub fn hex(d: &str) -> &str {
    d.strip_prefix("sha256:").unwrap_or(d)
}

/// The referrers fallback tag of a subject: `sha256-<hex>`.
pub fn fallback_tag(subject: &str) -> String {
    format!("sha256-{}", hex(subject))
}

/// One repository's content.
#[derive(Clone, Debug, Default)]
pub struct FixtureRepo {
    pub name: String,
    /// Every blob (configs, layers) once.
    pub blobs: Vec<Blob>,
    /// Every manifest once, children before the indexes listing them.
    pub manifests: Vec<Manifest>,
    /// `(tag, digest)` in the order they are set.
    pub tags: Vec<(String, String)>,
    /// Digests that appear in the layout's index.json without a ref name (manifests pushed by
    /// digest on their own, e.g. referrers).
    pub untagged: Vec<String>,
}

impl FixtureRepo {
    fn new(name: &str) -> FixtureRepo {
        FixtureRepo {
            name: name.to_string(),
            ..Default::default()
        }
    }

    fn add_blob(&mut self, b: &Blob) -> Value {
        if !self.blobs.iter().any(|x| x.digest == b.digest) {
            self.blobs.push(b.clone());
        }
        b.descriptor()
    }

    fn add_manifest(&mut self, mt: &str, v: &Value) -> Manifest {
        let m = Manifest::from_json(mt, v);
        if !self.manifests.iter().any(|x| x.digest == m.digest) {
            self.manifests.push(m.clone());
        }
        m
    }

    fn tag(&mut self, tag: &str, digest: &str) {
        assert!(
            self.manifest(digest).is_some(),
            "tag {tag}: unknown manifest {digest}"
        );
        self.tags.retain(|(t, _)| t != tag);
        self.tags.push((tag.to_string(), digest.to_string()));
    }

    fn untag(&mut self, tag: &str) {
        self.tags.retain(|(t, _)| t != tag);
    }

    pub fn manifest(&self, digest: &str) -> Option<&Manifest> {
        self.manifests.iter().find(|m| m.digest == digest)
    }

    pub fn blob(&self, digest: &str) -> Option<&Blob> {
        self.blobs.iter().find(|b| b.digest == digest)
    }

    /// Digest of a tag.
    pub fn tag_digest(&self, tag: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(t, _)| t == tag)
            .map(|(_, d)| d.as_str())
    }

    /// Tags sorted.
    pub fn tag_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.tags.iter().map(|(t, _)| t.clone()).collect();
        v.sort();
        v
    }

    /// Blobs a manifest references directly (config and layers; none for indexes).
    pub fn blob_deps(&self, m: &Manifest) -> Vec<Blob> {
        let v = m.json();
        let mut out = Vec::new();
        let mut descs: Vec<&Value> = Vec::new();
        if v["config"].is_object() {
            descs.push(&v["config"]);
        }
        if let Some(ls) = v["layers"].as_array() {
            descs.extend(ls.iter());
        }
        if let Some(ls) = v["blobs"].as_array() {
            descs.extend(ls.iter());
        }
        for d in descs {
            let dg = d["digest"].as_str().expect("descriptor digest");
            let b = self
                .blob(dg)
                .unwrap_or_else(|| panic!("{}: manifest {} needs blob {dg}", self.name, m.digest));
            out.push(b.clone());
        }
        out
    }

    /// Write this repository as an OCI layout at `dir` (created; an existing index.json is
    /// replaced): `oci-layout`, every blob and manifest under `blobs/sha256/`, and index.json
    /// with one entry per tag (ref name = the tag) plus the untagged entries.
    pub fn write_layout(&self, dir: &Path) {
        let blobs = dir.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).unwrap();
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        for b in &self.blobs {
            fs::write(blobs.join(hex(&b.digest)), &b.data).unwrap();
        }
        for m in &self.manifests {
            fs::write(blobs.join(hex(&m.digest)), &m.bytes).unwrap();
        }
        let mut entries = Vec::new();
        for (t, d) in &self.tags {
            let m = self.manifest(d).unwrap();
            entries.push(json!({
                "mediaType": m.media_type,
                "digest": m.digest,
                "size": m.bytes.len(),
                "annotations": {REF_NAME: t},
            }));
        }
        for d in &self.untagged {
            let m = self.manifest(d).unwrap();
            entries.push(json!({
                "mediaType": m.media_type,
                "digest": m.digest,
                "size": m.bytes.len(),
            }));
        }
        let idx = json!({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": entries});
        fs::write(dir.join("index.json"), serde_json::to_vec(&idx).unwrap()).unwrap();
    }

    /// Push into `loc` (a registry, or a layout root): every blob, every manifest by digest
    /// (children first), then every tag (the same bytes PUT by tag), tags last.
    pub fn push_to(&self, loc: &Loc) {
        if let Loc::Dir(root) = loc {
            self.write_layout(&root.join(&self.name));
            return;
        }
        for m in &self.manifests {
            let img = TestImage {
                top: m.clone(),
                children: Vec::new(),
                blobs: self.blob_deps(m),
            };
            push(loc, &self.name, &m.digest, &img);
        }
        for (t, d) in &self.tags {
            let img = TestImage {
                top: self.manifest(d).unwrap().clone(),
                children: Vec::new(),
                blobs: Vec::new(),
            };
            push(loc, &self.name, t, &img);
        }
    }
}

/// The whole §15.1 fixture: `testrepo`, `external` and the named digests.
#[derive(Clone, Debug)]
pub struct Fixture {
    pub testrepo: FixtureRepo,
    pub external: FixtureRepo,
    pub d: Digests,
}

impl Fixture {
    /// Build the content (deterministic: the same digests on every run).
    pub fn build() -> Fixture {
        build_fixture()
    }

    pub fn repos(&self) -> [&FixtureRepo; 2] {
        [&self.testrepo, &self.external]
    }

    /// Write `<root>/testrepo` and `<root>/external` as OCI layouts.
    pub fn write_layouts(&self, root: &Path) {
        for r in self.repos() {
            r.write_layout(&root.join(&r.name));
        }
    }

    /// Push both repositories into a registry (or a layout root).
    pub fn push(&self, loc: impl Into<Loc>) {
        let loc = loc.into();
        for r in self.repos() {
            r.push_to(&loc);
        }
    }
}

/// Recursive copy of a directory tree (e.g. the fixture layouts into a case's temp dir).
pub fn copy_tree(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to);
        } else {
            fs::copy(e.path(), &to).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Content
// ---------------------------------------------------------------------------------------------

fn seed(s: &str) -> u64 {
    let h = Sha256::digest(s.as_bytes());
    u64::from_le_bytes(h[..8].try_into().unwrap())
}

fn desc(m: &Manifest) -> Value {
    json!({"mediaType": m.media_type, "digest": m.digest, "size": m.bytes.len()})
}

fn platform_json(p: &str) -> Value {
    let parts: Vec<&str> = p.split('/').collect();
    let mut v = json!({"architecture": parts[1], "os": parts[0]});
    if let Some(var) = parts.get(2) {
        v["variant"] = json!(var);
    }
    v
}

/// A runnable-looking platform image: OCI config + the platform's shared base layer + one
/// layer of its own.
fn platform_image(r: &mut FixtureRepo, name: &str, plat: &str) -> Manifest {
    let base = layer(seed(&format!("base {plat}")), 1024, Format::Oci);
    let own = layer(seed(&format!("{name} {plat}")), 512, Format::Oci);
    let parts: Vec<&str> = plat.split('/').collect();
    let mut cfg = json!({
        "architecture": parts[1],
        "os": parts[0],
        "created": "2021-01-01T00:00:00Z",
        "config": {"Labels": {"org.example.version": name}},
        "rootfs": {"type": "layers", "diff_ids": [base.digest, own.digest]},
    });
    if let Some(v) = parts.get(2) {
        cfg["variant"] = json!(v);
    }
    let config = Blob::new(MT_OCI_CONFIG, serde_json::to_vec(&cfg).unwrap());
    let cd = r.add_blob(&config);
    let l1 = r.add_blob(&base);
    let l2 = r.add_blob(&own);
    r.add_manifest(
        MT_OCI_MANIFEST,
        &json!({"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST, "config": cd, "layers": [l1, l2]}),
    )
}

/// An OCI index over one platform image per platform; returns (index, children).
fn platform_index(
    r: &mut FixtureRepo,
    name: &str,
    plats: &[&str],
    extra: Vec<Value>,
    annotations: Value,
) -> (Manifest, Vec<Manifest>) {
    let mut children = Vec::new();
    let mut descs = Vec::new();
    for p in plats {
        let m = platform_image(r, name, p);
        let mut d = desc(&m);
        d["platform"] = platform_json(p);
        descs.push(d);
        children.push(m);
    }
    descs.extend(extra);
    let idx = r.add_manifest(
        MT_OCI_INDEX,
        &json!({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": descs, "annotations": annotations}),
    );
    (idx, children)
}

/// An OCI artifact (image manifest with `artifactType`, empty config, the given layers).
fn artifact(
    r: &mut FixtureRepo,
    artifact_type: &str,
    layers: &[(&str, &[u8])],
    subject: Option<&Manifest>,
    annotations: Option<Value>,
) -> Manifest {
    let empty = Blob::new(MT_EMPTY, b"{}".to_vec());
    let cd = r.add_blob(&empty);
    let mut ls = Vec::new();
    for (mt, data) in layers {
        ls.push(r.add_blob(&Blob::new(mt, data.to_vec())));
    }
    let mut v = json!({
        "schemaVersion": 2,
        "mediaType": MT_OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": cd,
        "layers": ls,
    });
    if let Some(s) = subject {
        v["subject"] = desc(s);
    }
    if let Some(a) = annotations {
        v["annotations"] = a;
    }
    r.add_manifest(MT_OCI_MANIFEST, &v)
}

/// A docker-buildx style attestation manifest (OCI image manifest, in-toto layer).
fn attestation(r: &mut FixtureRepo, about: &Manifest, subject: bool) -> Manifest {
    let statement = json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://slsa.dev/provenance/v0.2",
        "subject": [{"digest": {"sha256": hex(&about.digest)}}],
        "predicate": {"builder": {"id": "scripted build"}, "oci": subject},
    });
    let l = Blob::new(
        "application/vnd.in-toto+json",
        serde_json::to_vec(&statement).unwrap(),
    );
    let mut ld = r.add_blob(&l);
    ld["annotations"] = json!({"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"});
    let cfg = json!({
        "architecture": "unknown",
        "os": "unknown",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [l.digest]},
    });
    let cd = r.add_blob(&Blob::new(MT_OCI_CONFIG, serde_json::to_vec(&cfg).unwrap()));
    let mut v =
        json!({"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST, "config": cd, "layers": [ld]});
    if subject {
        v["subject"] = desc(about);
    }
    r.add_manifest(MT_OCI_MANIFEST, &v)
}

/// The descriptor of `v1`'s attestation child: platform unknown/unknown, docker annotations.
fn attestation_desc(att: &Manifest, about: &Manifest) -> Value {
    let mut d = desc(att);
    d["platform"] = json!({"architecture": "unknown", "os": "unknown"});
    d["annotations"] = json!({
        "vnd.docker.reference.digest": about.digest,
        "vnd.docker.reference.type": "attestation-manifest",
    });
    d
}

/// A referrer's entry in a fallback index: descriptor + artifactType (the manifest's, else
/// its config media type) + the manifest's annotations.
fn referrer_desc(m: &Manifest) -> Value {
    let v = m.json();
    let mut d = desc(m);
    let at = v["artifactType"]
        .as_str()
        .or(v["config"]["mediaType"].as_str())
        .unwrap_or_default()
        .to_string();
    d["artifactType"] = json!(at);
    if let Some(a) = v["annotations"].as_object() {
        if !a.is_empty() {
            d["annotations"] = Value::Object(a.clone());
        }
    }
    d
}

/// Tag `sha256-<subject hex>` → an OCI index listing `referrers`.
fn fallback_index(r: &mut FixtureRepo, subject: &str, referrers: &[&Manifest]) -> Manifest {
    let descs: Vec<Value> = referrers.iter().map(|m| referrer_desc(m)).collect();
    let idx = r.add_manifest(
        MT_OCI_INDEX,
        &json!({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": descs}),
    );
    r.tag(&fallback_tag(subject), &idx.digest);
    idx
}

const PLAT4: [&str; 4] = ["linux/amd64", "linux/arm64", "linux/arm/v7", "linux/arm/v6"];

fn build_fixture() -> Fixture {
    let mut r = FixtureRepo::new("testrepo");
    let mut x = FixtureRepo::new("external");
    let mut d = Digests::default();

    // Base indexes b1..b3.
    let mut bases = Vec::new();
    for i in 1..=3 {
        let name = format!("b{i}");
        let (idx, _) = platform_index(
            &mut r,
            &name,
            &PLAT4,
            vec![],
            json!({"org.example.version": name}),
        );
        r.tag(&name, &idx.digest);
        bases.push(idx);
    }
    d.b1 = bases[0].digest.clone();
    d.b2 = bases[1].digest.clone();
    d.b3 = bases[2].digest.clone();

    // v1: amd64 + arm64, plus the docker-style attestations a-docker and a-docker-oci.
    let v1_amd = platform_image(&mut r, "v1", "linux/amd64");
    let v1_arm = platform_image(&mut r, "v1", "linux/arm64");
    let a_docker = attestation(&mut r, &v1_amd, false);
    let a_docker_oci = attestation(&mut r, &v1_arm, true);
    let mut v1_descs = Vec::new();
    for (m, p) in [(&v1_amd, "linux/amd64"), (&v1_arm, "linux/arm64")] {
        let mut dd = desc(m);
        dd["platform"] = platform_json(p);
        v1_descs.push(dd);
    }
    v1_descs.push(attestation_desc(&a_docker, &v1_amd));
    v1_descs.push(attestation_desc(&a_docker_oci, &v1_arm));
    let v1 = r.add_manifest(
        MT_OCI_INDEX,
        &json!({
            "schemaVersion": 2,
            "mediaType": MT_OCI_INDEX,
            "manifests": v1_descs,
            "annotations": {"org.example.version": "v1"},
        }),
    );
    r.tag("v1", &v1.digest);
    r.tag("a-docker", &a_docker.digest);
    r.tag("a-docker-oci", &a_docker_oci.digest);
    fallback_index(&mut r, &v1_arm.digest, &[&a_docker_oci]);
    d.d1 = v1.digest.clone();
    d.d1_amd = v1_amd.digest.clone();
    d.d1_arm = v1_arm.digest.clone();
    d.a_docker = a_docker.digest.clone();
    d.a_docker_oci = a_docker_oci.digest.clone();

    // v2: amd64, arm64, arm/v7; referrers a1 (sbom), a2 (signature), arms per child.
    let b1_digest = d.b1.clone();
    let base_ann = move |v: &str, b: &str| {
        json!({
            "org.example.version": v,
            "org.opencontainers.image.base.name": format!("ocidir://testrepo:{b}"),
            "org.opencontainers.image.base.digest": b1_digest,
        })
    };
    let (v2, v2c) = platform_index(
        &mut r,
        "v2",
        &["linux/amd64", "linux/arm64", "linux/arm/v7"],
        vec![],
        base_ann("v2", "b2"),
    );
    r.tag("v2", &v2.digest);
    let a1 = artifact(
        &mut r,
        AT_SBOM,
        &[("application/example.sbom.breakfast", b"eggs\n")],
        Some(&v2),
        None,
    );
    let a2 = artifact(
        &mut r,
        AT_SIG,
        &[("application/example.signature.text", b"signed\n")],
        Some(&v2),
        None,
    );
    r.tag("a1", &a1.digest);
    r.tag("a2", &a2.digest);
    fallback_index(&mut r, &v2.digest, &[&a1, &a2]);
    let mut arms = Vec::new();
    for (c, text) in v2c
        .iter()
        .zip([&b"no arms\n"[..], &b"64 arms\n"[..], &b"7 arms\n"[..]])
    {
        let a = artifact(&mut r, AT_ARMS, &[(AT_ARMS, text)], Some(c), None);
        r.untagged.push(a.digest.clone());
        fallback_index(&mut r, &c.digest, &[&a]);
        arms.push(a);
    }
    d.d2 = v2.digest.clone();
    d.d2_amd = v2c[0].digest.clone();
    d.d2_arm = v2c[1].digest.clone();
    d.d2_armv7 = v2c[2].digest.clone();
    d.sbom = a1.digest.clone();
    d.sig = a2.digest.clone();
    d.a1 = a1.digest.clone();
    d.a2 = a2.digest.clone();
    d.arms_amd = arms[0].digest.clone();
    d.arms_arm = arms[1].digest.clone();
    d.arms_armv7 = arms[2].digest.clone();

    // v3: 4 platforms; two sboms pushed by digest, their fallback tag deleted.
    let (v3, _) = platform_index(&mut r, "v3", &PLAT4, vec![], base_ann("v3", "b3"));
    r.tag("v3", &v3.digest);
    let s1 = artifact(
        &mut r,
        AT_SBOM,
        &[("application/example.sbom.lunch", b"sandwich\n")],
        Some(&v3),
        Some(json!({"org.example.sbom": "1"})),
    );
    let s2 = artifact(
        &mut r,
        AT_SBOM,
        &[("application/example.sbom.dinner", b"pasta\n")],
        Some(&v3),
        Some(json!({"org.example.sbom": "2"})),
    );
    r.untagged.push(s1.digest.clone());
    r.untagged.push(s2.digest.clone());
    fallback_index(&mut r, &v3.digest, &[&s1, &s2]);
    r.untag(&fallback_tag(&v3.digest));
    d.d3 = v3.digest.clone();
    d.v3_sbom1 = s1.digest.clone();
    d.v3_sbom2 = s2.digest.clone();

    // a3: multi-layer artifact.
    let a3 = artifact(
        &mut r,
        "application/example.multi",
        &[
            ("application/example.layer", b"layer one\n"),
            ("application/example.layer", b"layer two\n"),
            ("application/example.layer", b"layer three\n"),
        ],
        None,
        None,
    );
    r.tag("a3", &a3.digest);
    d.a3 = a3.digest.clone();

    // ai: index of artifacts.
    let mut ai_descs = Vec::new();
    for (m, t) in [(&a1, "sbom"), (&a2, "sig")] {
        let mut dd = referrer_desc(m);
        dd["annotations"] = json!({"type": t});
        ai_descs.push(dd);
    }
    let ai = r.add_manifest(
        MT_OCI_INDEX,
        &json!({
            "schemaVersion": 2,
            "mediaType": MT_OCI_INDEX,
            "artifactType": "application/example.artifacts",
            "manifests": ai_descs,
        }),
    );
    r.tag("ai", &ai.digest);
    d.ai = ai.digest.clone();

    // a-example: config descriptor with embedded data.
    let empty = Blob::new(MT_EMPTY, b"{}".to_vec());
    let mut cd = r.add_blob(&empty);
    {
        use base64::Engine as _;
        cd["data"] = json!(base64::engine::general_purpose::STANDARD.encode(&empty.data));
    }
    let ex = r.add_blob(&Blob::new("application/example", b"example\n".to_vec()));
    let a_example = r.add_manifest(
        MT_OCI_MANIFEST,
        &json!({
            "schemaVersion": 2,
            "mediaType": MT_OCI_MANIFEST,
            "artifactType": "application/example",
            "config": cd,
            "layers": [ex],
        }),
    );
    r.tag("a-example", &a_example.digest);
    d.a_example = a_example.digest.clone();

    // Digest tag from v1 pointing to v3.
    d.meta_tag = format!("sha256-{}.{}.meta", hex(&d.d1), &hex(&d.d3)[..16]);
    r.tag(&d.meta_tag.clone(), &v3.digest);

    // child and loop (an index listing child, with child as its subject).
    let child = artifact(
        &mut r,
        "application/example.child",
        &[("application/octet-stream", b"child\n")],
        None,
        None,
    );
    r.tag("child", &child.digest);
    let lp = r.add_manifest(
        MT_OCI_INDEX,
        &json!({
            "schemaVersion": 2,
            "mediaType": MT_OCI_INDEX,
            "artifactType": "application/example.loop",
            "manifests": [desc(&child)],
            "subject": desc(&child),
        }),
    );
    r.tag("loop", &lp.digest);
    fallback_index(&mut r, &child.digest, &[&lp]);
    d.child = child.digest.clone();
    d.loop_ = lp.digest.clone();

    // mirror with a digest tag pointing to itself.
    let mirror = artifact(
        &mut r,
        "application/example.mirror",
        &[("application/octet-stream", b"mirror\n")],
        None,
        None,
    );
    r.tag("mirror", &mirror.digest);
    r.tag(&fallback_tag(&mirror.digest), &mirror.digest);
    d.mirror = mirror.digest.clone();

    // external: two sboms of v2 (annotations preference=1|2) and their fallback index.
    let e1 = artifact(
        &mut x,
        AT_SBOM,
        &[("application/example.sbom.breakfast", b"bacon\n")],
        Some(&v2),
        Some(json!({"preference": "1"})),
    );
    let e2 = artifact(
        &mut x,
        AT_SBOM,
        &[("application/example.sbom.breakfast", b"toast\n")],
        Some(&v2),
        Some(json!({"preference": "2"})),
    );
    x.tag("a3", &e1.digest);
    x.tag("a4", &e2.digest);
    fallback_index(&mut x, &v2.digest, &[&e1, &e2]);
    d.ext1 = e1.digest.clone();
    d.ext2 = e2.digest.clone();

    let fx = Fixture {
        testrepo: r,
        external: x,
        d,
    };
    fx.self_check();
    fx
}

impl Fixture {
    /// Internal consistency: every descriptor resolves, digests are content digests, the
    /// digests the cases compare are pairwise distinct.
    fn self_check(&self) {
        for r in self.repos() {
            for b in &r.blobs {
                assert_eq!(sha256_digest(&b.data), b.digest);
            }
            let mut seen = BTreeSet::new();
            for m in &r.manifests {
                assert_eq!(sha256_digest(&m.bytes), m.digest);
                let v = m.json();
                if let Some(cs) = v["manifests"].as_array() {
                    for c in cs {
                        let cd = c["digest"].as_str().unwrap();
                        assert!(
                            seen.contains(cd),
                            "{}: index {} lists {cd} before it is defined",
                            r.name,
                            m.digest
                        );
                        let cm = r.manifest(cd).unwrap();
                        assert_eq!(c["size"].as_u64(), Some(cm.bytes.len() as u64));
                    }
                }
                r.blob_deps(m);
                seen.insert(m.digest.clone());
            }
        }
        let d = &self.d;
        let named: BTreeMap<&str, &str> = [
            ("d1", d.d1.as_str()),
            ("d2", &d.d2),
            ("d3", &d.d3),
            ("d1AMD", &d.d1_amd),
            ("d1ARM", &d.d1_arm),
            ("d2AMD", &d.d2_amd),
            ("dSBOM", &d.sbom),
            ("dSig", &d.sig),
            ("dExt1", &d.ext1),
            ("dExt2", &d.ext2),
            ("dChild", &d.child),
            ("dLoop", &d.loop_),
            ("dMirror", &d.mirror),
        ]
        .into_iter()
        .collect();
        let distinct: BTreeSet<&str> = named.values().copied().collect();
        assert_eq!(distinct.len(), named.len(), "fixture digests collide");
        assert_eq!(self.testrepo.tag_digest("a1"), Some(d.sbom.as_str()));
        assert_eq!(self.testrepo.tag_digest("a2"), Some(d.sig.as_str()));
        assert!(self.testrepo.tag_digest(&fallback_tag(&d.d3)).is_none());
    }
}
