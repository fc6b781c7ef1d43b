//! The connection to the host (docs/lifecycle.md, "Transport"): an AF_VSOCK stream to CID 2,
//! port [`LIFECYCLE_PORT`], events written as JSON lines, host requests read on a thread.
//! Any [`Link`] works (a Unix socket pair in tests).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use super::AgentError;
use super::lines::{Line, LineReader};
use super::run::Signal;
use crate::lifecycle::protocol::{self, GuestEvent, HostRequest};
use crate::lifecycle::{LIFECYCLE_PORT, MAX_LINE};

/// The host's vsock CID.
pub const HOST_CID: u32 = libc::VMADDR_CID_HOST;
/// Between connection attempts.
const RETRY: Duration = Duration::from_millis(100);

/// A byte stream to the host that can be read on another thread and half-closed.
pub trait Link: Read + Write + Send + 'static {
    /// A second handle on the same connection (for the reader thread).
    fn try_clone_link(&self) -> io::Result<Self>
    where
        Self: Sized;
    /// Shuts the connection down for writing: the host reads end of file.
    fn shutdown_write(&self) -> io::Result<()>;
}

impl Link for UnixStream {
    fn try_clone_link(&self) -> io::Result<Self> {
        self.try_clone()
    }

    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

/// A connected AF_VSOCK stream socket.
#[derive(Debug)]
pub struct VsockStream {
    /// Plain read(2) and write(2) on the socket.
    file: File,
}

impl VsockStream {
    /// One connection attempt to `cid`:`port`.
    pub fn connect(cid: u32, port: u32) -> io::Result<VsockStream> {
        // SAFETY: socket takes no pointers; the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new socket this function owns; OwnedFd closes it on every path.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_vm is plain data; all zeros is a valid value.
        let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
        addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
        addr.svm_cid = cid;
        addr.svm_port = port;
        loop {
            // SAFETY: `addr` is a valid sockaddr_vm of the size passed, alive for the call.
            let r = unsafe {
                libc::connect(
                    fd.as_raw_fd(),
                    (&raw const addr).cast(),
                    std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
                )
            };
            if r == 0 {
                return Ok(VsockStream {
                    file: File::from(fd),
                });
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Read for VsockStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}

impl Write for VsockStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Link for VsockStream {
    fn try_clone_link(&self) -> io::Result<Self> {
        Ok(VsockStream {
            file: self.file.try_clone()?,
        })
    }

    fn shutdown_write(&self) -> io::Result<()> {
        // SAFETY: shutdown on a socket this value owns; no pointers.
        if unsafe { libc::shutdown(self.file.as_raw_fd(), libc::SHUT_WR) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Calls `attempt` until it succeeds or `timeout` passes (sleeping [`RETRY`] between
/// attempts); the error is the last attempt's.
pub fn retry_for<T>(
    timeout: Duration,
    mut attempt: impl FnMut() -> io::Result<T>,
) -> Result<T, io::Error> {
    let start = Instant::now();
    loop {
        match attempt() {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() >= timeout => return Err(e),
            Err(_) => std::thread::sleep(RETRY),
        }
    }
}

/// Connects to the host's lifecycle port, retrying for `timeout` (the vsock transport may
/// still be probing, or the host not listening yet).
pub fn connect_host(timeout: Duration) -> Result<VsockStream, AgentError> {
    retry_for(timeout, || VsockStream::connect(HOST_CID, LIFECYCLE_PORT)).map_err(|source| {
        AgentError::Connect {
            cid: HOST_CID,
            port: LIFECYCLE_PORT,
            waited: timeout,
            source,
        }
    })
}

/// The agent's side of the connection: writes events; a reader thread turns host requests
/// into [`Signal`]s.
pub struct HostChannel<L: Link> {
    /// `None` once writing failed (the host is gone): later events are only logged.
    link: Option<L>,
}

impl<L: Link> HostChannel<L> {
    pub fn new(link: L) -> HostChannel<L> {
        HostChannel { link: Some(link) }
    }

    /// Sends one event. A write error is logged and ends sending (the host will see the VM
    /// stop; the agent carries on to power off).
    pub fn send(&mut self, event: &GuestEvent) {
        crate::agent_debug!("event {event:?}");
        let Some(link) = self.link.as_mut() else {
            return;
        };
        if let Err(e) = link.write_all(&protocol::encode_event(event)) {
            crate::agent_log!("cannot send to the host: {e}");
            self.link = None;
        }
    }

    /// Starts the thread that reads host requests: `shutdown` becomes
    /// [`Signal::ShutdownRequested`], end of file or an error [`Signal::HostClosed`]. Bad lines
    /// are logged and skipped, as the host does with the agent's.
    pub fn start_reader(&self, signals: Sender<Signal>) -> io::Result<()> {
        let Some(link) = self.link.as_ref() else {
            // Nothing to read: tell the waiter at once.
            let _ = signals.send(Signal::HostClosed);
            return Ok(());
        };
        let reader = link.try_clone_link()?;
        std::thread::Builder::new()
            .name("host-reader".into())
            .spawn(move || read_requests(reader, &signals))?;
        Ok(())
    }

    /// Half-closes the connection after the last event.
    pub fn finish(&mut self) {
        if let Some(link) = self.link.take()
            && let Err(e) = link.shutdown_write()
        {
            crate::agent_log!("cannot shut the host connection down: {e}");
        }
    }
}

fn read_requests<R: Read>(reader: R, signals: &Sender<Signal>) {
    let mut lines = LineReader::new(reader, MAX_LINE);
    loop {
        match lines.next_line() {
            Ok(Line::Complete(line)) => match protocol::decode_request(&line) {
                Ok(HostRequest::Shutdown) => {
                    crate::agent_log!("the host asks for a shutdown");
                    if signals.send(Signal::ShutdownRequested).is_err() {
                        return;
                    }
                }
                Err(e) => crate::agent_log!("ignoring a bad host request: {e}"),
            },
            Ok(Line::TooLong) => {
                crate::agent_log!("ignoring a host request longer than {MAX_LINE} bytes")
            }
            Ok(Line::Eof) => break,
            Err(e) => {
                crate::agent_log!("reading from the host: {e}");
                break;
            }
        }
    }
    let _ = signals.send(Signal::HostClosed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::ErrorCode;
    use std::sync::mpsc;

    #[test]
    fn events_are_lines_and_requests_become_signals() {
        let (agent, mut host) = UnixStream::pair().unwrap();
        let mut ch = HostChannel::new(agent);
        let (tx, rx) = mpsc::channel();
        ch.start_reader(tx).unwrap();
        ch.send(&GuestEvent::Hello { version: 1 });
        ch.send(&GuestEvent::Error {
            code: ErrorCode::Unknown,
            message: "x".repeat(10_000),
        });
        ch.finish();
        let mut got = Vec::new();
        host.read_to_end(&mut got).unwrap();
        let lines: Vec<&[u8]> = got.split(|&b| b == b'\n').collect();
        assert_eq!(lines.len(), 3, "two lines and the empty rest");
        assert_eq!(lines[0], br#"{"event":"hello","version":1}"#);
        assert!(lines[1].len() < MAX_LINE);
        assert!(protocol::decode_event(lines[1]).is_ok());

        // Garbage and a too-long line are skipped; shutdown gets through; EOF is reported.
        host.write_all(b"garbage\n").unwrap();
        host.write_all(&vec![b'{'; 3 * MAX_LINE]).unwrap();
        host.write_all(b"\n{\"request\":\"shutdown\"}\n").unwrap();
        host.shutdown(std::net::Shutdown::Write).unwrap();
        let t = Duration::from_secs(5);
        assert!(matches!(rx.recv_timeout(t), Ok(Signal::ShutdownRequested)));
        assert!(matches!(rx.recv_timeout(t), Ok(Signal::HostClosed)));
    }

    #[test]
    fn a_vanished_host_stops_sending_without_failing() {
        let (agent, host) = UnixStream::pair().unwrap();
        drop(host);
        let mut ch = HostChannel::new(agent);
        ch.send(&GuestEvent::Started);
        assert!(ch.link.is_none());
        ch.send(&GuestEvent::Ready);
        let (tx, rx) = mpsc::channel();
        ch.start_reader(tx).unwrap();
        assert!(matches!(rx.recv(), Ok(Signal::HostClosed)));
        ch.finish();
    }

    #[test]
    fn retries_until_the_deadline() {
        let mut n = 0;
        let t = Instant::now();
        let r: io::Result<()> = retry_for(Duration::from_millis(250), || {
            n += 1;
            Err(io::Error::from_raw_os_error(libc::ENODEV))
        });
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::ENODEV));
        assert!(t.elapsed() >= Duration::from_millis(250));
        assert!((3..=5).contains(&n), "{n}");
        let mut m = 0;
        let v = retry_for(Duration::from_secs(5), || {
            m += 1;
            if m < 3 {
                Err(io::Error::from(io::ErrorKind::ConnectionRefused))
            } else {
                Ok(m)
            }
        });
        assert_eq!(v.unwrap(), 3);
    }
}
