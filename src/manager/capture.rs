//! micro-vmm's stderr, copied into `vmm.log` with a size limit. Past the limit one line says
//! so and later bytes are dropped and counted, except the last [`TAIL`] bytes: they carry the
//! run's verdict (`VM stopped: REASON`), so they are appended after a second line at the end.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::thread::{self, JoinHandle};

use crate::devices::serial::output::limit_line;

/// Bytes kept from after the limit, written at the end.
pub const TAIL: usize = 64 << 10;

/// What a capture did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Captured {
    /// Bytes written to the file (the limit's lines included).
    pub written: u64,
    /// Bytes dropped past the limit.
    pub dropped: u64,
}

/// Copies `from` into `to` until EOF on a thread named `name`.
pub fn spawn<R, W>(name: &str, from: R, to: W, limit: u64) -> io::Result<JoinHandle<Captured>>
where
    R: Read + Send + 'static,
    W: Write + Send + 'static,
{
    thread::Builder::new()
        .name(name.into())
        .spawn(move || copy_limited(from, to, limit))
}

/// The copy itself: the first `limit` bytes, the limit line, then (at EOF) the count of
/// dropped bytes and the last [`TAIL`] of them, from a line start when there is one.
/// A write error stops writing but not reading, so the writer never blocks on a full pipe.
pub fn copy_limited<R: Read, W: Write>(mut from: R, mut to: W, limit: u64) -> Captured {
    let mut c = Captured::default();
    let mut taken = 0u64;
    let mut last = b'\n';
    let mut tail: VecDeque<u8> = VecDeque::new();
    let mut ok = true;
    let mut chunk = vec![0u8; 16 << 10];
    let put = |to: &mut W, bytes: &[u8], c: &mut Captured, ok: &mut bool| {
        if *ok && to.write_all(bytes).is_ok() {
            c.written += bytes.len() as u64;
        } else {
            *ok = false;
        }
    };
    loop {
        let n = match from.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let data = &chunk[..n];
        let room = limit.saturating_sub(taken).min(n as u64) as usize;
        if room > 0 {
            put(&mut to, &data[..room], &mut c, &mut ok);
            taken += room as u64;
            last = data[room - 1];
        }
        let rest = &data[room..];
        if rest.is_empty() {
            continue;
        }
        if c.dropped == 0 && tail.is_empty() {
            let mut line = Vec::new();
            if last != b'\n' {
                line.push(b'\n');
            }
            line.extend_from_slice(limit_line(limit).as_bytes());
            put(&mut to, &line, &mut c, &mut ok);
        }
        tail.extend(rest);
        if tail.len() > TAIL {
            let over = tail.len() - TAIL;
            tail.drain(..over);
            c.dropped += over as u64;
        }
    }
    if !tail.is_empty() {
        let b: &[u8] = tail.make_contiguous();
        // Start at a line boundary when the cut fell inside a line.
        let start = if c.dropped > 0 {
            b.iter().position(|&x| x == b'\n').map_or(0, |p| p + 1)
        } else {
            0
        };
        c.dropped += start as u64;
        let kept = &b[start..];
        let line = format!(
            "[micro-vmm: {} bytes dropped; the last {} bytes follow]\n",
            c.dropped,
            kept.len()
        );
        put(&mut to, line.as_bytes(), &mut c, &mut ok);
        put(&mut to, kept, &mut c, &mut ok);
    }
    let _ = to.flush();
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8], limit: u64) -> (String, Captured) {
        let mut out = Vec::new();
        let c = copy_limited(input, &mut out, limit);
        (String::from_utf8(out).unwrap(), c)
    }

    #[test]
    fn under_the_limit_everything_is_copied() {
        let (out, c) = run(b"one\ntwo\n", 100);
        assert_eq!(out, "one\ntwo\n");
        assert_eq!(
            c,
            Captured {
                written: 8,
                dropped: 0
            }
        );
    }

    #[test]
    fn a_flood_keeps_the_head_the_limit_line_and_the_verdict() {
        let mut input = Vec::new();
        for i in 0..100_000 {
            input.extend_from_slice(format!("noise line {i}\n").as_bytes());
        }
        input.extend_from_slice(b"micro-vmm: VM stopped: SHUTDOWN\n");
        let (out, c) = run(&input, 1000);
        assert!(out.starts_with("noise line 0\n"));
        assert!(
            out.contains("[micro-vmm: output limit of 1000 bytes reached; the rest was dropped]\n")
        );
        assert!(out.ends_with("micro-vmm: VM stopped: SHUTDOWN\n"));
        assert!(out.len() < 1000 + TAIL + 200, "{}", out.len());
        assert_eq!(c.written, out.len() as u64);
        // Everything is accounted for: written (less the two lines) plus dropped.
        let tail_line = out
            .lines()
            .find(|l| l.contains("bytes dropped; the last"))
            .unwrap();
        let extra = out.len() - 1000 - tail_line.len() - 1;
        let limit_line_len = limit_line(1000).len() + 1; // a newline before it
        assert_eq!(
            (extra - limit_line_len) as u64 + c.dropped,
            input.len() as u64 - 1000
        );
        // The tail starts on a line.
        let after = out.split(tail_line).nth(1).unwrap();
        assert!(after.starts_with("\nnoise line "), "{:?}", &after[..20]);
    }

    #[test]
    fn a_failing_file_does_not_stop_the_reading() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::Other.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let input = vec![b'x'; 1 << 20];
        let mut r = &input[..];
        let c = copy_limited(&mut r, Broken, 100);
        assert!(r.is_empty(), "all input read");
        assert_eq!(c.written, 0);
    }
}
