//! The SERVICE machine: one per slot.
//!
//! `want` (what the operator asked for) is kept apart from `state` (what is
//! true). [`Service::step`] is the one transition function: a `match` over
//! `(state, input)`; every change goes through [`Service::set_state`], which
//! emits the event. The machine never reads the clock (`now` is passed in)
//! and never makes syscalls (it calls [`Sys`]). Dependencies are not judged
//! here: the supervisor sends `DepsReady` when they are met.

pub use crate::event::{Event, Leftovers, StateName};
use crate::event::{ExitStatus, SpawnError};
use crate::limits::{MAX_DEPS, MAX_ESCAPEES, TEMP_RETRY_MS};
use crate::sys::{Escapee, Sys, SIGCONT, SIGKILL};
use crate::time::{Instant, Millis};
use core::fmt;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Service,
    Oneshot,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Restart {
    Always,
    OnFailure,
    Never,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    Started,
    /// Behaves like `Started` until health checks run.
    Healthy,
    Completed,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Dep {
    pub idx: u16,
    pub condition: Condition,
}

/// What the config says about restarting and stopping, in core units.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub kind: Kind,
    pub restart: Restart,
    pub backoff_initial: Millis,
    pub backoff_max: Millis,
    /// Backoff multiplier in thousandths (2.0 = 2000): no floats in the core.
    pub backoff_mult_milli: u32,
    pub reset_after: Millis,
    /// Consecutive failures allowed; 0 = never give up.
    pub max_restarts: u32,
    pub stop_signal: i32,
    pub stop_timeout: Millis,
    /// Has a readiness check: spawned services are `starting` until it
    /// passes.
    pub needs_ready: bool,
    /// Fail a service still `starting` after this long.
    pub start_timeout: Option<Millis>,
    /// Crashes in a row that make it `degraded` (told again at every
    /// multiple); 0 = never.
    pub degraded_after: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            kind: Kind::Service,
            restart: Restart::Always,
            backoff_initial: 1000,
            backoff_max: 60_000,
            backoff_mult_milli: 2000,
            reset_after: 10_000,
            max_restarts: 0,
            stop_signal: 15,
            stop_timeout: 10_000,
            needs_ready: false,
            start_timeout: None,
            degraded_after: 5,
        }
    }
}

/// Actual state. A pid exists only in the variants that have a process.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Not running and not wanted (or exited cleanly with no restart).
    Stopped,
    /// Wanted up; waiting for dependencies.
    Waiting,
    /// Spawned; waiting for its readiness check (or `start_timeout`).
    Starting {
        pid: i32,
        since: Instant,
        ready_by: Instant,
    },
    Running {
        pid: i32,
        since: Instant,
    },
    /// Stop signal sent; SIGKILL at `kill_at`. `leader_gone`: the main
    /// process is reaped but others remain in its process group.
    Stopping {
        pid: i32,
        since: Instant,
        kill_at: Instant,
        leader_gone: bool,
    },
    /// Waiting to respawn.
    Backoff {
        retry_at: Instant,
    },
    /// A oneshot that exited 0.
    Completed,
    /// Gave up, or exited non-zero with no restart.
    Failed,
}

impl State {
    pub fn name(&self) -> StateName {
        match self {
            State::Stopped => StateName::Stopped,
            State::Waiting => StateName::Waiting,
            State::Starting { .. } => StateName::Starting,
            State::Running { .. } => StateName::Running,
            State::Stopping { .. } => StateName::Stopping,
            State::Backoff { .. } => StateName::Backoff,
            State::Completed => StateName::Completed,
            State::Failed => StateName::Failed,
        }
    }
    /// The process, if there is one.
    /// When the current run was spawned (starting or running): what
    /// uptime counts from, in `status` and `metrics`.
    pub fn spawned_at(&self) -> Option<Instant> {
        match *self {
            State::Running { since, .. } | State::Starting { since, .. } => Some(since),
            _ => None,
        }
    }

    pub fn pid(&self) -> Option<i32> {
        match *self {
            State::Starting { pid, .. }
            | State::Running { pid, .. }
            | State::Stopping { pid, .. } => Some(pid),
            _ => None,
        }
    }
    /// Whether a process (or its group) may still exist.
    pub fn has_process(&self) -> bool {
        self.pid().is_some()
    }
    /// The main process while it is not yet reaped: the pid a reaped
    /// child is routed by. (After the leader is reaped, a `stopping`
    /// state keeps its pid only as the group id.)
    pub fn leader(&self) -> Option<i32> {
        match *self {
            State::Starting { pid, .. }
            | State::Running { pid, .. }
            | State::Stopping {
                pid,
                leader_gone: false,
                ..
            } => Some(pid),
            _ => None,
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Want {
    Up,
    Down,
}

/// Why a service is in its state, for `status`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    None,
    /// Last run ended like this.
    Exited(ExitStatus),
    /// The child failed before execve completed.
    SpawnFailed(SpawnError),
    /// Waiting on dependency `idx`; `failed` if that dependency failed.
    Dependency {
        idx: u16,
        failed: bool,
    },
    /// Gave up after this many consecutive failures.
    GaveUp {
        failures: u32,
    },
    /// Restarted because its liveness check (or watchdog) failed.
    Unhealthy,
    /// Readiness did not come within `start_timeout`.
    StartTimeout,
    /// The main process ended like this while processes of its run
    /// lived on, in its group or outside it: a program that forks into
    /// the background.
    LeftInGroup {
        status: ExitStatus,
        left: Leftovers,
    },
}

/// The words for [`Reason::LeftInGroup`], shared by status, the daemon
/// log and events.
pub struct LeftInGroupText(pub Leftovers);

impl fmt::Display for LeftInGroupText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let es = |n: u32| if n == 1 { "" } else { "es" };
        let (n, out) = (self.0.in_group, self.0.outside);
        f.write_str("main process exited, ")?;
        match (n, out.count) {
            (n, 0) => write!(f, "{n} process{} left in its group", es(n))?,
            (0, m) => write!(f, "{m} process{} left outside its group", es(m))?,
            (n, m) => write!(
                f,
                "{n} process{} left in its group and {m} outside it",
                es(n)
            )?,
        }
        if out.count > 0 {
            write!(f, " (pid {}, {})", out.pid, out.name())?;
        }
        f.write_str(": does it fork into the background? run it in the foreground")
    }
}

/// Inputs to the machine.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Operator or startup: want it up.
    Start,
    /// Operator or shutdown: want it down.
    Stop,
    /// Supervisor: every dependency is met.
    DepsReady,
    /// Supervisor: dependency `idx` is not met (failed: it gave up).
    DepsBlocked { idx: u16, failed: bool },
    /// The main process was reaped.
    Exited { status: ExitStatus },
    /// The readiness check passed.
    Ready,
    /// The liveness check (or watchdog) failed past its retries.
    Unhealthy,
    /// The startup check failed past its retries: as `Unhealthy`.
    StartupFailed,
    /// Some process (`pid`) was reaped: re-check a stopping group and
    /// its escapees.
    Reaped { pid: i32 },
    /// Time passed; deadlines may be due.
    Tick,
    /// Shutdown deadline: SIGKILL the group now.
    Kill,
    /// sd_notify `EXTEND_TIMEOUT_USEC=`: the current deadline (start or
    /// stop) becomes at least `now + by` (never earlier than configured).
    ExtendTimeout { by: Millis },
}

/// The dependency order walks the table through this (`order.rs`).
impl crate::order::Node for Service {
    fn deps(&self) -> impl Iterator<Item = u16> + '_ {
        self.deps.iter().map(|d| d.idx)
    }
    fn link(&self) -> &crate::order::Link {
        &self.link
    }
    fn link_mut(&mut self) -> &mut crate::order::Link {
        &mut self.link
    }
}

impl Service {
    /// Shutdown: want it down, but leave the process alone until its
    /// dependents are gone (the supervisor sends `Stop` then).
    pub fn want_down(&mut self) {
        self.want = Want::Down;
    }
}

