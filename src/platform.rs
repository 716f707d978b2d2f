//! Platforms (spec §11): parsing `os[/arch[/variant]][,osver=<v>]`, normalisation, the
//! best-compatible pick of `platform` and the exact match of `platforms` (quirk 24: the two
//! options deliberately use different rules, as in regsync).

use crate::oci::{Descriptor, Platform as DescPlatform};
use std::fmt;
use std::sync::LazyLock;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PlatformError {
    #[error("invalid platform component {part} in {input}")]
    Component { part: String, input: String },
    #[error("unsupported platform arg type, {key} in {input}")]
    Arg { key: String, input: String },
}

/// A normalised platform.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: String,
    pub os_version: String,
    pub os_features: Vec<String>,
}

/// The platform this process runs on (variant detected from the CPU).
pub fn local() -> &'static Platform {
    static LOCAL: LazyLock<Platform> = LazyLock::new(detect_local);
    &LOCAL
}

fn detect_local() -> Platform {
    let mut p = Platform {
        os: std::env::consts::OS.to_string(),
        architecture: go_arch(std::env::consts::ARCH).to_string(),
        variant: cpu_variant(),
        ..Default::default()
    };
    p.normalize();
    p
}

/// Rust's architecture names → Go's (`GOARCH`), which image platforms use.
fn go_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64",
        "powerpc" => "ppc",
        "loongarch64" => "loong64",
        "mips64" if cfg!(target_endian = "little") => "mips64le",
        "mips" if cfg!(target_endian = "little") => "mipsle",
        "powerpc64le" => "ppc64le",
        "riscv64gc" => "riscv64",
        other => other,
    }
}

