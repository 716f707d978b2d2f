//! `index.json` of an OCI image layout (spec §10.2): the top-level entries, looked up by tag
//! (`org.opencontainers.image.ref.name`) or digest, and the rules a push follows to change them.

use super::layout::ANNOTATION_REF_NAME;
use crate::oci::{media, Descriptor, Digest};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `index.json` as read and written. Field order follows the OCI/regclient encoding.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct IndexFile {
    #[serde(default = "schema_v2")]
    pub(super) schema_version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) artifact_type: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub(super) manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "map_is_empty")]
    pub(super) annotations: Option<BTreeMap<String, String>>,
}

fn schema_v2() -> i64 {
    2
}

fn map_is_empty(m: &Option<BTreeMap<String, String>>) -> bool {
    m.as_ref().is_none_or(|m| m.is_empty())
}

fn null_as_empty<'de, D>(d: D) -> Result<Vec<Descriptor>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(Option::<Vec<Descriptor>>::deserialize(d)?.unwrap_or_default())
}

impl IndexFile {
    pub(super) fn new() -> Self {
        IndexFile {
            schema_version: 2,
            media_type: Some(media::OCI_INDEX.to_string()),
            artifact_type: None,
            manifests: Vec::new(),
            subject: None,
            annotations: None,
        }
    }

    /// Lookup by tag: exact ref name, then a ref name ending in `:<tag>`.
    pub(super) fn find_tag(&self, tag: &str) -> Option<&Descriptor> {
        let suffix = format!(":{tag}");
        self.manifests
            .iter()
            .find(|d| ref_name(d) == Some(tag))
            .or_else(|| {
                self.manifests
                    .iter()
                    .find(|d| ref_name(d).is_some_and(|n| n.ends_with(&suffix)))
            })
    }

    pub(super) fn find_digest(&self, digest: &Digest) -> Option<&Descriptor> {
        self.manifests.iter().find(|d| &d.digest == digest)
    }

    /// Add or replace the entry for a push (spec §10.2). `desc` carries its annotations
    /// (ref name when tagged, created). Returns whether the index changed.
    pub(super) fn set(&mut self, tag: Option<&str>, desc: Descriptor) -> bool {
        let Some(tag) = tag else {
            if self.find_digest(&desc.digest).is_some() {
                return false;
            }
            self.manifests.push(desc);
            return true;
        };
        let matches = |d: &Descriptor| match ref_name(d) {
            Some(name) => name == tag,
            None => d.digest == desc.digest,
        };
        let Some(pos) = self.manifests.iter().position(matches) else {
            self.manifests.push(desc);
            return true;
        };
        let mut changed = false;
        let cur = &self.manifests[pos];
        if !(ref_name(cur) == Some(tag) && cur.digest == desc.digest) {
            self.manifests[pos] = desc.clone();
            changed = true;
        }
        let mut i = 0;
        self.manifests.retain(|d| {
            let keep = i <= pos || !matches(d);
            i += 1;
            changed |= !keep;
            keep
        });
        changed
    }
}

pub(super) fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_REF_NAME))
        .map(String::as_str)
        .filter(|n| !n.is_empty())
}
