#!/usr/bin/env bash
# Side-by-side benchmark (issue 10, `just bench`): coffeyd and its peers in
# one run, RUNS times (default 3), each figure as median (min-max) over the
# runs, written to bench/results/<date>.md and printed. Not a test.
#
# Peers: s6 (s6-svscan), runit (runsvdir), daemontools (svscan), tini and
# dumb-init from Debian's packages (installed with apt-get when missing);
# nitro and daemonproxy only from NITRO_BIN/NITROCTL_BIN/DAEMONPROXY_BIN,
# skipped when unset. The project holds none of their code.
#
# Every supervisor runs the same service program, bench/svc.c (compiled
# here, static when possible), as its service directory's `run` (a symlink;
# mode and output file come through the environment) or, for coffeyd, as
# `binary` with args. All files, sockets included, are on tmpfs
# (BENCH_DIR, default /dev/shm), as /run is on a board.
#
# Figures (see the "Method" part of the result file for each):
# - binary size of a stripped copy; coffeyd: target/dist/coffeyd-x86_64,
#   else the musl release build, else target/release/coffeyd (COFFEYD_BIN
#   overrides); the file says which
# - USS (Private_Clean + Private_Dirty) and RSS from /proc/PID/smaps_rollup,
#   summed over the supervision tree (the supervisor and its per-service
#   supervisors, not the services), at N in NS (default 1 10 100 499 1000;
#   nitro's default build holds at most 499), and the slope per service
# - start-up: from the launch to the last service's first line ("mark")
# - exit -> exec: a service stamps, runs BENCH_MS (1,200 ms), stamps and
#   exits; the figure is the next run's first stamp minus the exit stamp
# - crash loop: a service that exits 1 at once (zero backoff where the
#   supervisor has a setting); restarts per second over CRASH_SECS
# - status round trip: STATUS_CALLS client calls back to back, mean per call
# - idle wakeups: context switches of the supervision tree over IDLE_SECS
#   with 10 services up
# - coffeyd only: the longest loop turn during a reload of 1,000 services
#   (the SIGUSR1 dump, as bench/reload.sh), heap allocations after startup
# - container init USS: coffeyd --container, tini, dumb-init, each with one
#   `sleep 3600`
# Every wait has a deadline; a peer that fails is reported, not fatal.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
RUNS=${RUNS:-3}
NS=${NS:-"1 10 100 499 1000"}
IDLE_SECS=${IDLE_SECS:-10}
CRASH_SECS=${CRASH_SECS:-5}
CYCLE_SECS=${CYCLE_SECS:-5}
STATUS_CALLS=${STATUS_CALLS:-100}
export BENCH_MS=${BENCH_MS:-1200}
ulimit -n 65536 2>/dev/null || ulimit -n 8192 2>/dev/null || true

work=$(mktemp -d "${BENCH_DIR:-/dev/shm}/coffey-cmp.XXXXXX")
declare -A R   # R[peer|metric] = the values of the runs, space separated
declare -A NOTE # NOTE[peer] = why a peer has no figures
launched=()

log() { echo "compare: $*" >&2; }
now_us() { local t=$EPOCHREALTIME; echo "${t/./}"; }

