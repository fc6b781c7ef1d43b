//! The guest agent `micro-vmm-agent`: PID 1 of the app guest, doing microdroid_manager's job
//! (docs/lifecycle.md, "What the agent does, in order").
//!
//! - [`system`]: the syscalls behind small functions: mounts, module loading, the console,
//!   the failure string on ttyS1, power off; the [`system::System`] trait the payload steps
//!   mount and format through (faked in tests).
//! - [`modules`]: `/lib/modules/order` and `finit_module`.
//! - [`host`]: the vsock connection to the host: connecting with retries, sending events,
//!   reading requests.
//! - [`partitions`]: the payload partitions by GPT label, from a sysfs-like tree.
//! - [`prepare`]: metadata, verification, extraction, config and storage: steps 3 to 8.
//! - [`task`]: spawning the task, its exit status, reaping.
//! - [`ready`]: the `/run/vm_payload_service` socket a payload signals "ready" on, and the
//!   client `vm_payload ready`.
//! - [`run`]: the whole sequence and the event loop, over any [`host::Link`].
//! - [`lines`]: bounded line reading, shared by the host connection and the ready socket.
//!
//! Everything the agent reads is untrusted: the partitions, the APK, the config, the host's
//! requests and what payloads write to the ready socket. Errors name the file, label or key;
//! reads are bounded; nothing panics. Whatever happens, the agent ends by powering off.

pub mod host;
pub mod lines;
pub mod modules;
pub mod partitions;
pub mod prepare;
pub mod ready;
pub mod run;
pub mod system;
pub mod task;

#[cfg(test)]
pub(crate) mod testutil;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::lifecycle::ErrorCode;

/// Prefix of every console line the agent writes.
pub const LOG_PREFIX: &str = "micro-vmm-agent";

/// Writes one log line, `micro-vmm-agent: <text>`, to stderr (the console in the guest).
/// Never fails: a log line that cannot be written is dropped.
pub fn log_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let line = format!("{LOG_PREFIX}: {args}\n");
    let _ = io::stderr().lock().write_all(line.as_bytes());
}

/// Whether progress lines are printed ([`agent_debug!`]): on in tests, and in the guest when
/// the kernel command line has [`DEBUG_PARAM`] (`micro-vmm --app --debug`).
static VERBOSE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// The kernel parameter that makes the agent print its progress.
pub const DEBUG_PARAM: &str = "microvmm.debug";

/// Turns progress lines on or off.
pub fn set_verbose(on: bool) {
    VERBOSE.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// True when `cmdline` (the kernel's) asks for progress lines.
pub fn debug_requested(cmdline: &str) -> bool {
    cmdline.split_whitespace().any(|w| w == DEBUG_PARAM)
}

/// A progress line: printed only when verbose.
pub fn debug_line(args: std::fmt::Arguments<'_>) {
    if VERBOSE.load(std::sync::atomic::Ordering::Relaxed) {
        log_line(args);
    }
}

/// `agent_debug!("...", args)`: [`debug_line`] with `format!` arguments (progress).
#[macro_export]
macro_rules! agent_debug {
    ($($arg:tt)*) => {
        $crate::agent::debug_line(format_args!($($arg)*))
    };
}

/// `agent_log!("...", args)`: [`log_line`] with `format!` arguments (always printed: problems).
#[macro_export]
macro_rules! agent_log {
    ($($arg:tt)*) => {
        $crate::agent::log_line(format_args!($($arg)*))
    };
}

/// Errors of the agent. [`AgentError::error_code`] says what the host is told.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot mount {what} at {target:?}: {source}")]
    Mount {
        what: String,
        target: PathBuf,
        source: io::Error,
    },
    #[error("cannot {op} {path:?}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{path:?} line {line}: {reason}")]
    ModuleOrder {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("cannot connect to the host (vsock CID {cid} port {port}) within {waited:?}: {source}")]
    Connect {
        cid: u32,
        port: u32,
        waited: Duration,
        source: io::Error,
    },
    #[error("block device list {path:?}: {reason}")]
    Sysfs { path: PathBuf, reason: String },
    #[error("partitions {first:?} and {second:?} are both labelled {label:?}")]
    DuplicateLabel {
        label: String,
        first: String,
        second: String,
    },
    #[error("partitions {missing:?} did not appear within {waited:?}")]
    MissingPartitions {
        missing: Vec<String>,
        waited: Duration,
    },
    #[error("extra APK partitions: {0}")]
    ExtraApks(String),
    #[error("payload metadata ({path:?}): {reason}")]
    Metadata { path: PathBuf, reason: String },
    /// An APK, extra APK or idsig that does not verify.
    #[error("verification of {label} failed: {reason}")]
    Verification { label: String, reason: String },
    /// The payload config (or the metadata's choice of config) is unusable.
    #[error("invalid payload config: {0}")]
    InvalidConfig(String),
    #[error("extracting {label} to {dest:?}: {reason}")]
    Extract {
        label: String,
        dest: PathBuf,
        reason: String,
    },
    #[error("storage {path:?}: {reason}")]
    Storage { path: PathBuf, reason: String },
    #[error("cannot run the task {command:?}: {source}")]
    Spawn { command: PathBuf, source: io::Error },
    #[error("payload service socket {path:?}: {source}")]
    ReadySocket { path: PathBuf, source: io::Error },
    #[error("payload service {path:?}: {reason}")]
    ReadyReply { path: PathBuf, reason: String },
}

