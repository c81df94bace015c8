#!/usr/bin/env bash
# Footprint benchmark: prints the static musl binary's size and the daemon's
# RSS while it supervises 10 services. Not a test: it prints figures.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-musl
rustup target add "$target" >/dev/null 2>&1 || true
cargo build --release --target "$target" -q
bin=target/$target/release/coffeyd
size=$(stat -c %s "$bin")
echo "binary: $bin"
echo "static binary size: $size bytes ($(( (size + 1023) / 1024 )) KiB; budget 400 KiB)"
file "$bin" 2>/dev/null | sed 's/^/  /' || true

dir=$(mktemp -d /tmp/coffey-bench.XXXXXX)
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
{
  echo "coffey:"
  echo "  socket: $dir/s.sock"
  echo "  log: {path: $dir/coffey.log, console: false}"
  echo "services:"
  for i in $(seq 1 10); do
    echo "  - {name: s$i, binary: /bin/sleep, args: ['3600']}"
  done
} > "$dir/config.yaml"
"$bin" -c "$dir/config.yaml" & pid=$!
for _ in $(seq 1 500); do
  n=$(grep -c ': spawned' "$dir/coffey.log" 2>/dev/null || true)
  [ "${n:-0}" -ge 10 ] && break
  sleep 0.01
done
running=$(grep -c ': spawned' "$dir/coffey.log" || true)
rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
hwm=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
echo "services running: $running"
echo "daemon RSS with 10 services: ${rss} KiB (peak ${hwm} KiB; budget 200 KiB)"
echo "RSS by mapping (KiB):"
awk '/^[0-9a-f]/{name=$6; if (name=="") name="[anon]"} /^Rss/{if ($2>0) print "  " $2, name}' /proc/$pid/smaps | sort -rn | head -6
kill -TERM $pid
wait $pid || true
grep -o 'heap allocations after startup: [0-9]*' "$dir/coffey.log" | tail -1
