//! The last few events of one service, as `status NAME` shows them: a
//! small ring of compact entries. An entry keeps only the figures the
//! status line prints (an [`Event`] carries more, such as the command name
//! of a process left behind), so the ring costs 24 bytes an entry instead
//! of 48, in every service slot.

use crate::event::{Event, ExitStatus, SpawnError};
use crate::limits::RECENT_EVENTS;
use crate::time::{Instant, Millis};

/// What `status NAME` shows of one event.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Kept {
    Waiting,
    Spawned {
        pid: i32,
    },
    Ready,
    Unhealthy,
    SpawnFailed {
        err: SpawnError,
    },
    Exited {
        status: ExitStatus,
        uptime: Millis,
    },
    Backoff {
        delay: Millis,
    },
    Failed,
    Stopping,
    /// How many processes of the run lived on.
    LeftInGroup {
        total: u32,
    },
    Stopped,
    Completed,
    Unexpected,
    Degraded {
        failures: u32,
    },
}

impl Kept {
    pub fn of(e: &Event) -> Kept {
        match *e {
            Event::Waiting { .. } => Kept::Waiting,
            Event::Spawned { pid } => Kept::Spawned { pid },
            Event::Ready { .. } => Kept::Ready,
            Event::Unhealthy { .. } => Kept::Unhealthy,
            Event::SpawnFailed { err } => Kept::SpawnFailed { err },
            Event::Exited { status, uptime, .. } => Kept::Exited { status, uptime },
            Event::Backoff { delay, .. } => Kept::Backoff { delay },
            Event::GaveUp { .. } | Event::Failed => Kept::Failed,
            Event::Stopping { .. } | Event::Killed { .. } => Kept::Stopping,
            Event::LeftInGroup { left, .. } => Kept::LeftInGroup {
                total: left.total(),
            },
            Event::Stopped => Kept::Stopped,
            Event::Completed => Kept::Completed,
            Event::Unexpected { .. } => Kept::Unexpected,
            Event::Degraded { failures } => Kept::Degraded { failures },
        }
    }

    /// The word for its kind in `status NAME`.
    pub fn word(&self) -> &'static str {
        match self {
            Kept::Waiting => "waiting",
            Kept::Spawned { .. } => "spawned",
            Kept::Ready => "ready",
            Kept::Unhealthy => "unhealthy",
            Kept::SpawnFailed { .. } => "exec-failed",
            Kept::Exited { .. } => "exited",
            Kept::Backoff { .. } => "backoff",
            Kept::Failed => "failed",
            Kept::Stopping => "stopping",
            Kept::LeftInGroup { .. } => "left-in-group",
            Kept::Stopped => "stopped",
            Kept::Completed => "completed",
            Kept::Unexpected => "unexpected",
            Kept::Degraded { .. } => "degraded",
        }
    }
}

/// The ring: the last [`RECENT_EVENTS`] entries, with their times.
#[derive(Clone, Debug)]
pub struct Recent {
    ring: [Option<(Instant, Kept)>; RECENT_EVENTS],
    /// Where the next entry goes (the oldest kept), below `RECENT_EVENTS`.
    next: u8,
}

const _: () = assert!(RECENT_EVENTS > 0 && RECENT_EVENTS <= u8::MAX as usize);

impl Recent {
    pub const EMPTY: Recent = Recent {
        ring: [None; RECENT_EVENTS],
        next: 0,
    };

    /// Keeps `e`, which happened at `at`, in place of the oldest.
    pub fn note(&mut self, at: Instant, e: &Event) {
        let k = usize::from(self.next) % RECENT_EVENTS;
        if let Some(slot) = self.ring.get_mut(k) {
            *slot = Some((at, Kept::of(e)));
        }
        self.next = ((k + 1) % RECENT_EVENTS) as u8;
    }

    /// The entries, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (Instant, Kept)> + '_ {
        (0..RECENT_EVENTS).filter_map(move |k| {
            let i = (usize::from(self.next) + k) % RECENT_EVENTS;
            self.ring.get(i).copied().flatten()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Leftovers, Outside};
    use std::vec::Vec;

    #[test]
    fn an_entry_is_24_bytes() {
        assert_eq!(core::mem::size_of::<Option<(Instant, Kept)>>(), 24);
        assert!(core::mem::size_of::<Recent>() <= 24 * RECENT_EVENTS + 8);
    }

    #[test]
    fn keeps_the_last_entries_oldest_first_with_their_figures() {
        let mut r = Recent::EMPTY;
        assert_eq!(r.iter().count(), 0);
        let n = RECENT_EVENTS as i32 + 3;
        for pid in 1..=n {
            r.note(Instant::from_millis(pid as u64), &Event::Spawned { pid });
        }
        let pids: Vec<i32> = r
            .iter()
            .map(|(_, k)| match k {
                Kept::Spawned { pid } => pid,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(pids, (4..=n).collect::<Vec<_>>());
        let left = Leftovers {
            in_group: 2,
            outside: Outside {
                count: 1,
                pid: 9,
                comm: *b"sleep\0\0\0\0\0\0\0\0\0\0\0",
            },
        };
        r.note(
            Instant::from_millis(99),
            &Event::LeftInGroup {
                pid: 5,
                left,
                first: true,
            },
        );
        let (at, last) = r.iter().last().unwrap();
        assert_eq!(
            (at, last),
            (Instant::from_millis(99), Kept::LeftInGroup { total: 3 })
        );
        assert_eq!(last.word(), "left-in-group");
    }
}
