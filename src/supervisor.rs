//! The SUPERVISOR: owns the service table (borrowed from the shell) and
//! routes events to the machines.
//!
//! Dependency and shutdown propagation is a bounded fixpoint: repeated
//! passes over the table, at most `n + 1` of them, never recursion. A pass
//! starts every service whose dependencies are met (so independent services
//! start together) and, during shutdown, stops every service that no running
//! service depends on (reverse dependency order).

use crate::health::{CheckInput, CheckState, Mode, ProbeError, Role, Verdict};
use crate::service::{Condition, Input, Service, State, Want};

use crate::sys::{ExitStatus, Sys, SIGKILL};
use crate::time::{Instant, Millis};

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum DepStatus {
    Ready,
    Pending,
    Failed,
}

pub struct Supervisor<'a> {
    svcs: &'a mut [Service],
    /// Number of slots in use (the rest are headroom for reload).
    used: usize,
    /// Set once shutdown began: its deadline.
    shutdown_at: Option<Instant>,
    /// SIGKILL went to every group at the deadline.
    killed_all: bool,
    /// Processes reaped that belonged to no service's main pid.
    pub orphans_reaped: u64,
}

impl<'a> Supervisor<'a> {
    /// `svcs[..used]` are configured services; the rest are spare slots.
    pub fn new(svcs: &'a mut [Service], used: usize) -> Self {
        let used = used.min(svcs.len());
        Supervisor {
            svcs,
            used,
            shutdown_at: None,
            killed_all: false,
            orphans_reaped: 0,
        }
    }

    pub fn services(&self) -> &[Service] {
        self.svcs.get(..self.used).unwrap_or(&[])
    }

    fn active(&mut self) -> &mut [Service] {
        self.svcs.get_mut(..self.used).unwrap_or(&mut [])
    }

    /// Wants every service up; they start as their dependencies allow.
    pub fn start_all(&mut self, now: Instant, sys: &mut impl Sys) {
        for s in self.active() {
            if !s.adopted {
                s.step(Input::Start, now, sys);
            }
        }
        self.propagate(now, sys);
    }

    pub fn shutting_down(&self) -> bool {
        self.shutdown_at.is_some()
    }

    /// Begins an ordered shutdown that must end by `now + timeout`.
    pub fn shutdown(&mut self, now: Instant, timeout: Millis, sys: &mut impl Sys) {
        if self.shutdown_at.is_none() {
            self.shutdown_at = Some(now.add(timeout));
        }
        for s in self.active() {
            s.want_down();
        }
        self.propagate(now, sys);
    }

    /// Reload: the number of slots in use (never beyond the table).
    pub fn set_used(&mut self, used: usize) {
        self.used = used.min(self.svcs.len());
    }

    /// Reload: direct access to a slot's machine (policy, deps).
    pub fn service_mut(&mut self, idx: usize) -> Option<&mut Service> {
        self.svcs.get_mut(idx)
    }

    /// Services in use.
    pub fn len(&self) -> usize {
        self.used
    }

    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// Marks `idx` and, transitively, what it depends on (`up`) or what
    /// depends on it (`!up`). Bounded passes, no recursion.
    fn mark_closure(&mut self, idx: usize, up: bool) {
        for s in self.active() {
            s.mark = false;
        }
        if let Some(s) = self.active().get_mut(idx) {
            s.mark = true;
        }
        let n = self.used;
        for _ in 0..n {
            let mut changed = false;
            for j in 0..n {
                let Some(s) = self.services().get(j) else {
                    break;
                };
                let deps = s.deps.clone();
                if up {
                    if !s.mark {
                        continue;
                    }
                    for d in deps.iter() {
                        if let Some(t) = self.active().get_mut(usize::from(d.idx)) {
                            changed |= !t.mark;
                            t.mark = true;
                        }
                    }
                } else if !s.mark {
                    let hit = deps.iter().any(|d| {
                        self.services()
                            .get(usize::from(d.idx))
                            .is_some_and(|t| t.mark)
                    });
                    if hit {
                        if let Some(s) = self.active().get_mut(j) {
                            s.mark = true;
                            changed = true;
                        }
                    }
                }
            }
            if !changed {
                break;
            }
        }
    }

