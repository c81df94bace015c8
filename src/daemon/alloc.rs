//! Counting global allocator: proves "no heap allocation after startup".
//!
//! Startup calls [`seal`]; from then on every alloc/realloc is counted. The
//! count is logged on SIGUSR1 and at shutdown, and the integration tests
//! assert it is 0. It is compiled into every build: the cost is one relaxed
//! atomic load per allocation, and the daemon makes none after startup, so
//! a production binary can prove the rule too.
//!
//! Before the seal it adds up the bytes startup asked for (freed or not),
//! logged once as "startup heap: N bytes allocated, M kept" (M: still
//! held at the seal, the heap the daemon keeps for life): the proof that
//! the YAML parser's heap never enters the daemon (tests/daemon.rs).
//!
//! A client call (`coffeyd status`, ...) lives for a millisecond and makes
//! a few hundred small allocations. musl's malloc unmaps a group as soon
//! as its last object is freed, so the client's render loop cost an
//! mmap/munmap pair (and a page fault) per short-lived string, some 13
//! pairs a `status`. After [`client`], allocations are served from
//! [`ARENA`] (a bump pointer in .bss, whose untouched pages cost nothing)
//! and frees there are no-ops, except that the latest block can grow or
//! give itself back; once the arena is used up (a long `logs -f`), the
//! system allocator serves the rest as before. The daemon never calls
//! [`client`].

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

static SEALED: AtomicBool = AtomicBool::new(false);
static COUNT: AtomicU64 = AtomicU64::new(0);
static STARTUP_BYTES: AtomicU64 = AtomicU64::new(0);
/// Bytes held (allocated and not yet freed) while startup runs.
static KEPT: AtomicU64 = AtomicU64::new(0);

pub struct Counting;

impl Counting {
    fn note(bytes: usize) {
        if SEALED.load(Ordering::Relaxed) {
            COUNT.fetch_add(1, Ordering::Relaxed);
        } else {
            STARTUP_BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
            KEPT.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    /// A block of `bytes` went back (or was replaced by a realloc).
    fn note_free(bytes: usize) {
        if !SEALED.load(Ordering::Relaxed) {
            let _ = KEPT.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |k| {
                Some(k.saturating_sub(bytes as u64))
            });
        }
    }
}

/// Bytes of the client's bump arena.
const ARENA_LEN: usize = 256 * 1024;

/// The client's arena (see the module doc); handed out by [`BUMP`] only.
struct Arena(UnsafeCell<[u8; ARENA_LEN]>);
// SAFETY: disjoint parts are handed out through the atomic bump pointer.
unsafe impl Sync for Arena {}
static ARENA: Arena = Arena(UnsafeCell::new([0; ARENA_LEN]));
static BUMP: Bump = Bump::new();
static CLIENT: AtomicBool = AtomicBool::new(false);

/// This process is a short-lived client: serve from the arena from now on.
pub fn client() {
    CLIENT.store(true, Ordering::Relaxed);
}

/// A bump pointer over `len` bytes at `mem` (the caller's, passed to
/// every call): blocks are handed out in order and never reused, except
/// the latest, which may grow in place or give itself back.
struct Bump {
    /// Offset of the free part.
    top: AtomicUsize,
    /// Where the latest block starts.
    last: AtomicUsize,
}

impl Bump {
    const fn new() -> Bump {
        Bump {
            top: AtomicUsize::new(0),
            last: AtomicUsize::new(usize::MAX),
        }
    }

    /// A fresh block, or None (no room left).
    fn alloc(&self, mem: *mut u8, len: usize, layout: Layout) -> Option<*mut u8> {
        let base = mem as usize;
        let mut cur = self.top.load(Ordering::Relaxed);
        loop {
            let start = base
                .checked_add(cur)?
                .checked_next_multiple_of(layout.align())?
                - base;
            let end = start.checked_add(layout.size()).filter(|&e| e <= len)?;
            match self
                .top
                .compare_exchange_weak(cur, end, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.last.store(start, Ordering::Relaxed);
                    return Some(mem.wrapping_add(start));
                }
                Err(now) => cur = now,
            }
        }
    }

    /// The offset of `ptr` in `mem`, if it is in there.
    fn offset_of(mem: *mut u8, len: usize, ptr: *mut u8) -> Option<usize> {
        (ptr as usize)
            .checked_sub(mem as usize)
            .filter(|&o| o < len)
    }

