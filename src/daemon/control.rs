//! The control socket, shell side: accept, credentials, read/write
//! syscalls, and turning requests into supervisor commands and replies.
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

use super::clock::{self, Stamp};
use super::log::{log, LineBuf};
use super::{errno_desc, Shell, Slot};
use coffey::control::conn::{Conn, Expiry, Job, Phase, Stream, IN_BUF};
use coffey::control::proto::{
    self, event, DecodeError, ErrorCode, LastExit, Reply, Request, WireState,
};
use coffey::limits::{
    ACCEPTS_PER_TURN, ACCEPT_RETRY_MS, CLIENTS_PER_UID, LINE_MAX, REFUSAL_LOG_WINDOW_MS,
    REQUEST_TIMEOUT_MS, RESERVED_CLIENTS, STALL_TIMEOUT_MS,
};
use coffey::service::{Event, Kind, LeftInGroupText, Reason, Restart, Service, State, StateName};
use coffey::supervisor::Supervisor;
use coffey::sys::{signal_name, ExitStatus};
use coffey::time::{Dur, Instant};
use core::fmt::Write as _;
use nix::libc;
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
}

pub struct Control {
    /// Listening socket, non-blocking; -1 if none.
    pub listen_fd: RawFd,
    pub clients: Vec<Client>,
    /// The daemon's own uid: it and root may do everything.
    pub owner_uid: u32,
    pub guard: Guard,
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

fn wire_state(s: StateName) -> WireState {
    WireState::from(s)
}

fn last_exit(e: Option<ExitStatus>) -> LastExit {
    match e {
        None => LastExit::default(),
        Some(ExitStatus::Code(c)) => LastExit { kind: 1, value: c },
        Some(ExitStatus::Signal(s)) => LastExit { kind: 2, value: s },
    }
}

/// Writes queued output until it would block. Returns false if the peer
/// is gone.
fn flush(c: &mut Client) -> bool {
    while !c.conn.output().is_empty() {
        let out = c.conn.output();
        // SAFETY: valid slice; MSG_NOSIGNAL: a gone peer is EPIPE, not a signal.
        let n = unsafe { libc::send(c.fd, out.as_ptr().cast(), out.len(), libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = nix::errno::Errno::last_raw();
            if e == libc::EINTR {
                continue;
            }
            if e == libc::EAGAIN && !c.conn.stalled() {
                c.conn.blocked(clock::now());
            }
            return e == libc::EAGAIN;
        }
        c.conn.did_write(usize::try_from(n).unwrap_or(0));
    }
    true
}

fn close_client(c: &mut Client) {
    close_quietly(c.fd);
    c.fd = -1;
    c.readable = false;
}

/// Closes a connection so that the peer reads what was sent and then a
/// clean EOF: closing a unix socket with unread input would make the
/// peer's next read fail with ECONNRESET instead. The input is read and
/// dropped first (bounded: a peer that keeps sending may still see it).
fn close_quietly(fd: RawFd) {
    let mut junk = [0u8; 1024];
    for _ in 0..16 {
        // SAFETY: valid buffer.
        let n = unsafe { libc::recv(fd, junk.as_mut_ptr().cast(), junk.len(), libc::MSG_DONTWAIT) };
        if n <= 0 {
            break;
        }
    }
    super::close_fd(fd);
}

/// Lets a cut-off stream's last frames (its `Dropped` marker) into the
/// socket although the peer has read nothing: the kernel takes more while
/// its queue is below SO_SNDBUF, and doubling it makes room for our whole
/// buffer. Best effort; the connection is closed right after.
fn widen_sndbuf(fd: RawFd) {
    let mut cur: libc::c_int = 0;
    let mut len = core::mem::size_of::<libc::c_int>() as libc::socklen_t;
    let size = core::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid out-pointers of the right size.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&mut cur as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return;
    }
    // The kernel doubles the value it is given: `cur` doubles the buffer.
    // SO_SNDBUFFORCE (root) ignores net.core.wmem_max.
    for opt in [libc::SO_SNDBUFFORCE, libc::SO_SNDBUF] {
        // SAFETY: valid pointer of the right size.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&cur as *const libc::c_int).cast(),
                size,
            )
        };
        if r == 0 {
            return;
        }
    }
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
pub fn accept_all(shell: &mut Shell, now: Instant, mut register: impl FnMut(usize, RawFd)) {
    shell.ctl.guard.accept_at = Instant::NEVER;
    if shell.ctl.listen_fd < 0 {
        return;
    }
    for _ in 0..ACCEPTS_PER_TURN {
        // SAFETY: null address pointers are allowed.
        let fd = unsafe {
            libc::accept4(
                shell.ctl.listen_fd,
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
                libc::EAGAIN => accept_works(shell),
                _ => accept_failed(shell, now, e),
            }
            return;
        }
        let (uid, _gid, pid) = peer_cred(fd).unwrap_or((u32::MAX, u32::MAX, 0));
        match shell.ctl.admit(uid) {
            Ok(k) => {
                let owner = shell.ctl.owner_uid;
                if let Some(c) = shell.ctl.clients.get_mut(k) {
                    c.fd = fd;
                    c.uid = uid;
                    c.pid = pid;
                    c.readonly = !(uid == 0 || uid == owner);
                    c.readable = true;
                    c.conn.reset(now);
                    register(k, fd);
                }
            }
            Err(why) => refuse(shell, fd, uid, pid, why, now),
        }
    }
    // Budget spent: the rest wait for the next turn, which comes at once.
    shell.ctl.guard.accept_at = now;
}

