//! Image reference grammar (spec §9): `[registry/]repository[:tag][@digest]` with Docker Hub
//! defaults, and `ocidir://path[:tag][@digest]`.

use crate::oci::Digest;
use fancy_regex::Regex;
use std::fmt;
use std::sync::LazyLock;

const DOCKER_LIBRARY: &str = "library";
const DOCKER_REGISTRY: &str = "docker.io";
const DOCKER_REGISTRY_LEGACY: &str = "index.docker.io";
const DOCKER_REGISTRY_DNS: &str = "registry-1.docker.io";
const DEFAULT_TAG: &str = "latest";

const HOST_PART: &str = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)";
const PORT: &str = r"(?::[0-9]+)";
const IPV6_PART: &str = r"(?:[0-9a-fA-F]{1,4}:){0,7}[0-9a-fA-F]{1,4}";
const REPO_PART: &str = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*";
const PATH: &str = r"[/a-zA-Z0-9_\-. ~+]+";
const TAG: &str = r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}";
const DIGEST: &str = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[[:xdigit:]]{32,}";

fn registry_pattern() -> String {
    let ipv6 = format!(r"(?:\[(?:{p}|::{p}|{p}::{p}|{p}::)\])", p = IPV6_PART);
    let domain = format!(r"(?:{h}(?:(?:\.{h})+\.?|\.))", h = HOST_PART);
    let upper =
        r"(?:[a-zA-Z0-9]*[A-Z][a-zA-Z0-9-]*[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[A-Z][a-zA-Z0-9]*)";
    format!(r"(?:(?:{domain}|{upper}|{ipv6}|localhost){PORT}?|{HOST_PART}{PORT})")
}

static SCHEME_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^([a-z]+)://(.+)$").expect("scheme regex"));

static REF_RE: LazyLock<Regex> = LazyLock::new(|| {
    let re = format!(
        r"^(?:({reg})/)?({rp}(?:/{rp})*)(?::({TAG}))?(?:@({DIGEST}))?$",
        reg = registry_pattern(),
        rp = REPO_PART,
    );
    Regex::new(&re).expect("reference regex")
});

static OCIDIR_RE: LazyLock<Regex> = LazyLock::new(|| {
    let re = format!(r"^({PATH})(?::({TAG}))?(?:@({DIGEST}))?$");
    Regex::new(&re).expect("ocidir regex")
});

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// A registry speaking the distribution API.
    Reg,
    /// An OCI image layout directory.
    OciDir,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ReferenceError {
    #[error("invalid reference {0:?}")]
    Invalid(String),
    #[error("invalid reference {0:?}, repo must be lowercase")]
    Uppercase(String),
    #[error("invalid reference, unknown scheme {0:?}")]
    UnknownScheme(String),
    #[error("not implemented: unknown scheme {0:?}")]
    NotImplemented(String),
}

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    pub scheme: Scheme,
    /// Registry name (`docker.io`, `host:port`); empty for ocidir.
    pub registry: String,
    /// Repository path (`library/alpine`); empty for ocidir.
    pub repository: String,
    /// Layout directory for ocidir; empty for registries.
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
    /// The text as given (logs use it).
    pub original: String,
}

/// Captures of `re` on `s` as owned optional strings (empty groups are `None`).
fn captures(re: &Regex, s: &str, groups: usize) -> Option<Vec<Option<String>>> {
    let caps = re.captures(s).ok()??;
    Some(
        (1..=groups)
            .map(|i| {
                caps.get(i)
                    .map(|m| m.as_str().to_string())
                    .filter(|v| !v.is_empty())
            })
            .collect(),
    )
}

