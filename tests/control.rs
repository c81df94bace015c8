//! The control socket end to end: the real daemon, a real socket, the raw
//! protocol and the real CLI. Every wait has a deadline; every test ends by
//! checking that the daemon made no heap allocation after startup.
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

use coffey::control::proto::{
    self, event, DecodeError, ErrorCode, Names, Reply, Request, WireState,
};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Generous bound on any single read from the daemon (a hang fails, it
/// does not block the suite).
const READ_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- raw client

/// One reply frame, owned.
struct Frame(Vec<u8>);

impl Frame {
    fn get(&self) -> Reply<'_> {
        proto::decode_reply(&self.0).unwrap().0
    }
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.get())
    }
}

/// A raw protocol connection.
struct Raw {
    s: UnixStream,
    buf: Vec<u8>,
}

impl Raw {
    fn connect(path: &Path) -> Raw {
        let s =
            UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        Raw { s, buf: Vec::new() }
    }

    fn send_bytes(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }

    fn send(&mut self, req: &Request<'_>) {
        let mut b = [0u8; 2048];
        let n = proto::encode_request(req, &mut b).unwrap();
        self.send_bytes(&b[..n]);
    }

    /// The next frame, or None at end of stream.
    fn next(&mut self) -> Option<Frame> {
        loop {
            match proto::frame_bounds(&self.buf, proto::MAX_PAYLOAD) {
                Ok((_, end)) => {
                    let f: Vec<u8> = self.buf.drain(..end).collect();
                    if let Err(e) = proto::decode_reply(&f) {
                        panic!("undecodable reply {e:?}: {f:?}");
                    }
                    return Some(Frame(f));
                }
                Err(DecodeError::Incomplete) => {}
                Err(e) => panic!("bad frame header from the daemon: {e:?}: {:?}", self.buf),
            }
            let mut tmp = [0u8; 65536];
            match self.s.read(&mut tmp) {
                Ok(0) => {
                    assert!(self.buf.is_empty(), "EOF inside a frame: {:?}", self.buf);
                    return None;
                }
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read from the daemon: {e}"),
            }
        }
    }

    fn must_next(&mut self) -> Frame {
        self.next().expect("the daemon closed the connection")
    }

    /// Sends `req` and collects frames up to and including the terminator
    /// (`Ok`, `Error`, `End` or `Version`).
    fn request(&mut self, req: &Request<'_>) -> Vec<Frame> {
        self.send(req);
        let mut v = Vec::new();
        loop {
            let f = self
                .next()
                .unwrap_or_else(|| panic!("connection closed after {v:?} in the reply to {req:?}"));
            let end = matches!(
                f.get(),
                Reply::Ok { .. } | Reply::Error { .. } | Reply::End | Reply::Version { .. }
            );
            v.push(f);
            if end {
                return v;
            }
        }
    }

    /// Reads until end of stream (the daemon closed) and returns the frames.
    fn until_eof(&mut self) -> Vec<Frame> {
        let mut v = Vec::new();
        while let Some(f) = self.next() {
            v.push(f);
        }
        v
    }
}

fn names<'a>(v: &[&'a str]) -> Names<'a> {
    let mut n = Names::new();
    for s in v {
        n.push(s).unwrap();
    }
    n
}

/// One request on a fresh connection.
fn ask(sock: &Path, req: &Request<'_>) -> Vec<Frame> {
    Raw::connect(sock).request(req)
}

/// A served connection, retrying while the daemon answers `busy` (a
/// closed client's slot is freed when the daemon gets to it).
fn connect_when_free(sock: &Path, secs: f64) -> Raw {
    wait_for(secs, "a free client slot", || {
        let mut e = Raw::connect(sock);
        let mut b = [0u8; 16];
        let n = proto::encode_request(&Request::Version, &mut b).unwrap();
        // A busy daemon may have closed already: EPIPE, then read its answer.
        let _ = e.s.write_all(&b[..n]);
        match e.must_next().get() {
            Reply::Version { .. } => Some(e),
            Reply::Error {
                code: ErrorCode::Busy,
                ..
            } => None,
            r => panic!("expected Version or Busy, got {r:?}"),
        }
    })
}

fn expect_ok(frames: &[Frame]) -> String {
    match frames.last().map(Frame::get) {
        Some(Reply::Ok { message }) if frames.len() == 1 => message.to_string(),
        _ => panic!("expected one Ok, got {frames:?}"),
    }
}

fn expect_error(frames: &[Frame], want: ErrorCode) -> String {
    match frames.last().map(Frame::get) {
        Some(Reply::Error { code, message }) if code == want && frames.len() == 1 => {
            message.to_string()
        }
        _ => panic!("expected one Error{{{want:?}}}, got {frames:?}"),
    }
}

#[derive(Debug, Clone)]
struct Svc {
    name: String,
    state: WireState,
    pid: i32,
    restarts: u32,
    reason: String,
}

fn svc_of(f: &Frame) -> Svc {
    match f.get() {
        Reply::Service {
            name,
            state,
            pid,
            restarts,
            reason,
            ..
        } => Svc {
            name: name.into(),
            state,
            pid,
            restarts,
            reason: reason.into(),
        },
        r => panic!("expected Service, got {r:?}"),
    }
}

fn status_all(sock: &Path) -> Vec<Svc> {
    let f = ask(
        sock,
        &Request::Status {
            name: "",
            verbose: 0,
        },
    );
    assert!(matches!(f.last().unwrap().get(), Reply::End), "{f:?}");
    f[..f.len() - 1].iter().map(svc_of).collect()
}

fn status(sock: &Path, name: &str) -> Svc {
    status_all(sock)
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no service {name}"))
}

fn wait_state(sock: &Path, name: &str, want: WireState, secs: f64) -> Svc {
    let mut last = None;
    wait_for(secs, &format!("{name} {want:?} (last {last:?})"), || {
        let s = status(sock, name);
        let hit = s.state == want;
        last = Some(s.clone());
        hit.then_some(s)
    })
}

/// The evicted count of `name`'s ring in a status dump.
fn evicted(dump: &str, name: &str) -> u64 {
    let l = dump
        .lines()
        .rev()
        .find(|l| l.contains(&format!("status {name}:")))
        .unwrap_or_else(|| panic!("no status line for {name} in\n{dump}"));
    l.split(" lines (")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

// ---------------------------------------------------------------- CLI

fn group_gid(name: &str) -> Option<u32> {
    let g = std::fs::read_to_string("/etc/group").ok()?;
    g.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then(|| f.nth(1)?.parse().ok())?
    })
}

// ================================================================ raw tests

