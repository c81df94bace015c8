//! Startup: turns the validated config into preallocated tables.
//!
//! This is the last code that may allocate. Every table is sized here from
//! the config: service slots (`limits.services`, with spare slots for
//! reload), pipes, ring buffers, line buffers, argv/envp arrays. After
//! [`build`] returns, the loop seals the allocator.
#![allow(clippy::disallowed_macros, clippy::disallowed_methods)]

use super::control::{Client, Control, Guard};
use super::globals::Globals;
use super::log::{log, Log};
use super::reload::Reloader;
use super::slab::cells;
use super::spawn::{BaseEnv, Prepared};
use super::token::Token;
use super::{release_paths, Services, Shell, Slot};
use crate::config::Config;
use coffey::control::conn::Conn;
use coffey::limits::CONN_OUT_BUF;
use coffey::limits::{fd_budget, READ_CHUNK};
use coffey::logring::{LineBuf, LogRing};
use coffey::service::{Policy, Service};
use coffey::time::Instant;
use mio::unix::SourceFd;
use mio::{Interest, Poll};
use nix::libc;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::os::fd::AsRawFd;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

/// A pipe whose read end is non-blocking; both ends close-on-exec.
fn pipe() -> Result<(RawFd, RawFd), String> {
    let mut fds = [-1; 2];
    // SAFETY: valid out array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    let [r, w] = fds;
    // SAFETY: r is ours. The write end stays blocking: it is the child's
    // stdout, and O_NONBLOCK lives on the shared open file description.
    unsafe {
        let fl = libc::fcntl(r, libc::F_GETFL);
        libc::fcntl(r, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
    Ok((r, w))
}

/// Raises RLIMIT_NOFILE's soft limit to what the tables need, if allowed.
fn raise_nofile(need: usize, log: &mut Log) {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return;
    }
    let need = need as libc::rlim_t;
    if rl.rlim_cur >= need {
        return;
    }
    let new = libc::rlimit {
        rlim_cur: need.min(rl.rlim_max),
        rlim_max: rl.rlim_max,
    };
    // SAFETY: valid pointer.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) };
    if new.rlim_cur < need {
        log!(
            log,
            "warning: RLIMIT_NOFILE hard limit {} is below the {} descriptors the config needs",
            rl.rlim_max,
            need
        );
    }
}

/// `close_range(2)` flag: mark the range close-on-exec, close nothing.
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

/// Marks every descriptor >= 3 that coffeyd inherited close-on-exec, so
/// a pipe or socket its parent leaked never reaches a service (which gets
/// 0, 1, 2 and the descriptors its config names). The daemon keeps using
/// them (a `reexec` hand-over relies on that). Runs first, before the
/// daemon opens anything of its own.
pub fn cloexec_inherited() {
    // SAFETY: plain syscall on our own fd table; ENOSYS/EINVAL on kernels
    // before 5.11 leads to the fallback.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return;
    }
    cloexec_each();
}

/// The fallback: every fd up to the soft limit (a few thousand fcntl
/// calls at most, once, at startup; /proc may not be mounted yet).
fn cloexec_each() {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-pointer.
    let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } == 0 {
        rl.rlim_cur.min(1 << 20) as i32
    } else {
        1024
    };
    for fd in 3..max {
        // SAFETY: F_GETFD/F_SETFD on any int is harmless (EBADF if closed).
        unsafe {
            let fl = libc::fcntl(fd, libc::F_GETFD);
            if fl >= 0 && fl & libc::FD_CLOEXEC == 0 {
                libc::fcntl(fd, libc::F_SETFD, fl | libc::FD_CLOEXEC);
            }
        }
    }
}

/// Makes sure fds 0, 1, 2 exist, so a pipe never lands on them.
fn ensure_stdio() {
    for fd in 0..3 {
        // SAFETY: F_GETFD on any int is harmless.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            // SAFETY: constant NUL-terminated path.
            unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        }
    }
}

/// The daemon's own log file, opened now so that a failure is said at
/// once, and whether it opened (if not, the console is forced on; the file
/// is retried as lines come, e.g. once a late filesystem is mounted).
fn daemon_log(cfg: &Globals) -> (Option<super::logfile::LogFile>, bool) {
    use std::os::unix::ffi::OsStrExt;
    let Some(p) = &cfg.log.path else {
        return (None, true);
    };
    if let Some(dir) = p.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let l = &cfg.log;
    let Some(mut f) = super::logfile::LogFile::new(p.as_os_str().as_bytes(), l.max_size, l.keep)
    else {
        super::log::stderr_line(format_args!(
            "coffeyd: log path {} is too long; logging to console",
            p.display()
        ));
        return (None, false);
    };
    match f.open_at_start(super::clock::now().millis()) {
        Ok(()) => (Some(f), true),
        Err(e) => {
            super::log::stderr_line(format_args!(
                "coffeyd: cannot open log {}: {}; logging to console",
                p.display(),
                std::io::Error::from_raw_os_error(e)
            ));
            (Some(f), false)
        }
    }
}