    /// Operator `start`: the service and everything it depends on.
    /// Returns false for an unknown index or during shutdown.
    pub fn start(&mut self, idx: usize, now: Instant, sys: &mut impl Sys) -> bool {
        if idx >= self.used || self.shutdown_at.is_some() {
            return false;
        }
        self.mark_closure(idx, true);
        for s in self.active() {
            if s.mark {
                s.step(Input::Start, now, sys);
            }
        }
        self.propagate(now, sys);
        true
    }

    /// Operator `stop`: the service, after everything that depends on it.
    pub fn stop(&mut self, idx: usize, now: Instant, sys: &mut impl Sys) -> bool {
        if idx >= self.used {
            return false;
        }
        self.mark_closure(idx, false);
        for s in self.active() {
            if s.mark {
                s.want_down();
            }
        }
        self.propagate(now, sys);
        true
    }

    /// Operator `restart`: stop (dependents untouched) and start again;
    /// counters reset, so it never counts toward `max_restarts`.
    pub fn restart(&mut self, idx: usize, now: Instant, sys: &mut impl Sys) -> bool {
        if idx >= self.used || self.shutdown_at.is_some() {
            return false;
        }
        if let Some(s) = self.active().get_mut(idx) {
            s.reset_counters();
            if s.state.has_process() {
                s.step(Input::Stop, now, sys);
            }
        }
        self.start(idx, now, sys)
    }

    /// Shutdown is over: nothing runs any more, or the deadline passed and
    /// everything left got SIGKILL.
    pub fn finished(&self) -> bool {
        self.shutdown_at.is_some()
            && (self.killed_all || self.services().iter().all(|s| !s.state.has_process()))
    }

    /// A process was reaped. Returns the index of the service it was the
    /// main process of, if any.
    pub fn on_exit(
        &mut self,
        pid: i32,
        status: ExitStatus,
        now: Instant,
        sys: &mut impl Sys,
    ) -> Option<usize> {
        let mut found = None;
        for (i, s) in self.active().iter_mut().enumerate() {
            let mine = match s.state {
                State::Running { pid: p, .. } => p == pid,
                State::Stopping {
                    pid: p,
                    leader_gone,
                    ..
                } => p == pid && !leader_gone,
                _ => false,
            };
            if mine {
                s.step(Input::Exited { status }, now, sys);
                found = Some(i);
                break;
            }
        }
        if found.is_none() {
            self.orphans_reaped = self.orphans_reaped.saturating_add(1);
        }
        for s in self.active() {
            if matches!(
                s.state,
                State::Stopping {
                    leader_gone: true,
                    ..
                }
            ) {
                s.step(Input::Reaped, now, sys);
            }
        }
        self.propagate(now, sys);
        found
    }

    /// Fires due deadlines.
    pub fn tick(&mut self, now: Instant, sys: &mut impl Sys) {
        // The loop calls this every turn; most turns nothing is due.
        if self.poll_at() > now {
            return;
        }
        for s in self.active() {
            if s.poll_at() <= now {
                s.step(Input::Tick, now, sys);
            }
        }
        for i in 0..self.used {
            for r in 0..2 {
                let due = self
                    .services()
                    .get(i)
                    .and_then(|s| s.checks.get(r).copied().flatten())
                    .is_some_and(|c| c.poll_at() <= now);
                if due {
                    self.check_step(i, r, CheckInput::Tick, now, sys);
                }
            }
        }
        if let Some(at) = self.shutdown_at {
            if now >= at && !self.killed_all {
                for s in self.active() {
                    if let Some(pid) = s.state.pid() {
                        sys.kill_group(pid, SIGKILL);
                    }
                }
                self.killed_all = true;
            }
        }
        self.propagate(now, sys);
    }

