//! Logger services (`log: {to: NAME}`) with real programs: a shell read
//! loop, s6-log and runit's svlogd get a producer's lines on their stdin,
//! the ring keeps them too, and the pipe between the two outlives
//! restarts of either and reloads. A stopped logger under a flood costs
//! the producer lines (counted), never the daemon's loop.
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
use std::path::Path;

const SOON: f64 = 20.0;

/// The shell logger of docs/CONFIG.md: each line, prefixed, to `file`.
fn sh_logger(name: &str, file: &str) -> String {
    svc(
        name,
        &format!("while IFS= read -r l; do echo \"got: $l\" >> {file}; done"),
        "",
    )
}

/// A logger that never loses a line it has read: SIGTERM is blocked and
/// taken only between reads, once every complete line read is written
/// (a shell's `read` killed half-way through a line would lose it).
const PY_LOGGER: &str = r#"
import os, select, signal, sys
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
out = open(sys.argv[1], "ab", buffering=0)
part = b""
while True:
    r, _, _ = select.select([0], [], [], 0.02)
    if r:
        data = os.read(0, 65536)
        if not data:
            break
        part += data
        *lines, part = part.split(b"\n")
        if lines:
            out.write(b"".join(b"got: " + l + b"\n" for l in lines))
    if not part and signal.SIGTERM in signal.sigpending():
        break
"#;

fn py_logger(name: &str, file: &str) -> String {
    format!(
        "  - name: {name}\n    binary: /usr/bin/python3\n    args: ['-c', {PY_LOGGER:?}, '{file}']\n"
    )
}

/// Numbered lines `PREFIX N` every few ms, forever, logging to `to`.
fn counter(name: &str, to: &str) -> String {
    svc(
        name,
        "i=0; while :; do i=$((i+1)); echo \"n $i\"; sleep 0.005; done",
        &format!("    log: {{to: {to}}}\n"),
    )
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The numbers of the `got: n N` lines of `text`, in order.
fn numbers(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.strip_prefix("got: n "))
        .map(|n| n.parse().unwrap())
        .collect()
}

/// Waits until `path` has at least `n` numbered lines; returns them.
fn wait_numbers(path: &Path, n: usize) -> Vec<u64> {
    wait_for(SOON, &format!("{n} lines in {}", path.display()), || {
        let v = numbers(&read(path));
        (v.len() >= n).then_some(v)
    })
}

#[track_caller]
fn assert_contiguous(v: &[u64]) {
    for w in v.windows(2) {
        assert_eq!(w[1], w[0] + 1, "a line was lost or repeated: {v:?}");
    }
}

/// The pid of `name` once it runs (a service may not be spawned yet
/// when the daemon has just started).
fn pid_of(d: &Daemon, name: &str) -> i64 {
    let r = wait_row(
        d,
        &format!("{name} running with a pid"),
        SOON,
        || row(d, name),
        |r| r["state"] == "running" && r["pid"].as_i64().is_some(),
    );
    r["pid"].as_i64().unwrap()
}

/// The pipe a process has as its stdin (`pipe:[INODE]`).
fn stdin_of(pid: i64) -> String {
    std::fs::read_link(format!("/proc/{pid}/fd/0"))
        .unwrap()
        .display()
        .to_string()
}

/// How many of the daemon's descriptors are `link` (`pipe:[INODE]`).
fn daemon_holds(d: &Daemon, link: &str) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", d.pid()))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.display().to_string() == link)
        .count()
}

#[test]
fn a_shell_logger_gets_stdout_and_stderr_and_the_ring_keeps_them() {
    let services = format!(
        "{}{}",
        svc(
            "producer",
            "for i in $(seq 1 100); do echo \"n $i\"; done; echo oops >&2; exec sleep 600",
            "    log: {to: logger}\n",
        ),
        sh_logger("logger", "$DIR/got"),
    );
    let d = Daemon::start("logger-sh", "", &services);
    let file = d.dir.join("got");
    wait_for(SOON, "all lines in the logger's file", || {
        read(&file).contains("got: oops\n").then_some(())
    });
    let v = wait_numbers(&file, 100);
    assert_eq!(v, (1..=100).collect::<Vec<_>>());
    // The logger's stdin is a pipe, the producer's is /dev/null.
    assert!(stdin_of(pid_of(&d, "logger")).starts_with("pipe:"));
    assert_eq!(stdin_of(pid_of(&d, "producer")), "/dev/null");
    // The ring has them as before.
    let logs = ok(ctl(&d, &["logs", "producer", "--no-follow", "-n", "1000"])).stdout;
    for i in [1, 50, 100] {
        assert!(logs.contains(&format!("n {i}\n")), "{logs}");
    }
    assert!(logs.contains("oops"), "{logs}");
    let det = detail(&d, "producer");
    assert!(
        det["details"]["log"]
            .as_str()
            .unwrap()
            .contains("to its logger, 0 dropped"),
        "{det}"
    );
    finish(d);
}

