//! The one exec arena: every slot's argv and envp pointer arrays, the
//! strings they point to and the sd_notify watchdog entries, packed.
//!
//! Each [`super::spawn::Prepared`] takes exactly the bytes its command
//! needs (usually a few hundred), so a service costs what its config
//! says, not a worst-case buffer. The arena is one mapping in two halves
//! of [`half_size`] bytes; only what is written costs memory.
//!
//! Reload fills the services it adds or changes into the other half
//! ([`ExecArena::flip`]) while the running ones keep theirs, so a slot's
//! exec storage is valid at every turn of an apply. When the apply ends,
//! everything still in the old half is copied over
//! ([`super::spawn::Prepared::relocate`]) and the old half's pages are
//! returned ([`ExecArena::release_other`]). The arena never grows: a
//! reload that would not fit is refused by the plan, before anything
//! changes.

use nix::libc;

/// Bytes of one half for a config whose services need `need` bytes in
/// `slots` slots: four times the need (a reload may rewrite every
/// service, and the old copies stay until the apply ends), and at least
/// 4 KiB per slot plus 64 KiB, the headroom the reload buffers keep for
/// services added into spare slots. Whole pages, so a half can be
/// released with madvise.
pub fn half_size(need: usize, slots: usize) -> usize {
    let bytes = need.saturating_mul(4).max(
        need.saturating_add(slots.saturating_mul(4096))
            .saturating_add(64 * 1024),
    );
    bytes.saturating_add(4095) & !4095
}

pub struct ExecArena {
    /// Start of the mapping: two halves of `half` bytes.
    base: *mut u8,
    half: usize,
    /// The half new fills go to (0 or 1), and its first free byte.
    cur: usize,
    at: usize,
}

impl ExecArena {
    /// Startup only: maps both halves (untouched pages cost nothing).
    pub fn new(half: usize) -> Result<ExecArena, &'static str> {
        let total = half.checked_mul(2).ok_or("exec arena too large")?;
        let m = super::slab::zeroed(total)?;
        Ok(ExecArena {
            base: m.as_mut_ptr(),
            half,
            cur: 0,
            at: 0,
        })
    }

    /// Bytes of one half: the most a config may hold at once.
    pub fn capacity(&self) -> usize {
        self.half
    }

    /// Bytes taken in the current half.
    pub fn used(&self) -> usize {
        self.at
    }

    fn start(&self, half: usize) -> *mut u8 {
        self.base.wrapping_add(half.wrapping_mul(self.half))
    }

    /// `n` bytes of the current half, pointer-aligned; None when full.
    pub fn alloc(&mut self, n: usize) -> Option<*mut u8> {
        let align = core::mem::align_of::<*const u8>();
        let n = n.checked_add(align - 1)? & !(align - 1);
        let end = self.at.checked_add(n)?;
        if end > self.half {
            return None;
        }
        let p = self.start(self.cur).wrapping_add(self.at);
        self.at = end;
        Some(p)
    }

    /// Whether `p` lies in the current half.
    pub fn holds(&self, p: *const u8) -> bool {
        let s = self.start(self.cur) as usize;
        (s..s.saturating_add(self.half)).contains(&(p as usize))
    }

    /// A reload's apply begins: fills go to the other half, which is
    /// empty (released at the end of the last apply, or never used).
    pub fn flip(&mut self) {
        self.cur ^= 1;
        self.at = 0;
    }

    /// The apply is over and nothing points into the other half any more:
    /// its pages go back to the kernel (they read as zeros after).
    pub fn release_other(&mut self) {
        if self.half == 0 {
            return;
        }
        let other = self.start(self.cur ^ 1);
        // SAFETY: our own private anonymous mapping, half-aligned to pages;
        // MADV_DONTNEED only drops its pages, which nothing refers to.
        unsafe { libc::madvise(other.cast(), self.half, libc::MADV_DONTNEED) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_aligned_bounded_and_flip_halves() {
        let mut a = ExecArena::new(4096).unwrap();
        let p = a.alloc(3).unwrap();
        let q = a.alloc(8).unwrap();
        assert_eq!(q as usize - p as usize, 8);
        assert_eq!(a.used(), 16);
        assert!(a.holds(p));
        assert!(a.alloc(4096).is_none(), "more than a half");
        a.flip();
        assert_eq!(a.used(), 0);
        assert!(!a.holds(p), "the old half is not the current one");
        let r = a.alloc(4096).unwrap();
        assert!(a.holds(r));
        assert!(a.alloc(1).is_none(), "the half is full");
        unsafe { *p = 7 };
        a.release_other();
        assert_eq!(unsafe { *p }, 0, "released pages read as zeros");
    }

    #[test]
    fn half_size_keeps_reload_headroom() {
        assert_eq!(half_size(0, 0), 64 * 1024);
        assert_eq!(half_size(1000, 10), (1000 + 40960 + 65536 + 4095) & !4095);
        assert_eq!(half_size(1 << 20, 10), 4 << 20);
    }
}
