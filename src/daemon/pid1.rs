//! PID 1 duties: early mounts, the console, the kernel command line, the
//! final kill-and-reboot sequence, and the emergency path.
//!
//! Lore that shaped this file:
//! - PID 1 must never exit: the kernel panics ("Attempted to kill init").
//!   Every failure here is logged and survived; the last resort is to
//!   exec the emergency shell, then to re-exec coffeyd itself.
//! - `kill(-1, SIGKILL)` is sent from a forked child: it can block on
//!   processes in D state (uninterruptible I/O), and PID 1 must not.
//! - Kernel parameters with a dot (`coffey.config=`) are not passed to
//!   init as argv or env; they are read from /proc/cmdline.

use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use nix::libc;
use std::ffi::CStr;

/// How coffeyd runs.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// An ordinary process: a supervisor and subreaper.
    Supervisor,
    /// PID 1 of a machine: mounts, console, reboot(2).
    System,
    /// PID 1 of a container: no mounts, no reboot; exits like tini.
    Container,
}

/// What to do at the end of a system-mode shutdown.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Poweroff,
    Reboot,
    Halt,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Poweroff => "poweroff",
            Action::Reboot => "reboot",
            Action::Halt => "halt",
        }
    }
}

/// The daemon's life as an init: how it runs, how a shutdown ends and
/// the re-exec it may be asked for (the shell's part for PID 1 duties).
pub struct Life {
    pub mode: Mode,
    /// System mode: what to do once everything stopped.
    pub action: Option<Action>,
    pub shutdown_timeout: u64,
    /// Container mode: how the `main` service ended (the exit code).
    pub main_exit: MainExit,
    pub main_idx: Option<usize>,
    /// `coffeyd reexec` asked for: re-exec at the end of this turn.
    pub reexec_requested: bool,
    pub reexec: super::reexec::Reexec,
    /// systemd above coffeyd (`NOTIFY_SOCKET`), if any.
    pub manager: Option<super::manager::Manager>,
}

/// Container mode's exit code: the main service's, as tini and a shell
/// report a child (docs/CLI.md has the table of cases).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct MainExit {
    /// The main service's last end, as an exit code: N, or 128 + signal,
    /// or 127/126 when it could not be executed.
    pub code: Option<i32>,
    /// The signal that began the shutdown (`coffeyd shutdown` counts as
    /// SIGTERM): what a main that never ran reports, 128 + it.
    pub end_signal: i32,
    /// The main service cannot be started (a permanent spawn error): the
    /// loop stops everything on its next turn.
    pub cannot_start: Option<coffey::sys::SpawnError>,
}

impl MainExit {
    pub fn new() -> Self {
        MainExit {
            code: None,
            end_signal: libc::SIGTERM,
            cannot_start: None,
        }
    }

    /// The main process ended with `status`.
    pub fn exited(&mut self, status: coffey::sys::ExitStatus) -> i32 {
        let code = match status {
            coffey::sys::ExitStatus::Code(c) => c,
            coffey::sys::ExitStatus::Signal(s) => 128 + s,
        };
        self.code = Some(code);
        code
    }

    /// The main service's spawn failed. Temporary errors (EAGAIN, ...)
    /// are retried with backoff; anything else ends the container, with
    /// the shell's codes: 127 for a program that is not there, 126 for
    /// one that cannot be run (tini uses the same two).
    pub fn spawn_failed(&mut self, err: coffey::sys::SpawnError) {
        if err.is_temporary() || self.code.is_some() {
            return;
        }
        self.code = Some(match err.errno {
            libc::ENOENT | libc::ENOTDIR => 127,
            _ => 126,
        });
        self.cannot_start = Some(err);
    }

    /// The first signal that asked for a shutdown.
    pub fn shutdown_by(&mut self, sig: i32) {
        self.end_signal = sig;
    }

    /// The code to exit with: the main's, 0 without a main, and
    /// 128 + the shutdown signal for a main that never ended (it never
    /// ran, or did not die even of SIGKILL within the bound).
    pub fn final_code(&self, has_main: bool) -> i32 {
        match (has_main, self.code) {
            (false, _) => 0,
            (true, Some(c)) => c,
            (true, None) => 128 + self.end_signal,
        }
    }
}

/// Writes to the console (fd 2), ignoring errors.
pub fn say(msg: &[u8]) {
    let _ = super::log::write_all(2, msg);
}

