//! The daemon's own log: timestamped lines to the console (stderr) and/or
//! `coffey.log.path`. Lines are formatted into a fixed stack buffer (too
//! long: cut) and written with write(2); errors are ignored, because a
//! closed console must never stop the daemon (`println!` would panic).

use super::clock::{wall_ms, Stamp};
use coffey::limits::LOG_LINE_MAX;
use core::fmt::{self, Write};
use nix::libc;
use std::os::fd::RawFd;

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

/// Writes all of `buf` to `fd`, retrying EINTR and short writes. Returns
/// the errno of a failure.
pub fn write_all(fd: RawFd, mut buf: &[u8]) -> Result<(), i32> {
    while !buf.is_empty() {
        // SAFETY: buf is a valid slice for its length.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = nix::errno::Errno::last_raw();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        let n = usize::try_from(n).unwrap_or(0);
        if n == 0 {
            return Err(libc::EIO);
        }
        buf = buf.get(n..).unwrap_or(&[]);
    }
    Ok(())
}

pub struct Log {
    pub console: bool,
    /// Open daemon log file, or -1.
    pub file: RawFd,
    line: LineBuf,
}

impl Log {
    pub fn new(console: bool, file: RawFd) -> Log {
        Log {
            console,
            file,
            line: LineBuf::default(),
        }
    }

    /// One timestamped line: `<stamp> coffeyd: <message>`.
    pub fn line(&mut self, args: fmt::Arguments<'_>) {
        self.line.clear();
        let _ = write!(self.line, "{} coffeyd: ", Stamp(wall_ms()));
        let _ = self.line.write_fmt(args);
        self.line.newline();
        self.emit();
    }

    /// Writes a prepared line to the console only (service output copies).
    pub fn console_raw(&mut self, args: fmt::Arguments<'_>) {
        self.line.clear();
        let _ = self.line.write_fmt(args);
        self.line.newline();
        if self.console {
            let _ = write_all(2, self.line.as_bytes());
        }
        if self.file >= 0 {
            let _ = write_all(self.file, self.line.as_bytes());
        }
    }

    fn emit(&mut self) {
        if self.console {
            let _ = write_all(2, self.line.as_bytes());
        }
        if self.file >= 0 {
            let _ = write_all(self.file, self.line.as_bytes());
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
