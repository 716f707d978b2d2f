//! regsync-rs: a drop-in replacement for regclient's `regsync`.

pub mod cli;
pub mod config;
pub mod copy;
pub mod cron;
pub mod engine;
pub mod filter;
pub mod gocompat;
pub mod hooks;
pub mod log;
pub mod oci;
pub mod ocidir;
pub mod platform;
pub mod progress;
pub mod reference;
pub mod registry;
pub mod service;
pub mod shard;
pub mod state;
pub mod store;
