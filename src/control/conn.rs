//! The CONNECTION machine: one per control-socket client.
//!
//! Phases: `Reading` (waiting for a request), `Writing` (a multi-frame
//! reply is being produced as the output buffer drains), `Streaming`
//! (`logs -f`, `events`), `Closing` (flush what is queued, then close).
//! The shell does the read/write syscalls; this machine owns the buffers'
//! bookkeeping, framing and back-pressure. Input is bounded by
//! `HEADER + MAX_REQUEST`; output by the borrowed buffer. A slow streaming
//! reader never blocks anything: lines that do not fit are counted and a
//! `Dropped` marker is sent once there is room.
//!
//! Deadlines are absolute, so no peer can hold a slot by trickling: a
//! request must be complete `REQUEST_TIMEOUT_MS` after its first byte
//! (later bytes do not move it), and output the peer has read none of for
//! `STALL_TIMEOUT_MS` ends the connection. `expired` says which deadline
//! passed; the shell answers and closes.

use super::proto::{self, DecodeError, Full, Reply};
use crate::limits::{IDLE_TIMEOUT_MS, REQUEST_TIMEOUT_MS, STALL_TIMEOUT_MS};
use crate::time::Instant;

pub const IN_BUF: usize = proto::HEADER + proto::MAX_REQUEST;
/// Size of a `Dropped` frame. Streamed frames leave this much room, so a
/// stream that is cut off can always end with its marker.
pub const MARK_LEN: usize = proto::HEADER + 4;

/// Which deadline of a connection passed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// No request for `IDLE_TIMEOUT_MS`.
    Idle,
    /// A request begun and not complete within `REQUEST_TIMEOUT_MS`.
    Request,
    /// Output waiting, none of it read, for `STALL_TIMEOUT_MS`.
    Stalled,
}

/// What a streaming connection receives.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Stream {
    Events,
    /// Output lines of one service slot, or of every one ([`ALL_SLOTS`]).
    Logs(u16),
}

/// `Stream::Logs` of every service (`logs` with no name).
pub const ALL_SLOTS: u16 = u16::MAX;

/// A multi-frame reply in progress; the shell produces frames from it as
/// the buffer drains.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Job {
    /// `status`: next service index.
    StatusAll { next: u16 },
    /// `metrics`: next service index.
    Metrics { next: u16 },
    /// `reload`: waiting for reload number `gen` to finish (it may be
    /// running, or pending behind another), then its `Plan`.
    AwaitReload { gen: u32 },
    /// `reload`: next plan item of reload number `gen`, then the verdict.
    Plan { next: u32, gen: u32 },
    /// `logs`: the history is the lines with sequence numbers in
    /// `next_seq..end_seq`, `end_seq` fixed when the request arrived (so a
    /// flooding service cannot stretch it); then follow or end. Following
    /// first catches up with `end_seq: u64::MAX`, then streams.
    LogsTail {
        svc: u16,
        next_seq: u64,
        end_seq: u64,
        follow: bool,
    },
    /// `logs` of every service: slot `svc`'s tail as in `LogsTail` (its
    /// range taken when the job reaches it, `next_seq == u64::MAX` until
    /// then), then the next slot's, then `End`; then follow or end. While
    /// it runs, a follower already gets the new lines of the slots before
    /// `svc`.
    LogsAll {
        svc: u16,
        lines: u16,
        next_seq: u64,
        end_seq: u64,
        follow: bool,
    },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    Reading,
    Writing(Job),
    Streaming(Stream),
    Closing,
}

pub struct Conn<'a> {
    inb: [u8; IN_BUF],
    in_len: usize,
    out: &'a mut [u8],
    out_start: usize,
    out_end: usize,
    pub phase: Phase,
    /// Streamed frames dropped since the last `Dropped` marker.
    pub dropped: u32,
    pub last_active: Instant,
    /// Deadline of the request whose first bytes are in the input;
    /// `NEVER` with none begun.
    req_deadline: Instant,
    /// Since when queued output has waited with the peer reading none of
    /// it (for a stream: since it began to drop frames); `NEVER` when it
    /// flows.
    stalled_since: Instant,
}

impl<'a> Conn<'a> {
    pub fn new(out: &'a mut [u8], now: Instant) -> Self {
        Conn {
            inb: [0; IN_BUF],
            in_len: 0,
            out,
            out_start: 0,
            out_end: 0,
            phase: Phase::Reading,
            dropped: 0,
            last_active: now,
            req_deadline: Instant::NEVER,
            stalled_since: Instant::NEVER,
        }
    }

