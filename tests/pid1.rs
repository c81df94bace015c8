#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_methods,
    clippy::disallowed_macros
)]
//! coffeyd as a real PID 1: `unshare --pid --fork --mount-proc coffeyd ...`
//! makes it the init of a fresh PID namespace. `reboot(RB_DISABLE_CAD)`
//! fails there, so it runs in container mode. Signals go to the coffeyd
//! process (the unshare process's only child), seen from outside by its
//! host pid. Also here: what coffeyd inherits and the filesystems it runs
//! on (mount namespaces, another uid). Every wait has a deadline.
//!
//! These tests need root (namespaces, mounts, setpriv), which CI has.
//! Without it they FAIL, naming the reason: a test that cannot run is not
//! a pass, and a skip that reported `ok` would be one. As an ordinary
//! user, leave this file out: run the others by name
//! (`cargo test --lib --bins --test daemon --test health ...`). The same goes for a missing
//! `systemd-notify` (Debian's `systemd`): the test fails and names the
//! package.

mod common;
use common::*;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// A PID namespace (coffeyd is PID 1) with its own /proc, and `--kill-child`:
/// if unshare dies, the namespace goes with it.
const UNSHARE: [&str; 4] = ["--pid", "--fork", "--mount-proc", "--kill-child"];

/// Whether this host lets us make a PID namespace (root, no seccomp in
/// the way). Checked once with a trivial command.
fn ns_available() -> Result<(), String> {
    static R: OnceLock<Result<(), String>> = OnceLock::new();
    R.get_or_init(|| {
        let out = Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "--net", "/bin/true"])
            .stdin(Stdio::null())
            .output();
        match out {
            Err(e) => Err(format!("cannot run unshare: {e}")),
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(format!(
                "unshare --pid --fork --mount-proc failed ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            )),
        }
    })
    .clone()
}

/// Fails the test when namespaces are unavailable (see the header).
macro_rules! need_ns {
    () => {
        if let Err(why) = ns_available() {
            panic!("{why}: these tests need root (namespaces, mounts)");
        }
    };
}

