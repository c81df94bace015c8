//! Service output, shell side: each slot's pipes (kept open across runs),
//! their reading with a per-turn budget, line assembly, and each line's
//! way to the ring, the log file, the console, `logs -f` followers and
//! the logger service's pipe (`log: {to: NAME}`).

use super::control::{broadcast::broadcast_line, Control};
use super::log::{log, LineBuf, Log};
use super::logfile::{LogFile, Problem};
use super::{clock, errno_desc, slab, Services};
use coffey::limits::{READS_PER_TURN, READ_CHUNK};
use coffey::logring::{LineBuf as Lines, LogRing, Stream};
use core::fmt::Write as _;
use nix::libc;
use std::os::fd::RawFd;

/// A slot's output: its two pipes, what they carried and where it goes.
/// (Its flags, `Slot::console` and `Slot::ready`, are the slot's: with
/// the slot's other small fields they pack without padding.)
pub struct Output {
    pub out_r: RawFd,
    pub err_r: RawFd,
    /// Write ends, held open by the daemon so the pipes (and any output
    /// still in them) outlive each child; reload hands them to new slots.
    #[allow(dead_code)]
    pub out_w: RawFd,
    #[allow(dead_code)]
    pub err_w: RawFd,
    pub ring: LogRing<'static>,
    /// In one zeroed mapping for all slots (`setup::zeroed_lines`): a
    /// quiet service's never costs memory.
    pub lines: &'static mut [Lines; 2],
    /// In a zeroed side table ([`slab::Cold`]): costs memory only for
    /// the services with a log file.
    pub file: slab::Cold<LogFile>,
    /// A logger service's pipe (-1, -1 for other services): the read end
    /// is its stdin, the write end (non-blocking) takes the lines of the
    /// services that log to it. The daemon holds both for the slot's
    /// life, so the pipe and what is in it outlive each run of either.
    pub in_r: RawFd,
    pub in_w: RawFd,
    /// The slot of this service's logger ([`NO_LOGGER`]: none).
    pub to: u16,
    /// Lines not given to the logger: its pipe was full.
    pub to_dropped: u64,
}

/// No logger (`Output::to`).
pub const NO_LOGGER: u16 = u16::MAX;

/// What a logger pipe is enlarged to (F_SETPIPE_SZ; the default is 64
/// KiB): a logger that is restarting or briefly slow loses nothing
/// until this much is waiting. Pipe pages are allocated as they fill.
pub const LOGGER_PIPE: i32 = 1024 * 1024;

// A line and its newline are one write of at most PIPE_BUF bytes, which
// the kernel never splits: the logger gets whole lines, however many
// services log to it.
const _: () = assert!(coffey::limits::LINE_MAX < libc::PIPE_BUF);

impl Output {
    /// Points the slot at its logger's slot (None: it has none).
    pub fn set_logger_slot(&mut self, slot: Option<u16>) {
        self.to = slot.unwrap_or(NO_LOGGER);
    }

    /// Lines its logger's full pipe cost it; None without a logger.
    pub fn logger_dropped(&self) -> Option<u64> {
        (self.to != NO_LOGGER).then_some(self.to_dropped)
    }

    /// Gives the slot its logger pipe, or takes it away (`logger`: some
    /// service logs to it). An existing pipe is kept, with its contents.
    pub fn set_logger(&mut self, logger: bool) -> Result<(), &'static str> {
        if logger == (self.in_w >= 0) {
            return Ok(());
        }
        if !logger {
            super::close_fd(self.in_r);
            super::close_fd(self.in_w);
            (self.in_r, self.in_w) = (-1, -1);
            return Ok(());
        }
        let mut fds = [-1; 2];
        // SAFETY: valid out array. Blocking ends: the logger reads its
        // stdin as usual; only the daemon's write end is made
        // non-blocking, on its own file description.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
            return Err("cannot create the logger pipe");
        }
        let [r, w] = fds;
        // SAFETY: fcntl on our own descriptor. A smaller pipe than asked
        // (pipe-max-size, a user's pipe quota) still works.
        unsafe {
            libc::fcntl(w, libc::F_SETFL, libc::O_NONBLOCK);
            libc::fcntl(w, libc::F_SETPIPE_SZ, LOGGER_PIPE);
        }
        (self.in_r, self.in_w) = (r, w);
        Ok(())
    }
}