#[cfg(target_arch = "x86_64")]
fn cpu_variant() -> String {
    use std::arch::is_x86_feature_detected as has;
    // x86-64 micro-architecture levels (psABI); v1 is the baseline and normalises to none.
    let v2 = has!("cmpxchg16b")
        && has!("popcnt")
        && has!("sse3")
        && has!("sse4.1")
        && has!("sse4.2")
        && has!("ssse3");
    let v3 = v2
        && has!("avx")
        && has!("avx2")
        && has!("bmi1")
        && has!("bmi2")
        && has!("f16c")
        && has!("fma")
        && has!("lzcnt")
        && has!("movbe")
        && has!("xsave");
    let v4 = v3
        && has!("avx512f")
        && has!("avx512bw")
        && has!("avx512cd")
        && has!("avx512dq")
        && has!("avx512vl");
    match (v2, v3, v4) {
        (_, _, true) => "v4",
        (_, true, _) => "v3",
        (true, _, _) => "v2",
        _ => "",
    }
    .to_string()
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_variant() -> String {
    let arch = go_arch(std::env::consts::ARCH);
    if arch != "arm" && arch != "arm64" {
        return String::new();
    }
    if cfg!(any(target_os = "windows", target_os = "macos")) {
        return if arch == "arm64" { "v8" } else { "v7" }.to_string();
    }
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let mut v = field("Cpu architecture").unwrap_or_default();
    if arch == "arm" && v == "7" {
        // Raspberry Pi ARMv6 boards report 7
        let model = field("model name").unwrap_or_default().to_lowercase();
        if model.starts_with("armv6-compatible") {
            v = "6".into();
        }
    }
    match v.to_lowercase().as_str() {
        "8" | "aarch64" => "v8",
        "7" | "7m" | "?(12)" | "?(13)" | "?(14)" | "?(15)" | "?(16)" | "?(17)" => "v7",
        "6" | "6tej" => "v6",
        "5" | "5t" | "5te" | "5tej" => "v5",
        "4" | "4t" => "v4",
        "3" => "v3",
        _ => "",
    }
    .to_string()
}

/// Architectures that may be given without an OS.
fn known_arch(a: &str) -> bool {
    matches!(
        a,
        "386"
            | "amd64"
            | "i386"
            | "x86_64"
            | "x86-64"
            | "arm"
            | "armhf"
            | "armel"
            | "arm64"
            | "aarch64"
            | "mips"
            | "mips64"
            | "mips64le"
            | "ppc"
            | "ppc64"
            | "ppc64le"
            | "loong64"
            | "riscv"
            | "riscv64"
            | "s390"
            | "s390x"
            | "sparc"
            | "sparc64"
            | "wasm"
    )
}

fn valid_part(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Platform {
    /// Parse a platform string, filling what is missing from the local platform.
    pub fn parse(s: &str) -> Result<Platform, PlatformError> {
        Self::parse_with(s, local())
    }

    /// [`Platform::parse`] against a given local platform (tests).
    pub fn parse_with(s: &str, local: &Platform) -> Result<Platform, PlatformError> {
        let (main, args) = match s.split_once(',') {
            Some((m, a)) => (m, Some(a)),
            None => (s, None),
        };
        let mut parts = Vec::new();
        for part in main.split('/') {
            if !valid_part(part) {
                return Err(PlatformError::Component {
                    part: part.to_string(),
                    input: s.to_string(),
                });
            }
            parts.push(part.to_lowercase());
        }
        let mut p = Platform::default();
        if parts.len() == 1 && known_arch(&parts[0]) {
            p.architecture = parts[0].clone();
        } else {
            p.os = parts[0].clone();
        }
        if parts.len() >= 2 {
            p.architecture = parts[1].clone();
        }
        if parts.len() >= 3 {
            p.variant = parts[2].clone();
        }
        if let Some(args) = args {
            for kv in args.split(',') {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                match k.trim().to_lowercase().as_str() {
                    "osver" | "osversion" => p.os_version = v.trim().trim_matches('"').to_string(),
                    _ => {
                        return Err(PlatformError::Arg {
                            key: k.trim().to_string(),
                            input: s.to_string(),
                        })
                    }
                }
            }
        }
        if p.os.is_empty() || p.os == "local" {
            p.os = local.os.clone();
        }
        p.normalize();
        if parts.len() < 2 {
            if p.architecture.is_empty() && p.variant.is_empty() {
                // a lone OS compatible with the local one gets the local arch and variant
                let host = Platform {
                    os: local.os.clone(),
                    ..Default::default()
                };
                let target = Platform {
                    os: p.os.clone(),
                    ..Default::default()
                };
                if compatible(&host, &target) {
                    p.architecture = local.architecture.clone();
                    p.variant = local.variant.clone();
                }
            } else if p.architecture == local.architecture && p.variant.is_empty() {
                // a lone arch equal to the local one gets the local variant
                p.variant = local.variant.clone();
            }
        }
        if p.os == "windows"
            && p.os == local.os
            && p.architecture == local.architecture
            && p.variant == local.variant
            && p.os_version.is_empty()
        {
            p.os_version = local.os_version.clone();
        }
        Ok(p)
    }

    /// From an index descriptor's platform.
    pub fn from_descriptor(d: &DescPlatform) -> Platform {
        let mut p = Platform {
            os: d.os.clone(),
            architecture: d.architecture.clone(),
            variant: d.variant.clone().unwrap_or_default(),
            os_version: d.os_version.clone().unwrap_or_default(),
            os_features: d.os_features.clone().unwrap_or_default(),
        };
        p.normalize();
        p
    }

    pub fn normalize(&mut self) {
        if self.os == "macos" {
            self.os = "darwin".into();
        }
        match self.architecture.as_str() {
            "i386" => {
                self.architecture = "386".into();
                self.variant.clear();
            }
            "x86_64" | "x86-64" | "amd64" => {
                self.architecture = "amd64".into();
                if self.variant == "v1" {
                    self.variant.clear();
                }
            }
            "aarch64" | "arm64" => {
                self.architecture = "arm64".into();
                if self.variant == "8" || self.variant == "v8" {
                    self.variant.clear();
                }
            }
            "armhf" => {
                self.architecture = "arm".into();
                self.variant = "v7".into();
            }
            "armel" => {
                self.architecture = "arm".into();
                self.variant = "v6".into();
            }
            "arm" => match self.variant.as_str() {
                "" | "7" => self.variant = "v7".into(),
                "5" | "6" | "8" => self.variant = format!("v{}", self.variant),
                _ => {}
            },
            _ => {}
        }
    }
}

/// `os/arch[/variant]`, or `unknown` without an OS (regclient's `Platform.String`).
impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut p = self.clone();
        p.normalize();
        if p.os.is_empty() {
            return f.write_str("unknown");
        }
        let parts: Vec<&str> = [&p.os, &p.architecture, &p.variant]
            .into_iter()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .collect();
        f.write_str(&parts.join("/"))
    }
}

