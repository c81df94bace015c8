//! The daemon shell: one thread, one mio loop, no allocation after startup.
//!
//! It owns the world (fds, pids, files) and lends preallocated tables to
//! the core machines. Each turn: read the clock once, fire due deadlines,
//! sleep in `poll` until the earliest deadline or an event, then drain
//! signals and reap (first), then service pipes with a per-turn budget.
//! With nothing due the poll timeout is infinite: zero wakeups when idle.

mod alloc;
mod arena;
mod cgroup;
mod clock;
mod compiled;
mod control;
mod escape;
mod eventlog;
mod events;
mod fdtable;
mod globals;
mod group;
mod log;
mod logfile;
mod manager;
mod notify;
mod output;
pub mod pid1;
mod probe;
mod reexec;
mod reload;
mod resources;
pub mod setup;
mod slab;
mod sockaddr;
mod spawn;
mod sweep;
mod token;
mod words;

pub use alloc::{client as client_allocator, Counting};

use coffey::limits::{EVENTS, NAME_BUF, READ_CHUNK, REAP_BATCH, SPAWNS_PER_TURN, SPAWN_SLICE_US};
use coffey::pidindex::{PidIndex, PidSlot};
use coffey::service::{Event, StateName};
use coffey::supervisor::Supervisor;
use coffey::sys::{signal_name, Escapee, ExitStatus, Outside, SpawnError, Stage, Sys};
use coffey::time::{Dur, Instant};
use core::fmt::Write as _;
use globals::Globals;
use log::{log, Log};
use mio::unix::SourceFd;
use mio::{Events, Interest};
use nix::libc;
use nix::sys::signal::Signal;
use std::os::fd::RawFd;

use token::Token;

/// Shell-side state of one service slot, in parts by job: output,
/// health checks, readiness notification. The parts held as
/// [`slab::Cold`] live in zeroed tables, one per kind for all slots, and
/// cost memory only for the services that use them (see "Memory per
/// service" in docs/DESIGN.md).
pub struct Slot {
    /// Empty for spare or retired slots.
    pub name: heapless::String<NAME_BUF>,
    /// Exec buffers; `filled` is false for spare slots.
    pub prep: spawn::Prepared,
    /// Its pipes and where their lines go (see `output.rs`).
    pub output: output::Output,
    /// Removed by a reload: hidden from status, free once its process is
    /// gone. The name stays for the log lines of its last stop.
    pub retired: bool,
    /// Health checks: what to probe, the probe in flight, exec-check argv.
    pub health: probe::Health,
    /// sd_notify: socket, texts, state of the current run.
    pub notify: notify::Notify,
    /// Read end of the s6/dinit readiness pipe of the running process.
    pub notify_r: RawFd,
    /// Copy its lines to the console (`console: true`).
    pub console: bool,
    /// Output pipe may have more data (edge-triggered readiness not yet
    /// drained).
    pub ready: [bool; 2],
    /// When the current run was spawned, in `/proc` start-time ticks: an
    /// escapee of this run cannot have started before.
    pub spawned: u64,
    /// What the current reap batch found of this run (see `escape.rs`).
    pub found: escape::Found,
}

/// The daemon shell: a handful of owned parts, each lent on its own to
/// the code that needs only it (see "The shell's parts" in
/// docs/DESIGN.md).
pub struct Shell {
    pub log: Log,
    /// For registering probe and notify fds made after startup.
    pub registry: mio::Registry,
    pub turns: clock::Turns,
    /// The services' processes and output.
    pub svc: Services,
    pub ctl: control::Control,
    pub reloader: reload::Reloader,
    /// PID 1 and container-init duties: mode, shutdown, re-exec.
    pub life: pid1::Life,
}

/// Exec and output of every service: the slots, what their children are
/// made from (exec arena, base environment, stack, cgroups) and the
/// buffers their output is read through.
pub struct Services {
    pub slots: Vec<Slot>,
    pub used: usize,
    pub devnull: RawFd,
    pub readbuf: Box<[u8; READ_CHUNK]>,
    pub scratch: Box<log::LineBuf>,
    pub base_env: spawn::BaseEnv,
    /// Every slot's argv/envp storage (see `arena.rs`).
    pub arena: arena::ExecArena,
    /// Service log file rotation settings.
    pub file_max: u64,
    pub file_keep: u32,
    /// Slots whose main process moved by sd_notify `MAINPID=`.
    pub mainpids: usize,
    /// The services' cgroups (none without cgroup2 or `coffey.cgroup`).
    pub cg: cgroup::Cgroups,
    /// Services spawned this turn (budget: [`SPAWNS_PER_TURN`]).
    pub spawns: usize,
    /// What every service and exec check's child runs on until execve.
    pub stack: spawn::Stack,
}

/// errno of the last failed libc call.
pub(crate) fn errno() -> i32 {
    nix::errno::Errno::last_raw()
}

/// Closes a descriptor we own (-1: nothing). Closing also removes it from
/// the poller.
pub(crate) fn close_fd(fd: RawFd) {
    if fd >= 0 {
        // SAFETY: the caller owns fd and forgets it.
        unsafe { libc::close(fd) };
    }
}

/// Sets close-on-exec on each of `fds` (`on`), or clears it so that an
/// exec'd image inherits them (reexec); -1 entries are skipped.
pub(crate) fn set_cloexec(fds: impl IntoIterator<Item = RawFd>, on: bool) {
    let flag = if on { libc::FD_CLOEXEC } else { 0 };
    for fd in fds.into_iter().filter(|fd| *fd >= 0) {
        // SAFETY: fcntl on a descriptor the caller owns.
        unsafe { libc::fcntl(fd, libc::F_SETFD, flag) };
    }
}

