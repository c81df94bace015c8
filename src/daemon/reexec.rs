//! `coffeyd reexec`: replace the running binary without stopping services.
//!
//! The daemon writes a small handoff record into a buffer preallocated at
//! startup, clears close-on-exec on every service's output pipes, and
//! execs itself with `COFFEY_REEXEC=...` in the environment. Children stay
//! children across execve (same pid), so the new process adopts them: the
//! same pids, pipes, restart and failure counters. CLOCK_MONOTONIC is
//! system-wide, so `since` stays valid.
//!
//! Record: `v1;NAME,PID,SINCE_MS,RESTARTS,FAILURES,WANT,OUT_R,ERR_R,OUT_W,ERR_W[,IN_R,IN_W];...`
//! where PID is 0 for a service with no process and WANT is `u` or `d`;
//! IN_R and IN_W, a logger service's pipe, are there only for a logger.

use super::log::log;
use super::log::Log;
use super::Services;
use coffey::service::{State, Want};
use coffey::supervisor::Supervisor;
use core::fmt::Write as _;
use nix::libc;
use std::ffi::{CStr, CString};

pub const ENV: &str = "COFFEY_REEXEC";
const BUF: usize = 64 * 1024;

pub struct Reexec {
    exe: CString,
    argv_strs: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    /// `COFFEY_REEXEC=...\0`, written at reexec time.
    buf: &'static mut [u8],
    envp: Box<[*const libc::c_char]>,
}

impl Reexec {
    /// Startup: argv for the new process, and the buffers.
    #[allow(clippy::disallowed_methods, clippy::disallowed_macros)]
    pub fn new(exe: CString, config: &std::path::Path, container: bool, base_len: usize) -> Reexec {
        use std::os::unix::ffi::OsStrExt;
        let mut argv_strs = vec![
            c"coffeyd".to_owned(),
            c"-c".to_owned(),
            CString::new(config.as_os_str().as_bytes()).unwrap_or_default(),
        ];
        if container {
            argv_strs.push(c"--container".to_owned());
        }
        let mut argv: Vec<*const libc::c_char> = argv_strs.iter().map(|c| c.as_ptr()).collect();
        argv.push(core::ptr::null());
        Reexec {
            exe,
            argv_strs,
            argv,
            buf: super::slab::zeroed(BUF).unwrap_or(&mut []),
            envp: vec![core::ptr::null(); base_len + 2].into_boxed_slice(),
        }
    }
}

/// Execs the new binary. Returns only if that failed (logged).
pub fn exec(sup: &Supervisor<'_>, reexec: &mut Reexec, svc: &Services, log: &mut Log) {
    let Services {
        slots, base_env, ..
    } = svc;
    let mut w = super::log::CWriter::new(reexec.buf);
    let mut ok = write!(w, "{ENV}=v1;").is_ok();
    for (i, s) in sup.services().iter().enumerate() {
        let Some(slot) = slots.get(i) else { continue };
        if slot.retired {
            continue;
        }
        let (pid, since) = match s.state {
            State::Starting { pid, since, .. }
            | State::Running { pid, since }
            | State::Stopping { pid, since, .. } => (pid, since.millis()),
            _ => (0, 0),
        };
        let want = if s.want == Want::Up { 'u' } else { 'd' };
        ok &= write!(
            w,
            "{},{pid},{since},{},{},{want},{},{},{},{}",
            slot.name,
            s.restarts,
            s.failures,
            slot.output.out_r,
            slot.output.err_r,
            slot.output.out_w,
            slot.output.err_w
        )
        .is_ok();
        if slot.output.in_w >= 0 {
            // The logger pipe, so its contents and the running logger's
            // stdin outlive the exec too.
            ok &= write!(w, ",{},{}", slot.output.in_r, slot.output.in_w).is_ok();
        }
        ok &= w.write_char(';').is_ok();
        // The new image must inherit them.
        super::set_cloexec(handed_fds(slot), false);
    }
    // The `fds:` table's descriptors (`fdtable.rs`).
    let table = svc.stack.table();
    ok &= table.is_none_or(|t| t.handoff(&mut w));
    if !ok {
        log!(
            log,
            "reexec: the handoff record does not fit {BUF} bytes; not re-executing"
        );
        return;
    }
    if let Some(t) = table {
        t.inherit(true);
    }
    let mut k = 0;
    for p in base_env.ptrs().filter(|p| !starts_with_env(*p)) {
        if let Some(slot) = reexec.envp.get_mut(k) {
            *slot = p;
            k += 1;
        }
    }
    if let Some(slot) = reexec.envp.get_mut(k) {
        *slot = reexec.buf.as_ptr().cast();
        k += 1;
    }
    if let Some(slot) = reexec.envp.get_mut(k) {
        *slot = core::ptr::null();
    }
    log!(log, "re-executing {}", reexec.exe.to_str().unwrap_or("?"));
    let _ = &reexec.argv_strs;
    // SAFETY: argv/envp are NULL-terminated arrays of valid C strings.
    unsafe {
        libc::execve(
            reexec.exe.as_ptr(),
            reexec.argv.as_ptr(),
            reexec.envp.as_ptr(),
        )
    };
    let e = nix::errno::Errno::last_raw();
    log!(
        log,
        "reexec failed: {}; carrying on",
        nix::errno::Errno::from_raw(e).desc()
    );
    for slot in slots.iter() {
        super::set_cloexec(handed_fds(slot), true);
    }
    if let Some(t) = table {
        t.inherit(false);
    }
}

