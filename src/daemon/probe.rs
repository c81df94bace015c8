//! Health probes, shell side: non-blocking sockets and processes driven
//! by the one event loop.
//!
//! A probe is started by the check machine (`Sys::start_probe`), finishes
//! with one result (`Supervisor::probe_result`), and is cancelled when the
//! check times out or the service goes down (`Sys::cancel_probe`), which
//! closes its socket or kills its process group: a probe never outlives
//! its service. HTTP responses are read into a fixed buffer (`HTTP_RESPONSE_MAX`) and
//! parsed with httparse; only the status line matters, so a response of
//! any size costs at most one buffer. Nothing here allocates.

use super::log::Log;
use super::log::{log, LineBuf};
use super::slab::Cold;
use super::spawn::{self, Prepared};
use super::Services;
use coffey::health::{ProbeError, Role};
use coffey::logring::{LineBuf as Lines, Stream};
use core::fmt::Write as _;
use nix::libc;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use coffey::limits::{
    CHECK_READ_CHUNK, HTTP_REQUEST_MAX, HTTP_RESPONSE_MAX as RESP_MAX, NOTIFY_ENV_MAX,
};

/// A slot's health checks (readiness, liveness, startup): what each
/// probes, the probe in flight, and an exec check's argv (in a zeroed side
/// table). The startup check borrows the liveness probe (`Role::probe`),
/// since liveness runs only once startup has passed; what it probes sits
/// in its own side table, so a slot without one pays only the handle.
pub struct Health {
    pub specs: [Spec; 2],
    pub probes: [Probe; 2],
    pub check_prep: [Cold<Prepared>; 2],
    pub startup: Cold<Startup>,
}

/// A startup check's own parts: its spec, its HTTP request and its exec
/// argv (each used as its type needs).
pub struct Startup {
    pub spec: Spec,
    pub req: Request,
    pub prep: Prepared,
}

impl Health {
    /// What the check of `role` probes.
    pub fn spec(&self, role: Role) -> Option<&Spec> {
        match role {
            Role::Startup => self.startup.get().map(|s| &s.spec),
            _ => self.specs.get(role.index()),
        }
    }
}

/// What a check does, decoded once per (re)configuration. An HTTP
/// check's request is kept by its probe, out of the slot table.
pub enum Spec {
    None,
    Http {
        addr: SocketAddr,
        expect: Option<u16>,
    },
    Tcp {
        addr: SocketAddr,
    },
    /// Argv lives in the slot's `check_prep`.
    Exec,
    /// `fd`: s6/dinit readiness fd; None: sd_notify.
    Notify {
        fd: Option<i32>,
    },
}

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum Phase {
    Idle,
    Connecting,
    Receiving,
    /// Exec check running; `fd` is its output pipe.
    Running,
}

/// A probe's state. Its buffers live in zeroed mappings shared by all
/// slots (see `setup::probes`): a slot without http or exec checks never
/// writes them, so they cost it no memory.
pub struct Probe {
    pub phase: Phase,
    pub fd: RawFd,
    pub pid: i32,
    /// HTTP response bytes ([`RESP_MAX`]).
    buf: &'static mut [u8; RESP_BUF],
    len: usize,
    /// Output line assembly for exec checks.
    pub lines: &'static mut Lines,
    /// An HTTP check's request, built when the check is configured.
    req: Cold<Request>,
}

/// An HTTP check's request bytes.
pub type Request = heapless::Vec<u8, HTTP_REQUEST_MAX>;

/// Bytes of one probe's response buffer.
pub const RESP_BUF: usize = RESP_MAX;

impl Probe {
    /// Idle, on buffers that start empty (zeroed `buf`, an empty `lines`).
    pub fn new(
        buf: &'static mut [u8; RESP_BUF],
        lines: &'static mut Lines,
        req: Cold<Request>,
    ) -> Probe {
        Probe {
            phase: Phase::Idle,
            fd: -1,
            pid: 0,
            buf,
            len: 0,
            lines,
            req,
        }
    }
}

