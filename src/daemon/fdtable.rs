//! The `fds:` table's descriptors: created once, at startup, before the
//! allocator is sealed, and held by the daemon for as long as it runs.
//!
//! Holding them is the point: a listen socket stays bound and listening
//! while its service restarts (clients queue in the backlog and the next
//! run accepts them: no connection is refused), and a pipe between two
//! services keeps both ends open while either restarts. Every descriptor
//! is close-on-exec here; the child gets its own at their numbers
//! (`spawn.rs`). An entry that cannot be created (a port in use, a missing
//! directory) is logged and remembered with its errno: the services that
//! name it fail to start with that reason and retry with their backoff,
//! each retry trying to create it again, and everything else runs. The slots are fixed at startup; a reload
//! keeps the entries whose spec is unchanged, creates the new ones in free
//! slots and closes the removed ones ([`FdTable::plan`], then
//! [`FdTable::apply`]). `coffeyd reexec` hands the descriptors to
//! the new binary (records in its handoff, see `reexec.rs`), which takes
//! each for the entry of the same spec instead of creating it again (a
//! running service still holds the old listen socket: a new one could not
//! be bound). This file must not allocate after startup: lookups are
//! plain indexing.

use super::compiled::{self, FdSpec};
use super::log::{log, Log};
use nix::libc;
use std::os::fd::RawFd;

/// One slot: an entry's descriptor (a pipe's read end), a pipe's write
/// end (-1 otherwise), or the errno that creating it failed with.
#[derive(Clone, Copy, Debug)]
struct Held {
    fd: RawFd,
    write: RawFd,
    errno: i32,
    /// The entry's spec, hashed: what a reload and a reexec match on.
    hash: u32,
    /// Holds an entry of the running config.
    used: bool,
    /// Kept by the reload being planned.
    keep: bool,
    /// A unix socket's path (`path_len` bytes), removed with the entry.
    path: [u8; 108],
    path_len: u8,
}

const FREE: Held = Held {
    fd: -1,
    write: -1,
    errno: 0,
    hash: 0,
    used: false,
    keep: false,
    path: [0; 108],
    path_len: 0,
};

/// Tag of this file's records in the reexec handoff (`@fd,HASH,FD,WRITE;`:
/// older binaries skip records of the wrong shape).
const HANDOFF: &str = "@fd";

/// Slots for reloads to add entries in, beyond the startup config's.
pub const SPARE: usize = 8;

/// No slot (a new entry, before the reload creates it).
const NEW: u16 = u16::MAX;

/// The `fds:` table's slots (the startup config's entries, twice over,
/// and [`SPARE`] more: fixed at startup, as the service slots are), and
/// which slot each entry of the running config is in.
pub struct FdTable {
    held: Box<[Held]>,
    /// The slot of each entry of the running config, by its index.
    slot: Box<[u16]>,
    /// The same for the reload being planned (`NEW`: to create).
    next: Box<[u16]>,
}

impl FdTable {
    /// Startup only: creates every entry of the compiled `table`.
    #[allow(clippy::disallowed_methods, clippy::disallowed_macros)]
    pub fn open(table: &[u8], log: &mut Log) -> FdTable {
        let n = compiled::fd_specs(table).count();
        let cap = (2 * n + SPARE).min(usize::from(NEW));
        let mut t = FdTable {
            held: vec![FREE; cap].into_boxed_slice(),
            slot: vec![NEW; cap].into_boxed_slice(),
            next: vec![NEW; cap].into_boxed_slice(),
        };
        let mut handed = handed_over();
        for (k, e) in compiled::fd_specs(table).enumerate() {
            let h = spec_hash(&e);
            let got = adopt(&mut handed, h).map_or_else(|| create(&e), Ok);
            if let (Some(d), Some(s)) = (t.held.get_mut(k), t.slot.get_mut(k)) {
                *d = held(&e, h, got, log);
                *s = k as u16;
            }
        }
        // Entries the new config no longer has.
        for (_, fd, write) in handed {
            super::close_fd(fd);
            super::close_fd(write);
        }
        t
    }

