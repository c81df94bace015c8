//! The validated configuration: what the loader hands to the daemon.
//!
//! Everything here is owned and allocated once at startup (or by a reload
//! compiler child). The daemon turns it into preallocated slots; nothing in
//! this file is touched by the event loop.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Milliseconds. Durations in the config are parsed into this.
pub type Millis = u64;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The main file this config was loaded from.
    pub path: PathBuf,
    pub socket: PathBuf,
    pub pid_file: Option<PathBuf>,
    /// Group allowed read-only access to the socket: (name, gid). The
    /// socket is 0660 and owned by this group; otherwise 0600.
    pub socket_group: Option<(String, u32)>,
    pub services_dir: PathBuf,
    pub log: DaemonLog,
    /// `coffey.events`: every service event appended as a JSON line.
    pub events: Option<EventLog>,
    pub service_logs: ServiceLogs,
    pub limits: Limits,
    pub shutdown_timeout: Millis,
    /// In load order: main file first, then drop-ins sorted by file name.
    pub services: Vec<ServiceSpec>,
    /// System mode only: sethostname() at boot. Validated: 1..=64 of
    /// `[A-Za-z0-9.-]`, not starting with '-' or '.'.
    pub hostname: Option<String>,
    /// System mode: the shell run on `single`/`S` on the kernel command
    /// line (and when booting fails). Absolute; not checked to exist.
    pub emergency: PathBuf,
    /// System mode: mount /proc, /sys, /dev (devtmpfs) and /run (tmpfs)
    /// when they are not mounted yet.
    pub early_mounts: bool,
    /// System mode: extra mounts, in order, after the early ones.
    pub mounts: Vec<Mount>,
    /// Container mode: exit when this service exits, with its exit code
    /// (128 + signal when killed), after stopping the rest. Names a
    /// defined service.
    pub main: Option<String>,
    /// Supervisor and container mode: the delegated cgroup v2 directory
    /// the services' cgroups are made in. None: no cgroups outside system
    /// mode (coffeyd never creates cgroups unasked).
    pub cgroup: Option<PathBuf>,
    /// The top-level `fds:` table: descriptors coffeyd creates once, at
    /// startup, and holds for the services that name them.
    pub fds: Vec<FdEntry>,
}

/// Numbers a service's `fds:` may use: 0-2 are stdio.
pub const FD_MIN: u32 = 3;
/// The highest number a service's `fds:` may use (so the child's
/// descriptor table, see `spawn.rs`, stays a few dozen entries).
pub const FD_MAX: u32 = 31;

/// One `fds:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdEntry {
    pub name: String,
    pub kind: FdKind,
}

/// What an `fds:` entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FdKind {
    /// A listening TCP socket (SO_REUSEADDR) with this backlog.
    Tcp(std::net::SocketAddr, u32),
    /// A bound UDP socket.
    Udp(std::net::SocketAddr),
    /// A listening unix stream socket; the file gets `mode` and the owner
    /// (uid, gid) when given.
    Unix {
        path: PathBuf,
        backlog: u32,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
    },
    /// A file opened read-only, for writing (create + truncate) or for
    /// appending (create + append).
    File { path: PathBuf, mode: FileMode },
    /// A pipe: `NAME.read` and `NAME.write`.
    Pipe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileMode {
    Read,
    Write,
    Append,
}

/// Which end of an entry a service gets: the whole entry, or one end of
/// a pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdEnd {
    Whole,
    Read,
    Write,
}

/// A service's `fds:` item: its number in the child, the entry (index in
/// `Config::fds`) and the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceFd {
    pub num: u32,
    pub entry: u16,
    pub end: FdEnd,
}

/// One `coffey.mounts` entry, ready for mount(2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Device or pseudo-source (defaults to the fstype, like `proc`).
    pub source: String,
    /// Absolute mount point.
    pub target: PathBuf,
    pub fstype: String,
    /// `MS_*` flags parsed from the known option words.
    pub flags: u64,
    /// The other option words, comma-joined (`mode=0755,size=10%`).
    pub data: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DaemonLog {
    pub path: Option<PathBuf>,
    pub console: bool,
    /// Rotate `path` when it would exceed this many bytes.
    pub max_size: u64,
    /// How many rotated files (`path.1` .. `path.<keep>`) to keep.
    pub keep: u32,
}

