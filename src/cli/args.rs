//! Command-line parsing for every role (lexopt): which role this process
//! plays, the global flags, and the client subcommand with its operands.
//!
//! Pure: takes argv[0] and the arguments, returns an [`Invocation`] or a
//! [`UsageError`] (exit code 2). It never touches the socket or the config.
//! Options may appear anywhere, before or after the subcommand; options that
//! belong to one subcommand are rejected with any other.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use crate::config;

/// The main config file when `-c` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/coffey/config.yaml";
/// `--timeout` when not given, for start/stop/restart/shutdown.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// `logs -n` when not given.
pub const DEFAULT_LINES: u16 = 50;

/// A bad command line. Printed to stderr; exit code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Flags shared by every client command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Global {
    /// `-j/--json`: JSON on stdout.
    pub json: bool,
    /// `-v` count, 0..=3 (more are clamped).
    pub verbose: u8,
    /// `-s/--socket PATH`.
    pub socket: Option<PathBuf>,
    /// `-c/--config FILE` (used to find the socket).
    pub config: Option<PathBuf>,
}

/// The three verbs that change a service and can wait for the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Start,
    Stop,
    Restart,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Start => "start",
            Verb::Stop => "stop",
            Verb::Restart => "restart",
        }
    }
}

/// `--no-wait` / `--timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    pub wait: bool,
    pub timeout_ms: u64,
}

/// What `wait` waits for (`--running`, the default, `--healthy`,
/// `--completed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    Running,
    Healthy,
    Completed,
}

impl Until {
    pub fn as_str(self) -> &'static str {
        match self {
            Until::Running => "running",
            Until::Healthy => "healthy",
            Until::Completed => "completed",
        }
    }
}

/// One client subcommand with its operands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Status {
        name: Option<String>,
    },
    Control {
        verb: Verb,
        names: Vec<String>,
        wait: Wait,
    },
    Signal {
        name: String,
        signal: i32,
    },
    /// `logs [NAME...]`: one service as before; none (every service) or
    /// several: merged by time, each line after its service's name.
    Logs {
        names: Vec<String>,
        lines: u16,
        follow: bool,
        /// `--since DUR`: only lines no older than this.
        since_ms: Option<u64>,
    },
    Events,
    /// `wait NAME...`: until each is in `until`, or `timeout_ms` (none:
    /// for ever).
    Wait {
        names: Vec<String>,
        until: Until,
        timeout_ms: Option<u64>,
    },
    Reload {
        dry_run: bool,
    },
    Shutdown {
        wait: Wait,
    },
    /// PID 1: stop everything, then poweroff (0), reboot (1) or halt (2).
    Power {
        action: u8,
    },
    /// Re-exec the daemon binary, keeping the services running.
    Reexec,
    /// Hidden, debug builds only: make the daemon panic (emergency path).
    DebugPanic,
    Version,
    /// `metrics`: the figures in the Prometheus text format (`-j`: JSON).
    Metrics,
}

/// What this process will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// Run the supervisor with this config. `container`: `--container`.
    Daemon { config: PathBuf, container: bool },
    /// `validate`: check a config offline; `root`: against an image tree.
    Validate {
        config: PathBuf,
        json: bool,
        root: Option<PathBuf>,
    },
    /// `-h/--help` or `help`.
    Help,
    /// A client of the control socket.
    Client { global: Global, cmd: Command },
}

/// argv[0] `poweroff`, `reboot` or `halt` (busybox-style symlinks): that
/// verb, as a client.
pub fn power_name(argv0: Option<&OsStr>) -> Option<&'static str> {
    let n = argv0.and_then(|a| Path::new(a).file_name())?;
    ["poweroff", "reboot", "halt"].into_iter().find(|v| n == *v)
}

/// True when argv[0]'s basename is `coffeyctl`: client-only mode.
pub fn is_ctl_name(argv0: Option<&OsStr>) -> bool {
    argv0
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|n| n == "coffeyctl")
}

/// The program name for messages and usage.
pub fn prog(client_only: bool) -> &'static str {
    if client_only {
        "coffeyctl"
    } else {
        "coffeyd"
    }
}

