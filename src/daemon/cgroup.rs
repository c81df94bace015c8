//! cgroup v2 containment: each service runs in a cgroup of its own, so a
//! stop, a restart or a shutdown leaves no process of it behind, whatever
//! it did with process groups and sessions.
//!
//! Where: in system mode coffeyd mounts cgroup2 at /sys/fs/cgroup
//! (`pid1::mount_early`) and owns the tree: services go in
//! `/sys/fs/cgroup/NAME.service`. In supervisor and container mode only in
//! the delegated directory `coffey.cgroup` names (`PATH/NAME.service`);
//! without it coffeyd creates no cgroup. (`.service`: no kernel interface
//! file ends so, and no service name can then collide with one.)
//! Controllers (memory, pids, cpu) are enabled in the base directory's
//! `cgroup.subtree_control`. cgroup v2 lets no process live in a cgroup
//! that hands controllers to its children (except the root), so a
//! delegated coffeyd first moves itself into `PATH/coffeyd`.
//!
//! How a service gets in: the spawned child writes `0` to its cgroup's
//! `cgroup.procs` (through the directory fd, opened at startup) before it
//! execs: a plain write works on every cgroup2 kernel, where clone3's
//! CLONE_INTO_CGROUP needs 5.7 and a raw clone that bypasses libc's fork.
//! The few instructions between fork and that write run in coffeyd's
//! cgroup; the child forks nothing there.
//!
//! What the machines see: nothing new. The shell's `Sys::kill_group` for
//! a run's process group also signals every member of its cgroup (SIGKILL
//! is one write to `cgroup.kill`), and `group_alive` is also true while
//! `cgroup.events` says `populated 1`; the service machine still decides
//! when a run is over. `cgroup.events` is registered with the poller
//! (EPOLLPRI), so the last member leaving re-checks a stopping service
//! even when coffeyd reaps nothing (a member that was not its child).
//!
//! Without cgroup2 (or without `coffey.cgroup` outside system mode) this
//! module does nothing: the process group and the subreaper's escapee
//! tracking are the fallback, and `resources:` are logged as not enforced.
//!
//! Everything after startup works on fds and stack buffers: no heap.

use super::log::{log, Log};
use super::{Services, Shell};
use coffey::sys::{ExitStatus, SIGKILL};
use core::fmt;
use nix::libc;
use std::ffi::CStr;
use std::os::fd::RawFd;

/// cgroup2's `statfs` magic.
const CGROUP2_MAGIC: i64 = 0x6367_7270;
/// Longest base path kept (the config allows 200 bytes).
const BASE_MAX: usize = 208;
/// A service's cgroup directory name: its name (at most 32) + `.service`.
type DirName = heapless::String<48>;

pub use super::resources::{Limits, Size};

/// One slot's cgroup.
pub struct Cg {
    /// The cgroup directory (-1: none) and its `cgroup.events` (polled).
    dir: RawFd,
    events: RawFd,
    name: DirName,
    limits: Limits,
    /// The process group of the slot's current (or last) run: how
    /// `kill_group(pgid)` finds the cgroup. 0: none.
    pgid: i32,
    /// `memory.events` `oom_kill` when the run started.
    oom_base: u64,
    /// The last run's main process was killed by the OOM killer.
    pub oom_killed: bool,
}

impl Cg {
    const NONE: Cg = Cg {
        dir: -1,
        events: -1,
        name: DirName::new(),
        limits: Limits {
            memory_max: 0,
            pids_max: 0,
            cpu_weight: 0,
        },
        pgid: 0,
        oom_base: 0,
        oom_killed: false,
    };
}

/// Which controllers the services' cgroups have.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
struct Controllers {
    memory: bool,
    pids: bool,
    cpu: bool,
}

pub struct Cgroups {
    /// The directory the services' cgroups are made in; -1: no cgroups.
    base: RawFd,
    path: heapless::String<BASE_MAX>,
    ctl: Controllers,
    slots: Box<[Cg]>,
}

