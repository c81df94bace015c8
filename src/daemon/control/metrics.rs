//! `metrics`: the figures the client renders as Prometheus text. The
//! daemon sends numbers only (`DaemonMetrics`, then one `ServiceMetrics`
//! a service, then `End`); it never formats the exposition text itself,
//! and there is no HTTP server. Its own RSS and descriptor count are read
//! from /proc with fixed buffers, at the request (no allocation).

use super::render::{last_exit, wire_state};
use super::Control;
use crate::daemon::{alloc, close_fd, Services, Slot};
use coffey::control::conn::{Job, Phase};
use coffey::control::proto::{CheckFigures, Reply, ServiceFigures};
use coffey::health::{Check, CheckState, Verdict};
use coffey::service::Service;
use coffey::supervisor::Supervisor;
use coffey::time::Instant;
use nix::libc;

/// Queues the daemon's own figures, then lets the job send the services.
pub(super) fn start(ctl: &mut Control, k: usize, loop_turns: u64) {
    let Some(c) = ctl.clients.get_mut(k) else {
        return;
    };
    let rep = Reply::DaemonMetrics {
        rss_bytes: rss_bytes(),
        fds: open_fds(),
        loop_turns,
        allocations: alloc::count(),
    };
    c.conn.phase = if c.conn.queue(&rep).is_ok() {
        Phase::Writing(Job::Metrics { next: 0 })
    } else {
        Phase::Closing
    };
}

/// Queues the services' figures from `next` on, as far as client `k`'s
/// buffer takes them, then `End`.
pub(super) fn services(
    sup: &Supervisor<'_>,
    svc: &Services,
    ctl: &mut Control,
    k: usize,
    mut next: u16,
    now: Instant,
) {
    let Some(c) = ctl.clients.get_mut(k) else {
        return;
    };
    while let Some(s) = sup.services().get(usize::from(next)) {
        let Some(slot) = svc.slots.get(usize::from(next)) else {
            break;
        };
        if !slot.retired && c.conn.queue(&figures(s, slot, now)).is_err() {
            c.conn.phase = Phase::Writing(Job::Metrics { next });
            return;
        }
        next += 1;
    }
    c.conn.phase = if c.conn.queue(&Reply::End).is_ok() {
        Phase::Reading
    } else {
        Phase::Writing(Job::Metrics { next })
    };
}

fn figures<'a>(s: &Service, slot: &'a Slot, now: Instant) -> Reply<'a> {
    Reply::ServiceMetrics {
        name: &slot.name,
        figures: ServiceFigures {
            state: wire_state(s.state.name()),
            pid: s.state.pid().unwrap_or(0),
            uptime_ms: s.state.spawned_at().map_or(0, |t| now.since(t)),
            restarts: s.restarts,
            failures: s.failures,
            last_exit: last_exit(s.last_exit),
            checks: s.checks.each_ref().map(|c| check(c.as_ref())),
            log_evicted: slot.output.ring.evicted,
            log_cut: slot.output.ring.cut,
            logger_dropped: slot.output.to_dropped,
        },
    }
}

fn check(c: Option<&Check>) -> CheckFigures {
    let Some(c) = c else {
        return CheckFigures::default();
    };
    let verdict = match (c.state, c.verdict) {
        (CheckState::Off, _) => 4,
        (_, Verdict::Unknown) => 1,
        (_, Verdict::Healthy) => 2,
        (_, Verdict::Unhealthy) => 3,
    };
    CheckFigures {
        verdict,
        latency_ms: u32::try_from(c.last_probe_ms).unwrap_or(u32::MAX),
    }
}

/// Opens a /proc path read-only; None on failure.
fn open(path: &core::ffi::CStr, flags: i32) -> Option<i32> {
    // SAFETY: a NUL-terminated path; the fd is closed by the caller.
    let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_RDONLY | libc::O_CLOEXEC) };
    (fd >= 0).then_some(fd)
}

/// Resident set size: the second field of /proc/self/statm, in pages.
fn rss_bytes() -> u64 {
    let Some(fd) = open(c"/proc/self/statm", 0) else {
        return 0;
    };
    let mut buf = [0u8; 128];
    // SAFETY: reads at most buf.len() bytes into buf.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    close_fd(fd);
    let text = buf.get(..usize::try_from(n).unwrap_or(0)).unwrap_or(&[]);
    let pages = text
        .split(|&b| b == b' ')
        .nth(1)
        .and_then(|f| core::str::from_utf8(f).ok())
        .and_then(|f| f.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages.saturating_mul(u64::try_from(page).unwrap_or(4096))
}

/// Open descriptors: the entries of /proc/self/fd, read with getdents64
/// into a stack buffer, less ".", ".." and the directory's own fd.
fn open_fds() -> u32 {
    let Some(fd) = open(c"/proc/self/fd", libc::O_DIRECTORY) else {
        return 0;
    };
    let mut buf = [0u8; 2048];
    let mut entries: u32 = 0;
    loop {
        // SAFETY: getdents64 writes at most buf.len() bytes into buf.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len()) };
        let Ok(n) = usize::try_from(n) else { break };
        if n == 0 {
            break;
        }
        entries = entries.saturating_add(count_dirents(buf.get(..n).unwrap_or(&[])));
    }
    close_fd(fd);
    entries.saturating_sub(3)
}

/// The records in a getdents64 buffer: d_reclen is the u16 at offset 16.
fn count_dirents(mut b: &[u8]) -> u32 {
    let mut n = 0;
    while let (Some(&lo), Some(&hi)) = (b.get(16), b.get(17)) {
        let len = usize::from(u16::from_le_bytes([lo, hi]));
        if len == 0 {
            break;
        }
        n += 1;
        b = b.get(len..).unwrap_or(&[]);
    }
    n
}
