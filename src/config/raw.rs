//! The YAML shape: raw serde structs, exactly as written by the user.
//!
//! Every field is optional here, so that a missing key is reported by the
//! validator (with a position) rather than by serde, and so that the error
//! recovery in `locate.rs` can blank out a broken entry and keep going.
//! List items are `Option<T>` for the same reason: a blanked item reads as
//! null and must not produce a second error. Unknown keys are rejected.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::record::record;
use super::units::{
    parse_duration, parse_rlimit, parse_rlimit_value, parse_signal, parse_size, parse_umask,
};

/// A list in the YAML, with null items kept so indices match the source.
pub(super) type List<T> = Vec<Option<T>>;

#[derive(Debug, Default)]
pub(super) struct RawFile {
    pub coffey: Option<RawGlobal>,
    pub services: Option<List<RawService>>,
    pub fds: Option<RawFds>,
}

record!(RawFile, "a mapping with `coffey:`, `services:` and `fds:`", {
    coffey: "coffey",
    services: "services",
    fds: "fds",
});

#[derive(Debug, Default)]
pub(super) struct RawGlobal {
    pub socket: Option<String>,
    pub pid_file: Option<String>,
    pub socket_group: Option<String>,
    pub services_dir: Option<String>,
    pub log: Option<RawDaemonLog>,
    pub events: Option<RawEventLog>,
    pub service_logs: Option<RawServiceLogs>,
    pub limits: Option<RawLimits>,
    pub shutdown_timeout: Option<Dur>,
    pub hostname: Option<String>,
    pub emergency: Option<String>,
    pub early_mounts: Option<bool>,
    pub mounts: Option<List<RawMount>>,
    pub main: Option<String>,
    pub cgroup: Option<String>,
}

record!(RawGlobal, "the `coffey:` mapping", {
    socket: "socket",
    pid_file: "pid_file",
    socket_group: "socket_group",
    services_dir: "services_dir",
    log: "log",
    events: "events",
    service_logs: "service_logs",
    limits: "limits",
    shutdown_timeout: "shutdown_timeout",
    hostname: "hostname",
    emergency: "emergency",
    early_mounts: "early_mounts",
    mounts: "mounts",
    main: "main",
    cgroup: "cgroup",
});

/// A `coffey.mounts` item (fstab-like).
#[derive(Debug, Default)]
pub(super) struct RawMount {
    pub source: Option<String>,
    pub target: Option<String>,
    pub fstype: Option<String>,
    pub options: Option<String>,
}

record!(RawMount, "a mount mapping with `source`, `target`, `type` and `options`", {
    source: "source",
    target: "target",
    fstype: "type",
    options: "options",
});

#[derive(Debug, Default)]
pub(super) struct RawDaemonLog {
    pub path: Option<String>,
    pub console: Option<bool>,
    pub max_size: Option<Size>,
    pub keep: Option<u32>,
}

record!(RawDaemonLog, "a mapping with `path`, `console`, `max_size` and `keep`", {
    path: "path",
    console: "console",
    max_size: "max_size",
    keep: "keep",
});

/// `coffey.events`: the persistent event log (JSONL).
#[derive(Debug, Default)]
pub(super) struct RawEventLog {
    pub path: Option<String>,
    pub max_size: Option<Size>,
    pub keep: Option<u32>,
}

record!(RawEventLog, "a mapping with `path`, `max_size` and `keep`", {
    path: "path",
    max_size: "max_size",
    keep: "keep",
});

#[derive(Debug, Default)]
pub(super) struct RawServiceLogs {
    pub dir: Option<String>,
    pub max_size: Option<Size>,
    pub keep: Option<u32>,
    pub buffer: Option<Size>,
}

record!(RawServiceLogs, "a mapping with `dir`, `max_size`, `keep` and `buffer`", {
    dir: "dir",
    max_size: "max_size",
    keep: "keep",
    buffer: "buffer",
});

#[derive(Debug, Default)]
pub(super) struct RawLimits {
    pub services: Option<u32>,
    pub clients: Option<u32>,
}

