//! The control socket, shell side: the client table and its defences.
//! The jobs are one module each: [`accept`] takes connections in (or
//! refuses them), [`io`] moves bytes, [`serve`] turns a client's input into
//! requests and its output into frames, [`handle`] acts on one request,
//! [`render`] writes status texts, [`logs`] sends a ring's tail and
//! [`expire`] enforces the connection deadlines, and [`broadcast`] feeds
//! the streaming clients (events and `logs -f`), in the words of
//! `super::events`.
//!
//! Each client slot holds a [`Conn`] machine over a preallocated output
//! buffer; the table has `limits.clients` slots and a full table answers
//! `busy`. Nothing here allocates: replies are encoded straight into the
//! connection's buffer, texts are formatted into fixed stack buffers.
//!
//! No peer can lock the operator out (see [`Guard`]): root and the
//! daemon's own uid have `RESERVED_CLIENTS` slots of their own, a read-only
//! uid holds at most `CLIENTS_PER_UID`, the connection deadlines of
//! [`Conn`] free slots held by trickling or silent peers, and a refused
//! peer reads `busy` (no slot needed) and a clean EOF. What the daemon
//! logs about refusals and timeouts is drop-and-count, one line per
//! `REFUSAL_LOG_WINDOW_MS`.

mod accept;
pub mod broadcast;
mod expire;
mod handle;
pub mod io;
mod logs;
mod metrics;
pub mod render;
mod serve;

pub use accept::accept_all;
pub use expire::expire;
pub use serve::service_client;

use super::Shell;
use coffey::control::conn::{Conn, Job, Phase};
use coffey::limits::REFUSAL_LOG_WINDOW_MS;
use coffey::time::Instant;
use std::os::fd::RawFd;

pub struct Client {
    /// -1 when the slot is free.
    pub fd: RawFd,
    pub conn: Conn<'static>,
    pub uid: u32,
    pub pid: i32,
    /// May use only status, logs, events and version.
    pub readonly: bool,
    /// Readiness seen and not yet drained.
    pub readable: bool,
    /// The peer's EOF was read: nothing is left unread, so closing
    /// cannot reset the peer.
    pub eof: bool,
    /// Poll reported the peer's shutdown: read on to the EOF even after a
    /// short read (it raises no further edge).
    pub hup: bool,
}

pub struct Control {
    /// Listening socket, non-blocking; -1 if none.
    pub listen_fd: RawFd,
    pub clients: Vec<Client>,
    /// The daemon's own uid: it and root may do everything.
    pub owner_uid: u32,
    pub guard: Guard,
    /// `coffey.events`: every event fanned out is appended here too.
    pub event_log: Option<Box<crate::daemon::eventlog::EventLog>>,
}

/// Drop-and-count for one kind of log line: the first of a quiet spell
/// is logged in full, later ones are counted and reported as one line at
/// the end of each `REFUSAL_LOG_WINDOW_MS` window that saw any.
pub struct Counted {
    n: u32,
    until: Instant,
}

impl Counted {
    pub const fn new() -> Counted {
        Counted {
            n: 0,
            until: Instant::ZERO,
        }
    }

    /// One more occurrence; true if it is to be logged in full.
    fn note(&mut self, now: Instant) -> bool {
        if now >= self.until && self.n == 0 {
            self.until = now.add(REFUSAL_LOG_WINDOW_MS);
            return true;
        }
        self.n = self.n.saturating_add(1);
        false
    }

    /// At the end of a window that counted some: their number, once. The
    /// next window starts at once, so a steady flood makes one line per
    /// window.
    fn take_due(&mut self, now: Instant) -> Option<u32> {
        if self.n == 0 || now < self.until {
            return None;
        }
        self.until = now.add(REFUSAL_LOG_WINDOW_MS);
        Some(core::mem::take(&mut self.n))
    }

    fn poll_at(&self) -> Instant {
        if self.n > 0 {
            self.until
        } else {
            Instant::NEVER
        }
    }
}

/// The control socket's defences: admission, accept retries and the
/// bounded log of what was refused or cut.
pub struct Guard {
    refused: Counted,
    timeouts: Counted,
    /// When to call accept(2) again without waiting for a readiness edge:
    /// after a failure for want of descriptors or memory (the queued
    /// connection makes no new edge), or when a turn's budget ran out.
    accept_at: Instant,
    /// accept(2) failures in a row: the first is logged, the rest counted.
    accept_failures: u32,
}

impl Guard {
    pub const fn new() -> Guard {
        Guard {
            refused: Counted::new(),
            timeouts: Counted::new(),
            accept_at: Instant::NEVER,
            accept_failures: 0,
        }
    }
}

impl Control {
    pub fn poll_at(&self) -> Instant {
        let mut at = self.guard.accept_at;
        at = at.min(self.guard.refused.poll_at());
        at = at.min(self.guard.timeouts.poll_at());
        for c in self.clients.iter().filter(|c| c.fd >= 0) {
            at = at.min(c.conn.poll_at());
        }
        at
    }

    /// Whether accept(2) is to be retried now, readiness or not.
    pub fn accept_due(&self, now: Instant) -> bool {
        self.listen_fd >= 0 && self.guard.accept_at <= now
    }
}

/// What the reload machine may ask of the clients, and no more.
impl super::reload::machine::Readers for Control {
    fn reading(&self, gen: u32) -> bool {
        self.clients.iter().any(|c| {
            let job = match c.conn.phase {
                Phase::Writing(Job::Plan { gen, .. } | Job::AwaitReload { gen }) => Some(gen),
                _ => None,
            };
            c.fd >= 0 && job == Some(gen)
        })
    }
}

/// Whether client `k` has work that needs another turn without waiting
/// for readiness (a long reply whose buffer drained).
pub fn has_pending(ctl: &Control, k: usize) -> bool {
    ctl.clients.get(k).is_some_and(|c| {
        // A client waiting for a reload is woken by the reload machine.
        let waiting = matches!(c.conn.phase, Phase::Writing(Job::AwaitReload { .. }));
        c.fd >= 0
            && matches!(c.conn.phase, Phase::Writing(_))
            && !waiting
            && c.conn.output().is_empty()
    })
}
