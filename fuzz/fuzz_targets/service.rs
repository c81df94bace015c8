//! Fuzz the service machine and the supervisor against a model of the
//! processes they supervise. Any sequence of commands, exits, spawn
//! failures, leftover group members, escapees and time jumps must never
//! panic, and these invariants must hold (see docs/RELIABILITY.md):
//! 1. A pid exists exactly when the state has a process: a slot's main
//!    pid is a process of the model (alive or an unreaped zombie), every
//!    live main process of the model is some slot's main pid, every live
//!    group member belongs to a slot with that group, and every live
//!    escapee is tracked by a stopping slot (or its leader still runs).
//! 2. After `on_exit(p)` no slot holds `p` as its main pid, and the pid
//!    index agrees with the table (no stale pid, no pid in two slots).
//! 3. No deadline lies in the past without an action taken: after
//!    `tick(now)`, every machine whose `poll_at()` is `<= now` emitted an
//!    event during that tick (it was just given a zero-length deadline,
//!    e.g. a zero backoff); a deadline that was due is never left untouched.
//! 4. A stop ends within `stop_timeout` plus the kill: once the reaps that
//!    the kill caused are delivered (the loop reaps first), no slot is
//!    still `stopping` at or after `stop began + stop_timeout`.
//! 5. Escapees are tracked only while their run is being stopped.
//! 6. Every service's `holders` (dependents that have a process or are
//!    held themselves), kept up incrementally, equals a fresh count.
#![no_main]

use coffey::health::{Check, CheckPolicy, Mode, ProbeError, Role};
use coffey::pidindex::{PidIndex, PidSlot};
use coffey::service::{Condition, Dep, Event, Kind, Policy, Restart, Service, StateName};
use coffey::supervisor::Supervisor;
use coffey::sys::{Escapee, ExitStatus, Outside, SpawnError, Stage, Sys};
use coffey::time::Instant;
use libfuzzer_sys::fuzz_target;

const N: usize = 4;
const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;
/// A group member's pid: its leader's + this (the model has one member).
const MEMBER: i32 = 100_000;
/// An escapee's pid (own session, own group): its leader's + this.
const ESCAPEE: i32 = 50_000;

/// The processes the machines supervise. Main processes with an even pid
/// die on SIGTERM, odd ones only on SIGKILL; so do their group member and
/// their escapee. A death is a zombie until the harness reaps it.
struct Model {
    next: i32,
    fail: u8,
    now: u64,
    /// Main processes alive.
    live: Vec<i32>,
    /// Dead, not yet reaped: (pid, status).
    zombies: Vec<(i32, ExitStatus)>,
    /// Leaders whose group has a live member besides the leader.
    groups: Vec<i32>,
    /// Live escapees (pid = leader + ESCAPEE, own group).
    escapees: Vec<i32>,
    /// Events (and health changes) per slot, for invariant 3.
    emitted: [u32; N],
    /// When each slot's current stop began, for invariant 4.
    stop_began: [Option<u64>; N],
}

fn dies(pid: i32, sig: i32) -> bool {
    sig == SIGKILL || (sig == SIGTERM && pid % 2 == 0)
}

impl Model {
    fn die(&mut self, pid: i32, sig: i32) {
        self.zombies.push((pid, ExitStatus::Signal(sig)));
    }
}