record!(RawLimits, "a mapping with `services` and `clients`", {
    services: "services",
    clients: "clients",
});

#[derive(Debug, Default)]
pub(super) struct RawService {
    pub name: Option<String>,
    pub command: Option<RawCommand>,
    pub binary: Option<String>,
    pub args: Option<List<String>>,
    pub env: Option<RawEnv>,
    pub env_file: Option<RawEnvFile>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub umask: Option<Umask>,
    pub rlimits: Option<RawRlimits>,
    pub kind: Option<RawKind>,
    pub restart: Option<RawRestart>,
    pub backoff: Option<RawBackoff>,
    pub max_restarts: Option<u32>,
    pub degraded_after: Option<u32>,
    pub stop_signal: Option<Sig>,
    pub stop_timeout: Option<Dur>,
    pub resources: Option<RawResources>,
    pub depends_on: Option<List<RawDep>>,
    pub log: Option<RawServiceLog>,
    pub healthcheck: Option<RawHealthcheck>,
    pub start_timeout: Option<Dur>,
    pub fds: Option<RawSvcFds>,
}

record!(RawService, "a service mapping (name, binary, ...)", {
    name: "name",
    command: "command",
    binary: "binary",
    args: "args",
    env: "env",
    env_file: "env_file",
    working_dir: "working_dir",
    user: "user",
    group: "group",
    umask: "umask",
    rlimits: "rlimits",
    kind: "type",
    restart: "restart",
    backoff: "backoff",
    max_restarts: "max_restarts",
    degraded_after: "degraded_after",
    stop_signal: "stop_signal",
    stop_timeout: "stop_timeout",
    resources: "resources",
    depends_on: "depends_on",
    log: "log",
    healthcheck: "healthcheck",
    start_timeout: "start_timeout",
    fds: "fds",
});

/// `rlimits:`: the resources of setrlimit(2), named as `ulimit` and
/// systemd's `Limit*=` do (lowercase, without `RLIMIT_`). An unknown name
/// is an error at its key.
#[derive(Debug, Default)]
pub(super) struct RawRlimits {
    pub as_: Option<RawRlimit>,
    pub core: Option<RawRlimit>,
    pub cpu: Option<RawRlimit>,
    pub data: Option<RawRlimit>,
    pub fsize: Option<RawRlimit>,
    pub locks: Option<RawRlimit>,
    pub memlock: Option<RawRlimit>,
    pub msgqueue: Option<RawRlimit>,
    pub nice: Option<RawRlimit>,
    pub nofile: Option<RawRlimit>,
    pub nproc: Option<RawRlimit>,
    pub rss: Option<RawRlimit>,
    pub rtprio: Option<RawRlimit>,
    pub rttime: Option<RawRlimit>,
    pub sigpending: Option<RawRlimit>,
    pub stack: Option<RawRlimit>,
}

record!(RawRlimits, "a mapping of resource limits like `nofile: 1024`", {
    as_: "as",
    core: "core",
    cpu: "cpu",
    data: "data",
    fsize: "fsize",
    locks: "locks",
    memlock: "memlock",
    msgqueue: "msgqueue",
    nice: "nice",
    nofile: "nofile",
    nproc: "nproc",
    rss: "rss",
    rtprio: "rtprio",
    rttime: "rttime",
    sigpending: "sigpending",
    stack: "stack",
});

impl RawRlimits {
    /// Every name with its value, in the order above.
    pub fn each(&self) -> [(&'static str, Option<RawRlimit>); 16] {
        [
            ("as", self.as_),
            ("core", self.core),
            ("cpu", self.cpu),
            ("data", self.data),
            ("fsize", self.fsize),
            ("locks", self.locks),
            ("memlock", self.memlock),
            ("msgqueue", self.msgqueue),
            ("nice", self.nice),
            ("nofile", self.nofile),
            ("nproc", self.nproc),
            ("rss", self.rss),
            ("rtprio", self.rtprio),
            ("rttime", self.rttime),
            ("sigpending", self.sigpending),
            ("stack", self.stack),
        ]
    }
}

/// One limit: `N` or `unlimited` (both soft and hard), `"SOFT:HARD"`, or
/// `{soft: N, hard: M}` (a missing half is the validator's error).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct RawRlimit {
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

/// One half of `{soft, hard}`.
#[derive(Debug, Clone, Copy)]
pub(super) struct RlimitValue(u64);

impl<'de> Deserialize<'de> for RlimitValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        text(d, parse_rlimit_value, "a limit like 1024 or unlimited").map(RlimitValue)
    }
}

