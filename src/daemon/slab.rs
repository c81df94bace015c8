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

extern "C" {
    /// Linker-defined bounds of the program's code (GNU ld and lld).
    static __executable_start: u8;
    static etext: u8;
}

/// End of startup: the config parser and the setup code will not run
/// again, but their pages are mapped (read-ahead maps 64 KiB around each
/// fault). Drop the code pages from this process and turn read-ahead off
/// for them: the event loop faults back only what it runs. The pages stay
/// in the page cache; nothing is lost but RSS.
pub fn trim_code() {
    // Only the addresses of the linker symbols are taken.
    let (start, end) = (
        core::ptr::addr_of!(__executable_start) as usize,
        core::ptr::addr_of!(etext) as usize,
    );
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let start = start & !(page - 1);
    let len = end.saturating_sub(start) & !(page - 1);
    if len == 0 {
        return;
    }
    // SAFETY: the range is our own read-only, file-backed code mapping;
    // MADV_DONTNEED on it only drops clean pages, which fault back in from
    // the file on use.
    unsafe {
        libc::madvise(start as *mut libc::c_void, len, libc::MADV_RANDOM);
        libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED);
    }
}
