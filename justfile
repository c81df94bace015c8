# coffeyd tasks. `pip install rust-just` gives you `just` in a second.

targets := "x86_64-unknown-linux-musl aarch64-unknown-linux-musl"

default: test

# Static musl binaries for x86_64 and aarch64, linked with rust-lld
# (see .cargo/config.toml).
build:
    rustup target add {{targets}}
    for t in {{targets}}; do cargo build --release --target $t; done
    @for t in {{targets}}; do ls -l target/$t/release/coffeyd; done

# The whole test suite (what CI runs).
test:
    cargo test

lint:
    cargo fmt --check
    cargo clippy --all-targets -- -D warnings

# Run the daemon; extra args are forwarded, e.g. `just run -c examples/demo.yaml`.
run *ARGS:
    cargo run --release -- {{ARGS}}

clean:
    cargo clean
    cd fuzz && cargo clean

# Fuzz every target for SECS seconds each: config loader, protocol codec
# and connection machine, service/supervisor machines (needs nightly).
fuzz SECS="60":
    command -v cargo-fuzz >/dev/null || cargo +nightly install cargo-fuzz
    cd fuzz && for t in config proto service http; do cargo +nightly fuzz run $t -- -max_total_time={{SECS}}; done

# Footprint: static binary size and daemon RSS with 10 services.
bench:
    bash bench/footprint.sh
