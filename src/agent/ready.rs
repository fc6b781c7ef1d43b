//! The payload service socket (`/run/vm_payload_service`, docs/lifecycle.md "Signalling
//! ready"): a payload connects and writes `ready\n`; the agent answers `ok\n` once the host
//! has been told. And its client, `vm_payload ready`.

use std::io::{self, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::AgentError;
use super::lines::{Line, LineReader};

/// The request line.
pub const READY: &[u8] = b"ready";
/// The answer line.
pub const OK: &[u8] = b"ok";
/// Longest line accepted from a payload, `\n` included.
const MAX_REQUEST: usize = 64;
/// Connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 16;
/// A connection that sends nothing for this long is closed.
const IDLE: Duration = Duration::from_secs(30);
/// How long the client waits for the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves the socket at `path` on a thread: for each `ready` line, calls `on_ready`, which
/// returns once the host has been told (`true`) or when it cannot be (`false`); answers `ok`
/// on `true` and closes the connection on `false`. Anything else closes the connection.
/// A stale socket file at `path` is replaced. The server runs until the process ends.
pub fn serve<F>(path: &Path, on_ready: F) -> Result<(), AgentError>
where
    F: Fn() -> bool + Send + Sync + 'static,
{
    let err = |source| AgentError::ReadySocket {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(err(e)),
        _ => {}
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    let on_ready = Arc::new(on_ready);
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("payload-service".into())
        .spawn(move || accept_loop(&listener, &on_ready, &active))
        .map_err(err)?;
    Ok(())
}

fn accept_loop<F>(listener: &UnixListener, on_ready: &Arc<F>, active: &Arc<AtomicUsize>)
where
    F: Fn() -> bool + Send + Sync + 'static,
{
    loop {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                crate::agent_log!("payload service: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::AcqRel);
            crate::agent_log!("payload service: too many connections, closing one");
            continue;
        }
        let on_ready = Arc::clone(on_ready);
        let active_conn = Arc::clone(active);
        let spawned = std::thread::Builder::new()
            .name("payload-conn".into())
            .spawn(move || {
                serve_connection(stream, &*on_ready);
                active_conn.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// One payload connection, until it closes, misbehaves or goes idle.
fn serve_connection(stream: UnixStream, on_ready: &dyn Fn() -> bool) {
    if stream.set_read_timeout(Some(IDLE)).is_err() || stream.set_write_timeout(Some(IDLE)).is_err()
    {
        return;
    }
    let mut lines = LineReader::new(stream, MAX_REQUEST);
    loop {
        match lines.next_line() {
            Ok(Line::Complete(line)) if line == READY => {
                if !on_ready() {
                    return;
                }
                if lines.get_mut().write_all(b"ok\n").is_err() {
                    return;
                }
            }
            Ok(Line::Complete(line)) => {
                crate::agent_log!(
                    "payload service: unknown request {:?}, closing",
                    String::from_utf8_lossy(&line)
                );
                return;
            }
            Ok(Line::TooLong) => {
                crate::agent_log!("payload service: request too long, closing");
                return;
            }
            Ok(Line::Eof) | Err(_) => return,
        }
    }
}

/// `vm_payload ready`: tells the agent at `path` that the payload is ready and waits for the
/// answer (Android's `AVmPayload_notifyPayloadReady`).
pub fn notify_ready(path: &Path) -> Result<(), AgentError> {
    let io_err = |source| AgentError::ReadySocket {
        path: path.to_path_buf(),
        source,
    };
    let reply_err = |reason: String| AgentError::ReadyReply {
        path: PathBuf::from(path),
        reason,
    };
    let mut stream = UnixStream::connect(path).map_err(io_err)?;
    stream
        .set_read_timeout(Some(CLIENT_TIMEOUT))
        .map_err(io_err)?;
    stream
        .set_write_timeout(Some(CLIENT_TIMEOUT))
        .map_err(io_err)?;
    stream.write_all(b"ready\n").map_err(io_err)?;
    match LineReader::new(stream, MAX_REQUEST).next_line() {
        Ok(Line::Complete(line)) if line == OK => Ok(()),
        Ok(Line::Complete(line)) => Err(reply_err(format!(
            "unexpected answer {:?}",
            String::from_utf8_lossy(&line)
        ))),
        Ok(Line::TooLong) => Err(reply_err("answer too long".into())),
        Ok(Line::Eof) => Err(reply_err("closed without answering".into())),
        Err(e) => Err(reply_err(format!("no answer: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::testutil::TempDir;
    use std::io::Read;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn each_ready_is_answered_after_the_callback() {
        let dir = TempDir::new("agent-ready");
        let path = dir.path().join("vm_payload_service");
        std::fs::write(&path, b"stale").unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&calls);
        serve(&path, move || {
            c.fetch_add(1, Ordering::SeqCst);
            true
        })
        .unwrap();
        notify_ready(&path).unwrap();
        notify_ready(&path).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        // Two requests on one connection, one write.
        let mut s = UnixStream::connect(&path).unwrap();
        s.write_all(b"ready\nready\n").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "ok\nok\n");
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn garbage_closes_the_connection_without_calling_back() {
        let dir = TempDir::new("agent-ready-garbage");
        let path = dir.path().join("sock");
        let called = Arc::new(AtomicBool::new(false));
        let c = Arc::clone(&called);
        serve(&path, move || {
            c.store(true, Ordering::SeqCst);
            true
        })
        .unwrap();
        for bad in [&b"hello\nready\n"[..], &[b'r'; 10_000][..], b"READY\n"] {
            let mut s = UnixStream::connect(&path).unwrap();
            // The server may close before reading everything; a write error is fine.
            let _ = s.write_all(bad);
            let mut answer = Vec::new();
            let _ = s.read_to_end(&mut answer);
            assert_eq!(answer, b"", "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(!called.load(Ordering::SeqCst));
    }

    #[test]
    fn a_refused_ready_is_an_error_for_the_client() {
        let dir = TempDir::new("agent-ready-refused");
        let path = dir.path().join("sock");
        serve(&path, || false).unwrap();
        let err = notify_ready(&path).unwrap_err().to_string();
        assert!(err.contains("closed without answering"), "{err}");
        let err = notify_ready(&dir.path().join("nobody"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nobody"), "{err}");
    }

    #[test]
    fn connections_beyond_the_limit_are_closed() {
        let dir = TempDir::new("agent-ready-limit");
        let path = dir.path().join("sock");
        serve(&path, || true).unwrap();
        // Idle connections hold their slots.
        let idle: Vec<UnixStream> = (0..MAX_CONNECTIONS)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        // Wait until the server has taken them all.
        std::thread::sleep(Duration::from_millis(300));
        let mut extra = UnixStream::connect(&path).unwrap();
        let _ = extra.write_all(b"ready\n");
        let mut answer = Vec::new();
        extra
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let _ = extra.read_to_end(&mut answer);
        assert_eq!(answer, b"");
        drop(idle);
        // Slots come back once the idle connections are gone.
        std::thread::sleep(Duration::from_millis(300));
        notify_ready(&path).unwrap();
    }
}