    /// Reload, planning: matches each entry of the new `table` with a
    /// slot holding the same spec (name included), and checks that the
    /// new ones fit the free slots. Changes no descriptor.
    pub fn plan(&mut self, table: &[u8]) -> Result<(), (usize, usize)> {
        for h in self.held.iter_mut() {
            h.keep = false;
        }
        let mut new = 0usize;
        for (k, e) in compiled::fd_specs(table).enumerate() {
            let h = spec_hash(&e);
            let found = self
                .held
                .iter()
                .position(|x| x.used && !x.keep && x.hash == h);
            if let Some(i) = found {
                if let Some(x) = self.held.get_mut(i) {
                    x.keep = true;
                }
            } else {
                new += 1;
            }
            // Past the slots: counted, refused below.
            if let Some(d) = self.next.get_mut(k) {
                *d = found.map_or(NEW, |i| i as u16);
            }
        }
        // New entries go in slots free before this reload (a removed
        // entry's slot is not reused by the same reload).
        let free = self.held.iter().filter(|h| !h.used).count();
        if new > free {
            return Err((new, free));
        }
        Ok(())
    }

    /// Reload, applying the last [`plan`](Self::plan) for `table`:
    /// creates the new entries, closes the removed ones (a unix socket's
    /// file too). Never fails: an entry that cannot be created fails its
    /// services, as at startup.
    pub fn apply(&mut self, table: &[u8], log: &mut Log) {
        let mut cursor = 0usize;
        for (k, e) in compiled::fd_specs(table).enumerate() {
            let Some(&planned) = self.next.get(k) else {
                break;
            };
            let s = if planned != NEW {
                planned
            } else {
                while self.held.get(cursor).is_some_and(|h| h.used) {
                    cursor += 1;
                }
                let h = spec_hash(&e);
                let got = create(&e);
                let Some(d) = self.held.get_mut(cursor) else {
                    break;
                };
                *d = held(&e, h, got, log);
                d.keep = true;
                log!(log, "fds entry '{}' created", e.name);
                cursor as u16
            };
            if let Some(d) = self.slot.get_mut(k) {
                *d = s;
            }
        }
        for h in self.held.iter_mut().filter(|h| h.used && !h.keep) {
            close_entry(h);
            *h = FREE;
        }
        for h in self.held.iter_mut() {
            h.keep = false;
        }
    }

    /// Whether an entry of the running config could not be created.
    pub fn any_failed(&self) -> bool {
        self.held.iter().any(|h| h.used && h.errno != 0)
    }

    /// Tries again to create the entries of the running config (`table`)
    /// that failed, as a service using one is about to start: a port in
    /// use at startup, or a directory not mounted yet, may be there now.
    /// A success is logged; a failure keeps its newest errno, which the
    /// service's failure reports.
    pub fn retry_failed(&mut self, table: &[u8], log: &mut Log) {
        for (k, e) in compiled::fd_specs(table).enumerate() {
            let s = usize::from(self.slot_of(k as u16));
            let Some(h) = self.held.get_mut(s).filter(|h| h.used && h.errno != 0) else {
                continue;
            };
            match create(&e) {
                Ok((fd, write)) => {
                    (h.fd, h.write, h.errno) = (fd, write, 0);
                    log!(log, "fds entry '{}' created (it had failed)", e.name);
                }
                Err((_, errno)) => h.errno = errno,
            }
        }
    }

    /// The slot of entry `k` of the running config.
    pub fn slot_of(&self, k: u16) -> u16 {
        self.slot.get(usize::from(k)).copied().unwrap_or(NEW)
    }

    /// Reexec: the handoff records of the open entries. Whether they fit.
    pub fn handoff(&self, w: &mut impl core::fmt::Write) -> bool {
        self.held
            .iter()
            .filter(|h| h.used && h.fd >= 0)
            .all(|h| write!(w, "{HANDOFF},{},{},{};", h.hash, h.fd, h.write).is_ok())
    }

    /// Reexec: lets the new image inherit the descriptors (`true`), or
    /// takes that back (the exec failed).
    pub fn inherit(&self, yes: bool) {
        super::set_cloexec(self.held.iter().flat_map(|h| [h.fd, h.write]), !yes);
    }

    /// The descriptor in slot `slot` (`end`: 0 the entry, 1 a pipe's read
    /// end, 2 its write end), or the errno it failed with.
    pub fn get(&self, slot: u16, end: u8) -> Result<RawFd, i32> {
        let h = self
            .held
            .get(usize::from(slot))
            .filter(|h| h.used)
            .ok_or(libc::EBADF)?;
        let fd = if end == 2 { h.write } else { h.fd };
        match (h.errno, fd) {
            (0, fd) if fd >= 0 => Ok(fd),
            (0, _) => Err(libc::EBADF),
            (e, _) => Err(e),
        }
    }
}

