#!/usr/bin/env bash
# Spawn cost against the daemon's size (issue 10, "Spawn cost grows with
# N"). For each N in $NS (default "10 1000"): N idle services
# (/bin/sleep 3600), plus one crash-looping service (/bin/true, restart
# always, backoff 0s). Once the idle ones run, it counts the crash-looper's
# restarts (`status crash -j`) over $SECS seconds (default 5) and prints
# restarts/s, wall µs per restart cycle (exit -> reap -> spawn -> exec ->
# exit) and the daemon's own CPU µs per restart (utime+stime from
# /proc/PID/stat; a fork's page-table copy is charged to the daemon, the
# child's exec to the child). The wall figure also holds everything else a
# restart costs that grows with N (each reap's /proc scan for escapees,
# the supervisor's propagation), so the fork's share shows best in the
# CPU figure and as the difference between two binaries.
# FDS=1 gives the crash-looper an `fds:` pipe entry on fd 3 (what a
# socket-activated service's restart costs on top).
# BIN=PATH measures that binary instead of building this tree (to compare
# two commits in one run). Not a test: it prints figures.
set -euo pipefail
cd "$(dirname "$0")/.."
NS=${NS:-"10 1000"}
SECS=${SECS:-5}

if [ -n "${BIN:-}" ]; then
  bin=$BIN
else
  cargo build --release -q
  bin=$PWD/target/release/coffeyd
fi
echo "binary: $bin"

dir=$(mktemp -d /tmp/coffey-sbench.XXXXXX)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

config() { # N
  {
    echo "coffey:"
    echo "  socket: $dir/s.sock"
    echo "  log: {path: $dir/coffey.log, console: false}"
    echo "  limits: {services: $(($1 + 9)), clients: 16}"
    local fds=
    if [ -n "${FDS:-}" ]; then
      echo "fds: {p: {pipe: {}}}"
      fds=", fds: {3: p.read}"
    fi
    echo "services:"
    echo "  - {name: crash, binary: /bin/true, restart: always, backoff: {initial: 0s, max: 0s}$fds}"
    for i in $(seq 1 "$1"); do
      echo "  - {name: s$i, binary: /bin/sleep, args: ['3600']}"
    done
  } > "$dir/config.yaml"
}

restarts() {
  "$bin" -s "$dir/s.sock" status crash -j | sed -n 's/.*"restarts": *\([0-9]*\).*/\1/p'
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
us() { echo $(( $(date +%s%N) / 1000 )); }

for n in $NS; do
  config "$n"
  rm -f "$dir/coffey.log"
  "$bin" -c "$dir/config.yaml" & pid=$!
  for _ in $(seq 1 3000); do
    up=$(grep -c ': spawned' "$dir/coffey.log" 2>/dev/null || true)
    [ "${up:-0}" -ge "$n" ] && [ -S "$dir/s.sock" ] && break
    sleep 0.01
  done
  sleep 1 # let startup settle
  r0=$(restarts) c0=$(cpu_ticks) t0=$(us)
  sleep "$SECS"
  r1=$(restarts) c1=$(cpu_ticks) t1=$(us)
  hz=$(getconf CLK_TCK)
  d=$((r1 - r0))
  [ "$d" -gt 0 ] || d=1
  printf 'N=%-5d restarts %6d in %d s: %6d/s; %5d us wall and %4d us daemon CPU per restart\n' \
    "$n" $((r1 - r0)) "$SECS" $(( (r1 - r0) * 1000000 / (t1 - t0) )) \
    $(( (t1 - t0) / d )) $(( (c1 - c0) * 1000000 / hz / d ))
  kill -TERM "$pid"
  wait "$pid" || true
  pid=
  echo "        $(grep -o 'heap allocations after startup: [0-9]*' "$dir/coffey.log" | tail -1)"
done
