//! The compiled config: a compact binary form of the validated config.
//!
//! The YAML parser allocates, so the daemon never runs it, not even at
//! startup: `coffeyd __compile -c FILE` (a short-lived child) loads and
//! validates the config and writes this encoding to its stdout. Startup
//! reads it fully and builds the daemon from it (`globals.rs`, then
//! `setup::build`); reload reads it into a preallocated buffer and decodes
//! it here, borrowing, without allocating. The parser's heap and code
//! pages never enter the daemon.
//!
//! Layout: `"CFYA" | u8 ok | ...`. `ok = 0`: `str diagnostics`. `ok = 1`:
//! `u32 globals_len | globals | u64 shutdown_timeout | u16 count |
//! service* | u32 fds_len | fds` (the `fds:` table, see [`FdSpec`];
//! each service ends in `u8 n | (u8 num | u8 end | u16 entry)* |
//! str fd_names`). Strings are `u32 LE len | bytes`; lists are `u16 LE count |
//! items`; `opt X` is `u8 present | X if present`.
//!
//! `globals` (what the daemon takes from outside `services:`, read once
//! at startup and skipped by reload): `str socket | opt str pid_file |
//! opt (str name | u32 gid) socket_group | opt str log.path |
//! u8 log.console | u64 log.max_size | u32 log.keep |
//! opt str service_logs.dir | u64 max_size | u32 keep | u32 buffer |
//! u32 limits.services | u32 limits.clients | opt str hostname |
//! str emergency | u8 early_mounts | u16 count | (str source |
//! str target | str fstype | u64 flags | str data)* | opt str main |
//! opt str cgroup | opt (str events.path | u64 events.max_size |
//! u32 events.keep) | str warnings` (the validator's warnings, one a line,
//! printed by startup).

use crate::config::{Condition as CCond, Config, Kind as CKind, Restart as CRestart, ServiceSpec};
use coffey::health::{CheckPolicy, Mode};
use coffey::service::{Condition, Kind, Policy, Restart};

/// Bumped with every layout change: the reload compiler is whatever
/// binary is on disk now, and must not be misread by an older daemon.
const MAGIC: &[u8; 4] = b"CFYA";

/// A `str` of the layout: its u32 LE length, then its bytes.
#[allow(clippy::disallowed_methods)]
fn put_str(o: &mut Vec<u8>, b: &[u8]) {
    o.extend_from_slice(&(b.len() as u32).to_le_bytes());
    o.extend_from_slice(b);
}

/// Encodes a config without warnings (allocates: child only).
pub fn encode(cfg: &Config) -> Vec<u8> {
    encode_with(cfg, "")
}

/// Encodes a config and the validator's `warnings` (allocates: child
/// only).
#[allow(clippy::disallowed_methods, clippy::disallowed_macros)]
pub fn encode_with(cfg: &Config, warnings: &str) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let mut o = Vec::new();
    o.extend_from_slice(MAGIC);
    o.push(1);
    let g = encode_globals(cfg, warnings);
    put_str(&mut o, &g);
    o.extend_from_slice(&cfg.shutdown_timeout.to_le_bytes());
    o.extend_from_slice(&(cfg.services.len() as u16).to_le_bytes());
    // The services some `log.to` names (a set: one scan, not one a service).
    let loggers: std::collections::BTreeSet<&str> = cfg
        .services
        .iter()
        .filter_map(|p| p.log.to.as_deref())
        .collect();
    for sv in &cfg.services {
        put_str(&mut o, sv.name.as_bytes());
        put_str(&mut o, sv.binary.as_os_str().as_bytes());
        o.extend_from_slice(&(sv.args.len() as u16).to_le_bytes());
        for a in &sv.args {
            put_str(&mut o, a.as_bytes());
        }
        // The login env of `user` follows the service's own entries.
        let env = || sv.env.iter().chain(&sv.login_env);
        o.extend_from_slice(&(env().count() as u16).to_le_bytes());
        for e in env() {
            put_str(&mut o, e.as_bytes());
        }
        put_str(
            &mut o,
            sv.working_dir
                .as_ref()
                .map_or(&b"/"[..], |d| d.as_os_str().as_bytes()),
        );
        let (uid, gid, groups, set_groups) = creds(sv);
        o.extend_from_slice(&uid.map_or(-1i64, i64::from).to_le_bytes());
        o.extend_from_slice(&gid.map_or(-1i64, i64::from).to_le_bytes());
        o.extend_from_slice(&(groups.len() as u16).to_le_bytes());
        for g in &groups {
            o.extend_from_slice(&g.to_le_bytes());
        }
        o.push(u8::from(set_groups));
        put_str(&mut o, sv.cred_error.as_deref().unwrap_or("").as_bytes());
        o.extend_from_slice(&sv.umask.map_or(-1i64, i64::from).to_le_bytes());
        // `u8 count | (u8 resource | u64 soft | u64 hard)*`.
        o.push(sv.rlimits.len() as u8);
        for l in &sv.rlimits {
            o.push(l.resource as u8);
            o.extend_from_slice(&l.soft.to_le_bytes());
            o.extend_from_slice(&l.hard.to_le_bytes());
        }
        let p = policy(sv);
        o.push(match p.kind {
            Kind::Service => 0,
            Kind::Oneshot => 1,
        });
        o.push(match p.restart {
            Restart::Always => 0,
            Restart::OnFailure => 1,
            Restart::Never => 2,
        });
        for v in [
            p.backoff_initial,
            p.backoff_max,
            p.reset_after,
            p.stop_timeout,
        ] {
            o.extend_from_slice(&v.to_le_bytes());
        }
        o.extend_from_slice(&p.backoff_mult_milli.to_le_bytes());
        o.extend_from_slice(&p.max_restarts.to_le_bytes());
        o.extend_from_slice(&p.degraded_after.to_le_bytes());
        o.extend_from_slice(&p.stop_signal.to_le_bytes());
        o.extend_from_slice(&(sv.depends_on.len() as u16).to_le_bytes());
        for d in &sv.depends_on {
            put_str(&mut o, d.name.as_bytes());
            o.push(match d.condition {
                CCond::Started => 0,
                CCond::Healthy => 1,
                CCond::Completed => 2,
            });
        }
        o.push(u8::from(sv.log.console));
        put_str(
            &mut o,
            sv.log
                .file
                .as_ref()
                .map_or(&b""[..], |f| f.as_os_str().as_bytes()),
        );
        o.extend_from_slice(&sv.log.buffer.to_le_bytes());
        o.extend_from_slice(&sv.start_timeout.unwrap_or(u64::MAX).to_le_bytes());
        let start = o.len();
        o.extend_from_slice(&0u32.to_le_bytes());
        let h = &sv.healthcheck;
        for c in [&h.readiness, &h.liveness, &h.startup] {
            encode_check(&mut o, c.as_ref());
        }
        let len = (o.len() - start - 4) as u32;
        if let Some(b) = o.get_mut(start..start + 4) {
            b.copy_from_slice(&len.to_le_bytes());
        }
        // resources: 0 = not set.
        let r = sv.resources;
        o.extend_from_slice(&r.memory_max.unwrap_or(0).to_le_bytes());
        o.extend_from_slice(&r.pids_max.unwrap_or(0).to_le_bytes());
        o.extend_from_slice(&r.cpu_weight.unwrap_or(0).to_le_bytes());
        // Logger services: `str log.to | u8 is a logger` (some service's
        // `log.to` names it: its stdin is the logger pipe).
        put_str(&mut o, sv.log.to.as_deref().unwrap_or("").as_bytes());
        o.push(u8::from(loggers.contains(sv.name.as_str())));
        encode_service_fds(&mut o, sv);
    }
    put_str(&mut o, &encode_fd_table(cfg));
    o
}

