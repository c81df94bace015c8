//! Test harness: runs the real coffeyd binary on a config written to a
//! fresh temp dir, and waits on its log with deadlines (never fixed sleeps).
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![allow(clippy::disallowed_methods, clippy::disallowed_macros)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_coffeyd");

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A unique, empty temp dir (short path: it holds a unix socket).
pub fn tempdir(tag: &str) -> PathBuf {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("cfy-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Polls `f` every 10 ms until it returns Some or `secs` pass.
pub fn wait_for<T>(secs: f64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {secs}s waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub struct Daemon {
    pub dir: PathBuf,
    pub child: Option<Child>,
    pub log: PathBuf,
    pub socket: PathBuf,
    pub pid_file: PathBuf,
    pub config: PathBuf,
}

impl Daemon {
    /// Writes `services` (a YAML list body, already indented for
    /// `services:`) plus `extra` global keys, and starts the daemon.
    pub fn start(tag: &str, extra: &str, services: &str) -> Daemon {
        Self::start_with(tag, extra, services, |_| {})
    }

    /// Like `start`, with `prepare(dir)` run before the daemon starts.
    pub fn start_with(
        tag: &str,
        extra: &str,
        services: &str,
        prepare: impl FnOnce(&Path),
    ) -> Daemon {
        let dir = tempdir(tag);
        prepare(&dir);
        let log = dir.join("coffey.log");
        let socket = dir.join("s.sock");
        let pid_file = dir.join("coffey.pid");
        let config = dir.join("config.yaml");
        let text = format!(
            "coffey:\n  socket: {}\n  pid_file: {}\n  log:\n    path: {}\n    console: false\n{extra}services:\n{services}",
            socket.display(),
            pid_file.display(),
            log.display()
        );
        let text = text.replace("$DIR", &dir.display().to_string());
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
            dir,
            child: Some(child),
            log,
            socket,
            pid_file,
            config,
        };
        d.wait_log("started: pid", 10.0);
        d
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the daemon log contains `pat`; returns the whole log.
    pub fn wait_log(&mut self, pat: &str, secs: f64) -> String {
        let mut dead = None;
        let r = {
            let log = self.log.clone();
            let child = self.child.as_mut().unwrap();
            let deadline = Instant::now() + Duration::from_secs_f64(secs);
            loop {
                let t = std::fs::read_to_string(&log).unwrap_or_default();
                if t.contains(pat) {
                    break Some(t);
                }
                if dead.is_none() {
                    if let Ok(Some(st)) = child.try_wait() {
                        dead = Some(st);
                        continue; // one last read
                    }
                }
                if Instant::now() > deadline || dead.is_some() {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        match r {
            Some(t) => t,
            None => panic!(
                "no {pat:?} in log (daemon exit: {dead:?}) within {secs}s\n--- log:\n{}\n--- stderr:\n{}",
                self.log_text(),
                std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
            ),
        }
    }

    /// Counts occurrences of `pat` in the log.
    pub fn count(&self, pat: &str) -> usize {
        self.log_text().matches(pat).count()
    }

    /// Waits until `pat` occurs `n` times.
    pub fn wait_count(&mut self, pat: &str, n: usize, secs: f64) -> String {
        let log = self.log.clone();
        wait_for(secs, &format!("{n} x {pat:?}"), || {
            let t = std::fs::read_to_string(&log).unwrap_or_default();
            (t.matches(pat).count() >= n).then_some(t)
        })
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc_kill(self.pid(), sig) };
    }

    /// Asks for a status dump and returns the log once it is written.
    pub fn dump(&mut self) -> String {
        let before = self.count("status: heap allocations after startup:");
        self.signal(10);
        self.wait_count("status: heap allocations after startup:", before + 1, 10.0)
    }

    /// SIGTERM, then waits for exit. Returns the exit code.
    pub fn stop(&mut self, secs: f64) -> i32 {
        self.signal(15);
        let child = self.child.as_mut().unwrap();
        let st = wait_for(secs, "daemon exit", || child.try_wait().unwrap());
        self.child = None;
        st.code().unwrap_or(-1)
    }

    /// VmRSS of the daemon in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }
}

pub fn rss_kib(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// Whether a pid still has a /proc entry (alive or zombie).
pub fn exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

impl Drop for Daemon {
    /// A test that failed half-way: ask the daemon to stop its services
    /// (so no `sleep 600` outlives the test), then make sure it is gone.
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc_kill(c.id() as i32, 15) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Millisecond wall-clock stamps of log lines containing `pat`.
pub fn stamps(log: &str, pat: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains(pat))
        .map(|l| parse_stamp(l.split_whitespace().next().unwrap()))
        .collect()
}

/// `2026-11-22T03:50:00.123Z` -> ms within the day (enough for gaps).
pub fn parse_stamp(s: &str) -> u64 {
    let t = &s[11..23];
    let h: u64 = t[0..2].parse().unwrap();
    let m: u64 = t[3..5].parse().unwrap();
    let sec: u64 = t[6..8].parse().unwrap();
    let ms: u64 = t[9..12].parse().unwrap();
    ((h * 60 + m) * 60 + sec) * 1000 + ms
}

impl Daemon {
    /// The config text `start` would write for `extra` and `services`,
    /// with this daemon's socket, pid file and log (for reload tests).
    pub fn config_text(&self, extra: &str, services: &str) -> String {
        let text = format!(
            "coffey:\n  socket: {}\n  pid_file: {}\n  log:\n    path: {}\n    console: false\n{extra}services:\n{services}",
            self.socket.display(),
            self.pid_file.display(),
            self.log.display()
        );
        text.replace("$DIR", &self.dir.display().to_string())
    }

    /// Rewrites `d.config` in place (the daemon reads it on reload only).
    pub fn rewrite(&self, extra: &str, services: &str) {
        std::fs::write(&self.config, self.config_text(extra, services)).unwrap();
    }
}

/// A `sh -c SCRIPT` service entry for the `services:` list.
pub fn svc(name: &str, script: &str, extra: &str) -> String {
    let script = script.replace('\'', "''");
    format!("  - name: {name}\n    binary: /bin/sh\n    args: ['-c', '{script}']\n{extra}")
}

/// The effective uid of the test process.
pub fn euid() -> u32 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let l = s.lines().find(|l| l.starts_with("Uid:")).unwrap();
    l.split_whitespace().nth(2).unwrap().parse().unwrap()
}

/// What a CLI run printed.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the CLI with a deadline; kills it if it hangs.
pub fn cli_with(args: &[&str], secs: f64, prep: impl FnOnce(&mut Command)) -> Out {
    cli_bin_with(Path::new(BIN), args, secs, prep)
}

/// Like `cli_with`, running the binary at `bin` (e.g. a copy another user
/// can reach).
pub fn cli_bin_with(bin: &Path, args: &[&str], secs: f64, prep: impl FnOnce(&mut Command)) -> Out {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("NO_COLOR", "1");
    prep(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let to = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let te = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "coffeyd {args:?} did not finish within {secs}s; stdout {:?} stderr {:?}",
                to.join().unwrap(),
                te.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Out {
        code: st.code().unwrap_or(-1),
        stdout: to.join().unwrap(),
        stderr: te.join().unwrap(),
    }
}

/// The CLI with a 60 s deadline.
pub fn cli(args: &[&str]) -> Out {
    cli_with(args, 60.0, |_| {})
}

/// The CLI against `d`'s socket: `args` then `-s SOCK`, within `secs`.
pub fn ctl_within(d: &Daemon, args: &[&str], secs: f64) -> Out {
    let sock = d.socket.to_str().unwrap();
    let mut a: Vec<&str> = args.to_vec();
    a.extend(["-s", sock]);
    cli_with(&a, secs, |_| {})
}

/// The CLI against `d`'s socket, 60 s deadline.
pub fn ctl(d: &Daemon, args: &[&str]) -> Out {
    ctl_within(d, args, 60.0)
}

/// Parses one JSON document.
pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("bad JSON {s:?}: {e}"))
}
