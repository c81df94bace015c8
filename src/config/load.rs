//! Validation: raw structs -> spec types, every problem reported.
//!
//! Order of work: parse the main file (syntax, then typed with recovery),
//! build the global section, list and parse the drop-ins, build each service
//! on its own (so one broken service never hides another's errors), then the
//! cross-service checks (duplicates, dependencies, cycles, capacity). All
//! defaults live here as named constants; docs/CONFIG.md explains each.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use nix::unistd;
use serde::de::DeserializeOwned;
use serde_norway::Value;

use super::limits::{
    EXEC_ARENA, LOG_PATH_MAX, MAX_ARGS, MAX_DEPS, MAX_ENV_EXTRA, MAX_GROUPS, NAME_MAX,
};
use super::locate::{clean_message, normalize, parse_recovering, Outline, Seg};
use super::raw::{
    List, RawCheck, RawCheckType, RawCommand, RawCondition, RawDaemonLog, RawFile, RawGlobal,
    RawKind, RawMount, RawRestart, RawRlimits, RawService, Size,
};
use super::spec::{
    Backoff, Check, CheckKind, Condition, Config, DaemonLog, Dep, Healthcheck, Kind, Limits,
    Millis, Mount, Restart, Rlimit, ServiceLog, ServiceLogs, ServiceSpec,
};
use super::target::{Target, UserEnt};
use super::units::{fmt_ms, RLIM_UNLIMITED};
use super::{Diag, Severity};

/// Ceilings of `limits.services` and `limits.clients` (limits.rs).
pub use super::limits::{MAX_CLIENTS, MAX_SERVICES};
/// Smallest and largest per-service log ring, bytes.
pub const MIN_BUFFER: u64 = 256;
pub const MAX_BUFFER: u64 = 16 << 20;

const SERVICE_HEADROOM: u32 = 8;
const DEFAULT_CLIENTS: u32 = 8;
const DEFAULT_BUFFER: u32 = 4096;
const DEFAULT_MAX_SIZE: u64 = 1 << 20;
const MIN_MAX_SIZE: u64 = 4096;
const DEFAULT_KEEP: u32 = 5;
const MAX_KEEP: u32 = 1000;
const DEFAULT_SHUTDOWN: Millis = 30_000;
const DEFAULT_BACKOFF_INITIAL: Millis = 1_000;
const DEFAULT_BACKOFF_MAX: Millis = 60_000;
const DEFAULT_BACKOFF_MULTIPLIER: f64 = 2.0;
const MAX_BACKOFF_MULTIPLIER: f64 = 100.0;
const DEFAULT_BACKOFF_RESET: Millis = 10_000;
const DEFAULT_STOP_TIMEOUT: Millis = 10_000;
const DEFAULT_CHECK_INTERVAL: Millis = 10_000;
const DEFAULT_CHECK_TIMEOUT: Millis = 5_000;
const DEFAULT_CHECK_RETRIES: u32 = 3;
const DEFAULT_CHECK_SUCCESS_THRESHOLD: u32 = 1;
const DEFAULT_HTTP_PORT: u16 = 80;
const MIN_HTTP_STATUS: u16 = 100;
const MAX_HTTP_STATUS: u16 = 599;
/// A notification fd: above stdin/stdout/stderr, and small enough to stay
/// clear of whatever the service opens itself (s6 and dinit take any fd).
const MIN_NOTIFY_FD: u32 = 3;
const MAX_NOTIFY_FD: u32 = 255;
const MAX_NAME_LEN: usize = NAME_MAX;
/// `sun_path` is 108 bytes on Linux, including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;
/// Linux `HOST_NAME_MAX`.
const MAX_HOSTNAME_LEN: usize = 64;
/// The emergency shell: what busybox init and sysvinit's sulogin run.
const DEFAULT_EMERGENCY: &str = "/bin/sh";

use Seg::{I, K};

/// Collects diagnostics; remembers file order for sorting.
#[derive(Default)]
struct Sink {
    diags: Vec<Diag>,
    files: Vec<PathBuf>,
}

impl Sink {
    fn add(
        &mut self,
        severity: Severity,
        file: &Path,
        (line, col): (usize, usize),
        service: Option<&str>,
        message: String,
    ) {
        self.diags.push(Diag {
            severity,
            file: file.to_path_buf(),
            line,
            col,
            service: service.map(str::to_owned),
            message,
        });
    }

    fn errors(&self) -> usize {
        self.diags
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    fn sorted(mut self) -> Vec<Diag> {
        let files = self.files;
        let rank = |p: &Path| files.iter().position(|f| f == p).unwrap_or(usize::MAX);
        self.diags.sort_by_key(|d| (rank(&d.file), d.line, d.col));
        self.diags
    }
}

/// One parsed file.
struct Src {
    file: PathBuf,
    outline: Outline,
    /// Lines blanked by error recovery.
    tainted: BTreeSet<usize>,
}

impl Src {
    fn pos(&self, path: &[Seg]) -> (usize, usize) {
        self.outline.locate(path)
    }
}

/// Reporting context for one service (or the global section).
struct Ctx<'a> {
    sink: &'a mut Sink,
    src: &'a Src,
    /// Where the service lives in its file (`services[i]`, or the root).
    prefix: &'a [Seg],
    service: Option<String>,
    target: &'a Target,
}

impl Ctx<'_> {
    fn at(&self, path: &[Seg]) -> (usize, usize) {
        let mut full = self.prefix.to_vec();
        full.extend_from_slice(path);
        self.src.outline.locate(&full)
    }

    fn err(&mut self, path: &[Seg], msg: String) {
        let pos = self.at(path);
        self.sink.add(
            Severity::Error,
            &self.src.file,
            pos,
            self.service.as_deref(),
            msg,
        );
    }

    fn warn(&mut self, path: &[Seg], msg: String) {
        let pos = self.at(path);
        self.sink.add(
            Severity::Warning,
            &self.src.file,
            pos,
            self.service.as_deref(),
            msg,
        );
    }

    /// A fact about the target system (see `target.rs`): an error for an
    /// image (`validate --root`), a warning on this host.
    fn finding(&mut self, path: &[Seg], msg: &str) {
        let text = format!("{msg} ({})", self.target.place());
        if self.target.strict() {
            self.err(path, text);
        } else {
            self.warn(path, text);
        }
    }

    /// Whether the entry at `path` was blanked by error recovery.
    fn tainted(&self, path: &[Seg]) -> bool {
        self.src.tainted.contains(&self.at(path).0)
    }

    /// Whether the key at `path` is in the source and was blanked by error
    /// recovery (so its absence is not a second problem). A key that was
    /// never written is missing even when a sibling was blanked.
    fn blanked(&self, path: &[Seg]) -> bool {
        let mut full = self.prefix.to_vec();
        full.extend_from_slice(path);
        self.src.outline.has(&full) && self.tainted(path)
    }
}

/// Defaults a service inherits from the global section.
struct Globals<'t> {
    target: &'t Target,
    base_dir: PathBuf,
    log_dir: Option<PathBuf>,
    buffer: u32,
    console: bool,
    /// `coffey.cgroup` is set (for the `resources:` warning).
    cgroup: bool,
}

/// A built service and what the cross checks need to know about it.
struct Entry {
    spec: ServiceSpec,
    src: usize,
    /// Path of the service inside its file.
    prefix: Vec<Seg>,
    /// The spec has a usable name (cross checks skip it otherwise).
    named: bool,
    /// Error recovery blanked part of it: skip checks that could cascade.
    tainted: bool,
    /// For each `spec.depends_on[k]`, its index in the YAML list.
    dep_items: Vec<usize>,
}

/// Output of parsing one file.
struct Parsed<T> {
    raw: Option<T>,
    value: Value,
    src: Src,
}

fn base_dir_of(path: &Path) -> PathBuf {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if dir.is_absolute() {
        dir
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(&dir))
            .unwrap_or(dir)
    }
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// The index N of a serde path message "services[N]...", and the message
/// without that prefix.
fn split_service_index(msg: &str) -> Option<(usize, String)> {
    let rest = msg.strip_prefix("services[")?;
    let (idx, after) = rest.split_once(']')?;
    let idx: usize = idx.parse().ok()?;
    let after = after
        .strip_prefix('.')
        .or_else(|| after.strip_prefix(": "))
        .unwrap_or(after);
    Some((idx, after.to_owned()))
}

