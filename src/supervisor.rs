//! The SUPERVISOR: owns the service table (borrowed from the shell) and
//! routes events to the machines.
//!
//! A reaped pid finds its slot through the pid index (also borrowed, sized
//! at startup), kept in step by [`Supervisor::step_one`], the one place that
//! steps a machine. The machine alone decides what an exit means in its
//! state; the supervisor never matches states to decide who owns a pid.
//!
//! Dependency and shutdown propagation walks the table in dependency order
//! (`order.rs`, rebuilt after a reload changed the table): one walk starts
//! every service whose dependencies are met (so independent services start
//! together, and a chain starts in one walk) and, during shutdown, stops
//! every service that nothing with a process depends on (reverse
//! dependency order). A walk is O(services + edges); a fixpoint repeats it
//! while it changes something, bounded, never recursion.

use crate::health::{Check, CheckInput, CheckState, Mode, ProbeError, Role, Verdict, ROLES};
use crate::limits::{MAX_DEPS, SHUTDOWN_LAST_CALL_MS, SHUTDOWN_REAP_GRACE_MS};
use crate::order::{self, Order};
use crate::pidindex::{PidIndex, PidSlot};
use crate::service::{Condition, Input, Service, State, Want};

use crate::sys::{ExitStatus, StateName, Sys};
use crate::time::{Instant, Millis};

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum DepStatus {
    Ready,
    Pending,
    Failed,
}

pub struct Supervisor<'a> {
    svcs: &'a mut [Service],
    /// Main pid -> slot, for every machine whose leader is not yet reaped.
    pids: PidIndex<'a>,
    /// Number of slots in use (the rest are headroom for reload).
    used: usize,
    /// Set once shutdown began: its deadline.
    shutdown_at: Option<Instant>,
    /// When services not yet signalled get their stop signal anyway.
    last_call_at: Option<Instant>,
    last_call_done: bool,
    /// SIGKILL went to every group at the deadline.
    killed_all: bool,
    /// After the final SIGKILL: how long to wait for the reaps (so every
    /// service's last exit status is known) before giving up on them.
    reap_by: Instant,
    reap_gave_up: bool,
    /// Processes reaped that belonged to no service's main pid.
    pub orphans_reaped: u64,
    /// Pids the index could not hold (storage smaller than
    /// [`PidIndex::capacity_for`]); such exits are counted as orphans.
    pub index_full: u32,
    /// A service due to start waits for the next turn (`Sys::may_spawn`):
    /// the next tick comes at once.
    deferred: bool,
    /// The dependency order of `svcs[..used]`, and whether the table
    /// changed since it was built.
    order: Order,
    order_stale: bool,
    /// The work queue of propagation (intrusive, `Link::queue_next`):
    /// services that may have something to do because they or a
    /// neighbour changed. Each is in it at most once.
    queue: (u16, u16),
    /// Services in `Stopping { leader_gone: true }`: they want to hear
    /// of every reap.
    draining: u32,
}

impl<'a> Supervisor<'a> {
    /// `svcs[..used]` are configured services; the rest are spare slots.
    /// `pids` is the index's storage: lend
    /// `PidIndex::capacity_for(svcs.len())` buckets.
    pub fn new(svcs: &'a mut [Service], pids: &'a mut [PidSlot], used: usize) -> Self {
        let used = used.min(svcs.len());
        let mut sup = Supervisor {
            svcs,
            pids: PidIndex::new(pids),
            used,
            shutdown_at: None,
            last_call_at: None,
            last_call_done: false,
            killed_all: false,
            reap_by: Instant::NEVER,
            reap_gave_up: false,
            orphans_reaped: 0,
            index_full: 0,
            deferred: false,
            order: Order {
                first: order::NONE,
                last: order::NONE,
            },
            order_stale: true,
            queue: (order::NONE, order::NONE),
            draining: 0,
        };
        for i in 0..sup.svcs.len() {
            sup.index(i, None);
        }
        sup
    }

    /// Brings the index in line with slot `i` after its leader changed
    /// from `before`.
    fn index(&mut self, i: usize, before: Option<i32>) {
        let after = self.svcs.get(i).and_then(|s| s.state.leader());
        if before == after {
            return;
        }
        if let Some(p) = before {
            self.pids.remove(p);
        }
        if let Some(p) = after {
            let slot = u16::try_from(i).unwrap_or(u16::MAX);
            if self.pids.insert(p, slot).is_err() {
                self.index_full = self.index_full.saturating_add(1);
            }
        }
    }

    /// Steps machine `i`: the only way a machine is stepped, so the pid
    /// index follows every spawn and every reap.
    fn step_one(&mut self, i: usize, input: Input, now: Instant, sys: &mut impl Sys) {
        let Some(s) = self.svcs.get_mut(i) else {
            return;
        };
        let (before, state, want) = (s.state.leader(), s.state, s.want);
        s.step(input, now, sys);
        let changed = s.state != state || s.want != want;
        let drains = |st: State| {
            matches!(
                st,
                State::Stopping {
                    leader_gone: true,
                    ..
                }
            )
        };
        let after = s.state;
        self.index(i, before);
        if drains(state) != drains(after) {
            self.draining = if drains(after) {
                self.draining.saturating_add(1)
            } else {
                self.draining.saturating_sub(1)
            };
        }
        if changed {
            self.touch(i);
        }
    }

    /// Queues `i` and its neighbours: its dependents (a start may now be
    /// due) and its dependencies (their holders may have changed).
    fn touch(&mut self, i: usize) {
        self.enqueue(i);
        let mut d = order::Dependents::of(self.svcs, i);
        while let Some(j) = d.next(self.svcs) {
            self.enqueue(j);
        }
        let deps = self.svcs.get(i).map(|s| s.deps.clone()).unwrap_or_default();
        for d in deps.iter() {
            self.enqueue(usize::from(d.idx));
        }
    }

    fn enqueue(&mut self, i: usize) {
        if i >= self.used {
            return;
        }
        let Some(s) = self.svcs.get_mut(i).filter(|s| !s.link.queued) else {
            return;
        };
        s.link.queued = true;
        s.link.queue_next = order::NONE;
        let me = u16::try_from(i).unwrap_or(order::NONE);
        let (head, tail) = self.queue;
        match self.svcs.get_mut(usize::from(tail)) {
            Some(t) => t.link.queue_next = me,
            None => debug_assert_eq!(head, order::NONE),
        }
        self.queue = (if head == order::NONE { me } else { head }, me);
    }

    fn dequeue(&mut self) -> Option<usize> {
        let (head, tail) = self.queue;
        let s = self.svcs.get_mut(usize::from(head))?;
        s.link.queued = false;
        let next = s.link.queue_next;
        self.queue = if head == tail {
            (order::NONE, order::NONE)
        } else {
            (next, tail)
        };
        Some(usize::from(head))
    }

    /// Queues every service in use (after an operator command or a
    /// reload: anything may have changed).
    fn enqueue_all(&mut self) {
        for i in 0..self.used {
            self.enqueue(i);
        }
    }

