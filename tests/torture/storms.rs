//! Storms: crash storm (case 1), reload storm (case 7), signal storm
//! (case 8). Each holds the load for a bounded time while the operator is
//! sampled, then checks the end state.

use crate::common::*;
use crate::*;
use std::time::{Duration, Instant};

/// Case 1: 100 services that exit at once, with 0 backoff, for 60 s
/// (short: 10 s). The loop must reap first (at most a handful of zombies
/// at any time) and keep serving the operator.
#[test]
#[ignore = "torture: run with just torture"]
fn crash_storm() {
    let secs = scale(60, 10);
    let n = 100;
    let names: Vec<String> = (0..n).map(|i| format!("crash-{i}")).collect();
    let services: String = names
        .iter()
        .map(|s| {
            format!(
                "  - name: {s}\n    binary: /bin/false\n    backoff:\n      initial: 0s\n      max: 0s\n    log:\n      console: false\n"
            )
        })
        .collect();
    let mut t = Torture::start("crash_storm", "", &services);
    ctl_all(&t.d, "stop", &names, 30.0);
    t.baseline();
    // 100 rings of 4 KiB fill up (each run writes nothing, but the event
    // rings and tables are touched): 256 KiB over the baseline.
    t.rss_bound_kib = 256;
    let r0 = restarts(&t.d);
    let d = &t.d;
    let (_, worst, fails, zmax) = t.under_load(100, || {
        ctl_all_no_wait(d, "start", &names);
        std::thread::sleep(Duration::from_secs(secs));
    });
    let r1 = restarts(&t.d);
    let rate = (r1 - r0) / secs;
    t.figure("secs", secs);
    t.figure("restarts_per_s", rate);
    t.figure("zombies_max", zmax);
    t.figure("operator_worst_ms", worst.as_millis());
    t.figure("operator_failures", fails.len());
    ctl_all(&t.d, "stop", &names, 30.0);
    assert!(rate >= 100, "crash_storm: only {rate} restarts/s: no storm");
    assert_served("crash_storm", &fails, "sampled every 100 ms");
    // Reaping comes first in every turn (issue 9 point 2).
    assert!(
        zmax <= 8,
        "crash_storm: {zmax} zombies piled up behind the spawns"
    );
    t.finish();
}

/// The services of generation `k` of the reload storm: flappers (exit at
/// once, 0 backoff) and one long runner named after the generation.
fn generation(k: u32) -> (String, Vec<String>) {
    let mut names: Vec<String> = (0..(3 + k % 4)).map(|i| format!("flap-{i}")).collect();
    names.push(format!("gen-{k}"));
    let mut text = String::new();
    for n in &names {
        if n.starts_with("flap") {
            text += &svc(
                n,
                "sleep 0.05; exit 1",
                "    backoff:\n      initial: 0s\n      max: 0s\n    log:\n      console: false\n",
            );
        } else {
            text += &format!("  - name: {n}\n    binary: /bin/sleep\n    args: ['600']\n    log:\n      console: false\n");
        }
    }
    names.sort();
    (text, names)
}

/// Invalid configs of four kinds: a syntax error, an unknown key, a
/// relative binary, a duplicate name.
fn invalid(k: u32, valid: &str) -> String {
    match k % 4 {
        0 => format!("{valid}  - name: [unclosed\n"),
        1 => format!("{valid}  - name: bad-{k}\n    binary: /bin/true\n    colour: blue\n"),
        2 => format!("{valid}  - name: bad-{k}\n    binary: bin/true\n"),
        _ => format!("{valid}  - name: gen-{k}\n    binary: /bin/true\n"),
    }
}