#[test]
fn raw_status_version_and_errors_keep_the_connection() {
    let services = [
        svc("api", "exec sleep 600", "    depends_on: [db]\n"),
        svc("db", "exec sleep 600", ""),
        svc("once", "exit 0", "    type: oneshot\n"),
    ]
    .concat();
    let mut d = Daemon::start("rawstat", "", &services);
    d.wait_log("api: spawned", 10.0);
    d.wait_log("once: completed", 10.0);
    let mut c = Raw::connect(&d.socket);

    // All services, in config order, then End.
    let f = c.request(&Request::Status {
        name: "",
        verbose: 0,
    });
    assert_eq!(f.len(), 4, "{f:?}");
    let all: Vec<Svc> = f[..3].iter().map(svc_of).collect();
    let got: Vec<(&str, WireState)> = all.iter().map(|s| (s.name.as_str(), s.state)).collect();
    assert_eq!(
        got,
        [
            ("api", WireState::Running),
            ("db", WireState::Running),
            ("once", WireState::Completed)
        ]
    );
    assert!(all[0].pid > 0 && alive(all[0].pid), "{all:?}");
    assert_eq!(all[2].pid, 0);
    assert!(matches!(f[3].get(), Reply::End));

    // One service: Service, details, End, on the same connection.
    let f = c.request(&Request::Status {
        name: "api",
        verbose: 1,
    });
    assert_eq!(svc_of(&f[0]).name, "api");
    let details: Vec<(String, String)> = f[1..f.len() - 1]
        .iter()
        .map(|x| match x.get() {
            Reply::Detail { key, value } => (key.to_string(), value.to_string()),
            r => panic!("expected Detail, got {r:?}"),
        })
        .collect();
    let key = |k: &str| {
        details
            .iter()
            .find(|(kk, _)| kk == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no detail {k} in {details:?}"))
    };
    assert_eq!(key("binary"), "/bin/sh");
    assert!(key("depends_on").contains("db"), "{details:?}");
    assert!(key("since").starts_with("20"), "{details:?}");
    assert!(details.iter().any(|(k, _)| k == "event"), "{details:?}");
    assert!(matches!(f.last().unwrap().get(), Reply::End));

    // Errors that keep the connection open.
    let f = c.request(&Request::Status {
        name: "nope",
        verbose: 0,
    });
    assert!(expect_error(&f, ErrorCode::UnknownService).contains("nope"));
    let f = c.request(&Request::Stop {
        names: names(&["db", "nope"]),
    });
    expect_error(&f, ErrorCode::UnknownService);
    // Nothing was done for the known name.
    assert_eq!(status(&d.socket, "db").state, WireState::Running);
    let f = c.request(&Request::Signal {
        name: "db",
        signal: 99,
    });
    expect_error(&f, ErrorCode::BadRequest);
    let f = c.request(&Request::Signal {
        name: "once",
        signal: 10,
    });
    expect_error(&f, ErrorCode::Failed);

    let f = c.request(&Request::Version);
    match f[0].get() {
        Reply::Version { version, .. } => assert_eq!(version, env!("CARGO_PKG_VERSION")),
        r => panic!("{r:?}"),
    }
    // Two requests sent back to back are both answered, in order.
    let mut b = [0u8; 64];
    let n1 = proto::encode_request(&Request::Version, &mut b).unwrap();
    let n2 = proto::encode_request(
        &Request::Status {
            name: "db",
            verbose: 0,
        },
        &mut b[n1..],
    )
    .unwrap();
    c.send_bytes(&b[..n1 + n2]);
    assert!(matches!(c.must_next().get(), Reply::Version { .. }));
    assert_eq!(svc_of(&c.must_next()).name, "db");
    assert_no_alloc(&mut d);
    assert_eq!(d.stop(20.0), 0);
}

#[test]
fn raw_stop_start_restart_and_dependencies() {
    let services = [
        svc("api", "exec sleep 600", "    depends_on: [db]\n"),
        svc("db", "exec sleep 600", ""),
    ]
    .concat();
    let mut d = Daemon::start("rawctl", "", &services);
    d.wait_log("api: spawned", 10.0);
    let sock = d.socket.clone();

    // Stopping db stops api first.
    let m = expect_ok(&ask(
        &sock,
        &Request::Stop {
            names: names(&["db"]),
        },
    ));
    assert_eq!(m, "stop: db");
    wait_state(&sock, "db", WireState::Stopped, 20.0);
    assert_eq!(status(&sock, "api").state, WireState::Stopped);
    let log = d.log_text();
    let pos = |p: &str| {
        log.find(p)
            .unwrap_or_else(|| panic!("{p} missing in\n{log}"))
    };
    assert!(pos("api: stopped") < pos("db: stopping"), "{log}");
    assert!(log.contains("control: stop requested by uid"), "{log}");

    // Starting api brings db up.
    expect_ok(&ask(
        &sock,
        &Request::Start {
            names: names(&["api"]),
        },
    ));
    wait_state(&sock, "api", WireState::Running, 20.0);
    assert_eq!(status(&sock, "db").state, WireState::Running);

    // Restart: a new pid.
    let before = status(&sock, "db").pid;
    expect_ok(&ask(
        &sock,
        &Request::Restart {
            names: names(&["db"]),
        },
    ));
    let after = wait_for(20.0, "db running with a new pid", || {
        let s = status(&sock, "db");
        (s.state == WireState::Running && s.pid != before && s.pid != 0).then_some(s.pid)
    });
    assert!(alive(after));
    wait_for(10.0, "old db pid gone", || (!alive(before)).then_some(()));
    assert_no_alloc(&mut d);
    assert_eq!(d.stop(20.0), 0);
}

#[test]
fn raw_logs_tail_and_follow() {
    let services = svc(
        "talk",
        "for i in 1 2 3 4 5 6 7 8 9 10; do echo line$i; done; echo err1 >&2; while :; do read l < $DIR/fifo; echo \"got $l\"; done",
        "",
    );
    let mut d = Daemon::start_with("rawlogs", "", &services, |dir| {
        let st = Command::new("mkfifo")
            .arg(dir.join("fifo"))
            .status()
            .unwrap();
        assert!(st.success());
    });
    let sock = d.socket.clone();
    let lines = |f: &[Frame]| -> Vec<(String, u8)> {
        f.iter()
            .filter_map(|x| match x.get() {
                Reply::LogLine { text, stream, .. } => {
                    Some((String::from_utf8_lossy(text).into_owned(), stream))
                }
                _ => None,
            })
            .collect()
    };
    // The 11 lines are in the ring once a tail of 100 shows them.
    let all = wait_for(10.0, "11 lines in the ring", || {
        let f = ask(
            &sock,
            &Request::Logs {
                name: "talk",
                lines: 100,
                follow: false,
            },
        );
        let l = lines(&f);
        (l.len() >= 11).then_some(l)
    });
    assert_eq!(all.len(), 11, "{all:?}");
    assert_eq!(all[0], ("line1".to_string(), 0));
    assert_eq!(all[10], ("err1".to_string(), 1), "stderr is stream 1");

    let f = ask(
        &sock,
        &Request::Logs {
            name: "talk",
            lines: 3,
            follow: false,
        },
    );
    assert_eq!(f.len(), 4, "{f:?}");
    assert!(matches!(f[3].get(), Reply::End));
    let l: Vec<String> = lines(&f).into_iter().map(|x| x.0).collect();
    assert_eq!(l, ["line9", "line10", "err1"]);

    // Follow: the tail, then new lines, no End.
    let mut c = Raw::connect(&sock);
    c.send(&Request::Logs {
        name: "talk",
        lines: 2,
        follow: true,
    });
    let a = c.must_next();
    let b = c.must_next();
    assert_eq!(
        lines(&[a, b]).into_iter().map(|x| x.0).collect::<Vec<_>>(),
        ["line10", "err1"]
    );
    let mut fifo = std::fs::OpenOptions::new()
        .write(true)
        .open(d.dir.join("fifo"))
        .unwrap();
    fifo.write_all(b"hello\n").unwrap();
    drop(fifo);
    let f = c.must_next();
    match f.get() {
        Reply::LogLine {
            service,
            text,
            stream,
            cut,
            ..
        } => {
            assert_eq!(
                (service, text, stream, cut),
                ("talk", &b"got hello"[..], 0, false)
            );
        }
        r => panic!("expected the new line, got {r:?}"),
    }
    // Unknown service.
    expect_error(
        &ask(
            &sock,
            &Request::Logs {
                name: "nope",
                lines: 3,
                follow: true,
            },
        ),
        ErrorCode::UnknownService,
    );
    drop(c);
    assert_no_alloc(&mut d);
    assert_eq!(d.stop(20.0), 0);
}

#[test]
fn raw_events_stream() {
    let services = svc("api", "exec sleep 600", "");
    let mut d = Daemon::start("rawev", "", &services);
    d.wait_log("api: spawned", 10.0);
    let mut c = Raw::connect(&d.socket);
    let f = c.request(&Request::Events);
    assert_eq!(expect_ok(&f), "subscribed");
    let old = status(&d.socket, "api").pid;
    expect_ok(&ask(
        &d.socket,
        &Request::Restart {
            names: names(&["api"]),
        },
    ));
    let mut seen = Vec::new();
    let new_pid = loop {
        let f = c.must_next();
        match f.get() {
            Reply::Event {
                service,
                kind,
                state,
                pid,
                ..
            } => {
                assert_eq!(service, "api");
                seen.push((event::name(kind), state));
                if kind == event::SPAWNED {
                    assert_eq!(state, WireState::Running);
                    break pid;
                }
            }
            r => panic!("expected Event, got {r:?} after {seen:?}"),
        }
    };
    assert!(new_pid > 0 && new_pid != old, "{seen:?}");
    // A restart: stopping, exited, stopped (the service is wanted again,
    // so it enters `waiting`), spawned.
    let kinds: Vec<&str> = seen.iter().map(|x| x.0).collect();
    assert_eq!(
        kinds,
        ["stopping", "exited", "stopped", "spawned"],
        "{seen:?}"
    );
    assert_eq!(seen[0].1, WireState::Stopping, "{seen:?}");
    drop(c);
    assert_no_alloc(&mut d);
    assert_eq!(d.stop(20.0), 0);
}

#[test]
fn raw_client_limit_answers_busy() {
    let services = svc("api", "exec sleep 600", "");
    let mut d = Daemon::start("busy", "  limits:\n    clients: 2\n", &services);
    d.wait_log("api: spawned", 10.0);
    let sock = d.socket.clone();
    let mut a = Raw::connect(&sock);
    let mut b = Raw::connect(&sock);
    // Both are served (so both hold a slot) and keep streaming.
    assert_eq!(expect_ok(&a.request(&Request::Events)), "subscribed");
    assert_eq!(expect_ok(&b.request(&Request::Events)), "subscribed");

    let mut c = Raw::connect(&sock);
    let f = c.until_eof();
    assert_eq!(f.len(), 1, "{f:?}");
    match f[0].get() {
        Reply::Error { code, .. } => assert_eq!(code, ErrorCode::Busy),
        r => panic!("expected Busy, got {r:?}"),
    }
    d.wait_log("control socket: busy, refused uid", 10.0);

    // Free a slot: a new connection is served again (the daemon notices
    // the close when it gets to it; retry until then).
    drop(a);
    let mut e = connect_when_free(&sock, 20.0);
    // The remaining subscriber still streams.
    expect_ok(&e.request(&Request::Restart {
        names: names(&["api"]),
    }));
    loop {
        let f = b.must_next();
        if let Reply::Event {
            kind: event::SPAWNED,
            ..
        } = f.get()
        {
            break;
        }
    }
    drop((b, e));
    assert_no_alloc(&mut d);
    assert_eq!(d.stop(20.0), 0);
}

#[test]
fn raw_slow_follower_gets_dropped_marker_and_daemon_stays_responsive() {
    let services = [
        svc(
            "flood",
            "exec yes xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "    log:\n      console: false\n",
        ),
        svc("quiet", "exec sleep 600", ""),
    ]
    .concat();
    let mut d = Daemon::start("slow", "", &services);
    d.wait_log("flood: spawned", 10.0);
    let sock = d.socket.clone();
    let mut slow = Raw::connect(&sock);
    slow.send(&Request::Logs {
        name: "flood",
        lines: 0,
        follow: true,
    });
    // Do not read `slow` while the ring wraps many times over.
    let e0 = evicted(&d.dump(), "flood");
    wait_for(60.0, "the flood ring wrapping", || {
        (evicted(&d.dump(), "flood") > e0 + 100_000).then_some(())
    });
    // The daemon keeps answering others.
    for _ in 0..3 {
        let s = status(&sock, "quiet");
        assert_eq!(s.state, WireState::Running);
    }
    // Now read: somewhere there is a Dropped marker with a count.
    let mut lines = 0u64;
    let dropped = loop {
        let f = slow.must_next();
        match f.get() {
            Reply::LogLine { service, text, .. } => {
                assert_eq!(service, "flood");
                assert!(text.starts_with(b"xxxx"), "{f:?}");
                lines += 1;
            }
            Reply::Dropped { count } => break count,
            r => panic!("unexpected {r:?}"),
        }
        assert!(lines < 10_000_000, "no Dropped marker");
    };
    assert!(dropped > 0);
    // Lines keep coming after the marker (maybe after more markers).
    let mut after = Vec::new();
    loop {
        let f = slow.must_next();
        let line = matches!(f.get(), Reply::LogLine { .. });
        after.push(f);
        if line {
            break;
        }
        assert!(after.len() < 1000, "no lines after the marker: {after:?}");
    }
    eprintln!("after the marker: {after:?}");
    drop(slow);
    assert_no_alloc(&mut d);
    assert_eq!(d.stop(20.0), 0);
}

#[test]
fn raw_garbage_and_bad_frames_get_an_error_and_close() {
    let services = svc("api", "exec sleep 600", "");
    let mut d = Daemon::start("garbage", "", &services);
    d.wait_log("api: spawned", 10.0);
    let sock = d.socket.clone();
    let cases: [(&str, &[u8], Option<ErrorCode>); 7] = [
        ("http", b"GET / HTTP/1.0\r\n\r\n", Some(ErrorCode::Version)),
        ("version 2", &[2, 0x0a, 0, 0], Some(ErrorCode::Version)),
        (
            "len 0xffff",
            &[1, 0x01, 0xff, 0xff],
            Some(ErrorCode::TooLarge),
        ),
        (
            "len 1025",
            &[1, 0x01, 0x01, 0x04],
            Some(ErrorCode::TooLarge),
        ),
        ("unknown tag", &[1, 0x3e, 0, 0], Some(ErrorCode::BadRequest)),
        ("reply tag", &[1, 0x40, 0, 0], Some(ErrorCode::BadRequest)),
        // A status whose name length runs past the frame.
        (
            "bad field",
            &[1, 0x01, 3, 0, 9, 0, 0],
            Some(ErrorCode::BadRequest),
        ),
    ];
    for (what, bytes, want) in cases {
        let mut c = Raw::connect(&sock);
        c.send_bytes(bytes);
        let f = c.until_eof();
        match (want, f.as_slice()) {
            (Some(w), [one]) => match one.get() {
                Reply::Error { code, .. } => assert_eq!(code, w, "{what}"),
                r => panic!("{what}: expected Error, got {r:?}"),
            },
            _ => panic!("{what}: expected one Error{{{want:?}}} then close, got {f:?}"),
        }
        assert_eq!(status(&sock, "api").state, WireState::Running, "{what}");
    }
    // A truncated frame, then the client closes: dropped, nothing breaks.
    {
        let mut c = Raw::connect(&sock);
        c.send_bytes(&[1, 0x01, 10, 0, 3]);
        c.s.shutdown(std::net::Shutdown::Write).unwrap();
        let f = c.until_eof();
        assert!(f.is_empty(), "{f:?}");
    }
    // Invalid UTF-8 in a name, and a bool that is not 0/1.
    for bytes in [
        &[1u8, 0x01, 4, 0, 1, 0, 0xff, 0][..],
        &[1u8, 0x06, 6, 0, 1, 0, b'a', 0, 0, 2][..],
    ] {
        let mut c = Raw::connect(&sock);
        c.send_bytes(bytes);
        let f = c.until_eof();
        assert_eq!(f.len(), 1, "{bytes:?}: {f:?}");
        assert!(matches!(
            f[0].get(),
            Reply::Error {
                code: ErrorCode::BadRequest,
                ..
            }
        ));
    }
    let log = d.log_text();
    assert!(
        log.contains("control: unsupported protocol version"),
        "{log}"
    );
    assert!(log.contains("control: request too large from uid"), "{log}");
    let s = status(&sock, "api");
    assert_eq!(s.state, WireState::Running);
    assert_no_alloc(&mut d);
    assert_eq!(d.stop(20.0), 0);
}

#[test]
fn raw_idle_connection_does_not_block_others() {
    let services = svc("api", "exec sleep 600", "");
    let mut d = Daemon::start("idle", "", &services);
    d.wait_log("api: spawned", 10.0);
    let sock = d.socket.clone();
    let mut idle = Raw::connect(&sock);
    let mut half = Raw::connect(&sock);
    // Half a request: the daemon must not wait for the rest.
    half.send_bytes(&[1, 0x01, 6, 0]);
    for _ in 0..3 {
        assert_eq!(status(&sock, "api").state, WireState::Running);
    }
    // Idle well under IDLE_TIMEOUT_MS: still served.
    std::thread::sleep(Duration::from_secs(1));
    let f = idle.request(&Request::Version);
    assert!(matches!(f[0].get(), Reply::Version { .. }), "{f:?}");
    // The rest of the half request completes it.
    half.send_bytes(&[3, 0, b'a', b'p', b'i', 0]);
    let f = half.must_next();
    assert_eq!(svc_of(&f).name, "api");
    drop((idle, half));
    assert_no_alloc(&mut d);
    assert_eq!(d.stop(20.0), 0);
}

#[test]
fn raw_shutdown_request() {
    let services = svc("api", "exec sleep 600", "");
    let mut d = Daemon::start("rawdown", "", &services);
    let pid = wait_for(10.0, "api running", || {
        let s = status(&d.socket, "api");
        (s.pid > 0).then_some(s.pid)
    });
    assert_no_alloc(&mut d);
    let mut c = Raw::connect(&d.socket);
    assert_eq!(expect_ok(&c.request(&Request::Shutdown)), "shutting down");
    // The daemon exits, which ends the connection.
    assert!(c.until_eof().is_empty());
    let child = d.child.as_mut().unwrap();
    let st = wait_for(20.0, "daemon exit", || child.try_wait().unwrap());
    d.child = None;
    assert_eq!(st.code(), Some(0));
    assert!(!d.socket.exists());
    assert!(!alive(pid));
    let log = d.log_text();
    assert!(log.contains("control: shutdown requested by uid"), "{log}");
    assert_clean_shutdown(&log);
}

#[test]
fn socket_mode_is_0600_without_a_group() {
    let services = svc("api", "exec sleep 600", "");
    let mut d = Daemon::start("mode", "", &services);
    let m = std::fs::metadata(&d.socket).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o600);
    assert_eq!(m.uid(), euid());
    assert_no_alloc(&mut d);
    assert_eq!(d.stop(20.0), 0);
}