# Every pid of the process tree under $1 (itself included).
tree() {
  ps -e -o pid=,ppid= | awk -v r="$1" '
    { kids[$2] = kids[$2] " " $1 }
    END { q[1] = r; n = 1; i = 1
          while (i <= n) { p = q[i++]; print p
            m = split(kids[p], k, " "); for (j = 1; j <= m; j++) q[++n] = k[j] } }'
}
# Stops the whole tree first (nothing respawns), then kills it; then any
# process still running in the work dir (services reparented elsewhere).
kill_tree() {
  local pids
  pids=$(tree "$1")
  # shellcheck disable=SC2086
  kill -STOP $pids 2>/dev/null
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null
  wait "$1" 2>/dev/null
}
sweep() {
  local p c
  for p in /proc/[0-9]*; do
    c=$(readlink "$p/cwd" 2>/dev/null) || continue
    case $c in "$work"*) kill -KILL "${p#/proc/}" 2>/dev/null ;; esac
  done
}
cleanup() {
  local p
  for p in "${launched[@]}"; do kill_tree "$p"; done
  sweep
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP PIPE

# until SECS CMD...: runs CMD every 10 ms until it succeeds; 1 on timeout,
# or at once when CMD returns 125 (it knows it will not succeed).
until_ok() {
  local end=$(( $(now_us) + $1 * 1000000 )) rc
  shift
  while :; do
    "$@"
    rc=$?
    [ "$rc" -eq 0 ] && return 0
    [ "$rc" -eq 125 ] || [ "$(now_us)" -gt "$end" ] && return 1
    sleep 0.01
  done
}
# count PATTERN FILE: matching lines, 0 when none or no file.
count() { local c; c=$(grep -c -- "$1" "$2" 2>/dev/null); echo "${c:-0}"; }
lines() { count "^$2 " "$1"; }
have_lines() { [ "$(lines "$1" "$2")" -ge "$3" ]; }

# --- binaries ------------------------------------------------------------
install_peers() {
  local missing=()
  command -v s6-svscan >/dev/null || missing+=(s6)
  command -v runsvdir >/dev/null || missing+=(runit)
  command -v svscan >/dev/null || missing+=(daemontools)
  command -v tini >/dev/null || missing+=(tini)
  command -v dumb-init >/dev/null || missing+=(dumb-init)
  [ ${#missing[@]} -eq 0 ] && return
  log "installing ${missing[*]}"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } \
    >"$work/apt.log" 2>&1 || log "apt-get failed (see above); missing peers are skipped"
}

coffeyd_bin() {
  local b
  for b in "${COFFEYD_BIN:-}" target/dist/coffeyd-x86_64 \
    target/x86_64-unknown-linux-musl/release/coffeyd target/release/coffeyd; do
    [ -n "$b" ] && [ -x "$b" ] && { realpath "$b"; return; }
  done
  log "no coffeyd binary: building target/release/coffeyd"
  cargo build --release -q && realpath target/release/coffeyd
}

svc=$work/svc
build_svc() {
  cc -O2 -static -o "$svc" bench/svc.c 2>/dev/null || cc -O2 -o "$svc" bench/svc.c
}

# --- supervisors: start_PEER DIR N MODE (services s1..sN) --------------------
# Each prints nothing and leaves the supervisor's pid in $spid.
svdirs() { # DIR N: DIR/scan/s1..sN, each with run -> svc
  local i
  mkdir -p "$1/scan"
  for i in $(seq 1 "$2"); do
    mkdir "$1/scan/s$i"
    ln -s "$svc" "$1/scan/s$i/run"
  done
}
# coffeyd's config for $2 services of bench/svc.c in mode $3, in dir $1.
coffeyd_config() {
  local i
  echo "coffey:"
  echo "  socket: $1/s.sock"
  echo "  log: {path: $1/coffey.log, console: false}"
  echo "services:"
  for i in $(seq 1 "$2"); do
    echo "  - {name: s$i, binary: $svc, args: [$3, $1/out], restart: always, backoff: {initial: 0s, max: 0s}, stop_timeout: ${STOP:-10s}}"
  done
}
start_coffeyd() {
  coffeyd_config "$1" "$2" "$3" >"$1/config.yaml"
  (cd "$1" && exec "$COFFEYD" -c "$1/config.yaml") >"$1/stdout" 2>&1 &
  spid=$!
}
start_nitro() {
  svdirs "$1" "$2"
  (cd "$1" && BENCH_MODE=$3 BENCH_OUT=$1/out NITRO_SOCK=$1/nitro.sock exec "$NITRO_BIN" "$1/scan") >"$1/stdout" 2>&1 &
  spid=$!
}
start_s6() {
  svdirs "$1" "$2"
  (cd "$1" && BENCH_MODE=$3 BENCH_OUT=$1/out exec s6-svscan -c $(($2 + 10)) "$1/scan") >"$1/stdout" 2>&1 &
  spid=$!
}
start_runit() {
  svdirs "$1" "$2"
  (cd "$1" && BENCH_MODE=$3 BENCH_OUT=$1/out exec runsvdir "$1/scan") >"$1/stdout" 2>&1 &
  spid=$!
}
start_daemontools() {
  svdirs "$1" "$2"
  (cd "$1/scan" && BENCH_MODE=$3 BENCH_OUT=$1/out exec svscan "$1/scan") >"$1/stdout" 2>&1 &
  spid=$!
}
# status_PEER DIR: one client call
status_coffeyd() { "$COFFEYD" -s "$1/s.sock" status >/dev/null; }
status_nitro() { NITRO_SOCK=$1/nitro.sock "$NITROCTL_BIN" list >/dev/null; }
status_s6() { s6-svstat "$1/scan/s1" >/dev/null; }
status_runit() { sv status "$1"/scan/s* >/dev/null; }
status_daemontools() { svstat "$1"/scan/s* >/dev/null; }

# The supervision tree of $spid without the services (svc, run, sleep).
sup_pids() {
  local p c
  for p in $(tree "$spid"); do
    c=$(cat "/proc/$p/comm" 2>/dev/null) || continue
    case $c in sleep | svc | run) ;; *) echo "$p" ;; esac
  done
}
# "USS RSS" in kB, summed over the supervision tree.
mem() {
  local p
  for p in $(sup_pids); do cat "/proc/$p/smaps_rollup" 2>/dev/null; done |
    awk '/^Rss:/ {r += $2} /^Private_(Clean|Dirty):/ {u += $2} END {print u + 0, r + 0}'
}
ctxt() {
  local p
  for p in $(sup_pids); do cat "/proc/$p/status" 2>/dev/null; done |
    awk '/^(voluntary|nonvoluntary)_ctxt_switches:/ {s += $2} END {print s + 0}'
}

