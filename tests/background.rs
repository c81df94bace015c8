//! Programs that background themselves by leaving their process group
//! (issue 8, point 9): the main process forks, the child calls setsid(2)
//! and the parent exits, as nginx does without `daemon off`. coffeyd, the
//! subreaper, inherits the child; it must say so (status and once in the
//! log), stop it before each respawn so two copies never run, and leave
//! none of them behind at shutdown. Every wait has a deadline.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![allow(clippy::disallowed_methods, clippy::disallowed_macros)]

mod common;
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// `status -j` of one service.
fn status_of(d: &Daemon, name: &str) -> serde_json::Value {
    let o = ctl(d, &["-j", "status"]);
    assert_eq!(o.code, 0, "{o:?}");
    let v = json(&o.stdout);
    v.as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {v}"))
        .clone()
}

/// Pids written one per line to `file`.
fn pids_in(file: &Path) -> Vec<i32> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Every live process whose command line starts with `prefix`, from
/// /proc.
fn procs_titled(prefix: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let c = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
        if c.starts_with(prefix.as_bytes()) && alive(p) {
            out.push(p);
        }
    }
    out
}

/// The parent pid of `pid` (0 if gone).
fn ppid_of(pid: i32) -> i32 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit(')').next().unwrap_or("");
    after
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The log lines that carry the diagnosis.
fn told(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("run it in the foreground"))
        .count()
}

const FOREGROUND: &str = "does it fork into the background? run it in the foreground";

