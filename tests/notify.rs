//! sd_notify as systemd's own clients speak it, end to end: Debian's
//! `systemd-notify`, `redis-server --supervised systemd`, and python3
//! senders for the messages those two do not send (MAINPID, RELOADING,
//! STOPPING, EXTEND_TIMEOUT_USEC, WATCHDOG=trigger, fds). Every wait has a
//! deadline; the only sleeps are inside the services, where they are the
//! behaviour under test (a service that is slow to get ready).
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
use std::time::{Duration, Instant};

/// Deadline for anything the daemon should do "soon" (loaded 2-core box).
const SOON: f64 = 30.0;
const PYTHON: &str = "/usr/bin/python3";
const SYSTEMD_NOTIFY: &str = "/usr/bin/systemd-notify";
const REDIS: &str = "/usr/bin/redis-server";

/// A scripted sd_notify sender. argv: actions, run in order:
/// `send:TEXT` (`\n` in TEXT is a newline), `wait:FILE` (until it exists),
/// `sleep:SECS`, `touch:FILE`, `fds:N:TEXT` (send TEXT with N pipe write
/// ends attached, close ours, and wait up to 10 s for the daemon to close
/// its copies; writes FILE `fds-ok` or `fds-leaked` in the cwd), `hold`
/// (sleep for good), `exit:CODE`.
const SD_PY: &str = r#"import os, select, socket, sys, time
a = os.environ['NOTIFY_SOCKET']
if a.startswith('@'):
    a = '\0' + a[1:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
for act in sys.argv[1:]:
    kind, _, arg = act.partition(':')
    if kind == 'send':
        s.sendto(arg.replace('\\n', '\n').encode(), a)
    elif kind == 'wait':
        while not os.path.exists(arg):
            time.sleep(0.02)
    elif kind == 'sleep':
        time.sleep(float(arg))
    elif kind == 'touch':
        open(arg, 'w').close()
    elif kind == 'fds':
        n, _, text = arg.partition(':')
        pipes = [os.pipe() for _ in range(int(n))]
        s.sendmsg([text.encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                   bytes().join(w.to_bytes(4, sys.byteorder) for _, w in pipes))], 0, a)
        for _, w in pipes:
            os.close(w)
        p = select.poll()
        for r, _ in pipes:
            p.register(r, select.POLLIN)
        left, end = {r for r, _ in pipes}, time.time() + 10
        while left and time.time() < end:
            for fd, ev in p.poll(100):
                if ev & select.POLLHUP:
                    left.discard(fd)
                    p.unregister(fd)
        open('fds-leaked' if left else 'fds-ok', 'w').close()
    elif kind == 'hold':
        time.sleep(600)
    elif kind == 'exit':
        sys.exit(int(arg))
"#;

fn write_sd_py(dir: &Path) {
    std::fs::write(dir.join("sd.py"), SD_PY).unwrap();
}

/// A service running `sd.py` with `actions`, cwd `$DIR`, plus `extra`
/// (the readiness check and anything else).
fn sd_service(name: &str, actions: &[&str], extra: &str) -> String {
    let args: Vec<String> = actions
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "''")))
        .collect();
    format!(
        "  - name: {name}\n    binary: {PYTHON}\n    args: ['$DIR/sd.py', {}]\n    working_dir: $DIR\n{extra}",
        args.join(", ")
    )
}

const NOTIFY: &str = "    healthcheck:\n      readiness:\n        type: notify\n";

/// Waits until `details[key]` of `name` is `want`; returns the row.
fn wait_detail(d: &Daemon, name: &str, key: &str, want: &str) -> serde_json::Value {
    wait_row(
        d,
        &format!("{name} {key} = {want}"),
        SOON,
        || detail(d, name),
        |v| v["details"][key] == want,
    )
}

fn touch(d: &Daemon, f: &str) {
    std::fs::write(d.dir.join(f), "").unwrap();
}

// ------------------------------------------------------------ systemd-notify

