//! The `fds:` table end to end: descriptors coffeyd creates and holds,
//! given to services at their numbers. A socket-activated Python server
//! (systemd's LISTEN_FDS protocol), a listen socket that outlives its
//! service's restarts, files a service's user could not open, a pipe
//! between two services that each restart, an entry that cannot be
//! created, and reload keeping the table. Every test ends with no heap
//! allocation after startup.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_macros,
    clippy::disallowed_methods
)]

mod common;

use common::*;
use std::io::Read;
use std::net::{TcpStream, UdpSocket};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

const PY: &str = "/usr/bin/python3";

/// A socket-activated server: checks the LISTEN_ variables as
/// `sd_listen_fds` does, then answers on fd 3 (tcp) and, when given, fd 4
/// (unix stream) and fd 5 (udp) with its pid and what it was given.
const SERVER: &str = r#"
import os, socket, selectors
assert os.environ["LISTEN_PID"] == str(os.getpid()), os.environ["LISTEN_PID"]
n = int(os.environ["LISTEN_FDS"])
names = os.environ["LISTEN_FDNAMES"]
assert len(names.split(":")) == n, names
answer = f"pid={os.getpid()} fds={n} names={names}\n".encode()
sel = selectors.DefaultSelector()
kinds = [(socket.AF_INET, socket.SOCK_STREAM), (socket.AF_UNIX, socket.SOCK_STREAM),
         (socket.AF_INET, socket.SOCK_DGRAM)]
for fd in range(3, 3 + n):
    s = socket.fromfd(fd, *kinds[fd - 3])
    sel.register(s, selectors.EVENT_READ)
print("serving", n, names, flush=True)
while True:
    for key, _ in sel.select():
        s = key.fileobj
        if s.type == socket.SOCK_DGRAM:
            _, peer = s.recvfrom(100)
            s.sendto(answer, peer)
        else:
            c, _ = s.accept()
            c.sendall(answer)
            c.close()
"#;

fn server_svc(name: &str, fds: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    binary: {PY}\n    args: [$DIR/server.py]\n    fds:\n{fds}{extra}"
    )
}

fn write_server(dir: &Path) {
    std::fs::write(dir.join("server.py"), SERVER).unwrap();
}

/// The service's output so far (its log ring).
fn out(d: &Daemon, name: &str) -> String {
    ctl(d, &["logs", name, "--no-follow", "-n", "1000"]).stdout
}

/// Waits until the service has written `pat`.
fn wait_out(d: &Daemon, name: &str, pat: &str) {
    wait_for(20.0, pat, || out(d, name).contains(pat).then_some(()));
}

/// Connects and reads the whole answer.
fn ask_tcp(port: u16) -> String {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    s
}

fn pid_of(answer: &str) -> i64 {
    answer
        .split_whitespace()
        .find_map(|w| w.strip_prefix("pid="))
        .unwrap_or_else(|| panic!("no pid in {answer:?}"))
        .parse()
        .unwrap()
}

/// The uid of `nobody` on this host.
fn nobody_uid() -> u32 {
    let p = std::fs::read_to_string("/etc/passwd").unwrap();
    p.lines()
        .find(|l| l.starts_with("nobody:"))
        .and_then(|l| l.split(':').nth(2))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_socket_activated_python_server_serves_tcp_unix_and_udp() {
    need(PY, "python3");
    let (tcp, udp) = (free_port(), free_port());
    let extra = format!(
        "fds:\n  web:\n    listen: tcp://127.0.0.1:{tcp}\n  ctl:\n    listen: unix:$DIR/ctl.sock\n    \
         mode: \"0660\"\n    owner: nobody\n  dns:\n    listen: udp://127.0.0.1:{udp}\n"
    );
    let fds = "      3: web\n      4: ctl\n      5: dns\n";
    let d = Daemon::start_with("fdpy", &extra, &server_svc("web", fds, ""), write_server);
    wait_out(&d, "web", "serving 3 web:ctl:dns");
    let pid = row(&d, "web")["pid"].as_i64().unwrap();
    let a = ask_tcp(tcp);
    assert_eq!(a, format!("pid={pid} fds=3 names=web:ctl:dns\n"));
    // The unix socket: its mode and owner, then an answer.
    let sock = d.dir.join("ctl.sock");
    let m = std::fs::metadata(&sock).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o660);
    assert_eq!(m.uid(), nobody_uid());
    let mut u = UnixStream::connect(&sock).unwrap();
    let mut s = String::new();
    u.read_to_string(&mut s).unwrap();
    assert_eq!(s, a);
    // udp: a datagram and its answer.
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.send_to(b"q", ("127.0.0.1", udp)).unwrap();
    let mut buf = [0u8; 200];
    let n = c.recv(&mut buf).unwrap();
    assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), a);
    // The child has its three and stdio, nothing else of the daemon's
    // (python's own fromfd copies are sockets of the same inodes).
    let ours: Vec<String> = (3..6)
        .map(|f| {
            std::fs::read_link(format!("/proc/{pid}/fd/{f}"))
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let e = e.unwrap();
        let n: i32 = e.file_name().to_str().unwrap().parse().unwrap();
        let l = std::fs::read_link(e.path()).unwrap().display().to_string();
        assert!(
            n < 3 || ours.contains(&l) || l.starts_with("anon_inode:"),
            "fd {n} -> {l} leaked into the service"
        );
    }
    finish(d);
}

