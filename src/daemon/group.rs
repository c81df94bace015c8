//! Reads the process table from `/proc`: the live members of a process
//! group (for "N processes left in its group"), the children of this
//! process with their group, session and start time (for the escapees of
//! a run, see `escape.rs`), and every process below this one (for the
//! sweep at the end of a shutdown, see `sweep.rs`).
//!
//! Linux has no syscall for either, so this scans `/proc` with getdents64
//! into a stack buffer and reads each `/proc/PID/stat` into another: no
//! heap (`std::fs::read_dir` and `opendir` both allocate). It runs only
//! when main processes are reaped and at shutdown, never in a steady state.
//! The children come from `/proc/thread-self/children` instead, and their
//! stat is read only on demand: a reap batch with 1,000 services running
//! costs a few reads, not 1,000 stat files.

use nix::libc;

/// The fields of `/proc/PID/stat` that coffeyd uses.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    /// `R`, `S`, `Z`, ...
    pub state: u8,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
    /// Start time in clock ticks since boot (field 22).
    pub start: u64,
    /// The command name, NUL-padded (TASK_COMM_LEN is 16).
    pub comm: [u8; 16],
}

impl Stat {
    /// Neither a zombie nor dead: it still runs.
    pub fn live(&self) -> bool {
        self.state != b'Z' && self.state != b'X'
    }
}

fn parse<T: core::str::FromStr>(field: Option<&[u8]>) -> Option<T> {
    core::str::from_utf8(field?).ok()?.parse().ok()
}

/// Parses one stat line. The command name is in parentheses and may hold
/// spaces or `)`, so fields are counted after the last `)`.
fn parse_stat(text: &[u8]) -> Option<Stat> {
    let open = text.iter().position(|&b| b == b'(')?;
    let close = text.iter().rposition(|&b| b == b')')?;
    let mut comm = [0u8; 16];
    let name = text.get(open + 1..close)?;
    let n = name.len().min(comm.len());
    comm.get_mut(..n)?.copy_from_slice(name.get(..n)?);
    // After ") ": state(3) ppid(4) pgrp(5) session(6) ... starttime(22).
    let mut fields = text
        .get(close + 1..)?
        .split(|&b| b == b' ' || b == b'\n')
        .filter(|f| !f.is_empty());
    let state = *fields.next()?.first()?;
    let ppid = parse(fields.next())?;
    let pgrp = parse(fields.next())?;
    let session = parse(fields.next())?;
    let start = parse(fields.nth(15))?;
    Some(Stat {
        state,
        ppid,
        pgrp,
        session,
        start,
        comm,
    })
}

#[cfg(test)]
thread_local! {
    /// Stat files this thread read (tests count the reads they cause).
    static STAT_READS: core::cell::Cell<u32> = const { core::cell::Cell::new(0) };
}

/// Reads `/proc/<name>/stat`, `name` relative to the open `/proc` fd.
fn stat_at(dirfd: i32, name: &[u8]) -> Option<Stat> {
    #[cfg(test)]
    STAT_READS.with(|n| n.set(n.get() + 1));
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
    parse_stat(buf.get(..usize::try_from(got).ok()?)?)
}

/// Opens `/proc` as a directory fd; None without `/proc`.
fn open_proc() -> Option<i32> {
    // SAFETY: constant NUL-terminated path.
    let dir = unsafe {
        libc::open(
            c"/proc".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    (dir >= 0).then_some(dir)
}

/// The decimal digits of `pid`, for a path under `/proc`.
fn digits(pid: i32, out: &mut [u8; 12]) -> &[u8] {
    let mut v = pid.unsigned_abs();
    let mut i = out.len();
    loop {
        i -= 1;
        if let Some(d) = out.get_mut(i) {
            *d = b'0' + (v % 10) as u8;
        }
        v /= 10;
        if v == 0 || i == 0 {
            break;
        }
    }
    out.get(i..).unwrap_or(&[])
}

/// `/proc/PID/stat` of one process.
pub fn stat(pid: i32) -> Option<Stat> {
    let dir = open_proc()?;
    let mut d = [0u8; 12];
    let s = stat_at(dir, digits(pid, &mut d));
    // SAFETY: closes the directory fd opened above.
    unsafe { libc::close(dir) };
    s
}

/// Calls `f(pid, stat)` for every process in `/proc` (open as `dir`).
fn each_process(dir: i32, mut f: impl FnMut(i32, &Stat)) {
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
            let pid = parse::<i32>(Some(name)).filter(|_| name.iter().all(u8::is_ascii_digit));
            if let (Some(pid), Some(st)) = (pid, pid.and_then(|_| stat_at(dir, name))) {
                f(pid, &st);
            }
            off += reclen;
        }
    }
}

