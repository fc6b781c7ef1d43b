//! `micro-vmm --app`: runs an app's payload in a fresh VM, as Android's `vm run-app` does
//! (docs/app.md). It builds the payload disk in a private temporary directory, boots the
//! guest OS with it, serves the guest agent's lifecycle connection, prints each event and
//! exits with the payload's exit code or a code for the stop reason.

pub mod config;
pub mod exit_code;
pub mod os;
pub mod payload_disk;
pub mod run;
pub mod service;
pub mod workdir;

use std::path::PathBuf;

use crate::api::vmconfig::VmConfigError;
use crate::payload::PayloadError;
use crate::payload::apk::ApkError;
use crate::payload::config::ConfigError as PayloadConfigError;
use crate::payload::idsig::IdsigError;
use crate::payload::metadata::MetadataError;
use crate::payload::partition::PartitionError;

pub use config::AppConfig;
pub use run::run;

/// Why an app could not be run (before or around the VM; what happens inside the VM is a
/// [`crate::lifecycle::StopReason`]).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{flag}: {reason}")]
    BadFlag { flag: &'static str, reason: String },
    #[error("invalid payload config: {0}")]
    InvalidPayloadConfig(#[from] PayloadConfigError),
    #[error(transparent)]
    Apk(ApkError),
    #[error(transparent)]
    Idsig(#[from] IdsigError),
    #[error(transparent)]
    Partition(#[from] PartitionError),
    #[error(transparent)]
    PayloadDisk(#[from] PayloadError),
    #[error("payload metadata: {0}")]
    Metadata(#[from] MetadataError),
    #[error("the config names {apks} extra APK(s) but {idsigs} --extra-idsig given")]
    ExtraIdsigCount { apks: usize, idsigs: usize },
    #[error("APEX {name:?}: {reason}")]
    BadApex { name: String, reason: String },
    #[error("unknown OS {name:?} (micro-vmm has: {known}); pass --os-config FILE for another")]
    UnknownOs { name: String, known: String },
    #[error(transparent)]
    OsConfigFile(VmConfigError),
    #[error("{source_name}: {reason}")]
    OsConfig { source_name: String, reason: String },
    #[error(
        "the guest {what} {path:?} (from the {source_name}) does not exist: build the guest \
         assets with scripts/build-guest, or pass --guest-dir DIR"
    )]
    MissingGuestAsset {
        what: &'static str,
        path: PathBuf,
        source_name: String,
    },
}

impl AppError {
    /// Errors in what the user passed (exit 35), as opposed to host failures (exit 1).
    pub fn is_invalid_argument(&self) -> bool {
        !matches!(self, AppError::PayloadDisk(PayloadError::Write { .. }))
    }
}