    /// The earliest deadline of any machine.
    pub fn poll_at(&self) -> Instant {
        let mut at = Instant::NEVER;
        for s in self.services() {
            at = at.min(s.poll_at());
            for c in s.checks.iter().flatten() {
                at = at.min(c.poll_at());
            }
        }
        if let (Some(d), false) = (self.shutdown_at, self.killed_all) {
            at = at.min(d);
        }
        at
    }

    fn dep_status(&self, idx: u16, cond: Condition) -> DepStatus {
        let Some(d) = self.services().get(usize::from(idx)) else {
            return DepStatus::Failed;
        };
        match (cond, d.state) {
            (_, State::Failed) => DepStatus::Failed,
            (_, State::Completed) => DepStatus::Ready,
            (Condition::Started, State::Starting { .. }) => DepStatus::Ready,
            // Running means readiness passed (or there is no check).
            (Condition::Started | Condition::Healthy, State::Running { .. }) => DepStatus::Ready,
            // Exited cleanly with no restart: it did start.
            (Condition::Started | Condition::Healthy, State::Stopped) if d.want == Want::Up => {
                DepStatus::Ready
            }
            _ => DepStatus::Pending,
        }
    }

    /// Marks `held` on every service that has a process or that a held
    /// service depends on (transitively: a completed oneshot between two
    /// services keeps the order). Bounded passes, no recursion.
    fn mark_held(&mut self) {
        for s in self.active() {
            s.held = s.state.has_process();
        }
        let n = self.used;
        for _ in 0..n {
            let mut changed = false;
            for j in 0..n {
                let Some(s) = self.services().get(j) else {
                    break;
                };
                if !s.held {
                    continue;
                }
                let deps = s.deps.clone();
                for d in deps.iter() {
                    if let Some(t) = self.active().get_mut(usize::from(d.idx)) {
                        if !t.held {
                            t.held = true;
                            changed = true;
                        }
                    }
                }
            }
            if !changed {
                break;
            }
        }
    }

    /// Whether any held service depends on `idx`.
    fn has_live_dependent(&self, idx: usize) -> bool {
        self.services()
            .iter()
            .any(|s| s.held && s.deps.iter().any(|d| usize::from(d.idx) == idx))
    }

    /// After changing services from outside the machines (reload): start
    /// what can start, stop what must stop, sync the checks.
    pub fn settle(&mut self, now: Instant, sys: &mut impl Sys) {
        self.propagate(now, sys);
    }

    /// A probe finished.
    pub fn probe_result(
        &mut self,
        idx: usize,
        role: Role,
        r: Result<(), ProbeError>,
        now: Instant,
        sys: &mut impl Sys,
    ) {
        self.check_step(idx, role.index(), CheckInput::Result(r), now, sys);
        self.propagate(now, sys);
    }

    /// notify readiness: the fd got a newline, or READY=1 / WATCHDOG=1
    /// arrived from the service's process group.
    pub fn notified(&mut self, idx: usize, ping: bool, now: Instant, sys: &mut impl Sys) {
        let input = if ping {
            CheckInput::Ping
        } else {
            CheckInput::Notified
        };
        self.check_step(idx, 0, input, now, sys);
        self.propagate(now, sys);
    }

    /// sd_notify input for the readiness check of `idx` (WATCHDOG=trigger,
    /// or the watchdog side of EXTEND_TIMEOUT_USEC=).
    pub fn notify_check(
        &mut self,
        idx: usize,
        input: CheckInput,
        now: Instant,
        sys: &mut impl Sys,
    ) {
        self.check_step(idx, 0, input, now, sys);
        self.propagate(now, sys);
    }

