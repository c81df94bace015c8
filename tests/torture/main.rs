//! The torture suite (issue 9, point 6): the real daemon under hostile,
//! bounded load. Not part of plain `cargo test`: every case is ignored
//! there and runs with `just torture` (full form) or `just torture short`
//! (about 10 s a case, what CI runs):
//! `TORTURE=short cargo test --release --test torture -- --ignored --test-threads=1`.
//!
//! Every case ends with the same checks ([`Torture::finish`]): the daemon
//! is alive and `status` answers within a deadline, no zombie and no
//! process of the daemon's tree is left, the fd count is back to its
//! baseline, RSS is within the case's stated bound, and the daemon made no
//! heap allocation after startup. Each case prints `FIGURE case key=value`
//! lines; docs/RELIABILITY.md records them.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_methods,
    clippy::disallowed_macros
)]

#[path = "../common/mod.rs"]
mod common;

mod config;
mod floods;
mod limits;
mod procs;
mod storms;

use common::*;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the operator's `status` may take under load.
pub const OPERATOR_DEADLINE: f64 = 2.0;

/// `TORTURE=short`: the CI form of every case.
pub fn short() -> bool {
    std::env::var("TORTURE").is_ok_and(|v| v == "short")
}

/// `full` normally, `short` in the short form.
pub fn scale(full: u64, short_form: u64) -> u64 {
    if short() {
        short_form
    } else {
        full
    }
}

/// A torture run of one case: the daemon, its baseline and its figures.
pub struct Torture {
    pub d: Daemon,
    pub case: &'static str,
    /// In the environment of the daemon, hence of every process it starts:
    /// how leftovers are found wherever they were reparented.
    pub tag: String,
    fd_base: usize,
    rss_base: u64,
    /// RSS may grow by at most this much over the baseline (rings filling,
    /// tables touched): stated per case.
    pub rss_bound_kib: u64,
    figures: Vec<(String, String)>,
}

/// The whole config text, as `Daemon::start` writes it.
pub fn config_text(dir: &Path, extra: &str, services: &str) -> String {
    let text = format!(
        "coffey:\n  socket: {}\n  pid_file: {}\n  log:\n    path: {}\n    console: false\n{extra}services:\n{services}",
        dir.join("s.sock").display(),
        dir.join("coffey.pid").display(),
        dir.join("coffey.log").display()
    );
    text.replace("$DIR", &dir.display().to_string())
}

impl Torture {
    pub fn start(case: &'static str, extra: &str, services: &str) -> Torture {
        Self::start_with(case, extra, services, |_| {}, || Ok(()))
    }

    /// `prepare(dir)` before the daemon starts; `pre_exec` runs in the
    /// daemon's process before exec (setrlimit).
    pub fn start_with(
        case: &'static str,
        extra: &str,
        services: &str,
        prepare: impl FnOnce(&Path),
        pre_exec: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
    ) -> Torture {
        let d = spawn_daemon(case, extra, services, prepare, pre_exec);
        let tag = d.dir.file_name().unwrap().to_string_lossy().into_owned();
        let mut t = Torture {
            d,
            case,
            tag,
            fd_base: 0,
            rss_base: 0,
            rss_bound_kib: 512,
            figures: Vec::new(),
        };
        t.baseline();
        t
    }

    /// Records the fd count and RSS the end is compared with. Call it at a
    /// quiet point that the case returns to before `finish`.
    pub fn baseline(&mut self) {
        self.fd_base = settled_fds(self.d.pid());
        self.rss_base = self.d.rss_kib();
    }

    /// The quiet point most cases return to: every service in `names`
    /// stopped. Records the baseline there, then starts them again.
    pub fn quiet_baseline(&mut self, names: &[String]) {
        ctl_all(&self.d, "stop", names, 30.0);
        self.baseline();
        ctl_all_no_wait(&self.d, "start", names);
    }

    pub fn figure(&mut self, key: &str, value: impl std::fmt::Display) {
        let v = value.to_string();
        println!("FIGURE {} {key}={v}", self.case);
        self.figures.push((key.to_string(), v));
    }

    /// `status` within `secs`: its latency, or what went wrong.
    pub fn operator(&self, secs: f64) -> Result<Duration, String> {
        operator(&self.d.socket, secs)
    }

    /// Live processes started under this daemon (its tree, wherever the
    /// kernel reparented them), the daemon itself excluded.
    pub fn tree(&self) -> Vec<i32> {
        tagged(&self.tag, self.d.child.as_ref().map(|c| c.id() as i32))
    }

