//! Splitting a byte stream into `\n`-terminated lines with a bound on the line length, so a
//! peer that never sends a newline cannot make us buffer without limit. Push-based: the
//! caller reads however it likes (non-blocking sockets, a blocking `Read`) and pushes the
//! bytes. Used by the control socket, the lifecycle service and the guest agent.

/// One unit of input framing.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete line, without its newline.
    Line(Vec<u8>),
    /// A line longer than the limit; its bytes were dropped (and the rest of it will be).
    TooLong,
}

/// Lines of at most `max` bytes, newline included. Never holds more than `max` plus one
/// push's worth of bytes.
#[derive(Debug)]
pub struct LineFramer {
    buf: Vec<u8>,
    max: usize,
    /// Skipping the rest of an over-long line.
    discarding: bool,
}

impl LineFramer {
    /// A framer for lines of at most `max` bytes (`max` >= 1), the newline included.
    pub fn new(max: usize) -> LineFramer {
        LineFramer {
            buf: Vec::new(),
            max: max.max(1),
            discarding: false,
        }
    }

    /// Appends bytes read from the peer.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Bytes allocated for the buffer (what a flood of one endless line costs).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Drops what is held (an unterminated last line at the end of the stream).
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// True when more input could be taken (the caller stops reading otherwise).
    pub fn wants_input(&self) -> bool {
        self.buf.len() < self.max
    }

    /// The next frame, if one is complete. A line that reaches `max` bytes without its
    /// newline is reported as [`Frame::TooLong`] at once; the rest of it is skipped.
    pub fn next_frame(&mut self) -> Option<Frame> {
        loop {
            let newline = self.buf.iter().position(|&b| b == b'\n');
            if self.discarding {
                match newline {
                    Some(i) => {
                        self.buf.drain(..=i);
                        self.discarding = false;
                        continue;
                    }
                    None => {
                        self.buf.clear();
                        return None;
                    }
                }
            }
            return match newline {
                Some(i) if i < self.max => {
                    let mut line: Vec<u8> = self.buf.drain(..=i).collect();
                    line.pop();
                    Some(Frame::Line(line))
                }
                Some(i) => {
                    self.buf.drain(..=i);
                    Some(Frame::TooLong)
                }
                None if self.buf.len() >= self.max => {
                    self.buf.clear();
                    self.discarding = true;
                    Some(Frame::TooLong)
                }
                None => None,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole contract for lines of at most `max` bytes.
    fn check(max: usize) {
        let mut r = LineFramer::new(max);
        r.push(b"ab\ncd");
        assert_eq!(r.next_frame(), Some(Frame::Line(b"ab".to_vec())));
        assert_eq!(r.next_frame(), None);
        r.push(b"e\n\n");
        assert_eq!(r.next_frame(), Some(Frame::Line(b"cde".to_vec())));
        assert_eq!(r.next_frame(), Some(Frame::Line(Vec::new())));
        // Exactly `max` with its newline is fine; one more byte is too long.
        let mut ok = vec![b'x'; max - 1];
        ok.push(b'\n');
        r.push(&ok);
        assert!(matches!(r.next_frame(), Some(Frame::Line(l)) if l.len() == max - 1));
        let mut long = vec![b'x'; max];
        long.extend_from_slice(b"\nnext\n");
        r.push(&long);
        assert_eq!(r.next_frame(), Some(Frame::TooLong));
        assert_eq!(r.next_frame(), Some(Frame::Line(b"next".to_vec())));
        // A line that never ends is reported once and skipped without being held.
        let push = max - max / 16;
        let mut too_long = 0;
        for _ in 0..20 {
            r.push(&vec![b'y'; push]);
            assert!(r.len() <= 2 * max);
            while let Some(f) = r.next_frame() {
                assert_eq!(f, Frame::TooLong);
                too_long += 1;
            }
            assert!(r.wants_input());
        }
        assert_eq!(too_long, 1);
        r.push(b"tail\nok\npart");
        assert_eq!(r.next_frame(), Some(Frame::Line(b"ok".to_vec())));
        assert_eq!(r.next_frame(), None);
        r.clear();
        assert!(r.is_empty());
    }

    #[test]
    fn splits_lines_and_caps_them() {
        check(16);
        check(crate::lifecycle::MAX_LINE);
        check(crate::api::control::protocol::MAX_LINE);
    }
}
