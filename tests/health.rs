//! Health checks end to end: the real daemon probing real HTTP and TCP
//! servers that run in threads of this test process, real exec checks,
//! and real notify services (a readiness fd, and sd_notify from python3).
//! Every wait has a deadline; timing is measured and printed, and only
//! asserted with generous bounds (a loaded 2-core machine). Every test
//! ends by checking that the daemon made no heap allocation after startup.
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

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Deadline for anything the daemon should do "soon" (loaded 2-core box).
const SOON: f64 = 30.0;

const PYTHON: &str = "/usr/bin/python3";

fn sleeper(name: &str, extra: &str) -> String {
    svc(name, "exec sleep 600", extra)
}

// ---------------------------------------------------------------- servers

/// A TCP server on 127.0.0.1, run by threads of this test process: one
/// thread accepts (blocking, so the accept time is exact), and each
/// connection gets its own thread running `handler`.
struct Server {
    port: u16,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

type Handler = Arc<dyn Fn(TcpStream, Instant) + Send + Sync>;

impl Server {
    fn start(handler: impl Fn(TcpStream, Instant) + Send + Sync + 'static) -> Server {
        Self::on(0, handler)
    }

    /// Listens on `port` (0: any free port).
    fn on(port: u16, handler: impl Fn(TcpStream, Instant) + Send + Sync + 'static) -> Server {
        let handler: Handler = Arc::new(handler);
        let l = TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"));
        let port = l.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, st) = (accepted.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for s in l.incoming() {
                let at = Instant::now();
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(s) = s else { continue };
                a.fetch_add(1, Ordering::SeqCst);
                let h = handler.clone();
                std::thread::spawn(move || h(s, at));
            }
            // The listener is dropped here: connects are refused from now.
        });
        Server {
            port,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    fn count(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn wait_count(&self, n: usize, secs: f64) {
        wait_for(secs, &format!("{n} connections on :{}", self.port), || {
            (self.count() >= n).then_some(())
        });
    }

    /// Stops accepting and closes the listening socket.
    fn close(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.store(true, Ordering::SeqCst);
            // Wake the blocking accept.
            let _ = TcpStream::connect(("127.0.0.1", self.port));
            t.join().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.close();
    }
}

/// The daemon's probe clock starts at connect(); the server's stamp is
/// taken when accept() returns in a thread of this (busy) test process,
/// up to a scheduling delay later: 16 ms measured with 3 busy loops on the
/// 2 cores, more with parallel builds. So an early close is only caught
/// when it is more than this much early.
const ACCEPT_LAG_MS: u64 = 100;

/// Reads an HTTP request head (up to the blank line). False on EOF/error.
fn read_request(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got.extend_from_slice(&b[..n]),
        }
    }
    true
}

fn reply(s: &mut TcpStream, code: u16) {
    let text = if code == 200 {
        "OK"
    } else {
        "Service Unavailable"
    };
    let body = if code == 200 { "ok\n" } else { "warming up\n" };
    let _ = write!(
        s,
        "HTTP/1.1 {code} {text}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Waits until the peer (the daemon) closes the connection: returns when
/// read gives 0 or an error. A read timeout bounds a hang.
fn wait_closed(s: &mut TcpStream, secs: u64) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(secs))).unwrap();
    let mut b = [0u8; 256];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

// ---------------------------------------------------------------- status

/// The state of one service.
fn state(d: &Daemon, name: &str) -> String {
    row(d, name)["state"].as_str().unwrap().to_string()
}

/// Milliseconds within the day, UTC, like `parse_stamp` of log lines.
fn now_ms_of_day() -> u64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    ms % 86_400_000
}

// ---------------------------------------------------------------- 1. http readiness