impl Sys for Model {
    fn spawn(&mut self, _idx: usize) -> Result<i32, SpawnError> {
        self.fail = self.fail.wrapping_mul(31).wrapping_add(7);
        match self.fail % 5 {
            0 => Err(SpawnError {
                stage: Stage::Exec,
                errno: 2,
            }),
            1 => Err(SpawnError {
                stage: Stage::Fork,
                errno: 11,
            }),
            _ => {
                self.next += 1;
                let pid = 100 + self.next;
                self.live.push(pid);
                if self.fail % 3 == 0 {
                    self.groups.push(pid);
                }
                if self.fail % 7 < 2 {
                    self.escapees.push(pid + ESCAPEE);
                }
                Ok(pid)
            }
        }
    }
    fn kill_group(&mut self, pgid: i32, sig: i32) {
        if !dies(pgid, sig) {
            return;
        }
        if let Some(k) = self.live.iter().position(|&p| p == pgid) {
            self.live.remove(k);
            self.die(pgid, sig);
        }
        if let Some(k) = self.groups.iter().position(|&g| g == pgid) {
            self.groups.remove(k);
            self.die(pgid + MEMBER, sig);
        }
    }
    fn group_alive(&mut self, pgid: i32) -> bool {
        self.live.contains(&pgid) || self.groups.contains(&pgid)
    }
    fn group_members(&mut self, pgid: i32) -> u32 {
        u32::from(self.live.contains(&pgid)) + u32::from(self.groups.contains(&pgid))
    }
    fn emit(&mut self, idx: usize, from: StateName, to: StateName, _event: &Event) {
        if let Some(e) = self.emitted.get_mut(idx) {
            *e += 1;
        }
        if let Some(b) = self.stop_began.get_mut(idx) {
            if to != StateName::Stopping {
                *b = None;
            } else if from != StateName::Stopping {
                *b = Some(self.now);
            }
        }
    }
    fn health(&mut self, idx: usize, _check: &Check, _state: StateName, _pid: i32) {
        if let Some(e) = self.emitted.get_mut(idx) {
            *e += 1;
        }
    }
    fn escapees(&mut self, _idx: usize, pgid: i32, out: &mut [Escapee]) -> Outside {
        let e = pgid + ESCAPEE;
        if !self.escapees.contains(&e) {
            return Outside::default();
        }
        if let Some(o) = out.first_mut() {
            *o = Escapee { pid: e, pgrp: e };
        }
        Outside {
            count: 1,
            pid: e,
            comm: [0; 16],
        }
    }
    fn kill_escapee(&mut self, e: Escapee, sig: i32) {
        if !dies(e.pgrp, sig) {
            return;
        }
        if let Some(k) = self.escapees.iter().position(|&p| p == e.pgrp) {
            self.escapees.remove(k);
            self.die(e.pgrp, sig);
        }
    }
    fn escapee_alive(&mut self, e: Escapee) -> bool {
        self.escapees.contains(&e.pgrp)
    }
    fn start_probe(&mut self, idx: usize, _role: Role) -> Result<(), ProbeError> {
        if idx % 2 == 0 {
            Ok(())
        } else {
            Err(ProbeError::Connect(111))
        }
    }
}

/// Invariants 1 (table side), 2 and 5: hold after every step.
fn check_table(sup: &Supervisor<'_>, m: &Model) {
    let mut leaders = 0;
    for (i, s) in sup.services().iter().enumerate() {
        let has = matches!(
            s.state.name(),
            StateName::Starting | StateName::Running | StateName::Stopping
        );
        assert_eq!(
            s.state.pid().is_some(),
            has,
            "slot {i}: pid in {:?}",
            s.state
        );
        let tracked = s.escapees().iter().any(|e| !e.is_none());
        assert!(
            !tracked || s.state.name() == StateName::Stopping,
            "escapees of slot {i} outlive its stop"
        );
        if let Some(p) = s.state.leader() {
            leaders += 1;
            let exists = m.live.contains(&p) || m.zombies.iter().any(|z| z.0 == p);
            assert!(exists, "slot {i} holds pid {p}, which is no process");
            assert_eq!(sup.owner_of(p), Some(i), "index lost pid {p} of slot {i}");
            for (j, t) in sup.services().iter().enumerate() {
                assert!(
                    j == i || t.state.leader() != Some(p),
                    "pid {p} in {i} and {j}"
                );
            }
        }
    }
    assert_eq!(sup.indexed(), leaders, "index holds stale pids");
    // Propagation keeps each service's holders (dependents with a process,
    // transitively) up to date incrementally: a fresh count must agree.
    assert!(sup.holders_agree(), "holders drifted from a fresh count");
}

/// Invariant 1 (process side): once every zombie is reaped, each live
/// process of the model is known to a slot. A process no slot knows
/// would outlive its service: an escape.
fn check_nothing_escapes(sup: &Supervisor<'_>, m: &Model) {
    let svcs = sup.services();
    for &p in &m.live {
        assert!(
            svcs.iter().any(|s| s.state.leader() == Some(p)),
            "live pid {p} in no slot"
        );
    }
    for &g in &m.groups {
        let held = svcs.iter().any(|s| s.state.pid() == Some(g));
        assert!(held, "group {g} has a live member, in no slot");
    }
    for &e in &m.escapees {
        let leader = e - ESCAPEE;
        let runs = svcs.iter().any(|s| s.state.leader() == Some(leader));
        let tracked = svcs
            .iter()
            .any(|s| s.escapees().iter().any(|x| x.pgrp == e));
        assert!(
            runs || tracked,
            "escapee {e} of {leader} is tracked by no slot"
        );
    }
}