/// `systemd-notify --ready` sends READY=1, then BARRIER=1 with a pipe's
/// write end, and waits (5 s) for the manager to close it. Under `set -e` a
/// manager that ignores the barrier makes it exit 1 and the service
/// crash-loops; here it returns at once and the service keeps running.
#[test]
fn systemd_notify_ready_returns_at_once_under_set_e() {
    need(SYSTEMD_NOTIFY, "systemd");
    let services = svc(
        "sdn",
        &format!("set -e; {SYSTEMD_NOTIFY} --ready; touch $DIR/returned; exec sleep 100"),
        NOTIFY,
    );
    let mut d = Daemon::start("sdnotify", "", &services);
    let log = d.wait_log("sdn: spawned pid", SOON);
    let spawned = stamps(&log, "sdn: spawned pid")[0];
    let ret = d.dir.join("returned");
    wait_for(SOON, "systemd-notify to return 0", || {
        ret.exists().then_some(())
    });
    let log = d.wait_log("sdn: ready (pid", SOON);
    let ready = stamps(&log, "sdn: ready (pid")[0];
    println!(
        "systemd-notify --ready: ready {} ms after spawn",
        ready - spawned
    );
    // The barrier took no 5 s timeout: the file came well before that.
    let returned_ms = {
        let m = std::fs::metadata(&ret).unwrap().modified().unwrap();
        let ms = m.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        ms % 86_400_000
    };
    println!(
        "systemd-notify returned {} ms after spawn",
        returned_ms.saturating_sub(spawned)
    );
    assert!(
        returned_ms < spawned + 4000,
        "barrier waited out its timeout\n{log}"
    );
    let st = wait_state(&d, "sdn", "running", SOON);
    assert_eq!(st["restarts"], 0, "{st}");
    assert_eq!(
        spawned_pids(&d.log_text(), "sdn").len(),
        1,
        "{}",
        d.log_text()
    );
    finish(d);
}

/// `--pid=N` sends MAINPID=N (and, as root, sends with N's credentials):
/// the background process becomes the main process, so the exit of the
/// script that started it is not the service's exit. Its own exit is.
#[test]
fn mainpid_in_the_group_becomes_the_main_process() {
    need(SYSTEMD_NOTIFY, "systemd");
    let services = [
        svc(
            "forker",
            &format!(
                "set -e; sleep 100 & echo $! > $DIR/main; {SYSTEMD_NOTIFY} --ready --pid=$!; exit 0"
            ),
            "    backoff:\n      initial: 100ms\n    healthcheck:\n      readiness:\n        type: notify\n",
        ),
        sd_service(
            "liar",
            &["send:MAINPID=1\\nREADY=1", "hold"],
            NOTIFY,
        ),
    ]
    .concat();
    let mut d = Daemon::start_with("mainpid", "", &services, write_sd_py);
    let mfile = d.dir.join("main");
    let main: i32 = wait_for(SOON, "the main pid file", || {
        std::fs::read_to_string(&mfile).ok()?.trim().parse().ok()
    });
    let log = d.wait_log(&format!("forker: main pid is now {main} (MAINPID)"), SOON);
    let leader = spawned_pids(&log, "forker")[0];
    // The script exits 0 right after systemd-notify; the service stays.
    wait_for(SOON, "the script to be reaped", || {
        (!exists(leader)).then_some(())
    });
    let st = wait_detail(&d, "forker", "main_pid", &main.to_string());
    assert_eq!(st["state"], "running", "{st}");
    assert_eq!(st["restarts"], 0, "{st}");
    assert!(alive(main), "the main process was killed\n{}", d.log_text());
    // (The machine's own exit line ends in "after <uptime>".)
    let early = format!("forker: pid {leader} exited with exit code 0 after");
    assert!(!d.log_text().contains(&early), "{}", d.log_text());
    // Killing the main process ends the service: it restarts.
    signal(main, 9);
    let log = d.wait_count("forker: spawned pid", 2, SOON);
    assert!(
        log.contains(&format!("forker: main pid {main} (MAINPID) exited")),
        "{log}"
    );
    // MAINPID naming a process outside the group (pid 1) is ignored.
    let log = d.wait_log("liar: sd_notify: ignored MAINPID=1", SOON);
    assert!(log.contains("liar: ready (pid"), "{log}");
    assert_eq!(
        detail(&d, "liar")["details"]["main_pid"],
        serde_json::Value::Null
    );
    finish(d);
}

// ------------------------------------------------------------ redis

/// redis speaks sd_notify itself (libsystemd): `--supervised systemd`
/// sends READY=1 once it accepts connections, and the service becomes
/// running through that, with redis's STATUS= text in status.
#[test]
fn redis_supervised_systemd_becomes_running_via_notify() {
    need(REDIS, "redis-server");
    let port = free_port();
    let services = format!(
        "  - name: redis\n    binary: {REDIS}\n    args: ['--supervised', 'systemd', '--port', '{port}', '--bind', '127.0.0.1', '--save', '', '--dir', '$DIR']\n{NOTIFY}"
    );
    let mut d = Daemon::start("redis", "", &services);
    d.wait_log("redis: spawned pid", SOON);
    let log = d.wait_log("redis: ready (pid", SOON);
    let st = wait_state(&d, "redis", "running", SOON);
    assert_eq!(st["restarts"], 0, "{st}");
    // It really is serving.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"PING\r\n").unwrap();
    let mut b = [0u8; 7];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"+PONG\r\n", "{log}");
    println!("redis status: {}", st["details"]["notify_status"]);
    finish(d);
}

