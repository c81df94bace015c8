//! Reload: plan and apply a compiled config, without allocating.
//!
//! The compile child and the request queue are the reload machine
//! ([`machine`]); once the child's output is in `next`, this
//! file decodes it in place ([`super::compiled`]), plans ([`begin`]) and
//! applies, a slice a turn ([`advance`]). The plan is computed and
//! checked completely (slots, exec buffers) before anything changes, so a
//! reload either applies whole or changes nothing; applying, once begun,
//! cannot fail, and other work goes on between its slices.
//! The running config's compiled bytes are kept, so the diff compares like
//! with like; after applying, the two buffers swap.
//!
//! Every step is linear in the number of services: names are matched
//! through a hash index, and each service's byte offset is remembered, so
//! nothing is searched or decoded twice (1,000 services used to cost one
//! stalled turn of a third of a second; see docs/DESIGN.md, Reload).

pub mod machine;

/// What a reload tells the clients that follow services (the control
/// socket implements it): the only way reload reaches them.
pub trait Followers {
    /// Slot `i` runs another service now, or none: its followers end.
    fn slot_replaced(&mut self, i: usize);
    /// A reload was applied.
    fn reloaded(&mut self);
}

use super::compiled::{self, CService, Compiled, Rd};
use super::log::{log, LineBuf, Log};
use super::logfile::LogFile;
use super::spawn::FillError;
use super::{Services, Shell};
use coffey::control::conn::{Conn, Job, Phase};
use coffey::control::proto::{plan, ErrorCode, Reply, MAX_PAYLOAD};
use coffey::health::{Check, Role};
use coffey::limits::MAX_DEPS;
use coffey::service::{Dep, Service, Want};
use coffey::supervisor::Supervisor;
use coffey::time::Instant;
use core::fmt::Write as _;
use machine::Machine;

/// No offset / no slot.
const NONE: u32 = u32::MAX;
const NO_SLOT: u16 = u16::MAX;

/// How the last finished reload ended, for the clients that asked.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Applied; `next` holds the previous config.
    Applied,
    DryRun,
    /// The validator's diagnostics are in `next`.
    Invalid,
    /// Refused for the reason in `message`.
    Failed(ErrorCode),
}

/// Names to indices, open addressing over a table sized at startup
/// (twice the slots, a power of two). Keys are compared through a
/// closure, so the index holds only `u16`s.
struct NameIndex {
    table: Box<[u16]>,
}

fn hash(name: &[u8]) -> usize {
    // FNV-1a: short names, no allocation, good enough spread.
    let mut h: u32 = 0x811c_9dc5;
    for &b in name {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h as usize
}

impl NameIndex {
    #[allow(clippy::disallowed_macros)] // startup
    fn new(slots: usize) -> Self {
        let n = (slots.max(8) * 2).next_power_of_two();
        NameIndex {
            table: vec![NO_SLOT; n].into_boxed_slice(),
        }
    }

    fn clear(&mut self) {
        self.table.fill(NO_SLOT);
    }

    fn insert(&mut self, name: &[u8], idx: u16) {
        let mask = self.table.len() - 1;
        let mut h = hash(name) & mask;
        for _ in 0..self.table.len() {
            if let Some(e) = self.table.get_mut(h).filter(|e| **e == NO_SLOT) {
                *e = idx;
                return;
            }
            h = (h + 1) & mask;
        }
    }

    fn find<'k>(&self, name: &[u8], key: impl Fn(u16) -> &'k [u8]) -> Option<u16> {
        let mask = self.table.len() - 1;
        let mut h = hash(name) & mask;
        for _ in 0..self.table.len() {
            match self.table.get(h).copied() {
                None | Some(NO_SLOT) => return None,
                Some(i) if key(i) == name => return Some(i),
                Some(_) => h = (h + 1) & mask,
            }
        }
        None
    }
}