/// A service's `fds:` and its LISTEN_FDNAMES.
#[allow(clippy::disallowed_methods)]
fn encode_service_fds(o: &mut Vec<u8>, sv: &ServiceSpec) {
    use crate::config::FdEnd;
    o.push(sv.fds.len() as u8);
    for f in &sv.fds {
        o.push(f.num as u8);
        o.push(match f.end {
            FdEnd::Whole => 0,
            FdEnd::Read => 1,
            FdEnd::Write => 2,
        });
        o.extend_from_slice(&f.entry.to_le_bytes());
    }
    put_str(o, sv.fd_names.as_bytes());
}

/// The `fds:` table: `u16 n | (str name | u8 kind | str path |
/// u8 family | [u8; 16] ip | u16 port | u32 backlog | u32 mode |
/// i64 uid | i64 gid)*` (kind: [`FdSpec`]'s; mode `u32::MAX`: none).
#[allow(clippy::disallowed_methods)]
fn encode_fd_table(cfg: &Config) -> Vec<u8> {
    use crate::config::{FdKind, FileMode};
    use std::os::unix::ffi::OsStrExt;
    let mut o = Vec::new();
    o.extend_from_slice(&(cfg.fds.len() as u16).to_le_bytes());
    for e in &cfg.fds {
        put_str(&mut o, e.name.as_bytes());
        let none = std::path::PathBuf::new();
        let (kind, path, addr, backlog, mode, uid, gid) = match &e.kind {
            FdKind::Tcp(a, b) => (FD_TCP, &none, Some(*a), *b, None, None, None),
            FdKind::Udp(a) => (FD_UDP, &none, Some(*a), 0, None, None, None),
            FdKind::Unix {
                path,
                backlog,
                mode,
                uid,
                gid,
            } => (FD_UNIX, path, None, *backlog, *mode, *uid, *gid),
            FdKind::File { path, mode } => {
                let k = match mode {
                    FileMode::Read => FD_READ,
                    FileMode::Write => FD_WRITE,
                    FileMode::Append => FD_APPEND,
                };
                (k, path, None, 0, None, None, None)
            }
            FdKind::Pipe => (FD_PIPE, &none, None, 0, None, None, None),
        };
        o.push(kind);
        put_str(&mut o, path.as_os_str().as_bytes());
        let (family, ip, port) = match addr {
            Some(std::net::SocketAddr::V4(a)) => {
                let mut ip = [0u8; 16];
                ip[..4].copy_from_slice(&a.ip().octets());
                (4u8, ip, a.port())
            }
            Some(std::net::SocketAddr::V6(a)) => (6u8, a.ip().octets(), a.port()),
            None => (0u8, [0u8; 16], 0),
        };
        o.push(family);
        o.extend_from_slice(&ip);
        o.extend_from_slice(&port.to_le_bytes());
        o.extend_from_slice(&backlog.to_le_bytes());
        o.extend_from_slice(&mode.unwrap_or(u32::MAX).to_le_bytes());
        o.extend_from_slice(&uid.map_or(-1i64, i64::from).to_le_bytes());
        o.extend_from_slice(&gid.map_or(-1i64, i64::from).to_le_bytes());
    }
    o
}

