//! Socket addresses as the kernel takes them, on the stack: the C sockaddr
//! of an IPv4 or IPv6 address (the probes' connect(2), the `fds:` table's
//! bind(2)) and of a unix socket (the `fds:` table, `NOTIFY_SOCKET`). No
//! allocation.

use nix::libc;
use std::net::SocketAddr;

/// `addr` as a `sockaddr_in` or `sockaddr_in6` in a `sockaddr_storage`,
/// and its length.
pub fn of(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { core::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { core::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
            core::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { core::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
            core::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// A unix socket address: a path, or `@name` for the abstract namespace
/// (as `NOTIFY_SOCKET` writes it), and its length. None when empty, too
/// long or holding a NUL.
pub fn unix(v: &[u8]) -> Option<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain data; all zeroes is valid.
    let mut a: libc::sockaddr_un = unsafe { core::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let (first, rest) = v.split_first()?;
    if rest.len() + 1 >= a.sun_path.len() || v.contains(&0) {
        return None;
    }
    let abstract_ns = *first == b'@';
    let dst = a.sun_path.iter_mut();
    let src = core::iter::once(if abstract_ns { 0 } else { *first }).chain(rest.iter().copied());
    for (d, s) in dst.zip(src) {
        *d = s as libc::c_char;
    }
    let base = core::mem::size_of::<libc::sa_family_t>();
    // A path is NUL-terminated; an abstract name is exactly its bytes.
    let len = base + v.len() + usize::from(!abstract_ns);
    Some((a, libc::socklen_t::try_from(len).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_families_with_their_lengths_and_ports() {
        let (ss, len) = of(&"127.0.0.1:8080".parse().unwrap());
        assert_eq!(len as usize, core::mem::size_of::<libc::sockaddr_in>());
        assert_eq!(i32::from(ss.ss_family), libc::AF_INET);
        // SAFETY: it holds a sockaddr_in.
        let sin: libc::sockaddr_in =
            unsafe { core::ptr::read((&ss as *const libc::sockaddr_storage).cast()) };
        assert_eq!(u16::from_be(sin.sin_port), 8080);
        assert_eq!(sin.sin_addr.s_addr.to_ne_bytes(), [127, 0, 0, 1]);
        let (ss, len) = of(&"[::1]:53".parse().unwrap());
        assert_eq!(len as usize, core::mem::size_of::<libc::sockaddr_in6>());
        assert_eq!(i32::from(ss.ss_family), libc::AF_INET6);
    }

    #[test]
    fn paths_and_abstract_names() {
        let (a, len) = unix(b"/run/x").unwrap();
        assert_eq!(a.sun_path[0], b'/' as libc::c_char);
        assert_eq!(len as usize, 2 + 6 + 1);
        let (a, len) = unix(b"@sys/n").unwrap();
        assert_eq!(a.sun_path[0], 0);
        assert_eq!(a.sun_path[1], b's' as libc::c_char);
        assert_eq!(len as usize, 2 + 6);
        assert!(unix(b"").is_none());
        assert!(unix(&[b'a'; 200]).is_none());
    }
}
