//! One client's turn: read its input, handle each complete request, then
//! produce and flush output; a drained multi-frame reply continues, a
//! finished or gone client is closed.

use super::handle::{error, handle, set_phase};
use super::io::{close_client, flush, read_input};
use super::logs::{logs_all, logs_tail};
use super::render::status_all;
use super::{Control, Shell};
use crate::daemon::log::{log, Log};
use crate::daemon::reload;
use coffey::control::conn::{Job, Phase, IN_BUF};
use coffey::control::proto::{self, DecodeError, ErrorCode};
use coffey::supervisor::Supervisor;
use coffey::time::Instant;

/// Reads, handles requests, produces and flushes output for client `k`.
pub fn service_client(
    sup: &mut Supervisor<'_>,
    shell: &mut Shell,
    k: usize,
    now: Instant,
    shutdown_timeout: u64,
) {
    let Some(c) = shell.ctl.clients.get_mut(k) else {
        return;
    };
    if c.fd < 0 {
        return;
    }
    let eof = read_input(c, now);
    if !requests(sup, shell, k, now, shutdown_timeout) {
        return;
    }
    pump(sup, shell, k, now);
    finish(sup, shell, k, now, eof);
}

/// Handles the complete requests in client `k`'s input, one at a time,
/// each followed by a pump. False if there is no client `k`.
fn requests(
    sup: &mut Supervisor<'_>,
    shell: &mut Shell,
    k: usize,
    now: Instant,
    shutdown_timeout: u64,
) -> bool {
    loop {
        let mut frame = [0u8; IN_BUF];
        let got = match shell.ctl.clients.get_mut(k) {
            Some(c) => c.conn.take_frame(&mut frame),
            None => return false,
        };
        match got {
            Ok(None) => return true,
            Ok(Some(n)) => match proto::decode_request(frame.get(..n).unwrap_or(&[])) {
                Ok((req, _)) => handle(sup, shell, k, req, now, shutdown_timeout),
                Err(_) => refuse_frame(
                    &mut shell.ctl,
                    &mut shell.log,
                    k,
                    ErrorCode::BadRequest,
                    "malformed request",
                ),
            },
            Err(e) => {
                let (code, msg) = match e {
                    DecodeError::Version(_) => (
                        ErrorCode::Version,
                        "unsupported protocol version (this daemon speaks 1)",
                    ),
                    DecodeError::TooLarge(_) => (ErrorCode::TooLarge, "request too large"),
                    _ => (ErrorCode::BadRequest, "malformed request"),
                };
                refuse_frame(&mut shell.ctl, &mut shell.log, k, code, msg);
                return true;
            }
        }
        pump(sup, shell, k, now);
    }
}

/// A frame the daemon cannot take: logged, answered, and the connection
/// closes once the answer is out.
fn refuse_frame(ctl: &mut Control, log: &mut Log, k: usize, code: ErrorCode, msg: &str) {
    if let Some(c) = ctl.clients.get(k) {
        let (uid, pid) = (c.uid, c.pid);
        log!(log, "control: {msg} from uid {uid} pid {pid}; closing");
    }
    error(ctl, k, code, msg);
    set_phase(ctl, k, Phase::Closing);
}

/// Flushes client `k`: a long reply whose output drained goes on at once;
/// a finished, gone or hung-up client is closed.
fn finish(sup: &Supervisor<'_>, shell: &mut Shell, k: usize, now: Instant, eof: bool) {
    let Some(c) = shell.ctl.clients.get_mut(k) else {
        return;
    };
    if c.fd < 0 {
        return;
    }
    let alive = flush(c);
    // Output drained: a long reply may continue.
    if alive && matches!(c.conn.phase, Phase::Writing(_)) && c.conn.output().is_empty() {
        pump(sup, shell, k, now);
        if let Some(c) = shell.ctl.clients.get_mut(k) {
            if !flush(c) {
                close_client(c);
            }
        }
        return;
    }
    if !alive || c.conn.finished() || (eof && c.conn.output().is_empty()) {
        close_client(c);
    }
}

/// Produces frames for a multi-frame reply while there is room.
fn pump(sup: &Supervisor<'_>, shell: &mut Shell, k: usize, now: Instant) {
    let Some(Phase::Writing(job)) = shell.ctl.clients.get(k).map(|c| c.conn.phase) else {
        return;
    };
    match job {
        Job::StatusAll { next } => status_all(sup, &shell.svc, &mut shell.ctl, k, next, now),
        Job::Metrics { next } => {
            super::metrics::services(sup, &shell.svc, &mut shell.ctl, k, next, now);
        }
        Job::AwaitReload { .. } | Job::Plan { .. } => {
            let Shell { reloader, ctl, .. } = &mut *shell;
            if let Some(c) = ctl.clients.get_mut(k) {
                c.conn.phase = reload::answer(reloader, &mut c.conn, job);
            }
        }
        Job::LogsTail {
            svc,
            next_seq,
            end_seq,
            follow,
        } => logs_tail(
            &shell.svc,
            &mut shell.ctl,
            k,
            svc,
            next_seq,
            end_seq,
            follow,
        ),
        Job::LogsAll { .. } => logs_all(&shell.svc, &mut shell.ctl, k, job),
    }
}