/// Picks the mode. In system mode this also turns Ctrl-Alt-Del into
/// SIGINT for us (RB_DISABLE_CAD), which is how system mode is detected:
/// a container's PID 1 is not allowed to.
pub fn detect(force_container: bool) -> Mode {
    // SAFETY: plain syscalls.
    if unsafe { libc::getpid() } != 1 {
        return if force_container {
            Mode::Container
        } else {
            Mode::Supervisor
        };
    }
    if force_container {
        return Mode::Container;
    }
    // SAFETY: reboot with the CAD-off command only changes a kernel flag.
    if unsafe { libc::reboot(libc::RB_DISABLE_CAD) } == 0 {
        Mode::System
    } else {
        Mode::Container
    }
}

fn stat_dev(path: &CStr) -> Option<u64> {
    // SAFETY: zeroed stat is a valid out buffer.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: NUL-terminated path, valid out pointer.
    (unsafe { libc::stat(path.as_ptr(), &mut st) } == 0).then_some(st.st_dev)
}

/// A mount point is on another device than its parent.
fn is_mounted(target: &CStr, parent: &CStr) -> bool {
    match (stat_dev(target), stat_dev(parent)) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    }
}

/// Mounts `fstype` at `target` unless something is mounted there already.
/// Returns whether it mounted.
fn mount_if_needed(source: &CStr, target: &CStr, fstype: &CStr, flags: u64, data: &CStr) -> bool {
    if is_mounted(target, c"/") {
        return false;
    }
    // SAFETY: NUL-terminated path; EEXIST is fine.
    unsafe { libc::mkdir(target.as_ptr(), 0o755) };
    // SAFETY: all pointers are NUL-terminated strings.
    let r = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if r != 0 {
        let e = nix::errno::Errno::from_raw(super::errno());
        say(b"coffeyd: mount ");
        say(target.to_bytes());
        say(b": ");
        say(e.desc().as_bytes());
        say(b"\n");
        return false;
    }
    true
}

/// /proc first: it is needed to read the kernel command line.
pub fn mount_proc() -> bool {
    mount_if_needed(
        c"proc",
        c"/proc",
        c"proc",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        c"",
    )
}

/// /sys, /dev (devtmpfs) and /run (tmpfs), and cgroup2 at
/// /sys/fs/cgroup. Returns which of the first three were mounted.
pub fn mount_early() -> [bool; 3] {
    let nse = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let sys = mount_if_needed(c"sysfs", c"/sys", c"sysfs", nse, c"");
    mount_cgroup2();
    [
        sys,
        mount_if_needed(
            c"devtmpfs",
            c"/dev",
            c"devtmpfs",
            libc::MS_NOSUID,
            c"mode=0755",
        ),
        mount_if_needed(
            c"tmpfs",
            c"/run",
            c"tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            c"mode=0755",
        ),
    ]
}

/// System mode owns the cgroup tree: cgroup2 at /sys/fs/cgroup (the
/// directory sysfs provides), unless something (v1, a hybrid tmpfs, or
/// cgroup2 itself) is mounted there already. `nsdelegate` makes cgroup
/// namespaces delegation boundaries, as systemd mounts it.
fn mount_cgroup2() -> bool {
    const SYSFS_MAGIC: i64 = 0x6265_6572;
    // SAFETY: zeroed statfs is a valid out buffer.
    let mut st: libc::statfs = unsafe { core::mem::zeroed() };
    // SAFETY: NUL-terminated path, valid out pointer.
    if unsafe { libc::statfs(c"/sys/fs/cgroup".as_ptr(), &mut st) } != 0 {
        return false;
    }
    #[allow(clippy::unnecessary_cast)] // f_type's type differs by libc
    if st.f_type as i64 != SYSFS_MAGIC {
        return false;
    }
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let mount = |data: &CStr| {
        // SAFETY: all pointers are NUL-terminated strings.
        unsafe {
            libc::mount(
                c"cgroup2".as_ptr(),
                c"/sys/fs/cgroup".as_ptr(),
                c"cgroup2".as_ptr(),
                flags,
                data.as_ptr().cast(),
            )
        }
    };
    if mount(c"nsdelegate") == 0 || mount(c"") == 0 {
        return true;
    }
    let e = nix::errno::Errno::from_raw(super::errno());
    say(b"coffeyd: mount /sys/fs/cgroup (cgroup2): ");
    say(e.desc().as_bytes());
    say(b"\n");
    false
}

