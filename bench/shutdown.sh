#!/usr/bin/env bash
# Shutdown of a dependency chain through the real daemon: N `sleep`
# services, each depending on the one before (s2 needs s1, ...), so the
# ordered shutdown stops them one at a time, last first: N sequential
# stop -> exit -> reap -> propagate rounds. Prints the time from SIGTERM
# to the daemon's exit, min/median/max over RUNS runs, for N in NS.
# The machine alone (no processes): `cargo bench --bench chain`.
# Issue 10's target: a 1,000-service chain in <= 20 ms of propagation.
set -euo pipefail
cd "$(dirname "$0")/.."
NS=${NS:-"250 1000"}
RUNS=${RUNS:-3}
cargo build --release -q
bin=$PWD/target/release/coffeyd
dir=$(mktemp -d "${BENCH_DIR:-/dev/shm}/coffey-shut.XXXXXX")
pid=
cleanup() {
  [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

config() { # N
  {
    echo "coffey:"
    echo "  socket: $dir/s.sock"
    echo "  log: {path: $dir/coffey.log, console: false}"
    echo "services:"
    echo "  - {name: s1, binary: /bin/sleep, args: ['3600']}"
    for i in $(seq 2 "$1"); do
      echo "  - {name: s$i, binary: /bin/sleep, args: ['3600'], depends_on: [s$((i - 1))]}"
    done
  } > "$dir/config.yaml"
}

one() { # N: prints ms from SIGTERM to exit
  rm -f "$dir/coffey.log"
  "$bin" -c "$dir/config.yaml" 2>/dev/null & pid=$!
  for _ in $(seq 1 6000); do
    n=$(grep -c ': spawned' "$dir/coffey.log" 2>/dev/null || true)
    [ "${n:-0}" -ge "$1" ] && break
    sleep 0.01
  done
  local t0 t1
  t0=$(date +%s%N)
  kill -TERM "$pid"
  wait "$pid" || true
  t1=$(date +%s%N)
  pid=
  echo $(((t1 - t0) / 1000000))
}

for n in $NS; do
  config "$n"
  ms=$(for _ in $(seq 1 "$RUNS"); do one "$n"; done | sort -n | tr '\n' ' ')
  set -- $ms
  echo "chain of $n: shutdown min/median/max ms: $1 / ${@:$(( ($# + 1) / 2 )):1} / ${@: -1}"
done
