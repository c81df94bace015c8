# coffeyd tasks. `pip install rust-just` gives you `just` in a second.

targets := "x86_64-unknown-linux-musl aarch64-unknown-linux-musl"

default: test

# Static musl binaries for x86_64 and aarch64 in target/dist/, stripped,
# linked with rust-lld (see .cargo/config.toml). The release artifacts use
# nightly to rebuild std for size (min-sized-rust): no unwinder, no
# backtrace symbolizer, a non-PIE static link,
# std's optimize_for_size, LLVM's machine outliner and lld's identical
# code folding (each step measured in bench/RESULTS.md), and a link order
# that puts the daemon's code first (.cargo/ordered-lld).
# -Zfmt-debug=none is left out: serde's messages quote values with {:?}.
# Plain `cargo build` stays on stable. BUILD_TARGETS narrows the list.
nightly_flags := "-Zunstable-options -Cpanic=immediate-abort -Cforce-unwind-tables=no -Crelocation-model=static -Cllvm-args=-enable-machine-outliner=always -Clink-arg=--icf=all -Clinker-flavor=ld.lld"
build:
    rustup toolchain install nightly --profile minimal
    rustup component add rust-src --toolchain nightly
    rustup target add --toolchain nightly {{targets}}
    mkdir -p target/dist
    for t in ${BUILD_TARGETS:-{{targets}}}; do \
        RUSTFLAGS="{{nightly_flags}} -Clinker=$PWD/.cargo/ordered-lld" cargo +nightly build --release --target $t \
            -Zbuild-std=std,panic_abort -Zbuild-std-features=optimize_for_size --target-dir target/nightly && \
        cp target/nightly/$t/release/coffeyd target/dist/coffeyd-${t%%-*} || exit 1; \
    done
    @ls -l target/dist/

# The whole test suite (what CI runs).
test:
    cargo test

# tests/vm/run.sh installs qemu and cpio if missing, caches a Debian kernel
# and busybox in target/vm-cache/, and checks target/vm/serial.log.
# Boot a real kernel in qemu with coffeyd as PID 1 (about 10 s, no KVM).
test-vm:
    cargo test --test vm -- --ignored --nocapture

lint:
    cargo fmt --check
    cargo clippy --all-targets -- -D warnings

# Run the daemon; extra args are forwarded, e.g. `just run -c examples/demo.yaml`.
run *ARGS:
    cargo run --release -- {{ARGS}}

clean:
    cargo clean
    cd fuzz && cargo clean

# The torture suite (tests/torture/, docs/RELIABILITY.md): the real daemon
# under crash, log, connection, fd, process, signal, reload, disk and config
# storms. FORM=full (minutes, the figures in RELIABILITY.md) or short (about
# 10 s a case, what CI runs). Needs root (tmpfs, a dedicated uid). Prints
# `FIGURE case key=value` lines.
torture FORM="full":
    TORTURE={{FORM}} cargo test --release --test torture -- --ignored --test-threads=1 --nocapture

# Fuzz every target for SECS seconds each: config loader, protocol codec
# and connection machine, service/supervisor machines (needs nightly).
fuzz SECS="60":
    bash fuzz/run.sh {{SECS}}

# coffeyd side by side with nitro, s6, runit, daemontools, tini and
# dumb-init (bench/compare.sh, writes bench/results/<date>.md; RUNS=5 for
# more runs, NITRO_BIN/NITROCTL_BIN/DAEMONPROXY_BIN to add those), then
# footprint (binary size, RSS with 10 services), then health-check load (50 services probed every 1 s for SECS s),
# then the longest loop turn during reloads of 1,000 services, then the
# spawn cost next to 10 and 1,000 idle services, then the code layout.
bench SECS="60":
    bash bench/compare.sh
    bash bench/footprint.sh
    SECS={{SECS}} bash bench/health.sh
    bash bench/reload.sh
    bash bench/spawn.sh
    bash bench/layout.sh
