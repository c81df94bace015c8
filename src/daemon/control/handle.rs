//! One control request: the read-only check, then one short function a
//! request kind, each acting on the supervisor or the shell and queuing
//! its reply.

use super::render::status_one;
use super::Control;
use super::Shell;
use crate::daemon::log::Log;
use crate::daemon::log::{log, LineBuf};
use crate::daemon::pid1::Life;
use crate::daemon::reload::machine as reload_machine;
use crate::daemon::Services;
use crate::daemon::{errno_desc, pid1};
use coffey::control::conn::{Job, Phase, Stream};
use coffey::control::proto::{self, ErrorCode, Reply, Request};
use coffey::supervisor::Supervisor;
use coffey::sys::signal_name;
use coffey::time::{Dur, Instant};
use core::fmt::{self, Write as _};
use nix::libc;

/// The peer of a client, for permission and the log.
#[derive(Copy, Clone)]
struct Who {
    uid: u32,
    pid: i32,
    readonly: bool,
}

pub(super) fn handle(
    sup: &mut Supervisor<'_>,
    shell: &mut Shell,
    k: usize,
    req: Request<'_>,
    now: Instant,
    shutdown_timeout: u64,
) {
    let who = match shell.ctl.clients.get(k) {
        Some(c) => Who {
            uid: c.uid,
            pid: c.pid,
            readonly: c.readonly,
        },
        None => return,
    };
    if who.readonly && !readonly_verb(&req) {
        return deny(&mut shell.ctl, &mut shell.log, k, who, &req);
    }
    match req {
        Request::Status { name, .. } => status(sup, &shell.svc, &mut shell.ctl, k, name, now),
        Request::Start { ref names }
        | Request::Stop { ref names }
        | Request::Restart { ref names } => lifecycle(sup, shell, k, &req, names, who, now),
        Request::Signal { name, signal } => send_signal(sup, shell, k, name, signal, who),
        Request::Logs {
            name,
            lines,
            follow,
        } => logs(&shell.svc, &mut shell.ctl, k, name, lines, follow),
        Request::Events => events(&mut shell.ctl, k),
        Request::Reload { dry_run } => reload(sup, shell, k, dry_run, who, now),
        Request::Shutdown => shutdown(sup, shell, k, who, now, shutdown_timeout),
        Request::Power { action } => power(sup, shell, k, action, who, now),
        Request::Reexec => reexec(&mut shell.ctl, &mut shell.log, &mut shell.life, k, who),
        Request::DebugPanic => debug_panic(&mut shell.ctl, &mut shell.log, k, who),
        Request::Version => version(&mut shell.ctl, k),
        Request::Metrics => super::metrics::start(&mut shell.ctl, k, shell.turns.count),
    }
}

fn readonly_verb(r: &Request<'_>) -> bool {
    matches!(
        r,
        Request::Status { .. }
            | Request::Logs { .. }
            | Request::Events
            | Request::Version
            | Request::Metrics
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
        Request::Metrics => "metrics",
    }
}

/// A read-only peer asked for more than it may.
fn deny(ctl: &mut Control, log: &mut Log, k: usize, who: Who, req: &Request<'_>) {
    let Who { uid, pid, .. } = who;
    log!(
        log,
        "control: denied '{}' to uid {uid} pid {pid} (read-only access)",
        verb(req)
    );
    let why =
        format_args!("permission denied: uid {uid} may only use status, logs, events and version");
    error_fmt(ctl, k, ErrorCode::Denied, why);
}

/// A reply to client `k` (queued; sent by the next flush).
pub(super) fn reply(ctl: &mut Control, k: usize, rep: &Reply<'_>) {
    if let Some(c) = ctl.clients.get_mut(k) {
        if c.conn.queue(rep).is_err() {
            c.conn.phase = Phase::Closing;
        }
    }
}

pub(super) fn error(ctl: &mut Control, k: usize, code: ErrorCode, message: &str) {
    reply(ctl, k, &Reply::Error { code, message });
}

/// An error whose message is formatted (into a stack buffer).
pub(super) fn error_fmt(ctl: &mut Control, k: usize, code: ErrorCode, why: fmt::Arguments<'_>) {
    let mut msg = LineBuf::default();
    let _ = msg.write_fmt(why);
    let message = core::str::from_utf8(msg.as_bytes()).unwrap_or("");
    error(ctl, k, code, message);
}

fn ok(ctl: &mut Control, k: usize, message: &str) {
    reply(ctl, k, &Reply::Ok { message });
}

