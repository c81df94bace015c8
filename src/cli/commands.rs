//! The client commands: one request/reply exchange each, plus the waiting
//! done by start/stop/restart and shutdown.
//!
//! Waiting is race-free: the event stream is subscribed on its own
//! connection *before* the command is sent, so no transition after the
//! command can be missed; a status snapshot after the command answers
//! "already there?", and the buffered events answer the rest. Every wait
//! has a deadline. Output goes to stdout (JSON with `-j`); failures are
//! returned to `cli::run`, which prints them to stderr.

use std::path::Path;
use std::time::{Duration, Instant};

use coffey::control::proto::{self, Names, Reply, Request, WireState};

use super::args::{Command, Global, Verb, Wait};
use super::client::{unexpected, Conn};
use super::render::{self, Ev, PlanRow, ServiceRow, Style, VersionInfo};
use super::socket;
use super::timefmt::{self, human_duration};
use super::{exit, Failure};
use super::{logs, wait};

/// How long a plain request waits for its reply.
pub(super) const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Reload may run a compile step first.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// The daemon's half of `version` is best effort.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);
/// Poll interval while waiting for a shutdown to finish.
const SHUTDOWN_POLL: Duration = Duration::from_millis(50);

/// Runs `cmd`; `Ok` holds the exit code (`status NAME` tells the state
/// by it, as `systemctl is-active` does).
pub fn run(g: &Global, cmd: &Command, style: Style) -> Result<i32, Failure> {
    let path = socket::resolve(
        g.socket.as_deref(),
        g.config.as_deref(),
        &socket::Env::current(),
        &socket::load_socket,
    )?;
    let done = match cmd {
        Command::Status { name } => return status(g, &path, name.as_deref(), style),
        Command::Control { verb, names, wait } => control(g, &path, *verb, names, *wait, style),
        Command::Signal { name, signal } => simple(
            g,
            &path,
            &Request::Signal {
                name,
                signal: *signal,
            },
        ),
        Command::Logs {
            names,
            lines,
            follow,
            since_ms,
        } => match names.as_slice() {
            [name] => logs(g, &path, name, *lines, *follow, since(*since_ms)),
            _ => logs::merged(g, &path, names, *lines, *follow, since(*since_ms)),
        },
        Command::Events => events(g, &path, style),
        Command::Wait {
            names,
            until,
            timeout_ms,
        } => wait::wait(g, &path, names, *until, *timeout_ms),
        Command::Reload { dry_run } => reload(g, &path, *dry_run),
        Command::Shutdown { wait } => shutdown(g, &path, *wait),
        Command::Version => version(g, &path),
        Command::Metrics => super::metrics::metrics(g, &path),
        Command::Power { action } => {
            one_shot(g, &path, &Request::Power { action: *action }, "power")
        }
        Command::Reexec => one_shot(g, &path, &Request::Reexec, "reexec"),
        Command::DebugPanic => one_shot(g, &path, &Request::DebugPanic, "debug panic"),
    };
    done.map(|()| exit::OK)
}

/// Sends one request that answers Ok or Error, and prints the answer.
fn one_shot(g: &Global, path: &Path, req: &Request<'_>, what: &str) -> Result<(), Failure> {
    let mut c = connect(path, REPLY_TIMEOUT)?;
    c.send(req)?;
    let message = c.expect_ok().map_err(|f| late(f, what))?;
    print_ok(g, &message);
    Ok(())
}

pub(super) fn connect(path: &Path, timeout: Duration) -> Result<Conn, Failure> {
    let mut c = Conn::connect(path)?;
    c.set_deadline(Some(Instant::now() + timeout));
    Ok(c)
}

/// A reply deadline ran out: say which request.
pub(super) fn late(f: Failure, what: &str) -> Failure {
    if f.code == exit::TIMEOUT {
        Failure::timeout(format!("no reply to {what} from the daemon"))
    } else {
        f
    }
}

pub(super) fn print_line(s: &str) -> bool {
    let mut b = s.as_bytes().to_vec();
    if !s.ends_with('\n') {
        b.push(b'\n');
    }
    render::print_bytes(&b)
}

/// Prints the Ok message of a command (`-j`: `{"ok": true, "message"}`).
fn print_ok(g: &Global, message: &str) {
    if g.json {
        render::print_json(&render::ok_json(message));
    } else if !message.is_empty() {
        print_line(message);
    }
}

/// `Detail` frames of `status <svc>`, in order.
pub(super) type Details = Vec<(String, String)>;