/// Kinds of `fds:` entries in the compiled table.
pub const FD_TCP: u8 = 1;
pub const FD_UDP: u8 = 2;
pub const FD_UNIX: u8 = 3;
pub const FD_READ: u8 = 4;
pub const FD_WRITE: u8 = 5;
pub const FD_APPEND: u8 = 6;
pub const FD_PIPE: u8 = 7;

/// One decoded `fds:` entry, borrowing the compiled bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdSpec<'a> {
    pub name: &'a str,
    pub kind: u8,
    /// The unix socket's or file's path ("" otherwise).
    pub path: &'a [u8],
    /// 4 or 6 for tcp and udp.
    pub family: u8,
    pub ip: [u8; 16],
    pub port: u16,
    pub backlog: u32,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl FdSpec<'_> {
    /// A tcp or udp entry's address.
    pub fn addr(&self) -> std::net::SocketAddr {
        if self.family == 6 {
            (std::net::Ipv6Addr::from(self.ip), self.port).into()
        } else {
            let [a, b, c, d, ..] = self.ip;
            (std::net::Ipv4Addr::new(a, b, c, d), self.port).into()
        }
    }
}

fn fd_spec<'a>(r: &mut Rd<'a>) -> Result<FdSpec<'a>, Corrupt> {
    let name = text(r.bytes32()?)?;
    let kind = r.u8()?;
    let path = r.bytes32()?;
    let family = r.u8()?;
    let mut ip = [0u8; 16];
    ip.copy_from_slice(r.take(16)?);
    let port = r.u16()?;
    let backlog = r.u32()?;
    let m = r.u32()?;
    Ok(FdSpec {
        name,
        kind,
        path,
        family,
        ip,
        port,
        backlog,
        mode: (m != u32::MAX).then_some(m),
        uid: opt32(r.i64()?),
        gid: opt32(r.i64()?),
    })
}

/// The compiled `fds:` table of config `buf` ("" when it has none or
/// is not a valid config). Decodes, so validates, the whole buffer.
pub fn fd_table(buf: &[u8]) -> &[u8] {
    match decode(buf) {
        Ok(Compiled::Valid { fds, .. }) => fds,
        _ => &[],
    }
}

/// The entries of a compiled `fds:` table (`Compiled::Valid::fds`);
/// a malformed one yields what it can.
pub fn fd_specs(table: &[u8]) -> impl Iterator<Item = FdSpec<'_>> {
    let mut r = Rd::new(table, Corrupt);
    let n = r.u16().unwrap_or(0);
    (0..n).map_while(move |_| fd_spec(&mut r).ok())
}

fn check_fd_table(table: &[u8]) -> Result<(), Corrupt> {
    let mut r = Rd::new(table, Corrupt);
    for _ in 0..r.u16()? {
        fd_spec(&mut r)?;
    }
    r.done()
}

/// The `globals` section (layout in the file header).
#[allow(clippy::disallowed_methods)]
fn encode_globals(cfg: &Config, warnings: &str) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let mut o = Vec::new();
    let opt = |o: &mut Vec<u8>, b: Option<&[u8]>| {
        o.push(u8::from(b.is_some()));
        if let Some(b) = b {
            put_str(o, b);
        }
    };
    fn path(p: &Option<std::path::PathBuf>) -> Option<&[u8]> {
        p.as_ref().map(|p| p.as_os_str().as_bytes())
    }
    put_str(&mut o, cfg.socket.as_os_str().as_bytes());
    opt(&mut o, path(&cfg.pid_file));
    o.push(u8::from(cfg.socket_group.is_some()));
    if let Some((name, gid)) = &cfg.socket_group {
        put_str(&mut o, name.as_bytes());
        o.extend_from_slice(&gid.to_le_bytes());
    }
    opt(&mut o, path(&cfg.log.path));
    o.push(u8::from(cfg.log.console));
    o.extend_from_slice(&cfg.log.max_size.to_le_bytes());
    o.extend_from_slice(&cfg.log.keep.to_le_bytes());
    let l = &cfg.service_logs;
    opt(&mut o, path(&l.dir));
    o.extend_from_slice(&l.max_size.to_le_bytes());
    o.extend_from_slice(&l.keep.to_le_bytes());
    o.extend_from_slice(&l.buffer.to_le_bytes());
    o.extend_from_slice(&cfg.limits.services.to_le_bytes());
    o.extend_from_slice(&cfg.limits.clients.to_le_bytes());
    opt(&mut o, cfg.hostname.as_ref().map(|h| h.as_bytes()));
    put_str(&mut o, cfg.emergency.as_os_str().as_bytes());
    o.push(u8::from(cfg.early_mounts));
    o.extend_from_slice(&(cfg.mounts.len() as u16).to_le_bytes());
    for m in &cfg.mounts {
        put_str(&mut o, m.source.as_bytes());
        put_str(&mut o, m.target.as_os_str().as_bytes());
        put_str(&mut o, m.fstype.as_bytes());
        o.extend_from_slice(&m.flags.to_le_bytes());
        put_str(&mut o, m.data.as_bytes());
    }
    opt(&mut o, cfg.main.as_ref().map(|m| m.as_bytes()));
    opt(&mut o, path(&cfg.cgroup));
    o.push(u8::from(cfg.events.is_some()));
    if let Some(e) = &cfg.events {
        put_str(&mut o, e.path.as_os_str().as_bytes());
        o.extend_from_slice(&e.max_size.to_le_bytes());
        o.extend_from_slice(&e.keep.to_le_bytes());
    }
    put_str(&mut o, warnings.as_bytes());
    o
}

