//! Docker schema 1 (spec §6.6, §3.4): a signed `v1+prettyjws` image is skipped under the
//! default `mediaTypes` and mirrored registry → registry with its digest preserved when the
//! step lists it. CNCF distribution 2.8 accepts schema 1 pushes only with
//! `compatibility.schema1.enabled` (`RegistryOpts::schema1`) and verifies the JWS signature;
//! it stores the signed payload (whose digest is the manifest digest) and re-signs it with its
//! own key on every GET, so "byte-identical" is checked on the stored payload.

mod common;

use common::oci::{sha256_digest, Manifest};
use common::*;

const MT_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
const MT_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
const MT_OCI: &str = "application/vnd.oci.image.manifest.v1+json";

/// A schema 1 manifest for `s1/app:v1`, signed (ES256, libtrust pretty JWS with the `jwk` in
/// the header) over its payload: the bytes before `,\n   "signatures"` plus `formatTail`
/// (`\n}`). Layers `a`, `b`, `a` (top first, `a` repeated).
const SIGNED: &str = r#"{
   "schemaVersion": 1,
   "name": "s1/app",
   "tag": "v1",
   "architecture": "amd64",
   "fsLayers": [
      {
         "blobSum": "sha256:86fe1004d905671fb9b96fa3a878c66a2517e2a7fb673e01f161f99872fa2ee7"
      },
      {
         "blobSum": "sha256:3888cde8b3a2e27ef3bb9d6dbcdb29d7f4c4f5319f8b9cc211f688d7e794142d"
      },
      {
         "blobSum": "sha256:86fe1004d905671fb9b96fa3a878c66a2517e2a7fb673e01f161f99872fa2ee7"
      }
   ],
   "history": [
      {
         "v1Compatibility": "{\"id\": \"c0\", \"created\": \"2016-01-01T00:00:00Z\"}"
      },
      {
         "v1Compatibility": "{\"id\": \"c1\", \"created\": \"2016-01-01T00:00:00Z\"}"
      },
      {
         "v1Compatibility": "{\"id\": \"c2\", \"created\": \"2016-01-01T00:00:00Z\"}"
      }
   ],
   "signatures": [
      {
         "header": {
            "jwk": {
               "crv": "P-256",
               "kty": "EC",
               "x": "AE9jFFz89o75w20GiIZcQTtCICN7uVEXploosVcpXm8",
               "y": "eVW8qztZaAyE_2MIJdiwk3UzOKq5lAedTB904-UmJPk"
            },
            "alg": "ES256"
         },
         "signature": "6l-Nx5asV20ForGoMvIYydElwi3Kq1BW_720vE5IzBt7AXW7AEsmbdjVeqHJXe4xi5DDmeDfXR-ZlS1U-60trA",
         "protected": "eyJmb3JtYXRMZW5ndGgiOiA3NzMsICJmb3JtYXRUYWlsIjogIkNuMCIsICJ0aW1lIjogIjIwMTYtMDEtMDFUMDA6MDA6MDBaIn0"
      }
   ]
}"#;

/// The digest of the payload (the manifest digest the registry reports).
const PAYLOAD_DIGEST: &str =
    "sha256:b37bb1f19461e2c33d9c57c7fec7b50f0af81268f360e1e49ef18273f921ee8f";

fn layer(c: char) -> Blob {
    Blob::new(
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        format!("schema1 layer {c}\n").into_bytes(),
    )
}

/// The signed payload: bytes up to `formatLength` plus `\n}`.
fn payload(signed: &[u8]) -> Vec<u8> {
    let s = std::str::from_utf8(signed).unwrap();
    let cut = s.find(",\n   \"signatures\"").expect("signatures block");
    let mut p = signed[..cut].to_vec();
    p.extend_from_slice(b"\n}");
    p
}

fn schema1_image() -> TestImage {
    assert_eq!(sha256_digest(&payload(SIGNED.as_bytes())), PAYLOAD_DIGEST);
    TestImage {
        top: Manifest {
            media_type: MT_SIGNED.to_string(),
            digest: PAYLOAD_DIGEST.to_string(),
            bytes: SIGNED.as_bytes().to_vec(),
        },
        children: vec![],
        blobs: vec![layer('a'), layer('b')],
    }
}

fn schema1_registry() -> Registry {
    Registry::start_with(RegistryOpts {
        schema1: true,
        ..Default::default()
    })
}