    /// After `reexec`: slot `i` takes over a process the previous binary
    /// started (see [`Service::adopt`]).
    pub fn adopt(
        &mut self,
        i: usize,
        pid: i32,
        since: Instant,
        restarts: u32,
        failures: u32,
        want_up: bool,
    ) {
        let Some(s) = self.svcs.get_mut(i) else {
            return;
        };
        let before = s.state.leader();
        s.adopt(pid, since, restarts, failures, want_up);
        self.index(i, before);
        // Holders follow from the states: recount them.
        self.order_stale = true;
    }

    /// The slot whose main process is `pid`, from the index.
    pub fn owner_of(&self, pid: i32) -> Option<usize> {
        self.pids.get(pid)
    }

    /// Entries in the pid index (one per unreaped main process).
    pub fn indexed(&self) -> usize {
        self.pids.len()
    }

    pub fn services(&self) -> &[Service] {
        self.svcs.get(..self.used).unwrap_or(&[])
    }

    fn active(&mut self) -> &mut [Service] {
        self.svcs.get_mut(..self.used).unwrap_or(&mut [])
    }

    /// Wants every service up; they start as their dependencies allow.
    pub fn start_all(&mut self, now: Instant, sys: &mut impl Sys) {
        for i in 0..self.used {
            if self.svcs.get(i).is_some_and(|s| !s.adopted) {
                self.step_one(i, Input::Start, now, sys);
            }
        }
        self.propagate(now, sys);
    }

    pub fn shutting_down(&self) -> bool {
        self.shutdown_at.is_some()
    }

    /// When the shutdown must be over (`None`: no shutdown yet).
    pub fn shutdown_deadline(&self) -> Option<Instant> {
        self.shutdown_at
    }

    /// Begins an ordered shutdown that must end by `now + timeout`.
    pub fn shutdown(&mut self, now: Instant, timeout: Millis, sys: &mut impl Sys) {
        if self.shutdown_at.is_none() {
            let at = now.add(timeout);
            self.shutdown_at = Some(at);
            // The last call leaves the stop signal some time to work
            // before the SIGKILL, within the same total timeout.
            let call = SHUTDOWN_LAST_CALL_MS.min(timeout / 4);
            self.last_call_at = Some(Instant::from_millis(at.millis().saturating_sub(call)));
        }
        for s in self.active() {
            s.want_down();
        }
        self.enqueue_all();
        self.propagate(now, sys);
    }

    /// Reload: the number of slots in use (never beyond the table).
    pub fn set_used(&mut self, used: usize) {
        self.used = used.min(self.svcs.len());
        self.order_stale = true;
    }

    /// Reload: direct access to a slot's machine (policy, deps). Its state
    /// must not be changed this way: the pid index would not follow (use
    /// [`Supervisor::adopt`]).
    pub fn service_mut(&mut self, idx: usize) -> Option<&mut Service> {
        self.order_stale = true;
        self.svcs.get_mut(idx)
    }

    /// The dependency order, rebuilt first if the table changed.
    fn order(&mut self) -> Order {
        if self.order_stale {
            self.order = order::build(self.svcs, self.used);
            self.order_stale = false;
            self.queue = (order::NONE, order::NONE);
            self.count_holders();
            self.enqueue_all();
        }
        self.order
    }

    /// Counts every service's holders afresh: one walk, dependents first.
    fn count_holders(&mut self) {
        let mut w = self.order.backward();
        while let Some(j) = w.next(self.svcs) {
            let Some(s) = self.svcs.get_mut(j) else {
                break;
            };
            s.link.holding = s.state.has_process() || s.link.holders > 0;
            if !s.link.holding {
                continue;
            }
            let deps = s.deps.clone();
            for d in deps.iter().filter(|d| usize::from(d.idx) < self.used) {
                if let Some(t) = self.svcs.get_mut(usize::from(d.idx)) {
                    t.link.holders = t.link.holders.saturating_add(1);
                }
            }
        }
    }

    /// Whether `i` holds its dependencies now; if that changed, counts it
    /// in (or out of) their holders and queues them.
    fn refresh_holding(&mut self, i: usize) {
        let Some(s) = self.svcs.get_mut(i) else {
            return;
        };
        let now = s.state.has_process() || s.link.holders > 0;
        if now == s.link.holding {
            return;
        }
        s.link.holding = now;
        let deps = s.deps.clone();
        let used = self.used;
        for d in deps.iter().filter(|d| usize::from(d.idx) < used) {
            if let Some(t) = self.svcs.get_mut(usize::from(d.idx)) {
                t.link.holders = if now {
                    t.link.holders.saturating_add(1)
                } else {
                    t.link.holders.saturating_sub(1)
                };
            }
            self.enqueue(usize::from(d.idx));
        }
    }

    /// Whether every `holders` count and `holding` flag equals a fresh
    /// count (tests and fuzzing: the incremental upkeep is right).
    pub fn holders_agree(&self) -> bool {
        let svcs = self.services();
        svcs.iter().enumerate().all(|(i, s)| {
            let mut holders = 0u16;
            let mut d = order::Dependents::of(svcs, i);
            while let Some(j) = d.next(svcs) {
                holders =
                    holders.saturating_add(u16::from(svcs.get(j).is_some_and(|t| t.link.holding)));
            }
            let holding = s.state.has_process() || holders > 0;
            holders == s.link.holders && holding == s.link.holding
        })
    }

    /// Whether any dependency of `s` is marked.
    fn a_dep_is_marked(&self, s: &Service) -> bool {
        s.deps.iter().any(|d| {
            self.services()
                .get(usize::from(d.idx))
                .is_some_and(|t| t.mark)
        })
    }

    /// Services in use.
    pub fn len(&self) -> usize {
        self.used
    }

    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// Marks `idx` and, transitively, what it depends on (`up`) or what
    /// depends on it (`!up`): one walk in dependency order.
    fn mark_closure(&mut self, idx: usize, up: bool) {
        for s in self.active() {
            s.mark = false;
        }
        if let Some(s) = self.active().get_mut(idx) {
            s.mark = true;
        }
        let order = self.order();
        if up {
            // Dependents first: a marked service marks its dependencies
            // before they are visited.
            let mut w = order.backward();
            while let Some(j) = w.next(self.svcs) {
                let deps = match self.services().get(j) {
                    Some(s) if s.mark => s.deps.clone(),
                    _ => continue,
                };
                for d in deps.iter() {
                    if let Some(t) = self.active().get_mut(usize::from(d.idx)) {
                        t.mark = true;
                    }
                }
            }
        } else {
            // Dependencies first: a service is marked once one of its
            // dependencies is, which was decided before.
            let mut w = order.forward();
            while let Some(j) = w.next(self.svcs) {
                let hit = self
                    .services()
                    .get(j)
                    .is_some_and(|s| !s.mark && self.a_dep_is_marked(s));
                if hit {
                    if let Some(s) = self.active().get_mut(j) {
                        s.mark = true;
                    }
                }
            }
        }
    }