/// Reads every `Service` and `Detail` frame up to `End`.
pub(super) fn read_status(c: &mut Conn) -> Result<(Vec<ServiceRow>, Details), Failure> {
    let mut rows = Vec::new();
    let mut details = Vec::new();
    loop {
        let r = c.recv()?;
        if let Some(row) = ServiceRow::from_reply(&r) {
            rows.push(row);
            continue;
        }
        match r {
            Reply::Detail { key, value } => details.push((key.to_owned(), value.to_owned())),
            Reply::End => return Ok((rows, details)),
            Reply::Error { code, message } => return Err(Failure::from_daemon(code, message)),
            other => return Err(unexpected(&other)),
        }
    }
}

/// `status [NAME]`. Without a name it exits 0; with one, 0 only when the
/// service is `running` or `completed` and 3 ([`exit::NOT_ACTIVE`]) in
/// every other state.
fn status(g: &Global, path: &Path, name: Option<&str>, style: Style) -> Result<i32, Failure> {
    let mut c = connect(path, REPLY_TIMEOUT)?;
    c.send(&Request::Status {
        name: name.unwrap_or(""),
        verbose: g.verbose,
    })?;
    let (rows, details) = read_status(&mut c).map_err(|f| late(f, "status"))?;
    match name {
        None => {
            if g.json {
                let arr = rows.iter().map(render::service_json).collect();
                render::print_json(&serde_json::Value::Array(arr));
            } else {
                print_line(&render::status_table(&rows, g.verbose, style));
            }
        }
        Some(n) => {
            let row = rows
                .first()
                .ok_or_else(|| Failure::protocol(format!("the daemon sent no status for '{n}'")))?;
            if g.json {
                render::print_json(&render::service_detail_json(row, &details));
            } else {
                print_line(&render::status_detail(row, &details, style));
            }
            if !matches!(row.state, WireState::Running | WireState::Completed) {
                return Ok(exit::NOT_ACTIVE);
            }
        }
    }
    Ok(exit::OK)
}

/// A one-reply command: print its Ok message.
fn simple(g: &Global, path: &Path, req: &Request<'_>) -> Result<(), Failure> {
    let mut c = connect(path, REPLY_TIMEOUT)?;
    c.send(req)?;
    let msg = c.expect_ok().map_err(|f| late(f, "the command"))?;
    print_ok(g, &msg);
    Ok(())
}

/// One service being waited for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    pub name: String,
    pub state: Option<WireState>,
    pub pid: i32,
    /// The pid seen in the snapshot after the command.
    pub pid_then: i32,
    /// A `spawned` event arrived after the command was sent (restart).
    pub spawned: bool,
    /// An event put it in `failed`.
    pub failed: bool,
    /// Latest reason or event detail, for messages.
    pub note: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Pending,
    Done,
    Failed,
}

impl Target {
    fn new(name: &str) -> Target {
        Target {
            name: name.to_owned(),
            state: None,
            pid: 0,
            pid_then: 0,
            spawned: false,
            failed: false,
            note: String::new(),
        }
    }

    /// Has this target reached what `verb` asked for?
    ///
    /// A snapshot `failed` does not fail a start: commands change the
    /// wanted state first and the actual state on the daemon's next turn,
    /// so right after `start` a failed service may still read `failed`.
    /// Only a `failed` *event* counts.
    pub fn outcome(&self, verb: Verb) -> Outcome {
        let up = matches!(
            self.state,
            Some(WireState::Running) | Some(WireState::Completed)
        );
        match verb {
            Verb::Start if self.failed => Outcome::Failed,
            Verb::Start if up => Outcome::Done,
            Verb::Stop
                if matches!(
                    self.state,
                    Some(WireState::Stopped) | Some(WireState::Failed) | Some(WireState::Completed)
                ) =>
            {
                Outcome::Done
            }
            Verb::Restart if self.failed => Outcome::Failed,
            Verb::Restart if self.spawned && up => Outcome::Done,
            Verb::Start | Verb::Stop | Verb::Restart => Outcome::Pending,
        }
    }

    /// A status row (snapshot) for this target.
    pub fn snapshot(&mut self, row: &ServiceRow) {
        self.state = Some(row.state);
        self.pid = row.pid;
        if !row.reason.is_empty() {
            self.note = row.reason.clone();
        }
    }

