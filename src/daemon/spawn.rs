//! fork + execve with everything prepared before the fork.
//!
//! argv, envp, the working directory and credentials are C arrays built at
//! startup ([`Prepared`]). After fork the child does only async-signal-safe
//! work: reset signal dispositions and mask, setsid, dup2 the stdio pipes,
//! setrlimit, setgroups/setgid/setuid, chdir, umask, execve. If a stage fails, the
//! child writes `(stage, errno)` to a close-on-exec pipe and `_exit(127)`s;
//! the parent reads that pipe until EOF (exec succeeded) or a report, so
//! exec failures are known synchronously and never look like a run.
//!
//! `std::process::Command` is not used: it allocates.

use super::compiled::CService;
use coffey::limits::{EXEC_ARENA, LOGIN_ENV, MAX_ARGS, MAX_ENV_EXTRA, MAX_GROUPS, MAX_RLIMITS};
use coffey::sys::{SpawnError, Stage};
use nix::libc;
use std::ffi::{CStr, CString};
use std::os::fd::RawFd;

/// The daemon's own environment, captured once at startup: services get
/// it plus their `env` entries (which override same-named keys).
pub struct BaseEnv {
    strs: Vec<CString>,
}

impl BaseEnv {
    /// Startup only.
    #[allow(clippy::disallowed_methods)]
    pub fn capture() -> BaseEnv {
        use std::os::unix::ffi::OsStrExt;
        let strs = std::env::vars_os()
            .filter_map(|(k, v)| {
                let mut e = k.as_bytes().to_vec();
                e.push(b'=');
                e.extend_from_slice(v.as_bytes());
                CString::new(e).ok()
            })
            .collect();
        BaseEnv { strs }
    }
    pub fn len(&self) -> usize {
        self.strs.len()
    }

    /// The entries, as C string pointers.
    pub fn ptrs(&self) -> impl Iterator<Item = *const libc::c_char> + '_ {
        self.strs.iter().map(|c| c.as_ptr())
    }
}

fn key(e: &[u8]) -> &[u8] {
    e.split(|&c| c == b'=').next().unwrap_or(e)
}

/// Why a service does not fit its slot's fixed exec buffers. The config
/// loader refuses such configs first (with the position and the numbers);
/// these are the daemon's own guard, in the same words.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FillError {
    Arena,
    Args,
    Env,
    Groups,
}

impl FillError {
    pub fn as_str(self) -> &'static str {
        match self {
            FillError::Arena => {
                "binary, working_dir, args and env take more than 8192 bytes (8 KiB)"
            }
            FillError::Args => "args: more than 128 entries",
            FillError::Env => "env: more than 64 entries",
            FillError::Groups => "the user is in more than 64 groups",
        }
    }
}

/// Longest `user`/`group` failure text kept for status.
const CRED_ERROR_MAX: usize = 96;

/// Everything the child needs, in fixed buffers allocated once per slot at
/// startup and refilled (never reallocated) by reload.
pub struct Prepared {
    arena: &'static mut [u8],
    argv: Box<[*const libc::c_char]>,
    envp: Box<[*const libc::c_char]>,
    path_off: usize,
    cwd_off: usize,
    pub uid: Option<libc::uid_t>,
    pub gid: Option<libc::gid_t>,
    groups: [libc::gid_t; MAX_GROUPS],
    ngroups: usize,
    pub set_groups: bool,
    /// Set when `user` or `group` did not resolve when the config was
    /// loaded: [`spawn`] then fails at once, like an exec failure.
    cred_error: heapless::String<CRED_ERROR_MAX>,
    pub umask: Option<libc::mode_t>,
    /// `rlimits:` (resource, soft, hard), the first `nrlimits` in use.
    rlimits: [(u32, u64, u64); MAX_RLIMITS],
    nrlimits: usize,
    /// Write ends of the service's stdout and stderr pipes.
    pub out_w: RawFd,
    pub err_w: RawFd,
    /// Holds a service (spare slots are empty until reload fills them).
    pub filled: bool,
    /// s6/dinit readiness: (write end of the notify pipe, fd number in the
    /// child). Set by the shell just before each spawn.
    pub notify_fd: Option<(RawFd, i32)>,
    /// The service's cgroup directory (-1: none), set by the shell before
    /// each spawn: the child joins it before anything else (see
    /// `cgroup.rs` for why a write and not clone3).
    pub cgroup_fd: RawFd,
    /// sd_notify watchdog: `WATCHDOG_USEC=...` and `WATCHDOG_PID=` entries,
    /// in their own buffer (never counted against the service's env
    /// budget). The pid is only known after fork: the child writes its
    /// digits at `wd_pid_at` (a raw pointer, so the child's write aliases
    /// no reference).
    wd: *mut u8,
    wd_len: usize,
    wd_pid_at: Option<usize>,
}

