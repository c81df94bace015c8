//! Zeroed buffers for the startup tables, straight from mmap.
//!
//! Fresh anonymous pages cost no memory until they are written, so a ring
//! buffer, an exec arena or a connection buffer that is never (or only
//! partly) used adds nothing to the daemon's RSS. (A zeroed heap
//! allocation would be written at allocation time and count in full.)
//! The buffers live as long as the daemon and are never freed.
//!
//! [`Cold`] builds on that for the parts of a slot that few services use
//! (a log file, an sd_notify text, an exec check's argv): each kind has
//! one zeroed table for all slots, and a slot's entry is written, and so
//! costs memory, only once the slot's service uses it.

use core::mem::MaybeUninit;
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

/// A value that lives in a zeroed table (see [`cells`]) and is absent
/// until set: like an `Option<Box<T>>` whose box was allocated at
/// startup and costs nothing until written.
///
/// One word: the cell's address, with bit 0 set while it holds a value
/// (cells are at least 2-aligned, asserted in [`cells`]). A slot holds
/// several of these, and a separate flag would pad each to two words.
pub struct Cold<T: 'static> {
    tagged: *mut MaybeUninit<T>,
    /// Owns the cell as the `&'static mut` it was made from.
    _cell: core::marker::PhantomData<&'static mut MaybeUninit<T>>,
}

// SAFETY: a Cold is the only handle to its cell, as a `&'static mut` is.
unsafe impl<T: Send + 'static> Send for Cold<T> {}

impl<T: 'static> Cold<T> {
    fn new(cell: &'static mut MaybeUninit<T>) -> Cold<T> {
        Cold {
            tagged: cell,
            _cell: core::marker::PhantomData,
        }
    }

    fn is_set(&self) -> bool {
        self.tagged.addr() & 1 != 0
    }

    fn cell(&self) -> *mut MaybeUninit<T> {
        self.tagged.map_addr(|a| a & !1)
    }

    fn mark(&mut self, set: bool) {
        self.tagged = self.cell().map_addr(|a| a | usize::from(set));
    }

    pub fn get(&self) -> Option<&T> {
        // SAFETY: the tag says the cell was written and not dropped since;
        // the pointer (tag cleared) is the cell this handle owns.
        self.is_set()
            .then(|| unsafe { (*self.cell()).assume_init_ref() })
    }

    pub fn get_mut(&mut self) -> Option<&mut T> {
        if !self.is_set() {
            return None;
        }
        // SAFETY: as in `get`, and `&mut self` makes it unique.
        Some(unsafe { (*self.cell()).assume_init_mut() })
    }

    /// Replaces the value (the old one, if any, is dropped).
    pub fn set(&mut self, v: T) -> &mut T {
        self.clear();
        self.mark(true);
        // SAFETY: the owned cell, unique through `&mut self`.
        unsafe { (*self.cell()).write(v) }
    }

    pub fn get_or_insert_with(&mut self, f: impl FnOnce() -> T) -> &mut T {
        if !self.is_set() {
            let v = f();
            return self.set(v);
        }
        // SAFETY: set before; unique through `&mut self`.
        unsafe { (*self.cell()).assume_init_mut() }
    }

    /// Drops the value, if any. Its bytes stay in the table (the page was
    /// paid for when the value was written).
    pub fn clear(&mut self) {
        if self.is_set() {
            self.mark(false);
            // SAFETY: it was set; the tag is clear now, so it drops once.
            unsafe { (*self.cell()).assume_init_drop() };
        }
    }
}

impl<T: 'static> Drop for Cold<T> {
    fn drop(&mut self) {
        self.clear();
    }
}

/// `n` absent [`Cold`] values in one zeroed table. Startup only.
pub fn cells<T: 'static>(n: usize) -> Result<impl Iterator<Item = Cold<T>>, &'static str> {
    const { assert!(core::mem::align_of::<T>() <= 4096) };
    // Bit 0 of a cell's address is `Cold`'s tag.
    const { assert!(core::mem::align_of::<T>() >= 2) };
    let bytes = n
        .checked_mul(core::mem::size_of::<T>())
        .ok_or("daemon table too large")?;
    let table: &'static mut [MaybeUninit<T>] = match zeroed(bytes)? {
        [] => &mut [],
        // SAFETY: the mapping is page-aligned (so aligned for T), `n`
        // values long and never freed; any bytes are a valid MaybeUninit.
        m => unsafe { core::slice::from_raw_parts_mut(m.as_mut_ptr().cast(), n) },
    };
    Ok(table.iter_mut().map(Cold::new))
}

extern "C" {
    /// Linker-defined bounds of the program's code (GNU ld and lld).
    static __executable_start: u8;
    static etext: u8;
}

/// End of startup: the config parser and the setup code will not run
/// again, but their pages are mapped. Drop the code pages from this
/// process and turn read-ahead off for them; the event loop faults back
/// what it runs. The kernel's fault-around still maps the cached pages of
/// the 64 KiB window around each fault (MADV_RANDOM does not stop it:
/// measured on Linux 6.18), so this helps only as far as the loop's code
/// is clustered: `just build` links the daemon's functions first
/// (.cargo/ordered-lld; docs/DESIGN.md, "Code layout"), and a default
/// link, with that code spread over every window, maps nearly all of it
/// again. The pages stay in the page cache; nothing is lost but RSS.
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

