//! clone(CLONE_VM | CLONE_VFORK) + execve with everything prepared before.
//!
//! argv, envp, the working directory and credentials are C arrays built at
//! startup ([`Prepared`]). The child is cloned as posix_spawn does: it runs
//! on its own [`Stack`] in the daemon's memory, and the daemon waits until
//! it has exec'd or exited, so no page table is copied (a fork of a daemon
//! with 1,000 slots cost about 1 ms). It shares the daemon's descriptor
//! table too (`CLONE_FILES`) and first takes a table of its own holding
//! only a few low numbers ([`Stack`]'s held descriptors), so no spawn
//! copies and closes the daemon's thousands of pipes. Until execve the
//! child does only async-signal-safe work that writes none of the daemon's
//! state: unshare the descriptor table, reset
//! signal dispositions and mask, join the cgroup, setsid, dup2 the stdio
//! pipes, setrlimit, setgroups/setgid/setuid (raw syscalls), chdir, umask,
//! execve (for a bare program name, each `PATH` directory in turn, built in
//! a buffer on the child's stack, as execvp does). If a stage fails, the child writes `(stage, errno)` to a
//! close-on-exec pipe and `_exit(127)`s; the parent reads that pipe until
//! EOF (exec succeeded) or a report, so exec failures are known
//! synchronously and never look like a run.
//!
//! `std::process::Command` is not used: it allocates.

use super::arena::ExecArena;
use super::compiled::CService;
use coffey::limits::{
    DEFAULT_PATH, EXEC_ARENA, EXEC_PATH_MAX, LOGIN_ENV, MAX_ARGS, MAX_ENV_EXTRA, MAX_GROUPS,
    MAX_RLIMITS,
};
use coffey::sys::{SpawnError, Stage};
use core::sync::atomic::{AtomicBool, Ordering};
use nix::libc;
use std::ffi::{CStr, CString};
use std::os::fd::RawFd;

/// The daemon's own environment, captured once at startup: services get
/// it plus their `env` entries (which override same-named keys).
pub struct BaseEnv {
    strs: Vec<CString>,
    /// The envp of every command that adds nothing to it (no `env`, no
    /// sd_notify): one array for all of them, so such a service's exec
    /// region holds no copy of the environment's pointers.
    shared: Box<[*const libc::c_char]>,
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
            .collect::<Vec<CString>>();
        let shared = strs
            .iter()
            .filter(|b| !MANAGER_KEYS.contains(&key(b.as_bytes())))
            .map(|b| b.as_ptr())
            .chain(core::iter::once(core::ptr::null()))
            .collect();
        BaseEnv { strs, shared }
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
    Full,
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
            FillError::Full => {
                "the exec arena is full (it is sized at startup; restart coffeyd to grow it)"
            }
        }
    }
}

/// Bytes of one pointer in argv/envp.
const PTR: usize = core::mem::size_of::<*const libc::c_char>();
/// One `rlimits:` entry: (resource, soft, hard).
type Rlimit = (u32, u64, u64);
const RLIMIT: usize = core::mem::size_of::<Rlimit>();
const GID: usize = core::mem::size_of::<libc::gid_t>();
const _: () = assert!(core::mem::align_of::<Rlimit>() <= PTR && GID <= PTR);

/// Everything the child needs. The strings and pointer arrays live in the
/// one [`ExecArena`], in a region of exactly the size this command needs
/// (see `arena.rs`); an empty `Prepared` holds none.
pub struct Prepared {
    /// The region: `nptrs` pointers (argv, then envp, each ending in
    /// NULL), then the strings, then the watchdog entries if any.
    region: *mut u8,
    region_len: usize,
    nptrs: usize,
    /// argv's length with its NULL; envp starts after it, or is the
    /// shared one of [`BaseEnv`] (`shared_envp`, when not null).
    nargv: usize,
    shared_envp: *const *const libc::c_char,
    path_off: usize,
    cwd_off: usize,
    pub uid: Option<libc::uid_t>,
    pub gid: Option<libc::gid_t>,
    /// Supplementary groups, in the region after the rlimits.
    ngroups: usize,
    pub set_groups: bool,
    /// Set when `user` or `group` did not resolve when the config was
    /// loaded: [`spawn`] then fails at once, like an exec failure. The
    /// text is a string of the region (region offset; "" when none), so a
    /// slot holds no buffer for an error few services have.
    cred_off: usize,
    pub umask: Option<libc::mode_t>,
    /// `rlimits:` (resource, soft, hard), in the region after the
    /// pointers.
    nrlimits: usize,
    /// Where the strings start in the region.
    strs_at: usize,
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
    /// at the region's end (never counted against the service's env
    /// budget). The pid is only known after clone: the child writes its
    /// digits at `wd_pid_at` (an offset in the region, written through
    /// the raw pointer, so the child's write aliases no reference). The
    /// child shares our memory, so the digits stay here: the daemon sees
    /// the last run's pid, and reads it nowhere.
    wd_pid_at: Option<usize>,
    /// The region ends in [`WD_BUF`] bytes for the watchdog entries.
    wd_room: bool,
    /// `fds:` (see [`Prepared::set_fds`]): how many, where their map
    /// (`u8 num | u8 end | u16 entry` each) and the names (LISTEN_FDNAMES's
    /// value; a NUL after the LISTEN_FDS-th name, then the rest) are in
    /// the region, and where the child writes `LISTEN_PID=`'s digits
    /// (as for `wd_pid_at`).
    nfds: u8,
    fds_off: u32,
    names_off: u32,
    listen_pid_at: Option<u32>,
    /// The item of `fds:` whose entry was not open at the last spawn
    /// (`u8::MAX`: none), for the failure's text.
    fd_failed: core::cell::Cell<u8>,
}

/// Room for `LISTEN_FDS=<2 digits>`, `LISTEN_PID=<20 digits>` and
/// `LISTEN_FDNAMES=` (the names come after), with their NULs.
const LISTEN_BUF: usize = 14 + 32 + 15;

/// `LISTEN_FDS=<count>\0LISTEN_PID=0\0` (room for the child's pid) and
/// `LISTEN_FDNAMES=`, the names to follow. Returns the text and where its
/// end, the PID entry, the PID's digit and the names entry are.
fn listen_head(count: usize) -> ([u8; LISTEN_BUF], [usize; 4]) {
    let mut text = [0u8; LISTEN_BUF];
    let mut at = 0usize;
    let mut put = |b: &[u8]| {
        for &x in b {
            if let Some(d) = text.get_mut(at) {
                *d = x;
            }
            at += 1;
        }
        at
    };
    put(b"LISTEN_FDS=");
    let mut digits = [0u8; 4];
    let n = write_decimal(&mut digits, count as u64);
    let pid_entry = put(digits.get(..=n).unwrap_or(b"0\0"));
    let pid_at = put(b"LISTEN_PID=0\0") - 2;
    let names_entry = put(&[0u8; 19]);
    let end = put(b"LISTEN_FDNAMES=");
    (text, [end, pid_entry, pid_at, names_entry])
}

/// What a service's `fds:` takes at the end of its region: the LISTEN_
/// entries, the names with their NUL, the map.
fn fds_need(c: &CService<'_>) -> usize {
    if c.fds_raw.is_empty() {
        0
    } else {
        LISTEN_BUF + c.fd_names.len() + 1 + c.fds_raw.len()
    }
}

/// Room for `WATCHDOG_USEC=<20 digits>` and `WATCHDOG_PID=<20 digits>`.
const WD_BUF: usize = 72;

/// argv or envp of an empty `Prepared`: just the NULL.
static NO_PTRS: [usize; 1] = [0];

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

/// The sd_notify watchdog of `c`, if its readiness check has one.
fn watchdog_of(c: &CService<'_>) -> Option<u64> {
    match c.checks.first() {
        Some(Some(k)) => match k.policy.mode {
            coffey::health::Mode::Passive { watchdog } => watchdog,
            coffey::health::Mode::Probe => None,
        },
        _ => None,
    }
}

/// Whether `cmd` run with `c`'s env adds nothing to the base
/// environment, so its envp is [`BaseEnv`]'s shared one.
fn shares_env(c: &CService<'_>, notify: bool) -> bool {
    !notify && c.env.clone().next().is_none()
}

/// Whether service `c` gets an sd_notify socket (`reload::configure`
/// asks here too): its envp then has a `NOTIFY_SOCKET=` entry, so the
/// arena's need and the fill agree on who shares the base envp.
pub fn sd_notify(c: &CService<'_>) -> bool {
    matches!(
        c.checks.first(),
        Some(Some(super::compiled::CCheck {
            probe: super::compiled::CProbe::Notify { fd: None },
            ..
        }))
    )
}