/// accept(2) failed for want of descriptors or memory (or an unexpected
/// reason): the connection stays queued, and no new edge will announce
/// it, so retry on a short deadline. Logged once per run of failures.
fn accept_failed(shell: &mut Shell, now: Instant, e: i32) {
    let g = &mut shell.ctl.guard;
    g.accept_at = now.add(ACCEPT_RETRY_MS);
    g.accept_failures = g.accept_failures.saturating_add(1);
    if g.accept_failures == 1 {
        log!(
            shell.log,
            "control socket: accept: {}; retrying every {}",
            errno_desc(e),
            Dur(ACCEPT_RETRY_MS)
        );
    }
}

/// The queue is empty and accept(2) could take a descriptor (EAGAIN, not
/// EMFILE: the kernel allocates the descriptor before it looks at the
/// queue, so one success between failures proves nothing).
fn accept_works(shell: &mut Shell) {
    let n = core::mem::take(&mut shell.ctl.guard.accept_failures);
    if n > 0 {
        log!(
            shell.log,
            "control socket: accepting again after {n} failed attempts"
        );
    }
}

/// Answers `busy` without a slot: the frame goes out with one
/// non-blocking send (a fresh socket has room), then a quiet close, so
/// the peer reads the frame and EOF. Logged through drop-and-count.
fn refuse(shell: &mut Shell, fd: RawFd, uid: u32, pid: i32, why: Refusal, now: Instant) {
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
    if !shell.ctl.guard.refused.note(now) {
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
        shell.log,
        "control socket: busy, refused uid {uid} pid {pid} ({})",
        core::str::from_utf8(text.as_bytes()).unwrap_or("")
    );
}

fn find(shell: &Shell, name: &str) -> Option<usize> {
    if name.is_empty() {
        return None;
    }
    // Retired slots keep their name for their last log lines only.
    shell
        .slots
        .get(..shell.used)?
        .iter()
        .position(|s| !s.retired && s.name.as_str() == name)
}

fn readonly_verb(r: &Request<'_>) -> bool {
    matches!(
        r,
        Request::Status { .. } | Request::Logs { .. } | Request::Events | Request::Version
    )
}

fn verb(r: &Request<'_>) -> &'static str {
    match r {
        Request::Status { .. } => "status",
        Request::Start { .. } => "start",
        Request::Stop { .. } => "stop",
        Request::Restart { .. } => "restart",
        Request::Signal { .. } => "signal",
        Request::Logs { .. } => "logs",
        Request::Events => "events",
        Request::Reload { .. } => "reload",
        Request::Power { action: 0 } => "poweroff",
        Request::Power { action: 1 } => "reboot",
        Request::Power { .. } => "halt",
        Request::Reexec => "reexec",
        Request::DebugPanic => "debug-panic",
        Request::Shutdown => "shutdown",
        Request::Version => "version",
    }
}

/// How the last run ended: "signal SIGKILL", or "killed by the OOM
/// killer (memory_max 64MiB)" when its cgroup says so.
fn exit_text(out: &mut LineBuf, st: ExitStatus, shell: &Shell, idx: u16) {
    let _ = match super::cgroup::oom_of(shell, usize::from(idx), st) {
        Some(oom) => write!(out, "{oom}"),
        None => write!(out, "{st}"),
    };
}

/// Human reason for a state: "next try in 4s", "exec failed: ...".
fn reason(s: &Service, shell: &Shell, now: Instant, out: &mut LineBuf) {
    out.clear();
    let prep = |i: u16| shell.slots.get(usize::from(i)).map(|s| &s.prep);
    let dep = |i: u16| {
        shell
            .slots
            .get(usize::from(i))
            .map_or("?", |s| s.name.as_str())
    };
    match (s.state, s.reason) {
        (State::Waiting, Reason::Dependency { idx, failed: false }) => {
            let _ = write!(out, "waiting for {}", dep(idx));
        }
        (State::Waiting, Reason::Dependency { idx, failed: true }) => {
            let _ = write!(out, "dependency {} failed", dep(idx));
        }
        (State::Backoff { retry_at }, r) => {
            match r {
                Reason::SpawnFailed(e) if !e.is_temporary() => {
                    super::spawn::write_failure(out, e, prep(s.idx));
                    let _ = out.write_str("; ");
                }
                Reason::SpawnFailed(e) => {
                    let _ = write!(out, "cannot spawn: {}; ", errno_desc(e.errno));
                }
                Reason::Exited(st) => {
                    exit_text(out, st, shell, s.idx);
                    let _ = out.write_str("; ");
                }
                Reason::Unhealthy => {
                    // The check that failed: liveness, else the notify watchdog.
                    let failed = s
                        .checks
                        .get(1)
                        .copied()
                        .flatten()
                        .filter(|c| c.last_error.is_some())
                        .or(s.checks.first().copied().flatten());
                    let _ = out.write_str("liveness failed");
                    if let Some(e) = failed.and_then(|c| c.last_error) {
                        let _ = out.write_str(": ");
                        super::probe::error_text(e, out);
                    }
                    let _ = out.write_str("; ");
                }
                Reason::StartTimeout => {
                    let _ = out.write_str("not ready within start_timeout; ");
                }
                Reason::LeftInGroup { left, .. } => {
                    let _ = write!(out, "{}; ", LeftInGroupText(left));
                }
                _ => {}
            }
            let _ = write!(out, "next try in {}", Dur(retry_at.since(now)));
        }
        (State::Failed, Reason::GaveUp { failures }) => {
            let _ = write!(out, "gave up after {failures} failures");
            if let Some(st) = s.last_exit {
                let _ = write!(out, " (last: {st})");
            }
        }
        (State::Failed, Reason::SpawnFailed(e)) => {
            super::spawn::write_failure(out, e, prep(s.idx));
        }
        (State::Failed | State::Stopped, Reason::Exited(st)) => {
            exit_text(out, st, shell, s.idx);
        }
        (_, Reason::LeftInGroup { left, .. }) => {
            let _ = write!(out, "{}", LeftInGroupText(left));
        }
        _ => {}
    }
}

fn row<'a>(
    s: &Service,
    slot: &'a Slot,
    now: Instant,
    text: &'a LineBuf,
    health: &'a LineBuf,
) -> Reply<'a> {
    // Uptime counts from the spawn, not from the last state change.
    let spawned = match s.state {
        State::Running { since, .. } | State::Starting { since, .. } => Some(since),
        _ => None,
    };
    Reply::Service {
        name: &slot.name,
        state: wire_state(s.state.name()),
        pid: s.state.pid().unwrap_or(0),
        uptime_ms: spawned.map_or(0, |t| now.since(t)),
        restarts: s.restarts,
        health: core::str::from_utf8(health.as_bytes()).unwrap_or("-"),
        last_exit: last_exit(s.last_exit),
        reason: core::str::from_utf8(text.as_bytes()).unwrap_or(""),
    }
}