#[test]
fn a_listen_socket_outlives_its_service_so_a_connect_during_a_restart_is_queued() {
    need(PY, "python3");
    let port = free_port();
    let extra = format!("fds:\n  web:\n    listen: tcp://127.0.0.1:{port}\n");
    // A second's backoff: the test connects while no run is up.
    let backoff = "    restart: always\n    backoff:\n      initial: 1s\n";
    let d = Daemon::start_with(
        "fdrestart",
        &extra,
        &server_svc("web", "      3: web\n", backoff),
        write_server,
    );
    wait_out(&d, "web", "serving 1 web");
    let first = pid_of(&ask_tcp(port));
    signal(first as i32, 9);
    wait_row(
        &d,
        "web in backoff",
        20.0,
        || row(&d, "web"),
        |r| r["state"] == "backoff",
    );
    // No process listens now, but the socket does: the connect succeeds
    // and the next run answers it.
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect during the restart");
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut a = String::new();
    c.read_to_string(&mut a).unwrap();
    let second = pid_of(&a);
    assert_ne!(first, second, "{a}");
    assert_eq!(row(&d, "web")["pid"].as_i64().unwrap(), second);
    finish(d);
}

#[test]
fn file_entries_give_a_secret_to_a_user_who_cannot_open_it_and_write_and_append() {
    let d = Daemon::start_with(
        "fdfile",
        "fds:\n  secret:\n    file: $DIR/secret\n  out:\n    file: $DIR/out.txt\n    mode: w\n  \
         app:\n    file: $DIR/app.log\n    mode: a\n",
        &svc(
            "reader",
            "cat $DIR/secret >&6 2>/dev/null && echo LEAK >&6; cat <&4 >&5; echo line >&6",
            "    user: nobody\n    type: oneshot\n    restart: never\n    fds:\n      4: secret\n      \
             5: out\n      6: app\n",
        ),
        |dir| {
            let secret = dir.join("secret");
            std::fs::write(&secret, "s3cret\n").unwrap();
            std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
            std::fs::write(dir.join("out.txt"), "old content to truncate\n").unwrap();
            std::fs::write(dir.join("app.log"), "old\n").unwrap();
        },
    );
    wait_state(&d, "reader", "completed", 20.0);
    assert_eq!(
        std::fs::read_to_string(d.dir.join("out.txt")).unwrap(),
        "s3cret\n"
    );
    assert_eq!(
        std::fs::read_to_string(d.dir.join("app.log")).unwrap(),
        "old\nline\n"
    );
    finish(d);
}

/// The consumer's `got` lines in its log: (consumer pid, producer pid).
fn got(d: &Daemon) -> Vec<(i64, i64)> {
    let o = ctl(d, &["logs", "consumer", "--no-follow", "-n", "1000"]).stdout;
    o.lines()
        .filter_map(|l| {
            let t = l.split("c=").nth(1)?;
            let mut w = t.split_whitespace();
            let c = w.next()?.parse().ok()?;
            let p = w.next()?.strip_prefix("p=")?.parse().ok()?;
            Some((c, p))
        })
        .collect()
}

#[test]
fn a_pipe_between_two_services_survives_a_restart_of_each() {
    let producer = svc(
        "producer",
        "while :; do echo \"p=$$\"; sleep 0.05; done >&3",
        "    fds:\n      3: line.write\n",
    );
    let consumer = svc(
        "consumer",
        "while read l; do echo \"c=$$ $l\"; done <&3",
        "    fds:\n      3: line.read\n",
    );
    let d = Daemon::start(
        "fdpipe",
        "fds:\n  line:\n    pipe: {}\n",
        &format!("{producer}{consumer}"),
    );
    // Each once it runs (just after startup it may not be spawned yet).
    let pid = |n: &str| wait_state(&d, n, "running", 20.0)["pid"].as_i64().unwrap();
    let (p1, c1) = (pid("producer"), pid("consumer"));
    wait_for(20.0, "a line", || got(&d).contains(&(c1, p1)).then_some(()));
    ok(ctl(&d, &["restart", "producer"]));
    let p2 = pid("producer");
    assert_ne!(p1, p2);
    wait_for(20.0, "the new producer's line", || {
        got(&d).contains(&(c1, p2)).then_some(())
    });
    ok(ctl(&d, &["restart", "consumer"]));
    let c2 = pid("consumer");
    assert_ne!(c1, c2);
    wait_for(20.0, "a line read by the new consumer", || {
        got(&d).contains(&(c2, p2)).then_some(())
    });
    finish(d);
}