    /// Operator `start`: the service and what it depends on, then the
    /// dependents that a `stop` of it took down (not those stopped by
    /// name). Returns false for an unknown index or during shutdown.
    pub fn start(&mut self, idx: usize, now: Instant, sys: &mut impl Sys) -> bool {
        if idx >= self.used || self.shutdown_at.is_some() {
            return false;
        }
        self.start_with_deps(idx, now, sys);
        self.revive_dependents(idx, now, sys);
        self.propagate(now, sys);
        true
    }

    /// Whether dependency `s` needs no new run to serve its dependents: a
    /// completed oneshot, or a service that exited cleanly under a policy
    /// that does not restart it (both satisfy every condition).
    fn satisfied(s: &Service) -> bool {
        s.state == State::Completed || (s.state == State::Stopped && s.want == Want::Up)
    }

    /// Starts `idx` and, transitively, what it depends on, except the
    /// dependencies already satisfied (`restart api` does not re-run the
    /// completed migration api depends on).
    fn start_with_deps(&mut self, idx: usize, now: Instant, sys: &mut impl Sys) {
        self.mark_closure(idx, true);
        for i in 0..self.used {
            let Some(s) = self.svcs.get_mut(i) else {
                break;
            };
            if !s.mark || (i != idx && Self::satisfied(s)) {
                continue;
            }
            s.down_by_dep = false;
            self.step_one(i, Input::Start, now, sys);
        }
    }

    /// After `start idx`: the dependents that a `stop` took down with it
    /// come back, each once all its dependencies are wanted up again (one
    /// stopped by name stays down, and so does what needs it).
    fn revive_dependents(&mut self, idx: usize, now: Instant, sys: &mut impl Sys) {
        self.mark_closure(idx, false);
        for (i, s) in self.active().iter_mut().enumerate() {
            s.mark = s.mark && s.down_by_dep && i != idx;
        }
        // Dependencies first: each is wanted up again before its
        // dependents are judged.
        let mut w = self.order().forward();
        while let Some(j) = w.next(self.svcs) {
            let Some(s) = self.services().get(j) else {
                break;
            };
            let ready = s.mark
                && s.deps.iter().all(|d| {
                    self.services()
                        .get(usize::from(d.idx))
                        .is_some_and(|t| t.want == Want::Up || t.state == State::Completed)
                });
            if !ready {
                continue;
            }
            if let Some(s) = self.svcs.get_mut(j) {
                s.mark = false;
                s.down_by_dep = false;
            }
            self.step_one(j, Input::Start, now, sys);
        }
    }

    /// Operator `stop`: the service, after everything that depends on it.
    /// Dependents it takes down remember it, for a later `start`.
    pub fn stop(&mut self, idx: usize, now: Instant, sys: &mut impl Sys) -> bool {
        if idx >= self.used {
            return false;
        }
        self.mark_closure(idx, false);
        for (i, s) in self.active().iter_mut().enumerate() {
            if !s.mark {
                continue;
            }
            if i == idx {
                s.down_by_dep = false;
            } else if s.want == Want::Up
                && !matches!(s.state, State::Completed | State::Stopped | State::Failed)
            {
                s.down_by_dep = true;
            }
            s.want_down();
        }
        self.enqueue_all();
        self.propagate(now, sys);
        true
    }

    /// Operator `restart`: stop (dependents untouched) and start again;
    /// counters reset, so it never counts toward `max_restarts`.
    pub fn restart(&mut self, idx: usize, now: Instant, sys: &mut impl Sys) -> bool {
        if idx >= self.used || self.shutdown_at.is_some() {
            return false;
        }
        let running = match self.active().get_mut(idx) {
            Some(s) => {
                s.reset_counters();
                s.state.has_process()
            }
            None => false,
        };
        if running {
            self.step_one(idx, Input::Stop, now, sys);
        }
        self.start(idx, now, sys)
    }

    /// The first start is over: no service is starting, and no waiting
    /// one has a dependency that is still on its way (running towards
    /// healthy or completed, or stopping to restart); a dependency that
    /// waits itself is judged at its own turn, so a chain below a failed
    /// service has settled. A service manager above coffeyd is told
    /// READY=1 then (`daemon::manager`). A service that keeps crashing
    /// must not hold that back, so backoff counts as settled.
    pub fn settled(&self) -> bool {
        let svcs = self.services();
        let done = |i: u16| {
            svcs.get(usize::from(i)).is_none_or(|t| {
                !matches!(
                    t.state.name(),
                    StateName::Starting | StateName::Running | StateName::Stopping
                )
            })
        };
        svcs.iter().all(|s| match s.state.name() {
            StateName::Starting => false,
            StateName::Waiting => s.deps.iter().all(|d| done(d.idx)),
            _ => true,
        })
    }

    /// Shutdown is over: nothing runs any more (every last exit status is
    /// known), or the final SIGKILL went out and the reap grace passed
    /// (a process stuck in D state must not hold the shutdown forever).
    pub fn finished(&self) -> bool {
        self.shutdown_at.is_some()
            && (self.reap_gave_up || self.services().iter().all(|s| !s.state.has_process()))
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
        let found = self.pids.get(pid);
        match found {
            Some(i) => self.step_one(i, Input::Exited { status }, now, sys),
            None => self.orphans_reaped = self.orphans_reaped.saturating_add(1),
        }
        // A reaped group member may have emptied a group being drained.
        for i in 0..self.used {
            if self.draining == 0 {
                break;
            }
            let draining = self.svcs.get(i).is_some_and(|s| {
                matches!(
                    s.state,
                    State::Stopping {
                        leader_gone: true,
                        ..
                    }
                )
            });
            if draining {
                self.step_one(i, Input::Reaped { pid }, now, sys);
            }
        }
        self.propagate(now, sys);
        found
    }

    /// The shell saw a stopping service's processes go (its cgroup
    /// emptied) without reaping any of them: re-check whether its run
    /// is over, as a reap would.
    pub fn group_changed(&mut self, idx: usize, now: Instant, sys: &mut impl Sys) {
        let draining = self.svcs.get(idx).is_some_and(|s| {
            matches!(
                s.state,
                State::Stopping {
                    leader_gone: true,
                    ..
                }
            )
        });
        if draining && idx < self.used {
            self.step_one(idx, Input::Reaped { pid: 0 }, now, sys);
            self.propagate(now, sys);
        }
    }