/// Builds the shell and the core table from the compiled config (the
/// `__compile` child's output). The core table has `limits.services`
/// slots; the first `cfg.services` are in use.
pub fn build(
    cfg: &Globals,
    compiled: &[u8],
    listen_fd: RawFd,
    registry: mio::Registry,
) -> Result<(Shell, Vec<Service>, Vec<super::reexec::Adopted>), String> {
    ensure_stdio();
    // Before any pipe: the spawn descriptors take the lowest numbers (see
    // `spawn::Stack`).
    let mut stack = super::spawn::Stack::with_fds(most_fds(compiled))?;
    let (log_file, opened) = daemon_log(cfg);
    let mut log = Log::new(cfg.log.console || !opened, log_file);
    let event_log = cfg
        .events
        .as_ref()
        .and_then(|e| super::eventlog::EventLog::open(e, &mut log));
    let slots = (cfg.limits.services as usize).max(cfg.services);
    let fds = fd_budget(slots, cfg.limits.clients as usize) + 16 + table_need(compiled);
    raise_nofile(fds, &mut log);
    stack.set_table(fd_table(compiled, &mut log));

    let devnull = {
        // SAFETY: constant NUL-terminated path.
        let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(format!("/dev/null: {}", std::io::Error::last_os_error()));
        }
        fd
    };
    if let Some(dir) = &cfg.service_logs.dir {
        if let Err(e) = std::fs::create_dir_all(dir) {
            log!(
                log,
                "warning: cannot create service log dir {}: {e}",
                dir.display()
            );
        }
    }

    let adopted = super::reexec::take_handoff();
    let base = BaseEnv::capture();
    let base_len = base.len();
    let mut lines = zeroed_lines(slots)?.iter_mut();
    let mut probes = probes(slots)?.into_iter();
    let mut specs = super::compiled::decode(compiled)
        .ok()
        .and_then(|c| match c {
            super::compiled::Compiled::Valid {
                count, services, ..
            } => Some(super::compiled::services(&services, count)),
            super::compiled::Compiled::Invalid(_) => None,
        })
        .ok_or("internal error: cannot decode the compiled config")?;
    // The rarely used parts of each slot, in zeroed tables.
    let mut files = cells(slots)?;
    let mut texts = cells(slots)?;
    let mut preps = cells(2 * slots)?;
    let mut startups = cells(slots)?;
    let mut shells = Vec::with_capacity(slots);
    let mut core = Vec::with_capacity(slots);
    for i in 0..slots {
        // The services come in slot order: the i-th one's, if any.
        let spec = specs.next();
        // After reexec, a service keeps its pipes (output is not lost).
        let adopt = spec
            .as_ref()
            .and_then(|s| adopted.iter().find(|a| a.name == s.name));
        let handed = adopt.map(|a| a.fds);
        // A logger keeps its pipe too (configure closes it if the new
        // config has no service logging to it).
        let [in_r, in_w] = adopt.and_then(|a| a.logger).unwrap_or([-1, -1]);
        // Inherited, ours now.
        super::set_cloexec([in_r, in_w], true);
        let ((out_r, out_w), (err_r, err_w)) = match handed {
            Some([a, b, c, d]) => {
                super::set_cloexec([a, b, c, d], true);
                ((a, c), (b, d))
            }
            None => (pipe()?, pipe()?),
        };
        let buffer = spec.as_ref().map_or(cfg.service_logs.buffer, |s| s.buffer) as usize;
        let ring: &'static mut [u8] = super::slab::zeroed(buffer)?;
        shells.push(Slot {
            name: heapless::String::new(),
            prep: Prepared::new(out_w, err_w),
            output: super::output::Output {
                out_r,
                err_r,
                out_w,
                err_w,
                ring: LogRing::new(ring),
                lines: lines.next().ok_or("line buffers")?,
                file: files.next().ok_or("log file table")?,
                in_r,
                in_w,
                to: super::output::NO_LOGGER,
                to_dropped: 0,
            },
            console: false,
            ready: [false; 2],
            retired: false,
            health: super::probe::Health {
                specs: [super::probe::Spec::None, super::probe::Spec::None],
                probes: probes.next().ok_or("probe buffers")?,
                check_prep: [
                    preps.next().ok_or("exec check table")?,
                    preps.next().ok_or("exec check table")?,
                ],
                startup: startups.next().ok_or("startup check table")?,
            },
            notify_r: -1,
            notify: super::notify::Notify {
                sock: -1,
                text: texts.next().ok_or("sd_notify table")?,
                sd: Default::default(),
            },
            spawned: 0,
            found: Default::default(),
        });
        core.push(Service::new(i as u16, Policy::default()));
    }
    let reloader = Reloader::new(&cfg.path, compiled, slots)?;
    let exec_need = super::spawn::config_need(compiled, base_len);
    let arena = super::arena::ExecArena::new(super::arena::half_size(exec_need, slots))?;
    let mut shell = Shell {
        log,
        registry,
        turns: Default::default(),
        svc: Services {
            slots: shells,
            used: 0,
            devnull,
            readbuf: Box::new([0u8; READ_CHUNK]),
            scratch: Box::default(),
            base_env: base,
            arena,
            file_max: cfg.service_logs.max_size,
            file_keep: cfg.service_logs.keep,
            mainpids: 0,
            cg: super::cgroup::Cgroups::new(slots),
            spawns: 0,
            stack,
        },
        reloader,
        life: super::pid1::Life {
            mode: super::pid1::Mode::Supervisor,
            action: None,
            shutdown_timeout: cfg.shutdown_timeout,
            main_exit: super::pid1::MainExit::new(),
            main_idx: None,
            manager: super::manager::Manager::from_env(super::clock::now()),
            reexec_requested: false,
            reexec: super::reexec::Reexec::new(
                std::fs::read_link("/proc/self/exe")
                    .ok()
                    .and_then(|p| {
                        std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(
                            p.as_os_str(),
                        ))
                        .ok()
                    })
                    .unwrap_or_else(|| c"/proc/self/exe".into()),
                &std::fs::canonicalize(&cfg.path).unwrap_or_else(|_| cfg.path.clone()),
                false,
                base_len,
            ),
        },
        ctl: Control {
            listen_fd,
            clients: (0..cfg.limits.clients.max(1))
                .map(|_| Client {
                    fd: -1,
                    conn: Conn::new(
                        super::slab::zeroed(CONN_OUT_BUF).unwrap_or(&mut []),
                        Instant::ZERO,
                    ),
                    uid: 0,
                    pid: 0,
                    readonly: true,
                    readable: false,
                    eof: false,
                    hup: false,
                })
                .collect(),
            // SAFETY: geteuid never fails.
            owner_uid: unsafe { libc::geteuid() },
            guard: Guard::new(),
            event_log,
        },
    };
    super::reload::install_initial(&mut shell, &mut core).map_err(|e| e.to_string())?;
    Ok((shell, core, adopted))
}

