//! sd_notify, shell side: reads the datagrams on a service's notify socket,
//! decides whether the sender belongs to the service, and applies what
//! coffeyd supports (docs/CONFIG.md lists it): `READY=1`, `RELOADING=1`,
//! `STOPPING=1`, `STATUS=`, `MAINPID=`, `EXTEND_TIMEOUT_USEC=`,
//! `WATCHDOG=1`, `WATCHDOG=trigger` and `BARRIER=1`.
//!
//! Descriptors attached to a message (SCM_RIGHTS) are closed at once,
//! whoever sent them: coffeyd keeps no fd store, and `BARRIER=1` is a
//! promise that the manager has read everything before it; closing the
//! barrier's fd is the answer `systemd-notify` waits for (5 s, then exit 1).
//!
//! `MAINPID=` moves the service's main process to another member of its
//! process group; the exit of the original process is then not the
//! service's exit ([`route_exit`]). Nothing here allocates.

use super::log::{log, Log};
use super::{Services, Shell};
use coffey::health::CheckInput;
use coffey::limits::{NOTIFY_ENV_MAX, NOTIFY_STATUS_MAX};
use coffey::supervisor::Supervisor;
use coffey::sys::ExitStatus;
use nix::libc;
use std::os::fd::RawFd;

/// What the service last said about itself (status `notify_state`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum NotifyState {
    /// Nothing yet in this run.
    #[default]
    None,
    Ready,
    Reloading,
    Stopping,
}

impl NotifyState {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyState::None => "",
            NotifyState::Ready => "ready",
            NotifyState::Reloading => "reloading",
            NotifyState::Stopping => "stopping",
        }
    }
}

/// A slot's sd_notify: its socket, texts and state. (The s6/dinit
/// readiness pipe is `Slot::notify_r`.)
pub struct Notify {
    /// sd_notify: this slot's socket (-1 until a service needs it), the
    /// `NOTIFY_SOCKET=...` entry its services get and the last `STATUS=`
    /// text (set with the socket).
    pub sock: RawFd,
    pub text: super::slab::Cold<SdText>,
    /// sd_notify state of the current run (notify state, MAINPID).
    pub sd: SdState,
}

/// The texts of a slot whose service uses sd_notify (kept out of the slot
/// table, see `slab::Cold`): the `NOTIFY_SOCKET=...` entry its services
/// get, and the last `STATUS=` text, for `status SERVICE`.
pub struct SdText {
    pub env: [u8; NOTIFY_ENV_MAX],
    pub status: heapless::Vec<u8, NOTIFY_STATUS_MAX>,
}

impl Default for SdText {
    fn default() -> Self {
        SdText {
            env: [0; NOTIFY_ENV_MAX],
            status: heapless::Vec::new(),
        }
    }
}

/// Per-slot sd_notify state.
#[derive(Copy, Clone, Debug, Default)]
pub struct SdState {
    /// What the current run last said.
    pub state: NotifyState,
    /// `MAINPID=`: the current run's main process, when it is not the
    /// process coffeyd started (`leader`, the process group). 0: none.
    pub main_pid: i32,
    pub leader: i32,
    /// The socket may hold messages (readiness is edge-triggered).
    readable: bool,
}

/// The largest datagram systemd reads (NOTIFY_BUFFER_MAX = PIPE_BUF).
const MSG_MAX: usize = 4096;
/// Messages read per wakeup; the rest wait in the socket for the next turn.
const PER_TURN: usize = 16;

/// One sd_notify message, as far as coffeyd uses it.
#[derive(Default)]
struct Notice {
    ready: bool,
    reloading: bool,
    stopping: bool,
    ping: bool,
    trigger: bool,
    /// `STATUS=...` text (cut at `NOTIFY_STATUS_MAX` bytes); empty if none.
    status: heapless::Vec<u8, NOTIFY_STATUS_MAX>,
    main_pid: Option<i32>,
    extend_us: Option<u64>,
    /// Longer than [`MSG_MAX`]: ignored, as systemd does.
    truncated: bool,
    pid: i32,
    uid: u32,
}

