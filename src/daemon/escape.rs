//! Escapees: processes of a run that coffeyd inherited when their parent
//! exited, found when the run's main process is reaped. The classic case
//! is a daemon that backgrounds itself (nginx without `daemon off`): it
//! forks, the child calls setsid(2) and so leaves the service's process
//! group, and the parent, the process coffeyd started, exits 0.
//!
//! coffeyd is the child subreaper (supervisor mode) or PID 1, so such a
//! child becomes coffeyd's the moment its parent exits, before coffeyd
//! reaps that parent. Once a reap batch is collected (every `waitpid`
//! until none is left, see `reap` in `mod.rs`), this file lists the
//! children of coffeyd and decides whose run each unknown one belongs to.
//! A tracked escapee's death counts like a main process's: its own
//! children (a daemon's daemons) became coffeyd's, and are its run's.
//! The service machine then reports them, stops them with its group and
//! counts the run as over only once they are gone (`Sys::escapees`).
//!
//! Who is whose, so that no service is blamed for another's process:
//! - known pids are nobody's escapees: a service's main process (the pid
//!   index), an exec check, and anything in a check's group or session;
//! - a process in the group or session of a service in the batch is that
//!   service's (tracked even in its group: it may yet call setsid);
//! - a process in the group or session of any other service, or already
//!   tracked as another run's escapee, is that one's and left alone;
//! - otherwise it left its session, and the only clue is its start time:
//!   it must not have started before the run's spawn. It is blamed only if
//!   exactly one service of the batch qualifies. If several do (their main
//!   processes exited together), it is left alone and logged, since
//!   stopping the wrong service's process would be worse than leaving it.
//!
//! Kept in fixed arrays in the slots: no heap.

use super::group::{self, Stat};
use super::log::{log, LineBuf, Log};
use super::Services;
use coffey::limits::{MAX_ESCAPEES, REAP_BATCH};
use coffey::supervisor::Supervisor;
use coffey::sys::{Escapee, Outside};
use core::fmt::Write as _;

/// What one reap batch found for one slot, handed to the machine by
/// `Sys::escapees`.
#[derive(Copy, Clone, Debug, Default)]
pub struct Found {
    pub list: [Escapee; MAX_ESCAPEES],
    pub n: usize,
    pub outside: Outside,
}

impl Found {
    fn add(&mut self, pid: i32, st: &Stat, outside: bool) {
        // Listed twice only if reading the children file failed midway.
        if self.list.iter().take(self.n).any(|e| e.pid == pid) {
            return;
        }
        if let Some(e) = self.list.get_mut(self.n) {
            *e = Escapee { pid, pgrp: st.pgrp };
            self.n += 1;
        }
        if outside {
            if self.outside.count == 0 {
                self.outside.pid = pid;
                self.outside.comm = st.comm;
            }
            self.outside.count = self.outside.count.saturating_add(1);
        }
    }
}

/// A service whose main process is in the batch.
#[derive(Copy, Clone)]
struct Owner {
    pgid: i32,
    slot: usize,
    spawned: u64,
}

/// Whose an unknown child of coffeyd is (see the rules at the top).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Pick {
    /// The run in `slot`; `outside` its process group.
    Mine { slot: usize, outside: bool },
    /// Several runs of the batch could own it.
    Unclear,
    /// Not a run of the batch: another service's, or older than them all.
    Nobody,
}

/// `elsewhere`: it is in another service's group or session, or already
/// another run's escapee.
fn pick(st: &Stat, owners: &[Owner], elsewhere: impl FnOnce() -> bool) -> Pick {
    let home = owners
        .iter()
        .find(|o| o.pgid == st.pgrp || o.pgid == st.session);
    if let Some(o) = home {
        return Pick::Mine {
            slot: o.slot,
            outside: o.pgid != st.pgrp,
        };
    }
    if elsewhere() {
        return Pick::Nobody;
    }
    // Owners of one slot (a run's escapees dying together) are one run.
    let mut fits = owners.iter().filter(|o| st.start >= o.spawned);
    match fits.next() {
        Some(o) if fits.all(|p| p.slot == o.slot) => Pick::Mine {
            slot: o.slot,
            outside: true,
        },
        Some(_) => Pick::Unclear,
        None => Pick::Nobody,
    }
}

/// The run that tracks `pid` as an escapee, and the escapee's group: its
/// children became coffeyd's as it died, and are that run's as a main
/// process's are (its own daemons: the service machine stops them too).
fn escapee_owner(sup: &Supervisor<'_>, pid: i32) -> Option<(usize, i32)> {
    if pid <= 1 {
        return None;
    }
    sup.services().iter().enumerate().find_map(|(i, s)| {
        let e = s.escapees().iter().find(|e| e.pid == pid)?;
        Some((i, if e.pgrp > 1 { e.pgrp } else { pid }))
    })
}

/// The slots given a [`Found`] by one batch (to clear afterwards).
pub type Touched = heapless::Vec<usize, REAP_BATCH>;

