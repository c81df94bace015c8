//! `fds:`: the top-level table of descriptors coffeyd creates and holds
//! (listen sockets, files, pipes), and each service's `fds:` mapping of
//! descriptor numbers to its entries. Everything is resolved here (the
//! addresses, the owner of a unix socket, the entry of each reference), so
//! the daemon only makes the syscalls.

use std::collections::BTreeSet;
use std::path::Path;

use super::super::raw::{RawFdEntry, RawFds, RawSvcFds};
use super::super::spec::{
    FdEnd, FdEntry, FdKind, FileMode, Healthcheck, ServiceFd, FD_MAX, FD_MIN,
};
use super::addr::parse_address;
use super::bounds::check_name;
use super::{check_path, resolve, Ctx, Seg, I, K};

/// Default `backlog` of a tcp or unix listen entry.
pub(super) const DEFAULT_BACKLOG: u32 = 128;
/// Longest unix socket path (`sun_path` holds 108 bytes with the NUL).
const MAX_UNIX_PATH: usize = 107;

/// What a service needs to know about the table: each entry's name and
/// whether it is a pipe (None: the entry is broken, reported already, so
/// any reference to it is taken as it is).
pub(super) type TableNames = Vec<(String, Option<bool>)>;

/// The table, in source order, and the names services see. A broken
/// entry is reported and still kept (as a pipe), so references to it do
/// not report a second error.
pub(super) fn build_table(
    cx: &mut Ctx,
    raw: Option<&RawFds>,
    base: &Path,
) -> (Vec<FdEntry>, TableNames) {
    let Some(raw) = raw else {
        return (Vec::new(), Vec::new());
    };
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut names = Vec::new();
    for (i, (name, e)) in raw.0.iter().enumerate() {
        let at = [K("fds"), I(i)];
        if let Err(msg) = check_name(name) {
            cx.err(&at, format!("fds entry '{name}': {msg}"));
        } else if name.contains('.') || name.contains(':') {
            cx.err(&at, format!("fds entry '{name}': a name has no '.' or ':'"));
        }
        if !seen.insert(name.clone()) {
            cx.err(&at, format!("fds entry '{name}' is defined twice"));
        }
        let kind = match e {
            Some(e) => entry_kind(cx, &at, name, e, base),
            None => {
                cx.err(&at, format!("fds entry '{name}' is empty"));
                None
            }
        };
        names.push((name.clone(), kind.as_ref().map(|k| *k == FdKind::Pipe)));
        out.push(FdEntry {
            name: name.clone(),
            kind: kind.unwrap_or(FdKind::Pipe),
        });
    }
    (out, names)
}