/// (pointers, bytes): what `cmd` run with `c`'s env needs in the arena,
/// with `base_env` inherited entries (the most envp can take); `notify`:
/// it may get a `NOTIFY_SOCKET=` entry.
fn cmd_need<'b>(
    cmd: impl Iterator<Item = &'b [u8]> + Clone,
    c: &CService<'_>,
    base_env: usize,
    watchdog: bool,
    notify: bool,
    fds: bool,
) -> (usize, usize) {
    let nargv = cmd.clone().count() + 1;
    let listen = if fds { 3 } else { 0 }; // LISTEN_FDS, _PID, _FDNAMES
    let nenvp = if shares_env(c, notify || watchdog || fds) {
        0
    } else {
        base_env + c.env.clone().count() + 4 + listen // NOTIFY_SOCKET, 2 watchdog, NULL
    };
    let strs: usize = cmd.map(|a| a.len() + 1).sum::<usize>()
        + c.cwd.len()
        + 1
        + c.cred_error.len()
        + 1
        + c.env.clone().map(|e| e.len() + 1).sum::<usize>();
    let wd = if watchdog { WD_BUF } else { 0 };
    let wd = wd + if fds { fds_need(c) } else { 0 };
    let creds = c.rlimits().count() * RLIMIT + c.gids().count() * GID;
    (nargv + nenvp, (nargv + nenvp) * PTR + creds + strs + wd)
}

/// Arena bytes service `c` takes: its command and its exec checks'
/// (alignment included), with `base_env` inherited entries.
pub fn service_need(c: &CService<'_>, base_env: usize) -> usize {
    let round = |n: usize| (n + PTR - 1) & !(PTR - 1);
    let cmd = core::iter::once(c.binary).chain(c.args.clone());
    let wd = watchdog_of(c).is_some();
    let fds = !c.fds_raw.is_empty();
    let mut n = round(cmd_need(cmd, c, base_env, wd, sd_notify(c), fds).1);
    for k in c.checks.iter().flatten() {
        if let super::compiled::CProbe::Exec { command } = &k.probe {
            n += round(cmd_need(command.clone(), c, base_env, false, false, false).1);
        }
    }
    n
}

/// What the services of a compiled config need in the arena (each
/// service's command and its exec checks'), with `base_env` inherited
/// entries in each envp.
pub fn config_need(compiled: &[u8], base_env: usize) -> usize {
    let Ok(super::compiled::Compiled::Valid {
        count, services, ..
    }) = super::compiled::decode(compiled)
    else {
        return 0;
    };
    super::compiled::services_at(&services, count)
        .map(|(_, c)| service_need(&c, base_env))
        .sum()
}

impl Prepared {
    /// An empty one (it holds no arena bytes until filled).
    pub fn new(out_w: RawFd, err_w: RawFd) -> Prepared {
        Prepared {
            region: core::ptr::null_mut(),
            region_len: 0,
            nptrs: 0,
            nargv: 0,
            shared_envp: core::ptr::null(),
            path_off: 0,
            cwd_off: 0,
            uid: None,
            gid: None,
            ngroups: 0,
            set_groups: false,
            cred_off: 0,
            umask: None,
            nrlimits: 0,
            strs_at: 0,
            out_w,
            err_w,
            filled: false,
            notify_fd: None,
            cgroup_fd: -1,
            wd_pid_at: None,
            wd_room: false,
            nfds: 0,
            fds_off: 0,
            names_off: 0,
            listen_pid_at: None,
            fd_failed: core::cell::Cell::new(u8::MAX),
        }
    }

    /// Whether `c` fits the per-service limits (checked before reload
    /// changes anything; the arena's room is checked by the plan).
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

    /// The pointer part of the region.
    fn ptrs_mut(&mut self) -> &mut [*const libc::c_char] {
        if self.region.is_null() {
            return &mut [];
        }
        // SAFETY: the region is ours, pointer-aligned (the arena aligns
        // every allocation) and holds `nptrs` pointers first.
        unsafe { core::slice::from_raw_parts_mut(self.region.cast(), self.nptrs) }
    }

    /// The rlimits part of the region (after the pointers).
    fn rlimits(&self) -> &[Rlimit] {
        if self.region.is_null() {
            return &[];
        }
        // SAFETY: `nrlimits` entries after the pointers, aligned (the
        // pointer part is a whole number of pointers), written by fill.
        unsafe {
            core::slice::from_raw_parts(self.region.add(self.nptrs * PTR).cast(), self.nrlimits)
        }
    }

    fn rlimits_mut(&mut self) -> &mut [Rlimit] {
        if self.region.is_null() {
            return &mut [];
        }
        // SAFETY: as in `rlimits`; `&mut self` makes this the only view
        // (fill writes every entry before anything reads it).
        unsafe {
            core::slice::from_raw_parts_mut(self.region.add(self.nptrs * PTR).cast(), self.nrlimits)
        }
    }

    /// The groups part of the region (after the rlimits).
    fn groups(&self) -> &[libc::gid_t] {
        if self.region.is_null() {
            return &[];
        }
        let at = self.nptrs * PTR + self.nrlimits * RLIMIT;
        // SAFETY: `ngroups` gids, 4-aligned, written by fill.
        unsafe { core::slice::from_raw_parts(self.region.add(at).cast(), self.ngroups) }
    }

    fn groups_mut(&mut self) -> &mut [libc::gid_t] {
        if self.region.is_null() {
            return &mut [];
        }
        let at = self.nptrs * PTR + self.nrlimits * RLIMIT;
        // SAFETY: as in `groups`, the only view.
        unsafe { core::slice::from_raw_parts_mut(self.region.add(at).cast(), self.ngroups) }
    }

    /// The byte part of the region (strings, watchdog entries).
    fn bytes(&self) -> &[u8] {
        if self.region.is_null() {
            return &[];
        }
        let at = self.strs_at;
        // SAFETY: the region is ours and `region_len` bytes long.
        unsafe {
            core::slice::from_raw_parts(self.region.add(at), self.region_len.saturating_sub(at))
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        if self.region.is_null() {
            return &mut [];
        }
        let at = self.strs_at;
        // SAFETY: as in `bytes`; `&mut self` makes this the only view.
        unsafe {
            core::slice::from_raw_parts_mut(self.region.add(at), self.region_len.saturating_sub(at))
        }
    }

    /// argv and envp for execve.
    fn argv_envp(&self) -> (*const *const libc::c_char, *const *const libc::c_char) {
        if self.region.is_null() {
            let none = NO_PTRS.as_ptr().cast();
            return (none, none);
        }
        let argv: *const *const libc::c_char = self.region.cast_const().cast();
        if !self.shared_envp.is_null() {
            return (argv, self.shared_envp);
        }
        (argv, argv.wrapping_add(self.nargv))
    }

    /// Rewrites this service's exec storage for `c`, in a new region of
    /// `arena`. No allocation.
    pub fn fill(
        &mut self,
        arena: &mut ExecArena,
        c: &CService<'_>,
        base: &BaseEnv,
        notify_env: Option<&CStr>,
    ) -> Result<(), FillError> {
        let cmd = core::iter::once(c.binary).chain(c.args.clone());
        let wd = notify_env.and(watchdog_of(c));
        self.fill_with(arena, cmd, c, base, notify_env, wd, true)
    }

    /// Same for `cmd` (argv, argv[0] the absolute path) run with `c`'s
    /// env, credentials and working dir (exec checks).
    pub fn fill_cmd<'b>(
        &mut self,
        arena: &mut ExecArena,
        cmd: impl Iterator<Item = &'b [u8]> + Clone,
        c: &CService<'_>,
        base: &BaseEnv,
        notify_env: Option<&CStr>,
    ) -> Result<(), FillError> {
        self.fill_with(arena, cmd, c, base, notify_env, None, false)
    }