/// `{soft, hard}`: read by the record visitor on the map `ShapeVisitor` got.
#[derive(Default)]
struct RawSoftHard {
    soft: Option<RlimitValue>,
    hard: Option<RlimitValue>,
}

record!(RawSoftHard, "a mapping with `soft` and `hard`", {
    soft: "soft",
    hard: "hard",
});

// `RawRlimit`, `RawDep` and `RawCommand` are read by `ShapeVisitor` below.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RawKind {
    Service,
    Oneshot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RawRestart {
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RawCondition {
    Started,
    Healthy,
    Completed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RawCheckType {
    Http,
    Tcp,
    Exec,
    Notify,
}

/// A unit-variant enum read as serde's derive reads it (`deserialize_enum`,
/// `unknown variant` at the value, `expected enum NAME`), through one
/// visitor for all four: one copy of serde_norway's enum code, not four.
macro_rules! unit_enum {
    ($t:ident, $($key:literal => $v:ident),* $(,)?) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                const ALL: &[$t] = &[$($t::$v),*];
                let i = d.deserialize_enum(
                    stringify!($t),
                    &[$($key),*],
                    VariantVisitor(concat!("enum ", stringify!($t)), &[$($key),*]),
                )?;
                ALL.get(i).copied().ok_or_else(|| de::Error::custom("bad variant"))
            }
        }
    };
}

unit_enum!(RawKind, "service" => Service, "oneshot" => Oneshot);
unit_enum!(RawRestart, "always" => Always, "on-failure" => OnFailure, "never" => Never);
unit_enum!(RawCondition, "started" => Started, "healthy" => Healthy, "completed" => Completed);
unit_enum!(RawCheckType, "http" => Http, "tcp" => Tcp, "exec" => Exec, "notify" => Notify);

/// The enum visitor: `expecting` text and variant names.
struct VariantVisitor(&'static str, &'static [&'static str]);

impl<'de> Visitor<'de> for VariantVisitor {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<usize, A::Error> {
        let (i, v) = data.variant_seed(VariantName(self.1))?;
        de::VariantAccess::unit_variant(v)?;
        Ok(i)
    }
}

/// A variant's name (derive's variant identifier visitor).
struct VariantName(&'static [&'static str]);

impl<'de> de::DeserializeSeed<'de> for VariantName {
    type Value = usize;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl Visitor<'_> for VariantName {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("variant identifier")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
        self.0
            .iter()
            .position(|n| *n == v)
            .ok_or_else(|| E::unknown_variant(v, self.0))
    }
}

#[derive(Debug, Default)]
pub(super) struct RawBackoff {
    pub initial: Option<Dur>,
    pub max: Option<Dur>,
    pub multiplier: Option<f64>,
    pub reset_after: Option<Dur>,
}

record!(RawBackoff, "a mapping with `initial`, `max`, `multiplier` and `reset_after`", {
    initial: "initial",
    max: "max",
    multiplier: "multiplier",
    reset_after: "reset_after",
});

/// `resources:`: cgroup v2 limits of one service.
#[derive(Debug, Default)]
pub(super) struct RawResources {
    pub memory_max: Option<Size>,
    pub pids_max: Option<u64>,
    pub cpu_weight: Option<u64>,
}

record!(RawResources, "a mapping with `memory_max`, `pids_max` and `cpu_weight`", {
    memory_max: "memory_max",
    pids_max: "pids_max",
    cpu_weight: "cpu_weight",
});

