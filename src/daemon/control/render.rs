//! Status texts: the one-line row of a service (state, reason, health)
//! and the `Detail` frames of `status NAME`. Everything is formatted into
//! fixed `LineBuf`s and queued straight into the client's buffer.

use super::Control;
use crate::daemon::clock::Stamp;
use crate::daemon::log::LineBuf;
use crate::daemon::spawn::Prepared;
use crate::daemon::{cgroup, notify, probe, words, Services, Slot};
use coffey::control::conn::{Conn, Job, Phase};
use coffey::control::proto::{LastExit, Reply, WireState};
use coffey::health::{CheckState, Role, Verdict};
use coffey::recent::Kept;
use coffey::service::{Kind, LeftInGroupText, Reason, Restart, Service, State, StateName};
use coffey::supervisor::Supervisor;
use coffey::sys::{signal_name, ExitStatus};
use coffey::time::{Dur, Instant};
use core::fmt::Write as _;

pub fn wire_state(s: StateName) -> WireState {
    WireState::from(s)
}

pub(super) fn last_exit(e: Option<ExitStatus>) -> LastExit {
    match e {
        None => LastExit::default(),
        Some(ExitStatus::Code(c)) => LastExit { kind: 1, value: c },
        Some(ExitStatus::Signal(s)) => LastExit { kind: 2, value: s },
    }
}

/// Wall-clock ms of a monotonic instant.
pub fn wall_of(t: Instant, now: Instant) -> u64 {
    crate::daemon::clock::wall_ms().saturating_sub(now.since(t))
}

/// A check's role as a word: "readiness", "liveness", "startup".
pub fn role_name(r: Role) -> &'static str {
    r.as_str()
}

/// How the last run ended: "signal SIGKILL", or "killed by the OOM
/// killer (memory_max 64MiB)" when its cgroup says so.
fn exit_text(out: &mut LineBuf, st: ExitStatus, svc: &Services, idx: u16) {
    let _ = match cgroup::oom_of(&svc.cg, usize::from(idx), st) {
        Some(oom) => write!(out, "{oom}"),
        None => write!(out, "{st}"),
    };
}

/// Human reason for a state: "next try in 4s", "exec failed: ..." (in
/// `words`' phrases; the SIGUSR1 dump shows the same text).
pub(crate) fn reason(s: &Service, svc: &Services, now: Instant, out: &mut LineBuf) {
    out.clear();
    let prep = |i: u16| svc.slots.get(usize::from(i)).map(|s| &s.prep);
    let dep = |i: u16| {
        svc.slots
            .get(usize::from(i))
            .map_or("?", |s| s.name.as_str())
    };
    match (s.state, s.reason) {
        (State::Waiting, Reason::Dependency { idx, failed }) => {
            words::waiting_for(out, dep(idx), failed);
        }
        (State::Backoff { retry_at }, r) => {
            if s.degraded() {
                words::degraded(out, s.failures);
                let _ = out.write_str("; ");
            }
            backoff_cause(s, r, svc, out);
            let _ = write!(out, "next try in {}", Dur(retry_at.since(now)));
        }
        (State::Failed, Reason::GaveUp { failures }) => {
            words::gave_up(out, failures);
            if let Some(st) = s.last_exit {
                let _ = write!(out, " (last: {st})");
            }
        }
        (State::Failed, Reason::SpawnFailed(e)) => {
            words::spawn_failed(out, e, prep(s.idx));
        }
        (State::Failed | State::Stopped, Reason::Exited(st)) => {
            exit_text(out, st, svc, s.idx);
        }
        (_, Reason::LeftInGroup { left, .. }) => {
            let _ = write!(out, "{}", LeftInGroupText(left));
        }
        _ => {}
    }
    // Running again, but not yet long enough to count as recovered.
    if s.degraded() && matches!(s.state, State::Starting { .. } | State::Running { .. }) {
        if !out.as_bytes().is_empty() {
            let _ = out.write_str("; ");
        }
        words::degraded(out, s.failures);
    }
}

