//! The words for what happened to a service: one phrase per fact, written
//! here only. The daemon log (`Shell::log_event`), the event stream
//! (`events`), `status NAME` (`control::render`) and the SIGUSR1 dump
//! (`dump`) all take their text from these, and add only the frame around
//! it: the service's name, a pid, "; retrying". So a reader who greps the
//! log for what `status` said finds it.

use super::spawn::Prepared;
use coffey::sys::{SpawnError, Stage};
use coffey::time::{Dur, Millis};
use core::fmt::{Display, Write};

/// The text of an errno value ("No such file or directory").
pub fn errno_desc(e: i32) -> &'static str {
    nix::errno::Errno::from_raw(e).desc()
}

/// "waiting for db", or "waiting for db (it failed)" once it gave up.
pub fn waiting_for(out: &mut impl Write, dep: &str, failed: bool) {
    let why = if failed { " (it failed)" } else { "" };
    let _ = write!(out, "waiting for {dep}{why}");
}

/// "gave up after 5 consecutive failures".
pub fn gave_up(out: &mut impl Write, failures: u32) {
    let _ = write!(out, "gave up after {failures} consecutive failures");
}

/// "5 crashes in a row" (the `degraded` event's text).
pub fn crashes_in_a_row(out: &mut impl Write, failures: u32) {
    let _ = write!(out, "{failures} crashes in a row");
}

/// "degraded: 5 crashes in a row" (the log line, `status`).
pub fn degraded(out: &mut impl Write, failures: u32) {
    let _ = out.write_str("degraded: ");
    crashes_in_a_row(out, failures);
}

/// "restarting in 400ms (failure 2)".
pub fn restarting_in(out: &mut impl Write, delay: Millis, failures: u32) {
    let _ = write!(out, "restarting in {} (failure {failures})", Dur(delay));
}

/// Why a running service is stopped to be restarted.
pub fn unhealthy(out: &mut impl Write, start_timeout: bool) {
    let _ = out.write_str(if start_timeout {
        "not ready within start_timeout"
    } else {
        "liveness failed"
    });
}

/// Why a starting service is stopped to be restarted: its startup check.
pub fn startup_failed(out: &mut impl Write) {
    let _ = out.write_str("startup failed");
}

/// A stop or a shutdown ran out of time.
pub fn killed(out: &mut impl Write, shutdown: bool) {
    let _ = out.write_str(if shutdown {
        "shutdown timeout; sent SIGKILL"
    } else {
        "stop timeout; sent SIGKILL"
    });
}

/// "exit code 1 after 2s" (`status` is an exit status, or the OOM text).
pub fn exited(out: &mut impl Write, status: &dyn Display, uptime: Millis) {
    let _ = write!(out, "{status} after {}", Dur(uptime));
}

/// Why a spawn failed: the credentials' error, the cgroup, or the stage
/// and errno ("exec failed: No such file or directory", "exec failed at
/// chdir: Permission denied"). A temporary failure (the daemon's own
/// fork or pipe) is "cannot spawn (fork: ...)".
pub fn spawn_failed(out: &mut impl Write, err: SpawnError, p: Option<&Prepared>) {
    let desc = errno_desc(err.errno);
    let _ = match (err.stage, p) {
        _ if err.is_temporary() => write!(out, "cannot spawn ({}: {desc})", err.stage.name()),
        (Stage::User, Some(p)) if !p.cred_error().is_empty() => out.write_str(p.cred_error()),
        (Stage::User, _) => out.write_str("user or group not found"),
        (Stage::Cgroup, _) => write!(out, "cannot join its cgroup: {desc}"),
        (Stage::Fds, Some(p)) if !p.failed_fd().is_empty() => {
            write!(out, "fds entry '{}' is not open: {desc}", p.failed_fd())
        }
        (Stage::Fds, _) => write!(out, "cannot set up its fds: {desc}"),
        (Stage::Exec, _) => write!(out, "exec failed: {desc}"),
        (stage, _) => write!(out, "exec failed at {}: {desc}", stage.name()),
    };
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, clippy::disallowed_macros)]
mod tests {
    use super::*;

    fn text(f: impl FnOnce(&mut String)) -> String {
        let mut s = String::new();
        f(&mut s);
        s
    }

    #[test]
    fn each_spawn_failure_names_its_stage_once() {
        let e = |stage, errno| SpawnError { stage, errno };
        let t = |err| text(|s| spawn_failed(s, err, None));
        assert_eq!(
            t(e(Stage::Exec, 2)),
            "exec failed: No such file or directory"
        );
        assert_eq!(
            t(e(Stage::Chdir, 13)),
            "exec failed at chdir: Permission denied"
        );
        assert_eq!(t(e(Stage::Fork, 11)), "cannot spawn (fork: Try again)");
        assert_eq!(t(e(Stage::User, 0)), "user or group not found");
    }
}
