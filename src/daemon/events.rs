//! Service events in words: as frames for `events` subscribers (service
//! state changes, check verdicts, an applied reload) and as daemon log
//! lines (their phrases are `words`'). The fan-out itself is
//! `control::broadcast`'s.

use super::clock;
use super::control::broadcast::{fan_out_events, has_subscribers};
use super::control::render::{role_name, wire_state};
use super::control::Control;
use super::log::{log, LineBuf, Log};
use super::{cgroup, probe, words, Services};
use coffey::control::proto::{event, Reply};
use coffey::health::Check;
use coffey::service::{Event, LeftInGroupText, StateName};
use coffey::sys::{signal_name, Stage};
use core::fmt::Write as _;

/// Fans a check's verdict change out to `events` subscribers.
pub fn broadcast_health(
    ctl: &mut Control,
    svc: &Services,
    idx: usize,
    c: &Check,
    st: StateName,
    pid: i32,
) {
    if !has_subscribers(ctl) {
        return;
    }
    let mut text = LineBuf::default();
    let _ = write!(text, "{} {}", role_name(c.role), c.verdict.as_str());
    if let Some(e) = c.last_error {
        let _ = text.write_str(": ");
        probe::error_text(e, &mut text);
    }
    let name = svc.slots.get(idx).map_or("?", |s| s.name.as_str());
    let rep = Reply::Event {
        ts_ms: clock::wall_ms(),
        service: name,
        kind: event::HEALTH,
        state: wire_state(st),
        pid,
        detail: core::str::from_utf8(text.as_bytes()).unwrap_or(""),
    };
    fan_out_events(ctl, &rep);
}

/// Fans a service event out to `events` subscribers.
pub fn broadcast_event(
    ctl: &mut Control,
    svc: &Services,
    idx: usize,
    to: StateName,
    e: &Event,
    pid: i32,
) {
    if !has_subscribers(ctl) {
        return;
    }
    let mut text = LineBuf::default();
    let Some(kind) = event_text(e, idx, svc, &mut text) else {
        return;
    };
    let name = svc.slots.get(idx).map_or("?", |s| s.name.as_str());
    let rep = Reply::Event {
        ts_ms: clock::wall_ms(),
        service: name,
        kind,
        state: wire_state(to),
        pid: event_pid(e).unwrap_or(pid),
        detail: core::str::from_utf8(text.as_bytes()).unwrap_or(""),
    };
    fan_out_events(ctl, &rep);
}

/// The pid an event names, if it names one.
fn event_pid(e: &Event) -> Option<i32> {
    match *e {
        Event::Spawned { pid }
        | Event::Ready { pid }
        | Event::Unhealthy { pid, .. }
        | Event::Exited { pid, .. }
        | Event::Stopping { pid, .. }
        | Event::Killed { pid, .. }
        | Event::LeftInGroup { pid, .. } => Some(pid),
        _ => None,
    }
}

/// The wire kind of event `e` of slot `idx`, its detail written to
/// `out`; None for events subscribers are not told.
fn event_text(e: &Event, idx: usize, svc: &Services, out: &mut LineBuf) -> Option<u8> {
    out.clear();
    let kind = match *e {
        Event::Waiting {
            dep: Some(d),
            failed,
        } => {
            let n = svc
                .slots
                .get(usize::from(d))
                .map_or("?", |s| s.name.as_str());
            words::waiting_for(out, n, failed);
            event::WAITING
        }
        Event::SpawnFailed { err } => {
            words::spawn_failed(out, err, svc.slots.get(idx).map(|s| &s.prep));
            event::EXEC_FAILED
        }
        _ => return plain_text(e, out),
    };
    Some(kind)
}