/// Room for `WATCHDOG_USEC=<20 digits>` and `WATCHDOG_PID=<20 digits>`.
const WD_BUF: usize = 72;

/// Keys of coffeyd's own service manager, if it has one: never passed on
/// (a service's `NOTIFY_SOCKET` and watchdog are coffeyd's, or none).
const MANAGER_KEYS: [&[u8]; 3] = [b"NOTIFY_SOCKET", b"WATCHDOG_USEC", b"WATCHDOG_PID"];

/// Writes `v` in decimal and a NUL into `dst`; returns the digits written
/// (0 if it does not fit). Async-signal-safe: no allocation, no locks.
pub fn write_decimal(dst: &mut [u8], mut v: u64) -> usize {
    let mut tmp = [0u8; 20];
    let mut n = 0;
    loop {
        if let Some(t) = tmp.get_mut(n) {
            *t = b'0' + (v % 10) as u8;
        }
        n += 1;
        v /= 10;
        if v == 0 || n >= tmp.len() {
            break;
        }
    }
    if dst.len() <= n {
        return 0;
    }
    for (d, t) in dst.iter_mut().zip(tmp.iter().take(n).rev()) {
        *d = *t;
    }
    if let Some(z) = dst.get_mut(n) {
        *z = 0;
    }
    n
}

impl Prepared {
    /// Startup only: allocates the fixed buffers.
    #[allow(clippy::disallowed_macros)]
    pub fn new(base: &BaseEnv, out_w: RawFd, err_w: RawFd) -> Prepared {
        let wd = super::slab::zeroed(WD_BUF).unwrap_or(&mut []);
        Prepared {
            arena: super::slab::zeroed(EXEC_ARENA).unwrap_or(&mut []),
            argv: vec![core::ptr::null(); MAX_ARGS + 2].into_boxed_slice(),
            // + login env, NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID, NULL.
            envp: vec![core::ptr::null(); base.len() + MAX_ENV_EXTRA + LOGIN_ENV + 4]
                .into_boxed_slice(),
            path_off: 0,
            cwd_off: 0,
            uid: None,
            gid: None,
            groups: [0; MAX_GROUPS],
            ngroups: 0,
            set_groups: false,
            cred_error: heapless::String::new(),
            umask: None,
            rlimits: [(0, 0, 0); MAX_RLIMITS],
            nrlimits: 0,
            out_w,
            err_w,
            filled: false,
            notify_fd: None,
            cgroup_fd: -1,
            wd: wd.as_mut_ptr(),
            wd_len: wd.len(),
            wd_pid_at: None,
        }
    }

    /// Whether `c` fits the fixed buffers (checked before reload changes
    /// anything).
    pub fn fits(c: &CService<'_>) -> Result<(), FillError> {
        Self::fits_cmd(core::iter::once(c.binary).chain(c.args.clone()), c)
    }

