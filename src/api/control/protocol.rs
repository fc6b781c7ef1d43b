//! The control socket's wire format (docs/api.md): newline-delimited JSON requests, responses
//! and events, and the line framing with its 64 KiB cap. Everything here is pure (no I/O).

use serde::Serialize;
use serde_json::{Map, Value, json};

/// The protocol version `version` reports.
pub const API_VERSION: u32 = 1;
/// Longest line, newline included.
pub const MAX_LINE: usize = 64 << 10;
/// `stop`'s deadline when none is given.
pub const DEFAULT_STOP_TIMEOUT_MS: u64 = 10_000;
/// Longest `stop` deadline accepted (one hour).
pub const MAX_STOP_TIMEOUT_MS: u64 = 3_600_000;
/// Lowest vsock port a client may connect to (Android's `MIN_VSOCK_PORT`).
pub const MIN_VSOCK_PORT: u64 = 1024;

/// A request's method and its validated parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Version,
    Status,
    Stop {
        timeout_ms: u64,
    },
    Kill,
    Pause,
    Resume,
    Subscribe,
    ConnectVsock {
        port: u32,
    },
    /// The VMM state dump (registers, vCPU events, LAPICs, IOAPIC, device interrupts).
    Dump,
}

/// A parsed request: the client's `id` (a number or a string, echoed back) and the method.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: Value,
    pub method: Method,
}

/// The error codes of docs/api.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    ParseError,
    LineTooLong,
    UnknownMethod,
    BadRequest,
    Unsupported,
    Failed,
    Stopped,
}

/// A request that cannot be served: the id to answer with (null when unknown), the code and
/// a message for people.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestError {
    pub id: Value,
    pub code: ErrorCode,
    pub message: String,
}

impl RequestError {
    pub fn new(id: Value, code: ErrorCode, message: impl Into<String>) -> Self {
        RequestError {
            id,
            code,
            message: message.into(),
        }
    }

    /// The response line for this error.
    pub fn to_line(&self) -> Vec<u8> {
        error_line(&self.id, self.code, &self.message)
    }
}

