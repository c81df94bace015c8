//! Reload: compile the config in a child, diff, apply, without allocating.
//!
//! `coffeyd __compile -c FILE` runs as a short-lived child (the YAML parser
//! allocates, and a parser bug then kills the child, not the daemon). Its
//! output is read into a preallocated buffer and decoded in place
//! ([`super::compiled`]). The plan is computed and checked completely
//! (slots, exec buffers) before anything changes, so a reload either
//! applies whole or changes nothing. The running config's compiled bytes
//! are kept, so the diff compares like with like; after applying, the two
//! buffers swap.

use super::compiled::{self, CService, Compiled, Rd};
use super::control;
use super::log::{log, LineBuf};
use super::logfile::LogFile;
use super::Shell;
use crate::config::Config;
use coffey::control::proto::{plan, ErrorCode, Reply, MAX_PAYLOAD};
use coffey::health::{Check, Role};
use coffey::limits::MAX_DEPS;
use coffey::service::{Dep, Service, Want};
use coffey::supervisor::Supervisor;
use coffey::time::Instant;
use core::fmt::Write as _;
use nix::libc;
use std::ffi::CString;

extern "C" {
    static environ: *const *const libc::c_char;
}

/// Longest time a compile child may take.
const COMPILE_TIMEOUT_MS: i32 = 10_000;

pub struct Reloader {
    exe: CString,
    arg0: CString,
    arg1: CString,
    arg2: CString,
    config: CString,
    cur: &'static mut [u8],
    cur_len: usize,
    next: &'static mut [u8],
    next_len: usize,
    /// Per new service: its slot. Per slot: kept by the new config.
    assign: Box<[u16]>,
    kept: Box<[bool]>,
    /// The last reload, for clients reading its plan as their buffer
    /// drains: its number, whether it applied (then the old config is in
    /// `next`), and its verdict line.
    pub gen: u32,
    pub applied: bool,
    pub message: LineBuf,
}

impl Reloader {
    /// (old, new) compiled configs of the last reload.
    pub fn plan_buffers(&self) -> (&[u8], &[u8]) {
        let cur = self.cur.get(..self.cur_len).unwrap_or(&[]);
        let next = self.next.get(..self.next_len).unwrap_or(&[]);
        if self.applied {
            (next, cur)
        } else {
            (cur, next)
        }
    }
}

/// The plan from `old` to `new`: (action, name, detail) for every new
/// service, then every removed one. Recomputed on demand, so a client can
/// read a plan of any length through a fixed buffer.
pub fn plan_items<'a>(
    old: &'a [u8],
    new: &'a [u8],
) -> impl Iterator<Item = (u8, &'a str, &'static str)> + 'a {
    let dec = |b| match compiled::decode(b) {
        Ok(Compiled::Valid {
            count, services, ..
        }) => Some((count, services)),
        _ => None,
    };
    let (oc, ord) = dec(old).map_or((0, None), |(c, r)| (c, Some(r)));
    let (nc, nrd) = dec(new).map_or((0, None), |(c, r)| (c, Some(r)));
    let ord2 = ord.clone();
    let nrd2 = nrd.clone();
    let added_or_changed = nrd.into_iter().flat_map(move |rd| {
        let ord = ord.clone();
        compiled::services(&rd, nc).map(move |c| {
            let old = ord.as_ref().and_then(|r| find_cur(r, oc, c.name));
            let (code, detail) = match old {
                None => (plan::ADD, "new service"),
                Some(o) => match (same_exec(&o, &c), same_rest(&o, &c)) {
                    (Some(why), _) => (plan::RESTART, why),
                    (None, Some(why)) => (plan::UPDATE, why),
                    (None, None) => (plan::UNCHANGED, ""),
                },
            };
            (code, c.name, detail)
        })
    });
    let removed = ord2.into_iter().flat_map(move |rd| {
        let nrd = nrd2.clone();
        compiled::services(&rd, oc).filter_map(move |c| {
            let gone = nrd
                .as_ref()
                .is_none_or(|r| find_cur(r, nc, c.name).is_none());
            gone.then_some((plan::REMOVE, c.name, "no longer in the config"))
        })
    });
    added_or_changed.chain(removed)
}