#[test]
fn an_entry_that_cannot_be_bound_fails_only_its_services() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let extra = format!("fds:\n  web:\n    listen: tcp://127.0.0.1:{port}\n");
    let services = format!(
        "{}{}",
        svc(
            "web",
            "sleep 100",
            "    fds:\n      3: web\n    backoff:\n      initial: 100ms\n      max: 500ms\n"
        ),
        svc("other", "sleep 100", "")
    );
    let mut d = Daemon::start("fdbusy", &extra, &services);
    d.wait_log("fds entry 'web': cannot bind", 10.0);
    wait_state(&d, "other", "running", 20.0);
    let r = wait_row(
        &d,
        "web's reason",
        20.0,
        || row(&d, "web"),
        |r| {
            r["reason"]
                .as_str()
                .is_some_and(|s| s.contains("fds entry 'web' is not open: Address already in use"))
        },
    );
    assert_ne!(r["state"], "running", "{r}");
    let o = ctl(&d, &["status", "web"]);
    assert!(o.stdout.contains("fds entry 'web' is not open"), "{o:?}");
    assert!(alive(d.pid()));
    // Once the port is free, the next start of a service using the entry
    // creates it: the service runs, and the socket is coffeyd's.
    drop(taken);
    d.wait_log("fds entry 'web' created", 20.0);
    wait_state(&d, "web", "running", 20.0);
    TcpStream::connect(("127.0.0.1", port)).expect("the entry listens now");
    finish(d);
}

