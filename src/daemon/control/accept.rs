//! Taking connections in: accept(2) with a per-turn budget and retries,
//! peer credentials, admission to a slot, and the `busy` answer to a peer
//! that gets none.

use super::io::close_quietly;
use super::Control;
use crate::daemon::errno_desc;
use crate::daemon::log::Log;
use crate::daemon::log::{log, LineBuf};
use coffey::control::proto::{self, ErrorCode, Reply};
use coffey::limits::{ACCEPTS_PER_TURN, ACCEPT_RETRY_MS, CLIENTS_PER_UID, RESERVED_CLIENTS};
use coffey::time::{Dur, Instant};
use core::fmt::Write as _;
use nix::libc;
use std::os::fd::RawFd;

impl Control {
    /// Gives slot `k` to the connection `fd` of peer `uid`/`pid`; false if
    /// there is no such slot.
    fn take_slot(&mut self, k: usize, fd: RawFd, uid: u32, pid: i32, now: Instant) -> bool {
        let readonly = !self.operator(uid);
        let Some(c) = self.clients.get_mut(k) else {
            return false;
        };
        c.fd = fd;
        c.uid = uid;
        c.pid = pid;
        c.readonly = readonly;
        c.readable = true;
        c.eof = false;
        c.hup = false;
        c.conn.reset(now);
        true
    }

    fn operator(&self, uid: u32) -> bool {
        uid == 0 || uid == self.owner_uid
    }

    /// A free slot for a peer of `uid`, or why there is none. Read-only
    /// peers may not take the last `RESERVED_CLIENTS` slots (one is always
    /// theirs), nor more than `CLIENTS_PER_UID` each.
    fn admit(&self, uid: u32) -> Result<usize, Refusal> {
        let free = self.clients.iter().position(|c| c.fd < 0);
        let total = self.clients.len();
        let Some(k) = free else {
            return Err(Refusal::Full(total));
        };
        if self.operator(uid) {
            return Ok(k);
        }
        let reserved = RESERVED_CLIENTS.min(total.saturating_sub(1));
        let used = self.clients.iter().filter(|c| c.fd >= 0).count();
        if used >= total - reserved {
            return Err(Refusal::Reserved(reserved));
        }
        let mine = self.clients.iter().filter(|c| c.fd >= 0 && c.uid == uid);
        if mine.count() >= CLIENTS_PER_UID {
            return Err(Refusal::PerUid);
        }
        Ok(k)
    }
}

/// Why a connection got `busy`.
#[derive(Copy, Clone)]
enum Refusal {
    /// Every one of the N slots is taken.
    Full(usize),
    /// Only the N slots kept for the operator are free.
    Reserved(usize),
    /// The uid already holds `CLIENTS_PER_UID`.
    PerUid,
}

/// Peer credentials of a unix socket: (uid, gid, pid).
fn peer_cred(fd: RawFd) -> Option<(u32, u32, i32)> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = core::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: valid out-pointers of the right size.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (r == 0).then_some((cred.uid, cred.gid, cred.pid))
}

/// Accepts pending connections, `ACCEPTS_PER_TURN` at most (more are
/// picked up next turn), and registers each admitted one with `register`.
pub fn accept_all(
    ctl: &mut Control,
    log: &mut Log,
    now: Instant,
    mut register: impl FnMut(usize, RawFd),
) {
    ctl.guard.accept_at = Instant::NEVER;
    if ctl.listen_fd < 0 {
        return;
    }
    for _ in 0..ACCEPTS_PER_TURN {
        // SAFETY: null address pointers are allowed.
        let fd = unsafe {
            libc::accept4(
                ctl.listen_fd,
                core::ptr::null_mut(),
                core::ptr::null_mut(),
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            let e = nix::errno::Errno::last_raw();
            match e {
                // This connection is gone; the next may be fine.
                libc::EINTR | libc::ECONNABORTED | libc::EPROTO | libc::EPERM => continue,
                libc::EAGAIN => accept_works(ctl, log),
                _ => accept_failed(ctl, log, now, e),
            }
            return;
        }
        let (uid, _gid, pid) = peer_cred(fd).unwrap_or((u32::MAX, u32::MAX, 0));
        match ctl.admit(uid) {
            Ok(k) if ctl.take_slot(k, fd, uid, pid, now) => register(k, fd),
            Ok(_) => {}
            Err(why) => refuse(ctl, log, fd, uid, pid, why, now),
        }
    }
    // Budget spent: the rest wait for the next turn, which comes at once.
    ctl.guard.accept_at = now;
}

/// accept(2) failed for want of descriptors or memory (or an unexpected
/// reason): the connection stays queued, and no new edge will announce
/// it, so retry on a short deadline. Logged once per run of failures.
fn accept_failed(ctl: &mut Control, log: &mut Log, now: Instant, e: i32) {
    let g = &mut ctl.guard;
    g.accept_at = now.add(ACCEPT_RETRY_MS);
    g.accept_failures = g.accept_failures.saturating_add(1);
    if g.accept_failures == 1 {
        log!(
            log,
            "control socket: accept: {}; retrying every {}",
            errno_desc(e),
            Dur(ACCEPT_RETRY_MS)
        );
    }
}

/// The queue is empty and accept(2) could take a descriptor (EAGAIN, not
/// EMFILE: the kernel allocates the descriptor before it looks at the
/// queue, so one success between failures proves nothing).
fn accept_works(ctl: &mut Control, log: &mut Log) {
    let n = core::mem::take(&mut ctl.guard.accept_failures);
    if n > 0 {
        log!(
            log,
            "control socket: accepting again after {n} failed attempts"
        );
    }
}

/// Answers `busy` without a slot: the frame goes out with one
/// non-blocking send (a fresh socket has room), then a quiet close, so
/// the peer reads the frame and EOF. Logged through drop-and-count.
fn refuse(
    ctl: &mut Control,
    log: &mut Log,
    fd: RawFd,
    uid: u32,
    pid: i32,
    why: Refusal,
    now: Instant,
) {
    let message = match why {
        Refusal::PerUid => "too many connections from this uid",
        _ => "too many clients",
    };
    let mut buf = [0u8; 64];
    let msg = Reply::Error {
        code: ErrorCode::Busy,
        message,
    };
    if let Ok(n) = proto::encode_reply(&msg, &mut buf) {
        let flags = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
        // SAFETY: valid buffer.
        unsafe { libc::send(fd, buf.as_ptr().cast(), n, flags) };
    }
    close_quietly(fd);
    if !ctl.guard.refused.note(now) {
        return;
    }
    let mut text = LineBuf::default();
    let _ = match why {
        Refusal::Full(n) => write!(text, "all {n} client slots in use"),
        Refusal::Reserved(n) => write!(
            text,
            "the last {n} slots are kept for root and the daemon's uid"
        ),
        Refusal::PerUid => write!(text, "uid {uid} already has {CLIENTS_PER_UID} connections"),
    };
    log!(
        log,
        "control socket: busy, refused uid {uid} pid {pid} ({})",
        core::str::from_utf8(text.as_bytes()).unwrap_or("")
    );
}