impl Reloader {
    /// Startup: keeps the compiled bytes of the running config.
    #[allow(clippy::disallowed_macros, clippy::disallowed_methods)]
    pub fn new(cfg: &Config, compiled: &[u8], slots: usize) -> Result<Reloader, String> {
        use std::os::unix::ffi::OsStrExt;
        let cap = (compiled.len() * 4).max(slots * 4096 + 64 * 1024);
        let cur = super::slab::zeroed(cap)?;
        cur.get_mut(..compiled.len())
            .ok_or("compiled config too large")?
            .copy_from_slice(compiled);
        let exe = std::fs::read_link("/proc/self/exe")
            .ok()
            .and_then(|p| CString::new(p.as_os_str().as_bytes()).ok())
            .unwrap_or_else(|| c"/proc/self/exe".into());
        let config = std::fs::canonicalize(&cfg.path).unwrap_or_else(|_| cfg.path.clone());
        Ok(Reloader {
            exe,
            arg0: c"coffeyd".into(),
            arg1: c"__compile".into(),
            arg2: c"-c".into(),
            config: CString::new(config.as_os_str().as_bytes()).map_err(|e| e.to_string())?,
            cur,
            cur_len: compiled.len(),
            next: super::slab::zeroed(cap)?,
            next_len: 0,
            gen: 0,
            applied: false,
            message: LineBuf::default(),
            assign: vec![0u16; slots.max(1)].into_boxed_slice(),
            kept: vec![false; slots.max(1)].into_boxed_slice(),
        })
    }

    /// Runs the compile child; its output lands in `next`.
    fn compile(&mut self, devnull: i32) -> Result<(), &'static str> {
        let mut fds = [-1; 2];
        // SAFETY: valid out array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
            return Err("cannot create a pipe for the config compiler");
        }
        let [r, w] = fds;
        let argv = [
            self.arg0.as_ptr(),
            self.arg1.as_ptr(),
            self.arg2.as_ptr(),
            self.config.as_ptr(),
            core::ptr::null(),
        ];
        // SAFETY: single-threaded; the child only dup2s, resets the mask
        // and execs.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            // SAFETY: our fds.
            unsafe {
                libc::close(r);
                libc::close(w);
            }
            return Err("cannot fork the config compiler");
        }
        if pid == 0 {
            // SAFETY: in the child.
            unsafe {
                libc::dup2(devnull, 0);
                libc::dup2(w, 1);
                let mut set: libc::sigset_t = core::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigprocmask(libc::SIG_SETMASK, &set, core::ptr::null_mut());
                libc::execve(self.exe.as_ptr(), argv.as_ptr(), environ);
                libc::_exit(127);
            }
        }
        // SAFETY: ours.
        unsafe { libc::close(w) };
        self.next_len = 0;
        let mut res = Ok(());
        loop {
            let mut pfd = libc::pollfd {
                fd: r,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, COMPILE_TIMEOUT_MS) };
            if n == 0 {
                res = Err("the config compiler timed out");
                // SAFETY: our child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                break;
            }
            if n < 0 {
                if nix::errno::Errno::last_raw() == libc::EINTR {
                    continue;
                }
                res = Err("poll failed while reading the config compiler");
                break;
            }
            let space = self.next.get_mut(self.next_len..).unwrap_or(&mut []);
            if space.is_empty() {
                res = Err(
                    "the compiled config is larger than the reload buffer preallocated at startup",
                );
                // SAFETY: our child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                break;
            }
            // SAFETY: valid buffer.
            let got = unsafe { libc::read(r, space.as_mut_ptr().cast(), space.len()) };
            if got < 0 {
                if nix::errno::Errno::last_raw() == libc::EINTR {
                    continue;
                }
                res = Err("cannot read the config compiler's output");
                break;
            }
            if got == 0 {
                break;
            }
            self.next_len += usize::try_from(got).unwrap_or(0);
        }
        // SAFETY: ours; then reap our own child before the main loop does.
        unsafe { libc::close(r) };
        let mut st = 0;
        // SAFETY: our child.
        while unsafe { libc::waitpid(pid, &mut st, 0) } < 0
            && nix::errno::Errno::last_raw() == libc::EINTR
        {}
        res?;
        if !(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0) {
            return Err("the config compiler failed (could not exec coffeyd __compile?)");
        }
        Ok(())
    }
}