impl Input {
    fn name(&self) -> &'static str {
        match self {
            Input::Start => "start",
            Input::Stop => "stop",
            Input::DepsReady => "deps-ready",
            Input::DepsBlocked { .. } => "deps-blocked",
            Input::Exited { .. } => "exited",
            Input::Ready => "ready",
            Input::Unhealthy => "unhealthy",
            Input::StartupFailed => "startup-failed",
            Input::Reaped { .. } => "reaped",
            Input::Tick => "tick",
            Input::Kill => "kill",
            Input::ExtendTimeout { .. } => "extend-timeout",
        }
    }
}

pub struct Service {
    pub idx: u16,
    pub policy: Policy,
    pub deps: heapless::Vec<Dep, MAX_DEPS>,
    pub state: State,
    pub want: Want,
    pub reason: Reason,
    /// Respawns since startup (the RESTARTS column).
    pub restarts: u32,
    /// Consecutive failures, reset after a run of `reset_after`.
    pub failures: u32,
    /// Delay before the next respawn.
    pub next_delay: Millis,
    /// Whether the current `want: Up` period has had a run (so the next
    /// spawn is a restart).
    ran: bool,
    /// Unexpected (state, input) pairs seen.
    pub unexpected: u32,
    /// Supervisor bookkeeping: marked by a transitive start/stop walk.
    pub mark: bool,
    /// When the state last changed (monotonic).
    pub since: Instant,
    /// The time of the current step.
    now: Instant,
    /// How the last process ended.
    pub last_exit: Option<ExitStatus>,
    /// Stopping because unhealthy: the exit counts as a failure.
    pub fail_on_exit: bool,
    /// Taken over from a previous binary by `reexec`.
    pub adopted: bool,
    /// The main process exited on its own but its group lives on: how it
    /// ended and how long it ran. The verdict (restart, fail, complete)
    /// waits until the group is gone, so two copies never run.
    draining: Option<(ExitStatus, Millis)>,
    /// Whether `LeftInGroup` was already reported as `first`.
    warned_group: bool,
    /// Processes of the last run that coffeyd inherited when their parent
    /// exited (see [`Escapee`]): stopped with the run's group, and the
    /// run is over only once they are gone too. Empty entries are
    /// `Escapee::NONE`.
    escaped: [Escapee; MAX_ESCAPEES],
    /// Supervisor bookkeeping: taken down by `stop` of a dependency (not
    /// by name), so `start` of that dependency brings it back.
    pub down_by_dep: bool,
    /// Supervisor bookkeeping: its place in the dependency order.
    pub link: crate::order::Link,
    /// Readiness (0), liveness (1) and startup (2) checks, if configured.
    pub checks: [Option<crate::health::Check>; crate::health::ROLES],
    /// The last few events, for `status NAME`.
    pub recent: crate::recent::Recent,
}

pub use crate::limits::RECENT_EVENTS;

impl Service {
    pub fn new(idx: u16, policy: Policy) -> Service {
        Service {
            idx,
            policy,
            deps: heapless::Vec::new(),
            state: State::Stopped,
            want: Want::Down,
            reason: Reason::None,
            restarts: 0,
            failures: 0,
            next_delay: policy.backoff_initial,
            ran: false,
            unexpected: 0,
            mark: false,
            since: Instant::ZERO,
            now: Instant::ZERO,
            last_exit: None,
            fail_on_exit: false,
            checks: [None, None, None],
            adopted: false,
            draining: None,
            warned_group: false,
            escaped: [Escapee::NONE; MAX_ESCAPEES],
            down_by_dep: false,
            link: crate::order::Link::NEW,
            recent: crate::recent::Recent::EMPTY,
        }
    }

    /// The next time this machine needs a `Tick`.
    pub fn poll_at(&self) -> Instant {
        match self.state {
            State::Backoff { retry_at } => retry_at,
            State::Starting { ready_by, .. } => ready_by,
            State::Stopping { kill_at, .. } => kill_at,
            _ => Instant::NEVER,
        }
    }

    fn set_state(&mut self, to: State, event: Event, sys: &mut impl Sys) {
        let from = self.state.name();
        if from != to.name() {
            self.since = self.now;
        }
        self.state = to;
        self.note(event);
        sys.emit(usize::from(self.idx), from, to.name(), &event);
    }

    /// An event without a state change.
    fn emit_same(&mut self, event: Event, sys: &mut impl Sys) {
        self.note(event);
        let s = self.state.name();
        sys.emit(usize::from(self.idx), s, s, &event);
    }

    /// Has crashed `degraded_after` times in a row (or more): `status`
    /// says so until a run long enough resets the failures.
    pub fn degraded(&self) -> bool {
        let n = self.policy.degraded_after;
        n > 0 && self.failures >= n
    }

    /// Keeps the last few events for `status <svc>`.
    fn note(&mut self, event: Event) {
        self.recent.note(self.now, &event);
    }

    /// After `coffeyd reexec`: take over a process started by the previous
    /// binary, with its counters. `start_all` leaves adopted services be.
    pub fn adopt(&mut self, pid: i32, since: Instant, restarts: u32, failures: u32, want_up: bool) {
        self.restarts = restarts;
        self.failures = failures;
        self.ran = true;
        if pid > 0 {
            self.state = State::Running { pid, since };
            self.since = since;
        }
        self.want = if want_up { Want::Up } else { Want::Down };
        self.adopted = true;
    }

    /// Operator restart: counters reset, never counts as a failure.
    pub fn reset_counters(&mut self) {
        self.restarts = 0;
        self.failures = 0;
        self.next_delay = self.policy.backoff_initial;
        self.ran = false;
    }

