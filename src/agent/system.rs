//! The syscalls of PID 1, each behind a small function: mounting, the console, the failure
//! string on ttyS1, power off. The payload steps mount and format through the [`System`]
//! trait, so the whole sequence runs in unit tests with a fake.

use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Stdio};

use super::AgentError;
use crate::lifecycle::ErrorCode;

/// Where the agent writes the failure string (micro-vmm's log port).
pub const FAILURE_TTY: &str = "/dev/ttyS1";
/// busybox in the guest.
pub const BUSYBOX: &str = "/bin/busybox";

/// What the payload steps need from the kernel, mocked in tests.
pub trait System: Sync {
    /// Mounts a fresh tmpfs at `dir` (created if missing).
    fn mount_tmpfs(&self, dir: &Path) -> Result<(), AgentError>;
    /// Makes the mount at `dir` read-only.
    fn remount_read_only(&self, dir: &Path) -> Result<(), AgentError>;
    /// Writes an empty ext2 file system on `dev` (busybox `mke2fs`).
    fn format_ext2(&self, dev: &Path) -> Result<(), AgentError>;
    /// Mounts `dev` at `dir` (created if missing) with the ext4 driver.
    fn mount_ext4(&self, dev: &Path, dir: &Path) -> Result<(), AgentError>;
}

/// The real kernel.
pub struct LinuxSystem;

impl System for LinuxSystem {
    fn mount_tmpfs(&self, dir: &Path) -> Result<(), AgentError> {
        mkdir(dir)?;
        mount(
            "tmpfs",
            dir,
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            "mode=0755",
        )
    }

    fn remount_read_only(&self, dir: &Path) -> Result<(), AgentError> {
        mount(
            "none",
            dir,
            "",
            libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
            "",
        )
    }

    fn format_ext2(&self, dev: &Path) -> Result<(), AgentError> {
        let out = Command::new(BUSYBOX)
            .arg("mke2fs")
            .arg("-q")
            .arg(dev)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|source| AgentError::Io {
                op: "run busybox mke2fs on",
                path: dev.to_path_buf(),
                source,
            })?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(out.stderr.get(..512).unwrap_or(&out.stderr));
            return Err(AgentError::Storage {
                path: dev.to_path_buf(),
                reason: format!("mke2fs failed ({}): {}", out.status, err.trim()),
            });
        }
        Ok(())
    }

    fn mount_ext4(&self, dev: &Path, dir: &Path) -> Result<(), AgentError> {
        mkdir(dir)?;
        mount(
            &dev.to_string_lossy(),
            dir,
            "ext4",
            libc::MS_NOSUID | libc::MS_NODEV,
            "",
        )
    }
}

/// `mkdir -p`.
pub fn mkdir(dir: &Path) -> Result<(), AgentError> {
    fs::create_dir_all(dir).map_err(|source| AgentError::Io {
        op: "create directory",
        path: dir.to_path_buf(),
        source,
    })
}

fn cstring(s: &[u8], what: &str, target: &Path) -> Result<CString, AgentError> {
    CString::new(s).map_err(|_| AgentError::Mount {
        what: what.to_string(),
        target: target.to_path_buf(),
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })
}