    /// Same, for an arbitrary command run with `c`'s env and credentials
    /// (exec checks).
    pub fn fits_cmd<'b>(
        cmd: impl Iterator<Item = &'b [u8]> + Clone,
        c: &CService<'_>,
    ) -> Result<(), FillError> {
        let strs = c.cwd.len() + 1;
        let args: usize = cmd.clone().map(|a| a.len() + 1).sum();
        let env: usize = c.env.clone().map(|e| e.len() + 1).sum();
        if strs + args + env > EXEC_ARENA {
            return Err(FillError::Arena);
        }
        if cmd.count() > MAX_ARGS + 1 {
            return Err(FillError::Args);
        }
        if c.env.count_left() > MAX_ENV_EXTRA + LOGIN_ENV {
            return Err(FillError::Env);
        }
        if c.groups.len() / 4 > MAX_GROUPS {
            return Err(FillError::Groups);
        }
        Ok(())
    }

    /// Rewrites the buffers for service `c`. No allocation.
    pub fn fill(
        &mut self,
        c: &CService<'_>,
        base: &BaseEnv,
        notify_env: Option<&CStr>,
    ) -> Result<(), FillError> {
        self.fill_cmd(
            core::iter::once(c.binary).chain(c.args.clone()),
            c,
            base,
            notify_env,
        )?;
        let watchdog = match c.checks.first() {
            Some(Some(k)) => match k.policy.mode {
                coffey::health::Mode::Passive { watchdog } => watchdog,
                coffey::health::Mode::Probe => None,
            },
            _ => None,
        };
        self.set_watchdog(notify_env.and(watchdog))
    }

    /// Appends `WATCHDOG_USEC=` (the watchdog in µs, as systemd's
    /// `WatchdogSec=`) and a `WATCHDOG_PID=` the child completes, so
    /// `sd_watchdog_enabled()` in the service accepts them.
    fn set_watchdog(&mut self, ms: Option<u64>) -> Result<(), FillError> {
        self.wd_pid_at = None;
        let Some(ms) = ms else {
            return Ok(());
        };
        let k = self
            .envp
            .iter()
            .position(|p| p.is_null())
            .ok_or(FillError::Env)?;
        // SAFETY: `wd` is our own `wd_len`-byte slab, borrowed by no one.
        let buf = unsafe { core::slice::from_raw_parts_mut(self.wd, self.wd_len) };
        // "WATCHDOG_USEC=<us>\0WATCHDOG_PID=0\0"; the child rewrites the 0.
        let (usec, pid) = (b"WATCHDOG_USEC=".as_slice(), b"WATCHDOG_PID=".as_slice());
        let digits_at = usec.len();
        let n = write_decimal(
            buf.get_mut(digits_at..).unwrap_or(&mut []),
            ms.saturating_mul(1000),
        );
        let pid_entry = digits_at + n + 1;
        let pid_at = pid_entry + pid.len();
        // The pid's 20 digits and NUL must fit after it.
        if n == 0 || pid_at + 21 > buf.len() {
            return Err(FillError::Env);
        }
        for (dst, src) in [(0, usec), (pid_entry, pid), (pid_at, b"0\0".as_slice())] {
            if let Some(d) = buf.get_mut(dst..dst + src.len()) {
                d.copy_from_slice(src);
            }
        }
        self.wd_pid_at = Some(pid_at);
        let p = self.wd.cast_const().cast::<libc::c_char>();
        let entries = [p, p.wrapping_add(pid_entry), core::ptr::null()];
        for (j, e) in entries.into_iter().enumerate() {
            *self.envp.get_mut(k + j).ok_or(FillError::Env)? = e;
        }
        Ok(())
    }

    /// Rewrites the buffers for `cmd` (argv, argv[0] the absolute path)
    /// run with `c`'s env, credentials and working dir.
    pub fn fill_cmd<'b>(
        &mut self,
        cmd: impl Iterator<Item = &'b [u8]> + Clone,
        c: &CService<'_>,
        base: &BaseEnv,
        notify_env: Option<&CStr>,
    ) -> Result<(), FillError> {
        Self::fits_cmd(cmd.clone(), c)?;
        let mut cmd = cmd;
        let binary = cmd.next().unwrap_or(b"/nonexistent");
        let mut at = 0usize;
        let mut put = |arena: &mut [u8], b: &[u8]| -> Result<usize, FillError> {
            let start = at;
            let end = start + b.len();
            arena
                .get_mut(start..end)
                .ok_or(FillError::Arena)?
                .copy_from_slice(b);
            *arena.get_mut(end).ok_or(FillError::Arena)? = 0;
            at = end + 1;
            Ok(start)
        };
        self.path_off = put(self.arena, binary)?;
        self.cwd_off = put(self.arena, c.cwd)?;
        let mut arg_offs = [0usize; MAX_ARGS];
        let mut nargs = 0;
        for a in cmd {
            *arg_offs.get_mut(nargs).ok_or(FillError::Args)? = put(self.arena, a)?;
            nargs += 1;
        }
        let mut env_offs = [0usize; MAX_ENV_EXTRA + LOGIN_ENV];
        let mut nenv = 0;
        for e in c.env.clone() {
            *env_offs.get_mut(nenv).ok_or(FillError::Env)? = put(self.arena, e)?;
            nenv += 1;
        }
        let base_ptr = self.arena.as_ptr();
        let ptr = |off: usize| -> *const libc::c_char { base_ptr.wrapping_add(off).cast() };
        // argv: binary, args..., NULL
        let mut k = 0;
        for off in core::iter::once(self.path_off).chain(arg_offs.iter().take(nargs).copied()) {
            *self.argv.get_mut(k).ok_or(FillError::Args)? = ptr(off);
            k += 1;
        }
        *self.argv.get_mut(k).ok_or(FillError::Args)? = core::ptr::null();
        // envp: base minus overridden keys, then the service's entries.
        let mut k = 0;
        for b in &base.strs {
            let bk = key(b.as_bytes());
            if c.env.clone().any(|e| key(e) == bk) || MANAGER_KEYS.contains(&bk) {
                continue;
            }
            *self.envp.get_mut(k).ok_or(FillError::Env)? = b.as_ptr();
            k += 1;
        }
        for off in env_offs.iter().take(nenv) {
            *self.envp.get_mut(k).ok_or(FillError::Env)? = ptr(*off);
            k += 1;
        }
        if let Some(n) = notify_env {
            *self.envp.get_mut(k).ok_or(FillError::Env)? = n.as_ptr();
            k += 1;
        }
        *self.envp.get_mut(k).ok_or(FillError::Env)? = core::ptr::null();
        self.ngroups = 0;
        for g in c.gids() {
            *self.groups.get_mut(self.ngroups).ok_or(FillError::Groups)? = g;
            self.ngroups += 1;
        }
        self.uid = c.uid;
        self.gid = c.gid;
        self.set_groups = c.set_groups;
        self.cred_error.clear();
        let why = core::str::from_utf8(c.cred_error).unwrap_or("user or group not found");
        for ch in why.chars() {
            if self.cred_error.push(ch).is_err() {
                break;
            }
        }
        self.umask = c.umask;
        self.nrlimits = 0;
        for (d, l) in self.rlimits.iter_mut().zip(c.rlimits()) {
            *d = l;
            self.nrlimits += 1;
        }
        self.filled = true;
        Ok(())
    }

    /// Why this service cannot start as its user ("" when it can).
    pub fn cred_error(&self) -> &str {
        &self.cred_error
    }

    fn cstr_at(&self, off: usize) -> &CStr {
        self.arena
            .get(off..)
            .and_then(|b| CStr::from_bytes_until_nul(b).ok())
            .unwrap_or(c"")
    }

    pub fn path(&self) -> &CStr {
        self.cstr_at(self.path_off)
    }

    /// argv[1..], for status.
    pub fn args(&self) -> impl Iterator<Item = &CStr> {
        self.argv
            .iter()
            .skip(1)
            .take_while(|p| !p.is_null())
            .map(|p| {
                let off = (*p as usize).wrapping_sub(self.arena.as_ptr() as usize);
                self.cstr_at(off)
            })
    }
}

