//! `logs NAME [-f]`: a service's ring lines from a sequence number on, as
//! far as the client's buffer takes them a turn; then the end, or the
//! switch to following.

use super::Control;
use crate::daemon::{Services, Slot};
use coffey::control::conn::{Conn, Job, Phase, Stream};
use coffey::control::proto::Reply;
use coffey::limits::LINE_MAX;

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
    let (next, full) = queue_lines(&mut c.conn, slot, next_seq.max(first), end_seq);
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

/// Queues the lines `from..end_seq` of the slot's ring; returns the next
/// sequence number to send and whether the buffer filled first.
fn queue_lines(conn: &mut Conn<'_>, slot: &Slot, from: u64, end_seq: u64) -> (u64, bool) {
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
        if conn.queue(&rep).is_err() {
            full = true;
            return false;
        }
        next = seq + 1;
        true
    });
    (next, full)
}