    /// The transition function.
    pub fn step(&mut self, input: Input, now: Instant, sys: &mut impl Sys) {
        self.now = now;
        match (self.state, input) {
            // ---- commands: change `want`, then act on the state.
            (State::Stopped | State::Completed | State::Failed, Input::Start) => {
                self.want = Want::Up;
                self.failures = 0;
                self.ran = false;
                self.next_delay = self.policy.backoff_initial;
                self.reason = Reason::None;
                self.set_state(
                    State::Waiting,
                    Event::Waiting {
                        dep: None,
                        failed: false,
                    },
                    sys,
                );
            }
            (
                State::Waiting
                | State::Backoff { .. }
                | State::Starting { .. }
                | State::Running { .. },
                Input::Start,
            ) => {
                self.want = Want::Up;
            }
            (State::Stopping { .. }, Input::Start) => {
                // Restarted once the old process is gone.
                self.want = Want::Up;
            }
            (State::Waiting | State::Backoff { .. }, Input::Stop) => {
                self.want = Want::Down;
                self.set_state(State::Stopped, Event::Stopped, sys);
            }
            (State::Starting { pid, since, .. } | State::Running { pid, since }, Input::Stop) => {
                self.want = Want::Down;
                self.begin_stop(pid, since, now, sys);
            }
            (
                State::Stopping { .. } | State::Stopped | State::Completed | State::Failed,
                Input::Stop,
            ) => {
                self.want = Want::Down;
            }

            // ---- dependencies
            (State::Waiting, Input::DepsReady) => self.spawn(now, sys),
            (State::Waiting, Input::DepsBlocked { idx, failed }) => {
                let r = Reason::Dependency { idx, failed };
                if self.reason != r {
                    self.reason = r;
                    self.set_state(
                        State::Waiting,
                        Event::Waiting {
                            dep: Some(idx),
                            failed,
                        },
                        sys,
                    );
                }
            }
            (_, Input::DepsReady | Input::DepsBlocked { .. }) => {}

            // ---- the process ended
            (
                State::Starting { pid, since, .. } | State::Running { pid, since },
                Input::Exited { status },
            ) => {
                self.reason = Reason::Exited(status);
                self.last_exit = Some(status);
                let uptime = now.since(since);
                self.emit_same(
                    Event::Exited {
                        pid,
                        status,
                        uptime,
                    },
                    sys,
                );
                let left = self.leftovers(pid, sys);
                if left.in_group == 0 && !self.has_escapees() {
                    // Zombies of the group may linger a moment; nothing runs.
                    sys.kill_group(pid, SIGKILL);
                    self.decide(status, uptime, now, sys);
                } else {
                    self.drain(pid, since, status, uptime, left, now, sys);
                }
            }
            (
                State::Stopping {
                    pid,
                    since,
                    kill_at,
                    ..
                },
                Input::Exited { status },
            ) => {
                if !self.fail_on_exit {
                    self.reason = Reason::Exited(status);
                }
                self.last_exit = Some(status);
                let uptime = now.since(since);
                self.emit_same(
                    Event::Exited {
                        pid,
                        status,
                        uptime,
                    },
                    sys,
                );
                self.stop_escapees(pid, kill_at, sys);
                if !self.run_gone(pid, sys) {
                    self.state = State::Stopping {
                        pid,
                        since,
                        kill_at,
                        leader_gone: true,
                    };
                } else {
                    self.stopped(now, sys);
                }
            }
            (
                State::Stopping {
                    pid,
                    kill_at,
                    leader_gone: true,
                    ..
                },
                Input::Reaped { pid: reaped },
            ) => {
                if self.forget_escapee(reaped) {
                    self.adopt_orphans(pid, kill_at, sys);
                }
                if self.run_gone(pid, sys) {
                    self.stopped(now, sys);
                }
            }
            (_, Input::Reaped { .. }) => {}

            // ---- health
            (State::Starting { pid, since, .. }, Input::Ready) => {
                self.set_state(State::Running { pid, since }, Event::Ready { pid }, sys);
            }
            (_, Input::Ready) => {}
            (
                State::Starting { pid, since, .. } | State::Running { pid, since },
                Input::Unhealthy | Input::StartupFailed,
            ) => {
                self.reason = Reason::Unhealthy;
                let startup = input == Input::StartupFailed;
                self.emit_same(
                    Event::Unhealthy {
                        pid,
                        start_timeout: false,
                        startup,
                    },
                    sys,
                );
                self.stop_failed(pid, since, now, sys);
            }
            (_, Input::Unhealthy | Input::StartupFailed) => {}

            // ---- deadlines
            (
                State::Starting {
                    pid,
                    since,
                    ready_by,
                },
                Input::Tick,
            ) if now >= ready_by => {
                self.reason = Reason::StartTimeout;
                let e = Event::Unhealthy {
                    pid,
                    start_timeout: true,
                    startup: false,
                };
                self.emit_same(e, sys);
                self.stop_failed(pid, since, now, sys);
            }
            (State::Backoff { retry_at }, Input::Tick) if now >= retry_at => self.spawn(now, sys),
            (
                State::Stopping {
                    pid,
                    since,
                    kill_at,
                    leader_gone,
                },
                Input::Tick,
            ) if now >= kill_at => self.kill(pid, since, leader_gone, false, now, sys),
            (_, Input::Tick) => {}

            // ---- the shutdown deadline
            (State::Starting { pid, since, .. } | State::Running { pid, since }, Input::Kill) => {
                self.kill(pid, since, false, true, now, sys);
            }
            (
                State::Stopping {
                    pid,
                    since,
                    leader_gone,
                    ..
                },
                Input::Kill,
            ) => self.kill(pid, since, leader_gone, true, now, sys),
            (
                State::Stopped
                | State::Waiting
                | State::Backoff { .. }
                | State::Completed
                | State::Failed,
                Input::Kill,
            ) => {}

            // ---- sd_notify EXTEND_TIMEOUT_USEC= (systemd: the deadline is
            // now + the value, but never before the configured one)
            (
                State::Starting {
                    pid,
                    since,
                    ready_by,
                },
                Input::ExtendTimeout { by },
            ) if ready_by != Instant::NEVER => {
                let configured = since.add(self.policy.start_timeout.unwrap_or(0));
                self.state = State::Starting {
                    pid,
                    since,
                    ready_by: configured.max(now.add(by)),
                };
            }
            (
                State::Stopping {
                    pid,
                    since,
                    kill_at,
                    leader_gone,
                },
                Input::ExtendTimeout { by },
            ) if kill_at != Instant::NEVER => {
                self.state = State::Stopping {
                    pid,
                    since,
                    kill_at: kill_at.max(now.add(by)),
                    leader_gone,
                };
            }
            (_, Input::ExtendTimeout { .. }) => {}

            // ---- pairs that should not happen: count, log, carry on.
            (
                State::Stopped
                | State::Waiting
                | State::Backoff { .. }
                | State::Completed
                | State::Failed,
                Input::Exited { .. },
            ) => self.unexpected(input, sys),
        }
    }

    fn unexpected(&mut self, input: Input, sys: &mut impl Sys) {
        self.unexpected = self.unexpected.saturating_add(1);
        self.emit_same(
            Event::Unexpected {
                input: input.name(),
            },
            sys,
        );
    }

    /// Stops the process so that its exit counts as a failure and goes
    /// through backoff (want stays up).
    fn stop_failed(&mut self, pid: i32, since: Instant, now: Instant, sys: &mut impl Sys) {
        self.fail_on_exit = true;
        // `want` stays as it is (begin_stop does not touch it).
        self.begin_stop(pid, since, now, sys);
    }

    fn begin_stop(&mut self, pid: i32, since: Instant, now: Instant, sys: &mut impl Sys) {
        let sig = self.policy.stop_signal;
        sys.kill_group(pid, sig);
        // A stopped (SIGSTOP) process would never see the signal.
        sys.kill_group(pid, SIGCONT);
        self.set_state(
            State::Stopping {
                pid,
                since,
                kill_at: now.add(self.policy.stop_timeout),
                leader_gone: false,
            },
            Event::Stopping { pid, signal: sig },
            sys,
        );
    }

    /// The main process exited but processes of its run live on, in its
    /// group or outside it (a program that daemonized itself, or a helper
    /// it left behind). They get the stop signal, then SIGKILL after
    /// `stop_timeout`; the run is judged once the group is empty and the
    /// escapees are gone.
    #[allow(clippy::too_many_arguments)]
    fn drain(
        &mut self,
        pid: i32,
        since: Instant,
        status: ExitStatus,
        uptime: Millis,
        left: Leftovers,
        now: Instant,
        sys: &mut impl Sys,
    ) {
        if left.total() > 0 {
            self.reason = Reason::LeftInGroup { status, left };
            self.report_leftovers(pid, left, sys);
        }
        self.draining = Some((status, uptime));
        let sig = self.policy.stop_signal;
        self.signal_run(pid, sig, sys);
        self.signal_run(pid, SIGCONT, sys);
        self.set_state(
            State::Stopping {
                pid,
                since,
                kill_at: now.add(self.policy.stop_timeout),
                leader_gone: true,
            },
            Event::Stopping { pid, signal: sig },
            sys,
        );
    }

    /// The shutdown deadline: SIGKILL now, whatever the state.
    /// SIGKILL to the group: `stop_timeout` passed, or the shutdown
    /// deadline did (`shutdown`).
    fn kill(
        &mut self,
        pid: i32,
        since: Instant,
        leader_gone: bool,
        shutdown: bool,
        now: Instant,
        sys: &mut impl Sys,
    ) {
        self.signal_run(pid, SIGKILL, sys);
        self.set_state(
            State::Stopping {
                pid,
                since,
                kill_at: Instant::NEVER,
                leader_gone,
            },
            Event::Killed { pid, shutdown },
            sys,
        );
        if leader_gone && self.run_gone(pid, sys) {
            self.stopped(now, sys);
        }
    }

    /// What the run left when its main process (group `pgid`) was
    /// reaped: its group's live members, and the escapees the shell
    /// found, which are tracked from now on.
    fn leftovers(&mut self, pgid: i32, sys: &mut impl Sys) -> Leftovers {
        self.escaped = [Escapee::NONE; MAX_ESCAPEES];
        let outside = sys.escapees(usize::from(self.idx), pgid, &mut self.escaped);
        Leftovers {
            in_group: sys.group_members(pgid),
            outside,
        }
    }