pub(super) fn set_phase(ctl: &mut Control, k: usize, p: Phase) {
    if let Some(c) = ctl.clients.get_mut(k) {
        c.conn.phase = p;
    }
}

fn find(svc: &Services, name: &str) -> Option<usize> {
    if name.is_empty() {
        return None;
    }
    // Retired slots keep their name for their last log lines only.
    svc.slots
        .get(..svc.used)?
        .iter()
        .position(|s| !s.retired && s.name.as_str() == name)
}

/// Resolves every name or answers `unknown service`.
fn resolve<const N: usize>(
    svc: &Services,
    ctl: &mut Control,
    k: usize,
    names: &[&str],
    out: &mut heapless::Vec<usize, N>,
) -> bool {
    for n in names {
        match find(svc, n) {
            Some(i) => {
                let _ = out.push(i);
            }
            None => {
                let why = format_args!("unknown service '{n}'");
                error_fmt(ctl, k, ErrorCode::UnknownService, why);
                return false;
            }
        }
    }
    true
}

/// The slot of the one service `name`, or `unknown service` answered.
fn resolve_one(svc: &Services, ctl: &mut Control, k: usize, name: &str) -> Option<usize> {
    let mut idx = heapless::Vec::<usize, 1>::new();
    if !resolve(svc, ctl, k, &[name], &mut idx) {
        return None;
    }
    idx.first().copied()
}

/// `status` (all: a multi-frame job) or `status NAME`.
fn status(
    sup: &Supervisor<'_>,
    svc: &Services,
    ctl: &mut Control,
    k: usize,
    name: &str,
    now: Instant,
) {
    if name.is_empty() {
        return set_phase(ctl, k, Phase::Writing(Job::StatusAll { next: 0 }));
    }
    match find(svc, name) {
        Some(i) => status_one(sup, svc, ctl, k, i, now),
        None => {
            let _ = resolve_one(svc, ctl, k, name);
        }
    }
}

/// start, stop or restart of the named services.
fn lifecycle(
    sup: &mut Supervisor<'_>,
    shell: &mut Shell,
    k: usize,
    req: &Request<'_>,
    names: &[&str],
    who: Who,
    now: Instant,
) {
    if sup.shutting_down() {
        return error(
            &mut shell.ctl,
            k,
            ErrorCode::Failed,
            "coffeyd is shutting down",
        );
    }
    let mut idx = heapless::Vec::<usize, { proto::MAX_NAMES }>::new();
    if !resolve(&shell.svc, &mut shell.ctl, k, names, &mut idx) {
        return;
    }
    let v = verb(req);
    for &i in &idx {
        match req {
            Request::Start { .. } => sup.start(i, now, shell),
            Request::Stop { .. } => sup.stop(i, now, shell),
            _ => sup.restart(i, now, shell),
        };
    }
    let Who { uid, pid, .. } = who;
    log!(shell.log, "control: {v} requested by uid {uid} pid {pid}");
    let mut msg = LineBuf::default();
    let _ = write!(msg, "{v}:");
    for n in names {
        let _ = write!(msg, " {n}");
    }
    ok(
        &mut shell.ctl,
        k,
        core::str::from_utf8(msg.as_bytes()).unwrap_or(""),
    );
}

/// `signal NAME N`: kill(2) on the service's process.
fn send_signal(
    sup: &Supervisor<'_>,
    shell: &mut Shell,
    k: usize,
    name: &str,
    signal: i32,
    who: Who,
) {
    let Shell { svc, ctl, log, .. } = shell;
    let Some(i) = resolve_one(svc, ctl, k, name) else {
        return;
    };
    let target = sup.services().get(i).and_then(|s| s.state.pid());
    let p = match target {
        _ if !(1..=64).contains(&signal) => {
            return error(ctl, k, ErrorCode::BadRequest, "invalid signal number")
        }
        None => return error(ctl, k, ErrorCode::Failed, "service has no process"),
        Some(p) => p,
    };
    // SAFETY: plain syscall.
    if unsafe { libc::kill(p, signal) } != 0 {
        let e = errno_desc(nix::errno::Errno::last_raw());
        return error(ctl, k, ErrorCode::Failed, e);
    }
    log!(
        log,
        "control: {} sent to {name} (pid {p}) by uid {}",
        signal_name(signal),
        who.uid
    );
    ok(ctl, k, "signal sent");
}