#[allow(clippy::disallowed_methods)]
fn encode_check(o: &mut Vec<u8>, c: Option<&crate::config::Check>) {
    use crate::config::CheckKind;
    let Some(c) = c else {
        o.push(0);
        return;
    };
    o.push(match c.kind {
        CheckKind::Http { .. } => 1,
        CheckKind::Tcp { .. } => 2,
        CheckKind::Exec { .. } => 3,
        CheckKind::Notify { .. } => 4,
    });
    for v in [c.interval, c.timeout, c.start_period] {
        o.extend_from_slice(&v.to_le_bytes());
    }
    o.extend_from_slice(&c.retries.to_le_bytes());
    o.extend_from_slice(&c.success_threshold.to_le_bytes());
    match &c.kind {
        CheckKind::Http {
            addr,
            host,
            path,
            expect_status,
            ..
        } => {
            put_str(o, addr.to_string().as_bytes());
            put_str(o, host.as_bytes());
            put_str(o, path.as_bytes());
            o.extend_from_slice(&expect_status.unwrap_or(0).to_le_bytes());
        }
        CheckKind::Tcp { addr, .. } => put_str(o, addr.to_string().as_bytes()),
        CheckKind::Exec { command } => {
            o.extend_from_slice(&(command.len() as u16).to_le_bytes());
            for a in command {
                put_str(o, a.as_bytes());
            }
        }
        CheckKind::Notify { fd, watchdog } => {
            o.extend_from_slice(&fd.map_or(-1i32, |f| f as i32).to_le_bytes());
            o.extend_from_slice(&watchdog.unwrap_or(0).to_le_bytes());
        }
    }
}

/// Encodes a failure: the validator's messages.
#[allow(clippy::disallowed_methods)]
pub fn encode_error(text: &str) -> Vec<u8> {
    let mut o = Vec::new();
    o.extend_from_slice(MAGIC);
    o.push(0);
    o.extend_from_slice(&(text.len() as u32).to_le_bytes());
    o.extend_from_slice(text.as_bytes());
    o
}

/// (uid, gid, supplementary groups with gid first, whether to setgroups).
#[allow(clippy::disallowed_methods)]
fn creds(s: &ServiceSpec) -> (Option<u32>, Option<u32>, Vec<u32>, bool) {
    let uid = s.user.as_ref().map(|u| u.1);
    let gid = s
        .group
        .as_ref()
        .map(|g| g.1)
        .or(s.user.as_ref().map(|u| u.2));
    let mut groups = s.supplementary_gids.clone();
    if let Some(g) = gid {
        if !groups.contains(&g) {
            groups.insert(0, g);
        }
    }
    // SAFETY: geteuid never fails.
    let root = unsafe { nix::libc::geteuid() } == 0;
    let set_groups = s.user.is_some() || (s.group.is_some() && root);
    (uid, gid, groups, set_groups)
}

pub fn policy(s: &ServiceSpec) -> Policy {
    let mult = (s.backoff.multiplier * 1000.0).round();
    let mult = if mult.is_finite() && mult >= 1000.0 {
        mult.min(1e6) as u32
    } else {
        1000
    };
    Policy {
        kind: match s.kind {
            CKind::Service => Kind::Service,
            CKind::Oneshot => Kind::Oneshot,
        },
        restart: match s.restart {
            CRestart::Always => Restart::Always,
            CRestart::OnFailure => Restart::OnFailure,
            CRestart::Never => Restart::Never,
        },
        backoff_initial: s.backoff.initial,
        backoff_max: s.backoff.max.max(s.backoff.initial),
        backoff_mult_milli: mult,
        reset_after: s.backoff.reset_after,
        max_restarts: s.max_restarts,
        degraded_after: s.degraded_after,
        stop_signal: s.stop_signal,
        stop_timeout: s.stop_timeout,
        needs_ready: s.healthcheck.readiness.is_some() || s.healthcheck.startup.is_some(),
        start_timeout: s.start_timeout,
    }
}

/// A malformed compiled config (a bug or a truncated pipe).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Corrupt;

/// The shared reader (`src/bytes.rs`), reporting [`Corrupt`].
pub type Rd<'a> = coffey::bytes::Reader<'a, Corrupt>;

/// A list of strings: returns a reader positioned at its items.
fn strs<'a>(r: &mut Rd<'a>) -> Result<Strs<'a>, Corrupt> {
    let n = r.u16()?;
    let start = r.clone();
    for _ in 0..n {
        r.bytes32()?;
    }
    Ok(Strs { rd: start, left: n })
}

/// Iterator over an encoded string list.
#[derive(Clone)]
pub struct Strs<'a> {
    rd: Rd<'a>,
    left: u16,
}

impl<'a> Iterator for Strs<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        self.rd.bytes32().ok()
    }
}

impl Strs<'_> {
    pub fn count_left(&self) -> usize {
        usize::from(self.left)
    }
    /// Same items, byte for byte.
    pub fn same(&self, other: &Strs<'_>) -> bool {
        self.left == other.left && self.clone().zip(other.clone()).all(|(a, b)| a == b)
    }
}