/// The HEALTH column: "-" without checks, else each check's verdict, and
/// the last error of a failing one ("unhealthy: HTTP 503").
fn health_text(s: &Service, out: &mut LineBuf) {
    out.clear();
    let mut first = true;
    for c in s.checks.iter().flatten() {
        if !first {
            let _ = out.write_str(", ");
        }
        first = false;
        let role = match c.role {
            coffey::health::Role::Readiness => "ready",
            coffey::health::Role::Liveness => "live",
        };
        let v = if c.state == coffey::health::CheckState::Off {
            "off"
        } else {
            c.verdict.as_str()
        };
        let _ = write!(out, "{role}:{v}");
        if c.verdict != coffey::health::Verdict::Healthy {
            if let Some(e) = c.last_error {
                let _ = out.write_str(" (");
                super::probe::error_text(e, out);
                let _ = out.write_str(")");
            }
        }
    }
    if first {
        let _ = out.write_str("-");
    }
}

/// Fans a check's verdict change out to `events` subscribers.
pub fn broadcast_health(
    shell: &mut Shell,
    idx: usize,
    c: &coffey::health::Check,
    st: StateName,
    pid: i32,
) {
    if !has_subscribers(shell) {
        return;
    }
    let mut text = LineBuf::default();
    let role = match c.role {
        coffey::health::Role::Readiness => "readiness",
        coffey::health::Role::Liveness => "liveness",
    };
    let _ = write!(text, "{role} {}", c.verdict.as_str());
    if let Some(e) = c.last_error {
        let _ = text.write_str(": ");
        super::probe::error_text(e, &mut text);
    }
    let name = shell.slots.get(idx).map_or("?", |s| s.name.as_str());
    let rep = Reply::Event {
        ts_ms: clock::wall_ms(),
        service: name,
        kind: event::HEALTH,
        state: wire_state(st),
        pid,
        detail: core::str::from_utf8(text.as_bytes()).unwrap_or(""),
    };
    fan_out(&mut shell.ctl.clients, &rep);
}

/// Wall-clock ms of a monotonic instant.
fn wall_of(t: Instant, now: Instant) -> u64 {
    clock::wall_ms().saturating_sub(now.since(t))
}

fn event_text(e: &Event, idx: usize, shell: &Shell, out: &mut LineBuf) -> Option<u8> {
    out.clear();
    let kind = match *e {
        Event::Waiting {
            dep: Some(d),
            failed,
        } => {
            let n = shell
                .slots
                .get(usize::from(d))
                .map_or("?", |s| s.name.as_str());
            let _ = write!(
                out,
                "waiting for {n}{}",
                if failed { " (failed)" } else { "" }
            );
            event::WAITING
        }
        Event::Waiting { dep: None, .. } => return None,
        Event::Spawned { .. } => event::SPAWNED,
        Event::Ready { .. } => event::READY,
        Event::Unhealthy { start_timeout, .. } => {
            let _ = out.write_str(if start_timeout {
                "start_timeout passed before readiness"
            } else {
                "liveness failed"
            });
            event::UNHEALTHY
        }
        Event::SpawnFailed { err } if err.stage == coffey::sys::Stage::User => {
            let p = shell.slots.get(idx).map(|s| &s.prep);
            super::spawn::write_failure(out, err, p);
            event::EXEC_FAILED
        }
        Event::SpawnFailed { err } => {
            let _ = write!(out, "{}: {}", err.stage.name(), errno_desc(err.errno));
            event::EXEC_FAILED
        }
        Event::Exited { status, uptime, .. } => {
            let _ = write!(out, "{status} after {}", Dur(uptime));
            event::EXITED
        }
        Event::Backoff { delay, failures } => {
            let _ = write!(out, "restart in {} (failure {failures})", Dur(delay));
            event::BACKOFF
        }
        Event::GaveUp { failures } => {
            let _ = write!(out, "gave up after {failures} failures");
            event::FAILED
        }
        Event::Failed => event::FAILED,
        Event::Stopping { signal, .. } => {
            let _ = write!(out, "{}", signal_name(signal));
            event::STOPPING
        }
        Event::Killed { shutdown, .. } => {
            let what = if shutdown {
                "shutdown timeout"
            } else {
                "stop timeout"
            };
            let _ = write!(out, "{what}: SIGKILL");
            event::STOPPING
        }
        Event::LeftInGroup { left, .. } => {
            let _ = write!(out, "{}", LeftInGroupText(left));
            event::STOPPING
        }
        Event::Stopped => event::STOPPED,
        Event::Completed => event::COMPLETED,
        Event::Unexpected { .. } => return None,
    };
    Some(kind)
}

