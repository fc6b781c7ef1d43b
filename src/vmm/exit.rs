//! How a VM ends, the process exit code for each way (crosvm's `--extended-status` codes),
//! and the first-wins exit state shared by vCPUs, devices and the main thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use vmm_sys_util::eventfd::EventFd;

use crate::devices::{GuestEvent, ResetCause};

/// Process exit codes (crosvm `--extended-status`).
pub mod code {
    /// The guest powered off.
    pub const STOP: i32 = 0;
    /// Any other error (host side).
    pub const ERROR: i32 = 1;
    /// The guest reset (i8042, ACPI reset register, triple fault).
    pub const RESET: i32 = 32;
    /// The VM crashed: KVM internal or emulation error, failed entry, unexpected exit.
    pub const CRASH: i32 = 33;
    /// The guest reported a panic through pvpanic.
    pub const GUEST_PANIC: i32 = 34;
    /// Invalid arguments.
    pub const INVALID_ARGS: i32 = 35;
    /// Stopped by a host signal: 128 + the signal number, as shells report it.
    pub const SIGNAL_BASE: i32 = 128;
}

/// Why a VM stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    PowerOff,
    Reset(ResetCause),
    Crash(String),
    GuestPanic,
    /// SIGTERM, SIGINT or SIGHUP reached micro-vmm.
    Signal(i32),
    /// The host side stopped the VM (a control request, a watchdog); the text says why.
    Killed(String),
    /// The host side failed while the VM ran.
    HostError(String),
}

impl VmExit {
    pub fn exit_code(&self) -> i32 {
        match self {
            VmExit::PowerOff => code::STOP,
            VmExit::Reset(_) => code::RESET,
            VmExit::Crash(_) => code::CRASH,
            VmExit::GuestPanic => code::GUEST_PANIC,
            VmExit::Signal(n) => code::SIGNAL_BASE + n,
            VmExit::Killed(_) => code::SIGNAL_BASE + libc::SIGKILL,
            VmExit::HostError(_) => code::ERROR,
        }
    }

    /// The one line printed on stderr when the VM ends.
    pub fn describe(&self) -> String {
        let why = match self {
            VmExit::PowerOff => "guest powered off (ACPI S5)".to_string(),
            VmExit::Reset(ResetCause::I8042) => "guest reset (i8042 reset line)".into(),
            VmExit::Reset(ResetCause::AcpiResetRegister) => {
                "guest reset (ACPI reset register)".into()
            }
            VmExit::Reset(ResetCause::TripleFault) => "guest reset (triple fault)".into(),
            VmExit::Crash(msg) => format!("VM crashed: {msg}"),
            VmExit::GuestPanic => "guest panicked (pvpanic)".into(),
            VmExit::Signal(n) => format!("stopped by signal {n} ({})", signal_name(*n)),
            VmExit::Killed(why) => format!("stopped by the host: {why}"),
            VmExit::HostError(msg) => format!("host error: {msg}"),
        };
        format!("{why}; exit code {}", self.exit_code())
    }
}

impl From<GuestEvent> for VmExit {
    fn from(e: GuestEvent) -> Self {
        match e {
            GuestEvent::PowerOff => VmExit::PowerOff,
            GuestEvent::Reset(c) => VmExit::Reset(c),
            GuestEvent::Panic => VmExit::GuestPanic,
        }
    }
}

fn signal_name(n: i32) -> &'static str {
    match n {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        _ => "signal",
    }
}

/// The first reason to stop wins; later ones are logged and dropped.
pub struct ExitState {
    reason: Mutex<Option<VmExit>>,
    stopping: AtomicBool,
    /// Wakes the main thread.
    pub evt: EventFd,
}

impl ExitState {
    pub fn new() -> std::io::Result<Self> {
        Ok(ExitState {
            reason: Mutex::new(None),
            stopping: AtomicBool::new(false),
            evt: EventFd::new(libc::EFD_NONBLOCK)?,
        })
    }

    pub fn request(&self, why: VmExit) {
        let mut r = self.reason.lock().unwrap_or_else(PoisonError::into_inner);
        match &*r {
            None => *r = Some(why),
            Some(first) => log::debug!("ignoring {why:?}: already stopping for {first:?}"),
        }
        self.stopping.store(true, Ordering::SeqCst);
        // Cannot fail short of the counter overflowing, which takes 2^64 - 1 writes.
        let _ = self.evt.write(1);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    pub fn reason(&self) -> Option<VmExit> {
        self.reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_crosvm_extended_status() {
        assert_eq!(VmExit::PowerOff.exit_code(), 0);
        assert_eq!(VmExit::Reset(ResetCause::I8042).exit_code(), 32);
        assert_eq!(VmExit::Reset(ResetCause::TripleFault).exit_code(), 32);
        assert_eq!(VmExit::Crash("x".into()).exit_code(), 33);
        assert_eq!(VmExit::GuestPanic.exit_code(), 34);
        assert_eq!(VmExit::HostError("x".into()).exit_code(), 1);
        assert_eq!(VmExit::Signal(libc::SIGTERM).exit_code(), 143);
        assert_eq!(VmExit::Killed("hangup".into()).exit_code(), 137);
        assert!(VmExit::GuestPanic.describe().ends_with("exit code 34"));
    }

    #[test]
    fn first_reason_wins() {
        let s = ExitState::new().unwrap();
        assert!(!s.is_stopping());
        s.request(VmExit::GuestPanic);
        s.request(VmExit::PowerOff);
        assert!(s.is_stopping());
        assert_eq!(s.reason(), Some(VmExit::GuestPanic));
        assert_eq!(s.evt.read().unwrap(), 2);
    }
}
