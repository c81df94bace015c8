//! The pid -> slot index: routes a reaped pid to its service in O(1).
//!
//! An open-addressing table (linear probing, backward-shift deletion, so no
//! tombstones) over storage the shell lends at startup, like the service
//! table. It holds one entry per service whose main process is alive and
//! not yet reaped, so with [`PidIndex::capacity_for`] slots it is never
//! more than half full. It never allocates and never panics; a full table
//! (wrong sizing) answers `Err`.

/// The index has no free bucket (it was lent less than
/// [`PidIndex::capacity_for`]), or the pid was 0.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Full;

/// One bucket: `pid` 0 means empty (pid 0 is never a child).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PidSlot {
    pid: i32,
    slot: u16,
}

impl PidSlot {
    pub const EMPTY: PidSlot = PidSlot { pid: 0, slot: 0 };
}

pub struct PidIndex<'a> {
    buckets: &'a mut [PidSlot],
    len: usize,
}

impl<'a> PidIndex<'a> {
    /// Buckets to lend for `services` slots: a power of two, at least
    /// twice the number of slots (load factor at most 1/2).
    pub const fn capacity_for(services: usize) -> usize {
        let want = if services < 2 { 4 } else { services * 2 };
        want.next_power_of_two()
    }

    /// Takes the storage and empties it.
    pub fn new(buckets: &'a mut [PidSlot]) -> Self {
        for b in buckets.iter_mut() {
            *b = PidSlot::EMPTY;
        }
        PidIndex { buckets, len: 0 }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The home bucket of `pid`: a multiplicative hash, because pids are
    /// handed out in sequence and would otherwise cluster.
    fn home(&self, pid: i32) -> usize {
        let n = self.buckets.len();
        if n == 0 {
            return 0;
        }
        let h = (pid as u32).wrapping_mul(0x9E37_79B9);
        (h as usize) % n
    }

    fn next(&self, i: usize) -> usize {
        let n = self.buckets.len().max(1);
        (i + 1) % n
    }

    /// Where `pid` sits, if present.
    fn find(&self, pid: i32) -> Option<usize> {
        if pid == 0 {
            return None;
        }
        let mut i = self.home(pid);
        for _ in 0..self.buckets.len() {
            let b = self.buckets.get(i)?;
            if b.pid == pid {
                return Some(i);
            }
            if b.pid == 0 {
                return None;
            }
            i = self.next(i);
        }
        None
    }

    /// The slot whose main process is `pid`.
    pub fn get(&self, pid: i32) -> Option<usize> {
        let i = self.find(pid)?;
        self.buckets.get(i).map(|b| usize::from(b.slot))
    }

    /// Records that `pid` is the main process of `slot` (replacing an
    /// older entry for the same pid). `Err` when the table is full.
    pub fn insert(&mut self, pid: i32, slot: u16) -> Result<(), Full> {
        if pid == 0 {
            return Err(Full);
        }
        if let Some(i) = self.find(pid) {
            if let Some(b) = self.buckets.get_mut(i) {
                b.slot = slot;
            }
            return Ok(());
        }
        // Keep one bucket empty so that every probe ends.
        if self.len + 1 >= self.buckets.len() {
            return Err(Full);
        }
        let mut i = self.home(pid);
        loop {
            let Some(b) = self.buckets.get_mut(i) else {
                return Err(Full);
            };
            if b.pid == 0 {
                *b = PidSlot { pid, slot };
                self.len += 1;
                return Ok(());
            }
            i = self.next(i);
        }
    }

    /// Forgets `pid`. Later entries of its probe run shift back into the
    /// hole, so lookups never need tombstones.
    pub fn remove(&mut self, pid: i32) {
        let Some(mut hole) = self.find(pid) else {
            return;
        };
        let n = self.buckets.len();
        let mut j = hole;
        loop {
            j = self.next(j);
            let Some(&b) = self.buckets.get(j) else {
                return;
            };
            if b.pid == 0 {
                break;
            }
            // `b` may fill the hole unless its home lies cyclically in
            // (hole, j]: then it would be placed before its home.
            let home = self.home(b.pid);
            let dist_home = (j + n - home) % n;
            let dist_hole = (j + n - hole) % n;
            if dist_home >= dist_hole {
                if let Some(h) = self.buckets.get_mut(hole) {
                    *h = b;
                }
                hole = j;
            }
        }
        if let Some(h) = self.buckets.get_mut(hole) {
            *h = PidSlot::EMPTY;
        }
        self.len = self.len.saturating_sub(1);
    }

    /// Every entry, for consistency checks.
    pub fn entries(&self) -> impl Iterator<Item = (i32, usize)> + '_ {
        self.buckets
            .iter()
            .filter(|b| b.pid != 0)
            .map(|b| (b.pid, usize::from(b.slot)))
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, clippy::disallowed_macros)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn capacity_is_a_power_of_two_at_least_twice() {
        for n in [0usize, 1, 2, 3, 64, 100, 1000] {
            let c = PidIndex::capacity_for(n);
            assert!(c.is_power_of_two() && c >= 2 * n && c >= 4, "{n}: {c}");
        }
    }

    #[test]
    fn insert_get_remove_against_a_model() {
        // Many colliding pids, inserted and removed in a scrambled order;
        // the index must agree with a plain list after every operation.
        let mut store = [PidSlot::EMPTY; 16];
        let mut ix = PidIndex::new(&mut store);
        let mut model: Vec<(i32, usize)> = Vec::new();
        let mut x: u32 = 7;
        for _ in 0..5000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let pid = 1 + (x >> 16) as i32 % 40;
            if model.iter().any(|m| m.0 == pid) {
                ix.remove(pid);
                model.retain(|m| m.0 != pid);
            } else if model.len() < 8 {
                let slot = (x % 8) as usize;
                ix.insert(pid, slot as u16).unwrap();
                model.push((pid, slot));
            }
            assert_eq!(ix.len(), model.len());
            for p in 1..=40 {
                let want = model.iter().find(|m| m.0 == p).map(|m| m.1);
                assert_eq!(ix.get(p), want, "pid {p}");
            }
        }
    }

    #[test]
    fn full_table_is_an_error_not_a_hang() {
        let mut store = [PidSlot::EMPTY; 4];
        let mut ix = PidIndex::new(&mut store);
        for p in 1..=3 {
            ix.insert(p, 0).unwrap();
        }
        assert_eq!(ix.insert(99, 0), Err(Full));
        assert_eq!(ix.get(99), None);
        assert_eq!(ix.insert(0, 0), Err(Full));
        let mut none: [PidSlot; 0] = [];
        let mut ix = PidIndex::new(&mut none);
        assert_eq!(ix.insert(5, 0), Err(Full));
        assert_eq!(ix.get(5), None);
        ix.remove(5);
    }
}
