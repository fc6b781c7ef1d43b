//! Text a guest chose (its lifecycle error messages, its failure string), made safe to print
//! on a host terminal or into a log another program parses: control characters (C0, DEL, C1)
//! and the Unicode bidirectional controls become visible escapes (`\n`, `\x1b`, `\u{202e}`),
//! a backslash becomes `\\` (so an escape in the output always means one in the input), and
//! the result is cut at a bounded length. One guest message is then exactly one host line, and
//! it cannot move the cursor, recolour the terminal or forge a line such as
//! `micro-vmm: VM stopped: SHUTDOWN`.

use std::fmt::Write;

/// Longest guest text printed, in characters of output (escapes counted as written).
pub const MAX_PRINTED: usize = 512;

/// `text` escaped as the module says, at most `max` characters of output plus `...` when
/// it was cut.
pub fn escape(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max) + 3);
    let mut used = 0;
    for c in text.chars() {
        let mut piece = String::new();
        match c {
            '\n' => piece.push_str("\\n"),
            '\r' => piece.push_str("\\r"),
            '\t' => piece.push_str("\\t"),
            '\\' => piece.push_str("\\\\"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(piece, "\\x{:02x}", c as u32);
            }
            c if (0x80..=0x9f).contains(&(c as u32))
                || ('\u{202a}'..='\u{202e}').contains(&c)
                || ('\u{2066}'..='\u{2069}').contains(&c) =>
            {
                let _ = write!(piece, "\\u{{{:x}}}", c as u32);
            }
            c => piece.push(c),
        }
        let n = piece.chars().count();
        if used + n > max {
            out.push_str("...");
            return out;
        }
        used += n;
        out.push_str(&piece);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_visible() {
        assert_eq!(escape("plain text é", 100), "plain text é");
        assert_eq!(
            escape("a\nmicro-vmm: VM stopped: SHUTDOWN", 100),
            "a\\nmicro-vmm: VM stopped: SHUTDOWN"
        );
        assert_eq!(escape("\x1b[2J\r\t\0\x7f", 100), "\\x1b[2J\\r\\t\\x00\\x7f");
        assert_eq!(escape("\u{9b}31m", 100), "\\u{9b}31m");
        assert_eq!(escape("abc\u{202e}cba", 100), "abc\\u{202e}cba");
        // A literal backslash sequence in the input stays distinguishable from an escape.
        assert_eq!(escape("\\x1b", 100), "\\\\x1b");
        assert!(!escape("x\ny\rz\x1b", 100).contains(['\n', '\r', '\x1b']));
    }

    #[test]
    fn length_is_bounded() {
        let long = "x".repeat(10_000);
        let e = escape(&long, MAX_PRINTED);
        assert_eq!(e.len(), MAX_PRINTED + 3);
        assert!(e.ends_with("..."));
        // Escapes count with their written length and are never split.
        let e = escape(&"\n".repeat(100), 5);
        assert_eq!(e, "\\n\\n...");
        assert_eq!(escape("ab", 2), "ab");
        assert_eq!(escape("", 0), "");
    }
}
