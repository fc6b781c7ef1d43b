//! The control-socket client (docs/api.md, version 1): newline-delimited JSON requests and
//! responses over a Unix stream socket, events after `subscribe`, and the stream descriptor
//! `connect-vsock` passes with SCM_RIGHTS.
//!
//! Everything read is untrusted: lines are bounded ([`MAX_LINE`]), responses are checked for
//! their `id`, and each wait has a timeout.

use std::io::{self, Write};
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::lifecycle::StopReason;

use super::ManagerError;

/// Longest line accepted, newline included.
pub const MAX_LINE: usize = 64 << 10;
/// How long a request waits for its response.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(15);

/// One connection to a VM's control socket.
pub struct Client {
    path: PathBuf,
    stream: UnixStream,
    buf: Vec<u8>,
    next_id: u64,
}

/// The `stopped` event: the last one a subscriber gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    pub reason: StopReason,
    pub exit_code: Option<i32>,
}

impl Client {
    /// Connects to the socket at `path`.
    pub fn connect(path: &Path) -> Result<Client, ManagerError> {
        let stream = UnixStream::connect(path).map_err(|e| ManagerError::Control {
            path: path.to_path_buf(),
            reason: format!("connect: {e}"),
        })?;
        Ok(Client {
            path: path.to_path_buf(),
            stream,
            buf: Vec::new(),
            next_id: 1,
        })
    }

    fn error(&self, reason: impl Into<String>) -> ManagerError {
        ManagerError::Control {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// Sends one request and returns its `result` (an `error` response is an error naming
    /// its code and message) and any descriptors that came with the response.
    pub fn call(
        &mut self,
        method: &str,
        params: Option<Value>,
    ) -> Result<(Value, Vec<OwnedFd>), ManagerError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut req = json!({"id": id, "method": method});
        if let Some(p) = params {
            req["params"] = p;
        }
        let mut line = req.to_string().into_bytes();
        line.push(b'\n');
        self.stream
            .set_write_timeout(Some(RESPONSE_TIMEOUT))
            .and_then(|()| self.stream.write_all(&line))
            .map_err(|e| self.error(format!("send {method}: {e}")))?;
        self.stream
            .set_read_timeout(Some(RESPONSE_TIMEOUT))
            .map_err(|e| self.error(e.to_string()))?;
        let (line, fds) = self
            .read_line()?
            .ok_or_else(|| self.error(format!("closed before answering {method}")))?;
        let v: Value = serde_json::from_slice(&line)
            .map_err(|e| self.error(format!("bad response to {method}: {e}")))?;
        if v.get("id") != Some(&json!(id)) {
            return Err(self.error(format!("response to {method} has the wrong id: {v}")));
        }
        if let Some(err) = v.get("error") {
            let code = err.get("code").and_then(Value::as_str).unwrap_or("?");
            let msg = err.get("message").and_then(Value::as_str).unwrap_or("");
            return Err(self.error(format!("{method}: {code}: {msg}")));
        }
        match v.get("result") {
            Some(r) => Ok((r.clone(), fds)),
            None => Err(self.error(format!("response to {method} has no result: {v}"))),
        }
    }

    /// `stop` with a deadline for the guest.
    pub fn stop(&mut self, timeout: Duration) -> Result<(), ManagerError> {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.call("stop", Some(json!({"timeout_ms": ms}))).map(drop)
    }

    /// `connect-vsock`: a stream connected to the guest's `port`.
    pub fn connect_vsock(&mut self, port: u32) -> Result<OwnedFd, ManagerError> {
        let (_, mut fds) = self.call("connect-vsock", Some(json!({"port": port})))?;
        if fds.len() != 1 {
            return Err(self.error(format!(
                "connect-vsock answered with {} descriptors, not 1",
                fds.len()
            )));
        }
        fds.pop().ok_or_else(|| self.error("no descriptor"))
    }

    /// `subscribe`, then reads events until the connection closes; `on_event` sees each one.
    /// Returns the `stopped` event if it came. No timeout: this waits for the VM's end.
    pub fn subscribe(
        mut self,
        mut on_event: impl FnMut(&Value),
    ) -> Result<Option<Stopped>, ManagerError> {
        self.call("subscribe", None)?;
        self.stream
            .set_read_timeout(None)
            .map_err(|e| self.error(e.to_string()))?;
        let mut stopped = None;
        while let Some((line, _)) = self.read_line()? {
            let Ok(v) = serde_json::from_slice::<Value>(&line) else {
                log::warn!("{}: ignoring a bad event line", self.path.display());
                continue;
            };
            let Some(ev) = v.get("event") else { continue };
            on_event(ev);
            if ev.get("type").and_then(Value::as_str) == Some("stopped") {
                stopped = ev
                    .get("reason")
                    .and_then(Value::as_str)
                    .and_then(StopReason::from_name)
                    .map(|reason| Stopped {
                        reason,
                        exit_code: ev
                            .get("exit_code")
                            .and_then(Value::as_i64)
                            .and_then(|c| i32::try_from(c).ok()),
                    });
            }
        }
        Ok(stopped)
    }

    /// One line (without its newline) and the descriptors received with it; `None` at a
    /// clean end of stream.
    fn read_line(&mut self) -> Result<Option<Line>, ManagerError> {
        let mut fds = Vec::new();
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let rest = self.buf.split_off(i + 1);
                let mut line = mem::replace(&mut self.buf, rest);
                line.pop();
                return Ok(Some((line, fds)));
            }
            if self.buf.len() >= MAX_LINE {
                return Err(self.error(format!("a line longer than {MAX_LINE} bytes")));
            }
            let mut chunk = [0u8; 4096];
            let n = recv_with_fds(&self.stream, &mut chunk, &mut fds)
                .map_err(|e| self.error(format!("read: {e}")))?;
            if n == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(self.error("closed in the middle of a line"));
            }
            self.buf
                .extend_from_slice(chunk.get(..n).unwrap_or_default());
        }
    }
}

