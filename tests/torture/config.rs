//! Case 10: hostile configs. Deep nesting, 10,000 services, huge strings,
//! an alias bomb, and every key with a value of the wrong type. `validate`
//! and a starting daemon refuse each cleanly (exit 1 with a diagnostic,
//! within a deadline, no panic) or run it; a running daemon asked to
//! reload each keeps its config and stays served.

use crate::common::*;
use crate::*;
use std::path::Path;
use std::time::Instant;

/// (what, services body or whole-file text, whole file?).
fn hostile_configs() -> Vec<(String, String, bool)> {
    let mut v = Vec::new();
    let depth = 100_000;
    v.push((
        "deep flow nesting".into(),
        format!(
            "  - name: deep\n    binary: /bin/true\n    args: {}{}\n",
            "[".repeat(depth),
            "]".repeat(depth)
        ),
        false,
    ));
    v.push((
        "deep mapping nesting".into(),
        format!(
            "  - name: deep\n    binary: /bin/true\n    healthcheck: {}{}\n",
            "{a: ".repeat(depth),
            "}".repeat(depth)
        ),
        false,
    ));
    let mut many = String::new();
    for i in 0..10_000 {
        many += &format!("  - name: s{i}\n    binary: /bin/true\n");
    }
    v.push(("10,000 services".into(), many, false));
    let huge = "x".repeat(16 << 20);
    v.push((
        "a 16 MiB name".into(),
        format!("  - name: {huge}\n    binary: /bin/true\n"),
        false,
    ));
    v.push((
        "a 16 MiB arg".into(),
        format!("  - name: big\n    binary: /bin/true\n    args: ['{huge}']\n"),
        false,
    ));
    v.push((
        "a 16 MiB env".into(),
        format!("  - name: big\n    binary: /bin/true\n    env: ['A={huge}']\n"),
        false,
    ));
    v.push((
        "a 16 MiB key".into(),
        format!("  - name: big\n    binary: /bin/true\n    {huge}: 1\n"),
        false,
    ));
    // Billion laughs: nine levels of ten aliases.
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = i - 1;
        bomb += &format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        );
    }
    bomb += "services:\n  - name: bomb\n    binary: /bin/true\n    args: *a9\n";
    v.push(("alias bomb".into(), bomb, true));
    // Every service key with values of each wrong type.
    let keys = [
        "name",
        "binary",
        "args",
        "env",
        "working_dir",
        "user",
        "group",
        "umask",
        "type",
        "restart",
        "backoff",
        "max_restarts",
        "stop_signal",
        "stop_timeout",
        "depends_on",
        "log",
        "healthcheck",
        "start_timeout",
    ];
    let wrong = [
        "[1, 2]",
        "{a: b}",
        "-1",
        "1e999",
        "true",
        "~",
        "''",
        "\"\\0\"",
        "18446744073709551616",
        "!!binary AAAA",
    ];
    for k in keys {
        for w in wrong {
            let body = if k == "name" {
                format!("  - name: {w}\n    binary: /bin/true\n")
            } else if k == "binary" {
                format!("  - name: w\n    binary: {w}\n")
            } else {
                format!("  - name: w\n    binary: /bin/true\n    {k}: {w}\n")
            };
            v.push((format!("{k}: {w}"), body, false));
        }
    }
    for (k, w) in [
        ("coffey", "[1]"),
        ("services", "{a: 1}"),
        ("services", "7"),
        ("limits", "{services: -5}"),
        ("limits", "{services: 99999999999}"),
        ("limits", "{clients: 0}"),
    ] {
        v.push((format!("{k}: {w}"), format!("{k}: {w}\n"), true));
    }
    v
}

