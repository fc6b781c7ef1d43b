//! `micro-vmm ctl SOCKET METHOD [ARGS]`: sends one request and prints the response line on
//! stdout (exit 0 for a result, 1 for an error). `subscribe` then prints each event line
//! until the server closes; `connect-vsock PORT` prints the response on stderr and bridges
//! stdin and stdout to the passed connection, as socat does.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use super::fdpass::recv_with_fd;
use super::protocol::MAX_LINE;

/// How long a request waits for its response (`pause` may take up to 5 s).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// After the connection's end, how long the other direction gets (socat's `-t 0.5`).
const BRIDGE_LINGER: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    BadArgs(String),
    #[error("cannot connect to {path}: {source}")]
    Connect { path: String, source: io::Error },
    #[error("control socket: {0}")]
    Io(#[from] io::Error),
    #[error("the server closed the connection without answering")]
    NoAnswer,
    #[error("the server's answer is not a response: {0}")]
    BadResponse(String),
    #[error("the server answered connect-vsock without passing a connection")]
    NoFd,
}

impl ClientError {
    /// The exit code: 35 for bad arguments, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::BadArgs(_) => crate::vmm::exit::code::INVALID_ARGS,
            _ => crate::vmm::exit::code::ERROR,
        }
    }
}

/// The request line for `method` with its command-line arguments.
pub fn build_request(method: &str, args: &[String]) -> Result<Vec<u8>, ClientError> {
    let number = |what: &str, s: &str| {
        s.parse::<u64>()
            .map_err(|_| ClientError::BadArgs(format!("{method}: {what} {s:?} is not a number")))
    };
    let params = match (method, args) {
        ("stop", []) => None,
        ("stop", [t]) => Some(json!({ "timeout_ms": number("TIMEOUT_MS", t)? })),
        ("connect-vsock", [p]) => Some(json!({ "port": number("PORT", p)? })),
        ("connect-vsock", _) => {
            return Err(ClientError::BadArgs("usage: connect-vsock PORT".into()));
        }
        (_, []) => None,
        (_, _) => {
            return Err(ClientError::BadArgs(format!(
                "{method} takes no arguments (stop [TIMEOUT_MS], connect-vsock PORT)"
            )));
        }
    };
    let mut req = json!({ "id": 1, "method": method });
    if let (Some(p), Some(obj)) = (params, req.as_object_mut()) {
        obj.insert("params".into(), p);
    }
    let mut line = serde_json::to_vec(&req).map_err(|e| ClientError::BadArgs(e.to_string()))?;
    line.push(b'\n');
    Ok(line)
}

/// True when `line` is a response carrying a result (not an error).
pub fn is_result(line: &str) -> Result<bool, ClientError> {
    match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(o)) if o.contains_key("result") => Ok(true),
        Ok(Value::Object(o)) if o.contains_key("error") => Ok(false),
        _ => Err(ClientError::BadResponse(line.chars().take(200).collect())),
    }
}

/// Runs `micro-vmm ctl`; returns the exit code.
pub fn run(socket: &Path, method: &str, args: &[String]) -> i32 {
    match run_inner(socket, method, args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("micro-vmm ctl: {e}");
            e.exit_code()
        }
    }
}

fn run_inner(socket: &Path, method: &str, args: &[String]) -> Result<i32, ClientError> {
    let request = build_request(method, args)?;
    let stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: socket.display().to_string(),
        source,
    })?;
    (&stream).write_all(&request)?;
    if method == "connect-vsock" {
        return connect_vsock(stream);
    }
    stream.set_read_timeout(Some(RESPONSE_TIMEOUT))?;
    let mut reader = BufReader::new(&stream);
    let line = read_line(&mut reader)?.ok_or(ClientError::NoAnswer)?;
    let ok = is_result(&line)?;
    let mut out = io::stdout().lock();
    // The state dump is text for people: print it as such.
    let dump_text = (ok && method == "dump")
        .then(|| serde_json::from_str::<Value>(&line).ok())
        .flatten()
        .and_then(|v| v["result"]["dump"].as_str().map(str::to_owned));
    match dump_text {
        Some(text) => write!(out, "{text}")?,
        None => writeln!(out, "{line}")?,
    }
    out.flush()?;
    if ok && method == "subscribe" {
        stream.set_read_timeout(None)?;
        while let Some(event) = read_line(&mut reader)? {
            writeln!(out, "{event}")?;
            out.flush()?;
        }
    }
    Ok(if ok { 0 } else { 1 })
}