/// End of startup: gives the pages of the main stack below the caller's
/// frame back to the kernel. Startup runs deep (the config's decoding,
/// setup's tables) and leaves tens of KiB of stack written; the loop
/// runs shallower and faults back only what it uses. Reads
/// /proc/self/maps, so it runs before the heap is sealed.
#[allow(clippy::disallowed_methods)]
pub fn trim_stack() {
    let here = 0u8;
    let sp = core::ptr::addr_of!(here) as usize;
    let Some(low) = std::fs::read_to_string("/proc/self/maps")
        .ok()
        .and_then(|m| stack_low(&m))
    else {
        return;
    };
    release_below(low, sp);
}

/// The lowest address of the `[stack]` mapping in /proc/self/maps text.
fn stack_low(maps: &str) -> Option<usize> {
    let line = maps.lines().find(|l| l.ends_with("[stack]"))?;
    usize::from_str_radix(line.split('-').next()?, 16).ok()
}

/// Pages the frames below `sp` may still use while this runs (the
/// madvise call's own): never released.
const STACK_MARGIN: usize = 16 * 1024;

/// Releases the whole pages of `[low, sp - STACK_MARGIN)`: they read back
/// as zeros, which is all a stack below its live frames can hold.
fn release_below(low: usize, sp: usize) {
    let top = sp.saturating_sub(STACK_MARGIN) & !4095;
    if top > low {
        // SAFETY: nothing lives below the current frame and its margin:
        // the range is dead stack (or a test's own mapping).
        unsafe { libc::madvise(low as *mut libc::c_void, top - low, libc::MADV_DONTNEED) };
    }
}

/// Whether the page holding `p` was written, so costs memory: it is
/// present and this process's own (/proc/self/pagemap bits 63 and 56). A
/// page only read maps the shared zero page, which is not exclusive.
#[cfg(test)]
pub fn written(p: *const u8) -> bool {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open("/proc/self/pagemap").unwrap();
    let mut e = [0u8; 8];
    f.read_exact_at(&mut e, (p as u64 / 4096) * 8).unwrap();
    let e = u64::from_le_bytes(e);
    e >> 63 == 1 && (e >> 56) & 1 == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_stack_below_the_margin_is_given_back() {
        let n = 64 * 1024;
        let buf = zeroed(n).unwrap();
        buf.fill(1);
        let (low, high) = (buf.as_ptr() as usize, buf.as_ptr() as usize + n);
        release_below(low, high);
        let kept = high - STACK_MARGIN;
        assert!(!written(buf.as_ptr()), "the lowest page is released");
        assert!(!written((kept - 4096) as *const u8), "up to the margin");
        assert!(written(kept as *const u8), "the margin is kept");
        assert_eq!(buf[0], 0, "a released page reads back as zeros");
        assert_eq!(buf[n - 1], 1);
    }

    #[test]
    fn the_stack_mapping_is_found_in_maps() {
        let maps = "00400000-00401000 r-xp 0 0:0 0 /bin/x\n7ffd0000-7ffd2000 rw-p 00000000 00:00 0                          [stack]\n";
        assert_eq!(stack_low(maps), Some(0x7ffd_0000));
        assert_eq!(stack_low("00400000-00401000 r-xp 0 0:0 0 /bin/x"), None);
    }

    struct Noisy(std::rc::Rc<core::cell::Cell<u32>>, [u8; 600]);

    #[test]
    fn a_cold_handle_is_one_word() {
        assert_eq!(core::mem::size_of::<Cold<Noisy>>(), 8);
    }
    impl Drop for Noisy {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    #[test]
    fn cold_values_cost_nothing_until_set_and_drop_once() {
        let drops = std::rc::Rc::new(core::cell::Cell::new(0));
        let mut v: Vec<Cold<Noisy>> = cells(64).unwrap().collect();
        assert_eq!(v.len(), 64);
        let first = v[0].cell().cast::<u8>().cast_const();
        assert!(v.iter().all(|c| c.get().is_none()));
        assert!(!written(first), "an unset table costs nothing");
        v[0].set(Noisy(drops.clone(), [1; 600]));
        assert!(written(first));
        assert_eq!(v[0].get().map(|n| n.1[599]), Some(1));
        v[0].set(Noisy(drops.clone(), [2; 600]));
        assert_eq!(drops.get(), 1, "the replaced value is dropped");
        v[1].get_or_insert_with(|| Noisy(drops.clone(), [3; 600])).1[0] = 4;
        assert_eq!(v[1].get_or_insert_with(|| panic!("it is set")).1[0], 4);
        v[1].clear();
        v[1].clear();
        assert!(v[1].get().is_none());
        assert_eq!(drops.get(), 2);
        drop(v);
        assert_eq!(drops.get(), 3, "dropping the handles drops what is set");
        assert_eq!(cells::<Noisy>(0).unwrap().count(), 0);
    }
}
