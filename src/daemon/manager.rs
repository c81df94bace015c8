//! The service manager above coffeyd, when there is one: systemd runs
//! coffeyd with `Type=notify` (examples/coffeyd.service) and passes
//! `NOTIFY_SOCKET`, and `WATCHDOG_USEC` with `WatchdogSec=`. coffeyd sends
//! `READY=1` once its socket is up and startup has settled
//! (`Supervisor::settled`), `STOPPING=1` when its shutdown begins, and
//! `WATCHDOG=1` every half `WATCHDOG_USEC`: the loop's one timer, which
//! exists only under a watchdog. The variables are read at startup
//! (services never see them: `spawn::MANAGER_KEYS`); the datagrams go
//! from fixed buffers.

use coffey::time::{Instant, Millis};
use nix::libc;
use std::os::fd::RawFd;

pub struct Manager {
    fd: RawFd,
    addr: libc::sockaddr_un,
    len: libc::socklen_t,
    /// Half of `WATCHDOG_USEC`, in ms; 0 without a watchdog.
    every: Millis,
    next_ping: Instant,
    ready: bool,
    stopping: bool,
}

impl Manager {
    /// From `NOTIFY_SOCKET` (a path, or `@name` in the abstract
    /// namespace), `WATCHDOG_USEC` and `WATCHDOG_PID` (a watchdog meant
    /// for another process is ignored). None without a usable socket.
    pub fn from_env(now: Instant) -> Option<Manager> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let (addr, len) =
            super::sockaddr::unix(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))?;
        // SAFETY: plain syscall.
        let fd = unsafe {
            libc::socket(
                libc::AF_UNIX,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        };
        if fd < 0 {
            return None;
        }
        let every = watchdog_ms(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        Some(Manager {
            fd,
            addr,
            len,
            every,
            next_ping: now.add(every),
            ready: false,
            stopping: false,
        })
    }

    /// Best effort, as sd_notify: a manager that is gone changes nothing.
    fn send(&self, msg: &[u8]) {
        // SAFETY: valid buffer and address of `len` bytes.
        unsafe {
            libc::sendto(
                self.fd,
                msg.as_ptr().cast(),
                msg.len(),
                libc::MSG_NOSIGNAL,
                (&self.addr as *const libc::sockaddr_un).cast(),
                self.len,
            )
        };
    }

    /// READY=1, once: startup has settled.
    pub fn ready(&mut self) {
        if !self.ready {
            self.ready = true;
            self.send(b"READY=1\nSTATUS=services started");
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// STOPPING=1, once: the shutdown began.
    pub fn stopping(&mut self) {
        if !self.stopping {
            self.stopping = true;
            self.send(b"STOPPING=1");
        }
    }

    /// When the next watchdog ping is due (NEVER without a watchdog).
    pub fn poll_at(&self) -> Instant {
        if self.every == 0 {
            Instant::NEVER
        } else {
            self.next_ping
        }
    }

    /// Pings the watchdog when it is due.
    pub fn tick(&mut self, now: Instant) {
        if self.every != 0 && now >= self.next_ping {
            self.send(b"WATCHDOG=1");
            self.next_ping = now.add(self.every);
        }
    }
}

/// Half the watchdog period in ms, or 0: none set, unparsable, zero, or
/// meant for another pid.
fn watchdog_ms(usec: Option<&str>, pid: Option<&str>, me: u32) -> Millis {
    if pid.is_some_and(|p| p.trim().parse::<u32>().ok() != Some(me)) {
        return 0;
    }
    let us = usec.and_then(|u| u.trim().parse::<u64>().ok()).unwrap_or(0);
    // At least 1 ms, so that a tiny period still pings rather than spins.
    if us == 0 {
        0
    } else {
        (us / 2000).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_pings_at_half_its_period_and_only_for_this_pid() {
        assert_eq!(watchdog_ms(Some("10000000"), None, 7), 5000);
        assert_eq!(watchdog_ms(Some("10000000"), Some("7"), 7), 5000);
        assert_eq!(watchdog_ms(Some("10000000"), Some("8"), 7), 0);
        assert_eq!(watchdog_ms(Some("0"), None, 7), 0);
        assert_eq!(watchdog_ms(Some("x"), None, 7), 0);
        assert_eq!(watchdog_ms(None, None, 7), 0);
        assert_eq!(watchdog_ms(Some("500"), None, 7), 1);
    }
}
