//! The only way the core touches the world.
//!
//! The daemon implements [`Sys`] with fork/execve and kill(2); unit tests
//! implement it with a recorder that can inject failures. Calls must not
//! block for long and must never panic.

use crate::health::{Check, ProbeError, Role};
use crate::service::{Event, Service, StateName};
use core::fmt;

/// Where in the spawn sequence a child failed. Reported by the child over a
/// close-on-exec pipe, so status can say what went wrong.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Creating the status pipe, in the daemon.
    Pipe,
    /// fork(2), in the daemon.
    Fork,
    /// dup2 of stdin/stdout/stderr.
    Stdio,
    Setsid,
    Setgroups,
    Setgid,
    Setuid,
    Chdir,
    Exec,
    /// `user` or `group` did not resolve when the config was loaded (the
    /// reason is the slot's; nothing was forked).
    User,
    /// setrlimit(2) of an `rlimits:` entry (EPERM: a hard limit raised
    /// without privilege).
    Rlimit,
    /// Joining the service's cgroup (a write to its `cgroup.procs`).
    Cgroup,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Pipe => "pipe",
            Stage::Fork => "fork",
            Stage::Stdio => "stdio",
            Stage::Setsid => "setsid",
            Stage::Setgroups => "setgroups",
            Stage::Setgid => "setgid",
            Stage::Setuid => "setuid",
            Stage::Chdir => "chdir",
            Stage::Exec => "exec",
            Stage::User => "user",
            Stage::Rlimit => "setrlimit",
            Stage::Cgroup => "cgroup",
        }
    }
    pub fn from_u32(v: u32) -> Stage {
        match v {
            0 => Stage::Pipe,
            1 => Stage::Fork,
            2 => Stage::Stdio,
            3 => Stage::Setsid,
            4 => Stage::Setgroups,
            5 => Stage::Setgid,
            6 => Stage::Setuid,
            7 => Stage::Chdir,
            9 => Stage::User,
            10 => Stage::Rlimit,
            11 => Stage::Cgroup,
            _ => Stage::Exec,
        }
    }
    pub fn to_u32(self) -> u32 {
        self as u32
    }
}

/// errno values the core needs to triage (Linux numbering).
pub mod errno {
    pub const EAGAIN: i32 = 11;
    pub const ENOMEM: i32 = 12;
    pub const ENFILE: i32 = 23;
    pub const EMFILE: i32 = 24;
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SpawnError {
    pub stage: Stage,
    pub errno: i32,
}

impl SpawnError {
    /// Resource exhaustion in the daemon itself: retry later, it is not the
    /// service's fault and must not count as a failure.
    pub fn is_temporary(&self) -> bool {
        matches!(self.stage, Stage::Pipe | Stage::Fork)
            && matches!(
                self.errno,
                errno::EAGAIN | errno::ENOMEM | errno::EMFILE | errno::ENFILE
            )
    }
}

/// How a process ended.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "signal {}", signal_name(*s)),
        }
    }
}

/// Name of a signal number, for messages.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        17 => "SIGCHLD",
        18 => "SIGCONT",
        19 => "SIGSTOP",
        20 => "SIGTSTP",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        28 => "SIGWINCH",
        30 => "SIGPWR",
        31 => "SIGSYS",
        _ => "signal",
    }
}

pub const SIGKILL: i32 = 9;
pub const SIGCONT: i32 = 18;

/// A process a run left behind that coffeyd inherited as the subreaper
/// (its parent exited), tracked so it is stopped with the run: `pid` is
/// the process (0 once reaped), `pgrp` the group it was in when found (a
/// daemon that called setsid(2) leads its own; a double fork leaves it in
/// the middle process's). The shell decides which children are whose.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Escapee {
    pub pid: i32,
    pub pgrp: i32,
}

impl Escapee {
    pub const NONE: Escapee = Escapee { pid: 0, pgrp: 0 };
    pub fn is_none(&self) -> bool {
        self.pid == 0 && self.pgrp == 0
    }
}

/// The processes of a run outside its process group: how many, and the
/// first of them with its command name (`/proc/PID/comm`, NUL-padded).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Outside {
    pub count: u32,
    pub pid: i32,
    pub comm: [u8; 16],
}

impl Outside {
    /// The command name as text (`?` if it is not UTF-8).
    pub fn name(&self) -> &str {
        let n = self
            .comm
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.comm.len());
        core::str::from_utf8(self.comm.get(..n).unwrap_or(&[])).unwrap_or("?")
    }
}

/// What lived on when a run's main process exited.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// Live members of its process group.
    pub in_group: u32,
    pub outside: Outside,
}

impl Leftovers {
    pub fn total(&self) -> u32 {
        self.in_group.saturating_add(self.outside.count)
    }
}

/// Side effects the machines ask for.
pub trait Sys {
    /// Starts service `idx` in a new session/process group. Returns its pid,
    /// which is also its process-group id.
    fn spawn(&mut self, idx: usize) -> Result<i32, SpawnError>;
    /// Sends `sig` to the whole process group `pgid`. Errors (ESRCH) are
    /// ignored: the group may already be gone.
    fn kill_group(&mut self, pgid: i32, sig: i32);
    /// Whether any process is left in group `pgid`.
    fn group_alive(&mut self, pgid: i32) -> bool;
    /// How many live (not zombie) processes are in group `pgid`, for
    /// "N processes left in its group". Asked only when a main process
    /// exits on its own. The default knows only alive or not.
    fn group_members(&mut self, pgid: i32) -> u32 {
        u32::from(self.group_alive(pgid))
    }
    /// The children of the daemon that the run of service `idx` (process
    /// group `pgid`) left behind when its main process was reaped: its
    /// orphans, in its group or outside it (a daemon that called
    /// setsid(2)). Stores up to `out.len()` of them; returns the ones
    /// outside the group, all counted. The default knows of none.
    fn escapees(&mut self, _idx: usize, _pgid: i32, _out: &mut [Escapee]) -> Outside {
        Outside::default()
    }
    /// Sends `sig` to an escapee: the process while it is not reaped, and
    /// its group.
    fn kill_escapee(&mut self, _e: Escapee, _sig: i32) {}
    /// Whether the escapee or anything in its group lives on.
    fn escapee_alive(&mut self, _e: Escapee) -> bool {
        false
    }
    /// A state change or notable event of service `idx`, for logs and
    /// (later) the event stream.
    fn emit(&mut self, idx: usize, from: StateName, to: StateName, event: &Event);
    /// Starts one probe (http/tcp/exec) of service `idx`. An immediate
    /// failure is returned and counted as the probe's result.
    fn start_probe(&mut self, _idx: usize, _role: Role) -> Result<(), ProbeError> {
        Ok(())
    }
    /// Drops the in-flight probe: closes its socket, kills its process.
    fn cancel_probe(&mut self, _idx: usize, _role: Role) {}
    /// A check's verdict changed, for logs and the event stream.
    fn health(&mut self, _idx: usize, _check: &Check, _state: StateName, _pid: i32) {}
    /// The shutdown deadline passed: every service in `services` that
    /// still has a process is about to get SIGKILL (for the log line
    /// "shutdown timeout: killing web (pid N), db (pid M)").
    fn shutdown_deadline(&mut self, _services: &[Service]) {}
    /// Whether this loop turn may spawn another service. Once its budget
    /// is spent, services due to start wait for the next turn, which
    /// reaps first (see [`crate::supervisor::Supervisor::tick`]). The
    /// default has no budget.
    fn may_spawn(&mut self) -> bool {
        true
    }
}