/// The most `fds:` items any service of `compiled` has: the child's held
/// descriptor numbers are sized from it (see `spawn::Stack`).
fn most_fds(compiled: &[u8]) -> usize {
    match super::compiled::decode(compiled) {
        Ok(super::compiled::Compiled::Valid {
            count, services, ..
        }) => super::compiled::services(&services, count)
            .map(|c| c.fds_raw.len() / 4)
            .max()
            .unwrap_or(0),
        _ => 0,
    }
}

/// Descriptors for the `fds:` table (two an entry: a pipe has two ends)
/// and the numbers the spawn holds for the largest per-service `fds:`.
fn table_need(compiled: &[u8]) -> usize {
    2 * super::compiled::fd_specs(super::compiled::fd_table(compiled)).count() + most_fds(compiled)
}

/// Creates the `fds:` table's descriptors (see `fdtable.rs`).
fn fd_table(compiled: &[u8], log: &mut Log) -> super::fdtable::FdTable {
    super::fdtable::FdTable::open(super::compiled::fd_table(compiled), log)
}

/// Every slot's stdout and stderr line buffers, in one fresh mapping:
/// written only when a service writes output, so a quiet service's cost
/// nothing (a heap allocation would be zeroed, and paid, at startup).
fn zeroed_lines(slots: usize) -> Result<&'static mut [[LineBuf; 2]], String> {
    let bytes = super::slab::zeroed(slots * core::mem::size_of::<[LineBuf; 2]>())?;
    if bytes.is_empty() {
        return Ok(&mut []);
    }
    // SAFETY: the mapping is page-aligned (so aligned for LineBuf), as
    // long as `slots` pairs, never freed, and all zero bytes are a valid
    // LineBuf: its fields are a byte array, a length and a bool, and all
    // zero is its `Default` (tested below).
    Ok(unsafe { core::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast(), slots) })
}