impl Cgroups {
    /// No cgroups yet (`init` decides); startup only.
    pub fn new(slots: usize) -> Cgroups {
        Cgroups {
            base: -1,
            path: heapless::String::new(),
            ctl: Controllers::default(),
            slots: (0..slots).map(|_| Cg::NONE).collect(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.base >= 0
    }

    /// The directory fd the child of slot `i` joins (-1: none).
    pub fn join_fd(&self, i: usize) -> RawFd {
        self.slots.get(i).map_or(-1, |c| c.dir)
    }

    /// The slot whose run is process group `pgid`, if it has a cgroup.
    fn find(&self, pgid: i32) -> Option<&Cg> {
        if pgid <= 1 {
            return None;
        }
        self.slots.iter().find(|c| c.pgid == pgid && c.dir >= 0)
    }

    /// Run `pgid` of slot `i` started: it is the one `kill_group(pgid)`
    /// means (a pid reused as another slot's group id is taken from
    /// there), and OOM kills count from now.
    pub fn spawned(&mut self, i: usize, pgid: i32) {
        for c in self.slots.iter_mut().filter(|c| c.pgid == pgid) {
            c.pgid = 0;
        }
        if let Some(c) = self.slots.get_mut(i) {
            c.pgid = pgid;
            c.oom_killed = false;
            c.oom_base = oom_kills(c.dir).unwrap_or(0);
        }
    }

    /// `sig` to every member of the cgroup of run `pgid`; SIGKILL is a
    /// write to `cgroup.kill` (atomic against forks in flight; kernels
    /// before 5.14 lack it, then each member is signalled). Returns
    /// whether the run has a cgroup.
    pub fn kill(&self, pgid: i32, sig: i32) -> bool {
        let Some(c) = self.find(pgid) else {
            return false;
        };
        if sig == SIGKILL && write_at(c.dir, c"cgroup.kill", b"1").is_ok() {
            return true;
        }
        each_proc(c.dir, |pid| {
            // SAFETY: plain syscall; ESRCH (gone) is fine.
            unsafe { libc::kill(pid, sig) };
        });
        true
    }

    /// Whether the cgroup of run `pgid` has live members (None: no cgroup).
    pub fn alive(&self, pgid: i32) -> Option<bool> {
        self.find(pgid).map(|c| populated(c.events, c.dir))
    }

    /// Live processes in the cgroup of run `pgid` (None: no cgroup).
    pub fn members(&self, pgid: i32) -> Option<u32> {
        let c = self.find(pgid)?;
        let mut n = 0u32;
        each_proc(c.dir, |_| n = n.saturating_add(1));
        Some(n)
    }

    /// Processes in slot `i`'s cgroup (None: no cgroup).
    pub fn procs(&self, i: usize) -> Option<u32> {
        let c = self.slots.get(i).filter(|c| c.dir >= 0)?;
        let mut n = 0u32;
        each_proc(c.dir, |_| n = n.saturating_add(1));
        Some(n)
    }

    /// OOM kills in slot `i`'s cgroup since it was made (None: no memory
    /// controller).
    pub fn oom_kills(&self, i: usize) -> Option<u64> {
        let c = self
            .slots
            .get(i)
            .filter(|c| c.dir >= 0 && self.ctl.memory)?;
        oom_kills(c.dir)
    }

    /// The cgroup directory of slot `i`, for status: `base/NAME.service`.
    pub fn path_of(&self, i: usize) -> Option<CgPath<'_>> {
        let c = self.slots.get(i).filter(|c| c.dir >= 0)?;
        Some(CgPath(&self.path, &c.name))
    }

    pub fn limits(&self, i: usize) -> Limits {
        self.slots.get(i).map_or(Limits::default(), |c| c.limits)
    }
}

/// `base/NAME.service`.
pub struct CgPath<'a>(&'a str, &'a str);

impl fmt::Display for CgPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0.trim_end_matches('/'), self.1)
    }
}

/// "killed by the OOM killer (memory_max 64MiB)": why a main process died
/// of SIGKILL while its cgroup's `oom_kill` count went up.
pub struct OomText(pub Limits);

impl fmt::Display for OomText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("killed by the OOM killer")?;
        if self.0.memory_max > 0 {
            write!(f, " (memory_max {})", Size(self.0.memory_max))?;
        }
        Ok(())
    }
}

/// The reason text for slot `i`'s last exit when the OOM killer did it.
pub fn oom_of(cg: &Cgroups, i: usize, status: ExitStatus) -> Option<OomText> {
    let c = cg.slots.get(i)?;
    (c.oom_killed && status == ExitStatus::Signal(SIGKILL)).then_some(OomText(c.limits))
}