/// Live (not zombie) processes in group `pgid`; `None` without `/proc`.
pub fn live_members(pgid: i32) -> Option<u32> {
    let dir = open_proc()?;
    let mut count = 0u32;
    each_process(dir, |_, st| {
        if st.pgrp == pgid && st.live() {
            count = count.saturating_add(1);
        }
    });
    // SAFETY: closes the directory fd opened above.
    unsafe { libc::close(dir) };
    Some(count)
}

/// A child of this process, as [`children`] lists it: its stat is read
/// only if asked for.
pub struct Child {
    dir: i32,
    pid: i32,
    stat: Option<Stat>,
}

impl Child {
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// `/proc/PID/stat`, read at the first call; None once it is gone.
    pub fn stat(&mut self) -> Option<Stat> {
        if self.stat.is_none() {
            let mut d = [0u8; 12];
            self.stat = stat_at(self.dir, digits(self.pid, &mut d));
        }
        self.stat
    }
}

/// Calls `f` for each child of this (single-threaded) process. The
/// children are listed by one read of `/proc/thread-self/children` (a few
/// for thousands of children), and `f` reads the stat only of those it
/// does not know: with 1,000 services, reading every main process's stat
/// was most of a reap batch's cost. Kernels built without
/// CONFIG_PROC_CHILDREN lack that file (Debian's and the qemu guest's have
/// it), and then all of `/proc` is scanned for a ppid of ours. Returns
/// false without `/proc`.
pub fn children(mut f: impl FnMut(&mut Child)) -> bool {
    let Some(dir) = open_proc() else {
        return false;
    };
    // SAFETY: NUL-terminated path relative to an open directory fd.
    let list = unsafe {
        libc::openat(
            dir,
            c"thread-self/children".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if list < 0 || !each_listed(dir, list, &mut f) {
        // SAFETY: plain syscall.
        let me = unsafe { libc::getpid() };
        each_process(dir, |pid, st| {
            if st.ppid == me {
                let stat = Some(*st);
                f(&mut Child { dir, pid, stat });
            }
        });
    }
    if list >= 0 {
        // SAFETY: closes the fd opened above.
        unsafe { libc::close(list) };
    }
    // SAFETY: closes the directory fd opened above.
    unsafe { libc::close(dir) };
    true
}

/// The pids of a `children` file ("12 345 6789 "), fed in chunks of any
/// size: a number may span two chunks.
#[derive(Default)]
struct Pids {
    /// Digits of the number being read; `len` past the array: too long
    /// for a pid, and dropped.
    num: [u8; 12],
    len: usize,
}

impl Pids {
    /// Calls `f` with each pid that `chunk` completes.
    fn feed(&mut self, chunk: &[u8], f: &mut impl FnMut(i32)) {
        for &b in chunk {
            if b.is_ascii_digit() {
                if let Some(d) = self.num.get_mut(self.len) {
                    *d = b;
                }
                self.len = self.len.saturating_add(1);
            } else {
                self.end(f);
            }
        }
    }

    /// A separator, or the end of the text: the number read so far.
    fn end(&mut self, f: &mut impl FnMut(i32)) {
        if let Some(pid) = parse::<i32>(self.num.get(..self.len)) {
            f(pid);
        }
        self.len = 0;
    }
}

/// Calls `f` for each child listed in a `children` file (`list`), read in
/// chunks. A read past the first resumes at the next child by its index
/// in this task's list of children; entries leave that list only when
/// this process reaps them (never during this call) and new ones are
/// added at its end, so chunks neither skip nor repeat a child. False if
/// a read failed: the caller then scans `/proc`, and may report again a
/// child reported before the failure (in practice only the first read
/// can fail: it allocates the seq_file's buffer, which records this small
/// never grow).
fn each_listed(dir: i32, list: i32, f: &mut impl FnMut(&mut Child)) -> bool {
    let mut buf = [0u8; 4096];
    let mut pids = Pids::default();
    let mut each = |pid: i32| {
        f(&mut Child {
            dir,
            pid,
            stat: None,
        })
    };
    loop {
        // SAFETY: reads into a buffer we own.
        let got = unsafe { libc::read(list, buf.as_mut_ptr().cast(), buf.len()) };
        let Ok(got) = usize::try_from(got) else {
            if nix::errno::Errno::last_raw() == libc::EINTR {
                continue;
            }
            return false;
        };
        if got == 0 {
            pids.end(&mut each);
            return true;
        }
        pids.feed(buf.get(..got).unwrap_or(&[]), &mut each);
    }
}

/// Whether `/proc` shows this process's own PID namespace. A container
/// may see the host's `/proc` (or none): then its pids name other
/// processes than kill(2) would reach, and nothing here may be trusted.
pub fn proc_is_ours() -> bool {
    let mut buf = [0u8; 16];
    // SAFETY: constant NUL-terminated path, a buffer we own.
    let n = unsafe { libc::readlink(c"/proc/self".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let mut d = [0u8; 12];
    // SAFETY: plain syscall.
    let me = digits(unsafe { libc::getpid() }, &mut d);
    usize::try_from(n).ok().and_then(|n| buf.get(..n)) == Some(me)
}

/// Longest parent chain followed from a process up to this one: a chain
/// cannot be longer than the process table, and pid reuse while walking
/// could (rarely) make a loop.
const MAX_DEPTH: usize = 4096;

/// Whether a process whose parent is `ppid` is below `me`.
fn descends(dir: i32, me: i32, mut ppid: i32) -> bool {
    for _ in 0..MAX_DEPTH {
        if ppid == me {
            return true;
        }
        if ppid <= 0 {
            return false;
        }
        let mut d = [0u8; 12];
        match stat_at(dir, digits(ppid, &mut d)) {
            Some(p) => ppid = p.ppid,
            None => return false,
        }
    }
    false
}

/// Calls `f(pid, stat)` for every live process below this one (children,
/// grandchildren, ...), whatever its group or session, that started at
/// or after `since` (clock ticks since boot, see [`boot_ticks`]). Only
/// processes younger than this one can be below it, so the host's other
/// processes cost one stat read each. Returns false without `/proc`.
pub fn descendants(since: u64, mut f: impl FnMut(i32, &Stat)) -> bool {
    let Some(dir) = open_proc() else {
        return false;
    };
    // SAFETY: plain syscall.
    let me = unsafe { libc::getpid() };
    let mut d = [0u8; 12];
    let born = stat_at(dir, digits(me, &mut d)).map_or(0, |s| s.start);
    let since = since.max(born);
    each_process(dir, |pid, st| {
        if pid != me && st.live() && st.start >= since && descends(dir, me, st.ppid) {
            f(pid, st);
        }
    });
    // SAFETY: closes the directory fd opened above.
    unsafe { libc::close(dir) };
    true
}

/// Now, in the unit of [`Stat::start`] (clock ticks since boot, as
/// CLOCK_BOOTTIME counts them), rounded down: a process started after this
/// call has a start time not below it.
pub fn boot_ticks() -> u64 {
    // SAFETY: zeroed timespec is valid; plain syscalls.
    let (ts, hz) = unsafe {
        let mut ts: libc::timespec = core::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts);
        (ts, libc::sysconf(libc::_SC_CLK_TCK))
    };
    let hz = u64::try_from(hz).unwrap_or(100).max(1);
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(hz)
        .saturating_add(nanos.saturating_mul(hz) / 1_000_000_000)
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

    #[test]
    fn finds_grandchildren_of_their_own_session_below_this_process() {
        // sh (our child) starts `setsid sleep`, which is in a session of
        // its own and not our child: still below us.
        #[allow(clippy::disallowed_methods)]
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", "setsid sleep 30 & echo $!; wait"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("sh: {e}"));
        let mut line = String::new();
        let out = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line);
        let grandchild: i32 = line.trim().parse().unwrap_or(0);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut seen = (false, false);
        while std::time::Instant::now() < deadline && seen != (true, true) {
            seen = (false, false);
            assert!(descendants(0, |p, st| {
                if p == child.id() as i32 {
                    seen.0 = true;
                }
                if p == grandchild && st.session == grandchild {
                    seen.1 = true;
                }
            }));
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // Not below us: our own parent, and anything older than us.
        let mut parent = false;
        // SAFETY: plain syscall.
        let pp = unsafe { libc::getppid() };
        descendants(0, |p, _| parent |= p == pp || p == 1);
        // SAFETY: signals the test's own processes.
        unsafe {
            libc::kill(grandchild, libc::SIGKILL);
            libc::kill(child.id() as i32, libc::SIGKILL);
        }
        let _ = child.wait();
        assert_eq!(seen, (true, true), "grandchild {grandchild}");
        assert!(!parent);
        assert!(proc_is_ours());
    }

    #[test]
    fn parses_a_stat_line_with_an_odd_name() {
        let line =
            b"4242 (a b) c)) S 1 4240 4239 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1 2\n";
        let st = parse_stat(line).unwrap_or_default();
        assert_eq!(
            (st.state, st.ppid, st.pgrp, st.session),
            (b'S', 1, 4240, 4239)
        );
        assert_eq!(st.start, 98765);
        assert_eq!(&st.comm[..8], b"a b) c)\0");
        assert_eq!(parse_stat(b"1 (x) S 1"), None);
        let mut d = [0u8; 12];
        assert_eq!(digits(0, &mut d), b"0");
        assert_eq!(digits(4_194_304, &mut d), b"4194304");
    }

    #[test]
    fn lists_the_children_of_this_process_with_their_start() {
        // The test binary may run other tests' children too: look for ours.
        #[allow(clippy::disallowed_methods)]
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("30")
            .spawn()
            .unwrap_or_else(|e| panic!("sleep: {e}"));
        let pid = child.id() as i32;
        let before = boot_ticks();
        let mut found = None;
        // SAFETY: plain syscall.
        let me = unsafe { libc::getpid() };
        assert!(children(|c| {
            if c.pid() == pid {
                found = c.stat();
            }
        }));
        let again = stat(pid);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(again.map(|s| s.ppid), Some(me));
        let st = found.unwrap_or_else(|| panic!("child {pid} not listed"));
        assert_eq!(st.ppid, me);
        assert!(st.start <= before + 1, "{} vs {before}", st.start);
        assert!(st.start + 10 * 100 >= before, "{} vs {before}", st.start);
        assert_eq!(&st.comm[..6], b"sleep\0");
    }

    #[test]
    #[allow(clippy::disallowed_methods)]
    fn reads_the_pids_of_a_children_file_split_anywhere() {
        // A seq_file read may end in the middle of a number.
        let text = b"7 4194304 12 99999 3 ";
        let want = [7, 4_194_304, 12, 99_999, 3];
        for cut in 0..=text.len() {
            let mut got = Vec::new();
            let mut pids = Pids::default();
            let (a, b) = text.split_at(cut);
            pids.feed(a, &mut |p| got.push(p));
            pids.feed(b, &mut |p| got.push(p));
            pids.end(&mut |p| got.push(p));
            assert_eq!(got, want, "cut at {cut}");
        }
        // One byte at a time, no trailing space, and junk that is no pid.
        let mut got = Vec::new();
        let mut pids = Pids::default();
        for b in b"12 1234567890123 5\n8" {
            pids.feed(&[*b], &mut |p| got.push(p));
        }
        pids.end(&mut |p| got.push(p));
        assert_eq!(got, [12, 5, 8]);
    }

    #[test]
    #[allow(clippy::disallowed_methods)]
    fn reads_the_stat_only_of_a_child_asked_about() {
        // Three children; the stat of one is asked for, two are known by
        // pid. STAT_READS counts this thread's reads only.
        let spawn = || {
            std::process::Command::new("/bin/sleep")
                .arg("30")
                .spawn()
                .unwrap_or_else(|e| panic!("sleep: {e}"))
        };
        let mut kids = [spawn(), spawn(), spawn()];
        let pids: Vec<i32> = kids.iter().map(|k| k.id() as i32).collect();
        let before = STAT_READS.with(core::cell::Cell::get);
        let mut listed = Vec::new();
        let mut stat = None;
        assert!(children(|c| {
            listed.push(c.pid());
            if c.pid() == pids[2] {
                stat = c.stat();
            }
        }));
        let reads = STAT_READS.with(core::cell::Cell::get) - before;
        for k in &mut kids {
            let _ = k.kill();
            let _ = k.wait();
        }
        for p in &pids {
            assert!(listed.contains(p), "{p} not in {listed:?}");
        }
        assert_eq!(stat.map(|s| s.comm[..6] == *b"sleep\0"), Some(true));
        assert_eq!(reads, 1, "stat reads for 3 children, 1 asked about");
    }
}