/// Each slot's two probes, their response and line buffers in zeroed
/// mappings (written only by http and exec checks).
fn probes(slots: usize) -> Result<Vec<[super::probe::Probe; 2]>, String> {
    use super::probe::{Probe, RESP_BUF};
    let bufs = super::slab::zeroed(slots * 2 * RESP_BUF)?;
    let mut bufs = bufs
        .chunks_exact_mut(RESP_BUF.max(1))
        .filter_map(|b| <&mut [u8; RESP_BUF]>::try_from(b).ok());
    let mut lines = zeroed_lines(slots)?.iter_mut().flat_map(|p| p.iter_mut());
    let mut reqs = cells(slots * 2)?;
    let mut one = || -> Result<Probe, String> {
        let (Some(b), Some(l), Some(r)) = (bufs.next(), lines.next(), reqs.next()) else {
            return Err("probe buffers".into());
        };
        Ok(Probe::new(b, l, r))
    };
    (0..slots).map(|_| Ok([one()?, one()?])).collect()
}

/// What the daemon will preallocate for `cfg`: printed by `validate`.
pub struct Budget {
    pub slots: usize,
    pub ring_bytes: usize,
    pub line_bytes: usize,
    pub table_bytes: usize,
    pub exec_bytes: usize,
    pub conn_bytes: usize,
    pub reload_bytes: usize,
    pub fixed_bytes: usize,
    pub fds: usize,
}

impl Budget {
    pub fn total(&self) -> usize {
        self.ring_bytes
            + self.line_bytes
            + self.table_bytes
            + self.exec_bytes
            + self.conn_bytes
            + self.reload_bytes
            + self.fixed_bytes
    }
}

/// What the daemon will preallocate for `cfg`: printed by `validate`.
/// Rings, exec arenas, connection and reload buffers are fresh mappings
/// (see `slab`): they are reserved here but cost memory only as used.
pub fn budget(cfg: &Config) -> Budget {
    let slots = (cfg.limits.services as usize).max(cfg.services.len());
    let spare = slots - cfg.services.len();
    let clients = cfg.limits.clients.max(1) as usize;
    let ring_bytes = cfg
        .services
        .iter()
        .map(|s| s.log.buffer as usize)
        .sum::<usize>()
        + spare * cfg.service_logs.buffer as usize;
    // The output line buffers and the probes' response and line buffers
    // (zeroed mappings, written only as used).
    let line_bytes =
        slots * (2 * core::mem::size_of::<[LineBuf; 2]>() + 2 * super::probe::RESP_BUF);
    // The slot tables, and the cold parts' zeroed tables (written only for
    // the services that use them: log files, sd_notify, checks).
    let cold = core::mem::size_of::<super::logfile::LogFile>()
        + core::mem::size_of::<super::notify::SdText>()
        + 2 * core::mem::size_of::<Prepared>()
        + 2 * core::mem::size_of::<super::probe::Request>()
        + core::mem::size_of::<super::probe::Startup>();
    let table_bytes =
        slots * (core::mem::size_of::<Service>() + core::mem::size_of::<Slot>() + cold);
    let envn = std::env::vars_os().count();
    let compiled = super::compiled::encode(cfg);
    // The exec arena's two halves (see `arena.rs`): what the config needs
    // is written, the rest is reload headroom.
    let exec_bytes = 2 * super::arena::half_size(super::spawn::config_need(&compiled, envn), slots);
    let conn_bytes = clients * coffey::limits::CONN_OUT_BUF;
    let fds = fd_budget(slots, clients) + table_need(&compiled);
    let compiled = compiled.len();
    let reload_bytes = 2 * coffey::limits::reload_buffer(compiled, slots) + 64 * 1024;
    let fixed_bytes = READ_CHUNK + core::mem::size_of::<super::log::LineBuf>() * 2;
    Budget {
        slots,
        ring_bytes,
        line_bytes,
        table_bytes,
        exec_bytes,
        conn_bytes,
        reload_bytes,
        fixed_bytes,
        fds,
    }
}

