//! coffeyd under systemd (`Type=notify`, examples/coffeyd.service): the
//! test plays systemd's part with a real unix datagram socket in
//! `NOTIFY_SOCKET` and reads what coffeyd sends: READY=1 once startup has
//! settled, WATCHDOG=1 at half `WATCHDOG_USEC`, STOPPING=1 at shutdown.
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

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Managed {
    dir: PathBuf,
    sock: UnixDatagram,
    child: Child,
}

/// Starts coffeyd with `services` and the test's socket as NOTIFY_SOCKET
/// (`notify` as written there: a path or `@name`), plus `env`.
fn start(tag: &str, services: &str, notify: &str, env: &[(&str, &str)]) -> Managed {
    let dir = tempdir(tag);
    let sock = if let Some(name) = notify.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        UnixDatagram::bind_addr(&addr).unwrap()
    } else {
        UnixDatagram::bind(dir.join(notify)).unwrap()
    };
    let path = if notify.starts_with('@') {
        notify.to_owned()
    } else {
        dir.join(notify).display().to_string()
    };
    let config = dir.join("config.yaml");
    let text = format!(
        "coffey:\n  socket: {d}/s.sock\n  log:\n    path: {d}/coffey.log\n    console: false\nservices:\n{services}",
        d = dir.display()
    );
    std::fs::write(&config, text.replace("$DIR", &dir.display().to_string())).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("-c")
        .arg(&config)
        .env("NOTIFY_SOCKET", &path)
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    Managed { dir, sock, child }
}

impl Managed {
    /// The next datagram within `secs`, or None.
    fn next(&self, secs: f64) -> Option<String> {
        self.sock
            .set_read_timeout(Some(Duration::from_secs_f64(secs)))
            .unwrap();
        let mut buf = [0u8; 512];
        let n = self.sock.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Reads datagrams until one contains `what`, within `secs`.
    fn until(&self, what: &str, secs: f64) -> String {
        self.until_seen(what, secs).0
    }

    /// The same, with the datagrams read before it.
    fn until_seen(&self, what: &str, secs: f64) -> (String, Vec<String>) {
        let end = Instant::now() + Duration::from_secs_f64(secs);
        let mut seen = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.next(left.as_secs_f64().max(0.01)) {
                Some(m) if m.contains(what) => return (m, seen),
                Some(m) => seen.push(m),
                None => break,
            }
        }
        panic!(
            "no {what:?} within {secs}s; got {seen:?}; log:\n{}",
            read_log(&self.log())
        );
    }

    fn log(&self) -> PathBuf {
        self.dir.join("coffey.log")
    }

    fn terminate(mut self) -> i32 {
        unsafe { libc_kill(self.child.id() as i32, 15) };
        self.until("STOPPING=1", 30.0);
        let code = wait_for(30.0, "coffeyd to exit", || {
            self.child
                .try_wait()
                .unwrap()
                .map(|s| s.code().unwrap_or(-1))
        });
        let _ = std::fs::remove_dir_all(&self.dir);
        code
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// READY=1 comes only once the slow service is ready and its dependent
/// has started; STOPPING=1 at SIGTERM; exit 0.
#[test]
fn ready_comes_after_startup_settles_and_stopping_at_shutdown() {
    let services = [
        svc(
            "slow",
            "sleep 0.5; echo > /dev/fd/3; exec sleep 600",
            "    healthcheck:\n      readiness: {type: notify, fd: 3}\n",
        ),
        svc(
            "after",
            "exec sleep 600",
            "    depends_on: [{name: slow, condition: healthy}]\n",
        ),
    ]
    .concat();
    let m = start("mgr-ready", &services, "notify.sock", &[]);
    let msg = m.until("READY=1", 30.0);
    assert!(msg.contains("STATUS="), "{msg:?}");
    let log = read_log(&m.log());
    assert!(
        log.contains("after: spawned"),
        "READY=1 before the dependent started:\n{log}"
    );
    assert_eq!(m.terminate(), 0);
}

/// A service that fails for good, and the chain waiting on it, do not
/// hold READY=1 back (systemd would time the start out and kill us).
#[test]
fn a_failed_dependency_does_not_hold_ready_back() {
    let services = [
        svc(
            "broken",
            "exit 1",
            "    restart: never\n    healthcheck:\n      readiness: {type: notify, fd: 3}\n",
        ),
        svc(
            "mid",
            "exec sleep 600",
            "    depends_on: [{name: broken, condition: healthy}]\n",
        ),
        svc("top", "exec sleep 600", "    depends_on: [mid]\n"),
    ]
    .concat();
    let m = start("mgr-failed", &services, "@coffeyd-test-mgr-failed", &[]);
    m.until("READY=1", 30.0);
    assert!(read_log(&m.log()).contains("broken"), "no broken service");
    assert_eq!(m.terminate(), 0);
}

/// WATCHDOG_USEC=200000: pings every 100 ms, from the loop's one timer;
/// a WATCHDOG_PID of another process means no pings.
#[test]
fn the_watchdog_is_pinged_at_half_its_period_for_this_pid_only() {
    let services = svc("a", "exec sleep 600", "");
    let m = start(
        "mgr-wd",
        &services,
        "notify.sock",
        &[("WATCHDOG_USEC", "200000")],
    );
    m.until("READY=1", 30.0);
    let t0 = Instant::now();
    for _ in 0..3 {
        m.until("WATCHDOG=1", 10.0);
    }
    // Three pings at 100 ms apart take at least 200 ms (the first may
    // come at once).
    assert!(
        t0.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(m.terminate(), 0);

    // Startup takes 0.5 s here: a watchdog at 100 ms would have pinged
    // before READY=1.
    let slow = svc(
        "slow",
        "sleep 0.5; echo > /dev/fd/3; exec sleep 600",
        "    healthcheck:\n      readiness: {type: notify, fd: 3}\n",
    );
    let other = start(
        "mgr-wd-other",
        &slow,
        "notify.sock",
        &[("WATCHDOG_USEC", "200000"), ("WATCHDOG_PID", "1")],
    );
    let (_, before) = other.until_seen("READY=1", 30.0);
    assert!(before.is_empty(), "pinged for another pid: {before:?}");
    assert_eq!(other.terminate(), 0);
}