/// The `status SERVICE` lines of slot `i`: its cgroup, how many processes
/// it has (from `cgroup.procs`, or the process group `pgid` without a
/// cgroup), its resources and OOM kills.
pub fn status_details<D>(cg: &Cgroups, i: usize, pgid: Option<i32>, detail: &mut D)
where
    D: FnMut(&str, &mut dyn FnMut(&mut super::log::LineBuf)),
{
    use core::fmt::Write as _;
    let path = cg.path_of(i);
    if let Some(p) = &path {
        detail("cgroup", &mut |t| {
            let _ = write!(t, "{p}");
        });
    }
    match (cg.procs(i), pgid) {
        (Some(n), _) => detail("processes", &mut |t| {
            let _ = write!(t, "{n}");
        }),
        (None, Some(g)) => {
            let n = super::group::live_members(g).unwrap_or(1);
            detail("processes", &mut |t| {
                let _ = write!(t, "{n} (in process group {g}; no cgroup)");
            });
        }
        (None, None) => {}
    }
    let l = cg.limits(i);
    if l.is_set() {
        let enforced = path.is_some();
        detail("resources", &mut |t| {
            let _ = write!(t, "{l}");
            if !enforced {
                let _ = t.write_str(" (not enforced: no cgroup)");
            }
        });
    }
    if let Some(n) = cg.oom_kills(i).filter(|&n| n > 0) {
        detail("oom_kills", &mut |t| {
            let _ = write!(t, "{n}");
        });
    }
}

// ---- pure parsing (unit-tested on the host)

/// The value of `key` in a flat-keyed file (`cgroup.events`,
/// `memory.events`: `key value` lines).
pub fn field(text: &[u8], key: &[u8]) -> Option<u64> {
    text.split(|&b| b == b'\n').find_map(|line| {
        let mut w = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
        if w.next()? != key {
            return None;
        }
        core::str::from_utf8(w.next()?).ok()?.parse().ok()
    })
}

/// Whether `word` is one of the space-separated words of `text`
/// (`cgroup.controllers`).
pub fn has_word(text: &[u8], word: &[u8]) -> bool {
    text.split(|&b| b == b' ' || b == b'\n').any(|w| w == word)
}

/// Numbers of a newline-separated list read in chunks (a number may span
/// two reads): feed each chunk, then `end`.
#[derive(Default)]
pub struct Numbers {
    v: u64,
    digits: u8,
}

impl Numbers {
    pub fn feed(&mut self, chunk: &[u8], f: &mut impl FnMut(i32)) {
        for &b in chunk {
            if b.is_ascii_digit() {
                self.v = self
                    .v
                    .saturating_mul(10)
                    .saturating_add(u64::from(b - b'0'));
                self.digits = self.digits.saturating_add(1);
            } else {
                self.end(f);
            }
        }
    }
    pub fn end(&mut self, f: &mut impl FnMut(i32)) {
        if self.digits > 0 {
            if let Ok(pid) = i32::try_from(self.v) {
                f(pid);
            }
        }
        *self = Numbers::default();
    }
}

/// `NAME.service`.
pub fn dir_name(name: &str) -> DirName {
    let mut d = DirName::new();
    let _ = d.push_str(name);
    let _ = d.push_str(".service");
    d
}

/// Decimal digits of `v` into `buf`, for a write: the written part.
fn decimal(v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    let mut v = v;
    loop {
        i -= 1;
        if let Some(d) = buf.get_mut(i) {
            *d = b'0' + (v % 10) as u8;
        }
        v /= 10;
        if v == 0 || i == 0 {
            break;
        }
    }
    buf.get(i..).unwrap_or(&[])
}

// ---- file access through directory fds

/// Opens `name` in directory `dir`.
fn open_at(dir: RawFd, name: &CStr, flags: i32) -> Result<RawFd, i32> {
    if dir < 0 {
        return Err(libc::EBADF);
    }
    // SAFETY: NUL-terminated name relative to an open directory fd.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        Err(super::errno())
    } else {
        Ok(fd)
    }
}

/// Writes `data` to `dir/name` in one write (cgroup files take one value
/// per write).
fn write_at(dir: RawFd, name: &CStr, data: &[u8]) -> Result<(), i32> {
    let fd = open_at(dir, name, libc::O_WRONLY)?;
    // SAFETY: writes our buffer to the fd opened above, then closes it.
    let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    let e = super::errno();
    super::close_fd(fd);
    if n < 0 {
        Err(e)
    } else {
        Ok(())
    }
}

