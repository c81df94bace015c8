//! Service events as frames for `events` subscribers: service state
//! changes, check verdicts, an applied reload (their phrases are
//! `words`'). The fan-out itself is `control::broadcast`'s.

use super::clock;
use super::control::broadcast::{fan_out_events, has_subscribers};
use super::control::render::{role_name, wire_state};
use super::control::Control;
use super::log::LineBuf;
use super::{probe, words, Services};
use coffey::control::proto::{event, Reply};
use coffey::health::Check;
use coffey::service::{Event, LeftInGroupText, StateName};
use coffey::sys::signal_name;
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