    /// Fires due deadlines, and starts what an earlier turn deferred. A
    /// restart due (backoff over) waits while the turn's spawn budget is
    /// spent (`Sys::may_spawn`); it stays due, so the next turn comes at
    /// once, reaps first, and spawns then.
    pub fn tick(&mut self, now: Instant, sys: &mut impl Sys) {
        // The loop calls this every turn; most turns nothing is due.
        if self.poll_at() > now {
            return;
        }
        if core::mem::take(&mut self.deferred) {
            self.enqueue_all();
        }
        for i in 0..self.used {
            let Some(s) = self.svcs.get(i).filter(|s| s.poll_at() <= now) else {
                continue;
            };
            if matches!(s.state, State::Backoff { .. }) && !sys.may_spawn() {
                self.deferred = true;
                continue;
            }
            self.step_one(i, Input::Tick, now, sys);
        }
        for i in 0..self.used {
            for r in 0..ROLES {
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
        self.shutdown_deadlines(now, sys);
        self.propagate(now, sys);
    }

    /// The last call, then the final SIGKILL, then the end of the reap
    /// grace.
    fn shutdown_deadlines(&mut self, now: Instant, sys: &mut impl Sys) {
        let (Some(at), Some(call)) = (self.shutdown_at, self.last_call_at) else {
            return;
        };
        if now >= call && !self.last_call_done {
            self.last_call_done = true;
            // Services still waiting for their dependents to stop have had
            // no signal at all: they get it now, dependents first.
            for s in self.active() {
                s.mark = matches!(s.state, State::Starting { .. } | State::Running { .. });
            }
            self.in_reverse_order(Input::Stop, now, sys);
        }
        if now >= at && !self.killed_all {
            self.killed_all = true;
            self.reap_by = now.add(SHUTDOWN_REAP_GRACE_MS);
            if self.services().iter().any(|s| s.state.has_process()) {
                let mut killing = (self.services().iter().enumerate())
                    .filter_map(|(i, s)| s.state.pid().map(|pid| (i, pid)));
                sys.shutdown_deadline(&mut killing);
            }
            for s in self.active() {
                s.mark = s.state.has_process();
            }
            self.in_reverse_order(Input::Kill, now, sys);
        }
        if self.killed_all && now >= self.reap_by {
            // Gave up waiting for the reaps; `finished` from now on.
            self.reap_gave_up = true;
        }
    }

    /// Steps `input` into every marked service, each only after every
    /// marked service that depends on it: one walk, dependents first.
    /// Clears the marks.
    fn in_reverse_order(&mut self, input: Input, now: Instant, sys: &mut impl Sys) {
        let mut w = self.order().backward();
        while let Some(i) = w.next(self.svcs) {
            let marked = self.svcs.get_mut(i).is_some_and(|s| {
                let m = s.mark;
                s.mark = false;
                m
            });
            if marked {
                self.step_one(i, input, now, sys);
            }
        }
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
        if let (Some(call), false) = (self.last_call_at, self.last_call_done) {
            at = at.min(call);
        }
        if let (Some(d), false) = (self.shutdown_at, self.killed_all) {
            at = at.min(d);
        }
        if self.killed_all && !self.reap_gave_up {
            at = at.min(self.reap_by);
        }
        if self.deferred {
            at = Instant::from_millis(0);
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

    /// After changing services from outside the machines (reload): start
    /// what can start, stop what must stop, sync the checks.
    pub fn settle(&mut self, now: Instant, sys: &mut impl Sys) {
        self.enqueue_all();
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

    /// Which check the shell's probe `p` (see `Role::probe`) of service
    /// `idx` runs: the startup check borrows the liveness probe, and only
    /// one of the two is ever probing (liveness waits for startup to pass).
    pub fn probe_role(&self, idx: usize, p: usize) -> Role {
        let startup = self
            .services()
            .get(idx)
            .and_then(|s| s.checks.get(Role::Startup.index()).copied().flatten());
        match p {
            0 => Role::Readiness,
            _ if startup.is_some_and(|c| matches!(c.state, CheckState::Probing { .. })) => {
                Role::Startup
            }
            _ => Role::Liveness,
        }
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
        if idx < self.used {
            self.step_one(idx, Input::ExtendTimeout { by }, now, sys);
        }
        self.notify_check(idx, CheckInput::Extend(by), now, sys);
    }

    /// Steps check `r` (0 readiness, 1 liveness, 2 startup) of service `i`
    /// and acts on what it asks for.
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
        let Some(s) = self.svcs.get(i) else {
            return;
        };
        if let Some(c) = s.checks.get(r).copied().flatten() {
            sys.health(i, &c, s.state.name(), s.state.pid().unwrap_or(0));
            let passive = matches!(c.policy.mode, Mode::Passive { .. });
            let readiness = s.checks.first().is_some_and(Option::is_some);
            let input = match (role, v) {
                (Role::Readiness, Verdict::Healthy) => Some(Input::Ready),
                // The watchdog of a notify service: restart it.
                (Role::Readiness, Verdict::Unhealthy) if passive => Some(Input::Unhealthy),
                (Role::Liveness, Verdict::Unhealthy) => Some(Input::Unhealthy),
                (Role::Startup, Verdict::Unhealthy) => Some(Input::StartupFailed),
                // Without a readiness check, passing startup is ready.
                (Role::Startup, Verdict::Healthy) if !readiness => Some(Input::Ready),
                _ => None,
            };
            if let Some(input) = input {
                self.step_one(i, input, now, sys);
            }
            if role == Role::Startup {
                // Passed: the other checks start now (failed: they stay off).
                self.sync_checks(i, now, sys);
            }
        }
    }

    /// Probes run only while the service has a live process: starts the
    /// checks of service `i` if it came up, stops them if it went down
    /// (which cancels any probe in flight). As Kubernetes does, readiness
    /// and liveness start only once a startup check has passed; the
    /// startup check goes first, so they can start in the same call.
    fn sync_checks(&mut self, i: usize, now: Instant, sys: &mut impl Sys) {
        for r in [Role::Startup, Role::Readiness, Role::Liveness].map(Role::index) {
            let Some(s) = self.services().get(i) else {
                return;
            };
            let mut up = matches!(s.state, State::Starting { .. } | State::Running { .. });
            if r != Role::Startup.index() {
                up = up
                    && Check::started(s.checks.get(Role::Startup.index()).and_then(Option::as_ref));
            }
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

    /// Starts what can start and stops what must: works the queue until
    /// it is empty. Each service there is looked at once (its holders
    /// first, then its next input, then its checks); a step that changes
    /// it queues it and its neighbours again. So an exit costs O(the
    /// edges it touches), and a chain still starts in one call, each
    /// start queueing the next. Bounded, in case of a bug: what is left
    /// waits for the next call.
    fn propagate(&mut self, now: Instant, sys: &mut impl Sys) {
        self.order();
        let mut budget = self.used.saturating_add(1).saturating_mul(MAX_DEPS + 4);
        while budget > 0 {
            let Some(i) = self.dequeue() else {
                break;
            };
            budget -= 1;
            self.refresh_holding(i);
            let Some(s) = self.services().get(i) else {
                continue;
            };
            if let Some(input) = self.next_input(s) {
                // A start may have to wait for the next turn.
                if input == Input::DepsReady && !sys.may_spawn() {
                    self.deferred = true;
                } else {
                    self.step_one(i, input, now, sys);
                }
            }
            self.sync_checks(i, now, sys);
        }
    }

    /// What propagation steps into `s`, if anything.
    fn next_input(&self, s: &Service) -> Option<Input> {
        if s.want == Want::Down {
            // Stopped in reverse dependency order: only once nothing that
            // depends on it (transitively) has a process.
            return match s.state {
                State::Running { .. } | State::Starting { .. } if s.link.holders == 0 => {
                    Some(Input::Stop)
                }
                State::Waiting | State::Backoff { .. } => Some(Input::Stop),
                _ => None,
            };
        }
        if self.shutdown_at.is_some() || s.state != State::Waiting || s.want != Want::Up {
            return None;
        }
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
                    return Some(Input::DepsBlocked {
                        idx: d.idx,
                        failed: true,
                    });
                }
            }
        }
        Some(verdict)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, clippy::disallowed_macros)]
mod tests {
    use super::*;
    use crate::service::{Dep, Event, Kind, Policy, Restart, StateName};
    use crate::sys::{SpawnError, SIGKILL};
    use std::vec;
    use std::vec::Vec;

    #[derive(Default)]
    struct Rec {
        pid: i32,
        spawned: Vec<(usize, i32)>,
        kills: Vec<(i32, i32)>,
        alive: Vec<i32>,
        events: Vec<(usize, StateName, StateName, Event)>,
        /// What each `shutdown_deadline` call listed: (slot, pid).
        deadline: Vec<Vec<(usize, i32)>>,
        /// Spawns allowed per turn (None: no budget), spawns this turn.
        budget: Option<usize>,
        turn: usize,
    }
    impl Sys for Rec {
        fn may_spawn(&mut self) -> bool {
            self.budget.is_none_or(|b| self.turn < b)
        }
        fn spawn(&mut self, idx: usize) -> Result<i32, SpawnError> {
            self.turn += 1;
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
        fn shutdown_deadline(&mut self, killing: &mut dyn Iterator<Item = (usize, i32)>) {
            self.deadline.push(killing.collect());
        }
    }

    /// The index holds exactly the unreaped main pids, each to its slot.
    fn assert_index_agrees(sup: &Supervisor<'_>) {
        let mut leaders = 0;
        for (i, s) in sup.services().iter().enumerate() {
            if let Some(p) = s.state.leader() {
                leaders += 1;
                assert_eq!(sup.owner_of(p), Some(i), "slot {i} pid {p}");
            }
        }
        assert_eq!(sup.indexed(), leaders);
        assert!(sup.holders_agree(), "holders drifted from a fresh count");
    }

    fn pid_of(sys: &Rec, i: usize) -> i32 {
        sys.spawned.iter().rev().find(|x| x.0 == i).unwrap().1
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
    fn settles_once_nothing_starts_and_nothing_waiting_can_start() {
        // a <- b (healthy) <- c; d independent. a is spawned but not yet
        // ready: not settled. a fails for good: b and c wait forever, so
        // startup has settled.
        let mut v = chain(Condition::Healthy, Kind::Service);
        v[0].policy.restart = Restart::Never;
        v[0].policy.needs_ready = true;
        let mut sys = Rec::default();
        let mut px = [PidSlot::EMPTY; 16];
        let mut sup = Supervisor::new(&mut v, &mut px, 4);
        sup.start_all(t(0), &mut sys);
        let names: Vec<StateName> = sup.services().iter().map(|s| s.state.name()).collect();
        assert_eq!(names[0], StateName::Starting, "{names:?}");
        assert_eq!(names[1], StateName::Waiting, "{names:?}");
        assert!(!sup.settled(), "a is starting: {names:?}");
        sup.on_exit(pid_of(&sys, 0), ExitStatus::Code(1), t(10), &mut sys);
        sup.tick(t(10), &mut sys);
        let names: Vec<StateName> = sup.services().iter().map(|s| s.state.name()).collect();
        assert_eq!(names[0], StateName::Failed, "{names:?}");
        assert!(sup.settled(), "{names:?}");
    }

    #[test]
    fn starts_in_dependency_order_independents_together() {
        let mut v = chain(Condition::Started, Kind::Service);
        let mut sys = Rec::default();
        let mut px = [PidSlot::EMPTY; 16];
        let mut sup = Supervisor::new(&mut v, &mut px, 4);
        sup.start_all(t(0), &mut sys);
        let order: Vec<usize> = sys.spawned.iter().map(|x| x.0).collect();
        assert_eq!(order.len(), 4);
        let pos = |i| order.iter().position(|&x| x == i).unwrap();
        assert!(pos(0) < pos(1) && pos(1) < pos(2));
    }

    #[test]
    fn spawns_beyond_the_turn_budget_wait_for_the_next_turn() {
        // Ten services, three spawns a turn: starts and restarts due
        // beyond the budget stay due, and the next tick (at once) does them.
        let mut v: Vec<Service> = (0..10)
            .map(|i| Service::new(i, Policy::default()))
            .collect();
        for s in v.iter_mut() {
            s.policy.backoff_initial = 0;
        }
        let mut sys = Rec {
            budget: Some(3),
            ..Rec::default()
        };
        let mut px = [PidSlot::EMPTY; 32];
        let mut sup = Supervisor::new(&mut v, &mut px, 10);
        sup.start_all(t(0), &mut sys);
        assert_eq!(sys.spawned.len(), 3);
        assert_eq!(
            sup.poll_at(),
            t(0),
            "deferred starts: the next turn comes at once"
        );
        for turn in 1..=3 {
            sys.turn = 0;
            sup.tick(t(turn), &mut sys);
        }
        assert_eq!(sys.spawned.len(), 10);
        assert!(sup.services().iter().all(|s| s.state.has_process()));
        assert_eq!(sup.poll_at(), Instant::NEVER);
        // All ten crash at once: restarts (backoff 0) go three a turn too.
        sys.turn = 0;
        for i in 0..10 {
            sup.on_exit(pid_of(&sys, i), ExitStatus::Code(1), t(10), &mut sys);
        }
        assert_eq!(sys.spawned.len(), 10);
        sys.turn = 0;
        sup.tick(t(10), &mut sys);
        assert_eq!(sys.spawned.len(), 13);
        for turn in 11..=13 {
            sys.turn = 0;
            sup.tick(t(turn), &mut sys);
        }
        assert_eq!(sys.spawned.len(), 20);
        assert_index_agrees(&sup);
    }

    #[test]
    fn completed_condition_waits_for_oneshot() {
        let mut v = chain(Condition::Completed, Kind::Oneshot);
        let mut sys = Rec::default();
        let mut px = [PidSlot::EMPTY; 16];
        let mut sup = Supervisor::new(&mut v, &mut px, 4);
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
        let mut px = [PidSlot::EMPTY; 16];
        let mut sup = Supervisor::new(&mut v, &mut px, 4);
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
        let mut px = [PidSlot::EMPTY; 16];
        let mut sup = Supervisor::new(&mut v, &mut px, 4);
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
        let mut px = [PidSlot::EMPTY; 16];
        let mut sup = Supervisor::new(&mut v, &mut px, 3);
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
        let mut px = [PidSlot::EMPTY; 16];
        let mut sup = Supervisor::new(&mut v, &mut px, 4);
        sup.start_all(t(0), &mut sys);
        sup.shutdown(t(0), 1000, &mut sys);
        // The last call comes a quarter of the timeout before the end.
        assert_eq!(sup.poll_at(), t(750));
        sup.tick(t(999), &mut sys);
        assert_eq!(sup.poll_at(), t(1000));
        assert!(!sup.finished());
        sup.tick(t(1000), &mut sys);
        assert_eq!(sys.kills.iter().filter(|k| k.1 == SIGKILL).count(), 4);
        // Not finished before the reaps: the exit statuses are wanted.
        assert!(!sup.finished());
        for i in 0..4 {
            let p = pid_of(&sys, i);
            sup.on_exit(p, ExitStatus::Signal(9), t(1001), &mut sys);
        }
        assert!(sup.finished());
        for s in sup.services() {
            assert_eq!(s.last_exit, Some(ExitStatus::Signal(9)));
            assert_eq!(s.state, State::Stopped);
        }
    }

    #[test]
    fn shutdown_deadline_signals_the_unsignalled_in_reverse_order_then_kills() {
        // a <- b <- c, d: c traps TERM and holds b and a back; at the last
        // call b and a still get their TERM (b first), then SIGKILL.
        let mut v = chain(Condition::Started, Kind::Service);
        for s in v.iter_mut() {
            s.policy.stop_timeout = 60_000;
        }
        let mut sys = Rec::default();
        let mut px = [PidSlot::EMPTY; 16];
        let mut sup = Supervisor::new(&mut v, &mut px, 4);
        sup.start_all(t(0), &mut sys);
        let (p0, p1, p2, p3) = (
            pid_of(&sys, 0),
            pid_of(&sys, 1),
            pid_of(&sys, 2),
            pid_of(&sys, 3),
        );
        sup.shutdown(t(0), 10_000, &mut sys);
        sup.on_exit(p3, ExitStatus::Signal(15), t(5), &mut sys);
        assert!(sys.kills.contains(&(p2, 15)));
        assert!(!sys.kills.contains(&(p1, 15)));
        assert_eq!(sup.poll_at(), t(9000), "last call 1 s before the end");
        sup.tick(t(8999), &mut sys);
        assert!(!sys.kills.contains(&(p1, 15)));
        sup.tick(t(9000), &mut sys);
        let term = |p| sys.kills.iter().position(|&k| k == (p, 15)).unwrap();
        assert!(term(p1) < term(p0), "{:?}", sys.kills);
        assert!(sys.deadline.is_empty());
        assert!(!sys.kills.iter().any(|k| k.1 == SIGKILL));
        sup.tick(t(10_000), &mut sys);
        // Reported once, with every service that still has a process.
        assert_eq!(sys.deadline, [vec![(0, p0), (1, p1), (2, p2)]]);
        let kill = |p| sys.kills.iter().position(|&k| k == (p, SIGKILL)).unwrap();
        assert!(kill(p2) < kill(p1) && kill(p1) < kill(p0));
        assert!(sys.events.iter().any(|e| e.3
            == Event::Killed {
                pid: p0,
                shutdown: true
            }));
        sup.on_exit(p2, ExitStatus::Signal(9), t(10_001), &mut sys);
        sup.on_exit(p0, ExitStatus::Signal(9), t(10_001), &mut sys);
        assert!(!sup.finished(), "b not reaped yet");
        sup.tick(t(10_002), &mut sys);
        assert_eq!(sys.deadline.len(), 1, "reported once");
        // b is stuck (D state): after the reap grace shutdown ends anyway.
        assert_eq!(sup.poll_at(), t(10_000 + SHUTDOWN_REAP_GRACE_MS));
        sup.tick(t(10_000 + SHUTDOWN_REAP_GRACE_MS), &mut sys);
        assert!(sup.finished());
        assert_eq!(sup.services()[0].last_exit, Some(ExitStatus::Signal(9)));
        assert_eq!(sup.services()[3].last_exit, Some(ExitStatus::Signal(15)));
    }

    #[test]
    fn exit_is_routed_in_every_state_with_a_pid() {
        use crate::health::Role;
        // 0: starting (readiness never passes), 1: running, 2: stopping
        // with its leader alive, 3: stopping with the leader reaped and
        // one group member left.
        let mut v: Vec<Service> = (0..4).map(|i| Service::new(i, Policy::default())).collect();
        v[0].policy.needs_ready = true;
        v[0].checks = [Some(probe_check(Role::Readiness)), None, None];
        let mut sys = Rec::default();
        let mut px = [PidSlot::EMPTY; 16];
        let mut sup = Supervisor::new(&mut v, &mut px, 4);
        sup.start_all(t(0), &mut sys);
        let (p0, p1, p2, p3) = (
            pid_of(&sys, 0),
            pid_of(&sys, 1),
            pid_of(&sys, 2),
            pid_of(&sys, 3),
        );
        sup.stop(2, t(1), &mut sys);
        sys.alive.push(p3);
        sup.stop(3, t(1), &mut sys);
        assert_eq!(
            sup.on_exit(p3, ExitStatus::Signal(15), t(2), &mut sys),
            Some(3)
        );
        assert!(matches!(
            sup.services()[3].state,
            State::Stopping {
                leader_gone: true,
                ..
            }
        ));
        assert_eq!(sup.services()[0].state.name(), StateName::Starting);
        assert_index_agrees(&sup);

        // starting: the exit is a failure, with backoff (it used to wedge).
        assert_eq!(
            sup.on_exit(p0, ExitStatus::Code(1), t(10), &mut sys),
            Some(0)
        );
        assert_eq!(sup.services()[0].state.name(), StateName::Backoff);
        assert_eq!(sup.services()[0].failures, 1);
        // running
        assert_eq!(
            sup.on_exit(p1, ExitStatus::Code(1), t(10), &mut sys),
            Some(1)
        );
        assert_eq!(sup.services()[1].state.name(), StateName::Backoff);
        // stopping, leader alive
        assert_eq!(
            sup.on_exit(p2, ExitStatus::Signal(15), t(10), &mut sys),
            Some(2)
        );
        assert_eq!(sup.services()[2].state, State::Stopped);
        // stopping, leader gone: its pid is not routed again; the last
        // member's reap ends the stop.
        assert_eq!(sup.on_exit(p3, ExitStatus::Code(0), t(11), &mut sys), None);
        sys.alive.clear();
        assert_eq!(sup.on_exit(999, ExitStatus::Code(0), t(12), &mut sys), None);
        assert_eq!(sup.services()[3].state, State::Stopped);
        assert_index_agrees(&sup);
        assert_eq!(sup.indexed(), 0);
        // The backoff respawns, and the new pids are routed.
        sup.tick(t(1010), &mut sys);
        assert_index_agrees(&sup);
        assert_eq!(sup.indexed(), 2);
        let q0 = pid_of(&sys, 0);
        assert_ne!(q0, p0);
        assert_eq!(sup.owner_of(q0), Some(0));
        assert_eq!(sup.owner_of(p0), None);
    }

    #[test]
    fn shutdown_with_a_crashed_starting_service_ends_at_once() {
        // The `starting` wedge: a dead process that was never routed kept
        // the shutdown waiting for its whole timeout.
        use crate::health::Role;
        let mut v: Vec<Service> = (0..1).map(|i| Service::new(i, Policy::default())).collect();
        v[0].policy.needs_ready = true;
        v[0].checks = [Some(probe_check(Role::Readiness)), None, None];
        let mut sys = Rec::default();
        let mut px = [PidSlot::EMPTY; 16];
        let mut sup = Supervisor::new(&mut v, &mut px, 1);
        sup.start_all(t(0), &mut sys);
        sup.on_exit(1, ExitStatus::Code(1), t(10), &mut sys);
        sup.shutdown(t(20), 30_000, &mut sys);
        assert!(sup.finished());
    }

    #[test]
    fn zero_backoff_respawns_in_the_same_instant() {
        let mut v: Vec<Service> = (0..1)
            .map(|i| {
                Service::new(
                    i,
                    Policy {
                        backoff_initial: 0,
                        ..Policy::default()
                    },
                )
            })
            .collect();
        let mut sys = Rec::default();
        let mut px = [PidSlot::EMPTY; 16];
        let mut sup = Supervisor::new(&mut v, &mut px, 1);
        sup.start_all(t(0), &mut sys);
        for k in 1..=5 {
            let p = pid_of(&sys, 0);
            sup.on_exit(p, ExitStatus::Code(1), t(100), &mut sys);
            // Due now: the loop polls with a zero timeout and ticks.
            assert_eq!(sup.poll_at(), t(100));
            sup.tick(t(100), &mut sys);
            assert_eq!(sys.spawned.len(), 1 + k);
            assert_eq!(sup.services()[0].state.name(), StateName::Running);
        }
        assert_index_agrees(&sup);
    }

    #[test]
    fn restart_does_not_rerun_a_completed_oneshot_dependency() {
        // a: oneshot, completed; b needs it completed; c needs b.
        let mut v = chain(Condition::Completed, Kind::Oneshot);
        let mut sys = Rec::default();
        let mut px = [PidSlot::EMPTY; 16];
        let mut sup = Supervisor::new(&mut v, &mut px, 4);
        sup.start_all(t(0), &mut sys);
        sup.on_exit(pid_of(&sys, 0), ExitStatus::Code(0), t(5), &mut sys);
        assert_eq!(sup.services()[0].state, State::Completed);
        let pb = pid_of(&sys, 1);
        sup.restart(1, t(10), &mut sys);
        sup.on_exit(pb, ExitStatus::Signal(15), t(11), &mut sys);
        assert_ne!(pid_of(&sys, 1), pb, "b runs again");
        assert_eq!(sys.spawned.iter().filter(|x| x.0 == 0).count(), 1);
        assert_eq!(sup.services()[0].state, State::Completed);
        // `start c` does not re-run it either; `start a` by name does.
        sup.start(2, t(12), &mut sys);
        assert_eq!(sys.spawned.iter().filter(|x| x.0 == 0).count(), 1);
        sup.start(0, t(13), &mut sys);
        assert_eq!(sys.spawned.iter().filter(|x| x.0 == 0).count(), 2);
    }

    #[test]
    fn start_brings_back_dependents_a_stop_took_down_but_not_those_stopped_by_name() {
        // a <- b <- c, plus e depending on a; c is stopped by name first.
        let mut v = chain(Condition::Started, Kind::Service);
        v[3].deps
            .push(Dep {
                idx: 0,
                condition: Condition::Started,
            })
            .unwrap();
        let mut sys = Rec::default();
        let mut px = [PidSlot::EMPTY; 16];
        let mut sup = Supervisor::new(&mut v, &mut px, 4);
        sup.start_all(t(0), &mut sys);
        sup.stop(2, t(1), &mut sys);
        sup.on_exit(pid_of(&sys, 2), ExitStatus::Signal(15), t(2), &mut sys);
        sup.stop(0, t(3), &mut sys);
        for i in [1, 3, 0] {
            let p = pid_of(&sys, i);
            sup.on_exit(p, ExitStatus::Signal(15), t(4), &mut sys);
        }
        for s in sup.services() {
            assert_eq!(s.state, State::Stopped);
        }
        let before = sys.spawned.len();
        sup.start(0, t(10), &mut sys);
        let started: Vec<usize> = sys.spawned[before..].iter().map(|x| x.0).collect();
        assert_eq!(started.len(), 3, "{started:?}");
        assert_eq!(started[0], 0, "the dependency first: {started:?}");
        assert!(started.contains(&1) && started.contains(&3));
        assert_eq!(sup.services()[2].state, State::Stopped, "stopped by name");
        // Once brought back, a later stop/start of a again does the same.
        assert!(sup.services().iter().all(|s| !s.down_by_dep));
    }

    #[test]
    fn a_dependent_waits_for_every_dependency_stopped_with_it() {
        // b needs a and d. stop a and stop d take b down; start a alone
        // must not bring d (stopped by name) up, so b stays down until
        // start d.
        let mut v = chain(Condition::Started, Kind::Service);
        v[1].deps
            .push(Dep {
                idx: 3,
                condition: Condition::Started,
            })
            .unwrap();
        let mut sys = Rec::default();
        let mut px = [PidSlot::EMPTY; 16];
        let mut sup = Supervisor::new(&mut v, &mut px, 4);
        sup.start_all(t(0), &mut sys);
        sup.stop(0, t(1), &mut sys);
        for i in [2, 1, 0] {
            sup.on_exit(pid_of(&sys, i), ExitStatus::Signal(15), t(2), &mut sys);
        }
        sup.stop(3, t(3), &mut sys);
        sup.on_exit(pid_of(&sys, 3), ExitStatus::Signal(15), t(4), &mut sys);
        let before = sys.spawned.len();
        sup.start(0, t(5), &mut sys);
        let started: Vec<usize> = sys.spawned[before..].iter().map(|x| x.0).collect();
        assert_eq!(started, [0]);
        sup.start(3, t(6), &mut sys);
        let started: Vec<usize> = sys.spawned[before..].iter().map(|x| x.0).collect();
        assert_eq!(started, [0, 3, 1, 2]);
    }

    #[test]
    fn operator_stop_takes_dependents_down_first_and_start_brings_deps() {
        let mut v = chain(Condition::Started, Kind::Service);
        let mut sys = Rec::default();
        let mut px = [PidSlot::EMPTY; 16];
        let mut sup = Supervisor::new(&mut v, &mut px, 4);
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
        let mut px = [PidSlot::EMPTY; 16];
        let mut sup = Supervisor::new(&mut v, &mut px, 4);
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
            None,
        ];
        v[1].deps
            .push(Dep {
                idx: 0,
                condition: Condition::Healthy,
            })
            .unwrap();
        let mut sys = Rec::default();
        let mut px = [PidSlot::EMPTY; 16];
        let mut sup = Supervisor::new(&mut v, &mut px, 2);
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

    /// Readiness and liveness stay off until the startup check passes; a
    /// failed startup restarts the service with its backoff, as a failed
    /// liveness check does, and the next run starts with startup again.
    #[test]
    fn startup_gates_the_other_checks_and_its_failure_restarts() {
        use crate::health::{CheckState, ProbeError, Role};
        let mut v: Vec<Service> = (0..1).map(|i| Service::new(i, Policy::default())).collect();
        v[0].policy.needs_ready = true;
        v[0].checks = [
            Some(probe_check(Role::Readiness)),
            Some(probe_check(Role::Liveness)),
            Some(probe_check(Role::Startup)),
        ];
        let mut sys = Rec::default();
        let mut px = [PidSlot::EMPTY; 16];
        let mut sup = Supervisor::new(&mut v, &mut px, 1);
        sup.start_all(t(0), &mut sys);
        let states = |sup: &Supervisor<'_>| sup.services()[0].checks.map(|c| c.unwrap().state);
        sup.tick(t(0), &mut sys);
        let [r, l, s] = states(&sup);
        assert_eq!((r, l), (CheckState::Off, CheckState::Off), "gated");
        assert!(matches!(s, CheckState::Probing { .. }));
        sup.probe_result(0, Role::Startup, Ok(()), t(10), &mut sys);
        assert_eq!(
            sup.services()[0].state.name(),
            StateName::Starting,
            "readiness decides"
        );
        let [r, l, s] = states(&sup);
        assert_eq!(
            s,
            CheckState::Waiting {
                next_at: Instant::NEVER
            },
            "startup is over"
        );
        assert_eq!(r, CheckState::Waiting { next_at: t(10) });
        assert_eq!(l, CheckState::Waiting { next_at: t(10) });
        sup.tick(t(10), &mut sys);
        sup.probe_result(0, Role::Readiness, Ok(()), t(20), &mut sys);
        assert_eq!(sup.services()[0].state.name(), StateName::Running);
        // Next run: startup fails twice (its retries) and the service is
        // restarted with backoff, a failure like liveness's.
        let p1 = sys.spawned[0].1;
        sup.on_exit(p1, ExitStatus::Code(1), t(30), &mut sys);
        assert_eq!(sup.services()[0].state.name(), StateName::Backoff);
        let retry = sup.poll_at();
        sup.tick(retry, &mut sys);
        let p2 = sys.spawned[1].1;
        sup.tick(retry, &mut sys);
        let [r, l, _] = states(&sup);
        assert_eq!((r, l), (CheckState::Off, CheckState::Off), "gated again");
        sup.probe_result(
            0,
            Role::Startup,
            Err(ProbeError::Exit(1)),
            retry.add(5),
            &mut sys,
        );
        sup.tick(retry.add(1005), &mut sys);
        sup.probe_result(
            0,
            Role::Startup,
            Err(ProbeError::Exit(1)),
            retry.add(1010),
            &mut sys,
        );
        assert!(sys.kills.contains(&(p2, 15)));
        assert_eq!(sup.services()[0].reason, crate::service::Reason::Unhealthy);
        let [r, l, _] = states(&sup);
        assert_eq!((r, l), (CheckState::Off, CheckState::Off), "never started");
        let before = sup.services()[0].failures;
        sup.on_exit(p2, ExitStatus::Signal(15), retry.add(1020), &mut sys);
        assert_eq!(sup.services()[0].state.name(), StateName::Backoff);
        assert_eq!(sup.services()[0].failures, before + 1);
    }

    /// Without a readiness check, passing startup makes the service ready.
    #[test]
    fn startup_without_readiness_is_ready_when_it_passes() {
        use crate::health::Role;
        let mut v: Vec<Service> = (0..1).map(|i| Service::new(i, Policy::default())).collect();
        v[0].policy.needs_ready = true;
        v[0].checks = [None, None, Some(probe_check(Role::Startup))];
        let mut sys = Rec::default();
        let mut px = [PidSlot::EMPTY; 16];
        let mut sup = Supervisor::new(&mut v, &mut px, 1);
        sup.start_all(t(0), &mut sys);
        sup.tick(t(0), &mut sys);
        assert_eq!(sup.services()[0].state.name(), StateName::Starting);
        sup.probe_result(0, Role::Startup, Ok(()), t(10), &mut sys);
        assert_eq!(sup.services()[0].state.name(), StateName::Running);
    }

    #[test]
    fn start_timeout_fails_a_service_that_never_gets_ready() {
        use crate::health::Role;
        let mut v: Vec<Service> = (0..1).map(|i| Service::new(i, Policy::default())).collect();
        v[0].policy.needs_ready = true;
        v[0].policy.start_timeout = Some(3000);
        v[0].checks = [Some(probe_check(Role::Readiness)), None, None];
        let mut sys = Rec::default();
        let mut px = [PidSlot::EMPTY; 16];
        let mut sup = Supervisor::new(&mut v, &mut px, 1);
        sup.start_all(t(0), &mut sys);
        sup.tick(t(3000), &mut sys);
        assert_eq!(sup.services()[0].state.name(), StateName::Stopping);
        assert_eq!(
            sup.services()[0].reason,
            crate::service::Reason::StartTimeout
        );
    }

    /// A cgroup that empties without a reap coffeyd sees (a member that
    /// was not its child) ends a stop that waits for it, and nothing else.
    #[test]
    fn group_changed_ends_a_drained_stop_without_a_reap() {
        let mut v: Vec<Service> = (0..2).map(|i| Service::new(i, Policy::default())).collect();
        let mut sys = Rec::default();
        let mut px = [PidSlot::EMPTY; 8];
        let mut sup = Supervisor::new(&mut v, &mut px, 2);
        sup.start_all(t(0), &mut sys);
        let (p0, p1) = (pid_of(&sys, 0), pid_of(&sys, 1));
        sys.alive.push(p0);
        sup.stop(0, t(1), &mut sys);
        sup.on_exit(p0, ExitStatus::Signal(15), t(2), &mut sys);
        assert_eq!(sup.services()[0].state.name(), StateName::Stopping);
        // Still populated: no change.
        sup.group_changed(0, t(3), &mut sys);
        assert_eq!(sup.services()[0].state.name(), StateName::Stopping);
        // A running service is not touched by it.
        sup.group_changed(1, t(3), &mut sys);
        assert_eq!(sup.services()[1].state.name(), StateName::Running);
        assert_eq!(sup.services()[1].state.pid(), Some(p1));
        sys.alive.clear();
        sup.group_changed(0, t(4), &mut sys);
        assert_eq!(sup.services()[0].state, State::Stopped);
        // Out of range: nothing.
        sup.group_changed(7, t(5), &mut sys);
    }

    #[test]
    fn orphans_are_counted() {
        let mut v = chain(Condition::Started, Kind::Service);
        let mut sys = Rec::default();
        let mut px = [PidSlot::EMPTY; 16];
        let mut sup = Supervisor::new(&mut v, &mut px, 4);
        sup.start_all(t(0), &mut sys);
        assert_eq!(sup.on_exit(999, ExitStatus::Code(0), t(1), &mut sys), None);
        assert_eq!(sup.orphans_reaped, 1);
    }
}
