//! The run lock: an exclusive `flock` on `<vm>/lock`, held while the VM runs by the monitor
//! and, through an inherited descriptor, by the VMM itself, so the lock is released only when
//! both are gone. Commands that need a stopped VM (set-config, delete, export) hold it while
//! they work, so a `run` cannot start under them.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::ManagerError;
use super::home::{LOCK, VmDir};

/// A held run lock; released when dropped (and every inherited copy is closed).
#[derive(Debug)]
pub struct RunLock {
    file: File,
}

impl RunLock {
    /// Takes the lock without waiting: `Ok(None)` when someone holds it (the VM runs).
    pub fn try_acquire(vm: &VmDir) -> Result<Option<RunLock>, ManagerError> {
        try_lock_file(&vm.file(LOCK))
    }

    /// The descriptor, for passing the lock to a child process.
    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Makes the descriptor survive `exec` (the monitor passes the lock on to the VMM).
    pub fn inherit_on_exec(&self) -> io::Result<()> {
        set_cloexec(self.raw_fd(), false)
    }

    /// A lock whose descriptor was inherited from the parent process (`vm monitor`).
    ///
    /// # Safety
    /// `fd` must be an open descriptor this process owns and nothing else uses.
    pub unsafe fn from_inherited(fd: RawFd) -> io::Result<RunLock> {
        use std::os::fd::FromRawFd;
        // SAFETY: F_GETFD only reads the descriptor's flags; it fails with EBADF if closed.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the caller guarantees `fd` is open and owned by us alone.
        let file = unsafe { File::from_raw_fd(fd) };
        set_cloexec(fd, true)?;
        Ok(RunLock { file })
    }
}

/// True while the VM runs (someone holds its lock).
pub fn is_running(vm: &VmDir) -> Result<bool, ManagerError> {
    if !vm.path().is_dir() {
        return Ok(false);
    }
    Ok(RunLock::try_acquire(vm)?.is_none())
}

fn try_lock_file(path: &Path) -> Result<Option<RunLock>, ManagerError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(ManagerError::io("open", path))?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(Some(RunLock { file }));
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(None)
    } else {
        Err(ManagerError::Io {
            op: "flock",
            path: path.to_path_buf(),
            source: e,
        })
    }
}

fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: F_GETFD/F_SETFD only change the descriptor's flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let new = if on {
        flags | libc::FD_CLOEXEC
    } else {
        flags & !libc::FD_CLOEXEC
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, new) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::home::Home;

    #[test]
    fn exclusive_until_dropped() {
        let t = crate::disk::testutil::TempDir::new("mgr-lock");
        let home = Home::at(t.path());
        let vm = home.vm("a").unwrap();
        std::fs::create_dir_all(vm.path()).unwrap();
        assert!(!is_running(&vm).unwrap());
        let held = RunLock::try_acquire(&vm).unwrap().unwrap();
        assert!(is_running(&vm).unwrap());
        assert!(RunLock::try_acquire(&vm).unwrap().is_none());
        drop(held);
        assert!(!is_running(&vm).unwrap());
        // A VM directory that does not exist is not running.
        assert!(!is_running(&home.vm("b").unwrap()).unwrap());
    }
}