/// Reads `fd` from offset 0 into `buf` (one read: these files are small).
fn read_fd(fd: RawFd, buf: &mut [u8]) -> Option<usize> {
    // SAFETY: reads into our buffer.
    let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    usize::try_from(n).ok()
}

fn read_at(dir: RawFd, name: &CStr, buf: &mut [u8]) -> Option<usize> {
    let fd = open_at(dir, name, libc::O_RDONLY).ok()?;
    let n = read_fd(fd, buf);
    super::close_fd(fd);
    n
}

/// `populated` of `cgroup.events` (through the polled fd: reading it also
/// re-arms the poll notification). Unreadable counts as populated, so a
/// stop waits for the process group and escapees instead of ending early.
fn populated(events: RawFd, dir: RawFd) -> bool {
    let mut buf = [0u8; 128];
    let n = if events >= 0 {
        read_fd(events, &mut buf)
    } else {
        read_at(dir, c"cgroup.events", &mut buf)
    };
    let text = n.and_then(|n| buf.get(..n)).unwrap_or(&[]);
    field(text, b"populated") != Some(0)
}

fn oom_kills(dir: RawFd) -> Option<u64> {
    let mut buf = [0u8; 256];
    let n = read_at(dir, c"memory.events", &mut buf)?;
    field(buf.get(..n)?, b"oom_kill")
}

/// Calls `f(pid)` for each process in `dir/cgroup.procs`.
fn each_proc(dir: RawFd, mut f: impl FnMut(i32)) {
    let Ok(fd) = open_at(dir, c"cgroup.procs", libc::O_RDONLY) else {
        return;
    };
    let mut buf = [0u8; 1024];
    let mut nums = Numbers::default();
    loop {
        // SAFETY: reads into our buffer.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        match usize::try_from(n) {
            Ok(0) | Err(_) => break,
            Ok(n) => nums.feed(buf.get(..n).unwrap_or(&[]), &mut f),
        }
    }
    nums.end(&mut f);
    super::close_fd(fd);
}

// ---- setup (startup; the slot part also on reload, allocation-free)

/// Whether `path` is a cgroup2 directory.
fn is_cgroup2(path: &CStr) -> bool {
    // SAFETY: zeroed statfs is a valid out buffer; NUL-terminated path.
    let mut st: libc::statfs = unsafe { core::mem::zeroed() };
    // SAFETY: see above.
    let ok = unsafe { libc::statfs(path.as_ptr(), &mut st) } == 0;
    #[allow(clippy::unnecessary_cast)] // f_type's type differs by libc
    let magic = st.f_type as i64;
    ok && magic == CGROUP2_MAGIC
}

/// Enables the controllers coffeyd uses in `dir/cgroup.subtree_control`,
/// each on its own (one missing controller must not cost the others).
/// Call it only on a cgroup without processes (or the root): there, the
/// threaded controllers (pids, cpu) would still go on, and make `dir` a
/// thread root whose children no process can join (EOPNOTSUPP).
fn enable_controllers(dir: RawFd) -> Controllers {
    let mut avail = [0u8; 256];
    let n = read_at(dir, c"cgroup.controllers", &mut avail).unwrap_or(0);
    let avail = avail.get(..n).unwrap_or(&[]);
    let mut on = Controllers::default();
    for (word, cmd, flag) in [
        (&b"memory"[..], &b"+memory"[..], &mut on.memory),
        (b"pids", b"+pids", &mut on.pids),
        (b"cpu", b"+cpu", &mut on.cpu),
    ] {
        if !has_word(avail, word) {
            continue;
        }
        *flag = write_at(dir, c"cgroup.subtree_control", cmd).is_ok();
    }
    on
}

/// Whether any process is in the cgroup `dir` itself.
fn has_procs(dir: RawFd) -> bool {
    let mut any = false;
    each_proc(dir, |_| any = true);
    any
}