/// Full help text.
pub fn usage(client_only: bool) -> String {
    let p = prog(client_only);
    let mut s = String::new();
    if client_only {
        s.push_str(&format!("usage: {p} [OPTIONS] COMMAND [ARGS]\n"));
    } else {
        s.push_str(&format!(
            "usage: {p} [-c FILE]                 run the supervisor\n       \
             {p} [ctl] COMMAND [ARGS]      talk to a running supervisor\n"
        ));
    }
    s.push_str(&format!(
        "
commands:
  status [SERVICE]                 all services, or one in detail
  start SERVICE...                 start and wait until running (or completed)
  stop SERVICE...                  stop and wait until stopped
  restart SERVICE...               restart and wait until running again
  signal SERVICE SIG               send a signal (TERM, SIGTERM or 15)
  logs [SERVICE...]                last lines (of every service, or several
                                   merged by time: NAME | LINE), then follow
  events                           stream service events
  metrics                          figures in the Prometheus text format
  wait SERVICE... [--running|--healthy|--completed] [--timeout DUR]
                                   block until each service is in that state
  reload [--dry-run]               re-read the config and apply (or show) the plan
  validate [-c FILE] [--root DIR]  check a config offline (--root: against
                                   the image tree DIR: binaries, users, groups)
  shutdown                         stop every service and the supervisor
  poweroff | reboot | halt         as a machine's init: stop everything, then that
                                   (also as argv[0], e.g. a /sbin/poweroff symlink)
  reexec                           re-exec the daemon binary, keeping services
  version                          client and daemon versions
  help                             this help

options:
  -j, --json            JSON output on stdout
  -v                    more detail (repeat for more)
  -s, --socket PATH     control socket (default: from the config, else
                        /run/coffey.sock as root, $XDG_RUNTIME_DIR/coffey.sock
                        or /tmp/coffey-UID.sock)
  -c, --config FILE     config file (default {DEFAULT_CONFIG})
      --no-wait         start/stop/restart/shutdown: return at once
      --timeout DUR     how long to wait (default 30s, wait: for ever;
                        e.g. 500ms, 5s, 1m)
      --running         wait: until running or completed (the default)
      --healthy         wait: until running with every check healthy
      --completed       wait: until completed (a oneshot)
  -n, --lines N         logs: lines of history per service (default {DEFAULT_LINES})
      --since DUR       logs: only lines from the last DUR (e.g. 10m)
  -f, --follow          logs: keep streaming (the default)
      --no-follow       logs: print the history and exit
      --dry-run         reload: show the plan only
      --container       daemon: run as a container's init (no mounts/reboot)
  -h, --help            this help

exit codes: 0 ok, 1 failed, 2 usage, 3 unknown service, 4 daemon not
running, 5 timeout, 6 permission denied. See docs/CLI.md.
"
    ));
    s
}

/// Raw option values before they are matched with a subcommand.
#[derive(Default)]
struct Opts {
    global: Global,
    help: bool,
    version_flag: bool,
    no_wait: bool,
    timeout: Option<u64>,
    lines: Option<u16>,
    follow: Option<bool>,
    since: Option<u64>,
    dry_run: bool,
    /// `wait --running|--healthy|--completed`.
    until: Option<Until>,
    /// `--container`: run as a container's init even if checks say system.
    container: bool,
    /// `validate --root DIR`.
    root: Option<PathBuf>,
    /// Subcommand-specific options seen, for "does not apply" errors.
    specific: Vec<&'static str>,
}

fn utf8(v: OsString, what: &str) -> Result<String, UsageError> {
    v.into_string().map_err(|v| {
        UsageError(format!(
            "{what} is not valid UTF-8: {}",
            v.to_string_lossy()
        ))
    })
}

fn from_lexopt(e: lexopt::Error) -> UsageError {
    UsageError(e.to_string())
}

