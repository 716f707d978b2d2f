//! Deterministic synthetic images, a raw registry pusher/reader on reqwest (basic auth, plus a
//! minimal Bearer challenge flow), an OCI image-layout writer/reader, and recursive
//! "same image" assertions. Deliberately independent of the crate's own clients.

use super::{block_on, http};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MT_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const MT_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const MT_OCI_ARTIFACT: &str = "application/vnd.oci.artifact.manifest.v1+json";
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The 7-value Accept list regclient sends for manifest HEAD/GET.
pub const MANIFEST_ACCEPT: [&str; 7] = [
    MT_OCI_INDEX,
    MT_OCI_MANIFEST,
    MT_DOCKER_LIST,
    MT_DOCKER_MANIFEST,
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.docker.distribution.manifest.v1+json",
    MT_OCI_ARTIFACT,
];

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

// ---------------------------------------------------------------------------------------------
// Synthetic content
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Oci,
    Docker,
}

#[derive(Clone, Debug)]
pub struct Blob {
    pub media_type: String,
    pub digest: String,
    pub data: Vec<u8>,
}

impl Blob {
    pub fn new(media_type: &str, data: Vec<u8>) -> Blob {
        Blob {
            media_type: media_type.to_string(),
            digest: sha256_digest(&data),
            data,
        }
    }
    pub fn size(&self) -> usize {
        self.data.len()
    }
    pub fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.data.len()})
    }
}

#[derive(Clone, Debug)]
pub struct Manifest {
    pub media_type: String,
    pub digest: String,
    pub bytes: Vec<u8>,
}

impl Manifest {
    pub fn from_json(media_type: &str, v: &Value) -> Manifest {
        let bytes = serde_json::to_vec(v).unwrap();
        Manifest {
            media_type: media_type.to_string(),
            digest: sha256_digest(&bytes),
            bytes,
        }
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).expect("manifest json")
    }
    pub fn is_index(&self) -> bool {
        self.media_type == MT_OCI_INDEX || self.media_type == MT_DOCKER_LIST
    }
}

/// An image ready to push: the top manifest (tagged), child manifests (for indexes), blobs.
#[derive(Clone, Debug)]
pub struct TestImage {
    pub top: Manifest,
    pub children: Vec<Manifest>,
    pub blobs: Vec<Blob>,
}

impl TestImage {
    pub fn digest(&self) -> &str {
        &self.top.digest
    }
    pub fn media_type(&self) -> &str {
        &self.top.media_type
    }
    /// Distinct blob digests (configs and layers).
    pub fn blob_digests(&self) -> BTreeSet<String> {
        self.blobs.iter().map(|b| b.digest.clone()).collect()
    }
    pub fn child_digests(&self) -> Vec<String> {
        self.children.iter().map(|m| m.digest.clone()).collect()
    }
    /// Sum of distinct blob sizes.
    pub fn blob_bytes(&self) -> usize {
        let mut seen = BTreeSet::new();
        self.blobs
            .iter()
            .filter(|b| seen.insert(b.digest.clone()))
            .map(|b| b.size())
            .sum()
    }
}

/// Parameters of one single-platform image.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    pub seed: u64,
    pub format: Format,
    /// Number of unique layers (after `base_layers`).
    pub layers: usize,
    pub layer_size: usize,
    /// Layers prepended to every image built from this spec (shared base).
    pub base_layers: Vec<Blob>,
    /// `os/arch[/variant]`
    pub platform: String,
}

impl ImageSpec {
    pub fn new(seed: u64, format: Format) -> ImageSpec {
        ImageSpec {
            seed,
            format,
            layers: 2,
            layer_size: 2048,
            base_layers: Vec::new(),
            platform: "linux/amd64".into(),
        }
    }
    pub fn base(mut self, base: &[Blob]) -> Self {
        self.base_layers = base.to_vec();
        self
    }
    pub fn layers(mut self, n: usize, size: usize) -> Self {
        self.layers = n;
        self.layer_size = size;
        self
    }
    pub fn platform(mut self, p: &str) -> Self {
        self.platform = p.into();
        self
    }
    pub fn build(&self) -> TestImage {
        build_image(self)
    }
}