/// The plan of the last reload: per new service (in config order) its
/// offset in the new buffer, slot and plan line; then the removed
/// services' offsets in the old buffer. Clients read it item by item
/// through a fixed buffer ([`answer`]).
struct Plan {
    count: usize,
    new_at: Box<[u32]>,
    slot: Box<[u16]>,
    action: Box<[u8]>,
    why: Box<[&'static str]>,
    removed_at: Box<[u32]>,
    removed: usize,
    /// Per slot: kept or taken by the new config.
    kept: Box<[bool]>,
}

pub struct Reloader {
    pub machine: Machine,
    cur: &'static mut [u8],
    cur_len: usize,
    next: &'static mut [u8],
    next_len: usize,
    /// Per slot: the offset of its service in `cur` (NONE: free, retired).
    cur_at: Box<[u32]>,
    plan: Plan,
    names: NameIndex,
    /// The last finished reload: its number, outcome and verdict line.
    pub gen: u32,
    pub outcome: Outcome,
    pub message: LineBuf,
}

impl Reloader {
    /// Startup: keeps the compiled bytes of the running config.
    #[allow(clippy::disallowed_macros, clippy::disallowed_methods)]
    pub fn new(
        config: &std::path::Path,
        compiled: &[u8],
        slots: usize,
    ) -> Result<Reloader, String> {
        let cap = coffey::limits::reload_buffer(compiled.len(), slots);
        let cur = super::slab::zeroed(cap)?;
        // Not the globals: only startup reads them, and with a warning a
        // service they are the larger part.
        let cur_len =
            compiled::without_globals(compiled, cur).ok_or("compiled config too large")?;
        let n = slots.max(1);
        Ok(Reloader {
            machine: Machine::new(config)?,
            cur,
            cur_len,
            next: super::slab::zeroed(cap)?,
            next_len: 0,
            cur_at: vec![NONE; n].into_boxed_slice(),
            plan: Plan {
                count: 0,
                new_at: vec![NONE; n].into_boxed_slice(),
                slot: vec![NO_SLOT; n].into_boxed_slice(),
                action: vec![0; n].into_boxed_slice(),
                why: vec![""; n].into_boxed_slice(),
                removed_at: vec![NONE; n].into_boxed_slice(),
                removed: 0,
                kept: vec![false; n].into_boxed_slice(),
            },
            names: NameIndex::new(n),
            gen: 0,
            outcome: Outcome::DryRun,
            message: LineBuf::default(),
        })
    }

    /// Where the compile child's output goes: the free buffer.
    pub fn incoming(&mut self) -> (&mut [u8], &mut usize) {
        (&mut *self.next, &mut self.next_len)
    }

    /// The running config, compiled (empty while a reload step has it).
    pub fn running(&self) -> &[u8] {
        self.cur.get(..self.cur_len).unwrap_or(&[])
    }

    /// (old, new) compiled configs of the last reload.
    fn plan_buffers(&self) -> (&[u8], &[u8]) {
        let cur = self.cur.get(..self.cur_len).unwrap_or(&[]);
        let next = self.next.get(..self.next_len).unwrap_or(&[]);
        if self.outcome == Outcome::Applied {
            (next, cur)
        } else {
            (cur, next)
        }
    }

    /// Item `k` of the last plan: (action, name, detail).
    fn plan_item(&self, k: usize) -> Option<(u8, &str, &'static str)> {
        let (old, new) = self.plan_buffers();
        plan_line(&self.plan, old, new, k)
    }

