#!/usr/bin/env bash
# Memory benchmark: the daemon's USS (Private_Clean + Private_Dirty from
# /proc/PID/smaps_rollup) while it supervises N idle services, for each N
# given (default 10 100 1000), and the per-service slope. With -v, the
# private memory of each mapping too. Not a test: it prints figures.
# BIN overrides the binary (default: the static musl release build).
set -euo pipefail
cd "$(dirname "$0")/.."
verbose=0
[ "${1:-}" = -v ] && { verbose=1; shift; }
ns=("${@:-10 100 1000}")
ns=(${ns[*]})
target=x86_64-unknown-linux-musl
if [ -z "${BIN:-}" ]; then
  cargo build --release --target "$target" -q
  BIN=target/$target/release/coffeyd
fi
uss_of() { awk '/^Private_(Clean|Dirty)/ {s += $2} END {print s}' "/proc/$1/smaps_rollup"; }
prev_n=; prev_u=
for n in "${ns[@]}"; do
  dir=$(mktemp -d /tmp/coffey-mem.XXXXXX)
  {
    echo "coffey:"
    echo "  socket: $dir/s.sock"
    echo "  log: {path: $dir/coffey.log, console: false}"
    echo "  limits: {services: $n}"
    echo "services:"
    for i in $(seq 1 "$n"); do
      echo "  - {name: s$i, binary: /bin/sleep, args: ['3600']}"
    done
  } > "$dir/config.yaml"
  "$BIN" -c "$dir/config.yaml" & pid=$!
  for _ in $(seq 1 3000); do
    c=$(grep -c ': spawned' "$dir/coffey.log" 2>/dev/null || true)
    [ "${c:-0}" -ge "$n" ] && break
    sleep 0.01
  done
  sleep 0.2
  u=$(uss_of $pid)
  rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
  line="N=$n: USS $u kB, RSS $rss kB"
  if [ -n "$prev_n" ]; then
    line="$line, slope $(awk -v a="$prev_u" -v b="$u" -v x="$prev_n" -v y="$n" 'BEGIN {printf "%.2f", (b - a) / (y - x)}') kB/service"
  fi
  echo "$line"
  if [ $verbose = 1 ]; then
    awk '/^[0-9a-f]/{name=$6 " " $1; if ($6=="") name="[anon] " $1} /^Private_(Clean|Dirty)/{p[name]+=$2} END {for (k in p) if (p[k] > 0) print "    " p[k], k}' /proc/$pid/smaps | sort -rn | head -8
  fi
  kill -TERM $pid; wait $pid || true
  grep -o 'heap allocations after startup: [0-9]*' "$dir/coffey.log" | tail -1 | sed 's/^/    /'
  rm -rf "$dir"
  prev_n=$n; prev_u=$u
done
