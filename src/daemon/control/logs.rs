//! `logs NAME [-f]`: a service's ring lines from a sequence number on, as
//! far as the client's buffer takes them a turn; then the end, or the
//! switch to following. `logs` with no name: the same for every slot in
//! turn (the client merges them by time).

use super::Control;
use crate::daemon::{Services, Slot};
use coffey::control::conn::{Conn, Job, Phase, Stream, ALL_SLOTS};
use coffey::control::proto::Reply;
use coffey::limits::{CONN_OUT_BUF, LINE_MAX};

/// Queues the ring lines of slot `svc` with sequence numbers in
/// `next_seq..end_seq` to client `k`, as far as its buffer takes them; then
/// catches up and follows, or ends.
pub(super) fn logs_tail(
    services: &Services,
    ctl: &mut Control,
    k: usize,
    svc: u16,
    next_seq: u64,
    end_seq: u64,
    follow: bool,
) {
    let (Some(slot), Some(c)) = (services.slots.get(usize::from(svc)), ctl.clients.get_mut(k))
    else {
        return;
    };
    // History lines evicted by newer output before they could be sent
    // are counted, so the reader knows its tail has a hole.
    let first = slot.output.ring.first_seq();
    let lost = first.min(end_seq).saturating_sub(next_seq);
    if lost > 0 {
        let count = u32::try_from(lost).unwrap_or(u32::MAX);
        if c.conn.queue(&Reply::Dropped { count }).is_err() {
            return;
        }
    }
    let (next, full) = queue_lines(&mut c.conn, slot, next_seq.max(first), end_seq, 0);
    let more = |next_seq, end_seq| {
        Phase::Writing(Job::LogsTail {
            svc,
            next_seq,
            end_seq,
            follow,
        })
    };
    c.conn.phase = if full {
        more(next, end_seq)
    } else if follow && end_seq != u64::MAX {
        // History sent: catch up with what arrived meanwhile, then stream.
        more(next, u64::MAX)
    } else if follow {
        Phase::Streaming(Stream::Logs(svc))
    } else if c.conn.queue(&Reply::End).is_ok() {
        Phase::Reading
    } else {
        more(next, end_seq)
    };
}

/// `logs` of every service: job `LogsAll`'s slots from `svc` on, each
/// slot's last `lines` lines when the job reaches it (with `follow`, up to
/// what it has then: the slots before it already stream), then `End`,
/// then the stream of every slot or the next request.
pub(super) fn logs_all(services: &Services, ctl: &mut Control, k: usize, job: Job) {
    let Job::LogsAll {
        mut svc,
        lines,
        mut next_seq,
        mut end_seq,
        follow,
    } = job
    else {
        return;
    };
    let Some(c) = ctl.clients.get_mut(k) else {
        return;
    };
    while let Some(slot) = services.slots.get(usize::from(svc)) {
        let ring = &slot.output.ring;
        if next_seq == u64::MAX {
            next_seq = ring.pushed.saturating_sub(u64::from(lines));
            end_seq = if follow { u64::MAX } else { ring.pushed };
        }
        let first = ring.first_seq();
        let lost = first.min(end_seq).saturating_sub(next_seq);
        let mut full = lost > 0
            && !slot.retired
            && c.conn
                .queue(&Reply::Dropped {
                    count: u32::try_from(lost).unwrap_or(u32::MAX),
                })
                .is_err();
        if !full && !slot.retired {
            let keep = if follow { LIVE_ROOM } else { 0 };
            let (next, f) = queue_lines(&mut c.conn, slot, next_seq.max(first), end_seq, keep);
            (next_seq, full) = (next, f);
        }
        if full {
            let job = Job::LogsAll {
                svc,
                lines,
                next_seq,
                end_seq,
                follow,
            };
            c.conn.phase = Phase::Writing(job);
            return;
        }
        let Some(next) = svc.checked_add(1) else {
            break;
        };
        (svc, next_seq) = (next, u64::MAX);
    }
    let ended = c.conn.queue(&Reply::End).is_ok();
    c.conn.phase = match (ended, follow) {
        (true, true) => Phase::Streaming(Stream::Logs(ALL_SLOTS)),
        (true, false) => Phase::Reading,
        (false, _) => Phase::Writing(Job::LogsAll {
            svc,
            lines,
            next_seq,
            end_seq,
            follow,
        }),
    };
}

/// Room the history of `logs -f` of every service leaves in the client's
/// buffer for the new lines of the services it has sent already (they are
/// queued as they come, and a full buffer would drop them).
const LIVE_ROOM: usize = CONN_OUT_BUF / 4;

/// Queues the lines `from..end_seq` of the slot's ring, leaving `keep`
/// bytes free; returns the next sequence number to send and whether the
/// buffer filled first.
fn queue_lines(
    conn: &mut Conn<'_>,
    slot: &Slot,
    from: u64,
    end_seq: u64,
    keep: usize,
) -> (u64, bool) {
    let mut next = from;
    let mut full = false;
    let mut line = [0u8; LINE_MAX];
    slot.output.ring.try_for_each_from(next, |seq, l| {
        if seq >= end_seq {
            return false;
        }
        // A line may wrap around the ring's end: join its two parts.
        let (a, b) = l.data;
        let n = (a.len() + b.len()).min(LINE_MAX);
        let an = a.len().min(n);
        if let (Some(d), Some(s)) = (line.get_mut(..an), a.get(..an)) {
            d.copy_from_slice(s);
        }
        if let (Some(d), Some(s)) = (line.get_mut(an..n), b.get(..n - an)) {
            d.copy_from_slice(s);
        }
        let rep = Reply::LogLine {
            service: &slot.name,
            ts_ms: l.ts_ms,
            stream: l.stream.wire(),
            cut: l.cut,
            text: line.get(..n).unwrap_or(&[]),
        };
        if conn.queue_leaving(&rep, keep).is_err() {
            full = true;
            return false;
        }
        next = seq + 1;
        true
    });
    (next, full)
}