/// Whether anyone listens to `events` (saves formatting when nobody does).
fn has_subscribers(shell: &Shell) -> bool {
    shell
        .ctl
        .clients
        .iter()
        .any(|c| c.fd >= 0 && c.conn.phase == Phase::Streaming(Stream::Events))
}

/// Queues one event frame to every `events` subscriber and flushes it;
/// a subscriber whose socket is gone is closed.
fn fan_out(clients: &mut [Client], rep: &Reply<'_>) {
    for c in clients.iter_mut() {
        if c.fd >= 0 && c.conn.phase == Phase::Streaming(Stream::Events) {
            c.conn.queue_stream(rep);
            if !flush(c) {
                close_client(c);
            }
        }
    }
}

/// Fans a service event out to `events` subscribers.
pub fn broadcast_event(shell: &mut Shell, idx: usize, to: StateName, e: &Event, pid: i32) {
    if !has_subscribers(shell) {
        return;
    }
    let mut text = LineBuf::default();
    let Some(kind) = event_text(e, idx, shell, &mut text) else {
        return;
    };
    let pid = match *e {
        Event::Spawned { pid }
        | Event::Ready { pid }
        | Event::Unhealthy { pid, .. }
        | Event::Exited { pid, .. }
        | Event::Stopping { pid, .. }
        | Event::Killed { pid, .. }
        | Event::LeftInGroup { pid, .. } => pid,
        _ => pid,
    };
    let name = shell.slots.get(idx).map_or("?", |s| s.name.as_str());
    let rep = Reply::Event {
        ts_ms: clock::wall_ms(),
        service: name,
        kind,
        state: wire_state(to),
        pid,
        detail: core::str::from_utf8(text.as_bytes()).unwrap_or(""),
    };
    fan_out(&mut shell.ctl.clients, &rep);
}

/// Tells `events` subscribers that a reload was applied.
pub fn broadcast_reloaded(shell: &mut Shell) {
    let rep = Reply::Event {
        ts_ms: clock::wall_ms(),
        service: "",
        kind: event::RELOADED,
        state: WireState::Running,
        pid: 0,
        detail: "config reloaded",
    };
    fan_out(&mut shell.ctl.clients, &rep);
}

/// Sends one output line to `logs -f` followers of slot `idx`.
pub fn broadcast_line(
    ctl: &mut Control,
    name: &str,
    idx: usize,
    ts_ms: u64,
    stream: u8,
    cut: bool,
    text: &[u8],
) {
    let want = Phase::Streaming(Stream::Logs(idx as u16));
    for c in ctl.clients.iter_mut() {
        if c.fd >= 0 && c.conn.phase == want {
            c.conn.queue_stream(&Reply::LogLine {
                service: name,
                ts_ms,
                stream,
                cut,
                text,
            });
            if !flush(c) {
                close_client(c);
            }
        }
    }
}

/// A reply to client `k` (queued; sent by the next flush).
pub fn reply(shell: &mut Shell, k: usize, rep: &Reply<'_>) {
    if let Some(c) = shell.ctl.clients.get_mut(k) {
        if c.conn.queue(rep).is_err() {
            c.conn.phase = Phase::Closing;
        }
    }
}

fn error(shell: &mut Shell, k: usize, code: ErrorCode, message: &str) {
    reply(shell, k, &Reply::Error { code, message });
}

fn set_phase(shell: &mut Shell, k: usize, p: Phase) {
    if let Some(c) = shell.ctl.clients.get_mut(k) {
        c.conn.phase = p;
    }
}

/// Resolves every name or answers `unknown service`.
fn resolve<const N: usize>(
    shell: &mut Shell,
    k: usize,
    names: &[&str],
    out: &mut heapless::Vec<usize, N>,
) -> bool {
    for n in names {
        match find(shell, n) {
            Some(i) => {
                let _ = out.push(i);
            }
            None => {
                let mut msg = LineBuf::default();
                let _ = write!(msg, "unknown service '{n}'");
                error(
                    shell,
                    k,
                    ErrorCode::UnknownService,
                    core::str::from_utf8(msg.as_bytes()).unwrap_or(""),
                );
                return false;
            }
        }
    }
    true
}