#[test]
fn a_setsid_daemonizer_is_reported_stopped_before_each_respawn_and_at_shutdown() {
    // The main forks `setsid sh`, waits until the child is in its own
    // session (so it has surely left the group) and has become `sleep
    // 100`, appends its pid to `bg` and exits 0.
    let services = svc(
        "daemonish",
        "rm -f $DIR/cur; setsid sh -c \"echo \\$\\$ > $DIR/cur; exec sleep 100\" & \
         while [ ! -s $DIR/cur ]; do sleep 0.01; done; p=$(cat $DIR/cur); \
         while [ \"$(cat /proc/$p/comm)\" != sleep ]; do sleep 0.01; done; \
         echo $p >> $DIR/bg; exit 0",
        "    backoff:\n      initial: 300ms\n      multiplier: 1.0\n    stop_timeout: 5s\n",
    );
    let mut d = Daemon::start("setsid", "", &services);
    let bg = d.dir.join("bg");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut reason = None;
    loop {
        let pids = pids_in(&bg);
        let live: Vec<i32> = pids.iter().copied().filter(|&p| alive(p)).collect();
        assert!(
            live.len() <= 1,
            "two copies at once: {live:?} of {pids:?}\n{}",
            d.log_text()
        );
        if reason.is_none() {
            let r = status_of(&d, "daemonish")["reason"]
                .as_str()
                .unwrap_or("")
                .to_string();
            if r.contains("outside its group") {
                reason = Some(r);
            }
        }
        if pids.len() >= 4 && reason.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {pids:?}, reason {reason:?}\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let reason = reason.unwrap();
    let first = pids_in(&bg)[0];
    assert!(
        reason.contains("main process exited, 1 process left outside its group (pid ")
            && reason.contains(", sleep)")
            && reason.contains(FOREGROUND),
        "{reason}"
    );
    let log = d.log_text();
    assert_eq!(told(&log), 1, "said once, not per restart:\n{log}");
    assert!(
        log.contains(&format!(
            "left outside its group (pid {first}, sleep): {FOREGROUND}"
        )),
        "{log}"
    );
    // Stopped with the stop signal, before the next spawn.
    assert!(!log.contains("stop timeout"), "{log}");
    let dump = d.dump();
    assert!(
        dump.contains("status: heap allocations after startup: 0;"),
        "{dump}"
    );
    assert_eq!(d.stop(15.0), 0, "{}", d.log_text());
    let pids = pids_in(&bg);
    for p in &pids {
        assert!(!alive(*p), "escapee {p} outlived the shutdown: {pids:?}");
    }
    assert!(d.log_text().contains("heap allocations after startup: 0"));
}

#[test]
fn a_double_forking_python_daemon_is_stopped_before_each_respawn() {
    // The classic daemon(3) dance: fork, setsid, fork again, the middle
    // process exits; the grandchild (pid in `bg`) is in the middle one's
    // session and group, neither of which is the service's.
    let py = "import os,sys,time\n\
              if os.fork(): time.sleep(0.2); sys.exit(0)\n\
              os.setsid()\n\
              if os.fork(): os._exit(0)\n\
              open(sys.argv[1],'a').write(str(os.getpid())+'\\n')\n\
              time.sleep(100)\n";
    let services = format!(
        "  - name: pyd\n    binary: /usr/bin/python3\n    args: ['-c', {py:?}, '$DIR/bg']\n    backoff:\n      initial: 300ms\n      multiplier: 1.0\n    stop_timeout: 5s\n"
    );
    let mut d = Daemon::start("pydaemon", "", &services);
    let bg = d.dir.join("bg");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pids = pids_in(&bg);
        let live: Vec<i32> = pids.iter().copied().filter(|&p| alive(p)).collect();
        assert!(
            live.len() <= 1,
            "two copies at once: {live:?} of {pids:?}\n{}",
            d.log_text()
        );
        if pids.len() >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "only {pids:?}\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = d.log_text();
    assert_eq!(told(&log), 1, "{log}");
    assert!(log.contains("outside its group (pid "), "{log}");
    assert_eq!(d.stop(15.0), 0, "{}", d.log_text());
    for p in pids_in(&bg) {
        assert!(!alive(p), "daemon {p} outlived the shutdown");
    }
    assert!(d.log_text().contains("heap allocations after startup: 0"));
}

#[test]
fn nginx_without_daemon_off_is_reported_and_never_runs_twice() {
    let nginx = "/usr/sbin/nginx";
    assert!(
        Path::new(nginx).exists(),
        "{nginx} is missing: install the Debian package `nginx` (.ci/run does)"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let services = format!(
        "  - name: web\n    binary: {nginx}\n    args: [-c, $DIR/nginx.conf, -p, $DIR, -e, stderr]\n    backoff:\n      initial: 300ms\n      multiplier: 1.0\n    stop_timeout: 5s\n"
    );
    let mut d = Daemon::start_with("nginxbg", "", &services, |dir| {
        // No `daemon off;`: nginx forks, the child calls setsid() and
        // becomes the master, the process coffeyd started exits 0.
        let conf = format!(
            "worker_processes 2;\npid {0}/nginx.pid;\nerror_log stderr notice;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {0}/body;\n  proxy_temp_path {0}/proxy;\n  fastcgi_temp_path {0}/fcgi;\n  uwsgi_temp_path {0}/uwsgi;\n  scgi_temp_path {0}/scgi;\n  server {{\n    listen 127.0.0.1:{port};\n  }}\n}}\n",
            dir.display()
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    });
    let me = d.pid();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut reason = None;
    let mut masters = std::collections::BTreeSet::new();
    loop {
        // nginx masters (they retitle themselves; the process coffeyd
        // started does not) adopted by this daemon: never two at once.
        let mine: Vec<i32> = procs_titled("nginx: master process")
            .into_iter()
            .filter(|&p| ppid_of(p) == me)
            .collect();
        assert!(mine.len() <= 1, "two masters: {mine:?}\n{}", d.log_text());
        masters.extend(mine);
        if reason.is_none() {
            let r = status_of(&d, "web")["reason"]
                .as_str()
                .unwrap_or("")
                .to_string();
            if r.contains("outside its group") {
                reason = Some(r);
            }
        }
        // Three runs' escapees stopped before their respawn. (How many of
        // them lived long enough to retitle themselves "master" depends on
        // how fast coffeyd stops them: not a count to wait for.)
        let stopped = d.log_text().matches("left over from its last run").count();
        if stopped >= 3 && reason.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "masters {masters:?}, reason {reason:?}\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let reason = reason.unwrap();
    assert!(
        reason.contains("main process exited, 1 process left outside its group (pid ")
            && reason.contains(", nginx)")
            && reason.contains(FOREGROUND),
        "{reason}"
    );
    let log = d.log_text();
    assert_eq!(told(&log), 1, "{log}");
    // The old master was gone before the new one bound the port.
    assert!(!log.contains("Address already in use"), "{log}");
    let logs = ctl(&d, &["logs", "web", "--no-follow"]).stdout;
    assert!(!logs.contains("Address already in use"), "{logs}");
    let dump = d.dump();
    assert!(
        dump.contains("status: heap allocations after startup: 0;"),
        "{dump}"
    );
    assert_eq!(d.stop(30.0), 0, "{}", d.log_text());
    let left: Vec<i32> = masters.iter().copied().filter(|&p| alive(p)).collect();
    assert!(left.is_empty(), "left behind: {left:?}\n{}", d.log_text());
    assert!(d.log_text().contains("heap allocations after startup: 0"));
}

#[test]
fn a_crash_looping_service_leaks_no_escapee_of_any_depth_over_its_restarts() {
    // Each run leaves an escapee and a chain of two (the second is not
    // coffeyd's child until the first dies), all `setsid`, then exits 1.
    // Each appends its pid to `bg`.
    let script = "D=${0%/*}\n\
        if [ \"$1\" = esc ]; then\n\
          if [ \"$2\" -gt 1 ]; then setsid sh \"$0\" esc $(($2 - 1)) & fi\n\
          echo $$ >> \"$D/bg\"; exec sleep 1000\n\
        fi\n\
        n0=$(cat \"$D/bg\" 2>/dev/null | wc -l)\n\
        setsid sh \"$0\" esc 1 &\n\
        setsid sh \"$0\" esc 2 &\n\
        while [ \"$(cat \"$D/bg\" | wc -l)\" -lt $((n0 + 3)) ]; do sleep 0.01; done\n\
        exit 1\n";
    let services = "  - name: crashy\n    binary: /bin/sh\n    args: ['$DIR/run.sh']\n    stop_timeout: 2s\n    backoff:\n      initial: 50ms\n      multiplier: 1.0\n";
    let mut d = Daemon::start_with("crashesc", "", services, |dir| {
        std::fs::write(dir.join("run.sh"), script).unwrap();
    });
    let bg = d.dir.join("bg");
    const RUNS: usize = 6;
    let deadline = Instant::now() + Duration::from_secs(30);
    while pids_in(&bg).len() < 3 * RUNS {
        assert!(Instant::now() < deadline, "{}", d.log_text());
        std::thread::sleep(Duration::from_millis(10));
    }
    // Each run's processes go before the next run starts: only the last
    // two runs' can be alive a moment later.
    let pids = pids_in(&bg);
    let old = &pids[..pids.len() - 6];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let live: Vec<i32> = old.iter().copied().filter(|&p| alive(p)).collect();
        if live.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            for &p in &pids_in(&bg) {
                if alive(p) {
                    signal(p, 9);
                }
            }
            panic!("leaked {live:?} of {pids:?}\n{}", d.log_text());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let log = d.log_text();
    assert!(!log.contains("may belong to"), "{log}");
    let dump = d.dump();
    assert!(
        dump.contains("status: heap allocations after startup: 0;"),
        "{dump}"
    );
    assert_eq!(d.stop(30.0), 0, "{}", d.log_text());
    let left: Vec<i32> = pids_in(&bg).into_iter().filter(|&p| exists(p)).collect();
    assert!(left.is_empty(), "outlived the daemon: {left:?}");
}

#[test]
fn a_setsid_escapee_is_found_among_200_idle_services_and_a_running_check() {
    // Every reap lists coffeyd's children; known ones (main processes,
    // exec checks) are passed over without reading their /proc stat. The
    // escapee must still be found, and the check, which started after the
    // daemonizer's run, must not be taken for one of its processes.
    let mut services = String::new();
    for i in 0..200 {
        services += &format!("  - {{name: idle{i}, binary: /bin/sleep, args: ['3600']}}\n");
    }
    services += "  - name: checked\n    binary: /bin/sleep\n    args: ['3600']\n    healthcheck:\n      liveness:\n        type: exec\n        command: \"touch $DIR/checking; sleep 0.3\"\n        interval: 100ms\n        timeout: 5s\n";
    services += &svc(
        "daemonish",
        "while [ ! -e $DIR/checking ]; do sleep 0.01; done; rm -f $DIR/cur; setsid sh -c \"echo \\$\\$ > $DIR/cur; exec sleep 100\" & \
         while [ ! -s $DIR/cur ]; do sleep 0.01; done; p=$(cat $DIR/cur); \
         while [ \"$(cat /proc/$p/comm)\" != sleep ]; do sleep 0.01; done; \
         echo $p >> $DIR/bg; exit 0",
        "    backoff:\n      initial: 300ms\n      multiplier: 1.0\n    stop_timeout: 5s\n",
    );
    let mut d = Daemon::start("escmany", "", &services);
    let bg = d.dir.join("bg");
    let deadline = Instant::now() + Duration::from_secs(30);
    while pids_in(&bg).len() < 6 {
        let live: Vec<i32> = pids_in(&bg).into_iter().filter(|&p| alive(p)).collect();
        assert!(live.len() <= 1, "two copies at once: {live:?}");
        assert!(Instant::now() < deadline, "{}", d.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = d.log_text();
    let first = pids_in(&bg)[0];
    assert!(
        log.contains(&format!(
            "main process exited, 1 process left outside its group (pid {first}, sleep)"
        )),
        "{log}"
    );
    assert!(!log.contains("may belong to"), "{log}");
    assert!(!log.contains("processes left outside"), "{log}");
    // Taken for an escapee, the check would be stopped with daemonish's.
    let check = log.lines().filter(|l| l.contains("checked: liveness"));
    assert!(check.clone().count() >= 1, "{log}");
    assert!(check.clone().all(|l| l.ends_with("healthy")), "{log}");
    let o = ctl(&d, &["-j", "status"]);
    let rows = json(&o.stdout);
    for s in rows.as_array().unwrap() {
        let name = s["name"].as_str().unwrap();
        let reason = s["reason"].as_str().unwrap_or("");
        if name != "daemonish" {
            assert!(!reason.contains("outside"), "{name}: {reason}");
        }
    }
    let dump = d.dump();
    assert!(
        dump.contains("status: heap allocations after startup: 0;"),
        "{dump}"
    );
    assert_eq!(d.stop(30.0), 0, "{}", d.log_text());
    for p in pids_in(&bg) {
        assert!(!alive(p), "escapee {p} outlived the shutdown");
    }
}
