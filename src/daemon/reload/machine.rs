//! The reload machine: idle -> compiling -> applying -> idle, one reload
//! at a time, while the loop goes on reaping, spawning and serving.
//!
//! `coffeyd reload` and SIGHUP are requests ([`request`]). One reload runs;
//! requests that arrive meanwhile coalesce into one pending reload of
//! their kind (a real one, a dry run), which starts when the running one
//! ends: a SIGHUP storm costs at most two compiles in a row, never one per
//! signal. Reloads are numbered in start order, and a client waits (phase
//! `AwaitReload`) for the number it was given, so every client gets the
//! answer of a reload that read the file after it asked.
//!
//! Compiling: `coffeyd __compile -c FILE` is forked and exec'd with its
//! stdout on a pipe whose read end is non-blocking and registered with
//! mio (`Token::Reload`); each turn reads what is there into the
//! preallocated `next` buffer. The main loop reaps the child like any
//! other and hands its status here ([`reaped`]). Output and exit status
//! both in: planning (linear in the services, one turn) and applying, a
//! slice of at most `super::APPLY_SLICE_US` a turn ([`crate::daemon::reload`];
//! figures in docs/DESIGN.md). A child that outlives
//! [`COMPILE_TIMEOUT_MS`] is killed and the reload refused.
//!
//! Must not: block, allocate, or start a compile while a client is still
//! reading the previous reload's plan from the buffers (for at most
//! [`PLAN_GRACE_MS`]). Startup is the exception: [`compile_once`] runs the
//! same child for the first config and waits for it (the daemon never
//! parses YAML, not even then).

use super::Reloader;
use crate::daemon::log::log;
use crate::daemon::Shell;
use coffey::control::proto::ErrorCode;
use coffey::supervisor::Supervisor;
use coffey::time::Instant;
use mio::unix::SourceFd;
use mio::Interest;
use nix::libc;
use std::ffi::CString;
use std::os::fd::RawFd;

extern "C" {
    static environ: *const *const libc::c_char;
}

/// Longest time a compile child may take.
const COMPILE_TIMEOUT_MS: u64 = 10_000;
/// With another reload pending, how long a client still reading the last
/// plan holds it back (then it is told it was superseded).
const PLAN_GRACE_MS: u64 = 1000;

/// What a request asks for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Apply,
    DryRun,
}

/// The requests: one reload running, at most one more of each kind
/// waiting, in arrival order. Reload `started` is the last one begun; the
/// pending ones will be `started + 1` and `started + 2`.
#[derive(Debug, Default)]
pub struct Queue {
    pub started: u32,
    pub running: Option<Kind>,
    pending: [Option<Kind>; 2],
}

impl Queue {
    /// A request of `kind`: the number of the reload that will answer it,
    /// whether that reload must start now, and whether the request was
    /// folded into a pending one.
    pub fn request(&mut self, kind: Kind) -> (u32, bool, bool) {
        let [first, second] = &mut self.pending;
        if self.running.is_none() && first.is_none() {
            self.started = self.started.wrapping_add(1);
            self.running = Some(kind);
            return (self.started, true, false);
        }
        let mut n = self.started;
        for p in [first, second] {
            n = n.wrapping_add(1);
            match p {
                Some(k) if *k == kind => return (n, false, true),
                Some(_) => {}
                None => {
                    *p = Some(kind);
                    return (n, false, false);
                }
            }
        }
        // Both places hold the other kind: cannot happen with two kinds.
        (n, false, true)
    }

    /// Begins the next pending reload, if none runs: (number, kind).
    pub fn start_next(&mut self) -> Option<(u32, Kind)> {
        if self.running.is_some() {
            return None;
        }
        let [first, second] = &mut self.pending;
        let kind = first.take()?;
        *first = second.take();
        self.started = self.started.wrapping_add(1);
        self.running = Some(kind);
        Some((self.started, kind))
    }

    pub fn has_pending(&self) -> bool {
        self.pending.iter().any(Option::is_some)
    }
}

