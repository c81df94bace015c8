//! Counts the live members of a process group, for "N processes left in
//! its group" when a service's main process exits but its group does not.
//!
//! Linux has no syscall for this, so it scans `/proc` with getdents64 into
//! a stack buffer and reads each `/proc/PID/stat` into another: no heap
//! (`std::fs::read_dir` and `opendir` both allocate). It runs only when a
//! main process exits while its group lives on, never in a steady state.

use nix::libc;

/// Reads `/proc/PID/stat` and returns (state char, pgrp). The command name
/// is in parentheses and may hold spaces or `)`, so fields are counted
/// after the last `)`.
fn stat_of(dirfd: i32, name: &[u8]) -> Option<(u8, i32)> {
    let mut path = [0u8; 32];
    let tail = b"/stat\0";
    let n = name.len();
    path.get_mut(..n)?.copy_from_slice(name);
    path.get_mut(n..n + tail.len())?.copy_from_slice(tail);
    // SAFETY: NUL-terminated path relative to an open directory fd.
    let fd = unsafe {
        libc::openat(
            dirfd,
            path.as_ptr().cast(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    let mut buf = [0u8; 512];
    // SAFETY: reads into a buffer we own; the fd is closed right after.
    let got = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: closes the fd opened above.
    unsafe { libc::close(fd) };
    let text = buf.get(..usize::try_from(got).ok()?)?;
    let close = text.iter().rposition(|&b| b == b')')?;
    // After ") ": state, ppid, pgrp.
    let mut fields = text
        .get(close + 1..)?
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty());
    let state = *fields.next()?.first()?;
    let _ppid = fields.next()?;
    let pgrp = core::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
    Some((state, pgrp))
}

/// Live (not zombie) processes in group `pgid`; `None` without `/proc`.
pub fn live_members(pgid: i32) -> Option<u32> {
    // SAFETY: constant NUL-terminated path.
    let dir = unsafe {
        libc::open(
            c"/proc".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if dir < 0 {
        return None;
    }
    let mut count = 0u32;
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: getdents64 fills our buffer with dirent64 records.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                dir,
                buf.as_mut_ptr(),
                buf.len() as libc::c_uint,
            )
        };
        let Ok(n) = usize::try_from(n) else { break };
        if n == 0 {
            break;
        }
        let mut off = 0usize;
        while off < n {
            // struct linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type,
            // then the NUL-terminated name.
            let Some(rec) = buf.get(off + 16..off + 18) else {
                break;
            };
            let reclen = usize::from(u16::from_ne_bytes([
                rec.first().copied().unwrap_or(0),
                rec.get(1).copied().unwrap_or(0),
            ]));
            if reclen == 0 {
                break;
            }
            let name = buf.get(off + 19..off + reclen).unwrap_or(&[]);
            let name = name.split(|&b| b == 0).next().unwrap_or(&[]);
            let numeric = !name.is_empty() && name.iter().all(u8::is_ascii_digit);
            if numeric {
                if let Some((state, pgrp)) = stat_of(dir, name) {
                    if pgrp == pgid && state != b'Z' && state != b'X' {
                        count = count.saturating_add(1);
                    }
                }
            }
            off += reclen;
        }
    }
    // SAFETY: closes the directory fd opened above.
    unsafe { libc::close(dir) };
    Some(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_members_of_a_real_group() {
        // `sh` in its own group with two sleeps: three live members.
        use std::os::unix::process::CommandExt;
        #[allow(clippy::disallowed_methods)]
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", "sleep 30 & sleep 30 & wait"])
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("sh: {e}"));
        let pgid = child.id() as i32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut seen = None;
        while std::time::Instant::now() < deadline {
            seen = live_members(pgid);
            if seen == Some(3) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // SAFETY: signals the test's own process group.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = child.wait();
        assert_eq!(seen, Some(3));
        assert_eq!(live_members(i32::MAX), Some(0));
    }
}
