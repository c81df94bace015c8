//! fork + execve with everything prepared before the fork.
//!
//! argv, envp, the working directory and credentials are C arrays built at
//! startup ([`Prepared`]). After fork the child does only async-signal-safe
//! work: reset signal dispositions and mask, setsid, dup2 the stdio pipes,
//! setgroups/setgid/setuid, chdir, umask, execve. If a stage fails, the
//! child writes `(stage, errno)` to a close-on-exec pipe and `_exit(127)`s;
//! the parent reads that pipe until EOF (exec succeeded) or a report, so
//! exec failures are known synchronously and never look like a run.
//!
//! `std::process::Command` is not used: it allocates.

use coffey::sys::{SpawnError, Stage};
use nix::libc;
use std::ffi::CString;
use std::os::fd::RawFd;

/// Everything the child needs, built at startup.
pub struct Prepared {
    pub path: CString,
    /// Keeps the strings alive for `argv_ptrs`.
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    pub cwd: CString,
    pub uid: Option<libc::uid_t>,
    pub gid: Option<libc::gid_t>,
    /// Supplementary groups; set only when `set_groups`.
    pub groups: Vec<libc::gid_t>,
    pub set_groups: bool,
    pub umask: Option<libc::mode_t>,
    /// Write ends of the service's stdout and stderr pipes.
    pub out_w: RawFd,
    pub err_w: RawFd,
}

impl Prepared {
    /// Startup only: builds the pointer arrays.
    #[allow(clippy::too_many_arguments, clippy::disallowed_methods)]
    pub fn new(
        path: CString,
        argv: Vec<CString>,
        envp: Vec<CString>,
        cwd: CString,
        uid: Option<u32>,
        gid: Option<u32>,
        groups: Vec<u32>,
        set_groups: bool,
        umask: Option<u32>,
        out_w: RawFd,
        err_w: RawFd,
    ) -> Prepared {
        let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
        argv_ptrs.push(core::ptr::null());
        let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|s| s.as_ptr()).collect();
        envp_ptrs.push(core::ptr::null());
        Prepared {
            path,
            _argv: argv,
            argv_ptrs,
            _envp: envp,
            envp_ptrs,
            cwd,
            uid,
            gid,
            groups,
            set_groups,
            umask,
            out_w,
            err_w,
        }
    }
}

impl Prepared {
    /// argv[1..], for status.
    pub fn args(&self) -> impl Iterator<Item = &std::ffi::CStr> {
        self._argv.iter().skip(1).map(|c| c.as_c_str())
    }
}

fn errno() -> i32 {
    nix::errno::Errno::last_raw()
}

/// Starts the prepared program. Returns its pid (= its process group).
pub fn spawn(p: &Prepared, devnull: RawFd) -> Result<i32, SpawnError> {
    let mut fds = [-1 as RawFd; 2];
    // SAFETY: fds is a valid 2-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(SpawnError {
            stage: Stage::Pipe,
            errno: errno(),
        });
    }
    let [rd, wr] = fds;
    // SAFETY: single-threaded process; the child only calls
    // async-signal-safe functions before execve or _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = errno();
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
            if errno() == libc::EINTR {
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
    while unsafe { libc::waitpid(pid, &mut st, 0) } < 0 && errno() == libc::EINTR {}
    Err(SpawnError {
        stage: Stage::from_u32(stage),
        errno: err,
    })
}

/// # Safety
/// Call only in a freshly forked child of a single-threaded parent.
unsafe fn child(p: &Prepared, devnull: RawFd, report: RawFd) -> ! {
    let fail = |stage: Stage| -> ! {
        let e = errno();
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
    if libc::setsid() < 0 {
        fail(Stage::Setsid);
    }
    if libc::dup2(devnull, 0) < 0 || libc::dup2(p.out_w, 1) < 0 || libc::dup2(p.err_w, 2) < 0 {
        fail(Stage::Stdio);
    }
    if p.set_groups && libc::setgroups(p.groups.len(), p.groups.as_ptr()) < 0 {
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
    if libc::chdir(p.cwd.as_ptr()) < 0 {
        fail(Stage::Chdir);
    }
    if let Some(m) = p.umask {
        libc::umask(m);
    }
    libc::execve(p.path.as_ptr(), p.argv_ptrs.as_ptr(), p.envp_ptrs.as_ptr());
    fail(Stage::Exec)
}
