//! TLS (spec §7.5) against real `docker-registry` processes serving https with a certificate
//! signed by a CA generated here (rcgen): verified with `regcert`, refused without it,
//! `tls: insecure`, Docker's `certs.d` directory, and a registry that requires a client
//! certificate (`http.tls.clientcas`) with and without `clientCert`/`clientKey`.
//!
//! The harness's raw client speaks plain http, so every test seeds a plain registry, lets
//! regsync copy into the TLS one, and (where reads matter) copies back out into another plain
//! registry to compare.

mod common;

use common::registry::TlsOpts;
use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// A CA, a server certificate for 127.0.0.1 signed by it, and a client certificate signed by
/// it, all as PEM files in a tempdir.
struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(DnType::CommonName, "regsync-rs test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).unwrap();

        let server_key = KeyPair::generate().unwrap();
        let mut server =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        server
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server.signed_by(&server_key, &ca_cert, &ca_key).unwrap();

        let client_key = KeyPair::generate().unwrap();
        let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
        client
            .distinguished_name
            .push(DnType::CommonName, "regsync-client");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client.signed_by(&client_key, &ca_cert, &ca_key).unwrap();

        let pki = Pki {
            dir,
            ca_pem: ca_cert.pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
        };
        std::fs::write(pki.path("ca.pem"), &pki.ca_pem).unwrap();
        std::fs::write(pki.path("server.pem"), server_cert.pem()).unwrap();
        std::fs::write(pki.path("server.key"), server_key.serialize_pem()).unwrap();
        std::fs::write(pki.path("client.pem"), &pki.client_cert_pem).unwrap();
        std::fs::write(pki.path("client.key"), &pki.client_key_pem).unwrap();
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// An https registry; with `mtls` it requires a client certificate from this CA.
    fn registry(&self, mtls: bool) -> Registry {
        Registry::start_with(RegistryOpts {
            tls: Some(TlsOpts {
                cert: self.path("server.pem"),
                key: self.path("server.key"),
                client_cas: mtls.then(|| self.path("ca.pem")),
                harness_identity: Some((self.path("client.pem"), self.path("client.key"))),
            }),
            ..Default::default()
        })
    }
}

/// `key: |` followed by the PEM text indented for a creds entry.
fn block(key: &str, pem: &str) -> String {
    let mut s = format!("    {key}: |\n");
    for line in pem.lines() {
        s.push_str(&format!("      {line}\n"));
    }
    s
}

/// A config with plain creds for `plain`, `extra` creds YAML lines for the TLS registry
/// (already indented, without the `- registry:` line), and one image step.
fn tls_config(plain: &[&Registry], tls_host: &str, extra: &str, src: &str, dst: &str) -> String {
    let mut s = String::from("version: 1\ncreds:\n");
    for r in plain {
        s.push_str(&format!("  - registry: {}\n    tls: disabled\n", r.host()));
    }
    s.push_str(&format!("  - registry: {tls_host}\n{extra}"));
    s.push_str(&format!(
        "sync:\n  - source: {src}\n    target: {dst}\n    type: image\n"
    ));
    s
}

fn seed(reg: &Registry, repo: &str, tag: &str, seed: u64) {
    push(
        reg,
        repo,
        tag,
        &index_image(seed, &["linux/amd64", "linux/arm64"]),
    );
}

/// Copies `app:v1` from `src` into the TLS registry, then back out into a new plain
/// registry, with `creds` for the TLS side; checks the round trip kept the image.
fn round_trip(src: &Registry, tls_reg: &Registry, creds: &str) {
    let cfg = tls_config(
        &[src],
        &tls_reg.host(),
        creds,
        &src.r("app:v1"),
        &tls_reg.r("app:v1"),
    );
    regsync(&["once"], &cfg).assert_ok();
    let pushed = tls_reg
        .access_log()
        .iter()
        .filter(|l| l.method == "PUT" && l.path.contains("/manifests/") && l.status == 201)
        .count();
    assert_eq!(pushed, 3, "index + 2 platform manifests pushed over https");

    let back = Registry::start();
    let cfg = tls_config(
        &[&back],
        &tls_reg.host(),
        creds,
        &tls_reg.r("app:v1"),
        &back.r("app:v1"),
    );
    regsync(&["once"], &cfg).assert_ok();
    assert_same_image(src, &back, "app", "v1");
}

#[test]
fn enabled_with_regcert_copies_both_ways() {
    let pki = Pki::new();
    let src = Registry::start();
    seed(&src, "app", "v1", 9100);
    let reg = pki.registry(false);
    let creds = format!("    tls: enabled\n{}", block("regcert", &pki.ca_pem));
    round_trip(&src, &reg, &creds);
}

#[test]
fn enabled_without_the_ca_fails_with_a_certificate_error() {
    let pki = Pki::new();
    let src = Registry::start();
    seed(&src, "app", "v1", 9110);
    let reg = pki.registry(false);
    let cfg = tls_config(
        &[&src],
        &reg.host(),
        "    tls: enabled\n",
        &src.r("app:v1"),
        &reg.r("app:v1"),
    );
    let out = regsync(&["once"], &cfg);
    out.assert_fail();
    let line = out.assert_one_error_line(&["certificate"]);
    assert!(line.contains(&reg.r("app:v1")), "{line}");
    assert!(
        line.contains("regcert"),
        "the line says what to set: {line}"
    );
    assert_eq!(
        reg.writes_since(0),
        vec![],
        "nothing written over an unverified connection"
    );
}