/// Startup: picks the base directory (system mode: /sys/fs/cgroup;
/// otherwise `coffey.cgroup`, or none), enables controllers and sets up
/// the cgroups of the configured services.
#[allow(clippy::disallowed_methods)] // startup: CString
pub fn init(
    svc: &mut Services,
    log: &mut Log,
    registry: &mio::Registry,
    configured: Option<&std::path::Path>,
    system: bool,
) {
    use std::os::unix::ffi::OsStrExt;
    let path: &[u8] = match (system, configured) {
        (_, Some(p)) => p.as_os_str().as_bytes(),
        (true, None) => b"/sys/fs/cgroup",
        (false, None) => {
            not_enforced(
                svc,
                log,
                "no coffey.cgroup (coffeyd creates cgroups only there)",
            );
            return;
        }
    };
    let Ok(cpath) = std::ffi::CString::new(path) else {
        return;
    };
    let shown = core::str::from_utf8(path).unwrap_or("?");
    if !is_cgroup2(&cpath) {
        log!(
            log,
            "cgroups: {shown} is not a cgroup2 directory; services are contained by process group only"
        );
        not_enforced(svc, log, "no cgroup2");
        return;
    }
    // SAFETY: NUL-terminated path.
    let base = unsafe {
        libc::open(
            cpath.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if base < 0 {
        let e = nix::errno::Errno::last();
        log!(log, "cgroups: {shown}: {}; not used", e.desc());
        return;
    }
    // The root cgroup may hold processes and hand out controllers; any
    // other may not. A delegated coffeyd usually starts in its base:
    // it moves into a leaf of its own first.
    if !system && has_procs(base) {
        move_self(base);
    }
    let ctl = if !system && has_procs(base) {
        log!(
            log,
            "cgroups: other processes are in {shown}: its controllers stay off (resources are not enforced)"
        );
        Controllers::default()
    } else {
        enable_controllers(base)
    };
    svc.cg.base = base;
    let _ = svc.cg.path.push_str(shown);
    svc.cg.ctl = ctl;
    log!(
        log,
        "cgroups: services in {shown}/NAME.service (controllers:{}{}{})",
        if ctl.memory { " memory" } else { "" },
        if ctl.pids { " pids" } else { "" },
        if ctl.cpu { " cpu" } else { "" }
    );
    for i in 0..svc.cg.slots.len() {
        setup_slot(svc, log, registry, i);
    }
}

/// `base/coffeyd`, and coffeyd in it.
fn move_self(base: RawFd) {
    // SAFETY: NUL-terminated name relative to an open directory fd.
    unsafe { libc::mkdirat(base, c"coffeyd".as_ptr(), 0o755) };
    if let Ok(d) = open_at(base, c"coffeyd", libc::O_RDONLY | libc::O_DIRECTORY) {
        let _ = write_at(d, c"cgroup.procs", b"0");
        super::close_fd(d);
    }
}

/// Without cgroups: each service with `resources:` gets one log line.
fn not_enforced(svc: &Services, log: &mut Log, why: &str) {
    for i in 0..svc.cg.slots.len() {
        let Some(c) = svc.cg.slots.get(i).filter(|c| c.limits.is_set()) else {
            continue;
        };
        let l = c.limits;
        let name = svc.slots.get(i).map_or("?", |s| s.name.as_str());
        log!(
            log,
            "{name}: resources not enforced ({l}): {why}; stop uses the process group and coffeyd's subreaper tracking"
        );
    }
}

/// Slot `i` now runs service `name` with `limits` (startup and reload).
pub fn configure(
    svc: &mut Services,
    log: &mut Log,
    registry: &mio::Registry,
    i: usize,
    name: &str,
    limits: Limits,
) {
    let want = dir_name(name);
    let Some(c) = svc.cg.slots.get_mut(i) else {
        return;
    };
    let renamed = c.name != want;
    c.limits = limits;
    if renamed {
        release(&mut svc.cg, i);
        if let Some(c) = svc.cg.slots.get_mut(i) {
            c.name = want;
        }
    }
    if svc.cg.enabled() {
        setup_slot(svc, log, registry, i);
    }
}

/// Makes (or reopens) slot `i`'s cgroup and writes its limits.
fn setup_slot(svc: &mut Services, log: &mut Log, registry: &mio::Registry, i: usize) {
    let base = svc.cg.base;
    let ctl = svc.cg.ctl;
    let Some(c) = svc.cg.slots.get_mut(i).filter(|c| !c.name.is_empty()) else {
        return;
    };
    if c.dir < 0 {
        let mut z = [0u8; 64];
        let Some(name) = cstr(&c.name, &mut z) else {
            return;
        };
        // SAFETY: NUL-terminated name relative to an open directory fd;
        // EEXIST (a previous coffeyd, or reexec) is fine.
        unsafe { libc::mkdirat(base, name.as_ptr(), 0o755) };
        match open_at(base, name, libc::O_RDONLY | libc::O_DIRECTORY) {
            Ok(d) => c.dir = d,
            Err(e) => {
                let n = c.name.clone();
                let why = nix::errno::Errno::from_raw(e).desc();
                log!(log, "cgroups: cannot create {n}: {why}; it runs without");
                return;
            }
        }
        c.events = open_at(c.dir, c"cgroup.events", libc::O_RDONLY).unwrap_or(-1);
        let ev = c.events;
        if ev >= 0 {
            let _ = registry.register(
                &mut mio::unix::SourceFd(&ev),
                super::token::Token::Cgroup(i).encode(),
                mio::Interest::PRIORITY,
            );
        }
    }
    let Some(c) = svc.cg.slots.get(i) else {
        return;
    };
    let (dir, l) = (c.dir, c.limits);
    let mut missing = false;
    let mut put = |on: bool, file: &CStr, v: u64, unset: &[u8]| {
        let mut d = [0u8; 20];
        let text = if v > 0 { decimal(v, &mut d) } else { unset };
        let ok = on && write_at(dir, file, text).is_ok();
        missing |= v > 0 && !ok;
    };
    put(ctl.memory, c"memory.max", l.memory_max, b"max");
    put(ctl.pids, c"pids.max", u64::from(l.pids_max), b"max");
    put(ctl.cpu, c"cpu.weight", u64::from(l.cpu_weight), b"100");
    if missing {
        let name = svc.slots.get(i).map_or("?", |s| s.name.as_str());
        log!(
            log,
            "{name}: resources not all enforced ({l}): a controller is not available in {}",
            svc.cg.path
        );
    }
}

/// `name` with a NUL, in `buf`.
fn cstr<'b>(name: &str, buf: &'b mut [u8; 64]) -> Option<&'b CStr> {
    let b = name.as_bytes();
    buf.get_mut(..b.len())?.copy_from_slice(b);
    *buf.get_mut(b.len())? = 0;
    CStr::from_bytes_until_nul(buf.get(..=b.len())?).ok()
}