fn variant_ver(v: &str) -> i64 {
    v.strip_prefix('v').unwrap_or(v).parse().unwrap_or(0)
}

fn variant_compatible(host: &str, target: &str) -> bool {
    let (h, t) = (variant_ver(host), variant_ver(target));
    h >= t || (h == 1 && target.is_empty()) || (host.is_empty() && t == 1)
}

/// The first three parts of a Windows version.
fn os_ver_semver(v: &str) -> String {
    let parts: Vec<&str> = v.split('.').collect();
    if parts.len() < 4 {
        v.to_string()
    } else {
        parts[..3].join(".")
    }
}

fn os_ver_compatible(host: &str, target: &str) -> bool {
    host.is_empty() || os_ver_semver(host) == os_ver_semver(target)
}

/// Can `host` run an image built for `target`? (darwin and windows hosts also run linux.)
pub fn compatible(host: &Platform, target: &Platform) -> bool {
    let mut h = host.clone();
    h.normalize();
    let mut t = target.clone();
    t.normalize();
    let arch_ok = h.architecture == t.architecture && variant_compatible(&h.variant, &t.variant);
    match h.os.as_str() {
        "linux" | "freebsd" => h.os == t.os && arch_ok,
        "windows" => match t.os.as_str() {
            "windows" => arch_ok && os_ver_compatible(&h.os_version, &t.os_version),
            "linux" => arch_ok,
            _ => false,
        },
        "darwin" => (t.os == "darwin" || t.os == "linux") && arch_ok,
        _ => {
            h.os == t.os
                && arch_ok
                && h.os_version == t.os_version
                && h.os_features == t.os_features
        }
    }
}

/// Are two platforms the same (after normalisation)?
pub fn matches(a: &Platform, b: &Platform) -> bool {
    let mut a = a.clone();
    a.normalize();
    let mut b = b.clone();
    b.normalize();
    if a.os != b.os {
        return false;
    }
    match a.os.as_str() {
        "linux" | "freebsd" => a.architecture == b.architecture && a.variant == b.variant,
        "windows" => {
            a.architecture == b.architecture
                && a.variant == b.variant
                && os_ver_semver(&a.os_version) == os_ver_semver(&b.os_version)
        }
        _ => {
            a.architecture == b.architecture
                && a.variant == b.variant
                && a.os_version == b.os_version
                && a.os_features == b.os_features
        }
    }
}

/// Compare dotted numeric versions: -1, 0, 1.
fn semver_cmp(a: &str, b: &str) -> i32 {
    let bp: Vec<&str> = b.split('.').collect();
    for (i, ap) in a.split('.').enumerate() {
        let Some(bv) = bp.get(i) else {
            return 1;
        };
        match (ap.parse::<i64>(), bv.parse::<i64>()) {
            (Err(_), Err(_)) => return 0,
            (Err(_), Ok(_)) => return -1,
            (Ok(_), Err(_)) => return 1,
            (Ok(x), Ok(y)) if x < y => return -1,
            (Ok(x), Ok(y)) if x > y => return 1,
            _ => {}
        }
    }
    0
}

/// Is `target` compatible with `host` and a better match than `prev` (the zero value when
/// nothing matched yet)? Exact OS, then exact arch, then exact variant, then the highest
/// variant, then the OS version.
pub fn better(host: &Platform, target: &Platform, prev: &Platform) -> bool {
    if !compatible(host, target) {
        return false;
    }
    let mut h = host.clone();
    h.normalize();
    let mut t = target.clone();
    t.normalize();
    let mut p = prev.clone();
    p.normalize();
    if p.os != t.os {
        if t.os == h.os {
            return true;
        } else if p.os == h.os {
            return false;
        }
    }
    if p.architecture != t.architecture {
        if t.architecture == h.architecture {
            return true;
        } else if p.architecture == h.architecture {
            return false;
        }
    }
    if p.variant != t.variant {
        if t.variant == h.variant {
            return true;
        } else if p.variant == h.variant {
            return false;
        }
        let (pv, tv) = (variant_ver(&p.variant), variant_ver(&t.variant));
        if tv != pv {
            return tv > pv;
        }
    }
    if p.os_version != t.os_version {
        if t.os_version == h.os_version {
            return true;
        } else if p.os_version == h.os_version {
            return false;
        }
        let c = semver_cmp(&p.os_version, &t.os_version);
        if c != 0 {
            return c < 0;
        }
    }
    false
}