fn handle(
    sup: &mut Supervisor<'_>,
    shell: &mut Shell,
    k: usize,
    req: Request<'_>,
    now: Instant,
    shutdown_timeout: u64,
) {
    let (readonly, uid, pid) = match shell.ctl.clients.get(k) {
        Some(c) => (c.readonly, c.uid, c.pid),
        None => return,
    };
    if readonly && !readonly_verb(&req) {
        log!(
            shell.log,
            "control: denied '{}' to uid {uid} pid {pid} (read-only access)",
            verb(&req)
        );
        let mut msg = LineBuf::default();
        let _ = write!(
            msg,
            "permission denied: uid {uid} may only use status, logs, events and version"
        );
        error(
            shell,
            k,
            ErrorCode::Denied,
            core::str::from_utf8(msg.as_bytes()).unwrap_or(""),
        );
        return;
    }
    match req {
        Request::Status { name: "", .. } => {
            set_phase(shell, k, Phase::Writing(Job::StatusAll { next: 0 }))
        }
        Request::Status { name, .. } => match find(shell, name) {
            Some(i) => status_one(sup, shell, k, i, now),
            None => {
                let mut names = heapless::Vec::<usize, 1>::new();
                resolve(shell, k, &[name], &mut names);
            }
        },
        Request::Start { names } | Request::Stop { names } | Request::Restart { names }
            if sup.shutting_down() =>
        {
            let _ = names;
            error(shell, k, ErrorCode::Failed, "coffeyd is shutting down");
        }
        Request::Start { ref names }
        | Request::Stop { ref names }
        | Request::Restart { ref names } => {
            let mut idx = heapless::Vec::<usize, { proto::MAX_NAMES }>::new();
            if !resolve(shell, k, names, &mut idx) {
                return;
            }
            let v = verb(&req);
            for &i in &idx {
                match req {
                    Request::Start { .. } => sup.start(i, now, shell),
                    Request::Stop { .. } => sup.stop(i, now, shell),
                    _ => sup.restart(i, now, shell),
                };
            }
            log!(shell.log, "control: {v} requested by uid {uid} pid {pid}");
            let mut msg = LineBuf::default();
            let _ = write!(msg, "{v}:");
            for n in names {
                let _ = write!(msg, " {n}");
            }
            reply(
                shell,
                k,
                &Reply::Ok {
                    message: core::str::from_utf8(msg.as_bytes()).unwrap_or(""),
                },
            );
        }
        Request::Signal { name, signal } => {
            let mut idx = heapless::Vec::<usize, 1>::new();
            if !resolve(shell, k, &[name], &mut idx) {
                return;
            }
            let target = idx
                .first()
                .and_then(|&i| sup.services().get(i))
                .and_then(|s| s.state.pid());
            match target {
                _ if !(1..=64).contains(&signal) => {
                    error(shell, k, ErrorCode::BadRequest, "invalid signal number")
                }
                None => error(shell, k, ErrorCode::Failed, "service has no process"),
                Some(p) => {
                    // SAFETY: plain syscall.
                    let r = unsafe { libc::kill(p, signal) };
                    if r == 0 {
                        log!(
                            shell.log,
                            "control: {} sent to {name} (pid {p}) by uid {uid}",
                            signal_name(signal)
                        );
                        reply(
                            shell,
                            k,
                            &Reply::Ok {
                                message: "signal sent",
                            },
                        );
                    } else {
                        error(
                            shell,
                            k,
                            ErrorCode::Failed,
                            errno_desc(nix::errno::Errno::last_raw()),
                        );
                    }
                }
            }
        }
        Request::Logs {
            name,
            lines,
            follow,
        } => {
            let mut idx = heapless::Vec::<usize, 1>::new();
            if !resolve(shell, k, &[name], &mut idx) {
                return;
            }
            let i = idx.first().copied().unwrap_or(0);
            let ring = shell
                .slots
                .get(i)
                .map(|s| (s.ring.first_seq(), s.ring.pushed));
            let (first, pushed) = ring.unwrap_or((0, 0));
            let from = pushed.saturating_sub(u64::from(lines)).max(first);
            set_phase(
                shell,
                k,
                Phase::Writing(Job::LogsTail {
                    svc: i as u16,
                    next_seq: from,
                    end_seq: pushed,
                    follow,
                }),
            );
        }
        Request::Events => {
            reply(
                shell,
                k,
                &Reply::Ok {
                    message: "subscribed",
                },
            );
            set_phase(shell, k, Phase::Streaming(Stream::Events));
        }
        Request::Reload { dry_run } => {
            log!(
                shell.log,
                "control: reload{} requested by uid {uid} pid {pid}",
                if dry_run { " --dry-run" } else { "" }
            );
            super::reload_machine::request(sup, shell, Some(k), dry_run, now);
        }
        Request::Shutdown => {
            log!(
                shell.log,
                "control: shutdown requested by uid {uid} pid {pid} (timeout {})",
                Dur(shutdown_timeout)
            );
            reply(
                shell,
                k,
                &Reply::Ok {
                    message: "shutting down",
                },
            );
            sup.shutdown(now, shutdown_timeout, shell);
        }
        Request::Power { action } => {
            let a = match action {
                0 => super::pid1::Action::Poweroff,
                1 => super::pid1::Action::Reboot,
                _ => super::pid1::Action::Halt,
            };
            if shell.mode != super::pid1::Mode::System {
                error(
                    shell,
                    k,
                    ErrorCode::Failed,
                    "coffeyd is not the init of this machine; use shutdown",
                );
                return;
            }
            log!(
                shell.log,
                "control: {} requested by uid {uid} pid {pid}",
                a.name()
            );
            shell.action = Some(a);
            reply(shell, k, &Reply::Ok { message: a.name() });
            let t = shell.shutdown_timeout;
            sup.shutdown(now, t, shell);
        }
        Request::Reexec => {
            log!(
                shell.log,
                "control: reexec requested by uid {uid} pid {pid}"
            );
            reply(
                shell,
                k,
                &Reply::Ok {
                    message: "re-executing",
                },
            );
            shell.reexec_requested = true;
        }
        Request::DebugPanic => {
            if coffey::control::proto::DEBUG_VERBS {
                log!(
                    shell.log,
                    "control: debug panic requested by uid {uid} pid {pid}"
                );
                #[allow(clippy::panic)]
                {
                    panic!("debug panic requested over the control socket");
                }
            }
            error(shell, k, ErrorCode::BadRequest, "not a debug build");
        }
        Request::Version => reply(
            shell,
            k,
            &Reply::Version {
                version: env!("CARGO_PKG_VERSION"),
                commit: option_env!("COFFEY_COMMIT").unwrap_or("unknown"),
                target: option_env!("COFFEY_TARGET").unwrap_or("unknown"),
                profile: option_env!("COFFEY_PROFILE").unwrap_or("unknown"),
            },
        ),
    }
}