/// splitmix64 byte stream: deterministic "random" content from a seed.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A layer blob of `size` pseudo-random bytes (labelled gzip; nothing looks inside).
pub fn layer(seed: u64, size: usize, format: Format) -> Blob {
    let mt = match format {
        Format::Oci => MT_OCI_LAYER,
        Format::Docker => MT_DOCKER_LAYER,
    };
    Blob::new(mt, pseudo_random(seed, size))
}

fn split_platform(p: &str) -> (String, String, Option<String>) {
    let mut it = p.split('/');
    let os = it.next().unwrap_or("linux").to_string();
    let arch = it.next().unwrap_or("amd64").to_string();
    let variant = it.next().map(|s| s.to_string());
    (os, arch, variant)
}

fn platform_json(p: &str) -> Value {
    let (os, arch, variant) = split_platform(p);
    let mut v = json!({"architecture": arch, "os": os});
    if let Some(var) = variant {
        v["variant"] = json!(var);
    }
    v
}

pub fn build_image(spec: &ImageSpec) -> TestImage {
    let mut layers: Vec<Blob> = spec.base_layers.clone();
    for i in 0..spec.layers {
        let s = spec.seed.wrapping_mul(1_000_003).wrapping_add(i as u64 + 1);
        layers.push(layer(s, spec.layer_size, spec.format));
    }
    let (os, arch, variant) = split_platform(&spec.platform);
    let mut cfg = json!({
        "architecture": arch,
        "os": os,
        "config": {"Labels": {"regsync.test.seed": spec.seed.to_string()}},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>()},
    });
    if let Some(v) = variant {
        cfg["variant"] = json!(v);
    }
    let (cfg_mt, man_mt) = match spec.format {
        Format::Oci => (MT_OCI_CONFIG, MT_OCI_MANIFEST),
        Format::Docker => (MT_DOCKER_CONFIG, MT_DOCKER_MANIFEST),
    };
    let config = Blob::new(cfg_mt, serde_json::to_vec(&cfg).unwrap());
    let man = json!({
        "schemaVersion": 2,
        "mediaType": man_mt,
        "config": config.descriptor(),
        "layers": layers.iter().map(|l| l.descriptor()).collect::<Vec<_>>(),
    });
    let top = Manifest::from_json(man_mt, &man);
    let mut blobs = vec![config];
    blobs.extend(layers);
    TestImage {
        top,
        children: Vec::new(),
        blobs,
    }
}

/// Single-platform OCI image: 2 layers of 2 KiB.
pub fn oci_image(seed: u64) -> TestImage {
    ImageSpec::new(seed, Format::Oci).build()
}

/// Single-platform Docker v2 schema 2 image: 2 layers of 2 KiB.
pub fn docker_image(seed: u64) -> TestImage {
    ImageSpec::new(seed, Format::Docker).build()
}

/// Multi-platform image: an index/list over one image per platform (`os/arch[/variant]`).
pub fn multi_platform(seed: u64, format: Format, platforms: &[&str]) -> TestImage {
    let mut children = Vec::new();
    let mut blobs = Vec::new();
    let mut descs = Vec::new();
    for (i, p) in platforms.iter().enumerate() {
        let img = ImageSpec::new(seed.wrapping_mul(31).wrapping_add(i as u64 + 1), format)
            .platform(p)
            .build();
        descs.push(json!({
            "mediaType": img.top.media_type,
            "digest": img.top.digest,
            "size": img.top.bytes.len(),
            "platform": platform_json(p),
        }));
        blobs.extend(img.blobs);
        children.push(img.top);
    }
    let mt = match format {
        Format::Oci => MT_OCI_INDEX,
        Format::Docker => MT_DOCKER_LIST,
    };
    let top = Manifest::from_json(
        mt,
        &json!({"schemaVersion": 2, "mediaType": mt, "manifests": descs}),
    );
    TestImage {
        top,
        children,
        blobs,
    }
}

/// OCI index over the given platforms.
pub fn index_image(seed: u64, platforms: &[&str]) -> TestImage {
    multi_platform(seed, Format::Oci, platforms)
}

