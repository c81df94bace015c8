//! The real daemon against real `sh` services. Every wait has a deadline.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![allow(clippy::disallowed_methods, clippy::disallowed_macros)]

mod common;
use common::*;

#[test]
fn dependency_order_and_reverse_stop_order() {
    let services = [
        svc(
            "c",
            "echo c >> $DIR/order; exec sleep 60",
            "    depends_on: [b]\n",
        ),
        svc(
            "b",
            "echo b >> $DIR/order; exec sleep 60",
            "    depends_on:\n      - name: migrate\n        condition: completed\n",
        ),
        svc(
            "migrate",
            "sleep 0.2; echo migrate >> $DIR/order",
            "    type: oneshot\n    depends_on: [a]\n",
        ),
        svc("a", "echo a >> $DIR/order; exec sleep 60", ""),
        svc("free", "exec sleep 60", ""),
    ]
    .concat();
    let mut d = Daemon::start("deps", "", &services);
    let log = d.wait_log("c: spawned", 10.0);
    let pos = |p: &str| {
        log.find(p)
            .unwrap_or_else(|| panic!("{p} missing in\n{log}"))
    };
    // Independent services start at once (in the walk that starts a and
    // migrate, in dependency order), without waiting for anything.
    assert!(pos("a: spawned") < pos("migrate: spawned"));
    assert!(pos("free: spawned") < pos("migrate: completed"));
    assert!(pos("migrate: completed") < pos("b: spawned"));
    assert!(pos("b: spawned") < pos("c: spawned"));
    let order = wait_for(5.0, "order file", || {
        let t = std::fs::read_to_string(d.dir.join("order")).ok()?;
        (t.lines().count() == 4).then_some(t)
    });
    // `completed` is a hard gate: b and c run only after migrate finished.
    // (`started` only orders the spawns, so b and c may print in any order.)
    let lines: Vec<&str> = order.lines().collect();
    assert_eq!(lines[..2], ["a", "migrate"], "{order}");
    assert!(log.contains("b: waiting for migrate"), "{log}");

    assert_eq!(d.stop(20.0), 0);
    let log = d.log_text();
    let pos = |p: &str| {
        log.find(p)
            .unwrap_or_else(|| panic!("{p} missing in\n{log}"))
    };
    // Reverse order: c stops before b, b before a.
    assert!(pos("c: stopped") < pos("b: stopping"), "{log}");
    assert!(pos("b: stopped") < pos("a: stopping"), "{log}");
    assert!(log.contains("shutdown complete"));
    assert!(!d.socket.exists(), "socket removed");
    assert!(!d.pid_file.exists(), "pid file removed");
}

#[test]
fn failed_dependency_keeps_dependent_waiting_with_reason() {
    let services = [
        svc("setup", "exit 4", "    type: oneshot\n"),
        svc(
            "app",
            "exec sleep 60",
            "    depends_on:\n      - name: setup\n        condition: completed\n",
        ),
    ]
    .concat();
    let mut d = Daemon::start("depfail", "", &services);
    d.wait_log("app: waiting for setup (it failed)", 10.0);
    let dump = d.dump();
    assert!(dump.contains("status app: waiting pid 0"), "{dump}");
    assert!(dump.contains("waiting for setup (it failed)"), "{dump}");
    assert!(dump.contains("status setup: failed"), "{dump}");
    assert!(!d.log_text().contains("app: spawned"));
    assert_eq!(d.stop(10.0), 0);
}

#[test]
fn backoff_schedule_gaps() {
    let services = svc(
        "crash",
        "exit 1",
        "    backoff:\n      initial: 200ms\n      max: 800ms\n      multiplier: 2.0\n",
    );
    let mut d = Daemon::start("backoff", "", &services);
    let log = d.wait_count("crash: spawned", 6, 15.0);
    let t = stamps(&log, "crash: spawned");
    let gaps: Vec<u64> = t.windows(2).map(|w| w[1] - w[0]).collect();
    let want = [200, 400, 800, 800, 800];
    for (g, w) in gaps.iter().zip(want) {
        // The gap is the delay plus the run (an `sh -c 'exit 1'`).
        assert!(
            *g >= w && *g < w + 250,
            "gaps {gaps:?}, want about {want:?}"
        );
    }
    assert!(log.contains("crash: restarting in 200ms (failure 1)"));
    assert!(log.contains("crash: restarting in 800ms (failure 4)"));
    assert_eq!(d.stop(10.0), 0);
}