/// Builds the HTTP request once, at configuration time.
pub fn http_request(host: &str, path: &str) -> heapless::Vec<u8, HTTP_REQUEST_MAX> {
    let mut v = heapless::Vec::new();
    let _ = write!(
        VecWriter(&mut v),
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: coffeyd\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    v
}

struct VecWriter<'a, const N: usize>(&'a mut heapless::Vec<u8, N>);

impl<const N: usize> core::fmt::Write for VecWriter<'_, N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.0
            .extend_from_slice(s.as_bytes())
            .map_err(|_| core::fmt::Error)
    }
}

/// Starts a non-blocking connect. Ok(fd): in progress or done (the poller
/// reports writable either way).
fn connect(addr: &SocketAddr) -> Result<RawFd, ProbeError> {
    let fam = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain syscall.
    let fd = unsafe {
        libc::socket(
            fam,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(ProbeError::Connect(super::errno()));
    }
    let (ss, len) = super::sockaddr::of(addr);
    // SAFETY: ss holds a valid address of `len` bytes.
    let r = unsafe { libc::connect(fd, (&ss as *const libc::sockaddr_storage).cast(), len) };
    if r < 0 && super::errno() != libc::EINPROGRESS {
        let e = super::errno();
        super::close_fd(fd);
        return Err(ProbeError::Connect(e));
    }
    Ok(fd)
}

/// `Sys::start_probe`: returns the fd to register, if any.
pub fn start(svc: &mut Services, idx: usize, role: Role) -> Result<Option<RawFd>, ProbeError> {
    let r = role.probe();
    cancel(svc, idx, role);
    let devnull = svc.devnull;
    let stack = &mut svc.stack;
    let Some(slot) = svc.slots.get_mut(idx) else {
        return Err(ProbeError::Spawn(libc::ENOENT));
    };
    let Health {
        specs,
        probes,
        check_prep,
        startup,
    } = &mut slot.health;
    let (spec, prep) = match role {
        Role::Startup => match startup.get_mut() {
            Some(s) => (Some(&s.spec), Some(&mut s.prep)),
            None => (None, None),
        },
        _ => (specs.get(r), check_prep.get_mut(r).and_then(Cold::get_mut)),
    };
    let (Some(spec), Some(p)) = (spec, probes.get_mut(r)) else {
        return Err(ProbeError::Spawn(libc::ENOENT));
    };
    p.len = 0;
    match spec {
        Spec::Http { addr, .. } | Spec::Tcp { addr } => {
            p.fd = connect(addr)?;
            p.phase = Phase::Connecting;
            Ok(Some(p.fd))
        }
        Spec::Exec => {
            // Filled whenever the spec is Exec (see `configure`).
            let Some(prep) = prep else {
                return Err(ProbeError::Spawn(libc::ENOENT));
            };
            let mut fds = [-1; 2];
            // SAFETY: valid out array.
            if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
                return Err(ProbeError::Spawn(super::errno()));
            }
            let [rd, wr] = fds;
            // The child's end must block: clear O_NONBLOCK on it.
            // SAFETY: our fd.
            unsafe {
                let fl = libc::fcntl(wr, libc::F_GETFL);
                libc::fcntl(wr, libc::F_SETFL, fl & !libc::O_NONBLOCK);
            }
            prep.out_w = wr;
            prep.err_w = wr;
            let res = spawn::spawn(prep, devnull, stack);
            super::close_fd(wr);
            match res {
                Ok(pid) => {
                    p.pid = pid;
                    p.fd = rd;
                    p.phase = Phase::Running;
                    Ok(Some(rd))
                }
                Err(e) => {
                    super::close_fd(rd);
                    Err(ProbeError::Spawn(e.errno))
                }
            }
        }
        // Passive checks never probe.
        Spec::Notify { .. } | Spec::None => Ok(None),
    }
}

