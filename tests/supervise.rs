//! The real daemon: exits routed in every state, leftovers of a run stopped
//! before the next, dependency rules of start/stop/restart, and the
//! shutdown deadline. Every wait has a deadline.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![allow(clippy::disallowed_methods, clippy::disallowed_macros)]

mod common;
use common::*;
use std::time::{Duration, Instant};

/// Pids written one per line to `file`.
fn pids_in(file: &std::path::Path) -> Vec<i32> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn exit_while_starting_restarts_and_shutdown_is_prompt() {
    // The readiness check never passes; the process dies while `starting`.
    // It used to be "reaped orphan", stuck in `starting` with a dead pid,
    // and SIGTERM then waited out the whole shutdown_timeout.
    let port = free_port();
    let services = svc(
        "crashy",
        "echo $$ >> $DIR/runs; sleep 0.3; exit 3",
        &format!(
            "    backoff:\n      initial: 200ms\n    healthcheck:\n      readiness:\n        type: tcp\n        address: 127.0.0.1:{port}\n        interval: 100ms\n        timeout: 100ms\n"
        ),
    );
    let mut d = Daemon::start("startcrash", "  shutdown_timeout: 20s\n", &services);
    let log = d.wait_count("crashy: spawned", 3, 10.0);
    assert!(log.contains("exited with exit code 3"), "{log}");
    assert!(
        log.contains("crashy: restarting in 200ms (failure 1)"),
        "{log}"
    );
    assert!(!log.contains("reaped orphan"), "{log}");
    // "spawned" is logged before the child runs its first line: wait for
    // the third run's pid, do not read it at once.
    let runs = d.dir.join("runs");
    wait_for(5.0, "three runs recorded", || {
        (pids_in(&runs).len() >= 3).then_some(())
    });
    let t0 = Instant::now();
    assert_eq!(d.stop(25.0), 0);
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    let log = d.log_text();
    assert!(log.contains("shutdown complete"), "{log}");
    assert!(!log.contains("shutdown timeout"), "{log}");
    assert!(log.contains("heap allocations after startup: 0"), "{log}");
}