impl Reference {
    /// Parse a reference; see spec §9.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        let invalid = || ReferenceError::Invalid(s.to_string());
        if let Some(m) = captures(&SCHEME_RE, s, 2) {
            let scheme = m[0].clone().unwrap_or_default();
            let tail = m[1].clone().unwrap_or_default();
            return match scheme.as_str() {
                "ocidir" => {
                    let g = captures(&OCIDIR_RE, &tail, 3).ok_or_else(invalid)?;
                    let path = g[0].clone().ok_or_else(invalid)?;
                    let digest = match &g[2] {
                        Some(d) => Some(Digest::parse(d).map_err(|_| invalid())?),
                        None => None,
                    };
                    Ok(Reference {
                        scheme: Scheme::OciDir,
                        registry: String::new(),
                        repository: String::new(),
                        path,
                        tag: g[1].clone(),
                        digest,
                        original: s.to_string(),
                    })
                }
                "ocifile" => Err(ReferenceError::NotImplemented(scheme)),
                _ => Err(ReferenceError::UnknownScheme(scheme)),
            };
        }
        let Some(g) = captures(&REF_RE, s, 4) else {
            if REF_RE.is_match(&s.to_lowercase()).unwrap_or(false) {
                return Err(ReferenceError::Uppercase(s.to_string()));
            }
            return Err(invalid());
        };
        let mut registry = g[0].clone().unwrap_or_default();
        let mut repository = g[1].clone().unwrap_or_default();
        let tag = g[2].clone();
        let digest = match &g[3] {
            Some(d) => Some(Digest::parse(d).map_err(|_| invalid())?),
            None => None,
        };
        // `localhost` also matches a repository component.
        if registry.is_empty() {
            if let Some((first, rest)) = repository.split_once('/') {
                if first == "localhost" {
                    let rest = rest.to_string();
                    registry = first.to_string();
                    repository = rest;
                }
            } else if repository == "localhost" {
                return Err(invalid());
            }
        }
        if registry.is_empty()
            || registry == DOCKER_REGISTRY_DNS
            || registry == DOCKER_REGISTRY_LEGACY
        {
            registry = DOCKER_REGISTRY.to_string();
        }
        if registry == DOCKER_REGISTRY && !repository.contains('/') {
            repository = format!("{DOCKER_LIBRARY}/{repository}");
        }
        if repository.is_empty() {
            return Err(invalid());
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some(DEFAULT_TAG.to_string())
        } else {
            tag
        };
        Ok(Reference {
            scheme: Scheme::Reg,
            registry,
            repository,
            path: String::new(),
            tag,
            digest,
            original: s.to_string(),
        })
    }

    /// Canonical form: `registry/repository[:tag][@digest]` or `ocidir://path[:tag][@digest]`.
    pub fn common_name(&self) -> String {
        let mut cn = match self.scheme {
            Scheme::Reg => {
                if self.registry.is_empty() {
                    self.repository.clone()
                } else {
                    format!("{}/{}", self.registry, self.repository)
                }
            }
            Scheme::OciDir => format!("ocidir://{}", self.path),
        };
        if let Some(t) = &self.tag {
            cn.push(':');
            cn.push_str(t);
        }
        if let Some(d) = &self.digest {
            cn.push('@');
            cn.push_str(d.as_str());
        }
        cn
    }

    /// Same repository with `tag` set and no digest.
    pub fn with_tag(&self, tag: &str) -> Reference {
        let mut r = self.clone();
        r.tag = Some(tag.to_string());
        r.digest = None;
        r.original = r.common_name();
        r
    }

    /// Same repository by digest only (tag cleared).
    pub fn with_digest(&self, d: &Digest) -> Reference {
        let mut r = self.clone();
        r.tag = None;
        r.digest = Some(d.clone());
        r.original = r.common_name();
        r
    }

    /// The repository (or layout) alone: no tag, no digest.
    pub fn repo_only(&self) -> Reference {
        let mut r = self.clone();
        r.tag = None;
        r.digest = None;
        r.original = r.common_name();
        r
    }

    /// Another repository of the same registry, no tag, no digest (ocidir: the same layout).
    pub fn sibling(&self, repository: &str) -> Reference {
        let mut r = self.clone();
        r.tag = None;
        r.digest = None;
        if r.scheme == Scheme::Reg {
            r.repository = repository.to_string();
        }
        r.original = r.common_name();
        r
    }

    /// Same scheme and registry (ocidir: same path).
    pub fn same_registry(&self, o: &Reference) -> bool {
        if self.scheme != o.scheme {
            return false;
        }
        match self.scheme {
            Scheme::Reg => self.registry == o.registry,
            Scheme::OciDir => self.path == o.path,
        }
    }

    /// Same registry and repository (ocidir: same path).
    pub fn same_repository(&self, o: &Reference) -> bool {
        if self.scheme != o.scheme {
            return false;
        }
        match self.scheme {
            Scheme::Reg => self.registry == o.registry && self.repository == o.repository,
            Scheme::OciDir => self.path == o.path,
        }
    }

    /// A key unique per repository: `reg:<registry>/<repo>` or `ocidir:<path>`.
    pub fn repo_key(&self) -> String {
        match self.scheme {
            Scheme::Reg => format!("reg:{}/{}", self.registry, self.repository),
            Scheme::OciDir => format!("ocidir:{}", self.path),
        }
    }

    /// The tag, or `latest` when there is none.
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or(DEFAULT_TAG)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D256: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn p(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("parse {s}: {e}"))
    }

    fn parts(s: &str) -> (String, String, Option<String>, Option<String>) {
        let r = p(s);
        assert_eq!(r.scheme, Scheme::Reg);
        assert_eq!(r.original, s);
        (
            r.registry,
            r.repository,
            r.tag,
            r.digest.map(|d| d.to_string()),
        )
    }

    fn t(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn docker_hub_defaults() {
        assert_eq!(
            parts("alpine"),
            (
                "docker.io".into(),
                "library/alpine".into(),
                t("latest"),
                None
            )
        );
        assert_eq!(
            parts("alpine:3.18"),
            ("docker.io".into(), "library/alpine".into(), t("3.18"), None)
        );
        assert_eq!(
            parts("docker.io/alpine"),
            (
                "docker.io".into(),
                "library/alpine".into(),
                t("latest"),
                None
            )
        );
        assert_eq!(
            parts("index.docker.io/library/alpine:edge"),
            ("docker.io".into(), "library/alpine".into(), t("edge"), None)
        );
        assert_eq!(
            parts("registry-1.docker.io/regclient/regctl"),
            (
                "docker.io".into(),
                "regclient/regctl".into(),
                t("latest"),
                None
            )
        );
        assert_eq!(
            parts("regclient/regctl:v0.5"),
            (
                "docker.io".into(),
                "regclient/regctl".into(),
                t("v0.5"),
                None
            )
        );
        assert_eq!(
            p("busybox").common_name(),
            "docker.io/library/busybox:latest"
        );
    }

    #[test]
    fn registries_and_ports() {
        assert_eq!(
            parts("localhost:5000/x"),
            ("localhost:5000".into(), "x".into(), t("latest"), None)
        );
        assert_eq!(
            parts("localhost/x/y:1"),
            ("localhost".into(), "x/y".into(), t("1"), None)
        );
        assert_eq!(
            parts("registry:5000/team/app:v1"),
            ("registry:5000".into(), "team/app".into(), t("v1"), None)
        );
        assert_eq!(
            parts("ghcr.io/regclient/regsync:latest"),
            (
                "ghcr.io".into(),
                "regclient/regsync".into(),
                t("latest"),
                None
            )
        );
        assert_eq!(
            parts("example.com:443/a/b/c"),
            ("example.com:443".into(), "a/b/c".into(), t("latest"), None)
        );
        assert_eq!(
            parts("MyRegistry/app"),
            ("MyRegistry".into(), "app".into(), t("latest"), None)
        );
        assert_eq!(
            parts("[::1]:5000/app"),
            ("[::1]:5000".into(), "app".into(), t("latest"), None)
        );
        assert_eq!(
            parts("[fe80::1]/app"),
            ("[fe80::1]".into(), "app".into(), t("latest"), None)
        );
        // a first component without dot/port/uppercase is part of the repository
        assert_eq!(
            parts("team/app"),
            ("docker.io".into(), "team/app".into(), t("latest"), None)
        );
        assert_eq!(
            parts("a.b__c-d---e/f_g"),
            (
                "docker.io".into(),
                "a.b__c-d---e/f_g".into(),
                t("latest"),
                None
            )
        );
        assert_eq!(
            parts("reg.example/a__b/c--d.e"),
            (
                "reg.example".into(),
                "a__b/c--d.e".into(),
                t("latest"),
                None
            )
        );
    }

    #[test]
    fn digests() {
        let (reg, repo, tag, dig) = parts(&format!("alpine@{D256}"));
        assert_eq!(
            (reg.as_str(), repo.as_str()),
            ("docker.io", "library/alpine")
        );
        assert_eq!(tag, None);
        assert_eq!(dig.as_deref(), Some(D256));
        let (_, _, tag, dig) = parts(&format!("ghcr.io/a/b:v1@{D256}"));
        assert_eq!(tag, t("v1"));
        assert_eq!(dig.as_deref(), Some(D256));
        let r = p(&format!("ghcr.io/a/b:v1@{D256}"));
        assert_eq!(r.common_name(), format!("ghcr.io/a/b:v1@{D256}"));
        // too short, bad hex, wrong length for sha256
        assert!(Reference::parse("alpine@sha256:abcdef").is_err());
        assert!(Reference::parse(&format!("alpine@{}", D256.replace('a', "g"))).is_err());
        assert!(Reference::parse(&format!("alpine@{}0", D256)).is_err());
        assert!(Reference::parse("alpine@").is_err());
    }

    #[test]
    fn uppercase_and_invalid() {
        let e = Reference::parse("Alpine").unwrap_err();
        assert_eq!(e, ReferenceError::Uppercase("Alpine".into()));
        assert_eq!(
            e.to_string(),
            "invalid reference \"Alpine\", repo must be lowercase"
        );
        // matches once lowercased: reported as an uppercase repo (both say "invalid reference")
        let e = Reference::parse("InvalidTestmissing:garbage").unwrap_err();
        assert!(e
            .to_string()
            .starts_with("invalid reference \"InvalidTestmissing:garbage\""));
        assert!(matches!(
            Reference::parse("ghcr.io/Org/app"),
            Err(ReferenceError::Uppercase(_))
        ));
        for bad in [
            "",
            "InvalidTestmissing:v1:garbage",
            "alpine:v1:garbage",
            "alpine:-bad",
            "/alpine",
            "alpine/",
            "a//b",
            "alpine:",
            "localhost",
            "localhost:5000",
            "al pine",
            "-alpine",
            "alpine_",
        ] {
            let e = Reference::parse(bad).unwrap_err();
            assert_eq!(e, ReferenceError::Invalid(bad.into()), "{bad}");
            assert_eq!(e.to_string(), format!("invalid reference {bad:?}"));
        }
        let long_tag = format!("alpine:{}", "a".repeat(129));
        assert!(Reference::parse(&long_tag).is_err());
        let ok_tag = format!("alpine:{}", "a".repeat(128));
        assert!(Reference::parse(&ok_tag).is_ok());
    }

    #[test]
    fn schemes() {
        let e = Reference::parse("ocifile://x.tar").unwrap_err();
        assert_eq!(e, ReferenceError::NotImplemented("ocifile".into()));
        assert_eq!(e.to_string(), "not implemented: unknown scheme \"ocifile\"");
        let e = Reference::parse("http://example.com/x").unwrap_err();
        assert_eq!(e, ReferenceError::UnknownScheme("http".into()));
        assert_eq!(e.to_string(), "invalid reference, unknown scheme \"http\"");
    }

    #[test]
    fn ocidir_forms() {
        let r = p("ocidir://testrepo");
        assert_eq!(r.scheme, Scheme::OciDir);
        assert_eq!(r.path, "testrepo");
        assert_eq!(r.tag, None);
        assert_eq!(r.digest, None);
        assert_eq!(r.tag_or_latest(), "latest");
        assert!(r.registry.is_empty() && r.repository.is_empty());

        let r = p("ocidir://../some dir/my_repo-1.0~x+y:v1");
        assert_eq!(r.path, "../some dir/my_repo-1.0~x+y");
        assert_eq!(r.tag.as_deref(), Some("v1"));

        let r = p(&format!("ocidir:///tmp/layout:v2@{D256}"));
        assert_eq!(r.path, "/tmp/layout");
        assert_eq!(r.tag.as_deref(), Some("v2"));
        assert_eq!(r.digest.as_ref().unwrap().as_str(), D256);
        assert_eq!(r.common_name(), format!("ocidir:///tmp/layout:v2@{D256}"));

        let r = p(&format!("ocidir://out@{D256}"));
        assert_eq!(r.path, "out");
        assert_eq!(r.tag, None);

        assert!(Reference::parse("ocidir://").is_err());
        assert!(Reference::parse("ocidir://a:b:c").is_err());
        assert_eq!(
            Reference::parse("ocidir://a#b").unwrap_err().to_string(),
            "invalid reference \"ocidir://a#b\""
        );
    }

    #[test]
    fn helpers() {
        let r = p("ghcr.io/a/b:v1");
        let d = Digest::parse(D256).unwrap();
        let bd = r.with_digest(&d);
        assert_eq!(bd.tag, None);
        assert_eq!(bd.original, format!("ghcr.io/a/b@{D256}"));
        assert_eq!(bd.to_string(), bd.original);
        let t2 = bd.with_tag("v2");
        assert_eq!(t2.digest, None);
        assert_eq!(t2.original, "ghcr.io/a/b:v2");
        let ro = r.repo_only();
        assert_eq!((ro.tag.clone(), ro.digest.clone()), (None, None));
        assert_eq!(ro.original, "ghcr.io/a/b");
        assert_eq!(ro.tag_or_latest(), "latest");
        assert_eq!(r.tag_or_latest(), "v1");

        assert!(r.same_registry(&p("ghcr.io/c/d")));
        assert!(!r.same_registry(&p("docker.io/a/b")));
        assert!(r.same_repository(&p("ghcr.io/a/b:v9")));
        assert!(!r.same_repository(&p("ghcr.io/a/c")));
        assert_eq!(r.repo_key(), "reg:ghcr.io/a/b");

        let o = p("ocidir://dir:v1");
        assert!(o.same_registry(&p("ocidir://dir")));
        assert!(o.same_repository(&p("ocidir://dir:v2")));
        assert!(!o.same_repository(&p("ocidir://other")));
        assert!(!o.same_registry(&r));
        assert_eq!(o.repo_key(), "ocidir:dir");
        assert_eq!(o.with_tag("x").original, "ocidir://dir:x");
        assert_eq!(o.repo_only().original, "ocidir://dir");
        assert_eq!(format!("{:?}", p("alpine")), "alpine");
    }
}
