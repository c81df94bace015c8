//! Clock reads and timestamp formatting. The loop reads CLOCK_MONOTONIC
//! once per turn for the machines; CLOCK_REALTIME only stamps log lines.
//! [`Turns`] times the loop's turns (the work between two polls).

use coffey::time::Instant;
use nix::libc;

/// Milliseconds of `clock` (the microsecond reading, truncated).
fn read(clock: libc::clockid_t) -> u64 {
    read_us(clock) / 1000
}

/// Monotonic milliseconds, for the machines.
pub fn now() -> Instant {
    Instant::from_millis(read(libc::CLOCK_MONOTONIC))
}

fn read_us(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; clock_gettime cannot fail for
    // these clocks on Linux, and on failure `ts` stays zero.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    let s = u64::try_from(ts.tv_sec).unwrap_or(0);
    let ns = u64::try_from(ts.tv_nsec).unwrap_or(0);
    s.saturating_mul(1_000_000).saturating_add(ns / 1000)
}

/// Monotonic microseconds: only for measuring and slicing the loop's own
/// turns (the machines keep milliseconds).
pub fn now_us() -> u64 {
    read_us(libc::CLOCK_MONOTONIC)
}

/// Wall-clock milliseconds since the epoch, for log stamps.
pub fn wall_ms() -> u64 {
    read(libc::CLOCK_REALTIME)
}

/// The longest loop turns: the work between one poll's return and the
/// next poll, in wall time and in the daemon's own CPU time (which leaves
/// out the time other processes had the CPU: on a busy machine a turn can
/// be preempted for milliseconds). Reported by the SIGUSR1 dump; the
/// "loop never stalls" benchmark (bench/reload.sh) reads it.
#[derive(Default)]
pub struct Turns {
    /// Wall µs when this turn began.
    began: u64,
    /// The daemon's CPU µs when the last turn ended (0: no turn yet).
    cpu_mark: u64,
    /// [wall, cpu] µs: since startup, and since the last dump (which
    /// resets it).
    pub longest: [u64; 2],
    pub window: [u64; 2],
    /// Turns begun since startup (`metrics`' loop turns).
    pub count: u64,
}

/// The daemon's own CPU µs (a syscall: not in the vDSO).
fn cpu_us() -> u64 {
    read_us(libc::CLOCK_PROCESS_CPUTIME_ID)
}

impl Turns {
    /// A turn's CPU is counted from the previous turn's end, so each turn
    /// reads the CPU clock once: the poll in between blocks (no CPU) or
    /// returns at once. The first turn starts its own count.
    pub fn begin(&mut self) {
        if self.cpu_mark == 0 {
            self.cpu_mark = cpu_us();
        }
        self.began = now_us();
        self.count = self.count.wrapping_add(1);
    }

    /// Wall µs since this turn began.
    pub fn elapsed_us(&self) -> u64 {
        now_us().saturating_sub(self.began)
    }

    /// The work of this turn so far is left out of the figures: the
    /// SIGUSR1 dump calls it after writing itself (some 5 ms of log lines
    /// with 1,000 services), so that the window it opens measures what
    /// runs after it, not the dump.
    pub fn leave_out_so_far(&mut self) {
        self.began = now_us();
        self.cpu_mark = cpu_us();
    }

    pub fn end(&mut self) {
        let cpu = cpu_us();
        let d = [
            now_us().saturating_sub(self.began),
            cpu.saturating_sub(self.cpu_mark),
        ];
        self.cpu_mark = cpu;
        for (k, d) in d.into_iter().enumerate() {
            for m in [self.longest.get_mut(k), self.window.get_mut(k)]
                .into_iter()
                .flatten()
            {
                *m = (*m).max(d);
            }
        }
    }
}

/// `2026-11-22T03:50:00.123Z`, formatted without allocating.
pub use coffey::stamp::Stamp;

#[cfg(test)]
#[allow(clippy::disallowed_methods, clippy::disallowed_macros)]
mod tests {
    use super::*;

    /// Burns about `ms` of this process's CPU (no sleep: CPU time counts).
    fn burn(ms: u64) {
        let t0 = read_us(libc::CLOCK_PROCESS_CPUTIME_ID);
        while read_us(libc::CLOCK_PROCESS_CPUTIME_ID) < t0 + ms * 1000 {
            core::hint::spin_loop();
        }
    }

    #[test]
    fn work_left_out_is_not_in_the_turn() {
        let mut t = Turns::default();
        t.begin();
        burn(30);
        t.leave_out_so_far();
        t.end();
        assert!(t.window[1] < 30_000, "{:?}", t.window);
        t.begin();
        burn(30);
        t.end();
        assert!(
            t.window[1] >= 30_000 && t.longest[1] >= 30_000,
            "{:?}",
            t.window
        );
    }

    #[test]
    fn the_first_turn_leaves_out_what_ran_before_it() {
        let mut t = Turns::default();
        burn(30);
        t.begin();
        t.end();
        assert!(t.window[1] < 30_000, "{:?}", t.window);
    }

    #[test]
    fn stamps() {
        assert_eq!(Stamp(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Stamp(1_795_838_400_123).to_string(),
            "2026-11-28T04:00:00.123Z"
        );
        assert_eq!(
            Stamp(951_782_400_000).to_string(),
            "2000-02-29T00:00:00.000Z"
        );
    }
}
