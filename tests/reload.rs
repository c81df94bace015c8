#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_methods,
    clippy::disallowed_macros
)]
//! Reload end to end: the real daemon, its config file rewritten in place,
//! `coffeyd reload` (human, `-j`, `--dry-run`), the raw protocol and
//! SIGHUP. Every wait has a deadline; every test ends by checking that the
//! daemon made no heap allocation after startup (reload included).

mod common;
use common::*;

use coffey::control::proto::{self, plan, DecodeError, ErrorCode, Reply, Request};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Deadline for anything the daemon should do "soon" (loaded 2-core box).
const SOON: f64 = 30.0;

fn sleeper(name: &str) -> String {
    svc(name, "exec sleep 600", "")
}

// ---------------------------------------------------------------- CLI

/// `ctl` with reload's long deadline (a reload may compile a big config).
fn ctl(d: &Daemon, args: &[&str]) -> Out {
    ctl_within(d, args, 150.0)
}

/// `coffeyd reload` that must succeed; returns its output.
fn reload(d: &Daemon) -> Out {
    ok(ctl(d, &["reload"]))
}

/// The plan lines of a human `reload` output: (action, name, detail).
fn plan_rows(o: &Out) -> Vec<(String, String, String)> {
    o.stdout
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let action = w.next()?;
            if !["add", "remove", "restart", "update", "unchanged"].contains(&action) {
                return None;
            }
            let name = w.next()?.to_string();
            Some((action.to_string(), name, w.collect::<Vec<_>>().join(" ")))
        })
        .collect()
}

/// The plan as sorted `action name` strings.
fn plan_of(o: &Out) -> Vec<String> {
    let mut v: Vec<String> = plan_rows(o)
        .into_iter()
        .map(|(a, n, _)| format!("{a} {n}"))
        .collect();
    v.sort();
    v
}

fn sorted(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// The detail of `name`'s plan line.
fn detail(o: &Out, name: &str) -> String {
    plan_rows(o)
        .into_iter()
        .find(|(_, n, _)| n == name)
        .unwrap_or_else(|| panic!("no plan line for {name}: {o:?}"))
        .2
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    state: String,
    pid: Option<i64>,
    restarts: u64,
}

/// `status -j`, by name.
fn status(d: &Daemon) -> BTreeMap<String, Row> {
    let o = ok(ctl(d, &["-j", "status"]));
    json(&o.stdout)
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                Row {
                    state: s["state"].as_str().unwrap().to_string(),
                    pid: s["pid"].as_i64(),
                    restarts: s["restarts"].as_u64().unwrap(),
                },
            )
        })
        .collect()
}

fn names(d: &Daemon) -> Vec<String> {
    status(d).into_keys().collect()
}

/// Waits until `name` is running with a live pid; returns the pid.
fn wait_running(d: &Daemon, name: &str) -> i32 {
    let mut last = None;
    wait_for(SOON, &format!("{name} running"), || {
        let r = status(d).get(name).cloned();
        last = r.clone();
        let r = r?;
        let pid = r.pid? as i32;
        (r.state == "running" && alive(pid)).then_some(pid)
    })
}

/// Waits until `name` runs with a pid other than `old`.
fn wait_new_pid(d: &Daemon, name: &str, old: i32) -> i32 {
    wait_for(
        SOON,
        &format!("{name} running with a pid other than {old}"),
        || {
            let r = status(d).get(name).cloned()?;
            let pid = r.pid? as i32;
            (r.state == "running" && pid != old && alive(pid)).then_some(pid)
        },
    )
}

/// Waits until a process is gone (reaped: no /proc entry).
fn wait_gone(pid: i32) {
    wait_for(SOON, &format!("pid {pid} gone"), || {
        (!exists(pid)).then_some(())
    });
}

// ---------------------------------------------------------------- raw client

/// Sends one request and reads reply frames up to the terminator.
fn raw(sock: &Path, req: &Request<'_>) -> Vec<Vec<u8>> {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(150))).unwrap();
    let mut b = [0u8; 256];
    let n = proto::encode_request(req, &mut b).unwrap();
    s.write_all(&b[..n]).unwrap();
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    loop {
        match proto::frame_bounds(&buf, proto::MAX_PAYLOAD) {
            Ok((_, end)) => {
                let f: Vec<u8> = buf.drain(..end).collect();
                let done = matches!(
                    proto::decode_reply(&f).unwrap().0,
                    Reply::Ok { .. } | Reply::Error { .. }
                );
                frames.push(f);
                if done {
                    return frames;
                }
                continue;
            }
            Err(DecodeError::Incomplete) => {}
            Err(e) => panic!("bad frame from the daemon: {e:?}"),
        }
        let mut tmp = [0u8; 8192];
        let n = s.read(&mut tmp).unwrap();
        assert!(n > 0, "the daemon closed after {} frames", frames.len());
        buf.extend_from_slice(&tmp[..n]);
    }
}

fn reply(f: &[u8]) -> Reply<'_> {
    proto::decode_reply(f).unwrap().0
}

// ================================================================ tests

