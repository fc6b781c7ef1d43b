//! `connect-vsock`: a connection to a guest vsock port through the VM's hybrid-vsock socket
//! (docs/vsock.md): connect to the uds, write `CONNECT <port>\n`, read `OK <host_port>\n`.
//! Blocking with a deadline; the control server runs it on a short-lived thread.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::unix_socket::{Connect, connect_nonblocking};

/// Longest answer line accepted (`OK 4294967295\n` is 14 bytes).
const MAX_ANSWER: usize = 32;

/// Why a vsock connection could not be made (the control response's message).
#[derive(Debug, thiserror::Error)]
pub enum VsockConnectError {
    #[error("cannot connect to the vsock socket {path}: {source}")]
    Connect { path: String, source: io::Error },
    #[error("no answer from the guest's port {port} within {timeout:?}")]
    Timeout { port: u32, timeout: Duration },
    #[error("the guest refused port {port} (or nothing listens on it)")]
    Refused { port: u32 },
    #[error("unexpected answer from the vsock device: {0:?}")]
    BadAnswer(String),
    #[error("vsock socket: {0}")]
    Io(io::Error),
}

/// Connects to guest port `port` through the hybrid-vsock socket at `uds`, all within
/// `timeout`. The stream returned is blocking, without timeouts, positioned just after the
/// `OK` line.
pub fn connect_vsock(
    uds: &Path,
    port: u32,
    timeout: Duration,
) -> Result<UnixStream, VsockConnectError> {
    let deadline = Instant::now() + timeout;
    let conn_err = |source| VsockConnectError::Connect {
        path: uds.display().to_string(),
        source,
    };
    let timed_out = || VsockConnectError::Timeout { port, timeout };
    // A full backlog gives EAGAIN (nothing in progress): try again until the deadline.
    let stream = loop {
        match connect_nonblocking(uds) {
            Ok(Connect::Done(s) | Connect::InProgress(s)) => break s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(timed_out());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(conn_err(e)),
        }
    };
    let io_err = VsockConnectError::Io;
    stream.set_nonblocking(false).map_err(io_err)?;
    let left = |d: Instant| {
        let l = d.saturating_duration_since(Instant::now());
        (!l.is_zero()).then_some(l).ok_or_else(timed_out)
    };
    stream
        .set_write_timeout(Some(left(deadline)?))
        .map_err(io_err)?;
    (&stream)
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => timed_out(),
            _ => VsockConnectError::Io(e),
        })?;
    // Byte by byte: what follows the answer belongs to the client.
    let mut answer = Vec::new();
    loop {
        stream
            .set_read_timeout(Some(left(deadline)?))
            .map_err(io_err)?;
        let mut b = [0u8; 1];
        match (&stream).read(&mut b) {
            Ok(0) => return Err(VsockConnectError::Refused { port }),
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) if answer.len() >= MAX_ANSWER => {
                return Err(VsockConnectError::BadAnswer(
                    String::from_utf8_lossy(&answer).into_owned(),
                ));
            }
            Ok(_) => answer.push(b[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(timed_out());
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(VsockConnectError::Refused { port });
            }
            Err(e) => return Err(VsockConnectError::Io(e)),
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    match text.strip_prefix("OK ").map(str::parse::<u32>) {
        Some(Ok(_)) => {}
        _ => return Err(VsockConnectError::BadAnswer(text)),
    }
    stream.set_read_timeout(None).map_err(io_err)?;
    stream.set_write_timeout(None).map_err(io_err)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::testutil::TempDir;
    use std::io::BufRead;
    use std::os::unix::net::UnixListener;

    /// A fake hybrid-vsock device: answers each connection with `answer(port)` (None: close).
    fn fake_device(
        path: &Path,
        answer: impl Fn(u32) -> Option<String> + Send + 'static,
    ) -> std::thread::JoinHandle<()> {
        let l = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                let mut line = String::new();
                std::io::BufReader::new(&s).read_line(&mut line).unwrap();
                let port: u32 = line
                    .strip_prefix("CONNECT ")
                    .and_then(|p| p.trim().parse().ok())
                    .unwrap();
                if port == 1 {
                    return; // stop the fake
                }
                match answer(port) {
                    Some(a) => {
                        s.write_all(a.as_bytes()).unwrap();
                        // An echo of everything after, so the test sees the data path.
                        let mut buf = [0u8; 64];
                        while let Ok(n) = s.read(&mut buf) {
                            if n == 0 || s.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                    None => drop(s),
                }
            }
        })
    }

    #[test]
    fn connect_speaks_the_hybrid_vsock_handshake() {
        let dir = TempDir::new("vsock-connect");
        let uds = dir.path().join("v.sock");
        let t = fake_device(&uds, |port| match port {
            5555 => Some("OK 1073741824\nearly".into()),
            6000 => None,
            6001 => Some("NOPE\n".into()),
            6002 => Some("x".repeat(100)),
            _ => Some(String::new()), // silent
        });
        let mut s = connect_vsock(&uds, 5555, Duration::from_secs(5)).unwrap();
        // Bytes after the OK line are the client's.
        let mut early = [0u8; 5];
        s.read_exact(&mut early).unwrap();
        assert_eq!(&early, b"early");
        s.write_all(b"hi").unwrap();
        let mut hi = [0u8; 2];
        s.read_exact(&mut hi).unwrap();
        assert_eq!(&hi, b"hi");
        drop(s);
        let err = |port, ms| connect_vsock(&uds, port, Duration::from_millis(ms)).unwrap_err();
        assert!(matches!(
            err(6000, 5000),
            VsockConnectError::Refused { port: 6000 }
        ));
        assert!(matches!(err(6001, 5000), VsockConnectError::BadAnswer(a) if a == "NOPE"));
        assert!(matches!(err(6002, 5000), VsockConnectError::BadAnswer(_)));
        let t0 = Instant::now();
        assert!(matches!(
            err(7000, 200),
            VsockConnectError::Timeout { port: 7000, .. }
        ));
        assert!(t0.elapsed() < Duration::from_secs(2));
        let _ = connect_vsock(&uds, 1, Duration::from_millis(100));
        t.join().unwrap();
        // Nobody listening any more: a connect error naming the socket.
        let e = err(5555, 500).to_string();
        assert!(e.contains("v.sock"), "{e}");
    }
}