/// Parses the arguments after argv[0].
pub fn parse<I>(args: I, client_only: bool) -> Result<Invocation, UsageError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    use lexopt::prelude::*;
    let mut o = Opts::default();
    let mut words: Vec<String> = Vec::new();
    let mut p = lexopt::Parser::from_args(args);
    while let Some(arg) = p.next().map_err(from_lexopt)? {
        match arg {
            Short('j') | Long("json") => o.global.json = true,
            Short('v') | Long("verbose") => o.global.verbose = o.global.verbose.saturating_add(1),
            Short('s') | Long("socket") => {
                o.global.socket = Some(p.value().map_err(from_lexopt)?.into())
            }
            Short('c') | Long("config") => {
                o.global.config = Some(p.value().map_err(from_lexopt)?.into())
            }
            Short('h') | Long("help") => o.help = true,
            Short('V') | Long("version") => o.version_flag = true,
            Long("no-wait") => {
                o.no_wait = true;
                o.specific.push("--no-wait");
            }
            Long("timeout") => {
                let v = utf8(p.value().map_err(from_lexopt)?, "--timeout")?;
                let ms = config::parse_duration(&v)
                    .map_err(|e| UsageError(format!("invalid --timeout '{v}': {e}")))?;
                o.timeout = Some(ms);
                o.specific.push("--timeout");
            }
            Short('n') | Long("lines") => {
                let v = utf8(p.value().map_err(from_lexopt)?, "-n")?;
                let n: u16 = v.trim().parse().map_err(|_| {
                    UsageError(format!("invalid -n '{v}': expected a number 0..=65535"))
                })?;
                o.lines = Some(n);
                o.specific.push("-n");
            }
            Short('f') | Long("follow") => {
                o.follow = Some(true);
                o.specific.push("--follow");
            }
            Long("since") => {
                let v = utf8(p.value().map_err(from_lexopt)?, "--since")?;
                let ms = config::parse_duration(&v)
                    .map_err(|e| UsageError(format!("invalid --since '{v}': {e}")))?;
                o.since = Some(ms);
                o.specific.push("--since");
            }
            Long("no-follow") => {
                o.follow = Some(false);
                o.specific.push("--no-follow");
            }
            Long("dry-run") => {
                o.dry_run = true;
                o.specific.push("--dry-run");
            }
            Long("running") | Long("healthy") | Long("completed") => {
                let (u, flag) = match arg {
                    Long("healthy") => (Until::Healthy, "--healthy"),
                    Long("completed") => (Until::Completed, "--completed"),
                    _ => (Until::Running, "--running"),
                };
                if o.until.is_some_and(|was| was != u) {
                    return Err(UsageError(
                        "wait takes one of --running, --healthy, --completed".into(),
                    ));
                }
                o.until = Some(u);
                o.specific.push(flag);
            }
            Long("container") => o.container = true,
            Long("root") => {
                o.root = Some(p.value().map_err(from_lexopt)?.into());
                o.specific.push("--root");
            }
            Value(v) => words.push(utf8(v, "argument")?),
            _ => return Err(from_lexopt(arg.unexpected())),
        }
    }
    build(o, words, client_only)
}

fn build(o: Opts, words: Vec<String>, client_only: bool) -> Result<Invocation, UsageError> {
    let mut words = words.into_iter();
    let first = match first_word(&o, &mut words, client_only)? {
        First::Word(w) => w,
        First::Done(inv) => return Ok(inv),
    };
    let rest: Vec<String> = words.collect();
    check_flags(&o, &first)?;
    if first == "validate" {
        no_operands(&first, &rest)?;
        return Ok(Invocation::Validate {
            config: o
                .global
                .config
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG)),
            json: o.global.json,
            root: o.root,
        });
    }
    let cmd = command(&o, &first, rest)?;
    let mut global = o.global;
    global.verbose = global.verbose.min(3);
    Ok(Invocation::Client { global, cmd })
}

/// The command word, or what the arguments mean without one.
enum First {
    Word(String),
    Done(Invocation),
}

/// The command word (after an optional `ctl`); help, the version flag
/// and the daemon itself need none.
fn first_word(
    o: &Opts,
    words: &mut impl Iterator<Item = String>,
    client_only: bool,
) -> Result<First, UsageError> {
    let mut first = words.next();
    if first.as_deref() == Some("ctl") {
        first = words.next();
        if first.is_none() && !o.help {
            return Err(UsageError("'ctl' needs a command (e.g. ctl status)".into()));
        }
    }
    if o.help || first.as_deref() == Some("help") {
        return Ok(First::Done(Invocation::Help));
    }
    match (first, o.version_flag) {
        (Some(w), _) => Ok(First::Word(w)),
        (None, true) => Ok(First::Word("version".to_owned())),
        (None, false) if client_only => Err(UsageError("a command is required".into())),
        (None, false) => daemon(o).map(First::Done),
    }
}