/// Closes slot `i`'s cgroup and removes it if it is empty (a retired or
/// renamed slot, or the end of the daemon). rmdir fails on a populated
/// cgroup, which then stays for the operator.
pub fn release(cg: &mut Cgroups, i: usize) {
    let base = cg.base;
    let Some(c) = cg.slots.get_mut(i) else {
        return;
    };
    if c.dir < 0 {
        return;
    }
    super::close_fd(c.events);
    super::close_fd(c.dir);
    (c.events, c.dir, c.pgid) = (-1, -1, 0);
    let mut z = [0u8; 64];
    if let Some(name) = cstr(&c.name, &mut z) {
        // SAFETY: NUL-terminated name relative to an open directory fd.
        unsafe { libc::unlinkat(base, name.as_ptr(), libc::AT_REMOVEDIR) };
    }
}

/// The end of the daemon: every service's cgroup is empty; remove them.
pub fn release_all(cg: &mut Cgroups) {
    for i in 0..cg.slots.len() {
        release(cg, i);
    }
}

/// Slot `i`'s main process was reaped with `status`: was it the OOM
/// killer? (`oom_kill` in `memory.events` is counted before the victim
/// gets its SIGKILL, so it is up to date at the reap.)
pub fn main_exited(cg: &mut Cgroups, i: usize, status: ExitStatus) {
    let mem = cg.ctl.memory;
    if let Some(c) = cg.slots.get_mut(i).filter(|c| c.dir >= 0 && mem) {
        let now = oom_kills(c.dir).unwrap_or(0);
        c.oom_killed = status == ExitStatus::Signal(SIGKILL) && now > c.oom_base;
        c.oom_base = now;
    }
}

/// `cgroup.events` of slot `i` changed: when its cgroup emptied, a
/// stopping service may be done.
pub fn on_ready(sup: &mut coffey::supervisor::Supervisor<'_>, shell: &mut Shell, i: usize) {
    let Some(c) = shell.svc.cg.slots.get(i).filter(|c| c.events >= 0) else {
        return;
    };
    if !populated(c.events, c.dir) {
        sup.group_changed(i, super::clock::now(), shell);
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, clippy::disallowed_macros)]
mod tests {
    use super::*;