#[derive(Debug, Default)]
pub(super) struct RawServiceLog {
    pub file: Option<String>,
    pub console: Option<bool>,
    pub buffer: Option<Size>,
    pub to: Option<String>,
}

record!(RawServiceLog, "a mapping with `file`, `console`, `buffer` and `to`", {
    file: "file",
    console: "console",
    buffer: "buffer",
    to: "to",
});

#[derive(Debug, Default)]
pub(super) struct RawHealthcheck {
    pub readiness: Option<RawCheck>,
    pub liveness: Option<RawCheck>,
    pub startup: Option<RawCheck>,
}

record!(RawHealthcheck, "a mapping with `readiness`, `liveness` and/or `startup`", {
    readiness: "readiness",
    liveness: "liveness",
    startup: "startup",
});

#[derive(Debug, Default)]
pub(super) struct RawCheck {
    pub kind: Option<RawCheckType>,
    pub url: Option<String>,
    pub address: Option<String>,
    pub command: Option<RawCommand>,
    pub interval: Option<Dur>,
    pub timeout: Option<Dur>,
    pub retries: Option<u32>,
    pub start_period: Option<Dur>,
    pub success_threshold: Option<u32>,
    /// Read wider than u16 so an out-of-range status gets our message.
    pub expect_status: Option<u32>,
    pub fd: Option<u32>,
    pub watchdog: Option<Dur>,
}

record!(RawCheck, "a check mapping (type, url, address, command, interval, ...)", {
    kind: "type",
    url: "url",
    address: "address",
    command: "command",
    interval: "interval",
    timeout: "timeout",
    retries: "retries",
    start_period: "start_period",
    success_threshold: "success_threshold",
    expect_status: "expect_status",
    fd: "fd",
    watchdog: "watchdog",
});

/// `depends_on` item: a plain name or `{name, condition}`.
#[derive(Debug)]
pub(super) struct RawDep {
    pub name: String,
    pub condition: Option<RawCondition>,
}

/// Exec check command: an argv list, or one string run by `/bin/sh -c`.
#[derive(Debug)]
pub(super) enum RawCommand {
    List(Vec<String>),
    Shell(String),
}

/// `env:`: a list of `KEY=VALUE` strings (null items kept, as in
/// [`List`]), or a mapping of keys to scalars, in source order. A map
/// value is its text (`8080`, `true`, `1.5`, as compose converts them);
/// None is a null value (the validator's error).
#[derive(Debug)]
pub(super) enum RawEnv {
    List(List<String>),
    Map(Vec<(String, Option<String>)>),
}

/// `env_file:`: one path or a list of paths.
#[derive(Debug)]
pub(super) struct RawEnvFile(pub Vec<String>);

/// Duration in milliseconds (see `parse_duration`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Dur(pub u64);
/// Size in bytes (see `parse_size`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Size(pub u64);
/// Signal number (see `parse_signal`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Sig(pub i32);
/// Umask bits (see `parse_umask`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Umask(pub u32);

/// Deserializes any scalar through its source text, so `022`, `0o22` and
/// `22` reach the parser as written instead of as YAML-resolved integers.
/// One visitor type (a plain `fn`, no closure type) for every such scalar,
/// so serde_norway's string code is compiled once.
struct TextVisitor {
    parse: fn(&str) -> Result<u64, String>,
    what: &'static str,
}

impl<'de> Visitor<'de> for TextVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.what)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        (self.parse)(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        self.visit_str(&v.to_string())
    }
}

fn text<'de, D: Deserializer<'de>>(
    d: D,
    parse: fn(&str) -> Result<u64, String>,
    what: &'static str,
) -> Result<u64, D::Error> {
    d.deserialize_str(TextVisitor { parse, what })
}