/// `status NAME`'s reason goes on down the chain of dependencies it waits
/// for, each with its state and why: "waiting for api (starting: readiness
/// unhealthy: connection refused)", "waiting for api (waiting: waiting for
/// db (backoff: exit code 1; next try in 2s))". A loop, not recursion, so
/// the daemon's stack stays bounded; the config has no cycles, the bound
/// only guards the loop.
fn waiting_chain(s: &Service, all: &[Service], svc: &Services, now: Instant, out: &mut LineBuf) {
    let mut cur = waits_for(all, s);
    let mut why = LineBuf::default();
    let mut open = 0;
    while let Some(dep) = cur.take() {
        if open >= 8 {
            break;
        }
        let _ = write!(out, " ({}", dep.state.name().as_str());
        reason(dep, svc, now, &mut why);
        if why.as_bytes().is_empty() && matches!(dep.state, State::Starting { .. }) {
            readiness_cause(dep, &mut why);
        }
        if !why.as_bytes().is_empty() {
            let _ = out.write_str(": ");
            out.push_bytes(why.as_bytes());
        }
        open += 1;
        cur = waits_for(all, dep);
    }
    for _ in 0..open {
        let _ = out.write_str(")");
    }
}

/// The service `s` waits for (not one that failed: that is said already).
fn waits_for<'a>(all: &'a [Service], s: &Service) -> Option<&'a Service> {
    match (s.state, s.reason) {
        (State::Waiting, Reason::Dependency { idx, failed: false }) => all.get(usize::from(idx)),
        _ => None,
    }
}

/// "readiness unhealthy: connection refused": the readiness check a
/// starting service waits for.
fn readiness_cause(s: &Service, out: &mut LineBuf) {
    let Some(c) = s.checks.first().copied().flatten() else {
        return;
    };
    let _ = write!(out, "{} {}", role_name(c.role), c.verdict.as_str());
    if let Some(e) = c.last_error {
        let _ = out.write_str(": ");
        probe::error_text(e, out);
    }
}

/// Why a service in backoff failed, ending in "; " when there is a why.
fn backoff_cause(s: &Service, r: Reason, svc: &Services, out: &mut LineBuf) {
    match r {
        Reason::SpawnFailed(e) => {
            let prep = svc.slots.get(usize::from(s.idx)).map(|s| &s.prep);
            words::spawn_failed(out, e, prep);
            let _ = out.write_str("; ");
        }
        Reason::Exited(st) => {
            exit_text(out, st, svc, s.idx);
            let _ = out.write_str("; ");
        }
        Reason::Unhealthy => {
            unhealthy_cause(s, out);
            let _ = out.write_str("; ");
        }
        Reason::StartTimeout => {
            words::unhealthy(out, true);
            let _ = out.write_str("; ");
        }
        Reason::LeftInGroup { left, .. } => {
            let _ = write!(out, "{}; ", LeftInGroupText(left));
        }
        _ => {}
    }
}

/// "liveness failed" and the error of the check that failed: liveness,
/// else the notify watchdog ("startup failed" and its error when the
/// startup check failed).
fn unhealthy_cause(s: &Service, out: &mut LineBuf) {
    let startup = s.checks.get(2).copied().flatten();
    if let Some(c) = startup.filter(|c| c.verdict == coffey::health::Verdict::Unhealthy) {
        words::startup_failed(out);
        if let Some(e) = c.last_error {
            let _ = out.write_str(": ");
            probe::error_text(e, out);
        }
        return;
    }
    let failed = s
        .checks
        .get(1)
        .copied()
        .flatten()
        .filter(|c| c.last_error.is_some())
        .or(s.checks.first().copied().flatten());
    words::unhealthy(out, false);
    if let Some(e) = failed.and_then(|c| c.last_error) {
        let _ = out.write_str(": ");
        probe::error_text(e, out);
    }
}

fn row<'a>(
    s: &Service,
    slot: &'a Slot,
    now: Instant,
    text: &'a LineBuf,
    health: &'a LineBuf,
) -> Reply<'a> {
    Reply::Service {
        name: &slot.name,
        state: wire_state(s.state.name()),
        pid: s.state.pid().unwrap_or(0),
        uptime_ms: s.state.spawned_at().map_or(0, |t| now.since(t)),
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
            Role::Readiness => "ready",
            Role::Liveness => "live",
            Role::Startup => "startup",
        };
        let v = if c.state == CheckState::Off {
            "off"
        } else {
            c.verdict.as_str()
        };
        let _ = write!(out, "{role}:{v}");
        if c.verdict != Verdict::Healthy {
            if let Some(e) = c.last_error {
                let _ = out.write_str(" (");
                probe::error_text(e, out);
                let _ = out.write_str(")");
            }
        }
    }
    if first {
        let _ = out.write_str("-");
    }
}