/// A failed start in user words: the `user`/`group` reason when that is
/// what failed, else "exec failed: <errno text>". Shared by status, events
/// and the daemon log so they say the same thing.
pub fn write_failure(out: &mut impl core::fmt::Write, err: SpawnError, p: Option<&Prepared>) {
    let desc = nix::errno::Errno::from_raw(err.errno).desc();
    let _ = match (err.stage, p) {
        (Stage::User, Some(p)) if !p.cred_error().is_empty() => out.write_str(p.cred_error()),
        (Stage::User, _) => out.write_str("user or group not found"),
        (Stage::Cgroup, _) => write!(out, "cannot join its cgroup: {desc}"),
        _ => write!(out, "exec failed: {desc}"),
    };
}

/// Starts the prepared program. Returns its pid (= its process group).
pub fn spawn(p: &Prepared, devnull: RawFd) -> Result<i32, SpawnError> {
    if !p.cred_error.is_empty() {
        // Like a missing binary: this service fails and retries, the rest
        // run. The text is in `cred_error()`.
        return Err(SpawnError {
            stage: Stage::User,
            errno: libc::ENOENT,
        });
    }
    let mut fds = [-1 as RawFd; 2];
    // SAFETY: fds is a valid 2-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(SpawnError {
            stage: Stage::Pipe,
            errno: super::errno(),
        });
    }
    let [rd, wr] = fds;
    // SAFETY: single-threaded process; the child only calls
    // async-signal-safe functions before execve or _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = super::errno();
        // SAFETY: we own both fds.
        unsafe {
            libc::close(rd);
            libc::close(wr);
        }
        return Err(SpawnError {
            stage: Stage::Fork,
            errno: e,
        });
    }
    if pid == 0 {
        // SAFETY: in the child; never returns.
        unsafe { child(p, devnull, wr) }
    }
    // SAFETY: we own wr in the parent.
    unsafe { libc::close(wr) };
    let mut report = [0u8; 8];
    let mut got = 0usize;
    loop {
        let buf = report.get_mut(got..).unwrap_or(&mut []);
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::read(rd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            if super::errno() == libc::EINTR {
                continue;
            }
            break;
        }
        if n == 0 {
            break;
        }
        got += usize::try_from(n).unwrap_or(0);
        if got >= report.len() {
            break;
        }
    }
    // SAFETY: we own rd.
    unsafe { libc::close(rd) };
    if got < report.len() {
        return Ok(pid);
    }
    let [a, b, c, d, e, f, g, h] = report;
    let stage = u32::from_ne_bytes([a, b, c, d]);
    let err = i32::from_ne_bytes([e, f, g, h]);
    // The child has already _exit'ed: reap it here so the main reap loop
    // never mistakes it for a run.
    let mut st = 0;
    // SAFETY: pid is our child.
    while unsafe { libc::waitpid(pid, &mut st, 0) } < 0 && super::errno() == libc::EINTR {}
    Err(SpawnError {
        stage: Stage::from_u32(stage),
        errno: err,
    })
}

