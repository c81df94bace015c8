//! The daemon's own log is bounded and cannot be used to attack a terminal
//! (issue 9, points 3 and 4), against the real daemon:
//! - a flood of one ignored signal is collapsed into `last message
//!   repeated N times`, written when another line comes or at its deadline;
//! - a flood of two alternating signals (which nothing collapses) rotates
//!   `log.path` within `max_size * (keep + 1)` plus a line;
//! - `status` is answered throughout;
//! - control bytes a service writes (output, sd_notify STATUS=) reach the
//!   console and the daemon log as `\x1b`, and `logs -j` keeps them exact.
//!
//! Every wait has a deadline; the floods run for a fixed time on purpose
//! (that is the load), not to wait for something.
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
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SOON: f64 = 30.0;
const SIGQUIT: i32 = 3;
const SIGUSR2: i32 = 12;
/// `coffey::limits::LOG_LINE_MAX`: the longest line the daemon writes.
const LINE_MAX: u64 = 1280;

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// What a flood did: signals sent, and `status` calls with the slowest.
struct Flood {
    sent: u64,
    statuses: u32,
    slowest_ms: u128,
}

/// Sends `sigs` in turn to `pid` as fast as one thread can for `secs`,
/// while this thread asks `status` (each must answer, within 5 s).
fn flood(d: &Daemon, sigs: &'static [i32], secs: f64) -> Flood {
    let pid = d.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let sender = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for &s in sigs {
                    unsafe { kill(pid, s) };
                }
                n += sigs.len() as u64;
            }
            sent.store(n, Ordering::Relaxed);
        })
    };
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let (mut statuses, mut slowest_ms) = (0, 0);
    while Instant::now() < end {
        let t = Instant::now();
        let o = ctl_within(d, &["status"], 5.0);
        assert_eq!(o.code, 0, "status during the flood: {o:?}");
        slowest_ms = slowest_ms.max(t.elapsed().as_millis());
        statuses += 1;
    }
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    // Signals still queued are read at the start of the next turn: one
    // more answer means they (and any rotation they caused) are done.
    let o = ctl_within(d, &["status"], 5.0);
    assert_eq!(o.code, 0, "status after the flood: {o:?}");
    Flood {
        sent: sent.load(Ordering::Relaxed),
        statuses,
        slowest_ms,
    }
}

/// Sizes of `coffey.log`, `coffey.log.1`, ... that exist.
fn log_files(d: &Daemon) -> Vec<(String, u64)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(&d.dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if name.starts_with("coffey.log") {
            v.push((name, e.metadata().unwrap().len()));
        }
    }
    v.sort();
    v
}

/// The N of every `last message repeated N times`.
fn repeat_counts(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| l.split_once("coffeyd: last message repeated "))
        .map(|(_, r)| r.strip_suffix(" times").unwrap().parse().unwrap())
        .collect()
}

/// One signal, flooded: the log says it once, then counts. The count is
/// written at its deadline with no other line to push it out.
#[test]
fn a_flood_of_one_signal_is_collapsed_into_a_count() {
    let services = svc("idle", "exec sleep 1000", "");
    let mut d = Daemon::start("sigflood", "", &services);
    let before = d.log_text().len();
    let f = flood(&d, &[SIGQUIT], 3.0);
    // The count comes at its deadline (10 s after the first repeat) even
    // though nothing else is logged.
    let log = d.wait_log("coffeyd: last message repeated ", 15.0);
    let counts = repeat_counts(&log);
    let ignored = log.matches("coffeyd: ignored SIGQUIT\n").count();
    let grown = log.len() - before;
    println!(
        "SIGQUIT flood: {} sent in 3 s, {ignored} line(s) 'ignored SIGQUIT', counts {counts:?}, \
         log grew {grown} bytes; {} status calls, slowest {} ms",
        f.sent, f.statuses, f.slowest_ms
    );
    assert_eq!(ignored, 1, "{log}");
    assert_eq!(counts.len(), 1, "{log}");
    assert!(
        counts[0] >= 100,
        "only {counts:?} repeats of {} sent",
        f.sent
    );
    assert!(grown < 1024, "the log grew {grown} bytes:\n{log}");
    finish(d);
}

/// Two signals in turn: every line differs from the one before, so
/// nothing collapses, and rotation alone bounds the disk.
#[test]
fn an_alternating_signal_flood_stays_within_the_rotation_bound() {
    let services = svc("idle", "exec sleep 1000", "");
    let (max, keep) = (4096u64, 2u64);
    let d = start_log(
        "rotflood",
        "    console: false\n    max_size: 4KiB\n    keep: 2\n",
        &services,
    );
    let f = flood(&d, &[SIGQUIT, SIGUSR2], 3.0);
    let files = log_files(&d);
    let total: u64 = files.iter().map(|f| f.1).sum();
    println!(
        "alternating flood: {} signals sent in 3 s; files {files:?}, {total} bytes; \
         {} status calls, slowest {} ms",
        f.sent, f.statuses, f.slowest_ms
    );
    let names: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(names, ["coffey.log", "coffey.log.1", "coffey.log.2"]);
    for (name, len) in &files {
        assert!(*len <= max, "{name} is {len} bytes");
    }
    assert!(total <= max * (keep + 1) + LINE_MAX, "{total}");
    // The newest lines are there, and the daemon still logs and answers.
    assert!(
        d.log_text().contains("coffeyd: ignored SIG"),
        "{}",
        d.log_text()
    );
    finish(d);
}