/// Extra mounts from `coffey.mounts`.
pub fn mount_extra(m: &crate::config::Mount) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let cs = |b: &[u8]| std::ffi::CString::new(b).unwrap_or_default();
    let (src, tgt, ty, data) = (
        cs(m.source.as_bytes()),
        cs(m.target.as_os_str().as_bytes()),
        cs(m.fstype.as_bytes()),
        cs(m.data.as_bytes()),
    );
    mount_if_needed(&src, &tgt, &ty, m.flags, &data)
}

/// stdin, stdout and stderr on /dev/console; a new session; umask 022.
pub fn attach_console() {
    // SAFETY: plain syscalls on our own fds.
    unsafe {
        let fd = libc::open(
            c"/dev/console".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if fd >= 0 {
            for t in 0..3 {
                libc::dup2(fd, t);
            }
            if fd > 2 {
                libc::close(fd);
            }
        }
        libc::setsid();
        libc::umask(0o022);
    }
}

/// Sets the loopback interface up, as systemd does before any service:
/// a bare initramfs has no `ip` tool, and without `lo` an http or tcp
/// check on 127.0.0.1 fails with "Network is unreachable". Plain
/// SIOCGIFFLAGS/SIOCSIFFLAGS on a throwaway socket; addresses need no
/// setting (the kernel gives `lo` 127.0.0.1/8 and ::1 once it is up).
pub fn loopback_up() -> Result<(), nix::errno::Errno> {
    use nix::errno::Errno;
    // SAFETY: plain socket; closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: a zeroed ifreq is valid; the name fits IFNAMSIZ.
    let mut req: libc::ifreq = unsafe { core::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo") {
        *d = *s as libc::c_char;
    }
    // SAFETY: valid fd and ifreq; the flags union member is the one the
    // two requests use.
    let r = unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut req) < 0 {
            Err(Errno::last())
        } else if req.ifr_ifru.ifru_flags & libc::IFF_UP as libc::c_short != 0 {
            Ok(())
        } else {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &req) < 0 {
                Err(Errno::last())
            } else {
                Ok(())
            }
        }
    };
    // SAFETY: ours.
    unsafe { libc::close(fd) };
    r
}

pub fn set_hostname(name: &str) {
    // SAFETY: valid buffer and length.
    if unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } != 0 {
        say(b"coffeyd: cannot set the hostname\n");
    }
}

/// The kernel command line: (`coffey.config=` value, single-user mode).
#[allow(clippy::disallowed_methods)] // startup only
pub fn cmdline() -> (Option<std::path::PathBuf>, bool) {
    let text = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let mut config = None;
    let mut single = false;
    for w in text.split_whitespace() {
        if let Some(p) = w.strip_prefix("coffey.config=") {
            config = Some(std::path::PathBuf::from(p));
        }
        if w == "single" || w == "S" {
            single = true;
        }
    }
    (config, single)
}

/// Waits up to `ms` for a SIGCHLD (signals are blocked; we read them
/// synchronously). Returns early on any SIGCHLD.
pub(super) fn wait_chld(ms: u64) {
    let mut set: libc::sigset_t = unsafe { core::mem::zeroed() };
    // SAFETY: valid sigset pointer.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
    }
    let ts = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    };
    // SAFETY: valid pointers.
    unsafe { libc::sigtimedwait(&set, core::ptr::null_mut(), &ts) };
}

/// Reaps everything that has exited. Returns false once no child is left.
fn reap_all() -> bool {
    loop {
        let mut st = 0;
        // SAFETY: valid out pointer.
        let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
        if pid > 0 {
            continue;
        }
        if pid < 0 && super::errno() == libc::EINTR {
            continue;
        }
        return !(pid < 0 && super::errno() == libc::ECHILD);
    }
}

/// Reaps until no child is left or `ms` passed; never a fixed sleep.
fn drain(ms: u64) {
    let deadline = super::clock::now().add(ms);
    while reap_all() {
        let now = super::clock::now();
        if now >= deadline {
            return;
        }
        wait_chld(deadline.since(now).min(100));
    }
}