fn with_context(what: &str, s: &str, e: String) -> String {
    format!("invalid {what} `{}`: {e}", s.trim())
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let parse = |s: &str| parse_duration(s).map_err(|e| with_context("duration", s, e));
        text(d, parse, "a duration like 500ms, 5s or 1m30s").map(Dur)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let parse = |s: &str| parse_size(s).map_err(|e| with_context("size", s, e));
        text(d, parse, "a size like 4096, 64KiB or 1MiB").map(Size)
    }
}

impl<'de> Deserialize<'de> for Sig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // i32 -> u64 -> i32 round-trips every value exactly.
        let parse = |s: &str| parse_signal(s).map(|n| n as u64);
        text(d, parse, "a signal like SIGTERM, TERM or 15").map(|n| Sig(n as i32))
    }
}

impl<'de> Deserialize<'de> for Umask {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let parse = |s: &str| parse_umask(s).map(u64::from);
        let n = text(d, parse, "an octal umask like \"022\"")?;
        u32::try_from(n).map(Umask).map_err(de::Error::custom)
    }
}

/// A `depends_on` mapping: `name` and `condition`.
fn dep_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<RawDep, A::Error> {
    let mut name: Option<String> = None;
    let mut condition: Option<RawCondition> = None;
    // Keys are read as `DepField` so an unknown one is reported at the
    // key itself (recovery then blanks just that line, not the item).
    while let Some(key) = map.next_key::<DepField>()? {
        match key {
            DepField::Name => {
                if name.is_some() {
                    return Err(de::Error::duplicate_field("name"));
                }
                name = Some(map.next_value()?);
            }
            DepField::Condition => {
                if condition.is_some() {
                    return Err(de::Error::duplicate_field("condition"));
                }
                condition = Some(map.next_value()?);
            }
        }
    }
    let name = name.ok_or_else(|| de::Error::missing_field("name"))?;
    Ok(RawDep { name, condition })
}

/// The keys of a `depends_on` mapping.
enum DepField {
    Name,
    Condition,
}

const DEP_FIELDS: &[&str] = &["name", "condition"];

struct DepFieldVisitor;

impl Visitor<'_> for DepFieldVisitor {
    type Value = DepField;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("`name` or `condition`")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<DepField, E> {
        match v {
            "name" => Ok(DepField::Name),
            "condition" => Ok(DepField::Condition),
            other => Err(de::Error::unknown_field(other, DEP_FIELDS)),
        }
    }
}

impl<'de> Deserialize<'de> for DepField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_identifier(DepFieldVisitor)
    }
}

/// The values that take more than one YAML shape.
#[derive(Clone, Copy)]
enum Shape {
    /// `N`, `unlimited`, `"SOFT:HARD"` or `{soft, hard}`.
    Rlimit,
    /// A service name or `{name, condition}`.
    Dep,
    /// A command string or a list of strings.
    Command,
    /// `env:`: a list of `KEY=VALUE` strings or a mapping.
    Env,
    /// `env_file:`: a path or a list of paths.
    EnvFile,
}

enum Shaped {
    Rlimit(RawRlimit),
    Dep(RawDep),
    Command(RawCommand),
    Env(RawEnv),
    EnvFile(RawEnvFile),
}

/// One `deserialize_any` visitor for all of them (one copy of serde_norway's
/// `deserialize_any`, not one each). A shape a value does not take is serde's
/// default answer: `invalid type: ..., expected <its expecting text>`.
struct ShapeVisitor(Shape);

impl ShapeVisitor {
    fn read<'de, D: Deserializer<'de>>(d: D, shape: Shape) -> Result<Shaped, D::Error> {
        d.deserialize_any(ShapeVisitor(shape))
    }

    fn number<E: de::Error>(self, v: String, unexpected: de::Unexpected) -> Result<Shaped, E> {
        match self.0 {
            Shape::Rlimit | Shape::Dep => self.visit_str(&v),
            _ => Err(E::invalid_type(unexpected, &self)),
        }
    }
}