add() { R["$1|$2"]="${R["$1|$2"]:-} $3"; }

# launch PEER N MODE: fresh dir, started supervisor; sets $d and $spid.
launch() {
  d=$(mktemp -d "$work/$1.XXXXXX")
  "start_$1" "$d" "$2" "$3"
  launched+=("$spid")
}
stop() { kill_tree "$spid"; sweep; }

# The SIGUSR1 dump's line, once written (coffeyd).
dump() {
  local before
  before=$(count 'status: heap allocations' "$d/coffey.log")
  kill -USR1 "$spid"
  until_ok 10 have_dump "$before" || return 1
  grep 'status: heap allocations' "$d/coffey.log" | tail -1
}
have_dump() { [ "$(count 'status: heap allocations' "$d/coffey.log")" -gt "$1" ]; }

# reload_turn: coffeyd with N services up: a reload that changes every
# service's stop_timeout; the longest turn (wall and CPU µs) meanwhile.
reload_turn() {
  local w
  dump >/dev/null || return 1
  STOP=20s start_coffeyd_config "$d" "$n"
  "$COFFEYD" -s "$d/s.sock" reload >/dev/null 2>&1 || return 1
  w=$(dump) || return 1
  add coffeyd "reload_turn_$n" "$(sed -n 's/.*(\([0-9]*\) us, [0-9]* us on CPU since the last dump).*/\1/p' <<<"$w")"
  add coffeyd "reload_cpu_$n" "$(sed -n 's/.*(\([0-9]*\) us, \([0-9]*\) us on CPU since the last dump).*/\2/p' <<<"$w")"
  add coffeyd allocs "$(sed -n 's/.*heap allocations after startup: \([0-9]*\).*/\1/p' <<<"$w")"
}
# Rewrites the config only (reload): the same services, another stop_timeout.
start_coffeyd_config() {
  coffeyd_config "$1" "$2" mark >"$1/config.yaml.new"
  mv "$1/config.yaml.new" "$1/config.yaml"
}

# started N: all N first lines are in; 125 (give up) once none came for
# 10 s (nitro's default build holds 499 services and starts no more).
started() {
  local c
  [ -z "${seen_at:-}" ] && seen= seen_at=$(now_us)
  c=$(lines "$d/out" m)
  [ "$c" -ge "$1" ] && return 0
  if [ "$c" != "${seen:-}" ]; then seen=$c seen_at=$(now_us); fi
  [ $(($(now_us) - seen_at)) -gt 10000000 ] && return 125
  return 1
}

