//! The scripting side of the CLI against the real daemon over its real
//! socket: `status NAME`'s exit code, `wait`, the chain of waiting
//! dependencies in `status NAME`, and `logs` of several services. Every
//! test ends by checking that the daemon made no heap allocation after
//! startup.
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

#[test]
fn status_name_exit_code_tells_the_state() {
    let services = [
        svc("up", "exec sleep 600", ""),
        svc("once", "exit 0", "    type: oneshot\n"),
        svc("bad", "exit 1", "    restart: never\n"),
        svc("down", "exec sleep 600", ""),
        gated("gate"),
        svc(
            "blocked",
            "exec sleep 600",
            "    depends_on:\n      - name: gate\n        condition: healthy\n",
        ),
    ]
    .concat();
    let mut d = Daemon::start("stcode", "", &services);
    d.wait_log("once: completed", 10.0);
    wait_state(&d, "bad", "failed", 10.0);
    ok(ctl(&d, &["stop", "down"]));
    for (name, code, state) in [
        ("up", 0, "running"),
        ("once", 0, "completed"),
        ("bad", 3, "failed"),
        ("down", 3, "stopped"),
        ("gate", 3, "starting"),
        ("blocked", 3, "waiting"),
    ] {
        let o = ctl(&d, &["status", name]);
        assert_eq!(o.code, code, "{name}: {o:?}");
        assert!(o.stdout.contains(state), "{name}: {o:?}");
        assert!(o.stderr.is_empty(), "{name}: {o:?}");
        let j = ctl(&d, &["-j", "status", name]);
        assert_eq!(j.code, code, "{name}: {j:?}");
        assert_eq!(json(&j.stdout)["state"], state, "{name}: {j:?}");
    }
    // Without a name: 0 whatever the states.
    assert_eq!(ctl(&d, &["status"]).code, 0);
    // Unknown service: 3 too (as `systemctl is-active`), with a message.
    let o = ctl(&d, &["status", "nope"]);
    assert_eq!(o.code, 3, "{o:?}");
    assert!(o.stderr.contains("unknown service"), "{o:?}");
    assert_no_alloc(&mut d);
    let sock = d.socket.clone();
    finish(d);
    // No daemon: 4.
    let o = cli(&["status", "up", "-s", sock.to_str().unwrap()]);
    assert_eq!(o.code, 4, "{o:?}");
}

/// A readiness check that passes once `$DIR/NAME.ok` exists.
fn gated(name: &str) -> String {
    svc(
        name,
        "exec sleep 600",
        &format!(
            "    healthcheck:\n      readiness:\n        type: exec\n        command: \"test -f $DIR/{name}.ok\"\n        interval: 100ms\n        timeout: 1s\n"
        ),
    )
}