    /// Logged once per service (`first`), in every event.
    fn report_leftovers(&mut self, pid: i32, left: Leftovers, sys: &mut impl Sys) {
        let first = !core::mem::replace(&mut self.warned_group, true);
        self.emit_same(Event::LeftInGroup { pid, left, first }, sys);
    }

    /// The main process exited while stopping and left processes outside
    /// its group: they never got the stop signal, so they get it now (or
    /// SIGKILL, if the stop is past its timeout).
    fn stop_escapees(&mut self, pid: i32, kill_at: Instant, sys: &mut impl Sys) {
        let left = self.leftovers(pid, sys);
        if left.outside.count > 0 {
            self.report_leftovers(pid, left, sys);
        }
        let sig = if kill_at == Instant::NEVER {
            SIGKILL
        } else {
            self.policy.stop_signal
        };
        for e in self.escaped.iter().copied().filter(|e| !e.is_none()) {
            sys.kill_escapee(e, sig);
            sys.kill_escapee(e, SIGCONT);
        }
    }

    fn has_escapees(&self) -> bool {
        self.escaped.iter().any(|e| !e.is_none())
    }

    /// The escapees of the run being stopped (for the shell: a process
    /// tracked here is not another run's).
    pub fn escapees(&self) -> &[Escapee] {
        &self.escaped
    }

    /// `sig` to the run's group and to each of its escapees.
    fn signal_run(&mut self, pgid: i32, sig: i32, sys: &mut impl Sys) {
        sys.kill_group(pgid, sig);
        for e in self.escaped.iter().copied().filter(|e| !e.is_none()) {
            sys.kill_escapee(e, sig);
        }
    }

    /// A reaped pid: an escapee's pid is free for reuse from now on, so it
    /// is forgotten (its group, if it had one, is still watched). Returns
    /// whether it was one.
    fn forget_escapee(&mut self, pid: i32) -> bool {
        let mut was = false;
        for e in self.escaped.iter_mut().filter(|e| e.pid == pid && pid > 0) {
            was = true;
            e.pid = 0;
            if e.pgrp == 0 {
                *e = Escapee::NONE;
            }
        }
        was
    }

    /// An escapee was reaped, and its own children (a daemon's daemons)
    /// became coffeyd's, the subreaper's: the shell hands over those of
    /// this run, which get what the escapee got, and are waited for too.
    /// Otherwise each run would leak them.
    fn adopt_orphans(&mut self, pgid: i32, kill_at: Instant, sys: &mut impl Sys) {
        let mut found = [Escapee::NONE; MAX_ESCAPEES];
        let _ = sys.escapees(usize::from(self.idx), pgid, &mut found);
        let sig = if kill_at == Instant::NEVER {
            SIGKILL
        } else {
            self.policy.stop_signal
        };
        for e in found.into_iter().filter(|e| !e.is_none()) {
            if self.escaped.iter().any(|t| t.pid == e.pid) {
                continue;
            }
            // Beyond the table: still signalled, not waited for.
            if let Some(free) = self.escaped.iter_mut().find(|t| t.is_none()) {
                *free = e;
            }
            sys.kill_escapee(e, sig);
            sys.kill_escapee(e, SIGCONT);
        }
    }

    /// Whether nothing of the run lives on: its group is empty and every
    /// escapee is gone (those are forgotten as they go).
    fn run_gone(&mut self, pgid: i32, sys: &mut impl Sys) -> bool {
        for e in self.escaped.iter_mut() {
            if !e.is_none() && !sys.escapee_alive(*e) {
                *e = Escapee::NONE;
            }
        }
        !self.has_escapees() && !sys.group_alive(pgid)
    }

    fn stopped(&mut self, now: Instant, sys: &mut impl Sys) {
        if let Some((status, uptime)) = self.draining.take() {
            // The leftovers of a run that ended on its own are gone: now
            // judge that run.
            self.fail_on_exit = false;
            self.decide(status, uptime, now, sys);
            return;
        }
        if core::mem::take(&mut self.fail_on_exit) && self.want == Want::Up {
            // Killed for being unhealthy: a failure, with backoff.
            let reason = self.reason;
            self.fail_or_retry(now, sys, true);
            if self.state != State::Failed {
                self.reason = reason;
            }
            return;
        }
        if self.want == Want::Up {
            // `start` arrived while stopping: go again.
            self.failures = 0;
            self.ran = false;
            self.next_delay = self.policy.backoff_initial;
            self.set_state(State::Waiting, Event::Stopped, sys);
            let _ = now;
        } else {
            self.set_state(State::Stopped, Event::Stopped, sys);
        }
    }

    fn spawn(&mut self, now: Instant, sys: &mut impl Sys) {
        match sys.spawn(usize::from(self.idx)) {
            Ok(pid) => {
                if self.ran {
                    self.restarts = self.restarts.saturating_add(1);
                }
                self.ran = true;
                self.reason = Reason::None;
                let to = if self.policy.needs_ready {
                    State::Starting {
                        pid,
                        since: now,
                        ready_by: self
                            .policy
                            .start_timeout
                            .map_or(Instant::NEVER, |t| now.add(t)),
                    }
                } else {
                    State::Running { pid, since: now }
                };
                self.set_state(to, Event::Spawned { pid }, sys);
            }
            Err(err) if err.is_temporary() => {
                // The daemon is short of something; not the service's fault.
                self.reason = Reason::SpawnFailed(err);
                self.set_state(
                    State::Backoff {
                        retry_at: now.add(TEMP_RETRY_MS),
                    },
                    Event::SpawnFailed { err },
                    sys,
                );
            }
            Err(err) => {
                // Exec failures are not a run, but they are a failure.
                self.reason = Reason::SpawnFailed(err);
                self.emit_same(Event::SpawnFailed { err }, sys);
                self.fail_or_retry(now, sys, true);
            }
        }
    }

    /// A run ended on its own (and nothing of it is left): restart it,
    /// fail it, or call it done.
    fn decide(&mut self, status: ExitStatus, uptime: Millis, now: Instant, sys: &mut impl Sys) {
        if uptime >= self.policy.reset_after {
            self.failures = 0;
            self.next_delay = self.policy.backoff_initial;
        }
        let ok = status.success();
        let again = self.want == Want::Up
            && match self.policy.restart {
                Restart::Always => true,
                Restart::OnFailure => !ok,
                Restart::Never => false,
            };
        if !again {
            if ok && self.policy.kind == Kind::Oneshot {
                self.set_state(State::Completed, Event::Completed, sys);
            } else if ok || self.want == Want::Down {
                self.set_state(State::Stopped, Event::Stopped, sys);
            } else {
                self.fail_or_retry(now, sys, false);
            }
            return;
        }
        self.fail_or_retry(now, sys, true);
    }

    /// A run or a spawn failed (or ended and must be restarted): back off,
    /// or give up past `max_restarts`.
    fn fail_or_retry(&mut self, now: Instant, sys: &mut impl Sys, retry: bool) {
        self.failures = self.failures.saturating_add(1);
        let n = self.policy.degraded_after;
        if n > 0 && self.failures % n == 0 {
            let failures = self.failures;
            self.emit_same(Event::Degraded { failures }, sys);
        }
        let max = self.policy.max_restarts;
        let allowed = self.policy.restart != Restart::Never && retry && self.want == Want::Up;
        if !allowed || (max > 0 && self.failures > max) {
            self.reason = if allowed {
                Reason::GaveUp {
                    failures: self.failures,
                }
            } else {
                self.reason
            };
            let failures = self.failures;
            let ev = if allowed {
                Event::GaveUp { failures }
            } else {
                Event::Failed
            };
            self.set_state(State::Failed, ev, sys);
            return;
        }
        let delay = self.next_delay;
        let grown = u128::from(delay) * u128::from(self.policy.backoff_mult_milli) / 1000;
        let grown = u64::try_from(grown).unwrap_or(u64::MAX);
        self.next_delay = grown
            .min(self.policy.backoff_max)
            .max(self.policy.backoff_initial);
        let failures = self.failures;
        self.set_state(
            State::Backoff {
                retry_at: now.add(delay),
            },
            Event::Backoff { delay, failures },
            sys,
        );
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, clippy::disallowed_macros)]
mod tests {
    use super::*;
    use crate::sys::{errno, Outside, Stage};
    use std::vec::Vec;

