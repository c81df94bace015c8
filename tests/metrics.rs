//! `coffeyd metrics` end to end: the real daemon with a real HTTP server
//! (python3's http.server) behind a readiness check, a crashing service
//! and a chatty one; the output is parsed by the Prometheus project's own
//! text parser (`prometheus_client` from PyPI, installed by .ci/run), and
//! `-j` must say the same. Ends with no heap allocation after startup.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_methods,
    clippy::disallowed_macros
)]

mod common;
use common::*;

use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Command;

const PYTHON: &str = "/usr/bin/python3";

/// Parses the exposition text with `prometheus_client.parser` and returns
/// its families: `[{name, type, documentation, samples: [[name, labels,
/// value]]}]`.
const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": f.name, "type": f.type, "documentation": f.documentation,
                "samples": [[s.name, s.labels, s.value] for s in f.samples]})
print(json.dumps(out))
"#;

fn parse(text: &str) -> Vec<Value> {
    need(PYTHON, "python3");
    let mut child = Command::new(PYTHON)
        .args(["-c", PARSE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("No module named 'prometheus_client'"),
        "install the parser: {PYTHON} -m pip install --break-system-packages prometheus_client (.ci/run does)"
    );
    assert!(
        out.status.success(),
        "the parser refused the text: {err}\n{text}"
    );
    json(&String::from_utf8(out.stdout).unwrap())
        .as_array()
        .unwrap()
        .clone()
}

/// Samples by (sample name, sorted labels) -> value.
type Samples = BTreeMap<(String, String), f64>;

fn samples(families: &[Value]) -> Samples {
    let mut m = Samples::new();
    for f in families {
        for s in f["samples"].as_array().unwrap() {
            let labels: BTreeMap<String, String> = serde_json::from_value(s[1].clone()).unwrap();
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            m.insert(
                (s[0].as_str().unwrap().to_string(), l.join(",")),
                s[2].as_f64().unwrap(),
            );
        }
    }
    m
}

fn get(m: &Samples, name: &str, labels: &str) -> f64 {
    *m.get(&(name.to_string(), labels.to_string()))
        .unwrap_or_else(|| panic!("no {name}{{{labels}}} in {m:#?}"))
}

fn scrape(d: &Daemon) -> (String, Samples) {
    let o = ok(ctl(d, &["metrics"]));
    let fams = parse(&o.stdout);
    for f in &fams {
        let name = f["name"].as_str().unwrap();
        assert!(name.starts_with("coffeyd_"), "{name}");
        assert!(
            !f["documentation"].as_str().unwrap().is_empty(),
            "{name}: no HELP"
        );
        assert!(
            ["gauge", "counter"].contains(&f["type"].as_str().unwrap()),
            "{f}"
        );
    }
    (o.stdout.clone(), samples(&fams))
}

fn services(port: u16) -> String {
    let web = format!(
        "  - name: web\n    binary: {PYTHON}\n    args: ['-m', 'http.server', '{port}', '--bind', '127.0.0.1']\n    healthcheck:\n      startup:\n        type: tcp\n        address: 127.0.0.1:{port}\n        interval: 200ms\n      readiness:\n        type: http\n        url: http://127.0.0.1:{port}/\n        interval: 200ms\n        timeout: 200ms\n"
    );
    let crash = svc(
        "crash",
        "echo boom; exit 3",
        "    restart: always\n    backoff:\n      initial: 100ms\n      max: 200ms\n",
    );
    let chatty = svc(
        "chatty",
        "i=0; while [ $i -lt 200 ]; do echo line $i; i=$((i+1)); done; exec sleep 600",
        "",
    );
    format!("{web}{crash}{chatty}")
}

#[test]
fn metrics_parse_as_prometheus_text_and_match_the_services() {
    let port = free_port();
    let d = Daemon::start(
        "metrics",
        "  service_logs:\n    buffer: 256B\n",
        &services(port),
    );
    wait_row(
        &d,
        "web healthy",
        30.0,
        || row(&d, "web"),
        |r| r["state"] == "running" && r["health"].as_str().unwrap_or("").contains("healthy"),
    );
    wait_row(
        &d,
        "crash restarted twice",
        30.0,
        || row(&d, "crash"),
        |r| r["restarts"].as_u64().unwrap_or(0) >= 2,
    );
    wait_row(
        &d,
        "chatty ran",
        30.0,
        || row(&d, "chatty"),
        |r| r["state"] == "running",
    );
    let (text, m) = scrape(&d);
    println!("{text}");

    // One state series a state, exactly one of them 1.
    for svc in ["web", "crash", "chatty"] {
        let on: f64 = m
            .iter()
            .filter(|((n, l), _)| {
                n == "coffeyd_service_state" && l.starts_with(&format!("service={svc},"))
            })
            .map(|(_, v)| *v)
            .sum();
        assert_eq!(on, 1.0, "{svc}: {text}");
    }
    assert_eq!(
        get(&m, "coffeyd_service_state", "service=web,state=running"),
        1.0
    );
    assert_eq!(get(&m, "coffeyd_service_up", "service=web"), 1.0);
    assert_eq!(
        get(&m, "coffeyd_service_restarts_total", "service=web"),
        0.0
    );
    assert!(get(&m, "coffeyd_service_uptime_seconds", "service=web") > 0.0);
    assert_eq!(
        get(
            &m,
            "coffeyd_service_check_healthy",
            "check=readiness,service=web"
        ),
        1.0
    );
    let lat = get(
        &m,
        "coffeyd_service_check_duration_seconds",
        "check=readiness,service=web",
    );
    assert!((0.0..0.3).contains(&lat), "{lat}");
    assert_eq!(
        get(
            &m,
            "coffeyd_service_check_healthy",
            "check=startup,service=web"
        ),
        1.0
    );
    let lat = get(
        &m,
        "coffeyd_service_check_duration_seconds",
        "check=startup,service=web",
    );
    assert!((0.0..0.3).contains(&lat), "{lat}");
    assert!(!m
        .keys()
        .any(|(n, l)| n.contains("check") && l.contains("service=crash")));

    assert!(get(&m, "coffeyd_service_restarts_total", "service=crash") >= 2.0);
    assert!(get(&m, "coffeyd_service_consecutive_failures", "service=crash") >= 1.0);
    assert_eq!(
        get(&m, "coffeyd_service_last_exit_code", "service=crash"),
        3.0
    );
    assert!(!m.contains_key(&(
        "coffeyd_service_last_exit_code".into(),
        "service=web".into()
    )));

    // 200 lines do not fit in a 256-byte ring.
    assert!(
        get(
            &m,
            "coffeyd_service_log_lines_dropped_total",
            "service=chatty"
        ) > 100.0
    );
    assert_eq!(
        get(&m, "coffeyd_service_log_lines_dropped_total", "service=web"),
        0.0
    );

    // The daemon's own figures, against /proc.
    let rss = get(&m, "coffeyd_resident_memory_bytes", "");
    let proc_rss = d.rss_kib() as f64 * 1024.0;
    assert!(
        rss > 0.0 && (rss - proc_rss).abs() < proc_rss / 2.0,
        "{rss} vs {proc_rss}"
    );
    let fds = get(&m, "coffeyd_open_fds", "");
    let proc_fds = std::fs::read_dir(format!("/proc/{}/fd", d.pid()))
        .unwrap()
        .count() as f64;
    // The metrics client's own connection is counted by the daemon only.
    assert!((fds - proc_fds).abs() <= 2.0, "{fds} vs {proc_fds}");
    assert_eq!(get(&m, "coffeyd_allocations_after_startup_total", ""), 0.0);
    let turns = get(&m, "coffeyd_loop_turns_total", "");
    assert!(turns > 0.0);
    let (_, again) = scrape(&d);
    assert!(
        get(&again, "coffeyd_loop_turns_total", "") > turns,
        "a scrape takes turns"
    );

    // -j: the same figures, as JSON.
    let j = json(&ok(ctl(&d, &["-j", "metrics"])).stdout);
    let web = j["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "web")
        .unwrap();
    assert_eq!(web["state"], "running");
    assert_eq!(web["up"], true);
    assert_eq!(web["restarts"], 0);
    assert_eq!(web["last_exit_code"], Value::Null);
    assert_eq!(web["checks"]["readiness"]["healthy"], true);
    assert!(web["checks"]["liveness"].is_null());
    assert_eq!(web["checks"]["startup"]["healthy"], true);
    let crash = j["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "crash")
        .unwrap();
    assert_eq!(crash["last_exit_code"], 3);
    assert_eq!(j["daemon"]["allocations_after_startup"], 0);
    assert!(j["daemon"]["loop_turns"].as_f64().unwrap() > turns);
    finish(d);
}
