//! The daemon's own log: timestamped lines to the console (stderr) and/or
//! `coffey.log.path`. Lines are formatted into a fixed stack buffer (too
//! long: cut) and written with write(2); errors are ignored, because a
//! closed console must never stop the daemon (`println!` would panic).
//!
//! The log is bounded three ways, all without allocating:
//! - the file rotates by size (`log.max_size`, `log.keep`), with the same
//!   code as service logs (`logfile.rs`);
//! - a line identical to the one before (compared without its timestamp)
//!   is counted, not written, and the count is written as `last message
//!   repeated N times` when a different line comes or `REPEAT_FLUSH_MS`
//!   after the first repeat (the loop sleeps until `poll_at`), as syslogd
//!   does;
//! - text is made visible (`coffey::visible`): a service's control bytes
//!   never reach the console or the file raw. A newline in a message of
//!   the daemon's own (multi-line diagnostics) continues on an indented
//!   line, so it can never pass for a line of its own.

use super::clock::{now, wall_ms, Stamp};
pub use super::logfile::write_all;
use super::logfile::{LogFile, Problem};
use coffey::limits::LOG_LINE_MAX;
use coffey::time::Instant;
use coffey::visible;
use core::fmt::{self, Write};

/// A `fmt::Write` into a fixed buffer that silently truncates.
pub struct LineBuf {
    buf: [u8; LOG_LINE_MAX],
    len: usize,
}

impl Default for LineBuf {
    fn default() -> Self {
        LineBuf {
            buf: [0; LOG_LINE_MAX],
            len: 0,
        }
    }
}

impl LineBuf {
    pub fn clear(&mut self) {
        self.len = 0;
    }
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }
    pub fn push_bytes(&mut self, b: &[u8]) {
        let room = LOG_LINE_MAX.saturating_sub(self.len);
        let n = b.len().min(room);
        if let (Some(d), Some(s)) = (self.buf.get_mut(self.len..self.len + n), b.get(..n)) {
            d.copy_from_slice(s);
        }
        self.len += n;
    }
    /// Appends `b` only if all of it fits with room left for the newline.
    pub fn push_whole(&mut self, b: &[u8]) -> bool {
        if self.len + b.len() >= LOG_LINE_MAX {
            return false;
        }
        self.push_bytes(b);
        true
    }
    /// Ends the line with '\n', overwriting the last byte if full.
    pub fn newline(&mut self) {
        if self.len >= LOG_LINE_MAX {
            self.len = LOG_LINE_MAX - 1;
        }
        self.push_bytes(b"\n");
    }
}

impl Write for LineBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push_bytes(s.as_bytes());
        Ok(())
    }
}

/// A `fmt::Write` into a byte slice that keeps the text NUL-terminated
/// (for C strings built without allocating). Fails rather than truncates.
pub struct CWriter<'a> {
    b: &'a mut [u8],
    n: usize,
}

impl<'a> CWriter<'a> {
    pub fn new(b: &'a mut [u8]) -> Self {
        if let Some(first) = b.first_mut() {
            *first = 0;
        }
        CWriter { b, n: 0 }
    }
}

impl Write for CWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.n + s.len();
        if end >= self.b.len() {
            return Err(fmt::Error);
        }
        self.b
            .get_mut(self.n..end)
            .ok_or(fmt::Error)?
            .copy_from_slice(s.as_bytes());
        *self.b.get_mut(end).ok_or(fmt::Error)? = 0;
        self.n = end;
        Ok(())
    }
}

/// How long repeats of one line are counted before the count is written
/// anyway (syslogd's first interval is 30 s; a supervisor's console
/// should say sooner that something is looping).
pub const REPEAT_FLUSH_MS: u64 = 10_000;

pub struct Log {
    pub console: bool,
    /// The daemon log file, rotated by size; None: console only.
    file: Option<LogFile>,
    line: LineBuf,
    /// The last line written, without its timestamp.
    prev: LineBuf,
    /// Lines identical to `prev` since it (or the last count) was written.
    repeats: u32,
    /// When the count is written if no other line comes first.
    repeat_due: Instant,
}

impl Log {
    pub fn new(console: bool, file: Option<LogFile>) -> Log {
        Log {
            console,
            file,
            line: LineBuf::default(),
            prev: LineBuf::default(),
            repeats: 0,
            repeat_due: Instant::NEVER,
        }
    }

    /// One timestamped line: `<stamp> coffeyd: <message>`.
    pub fn line(&mut self, args: fmt::Arguments<'_>) {
        self.line.clear();
        let _ = write!(self.line, "{} ", Stamp(wall_ms()));
        let body = self.line.len;
        let _ = self.line.write_str("coffeyd: ");
        let _ = Visible(&mut self.line).write_fmt(args);
        self.line.newline();
        self.submit(body);
    }