use words::errno_desc;

impl Sys for Shell {
    fn spawn(&mut self, idx: usize) -> Result<i32, SpawnError> {
        let devnull = self.svc.devnull;
        let Some(slot) = self.svc.slots.get_mut(idx).filter(|s| s.prep.filled) else {
            return Err(SpawnError {
                stage: Stage::Exec,
                errno: libc::ENOENT,
            });
        };
        // s6/dinit readiness: a fresh pipe per run, write end at fd N.
        let mut notify_w = -1;
        slot.prep.notify_fd = None;
        if let Some(probe::Spec::Notify { fd: Some(n) }) = slot.health.specs.first() {
            let mut fds = [-1; 2];
            // SAFETY: valid out array.
            if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
                return Err(SpawnError {
                    stage: Stage::Pipe,
                    errno: nix::errno::Errno::last_raw(),
                });
            }
            let [r, w] = fds;
            if slot.notify_r >= 0 {
                // SAFETY: ours.
                unsafe { libc::close(slot.notify_r) };
            }
            slot.notify_r = r;
            notify_w = w;
            slot.prep.notify_fd = Some((w, *n));
        }
        slot.spawned = group::boot_ticks();
        slot.prep.cgroup_fd = self.svc.cg.join_fd(idx);
        self.svc.spawns += 1;
        // A logger's stdin is its logger pipe; every other's /dev/null.
        let stdin = if slot.output.in_r >= 0 {
            slot.output.in_r
        } else {
            devnull
        };
        // Only while an entry is failed: finding the table decodes the
        // whole running config.
        if slot.prep.has_fds() {
            if let Some(t) = self.svc.stack.table_mut().filter(|t| t.any_failed()) {
                t.retry_failed(compiled::fd_table(self.reloader.running()), &mut self.log);
            }
        }
        let res = spawn::spawn(&slot.prep, stdin, &mut self.svc.stack);
        if let Ok(pid) = res {
            self.svc.cg.spawned(idx, pid);
        }
        if notify_w >= 0 {
            // SAFETY: ours; the child has its copy.
            unsafe { libc::close(notify_w) };
            let r = slot.notify_r;
            let _ = self.registry.register(
                &mut SourceFd(&r),
                Token::NotifyPipe(idx).encode(),
                Interest::READABLE,
            );
        }
        res
    }

    fn start_probe(
        &mut self,
        idx: usize,
        role: coffey::health::Role,
    ) -> Result<(), coffey::health::ProbeError> {
        if let Some(fd) = probe::start(&mut self.svc, idx, role)? {
            let t = Token::Probe {
                slot: idx,
                role: role.probe(),
            };
            let _ = self.registry.register(
                &mut SourceFd(&fd),
                t.encode(),
                Interest::READABLE | Interest::WRITABLE,
            );
        }
        Ok(())
    }

    fn cancel_probe(&mut self, idx: usize, role: coffey::health::Role) {
        probe::cancel(&mut self.svc, idx, role);
    }

    fn health(&mut self, idx: usize, check: &coffey::health::Check, state: StateName, pid: i32) {
        probe::log_verdict(&self.svc, &mut self.log, idx, check);
        events::broadcast_health(&mut self.ctl, &self.svc, idx, check, state, pid);
    }

    fn kill_group(&mut self, pgid: i32, sig: i32) {
        if pgid > 1 {
            // SAFETY: plain syscall; ESRCH (group gone) is fine.
            unsafe { libc::kill(-pgid, sig) };
            // And everything else in the run's cgroup, if it has one.
            self.svc.cg.kill(pgid, sig);
        }
    }

    fn group_alive(&mut self, pgid: i32) -> bool {
        if pgid <= 1 {
            return false;
        }
        if self.svc.cg.alive(pgid) == Some(true) {
            return true;
        }
        // SAFETY: signal 0 only checks existence.
        let r = unsafe { libc::kill(-pgid, 0) };
        r == 0 || nix::errno::Errno::last_raw() == libc::EPERM
    }

    fn group_members(&mut self, pgid: i32) -> u32 {
        // With a cgroup, "its group" is the cgroup: every live member.
        if let Some(n) = self.svc.cg.members(pgid) {
            return n;
        }
        if !self.group_alive(pgid) {
            return 0;
        }
        // Without /proc (a bare container), "alive" is all we know.
        group::live_members(pgid).unwrap_or(1)
    }

    fn escapees(&mut self, idx: usize, _pgid: i32, out: &mut [Escapee]) -> Outside {
        if self.svc.cg.join_fd(idx) >= 0 {
            // Counted (and stopped) as members of its cgroup instead.
            return Outside::default();
        }
        escape::take(&mut self.svc, idx, out)
    }

    fn kill_escapee(&mut self, e: Escapee, sig: i32) {
        // SAFETY: plain syscalls; ESRCH is fine. `e.pid` is our unreaped
        // child, so it names that process (and `-e.pid` only a group it
        // made since it was found); it is forgotten once reaped.
        unsafe {
            if e.pid > 1 {
                libc::kill(e.pid, sig);
                libc::kill(-e.pid, sig);
            }
            if e.pgrp > 1 && e.pgrp != e.pid {
                libc::kill(-e.pgrp, sig);
            }
        }
    }

    fn escapee_alive(&mut self, e: Escapee) -> bool {
        // SAFETY: signal 0 only checks existence.
        let exists = e.pid > 1 && unsafe { libc::kill(e.pid, 0) } == 0;
        exists || self.group_alive(e.pgrp)
    }

    fn emit(&mut self, idx: usize, _from: StateName, to: StateName, event: &Event) {
        events::log_event(&self.svc, &mut self.log, idx, to, event);
        if let Event::SpawnFailed { err } = *event {
            if Some(idx) == self.life.main_idx {
                self.life.main_exit.spawn_failed(err);
            }
        }
        events::broadcast_event(&mut self.ctl, &self.svc, idx, to, event, 0);
    }

    fn may_spawn(&mut self) -> bool {
        self.svc.spawns == 0
            || (self.svc.spawns < SPAWNS_PER_TURN && self.turns.elapsed_us() < SPAWN_SLICE_US)
    }

    fn shutdown_deadline(&mut self, killing: &mut dyn Iterator<Item = (usize, i32)>) {
        let mut line = log::LineBuf::default();
        let _ = line.write_str("shutdown timeout: killing");
        let mut sep = " ";
        for (i, pid) in killing {
            let name = self.svc.slots.get(i).map_or("?", |s| s.name.as_str());
            let _ = write!(line, "{sep}{name} (pid {pid})");
            sep = ", ";
        }
        let text = core::str::from_utf8(line.as_bytes()).unwrap_or("shutdown timeout");
        log!(self.log, "{text}");
    }
}