/// The descriptors a slot hands to the new image: its output pipes, and
/// its logger pipe if it has one.
fn handed_fds(slot: &super::Slot) -> [i32; 6] {
    let o = &slot.output;
    [o.out_r, o.err_r, o.out_w, o.err_w, o.in_r, o.in_w]
}

fn starts_with_env(p: *const libc::c_char) -> bool {
    // SAFETY: p is a valid C string from the base environment.
    let s = unsafe { CStr::from_ptr(p) }.to_bytes();
    s.starts_with(ENV.as_bytes()) && s.get(ENV.len()) == Some(&b'=')
}

/// One adopted service from the handoff record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adopted {
    pub name: String,
    pub pid: i32,
    pub since: u64,
    pub restarts: u32,
    pub failures: u32,
    pub want_up: bool,
    pub fds: [i32; 4],
    /// A logger's pipe (read, write ends), if it is one.
    pub logger: Option<[i32; 2]>,
}

/// Startup of the new process: the record, if this is a re-exec.
#[allow(clippy::disallowed_methods)]
pub fn take_handoff() -> Vec<Adopted> {
    let Ok(v) = std::env::var(ENV) else {
        return Vec::new();
    };
    // The record must not reach services spawned from now on.
    // SAFETY: single-threaded, at startup.
    unsafe { std::env::remove_var(ENV) };
    parse(&v)
}

#[allow(clippy::disallowed_methods)]
pub fn parse(v: &str) -> Vec<Adopted> {
    let mut out = Vec::new();
    let mut parts = v.split(';');
    if parts.next() != Some("v1") {
        return out;
    }
    for rec in parts.filter(|r| !r.is_empty()) {
        let f: Vec<&str> = rec.split(',').collect();
        let (fixed, logger) = match f.as_slice() {
            [head @ .., r, w] if f.len() == 12 => (head, Some((*r, *w))),
            all => (all, None),
        };
        let [name, pid, since, restarts, failures, want, a, b, c, d] = fixed else {
            continue;
        };
        let num = |s: &str| s.parse::<i64>().ok();
        let fd = |s: &str| s.parse::<i32>().ok().filter(|fd| *fd >= 0);
        let logger = match logger.map(|(r, w)| (fd(r), fd(w))) {
            None => None,
            Some((Some(r), Some(w))) => Some([r, w]),
            Some(_) => continue,
        };
        let (Some(pid), Some(since), Some(r), Some(fl), Some(a), Some(b), Some(c), Some(d)) = (
            num(pid),
            num(since),
            num(restarts),
            num(failures),
            num(a),
            num(b),
            num(c),
            num(d),
        ) else {
            continue;
        };
        out.push(Adopted {
            name: (*name).to_owned(),
            pid: pid as i32,
            since: since as u64,
            restarts: r as u32,
            failures: fl as u32,
            want_up: *want == "u",
            fds: [a as i32, b as i32, c as i32, d as i32],
            logger,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_record_and_skips_junk() {
        let v = parse("v1;api,42,1000,3,1,u,5,6,7,8;bad;db,0,0,0,0,d,9,10,11,12;");
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].name, "api");
        assert_eq!(
            (
                v[0].pid,
                v[0].since,
                v[0].restarts,
                v[0].failures,
                v[0].want_up
            ),
            (42, 1000, 3, 1, true)
        );
        assert_eq!(v[0].fds, [5, 6, 7, 8]);
        assert!(!v[1].want_up);
        assert_eq!((v[0].logger, v[1].logger), (None, None));
        assert!(parse("v2;x").is_empty());
        let v = parse("v1;log,7,0,0,0,u,5,6,7,8,13,14;bad,1,0,0,0,u,5,6,7,8,x,14;");
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].logger, Some([13, 14]));
    }
}
