//! The host manager, `micro-vmm vm ...` (docs/manager.md): Android's
//! `android.system.virtualmachine.VirtualMachine` over VM directories, with `micro-vmm --app`
//! processes as the VMs.
//!
//! - [`name`]: which VM names are accepted.
//! - [`home`]: the data directory and the layout of a VM directory.
//! - [`config`]: the VM config (`config.json`): parsing, Android's builder rules, and
//!   `isCompatibleWith` for `set-config`.
//! - [`store`]: create, delete (tombstones), list, status, export and import; every change of
//!   a VM directory is atomic.
//! - [`lock`]: the per-VM run lock (`flock`) that says whether a VM is running.
//! - [`reason`]: the stop reason of a run, from the control socket or from the exit status.
//! - [`capture`]: micro-vmm's stderr into `vmm.log`, with a size limit.
//! - [`control`]: the control-socket client (docs/api.md).
//! - [`monitor`]: starting a VM and watching it until it stops (`last_stop.json`).
//! - [`follow`]: following a growing log file.
//! - [`cli`]: the `vm` subcommands.

pub mod capture;
pub mod cli;
pub mod config;
pub mod control;
pub mod follow;
pub mod home;
pub mod lock;
pub mod monitor;
pub mod name;
pub mod reason;
pub mod store;

use std::io;
use std::path::PathBuf;

use crate::payload::partition::PartitionError;

/// Why a manager command failed. Each names the VM, the file or the field concerned.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("invalid VM name {name:?}: {reason}")]
    BadName { name: String, reason: &'static str },
    #[error(
        "cannot find the data directory: set MICRO_VMM_HOME, XDG_DATA_HOME or HOME to an \
         absolute path"
    )]
    NoHome,
    #[error("no VM named {0:?}")]
    NotFound(String),
    #[error("the VM {0:?} was deleted")]
    Deleted(String),
    #[error("a VM named {0:?} already exists")]
    Exists(String),
    #[error("{path:?} already exists")]
    DestinationExists { path: PathBuf },
    #[error("the VM {name:?} is running; stop it before {action}")]
    Running { name: String, action: &'static str },
    #[error("the VM {0:?} is not running")]
    NotRunning(String),
    #[error("{path:?}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("{field} cannot change ({old} -> {new}): Android's isCompatibleWith forbids it")]
    Incompatible {
        field: &'static str,
        old: String,
        new: String,
    },
    #[error("{path:?} is not a VM descriptor: {reason}")]
    Descriptor { path: PathBuf, reason: String },
    #[error("{op} {path:?}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(transparent)]
    Partition(#[from] PartitionError),
    #[error("control socket {path:?}: {reason}")]
    Control { path: PathBuf, reason: String },
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Failed(String),
}

impl ManagerError {
    /// An I/O error on `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| ManagerError::Io { op, path, source }
    }
}