/// One decoded service, borrowing the buffer.
#[derive(Clone)]
pub struct CService<'a> {
    pub name: &'a str,
    pub binary: &'a [u8],
    pub args: Strs<'a>,
    pub env: Strs<'a>,
    pub cwd: &'a [u8],
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Raw u32 LE gids.
    pub groups: &'a [u8],
    pub set_groups: bool,
    /// Why `user`/`group` did not resolve ("user not found: x"); empty
    /// when they did. Every spawn of the service then fails with it.
    pub cred_error: &'a [u8],
    pub umask: Option<u32>,
    /// `rlimits:` entries, raw (see [`CService::rlimits`]).
    pub rlimits_raw: &'a [u8],
    pub policy: Policy,
    /// (name, condition) pairs: raw reader over `count` entries.
    deps: Rd<'a>,
    pub ndeps: u16,
    pub console: bool,
    pub file: &'a [u8],
    /// Ring size: fixed per slot at startup; a change applies to a new
    /// slot only.
    #[allow(dead_code)]
    pub buffer: u32,
    /// Also in `policy`; kept for reload's comparison and tests.
    #[allow(dead_code)]
    pub start_timeout: Option<u64>,
    /// The encoded checks, compared byte for byte by reload.
    pub checks_raw: &'a [u8],
    /// Readiness, liveness, startup.
    pub checks: [Option<CCheck<'a>>; coffey::health::ROLES],
    /// `resources:` (cgroup v2 limits).
    pub limits: super::resources::Limits,
    /// `log.to`: the logger's name, empty for none.
    pub log_to: &'a [u8],
    /// Some service logs to this one: its stdin is a logger pipe.
    pub logger: bool,
    /// `fds:`: `(u8 num | u8 end | u16 entry)*`, by number (see
    /// [`CService::fds`]).
    pub fds_raw: &'a [u8],
    /// LISTEN_FDNAMES's value.
    pub fd_names: &'a [u8],
}

/// One decoded check.
#[derive(Clone)]
pub struct CCheck<'a> {
    pub policy: CheckPolicy,
    pub probe: CProbe<'a>,
}

#[derive(Clone)]
pub enum CProbe<'a> {
    Http {
        addr: &'a str,
        host: &'a str,
        path: &'a str,
        expect: Option<u16>,
    },
    Tcp {
        addr: &'a str,
    },
    Exec {
        command: Strs<'a>,
    },
    Notify {
        fd: Option<i32>,
    },
}

fn check<'a>(r: &mut Rd<'a>) -> Result<Option<CCheck<'a>>, Corrupt> {
    let kind = r.u8()?;
    if kind == 0 {
        return Ok(None);
    }
    let interval = r.u64()?;
    let timeout = r.u64()?;
    let start_period = r.u64()?;
    let retries = r.u32()?;
    let success_threshold = r.u32()?;
    let st = |b: &'a [u8]| core::str::from_utf8(b).map_err(|_| Corrupt);
    let mut mode = Mode::Probe;
    let probe = match kind {
        1 => {
            let addr = st(r.bytes32()?)?;
            let host = st(r.bytes32()?)?;
            let path = st(r.bytes32()?)?;
            let e = r.u16()?;
            CProbe::Http {
                addr,
                host,
                path,
                expect: (e != 0).then_some(e),
            }
        }
        2 => CProbe::Tcp {
            addr: st(r.bytes32()?)?,
        },
        3 => CProbe::Exec { command: strs(r)? },
        4 => {
            let fd = r.i32()?;
            let w = r.u64()?;
            mode = Mode::Passive {
                watchdog: (w != 0).then_some(w),
            };
            CProbe::Notify {
                fd: (fd >= 0).then_some(fd),
            }
        }
        _ => return Err(Corrupt),
    };
    Ok(Some(CCheck {
        policy: CheckPolicy {
            mode,
            interval,
            timeout,
            start_period,
            retries,
            success_threshold,
        },
        probe,
    }))
}

impl<'a> CService<'a> {
    pub fn deps(&self) -> impl Iterator<Item = (&'a [u8], Condition)> + '_ {
        let mut rd = self.deps.clone();
        (0..self.ndeps).filter_map(move |_| {
            let n = rd.bytes32().ok()?;
            let c = match rd.u8().ok()? {
                0 => Condition::Started,
                1 => Condition::Healthy,
                _ => Condition::Completed,
            };
            Some((n, c))
        })
    }
    /// `fds:` items: (number in the child, entry index, end: 0 whole,
    /// 1 a pipe's read end, 2 its write end).
    pub fn fds(&self) -> impl Iterator<Item = (u8, u16, u8)> + 'a {
        self.fds_raw.chunks_exact(4).map(|c| match c {
            [num, end, lo, hi] => (*num, u16::from_le_bytes([*lo, *hi]), *end),
            _ => (0, 0, 0),
        })
    }

    pub fn gids(&self) -> impl Iterator<Item = u32> + '_ {
        self.groups.chunks_exact(4).map(|c| {
            u32::from_le_bytes([
                c.first().copied().unwrap_or(0),
                c.get(1).copied().unwrap_or(0),
                c.get(2).copied().unwrap_or(0),
                c.get(3).copied().unwrap_or(0),
            ])
        })
    }
}