#[test]
fn reload_adds_a_service() {
    let mut d = Daemon::start("radd", "", &sleeper("a"));
    let a = wait_running(&d, "a");

    d.rewrite("", &[sleeper("a"), sleeper("b")].concat());
    let o = reload(&d);
    assert_eq!(plan_of(&o), sorted(&["add b", "unchanged a"]), "{o:?}");
    assert_eq!(detail(&o, "b"), "new service");
    assert!(
        o.stdout
            .contains("applied: 1 added, 0 removed, 0 restarted, 0 updated, 1 unchanged"),
        "{o:?}"
    );
    assert!(o.stderr.is_empty(), "{o:?}");
    let b = wait_running(&d, "b");
    assert_ne!(a, b);
    assert_eq!(wait_running(&d, "a"), a, "an unchanged service was touched");
    assert_eq!(names(&d), ["a", "b"]);
    let log = d.wait_log("reload applied: 1 added", SOON);
    assert!(log.contains("reload: add b: new service"), "{log}");
    d.wait_log("b: spawned", SOON);

    // The JSON form: another service, added with -j.
    d.rewrite("", &[sleeper("a"), sleeper("b"), sleeper("c")].concat());
    let o = ok(ctl(&d, &["-j", "reload"]));
    let v = json(&o.stdout);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["dry_run"], false, "{v}");
    assert_eq!(v["applied"], true, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("applied: 1 added"),
        "{v}"
    );
    let plan = v["plan"].as_array().unwrap();
    assert_eq!(plan.len(), 3, "{v}");
    let c = plan.iter().find(|p| p["name"] == "c").unwrap();
    assert_eq!(c["action"], "add", "{v}");
    assert_eq!(c["detail"], "new service", "{v}");
    for n in ["a", "b"] {
        let p = plan.iter().find(|p| p["name"] == n).unwrap();
        assert_eq!(p["action"], "unchanged", "{v}");
    }
    wait_running(&d, "c");
    assert_eq!(wait_running(&d, "b"), b);
    finish(d);
}

#[test]
fn reload_removes_a_service() {
    let mut d = Daemon::start(
        "rrm",
        "",
        &[sleeper("a"), sleeper("b"), sleeper("c")].concat(),
    );
    let a = wait_running(&d, "a");
    let b = wait_running(&d, "b");
    let c = wait_running(&d, "c");

    d.rewrite("", &[sleeper("a"), sleeper("c")].concat());
    let o = reload(&d);
    assert_eq!(
        plan_of(&o),
        sorted(&["remove b", "unchanged a", "unchanged c"]),
        "{o:?}"
    );
    assert_eq!(detail(&o, "b"), "no longer in the config");
    assert!(o.stdout.contains("applied: 0 added, 1 removed"), "{o:?}");
    wait_gone(b);
    d.wait_log("reload applied: 0 added, 1 removed", SOON);
    assert_eq!(names(&d), ["a", "c"]);
    assert!(!alive(b));
    assert_eq!(wait_running(&d, "a"), a);
    assert_eq!(wait_running(&d, "c"), c);

    // -j: a remove with no adds.
    d.rewrite("", &sleeper("a"));
    let v = json(&ok(ctl(&d, &["-j", "reload"])).stdout);
    assert_eq!(v["applied"], true, "{v}");
    let p = v["plan"].as_array().unwrap();
    let pc = p.iter().find(|p| p["name"] == "c").unwrap();
    assert_eq!(pc["action"], "remove", "{v}");
    wait_gone(c);
    assert_eq!(names(&d), ["a"]);
    assert_eq!(wait_running(&d, "a"), a);
    finish(d);
}

