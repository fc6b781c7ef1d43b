//! `micro-vmm --app`: runs an app's payload in a fresh VM, as Android's `vm run-app` does
//! (docs/app.md). It builds the payload disk in a private temporary directory, boots the
//! guest OS with it, serves the guest agent's lifecycle connection, prints each event and
//! exits with the payload's exit code or a code for the stop reason.

pub mod os;
pub mod service;
pub mod workdir;

use std::path::PathBuf;

use crate::api::vmconfig::VmConfigError;

/// Why an app could not be run (before or around the VM; what happens inside the VM is a
/// [`crate::lifecycle::StopReason`]).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
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
