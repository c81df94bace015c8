//! Fuzz the service machine and the supervisor: any sequence of inputs,
//! exits, spawn failures, leftover group members and time jumps must never
//! panic, and these invariants must hold after every step:
//! - after `on_exit(p)`, no slot still has `p` as its unreaped main pid
//!   (an exit is routed in every state that has a process);
//! - the pid index agrees with the table: each unreaped main pid maps to
//!   its slot, and it holds nothing else;
//! - a pid only in states with a process; no two slots share a main pid;
//! - escapees (processes a run left outside its group) are tracked only
//!   while that run is being stopped: never while a new copy runs.
#![no_main]

use coffey::health::{Check, CheckPolicy, Mode, ProbeError, Role};
use coffey::pidindex::{PidIndex, PidSlot};
use coffey::service::{Condition, Dep, Event, Kind, Policy, Restart, Service, StateName};
use coffey::supervisor::Supervisor;
use coffey::sys::{Escapee, ExitStatus, Outside, SpawnError, Stage, Sys};
use coffey::time::Instant;
use libfuzzer_sys::fuzz_target;

/// Spawns with scripted failures; some groups keep a member after their
/// leader exits (a daemonizing program), and some of those members ignore
/// the stop signal until SIGKILL.
struct Fake {
    next: i32,
    fail: u8,
    /// Groups with a live member besides the leader.
    groups: Vec<i32>,
    /// Live escapees (pid = leader + 50_000, own group), found when their
    /// leader exits; odd ones ignore the stop signal.
    escapees: Vec<i32>,
}