    /// Resizes the block at `at` (`old` bytes) to `size` in place, if it
    /// is the latest: true if it now has `size` bytes there.
    fn resize_last(&self, len: usize, at: usize, old: usize, size: usize) -> bool {
        let (Some(end), Some(was)) = (at.checked_add(size), at.checked_add(old)) else {
            return false;
        };
        end <= len
            && self.last.load(Ordering::Relaxed) == at
            && self
                .top
                .compare_exchange(was, end, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// An arena block, or None (not a client, or no room left).
fn bump(layout: Layout) -> Option<*mut u8> {
    if !CLIENT.load(Ordering::Relaxed) {
        return None;
    }
    BUMP.alloc(ARENA.0.get().cast(), ARENA_LEN, layout)
}

fn arena_offset(ptr: *mut u8) -> Option<usize> {
    Bump::offset_of(ARENA.0.get().cast(), ARENA_LEN, ptr)
}

// SAFETY: forwards to the system allocator, or hands out disjoint,
// aligned parts of the arena (never reused while live: a block is only
// given back or grown when it is the latest one).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::note(layout.size());
        bump(layout).unwrap_or_else(|| System.alloc(layout))
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::note(layout.size());
        match bump(layout) {
            // The arena's memory may have been used by a given-back block.
            Some(p) => {
                p.write_bytes(0, layout.size());
                p
            }
            None => System.alloc_zeroed(layout),
        }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::note(new_size);
        Self::note_free(layout.size());
        let Some(at) = arena_offset(ptr) else {
            return System.realloc(ptr, layout, new_size);
        };
        if new_size <= layout.size() || BUMP.resize_last(ARENA_LEN, at, layout.size(), new_size) {
            return ptr;
        }
        let Ok(new) = Layout::from_size_align(new_size, layout.align()) else {
            return core::ptr::null_mut();
        };
        let p = bump(new).unwrap_or_else(|| System.alloc(new));
        if !p.is_null() {
            p.copy_from_nonoverlapping(ptr, layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        Self::note_free(layout.size());
        match arena_offset(ptr) {
            Some(at) => {
                BUMP.resize_last(ARENA_LEN, at, layout.size(), 0);
            }
            None => System.dealloc(ptr, layout),
        }
    }
}

/// Startup is over: count from here on.
pub fn seal() {
    SEALED.store(true, Ordering::Relaxed);
}

/// Allocations since [`seal`].
pub fn count() -> u64 {
    COUNT.load(Ordering::Relaxed)
}

/// Bytes allocated before [`seal`] (reallocations count their new size).
pub fn startup_bytes() -> u64 {
    STARTUP_BYTES.load(Ordering::Relaxed)
}

/// Bytes still held at [`seal`]: the heap the daemon keeps for life.
pub fn kept_bytes() -> u64 {
    KEPT.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lay(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    /// Blocks are aligned, disjoint and in order; only the latest grows
    /// in place or gives itself back; a full arena says None (the
    /// allocator then asks the system).
    #[test]
    fn bump_blocks_are_aligned_disjoint_and_only_the_latest_moves() {
        let mut buf = [0u8; 256];
        let (mem, len) = (buf.as_mut_ptr(), buf.len());
        let b = Bump::new();
        let off = |p: *mut u8| Bump::offset_of(mem, len, p).unwrap();
        let a = off(b.alloc(mem, len, lay(3, 1)).unwrap());
        let c = off(b.alloc(mem, len, lay(8, 8)).unwrap());
        assert_eq!(a, 0);
        assert!(c >= 3 && (mem as usize + c) % 8 == 0, "{c}");
        // `a` is not the latest: it can neither grow nor give back.
        assert!(!b.resize_last(len, a, 3, 4));
        assert!(!b.resize_last(len, a, 3, 0));
        // `c` grows in place, then gives itself back: the next block
        // starts where it did.
        assert!(b.resize_last(len, c, 8, 40));
        assert!(b.resize_last(len, c, 40, 0));
        assert_eq!(off(b.alloc(mem, len, lay(8, 8)).unwrap()), c);
        // No room: None, and a block past the end never grows there.
        assert!(!b.resize_last(len, c, 8, len));
        assert_eq!(b.alloc(mem, len, lay(len, 1)), None);
        assert_eq!(Bump::offset_of(mem, len, mem.wrapping_add(len)), None);
    }
}
