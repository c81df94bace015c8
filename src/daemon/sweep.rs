//! The last step of a shutdown in supervisor and container mode: once the
//! services have stopped, every process still below coffeyd goes too, and
//! the daemon exits only when it has no child left (waitpid: ECHILD).
//!
//! Such processes are reparented orphans and `setsid` escapees that no
//! run owned (`escape.rs`): started by an exec check, or not attributable
//! to one run, or, as PID 1, orphans from outside any service. coffeyd is their
//! subreaper (PID 1 in a container), so each one ends up its child, or
//! the child of one that is below it. Without cgroups, this is what makes
//! a shutdown leave nothing behind.
//!
//! Each round lists everything below coffeyd in `/proc` (following parent
//! links, whatever the group or session; `group::descendants`), reaps,
//! and sleeps until a SIGCHLD or 100 ms:
//! - until the deadline, SIGTERM and SIGCONT (a stopped process must run
//!   to act on the TERM) go once to each process; later rounds signal
//!   only those started since the previous round (by start time), so a
//!   process that handles SIGTERM gets it once;
//! - from the deadline on, SIGKILL to all of them, every round, so that
//!   what they fork in between dies too, for `SHUTDOWN_REAP_GRACE_MS` at
//!   most: a process in uninterruptible sleep may never die, and the
//!   daemon must still end. What is left then is logged.
//!
//! A `/proc` that shows another PID namespace (a container given the
//! host's) or none cannot be used: PID 1 then signals its namespace with
//! kill(-1) instead, as the system-mode final sequence does (pid1.rs); a
//! supervisor can only wait. No heap: stack buffers only.

use super::clock;
use super::group;
use super::log::{log, Log};
use super::pid1;
use coffey::limits::SHUTDOWN_REAP_GRACE_MS;
use coffey::sys::Outside;
use coffey::time::{Dur, Instant};
use nix::libc;

/// Longest sleep between two rounds: what a round cannot hear of (a
/// grandchild's exit sends no SIGCHLD to us) it sees this late at most.
const ROUND_MS: u64 = 100;

/// How the processes below coffeyd are found.
#[derive(Copy, Clone, PartialEq, Eq)]
enum Reach {
    /// Listed in `/proc`, signalled one by one.
    Walk,
    /// PID 1 without a usable `/proc`: kill(-1) reaches its namespace.
    All,
    /// Neither: only waiting is possible.
    Wait,
}

/// Reaps every exited child. Returns false once no child is left.
fn reap() -> bool {
    loop {
        let mut st = 0;
        // SAFETY: valid out pointer.
        let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
        if pid > 0 {
            continue;
        }
        let e = super::errno();
        if pid < 0 && e == libc::EINTR {
            continue;
        }
        return !(pid < 0 && e == libc::ECHILD);
    }
}

/// `sig` to every process below coffeyd started at or after `since`
/// (SIGCONT after it); returns how many, and the first. kill(-1) goes out
/// in the `first` round only.
fn signal_below(reach: Reach, since: u64, sig: i32, first: bool) -> Outside {
    let mut seen = Outside::default();
    match reach {
        Reach::Walk => {
            group::descendants(since, |pid, st| {
                // SAFETY: plain syscalls; ESRCH (gone meanwhile) is fine.
                unsafe {
                    libc::kill(pid, sig);
                    libc::kill(pid, libc::SIGCONT);
                }
                if seen.count == 0 {
                    (seen.pid, seen.comm) = (pid, st.comm);
                }
                seen.count = seen.count.saturating_add(1);
            });
        }
        Reach::All if first => kill_all(sig),
        Reach::All | Reach::Wait => {}
    }
    seen
}

/// kill(-1): every process of this PID namespace but us. SIGKILL is sent
/// from a forked child, which exits at once: kill(-1, SIGKILL) can block
/// on a process in D state, and PID 1 must not.
fn kill_all(sig: i32) {
    if sig != libc::SIGKILL {
        // SAFETY: plain syscalls; we are PID 1 of our namespace.
        unsafe {
            libc::kill(-1, sig);
            libc::kill(-1, libc::SIGCONT);
        }
        return;
    }
    // SAFETY: fork in a single-threaded process; the child only kills and
    // exits (async-signal-safe calls only).
    if unsafe { libc::fork() } == 0 {
        // SAFETY: in the child.
        unsafe {
            libc::kill(-1, libc::SIGKILL);
            libc::_exit(0);
        }
    }
}

fn plural(n: u32) -> &'static str {
    if n == 1 {
        "process"
    } else {
        "processes"
    }
}

/// Ends everything below coffeyd: SIGTERM until `term_until`, then
/// SIGKILL; returns when no child is left, or `SHUTDOWN_REAP_GRACE_MS`
/// after the SIGKILL.
pub fn sweep(log: &mut Log, term_until: Instant) {
    // SAFETY: plain syscall.
    let pid1 = unsafe { libc::getpid() } == 1;
    let reach = match (group::proc_is_ours(), pid1) {
        (true, _) => Reach::Walk,
        (false, true) => Reach::All,
        (false, false) => Reach::Wait,
    };
    let mut since = 0;
    while reap() {
        let now = clock::now();
        if now >= term_until {
            return kill_phase(log, reach);
        }
        let mark = group::boot_ticks();
        let seen = signal_below(reach, since, libc::SIGTERM, since == 0);
        if since == 0 {
            said_term(log, reach, &seen, term_until.since(now));
        }
        since = mark;
        pid1::wait_chld(term_until.since(now).min(ROUND_MS));
    }
}

/// The first round's line: what was found and when SIGKILL follows.
fn said_term(log: &mut Log, reach: Reach, seen: &Outside, left: u64) {
    match reach {
        Reach::Walk if seen.count == 0 => {}
        Reach::Walk => log!(
            log,
            "shutdown: {} {} left below coffeyd (pid {}, {}): sending SIGTERM, SIGKILL in {}",
            seen.count,
            plural(seen.count),
            seen.pid,
            seen.name(),
            Dur(left)
        ),
        Reach::All => log!(
            log,
            "shutdown: children left and /proc is not this namespace's: sending SIGTERM to every process, SIGKILL in {}",
            Dur(left)
        ),
        Reach::Wait => log!(
            log,
            "shutdown: children left and /proc is not usable: waiting {} for them",
            Dur(left)
        ),
    }
}

/// From the deadline on: SIGKILL each round, for the reap grace at most.
fn kill_phase(log: &mut Log, reach: Reach) {
    let until = clock::now().add(SHUTDOWN_REAP_GRACE_MS);
    let mut first = true;
    while reap() {
        let now = clock::now();
        if now >= until {
            let mut n = 0u32;
            if reach == Reach::Walk {
                group::descendants(0, |_, _| n = n.saturating_add(1));
            }
            log!(
                log,
                "shutdown: {n} {} below coffeyd still not gone {} after SIGKILL (uninterruptible sleep?); exiting anyway",
                plural(n),
                Dur(SHUTDOWN_REAP_GRACE_MS)
            );
            return;
        }
        let seen = signal_below(reach, 0, libc::SIGKILL, first);
        match reach {
            Reach::Walk if first && seen.count > 0 => log!(
                log,
                "shutdown: sending SIGKILL to {} {} still below coffeyd at the deadline (pid {}, {})",
                seen.count,
                plural(seen.count),
                seen.pid,
                seen.name()
            ),
            Reach::All if first => log!(log, "shutdown: sending SIGKILL to every process"),
            _ => {}
        }
        first = false;
        pid1::wait_chld(until.since(now).min(ROUND_MS / 2));
    }
}