    /// Samples the operator every `every` ms while `load` runs; returns
    /// (its result, the worst latency, the failures).
    pub fn under_load<T>(
        &self,
        every_ms: u64,
        load: impl FnOnce() -> T,
    ) -> (T, Duration, Vec<String>, usize) {
        let stop = Arc::new(AtomicBool::new(false));
        let zmax = Arc::new(AtomicUsize::new(0));
        let sock = self.d.socket.clone();
        let pid = self.d.pid();
        std::thread::scope(|s| {
            let st = stop.clone();
            let zm = zmax.clone();
            let zombie_watch = s.spawn(move || {
                while !st.load(Ordering::Relaxed) {
                    zm.fetch_max(zombies(pid), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
            let st = stop.clone();
            let op = s.spawn(move || {
                let mut worst = Duration::ZERO;
                let mut fails = Vec::new();
                while !st.load(Ordering::Relaxed) {
                    match operator(&sock, OPERATOR_DEADLINE) {
                        Ok(l) => worst = worst.max(l),
                        Err(e) => fails.push(e),
                    }
                    std::thread::sleep(Duration::from_millis(every_ms));
                }
                (worst, fails)
            });
            let r = load();
            stop.store(true, Ordering::Relaxed);
            let (worst, fails) = op.join().unwrap();
            zombie_watch.join().unwrap();
            (r, worst, fails, zmax.load(Ordering::Relaxed))
        })
    }

    /// The end of every case. Stops the daemon (SIGTERM) and checks that
    /// nothing of its tree is left.
    pub fn finish(mut self) {
        let pid = self.d.pid();
        assert!(
            alive(pid),
            "{}: the daemon died\n{}",
            self.case,
            self.stderr()
        );
        let lat = self.operator(OPERATOR_DEADLINE);
        assert!(
            lat.is_ok(),
            "{}: operator not served at the end: {lat:?}",
            self.case
        );
        let z = wait_until(5.0, || zombies(pid) == 0);
        assert!(
            z,
            "{}: {} zombies left under the daemon",
            self.case,
            zombies(pid)
        );
        let base = self.fd_base;
        let back = wait_until(10.0, || fds(pid) == base);
        self.figure("fds", format!("{} (baseline {base})", fds(pid)));
        assert!(
            back,
            "{}: fds {} not back to baseline {base}: {:?}",
            self.case,
            fds(pid),
            fd_list(pid)
        );
        let rss = self.d.rss_kib();
        self.figure(
            "rss_kib",
            format!(
                "{rss} (baseline {}, +{})",
                self.rss_base,
                rss.saturating_sub(self.rss_base)
            ),
        );
        assert!(
            rss <= self.rss_base + self.rss_bound_kib,
            "{}: RSS {rss} KiB over baseline {} + bound {}",
            self.case,
            self.rss_base,
            self.rss_bound_kib
        );
        let dump = self.d.dump();
        let allocs = dump
            .rsplit("status: heap allocations after startup: ")
            .next()
            .and_then(|r| r.split(';').next())
            .unwrap_or("?")
            .to_string();
        self.figure("allocations", &allocs);
        assert_eq!(allocs, "0", "{}: heap allocations after startup", self.case);
        let t0 = Instant::now();
        let code = self.d.stop(90.0);
        self.figure("shutdown_ms", t0.elapsed().as_millis());
        assert_eq!(
            code,
            0,
            "{}: daemon exit\n{}",
            self.case,
            tail(&self.d.log_text())
        );
        assert_clean_shutdown(&self.d.log_text());
        let tag = self.tag.clone();
        let gone = wait_until(5.0, || tagged(&tag, None).is_empty());
        let left = tagged(&tag, None);
        for &p in &left {
            signal(p, 9);
        }
        assert!(
            gone,
            "{}: processes left after shutdown: {}",
            self.case,
            describe(&left)
        );
        let _ = std::fs::remove_dir_all(&self.d.dir);
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.d.dir.join("stderr")).unwrap_or_default()
    }
}

/// Starts the daemon like `Daemon::start_with`, with its tree tagged.
pub fn spawn_daemon(
    case: &str,
    extra: &str,
    services: &str,
    prepare: impl FnOnce(&Path),
    pre_exec: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
) -> Daemon {
    let dir = tempdir(&format!("t-{case}"));
    prepare(&dir);
    let config = dir.join("config.yaml");
    std::fs::write(&config, config_text(&dir, extra, services)).unwrap();
    let tag = dir.file_name().unwrap().to_string_lossy().into_owned();
    let mut cmd = Command::new(BIN);
    cmd.arg("-c")
        .arg(&config)
        .env("CFY_TORTURE", &tag)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap());
    // SAFETY: the closure only calls setrlimit (async-signal-safe).
    unsafe { cmd.pre_exec(pre_exec) };
    let child = cmd.spawn().unwrap();
    let mut d = Daemon {
        log: dir.join("coffey.log"),
        socket: dir.join("s.sock"),
        pid_file: dir.join("coffey.pid"),
        config,
        dir,
        child: Some(child),
    };
    d.wait_log("started: pid", 30.0);
    d
}

/// `status -s SOCK`, killed at `secs`: latency or the failure.
pub fn operator(sock: &Path, secs: f64) -> Result<Duration, String> {
    let t0 = Instant::now();
    let mut child = Command::new(BIN)
        .args(["status", "-s"])
        .arg(sock)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let deadline = t0 + Duration::from_secs_f64(secs);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            return if st.success() {
                Ok(t0.elapsed())
            } else {
                Err(format!("exit {:?}: {}", st.code(), err.trim()))
            };
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("no answer within {secs}s"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Polls `f` every 10 ms for up to `secs`.
pub fn wait_until(secs: f64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The fd count once it holds still for 200 ms (a spawn in flight holds
/// its exec-status pipe for a moment), within 5 s.
pub fn settled_fds(pid: i32) -> usize {
    let mut last = (fds(pid), 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while last.1 < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let n = fds(pid);
        last = if n == last.0 { (n, last.1 + 1) } else { (n, 0) };
    }
    last.0
}

pub fn fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn fd_list(pid: i32) -> Vec<String> {
    let Ok(d) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    d.flatten()
        .map(|e| {
            let l = std::fs::read_link(e.path()).unwrap_or_default();
            format!("{}->{}", e.file_name().to_string_lossy(), l.display())
        })
        .collect()
}

/// The state letter of `pid` (`R`, `S`, `Z`, ...), if it exists.
pub fn state(pid: i32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit(')').next()?.trim_start().chars().next()
}

/// Zombie children of `pid`: exited, not yet reaped.
pub fn zombies(pid: i32) -> usize {
    children(pid)
        .into_iter()
        .filter(|&c| state(c) == Some('Z'))
        .count()
}

/// Live processes whose environment holds `CFY_TORTURE=tag`.
pub fn tagged(tag: &str, except: Option<i32>) -> Vec<i32> {
    let want = format!("CFY_TORTURE={tag}");
    let mut out = Vec::new();
    let Ok(d) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in d.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if Some(pid) == except || state(pid) == Some('Z') {
            continue;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if env.split(|&b| b == 0).any(|v| v == want.as_bytes()) {
            out.push(pid);
        }
    }
    out
}

/// `pid (comm) state` for each, for failure messages.
pub fn describe(pids: &[i32]) -> String {
    pids.iter()
        .take(20)
        .map(|p| {
            let s = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            s.split(')').next().unwrap_or("").to_string() + ")"
        })
        .collect::<Vec<_>>()
        .join(", ")
        + &format!(" ({} in all)", pids.len())
}

/// The last lines of a log, for failure messages.
pub fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// `stop`/`start` of many services, 16 names a request (`MAX_NAMES`).
pub fn ctl_all(d: &Daemon, verb: &str, names: &[String], secs: f64) {
    for chunk in names.chunks(16) {
        let mut a: Vec<&str> = vec![verb];
        a.extend(chunk.iter().map(String::as_str));
        let o = ctl_within(d, &a, secs);
        assert_eq!(o.code, 0, "{verb} {chunk:?}: {o:?}");
    }
}

/// `start --no-wait` (or another verb) of many services.
pub fn ctl_all_no_wait(d: &Daemon, verb: &str, names: &[String]) {
    for chunk in names.chunks(16) {
        let mut a: Vec<&str> = vec![verb, "--no-wait"];
        a.extend(chunk.iter().map(String::as_str));
        let o = ctl_within(d, &a, 30.0);
        assert_eq!(o.code, 0, "{verb} {chunk:?}: {o:?}");
    }
}

/// The names in `-j status`.
pub fn names(d: &Daemon) -> Vec<String> {
    let o = ok(ctl(d, &["-j", "status"]));
    let v = json(&o.stdout);
    let mut n: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

/// Sum of `restarts` over `-j status`.
pub fn restarts(d: &Daemon) -> u64 {
    let o = ok(ctl(d, &["-j", "status"]));
    json(&o.stdout)
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["restarts"].as_u64().unwrap_or(0))
        .sum()
}

/// Fails with every operator failure seen under load.
#[track_caller]
pub fn assert_served(case: &str, fails: &[String], samples_hint: &str) {
    assert!(
        fails.is_empty(),
        "{case}: the operator was refused or not answered within {OPERATOR_DEADLINE}s {} times ({samples_hint}); first: {:?}",
        fails.len(),
        fails.iter().take(5).collect::<Vec<_>>()
    );
}
