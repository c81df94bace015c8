//! Validation: raw structs -> spec types, every problem reported.
//!
//! Order of work: parse the main file (syntax, then typed with recovery),
//! build the global section, list and parse the drop-ins, build each service
//! on its own (so one broken service never hides another's errors), then the
//! cross-service checks (duplicates, dependencies, cycles, capacity). All
//! defaults live here as named constants; docs/CONFIG.md explains each.
//!
//! This file owns the entry (`load_text`), parsing a file, the drop-ins and
//! the diagnostics plumbing (`Sink`, `Src`, `Ctx`) its children share. Each
//! child owns one part: `globals` (the `coffey:` section) and `mounts`,
//! `service` (one service entry) with `creds`, `resources`, `bounds`,
//! `check` and `addr`, and `cross` (the checks over all services). Children
//! use this file's items; none uses a sibling's except through the service
//! it builds (`service` -> `creds`, `resources`, `bounds`, `check` -> `addr`).

mod addr;
mod bounds;
mod check;
mod command;
mod creds;
mod cross;
mod env;
mod envfile;
mod expand;
mod fds;
mod globals;
mod mounts;
mod resources;
mod service;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_norway::Value;

use super::limits::{
    EXEC_ARENA, LOG_PATH_MAX, MAX_ARGS, MAX_DEPS, MAX_ENV_EXTRA, MAX_GROUPS, NAME_MAX,
};
use super::locate::{clean_message, normalize, parse_recovering, Outline, Seg};
use super::raw::{self, List, RawFile, RawService};
use super::spec::{Config, FdEntry, Millis, ServiceSpec};
use super::target::Target;
use super::{Diag, Severity};
use cross::{check_limits, check_main, cross_checks};
use globals::build_globals;
use service::build_service;

// The config tests reach the option parser through `load`.
#[cfg(test)]
pub(super) use mounts::parse_mount_options;

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
/// daemonkit's default: an alert at the 5th crash in a row.
const DEFAULT_DEGRADED_AFTER: u32 = 5;
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
    /// The top-level `fds:` entries (name, is a pipe).
    fds: fds::TableNames,
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
    let fd_names;
    (config.fds, fd_names) = fd_table(
        path,
        raw_file.fds.as_ref(),
        &base_dir,
        &srcs,
        target,
        &mut sink,
    );
    let globals = Globals {
        fds: fd_names,
        target,
        base_dir: base_dir.clone(),
        log_dir: config.service_logs.dir.clone(),
        buffer: config.service_logs.buffer,
        console: config.log.console,
        cgroup: config.cgroup.is_some(),
    };

    let mut entries = main_services(path, raw_file.services.as_ref(), &srcs, &globals, &mut sink);
    if read_dropins {
        read_dropins_dir(
            path,
            &config.services_dir,
            &globals,
            &mut srcs,
            &mut entries,
            &mut sink,
        );
    }

    cross_checks(&entries, &srcs, incomplete, &mut sink);
    if !incomplete {
        let used = entries
            .iter()
            .flat_map(|e| e.spec.fds.iter().map(|f| f.entry))
            .collect();
        fd_unused(path, &config.fds, &used, &srcs, target, &mut sink);
    }
    check_main(&config, &entries, &srcs, incomplete, &mut sink);
    config.limits = check_limits(&raw_file, entries.len(), &srcs, incomplete, &mut sink);

    if sink.errors() > 0 {
        return Err(sink.sorted());
    }
    config.services = entries.into_iter().map(|e| e.spec).collect();
    Ok((config, sink.sorted()))
}

/// A reporting context at the root of the main file, for `f`.
fn at_root<R>(
    path: &Path,
    srcs: &[Src],
    target: &Target,
    sink: &mut Sink,
    f: impl FnOnce(&mut Ctx) -> R,
) -> R {
    let empty = Src {
        file: path.to_path_buf(),
        outline: Outline::new(""),
        tainted: BTreeSet::new(),
    };
    let mut cx = Ctx {
        sink,
        src: srcs.first().unwrap_or(&empty),
        prefix: &[],
        service: None,
        target,
    };
    f(&mut cx)
}

/// The top-level `fds:` table (see `fds.rs`).
fn fd_table(
    path: &Path,
    raw: Option<&raw::RawFds>,
    base_dir: &Path,
    srcs: &[Src],
    target: &Target,
    sink: &mut Sink,
) -> (Vec<FdEntry>, fds::TableNames) {
    at_root(path, srcs, target, sink, |cx| {
        fds::build_table(cx, raw, base_dir)
    })
}

/// Warns about the `fds:` entries no service uses.
fn fd_unused(
    path: &Path,
    table: &[FdEntry],
    used: &BTreeSet<u16>,
    srcs: &[Src],
    target: &Target,
    sink: &mut Sink,
) {
    at_root(path, srcs, target, sink, |cx| fds::unused(cx, table, used));
}

/// The services of the main file, each built on its own; an empty item is
/// an error unless error recovery blanked it.
fn main_services(
    path: &Path,
    list: Option<&List<RawService>>,
    srcs: &[Src],
    globals: &Globals,
    sink: &mut Sink,
) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    if let Some(list) = list {
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
                globals,
                sink,
            );
            entries.push(entry);
        }
    }
    entries
}

/// Every drop-in of `dir` in name order; an unreadable directory is one
/// error at `coffey.services_dir`.
fn read_dropins_dir(
    path: &Path,
    dir: &Path,
    globals: &Globals,
    srcs: &mut Vec<Src>,
    entries: &mut Vec<Entry>,
    sink: &mut Sink,
) {
    match list_dropins(dir) {
        Ok(files) => {
            for file in files {
                load_dropin(&file, globals, srcs, entries, sink);
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

/// A drop-in's text; None when it cannot be read or is not UTF-8 (one
/// error at the file, which still takes its place in the file order).
fn read_dropin(file: &Path, sink: &mut Sink) -> Option<String> {
    let msg = match std::fs::read(file).map(String::from_utf8) {
        Ok(Ok(t)) => return Some(t),
        Ok(Err(e)) => format!("file is not valid UTF-8: {e}"),
        Err(e) => format!("cannot read drop-in: {e}"),
    };
    sink.files.push(file.to_path_buf());
    sink.add(Severity::Error, file, (0, 0), None, msg);
    None
}

/// One drop-in file: one service, named by `name:` or else the file name.
fn load_dropin(
    file: &Path,
    globals: &Globals,
    srcs: &mut Vec<Src>,
    entries: &mut Vec<Entry>,
    sink: &mut Sink,
) {
    let Some(text) = read_dropin(file, sink) else {
        return;
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