// ================================================================ CLI tests

#[test]
fn cli_every_command_human_and_json() {
    let services = [
        svc("api", "exec sleep 600", "    depends_on: [db]\n"),
        svc("db", "exec sleep 600", ""),
        svc(
            "sig",
            "trap \"echo got-usr1\" USR1; echo sig-up; while :; do sleep 0.05; done",
            "",
        ),
        svc("once", "echo done-once", "    type: oneshot\n"),
        svc(
            "stubborn",
            "trap \"\" TERM; while :; do sleep 0.05; done",
            "    stop_timeout: 60s\n",
        ),
    ]
    .concat();
    let mut d = Daemon::start("cliall", "", &services);
    d.wait_log("api: spawned", 10.0);
    d.wait_log("once: completed", 10.0);
    d.wait_log("stubborn: spawned", 10.0);

    // status, human: a header and one row per service.
    let o = ok(ctl(&d, &["status"]));
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("STATE"),
        "{o:?}"
    );
    assert_eq!(lines.len(), 6, "{o:?}");
    let row = |n: &str| {
        lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(n))
            .unwrap_or_else(|| panic!("no row {n}: {o:?}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(row("api")[1], "running");
    assert!(row("api")[2].parse::<i32>().unwrap() > 0);
    assert_eq!(row("once")[1], "completed");
    assert_eq!(row("once")[2], "-");
    assert!(o.stderr.is_empty(), "{o:?}");

    // status, JSON.
    let o = ok(ctl(&d, &["-j", "status"]));
    let v = json(&o.stdout);
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 5);
    for s in arr {
        for k in [
            "name",
            "state",
            "pid",
            "restarts",
            "uptime_ms",
            "last_exit",
            "health",
            "reason",
        ] {
            assert!(s.get(k).is_some(), "{k} missing in {s}");
        }
    }
    let api = arr.iter().find(|s| s["name"] == "api").unwrap();
    assert_eq!(api["state"], "running");
    let api_pid = api["pid"].as_i64().unwrap();
    assert!(api_pid > 0 && alive(api_pid as i32));
    assert_eq!(api["restarts"], 0);
    let once = arr.iter().find(|s| s["name"] == "once").unwrap();
    assert_eq!(once["state"], "completed");
    assert!(once["pid"].is_null(), "{once}");
    assert_eq!(once["last_exit"]["code"], 0, "{once}");

    // status of one service, with details.
    let o = ok(ctl(&d, &["status", "api"]));
    let kv = |key: &str| {
        o.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {key}: in {o:?}"))
    };
    assert_eq!(kv("name"), "api");
    assert_eq!(kv("state"), "running");
    assert_eq!(kv("pid"), api_pid.to_string());
    assert_eq!(kv("binary"), "/bin/sh");
    assert!(kv("depends_on").contains("db"), "{o:?}");
    let o = ok(ctl(&d, &["-j", "status", "api"]));
    let v = json(&o.stdout);
    assert_eq!(v["name"], "api");
    assert_eq!(v["pid"], api_pid);
    assert_eq!(v["details"]["binary"], "/bin/sh", "{v}");

    // stop / start / restart, human and JSON.
    let o = ok(ctl(&d, &["stop", "api"]));
    assert_eq!(o.stdout.trim(), "api: stopped", "{o:?}");
    let o = ok(ctl(&d, &["-j", "start", "api"]));
    let v = json(&o.stdout);
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["message"].is_string(), "{v}");
    assert_eq!(v["services"][0]["name"], "api", "{v}");
    assert_eq!(v["services"][0]["state"], "running", "{v}");
    let pid1 = v["services"][0]["pid"].as_i64().unwrap();
    assert_ne!(pid1, api_pid);
    let o = ok(ctl(&d, &["restart", "api"]));
    let (name, rest) = o.stdout.trim().split_once(": ").unwrap();
    assert_eq!(name, "api", "{o:?}");
    assert!(rest.starts_with("running (pid "), "{o:?}");
    let pid2: i64 = rest
        .trim_start_matches("running (pid ")
        .trim_end_matches(')')
        .parse()
        .unwrap();
    assert_ne!(pid2, pid1);
    assert_eq!(status(&d.socket, "api").pid as i64, pid2);
    let o = ok(ctl(&d, &["ctl", "-j", "stop", "api"]));
    assert_eq!(json(&o.stdout)["services"][0]["state"], "stopped");
    ok(ctl(&d, &["start", "api", "--no-wait"]));
    wait_state(&d.socket, "api", WireState::Running, 20.0);

    // signal: the trap runs and its line shows up in the logs.
    d.wait_log("sig: spawned", 10.0);
    wait_for(10.0, "sig-up in the logs", || {
        let o = ctl(&d, &["logs", "sig", "--no-follow"]);
        o.stdout.contains("sig-up").then_some(())
    });
    let o = ok(ctl(&d, &["signal", "sig", "USR1"]));
    assert_eq!(o.stdout.trim(), "signal sent", "{o:?}");
    // Wait for the trap before the second one (pending signals merge).
    wait_for(10.0, "got-usr1", || {
        let o = ctl(&d, &["logs", "sig", "--no-follow"]);
        o.stdout.contains("got-usr1").then_some(())
    });
    let o = ok(ctl(&d, &["-j", "signal", "sig", "SIGUSR1"]));
    let v = json(&o.stdout);
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["message"].is_string(), "{v}");
    let o = wait_for(10.0, "got-usr1 twice", || {
        let o = ctl(&d, &["logs", "sig", "--no-follow"]);
        (o.stdout.matches("got-usr1").count() >= 2).then_some(o)
    });
    let o = ok(o);
    let l = o.stdout.lines().find(|l| l.contains("got-usr1")).unwrap();
    assert!(l.ends_with(" stdout got-usr1"), "{l}");
    assert!(d.log_text().contains("control: SIGUSR1 sent to sig"));

    // logs --no-follow, JSON: one object per line.
    let o = ok(ctl(&d, &["-j", "logs", "once", "--no-follow"]));
    let objs: Vec<serde_json::Value> = o.stdout.lines().map(json).collect();
    assert_eq!(objs.len(), 1, "{o:?}");
    assert_eq!(objs[0]["service"], "once");
    assert_eq!(objs[0]["text"], "done-once");
    assert_eq!(objs[0]["stream"], "stdout");

    // version: the client's and the daemon's.
    let o = ok(ctl(&d, &["version"]));
    let v = env!("CARGO_PKG_VERSION");
    assert!(o.stdout.starts_with(&format!("coffeyd {v}")), "{o:?}");
    assert!(o.stdout.contains(&format!("daemon: {v}")), "{o:?}");
    let o = ok(ctl(&d, &["-j", "version"]));
    let j = json(&o.stdout);
    assert_eq!(j["client"]["version"], v, "{j}");
    assert_eq!(j["daemon"]["version"], v, "{j}");

    // Unknown service: 3.
    let o = ctl(&d, &["stop", "nope"]);
    assert_eq!(o.code, 3, "{o:?}");
    assert!(o.stderr.contains("unknown service 'nope'"), "{o:?}");
    assert!(o.stdout.is_empty(), "{o:?}");
    let o = ctl(&d, &["-j", "status", "nope"]);
    assert_eq!(o.code, 3, "{o:?}");
    let j = json(&o.stdout);
    assert_eq!(j["ok"], false, "{j}");
    assert_eq!(j["code"], 3, "{j}");
    assert_eq!(j["error"], "unknown service", "{j}");
    assert_eq!(ctl(&d, &["logs", "nope", "--no-follow"]).code, 3);
    assert_eq!(ctl(&d, &["signal", "nope", "TERM"]).code, 3);

    // Usage errors: 2, before talking to the daemon.
    for args in [
        &["status", "a", "b"][..],
        &["frobnicate"][..],
        &["logs", "--dry-run"][..],
        &["signal", "sig"][..],
        &["stop", "api", "--timeout", "soon"][..],
        &["status", "--no-follow"][..],
    ] {
        let o = ctl(&d, args);
        assert_eq!(o.code, 2, "{args:?}: {o:?}");
        assert!(!o.stderr.is_empty(), "{args:?}: {o:?}");
    }

    // Timeout: 5. The service ignores SIGTERM for 60s.
    let o = ctl(&d, &["stop", "stubborn", "--timeout", "200ms"]);
    assert_eq!(o.code, 5, "{o:?}");
    assert!(o.stderr.contains("timed out"), "{o:?}");
    assert!(o.stderr.contains("stubborn"), "{o:?}");
    let o = ctl(&d, &["-j", "stop", "stubborn", "--timeout", "200ms"]);
    assert_eq!(o.code, 5, "{o:?}");
    assert_eq!(json(&o.stdout)["code"], 5, "{o:?}");
    assert_eq!(status(&d.socket, "stubborn").state, WireState::Stopping);
    // Finish it off.
    ok(ctl(&d, &["signal", "stubborn", "KILL"]));
    wait_state(&d.socket, "stubborn", WireState::Stopped, 20.0);

    assert_no_alloc(&mut d);
    assert_eq!(d.stop(20.0), 0);
}