#[test]
fn s6_log_and_svlogd_as_loggers() {
    let s6 = need("/usr/bin/s6-log", "s6");
    let sv = need("/usr/bin/svlogd", "runit");
    let services = format!(
        "{}{}  - name: s6\n    binary: {s6}\n    args: ['$DIR/s6']\n  - name: runit\n    binary: {sv}\n    args: ['$DIR/sv']\n",
        svc(
            "a",
            "for i in $(seq 1 50); do echo \"a $i\"; done; exec sleep 600",
            "    log: {to: s6}\n",
        ),
        svc(
            "b",
            "for i in $(seq 1 50); do echo \"b $i\"; done; exec sleep 600",
            "    log: {to: runit}\n",
        ),
    );
    let d = Daemon::start_with("logger-s6", "", &services, |dir| {
        std::fs::create_dir(dir.join("sv")).unwrap();
    });
    for (dir, p) in [("s6", "a"), ("sv", "b")] {
        let cur = d.dir.join(dir).join("current");
        let want: String = (1..=50).map(|i| format!("{p} {i}\n")).collect();
        wait_for(SOON, &format!("50 lines in {}", cur.display()), || {
            (read(&cur) == want).then_some(())
        });
    }
    finish(d);
}

#[test]
fn a_logger_restart_loses_no_line() {
    let services = format!(
        "{}{}",
        counter("producer", "logger"),
        py_logger("logger", "$DIR/got")
    );
    let d = Daemon::start("logger-restart", "", &services);
    let file = d.dir.join("got");
    wait_numbers(&file, 20);
    for round in 0..3 {
        let before = pid_of(&d, "logger");
        let pipe = stdin_of(before);
        ok(ctl(&d, &["restart", "logger"]));
        let after = wait_row(
            &d,
            "a new logger",
            SOON,
            || row(&d, "logger"),
            |r| r["state"] == "running" && r["pid"].as_i64() != Some(before),
        )["pid"]
            .as_i64()
            .unwrap();
        assert_eq!(stdin_of(after), pipe, "round {round}: the same pipe");
        let n = numbers(&read(&file)).len();
        wait_numbers(&file, n + 20);
    }
    let v = numbers(&read(&file));
    assert_eq!(v[0], 1);
    assert_contiguous(&v);
    let det = detail(&d, "producer");
    assert!(
        det["details"]["log"]
            .as_str()
            .unwrap()
            .contains(", 0 dropped"),
        "{det}"
    );
    finish(d);
}

#[test]
fn a_producer_restart_keeps_writing_to_the_same_logger() {
    let services = format!(
        "{}{}",
        svc(
            "producer",
            "echo \"run $$\"; exec sleep 600",
            "    log: {to: logger}\n"
        ),
        sh_logger("logger", "$DIR/got"),
    );
    let d = Daemon::start("logger-producer", "", &services);
    let file = d.dir.join("got");
    let logger = pid_of(&d, "logger");
    for _ in 0..3 {
        let p = pid_of(&d, "producer");
        // `$$` of the shell is the service's pid (it execs sleep).
        wait_for(SOON, "this run's line", || {
            read(&file)
                .contains(&format!("got: run {p}\n"))
                .then_some(())
        });
        ok(ctl(&d, &["restart", "producer"]));
        wait_row(
            &d,
            "a new producer",
            SOON,
            || row(&d, "producer"),
            |r| r["state"] == "running" && r["pid"].as_i64() != Some(p),
        );
    }
    let p = pid_of(&d, "producer");
    wait_for(SOON, "the last run's line", || {
        read(&file)
            .contains(&format!("got: run {p}\n"))
            .then_some(())
    });
    assert_eq!(pid_of(&d, "logger"), logger, "the logger was not restarted");
    assert_eq!(count_in(&read(&file), "got: run "), 4);
    finish(d);
}