    #[allow(clippy::too_many_arguments)]
    fn fill_with<'b>(
        &mut self,
        arena: &mut ExecArena,
        cmd: impl Iterator<Item = &'b [u8]> + Clone,
        c: &CService<'_>,
        base: &BaseEnv,
        notify_env: Option<&CStr>,
        wd: Option<u64>,
        main: bool,
    ) -> Result<(), FillError> {
        Self::fits_cmd(cmd.clone(), c)?;
        let notify = notify_env.is_some();
        let fds = main && !c.fds_raw.is_empty();
        let (nptrs, len) = cmd_need(cmd.clone(), c, base.len(), wd.is_some(), notify, fds);
        self.shared_envp = if shares_env(c, notify || wd.is_some() || fds) {
            base.shared.as_ptr()
        } else {
            core::ptr::null()
        };
        let region = arena.alloc(len).ok_or(FillError::Full)?;
        self.filled = false;
        self.region = region;
        self.region_len = len;
        self.nptrs = nptrs;
        self.nargv = cmd.clone().count() + 1;
        self.wd_room = wd.is_some();
        self.nrlimits = c.rlimits().count().min(MAX_RLIMITS);
        self.ngroups = c.gids().count();
        self.strs_at = nptrs * PTR + self.nrlimits * RLIMIT + self.ngroups * GID;
        self.fill_strings(cmd, c, base, notify_env)?;
        self.set_watchdog(wd)?;
        self.set_fds(fds.then_some(c))?;
        self.fill_creds(c);
        self.filled = true;
        Ok(())
    }

    /// The strings and the argv/envp pointers to them.
    fn fill_strings<'b>(
        &mut self,
        cmd: impl Iterator<Item = &'b [u8]> + Clone,
        c: &CService<'_>,
        base: &BaseEnv,
        notify_env: Option<&CStr>,
    ) -> Result<(), FillError> {
        let mut cmd = cmd;
        let binary = cmd.next().unwrap_or(b"/nonexistent");
        let at0 = self.strs_at;
        let mut at = 0usize;
        let mut put = |bytes: &mut [u8], b: &[u8]| -> Result<usize, FillError> {
            let start = at;
            let end = start + b.len();
            bytes
                .get_mut(start..end)
                .ok_or(FillError::Arena)?
                .copy_from_slice(b);
            *bytes.get_mut(end).ok_or(FillError::Arena)? = 0;
            at = end + 1;
            Ok(at0 + start)
        };
        let bytes = self.bytes_mut();
        let path_off = put(bytes, binary)?;
        let cwd_off = put(bytes, c.cwd)?;
        let cred_off = put(bytes, c.cred_error)?;
        let mut arg_offs = [0usize; MAX_ARGS];
        let mut nargs = 0;
        for a in cmd {
            *arg_offs.get_mut(nargs).ok_or(FillError::Args)? = put(bytes, a)?;
            nargs += 1;
        }
        let mut env_offs = [0usize; MAX_ENV_EXTRA + LOGIN_ENV];
        let mut nenv = 0;
        for e in c.env.clone() {
            *env_offs.get_mut(nenv).ok_or(FillError::Env)? = put(bytes, e)?;
            nenv += 1;
        }
        (self.path_off, self.cwd_off, self.cred_off) = (path_off, cwd_off, cred_off);
        let region = self.region.cast_const();
        let ptr = |off: usize| -> *const libc::c_char { region.wrapping_add(off).cast() };
        let nargv = self.nargv;
        let shared = !self.shared_envp.is_null();
        let ptrs = self.ptrs_mut();
        let (argv, envp) = ptrs.split_at_mut(nargv.min(ptrs.len()));
        // argv: binary, args..., NULL
        let mut k = 0;
        for off in core::iter::once(path_off).chain(arg_offs.iter().take(nargs).copied()) {
            *argv.get_mut(k).ok_or(FillError::Args)? = ptr(off);
            k += 1;
        }
        *argv.get_mut(k).ok_or(FillError::Args)? = core::ptr::null();
        if shared {
            return Ok(());
        }
        // envp: base minus overridden keys, then the service's entries.
        let mut k = 0;
        for b in &base.strs {
            let bk = key(b.as_bytes());
            if c.env.clone().any(|e| key(e) == bk) || MANAGER_KEYS.contains(&bk) {
                continue;
            }
            *envp.get_mut(k).ok_or(FillError::Env)? = b.as_ptr();
            k += 1;
        }
        for off in env_offs.iter().take(nenv) {
            *envp.get_mut(k).ok_or(FillError::Env)? = ptr(*off);
            k += 1;
        }
        if let Some(n) = notify_env {
            *envp.get_mut(k).ok_or(FillError::Env)? = n.as_ptr();
            k += 1;
        }
        for p in envp.iter_mut().skip(k) {
            *p = core::ptr::null();
        }
        Ok(())
    }

    /// Credentials, umask and rlimits of `c`.
    fn fill_creds(&mut self, c: &CService<'_>) {
        for (d, g) in self.groups_mut().iter_mut().zip(c.gids()) {
            *d = g;
        }
        self.uid = c.uid;
        self.gid = c.gid;
        self.set_groups = c.set_groups;
        self.umask = c.umask;
        for (d, l) in self.rlimits_mut().iter_mut().zip(c.rlimits()) {
            *d = l;
        }
    }

    /// Appends envp entries at `at` (offsets from region offset `off`)
    /// where envp ends now, and the NULL after them.
    fn put_env(&mut self, off: usize, at: &[usize]) -> Result<(), FillError> {
        let nargv = self.nargv;
        let k = self
            .ptrs_mut()
            .iter()
            .skip(nargv)
            .position(|p| p.is_null())
            .ok_or(FillError::Env)?
            + nargv;
        let p = self
            .region
            .cast_const()
            .wrapping_add(off)
            .cast::<libc::c_char>();
        let ptrs = self.ptrs_mut();
        let entries = at.iter().map(|&a| p.wrapping_add(a));
        for (j, e) in entries.chain([core::ptr::null()]).enumerate() {
            *ptrs.get_mut(k + j).ok_or(FillError::Env)? = e;
        }
        Ok(())
    }

    /// Appends `WATCHDOG_USEC=` (the watchdog in µs, as systemd's
    /// `WatchdogSec=`) and a `WATCHDOG_PID=` the child completes, so
    /// `sd_watchdog_enabled()` in the service accepts them. Their text is
    /// the region's last [`WD_BUF`] bytes.
    fn set_watchdog(&mut self, ms: Option<u64>) -> Result<(), FillError> {
        self.wd_pid_at = None;
        let Some(ms) = ms else {
            return Ok(());
        };
        // fill_with made room for it (or not, and then this is a bug).
        if !self.wd_room {
            return Err(FillError::Env);
        }
        let wd_off = self.region_len.checked_sub(WD_BUF).ok_or(FillError::Env)?;
        let bytes_at = self.strs_at;
        let buf = self
            .bytes_mut()
            .get_mut(wd_off.saturating_sub(bytes_at)..)
            .ok_or(FillError::Env)?;
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
        self.wd_pid_at = Some(wd_off + pid_at);
        self.put_env(wd_off, &[0, pid_entry])
    }

    /// systemd's socket activation: `LISTEN_FDS=` (how many of the
    /// service's `fds:` run from 3 without a gap, as `sd_listen_fds`
    /// counts them), `LISTEN_PID=` (the child writes its pid, as for
    /// `WATCHDOG_PID=`) and `LISTEN_FDNAMES=`, then the map the spawn
    /// reads. They take the region's end, before the watchdog's
    /// [`WD_BUF`] (sized by `cmd_need`).
    fn set_fds(&mut self, c: Option<&CService<'_>>) -> Result<(), FillError> {
        (self.nfds, self.fds_off, self.names_off) = (0, 0, 0);
        self.listen_pid_at = None;
        let Some(c) = c else {
            return Ok(());
        };
        let wd = if self.wd_room { WD_BUF } else { 0 };
        let off = self
            .region_len
            .checked_sub(wd + fds_need(c))
            .ok_or(FillError::Env)?;
        let count = c
            .fds()
            .enumerate()
            .take_while(|(k, (num, _, _))| usize::from(*num) == k + 3)
            .count();
        let (text, [at, pid_entry, pid_at, names_entry]) = listen_head(count);
        let names_at = at;
        let bytes_at = self.strs_at;
        let bytes = self.bytes_mut();
        let rel = off.checked_sub(bytes_at).ok_or(FillError::Env)?;
        let dst = bytes.get_mut(rel..).ok_or(FillError::Env)?;
        let (head, rest) = dst.split_at_mut(at.min(dst.len()));
        head.copy_from_slice(text.get(..head.len()).unwrap_or(&[]));
        let nl = c.fd_names.len();
        let names = rest.get_mut(..nl + 1).ok_or(FillError::Env)?;
        let (nm, z) = names.split_at_mut(nl);
        nm.copy_from_slice(c.fd_names);
        z.fill(0);
        // LISTEN_FDNAMES holds the first `count` names: end it there.
        if let Some(colon) = nm
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b':')
            .nth(count.saturating_sub(1))
            .map(|(i, _)| i)
        {
            if let Some(b) = nm.get_mut(colon) {
                *b = 0;
            }
        }
        let map = rest
            .get_mut(nl + 1..nl + 1 + c.fds_raw.len())
            .ok_or(FillError::Env)?;
        map.copy_from_slice(c.fds_raw);
        let small = |v: usize| u32::try_from(v).map_err(|_| FillError::Arena);
        self.nfds = u8::try_from(c.fds_raw.len() / 4).map_err(|_| FillError::Env)?;
        self.names_off = small(off + names_at)?;
        self.fds_off = small(off + at + nl + 1)?;
        self.listen_pid_at = Some(small(off + pid_at)?);
        // No fd at 3: socket activation has nothing to count.
        let entries: &[usize] = if count == 0 {
            &[]
        } else {
            &[0, pid_entry, names_entry]
        };
        self.put_env(off, entries)
    }

    /// Points the `fds:` map at the table's slots: `slot_of` gives the
    /// slot of each entry of the config this was filled from (see
    /// `fdtable.rs`; reload and startup call it right after the fill).
    pub fn map_fds(&mut self, slot_of: impl Fn(u16) -> u16) {
        let at = (self.fds_off as usize).saturating_sub(self.strs_at);
        let n = 4 * usize::from(self.nfds);
        let Some(map) = self.bytes_mut().get_mut(at..at + n) else {
            return;
        };
        for c in map.chunks_exact_mut(4) {
            if let [_, _, lo, hi] = c {
                let [a, b] = slot_of(u16::from_le_bytes([*lo, *hi])).to_le_bytes();
                (*lo, *hi) = (a, b);
            }
        }
    }

    /// The `fds:` map: (number, end, slot) of each.
    fn fd_map(&self) -> impl Iterator<Item = (u8, u8, u16)> + '_ {
        let at = (self.fds_off as usize).saturating_sub(self.strs_at);
        self.bytes()
            .get(at..at + 4 * usize::from(self.nfds))
            .unwrap_or(&[])
            .chunks_exact(4)
            .map(|c| match c {
                [n, e, lo, hi] => (*n, *e, u16::from_le_bytes([*lo, *hi])),
                _ => (0, 0, 0),
            })
    }

    /// The name of the `fds:` entry that was not open at the last spawn
    /// ("" when none).
    pub fn failed_fd(&self) -> &str {
        let k = usize::from(self.fd_failed.get());
        if self.nfds == 0 || k >= usize::from(self.nfds) {
            return "";
        }
        let at = (self.names_off as usize).saturating_sub(self.strs_at);
        let end = (self.fds_off as usize)
            .saturating_sub(self.strs_at)
            .saturating_sub(1);
        let names = self.bytes().get(at..end).unwrap_or(&[]);
        names
            .split(|&b| b == b':' || b == 0)
            .nth(k)
            .and_then(|n| core::str::from_utf8(n).ok())
            .unwrap_or("")
    }

    /// Moves the region into `arena`'s current half if it is elsewhere
    /// (the end of a reload's apply), rebasing the pointers into it;
    /// those into the base env or a notify socket path stay.
    pub fn relocate(&mut self, arena: &mut ExecArena) -> Result<(), FillError> {
        if self.region.is_null() || arena.holds(self.region) {
            return Ok(());
        }
        let new = arena.alloc(self.region_len).ok_or(FillError::Full)?;
        let (old, len) = (self.region, self.region_len);
        // SAFETY: two regions of `len` bytes in different halves of the
        // arena (so they do not overlap), both ours.
        unsafe { core::ptr::copy_nonoverlapping(old, new, len) };
        self.region = new;
        let lo = old as usize;
        for p in self.ptrs_mut() {
            let a = *p as usize;
            if (lo..lo + len).contains(&a) {
                *p = new.wrapping_add(a - lo).cast_const().cast();
            }
        }
        Ok(())
    }

    /// Holds nothing any more (a free slot, at the end of an apply).
    pub fn clear(&mut self) {
        self.region = core::ptr::null_mut();
        (self.region_len, self.nptrs, self.nargv) = (0, 0, 0);
        self.shared_envp = core::ptr::null();
        (self.nrlimits, self.ngroups, self.strs_at) = (0, 0, 0);
        self.cred_off = 0;
        self.wd_pid_at = None;
        self.wd_room = false;
        (self.nfds, self.fds_off, self.names_off) = (0, 0, 0);
        self.listen_pid_at = None;
        self.filled = false;
    }

    /// The whole region, for tests that break a field.
    #[cfg(test)]
    fn region_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes_mut`.
        unsafe { core::slice::from_raw_parts_mut(self.region, self.region_len) }
    }

    /// Why this service cannot start as its user ("" when it can).
    pub fn cred_error(&self) -> &str {
        let why = self.cstr_at(self.cred_off).to_bytes();
        core::str::from_utf8(why).unwrap_or("user or group not found")
    }

    /// The string at region offset `off`.
    fn cstr_at(&self, off: usize) -> &CStr {
        self.bytes()
            .get(off.saturating_sub(self.strs_at)..)
            .and_then(|b| CStr::from_bytes_until_nul(b).ok())
            .unwrap_or(c"")
    }

    /// Whether the service has `fds:`.
    pub fn has_fds(&self) -> bool {
        self.nfds > 0
    }

    pub fn path(&self) -> &CStr {
        if self.region.is_null() {
            return c"";
        }
        self.cstr_at(self.path_off)
    }

    /// argv[1..], for status.
    pub fn args(&self) -> impl Iterator<Item = &CStr> {
        let ptrs: &[*const libc::c_char] = if self.region.is_null() {
            &[]
        } else {
            // SAFETY: as in `ptrs_mut`, shared.
            unsafe { core::slice::from_raw_parts(self.region.cast_const().cast(), self.nargv) }
        };
        let base = self.region as usize;
        ptrs.iter()
            .skip(1)
            .take_while(|p| !p.is_null())
            .map(move |p| self.cstr_at((*p as usize).wrapping_sub(base)))
    }
}

/// The stack a service's child runs on between clone and execve: it
/// shares the daemon's memory until then, so it cannot use the daemon's
/// stack (it would overwrite the frames the suspended parent returns to).
/// One per daemon, mapped at startup; `&mut` makes each spawn its only
/// user (lib tests spawn from several threads, each with its own).
pub struct Stack {
    /// The mapping: a PROT_NONE guard page, then [`CHILD_STACK`] bytes.
    base: *mut u8,
    len: usize,
    /// Low descriptor numbers held for the child (see [`Fds`]).
    fds: Fds,
    /// The `fds:` table's descriptors (see `fdtable.rs`), empty until
    /// startup sets it.
    table: Option<super::fdtable::FdTable>,
}

/// The descriptor numbers a child needs, in this order: /dev/null, stdout,
/// stderr, the status pipe, the notify pipe, the cgroup directory.
///
/// Why: the child shares the daemon's descriptor table (`CLONE_FILES`)
/// and its first call is `close_range(above, ~0, CLOSE_RANGE_UNSHARE)`,
/// which gives it a table of its own holding only the numbers below
/// `above`: the kernel copies no descriptor it would close. Without it
/// the clone copied all of the daemon's table and execve closed it again
/// (with 1,000 services, about 4,000 pipes: some 2-3 ms per spawn,
/// bench/results). So the parent puts what the child needs at these low
/// numbers, reserved at startup before the services' pipes, just before
/// the clone, and points them back at /dev/null once the child has
/// exec'd (so no copy keeps a pipe open: the status pipe's EOF, a check's
/// output EOF and the notify pipe depend on it).
#[derive(Clone, Copy)]
struct Fds {
    /// The six numbers above, then one for each of a service's `fds:`
    /// (as many as the most any service of the startup config has; -1
    /// beyond).
    at: [RawFd; HELD],
    /// How many of `at` are held.
    n: usize,
    /// One more than the highest of `at`: the child keeps only `0..above`.
    above: libc::c_uint,
    /// /dev/null: what each of `at` is a close-on-exec copy of between
    /// spawns.
    hold: RawFd,
}

const NULL_AT: usize = 0;
const OUT_AT: usize = 1;
const ERR_AT: usize = 2;
const REPORT_AT: usize = 3;
const NOTIFY_AT: usize = 4;
const CGROUP_AT: usize = 5;
/// Where a service's `fds:` sources go, in the map's order.
const FDS_AT: usize = 6;
/// The most `fds:` one service can have (3 to `FD_MAX`).
pub const MAX_SERVICE_FDS: usize = 29;
const HELD: usize = FDS_AT + MAX_SERVICE_FDS;

/// Size of [`Stack`] above its guard page. The child's own frames and
/// the plain syscall wrappers it calls need 320 bytes in a release build
/// and about 2 KiB in a debug one (the high-water mark that
/// `child_runs_on_its_own_stack_with_every_setting` prints). The
/// rest is margin: a build without `-z now` would resolve symbols lazily
/// in the child, and glibc's resolver saves the whole XSAVE area (up to
/// about 11 KiB with AMX) on the stack. Untouched pages cost no memory:
/// the child touches one or two.
pub const CHILD_STACK: usize = 64 * 1024;

/// Bytes of the guard page below the stack (a fault, not a silent write
/// into whatever the daemon has mapped below).
const GUARD: usize = 4096;

impl Stack {
    /// Startup only: one anonymous mapping, its lowest page inaccessible.
    #[cfg(test)]
    pub fn new() -> Result<Stack, &'static str> {
        Self::with_fds(0)
    }

    /// Same, holding room for services with up to `fds` items in `fds:`.
    pub fn with_fds(fds: usize) -> Result<Stack, &'static str> {
        let len = GUARD + CHILD_STACK;
        // SAFETY: a fresh private anonymous mapping that nothing else
        // refers to; mprotect on its own first page.
        unsafe {
            let p = libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                return Err("out of memory for the spawn stack (mmap)");
            }
            if libc::mprotect(p, GUARD, libc::PROT_NONE) < 0 {
                libc::munmap(p, len);
                return Err("cannot protect the spawn stack's guard page");
            }
            let Some(fds) = Fds::reserve(fds.min(MAX_SERVICE_FDS)) else {
                libc::munmap(p, len);
                return Err("cannot reserve the spawn descriptors (/dev/null)");
            };
            Ok(Stack {
                base: p.cast(),
                len,
                fds,
                table: None,
            })
        }
    }

    /// Startup: the `fds:` table the children's descriptors come from.
    pub fn set_table(&mut self, t: super::fdtable::FdTable) {
        self.table = Some(t);
    }

    /// The `fds:` table, for reexec's handoff.
    pub fn table(&self) -> Option<&super::fdtable::FdTable> {
        self.table.as_ref()
    }

    /// The `fds:` table, for reload.
    pub fn table_mut(&mut self) -> Option<&mut super::fdtable::FdTable> {
        self.table.as_mut()
    }

    /// How many `fds:` items a service may have (sized at startup).
    pub fn fd_room(&self) -> usize {
        self.fds.n.saturating_sub(FDS_AT)
    }

    /// The initial stack pointer: the stack grows down from the end of
    /// the mapping (page-aligned, so 16-aligned as every ABI wants).
    fn top(&mut self) -> *mut libc::c_void {
        self.base.wrapping_add(self.len).cast()
    }

    /// How many bytes below the top a child has ever written (the mapping
    /// starts zeroed): the high-water mark, for the test of its size.
    #[cfg(test)]
    fn used(&self) -> usize {
        // SAFETY: the accessible part of our own mapping.
        let s = unsafe { core::slice::from_raw_parts(self.base.add(GUARD), CHILD_STACK) };
        s.iter()
            .position(|&b| b != 0)
            .map_or(0, |i| CHILD_STACK - i)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: our mapping; no child runs on it (spawn returned). The
        // descriptors are ours.
        unsafe {
            libc::munmap(self.base.cast(), self.len);
            for fd in self.fds.at.into_iter().filter(|f| *f >= 0) {
                libc::close(fd);
            }
            libc::close(self.fds.hold);
        }
    }
}

impl Fds {
    /// Startup, before the services' pipes: the lowest free numbers from
    /// 3 up, each a close-on-exec /dev/null.
    fn reserve(extra: usize) -> Option<Fds> {
        // SAFETY: constant path; fcntl on our own fd.
        let hold = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if hold < 0 {
            return None;
        }
        let mut at = [-1; HELD];
        let n = FDS_AT + extra;
        for fd in at.iter_mut().take(n) {
            // SAFETY: plain fcntl on our fd.
            *fd = unsafe { libc::fcntl(hold, libc::F_DUPFD_CLOEXEC, 3) };
            if *fd < 0 {
                for f in at.iter().chain([&hold]).filter(|f| **f >= 0) {
                    // SAFETY: ours.
                    unsafe { libc::close(*f) };
                }
                return None;
            }
        }
        let top = at.iter().copied().max().unwrap_or(2);
        let above = libc::c_uint::try_from(top.saturating_add(1)).unwrap_or(libc::c_uint::MAX);
        Some(Fds { at, n, above, hold })
    }

    fn at(&self, i: usize) -> RawFd {
        self.at.get(i).copied().unwrap_or(-1)
    }

    /// Points the held numbers at what this child needs (-1: keep
    /// /dev/null). All close-on-exec: the child dup2s what it keeps.
    fn load(&self, need: &[RawFd]) -> Result<(), i32> {
        for (&at, fd) in self.at.iter().take(self.n).zip(need.iter().copied()) {
            // SAFETY: `at` is ours; dup3 onto it replaces our /dev/null.
            if fd >= 0 && unsafe { libc::dup3(fd, at, libc::O_CLOEXEC) } < 0 {
                let e = super::errno();
                self.unload();
                return Err(e);
            }
        }
        Ok(())
    }

    /// Back to /dev/null: no copy of a child's pipe stays open here.
    fn unload(&self) {
        for &at in self.at.iter().take(self.n) {
            // SAFETY: both ours.
            unsafe { libc::dup3(self.hold, at, libc::O_CLOEXEC) };
        }
    }
}

/// What the child reads, on the suspended parent's stack.
struct ChildArgs<'a> {
    p: &'a Prepared,
    fds: Fds,
}

/// Starts the prepared program. Returns its pid (= its process group).
///
/// The child is cloned with `CLONE_VM | CLONE_VFORK`, as posix_spawn
/// does: it runs on `stack` in the daemon's memory, and the daemon is
/// suspended until it execs or exits. A fork would copy the page tables
/// of a daemon holding all its slots (22 MB with 1,000 services), about
/// 1 ms per spawn, and unmap the copy again at exec.
pub fn spawn(p: &Prepared, devnull: RawFd, stack: &mut Stack) -> Result<i32, SpawnError> {
    if !p.cred_error().is_empty() {
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
    let notify_w = p.notify_fd.map_or(-1, |(w, _)| w);
    let mut need = [-1 as RawFd; HELD];
    for (d, s) in need
        .iter_mut()
        .zip([devnull, p.out_w, p.err_w, wr, notify_w, p.cgroup_fd])
    {
        *d = s;
    }
    if let Err(e) = service_fds(p, stack, need.get_mut(FDS_AT..).unwrap_or(&mut [])) {
        // SAFETY: we own both.
        unsafe {
            libc::close(rd);
            libc::close(wr);
        }
        return Err(SpawnError {
            stage: Stage::Fds,
            errno: e,
        });
    }
    let loaded = stack.fds.load(&need);
    // SAFETY: we own wr; its held copy is what the child gets.
    unsafe { libc::close(wr) };
    if let Err(e) = loaded {
        // SAFETY: we own rd.
        unsafe { libc::close(rd) };
        return Err(SpawnError {
            stage: Stage::Stdio,
            errno: e,
        });
    }
    let pid = clone_child(p, stack);
    // The child has exec'd or exited: drop the held copies (the status
    // pipe's last write end among them).
    stack.fds.unload();
    if pid < 0 {
        // SAFETY: we own rd.
        unsafe { libc::close(rd) };
        return Err(SpawnError {
            stage: Stage::Fork,
            errno: -pid,
        });
    }
    let report = read_report(rd);
    // SAFETY: we own rd.
    unsafe { libc::close(rd) };
    let Some([a, b, c, d, e, f, g, h]) = report else {
        return Ok(pid);
    };
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

/// The table's descriptors of `p`'s `fds:`, into `dst` (in the map's
/// order). Err: the errno of the first entry that is not open (its item
/// recorded for the failure's text), or EMFILE when the service has more
/// than the room held at startup.
fn service_fds(p: &Prepared, stack: &Stack, dst: &mut [RawFd]) -> Result<(), i32> {
    p.fd_failed.set(u8::MAX);
    if p.nfds == 0 {
        return Ok(());
    }
    if usize::from(p.nfds) > stack.fd_room() {
        return Err(libc::EMFILE);
    }
    let table = stack.table.as_ref().ok_or(libc::EBADF)?;
    for (k, ((_, end, entry), d)) in p.fd_map().zip(dst.iter_mut()).enumerate() {
        match table.get(entry, end) {
            Ok(fd) => *d = fd,
            Err(e) => {
                p.fd_failed.set(u8::try_from(k).unwrap_or(u8::MAX));
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Whether clone takes `CLONE_FILES` here (not under qemu-user).
static FILES_SHARED: AtomicBool = AtomicBool::new(true);

/// Clones the child onto `stack`; returns its pid, or minus the errno.
///
/// Every signal is blocked around the clone (posix_spawn does the same),
/// so no handler can run in the child, on the daemon's memory, before it
/// has reset the dispositions; the child then unblocks everything.
fn clone_child(p: &Prepared, stack: &mut Stack) -> i32 {
    let mut args = ChildArgs { p, fds: stack.fds };
    // SAFETY: sigset_t is plain data; the calls get valid pointers. The
    // child only makes async-signal-safe calls on its own stack and reads
    // `args` and `p`, which outlive it: CLONE_VFORK suspends this thread
    // until the child has exec'd or exited.
    unsafe {
        let mut all: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let arg = (&mut args as *mut ChildArgs<'_>).cast();
        let base = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
        let shared = FILES_SHARED.load(Ordering::Relaxed);
        let flags = if shared {
            base | libc::CLONE_FILES
        } else {
            base
        };
        let mut pid = libc::clone(child_main, stack.top(), flags, arg);
        // qemu-user refuses CLONE_FILES (EINVAL): the child then gets a
        // copy of the table, which its close_range empties all the same.
        if pid < 0 && shared && super::errno() == libc::EINVAL {
            FILES_SHARED.store(false, Ordering::Relaxed);
            pid = libc::clone(child_main, stack.top(), base, arg);
        }
        // errno at once: the child's failing calls also set it (it shares
        // our thread's TLS), but then clone succeeded and errno is unused.
        let pid = if pid < 0 { -super::errno() } else { pid };
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
        pid
    }
}

/// Reads the status pipe until EOF (exec worked: the write end was close-
/// on-exec) or a full 8-byte report. CLONE_VFORK returned only once the
/// child had exec'd or _exit'ed, so this never waits on a child still
/// running coffeyd's code: at most until the kernel has finished the
/// exec's close-on-exec pass, which closes the write end.
fn read_report(rd: RawFd) -> Option<[u8; 8]> {
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
            return None;
        }
        if n == 0 {
            return None;
        }
        got += usize::try_from(n).unwrap_or(0);
        if got >= report.len() {
            return Some(report);
        }
    }
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

/// The clone entry point: the child, between clone and execve.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildArgs` the suspended parent holds.
    unsafe {
        let a = &*(arg as *const ChildArgs<'_>);
        child(a.p, a.fds)
    }
}