fn status_one(sup: &Supervisor<'_>, shell: &mut Shell, k: usize, i: usize, now: Instant) {
    let Some(s) = sup.services().get(i) else {
        return;
    };
    let mut text = LineBuf::default();
    reason(s, shell, now, &mut text);
    let Shell { slots, ctl, cg, .. } = shell;
    let (Some(slot), Some(c)) = (slots.get(i), ctl.clients.get_mut(k)) else {
        return;
    };
    let mut health = LineBuf::default();
    health_text(s, &mut health);
    let mut ok = c.conn.queue(&row(s, slot, now, &text, &health)).is_ok();
    let mut detail = |key: &str, f: &mut dyn FnMut(&mut LineBuf)| {
        text.clear();
        f(&mut text);
        let value = core::str::from_utf8(text.as_bytes()).unwrap_or("");
        ok &= c.conn.queue(&Reply::Detail { key, value }).is_ok();
    };
    let p = s.policy;
    if slot.prep.filled {
        let prep = &slot.prep;
        detail("binary", &mut |t| {
            let _ = write!(t, "{}", prep.path().to_str().unwrap_or("?"));
        });
        detail("args", &mut |t| {
            for (n, a) in prep.args().enumerate() {
                let _ = write!(
                    t,
                    "{}{}",
                    if n > 0 { " " } else { "" },
                    a.to_str().unwrap_or("?")
                );
            }
        });
    }
    detail("type", &mut |t| {
        let _ = t.write_str(if p.kind == Kind::Oneshot {
            "oneshot"
        } else {
            "service"
        });
    });
    detail("restart", &mut |t| {
        let _ = t.write_str(match p.restart {
            Restart::Always => "always",
            Restart::OnFailure => "on-failure",
            Restart::Never => "never",
        });
    });
    detail("backoff", &mut |t| {
        let _ = write!(
            t,
            "initial {}, max {}, multiplier {}.{:03}, reset after {}, next delay {}",
            Dur(p.backoff_initial),
            Dur(p.backoff_max),
            p.backoff_mult_milli / 1000,
            p.backoff_mult_milli % 1000,
            Dur(p.reset_after),
            Dur(s.next_delay)
        );
    });
    detail("max_restarts", &mut |t| {
        let _ = write!(
            t,
            "{} (consecutive failures now {})",
            p.max_restarts, s.failures
        );
    });
    detail("stop", &mut |t| {
        let _ = write!(
            t,
            "{}, then SIGKILL after {}",
            signal_name(p.stop_signal),
            Dur(p.stop_timeout)
        );
    });
    if !s.deps.is_empty() {
        detail("depends_on", &mut |t| {
            for (n, d) in s.deps.iter().enumerate() {
                let dn = slots
                    .get(usize::from(d.idx))
                    .map_or("?", |s| s.name.as_str());
                let _ = write!(
                    t,
                    "{}{dn} ({:?})",
                    if n > 0 { ", " } else { "" },
                    d.condition
                );
            }
        });
    }
    detail("since", &mut |t| {
        let _ = write!(t, "{}", Stamp(wall_of(s.since, now)));
    });
    if let Some(pid) = s.state.pid() {
        detail("pgid", &mut |t| {
            let _ = write!(t, "{pid}");
        });
    }
    super::cgroup::status_details(cg, i, s.state.pid(), &mut detail);
    if let Some(st) = s.last_exit {
        detail("last_exit", &mut |t| {
            let _ = write!(t, "{st}");
        });
    }
    if !slot.notify_status.is_empty() {
        detail("notify_status", &mut |t| {
            let _ = t.write_str(core::str::from_utf8(&slot.notify_status).unwrap_or("?"));
        });
    }
    if s.state.has_process() && slot.sd.state != super::notify::NotifyState::None {
        detail("notify_state", &mut |t| {
            let _ = t.write_str(slot.sd.state.as_str());
        });
    }
    if slot.sd.main_pid != 0 {
        detail("main_pid", &mut |t| {
            let _ = write!(t, "{}", slot.sd.main_pid);
        });
    }
    detail("log", &mut |t| {
        let r = &slot.ring;
        let _ = write!(
            t,
            "{} lines in a {} byte ring, {} evicted, {} cut",
            r.len(),
            r.capacity(),
            r.evicted,
            r.cut
        );
        if let Some(f) = slot.file.as_ref() {
            let _ = write!(t, "; file {}", f.path_str());
        }
    });
    for c in s.checks.iter().flatten() {
        let key = match c.role {
            coffey::health::Role::Readiness => "readiness",
            coffey::health::Role::Liveness => "liveness",
        };
        let r = c.role.index();
        detail(key, &mut |t| {
            let kind = match slot.specs.get(r) {
                Some(super::probe::Spec::Http { addr, .. }) => {
                    let _ = write!(t, "http {addr}");
                    ""
                }
                Some(super::probe::Spec::Tcp { addr }) => {
                    let _ = write!(t, "tcp {addr}");
                    ""
                }
                Some(super::probe::Spec::Exec) => "exec",
                Some(super::probe::Spec::Notify { fd: Some(_) }) => "notify fd",
                Some(super::probe::Spec::Notify { fd: None }) => "sd_notify",
                _ => "-",
            };
            let _ = write!(
                t,
                "{kind} {}, {} probes, {} consecutive failures, {} consecutive successes, every {} (timeout {})",
                c.verdict.as_str(),
                c.probes,
                c.failures,
                c.successes,
                Dur(c.policy.interval),
                Dur(c.policy.timeout)
            );
            if let Some(e) = c.last_error {
                let _ = t.write_str("; last error: ");
                super::probe::error_text(e, t);
            }
        });
    }
    for (at, e) in s.recent_events() {
        let mut et = LineBuf::default();
        // `event_text` needs the shell; names of dependencies are rare in
        // recent events, so render them from the slot table directly.
        let kind = match *e {
            Event::Waiting { .. } => "waiting",
            Event::Spawned { .. } => "spawned",
            Event::Ready { .. } => "ready",
            Event::Unhealthy { .. } => "unhealthy",
            Event::SpawnFailed { .. } => "exec-failed",
            Event::Exited { .. } => "exited",
            Event::Backoff { .. } => "backoff",
            Event::GaveUp { .. } | Event::Failed => "failed",
            Event::Stopping { .. } | Event::Killed { .. } => "stopping",
            Event::LeftInGroup { .. } => "left-in-group",
            Event::Stopped => "stopped",
            Event::Completed => "completed",
            Event::Unexpected { .. } => "unexpected",
        };
        let _ = write!(et, "{} {kind}", Stamp(wall_of(*at, now)));
        match *e {
            Event::Spawned { pid } => {
                let _ = write!(et, " pid {pid}");
            }
            Event::Exited { status, uptime, .. } => {
                let _ = write!(et, " {status} after {}", Dur(uptime));
            }
            Event::Backoff { delay, .. } => {
                let _ = write!(et, " {}", Dur(delay));
            }
            Event::SpawnFailed { err } if err.stage == coffey::sys::Stage::User => {
                let _ = et.write_str(" ");
                super::spawn::write_failure(&mut et, err, Some(&slot.prep));
            }
            Event::LeftInGroup { left, .. } => {
                let _ = write!(et, " {}", left.total());
            }
            Event::SpawnFailed { err } => {
                let _ = write!(et, " {}: {}", err.stage.name(), errno_desc(err.errno));
            }
            _ => {}
        }
        ok &= c
            .conn
            .queue(&Reply::Detail {
                key: "event",
                value: core::str::from_utf8(et.as_bytes()).unwrap_or(""),
            })
            .is_ok();
    }
    ok &= c.conn.queue(&Reply::End).is_ok();
    if !ok {
        c.conn.phase = Phase::Closing;
    }
}

