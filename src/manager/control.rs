//! The control-socket client (docs/api.md, version 1): newline-delimited JSON requests and
//! responses over a Unix stream socket, events after `subscribe`, and the stream descriptor
//! `connect-vsock` passes with SCM_RIGHTS (received with [`crate::api::control::fdpass`]).
//! `micro-vmm ctl` ([`crate::api::control::client`]) is the command-line client; this one is
//! the library form the manager needs (typed results, the `stopped` event).
//!
//! Everything read is untrusted: lines are bounded ([`MAX_LINE`]), responses are checked for
//! their `id`, and each wait has a timeout.

use std::io::Write;
use std::mem;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::api::control::fdpass;
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
            let (n, fd) = fdpass::recv_with_fd(&self.stream, &mut chunk)
                .map_err(|e| self.error(format!("read: {e}")))?;
            fds.extend(fd);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read};
    use std::os::fd::AsRawFd;
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
            assert!(fdpass::send_with_fd(s, line.as_bytes(), theirs.as_raw_fd()).unwrap() > 0);
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
}
