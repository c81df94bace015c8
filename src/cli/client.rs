//! One blocking connection to the daemon: connect, send request frames,
//! read reply frames.
//!
//! Requests are encoded with `proto::encode_request` into a stack buffer and
//! written whole. Replies are read into a growable buffer and decoded with
//! `proto::decode_reply`; a partial frame means "read more", and EOF in the
//! middle of a reply is the error "connection closed by daemon". A deadline,
//! when set, becomes the socket's read timeout for each read, and running
//! out of it is a timeout failure. Nothing here prints.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use coffey::control::proto::{self, DecodeError, Reply, Request};

use super::{exit, Failure};

/// Why connecting failed, for the caller to phrase.
pub fn connect_failure(path: &Path, err: &std::io::Error) -> Failure {
    match err.raw_os_error() {
        Some(nix::libc::ENOENT) => Failure::new(
            exit::UNREACHABLE,
            "not running",
            format!("coffeyd is not running (no socket at {})", path.display()),
        )
        .plain(),
        Some(nix::libc::ECONNREFUSED) => Failure::new(
            exit::UNREACHABLE,
            "not running",
            format!(
                "coffeyd is not running (nothing listening at {})",
                path.display()
            ),
        )
        .plain(),
        Some(nix::libc::EACCES) | Some(nix::libc::EPERM) => Failure::new(
            exit::DENIED,
            "permission denied",
            format!("cannot connect to {}: {err}", path.display()),
        ),
        _ => Failure::new(
            exit::UNREACHABLE,
            "unreachable",
            format!("cannot connect to {}: {err}", path.display()),
        ),
    }
}

pub struct Conn {
    stream: UnixStream,
    path: PathBuf,
    /// Received bytes; `buf[start..]` is not yet consumed.
    buf: Vec<u8>,
    start: usize,
    /// Length of the frame handed out by the last `recv`, dropped on the next.
    pending: usize,
    deadline: Option<Instant>,
    /// A read timeout is set on the socket.
    timed: bool,
}

impl Conn {
    pub fn connect(path: &Path) -> Result<Conn, Failure> {
        let stream = UnixStream::connect(path).map_err(|e| connect_failure(path, &e))?;
        Ok(Conn {
            stream,
            path: path.to_path_buf(),
            buf: Vec::with_capacity(16 * 1024),
            start: 0,
            pending: 0,
            deadline: None,
            timed: false,
        })
    }

    /// Reads after `at` fail with a timeout; `None` waits forever.
    pub fn set_deadline(&mut self, at: Option<Instant>) {
        self.deadline = at;
    }

    pub fn send(&mut self, req: &Request<'_>) -> Result<(), Failure> {
        let mut frame = [0u8; proto::HEADER + proto::MAX_REQUEST];
        let n = proto::encode_request(req, &mut frame)
            .map_err(|_| Failure::failed("request too large (names too long?)"))?;
        let bytes = frame.get(..n).unwrap_or(&[]);
        match self.stream.write_all(bytes) {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) => {
                Err(self.answer_before_close())
            }
            Err(e) => Err(Failure::failed(format!(
                "writing to {}: {e}",
                self.path.display()
            ))),
        }
    }

    /// The daemon closed before it took the request, maybe after saying
    /// why (a refused connection reads `busy`): that answer, else
    /// "connection closed".
    fn answer_before_close(&mut self) -> Failure {
        match self.recv() {
            Ok(Reply::Error { code, message }) => Failure::from_daemon(code, message),
            _ => Failure::closed(),
        }
    }

    /// Reads more bytes; Ok(false) at EOF.
    fn fill(&mut self) -> Result<bool, Failure> {
        if self.start > 0 {
            self.buf.drain(..self.start.min(self.buf.len()));
            self.start = 0;
        }
        let timeout = match self.deadline {
            None => None,
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Failure::timeout("timed out waiting for the daemon"));
                }
                Some(left.max(Duration::from_millis(1)))
            }
        };
        // One setsockopt only when there is a deadline (or was one):
        // without, the socket blocks as it was made.
        if timeout.is_some() || self.timed {
            let _ = self.stream.set_read_timeout(timeout);
            self.timed = timeout.is_some();
        }
        let mut chunk = [0u8; 8192];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
                    return Ok(true);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(Failure::timeout("timed out waiting for the daemon"))
                }
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return Err(Failure::closed()),
                Err(e) => {
                    return Err(Failure::failed(format!(
                        "reading from {}: {e}",
                        self.path.display()
                    )))
                }
            }
        }
    }

    /// The next reply frame. It borrows the connection's buffer until the
    /// next call.
    pub fn recv(&mut self) -> Result<Reply<'_>, Failure> {
        self.start = self.start.saturating_add(self.pending).min(self.buf.len());
        self.pending = 0;
        let len = loop {
            let have = self.buf.get(self.start..).unwrap_or(&[]);
            match proto::frame_bounds(have, proto::MAX_PAYLOAD) {
                Ok((_, len)) => break len,
                Err(DecodeError::Incomplete) => {
                    if !self.fill()? {
                        return Err(Failure::closed());
                    }
                }
                Err(DecodeError::Version(v)) => {
                    return Err(Failure::protocol(format!(
                        "the daemon speaks protocol version {v}; this client speaks {}",
                        proto::VERSION
                    )))
                }
                Err(DecodeError::TooLarge(n)) => {
                    return Err(Failure::protocol(format!(
                        "the daemon sent a {n}-byte frame (limit {})",
                        proto::MAX_PAYLOAD
                    )))
                }
                Err(DecodeError::Malformed) => {
                    return Err(Failure::protocol("malformed frame from the daemon"))
                }
            }
        };
        let end = self.start.saturating_add(len);
        let frame = self.buf.get(self.start..end).unwrap_or(&[]);
        match proto::decode_reply(frame) {
            Ok((reply, used)) => {
                self.pending = used;
                Ok(reply)
            }
            Err(_) => Err(Failure::protocol("malformed frame from the daemon")),
        }
    }

    /// Reads `Ok` or `Error` (the reply to a simple command) and returns the
    /// Ok message.
    pub fn expect_ok(&mut self) -> Result<String, Failure> {
        match self.recv()? {
            Reply::Ok { message } => Ok(message.to_owned()),
            Reply::Error { code, message } => Err(Failure::from_daemon(code, message)),
            other => Err(unexpected(&other)),
        }
    }
}