/// Writes one line and its newline to a logger pipe; when the pipe is
/// full (the logger is slow or not running) the line is dropped and
/// counted: the loop never waits for a logger.
fn to_logger(fd: RawFd, line: &[u8], dropped: &mut u64) {
    let iov = [
        libc::iovec {
            iov_base: line.as_ptr().cast_mut().cast(),
            iov_len: line.len(),
        },
        libc::iovec {
            iov_base: b"\n".as_ptr().cast_mut().cast(),
            iov_len: 1,
        },
    ];
    loop {
        // SAFETY: both buffers are valid for their lengths; the kernel
        // only reads them.
        let n = unsafe { libc::writev(fd, iov.as_ptr(), 2) };
        if n >= 0 {
            return;
        }
        if nix::errno::Errno::last_raw() != libc::EINTR {
            *dropped = dropped.saturating_add(1);
            return;
        }
    }
}

const _: () = assert!(READS_PER_TURN * READ_CHUNK >= 64 * 1024);

/// Where a line goes besides its slot: the daemon log (the console, and
/// log file trouble), the followers, and the buffer a file line is
/// written in.
struct Sinks<'a> {
    log: &'a mut Log,
    ctl: &'a mut Control,
    scratch: &'a mut LineBuf,
}

/// The parts of a slot one line is stored in.
struct Dest<'a> {
    idx: usize,
    name: &'a str,
    ring: &'a mut LogRing<'static>,
    file: &'a mut slab::Cold<LogFile>,
    console: bool,
    /// The logger pipe's write end, -1 for none.
    to_w: RawFd,
    to_dropped: &'a mut u64,
}

fn stream_of(which: usize) -> Stream {
    if which == 0 {
        Stream::Stdout
    } else {
        Stream::Stderr
    }
}

/// Stores one output line: ring, followers, file, console.
fn sink(to: &mut Sinks<'_>, d: &mut Dest<'_>, stream: Stream, line: &[u8], cut: bool) {
    let (name, now) = (d.name, clock::wall_ms());
    d.ring.push(now, stream, cut, line);
    broadcast_line(to.ctl, name, d.idx, now, stream.wire(), cut, line);
    if let Some(f) = d.file.get_mut() {
        let mark = if cut { " [cut]" } else { "" };
        let s = &mut *to.scratch;
        s.clear();
        let _ = write!(s, "{} {} ", clock::Stamp(now), stream.name());
        s.push_bytes(line);
        s.push_bytes(mark.as_bytes());
        s.newline();
        match f.write(s.as_bytes(), clock::now().millis()) {
            Problem::None => {}
            Problem::Failed(e) => log!(
                to.log,
                "{name}: log file {}: {}; lines stay in the ring buffer",
                f.path_str(),
                errno_desc(e)
            ),
            Problem::Recovered => {
                log!(to.log, "{name}: log file {} writable again", f.path_str())
            }
        }
    }
    if d.console {
        to.log.service_line(now, name, stream.name(), line, cut);
    }
    if d.to_w >= 0 {
        to_logger(d.to_w, line, d.to_dropped);
    }
}

