//! The wire format of the lifecycle connection (docs/lifecycle.md): one JSON object per line.

use serde::{Deserialize, Serialize};

use super::{ErrorCode, LifecycleError, MAX_LINE};

/// What the guest agent reports (guest -> host).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case", deny_unknown_fields)]
pub enum GuestEvent {
    /// The first line after connecting.
    Hello { version: u32 },
    /// Sent right before the task is spawned.
    Started,
    /// The payload signalled that it is ready.
    Ready,
    /// The task exited with this status (128 + N when killed by signal N).
    Finished { exit_code: i32 },
    /// The payload cannot run.
    Error { code: ErrorCode, message: String },
}

/// What the host asks of the guest agent (host -> guest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case", deny_unknown_fields)]
pub enum HostRequest {
    /// Stop the payload (SIGTERM, SIGKILL after 5 s), report `finished`, power off.
    Shutdown,
}

/// One message as a line, `\n` included. Messages this side builds always fit in
/// [`MAX_LINE`]: over-long error messages are cut at a character boundary.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut line = serde_json::to_vec(msg).unwrap_or_else(|_| b"{}".to_vec());
    line.push(b'\n');
    line
}

/// A guest event as a line, with an over-long error message shortened to fit [`MAX_LINE`].
pub fn encode_event(event: &GuestEvent) -> Vec<u8> {
    let line = encode(event);
    if line.len() <= MAX_LINE {
        return line;
    }
    match event {
        GuestEvent::Error { code, message } => {
            // JSON escaping can at most sextuple a character; cut well below the limit.
            let mut cut = (MAX_LINE / 8).min(message.len());
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            encode(&GuestEvent::Error {
                code: *code,
                message: format!("{}...", &message[..cut]),
            })
        }
        _ => line,
    }
}

/// Parses one line (without its `\n`) sent by the guest.
pub fn decode_event(line: &[u8]) -> Result<GuestEvent, LifecycleError> {
    decode(line)
}

/// Parses one line (without its `\n`) sent by the host.
pub fn decode_request(line: &[u8]) -> Result<HostRequest, LifecycleError> {
    decode(line)
}

fn decode<T: for<'de> Deserialize<'de>>(line: &[u8]) -> Result<T, LifecycleError> {
    if line.len() >= MAX_LINE {
        return Err(LifecycleError::LineTooLong(line.len()));
    }
    serde_json::from_slice(line).map_err(|e| LifecycleError::BadMessage {
        line: String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_have_the_documented_wire_form() {
        let cases = [
            (
                GuestEvent::Hello { version: 1 },
                r#"{"event":"hello","version":1}"#,
            ),
            (GuestEvent::Started, r#"{"event":"started"}"#),
            (GuestEvent::Ready, r#"{"event":"ready"}"#),
            (
                GuestEvent::Finished { exit_code: -3 },
                r#"{"event":"finished","exit_code":-3}"#,
            ),
            (
                GuestEvent::Error {
                    code: ErrorCode::PayloadVerificationFailed,
                    message: "bad".into(),
                },
                r#"{"event":"error","code":"PAYLOAD_VERIFICATION_FAILED","message":"bad"}"#,
            ),
        ];
        for (event, wire) in cases {
            assert_eq!(encode(&event), format!("{wire}\n").into_bytes());
            assert_eq!(decode_event(wire.as_bytes()).unwrap(), event);
        }
        assert_eq!(
            encode(&HostRequest::Shutdown),
            b"{\"request\":\"shutdown\"}\n"
        );
        assert_eq!(
            decode_request(br#"{"request":"shutdown"}"#).unwrap(),
            HostRequest::Shutdown
        );
    }

    #[test]
    fn bad_lines_are_errors() {
        for bad in [
            &b""[..],
            b"garbage",
            b"{}",
            br#"{"event":"launched"}"#,
            br#"{"event":"finished"}"#,
            br#"{"event":"finished","exit_code":"3"}"#,
            br#"{"event":"finished","exit_code":3,"extra":1}"#,
            br#"{"event":"error","code":"NOPE","message":""}"#,
            b"\xff\xfe",
        ] {
            assert!(decode_event(bad).is_err(), "{bad:?}");
        }
        let long = vec![b' '; MAX_LINE];
        assert!(matches!(
            decode_event(&long),
            Err(LifecycleError::LineTooLong(_))
        ));
    }

    #[test]
    fn long_error_messages_are_cut_to_fit() {
        let event = GuestEvent::Error {
            code: ErrorCode::Unknown,
            message: "\u{1}é".repeat(5000),
        };
        let line = encode_event(&event);
        assert!(line.len() <= MAX_LINE, "{}", line.len());
        assert!(matches!(
            decode_event(&line[..line.len() - 1]).unwrap(),
            GuestEvent::Error {
                code: ErrorCode::Unknown,
                ..
            }
        ));
    }
}