/// The slot for entry `e` made (or not) by `got`, logged when it failed.
fn held(e: &FdSpec<'_>, hash: u32, got: Result<(RawFd, RawFd), Failure>, log: &mut Log) -> Held {
    let mut h = Held {
        hash,
        used: true,
        ..FREE
    };
    if e.kind == compiled::FD_UNIX && e.path.len() < h.path.len() {
        if let Some(d) = h.path.get_mut(..e.path.len()) {
            d.copy_from_slice(e.path);
            h.path_len = e.path.len() as u8;
        }
    }
    match got {
        Ok((fd, write)) => (h.fd, h.write) = (fd, write),
        Err((what, errno)) => {
            log!(
                log,
                "error: fds entry '{}': {what}: {} (the services using it fail to start)",
                e.name,
                nix::errno::Errno::from_raw(errno).desc()
            );
            h.errno = errno;
        }
    }
    h
}

/// Closes an entry's descriptors, and removes a unix socket's file (the
/// entry is gone from the config).
fn close_entry(h: &Held) {
    super::close_fd(h.fd);
    super::close_fd(h.write);
    let n = usize::from(h.path_len);
    if n > 0 && h.errno == 0 {
        let mut p = [0u8; 109];
        if let Some(d) = p.get_mut(..n) {
            d.copy_from_slice(h.path.get(..n).unwrap_or(&[]));
            // SAFETY: a NUL-terminated path.
            unsafe { libc::unlink(p.as_ptr().cast()) };
        }
    }
}

impl Drop for FdTable {
    fn drop(&mut self) {
        for h in self.held.iter().filter(|h| h.used) {
            super::close_fd(h.fd);
            super::close_fd(h.write);
        }
    }
}

/// The descriptors a previous binary handed over: (hash, fd, write).
/// Startup only (the variable is removed later by `reexec::take_handoff`).
#[allow(clippy::disallowed_methods)]
fn handed_over() -> Vec<(u32, RawFd, RawFd)> {
    let Ok(v) = std::env::var(super::reexec::ENV) else {
        return Vec::new();
    };
    v.split(';')
        .filter_map(|r| {
            let mut f = r.split(',');
            if f.next() != Some(HANDOFF) {
                return None;
            }
            let h = f.next()?.parse().ok()?;
            let fd = f.next()?.parse().ok()?;
            let write = f.next()?.parse().ok()?;
            Some((h, fd, write))
        })
        .collect()
}

/// Takes the handed-over descriptors of the entry hashed `h`, back to
/// close-on-exec.
fn adopt(handed: &mut Vec<(u32, RawFd, RawFd)>, h: u32) -> Option<(RawFd, RawFd)> {
    let k = handed.iter().position(|(x, _, _)| *x == h)?;
    let (_, fd, write) = handed.swap_remove(k);
    super::set_cloexec([fd, write], true);
    Some((fd, write))
}

/// FNV-1a over every field of the spec: an entry changed across a reexec
/// is created anew.
pub fn spec_hash(e: &FdSpec<'_>) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |b: &[u8]| {
        for &x in b {
            h = (h ^ u32::from(x)).wrapping_mul(0x0100_0193);
        }
        h = (h ^ 0xff).wrapping_mul(0x0100_0193);
    };
    eat(e.name.as_bytes());
    eat(&[e.kind, e.family]);
    eat(e.path);
    eat(&e.ip);
    eat(&e.port.to_le_bytes());
    eat(&e.backlog.to_le_bytes());
    for v in [e.mode, e.uid, e.gid] {
        eat(&v.map_or(u64::MAX, u64::from).to_le_bytes());
    }
    h
}

type Failure = (&'static str, i32);

fn last(what: &'static str) -> Failure {
    (what, super::errno())
}

/// Makes one entry: (descriptor, pipe write end or -1).
fn create(e: &FdSpec<'_>) -> Result<(RawFd, RawFd), Failure> {
    match e.kind {
        compiled::FD_TCP | compiled::FD_UDP => inet(e).map(|fd| (fd, -1)),
        compiled::FD_UNIX => unix(e).map(|fd| (fd, -1)),
        compiled::FD_READ | compiled::FD_WRITE | compiled::FD_APPEND => file(e).map(|fd| (fd, -1)),
        _ => {
            let mut p = [-1; 2];
            // SAFETY: a valid out array.
            if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
                return Err(last("cannot create the pipe"));
            }
            Ok((p[0], p[1]))
        }
    }
}