    /// An event for this target.
    pub fn event(&mut self, e: &Ev<'_>) {
        self.state = Some(e.state);
        self.pid = e.pid;
        if e.kind == proto::event::SPAWNED {
            self.spawned = true;
        }
        // A later transition out of `failed` (e.g. the start revived it)
        // clears an earlier failure.
        self.failed = e.state == WireState::Failed;
        if !e.detail.is_empty() {
            self.note = e.detail.to_owned();
        }
    }

    fn describe(&self) -> String {
        let state = self.state.map_or("unknown", WireState::as_str);
        if self.note.is_empty() {
            format!("{} ({state})", self.name)
        } else {
            format!("{} ({state}: {})", self.name, self.note)
        }
    }
}

/// The overall outcome: Failed as soon as one failed, Done when all are.
pub(super) fn overall(targets: &[Target], verb: Verb) -> (Outcome, Option<&Target>) {
    let mut all = Outcome::Done;
    for t in targets {
        match t.outcome(verb) {
            Outcome::Failed => return (Outcome::Failed, Some(t)),
            Outcome::Pending => all = Outcome::Pending,
            Outcome::Done => {}
        }
    }
    (all, None)
}

/// Names in request-sized groups.
fn groups(names: &[String]) -> impl Iterator<Item = Names<'_>> {
    names.chunks(proto::MAX_NAMES).map(|chunk| {
        let mut n = Names::new();
        for s in chunk {
            // A chunk holds at most MAX_NAMES names, so this always fits.
            let _ = n.push(s.as_str());
        }
        n
    })
}

/// The Status snapshot on `c`, applied to `targets`.
fn snapshot(c: &mut Conn, targets: &mut [Target]) -> Result<(), Failure> {
    c.send(&Request::Status {
        name: "",
        verbose: 0,
    })?;
    let (rows, _) = read_status(c)?;
    for row in &rows {
        if let Some(t) = targets.iter_mut().find(|t| t.name == row.name) {
            t.snapshot(row);
        }
    }
    Ok(())
}

fn control(
    g: &Global,
    path: &Path,
    verb: Verb,
    names: &[String],
    wait: Wait,
    _style: Style,
) -> Result<(), Failure> {
    let deadline = Instant::now() + Duration::from_millis(wait.timeout_ms);
    // 1. Subscribe to events before anything can change.
    let mut ev = if wait.wait {
        let mut e = Conn::connect(path)?;
        e.set_deadline(Some(deadline));
        e.send(&Request::Events)?;
        e.expect_ok().map_err(|f| late(f, "events"))?;
        Some(e)
    } else {
        None
    };
    // 2. The command, in groups of MAX_NAMES.
    let mut c = Conn::connect(path)?;
    c.set_deadline(Some(deadline.max(Instant::now() + REPLY_TIMEOUT)));
    let mut messages: Vec<String> = Vec::new();
    for n in groups(names) {
        let req = match verb {
            Verb::Start => Request::Start { names: n },
            Verb::Stop => Request::Stop { names: n },
            Verb::Restart => Request::Restart { names: n },
        };
        c.send(&req)?;
        let m = c.expect_ok().map_err(|f| late(f, verb.as_str()))?;
        if !m.is_empty() {
            messages.push(m);
        }
    }
    let message = messages.join("; ");
    let Some(ev) = ev.as_mut() else {
        print_ok(g, &message);
        return Ok(());
    };
    // 3. Already there?
    let mut targets: Vec<Target> = Vec::new();
    for n in names {
        if !targets.iter().any(|t| &t.name == n) {
            targets.push(Target::new(n));
        }
    }
    c.set_deadline(Some(deadline.max(Instant::now() + REPLY_TIMEOUT)));
    snapshot(&mut c, &mut targets).map_err(|f| late(f, "status"))?;
    drop(c);
    for t in &mut targets {
        t.pid_then = t.pid;
    }
    // 4. Otherwise follow the events until done or the deadline.
    loop {
        match overall(&targets, verb) {
            (Outcome::Done, _) => break,
            (Outcome::Failed, Some(t)) => {
                let mut f = Failure::failed(format!("{} {}: failed", verb.as_str(), t.describe()));
                f.extra = Some(targets_extra(&targets));
                return Err(f);
            }
            _ => {}
        }
        let r = match ev.recv() {
            Ok(r) => r,
            Err(f) if f.code == exit::TIMEOUT => {
                let pending: Vec<String> = targets
                    .iter()
                    .filter(|t| t.outcome(verb) != Outcome::Done)
                    .map(Target::describe)
                    .collect();
                let mut f = Failure::timeout(format!(
                    "timed out after {} waiting to {}: {}",
                    human_duration(wait.timeout_ms),
                    verb.as_str(),
                    pending.join(", ")
                ));
                f.extra = Some(targets_extra(&targets));
                return Err(f);
            }
            Err(f) => return Err(f),
        };
        if let Some(e) = Ev::from_reply(&r) {
            if let Some(t) = targets.iter_mut().find(|t| t.name == e.service) {
                t.event(&e);
            }
            continue;
        }
        match r {
            Reply::Dropped { .. } => {
                // Events were lost: re-read the states. A new pid stands in
                // for a missed `spawned`.
                let mut c = Conn::connect(path)?;
                c.set_deadline(Some(deadline));
                snapshot(&mut c, &mut targets)?;
                for t in &mut targets {
                    if t.pid > 0 && t.pid != t.pid_then {
                        t.spawned = true;
                    }
                }
            }
            other => return Err(unexpected(&other)),
        }
    }
    if g.json {
        let mut m = targets_extra(&targets);
        m.insert("ok".into(), true.into());
        m.insert("message".into(), message.into());
        render::print_json(&serde_json::Value::Object(m));
    } else {
        let mut out = String::new();
        for t in &targets {
            let state = t.state.map_or("unknown", WireState::as_str);
            if t.pid > 0 {
                out.push_str(&format!("{}: {state} (pid {})\n", t.name, t.pid));
            } else {
                out.push_str(&format!("{}: {state}\n", t.name));
            }
        }
        print_line(&out);
    }
    Ok(())
}