/// Syscall numbers of the 32-bit-id calls (the `*32` ones on the 32-bit
/// architectures that have both).
#[cfg(any(target_arch = "arm", target_arch = "x86"))]
const SYS_IDS: [libc::c_long; 3] = [
    libc::SYS_setgroups32,
    libc::SYS_setgid32,
    libc::SYS_setuid32,
];
#[cfg(not(any(target_arch = "arm", target_arch = "x86")))]
const SYS_IDS: [libc::c_long; 3] = [libc::SYS_setgroups, libc::SYS_setgid, libc::SYS_setuid];

/// # Safety
/// Call only in a child cloned with `CLONE_VM | CLONE_VFORK` by a parent
/// that waits for it (see [`clone_child`]).
///
/// The child shares the daemon's memory until execve, and its descriptor
/// table until its first call (which unshares it). It writes nothing
/// of the daemon's but its own stack, errno (the daemon's thread-local,
/// read by the daemon only when clone itself failed) and the slot's
/// `WATCHDOG_PID=` digits (see below). Credentials and rlimits are set
/// with raw syscalls: libc's setuid/setgid/setgroups (musl's `__synccall`,
/// glibc's setxid broadcast) and older musl's setrlimit take locks and
/// signal other threads, which must not happen in a vfork child. The other
/// calls are thin syscall wrappers.
unsafe fn child(p: &Prepared, fds: Fds) -> ! {
    let mut report = fds.at(REPORT_AT);
    // A table of our own first, holding only the numbers below `above`
    // (see [`Fds`]); on a kernel before 5.9, a copy of the whole table,
    // whose close-on-exec rest execve closes. Until this returns the
    // table is the daemon's: nothing before it opens or closes.
    let unshare = libc::CLOSE_RANGE_UNSHARE as libc::c_long;
    let (above, all) = (libc::c_long::from(fds.above), libc::c_long::from(u32::MAX));
    if libc::syscall(libc::SYS_close_range, above, all, unshare) < 0
        && libc::unshare(libc::CLONE_FILES) < 0
    {
        fail(report, Stage::Fork);
    }
    // Default dispositions first (SIG_IGN survives execve; SIGPIPE is
    // ignored by the daemon), then an empty mask (the daemon blocks the
    // signals it reads through signalfd, and every signal around the
    // clone). The child's handler table is its own copy (no CLONE_SIGHAND):
    // this leaves the daemon's as it is.
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
    // An empty mask, by the raw syscall too (the kernel's 8-byte set),
    // as for the dispositions: no libc bookkeeping in a vfork child.
    let empty = 0u64;
    libc::syscall(
        libc::SYS_rt_sigprocmask,
        libc::SIG_SETMASK,
        &empty as *const u64,
        core::ptr::null_mut::<u64>(),
        8usize,
    );
    if p.cgroup_fd >= 0 && !join_cgroup(fds.at(CGROUP_AT)) {
        fail(report, Stage::Cgroup);
    }
    if libc::setsid() < 0 {
        fail(report, Stage::Setsid);
    }
    let listen_at = p.listen_pid_at.map(|a| a as usize);
    for at in [p.wd_pid_at, listen_at].into_iter().flatten() {
        // SAFETY: the watchdog text is in the region, behind no reference. It is
        // the daemon's memory (CLONE_VM): the digits stay there after the
        // exec, which is harmless, as nothing but this run's envp reads
        // them and every spawn rewrites them first. getpid as a raw
        // syscall: no libc pid cache can answer with the daemon's.
        let buf = core::slice::from_raw_parts_mut(p.region.add(at), p.region_len - at);
        write_decimal(
            buf,
            u64::try_from(libc::syscall(libc::SYS_getpid)).unwrap_or(0),
        );
    }
    let [null, out, err] = [NULL_AT, OUT_AT, ERR_AT].map(|i| fds.at(i));
    if libc::dup2(null, 0) < 0 || libc::dup2(out, 1) < 0 || libc::dup2(err, 2) < 0 {
        fail(report, Stage::Stdio);
    }
    let mut w = fds.at(NOTIFY_AT);
    if p.nfds > 0 {
        (report, w) = place_fds(p, &fds, report, w);
    }
    if let Some((_, n)) = p.notify_fd {
        if n == report {
            // Keep the status pipe: move it out of the way first.
            report = libc::fcntl(report, libc::F_DUPFD_CLOEXEC, fds.above);
        }
        // dup2 onto itself keeps close-on-exec: clear it then.
        let kept = if w == n {
            libc::fcntl(n, libc::F_SETFD, 0)
        } else {
            libc::dup2(w, n)
        };
        if report < 0 || kept < 0 {
            fail(report, Stage::Stdio);
        }
    }
    // Before setuid: raising a hard limit needs the privilege it drops.
    // prlimit64 takes (soft, hard) as two u64 on every architecture.
    // Integer arguments are passed as `long`, which syscall() reads.
    for &(res, soft, hard) in p.rlimits() {
        let lim: [u64; 2] = [soft, hard];
        let (me, res) = (0 as libc::c_long, res as libc::c_long);
        let none = core::ptr::null_mut::<u64>();
        if libc::syscall(libc::SYS_prlimit64, me, res, lim.as_ptr(), none) < 0 {
            fail(report, Stage::Rlimit);
        }
    }
    let [sys_setgroups, sys_setgid, sys_setuid] = SYS_IDS;
    if p.set_groups
        && libc::syscall(
            sys_setgroups,
            p.ngroups as libc::c_long,
            p.groups().as_ptr(),
        ) < 0
    {
        fail(report, Stage::Setgroups);
    }
    if let Some(gid) = p.gid {
        if libc::syscall(sys_setgid, gid as libc::c_long) < 0 {
            fail(report, Stage::Setgid);
        }
    }
    if let Some(uid) = p.uid {
        if libc::syscall(sys_setuid, uid as libc::c_long) < 0 {
            fail(report, Stage::Setuid);
        }
    }
    if libc::chdir(p.cstr_at(p.cwd_off).as_ptr()) < 0 {
        fail(report, Stage::Chdir);
    }
    if let Some(m) = p.umask {
        libc::umask(m);
    }
    let (argv, envp) = p.argv_envp();
    let prog = p.path();
    if prog.to_bytes().contains(&b'/') {
        libc::execve(prog.as_ptr(), argv, envp);
    } else {
        exec_in_path(prog.to_bytes(), argv, envp);
    }
    fail(report, Stage::Exec)
}