/// The README shape: `api` with an http readiness check, `frontend`
/// depending on it `healthy`. A 503 keeps api `starting` and frontend
/// `waiting`; a 200 makes api `running` and releases frontend.
#[test]
fn http_readiness_gates_a_healthy_dependent() {
    let healthy = Arc::new(AtomicBool::new(false));
    let h = healthy.clone();
    let server = Server::start(move |mut s, _| {
        if read_request(&mut s) {
            reply(&mut s, if h.load(Ordering::SeqCst) { 200 } else { 503 });
        }
    });
    let services = [
        sleeper(
            "api",
            &format!(
                "    restart: always\n    healthcheck:\n      readiness:\n        type: http\n        url: http://127.0.0.1:{}/healthz\n        interval: 200ms\n        timeout: 2s\n        retries: 2\n",
                server.port
            ),
        ),
        sleeper(
            "frontend",
            "    depends_on:\n      - name: api\n        condition: healthy\n",
        ),
    ]
    .concat();
    let mut d = Daemon::start("httpready", "", &services);
    let mut ev = Events::follow(&d);
    d.wait_log("api: readiness check unhealthy: HTTP 503", SOON);
    // Probes keep coming while it is unready, and nothing moves.
    let seen = server.count();
    server.wait_count(seen + 2, SOON);
    let api = row(&d, "api");
    assert_eq!(api["state"], "starting", "{api}");
    assert!(api["pid"].as_i64().is_some(), "{api}");
    let health = api["health"].as_str().unwrap_or("");
    assert!(health.contains("HTTP 503"), "{api}");
    let fe = row(&d, "frontend");
    assert_eq!(fe["state"], "waiting", "{fe}");
    assert!(fe["pid"].is_null(), "{fe}");
    assert!(!d.log_text().contains("frontend: spawned"));

    let flipped = now_ms_of_day();
    healthy.store(true, Ordering::SeqCst);
    let log = d.wait_log("frontend: spawned", SOON);
    let ready = stamps(&log, "api: ready (pid")[0];
    assert!(ready + 5 >= flipped, "ready before the flip\n{log}");
    assert!(
        log.find("api: readiness check healthy").unwrap() < log.find("frontend: spawned").unwrap()
    );
    assert!(log.find("api: ready (pid").unwrap() < log.find("frontend: spawned").unwrap());
    println!(
        "api ready {} ms after the server started answering 200",
        ready.saturating_sub(flipped)
    );
    let api = wait_state(&d, "api", "running", SOON);
    assert!(
        api["health"].as_str().unwrap().contains("ready:healthy"),
        "{api}"
    );
    wait_state(&d, "frontend", "running", SOON);
    ev.wait(SOON, "health healthy", |e| {
        e["event"] == "health" && e["service"] == "api" && e["detail"] == "readiness healthy"
    });
    ev.wait(SOON, "api ready", |e| {
        e["event"] == "ready" && e["service"] == "api"
    });
    ev.wait(SOON, "frontend spawned", |e| {
        e["event"] == "spawned" && e["service"] == "frontend"
    });
    drop(ev);
    finish(d);
}

// ---------------------------------------------------------------- 2. tcp liveness

/// A TCP liveness check against a listener that goes away: the service is
/// restarted (with backoff), and settles once the listener is back.
#[test]
fn tcp_liveness_failure_restarts_the_service() {
    let mut server = Server::start(|_, _| {});
    let port = server.port;
    let services = sleeper(
        "db",
        &format!(
            "    backoff:\n      initial: 300ms\n    healthcheck:\n      liveness:\n        type: tcp\n        address: 127.0.0.1:{port}\n        interval: 200ms\n        timeout: 200ms\n        retries: 2\n"
        ),
    );
    let mut d = Daemon::start("tcplive", "", &services);
    let first = wait_state(&d, "db", "running", SOON)["pid"]
        .as_i64()
        .unwrap() as i32;
    server.wait_count(3, SOON);
    d.wait_log("db: liveness check healthy", SOON);
    assert_eq!(row(&d, "db")["restarts"], 0);
    assert!(!d.log_text().contains("liveness failed"));

    // Connects are refused from now on.
    server.close();
    let log = d.wait_log(
        &format!("db: liveness failed; restarting pid {first}"),
        SOON,
    );
    assert!(
        log.contains("db: liveness check unhealthy: connect: Connection refused"),
        "{log}"
    );
    let log = d.wait_count("db: spawned pid", 2, SOON);
    assert!(log.contains("db: restarting in 300ms (failure 1)"), "{log}");
    wait_for(SOON, "first pid reaped", || (!exists(first)).then_some(()));
    let st = row(&d, "db");
    assert!(st["restarts"].as_u64().unwrap() >= 1, "{st}");

    // The listener is back on the same port: the service stays up.
    let server = Server::on(port, |_, _| {});
    let healthy = d.count("db: liveness check healthy");
    d.wait_count("db: liveness check healthy", healthy + 1, SOON);
    let pid = wait_state(&d, "db", "running", SOON)["pid"]
        .as_i64()
        .unwrap() as i32;
    assert_ne!(pid, first);
    let restarts = d.count("liveness failed; restarting");
    // A few more probes pass without a restart.
    let n = server.count();
    server.wait_count(n + 3, SOON);
    assert_eq!(d.count("liveness failed; restarting"), restarts);
    assert!(alive(pid));
    finish(d);
}

// ---------------------------------------------------------------- 3. http timeout

/// A server that accepts and never answers: the daemon gives up (closes
/// the connection) at the configured timeout, measured on the server side.
#[test]
fn http_probe_times_out_at_the_configured_timeout() {
    const TIMEOUT_MS: u64 = 300;
    let spans: Arc<Mutex<Vec<u64>>> = Arc::default();
    let sp = spans.clone();
    let server = Server::start(move |mut s, at| {
        // Read the request, say nothing, and wait for the daemon to hang up.
        if wait_closed(&mut s, 30) {
            sp.lock().unwrap().push(at.elapsed().as_millis() as u64);
        }
    });
    let services = sleeper(
        "mute",
        &format!(
            "    healthcheck:\n      readiness:\n        type: http\n        url: http://127.0.0.1:{}/\n        interval: 1s\n        timeout: {TIMEOUT_MS}ms\n        retries: 1\n",
            server.port
        ),
    );
    let mut d = Daemon::start("httpto", "", &services);
    d.wait_log("mute: readiness check unhealthy: timed out", SOON);
    wait_for(SOON, "3 probes closed by the daemon", || {
        (spans.lock().unwrap().len() >= 3).then_some(())
    });
    let spans = spans.lock().unwrap().clone();
    println!("accept -> close by the daemon, timeout {TIMEOUT_MS}ms: {spans:?} ms");
    for &ms in &spans {
        assert!(
            ms + ACCEPT_LAG_MS >= TIMEOUT_MS && ms <= TIMEOUT_MS + 400,
            "probe closed after {ms} ms, timeout {TIMEOUT_MS} ms: {spans:?}"
        );
    }
    assert_eq!(state(&d, "mute"), "starting");
    finish(d);
}