/// Docker manifest list over the given platforms.
pub fn manifest_list_image(seed: u64, platforms: &[&str]) -> TestImage {
    multi_platform(seed, Format::Docker, platforms)
}

// ---------------------------------------------------------------------------------------------
// Locations
// ---------------------------------------------------------------------------------------------

/// Where images live: a registry (host + optional basic creds) or an OCI-layout root
/// directory. For `Dir(root)`, repository `r` is the layout at `root/r` (`""` = `root` itself).
#[derive(Clone, Debug)]
pub enum Loc {
    Reg {
        host: String,
        auth: Option<(String, String)>,
    },
    Dir(PathBuf),
}

impl Loc {
    pub fn reg(host: &str) -> Loc {
        Loc::Reg {
            host: host.to_string(),
            auth: None,
        }
    }
    pub fn reg_auth(host: &str, user: &str, pass: &str) -> Loc {
        Loc::Reg {
            host: host.to_string(),
            auth: Some((user.into(), pass.into())),
        }
    }
    fn layout(&self, repo: &str) -> PathBuf {
        match self {
            Loc::Dir(root) if repo.is_empty() => root.clone(),
            Loc::Dir(root) => root.join(repo),
            Loc::Reg { .. } => panic!("not a layout"),
        }
    }
}

impl From<&str> for Loc {
    fn from(s: &str) -> Loc {
        if let Some(p) = s.strip_prefix("ocidir://") {
            Loc::Dir(PathBuf::from(p))
        } else if s.starts_with('/') {
            Loc::Dir(PathBuf::from(s))
        } else {
            Loc::reg(s.trim_start_matches("http://"))
        }
    }
}
impl From<&String> for Loc {
    fn from(s: &String) -> Loc {
        Loc::from(s.as_str())
    }
}
impl From<String> for Loc {
    fn from(s: String) -> Loc {
        Loc::from(s.as_str())
    }
}
impl From<&Path> for Loc {
    fn from(p: &Path) -> Loc {
        Loc::Dir(p.to_path_buf())
    }
}
impl From<&PathBuf> for Loc {
    fn from(p: &PathBuf) -> Loc {
        Loc::Dir(p.clone())
    }
}
impl From<&Loc> for Loc {
    fn from(l: &Loc) -> Loc {
        l.clone()
    }
}
impl From<&super::Registry> for Loc {
    fn from(r: &super::Registry) -> Loc {
        Loc::Reg {
            host: r.host(),
            auth: r.auth(),
        }
    }
}
impl From<&super::TokenProxy> for Loc {
    fn from(p: &super::TokenProxy) -> Loc {
        Loc::Reg {
            host: p.host(),
            auth: p.user(),
        }
    }
}

/// `ocidir://<abs path>` (+ `:tag` when non-empty).
pub fn ocidir_ref(path: &Path, tag: &str) -> String {
    let p = path.to_str().expect("utf-8 path");
    assert!(p.starts_with('/'), "ocidir path must be absolute");
    if tag.is_empty() {
        format!("ocidir://{p}")
    } else {
        format!("ocidir://{p}:{tag}")
    }
}

// ---------------------------------------------------------------------------------------------
// Raw registry HTTP (async internals)
// ---------------------------------------------------------------------------------------------

struct Req<'a> {
    method: Method,
    url: String,
    headers: Vec<(&'a str, String)>,
    body: Option<Vec<u8>>,
}