/// A reply that does not belong where it arrived.
pub fn unexpected(r: &Reply<'_>) -> Failure {
    let what = match r {
        Reply::Ok { .. } => "Ok",
        Reply::Error { .. } => "Error",
        Reply::Service { .. } => "Service",
        Reply::Detail { .. } => "Detail",
        Reply::LogLine { .. } => "LogLine",
        Reply::Event { .. } => "Event",
        Reply::Dropped { .. } => "Dropped",
        Reply::End => "End",
        Reply::Version { .. } => "Version",
        Reply::PlanItem { .. } => "PlanItem",
        Reply::ServiceMetrics { .. } => "ServiceMetrics",
        Reply::DaemonMetrics { .. } => "DaemonMetrics",
    };
    Failure::protocol(format!("unexpected {what} frame from the daemon"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffey::control::proto::{encode_reply, ErrorCode};

    fn pair() -> (Conn, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        let c = Conn {
            stream: a,
            path: PathBuf::from("/test.sock"),
            buf: Vec::new(),
            start: 0,
            pending: 0,
            deadline: None,
            timed: false,
        };
        (c, b)
    }

    fn frame(r: &Reply<'_>) -> Vec<u8> {
        let mut b = [0u8; 512];
        let n = encode_reply(r, &mut b).unwrap();
        b[..n].to_vec()
    }

    #[test]
    fn frames_split_across_reads_and_back_to_back() {
        let (mut c, mut peer) = pair();
        let mut bytes = frame(&Reply::Ok { message: "hello" });
        bytes.extend(frame(&Reply::Dropped { count: 3 }));
        bytes.extend(frame(&Reply::End));
        let t = std::thread::spawn(move || {
            for b in bytes {
                peer.write_all(&[b]).unwrap();
            }
            peer
        });
        assert_eq!(c.recv().unwrap(), Reply::Ok { message: "hello" });
        assert_eq!(c.recv().unwrap(), Reply::Dropped { count: 3 });
        assert_eq!(c.recv().unwrap(), Reply::End);
        drop(t.join().unwrap());
        assert_eq!(c.recv().unwrap_err(), Failure::closed());
    }

    #[test]
    fn eof_mid_frame_is_closed() {
        let (mut c, mut peer) = pair();
        let f = frame(&Reply::Ok {
            message: "cut short",
        });
        peer.write_all(&f[..5]).unwrap();
        drop(peer);
        let e = c.recv().unwrap_err();
        assert_eq!(e.message, "connection closed by daemon");
        assert_eq!(e.code, 1);
    }

    #[test]
    fn errors_and_timeouts() {
        let (mut c, mut peer) = pair();
        peer.write_all(&frame(&Reply::Error {
            code: ErrorCode::UnknownService,
            message: "unknown service 'x'",
        }))
        .unwrap();
        assert_eq!(c.expect_ok().unwrap_err().code, 3);
        c.set_deadline(Some(Instant::now() + Duration::from_millis(30)));
        assert_eq!(c.recv().unwrap_err().code, exit::TIMEOUT);
        peer.write_all(&[9, 0x40, 0, 0]).unwrap();
        c.set_deadline(None);
        assert_eq!(c.recv().unwrap_err().error, "protocol error");
    }

    #[test]
    fn a_daemon_that_answered_busy_and_closed_before_the_request_is_busy() {
        let (mut c, mut peer) = pair();
        peer.write_all(&frame(&Reply::Error {
            code: ErrorCode::Busy,
            message: "too many clients",
        }))
        .unwrap();
        drop(peer);
        let e = c.send(&Request::Version).unwrap_err();
        assert_eq!(e.human(), "coffeyd is busy (too many clients)");
        // Closed with nothing said: "connection closed".
        let (mut c, peer) = pair();
        drop(peer);
        assert_eq!(c.send(&Request::Version).unwrap_err(), Failure::closed());
    }

    #[test]
    fn send_encodes_a_request() {
        let (mut c, mut peer) = pair();
        c.send(&Request::Status {
            name: "api",
            verbose: 1,
        })
        .unwrap();
        let mut b = [0u8; 64];
        let n = peer.read(&mut b).unwrap();
        assert_eq!(
            proto::decode_request(&b[..n]).unwrap().0,
            Request::Status {
                name: "api",
                verbose: 1
            }
        );
    }

    #[test]
    fn connect_errors_are_phrased() {
        let p = Path::new("/nonexistent/dir/x.sock");
        let e = Conn::connect(p).err().unwrap();
        assert_eq!(e.code, exit::UNREACHABLE);
        assert_eq!(
            e.human(),
            "coffeyd is not running (no socket at /nonexistent/dir/x.sock)"
        );
        let refused = std::io::Error::from_raw_os_error(nix::libc::ECONNREFUSED);
        assert_eq!(
            connect_failure(Path::new("/s"), &refused).human(),
            "coffeyd is not running (nothing listening at /s)"
        );
        let denied = std::io::Error::from_raw_os_error(nix::libc::EACCES);
        assert_eq!(connect_failure(Path::new("/s"), &denied).code, exit::DENIED);
    }
}