impl Shell {
    /// A loop turn begins (poll returned): its clock and spawn budget.
    fn new_turn(&mut self) {
        self.turns.begin();
        self.svc.spawns = 0;
    }
}

fn status_of(raw: i32) -> Option<ExitStatus> {
    if libc::WIFEXITED(raw) {
        Some(ExitStatus::Code(libc::WEXITSTATUS(raw)))
    } else if libc::WIFSIGNALED(raw) {
        Some(ExitStatus::Signal(libc::WTERMSIG(raw)))
    } else {
        None
    }
}

/// A reaped pid, before the machines hear of it: the pid the service
/// machine must see (None: not a service's exit, see `notify::route_exit`),
/// after the end of that process's output (its last unterminated line).
fn before_exit(
    sup: &Supervisor<'_>,
    shell: &mut Shell,
    pid: i32,
    status: ExitStatus,
) -> Option<i32> {
    let pid = notify::route_exit(&mut shell.svc, &mut shell.log, pid, status)?;
    if let Some(i) = sup.owner_of(pid) {
        cgroup::main_exited(&mut shell.svc.cg, i, status);
        output::ended(&mut shell.svc, &mut shell.log, &mut shell.ctl, i);
        notify::process_gone(&mut shell.svc, i);
    }
    Some(pid)
}

/// Reaps every exited child (services and orphans alike), in batches:
/// first every pid waitpid gives (up to [`REAP_BATCH`]), then the
/// escapees of the batch's services are sorted out (`escape.rs`), then
/// each exit is handled.
fn reap(sup: &mut Supervisor<'_>, shell: &mut Shell) {
    loop {
        let mut pids = [0i32; REAP_BATCH];
        let mut raws = [0i32; REAP_BATCH];
        let mut n = 0;
        while n < REAP_BATCH {
            let mut raw = 0;
            // SAFETY: valid out-pointer.
            let pid = unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG) };
            if pid <= 0 {
                if pid < 0 && nix::errno::Errno::last_raw() == libc::EINTR {
                    continue;
                }
                break;
            }
            if let (Some(p), Some(r)) = (pids.get_mut(n), raws.get_mut(n)) {
                (*p, *r) = (pid, raw);
                n += 1;
            }
        }
        let batch = pids.get(..n).unwrap_or(&[]);
        // A service with a cgroup needs no guessing whose orphans are
        // whose: its cgroup holds them (see cgroup.rs).
        let mut guess = [0i32; REAP_BATCH];
        let mut k = 0;
        for &pid in batch {
            let contained = sup
                .owner_of(pid)
                .is_some_and(|i| shell.svc.cg.join_fd(i) >= 0);
            if let Some(g) = guess.get_mut(k).filter(|_| !contained) {
                *g = pid;
                k += 1;
            }
        }
        let compiler = shell.reloader.machine.child_pid();
        let guess = guess.get(..k).unwrap_or(&[]);
        let touched = escape::attribute(sup, &mut shell.svc, &mut shell.log, compiler, guess);
        for (&pid, &raw) in batch.iter().zip(raws.iter()) {
            on_reaped(sup, shell, pid, raw);
        }
        escape::clear(&mut shell.svc, &touched);
        if n < REAP_BATCH {
            return;
        }
    }
}