/// `Daemon::start` with this `coffey.log` body instead of the harness's
/// `{path, console: false}`.
fn start_log(tag: &str, log_keys: &str, services: &str) -> Daemon {
    let dir = tempdir(tag);
    let log = dir.join("coffey.log");
    let config = dir.join("config.yaml");
    let text = format!(
        "coffey:\n  socket: {d}/s.sock\n  pid_file: {d}/coffey.pid\n  log:\n    path: {l}\n{log_keys}services:\n{services}",
        d = dir.display(),
        l = log.display()
    );
    std::fs::write(&config, text).unwrap();
    let child = Command::new(BIN)
        .arg("-c")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let mut d = Daemon {
        socket: dir.join("s.sock"),
        pid_file: dir.join("coffey.pid"),
        dir,
        child: Some(child),
        log,
        config,
    };
    d.wait_log("started: pid", 10.0);
    d
}

/// Bytes other than TAB and LF below 0x20, and DEL.
fn raw_controls(b: &[u8]) -> Vec<u8> {
    b.iter()
        .copied()
        .filter(|&c| (c < 0x20 && c != b'\t' && c != b'\n') || c == 0x7f)
        .collect()
}

/// A service that writes ESC [2J, an OSC title, BEL, CR, NUL, SOH, DEL
/// and a byte that is not UTF-8 on stdout, and ESC in its sd_notify
/// STATUS=, with the console on: the console (the daemon's stderr) and the
/// daemon log show `\x1b` and friends and no raw control byte; `logs -j`
/// returns the exact text; the human `logs` shows it escaped.
#[test]
fn service_control_bytes_are_visible_on_the_console_and_in_the_log() {
    let notify = need("/usr/bin/systemd-notify", "systemd");
    let services = svc(
        "evil",
        &format!(
            "printf 'A\\033[2JB\\033]0;owned\\007C\\rD\\000E\\001F\\177G\\tH\\377I\\n'; \
             {notify} --ready --status=\"$(printf 'st\\033[31mX')\"; exec sleep 1000"
        ),
        "    log:\n      console: true\n    healthcheck:\n      readiness:\n        type: notify\n",
    );
    let mut d = start_log("ctlbytes", "    console: true\n", &services);
    let want = "evil[stdout]: A\\x1b[2JB\\x1b]0;owned\\x07C\\x0dD\\x00E\\x01F\\x7fG\tH\\xffI\n";
    d.wait_log(want, SOON);
    let log = d.wait_log("evil: status: st\\x1b[31mX\n", SOON);
    let stderr_path = d.dir.join("stderr");
    let console = wait_for(SOON, "the line on the console", || {
        let b = std::fs::read(&stderr_path).unwrap();
        let s = String::from_utf8_lossy(&b).into_owned();
        (s.contains(want) && s.contains("evil: status: st\\x1b[31mX\n")).then_some(b)
    });
    assert_eq!(
        raw_controls(&console),
        b"",
        "console:\n{}",
        String::from_utf8_lossy(&console)
    );
    let log_bytes = std::fs::read(&d.log).unwrap();
    assert_eq!(raw_controls(&log_bytes), b"", "log:\n{log}");

    // The ring keeps the bytes: JSON escaping only (the non-UTF-8 byte is
    // U+FFFD, as documented for `-j`).
    let o = ok(ctl(&d, &["-j", "logs", "evil", "--no-follow"]));
    let line = o
        .stdout
        .lines()
        .map(json)
        .find(|v| v["stream"] == "stdout")
        .unwrap();
    assert_eq!(
        line["text"], "A\u{1b}[2JB\u{1b}]0;owned\u{7}C\rD\u{0}E\u{1}F\u{7f}G\tH\u{fffd}I",
        "{}",
        o.stdout
    );
    // The human form is escaped, like the console.
    let o = ok(ctl(&d, &["logs", "evil", "--no-follow"]));
    assert!(
        o.stdout
            .contains("stdout A\\x1b[2JB\\x1b]0;owned\\x07C\\x0dD\\x00E\\x01F\\x7fG\tH\\xffI\n"),
        "{}",
        o.stdout
    );
    assert_eq!(raw_controls(o.stdout.as_bytes()), b"", "{}", o.stdout);
    // `status NAME` quotes STATUS= escaped; `-j` keeps it.
    let o = ok(ctl(&d, &["status", "evil"]));
    assert!(o.stdout.contains("st\\x1b[31mX"), "{}", o.stdout);
    assert_eq!(
        detail(&d, "evil")["details"]["notify_status"],
        "st\u{1b}[31mX"
    );
    finish(d);
}