/// `"services": [{"name", "state", "pid"}]` for control command JSON.
fn targets_extra(targets: &[Target]) -> serde_json::Map<String, serde_json::Value> {
    let arr = targets
        .iter()
        .map(|t| {
            serde_json::json!({
                "name": t.name,
                "state": t.state.map(WireState::as_str),
                "pid": if t.pid > 0 { Some(t.pid) } else { None },
            })
        })
        .collect();
    let mut m = serde_json::Map::new();
    m.insert("services".into(), serde_json::Value::Array(arr));
    m
}

/// `--since DUR` as the oldest wall-clock ms a line may have (0: any).
fn since(since_ms: Option<u64>) -> u64 {
    since_ms.map_or(0, |d| timefmt::now_ms().saturating_sub(d))
}

/// `logs NAME`: its lines as they come (no name prefix); lines older than
/// `oldest` (ms) are left out.
fn logs(
    g: &Global,
    path: &Path,
    name: &str,
    lines: u16,
    follow: bool,
    oldest: u64,
) -> Result<(), Failure> {
    let mut c = Conn::connect(path)?;
    if !follow {
        c.set_deadline(Some(Instant::now() + REPLY_TIMEOUT));
    }
    c.send(&Request::Logs {
        name,
        lines,
        follow,
    })?;
    let mut seen_end = false;
    loop {
        let r = match c.recv() {
            Ok(r) => r,
            // The daemon ended a followed stream after saying so.
            Err(f) if seen_end && f == Failure::closed() => return Ok(()),
            Err(f) => return Err(late(f, "logs")),
        };
        let printed = match r {
            Reply::LogLine { ts_ms, .. } if ts_ms < oldest => true,
            Reply::LogLine {
                service,
                ts_ms,
                stream,
                cut,
                text,
            } => {
                if g.json {
                    render::print_json(&render::log_json(service, ts_ms, stream, cut, text))
                } else {
                    render::print_bytes(&render::log_line(ts_ms, stream, cut, text))
                }
            }
            Reply::Dropped { count } => {
                if g.json {
                    render::print_json(&render::dropped_json(count))
                } else {
                    print_line(&render::dropped_line(count, "lines"))
                }
            }
            Reply::End if !follow => return Ok(()),
            Reply::End => {
                seen_end = true;
                true
            }
            // An acknowledgement before the lines carries nothing to show.
            Reply::Ok { .. } => true,
            Reply::Error { code, message } => return Err(Failure::from_daemon(code, message)),
            other => return Err(unexpected(&other)),
        };
        if !printed {
            // stdout is gone (e.g. `| head`): nothing more to do.
            return Ok(());
        }
    }
}

