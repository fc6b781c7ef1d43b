//! The stop reason of a run and its record, `last_stop.json`.
//!
//! In order of trust: the `stopped` event from the control socket (docs/api.md); a signal
//! that killed the VMM (`KILLED`, as Android's `death_reason` says for a crosvm killed by a
//! signal); the verdict micro-vmm printed (`micro-vmm: VM stopped: REASON`, docs/app.md); and
//! last the exit code: `--app`'s 2xx codes map back to their reasons, a payload's own exit
//! code means it finished and the VM shut down, otherwise Android's `death_reason` (failure
//! string, then 0/1/32/33 = SHUTDOWN/START_FAILED/REBOOT/CRASH).

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::app::exit_code::REASON_BASE;
use crate::lifecycle::StopReason;
use crate::vmm::exit::code;

use super::ManagerError;

/// Most bytes read from the end of micro-vmm's log when looking for its verdict.
pub const MAX_LOG_TAIL: u64 = 64 << 10;
/// Largest `last_stop.json` read.
const MAX_RECORD: u64 = 16 << 10;

/// How the VMM process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessEnd {
    Exited(i32),
    Signaled(i32),
}

/// What micro-vmm printed on stderr about the run (docs/app.md).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrintedEvents {
    /// `micro-vmm: payload finished with exit code N`.
    pub payload_finished: Option<i32>,
    /// `micro-vmm: VM stopped: REASON`.
    pub stopped: Option<StopReason>,
}

impl PrintedEvents {
    /// Scans micro-vmm's stderr (the last of each line kind wins).
    pub fn scan(log: &str) -> PrintedEvents {
        let mut ev = PrintedEvents::default();
        for line in log.lines() {
            if let Some(n) = line.strip_prefix("micro-vmm: payload finished with exit code ") {
                ev.payload_finished = n.trim().parse().ok();
            } else if let Some(r) = line.strip_prefix("micro-vmm: VM stopped: ") {
                ev.stopped = StopReason::from_name(r.trim());
            }
        }
        ev
    }

    /// [`Self::scan`] over the last [`MAX_LOG_TAIL`] bytes of a file (empty when missing).
    pub fn read(path: &Path) -> PrintedEvents {
        Self::scan(&read_tail(path, MAX_LOG_TAIL))
    }
}

/// Where the reason came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonSource {
    /// The `stopped` event of the control socket.
    ControlSocket,
    /// The exit status, micro-vmm's printed events and the failure string.
    ExitStatus,
}

/// The reason when the control socket gave none.
pub fn derive(end: ProcessEnd, printed: &PrintedEvents, failure_string: &str) -> StopReason {
    let status = match end {
        ProcessEnd::Signaled(_) => return StopReason::Killed,
        ProcessEnd::Exited(status) => status,
    };
    if let Some(r) = printed.stopped {
        return r;
    }
    if printed.payload_finished.is_some() {
        // The exit code is the payload's; after it finished, the guest powered off.
        return StopReason::from_exit(failure_string, Some(0));
    }
    if let Some(r) = status
        .checked_sub(REASON_BASE)
        .filter(|v| (1..=99).contains(v))
        .and_then(StopReason::from_value)
    {
        return r;
    }
    if status == code::INVALID_ARGS {
        return StopReason::StartFailed;
    }
    StopReason::from_exit(failure_string, Some(status))
}

/// `last_stop.json`: how the last run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastStop {
    /// Android's `DeathReason` name.
    pub reason: StopReason,
    /// The VMM's exit code (`None` when a signal killed it).
    pub exit_code: Option<i32>,
    /// The signal that killed the VMM.
    pub signal: Option<i32>,
    /// The payload's exit code when it finished.
    pub payload_exit_code: Option<i32>,
    pub source: ReasonSource,
    /// When the run ended: seconds since the Unix epoch.
    pub at: u64,
}

impl LastStop {
    /// Reads a record (bounded); `Ok(None)` when there is none.
    pub fn read(path: &Path) -> Result<Option<LastStop>, ManagerError> {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ManagerError::io("open", path)(e)),
        };
        let mut bytes = Vec::new();
        file.take(MAX_RECORD)
            .read_to_end(&mut bytes)
            .map_err(ManagerError::io("read", path))?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ManagerError::Config {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
    }

    /// Writes the record atomically (temporary file, rename).
    pub fn write(&self, path: &Path) -> Result<(), ManagerError> {
        let mut json = serde_json::to_vec(self).unwrap_or_default();
        json.push(b'\n');
        super::store::write_file_atomically(path, &json)
    }
}