    /// Records calls; spawn results are scripted.
    #[derive(Default)]
    pub struct FakeSys {
        pub next_pid: i32,
        pub fail: Vec<SpawnError>,
        pub spawns: Vec<usize>,
        pub kills: Vec<(i32, i32)>,
        pub alive_groups: Vec<i32>,
        /// Live members of a group, when more than one is wanted.
        pub members: Vec<(i32, u32)>,
        pub events: Vec<(usize, StateName, StateName, Event)>,
        /// What the next `escapees` call finds (taken by it).
        pub escaping: Vec<Escapee>,
        pub outside: Outside,
        /// Escapees alive, by pid.
        pub alive_escapees: Vec<i32>,
        pub escapee_kills: Vec<(i32, i32)>,
    }

    impl Sys for FakeSys {
        fn spawn(&mut self, idx: usize) -> Result<i32, SpawnError> {
            if let Some(e) = self.fail.pop() {
                return Err(e);
            }
            self.spawns.push(idx);
            self.next_pid += 1;
            Ok(100 + self.next_pid)
        }
        fn kill_group(&mut self, pgid: i32, sig: i32) {
            self.kills.push((pgid, sig));
        }
        fn group_alive(&mut self, pgid: i32) -> bool {
            self.alive_groups.contains(&pgid)
        }
        fn group_members(&mut self, pgid: i32) -> u32 {
            match self.members.iter().find(|m| m.0 == pgid) {
                Some(m) => m.1,
                None => u32::from(self.group_alive(pgid)),
            }
        }
        fn emit(&mut self, idx: usize, from: StateName, to: StateName, event: &Event) {
            self.events.push((idx, from, to, *event));
        }
        fn escapees(&mut self, _idx: usize, _pgid: i32, out: &mut [Escapee]) -> Outside {
            for (o, e) in out.iter_mut().zip(self.escaping.drain(..)) {
                *o = e;
            }
            core::mem::take(&mut self.outside)
        }
        fn kill_escapee(&mut self, e: Escapee, sig: i32) {
            self.escapee_kills.push((e.pid, sig));
        }
        fn escapee_alive(&mut self, e: Escapee) -> bool {
            self.alive_escapees.contains(&e.pid)
        }
    }

    /// `n` processes left in the group, none outside.
    fn grp(n: u32) -> Leftovers {
        Leftovers {
            in_group: n,
            ..Leftovers::default()
        }
    }

    fn spawns_of(sys: &FakeSys) -> usize {
        sys.spawns.len()
    }

    fn svc(policy: Policy) -> Service {
        Service::new(0, policy)
    }

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn code(c: i32) -> Input {
        Input::Exited {
            status: ExitStatus::Code(c),
        }
    }

    /// EXTEND_TIMEOUT_USEC=: t=0 spawn (start_timeout 1000), t=100 extend
    /// 3000 -> deadline 3100; t=3000 extend 500 -> 3500 (the latest message
    /// counts); t=3200 extend 10 -> never before the configured 1000, so
    /// 3210; while stopping it moves the SIGKILL deadline the same way.
    #[test]
    fn extend_timeout_moves_start_and_stop_deadlines() {
        let mut s = svc(Policy {
            needs_ready: true,
            start_timeout: Some(1000),
            stop_timeout: 500,
            ..Policy::default()
        });
        let mut sys = FakeSys::default();
        s.step(Input::Start, t(0), &mut sys);
        s.step(Input::DepsReady, t(0), &mut sys);
        assert_eq!(s.poll_at(), t(1000));
        s.step(Input::ExtendTimeout { by: 3000 }, t(100), &mut sys);
        assert_eq!(s.poll_at(), t(3100));
        s.step(Input::Tick, t(1000), &mut sys);
        assert_eq!(s.state.name(), StateName::Starting, "not timed out at 1000");
        s.step(Input::ExtendTimeout { by: 500 }, t(3000), &mut sys);
        assert_eq!(s.poll_at(), t(3500));
        s.step(Input::ExtendTimeout { by: 10 }, t(3200), &mut sys);
        assert_eq!(s.poll_at(), t(3210));
        s.step(Input::Tick, t(3210), &mut sys);
        assert_eq!(s.reason, Reason::StartTimeout);
        assert_eq!(s.state.name(), StateName::Stopping);
        assert_eq!(s.poll_at(), t(3710));
        s.step(Input::ExtendTimeout { by: 2000 }, t(3300), &mut sys);
        assert_eq!(s.poll_at(), t(5300));
        s.step(Input::ExtendTimeout { by: 10 }, t(3400), &mut sys);
        assert_eq!(s.poll_at(), t(5300), "a stop deadline only grows");
        // Running has no deadline to extend; nothing is counted as odd.
        let mut r = svc(Policy::default());
        r.step(Input::Start, t(0), &mut sys);
        r.step(Input::DepsReady, t(0), &mut sys);
        r.step(Input::ExtendTimeout { by: 10 }, t(1), &mut sys);
        assert_eq!(r.poll_at(), Instant::NEVER);
        assert_eq!(r.unexpected, 0);
    }

    #[test]
    fn start_spawns_after_deps() {
        let mut s = svc(Policy::default());
        let mut sys = FakeSys::default();
        s.step(Input::Start, t(0), &mut sys);
        assert_eq!(s.state, State::Waiting);
        assert!(sys.spawns.is_empty());
        s.step(Input::DepsReady, t(0), &mut sys);
        assert_eq!(
            s.state,
            State::Running {
                pid: 101,
                since: t(0)
            }
        );
        assert_eq!(s.restarts, 0);
    }

    #[test]
    fn backoff_schedule_grows_and_caps() {
        let p = Policy {
            backoff_initial: 1000,
            backoff_max: 5000,
            backoff_mult_milli: 2000,
            ..Policy::default()
        };
        let mut s = svc(p);
        let mut sys = FakeSys::default();
        s.step(Input::Start, t(0), &mut sys);
        s.step(Input::DepsReady, t(0), &mut sys);
        let mut now = 0;
        let mut delays = Vec::new();
        for _ in 0..5 {
            now += 200;
            s.step(code(1), t(now), &mut sys);
            let State::Backoff { retry_at } = s.state else {
                panic!("{:?}", s.state)
            };
            let d = retry_at.since(t(now));
            delays.push(d);
            // t = retry_at - 1: nothing; t = retry_at: spawn.
            s.step(Input::Tick, t(now + d - 1), &mut sys);
            assert!(matches!(s.state, State::Backoff { .. }));
            now += d;
            s.step(Input::Tick, t(now), &mut sys);
            assert!(matches!(s.state, State::Running { .. }));
        }
        assert_eq!(delays, [1000, 2000, 4000, 5000, 5000]);
        assert_eq!(s.restarts, 5);
        // Each death also clears the rest of the group.
        assert!(sys.kills.iter().all(|&(_, sig)| sig == SIGKILL));
    }

    #[test]
    fn reset_after_resets_delay_and_failures() {
        let p = Policy {
            reset_after: 10_000,
            ..Policy::default()
        };
        let mut s = svc(p);
        let mut sys = FakeSys::default();
        s.step(Input::Start, t(0), &mut sys);
        s.step(Input::DepsReady, t(0), &mut sys);
        s.step(code(1), t(100), &mut sys); // delay 1000
        s.step(Input::Tick, t(1100), &mut sys);
        s.step(code(1), t(1200), &mut sys); // delay 2000
        assert_eq!(s.failures, 2);
        s.step(Input::Tick, t(3200), &mut sys);
        s.step(code(1), t(13_200), &mut sys); // ran 10s: reset
        assert_eq!(s.failures, 1);
        assert_eq!(
            s.state,
            State::Backoff {
                retry_at: t(14_200)
            }
        );
    }