/// The child of an index that best runs on `want` (`platform` option); children without a
/// platform are never picked.
pub fn select<'a>(children: &'a [Descriptor], want: &Platform) -> Option<&'a Descriptor> {
    let mut best: Option<(&Descriptor, Platform)> = None;
    for d in children {
        let Some(dp) = &d.platform else { continue };
        let p = Platform::from_descriptor(dp);
        let prev = best.as_ref().map(|(_, p)| p.clone()).unwrap_or_default();
        if better(want, &p, &prev) {
            best = Some((d, p));
        }
    }
    best.map(|(d, _)| d)
}

/// The platforms of an index's children, for the "not found" warning.
pub fn list(children: &[Descriptor]) -> Vec<String> {
    children
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .map(|p| Platform::from_descriptor(p).to_string())
        .collect()
}

/// A `platforms` filter: exact matches, `""` keeps children without a platform.
#[derive(Clone, Debug, Default)]
pub struct PlatformFilter {
    entries: Vec<Platform>,
    keep_unset: bool,
}

impl PlatformFilter {
    pub fn parse(list: &[String]) -> Result<PlatformFilter, PlatformError> {
        let mut f = PlatformFilter::default();
        for e in list {
            if e.is_empty() {
                f.keep_unset = true;
            } else {
                f.entries.push(Platform::parse(e)?);
            }
        }
        Ok(f)
    }

    /// Is a child with this platform kept?
    pub fn keeps(&self, p: Option<&DescPlatform>) -> bool {
        match p {
            Some(p) if !p.os.is_empty() => {
                let p = Platform::from_descriptor(p);
                self.entries.iter().any(|e| matches(&p, e))
            }
            _ => self.keep_unset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Digest;

    fn linux_amd64_v3() -> Platform {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: "v3".into(),
            ..Default::default()
        }
    }

    fn p(s: &str) -> Platform {
        Platform::parse_with(s, &linux_amd64_v3()).unwrap()
    }

    fn pl(os: &str, arch: &str, variant: &str) -> Platform {
        Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: variant.into(),
            ..Default::default()
        }
    }

    fn child(n: u8, plat: Option<&str>) -> Descriptor {
        let mut d = Descriptor::new(crate::oci::media::OCI_MANIFEST, Digest::sha256_of(&[n]), 10);
        d.platform = plat.map(|s| {
            let parts: Vec<&str> = s.split('/').collect();
            DescPlatform {
                os: parts[0].into(),
                architecture: parts.get(1).unwrap_or(&"").to_string(),
                variant: parts.get(2).map(|v| v.to_string()),
                ..Default::default()
            }
        });
        d
    }

