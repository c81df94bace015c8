# Sourced by driver.sh once every service is up: the cgroup v2 checks
# (issue 9). coffeyd is PID 1 and owns /sys/fs/cgroup, so these may create
# and kill cgroups; nothing like this runs on the host. Every line the
# host checks starts with "VM-TEST: cgroup".

CG=/sys/fs/cgroup

# wait_for SECONDS COMMAND...: poll COMMAND every 0.1 s, bounded.
wait_for() {
    n=$(($1 * 10))
    shift
    while [ "$n" -gt 0 ]; do
        "$@" && return 0
        sleep 0.1
        n=$((n - 1))
    done
    return 1
}
populated() { grep -q '^populated 1' "$CG/$1.service/cgroup.events"; }
empty() { grep -q '^populated 0' "$CG/$1.service/cgroup.events"; }
field() { sed -n "s/^$2 //p" "$1"; }
detail() { cfy status "$1" | sed -n "s/^$2: *//p"; }

grep -q " $CG cgroup2 " /proc/mounts || fail "cgroup: no cgroup2 at $CG"
echo "VM-TEST: cgroup controllers: $(cat $CG/cgroup.subtree_control)"
web_pid=$(detail web pid)
echo "VM-TEST: cgroup web $(cat /proc/"$web_pid"/cgroup) processes $(detail web processes)"

# 1. A setsid escapee that ignores SIGTERM is killed by `stop`.
wait_for 10 test -s /run/esc.pid || fail "cgroup: esc wrote no pid"
e=$(cat /run/esc.pid)
grep -q "esc.service" /proc/"$e"/cgroup || fail "cgroup: escapee $e not in esc.service: $(cat /proc/"$e"/cgroup)"
[ "$(sed 's/.*) . [0-9]* [0-9]* \([0-9]*\).*/\1/' /proc/"$e"/stat)" = "$e" ] ||
    fail "cgroup: escapee $e did not lead its own session"
n=$(detail esc processes)
t0=$(uptime_s)
T=20 cfy stop esc >/dev/null || fail "cgroup: stop esc failed"
t1=$(uptime_s)
[ -d /proc/"$e" ] && fail "cgroup: escapee $e survived stop ($(cat /proc/"$e"/stat))"
empty esc || fail "cgroup: esc.service still populated after stop"
echo "VM-TEST: cgroup escapee killed by stop: pid $e, $n processes, stop took $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')s, processes now $(detail esc processes)"

# 2. pids_max holds a fork bomb: the limit is hit, never passed, and the
# daemon still answers.
wait_for 30 test "$(field $CG/bomb.service/pids.events max)" -gt 0 2>/dev/null ||
    fail "cgroup: the bomb never hit pids.max ($(cat $CG/bomb.service/pids.events))"
cur=$(cat $CG/bomb.service/pids.current)
[ "$cur" -le 16 ] || fail "cgroup: pids.current $cur > pids_max 16"
procs=$(detail bomb processes)
res=$(detail bomb resources)
echo "VM-TEST: cgroup bomb held: pids.max $(cat $CG/bomb.service/pids.max), pids.current $cur, fork failures $(field $CG/bomb.service/pids.events max), status processes $procs, resources '$res', cpu.weight $(cat $CG/bomb.service/cpu.weight)"
T=20 cfy stop bomb >/dev/null || fail "cgroup: stop bomb failed"
empty bomb || fail "cgroup: bomb.service still populated after stop"
echo "VM-TEST: cgroup bomb stopped: pids.current $(cat $CG/bomb.service/pids.current)"

# 3. memory_max: the hog is OOM-killed, and status says so.
wait_for 30 sh -c "coffeyd -c $CFG status hog | grep -q '^state: *failed'" ||
    fail "cgroup: hog did not fail ($(detail hog state))"
reason=$(detail hog reason)
echo "VM-TEST: cgroup hog: reason '$reason', oom_kills $(detail hog oom_kills), memory.max $(cat $CG/hog.service/memory.max), memory.events oom_kill $(field $CG/hog.service/memory.events oom_kill)"
case $reason in
"killed by the OOM killer (memory_max 16MiB)") ;;
*) fail "cgroup: hog's reason is '$reason'" ;;
esac
# 4. Supervisor mode with a delegated cgroup (coffey.cgroup): a second
# coffeyd, started inside the delegated directory, moves itself into a
# leaf (cgroup v2 keeps processes out of a cgroup with controllers on for
# its children), puts its service in deleg/n1.service, and its stop ends
# the escapee there too. Its cgroups are removed when it exits.
D=$CG/deleg
NCFG=/etc/coffey/nested.yaml
mkdir -p $D
sh -c "echo 0 > $D/cgroup.procs; exec coffeyd -c $NCFG" </dev/null >/dev/null 2>&1 &
nested=$!
ncfy() { timeout 10 coffeyd -c $NCFG "$@"; }
wait_for 10 grep -q "n1: spawned pid" /run/nested.log 2>/dev/null ||
    fail "cgroup: nested coffeyd did not start n1: $(cat /run/nested.log 2>&1)"
grep -q "cgroups: services in $D/NAME.service (controllers: memory pids cpu)" /run/nested.log ||
    fail "cgroup: nested coffeyd did not use $D: $(cat /run/nested.log)"
ncg=$(cut -d: -f3 /proc/$nested/cgroup)
[ "$ncg" = /deleg/coffeyd ] || fail "cgroup: nested coffeyd is in $ncg, not /deleg/coffeyd"
wait_for 10 test "$(ncfy status n1 | sed -n 's/^processes: *//p')" -ge 3 2>/dev/null ||
    fail "cgroup: nested n1 has processes $(ncfy status n1 | sed -n 's/^processes: *//p')"
np=$(ncfy status n1 | sed -n 's/^processes: *//p')
[ "$(cat $D/n1.service/pids.max)" = 8 ] || fail "cgroup: nested pids.max $(cat $D/n1.service/pids.max)"
T=20 ncfy stop n1 >/dev/null || fail "cgroup: nested stop n1 failed"
grep -q '^populated 0' $D/n1.service/cgroup.events || fail "cgroup: deleg/n1.service still populated"
ncfy shutdown >/dev/null || fail "cgroup: nested shutdown failed"
wait_for 10 sh -c "! test -d /proc/$nested" || fail "cgroup: nested coffeyd did not exit"
[ -d $D/n1.service ] && fail "cgroup: deleg/n1.service left behind"
grep -q "n1: stop timeout; sent SIGKILL to process group [0-9]* and its cgroup (cgroup.kill)" /run/nested.log ||
    fail "cgroup: nested n1 got no cgroup.kill: $(cat /run/nested.log)"
grep -q "shutdown complete; heap allocations after startup: 0" /run/nested.log ||
    fail "cgroup: nested coffeyd allocated: $(grep 'heap allocations' /run/nested.log)"
echo "VM-TEST: cgroup delegated: coffeyd moved itself into $ncg, n1 had $np processes, pids.max 8, its escapee got cgroup.kill, stopped empty, n1.service removed at exit, 0 allocations after startup"
echo "VM-TEST: cgroup checks passed at $(uptime_s)s"
