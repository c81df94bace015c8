//! The addresses of health checks: http urls and tcp `HOST:PORT`, as IP
//! literals only (no resolver at boot).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::DEFAULT_HTTP_PORT;

/// The end of every host error: health checks run before any resolver is
/// up (and a supervisor must not block on one), so hosts are IP literals.
const NO_DNS: &str = "must be an IP address or localhost (there is no DNS at boot)";

/// A port: 1 to 65535, digits only (`str::parse` would accept `+80`).
fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse::<u16>().ok().filter(|p| *p != 0)
}

/// An authority (`HOST`, `HOST:PORT`, `[V6]`, `[V6]:PORT`) split into the
/// host (without brackets), whether it was bracketed, and the port text.
fn split_authority(s: &str) -> Result<(&str, bool, Option<&str>), &'static str> {
    if let Some(rest) = s.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err("has an unclosed '[' in its host");
        };
        return match after {
            "" => Ok((host, true, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, true, Some(port))),
                None => Err("has text after the ']' of its host"),
            },
        };
    }
    match s.split_once(':') {
        Some((_, port)) if port.contains(':') => {
            Err("has an IPv6 address without brackets (write it like [::1]:80)")
        }
        Some((host, port)) => Ok((host, false, Some(port))),
        None => Ok((s, false, None)),
    }
}

/// A host that needs no resolver: an IPv4 literal, a bracketed IPv6
/// literal, or `localhost` (127.0.0.1).
fn parse_host(host: &str, bracketed: bool) -> Option<IpAddr> {
    if bracketed {
        return host.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

fn host_error(what: &str, host: &str, bracketed: bool) -> String {
    if bracketed {
        format!("{what} host '[{host}]' {NO_DNS}")
    } else {
        format!("{what} host '{host}' {NO_DNS}")
    }
}

/// An http check's url, resolved: (address, Host header, request target).
pub(super) fn parse_url(url: &str) -> Result<(SocketAddr, String, String), String> {
    let Some(rest) = url.strip_prefix("http://") else {
        if url.starts_with("https://") {
            return Err(format!(
                "url '{url}': only http:// is supported (the daemon has no TLS)"
            ));
        }
        return Err(format!("url '{url}' must start with http://"));
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at_checked(end).unwrap_or((rest, ""));
    if authority.is_empty() {
        return Err(format!("url '{url}' has no host"));
    }
    if authority.contains('@') {
        return Err(format!(
            "url '{url}': user:password@ is not supported in a check url"
        ));
    }
    if authority
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!("url '{url}' has an invalid host"));
    }
    let (host, bracketed, port) =
        split_authority(authority).map_err(|why| format!("url '{url}' {why}"))?;
    if host.is_empty() {
        return Err(format!("url '{url}' has no host"));
    }
    let port = match port {
        None => DEFAULT_HTTP_PORT,
        Some(p) => parse_port(p).ok_or_else(|| {
            format!("url '{url}' has an invalid port '{p}' (it must be from 1 to 65535)")
        })?,
    };
    let ip = parse_host(host, bracketed).ok_or_else(|| host_error("url", host, bracketed))?;
    // The fragment never goes on the wire; a bare query gets the root path.
    let target = tail.split('#').next().unwrap_or_default();
    let path = match target {
        "" => "/".to_owned(),
        t if t.starts_with('?') => format!("/{t}"),
        t => t.to_owned(),
    };
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "url '{url}' has a space or control character in its path (percent-encode it)"
        ));
    }
    Ok((SocketAddr::new(ip, port), authority.to_owned(), path))
}

/// A tcp check's `HOST:PORT`, resolved.
pub(super) fn parse_address(addr: &str) -> Result<SocketAddr, String> {
    let shape = || format!("address '{addr}' must be host:port with a port from 1 to 65535");
    let (host, bracketed, port) =
        split_authority(addr).map_err(|why| format!("address '{addr}' {why}"))?;
    let Some(port) = port.and_then(parse_port) else {
        return Err(shape());
    };
    if host.is_empty() {
        return Err(shape());
    }
    let ip = parse_host(host, bracketed).ok_or_else(|| host_error("address", host, bracketed))?;
    Ok(SocketAddr::new(ip, port))
}