impl AgentError {
    /// The `ErrorCode` the host is told for this error (Android's `MicrodroidError` mapping).
    pub fn error_code(&self) -> ErrorCode {
        match self {
            AgentError::Verification { .. } => ErrorCode::PayloadVerificationFailed,
            AgentError::InvalidConfig(_) => ErrorCode::PayloadInvalidConfig,
            _ => ErrorCode::Unknown,
        }
    }
}

/// Where things are and how long to wait: the guest's fixed layout, or a temporary tree in
/// tests.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `/sys/class/block`.
    pub sysfs_block: PathBuf,
    /// `/dev`, where `DEVNAME` is looked up.
    pub dev_dir: PathBuf,
    /// `/mnt/apk`; the metadata's `config_path` is under it.
    pub apk_dir: PathBuf,
    /// `/mnt/extra-apk`; extra APK `i` goes to `<dir>/<i>`.
    pub extra_apk_dir: PathBuf,
    /// `/mnt/encryptedstore`.
    pub encryptedstore_dir: PathBuf,
    /// `/run/vm_payload_service`.
    pub payload_service: PathBuf,
    /// `/dev/console`: the task's stdout and stderr.
    pub console: PathBuf,
    /// How long to wait for the required partitions.
    pub partition_wait: Duration,
    /// Between SIGTERM and SIGKILL when the host asks for a shutdown.
    pub kill_grace: Duration,
    /// How long to wait for the host to close the connection after the last event.
    pub delivery_wait: Duration,
    /// PID 1 reaps every child (orphans are re-parented to it); a test process must wait
    /// for its own task only.
    pub reap_all: bool,
}

impl AgentConfig {
    /// The guest's layout (docs/lifecycle.md).
    pub fn guest() -> AgentConfig {
        AgentConfig {
            sysfs_block: PathBuf::from("/sys/class/block"),
            dev_dir: PathBuf::from("/dev"),
            apk_dir: PathBuf::from("/mnt/apk"),
            extra_apk_dir: PathBuf::from("/mnt/extra-apk"),
            encryptedstore_dir: PathBuf::from("/mnt/encryptedstore"),
            payload_service: PathBuf::from(crate::lifecycle::PAYLOAD_SERVICE_SOCKET),
            console: PathBuf::from("/dev/console"),
            partition_wait: Duration::from_secs(10),
            kill_grace: Duration::from_secs(5),
            delivery_wait: Duration::from_secs(2),
            reap_all: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_parameter() {
        assert!(debug_requested(
            "console=ttyS0 quiet microvmm.debug panic=-1"
        ));
        assert!(!debug_requested("console=ttyS0 microvmm.debug=0 quiet"));
        assert!(!debug_requested(""));
    }
}
