//! The OCI data model shared by both storage schemes: digests, media types, descriptors and
//! manifests kept as the exact bytes received (a digest covers bytes, so we never re-serialise).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256, Sha512};
use std::collections::BTreeMap;
use std::fmt;

pub mod media {
    pub const DOCKER_V1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    pub const DOCKER_V1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
    pub const DOCKER_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_ARTIFACT: &str = "application/vnd.oci.artifact.manifest.v1+json";

    /// The `Accept` list sent on manifest HEAD/GET (spec §7.2, 7 values).
    pub const MANIFEST_ACCEPT: [&str; 7] = [
        OCI_INDEX,
        OCI_MANIFEST,
        DOCKER_LIST,
        DOCKER_V2,
        DOCKER_V1_SIGNED,
        DOCKER_V1,
        OCI_ARTIFACT,
    ];

    /// The four manifest media types regsync mirrors unless a step says otherwise (spec §3.4).
    pub const DEFAULT_MEDIA_TYPES: [&str; 4] = [DOCKER_V2, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX];

    pub fn is_index(mt: &str) -> bool {
        mt == OCI_INDEX || mt == DOCKER_LIST
    }

    pub fn is_manifest(mt: &str) -> bool {
        MANIFEST_ACCEPT.contains(&mt)
    }

    pub fn is_schema1(mt: &str) -> bool {
        mt == DOCKER_V1 || mt == DOCKER_V1_SIGNED
    }

    /// Blob media types an index may list directly (spec §6.2 step 6).
    pub const KNOWN_BLOBS: [&str; 9] = [
        "application/vnd.docker.container.image.v1+json",
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.docker.image.rootfs.diff.tar",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.diff.tar.zstd",
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.buildkit.cacheconfig.v0",
    ];

    pub fn is_known_blob(mt: &str) -> bool {
        KNOWN_BLOBS.contains(&mt)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid digest {0:?}")]
pub struct DigestError(pub String);

/// A content digest `<algorithm>:<hex>`; only sha256 and sha512 can be verified.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let (alg, hex) = s.split_once(':').ok_or_else(|| DigestError(s.into()))?;
        let alg_ok = !alg.is_empty()
            && alg
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c));
        let hex_ok = hex.len() >= 32 && hex.chars().all(|c| c.is_ascii_hexdigit());
        let len_ok = match alg {
            "sha256" => hex.len() == 64,
            "sha512" => hex.len() == 128,
            _ => true,
        };
        if alg_ok && hex_ok && len_ok {
            Ok(Digest(s.to_string()))
        } else {
            Err(DigestError(s.into()))
        }
    }

    pub fn sha256_of(data: &[u8]) -> Self {
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(data))))
    }

    pub fn algorithm(&self) -> &str {
        self.0.split_once(':').map(|(a, _)| a).unwrap_or("")
    }

    pub fn hex(&self) -> &str {
        self.0.split_once(':').map(|(_, h)| h).unwrap_or("")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Hash `data` with this digest's algorithm and compare.
    pub fn verifier(&self) -> Result<DigestVerifier, DigestError> {
        DigestVerifier::new(self)
    }
}

impl TryFrom<String> for Digest {
    type Error = DigestError;
    fn try_from(s: String) -> Result<Self, DigestError> {
        Digest::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

/// Incremental digest and size check for bytes that stream past (blob copies hash in flight).
pub struct DigestVerifier {
    expected: Digest,
    hasher: Hasher,
    pub seen: u64,
}

impl DigestVerifier {
    pub fn new(expected: &Digest) -> Result<Self, DigestError> {
        let hasher = match expected.algorithm() {
            "sha256" => Hasher::Sha256(Sha256::new()),
            "sha512" => Hasher::Sha512(Sha512::new()),
            _ => return Err(DigestError(expected.to_string())),
        };
        Ok(DigestVerifier {
            expected: expected.clone(),
            hasher,
            seen: 0,
        })
    }

    pub fn update(&mut self, chunk: &[u8]) {
        self.seen += chunk.len() as u64;
        match &mut self.hasher {
            Hasher::Sha256(h) => h.update(chunk),
            Hasher::Sha512(h) => h.update(chunk),
        }
    }

    /// The digest of everything seen so far (consumes the hasher state).
    pub fn finish(self) -> (Digest, bool) {
        let hex = match self.hasher {
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
        };
        let got = Digest(format!("{}:{}", self.expected.algorithm(), hex));
        let ok = got == self.expected;
        (got, ok)
    }
}

/// A platform as it appears in an index descriptor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(
        rename = "os.features",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_features: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An OCI/Docker content descriptor. Unknown fields are ignored: we only walk the graph, the
/// manifest bytes themselves are copied untouched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    #[serde(default)]
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: Digest, size: i64) -> Self {
        Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            urls: None,
            annotations: None,
            platform: None,
            artifact_type: None,
        }
    }

    pub fn is_external(&self) -> bool {
        self.urls.as_ref().is_some_and(|u| !u.is_empty())
    }
}

