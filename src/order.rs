//! The dependency ORDER of the service table: an intrusive doubly linked
//! list through the services (`Service::link`), dependencies before their
//! dependents. Walking it forwards visits every service after all it
//! depends on; backwards, every service after all that depend on it. So
//! one walk finishes a transitive start, stop or closure that repeated
//! passes over the table used to need (O(n²) per pass, up to n passes).
//!
//! Built in O(services + edges) with Kahn's algorithm run from the
//! dependents' side, which needs only the forward `deps` each service
//! already has: count how many services depend on each one, list those
//! nothing depends on, and walk that list, appending a dependency once its
//! last dependent is listed. The list under construction is the queue, so
//! it needs no storage beyond three `u16` per service. Services left over
//! (a cycle, which the config loader refuses) are appended in table order.
//!
//! The same build threads each service's DEPENDENTS through the
//! dependency entries that name it (`Link::first_dependent`, then
//! `next_dependent[k]` of the entry found): reverse edges with no storage
//! of their own, so the supervisor reaches the dependents of a service
//! that changed in O(its edges), not O(table).

use crate::limits::MAX_DEPS;

/// What the order needs of an entry of the table: the indexes of what it
/// depends on, and its link. The service table implements it
/// (`service.rs`); this module knows nothing else of services.
pub trait Node {
    /// The indexes of the entry's dependencies, in its own order (entry
    /// `k` of [`Link::next_dependent`] is the `k`-th of them).
    fn deps(&self) -> impl Iterator<Item = u16> + '_;
    fn link(&self) -> &Link;
    fn link_mut(&mut self) -> &mut Link;
}

/// A copy of an entry's dependency indexes, so the table can be changed
/// while they are walked.
fn deps_of<S: Node>(s: Option<&S>) -> heapless::Vec<u16, MAX_DEPS> {
    s.map(|s| s.deps().take(MAX_DEPS).collect())
        .unwrap_or_default()
}

/// "No service": the end of the list.
pub const NONE: u16 = u16::MAX;

/// Dependency entry `k` of service `svc`: one reverse edge.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    pub svc: u16,
    pub k: u8,
}

impl Edge {
    pub const NONE: Edge = Edge { svc: NONE, k: 0 };
}

/// A service's place in the order and among its dependency's dependents,
/// plus the supervisor's per-service bookkeeping that goes with them.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// The next service towards the dependents.
    pub next: u16,
    /// The next service towards the dependencies.
    pub prev: u16,
    /// The first entry, in some service's `deps`, that names this one.
    pub first_dependent: Edge,
    /// For each of this service's own `deps[k]`: the next entry naming
    /// the same dependency.
    pub next_dependent: [Edge; MAX_DEPS],
    /// Supervisor: dependency entries of services that hold this one (a
    /// holder has a process, or is itself held): while any, it must not
    /// stop. Kept up to date as holders come and go.
    pub holders: u16,
    /// Supervisor: whether this service counts in its dependencies'
    /// `holders` (has a process, or holders of its own).
    pub holding: bool,
    /// Supervisor: in its work queue, and the next one there.
    pub queued: bool,
    pub queue_next: u16,
    /// While building: dependents not yet listed.
    pending: u16,
    listed: bool,
}

impl Link {
    pub const NEW: Link = Link {
        next: NONE,
        prev: NONE,
        first_dependent: Edge::NONE,
        next_dependent: [Edge::NONE; MAX_DEPS],
        holders: 0,
        holding: false,
        queued: false,
        queue_next: NONE,
        pending: 0,
        listed: false,
    };
}

/// The services whose `deps` name `of` (once per naming entry).
pub struct Dependents {
    at: Edge,
}

impl Dependents {
    pub fn of<S: Node>(svcs: &[S], of: usize) -> Dependents {
        Dependents {
            at: svcs
                .get(of)
                .map_or(Edge::NONE, |s| s.link().first_dependent),
        }
    }

    /// The next dependent, or None at the end.
    pub fn next<S: Node>(&mut self, svcs: &[S]) -> Option<usize> {
        let i = usize::from(self.at.svc);
        let s = svcs.get(i)?;
        self.at = s
            .link()
            .next_dependent
            .get(usize::from(self.at.k))
            .copied()
            .unwrap_or(Edge::NONE);
        Some(i)
    }
}