/// No command word: the daemon, which takes only `-c` (and `--container`).
fn daemon(o: &Opts) -> Result<Invocation, UsageError> {
    let g = &o.global;
    if g.json || g.verbose > 0 || g.socket.is_some() || !o.specific.is_empty() {
        return Err(UsageError(
            "client options need a command (e.g. status); the daemon takes only -c".into(),
        ));
    }
    Ok(Invocation::Daemon {
        config: g
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG)),
        container: o.container,
    })
}

/// Each command-specific flag given must apply to `first`.
fn check_flags(o: &Opts, first: &str) -> Result<(), UsageError> {
    let allowed: &[&str] = match first {
        "start" | "stop" | "restart" | "shutdown" => &["--no-wait", "--timeout"],
        "logs" => &["-n", "--follow", "--no-follow", "--since"],
        "reload" => &["--dry-run"],
        "wait" => &["--timeout", "--running", "--healthy", "--completed"],
        "validate" => &["--root"],
        _ => &[],
    };
    match o.specific.iter().find(|s| !allowed.contains(s)) {
        Some(bad) => Err(UsageError(format!("{bad} does not apply to '{first}'"))),
        None => Ok(()),
    }
}

fn no_operands(first: &str, rest: &[String]) -> Result<(), UsageError> {
    match rest.first() {
        None => Ok(()),
        Some(x) => Err(UsageError(format!(
            "'{first}' takes no arguments (got '{x}')"
        ))),
    }
}

/// The client command `first` with its operands `rest`.
fn command(o: &Opts, first: &str, rest: Vec<String>) -> Result<Command, UsageError> {
    let wait = Wait {
        wait: !o.no_wait,
        timeout_ms: o.timeout.unwrap_or(DEFAULT_TIMEOUT_MS),
    };
    let bare = |cmd: Command| no_operands(first, &rest).map(|()| cmd);
    match first {
        "status" => match rest.as_slice() {
            [] => Ok(Command::Status { name: None }),
            [n] => Ok(Command::Status {
                name: Some(n.clone()),
            }),
            _ => Err(UsageError("'status' takes at most one service".into())),
        },
        "start" | "stop" | "restart" => control(first, rest, wait),
        "signal" => signal(&rest),
        // With --since and no -n, as many lines as the rings hold.
        "logs" => Ok(Command::Logs {
            names: rest,
            lines: o.lines.unwrap_or(if o.since.is_some() {
                u16::MAX
            } else {
                DEFAULT_LINES
            }),
            follow: o.follow.unwrap_or(true),
            since_ms: o.since,
        }),
        "wait" if rest.is_empty() => Err(UsageError("'wait' needs at least one service".into())),
        "wait" => Ok(Command::Wait {
            names: rest,
            until: o.until.unwrap_or(Until::Running),
            timeout_ms: o.timeout,
        }),
        "events" => bare(Command::Events),
        "reload" => bare(Command::Reload { dry_run: o.dry_run }),
        "shutdown" => bare(Command::Shutdown { wait }),
        "version" => bare(Command::Version),
        "metrics" => bare(Command::Metrics),
        "poweroff" => bare(Command::Power { action: 0 }),
        "reboot" => bare(Command::Power { action: 1 }),
        "halt" => bare(Command::Power { action: 2 }),
        "reexec" => bare(Command::Reexec),
        "__panic" => Ok(Command::DebugPanic),
        other => Err(UsageError(format!("unknown command '{other}'"))),
    }
}

/// `start`, `stop`, `restart`: one service or more.
fn control(first: &str, names: Vec<String>, wait: Wait) -> Result<Command, UsageError> {
    let verb = match first {
        "start" => Verb::Start,
        "stop" => Verb::Stop,
        _ => Verb::Restart,
    };
    if names.is_empty() {
        return Err(UsageError(format!("'{first}' needs at least one service")));
    }
    Ok(Command::Control { verb, names, wait })
}

