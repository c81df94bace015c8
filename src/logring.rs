//! Fixed-size ring of output lines, and the per-stream line assembler.
//!
//! The ring borrows its bytes from the shell (allocated once at startup) and
//! never grows: when full, the oldest lines are evicted and counted. A line
//! longer than [`LINE_MAX`](crate::limits::LINE_MAX) (or than the ring) is
//! cut and the cut is marked, so a service flooding output costs CPU, never
//! memory.
//!
//! Record layout: `len: u16 LE | flags: u8 | ts_ms: u64 LE | data[len]`.

use crate::limits::LINE_MAX;

const HDR: usize = 11;
/// The line came from stderr (otherwise stdout).
pub const FLAG_STDERR: u8 = 1;
/// The line was longer than the limit and was cut.
pub const FLAG_CUT: u8 = 2;
/// The line came from an exec health check of the service.
pub const FLAG_CHECK: u8 = 4;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
    /// Output of an exec health check.
    Check,
}

impl Stream {
    /// The number on the wire (docs/PROTOCOL.md).
    pub fn wire(self) -> u8 {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
            Stream::Check => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Check => "check",
        }
    }
}

/// One line as stored. `data` is in two parts because the ring wraps.
#[derive(Debug)]
pub struct Line<'a> {
    pub ts_ms: u64,
    pub stream: Stream,
    pub cut: bool,
    pub data: (&'a [u8], &'a [u8]),
}

pub struct LogRing<'a> {
    buf: &'a mut [u8],
    /// Offset of the oldest record.
    head: usize,
    /// Bytes in use.
    used: usize,
    lines: usize,
    /// Lines evicted to make room, since startup.
    pub evicted: u64,
    /// Lines that were cut, since startup.
    pub cut: u64,
    /// Lines stored since startup; the newest line's sequence number is
    /// `pushed - 1`, the oldest kept is `pushed - len()`.
    pub pushed: u64,
}

