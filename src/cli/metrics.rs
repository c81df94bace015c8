//! `coffeyd metrics`: the daemon's figures in the Prometheus text
//! exposition format (version 0.0.4), for node_exporter's textfile
//! collector or a scrape wrapper; `-j` prints the same figures as JSON.
//! The daemon sends numbers over the control socket (`Request::Metrics`);
//! the text is written here, in the client: PID 1 runs no HTTP server.
//! Metric names, labels and JSON fields are documented in docs/CLI.md.

use std::fmt::Write as _;
use std::path::Path;

use coffey::control::proto::{CheckFigures, Reply, Request, ServiceFigures, WireState};
use serde_json::{json, Map, Value};

use super::client::unexpected;
use super::commands::{connect, late, REPLY_TIMEOUT};
use super::{render, Failure};

/// Every state, in wire order: `coffeyd_service_state` has one series
/// each, 1 for the current one.
const STATES: [WireState; 8] = [
    WireState::Stopped,
    WireState::Waiting,
    WireState::Starting,
    WireState::Running,
    WireState::Stopping,
    WireState::Backoff,
    WireState::Failed,
    WireState::Completed,
];

#[derive(Debug, Clone, Default, PartialEq)]
struct Daemon {
    rss_bytes: u64,
    fds: u32,
    loop_turns: u64,
    allocations: u64,
}

#[derive(Debug, Clone, PartialEq)]
struct Svc {
    name: String,
    f: ServiceFigures,
}

pub(super) fn metrics(g: &super::args::Global, path: &Path) -> Result<(), Failure> {
    let mut c = connect(path, REPLY_TIMEOUT)?;
    c.send(&Request::Metrics)?;
    let mut daemon = Daemon::default();
    let mut svcs = Vec::new();
    loop {
        match c.recv().map_err(|f| late(f, "metrics"))? {
            Reply::DaemonMetrics {
                rss_bytes,
                fds,
                loop_turns,
                allocations,
            } => {
                daemon = Daemon {
                    rss_bytes,
                    fds,
                    loop_turns,
                    allocations,
                }
            }
            r @ Reply::ServiceMetrics { .. } => svcs.extend(Svc::from_reply(&r)),
            Reply::End => break,
            Reply::Error { code, message } => return Err(Failure::from_daemon(code, message)),
            other => return Err(unexpected(&other)),
        }
    }
    if g.json {
        render::print_json(&json_of(&daemon, &svcs));
    } else {
        render::print_bytes(text(&daemon, &svcs).as_bytes());
    }
    Ok(())
}

impl Svc {
    fn from_reply(r: &Reply<'_>) -> Option<Svc> {
        let Reply::ServiceMetrics { name, figures } = *r else {
            return None;
        };
        Some(Svc {
            name: name.to_owned(),
            f: figures,
        })
    }

    /// Up: running (a oneshot that completed is not up).
    fn up(&self) -> bool {
        self.f.state == WireState::Running
    }

    /// The last exit as a shell tells it: the code, or 128 + the signal.
    fn exit_code(&self) -> Option<i64> {
        match self.f.last_exit.kind {
            1 => Some(i64::from(self.f.last_exit.value)),
            2 => Some(128 + i64::from(self.f.last_exit.value)),
            _ => None,
        }
    }

    /// The configured checks, with their roles' names.
    fn checks(&self) -> impl Iterator<Item = (&'static str, &CheckFigures)> + '_ {
        let role = |i| coffey::health::Role::from_index(i).as_str();
        (0..)
            .zip(&self.f.checks)
            .filter(|(_, c)| c.verdict != 0)
            .map(move |(i, c)| (role(i), c))
    }
}

fn verdict_name(v: u8) -> &'static str {
    match v {
        1 => "unknown",
        2 => "healthy",
        3 => "unhealthy",
        _ => "off",
    }
}