// ---------------------------------------------------------------- 4. exec timeout

/// An exec check that hangs is killed (its whole process group) at the
/// timeout; its output is in the service's log ring, tagged "check".
#[test]
fn hanging_exec_check_is_killed_at_the_timeout() {
    const TIMEOUT_MS: u64 = 500;
    let services = sleeper(
        "hang",
        &format!(
            "    healthcheck:\n      readiness:\n        type: exec\n        command: \"echo checking; echo $$ > $DIR/check.pid; sleep 60 & echo $! > $DIR/sleep.pid; wait\"\n        interval: 2s\n        timeout: {TIMEOUT_MS}ms\n        retries: 1\n"
        ),
    );
    let mut d = Daemon::start("exechang", "", &services);
    let read_pid = |f: &str| -> Option<i32> {
        std::fs::read_to_string(d.dir.join(f))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let (sh, sleep) = wait_for(SOON, "check pid files", || {
        Some((read_pid("check.pid")?, read_pid("sleep.pid")?))
    });
    let t0 = Instant::now();
    wait_for(SOON, "check processes gone", || {
        (!exists(sh) && !exists(sleep)).then_some(())
    });
    let gone = t0.elapsed().as_millis() as u64;
    println!("exec check (sh {sh}, sleep {sleep}) gone {gone} ms after its pid file appeared (timeout {TIMEOUT_MS} ms)");
    assert!(gone <= TIMEOUT_MS + 5000, "{gone} ms");
    let log = d.wait_log("hang: readiness check unhealthy:", SOON);
    assert!(
        log.contains("hang: readiness check unhealthy: timed out")
            || log.contains("hang: readiness check unhealthy: check killed by SIGKILL"),
        "{log}"
    );
    assert_eq!(state(&d, "hang"), "starting");
    let logs = ok(ctl(&d, &["logs", "hang", "--no-follow"]));
    assert!(
        logs.stdout
            .lines()
            .any(|l| l.contains(" check ") && l.ends_with("checking")),
        "{logs:?}"
    );
    finish(d);
}

// ---------------------------------------------------------------- 5. notify

fn write_notify_py(dir: &Path) {
    // argv: gate file ('-': none), number of WATCHDOG=1 pings, seconds
    // between pings, then 'exit' to exit at once instead of sleeping.
    std::fs::write(
        dir.join("notify.py"),
        r#"import os, socket, sys, time
gate, pings, every = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
while gate != '-' and not os.path.exists(gate):
    time.sleep(0.02)
a = os.environ['NOTIFY_SOCKET']
if a.startswith('@'):
    a = '\0' + a[1:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b'STATUS=warming up\nREADY=1', a)
for _ in range(pings):
    time.sleep(every)
    s.sendto(b'WATCHDOG=1', a)
if sys.argv[4:] != ['exit']:
    time.sleep(600)
"#,
    )
    .unwrap();
}

/// Readiness on fd 3 (s6 style) and through sd_notify: the service is
/// `starting` until it says it is ready, then `running`.
#[test]
fn notify_fd_and_sd_notify_gate_readiness() {
    let services = [
        svc(
            "fdsvc",
            "while [ ! -e $DIR/go-fd ]; do sleep 0.02; done; echo >&3; exec sleep 600",
            "    healthcheck:\n      readiness:\n        type: notify\n        fd: 3\n",
        ),
        format!(
            "  - name: sdsvc\n    binary: {PYTHON}\n    args: ['$DIR/notify.py', '$DIR/go-sd', '0', '0']\n    healthcheck:\n      readiness:\n        type: notify\n"
        ),
    ]
    .concat();
    let mut d = Daemon::start_with("notify", "", &services, write_notify_py);
    d.wait_log("fdsvc: spawned", SOON);
    d.wait_log("sdsvc: spawned", SOON);
    // Neither has said anything: both stay starting (a short look, since
    // nothing can make them ready until the gate files exist).
    for _ in 0..5 {
        assert_eq!(state(&d, "fdsvc"), "starting");
        assert_eq!(state(&d, "sdsvc"), "starting");
    }
    assert!(!d.log_text().contains(": ready (pid"), "{}", d.log_text());

    let go = now_ms_of_day();
    std::fs::write(d.dir.join("go-fd"), "").unwrap();
    let log = d.wait_log("fdsvc: ready (pid", SOON);
    let at = stamps(&log, "fdsvc: ready (pid")[0];
    assert!(at + 5 >= go, "ready before the gate\n{log}");
    println!(
        "fd notify: ready {} ms after the gate",
        at.saturating_sub(go)
    );
    wait_state(&d, "fdsvc", "running", SOON);
    assert_eq!(state(&d, "sdsvc"), "starting");

    let go = now_ms_of_day();
    std::fs::write(d.dir.join("go-sd"), "").unwrap();
    let log = d.wait_log("sdsvc: ready (pid", SOON);
    let at = stamps(&log, "sdsvc: ready (pid")[0];
    assert!(at + 5 >= go, "ready before the gate\n{log}");
    println!(
        "sd_notify: ready {} ms after the gate",
        at.saturating_sub(go)
    );
    wait_state(&d, "sdsvc", "running", SOON);
    // STATUS= text from the same datagram reaches the daemon log.
    assert!(
        d.log_text().contains("sdsvc: status: warming up"),
        "{}",
        d.log_text()
    );
    // ... and shows in `status SERVICE`.
    let o = std::process::Command::new(BIN)
        .args(["status", "sdsvc", "-s", d.socket.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("notify_status:") && text.contains("warming up"),
        "{text}"
    );
    finish(d);
}

/// `systemd-notify --ready` style: a short-lived helper in the service's
/// process group sends READY=1 and exits at once. The daemon is held
/// (SIGSTOP) until the helper is gone, which is what a busy loop or a
/// loaded machine does by chance (unheld, this failed 4 times in 15 with
/// 4 busy loops on the 2 cores).
#[test]

fn sd_notify_from_a_short_lived_helper() {
    let services = svc(
        "helper",
        &format!(
            "while [ ! -e $DIR/go ]; do sleep 0.02; done; {PYTHON} $DIR/notify.py - 0 0 exit; touch $DIR/sent; exec sleep 600"
        ),
        "    healthcheck:\n      readiness:\n        type: notify\n",
    );
    let mut d = Daemon::start_with("sdhelper", "", &services, write_notify_py);
    d.wait_log("helper: spawned", SOON);
    d.signal(19); // SIGSTOP
    std::fs::write(d.dir.join("go"), "").unwrap();
    // The helper has sent READY=1, exited and been reaped by the shell.
    wait_for(SOON, "the helper to finish", || {
        d.dir.join("sent").exists().then_some(())
    });
    d.signal(18); // SIGCONT
    let log = wait_for(SOON, "ready, or the message ignored", || {
        let t = d.log_text();
        (t.contains("helper: ready (pid") || t.contains("sd_notify: ignored")).then_some(t)
    });
    assert!(
        log.contains("helper: ready (pid"),
        "READY=1 was lost:\n{log}"
    );
    wait_state(&d, "helper", "running", SOON);
    finish(d);
}

/// A service that sends READY=1 and a couple of WATCHDOG=1 pings, then
/// stops pinging, is restarted when the watchdog expires.
#[test]
fn missing_watchdog_ping_restarts_the_service() {
    const WATCHDOG_MS: u64 = 500;
    let services = format!(
        "  - name: wd\n    binary: {PYTHON}\n    args: ['$DIR/notify.py', '-', '2', '0.2']\n    backoff:\n      initial: 200ms\n    healthcheck:\n      readiness:\n        type: notify\n        watchdog: {WATCHDOG_MS}ms\n"
    );
    let mut d = Daemon::start_with("watchdog", "", &services, write_notify_py);
    let log = d.wait_log(
        "wd: readiness check unhealthy: watchdog expired (no WATCHDOG=1)",
        SOON,
    );
    let ready = stamps(&log, "wd: ready (pid")[0];
    let expired = stamps(&log, "wd: readiness check unhealthy: watchdog expired")[0];
    let pid = spawned_pids(&log, "wd")[0];
    println!(
        "watchdog {WATCHDOG_MS} ms, 2 pings 200 ms apart: expired {} ms after ready",
        expired - ready
    );
    // The pings were honoured: the last one is >= 400 ms after READY=1.
    assert!(expired - ready >= 2 * 200 + WATCHDOG_MS - 100, "{log}");
    d.wait_log(&format!("wd: liveness failed; restarting pid {pid}"), SOON);
    let log = d.wait_count("wd: spawned pid", 2, SOON);
    assert!(log.contains("wd: restarting in 200ms (failure 1)"), "{log}");
    wait_for(SOON, "old pid reaped", || (!exists(pid)).then_some(()));
    // The new process becomes ready again.
    d.wait_count("wd: ready (pid", 2, SOON);
    let st = row(&d, "wd");
    assert!(st["restarts"].as_u64().unwrap() >= 1, "{st}");
    finish(d);
}

// ---------------------------------------------------------------- 6. start_period, start_timeout

/// Liveness failures inside `start_period` do not count: a listener that
/// appears after a second does not get the service restarted.
#[test]
fn liveness_failures_in_start_period_do_not_restart() {
    let port = free_port();
    let services = sleeper(
        "slow",
        &format!(
            "    healthcheck:\n      liveness:\n        type: tcp\n        address: 127.0.0.1:{port}\n        interval: 200ms\n        timeout: 200ms\n        retries: 1\n        start_period: 4s\n"
        ),
    );
    let d = Daemon::start("startperiod", "", &services);
    let t0 = Instant::now();
    let pid = wait_state(&d, "slow", "running", SOON)["pid"]
        .as_i64()
        .unwrap() as i32;
    // The daemon has seen the port refused (the error shows in status).
    wait_for(3.0, "a refused probe", || {
        let h = row(&d, "slow")["health"].as_str()?.to_string();
        h.contains("Connection refused").then_some(())
    });
    let refused_for = t0.elapsed();
    assert!(
        refused_for < Duration::from_millis(3500),
        "the test was too slow to stay inside start_period: {refused_for:?}"
    );
    let server = Server::on(port, |_, _| {});
    // Past the start period, with probes passing.
    wait_for(SOON, "start_period over and 3 probes accepted", || {
        (t0.elapsed() > Duration::from_millis(4500) && server.count() >= 3).then_some(())
    });
    let log = d.log_text();
    assert!(!log.contains("liveness failed"), "{log}");
    assert!(!log.contains("liveness check unhealthy"), "{log}");
    assert!(log.contains("slow: liveness check healthy"), "{log}");
    let st = row(&d, "slow");
    assert_eq!(st["restarts"], 0, "{st}");
    assert_eq!(st["pid"], pid, "{st}");
    assert_eq!(st["state"], "running", "{st}");
    println!(
        "refused for ~{} ms inside a 4 s start_period: no restart",
        refused_for.as_millis()
    );
    finish(d);
}

/// A readiness check that never passes: the service is stopped at
/// `start_timeout`, and that counts as a failure (backoff).
#[test]
fn start_timeout_stops_a_service_that_never_gets_ready() {
    let port = free_port();
    let services = sleeper(
        "never",
        &format!(
            "    start_timeout: 1s\n    backoff:\n      initial: 5s\n    healthcheck:\n      readiness:\n        type: tcp\n        address: 127.0.0.1:{port}\n        interval: 200ms\n        timeout: 200ms\n"
        ),
    );
    let mut d = Daemon::start("starttimeout", "", &services);
    let log = d.wait_log("never: not ready within start_timeout; stopping pid", SOON);
    let pid = spawned_pids(&log, "never")[0];
    assert!(
        log.contains(&format!(
            "never: not ready within start_timeout; stopping pid {pid}"
        )),
        "{log}"
    );
    let gap = stamps(&log, "never: not ready within start_timeout")[0]
        - stamps(&log, "never: spawned pid")[0];
    println!("start_timeout 1s: stopped {gap} ms after spawn");
    assert!((900..=3000).contains(&gap), "{gap} ms\n{log}");
    let log = d.wait_log("never: restarting in 5s (failure 1)", SOON);
    assert!(!log.contains("never: ready (pid"), "{log}");
    let st = wait_state(&d, "never", "backoff", SOON);
    assert!(
        st["reason"]
            .as_str()
            .unwrap()
            .contains("not ready within start_timeout"),
        "{st}"
    );
    wait_for(SOON, "pid reaped", || (!exists(pid)).then_some(()));
    finish(d);
}

// ---------------------------------------------------------------- 7. bad HTTP

/// Garbage, a 5 MB response, a slow drip and an early close are each
/// handled within bounds, and the big response costs no memory.
#[test]
fn bad_http_responses_are_handled_within_bounds() {
    const TIMEOUT_MS: u64 = 500;
    // Deterministic garbage: not "HTTP/".
    let garbage = Server::start(|mut s, _| {
        if read_request(&mut s) {
            let mut x: u32 = 0x2545_f491;
            let bytes: Vec<u8> = (0..200)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    (x >> 24) as u8
                })
                .collect();
            let _ = s.write_all(b"\x8f\x00garbage");
            let _ = s.write_all(&bytes);
            wait_closed(&mut s, 30);
        }
    });
    let body = Arc::new(vec![b'x'; 5 << 20]);
    let big_done = Arc::new(AtomicUsize::new(0));
    let bd = big_done.clone();
    let big = Server::start(move |mut s, _| {
        if read_request(&mut s) {
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            // Fails (EPIPE/ECONNRESET) once the daemon has its status line.
            let _ = s.write_all(&body);
            bd.fetch_add(1, Ordering::SeqCst);
        }
    });
    let drip_spans: Arc<Mutex<Vec<(u64, usize)>>> = Arc::default();
    let ds = drip_spans.clone();
    let drip = Server::start(move |mut s, at| {
        if !read_request(&mut s) {
            return;
        }
        let msg = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut sent = 0;
        let mut b = [0u8; 64];
        loop {
            match s.read(&mut b) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    if sent >= msg.len() || s.write_all(&msg[sent..=sent]).is_err() {
                        break;
                    }
                    sent += 1;
                }
                Err(_) => break,
            }
        }
        ds.lock()
            .unwrap()
            .push((at.elapsed().as_millis() as u64, sent));
    });
    let closer = Server::start(|mut s, _| {
        read_request(&mut s);
    });
    let check = |port: u16, interval: &str| {
        format!(
            "    healthcheck:\n      readiness:\n        type: http\n        url: http://127.0.0.1:{port}/\n        interval: {interval}\n        timeout: {TIMEOUT_MS}ms\n        retries: 1\n"
        )
    };
    let services = [
        sleeper("garbage", &check(garbage.port, "1s")),
        sleeper("big", &check(big.port, "100ms")),
        sleeper("drip", &check(drip.port, "1s")),
        sleeper("closer", &check(closer.port, "1s")),
    ]
    .concat();
    let mut d = Daemon::start("badhttp", "", &services);
    let log = d.wait_log("garbage: readiness check unhealthy", SOON);
    assert!(
        log.contains("garbage: readiness check unhealthy: not an HTTP response"),
        "{log}"
    );
    let log = d.wait_log("closer: readiness check unhealthy", SOON);
    assert!(
        log.contains("closer: readiness check unhealthy: connection closed before a response"),
        "{log}"
    );
    let log = d.wait_log("drip: readiness check unhealthy", SOON);
    assert!(
        log.contains("drip: readiness check unhealthy: timed out"),
        "{log}"
    );
    wait_for(SOON, "2 drips closed by the daemon", || {
        (drip_spans.lock().unwrap().len() >= 2).then_some(())
    });
    let spans = drip_spans.lock().unwrap().clone();
    println!("slow drip, timeout {TIMEOUT_MS}ms: (accept -> close ms, bytes sent) {spans:?}");
    for &(ms, sent) in &spans {
        assert!(
            ms + ACCEPT_LAG_MS >= TIMEOUT_MS && ms <= TIMEOUT_MS + 400,
            "drip closed after {ms} ms: {spans:?}"
        );
        assert!(sent < 12, "the status line was not complete: {spans:?}");
    }

    // The big response: healthy, and memory stays flat over many probes.
    d.wait_log("big: ready (pid", SOON);
    let n = big_done.load(Ordering::SeqCst);
    wait_for(SOON, "3 more big responses", || {
        (big_done.load(Ordering::SeqCst) >= n + 3).then_some(())
    });
    let before = d.rss_kib();
    let n = big_done.load(Ordering::SeqCst);
    wait_for(SOON * 2.0, "20 more big responses", || {
        (big_done.load(Ordering::SeqCst) >= n + 20).then_some(())
    });
    let after = d.rss_kib();
    println!(
        "5 MB responses: daemon RSS {before} KiB before, {after} KiB after 20 more ({} total)",
        big_done.load(Ordering::SeqCst)
    );
    assert!(after <= before + 64, "RSS grew {before} -> {after} KiB");
    let st = row(&d, "big");
    assert_eq!(st["state"], "running", "{st}");
    assert!(
        st["health"].as_str().unwrap().contains("ready:healthy"),
        "{st}"
    );
    for s in ["garbage", "drip", "closer"] {
        assert_eq!(state(&d, s), "starting");
    }
    finish(d);
}