    /// A copy of a service's output line (`log.console`), made visible:
    /// `<stamp> <name>[<stream>]: <text>[ [cut]]`.
    pub fn service_line(&mut self, stamp: u64, name: &str, stream: &str, text: &[u8], cut: bool) {
        self.line.clear();
        let _ = write!(self.line, "{} ", Stamp(stamp));
        let body = self.line.len;
        let _ = write!(self.line, "{name}[{stream}]: ");
        let line = &mut self.line;
        let _ = visible::escape(text, &mut |p| line.push_whole(p))
            && (!cut || line.push_whole(b" [cut]"));
        self.line.newline();
        self.submit(body);
    }

    /// The next time `tick` has something to write.
    pub fn poll_at(&self) -> Instant {
        if self.repeats > 0 {
            self.repeat_due
        } else {
            Instant::NEVER
        }
    }

    /// Writes a repeat count that is due.
    pub fn tick(&mut self, now: Instant) {
        if self.repeats > 0 && now >= self.repeat_due {
            self.flush_repeats();
        }
    }

    /// Writes any pending count and forgets the last line, so the next
    /// line is written whatever it says: for output someone asked for (a
    /// status dump), and before the daemon execs itself.
    pub fn break_repeats(&mut self) {
        self.flush_repeats();
        self.prev.clear();
    }

    /// Writes `self.line` unless its text from `body` on repeats the last
    /// line's.
    fn submit(&mut self, body: usize) {
        let text = self.line.as_bytes().get(body..).unwrap_or(&[]);
        if self.prev.len > 0 && text == self.prev.as_bytes() {
            self.repeats = self.repeats.saturating_add(1);
            if self.repeats == 1 {
                self.repeat_due = now().add(REPEAT_FLUSH_MS);
            }
            return;
        }
        self.flush_repeats();
        let Log {
            console,
            file,
            line,
            prev,
            ..
        } = self;
        prev.clear();
        prev.push_bytes(line.as_bytes().get(body..).unwrap_or(&[]));
        emit(*console, file, line.as_bytes());
    }

    /// `last message repeated N times` (the line itself for N = 1).
    fn flush_repeats(&mut self) {
        let n = core::mem::take(&mut self.repeats);
        if n == 0 {
            return;
        }
        let mut l = LineBuf::default();
        let _ = write!(l, "{} ", Stamp(wall_ms()));
        if n == 1 {
            l.push_bytes(self.prev.as_bytes());
        } else {
            let _ = write!(l, "coffeyd: last message repeated {n} times");
            l.newline();
        }
        emit(self.console, &mut self.file, l.as_bytes());
    }
}

/// Writes one whole line to the console and the file. A file that fails
/// says so once on stderr (its lines are lost until it works again: the
/// console, if on, still has them), and says when it recovers.
fn emit(console: bool, file: &mut Option<LogFile>, line: &[u8]) {
    if console {
        let _ = write_all(2, line);
    }
    let Some(f) = file.as_mut() else { return };
    match f.write(line, now().millis()) {
        Problem::None => {}
        Problem::Failed(e) => stderr_line(format_args!(
            "{} coffeyd: log file {}: {}; retrying every few seconds",
            Stamp(wall_ms()),
            f.path_str(),
            nix::errno::Errno::from_raw(e).desc()
        )),
        Problem::Recovered => {
            let mut l = LineBuf::default();
            let _ = write!(
                l,
                "{} coffeyd: log file {} writable again",
                Stamp(wall_ms()),
                f.path_str()
            );
            l.newline();
            if console {
                let _ = write_all(2, l.as_bytes());
            }
            let _ = f.write(l.as_bytes(), now().millis());
        }
    }
}

/// A `fmt::Write` that makes control characters visible on their way into
/// a line (see the module doc); stops at the first piece that does not fit.
pub struct Visible<'a>(pub &'a mut LineBuf);

impl Write for Visible<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let line = &mut *self.0;
        let mut parts = s.split('\n');
        let mut ok = parts
            .next()
            .is_none_or(|p| visible::escape_str(p, &mut |b| line.push_whole(b)));
        for p in parts {
            ok = ok
                && line.push_whole(b"\n    ")
                && visible::escape_str(p, &mut |b| line.push_whole(b));
        }
        if ok {
            Ok(())
        } else {
            Err(fmt::Error)
        }
    }
}

/// One line to stderr, ignoring errors: `eprintln!` panics when stderr is
/// gone, which PID 1 must never do. (Long lines are cut.)
pub fn stderr_line(args: fmt::Arguments<'_>) {
    let mut l = LineBuf::default();
    let _ = l.write_fmt(args);
    l.newline();
    let _ = write_all(2, l.as_bytes());
}

