//! A socket address as the kernel takes it: the C sockaddr for an IPv4 or
//! IPv6 address, on the stack, for connect(2) (the probes) and bind(2)
//! (the `fds:` table). No allocation.

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
}