    /// Whether reload `gen` is still to come (started or pending).
    pub fn ahead(&self, gen: u32) -> bool {
        (gen.wrapping_sub(self.gen) as i32) > 0
    }
}

/// Produces the answer to a client of reload `gen` (`job` is its
/// `AwaitReload` or `Plan`) as far as its buffer takes it; returns the
/// client's next phase. The plan and the diagnostics are read from the
/// reload buffers, which stay as the reload left them until the machine
/// starts the next one; a client still reading then is told it was
/// superseded.
pub fn answer(r: &Reloader, conn: &mut Conn<'_>, job: Job) -> Phase {
    let (mut next, gen) = match job {
        Job::AwaitReload { gen } if r.ahead(gen) => return Phase::Writing(job),
        Job::AwaitReload { gen } => (0, gen),
        Job::Plan { next, gen } => (next, gen),
        _ => return conn.phase,
    };
    let again = Phase::Writing(Job::Plan { next, gen });
    let done = |sent: bool| if sent { Phase::Reading } else { again };
    if gen != r.gen || !r.machine.idle() {
        let sent = conn.queue(&Reply::Error {
            code: ErrorCode::Failed,
            message: "superseded by a newer reload",
        });
        return done(sent.is_ok());
    }
    let message = core::str::from_utf8(r.message.as_bytes()).unwrap_or("");
    match r.outcome {
        Outcome::Failed(code) => {
            return done(conn.queue(&Reply::Error { code, message }).is_ok());
        }
        Outcome::Invalid => {
            let (_, new) = r.plan_buffers();
            let text = match compiled::decode(new) {
                Ok(Compiled::Invalid(t)) => t,
                _ => message,
            };
            // Fit the frame: cut at a char boundary.
            let mut end = text.len().min(MAX_PAYLOAD - 64);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            let message = text.get(..end).unwrap_or("");
            let sent = conn.queue(&Reply::Error {
                code: ErrorCode::Failed,
                message,
            });
            return done(sent.is_ok());
        }
        Outcome::Applied | Outcome::DryRun => {}
    }
    while let Some((action, name, detail)) = r.plan_item(next as usize) {
        let item = Reply::PlanItem {
            action,
            name,
            detail,
        };
        if conn.queue(&item).is_err() {
            return Phase::Writing(Job::Plan { next, gen });
        }
        next += 1;
    }
    let again = Phase::Writing(Job::Plan { next, gen });
    if conn.queue(&Reply::Ok { message }).is_ok() {
        Phase::Reading
    } else {
        again
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
    if a.logger != b.logger {
        // Its stdin becomes, or stops being, a logger pipe.
        return Some("logger input changed");
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
    if a.console != b.console || a.file != b.file || a.log_to != b.log_to {
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

/// Points slot `i` at service `c`: name, exec buffers, policy, log file.
/// Dependencies are resolved separately, once every name has its slot.
fn configure(
    shell: &mut Shell,
    svc: &mut Service,
    i: usize,
    c: &CService<'_>,
    fresh: bool,
) -> Result<(), &'static str> {
    super::probe::configure(&mut shell.svc, i, c)?;
    if fresh {
        // A new service in this slot starts with an empty log and no
        // followers of the previous one.
        shell.ctl.slot_replaced(i);
        if let Some(slot) = shell.svc.slots.get_mut(i) {
            if let Some(t) = slot.notify.text.get_mut() {
                t.status.clear();
            }
            slot.output.ring.clear();
            slot.output
                .lines
                .iter_mut()
                .for_each(coffey::logring::LineBuf::clear);
        }
    }
    let sd_notify = super::spawn::sd_notify(c);
    if sd_notify {
        super::probe::open_notify(&mut shell.svc, &shell.registry, i);
    } else {
        super::probe::close_notify(&mut shell.svc, i);
    }
    let Shell {
        svc:
            crate::daemon::Services {
                slots,
                base_env,
                arena,
                file_max,
                file_keep,
                stack,
                ..
            },
        ..
    } = shell;
    let slot = slots.get_mut(i).ok_or("no such slot")?;
    let env = slot
        .notify
        .text
        .get()
        .and_then(|t| std::ffi::CStr::from_bytes_until_nul(&t.env).ok())
        .filter(|e| !e.is_empty());
    if sd_notify && env.is_none() {
        return Err("cannot create the sd_notify socket");
    }
    slot.prep
        .fill(arena, c, base_env, if sd_notify { env } else { None })
        .map_err(|e| e.as_str())?;
    if let Some(t) = stack.table() {
        slot.prep.map_fds(|k| t.slot_of(k));
    }
    let role = [Role::Readiness, Role::Liveness, Role::Startup];
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
    slot.output.set_logger(c.logger)?;
    let file = (!c.file.is_empty())
        .then(|| LogFile::new(c.file, *file_max, *file_keep))
        .flatten();
    match file {
        Some(f) => drop(slot.output.file.set(f)),
        None => slot.output.file.clear(),
    }
    svc.policy = c.policy;
    super::cgroup::configure(
        &mut shell.svc,
        &mut shell.log,
        &shell.registry,
        i,
        c.name,
        c.limits,
    );
    Ok(())
}

/// The slot of service `name` of the new config (`buf`), through the
/// index of new names.
fn new_slot_of(r: &Reloader, buf: &[u8], name: &[u8]) -> Option<u16> {
    let p = &r.plan;
    let key = |j: u16| {
        p.new_at
            .get(usize::from(j))
            .and_then(|&at| compiled::name_at(buf, at))
            .map_or(&b""[..], str::as_bytes)
    };
    let j = r.names.find(name, key)?;
    p.slot.get(usize::from(j)).copied()
}

/// Points every dependency of `svc` (service `c` of the new config) at
/// its slot.
fn resolve_deps(
    r: &Reloader,
    buf: &[u8],
    svc: &mut Service,
    c: &CService<'_>,
) -> Result<(), &'static str> {
    svc.deps.clear();
    for (name, condition) in c.deps() {
        let idx = new_slot_of(r, buf, name).ok_or("dependency not found")?;
        svc.deps
            .push(Dep { idx, condition })
            .map_err(|_| "too many dependencies")?;
    }
    Ok(())
}

/// Points slot `i` (service `c` of the new config) at its logger's slot.
fn resolve_log_to(r: &Reloader, buf: &[u8], slots: &mut [super::Slot], i: usize, c: &CService<'_>) {
    let to = (!c.log_to.is_empty())
        .then(|| new_slot_of(r, buf, c.log_to))
        .flatten();
    if let Some(s) = slots.get_mut(i) {
        s.output.set_logger_slot(to);
    }
}

/// Indexes the names of the new config (`buf`) by their position.
fn index_new_names(r: &mut Reloader, buf: &[u8]) {
    r.names.clear();
    for j in 0..r.plan.count {
        let at = r.plan.new_at.get(j).copied().unwrap_or(NONE);
        if let Some(name) = compiled::name_at(buf, at) {
            r.names.insert(name.as_bytes(), j as u16);
        }
    }
}

/// Startup: installs the compiled config into slots 0..n.
#[allow(clippy::disallowed_macros)] // startup only
pub fn install_initial(shell: &mut Shell, table: &mut [Service]) -> Result<(), String> {
    // Take the buffer out of the shell while its decoded view is in use
    // (an empty Box does not allocate), and put it back after.
    let cur = core::mem::take(&mut shell.reloader.cur);
    let buf = cur.get(..shell.reloader.cur_len).unwrap_or(&[]);
    let r = install_from(shell, table, buf).map_err(|(name, e)| format!("service '{name}': {e}"));
    shell.reloader.cur = cur;
    r
}

fn install_from<'b>(
    shell: &mut Shell,
    table: &mut [Service],
    buf: &'b [u8],
) -> Result<(), (&'b str, &'static str)> {
    let Ok(Compiled::Valid {
        count,
        services,
        shutdown_timeout,
        ..
    }) = compiled::decode(buf)
    else {
        return Err(("?", "internal error: cannot decode the compiled config"));
    };
    shell.life.shutdown_timeout = shutdown_timeout;
    if usize::from(count) > table.len() {
        return Err(("?", "more services than slots"));
    }
    let r = &mut shell.reloader;
    r.plan.count = usize::from(count);
    for (j, (at, _)) in compiled::services_at(&services, count).enumerate() {
        for a in [r.plan.new_at.get_mut(j), r.cur_at.get_mut(j)]
            .into_iter()
            .flatten()
        {
            *a = at;
        }
        if let Some(s) = r.plan.slot.get_mut(j) {
            *s = j as u16;
        }
    }
    index_new_names(r, buf);
    for (i, c) in compiled::services(&services, count).enumerate() {
        let svc = table.get_mut(i).ok_or((c.name, "slot"))?;
        configure(shell, svc, i, &c, true).map_err(|e| (c.name, e))?;
    }
    shell.svc.used = usize::from(count);
    for (i, c) in compiled::services(&services, count).enumerate() {
        let svc = table.get_mut(i).ok_or((c.name, "slot"))?;
        resolve_deps(&shell.reloader, buf, svc, &c).map_err(|e| (c.name, e))?;
        resolve_log_to(&shell.reloader, buf, &mut shell.svc.slots, i, &c);
    }
    // No plan to show before the first reload.
    shell.reloader.plan.count = 0;
    Ok(())
}

/// The `fds:` table of the new config: which entries keep their
/// descriptors, and whether the new ones fit the slots fixed at startup.
fn plan_fds(shell: &mut Shell, fds: &[u8]) -> Result<(), Refusal> {
    let Some(t) = shell.svc.stack.table_mut() else {
        return Ok(());
    };
    if let Err((need, free)) = t.plan(fds) {
        let m = &mut shell.reloader.message;
        m.clear();
        let _ = write!(
            m,
            "the new fds table needs {need} new entries but only {free} slots are free (the \
             table's slots are fixed at startup: twice its entries and {} more; restart \
             coffeyd to grow it)",
            super::fdtable::SPARE
        );
        return Err((Outcome::Failed(ErrorCode::Failed), ""));
    }
    Ok(())
}

/// Whether service `a` of the running config and `b` of the new one get
/// the same descriptors: the same numbers of the same entries (by spec).
fn same_fds(a: &CService<'_>, b: &CService<'_>, cur_fds: &[u8], next_fds: &[u8]) -> bool {
    let spec = |t: &[u8], k: u16| {
        compiled::fd_specs(t)
            .nth(usize::from(k))
            .map(|e| super::fdtable::spec_hash(&e))
    };
    a.fds().count() == b.fds().count()
        && a.fds().zip(b.fds()).all(|((n, k, e), (m, j, f))| {
            n == m && e == f && spec(cur_fds, k).is_some() && spec(cur_fds, k) == spec(next_fds, j)
        })
}

/// Why a reload did not apply: the outcome, and the message (empty: the
/// message is already in `message`).
type Refusal = (Outcome, &'static str);

/// Where applying stands. Applying is split across loop turns, each
/// doing at most [`APPLY_SLICE_US`] of it, so a reload of 1,000 services
/// never holds a turn for long. In order: log the plan lines, configure
/// the changed and added slots, point every dependency at its slot,
/// retire the removed services, start the added ones and restart the
/// changed ones, then the verdict.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Step {
    Log,
    Configure,
    Deps,
    Retire,
    Start,
    Done,
}

#[derive(Copy, Clone, Debug)]
pub struct Progress {
    step: Step,
    /// The next index within the step.
    at: usize,
    dry_run: bool,
    old_used: usize,
    shutdown_timeout: u64,
}

/// Longest share of one turn that applying takes (checked between
/// services; one service's step is microseconds, a stop or start of one
/// at most a few hundred).
pub const APPLY_SLICE_US: u64 = 2000;

/// Reload number `gen` compiled into `next`: plans it. Ok: applying
/// begins ([`advance`] until it returns true). Err: refused, recorded.
pub fn begin(sup: &Supervisor<'_>, shell: &mut Shell, gen: u32, dry_run: bool) -> Option<Progress> {
    let cur = core::mem::take(&mut shell.reloader.cur);
    let next = core::mem::take(&mut shell.reloader.next);
    let (cl, nl) = (shell.reloader.cur_len, shell.reloader.next_len);
    let res = prepare(
        sup,
        shell,
        dry_run,
        cur.get(..cl).unwrap_or(&[]),
        next.get(..nl).unwrap_or(&[]),
    );
    shell.reloader.cur = cur;
    shell.reloader.next = next;
    match res {
        Ok(p) => Some(p),
        Err((outcome, why)) => {
            refused(&mut shell.reloader, &mut shell.log, gen, outcome, why);
            None
        }
    }
}

fn refused(r: &mut Reloader, log: &mut Log, gen: u32, outcome: Outcome, why: &str) {
    r.outcome = outcome;
    if !why.is_empty() {
        r.message.clear();
        r.message.push_bytes(why.as_bytes());
    }
    // Invalid: the validator's text was logged whole.
    if outcome != Outcome::Invalid {
        let m = core::str::from_utf8(r.message.as_bytes()).unwrap_or("");
        log!(log, "reload rejected: {m}");
    }
    r.gen = gen;
}

/// A reload that ended before planning (the compiler failed, coffeyd is
/// shutting down): recorded for its clients like any refusal.
pub fn refuse(r: &mut Reloader, log: &mut Log, gen: u32, code: ErrorCode, why: &str) {
    r.plan.count = 0;
    r.plan.removed = 0;
    refused(r, log, gen, Outcome::Failed(code), why);
}

fn prepare(
    sup: &Supervisor<'_>,
    shell: &mut Shell,
    dry_run: bool,
    cur: &[u8],
    next: &[u8],
) -> Result<Progress, Refusal> {
    shell.reloader.plan.count = 0;
    shell.reloader.plan.removed = 0;
    let failed = Outcome::Failed(ErrorCode::Failed);
    let (count, services, timeout, fds) = match compiled::decode(next) {
        Ok(Compiled::Valid {
            count,
            services,
            shutdown_timeout,
            fds,
        }) => (count, services, shutdown_timeout, fds),
        Ok(Compiled::Invalid(text)) => {
            // The diagnostics stay in `next` for the clients.
            log!(shell.log, "reload rejected: {text}");
            let m = &mut shell.reloader.message;
            m.clear();
            m.push_bytes(b"the config has errors");
            return Err((Outcome::Invalid, ""));
        }
        Err(_) => return Err((failed, "the config compiler's output is corrupt")),
    };
    if sup.shutting_down() {
        return Err((failed, "coffeyd is shutting down"));
    }
    if !matches!(compiled::decode(cur), Ok(Compiled::Valid { .. })) {
        return Err((failed, "internal error: running config unreadable"));
    }
    plan_fds(shell, fds)?;
    plan(sup, shell, cur, next, &services, count)?;
    if !dry_run {
        if let Some(t) = shell.svc.stack.table_mut() {
            t.apply(fds, &mut shell.log);
        }
    }
    let mut counts = [0usize; 6];
    for k in 0.. {
        let Some((code, _, _)) = plan_line(&shell.reloader.plan, cur, next, k) else {
            break;
        };
        if let Some(n) = counts.get_mut(usize::from(code)) {
            *n += 1;
        }
    }
    let m = &mut shell.reloader.message;
    m.clear();
    let n = |code: u8| counts.get(usize::from(code)).copied().unwrap_or(0);
    let _ = write!(
        m,
        "{}: {} added, {} removed, {} restarted, {} updated, {} unchanged",
        if dry_run {
            "dry run, nothing changed"
        } else {
            "applied"
        },
        n(plan::ADD),
        n(plan::REMOVE),
        n(plan::RESTART),
        n(plan::UPDATE),
        n(plan::UNCHANGED)
    );
    Ok(Progress {
        step: Step::Log,
        at: 0,
        dry_run,
        old_used: shell.svc.used,
        shutdown_timeout: timeout,
    })
}

/// Applies a slice of reload `gen` (until `until_us`, monotonic µs).
/// Returns true once it is over: the outcome is recorded, the buffers
/// swapped if it applied.
pub fn advance(
    sup: &mut Supervisor<'_>,
    shell: &mut Shell,
    p: &mut Progress,
    gen: u32,
    now: Instant,
    until_us: u64,
) -> bool {
    let cur = core::mem::take(&mut shell.reloader.cur);
    let next = core::mem::take(&mut shell.reloader.next);
    let (cl, nl) = (shell.reloader.cur_len, shell.reloader.next_len);
    let old = cur.get(..cl).unwrap_or(&[]);
    let new = next.get(..nl).unwrap_or(&[]);
    while p.step != Step::Done && super::clock::now_us() < until_us {
        step(sup, shell, p, now, old, new);
    }
    let done = p.step == Step::Done;
    let (mut cur, mut next) = (cur, next);
    let r = &mut shell.reloader;
    if done && !p.dry_run {
        core::mem::swap(&mut cur, &mut next);
        r.cur_len = nl;
        // `next` now holds the previous config: the plan is read from it.
        r.next_len = cl;
    }
    r.cur = cur;
    r.next = next;
    if done {
        verdict(sup, shell, p, gen, now);
    }
    done
}

/// One unit of applying: a service of the current step, or the move to
/// the next step.
fn step(
    sup: &mut Supervisor<'_>,
    shell: &mut Shell,
    p: &mut Progress,
    now: Instant,
    old: &[u8],
    new: &[u8],
) {
    let n = shell.reloader.plan.count;
    let k = p.at;
    p.at += 1;
    match p.step {
        Step::Log => match plan_line(&shell.reloader.plan, old, new, k) {
            Some((code, name, detail)) => {
                // Unchanged services are only counted: a reload of 1,000
                // would otherwise write 1,000 lines.
                if code != plan::UNCHANGED {
                    log!(
                        shell.log,
                        "reload: {} {name}{}{detail}",
                        plan::name(code),
                        if detail.is_empty() { "" } else { ": " }
                    );
                }
            }
            None if p.dry_run => next_step(p, Step::Done),
            None => {
                use_slots(sup, shell);
                // What apply fills goes beside the running storage.
                shell.svc.arena.flip();
                next_step(p, Step::Configure);
            }
        },
        Step::Configure if k < n => configure_one(sup, shell, k, new),
        Step::Configure => next_step(p, Step::Deps),
        Step::Deps if k == 0 => index_new_names(&mut shell.reloader, new),
        Step::Deps if k <= n => deps_one(sup, shell, k - 1, new),
        Step::Deps => next_step(p, Step::Retire),
        Step::Retire if k < p.old_used => retire_one(sup, shell, k, now),
        Step::Retire => next_step(p, Step::Start),
        Step::Start if k < n => start_one(sup, shell, k, now),
        Step::Start | Step::Done => next_step(p, Step::Done),
    }
}

fn next_step(p: &mut Progress, s: Step) {
    p.step = s;
    p.at = 0;
}

/// The slots in use grow to cover every slot the new config takes.
fn use_slots(sup: &mut Supervisor<'_>, shell: &mut Shell) {
    let kept = &shell.reloader.plan.kept;
    let new_used = (0..shell.svc.slots.len())
        .filter(|&i| kept.get(i).copied().unwrap_or(false))
        .map(|i| i + 1)
        .max()
        .unwrap_or(0)
        .max(shell.svc.used);
    shell.svc.used = new_used;
    sup.set_used(new_used);
}

/// Configures new service `j`'s slot if it was added or changed.
fn configure_one(sup: &mut Supervisor<'_>, shell: &mut Shell, j: usize, new: &[u8]) {
    let Some((i, act, at)) = slot_of(&shell.reloader, j) else {
        return;
    };
    if act == plan::UNCHANGED {
        return;
    }
    let (Some(c), Some(svc)) = (compiled::service_at(new, at), sup.service_mut(i)) else {
        return;
    };
    if let Err(e) = configure(shell, svc, i, &c, act == plan::ADD) {
        log!(shell.log, "reload: {}: {e}", c.name);
    }
}

/// Points new service `j`'s dependencies at their slots. This comes
/// before retiring: a kept service that depended on a removed one must no
/// longer, or the removed one's stop would take it down too.
fn deps_one(sup: &mut Supervisor<'_>, shell: &mut Shell, j: usize, new: &[u8]) {
    let Some((i, _, at)) = slot_of(&shell.reloader, j) else {
        return;
    };
    let (Some(c), Some(svc)) = (compiled::service_at(new, at), sup.service_mut(i)) else {
        return;
    };
    if let Err(e) = resolve_deps(&shell.reloader, new, svc, &c) {
        log!(shell.log, "reload: {}: {e}", c.name);
    }
    resolve_log_to(&shell.reloader, new, &mut shell.svc.slots, i, &c);
}

/// Retires slot `i` if the new config removed its service: it stops.
fn retire_one(sup: &mut Supervisor<'_>, shell: &mut Shell, i: usize, now: Instant) {
    let kept = shell.reloader.plan.kept.get(i).copied().unwrap_or(true);
    if kept || shell.svc.slots.get(i).is_none_or(|s| s.retired) {
        return;
    }
    if let Some(svc) = sup.service_mut(i) {
        svc.deps.clear();
    }
    sup.stop(i, now, shell);
    shell.ctl.slot_replaced(i);
    if let Some(s) = shell.svc.slots.get_mut(i) {
        s.retired = true;
        s.prep.filled = false;
        // No longer anyone's logger, nor logging: the pipe closes (the
        // stopping logger reads what is left, then EOF).
        s.output.set_logger_slot(None);
        let _ = s.output.set_logger(false);
    }
    if let Some(a) = shell.reloader.cur_at.get_mut(i) {
        *a = NONE;
    }
}

/// Starts new service `j` if added, restarts it if its command changed
/// and it was up; its slot now runs the new config's service.
fn start_one(sup: &mut Supervisor<'_>, shell: &mut Shell, j: usize, now: Instant) {
    let Some((i, act, at)) = slot_of(&shell.reloader, j) else {
        return;
    };
    if let Some(a) = shell.reloader.cur_at.get_mut(i) {
        *a = at;
    }
    let wanted = sup.services().get(i).is_some_and(|s| s.want == Want::Up);
    match act {
        plan::ADD => {
            sup.start(i, now, shell);
        }
        plan::RESTART if wanted => {
            sup.restart(i, now, shell);
        }
        _ => {}
    }
}

/// The reload is over: settle, record and log the outcome.
fn verdict(sup: &mut Supervisor<'_>, shell: &mut Shell, p: &Progress, gen: u32, now: Instant) {
    let r = &mut shell.reloader;
    r.gen = gen;
    if p.dry_run {
        r.outcome = Outcome::DryRun;
        return;
    }
    r.outcome = Outcome::Applied;
    compact_exec(&mut shell.svc, &mut shell.log);
    // Updated checks of running services start here, not at the next event.
    sup.settle(now, shell);
    shell.life.shutdown_timeout = p.shutdown_timeout;
    let text = core::str::from_utf8(shell.reloader.message.as_bytes()).unwrap_or("");
    log!(shell.log, "reload {text}");
    shell.ctl.reloaded();
}

/// The apply is over: the exec storage it did not rewrite (unchanged and
/// retired services) moves into the current half, free slots let theirs
/// go, and the old half's pages are returned. The plan checked that all
/// of it fits, so nothing is lost.
fn compact_exec(svc: &mut Services, log: &mut Log) {
    let Services {
        slots, arena, used, ..
    } = svc;
    for (i, s) in slots.iter_mut().enumerate() {
        let live = i < *used;
        let startup = s.health.startup.get_mut().map(|k| &mut k.prep);
        let checks = s
            .health
            .check_prep
            .iter_mut()
            .filter_map(super::slab::Cold::get_mut)
            .chain(startup);
        for p in core::iter::once(&mut s.prep).chain(checks) {
            if !live {
                p.clear();
            } else if p.relocate(arena).is_err() {
                log!(log, "reload: {}: {}", s.name, FillError::Full.as_str());
                p.clear();
            }
        }
    }
    arena.release_other();
}

/// New service `j`'s slot, plan action and offset in the new buffer.
fn slot_of(r: &Reloader, j: usize) -> Option<(usize, u8, u32)> {
    let p = &r.plan;
    Some((
        usize::from(*p.slot.get(j)?),
        *p.action.get(j)?,
        *p.new_at.get(j)?,
    ))
}

/// Item `k` of plan `p` from `old` to `new`: (action, name, detail).
fn plan_line<'b>(
    p: &Plan,
    old: &'b [u8],
    new: &'b [u8],
    k: usize,
) -> Option<(u8, &'b str, &'static str)> {
    if k < p.count {
        let name = compiled::name_at(new, *p.new_at.get(k)?)?;
        return Some((*p.action.get(k)?, name, *p.why.get(k)?));
    }
    let k = k - p.count;
    if k >= p.removed {
        return None;
    }
    let name = compiled::name_at(old, *p.removed_at.get(k)?)?;
    Some((plan::REMOVE, name, "no longer in the config"))
}
/// The plan: a slot for every new service (`rd`, `count` of `next`) and a
/// plan line for each, then the removed ones. Nothing changes yet; what
/// apply could not do is refused here (the reason in `message`).
fn plan(
    sup: &Supervisor<'_>,
    shell: &mut Shell,
    cur: &[u8],
    next: &[u8],
    rd: &Rd<'_>,
    count: u16,
) -> Result<(), Refusal> {
    let (cur_fds, next_fds) = (compiled::fd_table(cur), compiled::fd_table(next));
    let Shell {
        reloader,
        svc:
            crate::daemon::Services {
                slots,
                base_env,
                arena,
                ..
            },
        ..
    } = shell;
    let used = shell.svc.used;
    let Reloader {
        names,
        plan: p,
        message,
        cur_at,
        ..
    } = reloader;
    let failed = Outcome::Failed(ErrorCode::Failed);
    // Running services by name (live slots only).
    names.clear();
    for (i, s) in slots.iter().enumerate().take(used) {
        if !s.retired {
            names.insert(s.name.as_bytes(), i as u16);
        }
    }
    p.kept.fill(false);
    let key = |i: u16| {
        slots
            .get(usize::from(i))
            .map_or(&b""[..], |s| s.name.as_bytes())
    };
    let mut need_new = 0usize;
    let mut exec_need = 0usize;
    for (j, (at, c)) in compiled::services_at(rd, count).enumerate() {
        exec_need += super::spawn::service_need(&c, base_env.len());
        if let Err(e) = super::spawn::Prepared::fits(&c) {
            message.clear();
            let _ = write!(message, "service '{}': {}", c.name, e.as_str());
            return Err((failed, ""));
        }
        let room = shell.svc.stack.fd_room();
        if c.fds_raw.len() / 4 > room {
            message.clear();
            let _ = write!(
                message,
                "service '{}' has {} fds but coffeyd holds room for {room} (sized from the \
                 startup config; restart coffeyd to grow it)",
                c.name,
                c.fds_raw.len() / 4
            );
            return Err((failed, ""));
        }
        if usize::from(c.ndeps) > MAX_DEPS {
            return Err((failed, "a service has more than MAX_DEPS dependencies"));
        }
        let found = names.find(c.name.as_bytes(), key);
        // (More services than slots: counted, refused below.)
        if let (Some(a), Some(s), Some(act)) =
            (p.new_at.get_mut(j), p.slot.get_mut(j), p.action.get_mut(j))
        {
            *a = at;
            *s = found.unwrap_or(NO_SLOT);
            // Classified below; ADD now if no running service has the name.
            *act = if found.is_some() { 0 } else { plan::ADD };
        }
        match found.and_then(|i| p.kept.get_mut(usize::from(i))) {
            Some(k) => *k = true,
            None => need_new += 1,
        }
    }
    // Apply fills the new config beside the running one's exec storage
    // (see `arena.rs`): both must fit one half.
    if exec_need + arena.used() > arena.capacity() {
        message.clear();
        let _ = write!(
            message,
            "the new config's commands and environments need {exec_need} bytes of exec storage \
             but only {} of {} are free (the exec arena is sized at startup; restart coffeyd to \
             grow it)",
            arena.capacity().saturating_sub(arena.used()),
            arena.capacity()
        );
        return Err((failed, ""));
    }
    let count = usize::from(count);
    // Free slots: never used, or retired with no process left.
    let kept = &mut p.kept;
    let free = |kept: &[bool], i: usize| {
        let unused = i >= used || slots.get(i).is_some_and(|s| s.retired);
        let idle = sup.services().get(i).is_none_or(|x| !x.state.has_process());
        !kept.get(i).copied().unwrap_or(true) && unused && idle
    };
    let nfree = (0..slots.len()).filter(|&i| free(kept, i)).count();
    if need_new > nfree {
        message.clear();
        let _ = write!(
            message,
            "the new config needs {need_new} more service slots but only {nfree} of {} are free \
             (limits.services is fixed at startup; restart coffeyd to grow it)",
            slots.len()
        );
        return Err((Outcome::Failed(ErrorCode::NoSlots), ""));
    }
    let mut cursor = 0usize;
    for s in p.slot.iter_mut().take(count).filter(|s| **s == NO_SLOT) {
        while cursor < slots.len() && !free(kept, cursor) {
            cursor += 1;
        }
        *s = cursor as u16;
        if let Some(k) = kept.get_mut(cursor) {
            *k = true;
        }
    }
    // Plan lines: compare each kept service with its running version.
    for j in 0..count {
        let (Some(&at), Some(&i), Some(act), Some(why)) = (
            p.new_at.get(j),
            p.slot.get(j),
            p.action.get_mut(j),
            p.why.get_mut(j),
        ) else {
            break;
        };
        if *act == plan::ADD {
            *why = "new service";
            continue;
        }
        let old = cur_at
            .get(usize::from(i))
            .and_then(|&o| compiled::service_at(cur, o));
        let (Some(o), Some(c)) = (old, compiled::service_at(next, at)) else {
            (*act, *why) = (plan::RESTART, "command changed");
            continue;
        };
        let fds_changed = !same_fds(&o, &c, cur_fds, next_fds);
        (*act, *why) = match (same_exec(&o, &c), same_rest(&o, &c)) {
            (Some(w), _) => (plan::RESTART, w),
            _ if fds_changed => (plan::RESTART, "fds changed"),
            (None, Some(w)) => (plan::UPDATE, w),
            (None, None) => (plan::UNCHANGED, ""),
        };
    }
    p.count = count;
    p.removed = 0;
    for (i, s) in slots.iter().enumerate().take(used) {
        if s.retired || kept.get(i).copied().unwrap_or(true) {
            continue;
        }
        if let (Some(dst), Some(&at)) = (p.removed_at.get_mut(p.removed), cur_at.get(i)) {
            *dst = at;
            p.removed += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, clippy::disallowed_macros)]
mod tests {
    use super::super::compiled::{self, Compiled};
    use super::Reloader;

    /// The kept config is what reload compares with: the services. The
    /// globals (warnings included, one a line per service with a zero
    /// backoff, 130 kB at 1,000 of them) were read once at startup.
    #[test]
    fn the_kept_config_leaves_out_the_startup_globals_and_warnings() {
        let dir = std::env::temp_dir().join(format!("cfy-reloader-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.yaml");
        std::fs::write(&p, "services:\n  - {name: a, binary: /bin/true}\n").unwrap();
        let (cfg, _) = crate::config::load(&p).unwrap();
        let warnings = "w".repeat(10_000);
        let bytes = compiled::encode_with(&cfg, &warnings);
        let r = Reloader::new(&p, &bytes, 9).unwrap();
        let kept = r.cur.get(..r.cur_len).unwrap();
        assert!(kept.len() < bytes.len() - warnings.len(), "{}", kept.len());
        let (Ok(Compiled::Valid { count: 1, .. }), Ok(Compiled::Valid { .. })) =
            (compiled::decode(kept), compiled::decode(&bytes))
        else {
            panic!("kept config does not decode as the services");
        };
        let _ = std::fs::remove_dir_all(&dir);
    }
}