#[test]
fn reload_restarts_changed_commands_updates_settings_and_keeps_the_rest() {
    let m = |v: &str| svc("m", &format!("echo {v} > $DIR/m.txt; exec sleep 600"), "");
    let u = |extra: &str| svc("u", "exec sleep 600", extra);
    // k crashes on demand (SIGKILL); it restarts fast.
    let k = svc(
        "k",
        "exec sleep 600",
        "    backoff:\n      initial: 10ms\n      reset_after: 1h\n",
    );
    let d = Daemon::start(
        "rchg",
        "",
        &[m("v1"), u("    stop_timeout: 10s\n"), k.clone()].concat(),
    );
    let mut mp = wait_running(&d, "m");
    let up = wait_running(&d, "u");
    let mut kp = wait_running(&d, "k");
    let mtxt = d.dir.join("m.txt");
    wait_for(SOON, "m.txt v1", || {
        (std::fs::read_to_string(&mtxt).ok()? == "v1\n").then_some(())
    });
    // Crash k twice: restarts = 2.
    for n in 1..=2u64 {
        ok(ctl(&d, &["signal", "k", "KILL"]));
        kp = wait_new_pid(&d, "k", kp);
        assert_eq!(status(&d)["k"].restarts, n);
    }

    // (a) args changed: restart, new pid, new command. (b) stop_timeout
    // changed: update, same pid. (c) k unchanged.
    d.rewrite(
        "",
        &[m("v2"), u("    stop_timeout: 5s\n"), k.clone()].concat(),
    );
    let o = reload(&d);
    assert_eq!(
        plan_of(&o),
        sorted(&["restart m", "update u", "unchanged k"]),
        "{o:?}"
    );
    assert_eq!(detail(&o, "m"), "command changed");
    assert!(detail(&o, "u").contains("stop"), "{o:?}");
    assert!(
        o.stdout
            .contains("applied: 0 added, 0 removed, 1 restarted, 1 updated, 1 unchanged"),
        "{o:?}"
    );
    let new_mp = wait_new_pid(&d, "m", mp);
    wait_gone(mp);
    mp = new_mp;
    wait_for(SOON, "m.txt v2", || {
        (std::fs::read_to_string(&mtxt).ok()? == "v2\n").then_some(())
    });
    let v = json(&ok(ctl(&d, &["-j", "status", "m"])).stdout);
    let args = v["details"]["args"].as_str().unwrap();
    assert!(args.contains("echo v2"), "status m shows the new args: {v}");
    let v = json(&ok(ctl(&d, &["-j", "status", "u"])).stdout);
    let stop = v["details"]["stop"].as_str().unwrap();
    assert!(stop.ends_with("after 5s"), "the new stop_timeout: {v}");
    let s = status(&d);
    assert_eq!(s["u"].pid, Some(i64::from(up)), "{s:?}");
    assert_eq!(s["u"].state, "running");
    assert_eq!(s["k"].pid, Some(i64::from(kp)), "{s:?}");
    assert_eq!(s["k"].restarts, 2, "{s:?}");
    assert!(alive(up) && alive(kp));

    // (b) backoff only: update, same pid; m and k untouched.
    d.rewrite(
        "",
        &[
            m("v2"),
            u("    stop_timeout: 5s\n    backoff:\n      initial: 2s\n"),
            k.clone(),
        ]
        .concat(),
    );
    let o = reload(&d);
    assert_eq!(
        plan_of(&o),
        sorted(&["unchanged m", "update u", "unchanged k"]),
        "{o:?}"
    );
    assert!(detail(&o, "u").contains("backoff"), "{o:?}");
    let s = status(&d);
    assert_eq!(s["u"].pid, Some(i64::from(up)), "{s:?}");
    assert_eq!(s["m"].pid, Some(i64::from(mp)), "{s:?}");
    assert_eq!(s["k"].pid, Some(i64::from(kp)), "{s:?}");
    assert_eq!(s["k"].restarts, 2, "{s:?}");
    for n in ["m", "u", "k"] {
        assert_eq!(s[n].state, "running", "{s:?}");
    }

    let v = json(&ok(ctl(&d, &["-j", "status", "u"])).stdout);
    let backoff = v["details"]["backoff"].as_str().unwrap();
    assert!(backoff.starts_with("initial 2s,"), "the new backoff: {v}");
    assert_eq!(v["pid"], i64::from(up), "{v}");

    // A crash of k after the reload still counts on the same counter.
    ok(ctl(&d, &["signal", "k", "KILL"]));
    wait_new_pid(&d, "k", kp);
    assert_eq!(status(&d)["k"].restarts, 3);
    finish(d);
}

#[test]
fn changed_stopped_service_stays_stopped_and_deps_update_in_place() {
    let w = |v: &str| svc("w", &format!("echo {v} > $DIR/w.txt; exec sleep 600"), "");
    let e = |env: &str, dep: &str| {
        svc(
            "e",
            "echo $GREETING > $DIR/e.txt; exec sleep 600",
            &format!("    env: ['GREETING={env}']\n    depends_on: [{dep}]\n"),
        )
    };
    let d = Daemon::start(
        "rstopped",
        "",
        &[w("v1"), sleeper("x"), e("hello", "x")].concat(),
    );
    let wp = wait_running(&d, "w");
    let xp = wait_running(&d, "x");
    let ep = wait_running(&d, "e");
    ok(ctl(&d, &["stop", "w"]));
    wait_gone(wp);

    // w: command changed while stopped -> planned as restart, stays down.
    // e: depends_on changed -> update, same pid.
    d.rewrite("", &[w("v2"), sleeper("x"), e("hello", "w")].concat());
    let o = reload(&d);
    assert_eq!(
        plan_of(&o),
        sorted(&["restart w", "update e", "unchanged x"]),
        "{o:?}"
    );
    assert_eq!(detail(&o, "e"), "depends_on changed", "{o:?}");
    let s = status(&d);
    assert_eq!(s["w"].state, "stopped", "{s:?}");
    assert_eq!(s["w"].pid, None, "{s:?}");
    assert_eq!(s["e"].pid, Some(i64::from(ep)), "{s:?}");
    assert_eq!(s["x"].pid, Some(i64::from(xp)), "{s:?}");
    let v = json(&ok(ctl(&d, &["-j", "status", "e"])).stdout);
    let deps = v["details"]["depends_on"].as_str().unwrap();
    assert!(deps.contains('w') && !deps.contains('x'), "e's deps: {v}");
    // Started by hand, w runs the new command.
    ok(ctl(&d, &["start", "w"]));
    wait_running(&d, "w");
    let wtxt = d.dir.join("w.txt");
    wait_for(SOON, "w.txt v2", || {
        (std::fs::read_to_string(&wtxt).ok()? == "v2\n").then_some(())
    });

    // e: env changed -> restart with the new environment.
    d.rewrite("", &[w("v2"), sleeper("x"), e("bye", "w")].concat());
    let o = reload(&d);
    assert_eq!(
        plan_of(&o),
        sorted(&["restart e", "unchanged w", "unchanged x"]),
        "{o:?}"
    );
    assert_eq!(detail(&o, "e"), "env changed", "{o:?}");
    wait_new_pid(&d, "e", ep);
    let etxt = d.dir.join("e.txt");
    wait_for(SOON, "e.txt bye", || {
        (std::fs::read_to_string(&etxt).ok()? == "bye\n").then_some(())
    });
    finish(d);
}