    #[test]
    fn parse_and_normalise() {
        assert_eq!(p("linux/amd64"), pl("linux", "amd64", ""));
        assert_eq!(p("Linux/X86_64"), pl("linux", "amd64", ""));
        assert_eq!(p("linux/x86-64/v1"), pl("linux", "amd64", ""));
        assert_eq!(p("linux/aarch64/v8"), pl("linux", "arm64", ""));
        assert_eq!(p("linux/armhf"), pl("linux", "arm", "v7"));
        assert_eq!(p("linux/armel"), pl("linux", "arm", "v6"));
        assert_eq!(p("linux/arm"), pl("linux", "arm", "v7"));
        assert_eq!(p("linux/arm/6"), pl("linux", "arm", "v6"));
        assert_eq!(p("linux/i386"), pl("linux", "386", ""));
        assert_eq!(p("macos/arm64"), pl("darwin", "arm64", ""));
        // short forms are filled from the local platform
        assert_eq!(p("arm64"), pl("linux", "arm64", ""));
        assert_eq!(p("amd64"), pl("linux", "amd64", "v3"));
        assert_eq!(p("linux"), pl("linux", "amd64", "v3"));
        assert_eq!(p("local"), pl("linux", "amd64", "v3"));
        assert_eq!(p("windows"), pl("windows", "", ""));
        let w = p("windows/amd64,osver=10.0.17763.5820");
        assert_eq!(w.os_version, "10.0.17763.5820");
        assert!(Platform::parse_with("linux/amd64,foo=1", &linux_amd64_v3()).is_err());
        assert!(Platform::parse_with("linux//amd64", &linux_amd64_v3()).is_err());
        assert!(Platform::parse_with("", &linux_amd64_v3()).is_err());
        let e = Platform::parse_with("linux/am d64", &linux_amd64_v3()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid platform component am d64 in linux/am d64"
        );
        assert_eq!(p("linux/arm/v7").to_string(), "linux/arm/v7");
        assert_eq!(Platform::default().to_string(), "unknown");
    }

    #[test]
    fn select_best_compatible() {
        let kids = vec![
            child(1, Some("linux/amd64")),
            child(2, Some("linux/amd64/v2")),
            child(3, Some("linux/arm64")),
            child(4, Some("linux/arm/v6")),
            child(5, Some("unknown/unknown")),
            child(6, None),
        ];
        let pick = |s: &str| select(&kids, &p(s)).map(|d| d.digest.clone());
        // plain amd64 never selects the v2 child
        assert_eq!(pick("linux/amd64"), Some(kids[0].digest.clone()));
        // a v3 host prefers the highest compatible variant
        assert_eq!(pick("linux/amd64/v3"), Some(kids[1].digest.clone()));
        assert_eq!(pick("linux/arm64"), Some(kids[2].digest.clone()));
        // arm/v7 falls back to the v6 child
        assert_eq!(pick("linux/arm/v7"), Some(kids[3].digest.clone()));
        assert_eq!(pick("linux/arm/v5"), None);
        assert_eq!(pick("linux/s390x"), None);
        assert_eq!(
            list(&kids),
            vec![
                "linux/amd64",
                "linux/amd64/v2",
                "linux/arm64",
                "linux/arm/v6",
                "unknown/unknown"
            ]
        );
        // a darwin host also runs linux images, preferring its own OS
        let mac = pl("darwin", "arm64", "");
        assert_eq!(
            select(&kids, &mac).map(|d| d.digest.clone()),
            Some(kids[2].digest.clone())
        );
    }

    #[test]
    fn platforms_filter_is_exact() {
        let f = PlatformFilter::parse(&["linux/amd64".to_string()]).unwrap();
        let k = |s: Option<&str>| f.keeps(child(0, s).platform.as_ref());
        assert!(k(Some("linux/amd64")));
        assert!(!k(Some("linux/amd64/v2")));
        assert!(!k(Some("linux/arm64")));
        assert!(!k(None));
        let f = PlatformFilter::parse(&["".to_string(), "linux/arm/v7".to_string()]).unwrap();
        let k = |s: Option<&str>| f.keeps(child(0, s).platform.as_ref());
        assert!(k(None));
        assert!(k(Some("linux/arm")), "arm normalises to arm/v7");
        assert!(!k(Some("linux/arm/v6")));
        assert!(PlatformFilter::parse(&["linux/a b".to_string()]).is_err());
    }

    #[test]
    fn windows_os_version() {
        let host = Platform {
            os: "windows".into(),
            architecture: "amd64".into(),
            os_version: "10.0.17763.5820".into(),
            ..Default::default()
        };
        let mut t = host.clone();
        t.os_version = "10.0.17763.1".into();
        assert!(compatible(&host, &t));
        assert!(matches(&host, &t));
        t.os_version = "10.0.20348.1".into();
        assert!(!compatible(&host, &t));
        assert!(compatible(&host, &pl("linux", "amd64", "")));
        assert_eq!(semver_cmp("10.0.1", "10.0.2"), -1);
        assert_eq!(semver_cmp("10.1", "10.0.2"), 1);
    }
}