/// Puts each of the service's `fds:` at its number, as posix_spawn's
/// file actions must: the sources are at held low numbers that may be
/// targets too, so first every one (the status pipe and the notify pipe
/// among them) moves above the highest target (close-on-exec copies,
/// which execve closes), then each is dup2'd onto its number (which
/// clears close-on-exec there). Returns the status pipe and notify
/// write end at their new numbers.
///
/// # Safety
/// In the vfork child only (see [`child`]).
unsafe fn place_fds(p: &Prepared, fds: &Fds, report: RawFd, notify: RawFd) -> (RawFd, RawFd) {
    let hi = p
        .fd_map()
        .map(|(num, _, _)| libc::c_int::from(num) + 1)
        .max()
        .unwrap_or(3);
    let moved = libc::fcntl(report, libc::F_DUPFD_CLOEXEC, hi);
    if moved < 0 {
        fail(report, Stage::Fds);
    }
    let report = moved;
    let notify = if p.notify_fd.is_some() {
        libc::fcntl(notify, libc::F_DUPFD_CLOEXEC, hi)
    } else {
        notify
    };
    let mut src = [-1 as RawFd; MAX_SERVICE_FDS];
    for (k, s) in src.iter_mut().enumerate().take(usize::from(p.nfds)) {
        *s = libc::fcntl(fds.at(FDS_AT + k), libc::F_DUPFD_CLOEXEC, hi);
        if *s < 0 {
            fail(report, Stage::Fds);
        }
    }
    for ((num, _, _), s) in p.fd_map().zip(src) {
        if libc::dup2(s, libc::c_int::from(num)) < 0 {
            fail(report, Stage::Fds);
        }
    }
    (report, notify)
}