/// What `coffeyd validate -c CONFIG` prints as diagnostics.
fn validate_errors(config: &Path) -> Vec<String> {
    let o = cli(&["validate", "-c", config.to_str().unwrap()]);
    assert_eq!(o.code, 1, "validate accepted it: {o:?}");
    let v: Vec<String> = o
        .stdout
        .lines()
        .chain(o.stderr.lines())
        .filter(|l| l.contains(": error: "))
        .map(str::to_string)
        .collect();
    assert!(!v.is_empty(), "{o:?}");
    v
}

#[test]
fn invalid_config_is_rejected_and_nothing_changes() {
    let good = [
        sleeper("a"),
        svc("b", "exec sleep 600", "    depends_on: [a]\n"),
    ]
    .concat();
    let mut d = Daemon::start("rbad", "", &good);
    wait_running(&d, "a");
    wait_running(&d, "b");
    let before = status(&d);
    let header = d.config_text("", "");

    let broken: [(&str, String); 4] = [
        (
            "broken YAML",
            format!("{header}  - name: a\n    binary: [/bin/sh\n"),
        ),
        (
            "unknown key",
            d.config_text("", &[good.clone(), "    bogus: 1\n".into()].concat()),
        ),
        (
            "missing dependency",
            d.config_text(
                "",
                &[
                    sleeper("a"),
                    svc("b", "exec sleep 600", "    depends_on: [nope]\n"),
                    sleeper("c"),
                ]
                .concat(),
            ),
        ),
        (
            // (A missing binary is no config error: it fails only that
            // service; see tests/target.rs. A relative one is.)
            "relative binary",
            d.config_text(
                "",
                &[
                    good.clone(),
                    "  - name: c\n    binary: coffey-test\n".into(),
                ]
                .concat(),
            ),
        ),
    ];
    let mut rejected = 0;
    for (what, text) in &broken {
        std::fs::write(&d.config, text).unwrap();
        let want = validate_errors(&d.config);
        let o = ctl(&d, &["reload"]);
        assert_eq!(o.code, 1, "{what}: {o:?}");
        for l in &want {
            assert!(
                o.stderr.lines().any(|x| x == l),
                "{what}: reload does not print {l:?}: {o:?}"
            );
            // file:line:col
            let loc = l.split(": ").next().unwrap();
            let mut parts = loc.rsplitn(3, ':');
            let col: u32 = parts.next().unwrap().parse().unwrap();
            let line: u32 = parts.next().unwrap().parse().unwrap();
            assert!(col > 0 && line > 0, "{l}");
            assert_eq!(parts.next().unwrap(), d.config.to_str().unwrap(), "{l}");
        }
        assert!(
            plan_rows(&o).is_empty(),
            "{what}: a plan for a bad config: {o:?}"
        );
        rejected += 1;
        d.wait_count("reload rejected:", rejected, SOON);
        assert_eq!(status(&d), before, "{what}: something changed");

        // -j: the error object.
        let o = ctl(&d, &["-j", "reload"]);
        assert_eq!(o.code, 1, "{what}: {o:?}");
        let v = json(&o.stdout);
        assert_eq!(v["ok"], false, "{v}");
        assert_eq!(v["code"], 1, "{v}");
        assert_eq!(v["error"], ErrorCode::Failed.as_str(), "{v}");
        assert!(v["message"].as_str().unwrap().contains(&want[0]), "{v}");
        rejected += 1;
        d.wait_count("reload rejected:", rejected, SOON);
    }
    assert_eq!(status(&d), before);

    // The config file is gone entirely.
    std::fs::remove_file(&d.config).unwrap();
    let o = ctl(&d, &["reload"]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(!o.stderr.is_empty(), "{o:?}");
    assert_eq!(status(&d), before);

    // A later valid reload works.
    d.rewrite("", &[good.clone(), sleeper("c")].concat());
    let o = reload(&d);
    assert_eq!(
        plan_of(&o),
        sorted(&["add c", "unchanged a", "unchanged b"]),
        "{o:?}"
    );
    wait_running(&d, "c");
    let after = status(&d);
    for n in ["a", "b"] {
        assert_eq!(after[n], before[n], "{after:?}");
    }
    finish(d);
}

#[test]
fn dry_run_changes_nothing() {
    let m = |v: &str| svc("a", &format!("echo {v}; exec sleep 600"), "");
    let d = Daemon::start("rdry", "", &[m("v1"), sleeper("b")].concat());
    wait_running(&d, "a");
    wait_running(&d, "b");
    let before = status(&d);

    d.rewrite("", &[m("v2"), sleeper("c")].concat());
    let o = ok(ctl(&d, &["reload", "--dry-run"]));
    assert_eq!(
        plan_of(&o),
        sorted(&["restart a", "add c", "remove b"]),
        "{o:?}"
    );
    assert!(
        o.stdout.contains(
            "dry run, nothing changed: 1 added, 1 removed, 1 restarted, 0 updated, 0 unchanged"
        ),
        "{o:?}"
    );
    assert_eq!(status(&d), before);

    // -j --dry-run.
    let o = ok(ctl(&d, &["-j", "reload", "--dry-run"]));
    let v = json(&o.stdout);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["dry_run"], true, "{v}");
    assert_eq!(v["applied"], false, "{v}");
    assert_eq!(v["plan"].as_array().unwrap().len(), 3, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("dry run, nothing changed"),
        "{v}"
    );

    // The raw protocol: PlanItem* then Ok.
    let frames = raw(&d.socket, &Request::Reload { dry_run: true });
    let mut items = Vec::new();
    for f in &frames[..frames.len() - 1] {
        match reply(f) {
            Reply::PlanItem { action, name, .. } => items.push((action, name.to_string())),
            r => panic!("expected PlanItem, got {r:?}"),
        }
    }
    items.sort();
    assert_eq!(
        items,
        [
            (plan::ADD, "c".to_string()),
            (plan::REMOVE, "b".to_string()),
            (plan::RESTART, "a".to_string())
        ]
    );
    match reply(frames.last().unwrap()) {
        Reply::Ok { message } => assert!(message.starts_with("dry run"), "{message}"),
        r => panic!("expected Ok, got {r:?}"),
    }

    // Nothing changed: same services, same pids, the log says so.
    assert_eq!(status(&d), before);
    assert_eq!(names(&d), ["a", "b"]);
    assert!(!d.log_text().contains("reload applied"), "{}", d.log_text());
    let o = ctl(&d, &["status", "c"]);
    assert_eq!(o.code, 3, "{o:?}");

    // The same plan then applies for real.
    let o = reload(&d);
    assert_eq!(
        plan_of(&o),
        sorted(&["restart a", "add c", "remove b"]),
        "{o:?}"
    );
    wait_running(&d, "c");
    wait_new_pid(&d, "a", before["a"].pid.unwrap() as i32);
    wait_gone(before["b"].pid.unwrap() as i32);
    assert_eq!(names(&d), ["a", "c"]);
    finish(d);
}