#[test]
fn invalid_regcert_warns_and_uses_the_default_roots() {
    let pki = Pki::new();
    let src = Registry::start();
    seed(&src, "app", "v1", 9115);
    let reg = pki.registry(false);
    let creds = format!(
        "    tls: enabled\n{}",
        block("regcert", "this is not a certificate")
    );
    let cfg = tls_config(
        &[&src],
        &reg.host(),
        &creds,
        &src.r("app:v1"),
        &reg.r("app:v1"),
    );
    let out = regsync(&["once"], &cfg);
    out.assert_fail();
    assert!(
        !out.logs("Failed to setup CA pool").is_empty(),
        "a warning names the bad CA material:\n{}",
        out.dump()
    );
    out.assert_one_error_line(&["certificate"]);
}

#[test]
fn insecure_works_without_the_ca() {
    let pki = Pki::new();
    let src = Registry::start();
    seed(&src, "app", "v1", 9120);
    let reg = pki.registry(false);
    round_trip(&src, &reg, "    tls: insecure\n");
}

#[test]
fn disabled_means_plain_http_and_fails_against_https() {
    let pki = Pki::new();
    let src = Registry::start();
    seed(&src, "app", "v1", 9125);
    let reg = pki.registry(false);
    let cfg = tls_config(
        &[&src],
        &reg.host(),
        "    tls: disabled\n",
        &src.r("app:v1"),
        &reg.r("app:v1"),
    );
    let out = regsync(&["once"], &cfg);
    out.assert_fail();
    out.assert_one_error_line(&[&reg.r("app:v1")]);
}

#[test]
fn client_certificate_required() {
    let pki = Pki::new();
    let src = Registry::start();
    seed(&src, "app", "v1", 9130);
    let reg = pki.registry(true);

    // Trusted server, but no client certificate: the handshake is refused.
    let creds = format!("    tls: enabled\n{}", block("regcert", &pki.ca_pem));
    let cfg = tls_config(
        &[&src],
        &reg.host(),
        &creds,
        &src.r("app:v1"),
        &reg.r("app:v1"),
    );
    let out = regsync(&["once"], &cfg);
    out.assert_fail();
    out.assert_one_error_line(&["certificate", "handshake", "alert"]);
    assert_eq!(reg.writes_since(0), vec![]);

    // With clientCert/clientKey it works, both ways.
    let creds = format!(
        "    tls: enabled\n{}{}{}",
        block("regcert", &pki.ca_pem),
        block("clientCert", &pki.client_cert_pem),
        block("clientKey", &pki.client_key_pem)
    );
    round_trip(&src, &reg, &creds);

    // `insecure` still offers the client certificate.
    let creds = format!(
        "    tls: insecure\n{}{}",
        block("clientCert", &pki.client_cert_pem),
        block("clientKey", &pki.client_key_pem)
    );
    let back = Registry::start();
    let cfg = tls_config(
        &[&back],
        &reg.host(),
        &creds,
        &reg.r("app:v1"),
        &back.r("app:v1"),
    );
    regsync(&["once"], &cfg).assert_ok();
    assert_same_image(&src, &back, "app", "v1");
}

#[test]
fn unusable_client_key_is_a_warning() {
    let pki = Pki::new();
    let src = Registry::start();
    seed(&src, "app", "v1", 9135);
    let reg = pki.registry(true);
    let creds = format!(
        "    tls: enabled\n{}{}{}",
        block("regcert", &pki.ca_pem),
        block("clientCert", &pki.client_cert_pem),
        block("clientKey", "not a key")
    );
    let cfg = tls_config(
        &[&src],
        &reg.host(),
        &creds,
        &src.r("app:v1"),
        &reg.r("app:v1"),
    );
    let out = regsync(&["once"], &cfg);
    out.assert_fail();
    assert!(
        !out.logs("Failed to configure client certs").is_empty(),
        "{}",
        out.dump()
    );
    let dump = out.dump();
    assert!(!dump.contains("not a key"), "key material never logged");
}

/// `/etc/docker/certs.d/<host:port>/*.crt` for the life of the guard (needs root, as Docker's
/// own directory does); None when the directory cannot be written.
struct CertsD(PathBuf);

impl CertsD {
    fn install(host: &str, ca_pem: &str) -> Option<CertsD> {
        let dir = Path::new("/etc/docker/certs.d").join(host);
        std::fs::create_dir_all(&dir).ok()?;
        std::fs::write(dir.join("ca.crt"), ca_pem).ok()?;
        Some(CertsD(dir))
    }
}

impl Drop for CertsD {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn docker_certs_d_is_trusted_unless_skip_docker_config() {
    let pki = Pki::new();
    let src = Registry::start();
    seed(&src, "app", "v1", 9140);
    let reg = pki.registry(false);
    let Some(_certs) = CertsD::install(&reg.host(), &pki.ca_pem) else {
        eprintln!("skipped: /etc/docker/certs.d is not writable");
        return;
    };
    // No creds entry at all for the TLS registry: defaults (tls enabled) plus certs.d.
    let cfg = config(
        &[&src],
        0,
        &[image_step(&src.r("app:v1"), &reg.r("app:v1"))],
    );
    regsync(&["once"], &cfg).assert_ok();
    let back = Registry::start();
    let cfg = config(
        &[&back],
        0,
        &[image_step(&reg.r("app:v1"), &back.r("app:v1"))],
    );
    regsync(&["once"], &cfg).assert_ok();
    assert_same_image(&src, &back, "app", "v1");

    // skipDockerConfig: the directory is not read.
    let cfg = format!(
        "version: 1\ncreds:\n  - registry: {}\n    tls: disabled\n  - registry: {}\n    tls: enabled\n\
         defaults:\n  skipDockerConfig: true\nsync:\n  - source: {}\n    target: {}\n    type: image\n",
        src.host(),
        reg.host(),
        src.r("app:v1"),
        reg.r("app:v2"),
    );
    let out = regsync(&["once"], &cfg);
    out.assert_fail();
    out.assert_one_error_line(&["certificate"]);
}
