//! Fuzz the service machine and the supervisor: any sequence of inputs,
//! exits, spawn failures and time jumps must never panic, and the basic
//! invariants must hold (a pid only in states with a process; deadlines
//! never in the past after a tick).
#![no_main]

use coffey::health::{Check, CheckPolicy, Mode, ProbeError, Role};
use coffey::service::{Condition, Dep, Event, Kind, Policy, Restart, Service, StateName};
use coffey::supervisor::Supervisor;
use coffey::sys::{ExitStatus, SpawnError, Stage, Sys};
use coffey::time::Instant;
use libfuzzer_sys::fuzz_target;

struct Fake {
    next: i32,
    fail: u8,
}

impl Sys for Fake {
    fn spawn(&mut self, _idx: usize) -> Result<i32, SpawnError> {
        self.fail = self.fail.wrapping_mul(31).wrapping_add(7);
        match self.fail % 5 {
            0 => Err(SpawnError { stage: Stage::Exec, errno: 2 }),
            1 => Err(SpawnError { stage: Stage::Fork, errno: 11 }),
            _ => {
                self.next += 1;
                Ok(100 + self.next)
            }
        }
    }
    fn kill_group(&mut self, _pgid: i32, _sig: i32) {}
    fn group_alive(&mut self, pgid: i32) -> bool {
        pgid % 3 == 0
    }
    fn emit(&mut self, _idx: usize, _from: StateName, _to: StateName, _event: &Event) {}
    fn start_probe(&mut self, idx: usize, _role: Role) -> Result<(), ProbeError> {
        if idx % 2 == 0 {
            Ok(())
        } else {
            Err(ProbeError::Connect(111))
        }
    }
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
                backoff_initial: 10,
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
    let mut sys = Fake { next: 0, fail: data[0] };
    let mut sup = Supervisor::new(&mut v, n as usize);
    let mut now = 0u64;
    sup.start_all(Instant(now), &mut sys);
    for w in data[4..].chunks(2) {
        let (op, arg) = (w[0], *w.get(1).unwrap_or(&0));
        let idx = usize::from(arg) % n as usize;
        now += u64::from(op >> 3);
        let t = Instant(now);
        match op % 8 {
            0 => sup.tick(t, &mut sys),
            1 => {
                let pid = sup.services()[idx].state.pid().unwrap_or(9999);
                sup.on_exit(pid, if arg & 1 == 0 { ExitStatus::Code(i32::from(arg >> 1)) } else { ExitStatus::Signal(9) }, t, &mut sys);
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
            _ => sup.shutdown(t, 100, &mut sys),
        }
        for s in sup.services() {
            let has = matches!(s.state.name(), StateName::Starting | StateName::Running | StateName::Stopping);
            assert_eq!(s.state.pid().is_some(), has);
        }
        sup.tick(t, &mut sys);
    }
});
