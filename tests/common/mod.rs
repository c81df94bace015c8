//! Test harness: runs the real coffeyd binary on a config written to a
//! fresh temp dir, and waits on its log with deadlines (never fixed sleeps).
//! Also the helpers several test files share: the CLI with a deadline,
//! status rows and waits on them, followers of `logs`/`events`, the
//! end-of-test checks (no heap allocation after startup), and /proc walks.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![allow(clippy::disallowed_methods, clippy::disallowed_macros)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
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
        read_log(&self.log)
    }

    /// Waits until the daemon log contains `pat`; returns the whole log.
    pub fn wait_log(&mut self, pat: &str, secs: f64) -> String {
        let mut dead = None;
        let r = {
            let log = self.log.clone();
            let child = self.child.as_mut().unwrap();
            let deadline = Instant::now() + Duration::from_secs_f64(secs);
            loop {
                let t = read_log(&log);
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
        count_in(&self.log_text(), pat)
    }

    /// Waits until `pat` occurs `n` times.
    pub fn wait_count(&mut self, pat: &str, n: usize, secs: f64) -> String {
        let log = self.log.clone();
        wait_for(secs, &format!("{n} x {pat:?}"), || {
            let t = read_log(&log);
            (count_in(&t, pat) >= n).then_some(t)
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

/// A `sh -c SCRIPT` service entry for the `services:` list. `$$` and
/// `${` are the shell's: escaped from coffeyd's own `${VAR}` expansion.
pub fn svc(name: &str, script: &str, extra: &str) -> String {
    let script = script
        .replace('\'', "''")
        .replace("$$", "$$$$")
        .replace("${", "$${");
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

// ---------------------------------------------------------------- status rows

/// Fails the test unless the CLI run exited 0; returns it.
#[track_caller]
pub fn ok(o: Out) -> Out {
    assert_eq!(o.code, 0, "{o:?}");
    o
}

/// One service's row of `-j status` (the list of all services).
pub fn row(d: &Daemon, name: &str) -> serde_json::Value {
    let o = ok(ctl(d, &["-j", "status"]));
    let v = json(&o.stdout);
    v.as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {v}"))
        .clone()
}

/// `-j status NAME`: one service's row with its `details` object. It exits
/// 0 when the service is running or completed and 3 in its other states.
pub fn detail(d: &Daemon, name: &str) -> serde_json::Value {
    let o = ctl(d, &["-j", "status", name]);
    assert!(o.code == 0 || o.code == 3, "{o:?}");
    json(&o.stdout)
}

/// Polls `get` (a status row) every 20 ms until `pred` holds; returns that
/// row. At the deadline fails with `what`, the last row and the log.
pub fn wait_row(
    d: &Daemon,
    what: &str,
    secs: f64,
    mut get: impl FnMut() -> serde_json::Value,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    loop {
        let last = get();
        if pred(&last) {
            return last;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out after {secs}s waiting for {what}; last row {last}\n--- log:\n{}",
                d.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `name` is in state `want`; returns its `-j status` row.
pub fn wait_state(d: &Daemon, name: &str, want: &str, secs: f64) -> serde_json::Value {
    wait_row(
        d,
        &format!("{name} {want}"),
        secs,
        || row(d, name),
        |r| r["state"] == want,
    )
}

/// Ends a daemon test: the daemon made no heap allocation after startup.
pub fn assert_no_alloc(d: &mut Daemon) {
    let dump = d.dump();
    assert!(
        dump.contains("status: heap allocations after startup: 0;"),
        "{dump}"
    );
}

/// Asserts the daemon's last log line: shutdown completed, and no heap
/// allocation happened after startup.
#[track_caller]
pub fn assert_clean_shutdown(log: &str) {
    assert!(
        log.contains("shutdown complete; heap allocations after startup: 0\n"),
        "{log}"
    );
}

/// Ends a test: no heap allocation after startup, and a clean shutdown.
pub fn finish(mut d: Daemon) {
    assert_no_alloc(&mut d);
    assert_eq!(d.stop(60.0), 0, "{}", d.log_text());
}

/// The pid in `NAME: spawned pid P` log lines, in order.
pub fn spawned_pids(log: &str, name: &str) -> Vec<i32> {
    let pat = format!("{name}: spawned pid ");
    log.lines()
        .filter_map(|l| l.split_once(&pat))
        .map(|(_, p)| p.split_whitespace().next().unwrap().parse().unwrap())
        .collect()
}

// ---------------------------------------------------------------- followers

/// A CLI child (`args -s SOCK`) whose stdout lines arrive on a channel.
pub struct Follower {
    pub child: Child,
    rx: mpsc::Receiver<String>,
    /// Every line received so far, in order.
    pub seen: Vec<String>,
}

impl Follower {
    pub fn spawn(d: &Daemon, args: &[&str]) -> Follower {
        let mut child = Command::new(BIN)
            .args(args)
            .arg("-s")
            .arg(&d.socket)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Follower {
            child,
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits up to `secs` for a line satisfying `f` (looking at lines
    /// already seen first).
    pub fn try_line(&mut self, secs: f64, f: impl Fn(&str) -> bool) -> Option<String> {
        if let Some(l) = self.seen.iter().find(|l| f(l)) {
            return Some(l.clone());
        }
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let l = self.rx.recv_timeout(left).ok()?;
            self.seen.push(l.clone());
            if f(&l) {
                return Some(l);
            }
        }
    }

    /// Like `try_line`, failing the test at the deadline.
    pub fn wait_line(&mut self, secs: f64, what: &str, f: impl Fn(&str) -> bool) -> String {
        self.try_line(secs, f)
            .unwrap_or_else(|| panic!("no line with {what} within {secs}s; got {:#?}", self.seen))
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `coffeyd -j events`: the event stream, one JSON object a line.
pub struct Events(Follower);

impl Events {
    pub fn follow(d: &Daemon) -> Events {
        Events(Follower::spawn(d, &["-j", "events"]))
    }

    /// The first event (seen or to come) that satisfies `f`.
    pub fn wait(
        &mut self,
        secs: f64,
        what: &str,
        f: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let l = self.0.wait_line(secs, &format!("event {what}"), |l| {
            serde_json::from_str(l).is_ok_and(|e| f(&e))
        });
        json(&l)
    }
}

// ---------------------------------------------------------------- processes

/// Sends `sig` to `pid` (never to 0, 1 or a group: a test's slip must not
/// signal everything).
pub fn signal(pid: i32, sig: i32) {
    assert!(pid > 1, "refusing to signal pid {pid}");
    // SAFETY: plain syscall.
    unsafe { libc_kill(pid, sig) };
}

/// Host pids of the children of `pid` (of all its threads).
pub fn children(pid: i32) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let text = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        out.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    out
}

/// Every process below `pid` (children, grandchildren, ...), not `pid`.
pub fn descendants(pid: i32) -> BTreeSet<i32> {
    let mut found = BTreeSet::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for c in children(p) {
            if found.insert(c) {
                todo.push(c);
            }
        }
    }
    found
}

/// A loopback port that was free a moment ago: nothing listens on it
/// (the listener is closed again), until a test starts a server there.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The program at `path`, or a failure naming the Debian package to
/// install: a test that silently passed without its program would prove
/// nothing.
pub fn need(path: &str, package: &str) -> String {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install the Debian package `{package}` (.ci/run does)"
    );
    path.to_string()
}

/// A copy of the coffeyd binary at `dst`, mode 0755, for a test that runs
/// it as another uid (the build tree may sit in a 0700 checkout). The copy
/// is made by `cp`, not `std::fs::copy`: a write fd held by this
/// multi-threaded process would leak into a child forked by another test
/// meanwhile, and exec of the copy would then fail with ETXTBSY.
pub fn reachable_copy(dst: &Path) -> PathBuf {
    let st = Command::new("cp").arg(BIN).arg(dst).status().unwrap();
    assert!(st.success(), "cp {BIN} {}", dst.display());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o755)).unwrap();
    dst.to_path_buf()
}

/// The daemon log with its rotated generations, oldest first (`path.N`
/// ... `path.1`, then `path`): a busy test's log rotates at `log.max_size`
/// (1 MiB by default), and counting only the current file would miss lines.
pub fn read_log(path: &Path) -> String {
    let mut gens = Vec::new();
    for k in 1.. {
        let mut p = path.as_os_str().to_owned();
        p.push(format!(".{k}"));
        match std::fs::read_to_string(&p) {
            Ok(t) => gens.push(t),
            Err(_) => break,
        }
    }
    gens.reverse();
    gens.push(std::fs::read_to_string(path).unwrap_or_default());
    gens.concat()
}

/// Lines of `log` containing `pat`, counting a following
/// `last message repeated N times` (the daemon's collapse of identical
/// lines) as N more.
pub fn count_in(log: &str, pat: &str) -> usize {
    let mut n = 0;
    let mut last_hit = false;
    for l in log.lines() {
        if l.contains(pat) {
            n += l.matches(pat).count();
            last_hit = true;
        } else if let (true, Some(r)) = (last_hit, l.split("last message repeated ").nth(1)) {
            n += r
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
        } else {
            last_hit = false;
        }
    }
    n
}
