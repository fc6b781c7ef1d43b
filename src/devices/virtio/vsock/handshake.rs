//! The `CONNECT <port>\n` line a host program sends first: parsed a byte at a time into a
//! bounded buffer that survives between wakeups, so a line split over many writes works and
//! nothing after the newline is consumed. Garbage is refused at its first bad byte.

use super::CONNECT_LINE_MAX;

/// The `CONNECT <port>\n` line of a host connection, as far as it has arrived.
#[derive(Debug, Default)]
pub struct LineBuf {
    buf: [u8; CONNECT_LINE_MAX],
    len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// A valid beginning; more to come.
    Partial,
    Port(u32),
    /// Garbage or too long: close the connection.
    Invalid,
}

impl LineBuf {
    /// Takes the next byte of the line (the caller reads one byte at a time, so nothing past
    /// the newline is consumed).
    pub fn push(&mut self, b: u8) -> Line {
        if b == b'\n' {
            return match scan_connect(&self.buf[..self.len], true) {
                Ok(Some(port)) => Line::Port(port),
                _ => Line::Invalid,
            };
        }
        // The newline must fit too.
        if self.len + 1 >= CONNECT_LINE_MAX {
            return Line::Invalid;
        }
        self.buf[self.len] = b;
        self.len += 1;
        match scan_connect(&self.buf[..self.len], false) {
            Ok(_) => Line::Partial,
            Err(()) => Line::Invalid,
        }
    }
}

/// Checks `line` (without its newline) against `connect<blanks><decimal port><blanks>`, the
/// keyword in any case; trailing blanks may include `\r`. With `complete`, returns the port;
/// without, only says whether the line can still become valid.
fn scan_connect(line: &[u8], complete: bool) -> Result<Option<u32>, ()> {
    const KEYWORD: &[u8] = b"connect";
    let kw = line.len().min(KEYWORD.len());
    if !line[..kw].eq_ignore_ascii_case(&KEYWORD[..kw]) {
        return Err(());
    }
    // 0: blank required, 1: blanks, 2: digits, 3: trailing blanks.
    let mut phase = 0;
    let mut port: u64 = 0;
    for &c in line.get(KEYWORD.len()..).unwrap_or(&[]) {
        let blank = c == b' ' || c == b'\t';
        phase = match (phase, c) {
            (0 | 1, _) if blank => 1,
            (1 | 2, b'0'..=b'9') => {
                port = port * 10 + u64::from(c - b'0');
                if port > u64::from(u32::MAX) {
                    return Err(());
                }
                2
            }
            (2 | 3, _) if blank || c == b'\r' => 3,
            _ => return Err(()),
        };
    }
    if !complete {
        return Ok(None);
    }
    match phase {
        2 | 3 => Ok(u32::try_from(port).ok()),
        _ => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(bytes: &[u8]) -> Vec<Line> {
        let mut l = LineBuf::default();
        bytes.iter().map(|&b| l.push(b)).collect()
    }

    fn last(bytes: &[u8]) -> Line {
        *feed(bytes).last().unwrap()
    }

    #[test]
    fn connect_lines() {
        assert_eq!(last(b"CONNECT 52\n"), Line::Port(52));
        assert_eq!(last(b"connect 52\n"), Line::Port(52));
        assert_eq!(last(b"CoNnEcT\t 1234567890\r\n"), Line::Port(1234567890));
        assert_eq!(last(b"connect 4294967295\n"), Line::Port(u32::MAX));
        assert_eq!(last(b"connect 4294967296\n"), Line::Invalid);
        assert_eq!(last(b"connect\n"), Line::Invalid);
        assert_eq!(last(b"connect \n"), Line::Invalid);
        assert_eq!(last(b"connect52\n"), Line::Invalid);
        assert_eq!(last(b"connect 5 2\n"), Line::Invalid);
        assert_eq!(last(b"connect -1\n"), Line::Invalid);
        assert_eq!(last(b"\n"), Line::Invalid);
        // Garbage is refused at its first bad byte, not at the newline.
        assert_eq!(feed(b"GET /"), vec![Line::Invalid; 5]);
        assert_eq!(
            feed(b"conx"),
            vec![Line::Partial, Line::Partial, Line::Partial, Line::Invalid]
        );
        assert_eq!(last(b"connect 1x"), Line::Invalid);
        // At most 31 bytes before the newline.
        let mut long = b"connect".to_vec();
        long.extend(std::iter::repeat_n(b' ', 23));
        long.push(b'7');
        assert_eq!(long.len(), 31);
        let mut ok = long.clone();
        ok.push(b'\n');
        assert_eq!(last(&ok), Line::Port(7));
        long.push(b' ');
        assert_eq!(last(&long), Line::Invalid);
    }
}