# N services: start-up time, then USS/RSS; at N=10 also status and idle.
run_n() { # PEER N
  local peer=$1 t0 last u0 c0 c1 i note
  n=$2
  seen_at=
  t0=$(now_us)
  launch "$peer" "$n" mark
  if ! until_ok $((10 + n / 20)) started "$n"; then
    note="N=$n: $(lines "$d/out" m) of $n services started ($(tail -n 1 "$d/stdout")); "
    [[ "${NOTE[$peer]:-}" == *"$note"* ]] || NOTE[$peer]="${NOTE[$peer]:-}$note"
    stop
    return 1
  fi
  last=$(awk '$1 == "m" {if ($2 > m) m = $2} END {printf "%.0f", m / 1000}' "$d/out")
  add "$peer" "start_$n" "$(( (last - t0) ))"
  sleep 1 # the services exec sleep; the supervisor settles
  read -r u0 c0 < <(mem)
  add "$peer" "uss_$n" "$u0"
  add "$peer" "rss_$n" "$c0"
  if [ "$n" -eq 10 ]; then
    if until_ok 10 "status_$peer" "$d" 2>/dev/null; then
      t0=$(now_us)
      for ((i = 0; i < STATUS_CALLS; i++)); do "status_$peer" "$d"; done
      add "$peer" status "$(( ($(now_us) - t0) / STATUS_CALLS ))"
    fi
    c0=$(ctxt)
    sleep "$IDLE_SECS"
    c1=$(ctxt)
    add "$peer" idle "$((c1 - c0))"
  fi
  [ "$peer" = coffeyd ] && [ "$n" -ge 1000 ] && { reload_turn || log "coffeyd reload at N=$n failed"; }
  stop
}

# exit -> exec: median of the gaps of one launch, µs.
run_cycle() {
  local peer=$1 gap
  launch "$peer" 1 cycle
  until_ok $((CYCLE_SECS + 10)) have_lines "$d/out" s 4
  gap=$(awk '$1 == "e" {e = $2} $1 == "s" && e {print int(($2 - e) / 1000); e = 0}' "$d/out" |
    sort -n | awk '{v[NR] = $1} END {if (NR) print v[int((NR + 1) / 2)]}')
  [ -n "$gap" ] && add "$peer" exec "$gap"
  stop
}

# Crash loop: restarts/s of a service that exits 1 at once.
run_crash() {
  local peer=$1 a b t0 t1
  launch "$peer" 1 fail
  until_ok 10 have_lines "$d/out" f 1 || { stop; return 1; }
  sleep 1
  a=$(lines "$d/out" f) t0=$(now_us)
  sleep "$CRASH_SECS"
  b=$(lines "$d/out" f) t1=$(now_us)
  add "$peer" crash "$(awk -v n=$((b - a)) -v t=$((t1 - t0)) 'BEGIN {printf "%.1f", n * 1e6 / t}')"
  stop
}

# Container init: one `sleep 3600` under each; USS/RSS of the init alone.
run_container() {
  local peer=$1 u r
  d=$(mktemp -d "$work/ci-$peer.XXXXXX")
  case $peer in
    coffeyd)
      printf 'coffey:\n  socket: %s/s.sock\n  main: s1\n  log: {path: %s/coffey.log, console: false}\nservices:\n  - {name: s1, binary: /bin/sleep, args: ["3600"]}\n' "$d" "$d" >"$d/config.yaml"
      (cd "$d" && exec "$COFFEYD" --container -c "$d/config.yaml") >"$d/stdout" 2>&1 & ;;
    tini) (cd "$d" && exec tini -s -- /bin/sleep 3600) >"$d/stdout" 2>&1 & ;;
    dumb-init) (cd "$d" && exec dumb-init /bin/sleep 3600) >"$d/stdout" 2>&1 & ;;
  esac
  spid=$!
  launched+=("$spid")
  until_ok 10 has_sleep || { NOTE[$peer]="container: no child ($(tail -c 200 "$d/stdout"))"; stop; return 1; }
  sleep 1
  read -r u r < <(awk '/^Rss:/ {r = $2} /^Private_(Clean|Dirty):/ {u += $2} END {print u + 0, r + 0}' "/proc/$spid/smaps_rollup")
  add "$peer" ci_uss "$u"
  add "$peer" ci_rss "$r"
  stop
}
has_sleep() { [ "$(tree "$spid" | wc -l)" -ge 2 ]; }