/// Threads every dependency entry of `svcs[..used]` onto the list of the
/// service it names.
fn thread_dependents<S: Node>(active: &mut [S]) {
    let used = active.len();
    for j in 0..used {
        let deps = deps_of(active.get(j));
        for (k, &d) in deps.iter().enumerate() {
            let d = usize::from(d);
            let Some(head) = active
                .get(d)
                .filter(|_| d < used)
                .map(|t| t.link().first_dependent)
            else {
                continue;
            };
            if let Some(slot) = active
                .get_mut(j)
                .and_then(|s| s.link_mut().next_dependent.get_mut(k))
            {
                *slot = head;
            }
            if let Some(t) = active.get_mut(d) {
                t.link_mut().first_dependent = Edge {
                    svc: idx16(j),
                    k: u8::try_from(k).unwrap_or(0),
                };
            }
        }
    }
}

/// Both ends of the list over `svcs[..used]`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Order {
    /// A service that depends on nothing listed before it.
    pub first: u16,
    /// A service nothing listed after it depends on.
    pub last: u16,
}

fn idx16(i: usize) -> u16 {
    u16::try_from(i).unwrap_or(NONE)
}

/// Puts `i` in front of the list (towards the dependencies) built so far,
/// whose front is `*front`.
fn push_front<S: Node>(svcs: &mut [S], front: &mut u16, back: &mut u16, i: usize) {
    let old = *front;
    if let Some(l) = svcs.get_mut(i).map(S::link_mut) {
        l.next = old;
        l.prev = NONE;
        l.listed = true;
    }
    if let Some(o) = svcs.get_mut(usize::from(old)) {
        o.link_mut().prev = idx16(i);
    }
    *front = idx16(i);
    if *back == NONE {
        *back = idx16(i);
    }
}

/// Builds the order of `svcs[..used]`.
pub fn build<S: Node>(svcs: &mut [S], used: usize) -> Order {
    let used = used.min(svcs.len());
    let active = svcs.get_mut(..used).unwrap_or(&mut []);
    for s in active.iter_mut() {
        *s.link_mut() = Link::NEW;
    }
    thread_dependents(active);
    for j in 0..used {
        let deps = deps_of(active.get(j));
        for d in deps.iter().map(|&d| usize::from(d)).filter(|&d| d < used) {
            if let Some(t) = active.get_mut(d).map(S::link_mut) {
                t.pending = t.pending.saturating_add(1);
            }
        }
    }
    // The list grows at its front; `walk` moves from the back (the
    // dependents) towards the front, releasing dependencies as it goes.
    let (mut front, mut back) = (NONE, NONE);
    for i in 0..used {
        if active.get(i).is_some_and(|s| s.link().pending == 0) {
            push_front(active, &mut front, &mut back, i);
        }
    }
    let mut walk = back;
    while walk != NONE {
        let Some(s) = active.get(usize::from(walk)) else {
            break;
        };
        let deps = deps_of(Some(s));
        for d in deps.iter().map(|&d| usize::from(d)).filter(|&d| d < used) {
            let ready = active.get_mut(d).map(S::link_mut).is_some_and(|t| {
                t.pending = t.pending.saturating_sub(1);
                t.pending == 0 && !t.listed
            });
            if ready {
                push_front(active, &mut front, &mut back, d);
            }
        }
        // Read after the pushes: what they listed is walked next.
        walk = active
            .get(usize::from(walk))
            .map_or(NONE, |s| s.link().prev);
    }
    for i in 0..used {
        if active.get(i).is_some_and(|s| !s.link().listed) {
            push_front(active, &mut front, &mut back, i);
        }
    }
    Order {
        first: front,
        last: back,
    }
}

/// Iterates `svcs` indexes from `start`, following `step` (`next` for
/// dependencies first, `prev` for dependents first). The list is read
/// afresh at each step, so the caller may mutate the services (not their
/// links) between steps.
pub struct Walk {
    at: u16,
    forward: bool,
}

impl Order {
    /// Dependencies first.
    pub fn forward(&self) -> Walk {
        Walk {
            at: self.first,
            forward: true,
        }
    }

    /// Dependents first.
    pub fn backward(&self) -> Walk {
        Walk {
            at: self.last,
            forward: false,
        }
    }
}

impl Walk {
    /// The next index, or None at the end.
    pub fn next<S: Node>(&mut self, svcs: &[S]) -> Option<usize> {
        let i = usize::from(self.at);
        let l = svcs.get(i)?.link();
        self.at = if self.forward { l.next } else { l.prev };
        Some(i)
    }
}

