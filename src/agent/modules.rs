//! The kernel modules of the guest: `/lib/modules/order` (one module name a line, in load
//! order, written by the initramfs builder) and loading each `/lib/modules/<name>.ko` with
//! `finit_module`.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::AgentError;

/// The longest order file read.
const MAX_ORDER_FILE: u64 = 64 * 1024;

/// The module names in an order file's text: one a line, surrounding whitespace ignored,
/// blank lines and `#` comments skipped. A name must be a plain file name (letters, digits,
/// `_` and `-`), so it cannot point outside the module directory.
pub fn parse_order(path: &Path, text: &str) -> Result<Vec<String>, AgentError> {
    let mut names = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let name = line.trim();
        if name.is_empty() || name.starts_with('#') {
            continue;
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(AgentError::ModuleOrder {
                path: path.to_path_buf(),
                line: i + 1,
                reason: format!("{name:?} is not a module name"),
            });
        }
        names.push(name.to_string());
    }
    Ok(names)
}

/// Reads `<dir>/order` and returns each module's file, `<dir>/<name>.ko`, in order.
pub fn module_files(dir: &Path) -> Result<Vec<PathBuf>, AgentError> {
    let path = dir.join("order");
    let text = read_bounded(&path)?;
    Ok(parse_order(&path, &text)?
        .into_iter()
        .map(|n| dir.join(format!("{n}.ko")))
        .collect())
}

fn read_bounded(path: &Path) -> Result<String, AgentError> {
    use std::io::Read;
    let io_err = |op, source| AgentError::Io {
        op,
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(|e| io_err("open", e))?;
    let mut text = String::new();
    file.take(MAX_ORDER_FILE)
        .read_to_string(&mut text)
        .map_err(|e| io_err("read", e))?;
    Ok(text)
}

/// Loads every module listed in `<dir>/order`. A module that fails to load is logged and
/// skipped (the agent reports what is missing later, when it needs it); a module already
/// loaded is fine. Returns how many were loaded.
pub fn load_all(dir: &Path) -> Result<usize, AgentError> {
    let mut loaded = 0;
    for file in module_files(dir)? {
        match load(&file) {
            Ok(()) => loaded += 1,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => crate::agent_log!("cannot load module {file:?}: {e}"),
        }
    }
    Ok(loaded)
}

/// `finit_module(fd, "", 0)`.
fn load(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    // SAFETY: finit_module reads the open file and the NUL-terminated empty parameter string,
    // which outlives the call; it touches no other memory of this process.
    let r = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            c"".as_ptr(),
            0 as libc::c_int,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::testutil::TempDir;

    #[test]
    fn order_lists_names_in_order() {
        let text = "# from the builder\nvirtio\n  virtio_ring \n\npvpanic-mmio\n";
        assert_eq!(
            parse_order(Path::new("order"), text).unwrap(),
            ["virtio", "virtio_ring", "pvpanic-mmio"]
        );
        let dir = TempDir::new("agent-modules");
        std::fs::write(dir.path().join("order"), "ext4\njbd2\n").unwrap();
        assert_eq!(
            module_files(dir.path()).unwrap(),
            [dir.path().join("ext4.ko"), dir.path().join("jbd2.ko")]
        );
    }

    #[test]
    fn names_cannot_leave_the_directory() {
        for bad in ["../evil", "a/b", "x.ko y", "/abs", "ext4.ko\u{0}"] {
            let err = parse_order(Path::new("/lib/modules/order"), &format!("ok\n{bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("line 2"), "{err}");
        }
        let dir = TempDir::new("agent-modules-missing");
        let err = module_files(dir.path()).unwrap_err().to_string();
        assert!(err.contains("order"), "{err}");
    }

    #[test]
    fn a_failed_load_is_not_fatal() {
        // Not root, or not a module: every load fails, and load_all still returns.
        let dir = TempDir::new("agent-modules-load");
        std::fs::write(dir.path().join("order"), "nothere\nnotamodule\n").unwrap();
        std::fs::write(dir.path().join("notamodule.ko"), b"not an ELF").unwrap();
        assert_eq!(load_all(dir.path()).unwrap(), 0);
    }
}