/// `coffey.events`: the event log file, rotated as the daemon log is.
#[derive(Debug, Clone, PartialEq)]
pub struct EventLog {
    pub path: PathBuf,
    pub max_size: u64,
    pub keep: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceLogs {
    /// When set, each service's output is also written to `<dir>/<name>.log`.
    pub dir: Option<PathBuf>,
    /// Rotate when the file would exceed this many bytes.
    pub max_size: u64,
    /// How many rotated files (`name.log.1` .. `name.log.<keep>`) to keep.
    pub keep: u32,
    /// Default ring buffer size per service, bytes.
    pub buffer: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub services: u32,
    pub clients: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Service,
    Oneshot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Started,
    Healthy,
    Completed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Dep {
    pub name: String,
    pub condition: Condition,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub initial: Millis,
    pub max: Millis,
    pub multiplier: f64,
    pub reset_after: Millis,
}

/// A service's `resources:`; None = not set (the kernel's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    /// Bytes, for `memory.max`.
    pub memory_max: Option<u64>,
    /// Processes and threads, for `pids.max`.
    pub pids_max: Option<u32>,
    /// 1..=10000, for `cpu.weight` (the kernel's default is 100).
    pub cpu_weight: Option<u32>,
}

impl Resources {
    pub fn is_set(&self) -> bool {
        *self != Resources::default()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceLog {
    /// Output file; None = ring buffer only.
    pub file: Option<PathBuf>,
    /// Copy each line to the daemon's console log too.
    pub console: bool,
    /// Ring buffer size in bytes.
    pub buffer: u32,
    /// `to:`: the logger service whose stdin gets each line too.
    pub to: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    /// `GET path HTTP/1.1` to `addr`. Resolved at load time: the host is an
    /// IP literal or `localhost` (there is no DNS at boot).
    Http {
        /// As written in the config.
        url: String,
        /// Where to connect (default port 80).
        addr: SocketAddr,
        /// For the `Host:` header: the URL's authority as written,
        /// including the port if one was given (`127.0.0.1:8080`, `[::1]`).
        host: String,
        /// Request target: path and query, `/` when the URL has none.
        path: String,
        /// Exact status required; None = any 2xx or 3xx.
        expect_status: Option<u16>,
    },
    /// A connect() to `addr` that succeeds.
    Tcp {
        /// As written in the config.
        address: String,
        addr: SocketAddr,
    },
    /// argv; argv[0] is absolute and was executable at load time. A string
    /// in the config becomes `/bin/sh -c STRING`.
    Exec { command: Vec<String> },
    /// Readiness by notification (readiness checks only).
    Notify {
        /// s6 `notification-fd` / dinit `ready-notification = pipefd:N`: the
        /// service writes a line to this fd (3..=255). None = sd_notify
        /// `READY=1` on the datagram socket in `NOTIFY_SOCKET`.
        fd: Option<u32>,
        /// sd_notify only: `WATCHDOG=1` must arrive at least this often.
        watchdog: Option<Millis>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub kind: CheckKind,
    pub interval: Millis,
    pub timeout: Millis,
    /// Consecutive failures before unhealthy (>= 1).
    pub retries: u32,
    /// After start, failures in this window do not count.
    pub start_period: Millis,
    /// Consecutive successes before healthy (>= 1).
    pub success_threshold: u32,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Healthcheck {
    pub readiness: Option<Check>,
    pub liveness: Option<Check>,
    /// Runs first; readiness and liveness start only once it has passed.
    pub startup: Option<Check>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    pub name: String,
    /// Absolute path. Whether it is executable is a fact about the target
    /// system: a warning at load time, an exec failure at start.
    pub binary: PathBuf,
    /// argv[1..]; argv[0] is the binary path.
    pub args: Vec<String>,
    /// KEY=VALUE entries, in order. Added to (and overriding) the daemon's env.
    pub env: Vec<String>,
    pub working_dir: Option<PathBuf>,
    /// Resolved user: (name, uid, primary gid).
    pub user: Option<(String, u32, u32)>,
    /// Resolved group: (name, gid). Overrides the user's primary group.
    pub group: Option<(String, u32)>,
    /// Supplementary groups of `user`, resolved at load time (initgroups:
    /// the primary or `group` gid first, then the groups listing `user`).
    pub supplementary_gids: Vec<u32>,
    /// `HOME=`, `USER=`, `LOGNAME=`, `SHELL=` from `user`'s passwd entry,
    /// those that `env` does not set. Added after `env`.
    pub login_env: Vec<String>,
    /// Set when `user` or `group` cannot be resolved on this system
    /// ("user not found: x"): the service's every start fails with this
    /// reason and is retried with its backoff; a reload resolves it again.
    pub cred_error: Option<String>,
    pub umask: Option<u32>,
    /// `rlimits:`, set with setrlimit(2) in the child before exec.
    pub rlimits: Vec<Rlimit>,
    pub kind: Kind,
    pub restart: Restart,
    pub backoff: Backoff,
    /// Consecutive failures before `failed`; 0 = never give up.
    pub max_restarts: u32,
    /// Crashes in a row that make it `degraded` (an event and a log line,
    /// again at every multiple); 0 = never.
    pub degraded_after: u32,
    /// Signal number.
    pub stop_signal: i32,
    pub stop_timeout: Millis,
    /// cgroup v2 limits (`memory.max`, `pids.max`, `cpu.weight`).
    pub resources: Resources,
    pub depends_on: Vec<Dep>,
    pub log: ServiceLog,
    pub healthcheck: Healthcheck,
    /// Fail the start when readiness has not come this long after spawn;
    /// None = wait forever.
    pub start_timeout: Option<Millis>,
    /// `fds:`, sorted by number.
    pub fds: Vec<ServiceFd>,
    /// LISTEN_FDNAMES: the entry names of `fds`, in order, colon-separated.
    pub fd_names: String,
}

/// One `rlimits:` entry. `u64::MAX` is `unlimited` (RLIM_INFINITY).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    /// The name in the config (`nofile`).
    pub name: &'static str,
    /// The `RLIMIT_*` number.
    pub resource: u32,
    pub soft: u64,
    pub hard: u64,
}