/// `log!(log, "fmt", args..)`: one daemon log line, no allocation.
macro_rules! log {
    ($log:expr, $($arg:tt)*) => {
        $log.line(format_args!($($arg)*))
    };
}
pub(crate) use log;

#[cfg(test)]
#[allow(clippy::disallowed_methods, clippy::disallowed_macros)]
mod tests {
    use super::*;

    fn file_log(tag: &str, max_size: u64, keep: u32) -> (Log, std::path::PathBuf) {
        use std::os::unix::ffi::OsStrExt;
        let dir = std::env::temp_dir().join(format!("cfy-log-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("d.log");
        let f = LogFile::new(p.as_os_str().as_bytes(), max_size, keep).unwrap();
        (Log::new(false, Some(f)), p)
    }

    /// The text of each line after its timestamp.
    fn bodies(p: &std::path::Path) -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| l.split_once(' ').unwrap().1.to_string())
            .collect()
    }

    #[test]
    fn repeats_are_counted_and_written_when_another_line_comes() {
        let (mut log, p) = file_log("rep", 1 << 20, 1);
        for _ in 0..5 {
            log!(log, "ignored SIGQUIT");
        }
        assert_eq!(bodies(&p), ["coffeyd: ignored SIGQUIT"]);
        assert_ne!(log.poll_at(), Instant::NEVER);
        log!(log, "other");
        log!(log, "once");
        log!(log, "once");
        log!(log, "end");
        assert_eq!(
            bodies(&p),
            [
                "coffeyd: ignored SIGQUIT",
                "coffeyd: last message repeated 4 times",
                "coffeyd: other",
                "coffeyd: once",
                "coffeyd: once",
                "coffeyd: end"
            ]
        );
        assert_eq!(log.poll_at(), Instant::NEVER);
    }

    #[test]
    fn a_count_is_written_at_its_deadline_and_counting_goes_on() {
        let (mut log, p) = file_log("due", 1 << 20, 1);
        log!(log, "x");
        log!(log, "x");
        log!(log, "x");
        let due = log.poll_at();
        assert!(due.since(now()) <= REPEAT_FLUSH_MS);
        log.tick(Instant::from_millis(due.millis() - 1));
        assert_eq!(bodies(&p).len(), 1);
        log.tick(due);
        assert_eq!(
            bodies(&p),
            ["coffeyd: x", "coffeyd: last message repeated 2 times"]
        );
        assert_eq!(log.poll_at(), Instant::NEVER);
        // Still the same line: counted again, not written.
        log!(log, "x");
        assert_eq!(bodies(&p).len(), 2);
        log.break_repeats();
        log!(log, "x");
        assert_eq!(
            bodies(&p),
            [
                "coffeyd: x",
                "coffeyd: last message repeated 2 times",
                "coffeyd: x",
                "coffeyd: x"
            ]
        );
    }

    #[test]
    fn control_bytes_are_made_visible() {
        let (mut log, p) = file_log("vis", 1 << 20, 1);
        log!(log, "svc: status: {}", "\x1b[2J\x07a\rb\tc\x7f");
        log.service_line(0, "svc", "stdout", b"\x1b]0;owned\x07\x00\xff\x1b", true);
        log!(log, "reload rejected: one\ntwo");
        let text = std::fs::read(&p).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains("coffeyd: svc: status: \\x1b[2J\\x07a\\x0db\tc\\x7f\n"),
            "{text}"
        );
        assert!(
            text.contains("svc[stdout]: \\x1b]0;owned\\x07\\x00\\xff\\x1b [cut]\n"),
            "{text}"
        );
        assert!(text.contains("reload rejected: one\n    two\n"), "{text}");
        assert!(!text
            .bytes()
            .any(|b| (b < 0x20 && b != b'\t' && b != b'\n') || b == 0x7f));
    }

    #[test]
    fn a_long_escaped_line_is_cut_between_pieces() {
        let (mut log, p) = file_log("cut", 1 << 20, 1);
        log.service_line(0, "svc", "stdout", &[0x1b; 1024], false);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.len() <= LOG_LINE_MAX, "{}", text.len());
        assert!(text.ends_with("\\x1b\n"), "{text}");
    }

    #[test]
    fn the_file_rotates_and_stays_bounded() {
        let (mut log, p) = file_log("rot", 4096, 2);
        for i in 0..2000 {
            log!(
                log,
                "line {i} padded to be a bit longer than it needs to be"
            );
        }
        let mut total = 0;
        for name in ["d.log", "d.log.1", "d.log.2"] {
            let n = std::fs::metadata(p.with_file_name(name)).unwrap().len();
            assert!(n <= 4096, "{name}: {n}");
            total += n;
        }
        assert!(total > 3 * 4096 - 300, "{total}");
        assert!(!p.with_file_name("d.log.3").exists());
        assert!(bodies(&p).last().unwrap().contains("line 1999 "));
    }
}
