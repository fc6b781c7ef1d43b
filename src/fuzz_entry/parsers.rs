//! Host-side parsers: the control protocol, the lifecycle protocol, vmconfig JSON, and the
//! payload formats (APK zip and signing block, idsig, metadata, payload config).

use std::io::{Cursor, Write};
use std::path::Path;

use vmm_sys_util::tempfile::TempFile;

use crate::api::config::{MAX_MEM_MIB, MIN_MEM_MIB};
use crate::api::control::protocol::{self as control, MAX_STOP_TIMEOUT_MS, MIN_VSOCK_PORT, Method};
use crate::api::vmconfig;
use crate::lifecycle::{self as lc, protocol as lcp};
use crate::lines::{Frame, LineFramer};
use crate::payload::apk::Apk;
use crate::payload::config::VmPayloadConfig;
use crate::payload::idsig::Idsig;
use crate::payload::idsig::apk_sig::apk_digest;
use crate::payload::metadata::Metadata;

/// Feeds `data` through a framer of `max`-byte lines in pieces of at most 97 bytes (a peer's
/// reads) and calls `line` on each complete line; the framer never holds more than `max` plus
/// one piece.
fn lines(data: &[u8], max: usize, mut line: impl FnMut(&[u8])) {
    let mut framer = LineFramer::new(max);
    for piece in data.chunks(97) {
        framer.push(piece);
        assert!(
            framer.len() <= max + piece.len(),
            "the framer kept too much"
        );
        while let Some(frame) = framer.next_frame() {
            if let Frame::Line(l) = frame {
                assert!(l.len() < max);
                line(&l);
            }
        }
    }
}

/// A line the control socket sends: one JSON object, one trailing newline.
fn check_out_line(out: &[u8]) {
    let (last, body) = out.split_last().expect("a line is never empty");
    assert_eq!(*last, b'\n');
    assert!(!body.contains(&b'\n'));
    let v: serde_json::Value = serde_json::from_slice(body).expect("our lines are JSON");
    assert!(v.is_object());
}

/// Control-socket request lines (src/api/control): requests parse to validated methods, errors
/// answer with a well-formed line.
pub fn control_protocol(data: &[u8]) {
    lines(data, control::MAX_LINE, |l| {
        match control::parse_request(l) {
            Ok(r) => {
                match r.method {
                    Method::Stop { timeout_ms } => assert!(timeout_ms <= MAX_STOP_TIMEOUT_MS),
                    Method::ConnectVsock { port } => assert!(u64::from(port) >= MIN_VSOCK_PORT),
                    _ => {}
                }
                check_out_line(&control::result_line(&r.id, serde_json::Value::Null));
            }
            Err(e) => check_out_line(&e.to_line()),
        }
    });
}

/// Lifecycle lines (src/lifecycle) both ways: whatever decodes re-encodes to a line that
/// decodes to the same message and fits the limit.
pub fn lifecycle(data: &[u8]) {
    lines(data, lc::MAX_LINE, |l| {
        if let Ok(ev) = lcp::decode_event(l) {
            let out = lcp::encode_event(&ev);
            assert!(out.len() <= lc::MAX_LINE);
            let again = lcp::decode_event(&out[..out.len() - 1]).expect("re-encoded event");
            assert_eq!(again, ev);
        }
        if let Ok(req) = lcp::decode_request(l) {
            let out = lcp::encode(&req);
            assert_eq!(lcp::decode_request(&out[..out.len() - 1]).ok(), Some(req));
        }
        if let Ok(s) = std::str::from_utf8(l)
            && let Some(r) = lc::StopReason::from_failure_string(s)
        {
            assert_eq!(lc::StopReason::from_value(r.value()), Some(r));
        }
    });
}

/// vmconfig JSON (src/api/vmconfig.rs): an accepted file has a boot source and a memory size
/// in range, and every path is absolute (resolved against the base directory).
pub fn vmconfig(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = vmconfig::parse(text, Path::new("/fuzz")) else {
        return;
    };
    assert!(cfg.boot.is_some());
    if let Some(m) = cfg.mem_mib {
        assert!((MIN_MEM_MIB..=MAX_MEM_MIB).contains(&m));
    }
    if let Some(n) = cfg.vcpus {
        assert!(n >= 1);
    }
    for d in &cfg.disks {
        match d {
            crate::api::DiskConfig::Image { path, .. } => assert!(path.is_absolute()),
            crate::api::DiskConfig::Composite { partitions, .. } => {
                assert!(partitions.iter().all(|p| p.path.is_absolute()))
            }
        }
    }
}

/// The APK Signing Block reader (src/payload/idsig/apk_sig.rs) on an arbitrary file.
pub fn apk_signing_block(data: &[u8]) {
    let Ok(tmp) = TempFile::new() else {
        return;
    };
    if tmp.as_file().write_all(data).is_err() {
        return;
    }
    if let Ok(Some(d)) = apk_digest(tmp.as_path()) {
        assert!(d.scheme == 2 || d.scheme == 3);
        assert!(d.digest.len() < data.len());
    }
}

/// The APK (zip) reader: opening, and reading the config entry with a cap, never panic and
/// never return more than the cap.
pub fn apk_zip(data: &[u8]) {
    const CAP: u64 = 64 * 1024;
    let Ok(mut apk) = Apk::from_reader("fuzz.apk", Cursor::new(data)) else {
        return;
    };
    assert!(apk.zip_len() <= data.len() as u64);
    if let Ok(bytes) = apk.read_entry("assets/vm_config.json", CAP) {
        assert!(bytes.len() as u64 <= CAP);
    }
}

/// An `.idsig`: whatever parses re-serializes to the same bytes and parses again to the same
/// value.
pub fn idsig(data: &[u8]) {
    if let Ok(idsig) = Idsig::parse(data, "fuzz") {
        let bytes = idsig.to_bytes().expect("a parsed idsig re-encodes");
        assert_eq!(bytes, data, "re-encoding changed the bytes");
        let again = Idsig::parse(&bytes, "fuzz").expect("re-encoded idsig parses");
        assert_eq!(again, idsig);
    }
}

/// Payload metadata framing and protobuf: whatever decodes re-encodes to something that
/// decodes to the same message, and the streaming reader agrees with the slice reader.
pub fn metadata(data: &[u8]) {
    let Ok(m) = Metadata::decode_framed(data) else {
        return;
    };
    let mut reader = data;
    assert!(Metadata::read_framed(&mut reader).ok().as_ref() == Some(&m));
    let framed = m.encode_framed().expect("a decoded message re-encodes");
    assert_eq!(Metadata::decode_framed(&framed).expect("re-decodes"), m);
}

/// The payload config JSON parser: an accepted config passes its own checks.
pub fn payload_config(data: &[u8]) {
    if let Ok(c) = VmPayloadConfig::from_json(data, "fuzz.json") {
        assert!(!c.os_name().is_empty());
        if let Some(task) = &c.task {
            assert!(!task.command.is_empty());
        }
        assert!(c.extra_apks.iter().all(|a| a.path.starts_with('/')));
    }
}