/// One encoded `rlimits:` entry: resource, soft, hard.
const RLIMIT_LEN: usize = 17;

/// A decoded `rlimits:` entry: (RLIMIT_* number, soft, hard).
pub type Rlimit = (u32, u64, u64);

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    for (d, s) in a.iter_mut().zip(b) {
        *d = *s;
    }
    u64::from_le_bytes(a)
}

impl CService<'_> {
    /// The `rlimits:` of the service, in config order.
    pub fn rlimits(&self) -> impl Iterator<Item = Rlimit> + '_ {
        self.rlimits_raw.chunks_exact(RLIMIT_LEN).map(|c| {
            let (res, rest) = c.split_at(1);
            let (soft, hard) = rest.split_at(8);
            (
                u32::from(res.first().copied().unwrap_or(0)),
                le64(soft),
                le64(hard),
            )
        })
    }
}

fn opt32(v: i64) -> Option<u32> {
    u32::try_from(v).ok()
}

fn service<'a>(r: &mut Rd<'a>) -> Result<CService<'a>, Corrupt> {
    let name = core::str::from_utf8(r.bytes32()?).map_err(|_| Corrupt)?;
    let binary = r.bytes32()?;
    let args = strs(r)?;
    let env = strs(r)?;
    let cwd = r.bytes32()?;
    let uid = opt32(r.i64()?);
    let gid = opt32(r.i64()?);
    let ng = usize::from(r.u16()?);
    let groups = r.take(ng.checked_mul(4).ok_or(Corrupt)?)?;
    let set_groups = r.u8()? != 0;
    let cred_error = r.bytes32()?;
    let umask = opt32(r.i64()?);
    let nl = usize::from(r.u8()?);
    let rlimits_raw = r.take(nl.checked_mul(RLIMIT_LEN).ok_or(Corrupt)?)?;
    let kind = if r.u8()? == 1 {
        Kind::Oneshot
    } else {
        Kind::Service
    };
    let restart = match r.u8()? {
        0 => Restart::Always,
        1 => Restart::OnFailure,
        _ => Restart::Never,
    };
    let backoff_initial = r.u64()?;
    let backoff_max = r.u64()?;
    let reset_after = r.u64()?;
    let stop_timeout = r.u64()?;
    let backoff_mult_milli = r.u32()?;
    let max_restarts = r.u32()?;
    let degraded_after = r.u32()?;
    let stop_signal = r.i32()?;
    let ndeps = r.u16()?;
    let deps = r.clone();
    for _ in 0..ndeps {
        r.bytes32()?;
        r.u8()?;
    }
    let console = r.u8()? != 0;
    let file = r.bytes32()?;
    let buffer = r.u32()?;
    let st = r.u64()?;
    let start_timeout = (st != u64::MAX).then_some(st);
    let checks_raw = r.bytes32()?;
    let mut cr = Rd::new(checks_raw, Corrupt);
    let checks = [check(&mut cr)?, check(&mut cr)?, check(&mut cr)?];
    cr.done()?;
    let limits = super::resources::Limits {
        memory_max: r.u64()?,
        pids_max: r.u32()?,
        cpu_weight: r.u32()?,
    };
    let log_to = r.bytes32()?;
    let logger = r.u8()? != 0;
    let nfds = usize::from(r.u8()?);
    let fds_raw = r.take(nfds.checked_mul(4).ok_or(Corrupt)?)?;
    let fd_names = r.bytes32()?;
    Ok(CService {
        name,
        binary,
        args,
        env,
        cwd,
        uid,
        gid,
        groups,
        set_groups,
        cred_error,
        umask,
        rlimits_raw,
        policy: Policy {
            kind,
            restart,
            backoff_initial,
            backoff_max,
            backoff_mult_milli,
            reset_after,
            max_restarts,
            degraded_after,
            stop_signal,
            stop_timeout,
            // Ready once readiness passes, or startup without readiness.
            needs_ready: checks[0].is_some() || checks[2].is_some(),
            start_timeout,
        },
        deps,
        ndeps,
        console,
        file,
        buffer,
        start_timeout,
        checks_raw,
        checks,
        limits,
        log_to,
        logger,
        fds_raw,
        fd_names,
    })
}

/// The decoded form: either the validator's messages or the services.
pub enum Compiled<'a> {
    Invalid(&'a str),
    Valid {
        shutdown_timeout: u64,
        count: u16,
        services: Rd<'a>,
        /// The `fds:` table (see [`fd_specs`]).
        fds: &'a [u8],
    },
}

pub fn decode(buf: &[u8]) -> Result<Compiled<'_>, Corrupt> {
    let mut r = Rd::new(buf, Corrupt);
    if r.take(4)? != MAGIC {
        return Err(Corrupt);
    }
    if r.u8()? == 0 {
        let t = r.bytes32()?;
        return Ok(Compiled::Invalid(
            core::str::from_utf8(t).unwrap_or("invalid config"),
        ));
    }
    // Reload skips the globals: only startup reads them (`globals`).
    r.bytes32()?;
    let shutdown_timeout = r.u64()?;
    let count = r.u16()?;
    // Validate the whole buffer once, so iteration cannot fail later.
    let start = r.clone();
    for _ in 0..count {
        service(&mut r)?;
    }
    let fds = r.bytes32()?;
    check_fd_table(fds)?;
    r.done()?;
    Ok(Compiled::Valid {
        shutdown_timeout,
        count,
        services: start,
        fds,
    })
}