#[test]
fn reload_needing_more_slots_than_free_is_rejected() {
    let mut d = Daemon::start(
        "rslot",
        "  limits:\n    services: 2\n",
        &[sleeper("a"), sleeper("b")].concat(),
    );
    wait_running(&d, "a");
    wait_running(&d, "b");
    let before = status(&d);

    // limits.services in the new file is valid for 3 services, but the
    // running daemon's table is fixed at 2.
    d.rewrite(
        "  limits:\n    services: 3\n",
        &[sleeper("a"), sleeper("b"), sleeper("c")].concat(),
    );
    let o = ctl(&d, &["reload"]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("slots"), "{o:?}");
    assert!(o.stdout.is_empty(), "{o:?}");
    let log = d.wait_log("reload rejected:", SOON);
    assert!(
        log.lines()
            .any(|l| l.contains("reload rejected:") && l.contains("slots")),
        "{log}"
    );
    assert_eq!(status(&d), before);

    let o = ctl(&d, &["-j", "reload"]);
    assert_eq!(o.code, 1, "{o:?}");
    let v = json(&o.stdout);
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["error"], ErrorCode::NoSlots.as_str(), "{v}");
    assert!(v["message"].as_str().unwrap().contains("slots"), "{v}");

    // The raw protocol: Error{NoSlots}, no plan.
    let frames = raw(&d.socket, &Request::Reload { dry_run: true });
    assert_eq!(frames.len(), 1);
    match reply(&frames[0]) {
        Reply::Error { code, message } => {
            assert_eq!(code, ErrorCode::NoSlots);
            assert!(message.contains("slots"), "{message}");
        }
        r => panic!("expected Error{{NoSlots}}, got {r:?}"),
    }

    // Swapping one service for another in one reload also needs a free
    // slot (the removed one's slot frees once its process is gone).
    d.rewrite(
        "  limits:\n    services: 2\n",
        &[sleeper("a"), sleeper("c")].concat(),
    );
    let o = ctl(&d, &["reload"]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("slots"), "{o:?}");
    assert_eq!(status(&d), before);
    finish(d);
}

#[test]
fn sighup_reloads() {
    let mut d = Daemon::start("rhup", "", &sleeper("a"));
    let a = wait_running(&d, "a");
    d.rewrite("", &[sleeper("a"), sleeper("b")].concat());
    d.signal(1);
    let log = d.wait_log("reload applied", SOON);
    assert!(log.contains("reload applied: 1 added"), "{log}");
    let b = wait_running(&d, "b");
    assert_ne!(a, b);
    assert_eq!(wait_running(&d, "a"), a);

    // A broken file on SIGHUP: logged, nothing changes.
    let before = status(&d);
    std::fs::write(&d.config, d.config_text("", "  - name: [\n")).unwrap();
    d.signal(1);
    d.wait_log("reload rejected", SOON);
    assert_eq!(status(&d), before);
    finish(d);
}