/// Names the service a typed error belongs to: (value, outline, line,
/// message) -> (service, message to print).
type ServiceOf = dyn Fn(&Value, &Outline, usize, &str) -> (Option<String>, String);

/// Parse one file: syntax first (exact position), then typed with recovery.
/// `service_of` names the service an error belongs to, from its message and
/// line.
fn parse_file<T: DeserializeOwned + Default>(
    file: &Path,
    text: &str,
    sink: &mut Sink,
    service_of: &ServiceOf,
) -> Parsed<T> {
    sink.files.push(file.to_path_buf());
    let norm = normalize(text);
    let outline = Outline::new(&norm);
    let mut src = Src {
        file: file.to_path_buf(),
        outline,
        tainted: BTreeSet::new(),
    };
    if let Some(at) = super::guard::too_deep(&norm) {
        let msg = format!(
            "invalid YAML: nested deeper than {} levels",
            super::guard::MAX_FLOW_DEPTH
        );
        sink.add(Severity::Error, file, at, None, msg);
        return Parsed {
            raw: None,
            value: Value::Null,
            src,
        };
    }
    let value = match serde_norway::from_str::<Value>(&norm) {
        Ok(v) => v,
        Err(e) => {
            let (line, col) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            let msg = clean_message(&e.to_string(), line, col);
            sink.add(
                Severity::Error,
                file,
                (line, col),
                None,
                format!("invalid YAML: {msg}"),
            );
            return Parsed {
                raw: None,
                value: Value::Null,
                src,
            };
        }
    };
    if value.is_null() {
        return Parsed {
            raw: Some(T::default()),
            value,
            src,
        };
    }
    let (raw, errors, tainted) = parse_recovering::<T>(&norm);
    for e in errors {
        let (service, message) = service_of(&value, &src.outline, e.line, &e.message);
        let message = explain(&value, message);
        sink.add(
            Severity::Error,
            file,
            (e.line, e.col),
            service.as_deref(),
            message,
        );
    }
    src.tainted = tainted;
    Parsed { raw, value, src }
}

/// A clearer message for shapes users bring from other tools.
fn explain(value: &Value, message: String) -> String {
    if message.starts_with("services: invalid type: map")
        && value.get("services").is_some_and(Value::is_mapping)
    {
        return "services must be a list (- name: ...); a compose-style map of services is not supported"
            .to_owned();
    }
    message
}

/// Names the main-file service an error is in: from serde's `services[N]`
/// path, else from the line.
fn main_service_of(
    value: &Value,
    outline: &Outline,
    line: usize,
    msg: &str,
) -> (Option<String>, String) {
    let name_at = |i: usize| -> Option<String> {
        value
            .get("services")?
            .get(i)?
            .get("name")?
            .as_str()
            .map(str::to_owned)
    };
    if let Some((idx, rest)) = split_service_index(msg) {
        if let Some(name) = name_at(idx) {
            return (Some(name), rest);
        }
        return (None, msg.to_owned());
    }
    let (starts, end) = outline.items(&[K("services")]);
    let idx = starts
        .iter()
        .rposition(|s| *s <= line)
        .filter(|_| line < end);
    (idx.and_then(name_at), msg.to_owned())
}

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

/// Load `text` as the main file at `path`; read drop-ins when asked.
pub(super) fn load_text(
    path: &Path,
    text: &str,
    read_dropins: bool,
    target: &Target,
) -> Result<(Config, Vec<Diag>), Vec<Diag>> {
    let mut sink = Sink::default();
    let base_dir = base_dir_of(path);
    let main: Parsed<RawFile> = parse_file(path, text, &mut sink, &main_service_of);
    // Without a typed main file, cross checks would report noise.
    let incomplete = main.raw.is_none();
    let raw_file = main.raw.unwrap_or_default();
    let mut srcs: Vec<Src> = vec![main.src];

    let mut config = build_globals(
        path,
        raw_file.coffey.as_ref(),
        &base_dir,
        &srcs,
        target,
        &mut sink,
    );
    let globals = Globals {
        target,
        base_dir: base_dir.clone(),
        log_dir: config.service_logs.dir.clone(),
        buffer: config.service_logs.buffer,
        console: config.log.console,
        cgroup: config.cgroup.is_some(),
    };

    let mut entries: Vec<Entry> = Vec::new();
    if let Some(list) = &raw_file.services {
        let (starts, end) = srcs
            .first()
            .map(|s| s.outline.items(&[K("services")]))
            .unwrap_or_default();
        for (i, item) in list.iter().enumerate() {
            let first = starts.get(i).copied().unwrap_or(0);
            let last = starts.get(i + 1).copied().unwrap_or(end);
            let Some(main_src) = srcs.first() else { break };
            let tainted = main_src.tainted.range(first..last).next().is_some();
            let Some(raw) = item else {
                if !tainted {
                    let pos = main_src.pos(&[K("services"), I(i)]);
                    sink.add(
                        Severity::Error,
                        path,
                        pos,
                        None,
                        "empty service entry".to_owned(),
                    );
                }
                continue;
            };
            let entry = build_service(
                raw,
                main_src,
                0,
                vec![K("services"), I(i)],
                tainted,
                None,
                &globals,
                &mut sink,
            );
            entries.push(entry);
        }
    }

    if read_dropins {
        let dir = config.services_dir.clone();
        match list_dropins(&dir) {
            Ok(files) => {
                for file in files {
                    load_dropin(&file, &globals, &mut srcs, &mut entries, &mut sink);
                }
            }
            Err(e) => {
                let pos = srcs
                    .first()
                    .map_or((0, 0), |s| s.pos(&[K("coffey"), K("services_dir")]));
                sink.add(
                    Severity::Error,
                    path,
                    pos,
                    None,
                    format!("cannot read services_dir {}: {e}", dir.display()),
                );
            }
        }
    }

    cross_checks(&entries, &srcs, incomplete, &mut sink);
    check_main(&config, &entries, &srcs, incomplete, &mut sink);
    config.limits = check_limits(&raw_file, entries.len(), &srcs, incomplete, &mut sink);

    if sink.errors() > 0 {
        return Err(sink.sorted());
    }
    config.services = entries.into_iter().map(|e| e.spec).collect();
    Ok((config, sink.sorted()))
}

/// Drop-in files: `*.yaml` / `*.yml` regular files, not hidden, sorted by
/// name. A missing directory means no drop-ins.
fn list_dropins(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.to_string()),
    };
    let mut files = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') || !(name.ends_with(".yaml") || name.ends_with(".yml")) {
            continue;
        }
        let path = entry.path();
        if std::fs::metadata(&path)
            .map(|m| m.is_file())
            .unwrap_or(false)
        {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

fn load_dropin(
    file: &Path,
    globals: &Globals,
    srcs: &mut Vec<Src>,
    entries: &mut Vec<Entry>,
    sink: &mut Sink,
) {
    let text = match std::fs::read(file).map(String::from_utf8) {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            sink.files.push(file.to_path_buf());
            sink.add(
                Severity::Error,
                file,
                (0, 0),
                None,
                format!("file is not valid UTF-8: {e}"),
            );
            return;
        }
        Err(e) => {
            sink.files.push(file.to_path_buf());
            sink.add(
                Severity::Error,
                file,
                (0, 0),
                None,
                format!("cannot read drop-in: {e}"),
            );
            return;
        }
    };
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_owned();
    let stem_for_errors = stem.clone();
    let service_of = move |value: &Value, _: &Outline, _: usize, msg: &str| {
        let name = value
            .get("name")
            .and_then(Value::as_str)
            .map_or_else(|| stem_for_errors.clone(), str::to_owned);
        (Some(name), msg.to_owned())
    };
    let parsed: Parsed<RawService> = parse_file(file, text.as_str(), sink, &service_of);
    let src_idx = srcs.len();
    let tainted = !parsed.src.tainted.is_empty();
    if parsed.value.is_null() && parsed.raw.is_some() {
        sink.add(
            Severity::Error,
            file,
            (1, 1),
            None,
            "empty drop-in: it must hold one service mapping".to_owned(),
        );
        srcs.push(parsed.src);
        return;
    }
    srcs.push(parsed.src);
    let (Some(raw), Some(src)) = (parsed.raw, srcs.get(src_idx)) else {
        return;
    };
    let entry = build_service(
        &raw,
        src,
        src_idx,
        Vec::new(),
        tainted,
        Some(stem.as_str()),
        globals,
        sink,
    );
    entries.push(entry);
}