impl Sys for Fake {
    fn spawn(&mut self, _idx: usize) -> Result<i32, SpawnError> {
        self.fail = self.fail.wrapping_mul(31).wrapping_add(7);
        match self.fail % 5 {
            0 => Err(SpawnError { stage: Stage::Exec, errno: 2 }),
            1 => Err(SpawnError { stage: Stage::Fork, errno: 11 }),
            _ => {
                self.next += 1;
                let pid = 100 + self.next;
                if self.fail % 3 == 0 {
                    self.groups.push(pid);
                }
                if self.fail % 7 < 2 {
                    self.escapees.push(pid + 50_000);
                }
                Ok(pid)
            }
        }
    }
    fn kill_group(&mut self, pgid: i32, sig: i32) {
        if sig == 9 || (sig == 15 && pgid % 2 == 0) {
            self.groups.retain(|&g| g != pgid);
        }
    }
    fn group_alive(&mut self, pgid: i32) -> bool {
        self.groups.contains(&pgid)
    }
    fn emit(&mut self, _idx: usize, _from: StateName, _to: StateName, _event: &Event) {}
    fn escapees(&mut self, _idx: usize, pgid: i32, out: &mut [Escapee]) -> Outside {
        let e = pgid + 50_000;
        if !self.escapees.contains(&e) {
            return Outside::default();
        }
        if let Some(o) = out.first_mut() {
            *o = Escapee { pid: e, pgrp: e };
        }
        Outside { count: 1, pid: e, comm: [0; 16] }
    }
    fn kill_escapee(&mut self, e: Escapee, sig: i32) {
        if sig == 9 || (sig == 15 && e.pgrp % 2 == 0) {
            self.escapees.retain(|&p| p != e.pgrp);
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

fn check(sup: &Supervisor<'_>) {
    let mut leaders = 0;
    for (i, s) in sup.services().iter().enumerate() {
        let has = matches!(
            s.state.name(),
            StateName::Starting | StateName::Running | StateName::Stopping
        );
        assert_eq!(s.state.pid().is_some(), has);
        let tracked = s.escapees().iter().any(|e| !e.is_none());
        assert!(!tracked || s.state.name() == StateName::Stopping, "escapees of slot {i} outlive its stop");
        if let Some(p) = s.state.leader() {
            leaders += 1;
            assert_eq!(sup.owner_of(p), Some(i), "index lost pid {p} of slot {i}");
            for (j, t) in sup.services().iter().enumerate() {
                assert!(j == i || t.state.leader() != Some(p), "pid {p} in {i} and {j}");
            }
        }
    }
    assert_eq!(sup.indexed(), leaders, "index holds stale pids");
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let n = 4;
    let mut v: Vec<Service> = (0..n)
        .map(|i| {
            let b = data[i as usize];
            let mut p = Policy {
                kind: if b & 1 == 0 { Kind::Service } else { Kind::Oneshot },
                restart: match (b >> 1) % 3 {
                    0 => Restart::Always,
                    1 => Restart::OnFailure,
                    _ => Restart::Never,
                },
                max_restarts: u32::from(b >> 4),
                backoff_initial: if b & 4 == 0 { 10 } else { 0 },
                backoff_max: 1000,
                stop_timeout: 50,
                ..Policy::default()
            };
            p.needs_ready = b & 8 != 0;
            let mut s = Service::new(i, p);
            if b & 8 != 0 {
                let pol = CheckPolicy { mode: Mode::Probe, interval: 20, timeout: 10, start_period: 0, retries: 1, success_threshold: 1 };
                s.checks = [Some(Check::new(Role::Readiness, pol)), Some(Check::new(Role::Liveness, pol))];
            }
            if i > 0 {
                let cond = match b % 3 {
                    0 => Condition::Started,
                    1 => Condition::Healthy,
                    _ => Condition::Completed,
                };
                let _ = s.deps.push(Dep { idx: (b as u16) % i, condition: cond });
            }
            s
        })
        .collect();
    let mut sys = Fake { next: 0, fail: data[0], groups: Vec::new(), escapees: Vec::new() };
    let mut px = vec![PidSlot::EMPTY; PidIndex::capacity_for(n as usize)];
    let mut sup = Supervisor::new(&mut v, &mut px, n as usize);
    let mut now = 0u64;
    sup.start_all(Instant(now), &mut sys);
    check(&sup);
    for w in data[4..].chunks(2) {
        let (op, arg) = (w[0], *w.get(1).unwrap_or(&0));
        let idx = usize::from(arg) % n as usize;
        now += u64::from(op >> 4);
        let t = Instant(now);
        match op % 10 {
            0 => sup.tick(t, &mut sys),
            1 | 8 => {
                // The main process of a slot, or (8) any pid: a group
                // member, a reaped leader's pgid, an orphan.
                let pid = if op % 10 == 1 {
                    sup.services()[idx].state.pid().unwrap_or(9999)
                } else {
                    100 + i32::from(arg)
                };
                if op & 0x10 != 0 {
                    // The members of its group died with it.
                    sys.groups.retain(|&g| g != pid);
                }
                let st = if arg & 1 == 0 { ExitStatus::Code(i32::from(arg >> 1)) } else { ExitStatus::Signal(9) };
                sup.on_exit(pid, st, t, &mut sys);
                for s in sup.services() {
                    assert_ne!(s.state.leader(), Some(pid), "pid {pid} still held after on_exit");
                }
            }
            2 => {
                sup.start(idx, t, &mut sys);
            }
            3 => {
                sup.stop(idx, t, &mut sys);
            }
            4 => {
                sup.restart(idx, t, &mut sys);
            }
            5 => sup.probe_result(idx, if arg & 1 == 0 { Role::Readiness } else { Role::Liveness }, if arg & 2 == 0 { Ok(()) } else { Err(ProbeError::Timeout) }, t, &mut sys),
            6 => sup.notified(idx, arg & 1 == 0, t, &mut sys),
            7 => {
                // A leftover member of some group exits on its own.
                if !sys.groups.is_empty() {
                    let g = sys.groups.remove(usize::from(arg) % sys.groups.len());
                    sup.on_exit(g + 100_000, ExitStatus::Code(0), t, &mut sys);
                }
                // An escapee exits on its own and is reaped.
                if op & 0x10 != 0 && !sys.escapees.is_empty() {
                    let e = sys.escapees.remove(usize::from(arg) % sys.escapees.len());
                    sup.on_exit(e, ExitStatus::Code(0), t, &mut sys);
                }
            }
            _ => sup.shutdown(t, 100, &mut sys),
        }
        check(&sup);
        sup.tick(t, &mut sys);
        check(&sup);
    }
});