/// Whether the order lists each of `svcs[..used]` once, every
/// dependency before its dependent (tests and fuzzing; O(n²)).
pub fn consistent<S: Node>(svcs: &[S], used: usize, order: Order) -> bool {
    let position = |target: usize| {
        let mut w = order.forward();
        let mut k = 0usize;
        while let Some(i) = w.next(svcs) {
            if i == target {
                return Some(k);
            }
            k += 1;
            if k > used {
                return None;
            }
        }
        None
    };
    let mut w = order.forward();
    let mut seen = 0usize;
    while let Some(i) = w.next(svcs) {
        seen += 1;
        if seen > used || i >= used {
            return false;
        }
    }
    seen == used
        && svcs.iter().take(used).enumerate().all(|(i, s)| {
            let at = position(i);
            at.is_some()
                && s.deps()
                    .map(usize::from)
                    .filter(|&d| d < used)
                    .all(|d| d == i || matches!((position(d), at), (Some(a), Some(b)) if a < b))
        })
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, clippy::disallowed_macros)]
mod tests {
    use super::*;
    use crate::service::{Condition, Dep, Policy, Service};
    use std::vec::Vec;

    fn table(n: usize, edges: &[(usize, usize)]) -> Vec<Service> {
        let mut v: Vec<Service> = (0..n)
            .map(|i| Service::new(i as u16, Policy::default()))
            .collect();
        for &(from, to) in edges {
            v[from]
                .deps
                .push(Dep {
                    idx: to as u16,
                    condition: Condition::Started,
                })
                .unwrap();
        }
        v
    }

    fn listed(v: &[Service], o: Order) -> Vec<usize> {
        let mut w = o.forward();
        let mut out = Vec::new();
        while let Some(i) = w.next(v) {
            out.push(i);
        }
        out
    }

    #[test]
    fn a_chain_listed_against_the_table_comes_out_dependencies_first() {
        // 0 needs 1, 1 needs 2, ... : the reverse of table order.
        let edges: Vec<_> = (0..99).map(|i| (i, i + 1)).collect();
        let mut v = table(100, &edges);
        let o = build(&mut v, 100);
        assert_eq!(listed(&v, o), (0..100).rev().collect::<Vec<_>>());
        assert!(consistent(&v, 100, o));
        let mut back = o.backward();
        assert_eq!(back.next(&v), Some(0));
    }

    #[test]
    fn diamonds_shared_deps_and_duplicates() {
        // 3 needs 1 and 2 (twice), both need 0; 4 stands alone.
        let mut v = table(5, &[(3, 1), (3, 2), (3, 2), (1, 0), (2, 0)]);
        let o = build(&mut v, 5);
        assert!(consistent(&v, 5, o));
        assert_eq!(listed(&v, o).len(), 5);
    }

    #[test]
    fn only_the_used_slots_are_listed_and_a_cycle_is_still_listed_once() {
        // Slot 4 is spare; 0 <-> 1 is a cycle (the loader refuses those).
        let mut v = table(5, &[(0, 1), (1, 0), (2, 4), (3, 2)]);
        let o = build(&mut v, 4);
        let mut l = listed(&v, o);
        l.sort();
        assert_eq!(l, [0, 1, 2, 3]);
        let p = |x| listed(&v, o).iter().position(|&i| i == x);
        assert!(p(2) < p(3));
    }

    #[test]
    fn random_graphs_are_ordered() {
        let mut seed = 0x2545_f491_u64;
        let mut rnd = |m: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % m
        };
        for _ in 0..200 {
            let n = 1 + rnd(60);
            // A hidden rank: edges only go from higher to lower rank.
            let rank: Vec<usize> = (0..n).map(|_| rnd(1000)).collect();
            let mut edges = Vec::new();
            for from in 0..n {
                for _ in 0..rnd(5) {
                    let to = rnd(n);
                    if rank[to] < rank[from] {
                        edges.push((from, to));
                    }
                }
            }
            let mut v = table(n, &edges);
            let o = build(&mut v, n);
            assert!(consistent(&v, n, o), "n {n} edges {edges:?}");
        }
    }

    #[test]
    fn consistent_rejects_a_wrong_order() {
        let mut v = table(3, &[(0, 1), (1, 2)]);
        let o = build(&mut v, 3);
        assert!(consistent(&v, 3, o));
        // Swap the ends: dependents first is not an order.
        let wrong = Order {
            first: o.last,
            last: o.first,
        };
        for s in v.iter_mut() {
            let l = s.link_mut();
            core::mem::swap(&mut l.next, &mut l.prev);
        }
        assert!(!consistent(&v, 3, wrong));
    }
}
