#!/usr/bin/env bash
# Real-kernel boot test (issue 5): boot a Debian kernel in qemu (TCG, no KVM)
# with an initramfs whose /init is a static coffeyd, let the guest config in
# tests/vm/config.yaml come up, and check the serial log: every service
# ready (the HTTP check on 127.0.0.1 needs the lo that coffeyd sets up: the
# initramfs has no `ip`), ordered stop, "reboot: Power down", no panic.
# Then the cgroup v2 checks (issue 9, tests/vm/cgroup.sh): coffeyd mounts
# cgroup2 and owns the tree, a setsid escapee is killed by `stop`,
# pids_max holds a fork bomb, memory_max has a hog OOM-killed and status
# says so. Only here may tests create cgroups: never on the host.
# A second boot has no config and no /bin/sh: PID 1 must wait, and reboot
# on Ctrl-Alt-Del (SIGINT), sent through the qemu monitor.
#
#   bash tests/vm/run.sh        (or: just test-vm)
#
# Idempotent. Downloads are cached in target/vm-cache/, the initramfs and
# the serial log are written to target/vm/.
#
# Environment:
#   COFFEY_VM_BIN=PATH     use this static coffeyd instead of building one
#   COFFEY_VM_TIMEOUT=SEC  bound on the qemu run (default 120)
# Package file names are ours (no spaces): ls is fine.
# shellcheck disable=SC2012
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$ROOT/tests/vm
CACHE=$ROOT/target/vm-cache
OUT=$ROOT/target/vm
TIMEOUT=${COFFEY_VM_TIMEOUT:-120}
TARGET=x86_64-unknown-linux-musl

