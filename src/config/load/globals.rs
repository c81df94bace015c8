//! The `coffey:` section: socket, pid file, daemon log and service-log
//! defaults (rotation bounds), hostname, emergency shell, mounts and cgroup.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use nix::unistd;

use super::super::raw::{RawDaemonLog, RawEventLog, RawGlobal, RawServiceLogs, Size};
use super::super::spec::{Config, DaemonLog, EventLog, Limits, ServiceLogs};
use super::mounts::build_mounts;
use super::{
    check_buffer, check_path, resolve, Ctx, Outline, Seg, Sink, Src, Target, DEFAULT_BUFFER,
    DEFAULT_CLIENTS, DEFAULT_EMERGENCY, DEFAULT_KEEP, DEFAULT_MAX_SIZE, DEFAULT_SHUTDOWN, K,
    LOG_PATH_MAX, MAX_HOSTNAME_LEN, MAX_KEEP, MAX_SOCKET_PATH, MIN_MAX_SIZE,
};

/// Default control socket: root uses /run like other inits; users get their
/// runtime dir, or a per-uid name in /tmp.
fn default_socket() -> PathBuf {
    let euid = unistd::geteuid();
    if euid.is_root() {
        return PathBuf::from("/run/coffey.sock");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("coffey.sock"),
        _ => PathBuf::from(format!("/tmp/coffey-{}.sock", euid.as_raw())),
    }
}

/// `coffey.log`: the daemon's own log. Its rotation keys follow
/// `service_logs` (same defaults and bounds), so it is bounded by default.
fn daemon_log(cx: &mut Ctx<'_>, raw: Option<&RawDaemonLog>, base_dir: &Path) -> DaemonLog {
    let lp = |k: &'static str| [K("coffey"), K("log"), K(k)];
    let path = match raw.and_then(|l| l.path.as_ref()) {
        Some(s) if check_path(cx, &lp("path"), "log.path", s) => Some(resolve(base_dir, s)),
        _ => None,
    };
    if let Some(p) = &path {
        let len = p.as_os_str().len();
        if len > LOG_PATH_MAX {
            cx.err(
                &lp("path"),
                format!(
                    "log path {} is {len} bytes, the most is {LOG_PATH_MAX}",
                    p.display()
                ),
            );
        }
    }
    DaemonLog {
        path,
        console: raw.and_then(|l| l.console).unwrap_or(true),
        max_size: check_max_size(cx, &lp("max_size"), "log", raw.and_then(|l| l.max_size)),
        keep: check_keep(cx, &lp("keep"), "log", raw.and_then(|l| l.keep)),
    }
}

/// `coffey.events`: the event log; its path is required, its rotation
/// keys are `log`'s (same defaults and bounds).
fn event_log(cx: &mut Ctx<'_>, raw: Option<&RawEventLog>, base_dir: &Path) -> Option<EventLog> {
    let raw = raw?;
    let ep = |k: &'static str| [K("coffey"), K("events"), K(k)];
    let max_size = check_max_size(cx, &ep("max_size"), "events", raw.max_size);
    let keep = check_keep(cx, &ep("keep"), "events", raw.keep);
    let Some(s) = raw.path.as_ref() else {
        cx.err(
            &[K("coffey"), K("events")],
            "events needs a `path`".to_string(),
        );
        return None;
    };
    if !check_path(cx, &ep("path"), "events.path", s) {
        return None;
    }
    let path = resolve(base_dir, s);
    let len = path.as_os_str().len();
    if len > LOG_PATH_MAX {
        cx.err(
            &ep("path"),
            format!(
                "events path {} is {len} bytes, the most is {LOG_PATH_MAX}",
                path.display()
            ),
        );
    }
    Some(EventLog {
        path,
        max_size,
        keep,
    })
}

/// `<section>.max_size`: a rotation size, at least 4 KiB.
fn check_max_size(cx: &mut Ctx<'_>, at: &[Seg], section: &str, v: Option<Size>) -> u64 {
    let max_size = v.map_or(DEFAULT_MAX_SIZE, |s| s.0);
    if max_size < MIN_MAX_SIZE {
        cx.err(
            at,
            format!("{section}.max_size is {max_size} bytes; it must be at least 4KiB"),
        );
    }
    max_size
}