/// One reaped child: the reload's compile child, an exec check, a
/// service's main process, an escapee or an orphan.
fn on_reaped(sup: &mut Supervisor<'_>, shell: &mut Shell, pid: i32, raw: i32) {
    if reload::machine::reaped(&mut shell.reloader, pid, raw) {
        return;
    }
    let Some(status) = status_of(raw) else {
        return;
    };
    if let Some((idx, p, res)) = probe::on_exit(&mut shell.svc, pid, status) {
        if let Some(res) = res {
            let role = sup.probe_role(idx, p);
            sup.probe_result(idx, role, res, clock::now(), shell);
        }
        return;
    }
    let Some(pid) = before_exit(sup, shell, pid, status) else {
        return;
    };
    // An escapee is forgotten by its service as it is reaped: ask first.
    let leftover_of = sup
        .services()
        .iter()
        .position(|s| s.escapees().iter().any(|e| e.pid == pid));
    let idx = sup.on_exit(pid, status, clock::now(), shell);
    if idx.is_some() && idx == shell.life.main_idx {
        // tini's contract: the main service's exit ends the container,
        // and its status is the exit code, during a shutdown too.
        let code = shell.life.main_exit.exited(status);
        if sup.shutting_down() {
            log!(
                shell.log,
                "main service exited ({status}); exit code {code}"
            );
        } else {
            log!(
                shell.log,
                "main service exited ({status}); stopping everything, exit code {code}"
            );
            let t = shell.life.shutdown_timeout;
            sup.shutdown(clock::now(), t, shell);
        }
    }
    match (idx, leftover_of) {
        (Some(_), _) => {}
        (None, Some(i)) => {
            let name = shell.svc.slots.get(i).map_or("?", |s| s.name.as_str());
            log!(
                shell.log,
                "{name}: pid {pid}, left over from its last run, exited with {status}"
            );
        }
        (None, None) => log!(shell.log, "reaped orphan pid {pid} ({status})"),
    }
}

/// One readiness event, by its source. Returns whether it was the
/// control socket's (connections are accepted after the events).
fn dispatch(sup: &mut Supervisor<'_>, shell: &mut Shell, ev: &mio::event::Event) -> bool {
    match Token::decode(ev.token()) {
        None | Some(Token::Signal) => {}
        Some(Token::Listen) => return true,
        Some(Token::Reload) => shell.reloader.machine.mark(),
        Some(Token::Cgroup(i)) => cgroup::on_ready(sup, shell, i),
        Some(Token::NotifySock(i)) => notify::mark(&mut shell.svc, i),
        Some(Token::NotifyPipe(i)) => {
            if probe::on_notify_fd(&mut shell.svc, i) {
                sup.notified(i, false, clock::now(), shell);
            }
        }
        Some(Token::Probe { slot, role: p }) => {
            let role = sup.probe_role(slot, p);
            if let Some(res) = probe::on_ready(&mut shell.svc, slot, role) {
                sup.probe_result(slot, role, res, clock::now(), shell);
            }
        }
        Some(Token::Client(k)) => {
            if let Some(c) = shell.ctl.clients.get_mut(k) {
                c.readable |= ev.is_readable() || ev.is_read_closed();
                c.hup |= ev.is_read_closed();
            }
        }
        Some(Token::Pipe { slot, stream }) => {
            let s = shell.svc.slots.get_mut(slot);
            if let Some(r) = s.and_then(|s| s.ready.get_mut(stream)) {
                *r = true;
            }
        }
    }
    false
}

/// Drains the signalfd: reaps (first, see the loop), shutdown, the status
/// dump, reload requests.
fn signals(sup: &mut Supervisor<'_>, shell: &mut Shell, sfd: &nix::sys::signalfd::SignalFd) {
    let mut reap_now = false;
    while let Ok(Some(si)) = sfd.read_signal() {
        match Signal::try_from(si.ssi_signo as i32) {
            Ok(Signal::SIGCHLD) => reap_now = true,
            // A machine's init: the classic sysvinit/busybox map.
            Ok(
                s @ (Signal::SIGTERM
                | Signal::SIGINT
                | Signal::SIGUSR1
                | Signal::SIGUSR2
                | Signal::SIGPWR),
            ) if shell.life.mode == pid1::Mode::System => {
                let a = pid1::action_for(s as i32).unwrap_or(pid1::Action::Reboot);
                if !sup.shutting_down() {
                    log!(
                        shell.log,
                        "{}: {} (timeout {})",
                        s.as_str(),
                        a.name(),
                        Dur(shell.life.shutdown_timeout)
                    );
                    shell.life.action = Some(a);
                }
                let t = shell.life.shutdown_timeout;
                sup.shutdown(clock::now(), t, shell);
            }
            Ok(s @ (Signal::SIGTERM | Signal::SIGINT)) => {
                if !sup.shutting_down() {
                    shell.life.main_exit.shutdown_by(s as i32);
                    log!(
                        shell.log,
                        "{}: shutting down (timeout {})",
                        s.as_str(),
                        Dur(shell.life.shutdown_timeout)
                    );
                }
                let t = shell.life.shutdown_timeout;
                sup.shutdown(clock::now(), t, shell);
            }
            Ok(Signal::SIGUSR1) => {
                let Shell {
                    svc, log, turns, ..
                } = &mut *shell;
                dump(sup, svc, log, turns, clock::now())
            }
            Ok(Signal::SIGHUP) => {
                let asker = reload::machine::Asker::Signal;
                let _ = reload::machine::request(sup, shell, asker, false, clock::now());
            }
            Ok(s) => log!(shell.log, "ignored {}", s.as_str()),
            Err(_) => {}
        }
    }
    if reap_now {
        reap(sup, shell);
    }
}