// ---------------------------------------------------------------- 8. probes stop

/// After `coffeyd stop`, no probe reaches the server (and no exec check
/// runs) any more; after `start`, they resume.
#[test]
fn probes_stop_when_the_service_stops() {
    let server = Server::start(|mut s, _| {
        if read_request(&mut s) {
            reply(&mut s, 200);
        }
    });
    let services = sleeper(
        "web",
        &format!(
            "    healthcheck:\n      readiness:\n        type: http\n        url: http://127.0.0.1:{port}/\n        interval: 200ms\n        timeout: 200ms\n      liveness:\n        type: exec\n        command: \"echo x >> $DIR/execs\"\n        interval: 200ms\n        timeout: 1s\n",
            port = server.port
        ),
    );
    let mut d = Daemon::start("probestop", "", &services);
    d.wait_log("web: ready (pid", SOON);
    server.wait_count(3, SOON);
    let execs = || {
        std::fs::read_to_string(d.dir.join("execs"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    wait_for(SOON, "3 exec checks", || (execs() >= 3).then_some(()));
    ok(ctl(&d, &["stop", "web"]));
    wait_state(&d, "web", "stopped", SOON);
    let (conns, runs) = (server.count(), execs());
    // Inherent: a window of several intervals in which nothing may happen.
    std::thread::sleep(Duration::from_millis(3 * 200 + 200));
    assert_eq!(server.count(), conns, "http probes after stop");
    assert_eq!(execs(), runs, "exec checks after stop");
    println!("after stop: {conns} connections, {runs} exec runs, unchanged over 800 ms");

    ok(ctl(&d, &["start", "web"]));
    server.wait_count(conns + 2, SOON);
    wait_for(SOON, "exec checks again", || (execs() > runs).then_some(()));
    finish(d);
}

// ---------------------------------------------------------------- reporting

/// The status reason of a service restarted by its liveness check names
/// the liveness check's error, not the readiness check's.
#[test]

fn liveness_restart_reason_names_the_liveness_error() {
    let port = free_port();
    let services = sleeper(
        "both",
        &format!(
            "    backoff:\n      initial: 10s\n    healthcheck:\n      readiness:\n        type: tcp\n        address: 127.0.0.1:{port}\n        interval: 100ms\n        timeout: 1s\n        retries: 100\n      liveness:\n        type: exec\n        command: \"exit 3\"\n        interval: 300ms\n        timeout: 1s\n        retries: 1\n"
        ),
    );
    let mut d = Daemon::start("reason", "", &services);
    d.wait_log("both: liveness failed; restarting", SOON);
    let st = wait_state(&d, "both", "backoff", SOON);
    let reason = st["reason"].as_str().unwrap();
    assert!(
        reason.contains("liveness failed: check exited with code 3"),
        "{st}"
    );
    finish(d);
}

/// A `health` event carries the service's real state and pid.
#[test]

fn health_event_carries_the_service_state() {
    let port = free_port();
    let services = sleeper(
        "unready",
        &format!(
            "    healthcheck:\n      readiness:\n        type: tcp\n        address: 127.0.0.1:{port}\n        interval: 100ms\n        timeout: 1s\n        retries: 20\n"
        ),
    );
    let d = Daemon::start("healthev", "", &services);
    let mut ev = Events::follow(&d);
    let e = ev.wait(SOON, "health", |e| e["event"] == "health");
    let st = row(&d, "unready");
    assert_eq!(st["state"], "starting", "{st}");
    assert_eq!(e["state"], "starting", "{e}");
    assert_eq!(e["pid"], st["pid"], "{e} vs {st}");
    drop(ev);
    finish(d);
}

// ---------------------------------------------------------------- startup

/// Lines in `$DIR/NAME` (an exec check appends one per run).
fn runs(d: &Daemon, name: &str) -> usize {
    std::fs::read_to_string(d.dir.join(name))
        .unwrap_or_default()
        .lines()
        .count()
}

/// A startup check (a real exec check that passes once `$DIR/go` exists)
/// holds back the readiness and liveness probes of a real TCP server: not
/// one connection while it fails, and the service stays `starting`. Once
/// it passes it runs no more, readiness makes the service ready, and
/// liveness probes.
#[test]
fn startup_check_gates_readiness_and_liveness() {
    let server = Server::start(|_, _| {});
    let port = server.port;
    let services = sleeper(
        "app",
        &format!(
            "    healthcheck:\n      startup:\n        type: exec\n        command: \"echo x >> $DIR/startups; test -e $DIR/go\"\n        interval: 100ms\n        retries: 1000\n      readiness:\n        type: tcp\n        address: 127.0.0.1:{port}\n        interval: 100ms\n      liveness:\n        type: tcp\n        address: 127.0.0.1:{port}\n        interval: 100ms\n"
        ),
    );
    let mut d = Daemon::start("startupgate", "", &services);
    wait_for(SOON, "5 startup probes", || {
        (runs(&d, "startups") >= 5).then_some(())
    });
    assert_eq!(
        server.count(),
        0,
        "readiness or liveness probed before startup passed"
    );
    assert_eq!(row(&d, "app")["state"], "starting");
    std::fs::write(d.dir.join("go"), "").unwrap();
    d.wait_log("app: startup check healthy", SOON);
    d.wait_log("app: ready (pid", SOON);
    d.wait_log("app: liveness check healthy", SOON);
    server.wait_count(4, SOON);
    let done = runs(&d, "startups");
    // Probes go on (readiness and liveness), startup's do not.
    let n = server.count();
    server.wait_count(n + 4, SOON);
    assert_eq!(runs(&d, "startups"), done, "startup probed after it passed");
    let st = detail(&d, "app");
    assert!(st.to_string().contains("startup"), "{st}");
    finish(d);
}

/// A startup check that never passes (a real TCP address nobody listens
/// on): after `retries` failures past `start_period` the service is
/// restarted with its backoff, a failure as a liveness failure is, and the
/// status names the startup check's error. Each run starts with startup
/// again, and the failure takes at least start_period + (retries-1) *
/// interval after the spawn.
#[test]
fn startup_failure_restarts_with_backoff() {
    let port = free_port();
    let services = sleeper(
        "slow",
        &format!(
            "    backoff:\n      initial: 200ms\n    healthcheck:\n      startup:\n        type: tcp\n        address: 127.0.0.1:{port}\n        interval: 100ms\n        retries: 3\n        start_period: 400ms\n      liveness:\n        type: exec\n        command: \"echo x >> $DIR/lives\"\n        interval: 100ms\n"
        ),
    );
    let mut d = Daemon::start("startupfail", "", &services);
    let first = wait_state(&d, "slow", "starting", SOON)["pid"]
        .as_i64()
        .unwrap() as i32;
    let log = d.wait_log(
        &format!("slow: startup failed; restarting pid {first}"),
        SOON,
    );
    assert!(
        log.contains("slow: startup check unhealthy: connect: Connection refused"),
        "{log}"
    );
    let log = d.wait_count("slow: spawned pid", 2, SOON);
    assert!(
        log.contains("slow: restarting in 200ms (failure 1)"),
        "{log}"
    );
    let spawned = stamps(&log, "slow: spawned pid")[0];
    let failed = stamps(&log, "slow: startup failed")[0];
    println!("startup failed {} ms after the spawn", failed - spawned);
    assert!(failed - spawned >= 400 + 2 * 100, "failed too early: {log}");
    d.wait_count("slow: startup failed; restarting", 2, SOON);
    // The reason is set once the stopped run has exited (in backoff), not
    // while it is still stopping.
    wait_row(
        &d,
        "the reason names the startup failure",
        SOON,
        || detail(&d, "slow"),
        |st| st.to_string().contains("startup failed"),
    );
    assert!(row(&d, "slow")["restarts"].as_u64().unwrap() >= 1);
    assert_eq!(
        runs(&d, "lives"),
        0,
        "liveness ran although startup never passed"
    );
    finish(d);
}

/// An http startup check sends its own request (its path, not the
/// liveness check's, though it runs on the liveness probe): a real HTTP
/// server answers 503 to `/started` until the test flips it, and 200 to
/// `/alive` always.
#[test]
fn http_startup_check_sends_its_own_request() {
    let up = Arc::new(AtomicBool::new(false));
    let paths: Arc<Mutex<Vec<String>>> = Arc::default();
    let (u, p) = (up.clone(), paths.clone());
    let server = Server::start(move |mut s, _| {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 1024];
        let n = s.read(&mut b).unwrap_or(0);
        let line = String::from_utf8_lossy(&b[..n])
            .lines()
            .next()
            .unwrap_or("")
            .to_owned();
        let started = line.starts_with("GET /started ");
        p.lock().unwrap().push(line);
        reply(
            &mut s,
            if started && !u.load(Ordering::SeqCst) {
                503
            } else {
                200
            },
        );
    });
    let port = server.port;
    let services = sleeper(
        "web",
        &format!(
            "    healthcheck:\n      startup:\n        type: http\n        url: http://127.0.0.1:{port}/started\n        interval: 100ms\n        retries: 1000\n      liveness:\n        type: http\n        url: http://127.0.0.1:{port}/alive\n        interval: 100ms\n"
        ),
    );
    let mut d = Daemon::start("startuphttp", "", &services);
    server.wait_count(3, SOON);
    assert_eq!(row(&d, "web")["state"], "starting");
    up.store(true, Ordering::SeqCst);
    d.wait_log("web: startup check healthy", SOON);
    d.wait_log("web: ready (pid", SOON);
    d.wait_log("web: liveness check healthy", SOON);
    let n = server.count();
    server.wait_count(n + 3, SOON);
    let seen = paths.lock().unwrap().clone();
    let first_alive = seen
        .iter()
        .position(|l| l.starts_with("GET /alive "))
        .unwrap();
    assert!(first_alive >= 3, "{seen:?}");
    assert!(
        seen[..first_alive]
            .iter()
            .all(|l| l.starts_with("GET /started ")),
        "{seen:?}"
    );
    assert!(
        seen[first_alive..]
            .iter()
            .all(|l| l.starts_with("GET /alive ")),
        "startup probed after it passed: {seen:?}"
    );
    finish(d);
}

/// An exec check's bare program name is looked up in the service's PATH
/// at each probe, as execvp does: a check program installed after the
/// daemon started is found by the next probe, and the service gets ready.
#[test]
fn exec_check_finds_a_bare_name_in_the_service_path() {
    let bin = tempdir("checkpath-bin");
    let services = sleeper(
        "app",
        &format!(
            "    env: {{PATH: '{}:/usr/bin:/bin'}}\n    healthcheck:\n      readiness:\n        type: exec\n        command: [coffey-test-probe, --ok]\n        interval: 100ms\n        retries: 1000\n",
            bin.display()
        ),
    );
    let d = Daemon::start("checkpath", "", &services);
    wait_for(SOON, "a failing probe", || {
        detail(&d, "app")["health"]
            .as_str()
            .filter(|h| h.contains("No such file"))
            .map(|_| ())
    });
    assert_eq!(row(&d, "app")["state"], "starting");
    let probe = bin.join("coffey-test-probe");
    let tmp = bin.join(".probe.tmp");
    std::fs::write(&tmp, "#!/bin/sh\n[ \"$1\" = --ok ]\n").unwrap();
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, &probe).unwrap();
    wait_for(SOON, "app ready", || {
        (row(&d, "app")["state"] == "running").then_some(())
    });
    finish(d);
}