fn number<T: core::str::FromStr>(b: &[u8]) -> Option<T> {
    core::str::from_utf8(b).ok()?.parse().ok()
}

fn parse(data: &[u8], n: &mut Notice) {
    for l in data.split(|&b| b == b'\n') {
        match l {
            b"READY=1" => n.ready = true,
            b"RELOADING=1" => n.reloading = true,
            b"STOPPING=1" => n.stopping = true,
            b"WATCHDOG=1" => n.ping = true,
            b"WATCHDOG=trigger" => n.trigger = true,
            // Its fd is closed on receipt; nothing else to do.
            b"BARRIER=1" => {}
            _ => {
                if let Some(t) = l.strip_prefix(b"STATUS=") {
                    let t = t.get(..t.len().min(NOTIFY_STATUS_MAX)).unwrap_or(&[]);
                    n.status.clear();
                    let _ = n.status.extend_from_slice(t);
                } else if let Some(p) = l.strip_prefix(b"MAINPID=") {
                    n.main_pid = number(p).filter(|&p: &i32| p > 0);
                } else if let Some(u) = l.strip_prefix(b"EXTEND_TIMEOUT_USEC=") {
                    n.extend_us = number(u);
                }
            }
        }
    }
}

/// Closes every descriptor in an SCM_RIGHTS message.
///
/// # Safety
/// `c` is a control message header the kernel wrote into our buffer.
unsafe fn close_rights(c: *const libc::cmsghdr) {
    let data = libc::CMSG_DATA(c);
    let hdr = data.offset_from(c.cast::<u8>()).max(0) as usize;
    // usize on glibc, u32 on musl.
    #[allow(clippy::unnecessary_cast)]
    let n = ((*c).cmsg_len as usize).saturating_sub(hdr) / core::mem::size_of::<libc::c_int>();
    for k in 0..n {
        let fd: libc::c_int = core::ptr::read_unaligned(data.cast::<libc::c_int>().add(k));
        super::close_fd(fd);
    }
}

/// Reads one datagram. None: the socket is empty (or failed).
fn recv(fd: i32) -> Option<Notice> {
    let mut buf = [0u8; MSG_MAX];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Credentials (32 bytes) and up to 32 descriptors. Descriptors that do
    // not fit are never installed (MSG_CTRUNC; the kernel drops them), so
    // none can leak either way.
    let mut cbuf = [0u64; 24];
    loop {
        // SAFETY: zeroed msghdr is valid; we fill the pointers.
        let mut msg: libc::msghdr = unsafe { core::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = core::mem::size_of_val(&cbuf) as _;
        // SAFETY: msg points at valid buffers.
        let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            if super::errno() == libc::EINTR {
                continue;
            }
            return None;
        }
        let mut m = Notice {
            uid: u32::MAX,
            truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
            ..Notice::default()
        };
        // SAFETY: walking the control messages the kernel wrote.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_CREDENTIALS {
                    let cred: libc::ucred = core::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    m.pid = cred.pid;
                    m.uid = cred.uid;
                } else if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS
                {
                    close_rights(c);
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        if !m.truncated {
            parse(
                buf.get(..usize::try_from(n).unwrap_or(0)).unwrap_or(&[]),
                &mut m,
            );
        }
        return Some(m);
    }
}

/// Whether the sender belongs to service `i`: its process group is the
/// service's, or (a helper that already exited, e.g. `systemd-notify`
/// racing its own exit) it is gone and ran as the service's user.
fn belongs(sup: &Supervisor<'_>, svc: &Services, owner: u32, i: usize, m: &Notice) -> Option<i32> {
    let leader = sup.services().get(i).and_then(|s| s.state.pid())?;
    // SAFETY: plain syscall.
    let pgid = unsafe { libc::getpgid(m.pid) };
    let want_uid = svc.slots.get(i).and_then(|s| s.prep.uid).unwrap_or(owner);
    (pgid == leader || (pgid < 0 && m.uid == want_uid)).then_some(leader)
}

