//! Case 6: stubborn children. Services that ignore SIGTERM, one stopped
//! with SIGSTOP, one with 50 children that ignore SIGTERM, and `setsid`
//! escapees (from a running service and from a crash-looping one). `stop`
//! ends each within `stop_timeout` plus the kill, leaving nothing of it,
//! and a shutdown leaves nothing of the tree.

use crate::common::*;
use crate::*;
use std::time::{Duration, Instant};

const STOP_TIMEOUT_MS: u64 = 1000;

/// Live processes of the tree with `CFY_SVC=name` in their environment.
fn of_service(tag: &str, name: &str) -> Vec<i32> {
    let want = format!("CFY_SVC={name}");
    tagged(tag, None)
        .into_iter()
        .filter(|p| {
            let env = std::fs::read(format!("/proc/{p}/environ")).unwrap_or_default();
            env.split(|&b| b == 0).any(|v| v == want.as_bytes())
        })
        .collect()
}

fn stubborn_services() -> Vec<(&'static str, &'static str)> {
    vec![
        ("ignterm", "trap '' TERM; while :; do sleep 1; done"),
        ("stopped", "exec sleep 600"),
        (
            "fifty",
            "trap '' TERM; for i in $(seq 50); do sleep 600 & done; wait",
        ),
        (
            "escaper",
            "setsid sleep 600 & setsid sh -c \"trap '' TERM; sleep 600\" & wait",
        ),
        ("crash-escaper", "setsid sleep 600 & sleep 0.1; exit 1"),
    ]
}

#[test]
#[ignore = "torture: run with just torture"]
fn stubborn_children() {
    let list = stubborn_services();
    let services: String = list
        .iter()
        .map(|(n, script)| {
            svc(n, script, &format!("    env: ['CFY_SVC={n}']\n    stop_timeout: {STOP_TIMEOUT_MS}ms\n    backoff:\n      initial: 200ms\n      max: 200ms\n    log:\n      console: false\n"))
        })
        .collect();
    let names: Vec<String> = list.iter().map(|(n, _)| n.to_string()).collect();
    let mut t = Torture::start("stubborn_children", "  shutdown_timeout: 5s\n", &services);
    t.rss_bound_kib = 256;
    t.quiet_baseline(&names);
    let rounds = scale(5, 2);
    let mut worst_stop = Duration::ZERO;
    let mut leaks = Vec::new();
    for round in 0..rounds {
        for n in &names {
            wait_row(
                &t.d,
                &format!("{n} running"),
                30.0,
                || row(&t.d, n),
                |r| r["state"] == "running" || r["state"] == "backoff",
            );
        }
        assert!(
            wait_until(10.0, || of_service(&t.tag, "fifty").len() >= 51),
            "fifty: its children did not start"
        );
        // Let the crash-looper leave a few escapees behind.
        std::thread::sleep(Duration::from_millis(800));
        let pid = row(&t.d, "stopped")["pid"].as_i64().unwrap() as i32;
        signal(pid, 19); // SIGSTOP
        for n in &names {
            let t0 = Instant::now();
            let o = ctl_within(&t.d, &["stop", n], 30.0);
            let took = t0.elapsed();
            worst_stop = worst_stop.max(took);
            assert_eq!(o.code, 0, "stop {n}: {o:?}");
            assert!(
                took.as_millis() as u64 <= STOP_TIMEOUT_MS + 1500,
                "stop {n} took {took:?} (stop_timeout {STOP_TIMEOUT_MS} ms)"
            );
            let left = wait_until(2.0, || of_service(&t.tag, n).is_empty());
            if !left {
                leaks.push(format!(
                    "round {round}: after `stop {n}`: {}",
                    describe(&of_service(&t.tag, n))
                ));
                for p in of_service(&t.tag, n) {
                    signal(p, 9);
                }
            }
        }
        ctl_all_no_wait(&t.d, "start", &names);
    }
    t.figure("rounds", rounds);
    t.figure("worst_stop_ms", worst_stop.as_millis());
    assert!(
        leaks.is_empty(),
        "stubborn_children: processes survived `stop`: {leaks:#?}"
    );
    // A shutdown with everything running (and escapees out) leaves nothing.
    for n in &names {
        wait_row(
            &t.d,
            &format!("{n} up"),
            30.0,
            || row(&t.d, n),
            |r| r["state"] == "running" || r["state"] == "backoff",
        );
    }
    assert!(wait_until(10.0, || of_service(&t.tag, "fifty").len() >= 51));
    std::thread::sleep(Duration::from_millis(500));
    t.figure("tree_before_shutdown", t.tree().len());
    ctl_all(&t.d, "stop", &names, 30.0);
    t.finish();
}

/// The same tree, shut down while running: the shutdown sweep (issue 9
/// point 5) leaves no escapee behind.
#[test]
#[ignore = "torture: run with just torture"]
fn stubborn_children_shutdown() {
    let list = stubborn_services();
    let services: String = list
        .iter()
        .map(|(n, script)| svc(n, script, &format!("    env: ['CFY_SVC={n}']\n    stop_timeout: {STOP_TIMEOUT_MS}ms\n    backoff:\n      initial: 200ms\n    log:\n      console: false\n")))
        .collect();
    let mut t = Torture::start(
        "stubborn_children_shutdown",
        "  shutdown_timeout: 5s\n",
        &services,
    );
    t.rss_bound_kib = 256;
    assert!(wait_until(10.0, || of_service(&t.tag, "fifty").len() >= 51));
    assert!(wait_until(10.0, || of_service(&t.tag, "escaper").len() >= 3));
    std::thread::sleep(Duration::from_secs(1));
    let pid = row(&t.d, "stopped")["pid"].as_i64().unwrap() as i32;
    signal(pid, 19);
    t.figure("tree_before_shutdown", t.tree().len());
    // finish() shuts down with every service running and checks that no
    // process of the tree is left.
    t.finish();
}