/// The main service hit a permanent spawn error (see
/// `pid1::MainExit::spawn_failed`): stop everything, as tini exits when
/// it cannot exec its child.
fn main_cannot_start(sup: &mut Supervisor<'_>, shell: &mut Shell, now: Instant) {
    let Some(err) = shell.life.main_exit.cannot_start.take() else {
        return;
    };
    if sup.shutting_down() {
        return;
    }
    let mut why = log::LineBuf::default();
    let prep = shell
        .life
        .main_idx
        .and_then(|i| shell.svc.slots.get(i))
        .map(|s| &s.prep);
    words::spawn_failed(&mut why, err, prep);
    log!(
        shell.log,
        "main service cannot start: {}; stopping everything, exit code {}",
        core::str::from_utf8(why.as_bytes()).unwrap_or(""),
        shell.life.main_exit.final_code(true)
    );
    let t = shell.life.shutdown_timeout;
    sup.shutdown(now, t, shell);
}

/// How long container mode waits for the main process to be reaped after
/// the loop ended (it got SIGKILL at the shutdown deadline): a process in
/// D state may never go, and the container must still end.
const MAIN_REAP_MS: u64 = 5000;

/// Container mode: reaps until the main service's process is gone, so its
/// status (137 after the deadline's SIGKILL) is the exit code.
fn reap_main(
    sup: &mut Supervisor<'_>,
    shell: &mut Shell,
    sfd: &nix::sys::signalfd::SignalFd,
    poll: &mut mio::Poll,
    events: &mut Events,
) {
    let Some(m) = shell.life.main_idx else {
        return;
    };
    let deadline = clock::now().add(MAIN_REAP_MS);
    loop {
        while let Ok(Some(_)) = sfd.read_signal() {}
        reap(sup, shell);
        if shell.life.main_exit.code.is_some() {
            return;
        }
        let Some(pid) = sup.services().get(m).and_then(|s| s.state.pid()) else {
            log!(
                shell.log,
                "main service never ran; exit code {} ({})",
                shell.life.main_exit.final_code(true),
                signal_name(shell.life.main_exit.end_signal)
            );
            return;
        };
        let now = clock::now();
        if now >= deadline {
            let code = shell
                .life
                .main_exit
                .exited(ExitStatus::Signal(libc::SIGKILL));
            log!(
                shell.log,
                "main service pid {pid} still not reaped {} after the shutdown ended; exit code {code}",
                Dur(MAIN_REAP_MS)
            );
            return;
        }
        let wait = std::time::Duration::from_millis(deadline.since(now));
        let _ = poll.poll(events, Some(wait));
    }
}

/// SIGUSR1: every service's status and the loop's figures, in the log.
fn dump(
    sup: &Supervisor<'_>,
    svc: &Services,
    log: &mut Log,
    turns: &mut clock::Turns,
    now: Instant,
) {
    // Asked for: never folded into "last message repeated".
    log.break_repeats();
    for (i, s) in sup.services().iter().enumerate() {
        let Some(slot) = svc.slots.get(i).filter(|s| !s.retired) else {
            continue;
        };
        let (name, lines, evicted, cut) = (
            slot.name.as_str(),
            slot.output.ring.len(),
            slot.output.ring.evicted,
            slot.output.ring.cut,
        );
        let pid = s.state.pid().unwrap_or(0);
        // The reason in `status`'s words.
        let mut why = log::LineBuf::default();
        control::render::reason(s, svc, now, &mut why);
        let sep = if why.as_bytes().is_empty() { "" } else { ", " };
        let due = s.poll_at();
        let next = if due == Instant::NEVER {
            0
        } else {
            due.since(now)
        };
        let why = core::str::from_utf8(why.as_bytes()).unwrap_or("");
        log!(
            log,
            "status {name}: {} pid {pid} restarts {} next {}{sep}{why}; log {lines} lines ({evicted} evicted, {cut} cut)",
            s.state.name(),
            s.restarts,
            Dur(next)
        );
    }
    let t = &mut *turns;
    let ([lw, lc], [ww, wc]) = (t.longest, core::mem::take(&mut t.window));
    log!(
        log,
        "status: heap allocations after startup: {}; orphans reaped: {}; longest loop turn {lw} us, {lc} us on CPU ({ww} us, {wc} us on CPU since the last dump)",
        alloc::count(),
        sup.orphans_reaped
    );
    turns.leave_out_so_far();
}

pub(crate) fn release_paths(cfg: &Globals) {
    // Only what this daemon made: a path it could not claim may be
    // another's. Both paths are short: std converts them on the stack,
    // no allocation.
    let (socket, pid_file) = setup::owns_paths();
    if socket {
        let _ = std::fs::remove_file(&cfg.socket);
    }
    if let Some(p) = cfg.pid_file.as_ref().filter(|_| pid_file) {
        let _ = std::fs::remove_file(p);
    }
}

/// `coffeyd __compile -c FILE`: the compile child of startup and reload,
/// the only place a daemon's YAML is parsed. Writes the compiled config
/// with its warnings (or the validator's messages) to stdout; exit 0
/// either way.
#[allow(clippy::disallowed_methods, clippy::disallowed_macros)]
pub fn compile_child(path: &std::path::Path) -> i32 {
    use std::io::Write;
    let out = match crate::config::load(path) {
        Ok((cfg, warnings)) => {
            let text: Vec<String> = warnings.iter().map(|d| d.to_string()).collect();
            compiled::encode_with(&cfg, &text.join("\n"))
        }
        Err(diags) => {
            let text: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
            compiled::encode_error(&text.join("\n"))
        }
    };
    let mut o = std::io::stdout().lock();
    if o.write_all(&out).and_then(|_| o.flush()).is_err() {
        return 1;
    }
    0
}

