//! `rlimits:` (issue 9, point 5): applied with setrlimit(2) in the child
//! before exec, so the service sees them (`ulimit`, /proc/self/limits),
//! and a limit the kernel refuses fails the spawn with its stage and
//! errno. Real processes; every wait has a deadline.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![allow(clippy::disallowed_methods, clippy::disallowed_macros)]

mod common;
use common::*;

/// The (soft, hard) columns of a `/proc/PID/limits` line.
fn limits_row(limits: &str, title: &str) -> (String, String) {
    let line = limits
        .lines()
        .find(|l| l.starts_with(title))
        .unwrap_or_else(|| panic!("no {title:?} in\n{limits}"));
    let mut cols = line[title.len()..].split_whitespace();
    (
        cols.next().unwrap().to_string(),
        cols.next().unwrap().to_string(),
    )
}

#[test]
fn a_service_sees_its_rlimits() {
    let services = svc(
        "lim",
        "echo n=$(ulimit -Sn):$(ulimit -Hn) c=$(ulimit -c) > $DIR/ulimit.txt; cat /proc/self/limits > $DIR/limits.txt; exec sleep 600",
        "    rlimits:\n      nofile: 512:1024\n      core: 0\n      nproc: {soft: 300, hard: 400}\n      stack: 4MiB\n      cpu: unlimited\n",
    );
    let d = Daemon::start("rlimits", "", &services);
    let ulimit = d.dir.join("ulimit.txt");
    let text = wait_for(10.0, "ulimit.txt", || {
        std::fs::read_to_string(&ulimit)
            .ok()
            .filter(|t| t.ends_with('\n'))
    });
    assert_eq!(text.trim(), "n=512:1024 c=0", "{}", d.log_text());
    let limits = wait_for(10.0, "limits.txt", || {
        std::fs::read_to_string(d.dir.join("limits.txt"))
            .ok()
            .filter(|t| t.contains("Max realtime timeout"))
    });
    let row = |t: &str| limits_row(&limits, t);
    let s = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(row("Max open files"), s("512", "1024"));
    assert_eq!(row("Max core file size"), s("0", "0"));
    assert_eq!(row("Max processes"), s("300", "400"));
    assert_eq!(row("Max stack size"), s("4194304", "4194304"));
    assert_eq!(row("Max cpu time"), s("unlimited", "unlimited"));
    // The daemon's own limits are untouched.
    let own = std::fs::read_to_string(format!("/proc/{}/limits", d.pid())).unwrap();
    assert_ne!(limits_row(&own, "Max open files"), s("512", "1024"));
    // A reload that changes them restarts the service with the new ones.
    std::fs::remove_file(&ulimit).unwrap();
    d.rewrite("", &services.replace("512:1024", "256:1024"));
    ok(ctl(&d, &["reload"]));
    let text = wait_for(10.0, "ulimit.txt after the reload", || {
        std::fs::read_to_string(&ulimit)
            .ok()
            .filter(|t| t.ends_with('\n'))
    });
    assert_eq!(text.trim(), "n=256:1024 c=0", "{}", d.log_text());
    assert!(d.log_text().contains("rlimits changed"), "{}", d.log_text());
    finish(d);
}

#[test]
fn a_limit_the_kernel_refuses_fails_the_spawn_with_setrlimit_and_its_errno() {
    // No one may raise RLIMIT_NOFILE above fs.nr_open, not even root.
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let services = svc(
        "big",
        "exec sleep 600",
        &format!(
            "    rlimits:\n      nofile: {}\n    max_restarts: 1\n    backoff:\n      initial: 50ms\n",
            nr_open + 1
        ),
    );
    let mut d = Daemon::start("rlimitbig", "", &services);
    d.wait_log(
        "big: exec failed at setrlimit: Operation not permitted",
        10.0,
    );
    // A fact about the target: that service fails, the daemon runs on.
    wait_state(&d, "big", "failed", 10.0);
    finish(d);
}