# --- the run -------------------------------------------------------------
install_peers
COFFEYD=$(coffeyd_bin) || { log "no coffeyd binary"; exit 1; }
build_svc || { log "cannot compile bench/svc.c"; exit 1; }
peers=(coffeyd)
[ -n "${NITRO_BIN:-}" ] && [ -n "${NITROCTL_BIN:-}" ] && peers+=(nitro) || NOTE[nitro]="–, not set (NITRO_BIN, NITROCTL_BIN)"
NOTE[daemonproxy]="–, not set (DAEMONPROXY_BIN)"
[ -n "${DAEMONPROXY_BIN:-}" ] && NOTE[daemonproxy]="–, DAEMONPROXY_BIN is set but this harness has no driver for daemonproxy yet"
for p in s6:s6-svscan runit:runsvdir daemontools:svscan; do
  command -v "${p#*:}" >/dev/null && peers+=("${p%%:*}") || NOTE[${p%%:*}]="–, ${p#*:} not installed"
done
# PEERS="coffeyd s6 ..." measures only those (a quicker run).
if [ -n "${PEERS:-}" ]; then
  keep=()
  for p in "${peers[@]}"; do [[ " $PEERS " == *" $p "* ]] && keep+=("$p"); done
  peers=("${keep[@]}")
fi
inits=(coffeyd)
for p in tini dumb-init; do command -v $p >/dev/null && inits+=("$p") || NOTE[$p]="–, not installed"; done

for run in $(seq 1 "$RUNS"); do
  for peer in "${peers[@]}"; do
    log "run $run/$RUNS: $peer"
    for n in $NS; do run_n "$peer" "$n" || log "$peer N=$n failed"; done
    run_cycle "$peer"
    run_crash "$peer" || log "$peer crash loop failed"
  done
  for peer in "${inits[@]}"; do run_container "$peer"; done
done