#[test]
fn a_stopped_logger_under_a_flood_costs_lines_not_the_loop() {
    let services = format!(
        "{}{}",
        svc(
            "producer",
            "while [ ! -e $DIR/go ]; do sleep 0.02; done; seq 1 400000 | sed \"s/^/n /\"; exec sleep 600",
            "    log: {to: logger}\n",
        ),
        sh_logger("logger", "$DIR/got"),
    );
    let d = Daemon::start("logger-flood", "", &services);
    wait_state(&d, "logger", "running", SOON);
    ok(ctl(&d, &["stop", "logger"]));
    wait_state(&d, "logger", "stopped", SOON);
    std::fs::write(d.dir.join("go"), "").unwrap();
    // 400,000 lines (3 MB) into a 1 MiB pipe nobody reads: the rest are
    // dropped and counted, and the daemon answers all along.
    let dropped = |d: &Daemon| -> u64 {
        let det = detail(d, "producer");
        let log = det["details"]["log"].as_str().unwrap().to_string();
        let n = log.split("to its logger, ").nth(1).unwrap();
        n.split_whitespace().next().unwrap().parse().unwrap()
    };
    wait_for(SOON, "the flood's last line in the ring", || {
        let o = ok(ctl(&d, &["logs", "producer", "--no-follow", "-n", "1"]));
        o.stdout.contains("n 400000").then_some(())
    });
    let lost = dropped(&d);
    assert!(lost > 100_000, "dropped {lost}");
    assert!(lost < 400_000, "dropped {lost}: the pipe took none");
    // `metrics` counts the same lines.
    let m = ok(ctl(&d, &["metrics"])).stdout;
    let series =
        format!("coffeyd_service_logger_lines_dropped_total{{service=\"producer\"}} {lost}\n");
    assert!(m.contains(&series), "{series} in\n{m}");
    // The logger, started again, reads what the pipe kept: the first lines
    // of the flood, in order.
    ok(ctl(&d, &["start", "logger"]));
    let file = d.dir.join("got");
    let v = wait_numbers(&file, 1000);
    assert_eq!(&v[..3], &[1, 2, 3]);
    assert_contiguous(&v);
    finish(d);
}

#[test]
fn reload_keeps_an_unchanged_pipe_opens_new_ones_and_closes_removed_ones() {
    let extra = svc("quiet", "exec sleep 600", "");
    let services = format!(
        "{}{}",
        counter("producer", "logger"),
        py_logger("logger", "$DIR/got")
    );
    let d = Daemon::start("logger-reload", "", &format!("{services}{extra}"));
    let file = d.dir.join("got");
    wait_numbers(&file, 10);
    let logger = pid_of(&d, "logger");
    let pipe = stdin_of(logger);
    let o = ok(ctl(&d, &["reload"]));
    assert!(o.stdout.contains("0 restarted, 0 updated"), "{o:?}");
    let n = numbers(&read(&file)).len();
    wait_numbers(&file, n + 10);
    assert_eq!(pid_of(&d, "logger"), logger);
    assert_eq!(stdin_of(logger), pipe);
    // A second producer now logs to `quiet`: it becomes a logger, so it
    // restarts onto a pipe of its own; the first pair is untouched.
    d.rewrite(
        "",
        &format!(
            "{services}{}{}",
            svc(
                "second",
                "for i in $(seq 1 5); do echo \"s $i\"; done; exec sleep 600",
                "    log: {to: quiet}\n"
            ),
            sh_logger("quiet", "$DIR/quiet"),
        ),
    );
    let o = ok(ctl(&d, &["reload"]));
    assert!(
        o.stdout.contains("1 added, 0 removed, 1 restarted"),
        "{o:?}"
    );
    let q = d.dir.join("quiet");
    wait_for(SOON, "the second producer's lines", || {
        read(&q).contains("got: s 5\n").then_some(())
    });
    let quiet = pid_of(&d, "quiet");
    let quiet_pipe = stdin_of(quiet);
    assert!(quiet_pipe.starts_with("pipe:"));
    assert_ne!(quiet_pipe, pipe);
    assert_eq!(stdin_of(logger), pipe);
    assert_eq!(daemon_holds(&d, &quiet_pipe), 2, "both ends");
    // Without the second producer `quiet` is no logger: its pipe closes
    // and it restarts onto /dev/null.
    d.rewrite("", &format!("{services}{extra}"));
    let o = ok(ctl(&d, &["reload"]));
    assert!(o.stdout.contains("1 removed, 1 restarted"), "{o:?}");
    assert_eq!(daemon_holds(&d, &quiet_pipe), 0, "closed");
    let q = wait_row(
        &d,
        "quiet again",
        SOON,
        || row(&d, "quiet"),
        |r| r["state"] == "running" && r["pid"].as_i64() != Some(quiet),
    );
    assert_eq!(stdin_of(q["pid"].as_i64().unwrap()), "/dev/null");
    // A logger removed with its producer: its pipe closes too.
    d.rewrite(
        "",
        &format!(
            "{services}{}{}",
            svc("second", "exec sleep 600", "    log: {to: quiet}\n"),
            sh_logger("quiet", "$DIR/quiet"),
        ),
    );
    ok(ctl(&d, &["reload"]));
    let quiet = wait_row(
        &d,
        "quiet a logger",
        SOON,
        || row(&d, "quiet"),
        |r| {
            r["state"] == "running"
                && r["pid"]
                    .as_i64()
                    .is_some_and(|p| stdin_of(p) != "/dev/null")
        },
    )["pid"]
        .as_i64()
        .unwrap();
    let quiet_pipe = stdin_of(quiet);
    assert_eq!(daemon_holds(&d, &quiet_pipe), 2, "both ends");
    d.rewrite("", &services);
    let o = ok(ctl(&d, &["reload"]));
    assert!(o.stdout.contains("2 removed"), "{o:?}");
    assert_eq!(daemon_holds(&d, &quiet_pipe), 0, "closed");
    assert_eq!(daemon_holds(&d, &pipe), 2);
    let n = numbers(&read(&file)).len();
    wait_numbers(&file, n + 10);
    assert_eq!(pid_of(&d, "logger"), logger);
    let v = numbers(&read(&file));
    assert_eq!(v[0], 1);
    assert_contiguous(&v);
    finish(d);
}