#[test]
fn cli_shutdown() {
    let services = svc("api", "exec sleep 600", "");
    let mut d = Daemon::start("clidown", "", &services);
    d.wait_log("api: spawned", 10.0);
    let pid = status(&d.socket, "api").pid;
    assert_no_alloc(&mut d);
    ok(ctl(&d, &["shutdown"]));
    let child = d.child.as_mut().unwrap();
    let st = wait_for(20.0, "daemon exit", || child.try_wait().unwrap());
    d.child = None;
    assert_eq!(st.code(), Some(0));
    assert!(!d.socket.exists(), "socket removed");
    assert!(!alive(pid));
    let log = d.log_text();
    assert!(log.contains("control: shutdown requested by uid"), "{log}");
    assert_clean_shutdown(&log);
    // And now it is not running.
    let o = ctl(&d, &["status"]);
    assert_eq!(o.code, 4, "{o:?}");
}

#[test]
fn cli_wait_semantics_and_dependencies() {
    let services = [
        svc("web", "exec sleep 600", "    depends_on: [api]\n"),
        svc("api", "exec sleep 600", "    depends_on: [db]\n"),
        svc("db", "exec sleep 600", ""),
        svc(
            "flaky",
            "exec sleep 600",
            "    backoff:\n      initial: 50ms\n      max: 100ms\n",
        ),
    ]
    .concat();
    let mut d = Daemon::start("cliwait", "", &services);
    d.wait_log("web: spawned", 10.0);
    d.wait_log("flaky: spawned", 10.0);
    let sock = d.socket.clone();

    // `stop` returns once the service is stopped: no waiting needed here.
    ok(ctl(&d, &["stop", "web"]));
    assert_eq!(status(&sock, "web").state, WireState::Stopped);
    assert_eq!(status(&sock, "api").state, WireState::Running);

    // Stopping db stops its dependents (api) first.
    ok(ctl(&d, &["start", "web"]));
    assert_eq!(status(&sock, "web").state, WireState::Running);
    ok(ctl(&d, &["stop", "db"]));
    for n in ["db", "api", "web"] {
        assert_eq!(status(&sock, n).state, WireState::Stopped, "{n}");
    }
    let log = d.log_text();
    let last = |p: &str| {
        log.rfind(p)
            .unwrap_or_else(|| panic!("{p} missing in\n{log}"))
    };
    assert!(last("web: stopped") < last("api: stopping"), "{log}");
    assert!(last("api: stopped") < last("db: stopping"), "{log}");

    // Starting the top dependent brings the chain up.
    ok(ctl(&d, &["start", "web"]));
    for n in ["db", "api", "web"] {
        let s = status(&sock, n);
        assert_eq!(s.state, WireState::Running, "{n}: {s:?}");
        assert!(alive(s.pid));
    }
    let log = d.log_text();
    assert!(last_pos(&log, "db: spawned") < last_pos(&log, "api: spawned"));
    assert!(last_pos(&log, "api: spawned") < last_pos(&log, "web: spawned"));

    // Crash flaky a few times: restarts counts up.
    for k in 1..=3u32 {
        let old = status(&sock, "flaky").pid;
        ok(ctl(&d, &["signal", "flaky", "KILL"]));
        let s = wait_for(20.0, "flaky back with a new pid", || {
            let s = status(&sock, "flaky");
            (s.state == WireState::Running && s.pid != old && s.pid > 0).then_some(s)
        });
        assert_eq!(s.restarts, k, "{s:?}");
    }
    // An operator restart: a new pid and the counter reset.
    let old = status(&sock, "flaky").pid;
    let o = ok(ctl(&d, &["-j", "restart", "flaky"]));
    let v = json(&o.stdout);
    let pid = v["services"][0]["pid"].as_i64().unwrap() as i32;
    assert_ne!(pid, old, "{v}");
    let s = status(&sock, "flaky");
    assert_eq!(
        (s.state, s.pid, s.restarts),
        (WireState::Running, pid, 0),
        "{s:?}"
    );
    assert!(s.reason.is_empty(), "{s:?}");

    assert_no_alloc(&mut d);
    assert_eq!(d.stop(20.0), 0);
}

