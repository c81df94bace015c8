//! Frames to streaming clients: event frames to `events` subscribers,
//! output lines to `logs -f` followers, and the end of a follow (when a
//! reload replaces the service, through reload's `Followers`). A
//! subscriber whose socket is gone is closed on the spot. What service
//! events say is `events`'s; the sockets are `control`'s.

use super::io::{close_client, flush};
use super::Control;
use coffey::control::conn::{Job, Phase, Stream, ALL_SLOTS};
use coffey::control::proto::{event, Reply, WireState};

/// Whether anyone listens to `events` (saves formatting when nobody does).
pub fn has_subscribers(ctl: &Control) -> bool {
    ctl.event_log.is_some()
        || ctl
            .clients
            .iter()
            .any(|c| c.fd >= 0 && c.conn.phase == Phase::Streaming(Stream::Events))
}

/// Queues one event frame to every `events` subscriber and flushes it.
pub fn fan_out_events(ctl: &mut Control, rep: &Reply<'_>) {
    // The file first: it is what outlives a crashed reader. A failing
    // file is retried at later events (LogFile), not logged here.
    if let Some(l) = ctl.event_log.as_mut() {
        let _ = l.append(rep);
    }
    fan_out(ctl, Phase::Streaming(Stream::Events), rep);
}

/// Queues `rep` to every client in phase `want` and flushes it.
fn fan_out(ctl: &mut Control, want: Phase, rep: &Reply<'_>) {
    for c in ctl.clients.iter_mut() {
        if c.fd >= 0 && c.conn.phase == want {
            c.conn.queue_stream(rep);
            if !flush(c) {
                close_client(c);
            }
        }
    }
}

/// Sends one output line to `logs -f` followers of slot `idx`, and of
/// every slot: streaming, or still sending the history of a later slot.
pub fn broadcast_line(
    ctl: &mut Control,
    name: &str,
    idx: usize,
    ts_ms: u64,
    stream: u8,
    cut: bool,
    text: &[u8],
) {
    let rep = Reply::LogLine {
        service: name,
        ts_ms,
        stream,
        cut,
        text,
    };
    for c in ctl.clients.iter_mut() {
        let wants = match c.conn.phase {
            Phase::Streaming(Stream::Logs(s)) => usize::from(s) == idx || s == ALL_SLOTS,
            Phase::Writing(Job::LogsAll {
                svc, follow: true, ..
            }) => usize::from(svc) > idx,
            _ => false,
        };
        if c.fd >= 0 && wants {
            c.conn.queue_stream(&rep);
            if !flush(c) {
                close_client(c);
            }
        }
    }
}

/// What reload tells the streaming clients (the interface is reload's,
/// so reload knows nothing of the client table).
impl crate::daemon::reload::Followers for Control {
    /// Slot `idx` runs another service now, or none: `logs -f` of it ends.
    fn slot_replaced(&mut self, idx: usize) {
        let want = Phase::Streaming(Stream::Logs(idx as u16));
        for c in self.clients.iter_mut() {
            if c.fd >= 0 && c.conn.phase == want {
                let _ = c.conn.queue(&Reply::End);
                c.conn.phase = Phase::Closing;
                if !flush(c) || c.conn.finished() {
                    close_client(c);
                }
            }
        }
    }

    /// A reload was applied: `events` subscribers are told.
    fn reloaded(&mut self) {
        let rep = Reply::Event {
            ts_ms: crate::daemon::clock::wall_ms(),
            service: "",
            kind: event::RELOADED,
            state: WireState::Running,
            pid: 0,
            detail: "config reloaded",
        };
        fan_out_events(self, &rep);
    }
}