/// The end of a system-mode shutdown, after every service stopped:
/// SIGTERM to everything left, grace, SIGKILL from a child, sync,
/// remount read-only, reboot(2). Never returns.
pub fn final_shutdown(action: Action, grace_ms: u64) -> ! {
    say(b"coffeyd: sending SIGTERM to all processes\n");
    // SAFETY: plain syscalls; -1 means every process but us.
    unsafe {
        libc::kill(-1, libc::SIGTERM);
        libc::kill(-1, libc::SIGCONT);
    }
    drain(grace_ms);
    say(b"coffeyd: sending SIGKILL to all processes\n");
    // SAFETY: fork in a single-threaded process; the child only kills and
    // exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: in the child.
        unsafe {
            libc::kill(-1, libc::SIGKILL);
            libc::_exit(0);
        }
    }
    drain(2000);
    say(b"coffeyd: syncing and remounting read-only\n");
    // SAFETY: plain syscalls; failures (an initramfs root) are fine.
    unsafe {
        libc::sync();
        for t in [c"/run", c"/sys"] {
            libc::umount2(t.as_ptr(), libc::MNT_DETACH);
        }
        libc::mount(
            core::ptr::null(),
            c"/".as_ptr(),
            core::ptr::null(),
            (libc::MS_REMOUNT | libc::MS_RDONLY) as libc::c_ulong,
            core::ptr::null(),
        );
        libc::sync();
    }
    let cmd = match action {
        Action::Poweroff => libc::RB_POWER_OFF,
        Action::Reboot => libc::RB_AUTOBOOT,
        Action::Halt => libc::RB_HALT_SYSTEM,
    };
    say(b"coffeyd: ");
    say(action.name().as_bytes());
    say(b"\n");
    // SAFETY: the point of the exercise.
    unsafe { libc::reboot(cmd) };
    // reboot(2) failed: PID 1 still must not exit.
    say(b"coffeyd: reboot(2) failed; staying up\n");
    loop {
        drain(60_000);
        wait_chld(60_000);
    }
}

/// Exec the emergency program on the console; if that fails, re-exec
/// coffeyd; if even that fails, reap forever. Never returns.
pub fn emergency(path: &CStr) -> ! {
    say(b"coffeyd: starting the emergency program ");
    say(path.to_bytes());
    say(b"\n");
    // SAFETY: execve with static, NUL-terminated arrays; unblock signals
    // first so the shell behaves.
    unsafe {
        let mut set: libc::sigset_t = core::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, core::ptr::null_mut());
        let argv = [path.as_ptr(), core::ptr::null()];
        let envp = [
            c"PATH=/usr/sbin:/usr/bin:/sbin:/bin".as_ptr(),
            c"TERM=linux".as_ptr(),
            core::ptr::null(),
        ];
        libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
        say(b"coffeyd: emergency program failed; re-executing coffeyd\n");
        let self_argv = [c"coffeyd".as_ptr(), core::ptr::null()];
        libc::execve(
            c"/proc/self/exe".as_ptr(),
            self_argv.as_ptr(),
            envp.as_ptr(),
        );
    }
    say(b"coffeyd: cannot exec anything; reaping orphans forever\n");
    loop {
        drain(60_000);
        wait_chld(60_000);
    }
}

/// Whether `path` is an executable file.
pub fn executable(path: &CStr) -> bool {
    // SAFETY: NUL-terminated path.
    unsafe { libc::access(path.as_ptr(), libc::X_OK) == 0 }
}

/// What a system-mode signal asks of PID 1: the classic sysvinit/busybox
/// map (None: not a power signal).
pub fn action_for(sig: i32) -> Option<Action> {
    match sig {
        libc::SIGUSR1 => Some(Action::Halt),
        libc::SIGUSR2 | libc::SIGPWR => Some(Action::Poweroff),
        libc::SIGTERM | libc::SIGINT => Some(Action::Reboot),
        _ => None,
    }
}

/// System mode, no usable config and no emergency program: stay up (PID 1
/// must not exit), reap orphans, and wait. Returns None when SIGHUP asks
/// to try the config again, or the power action a signal asked for
/// (`action_for`), so the machine can still be turned off or rebooted.
pub fn wait_for_signal() -> Option<Action> {
    // SAFETY: plain signal calls with valid sets.
    unsafe {
        let mut set: libc::sigset_t = core::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [
            libc::SIGCHLD,
            libc::SIGHUP,
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGPWR,
        ] {
            libc::sigaddset(&mut set, s);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, core::ptr::null_mut());
        say(b"coffeyd: waiting for SIGHUP to reload the config (SIGTERM/SIGINT: reboot, SIGUSR1: halt, SIGUSR2/SIGPWR: poweroff)\n");
        loop {
            let mut info: libc::siginfo_t = core::mem::zeroed();
            let sig = libc::sigwaitinfo(&set, &mut info);
            reap_all();
            if sig == libc::SIGHUP {
                return None;
            }
            if let Some(a) = action_for(sig) {
                return Some(a);
            }
        }
    }
}