/// Ends every `logs -f` of slot `idx` (its service is gone or replaced).
pub fn end_followers(shell: &mut Shell, idx: usize) {
    let want = Phase::Streaming(Stream::Logs(idx as u16));
    for c in shell.ctl.clients.iter_mut() {
        if c.fd >= 0 && c.conn.phase == want {
            let _ = c.conn.queue(&Reply::End);
            c.conn.phase = Phase::Closing;
            if !flush(c) || c.conn.finished() {
                close_client(c);
            }
        }
    }
}

/// Produces frames for a multi-frame reply while there is room.
fn pump(sup: &Supervisor<'_>, shell: &mut Shell, k: usize, now: Instant) {
    let Some(Phase::Writing(job)) = shell.ctl.clients.get(k).map(|c| c.conn.phase) else {
        return;
    };
    match job {
        Job::StatusAll { mut next } => {
            let mut text = LineBuf::default();
            let mut health = LineBuf::default();
            while usize::from(next) < sup.len() {
                let Some(s) = sup.services().get(usize::from(next)) else {
                    break;
                };
                if shell
                    .slots
                    .get(usize::from(next))
                    .is_some_and(|s| s.retired)
                {
                    next += 1;
                    continue;
                }
                reason(s, shell, now, &mut text);
                let Shell { slots, ctl, .. } = &mut *shell;
                let (Some(slot), Some(c)) = (slots.get(usize::from(next)), ctl.clients.get_mut(k))
                else {
                    return;
                };
                health_text(s, &mut health);
                if c.conn.queue(&row(s, slot, now, &text, &health)).is_err() {
                    c.conn.phase = Phase::Writing(Job::StatusAll { next });
                    return;
                }
                next += 1;
            }
            if let Some(c) = shell.ctl.clients.get_mut(k) {
                c.conn.phase = if c.conn.queue(&Reply::End).is_ok() {
                    Phase::Reading
                } else {
                    Phase::Writing(Job::StatusAll { next })
                };
            }
        }
        Job::AwaitReload { .. } | Job::Plan { .. } => {
            let Shell { reloader, ctl, .. } = &mut *shell;
            if let Some(c) = ctl.clients.get_mut(k) {
                c.conn.phase = super::reload::answer(reloader, &mut c.conn, job);
            }
        }
        Job::LogsTail {
            svc,
            next_seq,
            end_seq,
            follow,
        } => logs_tail(shell, k, svc, next_seq, end_seq, follow),
    }
}

