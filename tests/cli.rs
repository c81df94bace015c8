//! The client role end to end, with the real binary and no real daemon:
//! "not running" handling, `ctl` and `coffeyctl` dispatch, usage errors,
//! `version`, and the human/JSON output and wait logic against a small
//! scripted fake daemon speaking the real wire codec.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_macros,
    clippy::disallowed_methods
)]

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coffey::control::proto::{self, event, plan, ErrorCode, LastExit, Reply, Request, WireState};

const BIN: &str = env!("CARGO_BIN_EXE_coffeyd");

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn tempdir(tag: &str) -> PathBuf {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("cfy-cli-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn missing_socket() -> PathBuf {
    tempdir("nosock").join("nonexistent.sock")
}

struct Run {
    code: i32,
    out: String,
    err: String,
}

fn run_prog(prog: &Path, args: &[&str]) -> Run {
    let o: Output = Command::new(prog)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("XDG_RUNTIME_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run {
        code: o.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&o.stdout).into_owned(),
        err: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn run(args: &[&str]) -> Run {
    run_prog(Path::new(BIN), args)
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s:?}"))
}

#[test]
fn status_without_daemon_exits_4_with_one_line() {
    let sock = missing_socket();
    let s = sock.to_str().unwrap();
    for args in [
        &["status", "-s", s][..],
        &["ctl", "status", "-s", s],
        &["-s", s, "status"],
    ] {
        let r = run(args);
        assert_eq!(r.code, 4, "{args:?}: {}", r.err);
        assert_eq!(r.out, "");
        assert_eq!(
            r.err,
            format!("coffeyd is not running (no socket at {s})\n")
        );
    }
}

#[test]
fn json_error_without_daemon() {
    let sock = missing_socket();
    let s = sock.to_str().unwrap();
    let r = run(&["status", "-j", "-s", s]);
    assert_eq!(r.code, 4);
    assert_eq!(
        r.err,
        format!("coffeyd is not running (no socket at {s})\n")
    );
    let v = json(&r.out);
    assert_eq!(v["ok"], false);
    assert_eq!(v["code"], 4);
    assert_eq!(v["error"], "not running");
    assert_eq!(
        v["message"],
        format!("coffeyd is not running (no socket at {s})")
    );
}

#[test]
fn nothing_listening_is_reported() {
    let d = tempdir("refused");
    let sock = d.join("dead.sock");
    drop(UnixListener::bind(&sock).unwrap());
    let r = run(&["stop", "x", "-s", sock.to_str().unwrap()]);
    assert_eq!(r.code, 4);
    assert_eq!(
        r.err,
        format!(
            "coffeyd is not running (nothing listening at {})\n",
            sock.display()
        )
    );
}

#[test]
fn coffeyctl_symlink_is_client_only() {
    let d = tempdir("ctl");
    let ctl = d.join("coffeyctl");
    std::os::unix::fs::symlink(BIN, &ctl).unwrap();
    let sock = missing_socket();
    let s = sock.to_str().unwrap();
    let r = run_prog(&ctl, &["status", "-s", s]);
    assert_eq!(r.code, 4);
    assert_eq!(
        r.err,
        format!("coffeyd is not running (no socket at {s})\n")
    );
    let r = run_prog(&ctl, &["ctl", "status", "-s", s]);
    assert_eq!(r.code, 4);
    // No command: usage, exit 2, and never a daemon.
    let r = run_prog(&ctl, &[]);
    assert_eq!(r.code, 2);
    assert!(r.err.contains("usage: coffeyctl"), "{}", r.err);
    let r = run_prog(&ctl, &["-c", "/nonexistent/config.yaml"]);
    assert_eq!(r.code, 2);
    let r = run_prog(&ctl, &["--help"]);
    assert_eq!(r.code, 0);
    assert!(r.out.starts_with("usage: coffeyctl"), "{}", r.out);
}

#[test]
fn bad_usage_exits_2() {
    for args in [
        &["--bogus"][..],
        &["status", "--bogus"],
        &["frobnicate"],
        &["start"],
        &["logs", "api", "-n", "lots"],
        &["stop", "api", "--timeout", "soon"],
        &["status", "--dry-run"],
        &["signal", "api", "SIGNOPE"],
        &["-j"],
        &["ctl"],
    ] {
        let r = run(args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.err);
        assert_eq!(r.out, "", "{args:?}");
        assert!(r.err.starts_with("coffeyd: "), "{args:?}: {}", r.err);
    }
}

#[test]
fn help_lists_the_commands() {
    let r = run(&["--help"]);
    assert_eq!(r.code, 0);
    for word in [
        "status", "restart", "logs", "events", "reload", "shutdown", "--json",
    ] {
        assert!(r.out.contains(word), "{word} missing from help");
    }
}

#[test]
fn version_without_daemon() {
    let sock = missing_socket();
    let s = sock.to_str().unwrap();
    let r = run(&["version", "-s", s]);
    assert_eq!(r.code, 0, "{}", r.err);
    let mut lines = r.out.lines();
    let first = lines.next().unwrap();
    assert!(
        first.starts_with(&format!("coffeyd {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{first}"
    );
    assert_eq!(
        lines.next().unwrap(),
        format!("daemon: not running (no socket at {s})")
    );

    let r = run(&["-j", "version", "-s", s]);
    assert_eq!(r.code, 0);
    let v = json(&r.out);
    assert_eq!(v["client"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["client"]["commit"]
        .as_str()
        .is_some_and(|c| !c.is_empty()));
    assert!(v["client"]["target"]
        .as_str()
        .is_some_and(|c| c.contains("linux")));
    assert!(v["client"]["profile"].is_string());
    assert!(v["daemon"].is_null());
    assert!(v["daemon_error"].as_str().unwrap().contains("not running"));
}

#[test]
fn explicit_config_that_does_not_load_exits_1() {
    let r = run(&["status", "-c", "/nonexistent/coffey.yaml"]);
    assert_eq!(r.code, 1);
    assert!(r.err.contains("/nonexistent/coffey.yaml"), "{}", r.err);
}

#[test]
fn socket_comes_from_the_config() {
    let d = tempdir("cfgsock");
    let sock = d.join("from-config.sock");
    let cfg = d.join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "coffey:\n  socket: {}\nservices:\n  - name: a\n    binary: /bin/sh\n",
            sock.display()
        ),
    )
    .unwrap();
    let r = run(&["status", "-c", cfg.to_str().unwrap()]);
    assert_eq!(r.code, 4, "{}", r.err);
    assert_eq!(
        r.err,
        format!("coffeyd is not running (no socket at {})\n", sock.display())
    );
}

// ---------------------------------------------------------------------
// A scripted fake daemon: enough of the protocol to drive the client.

struct Fake {
    dir: PathBuf,
    sock: PathBuf,
}

fn send(s: &mut UnixStream, r: &Reply<'_>) {
    let mut b = [0u8; proto::HEADER + proto::MAX_PAYLOAD];
    let n = proto::encode_reply(r, &mut b).unwrap();
    let _ = s.write_all(&b[..n]);
}

fn service(name: &str, state: WireState, pid: i32) -> Reply<'_> {
    Reply::Service {
        name,
        state,
        pid,
        uptime_ms: if pid > 0 { 65_000 } else { 0 },
        restarts: 1,
        health: "",
        last_exit: LastExit { kind: 1, value: 3 },
        reason: if pid > 0 { "" } else { "next try in 4s" },
    }
}

type Subs = Arc<Mutex<Vec<UnixStream>>>;

fn handle(req: &Request<'_>, s: &mut UnixStream, subs: &Subs) {
    match req {
        Request::Status { name: "", .. } => {
            send(s, &service("api", WireState::Running, 4242));
            send(s, &service("db", WireState::Backoff, 0));
            send(s, &service("slow", WireState::Starting, 77));
            send(s, &Reply::End);
        }
        Request::Status { name: "api", .. } => {
            send(s, &service("api", WireState::Running, 4242));
            for (key, value) in [("binary", "/bin/api"), ("event", "one"), ("event", "two")] {
                send(s, &Reply::Detail { key, value });
            }
            send(s, &Reply::End);
        }
        Request::Status { name, .. } | Request::Signal { name, .. } if *name == "ghost" => {
            send(
                s,
                &Reply::Error {
                    code: ErrorCode::UnknownService,
                    message: "unknown service 'ghost'",
                },
            );
        }
        Request::Signal { .. } => send(
            s,
            &Reply::Ok {
                message: "sent SIGHUP to api",
            },
        ),
        Request::Power { .. } | Request::Reexec | Request::Metrics | Request::DebugPanic => send(
            s,
            &Reply::Error {
                code: ErrorCode::Failed,
                message: "not supported by the fake",
            },
        ),
        Request::Events => {
            send(s, &Reply::Ok { message: "" });
            subs.lock().unwrap().push(s.try_clone().unwrap());
        }
        Request::Start { names } | Request::Restart { names } => {
            send(s, &Reply::Ok { message: "ok" });
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let subs = subs.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                for n in &names {
                    let (kind, state, pid, detail) = match n.as_str() {
                        "broken" => (
                            event::FAILED,
                            WireState::Failed,
                            0,
                            "exec failed: No such file or directory",
                        ),
                        "slow" => (event::WAITING, WireState::Waiting, 0, "waiting for db"),
                        _ => (event::SPAWNED, WireState::Running, 4243, ""),
                    };
                    for sub in subs.lock().unwrap().iter_mut() {
                        send(
                            sub,
                            &Reply::Event {
                                ts_ms: 1_795_319_400_123,
                                service: n,
                                kind,
                                state,
                                pid,
                                detail,
                            },
                        );
                    }
                }
            });
        }
        Request::Stop { .. } => send(s, &Reply::Ok { message: "ok" }),
        Request::Logs { follow, .. } => {
            send(
                s,
                &Reply::LogLine {
                    service: "api",
                    ts_ms: 1_795_319_400_123,
                    stream: 0,
                    cut: false,
                    text: b"hello",
                },
            );
            send(s, &Reply::Dropped { count: 2 });
            send(
                s,
                &Reply::LogLine {
                    service: "api",
                    ts_ms: 1_795_319_400_124,
                    stream: 1,
                    cut: true,
                    text: b"oops",
                },
            );
            send(s, &Reply::End);
            if *follow {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
        Request::Reload { dry_run } => {
            send(
                s,
                &Reply::PlanItem {
                    action: plan::ADD,
                    name: "web",
                    detail: "new service",
                },
            );
            send(
                s,
                &Reply::PlanItem {
                    action: plan::UNCHANGED,
                    name: "api",
                    detail: "",
                },
            );
            if *dry_run {
                send(
                    s,
                    &Reply::Ok {
                        message: "dry run: nothing changed",
                    },
                );
            } else {
                send(
                    s,
                    &Reply::Error {
                        code: ErrorCode::Failed,
                        message: "a.yaml:3:5: error: service 'web': bad\n1 error(s), 0 warning(s)",
                    },
                );
            }
        }
        Request::Version => send(
            s,
            &Reply::Version {
                version: "9.9.9",
                commit: "fake",
                target: "fake-target",
                profile: "release",
            },
        ),
        Request::Shutdown => send(
            s,
            &Reply::Ok {
                message: "shutting down",
            },
        ),
        Request::Status { .. } => send(
            s,
            &Reply::Error {
                code: ErrorCode::UnknownService,
                message: "unknown service",
            },
        ),
    }
}

fn serve(mut s: UnixStream, subs: Subs) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let used = match proto::decode_request(&buf) {
            Ok((req, used)) => {
                handle(&req, &mut s, &subs);
                used
            }
            Err(proto::DecodeError::Incomplete) => 0,
            Err(e) => panic!("bad request from the client: {e:?}"),
        };
        if used > 0 {
            buf.drain(..used);
            continue;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

impl Fake {
    fn start(tag: &str) -> Fake {
        let dir = tempdir(tag);
        let sock = dir.join("fake.sock");
        let l = UnixListener::bind(&sock).unwrap();
        let subs: Subs = Arc::default();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let s = s.unwrap();
                let subs = subs.clone();
                std::thread::spawn(move || serve(s, subs));
            }
        });
        Fake { dir, sock }
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut a: Vec<&str> = args.to_vec();
        a.push("-s");
        a.push(self.sock.to_str().unwrap());
        run(&a)
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn status_table_and_json() {
    let f = Fake::start("status");
    let r = f.run(&["status"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(
        r.out,
        "NAME  STATE     PID   UPTIME  RESTARTS  HEALTH  REASON\n\
         api   running   4242  1m05s   1         -       -\n\
         db    backoff   -     -       1         -       next try in 4s\n\
         slow  starting  77    1m05s   1         -       -\n"
    );
    let r = f.run(&["status", "-v"]);
    assert!(r.out.lines().next().unwrap().contains("LAST EXIT"));
    assert!(r.out.contains("exit 3"));

    let r = f.run(&["status", "-j"]);
    let v = json(&r.out);
    assert_eq!(v.as_array().unwrap().len(), 3);
    assert_eq!(v[0]["name"], "api");
    assert_eq!(v[0]["pid"], 4242);
    assert_eq!(v[0]["health"], serde_json::Value::Null);
    assert_eq!(v[0]["last_exit"]["code"], 3);
    assert_eq!(v[1]["pid"], serde_json::Value::Null);
    assert_eq!(v[1]["reason"], "next try in 4s");

    let r = f.run(&["status", "api"]);
    assert_eq!(r.code, 0);
    assert!(r.out.contains("binary:     /bin/api\n"), "{}", r.out);
    let v = json(&f.run(&["status", "api", "-j"]).out);
    assert_eq!(v["details"]["binary"], "/bin/api");
    assert_eq!(v["details"]["event"], serde_json::json!(["one", "two"]));

    let r = f.run(&["status", "ghost"]);
    assert_eq!(r.code, 3);
    assert_eq!(r.err, "coffeyd: unknown service 'ghost'\n");
    let r = f.run(&["status", "ghost", "-j"]);
    assert_eq!(r.code, 3);
    assert_eq!(json(&r.out)["error"], "unknown service");
}

#[test]
fn start_waits_for_the_event() {
    let f = Fake::start("start");
    // api is already running in the snapshot.
    let r = f.run(&["start", "api"]);
    assert_eq!(
        (r.code, r.out.as_str()),
        (0, "api: running (pid 4242)\n"),
        "{}",
        r.err
    );
    // restart needs the spawned event, which the fake sends 50ms later.
    let r = f.run(&["restart", "api", "-j"]);
    assert_eq!(r.code, 0, "{}", r.err);
    let v = json(&r.out);
    assert_eq!(v["ok"], true);
    assert_eq!(v["services"][0]["pid"], 4243);
    // A failed event fails the start.
    let r = f.run(&["start", "broken"]);
    assert_eq!(r.code, 1);
    assert!(
        r.err.contains("exec failed: No such file or directory"),
        "{}",
        r.err
    );
    // Never reaching the target times out.
    let r = f.run(&["start", "slow", "--timeout", "300ms"]);
    assert_eq!(r.code, 5, "{}", r.err);
    assert!(
        r.err.contains("slow (waiting: waiting for db)"),
        "{}",
        r.err
    );
    let r = f.run(&["start", "slow", "--no-wait"]);
    assert_eq!((r.code, r.out.as_str()), (0, "ok\n"));
}

#[test]
fn signal_logs_reload_version_shutdown() {
    let f = Fake::start("misc");
    let r = f.run(&["signal", "api", "HUP"]);
    assert_eq!((r.code, r.out.as_str()), (0, "sent SIGHUP to api\n"));
    assert_eq!(f.run(&["signal", "ghost", "1"]).code, 3);

    let r = f.run(&["logs", "api", "--no-follow"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(
        r.out,
        "2026-11-22T03:50:00.123Z stdout hello\n... 2 lines dropped\n2026-11-22T03:50:00.124Z stderr oops [cut]\n"
    );
    let r = f.run(&["logs", "api", "-j"]);
    assert_eq!(r.code, 0, "{}", r.err);
    let lines: Vec<serde_json::Value> = r.out.lines().map(json).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["text"], "hello");
    assert_eq!(lines[1]["dropped"], 2);
    assert_eq!(lines[2]["stream"], "stderr");
    assert_eq!(lines[2]["cut"], true);

    let r = f.run(&["reload", "--dry-run"]);
    assert_eq!(r.code, 0);
    assert_eq!(
        r.out,
        "add        web  new service\nunchanged  api\ndry run: nothing changed\n"
    );
    let r = f.run(&["reload"]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.err,
        "a.yaml:3:5: error: service 'web': bad\n1 error(s), 0 warning(s)\n"
    );
    let v = json(&f.run(&["reload", "-j", "--dry-run"]).out);
    assert_eq!(v["applied"], false);
    assert_eq!(v["plan"][0]["action"], "add");

    let r = f.run(&["version"]);
    assert_eq!(r.code, 0);
    assert!(
        r.out
            .ends_with("daemon: 9.9.9 (commit fake, fake-target, release)\n"),
        "{}",
        r.out
    );
    let v = json(&f.run(&["version", "-j"]).out);
    assert_eq!(v["daemon"]["version"], "9.9.9");

    // The fake keeps answering, so a waiting shutdown times out...
    let r = f.run(&["shutdown", "--timeout", "200ms"]);
    assert_eq!(r.code, 5, "{}", r.err);
    // ...and --no-wait returns at once.
    let r = f.run(&["shutdown", "--no-wait", "-j"]);
    assert_eq!(r.code, 0);
    assert_eq!(json(&r.out)["message"], "shutting down");
}
