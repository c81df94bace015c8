//! Zeroed buffers for the startup tables, straight from mmap.
//!
//! Fresh anonymous pages cost no memory until they are written, so a ring
//! buffer, an exec arena or a connection buffer that is never (or only
//! partly) used adds nothing to the daemon's RSS. (A zeroed heap
//! allocation would be written at allocation time and count in full.)
//! The buffers live as long as the daemon and are never freed.

use nix::libc;

/// A zeroed buffer of `n` bytes that is never freed. Startup only.
pub fn zeroed(n: usize) -> Result<&'static mut [u8], &'static str> {
    if n == 0 {
        return Ok(&mut []);
    }
    // SAFETY: a fresh private anonymous mapping; on success it is `n`
    // readable, writable, zeroed bytes that nothing else refers to.
    unsafe {
        let p = libc::mmap(
            core::ptr::null_mut(),
            n,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return Err("out of memory for the daemon's tables (mmap)");
        }
        Ok(core::slice::from_raw_parts_mut(p.cast::<u8>(), n))
    }
}
