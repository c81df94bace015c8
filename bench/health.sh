#!/usr/bin/env bash
# Health-check load benchmark: 50 services (/bin/sleep 3600), each with a
# 1 s http readiness check and a 1 s tcp liveness check against one local
# HTTP server, for SECS seconds (default 60). Prints the daemon's CPU use
# (utime+stime from /proc/PID/stat, as a percentage of one core), its RSS
# and the heap allocation count after startup. Not a test: it prints
# figures.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-60}
N=${N:-50}

target=x86_64-unknown-linux-musl
if rustup target add "$target" >/dev/null 2>&1 || rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  cargo build --release --target "$target" -q
  bin=target/$target/release/coffeyd
else
  cargo build --release -q
  bin=target/release/coffeyd
fi
echo "binary: $bin"

dir=$(mktemp -d /tmp/coffey-hbench.XXXXXX)
pid=
srv=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  [ -n "$srv" ] && kill "$srv" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

# One tiny HTTP server: a 200 for every request, one thread per
# connection so a slow probe cannot hold the others up.
cat > "$dir/server.py" <<'EOF'
import http.server, socketserver, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
s = S(("127.0.0.1", 0), H)
with open(sys.argv[1], "w") as f:
    f.write(str(s.server_address[1]))
s.serve_forever()
EOF
python3 "$dir/server.py" "$dir/port" & srv=$!
for _ in $(seq 1 500); do [ -s "$dir/port" ] && break; sleep 0.01; done
port=$(cat "$dir/port")
echo "http server: 127.0.0.1:$port (pid $srv)"

{
  echo "coffey:"
  echo "  socket: $dir/s.sock"
  echo "  log: {path: $dir/coffey.log, console: false}"
  echo "services:"
  for i in $(seq 1 "$N"); do
    cat <<EOF
  - name: s$i
    binary: /bin/sleep
    args: ['3600']
    log: {console: false}
    healthcheck:
      readiness: {type: http, url: "http://127.0.0.1:$port/healthz", interval: 1s, timeout: 1s}
      liveness: {type: tcp, address: "127.0.0.1:$port", interval: 1s, timeout: 1s}
EOF
  done
} > "$dir/config.yaml"

"$bin" -c "$dir/config.yaml" 2> "$dir/stderr" & pid=$!
for _ in $(seq 1 3000); do
  n=$(grep -c ': ready (pid' "$dir/coffey.log" 2>/dev/null || true)
  [ "${n:-0}" -ge "$N" ] && break
  sleep 0.01
done
ready=$(grep -c ': ready (pid' "$dir/coffey.log" || true)
echo "services ready: $ready of $N"

hz=$(getconf CLK_TCK)
ticks() { awk '{ split($0, a, ") "); split(a[2], f, " "); print f[12] + f[13] }' "/proc/$1/stat"; }
t0=$(date +%s%N)
c0=$(ticks "$pid")
rss0=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
echo "running ${SECS}s with $N x (http readiness + tcp liveness) every 1s..."
sleep "$SECS"
c1=$(ticks "$pid")
t1=$(date +%s%N)
rss1=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")

kill -USR1 "$pid"
for _ in $(seq 1 500); do
  grep -q 'status: heap allocations after startup' "$dir/coffey.log" && break
  sleep 0.01
done
allocs=$(grep -o 'status: heap allocations after startup: [0-9]*' "$dir/coffey.log" | tail -1 | grep -o '[0-9]*$')
unhealthy=$(grep -c 'check unhealthy' "$dir/coffey.log" || true)
restarts=$(grep -c 'liveness failed' "$dir/coffey.log" || true)

awk -v c="$((c1 - c0))" -v hz="$hz" -v ns="$((t1 - t0))" -v n="$N" 'BEGIN {
  s = ns / 1e9; cpu = c / hz
  printf "daemon CPU: %.2f s over %.1f s = %.2f%% of one core (%d probes/s)\n", cpu, s, 100 * cpu / s, 2 * n
}'
echo "daemon RSS: ${rss0} KiB at start of window, ${rss1} KiB at end (peak ${hwm} KiB)"
echo "RSS by mapping (KiB):"
awk '/^[0-9a-f]/{name=$6; if (name=="") name="[anon]"} /^Rss/{if ($2>0) print "  " $2, name}' "/proc/$pid/smaps" | sort -rn | head -4
echo "heap allocations after startup: ${allocs:-?}"
echo "check unhealthy lines: $unhealthy, liveness restarts: $restarts"
kill -TERM "$pid"
wait "$pid" || true
pid=