/// Parses one request line (without its newline).
pub fn parse_request(line: &[u8]) -> Result<Request, RequestError> {
    let parse_err = |m: String| RequestError::new(Value::Null, ErrorCode::ParseError, m);
    let value: Value = serde_json::from_slice(line).map_err(|e| parse_err(format!("{e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(parse_err("a request must be a JSON object".into()));
    };
    let id = match obj.remove("id") {
        Some(id @ (Value::Number(_) | Value::String(_))) => id,
        Some(_) => {
            return Err(RequestError::new(
                Value::Null,
                ErrorCode::BadRequest,
                "\"id\" must be a number or a string",
            ));
        }
        None => {
            return Err(RequestError::new(
                Value::Null,
                ErrorCode::BadRequest,
                "missing \"id\"",
            ));
        }
    };
    let bad = |m: String| RequestError::new(id.clone(), ErrorCode::BadRequest, m);
    let method = match obj.remove("method") {
        Some(Value::String(m)) => m,
        Some(_) => return Err(bad("\"method\" must be a string".into())),
        None => return Err(bad("missing \"method\"".into())),
    };
    let params = match obj.remove("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p,
        Some(_) => return Err(bad("\"params\" must be an object".into())),
    };
    if let Some(k) = obj.keys().next() {
        return Err(bad(format!("unknown key {k:?}")));
    }
    let method = parse_method(&method, params).map_err(|e| match e {
        MethodError::Unknown => RequestError::new(
            id.clone(),
            ErrorCode::UnknownMethod,
            format!("unknown method {:?}", truncate(&method, 64)),
        ),
        MethodError::Bad(m) => bad(m),
    })?;
    Ok(Request { id, method })
}

enum MethodError {
    Unknown,
    Bad(String),
}

fn parse_method(name: &str, mut params: Map<String, Value>) -> Result<Method, MethodError> {
    let method = match name {
        "version" => Method::Version,
        "status" => Method::Status,
        "kill" => Method::Kill,
        "pause" => Method::Pause,
        "resume" => Method::Resume,
        "subscribe" => Method::Subscribe,
        "dump" => Method::Dump,
        "stop" => {
            let timeout_ms = match params.remove("timeout_ms") {
                None => DEFAULT_STOP_TIMEOUT_MS,
                Some(v) => match v.as_u64() {
                    Some(t) if t <= MAX_STOP_TIMEOUT_MS => t,
                    _ => {
                        return Err(MethodError::Bad(format!(
                            "timeout_ms must be an integer from 0 to {MAX_STOP_TIMEOUT_MS}"
                        )));
                    }
                },
            };
            Method::Stop { timeout_ms }
        }
        "connect-vsock" => {
            let port = match params.remove("port") {
                None => return Err(MethodError::Bad("missing \"port\"".into())),
                Some(v) => match v.as_u64() {
                    Some(p) if p < MIN_VSOCK_PORT => {
                        return Err(MethodError::Bad(format!(
                            "port {p} is below {MIN_VSOCK_PORT}"
                        )));
                    }
                    Some(p) => u32::try_from(p).map_err(|_| {
                        MethodError::Bad(format!("port {p} does not fit in 32 bits"))
                    })?,
                    None => {
                        return Err(MethodError::Bad(
                            "port must be an integer from 1024 to 4294967295".into(),
                        ));
                    }
                },
            };
            Method::ConnectVsock { port }
        }
        _ => return Err(MethodError::Unknown),
    };
    match params.keys().next() {
        Some(k) => Err(MethodError::Bad(format!(
            "unknown parameter {:?} for {name}",
            truncate(k, 64)
        ))),
        None => Ok(method),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn with_newline(v: &Value) -> Vec<u8> {
    // Serializing a Value cannot fail (all keys are strings).
    let mut out = serde_json::to_vec(v).unwrap_or_default();
    out.push(b'\n');
    out
}

/// `{"id": ID, "result": RESULT}\n`.
pub fn result_line(id: &Value, result: Value) -> Vec<u8> {
    with_newline(&json!({ "id": id, "result": result }))
}

/// `{"id": ID, "error": {"code": CODE, "message": MESSAGE}}\n`.
pub fn error_line(id: &Value, code: ErrorCode, message: &str) -> Vec<u8> {
    with_newline(&json!({ "id": id, "error": { "code": code, "message": message } }))
}

/// What subscribers are told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The VM's `VirtualMachineState` changed.
    State {
        state: &'static str,
    },
    Paused,
    Resumed,
    PayloadStarted,
    PayloadReady,
    PayloadFinished {
        exit_code: i32,
    },
    Error {
        code: &'static str,
        message: String,
    },
    /// The last event: Android's `DeathReason` name and micro-vmm's exit code.
    Stopped {
        reason: &'static str,
        exit_code: i32,
    },
}

impl Event {
    /// `{"event": {...}}\n`.
    pub fn to_line(&self) -> Vec<u8> {
        with_newline(&json!({ "event": self }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(line: &str) -> RequestError {
        parse_request(line.as_bytes()).unwrap_err()
    }

    #[test]
    fn requests_parse() {
        let r = parse_request(br#"{"id": 1, "method": "status"}"#).unwrap();
        assert_eq!((r.id, r.method), (json!(1), Method::Status));
        let r = parse_request(br#"{"id":"a","method":"stop","params":{"timeout_ms":5}}"#).unwrap();
        assert_eq!(
            (r.id, r.method),
            (json!("a"), Method::Stop { timeout_ms: 5 })
        );
        let r = parse_request(br#"{"id":2,"method":"stop","params":null}"#).unwrap();
        assert_eq!(
            r.method,
            Method::Stop {
                timeout_ms: DEFAULT_STOP_TIMEOUT_MS
            }
        );
        let r = parse_request(br#"{"id":3,"method":"connect-vsock","params":{"port":4294967295}}"#)
            .unwrap();
        assert_eq!(r.method, Method::ConnectVsock { port: u32::MAX });
        for (m, want) in [
            ("version", Method::Version),
            ("kill", Method::Kill),
            ("pause", Method::Pause),
            ("dump", Method::Dump),
            ("resume", Method::Resume),
            ("subscribe", Method::Subscribe),
        ] {
            let line = format!(r#"{{"id":0,"method":"{m}"}}"#);
            assert_eq!(parse_request(line.as_bytes()).unwrap().method, want);
        }
    }

    #[test]
    fn bad_requests_name_the_problem() {
        for (line, code, id, needle) in [
            ("garbage", ErrorCode::ParseError, json!(null), "expected"),
            ("[1,2]", ErrorCode::ParseError, json!(null), "object"),
            ("42", ErrorCode::ParseError, json!(null), "object"),
            ("\u{0}\u{1}", ErrorCode::ParseError, json!(null), ""),
            (
                r#"{"method":"status"}"#,
                ErrorCode::BadRequest,
                json!(null),
                "id",
            ),
            (
                r#"{"id":[1],"method":"status"}"#,
                ErrorCode::BadRequest,
                json!(null),
                "id",
            ),
            (r#"{"id":1}"#, ErrorCode::BadRequest, json!(1), "method"),
            (
                r#"{"id":1,"method":7}"#,
                ErrorCode::BadRequest,
                json!(1),
                "method",
            ),
            (
                r#"{"id":1,"method":"nope"}"#,
                ErrorCode::UnknownMethod,
                json!(1),
                "nope",
            ),
            (
                r#"{"id":1,"method":"status","x":1}"#,
                ErrorCode::BadRequest,
                json!(1),
                "\"x\"",
            ),
            (
                r#"{"id":1,"method":"status","params":[]}"#,
                ErrorCode::BadRequest,
                json!(1),
                "params",
            ),
            (
                r#"{"id":1,"method":"status","params":{"a":1}}"#,
                ErrorCode::BadRequest,
                json!(1),
                "\"a\"",
            ),
            (
                r#"{"id":1,"method":"stop","params":{"timeout_ms":-1}}"#,
                ErrorCode::BadRequest,
                json!(1),
                "timeout_ms",
            ),
            (
                r#"{"id":1,"method":"stop","params":{"timeout_ms":3600001}}"#,
                ErrorCode::BadRequest,
                json!(1),
                "timeout_ms",
            ),
            (
                r#"{"id":1,"method":"stop","params":{"timeout_ms":"5"}}"#,
                ErrorCode::BadRequest,
                json!(1),
                "timeout_ms",
            ),
            (
                r#"{"id":1,"method":"connect-vsock"}"#,
                ErrorCode::BadRequest,
                json!(1),
                "port",
            ),
            (
                r#"{"id":1,"method":"connect-vsock","params":{"port":80}}"#,
                ErrorCode::BadRequest,
                json!(1),
                "below 1024",
            ),
            (
                r#"{"id":1,"method":"connect-vsock","params":{"port":4294967296}}"#,
                ErrorCode::BadRequest,
                json!(1),
                "32 bits",
            ),
            (
                r#"{"id":1,"method":"connect-vsock","params":{"port":1.5}}"#,
                ErrorCode::BadRequest,
                json!(1),
                "port",
            ),
        ] {
            let e = err(line);
            assert_eq!((e.code, &e.id), (code, &id), "{line}: {e:?}");
            assert!(e.message.contains(needle), "{line}: {}", e.message);
        }
        // A huge method name is not echoed back whole.
        let long = format!(r#"{{"id":1,"method":"{}"}}"#, "m".repeat(10_000));
        assert!(err(&long).message.len() < 200);
    }

    #[test]
    fn lines_out() {
        assert_eq!(
            result_line(&json!(7), json!({})),
            b"{\"id\":7,\"result\":{}}\n"
        );
        let e: Value =
            serde_json::from_slice(&error_line(&json!("x"), ErrorCode::LineTooLong, "m")).unwrap();
        assert_eq!(
            e,
            json!({"id": "x", "error": {"code": "line_too_long", "message": "m"}})
        );
        let ev: Value = serde_json::from_slice(
            &Event::Stopped {
                reason: "KILLED",
                exit_code: 137,
            }
            .to_line(),
        )
        .unwrap();
        assert_eq!(
            ev,
            json!({"event": {"type": "stopped", "reason": "KILLED", "exit_code": 137}})
        );
        assert_eq!(
            Event::Paused.to_line(),
            b"{\"event\":{\"type\":\"paused\"}}\n"
        );
        assert_eq!(
            Event::State { state: "READY" }.to_line(),
            b"{\"event\":{\"state\":\"READY\",\"type\":\"state\"}}\n"
        );
    }
}