/// A line without its newline, and the descriptors that came with it.
type Line = (Vec<u8>, Vec<OwnedFd>);

/// Most descriptors taken from one message.
const MAX_FDS: usize = 4;

/// `recvmsg` into `buf`, appending any SCM_RIGHTS descriptors to `fds` (they are closed on
/// drop if unused). Retries on EINTR.
fn recv_with_fds(sock: &UnixStream, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    // u64 storage keeps the control buffer aligned for cmsghdr.
    let mut cbuf = [0u64; 16];
    loop {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: an all-zero msghdr is valid; the pointers are set below.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = mem::size_of_val(&cbuf);
        // SAFETY: msg points at live buffers of the given sizes for the call's duration.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // SAFETY: walking the control messages recvmsg filled in, with the libc macros.
        let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        while !cmsg.is_null() {
            // SAFETY: cmsg is a valid header inside cbuf (CMSG_FIRSTHDR/NXTHDR checked it).
            let (level, kind, len) =
                unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type, (*cmsg).cmsg_len) };
            if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
                // SAFETY: CMSG_LEN(0) is a constant computation.
                let header = unsafe { libc::CMSG_LEN(0) } as usize;
                let count = len.saturating_sub(header) / mem::size_of::<libc::c_int>();
                // SAFETY: the data holds `count` ints inside the control buffer.
                let data = unsafe { libc::CMSG_DATA(cmsg) }.cast::<libc::c_int>();
                for i in 0..count {
                    // SAFETY: i < count; read_unaligned copes with any alignment.
                    let fd = unsafe { data.add(i).read_unaligned() };
                    if fd >= 0 {
                        // SAFETY: the kernel just gave us this descriptor; we own it now.
                        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                        if fds.len() < MAX_FDS {
                            fds.push(owned);
                        }
                    }
                }
            }
            // SAFETY: as for CMSG_FIRSTHDR.
            cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
        }
        return Ok(n as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read};
    use std::os::unix::net::UnixListener;

    /// A fake server: answers each request line with `reply(request)`.
    fn serve(
        path: &Path,
        reply: impl Fn(&Value, &UnixStream) + Send + 'static,
    ) -> std::thread::JoinHandle<()> {
        let l = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 0) {
                let v: Value = serde_json::from_str(&line).unwrap();
                reply(&v, &s);
                line.clear();
            }
        })
    }

    fn send(mut s: &UnixStream, v: Value) {
        s.write_all(format!("{v}\n").as_bytes()).unwrap();
    }

    #[test]
    fn requests_errors_and_events() {
        let t = crate::disk::testutil::TempDir::new("mgr-ctl");
        let p = t.path().join("s");
        let server = serve(&p, |req, s| {
            let id = req["id"].clone();
            match req["method"].as_str().unwrap() {
                "stop" => {
                    assert_eq!(req["params"]["timeout_ms"], 2500);
                    send(s, json!({"id": id, "result": {}}));
                }
                "pause" => send(
                    s,
                    json!({"id": id, "error": {"code": "failed", "message": "no"}}),
                ),
                "status" => send(s, json!({"id": 999, "result": {}})),
                "subscribe" => {
                    send(s, json!({"id": id, "result": {}}));
                    send(s, json!({"event": {"type": "payload_started"}}));
                    (&*s).write_all(b"not json\n").unwrap();
                    send(
                        s,
                        json!({"event": {"type": "stopped", "reason": "HANGUP", "exit_code": 216}}),
                    );
                    s.shutdown(std::net::Shutdown::Both).unwrap();
                }
                _ => unreachable!(),
            }
        });
        let mut c = Client::connect(&p).unwrap();
        c.stop(Duration::from_millis(2500)).unwrap();
        let e = c.call("pause", None).unwrap_err().to_string();
        assert!(e.contains("pause: failed: no"), "{e}");
        let e = c.call("status", None).unwrap_err().to_string();
        assert!(e.contains("wrong id"), "{e}");
        let mut seen = Vec::new();
        let stopped = c.subscribe(|ev| seen.push(ev["type"].clone())).unwrap();
        assert_eq!(
            stopped,
            Some(Stopped {
                reason: StopReason::Hangup,
                exit_code: Some(216)
            })
        );
        assert_eq!(seen, [json!("payload_started"), json!("stopped")]);
        server.join().unwrap();
    }

    #[test]
    fn oversized_and_truncated_lines() {
        let t = crate::disk::testutil::TempDir::new("mgr-ctl-long");
        let p = t.path().join("s");
        let server = serve(&p, |_, mut s| {
            let _ = s.write_all(&vec![b'x'; MAX_LINE + 10]);
        });
        let mut c = Client::connect(&p).unwrap();
        let e = c.call("version", None).unwrap_err().to_string();
        assert!(e.contains("longer than"), "{e}");
        drop(c);
        server.join().unwrap();
        let p2 = t.path().join("s2");
        let server = serve(&p2, |_, s| {
            (&*s).write_all(b"{\"id\": 1").unwrap();
            s.shutdown(std::net::Shutdown::Both).unwrap();
        });
        let mut c = Client::connect(&p2).unwrap();
        let e = c.call("version", None).unwrap_err().to_string();
        assert!(e.contains("middle of a line"), "{e}");
        server.join().unwrap();
        assert!(Client::connect(&t.path().join("none")).is_err());
    }

    #[test]
    fn connect_vsock_receives_the_stream() {
        let t = crate::disk::testutil::TempDir::new("mgr-ctl-fd");
        let p = t.path().join("s");
        let server = serve(&p, |req, s| {
            assert_eq!(req["params"]["port"], 5555);
            let (mine, theirs) = UnixStream::pair().unwrap();
            let line = format!("{}\n", json!({"id": req["id"], "result": {"port": 5555}}));
            send_fd(s, line.as_bytes(), theirs.as_raw_fd());
            (&mine).write_all(b"hello from the guest").unwrap();
        });
        let mut c = Client::connect(&p).unwrap();
        let fd = c.connect_vsock(5555).unwrap();
        let mut s = UnixStream::from(fd);
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        assert_eq!(got, "hello from the guest");
        drop(c);
        server.join().unwrap();
    }

    fn send_fd(sock: &UnixStream, data: &[u8], fd: i32) {
        let mut cbuf = [0u64; 8];
        let mut iov = libc::iovec {
            iov_base: data.as_ptr() as *mut _,
            iov_len: data.len(),
        };
        // SAFETY: test code building a valid msghdr over live buffers.
        unsafe {
            let mut msg: libc::msghdr = mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(4) as usize;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(4) as usize;
            libc::CMSG_DATA(c).cast::<i32>().write_unaligned(fd);
            assert!(libc::sendmsg(sock.as_raw_fd(), &msg, 0) > 0);
        }
    }
}
