//! Docs that must stay true (issue 8, point 14), checked against the code
//! so that a new option or event cannot be left out of docs/CLI.md again.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_macros,
    clippy::disallowed_methods
)]

use coffey::control::proto::event;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_coffeyd");

fn doc(name: &str) -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/").to_string() + name)
        .unwrap()
}

/// The options table of docs/CLI.md (the `### Options` section).
fn options_table() -> String {
    let cli = doc("CLI.md");
    let start = cli.find("### Options").expect("CLI.md has ### Options");
    let rest = &cli[start..];
    let end = rest[4..].find("\n#").map_or(rest.len(), |e| e + 4);
    rest[..end].to_string()
}

#[test]
fn every_option_in_help_is_in_the_cli_md_options_table() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    let table = options_table();
    let opts: Vec<&str> = help
        .split_whitespace()
        .map(|w| w.trim_end_matches(','))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .collect();
    assert!(opts.contains(&"--json"), "help lists options: {help}");
    for o in opts {
        assert!(
            table.contains(&format!("`{o}")),
            "{o} is in --help but not in the options table of docs/CLI.md"
        );
    }
}

#[test]
fn every_event_name_is_in_cli_md() {
    let cli = doc("CLI.md");
    let at = cli
        .find("EVENT is one of")
        .expect("CLI.md lists event names");
    let list = &cli[at..at + cli[at..].find("\n\n").unwrap()];
    let mut n = 0;
    for k in 1..=u8::MAX {
        let name = event::name(k);
        if name == "unknown" {
            continue;
        }
        n += 1;
        assert!(
            list.split(|c: char| c.is_whitespace() || c == '`' || c == '.')
                .any(|w| w == name),
            "event {name:?} (tag {k}) is missing from CLI.md's list: {list}"
        );
    }
    assert!(n >= 14, "only {n} event names found");
}

mod common;

/// README: a failing readiness check shows `ready:unknown (ERROR)` until
/// `retries` consecutive failures, then `ready:unhealthy (ERROR)`, as
/// Docker's `starting` turns `unhealthy`.
#[test]
fn readme_health_column_matches_status() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let flat = readme.split_whitespace().collect::<Vec<_>>().join(" ");
    for want in [
        "ready:unknown (connect: Connection refused)",
        "ready:unhealthy (connect: Connection refused)",
    ] {
        assert!(flat.contains(want), "README lacks {want:?}");
    }
    let port = common::free_port();
    let check = format!(
        "    healthcheck:\n      readiness:\n        type: tcp\n        address: 127.0.0.1:{port}\n        interval: 1s\n        retries: 2\n"
    );
    let mut d = common::Daemon::start("readme", "", &common::svc("api", "exec sleep 600", &check));
    for want in [
        "ready:unknown (connect: Connection refused)",
        "ready:unhealthy (connect: Connection refused)",
    ] {
        common::wait_for(10.0, want, || {
            let o = common::ctl(&d, &["status"]);
            o.stdout.contains(want).then_some(())
        });
    }
    assert_eq!(d.stop(30.0), 0);
}