#[test]
fn wait_blocks_until_the_event_and_returns_at_once_when_there() {
    let services = [
        svc("up", "exec sleep 600", ""),
        gated("slow"),
        svc("once", "sleep 0.3; exit 0", "    type: oneshot\n"),
        svc(
            "bad",
            "while [ ! -f $DIR/bad.go ]; do sleep 0.05; done; exit 1",
            "    restart: never\n",
        ),
    ]
    .concat();
    let mut d = Daemon::start("waitcmd", "", &services);
    wait_state(&d, "up", "running", 10.0);
    wait_state(&d, "slow", "starting", 10.0);
    // Already there: at once, one line per service.
    let o = ok(ctl_within(&d, &["wait", "up", "--timeout", "5s"], 10.0));
    assert!(o.stdout.starts_with("up (running"), "{o:?}");
    // A oneshot that completes while we wait.
    ok(ctl_within(&d, &["wait", "once", "--completed"], 10.0));
    assert_eq!(row(&d, "once")["state"], "completed");

    // Blocks while `slow` is starting; the check's pass ends it.
    let sock = d.socket.to_str().unwrap().to_owned();
    let mut w = std::process::Command::new(BIN)
        .args([
            "-j",
            "wait",
            "slow",
            "up",
            "--healthy",
            "--timeout",
            "30s",
            "-s",
            &sock,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The check runs (and fails) every 100 ms meanwhile.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(w.try_wait().unwrap().is_none(), "wait returned early");
    assert_eq!(row(&d, "slow")["state"], "starting");
    std::fs::write(d.dir.join("slow.ok"), "").unwrap();
    let out = wait_for(10.0, "wait to return", || w.try_wait().unwrap());
    assert_eq!(out.code(), Some(0));
    let mut s = String::new();
    std::io::Read::read_to_string(&mut w.stdout.take().unwrap(), &mut s).unwrap();
    let v = json(&s);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["until"], "healthy", "{v}");
    assert_eq!(v["services"][0]["name"], "slow", "{v}");
    assert_eq!(v["services"][0]["state"], "running", "{v}");
    assert_eq!(v["services"][0]["health"], "ready:healthy", "{v}");
    assert_eq!(v["services"][1]["name"], "up", "{v}");

    // A failed event ends the wait with 1 before the timeout.
    let t0 = std::time::Instant::now();
    let mut w = std::process::Command::new(BIN)
        .args([
            "wait",
            "bad",
            "--completed",
            "--timeout",
            "30s",
            "-s",
            &sock,
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    std::fs::write(d.dir.join("bad.go"), "").unwrap();
    let out = wait_for(10.0, "wait bad to return", || w.try_wait().unwrap());
    assert_eq!(out.code(), Some(1));
    assert!(t0.elapsed().as_secs() < 10);
    let mut s = String::new();
    std::io::Read::read_to_string(&mut w.stderr.take().unwrap(), &mut s).unwrap();
    assert!(
        s.contains("bad (failed") && s.contains("failed while waiting"),
        "{s}"
    );
    assert_no_alloc(&mut d);
    finish(d);
}

#[test]
fn wait_times_out_with_1_and_tells_unknown_and_no_daemon_apart() {
    let mut d = Daemon::start("waitto", "", &gated("slow"));
    wait_state(&d, "slow", "starting", 10.0);
    let t0 = std::time::Instant::now();
    let o = ctl_within(&d, &["wait", "slow", "--timeout", "300ms"], 10.0);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(t0.elapsed().as_millis() >= 300);
    assert!(
        o.stderr
            .contains("timed out after 300ms waiting for slow (starting"),
        "{o:?}"
    );
    let j = ctl_within(&d, &["-j", "wait", "slow", "--timeout", "200ms"], 10.0);
    assert_eq!(j.code, 1, "{j:?}");
    let v = json(&j.stdout);
    assert_eq!(v["error"], "timeout", "{v}");
    assert_eq!(v["services"][0]["state"], "starting", "{v}");
    let o = ctl_within(&d, &["wait", "slow", "nope", "--timeout", "5s"], 10.0);
    assert_eq!(o.code, 3, "{o:?}");
    assert!(o.stderr.contains("unknown service 'nope'"), "{o:?}");
    assert_no_alloc(&mut d);
    let sock = d.socket.clone();
    finish(d);
    let o = cli(&["wait", "slow", "-s", sock.to_str().unwrap()]);
    assert_eq!(o.code, 4, "{o:?}");
}

#[test]
fn wait_in_a_shell_script() {
    let mut d = Daemon::start("waitsh", "", &gated("api"));
    wait_state(&d, "api", "starting", 10.0);
    let script = format!(
        "touch {dir}/api.ok; \"$BIN\" wait api --healthy --timeout 5s -s {sock} >/dev/null && echo up; \
         \"$BIN\" wait api --completed --timeout 200ms -s {sock} 2>/dev/null || echo \"not completed: $?\"",
        dir = d.dir.display(),
        sock = d.socket.display()
    );
    let out = std::process::Command::new("/bin/sh")
        .args(["-c", &script])
        .env("BIN", BIN)
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert_eq!(s, "up\nnot completed: 1\n", "{out:?}");
    assert_no_alloc(&mut d);
    finish(d);
}

#[test]
fn status_name_shows_the_chain_of_waiting_dependencies() {
    let port = free_port();
    let services = [
        svc(
            "db",
            "sleep 0.1; exit 1",
            &format!(
                "    healthcheck:\n      readiness:\n        type: tcp\n        address: 127.0.0.1:{port}\n        interval: 1s\n"
            ),
        ),
        svc("mid", "exec sleep 600", "    depends_on:\n      - name: db\n        condition: healthy\n"),
        svc("top", "exec sleep 600", "    depends_on:\n      - name: mid\n        condition: healthy\n"),
        svc(
            "api",
            "exec sleep 600",
            &format!(
                "    healthcheck:\n      readiness:\n        type: tcp\n        address: 127.0.0.1:{port}\n        interval: 100ms\n        timeout: 1s\n"
            ),
        ),
        svc(
            "web",
            "exec sleep 600",
            "    depends_on:\n      - name: api\n        condition: healthy\n",
        ),
    ]
    .concat();
    let mut d = Daemon::start("chain", "", &services);
    // `status NAME` of a service that is not up exits 3: not `detail()`.
    let reason = |name: &str, pat: &'static str| {
        wait_row(
            &d,
            pat,
            10.0,
            || json(&ctl(&d, &["-j", "status", name]).stdout),
            |r| r["reason"].as_str().is_some_and(|s| s.contains(pat)),
        )["reason"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let web = reason("web", "unhealthy");
    assert_eq!(
        web,
        "waiting for api (starting: readiness unhealthy: connect: Connection refused)"
    );
    let top = reason("top", "backoff");
    assert!(
        top.starts_with("waiting for mid (waiting: waiting for db (backoff: exit code 1"),
        "{top}"
    );
    assert!(top.ends_with("))"), "{top}");
    // The human `status NAME` says the same; the table keeps its short reason.
    let o = ctl(&d, &["status", "web"]);
    assert_eq!(o.code, 3, "{o:?}");
    assert!(
        o.stdout.contains("waiting for api (starting: readiness"),
        "{o:?}"
    );
    assert_eq!(row(&d, "web")["reason"], "waiting for api");
    assert_no_alloc(&mut d);
    finish(d);
}

/// The text of each `NAME | TS STREAM TEXT` line: "NAME | TEXT".
fn name_and_text(out: &str) -> Vec<String> {
    out.lines()
        .map(|l| {
            let (name, rest) = l.split_once(" | ").unwrap_or_else(|| panic!("{l:?}"));
            let text = rest.splitn(3, ' ').nth(2).unwrap_or("");
            format!("{} | {text}", name.trim_end())
        })
        .collect()
}

#[test]
fn logs_of_every_service_merged_by_time_with_n_since_and_names() {
    let services = [
        svc("a", "echo a1; sleep 0.3; echo a3; exec sleep 600", ""),
        svc(
            "bb",
            "sleep 0.15; echo b2; sleep 0.3; echo b4 >&2; while [ ! -f $DIR/go ]; do sleep 0.05; done; echo live; exec sleep 600",
            "",
        ),
        svc("c", "echo c-old; sleep 1.5; echo c-new; exec sleep 600", ""),
    ]
    .concat();
    let mut d = Daemon::start("logsall", "", &services);
    let all = |args: &[&str]| {
        let mut a = vec!["logs", "--no-follow"];
        a.extend_from_slice(args);
        ok(ctl_within(&d, &a, 10.0)).stdout
    };
    wait_for(10.0, "b4 in the ring", || {
        all(&[]).contains("b4").then_some(())
    });
    // Every service, merged by time, names padded to the longest.
    let out = all(&[]);
    assert!(out.lines().any(|l| l.starts_with("a  | 20")), "{out}");
    assert!(out.contains("bb | ") && out.contains(" stderr b4"), "{out}");
    let got: Vec<String> = name_and_text(&out)
        .into_iter()
        .filter(|l| !l.starts_with('c'))
        .collect();
    assert_eq!(got, ["a | a1", "bb | b2", "a | a3", "bb | b4"], "{out}");
    // -n is per service, as in compose.
    let got = name_and_text(&all(&["-n", "1", "a", "bb"]));
    assert_eq!(got, ["a | a3", "bb | b4"]);
    // Several names: only theirs.
    let out = all(&["bb", "c"]);
    assert!(
        !out.contains("a1") && out.contains("b2") && out.contains("c-old"),
        "{out}"
    );
    // --since: c-old is over a second old once c-new is written.
    wait_for(10.0, "c-new", || {
        all(&["c"]).contains("c-new").then_some(())
    });
    let out = all(&["--since", "1s"]);
    assert!(out.contains("c-new") && !out.contains("c-old"), "{out}");
    // One service: the same cut, its lines without the name.
    let o = ok(ctl_within(
        &d,
        &["logs", "c", "--since", "1s", "--no-follow"],
        10.0,
    ));
    assert!(
        o.stdout.ends_with(" stdout c-new\n") && !o.stdout.contains("c-old"),
        "{o:?}"
    );
    assert_eq!(o.stdout.lines().count(), 1, "{o:?}");
    // -j: one object a line, with the service.
    let j = ok(ctl_within(
        &d,
        &["-j", "logs", "--no-follow", "-n", "1", "a"],
        10.0,
    ));
    let v = json(j.stdout.lines().next().unwrap());
    assert_eq!(
        (v["service"].as_str(), v["text"].as_str()),
        (Some("a"), Some("a3"))
    );
    let j = ok(ctl_within(
        &d,
        &["-j", "logs", "--no-follow", "-n", "1"],
        10.0,
    ));
    let names: Vec<String> = j
        .stdout
        .lines()
        .map(|l| json(l)["service"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), 3, "{j:?}");
    // Unknown name: 3.
    let o = ctl_within(&d, &["logs", "a", "nope", "--no-follow"], 10.0);
    assert_eq!(o.code, 3, "{o:?}");
    // -f: the history, then new lines of every service as they come.
    let mut f = Follower::spawn(&d, &["logs", "-f", "-n", "2"]);
    f.wait_line(10.0, "history", |l| l.contains("c-new"));
    std::fs::write(d.dir.join("go"), "").unwrap();
    let l = f.wait_line(10.0, "the live line", |l| l.ends_with(" stdout live"));
    assert!(l.starts_with("bb | "), "{l}");
    drop(f);
    assert_no_alloc(&mut d);
    finish(d);
}

/// Each service's numbers, in the order `logs -f -j` printed them.
fn numbers_by_service(lines: &[String]) -> (std::collections::BTreeMap<String, Vec<u64>>, u64) {
    let mut by: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    let mut dropped = 0;
    for l in lines {
        let v = json(l);
        if let Some(n) = v["dropped"].as_u64() {
            dropped += n;
            continue;
        }
        let n: u64 = v["text"].as_str().unwrap().parse().unwrap();
        by.entry(v["service"].as_str().unwrap().to_owned())
            .or_default()
            .push(n);
    }
    (by, dropped)
}

#[test]
fn logs_follow_of_every_service_loses_no_line_between_history_and_stream() {
    // A history of 3,000 lines a service (about 100 KiB of frames: many
    // turns of the client's 16 KiB buffer), while every service goes on
    // writing.
    let writer = "i=0; while [ $i -lt 4000 ]; do echo $i; i=$((i+1)); done; \
                  while true; do echo $i; i=$((i+1)); [ $((i % 5)) = 0 ] && sleep 0.01; done";
    let services = [
        svc("w1", writer, ""),
        svc("w2", writer, ""),
        svc("w3", writer, ""),
    ]
    .concat();
    let mut d = Daemon::start(
        "logsrace",
        "  service_logs:\n    buffer: 256KiB\n",
        &services,
    );
    for n in ["w1", "w2", "w3"] {
        wait_for(20.0, "4,000 lines", || {
            let o = ok(ctl_within(&d, &["logs", n, "--no-follow", "-n", "1"], 10.0));
            let last: u64 = o.stdout.trim().rsplit(' ').next()?.parse().ok()?;
            (last >= 4000).then_some(())
        });
    }
    let mut f = Follower::spawn(&d, &["-j", "logs", "-f", "-n", "3000"]);
    // Until each service has 500 lines more than its history.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (by, dropped) = loop {
        let _ = f.try_line(0.2, |_| false);
        let (by, dropped) = numbers_by_service(&f.seen);
        if by.len() == 3 && by.values().all(|v| v.len() >= 3500) {
            break (by, dropped);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            by.values().map(Vec::len).collect::<Vec<_>>()
        );
    };
    drop(f);
    // The history is the last 3,000 lines, then every line after: no line
    // doubled or out of order, and none lost without a `dropped` marker
    // saying so (a loaded machine may make the reader fall behind; the
    // daemon then drops lines for it and counts them).
    let mut missing = 0;
    for (name, v) in &by {
        let back: Vec<(u64, u64)> = v
            .windows(2)
            .filter(|w| w[1] <= w[0])
            .map(|w| (w[0], w[1]))
            .collect();
        assert!(
            back.is_empty(),
            "{name}: lines doubled or out of order at {back:?}"
        );
        missing += v.windows(2).map(|w| w[1] - w[0] - 1).sum::<u64>();
    }
    assert!(
        missing <= dropped,
        "{missing} lines lost, {dropped} reported dropped: {:?}",
        by.iter()
            .map(|(n, v)| (n, v.windows(2).filter(|w| w[1] != w[0] + 1).count()))
            .collect::<Vec<_>>()
    );
    assert_no_alloc(&mut d);
    finish(d);
}

/// `logs -f` of every service across a reload: a service the reload adds
/// is followed too (as "every service" says), and the stream of the
/// services kept goes on past the removed one's stop.
#[test]
fn logs_follow_of_every_service_takes_in_services_added_by_reload() {
    let ticker = |name: &str| {
        svc(
            name,
            &format!("while :; do echo tick-{name}; sleep 0.1; done"),
            "",
        )
    };
    let d = Daemon::start("logsreload", "", &[ticker("a"), ticker("gone")].concat());
    let mut f = Follower::spawn(&d, &["logs", "-f", "-n", "0"]);
    f.wait_line(10.0, "a's line", |l| l.ends_with(" stdout tick-a"));
    f.wait_line(10.0, "gone's line", |l| l.ends_with(" stdout tick-gone"));
    d.rewrite("", &[ticker("a"), ticker("added")].concat());
    ok(ctl_within(&d, &["reload"], 60.0));
    let l = f.wait_line(10.0, "the added service's line", |l| {
        l.ends_with(" stdout tick-added")
    });
    assert!(l.starts_with("added"), "{l}");
    // The stream of the service kept goes on.
    for _ in 0..3 {
        f.wait_line(10.0, "more of a", |l| l.ends_with(" stdout tick-a"));
    }
    drop(f);
    finish(d);
}