/// Send with preemptive basic auth (when configured); on a `Bearer` 401 challenge fetch a
/// token from the realm (with basic creds if any) and retry once.
async fn send(host: &str, auth: &Option<(String, String)>, req: Req<'_>) -> reqwest::Response {
    let build = |bearer: Option<&str>| {
        let mut b = http().request(req.method.clone(), &req.url);
        for (k, v) in &req.headers {
            b = b.header(*k, v);
        }
        match (bearer, auth) {
            (Some(t), _) => b = b.bearer_auth(t),
            (None, Some((u, p))) => b = b.basic_auth(u, Some(p)),
            _ => {}
        }
        if let Some(body) = &req.body {
            b = b.body(body.clone());
        }
        b
    };
    let resp = build(None)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{} {}: {e}", req.method, req.url));
    if resp.status() != StatusCode::UNAUTHORIZED {
        return resp;
    }
    let chal = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !chal.to_ascii_lowercase().starts_with("bearer") {
        return resp;
    }
    let params = parse_challenge(&chal);
    let realm = params
        .iter()
        .find(|(k, _)| k == "realm")
        .map(|(_, v)| v.clone())
        .expect("bearer realm");
    let mut q: Vec<(String, String)> = Vec::new();
    for (k, v) in &params {
        if k == "service" || k == "scope" {
            q.push((k.clone(), v.clone()));
        }
    }
    let mut tb = http().get(&realm).query(&q);
    if let Some((u, p)) = auth {
        tb = tb.basic_auth(u, Some(p));
    }
    let tr = tb.send().await.expect("token request");
    if !tr.status().is_success() {
        panic!("token request to {realm} ({host}) failed: {}", tr.status());
    }
    let tv: Value = tr.json().await.expect("token json");
    let tok = tv["token"]
        .as_str()
        .or(tv["access_token"].as_str())
        .expect("token field")
        .to_string();
    build(Some(&tok))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{} {}: {e}", req.method, req.url))
}

/// Parse `Bearer realm="x",service="y",scope="z"` into key/value pairs.
pub fn parse_challenge(h: &str) -> Vec<(String, String)> {
    let rest = h.split_once(' ').map(|x| x.1).unwrap_or("");
    let mut out = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(' ') | Some(',')) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next().is_none() {
            break;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            val.push(n)
                        }
                    }
                    '"' => break,
                    _ => val.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                val.push(c);
                chars.next();
            }
        }
        out.push((key.trim().to_ascii_lowercase(), val));
    }
    out
}

fn reg_parts(loc: &Loc) -> (&str, &Option<(String, String)>) {
    match loc {
        Loc::Reg { host, auth } => (host.as_str(), auth),
        Loc::Dir(_) => unreachable!(),
    }
}

fn accept() -> String {
    MANIFEST_ACCEPT.join(", ")
}

async fn reg_push_blob(loc: &Loc, repo: &str, blob: &Blob) {
    let (host, auth) = reg_parts(loc);
    let head = send(
        host,
        auth,
        Req {
            method: Method::HEAD,
            url: format!("http://{host}/v2/{repo}/blobs/{}", blob.digest),
            headers: vec![],
            body: None,
        },
    )
    .await;
    if head.status() == StatusCode::OK {
        return;
    }
    let post = send(
        host,
        auth,
        Req {
            method: Method::POST,
            url: format!("http://{host}/v2/{repo}/blobs/uploads/"),
            headers: vec![],
            body: None,
        },
    )
    .await;
    assert_eq!(
        post.status(),
        StatusCode::ACCEPTED,
        "POST blob upload {host}/{repo}"
    );
    let loc_hdr = post
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("upload Location")
        .to_string();
    let mut url = if loc_hdr.starts_with("http") {
        loc_hdr
    } else {
        format!("http://{host}{loc_hdr}")
    };
    url.push(if url.contains('?') { '&' } else { '?' });
    url.push_str("digest=");
    url.push_str(&blob.digest.replace(':', "%3A"));
    let put = send(
        host,
        auth,
        Req {
            method: Method::PUT,
            url,
            headers: vec![
                ("content-type", "application/octet-stream".into()),
                ("content-length", blob.data.len().to_string()),
            ],
            body: Some(blob.data.clone()),
        },
    )
    .await;
    let st = put.status();
    assert_eq!(
        st,
        StatusCode::CREATED,
        "PUT blob {} to {host}/{repo}: {}",
        blob.digest,
        put.text().await.unwrap_or_default()
    );
}

async fn reg_push_manifest(loc: &Loc, repo: &str, reference: &str, m: &Manifest) {
    let (host, auth) = reg_parts(loc);
    let r = send(
        host,
        auth,
        Req {
            method: Method::PUT,
            url: format!("http://{host}/v2/{repo}/manifests/{reference}"),
            headers: vec![("content-type", m.media_type.clone())],
            body: Some(m.bytes.clone()),
        },
    )
    .await;
    let st = r.status();
    assert_eq!(
        st,
        StatusCode::CREATED,
        "PUT manifest {host}/{repo}:{reference}: {}",
        r.text().await.unwrap_or_default()
    );
}