fn entry_kind(
    cx: &mut Ctx,
    at: &[Seg; 2],
    name: &str,
    e: &RawFdEntry,
    base: &Path,
) -> Option<FdKind> {
    let n = [e.listen.is_some(), e.file.is_some(), e.pipe.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if n != 1 {
        cx.err(
            at,
            format!("fds entry '{name}' needs exactly one of `listen`, `file` or `pipe`"),
        );
        return None;
    }
    if let Some(file) = &e.file {
        return file_entry(cx, at, name, e, file, base);
    }
    let Some(url) = &e.listen else {
        no_keys(cx, at, name, e, &["backlog", "mode", "owner", "group"]);
        return Some(FdKind::Pipe);
    };
    let backlog = e.backlog.unwrap_or(DEFAULT_BACKLOG);
    if let Some(rest) = url.strip_prefix("unix:") {
        return unix(cx, at, name, e, rest, backlog, base);
    }
    inet(cx, at, name, e, url, backlog)
}

/// A `file: PATH` entry with its `mode` (r, w or a).
fn file_entry(
    cx: &mut Ctx,
    at: &[Seg; 2],
    name: &str,
    e: &RawFdEntry,
    file: &str,
    base: &Path,
) -> Option<FdKind> {
    let sub = |k: &'static str| [at[0], at[1], K(k)];
    if !check_path(cx, &sub("file"), "file", file) {
        return None;
    }
    let mode = match e.mode.as_ref().map(|m| m.0.as_str()) {
        None | Some("r") => FileMode::Read,
        Some("w") => FileMode::Write,
        Some("a") => FileMode::Append,
        Some(m) => {
            cx.err(
                &sub("mode"),
                format!("fds entry '{name}': file mode '{m}' must be r, w or a"),
            );
            return None;
        }
    };
    no_keys(cx, at, name, e, &["backlog", "owner", "group"]);
    Some(FdKind::File {
        path: resolve(base, file),
        mode,
    })
}

/// A `tcp://HOST:PORT` or `udp://HOST:PORT` listen entry.
fn inet(
    cx: &mut Ctx,
    at: &[Seg; 2],
    name: &str,
    e: &RawFdEntry,
    url: &str,
    backlog: u32,
) -> Option<FdKind> {
    let sub = [at[0], at[1], K("listen")];
    let (udp, addr) = match (url.strip_prefix("tcp://"), url.strip_prefix("udp://")) {
        (Some(a), _) => (false, a),
        (_, Some(a)) => (true, a),
        _ => {
            cx.err(
                &sub,
                format!(
                    "fds entry '{name}': listen '{url}' must be tcp://HOST:PORT, \
                     udp://HOST:PORT or unix:PATH"
                ),
            );
            return None;
        }
    };
    let addr = match parse_address(addr) {
        Ok(a) => a,
        Err(msg) => {
            cx.err(&sub, format!("fds entry '{name}': listen {msg}"));
            return None;
        }
    };
    let extra: &[&str] = if udp {
        &["backlog", "mode", "owner", "group"]
    } else {
        &["mode", "owner", "group"]
    };
    no_keys(cx, at, name, e, extra);
    Some(if udp {
        FdKind::Udp(addr)
    } else {
        FdKind::Tcp(addr, backlog)
    })
}

/// A `unix:PATH` listen entry, with its mode and owner.
fn unix(
    cx: &mut Ctx,
    at: &[Seg; 2],
    name: &str,
    e: &RawFdEntry,
    path: &str,
    backlog: u32,
    base: &Path,
) -> Option<FdKind> {
    let sub = |k: &'static str| [at[0], at[1], K(k)];
    let path = path.strip_prefix("//").unwrap_or(path);
    if !check_path(cx, &sub("listen"), "listen path", path) {
        return None;
    }
    let path = resolve(base, path);
    if path.as_os_str().len() > MAX_UNIX_PATH {
        cx.err(
            &sub("listen"),
            format!(
                "fds entry '{name}': socket path {} is longer than {MAX_UNIX_PATH} bytes",
                path.display()
            ),
        );
        return None;
    }
    let mode = match e.mode.as_ref().map(|m| m.0.as_str()) {
        None => None,
        Some(m) => match parse_mode(m) {
            Some(v) => Some(v),
            None => {
                cx.err(
                    &sub("mode"),
                    format!("fds entry '{name}': mode '{m}' must be octal, like \"0660\""),
                );
                return None;
            }
        },
    };
    let uid = match &e.owner {
        None => None,
        Some(o) => match cx.target.user(&o.0) {
            Ok(u) => Some(u.uid),
            Err(msg) => {
                cx.err(&sub("owner"), format!("fds entry '{name}': {msg}"));
                return None;
            }
        },
    };
    let gid = match &e.group {
        None => None,
        Some(g) => match cx.target.group(&g.0) {
            Ok((_, gid)) => Some(gid),
            Err(msg) => {
                cx.err(&sub("group"), format!("fds entry '{name}': {msg}"));
                return None;
            }
        },
    };
    Some(FdKind::Unix {
        path,
        backlog,
        mode,
        uid,
        gid,
    })
}

/// Octal permission bits (`0660`, `660`, `0o660`), at most 0o7777.
fn parse_mode(m: &str) -> Option<u32> {
    // Leading zeros are allowed; the value is what is bounded.
    crate::config::units::octal(m, 10).filter(|v| *v <= 0o7777)
}

/// Keys that mean nothing for this kind of entry.
fn no_keys(cx: &mut Ctx, at: &[Seg; 2], name: &str, e: &RawFdEntry, keys: &[&'static str]) {
    for &k in keys {
        let set = match k {
            "backlog" => e.backlog.is_some(),
            "mode" => e.mode.is_some(),
            "owner" => e.owner.is_some(),
            _ => e.group.is_some(),
        };
        if set {
            cx.err(
                &[at[0], at[1], K(k)],
                format!("fds entry '{name}': `{k}` does not apply to this kind of entry"),
            );
        }
    }
}

/// A service's `fds:`: (items sorted by number, LISTEN_FDNAMES).
pub(super) fn build_service_fds(
    cx: &mut Ctx,
    raw: Option<&RawSvcFds>,
    table: &TableNames,
    hc: &Healthcheck,
) -> (Vec<ServiceFd>, String) {
    let Some(raw) = raw else {
        return (Vec::new(), String::new());
    };
    let notify = notify_fd(hc);
    let mut out: Vec<ServiceFd> = Vec::new();
    for (i, (num, reference)) in raw.0.iter().enumerate() {
        let at = [K("fds"), I(i)];
        let Some(n) = parse_num(num) else {
            cx.err(
                &at,
                format!("fds: '{num}' is not a descriptor number ({FD_MIN} to {FD_MAX})"),
            );
            continue;
        };
        if n < FD_MIN {
            cx.err(
                &at,
                format!("fds: {n} is stdin, stdout or stderr; use {FD_MIN} to {FD_MAX}"),
            );
            continue;
        }
        if n > FD_MAX {
            cx.err(
                &at,
                format!("fds: {n} is above the highest number, {FD_MAX}"),
            );
            continue;
        }
        if out.iter().any(|f| f.num == n) {
            cx.err(&at, format!("fds: descriptor {n} is given twice"));
            continue;
        }
        if notify == Some(n) {
            cx.err(
                &at,
                format!("fds: descriptor {n} is the readiness check's notify fd"),
            );
            continue;
        }
        if let Some(f) = reference_of(cx, &at, reference, table, n) {
            out.push(f);
        }
    }
    out.sort_by_key(|f| f.num);
    let gaps = out
        .iter()
        .enumerate()
        .any(|(k, f)| f.num != FD_MIN + k as u32);
    if gaps && !out.is_empty() {
        cx.warn(
            &[K("fds")],
            "fds: the numbers do not run from 3 without gaps, so LISTEN_FDS (systemd's \
             socket activation) counts only the first consecutive ones"
                .to_owned(),
        );
    }
    let names = out
        .iter()
        .filter_map(|f| table.get(usize::from(f.entry)).map(|(n, _)| n.as_str()))
        .collect::<Vec<_>>()
        .join(":");
    (out, names)
}

/// The service's number of a reference (`web`, `auth.write`).
fn reference_of(
    cx: &mut Ctx,
    at: &[Seg; 2],
    reference: &str,
    table: &TableNames,
    num: u32,
) -> Option<ServiceFd> {
    let (name, end) = match reference.rsplit_once('.') {
        Some((n, "read")) => (n, FdEnd::Read),
        Some((n, "write")) => (n, FdEnd::Write),
        _ => (reference, FdEnd::Whole),
    };
    let Some(entry) = table.iter().position(|(n, _)| n == name) else {
        cx.err(
            at,
            format!("fds: {num}: '{reference}' is not an entry of the top-level fds table"),
        );
        return None;
    };
    let pipe = table.get(entry).and_then(|(_, p)| *p);
    match (pipe, end) {
        (Some(true), FdEnd::Whole) => {
            cx.err(
                at,
                format!("fds: {num}: '{name}' is a pipe: use '{name}.read' or '{name}.write'"),
            );
            return None;
        }
        (Some(false), FdEnd::Read | FdEnd::Write) => {
            cx.err(
                at,
                format!("fds: {num}: '{name}' is not a pipe, so it has no '.read' or '.write'"),
            );
            return None;
        }
        _ => {}
    }
    Some(ServiceFd {
        num,
        entry: u16::try_from(entry).ok()?,
        end,
    })
}

fn parse_num(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The fd number of a notify readiness check, if any.
fn notify_fd(hc: &Healthcheck) -> Option<u32> {
    use super::super::spec::CheckKind;
    [&hc.readiness, &hc.liveness, &hc.startup]
        .into_iter()
        .flatten()
        .find_map(|c| match c.kind {
            CheckKind::Notify { fd, .. } => fd,
            _ => None,
        })
}

/// Warns about every entry no service names.
pub(super) fn unused(cx: &mut Ctx, table: &[FdEntry], used: &BTreeSet<u16>) {
    for (i, e) in table.iter().enumerate() {
        let k = u16::try_from(i).unwrap_or(u16::MAX);
        if !used.contains(&k) {
            cx.warn(
                &[K("fds"), I(i)],
                format!("fds entry '{}' is used by no service", e.name),
            );
        }
    }
}