#[test]
fn removed_service_can_be_added_back_in_its_slot() {
    // Two slots: adding back must reuse the retired slot.
    let lim = "  limits:\n    services: 2\n";
    let b_svc = svc("b", "echo this-is-b; exec sleep 600", "");
    let d = Daemon::start("rreadd", lim, &[sleeper("a"), b_svc.clone()].concat());
    let a = wait_running(&d, "a");
    let b = wait_running(&d, "b");
    wait_for(SOON, "b's output", || {
        let o = ctl(&d, &["logs", "b", "--no-follow"]);
        o.stdout.contains("this-is-b").then_some(())
    });

    d.rewrite(lim, &sleeper("a"));
    assert_eq!(plan_of(&reload(&d)), sorted(&["remove b", "unchanged a"]));
    wait_gone(b);
    assert_eq!(names(&d), ["a"]);

    d.rewrite(lim, &[sleeper("a"), b_svc].concat());
    let o = reload(&d);
    assert_eq!(plan_of(&o), sorted(&["add b", "unchanged a"]), "{o:?}");
    let b2 = wait_running(&d, "b");
    assert_ne!(b, b2);
    let s = status(&d);
    assert_eq!(s["b"].restarts, 0, "{s:?}");
    assert_eq!(s["a"].pid, Some(i64::from(a)));

    // Again, with a different name in the freed slot.
    d.rewrite(lim, &sleeper("a"));
    reload(&d);
    wait_gone(b2);
    d.rewrite(lim, &[sleeper("a"), sleeper("z")].concat());
    let o = reload(&d);
    assert_eq!(plan_of(&o), sorted(&["add z", "unchanged a"]), "{o:?}");
    wait_running(&d, "z");
    assert_eq!(names(&d), ["a", "z"]);
    assert_eq!(status(&d)["z"].restarts, 0);
    finish(d);
}

#[test]

fn removed_service_is_unknown_to_every_command() {
    let d = Daemon::start("rgone", "", &[sleeper("a"), sleeper("b")].concat());
    let b = wait_running(&d, "b");
    d.rewrite("", &sleeper("a"));
    reload(&d);
    wait_gone(b);
    assert_eq!(names(&d), ["a"]);
    for args in [
        &["status", "b"][..],
        &["start", "b", "--no-wait"][..],
        &["stop", "b"][..],
        &["restart", "b", "--no-wait"][..],
        &["signal", "b", "TERM"][..],
        &["logs", "b", "--no-follow"][..],
    ] {
        let o = ctl(&d, args);
        assert_eq!(o.code, 3, "{args:?} on a removed service: {o:?}");
        assert!(o.stderr.contains("unknown service 'b'"), "{o:?}");
    }
    // Nothing was started in the retired slot.
    assert!(!d.log_text().contains("b: exec failed"), "{}", d.log_text());
    assert_eq!(names(&d), ["a"]);
    finish(d);
}

#[test]

fn reused_slot_starts_with_an_empty_log_ring() {
    let lim = "  limits:\n    services: 2\n";
    let b_svc = svc("b", "echo this-is-b; exec sleep 600", "");
    let d = Daemon::start("rring", lim, &[sleeper("a"), b_svc].concat());
    let b = wait_running(&d, "b");
    wait_for(SOON, "b's output", || {
        let o = ctl(&d, &["logs", "b", "--no-follow"]);
        o.stdout.contains("this-is-b").then_some(())
    });
    d.rewrite(lim, &sleeper("a"));
    reload(&d);
    wait_gone(b);
    // z takes b's slot (the only free one).
    d.rewrite(
        lim,
        &[sleeper("a"), svc("z", "echo this-is-z; exec sleep 600", "")].concat(),
    );
    reload(&d);
    wait_running(&d, "z");
    let o = wait_for(SOON, "z's output", || {
        let o = ok(ctl(&d, &["logs", "z", "--no-follow"]));
        o.stdout.contains("this-is-z").then_some(o)
    });
    assert!(!o.stdout.contains("this-is-b"), "z shows b's output: {o:?}");
    finish(d);
}

/// `b` below ignores SIGTERM: a short shutdown_timeout makes the final
/// stop SIGKILL it instead of leaving it behind.
const SHORT_SHUTDOWN: &str = "  shutdown_timeout: 2s\n";

/// Removes `b` (which ignores SIGTERM, so it stays `stopping` for 60 s
/// and its slot is not free), then adds it back: the new `b` gets a fresh
/// slot. Returns the daemon and the old and new pids.
fn readd_while_stopping(tag: &str) -> (Daemon, i32, i32) {
    let stubborn = svc(
        "b",
        "trap \"\" TERM; echo up; while :; do sleep 0.05; done",
        "    stop_timeout: 60s\n",
    );
    let mut d = Daemon::start(
        tag,
        SHORT_SHUTDOWN,
        &[sleeper("a"), stubborn.clone()].concat(),
    );
    let old = wait_running(&d, "b");
    d.rewrite(SHORT_SHUTDOWN, &sleeper("a"));
    reload(&d);
    d.wait_log("b: stopping", SOON);
    assert!(alive(old));
    assert_eq!(names(&d), ["a"]);

    d.rewrite(SHORT_SHUTDOWN, &[sleeper("a"), stubborn].concat());
    let o = reload(&d);
    assert_eq!(plan_of(&o), sorted(&["add b", "unchanged a"]), "{o:?}");
    let new = wait_new_pid(&d, "b", old);
    assert!(alive(old), "the old b was killed early");
    assert_eq!(names(&d), ["a", "b"]);
    (d, old, new)
}

