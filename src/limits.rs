//! Every fixed capacity of coffeyd, named in one place.
//!
//! Sizes that depend on the config (service slots, ring buffers) are chosen
//! at startup from `coffey.limits` and `log.buffer`; what is here is the
//! compile-time part. When something is full the code returns `Err` and
//! reports it; it never panics and never grows.
//!
//! The config loader includes this file too (by path, so that the fuzzed
//! config crate stays self-contained): the limits a config can hit are
//! checked there, once, for validate, startup and reload alike.

/// Longest service name, bytes (validated by the config loader).
pub const NAME_MAX: usize = 31;
/// Most services one daemon supervises (table size ceiling; the config
/// loader refuses more).
pub const MAX_SERVICES: u32 = 4096;
/// Most simultaneous control clients (`limits.clients` ceiling).
pub const MAX_CLIENTS: u32 = 256;
/// Events kept per service for `status <svc>` (a small ring).
pub const RECENT_EVENTS: usize = 8;
/// A slot's copy of its service name: `NAME_MAX` bytes fit.
pub const NAME_BUF: usize = 32;
/// A slot's `NOTIFY_SOCKET=@coffeyd/<pid>/<slot>` entry, NUL-terminated.
pub const NOTIFY_ENV_MAX: usize = 80;
/// The last sd_notify `STATUS=` text kept per slot; longer is cut.
pub const NOTIFY_STATUS_MAX: usize = 120;
/// An HTTP check's request (`GET path HTTP/1.1` and its headers), built
/// once at configuration time.
pub const HTTP_REQUEST_MAX: usize = 768;
/// An HTTP check's response head read per probe (status line and
/// headers; the body is not read).
pub const HTTP_RESPONSE_MAX: usize = 512;
/// Bytes of an exec check's output read per read(2) call.
pub const CHECK_READ_CHUNK: usize = 512;
/// Most `depends_on` entries per service.
pub const MAX_DEPS: usize = 16;
/// Longest output line kept whole; longer lines are cut and marked.
pub const LINE_MAX: usize = 1024;
/// Bytes read from one pipe per read(2) call (one shared buffer).
pub const READ_CHUNK: usize = 4096;
/// Reads from one pipe per loop turn before moving on (fairness budget).
pub const READS_PER_TURN: usize = 16;
/// Services spawned per loop turn. The rest wait for the next turn, which
/// reaps first: in a crash storm at most about this many children are
/// zombies at once (each exits during the spawns of its own turn), and a
/// turn never forks for long (a fork copies the daemon's page tables).
///
/// 2, not 4: with spawns cloned (no page-table copy) the crash storm ran
/// at 1,300-1,480 restarts/s and a turn preempted mid-spawn let 8-21
/// zombies gather (bound: 8); with 2 it runs at 1,400-1,650/s with 6-8.
pub const SPAWNS_PER_TURN: usize = 2;
/// And by time: once a turn has run this long (wall µs), it spawns no
/// more. A spawn waits for its child's execve (until issue 10 that exec
/// also closed a copy of every descriptor the daemon has, some 1.3 ms
/// with 1,000 services; the child now keeps only a few, see
/// `daemon/spawn.rs`), and on a loaded machine a wait can be long. The
/// first spawn of a turn is always allowed.
pub const SPAWN_SLICE_US: u64 = 2_000;
/// mio events handled per poll.
pub const EVENTS: usize = 64;
/// Processes outside its group (daemons that called setsid) tracked per
/// service, to be stopped with its run; more are counted, not stopped.
pub const MAX_ESCAPEES: usize = 4;
/// Reaped children handled as one batch: escapees are attributed only
/// when one service's main process is in the batch (see
/// `daemon/escape.rs`).
pub const REAP_BATCH: usize = 64;
/// Retry delay after a temporary spawn failure (EAGAIN, EMFILE, ENOMEM).
/// It is not a restart and does not grow the backoff.
pub const TEMP_RETRY_MS: u64 = 1000;
/// Shutdown: this long before `shutdown_timeout` ends (or a quarter of it,
/// if shorter), services not yet signalled get their stop signal anyway,
/// dependents first, so each sees a signal before the final SIGKILL.
pub const SHUTDOWN_LAST_CALL_MS: u64 = 1000;
/// After the final SIGKILL, how long to wait for the reaps (so the last
/// exit status of every service is known) before exiting anyway: a process
/// in uninterruptible sleep can outlive any signal.
pub const SHUTDOWN_REAP_GRACE_MS: u64 = 2000;
/// Output buffer per control connection. A streaming reader that falls
/// this far behind loses lines (counted, then reported to it).
pub const CONN_OUT_BUF: usize = 16 * 1024;
/// A control connection with no request in progress is closed after this.
pub const IDLE_TIMEOUT_MS: u64 = 30_000;
/// A request must be complete this long after its first byte; later bytes
/// do not extend it (a client dribbling a byte a second cannot hold a
/// slot). The connection then gets an error and is closed.
pub const REQUEST_TIMEOUT_MS: u64 = 2_000;
/// A connection whose output has waited this long without the peer
/// reading any of it is closed (a stream after a `Dropped` marker): a
/// subscriber that never reads cannot hold its slot.
pub const STALL_TIMEOUT_MS: u64 = 10_000;
/// Of `limits.clients`, this many slots are kept for root and the
/// daemon's own uid (fewer if `limits.clients` is small: read-only peers
/// always keep at least one).
pub const RESERVED_CLIENTS: usize = 2;
/// Most connections one read-only uid (neither root nor the daemon's
/// own) may hold at once.
pub const CLIENTS_PER_UID: usize = 4;
/// Connections accepted (or refused) per loop turn; more wait a turn.
pub const ACCEPTS_PER_TURN: usize = 64;
/// While accept(2) fails for want of descriptors or memory (EMFILE,
/// ENFILE, ENOBUFS, ENOMEM), it is retried this often: the queued
/// connection makes no new readiness edge.
pub const ACCEPT_RETRY_MS: u64 = 100;
/// Refusals (`busy`) are logged one line per this window: the first at
/// once, the rest as a count at the window's end.
pub const REFUSAL_LOG_WINDOW_MS: u64 = 10_000;
/// Per-service buffer for the binary path, working dir, argv and the
/// service's own env entries (the inherited environment is shared).
pub const EXEC_ARENA: usize = 8 * 1024;
/// Most arguments per service.
pub const MAX_ARGS: usize = 128;
/// Most `env` entries per service.
pub const MAX_ENV_EXTRA: usize = 64;
/// Most supplementary groups per service.
pub const MAX_GROUPS: usize = 64;
/// `rlimits:` entries per service: one per resource setrlimit(2) knows
/// (RLIMIT_NLIMITS is 16 on Linux), so every name fits.
pub const MAX_RLIMITS: usize = 16;
/// Login environment entries `user:` adds (HOME, USER, LOGNAME, SHELL),
/// beyond the service's own `env`.
pub const LOGIN_ENV: usize = 4;
/// Longest daemon log line, bytes (longer lines are cut).
pub const LOG_LINE_MAX: usize = 1280;
/// Longest path the daemon builds at run time (log rotation names).
pub const PATH_MAX: usize = 512;
/// Longest service log file path: room is left for the rotation suffix
/// (`.N`, up to 12 bytes; daemon/logfile.rs checks the same).
pub const LOG_PATH_MAX: usize = PATH_MAX - 12;
/// File descriptors the daemon holds for itself: poll, signalfd, /dev/null,
/// daemon log, control socket, stdin/out/err, plus slack for spawn's
/// status pipe.
pub const FDS_BASE: usize = 12;
/// Per service: stdout and stderr pipes (both ends kept open so output
/// survives restarts), one log file, the sd_notify socket, the readiness
/// pipe, one socket or pipe per health probe in flight, and its cgroup
/// (the directory and the polled `cgroup.events`), and both ends of its
/// logger pipe if it is a logger service.
pub const FDS_PER_SERVICE: usize = 13;
/// Per client connection.
pub const FDS_PER_CLIENT: usize = 1;