/// Copies a valid compiled config into `out` with an empty globals
/// section: what reload keeps, which skips the globals (the validator's
/// warnings among them, read once at startup). Returns the length, or
/// None when `buf` is not a valid config or `out` is too small.
pub fn without_globals(buf: &[u8], out: &mut [u8]) -> Option<usize> {
    let mut r = Rd::new(buf, Corrupt);
    let head = r.take(5).ok()?;
    if head.get(..4)? != MAGIC || head.get(4) != Some(&1) {
        return None;
    }
    r.bytes32().ok()?;
    let rest = buf.get(r.pos()..)?;
    let len = head.len() + 4 + rest.len();
    let out = out.get_mut(..len)?;
    let (h, tail) = out.split_at_mut(head.len());
    h.copy_from_slice(head);
    let (zero, tail) = tail.split_at_mut(4);
    zero.copy_from_slice(&0u32.to_le_bytes());
    tail.copy_from_slice(rest);
    Some(len)
}

/// The decoded `globals` section, borrowing the buffer (startup only:
/// `globals.rs` makes its owned copy).
pub struct CGlobals<'a> {
    pub socket: &'a [u8],
    pub pid_file: Option<&'a [u8]>,
    pub socket_group: Option<(&'a str, u32)>,
    pub log_path: Option<&'a [u8]>,
    pub log_console: bool,
    pub log_max_size: u64,
    pub log_keep: u32,
    pub logs_dir: Option<&'a [u8]>,
    pub logs_max_size: u64,
    pub logs_keep: u32,
    pub logs_buffer: u32,
    pub limit_services: u32,
    pub limit_clients: u32,
    pub hostname: Option<&'a str>,
    pub emergency: &'a [u8],
    pub early_mounts: bool,
    mounts: Rd<'a>,
    nmounts: u16,
    pub main: Option<&'a str>,
    pub cgroup: Option<&'a [u8]>,
    /// `coffey.events`: (path, max_size, keep).
    pub events: Option<(&'a [u8], u64, u32)>,
    /// The validator's warnings, one a line; empty if none.
    pub warnings: &'a str,
}

/// One `coffey.mounts` entry of [`CGlobals`].
pub struct CMount<'a> {
    pub source: &'a str,
    pub target: &'a [u8],
    pub fstype: &'a str,
    pub flags: u64,
    pub data: &'a str,
}

fn text(b: &[u8]) -> Result<&str, Corrupt> {
    core::str::from_utf8(b).map_err(|_| Corrupt)
}

fn opt<'a, T>(
    r: &mut Rd<'a>,
    f: impl FnOnce(&mut Rd<'a>) -> Result<T, Corrupt>,
) -> Result<Option<T>, Corrupt> {
    match r.u8()? {
        0 => Ok(None),
        1 => f(r).map(Some),
        _ => Err(Corrupt),
    }
}

fn mount<'a>(r: &mut Rd<'a>) -> Result<CMount<'a>, Corrupt> {
    Ok(CMount {
        source: text(r.bytes32()?)?,
        target: r.bytes32()?,
        fstype: text(r.bytes32()?)?,
        flags: r.u64()?,
        data: text(r.bytes32()?)?,
    })
}

/// Decodes the `globals` section of a valid compiled config (every
/// length checked, nothing allocated).
pub fn globals(buf: &[u8]) -> Result<CGlobals<'_>, Corrupt> {
    let mut top = Rd::new(buf, Corrupt);
    if top.take(4)? != MAGIC || top.u8()? != 1 {
        return Err(Corrupt);
    }
    let r = &mut Rd::new(top.bytes32()?, Corrupt);
    let socket = r.bytes32()?;
    let pid_file = opt(r, |r| r.bytes32())?;
    let socket_group = opt(r, |r| Ok((text(r.bytes32()?)?, r.u32()?)))?;
    let log_path = opt(r, |r| r.bytes32())?;
    let log_console = r.u8()? != 0;
    let (log_max_size, log_keep) = (r.u64()?, r.u32()?);
    let logs_dir = opt(r, |r| r.bytes32())?;
    let (logs_max_size, logs_keep, logs_buffer) = (r.u64()?, r.u32()?, r.u32()?);
    let (limit_services, limit_clients) = (r.u32()?, r.u32()?);
    let hostname = opt(r, |r| text(r.bytes32()?))?;
    let emergency = r.bytes32()?;
    let early_mounts = r.u8()? != 0;
    let nmounts = r.u16()?;
    let mounts = r.clone();
    for _ in 0..nmounts {
        mount(r)?;
    }
    let main = opt(r, |r| text(r.bytes32()?))?;
    let cgroup = opt(r, |r| r.bytes32())?;
    let events = opt(r, |r| Ok((r.bytes32()?, r.u64()?, r.u32()?)))?;
    let warnings = text(r.bytes32()?)?;
    r.done()?;
    Ok(CGlobals {
        socket,
        pid_file,
        socket_group,
        log_path,
        log_console,
        log_max_size,
        log_keep,
        logs_dir,
        logs_max_size,
        logs_keep,
        logs_buffer,
        limit_services,
        limit_clients,
        hostname,
        emergency,
        early_mounts,
        mounts,
        nmounts,
        main,
        cgroup,
        events,
        warnings,
    })
}