/// Slot `idx`'s line buffer of pipe `which` and where its lines go.
fn split<'s>(
    slots: &'s mut [super::Slot],
    idx: usize,
    which: usize,
) -> Option<(&'s mut Lines, RawFd, Dest<'s>)> {
    let to_w = slots
        .get(idx)
        .and_then(|s| slots.get(usize::from(s.output.to)))
        .map_or(-1, |l| l.output.in_w);
    let slot = slots.get_mut(idx)?;
    let Output {
        out_r,
        err_r,
        ring,
        lines,
        file,
        to_dropped,
        ..
    } = &mut slot.output;
    let fd = if which == 0 { *out_r } else { *err_r };
    let lb = lines.get_mut(which)?;
    let d = Dest {
        idx,
        name: slot.name.as_str(),
        ring,
        file,
        console: slot.console,
        to_w,
        to_dropped,
    };
    Some((lb, fd, d))
}

/// Reads one pipe until it would block or the budget is spent.
fn drain_pipe(svc: &mut Services, log: &mut Log, ctl: &mut Control, idx: usize, which: usize) {
    let Services {
        slots,
        readbuf,
        scratch,
        ..
    } = svc;
    let Some((lb, fd, mut d)) = split(slots, idx, which) else {
        return;
    };
    let mut to = Sinks { log, ctl, scratch };
    let mut more = true;
    for _ in 0..READS_PER_TURN {
        // SAFETY: readbuf is valid for its length.
        let n = unsafe { libc::read(fd, readbuf.as_mut_ptr().cast(), readbuf.len()) };
        if n < 0 {
            let e = nix::errno::Errno::last_raw();
            if e == libc::EINTR {
                continue;
            }
            more = false; // EAGAIN, or an error we cannot fix
            break;
        }
        let n = usize::try_from(n).unwrap_or(0);
        if n == 0 {
            more = false;
            break;
        }
        let data = readbuf.get(..n).unwrap_or(&[]);
        let stream = stream_of(which);
        lb.feed(data, |line, cut| sink(&mut to, &mut d, stream, line, cut));
    }
    let ready = slots.get_mut(idx).and_then(|s| s.ready.get_mut(which));
    if let Some(r) = ready {
        *r = more;
    }
}

/// Emits the unfinished line of pipe `w` of slot `i` as a line.
fn flush_line(svc: &mut Services, log: &mut Log, ctl: &mut Control, i: usize, w: usize) {
    let Services { slots, scratch, .. } = svc;
    let Some((lb, _, mut d)) = split(slots, i, w) else {
        return;
    };
    let mut to = Sinks { log, ctl, scratch };
    lb.flush(|line, cut| sink(&mut to, &mut d, stream_of(w), line, cut));
}

/// Drains every pipe marked ready. Returns whether work is left.
pub fn drain_ready(svc: &mut Services, log: &mut Log, ctl: &mut Control) -> bool {
    let ready = |svc: &Services, i: usize, w: usize| {
        svc.slots
            .get(i)
            .is_some_and(|s| s.ready.get(w) == Some(&true))
    };
    let mut left = false;
    for i in 0..svc.slots.len() {
        for w in 0..2 {
            if ready(svc, i, w) {
                drain_pipe(svc, log, ctl, i, w);
                left |= ready(svc, i, w);
            }
        }
    }
    left
}

/// The main process of slot `i` was reaped: what it wrote is in the
/// pipes (kept open across runs), so read it now and end its last
/// line, which keeps its own timestamp and is never glued onto the next
/// run's first line. A dead writer leaves at most a pipe's capacity
/// (64 KiB), which is one turn's read budget.
pub fn ended(svc: &mut Services, log: &mut Log, ctl: &mut Control, i: usize) {
    for w in 0..2 {
        if let Some(r) = svc.slots.get_mut(i).and_then(|s| s.ready.get_mut(w)) {
            *r = true;
        }
        drain_pipe(svc, log, ctl, i, w);
        flush_line(svc, log, ctl, i, w);
    }
}

/// Drains everything and flushes partial lines (at shutdown).
pub fn flush_all(svc: &mut Services, log: &mut Log, ctl: &mut Control) {
    for i in 0..svc.slots.len() {
        ended(svc, log, ctl, i);
    }
    log.break_repeats();
}