    #[test]
    fn reads_flat_keyed_files() {
        let events = b"populated 1\nfrozen 0\n";
        assert_eq!(field(events, b"populated"), Some(1));
        assert_eq!(field(events, b"frozen"), Some(0));
        assert_eq!(field(events, b"pop"), None);
        let mem = b"low 0\nhigh 0\nmax 57\noom 2\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(field(mem, b"oom_kill"), Some(2));
        assert_eq!(field(mem, b"oom"), Some(2));
        assert_eq!(field(b"", b"oom_kill"), None);
        assert_eq!(field(b"oom_kill x\n", b"oom_kill"), None);
        assert!(has_word(b"cpuset cpu io memory pids\n", b"pids"));
        assert!(has_word(b"cpuset cpu io memory pids\n", b"cpu"));
        assert!(!has_word(b"cpuset io memory\n", b"cpu"));
    }

    #[test]
    fn numbers_span_chunks() {
        let mut got = Vec::new();
        let mut n = Numbers::default();
        let mut f = |p| got.push(p);
        n.feed(b"12\n3", &mut f);
        n.feed(b"45\n6", &mut f);
        n.end(&mut f);
        n.feed(b"99999999999\n7\n", &mut f);
        n.end(&mut f);
        assert_eq!(got, [12, 345, 6, 7]);
    }

    #[test]
    fn names_sizes_and_texts() {
        assert_eq!(dir_name("web").as_str(), "web.service");
        let long = "a".repeat(32);
        assert_eq!(dir_name(&long).len(), 40);
        let mut b = [0u8; 20];
        assert_eq!(decimal(0, &mut b), b"0");
        assert_eq!(decimal(67_108_864, &mut b), b"67108864");
        assert_eq!(decimal(u64::MAX, &mut b), b"18446744073709551615");
        assert_eq!(Size(64 << 20).to_string(), "64MiB");
        assert_eq!(Size(1 << 30).to_string(), "1GiB");
        assert_eq!(Size(1536 << 10).to_string(), "1536KiB");
        assert_eq!(Size(1_000_000).to_string(), "1000000");
        let l = Limits {
            memory_max: 64 << 20,
            pids_max: 100,
            cpu_weight: 0,
        };
        assert_eq!(l.to_string(), "memory_max 64MiB, pids_max 100");
        assert_eq!(
            OomText(l).to_string(),
            "killed by the OOM killer (memory_max 64MiB)"
        );
        assert_eq!(
            CgPath("/sys/fs/cgroup/", "web.service").to_string(),
            "/sys/fs/cgroup/web.service"
        );
        let mut z = [0u8; 64];
        assert_eq!(cstr("web.service", &mut z), Some(c"web.service"));
        assert_eq!(cstr(&"x".repeat(64), &mut z), None);
    }

    /// `resources:` reach the slot through the compiled config (startup
    /// and reload share it).
    #[test]
    fn limits_survive_the_compiled_config() {
        use super::super::compiled::{decode, encode, services, Compiled};
        let dir = std::env::temp_dir().join(format!("cfy-cg-limits-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.yaml");
        std::fs::write(
            &p,
            "services:\n  - name: a\n    binary: /bin/sh\n    resources: {memory_max: 64MiB, pids_max: 100, cpu_weight: 7}\n  - name: b\n    binary: /bin/sh\n",
        )
        .unwrap();
        let (cfg, _) = crate::config::load(&p).unwrap();
        let bytes = encode(&cfg);
        let Ok(Compiled::Valid {
            count,
            services: rd,
            ..
        }) = decode(&bytes)
        else {
            panic!("decode")
        };
        let v: Vec<_> = services(&rd, count).map(|c| c.limits).collect();
        assert_eq!(
            v,
            [
                Limits {
                    memory_max: 64 << 20,
                    pids_max: 100,
                    cpu_weight: 7
                },
                Limits::default()
            ]
        );
        for k in 0..bytes.len() {
            assert!(decode(&bytes[..k]).is_err(), "truncated at {k}");
        }
    }

    #[test]
    fn without_cgroups_nothing_is_found_or_killed() {
        let mut cg = Cgroups::new(4);
        cg.spawned(1, 4242);
        assert!(!cg.enabled());
        assert!(!cg.kill(4242, SIGKILL));
        assert_eq!(cg.alive(4242), None);
        assert_eq!(cg.procs(1), None);
        assert_eq!(cg.join_fd(1), -1);
        // A pid reused as another slot's group id moves there.
        cg.spawned(2, 4242);
        assert_eq!(cg.slots.get(1).map(|c| c.pgid), Some(0));
        assert_eq!(cg.slots.get(2).map(|c| c.pgid), Some(4242));
    }
}
