//! The payload builder: what Android's virtualization service does on the host to run an app
//! in a VM (see docs/payload.md).
//!
//! From an APK (a zip), its `.idsig` and the path of a config JSON inside the APK, it builds
//! the payload disk (a composite GPT disk over the host files, nothing copied), and the
//! instance and storage images. The guest agent reuses the parsers (metadata, config, idsig,
//! the zip reader) on its side.
//!
//! Everything read here is untrusted: APKs, idsigs, config JSON and metadata. Errors name the
//! file and the field; memory and time are bounded; nothing panics.
//!
//! - [`apk`]: the APK as a zip: open (also from a zero-padded block device), read one entry
//!   with a cap, extract everything safely.
//! - [`config`]: `VmPayloadConfig`, the config JSON inside the APK, or the implicit config of
//!   a payload binary.
//! - [`metadata`]: the `payload-metadata` partition (a length-framed protobuf).
//! - [`partition`]: writable partitions (instance image, encrypted storage, raw) and instance
//!   ids.

pub mod apk;
pub mod config;
pub mod idsig;
pub mod metadata;
pub mod partition;

#[cfg(test)]
pub(crate) mod testutil;