# --- the report ----------------------------------------------------------
# figure PEER METRIC [DIV]: "median (min–max)" of the runs, each / DIV.
figure() {
  local v=${R["$1|$2"]:-}
  [ -z "${v// /}" ] && { echo "–"; return; }
  # shellcheck disable=SC2086
  printf '%s\n' $v | sort -g | awk -v div="${3:-1}" -v dp="${4:-0}" '
    { v[NR] = $1 / div }
    END { f = "%." dp "f"; m = sprintf(f, v[int((NR + 1) / 2)])
          if (NR > 1) m = m sprintf(" (" f "–" f ")", v[1], v[NR]); print m }'
}
slope() { # PEER: kB per service between N=1 and the largest N that ran
  local hi lo=${R["$1|uss_1"]:-} n top=
  for n in $NS; do [ -n "${R["$1|uss_$n"]:-}" ] && top=$n; done
  [ -z "$lo" ] || [ -z "$top" ] || [ "$top" -le 1 ] && { echo "–"; return; }
  hi=${R["$1|uss_$top"]}
  # shellcheck disable=SC2086
  paste <(printf '%s\n' $lo) <(printf '%s\n' $hi) |
    awk -v n="$top" '{print ($2 - $1) / (n - 1)}' | sort -g |
    awk -v n="$top" '{v[NR] = $1} END {m = sprintf("%.2f", v[int((NR + 1) / 2)])
      if (NR > 1) m = m sprintf(" (%.2f–%.2f)", v[1], v[NR]); print m " (1→" n ")"}'
}
size() { # PATH...: stripped sizes in KiB, "a + b", static or dyn
  local f out= k t
  for f in "$@"; do
    f=$(command -v "$f" || echo "$f")
    strip -o "$work/stripped" "$f" 2>/dev/null || cp "$f" "$work/stripped"
    k=$(( ($(stat -c %s "$work/stripped") + 1023) / 1024 ))
    out="${out:+$out + }$k"
  done
  file -L "$f" | grep -q 'statically linked\|static-pie' && t=static || t=dyn
  echo "$out KiB $t"
}
version() {
  case $1 in
    coffeyd) echo "$COFFEYD ($("$COFFEYD" --version 2>/dev/null | head -1), git $(git rev-parse --short HEAD))" ;;
    nitro) echo "$NITRO_BIN, $NITROCTL_BIN (${NITRO_VERSION:-version not given})" ;;
    s6) echo "$(command -v s6-svscan) (Debian s6 $(dpkg-query -W -f='${Version}' s6 2>/dev/null))" ;;
    runit) echo "$(command -v runsvdir) (Debian runit $(dpkg-query -W -f='${Version}' runit 2>/dev/null))" ;;
    daemontools) echo "$(command -v svscan) (Debian daemontools $(dpkg-query -W -f='${Version}' daemontools 2>/dev/null))" ;;
    tini | dumb-init) echo "$(command -v "$1") (Debian $1 $(dpkg-query -W -f='${Version}' "$1" 2>/dev/null))" ;;
  esac
}
bins() {
  case $1 in
    coffeyd) size "$COFFEYD" ;;
    nitro) size "$NITRO_BIN" "$NITROCTL_BIN" ;;
    s6) size s6-svscan s6-supervise ;;
    runit) size runsvdir runsv ;;
    daemontools) size svscan supervise ;;
    tini | dumb-init) size "$1" ;;
  esac
}

out=bench/results/$(date -u +%F).md
mkdir -p bench/results
all=(coffeyd nitro s6 runit daemontools)
cell() { # PEER TEXT
  if [ -n "${NOTE[$1]:-}" ] && [[ "${NOTE[$1]}" == –* ]]; then echo "–"; else echo "$2"; fi
}
row() { # LABEL METRIC DIV DP
  local p line="| $1 |"
  for p in "${all[@]}"; do line="$line $(cell "$p" "$(figure "$p" "$2" "${3:-1}" "${4:-0}")") |"; done
  echo "$line"
}
{
  echo "# Side by side: coffeyd and its peers ($(date -u '+%F %H:%M UTC'))"
  echo
  echo "\`${BENCH_CMD:-bash bench/compare.sh}\`, RUNS=$RUNS; each cell is the median (min–max) of the runs."
  echo
  echo "- machine: $(uname -m), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(awk '/MemTotal/ {printf "%d MiB", $2 / 1024}' /proc/meminfo)"
  echo "- kernel: $(uname -sr)"
  echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)${BENCH_NOTE:+; $BENCH_NOTE}"
  echo "- service program: bench/svc.c ($(file -L "$svc" | grep -q 'statically linked' && echo static || echo dynamic)), files and sockets on $(df --output=fstype "$work" | tail -1 | tr -d ' ') ($work)"
  for p in "${all[@]}" tini dumb-init; do
    if [ -n "${NOTE[$p]:-}" ] && [[ "${NOTE[$p]}" == –* ]]; then echo "- $p: ${NOTE[$p]}"; else echo "- $p: $(version "$p")"; fi
  done
  echo
  echo "| metric | coffeyd | nitro | s6 | runit | daemontools |"
  echo "|---|---:|---:|---:|---:|---:|"
  line="| binary, stripped (daemon + its helper/client) |"
  for p in "${all[@]}"; do line="$line $(cell "$p" "$(bins "$p")") |"; done
  echo "$line"
  for n in $NS; do row "USS, N=$n (kB)" "uss_$n"; done
  for n in $NS; do row "RSS, N=$n (kB)" "rss_$n"; done
  line="| USS per extra service (kB) |"
  for p in "${all[@]}"; do line="$line $(cell "$p" "$(slope "$p")") |"; done
  echo "$line"
  for n in $NS; do [ "$n" -ge 100 ] && row "start $n services (ms)" "start_$n" 1000 1; done
  row "exit → exec (ms; service ran ${BENCH_MS} ms)" exec 1000 2
  row "crash loop (restarts/s)" crash 1 1
  row "\`status\` round trip (ms)" status 1000 2
  row "idle wakeups / ${IDLE_SECS} s (10 services)" idle
  row "longest loop turn, reload of 1,000 (ms)" reload_turn_1000 1000 2
  row "  same, on CPU (ms)" reload_cpu_1000 1000 2
  row "heap allocations after startup" allocs
  echo
  echo "| container init, one \`sleep 3600\` | coffeyd --container | tini | dumb-init |"
  echo "|---|---:|---:|---:|"
  line="| USS (kB) |"
  for p in coffeyd tini dumb-init; do line="$line $(cell "$p" "$(figure "$p" ci_uss)") |"; done
  echo "$line"
  line="| RSS (kB) |"
  for p in coffeyd tini dumb-init; do line="$line $(cell "$p" "$(figure "$p" ci_rss)") |"; done
  echo "$line"
  line="| binary, stripped |"
  for p in coffeyd tini dumb-init; do line="$line $(cell "$p" "$(bins "$p")") |"; done
  echo "$line"
  echo
  for p in "${all[@]}" tini dumb-init; do
    [ -n "${NOTE[$p]:-}" ] && [[ "${NOTE[$p]}" != –* ]] && echo "- $p failed: ${NOTE[$p]}"
  done
  cat <<EOF