/// Runs the daemon until shutdown, from the globals and the compiled
/// config. Returns the process exit code.
pub fn run(cfg: Globals, compiled: Vec<u8>, mode: pid1::Mode) -> i32 {
    match run_inner(cfg, compiled, mode) {
        Ok(code) => code,
        Err(e) => {
            let _ = log::write_all(2, b"coffeyd: ");
            let _ = log::write_all(2, e.as_bytes());
            let _ = log::write_all(2, b"\n");
            3
        }
    }
}

/// What the loop works on besides the supervisor: the shell and the
/// loop's own descriptors.
struct Looping {
    shell: Shell,
    poll: mio::Poll,
    sfd: nix::sys::signalfd::SignalFd,
    events: Events,
    /// Whether work is left over for the next turn (poll without waiting).
    pending: bool,
}

fn run_inner(cfg: Globals, compiled: Vec<u8>, mode: pid1::Mode) -> Result<i32, String> {
    let cfg = &cfg;
    let Ready {
        mut l,
        mut table,
        mut pids,
        adopted,
        listener: _listener,
    } = ready(cfg, &compiled, mode)?;
    let mut sup = Supervisor::new(&mut table, &mut pids, l.shell.svc.used);
    adopt(&mut sup, &mut l.shell, &adopted);
    drop(adopted);
    // The tables and the reload buffers hold everything the loop needs
    // from the compiled config: its heap goes back before the loop
    // (shutdown reads only the socket and pid file paths).
    drop(compiled);
    slab::trim_stack();

    // ---- from here on: no heap allocation.
    alloc::seal();
    log!(
        l.shell.log,
        "startup heap: {} bytes allocated, {} kept",
        alloc::startup_bytes(),
        alloc::kept_bytes()
    );
    slab::trim_code();
    l.shell.new_turn();
    sup.start_all(clock::now(), &mut l.shell);
    while turn(&mut sup, &mut l) {}
    finish(&mut sup, &mut l, cfg)
}

/// What startup hands the loop.
struct Ready {
    /// Boxed: the shell is kilobytes, and a frame that holds it for the
    /// daemon's whole life would keep those stack pages written.
    l: Box<Looping>,
    table: Vec<coffey::service::Service>,
    pids: Box<[PidSlot]>,
    adopted: Vec<reexec::Adopted>,
    listener: Option<std::os::unix::net::UnixListener>,
}

/// Startup's deep part: setup, the shell, the pid index. Never inlined,
/// so its frames (tens of KiB with setup's temporaries and the shell's
/// moves) lie below `run_inner`'s, where `slab::trim_stack` gives them
/// back before the loop; inlined, they stayed written for good (33 KiB
/// of `run_inner` frame, measured with `perf record -e page-faults`).
#[inline(never)]
#[allow(clippy::disallowed_methods)] // startup: before the heap is sealed
fn ready(cfg: &Globals, compiled: &[u8], mode: pid1::Mode) -> Result<Ready, String> {
    let st = setup::start(cfg, compiled)?;
    let mut l = Box::new(Looping {
        shell: st.shell,
        poll: st.poll,
        sfd: st.sfd,
        events: Events::with_capacity(EVENTS),
        pending: false,
    });
    configure(&mut l.shell, cfg, mode, st.table.len());
    // The pid index: sized once, like the table (startup may allocate).
    let pids = core::iter::repeat_n(PidSlot::EMPTY, PidIndex::capacity_for(st.table.len()));
    Ok(Ready {
        l,
        pids: pids.collect(),
        table: st.table,
        adopted: st.adopted,
        listener: st.listener,
    })
}

/// The mode, cgroups and main service; logs "started".
fn configure(shell: &mut Shell, cfg: &Globals, mode: pid1::Mode, slots: usize) {
    shell.life.mode = mode;
    cgroup::init(
        &mut shell.svc,
        &mut shell.log,
        &shell.registry,
        cfg.cgroup.as_deref(),
        mode == pid1::Mode::System,
    );
    shell.life.main_idx = cfg
        .main
        .as_ref()
        .and_then(|m| shell.svc.slots.iter().position(|s| s.name.as_str() == m));
    let socket = if shell.ctl.listen_fd >= 0 {
        cfg.socket.as_path()
    } else {
        std::path::Path::new("none")
    };
    log!(
        shell.log,
        "started: pid {}, {} services ({slots} slots), socket {}",
        std::process::id(),
        shell.svc.used,
        socket.display()
    );
}

/// After `reexec`: takes over the previous binary's processes; stops
/// those of services the new config no longer has.
fn adopt(sup: &mut Supervisor<'_>, shell: &mut Shell, adopted: &[reexec::Adopted]) {
    let used = shell.svc.used;
    for a in adopted {
        let found = shell
            .svc
            .slots
            .get(..used)
            .and_then(|s| s.iter().position(|s| s.name.as_str() == a.name));
        match found {
            Some(i) => {
                // Its escapees cannot have started before it did.
                if let Some(slot) = shell.svc.slots.get_mut(i) {
                    slot.spawned = group::stat(a.pid).map_or(0, |st| st.start);
                }
                shell.svc.cg.spawned(i, a.pid);
                let since = Instant::from_millis(a.since);
                sup.adopt(i, a.pid, since, a.restarts, a.failures, a.want_up);
                let (name, pid, restarts) = (&a.name, a.pid, a.restarts);
                log!(shell.log, "{name}: adopted pid {pid} (restarts {restarts})");
            }
            None if a.pid > 0 => {
                let (name, pid) = (&a.name, a.pid);
                log!(
                    shell.log,
                    "{name}: not in the new config; stopping pid {pid}"
                );
                // SAFETY: plain syscall on the old service's group.
                unsafe { libc::kill(-a.pid, libc::SIGTERM) };
            }
            None => {}
        }
    }
}