/// The socket inode of `pid`'s fd 3.
fn inode3(pid: i64) -> String {
    std::fs::read_link(format!("/proc/{pid}/fd/3"))
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn reload_keeps_unchanged_entries_creates_new_ones_and_closes_removed_ones() {
    need(PY, "python3");
    let port = free_port();
    let extra = format!("fds:\n  web:\n    listen: tcp://127.0.0.1:{port}\n");
    let web = server_svc("web", "      3: web\n", "");
    let d = Daemon::start_with("fdreload", &extra, &web, write_server);
    wait_out(&d, "web", "serving 1 web");
    let first = pid_of(&ask_tcp(port));
    let before = inode3(first);
    // The same entry, a new unix entry and a service using it: web is
    // unchanged (same process, same socket), the new one is served.
    let sock = d.dir.join("api.sock");
    let extra2 = format!("{extra}  api:\n    listen: unix:$DIR/api.sock\n");
    let api = server_svc("api", "      3: api\n", "").replace("[$DIR/server.py]", "[$DIR/unix.py]");
    std::fs::write(
        d.dir.join("unix.py"),
        SERVER.replace(
            "socket.AF_INET, socket.SOCK_STREAM), (socket.AF_UNIX",
            "socket.AF_UNIX, socket.SOCK_STREAM), (socket.AF_UNIX",
        ),
    )
    .unwrap();
    d.rewrite(&extra2, &format!("{web}{api}"));
    let o = ok(ctl(&d, &["reload"]));
    assert!(
        o.stdout.contains("1 added") && o.stdout.contains("1 unchanged"),
        "{o:?}"
    );
    wait_out(&d, "api", "serving 1 api");
    let mut u = UnixStream::connect(&sock).unwrap();
    let mut a = String::new();
    u.read_to_string(&mut a).unwrap();
    assert!(a.contains("names=api"), "{a}");
    assert_eq!(pid_of(&ask_tcp(port)), first);
    ok(ctl(&d, &["restart", "web"]));
    let second = pid_of(&ask_tcp(port));
    assert_ne!(first, second);
    assert_eq!(inode3(second), before, "a kept entry keeps its socket");
    // web's entry changed (another port), api's removed: web restarts on
    // the new socket, the old port and the unix socket are closed.
    let port2 = free_port();
    d.rewrite(
        &format!("fds:\n  web:\n    listen: tcp://127.0.0.1:{port2}\n"),
        &web,
    );
    let o = ok(ctl(&d, &["reload"]));
    assert!(
        o.stdout.contains("1 removed") && o.stdout.contains("1 restarted"),
        "{o:?}"
    );
    wait_for(20.0, "web on the new port", || {
        let mut c = TcpStream::connect(("127.0.0.1", port2)).ok()?;
        let mut s = String::new();
        c.read_to_string(&mut s).ok()?;
        Some(s)
    });
    assert_eq!(
        TcpStream::connect(("127.0.0.1", port)).unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );
    assert!(!sock.exists(), "the removed entry's socket file is gone");
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
    finish(d);
}

/// The table's slots are fixed at startup (twice its entries and 8
/// more): a reload that needs more is refused and changes nothing.
#[test]
fn reload_refuses_a_table_past_its_slots() {
    let one = "fds:\n  p0:\n    pipe: {}\n";
    let d = Daemon::start(
        "fdcap",
        one,
        &svc("a", "sleep 100", "    fds:\n      3: p0.read\n"),
    );
    let many: String = (0..11)
        .map(|n| format!("  p{n}:\n    pipe: {{}}\n"))
        .collect();
    d.rewrite(
        &format!("fds:\n{many}"),
        &svc("a", "sleep 100", "    fds:\n      3: p0.read\n"),
    );
    let o = ctl(&d, &["reload"]);
    assert_ne!(o.code, 0, "{o:?}");
    let text = format!("{}{}", o.stdout, o.stderr);
    assert!(
        text.contains("the new fds table needs 10 new entries but only 9 slots are free"),
        "{o:?}"
    );
    let many: String = (0..10)
        .map(|n| format!("  p{n}:\n    pipe: {{}}\n"))
        .collect();
    d.rewrite(
        &format!("fds:\n{many}"),
        &svc("a", "sleep 100", "    fds:\n      3: p0.read\n"),
    );
    ok(ctl(&d, &["reload"]));
    finish(d);
}

/// Eighteen `fds:` entries and services mapping 3..=20 to them: the
/// numbers where the daemon holds the child's status pipe and notify pipe
/// (low numbers, taken at startup after its signalfd and epoll: 11 and 12
/// today) are targets too. The
/// child moves them out of the way first, so an exec failure is still
/// reported as one and a notify readiness check still works.
#[test]
fn fds_on_the_numbers_of_the_status_and_notify_pipes_keep_both_working() {
    let table: String = (3..=20)
        .map(|n| format!("  f{n}:\n    file: $DIR/f{n}\n    mode: w\n"))
        .collect();
    let items: String = (3..=20).map(|n| format!("      {n}: f{n}\n")).collect();
    let missing = format!("  - name: missing\n    binary: /nonexistent-cfy\n    fds:\n{items}");
    // bash: dash takes only one-digit descriptors in redirections.
    let ready = svc(
        "ready",
        "for n in $(seq 3 20); do eval \"echo $n >&$n\"; done; echo ready >&21; exec sleep 100",
        &format!(
            "    fds:\n{items}    healthcheck:\n      readiness:\n        type: notify\n        fd: 21\n"
        ),
    );
    let ready = ready.replace("binary: /bin/sh", "binary: /bin/bash");
    let d = Daemon::start(
        "fdmove",
        &format!("fds:\n{table}"),
        &format!("{missing}{ready}"),
    );
    wait_state(&d, "ready", "running", 20.0);
    for n in 3..=20 {
        let f = std::fs::read_to_string(d.dir.join(format!("f{n}"))).unwrap();
        assert_eq!(f, format!("{n}\n"));
    }
    wait_row(
        &d,
        "missing's exec failure",
        20.0,
        || row(&d, "missing"),
        |r| {
            r["reason"]
                .as_str()
                .is_some_and(|s| s.contains("exec failed: No such file or directory"))
        },
    );
    finish(d);
}

/// `coffeyd reexec` hands the table to the new binary: the service's
/// listen socket is the same one after it (a new socket could not even be
/// bound while the running service holds the old one), and a restart
/// after the reexec gets it too.
#[test]
fn reexec_hands_the_table_to_the_new_binary() {
    need(PY, "python3");
    let port = free_port();
    let extra = format!("fds:\n  web:\n    listen: tcp://127.0.0.1:{port}\n");
    let mut d = Daemon::start_with(
        "fdreexec",
        &extra,
        &server_svc("web", "      3: web\n", ""),
        write_server,
    );
    wait_out(&d, "web", "serving 1 web");
    let first = pid_of(&ask_tcp(port));
    let before = inode3(first);
    ok(ctl(&d, &["reexec"]));
    d.wait_log("web: adopted pid", 20.0);
    assert!(
        !d.log_text().contains("fds entry 'web'"),
        "{}",
        d.log_text()
    );
    ok(ctl(&d, &["restart", "web"]));
    let second = pid_of(&ask_tcp(port));
    assert_ne!(first, second);
    assert_eq!(inode3(second), before);
    finish(d);
}