    /// Back to a fresh state for a new client.
    pub fn reset(&mut self, now: Instant) {
        self.in_len = 0;
        self.out_start = 0;
        self.out_end = 0;
        self.phase = Phase::Reading;
        self.dropped = 0;
        self.last_active = now;
        self.req_deadline = Instant::NEVER;
        self.stalled_since = Instant::NEVER;
    }

    /// Streaming and closing connections take no more requests: their
    /// input is read and dropped, so a peer's close is still noticed.
    pub fn discard_input(&mut self) {
        if matches!(self.phase, Phase::Streaming(_) | Phase::Closing) {
            self.in_len = 0;
        }
    }

    /// Free space for the next read(2).
    pub fn read_space(&mut self) -> &mut [u8] {
        self.inb.get_mut(self.in_len..).unwrap_or(&mut [])
    }

    /// `n` bytes were read into `read_space()`. The first byte of a
    /// request starts its deadline.
    pub fn did_read(&mut self, n: usize, now: Instant) {
        let takes_requests = !matches!(self.phase, Phase::Streaming(_) | Phase::Closing);
        if self.in_len == 0 && n > 0 && takes_requests {
            self.req_deadline = now.add(REQUEST_TIMEOUT_MS);
        }
        self.in_len = (self.in_len + n).min(IN_BUF);
        self.last_active = now;
    }

    /// Copies the next complete request frame into `dst` and drops it from
    /// the input. Ok(None): need more bytes. Only in `Reading`: requests
    /// are served one at a time.
    pub fn take_frame(&mut self, dst: &mut [u8; IN_BUF]) -> Result<Option<usize>, DecodeError> {
        if self.phase != Phase::Reading {
            return Ok(None);
        }
        let have = self.inb.get(..self.in_len).unwrap_or(&[]);
        match proto::frame_bounds(have, proto::MAX_REQUEST) {
            Err(DecodeError::Incomplete) => {
                if self.in_len >= IN_BUF {
                    // Cannot happen (frame_bounds caps the length), but a
                    // full buffer must never wedge the connection.
                    return Err(DecodeError::TooLarge(self.in_len));
                }
                Ok(None)
            }
            Err(e) => Err(e),
            Ok((_, end)) => {
                let frame = have.get(..end).ok_or(DecodeError::Malformed)?;
                dst.get_mut(..end)
                    .ok_or(DecodeError::Malformed)?
                    .copy_from_slice(frame);
                self.inb.copy_within(end..self.in_len, 0);
                self.in_len -= end;
                // The next request began no earlier than the last read.
                self.req_deadline = if self.in_len > 0 {
                    self.last_active.add(REQUEST_TIMEOUT_MS)
                } else {
                    Instant::NEVER
                };
                Ok(Some(end))
            }
        }
    }

    fn compact(&mut self) {
        if self.out_start > 0 {
            self.out.copy_within(self.out_start..self.out_end, 0);
            self.out_end -= self.out_start;
            self.out_start = 0;
        }
    }

    /// Queues one frame. `Full` leaves the buffer unchanged.
    pub fn queue(&mut self, rep: &Reply<'_>) -> Result<(), Full> {
        self.queue_leaving(rep, 0)
    }

    /// Queues one frame if `keep` bytes stay free after it.
    pub fn queue_leaving(&mut self, rep: &Reply<'_>, keep: usize) -> Result<(), Full> {
        let cap = self.out.len().saturating_sub(keep);
        if cap.saturating_sub(self.out_end) < 512 {
            self.compact();
        }
        let space = self.out.get_mut(self.out_end..cap).ok_or(Full)?;
        match proto::encode_reply(rep, space) {
            Ok(n) => {
                self.out_end += n;
                Ok(())
            }
            Err(Full) if self.out_start > 0 => {
                self.compact();
                let space = self.out.get_mut(self.out_end..cap).ok_or(Full)?;
                let n = proto::encode_reply(rep, space)?;
                self.out_end += n;
                Ok(())
            }
            Err(Full) => Err(Full),
        }
    }