/// Reaps every zombie, as the loop does first in each turn.
fn reap(sup: &mut Supervisor<'_>, m: &mut Model, t: Instant) {
    for _ in 0..64 {
        if m.zombies.is_empty() {
            return;
        }
        let (pid, st) = m.zombies.remove(0);
        sup.on_exit(pid, st, t, m);
        for s in sup.services() {
            assert_ne!(
                s.state.leader(),
                Some(pid),
                "pid {pid} still held after on_exit"
            );
        }
        check_table(sup, m);
    }
    panic!("reaping does not converge: {:?}", m.zombies);
}

/// Invariant 3: after `tick(t)`, nothing is left due without an action.
fn tick(sup: &mut Supervisor<'_>, m: &mut Model, t: Instant) {
    let before = m.emitted;
    sup.tick(t, m);
    let mut machine_due = false;
    for (i, s) in sup.services().iter().enumerate() {
        let acted = m.emitted[i] != before[i];
        let due = s.poll_at() <= t || s.checks.iter().flatten().any(|c| c.poll_at() <= t);
        assert!(
            !due || acted,
            "slot {i} ({:?}) is due at {} <= now {} after a tick, untouched",
            s.state,
            s.poll_at().0,
            t.0
        );
        machine_due |= due;
    }
    assert!(
        sup.poll_at() > t || machine_due,
        "a shutdown deadline {} <= now {} is left due",
        sup.poll_at().0,
        t.0
    );
    check_table(sup, m);
}

/// The loop at one instant: tick, reap what the tick killed, and turn
/// again while something is due now (a zero timeout or backoff).
fn settle(sup: &mut Supervisor<'_>, m: &mut Model, t: Instant, stop_timeout: &[u64; N]) {
    let mut turns = 0;
    loop {
        tick(sup, m, t);
        reap(sup, m, t);
        if sup.poll_at() > t {
            break;
        }
        turns += 1;
        assert!(
            turns < 32,
            "the loop spins at {}: {:?}",
            t.0,
            sup.services().iter().map(|s| s.state).collect::<Vec<_>>()
        );
    }
    check_nothing_escapes(sup, m);
    // Invariant 4.
    for (i, s) in sup.services().iter().enumerate() {
        if let (StateName::Stopping, Some(b)) = (s.state.name(), m.stop_began[i]) {
            assert!(
                t.0 < b + stop_timeout[i],
                "slot {i} still stopping at {} (began {b}, stop_timeout {}): {:?}",
                t.0,
                stop_timeout[i],
                s.state
            );
        }
    }
}

fn service(i: usize, b: u8) -> Service {
    let mut p = Policy {
        kind: if b & 1 == 0 {
            Kind::Service
        } else {
            Kind::Oneshot
        },
        restart: match (b >> 1) % 3 {
            0 => Restart::Always,
            1 => Restart::OnFailure,
            _ => Restart::Never,
        },
        max_restarts: u32::from(b >> 4),
        backoff_initial: if b & 4 == 0 { 10 } else { 0 },
        backoff_max: 1000,
        stop_timeout: if b & 0x40 == 0 { 50 } else { 0 },
        ..Policy::default()
    };
    p.needs_ready = b & 8 != 0;
    let mut s = Service::new(i as u16, p);
    if b & 8 != 0 {
        let pol = CheckPolicy {
            mode: Mode::Probe,
            interval: 20,
            timeout: 10,
            start_period: 0,
            retries: 1,
            success_threshold: 1,
        };
        // With the high bit, a startup check too: it gates the others.
        let startup = (b & 0x80 != 0).then(|| Check::new(Role::Startup, pol));
        s.checks = [
            Some(Check::new(Role::Readiness, pol)),
            Some(Check::new(Role::Liveness, pol)),
            startup,
        ];
    }
    if i > 0 {
        let cond = match b % 3 {
            0 => Condition::Started,
            1 => Condition::Healthy,
            _ => Condition::Completed,
        };
        let _ = s.deps.push(Dep {
            idx: u16::from(b) % i as u16,
            condition: cond,
        });
    }
    s
}