impl<'a> CGlobals<'a> {
    /// The `coffey.mounts` entries, in order.
    pub fn mounts(&self) -> impl Iterator<Item = CMount<'a>> + '_ {
        let mut r = self.mounts.clone();
        (0..self.nmounts).map_while(move |_| mount(&mut r).ok())
    }
}

/// Iterates the services of a decoded `Valid` config.
pub fn services<'a>(rd: &Rd<'a>, count: u16) -> impl Iterator<Item = CService<'a>> {
    let mut r = rd.clone();
    (0..count).map_while(move |_| service(&mut r).ok())
}

/// Like [`services`], with each service's byte offset in the buffer, so
/// reload can come back to one in O(1) ([`service_at`], [`name_at`]).
pub fn services_at<'a>(rd: &Rd<'a>, count: u16) -> impl Iterator<Item = (u32, CService<'a>)> {
    let mut r = rd.clone();
    (0..count).map_while(move |_| {
        let at = u32::try_from(r.pos()).ok()?;
        service(&mut r).ok().map(|c| (at, c))
    })
}

/// The service at offset `at` (from [`services_at`]) of a decoded `buf`.
pub fn service_at(buf: &[u8], at: u32) -> Option<CService<'_>> {
    let pos = usize::try_from(at).ok()?;
    service(&mut Rd::at(buf, pos, Corrupt)).ok()
}

/// Only the name of the service at offset `at` (its first field).
pub fn name_at(buf: &[u8], at: u32) -> Option<&str> {
    let pos = usize::try_from(at).ok()?;
    core::str::from_utf8(Rd::at(buf, pos, Corrupt).bytes32().ok()?).ok()
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, clippy::disallowed_macros)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let dir = std::env::temp_dir().join(format!("cfy-compiled-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.yaml");
        std::fs::write(
            &p,
            "services:\n  - name: a\n    binary: /bin/sh\n    args: [-c, 'echo hi']\n    env: [X=1]\n  - name: b\n    binary: /bin/true\n    depends_on: [{name: a, condition: started}]\n    type: oneshot\n    log: {to: a}\n",
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
            panic!()
        };
        let v: Vec<CService> = services(&rd, count).collect();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].name, "a");
        assert_eq!(
            v[0].args.clone().collect::<Vec<_>>(),
            [b"-c".as_slice(), b"echo hi"]
        );
        assert_eq!(v[0].env.clone().next(), Some(b"X=1".as_slice()));
        assert_eq!(v[1].policy.kind, Kind::Oneshot);
        // b logs to a: a is a logger, b is not.
        assert_eq!((v[0].log_to, v[0].logger), (&b""[..], true));
        assert_eq!((v[1].log_to, v[1].logger), (&b"a"[..], false));
        assert_eq!(
            v[1].deps().next(),
            Some((b"a".as_slice(), Condition::Started))
        );
        // Offsets lead back to the same services.
        for (at, c) in services_at(&rd, count) {
            assert_eq!(service_at(&bytes, at).unwrap().name, c.name);
            assert_eq!(name_at(&bytes, at), Some(c.name));
        }
        assert_eq!(services_at(&rd, count).count(), 2);
        for k in 0..bytes.len() {
            assert!(decode(&bytes[..k]).is_err(), "truncated at {k}");
        }
        let e = encode_error("bad: x");
        assert!(matches!(decode(&e), Ok(Compiled::Invalid("bad: x"))));
    }

    /// `user:`'s login env follows the service's own entries, and an
    /// unresolved user reaches the slot, whose spawn then fails (without a
    /// fork) with the reason.
    #[test]
    fn login_env_and_unresolved_user_reach_the_slot() {
        let dir = std::env::temp_dir().join(format!("cfy-compiled-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.yaml");
        std::fs::write(
            &p,
            "services:\n  - name: a\n    binary: /bin/sh\n    env: [X=1]\n    user: root\n  - name: b\n    binary: /bin/sh\n    user: no-such-user-coffey\n",
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
            panic!()
        };
        let v: Vec<CService> = services(&rd, count).collect();
        let env: Vec<&[u8]> = v[0].env.clone().collect();
        assert_eq!(env[0], b"X=1");
        assert_eq!(env[1], b"HOME=/root");
        assert_eq!(env[2], b"USER=root");
        assert_eq!(env[3], b"LOGNAME=root");
        assert!(env[4].starts_with(b"SHELL=/"), "{:?}", env[4]);
        assert_eq!(v[0].cred_error, b"");
        assert_eq!(v[1].cred_error, b"user not found: no-such-user-coffey");

        let base = super::super::spawn::BaseEnv::capture();
        let mut arena = super::super::arena::ExecArena::new(64 * 1024).unwrap();
        let mut prep = super::super::spawn::Prepared::new(-1, -1);
        prep.fill(&mut arena, &v[1], &base, None).unwrap();
        assert_eq!(prep.cred_error(), "user not found: no-such-user-coffey");
        let mut stack = super::super::spawn::Stack::new().unwrap();
        let err = super::super::spawn::spawn(&prep, -1, &mut stack).unwrap_err();
        assert_eq!(err.stage, coffey::sys::Stage::User);
        let mut text = String::new();
        super::super::words::spawn_failed(&mut text, err, Some(&prep));
        assert_eq!(text, "user not found: no-such-user-coffey");
        prep.fill(&mut arena, &v[0], &base, None).unwrap();
        assert_eq!(prep.cred_error(), "");
    }
}
