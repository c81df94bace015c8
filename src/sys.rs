//! The only way the core touches the world.
//!
//! The daemon implements [`Sys`] with fork/execve and kill(2); unit tests
//! implement it with a recorder that can inject failures. Calls must not
//! block for long and must never panic.

use crate::health::{Check, ProbeError, Role};
// The event vocabulary lives in `event`; these names stay reachable here
// for the shell, which reads them as part of this interface.
pub use crate::event::{
    errno, signal_name, Event, ExitStatus, Leftovers, Outside, SpawnError, Stage, StateName,
};

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
    /// The shutdown deadline passed: each (service, pid) in `killing`
    /// still has a process and is about to get SIGKILL (for the log line
    /// "shutdown timeout: killing web (pid N), db (pid M)").
    fn shutdown_deadline(&mut self, _killing: &mut dyn Iterator<Item = (usize, i32)>) {}
    /// Whether this loop turn may spawn another service. Once its budget
    /// is spent, services due to start wait for the next turn, which
    /// reaps first (see [`crate::supervisor::Supervisor::tick`]). The
    /// default has no budget.
    fn may_spawn(&mut self) -> bool {
        true
    }
}