#[test]
fn readded_while_the_old_process_is_still_stopping() {
    let (d, old, new) = readd_while_stopping("rstop");
    // The retired slot's process goes away on its own terms; the new b
    // is unaffected.
    signal(old, 9);
    wait_gone(old);
    assert_eq!(wait_running(&d, "b"), new);
    assert_eq!(names(&d), ["a", "b"]);
    // And the daemon still reloads normally afterwards.
    // (b ignores SIGTERM: finish it off by hand.)
    d.rewrite(SHORT_SHUTDOWN, &sleeper("a"));
    reload(&d);
    assert_eq!(names(&d), ["a"]);
    assert!(alive(new));
    signal(new, 9);
    wait_gone(new);
    finish(d);
}

#[test]

fn verbs_reach_the_readded_service_not_the_retired_one() {
    let (d, old, new) = readd_while_stopping("rstop2");
    let v = json(&ok(ctl(&d, &["-j", "status", "b"])).stdout);
    let ok_pid = v["pid"] == i64::from(new) && v["state"] == "running";
    if !ok_pid {
        signal(old, 9);
    }
    assert!(ok_pid, "status b shows the retired slot: {v}");
    ok(ctl(&d, &["signal", "b", "KILL"]));
    wait_new_pid(&d, "b", new);
    assert!(alive(old), "signal b hit the retired process");
    signal(old, 9);
    wait_gone(old);
    finish(d);
}

#[test]

fn large_plan_reaches_the_client() {
    // 600 PlanItems of ~35 bytes: more than one 16 KiB output buffer.
    let lim = "  limits:\n    services: 700\n";
    let d = Daemon::start("rbig", lim, "");
    let many: String = (0..600)
        .map(|i| {
            format!("  - name: oneshot-service-{i:03}\n    binary: /bin/true\n    type: oneshot\n")
        })
        .collect();
    d.rewrite(lim, &many);
    let o = ctl(&d, &["-j", "reload", "--dry-run"]);
    assert_eq!(o.code, 0, "dry run of a large plan: {o:?}");
    assert_eq!(json(&o.stdout)["plan"].as_array().unwrap().len(), 600);
    let o = ctl(&d, &["-j", "reload"]);
    let applied = d.log_text().contains("reload applied: 600 added");
    assert_eq!(
        o.code, 0,
        "the client was told it failed (applied: {applied}): {o:?}"
    );
    let v = json(&o.stdout);
    assert_eq!(v["plan"].as_array().unwrap().len(), 600, "{v}");
    wait_for(SOON, "600 oneshots completed", || {
        let s = status(&d);
        (s.len() == 600 && s.values().all(|r| r.state == "completed")).then_some(())
    });
    finish(d);
}

#[test]
fn removing_a_dependency_keeps_its_former_dependent_running() {
    // y depended on x; the new config removes x and y's dependency on it.
    // y's process is untouched: x's stop must not take y down with it.
    let dep = "    depends_on: [x]\n";
    let mut d = Daemon::start(
        "rdep",
        "",
        &[sleeper("x"), svc("y", "exec sleep 600", dep)].concat(),
    );
    let y = wait_running(&d, "y");
    d.rewrite("", &sleeper("y"));
    let o = reload(&d);
    assert!(o.stdout.contains("1 removed"), "{o:?}");
    d.wait_log("x: stopped", SOON);
    assert_eq!(wait_running(&d, "y"), y);
    assert_eq!(status(&d)["y"].state, "running");
    assert!(!d.log_text().contains("y: stopping"), "{}", d.log_text());
    finish(d);
}

/// A service with `env` entries of `bytes` bytes in all and two exec
/// checks: its exec storage holds the env three times (the service's
/// and each check's envp), the compiled config once.
fn env_heavy(name: &str, bytes: usize) -> String {
    let val = "x".repeat(bytes / 4 - 8);
    let env: String = (0..4).map(|k| format!("      - E{k}={val}\n")).collect();
    format!(
        "  - name: {name}\n    binary: /bin/sleep\n    args: ['600']\n    env:\n{env}    \
         healthcheck:\n      readiness: {{type: exec, command: [/bin/true]}}\n      \
         liveness: {{type: exec, command: [/bin/true], interval: 60s}}\n"
    )
}