fn same_exec(a: &CService<'_>, b: &CService<'_>) -> Option<&'static str> {
    if a.binary != b.binary || !a.args.same(&b.args) {
        return Some("command changed");
    }
    if !a.env.same(&b.env) {
        return Some("env changed");
    }
    if a.uid != b.uid
        || a.gid != b.gid
        || a.groups != b.groups
        || a.set_groups != b.set_groups
        || a.cred_error != b.cred_error
    {
        return Some("user or group changed");
    }
    if a.cwd != b.cwd {
        return Some("working_dir changed");
    }
    if a.umask != b.umask {
        return Some("umask changed");
    }
    if a.rlimits_raw != b.rlimits_raw {
        return Some("rlimits changed");
    }
    None
}

fn same_rest(a: &CService<'_>, b: &CService<'_>) -> Option<&'static str> {
    if a.policy.restart != b.policy.restart || a.policy.kind != b.policy.kind {
        return Some("restart policy changed");
    }
    if a.policy != b.policy {
        return Some("backoff, max_restarts or stop settings changed");
    }
    if a.ndeps != b.ndeps || !a.deps().zip(b.deps()).all(|(x, y)| x == y) {
        return Some("depends_on changed");
    }
    if a.console != b.console || a.file != b.file {
        return Some("log settings changed");
    }
    if a.checks_raw != b.checks_raw {
        return Some("healthcheck changed");
    }
    if a.limits != b.limits {
        return Some("resources changed");
    }
    None
}

/// The running config's service called `name`.
fn find_cur<'a>(rd: &Rd<'a>, count: u16, name: &str) -> Option<CService<'a>> {
    compiled::services(rd, count).find(|c| c.name == name)
}

/// Points slot `i` at service `c`: name, exec buffers, policy, log file.
/// Dependencies are resolved separately, once every name has its slot.
fn configure(
    shell: &mut Shell,
    svc: &mut Service,
    i: usize,
    c: &CService<'_>,
    fresh: bool,
) -> Result<(), &'static str> {
    super::probe::configure(shell, i, c)?;
    if fresh {
        // A new service in this slot starts with an empty log and no
        // followers of the previous one.
        control::end_followers(shell, i);
        if let Some(slot) = shell.slots.get_mut(i) {
            slot.notify_status.clear();
            slot.ring.clear();
            *slot.lines = Default::default();
        }
    }
    let sd_notify = matches!(
        c.checks.first(),
        Some(Some(super::compiled::CCheck {
            probe: super::compiled::CProbe::Notify { fd: None },
            ..
        }))
    );
    if sd_notify {
        super::probe::open_notify(shell, i);
    } else {
        super::probe::close_notify(shell, i);
    }
    let Shell {
        slots,
        base_env,
        file_max,
        file_keep,
        ..
    } = shell;
    let slot = slots.get_mut(i).ok_or("no such slot")?;
    let env = std::ffi::CStr::from_bytes_until_nul(&slot.notify_env)
        .ok()
        .filter(|e| !e.is_empty());
    if sd_notify && env.is_none() {
        return Err("cannot create the sd_notify socket");
    }
    slot.prep
        .fill(c, base_env, if sd_notify { env } else { None })
        .map_err(|e| e.as_str())?;
    let role = [Role::Readiness, Role::Liveness];
    for (k, cc) in c.checks.iter().enumerate() {
        if let (Some(dst), Some(r)) = (svc.checks.get_mut(k), role.get(k)) {
            *dst = cc.as_ref().map(|cc| Check::new(*r, cc.policy));
        }
    }
    slot.name.clear();
    slot.name
        .push_str(c.name)
        .map_err(|_| "service name too long")?;
    slot.retired = false;
    slot.console = c.console;
    slot.file = if c.file.is_empty() {
        None
    } else {
        LogFile::new(c.file, *file_max, *file_keep)
    };
    svc.policy = c.policy;
    super::cgroup::configure(shell, i, c.name, c.limits);
    Ok(())
}

