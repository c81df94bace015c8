//! `wait NAME... [--running|--healthy|--completed] [--timeout DUR]`: block
//! until every named service is in that state, following the event stream.
//!
//! It never polls, and it cannot miss a transition: it subscribes to the
//! events first (and waits for the daemon's acknowledgement), then reads
//! the status of every service on a second connection ("already there?").
//! After that each event of a named service makes it read that service's
//! status again (the event says the state, the status row also the checks'
//! verdicts, which `--healthy` needs). Lost events (`Dropped`) make it
//! re-read them all. A named service in `failed` ends the wait (exit 1).

use std::path::Path;
use std::time::{Duration, Instant};

use coffey::control::proto::{Reply, Request, WireState};

use super::args::{Global, Until};
use super::client::{unexpected, Conn};
use super::commands::{connect, late, print_line, read_status, REPLY_TIMEOUT};
use super::render::{self, Ev, ServiceRow};
use super::timefmt::human_duration;
use super::{exit, Failure};

/// One named service and what is known of it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    name: String,
    row: Option<ServiceRow>,
}

/// Is a service in state `state` with HEALTH text `health` where `until`
/// wants it?
pub(super) fn reached(until: Until, state: WireState, health: &str) -> bool {
    match until {
        Until::Running => matches!(state, WireState::Running | WireState::Completed),
        Until::Completed => state == WireState::Completed,
        Until::Healthy => state == WireState::Running && all_healthy(health),
    }
}

/// HEALTH is `-` without checks, else `ready:healthy, live:unhealthy
/// (ERROR)`; a healthy check carries no error text. Healthy: readiness
/// has passed (as `condition: healthy` has it) and no check is failing;
/// a liveness check with no verdict yet (`unknown`, its first probes
/// still within `retries`) does not hold it back.
fn all_healthy(health: &str) -> bool {
    health == "-"
        || health.is_empty()
        || health.split(", ").all(|c| {
            let verdict = |v: &str| v.split(' ').next().unwrap_or("").to_owned();
            match c.split_once(':') {
                Some(("ready", v)) => verdict(v) == "healthy",
                Some((_, v)) => matches!(verdict(v).as_str(), "healthy" | "unknown"),
                None => false,
            }
        })
}

impl Target {
    fn done(&self, until: Until) -> bool {
        self.row
            .as_ref()
            .is_some_and(|r| reached(until, r.state, &r.health))
    }

    fn describe(&self) -> String {
        match &self.row {
            None => format!("{} (unknown)", self.name),
            Some(r) => {
                let mut s = format!("{} ({}", self.name, r.state.as_str());
                if r.health != "-" && !r.health.is_empty() {
                    s.push_str(&format!(", {}", r.health));
                }
                if !r.reason.is_empty() {
                    s.push_str(&format!(": {}", r.reason));
                }
                s.push(')');
                s
            }
        }
    }
}

/// Reads the status of every service and applies it; a name the daemon
/// does not know is an error (exit 3).
fn snapshot_all(c: &mut Conn, targets: &mut [Target]) -> Result<(), Failure> {
    c.send(&Request::Status {
        name: "",
        verbose: 0,
    })?;
    let (rows, _) = read_status(c).map_err(|f| late(f, "status"))?;
    for t in targets.iter_mut() {
        match rows.iter().find(|r| r.name == t.name) {
            Some(r) => t.row = Some(r.clone()),
            None => {
                return Err(Failure::new(
                    exit::UNKNOWN_SERVICE,
                    "unknown service",
                    format!("unknown service '{}'", t.name),
                ))
            }
        }
    }
    Ok(())
}

/// Reads one service's status again.
fn refresh(c: &mut Conn, t: &mut Target) -> Result<(), Failure> {
    c.set_deadline(Some(Instant::now() + REPLY_TIMEOUT));
    c.send(&Request::Status {
        name: &t.name,
        verbose: 0,
    })?;
    let (rows, _) = read_status(c).map_err(|f| late(f, "status"))?;
    if let Some(r) = rows.into_iter().next() {
        t.row = Some(r);
    }
    Ok(())
}