/// Whether this daemon bound the control socket and wrote the pid file,
/// so it removes only what it made (see `owns_paths`).
static OWN_SOCKET: AtomicBool = AtomicBool::new(false);
static OWN_PID_FILE: AtomicBool = AtomicBool::new(false);

/// (socket, pid file): which of the two paths this daemon made.
pub fn owns_paths() -> (bool, bool) {
    (
        OWN_SOCKET.load(Ordering::Relaxed),
        OWN_PID_FILE.load(Ordering::Relaxed),
    )
}

/// The filesystem will not hold the path: read-only (Kubernetes'
/// `readOnlyRootFilesystem`, `crun spec`), not ours to write, or its
/// directory is missing. The socket and pid file are conveniences and
/// supervision is the job, so coffeyd then runs without them. Anything
/// else still refuses to start.
fn refused_by_fs(e: &std::io::Error) -> Option<&'static str> {
    match e.raw_os_error() {
        Some(n @ (libc::EROFS | libc::EACCES | libc::ENOENT)) => {
            Some(nix::errno::Errno::from_raw(n).desc())
        }
        _ => None,
    }
}

/// Binds the control socket path (a second daemon answering on it is
/// refused) and writes the pid file. Where the filesystem refuses either,
/// the returned warnings say so (logged once) and coffeyd runs without.
fn claim_paths(
    cfg: &Globals,
) -> Result<(Option<std::os::unix::net::UnixListener>, Vec<String>), String> {
    use std::os::unix::net::UnixStream;
    if UnixStream::connect(&cfg.socket).is_ok() {
        return Err(format!(
            "another coffeyd is running on {}",
            cfg.socket.display()
        ));
    }
    let mut warnings = Vec::new();
    let listener = bind_socket(cfg, &mut warnings)?;
    if let Some(p) = &cfg.pid_file {
        match std::fs::write(p, format!("{}\n", std::process::id())) {
            Ok(()) => OWN_PID_FILE.store(true, Ordering::Relaxed),
            Err(e) => match refused_by_fs(&e) {
                Some(why) => warnings.push(format!(
                    "warning: cannot write the pid file {}: {why}; running without it",
                    p.display()
                )),
                None => return Err(format!("cannot write pid file {}: {e}", p.display())),
            },
        }
    }
    Ok((listener, warnings))
}

fn bind_socket(
    cfg: &Globals,
    warnings: &mut Vec<String>,
) -> Result<Option<std::os::unix::net::UnixListener>, String> {
    use std::os::unix::net::UnixListener;
    let _ = std::fs::remove_file(&cfg.socket);
    if let Some(dir) = cfg.socket.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // Bind under umask 077 so the socket is never briefly open to all.
    // SAFETY: umask cannot fail.
    let old = unsafe { libc::umask(0o077) };
    let bound = UnixListener::bind(&cfg.socket);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let listener = match bound {
        Ok(l) => l,
        Err(e) => match refused_by_fs(&e) {
            Some(why) => {
                warnings.push(format!(
                    "warning: cannot bind the control socket {}: {why}; running without it \
                     (no status, logs or control commands)",
                    cfg.socket.display()
                ));
                return Ok(None);
            }
            None => return Err(format!("cannot bind {}: {e}", cfg.socket.display())),
        },
    };
    OWN_SOCKET.store(true, Ordering::Relaxed);
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("socket: {e}"))?;
    use std::os::unix::fs::PermissionsExt;
    let mode = match &cfg.socket_group {
        Some((name, gid)) => {
            std::os::unix::fs::chown(&cfg.socket, None, Some(*gid)).map_err(|e| {
                format!("cannot give {} to group {name}: {e}", cfg.socket.display())
            })?;
            0o660
        }
        None => 0o600,
    };
    std::fs::set_permissions(&cfg.socket, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", cfg.socket.display()))?;
    Ok(Some(listener))
}

/// Everything the loop needs, built before the allocator is sealed.
pub struct Started {
    pub shell: Shell,
    pub table: Vec<Service>,
    pub poll: Poll,
    pub sfd: SignalFd,
    pub listener: Option<std::os::unix::net::UnixListener>,
    /// Services handed over by a previous binary (`reexec`).
    pub adopted: Vec<super::reexec::Adopted>,
}