#[test]
fn max_restarts_then_failed() {
    let services = svc(
        "doomed",
        "exit 7",
        "    max_restarts: 2\n    backoff:\n      initial: 50ms\n",
    );
    let mut d = Daemon::start("maxr", "", &services);
    let log = d.wait_log("doomed: gave up after 3 consecutive failures", 10.0);
    assert_eq!(log.matches("doomed: spawned").count(), 3);
    let dump = d.dump();
    // docs/CONFIG.md: `max_restarts: 2` = the first run and 2 restarts.
    assert!(
        dump.contains("status doomed: failed pid 0 restarts 2 "),
        "{dump}"
    );
    assert!(
        dump.contains("gave up after 3 consecutive failures"),
        "{dump}"
    );
    assert_eq!(d.stop(10.0), 0);
}

#[test]
fn reset_after_clears_the_failure_count() {
    // Each run lasts 300 ms, longer than reset_after: the delay never grows
    // and max_restarts is never reached.
    let services = svc(
        "steady",
        "sleep 0.3; exit 1",
        "    max_restarts: 1\n    backoff:\n      initial: 100ms\n      multiplier: 4.0\n      reset_after: 200ms\n",
    );
    let mut d = Daemon::start("reset", "", &services);
    let log = d.wait_count("steady: spawned", 4, 15.0);
    assert!(!log.contains("gave up"), "{log}");
    assert_eq!(
        log.matches("restarting in 100ms (failure 1)").count(),
        log.matches("restarting in").count()
    );
    assert_eq!(d.stop(10.0), 0);
}

#[test]
fn exec_failure_is_reported_with_stage_and_errno() {
    let dir = tempdir("execfail-bin");
    let script = dir.join("bad-interp");
    std::fs::write(&script, "#!/nonexistent/interpreter\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let services = format!(
        "  - name: broken\n    binary: {}\n    backoff:\n      initial: 100ms\n",
        script.display()
    );
    let mut d = Daemon::start("execfail", "", &services);
    let log = d.wait_count("broken: exec failed: No such file or directory", 2, 10.0);
    assert!(
        !log.contains("broken: spawned"),
        "an exec failure is not a run\n{log}"
    );
    let dump = d.dump();
    assert!(
        dump.contains("exec failed: No such file or directory"),
        "{dump}"
    );
    assert!(dump.contains("restarts 0"), "{dump}");
    assert_eq!(d.stop(10.0), 0);
}

#[test]
fn stop_escalates_to_sigkill_for_a_child_that_ignores_sigterm() {
    let services = svc(
        "stubborn",
        "trap \"\" TERM; echo armed; while :; do sleep 0.05; done",
        "    stop_timeout: 300ms\n    log:\n      console: false\n",
    );
    let mut d = Daemon::start("sigkill", "", &services);
    d.wait_log("stubborn: spawned", 10.0);
    // Wait until the trap is set (the line reaches the ring before we stop).
    wait_for(10.0, "armed output", || {
        let t = d.dump();
        t.lines()
            .rev()
            .find(|l| l.contains("status stubborn"))?
            .contains("log 1 lines")
            .then_some(())
    });
    assert_eq!(d.stop(10.0), 0);
    let log = d.log_text();
    assert!(log.contains("stubborn: stopping pid"), "{log}");
    assert!(
        log.contains("stubborn: stop timeout; sent SIGKILL to process group"),
        "{log}"
    );
    assert!(log.contains("exited with signal SIGKILL"), "{log}");
}