#[test]
fn reload_needing_more_exec_storage_than_the_arena_holds_is_rejected() {
    // 20 slots, one service: the arena's half is the one service's need
    // plus 4 KiB per slot plus 64 KiB (about 150 KiB).
    let extra = "  limits:\n    services: 20\n";
    let mut d = Daemon::start("rarena", extra, &sleeper("a"));
    wait_running(&d, "a");
    let before = status(&d);

    // 19 more services with 4 KiB of env each: 76 KiB compiled (the reload
    // buffer takes it), about 240 KiB of exec storage (the arena does not).
    let many: String = (0..19).map(|k| env_heavy(&format!("e{k}"), 4096)).collect();
    d.rewrite(extra, &[sleeper("a"), many].concat());
    let o = ctl(&d, &["reload"]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("exec storage"), "{o:?}");
    let log = d.wait_log("reload rejected:", SOON);
    assert!(
        log.lines()
            .any(|l| l.contains("reload rejected:") && l.contains("restart coffeyd")),
        "{log}"
    );
    assert_eq!(status(&d), before);

    // What fits still applies, and its services start.
    let few: String = (0..3).map(|k| env_heavy(&format!("e{k}"), 4096)).collect();
    d.rewrite(extra, &[sleeper("a"), few].concat());
    reload(&d);
    for k in 0..3 {
        wait_running(&d, &format!("e{k}"));
    }
    finish(d);
}

/// Each apply fills beside the running exec storage, then moves what it
/// did not rewrite and returns the old half's pages: services kept
/// through many reloads still start with their own command and env.
#[test]
fn services_kept_through_reloads_still_start_with_their_command() {
    let a = svc(
        "a",
        "echo a-ran $MARK; exec sleep 600",
        "    env: [MARK=kept-env]\n",
    );
    let b = env_heavy("b", 1024);
    let d = Daemon::start(
        "rmove",
        "  limits:\n    services: 4\n",
        &[a.clone(), b.clone()].concat(),
    );
    let mut pid = wait_running(&d, "a");
    wait_running(&d, "b");
    for round in 0..4 {
        // Add or remove c: a and b are unchanged and keep their storage.
        let c = if round % 2 == 0 {
            svc("c", &format!("echo c{round}; exec sleep 600"), "")
        } else {
            String::new()
        };
        d.rewrite(
            "  limits:\n    services: 4\n",
            &[a.clone(), b.clone(), c].concat(),
        );
        reload(&d);
        ok(ctl(&d, &["restart", "a", "b"]));
        pid = wait_new_pid(&d, "a", pid);
        wait_running(&d, "b");
        let o = ok(ctl(&d, &["status", "a"]));
        assert!(o.stdout.contains("echo a-ran $MARK"), "{o:?}");
        if round % 2 == 0 {
            wait_running(&d, "c");
        }
    }
    // Each run of a printed its kept env (the last one may still be
    // on its way into the ring).
    let deadline = std::time::Instant::now() + Duration::from_secs(SOON as u64);
    loop {
        let logs = ctl(&d, &["logs", "a", "--no-follow"]).stdout;
        if logs.matches("a-ran kept-env").count() >= 5 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{logs}");
        std::thread::sleep(Duration::from_millis(20));
    }
    finish(d);
}

/// `status -j NAME`'s health column.
fn health(d: &Daemon, name: &str) -> String {
    let v = json(&ok(ctl(d, &["-j", "status", name])).stdout);
    v["health"].as_str().unwrap_or("").to_string()
}

/// A startup check added to a running service by reload is updated in
/// place (same pid): it starts probing at once and gates the new
/// liveness check, which then runs and restarts the service when it fails.
#[test]
fn a_startup_check_added_by_reload_runs_then_liveness_takes_over() {
    let d = Daemon::start("rstartup", "", &sleeper("u"));
    let pid = wait_running(&d, "u");
    let (started, alive) = (d.dir.join("started"), d.dir.join("alive"));
    std::fs::write(&alive, "").unwrap();
    let checks = format!(
        "    healthcheck:\n      startup: {{type: exec, command: [/usr/bin/test, -e, {}], interval: 100ms, retries: 1000}}\n      liveness: {{type: exec, command: [/usr/bin/test, -e, {}], interval: 100ms, retries: 1}}\n",
        started.display(),
        alive.display()
    );
    d.rewrite("", &svc("u", "exec sleep 600", &checks));
    let o = reload(&d);
    assert_eq!(plan_of(&o), sorted(&["update u"]), "{o:?}");
    wait_for(SOON, "startup probing, liveness off", || {
        let h = health(&d, "u");
        (h.contains("startup:unhealthy") || h.contains("startup:unknown"))
            .then_some(())
            .filter(|()| h.contains("live:off"))
    });
    assert_eq!(status(&d)["u"].pid, Some(i64::from(pid)));
    std::fs::write(&started, "").unwrap();
    wait_for(SOON, "startup passed, liveness healthy", || {
        let h = health(&d, "u");
        (h.contains("startup:healthy") && h.contains("live:healthy")).then_some(())
    });
    std::fs::remove_file(&alive).unwrap();
    wait_for(SOON, "u restarted by liveness", || {
        (status(&d)["u"].restarts >= 1).then_some(())
    });
    // Healthy again: the next run passes startup, then liveness, and stays.
    std::fs::write(&alive, "").unwrap();
    let new = wait_new_pid(&d, "u", pid);
    wait_for(SOON, "the new run healthy", || {
        let h = health(&d, "u");
        (h.contains("startup:healthy") && h.contains("live:healthy")).then_some(())
    });
    assert_eq!(status(&d)["u"].pid, Some(i64::from(new)));
    finish(d);
}