say() { printf '== %s\n' "$*"; }
die() {
    printf 'VM TEST FAILED: %s\n' "$*" >&2
    exit 1
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo

mkdir -p "$CACHE" "$OUT"

# --- host tools ---------------------------------------------------------
t0=$(now)
missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
command -v cpio >/dev/null || missing+=(cpio)
command -v gzip >/dev/null || missing+=(gzip)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- kernel and busybox (Debian packages, cached) -----------------------
# fetch PKG: make sure $CACHE/PKG_*.deb exists (apt-get download), print it.
fetch() {
    local pkg=$1 deb
    deb=$(ls "$CACHE/${pkg}"_*.deb 2>/dev/null | sort -V | tail -n1 || true)
    if [ -z "$deb" ]; then
        # A stale index can name a version the mirror no longer has: update
        # once and retry.
        (cd "$CACHE" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >&2) ||
            { $SUDO apt-get update -qq >&2 &&
                (cd "$CACHE" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >&2); } ||
            die "apt-get download $pkg failed"
        deb=$(ls "$CACHE/${pkg}"_*.deb | sort -V | tail -n1)
    fi
    echo "$deb"
}

# unpack DEB: dpkg -x into $CACHE/x-NAME once, print the directory.
unpack() {
    local deb=$1 dir
    dir=$CACHE/x-$(basename "$deb" .deb)
    if [ ! -e "$dir/.done" ]; then
        rm -rf "$dir"
        dpkg -x "$deb" "$dir"
        touch "$dir/.done"
    fi
    echo "$dir"
}

# The newest plain 6.1 image apt offers (not -cloud/-rt, not -unsigned/-dbg).
KRE='^linux-image-6\.1\.0-[0-9]+-amd64$'
newest_kernel() {
    { apt-cache search --names-only "$KRE" 2>/dev/null || true; } | awk '{ print $1 }' | sort -V | tail -n1
}
kpkg=$(newest_kernel)
if [ -z "$kpkg" ]; then
    # No package index yet (fresh machine), or offline: try the newest
    # cached package, else update the index.
    kpkg=$(ls "$CACHE" 2>/dev/null | sed -n 's/_.*\.deb$//p' | grep -E "$KRE" | sort -V | tail -n1 || true)
fi
if [ -z "$kpkg" ]; then
    $SUDO apt-get update -qq
    kpkg=$(newest_kernel)
fi
[ -n "$kpkg" ] || die "no linux-image-6.1.0-*-amd64 package found"
kdeb=$(fetch "$kpkg")
kdir=$(unpack "$kdeb")
VMLINUZ=$(ls "$kdir"/boot/vmlinuz-* | head -n1)
bbdeb=$(fetch busybox-static)
bbdir=$(unpack "$bbdeb")
BUSYBOX=$bbdir/bin/busybox
[ -x "$BUSYBOX" ] || die "no bin/busybox in busybox-static"
say "kernel $(basename "$VMLINUZ"), busybox $("$BUSYBOX" 2>&1 | head -n1 | awk '{ print $2 }') ($(since "$t0") s for tools and downloads)"

# --- static coffeyd -----------------------------------------------------
t0=$(now)
if [ -n "${COFFEY_VM_BIN:-}" ]; then
    BIN=$COFFEY_VM_BIN
else
    rustup target list --installed 2>/dev/null | grep -qx "$TARGET" || rustup target add "$TARGET"
    (cd "$ROOT" && cargo build --quiet --release --target "$TARGET") || die "cargo build --release --target $TARGET failed"
    BIN=$ROOT/target/$TARGET/release/coffeyd
fi
[ -x "$BIN" ] || die "no coffeyd binary at $BIN"
say "coffeyd $BIN ($(stat -c %s "$BIN") bytes, $(since "$t0") s to build)"

# --- initramfs ----------------------------------------------------------
t0=$(now)
STAGE=$OUT/rootfs
rm -rf "$STAGE"
mkdir -p "$STAGE"/{bin,sbin,etc/coffey,proc,sys,dev,run,tmp,root,www}
chmod 1777 "$STAGE/tmp"
install -m 0755 "$BIN" "$STAGE/init"
install -m 0755 "$BIN" "$STAGE/sbin/coffeyd"
install -m 0755 "$BUSYBOX" "$STAGE/bin/busybox"
# No `ip`: coffeyd sets lo up itself (issue 8, point 11).
for app in sh echo cat sleep mkdir ls grep sed wget httpd mount ps timeout awk setsid cut; do
    ln -s busybox "$STAGE/bin/$app"
done
ln -s ../sbin/coffeyd "$STAGE/bin/coffeyd"
install -m 0644 "$HERE/config.yaml" "$STAGE/etc/coffey/config.yaml"
install -m 0755 "$HERE/driver.sh" "$STAGE/etc/coffey/driver.sh"
install -m 0644 "$HERE/cgroup.sh" "$STAGE/etc/coffey/cgroup.sh"
install -m 0644 "$HERE/nested.yaml" "$STAGE/etc/coffey/nested.yaml"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$STAGE/etc/passwd"
printf 'root:x:0:\n' >"$STAGE/etc/group"
printf '<h1>hello from coffeyd</h1>\n' >"$STAGE/www/index.html"
# The kernel opens /dev/console for /init's stdio. Its built-in initramfs
# already has it; these nodes are a fallback until devtmpfs is mounted.
if [ "$(id -u)" -eq 0 ]; then
    mknod -m 0600 "$STAGE/dev/console" c 5 1
    mknod -m 0666 "$STAGE/dev/null" c 1 3
fi
INITRD=$OUT/initramfs.cpio.gz
(cd "$STAGE" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
    cpio --null --create --format=newc --owner=0:0 --quiet) | gzip -9n >"$INITRD"
say "initramfs $INITRD ($(stat -c %s "$INITRD") bytes, $(since "$t0") s)"

# --- boot ---------------------------------------------------------------
LOG=$OUT/serial.log
rm -f "$LOG"
say "booting (qemu, TCG, bound ${TIMEOUT}s)"
t0=$(now)
rc=0
timeout -k 5 "$TIMEOUT" qemu-system-x86_64 \
    -accel tcg -m 256M -smp 1 \
    -nodefaults -display none -monitor none -no-reboot -nic none \
    -serial "file:$LOG" \
    -kernel "$VMLINUZ" -initrd "$INITRD" \
    -append "console=ttyS0 panic=-1 quiet loglevel=3" \
    </dev/null || rc=$?
boot_s=$(since "$t0")
say "qemu exited with $rc after ${boot_s}s"

# --- checks -------------------------------------------------------------
fails=()
check() { # check DESCRIPTION COMMAND...: record DESCRIPTION when COMMAND fails
    local what=$1
    shift
    "$@" || fails+=("$what")
}
has() { grep -qF -- "$1" "$LOG" 2>/dev/null; }
lacks() { ! has "$1"; }
# first line number of a fixed string in the log, or 0
line_of() { grep -nF -- "$1" "$LOG" 2>/dev/null | head -n1 | cut -d: -f1 || true; }
ordered() { # ordered A B: A appears, B appears, A before B
    local a b
    a=$(line_of "$1")
    b=$(line_of "$2")
    [ -n "$a" ] && [ -n "$b" ] && [ "$a" -lt "$b" ]
}

check "qemu exited within ${TIMEOUT}s (rc $rc)" test "$rc" -ne 124 -a "$rc" -ne 137
check "qemu exited 0 (rc $rc)" [ "$rc" -eq 0 ]
check "serial log written" [ -s "$LOG" ]
check "'VM-TEST: ready after' in the log" has "VM-TEST: ready after"
check "no 'VM-TEST: FAIL' in the log" lacks "VM-TEST: FAIL"
check "the oneshot ran ('setup: completed')" has "setup: completed"
check "PID 1 set lo up (no 'cannot set lo up')" lacks "cannot set lo up"
check "the guest fetched the page over 127.0.0.1" has "VM-TEST: http <h1>hello from coffeyd</h1>"
check "app started after web was ready" ordered "web: ready" "app: spawned"
check "app stopped before web was stopped" ordered "app: stopped" "web: stopping pid"
check "'web: stopped' in the log" has "web: stopped"
check "cgroups set up ('cgroups: services in /sys/fs/cgroup')" has "cgroups: services in /sys/fs/cgroup/NAME.service (controllers: memory pids cpu)"
check "cgroup: the setsid escapee was killed by stop" has "VM-TEST: cgroup escapee killed by stop"
check "cgroup: esc got cgroup.kill at its stop timeout" has "esc: stop timeout; sent SIGKILL to process group"
check "cgroup: pids_max held the fork bomb" has "VM-TEST: cgroup bomb held"
check "cgroup: the hog was OOM-killed and status said so" has "VM-TEST: cgroup hog: reason 'killed by the OOM killer (memory_max 16MiB)'"
check "cgroup: the daemon log names the OOM kill" has "; killed by the OOM killer (memory_max 16MiB)"
check "cgroup: a delegated coffey.cgroup works in supervisor mode" has "VM-TEST: cgroup delegated:"
check "cgroup: every check passed" has "VM-TEST: cgroup checks passed"
check "'reboot: Power down' in the log" has "reboot: Power down"
check "no 'Kernel panic'" lacks "Kernel panic"
check "no 'Attempted to kill init'" lacks "Attempted to kill init"

# --- second boot: no config, no emergency program ----------------------
# System mode must stay up (PID 1 may not exit) and still answer a power
# signal: Ctrl-Alt-Del (sent through the qemu monitor) makes the kernel
# send SIGINT to PID 1, which reboots (qemu -no-reboot then exits).
t0=$(now)
rm -f "$STAGE/bin/sh" "$STAGE/etc/coffey/config.yaml"
INITRD2=$OUT/initramfs-noconfig.cpio.gz
(cd "$STAGE" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
    cpio --null --create --format=newc --owner=0:0 --quiet) | gzip -9n >"$INITRD2"
LOG2=$OUT/serial-noconfig.log
rm -f "$LOG2"
say "booting without a config or /bin/sh (bound 60s)"
rc2=0
{
    # Wait (bounded) until PID 1 says it waits, then press Ctrl-Alt-Del.
    for _ in $(seq 600); do
        grep -qF "waiting for SIGHUP" "$LOG2" 2>/dev/null && break
        sleep 0.1
    done
    echo "sendkey ctrl-alt-delete"
    # Keep the monitor open until the guest rebooted (qemu then exits).
    for _ in $(seq 400); do
        grep -qF "reboot: Restarting system" "$LOG2" 2>/dev/null && break
        sleep 0.1
    done
} | timeout -k 5 60 qemu-system-x86_64 \
    -accel tcg -m 256M -smp 1 \
    -nodefaults -display none -monitor stdio -no-reboot -nic none \
    -serial "file:$LOG2" \
    -kernel "$VMLINUZ" -initrd "$INITRD2" \
    -append "console=ttyS0 panic=-1 quiet loglevel=3" >/dev/null || rc2=$?
say "qemu exited with $rc2 after $(since "$t0")s"
has2() { grep -qF -- "$1" "$LOG2" 2>/dev/null; }
check "no config: qemu exited 0 within 60s (rc $rc2)" [ "$rc2" -eq 0 ]
check "no config: 'cannot read config' in the log" has2 "cannot read config"
check "no config: PID 1 waited ('waiting for SIGHUP')" has2 "waiting for SIGHUP"
check "no config: SIGINT rebooted ('coffeyd: no config; reboot')" has2 "coffeyd: no config; reboot"
check "no config: 'reboot: Restarting system' in the log" has2 "reboot: Restarting system"
check "no config: no 'Kernel panic'" eval '! has2 "Kernel panic"'
if [ ${#fails[@]} -gt 0 ]; then
    echo "---- serial log ($LOG2) ----"
    cat "$LOG2" 2>/dev/null || true
fi

ready=$(grep -o 'VM-TEST: ready after [0-9.]*' "$LOG" 2>/dev/null | head -n1 | awk '{ print $4 }' || true)
rss=$(grep -o 'VM-TEST: pid1 VmRSS:.*' "$LOG" 2>/dev/null | head -n1 | sed 's/.*VmRSS:[[:space:]]*//' || true)

if [ ${#fails[@]} -gt 0 ]; then
    echo "---- serial log ($LOG) ----"
    cat "$LOG" 2>/dev/null || true
    echo "---- end of serial log ----"
    for f in "${fails[@]}"; do echo "FAILED: $f"; done
    die "${#fails[@]} check(s) failed"
fi

grep -F -e 'VM-TEST:' -e 'heap allocations after startup' "$LOG" | sed 's/^/  /'
say "boot to all services ready: ${ready}s (guest uptime); PID 1 VmRSS: ${rss}; qemu wall time: ${boot_s}s"
say "VM test passed"
