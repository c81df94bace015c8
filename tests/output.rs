//! Service output end to end: lines are whole (a last line without a
//! newline is its own line when the process exits), and `logs -n N`
//! returns at most N lines of history even while the service floods.
//! Every wait has a deadline; no fixed sleeps.
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

const SOON: f64 = 30.0;

/// `-j logs NAME -n N --no-follow`: (ts_ms, stream, text) per line.
fn tail(d: &Daemon, name: &str, n: u32) -> Vec<(u64, String, String)> {
    tail_dropped(d, name, n).0
}

/// Same, and the lines reported dropped (evicted before they were sent).
fn tail_dropped(d: &Daemon, name: &str, n: u32) -> (Vec<(u64, String, String)>, u64) {
    let o = ok(ctl(
        d,
        &["-j", "logs", name, "-n", &n.to_string(), "--no-follow"],
    ));
    let mut dropped = 0;
    let mut lines = Vec::new();
    for v in o.stdout.lines().map(json) {
        if let Some(c) = v.get("dropped") {
            dropped += c.as_u64().unwrap();
            continue;
        }
        lines.push((
            v["ts_ms"].as_u64().unwrap(),
            v["stream"].as_str().unwrap().to_string(),
            v["text"].as_str().unwrap().to_string(),
        ));
    }
    (lines, dropped)
}

fn exited_pids(log: &str, name: &str) -> Vec<i32> {
    let pat = format!("{name}: pid ");
    log.lines()
        .filter_map(|l| l.split_once(&pat))
        .filter(|(_, r)| r.contains(" exited with "))
        .map(|(_, p)| p.split_whitespace().next().unwrap().parse().unwrap())
        .collect()
}

/// A run that ends with an unterminated line on stdout and on stderr: each
/// is flushed as its own line (with its own timestamp) when the process is
/// reaped, not held until shutdown and not glued onto the next run's
/// first line.
#[test]
fn partial_last_line_is_its_own_line_at_exit() {
    let services = svc(
        "part",
        "echo start-of-run-$$; printf partial-of-run-$$; printf err-partial-$$ >&2; exit 3",
        "    backoff:\n      initial: 300ms\n",
    );
    let mut d = Daemon::start("partial", "", &services);
    let log = d.wait_log("part: pid ", SOON);
    let p1 = exited_pids(&log, "part")[0];
    // Flushed at the exit: there before any later run could push it out.
    let want = format!("partial-of-run-{p1}");
    let lines = wait_for(SOON, "the partial line as a line of its own", || {
        let l = tail(&d, "part", 100);
        l.iter().any(|(_, _, t)| *t == want).then_some(l)
    });
    assert!(
        lines
            .iter()
            .any(|(_, s, t)| s == "stderr" && *t == format!("err-partial-{p1}")),
        "{lines:?}"
    );
    // Two more runs: every line is whole, in order.
    let log = d.wait_count(" exited with ", 3, SOON);
    let pids = exited_pids(&log, "part");
    let lines = tail(&d, "part", 100);
    for l in &lines {
        assert_eq!(
            l.2.matches("-run-").count() + l.2.matches("err-partial-").count(),
            1,
            "a glued line: {l:?}\n{lines:?}"
        );
    }
    let pos = |t: &str| {
        lines
            .iter()
            .position(|l| l.2 == t)
            .unwrap_or_else(|| panic!("no line {t:?} in {lines:?}"))
    };
    for w in pids.windows(2) {
        let (a, b) = (w[0], w[1]);
        let partial = pos(&format!("partial-of-run-{a}"));
        let next = pos(&format!("start-of-run-{b}"));
        assert!(partial < next, "{lines:?}");
        assert!(lines[partial].0 <= lines[next].0, "{lines:?}");
        assert!(pos(&format!("start-of-run-{a}")) < partial, "{lines:?}");
    }
    finish(d);
}

/// `logs -n N --no-follow` against a service that floods its ring: at most
/// N lines, taken from what the ring held when the request arrived.
#[test]
fn logs_n_is_bounded_while_the_service_floods() {
    let services = "  - name: flood\n    binary: /usr/bin/yes\n    args: ['flood-line-padded-to-about-forty-bytes']\n    log:\n      buffer: 64KiB\n";
    let mut d = Daemon::start("flood", "", services);
    d.wait_log("flood: spawned pid", SOON);
    // The ring fills up (about 1,300 lines of 50 bytes).
    wait_for(SOON, "a full ring", || {
        let o = ok(ctl(&d, &["-j", "status", "flood"]));
        let v = json(&o.stdout);
        let lines: u64 = v["details"]["log"]
            .as_str()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        (lines > 1000).then_some(())
    });
    // The ring holds more than 1000 lines: the history is exactly the last
    // N of them when the request arrived, each sent or (evicted by the
    // flood before it could be sent) counted as dropped.
    for n in [1000u32, 1000, 10, 1] {
        let (got, dropped) = tail_dropped(&d, "flood", n);
        println!(
            "logs -n {n} --no-follow while flooding: {} lines, {dropped} dropped",
            got.len()
        );
        assert!(got.len() <= n as usize, "-n {n} gave {} lines", got.len());
        assert_eq!(got.len() as u64 + dropped, u64::from(n), "-n {n}");
        assert!(got
            .iter()
            .all(|l| l.2 == "flood-line-padded-to-about-forty-bytes"));
    }
    finish(d);
}