fn signal(rest: &[String]) -> Result<Command, UsageError> {
    match rest {
        [n, s] => Ok(Command::Signal {
            name: n.clone(),
            signal: config::parse_signal(s)
                .map_err(|e| UsageError(format!("invalid signal: {e}")))?,
        }),
        _ => Err(UsageError("usage: signal SERVICE SIGNAL".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Invocation, UsageError> {
        parse(args.iter().copied(), false)
    }

    fn client(args: &[&str]) -> (Global, Command) {
        match p(args).unwrap() {
            Invocation::Client { global, cmd } => (global, cmd),
            other => panic!("{args:?} gave {other:?}"),
        }
    }

    #[test]
    fn no_command_is_the_daemon() {
        assert_eq!(
            p(&[]).unwrap(),
            Invocation::Daemon {
                config: DEFAULT_CONFIG.into(),
                container: false
            }
        );
        assert_eq!(
            p(&["-c", "/x.yaml"]).unwrap(),
            Invocation::Daemon {
                config: "/x.yaml".into(),
                container: false
            }
        );
        // Client flags without a command are a usage error, not a daemon.
        assert!(p(&["-j"]).is_err());
        assert!(p(&["-s", "/x.sock"]).is_err());
        assert!(p(&["--timeout", "5s"]).is_err());
    }

    #[test]
    fn ctl_prefix_is_the_same_command() {
        assert_eq!(client(&["status"]), client(&["ctl", "status"]));
        assert_eq!(
            client(&["ctl", "start", "a", "b"]).1,
            Command::Control {
                verb: Verb::Start,
                names: vec!["a".into(), "b".into()],
                wait: Wait {
                    wait: true,
                    timeout_ms: DEFAULT_TIMEOUT_MS
                }
            }
        );
        assert!(p(&["ctl"]).is_err());
    }

    #[test]
    fn coffeyctl_is_client_only() {
        assert!(is_ctl_name(Some(OsStr::new("/usr/bin/coffeyctl"))));
        assert!(is_ctl_name(Some(OsStr::new("coffeyctl"))));
        assert!(!is_ctl_name(Some(OsStr::new("/sbin/coffeyd"))));
        assert!(!is_ctl_name(None));
        assert!(parse(Vec::<&str>::new(), true).is_err());
        assert!(parse(["-c", "/x"], true).is_err());
        assert_eq!(parse(["-h"], true).unwrap(), Invocation::Help);
        assert!(matches!(
            parse(["status"], true).unwrap(),
            Invocation::Client {
                cmd: Command::Status { name: None },
                ..
            }
        ));
        assert!(usage(true).starts_with("usage: coffeyctl"));
    }

    #[test]
    fn global_flags_anywhere() {
        let (g, c) = client(&["status", "-j", "api", "-vv", "--socket", "/s"]);
        assert!(g.json);
        assert_eq!(g.verbose, 2);
        assert_eq!(g.socket.as_deref(), Some(Path::new("/s")));
        assert_eq!(
            c,
            Command::Status {
                name: Some("api".into())
            }
        );
        let (g2, c2) = client(&["-j", "-v", "-v", "-s", "/s", "ctl", "status", "api"]);
        assert_eq!((g, c), (g2, c2));
        let (g, _) = client(&["-vvvvv", "-c", "/c.yaml", "events"]);
        assert_eq!(g.verbose, 3);
        assert_eq!(g.config.as_deref(), Some(Path::new("/c.yaml")));
    }

    #[test]
    fn timeout_and_no_wait() {
        let (_, c) = client(&["stop", "--timeout", "500ms", "a"]);
        assert_eq!(
            c,
            Command::Control {
                verb: Verb::Stop,
                names: vec!["a".into()],
                wait: Wait {
                    wait: true,
                    timeout_ms: 500
                }
            }
        );
        let (_, c) = client(&["restart", "a", "--timeout=1m", "--no-wait"]);
        assert_eq!(
            c,
            Command::Control {
                verb: Verb::Restart,
                names: vec!["a".into()],
                wait: Wait {
                    wait: false,
                    timeout_ms: 60_000
                }
            }
        );
        let (_, c) = client(&["shutdown", "--timeout", "5s"]);
        assert_eq!(
            c,
            Command::Shutdown {
                wait: Wait {
                    wait: true,
                    timeout_ms: 5000
                }
            }
        );
        assert!(p(&["start", "a", "--timeout", "soon"]).is_err());
        assert!(p(&["start", "a", "--timeout"]).is_err());
        assert!(p(&["status", "--timeout", "5s"]).is_err());
    }

    #[test]
    fn logs_signal_reload() {
        let logs = |names: &[&str], lines, follow, since_ms| Command::Logs {
            names: names.iter().map(|s| s.to_string()).collect(),
            lines,
            follow,
            since_ms,
        };
        assert_eq!(client(&["logs", "api"]).1, logs(&["api"], 50, true, None));
        assert_eq!(
            client(&["logs", "-n5", "--no-follow", "api"]).1,
            logs(&["api"], 5, false, None)
        );
        assert_eq!(
            client(&["logs", "-f", "api", "-n", "0"]).1,
            logs(&["api"], 0, true, None)
        );
        assert!(p(&["logs", "-n", "70000", "api"]).is_err());
        assert_eq!(client(&["logs"]).1, logs(&[], 50, true, None));
        assert_eq!(
            client(&["logs", "a", "b", "--since", "10m"]).1,
            logs(&["a", "b"], u16::MAX, true, Some(600_000))
        );
        assert_eq!(
            client(&["logs", "--since", "1s", "-n", "3"]).1,
            logs(&[], 3, true, Some(1000))
        );
        assert!(p(&["logs", "--since", "soon"]).is_err());
        assert!(p(&["status", "--since", "1s"]).is_err());
        assert_eq!(
            client(&["signal", "api", "HUP"]).1,
            Command::Signal {
                name: "api".into(),
                signal: 1
            }
        );
        assert_eq!(
            client(&["signal", "api", "SIGTERM"]).1,
            Command::Signal {
                name: "api".into(),
                signal: 15
            }
        );
        assert_eq!(
            client(&["signal", "api", "9"]).1,
            Command::Signal {
                name: "api".into(),
                signal: 9
            }
        );
        assert!(p(&["signal", "api", "NOPE"]).is_err());
        assert!(p(&["signal", "api"]).is_err());
        assert_eq!(
            client(&["reload", "--dry-run"]).1,
            Command::Reload { dry_run: true }
        );
        assert_eq!(client(&["reload"]).1, Command::Reload { dry_run: false });
    }

    #[test]
    fn wait_takes_names_a_state_and_a_timeout() {
        assert_eq!(
            client(&["wait", "a", "b"]).1,
            Command::Wait {
                names: vec!["a".into(), "b".into()],
                until: Until::Running,
                timeout_ms: None
            }
        );
        assert_eq!(
            client(&["wait", "a", "--healthy", "--timeout", "5s"]).1,
            Command::Wait {
                names: vec!["a".into()],
                until: Until::Healthy,
                timeout_ms: Some(5000)
            }
        );
        assert_eq!(
            client(&["wait", "--completed", "--completed", "a"]).1,
            Command::Wait {
                names: vec!["a".into()],
                until: Until::Completed,
                timeout_ms: None
            }
        );
        assert!(p(&["wait"]).is_err());
        assert!(p(&["wait", "a", "--healthy", "--running"]).is_err());
        assert!(p(&["status", "a", "--healthy"]).is_err());
        assert!(p(&["wait", "a", "--no-wait"]).is_err());
    }

    #[test]
    fn bad_usage() {
        for bad in [
            &["frobnicate"][..],
            &["status", "a", "b"],
            &["start"],
            &["events", "x"],
            &["status", "--bogus"],
            &["-x"],
            &["status", "--dry-run"],
            &["events", "-n", "3"],
            &["version", "extra"],
            &["status", "-s"],
        ] {
            assert!(p(bad).is_err(), "{bad:?} should be a usage error");
        }
    }

    #[test]
    fn help_version_validate() {
        assert_eq!(p(&["-h"]).unwrap(), Invocation::Help);
        assert_eq!(p(&["help"]).unwrap(), Invocation::Help);
        assert_eq!(p(&["status", "--help"]).unwrap(), Invocation::Help);
        assert_eq!(client(&["version"]).1, Command::Version);
        assert_eq!(client(&["metrics"]).1, Command::Metrics);
        assert_eq!(client(&["-V"]).1, Command::Version);
        assert_eq!(
            p(&["validate", "-c", "/a.yaml"]).unwrap(),
            Invocation::Validate {
                config: "/a.yaml".into(),
                json: false,
                root: None,
            }
        );
        assert_eq!(
            p(&["validate", "--root", "/img", "-c", "/a.yaml"]).unwrap(),
            Invocation::Validate {
                config: "/a.yaml".into(),
                json: false,
                root: Some("/img".into()),
            }
        );
        assert!(p(&["status", "--root", "/img"]).is_err());
        assert_eq!(
            p(&["-j", "validate"]).unwrap(),
            Invocation::Validate {
                config: DEFAULT_CONFIG.into(),
                json: true,
                root: None,
            }
        );
    }
}