/// The pid of a host process inside its innermost PID namespace.
fn ns_pid_of(host: i32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{host}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// The one-letter state of a process (`R`, `S`, `Z`, ...).
fn proc_state(pid: i32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit(')').next()?.trim_start().chars().next()
}

fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

#[derive(Debug)]
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// coffeyd run as PID 1 of a new PID namespace.
struct Ns {
    dir: PathBuf,
    log: PathBuf,
    socket: PathBuf,
    /// The `unshare` process (our child).
    child: Option<Child>,
    /// Host pid of coffeyd, PID 1 inside.
    init: i32,
}

impl Ns {
    /// The config text for `extra` global keys and `services`, in `dir`.
    fn config_text(dir: &Path, extra: &str, services: &str) -> String {
        let text = format!(
            "coffey:\n  socket: {}\n  log:\n    path: {}\n    console: false\n{extra}services:\n{services}",
            dir.join("s.sock").display(),
            dir.join("coffey.log").display(),
        );
        text.replace("$DIR", &dir.display().to_string())
    }

    /// Writes the config and starts coffeyd as PID 1 with `args` after
    /// `-c CONFIG`. Waits for the daemon's "started" line.
    fn start(tag: &str, extra: &str, services: &str, args: &[&str]) -> Ns {
        Self::start_with(tag, extra, services, args, |_| {})
    }

    fn start_with(
        tag: &str,
        extra: &str,
        services: &str,
        args: &[&str],
        prepare: impl FnOnce(&Path),
    ) -> Ns {
        let dir = tempdir(tag);
        prepare(&dir);
        let config = dir.join("config.yaml");
        std::fs::write(&config, Self::config_text(&dir, extra, services)).unwrap();
        let mut ns = Self::spawn(dir, config, args, Stdio::null(), true);
        ns.wait_log("started: pid 1,", 10.0);
        ns
    }

    /// Starts `unshare ... coffeyd -c CONFIG args...`; stderr goes to
    /// `dir/stderr`. Does not wait for anything but the init's pid.
    ///
    /// `own_net`: a network namespace of its own as well. Abstract unix
    /// socket names are per network namespace, and coffeyd's sd_notify
    /// sockets are named after its pid, which is 1 in every container: two
    /// at once in one network namespace collide (see
    /// `sd_notify_in_two_containers_sharing_a_network_namespace`).
    fn spawn(dir: PathBuf, config: PathBuf, args: &[&str], stdin: Stdio, own_net: bool) -> Ns {
        let net: &[&str] = if own_net { &["--net"] } else { &[] };
        let mut cmd = Command::new("unshare");
        cmd.args(UNSHARE)
            .args(net)
            .args([BIN, "-c"])
            .arg(&config)
            .args(args);
        Self::spawn_cmd(dir, cmd, stdin)
    }

    /// `unshare ... sh -c 'WRAPPER; exec coffeyd -c CONFIG'`: the wrapper
    /// runs as PID 1 first (in the new mount namespace, e.g. to mount
    /// something), then becomes coffeyd. Waits for "started".
    fn start_wrapped(dir: PathBuf, config: PathBuf, wrapper: &str) -> Ns {
        let script = format!(
            "{}\nexec \"$0\" -c \"$1\"",
            wrapper.replace("$DIR", &dir.display().to_string())
        );
        let mut cmd = Command::new("unshare");
        cmd.args(UNSHARE)
            .args(["--net", "sh", "-c", &script, BIN])
            .arg(&config);
        let mut ns = Self::spawn_cmd(dir, cmd, Stdio::null());
        ns.wait_log("started: pid 1,", 10.0);
        ns
    }

    fn spawn_cmd(dir: PathBuf, mut cmd: Command, stdin: Stdio) -> Ns {
        let child = cmd
            .stdin(stdin)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
            .spawn()
            .unwrap();
        let upid = child.id() as i32;
        let mut ns = Ns {
            log: dir.join("coffey.log"),
            socket: dir.join("s.sock"),
            dir,
            child: Some(child),
            init: 0,
        };
        // The forked child of unshare is PID 1 inside (before and after
        // its exec of coffeyd: the pid does not change).
        let mut ended = None;
        let child = ns.child.as_mut().unwrap();
        let found = wait_for(10.0, "the child of unshare", || {
            if let Some(p) = children(upid).into_iter().next() {
                return Some(Some(p));
            }
            ended = child.try_wait().unwrap();
            ended.map(|_| None)
        });
        // coffeyd may have come and gone (a config it refuses): init 0,
        // and the exit code is unshare's (kept by try_wait).
        match found.map(|p| (p, ns_pid_of(p))) {
            Some((p, Some(n))) => {
                ns.init = p;
                assert_eq!(n, 1, "not PID 1 inside");
            }
            // Gone between finding it and reading its status (a main
            // service whose exec fails ends coffeyd at once): as above.
            Some((_, None)) => {}
            None => assert!(ended.is_some(), "{}", ns.stderr_text()),
        }
        ns
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Waits until the log contains `pat` `n` times; returns the log.
    /// Fails early (with log and stderr) if the namespace ended.
    fn wait_count(&mut self, pat: &str, n: usize, secs: f64) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs_f64(secs);
        let mut gone = false;
        loop {
            let t = self.log_text();
            if t.matches(pat).count() >= n {
                return t;
            }
            if gone || std::time::Instant::now() > deadline {
                panic!(
                    "no {n} x {pat:?} in the log within {secs}s (namespace ended: {gone})\n--- log:\n{t}\n--- stderr:\n{}",
                    self.stderr_text()
                );
            }
            gone = !self.running(); // if so: one last read
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    fn wait_log(&mut self, pat: &str, secs: f64) -> String {
        self.wait_count(pat, 1, secs)
    }

    /// Waits for the unshare process to exit; its exit code is coffeyd's.
    fn wait_exit(&mut self, secs: f64) -> Option<i32> {
        let child = self.child.as_mut().unwrap();
        let st = wait_for(secs, "the namespace to exit", || child.try_wait().unwrap());
        self.child = None;
        st.code()
    }

    /// Runs the client against the socket: `args` then `-s SOCK`, with a
    /// deadline (killed after `secs`: `code` None).
    fn ctl_for(&self, args: &[&str], secs: f64) -> Out {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = &self.dir;
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let (o, e) = (
            dir.join(format!("ctl{n}.out")),
            dir.join(format!("ctl{n}.err")),
        );
        let mut c = Command::new(BIN)
            .args(args)
            .arg("-s")
            .arg(&self.socket)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&o).unwrap())
            .stderr(std::fs::File::create(&e).unwrap())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs_f64(secs);
        let code = loop {
            if let Some(st) = c.try_wait().unwrap() {
                break st.code();
            }
            if std::time::Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        Out {
            code,
            stdout: std::fs::read_to_string(&o).unwrap_or_default(),
            stderr: std::fs::read_to_string(&e).unwrap_or_default(),
        }
    }

    fn ctl(&self, args: &[&str]) -> Out {
        self.ctl_for(args, 30.0)
    }

    /// `status` as JSON: one object per service.
    fn status(&self) -> Vec<serde_json::Value> {
        let o = self.ctl(&["-j", "status"]);
        assert_eq!(o.code, Some(0), "{o:?}");
        let v: serde_json::Value = serde_json::from_str(o.stdout.trim())
            .unwrap_or_else(|e| panic!("bad JSON {:?}: {e}", o.stdout));
        v.as_array().unwrap().clone()
    }

    /// (state, namespace pid, restarts) of one service.
    fn svc(&self, name: &str) -> (String, i64, u64) {
        let all = self.status();
        let s = all
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no service {name} in {all:?}"));
        (
            s["state"].as_str().unwrap().to_owned(),
            s["pid"].as_i64().unwrap_or(0),
            s["restarts"].as_u64().unwrap(),
        )
    }

    /// Waits until `name` is running with a pid other than `not`.
    fn wait_running(&self, name: &str, not: i64, secs: f64) -> (i64, u64) {
        wait_for(secs, &format!("{name} running, pid != {not}"), || {
            let (state, pid, restarts) = self.svc(name);
            (state == "running" && pid > 0 && pid != not).then_some((pid, restarts))
        })
    }

    /// The host pid of the process with pid `ns` inside the namespace.
    fn host_pid(&self, ns: i64) -> i32 {
        std::iter::once(self.init)
            .chain(descendants(self.init))
            .find(|&h| ns_pid_of(h).map(i64::from) == Some(ns))
            .unwrap_or_else(|| panic!("no process with namespace pid {ns}"))
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Ok(None) = c.try_wait() {
                // SIGKILL to a namespace's init kills everything inside.
                signal(self.init, 9);
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn pos(log: &str, p: &str) -> usize {
    log.find(p)
        .unwrap_or_else(|| panic!("{p:?} missing in\n{log}"))
}

#[test]
fn container_mode_sigterm_stops_in_order_and_exits_0() {
    need_ns!();
    let services = [
        svc("c", "exec sleep 600", "    depends_on: [b]\n"),
        svc("b", "exec sleep 600", "    depends_on: [a]\n"),
        svc("a", "exec sleep 600", ""),
    ]
    .concat();
    let mut ns = Ns::start("p1term", "", &services, &[]);
    ns.wait_log("c: spawned", 10.0);
    for n in ["a", "b", "c"] {
        assert_eq!(ns.svc(n).0, "running", "{n}");
    }
    // PID 1 ignores signals it has no handler for: this only works
    // because coffeyd takes SIGTERM (through its signalfd).
    signal(ns.init, 15);
    assert_eq!(ns.wait_exit(20.0), Some(0), "{}", ns.stderr_text());
    let log = ns.log_text();
    assert!(log.contains("SIGTERM: shutting down"), "{log}");
    assert!(pos(&log, "c: stopped") < pos(&log, "b: stopping"), "{log}");
    assert!(pos(&log, "b: stopped") < pos(&log, "a: stopping"), "{log}");
    assert_clean_shutdown(&log);
    // Container mode: no system-mode final kill, sync or reboot.
    assert!(!log.contains("sending SIGKILL to all"), "{log}");
    let err = ns.stderr_text();
    assert!(!err.contains("reboot") && !err.contains("sending"), "{err}");
    assert!(!ns.socket.exists(), "socket removed");
}

#[test]
fn main_service_exit_code_becomes_the_exit_code() {
    need_ns!();
    let services = [
        svc("app", "sleep 0.3; exit 7", ""),
        svc("side", "exec sleep 600", ""),
    ]
    .concat();
    let mut ns = Ns::start("p1main", "  main: app\n", &services, &[]);
    assert_eq!(ns.wait_exit(20.0), Some(7), "{}", ns.log_text());
    let log = ns.log_text();
    assert!(
        log.contains("main service exited (exit code 7); stopping everything, exit code 7"),
        "{log}"
    );
    assert!(pos(&log, "app: pid") < pos(&log, "side: stopping"), "{log}");
    assert!(log.contains("side: stopped"), "{log}");
    assert_eq!(log.matches("app: spawned").count(), 1, "no restart\n{log}");
    assert_clean_shutdown(&log);
}

#[test]
fn main_service_killed_by_sigkill_exits_137() {
    need_ns!();
    let services = [
        svc("app", "exec sleep 600", ""),
        svc("side", "exec sleep 600", ""),
    ]
    .concat();
    let mut ns = Ns::start("p1kill", "  main: app\n", &services, &[]);
    let (pid, _) = ns.wait_running("app", 0, 10.0);
    ns.wait_running("side", 0, 10.0);
    let host = ns.host_pid(pid);
    assert_eq!(cmdline(host).first().map(String::as_str), Some("sleep"));
    signal(host, 9);
    assert_eq!(ns.wait_exit(20.0), Some(137), "{}", ns.log_text());
    let log = ns.log_text();
    assert!(
        log.contains("main service exited (signal SIGKILL); stopping everything, exit code 137"),
        "{log}"
    );
    assert!(log.contains("side: stopped"), "{log}");
}

/// Starts `app` (the main service) and `side`, waits until both run,
/// sends SIGTERM to PID 1 and returns coffeyd's exit code and log.
fn sigterm_with_main(tag: &str, extra: &str, app: &str, app_extra: &str) -> (Option<i32>, String) {
    let services = [
        svc("app", app, app_extra),
        svc("side", "exec sleep 600", ""),
    ]
    .concat();
    let mut ns = Ns::start(tag, &format!("  main: app\n{extra}"), &services, &[]);
    ns.wait_running("app", 0, 10.0);
    ns.wait_running("side", 0, 10.0);
    signal(ns.init, 15);
    let code = ns.wait_exit(20.0);
    let log = ns.log_text();
    assert!(log.contains("side: stopped"), "{log}");
    assert_clean_shutdown(&log);
    (code, log)
}

#[test]
fn main_trapping_sigterm_exits_with_its_own_code() {
    need_ns!();
    // `docker stop`: the app catches SIGTERM, cleans up and exits 42.
    let (code, log) =
        sigterm_with_main("p1trap", "", "trap \"exit 42\" TERM; sleep 600 & wait", "");
    assert_eq!(code, Some(42), "{log}");
    assert!(log.contains("main service exited (exit code 42)"), "{log}");
}

#[test]
fn main_killed_by_the_outside_sigterm_exits_143() {
    need_ns!();
    let (code, log) = sigterm_with_main("p1term143", "", "exec sleep 600", "");
    assert_eq!(code, Some(143), "{log}");
    assert!(
        log.contains("main service exited (signal SIGTERM)"),
        "{log}"
    );
}

#[test]
fn main_killed_at_the_shutdown_deadline_exits_137() {
    need_ns!();
    // The app ignores SIGTERM; its stop_timeout is longer than the
    // shutdown's, so the shutdown deadline's SIGKILL ends it.
    let (code, log) = sigterm_with_main(
        "p1deadline",
        "  shutdown_timeout: 1s\n",
        "trap \"\" TERM; exec sleep 600",
        "    stop_timeout: 30s\n",
    );
    assert_eq!(code, Some(137), "{log}");
    assert!(
        log.contains("main service exited (signal SIGKILL)"),
        "{log}"
    );
}

#[test]
fn main_that_never_ran_exits_128_plus_the_signal() {
    need_ns!();
    // `app` waits for `gate`, which never reports ready.
    let services = [
        svc(
            "gate",
            "exec sleep 600",
            "    healthcheck:\n      readiness:\n        type: notify\n",
        ),
        svc(
            "app",
            "exit 0",
            "    depends_on:\n      - name: gate\n        condition: healthy\n",
        ),
    ]
    .concat();
    let mut ns = Ns::start("p1never", "  main: app\n", &services, &[]);
    ns.wait_log("gate: spawned", 10.0);
    signal(ns.init, 2);
    assert_eq!(ns.wait_exit(20.0), Some(130), "{}", ns.log_text());
    let log = ns.log_text();
    assert!(!log.contains("app: spawned"), "{log}");
    assert!(
        log.contains("main service never ran; exit code 130 (SIGINT)"),
        "{log}"
    );
}

#[test]
fn main_oneshot_that_completes_exits_0() {
    need_ns!();
    // A Kubernetes Job: the work is a oneshot; its success ends the pod.
    let services = [
        svc("job", "sleep 0.2", "    type: oneshot\n"),
        svc("side", "exec sleep 600", ""),
    ]
    .concat();
    let mut ns = Ns::start("p1job", "  main: job\n", &services, &[]);
    assert_eq!(ns.wait_exit(20.0), Some(0), "{}", ns.log_text());
    let log = ns.log_text();
    assert!(log.contains("job: completed"), "{log}");
    assert!(
        log.contains("main service exited (exit code 0); stopping everything, exit code 0"),
        "{log}"
    );
    assert!(log.contains("side: stopped"), "{log}");
}

/// `main` runs `$DIR/app`, a copy of /bin/true that the oneshot `break`
/// (which `main` waits for) spoils with `how` first.
fn main_exec_fails(tag: &str, how: &str) -> (Option<i32>, String) {
    let services = [
        svc("break", &format!("{how} $DIR/app"), "    type: oneshot\n"),
        "  - name: app\n    binary: $DIR/app\n    depends_on:\n      - name: break\n        condition: completed\n".to_owned(),
        svc("side", "exec sleep 600", ""),
    ]
    .concat();
    let mut ns = Ns::start_with(tag, "  main: app\n", &services, &[], |dir| {
        std::fs::copy("/bin/true", dir.join("app")).unwrap();
    });
    let code = ns.wait_exit(20.0);
    let log = ns.log_text();
    assert!(log.contains("side: stopped"), "{log}");
    (code, log)
}

#[test]
fn main_whose_binary_is_gone_exits_127() {
    need_ns!();
    let (code, log) = main_exec_fails("p1gone", "rm");
    assert_eq!(code, Some(127), "{log}");
    assert!(
        log.contains("main service cannot start: exec failed: No such file or directory; stopping everything, exit code 127"),
        "{log}"
    );
}

#[test]
fn main_whose_binary_is_not_executable_exits_126() {
    need_ns!();
    let (code, log) = main_exec_fails("p1noexec", "chmod 0644");
    assert_eq!(code, Some(126), "{log}");
    assert!(log.contains("stopping everything, exit code 126"), "{log}");
}

#[test]
fn orphans_of_double_forking_services_are_reaped() {
    need_ns!();
    // 2 + 3 + 2 orphans: each `( x & )` subshell exits at once and leaves
    // `x` to PID 1; in `c`, the orphaned `sh` leaves a second orphan.
    let services = [
        svc("a", "(sleep 0.2 &) ; (sleep 0.3 &); exec sleep 600", ""),
        svc(
            "b",
            "(sleep 0.1 &); (sleep 0.4 &); (sleep 0.25 &); exec sleep 600",
            "",
        ),
        svc(
            "c",
            "(sh -c \"sleep 0.3 & exec sleep 0.1\" &); exec sleep 600",
            "",
        ),
    ]
    .concat();
    let mut ns = Ns::start("p1orph", "", &services, &[]);
    ns.wait_count("reaped orphan pid", 7, 15.0);
    // Once every orphan is reaped, PID 1's only children are the three
    // services (their host pids).
    let want: BTreeSet<i32> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            let (pid, _) = ns.wait_running(n, 0, 10.0);
            ns.host_pid(pid)
        })
        .collect();
    let init = ns.init;
    wait_for(10.0, "PID 1's children to be the services only", || {
        (children(init) == want).then_some(())
    });
    // No zombie anywhere in the namespace.
    let mut all = descendants(init);
    all.insert(init);
    assert_eq!(all.len(), 4, "{all:?}");
    for p in &all {
        assert_ne!(proc_state(*p), Some('Z'), "zombie {p} in {all:?}");
        assert_eq!(proc_state(*p).map(|_| ()), Some(()), "{p} vanished");
    }
    let log = ns.log_text();
    assert_eq!(log.matches("reaped orphan pid").count(), 7, "{log}");
    for s in ["a", "b", "c"] {
        assert_eq!(log.matches(&format!("{s}: spawned")).count(), 1, "{log}");
    }
    signal(init, 15);
    assert_eq!(ns.wait_exit(20.0), Some(0));
    let log = ns.log_text();
    assert_clean_shutdown(&log);
}

#[test]
fn garbage_argv_is_ignored_as_pid1() {
    need_ns!();
    let services = svc("api", "exec sleep 600", "");
    let mut ns = Ns::start(
        "p1argv",
        "",
        &services,
        &[
            "garbage",
            "--weird=1",
            "quiet",
            "splash",
            "--help",
            "-x",
            "init=/sbin/coffeyd",
        ],
    );
    let o = ns.ctl(&["status"]);
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(o.stderr.is_empty(), "{o:?}");
    assert!(o.stdout.contains("api"), "{o:?}");
    assert!(o.stdout.contains("running"), "{o:?}");
    assert!(ns.running());
    let o = ns.ctl(&["shutdown"]);
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(ns.wait_exit(20.0), Some(0), "{}", ns.stderr_text());
    let log = ns.log_text();
    assert!(log.contains("api: stopped"), "{log}");
    assert_clean_shutdown(&log);
}

#[test]
fn reexec_as_pid1_keeps_children_pids_and_counters() {
    need_ns!();
    let backoff = "    backoff:\n      initial: 50ms\n";
    let services = [
        svc("steady", "exec sleep 600", backoff),
        svc("flaky", "exec sleep 600", backoff),
    ]
    .concat();
    let mut ns = Ns::start("p1reexec", "", &services, &[]);
    let (steady, _) = ns.wait_running("steady", 0, 10.0);
    let (mut flaky, _) = ns.wait_running("flaky", 0, 10.0);
    // Crash flaky twice.
    for n in 1..=2 {
        signal(ns.host_pid(flaky), 9);
        let (p, r) = ns.wait_running("flaky", flaky, 10.0);
        assert_eq!(r, n);
        flaky = p;
    }
    let steady_host = ns.host_pid(steady);
    let flaky_host = ns.host_pid(flaky);
    let init = ns.init;
    let exe = std::fs::read_link(format!("/proc/{init}/exe")).unwrap();

    let o = ns.ctl(&["reexec"]);
    assert_eq!(o.code, Some(0), "{o:?}");
    let log = ns.wait_count("adopted pid", 2, 10.0);
    assert!(log.contains(&format!("steady: adopted pid {steady} (restarts 0)")));
    assert!(log.contains(&format!("flaky: adopted pid {flaky} (restarts 2)")));
    assert_eq!(log.matches("started: pid 1,").count(), 2, "{log}");
    // The same init process (same host pid, still unshare's child).
    assert!(ns.running());
    let upid = ns.child.as_ref().unwrap().id() as i32;
    assert_eq!(children(upid), BTreeSet::from([init]));
    assert_eq!(ns_pid_of(init), Some(1));
    assert_eq!(
        std::fs::read_link(format!("/proc/{init}/exe")).unwrap(),
        exe
    );
    // The same service processes, pids and counters.
    assert_eq!(ns.svc("steady"), ("running".into(), steady, 0));
    assert_eq!(ns.svc("flaky"), ("running".into(), flaky, 2));
    assert!(alive(steady_host) && alive(flaky_host));
    assert_eq!(children(init), BTreeSet::from([steady_host, flaky_host]));
    // Still supervising: a killed service comes back.
    signal(steady_host, 9);
    let (p, r) = ns.wait_running("steady", steady, 10.0);
    assert_eq!(r, 1);
    assert!(p != steady);
    let log = ns.log_text();
    assert!(
        log.contains(&format!("steady: pid {steady} exited with signal SIGKILL")),
        "{log}"
    );
    signal(init, 15);
    assert_eq!(ns.wait_exit(20.0), Some(0), "{}", ns.stderr_text());
    let log = ns.log_text();
    assert!(log.contains("flaky: stopped"), "{log}");
    assert_clean_shutdown(&log);
}

/// Container mode with one service and an `emergency` program that
/// leaves `emergency-ran` in the test's directory if it ever runs.
fn with_emergency_script(tag: &str) -> Ns {
    let services = svc("api", "exec sleep 600", "");
    let ns = Ns::start_with(
        tag,
        "  emergency: $DIR/emergency.sh\n",
        &services,
        &[],
        |dir| {
            let script = dir.join("emergency.sh");
            std::fs::write(
                &script,
                format!("#!/bin/sh\necho $$ > {}/emergency-ran\n", dir.display()),
            )
            .unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        },
    );
    ns
}

/// A panic in container mode is a failure the orchestrator must see: no
/// emergency shell (it would read EOF and exit 0, and a Job would count as
/// succeeded), but exit 70 (EX_SOFTWARE), which also ends the namespace and
/// its services. System mode keeps the emergency program.
#[test]
fn panic_in_container_mode_exits_70_without_the_emergency_program() {
    need_ns!();
    let mut ns = with_emergency_script("p1panic");
    ns.wait_running("api", 0, 10.0);
    // The daemon panics mid-request: the client gets no proper answer.
    let o = ns.ctl_for(&["__panic"], 10.0);
    assert_ne!(o.code, Some(0), "{o:?}");
    assert_eq!(ns.wait_exit(10.0), Some(70), "{}", ns.stderr_text());
    assert!(
        !ns.dir.join("emergency-ran").exists(),
        "the emergency program ran"
    );
    let err = ns.stderr_text();
    assert!(
        err.contains("coffeyd: PANIC: debug panic requested"),
        "{err}"
    );
    assert!(ns
        .log_text()
        .contains("control: debug panic requested by uid"));
}

/// A crash of PID 1 that is not a Rust panic (a fault, or any panic of
/// the release build, whose `panic=immediate-abort` runs no hook and ends
/// in an illegal instruction) takes the panic path too: exit 70 in
/// container mode, never a death by signal. The signal is sent from
/// outside: the kernel delivers it to a namespace's init only when init
/// handles it, so without the handler nothing happens.
#[test]
fn a_fatal_signal_in_container_mode_exits_70_like_a_panic() {
    need_ns!();
    let mut ns = with_emergency_script("p1fatal");
    ns.wait_running("api", 0, 10.0);
    signal(ns.init, 4); // SIGILL
    assert_eq!(ns.wait_exit(10.0), Some(70), "{}", ns.stderr_text());
    assert!(
        !ns.dir.join("emergency-ran").exists(),
        "the emergency program ran"
    );
    let err = ns.stderr_text();
    assert!(err.contains("coffeyd: PANIC: fatal signal SIGILL"), "{err}");
}

/// Runs coffeyd as PID 1 on a config it cannot use, with `input` on
/// stdin (for the emergency shell). Returns (exit code, stderr, dir).
fn broken_config(
    tag: &str,
    config_text: Option<&str>,
    input: &str,
) -> (Option<i32>, String, PathBuf) {
    let dir = tempdir(tag);
    let config = dir.join("config.yaml");
    if let Some(t) = config_text {
        std::fs::write(&config, t).unwrap();
    }
    let mut ns = Ns::spawn(dir.clone(), config, &[], Stdio::piped(), true);
    let mut stdin = ns.child.as_mut().unwrap().stdin.take().unwrap();
    let _ = stdin.write_all(input.replace("$DIR", &dir.display().to_string()).as_bytes());
    drop(stdin);
    let code = ns.wait_exit(20.0);
    (code, ns.stderr_text(), dir)
}

/// What a container's PID 1 must do with a config it cannot load: print
/// the diagnostics and exit 1 (the orchestrator shows CrashLoopBackOff),
/// never run the emergency shell, which would read EOF and exit 0 (a
/// Kubernetes Job would count as succeeded).
fn assert_config_failure(code: Option<i32>, err: &str, dir: &Path) {
    assert!(err.contains("config has errors; not starting"), "{err}");
    assert!(!err.contains("emergency"), "{err}");
    assert_eq!(code, Some(1), "{err}");
    assert!(!dir.join("sh-pid").exists(), "a shell ran");
}

#[test]
fn missing_config_in_container_mode_exits_1() {
    need_ns!();
    let (code, err, dir) = broken_config("p1nocfg", None, "echo $$ > $DIR/sh-pid; exit 0\n");
    assert!(err.contains("error: cannot read config"), "{err}");
    assert_config_failure(code, &err, &dir);
}

#[test]
fn syntax_error_in_container_mode_exits_1() {
    need_ns!();
    let text = "coffey:\n  emergency: /nonexistent/emergency\n  socket: [unclosed\nservices: []\n";
    let (code, err, dir) = broken_config("p1syntax", Some(text), "echo $$ > $DIR/sh-pid\n");
    let loc = format!(
        "{}:4:9: error: invalid YAML",
        dir.join("config.yaml").display()
    );
    assert!(err.contains(&loc), "{err}");
    assert_config_failure(code, &err, &dir);
}

#[test]
fn sd_notify_readiness_as_pid1() {
    need_ns!();
    let notify = need("/usr/bin/systemd-notify", "systemd");
    let ready = "    healthcheck:\n      readiness:\n        type: notify\n";
    let services = [
        svc("quiet", "exec sleep 600", ready),
        svc("loud", &format!("{notify} --ready; exec sleep 600"), ready),
    ]
    .concat();
    let mut ns = Ns::start("p1notify", "", &services, &[]);
    let log = ns.wait_log("loud: ready", 10.0);
    assert!(!log.contains("quiet: ready"), "{log}");
    assert_eq!(ns.svc("quiet").0, "starting");
    assert_eq!(ns.svc("loud").0, "running");
    signal(ns.init, 15);
    assert_eq!(ns.wait_exit(20.0), Some(0), "{}", ns.stderr_text());
}

#[test]
fn sd_notify_in_two_containers_sharing_a_network_namespace() {
    need_ns!();
    let notify = need("/usr/bin/systemd-notify", "systemd");
    let ready = "    healthcheck:\n      readiness:\n        type: notify\n";
    // First: a service that never says it is ready.
    let quiet = svc("app", "exec sleep 600", ready);
    // Second, in the same network namespace: one that says so at once.
    let loud = svc("app", &format!("{notify} --ready; exec sleep 600"), ready);
    let mut both = Vec::new();
    for (tag, services) in [("p1net1", &quiet), ("p1net2", &loud)] {
        let dir = tempdir(tag);
        let config = dir.join("config.yaml");
        std::fs::write(&config, Ns::config_text(&dir, "", services)).unwrap();
        let mut ns = Ns::spawn(dir, config, &[], Stdio::null(), false);
        ns.wait_log("app: spawned", 10.0);
        both.push(ns);
    }
    let log = both[1].wait_log("app: ready", 10.0);
    assert!(log.contains("app: ready"), "{log}");
    assert_eq!(both[0].svc("app").0, "starting", "{}", both[0].log_text());
    assert!(!both[0].log_text().contains("app: ready"));
    for ns in &mut both {
        signal(ns.init, 15);
        assert_eq!(ns.wait_exit(20.0), Some(0), "{}", ns.stderr_text());
    }
}

/// Starts the plain daemon (not PID 1) on `services`, through
/// `sh -c 'WRAPPER; exec coffeyd -c CONFIG'`, so the wrapper can set up
/// what coffeyd inherits (descriptors, mounts, users). `wrapper` runs
/// with `$DIR` replaced. Returns the dir and the sh/coffeyd child.
fn wrapped_daemon(
    tag: &str,
    launcher: &[&str],
    wrapper: &str,
    extra: &str,
    services: &str,
) -> (PathBuf, Child) {
    let dir = tempdir(tag);
    let config = dir.join("config.yaml");
    std::fs::write(&config, Ns::config_text(&dir, extra, services)).unwrap();
    let script = format!(
        "{}\nexec \"$0\" -c \"$1\"",
        wrapper.replace("$DIR", &dir.display().to_string())
    );
    let (prog, pre) = launcher.split_first().unwrap_or((&"sh", &[]));
    let mut cmd = Command::new(prog);
    cmd.args(pre);
    if !launcher.is_empty() {
        cmd.arg("sh");
    }
    let child = cmd
        .args(["-c", &script, BIN])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .spawn()
        .unwrap();
    (dir, child)
}

/// The descriptor numbers in an `ls -l /proc/self/fd/` listing, without
/// the directory that `ls` itself opened to list them.
fn fd_numbers(listing: &str) -> BTreeSet<u32> {
    listing
        .lines()
        .filter_map(|l| {
            let (left, target) = l.split_once(" -> ")?;
            if target.starts_with("/proc/") && target.ends_with("/fd") {
                return None;
            }
            left.split_whitespace().last()?.parse().ok()
        })
        .collect()
}

fn wait_file(path: &Path, secs: f64) -> String {
    wait_for(secs, &format!("{}", path.display()), || {
        std::fs::read_to_string(path).ok()
    })
}

#[test]
fn services_inherit_only_stdio_and_the_readiness_fd() {
    // coffeyd's parent leaves fd 7 (/dev/null) and fd 9 (a FIFO, opened
    // read-write: a pipe) open and inheritable.
    let list =
        "ls -l /proc/self/fd/ > $DIR/NAME.tmp && mv $DIR/NAME.tmp $DIR/NAME.fds; exec sleep 600";
    let services = [
        svc("plain", &list.replace("NAME", "plain"), ""),
        svc(
            "notifier",
            &list.replace("NAME", "notifier"),
            "    healthcheck:\n      readiness:\n        type: notify\n        fd: 5\n",
        ),
    ]
    .concat();
    let (dir, mut child) = wrapped_daemon(
        "fdleak",
        &[],
        "mkfifo $DIR/fifo && exec 7</dev/null 9<>$DIR/fifo",
        "",
        &services,
    );
    let pid = child.id() as i32;
    let plain = wait_file(&dir.join("plain.fds"), 10.0);
    let notifier = wait_file(&dir.join("notifier.fds"), 10.0);
    // The daemon itself did inherit them (the test is not vacuous).
    let daemon_fds: BTreeSet<u32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    assert!(
        daemon_fds.contains(&7) && daemon_fds.contains(&9),
        "{daemon_fds:?}"
    );
    assert_eq!(fd_numbers(&plain), BTreeSet::from([0, 1, 2]), "{plain}");
    assert_eq!(
        fd_numbers(&notifier),
        BTreeSet::from([0, 1, 2, 5]),
        "{notifier}"
    );
    signal(pid, 15);
    let st = wait_for(20.0, "the daemon to exit", || child.try_wait().unwrap());
    assert_eq!(st.code(), Some(0));
    let log = std::fs::read_to_string(dir.join("coffey.log")).unwrap();
    assert_clean_shutdown(&log);
}

/// A config whose socket and pid file are at `socket` and `pid_file`
/// (with `$DIR`), running one long service.
fn paths_config(dir: &Path, socket: &str, pid_file: &str) -> PathBuf {
    let text = format!(
        "coffey:\n  socket: {socket}\n  pid_file: {pid_file}\n  log:\n    path: $DIR/coffey.log\n    console: false\nservices:\n{}",
        svc("api", "exec sleep 600", "")
    )
    .replace("$DIR", &dir.display().to_string());
    let config = dir.join("config.yaml");
    std::fs::write(&config, text).unwrap();
    config
}

/// The log of a daemon that ran without its socket and pid file: each
/// refusal logged once, the service ran, the shutdown was clean.
fn assert_ran_without_paths(log: &str, socket_err: &str, pid_err: &str) {
    let sock = format!("cannot bind the control socket {socket_err}; running without it");
    let pid = format!("cannot write the pid file {pid_err}; running without it");
    assert_eq!(log.matches(&sock).count(), 1, "{sock:?} once in\n{log}");
    assert_eq!(log.matches(&pid).count(), 1, "{pid:?} once in\n{log}");
    assert!(log.contains("slots), socket none\n"), "{log}");
    assert!(log.contains("api: spawned"), "{log}");
    assert!(log.contains("api: stopped"), "{log}");
    assert_clean_shutdown(log);
}

#[test]
fn read_only_root_as_pid1_runs_without_socket_and_pid_file() {
    need_ns!();
    // Kubernetes' readOnlyRootFilesystem: the socket's filesystem is a
    // read-only tmpfs, mounted in the container's own mount namespace;
    // the pid file's directory does not exist.
    let dir = tempdir("p1rofs");
    std::fs::create_dir(dir.join("ro")).unwrap();
    let config = paths_config(&dir, "$DIR/ro/run/coffey.sock", "$DIR/missing/coffey.pid");
    let mut ns = Ns::start_wrapped(dir.clone(), config, "mount -t tmpfs -o ro tmpfs $DIR/ro");
    ns.wait_log("api: spawned", 10.0);
    let d = dir.display();
    let log = ns.log_text();
    assert!(log.contains("started: pid 1, 1 services"), "{log}");
    signal(ns.init, 15);
    assert_eq!(ns.wait_exit(20.0), Some(0), "{}", ns.stderr_text());
    assert_ran_without_paths(
        &ns.log_text(),
        &format!("{d}/ro/run/coffey.sock: No such file or directory"),
        &format!("{d}/missing/coffey.pid: No such file or directory"),
    );
}

/// The plain daemon in `launcher` with its socket and pid file where the
/// filesystem refuses them; SIGTERM after the service ran.
fn refused_paths(
    tag: &str,
    launcher: &[&str],
    wrapper: &str,
    socket: &str,
    prepare: impl FnOnce(&Path),
) -> (String, String) {
    let dir = tempdir(tag);
    prepare(&dir);
    let config = paths_config(&dir, socket, &socket.replace("coffey.sock", "coffey.pid"));
    let script = format!(
        "{}\nexec \"$0\" -c \"$1\"",
        wrapper.replace("$DIR", &dir.display().to_string())
    );
    // A copy in the test's own (0755) directory: another uid may not reach
    // the build tree (CI clones into a 0700 `mktemp -d`).
    let bin = reachable_copy(&dir.join("coffeyd"));
    let mut child = Command::new(launcher[0])
        .args(&launcher[1..])
        .args(["sh", "-c", &script])
        .arg(&bin)
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let log_path = dir.join("coffey.log");
    let stderr = || std::fs::read_to_string(dir.join("stderr")).unwrap_or_default();
    wait_for(10.0, "api: spawned", || {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("daemon exited {st}\n{}", stderr());
        }
        let t = std::fs::read_to_string(&log_path).unwrap_or_default();
        t.contains("api: spawned").then_some(())
    });
    signal(child.id() as i32, 15);
    let st = wait_for(20.0, "the daemon to exit", || child.try_wait().unwrap());
    assert_eq!(st.code(), Some(0), "{}", stderr());
    (
        dir.display().to_string(),
        std::fs::read_to_string(&log_path).unwrap(),
    )
}

#[test]
fn read_only_filesystem_supervisor_runs_without_socket_and_pid_file() {
    need_ns!();
    // Not PID 1: a mount namespace of its own, with a read-only tmpfs.
    let (d, log) = refused_paths(
        "rofs",
        &["unshare", "--mount", "--propagation", "private"],
        "mount -t tmpfs -o ro tmpfs $DIR/ro",
        "$DIR/ro/coffey.sock",
        |dir| std::fs::create_dir(dir.join("ro")).unwrap(),
    );
    assert_ran_without_paths(
        &log,
        &format!("{d}/ro/coffey.sock: Read-only file system"),
        &format!("{d}/ro/coffey.pid: Read-only file system"),
    );
}

#[test]
fn unwritable_directory_supervisor_runs_without_socket_and_pid_file() {
    need_ns!();
    // An unprivileged daemon whose socket directory belongs to root.
    use std::os::unix::fs::PermissionsExt;
    let (d, log) = refused_paths(
        "eacces",
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ],
        "",
        "$DIR/locked/coffey.sock",
        |dir| {
            std::fs::create_dir(dir.join("locked")).unwrap();
            let log = dir.join("coffey.log");
            std::fs::write(&log, "").unwrap();
            std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666)).unwrap();
        },
    );
    assert_ran_without_paths(
        &log,
        &format!("{d}/locked/coffey.sock: Permission denied"),
        &format!("{d}/locked/coffey.pid: Permission denied"),
    );
}