/// Status of a manifest HEAD (for tests that probe auth/read-only behaviour).
pub async fn reg_status(loc: &Loc, method: Method, path: &str) -> u16 {
    let (host, auth) = reg_parts(loc);
    send(
        host,
        auth,
        Req {
            method,
            url: format!("http://{host}{path}"),
            headers: vec![("accept", accept())],
            body: None,
        },
    )
    .await
    .status()
    .as_u16()
}

// ---------------------------------------------------------------------------------------------
// OCI layout
// ---------------------------------------------------------------------------------------------

fn layout_blob_path(dir: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').expect("digest");
    dir.join("blobs").join(alg).join(hex)
}

fn layout_write_blob(dir: &Path, digest: &str, data: &[u8]) {
    let p = layout_blob_path(dir, digest);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    if !p.exists() {
        fs::write(p, data).unwrap();
    }
}

fn layout_index(dir: &Path) -> Option<Value> {
    let s = fs::read(dir.join("index.json")).ok()?;
    Some(serde_json::from_slice(&s).expect("index.json is JSON"))
}

fn layout_push(dir: &Path, tag: &str, img: &TestImage) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    for b in &img.blobs {
        layout_write_blob(dir, &b.digest, &b.data);
    }
    for m in &img.children {
        layout_write_blob(dir, &m.digest, &m.bytes);
    }
    layout_write_blob(dir, &img.top.digest, &img.top.bytes);
    let mut idx = layout_index(dir)
        .unwrap_or_else(|| json!({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": []}));
    let list = idx["manifests"].as_array_mut().expect("manifests array");
    list.retain(|d| d["annotations"][REF_NAME].as_str() != Some(tag));
    let mut d = json!({
        "mediaType": img.top.media_type,
        "digest": img.top.digest,
        "size": img.top.bytes.len(),
    });
    if !tag.is_empty() {
        d["annotations"] = json!({ REF_NAME: tag });
    }
    list.push(d);
    fs::write(dir.join("index.json"), serde_json::to_vec(&idx).unwrap()).unwrap();
}

/// Index entry for a tag: exact ref name, else a ref name ending in `:<tag>`.
fn layout_lookup_tag(dir: &Path, tag: &str) -> Option<Value> {
    let idx = layout_index(dir)?;
    let list = idx["manifests"].as_array()?.clone();
    let name = |d: &Value| d["annotations"][REF_NAME].as_str().map(|s| s.to_string());
    list.iter()
        .find(|d| name(d).as_deref() == Some(tag))
        .or_else(|| {
            list.iter().find(|d| {
                name(d)
                    .map(|n| n.ends_with(&format!(":{tag}")))
                    .unwrap_or(false)
            })
        })
        .cloned()
}

fn layout_tags(dir: &Path) -> Vec<String> {
    let Some(idx) = layout_index(dir) else {
        return vec![];
    };
    let mut v: Vec<String> = idx["manifests"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d["annotations"][REF_NAME].as_str())
                .map(|n| n.rsplit(':').next().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v.dedup();
    v
}

// ---------------------------------------------------------------------------------------------
// Public push / read API (blocking)
// ---------------------------------------------------------------------------------------------

/// Push an image to `loc` as `repo:tag`: blobs (HEAD, then POST + PUT), child manifests by
/// digest, then the top manifest by tag. For a layout, writes blobs and the index.json entry.
pub fn push(loc: impl Into<Loc>, repo: &str, tag: &str, img: &TestImage) {
    let loc = loc.into();
    match &loc {
        Loc::Dir(_) => layout_push(&loc.layout(repo), tag, img),
        Loc::Reg { .. } => block_on(async {
            let mut seen = BTreeSet::new();
            for b in &img.blobs {
                if seen.insert(b.digest.clone()) {
                    reg_push_blob(&loc, repo, b).await;
                }
            }
            for m in &img.children {
                reg_push_manifest(&loc, repo, &m.digest, m).await;
            }
            reg_push_manifest(&loc, repo, tag, &img.top).await;
        }),
    }
}

/// Write `img` as `tag` into the OCI layout at `dir` (created if needed).
pub fn write_layout(dir: &Path, img: &TestImage, tag: &str) {
    layout_push(dir, tag, img);
}

/// Fetch a manifest by tag or digest: `(media type, digest of the bytes, bytes)`; None when
/// absent. Panics on other errors (auth problems should be loud).
pub fn get_manifest(loc: impl Into<Loc>, repo: &str, reference: &str) -> Option<Manifest> {
    let loc = loc.into();
    match &loc {
        Loc::Dir(_) => {
            let dir = loc.layout(repo);
            let (digest, mt_hint) = if reference.starts_with("sha256:") {
                (reference.to_string(), None)
            } else {
                let d = layout_lookup_tag(&dir, reference)?;
                (
                    d["digest"].as_str()?.to_string(),
                    d["mediaType"].as_str().map(|s| s.to_string()),
                )
            };
            let bytes = fs::read(layout_blob_path(&dir, &digest)).ok()?;
            assert_eq!(sha256_digest(&bytes), digest, "layout blob content");
            let v: Value = serde_json::from_slice(&bytes).expect("manifest json");
            let mt = mt_hint
                .or_else(|| v["mediaType"].as_str().map(|s| s.to_string()))
                .unwrap_or_default();
            Some(Manifest {
                media_type: mt,
                digest,
                bytes,
            })
        }
        Loc::Reg { .. } => block_on(async {
            let (host, auth) = reg_parts(&loc);
            let r = send(
                host,
                auth,
                Req {
                    method: Method::GET,
                    url: format!("http://{host}/v2/{repo}/manifests/{reference}"),
                    headers: vec![("accept", accept())],
                    body: None,
                },
            )
            .await;
            if r.status() == StatusCode::NOT_FOUND {
                return None;
            }
            assert!(
                r.status().is_success(),
                "GET manifest {host}/{repo}:{reference}: {}",
                r.status()
            );
            let mt = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .split(';')
                .next()
                .unwrap()
                .trim()
                .to_string();
            let hdr = r
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .map(|s| s.to_string());
            let bytes = r.bytes().await.expect("manifest body").to_vec();
            let digest = sha256_digest(&bytes);
            if let Some(h) = hdr {
                assert_eq!(h, digest, "Docker-Content-Digest vs body");
            }
            Some(Manifest {
                media_type: mt,
                digest,
                bytes,
            })
        }),
    }
}

/// Digest of `repo:tag` (HEAD with the 7-value Accept list; layout: index.json), None if absent.
pub fn manifest_digest(loc: impl Into<Loc>, repo: &str, tag: &str) -> Option<String> {
    let loc = loc.into();
    match &loc {
        Loc::Dir(_) => layout_lookup_tag(&loc.layout(repo), tag)
            .and_then(|d| d["digest"].as_str().map(|s| s.to_string())),
        Loc::Reg { .. } => block_on(async {
            let (host, auth) = reg_parts(&loc);
            let r = send(
                host,
                auth,
                Req {
                    method: Method::HEAD,
                    url: format!("http://{host}/v2/{repo}/manifests/{tag}"),
                    headers: vec![("accept", accept())],
                    body: None,
                },
            )
            .await;
            if r.status() == StatusCode::NOT_FOUND {
                return None;
            }
            assert!(
                r.status().is_success(),
                "HEAD manifest {host}/{repo}:{tag}: {}",
                r.status()
            );
            Some(
                r.headers()
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    .expect("Docker-Content-Digest")
                    .to_string(),
            )
        }),
    }
}

/// Tags of a repository, sorted (missing repository/layout = empty).
pub fn tags(loc: impl Into<Loc>, repo: &str) -> Vec<String> {
    let loc = loc.into();
    match &loc {
        Loc::Dir(_) => layout_tags(&loc.layout(repo)),
        Loc::Reg { .. } => block_on(async {
            let (host, auth) = reg_parts(&loc);
            let r = send(
                host,
                auth,
                Req {
                    method: Method::GET,
                    url: format!("http://{host}/v2/{repo}/tags/list?n=10000"),
                    headers: vec![("accept", "application/json".into())],
                    body: None,
                },
            )
            .await;
            if r.status() == StatusCode::NOT_FOUND {
                return vec![];
            }
            assert!(
                r.status().is_success(),
                "tags {host}/{repo}: {}",
                r.status()
            );
            let v: Value = r.json().await.expect("tags json");
            let mut t: Vec<String> = v["tags"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(|s| s.to_string()))
                        .collect()
                })
                .unwrap_or_default();
            t.sort();
            t
        }),
    }
}

/// `HEAD`/`GET /v2/<repo>/blobs/<digest>`: None on 404, any other failure fails the test.
async fn blob_response(
    loc: &Loc,
    repo: &str,
    digest: &str,
    method: Method,
) -> Option<reqwest::Response> {
    let (host, auth) = reg_parts(loc);
    let what = format!("{method} blob {host}/{repo}@{digest}");
    let r = send(
        host,
        auth,
        Req {
            method,
            url: format!("http://{host}/v2/{repo}/blobs/{digest}"),
            headers: vec![],
            body: None,
        },
    )
    .await;
    if r.status() == StatusCode::NOT_FOUND {
        return None;
    }
    assert!(r.status().is_success(), "{what}: {}", r.status());
    Some(r)
}

/// Size of a blob when present (registry: HEAD /blobs/; layout: file).
pub fn blob_size(loc: impl Into<Loc>, repo: &str, digest: &str) -> Option<u64> {
    let loc = loc.into();
    match &loc {
        Loc::Dir(_) => fs::metadata(layout_blob_path(&loc.layout(repo), digest))
            .ok()
            .map(|m| m.len()),
        Loc::Reg { .. } => block_on(async {
            let r = blob_response(&loc, repo, digest, Method::HEAD).await?;
            r.headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.parse().ok())
        }),
    }
}

