#!/usr/bin/env bash
# Runs every fuzz target for SECS seconds (default 30), starting from the
# committed seeds in fuzz/corpus/<target>/ (copied to a scratch corpus under
# fuzz/target, so the repo's corpus stays the seeds). A crash fails the run:
# its input is in fuzz/artifacts/<target>/ and becomes a regression test
# (docs/RELIABILITY.md). Needs nightly and cargo-fuzz.
set -euo pipefail
secs=${1:-30}
cd "$(dirname "$0")"
command -v cargo-fuzz >/dev/null || cargo +nightly install cargo-fuzz --locked
for t in config proto service http; do
    work=target/corpus-$t
    mkdir -p "$work"
    if [ -d "corpus/$t" ]; then cp -n corpus/$t/* "$work"/ 2>/dev/null || true; fi
    log=target/fuzz-$t.log
    if ! cargo +nightly fuzz run "$t" "$work" -- -max_total_time="$secs" >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz target $t failed: its input is in fuzz/artifacts/$t/" >&2
        exit 1
    fi
    echo "fuzz $t: $(grep -E '^Done [0-9]+ runs' "$log" || tail -n 1 "$log")"
done