    #[test]
    fn max_restarts_gives_up() {
        let p = Policy {
            max_restarts: 2,
            ..Policy::default()
        };
        let mut s = svc(p);
        let mut sys = FakeSys::default();
        s.step(Input::Start, t(0), &mut sys);
        s.step(Input::DepsReady, t(0), &mut sys);
        let mut now = 0;
        for _ in 0..2 {
            now += 10;
            s.step(code(3), t(now), &mut sys);
            now = s.poll_at().millis();
            s.step(Input::Tick, t(now), &mut sys);
        }
        s.step(code(3), t(now + 10), &mut sys);
        assert_eq!(s.state, State::Failed);
        assert_eq!(s.reason, Reason::GaveUp { failures: 3 });
        assert_eq!(s.poll_at(), Instant::NEVER);
    }

    #[test]
    fn crashing_degraded_after_times_in_a_row_is_told_at_every_multiple() {
        let p = Policy {
            degraded_after: 2,
            backoff_initial: 0,
            backoff_max: 0,
            ..Policy::default()
        };
        let mut s = svc(p);
        let mut sys = FakeSys::default();
        s.step(Input::Start, t(0), &mut sys);
        s.step(Input::DepsReady, t(0), &mut sys);
        let mut now = 0;
        for _ in 0..5 {
            now += 10;
            s.step(code(1), t(now), &mut sys);
            s.step(Input::Tick, t(now), &mut sys);
        }
        let told: Vec<u32> = sys
            .events
            .iter()
            .filter_map(|e| match e.3 {
                Event::Degraded { failures } => Some(failures),
                _ => None,
            })
            .collect();
        assert_eq!(told, [2, 4], "{:?}", sys.events);
        assert!(s.degraded());
        // A run long enough to reset the failures ends it.
        let p0 = Policy {
            degraded_after: 0,
            ..p
        };
        let mut quiet = svc(p0);
        let mut sys = FakeSys::default();
        quiet.step(Input::Start, t(0), &mut sys);
        quiet.step(Input::DepsReady, t(0), &mut sys);
        for k in 1..=6 {
            quiet.step(code(1), t(k * 10), &mut sys);
            quiet.step(Input::Tick, t(k * 10), &mut sys);
        }
        assert!(!sys
            .events
            .iter()
            .any(|e| matches!(e.3, Event::Degraded { .. })));
        assert!(!quiet.degraded());
    }

    #[test]
    fn restart_policies() {
        for (restart, c, want) in [
            (Restart::Never, 0, StateName::Stopped),
            (Restart::Never, 1, StateName::Failed),
            (Restart::OnFailure, 0, StateName::Stopped),
            (Restart::OnFailure, 1, StateName::Backoff),
            (Restart::Always, 0, StateName::Backoff),
        ] {
            let mut s = svc(Policy {
                restart,
                ..Policy::default()
            });
            let mut sys = FakeSys::default();
            s.step(Input::Start, t(0), &mut sys);
            s.step(Input::DepsReady, t(0), &mut sys);
            s.step(code(c), t(5), &mut sys);
            assert_eq!(s.state.name(), want, "{restart:?} exit {c}");
        }
    }

    #[test]
    fn oneshot_completes() {
        let mut s = svc(Policy {
            kind: Kind::Oneshot,
            restart: Restart::Never,
            ..Policy::default()
        });
        let mut sys = FakeSys::default();
        s.step(Input::Start, t(0), &mut sys);
        s.step(Input::DepsReady, t(0), &mut sys);
        s.step(code(0), t(5), &mut sys);
        assert_eq!(s.state, State::Completed);
    }

    #[test]
    fn exec_failure_is_not_a_run() {
        let mut s = svc(Policy::default());
        let mut sys = FakeSys::default();
        sys.fail.push(SpawnError {
            stage: Stage::Exec,
            errno: 2,
        });
        s.step(Input::Start, t(0), &mut sys);
        s.step(Input::DepsReady, t(0), &mut sys);
        assert_eq!(s.state, State::Backoff { retry_at: t(1000) });
        assert_eq!(
            s.reason,
            Reason::SpawnFailed(SpawnError {
                stage: Stage::Exec,
                errno: 2
            })
        );
        assert!(sys.spawns.is_empty());
        s.step(Input::Tick, t(1000), &mut sys);
        assert!(matches!(s.state, State::Running { .. }));
        assert_eq!(s.restarts, 0, "the failed exec was not a run");
    }

    #[test]
    fn temporary_spawn_failure_retries_without_growing() {
        let mut s = svc(Policy {
            max_restarts: 1,
            ..Policy::default()
        });
        let mut sys = FakeSys::default();
        for e in [errno::EAGAIN, errno::EMFILE, errno::ENOMEM] {
            sys.fail.push(SpawnError {
                stage: Stage::Fork,
                errno: e,
            });
        }
        s.step(Input::Start, t(0), &mut sys);
        s.step(Input::DepsReady, t(0), &mut sys);
        let mut now = 0;
        for _ in 0..3 {
            assert_eq!(
                s.state,
                State::Backoff {
                    retry_at: t(now + TEMP_RETRY_MS)
                }
            );
            now += TEMP_RETRY_MS;
            s.step(Input::Tick, t(now), &mut sys);
        }
        assert!(matches!(s.state, State::Running { .. }));
        assert_eq!(s.failures, 0);
        assert_eq!(s.next_delay, 1000);
    }

    #[test]
    fn stop_escalates_to_sigkill() {
        let mut s = svc(Policy {
            stop_timeout: 500,
            ..Policy::default()
        });
        let mut sys = FakeSys::default();
        s.step(Input::Start, t(0), &mut sys);
        s.step(Input::DepsReady, t(0), &mut sys);
        s.step(Input::Stop, t(100), &mut sys);
        assert_eq!(sys.kills, [(101, 15), (101, SIGCONT)]);
        assert_eq!(s.poll_at(), t(600));
        s.step(Input::Tick, t(599), &mut sys);
        assert_eq!(sys.kills.len(), 2);
        s.step(Input::Tick, t(600), &mut sys);
        assert_eq!(sys.kills.last(), Some(&(101, SIGKILL)));
        assert_eq!(s.poll_at(), Instant::NEVER);
        s.step(
            Input::Exited {
                status: ExitStatus::Signal(9),
            },
            t(601),
            &mut sys,
        );
        assert_eq!(s.state, State::Stopped);
    }

    #[test]
    fn stop_waits_for_the_group() {
        let mut s = svc(Policy::default());
        let mut sys = FakeSys::default();
        s.step(Input::Start, t(0), &mut sys);
        s.step(Input::DepsReady, t(0), &mut sys);
        sys.alive_groups.push(101);
        s.step(Input::Stop, t(10), &mut sys);
        s.step(code(0), t(20), &mut sys);
        assert!(matches!(
            s.state,
            State::Stopping {
                leader_gone: true,
                ..
            }
        ));
        s.step(Input::Reaped { pid: 999 }, t(30), &mut sys);
        assert!(matches!(s.state, State::Stopping { .. }));
        sys.alive_groups.clear();
        s.step(Input::Reaped { pid: 999 }, t(40), &mut sys);
        assert_eq!(s.state, State::Stopped);
    }

    #[test]
    fn start_during_stopping_restarts() {
        let mut s = svc(Policy::default());
        let mut sys = FakeSys::default();
        s.step(Input::Start, t(0), &mut sys);
        s.step(Input::DepsReady, t(0), &mut sys);
        s.step(Input::Stop, t(10), &mut sys);
        s.step(Input::Start, t(11), &mut sys);
        s.step(code(0), t(20), &mut sys);
        assert_eq!(s.state, State::Waiting);
    }

    #[test]
    fn unexpected_pairs_are_counted_not_fatal() {
        let mut s = svc(Policy::default());
        let mut sys = FakeSys::default();
        s.step(code(0), t(0), &mut sys);
        assert_eq!(s.unexpected, 1);
        assert_eq!(s.state, State::Stopped);
        assert!(matches!(
            sys.events.last(),
            Some((_, _, _, Event::Unexpected { .. }))
        ));
    }