/// Blob content (registry: GET /blobs/, following redirects; layout: file); None when absent.
pub fn get_blob(loc: impl Into<Loc>, repo: &str, digest: &str) -> Option<Vec<u8>> {
    let loc = loc.into();
    match &loc {
        Loc::Dir(_) => fs::read(layout_blob_path(&loc.layout(repo), digest)).ok(),
        Loc::Reg { .. } => block_on(async {
            let r = blob_response(&loc, repo, digest, Method::GET).await?;
            let b = r.bytes().await.expect("blob body").to_vec();
            assert_eq!(sha256_digest(&b), digest, "blob content digest");
            Some(b)
        }),
    }
}

pub fn blob_exists(loc: impl Into<Loc>, repo: &str, digest: &str) -> bool {
    blob_size(loc, repo, digest).is_some()
}

/// A registry's catalog (sorted); for a layout root, the sub-directories holding `oci-layout`.
pub fn catalog(loc: impl Into<Loc>) -> Vec<String> {
    let loc = loc.into();
    match &loc {
        Loc::Dir(root) => {
            let mut out = Vec::new();
            fn walk(root: &Path, d: &Path, out: &mut Vec<String>) {
                if d.join("oci-layout").exists() {
                    out.push(d.strip_prefix(root).unwrap().to_string_lossy().into_owned());
                }
                if let Ok(rd) = fs::read_dir(d) {
                    for e in rd.flatten() {
                        if e.path().is_dir() && e.file_name() != "blobs" {
                            walk(root, &e.path(), out);
                        }
                    }
                }
            }
            walk(root, root, &mut out);
            out.sort();
            out
        }
        Loc::Reg { .. } => block_on(async {
            let (host, auth) = reg_parts(&loc);
            let r = send(
                host,
                auth,
                Req {
                    method: Method::GET,
                    url: format!("http://{host}/v2/_catalog?n=1000"),
                    headers: vec![("accept", "application/json".into())],
                    body: None,
                },
            )
            .await;
            assert!(r.status().is_success(), "catalog {host}: {}", r.status());
            let v: Value = r.json().await.expect("catalog json");
            let mut t: Vec<String> = v["repositories"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(|s| s.to_string()))
                        .collect()
                })
                .unwrap_or_default();
            t.sort();
            t
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Assertions
// ---------------------------------------------------------------------------------------------

/// `src repo:tag` and `dst repo:tag` have the same digest, and every child manifest and blob
/// reachable from it is present (right size) in `dst repo`.
pub fn assert_same_image(src: impl Into<Loc>, dst: impl Into<Loc>, repo: &str, tag: &str) {
    assert_same_image_at(src, repo, dst, repo, tag)
}

/// Like [`assert_same_image`] with different repository names on each side.
pub fn assert_same_image_at(
    src: impl Into<Loc>,
    src_repo: &str,
    dst: impl Into<Loc>,
    dst_repo: &str,
    tag: &str,
) {
    let (src, dst) = (src.into(), dst.into());
    let sd = manifest_digest(&src, src_repo, tag)
        .unwrap_or_else(|| panic!("source {src:?} {src_repo}:{tag} does not exist"));
    let dd = manifest_digest(&dst, dst_repo, tag)
        .unwrap_or_else(|| panic!("target {dst:?} {dst_repo}:{tag} does not exist"));
    assert_eq!(
        sd, dd,
        "digest of {dst_repo}:{tag} in target differs from source {src_repo}:{tag}"
    );
    let m = get_manifest(&src, src_repo, &sd).expect("source manifest by digest");
    assert_tree_present(&src, src_repo, &dst, dst_repo, &m, 0);
}

fn assert_tree_present(
    src: &Loc,
    src_repo: &str,
    dst: &Loc,
    dst_repo: &str,
    m: &Manifest,
    depth: usize,
) {
    assert!(depth < 8, "manifest nesting too deep");
    let tm = get_manifest(dst, dst_repo, &m.digest)
        .unwrap_or_else(|| panic!("target {dst_repo}@{} missing", m.digest));
    assert_eq!(tm.bytes, m.bytes, "manifest {} bytes differ", m.digest);
    let v = m.json();
    if let Some(children) = v["manifests"].as_array() {
        for c in children {
            let d = c["digest"].as_str().expect("child digest");
            let cm = get_manifest(src, src_repo, d)
                .unwrap_or_else(|| panic!("source child {src_repo}@{d} missing"));
            assert_tree_present(src, src_repo, dst, dst_repo, &cm, depth + 1);
        }
        return;
    }
    let mut descs: Vec<&Value> = Vec::new();
    if v["config"].is_object() {
        descs.push(&v["config"]);
    }
    if let Some(ls) = v["layers"].as_array() {
        descs.extend(ls.iter());
    }
    for d in descs {
        let dg = d["digest"].as_str().expect("blob digest");
        let size = d["size"].as_u64().expect("blob size");
        let got = blob_size(dst, dst_repo, dg)
            .unwrap_or_else(|| panic!("target {dst_repo} blob {dg} missing"));
        assert_eq!(got, size, "target {dst_repo} blob {dg} size");
    }
}

/// `loc repo:tag` holds exactly `img` (digest) with all its children and blobs.
pub fn assert_has_image(loc: impl Into<Loc>, repo: &str, tag: &str, img: &TestImage) {
    let loc = loc.into();
    let d = manifest_digest(&loc, repo, tag)
        .unwrap_or_else(|| panic!("{loc:?} {repo}:{tag} does not exist"));
    assert_eq!(d, img.top.digest, "{repo}:{tag} digest");
    for c in &img.children {
        let m = get_manifest(&loc, repo, &c.digest)
            .unwrap_or_else(|| panic!("{repo}@{} child missing", c.digest));
        assert_eq!(m.bytes, c.bytes);
    }
    for b in &img.blobs {
        assert_eq!(
            blob_size(&loc, repo, &b.digest),
            Some(b.data.len() as u64),
            "{repo} blob {}",
            b.digest
        );
    }
}

/// Every tag of `src_repo` matches in `dst_repo` (digest + tree), and the tag sets are equal.
pub fn assert_same_repo(src: impl Into<Loc>, src_repo: &str, dst: impl Into<Loc>, dst_repo: &str) {
    let (src, dst) = (src.into(), dst.into());
    let st = tags(&src, src_repo);
    let dt = tags(&dst, dst_repo);
    assert_eq!(st, dt, "tag sets of {src_repo} and {dst_repo}");
    for t in &st {
        assert_same_image_at(&src, src_repo, &dst, dst_repo, t);
    }
}