## Method

- Every supervisor runs bench/svc.c as its services: the peers as each
  service directory's \`run\` (a symlink, mode from the environment), coffeyd
  as \`binary\` with args. coffeyd's services have \`restart: always\` and
  \`backoff: {initial: 0s, max: 0s}\`; the peers have no backoff setting
  (runit and s6 wait about 1 s, nitro 2 s, after a run that ended quickly).
- USS = Private_Clean + Private_Dirty, RSS = Rss, from /proc/PID/smaps_rollup
  1 s after the last service started, summed over the supervision tree
  without the services: s6-svscan + one s6-supervise per service, runsvdir +
  runsv, svscan + supervise; coffeyd and nitro are one process. A per-service
  supervisor's shared pages count once per process in RSS.
- Per extra service: (USS at the largest N that ran − USS at N=1) / (N − 1).
- Start-up: from just before the supervisor's exec to the latest "first line"
  timestamp (CLOCK_REALTIME) the N services wrote; then they exec sleep 3600.
- exit → exec: the service writes a timestamp first thing, sleeps ${BENCH_MS} ms,
  writes a timestamp and exits 0; the figure is the next run's first
  timestamp minus the exit one (exit, reap, any restart delay, fork, exec of
  a static binary), the median of the gaps in ${CYCLE_SECS} s.
- Crash loop: the service writes a line and exits 1; restarts/s are the
  lines over ${CRASH_SECS} s, after 1 s of warm-up.
- \`status\`: ${STATUS_CALLS} calls back to back from bash, mean per call, each a
  fresh client process (so exec and dynamic loading count):
  \`coffeyd -s SOCK status\`, \`nitroctl list\`, \`s6-svstat DIR/s1\` (one service
  a call), \`sv status DIR/s*\`, \`svstat DIR/s*\`; 10 services up.
- Idle wakeups: voluntary + nonvoluntary context switches of the supervision
  tree (/proc/PID/status) over ${IDLE_SECS} s with 10 services up.
- Loop turn during a reload (coffeyd): 1,000 services up, a SIGUSR1 dump, a
  reload that changes every service's stop_timeout (an update, nothing
  restarts), a second dump: its "since the last dump" longest turn, wall and
  on CPU, as bench/reload.sh. Heap allocations: from that dump.
- Container init: one \`sleep 3600\` under \`coffeyd --container\` (with
  \`main\`), \`tini -s --\`, \`dumb-init\`; the init process alone.
EOF
} >"$out"
cat "$out"
log "wrote $out"