/// The bytes the registry stored for manifest `digest` (its blob store).
fn stored(reg: &Registry, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    let p = reg
        .data_dir()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// GET a schema 1 manifest: content type, `Docker-Content-Digest` and body (the harness's
/// `get_manifest` expects the digest of the whole body, which a signed manifest does not have).
fn get_signed(reg: &Registry, repo: &str, tag: &str) -> (String, String, Vec<u8>) {
    block_on(async {
        let r = http()
            .get(format!("{}/v2/{repo}/manifests/{tag}", reg.url()))
            .header("accept", MT_SIGNED)
            .send()
            .await
            .expect("GET manifest");
        assert!(r.status().is_success(), "GET manifest: {}", r.status());
        let h = |k: &str| {
            r.headers()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let (mt, digest) = (h("content-type"), h("docker-content-digest"));
        (mt, digest, r.bytes().await.expect("body").to_vec())
    })
}

#[test]
fn schema1_is_skipped_under_the_default_media_types() {
    let (src, dst) = (schema1_registry(), schema1_registry());
    push(&src, "s1/app", "v1", &schema1_image());
    assert_eq!(
        manifest_digest(&src, "s1/app", "v1").as_deref(),
        Some(PAYLOAD_DIGEST)
    );
    let m = dst.mark();
    let out = regsync(
        &["once"],
        &config(
            &[&src, &dst],
            0,
            &[image_step(&src.r("s1/app:v1"), &dst.r("s1/app:v1"))],
        ),
    );
    out.assert_ok();
    let skip = out.logs("Skipping unsupported media type");
    assert_eq!(skip.len(), 1, "{}", out.dump());
    assert_eq!(skip[0]["mediaType"], MT_SIGNED);
    assert!(dst.writes_since(m).is_empty(), "{:?}", dst.writes_since(m));
    assert_summary(&out, &[("images_skipped", 1), ("images_failed", 0)]);
}

#[test]
fn schema1_is_copied_when_listed_in_media_types() {
    let (src, dst) = (schema1_registry(), schema1_registry());
    push(&src, "s1/app", "v1", &schema1_image());
    let step = format!(
        "{}mediaTypes: [{MT_V2}, {MT_OCI}, {MT_SIGNED}]\n",
        image_step(&src.r("s1/app:v1"), &dst.r("mirror/app:v1"))
    );
    let cfg = config(&[&src, &dst], 0, &[step]);
    let m = dst.mark();
    let out = regsync(&["once"], &cfg);
    out.assert_ok();
    assert_summary(&out, &[("images_copied", 1), ("images_failed", 0)]);

    // digest preserved, payload byte-identical, served as the signed form
    assert_eq!(
        manifest_digest(&dst, "mirror/app", "v1").as_deref(),
        Some(PAYLOAD_DIGEST)
    );
    assert_eq!(stored(&dst, PAYLOAD_DIGEST), payload(SIGNED.as_bytes()));
    assert_eq!(
        stored(&dst, PAYLOAD_DIGEST),
        stored(&src, PAYLOAD_DIGEST),
        "target payload differs from the source's"
    );
    let (mt, digest, body) = get_signed(&dst, "mirror/app", "v1");
    assert_eq!(mt, MT_SIGNED);
    assert_eq!(digest, PAYLOAD_DIGEST);
    assert_eq!(payload(&body), payload(SIGNED.as_bytes()));

    // no config; layers de-duplicated: each blob uploaded once
    for c in ['a', 'b'] {
        let l = layer(c);
        assert_eq!(
            get_blob(&dst, "mirror/app", &l.digest).as_deref(),
            Some(&l.data[..])
        );
        assert_eq!(
            dst.count_since(m, "PUT", l.digest.strip_prefix("sha256:").unwrap()),
            1,
            "layer {c} uploads: {:?}",
            dst.writes_since(m)
        );
    }

    // a re-run finds it in place and writes nothing
    let m = dst.mark();
    let again = regsync(&["once"], &cfg);
    again.assert_ok();
    assert_summary(&again, &[("images_failed", 0), ("images_copied", 0)]);
    assert!(dst.writes_since(m).is_empty(), "{:?}", dst.writes_since(m));
}

#[test]
fn signed_schema1_to_an_ocidir_fails_with_one_clear_line() {
    let src = schema1_registry();
    push(&src, "s1/app", "v1", &schema1_image());
    let tmp = tempfile::tempdir().unwrap();
    let step = format!(
        "{}mediaTypes: [{MT_V2}, {MT_OCI}, {MT_SIGNED}]\n",
        image_step(
            &src.r("s1/app:v1"),
            &format!("ocidir://{}/out:v1", tmp.path().display())
        )
    );
    let out = regsync(&["once"], &config(&[&src], 0, &[step]));
    out.assert_fail();
    out.assert_one_error_line(&["signed Docker schema 1", "OCI layout"]);
    assert!(!out.stderr.contains("digest mismatch"), "{}", out.dump());
    assert_summary(&out, &[("images_failed", 1), ("blobs_copied", 0)]);
}