/// One loop turn: the machines' deadlines, one poll, then what it
/// returned. False once the supervisor has finished (shutdown done).
fn turn(sup: &mut Supervisor<'_>, l: &mut Looping) -> bool {
    let now = clock::now();
    sup.tick(now, &mut l.shell);
    main_cannot_start(sup, &mut l.shell, now);
    tell_manager(sup, &mut l.shell.life.manager, now);
    if sup.finished() {
        return false;
    }
    control::expire(&mut l.shell.ctl, &mut l.shell.log, now);
    l.shell.log.tick(now);
    if wait(sup, l, now) {
        handle(sup, l);
    }
    true
}

/// What systemd above coffeyd hears: READY=1 once startup has settled,
/// STOPPING=1 when the shutdown begins, the watchdog when it is due.
fn tell_manager(sup: &Supervisor<'_>, m: &mut Option<manager::Manager>, now: Instant) {
    let Some(m) = m else { return };
    if sup.shutting_down() {
        m.stopping();
    } else if !m.is_ready() && sup.settled() {
        m.ready();
    }
    m.tick(now);
}

/// Polls until the first deadline of any machine (at once when work is
/// pending). False when the poll failed (EINTR, or an error, logged).
fn wait(sup: &Supervisor<'_>, l: &mut Looping, now: Instant) -> bool {
    let shell = &mut l.shell;
    let due = sup
        .poll_at()
        .min(shell.ctl.poll_at())
        .min(shell.log.poll_at())
        .min(reload::machine::poll_at(&shell.reloader, &shell.ctl))
        .min(
            shell
                .life
                .manager
                .as_ref()
                .map_or(Instant::NEVER, manager::Manager::poll_at),
        );
    let timeout = if l.pending || shell.life.main_exit.cannot_start.is_some() {
        Some(std::time::Duration::ZERO)
    } else if due == Instant::NEVER {
        None
    } else {
        Some(std::time::Duration::from_millis(due.since(now)))
    };
    shell.turns.end();
    let polled = l.poll.poll(&mut l.events, timeout);
    shell.new_turn();
    match polled {
        Ok(()) => true,
        Err(e) => {
            if e.kind() != std::io::ErrorKind::Interrupted {
                log!(shell.log, "poll: {e}");
            }
            false
        }
    }
}

/// What a poll returned: signals first, then each event, reload,
/// readiness, new connections and the clients.
fn handle(sup: &mut Supervisor<'_>, l: &mut Looping) {
    let shell = &mut l.shell;
    // Reaping comes first: exits are handled before anything this
    // turn can spawn (the tick, checks, readiness, reload).
    if l.events.iter().any(|e| e.token() == Token::Signal.encode()) {
        signals(sup, shell, &l.sfd);
    }
    let mut accept = false;
    for ev in l.events.iter() {
        accept |= dispatch(sup, shell, ev);
    }
    reload::machine::turn(sup, shell, clock::now());
    let notify_left = notify::drain(sup, shell);
    l.pending = output::drain_ready(&mut shell.svc, &mut shell.log, &mut shell.ctl) | notify_left;
    if accept || shell.ctl.accept_due(clock::now()) {
        let reg = l.poll.registry();
        control::accept_all(&mut shell.ctl, &mut shell.log, clock::now(), |k, fd| {
            let _ = reg.register(
                &mut SourceFd(&fd),
                Token::Client(k).encode(),
                Interest::READABLE | Interest::WRITABLE,
            );
        });
    }
    let now = clock::now();
    for k in 0..shell.ctl.clients.len() {
        let t = shell.life.shutdown_timeout;
        control::service_client(sup, shell, k, now, t);
        l.pending |= control::has_pending(&shell.ctl, k);
    }
    if core::mem::take(&mut shell.life.reexec_requested) && !sup.shutting_down() {
        output::flush_all(&mut shell.svc, &mut shell.log, &mut shell.ctl);
        reexec::exec(sup, &mut shell.life.reexec, &shell.svc, &mut shell.log);
    }
}

/// After the loop: the main service's exit (container), the sweep, the
/// paths and cgroups; then the exit code, or the power-off (system).
fn finish(sup: &mut Supervisor<'_>, l: &mut Looping, cfg: &Globals) -> Result<i32, String> {
    let shell = &mut l.shell;
    if shell.life.mode == pid1::Mode::Container {
        reap_main(sup, shell, &l.sfd, &mut l.poll, &mut l.events);
    }
    output::flush_all(&mut shell.svc, &mut shell.log, &mut shell.ctl);
    if shell.life.mode != pid1::Mode::System {
        // System mode ends with kill(-1) instead (`pid1::final_shutdown`).
        sweep::sweep(
            &mut shell.log,
            sweep_deadline(sup, shell.life.shutdown_timeout),
        );
    }
    log!(
        shell.log,
        "shutdown complete; heap allocations after startup: {}",
        alloc::count()
    );
    release_paths(cfg);
    cgroup::release_all(&mut shell.svc.cg);
    match shell.life.mode {
        pid1::Mode::System => {
            let a = shell.life.action.unwrap_or(pid1::Action::Poweroff);
            pid1::final_shutdown(a, shell.life.shutdown_timeout.clamp(1000, 10_000))
        }
        pid1::Mode::Container => Ok(shell
            .life
            .main_exit
            .final_code(shell.life.main_idx.is_some())),
        pid1::Mode::Supervisor => Ok(0),
    }
}