/// A NUL-terminated copy of `path` on the stack.
fn cpath(path: &[u8]) -> Option<[u8; libc::PATH_MAX as usize]> {
    let mut buf = [0u8; libc::PATH_MAX as usize];
    buf.get_mut(..path.len())?.copy_from_slice(path);
    (!path.contains(&0) && path.len() < buf.len()).then_some(buf)
}

fn file(e: &FdSpec<'_>) -> Result<RawFd, Failure> {
    let flags = match e.kind {
        compiled::FD_READ => libc::O_RDONLY,
        compiled::FD_WRITE => libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
        _ => libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND,
    };
    let p = cpath(e.path).ok_or(("bad path", libc::ENAMETOOLONG))?;
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(p.as_ptr().cast(), flags | libc::O_CLOEXEC, 0o666) };
    if fd < 0 {
        return Err(last("cannot open the file"));
    }
    Ok(fd)
}

/// Closes `fd` and returns `f` (the errno taken first).
fn drop_with(fd: RawFd, f: Failure) -> Failure {
    super::close_fd(fd);
    f
}

fn inet(e: &FdSpec<'_>) -> Result<RawFd, Failure> {
    let udp = e.kind == compiled::FD_UDP;
    let ty = if udp {
        libc::SOCK_DGRAM
    } else {
        libc::SOCK_STREAM
    };
    let dom = if e.family == 6 {
        libc::AF_INET6
    } else {
        libc::AF_INET
    };
    // SAFETY: plain socket call.
    let fd = unsafe { libc::socket(dom, ty | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(last("cannot create the socket"));
    }
    let one: libc::c_int = 1;
    // SAFETY: our socket; a valid int option.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            core::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    let (ss, len) = super::sockaddr::of(&e.addr());
    // SAFETY: a valid sockaddr of `len` bytes.
    let r = unsafe { libc::bind(fd, (&ss as *const libc::sockaddr_storage).cast(), len) };
    if r < 0 {
        return Err(drop_with(fd, last("cannot bind")));
    }
    listen(fd, e, udp)
}

fn listen(fd: RawFd, e: &FdSpec<'_>, udp: bool) -> Result<RawFd, Failure> {
    let backlog = libc::c_int::try_from(e.backlog).unwrap_or(libc::c_int::MAX);
    // SAFETY: our bound socket.
    if !udp && unsafe { libc::listen(fd, backlog) } < 0 {
        return Err(drop_with(fd, last("cannot listen")));
    }
    Ok(fd)
}

fn unix(e: &FdSpec<'_>) -> Result<RawFd, Failure> {
    let (a, len) =
        super::sockaddr::unix(e.path).ok_or(("socket path too long", libc::ENAMETOOLONG))?;
    let path = a.sun_path.as_ptr();
    // A stale socket of an earlier run: remove it (only a socket: any
    // other file at the path is a config error the bind reports).
    // SAFETY: a NUL-terminated path; an out struct.
    unsafe {
        let mut st: libc::stat = core::mem::zeroed();
        if libc::lstat(path, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFSOCK {
            libc::unlink(path);
        }
    }
    // SAFETY: plain socket call.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(last("cannot create the socket"));
    }
    // SAFETY: a valid sockaddr_un of `len` bytes.
    let r = unsafe { libc::bind(fd, (&a as *const libc::sockaddr_un).cast(), len) };
    if r < 0 {
        return Err(drop_with(fd, last("cannot bind")));
    }
    // SAFETY: the path we bound.
    if let Some(m) = e.mode {
        if unsafe { libc::chmod(path, m as libc::mode_t) } < 0 {
            return Err(drop_with(fd, last("cannot chmod the socket")));
        }
    }
    if e.uid.is_some() || e.gid.is_some() {
        let (u, g) = (e.uid.unwrap_or(u32::MAX), e.gid.unwrap_or(u32::MAX));
        // SAFETY: the path we bound; -1 keeps an id.
        if unsafe { libc::chown(path, u, g) } < 0 {
            return Err(drop_with(fd, last("cannot chown the socket")));
        }
    }
    listen(fd, e, false)
}