/// `logs NAME`: a multi-frame job from the last `lines` lines on; with no
/// name, every service's in turn.
fn logs(svc: &Services, ctl: &mut Control, k: usize, name: &str, lines: u16, follow: bool) {
    if name.is_empty() {
        let job = Job::LogsAll {
            svc: 0,
            lines,
            next_seq: u64::MAX,
            end_seq: 0,
            follow,
        };
        return set_phase(ctl, k, Phase::Writing(job));
    }
    let Some(i) = resolve_one(svc, ctl, k, name) else {
        return;
    };
    let ring = svc
        .slots
        .get(i)
        .map(|s| (s.output.ring.first_seq(), s.output.ring.pushed));
    let (first, pushed) = ring.unwrap_or((0, 0));
    let from = pushed.saturating_sub(u64::from(lines)).max(first);
    let job = Job::LogsTail {
        svc: i as u16,
        next_seq: from,
        end_seq: pushed,
        follow,
    };
    set_phase(ctl, k, Phase::Writing(job));
}

fn events(ctl: &mut Control, k: usize) {
    ok(ctl, k, "subscribed");
    set_phase(ctl, k, Phase::Streaming(Stream::Events));
}

/// `reload`: queued with the reload machine; the client then waits for
/// the answer of the reload that reads the file after it asked.
fn reload(
    sup: &mut Supervisor<'_>,
    shell: &mut Shell,
    k: usize,
    dry_run: bool,
    who: Who,
    now: Instant,
) {
    let Who { uid, pid, .. } = who;
    log!(
        shell.log,
        "control: reload{} requested by uid {uid} pid {pid}",
        if dry_run { " --dry-run" } else { "" }
    );
    let mut queued = |shell: &mut Shell, gen| {
        set_phase(&mut shell.ctl, k, Phase::Writing(Job::AwaitReload { gen }));
    };
    let asker = reload_machine::Asker::Client(&mut queued);
    if let Err(message) = reload_machine::request(sup, shell, asker, dry_run, now) {
        error(&mut shell.ctl, k, ErrorCode::Failed, message);
    }
}

fn shutdown(
    sup: &mut Supervisor<'_>,
    shell: &mut Shell,
    k: usize,
    who: Who,
    now: Instant,
    timeout: u64,
) {
    let Who { uid, pid, .. } = who;
    log!(
        shell.log,
        "control: shutdown requested by uid {uid} pid {pid} (timeout {})",
        Dur(timeout)
    );
    ok(&mut shell.ctl, k, "shutting down");
    sup.shutdown(now, timeout, shell);
}

/// poweroff, reboot or halt: only as the machine's init.
fn power(
    sup: &mut Supervisor<'_>,
    shell: &mut Shell,
    k: usize,
    action: u8,
    who: Who,
    now: Instant,
) {
    let a = match action {
        0 => pid1::Action::Poweroff,
        1 => pid1::Action::Reboot,
        _ => pid1::Action::Halt,
    };
    if shell.life.mode != pid1::Mode::System {
        let message = "coffeyd is not the init of this machine; use shutdown";
        return error(&mut shell.ctl, k, ErrorCode::Failed, message);
    }
    let Who { uid, pid, .. } = who;
    log!(
        shell.log,
        "control: {} requested by uid {uid} pid {pid}",
        a.name()
    );
    shell.life.action = Some(a);
    ok(&mut shell.ctl, k, a.name());
    let t = shell.life.shutdown_timeout;
    sup.shutdown(now, t, shell);
}

fn reexec(ctl: &mut Control, log: &mut Log, life: &mut Life, k: usize, who: Who) {
    let Who { uid, pid, .. } = who;
    log!(log, "control: reexec requested by uid {uid} pid {pid}");
    ok(ctl, k, "re-executing");
    life.reexec_requested = true;
}

fn debug_panic(ctl: &mut Control, log: &mut Log, k: usize, who: Who) {
    if coffey::control::proto::DEBUG_VERBS {
        let Who { uid, pid, .. } = who;
        log!(log, "control: debug panic requested by uid {uid} pid {pid}");
        #[allow(clippy::panic)]
        {
            panic!("debug panic requested over the control socket");
        }
    }
    error(ctl, k, ErrorCode::BadRequest, "not a debug build");
}

fn version(ctl: &mut Control, k: usize) {
    let rep = Reply::Version {
        version: env!("CARGO_PKG_VERSION"),
        commit: option_env!("COFFEY_COMMIT").unwrap_or("unknown"),
        target: option_env!("COFFEY_TARGET").unwrap_or("unknown"),
        profile: option_env!("COFFEY_PROFILE").unwrap_or("unknown"),
    };
    reply(ctl, k, &rep);
}