impl<'de> Visitor<'de> for ShapeVisitor {
    type Value = Shaped;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self.0 {
            Shape::Rlimit => {
                "a limit like 1024, unlimited, \"1024:4096\" or {soft: 1024, hard: 4096}"
            }
            Shape::Dep => "a service name or a mapping with `name` and `condition`",
            Shape::Command => "a command string or a list of strings",
            Shape::Env => "a list of KEY=VALUE strings or a mapping of keys to values",
            Shape::EnvFile => "a path or a list of paths",
        })
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Shaped, E> {
        Ok(match self.0 {
            Shape::Rlimit => {
                let (soft, hard) = parse_rlimit(v).map_err(E::custom)?;
                Shaped::Rlimit(RawRlimit {
                    soft: Some(soft),
                    hard: Some(hard),
                })
            }
            Shape::Dep => Shaped::Dep(RawDep {
                name: v.to_owned(),
                condition: None,
            }),
            Shape::Command => Shaped::Command(RawCommand::Shell(v.to_owned())),
            Shape::EnvFile => Shaped::EnvFile(RawEnvFile(vec![v.to_owned()])),
            Shape::Env => return Err(E::invalid_type(de::Unexpected::Str(v), &self)),
        })
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Shaped, E> {
        self.number(v.to_string(), de::Unexpected::Unsigned(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Shaped, E> {
        self.number(v.to_string(), de::Unexpected::Signed(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Shaped, E> {
        match self.0 {
            Shape::Rlimit => self.visit_str(&v.to_string()),
            _ => Err(E::invalid_type(de::Unexpected::Float(v), &self)),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Shaped, A::Error> {
        match self.0 {
            Shape::Rlimit => {
                let mut m = RawSoftHard::default();
                super::record::fill(map, &mut m)?;
                Ok(Shaped::Rlimit(RawRlimit {
                    soft: m.soft.map(|v| v.0),
                    hard: m.hard.map(|v| v.0),
                }))
            }
            Shape::Dep => dep_map(map).map(Shaped::Dep),
            Shape::Env => env_map(map).map(|m| Shaped::Env(RawEnv::Map(m))),
            _ => Err(de::Error::invalid_type(de::Unexpected::Map, &self)),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shaped, A::Error> {
        match self.0 {
            Shape::Command | Shape::EnvFile => {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(match self.0 {
                    Shape::EnvFile => Shaped::EnvFile(RawEnvFile(items)),
                    _ => Shaped::Command(RawCommand::List(items)),
                })
            }
            Shape::Env => {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Option<String>>()? {
                    items.push(item);
                }
                Ok(Shaped::Env(RawEnv::List(items)))
            }
            _ => Err(de::Error::invalid_type(de::Unexpected::Seq, &self)),
        }
    }
}

fn mismatch<E: de::Error>() -> E {
    E::custom("internal error: wrong shape")
}

impl<'de> Deserialize<'de> for RawRlimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match ShapeVisitor::read(d, Shape::Rlimit)? {
            Shaped::Rlimit(v) => Ok(v),
            _ => Err(mismatch()),
        }
    }
}

impl<'de> Deserialize<'de> for RawDep {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match ShapeVisitor::read(d, Shape::Dep)? {
            Shaped::Dep(v) => Ok(v),
            _ => Err(mismatch()),
        }
    }
}

impl<'de> Deserialize<'de> for RawEnv {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match ShapeVisitor::read(d, Shape::Env)? {
            Shaped::Env(v) => Ok(v),
            _ => Err(mismatch()),
        }
    }
}

impl<'de> Deserialize<'de> for RawEnvFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match ShapeVisitor::read(d, Shape::EnvFile)? {
            Shaped::EnvFile(v) => Ok(v),
            _ => Err(mismatch()),
        }
    }
}

/// An `env:` mapping: keys as strings, values as their text.
fn env_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Vec<(String, Option<String>)>, A::Error> {
    let mut out = Vec::new();
    while let Some(key) = map.next_key::<String>()? {
        let value = map.next_value::<Option<ScalarText>>()?;
        out.push((key, value.map(|v| v.0)));
    }
    Ok(out)
}

/// A scalar as text: a string as written, a number or bool as compose
/// converts it (`8080`, `true`, `1.5`).
pub(super) struct ScalarText(pub String);

impl<'de> Deserialize<'de> for ScalarText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarTextVisitor).map(ScalarText)
    }
}

struct ScalarTextVisitor;

impl Visitor<'_> for ScalarTextVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string, number or boolean")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
}