/// Until when the processes left below coffeyd after the services stopped
/// may answer SIGTERM: the rest of `shutdown_timeout`, so the whole
/// shutdown keeps to it, but at least the last call's share of it (the
/// services may have used it all).
fn sweep_deadline(sup: &Supervisor<'_>, timeout: u64) -> Instant {
    let now = clock::now();
    let floor = now.add(coffey::limits::SHUTDOWN_LAST_CALL_MS.min(timeout / 4));
    sup.shutdown_deadline().unwrap_or(now).max(floor)
}

/// System mode without a config: the grace between the final SIGTERM and
/// SIGKILL to whatever runs (only what the emergency path left).
const NO_CONFIG_GRACE_MS: u64 = 2000;

/// Where the daemon role starts: picks the mode (supervisor, system init,
/// container init), does the PID 1 setup, compiles the config through the
/// `__compile` child (the daemon never parses YAML) and runs. A bad
/// config, or a compiler that cannot run, exits 1, except in system mode,
/// which never returns on its own account: it execs the emergency
/// program, or (without one) waits for SIGHUP to retry or a power signal
/// to reboot, halt or power off.
#[allow(clippy::disallowed_methods, clippy::disallowed_macros)] // startup
pub fn boot(mut config_path: std::path::PathBuf, container: bool, single_arg: bool) -> i32 {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    setup::cloexec_inherited();
    let mode = pid1::detect(container);
    let mut single = single_arg;
    if mode == pid1::Mode::System {
        pid1::mount_proc();
        let (cmd_cfg, cmd_single) = pid1::cmdline();
        if let Some(p) = cmd_cfg {
            config_path = p;
        }
        single |= cmd_single;
    }
    let default_emergency: &'static std::ffi::CStr = c"/bin/sh";
    if mode != pid1::Mode::Supervisor {
        pid1::install_panic_hook(mode, default_emergency);
    }
    let mut early_done = false;
    loop {
        match globals::compile(&config_path) {
            Ok((mut cfg, compiled)) => {
                let emergency: &'static std::ffi::CStr = Box::leak(
                    CString::new(cfg.emergency.as_os_str().as_bytes())
                        .unwrap_or_else(|_| default_emergency.into())
                        .into_boxed_c_str(),
                );
                if mode == pid1::Mode::System {
                    if cfg.early_mounts && !early_done {
                        pid1::mount_early();
                    }
                    for m in &cfg.mounts {
                        pid1::mount_extra(m);
                    }
                    pid1::attach_console();
                    if let Some(h) = &cfg.hostname {
                        pid1::set_hostname(h);
                    }
                    if let Err(e) = pid1::loopback_up() {
                        log::stderr_line(format_args!("coffeyd: cannot set lo up: {}", e.desc()));
                    }
                    if single {
                        pid1::emergency(emergency);
                    }
                }
                if mode != pid1::Mode::Supervisor {
                    pid1::install_panic_hook(mode, emergency);
                }
                // Printed once, then let go: a line per service can be
                // most of the globals.
                stderr_text(&core::mem::take(&mut cfg.warnings));
                return run(cfg, compiled, mode);
            }
            Err(failure) => {
                if mode == pid1::Mode::System && !early_done {
                    pid1::mount_early();
                    early_done = true;
                    pid1::attach_console();
                }
                // The config's fault is 1; the daemon's own (no descriptor
                // for the compiler's pipe, no process for it) is 3, as any
                // other failure to start.
                let code = match failure {
                    globals::Failure::Invalid(diags) => {
                        stderr_text(&diags);
                        log::stderr_line(format_args!(
                            "coffeyd: {}: config has errors; not starting",
                            config_path.display()
                        ));
                        1
                    }
                    globals::Failure::Compiler(why) => {
                        log::stderr_line(format_args!(
                            "coffeyd: {}: {why}; not starting",
                            config_path.display()
                        ));
                        3
                    }
                };
                // A container has no operator at a console: fail, so the
                // orchestrator sees it (a shell there reads EOF, exits 0).
                if mode != pid1::Mode::System {
                    return code;
                }
                if pid1::executable(default_emergency) {
                    pid1::emergency(default_emergency);
                }
                if let Some(a) = pid1::wait_for_signal() {
                    log::stderr_line(format_args!("coffeyd: no config; {}", a.name()));
                    pid1::final_shutdown(a, NO_CONFIG_GRACE_MS);
                }
            }
        }
    }
}

/// Writes `text` and a newline to stderr unchanged (nothing if empty).
fn stderr_text(text: &str) {
    if !text.is_empty() {
        let _ = log::write_all(2, text.as_bytes());
        let _ = log::write_all(2, b"\n");
    }
}

#[cfg(test)]
mod size_tests {
    /// Every slot is written at startup, so its size is what each service
    /// (and each spare slot) costs the shell; the parts few services use
    /// are `slab::Cold` (see "Memory per service" in docs/DESIGN.md).
    #[test]
    fn a_slot_stays_within_its_memory_budget() {
        let n = core::mem::size_of::<super::Slot>();
        assert!(n <= 640, "Slot is {n} bytes");
    }
}