/// The links out of a manifest, whatever its kind.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestBody {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    schema_version: Option<i64>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    blobs: Option<Vec<Descriptor>>,
    #[serde(default)]
    subject: Option<Descriptor>,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
    /// Docker schema 1 layers.
    #[serde(default)]
    fs_layers: Option<Vec<FsLayer>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FsLayer {
    blob_sum: Digest,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest {digest} is not valid JSON: {source}")]
    Json {
        digest: Digest,
        source: serde_json::Error,
    },
}

/// A manifest: its exact bytes, its digest and media type.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub media_type: String,
    pub digest: Digest,
    pub bytes: Bytes,
}

/// What a manifest references, in the order a copy must push things.
#[derive(Debug, Default)]
pub struct ManifestLinks {
    /// Child manifests of an index.
    pub children: Vec<Descriptor>,
    /// Config blob (if any) followed by layers / artifact blobs.
    pub blobs: Vec<Descriptor>,
    /// Whether `blobs[0]` is the config (logs name it `Copy config`).
    pub has_config: bool,
    pub subject: Option<Descriptor>,
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Manifest {
    /// Build from fetched bytes. The media type comes from the response header when present,
    /// else from the body (spec §7.2).
    pub fn from_bytes(bytes: Bytes, header_media_type: Option<&str>) -> Self {
        let media_type = match header_media_type {
            Some(mt) if !mt.is_empty() && mt != "application/json" && mt != "text/plain" => {
                mt.to_string()
            }
            _ => infer_media_type(&bytes),
        };
        let digest = if media_type == media::DOCKER_V1_SIGNED {
            schema1_payload(&bytes)
                .map(|p| Digest::sha256_of(&p))
                .unwrap_or_else(|| Digest::sha256_of(&bytes))
        } else {
            Digest::sha256_of(&bytes)
        };
        Manifest {
            media_type,
            digest,
            bytes,
        }
    }

    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(
            &self.media_type,
            self.digest.clone(),
            self.bytes.len() as i64,
        )
    }

    pub fn is_index(&self) -> bool {
        media::is_index(&self.media_type)
    }

    pub fn links(&self) -> Result<ManifestLinks, ManifestError> {
        let body: ManifestBody =
            serde_json::from_slice(&self.bytes).map_err(|source| ManifestError::Json {
                digest: self.digest.clone(),
                source,
            })?;
        let mut links = ManifestLinks {
            subject: body.subject,
            artifact_type: body.artifact_type,
            annotations: body.annotations,
            ..Default::default()
        };
        if let Some(children) = body.manifests {
            links.children = children;
        }
        if let Some(config) = body.config {
            links.blobs.push(config);
            links.has_config = true;
        }
        links.blobs.extend(body.layers.unwrap_or_default());
        links.blobs.extend(body.blobs.unwrap_or_default());
        // Docker schema 1: layers without size, listed top first and often repeated
        for l in body.fs_layers.unwrap_or_default() {
            if !links.blobs.iter().any(|b| b.digest == l.blob_sum) {
                links.blobs.push(Descriptor::new(
                    "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    l.blob_sum,
                    -1,
                ));
            }
        }
        Ok(links)
    }

    /// The entry describing this manifest in its subject's referrers index (spec §6.5):
    /// media type, digest, size, `artifactType` (the manifest's, else its config media
    /// type) and the manifest's annotations.
    pub fn referrer_entry(&self) -> Result<Descriptor, ManifestError> {
        let links = self.links()?;
        let mut d = self.descriptor();
        d.artifact_type = links
            .artifact_type
            .clone()
            .filter(|a| !a.is_empty())
            .or_else(|| {
                links
                    .has_config
                    .then(|| links.blobs[0].media_type.clone())
                    .filter(|m| !m.is_empty())
            });
        d.annotations = links.annotations.filter(|a| !a.is_empty());
        Ok(d)
    }
}

/// The signed payload of a Docker schema 1 manifest (spec §6.6): the bytes before the
/// signatures (`formatLength` of the first signature's protected header) followed by its
/// `formatTail`. Its digest is the manifest's digest. `None` when unsigned or malformed.
fn schema1_payload(bytes: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine as _;
    #[derive(Deserialize)]
    struct Signed {
        signatures: Vec<Signature>,
    }
    #[derive(Deserialize)]
    struct Signature {
        protected: String,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Protected {
        format_length: usize,
        format_tail: String,
    }
    let b64 = |s: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .ok()
    };
    let signed: Signed = serde_json::from_slice(bytes).ok()?;
    let first = signed.signatures.first()?;
    let p: Protected = serde_json::from_slice(&b64(&first.protected)?).ok()?;
    let mut payload = bytes.get(..p.format_length)?.to_vec();
    payload.extend(b64(&p.format_tail)?);
    Some(payload)
}