#[test]
fn leftovers_are_stopped_before_a_respawn_and_reported_once() {
    // A program that "daemonizes": the main process exits 0 and leaves a
    // member of its group behind. Each run's leftover must be gone before
    // the next run starts, and the log says why, once.
    let services = svc(
        "forky",
        "sleep 100 & echo $! >> $DIR/bg; exit 0",
        "    backoff:\n      initial: 300ms\n      multiplier: 1.0\n    stop_timeout: 5s\n",
    );
    let mut d = Daemon::start("leftover", "", &services);
    let bg = d.dir.join("bg");
    // Sample while it cycles: never two leftovers alive at once.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut status_seen = None;
    loop {
        let pids = pids_in(&bg);
        let live: Vec<i32> = pids.iter().copied().filter(|&p| alive(p)).collect();
        assert!(live.len() <= 1, "two copies at once: {live:?} of {pids:?}");
        if status_seen.is_none() {
            let s = row(&d, "forky");
            let r = s["reason"].as_str().unwrap_or("").to_string();
            if r.contains("left in its group") {
                status_seen = Some((s["state"].clone(), r));
            }
        }
        if pids.len() >= 4 && status_seen.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "only {pids:?}\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let (state, reason) = status_seen.unwrap();
    assert!(
        reason.contains(
            "main process exited, 1 process left in its group: does it fork into the \
             background? run it in the foreground"
        ),
        "{state} {reason}"
    );
    let log = d.log_text();
    let told = log
        .lines()
        .filter(|l| l.contains("left in its group"))
        .count();
    assert_eq!(told, 1, "said once, not per restart:\n{log}");
    // The leftover got the stop signal (not SIGKILL) before each respawn.
    let first = log.find("forky: stopping pid").unwrap();
    let second_spawn = log.match_indices("forky: spawned").nth(1).unwrap().0;
    assert!(first < second_spawn, "{log}");
    assert!(!log.contains("stop timeout"), "{log}");
    assert_eq!(d.stop(10.0), 0);
    for p in pids_in(&bg) {
        assert!(!alive(p), "leftover {p} outlived the shutdown");
    }
    assert!(d.log_text().contains("heap allocations after startup: 0"));
}

#[test]
fn a_leftover_that_ignores_the_stop_signal_is_killed_before_the_respawn() {
    let services = svc(
        "stubborn",
        // The main exits only once the leftover ignores TERM: under load a
        // stop signal could otherwise beat the `trap`.
        "rm -f $DIR/trapped; (trap \"\" TERM; : > $DIR/trapped; exec sleep 100) & echo $! >> $DIR/bg; while [ ! -e $DIR/trapped ]; do sleep 0.01; done; exit 1",
        "    backoff:\n      initial: 100ms\n    stop_timeout: 400ms\n",
    );
    let mut d = Daemon::start("leftkill", "", &services);
    let log = d.wait_count("stubborn: spawned", 2, 10.0);
    let killed = log
        .find("stubborn: stop timeout; sent SIGKILL")
        .unwrap_or_else(|| panic!("{log}"));
    let respawn = log.match_indices("stubborn: spawned").nth(1).unwrap().0;
    assert!(killed < respawn, "SIGKILL before the second copy:\n{log}");
    let first = pids_in(&d.dir.join("bg"))[0];
    assert!(!alive(first), "first leftover {first} still runs");
    assert_eq!(d.stop(10.0), 0);
}

#[test]
fn restart_stop_and_start_follow_the_dependency_rules() {
    let services = [
        svc("db", "exec sleep 100", ""),
        svc(
            "migrate",
            "echo run >> $DIR/migrations",
            "    type: oneshot\n    depends_on: [db]\n",
        ),
        svc(
            "api",
            "exec sleep 100",
            "    depends_on:\n      - db\n      - name: migrate\n        condition: completed\n",
        ),
        svc("worker", "exec sleep 100", "    depends_on: [api]\n"),
        svc("cron", "exec sleep 100", "    depends_on: [db]\n"),
    ]
    .concat();
    let mut d = Daemon::start("deprules", "", &services);
    d.wait_log("worker: spawned", 10.0);
    d.wait_log("cron: spawned", 10.0);
    let mfile = d.dir.join("migrations");
    let runs = || {
        std::fs::read_to_string(&mfile)
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert_eq!(runs(), 1);

    // restart api: the completed migration is not re-run.
    let o = ctl(&d, &["restart", "api"]);
    assert_eq!(o.code, 0, "{o:?}");
    d.wait_count("api: spawned", 2, 10.0);
    assert_eq!(runs(), 1, "{}", d.log_text());
    assert_eq!(d.count("migrate: spawned"), 1);

    // stop cron by name, then stop db: api and worker go down with it.
    assert_eq!(ctl(&d, &["stop", "cron"]).code, 0);
    assert_eq!(ctl(&d, &["stop", "db"]).code, 0);
    for n in ["db", "api", "worker", "cron"] {
        assert_eq!(row(&d, n)["state"], "stopped", "{n}");
    }
    // start db: brings back api and worker, not cron.
    let o = ctl(&d, &["start", "db"]);
    assert_eq!(o.code, 0, "{o:?}");
    d.wait_count("worker: spawned", 2, 10.0);
    assert_eq!(row(&d, "api")["state"], "running");
    assert_eq!(row(&d, "worker")["state"], "running");
    assert_eq!(row(&d, "cron")["state"], "stopped");
    assert_eq!(d.count("cron: spawned"), 1);
    assert_eq!(runs(), 1, "the migration stays completed");
    assert_eq!(d.stop(10.0), 0);
}

#[test]
fn shutdown_deadline_signals_the_unsignalled_then_kills_and_reaps() {
    // app depends on web and ignores TERM, so web waits for it; at the
    // deadline web must still have had its TERM before the SIGKILL, and
    // the log names what is killed.
    let services = [
        svc(
            "web",
            "trap \"echo term >> $DIR/web\" TERM; while :; do sleep 0.05; done",
            "",
        ),
        svc(
            "app",
            "trap \"\" TERM; while :; do sleep 0.05; done",
            "    depends_on: [web]\n    stop_timeout: 60s\n",
        ),
    ]
    .concat();
    let mut d = Daemon::start("deadline", "  shutdown_timeout: 2s\n", &services);
    d.wait_log("app: spawned", 10.0);
    let web = row(&d, "web")["pid"].as_i64().unwrap();
    let app = row(&d, "app")["pid"].as_i64().unwrap();
    let t0 = Instant::now();
    assert_eq!(d.stop(15.0), 0);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(6),
        "{took:?}"
    );
    let log = d.log_text();
    assert_eq!(
        std::fs::read_to_string(d.dir.join("web")).unwrap_or_default(),
        "term\n",
        "web got its TERM before the SIGKILL\n{log}"
    );
    let line = format!("shutdown timeout: killing web (pid {web}), app (pid {app})");
    assert!(log.contains(&line), "no {line:?} in\n{log}");
    // Reaped before exiting: both exits are in the log before the end.
    let end = log.find("shutdown complete").unwrap();
    for (n, p) in [("web", web), ("app", app)] {
        let e = log
            .find(&format!("{n}: pid {p} exited with signal SIGKILL"))
            .unwrap_or_else(|| panic!("{n} exit missing\n{log}"));
        assert!(e < end, "{log}");
    }
    assert!(
        log.contains(&format!("app: pid {app} exited with signal SIGKILL")),
        "{log}"
    );
    assert!(!alive(web as i32) && !alive(app as i32));
}

/// `degraded_after: 3`: a service crashing in a row is told degraded at
/// its 3rd and 6th crash (log line and event), and `status` says so.
#[test]
fn a_service_crashing_degraded_after_times_in_a_row_is_told_at_each_multiple() {
    let services = svc(
        "flaky",
        "exit 1",
        "    degraded_after: 3\n    backoff: {initial: 20ms, max: 20ms}\n",
    );
    let mut d = Daemon::start("degraded", "", &services);
    let mut ev = Follower::spawn(&d, &["events"]);
    d.wait_log("flaky: degraded: 3 crashes in a row", 30.0);
    d.wait_log("flaky: degraded: 6 crashes in a row", 30.0);
    let log = read_log(&d.log);
    assert!(!log.contains("degraded: 4 crashes"), "{log}");
    ev.wait_line(30.0, "a degraded event", |l| {
        l.contains("degraded") && l.contains("crashes in a row")
    });
    let st = ctl(&d, &["status", "flaky"]);
    assert!(st.stdout.contains("degraded: "), "{st:?}");
    assert_no_alloc(&mut d);
    assert_eq!(d.stop(20.0), 0);
}