/// Queues the rows of `status` (all services) from `next` on, as far as
/// client `k`'s buffer takes them, then `End`.
pub(super) fn status_all(
    sup: &Supervisor<'_>,
    svc: &Services,
    ctl: &mut Control,
    k: usize,
    mut next: u16,
    now: Instant,
) {
    let mut text = LineBuf::default();
    let mut health = LineBuf::default();
    while usize::from(next) < sup.len() {
        let Some(s) = sup.services().get(usize::from(next)) else {
            break;
        };
        if svc.slots.get(usize::from(next)).is_some_and(|s| s.retired) {
            next += 1;
            continue;
        }
        reason(s, svc, now, &mut text);
        let (Some(slot), Some(c)) = (svc.slots.get(usize::from(next)), ctl.clients.get_mut(k))
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
    if let Some(c) = ctl.clients.get_mut(k) {
        c.conn.phase = if c.conn.queue(&Reply::End).is_ok() {
            Phase::Reading
        } else {
            Phase::Writing(Job::StatusAll { next })
        };
    }
}

/// Writes one detail's value.
type Fill<'a> = &'a mut dyn FnMut(&mut LineBuf);

/// Queues `Detail` frames to one client, each value formatted into one
/// reused buffer; `ok` is false once one did not fit.
struct Details<'c> {
    conn: &'c mut Conn<'static>,
    text: LineBuf,
    ok: bool,
}

impl Details<'_> {
    fn add(&mut self, key: &str, f: Fill<'_>) {
        self.text.clear();
        f(&mut self.text);
        let value = core::str::from_utf8(self.text.as_bytes()).unwrap_or("");
        self.ok &= self.conn.queue(&Reply::Detail { key, value }).is_ok();
    }
}

/// `status NAME`: the row of service `i`, its details, its recent events
/// and `End`; a reply that does not fit closes the connection.
pub(super) fn status_one(
    sup: &Supervisor<'_>,
    svc: &Services,
    ctl: &mut Control,
    k: usize,
    i: usize,
    now: Instant,
) {
    let Some(s) = sup.services().get(i) else {
        return;
    };
    let mut text = LineBuf::default();
    reason(s, svc, now, &mut text);
    waiting_chain(s, sup.services(), svc, now, &mut text);
    let Services { slots, cg, .. } = svc;
    let (Some(slot), Some(c)) = (slots.get(i), ctl.clients.get_mut(k)) else {
        return;
    };
    let mut health = LineBuf::default();
    health_text(s, &mut health);
    let ok = c.conn.queue(&row(s, slot, now, &text, &health)).is_ok();
    let mut d = Details {
        conn: &mut c.conn,
        text,
        ok,
    };
    exec_details(&mut d, slot);
    policy_details(&mut d, s);
    deps_detail(&mut d, s, slots);
    run_details(&mut d, s, now);
    let mut cgroup_detail = |key: &str, f: Fill<'_>| d.add(key, f);
    cgroup::status_details(cg, i, s.state.pid(), &mut cgroup_detail);
    process_details(&mut d, s, slot);
    log_detail(&mut d, slot);
    check_details(&mut d, s, slot);
    for (at, e) in s.recent.iter() {
        d.add("event", &mut |t| recent_text(t, at, e, now, &slot.prep));
    }
    d.ok &= d.conn.queue(&Reply::End).is_ok();
    if !d.ok {
        d.conn.phase = Phase::Closing;
    }
}