/// `Sys::cancel_probe`: close the socket, kill the check's group.
pub fn cancel(svc: &mut Services, idx: usize, role: Role) {
    let Some(p) = svc
        .slots
        .get_mut(idx)
        .and_then(|s| s.health.probes.get_mut(role.probe()))
    else {
        return;
    };
    if p.pid > 0 {
        // SAFETY: plain syscall on the check's own group.
        unsafe { libc::kill(-p.pid, libc::SIGKILL) };
        // The pid stays until reaped, so the reap is not taken for an orphan.
    }
    super::close_fd(p.fd);
    p.fd = -1;
    p.phase = Phase::Idle;
}

fn parse_http(buf: &[u8], expect: Option<u16>) -> Option<Result<(), ProbeError>> {
    coffey::health::http_verdict(buf, expect, RESP_MAX)
}

/// Readiness on a probe fd. Returns the result when the probe is over.
pub fn on_ready(svc: &mut Services, idx: usize, role: Role) -> Option<Result<(), ProbeError>> {
    let slot = svc.slots.get_mut(idx)?;
    let Health {
        specs,
        probes,
        startup,
        ..
    } = &mut slot.health;
    let ring = &mut slot.output.ring;
    let (spec, req) = match role {
        Role::Startup => startup.get().map(|s| (&s.spec, Some(&s.req)))?,
        _ => (specs.get(role.index())?, None),
    };
    let p = probes.get_mut(role.probe())?;
    let done = match (p.phase, spec) {
        (Phase::Connecting, Spec::Tcp { .. } | Spec::Http { .. }) => {
            let mut err: libc::c_int = 0;
            let mut len = core::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: valid out-pointers.
            let r = unsafe {
                libc::getsockopt(
                    p.fd,
                    libc::SOL_SOCKET,
                    libc::SO_ERROR,
                    (&mut err as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            if r < 0 {
                Some(Err(ProbeError::Connect(super::errno())))
            } else if err == libc::EINPROGRESS || err == libc::EALREADY {
                None
            } else if err != 0 {
                Some(Err(ProbeError::Connect(err)))
            } else if let Spec::Http { .. } = spec {
                // The request is small: one send, or the probe fails.
                let req = req.or(p.req.get()).map_or(&[][..], |r| r.as_slice());
                // SAFETY: valid buffer.
                let n =
                    unsafe { libc::send(p.fd, req.as_ptr().cast(), req.len(), libc::MSG_NOSIGNAL) };
                if n < 0 && super::errno() == libc::EAGAIN {
                    None
                } else if n < 0 || usize::try_from(n).ok() != Some(req.len()) {
                    Some(Err(ProbeError::Connect(if n < 0 {
                        super::errno()
                    } else {
                        libc::EIO
                    })))
                } else {
                    p.phase = Phase::Receiving;
                    read_http(p, spec)
                }
            } else {
                Some(Ok(()))
            }
        }
        (Phase::Receiving, Spec::Http { .. }) => read_http(p, spec),
        (Phase::Running, Spec::Exec) => {
            // Drain the check's output into the ring, tagged "check".
            let mut chunk = [0u8; CHECK_READ_CHUNK];
            loop {
                // SAFETY: valid buffer.
                let n = unsafe { libc::read(p.fd, chunk.as_mut_ptr().cast(), chunk.len()) };
                if n <= 0 {
                    if n == 0 || super::errno() != libc::EINTR {
                        break;
                    }
                    continue;
                }
                let data = chunk.get(..usize::try_from(n).unwrap_or(0)).unwrap_or(&[]);
                let now = super::clock::wall_ms();
                p.lines.feed(data, |line, cut| {
                    ring.push(now, Stream::Check, cut, line);
                });
            }
            None // the result comes from the exit status
        }
        _ => None,
    };
    if done.is_some() {
        super::close_fd(p.fd);
        p.fd = -1;
        p.phase = Phase::Idle;
    }
    done
}

fn read_http(p: &mut Probe, spec: &Spec) -> Option<Result<(), ProbeError>> {
    let Spec::Http { expect, .. } = spec else {
        return None;
    };
    loop {
        let space = p.buf.get_mut(p.len..).unwrap_or(&mut []);
        if space.is_empty() {
            return parse_http(p.buf.get(..p.len).unwrap_or(&[]), *expect);
        }
        // SAFETY: valid buffer.
        let n = unsafe { libc::recv(p.fd, space.as_mut_ptr().cast(), space.len(), 0) };
        if n < 0 {
            let e = super::errno();
            if e == libc::EINTR {
                continue;
            }
            if e == libc::EAGAIN {
                return parse_http(p.buf.get(..p.len).unwrap_or(&[]), *expect);
            }
            return Some(Err(ProbeError::Connect(e)));
        }
        if n == 0 {
            return Some(
                parse_http(p.buf.get(..p.len).unwrap_or(&[]), *expect)
                    .unwrap_or(Err(ProbeError::Closed)),
            );
        }
        p.len += usize::try_from(n).unwrap_or(0);
        if let Some(r) = parse_http(p.buf.get(..p.len).unwrap_or(&[]), *expect) {
            return Some(r);
        }
    }
}

/// (slot, probe (`Role::probe`), result; None when the probe had been
/// cancelled).
pub type Reaped = (usize, usize, Option<Result<(), ProbeError>>);

/// A reaped pid that was an exec check: its result.
pub fn on_exit(svc: &mut Services, pid: i32, status: coffey::sys::ExitStatus) -> Option<Reaped> {
    for (i, s) in svc.slots.iter_mut().enumerate() {
        for (r, p) in s.health.probes.iter_mut().enumerate() {
            if p.pid == pid && pid > 0 {
                p.pid = 0;
                // A cancelled probe (fd closed) has no result to give.
                let live = p.phase == Phase::Running;
                if live {
                    // Take what output is left.
                    let mut chunk = [0u8; CHECK_READ_CHUNK];
                    loop {
                        // SAFETY: valid buffer.
                        let n = unsafe { libc::read(p.fd, chunk.as_mut_ptr().cast(), chunk.len()) };
                        if n <= 0 {
                            break;
                        }
                        let data = chunk.get(..usize::try_from(n).unwrap_or(0)).unwrap_or(&[]);
                        let now = super::clock::wall_ms();
                        let ring = &mut s.output.ring;
                        p.lines.feed(data, |line, cut| {
                            ring.push(now, Stream::Check, cut, line);
                        });
                    }
                    let ring = &mut s.output.ring;
                    let now = super::clock::wall_ms();
                    p.lines.flush(|line, cut| {
                        ring.push(now, Stream::Check, cut, line);
                    });
                    super::close_fd(p.fd);
                    p.fd = -1;
                    p.phase = Phase::Idle;
                }
                let res = match status {
                    coffey::sys::ExitStatus::Code(0) => Ok(()),
                    coffey::sys::ExitStatus::Code(c) => Err(ProbeError::Exit(c)),
                    coffey::sys::ExitStatus::Signal(sg) => Err(ProbeError::Signal(sg)),
                };
                return Some((i, r, live.then_some(res)));
            }
        }
    }
    None
}

/// Text for a probe error: "connect: Connection refused", "HTTP 503".
pub fn error_text(e: ProbeError, out: &mut LineBuf) {
    let _ = match e {
        ProbeError::Connect(n) => write!(out, "connect: {}", nix::errno::Errno::from_raw(n).desc()),
        ProbeError::Timeout => write!(out, "timed out"),
        ProbeError::HttpStatus(c) => write!(out, "HTTP {c}"),
        ProbeError::HttpGarbage => write!(out, "not an HTTP response"),
        ProbeError::Closed => write!(out, "connection closed before a response"),
        ProbeError::Exit(c) => write!(out, "check exited with code {c}"),
        ProbeError::Signal(s) => write!(out, "check killed by {}", coffey::sys::signal_name(s)),
        ProbeError::Spawn(n) => write!(
            out,
            "check could not run: {}",
            nix::errno::Errno::from_raw(n).desc()
        ),
        ProbeError::Watchdog => write!(out, "watchdog expired (no WATCHDOG=1)"),
        ProbeError::WatchdogTrigger => {
            write!(out, "watchdog triggered by the service (WATCHDOG=trigger)")
        }
    };
}

/// The notify pipe of slot `idx` has data: a newline means ready.
pub fn on_notify_fd(svc: &mut Services, idx: usize) -> bool {
    let Some(slot) = svc.slots.get_mut(idx) else {
        return false;
    };
    let mut ready = false;
    let mut chunk = [0u8; 64];
    loop {
        // SAFETY: valid buffer.
        let n = unsafe { libc::read(slot.notify_r, chunk.as_mut_ptr().cast(), chunk.len()) };
        if n < 0 && super::errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            if n == 0 {
                // The service closed it: done with this pipe.
                super::close_fd(slot.notify_r);
                slot.notify_r = -1;
            }
            break;
        }
        ready |= chunk
            .get(..usize::try_from(n).unwrap_or(0))
            .is_some_and(|d| d.contains(&b'\n'));
    }
    ready
}

/// Opens (once) the sd_notify socket of slot `i` and registers it. The
/// kernel picks a unique abstract name (autobind), so two coffeyd in one
/// network namespace (containers with host networking, each PID 1) never
/// collide; the name goes into the slot's `NOTIFY_SOCKET=` entry.
pub fn open_notify(svc: &mut Services, registry: &mio::Registry, i: usize) {
    let Some(slot) = svc.slots.get_mut(i) else {
        return;
    };
    if slot.notify.sock >= 0 {
        return;
    }
    // SAFETY: plain socket syscalls on our own fd and zeroed addresses.
    let fd = unsafe {
        let fd = libc::socket(
            libc::AF_UNIX,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return;
        }
        let one: libc::c_int = 1;
        let mut addr: libc::sockaddr_un = core::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        // Only the family: autobind to a fresh abstract name.
        let fam = core::mem::size_of::<libc::sa_family_t>() as libc::socklen_t;
        let mut len = core::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        if libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PASSCRED,
            (&one as *const libc::c_int).cast(),
            core::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) < 0
            || libc::bind(fd, (&addr as *const libc::sockaddr_un).cast(), fam) < 0
            || libc::getsockname(fd, (&mut addr as *mut libc::sockaddr_un).cast(), &mut len) < 0
        {
            libc::close(fd);
            return;
        }
        // sun_path[0] is NUL (abstract); the name follows.
        let n = (len as usize).saturating_sub(fam as usize + 1);
        let mut env = [0u8; NOTIFY_ENV_MAX];
        let mut w = super::log::CWriter::new(&mut env);
        let _ = w.write_str("NOTIFY_SOCKET=@");
        for c in addr.sun_path.iter().skip(1).take(n) {
            let b = [*c as u8];
            let _ = w.write_str(core::str::from_utf8(&b).unwrap_or("?"));
        }
        slot.notify.text.get_or_insert_with(Default::default).env = env;
        fd
    };
    slot.notify.sock = fd;
    let _ = registry.register(
        &mut mio::unix::SourceFd(&fd),
        super::token::Token::NotifySock(i).encode(),
        mio::Interest::READABLE,
    );
}

pub fn close_notify(svc: &mut Services, i: usize) {
    if let Some(slot) = svc.slots.get_mut(i) {
        super::close_fd(slot.notify.sock);
        slot.notify.sock = -1;
    }
}

/// Fills the probe spec and exec buffers of slot `i` from the compiled
/// check. Cancels whatever probe was running.
pub fn configure(
    svc: &mut Services,
    i: usize,
    c: &super::compiled::CService<'_>,
) -> Result<(), &'static str> {
    for r in 0..2 {
        cancel(svc, i, Role::from_index(r));
    }
    let Services {
        slots,
        base_env,
        arena,
        ..
    } = svc;
    let slot = slots.get_mut(i).ok_or("no such slot")?;
    let startup = c.checks.get(Role::Startup.index()).and_then(Option::as_ref);
    configure_startup(&mut slot.health.startup, startup, arena, c, base_env)?;
    for (r, check) in c.checks.iter().take(2).enumerate() {
        // Only an exec check holds arena bytes.
        if !matches!(
            check.as_ref().map(|k| &k.probe),
            Some(super::compiled::CProbe::Exec { .. })
        ) {
            if let Some(p) = slot.health.check_prep.get_mut(r).and_then(Cold::get_mut) {
                p.clear();
            }
        }
        use super::compiled::CProbe;
        let spec = match check.as_ref().map(|k| &k.probe) {
            None => Spec::None,
            Some(CProbe::Http {
                addr,
                host,
                path,
                expect,
            }) => {
                let p = slot.health.probes.get_mut(r).ok_or("slot")?;
                p.req.set(http_request(host, path));
                Spec::Http {
                    addr: addr.parse().map_err(|_| "bad check address")?,
                    expect: *expect,
                }
            }
            Some(CProbe::Tcp { addr }) => Spec::Tcp {
                addr: addr.parse().map_err(|_| "bad check address")?,
            },
            Some(CProbe::Exec { command }) => {
                let prep: &mut Prepared = slot
                    .health
                    .check_prep
                    .get_mut(r)
                    .ok_or("slot")?
                    .get_or_insert_with(|| Prepared::new(-1, -1));
                prep.fill_cmd(arena, command.clone(), c, base_env, None)
                    .map_err(|e| e.as_str())?;
                Spec::Exec
            }
            Some(CProbe::Notify { fd }) => Spec::Notify { fd: *fd },
        };
        if let Some(s) = slot.health.specs.get_mut(r) {
            *s = spec;
        }
    }
    Ok(())
}