/// execvp(3) for a bare program name, without allocating: each directory
/// of the `PATH` in `envp` (the service's own if its env sets one, else
/// the daemon's, as the fill put it there; [`DEFAULT_PATH`] when none)
/// with `/name` is built in a buffer on this stack and exec'd. Missing,
/// not-a-directory and not-executable candidates go on to the next (an
/// `EACCES` is what is reported when nothing runs, as execvp does); any
/// other error ends the search. Returns only when nothing was exec'd,
/// with errno set.
///
/// # Safety
/// In the vfork child only (see [`child`]); `argv` and `envp` are
/// NULL-terminated arrays of C strings.
#[inline(never)]
unsafe fn exec_in_path(
    name: &[u8],
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
) {
    let mut buf = [0u8; EXEC_PATH_MAX];
    let mut denied = false;
    for dir in path_of(envp).split(|&c| c == b':') {
        // An empty entry is the working directory, as in execvp.
        let dir: &[u8] = if dir.is_empty() { b"." } else { dir };
        let len = dir.len() + 1 + name.len();
        let Some(dst) = buf.get_mut(..len + 1) else {
            continue;
        };
        let (d, rest) = dst.split_at_mut(dir.len());
        d.copy_from_slice(dir);
        if let Some((slash, rest)) = rest.split_first_mut() {
            *slash = b'/';
            let (n, nul) = rest.split_at_mut(name.len());
            n.copy_from_slice(name);
            if let Some(z) = nul.first_mut() {
                *z = 0;
            }
        }
        libc::execve(buf.as_ptr().cast(), argv, envp);
        match super::errno() {
            libc::EACCES => denied = true,
            libc::ENOENT | libc::ENOTDIR => {}
            _ => return,
        }
    }
    nix::errno::Errno::set_raw(if denied { libc::EACCES } else { libc::ENOENT });
}