impl<'a> LogRing<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        LogRing {
            buf,
            head: 0,
            used: 0,
            lines: 0,
            evicted: 0,
            cut: 0,
            pushed: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.buf.len()
    }
    pub fn len(&self) -> usize {
        self.lines
    }
    pub fn is_empty(&self) -> bool {
        self.lines == 0
    }

    fn byte(&self, off: usize) -> u8 {
        let cap = self.buf.len();
        if cap == 0 {
            return 0;
        }
        self.buf.get((self.head + off) % cap).copied().unwrap_or(0)
    }

    fn put(&mut self, off: usize, src: &[u8]) {
        let cap = self.buf.len();
        if cap == 0 {
            return;
        }
        for (i, b) in src.iter().enumerate() {
            if let Some(slot) = self.buf.get_mut((off + i) % cap) {
                *slot = *b;
            }
        }
    }

    fn rec_len_at(&self, off: usize) -> usize {
        HDR + usize::from(u16::from_le_bytes([self.byte(off), self.byte(off + 1)]))
    }

    fn evict_one(&mut self) {
        if self.lines == 0 {
            return;
        }
        let n = self.rec_len_at(0).min(self.used);
        let cap = self.buf.len().max(1);
        self.head = (self.head + n) % cap;
        self.used -= n;
        self.lines -= 1;
        self.evicted = self.evicted.saturating_add(1);
    }

    /// Stores one line (without its newline). Returns false if the ring is
    /// too small to hold even a header.
    pub fn push(&mut self, ts_ms: u64, stream: Stream, mut cut: bool, data: &[u8]) -> bool {
        let cap = self.buf.len();
        if cap <= HDR {
            return false;
        }
        let max = (cap - HDR).min(usize::from(u16::MAX)).min(LINE_MAX);
        let data = if data.len() > max {
            cut = true;
            data.get(..max).unwrap_or(data)
        } else {
            data
        };
        if cut {
            self.cut = self.cut.saturating_add(1);
        }
        let need = HDR + data.len();
        while cap - self.used < need {
            self.evict_one();
        }
        let mut flags = 0;
        match stream {
            Stream::Stdout => {}
            Stream::Stderr => flags |= FLAG_STDERR,
            Stream::Check => flags |= FLAG_CHECK,
        }
        if cut {
            flags |= FLAG_CUT;
        }
        // `data.len() <= LINE_MAX < u16::MAX`, so the cast is exact.
        let len = (data.len() as u16).to_le_bytes();
        let ts = ts_ms.to_le_bytes();
        let at = self.head + self.used;
        self.put(at, &len);
        self.put(at + 2, &[flags]);
        self.put(at + 3, &ts);
        self.put(at + HDR, data);
        self.used += need;
        self.lines += 1;
        self.pushed = self.pushed.saturating_add(1);
        true
    }

    /// Empties the ring for a new service in this slot. `pushed` keeps
    /// counting, so sequence numbers never go back.
    pub fn clear(&mut self) {
        self.head = 0;
        self.used = 0;
        self.lines = 0;
        self.evicted = 0;
        self.cut = 0;
    }

    /// Sequence number of the oldest line kept.
    pub fn first_seq(&self) -> u64 {
        self.pushed.saturating_sub(self.lines as u64)
    }

    /// Calls `f` for each stored line, oldest first.
    pub fn for_each(&self, mut f: impl FnMut(Line<'_>)) {
        self.try_for_each_from(0, |_, l| {
            f(l);
            true
        });
    }

    /// Calls `f(seq, line)` for lines with sequence >= `from`, oldest
    /// first, until it returns false.
    pub fn try_for_each_from(&self, from: u64, mut f: impl FnMut(u64, Line<'_>) -> bool) {
        let cap = self.buf.len();
        let mut off = 0;
        let first = self.first_seq();
        for k in 0..self.lines {
            let seq = first + k as u64;
            let n = self.rec_len_at(off);
            let flags = self.byte(off + 2);
            let mut ts = [0u8; 8];
            for (i, b) in ts.iter_mut().enumerate() {
                *b = self.byte(off + 3 + i);
            }
            let start = (self.head + off + HDR) % cap;
            let dlen = n - HDR;
            let first = dlen.min(cap - start);
            let a = self.buf.get(start..start + first).unwrap_or(&[]);
            let b = self.buf.get(..dlen - first).unwrap_or(&[]);
            off += n;
            if seq < from {
                continue;
            }
            let go = f(
                seq,
                Line {
                    ts_ms: u64::from_le_bytes(ts),
                    stream: if flags & FLAG_CHECK != 0 {
                        Stream::Check
                    } else if flags & FLAG_STDERR != 0 {
                        Stream::Stderr
                    } else {
                        Stream::Stdout
                    },
                    cut: flags & FLAG_CUT != 0,
                    data: (a, b),
                },
            );
            if !go {
                return;
            }
        }
    }
}

/// Assembles lines from pipe reads for one stream. Holds at most
/// [`LINE_MAX`] bytes of an unfinished line; the rest of an overlong line is
/// dropped up to its newline and the line is marked cut.
pub struct LineBuf {
    buf: [u8; LINE_MAX],
    len: usize,
    /// Dropping the tail of an overlong line until its newline.
    skipping: bool,
}

impl Default for LineBuf {
    fn default() -> Self {
        LineBuf {
            buf: [0; LINE_MAX],
            len: 0,
            skipping: false,
        }
    }
}

impl LineBuf {
    /// Feeds bytes; calls `emit(line, cut)` for each complete line.
    pub fn feed(&mut self, mut input: &[u8], mut emit: impl FnMut(&[u8], bool)) {
        while !input.is_empty() {
            let nl = input.iter().position(|&b| b == b'\n');
            let (chunk, rest, complete) = match nl {
                Some(i) => (
                    input.get(..i).unwrap_or(&[]),
                    input.get(i + 1..).unwrap_or(&[]),
                    true,
                ),
                None => (input, &[][..], false),
            };
            input = rest;
            if self.skipping {
                if complete {
                    self.skipping = false;
                }
                continue;
            }
            let room = LINE_MAX - self.len;
            let take = chunk.len().min(room);
            if let (Some(dst), Some(src)) = (
                self.buf.get_mut(self.len..self.len + take),
                chunk.get(..take),
            ) {
                dst.copy_from_slice(src);
            }
            self.len += take;
            if take < chunk.len() {
                // Overlong: emit what fits, marked cut, then skip to newline.
                emit(self.buf.get(..self.len).unwrap_or(&[]), true);
                self.len = 0;
                self.skipping = !complete;
            } else if complete {
                emit(self.buf.get(..self.len).unwrap_or(&[]), false);
                self.len = 0;
            }
        }
    }

    /// Emits a pending partial line (at EOF or when the service exits).
    pub fn flush(&mut self, mut emit: impl FnMut(&[u8], bool)) {
        if self.len > 0 {
            emit(self.buf.get(..self.len).unwrap_or(&[]), false);
        }
        self.clear();
    }

    /// Forgets a pending partial line. Writes nothing when there is none:
    /// the daemon keeps line buffers in fresh zeroed pages, which cost
    /// memory only once written, so a quiet stream's never is.
    pub fn clear(&mut self) {
        if self.len != 0 || self.skipping {
            self.len = 0;
            self.skipping = false;
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, clippy::disallowed_macros)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn lines(r: &LogRing) -> Vec<(Vec<u8>, Stream, bool)> {
        let mut v = Vec::new();
        r.for_each(|l| {
            let mut d = l.data.0.to_vec();
            d.extend_from_slice(l.data.1);
            v.push((d, l.stream, l.cut));
        });
        v
    }

    #[test]
    fn stores_and_evicts_oldest() {
        let mut mem = [0u8; 64];
        let mut r = LogRing::new(&mut mem);
        for i in 0..10u8 {
            assert!(r.push(u64::from(i), Stream::Stdout, false, &[b'a' + i; 10]));
        }
        // 21 bytes per record, 64 bytes: 3 fit.
        let l = lines(&r);
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].0, [b'h'; 10]);
        assert_eq!(l[2].0, [b'j'; 10]);
        assert_eq!(r.evicted, 7);
    }

    #[test]
    fn wraps_correctly_with_odd_sizes() {
        let mut mem = [0u8; 50];
        let mut r = LogRing::new(&mut mem);
        for i in 0..100usize {
            let data: Vec<u8> = (0..(i % 7)).map(|k| k as u8 + b'0').collect();
            r.push(i as u64, Stream::Stderr, false, &data);
            let l = lines(&r);
            let last = l.last().unwrap();
            assert_eq!(last.0, data);
            assert_eq!(last.1, Stream::Stderr);
        }
    }

    #[test]
    fn overlong_line_is_cut_and_marked() {
        let mut mem = [0u8; 40];
        let mut r = LogRing::new(&mut mem);
        r.push(1, Stream::Stdout, false, &[b'x'; 100]);
        let l = lines(&r);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].0.len(), 40 - HDR);
        assert!(l[0].2);
        assert_eq!(r.cut, 1);
    }

    #[test]
    fn sequence_numbers_survive_eviction() {
        let mut mem = [0u8; 64];
        let mut r = LogRing::new(&mut mem);
        for i in 0..10u8 {
            r.push(0, Stream::Stdout, false, &[b'0' + i; 10]);
        }
        assert_eq!(r.pushed, 10);
        assert_eq!(r.first_seq(), 7);
        let mut seen = Vec::new();
        r.try_for_each_from(8, |seq, l| {
            seen.push((seq, l.data.0.first().copied().or(l.data.1.first().copied())));
            seq < 8
        });
        assert_eq!(seen, [(8, Some(b'8')), (9, Some(b'9'))][..1]);
    }

    #[test]
    fn tiny_ring_rejects() {
        let mut mem = [0u8; 5];
        let mut r = LogRing::new(&mut mem);
        assert!(!r.push(1, Stream::Stdout, false, b"hi"));
    }

    #[test]
    fn linebuf_assembles_across_reads() {
        let mut lb = LineBuf::default();
        let mut out: Vec<(Vec<u8>, bool)> = Vec::new();
        lb.feed(b"hel", |l, c| out.push((l.to_vec(), c)));
        assert!(out.is_empty());
        lb.feed(b"lo\nwor", |l, c| out.push((l.to_vec(), c)));
        lb.feed(b"ld\n\n", |l, c| out.push((l.to_vec(), c)));
        assert_eq!(
            out,
            [
                (b"hello".to_vec(), false),
                (b"world".to_vec(), false),
                (b"".to_vec(), false)
            ]
        );
    }

    #[test]
    fn linebuf_cuts_overlong_and_resyncs() {
        let mut lb = LineBuf::default();
        let mut out: Vec<(usize, bool)> = Vec::new();
        let big = [b'z'; LINE_MAX * 3];
        lb.feed(&big, |l, c| out.push((l.len(), c)));
        lb.feed(&big, |l, c| out.push((l.len(), c)));
        lb.feed(b"tail\nnext\n", |l, c| out.push((l.len(), c)));
        assert_eq!(out, [(LINE_MAX, true), (4, false)]);
        lb.feed(b"partial", |l, c| out.push((l.len(), c)));
        lb.flush(|l, c| out.push((l.len(), c)));
        assert_eq!(out.last(), Some(&(7, false)));
    }
}