    /// Queues a streamed frame, or counts it as dropped. A pending drop
    /// count is reported first, so the reader knows where the gap is.
    pub fn queue_stream(&mut self, rep: &Reply<'_>) {
        if self.dropped == 0 {
            if self.queue_leaving(rep, MARK_LEN).is_err() {
                self.dropped = 1;
            }
            return;
        }
        // The marker goes out only together with the frame after it, so a
        // reader sees one marker per gap.
        self.compact();
        let mark = self.out_end;
        let both = self
            .queue(&Reply::Dropped {
                count: self.dropped,
            })
            .is_ok()
            && self.queue_leaving(rep, MARK_LEN).is_ok();
        if both {
            self.dropped = 0;
        } else {
            self.out_end = mark;
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    /// Bytes waiting to be written.
    pub fn output(&self) -> &[u8] {
        self.out.get(self.out_start..self.out_end).unwrap_or(&[])
    }

    /// `n` bytes were written: the peer is reading.
    pub fn did_write(&mut self, n: usize) {
        self.out_start = (self.out_start + n).min(self.out_end);
        if self.out_start == self.out_end {
            self.out_start = 0;
            self.out_end = 0;
        }
        if n > 0 {
            self.stalled_since = Instant::NEVER;
        }
    }

    /// The socket took no more of the queued output. A reply waits from
    /// now; a stream counts as stalled only once its own buffer is full
    /// too (it drops frames): a paused reader of a quiet stream loses
    /// nothing and is left alone.
    pub fn blocked(&mut self, now: Instant) {
        let full = !matches!(self.phase, Phase::Streaming(_)) || self.dropped > 0;
        if self.stalled_since == Instant::NEVER && !self.output().is_empty() && full {
            self.stalled_since = now;
        }
    }

    /// Whether `blocked` started the stall clock (the shell reads the
    /// clock only when it did not).
    pub fn stalled(&self) -> bool {
        self.stalled_since != Instant::NEVER
    }

    /// Ends a stalled connection: a stream gets its `Dropped` marker (the
    /// room was kept for it), then the connection only flushes and closes.
    /// Returns the frames the stream dropped.
    pub fn cut_off(&mut self) -> u32 {
        let dropped = self.dropped;
        if matches!(self.phase, Phase::Streaming(_)) && dropped > 0 {
            let _ = self.queue(&Reply::Dropped { count: dropped });
            self.dropped = 0;
        }
        self.phase = Phase::Closing;
        dropped
    }

    /// Room for at least one more frame of `need` bytes.
    pub fn has_room(&self, need: usize) -> bool {
        self.out.len() - (self.out_end - self.out_start) >= need
    }

    /// The next deadline: idle and request deadlines only while waiting
    /// for a request; the stall deadline in every phase.
    pub fn poll_at(&self) -> Instant {
        let stall = self.stalled_since.add(STALL_TIMEOUT_MS);
        match self.phase {
            Phase::Reading => {
                let req = if self.has_frame() {
                    Instant::NEVER
                } else {
                    self.req_deadline
                };
                self.last_active.add(IDLE_TIMEOUT_MS).min(req).min(stall)
            }
            _ => stall,
        }
    }

    /// Which deadline has passed at `now`, if any. A request that is
    /// complete but not yet taken (it waited behind a long reply) has not
    /// expired.
    pub fn expired(&self, now: Instant) -> Option<Expiry> {
        if self.stalled_since.add(STALL_TIMEOUT_MS) <= now {
            return Some(Expiry::Stalled);
        }
        if self.phase != Phase::Reading {
            return None;
        }
        if self.req_deadline <= now && !self.has_frame() {
            return Some(Expiry::Request);
        }
        (self.last_active.add(IDLE_TIMEOUT_MS) <= now).then_some(Expiry::Idle)
    }

    /// Whether the input holds a whole frame (or a header error, which is
    /// answered at once too).
    fn has_frame(&self) -> bool {
        let have = self.inb.get(..self.in_len).unwrap_or(&[]);
        !matches!(
            proto::frame_bounds(have, proto::MAX_REQUEST),
            Err(DecodeError::Incomplete)
        )
    }

    /// Whether a closing connection has flushed everything.
    pub fn finished(&self) -> bool {
        self.phase == Phase::Closing && self.output().is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, clippy::disallowed_macros)]
mod tests {
    use super::*;
    use crate::control::proto::{decode_reply, encode_request, Request};

    #[test]
    fn partial_reads_assemble_a_request() {
        let mut out = [0u8; 256];
        let mut c = Conn::new(&mut out, Instant(0));
        let mut frame = [0u8; 64];
        let n = encode_request(
            &Request::Status {
                name: "api",
                verbose: 1,
            },
            &mut frame,
        )
        .unwrap();
        let mut dst = [0u8; IN_BUF];
        for (k, b) in frame[..n].iter().enumerate() {
            assert_eq!(c.take_frame(&mut dst), Ok(None), "byte {k}");
            c.read_space()[0] = *b;
            c.did_read(1, Instant(k as u64));
        }
        assert_eq!(c.take_frame(&mut dst), Ok(Some(n)));
        let copy = dst;
        let (req, _) = proto::decode_request(&copy[..n]).unwrap();
        assert_eq!(
            req,
            Request::Status {
                name: "api",
                verbose: 1
            }
        );
        assert_eq!(c.take_frame(&mut dst), Ok(None));
    }

    #[test]
    fn oversized_and_garbage_frames_are_errors() {
        let mut out = [0u8; 64];
        let mut c = Conn::new(&mut out, Instant(0));
        let mut dst = [0u8; IN_BUF];
        c.read_space()[..4].copy_from_slice(&[1, 1, 0xff, 0xff]);
        c.did_read(4, Instant(0));
        assert!(matches!(
            c.take_frame(&mut dst),
            Err(DecodeError::TooLarge(_))
        ));
        c.reset(Instant(0));
        c.read_space()[..4].copy_from_slice(b"GET ");
        c.did_read(4, Instant(0));
        assert!(matches!(
            c.take_frame(&mut dst),
            Err(DecodeError::Version(b'G'))
        ));
    }

    #[test]
    fn slow_stream_reader_gets_a_dropped_marker() {
        let mut out = [0u8; 600 + MARK_LEN];
        let mut c = Conn::new(&mut out, Instant(0));
        c.phase = Phase::Streaming(Stream::Events);
        let line = Reply::LogLine {
            service: "a",
            ts_ms: 1,
            stream: 0,
            cut: false,
            text: &[b'x'; 100],
        };
        for _ in 0..10 {
            c.queue_stream(&line);
        }
        // 120-byte frames: 5 fit (room for a marker is kept), 5 dropped.
        assert_eq!(c.dropped, 5);
        let len = c.output().len();
        c.did_write(len);
        c.queue_stream(&line);
        let mut rest = c.output();
        let (first, n) = decode_reply(rest).unwrap();
        assert_eq!(first, Reply::Dropped { count: 5 });
        rest = &rest[n..];
        assert!(matches!(
            decode_reply(rest).unwrap().0,
            Reply::LogLine { .. }
        ));
        assert_eq!(c.dropped, 0);
    }

    #[test]
    fn partial_writes_and_compaction() {
        let mut out = [0u8; 64];
        let mut c = Conn::new(&mut out, Instant(0));
        c.queue(&Reply::Ok {
            message: "0123456789012345678901234567",
        })
        .unwrap();
        c.did_write(10);
        assert_eq!(c.output().len(), 24);
        // Needs compaction to fit.
        c.queue(&Reply::Ok {
            message: "012345678901234567890123456789",
        })
        .unwrap();
        assert_eq!(c.output().len(), 24 + 36);
        assert_eq!(c.queue(&Reply::Ok { message: "x" }), Err(Full));
        assert_eq!(c.queue(&Reply::End), Ok(()));
    }

    #[test]
    fn only_reading_connections_time_out() {
        let mut out = [0u8; 64];
        let mut c = Conn::new(&mut out, Instant(5));
        assert_eq!(c.poll_at(), Instant(5 + IDLE_TIMEOUT_MS));
        assert_eq!(c.expired(Instant(5 + IDLE_TIMEOUT_MS)), Some(Expiry::Idle));
        c.phase = Phase::Streaming(Stream::Logs(0));
        assert_eq!(c.poll_at(), Instant::NEVER);
        assert_eq!(c.expired(Instant(u64::MAX - 1)), None);
    }

    fn status_frame() -> ([u8; 64], usize) {
        let mut frame = [0u8; 64];
        let req = Request::Status {
            name: "api",
            verbose: 0,
        };
        let n = encode_request(&req, &mut frame).unwrap();
        (frame, n)
    }

    #[test]
    fn a_request_deadline_runs_from_its_first_byte() {
        let mut out = [0u8; 64];
        let mut c = Conn::new(&mut out, Instant(0));
        let (frame, n) = status_frame();
        // One byte a second: later bytes do not move the deadline.
        for (k, b) in frame[..n - 1].iter().enumerate() {
            let t = 1000 + 1000 * k as u64;
            c.read_space()[0] = *b;
            c.did_read(1, Instant(t));
            assert_eq!(c.poll_at(), Instant(1000 + REQUEST_TIMEOUT_MS), "byte {k}");
        }
        let at = Instant(1000 + REQUEST_TIMEOUT_MS);
        assert_eq!(c.expired(Instant(at.0 - 1)), None);
        assert_eq!(c.expired(at), Some(Expiry::Request));
    }

    #[test]
    fn a_complete_request_clears_the_deadline_and_the_next_one_starts_its_own() {
        let mut out = [0u8; 64];
        let mut c = Conn::new(&mut out, Instant(0));
        let (frame, n) = status_frame();
        // A whole request and the first 2 bytes of the next, at t=100.
        c.read_space()[..n].copy_from_slice(&frame[..n]);
        c.read_space()[n..n + 2].copy_from_slice(&frame[..2]);
        c.did_read(n + 2, Instant(100));
        let mut dst = [0u8; IN_BUF];
        // Waiting behind a long reply: complete, so not expired.
        c.phase = Phase::Writing(Job::StatusAll { next: 0 });
        assert_eq!(c.expired(Instant(100 + REQUEST_TIMEOUT_MS)), None);
        c.phase = Phase::Reading;
        assert_eq!(c.poll_at(), Instant(100 + IDLE_TIMEOUT_MS));
        assert_eq!(c.take_frame(&mut dst), Ok(Some(n)));
        assert_eq!(c.poll_at(), Instant(100 + REQUEST_TIMEOUT_MS));
        c.read_space()[..n - 2].copy_from_slice(&frame[2..n]);
        c.did_read(n - 2, Instant(200));
        assert_eq!(c.take_frame(&mut dst), Ok(Some(n)));
        assert_eq!(c.poll_at(), Instant(200 + IDLE_TIMEOUT_MS));
    }

    #[test]
    fn an_unread_reply_stalls_and_progress_clears_it() {
        let mut out = [0u8; 64];
        let mut c = Conn::new(&mut out, Instant(0));
        c.phase = Phase::Writing(Job::StatusAll { next: 0 });
        c.blocked(Instant(10)); // nothing queued: not stalled
        assert!(!c.stalled());
        c.queue(&Reply::Ok { message: "abc" }).unwrap();
        c.blocked(Instant(10));
        c.blocked(Instant(20)); // the first block counts
        assert_eq!(c.poll_at(), Instant(10 + STALL_TIMEOUT_MS));
        assert_eq!(
            c.expired(Instant(10 + STALL_TIMEOUT_MS)),
            Some(Expiry::Stalled)
        );
        c.did_write(1);
        assert!(!c.stalled());
        assert_eq!(c.poll_at(), Instant::NEVER);
    }

    #[test]
    fn a_stream_stalls_only_once_it_drops_and_ends_with_its_marker() {
        let mut out = [0u8; 600];
        let mut c = Conn::new(&mut out, Instant(0));
        c.phase = Phase::Streaming(Stream::Events);
        let line = Reply::LogLine {
            service: "a",
            ts_ms: 1,
            stream: 0,
            cut: false,
            text: &[b'x'; 100],
        };
        c.queue_stream(&line);
        c.blocked(Instant(5)); // a paused reader of a quiet stream
        assert!(!c.stalled());
        while c.dropped == 0 {
            c.queue_stream(&line);
        }
        c.blocked(Instant(7));
        assert_eq!(
            c.expired(Instant(7 + STALL_TIMEOUT_MS)),
            Some(Expiry::Stalled)
        );
        let before = c.output().len();
        assert_eq!(c.cut_off(), 1);
        assert_eq!(c.phase, Phase::Closing);
        let rest = &c.output()[before..];
        assert_eq!(rest.len(), MARK_LEN);
        assert_eq!(decode_reply(rest).unwrap().0, Reply::Dropped { count: 1 });
    }

    #[test]
    fn mark_len_is_the_size_of_a_dropped_frame() {
        let mut b = [0u8; 64];
        let n = proto::encode_reply(&Reply::Dropped { count: u32::MAX }, &mut b).unwrap();
        assert_eq!(n, MARK_LEN);
    }
}
