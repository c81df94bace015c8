//! Counting global allocator: proves "no heap allocation after startup".
//!
//! Startup calls [`seal`]; from then on every alloc/realloc is counted. The
//! count is logged on SIGUSR1 and at shutdown, and the integration tests
//! assert it is 0. It is compiled into every build: the cost is one relaxed
//! atomic load per allocation, and the daemon makes none after startup, so
//! a production binary can prove the rule too.
//!
//! Before the seal it adds up the bytes startup asked for (freed or not),
//! logged once as "startup heap: N bytes allocated": the proof that the
//! YAML parser's heap never enters the daemon (tests/daemon.rs).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static SEALED: AtomicBool = AtomicBool::new(false);
static COUNT: AtomicU64 = AtomicU64::new(0);
static STARTUP_BYTES: AtomicU64 = AtomicU64::new(0);

pub struct Counting;

impl Counting {
    fn note(bytes: usize) {
        if SEALED.load(Ordering::Relaxed) {
            COUNT.fetch_add(1, Ordering::Relaxed);
        } else {
            STARTUP_BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }
}

// SAFETY: forwards to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::note(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
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