/// One line (without its newline), at most [`MAX_LINE`] bytes; `None` at EOF.
fn read_line(r: &mut impl BufRead) -> Result<Option<String>, ClientError> {
    let mut buf = Vec::new();
    r.take(MAX_LINE as u64).read_until(b'\n', &mut buf)?;
    if buf.is_empty() {
        return Ok(None);
    }
    if buf.pop() != Some(b'\n') {
        return Err(ClientError::BadResponse(
            "an unterminated or over-long line".into(),
        ));
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// Receives the response and its fd, then bridges stdin/stdout to the fd.
fn connect_vsock(stream: UnixStream) -> Result<i32, ClientError> {
    stream.set_read_timeout(Some(RESPONSE_TIMEOUT))?;
    // The response line comes in one message with the fd; read up to its newline only.
    let mut line = Vec::new();
    let mut fd = None;
    loop {
        let mut b = [0u8; 1];
        let (n, got) = recv_with_fd(&stream, &mut b)?;
        if fd.is_none() {
            fd = got;
        }
        match n {
            0 => return Err(ClientError::NoAnswer),
            _ if b[0] == b'\n' => break,
            _ if line.len() >= MAX_LINE => {
                return Err(ClientError::BadResponse("an over-long line".into()));
            }
            _ => line.push(b[0]),
        }
    }
    let line = String::from_utf8_lossy(&line).into_owned();
    eprintln!("{line}");
    if !is_result(&line)? {
        return Ok(1);
    }
    let conn = UnixStream::from(fd.ok_or(ClientError::NoFd)?);
    bridge(conn)?;
    Ok(0)
}

/// Copies stdin to `conn` and `conn` to stdout. Stdin's end shuts the connection's write
/// side; the connection's end gives stdin [`BRIDGE_LINGER`] more.
fn bridge(conn: UnixStream) -> io::Result<()> {
    let writer = conn.try_clone()?;
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut w = &writer;
        let _ = io::copy(&mut io::stdin().lock(), &mut w);
        let _ = writer.shutdown(std::net::Shutdown::Write);
        let _ = done_tx.send(());
    });
    let mut stdout = io::stdout().lock();
    let mut buf = [0u8; 16 << 10];
    loop {
        match (&conn).read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                stdout.write_all(&buf[..n])?;
                stdout.flush()?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let _ = done_rx.recv_timeout(BRIDGE_LINGER);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, args: &[&str]) -> Result<Value, ClientError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let line = build_request(method, &args)?;
        assert_eq!(line.last(), Some(&b'\n'));
        Ok(serde_json::from_slice(&line).unwrap())
    }

    #[test]
    fn requests_from_arguments() {
        assert_eq!(
            req("status", &[]).unwrap(),
            json!({"id": 1, "method": "status"})
        );
        assert_eq!(
            req("stop", &["250"]).unwrap(),
            json!({"id": 1, "method": "stop", "params": {"timeout_ms": 250}})
        );
        assert_eq!(
            req("connect-vsock", &["5555"]).unwrap(),
            json!({"id": 1, "method": "connect-vsock", "params": {"port": 5555}})
        );
        // Unknown methods go to the server, which names them.
        assert_eq!(
            req("frob", &[]).unwrap(),
            json!({"id": 1, "method": "frob"})
        );
        for (m, a) in [
            ("stop", &["x"][..]),
            ("stop", &["1", "2"]),
            ("connect-vsock", &[]),
            ("connect-vsock", &["-1"]),
            ("status", &["1"]),
        ] {
            let e = req(m, a).unwrap_err();
            assert_eq!(e.exit_code(), 35, "{m} {a:?}: {e}");
        }
    }

    #[test]
    fn results_and_errors_are_told_apart() {
        assert!(is_result(r#"{"id":1,"result":{}}"#).unwrap());
        assert!(!is_result(r#"{"id":1,"error":{"code":"failed","message":"m"}}"#).unwrap());
        assert!(is_result("nope").is_err());
        assert!(is_result("[]").is_err());
    }
}