/// Case 7: 100 reloads (short: 30), a third of them invalid, while
/// services flap. Each valid one is applied, each invalid one is refused
/// with the old config kept, and the end is exactly the last valid config.
#[test]
#[ignore = "torture: run with just torture"]
fn reload_storm() {
    let reloads = scale(100, 30) as u32;
    let (first, _) = generation(0);
    let mut t = Torture::start("reload_storm", "", &first);
    t.rss_bound_kib = 512;
    t.quiet_baseline(&generation(0).1);
    let mut last_valid = generation(0).1;
    let mut wrong = Vec::new();
    let mut slowest = Duration::ZERO;
    let t0 = Instant::now();
    let d = &t.d;
    let ((), worst, fails, zmax) = t.under_load(100, || {
        for k in 1..=reloads {
            let (text, names) = generation(k);
            let bad = k % 3 == 0;
            let body = if bad { invalid(k, &text) } else { text };
            d.rewrite("", &body);
            let r0 = Instant::now();
            let o = ctl_within(d, &["reload"], 30.0);
            slowest = slowest.max(r0.elapsed());
            match (bad, o.code) {
                (false, 0) => last_valid = names,
                (true, 1) => {}
                _ => wrong.push(format!(
                    "reload {k} (invalid: {bad}) exit {}: {} {}",
                    o.code, o.stdout, o.stderr
                )),
            }
        }
    });
    let elapsed = t0.elapsed();
    t.figure("reloads", reloads);
    t.figure("reload_slowest_ms", slowest.as_millis());
    t.figure(
        "reloads_per_s",
        format!("{:.1}", f64::from(reloads) / elapsed.as_secs_f64()),
    );
    t.figure("zombies_max", zmax);
    t.figure("operator_worst_ms", worst.as_millis());
    assert!(wrong.is_empty(), "reload_storm: {wrong:#?}");
    assert_served("reload_storm", &fails, "sampled every 100 ms");
    assert_eq!(
        names(&t.d),
        last_valid,
        "reload_storm: not the last valid config"
    );
    // Back to the quiet point: every service stopped.
    ctl_all(&t.d, "stop", &last_valid, 30.0);
    t.finish();
}

/// Case 8: 3 million CHLD, HUP and USR1 (short: 300,000) from four
/// threads. HUPs coalesce into at most one reload in flight and one
/// pending; the operator is served throughout; the daemon's own log stays
/// bounded (a status dump per USR1 must not write without bound).
#[test]
#[ignore = "torture: run with just torture"]
fn signal_storm() {
    let total = scale(3_000_000, 300_000);
    let mut services = String::new();
    for i in 0..10 {
        services += &format!("  - name: steady-{i}\n    binary: /bin/sleep\n    args: ['600']\n    log:\n      console: false\n");
    }
    for i in 0..5 {
        services += &svc(
            &format!("flap-{i}"),
            "sleep 0.1; exit 0",
            "    backoff:\n      initial: 100ms\n    log:\n      console: false\n",
        );
    }
    let names: Vec<String> = (0..10)
        .map(|i| format!("steady-{i}"))
        .chain((0..5).map(|i| format!("flap-{i}")))
        .collect();
    let mut t = Torture::start("signal_storm", "", &services);
    t.rss_bound_kib = 512;
    t.quiet_baseline(&names);
    let steady: Vec<i32> = (0..10)
        .map(|i| {
            wait_state(&t.d, &format!("steady-{i}"), "running", 30.0)["pid"]
                .as_i64()
                .unwrap() as i32
        })
        .collect();
    let log0 = std::fs::metadata(&t.d.log).map_or(0, |m| m.len());
    let pid = t.d.pid();
    let t0 = Instant::now();
    let ((), worst, fails, zmax) = t.under_load(100, || {
        std::thread::scope(|s| {
            for th in 0..4u64 {
                s.spawn(move || {
                    let sigs = [17, 1, 10];
                    for i in 0..total / 4 {
                        signal(pid, sigs[((i + th) % 3) as usize]);
                    }
                });
            }
        });
    });
    let secs = t0.elapsed().as_secs_f64();
    // Let the last reload finish before judging the state.
    assert!(
        wait_until(30.0, || t.operator(OPERATOR_DEADLINE).is_ok()),
        "signal_storm: operator never served again"
    );
    let grown = std::fs::metadata(&t.d.log)
        .map_or(0, |m| m.len())
        .saturating_sub(log0);
    t.figure("signals", total);
    t.figure("signals_per_s", format!("{:.0}", total as f64 / secs));
    t.figure("daemon_log_growth_bytes", grown);
    t.figure("zombies_max", zmax);
    t.figure("operator_worst_ms", worst.as_millis());
    assert_served("signal_storm", &fails, "sampled every 100 ms");
    // Unchanged config: the reloads must not have restarted anything.
    for (i, p) in steady.iter().enumerate() {
        assert_eq!(
            row(&t.d, &format!("steady-{i}"))["pid"].as_i64().unwrap() as i32,
            *p,
            "steady-{i} restarted by a reload of the same config"
        );
    }
    // Issue 9 point 3: repeats collapse, the daemon's log is bounded.
    assert!(
        grown <= 4 << 20,
        "signal_storm: the daemon log grew by {grown} bytes"
    );
    ctl_all(&t.d, "stop", &names, 30.0);
    t.finish();
}