/// Signals, subreaper, paths, tables, poll registration, from the
/// globals and the compiled config.
pub fn start(cfg: &Globals, compiled: &[u8]) -> Result<Started, String> {
    // Signals are read from a signalfd, so they must be blocked; children
    // unblock them before execve.
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGPWR,
    ] {
        mask.add(s);
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
        .map_err(|e| format!("sigprocmask: {e}"))?;
    // SAFETY: setting SIG_IGN installs no handler. Writes to a closed pipe
    // must return EPIPE, not kill the daemon.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("signalfd: {e}"))?;

    // Orphans of our services get reparented to us, and we reap them.
    // SAFETY: plain prctl.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        super::log::stderr_line(format_args!(
            "coffeyd: warning: cannot become a child subreaper"
        ));
    }

    let (listener, warnings) = claim_paths(cfg).inspect_err(|_| release_paths(cfg))?;
    let listen_fd = listener.as_ref().map_or(-1, |l| l.as_raw_fd());
    let poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
    let registry = poll
        .registry()
        .try_clone()
        .map_err(|e| format!("epoll: {e}"))?;
    let (mut shell, table, adopted) =
        build(cfg, compiled, listen_fd, registry).inspect_err(|_| release_paths(cfg))?;
    for w in &warnings {
        log!(shell.log, "{w}");
    }
    let reg = poll.registry();

    if listen_fd >= 0 {
        reg.register(
            &mut SourceFd(&listen_fd),
            Token::Listen.encode(),
            Interest::READABLE,
        )
        .map_err(|e| format!("register socket: {e}"))?;
    }
    reg.register(
        &mut SourceFd(&sfd.as_raw_fd()),
        Token::Signal.encode(),
        Interest::READABLE,
    )
    .map_err(|e| format!("register signalfd: {e}"))?;
    for (i, s) in shell.svc.slots.iter().enumerate() {
        for (w, fd) in [(0, s.output.out_r), (1, s.output.err_r)] {
            reg.register(
                &mut SourceFd(&fd),
                Token::Pipe { slot: i, stream: w }.encode(),
                Interest::READABLE,
            )
            .map_err(|e| format!("register pipe: {e}"))?;
        }
    }
    Ok(Started {
        shell,
        table,
        poll,
        sfd,
        listener,
        adopted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cloexec(fd: RawFd) -> bool {
        // SAFETY: F_GETFD on our fd.
        unsafe { libc::fcntl(fd, libc::F_GETFD) & libc::FD_CLOEXEC != 0 }
    }

    #[test]
    fn both_ways_mark_inherited_fds_close_on_exec() {
        for way in [cloexec_inherited as fn(), cloexec_each] {
            // SAFETY: dup of stderr gives a fresh fd without FD_CLOEXEC.
            let fd = unsafe { libc::dup(2) };
            assert!(fd > 2 && !cloexec(fd));
            way();
            assert!(cloexec(fd));
            // SAFETY: ours.
            unsafe { libc::close(fd) };
        }
    }
}

#[cfg(test)]
mod line_tests {
    use super::*;

    /// Zeroed line buffers behave as `LineBuf::default()`: empty, not
    /// skipping.
    #[test]
    fn zeroed_line_buffers_are_empty_line_buffers() {
        let pairs = zeroed_lines(3).unwrap();
        assert_eq!(pairs.len(), 3);
        let mut got = Vec::new();
        for lb in pairs.iter_mut().flat_map(|p| p.iter_mut()) {
            lb.feed(b"ab\ncd", |l, cut| got.push((l.to_vec(), cut)));
            lb.flush(|l, cut| got.push((l.to_vec(), cut)));
        }
        let one = [(b"ab".to_vec(), false), (b"cd".to_vec(), false)];
        let want: Vec<_> = (0..6).flat_map(|_| one.clone()).collect();
        assert_eq!(got, want);
        assert!(zeroed_lines(0).unwrap().is_empty());
    }

    /// Clearing or flushing an empty line buffer (every fresh service's,
    /// at startup and at each exit) leaves its zeroed page unwritten: a
    /// quiet service's line buffers cost no memory.
    #[test]
    fn clearing_empty_line_buffers_writes_nothing() {
        let pairs = zeroed_lines(2).unwrap();
        for lb in pairs.iter_mut().flat_map(|p| p.iter_mut()) {
            lb.clear();
            lb.flush(|_, _| panic!("nothing to flush"));
        }
        let at = pairs.as_ptr().cast::<u8>();
        assert!(!super::super::slab::written(at));
        assert!(!super::super::slab::written(at.wrapping_add(4096)));
        pairs[1][1].feed(b"x", |_, _| ());
        assert!(super::super::slab::written(at.wrapping_add(4096)));
    }
}