// ------------------------------------------------------------ fds

/// Descriptors sent with a message (FDSTORE=1, BARRIER=1) are closed at
/// once, whether the sender is the service or an outsider whose message
/// is ignored: none stay open in the daemon.
#[test]
fn notify_fds_are_closed_whoever_sends_them() {
    let services = sd_service("fds", &["send:READY=1", "fds:3:FDSTORE=1", "hold"], NOTIFY);
    let mut d = Daemon::start_with("notifyfds", "", &services, write_sd_py);
    wait_for(SOON, "the sender's verdict", || {
        (d.dir.join("fds-ok").exists() || d.dir.join("fds-leaked").exists()).then_some(())
    });
    assert!(
        d.dir.join("fds-ok").exists(),
        "fds kept open\n{}",
        d.log_text()
    );
    d.wait_log("fds: ready (pid", SOON);
    // An outsider (this test process) sends BARRIER=1 with an fd.
    let st = detail(&d, "fds");
    let pid = st["pid"].as_i64().unwrap();
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let sock = env
        .split(|&b| b == 0)
        .find_map(|e| e.strip_prefix(b"NOTIFY_SOCKET=@"))
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .unwrap();
    let dir = d.dir.clone();
    std::fs::remove_file(dir.join("fds-ok")).unwrap();
    let out = std::process::Command::new(PYTHON)
        .arg(dir.join("sd.py"))
        .arg("fds:1:BARRIER=1")
        .env("NOTIFY_SOCKET", format!("@{sock}"))
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        dir.join("fds-ok").exists(),
        "outsider's fd kept\n{}",
        d.log_text()
    );
    assert!(!dir.join("fds-leaked").exists(), "{}", d.log_text());
    d.wait_log("fds: sd_notify: ignored a message from pid", SOON);
    finish(d);
}

// ------------------------------------------------------------ states

/// RELOADING=1, READY=1 and STOPPING=1 show as the notify state in
/// `status NAME` (text and JSON).
#[test]
fn reloading_and_stopping_show_in_status() {
    let services = sd_service(
        "rl",
        &[
            "send:READY=1",
            "wait:go1",
            "send:RELOADING=1\\nMONOTONIC_USEC=1",
            "wait:go2",
            "send:READY=1\\nSTATUS=reloaded",
            "wait:go3",
            "send:STOPPING=1",
            "hold",
        ],
        NOTIFY,
    );
    let mut d = Daemon::start_with("notifystate", "", &services, write_sd_py);
    wait_state(&d, "rl", "running", SOON);
    wait_detail(&d, "rl", "notify_state", "ready");
    touch(&d, "go1");
    wait_detail(&d, "rl", "notify_state", "reloading");
    d.wait_log("rl: reloading (RELOADING=1)", SOON);
    touch(&d, "go2");
    let st = wait_detail(&d, "rl", "notify_state", "ready");
    assert_eq!(st["details"]["notify_status"], "reloaded", "{st}");
    touch(&d, "go3");
    wait_detail(&d, "rl", "notify_state", "stopping");
    let text = ok(ctl(&d, &["status", "rl"])).stdout;
    assert!(
        text.lines()
            .any(|l| l.contains("notify_state") && l.contains("stopping")),
        "{text}"
    );
    // Saying so changes nothing else: still running, no restart.
    let st = detail(&d, "rl");
    assert_eq!(st["state"], "running", "{st}");
    assert_eq!(st["restarts"], 0, "{st}");
    finish(d);
}

// ------------------------------------------------------------ timeouts