/// The poller says slot `i`'s socket is readable.
pub fn mark(svc: &mut Services, i: usize) {
    if let Some(s) = svc.slots.get_mut(i) {
        s.notify.sd.readable = true;
    }
}

/// Reads every socket marked readable, [`PER_TURN`] messages each.
/// Returns whether any may have more (then the next poll must not wait).
pub fn drain(sup: &mut Supervisor<'_>, shell: &mut Shell) -> bool {
    let mut left = false;
    for i in 0..shell.svc.slots.len() {
        if shell.svc.slots.get(i).is_some_and(|s| s.notify.sd.readable) {
            let more = on_socket(sup, shell, i);
            if let Some(s) = shell.svc.slots.get_mut(i) {
                s.notify.sd.readable = more;
            }
            left |= more;
        }
    }
    left
}

/// sd_notify datagrams on slot `i`'s socket: at most [`PER_TURN`].
/// Returns true when the budget ran out before the socket was empty.
fn on_socket(sup: &mut Supervisor<'_>, shell: &mut Shell, i: usize) -> bool {
    let Some(fd) = shell.svc.slots.get(i).map(|s| s.notify.sock) else {
        return false;
    };
    for _ in 0..PER_TURN {
        let Some(m) = recv(fd) else {
            return false;
        };
        let name = shell.svc.slots.get(i).map_or("?", |s| s.name.as_str());
        if m.truncated {
            log!(
                shell.log,
                "{name}: sd_notify: ignored a message over {MSG_MAX} bytes from pid {}",
                m.pid
            );
            continue;
        }
        match belongs(sup, &shell.svc, shell.ctl.owner_uid, i, &m) {
            Some(leader) => apply(sup, shell, i, leader, &m),
            None => log!(
                shell.log,
                "{name}: sd_notify: ignored a message from pid {} (not in the service)",
                m.pid
            ),
        }
    }
    true
}

/// MAINPID=: accepted for a process of the service's group only.
fn set_main_pid(svc: &mut Services, log: &mut Log, i: usize, leader: i32, pid: i32) {
    // SAFETY: plain syscall.
    let pgid = unsafe { libc::getpgid(pid) };
    let Services {
        slots, mainpids, ..
    } = svc;
    let Some(slot) = slots.get_mut(i) else {
        return;
    };
    let name = slot.name.as_str();
    if pgid != leader {
        log!(
            log,
            "{name}: sd_notify: ignored MAINPID={pid} (not in the service's process group)"
        );
        return;
    }
    let before = slot.notify.sd.main_pid != 0;
    if pid == leader {
        slot.notify.sd.main_pid = 0;
    } else {
        slot.notify.sd.main_pid = pid;
        slot.notify.sd.leader = leader;
        log!(log, "{name}: main pid is now {pid} (MAINPID)");
    }
    let after = slot.notify.sd.main_pid != 0;
    if before != after {
        *mainpids = if after {
            mainpids.saturating_add(1)
        } else {
            mainpids.saturating_sub(1)
        };
    }
}