impl<'de> Deserialize<'de> for RawCommand {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match ShapeVisitor::read(d, Shape::Command)? {
            Shaped::Command(v) => Ok(v),
            _ => Err(mismatch()),
        }
    }
}

// The two top-level shapes: the main file and a drop-in (one service).
impl<'de> Deserialize<'de> for RawFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::record::top(d)
    }
}

impl<'de> Deserialize<'de> for RawService {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::record::top(d)
    }
}

/// The top-level `fds:` mapping: entry name -> entry, in source order.
#[derive(Debug, Default)]
pub(super) struct RawFds(pub Vec<(String, Option<RawFdEntry>)>);

/// One `fds:` entry, exactly one of `listen`, `file` or `pipe`.
#[derive(Debug, Default)]
pub(super) struct RawFdEntry {
    pub listen: Option<String>,
    pub file: Option<String>,
    pub pipe: Option<RawPipe>,
    pub backlog: Option<u32>,
    pub mode: Option<ScalarText>,
    pub owner: Option<ScalarText>,
    pub group: Option<ScalarText>,
}

record!(RawFdEntry, "an fds entry with `listen`, `file` or `pipe`", {
    listen: "listen",
    file: "file",
    pipe: "pipe",
    backlog: "backlog",
    mode: "mode",
    owner: "owner",
    group: "group",
});

/// `pipe: {}` or `pipe: true`.
#[derive(Debug, Clone, Copy)]
pub(super) struct RawPipe;

/// A service's `fds:` mapping: number (as written) -> reference.
#[derive(Debug, Default)]
pub(super) struct RawSvcFds(pub Vec<(String, String)>);

impl fmt::Debug for ScalarText {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for RawFdEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::record::top(d)
    }
}

impl<'de> Deserialize<'de> for RawFds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(FdMapVisitor(false)).map(|v| match v {
            FdMap::Table(t) => t,
            FdMap::Service(_) => RawFds::default(),
        })
    }
}

impl<'de> Deserialize<'de> for RawSvcFds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(FdMapVisitor(true)).map(|v| match v {
            FdMap::Service(t) => t,
            FdMap::Table(_) => RawSvcFds::default(),
        })
    }
}

enum FdMap {
    Table(RawFds),
    Service(RawSvcFds),
}

/// Both `fds:` mappings (true: a service's, numbers to references).
struct FdMapVisitor(bool);

impl<'de> Visitor<'de> for FdMapVisitor {
    type Value = FdMap;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(if self.0 {
            "a mapping of descriptor numbers to fds entries (3: web)"
        } else {
            "a mapping of names to fds entries"
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FdMap, A::Error> {
        if self.0 {
            let mut out = Vec::new();
            while let Some(k) = map.next_key::<ScalarText>()? {
                out.push((k.0, map.next_value::<String>()?));
            }
            return Ok(FdMap::Service(RawSvcFds(out)));
        }
        let mut out = Vec::new();
        while let Some(k) = map.next_key::<String>()? {
            out.push((k, map.next_value::<Option<RawFdEntry>>()?));
        }
        Ok(FdMap::Table(RawFds(out)))
    }
}

impl<'de> Deserialize<'de> for RawPipe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PipeVisitor)
    }
}

struct PipeVisitor;

impl<'de> Visitor<'de> for PipeVisitor {
    type Value = RawPipe;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("`pipe: {}` or `pipe: true`")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawPipe, E> {
        if v {
            Ok(RawPipe)
        } else {
            Err(E::invalid_value(de::Unexpected::Bool(v), &self))
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawPipe, A::Error> {
        match map.next_key::<String>()? {
            None => Ok(RawPipe),
            Some(k) => Err(de::Error::unknown_field(&k, &[])),
        }
    }
}
