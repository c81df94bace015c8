//! One service event as one JSON line: the schema `events -j` prints and
//! the daemon appends to `coffey.events.path` (docs/CLI.md). One writer
//! for both, so the two are byte for byte the same. It writes into a
//! fixed buffer, escaping as JSON asks, and never allocates (the daemon
//! calls it after startup):
//!
//! `{"ts_ms":N,"ts":"2026-11-22T03:50:00.123Z","service":"api","event":"spawned","state":"running","pid":1234,"detail":"..."}`
//!
//! `pid` is `null` without a process. A detail too long for the buffer is
//! cut at a character boundary: the line stays valid JSON.

use super::proto::{event, WireState};
use crate::stamp::Stamp;
use core::fmt::Write as _;

/// The longest line: an event detail is at most a daemon log line.
pub const LINE_MAX: usize = 2048;
/// What has to fit after the detail: `"}` and the newline.
const TAIL: usize = 3;

pub struct EventLine {
    buf: [u8; LINE_MAX],
    len: usize,
}

impl Default for EventLine {
    fn default() -> Self {
        EventLine {
            buf: [0; LINE_MAX],
            len: 0,
        }
    }
}

/// For the timestamp: text that does not fit (with the tail) is left out.
impl core::fmt::Write for EventLine {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.raw(s.as_bytes());
        Ok(())
    }
}

impl EventLine {
    /// The line of one event, newline included.
    pub fn event(
        &mut self,
        ts_ms: u64,
        service: &str,
        kind: u8,
        state: WireState,
        pid: i32,
        detail: &str,
    ) -> &[u8] {
        self.len = 0;
        self.raw(b"{\"ts_ms\":");
        self.num(ts_ms);
        self.raw(b",\"ts\":\"");
        self.stamp(ts_ms);
        self.raw(b"\",\"service\":\"");
        self.escaped(service);
        self.raw(b"\",\"event\":\"");
        self.raw(event::name(kind).as_bytes());
        self.raw(b"\",\"state\":\"");
        self.raw(state.as_str().as_bytes());
        self.raw(b"\",\"pid\":");
        match u64::try_from(pid) {
            Ok(p) if p > 0 => self.num(p),
            _ => self.raw(b"null"),
        }
        self.raw(b",\"detail\":\"");
        self.escaped(detail);
        self.len = self.len.min(LINE_MAX - TAIL);
        self.raw(b"\"}\n");
        self.buf.get(..self.len).unwrap_or(&[])
    }

    /// Appends `b` if it fits with the tail still after it.
    fn fits(&mut self, b: &[u8], reserve: usize) -> bool {
        let end = self.len + b.len();
        if end + reserve > LINE_MAX {
            return false;
        }
        if let Some(d) = self.buf.get_mut(self.len..end) {
            d.copy_from_slice(b);
            self.len = end;
        }
        true
    }

    fn raw(&mut self, b: &[u8]) {
        self.fits(b, 0);
    }

    fn num(&mut self, mut v: u64) {
        let mut d = [0u8; 20];
        let mut i = d.len();
        loop {
            i -= 1;
            if let Some(c) = d.get_mut(i) {
                *c = b'0' + (v % 10) as u8;
            }
            v /= 10;
            if v == 0 || i == 0 {
                break;
            }
        }
        self.raw(d.get(i..).unwrap_or(&[]));
    }

    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    fn stamp(&mut self, ms: u64) {
        let _ = write!(self, "{}", Stamp(ms));
    }

    /// `s` as the inside of a JSON string, as far as it fits before the
    /// tail; whole characters only.
    fn escaped(&mut self, s: &str) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut utf8 = [0u8; 4];
        for ch in s.chars() {
            let esc: &[u8] = match ch {
                '"' => b"\\\"",
                '\\' => b"\\\\",
                '\n' => b"\\n",
                '\r' => b"\\r",
                '\t' => b"\\t",
                c if (c as u32) < 0x20 => {
                    let b = c as u8;
                    let u = [
                        b'\\',
                        b'u',
                        b'0',
                        b'0',
                        *HEX.get(usize::from(b >> 4)).unwrap_or(&b'0'),
                        *HEX.get(usize::from(b & 15)).unwrap_or(&b'0'),
                    ];
                    if !self.fits(&u, TAIL) {
                        return;
                    }
                    continue;
                }
                c => c.encode_utf8(&mut utf8).as_bytes(),
            };
            if !self.fits(esc, TAIL) {
                return;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::string::String;

    fn line(service: &str, pid: i32, detail: &str) -> String {
        let mut l = EventLine::default();
        let b = l.event(
            1_795_319_400_123,
            service,
            event::SPAWNED,
            WireState::Running,
            pid,
            detail,
        );
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn a_line_has_the_documented_fields_in_order() {
        assert_eq!(
            line("api", 42, "exit code 1"),
            "{\"ts_ms\":1795319400123,\"ts\":\"2026-11-22T03:50:00.123Z\",\"service\":\"api\",\"event\":\"spawned\",\"state\":\"running\",\"pid\":42,\"detail\":\"exit code 1\"}\n"
        );
        assert!(line("api", 0, "").contains("\"pid\":null,"));
        let mut l = EventLine::default();
        let epoch = l.event(5, "", event::RELOADED, WireState::Running, 0, "");
        assert!(epoch.starts_with(b"{\"ts_ms\":5,\"ts\":\"1970-01-01T00:00:00.005Z\""));
    }

    #[test]
    fn strings_are_escaped_and_a_long_detail_is_cut_to_valid_json() {
        let l = line("a\"b", 1, "tab\there \\ \u{1} é\n");
        assert!(l.contains("\"service\":\"a\\\"b\""), "{l}");
        assert!(
            l.contains("\"detail\":\"tab\\there \\\\ \\u0001 é\\n\"}"),
            "{l}"
        );
        let long = "é".repeat(LINE_MAX);
        let l = line("api", 1, &long);
        assert!(l.len() <= LINE_MAX && l.ends_with("é\"}\n"), "{}", l.len());
        let long = "\u{2}".repeat(LINE_MAX);
        let l = line("api", 1, &long);
        assert!(l.ends_with("\\u0002\"}\n"), "{l}");
    }
}