/// Moves the calling process into the cgroup `dir` ("0" in
/// `cgroup.procs` means the writer). Async-signal-safe: openat, write,
/// close. Before setuid: the service's user may not write there.
///
/// # Safety
/// Plain syscalls; `dir` is an open directory fd.
unsafe fn join_cgroup(dir: RawFd) -> bool {
    let fd = libc::openat(
        dir,
        c"cgroup.procs".as_ptr(),
        libc::O_WRONLY | libc::O_CLOEXEC,
    );
    if fd < 0 {
        return false;
    }
    let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
    if !ok {
        // Keep the write's errno for the report.
        let e = super::errno();
        libc::close(fd);
        nix::errno::Errno::set_raw(e);
        return false;
    }
    libc::close(fd);
    true
}

/// # Safety
/// Call only in a freshly forked child of a single-threaded parent.
unsafe fn child(p: &Prepared, devnull: RawFd, report: RawFd) -> ! {
    let fail = |stage: Stage| -> ! {
        let e = super::errno();
        let mut msg = [0u8; 8];
        let (a, b) = msg.split_at_mut(4);
        a.copy_from_slice(&stage.to_u32().to_ne_bytes());
        b.copy_from_slice(&e.to_ne_bytes());
        libc::write(report, msg.as_ptr().cast(), msg.len());
        libc::_exit(127)
    };
    // Default dispositions first (SIG_IGN survives execve; SIGPIPE is
    // ignored by the daemon), then an empty mask (the daemon blocks the
    // signals it reads through signalfd).
    // The raw syscall, because libc's sigaction refuses the signals it
    // reserves for itself (32, 33), and a parent may have left those
    // ignored too. An all-zero kernel sigaction is SIG_DFL, no flags, empty
    // mask, on every architecture.
    let dfl = [0usize; 4];
    for sig in 1..65 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                dfl.as_ptr(),
                core::ptr::null_mut::<u8>(),
                8usize,
            );
        }
    }
    let mut set: libc::sigset_t = core::mem::zeroed();
    libc::sigemptyset(&mut set);
    libc::sigprocmask(libc::SIG_SETMASK, &set, core::ptr::null_mut());
    if p.cgroup_fd >= 0 && !join_cgroup(p.cgroup_fd) {
        fail(Stage::Cgroup);
    }
    if libc::setsid() < 0 {
        fail(Stage::Setsid);
    }
    if let Some(at) = p.wd_pid_at {
        // SAFETY: `wd` is the slot's own slab; this is the child's copy.
        let buf = core::slice::from_raw_parts_mut(p.wd, p.wd_len);
        write_decimal(
            buf.get_mut(at..).unwrap_or(&mut []),
            u64::try_from(libc::getpid()).unwrap_or(0),
        );
    }
    if libc::dup2(devnull, 0) < 0 || libc::dup2(p.out_w, 1) < 0 || libc::dup2(p.err_w, 2) < 0 {
        fail(Stage::Stdio);
    }
    if let Some((w, n)) = p.notify_fd {
        if libc::dup2(w, n) < 0 {
            fail(Stage::Stdio);
        }
    }
    // Before setuid: raising a hard limit needs the privilege it drops.
    for &(res, soft, hard) in p.rlimits.get(..p.nrlimits).unwrap_or(&[]) {
        let lim = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        if libc::setrlimit(res as _, &lim) < 0 {
            fail(Stage::Rlimit);
        }
    }
    if p.set_groups && libc::setgroups(p.ngroups, p.groups.as_ptr()) < 0 {
        fail(Stage::Setgroups);
    }
    if let Some(gid) = p.gid {
        if libc::setgid(gid) < 0 {
            fail(Stage::Setgid);
        }
    }
    if let Some(uid) = p.uid {
        if libc::setuid(uid) < 0 {
            fail(Stage::Setuid);
        }
    }
    if libc::chdir(p.cstr_at(p.cwd_off).as_ptr()) < 0 {
        fail(Stage::Chdir);
    }
    if let Some(m) = p.umask {
        libc::umask(m);
    }
    libc::execve(p.path().as_ptr(), p.argv.as_ptr(), p.envp.as_ptr());
    fail(Stage::Exec)
}

#[cfg(test)]
mod tests {
    use super::write_decimal;

    #[test]
    fn write_decimal_writes_digits_and_nul() {
        let mut b = [0xffu8; 24];
        assert_eq!(write_decimal(&mut b, 0), 1);
        assert_eq!(&b[..2], b"0\0");
        assert_eq!(write_decimal(&mut b, 4_194_304), 7);
        assert_eq!(&b[..8], b"4194304\0");
        assert_eq!(write_decimal(&mut b, u64::MAX), 20);
        assert_eq!(&b[..21], b"18446744073709551615\0");
        // No room for the digits and the NUL: nothing written.
        let mut small = [0xffu8; 3];
        assert_eq!(write_decimal(&mut small, 123), 0);
        assert_eq!(small, [0xff; 3]);
    }
}