/// `validate -c FILE`: exit 0 or 1 within 60 s, a diagnostic with 1, no
/// panic. Returns (exit code, ms).
fn validate(what: &str, file: &Path) -> (i32, u128) {
    let t0 = Instant::now();
    let o = cli_with(&["validate", "-c", file.to_str().unwrap()], 60.0, |_| {});
    let ms = t0.elapsed().as_millis();
    assert!(
        o.code == 0 || o.code == 1,
        "validate {what}: exit {} {}",
        o.code,
        &o.stderr[..o.stderr.len().min(2000)]
    );
    assert!(
        !o.stderr.contains("panicked"),
        "validate {what}: {}",
        &o.stderr[..o.stderr.len().min(2000)]
    );
    if o.code == 1 {
        assert!(
            !(o.stdout.clone() + &o.stderr).trim().is_empty(),
            "validate {what}: refused without a diagnostic"
        );
    }
    (o.code, ms)
}

#[test]
#[ignore = "torture: run with just torture"]
fn hostile_config() {
    let good = svc(
        "steady",
        "exec sleep 600",
        "    log:\n      console: false\n",
    );
    let mut t = Torture::start("hostile_config", "", &good);
    // The reload's compile child parses, not the daemon: its RSS must not
    // move by more than the compiled buffers.
    t.rss_bound_kib = 512;
    let mut steady = row(&t.d, "steady")["pid"].as_i64().unwrap();
    let scratch = tempdir("t-hostile");
    let mut slowest = (String::new(), 0u128);
    let cases = hostile_configs();
    let mut refused = 0;
    for (i, (what, body, whole)) in cases.iter().enumerate() {
        // validate, offline.
        let file = scratch.join(format!("h{i}.yaml"));
        let text = if *whole {
            body.clone()
        } else {
            config_text(&scratch, "", body)
        };
        std::fs::write(&file, &text).unwrap();
        let (code, ms) = validate(what, &file);
        if ms > slowest.1 {
            slowest = (what.clone(), ms);
        }
        // The same text as the running daemon's config, reloaded.
        let text = if *whole {
            body.clone()
        } else {
            t.d.config_text("", body)
        };
        std::fs::write(&t.d.config, &text).unwrap();
        let o = ctl_within(&t.d, &["reload"], 60.0);
        assert!(
            o.code == code || (code == 0 && o.code == 1),
            "reload {what}: exit {} but validate said {code}: {}",
            o.code,
            &o.stderr[..o.stderr.len().min(500)]
        );
        assert!(
            t.operator(OPERATOR_DEADLINE).is_ok(),
            "after reload of {what}"
        );
        if o.code != 0 {
            // Refused: the running config is kept, untouched.
            refused += 1;
            let now = row(&t.d, "steady")["pid"].as_i64().unwrap();
            assert_eq!(now, steady, "refused reload of {what} restarted steady");
            continue;
        }
        // Accepted (valid, if odd): back to the good config.
        t.d.rewrite("", &good);
        ok(ctl_within(&t.d, &["reload"], 60.0));
        steady = wait_state(&t.d, "steady", "running", 30.0)["pid"]
            .as_i64()
            .unwrap();
    }
    t.figure("configs", cases.len());
    t.figure("refused", refused);
    t.figure(
        "validate_slowest",
        format!("{} ms ({})", slowest.1, slowest.0),
    );
    // The daemon refuses the worst ones at startup, too.
    for (what, body, whole) in cases
        .iter()
        .filter(|c| c.0.contains("10,000") || c.0.contains("deep") || c.0.contains("bomb"))
    {
        let dir = tempdir("t-hostile-start");
        let file = dir.join("config.yaml");
        let text = if *whole {
            body.clone()
        } else {
            config_text(&dir, "", body)
        };
        std::fs::write(&file, text).unwrap();
        let t0 = Instant::now();
        let o = cli_with(&["-c", file.to_str().unwrap()], 60.0, |c| {
            c.env("CFY_TORTURE", &t.tag);
        });
        assert_eq!(
            o.code,
            1,
            "daemon on {what}: {}",
            &o.stderr[..o.stderr.len().min(1000)]
        );
        assert!(!o.stderr.contains("panicked"), "daemon on {what}");
        println!(
            "FIGURE hostile_config daemon_refuses {what:?} in {} ms",
            t0.elapsed().as_millis()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    t.finish();
}