pub(super) fn wait(
    g: &Global,
    path: &Path,
    names: &[String],
    until: Until,
    timeout_ms: Option<u64>,
) -> Result<(), Failure> {
    let deadline = timeout_ms.map(|ms| Instant::now() + Duration::from_millis(ms));
    // 1. Subscribe first: from here on no transition is missed.
    let mut ev = connect(path, REPLY_TIMEOUT)?;
    ev.send(&Request::Events)?;
    ev.expect_ok().map_err(|f| late(f, "events"))?;
    ev.set_deadline(deadline);
    // 2. Already there?
    let mut targets: Vec<Target> = Vec::new();
    for n in names {
        if !targets.iter().any(|t| &t.name == n) {
            targets.push(Target {
                name: n.clone(),
                row: None,
            });
        }
    }
    let mut c = connect(path, REPLY_TIMEOUT)?;
    snapshot_all(&mut c, &mut targets)?;
    // 3. Follow the events until every target is there.
    loop {
        if targets.iter().all(|t| t.done(until)) {
            break;
        }
        // `failed` does not change by itself (the service gave up, or
        // does not restart): waiting longer would only run to the timeout.
        let failed = |t: &&Target| t.row.as_ref().is_some_and(|r| r.state == WireState::Failed);
        if let Some(t) = targets.iter().find(failed) {
            let mut f = Failure::failed(format!(
                "{} failed while waiting for it to be {}",
                t.describe(),
                until.as_str()
            ));
            f.extra = Some(extra(&targets));
            return Err(f);
        }
        let r = match ev.recv() {
            Ok(r) => r,
            Err(f) if f.code == exit::TIMEOUT => {
                return Err(timed_out(&targets, until, timeout_ms))
            }
            Err(f) => return Err(f),
        };
        if let Some(e) = Ev::from_reply(&r) {
            if let Some(t) = targets.iter_mut().find(|t| t.name == e.service) {
                refresh(&mut c, t)?;
            }
            continue;
        }
        match r {
            Reply::Dropped { .. } => {
                c.set_deadline(Some(Instant::now() + REPLY_TIMEOUT));
                snapshot_all(&mut c, &mut targets)?;
            }
            Reply::Error { code, message } => return Err(Failure::from_daemon(code, message)),
            other => return Err(unexpected(&other)),
        }
    }
    if g.json {
        let mut m = extra(&targets);
        m.insert("ok".into(), true.into());
        m.insert("until".into(), until.as_str().into());
        render::print_json(&serde_json::Value::Object(m));
    } else {
        let out: String = targets.iter().map(|t| t.describe() + "\n").collect();
        print_line(&out);
    }
    Ok(())
}

/// The timeout: exit 1 (not 5, as `wait` is a test a script branches on),
/// naming every service not there yet.
fn timed_out(targets: &[Target], until: Until, timeout_ms: Option<u64>) -> Failure {
    let pending: Vec<String> = targets
        .iter()
        .filter(|t| !t.done(until))
        .map(Target::describe)
        .collect();
    let mut f = Failure::new(
        exit::FAILED,
        "timeout",
        format!(
            "timed out after {} waiting for {} to be {}",
            human_duration(timeout_ms.unwrap_or(0)),
            pending.join(", "),
            until.as_str()
        ),
    );
    f.extra = Some(extra(targets));
    f
}

/// `"services": [{"name", "state", "pid", "health", "reason"}]`.
fn extra(targets: &[Target]) -> serde_json::Map<String, serde_json::Value> {
    let arr = targets
        .iter()
        .map(|t| {
            let r = t.row.as_ref();
            serde_json::json!({
                "name": t.name,
                "state": r.map(|r| r.state.as_str()),
                "pid": r.map(|r| r.pid).filter(|p| *p > 0),
                "health": r.map(|r| r.health.as_str()).filter(|h| *h != "-" && !h.is_empty()),
                "reason": r.map(|r| r.reason.as_str()).filter(|h| !h.is_empty()),
            })
        })
        .collect();
    let mut m = serde_json::Map::new();
    m.insert("services".into(), serde_json::Value::Array(arr));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_each_state_flag_accepts() {
        use WireState::*;
        assert!(reached(Until::Running, Running, "ready:unknown"));
        assert!(reached(Until::Running, Completed, "-"));
        assert!(!reached(Until::Running, Starting, "-"));
        assert!(!reached(Until::Completed, Running, "-"));
        assert!(reached(Until::Completed, Completed, "-"));
        assert!(reached(Until::Healthy, Running, "-"));
        assert!(reached(
            Until::Healthy,
            Running,
            "ready:healthy, live:healthy"
        ));
        assert!(!reached(
            Until::Healthy,
            Running,
            "ready:healthy, live:unhealthy (connection refused)"
        ));
        assert!(!reached(Until::Healthy, Running, "ready:healthy, live:off"));
        assert!(reached(
            Until::Healthy,
            Running,
            "ready:healthy, live:unknown (connect: Connection refused)"
        ));
        assert!(!reached(
            Until::Healthy,
            Running,
            "ready:unknown, live:healthy"
        ));
        assert!(!reached(Until::Healthy, Starting, "-"));
        assert!(!reached(Until::Healthy, Completed, "-"));
    }
}