    #[test]
    fn leftovers_are_stopped_before_a_respawn_and_reported() {
        // `sh -c 'sleep 100 & exit 0'`: the main process exits, a member
        // of its group lives on.
        let mut s = svc(Policy {
            stop_timeout: 500,
            backoff_initial: 100,
            ..Policy::default()
        });
        let mut sys = FakeSys::default();
        s.step(Input::Start, t(0), &mut sys);
        s.step(Input::DepsReady, t(0), &mut sys);
        sys.alive_groups.push(101);
        sys.members.push((101, 2));
        s.step(code(0), t(50), &mut sys);
        assert_eq!(
            s.state,
            State::Stopping {
                pid: 101,
                since: t(0),
                kill_at: t(550),
                leader_gone: true
            }
        );
        assert_eq!(
            s.reason,
            Reason::LeftInGroup {
                status: ExitStatus::Code(0),
                left: grp(2)
            }
        );
        assert_eq!(sys.kills, [(101, 15), (101, SIGCONT)], "stop signal first");
        assert!(sys.events.iter().any(|e| e.3
            == Event::LeftInGroup {
                pid: 101,
                left: grp(2),
                first: true
            }));
        // No second copy while the old group lives, not even past the
        // backoff delay.
        s.step(Input::Tick, t(549), &mut sys);
        s.step(Input::Reaped { pid: 999 }, t(549), &mut sys);
        assert_eq!(spawns_of(&sys), 1);
        s.step(Input::Tick, t(550), &mut sys);
        assert_eq!(sys.kills.last(), Some(&(101, SIGKILL)));
        assert_eq!(spawns_of(&sys), 1);
        sys.alive_groups.clear();
        s.step(Input::Reaped { pid: 999 }, t(560), &mut sys);
        // Now the run is judged: restart always, after the backoff.
        assert_eq!(s.state, State::Backoff { retry_at: t(660) });
        assert_eq!(s.failures, 1);
        assert!(matches!(s.reason, Reason::LeftInGroup { left, .. } if left == grp(2)));
        s.step(Input::Tick, t(660), &mut sys);
        assert_eq!(spawns_of(&sys), 2);
        // The second time it is reported again, but not as the first.
        sys.alive_groups.push(102);
        s.step(code(0), t(700), &mut sys);
        assert!(sys.events.iter().any(|e| e.3
            == Event::LeftInGroup {
                pid: 102,
                left: grp(1),
                first: false
            }));
        // A group that empties on the stop signal restarts without SIGKILL.
        let kills = sys.kills.len();
        sys.alive_groups.clear();
        s.step(Input::Reaped { pid: 999 }, t(710), &mut sys);
        assert_eq!(sys.kills.len(), kills);
        assert!(matches!(s.state, State::Backoff { .. }));
    }

    /// nginx without `daemon off`: the main process (101) exits 0, its
    /// child (150) called setsid and is outside the group.
    fn daemonized(sys: &mut FakeSys) {
        let e = Escapee {
            pid: 150,
            pgrp: 150,
        };
        sys.escaping = std::vec![e];
        let mut comm = [0u8; 16];
        comm[..5].copy_from_slice(b"nginx");
        sys.outside = Outside {
            count: 1,
            pid: 150,
            comm,
        };
        sys.alive_escapees = std::vec![150];
    }

    #[test]
    fn escapees_outside_the_group_are_reported_stopped_and_waited_for() {
        let mut s = svc(Policy {
            stop_timeout: 500,
            backoff_initial: 100,
            ..Policy::default()
        });
        let mut sys = FakeSys::default();
        s.step(Input::Start, t(0), &mut sys);
        s.step(Input::DepsReady, t(0), &mut sys);
        daemonized(&mut sys);
        s.step(code(0), t(50), &mut sys);
        assert!(matches!(
            s.state,
            State::Stopping {
                pid: 101,
                leader_gone: true,
                ..
            }
        ));
        let Reason::LeftInGroup { status, left } = s.reason else {
            panic!("{:?}", s.reason)
        };
        assert_eq!(
            (status, left.in_group, left.outside.count),
            (ExitStatus::Code(0), 0, 1)
        );
        assert_eq!(
            std::format!("{}", LeftInGroupText(left)),
            "main process exited, 1 process left outside its group (pid 150, nginx): \
             does it fork into the background? run it in the foreground"
        );
        assert!(sys.events.iter().any(|e| e.3
            == Event::LeftInGroup {
                pid: 101,
                left,
                first: true
            }));
        assert_eq!(sys.escapee_kills, [(150, 15), (150, SIGCONT)]);
        // Other reaps, the backoff time: no second copy while 150 lives.
        s.step(Input::Reaped { pid: 999 }, t(200), &mut sys);
        s.step(Input::Tick, t(549), &mut sys);
        assert_eq!(spawns_of(&sys), 1);
        s.step(Input::Tick, t(550), &mut sys);
        assert_eq!(sys.escapee_kills.last(), Some(&(150, SIGKILL)));
        // Reaped: it is forgotten (its pid may be reused) and the run is
        // judged.
        sys.alive_escapees.clear();
        s.step(Input::Reaped { pid: 150 }, t(560), &mut sys);
        assert_eq!(s.state, State::Backoff { retry_at: t(660) });
        assert!(s.escapees().iter().all(|e| e.is_none()));
        s.step(Input::Tick, t(660), &mut sys);
        assert_eq!(spawns_of(&sys), 2);
        // A run that leaves nothing restarts without a drain.
        let kills = sys.escapee_kills.len();
        s.step(code(1), t(700), &mut sys);
        assert!(matches!(s.state, State::Backoff { .. }));
        assert_eq!(sys.escapee_kills.len(), kills);
    }

    #[test]
    fn escapees_found_while_stopping_get_the_stop_signal_or_sigkill() {
        for killed in [false, true] {
            let mut s = svc(Policy::default());
            let mut sys = FakeSys::default();
            s.step(Input::Start, t(0), &mut sys);
            s.step(Input::DepsReady, t(0), &mut sys);
            s.step(Input::Stop, t(10), &mut sys);
            if killed {
                s.step(Input::Kill, t(11), &mut sys);
            }
            daemonized(&mut sys);
            s.step(code(0), t(20), &mut sys);
            let sig = if killed { SIGKILL } else { 15 };
            assert_eq!(sys.escapee_kills, [(150, sig), (150, SIGCONT)]);
            assert!(matches!(s.state, State::Stopping { .. }), "{killed}");
            sys.alive_escapees.clear();
            s.step(Input::Reaped { pid: 150 }, t(30), &mut sys);
            assert_eq!(s.state, State::Stopped, "{killed}");
        }
    }

    #[test]
    fn the_orphans_of_a_reaped_escapee_are_stopped_and_waited_for() {
        let mut s = svc(Policy {
            stop_timeout: 500,
            backoff_initial: 100,
            ..Policy::default()
        });
        let mut sys = FakeSys::default();
        s.step(Input::Start, t(0), &mut sys);
        s.step(Input::DepsReady, t(0), &mut sys);
        daemonized(&mut sys);
        s.step(code(1), t(50), &mut sys);
        // 150 dies of the stop signal; its child 160 (a session of its
        // own) is coffeyd's now, and this run's.
        let e = Escapee {
            pid: 160,
            pgrp: 160,
        };
        sys.escaping = std::vec![e];
        sys.alive_escapees = std::vec![160];
        s.step(Input::Reaped { pid: 150 }, t(60), &mut sys);
        assert_eq!(sys.escapee_kills[2..], [(160, 15), (160, SIGCONT)]);
        assert!(matches!(s.state, State::Stopping { .. }), "{:?}", s.state);
        assert_eq!(spawns_of(&sys), 1);
        // Found again (still in the group it shares with another): once.
        sys.escaping = std::vec![e];
        s.step(Input::Reaped { pid: 999 }, t(70), &mut sys);
        assert_eq!(sys.escapee_kills.len(), 4);
        // Past the stop timeout: SIGKILL, and what it leaves gets SIGKILL.
        s.step(Input::Tick, t(550), &mut sys);
        assert_eq!(sys.escapee_kills.last(), Some(&(160, SIGKILL)));
        sys.escaping = std::vec![Escapee {
            pid: 170,
            pgrp: 170,
        }];
        sys.alive_escapees = std::vec![170];
        s.step(Input::Reaped { pid: 160 }, t(560), &mut sys);
        assert_eq!(
            sys.escapee_kills[sys.escapee_kills.len() - 2..],
            [(170, SIGKILL), (170, SIGCONT)]
        );
        assert!(matches!(s.state, State::Stopping { .. }), "{:?}", s.state);
        sys.alive_escapees.clear();
        s.step(Input::Reaped { pid: 170 }, t(570), &mut sys);
        assert_eq!(s.state, State::Backoff { retry_at: t(670) });
    }