/// `mount(2)`.
pub fn mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> Result<(), AgentError> {
    let what = format!("{source} ({fstype})");
    let c_source = cstring(source.as_bytes(), &what, target)?;
    let c_target = cstring(target.as_os_str().as_bytes(), &what, target)?;
    let c_fstype = cstring(fstype.as_bytes(), &what, target)?;
    let c_data = cstring(data.as_bytes(), &what, target)?;
    // SAFETY: every pointer is a NUL-terminated string that outlives the call; mount reads
    // them and touches no other memory of this process.
    let r = unsafe {
        libc::mount(
            c_source.as_ptr(),
            c_target.as_ptr(),
            c_fstype.as_ptr(),
            flags,
            c_data.as_ptr().cast(),
        )
    };
    if r != 0 {
        return Err(AgentError::Mount {
            what,
            target: target.to_path_buf(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Step 1's mounts: `/proc`, `/sys`, `/dev` (devtmpfs), `/run` and `/tmp` (tmpfs). `/dev` may
/// already be mounted by the kernel (`CONFIG_DEVTMPFS_MOUNT`); that is fine.
pub fn mount_basics() -> Result<(), AgentError> {
    let nosuid = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    for (source, target, fstype, flags, data) in [
        ("proc", "/proc", "proc", nosuid, ""),
        ("sysfs", "/sys", "sysfs", nosuid, ""),
        ("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "mode=0755"),
        (
            "tmpfs",
            "/run",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            "mode=0755",
        ),
        (
            "tmpfs",
            "/tmp",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            "mode=1777",
        ),
    ] {
        let target = Path::new(target);
        mkdir(target)?;
        match mount(source, target, fstype, flags, data) {
            Err(AgentError::Mount { source: e, .. })
                if fstype == "devtmpfs" && e.raw_os_error() == Some(libc::EBUSY) => {}
            other => other?,
        }
    }
    Ok(())
}

/// Points stdin at `/dev/null` and stdout and stderr at `console`, so log lines and anything
/// a library prints reach the console. (The kernel starts init with the three on
/// `/dev/console` when it could open it; they may also be closed.)
pub fn attach_console(console: &Path) -> Result<(), AgentError> {
    let open = |path: &Path, write: bool| {
        OpenOptions::new()
            .read(!write)
            .write(write)
            .open(path)
            .map(std::os::fd::IntoRawFd::into_raw_fd)
            .map_err(|source| AgentError::Io {
                op: "open",
                path: path.to_path_buf(),
                source,
            })
    };
    // Raw descriptors: with 0, 1 or 2 closed, open() returns one of them, which must then
    // stay open.
    let null = open(Path::new("/dev/null"), false)?;
    let con = open(console, true)?;
    let mut result = Ok(());
    for (from, to) in [(null, 0), (con, 1), (con, 2)] {
        // SAFETY: dup2 on descriptors this process owns; `to` is one of the standard
        // descriptors, which the rest of the program only uses through std's handles.
        if from != to && unsafe { libc::dup2(from, to) } < 0 {
            result = Err(AgentError::Io {
                op: "dup2 onto a standard descriptor",
                path: console.to_path_buf(),
                source: io::Error::last_os_error(),
            });
        }
    }
    for fd in [null, con] {
        if fd > 2 {
            // SAFETY: `fd` came from into_raw_fd above and nothing else refers to it.
            unsafe { libc::close(fd) };
        }
    }
    result
}

/// The failure string for an error (docs/lifecycle.md): the reason's name, and for
/// `UNKNOWN` `|` and the message on one line.
pub fn failure_string(code: ErrorCode, message: &str) -> String {
    let name = code.failure_reason().name();
    match code {
        ErrorCode::Unknown => {
            let text: String = message
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(1024)
                .collect();
            format!("{name}|{text}")
        }
        _ => name.to_string(),
    }
}

/// Writes a failure string and a newline to `tty` (best effort: logged if it fails).
pub fn write_failure(tty: &Path, text: &str) {
    let r = OpenOptions::new()
        .write(true)
        .open(tty)
        .and_then(|mut f| f.write_all(format!("{text}\n").as_bytes()));
    if let Err(e) = r {
        crate::agent_log!("cannot write the failure reason to {tty:?}: {e}");
    }
}

/// Syncs the file systems and powers the VM off. Never returns: if the power-off call
/// fails, halts; if that fails too, sleeps forever (PID 1 must not exit).
pub fn power_off() -> ! {
    crate::agent_debug!("powering off");
    // SAFETY: sync and reboot take no pointers; reboot with POWER_OFF ends the VM.
    unsafe {
        libc::sync();
        libc::reboot(libc::LINUX_REBOOT_CMD_POWER_OFF);
        libc::reboot(libc::LINUX_REBOOT_CMD_HALT);
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::testutil::TempDir;

    #[test]
    fn failure_strings_are_recognised_by_the_host() {
        use crate::lifecycle::StopReason;
        assert_eq!(
            failure_string(ErrorCode::PayloadVerificationFailed, "hash mismatch"),
            "MICRODROID_PAYLOAD_VERIFICATION_FAILED"
        );
        let s = failure_string(ErrorCode::Unknown, "line one\nline two|x");
        assert_eq!(s, "MICRODROID_UNKNOWN_RUNTIME_ERROR|line one line two|x");
        assert_eq!(
            StopReason::from_failure_string(&s),
            Some(StopReason::MicrodroidUnknownRuntimeError)
        );
        assert!(failure_string(ErrorCode::Unknown, &"é".repeat(5000)).len() < 2200);

        let dir = TempDir::new("agent-failure");
        let tty = dir.file("ttyS1", b"");
        write_failure(&tty, "MICRODROID_INVALID_PAYLOAD_CONFIG");
        assert_eq!(
            fs::read_to_string(&tty).unwrap(),
            "MICRODROID_INVALID_PAYLOAD_CONFIG\n"
        );
        // A missing tty is logged, not fatal.
        write_failure(&dir.path().join("nope/ttyS1"), "X");
    }

    #[test]
    fn mount_errors_name_the_target() {
        let err = mount("x\0y", Path::new("/mnt"), "tmpfs", 0, "")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/mnt"), "{err}");
    }
}