#[test]
fn stop_kills_the_whole_process_group_including_grandchildren() {
    let services = svc("parent", "sleep 600 & echo $! > $DIR/gc.pid; wait", "");
    let mut d = Daemon::start("pgroup", "", &services);
    let gc: i32 = wait_for(10.0, "grandchild pid", || {
        std::fs::read_to_string(d.dir.join("gc.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    });
    assert!(alive(gc));
    assert_eq!(d.stop(10.0), 0);
    wait_for(5.0, "grandchild gone", || (!exists(gc)).then_some(()));
}

#[test]
fn orphans_are_reaped() {
    // The subshell exits at once, orphaning `sleep`; it lands on coffeyd
    // (child subreaper), which must reap it when it exits.
    let services = svc(
        "forker",
        "(sleep 0.3 & echo $! > $DIR/orphan.pid); exec sleep 600",
        "",
    );
    let mut d = Daemon::start("orphan", "", &services);
    let orphan: i32 = wait_for(10.0, "orphan pid", || {
        std::fs::read_to_string(d.dir.join("orphan.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    });
    d.wait_log(&format!("reaped orphan pid {orphan}"), 10.0);
    assert!(!exists(orphan), "orphan {orphan} left as a zombie");
    assert_eq!(d.stop(10.0), 0);
}

#[test]
fn log_capture_ring_file_and_rotation() {
    let extra = "  service_logs:\n    dir: $DIR/logs\n    max_size: 4KiB\n    keep: 2\n";
    // 200 lines of ~100 bytes on stdout, one on stderr, one overlong line.
    let services = svc(
        "chatty",
        "i=0; while [ $i -lt 200 ]; do echo \"line $i xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"; i=$((i+1)); done; head -c 5000 /dev/zero | tr \"\\\\0\" y; echo; echo done; while [ ! -f $DIR/go ]; do sleep 0.05; done; echo oops >&2; exec sleep 600",
        "    log:\n      buffer: 2KiB\n",
    );
    let mut d = Daemon::start("logs", extra, &services);
    let logs = d.dir.join("logs");
    let cur = logs.join("chatty.log");
    wait_for(10.0, "last line in the log file", || {
        std::fs::read_to_string(&cur)
            .ok()?
            .contains("stdout done")
            .then_some(())
    });
    // stderr is a pipe of its own, read in no fixed order with stdout's
    // backlog: written before it, its line could rotate out with keep: 2.
    // So it comes once stdout is all in the file.
    std::fs::write(d.dir.join("go"), "").unwrap();
    wait_for(10.0, "the stderr line in the log file", || {
        std::fs::read_to_string(&cur)
            .ok()?
            .contains(" stderr oops")
            .then_some(())
    });
    assert!(std::fs::metadata(&cur).unwrap().len() <= 4096);
    for k in [1, 2] {
        let p = logs.join(format!("chatty.log.{k}"));
        let m = std::fs::metadata(&p).unwrap_or_else(|_| panic!("{} missing", p.display()));
        assert!(
            m.len() <= 4096 && m.len() > 3000,
            "{} is {} bytes",
            p.display(),
            m.len()
        );
    }
    assert!(!logs.join("chatty.log.3").exists(), "keep: 2");
    let all = [
        logs.join("chatty.log.2"),
        logs.join("chatty.log.1"),
        cur.clone(),
    ]
    .iter()
    .map(|p| std::fs::read_to_string(p).unwrap())
    .collect::<String>();
    assert!(all.contains(" stderr oops"), "stderr is tagged");
    assert!(all.contains(" stdout line 199 "), "stdout is tagged");
    let cut = all
        .lines()
        .find(|l| l.contains("yyyy"))
        .expect("overlong line");
    assert!(
        cut.ends_with(" [cut]"),
        "the cut is marked: {}",
        &cut[cut.len() - 20..]
    );
    assert_eq!(cut.matches('y').count(), 1024, "cut at LINE_MAX");
    // The 2 KiB ring keeps only the newest lines and counts the evicted.
    let dump = d.dump();
    let line = dump
        .lines()
        .rev()
        .find(|l| l.contains("status chatty"))
        .unwrap();
    assert!(line.contains("cut)"), "{line}");
    assert!(!line.contains("(0 evicted"), "{line}");
    assert_eq!(d.stop(10.0), 0);
}

#[test]
fn unwritable_log_file_is_reported_and_the_ring_keeps_working() {
    // /dev/full opens fine and fails every write with ENOSPC: a full disk.
    let services = svc(
        "writer",
        "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.02; done",
        "    log:\n      file: /dev/full\n",
    );
    let mut d = Daemon::start("logfail", "", &services);
    let log = d.wait_log(
        "writer: log file /dev/full: No space left on device; lines stay in the ring buffer",
        10.0,
    );
    assert!(log.contains("writer: spawned"));
    let lines = |d: &mut Daemon| -> u64 {
        let t = d.dump();
        let l = t
            .lines()
            .rev()
            .find(|l| l.contains("status writer"))
            .unwrap()
            .to_string();
        l.split("; log ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let n0 = lines(&mut d);
    wait_for(10.0, "the ring keeps filling", || {
        (lines(&mut d) >= n0 + 5).then_some(())
    });
    // Reported once, not once per line.
    assert_eq!(d.count("log file /dev/full"), 1, "{}", d.log_text());
    assert!(d
        .log_text()
        .contains("status: heap allocations after startup: 0;"));
    assert_eq!(d.stop(10.0), 0);
}

#[test]
fn output_flood_keeps_memory_flat() {
    let services = [
        svc(
            "flood",
            "exec yes xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "    log:\n      console: false\n",
        ),
        svc(
            "longlines",
            "while :; do head -c 100000 /dev/zero | tr \"\\\\0\" z; echo; done",
            "    log:\n      console: false\n",
        ),
    ]
    .concat();
    let mut d = Daemon::start("flood", "", &services);
    d.wait_log("longlines: spawned", 10.0);
    // Let the rings fill and wrap, then sample.
    let ring_wraps = |d: &mut Daemon| {
        let t = d.dump();
        let l = t
            .lines()
            .rev()
            .find(|l| l.contains("status flood"))
            .unwrap()
            .to_string();
        let evicted: u64 = l
            .split(" lines (")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        evicted
    };
    wait_for(10.0, "ring wrapped", || {
        (ring_wraps(&mut d) > 1000).then_some(())
    });
    let rss0 = d.rss_kib();
    let e0 = ring_wraps(&mut d);
    wait_for(20.0, "a lot more output", || {
        (ring_wraps(&mut d) > e0 + 200_000).then_some(())
    });
    let rss1 = d.rss_kib();
    assert!(rss0 > 0);
    assert!(
        rss1 <= rss0 + 64,
        "RSS grew from {rss0} KiB to {rss1} KiB during the flood"
    );
    let dump = d.dump();
    assert!(dump.contains("heap allocations after startup: 0"), "{dump}");
    assert_eq!(d.stop(10.0), 0);
}

#[test]
fn zero_heap_allocations_after_startup() {
    let dir_extra = "  service_logs:\n    dir: $DIR/logs\n    max_size: 4KiB\n    keep: 1\n";
    let services = [
        svc(
            "crashloop",
            "echo up; echo err >&2; exit 3",
            "    backoff:\n      initial: 20ms\n      max: 40ms\n",
        ),
        svc("oneshot", "echo once", "    type: oneshot\n"),
        svc(
            "dep",
            "exec sleep 600",
            "    depends_on:\n      - name: oneshot\n        condition: completed\n",
        ),
        svc(
            "stubborn",
            "trap \"\" TERM; while :; do sleep 0.05; done",
            "    stop_timeout: 200ms\n",
        ),
        svc(
            "flood",
            "i=0; while [ $i -lt 3000 ]; do echo \"flood $i\"; i=$((i+1)); done; exec sleep 600",
            "",
        ),
        svc("orphaner", "(sleep 0.1 &); exec sleep 600", ""),
    ]
    .concat();
    let mut d = Daemon::start("noalloc", dir_extra, &services);
    d.wait_count("crashloop: spawned", 10, 20.0);
    d.wait_log("reaped orphan pid", 10.0);
    d.wait_log("dep: spawned", 10.0);
    assert_no_alloc(&mut d);
    assert_eq!(d.stop(20.0), 0);
    let log = d.log_text();
    assert!(
        log.contains("stubborn: stop timeout; sent SIGKILL"),
        "{log}"
    );
    assert_clean_shutdown(&log);
}

#[test]
fn shutdown_timeout_is_honoured() {
    // stop_timeout is a minute; shutdown_timeout cuts it to 300 ms.
    let services = svc(
        "slow",
        "trap \"\" TERM; while :; do sleep 0.05; done",
        "    stop_timeout: 60s\n",
    );
    let mut d = Daemon::start("shutdown", "  shutdown_timeout: 300ms\n", &services);
    d.wait_log("slow: spawned", 10.0);
    let t0 = std::time::Instant::now();
    assert_eq!(d.stop(10.0), 0);
    assert!(t0.elapsed() < std::time::Duration::from_secs(10));
    let log = d.log_text();
    assert!(log.contains("shutdown complete"), "{log}");
    assert!(
        !log.contains("slow: stop timeout"),
        "the service's own 60s timeout never fired: {log}"
    );
}

#[test]
fn second_daemon_on_the_same_socket_refuses_to_start() {
    let services = svc("a", "exec sleep 600", "");
    let mut d = Daemon::start("twice", "", &services);
    let out = std::process::Command::new(BIN)
        .arg("-c")
        .arg(&d.config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another coffeyd is running"));
    assert_eq!(d.stop(10.0), 0);
}

#[test]
fn child_gets_session_clean_signals_cwd_umask_env() {
    let extra = "  service_logs:\n    dir: $DIR/logs\n";
    let services = [
        svc(
            "shell",
            "echo pid=$$ stat=$(cut -d\" \" -f5,6 /proc/$$/stat) > $DIR/env.txt; echo pwd=$(pwd) umask=$(umask) port=$PORT home=$HOME >> $DIR/env.txt; exec sleep 600",
            "    working_dir: /tmp\n    umask: \"027\"\n    env: [PORT=8080, HOME=/nowhere]\n",
        ),
        // No shell in between: what the daemon hands to execve.
        "  - name: raw\n    binary: /bin/cat\n    args: [/proc/self/status]\n    restart: never\n".to_string(),
    ]
    .concat();
    // The daemon blocks and ignores signals itself; none of that may leak.
    let mut d = Daemon::start("childenv", extra, &services);
    let env = wait_for(10.0, "env.txt", || {
        let t = std::fs::read_to_string(d.dir.join("env.txt")).ok()?;
        (t.lines().count() == 2).then_some(t)
    });
    let pid: &str = env.split("pid=").nth(1).unwrap().split(' ').next().unwrap();
    assert!(
        env.contains(&format!("stat={pid} {pid}")),
        "own process group and session: {env}"
    );
    assert!(
        env.contains("pwd=/tmp umask=0027 port=8080 home=/nowhere"),
        "{env}"
    );
    let status = wait_for(10.0, "raw output", || {
        let t = std::fs::read_to_string(d.dir.join("logs/raw.log")).ok()?;
        t.contains("SigCgt").then_some(t)
    });
    for key in ["SigBlk:", "SigIgn:"] {
        let line = status.lines().find(|l| l.contains(key)).unwrap();
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
    d.wait_log("raw: stopped", 10.0);
    assert_eq!(d.stop(10.0), 0);
}

#[test]
fn credential_failures_are_exec_failures() {
    // As root: setuid to nobody works, then chdir into /root (0700) fails.
    // Unprivileged: setgroups for another user fails with EPERM.
    let (expect, what) = if euid() == 0 {
        ("exec failed at chdir: Permission denied", "root")
    } else {
        (
            "exec failed at setgroups: Operation not permitted",
            "unprivileged",
        )
    };
    eprintln!("credential test running {what}");
    let services = "  - name: cred\n    binary: /bin/true\n    user: nobody\n    working_dir: /root\n    max_restarts: 1\n    backoff:\n      initial: 50ms\n";
    let mut d = Daemon::start("cred", "", services);
    let log = d.wait_log("cred: gave up after 2 consecutive failures", 10.0);
    assert_eq!(log.matches(expect).count(), 2, "{log}");
    assert!(!log.contains("cred: spawned"));
    assert_eq!(d.stop(10.0), 0);
}

#[test]
fn sigint_also_shuts_down_cleanly() {
    let services = svc("a", "exec sleep 600", "");
    let mut d = Daemon::start("sigint", "", &services);
    d.wait_log("a: spawned", 10.0);
    d.signal(2);
    let child = d.child.as_mut().unwrap();
    let st = wait_for(10.0, "exit", || child.try_wait().unwrap());
    d.child = None;
    assert_eq!(st.code(), Some(0));
    assert!(d.log_text().contains("SIGINT: shutting down"));
    assert!(!d.socket.exists());
}

#[test]
fn drop_in_services_run_alongside_the_main_file() {
    // Main file has one service; services.d beside it has another that
    // depends on it; a custom services_dir is covered by the loader tests.
    let services = svc("main", "exec sleep 600", "");
    let mut d = Daemon::start_with("dropin", "", &services, |dir| {
        std::fs::create_dir_all(dir.join("services.d")).unwrap();
        std::fs::write(
            dir.join("services.d/extra.yaml"),
            "name: extra\nbinary: /bin/sh\nargs: ['-c', 'exec sleep 600']\ndepends_on: [main]\n",
        )
        .unwrap();
    });
    let log = d.wait_log("extra: spawned", 10.0);
    assert!(log.find("main: spawned").unwrap() < log.find("extra: spawned").unwrap());
    assert!(log.contains("2 services"), "{log}");
    assert_eq!(d.stop(10.0), 0);
}

#[test]
fn stale_socket_from_a_crashed_daemon_is_replaced() {
    let services = svc("a", "exec sleep 600", "");
    let mut d = Daemon::start_with("stale", "", &services, |dir| {
        // A socket file nobody listens on, as a crashed daemon leaves it.
        let l = std::os::unix::net::UnixListener::bind(dir.join("s.sock")).unwrap();
        drop(l);
        assert!(dir.join("s.sock").exists());
    });
    d.wait_log("a: spawned", 10.0);
    // The new socket answers.
    assert!(std::os::unix::net::UnixStream::connect(&d.socket).is_ok());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode without socket_group");
    assert_eq!(d.stop(10.0), 0);
}

/// One vocabulary (issue 10): what the event stream, `status` and the
/// SIGUSR1 dump say about a service is the daemon log's own phrase, so
/// grepping the log for what `status` said finds it.
#[test]
fn the_log_events_status_and_dump_say_the_same_words() {
    let services = [
        svc(
            "doomed",
            "sleep 0.5; exit 7",
            "    max_restarts: 1\n    backoff:\n      initial: 50ms\n",
        ),
        svc("setup", "sleep 0.5; exit 4", "    type: oneshot\n"),
        svc(
            "app",
            "exec sleep 60",
            "    depends_on:\n      - name: setup\n        condition: completed\n",
        ),
        "  - name: ghost\n    binary: /nonexistent/ghost\n    restart: never\n".to_string(),
    ]
    .concat();
    let mut d = Daemon::start("words", "", &services);
    let mut ev = Events::follow(&d);
    wait_state(&d, "ghost", "failed", 10.0);
    // It fails again (exit 1), now with a subscriber to tell.
    ctl(&d, &["start", "ghost"]);
    let kinds = [
        ("doomed", "backoff"),
        ("doomed", "failed"),
        ("app", "waiting"),
        ("ghost", "exec-failed"),
    ];
    let mut told = Vec::new();
    for (name, kind) in kinds {
        let e = ev.wait(15.0, &format!("{name} {kind}"), |e| {
            e["service"] == name && e["event"] == kind && e["detail"] != ""
        });
        told.push((name, e["detail"].as_str().unwrap().to_string()));
    }
    wait_state(&d, "doomed", "failed", 10.0);
    let reasons: Vec<(&str, String)> = ["doomed", "app", "ghost"]
        .into_iter()
        .map(|name| {
            let r = row(&d, name)["reason"].as_str().unwrap().to_string();
            // `status` adds what came before: "(last: exit code 7)".
            (name, r.split(" (last: ").next().unwrap().to_string())
        })
        .collect();
    let dump = d.dump();
    let log = d.log_text();
    let has = |text: &str, prefix: &str, what: &str| {
        assert!(
            text.lines().any(|l| l.contains(prefix) && l.contains(what)),
            "'{prefix}' line with '{what}' missing in:\n{text}"
        )
    };
    for (name, what) in told.iter().chain(&reasons) {
        has(&log, &format!(" {name}: "), what);
    }
    for (name, what) in &reasons {
        has(&dump, &format!("status {name}: "), what);
    }
    assert_eq!(d.stop(10.0), 0);
}

/// The daemon's "startup heap: N bytes allocated, M kept" line: (N, M).
fn startup_heap_line(d: &mut Daemon) -> (u64, u64) {
    let log = d.wait_log("startup heap: ", 10.0);
    let at = log.find("startup heap: ").unwrap() + "startup heap: ".len();
    let line = log[at..].lines().next().unwrap();
    let words: Vec<&str> = line.split(' ').collect();
    let kept = words[3]
        .parse()
        .unwrap_or_else(|_| panic!("no kept bytes in {line:?}"));
    (words[0].parse().unwrap(), kept)
}

/// The daemon's startup heap, allocated bytes.
fn startup_heap(d: &mut Daemon) -> u64 {
    startup_heap_line(d).0
}

/// The daemon never parses YAML, not even at startup: the `__compile`
/// child does, so the parser's heap never enters the daemon. A config
/// with 2 MiB of YAML comments compiles to the same services as one
/// without; a daemon that read and parsed it itself would allocate at
/// least the 2 MiB of text.
#[test]
fn startup_heap_never_holds_the_yaml_parser() {
    let services = [
        svc("a", "exec sleep 600", ""),
        svc("b", "exec sleep 600", ""),
    ]
    .concat();
    let line = format!("# {}\n", "x".repeat(98));
    let comments = line.repeat(2 * 1024 * 1024 / line.len());
    let mut plain = Daemon::start("heap-plain", "", &services);
    let mut big = Daemon::start("heap-big", &comments, &services);
    assert!(std::fs::metadata(&big.config).unwrap().len() > 2 * 1024 * 1024);
    let (small, large) = (startup_heap(&mut plain), startup_heap(&mut big));
    assert!(
        large < small + 256 * 1024,
        "2 MiB of comments cost the daemon {} bytes of heap ({small} -> {large})",
        large.saturating_sub(small)
    );
    for d in [plain, big] {
        finish(d);
    }
}

/// The validator's warnings are printed at startup, then let go: the
/// daemon keeps no copy of them (they are a line per service with, for
/// example, a zero backoff: 130 kB at 1,000 services), neither in its
/// globals nor in the config reload compares with.
#[test]
fn startup_keeps_no_copy_of_the_warnings() {
    let services = |extra: &str| -> String {
        (0..300)
            .map(|i| svc(&format!("s{i}"), "exec sleep 600", extra))
            .collect()
    };
    let zero = "    backoff: {initial: 0s, max: 1s}\n";
    let mut quiet = Daemon::start(
        "kept-quiet",
        "",
        &services("    backoff: {initial: 1s, max: 1s}\n"),
    );
    let mut noisy = Daemon::start("kept-noisy", "", &services(zero));
    let (q, n) = (
        startup_heap_line(&mut quiet).1,
        startup_heap_line(&mut noisy).1,
    );
    assert!(
        n < q + 4096,
        "300 warnings cost the daemon {} bytes of kept heap ({q} -> {n})",
        n.saturating_sub(q)
    );
    for d in [quiet, noisy] {
        finish(d);
    }
}

/// Startup prints the validator's warnings, as `validate` words them, and
/// runs; a broken config gives validate's file:line:col errors and exit 1
/// (both through the compile child's output, passed through unchanged).
#[test]
fn startup_passes_the_validators_warnings_and_errors_through() {
    let services = "  - name: a\n    binary: /nonexistent/coffey-bin\n";
    let mut d = Daemon::start("warn-start", "", services);
    let want = {
        let out = std::process::Command::new(BIN)
            .args(["validate", "-c"])
            .arg(&d.config)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let w: Vec<String> = text
            .lines()
            .filter(|l| l.contains(": warning: "))
            .map(str::to_owned)
            .collect();
        assert_eq!(w.len(), 1, "{text}");
        w
    };
    let err = std::fs::read_to_string(d.dir.join("stderr")).unwrap();
    let got: Vec<&str> = err.lines().filter(|l| l.contains(": warning: ")).collect();
    assert_eq!(got, want, "{err}");
    assert_eq!(d.stop(10.0), 0);

    let bad = d.dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "services:\n  - name: a\n    binary: /bin/sh\n    restart: sometimes\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .arg("-c")
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let first = err.lines().next().unwrap();
    assert!(
        first.starts_with(&format!("{}:4:", bad.display())) && first.contains(": error: "),
        "{err}"
    );
    assert!(
        err.ends_with(&format!(
            "coffeyd: {}: config has errors; not starting\n",
            bad.display()
        )),
        "{err}"
    );
}