/// A process of the model exits on its own (`pid` reaped next turn).
fn exits(m: &mut Model, pid: i32, st: ExitStatus, with_group: bool) -> bool {
    let Some(k) = m.live.iter().position(|&p| p == pid) else {
        return false;
    };
    m.live.remove(k);
    m.zombies.push((pid, st));
    if let (true, Some(g)) = (with_group, m.groups.iter().position(|&g| g == pid)) {
        m.groups.remove(g);
        m.zombies.push((pid + MEMBER, st));
    }
    true
}

fuzz_target!(|data: &[u8]| {
    if data.len() < N {
        return;
    }
    let mut v: Vec<Service> = (0..N).map(|i| service(i, data[i])).collect();
    let stop_timeout: [u64; N] = core::array::from_fn(|i| v[i].policy.stop_timeout);
    let mut m = Model {
        next: 0,
        fail: data[0],
        now: 0,
        live: Vec::new(),
        zombies: Vec::new(),
        groups: Vec::new(),
        escapees: Vec::new(),
        emitted: [0; N],
        stop_began: [None; N],
    };
    let mut px = vec![PidSlot::EMPTY; PidIndex::capacity_for(N)];
    let mut sup = Supervisor::new(&mut v, &mut px, N);
    let mut now = 0u64;
    sup.start_all(Instant(now), &mut m);
    check_table(&sup, &m);
    settle(&mut sup, &mut m, Instant(now), &stop_timeout);
    for w in data[N..].chunks(2) {
        let (op, arg) = (w[0], *w.get(1).unwrap_or(&0));
        let idx = usize::from(arg) % N;
        now += u64::from(op >> 4);
        m.now = now;
        let t = Instant(now);
        reap(&mut sup, &mut m, t);
        let st = if arg & 1 == 0 {
            ExitStatus::Code(i32::from(arg >> 1))
        } else {
            ExitStatus::Signal(9)
        };
        match op % 10 {
            0 => {}
            1 => {
                // The main process of a slot exits; (0x10) its group with it.
                if let Some(p) = sup.services()[idx].state.leader() {
                    exits(&mut m, p, st, op & 0x10 != 0);
                }
            }
            8 => {
                // Any pid: a live main process, or an orphan the daemon
                // never spawned (reparented to it, the subreaper).
                let pid = 100 + i32::from(arg);
                let zombie = m.zombies.iter().any(|z| z.0 == pid);
                if !exits(&mut m, pid, st, op & 0x10 != 0) && !zombie {
                    sup.on_exit(pid, st, t, &mut m);
                }
            }
            2 => {
                sup.start(idx, t, &mut m);
            }
            3 => {
                sup.stop(idx, t, &mut m);
            }
            4 => {
                sup.restart(idx, t, &mut m);
            }
            5 => sup.probe_result(
                idx,
                match arg % 3 {
                    0 => Role::Readiness,
                    1 => Role::Liveness,
                    _ => Role::Startup,
                },
                if arg & 2 == 0 {
                    Ok(())
                } else {
                    Err(ProbeError::Timeout)
                },
                t,
                &mut m,
            ),
            6 => sup.notified(idx, arg & 1 == 0, t, &mut m),
            7 => {
                // A leftover member of some group exits on its own.
                if !m.groups.is_empty() {
                    let g = m.groups.remove(usize::from(arg) % m.groups.len());
                    m.zombies.push((g + MEMBER, ExitStatus::Code(0)));
                }
                // An escapee exits on its own.
                if op & 0x10 != 0 && !m.escapees.is_empty() {
                    let e = m.escapees.remove(usize::from(arg) % m.escapees.len());
                    m.zombies.push((e, ExitStatus::Code(0)));
                }
            }
            _ => sup.shutdown(t, 100, &mut m),
        }
        check_table(&sup, &m);
        reap(&mut sup, &mut m, t);
        settle(&mut sup, &mut m, t, &stop_timeout);
    }
});