/// `<section>.keep`: how many rotated files, at most `MAX_KEEP`.
fn check_keep(cx: &mut Ctx<'_>, at: &[Seg], section: &str, v: Option<u32>) -> u32 {
    let keep = v.unwrap_or(DEFAULT_KEEP);
    if keep > MAX_KEEP {
        cx.err(
            at,
            format!("{section}.keep is {keep}; it must be at most {MAX_KEEP}"),
        );
    }
    keep
}

/// The `coffey:` section. Limits are filled in later (they need the
/// service count).
pub(super) fn build_globals(
    path: &Path,
    raw: Option<&RawGlobal>,
    base_dir: &Path,
    srcs: &[Src],
    target: &Target,
    sink: &mut Sink,
) -> Config {
    let default = RawGlobal::default();
    let raw = raw.unwrap_or(&default);
    let empty = Src {
        file: path.to_path_buf(),
        outline: Outline::new(""),
        tainted: BTreeSet::new(),
    };
    let src = srcs.first().unwrap_or(&empty);
    let mut cx = Ctx {
        sink,
        src,
        prefix: &[],
        service: None,
        target,
    };
    let cx = &mut cx;
    let socket = socket(cx, raw.socket.as_deref(), base_dir);
    let pid_file = match &raw.pid_file {
        Some(s) if check_path(cx, &g("pid_file"), "pid_file", s) => Some(resolve(base_dir, s)),
        _ => None,
    };
    let socket_group = socket_group(cx, raw.socket_group.as_deref(), target);
    let services_dir = match &raw.services_dir {
        Some(s) if check_path(cx, &g("services_dir"), "services_dir", s) => resolve(base_dir, s),
        _ => base_dir.join("services.d"),
    };
    let log = daemon_log(cx, raw.log.as_ref(), base_dir);
    let events = event_log(cx, raw.events.as_ref(), base_dir);
    let service_logs = service_logs(cx, raw.service_logs.as_ref(), base_dir);
    let hostname = hostname(cx, raw.hostname.as_ref());
    let emergency = emergency(cx, raw.emergency.as_deref());
    let mounts = build_mounts(cx, raw.mounts.as_ref());
    let main = main_name(cx, raw.main.as_ref());

    Config {
        path: path.to_path_buf(),
        socket,
        pid_file,
        socket_group,
        services_dir,
        log,
        events,
        service_logs,
        limits: Limits {
            services: 0,
            clients: DEFAULT_CLIENTS,
        },
        shutdown_timeout: raw.shutdown_timeout.map_or(DEFAULT_SHUTDOWN, |d| d.0),
        services: Vec::new(),
        hostname,
        emergency,
        early_mounts: raw.early_mounts.unwrap_or(true),
        mounts,
        main,
        cgroup: build_cgroup(cx, raw.cgroup.as_deref()),
        fds: Vec::new(),
    }
}

/// The path of key `k` of the `coffey:` section.
fn g(k: &'static str) -> [Seg; 2] {
    [K("coffey"), K(k)]
}

/// `coffey.socket`, resolved against the config's directory; it must fit
/// `sun_path`.
fn socket(cx: &mut Ctx, raw: Option<&str>, base_dir: &Path) -> PathBuf {
    let Some(s) = raw.filter(|s| check_path(cx, &g("socket"), "socket", s)) else {
        return default_socket();
    };
    let p = resolve(base_dir, s);
    let len = p.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        cx.err(
            &g("socket"),
            format!("socket path is {len} bytes; a unix socket path is at most {MAX_SOCKET_PATH}"),
        );
    }
    p
}

/// `coffey.socket_group`, resolved on the target.
fn socket_group(cx: &mut Ctx, raw: Option<&str>, target: &Target) -> Option<(String, u32)> {
    match target.group(raw?) {
        Ok(grp) => Some(grp),
        Err(e) => {
            cx.err(&g("socket_group"), e);
            None
        }
    }
}