#[test]
fn a_reexec_hands_the_logger_pipe_to_the_new_binary() {
    let services = format!(
        "{}{}",
        counter("producer", "logger"),
        py_logger("logger", "$DIR/got")
    );
    let mut d = Daemon::start("logger-reexec", "", &services);
    let file = d.dir.join("got");
    wait_numbers(&file, 20);
    let logger = pid_of(&d, "logger");
    let pipe = stdin_of(logger);
    ok(ctl(&d, &["reexec"]));
    d.wait_log("logger: adopted pid", SOON);
    let n = numbers(&read(&file)).len();
    wait_numbers(&file, n + 20);
    assert_eq!(pid_of(&d, "logger"), logger, "{}", d.log_text());
    assert_eq!(stdin_of(logger), pipe);
    let v = numbers(&read(&file));
    assert_eq!(v[0], 1);
    assert_contiguous(&v);
    finish(d);
}

/// runit's svlogd finishes the line it is reading on SIGTERM: restarted
/// while the producer writes, it loses nothing either.
#[test]
fn svlogd_restarted_loses_no_line() {
    let sv = need("/usr/bin/svlogd", "runit");
    let services = format!(
        "{}  - name: runit\n    binary: {sv}\n    args: ['$DIR/sv']\n",
        counter("producer", "runit")
    );
    let d = Daemon::start_with("logger-svlogd", "", &services, |dir| {
        std::fs::create_dir(dir.join("sv")).unwrap();
    });
    let cur = d.dir.join("sv").join("current");
    let nums = |p: &Path| -> Vec<u64> {
        read(p)
            .lines()
            .filter_map(|l| l.strip_prefix("n "))
            .map(|n| n.parse().unwrap())
            .collect()
    };
    let wait = |n: usize| {
        wait_for(SOON, &format!("{n} lines in {}", cur.display()), || {
            (nums(&cur).len() >= n).then_some(())
        })
    };
    wait(20);
    for _ in 0..3 {
        let before = pid_of(&d, "runit");
        ok(ctl(&d, &["restart", "runit"]));
        wait_row(
            &d,
            "a new svlogd",
            SOON,
            || row(&d, "runit"),
            |r| r["state"] == "running" && r["pid"].as_i64() != Some(before),
        );
        wait(nums(&cur).len() + 20);
    }
    let v = nums(&cur);
    assert_eq!(v[0], 1);
    assert_contiguous(&v);
    finish(d);
}