/// binary and args, when the exec area is prepared.
fn exec_details(d: &mut Details<'_>, slot: &Slot) {
    if !slot.prep.filled {
        return;
    }
    let prep = &slot.prep;
    d.add("binary", &mut |t| {
        let _ = write!(t, "{}", prep.path().to_str().unwrap_or("?"));
    });
    d.add("args", &mut |t| {
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

/// type, restart, backoff, max_restarts and stop.
fn policy_details(d: &mut Details<'_>, s: &Service) {
    let p = s.policy;
    d.add("type", &mut |t| {
        let _ = t.write_str(if p.kind == Kind::Oneshot {
            "oneshot"
        } else {
            "service"
        });
    });
    d.add("restart", &mut |t| {
        let _ = t.write_str(match p.restart {
            Restart::Always => "always",
            Restart::OnFailure => "on-failure",
            Restart::Never => "never",
        });
    });
    d.add("backoff", &mut |t| {
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
    d.add("max_restarts", &mut |t| {
        let _ = write!(
            t,
            "{} (consecutive failures now {})",
            p.max_restarts, s.failures
        );
    });
    d.add("stop", &mut |t| {
        let _ = write!(
            t,
            "{}, then SIGKILL after {}",
            signal_name(p.stop_signal),
            Dur(p.stop_timeout)
        );
    });
}

/// since (the last state change) and the process group.
fn run_details(d: &mut Details<'_>, s: &Service, now: Instant) {
    d.add("since", &mut |t| {
        let _ = write!(t, "{}", Stamp(wall_of(s.since, now)));
    });
    if let Some(pid) = s.state.pid() {
        d.add("pgid", &mut |t| {
            let _ = write!(t, "{pid}");
        });
    }
}

/// depends_on, when there are dependencies.
fn deps_detail(d: &mut Details<'_>, s: &Service, slots: &[Slot]) {
    if s.deps.is_empty() {
        return;
    }
    d.add("depends_on", &mut |t| {
        for (n, dep) in s.deps.iter().enumerate() {
            let dn = slots
                .get(usize::from(dep.idx))
                .map_or("?", |s| s.name.as_str());
            let _ = write!(
                t,
                "{}{dn} ({:?})",
                if n > 0 { ", " } else { "" },
                dep.condition
            );
        }
    });
}

/// last_exit and what the process told over sd_notify.
fn process_details(d: &mut Details<'_>, s: &Service, slot: &Slot) {
    if let Some(st) = s.last_exit {
        d.add("last_exit", &mut |t| {
            let _ = write!(t, "{st}");
        });
    }
    let status = slot.notify.text.get().map_or(&[][..], |t| &t.status);
    if !status.is_empty() {
        d.add("notify_status", &mut |t| {
            let _ = t.write_str(core::str::from_utf8(status).unwrap_or("?"));
        });
    }
    if s.state.has_process() && slot.notify.sd.state != notify::NotifyState::None {
        d.add("notify_state", &mut |t| {
            let _ = t.write_str(slot.notify.sd.state.as_str());
        });
    }
    if slot.notify.sd.main_pid != 0 {
        d.add("main_pid", &mut |t| {
            let _ = write!(t, "{}", slot.notify.sd.main_pid);
        });
    }
}

/// The log ring's fill and losses, and the log file.
fn log_detail(d: &mut Details<'_>, slot: &Slot) {
    d.add("log", &mut |t| {
        let r = &slot.output.ring;
        let _ = write!(
            t,
            "{} lines in a {} byte ring, {} evicted, {} cut",
            r.len(),
            r.capacity(),
            r.evicted,
            r.cut
        );
        if let Some(f) = slot.output.file.get() {
            let _ = write!(t, "; file {}", f.path_str());
        }
        if let Some(n) = slot.output.logger_dropped() {
            let _ = write!(t, "; to its logger, {n} dropped (pipe full)");
        }
    });
}

/// One line a health check: its probe, verdict, counters and last error.
fn check_details(d: &mut Details<'_>, s: &Service, slot: &Slot) {
    for c in s.checks.iter().flatten() {
        let spec = slot.health.spec(c.role);
        d.add(role_name(c.role), &mut |t| {
            let kind = probe_kind(spec, t);
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
                probe::error_text(e, t);
            }
        });
    }
}

/// What a check probes: writes "http ADDR" or "tcp ADDR" into `t`, or
/// returns the word for the other kinds.
fn probe_kind(spec: Option<&probe::Spec>, t: &mut LineBuf) -> &'static str {
    match spec {
        Some(probe::Spec::Http { addr, .. }) => {
            let _ = write!(t, "http {addr}");
            ""
        }
        Some(probe::Spec::Tcp { addr }) => {
            let _ = write!(t, "tcp {addr}");
            ""
        }
        Some(probe::Spec::Exec) => "exec",
        Some(probe::Spec::Notify { fd: Some(_) }) => "notify fd",
        Some(probe::Spec::Notify { fd: None }) => "sd_notify",
        _ => "-",
    }
}

/// One recent event of a service as `status NAME` shows it: "TIME kind"
/// and its figures.
pub fn recent_text(out: &mut LineBuf, at: Instant, e: Kept, now: Instant, prep: &Prepared) {
    let _ = write!(out, "{} {}", Stamp(wall_of(at, now)), e.word());
    match e {
        Kept::Spawned { pid } => {
            let _ = write!(out, " pid {pid}");
        }
        Kept::Exited { status, uptime } => {
            let _ = out.write_str(" ");
            words::exited(out, &status, uptime);
        }
        Kept::Backoff { delay } => {
            let _ = write!(out, " {}", Dur(delay));
        }
        Kept::SpawnFailed { err } => {
            let _ = out.write_str(" ");
            words::spawn_failed(out, err, Some(prep));
        }
        Kept::LeftInGroup { total } => {
            let _ = write!(out, " {total}");
        }
        Kept::Degraded { failures } => {
            let _ = out.write_str(" ");
            words::crashes_in_a_row(out, failures);
        }
        _ => {}
    }
}