#[derive(Copy, Clone, Debug)]
enum Child {
    Idle,
    /// Reload `gen` is being applied, a slice a turn.
    Applying {
        gen: u32,
        progress: super::Progress,
    },
    /// The compile child of reload `gen` runs; its stdout fills `next`.
    Compiling {
        gen: u32,
        kind: Kind,
        pid: i32,
        /// Read end; -1 once EOF was read (or reading was given up).
        fd: RawFd,
        until: Instant,
        /// Its wait status, once reaped.
        status: Option<i32>,
        /// Why the reload cannot apply, whatever the child says.
        failure: Option<&'static str>,
    },
}

pub struct Machine {
    exe: CString,
    arg0: CString,
    arg1: CString,
    arg2: CString,
    config: CString,
    stack: Box<[u8]>,
    child: Child,
    pub queue: Queue,
    /// The pipe may have more to read (edge-triggered readiness).
    readable: bool,
    /// When the last reload ended: the plan grace runs from there.
    ended_at: Instant,
}

impl Machine {
    /// Startup: the compile child's argv, prepared once.
    #[allow(clippy::disallowed_macros, clippy::disallowed_methods)]
    pub fn new(path: &std::path::Path) -> Result<Machine, String> {
        let config = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        Self::for_file(&config)
    }

    /// A machine compiling `config` exactly as named (startup keeps the
    /// path as given, so diagnostics name the file the user typed).
    #[allow(clippy::disallowed_macros, clippy::disallowed_methods)]
    fn for_file(config: &std::path::Path) -> Result<Machine, String> {
        use std::os::unix::ffi::OsStrExt;
        Ok(Machine {
            exe: self_exe(),
            arg0: c"coffeyd".into(),
            arg1: c"__compile".into(),
            arg2: c"-c".into(),
            config: CString::new(config.as_os_str().as_bytes()).map_err(|e| e.to_string())?,
            stack: vec![0u8; CHILD_STACK].into_boxed_slice(),
            child: Child::Idle,
            queue: Queue::default(),
            readable: false,
            ended_at: Instant::from_millis(0),
        })
    }

    /// No compile runs (the reload buffers hold the last reload's plan).
    pub fn idle(&self) -> bool {
        matches!(self.child, Child::Idle)
    }

    /// The compile child, while it is not yet reaped: it is nobody's
    /// escapee (see `escape.rs`).
    pub fn child_pid(&self) -> Option<i32> {
        match self.child {
            Child::Compiling {
                pid, status: None, ..
            } => Some(pid),
            _ => None,
        }
    }

    /// The pipe is readable (a mio event).
    pub fn mark(&mut self) {
        self.readable = true;
    }

    /// Starts the compile child; returns (pid, read end). It is cloned
    /// with `CLONE_VM | CLONE_VFORK`, as posix_spawn does: a fork would
    /// copy the daemon's page tables, which with 1,000 services took 3 to
    /// 5 ms of the turn; this way the daemon waits only until the execve.
    fn spawn(&mut self, devnull: RawFd) -> Result<(i32, RawFd), &'static str> {
        let mut fds = [-1; 2];
        // SAFETY: valid out array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
            return Err("cannot create a pipe for the config compiler");
        }
        let [r, w] = fds;
        // Only the daemon's end is non-blocking: the child writes plainly.
        // SAFETY: our fd.
        unsafe { libc::fcntl(r, libc::F_SETFL, libc::O_NONBLOCK) };
        let mut args = ChildArgs {
            devnull,
            out: w,
            exe: self.exe.as_ptr(),
            argv: [
                self.arg0.as_ptr(),
                self.arg1.as_ptr(),
                self.arg2.as_ptr(),
                self.config.as_ptr(),
                core::ptr::null(),
            ],
        };
        // The stack grows down from the end of the buffer (16-aligned).
        let top = self.stack.as_mut_ptr_range().end as usize & !15;
        // SAFETY: `compile_main` only makes async-signal-safe calls on its
        // own stack and reads `args`, which outlives it: CLONE_VFORK
        // suspends us until it has exec'd or exited.
        let pid = unsafe {
            libc::clone(
                compile_main,
                top as *mut libc::c_void,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                (&mut args as *mut ChildArgs).cast(),
            )
        };
        // SAFETY: ours; the child has its copy.
        unsafe { libc::close(w) };
        if pid < 0 {
            crate::daemon::close_fd(r);
            return Err("cannot start the config compiler");
        }
        Ok((pid, r))
    }
}