/// `coffey.service_logs`: the defaults each service's `log:` inherits.
fn service_logs(cx: &mut Ctx, sl: Option<&RawServiceLogs>, base_dir: &Path) -> ServiceLogs {
    let slp = |k: &'static str| [K("coffey"), K("service_logs"), K(k)];
    let dir = match sl.and_then(|s| s.dir.as_ref()) {
        Some(s) if check_path(cx, &slp("dir"), "service_logs.dir", s) => Some(resolve(base_dir, s)),
        _ => None,
    };
    let max_size = check_max_size(
        cx,
        &slp("max_size"),
        "service_logs",
        sl.and_then(|s| s.max_size),
    );
    let keep = check_keep(cx, &slp("keep"), "service_logs", sl.and_then(|s| s.keep));
    let buffer = match sl.and_then(|s| s.buffer) {
        Some(b) => check_buffer(cx, &slp("buffer"), "service_logs.buffer", b.0),
        None => DEFAULT_BUFFER,
    };
    ServiceLogs {
        dir,
        max_size,
        keep,
        buffer,
    }
}

/// `coffey.hostname`, when it is one `sethostname` takes.
fn hostname(cx: &mut Ctx, raw: Option<&String>) -> Option<String> {
    raw.and_then(|h| match check_hostname(h) {
        Ok(()) => Some(h.clone()),
        Err(msg) => {
            cx.err(&g("hostname"), msg);
            None
        }
    })
}

/// `coffey.main`: the container's service (that it is defined is a cross
/// check).
fn main_name(cx: &mut Ctx, raw: Option<&String>) -> Option<String> {
    match raw {
        Some(m) if m.is_empty() => {
            cx.err(&g("main"), "main must not be empty".to_owned());
            None
        }
        m => m.cloned(),
    }
}

/// `coffey.emergency`: an absolute path, else the default shell.
fn emergency(cx: &mut Ctx, raw: Option<&str>) -> PathBuf {
    match raw {
        Some(e) if check_path(cx, &g("emergency"), "emergency", e) => {
            if Path::new(e).is_absolute() {
                PathBuf::from(e)
            } else {
                cx.err(
                    &g("emergency"),
                    format!("emergency shell '{e}' must be an absolute path"),
                );
                PathBuf::from(DEFAULT_EMERGENCY)
            }
        }
        _ => PathBuf::from(DEFAULT_EMERGENCY),
    }
}

/// `coffey.cgroup`: an absolute path (whether it is a delegated cgroup v2
/// directory is a fact of the running system: the daemon checks and logs).
fn build_cgroup(cx: &mut Ctx, raw: Option<&str>) -> Option<PathBuf> {
    let at = [K("coffey"), K("cgroup")];
    let s = raw?;
    if !check_path(cx, &at, "cgroup", s) {
        return None;
    }
    if !s.starts_with('/') {
        cx.err(
            &at,
            format!("cgroup '{s}' must be an absolute path (e.g. /sys/fs/cgroup/coffey)"),
        );
        return None;
    }
    if s.len() > CGROUP_PATH_MAX {
        cx.err(
            &at,
            format!(
                "cgroup path is {} bytes; at most {CGROUP_PATH_MAX}",
                s.len()
            ),
        );
        return None;
    }
    Some(PathBuf::from(s))
}

/// Longest `coffey.cgroup` (the daemon keeps it in a fixed buffer).
const CGROUP_PATH_MAX: usize = 200;

/// A hostname: 1..=64 of `[A-Za-z0-9.-]`, not starting with '-' or '.'
/// (sethostname takes up to `HOST_NAME_MAX` bytes; the character set is
/// RFC 1123's, which is what `hostname(1)` and DHCP clients accept).
fn check_hostname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("hostname must not be empty".to_owned());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
    {
        return Err(format!(
            "hostname '{name}' has invalid characters (allowed: A-Z a-z 0-9 . -)"
        ));
    }
    if name.len() > MAX_HOSTNAME_LEN {
        return Err(format!(
            "hostname '{name}' is too long ({} characters, at most {MAX_HOSTNAME_LEN})",
            name.len()
        ));
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err(format!("hostname '{name}' must not start with '.' or '-'"));
    }
    Ok(())
}
