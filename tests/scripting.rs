//! The scripting side of the CLI against the real daemon over its real
//! socket: `status NAME`'s exit code, `wait`, the chain of waiting
//! dependencies in `status NAME`, and `logs` of several services. Every
//! test ends by checking that the daemon made no heap allocation after
//! startup.
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

#[test]
fn status_name_exit_code_tells_the_state() {
    let services = [
        svc("up", "exec sleep 600", ""),
        svc("once", "exit 0", "    type: oneshot\n"),
        svc("bad", "exit 1", "    restart: never\n"),
        svc("down", "exec sleep 600", ""),
        svc("blocked", "exec sleep 600", "    depends_on: [bad]\n"),
    ]
    .concat();
    let mut d = Daemon::start("stcode", "", &services);
    d.wait_log("once: completed", 10.0);
    wait_state(&d, "bad", "failed", 10.0);
    ok(ctl(&d, &["stop", "down"]));
    for (name, code, state) in [
        ("up", 0, "running"),
        ("once", 0, "completed"),
        ("bad", 3, "failed"),
        ("down", 3, "stopped"),
        ("blocked", 3, "waiting"),
    ] {
        let o = ctl(&d, &["status", name]);
        assert_eq!(o.code, code, "{name}: {o:?}");
        assert!(o.stdout.contains(state), "{name}: {o:?}");
        assert!(o.stderr.is_empty(), "{name}: {o:?}");
        let j = ctl(&d, &["-j", "status", name]);
        assert_eq!(j.code, code, "{name}: {j:?}");
        assert_eq!(json(&j.stdout)["state"], state, "{name}: {j:?}");
    }
    // Without a name: 0 whatever the states.
    assert_eq!(ctl(&d, &["status"]).code, 0);
    // Unknown service: 3 too (as `systemctl is-active`), with a message.
    let o = ctl(&d, &["status", "nope"]);
    assert_eq!(o.code, 3, "{o:?}");
    assert!(o.stderr.contains("unknown service"), "{o:?}");
    assert_no_alloc(&mut d);
    let sock = d.socket.clone();
    finish(d);
    // No daemon: 4.
    let o = cli(&["status", "up", "-s", sock.to_str().unwrap()]);
    assert_eq!(o.code, 4, "{o:?}");
}
