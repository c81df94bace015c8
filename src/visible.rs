//! Makes control bytes visible: the one rule for text a service wrote that
//! is shown to a human (the daemon's console and log, the CLI's `logs`).
//!
//! A service's bytes can drive a terminal: `ESC [2J` clears it, an OSC
//! sequence retitles it or (on some terminals) writes files, CR rewrites a
//! line so a log can lie, BEL rings. So every C0 control but TAB, DEL, the
//! C1 controls (U+0080 to U+009F, which some terminals obey as 8-bit
//! escapes) and bytes that are not UTF-8 are written as `\xNN`, one per
//! byte, as `journalctl` and `systemd-cat` users are used to. Everything
//! else passes as is; a backslash is not doubled (this is for reading, not
//! for parsing back). The JSON paths (`logs -j`) keep the exact text.
//!
//! No allocation: the caller's sink gets whole pieces (one character, or
//! one `\xNN`), so a bounded buffer can stop at a piece boundary and never
//! holds half a character or half an escape.

/// Whether a character must be escaped.
pub fn is_control(c: char) -> bool {
    let u = u32::from(c);
    (u < 0x20 && c != '\t') || (0x7f..0xa0).contains(&u)
}

/// `\xNN` for one byte.
pub fn hex(b: u8) -> [u8; 4] {
    let d = |n: u8| if n < 10 { b'0' + n } else { b'a' + n - 10 };
    [b'\\', b'x', d(b >> 4), d(b & 15)]
}

/// Feeds `sink` the visible form of `bytes`, piece by piece, until the
/// sink returns false. Returns false if the sink stopped it.
pub fn escape(bytes: &[u8], sink: &mut impl FnMut(&[u8]) -> bool) -> bool {
    for chunk in bytes.utf8_chunks() {
        if !escape_str(chunk.valid(), sink) {
            return false;
        }
        for &b in chunk.invalid() {
            if !sink(&hex(b)) {
                return false;
            }
        }
    }
    true
}

/// The same for text already known to be UTF-8.
pub fn escape_str(s: &str, sink: &mut impl FnMut(&[u8]) -> bool) -> bool {
    let mut utf8 = [0u8; 4];
    for c in s.chars() {
        let e = c.encode_utf8(&mut utf8);
        if is_control(c) {
            for &b in e.as_bytes() {
                if !sink(&hex(b)) {
                    return false;
                }
            }
        } else if !sink(e.as_bytes()) {
            return false;
        }
    }
    true
}

/// Whether `bytes` would be shown as they are.
pub fn is_plain(bytes: &[u8]) -> bool {
    core::str::from_utf8(bytes).is_ok_and(|s| !s.chars().any(is_control))
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn vis(b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        escape(b, &mut |p| {
            out.extend_from_slice(p);
            true
        });
        out
    }

    #[test]
    fn controls_become_hex_and_text_stays() {
        assert_eq!(vis(b"\x1b[2Jhi\x07\r\n"), b"\\x1b[2Jhi\\x07\\x0d\\x0a");
        assert_eq!(vis(b"a\tb\x7f\x00"), b"a\tb\\x7f\\x00");
        assert_eq!(
            vis("caf\u{e9} \u{9b}".as_bytes()),
            "caf\u{e9} \\xc2\\x9b".as_bytes()
        );
        assert_eq!(vis(b"x\xff\x9by"), b"x\\xff\\x9by");
        assert_eq!(vis(b"back\\slash"), b"back\\slash");
        assert!(is_plain("a\tb \u{e9}".as_bytes()));
        assert!(!is_plain(b"a\x1b") && !is_plain(b"\xff"));
    }

    #[test]
    fn a_sink_that_stops_gets_whole_pieces() {
        let mut got: Vec<Vec<u8>> = Vec::new();
        let done = escape("a\x1b\u{e9}b".as_bytes(), &mut |p| {
            got.push(p.to_vec());
            got.len() < 3
        });
        assert!(!done);
        assert_eq!(
            got,
            [
                b"a".to_vec(),
                b"\\x1b".to_vec(),
                "\u{e9}".as_bytes().to_vec()
            ]
        );
    }
}
