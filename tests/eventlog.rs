//! The persistent event log (`coffey.events`) end to end: the real daemon
//! appends every event as a JSON line, with the fields docs/CLI.md lists,
//! the lines are the bytes `events -j` printed for the same events, and
//! the file rotates by size keeping `keep` old files. Ends with no heap
//! allocation after startup.
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

fn events_cfg(max_size: &str, keep: u32) -> String {
    format!(
        "  events:\n    path: $DIR/ev/events.jsonl\n    max_size: {max_size}\n    keep: {keep}\n"
    )
}

fn lines_of(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Every documented field, with its type.
#[track_caller]
fn assert_schema(line: &str) {
    let v = json(line);
    let o = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {line}"));
    let keys: Vec<&str> = o.keys().map(String::as_str).collect();
    let mut want = vec!["ts_ms", "ts", "service", "event", "state", "pid", "detail"];
    want.sort_unstable();
    let mut got = keys.clone();
    got.sort_unstable();
    assert_eq!(got, want, "{line}");
    assert!(v["ts_ms"].as_u64().unwrap() > 1_700_000_000_000, "{line}");
    assert!(v["ts"].as_str().unwrap().ends_with('Z'), "{line}");
    assert!(v["service"].is_string() && v["event"].is_string() && v["state"].is_string());
    assert!(
        v["pid"].is_null() || v["pid"].as_i64().unwrap() > 0,
        "{line}"
    );
    assert!(v["detail"].is_string(), "{line}");
}

#[test]
fn the_event_log_holds_what_events_j_printed_byte_for_byte() {
    let d = Daemon::start(
        "evlog",
        &events_cfg("1MiB", 2),
        &svc("a", "exec sleep 600", "    stop_timeout: 2s\n"),
    );
    wait_state(&d, "a", "running", 30.0);
    let file = d.dir.join("ev/events.jsonl");
    // Events before any reader are in the file already.
    let early = lines_of(&file);
    assert!(
        early
            .iter()
            .any(|l| l.contains("\"service\":\"a\"") && l.contains("\"event\":\"spawned\"")),
        "{early:#?}"
    );
    let mut f = Follower::spawn(&d, &["-j", "events"]);
    // Subscribed once a restart's events reach it.
    wait_row(
        &d,
        "the follower subscribed",
        30.0,
        || {
            ok(ctl(&d, &["restart", "a"]));
            let seen = f.try_line(2.0, |l| l.contains("\"event\":\"spawned\""));
            serde_json::json!(seen.is_some())
        },
        |v| v == true,
    );
    for _ in 0..3 {
        ok(ctl(&d, &["restart", "a"]));
    }
    let n = f.seen.len();
    // Counts the spawned events over the lines seen, then the new ones.
    let spawned = std::cell::Cell::new(0);
    f.wait_line(30.0, "the fourth spawned", |l| {
        if l.contains("\"event\":\"spawned\"") {
            spawned.set(spawned.get() + 1);
        }
        spawned.get() >= 4
    });
    assert!(f.seen.len() > n);
    let printed = f.seen.clone();
    drop(f);
    let logged = lines_of(&file);
    for l in &logged {
        assert_schema(l);
    }
    let start = logged
        .iter()
        .position(|l| *l == printed[0])
        .unwrap_or_else(|| panic!("{:?} not in the file:\n{logged:#?}", printed[0]));
    assert_eq!(
        &logged[start..start + printed.len()],
        &printed[..],
        "the file and events -j differ"
    );
    finish(d);
}

#[test]
fn the_event_log_rotates_by_size_keeping_keep_files() {
    // A crash loop writes events fast, with no reader at all.
    let d = Daemon::start(
        "evrot",
        &events_cfg("4KiB", 2),
        &svc(
            "crash",
            "exit 7",
            "    restart: always\n    degraded_after: 0\n    backoff:\n      initial: 1ms\n      max: 5ms\n",
        ),
    );
    let dir = d.dir.join("ev");
    let gen = |k: u32| {
        if k == 0 {
            dir.join("events.jsonl")
        } else {
            dir.join(format!("events.jsonl.{k}"))
        }
    };
    // Two full rotations past `keep`: .2 has been replaced at least once.
    wait_for(60.0, "three rotations", || {
        let mut lines = 0;
        for k in 0..=2 {
            lines += lines_of(&gen(k)).len();
        }
        (gen(2).exists() && lines > 3 * 4096 / 160).then_some(())
    });
    let first_of_2 = lines_of(&gen(2)).first().cloned().unwrap();
    wait_for(60.0, ".2 replaced by a later generation", || {
        (lines_of(&gen(2)).first() != Some(&first_of_2)).then_some(())
    });
    ok(ctl(&d, &["stop", "crash"]));
    assert!(!gen(3).exists(), "keep: 2 kept a third file");
    let mut total = 0;
    for k in 0..=2 {
        let len = std::fs::metadata(gen(k)).map_or(0, |m| m.len());
        assert!(len <= 4096, "generation {k} is {len} bytes");
        for l in lines_of(&gen(k)) {
            assert_schema(&l);
            total += 1;
        }
    }
    // Oldest first: timestamps never go back across the generations.
    let stamps: Vec<u64> = (0..=2)
        .rev()
        .flat_map(|k| lines_of(&gen(k)))
        .map(|l| json(&l)["ts_ms"].as_u64().unwrap())
        .collect();
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "out of order");
    assert!(total > 30, "{total}");
    finish(d);
}