/// EXTEND_TIMEOUT_USEC= moves the start_timeout deadline to at least now +
/// the value: a service that says so survives past start_timeout, and one
/// that then stays silent is stopped when the extension runs out.
#[test]
fn extend_timeout_usec_extends_start_timeout() {
    let services = [
        sd_service(
            "slow",
            &[
                "send:EXTEND_TIMEOUT_USEC=20000000",
                "sleep:1.5",
                "touch:past",
                "wait:go",
                "send:READY=1",
                "hold",
            ],
            "    start_timeout: 1s\n    healthcheck:\n      readiness:\n        type: notify\n",
        ),
        sd_service(
            "silent",
            &["send:EXTEND_TIMEOUT_USEC=2000000", "hold"],
            "    start_timeout: 500ms\n    restart: never\n    healthcheck:\n      readiness:\n        type: notify\n",
        ),
    ]
    .concat();
    let mut d = Daemon::start_with("extend", "", &services, write_sd_py);
    let past = d.dir.join("past");
    wait_for(SOON, "slow to live past its start_timeout", || {
        past.exists().then_some(())
    });
    assert!(
        !d.log_text()
            .contains("slow: not ready within start_timeout"),
        "{}",
        d.log_text()
    );
    assert_eq!(detail(&d, "slow")["state"], "starting");
    touch(&d, "go");
    wait_state(&d, "slow", "running", SOON);
    // The silent one is stopped when its 2 s extension runs out.
    let log = d.wait_log("silent: not ready within start_timeout", SOON);
    let spawned = stamps(&log, "silent: spawned pid")[0];
    let timed_out = stamps(&log, "silent: not ready within start_timeout")[0];
    println!(
        "start_timeout 500ms, EXTEND_TIMEOUT_USEC=2s: stopped {} ms after spawn",
        timed_out - spawned
    );
    assert!(timed_out - spawned >= 1900, "{log}");
    assert!(timed_out - spawned < 10_000, "{log}");
    finish(d);
}

/// EXTEND_TIMEOUT_USEC= while stopping moves the SIGKILL deadline.
#[test]
fn extend_timeout_usec_extends_stop_timeout() {
    let script = format!(
        "trap '{PYTHON} $DIR/sd.py send:EXTEND_TIMEOUT_USEC=20000000; sleep 1.5; touch $DIR/clean; exit 0' TERM; {PYTHON} $DIR/sd.py send:READY=1; while :; do sleep 0.05; done"
    );
    let services = svc(
        "stopper",
        &script,
        "    stop_timeout: 500ms\n    healthcheck:\n      readiness:\n        type: notify\n",
    );
    let mut d = Daemon::start_with("extendstop", "", &services, write_sd_py);
    wait_state(&d, "stopper", "running", SOON);
    ok(ctl(&d, &["stop", "stopper", "--no-wait"]));
    let clean = d.dir.join("clean");
    wait_for(SOON, "the service's clean exit", || {
        clean.exists().then_some(())
    });
    d.wait_log("stopper: stopped", SOON);
    assert!(
        !d.log_text().contains("stopper: stop timeout; sent SIGKILL"),
        "{}",
        d.log_text()
    );
    finish(d);
}

// ------------------------------------------------------------ watchdog

/// WATCHDOG=trigger is a watchdog failure at once: the service restarts
/// without waiting for its (long) watchdog interval.
#[test]
fn watchdog_trigger_restarts_at_once() {
    let services = sd_service(
        "trig",
        &["send:READY=1", "wait:go", "send:WATCHDOG=trigger", "hold"],
        "    backoff:\n      initial: 100ms\n    healthcheck:\n      readiness:\n        type: notify\n        watchdog: 600s\n",
    );
    let mut d = Daemon::start_with("wdtrigger", "", &services, write_sd_py);
    wait_state(&d, "trig", "running", SOON);
    let t0 = Instant::now();
    touch(&d, "go");
    let log = d.wait_log("trig: readiness check unhealthy: watchdog triggered", SOON);
    let pid = spawned_pids(&log, "trig")[0];
    d.wait_log(
        &format!("trig: liveness failed; restarting pid {pid}"),
        SOON,
    );
    d.wait_count("trig: spawned pid", 2, SOON);
    println!("WATCHDOG=trigger: restarted within {:?}", t0.elapsed());
    assert!(t0.elapsed() < Duration::from_secs(60));
    finish(d);
}

