//! Reading `\n`-terminated lines from a blocking stream with a bound on the line length
//! ([`crate::lines::LineFramer`] over a `Read`), so a peer that never sends a newline cannot
//! make the agent buffer without limit.

use std::io::{self, Read};

use crate::lines::{Frame, LineFramer};

/// What [`LineReader::next_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line, without its `\n`.
    Complete(Vec<u8>),
    /// A line longer than the limit (the rest of it, up to its `\n`, is skipped).
    TooLong,
    /// The peer closed the stream (an unterminated last line is dropped).
    Eof,
}

/// Lines of at most `max` bytes, the `\n` included, read from a stream.
pub struct LineReader<R> {
    inner: R,
    framer: LineFramer,
}

/// Bytes read from the stream at a time.
const CHUNK: usize = 512;

impl<R: Read> LineReader<R> {
    /// A reader of lines of at most `max` bytes (`max` >= 1), the `\n` included.
    pub fn new(inner: R, max: usize) -> LineReader<R> {
        LineReader {
            inner,
            framer: LineFramer::new(max),
        }
    }

    /// The next line. A line that reaches `max` bytes without its `\n` is reported as
    /// [`Line::TooLong`] at once (a peer waiting for an answer need not send more); the rest
    /// of it is skipped by the next call. Memory stays below `max` + 512 bytes whatever the
    /// peer sends. Errors (a timeout, a reset) are the stream's.
    pub fn next_line(&mut self) -> io::Result<Line> {
        loop {
            match self.framer.next_frame() {
                Some(Frame::Line(line)) => return Ok(Line::Complete(line)),
                Some(Frame::TooLong) => return Ok(Line::TooLong),
                None => {}
            }
            let mut chunk = [0u8; CHUNK];
            let n = match self.inner.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                self.framer.clear();
                return Ok(Line::Eof);
            }
            self.framer.push(chunk.get(..n).unwrap_or_default());
        }
    }

    /// The stream, to write answers on.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that returns its data a few bytes at a time.
    struct Trickle(Vec<u8>, usize);

    impl Read for Trickle {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(self.1).min(out.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0.drain(..n);
            Ok(n)
        }
    }

    fn lines(data: &[u8], max: usize, step: usize) -> Vec<Line> {
        let mut r = LineReader::new(Trickle(data.to_vec(), step), max);
        let mut out = Vec::new();
        loop {
            let l = r.next_line().unwrap();
            let end = l == Line::Eof;
            out.push(l);
            if end {
                return out;
            }
        }
    }

    #[test]
    fn splits_lines_whatever_the_read_sizes() {
        for step in [1, 3, 700] {
            assert_eq!(
                lines(b"ready\n\nok\nunterminated", 16, step),
                vec![
                    Line::Complete(b"ready".to_vec()),
                    Line::Complete(vec![]),
                    Line::Complete(b"ok".to_vec()),
                    Line::Eof
                ]
            );
        }
    }

    #[test]
    fn long_lines_are_skipped_not_buffered() {
        // max 8: seven bytes and the newline fit, eight do not.
        let mut data = b"1234567\n12345678\n".to_vec();
        data.extend(vec![b'x'; 100_000]);
        data.extend(b"\nafter\n");
        for step in [1, 5, 512] {
            let mut r = LineReader::new(Trickle(data.clone(), step), 8);
            assert_eq!(r.next_line().unwrap(), Line::Complete(b"1234567".to_vec()));
            assert_eq!(r.next_line().unwrap(), Line::TooLong);
            assert_eq!(r.next_line().unwrap(), Line::TooLong);
            assert!(r.framer.capacity() <= 4 * CHUNK, "{}", r.framer.capacity());
            assert_eq!(r.next_line().unwrap(), Line::Complete(b"after".to_vec()));
            assert_eq!(r.next_line().unwrap(), Line::Eof);
        }
    }

    #[test]
    fn a_long_line_is_reported_before_its_end_arrives() {
        // The peer sends no newline and waits: the reader must not wait for one.
        let mut r = LineReader::new(Trickle(vec![b'r'; 100], 1), 8);
        assert_eq!(r.next_line().unwrap(), Line::TooLong);
        assert_eq!(r.next_line().unwrap(), Line::Eof);
    }
}
