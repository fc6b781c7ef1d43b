//! Signals: SIGTERM/SIGINT/SIGHUP are blocked in every thread and read by the main thread
//! through a signalfd (a clean stop), and so is SIGUSR1 (a state dump on stderr, see
//! [`super::dump`]); a real-time signal kicks vCPU threads out of KVM_RUN.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Signals that stop the VM cleanly.
pub const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];
/// The signal that asks for a state dump on stderr.
pub const DUMP_SIGNAL: libc::c_int = libc::SIGUSR1;

fn stop_sigset() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initializes it before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut set);
        for s in STOP_SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        libc::sigaddset(&mut set, DUMP_SIGNAL);
    }
    set
}

/// Blocks the stop signals and the dump signal in the calling thread (threads spawned later inherit the mask) and
/// ignores SIGPIPE process-wide (a closed output pipe is an error return, not a death).
pub fn block_stop_signals() -> io::Result<()> {
    let set = stop_sigset();
    // SAFETY: `set` is initialized; the old mask is not wanted.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    ignore_sigpipe()
}

/// Ignores SIGPIPE process-wide, as the VMM runs: a write to a closed socket or pipe is an
/// `EPIPE` error, not a death. (Rust binaries start that way; harnesses with their own
/// `main`, such as libFuzzer's, do not.)
pub fn ignore_sigpipe() -> io::Result<()> {
    // SAFETY: SIG_IGN is a valid disposition for SIGPIPE.
    if unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A non-blocking signalfd for the stop signals and the dump signal.
pub fn stop_signalfd() -> io::Result<OwnedFd> {
    let set = stop_sigset();
    // SAFETY: `set` is initialized; -1 asks for a new fd.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by signalfd and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads one pending signal number from a signalfd, if any.
pub fn read_signal(fd: &OwnedFd) -> Option<i32> {
    // SAFETY: signalfd_siginfo is plain data.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: `info` is a writable buffer of exactly `size` bytes.
    let n = unsafe {
        libc::read(
            fd.as_raw_fd(),
            (&mut info as *mut libc::signalfd_siginfo).cast(),
            size,
        )
    };
    (n == size as isize).then_some(info.ssi_signo as i32)
}

/// The signal used to kick vCPU threads out of KVM_RUN.
pub fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}