    /// sd_notify EXTEND_TIMEOUT_USEC=: the service's start or stop deadline,
    /// and its watchdog, are due no sooner than `by` from now.
    pub fn extend_timeout(&mut self, idx: usize, by: Millis, now: Instant, sys: &mut impl Sys) {
        if let Some(s) = self.active().get_mut(idx) {
            s.step(Input::ExtendTimeout { by }, now, sys);
        }
        self.notify_check(idx, CheckInput::Extend(by), now, sys);
    }

    /// Steps check `r` (0 readiness, 1 liveness) of service `i` and acts
    /// on what it asks for.
    fn check_step(
        &mut self,
        i: usize,
        r: usize,
        input: CheckInput,
        now: Instant,
        sys: &mut impl Sys,
    ) {
        let Some(c) = self
            .svcs
            .get_mut(i)
            .and_then(|s| s.checks.get_mut(r))
            .and_then(|c| c.as_mut())
        else {
            return;
        };
        let mut actions = c.step(input, now);
        let role = c.role;
        if actions.cancel_probe {
            sys.cancel_probe(i, role);
        }
        if actions.start_probe {
            if let Err(e) = sys.start_probe(i, role) {
                // Could not even start: that is the probe's result.
                if let Some(c) = self
                    .svcs
                    .get_mut(i)
                    .and_then(|s| s.checks.get_mut(r))
                    .and_then(|c| c.as_mut())
                {
                    let more = c.step(CheckInput::Result(Err(e)), now);
                    actions.verdict = more.verdict.or(actions.verdict);
                }
            }
        }
        let Some(v) = actions.verdict else { return };
        let Some(s) = self.svcs.get_mut(i) else {
            return;
        };
        if let Some(c) = s.checks.get(r).copied().flatten() {
            sys.health(i, &c, s.state.name(), s.state.pid().unwrap_or(0));
            let passive = matches!(c.policy.mode, Mode::Passive { .. });
            match (role, v) {
                (Role::Readiness, Verdict::Healthy) => s.step(Input::Ready, now, sys),
                // The watchdog of a notify service: restart it.
                (Role::Readiness, Verdict::Unhealthy) if passive => {
                    s.step(Input::Unhealthy, now, sys)
                }
                (Role::Liveness, Verdict::Unhealthy) => s.step(Input::Unhealthy, now, sys),
                _ => {}
            }
        }
    }

    /// Probes run only while the service has a live process: start the
    /// checks of services that came up, stop those of services that went
    /// down (which cancels any probe in flight).
    fn sync_checks(&mut self, now: Instant, sys: &mut impl Sys) {
        for i in 0..self.used {
            for r in 0..2 {
                let Some(s) = self.services().get(i) else {
                    break;
                };
                let up = matches!(s.state, State::Starting { .. } | State::Running { .. });
                let Some(c) = s.checks.get(r).copied().flatten() else {
                    continue;
                };
                let on = c.state != CheckState::Off;
                if up && !on {
                    self.check_step(i, r, CheckInput::ServiceUp, now, sys);
                } else if !up && on {
                    self.check_step(i, r, CheckInput::ServiceDown, now, sys);
                }
            }
        }
    }

    fn propagate(&mut self, now: Instant, sys: &mut impl Sys) {
        self.propagate_states(now, sys);
        self.sync_checks(now, sys);
    }

