//! Socket syscalls of a client: reading input into its [`Conn`], writing
//! queued output until the socket would block, and closing so that the
//! peer reads a clean EOF.

use super::Client;
use crate::daemon::clock;
use coffey::time::Instant;
use nix::libc;
use std::os::fd::RawFd;

/// Reads what the socket holds into the connection's input, until it
/// would block or the input is full. Returns true at EOF or on an error
/// that ends the connection.
pub(super) fn read_input(c: &mut Client, now: Instant) -> bool {
    if !c.readable {
        return false;
    }
    loop {
        c.conn.discard_input();
        let space = c.conn.read_space();
        if space.is_empty() {
            return false;
        }
        // SAFETY: valid buffer.
        let n = unsafe { libc::recv(c.fd, space.as_mut_ptr().cast(), space.len(), 0) };
        if n < 0 {
            let e = nix::errno::Errno::last_raw();
            if e == libc::EINTR {
                continue;
            }
            c.readable = false;
            return e != libc::EAGAIN;
        }
        if n == 0 {
            c.readable = false;
            c.eof = true;
            return true;
        }
        let n = usize::try_from(n).unwrap_or(0);
        let short = n < space.len();
        c.conn.did_read(n, now);
        // A short read of a stream socket took everything queued; what
        // arrives later raises a new edge, so no EAGAIN read is needed,
        // unless the peer's shutdown was reported with this data.
        if short && !c.hup {
            c.readable = false;
            return false;
        }
    }
}

/// Writes queued output until it would block. Returns false if the peer
/// is gone.
pub fn flush(c: &mut Client) -> bool {
    while !c.conn.output().is_empty() {
        let out = c.conn.output();
        // SAFETY: valid slice; MSG_NOSIGNAL: a gone peer is EPIPE, not a signal.
        let n = unsafe { libc::send(c.fd, out.as_ptr().cast(), out.len(), libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = nix::errno::Errno::last_raw();
            if e == libc::EINTR {
                continue;
            }
            if e == libc::EAGAIN && !c.conn.stalled() {
                c.conn.blocked(clock::now());
            }
            return e == libc::EAGAIN;
        }
        c.conn.did_write(usize::try_from(n).unwrap_or(0));
    }
    true
}

pub fn close_client(c: &mut Client) {
    if c.eof {
        crate::daemon::close_fd(c.fd);
    } else {
        close_quietly(c.fd);
    }
    c.fd = -1;
    c.readable = false;
}

/// Closes a connection so that the peer reads what was sent and then a
/// clean EOF: closing a unix socket with unread input would make the
/// peer's next read fail with ECONNRESET instead. Shutting our side for
/// reading first makes the peer's further sends fail (EPIPE) rather than
/// queue, so the input, read and dropped next, is all there is: the loop
/// ends at the queue's end (bounded by the peer's send buffer), and the
/// close leaves nothing unread.
pub(super) fn close_quietly(fd: RawFd) {
    // SAFETY: a socket we own; failure (not a socket) leaves the close.
    unsafe { libc::shutdown(fd, libc::SHUT_RD) };
    let mut junk = [0u8; 1024];
    loop {
        // SAFETY: valid buffer.
        let n = unsafe { libc::recv(fd, junk.as_mut_ptr().cast(), junk.len(), libc::MSG_DONTWAIT) };
        if n <= 0 {
            break;
        }
    }
    crate::daemon::close_fd(fd);
}

/// Lets a cut-off stream's last frames (its `Dropped` marker) into the
/// socket although the peer has read nothing: the kernel takes more while
/// its queue is below SO_SNDBUF, and doubling it makes room for our whole
/// buffer. Best effort; the connection is closed right after.
pub(super) fn widen_sndbuf(fd: RawFd) {
    let mut cur: libc::c_int = 0;
    let mut len = core::mem::size_of::<libc::c_int>() as libc::socklen_t;
    let size = core::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid out-pointers of the right size.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&mut cur as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return;
    }
    // The kernel doubles the value it is given: `cur` doubles the buffer.
    // SO_SNDBUFFORCE (root) ignores net.core.wmem_max.
    for opt in [libc::SO_SNDBUFFORCE, libc::SO_SNDBUF] {
        // SAFETY: valid pointer of the right size.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&cur as *const libc::c_int).cast(),
                size,
            )
        };
        if r == 0 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::close_quietly;
    use std::io::{Read, Write};
    use std::os::fd::IntoRawFd;
    use std::os::unix::net::UnixStream;

    /// A peer that has sent more than one read takes, and sends again
    /// while it is being closed, still reads the reply and a clean EOF:
    /// once our side is shut for reading, its sends fail (EPIPE) and
    /// nothing new can be left unread for the close to reset.
    #[test]
    fn a_peer_with_unread_input_reads_the_reply_then_eof() {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        peer.set_nonblocking(true).unwrap();
        let junk = [b'x'; 4096];
        let mut sent = 0;
        while let Ok(n) = peer.write(&junk) {
            sent += n;
        }
        assert!(sent > 16 * 1024, "only {sent} bytes queued");
        (&ours).write_all(b"reply").unwrap();
        close_quietly(ours.into_raw_fd());
        peer.set_nonblocking(false).unwrap();
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"reply");
        assert_eq!(
            peer.write(b"late").unwrap_err().kind(),
            std::io::ErrorKind::BrokenPipe
        );
    }
}
