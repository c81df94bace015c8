//! Real-kernel boot test (issue 5): `tests/vm/run.sh` boots a Debian kernel
//! in qemu with coffeyd as /init and checks the serial log. It downloads a
//! kernel and takes tens of seconds, so it is `#[ignore]`d: plain
//! `cargo test` lists it as ignored, and `just test-vm` and CI run it with
//! `cargo test --test vm -- --ignored`.
#![allow(clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::path::Path;
use std::process::Command;

#[test]
#[ignore = "boots a kernel in qemu (downloads it, ~1 min): just test-vm, or cargo test --test vm -- --ignored"]
fn boots_as_pid1_in_qemu() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new("bash")
        .arg(root.join("tests/vm/run.sh"))
        .current_dir(root)
        .status()
        .expect("run bash tests/vm/run.sh");
    assert!(status.success(), "tests/vm/run.sh failed: {status}");
}
