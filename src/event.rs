//! What the machines report: state names and events, with the facts an
//! event carries (how a process ended, where a spawn failed, what a run
//! left behind). Plain data with no behaviour beyond naming: the service
//! machine (`service`), the world's interface (`sys`) and every renderer
//! (log lines, CLI, JSON) all speak it, and it depends on none of them.

use crate::time::Millis;
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
    /// An `fds:` entry the service names could not be created at startup
    /// (its errno), or moving the descriptors onto their numbers failed.
    Fds,
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
            Stage::Fds => "fds",
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
            12 => Stage::Fds,
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
        5 => "SIGTRAP",
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

/// The names of states, shared by logs, CLI, JSON and events.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum StateName {
    Stopped,
    Waiting,
    Starting,
    Running,
    Stopping,
    Backoff,
    Completed,
    Failed,
}

impl StateName {
    pub fn as_str(self) -> &'static str {
        match self {
            StateName::Stopped => "stopped",
            StateName::Waiting => "waiting",
            StateName::Starting => "starting",
            StateName::Running => "running",
            StateName::Stopping => "stopping",
            StateName::Backoff => "backoff",
            StateName::Completed => "completed",
            StateName::Failed => "failed",
        }
    }
}

impl fmt::Display for StateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened, as emitted to the shell.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Wanted up; `dep` is the dependency waited on, if known.
    Waiting {
        dep: Option<u16>,
        failed: bool,
    },
    Spawned {
        pid: i32,
    },
    /// Readiness passed: starting -> running.
    Ready {
        pid: i32,
    },
    /// Liveness failed (or start_timeout passed, or the startup check
    /// failed): stopping to restart.
    Unhealthy {
        pid: i32,
        start_timeout: bool,
        startup: bool,
    },
    SpawnFailed {
        err: SpawnError,
    },
    Exited {
        pid: i32,
        status: ExitStatus,
        uptime: Millis,
    },
    Backoff {
        delay: Millis,
        failures: u32,
    },
    GaveUp {
        failures: u32,
    },
    /// It has crashed this many times in a row, a multiple of its
    /// `degraded_after`: an alert, no state change.
    Degraded {
        failures: u32,
    },
    /// Exited non-zero (or could not exec) and the policy says no restart.
    Failed,
    Stopping {
        pid: i32,
        signal: i32,
    },
    /// SIGKILL to the group: its `stop_timeout` passed, or (`shutdown`)
    /// the shutdown deadline did.
    Killed {
        pid: i32,
        shutdown: bool,
    },
    /// The main process exited and processes of its run remain, in its
    /// group or outside it; they are stopped before any restart.
    /// `first`: the first time for this service (the daemon logs only
    /// that one).
    LeftInGroup {
        pid: i32,
        left: Leftovers,
        first: bool,
    },
    Stopped,
    Completed,
    /// An input that this state does not expect; logged and counted.
    Unexpected {
        input: &'static str,
    },
}