/// Media type from the body when the server did not say (spec §7.2).
fn infer_media_type(bytes: &[u8]) -> String {
    let body: ManifestBody = serde_json::from_slice(bytes).unwrap_or_default();
    if let Some(mt) = body.media_type {
        return mt;
    }
    if body.schema_version == Some(1) {
        return media::DOCKER_V1_SIGNED.into();
    }
    if let Some(children) = body.manifests {
        let docker = children
            .first()
            .is_some_and(|c| c.media_type.starts_with("application/vnd.docker."));
        return if docker {
            media::DOCKER_LIST
        } else {
            media::OCI_INDEX
        }
        .into();
    }
    if let Some(config) = body.config {
        if config.media_type.starts_with("application/vnd.docker.") {
            return media::DOCKER_V2.into();
        }
    }
    media::OCI_MANIFEST.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_parse_and_verify() {
        let d = Digest::sha256_of(b"hello");
        assert_eq!(d.algorithm(), "sha256");
        assert!(Digest::parse("sha256:abc").is_err());
        assert!(Digest::parse("nocolon").is_err());
        let mut v = d.verifier().unwrap();
        v.update(b"hel");
        v.update(b"lo");
        assert!(v.finish().1);
        let mut v = d.verifier().unwrap();
        v.update(b"hellO");
        assert!(!v.finish().1);
    }

    #[test]
    fn referrer_entries_and_schema1_layers() {
        let art = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/example.sbom","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[],"annotations":{"a":"b"}}"#;
        let m = Manifest::from_bytes(Bytes::from_static(art), None);
        let e = m.referrer_entry().unwrap();
        assert_eq!(e.digest, m.digest);
        assert_eq!(e.artifact_type.as_deref(), Some("application/example.sbom"));
        assert_eq!(e.annotations.unwrap()["a"], "b");
        let img = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;
        let e = Manifest::from_bytes(Bytes::from_static(img), None)
            .referrer_entry()
            .unwrap();
        assert_eq!(
            e.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        assert!(e.annotations.is_none());

        let a = "sha256:".to_string() + &"a".repeat(64);
        let b = "sha256:".to_string() + &"b".repeat(64);
        let v1 = format!(
            r#"{{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[{{"blobSum":"{a}"}},{{"blobSum":"{b}"}},{{"blobSum":"{a}"}}]}}"#
        );
        let m = Manifest::from_bytes(Bytes::from(v1), Some(media::DOCKER_V1));
        let l = m.links().unwrap();
        assert!(!l.has_config);
        let ds: Vec<String> = l.blobs.iter().map(|d| d.digest.to_string()).collect();
        assert_eq!(ds, vec![a, b]);
        assert!(l.blobs.iter().all(|d| d.size == -1));
    }

    #[test]
    fn schema1_signed_digest_covers_the_payload() {
        use base64::Engine as _;
        let enc = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let payload = b"{\n   \"schemaVersion\": 1,\n   \"name\": \"x\",\n   \"fsLayers\": []\n}";
        let cut = payload.len() - 2; // before "\n}"
        let protected = enc(format!(
            r#"{{"formatLength":{cut},"formatTail":"{}","time":"2024-01-01T00:00:00Z"}}"#,
            enc(&payload[cut..])
        )
        .as_bytes());
        let signed = format!(
            "{},\n   \"signatures\": [{{\"header\": {{}}, \"signature\": \"c2ln\", \"protected\": \"{protected}\"}}]\n}}",
            std::str::from_utf8(&payload[..cut]).unwrap()
        );
        let m = Manifest::from_bytes(Bytes::from(signed.clone()), Some(media::DOCKER_V1_SIGNED));
        assert_eq!(m.digest, Digest::sha256_of(payload));
        assert_ne!(m.digest, Digest::sha256_of(signed.as_bytes()));
        // inferred from the body too; unsigned: the plain digest
        assert_eq!(
            Manifest::from_bytes(Bytes::from(signed), None).digest,
            Digest::sha256_of(payload)
        );
        let plain = Manifest::from_bytes(Bytes::from_static(payload), Some(media::DOCKER_V1));
        assert_eq!(plain.digest, Digest::sha256_of(payload));
    }

    #[test]
    fn links_of_index_and_image() {
        let idx = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":10,"platform":{"architecture":"amd64","os":"linux"}}]}"#;
        let m = Manifest::from_bytes(Bytes::from_static(idx), None);
        assert_eq!(m.media_type, media::OCI_INDEX);
        let l = m.links().unwrap();
        assert_eq!(l.children.len(), 1);
        assert_eq!(l.children[0].platform.as_ref().unwrap().os, "linux");
    }
}