fn events(g: &Global, path: &Path, style: Style) -> Result<(), Failure> {
    let mut c = connect(path, REPLY_TIMEOUT)?;
    c.send(&Request::Events)?;
    c.expect_ok().map_err(|f| late(f, "events"))?;
    c.set_deadline(None);
    loop {
        let r = c.recv()?;
        let printed = if let Some(e) = Ev::from_reply(&r) {
            if g.json {
                render::print_bytes(&render::event_json(&e))
            } else {
                print_line(&render::event_line(&e, style))
            }
        } else {
            match r {
                Reply::Dropped { count } => {
                    if g.json {
                        render::print_json(&render::dropped_json(count))
                    } else {
                        print_line(&render::dropped_line(count, "events"))
                    }
                }
                Reply::Error { code, message } => return Err(Failure::from_daemon(code, message)),
                other => return Err(unexpected(&other)),
            }
        };
        if !printed {
            return Ok(());
        }
    }
}

fn reload(g: &Global, path: &Path, dry_run: bool) -> Result<(), Failure> {
    let mut c = connect(path, RELOAD_TIMEOUT)?;
    c.send(&Request::Reload { dry_run })?;
    let mut plan: Vec<PlanRow> = Vec::new();
    let outcome = loop {
        let r = c.recv().map_err(|f| late(f, "reload"))?;
        match r {
            Reply::PlanItem {
                action,
                name,
                detail,
            } => plan.push(PlanRow {
                action,
                name: name.to_owned(),
                detail: detail.to_owned(),
            }),
            Reply::Ok { message } => break Ok(message.to_owned()),
            Reply::Error { code, message } => break Err(Failure::from_daemon(code, message)),
            other => return Err(unexpected(&other)),
        }
    };
    match outcome {
        Ok(message) => {
            if g.json {
                render::print_json(&render::reload_json(&plan, dry_run, &message));
            } else {
                let mut out = render::plan_lines(&plan);
                if !message.is_empty() {
                    out.push_str(&message);
                    out.push('\n');
                }
                print_line(&out);
            }
            Ok(())
        }
        Err(mut f) => {
            if !plan.is_empty() {
                if g.json {
                    let mut m = serde_json::Map::new();
                    m.insert("plan".into(), render::plan_json(&plan));
                    m.insert("applied".into(), false.into());
                    f.extra = Some(m);
                } else {
                    print_line(&render::plan_lines(&plan));
                }
            }
            Err(f)
        }
    }
}

fn shutdown(g: &Global, path: &Path, wait: Wait) -> Result<(), Failure> {
    let deadline = Instant::now() + Duration::from_millis(wait.timeout_ms);
    let mut c = connect(path, REPLY_TIMEOUT)?;
    c.send(&Request::Shutdown)?;
    let message = c.expect_ok().map_err(|f| late(f, "shutdown"))?;
    if wait.wait {
        // Done when the socket stops answering.
        loop {
            if std::os::unix::net::UnixStream::connect(path).is_err() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(Failure::timeout(format!(
                    "coffeyd still answers at {} after {}",
                    path.display(),
                    human_duration(wait.timeout_ms)
                )));
            }
            std::thread::sleep(SHUTDOWN_POLL);
        }
    }
    drop(c);
    print_ok(g, &message);
    Ok(())
}