/// The value of the first `PATH=` in `envp` ([`DEFAULT_PATH`] when none).
///
/// # Safety
/// `envp` is a NULL-terminated array of C strings.
unsafe fn path_of<'a>(envp: *const *const libc::c_char) -> &'a [u8] {
    let mut e = envp;
    while !(*e).is_null() {
        let entry = CStr::from_ptr(*e).to_bytes();
        if let Some(v) = entry.strip_prefix(b"PATH=") {
            return v;
        }
        e = e.add(1);
    }
    DEFAULT_PATH.as_bytes()
}

/// The child's end after a failed stage: `(stage, errno)` on the status
/// pipe, then `_exit`.
///
/// # Safety
/// In the vfork child only (see [`child`]).
unsafe fn fail(report: RawFd, stage: Stage) -> ! {
    let e = super::errno();
    let mut msg = [0u8; 8];
    let (a, b) = msg.split_at_mut(4);
    a.copy_from_slice(&stage.to_u32().to_ne_bytes());
    b.copy_from_slice(&e.to_ne_bytes());
    libc::write(report, msg.as_ptr().cast(), msg.len());
    libc::_exit(127)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, clippy::disallowed_macros)]
mod tests {
    use super::*;
    use crate::daemon::compiled::{decode, encode, services, Compiled};

    /// A slot prepared from `yaml` (one service), writing to `out_w`, and
    /// the base environment its envp points into (keep it alive).
    fn prepared(yaml: &str, tag: &str, out_w: RawFd) -> (Prepared, BaseEnv) {
        prepared_wd(yaml, tag, out_w, None)
    }