fn check_path(cx: &mut Ctx, path: &[Seg], what: &str, value: &str) -> bool {
    if value.is_empty() {
        cx.err(path, format!("{what} must not be empty"));
        false
    } else if value.contains('\0') {
        cx.err(path, format!("{what} contains a NUL byte"));
        false
    } else {
        true
    }
}

fn check_buffer(cx: &mut Ctx, path: &[Seg], what: &str, bytes: u64) -> u32 {
    if !(MIN_BUFFER..=MAX_BUFFER).contains(&bytes) {
        cx.err(
            path,
            format!("{what} is {bytes} bytes; it must be between {MIN_BUFFER} B and 16 MiB"),
        );
        return DEFAULT_BUFFER;
    }
    u32::try_from(bytes).unwrap_or(DEFAULT_BUFFER)
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
fn build_globals(
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
    let g = |k: &'static str| [K("coffey"), K(k)];

    let socket = match &raw.socket {
        Some(s) if check_path(&mut cx, &g("socket"), "socket", s) => {
            let p = resolve(base_dir, s);
            let len = p.as_os_str().len();
            if len > MAX_SOCKET_PATH {
                cx.err(
                    &g("socket"),
                    format!(
                        "socket path is {len} bytes; a unix socket path is at most {MAX_SOCKET_PATH}"
                    ),
                );
            }
            p
        }
        _ => default_socket(),
    };
    let pid_file = match &raw.pid_file {
        Some(s) if check_path(&mut cx, &g("pid_file"), "pid_file", s) => Some(resolve(base_dir, s)),
        _ => None,
    };
    let socket_group = match &raw.socket_group {
        Some(name) => match target.group(name) {
            Ok(g) => Some(g),
            Err(e) => {
                cx.err(&g("socket_group"), e);
                None
            }
        },
        None => None,
    };
    let services_dir = match &raw.services_dir {
        Some(s) if check_path(&mut cx, &g("services_dir"), "services_dir", s) => {
            resolve(base_dir, s)
        }
        _ => base_dir.join("services.d"),
    };
    let log = daemon_log(&mut cx, raw.log.as_ref(), base_dir);

    let sl = raw.service_logs.as_ref();
    let slp = |k: &'static str| [K("coffey"), K("service_logs"), K(k)];
    let dir = match sl.and_then(|s| s.dir.as_ref()) {
        Some(s) if check_path(&mut cx, &slp("dir"), "service_logs.dir", s) => {
            Some(resolve(base_dir, s))
        }
        _ => None,
    };
    let max_size = check_max_size(
        &mut cx,
        &slp("max_size"),
        "service_logs",
        sl.and_then(|s| s.max_size),
    );
    let keep = check_keep(
        &mut cx,
        &slp("keep"),
        "service_logs",
        sl.and_then(|s| s.keep),
    );
    let buffer = match sl.and_then(|s| s.buffer) {
        Some(b) => check_buffer(&mut cx, &slp("buffer"), "service_logs.buffer", b.0),
        None => DEFAULT_BUFFER,
    };

    let hostname = raw.hostname.as_ref().and_then(|h| match check_hostname(h) {
        Ok(()) => Some(h.clone()),
        Err(msg) => {
            cx.err(&g("hostname"), msg);
            None
        }
    });
    let emergency = match &raw.emergency {
        Some(e) if check_path(&mut cx, &g("emergency"), "emergency", e) => {
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
    };
    let mounts = build_mounts(&mut cx, raw.mounts.as_ref());
    let main = match &raw.main {
        Some(m) if m.is_empty() => {
            cx.err(&g("main"), "main must not be empty".to_owned());
            None
        }
        m => m.clone(),
    };

    Config {
        path: path.to_path_buf(),
        socket,
        pid_file,
        socket_group,
        services_dir,
        log,
        service_logs: ServiceLogs {
            dir,
            max_size,
            keep,
            buffer,
        },
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
        cgroup: build_cgroup(&mut cx, raw.cgroup.as_deref()),
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
/// Smallest `memory_max`: below it a service is OOM-killed at once.
const MIN_MEMORY_MAX: u64 = 1 << 20;
/// `cpu.weight` range (cgroup v2).
const MAX_CPU_WEIGHT: u64 = 10_000;

/// A service's `resources:`. Outside system mode they need `coffey.cgroup`:
/// without it they are not enforced, which is worth a warning.
fn build_resources(
    cx: &mut Ctx,
    raw: Option<&super::raw::RawResources>,
    cgroup: bool,
) -> super::spec::Resources {
    use super::spec::Resources;
    let Some(r) = raw else {
        return Resources::default();
    };
    let at = |k: &'static str| [K("resources"), K(k)];
    let mut out = Resources::default();
    if let Some(m) = r.memory_max {
        if m.0 < MIN_MEMORY_MAX {
            cx.err(
                &at("memory_max"),
                format!(
                    "memory_max is {} bytes; it must be at least 1MiB (less kills the service at once)",
                    m.0
                ),
            );
        } else {
            out.memory_max = Some(m.0);
        }
    }
    if let Some(p) = r.pids_max {
        match u32::try_from(p) {
            Ok(n) if n >= 1 => out.pids_max = Some(n),
            _ => cx.err(
                &at("pids_max"),
                format!("pids_max is {p}; it must be between 1 and {}", u32::MAX),
            ),
        }
    }
    if let Some(w) = r.cpu_weight {
        if (1..=MAX_CPU_WEIGHT).contains(&w) {
            out.cpu_weight = u32::try_from(w).ok();
        } else {
            cx.err(
                &at("cpu_weight"),
                format!(
                    "cpu_weight is {w}; it must be between 1 and {MAX_CPU_WEIGHT} (default 100)"
                ),
            );
        }
    }
    if out.is_set() && !cgroup {
        cx.warn(
            &[K("resources")],
            "resources are enforced through cgroup v2 only: when coffeyd is PID 1 of a machine, or with `coffey.cgroup` set; otherwise they are ignored (the daemon logs it)"
                .to_owned(),
        );
    }
    out
}

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

/// fstab-style `options` -> (`MS_*` flags, data string). Known flag words
/// set (or, for their opposites, clear) a flag, later words winning; every
/// other word is passed to the filesystem, comma-joined in order.
pub(super) fn parse_mount_options(options: &str) -> (u64, String) {
    use nix::libc;
    let mut flags: u64 = 0;
    let mut data: Vec<&str> = Vec::new();
    for word in options.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let (set, clear): (libc::c_ulong, libc::c_ulong) = match word {
            "ro" => (libc::MS_RDONLY, 0),
            "rw" => (0, libc::MS_RDONLY),
            "nosuid" => (libc::MS_NOSUID, 0),
            "suid" => (0, libc::MS_NOSUID),
            "nodev" => (libc::MS_NODEV, 0),
            "dev" => (0, libc::MS_NODEV),
            "noexec" => (libc::MS_NOEXEC, 0),
            "exec" => (0, libc::MS_NOEXEC),
            "sync" => (libc::MS_SYNCHRONOUS, 0),
            "async" => (0, libc::MS_SYNCHRONOUS),
            "noatime" => (libc::MS_NOATIME, 0),
            "atime" => (0, libc::MS_NOATIME),
            "relatime" => (libc::MS_RELATIME, 0),
            "nodiratime" => (libc::MS_NODIRATIME, 0),
            "remount" => (libc::MS_REMOUNT, 0),
            "bind" => (libc::MS_BIND, 0),
            "rbind" => (libc::MS_BIND | libc::MS_REC, 0),
            // fstab's placeholder (rw,suid,dev,exec,async): nothing to set.
            "defaults" => (0, 0),
            other => {
                data.push(other);
                (0, 0)
            }
        };
        // c_ulong is u32 on 32-bit targets: a lossless widening there.
        #[allow(clippy::unnecessary_cast)]
        let (set, clear) = (set as u64, clear as u64);
        flags = (flags & !clear) | set;
    }
    (flags, data.join(","))
}

/// `coffey.mounts`: each item checked on its own; broken ones are left out.
fn build_mounts(cx: &mut Ctx, list: Option<&List<RawMount>>) -> Vec<Mount> {
    let mut mounts = Vec::new();
    let Some(list) = list else {
        return mounts;
    };
    for (i, item) in list.iter().enumerate() {
        let at = |k: &'static str| [K("coffey"), K("mounts"), I(i), K(k)];
        let item_path = [K("coffey"), K("mounts"), I(i)];
        let Some(raw) = item else {
            if !cx.tainted(&item_path) {
                cx.err(&item_path, "empty mount entry".to_owned());
            }
            continue;
        };
        let mut ok = true;
        let target = match &raw.target {
            None => {
                if !cx.tainted(&at("target")) {
                    cx.err(
                        &item_path,
                        format!("mounts[{i}]: missing required key 'target'"),
                    );
                }
                ok = false;
                PathBuf::new()
            }
            Some(t) => {
                if !check_path(cx, &at("target"), "mount target", t) {
                    ok = false;
                } else if !Path::new(t).is_absolute() {
                    cx.err(
                        &at("target"),
                        format!("mount target '{t}' must be an absolute path"),
                    );
                    ok = false;
                }
                PathBuf::from(t)
            }
        };
        let fstype = match &raw.fstype {
            None => {
                if !cx.tainted(&at("type")) {
                    cx.err(
                        &item_path,
                        format!(
                            "mounts[{i}]: missing required key 'type' (the filesystem type: proc, tmpfs, ext4, ...)"
                        ),
                    );
                }
                ok = false;
                String::new()
            }
            Some(t) => {
                if !check_path(cx, &at("type"), "mount type", t) {
                    ok = false;
                }
                t.clone()
            }
        };
        let source = match &raw.source {
            Some(s) => {
                if !check_path(cx, &at("source"), "mount source", s) {
                    ok = false;
                }
                s.clone()
            }
            None => fstype.clone(),
        };
        let options = raw.options.as_deref().unwrap_or_default();
        if options.contains('\0') {
            cx.err(
                &at("options"),
                "mount options contain a NUL byte".to_owned(),
            );
            ok = false;
        }
        let (flags, data) = parse_mount_options(options);
        if ok {
            mounts.push(Mount {
                source,
                target,
                fstype,
                flags,
                data,
            });
        }
    }
    mounts
}

/// `coffey.main` must name a service (checked once every file is read).
fn check_main(config: &Config, entries: &[Entry], srcs: &[Src], incomplete: bool, sink: &mut Sink) {
    let Some(main) = &config.main else { return };
    if incomplete || entries.iter().any(|e| e.spec.name == *main) {
        return;
    }
    // A service whose name was lost to error recovery may be the one.
    if entries.iter().any(|e| e.tainted && e.spec.name.is_empty()) {
        return;
    }
    let Some(src) = srcs.first() else { return };
    sink.add(
        Severity::Error,
        &src.file,
        src.pos(&[K("coffey"), K("main")]),
        None,
        format!("main service '{main}' is not defined"),
    );
}

fn check_limits(
    raw: &RawFile,
    count: usize,
    srcs: &[Src],
    incomplete: bool,
    sink: &mut Sink,
) -> Limits {
    let limits = raw.coffey.as_ref().and_then(|c| c.limits.as_ref());
    let count32 = u32::try_from(count).unwrap_or(u32::MAX);
    let Some(src) = srcs.first() else {
        return Limits {
            services: count32,
            clients: DEFAULT_CLIENTS,
        };
    };
    let lp = |k: &'static str| [K("coffey"), K("limits"), K(k)];
    let mut add = |path: &[Seg], msg: String| {
        sink.add(Severity::Error, &src.file, src.pos(path), None, msg);
    };
    let services = match limits.and_then(|l| l.services) {
        Some(n) => {
            if n > MAX_SERVICES {
                add(
                    &lp("services"),
                    format!("limits.services is {n}; the maximum is {MAX_SERVICES}"),
                );
            } else if n < count32 && !incomplete {
                add(
                    &lp("services"),
                    format!(
                        "capacity below the number of services: limits.services is {n} but {count} services are defined"
                    ),
                );
            }
            n
        }
        None => {
            if count32 > MAX_SERVICES {
                add(
                    &[K("services")],
                    format!("too many services ({count}); the maximum is {MAX_SERVICES}"),
                );
            }
            count32.saturating_add(SERVICE_HEADROOM).min(MAX_SERVICES)
        }
    };
    let clients = limits.and_then(|l| l.clients).unwrap_or(DEFAULT_CLIENTS);
    if !(1..=MAX_CLIENTS).contains(&clients) {
        add(
            &lp("clients"),
            format!("limits.clients is {clients}; it must be between 1 and {MAX_CLIENTS}"),
        );
    }
    Limits { services, clients }
}

/// Service names: 1..=31 of [A-Za-z0-9_.-], not starting with '.' or '-'
/// (they become file names, and '-' would read as a CLI option).
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("service name is empty".to_owned());
    }
    let len = name.chars().count();
    if len > MAX_NAME_LEN {
        return Err(format!(
            "service name '{name}' is too long ({len} characters, at most {MAX_NAME_LEN})"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(format!(
            "service name '{name}' has invalid characters (allowed: A-Z a-z 0-9 _ . -)"
        ));
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err(format!(
            "service name '{name}' must not start with '.' or '-'"
        ));
    }
    Ok(())
}

fn dir_exists(target: &Target, p: &Path) -> bool {
    match target {
        Target::Host => p.is_dir(),
        Target::Root(root) => super::target::in_root(root, p).is_ok_and(|r| r.is_dir()),
    }
}

/// What `user:` and `group:` resolve to.
#[derive(Default)]
struct Creds {
    user: Option<(String, u32, u32)>,
    group: Option<(String, u32)>,
    groups: Vec<u32>,
    login_env: Vec<String>,
    /// Why the service cannot start as configured ("user not found: x").
    error: Option<String>,
}

/// `user:` gives a login environment, as login(1), su - and systemd's
/// `User=` do: HOME, USER, LOGNAME and SHELL from the passwd entry, unless
/// `env` sets them.
fn login_env(u: &UserEnt, env_keys: &BTreeMap<String, usize>) -> Vec<String> {
    let home = if u.home.is_empty() { "/" } else { &u.home };
    let shell = if u.shell.is_empty() {
        "/bin/sh"
    } else {
        &u.shell
    };
    [
        ("HOME", home),
        ("USER", &u.name),
        ("LOGNAME", &u.name),
        ("SHELL", shell),
    ]
    .into_iter()
    .filter(|(k, _)| !env_keys.contains_key(*k))
    .map(|(k, v)| format!("{k}={v}"))
    .collect()
}

/// Resolves `user:` and `group:` on the target. A missing user or group is
/// a finding (see `target.rs`): the service is kept, marked so that its
/// start fails with the reason, and retried; a reload resolves it again.
fn build_creds(cx: &mut Ctx, raw: &RawService, env_keys: &BTreeMap<String, usize>) -> Creds {
    let mut c = Creds::default();
    let mut ent = None;
    if let Some(u) = &raw.user {
        match cx.target.user(u) {
            Ok(e) => {
                if !e.known {
                    cx.warn(
                        &[K("user")],
                        format!(
                            "uid {} has no passwd entry; primary gid defaults to {}",
                            e.uid, e.gid
                        ),
                    );
                }
                c.user = Some((e.name.clone(), e.uid, e.gid));
                ent = Some(e);
            }
            Err(msg) => {
                cx.finding(&[K("user")], &msg);
                c.error = Some(msg);
            }
        }
    }
    if let Some(gname) = &raw.group {
        match cx.target.group(gname) {
            Ok(gr) => c.group = Some(gr),
            Err(msg) => {
                cx.finding(&[K("group")], &msg);
                c.error.get_or_insert(msg);
            }
        }
    }
    let Some(e) = ent.filter(|e| e.known) else {
        return c;
    };
    c.login_env = login_env(&e, env_keys);
    let gid = c.group.as_ref().map_or(e.gid, |(_, gid)| *gid);
    match cx.target.groups_of(&e.name, gid) {
        Ok(gids) if gids.len() > MAX_GROUPS => {
            let msg = format!(
                "user '{}' is in {} groups, the most is {MAX_GROUPS}",
                e.name,
                gids.len()
            );
            cx.finding(&[K("user")], &msg);
            c.error.get_or_insert(msg);
        }
        Ok(gids) => c.groups = gids,
        Err(msg) => {
            cx.finding(&[K("user")], &msg);
            c.error.get_or_insert(msg);
        }
    }
    c
}

/// The per-service exec buffer holds the binary path, the working dir,
/// the args and the env entries (login env included), each with a NUL.
/// Reported at the entry that crosses the limit.
fn check_exec_size(
    cx: &mut Ctx,
    binary: &Path,
    working_dir: Option<&Path>,
    args: &[String],
    env: &[String],
    login: &[String],
) {
    if args.len() > MAX_ARGS {
        cx.err(
            &[K("args")],
            format!("args: {} entries, the most is {MAX_ARGS}", args.len()),
        );
    }
    if env.len() > MAX_ENV_EXTRA {
        cx.err(
            &[K("env")],
            format!("env: {} entries, the most is {MAX_ENV_EXTRA}", env.len()),
        );
    }
    let cwd = working_dir.map_or(1, |w| w.as_os_str().len());
    let mut total = binary.as_os_str().len() + 1 + cwd + 1;
    let mut at: Option<Vec<Seg>> = (total > EXEC_ARENA).then(|| vec![K("binary")]);
    let items = args
        .iter()
        .enumerate()
        .map(|(i, a)| (vec![K("args"), I(i)], a))
        .chain(
            env.iter()
                .enumerate()
                .map(|(i, e)| (vec![K("env"), I(i)], e)),
        )
        .chain(login.iter().map(|e| (vec![K("user")], e)));
    for (path, item) in items {
        total += item.len() + 1;
        if total > EXEC_ARENA && at.is_none() {
            at = Some(path);
        }
    }
    if let Some(path) = at {
        let with_login = if login.is_empty() {
            ""
        } else {
            " (with the HOME, USER, LOGNAME and SHELL of `user`)"
        };
        cx.err(
            &path,
            format!(
                "binary, working_dir, args and env{with_login} take {total} bytes, the most is {EXEC_ARENA} (8 KiB)"
            ),
        );
    }
}

/// An exec check runs with the service's env and working dir in its own
/// exec buffer of the same size; its argv includes the program.
fn check_command_size(
    cx: &mut Ctx,
    which: &'static str,
    command: &[String],
    working_dir: Option<&Path>,
    (env, login): (&[String], &[String]),
) {
    let at = [K("healthcheck"), K(which), K("command")];
    if command.len() > MAX_ARGS + 1 {
        cx.err(
            &at,
            format!(
                "healthcheck.{which}.command: {} entries, the most is {}",
                command.len(),
                MAX_ARGS + 1
            ),
        );
    }
    let cwd = working_dir.map_or(1, |w| w.as_os_str().len()) + 1;
    let total: usize = cwd
        + command
            .iter()
            .chain(env)
            .chain(login)
            .map(|x| x.len() + 1)
            .sum::<usize>();
    if total > EXEC_ARENA {
        cx.err(
            &at,
            format!(
                "healthcheck.{which}.command, working_dir and env take {total} bytes, the most is {EXEC_ARENA} (8 KiB)"
            ),
        );
    }
}

/// Build one service. Never fails: problems go to the sink, and the entry is
/// still returned so other services' dependencies on it resolve.
#[allow(clippy::too_many_arguments)]
fn build_service(
    raw: &RawService,
    src: &Src,
    src_idx: usize,
    prefix: Vec<Seg>,
    tainted: bool,
    fallback_name: Option<&str>,
    g: &Globals,
    sink: &mut Sink,
) -> Entry {
    let name = raw
        .name
        .clone()
        .or_else(|| fallback_name.map(str::to_owned));
    let mut cx = Ctx {
        sink,
        src,
        prefix: &prefix,
        service: name.clone(),
        target: g.target,
    };
    let mut named = false;
    match &name {
        None => {
            if !cx.blanked(&[K("name")]) {
                cx.err(&[], "missing required key 'name'".to_owned());
            }
        }
        Some(n) => match check_name(n) {
            Ok(()) => named = true,
            Err(msg) => {
                if raw.name.is_none() {
                    cx.err(
                        &[],
                        format!("{msg} (the name comes from the file name; set `name:`)"),
                    );
                } else {
                    cx.err(&[K("name")], msg);
                }
            }
        },
    }
    let name = name.unwrap_or_default();

    // binary
    let binary = match &raw.binary {
        None => {
            if !cx.blanked(&[K("binary")]) {
                cx.err(&[], "missing required key 'binary'".to_owned());
            }
            PathBuf::new()
        }
        Some(b) => {
            let p = PathBuf::from(b);
            if check_path(&mut cx, &[K("binary")], "binary", b) {
                if !p.is_absolute() {
                    cx.err(
                        &[K("binary")],
                        format!("binary '{b}' must be an absolute path"),
                    );
                } else if let Err(why) = g.target.executable(&p) {
                    cx.finding(
                        &[K("binary")],
                        &format!("binary {b} is not executable: {why}"),
                    );
                }
            }
            p
        }
    };

    let args = list_strings(&mut cx, raw.args.as_ref(), "args", |cx, path, a| {
        if a.contains('\0') {
            cx.err(path, "argument contains a NUL byte".to_owned());
        }
    });
    let mut env_keys: BTreeMap<String, usize> = BTreeMap::new();
    let env = list_strings(&mut cx, raw.env.as_ref(), "env", |cx, path, e| {
        match e.split_once('=') {
            None => cx.err(path, format!("env entry '{e}' is not KEY=VALUE")),
            Some(("", _)) => cx.err(path, format!("env entry '{e}' has an empty key")),
            Some((k, _)) => {
                if e.contains('\0') {
                    cx.err(path, "env entry contains a NUL byte".to_owned());
                }
                if env_keys.insert(k.to_owned(), 0).is_some() {
                    cx.warn(
                        path,
                        format!("env key '{k}' is set twice; the last one wins"),
                    );
                }
            }
        }
    });

    let working_dir = match &raw.working_dir {
        Some(w) if check_path(&mut cx, &[K("working_dir")], "working_dir", w) => {
            let p = PathBuf::from(w);
            if !p.is_absolute() {
                cx.err(
                    &[K("working_dir")],
                    format!("working_dir '{w}' must be an absolute path"),
                );
            } else if !dir_exists(g.target, &p) {
                cx.warn(
                    &[K("working_dir")],
                    format!("working_dir {w} is not a directory (yet); starting will fail"),
                );
            }
            Some(p)
        }
        _ => None,
    };

    let creds = build_creds(&mut cx, raw, &env_keys);
    check_exec_size(
        &mut cx,
        &binary,
        working_dir.as_deref(),
        &args,
        &env,
        &creds.login_env,
    );

    let kind = match raw.kind {
        Some(RawKind::Oneshot) => Kind::Oneshot,
        Some(RawKind::Service) | None => Kind::Service,
    };
    let restart = match raw.restart {
        Some(RawRestart::Always) => Restart::Always,
        Some(RawRestart::OnFailure) => Restart::OnFailure,
        Some(RawRestart::Never) => Restart::Never,
        None if kind == Kind::Oneshot => Restart::Never,
        None => Restart::Always,
    };
    if kind == Kind::Oneshot && restart == Restart::Always {
        cx.warn(
            &[K("restart")],
            "oneshot with restart: always re-runs forever (use a service, or restart: on-failure)"
                .to_owned(),
        );
    }

    // backoff
    let rb = raw.backoff.as_ref();
    let bp = |k: &'static str| [K("backoff"), K(k)];
    let backoff = Backoff {
        initial: rb
            .and_then(|b| b.initial)
            .map_or(DEFAULT_BACKOFF_INITIAL, |d| d.0),
        max: rb.and_then(|b| b.max).map_or(DEFAULT_BACKOFF_MAX, |d| d.0),
        multiplier: rb
            .and_then(|b| b.multiplier)
            .unwrap_or(DEFAULT_BACKOFF_MULTIPLIER),
        reset_after: rb
            .and_then(|b| b.reset_after)
            .map_or(DEFAULT_BACKOFF_RESET, |d| d.0),
    };
    if backoff.initial == 0 {
        // Allowed (some want a restart at once), but say what it costs.
        cx.warn(
            &bp("initial"),
            "backoff.initial is 0: a service that keeps crashing is restarted at once, in a loop without delay"
                .to_owned(),
        );
    }
    if backoff.initial > backoff.max {
        let at = if rb.and_then(|b| b.max).is_some() {
            bp("max")
        } else {
            bp("initial")
        };
        cx.err(
            &at,
            format!(
                "backoff.initial ({}) is larger than backoff.max ({})",
                fmt_ms(backoff.initial),
                fmt_ms(backoff.max)
            ),
        );
    }
    let m = backoff.multiplier;
    if !m.is_finite() || m < 1.0 {
        cx.err(
            &bp("multiplier"),
            format!("backoff.multiplier must be a finite number >= 1.0 (got {m})"),
        );
    } else if m > MAX_BACKOFF_MULTIPLIER {
        cx.err(
            &bp("multiplier"),
            format!("backoff.multiplier must be at most {MAX_BACKOFF_MULTIPLIER} (got {m})"),
        );
    }

    // depends_on
    let mut depends_on = Vec::new();
    let mut dep_items = Vec::new();
    if let Some(list) = &raw.depends_on {
        let mut seen = BTreeSet::new();
        for (i, item) in list.iter().enumerate() {
            let path = [K("depends_on"), I(i)];
            let Some(dep) = item else {
                if !cx.tainted(&path) {
                    cx.err(&path, "empty depends_on entry".to_owned());
                }
                continue;
            };
            if named && dep.name == name {
                cx.err(&path, "depends on itself".to_owned());
                continue;
            }
            if !seen.insert(dep.name.clone()) {
                cx.warn(&path, format!("dependency '{}' is listed twice", dep.name));
                continue;
            }
            let condition = match dep.condition {
                Some(RawCondition::Healthy) => Condition::Healthy,
                Some(RawCondition::Completed) => Condition::Completed,
                Some(RawCondition::Started) | None => Condition::Started,
            };
            depends_on.push(Dep {
                name: dep.name.clone(),
                condition,
            });
            dep_items.push(i);
        }
    }
    if depends_on.len() > MAX_DEPS {
        cx.err(
            &[K("depends_on")],
            format!(
                "depends_on: {} entries, the most is {MAX_DEPS}",
                depends_on.len()
            ),
        );
    }

    // log
    let rl = raw.log.as_ref();
    let file = match rl.and_then(|l| l.file.as_ref()) {
        Some(f) if check_path(&mut cx, &[K("log"), K("file")], "log.file", f) => {
            let base = g.log_dir.as_deref().unwrap_or(&g.base_dir);
            Some(resolve(base, f))
        }
        Some(_) => None,
        None if named => g.log_dir.as_ref().map(|d| d.join(format!("{name}.log"))),
        None => None,
    };
    if let Some(f) = &file {
        let len = f.as_os_str().len();
        if len > LOG_PATH_MAX {
            let (path, from): (&[Seg], &str) = if rl.and_then(|l| l.file.as_ref()).is_some() {
                (&[K("log"), K("file")], "")
            } else {
                (&[], " (from coffey.service_logs.dir)")
            };
            cx.err(
                path,
                format!(
                    "log file path {}{from} is {len} bytes, the most is {LOG_PATH_MAX}",
                    f.display()
                ),
            );
        }
    }
    let buffer = match rl.and_then(|l| l.buffer) {
        Some(b) => check_buffer(&mut cx, &[K("log"), K("buffer")], "log.buffer", b.0),
        None => g.buffer,
    };
    let log = ServiceLog {
        file,
        console: rl.and_then(|l| l.console).unwrap_or(g.console),
        buffer,
    };

    // healthcheck
    let rh = raw.healthcheck.as_ref();
    let healthcheck = Healthcheck {
        readiness: rh
            .and_then(|h| h.readiness.as_ref())
            .and_then(|c| build_check(&mut cx, c, "readiness")),
        liveness: rh
            .and_then(|h| h.liveness.as_ref())
            .and_then(|c| build_check(&mut cx, c, "liveness")),
    };
    for (which, c) in [
        ("readiness", &healthcheck.readiness),
        ("liveness", &healthcheck.liveness),
    ] {
        if let Some(Check {
            kind: CheckKind::Exec { command },
            ..
        }) = c
        {
            let own = (env.as_slice(), creds.login_env.as_slice());
            check_command_size(&mut cx, which, command, working_dir.as_deref(), own);
        }
    }
    if restart == Restart::Never && healthcheck.liveness.is_some() {
        cx.warn(
            &[K("healthcheck"), K("liveness")],
            "liveness check with restart: never: a failed check stops the service for good"
                .to_owned(),
        );
    }
    let rlimits = rlimits(&mut cx, raw.rlimits.as_ref());
    let start_timeout = raw.start_timeout.map(|d| d.0);
    if start_timeout == Some(0) {
        cx.err(
            &[K("start_timeout")],
            "start_timeout must be at least 1ms (leave it out to wait forever)".to_owned(),
        );
    } else if start_timeout.is_some() && rh.and_then(|h| h.readiness.as_ref()).is_none() {
        cx.warn(
            &[K("start_timeout")],
            "start_timeout has no effect without a readiness check (the service is ready once started)"
                .to_owned(),
        );
    }

    let resources = build_resources(&mut cx, raw.resources.as_ref(), g.cgroup);
    let spec = ServiceSpec {
        name,
        binary,
        args,
        env,
        working_dir,
        user: creds.user,
        group: creds.group,
        supplementary_gids: creds.groups,
        login_env: creds.login_env,
        cred_error: creds.error,
        umask: raw.umask.map(|u| u.0),
        rlimits,
        kind,
        restart,
        backoff,
        max_restarts: raw.max_restarts.unwrap_or(0),
        stop_signal: raw
            .stop_signal
            .map_or(nix::sys::signal::Signal::SIGTERM as i32, |s| s.0),
        stop_timeout: raw.stop_timeout.map_or(DEFAULT_STOP_TIMEOUT, |d| d.0),
        resources,
        depends_on,
        log,
        healthcheck,
        start_timeout,
    };
    Entry {
        spec,
        src: src_idx,
        prefix,
        named,
        tainted,
        dep_items,
    }
}

/// A list of strings, with null items reported (unless recovery made them).
fn list_strings(
    cx: &mut Ctx,
    list: Option<&Vec<Option<String>>>,
    key: &'static str,
    mut check: impl FnMut(&mut Ctx, &[Seg], &str),
) -> Vec<String> {
    let mut out = Vec::new();
    for (i, item) in list.into_iter().flatten().enumerate() {
        let path = [K(key), I(i)];
        match item {
            Some(s) => {
                check(cx, &path, s);
                out.push(s.clone());
            }
            None => {
                if !cx.tainted(&path) {
                    cx.err(
                        &path,
                        format!("empty {key} entry (write \"\" for an empty string)"),
                    );
                }
            }
        }
    }
    out
}

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
fn parse_url(url: &str) -> Result<(SocketAddr, String, String), String> {
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
fn parse_address(addr: &str) -> Result<SocketAddr, String> {
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

/// The argv of an exec check; None (reported) when unusable.
fn exec_command(cx: &mut Ctx, raw: &RawCheck, which: &'static str) -> Option<Vec<String>> {
    let at = |k: &'static str| [K("healthcheck"), K(which), K(k)];
    let command = match &raw.command {
        None => Vec::new(),
        Some(RawCommand::List(argv)) => argv.clone(),
        Some(RawCommand::Shell(s)) if s.trim().is_empty() => Vec::new(),
        Some(RawCommand::Shell(s)) => {
            vec!["/bin/sh".to_owned(), "-c".to_owned(), s.clone()]
        }
    };
    let prog_path = match &raw.command {
        Some(RawCommand::List(_)) => vec![K("healthcheck"), K(which), K("command"), I(0)],
        _ => at("command").to_vec(),
    };
    let Some(prog) = command.first().filter(|c| !c.is_empty()) else {
        let path = if raw.command.is_some() {
            at("command")
        } else {
            at("type")
        };
        cx.err(
            &path,
            format!("healthcheck.{which}: type exec needs a non-empty command"),
        );
        return None;
    };
    if command.iter().any(|c| c.contains('\0')) {
        cx.err(&at("command"), "command contains a NUL byte".to_owned());
        return None;
    }
    let p = Path::new(prog);
    if !p.is_absolute() {
        cx.err(
            &prog_path,
            format!(
                "healthcheck.{which}: exec check command must be an absolute path (got '{prog}'; there is no PATH search)"
            ),
        );
        return None;
    }
    if let Err(why) = cx.target.executable(p) {
        cx.finding(
            &prog_path,
            &format!("healthcheck.{which}: exec check command {prog} is not executable: {why}"),
        );
    }
    Some(command)
}

/// The notify check's fd and watchdog; None (reported) when unusable.
fn notify_kind(cx: &mut Ctx, raw: &RawCheck, which: &'static str) -> Option<CheckKind> {
    let at = |k: &'static str| [K("healthcheck"), K(which), K(k)];
    if which == "liveness" {
        cx.err(
            &at("type"),
            "type notify is a readiness protocol; it cannot be a liveness check".to_owned(),
        );
        return None;
    }
    let mut ok = true;
    if let Some(fd) = raw.fd {
        if fd < MIN_NOTIFY_FD {
            cx.err(
                &at("fd"),
                format!("healthcheck.{which}.fd must be 3 or more (0-2 are stdin/out/err)"),
            );
            ok = false;
        } else if fd > MAX_NOTIFY_FD {
            cx.err(
                &at("fd"),
                format!("healthcheck.{which}.fd is {fd}; it must be at most {MAX_NOTIFY_FD}"),
            );
            ok = false;
        }
    }
    if let Some(w) = raw.watchdog {
        if raw.fd.is_some() {
            cx.err(
                &at("watchdog"),
                format!(
                    "healthcheck.{which}.watchdog needs sd_notify (type notify without fd); a notification fd only carries the readiness line"
                ),
            );
            ok = false;
        } else if w.0 == 0 {
            cx.err(
                &at("watchdog"),
                format!("healthcheck.{which}.watchdog must be at least 1ms (leave it out for no watchdog)"),
            );
            ok = false;
        }
    }
    ok.then_some(CheckKind::Notify {
        fd: raw.fd,
        watchdog: raw.watchdog.map(|d| d.0),
    })
}

fn build_check(cx: &mut Ctx, raw: &RawCheck, which: &'static str) -> Option<Check> {
    let base = [K("healthcheck"), K(which)];
    let at = |k: &'static str| [K("healthcheck"), K(which), K(k)];
    let Some(kind) = raw.kind else {
        cx.err(
            &base,
            format!("healthcheck.{which}: missing required key 'type' (http, tcp, exec or notify)"),
        );
        return None;
    };
    let tname = match kind {
        RawCheckType::Http => "http",
        RawCheckType::Tcp => "tcp",
        RawCheckType::Exec => "exec",
        RawCheckType::Notify => "notify",
    };
    let mut ok = true;
    for (key, present, used_by, hint) in [
        ("url", raw.url.is_some(), RawCheckType::Http, ""),
        ("address", raw.address.is_some(), RawCheckType::Tcp, ""),
        ("command", raw.command.is_some(), RawCheckType::Exec, ""),
        (
            "expect_status",
            raw.expect_status.is_some(),
            RawCheckType::Http,
            " (it is for type http)",
        ),
        (
            "fd",
            raw.fd.is_some(),
            RawCheckType::Notify,
            " (it is for type notify)",
        ),
        (
            "watchdog",
            raw.watchdog.is_some(),
            RawCheckType::Notify,
            " (it is for a readiness check of type notify without fd)",
        ),
    ] {
        if present && kind != used_by {
            cx.err(
                &at(key),
                format!("healthcheck.{which}.{key} is not used by type {tname}{hint}"),
            );
            ok = false;
        }
    }
    let expect_status = match raw.expect_status {
        None => None,
        Some(s) => match u16::try_from(s) {
            Ok(s) if (MIN_HTTP_STATUS..=MAX_HTTP_STATUS).contains(&s) => Some(s),
            _ => {
                if kind == RawCheckType::Http {
                    cx.err(
                        &at("expect_status"),
                        format!(
                            "healthcheck.{which}.expect_status is {s}; an HTTP status is from {MIN_HTTP_STATUS} to {MAX_HTTP_STATUS}"
                        ),
                    );
                }
                ok = false;
                None
            }
        },
    };
    let check_kind = match kind {
        RawCheckType::Http => match &raw.url {
            None => {
                cx.err(&base, format!("healthcheck.{which}: type http needs a url"));
                None
            }
            Some(url) => match parse_url(url) {
                Ok((addr, host, path)) => Some(CheckKind::Http {
                    url: url.clone(),
                    addr,
                    host,
                    path,
                    expect_status,
                }),
                Err(msg) => {
                    cx.err(&at("url"), msg);
                    None
                }
            },
        },
        RawCheckType::Tcp => match &raw.address {
            None => {
                cx.err(
                    &base,
                    format!("healthcheck.{which}: type tcp needs an address"),
                );
                None
            }
            Some(address) => match parse_address(address) {
                Ok(addr) => Some(CheckKind::Tcp {
                    address: address.clone(),
                    addr,
                }),
                Err(msg) => {
                    cx.err(&at("address"), msg);
                    None
                }
            },
        },
        RawCheckType::Exec => {
            exec_command(cx, raw, which).map(|command| CheckKind::Exec { command })
        }
        RawCheckType::Notify => notify_kind(cx, raw, which),
    };
    let interval = raw.interval.map_or(DEFAULT_CHECK_INTERVAL, |d| d.0);
    let timeout = raw.timeout.map_or(DEFAULT_CHECK_TIMEOUT, |d| d.0);
    let retries = raw.retries.unwrap_or(DEFAULT_CHECK_RETRIES);
    let success_threshold = raw
        .success_threshold
        .unwrap_or(DEFAULT_CHECK_SUCCESS_THRESHOLD);
    if interval == 0 {
        cx.err(
            &at("interval"),
            format!("healthcheck.{which}.interval must be at least 1ms"),
        );
        ok = false;
    }
    if timeout == 0 {
        cx.err(
            &at("timeout"),
            format!("healthcheck.{which}.timeout must be at least 1ms"),
        );
        ok = false;
    }
    if retries == 0 {
        cx.err(
            &at("retries"),
            format!("healthcheck.{which}.retries must be at least 1"),
        );
        ok = false;
    }
    if success_threshold == 0 {
        cx.err(
            &at("success_threshold"),
            format!("healthcheck.{which}.success_threshold must be at least 1"),
        );
        ok = false;
    }
    if interval > 0 && timeout > interval {
        let path = if raw.timeout.is_some() {
            at("timeout")
        } else {
            at("interval")
        };
        cx.warn(
            &path,
            format!(
                "healthcheck.{which}.timeout ({}) is larger than its interval ({}); checks will overlap the next one",
                fmt_ms(timeout),
                fmt_ms(interval)
            ),
        );
    }
    let kind = check_kind?;
    ok.then_some(Check {
        kind,
        interval,
        timeout,
        retries,
        start_period: raw.start_period.map_or(0, |d| d.0),
        success_threshold,
    })
}

/// File and position of entry `e`'s `path` (relative to the service).
fn entry_pos(srcs: &[Src], e: &Entry, path: &[Seg]) -> (PathBuf, (usize, usize)) {
    match srcs.get(e.src) {
        Some(src) => {
            let mut full = e.prefix.clone();
            full.extend_from_slice(path);
            (src.file.clone(), src.outline.locate(&full))
        }
        None => (PathBuf::new(), (0, 0)),
    }
}

fn report(sink: &mut Sink, severity: Severity, srcs: &[Src], e: &Entry, path: &[Seg], msg: String) {
    let (file, pos) = entry_pos(srcs, e, path);
    let service = e.named.then_some(e.spec.name.as_str());
    sink.add(severity, &file, pos, service, msg);
}

/// Duplicates, dependencies (missing, condition vs. target) and cycles.
fn cross_checks(entries: &[Entry], srcs: &[Src], incomplete: bool, sink: &mut Sink) {
    let mut by_name: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        if !e.named {
            continue;
        }
        match by_name
            .get(e.spec.name.as_str())
            .and_then(|f| entries.get(*f))
        {
            Some(first) => {
                let (ffile, (fl, fc)) = entry_pos(srcs, first, &[K("name")]);
                report(
                    sink,
                    Severity::Error,
                    srcs,
                    e,
                    &[K("name")],
                    format!(
                        "duplicate service name '{}' (first defined at {}:{fl}:{fc})",
                        e.spec.name,
                        ffile.display()
                    ),
                );
            }
            None => {
                by_name.insert(e.spec.name.as_str(), i);
            }
        }
    }

    // Edges (target entry, index in depends_on) for the cycle search.
    let mut adj: Vec<Vec<(usize, usize)>> = vec![Vec::new(); entries.len()];
    for (i, e) in entries.iter().enumerate() {
        for (k, dep) in e.spec.depends_on.iter().enumerate() {
            let item = e.dep_items.get(k).copied().unwrap_or(k);
            let dpath = [K("depends_on"), I(item)];
            let Some(t) = by_name.get(dep.name.as_str()).copied() else {
                if !incomplete {
                    report(
                        sink,
                        Severity::Error,
                        srcs,
                        e,
                        &dpath,
                        format!("depends on '{}', which is not defined", dep.name),
                    );
                }
                continue;
            };
            if let Some(edges) = adj.get_mut(i) {
                edges.push((t, k));
            }
            let Some(target) = entries.get(t) else {
                continue;
            };
            if target.tainted {
                continue;
            }
            let cpath = [K("depends_on"), I(item), K("condition")];
            match dep.condition {
                Condition::Completed if target.spec.kind != Kind::Oneshot => report(
                    sink,
                    Severity::Error,
                    srcs,
                    e,
                    &cpath,
                    format!(
                        "condition completed on '{}', which is not type: oneshot (it never completes)",
                        dep.name
                    ),
                ),
                Condition::Healthy if target.spec.healthcheck.readiness.is_none() => report(
                    sink,
                    Severity::Warning,
                    srcs,
                    e,
                    &cpath,
                    format!(
                        "condition healthy on '{}': dependency has no readiness check; `healthy` means started",
                        dep.name
                    ),
                ),
                _ => {}
            }
        }
    }
    find_cycles(entries, srcs, &adj, sink);
}

/// Iterative DFS (no recursion: fuzzed input may chain thousands of
/// services). Each cycle is reported once, rotated to start at the service
/// defined first, at its `depends_on` entry that closes the loop.
fn find_cycles(entries: &[Entry], srcs: &[Src], adj: &[Vec<(usize, usize)>], sink: &mut Sink) {
    const WHITE: u8 = 0;
    const GRAY: u8 = 1;
    const BLACK: u8 = 2;
    let mut color = vec![WHITE; entries.len()];
    let mut reported: BTreeSet<Vec<usize>> = BTreeSet::new();
    for s in 0..entries.len() {
        if color.get(s) != Some(&WHITE) {
            continue;
        }
        if let Some(c) = color.get_mut(s) {
            *c = GRAY;
        }
        let mut stack: Vec<(usize, usize)> = vec![(s, 0)];
        while let Some(&(u, ei)) = stack.last() {
            let next = adj.get(u).and_then(|a| a.get(ei)).map(|(v, _)| *v);
            let Some(v) = next else {
                if let Some(c) = color.get_mut(u) {
                    *c = BLACK;
                }
                stack.pop();
                continue;
            };
            if let Some(top) = stack.last_mut() {
                top.1 += 1;
            }
            match color.get(v).copied() {
                Some(WHITE) => {
                    if let Some(c) = color.get_mut(v) {
                        *c = GRAY;
                    }
                    stack.push((v, 0));
                }
                Some(GRAY) => {
                    let start = stack.iter().position(|(x, _)| *x == v).unwrap_or(0);
                    let cycle: Vec<usize> = stack
                        .get(start..)
                        .unwrap_or_default()
                        .iter()
                        .map(|(x, _)| *x)
                        .collect();
                    report_cycle(entries, srcs, adj, &cycle, &mut reported, sink);
                }
                _ => {}
            }
        }
    }
}

fn report_cycle(
    entries: &[Entry],
    srcs: &[Src],
    adj: &[Vec<(usize, usize)>],
    cycle: &[usize],
    reported: &mut BTreeSet<Vec<usize>>,
    sink: &mut Sink,
) {
    let Some(m) = cycle
        .iter()
        .enumerate()
        .min_by_key(|(_, x)| **x)
        .map(|(i, _)| i)
    else {
        return;
    };
    let (tail, head) = cycle.split_at(m);
    let rotated: Vec<usize> = head.iter().chain(tail).copied().collect();
    if !reported.insert(rotated.clone()) {
        return;
    }
    let name = |i: &usize| entries.get(*i).map_or("?", |e| e.spec.name.as_str());
    let mut path: Vec<&str> = rotated.iter().map(name).collect();
    if let Some(first) = rotated.first() {
        path.push(name(first));
    }
    let (Some(&a), Some(&b)) = (rotated.first(), rotated.get(1).or(rotated.first())) else {
        return;
    };
    let Some(e) = entries.get(a) else { return };
    let k = adj
        .get(a)
        .and_then(|edges| edges.iter().find(|(v, _)| *v == b))
        .map_or(0, |(_, k)| *k);
    let item = e.dep_items.get(k).copied().unwrap_or(k);
    report(
        sink,
        Severity::Error,
        srcs,
        e,
        &[K("depends_on"), I(item)],
        format!("dependency cycle: {}", path.join(" -> ")),
    );
}

/// The `RLIMIT_*` number of a name `RawRlimits` accepts.
fn rlimit_resource(name: &str) -> Option<u32> {
    use nix::libc;
    let r = match name {
        "as" => libc::RLIMIT_AS,
        "core" => libc::RLIMIT_CORE,
        "cpu" => libc::RLIMIT_CPU,
        "data" => libc::RLIMIT_DATA,
        "fsize" => libc::RLIMIT_FSIZE,
        "locks" => libc::RLIMIT_LOCKS,
        "memlock" => libc::RLIMIT_MEMLOCK,
        "msgqueue" => libc::RLIMIT_MSGQUEUE,
        "nice" => libc::RLIMIT_NICE,
        "nofile" => libc::RLIMIT_NOFILE,
        "nproc" => libc::RLIMIT_NPROC,
        "rss" => libc::RLIMIT_RSS,
        "rtprio" => libc::RLIMIT_RTPRIO,
        "rttime" => libc::RLIMIT_RTTIME,
        "sigpending" => libc::RLIMIT_SIGPENDING,
        "stack" => libc::RLIMIT_STACK,
        _ => return None,
    };
    #[allow(clippy::unnecessary_cast)] // c_int with musl, c_uint with glibc
    u32::try_from(r as i64).ok()
}

/// Validates `rlimits:` (the names were checked by serde): both halves
/// given, soft at most hard, and the ranges the kernel gives a meaning.
fn rlimits(cx: &mut Ctx<'_>, raw: Option<&RawRlimits>) -> Vec<Rlimit> {
    let mut out = Vec::new();
    let Some(raw) = raw else {
        return out;
    };
    for (name, v) in raw.each() {
        let Some(v) = v else { continue };
        let at = [K("rlimits"), K(name)];
        let (Some(soft), Some(hard)) = (v.soft, v.hard) else {
            cx.err(
                &at,
                format!("rlimits.{name}: give both `soft` and `hard` (or one value for both)"),
            );
            continue;
        };
        let shown = |v: u64| {
            if v == RLIM_UNLIMITED {
                "unlimited".to_owned()
            } else {
                v.to_string()
            }
        };
        if soft > hard {
            cx.err(
                &at,
                format!(
                    "rlimits.{name}: the soft limit {} is above the hard limit {}",
                    shown(soft),
                    shown(hard)
                ),
            );
            continue;
        }
        // nice is a ceiling written as 20 - N (0..40); rtprio a priority.
        let max = match name {
            "nice" => 40,
            "rtprio" => 99,
            _ => RLIM_UNLIMITED,
        };
        if hard != RLIM_UNLIMITED && hard > max {
            cx.err(
                &at,
                format!(
                    "rlimits.{name}: {} is out of range (0 to {max}, or unlimited)",
                    shown(hard)
                ),
            );
            continue;
        }
        if let Some(resource) = rlimit_resource(name) {
            out.push(Rlimit {
                name,
                resource,
                soft,
                hard,
            });
        }
    }
    out
}