/// Exit code of a container-mode coffeyd that panicked (sysexits'
/// EX_SOFTWARE): a failure the orchestrator can see.
pub const PANIC_EXIT: i32 = 70;

/// Panic hook for PID 1: the message to the console, then (system mode)
/// the emergency path or (container mode) exit 70. A container has no
/// operator at a console: an emergency shell would read EOF and exit 0, so
/// a Kubernetes Job would count as succeeded. Release builds abort right
/// after a panic, so nothing else runs.
#[allow(clippy::disallowed_methods)] // startup only
pub fn install_panic_hook(mode: Mode, emergency_path: &'static CStr) {
    install_fatal_handlers(mode, emergency_path);
    std::panic::set_hook(Box::new(move |info| {
        say(b"coffeyd: PANIC: ");
        if let Some(s) = info.payload().downcast_ref::<&str>() {
            say(s.as_bytes());
        }
        say(b"\n");
        if mode == Mode::System {
            emergency(emergency_path);
        }
        say(b"coffeyd: exiting with code 70\n");
        // SAFETY: _exit is async-signal-safe and ends the process at once.
        unsafe { libc::_exit(PANIC_EXIT) }
    }));
}

/// The mode and emergency program the fatal-signal handler acts on.
static FATAL_SYSTEM: AtomicBool = AtomicBool::new(false);
static FATAL_PATH: AtomicPtr<libc::c_char> = AtomicPtr::new(core::ptr::null_mut());

/// The signals a crash of PID 1 arrives as. The release build panics
/// with `panic=immediate-abort` (no hook runs: a panic is a trap
/// instruction, SIGILL on x86_64 and SIGTRAP on aarch64); a fault in
/// unsafe code is SIGSEGV or SIGBUS.
/// Without a handler the kernel kills PID 1, which panics the machine
/// (system mode) or ends the container with a signal, not a code.
const FATAL: [libc::c_int; 6] = [
    libc::SIGILL,
    libc::SIGTRAP,
    libc::SIGABRT,
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGFPE,
];

/// Bytes of the stack the handler runs on (a stack overflow leaves none).
const FATAL_STACK: usize = 64 * 1024;

/// Makes a crash of PID 1 end as a panic does: the emergency program in
/// system mode, exit 70 in container mode. Startup only.
fn install_fatal_handlers(mode: Mode, emergency_path: &'static CStr) {
    FATAL_SYSTEM.store(mode == Mode::System, Ordering::Relaxed);
    FATAL_PATH.store(emergency_path.as_ptr().cast_mut(), Ordering::Relaxed);
    let Ok(stack) = super::slab::zeroed(FATAL_STACK) else {
        return;
    };
    // SAFETY: a stack of our own that is never freed; a plain sigaction
    // whose handler makes only async-signal-safe calls.
    unsafe {
        let ss = libc::stack_t {
            ss_sp: stack.as_mut_ptr().cast(),
            ss_flags: 0,
            ss_size: stack.len(),
        };
        libc::sigaltstack(&ss, core::ptr::null_mut());
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = fatal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        sa.sa_flags = libc::SA_ONSTACK | libc::SA_RESETHAND;
        libc::sigfillset(&mut sa.sa_mask);
        for sig in FATAL {
            libc::sigaction(sig, &sa, core::ptr::null_mut());
        }
    }
}

