#!/usr/bin/env bash
# Start-up of N services (default 1,000), timed as bench/compare.sh does
# (launch to the latest first line of bench/svc.c `mark`), ROUNDS times,
# interleaved with the floor (bench/floor.c: posix_spawn in a loop, no
# supervisor), so both see the same machine load. For coffeyd also its
# own CPU and run-queue wait until then (/proc/PID/schedstat). Not a test.
# COFFEYD_BIN as in compare.sh; files on BENCH_DIR (default /dev/shm).
set -uo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000}
ROUNDS=${ROUNDS:-5}
B=$(realpath "${COFFEYD_BIN:-target/dist/coffeyd-x86_64}")
work=$(mktemp -d "${BENCH_DIR:-/dev/shm}/coffey-start.XXXXXX")
trap 'rm -rf "$work"' EXIT
cc -O2 -static -o "$work/svc" bench/svc.c 2>/dev/null || cc -O2 -o "$work/svc" bench/svc.c || exit 1
cc -O2 -o "$work/floor" bench/floor.c || exit 1
now_us() { local t=$EPOCHREALTIME; echo "${t/./}"; }
# wait_marks DIR T0: the start-up in ms, once all N marks are in (30 s max).
wait_marks() {
  local c end=$(($2 + 30000000))
  while c=$(grep -c '^m ' "$1/out" 2>/dev/null); [ "${c:-0}" -lt "$N" ] && [ "$(now_us)" -lt $end ]; do
    sleep 0.01
  done
  awk -v t0="$2" '$1 == "m" {if ($2 > m) m = $2} END {printf "%.0f", (m / 1000 - t0) / 1000}' "$1/out"
}
coffeyd() {
  local d=$work/c$1 i t0 ms a b p
  mkdir -p "$d"
  {
    echo "coffey:"
    echo "  socket: $d/s.sock"
    echo "  log: {path: $d/coffey.log, console: false}"
    echo "services:"
    for ((i = 1; i <= N; i++)); do
      echo "  - {name: s$i, binary: $work/svc, args: [mark, $d/out], restart: always, backoff: {initial: 0s, max: 0s}}"
    done
  } >"$d/config.yaml"
  t0=$(now_us)
  (cd "$d" && exec "$B" -c "$d/config.yaml") >"$d/stdout" 2>&1 &
  p=$!
  ms=$(wait_marks "$d" "$t0")
  read -r a b _ <"/proc/$p/schedstat"
  kill -TERM $p
  wait $p
  echo "coffeyd start_ms $ms daemon_cpu_ms $((a / 1000000)) daemon_wait_ms $((b / 1000000))"
}
floor() {
  local d=$work/f$1 t0 ms p
  mkdir -p "$d"
  t0=$(now_us)
  (cd "$d" && exec "$work/floor" "$work/svc" "$N" "$d/out") &
  p=$!
  ms=$(wait_marks "$d" "$t0")
  pkill -KILL -P $p
  kill $p
  wait $p 2>/dev/null
  echo "floor   start_ms $ms"
}
echo "N=$N, $B, load $(cut -d' ' -f1-3 /proc/loadavg)"
for ((r = 1; r <= ROUNDS; r++)); do coffeyd "$r"; floor "$r"; done
echo "load at the end $(cut -d' ' -f1-3 /proc/loadavg)"
