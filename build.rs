//! Build metadata for `coffeyd version` and the daemon's Version reply:
//! `COFFEY_COMMIT` (short git commit, or "unknown" outside a checkout or
//! without git), `COFFEY_TARGET` (target triple) and `COFFEY_PROFILE`
//! (cargo profile: debug or release). Runs only at build time.
#![allow(clippy::disallowed_methods, clippy::disallowed_macros)]

use std::path::Path;
use std::process::Command;

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(&dir)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=COFFEY_COMMIT={commit}");
    println!("cargo:rustc-env=COFFEY_TARGET={target}");
    println!("cargo:rustc-env=COFFEY_PROFILE={profile}");

    // Rebuild when the checked-out commit moves, not on every source edit.
    println!("cargo:rerun-if-changed=build.rs");
    let git = Path::new(&dir).join(".git");
    for p in ["HEAD", "refs", "packed-refs"] {
        let p = git.join(p);
        if p.exists() {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    }
}