/// A service with a watchdog gets WATCHDOG_USEC (the interval in µs) and
/// WATCHDOG_PID (its own pid, so sd_watchdog_enabled() accepts it), fresh
/// on every run; services without a watchdog get neither.
#[test]
fn watchdog_env_names_the_main_pid() {
    let dump = "echo \"${WATCHDOG_USEC-unset} ${WATCHDOG_PID-unset} $$\" > $DIR/env.$$";
    let services = [
        svc(
            "wd",
            &format!("{dump}; exec {PYTHON} $DIR/sd.py send:READY=1 hold"),
            "    backoff:\n      initial: 100ms\n    healthcheck:\n      readiness:\n        type: notify\n        watchdog: 700ms\n",
        ),
        svc(
            "quiet",
            &format!("{dump}; exec {PYTHON} $DIR/sd.py send:READY=1 hold"),
            NOTIFY,
        ),
        svc("plain", &format!("{dump}; exec sleep 100"), ""),
    ]
    .concat();
    let mut d = Daemon::start_with("wdenv", "", &services, write_sd_py);
    // The watchdog expires (no pings): two runs of wd, two pids.
    let log = d.wait_count("wd: ready (pid", 2, SOON);
    let wd = spawned_pids(&log, "wd");
    let read = |pid: i32| -> String {
        let f = d.dir.join(format!("env.{pid}"));
        wait_for(SOON, "the env dump", || {
            std::fs::read_to_string(&f)
                .ok()
                .filter(|s| s.ends_with('\n'))
        })
    };
    for pid in &wd[..2] {
        assert_eq!(read(*pid).trim(), format!("700000 {pid} {pid}"));
    }
    let quiet = spawned_pids(&log, "quiet")[0];
    assert_eq!(read(quiet).trim(), format!("unset unset {quiet}"));
    let plain = spawned_pids(&d.log_text(), "plain")[0];
    assert_eq!(read(plain).trim(), format!("unset unset {plain}"));
    finish(d);
}

/// Two services whose READY=1 arrive in the same loop turn (the daemon is
/// held with SIGSTOP while both send) both become running: every readable
/// notify socket is read, not only the last one the poller reported.
#[test]
fn ready_from_two_services_in_one_turn() {
    let services = [
        sd_service(
            "one",
            &["wait:go", "send:READY=1", "touch:sent-one", "hold"],
            NOTIFY,
        ),
        sd_service(
            "two",
            &["wait:go", "send:READY=1", "touch:sent-two", "hold"],
            NOTIFY,
        ),
    ]
    .concat();
    let mut d = Daemon::start_with("tworeadies", "", &services, write_sd_py);
    d.wait_log("one: spawned pid", SOON);
    d.wait_log("two: spawned pid", SOON);
    d.signal(19); // SIGSTOP
    touch(&d, "go");
    wait_for(SOON, "both READY=1 sent", || {
        (d.dir.join("sent-one").exists() && d.dir.join("sent-two").exists()).then_some(())
    });
    d.signal(18); // SIGCONT
    wait_state(&d, "one", "running", SOON);
    wait_state(&d, "two", "running", SOON);
    finish(d);
}

/// coffeyd started by a service manager of its own (NOTIFY_SOCKET and a
/// watchdog in its environment) does not hand those to its services: a
/// service's NOTIFY_SOCKET and WATCHDOG_* are coffeyd's own, or none.
#[test]
fn managers_notify_env_is_not_inherited() {
    let dir = tempdir("mgrenv");
    write_sd_py(&dir);
    let dump = "echo \"${NOTIFY_SOCKET-unset} ${WATCHDOG_USEC-unset} ${WATCHDOG_PID-unset}\" > $DIR/env.$$";
    let services = [
        svc("plain", &format!("{dump}; exec sleep 100"), ""),
        svc(
            "wd",
            &format!("{dump}; exec {PYTHON} $DIR/sd.py send:READY=1 hold"),
            "    healthcheck:\n      readiness:\n        type: notify\n        watchdog: 60s\n",
        ),
    ]
    .concat();
    let mut d = Daemon {
        log: dir.join("coffey.log"),
        socket: dir.join("s.sock"),
        pid_file: dir.join("coffey.pid"),
        config: dir.join("config.yaml"),
        child: None,
        dir,
    };
    std::fs::write(&d.config, d.config_text("", &services)).unwrap();
    d.child = Some(
        std::process::Command::new(BIN)
            .arg("-c")
            .arg(&d.config)
            .env("NOTIFY_SOCKET", "/run/systemd/notify")
            .env("WATCHDOG_USEC", "5")
            .env("WATCHDOG_PID", "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(d.dir.join("stderr")).unwrap())
            .spawn()
            .unwrap(),
    );
    let log = d.wait_log("wd: ready (pid", SOON);
    let read = |name: &str| -> String {
        let pid = spawned_pids(&log, name)[0];
        let f = d.dir.join(format!("env.{pid}"));
        wait_for(SOON, "the env dump", || {
            std::fs::read_to_string(&f)
                .ok()
                .filter(|s| s.ends_with('\n'))
        })
        .trim()
        .to_string()
    };
    assert_eq!(read("plain"), "unset unset unset");
    let wd = read("wd");
    let pid = spawned_pids(&log, "wd")[0];
    assert!(wd.starts_with('@'), "{wd}");
    assert!(wd.ends_with(&format!(" 60000000 {pid}")), "{wd}");
    finish(d);
}
