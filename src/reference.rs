//! Image reference grammar (spec §9): `[registry/]repository[:tag][@digest]` with Docker Hub
//! defaults, and `ocidir://path[:tag][@digest]`.

use crate::oci::Digest;
use std::fmt;

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

impl Reference {
    /// Parse a reference; see spec §9. TODO(helper): implement fully.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        Err(ReferenceError::Invalid(s.to_string()))
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