/// The startup check's side-table entry: written only for a service
/// that has one (and emptied, not freed, when a reload drops it).
fn configure_startup(
    cell: &mut Cold<Startup>,
    check: Option<&super::compiled::CCheck<'_>>,
    arena: &mut super::arena::ExecArena,
    c: &super::compiled::CService<'_>,
    base_env: &spawn::BaseEnv,
) -> Result<(), &'static str> {
    use super::compiled::CProbe;
    let Some(check) = check else {
        if let Some(s) = cell.get_mut() {
            s.prep.clear();
            s.spec = Spec::None;
        }
        return Ok(());
    };
    let s = cell.get_or_insert_with(|| Startup {
        spec: Spec::None,
        req: heapless::Vec::new(),
        prep: Prepared::new(-1, -1),
    });
    if !matches!(check.probe, CProbe::Exec { .. }) {
        s.prep.clear();
    }
    s.spec = match &check.probe {
        CProbe::Http {
            addr,
            host,
            path,
            expect,
        } => {
            s.req = http_request(host, path);
            Spec::Http {
                addr: addr.parse().map_err(|_| "bad check address")?,
                expect: *expect,
            }
        }
        CProbe::Tcp { addr } => Spec::Tcp {
            addr: addr.parse().map_err(|_| "bad check address")?,
        },
        CProbe::Exec { command } => {
            s.prep
                .fill_cmd(arena, command.clone(), c, base_env, None)
                .map_err(|e| e.as_str())?;
            Spec::Exec
        }
        // Refused by validate: a startup check probes.
        CProbe::Notify { .. } => Spec::None,
    };
    Ok(())
}

/// Logs a verdict change.
pub fn log_verdict(svc: &Services, log: &mut Log, idx: usize, c: &coffey::health::Check) {
    let name = svc.slots.get(idx).map_or("?", |s| s.name.as_str());
    let mut why = LineBuf::default();
    if let Some(e) = c.last_error {
        error_text(e, &mut why);
    }
    let role = c.role.as_str();
    let why = core::str::from_utf8(why.as_bytes()).unwrap_or("");
    log!(
        log,
        "{name}: {role} check {}{}{why}",
        c.verdict.as_str(),
        if why.is_empty() { "" } else { ": " }
    );
}