fn version(g: &Global, path: &Path) -> Result<(), Failure> {
    let client = VersionInfo::client();
    let daemon = (|| {
        let mut c = connect(path, VERSION_TIMEOUT)?;
        c.send(&Request::Version)?;
        match c.recv()? {
            Reply::Version {
                version,
                commit,
                target,
                profile,
            } => Ok(VersionInfo {
                version: version.to_owned(),
                commit: commit.to_owned(),
                target: target.to_owned(),
                profile: profile.to_owned(),
            }),
            Reply::Error { code, message } => Err(Failure::from_daemon(code, message)),
            other => Err(unexpected(&other)),
        }
    })();
    if g.json {
        let (d, err) = match &daemon {
            Ok(v) => (v.json(), serde_json::Value::Null),
            Err(f) => (serde_json::Value::Null, f.message.clone().into()),
        };
        render::print_json(&serde_json::json!({
            "client": client.json(),
            "daemon": d,
            "daemon_error": err,
        }));
    } else {
        let d = match &daemon {
            Ok(v) => v.text(),
            Err(f) if f.code == exit::UNREACHABLE => f
                .message
                .strip_prefix("coffeyd is ")
                .unwrap_or(&f.message)
                .to_owned(),
            Err(f) => format!("unreachable: {}", f.message),
        };
        print_line(&format!("coffeyd {}\ndaemon: {d}", client.text()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffey::control::proto::event;

    fn ev(service: &str, kind: u8, state: WireState, pid: i32) -> Ev<'_> {
        Ev {
            ts_ms: 0,
            service,
            kind,
            state,
            pid,
            detail: "",
        }
    }

    fn row(name: &str, state: WireState, pid: i32) -> ServiceRow {
        ServiceRow {
            name: name.into(),
            state,
            pid,
            uptime_ms: 0,
            restarts: 0,
            health: String::new(),
            last_exit: Default::default(),
            reason: String::new(),
        }
    }

    #[test]
    fn start_targets() {
        let mut t = Target::new("a");
        assert_eq!(t.outcome(Verb::Start), Outcome::Pending);
        // A stale failed snapshot is not a failure...
        t.snapshot(&row("a", WireState::Failed, 0));
        assert_eq!(t.outcome(Verb::Start), Outcome::Pending);
        t.event(&ev("a", event::SPAWNED, WireState::Running, 5));
        assert_eq!(t.outcome(Verb::Start), Outcome::Done);
        // ...a failed event is.
        let mut t = Target::new("a");
        t.event(&ev("a", event::FAILED, WireState::Failed, 0));
        assert_eq!(t.outcome(Verb::Start), Outcome::Failed);
        t.snapshot(&row("a", WireState::Completed, 0));
        t.failed = false;
        assert_eq!(t.outcome(Verb::Start), Outcome::Done);
    }

    #[test]
    fn stop_targets() {
        let mut t = Target::new("a");
        t.snapshot(&row("a", WireState::Running, 5));
        assert_eq!(t.outcome(Verb::Stop), Outcome::Pending);
        t.event(&ev("a", event::STOPPING, WireState::Stopping, 5));
        assert_eq!(t.outcome(Verb::Stop), Outcome::Pending);
        t.event(&ev("a", event::STOPPED, WireState::Stopped, 0));
        assert_eq!(t.outcome(Verb::Stop), Outcome::Done);
        for s in [WireState::Failed, WireState::Completed] {
            let mut t = Target::new("a");
            t.snapshot(&row("a", s, 0));
            assert_eq!(t.outcome(Verb::Stop), Outcome::Done);
        }
    }

    #[test]
    fn restart_needs_a_spawn() {
        let mut t = Target::new("a");
        t.snapshot(&row("a", WireState::Running, 5));
        assert_eq!(t.outcome(Verb::Restart), Outcome::Pending);
        t.event(&ev("a", event::STOPPING, WireState::Stopping, 5));
        t.event(&ev("a", event::STOPPED, WireState::Stopped, 0));
        assert_eq!(t.outcome(Verb::Restart), Outcome::Pending);
        t.event(&ev("a", event::SPAWNED, WireState::Running, 6));
        assert_eq!(t.outcome(Verb::Restart), Outcome::Done);
        let mut t = Target::new("a");
        t.event(&ev("a", event::EXEC_FAILED, WireState::Failed, 0));
        assert_eq!(t.outcome(Verb::Restart), Outcome::Failed);
    }

    #[test]
    fn overall_waits_for_all_and_fails_fast() {
        let mut a = Target::new("a");
        let mut b = Target::new("b");
        a.snapshot(&row("a", WireState::Running, 1));
        assert_eq!(
            overall(&[a.clone(), b.clone()], Verb::Start).0,
            Outcome::Pending
        );
        b.snapshot(&row("b", WireState::Completed, 0));
        assert_eq!(
            overall(&[a.clone(), b.clone()], Verb::Start).0,
            Outcome::Done
        );
        b.event(&Ev {
            detail: "exec failed: No such file or directory",
            ..ev("b", event::FAILED, WireState::Failed, 0)
        });
        let both = [a, b.clone()];
        let (o, t) = overall(&both, Verb::Start);
        assert_eq!(o, Outcome::Failed);
        assert_eq!(t.unwrap().name, "b");
        assert_eq!(
            b.describe(),
            "b (failed: exec failed: No such file or directory)"
        );
    }

    #[test]
    fn names_are_split_into_requests() {
        let names: Vec<String> = (0..40).map(|i| format!("s{i}")).collect();
        let g: Vec<Names<'_>> = groups(&names).collect();
        assert_eq!(
            g.iter().map(|n| n.len()).collect::<Vec<_>>(),
            vec![16, 16, 8]
        );
        assert_eq!(g[2][7], "s39");
        // Each group fits in one request frame.
        let mut buf = [0u8; proto::HEADER + proto::MAX_REQUEST];
        for n in g {
            proto::encode_request(&Request::Start { names: n }, &mut buf).unwrap();
        }
    }
}