fn resolve_deps(shell: &Shell, svc: &mut Service, c: &CService<'_>) -> Result<(), &'static str> {
    svc.deps.clear();
    for (name, condition) in c.deps() {
        let idx = shell
            .slots
            .get(..shell.used)
            .and_then(|s| {
                s.iter()
                    .position(|s| !s.retired && s.name.as_bytes() == name)
            })
            .ok_or("dependency not found")?;
        svc.deps
            .push(Dep {
                idx: idx as u16,
                condition,
            })
            .map_err(|_| "too many dependencies")?;
    }
    Ok(())
}

/// Startup: installs the compiled config into slots 0..n.
pub fn install_initial(shell: &mut Shell, table: &mut [Service]) -> Result<(), String> {
    // Take the buffer out of the shell while its decoded view is in use
    // (an empty Box does not allocate), and put it back after.
    let cur = core::mem::take(&mut shell.reloader.cur);
    let r = install_from(
        shell,
        table,
        cur.get(..shell.reloader.cur_len).unwrap_or(&[]),
    );
    shell.reloader.cur = cur;
    r
}

#[allow(clippy::disallowed_macros)] // startup only
fn install_from(shell: &mut Shell, table: &mut [Service], buf: &[u8]) -> Result<(), String> {
    let Ok(Compiled::Valid {
        count,
        services,
        shutdown_timeout,
    }) = compiled::decode(buf)
    else {
        return Err("internal error: cannot decode the compiled config".into());
    };
    shell.shutdown_timeout = shutdown_timeout;
    if usize::from(count) > table.len() {
        return Err("more services than slots".into());
    }
    for (i, c) in compiled::services(&services, count).enumerate() {
        let svc = table.get_mut(i).ok_or("slot")?;
        configure(shell, svc, i, &c, true).map_err(|e| format!("service '{}': {e}", c.name))?;
    }
    shell.used = usize::from(count);
    for (i, c) in compiled::services(&services, count).enumerate() {
        let svc = table.get_mut(i).ok_or("slot")?;
        resolve_deps(shell, svc, &c).map_err(|e| format!("service '{}': {e}", c.name))?;
    }
    Ok(())
}

/// Sends a plan line to the client and the daemon log.
/// Logs one plan line (clients read the plan through `plan_items`).
fn plan_item(shell: &mut Shell, action: u8, name: &str, detail: &str) {
    log!(
        shell.log,
        "reload: {} {name}{}{detail}",
        plan::name(action),
        if detail.is_empty() { "" } else { ": " }
    );
}

fn fail(shell: &mut Shell, client: Option<usize>, code: ErrorCode, msg: &str) {
    log!(shell.log, "reload rejected: {msg}");
    if let Some(k) = client {
        // Fit the frame: cut at a char boundary.
        let mut end = msg.len().min(MAX_PAYLOAD - 64);
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        control::reply(
            shell,
            k,
            &Reply::Error {
                code,
                message: msg.get(..end).unwrap_or(""),
            },
        );
    }
}

/// `coffeyd reload` and SIGHUP. `client` gets the plan and the verdict.
pub fn reload(
    sup: &mut Supervisor<'_>,
    shell: &mut Shell,
    client: Option<usize>,
    dry_run: bool,
    now: Instant,
) {
    if sup.shutting_down() {
        return fail(shell, client, ErrorCode::Failed, "coffeyd is shutting down");
    }
    let devnull = shell.devnull;
    if let Err(e) = shell.reloader.compile(devnull) {
        return fail(shell, client, ErrorCode::Failed, e);
    }
    // Take both buffers out while their decoded views are in use (an
    // empty Box does not allocate); put them back, swapped if applied.
    let mut cur = core::mem::take(&mut shell.reloader.cur);
    let mut next = core::mem::take(&mut shell.reloader.next);
    let (cl, nl) = (shell.reloader.cur_len, shell.reloader.next_len);
    let applied = reload_from(
        sup,
        shell,
        client,
        dry_run,
        now,
        cur.get(..cl).unwrap_or(&[]),
        next.get(..nl).unwrap_or(&[]),
    );
    if applied {
        core::mem::swap(&mut cur, &mut next);
        shell.reloader.cur_len = nl;
        // `next` now holds the previous config: the plan is read from it.
        shell.reloader.next_len = cl;
    }
    shell.reloader.cur = cur;
    shell.reloader.next = next;
}

/// Plans and (unless `dry_run`) applies. Returns whether it applied.
fn reload_from(
    sup: &mut Supervisor<'_>,
    shell: &mut Shell,
    client: Option<usize>,
    dry_run: bool,
    now: Instant,
    cur: &[u8],
    next: &[u8],
) -> bool {
    let (ncount, nrd, ntimeout) = match compiled::decode(next) {
        Ok(Compiled::Valid {
            count,
            services,
            shutdown_timeout,
        }) => (count, services, shutdown_timeout),
        Ok(Compiled::Invalid(text)) => {
            fail(shell, client, ErrorCode::Failed, text);
            return false;
        }
        Err(_) => {
            fail(
                shell,
                client,
                ErrorCode::Failed,
                "the config compiler's output is corrupt",
            );
            return false;
        }
    };
    let Ok(Compiled::Valid {
        count: ccount,
        services: crd,
        ..
    }) = compiled::decode(cur)
    else {
        {
            fail(
                shell,
                client,
                ErrorCode::Failed,
                "internal error: running config unreadable",
            );
            return false;
        }
    };
    let capacity = shell.slots.len();
    // ---- plan: slot for every new service; nothing changes yet.
    for k in shell.reloader.kept.iter_mut() {
        *k = false;
    }
    let mut need_new = 0usize;
    for (j, c) in compiled::services(&nrd, ncount).enumerate() {
        let old = shell.slots.get(..shell.used).and_then(|s| {
            s.iter()
                .position(|s| !s.retired && s.name.as_str() == c.name)
        });
        match old {
            Some(i) => {
                if let (Some(a), Some(k)) = (
                    shell.reloader.assign.get_mut(j),
                    shell.reloader.kept.get_mut(i),
                ) {
                    *a = i as u16;
                    *k = true;
                }
            }
            None => need_new += 1,
        }
        if let Err(e) = super::spawn::Prepared::fits(&c) {
            let mut m = LineBuf::default();
            let _ = write!(m, "service '{}': {}", c.name, e.as_str());
            {
                fail(
                    shell,
                    client,
                    ErrorCode::Failed,
                    core::str::from_utf8(m.as_bytes()).unwrap_or(""),
                );
                return false;
            }
        }
        if usize::from(c.ndeps) > MAX_DEPS {
            {
                fail(
                    shell,
                    client,
                    ErrorCode::Failed,
                    "a service has more than MAX_DEPS dependencies",
                );
                return false;
            }
        }
    }
    // Free slots: never used, or retired (no name) with no process left.
    let mut free = 0usize;
    for (i, s) in shell.slots.iter().enumerate() {
        let kept = shell.reloader.kept.get(i).copied().unwrap_or(false);
        let idle = sup.services().get(i).is_none_or(|x| !x.state.has_process());
        let unused = i >= shell.used || s.retired;
        if !kept && unused && idle {
            free += 1;
        }
    }
    if need_new > free {
        let mut m = LineBuf::default();
        let _ = write!(
            m,
            "the new config needs {need_new} more service slots but only {free} of {capacity} are free \
             (limits.services is fixed at startup; restart coffeyd to grow it)"
        );
        {
            fail(
                shell,
                client,
                ErrorCode::NoSlots,
                core::str::from_utf8(m.as_bytes()).unwrap_or(""),
            );
            return false;
        }
    }
    // Assign free slots to added services.
    let mut cursor = 0usize;
    for (j, c) in compiled::services(&nrd, ncount).enumerate() {
        if shell
            .slots
            .get(..shell.used)
            .is_some_and(|s| s.iter().any(|s| !s.retired && s.name.as_str() == c.name))
        {
            continue;
        }
        while cursor < capacity {
            let taken = shell.reloader.kept.get(cursor).copied().unwrap_or(true);
            let unused = cursor >= shell.used || shell.slots.get(cursor).is_some_and(|s| s.retired);
            let idle = sup
                .services()
                .get(cursor)
                .is_none_or(|x| !x.state.has_process());
            if !taken && unused && idle {
                break;
            }
            cursor += 1;
        }
        if let Some(a) = shell.reloader.assign.get_mut(j) {
            *a = cursor as u16;
        }
        if let Some(k) = shell.reloader.kept.get_mut(cursor) {
            *k = true;
        }
    }

    // ---- report the plan (the same classification clients read).
    let mut counts = [0usize; 6];
    for (code, name, detail) in plan_items(cur, next) {
        if let Some(n) = counts.get_mut(usize::from(code)) {
            *n += 1;
        }
        plan_item(shell, code, name, detail);
    }
    let summary = |m: &mut LineBuf, verb: &str| {
        let _ = write!(
            m,
            "{verb}: {} added, {} removed, {} restarted, {} updated, {} unchanged",
            counts.get(usize::from(plan::ADD)).unwrap_or(&0),
            counts.get(usize::from(plan::REMOVE)).unwrap_or(&0),
            counts.get(usize::from(plan::RESTART)).unwrap_or(&0),
            counts.get(usize::from(plan::UPDATE)).unwrap_or(&0),
            counts.get(usize::from(plan::UNCHANGED)).unwrap_or(&0)
        );
    };
    if dry_run {
        let mut m = LineBuf::default();
        summary(&mut m, "dry run, nothing changed");
        send_plan(shell, client, false, m);
        return false;
    }

    // ---- apply. Everything was checked above; errors here are bugs and
    // are logged, not fatal.
    // 1. Retire removed services: they stop (their dependents were
    //    re-pointed below first, so only removed ones go down).
    let old_used = shell.used;
    let new_used = (0..capacity)
        .filter(|&i| shell.reloader.kept.get(i).copied().unwrap_or(false))
        .map(|i| i + 1)
        .max()
        .unwrap_or(0)
        .max(old_used);
    shell.used = new_used;
    sup.set_used(new_used);
    // 2. Configure kept and added services (names first, then deps).
    for (j, c) in compiled::services(&nrd, ncount).enumerate() {
        let Some(&i) = shell.reloader.assign.get(j) else {
            continue;
        };
        let i = usize::from(i);
        let old = find_cur(&crd, ccount, c.name);
        let changed = match &old {
            None => true,
            Some(o) => same_exec(o, &c).is_some() || same_rest(o, &c).is_some(),
        };
        if !changed {
            continue;
        }
        let Some(svc) = sup.service_mut(i) else {
            continue;
        };
        if let Err(e) = configure(shell, svc, i, &c, old.is_none()) {
            log!(shell.log, "reload: {}: {e}", c.name);
        }
    }
    // Retire removed: clear name and deps, stop.
    for i in 0..old_used {
        if shell.reloader.kept.get(i).copied().unwrap_or(false) {
            continue;
        }
        if shell.slots.get(i).is_none_or(|s| s.retired) {
            continue;
        }
        if let Some(svc) = sup.service_mut(i) {
            svc.deps.clear();
        }
        sup.stop(i, now, shell);
        control::end_followers(shell, i);
        if let Some(s) = shell.slots.get_mut(i) {
            s.retired = true;
            s.prep.filled = false;
        }
    }
    for (j, c) in compiled::services(&nrd, ncount).enumerate() {
        let Some(&i) = shell.reloader.assign.get(j) else {
            continue;
        };
        let i = usize::from(i);
        let Some(svc) = sup.service_mut(i) else {
            continue;
        };
        if let Err(e) = resolve_deps(shell, svc, &c) {
            log!(shell.log, "reload: {}: {e}", c.name);
        }
    }
    // 3. Restart changed commands, start added services.
    for (j, c) in compiled::services(&nrd, ncount).enumerate() {
        let Some(&i) = shell.reloader.assign.get(j) else {
            continue;
        };
        let i = usize::from(i);
        match find_cur(&crd, ccount, c.name) {
            None => {
                sup.start(i, now, shell);
            }
            Some(o) if same_exec(&o, &c).is_some() => {
                let wanted = sup.services().get(i).is_some_and(|s| s.want == Want::Up);
                if wanted {
                    sup.restart(i, now, shell);
                }
            }
            Some(_) => {}
        }
    }
    // Updated checks of running services start here, not at the next event.
    sup.settle(now, shell);
    shell.shutdown_timeout = ntimeout;
    let mut m = LineBuf::default();
    summary(&mut m, "applied");
    let text = core::str::from_utf8(m.as_bytes()).unwrap_or("");
    log!(shell.log, "reload {text}");
    control::broadcast_reloaded(shell);
    send_plan(shell, client, true, m);
    true
}

/// Hands the plan to the client as a multi-frame reply: the connection
/// pulls plan items as its buffer drains, then the verdict.
fn send_plan(shell: &mut Shell, client: Option<usize>, applied: bool, message: LineBuf) {
    let r = &mut shell.reloader;
    r.gen = r.gen.wrapping_add(1);
    r.applied = applied;
    r.message = message;
    let gen = r.gen;
    if let Some(k) = client {
        control::start_plan(shell, k, gen);
    }
}