    /// Same, with an sd_notify watchdog of `wd` ms.
    fn prepared_wd(yaml: &str, tag: &str, out_w: RawFd, wd: Option<u64>) -> (Prepared, BaseEnv) {
        let dir = std::env::temp_dir().join(format!("cfy-spawn-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.yaml");
        std::fs::write(&path, yaml).unwrap();
        let (cfg, _) = crate::config::load(&path).unwrap();
        let bytes = encode(&cfg);
        let Ok(Compiled::Valid {
            count,
            services: rd,
            ..
        }) = decode(&bytes)
        else {
            panic!("{yaml}")
        };
        let c = services(&rd, count).next().unwrap();
        let base = BaseEnv::capture();
        let mut arena = ExecArena::new(64 * 1024).unwrap();
        let mut p = Prepared::new(out_w, out_w);
        let cmd = core::iter::once(c.binary).chain(c.args.clone());
        p.fill_with(&mut arena, cmd, &c, &base, None, wd, true)
            .unwrap();
        // The arena holds copies (and is never unmapped): `bytes` may go,
        // `base` may not.
        (p, base)
    }

    fn pipe() -> (RawFd, RawFd) {
        let mut fds = [-1; 2];
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        (fds[0], fds[1])
    }

    /// Everything from `fd` until EOF.
    fn read_all(fd: RawFd) -> String {
        use std::io::Read;
        use std::os::fd::FromRawFd;
        let mut s = String::new();
        unsafe { std::fs::File::from_raw_fd(fd) }
            .read_to_string(&mut s)
            .unwrap();
        s
    }

    fn devnull() -> RawFd {
        unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) }
    }

    fn sigpipe_disposition() -> libc::sighandler_t {
        let mut old: libc::sigaction = unsafe { core::mem::zeroed() };
        assert_eq!(
            unsafe { libc::sigaction(libc::SIGPIPE, core::ptr::null(), &mut old) },
            0
        );
        old.sa_sigaction
    }

    fn thread_mask() -> Vec<i32> {
        let mut set: libc::sigset_t = unsafe { core::mem::zeroed() };
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, core::ptr::null(), &mut set) };
        (1..65)
            .filter(|&s| unsafe { libc::sigismember(&set, s) } == 1)
            .collect()
    }

    /// A service that adds nothing to the environment execs with the one
    /// shared envp: its exec region holds no copy of the inherited
    /// environment's pointers (a few hundred bytes per service in a shell's
    /// environment), yet the child gets that environment, minus the keys of
    /// coffeyd's own manager.
    #[test]
    fn a_service_without_env_shares_the_base_envp() {
        let yaml = "services:\n  - name: a\n    binary: /bin/sh\n    \
                    args: ['-c', 'echo \"$PATH\"']\n";
        let (out_r, out_w) = pipe();
        let (p, base) = prepared(yaml, "shared", out_w);
        assert!(base.len() > 0, "the test runs with an environment");
        let own_env = "services:\n  - name: a\n    binary: /bin/sh\n    env: ['X=y']\n";
        let (q, _b) = prepared(own_env, "own", out_w);
        let ptrs = |p: &Prepared| p.nptrs;
        assert_eq!(ptrs(&p), 4, "argv only (sh, -c, the script, NULL), no envp");
        assert!(
            ptrs(&q) > base.len(),
            "with env of its own, its envp is its own"
        );
        assert_eq!(p.argv_envp().1, base.shared.as_ptr());
        let mut stack = Stack::new().unwrap();
        let pid = spawn(&p, devnull(), &mut stack).unwrap();
        unsafe { libc::close(out_w) };
        let mut st = 0;
        assert_eq!(unsafe { libc::waitpid(pid, &mut st, 0) }, pid);
        let path = std::env::var("PATH").unwrap_or_default();
        assert_eq!(read_all(out_r), format!("{path}\n"));
    }

    /// The child runs on the spawn stack, in the daemon's memory (its
    /// `WATCHDOG_PID=` digits are visible to the parent afterwards), with
    /// every setting of a slot applied, and leaves the parent's signal
    /// dispositions and mask as they were. With a fork the stack would
    /// stay untouched and the digits would not reach the parent. The
    /// shell reads its own mask with builtins: a `grep` of it could catch
    /// the shell inside its own fork, with every signal blocked.
    #[test]
    fn child_runs_on_its_own_stack_with_every_setting() {
        let (out_r, out_w) = pipe();
        let (note_r, note_w) = pipe();
        // `$$$$`: the shell's `$$` (coffeyd expands `$$` to `$`).
        let script = "echo pid=$$$$ wd=$WATCHDOG_PID usec=$WATCHDOG_USEC \
            n=$(ulimit -Sn):$(ulimit -Hn) pwd=$(pwd) umask=$(umask) id=$(id -u):$(id -g); \
            while read k v; do [ \"$k\" = SigBlk: ] && printf \"SigBlk:\\t%s\\n\" \"$v\"; done \
            < /proc/$$$$/status; echo ready >&5";
        let yaml = format!(
            "services:\n  - name: a\n    binary: /bin/sh\n    args: ['-c', '{script}']\n    \
             working_dir: /tmp\n    umask: '0027'\n    rlimits: {{nofile: '200:300'}}\n"
        );
        let (mut p, _base) = prepared_wd(&yaml, "all", out_w, Some(1500));
        // Our own ids: setgid/setuid to them work unprivileged too.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        (p.uid, p.gid) = (Some(uid), Some(gid));
        p.notify_fd = Some((note_w, 5));
        let devnull = devnull();
        let mut stack = Stack::new().unwrap();
        // This thread blocks SIGUSR2 (and only that): so must it after.
        let mut usr2: libc::sigset_t = unsafe { core::mem::zeroed() };
        unsafe {
            libc::sigemptyset(&mut usr2);
            libc::sigaddset(&mut usr2, libc::SIGUSR2);
            libc::pthread_sigmask(libc::SIG_SETMASK, &usr2, core::ptr::null_mut());
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
        let pid = spawn(&p, devnull, &mut stack).unwrap();
        assert_eq!(thread_mask(), vec![libc::SIGUSR2]);
        assert_eq!(sigpipe_disposition(), libc::SIG_IGN);
        unsafe {
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &usr2, core::ptr::null_mut());
            libc::close(out_w);
            libc::close(note_w);
            libc::close(devnull);
        }
        let out = read_all(out_r);
        assert_eq!(read_all(note_r), "ready\n");
        let mut st = 0;
        assert_eq!(unsafe { libc::waitpid(pid, &mut st, 0) }, pid);
        assert!(
            libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
            "{st} {out}"
        );
        let want = format!(
            "pid={pid} wd={pid} usec=1500000 n=200:300 pwd=/tmp umask=0027 id={uid}:{gid}\n"
        );
        assert!(out.starts_with(&want), "want {want:?}, got {out:?}");
        assert!(out.contains("SigBlk:\t0000000000000000"), "{out}");
        // CLONE_VM: the child wrote its pid into the slot's own buffer.
        let wd = unsafe { core::slice::from_raw_parts(p.region, p.region_len) };
        let at = p.wd_pid_at.unwrap();
        let digits = CStr::from_bytes_until_nul(&wd[at..]).unwrap();
        assert_eq!(digits.to_str().unwrap(), pid.to_string());
        // It ran on the spawn stack, and within a quarter of it.
        let used = stack.used();
        eprintln!("spawn stack high-water mark: {used} of {CHILD_STACK} bytes");
        assert!(used > 0, "the child did not run on the spawn stack");
        assert!(used < CHILD_STACK / 4, "{used} bytes of stack");
    }

    /// Each failing stage still comes back with its errno, and the failed
    /// child is reaped by spawn itself.
    #[test]
    fn each_failing_stage_reports_its_errno() {
        let (out_r, out_w) = pipe();
        let devnull = devnull();
        let mut stack = Stack::new().unwrap();
        // The argument is a path that does not exist, for the chdir case.
        let yaml =
            "services:\n  - name: a\n    binary: /bin/true\n    args: [/nonexistent-coffey]\n    rlimits: {nofile: '200:300'}\n";
        type Break = fn(&mut Prepared);
        let cases: [(&str, Break, Stage, i32); 3] = [
            (
                "exec",
                |p| {
                    let at = p.path_off;
                    p.region_mut()[at + 1..at + 5].copy_from_slice(b"nope")
                },
                Stage::Exec,
                libc::ENOENT,
            ),
            (
                "chdir",
                |p| {
                    let arg = p.args().next().unwrap().as_ptr() as usize;
                    p.cwd_off = arg - p.region as usize;
                },
                Stage::Chdir,
                libc::ENOENT,
            ),
            (
                // soft above hard: EINVAL, for root too.
                "rlimit",
                |p| {
                    // u32 on glibc, c_int on musl.
                    #[allow(clippy::unnecessary_cast)]
                    let nofile = libc::RLIMIT_NOFILE as u32;
                    p.rlimits_mut()[0] = (nofile, 300, 200);
                },
                Stage::Rlimit,
                libc::EINVAL,
            ),
        ];
        for (tag, break_it, stage, errno) in cases {
            let (mut p, _base) = prepared(yaml, tag, out_w);
            break_it(&mut p);
            let err = spawn(&p, devnull, &mut stack).unwrap_err();
            assert_eq!((err.stage, err.errno), (stage, errno), "{tag}");
            // This thread has no child left: not even a zombie.
            let children = std::fs::read_to_string("/proc/thread-self/children").unwrap();
            assert_eq!(children, "", "{tag}");
        }
        unsafe {
            libc::close(out_w);
            libc::close(devnull);
        }
        // The children wrote nothing: only their reports, on the status pipe.
        assert_eq!(read_all(out_r), "");
        assert!(stack.used() > 0);
    }

    /// The child gets 0-2 and its notify fd, and no other descriptor of
    /// the daemon's: not the held numbers (see [`Fds`]), not even one the
    /// daemon left without close-on-exec (before the table was unshared
    /// with `close_range`, that one leaked into every service). And the
    /// held numbers are /dev/null again afterwards: a child's pipe ends
    /// are not kept open by them (the output reads to EOF below).
    #[test]
    fn child_gets_only_its_stdio_and_notify_fd() {
        let (out_r, out_w) = pipe();
        let (note_r, note_w) = pipe();
        let stray = 700;
        let mut stack = Stack::new().unwrap();
        let held = stack.fds.at;
        // The notify fd at the first held number: dup2 onto itself.
        let n = held[NOTIFY_AT];
        assert_eq!(unsafe { libc::dup2(note_w, stray) }, stray);
        let mut probe = format!("{stray}");
        for fd in held.iter().filter(|&&f| f != n) {
            probe.push_str(&format!(" {fd}"));
        }
        let script = format!(
            "for f in {probe}; do [ -e /proc/$$$$/fd/$f ] && echo leak $f; done; echo ok; echo ready >/proc/$$$$/fd/{n}"
        );
        let yaml =
            format!("services:\n  - name: a\n    binary: /bin/sh\n    args: ['-c', '{script}']\n");
        let (mut p, _base) = prepared(&yaml, "fds", out_w);
        let wn = unsafe { libc::fcntl(note_w, libc::F_DUPFD_CLOEXEC, 0) };
        p.notify_fd = Some((wn, n));
        let devnull = devnull();
        let pid = spawn(&p, devnull, &mut stack).unwrap();
        unsafe {
            libc::close(stray);
            libc::close(out_w);
            libc::close(note_w);
            libc::close(wn);
            libc::close(devnull);
        }
        assert_eq!(read_all(out_r), "ok\n");
        assert_eq!(read_all(note_r), "ready\n");
        let mut st = 0;
        assert_eq!(unsafe { libc::waitpid(pid, &mut st, 0) }, pid);
        assert_eq!(stack.fds.at, held);
    }

    /// A notify fd at the status pipe's held number: the child moves the
    /// status pipe first, so an exec failure is still reported as one.
    #[test]
    fn a_notify_fd_on_the_status_pipe_number_keeps_exec_errors() {
        let (_out_r, out_w) = pipe();
        let (_note_r, note_w) = pipe();
        let mut stack = Stack::new().unwrap();
        let yaml = "services:\n  - name: a\n    binary: /nonexistent-coffey\n";
        let (mut p, _base) = prepared(yaml, "fdrep", out_w);
        p.notify_fd = Some((note_w, stack.fds.at[REPORT_AT]));
        let devnull = devnull();
        let err = spawn(&p, devnull, &mut stack).unwrap_err();
        assert_eq!((err.stage, err.errno), (Stage::Exec, libc::ENOENT));
        unsafe {
            libc::close(out_w);
            libc::close(note_w);
            libc::close(devnull);
        }
    }

    /// A bare name is searched in the envp's PATH by the child, on the
    /// child's stack: found, it runs; found nowhere, the spawn fails as a
    /// missing binary does.
    #[test]
    fn a_bare_name_is_searched_in_path_by_the_child() {
        let (out_r, out_w) = pipe();
        let mut stack = Stack::new().unwrap();
        let yaml = "services:\n  - name: a\n    command: sh -c 'echo \"$$0\"' x\n    \
                    env: [PATH=/nonexistent:/usr/bin:/bin]\n";
        let (p, _base) = prepared(yaml, "bare", out_w);
        let devnull = devnull();
        let pid = spawn(&p, devnull, &mut stack).unwrap();
        unsafe { libc::close(out_w) };
        assert_eq!(read_all(out_r), "x\n");
        let mut st = 0;
        unsafe { libc::waitpid(pid, &mut st, 0) };
        assert!(
            stack.used() < CHILD_STACK / 4,
            "{} bytes of stack",
            stack.used()
        );
        let (_r, out_w) = pipe();
        let yaml = "services:\n  - name: a\n    command: coffey-no-such-prog\n    \
                    env: [PATH=/nonexistent:/usr/bin]\n";
        let (p, _base) = prepared(yaml, "bare-missing", out_w);
        let err = spawn(&p, devnull, &mut stack).unwrap_err();
        assert_eq!((err.stage, err.errno), (Stage::Exec, libc::ENOENT));
        unsafe {
            libc::close(out_w);
            libc::close(devnull);
        }
    }

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