/// Queues the ring lines of slot `svc` with sequence numbers in
/// `next_seq..end_seq` to client `k`, as far as its buffer takes them; then
/// catches up and follows, or ends.
fn logs_tail(shell: &mut Shell, k: usize, svc: u16, next_seq: u64, end_seq: u64, follow: bool) {
    let Shell { slots, ctl, .. } = &mut *shell;
    let (Some(slot), Some(c)) = (slots.get(usize::from(svc)), ctl.clients.get_mut(k)) else {
        return;
    };
    // History lines evicted by newer output before they could be sent
    // are counted, so the reader knows its tail has a hole.
    let first = slot.ring.first_seq();
    let lost = first.min(end_seq).saturating_sub(next_seq);
    if lost > 0 {
        let count = u32::try_from(lost).unwrap_or(u32::MAX);
        if c.conn.queue(&Reply::Dropped { count }).is_err() {
            return;
        }
    }
    let mut next = next_seq.max(first);
    let mut full = false;
    let mut line = [0u8; LINE_MAX];
    slot.ring.try_for_each_from(next, |seq, l| {
        if seq >= end_seq {
            return false;
        }
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
        if c.conn.queue(&rep).is_err() {
            full = true;
            return false;
        }
        next = seq + 1;
        true
    });
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

/// Reads, handles requests, produces and flushes output for client `k`.
pub fn service_client(
    sup: &mut Supervisor<'_>,
    shell: &mut Shell,
    k: usize,
    now: Instant,
    shutdown_timeout: u64,
) {
    let mut eof = false;
    if let Some(c) = shell.ctl.clients.get_mut(k) {
        if c.fd < 0 {
            return;
        }
        if c.readable {
            loop {
                c.conn.discard_input();
                let space = c.conn.read_space();
                if space.is_empty() {
                    break;
                }
                // SAFETY: valid buffer.
                let n = unsafe { libc::recv(c.fd, space.as_mut_ptr().cast(), space.len(), 0) };
                if n < 0 {
                    let e = nix::errno::Errno::last_raw();
                    if e == libc::EINTR {
                        continue;
                    }
                    if e != libc::EAGAIN {
                        eof = true;
                    }
                    c.readable = false;
                    break;
                }
                if n == 0 {
                    eof = true;
                    c.readable = false;
                    break;
                }
                c.conn.did_read(usize::try_from(n).unwrap_or(0), now);
            }
        }
    }
    // Requests, one at a time.
    loop {
        let mut frame = [0u8; IN_BUF];
        let got = match shell.ctl.clients.get_mut(k) {
            Some(c) => c.conn.take_frame(&mut frame),
            None => return,
        };
        match got {
            Ok(None) => break,
            Ok(Some(n)) => match proto::decode_request(frame.get(..n).unwrap_or(&[])) {
                Ok((req, _)) => handle(sup, shell, k, req, now, shutdown_timeout),
                Err(_) => {
                    if let Some(c) = shell.ctl.clients.get(k) {
                        let (uid, pid) = (c.uid, c.pid);
                        log!(
                            shell.log,
                            "control: malformed request from uid {uid} pid {pid}; closing"
                        );
                    }
                    error(shell, k, ErrorCode::BadRequest, "malformed request");
                    set_phase(shell, k, Phase::Closing);
                }
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
                if let Some(c) = shell.ctl.clients.get(k) {
                    let (uid, pid) = (c.uid, c.pid);
                    log!(
                        shell.log,
                        "control: {msg} from uid {uid} pid {pid}; closing"
                    );
                }
                error(shell, k, code, msg);
                set_phase(shell, k, Phase::Closing);
                break;
            }
        }
        pump(sup, shell, k, now);
    }
    pump(sup, shell, k, now);
    if let Some(c) = shell.ctl.clients.get_mut(k) {
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
}

/// Acts on the connection deadlines that passed, and reports what the
/// drop-and-count logs counted.
pub fn expire(shell: &mut Shell, now: Instant) {
    for k in 0..shell.ctl.clients.len() {
        let Some(c) = shell.ctl.clients.get_mut(k) else {
            continue;
        };
        if c.fd < 0 {
            continue;
        }
        match c.conn.expired(now) {
            None => {}
            Some(Expiry::Idle) => close_client(c),
            Some(Expiry::Request) => request_timeout(shell, k, now),
            Some(Expiry::Stalled) => cut_off(shell, k),
        }
    }
    let g = &mut shell.ctl.guard;
    if let Some(n) = g.refused.take_due(now) {
        log!(
            shell.log,
            "control socket: {n} connections refused in the last {}",
            Dur(REFUSAL_LOG_WINDOW_MS)
        );
    }
    if let Some(n) = shell.ctl.guard.timeouts.take_due(now) {
        log!(
            shell.log,
            "control: {n} more requests not complete within {} in the last {}",
            Dur(REQUEST_TIMEOUT_MS),
            Dur(REFUSAL_LOG_WINDOW_MS)
        );
    }
}

/// A request not complete `REQUEST_TIMEOUT_MS` after its first byte: an
/// error reply (there is room: the peer has been sent nothing since), then
/// close.
fn request_timeout(shell: &mut Shell, k: usize, now: Instant) {
    let Some((uid, pid)) = shell.ctl.clients.get(k).map(|c| (c.uid, c.pid)) else {
        return;
    };
    if shell.ctl.guard.timeouts.note(now) {
        log!(
            shell.log,
            "control: request not complete within {} from uid {uid} pid {pid}; closing",
            Dur(REQUEST_TIMEOUT_MS)
        );
    }
    let mut msg = LineBuf::default();
    let _ = write!(
        msg,
        "request not complete within {}; closing",
        Dur(REQUEST_TIMEOUT_MS)
    );
    error(
        shell,
        k,
        ErrorCode::BadRequest,
        core::str::from_utf8(msg.as_bytes()).unwrap_or(""),
    );
    if let Some(c) = shell.ctl.clients.get_mut(k) {
        let _ = flush(c);
        close_client(c);
    }
}

/// Output the peer read none of for `STALL_TIMEOUT_MS`: a stream ends with
/// its `Dropped` marker, then the connection closes. Each is logged: one
/// costs its peer the stall time, so they come slowly.
fn cut_off(shell: &mut Shell, k: usize) {
    let Some(c) = shell.ctl.clients.get_mut(k) else {
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
        shell.log,
        "control: {what} uid {uid} pid {pid} not reading for {}; closed ({dropped} frames dropped)",
        Dur(STALL_TIMEOUT_MS)
    );
}

/// Whether client `k` has work that needs another turn without waiting
/// for readiness (a long reply whose buffer drained).
pub fn has_pending(shell: &Shell, k: usize) -> bool {
    shell.ctl.clients.get(k).is_some_and(|c| {
        // A client waiting for a reload is woken by the reload machine.
        let waiting = matches!(c.conn.phase, Phase::Writing(Job::AwaitReload { .. }));
        c.fd >= 0
            && matches!(c.conn.phase, Phase::Writing(_))
            && !waiting
            && c.conn.output().is_empty()
    })
}
