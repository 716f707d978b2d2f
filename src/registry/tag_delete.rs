//! Deleting a tag without deleting an image other tags still use.
//!
//! The distribution API deletes manifests by digest, and deleting a digest removes every tag
//! that points at it. So, as regclient's `TagDelete` does:
//!
//! 1. `DELETE /v2/<repo>/manifests/<tag>`: the tag delete of distribution spec 1.1
//!    (distribution 3, Docker Hub). A 2xx ends here.
//! 2. Otherwise, make sure the registry deletes manifests at all, without touching anything:
//!    `DELETE` of a digest nobody has answers 404 where deletes work, 405 / `UNSUPPORTED`
//!    where they are off (distribution without `storage.delete.enabled`). A refusal is
//!    [`StoreError::Unsupported`] and the tag is left as it was: pushing the throw-away
//!    manifest first would leave the tag pointing at it.
//! 3. Point the tag at a throw-away manifest unique to this deletion (its config carries the
//!    tag and the time in labels), of the same family (OCI or Docker) as the current one, and
//!    delete that digest. The image the tag pointed at stays for the other tags.

use super::client::Client;
use super::{blob, manifest};
use crate::oci::{media, Descriptor, Digest, Manifest};
use crate::reference::Reference;
use crate::store::StoreError;
use bytes::Bytes;
use futures::StreamExt;
use reqwest::Method;
use std::sync::Arc;

/// The text of a refusal: callers print it once per step.
pub const REFUSED: &str = "the registry refuses deletes (405 UNSUPPORTED; a CNCF distribution \
     registry needs storage.delete.enabled: true)";

/// A status that says "this registry does not delete".
fn refused(e: &StoreError) -> bool {
    match e {
        StoreError::Unsupported(_) => true,
        StoreError::HttpStatus { status, text } => *status == 405 || text.contains("UNSUPPORTED"),
        _ => false,
    }
}

/// `DELETE /v2/<repo>/manifests/<what>`, `Ok` for the statuses in `accept`.
async fn delete(
    client: &Client,
    r: &Reference,
    what: &str,
    accept: &[u16],
) -> Result<(), StoreError> {
    let host = client.host(&r.registry);
    let req = host.request(Method::DELETE, &r.repository, &format!("manifests/{what}"))?;
    client.send(&host, req, accept).await.map(drop)
}

/// What a delete by digest may answer: 202 (distribution spec), 200/204 (some registries).
const DELETED: [u16; 3] = [200, 202, 204];

/// `DELETE /v2/<repo>/manifests/<digest>`: a 404 is "already gone", a refusal
/// [`StoreError::Unsupported`].
pub(super) async fn manifest_delete(client: &Arc<Client>, r: &Reference) -> Result<(), StoreError> {
    let digest = r
        .digest
        .as_ref()
        .ok_or_else(|| StoreError::Invalid(format!("manifest delete without a digest: {r}")))?;
    match delete(client, r, digest.as_str(), &DELETED).await {
        Ok(()) | Err(StoreError::NotFound(_)) => Ok(()),
        Err(e) if refused(&e) => Err(StoreError::Unsupported(REFUSED.into())),
        Err(e) => Err(e),
    }
}

pub(super) async fn tag_delete(client: &Arc<Client>, r: &Reference) -> Result<(), StoreError> {
    let tag = r
        .tag
        .as_deref()
        .ok_or_else(|| StoreError::Invalid(format!("tag delete without a tag: {r}")))?;
    // 1. the registry's own tag delete (distribution spec 1.1), trusted only on its 202, as
    //    regclient does: some registries have answered a tag DELETE by deleting the manifest
    //    with every tag on it, with another status
    match delete(client, r, tag, &[202]).await {
        Ok(()) => return Ok(()),
        Err(e @ (StoreError::Unauthorized { .. } | StoreError::Network { .. })) => return Err(e),
        Err(_) => {}
    }
    // 2. does it delete by digest at all?
    let nobody = Digest::sha256_of(
        format!(
            "regsync-rs delete probe {} {tag}",
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
        )
        .as_bytes(),
    );
    match delete(client, r, nobody.as_str(), &DELETED).await {
        Ok(()) | Err(StoreError::NotFound(_)) => {}
        Err(e) if refused(&e) => return Err(StoreError::Unsupported(REFUSED.into())),
        Err(e) => return Err(e),
    }
    // 3. the throw-away manifest
    let Some(current) = manifest::head(client, &r.with_tag(tag)).await? else {
        return Ok(()); // already gone
    };
    let now = chrono::Utc::now();
    let config = serde_json::json!({
        "created": now.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"delete-tag": tag, "delete-date": now.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)}},
        "rootfs": {"type": "layers", "diff_ids": []},
    });
    let config =
        Bytes::from(serde_json::to_vec(&config).map_err(|e| StoreError::Invalid(e.to_string()))?);
    let oci = matches!(
        current.media_type.as_str(),
        media::OCI_MANIFEST | media::OCI_INDEX | media::OCI_ARTIFACT
    );
    let (manifest_type, config_type) = if oci {
        (
            media::OCI_MANIFEST,
            "application/vnd.oci.image.config.v1+json",
        )
    } else {
        (
            media::DOCKER_V2,
            "application/vnd.docker.container.image.v1+json",
        )
    };
    let config_desc = Descriptor::new(config_type, Digest::sha256_of(&config), config.len() as i64);
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": {"mediaType": config_type, "digest": config_desc.digest.as_str(), "size": config.len()},
        "layers": [],
    });
    let body =
        Bytes::from(serde_json::to_vec(&body).map_err(|e| StoreError::Invalid(e.to_string()))?);
    let throwaway = Manifest::from_bytes(body, Some(manifest_type));
    let repo = r.repo_only();
    let stream = futures::stream::once(futures::future::ready(Ok(config))).boxed();
    blob::put(client.clone(), &repo, &config_desc, stream).await?;
    manifest::put(client, &r.with_tag(tag), &throwaway).await?;
    delete(client, r, throwaway.digest.as_str(), &DELETED)
        .await
        .map_err(|e| {
            StoreError::Invalid(format!(
                "the tag now points at the throw-away manifest {}, whose delete failed: {e}",
                throwaway.digest
            ))
        })
}
