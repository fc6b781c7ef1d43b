//! Unix socket helpers: binding the listener (replacing a stale socket file), the calls std
//! does not offer: a non-blocking `connect` to a Unix socket path (std's blocks while the
//! listener's backlog is full, which would stall the event loop), and switching an fd to
//! non-blocking mode.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use super::VsockError;

/// How a non-blocking connect went.
#[derive(Debug)]
pub enum Connect {
    Done(UnixStream),
    /// EINPROGRESS: wait for EPOLLOUT, then read SO_ERROR.
    InProgress(UnixStream),
}

/// Connects to the stream socket at `path` without blocking. A listener whose backlog is full
/// gives `WouldBlock` (EAGAIN: nothing is in progress, try again later); no listener gives
/// `ConnectionRefused`, no file `NotFound`.
pub fn connect_nonblocking(path: &Path) -> io::Result<Connect> {
    let bytes = path.as_os_str().as_bytes();
    let mut addr = libc::sockaddr_un {
        sun_family: libc::AF_UNIX as libc::sa_family_t,
        sun_path: [0; 108],
    };
    // The path must leave room for its NUL terminator.
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a usable Unix socket path",
        ));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: plain syscall with constant arguments; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `addr` is a valid, initialised sockaddr_un that outlives the call, and `len`
    // does not exceed its size; the result is checked.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&raw const addr).cast::<libc::sockaddr>(),
            len as libc::socklen_t,
        )
    };
    let stream = UnixStream::from(fd);
    if rc == 0 {
        return Ok(Connect::Done(stream));
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINPROGRESS) => Ok(Connect::InProgress(stream)),
        _ => Err(err),
    }
}

/// Puts `fd` in non-blocking mode.
pub fn set_nonblocking(fd: &impl AsRawFd) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: F_GETFL on an fd the caller owns only reads its flags; the result is checked.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: F_SETFL with the flags just read plus O_NONBLOCK changes only that fd's mode.
    let rc = unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Binds the listener at `path`, replacing a stale socket file (one nobody listens on).
pub fn bind_listener(path: &Path) -> Result<(UnixListener, (u64, u64)), VsockError> {
    let bind_err = |source| VsockError::Bind {
        path: path.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(md) if !md.file_type().is_socket() => {
            return Err(VsockError::NotASocket(path.to_owned()));
        }
        Ok(_) => match connect_nonblocking(path) {
            // Connected, or refused only because the backlog is full: somebody listens.
            Ok(_) => return Err(VsockError::InUse(path.to_owned())),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(VsockError::InUse(path.to_owned()));
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                log::info!("vsock: replacing the stale socket {}", path.display());
                match std::fs::remove_file(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(bind_err(e)),
                    _ => {}
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(bind_err(e)),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    let md = std::fs::symlink_metadata(path).map_err(bind_err)?;
    Ok((listener, (md.dev(), md.ino())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    use vmm_sys_util::tempdir::TempDir;

    #[test]
    fn vsock_nonblocking_connect() {
        let dir = TempDir::new_with_prefix("/tmp/vsock-unix").unwrap();
        let path = dir.as_path().join("s");
        assert_eq!(
            connect_nonblocking(&path).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        let l = UnixListener::bind(&path).unwrap();
        let Connect::Done(mut c) = connect_nonblocking(&path).unwrap() else {
            panic!("unix connect is immediate");
        };
        let (mut s, _) = l.accept().unwrap();
        c.write_all(b"hi").unwrap();
        let mut b = [0u8; 2];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"hi");
        drop(l);
        assert_eq!(
            connect_nonblocking(&path).unwrap_err().kind(),
            io::ErrorKind::ConnectionRefused
        );
        let long = dir.as_path().join("x".repeat(200));
        assert_eq!(
            connect_nonblocking(&long).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
