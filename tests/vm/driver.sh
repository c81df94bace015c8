#!/bin/sh
# VM test driver, run by coffeyd as a service inside the guest (see
# tests/vm/run.sh). Waits until every service is running or completed,
# reports, then powers the machine off. Every line the host checks starts
# with "VM-TEST:".

EXPECTED=8 # services in tests/vm/config.yaml (hog ends failed: OOM)
DEADLINE=60 # seconds of guest uptime
CFG=/etc/coffey/config.yaml

# coffeyd mounts /proc as PID 1; mount it here too if it did not.
if [ ! -r /proc/uptime ]; then
    echo "VM-TEST: note: /proc was not mounted by PID 1"
    mount -t proc proc /proc
fi

# Every client call is bounded, so a wedged daemon cannot hang the test.
cfy() { timeout "${T:-10}" coffeyd -c "$CFG" "$@"; }

uptime_s() { read -r up _ </proc/uptime && echo "$up"; }

power_off() {
    # The poweroff stops this service too: its process group gets SIGTERM,
    # maybe before the client has read the reply. So from here on the shell
    # and the client ignore SIGTERM (the client is bounded by SIGKILL
    # instead), and the shell exits by itself.
    trap '' TERM
    if timeout -s KILL 30 coffeyd -c "$CFG" poweroff; then
        echo "VM-TEST: poweroff sent"
    else
        echo "VM-TEST: FAIL coffeyd poweroff exited $?"
        # A daemon without the verb: at least end the boot (the kernel then
        # panics, which run.sh reports).
        cfy shutdown --no-wait
    fi
    exit 0
}

fail() {
    echo "VM-TEST: FAIL $*"
    cfy status
    power_off
}

echo "VM-TEST: driver started at $(uptime_s)s"
while :; do
    json=$(cfy -j status 2>&1)
    states=$(echo "$json" | grep -o '"state": *"[a-z]*"' | sed 's/.*"\([a-z]*\)"$/\1/')
    total=$(echo "$states" | grep -c .)
    # hog is left out: it is OOM-killed (and checked) below.
    good=$(cfy status 2>/dev/null | awk '$1 != "hog" && ($2 == "running" || $2 == "completed")' | grep -c .)
    [ "$total" -eq "$EXPECTED" ] && [ "$good" -eq "$((EXPECTED - 1))" ] && break
    up=$(uptime_s)
    if [ "${up%%.*}" -ge "$DEADLINE" ]; then
        echo "VM-TEST: status $json"
        fail "not all services ready after ${up}s"
    fi
    sleep 0.1
done
up=$(uptime_s)

echo "VM-TEST: status $json"
[ -f /run/oneshot-done ] || fail "oneshot did not write /run/oneshot-done"
page=$(wget -q -O - http://127.0.0.1:8080/) || fail "GET http://127.0.0.1:8080/ failed"
echo "VM-TEST: http $page"
echo "VM-TEST: ready after ${up}s"
echo "VM-TEST: pid1 $(grep VmRSS /proc/1/status)"
echo "VM-TEST: mounts$(while read -r _ dir type _; do printf ' %s(%s)' "$dir" "$type"; done </proc/mounts)"
. /etc/coffey/cgroup.sh
power_off