/// A label value, escaped as the text format asks (`\\`, `\"`, `\n`).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family: HELP, TYPE, then its samples (labels, value).
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, String)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// A per-service family: one sample a service from `f`.
fn per_service<F>(out: &mut String, svcs: &[Svc], name: &str, kind: &str, help: &str, f: F)
where
    F: Fn(&Svc) -> Option<String>,
{
    let samples: Vec<_> = svcs
        .iter()
        .filter_map(|s| Some((format!("service=\"{}\"", label(&s.name)), f(s)?)))
        .collect();
    family(out, name, kind, help, &samples);
}

fn secs(ms: u64) -> String {
    format!("{}", ms as f64 / 1000.0)
}

/// The exposition text.
fn text(d: &Daemon, svcs: &[Svc]) -> String {
    let mut out = String::new();
    service_text(&mut out, svcs);
    check_text(&mut out, svcs);
    let one = |v: String| vec![(String::new(), v)];
    family(
        &mut out,
        "coffeyd_resident_memory_bytes",
        "gauge",
        "Resident set size of the coffeyd daemon.",
        &one(d.rss_bytes.to_string()),
    );
    family(
        &mut out,
        "coffeyd_open_fds",
        "gauge",
        "Open file descriptors of the coffeyd daemon.",
        &one(d.fds.to_string()),
    );
    family(
        &mut out,
        "coffeyd_loop_turns_total",
        "counter",
        "Turns of the daemon's event loop since it started.",
        &one(d.loop_turns.to_string()),
    );
    family(
        &mut out,
        "coffeyd_allocations_after_startup_total",
        "counter",
        "Heap allocations by the daemon after startup (0 by design).",
        &one(d.allocations.to_string()),
    );
    out
}

#[rustfmt::skip]
fn service_text(out: &mut String, svcs: &[Svc]) {
    let states: Vec<_> = svcs
        .iter()
        .flat_map(|s| {
            STATES.iter().map(move |st| {
                let l = format!("service=\"{}\",state=\"{}\"", label(&s.name), st.as_str());
                (l, u8::from(*st == s.f.state).to_string())
            })
        })
        .collect();
    family(out, "coffeyd_service_state", "gauge",
        "1 for the service's current state, 0 for the others.", &states);
    per_service(out, svcs, "coffeyd_service_up", "gauge",
        "1 when the service is running, else 0.", |s| Some(u8::from(s.up()).to_string()));
    per_service(out, svcs, "coffeyd_service_restarts_total", "counter",
        "Restarts of the service since the daemon started.", |s| Some(s.f.restarts.to_string()));
    per_service(out, svcs, "coffeyd_service_consecutive_failures", "gauge",
        "Failures of the service in a row.", |s| Some(s.f.failures.to_string()));
    per_service(out, svcs, "coffeyd_service_last_exit_code", "gauge",
        "The last exit code of the service (128 + N for a signal N); absent before its first exit.",
        |s| s.exit_code().map(|c| c.to_string()));
    per_service(out, svcs, "coffeyd_service_uptime_seconds", "gauge",
        "Seconds since the service's process was spawned (0 without a process).",
        |s| Some(secs(s.f.uptime_ms)));
    per_service(out, svcs, "coffeyd_service_log_lines_dropped_total", "counter",
        "Output lines evicted from the service's log ring to make room.",
        |s| Some(s.f.log_evicted.to_string()));
    per_service(out, svcs, "coffeyd_service_log_lines_cut_total", "counter",
        "Output lines cut at the maximum line length.", |s| Some(s.f.log_cut.to_string()));
    per_service(out, svcs, "coffeyd_service_logger_lines_dropped_total", "counter",
        "Output lines not given to the service's logger (log.to): its pipe was full.",
        |s| Some(s.f.logger_dropped.to_string()));
}