fn apply(sup: &mut Supervisor<'_>, shell: &mut Shell, i: usize, leader: i32, m: &Notice) {
    let now = super::clock::now;
    if let Some(p) = m.main_pid {
        set_main_pid(&mut shell.svc, &mut shell.log, i, leader, p);
    }
    let Some(slot) = shell.svc.slots.get_mut(i) else {
        return;
    };
    let name = slot.name.as_str();
    if !m.status.is_empty() {
        let t = core::str::from_utf8(&m.status).unwrap_or("?");
        log!(shell.log, "{name}: status: {t}");
        // The texts were set with the socket this message came on.
        if let Some(t) = slot.notify.text.get_mut() {
            t.status.clone_from(&m.status);
        }
    }
    // systemd's order: STOPPING wins over READY, READY over RELOADING.
    let was = slot.notify.sd.state;
    let state = if m.stopping {
        NotifyState::Stopping
    } else if m.ready {
        NotifyState::Ready
    } else if m.reloading {
        NotifyState::Reloading
    } else {
        was
    };
    slot.notify.sd.state = state;
    match (was, state) {
        (NotifyState::Stopping, _) | (_, NotifyState::None) => {}
        (_, NotifyState::Stopping) => {
            log!(shell.log, "{name}: says it is stopping (STOPPING=1)")
        }
        (NotifyState::Reloading, NotifyState::Reloading) => {}
        (_, NotifyState::Reloading) => log!(shell.log, "{name}: reloading (RELOADING=1)"),
        (NotifyState::Reloading, NotifyState::Ready) => {
            log!(shell.log, "{name}: reloaded (READY=1)")
        }
        (NotifyState::None | NotifyState::Ready, NotifyState::Ready) => {}
    }
    if m.ready {
        sup.notified(i, false, now(), shell);
    }
    if let Some(us) = m.extend_us {
        sup.extend_timeout(i, us / 1000, now(), shell);
    }
    if m.ping {
        sup.notified(i, true, now(), shell);
    }
    if m.trigger {
        sup.notify_check(i, CheckInput::Trigger, now(), shell);
    }
}

/// Whether `pid` is a child of this process (coffeyd reaps it), without
/// reaping it.
fn our_child(pid: i32) -> bool {
    // SAFETY: zeroed siginfo is valid; WNOWAIT leaves the child as it is.
    unsafe {
        let mut si: libc::siginfo_t = core::mem::zeroed();
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut si,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        ) == 0
    }
}

/// A reaped pid, before the machines hear of it: the pid whose exit the
/// service machine must see, or None when it is not a service's exit.
///
/// With `MAINPID=M` on a service started as `L`: `L`'s exit is the
/// service's exit only if coffeyd cannot see `M`'s (it is not a child of
/// coffeyd, which as a subreaper inherits the group's orphans); `M`'s exit
/// is reported as `L`'s (the process group the machine knows). Costs
/// nothing while no service has a MAINPID.
pub fn route_exit(svc: &mut Services, log: &mut Log, pid: i32, status: ExitStatus) -> Option<i32> {
    if svc.mainpids == 0 {
        return Some(pid);
    }
    let Services {
        slots, mainpids, ..
    } = svc;
    for slot in slots.iter_mut() {
        let sd = &mut slot.notify.sd;
        if sd.main_pid == 0 || (pid != sd.leader && pid != sd.main_pid) {
            continue;
        }
        let (name, main, leader) = (slot.name.as_str(), sd.main_pid, sd.leader);
        if pid == leader && our_child(main) {
            log!(
                log,
                "{name}: pid {leader} exited with {status}; main pid {main} (MAINPID) carries on"
            );
            return None;
        }
        sd.main_pid = 0;
        *mainpids = mainpids.saturating_sub(1);
        if pid == main {
            log!(
                log,
                "{name}: main pid {main} (MAINPID) exited with {status}"
            );
        } else {
            log!(
                log,
                "{name}: pid {leader} exited; main pid {main} (MAINPID) is not a child of coffeyd, so the service ends here"
            );
        }
        return Some(leader);
    }
    Some(pid)
}

/// The service's process is gone: a new run starts with no notify state.
pub fn process_gone(svc: &mut Services, i: usize) {
    let Services {
        slots, mainpids, ..
    } = svc;
    if let Some(s) = slots.get_mut(i) {
        if s.notify.sd.main_pid != 0 {
            *mainpids = mainpids.saturating_sub(1);
        }
        s.notify.sd = SdState {
            readable: s.notify.sd.readable,
            ..SdState::default()
        };
    }
}