    fn propagate_states(&mut self, now: Instant, sys: &mut impl Sys) {
        let n = self.used;
        for _pass in 0..=n {
            let mut changed = false;
            // `held` is only consulted for services being stopped.
            let stopping = self.services().iter().any(|s| {
                s.want == Want::Down
                    && matches!(s.state, State::Running { .. } | State::Starting { .. })
            });
            if stopping {
                self.mark_held();
            }
            for i in 0..n {
                let Some(s) = self.services().get(i) else {
                    break;
                };
                let before = s.state;
                let input = if s.want == Want::Down {
                    // Stopped in reverse dependency order: only once nothing
                    // that depends on it (transitively) has a process.
                    match s.state {
                        State::Running { .. } | State::Starting { .. }
                            if !self.has_live_dependent(i) =>
                        {
                            Some(Input::Stop)
                        }
                        State::Waiting | State::Backoff { .. } => Some(Input::Stop),
                        _ => None,
                    }
                } else if self.shutdown_at.is_none()
                    && s.state == State::Waiting
                    && s.want == Want::Up
                {
                    let mut verdict = Input::DepsReady;
                    for d in s.deps.iter() {
                        match self.dep_status(d.idx, d.condition) {
                            DepStatus::Ready => {}
                            DepStatus::Pending => {
                                verdict = Input::DepsBlocked {
                                    idx: d.idx,
                                    failed: false,
                                };
                            }
                            DepStatus::Failed => {
                                verdict = Input::DepsBlocked {
                                    idx: d.idx,
                                    failed: true,
                                };
                                break;
                            }
                        }
                    }
                    Some(verdict)
                } else {
                    None
                };
                if let (Some(input), Some(s)) = (input, self.active().get_mut(i)) {
                    s.step(input, now, sys);
                    changed |= s.state != before;
                }
            }
            if !changed {
                break;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, clippy::disallowed_macros)]
mod tests {
    use super::*;
    use crate::service::{Dep, Event, Kind, Policy, Restart, StateName};
    use crate::sys::SpawnError;
    use std::vec::Vec;

    #[derive(Default)]
    struct Rec {
        pid: i32,
        spawned: Vec<(usize, i32)>,
        kills: Vec<(i32, i32)>,
        alive: Vec<i32>,
        events: Vec<(usize, StateName, StateName, Event)>,
    }
    impl Sys for Rec {
        fn spawn(&mut self, idx: usize) -> Result<i32, SpawnError> {
            self.pid += 1;
            self.spawned.push((idx, self.pid));
            Ok(self.pid)
        }
        fn kill_group(&mut self, pgid: i32, sig: i32) {
            self.kills.push((pgid, sig));
        }
        fn group_alive(&mut self, pgid: i32) -> bool {
            self.alive.contains(&pgid)
        }
        fn emit(&mut self, idx: usize, from: StateName, to: StateName, e: &Event) {
            self.events.push((idx, from, to, *e));
        }
    }

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    /// a <- b <- c (c depends on b, b on a), d independent.
    fn chain(cond_b: Condition, kind_a: Kind) -> Vec<Service> {
        let mut v: Vec<Service> = (0..4).map(|i| Service::new(i, Policy::default())).collect();
        v[0].policy.kind = kind_a;
        if kind_a == Kind::Oneshot {
            v[0].policy.restart = Restart::Never;
        }
        v[1].deps
            .push(Dep {
                idx: 0,
                condition: cond_b,
            })
            .unwrap();
        v[2].deps
            .push(Dep {
                idx: 1,
                condition: Condition::Started,
            })
            .unwrap();
        v
    }

    #[test]
    fn starts_in_dependency_order_independents_together() {
        let mut v = chain(Condition::Started, Kind::Service);
        let mut sys = Rec::default();
        let mut sup = Supervisor::new(&mut v, 4);
        sup.start_all(t(0), &mut sys);
        let order: Vec<usize> = sys.spawned.iter().map(|x| x.0).collect();
        assert_eq!(order.len(), 4);
        let pos = |i| order.iter().position(|&x| x == i).unwrap();
        assert!(pos(0) < pos(1) && pos(1) < pos(2));
    }

    #[test]
    fn completed_condition_waits_for_oneshot() {
        let mut v = chain(Condition::Completed, Kind::Oneshot);
        let mut sys = Rec::default();
        let mut sup = Supervisor::new(&mut v, 4);
        sup.start_all(t(0), &mut sys);
        assert_eq!(sup.services()[1].state, State::Waiting);
        let pid_a = sys.spawned.iter().find(|x| x.0 == 0).unwrap().1;
        sup.on_exit(pid_a, ExitStatus::Code(0), t(5), &mut sys);
        assert_eq!(sup.services()[0].state, State::Completed);
        assert!(sup.services()[1].state.has_process());
        assert!(sup.services()[2].state.has_process());
    }

    #[test]
    fn failed_dependency_blocks_with_reason() {
        let mut v = chain(Condition::Completed, Kind::Oneshot);
        let mut sys = Rec::default();
        let mut sup = Supervisor::new(&mut v, 4);
        sup.start_all(t(0), &mut sys);
        sup.on_exit(1, ExitStatus::Code(1), t(5), &mut sys);
        assert_eq!(sup.services()[0].state, State::Failed);
        assert_eq!(sup.services()[1].state, State::Waiting);
        assert_eq!(
            sup.services()[1].reason,
            crate::service::Reason::Dependency {
                idx: 0,
                failed: true
            }
        );
    }

    #[test]
    fn shutdown_in_reverse_order_and_finishes_when_all_dead() {
        let mut v = chain(Condition::Started, Kind::Service);
        let mut sys = Rec::default();
        let mut sup = Supervisor::new(&mut v, 4);
        sup.start_all(t(0), &mut sys);
        let pid = |sys: &Rec, i| sys.spawned.iter().find(|x| x.0 == i).unwrap().1;
        sup.shutdown(t(10), 30_000, &mut sys);
        // c (2) and d (3) first; a and b wait for their dependents.
        let stopped: Vec<i32> = sys
            .kills
            .iter()
            .filter(|k| k.1 == 15)
            .map(|k| k.0)
            .collect();
        assert_eq!(stopped.len(), 2);
        assert!(stopped.contains(&pid(&sys, 2)) && stopped.contains(&pid(&sys, 3)));
        let (p2, p3, p1, p0) = (pid(&sys, 2), pid(&sys, 3), pid(&sys, 1), pid(&sys, 0));
        sup.on_exit(p3, ExitStatus::Signal(15), t(11), &mut sys);
        assert!(!sup.finished());
        sup.on_exit(p2, ExitStatus::Signal(15), t(12), &mut sys);
        assert!(sys.kills.contains(&(p1, 15)));
        assert!(!sys.kills.contains(&(p0, 15)));
        sup.on_exit(p1, ExitStatus::Signal(15), t(13), &mut sys);
        assert!(sys.kills.contains(&(p0, 15)));
        sup.on_exit(p0, ExitStatus::Signal(15), t(14), &mut sys);
        assert!(sup.finished());
        // No restart happened during shutdown.
        assert_eq!(sys.spawned.len(), 4);
    }

    #[test]
    fn shutdown_order_is_transitive_through_a_completed_oneshot() {
        // b depends on the oneshot a (completed); a depends on db.
        let mut v: Vec<Service> = (0..3).map(|i| Service::new(i, Policy::default())).collect();
        v[1].policy.kind = Kind::Oneshot;
        v[1].policy.restart = Restart::Never;
        v[1].deps
            .push(Dep {
                idx: 0,
                condition: Condition::Started,
            })
            .unwrap();
        v[2].deps
            .push(Dep {
                idx: 1,
                condition: Condition::Completed,
            })
            .unwrap();
        let mut sys = Rec::default();
        let mut sup = Supervisor::new(&mut v, 3);
        sup.start_all(t(0), &mut sys);
        sup.on_exit(2, ExitStatus::Code(0), t(1), &mut sys);
        assert_eq!(sup.services()[1].state, State::Completed);
        let (db, b) = (1, 3);
        sup.shutdown(t(2), 30_000, &mut sys);
        assert!(sys.kills.contains(&(b, 15)));
        assert!(!sys.kills.contains(&(db, 15)), "db outlives b");
        sup.on_exit(b, ExitStatus::Signal(15), t(3), &mut sys);
        assert!(sys.kills.contains(&(db, 15)));
    }

    #[test]
    fn shutdown_deadline_kills_everything() {
        let mut v = chain(Condition::Started, Kind::Service);
        for s in v.iter_mut() {
            s.policy.stop_timeout = 60_000;
        }
        let mut sys = Rec::default();
        let mut sup = Supervisor::new(&mut v, 4);
        sup.start_all(t(0), &mut sys);
        sup.shutdown(t(0), 1000, &mut sys);
        assert_eq!(sup.poll_at(), t(1000));
        sup.tick(t(999), &mut sys);
        assert!(!sup.finished());
        sup.tick(t(1000), &mut sys);
        assert!(sup.finished());
        assert_eq!(sys.kills.iter().filter(|k| k.1 == SIGKILL).count(), 4);
    }

    #[test]
    fn operator_stop_takes_dependents_down_first_and_start_brings_deps() {
        let mut v = chain(Condition::Started, Kind::Service);
        let mut sys = Rec::default();
        let mut sup = Supervisor::new(&mut v, 4);
        sup.start_all(t(0), &mut sys);
        let pid = |sys: &Rec, i| sys.spawned.iter().rev().find(|x| x.0 == i).unwrap().1;
        let (p0, p1, p2) = (pid(&sys, 0), pid(&sys, 1), pid(&sys, 2));
        // stop a: c then b then a; d untouched.
        sup.stop(0, t(10), &mut sys);
        assert!(sys.kills.contains(&(p2, 15)));
        assert!(!sys.kills.contains(&(p1, 15)));
        sup.on_exit(p2, ExitStatus::Signal(15), t(11), &mut sys);
        assert!(sys.kills.contains(&(p1, 15)));
        sup.on_exit(p1, ExitStatus::Signal(15), t(12), &mut sys);
        sup.on_exit(p0, ExitStatus::Signal(15), t(13), &mut sys);
        for i in 0..3 {
            assert_eq!(sup.services()[i].state, State::Stopped, "{i}");
        }
        assert!(sup.services()[3].state.has_process());
        // start c: brings b and a back first.
        let before = sys.spawned.len();
        sup.start(2, t(20), &mut sys);
        let order: Vec<usize> = sys.spawned[before..].iter().map(|x| x.0).collect();
        assert_eq!(order, [0, 1, 2]);
    }

    #[test]
    fn operator_restart_resets_counters_and_keeps_dependents() {
        let mut v = chain(Condition::Started, Kind::Service);
        let mut sys = Rec::default();
        let mut sup = Supervisor::new(&mut v, 4);
        sup.start_all(t(0), &mut sys);
        let p0 = sys.spawned.iter().find(|x| x.0 == 0).unwrap().1;
        sup.restart(0, t(5), &mut sys);
        assert!(sys.kills.contains(&(p0, 15)));
        assert_eq!(sup.services()[0].state.name(), StateName::Stopping);
        sup.on_exit(p0, ExitStatus::Signal(15), t(6), &mut sys);
        assert!(matches!(sup.services()[0].state, State::Running { .. }));
        assert_eq!(sup.services()[0].restarts, 0);
        assert_eq!(sup.services()[0].failures, 0);
        assert!(sup.services()[1].state.has_process(), "dependent untouched");
    }

    fn probe_check(role: crate::health::Role) -> crate::health::Check {
        crate::health::Check::new(
            role,
            crate::health::CheckPolicy {
                mode: crate::health::Mode::Probe,
                interval: 1000,
                timeout: 500,
                start_period: 0,
                retries: 2,
                success_threshold: 1,
            },
        )
    }

    #[test]
    fn readiness_gates_healthy_dependents_and_liveness_restarts() {
        use crate::health::{ProbeError, Role};
        // b depends on a with condition healthy; a has both checks.
        let mut v: Vec<Service> = (0..2).map(|i| Service::new(i, Policy::default())).collect();
        v[0].policy.needs_ready = true;
        v[0].checks = [
            Some(probe_check(Role::Readiness)),
            Some(probe_check(Role::Liveness)),
        ];
        v[1].deps
            .push(Dep {
                idx: 0,
                condition: Condition::Healthy,
            })
            .unwrap();
        let mut sys = Rec::default();
        let mut sup = Supervisor::new(&mut v, 2);
        sup.start_all(t(0), &mut sys);
        assert_eq!(sup.services()[0].state.name(), StateName::Starting);
        assert_eq!(sup.services()[1].state, State::Waiting);
        // First probes are due at once.
        assert_eq!(sup.poll_at(), t(0));
        sup.tick(t(0), &mut sys);
        sup.probe_result(
            0,
            Role::Readiness,
            Err(ProbeError::HttpStatus(503)),
            t(10),
            &mut sys,
        );
        assert_eq!(sup.services()[1].state, State::Waiting);
        sup.probe_result(0, Role::Liveness, Ok(()), t(10), &mut sys);
        sup.tick(t(1010), &mut sys);
        sup.probe_result(0, Role::Readiness, Ok(()), t(1020), &mut sys);
        assert_eq!(sup.services()[0].state.name(), StateName::Running);
        assert!(
            sup.services()[1].state.has_process(),
            "healthy dependency releases b"
        );
        // Liveness fails twice: a is stopped, then backs off (a failure).
        let pid_a = sys.spawned[0].1;
        sup.probe_result(
            0,
            Role::Liveness,
            Err(ProbeError::Timeout),
            t(1100),
            &mut sys,
        );
        sup.tick(t(2100), &mut sys);
        sup.probe_result(
            0,
            Role::Liveness,
            Err(ProbeError::Timeout),
            t(2110),
            &mut sys,
        );
        assert!(sys.kills.contains(&(pid_a, 15)));
        assert_eq!(sup.services()[0].state.name(), StateName::Stopping);
        sup.on_exit(pid_a, ExitStatus::Signal(15), t(2120), &mut sys);
        assert_eq!(sup.services()[0].state.name(), StateName::Backoff);
        assert_eq!(sup.services()[0].failures, 1);
        assert_eq!(sup.services()[0].reason, crate::service::Reason::Unhealthy);
        // Checks are off while there is no process.
        assert!(sup.services()[0]
            .checks
            .iter()
            .flatten()
            .all(|c| c.state == crate::health::CheckState::Off));
        assert!(
            sup.services()[1].state.has_process(),
            "dependents are left alone"
        );
    }

    #[test]
    fn start_timeout_fails_a_service_that_never_gets_ready() {
        use crate::health::Role;
        let mut v: Vec<Service> = (0..1).map(|i| Service::new(i, Policy::default())).collect();
        v[0].policy.needs_ready = true;
        v[0].policy.start_timeout = Some(3000);
        v[0].checks = [Some(probe_check(Role::Readiness)), None];
        let mut sys = Rec::default();
        let mut sup = Supervisor::new(&mut v, 1);
        sup.start_all(t(0), &mut sys);
        sup.tick(t(3000), &mut sys);
        assert_eq!(sup.services()[0].state.name(), StateName::Stopping);
        assert_eq!(
            sup.services()[0].reason,
            crate::service::Reason::StartTimeout
        );
    }

    #[test]
    fn orphans_are_counted() {
        let mut v = chain(Condition::Started, Kind::Service);
        let mut sys = Rec::default();
        let mut sup = Supervisor::new(&mut v, 4);
        sup.start_all(t(0), &mut sys);
        assert_eq!(sup.on_exit(999, ExitStatus::Code(0), t(1), &mut sys), None);
        assert_eq!(sup.orphans_reaped, 1);
    }
}