    #[test]
    fn leftovers_text_in_and_outside_the_group() {
        let mut left = grp(2);
        left.outside.count = 3;
        left.outside.pid = 7;
        left.outside.comm[0] = b'x';
        assert_eq!(
            std::format!("{}", LeftInGroupText(left)),
            "main process exited, 2 processes left in its group and 3 outside it (pid 7, x): \
             does it fork into the background? run it in the foreground"
        );
        assert_eq!(
            std::format!("{}", LeftInGroupText(grp(1))),
            "main process exited, 1 process left in its group: \
             does it fork into the background? run it in the foreground"
        );
    }

    #[test]
    fn leftovers_of_a_oneshot_and_of_a_stopped_service() {
        // A oneshot that leaves a helper behind completes once it is gone.
        let mut s = svc(Policy {
            kind: Kind::Oneshot,
            restart: Restart::Never,
            ..Policy::default()
        });
        let mut sys = FakeSys::default();
        s.step(Input::Start, t(0), &mut sys);
        s.step(Input::DepsReady, t(0), &mut sys);
        sys.alive_groups.push(101);
        s.step(code(0), t(5), &mut sys);
        assert!(matches!(s.state, State::Stopping { .. }));
        sys.alive_groups.clear();
        s.step(Input::Reaped { pid: 999 }, t(6), &mut sys);
        assert_eq!(s.state, State::Completed);
        // `stop` while the leftovers drain: stopped, not restarted.
        let mut s = svc(Policy::default());
        let mut sys = FakeSys::default();
        s.step(Input::Start, t(0), &mut sys);
        s.step(Input::DepsReady, t(0), &mut sys);
        sys.alive_groups.push(101);
        s.step(code(1), t(5), &mut sys);
        s.step(Input::Stop, t(6), &mut sys);
        sys.alive_groups.clear();
        s.step(Input::Reaped { pid: 999 }, t(7), &mut sys);
        assert_eq!(s.state, State::Stopped);
        assert_eq!(spawns_of(&sys), 1);
    }

    #[test]
    fn exit_while_starting_restarts_with_backoff() {
        let mut s = svc(Policy {
            needs_ready: true,
            ..Policy::default()
        });
        let mut sys = FakeSys::default();
        s.step(Input::Start, t(0), &mut sys);
        s.step(Input::DepsReady, t(0), &mut sys);
        assert!(matches!(s.state, State::Starting { .. }));
        s.step(code(1), t(30), &mut sys);
        assert_eq!(s.state, State::Backoff { retry_at: t(1030) });
        assert_eq!(s.state.leader(), None);
        s.step(Input::Tick, t(1030), &mut sys);
        assert!(matches!(s.state, State::Starting { pid: 102, .. }));
    }

    #[test]
    fn zero_backoff_retries_at_once_and_stays_zero() {
        let mut s = svc(Policy {
            backoff_initial: 0,
            backoff_max: 0,
            ..Policy::default()
        });
        let mut sys = FakeSys::default();
        s.step(Input::Start, t(0), &mut sys);
        s.step(Input::DepsReady, t(0), &mut sys);
        for k in 1..=4u64 {
            s.step(code(1), t(10 * k), &mut sys);
            assert_eq!(
                s.state,
                State::Backoff {
                    retry_at: t(10 * k)
                }
            );
            assert_eq!(s.poll_at(), t(10 * k), "due at once");
            assert!(matches!(
                sys.events.last(),
                Some((_, _, _, Event::Backoff { delay: 0, .. }))
            ));
            s.step(Input::Tick, t(10 * k), &mut sys);
            assert!(matches!(s.state, State::Running { .. }));
        }
        assert_eq!(s.next_delay, 0);
        // An exec failure with zero backoff backs off to `now` too, never
        // recursing into spawn.
        for _ in 0..3 {
            sys.fail.push(SpawnError {
                stage: Stage::Exec,
                errno: 2,
            });
        }
        s.step(code(1), t(100), &mut sys);
        s.step(Input::Tick, t(100), &mut sys);
        assert_eq!(s.state, State::Backoff { retry_at: t(100) });
        // Gives up at max_restarts even without a delay.
        let mut s = svc(Policy {
            backoff_initial: 0,
            max_restarts: 2,
            ..Policy::default()
        });
        let mut sys = FakeSys::default();
        s.step(Input::Start, t(0), &mut sys);
        s.step(Input::DepsReady, t(0), &mut sys);
        for _ in 0..3 {
            s.step(code(1), t(1), &mut sys);
            s.step(Input::Tick, t(1), &mut sys);
        }
        assert_eq!(s.state, State::Failed);
        assert_eq!(spawns_of(&sys), 3, "the first run and 2 restarts");
    }

    #[test]
    fn kill_at_the_shutdown_deadline_in_each_state() {
        for leader_gone in [false, true] {
            let mut s = svc(Policy::default());
            let mut sys = FakeSys::default();
            s.step(Input::Start, t(0), &mut sys);
            s.step(Input::DepsReady, t(0), &mut sys);
            s.want_down(); // shutdown
            s.step(Input::Kill, t(5), &mut sys);
            assert_eq!(sys.kills, [(101, SIGKILL)]);
            assert_eq!(
                s.state,
                State::Stopping {
                    pid: 101,
                    since: t(0),
                    kill_at: Instant::NEVER,
                    leader_gone: false
                }
            );
            if leader_gone {
                sys.alive_groups.push(101);
            }
            s.step(
                Input::Exited {
                    status: ExitStatus::Signal(9),
                },
                t(6),
                &mut sys,
            );
            assert_eq!(s.last_exit, Some(ExitStatus::Signal(9)));
            if leader_gone {
                s.step(Input::Kill, t(7), &mut sys);
                assert_eq!(sys.kills.last(), Some(&(101, SIGKILL)));
                sys.alive_groups.clear();
                s.step(Input::Reaped { pid: 999 }, t(8), &mut sys);
            }
            assert_eq!(s.state, State::Stopped);
            s.step(Input::Kill, t(9), &mut sys);
            assert_eq!(s.state, State::Stopped);
        }
    }

    #[test]
    fn stop_in_backoff_cancels_retry() {
        let mut s = svc(Policy::default());
        let mut sys = FakeSys::default();
        s.step(Input::Start, t(0), &mut sys);
        s.step(Input::DepsReady, t(0), &mut sys);
        s.step(code(1), t(10), &mut sys);
        s.step(Input::Stop, t(20), &mut sys);
        assert_eq!(s.state, State::Stopped);
        s.step(Input::Tick, t(5000), &mut sys);
        assert_eq!(s.state, State::Stopped);
        assert_eq!(sys.spawns.len(), 1);
    }
}
#[cfg(test)]
mod budget {
    /// The core's part of a service slot, in every slot whether used or
    /// not: the per-service memory budget (issue "Lean") counts it. The
    /// biggest parts: three `Option<Check>` (360 B), the recent events
    /// (200 B), the dependency list (72 B) and the order link (82 B).
    #[test]
    fn a_service_stays_within_its_memory_budget() {
        let n = core::mem::size_of::<super::Service>();
        assert!(n <= 960, "Service is {n} bytes");
    }
}