/// This binary, for the compile child: `/proc/self/exe` resolved; without
/// /proc (a container may have none), argv[0], searched in `PATH` when it
/// has no slash.
#[allow(clippy::disallowed_methods)] // startup
fn self_exe() -> CString {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &std::path::Path| CString::new(p.as_os_str().as_bytes()).ok();
    if let Some(p) = std::fs::read_link("/proc/self/exe")
        .ok()
        .and_then(|p| c(&p))
    {
        return p;
    }
    let arg0 = std::env::args_os().next().unwrap_or_default();
    let arg0 = std::path::Path::new(&arg0);
    let found = if arg0.as_os_str().as_bytes().contains(&b'/') {
        c(arg0)
    } else {
        std::env::var_os("PATH").and_then(|dirs| {
            std::env::split_paths(&dirs)
                .filter_map(|d| c(&d.join(arg0)))
                // SAFETY: a NUL-terminated path.
                .find(|p| unsafe { libc::access(p.as_ptr(), libc::X_OK) } == 0)
        })
    };
    found.unwrap_or_else(|| c"/proc/self/exe".into())
}

/// Startup: compiles `file` (as given) in a forked child, which writes
/// what `coffeyd __compile -c FILE` writes, and waits for it. Returns its
/// whole output, or why there is none. The parser's heap and the pages
/// it touches are the child's, never the daemon's. A fork, not an exec of
/// this binary as reload's child is: startup compiles with the running
/// code anyway, and a fork needs neither /proc nor a kernel that can run
/// the binary itself (under qemu-user it cannot). Blocking and allocating
/// are fine here: the loop has not started, and the process still has one
/// thread.
#[allow(clippy::disallowed_macros, clippy::disallowed_methods)]
pub fn compile_once(file: &std::path::Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let mut fds = [-1; 2];
    // SAFETY: valid out array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!("cannot create a pipe for the config compiler: {e}"));
    }
    let [r, w] = fds;
    // SAFETY: one thread (startup); the child only compiles and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: the child's own descriptors; _exit skips the parent's
        // exit handlers.
        unsafe {
            libc::dup2(w, 1);
            crate::daemon::pid1::forget_crash_handling();
            // A panic unwinding (debug builds) must not return into boot.
            let code = std::panic::catch_unwind(|| crate::daemon::compile_child(file));
            libc::_exit(code.unwrap_or(101))
        }
    }
    crate::daemon::close_fd(w);
    if pid < 0 {
        let e = std::io::Error::last_os_error();
        crate::daemon::close_fd(r);
        return Err(format!("cannot start the config compiler: {e}"));
    }
    let mut out = Vec::new();
    // SAFETY: `r` is ours alone; the File closes it.
    let read = unsafe { std::fs::File::from_raw_fd(r) }.read_to_end(&mut out);
    let mut status = 0;
    // SAFETY: our child; EINTR is retried.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
        && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
    {}
    read.map_err(|e| format!("cannot read the config compiler: {e}"))?;
    let clean = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    if clean && !out.is_empty() {
        return Ok(out);
    }
    Err(if libc::WIFSIGNALED(status) {
        format!(
            "the config compiler was killed by signal {}",
            libc::WTERMSIG(status)
        )
    } else {
        format!(
            "the config compiler exited with {} and {} bytes of output",
            libc::WEXITSTATUS(status),
            out.len()
        )
    })
}

/// What the compile child needs, prepared by the daemon.
struct ChildArgs {
    devnull: RawFd,
    out: RawFd,
    exe: *const libc::c_char,
    argv: [*const libc::c_char; 5],
}