fn last_pos(log: &str, p: &str) -> usize {
    log.rfind(p)
        .unwrap_or_else(|| panic!("{p} missing in\n{log}"))
}

#[test]
fn cli_logs_tail_and_follow() {
    let services = svc(
        "talk",
        "for i in 1 2 3 4 5 6 7 8 9 10; do echo line$i; done; echo err1 >&2; while :; do read l < $DIR/fifo; echo \"got $l\"; done",
        "",
    );
    let mut d = Daemon::start_with("clilogs", "", &services, |dir| {
        let st = Command::new("mkfifo")
            .arg(dir.join("fifo"))
            .status()
            .unwrap();
        assert!(st.success());
    });
    wait_for(10.0, "all 11 lines", || {
        let o = ctl(&d, &["logs", "talk", "--no-follow"]);
        (o.stdout.lines().count() >= 11).then_some(())
    });
    // Exactly the last three lines.
    let o = ok(ctl(&d, &["logs", "talk", "-n", "3", "--no-follow"]));
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{o:?}");
    assert!(lines[0].ends_with(" stdout line9"), "{o:?}");
    assert!(lines[1].ends_with(" stdout line10"), "{o:?}");
    assert!(lines[2].ends_with(" stderr err1"), "{o:?}");
    // The timestamp is RFC 3339.
    let ts = lines[0].split_whitespace().next().unwrap();
    assert!(
        ts.len() == 24 && ts.ends_with('Z') && &ts[10..11] == "T",
        "{ts}"
    );
    let o = ok(ctl(&d, &["-j", "logs", "talk", "-n", "2", "--no-follow"]));
    let objs: Vec<serde_json::Value> = o.stdout.lines().map(json).collect();
    assert_eq!(objs.len(), 2, "{o:?}");
    assert_eq!(objs[1]["text"], "err1");
    assert_eq!(objs[1]["stream"], "stderr");
    assert_eq!(objs[1]["cut"], false);
    // -n 0: nothing.
    let o = ok(ctl(&d, &["logs", "talk", "-n", "0", "--no-follow"]));
    assert!(o.stdout.is_empty(), "{o:?}");

    // Follow: the tail arrives, then a line printed afterwards.
    let mut f = Follower::spawn(&d, &["logs", "talk", "-n", "3"]);
    f.wait_line(20.0, "the tail", |l| l.ends_with(" stderr err1"));
    let mut fifo = std::fs::OpenOptions::new()
        .write(true)
        .open(d.dir.join("fifo"))
        .unwrap();
    fifo.write_all(b"hello\n").unwrap();
    drop(fifo);
    f.wait_line(20.0, "the new line", |l| l.ends_with(" stdout got hello"));
    assert_eq!(f.seen.len(), 4, "{:?}", f.seen);
    // The follower is still running: it follows until killed.
    assert!(f.child.try_wait().unwrap().is_none());
    drop(f);
    assert_no_alloc(&mut d);
    assert_eq!(d.stop(20.0), 0);
}