const _: () = assert!(NAME_MAX < 256);
const _: () = assert!(NAME_MAX < NAME_BUF);
const _: () = assert!(LINE_MAX <= READ_CHUNK);
const _: () = assert!(LINE_MAX + 64 < LOG_LINE_MAX);
const _: () = assert!(MAX_DEPS <= 64);

/// Each of reload's two compiled-config buffers (the running config and
/// the next): four times today's compiled size, or 4 KiB per slot plus
/// 64 KiB if that is more, so a reload may grow the config.
pub const fn reload_buffer(compiled: usize, slots: usize) -> usize {
    let grown = compiled.saturating_mul(4);
    let per_slot = slots.saturating_mul(4096).saturating_add(64 * 1024);
    if grown > per_slot {
        grown
    } else {
        per_slot
    }
}

/// File descriptors needed for `services` slots and `clients` connections.
pub const fn fd_budget(services: usize, clients: usize) -> usize {
    FDS_BASE + services * FDS_PER_SERVICE + clients * FDS_PER_CLIENT
}

/// The `PATH` a bare program name in `command:` is looked up in when
/// neither the service's environment nor the daemon's has one (systemd's
/// default for services).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Longest candidate path (a `PATH` directory, `/`, the name, NUL) the
/// spawn child builds for a bare program name: PATH_MAX. A longer one is
/// skipped, as execvp(3) skips it.
pub const EXEC_PATH_MAX: usize = 4096;
