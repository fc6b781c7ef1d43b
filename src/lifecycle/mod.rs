//! The payload lifecycle shared by the host (`micro-vmm --app`, the host manager) and the guest
//! agent: the vsock protocol ([`protocol`], docs/lifecycle.md), Android's error codes and stop
//! reasons, and how a stop reason is told from the VMM's exit and the failure string the guest
//! wrote to ttyS1 (Android's `death_reason`).

pub mod protocol;

use serde::{Deserialize, Serialize};

/// The host vsock port the agent connects to (Android 13's `VM_BINDER_SERVICE_PORT`).
pub const LIFECYCLE_PORT: u32 = 5000;
/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Longest line, `\n` included.
pub const MAX_LINE: usize = 4096;
/// Where the guest agent serves "ready" notifications from the payload.
pub const PAYLOAD_SERVICE_SOCKET: &str = "/run/vm_payload_service";

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("lifecycle message longer than {MAX_LINE} bytes ({0} bytes)")]
    LineTooLong(usize),
    #[error("bad lifecycle message {line:?}: {reason}")]
    BadMessage { line: String, reason: String },
}

/// Android's `ErrorCode` (what `onError` reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    Unknown = 0,
    PayloadVerificationFailed = 1,
    PayloadChanged = 2,
    PayloadInvalidConfig = 3,
}

impl ErrorCode {
    /// The name used on the wire and in messages.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Unknown => "UNKNOWN",
            ErrorCode::PayloadVerificationFailed => "PAYLOAD_VERIFICATION_FAILED",
            ErrorCode::PayloadChanged => "PAYLOAD_CHANGED",
            ErrorCode::PayloadInvalidConfig => "PAYLOAD_INVALID_CONFIG",
        }
    }

    /// The failure string the guest writes to ttyS1 for this error before powering off.
    pub fn failure_reason(self) -> StopReason {
        match self {
            ErrorCode::Unknown => StopReason::MicrodroidUnknownRuntimeError,
            ErrorCode::PayloadVerificationFailed => StopReason::MicrodroidPayloadVerificationFailed,
            ErrorCode::PayloadChanged => StopReason::MicrodroidPayloadHasChanged,
            ErrorCode::PayloadInvalidConfig => StopReason::MicrodroidInvalidPayloadConfig,
        }
    }
}

/// Android's `DeathReason` / `VirtualMachineCallback.STOP_REASON_*`: why a VM stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StopReason {
    InfrastructureError = 0,
    Killed = 1,
    Unknown = 2,
    Shutdown = 3,
    StartFailed = 4,
    Reboot = 5,
    Crash = 6,
    PvmFirmwarePublicKeyMismatch = 7,
    PvmFirmwareInstanceImageChanged = 8,
    MicrodroidFailedToConnectToVirtualizationService = 11,
    MicrodroidPayloadHasChanged = 12,
    MicrodroidPayloadVerificationFailed = 13,
    MicrodroidInvalidPayloadConfig = 14,
    MicrodroidUnknownRuntimeError = 15,
    Hangup = 16,
    WatchdogReboot = 17,
}

/// Every stop reason, for lookups by name.
const ALL_REASONS: [StopReason; 16] = [
    StopReason::InfrastructureError,
    StopReason::Killed,
    StopReason::Unknown,
    StopReason::Shutdown,
    StopReason::StartFailed,
    StopReason::Reboot,
    StopReason::Crash,
    StopReason::PvmFirmwarePublicKeyMismatch,
    StopReason::PvmFirmwareInstanceImageChanged,
    StopReason::MicrodroidFailedToConnectToVirtualizationService,
    StopReason::MicrodroidPayloadHasChanged,
    StopReason::MicrodroidPayloadVerificationFailed,
    StopReason::MicrodroidInvalidPayloadConfig,
    StopReason::MicrodroidUnknownRuntimeError,
    StopReason::Hangup,
    StopReason::WatchdogReboot,
];

/// Longest failure string read back from the log port's capture.
pub const MAX_FAILURE_STRING: u64 = 4096;

/// The failure string the guest wrote to ttyS1, from the log port's capture at `path`: its
/// first [`MAX_FAILURE_STRING`] bytes, trimmed; empty when there is none.
pub fn read_failure_string(path: &std::path::Path) -> String {
    use std::io::Read;
    let mut buf = Vec::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(MAX_FAILURE_STRING).read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).trim().to_string()
}

/// Failure strings the host accepts from ttyS1 (Android's `death_reason`).
const FAILURE_STRINGS: [StopReason; 7] = [
    StopReason::PvmFirmwarePublicKeyMismatch,
    StopReason::PvmFirmwareInstanceImageChanged,
    StopReason::MicrodroidFailedToConnectToVirtualizationService,
    StopReason::MicrodroidPayloadHasChanged,
    StopReason::MicrodroidPayloadVerificationFailed,
    StopReason::MicrodroidInvalidPayloadConfig,
    StopReason::MicrodroidUnknownRuntimeError,
];