/// The last `max` bytes of a file, lossily decoded (empty when unreadable).
pub fn read_tail(path: &Path, max: u64) -> String {
    use std::io::{Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if f.seek(SeekFrom::Start(len.saturating_sub(max))).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.take(max).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use StopReason::*;

    #[test]
    fn printed_events() {
        let log = "micro-vmm: created VM for a.apk with CID 3\nmicro-vmm: payload started\n\
                   micro-vmm: payload finished with exit code 212\nmicro-vmm: VM stopped: SHUTDOWN\n";
        let ev = PrintedEvents::scan(log);
        assert_eq!(ev.payload_finished, Some(212));
        assert_eq!(ev.stopped, Some(Shutdown));
        assert_eq!(
            PrintedEvents::scan("micro-vmm: VM stopped: BOGUS\n").stopped,
            None
        );
        assert_eq!(PrintedEvents::scan(""), PrintedEvents::default());
    }

    #[test]
    fn derivation_table() {
        let none = PrintedEvents::default();
        let finished = |n| PrintedEvents {
            payload_finished: Some(n),
            stopped: None,
        };
        let printed = |r| PrintedEvents {
            payload_finished: None,
            stopped: Some(r),
        };
        let cases: Vec<(ProcessEnd, PrintedEvents, &str, StopReason)> = vec![
            // kill -9 of the VMM: nothing printed, killed by a signal.
            (ProcessEnd::Signaled(9), none.clone(), "", Killed),
            (
                ProcessEnd::Signaled(9),
                none.clone(),
                "MICRODROID_PAYLOAD_HAS_CHANGED",
                Killed,
            ),
            // micro-vmm's own verdict wins over the exit code.
            (ProcessEnd::Exited(7), printed(Hangup), "", Hangup),
            // --app's 2xx codes.
            (ProcessEnd::Exited(201), none.clone(), "", Killed),
            (ProcessEnd::Exited(202), none.clone(), "", Unknown),
            (ProcessEnd::Exited(203), none.clone(), "", Shutdown),
            (ProcessEnd::Exited(204), none.clone(), "", StartFailed),
            (ProcessEnd::Exited(205), none.clone(), "", Reboot),
            (ProcessEnd::Exited(206), none.clone(), "", Crash),
            (
                ProcessEnd::Exited(211),
                none.clone(),
                "",
                MicrodroidFailedToConnectToVirtualizationService,
            ),
            (
                ProcessEnd::Exited(212),
                none.clone(),
                "",
                MicrodroidPayloadHasChanged,
            ),
            (
                ProcessEnd::Exited(213),
                none.clone(),
                "",
                MicrodroidPayloadVerificationFailed,
            ),
            (
                ProcessEnd::Exited(214),
                none.clone(),
                "",
                MicrodroidInvalidPayloadConfig,
            ),
            (
                ProcessEnd::Exited(215),
                none.clone(),
                "",
                MicrodroidUnknownRuntimeError,
            ),
            (ProcessEnd::Exited(216), none.clone(), "", Hangup),
            // A payload that exits with 214 is not an invalid config.
            (ProcessEnd::Exited(214), finished(214), "", Shutdown),
            (
                ProcessEnd::Exited(0),
                finished(0),
                "MICRODROID_UNKNOWN_RUNTIME_ERROR|x",
                MicrodroidUnknownRuntimeError,
            ),
            // Android's death_reason for the rest.
            (ProcessEnd::Exited(0), none.clone(), "", Shutdown),
            (ProcessEnd::Exited(1), none.clone(), "", StartFailed),
            (ProcessEnd::Exited(32), none.clone(), "", Reboot),
            (ProcessEnd::Exited(33), none.clone(), "", Crash),
            (ProcessEnd::Exited(35), none.clone(), "", StartFailed),
            (
                ProcessEnd::Exited(0),
                none.clone(),
                "MICRODROID_INVALID_PAYLOAD_CONFIG",
                MicrodroidInvalidPayloadConfig,
            ),
            (ProcessEnd::Exited(209), none.clone(), "", Unknown),
        ];
        for (end, printed, failure, want) in cases {
            assert_eq!(
                derive(end, &printed, failure),
                want,
                "{end:?} {printed:?} {failure:?}"
            );
        }
    }

    #[test]
    fn record_round_trip_and_bad_records() {
        let t = crate::disk::testutil::TempDir::new("mgr-reason");
        let p = t.path().join("last_stop.json");
        assert_eq!(LastStop::read(&p).unwrap(), None);
        let r = LastStop {
            reason: MicrodroidInvalidPayloadConfig,
            exit_code: Some(214),
            signal: None,
            payload_exit_code: None,
            source: ReasonSource::ExitStatus,
            at: 5,
        };
        r.write(&p).unwrap();
        assert_eq!(LastStop::read(&p).unwrap(), Some(r));
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.contains("\"reason\":\"MICRODROID_INVALID_PAYLOAD_CONFIG\""),
            "{text}"
        );
        std::fs::write(&p, b"{\"reason\": 5}").unwrap();
        assert!(
            LastStop::read(&p)
                .unwrap_err()
                .to_string()
                .contains("last_stop.json")
        );
    }

    #[test]
    fn tails() {
        let t = crate::disk::testutil::TempDir::new("mgr-tail");
        let p = t.file("log", b"0123456789");
        assert_eq!(read_tail(&p, 4), "6789");
        assert_eq!(read_tail(&p, 100), "0123456789");
        assert_eq!(read_tail(&t.path().join("none"), 4), "");
        let f = t.file("f", b"  MICRODROID_PAYLOAD_HAS_CHANGED\n");
        assert_eq!(
            crate::lifecycle::read_failure_string(&f),
            "MICRODROID_PAYLOAD_HAS_CHANGED"
        );
    }
}