/// In a forked child of PID 1 that is not PID 1 (the startup compiler):
/// a crash there is the child's own, so the default dispositions and the
/// default panic hook come back. Otherwise a crash in the child would run
/// the emergency program, on the pipe PID 1 is reading.
pub fn forget_crash_handling() {
    let _ = std::panic::take_hook();
    for sig in FATAL {
        // SAFETY: restoring the default disposition.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

/// A fatal signal in PID 1: say so, then the panic path.
extern "C" fn fatal(sig: libc::c_int) {
    say(b"coffeyd: PANIC: fatal signal ");
    say(coffey::sys::signal_name(sig).as_bytes());
    say(b"\n");
    let path = FATAL_PATH.load(Ordering::Relaxed);
    if FATAL_SYSTEM.load(Ordering::Relaxed) && !path.is_null() {
        // SAFETY: set from a &'static CStr.
        emergency(unsafe { CStr::from_ptr(path) });
    }
    say(b"coffeyd: exiting with code 70\n");
    // SAFETY: _exit is async-signal-safe and ends the process at once.
    unsafe { libc::_exit(PANIC_EXIT) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The disposition of `sig` now.
    fn handler_of(sig: libc::c_int) -> libc::sighandler_t {
        // SAFETY: a query only.
        unsafe {
            let mut old: libc::sigaction = core::mem::zeroed();
            libc::sigaction(sig, core::ptr::null(), &mut old);
            old.sa_sigaction
        }
    }

    #[test]
    fn a_child_forgets_pid1s_crash_handling() {
        install_fatal_handlers(Mode::Container, c"/bin/sh");
        assert_ne!(handler_of(libc::SIGBUS), libc::SIG_DFL);
        forget_crash_handling();
        for sig in FATAL {
            assert_eq!(handler_of(sig), libc::SIG_DFL, "signal {sig}");
        }
    }
    use coffey::sys::{ExitStatus, SpawnError, Stage};

    fn spawn_err(stage: Stage, errno: i32) -> SpawnError {
        SpawnError { stage, errno }
    }

    /// Whether `lo` is up, seen from this thread's network namespace.
    fn lo_is_up() -> bool {
        // SAFETY: as in loopback_up.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
            let mut req: libc::ifreq = core::mem::zeroed();
            req.ifr_name[0] = b'l' as libc::c_char;
            req.ifr_name[1] = b'o' as libc::c_char;
            assert_eq!(libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut req), 0);
            libc::close(fd);
            req.ifr_ifru.ifru_flags & libc::IFF_UP as libc::c_short != 0
        }
    }

    #[test]
    fn loopback_up_in_a_fresh_network_namespace() {
        // A thread of its own: a network namespace is per thread, and the
        // thread (with its namespace) ends with the test. Needs root, like
        // the PID-namespace tests: without it, it fails (never a silent ok).
        std::thread::spawn(|| {
            // SAFETY: unshare of this thread's network namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                let e = std::io::Error::last_os_error();
                panic!("unshare(CLONE_NEWNET): {e}: this test needs root");
            }
            assert!(!lo_is_up(), "a new network namespace starts with lo down");
            assert_eq!(loopback_up(), Ok(()));
            assert!(lo_is_up());
            assert_eq!(loopback_up(), Ok(()), "already up: fine");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn power_signals_map_like_sysvinit() {
        assert_eq!(action_for(libc::SIGTERM), Some(Action::Reboot));
        assert_eq!(action_for(libc::SIGINT), Some(Action::Reboot));
        assert_eq!(action_for(libc::SIGUSR1), Some(Action::Halt));
        assert_eq!(action_for(libc::SIGUSR2), Some(Action::Poweroff));
        assert_eq!(action_for(libc::SIGPWR), Some(Action::Poweroff));
        assert_eq!(action_for(libc::SIGHUP), None);
        assert_eq!(action_for(libc::SIGCHLD), None);
    }

    #[test]
    fn container_exit_codes() {
        let code = |f: &dyn Fn(&mut MainExit)| {
            let mut m = MainExit::new();
            f(&mut m);
            m.final_code(true)
        };
        assert_eq!(MainExit::new().final_code(false), 0, "no main");
        assert_eq!(
            code(&|m| {
                m.exited(ExitStatus::Code(42));
            }),
            42
        );
        assert_eq!(
            code(&|m| {
                m.exited(ExitStatus::Signal(9));
            }),
            137
        );
        assert_eq!(code(&|_| ()), 143, "never ran: 128 + SIGTERM");
        assert_eq!(code(&|m| m.shutdown_by(libc::SIGINT)), 130);
        let exec = |e| move |m: &mut MainExit| m.spawn_failed(spawn_err(Stage::Exec, e));
        assert_eq!(code(&exec(libc::ENOENT)), 127);
        assert_eq!(code(&exec(libc::EACCES)), 126);
        assert_eq!(code(&exec(libc::ENOEXEC)), 126);
        // A temporary error is retried: no verdict yet.
        let mut m = MainExit::new();
        m.spawn_failed(spawn_err(Stage::Fork, libc::EAGAIN));
        assert_eq!((m.code, m.cannot_start), (None, None));
        // An exit already recorded is not overwritten by a spawn failure.
        m.exited(ExitStatus::Code(3));
        m.spawn_failed(spawn_err(Stage::Exec, libc::ENOENT));
        assert_eq!((m.final_code(true), m.cannot_start), (3, None));
    }
}
