#!/usr/bin/env bash
# Code layout of the `just build` artifacts (.cargo/ordered-lld): from
# each target's link map, the bytes of .text placed for the daemon
# (first) and for the compile child and clients only (after), and how
# many 64 KiB fault-around windows the daemon's part spans. Then the
# daemon's private code pages with 10 idle services after a `status`
# and a `restart` (x86_64 only: the host runs it; BIN= for another
# binary). Not a test: it prints figures. Run `just build` first.
set -euo pipefail
cd "$(dirname "$0")/.."
for t in target/nightly/*-unknown-linux-musl; do
  # The newest link's map (older build directories may linger).
  map=$(ls -t "$t"/release/build/coffeyd/*/out/coffeyd.map 2>/dev/null | head -1)
  [ -n "$map" ] || continue
  order=${map%.map}.order
  awk -v order="$order" '
    function hex(s,  i, v) {
      v = 0
      for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
      return v
    }
    BEGIN { while ((getline s < order) > 0) listed[s] = 1 }
    /:\(\.text[.)]/ {
      match($0, /:\(\.text[^)]*\)$/)
      name = substr($0, RSTART + 8, RLENGTH - 9)
      sub(/^(unlikely|startup|hot)\./, "", name)
      a = hex($1); n = hex($3)
      if (name in listed || name == "") { hot += n; if (a + n > hot_end) hot_end = a + n; if (!lo || a < lo) lo = a }
      else cold += n
    }
    END {
      split(FILENAME, p, "/")
      printf "%s: daemon code %d B (%.1f windows of 64 KiB), compile-child and client code %d B\n",
        p[3], hot, (hot_end - lo) / 65536, cold
    }' "$map"
done
bin=${BIN:-target/dist/coffeyd-x86_64}
[ -x "$bin" ] || { echo "no $bin: run just build"; exit 1; }
dir=$(mktemp -d "${BENCH_DIR:-/dev/shm}/coffey-layout.XXXXXX")
pid=
cleanup() {
  [ -n "$pid" ] && { kill -KILL "$pid"; wait "$pid" || true; } 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT
{
  echo "coffey:"
  echo "  socket: $dir/s.sock"
  echo "  log: {path: $dir/coffey.log, console: false}"
  echo "services:"
  for i in $(seq 1 10); do echo "  - {name: s$i, binary: /bin/sleep, args: ['3600']}"; done
} > "$dir/config.yaml"
"$bin" -c "$dir/config.yaml" & pid=$!
for _ in $(seq 1 500); do
  c=$(grep -c ': spawned' "$dir/coffey.log" 2>/dev/null || true)
  [ "${c:-0}" -ge 10 ] && break
  sleep 0.01
done
"$bin" status -s "$dir/s.sock" > /dev/null
"$bin" restart -s "$dir/s.sock" s3 > /dev/null
awk -v bin="$bin" '/^[0-9a-f]/ { cur = ($2 ~ /x/ && $6 ~ bin) } cur && /^Private_(Clean|Dirty)/ { s += $2 }
  END { printf "daemon with 10 services, after status and restart: %d kB of code mapped\n", s }' "/proc/$pid/smaps"
awk '/^Private_(Clean|Dirty)/ { s += $2 } END { printf "USS: %d kB\n", s }' "/proc/$pid/smaps_rollup"