/// Stack of the compile child until its execve (it shares our memory).
const CHILD_STACK: usize = 16 * 1024;

/// The compile child, between clone and execve: stdin on /dev/null,
/// stdout on the pipe, no blocked signals.
extern "C" fn compile_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildArgs` the suspended parent holds; only
    // async-signal-safe calls follow.
    unsafe {
        let a = &*(arg as *const ChildArgs);
        libc::dup2(a.devnull, 0);
        libc::dup2(a.out, 1);
        let mut set: libc::sigset_t = core::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, core::ptr::null_mut());
        libc::execve(a.exe, a.argv.as_ptr(), environ);
        libc::_exit(127)
    }
}

/// Who asked for a reload.
pub enum Asker<'f> {
    /// SIGHUP: the request is logged here.
    Signal,
    /// A client of the control socket: `queued` is told the number of the
    /// reload whose answer it is to wait for, before that reload starts.
    Client(&'f mut dyn FnMut(&mut Shell, u32)),
}

/// What the machine needs to know of the control clients, and no more:
/// whether one is still to read the answer of reload `gen`.
pub trait Readers {
    fn reading(&self, gen: u32) -> bool;
}

/// `coffeyd reload` or SIGHUP. Refused while shutting down: the error
/// is the asker's to answer.
pub fn request(
    sup: &mut Supervisor<'_>,
    shell: &mut Shell,
    asker: Asker<'_>,
    dry_run: bool,
    now: Instant,
) -> Result<(), &'static str> {
    if sup.shutting_down() {
        log!(shell.log, "reload rejected: coffeyd is shutting down");
        return Err("coffeyd is shutting down");
    }
    let kind = if dry_run { Kind::DryRun } else { Kind::Apply };
    let (gen, start_now, folded) = shell.reloader.machine.queue.request(kind);
    match asker {
        Asker::Client(queued) => queued(shell, gen),
        Asker::Signal if !folded => {
            let path = shell.reloader.machine.config.to_str().unwrap_or("?");
            let when = if start_now {
                ""
            } else {
                " after the one running"
            };
            log!(shell.log, "SIGHUP: reloading {path}{when}");
        }
        Asker::Signal => {}
    }
    if start_now {
        begin(sup, shell, gen, kind, now);
    }
    Ok(())
}

/// Starts the compile child of reload `gen`.
fn begin(sup: &mut Supervisor<'_>, shell: &mut Shell, gen: u32, kind: Kind, now: Instant) {
    let m = &mut shell.reloader.machine;
    match m.spawn(shell.svc.devnull) {
        Ok((pid, fd)) => {
            let _ = shell.registry.register(
                &mut SourceFd(&fd),
                crate::daemon::token::Token::Reload.encode(),
                Interest::READABLE,
            );
            // Registering reports data already there: no read yet.
            m.readable = false;
            m.child = Child::Compiling {
                gen,
                kind,
                pid,
                fd,
                until: now.add(COMPILE_TIMEOUT_MS),
                status: None,
                failure: None,
            };
            *shell.reloader.incoming().1 = 0;
        }
        Err(why) => {
            m.child = Child::Idle;
            end(sup, shell, gen, Err(why), kind, now);
        }
    }
}

/// The main loop reaped `pid`: whether it was the compile child.
pub fn reaped(reloader: &mut Reloader, pid: i32, raw: i32) -> bool {
    let m = &mut reloader.machine;
    match &mut m.child {
        Child::Compiling {
            pid: p,
            status: s @ None,
            ..
        } if *p == pid => {
            *s = Some(raw);
            true
        }
        _ => false,
    }
}

/// One turn of the machine: read the child's output, enforce its
/// deadline, apply the reload once output and exit status are in (a
/// slice a turn), or start the next pending one.
pub fn turn(sup: &mut Supervisor<'_>, shell: &mut Shell, now: Instant) {
    if let Child::Applying { gen, progress } = shell.reloader.machine.child {
        return apply(sup, shell, gen, progress, now);
    }
    let Child::Compiling {
        gen,
        kind,
        pid,
        fd,
        until,
        status,
        failure,
    } = shell.reloader.machine.child
    else {
        return start_pending(sup, shell, now);
    };
    let mut fd = fd;
    let mut failure = failure;
    if fd >= 0 && core::mem::take(&mut shell.reloader.machine.readable) {
        if let Err(why) = read_output(&mut shell.reloader, fd) {
            failure = failure.or(why);
            crate::daemon::close_fd(fd);
            fd = -1;
        }
    }
    if failure.is_none() && now >= until {
        failure = Some("the config compiler timed out");
    }
    if failure.is_some() && status.is_none() {
        // SAFETY: our unreaped child: the pid is still its.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    shell.reloader.machine.child = Child::Compiling {
        gen,
        kind,
        pid,
        fd,
        until,
        status,
        failure,
    };
    let Some(raw) = status.filter(|_| fd < 0) else {
        return;
    };
    shell.reloader.machine.child = Child::Idle;
    let ok = libc::WIFEXITED(raw) && libc::WEXITSTATUS(raw) == 0;
    let res = match failure {
        Some(why) => Err(why),
        None if !ok => Err("the config compiler failed (could not exec coffeyd __compile?)"),
        None => Ok(()),
    };
    end(sup, shell, gen, res, kind, now);
}

/// Reads the pipe until it would block. Ok(()) also at EOF, which closes
/// it (fd -1 is then set by the caller through Err(None)).
fn read_output(reloader: &mut Reloader, fd: RawFd) -> Result<(), Option<&'static str>> {
    let (buf, len) = reloader.incoming();
    // Bounded: the buffer's size caps the bytes read over the whole
    // compile, and the pipe's capacity caps one turn's share.
    loop {
        let space = buf.get_mut(*len..).unwrap_or(&mut []);
        if space.is_empty() {
            return Err(Some(
                "the compiled config is larger than the reload buffer preallocated at startup",
            ));
        }
        // SAFETY: valid buffer.
        let got = unsafe { libc::read(fd, space.as_mut_ptr().cast(), space.len()) };
        match got {
            0 => return Err(None),
            n if n > 0 => *len += usize::try_from(n).unwrap_or(0),
            _ => match crate::daemon::errno() {
                libc::EINTR => {}
                libc::EAGAIN => return Ok(()),
                _ => return Err(Some("cannot read the config compiler's output")),
            },
        }
    }
}

/// Reload `gen` compiled (or failed to): plan it and start applying, or
/// record the refusal.
fn end(
    sup: &mut Supervisor<'_>,
    shell: &mut Shell,
    gen: u32,
    res: Result<(), &'static str>,
    kind: Kind,
    now: Instant,
) {
    let progress = match res {
        Ok(()) if sup.shutting_down() => {
            super::refuse(
                &mut shell.reloader,
                &mut shell.log,
                gen,
                ErrorCode::Failed,
                "coffeyd is shutting down",
            );
            None
        }
        Ok(()) => super::begin(sup, shell, gen, kind == Kind::DryRun),
        Err(why) => {
            super::refuse(
                &mut shell.reloader,
                &mut shell.log,
                gen,
                ErrorCode::Failed,
                why,
            );
            None
        }
    };
    match progress {
        Some(progress) => apply(sup, shell, gen, progress, now),
        None => over(sup, shell, now),
    }
}

/// A slice of applying reload `gen`.
fn apply(
    sup: &mut Supervisor<'_>,
    shell: &mut Shell,
    gen: u32,
    mut progress: super::Progress,
    now: Instant,
) {
    let until = crate::daemon::clock::now_us().saturating_add(super::APPLY_SLICE_US);
    if super::advance(sup, shell, &mut progress, gen, now, until) {
        over(sup, shell, now);
    } else {
        shell.reloader.machine.child = Child::Applying { gen, progress };
    }
}

/// The running reload is over (its outcome recorded): start what is
/// pending.
fn over(sup: &mut Supervisor<'_>, shell: &mut Shell, now: Instant) {
    let m = &mut shell.reloader.machine;
    m.child = Child::Idle;
    m.queue.running = None;
    m.ended_at = now;
    start_pending(sup, shell, now);
}

/// Whether a client is still to read the last reload's answer.
fn reading(reloader: &Reloader, readers: &impl Readers) -> bool {
    readers.reading(reloader.gen)
}

/// When the machine needs a turn: now (a step is ready), the compile
/// deadline, or the end of the plan grace.
pub fn poll_at(reloader: &Reloader, readers: &impl Readers) -> Instant {
    let m = &reloader.machine;
    let now = Instant::from_millis(0);
    match m.child {
        Child::Compiling { fd, status, .. } if fd < 0 && status.is_some() => now,
        Child::Compiling { .. } if m.readable => now,
        Child::Compiling { until, .. } => until,
        Child::Applying { .. } => now,
        Child::Idle if !m.queue.has_pending() => Instant::NEVER,
        Child::Idle if reading(reloader, readers) => m.ended_at.add(PLAN_GRACE_MS),
        Child::Idle => now,
    }
}

/// Idle: starts the next pending reload once no client is still reading
/// the last one's answer, or its grace is over.
fn start_pending(sup: &mut Supervisor<'_>, shell: &mut Shell, now: Instant) {
    let m = &shell.reloader.machine;
    if !m.idle() || !m.queue.has_pending() {
        return;
    }
    if reading(&shell.reloader, &shell.ctl) && now < m.ended_at.add(PLAN_GRACE_MS) {
        return;
    }
    if sup.shutting_down() {
        // Answer every waiting client without compiling.
        while let Some((n, _)) = shell.reloader.machine.queue.start_next() {
            shell.reloader.machine.queue.running = None;
            super::refuse(
                &mut shell.reloader,
                &mut shell.log,
                n,
                ErrorCode::Failed,
                "coffeyd is shutting down",
            );
        }
        return;
    }
    if let Some((n, kind)) = shell.reloader.machine.queue.start_next() {
        begin(sup, shell, n, kind, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_coalesce_into_one_pending_reload_per_kind() {
        let mut q = Queue::default();
        // Idle: the first request starts reload 1.
        assert_eq!(q.request(Kind::Apply), (1, true, false));
        // While it runs, a storm of requests leaves exactly one pending.
        assert_eq!(q.request(Kind::Apply), (2, false, false));
        for _ in 0..1000 {
            assert_eq!(q.request(Kind::Apply), (2, false, true));
        }
        // A dry run waits behind it, and so do later dry runs.
        assert_eq!(q.request(Kind::DryRun), (3, false, false));
        assert_eq!(q.request(Kind::DryRun), (3, false, true));
        assert_eq!(q.request(Kind::Apply), (2, false, true));
        // Nothing starts while one runs.
        assert_eq!(q.start_next(), None);
        q.running = None;
        assert_eq!(q.start_next(), Some((2, Kind::Apply)));
        // A request now waits for the next one of its kind: the dry run
        // pending is 3, a new apply is 4.
        assert_eq!(q.request(Kind::DryRun), (3, false, true));
        assert_eq!(q.request(Kind::Apply), (4, false, false));
        q.running = None;
        assert_eq!(q.start_next(), Some((3, Kind::DryRun)));
        q.running = None;
        assert_eq!(q.start_next(), Some((4, Kind::Apply)));
        q.running = None;
        assert_eq!(q.start_next(), None);
        assert!(!q.has_pending());
        // Idle and empty again: a request starts at once.
        assert_eq!(q.request(Kind::DryRun), (5, true, false));
    }

    #[test]
    fn numbers_wrap() {
        let mut q = Queue {
            started: u32::MAX,
            ..Queue::default()
        };
        assert_eq!(q.request(Kind::Apply), (0, true, false));
        assert_eq!(q.request(Kind::Apply), (1, false, false));
    }
}
