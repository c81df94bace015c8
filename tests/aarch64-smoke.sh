#!/usr/bin/env bash
# aarch64 smoke test (issue 10): the static aarch64 artifact of `just build`
# runs under qemu-aarch64-static (Debian's qemu-user-static) on an x86_64 CI
# machine: validate, a daemon with three services, status, restart, shutdown.
# The services are the host's /bin/sleep (qemu-user runs only coffeyd; its
# children exec natively). Every wait is a poll with a deadline. Exits
# non-zero on the first failure.
#   bash tests/aarch64-smoke.sh [BINARY]   (default target/dist/coffeyd-aarch64)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/dist/coffeyd-aarch64}
QEMU=${QEMU:-qemu-aarch64-static}
DEADLINE_S=${DEADLINE_S:-30}
dir=

fail() { echo "aarch64-smoke: FAIL: $*" >&2; [ -n "$dir" ] && [ -f "$dir/daemon.log" ] && sed 's/^/  daemon: /' "$dir/daemon.log" >&2; exit 1; }
ctl() { "$QEMU" "$BIN" -s "$dir/coffey.sock" "$@"; }
# until CMD...: run CMD every 50 ms until it succeeds or DEADLINE_S passes.
until_ok() {
    local end=$((SECONDS + DEADLINE_S))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$end" ] || return 1
        sleep 0.05
    done
}
pid_of() { ctl status | awk -v s="$1" '$1 == s { print $3 }'; }
all_running() { [ "$(ctl status | awk 'NR > 1 && $2 == "running"' | wc -l)" -eq 3 ]; }
daemon_gone() { ! kill -0 "$daemon" 2>/dev/null; }

# The ELF header's e_machine (offset 18) is 183 (0xb7): AArch64.
[ "$(od -An -tu2 -j18 -N2 "$BIN" | tr -d ' ')" = 183 ] || fail "$BIN is not an aarch64 ELF"
command -v "$QEMU" >/dev/null || fail "$QEMU not found (apt-get install qemu-user-static)"

dir=$(mktemp -d)
daemon=
cleanup() {
    [ -n "$daemon" ] && kill -KILL "$daemon" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT

cat >"$dir/config.yaml" <<EOF
coffey:
  socket: $dir/coffey.sock
  shutdown_timeout: 5s
services:
  - name: a
    binary: /bin/sleep
    args: ["3600"]
  - name: b
    binary: /bin/sleep
    args: ["3600"]
    depends_on: [a]
  - name: c
    binary: /bin/sleep
    args: ["3600"]
EOF

out=$("$QEMU" "$BIN" validate -c "$dir/config.yaml") || fail "validate exited $?: $out"
grep -q "config OK: 3 services" <<<"$out" || fail "validate said: $out"
echo "aarch64-smoke: validate ok"

"$QEMU" "$BIN" -c "$dir/config.yaml" 2>"$dir/daemon.log" &
daemon=$!
until_ok all_running || fail "three services not running within ${DEADLINE_S}s: $(ctl status 2>&1)"
echo "aarch64-smoke: status ok"
ctl status

old=$(pid_of b)
ctl restart b || fail "restart b exited $?"
new=$(pid_of b)
[ -n "$new" ] && [ "$new" != - ] && [ "$new" != "$old" ] || fail "b's pid after restart: '$new' (was $old)"
until_ok all_running || fail "not all running after restart: $(ctl status 2>&1)"
echo "aarch64-smoke: restart ok (b: $old -> $new)"

ctl shutdown || fail "shutdown exited $?"
until_ok daemon_gone || fail "daemon still running ${DEADLINE_S}s after shutdown"
rc=0
wait "$daemon" || rc=$?
daemon=
[ "$rc" -eq 0 ] || fail "daemon exited $rc"
[ ! -e "$dir/coffey.sock" ] || fail "socket left behind"
echo "aarch64-smoke: shutdown ok; all passed"