#[test]
fn cli_events_stream() {
    let services = svc("api", "exec sleep 600", "");
    let mut d = Daemon::start("clievents", "", &services);
    d.wait_log("api: spawned", 10.0);
    let mut fj = Follower::spawn(&d, &["-j", "events"]);
    let mut fh = Follower::spawn(&d, &["events"]);
    // The followers subscribe at some point: restart until both saw a
    // `spawned`; from then on they see every event.
    let spawned_j = |l: &str| json(l)["event"] == "spawned";
    let spawned_h = |l: &str| l.contains(" api spawned running pid=");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        ok(ctl(&d, &["restart", "api"]));
        let got_j = fj.try_line(2.0, spawned_j).is_some();
        let got_h = fh.try_line(2.0, spawned_h).is_some();
        if got_j && got_h {
            break;
        }
        assert!(Instant::now() < deadline, "the followers never subscribed");
    }
    // Both have read up to the last spawn; nothing changes until the next
    // command.
    let cur = status(&d.socket, "api").pid;
    fj.wait_line(20.0, "the current spawn", |l| {
        let v = json(l);
        v["event"] == "spawned" && v["pid"] == cur
    });
    fh.wait_line(20.0, "the current spawn", |l| {
        l.contains(&format!(" api spawned running pid={cur}"))
    });
    let (nj, nh) = (fj.seen.len(), fh.seen.len());
    let old = status(&d.socket, "api").pid;
    ok(ctl(&d, &["restart", "api"]));
    let new = status(&d.socket, "api").pid;
    assert_ne!(old, new);
    fj.wait_line(20.0, "the new spawned", |l| {
        let v = json(l);
        v["event"] == "spawned" && v["pid"] == new
    });
    let evs: Vec<serde_json::Value> = fj.seen[nj..].iter().map(|l| json(l)).collect();
    let got: Vec<(String, String)> = evs
        .iter()
        .map(|v| {
            (
                v["event"].as_str().unwrap().to_string(),
                v["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = [
        ("stopping", "stopping"),
        ("exited", "stopping"),
        ("stopped", "waiting"),
        ("spawned", "running"),
    ];
    assert_eq!(
        got,
        want.map(|(a, b)| (a.to_string(), b.to_string())),
        "{evs:#?}"
    );
    for v in &evs {
        assert_eq!(v["service"], "api");
        assert!(v["ts_ms"].as_u64().unwrap() > 0);
        assert!(v["ts"].as_str().unwrap().ends_with('Z'), "{v}");
    }
    assert_eq!(evs[0]["pid"], old);
    assert_eq!(evs[0]["detail"], "SIGTERM");
    fh.wait_line(20.0, "the new spawned (human)", |l| {
        l.contains(&format!(" api spawned running pid={new}"))
    });
    let human = &fh.seen[nh..];
    assert!(
        human[0].contains(&format!(" api stopping stopping pid={old} SIGTERM")),
        "{human:#?}"
    );
    drop((fj, fh));
    assert_no_alloc(&mut d);
    assert_eq!(d.stop(20.0), 0);
}

#[test]
fn cli_read_only_group_member_is_denied_mutating_verbs() {
    // Never a silent pass: without root (to run a client as another uid)
    // or without the group, the test fails and says so.
    assert_eq!(euid(), 0, "needs root to run a client as another uid");
    let (group, gid) = match (group_gid("nogroup"), group_gid("nobody")) {
        (Some(g), _) => ("nogroup", g),
        (None, Some(g)) => ("nobody", g),
        (None, None) => panic!("needs a nogroup or nobody group in /etc/group"),
    };
    let services = svc("api", "exec sleep 600", "");
    let extra = format!("  socket_group: {group}\n");
    let mut d = Daemon::start("ro", &extra, &services);
    d.wait_log("api: spawned", 10.0);
    let m = std::fs::metadata(&d.socket).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o660);
    assert_eq!(m.gid(), gid);
    let sock = d.socket.to_str().unwrap().to_string();
    // The build tree may sit under a directory uid 65534 cannot enter (a
    // 0700 checkout): run a copy from the test's own 0755 directory.
    std::fs::set_permissions(&d.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let client = reachable_copy(&d.dir.join("coffeyd-client"));
    let as_nobody = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(["-s", sock.as_str()]);
        cli_bin_with(&client, &a, 60.0, |c| {
            use std::os::unix::process::CommandExt;
            c.uid(65534).gid(gid).current_dir("/");
        })
    };
    let o = as_nobody(&["status"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("running"), "{o:?}");
    ok(as_nobody(&["logs", "api", "--no-follow"]));
    ok(as_nobody(&["version"]));
    let pid = status(&d.socket, "api").pid;

    let o = as_nobody(&["stop", "api"]);
    assert_eq!(o.code, 6, "{o:?}");
    assert!(o.stderr.contains("permission denied"), "{o:?}");
    let o = as_nobody(&["-j", "signal", "api", "TERM"]);
    assert_eq!(o.code, 6, "{o:?}");
    let j = json(&o.stdout);
    assert_eq!(
        (j["ok"].clone(), j["code"].clone()),
        (false.into(), 6.into()),
        "{j}"
    );
    assert_eq!(as_nobody(&["shutdown"]).code, 6);
    let log = d.wait_log("control: denied 'stop' to uid 65534", 10.0);
    assert!(
        log.contains("control: denied 'signal' to uid 65534"),
        "{log}"
    );
    assert!(
        log.contains("control: denied 'shutdown' to uid 65534"),
        "{log}"
    );
    // Nothing happened.
    let s = status(&d.socket, "api");
    assert_eq!((s.state, s.pid), (WireState::Running, pid));
    assert!(d.child.as_mut().unwrap().try_wait().unwrap().is_none());
    assert_no_alloc(&mut d);
    assert_eq!(d.stop(20.0), 0);
}

#[test]
fn cli_daemon_not_running() {
    let dir = tempdir("notrun");
    let missing = dir.join("nope.sock");
    let p = missing.to_str().unwrap();
    for args in [
        &["status"][..],
        &["ctl", "stop", "api"][..],
        &["logs", "api"][..],
    ] {
        let mut a = args.to_vec();
        a.extend(["-s", p]);
        let o = cli(&a);
        assert_eq!(o.code, 4, "{args:?}: {o:?}");
        assert_eq!(
            o.stderr,
            format!("coffeyd is not running (no socket at {p})\n"),
            "{args:?}"
        );
        assert!(o.stdout.is_empty(), "{args:?}: {o:?}");
    }
    // -j: the error object on stdout too.
    let o = cli(&["-j", "status", "-s", p]);
    assert_eq!(o.code, 4, "{o:?}");
    let j = json(&o.stdout);
    assert_eq!(j["ok"], false);
    assert_eq!(j["code"], 4);
    // A socket file with nobody listening.
    let stale = dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let o = cli(&["status", "-s", stale.to_str().unwrap()]);
    assert_eq!(o.code, 4, "{o:?}");
    assert!(o.stderr.starts_with("coffeyd is not running"), "{o:?}");
    assert!(o.stdout.is_empty(), "{o:?}");
}

#[test]
fn raw_streaming_client_that_sends_more_and_closes_frees_its_slot() {
    let services = svc("api", "exec sleep 600", "");
    let mut d = Daemon::start("streamclose", "  limits:\n    clients: 1\n", &services);
    d.wait_log("api: spawned", 10.0);
    let sock = d.socket.clone();
    for junk in [16usize, 4096] {
        let mut a = connect_when_free(&sock, 20.0);
        assert_eq!(expect_ok(&a.request(&Request::Events)), "subscribed");
        // Input after a streaming request is ignored; then the client goes.
        a.send_bytes(&vec![0x55u8; junk]);
        drop(a);
        // The slot comes free without any event happening.
        drop(connect_when_free(&sock, 20.0));
    }
    assert_no_alloc(&mut d);
    assert_eq!(d.stop(20.0), 0);
}

/// `poweroff`/`reboot`/`halt` as commands and as argv[0] (busybox-style
/// symlinks) reach the daemon; a daemon that is not a machine's init
/// refuses them (exit 1) and keeps running. (The real power-off is proven
/// by the qemu boot test.)
#[test]
fn power_verbs_and_argv0_names_are_refused_outside_system_mode() {
    let services = svc("a", "exec sleep 600", "");
    let mut d = Daemon::start("power", "", &services);
    d.wait_log("a: spawned", 10.0);
    let sock = d.socket.to_str().unwrap().to_owned();
    for verb in ["poweroff", "reboot", "halt"] {
        let o = ctl(&d, &[verb]);
        assert_eq!(o.code, 1, "{verb}: {o:?}");
        assert!(
            o.stderr.contains("not the init of this machine"),
            "{verb}: {o:?}"
        );
        // The same through a symlink named after the verb.
        let link = d.dir.join(verb);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(BIN, &link).unwrap();
        let out = Command::new(&link).args(["-s", &sock]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{verb} symlink: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("not the init of this machine"));
    }
    // Still serving, nothing stopped.
    let o = ctl(&d, &["status", "a"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(!d.log_text().contains("a: stopping"));
    assert_no_alloc(&mut d);
    assert_eq!(d.stop(10.0), 0);
}

/// A connection that never sends a request is closed after the idle
/// timeout (30 s, `IDLE_TIMEOUT_MS`), freeing its slot for others.
#[test]
fn idle_connection_is_closed_after_the_idle_timeout() {
    use std::io::Read;
    let services = svc("a", "exec sleep 600", "");
    let mut d = Daemon::start("idle", "  limits:\n    clients: 1\n", &services);
    d.wait_log("a: spawned", 10.0);
    let mut idle = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    idle.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let t0 = std::time::Instant::now();
    let mut buf = [0u8; 16];
    // Blocks until the daemon closes it (EOF) or 60 s pass.
    // Retry EINTR: a signal to the test process (glibc's set*id broadcast,
    // SIGSETXID, was seen here) interrupts a read with a timeout even
    // under SA_RESTART.
    let n = loop {
        match idle.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => break r.unwrap_or(usize::MAX),
        }
    };
    let waited = t0.elapsed();
    assert_eq!(
        n, 0,
        "expected EOF from the daemon, got {n} after {waited:?}"
    );
    assert!(
        waited >= std::time::Duration::from_secs(25),
        "closed too early: {waited:?}"
    );
    println!("idle connection closed after {waited:?}");
    // The only client slot is free again.
    let o = ctl(&d, &["status", "a"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_no_alloc(&mut d);
    assert_eq!(d.stop(10.0), 0);
}

// ================================================================ lockout
//
// Issue 9, point 1: no client with socket access, even a read-only member
// of `socket_group`, can lock the operator out.

/// The `nogroup` (or `nobody`) group: the read-only peers of these tests
/// are uid 65534 (and 65533) in it.
fn ro_group() -> (&'static str, u32) {
    match (group_gid("nogroup"), group_gid("nobody")) {
        (Some(g), _) => ("nogroup", g),
        (None, Some(g)) => ("nobody", g),
        (None, None) => panic!("no nogroup/nobody group on this machine"),
    }
}

/// `n` connections to `sock` made as `uid`/`gid` (so SO_PEERCRED shows a
/// read-only peer). A thread of its own switches its effective ids with
/// the raw syscalls, which (unlike libc's wrappers) change only the
/// calling thread; the thread then ends, the sockets stay.
fn connect_as(sock: &Path, uid: u32, gid: u32, n: usize) -> Vec<UnixStream> {
    assert_eq!(euid(), 0, "needs root to connect as another uid");
    let sock = sock.to_path_buf();
    std::thread::spawn(move || {
        let keep = u32::MAX; // -1: leave unchanged
        let r = unsafe { nix::libc::syscall(nix::libc::SYS_setresgid, keep, gid, keep) };
        assert_eq!(r, 0, "setresgid");
        let r = unsafe { nix::libc::syscall(nix::libc::SYS_setresuid, keep, uid, keep) };
        assert_eq!(r, 0, "setresuid");
        (0..n)
            .map(|_| {
                let s = UnixStream::connect(&sock).unwrap();
                s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
                s.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
                s
            })
            .collect()
    })
    .join()
    .unwrap()
}

/// A daemon whose socket read-only peers (group `nogroup`) may use.
fn shared_daemon(tag: &str, extra: &str, services: &str) -> Daemon {
    let (group, _) = ro_group();
    let d = Daemon::start(tag, &format!("  socket_group: {group}\n{extra}"), services);
    std::fs::set_permissions(&d.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// What a raw connection read until the daemon closed it: its frames, and
/// whether it ended in a clean EOF (not a reset).
fn drain(s: &mut UnixStream) -> (Vec<Frame>, Result<(), std::io::Error>) {
    drain_after(s, &[])
}

/// Like `drain`, with `prefix` already read.
fn drain_after(s: &mut UnixStream, prefix: &[u8]) -> (Vec<Frame>, Result<(), std::io::Error>) {
    let mut buf = prefix.to_vec();
    let mut tmp = [0u8; 65536];
    let end = loop {
        match s.read(&mut tmp) {
            Ok(0) => break Ok(()),
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    let mut frames = Vec::new();
    let mut rest = &buf[..];
    while !rest.is_empty() {
        let (_, n) = proto::frame_bounds(rest, proto::MAX_PAYLOAD)
            .unwrap_or_else(|e| panic!("bad frame {e:?} in {rest:?}"));
        frames.push(Frame(rest[..n].to_vec()));
        rest = &rest[n..];
    }
    (frames, end)
}

/// Whether `f` is exactly one `Error{Busy}`.
fn is_busy(f: &[Frame]) -> bool {
    matches!(
        f,
        [one] if matches!(one.get(), Reply::Error { code: ErrorCode::Busy, .. })
    )
}

/// Root's `status` on a fresh connection is served (never `busy`).
#[track_caller]
fn root_is_served(sock: &Path) {
    let f = ask(
        sock,
        &Request::Status {
            name: "",
            verbose: 0,
        },
    );
    assert!(
        matches!(f.last().map(Frame::get), Some(Reply::End)),
        "root was not served: {f:?}"
    );
}

/// Eight read-only peers dribble a status request one byte a second. Each
/// request must be complete 2 s (`REQUEST_TIMEOUT_MS`) after its first
/// byte, whatever comes later, so each is answered and closed by then; and
/// root's status is served the whole time.
#[test]
fn slowloris_dribblers_are_cut_at_the_request_deadline_and_root_is_served() {
    let (_, gid) = ro_group();
    let services = svc("api", "exec sleep 600", "");
    let mut d = shared_daemon("slowloris", "", &services);
    d.wait_log("api: spawned", 10.0);
    let sock = d.socket.clone();
    let mut req = [0u8; 64];
    let n = proto::encode_request(
        &Request::Status {
            name: "api",
            verbose: 0,
        },
        &mut req,
    )
    .unwrap();
    assert!(n >= 8, "the dribbled frame outlasts the deadline");
    let mut dribblers = connect_as(&sock, 65534, gid, 8);
    for s in &dribblers {
        s.set_nonblocking(true).unwrap();
    }
    let start = Instant::now();
    // Per dribbler: when the daemon closed it, and what it said.
    let mut ended: Vec<Option<(Duration, Vec<Frame>)>> = (0..8).map(|_| None).collect();
    let mut served = 0;
    for byte in 0..n {
        for (k, s) in dribblers.iter_mut().enumerate() {
            if ended[k].is_none() {
                let _ = s.write(&req[byte..byte + 1]);
            }
        }
        // The dribbling is the behaviour: one byte a second. Meanwhile
        // root asks for status every 100 ms, and every ask is served.
        let next = start + Duration::from_secs(byte as u64 + 1);
        while Instant::now() < next {
            root_is_served(&sock);
            served += 1;
            for (k, s) in dribblers.iter_mut().enumerate() {
                if ended[k].is_some() {
                    continue;
                }
                let mut tmp = [0u8; 256];
                match s.read(&mut tmp) {
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                        ) =>
                    {
                        continue
                    }
                    Ok(got) => {
                        // The reply and the close arrive together.
                        s.set_nonblocking(false).unwrap();
                        let (f, end) = drain_after(s, &tmp[..got]);
                        assert!(end.is_ok(), "dribbler {k}: reset instead of EOF: {end:?}");
                        ended[k] = Some((start.elapsed(), f));
                    }
                    Err(e) => panic!("dribbler {k}: {e}"),
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    eprintln!("root served {served} times; dribblers: {ended:?}");
    let mut cut = 0;
    for (k, e) in ended.iter().enumerate() {
        let (at, f) = e
            .as_ref()
            .unwrap_or_else(|| panic!("dribbler {k} still open after {n} s: {ended:?}"));
        if is_busy(f) {
            continue;
        }
        // Cut at its deadline: 2 s after the first byte, not extended.
        assert!(
            *at < Duration::from_millis(3500),
            "dribbler {k} cut at {at:?}"
        );
        assert!(
            *at >= Duration::from_millis(1900),
            "dribbler {k} cut at {at:?}"
        );
        match f.as_slice() {
            [one] => match one.get() {
                Reply::Error { code, message } => {
                    assert_eq!(code, ErrorCode::BadRequest, "{message}");
                    assert!(message.contains("not complete within 2s"), "{message}");
                }
                r => panic!("dribbler {k}: expected an Error, got {r:?}"),
            },
            _ => panic!("dribbler {k}: expected one Error, got {f:?}"),
        }
        cut += 1;
    }
    assert!(cut >= 1, "no dribbler got a slot: {ended:?}");
    d.wait_log(
        "control: request not complete within 2s from uid 65534",
        10.0,
    );
    assert_no_alloc(&mut d);
    assert_eq!(d.stop(20.0), 0);
}

/// Eight read-only `events` subscribers that never read, while a service
/// flaps and events pour out. Root is served the whole time; each
/// subscriber that got a slot is cut off once its buffer has stayed full
/// for `STALL_TIMEOUT_MS` (10 s): what it finally reads ends with a
/// `Dropped` marker, then a clean EOF. Then read-only peers get in again.
#[test]
fn silent_event_subscribers_are_cut_off_after_a_dropped_marker() {
    let (_, gid) = ro_group();
    let services = [
        svc(
            "flap",
            "exit 1",
            "    backoff:\n      initial: 0s\n      max: 0s\n      multiplier: 1.0\n",
        ),
        svc("api", "exec sleep 600", ""),
    ]
    .concat();
    let mut d = shared_daemon("silent", "", &services);
    d.wait_log("api: spawned", 10.0);
    let sock = d.socket.clone();
    let mut subs = connect_as(&sock, 65534, gid, 8);
    let mut req = [0u8; 16];
    let n = proto::encode_request(&Request::Events, &mut req).unwrap();
    for s in &mut subs {
        // A refused one may already be closed: EPIPE is fine.
        let _ = s.write_all(&req[..n]);
    }
    // Root is served while they sit on their slots, until the daemon has
    // cut every one that was subscribed.
    let t0 = Instant::now();
    let mut served = 0;
    let cut = coffey::limits::CLIENTS_PER_UID;
    loop {
        root_is_served(&sock);
        served += 1;
        if d.count("not reading for 10s; closed") >= cut {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "subscribers not cut within 40 s\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(t0.elapsed() >= Duration::from_secs(10), "cut too early");
    eprintln!("root served {served} times; {cut} subscribers cut");
    let mut ended_with_marker = 0;
    for (k, s) in subs.iter_mut().enumerate() {
        let (f, end) = drain(s);
        // A refused peer whose request arrived after the daemon's last
        // drain of it may read a reset after its `busy` frame (a unix
        // socket closed with unread input resets its peer): the frame is
        // what counts there. A subscriber must end with a clean EOF.
        if is_busy(&f) {
            continue;
        }
        assert!(end.is_ok(), "subscriber {k}: reset instead of EOF: {end:?}");
        assert!(
            matches!(
                f.first().map(Frame::get),
                Some(Reply::Ok {
                    message: "subscribed"
                })
            ),
            "subscriber {k}: {:?}",
            f.first()
        );
        match f.last().map(Frame::get) {
            Some(Reply::Dropped { count }) => assert!(count > 0, "subscriber {k}"),
            r => panic!("subscriber {k}: expected a Dropped marker last, got {r:?}"),
        }
        assert!(f.len() > 100, "subscriber {k}: only {} frames", f.len());
        ended_with_marker += 1;
    }
    assert_eq!(ended_with_marker, cut, "{}", d.log_text());
    // Their slots are free: a read-only peer is served again.
    let mut again = connect_as(&sock, 65534, gid, 1).pop().unwrap();
    let mut b = [0u8; 16];
    let n = proto::encode_request(&Request::Version, &mut b).unwrap();
    again.write_all(&b[..n]).unwrap();
    let mut r = Raw {
        s: again,
        buf: Vec::new(),
    };
    assert!(matches!(r.must_next().get(), Reply::Version { .. }));
    drop(r);
    assert_no_alloc(&mut d);
    assert_eq!(d.stop(20.0), 0);
}

/// Read-only peers that connect and sit there: one uid gets at most
/// `CLIENTS_PER_UID` slots, all read-only peers together at most the
/// slots `RESERVED_CLIENTS` leaves them; the rest read `busy`. Root gets in
/// throughout, through the reserved slots.
#[test]
fn read_only_uids_are_capped_and_root_always_gets_in() {
    use coffey::limits::{CLIENTS_PER_UID, RESERVED_CLIENTS};
    let (_, gid) = ro_group();
    let services = svc("api", "exec sleep 600", "");
    let mut d = shared_daemon("operator", "", &services);
    d.wait_log("api: spawned", 10.0);
    let sock = d.socket.clone();
    // Default `limits.clients`: 8.
    let shared = 8 - RESERVED_CLIENTS;
    assert!(CLIENTS_PER_UID < shared && shared < 2 * CLIENTS_PER_UID);
    // Whether a held connection got a slot: a slot answers `version`, a
    // refused one has already read `busy` and EOF.
    let admitted = |conns: &mut Vec<UnixStream>| -> usize {
        let mut b = [0u8; 16];
        let n = proto::encode_request(&Request::Version, &mut b).unwrap();
        let mut got = 0;
        for s in conns.iter_mut() {
            let _ = s.write_all(&b[..n]);
            let mut r = Raw {
                s: s.try_clone().unwrap(),
                buf: Vec::new(),
            };
            match r.must_next().get() {
                Reply::Version { .. } => got += 1,
                Reply::Error {
                    code: ErrorCode::Busy,
                    ..
                } => assert!(r.next().is_none()),
                f => panic!("expected Version or Busy, got {f:?}"),
            }
        }
        got
    };
    let mut a = connect_as(&sock, 65534, gid, 8);
    root_is_served(&sock);
    assert_eq!(admitted(&mut a), CLIENTS_PER_UID, "uid 65534");
    // A second read-only uid gets what is left of the shared slots.
    let mut b = connect_as(&sock, 65533, gid, 8);
    root_is_served(&sock);
    assert_eq!(admitted(&mut b), shared - CLIENTS_PER_UID, "uid 65533");
    // The reserved slots are root's: several operator connections at once.
    let mut held: Vec<Raw> = (0..RESERVED_CLIENTS)
        .map(|_| connect_when_free(&sock, 5.0))
        .collect();
    for r in &mut held {
        assert!(matches!(
            r.request(&Request::Version)[0].get(),
            Reply::Version { .. }
        ));
    }
    // The CLI, as root, too, once a held one goes.
    drop(held.pop());
    wait_for(
        10.0,
        "root's CLI served once the daemon sees the close",
        || {
            let o = ctl_within(&d, &["status", "api"], 10.0);
            assert!(o.code == 0 || o.stderr.contains("busy"), "{o:?}");
            (o.code == 0).then_some(())
        },
    );
    let log = d.log_text();
    assert!(
        log.contains("control socket: busy, refused uid 65534"),
        "{log}"
    );
    drop((a, b, held));
    assert_no_alloc(&mut d);
    assert_eq!(d.stop(20.0), 0);
}

/// Refused clients read `busy`, never a reset: raw clients that sent
/// their request get the `Error{Busy}` frame and a clean EOF, and the CLI
/// says "coffeyd is busy", never "connection closed by daemon". The
/// refusals make one log line, then a count per 10 s, not a line each.
#[test]
fn refused_clients_read_busy_not_a_reset_and_refusals_are_counted() {
    let services = svc("api", "exec sleep 600", "");
    let mut d = Daemon::start("refused", "  limits:\n    clients: 2\n", &services);
    d.wait_log("api: spawned", 10.0);
    let sock = d.socket.clone();
    // Root holds every slot (the reserved one too).
    let mut held: Vec<Raw> = (0..2).map(|_| connect_when_free(&sock, 5.0)).collect();
    for h in &mut held {
        assert_eq!(expect_ok(&h.request(&Request::Events)), "subscribed");
    }
    const RAW: usize = 40;
    const CLI: usize = 40;
    let raw: Vec<_> = (0..RAW)
        .map(|_| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&sock).unwrap();
                s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
                let mut b = [0u8; 16];
                let n = proto::encode_request(&Request::Version, &mut b).unwrap();
                // The daemon may have answered and closed already (EPIPE);
                // its answer is still there to read.
                let _ = s.write_all(&b[..n]);
                drain(&mut s)
            })
        })
        .collect();
    let cli: Vec<_> = (0..CLI)
        .map(|_| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                cli_with(&["status", "-s", sock.to_str().unwrap()], 30.0, |_| {})
            })
        })
        .collect();
    for (k, t) in raw.into_iter().enumerate() {
        let (f, end) = t.join().unwrap();
        assert!(is_busy(&f), "raw client {k}: {f:?}");
        assert!(end.is_ok(), "raw client {k}: a reset after busy: {end:?}");
    }
    for (k, t) in cli.into_iter().enumerate() {
        let o = t.join().unwrap();
        assert_eq!(o.code, 1, "CLI {k}: {o:?}");
        assert_eq!(o.stderr, "coffeyd is busy (too many clients)\n", "CLI {k}");
    }
    // One line for the first refusal, then the count of the others.
    let total = RAW + CLI;
    let log = d.wait_log("connections refused in the last 10s", 15.0);
    let first = log.matches("control socket: busy, refused uid").count();
    let counted: usize = log
        .lines()
        .filter_map(|l| {
            l.split_once("control socket: ")?
                .1
                .split_once(" connections refused in the last 10s")
        })
        .map(|(n, _)| n.parse::<usize>().unwrap())
        .sum();
    assert_eq!((first, counted), (1, total - 1), "{log}");
    // The subscribers held on.
    drop(held);
    assert_no_alloc(&mut d);
    assert_eq!(d.stop(20.0), 0);
}

/// Descriptors the process `pid` has open.
fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// A connection that queued while the daemon had no descriptor left is
/// served as soon as one frees up, without another client having to
/// connect: a failing accept is retried on a short deadline
/// (`ACCEPT_RETRY_MS`), not at the next readiness edge.
#[test]
fn a_connection_queued_during_fd_exhaustion_is_served_once_fds_free_up() {
    let services = svc("api", "exec sleep 600", "");
    let mut d = Daemon::start("emfile", "", &services);
    d.wait_log("api: spawned", 10.0);
    let sock = d.socket.clone();
    let pid = d.pid();
    // Room for exactly two more descriptors: a limit just above the two
    // lowest free numbers (the daemon may hold inherited ones far above).
    let used: std::collections::BTreeSet<usize> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
        .collect();
    let second_free = (0..).filter(|n| !used.contains(n)).nth(1).unwrap();
    let mut old = nix::libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let r =
        unsafe { nix::libc::prlimit(pid, nix::libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(r, 0, "prlimit");
    let lim = nix::libc::rlimit {
        rlim_cur: (second_free + 1) as u64,
        rlim_max: old.rlim_max,
    };
    let r =
        unsafe { nix::libc::prlimit(pid, nix::libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) };
    assert_eq!(r, 0, "prlimit");
    let mut a = Raw::connect(&sock);
    let mut b = Raw::connect(&sock);
    for r in [&mut a, &mut b] {
        assert!(matches!(
            r.request(&Request::Version)[0].get(),
            Reply::Version { .. }
        ));
    }
    assert_eq!(open_fds(pid), used.len() + 2);
    // This one queues: accept fails with EMFILE.
    let mut queued = Raw::connect(&sock);
    queued.send(&Request::Version);
    d.wait_log("control socket: accept: Too many open files", 10.0);
    // Free one descriptor: the daemon closes `a` when it sees the EOF.
    drop(a);
    queued
        .s
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let t0 = Instant::now();
    let f = queued.next();
    assert!(
        matches!(f.as_ref().map(Frame::get), Some(Reply::Version { .. })),
        "queued client not served within 3 s: {f:?}\n{}",
        d.log_text()
    );
    eprintln!(
        "queued client served {:?} after the fd came free",
        t0.elapsed()
    );
    // The failures were not logged one per retry.
    let log = d.log_text();
    assert_eq!(log.matches("control socket: accept: ").count(), 1, "{log}");
    unsafe { nix::libc::prlimit(pid, nix::libc::RLIMIT_NOFILE, &old, std::ptr::null_mut()) };
    drop((b, queued));
    assert_no_alloc(&mut d);
    assert_eq!(d.stop(20.0), 0);
}