/// The events whose text needs nothing but the event; None for those
/// subscribers are not told (and those `event_text` words itself).
fn plain_text(e: &Event, out: &mut LineBuf) -> Option<u8> {
    let kind = match *e {
        Event::Spawned { .. } => event::SPAWNED,
        Event::Ready { .. } => event::READY,
        Event::Unhealthy { startup: true, .. } => {
            words::startup_failed(out);
            event::UNHEALTHY
        }
        Event::Unhealthy { start_timeout, .. } => {
            words::unhealthy(out, start_timeout);
            event::UNHEALTHY
        }
        Event::Exited { status, uptime, .. } => {
            words::exited(out, &status, uptime);
            event::EXITED
        }
        Event::Backoff { delay, failures } => {
            words::restarting_in(out, delay, failures);
            event::BACKOFF
        }
        Event::GaveUp { failures } => {
            words::gave_up(out, failures);
            event::FAILED
        }
        Event::Degraded { failures } => {
            words::crashes_in_a_row(out, failures);
            event::DEGRADED
        }
        Event::Failed => event::FAILED,
        Event::Stopping { signal, .. } => {
            let _ = write!(out, "{}", signal_name(signal));
            event::STOPPING
        }
        Event::Killed { shutdown, .. } => {
            words::killed(out, shutdown);
            event::STOPPING
        }
        Event::LeftInGroup { left, .. } => {
            let _ = write!(out, "{}", LeftInGroupText(left));
            event::STOPPING
        }
        Event::Stopped => event::STOPPED,
        Event::Completed => event::COMPLETED,
        Event::Waiting { .. } | Event::SpawnFailed { .. } | Event::Unexpected { .. } => {
            return None
        }
    };
    Some(kind)
}

/// Logs service event `event` of slot `idx` (now in state `to`), in
/// the daemon log's words.
pub fn log_event(svc: &Services, log: &mut Log, idx: usize, to: StateName, event: &Event) {
    let mut what = LineBuf::default();
    if !log_words(svc, idx, to, event, &mut what) {
        return;
    }
    let name = svc.slots.get(idx).map_or("?", |s| s.name.as_str());
    let what = core::str::from_utf8(what.as_bytes()).unwrap_or("");
    log!(log, "{name}: {what}");
}

/// The daemon log's words for `event` (after "NAME: "); false for the
/// events it does not log. The phrases are `words`'.
fn log_words(svc: &Services, idx: usize, to: StateName, event: &Event, w: &mut LineBuf) -> bool {
    let dep = |d: u16| {
        svc.slots
            .get(usize::from(d))
            .map_or("?", |s| s.name.as_str())
    };
    match *event {
        Event::Waiting { dep: None, .. } | Event::LeftInGroup { first: false, .. } => return false,
        Event::Ready { pid } => {
            let _ = write!(w, "ready (pid {pid})");
        }
        Event::Unhealthy {
            pid,
            start_timeout,
            startup,
        } => {
            if startup {
                words::startup_failed(w);
            } else {
                words::unhealthy(w, start_timeout);
            }
            let to = if start_timeout {
                "stopping"
            } else {
                "restarting"
            };
            let _ = write!(w, "; {to} pid {pid}");
        }
        Event::Waiting {
            dep: Some(d),
            failed,
        } => words::waiting_for(w, dep(d), failed),
        Event::Spawned { pid } => {
            let _ = write!(w, "spawned pid {pid}");
        }
        Event::SpawnFailed { err } => {
            if err.stage == Stage::User {
                let _ = w.write_str("cannot start: ");
            }
            words::spawn_failed(w, err, svc.slots.get(idx).map(|s| &s.prep));
            if err.is_temporary() {
                let _ = w.write_str("; retrying");
            }
        }
        Event::Exited {
            pid,
            status,
            uptime,
        } => {
            let _ = write!(w, "pid {pid} exited with ");
            words::exited(w, &status, uptime);
            if let Some(oom) = cgroup::oom_of(&svc.cg, idx, status) {
                let _ = write!(w, "; {oom}");
            }
        }
        Event::Backoff { delay, failures } => words::restarting_in(w, delay, failures),
        Event::GaveUp { failures } => words::gave_up(w, failures),
        Event::Degraded { failures } => words::degraded(w, failures),
        Event::Failed => {
            let _ = w.write_str("failed");
        }
        Event::Stopping { pid, signal } => {
            let _ = write!(w, "stopping pid {pid} with {}", signal_name(signal));
        }
        Event::Killed { pid, shutdown } => {
            words::killed(w, shutdown);
            let _ = write!(w, " to process group {pid}");
            if !shutdown && svc.cg.alive(pid).is_some() {
                let _ = w.write_str(" and its cgroup (cgroup.kill)");
            }
        }
        // Once per service: a crash-looping daemonizer must not flood.
        Event::LeftInGroup { pid, left, .. } => {
            let _ = write!(w, "pid {pid}: {}", LeftInGroupText(left));
        }
        Event::Stopped if to == StateName::Waiting => {
            let _ = w.write_str("stopped; starting again");
        }
        Event::Stopped => {
            let _ = w.write_str("stopped");
        }
        Event::Completed => {
            let _ = w.write_str("completed");
        }
        Event::Unexpected { input } => {
            let _ = write!(w, "ignored unexpected '{input}' in state {to}");
        }
    }
    true
}
