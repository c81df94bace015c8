//! A log file rotated by size: a service's `<dir>/<name>.log`, and the
//! daemon's own `coffey.log.path` (one rotation code for both).
//!
//! Rotation renames `name.log.(k-1)` to `name.log.k` down to `name.log` to
//! `name.log.1`, keeping `keep` old files, then reopens. Paths are built in
//! a stack buffer. A failed open or write (disk full, directory gone) is
//! reported once, the file is closed and retried at the next line after a
//! pause; the ring buffer keeps every line meanwhile.

use coffey::limits::PATH_MAX;
use nix::libc;
use std::ffi::CStr;
use std::os::fd::RawFd;

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

/// Pause between attempts to reopen a failing log file.
const RETRY_MS: u64 = 5000;

pub struct LogFile {
    /// NUL-terminated path.
    path: [u8; PATH_MAX],
    path_len: usize,
    fd: RawFd,
    size: u64,
    max_size: u64,
    keep: u32,
    /// errno of the last failure, reported once until a write succeeds.
    pub failing: Option<i32>,
    retry_at: u64,
}

/// Outcome of a write, for the daemon log.
pub enum Problem {
    None,
    /// First failure after a success: report it.
    Failed(i32),
    /// Working again after a failure.
    Recovered,
}

impl LogFile {
    /// `path` must be shorter than `PATH_MAX - 12` (checked at startup).
    pub fn new(path: &[u8], max_size: u64, keep: u32) -> Option<LogFile> {
        if path.len() + 12 > PATH_MAX || path.contains(&0) {
            return None;
        }
        let mut p = [0u8; PATH_MAX];
        p.get_mut(..path.len())?.copy_from_slice(path);
        Some(LogFile {
            path: p,
            path_len: path.len(),
            fd: -1,
            size: 0,
            max_size,
            keep,
            failing: None,
            retry_at: 0,
        })
    }

    /// Opens the file now (at startup, to say at once that it cannot be
    /// written). A failure counts as the first one: the next line retries
    /// after the pause and reports the recovery.
    pub fn open_at_start(&mut self, now_ms: u64) -> Result<(), i32> {
        if self.fd >= 0 {
            return Ok(());
        }
        self.open().inspect_err(|&e| {
            self.fail(e, now_ms);
        })
    }

    pub fn path_str(&self) -> &str {
        core::str::from_utf8(self.path.get(..self.path_len).unwrap_or(&[])).unwrap_or("?")
    }

    /// `path` or `path.N` as a C string in `buf`.
    fn name<'b>(&self, n: u32, buf: &'b mut [u8; PATH_MAX]) -> Option<&'b CStr> {
        buf.get_mut(..self.path_len)?
            .copy_from_slice(self.path.get(..self.path_len)?);
        let mut len = self.path_len;
        if n > 0 {
            let mut digits = [0u8; 10];
            let mut k = n;
            let mut nd = 0;
            while k > 0 || nd == 0 {
                *digits.get_mut(nd)? = b'0' + (k % 10) as u8;
                k /= 10;
                nd += 1;
            }
            *buf.get_mut(len)? = b'.';
            len += 1;
            for i in (0..nd).rev() {
                *buf.get_mut(len)? = *digits.get(i)?;
                len += 1;
            }
        }
        *buf.get_mut(len)? = 0;
        CStr::from_bytes_with_nul(buf.get(..=len)?).ok()
    }

    fn open(&mut self) -> Result<(), i32> {
        let mut b = [0u8; PATH_MAX];
        let Some(p) = self.name(0, &mut b) else {
            return Err(libc::ENAMETOOLONG);
        };
        // SAFETY: p is NUL-terminated.
        let fd = unsafe {
            libc::open(
                p.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC,
                0o644,
            )
        };
        if fd < 0 {
            return Err(nix::errno::Errno::last_raw());
        }
        let mut st: libc::stat = unsafe { core::mem::zeroed() };
        // SAFETY: fd is open, st is a valid out-pointer.
        let size = if unsafe { libc::fstat(fd, &mut st) } == 0 {
            u64::try_from(st.st_size).unwrap_or(0)
        } else {
            0
        };
        self.fd = fd;
        self.size = size;
        Ok(())
    }

    fn close(&mut self) {
        if self.fd >= 0 {
            // SAFETY: we own fd.
            unsafe { libc::close(self.fd) };
        }
        self.fd = -1;
    }

    fn rotate(&mut self) {
        self.close();
        let mut a = [0u8; PATH_MAX];
        let mut b = [0u8; PATH_MAX];
        if self.keep == 0 {
            if let Some(p) = self.name(0, &mut a) {
                // SAFETY: NUL-terminated path.
                unsafe { libc::unlink(p.as_ptr()) };
            }
            return;
        }
        for k in (1..=self.keep).rev() {
            let from = self.name(k - 1, &mut a);
            let to = self.name(k, &mut b);
            if let (Some(from), Some(to)) = (from, to) {
                // SAFETY: NUL-terminated paths. ENOENT is expected for
                // generations that do not exist yet.
                unsafe { libc::rename(from.as_ptr(), to.as_ptr()) };
            }
        }
    }

    /// Appends one complete line (with its newline).
    pub fn write(&mut self, line: &[u8], now_ms: u64) -> Problem {
        if self.fd < 0 {
            if self.failing.is_some() && now_ms < self.retry_at {
                return Problem::None;
            }
            if let Err(e) = self.open() {
                return self.fail(e, now_ms);
            }
        }
        let len = line.len() as u64;
        if self.size > 0 && self.size.saturating_add(len) > self.max_size {
            self.rotate();
            if let Err(e) = self.open() {
                return self.fail(e, now_ms);
            }
        }
        match write_all(self.fd, line) {
            Ok(()) => {
                self.size = self.size.saturating_add(len);
                if self.failing.take().is_some() {
                    Problem::Recovered
                } else {
                    Problem::None
                }
            }
            Err(e) => {
                self.close();
                self.fail(e, now_ms)
            }
        }
    }

    fn fail(&mut self, e: i32, now_ms: u64) -> Problem {
        self.retry_at = now_ms.saturating_add(RETRY_MS);
        if self.failing.replace(e).is_none() {
            Problem::Failed(e)
        } else {
            Problem::None
        }
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        self.close();
    }
}
