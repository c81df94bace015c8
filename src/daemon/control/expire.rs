//! Connection deadlines: idle peers are closed, a request not complete in
//! time gets an error and a close, a peer that stopped reading is cut
//! off; and the drop-and-count logs report what they counted.

use super::handle::error_fmt;
use super::io::{close_client, flush, widen_sndbuf};
use super::Control;
use crate::daemon::log::log;
use crate::daemon::log::Log;
use coffey::control::conn::{Expiry, Phase, Stream};
use coffey::control::proto::ErrorCode;
use coffey::limits::{REFUSAL_LOG_WINDOW_MS, REQUEST_TIMEOUT_MS, STALL_TIMEOUT_MS};
use coffey::time::{Dur, Instant};

/// Acts on the connection deadlines that passed, and reports what the
/// drop-and-count logs counted.
pub fn expire(ctl: &mut Control, log: &mut Log, now: Instant) {
    for k in 0..ctl.clients.len() {
        let Some(c) = ctl.clients.get_mut(k) else {
            continue;
        };
        if c.fd < 0 {
            continue;
        }
        match c.conn.expired(now) {
            None => {}
            Some(Expiry::Idle) => close_client(c),
            Some(Expiry::Request) => request_timeout(ctl, log, k, now),
            Some(Expiry::Stalled) => cut_off(ctl, log, k),
        }
    }
    let g = &mut ctl.guard;
    if let Some(n) = g.refused.take_due(now) {
        log!(
            log,
            "control socket: {n} connections refused in the last {}",
            Dur(REFUSAL_LOG_WINDOW_MS)
        );
    }
    if let Some(n) = ctl.guard.timeouts.take_due(now) {
        log!(
            log,
            "control: {n} more requests not complete within {} in the last {}",
            Dur(REQUEST_TIMEOUT_MS),
            Dur(REFUSAL_LOG_WINDOW_MS)
        );
    }
}

/// A request not complete `REQUEST_TIMEOUT_MS` after its first byte: an
/// error reply (there is room: the peer has been sent nothing since), then
/// close.
fn request_timeout(ctl: &mut Control, log: &mut Log, k: usize, now: Instant) {
    let Some((uid, pid)) = ctl.clients.get(k).map(|c| (c.uid, c.pid)) else {
        return;
    };
    if ctl.guard.timeouts.note(now) {
        log!(
            log,
            "control: request not complete within {} from uid {uid} pid {pid}; closing",
            Dur(REQUEST_TIMEOUT_MS)
        );
    }
    let why = format_args!(
        "request not complete within {}; closing",
        Dur(REQUEST_TIMEOUT_MS)
    );
    error_fmt(ctl, k, ErrorCode::BadRequest, why);
    if let Some(c) = ctl.clients.get_mut(k) {
        let _ = flush(c);
        close_client(c);
    }
}

/// Output the peer read none of for `STALL_TIMEOUT_MS`: a stream ends with
/// its `Dropped` marker, then the connection closes. Each is logged: one
/// costs its peer the stall time, so they come slowly.
fn cut_off(ctl: &mut Control, log: &mut Log, k: usize) {
    let Some(c) = ctl.clients.get_mut(k) else {
        return;
    };
    let what = match c.conn.phase {
        Phase::Streaming(Stream::Events) => "events subscriber",
        Phase::Streaming(Stream::Logs(_)) => "log follower",
        _ => "client",
    };
    let (uid, pid) = (c.uid, c.pid);
    let dropped = c.conn.cut_off();
    widen_sndbuf(c.fd);
    let _ = flush(c);
    close_client(c);
    log!(
        log,
        "control: {what} uid {uid} pid {pid} not reading for {}; closed ({dropped} frames dropped)",
        Dur(STALL_TIMEOUT_MS)
    );
}
