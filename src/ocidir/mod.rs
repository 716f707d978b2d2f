//! OCI image layout directories (`ocidir://path`) as a [`crate::store::Store`] (spec §10).

mod gc;
mod index_file;
mod layout;

pub use layout::{blob_path, OciDirStore, ANNOTATION_CREATED, ANNOTATION_REF_NAME};
