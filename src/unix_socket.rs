//! Unix socket helpers shared by the vsock device and the control socket: binding a listener
//! (replacing a stale socket file, refusing a live one), removing the file again only if it
//! is still ours, the peer's uid (SO_PEERCRED), and the calls std does not offer: a
//! non-blocking `connect` to a Unix socket path (std's blocks while the listener's backlog is
//! full, which would stall an event loop) and switching an fd to non-blocking mode.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Why a listener could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("{}: already in use by a running listener", .0.display())]
    InUse(PathBuf),
    #[error("{}: the path exists and is not a socket", .0.display())]
    NotASocket(PathBuf),
    #[error("{}: {source}", path.display())]
    Bind { path: PathBuf, source: io::Error },
}

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

/// A bound listener whose socket file is removed when this value is dropped, unless another
/// file has taken its place meanwhile (same path, different inode).
#[derive(Debug)]
pub struct BoundSocket {
    pub listener: UnixListener,
    path: PathBuf,
    id: (u64, u64),
}

impl BoundSocket {
    /// Binds a non-blocking listener at `path`, replacing a stale socket file (one nobody
    /// listens on). A live socket is [`SocketError::InUse`]; any other file is left alone
    /// ([`SocketError::NotASocket`]).
    pub fn bind(path: &Path) -> Result<BoundSocket, SocketError> {
        let (listener, id) = bind_listener(path)?;
        Ok(BoundSocket {
            listener,
            path: path.to_owned(),
            id,
        })
    }

    /// The path the socket was bound at.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        remove_if_ours(&self.path, self.id);
    }
}

/// Removes the socket file at `path` if it is still the one with `id` (device, inode).
pub fn remove_if_ours(path: &Path, id: (u64, u64)) {
    if let Ok(md) = std::fs::symlink_metadata(path)
        && (md.dev(), md.ino()) == id
    {
        let _ = std::fs::remove_file(path);
    }
}

/// Binds the listener at `path`, replacing a stale socket file (one nobody listens on);
/// returns it (non-blocking) with the file's (device, inode).
pub fn bind_listener(path: &Path) -> Result<(UnixListener, (u64, u64)), SocketError> {
    let bind_err = |source| SocketError::Bind {
        path: path.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(md) if !md.file_type().is_socket() => {
            return Err(SocketError::NotASocket(path.to_owned()));
        }
        Ok(_) => match connect_nonblocking(path) {
            // Connected, or refused only because the backlog is full: somebody listens.
            Ok(_) => return Err(SocketError::InUse(path.to_owned())),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(SocketError::InUse(path.to_owned()));
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                log::info!("replacing the stale socket {}", path.display());
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

/// The uid of the process at the other end of a connected Unix socket (SO_PEERCRED).
pub fn peer_uid(sock: &impl AsRawFd) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a writable ucred and `len` holds its size; the kernel writes at most
    // `len` bytes; the result is checked.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// This process's effective uid.
pub fn own_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    use vmm_sys_util::tempdir::TempDir;

    #[test]
    fn nonblocking_connect() {
        let dir = TempDir::new_with_prefix("/tmp/unix-socket").unwrap();
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

    #[test]
    fn bound_socket_replaces_stale_refuses_live_and_removes_only_its_own_file() {
        let dir = TempDir::new_with_prefix("/tmp/unix-socket").unwrap();
        let path = dir.as_path().join("c.sock");
        drop(UnixListener::bind(&path).unwrap());
        let s = BoundSocket::bind(&path).unwrap();
        assert!(matches!(
            BoundSocket::bind(&path),
            Err(SocketError::InUse(_))
        ));
        // Our own uid at the other end.
        let c = UnixStream::connect(&path).unwrap();
        let (srv, _) = s.listener.accept().unwrap();
        assert_eq!(peer_uid(&srv).unwrap(), own_uid());
        assert_eq!(peer_uid(&c).unwrap(), own_uid());
        drop((c, srv));
        drop(s);
        assert!(!path.exists());
        // A file that replaced ours is left alone.
        let s = BoundSocket::bind(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"x").unwrap();
        drop(s);
        assert_eq!(std::fs::read(&path).unwrap(), b"x");
        assert!(matches!(
            BoundSocket::bind(&path),
            Err(SocketError::NotASocket(_))
        ));
    }
}