#[rustfmt::skip]
fn check_text(out: &mut String, svcs: &[Svc]) {
    let per_check = |f: &dyn Fn(bool, f64) -> String| -> Vec<(String, String)> {
        svcs.iter()
            .flat_map(|s| s.checks().map(move |c| (s, c)))
            .map(|(s, (role, c))| {
                let (ok, lat) = (c.verdict == 2, f64::from(c.latency_ms) / 1000.0);
                (format!("service=\"{}\",check=\"{role}\"", label(&s.name)), f(ok, lat))
            })
            .collect()
    };
    family(out, "coffeyd_service_check_healthy", "gauge",
        "1 when the health check's verdict is healthy, else 0.",
        &per_check(&|ok, _| u8::from(ok).to_string()));
    family(out, "coffeyd_service_check_duration_seconds", "gauge",
        "How long the check's last probe took (0 before the first).",
        &per_check(&|_, lat| lat.to_string()));
}

/// The same figures as JSON.
fn json_of(d: &Daemon, svcs: &[Svc]) -> Value {
    let services: Vec<Value> = svcs.iter().map(svc_json).collect();
    json!({
        "daemon": {
            "resident_memory_bytes": d.rss_bytes,
            "open_fds": d.fds,
            "loop_turns": d.loop_turns,
            "allocations_after_startup": d.allocations,
        },
        "services": services,
    })
}

fn svc_json(s: &Svc) -> Value {
    let mut checks = Map::new();
    for (role, c) in s.checks() {
        checks.insert(
            role.to_owned(),
            json!({
                "verdict": verdict_name(c.verdict),
                "healthy": c.verdict == 2,
                "duration_seconds": f64::from(c.latency_ms) / 1000.0,
            }),
        );
    }
    json!({
        "name": s.name,
        "state": s.f.state.as_str(),
        "up": s.up(),
        "pid": if s.f.pid > 0 { json!(s.f.pid) } else { Value::Null },
        "restarts": s.f.restarts,
        "consecutive_failures": s.f.failures,
        "last_exit_code": s.exit_code(),
        "uptime_seconds": s.f.uptime_ms as f64 / 1000.0,
        "checks": checks,
        "log_lines_dropped": s.f.log_evicted,
        "log_lines_cut": s.f.log_cut,
        "logger_lines_dropped": s.f.logger_dropped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffey::control::proto::{CheckFigures, LastExit};

    fn svc(name: &str, state: WireState, exit: LastExit, checks: [CheckFigures; 3]) -> Svc {
        Svc {
            name: name.into(),
            f: ServiceFigures {
                state,
                pid: 7,
                uptime_ms: 1500,
                restarts: 2,
                failures: 1,
                last_exit: exit,
                checks,
                log_evicted: 3,
                log_cut: 0,
                logger_dropped: 0,
            },
        }
    }

    #[test]
    fn text_has_one_state_series_a_state_and_checks_only_when_configured() {
        let ready = CheckFigures {
            verdict: 2,
            latency_ms: 12,
        };
        let svcs = [
            svc(
                "a",
                WireState::Running,
                LastExit::default(),
                [ready, CheckFigures::default(), CheckFigures::default()],
            ),
            svc(
                "b\"x",
                WireState::Failed,
                LastExit { kind: 2, value: 9 },
                Default::default(),
            ),
        ];
        let t = text(&Daemon::default(), &svcs);
        assert!(
            t.contains("coffeyd_service_state{service=\"a\",state=\"running\"} 1\n"),
            "{t}"
        );
        assert!(t.contains("coffeyd_service_state{service=\"a\",state=\"failed\"} 0\n"));
        assert_eq!(t.matches("coffeyd_service_state{").count(), 16);
        assert!(t.contains("coffeyd_service_last_exit_code{service=\"b\\\"x\"} 137\n"));
        assert!(!t.contains("coffeyd_service_last_exit_code{service=\"a\"}"));
        assert!(t.contains("coffeyd_service_uptime_seconds{service=\"a\"} 1.5\n"));
        assert!(t.contains(
            "coffeyd_service_check_duration_seconds{service=\"a\",check=\"readiness\"} 0.012\n"
        ));
        assert_eq!(
            t.matches("check=\"").count(),
            2,
            "b has no checks, a no liveness"
        );
        assert!(t.contains("# TYPE coffeyd_loop_turns_total counter\n"));
    }
}