impl StopReason {
    /// Android's name (`SHUTDOWN`, `MICRODROID_INVALID_PAYLOAD_CONFIG`, ...).
    pub fn name(self) -> &'static str {
        match self {
            StopReason::InfrastructureError => "INFRASTRUCTURE_ERROR",
            StopReason::Killed => "KILLED",
            StopReason::Unknown => "UNKNOWN",
            StopReason::Shutdown => "SHUTDOWN",
            StopReason::StartFailed => "START_FAILED",
            StopReason::Reboot => "REBOOT",
            StopReason::Crash => "CRASH",
            StopReason::PvmFirmwarePublicKeyMismatch => "PVM_FIRMWARE_PUBLIC_KEY_MISMATCH",
            StopReason::PvmFirmwareInstanceImageChanged => "PVM_FIRMWARE_INSTANCE_IMAGE_CHANGED",
            StopReason::MicrodroidFailedToConnectToVirtualizationService => {
                "MICRODROID_FAILED_TO_CONNECT_TO_VIRTUALIZATION_SERVICE"
            }
            StopReason::MicrodroidPayloadHasChanged => "MICRODROID_PAYLOAD_HAS_CHANGED",
            StopReason::MicrodroidPayloadVerificationFailed => {
                "MICRODROID_PAYLOAD_VERIFICATION_FAILED"
            }
            StopReason::MicrodroidInvalidPayloadConfig => "MICRODROID_INVALID_PAYLOAD_CONFIG",
            StopReason::MicrodroidUnknownRuntimeError => "MICRODROID_UNKNOWN_RUNTIME_ERROR",
            StopReason::Hangup => "HANGUP",
            StopReason::WatchdogReboot => "WATCHDOG_REBOOT",
        }
    }

    /// Android's numeric value.
    pub fn value(self) -> i32 {
        self as i32
    }

    /// Looks a reason up by its Android value.
    pub fn from_value(value: i32) -> Option<StopReason> {
        ALL_REASONS.into_iter().find(|r| r.value() == value)
    }

    /// Looks a reason up by its Android name.
    pub fn from_name(name: &str) -> Option<StopReason> {
        ALL_REASONS.into_iter().find(|r| r.name() == name)
    }

    /// The reason named by a failure string read from ttyS1: the text before any `|`,
    /// surrounding whitespace ignored. `None` for anything Android would not recognise.
    pub fn from_failure_string(text: &str) -> Option<StopReason> {
        let name = text.split('|').next().unwrap_or("").trim();
        FAILURE_STRINGS.into_iter().find(|r| r.name() == name)
    }

    /// The stop reason for a VMM process exit status (crosvm's `--extended-status` codes,
    /// Android's mapping); `None` status means killed by a signal.
    pub fn from_exit_status(code: Option<i32>) -> StopReason {
        match code {
            None => StopReason::Killed,
            Some(0) => StopReason::Shutdown,
            Some(1) => StopReason::StartFailed,
            Some(32) => StopReason::Reboot,
            Some(33) => StopReason::Crash,
            Some(36) => StopReason::WatchdogReboot,
            Some(_) => StopReason::Unknown,
        }
    }

    /// Android's `death_reason`: a recognised failure string wins, then the exit status.
    pub fn from_exit(failure_string: &str, code: Option<i32>) -> StopReason {
        Self::from_failure_string(failure_string).unwrap_or_else(|| Self::from_exit_status(code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_values_and_lookups_agree() {
        for r in ALL_REASONS {
            assert_eq!(StopReason::from_name(r.name()), Some(r));
            assert_eq!(StopReason::from_value(r.value()), Some(r));
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.name()));
        }
        assert_eq!(StopReason::Hangup.value(), 16);
        assert_eq!(StopReason::MicrodroidInvalidPayloadConfig.value(), 14);
        assert_eq!(StopReason::from_name("NOPE"), None);
        assert_eq!(StopReason::from_value(9), None);
        assert_eq!(StopReason::from_value(-1), None);
    }

    #[test]
    fn failure_strings_follow_android() {
        use StopReason::*;
        assert_eq!(
            StopReason::from_failure_string("MICRODROID_PAYLOAD_VERIFICATION_FAILED"),
            Some(MicrodroidPayloadVerificationFailed)
        );
        assert_eq!(
            StopReason::from_failure_string("MICRODROID_UNKNOWN_RUNTIME_ERROR|task died\n"),
            Some(MicrodroidUnknownRuntimeError)
        );
        assert_eq!(StopReason::from_failure_string(""), None);
        assert_eq!(StopReason::from_failure_string("SHUTDOWN"), None);
        assert_eq!(StopReason::from_failure_string("HANGUP"), None);
        assert_eq!(StopReason::from_exit("", Some(0)), Shutdown);
        assert_eq!(
            StopReason::from_exit("MICRODROID_INVALID_PAYLOAD_CONFIG", Some(0)),
            MicrodroidInvalidPayloadConfig
        );
        assert_eq!(StopReason::from_exit("", None), Killed);
        assert_eq!(StopReason::from_exit("", Some(32)), Reboot);
        assert_eq!(StopReason::from_exit("", Some(33)), Crash);
        assert_eq!(StopReason::from_exit("", Some(34)), Unknown);
        assert_eq!(StopReason::from_exit("", Some(1)), StartFailed);
        for code in [
            ErrorCode::Unknown,
            ErrorCode::PayloadVerificationFailed,
            ErrorCode::PayloadChanged,
            ErrorCode::PayloadInvalidConfig,
        ] {
            let r = code.failure_reason();
            assert_eq!(StopReason::from_failure_string(r.name()), Some(r));
        }
    }
}