/// Sorts the children of coffeyd among the services whose main processes
/// are in `batch` (reaped pids), into their slots' `found`.
/// `compiler` is the reload's compile child, the daemon's own.
pub fn attribute(
    sup: &Supervisor<'_>,
    svc: &mut Services,
    log: &mut Log,
    compiler: Option<i32>,
    batch: &[i32],
) -> Touched {
    let mut owners: heapless::Vec<Owner, REAP_BATCH> = heapless::Vec::new();
    let mut touched = Touched::new();
    for &pid in batch {
        let Some((slot, pgid)) = sup
            .owner_of(pid)
            .map(|slot| (slot, pid))
            .or_else(|| escapee_owner(sup, pid))
        else {
            continue;
        };
        let spawned = svc.slots.get(slot).map_or(0, |s| s.spawned);
        let _ = owners.push(Owner {
            pgid,
            slot,
            spawned,
        });
        if !touched.contains(&slot) {
            let _ = touched.push(slot);
        }
    }
    if owners.is_empty() {
        return touched;
    }
    let slots = &mut svc.slots;
    let mut unclear: (u32, i32, [u8; 16]) = (0, 0, [0; 16]);
    group::children(|child| {
        // Known by pid, so its stat is not read: a main process (the pid
        // index), the reload's compile child (the daemon's own), an exec
        // check. A batch whose children are all known reads no stat.
        let pid = child.pid();
        let check = |p: i32| {
            p > 0
                && slots
                    .iter()
                    .any(|s| s.health.probes.iter().any(|c| c.pid == p))
        };
        if sup.owner_of(pid).is_some() || compiler == Some(pid) || check(pid) {
            return;
        }
        let Some(st) = child.stat().filter(Stat::live) else {
            return;
        };
        let st = &st;
        if check(st.pgrp) || check(st.session) {
            return;
        }
        let elsewhere = || {
            sup.services().iter().any(|s| {
                s.state
                    .pid()
                    .is_some_and(|p| p == st.pgrp || p == st.session)
                    || s.escapees()
                        .iter()
                        .any(|e| e.pid == pid || (e.pgrp > 0 && e.pgrp == st.pgrp))
            })
        };
        match pick(st, &owners, elsewhere) {
            Pick::Mine { slot, outside } => {
                if let Some(s) = slots.get_mut(slot) {
                    s.found.add(pid, st, outside);
                }
            }
            Pick::Unclear => {
                if unclear.0 == 0 {
                    unclear = (0, pid, st.comm);
                }
                unclear.0 = unclear.0.saturating_add(1);
            }
            Pick::Nobody => {}
        }
    });
    if unclear.0 > 0 {
        let who = Outside {
            count: unclear.0,
            pid: unclear.1,
            comm: unclear.2,
        };
        let mut names = LineBuf::default();
        let mut sep = "";
        for o in &owners {
            let name = slots.get(o.slot).map_or("?", |s| s.name.as_str());
            let _ = write!(names, "{sep}{name}");
            sep = ", ";
        }
        let names = core::str::from_utf8(names.as_bytes()).unwrap_or("?");
        log!(
            log,
            "{} process{} outside any service's group (pid {}, {}) may belong to {names}, whose main processes exited together; coffeyd cannot tell whose, so it leaves {}",
            who.count,
            if who.count == 1 { "" } else { "es" },
            who.pid,
            who.name(),
            if who.count == 1 { "it alone" } else { "them alone" }
        );
    }
    touched
}

/// `Sys::escapees` for slot `idx`: what the current batch found (once).
pub fn take(svc: &mut Services, idx: usize, out: &mut [Escapee]) -> Outside {
    let Some(s) = svc.slots.get_mut(idx) else {
        return Outside::default();
    };
    let found = core::mem::take(&mut s.found);
    for (o, e) in out.iter_mut().zip(found.list.iter().take(found.n)) {
        *o = *e;
    }
    found.outside
}

/// After a batch: nothing found stays for the next.
pub fn clear(svc: &mut Services, touched: &Touched) {
    for &i in touched {
        if let Some(s) = svc.slots.get_mut(i) {
            s.found = Found::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(pgrp: i32, session: i32, start: u64) -> Stat {
        Stat {
            state: b'S',
            ppid: 1,
            pgrp,
            session,
            start,
            comm: [0; 16],
        }
    }

    #[test]
    fn a_child_is_blamed_only_on_a_run_that_can_be_its_own() {
        // web (pgid 100, spawned at tick 1000) and api (200, at 2000)
        // exited in one batch.
        let owners = [
            Owner {
                pgid: 100,
                slot: 0,
                spawned: 1000,
            },
            Owner {
                pgid: 200,
                slot: 1,
                spawned: 2000,
            },
        ];
        let mine = |slot, outside| Pick::Mine { slot, outside };
        // Still in a group, or in a session, of the batch: that run's.
        assert_eq!(pick(&st(200, 200, 5000), &owners, || true), mine(1, false));
        assert_eq!(pick(&st(300, 100, 5000), &owners, || true), mine(0, true));
        // Left its session: by start time, if only one run fits.
        assert_eq!(pick(&st(300, 300, 1500), &owners, || false), mine(0, true));
        assert_eq!(pick(&st(300, 300, 2500), &owners, || false), Pick::Unclear);
        assert_eq!(pick(&st(300, 300, 999), &owners, || false), Pick::Nobody);
        // Another service's member or escapee: never blamed.
        assert_eq!(pick(&st(300, 300, 1500), &owners, || true), Pick::Nobody);
        // One service in the batch: anything that started after its spawn.
        let one = &owners[..1];
        assert_eq!(pick(&st(300, 300, 9999), one, || false), mine(0, true));
        // Two escapees of web's run died together: their orphan is web's.
        let web = [
            owners[0],
            Owner {
                pgid: 150,
                ..owners[0]
            },
        ];
        assert_eq!(pick(&st(300, 300, 9999), &web, || false), mine(0, true));
        assert_eq!(pick(&st(300, 150, 9999), &web, || true), mine(0, true));
    }
}
