//! Replacing a file in one step: the content goes to a temporary file beside it, is synced,
//! and is renamed into place, so a reader sees the old file or the new one, never half of
//! one, and a failure leaves no temporary file behind. The directory is synced after the
//! rename (and after a removal, [`remove_file_durably`]), so a power loss cannot bring back
//! the old name's content.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A fresh temporary name in `path`'s directory: `.<name>.tmp-<pid>-<n>`, unique within this
/// process.
pub fn temp_beside(path: &Path) -> io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"))?;
    Ok(path.with_file_name(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )))
}

/// Replaces `path` with `data` (a new file created with `mode`, before the umask).
pub fn replace_file(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let tmp = temp_beside(path)?;
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(parent_dir(path))
}

/// The directory holding `path` (`.` for a bare name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// fsyncs a directory, so entries created, renamed or removed in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Removes `path` if it exists and syncs its directory; `Ok(false)` when there was nothing to
/// remove.
pub fn remove_file_durably(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(parent_dir(path)).map(|()| true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Clears `O_NONBLOCK` on `file` (set at open only so that opening a FIFO cannot block).
pub fn clear_nonblocking(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: F_GETFL on an fd this function borrows only reads its flags; checked below.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: F_SETFL with the flags just read minus O_NONBLOCK changes only that fd's mode.
    let rc = unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Opens `path` for reading without ever waiting in `open` (a FIFO nobody writes to opens at
/// once and then reads as empty); the file is blocking again for the reads.
pub fn open_read_no_wait(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    clear_nonblocking(&f)?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::testutil::TempDir;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_in_one_step_and_leaves_nothing_behind() {
        let t = TempDir::new("fsutil");
        let p = t.file("f", b"old");
        replace_file(&p, b"new", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let names: Vec<_> = fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f")]);
        // A failure (the target is a directory) leaves the temporary file removed.
        std::fs::create_dir(t.path().join("d")).unwrap();
        assert!(replace_file(&t.path().join("d"), b"x", 0o600).is_err());
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 2);
        assert!(replace_file(Path::new("/"), b"x", 0o600).is_err());
        assert_ne!(temp_beside(&p).unwrap(), temp_beside(&p).unwrap());
    }

    #[test]
    fn durable_removal_and_directory_sync() {
        let t = TempDir::new("fsutil-rm");
        let p = t.file("f", b"x");
        assert!(remove_file_durably(&p).unwrap());
        assert!(!p.exists());
        assert!(!remove_file_durably(&p).unwrap());
        // Removing a directory with it is an error, not a silent success.
        std::fs::create_dir(t.path().join("d")).unwrap();
        assert!(remove_file_durably(&t.path().join("d")).is_err());
        sync_dir(t.path()).unwrap();
        assert!(sync_dir(&t.path().join("missing")).is_err());
        assert_eq!(parent_dir(Path::new("f")), Path::new("."));
        assert_eq!(parent_dir(Path::new("/a/f")), Path::new("/a"));
    }
}
