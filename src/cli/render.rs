//! Human and JSON rendering of daemon replies.
//!
//! Pure functions from reply data to text or `serde_json::Value`; printing
//! happens in `commands`. Human output is aligned tables with `-` for
//! "none", coloured only when stdout is a terminal and `NO_COLOR` is unset.
//! JSON field names and shapes are a public interface documented in
//! docs/CLI.md: change them only together with the docs.

use std::io::{IsTerminal, Write};

use coffey::control::eventline::EventLine;
use coffey::control::proto::{event, plan, LastExit, Reply, WireState};
use serde_json::{json, Map, Value};

use super::timefmt::{human_duration, rfc3339_ms};

/// Output decoration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Style {
    pub color: bool,
}

impl Style {
    /// Colour only for a terminal, and never when `NO_COLOR` is set.
    pub fn detect() -> Style {
        Style {
            color: color_enabled(
                std::io::stdout().is_terminal(),
                std::env::var_os("NO_COLOR").is_some(),
            ),
        }
    }
}

pub fn color_enabled(stdout_is_tty: bool, no_color_set: bool) -> bool {
    stdout_is_tty && !no_color_set
}

/// ANSI colour of a state name, if it has one.
pub fn state_color(s: WireState) -> Option<&'static str> {
    match s {
        WireState::Running => Some("32"),
        WireState::Failed => Some("31"),
        WireState::Backoff | WireState::Waiting => Some("33"),
        WireState::Stopped | WireState::Starting | WireState::Stopping | WireState::Completed => {
            None
        }
    }
}

pub fn paint(text: &str, color: Option<&str>, style: Style) -> String {
    match color {
        Some(c) if style.color => format!("\x1b[{c}m{text}\x1b[0m"),
        _ => text.to_owned(),
    }
}

/// One table cell: its text and an optional colour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub text: String,
    pub color: Option<&'static str>,
}

impl Cell {
    pub fn plain(text: impl Into<String>) -> Cell {
        Cell {
            text: text.into(),
            color: None,
        }
    }
}

/// Columns padded to their widest cell (two spaces apart); the last column
/// is not padded, so lines carry no trailing blanks. Colour codes are not
/// counted in widths.
pub fn table(header: &[&str], rows: &[Vec<Cell>], style: Style) -> String {
    let cols = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.text.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = (&str, Option<&'static str>)>| {
        let mut s = String::new();
        for (i, ((text, color), w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(&paint(text, color, style));
            if i + 1 < cols {
                let pad = w.saturating_sub(text.chars().count());
                s.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().map(|h| (*h, None)));
    for row in rows {
        line(&mut row.iter().map(|c| (c.text.as_str(), c.color)));
    }
    out
}

/// `key: value` lines with the values aligned.
pub fn key_values(pairs: &[(String, Cell)], style: Style) -> String {
    let w = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        let pad = w.saturating_sub(k.chars().count());
        let line = format!(
            "{k}:{}  {}",
            " ".repeat(pad),
            paint(&v.text, v.color, style)
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A signal's name (`SIGTERM`), if it is known here.
pub fn signal_name(n: i32) -> Option<&'static str> {
    nix::sys::signal::Signal::try_from(n)
        .ok()
        .map(|s| s.as_str())
}

/// One `Service` frame, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRow {
    pub name: String,
    pub state: WireState,
    pub pid: i32,
    pub uptime_ms: u64,
    pub restarts: u32,
    pub health: String,
    pub last_exit: LastExit,
    pub reason: String,
}

impl ServiceRow {
    pub fn from_reply(r: &Reply<'_>) -> Option<ServiceRow> {
        match *r {
            Reply::Service {
                name,
                state,
                pid,
                uptime_ms,
                restarts,
                health,
                last_exit,
                reason,
            } => Some(ServiceRow {
                name: name.to_owned(),
                state,
                pid,
                uptime_ms,
                restarts,
                health: health.to_owned(),
                last_exit,
                reason: reason.to_owned(),
            }),
            _ => None,
        }
    }

    /// Health text, or None when the service has no checks.
    pub fn health(&self) -> Option<&str> {
        match self.health.as_str() {
            "" | "-" => None,
            h => Some(h),
        }
    }
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_owned()
    } else {
        s.to_owned()
    }
}

fn pid_text(pid: i32) -> String {
    if pid > 0 {
        pid.to_string()
    } else {
        "-".to_owned()
    }
}

fn uptime_text(ms: u64) -> String {
    if ms == 0 {
        "-".to_owned()
    } else {
        human_duration(ms)
    }
}

/// `exit 1`, `SIGTERM` (or `signal 99`), `-`.
pub fn last_exit_text(le: LastExit) -> String {
    match le.kind {
        1 => format!("exit {}", le.value),
        2 => match signal_name(le.value) {
            Some(n) => n.to_owned(),
            None => format!("signal {}", le.value),
        },
        _ => "-".to_owned(),
    }
}

/// `null`, `{"code": N}` or `{"signal": "SIGTERM", "number": 15}`.
pub fn last_exit_json(le: LastExit) -> Value {
    match le.kind {
        1 => json!({ "code": le.value }),
        2 => json!({ "signal": signal_name(le.value), "number": le.value }),
        _ => Value::Null,
    }
}

fn state_cell(s: WireState) -> Cell {
    Cell {
        text: s.as_str().to_owned(),
        color: state_color(s),
    }
}

/// The `status` table. `-v` and more add the LAST EXIT column.
pub fn status_table(rows: &[ServiceRow], verbose: u8, style: Style) -> String {
    let mut header = vec!["NAME", "STATE", "PID", "UPTIME", "RESTARTS", "HEALTH"];
    if verbose > 0 {
        header.push("LAST EXIT");
    }
    header.push("REASON");
    let cells: Vec<Vec<Cell>> = rows
        .iter()
        .map(|r| {
            let mut c = vec![
                Cell::plain(r.name.clone()),
                state_cell(r.state),
                Cell::plain(pid_text(r.pid)),
                Cell::plain(uptime_text(r.uptime_ms)),
                Cell::plain(r.restarts.to_string()),
                Cell::plain(r.health().unwrap_or("-")),
            ];
            if verbose > 0 {
                c.push(Cell::plain(last_exit_text(r.last_exit)));
            }
            c.push(Cell::plain(or_dash(&r.reason)));
            c
        })
        .collect();
    table(&header, &cells, style)
}

/// `status <svc>`: the service's fields, then every detail in order.
pub fn status_detail(row: &ServiceRow, details: &[(String, String)], style: Style) -> String {
    let mut pairs = vec![
        ("name".to_owned(), Cell::plain(row.name.clone())),
        ("state".to_owned(), state_cell(row.state)),
        ("pid".to_owned(), Cell::plain(pid_text(row.pid))),
        ("uptime".to_owned(), Cell::plain(uptime_text(row.uptime_ms))),
        ("restarts".to_owned(), Cell::plain(row.restarts.to_string())),
        (
            "health".to_owned(),
            Cell::plain(row.health().unwrap_or("-")),
        ),
        (
            "last exit".to_owned(),
            Cell::plain(last_exit_text(row.last_exit)),
        ),
        (
            "reason".to_owned(),
            Cell::plain(visible(or_dash(&row.reason).as_bytes())),
        ),
    ];
    // Details quote the service (its sd_notify STATUS=, a check's error).
    for (k, v) in details {
        pairs.push((k.clone(), Cell::plain(visible(or_dash(v).as_bytes()))));
    }
    key_values(&pairs, style)
}

fn empty_null(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::String(s.to_owned())
    }
}

fn pid_json(pid: i32) -> Value {
    if pid > 0 {
        pid.into()
    } else {
        Value::Null
    }
}

/// One service object of `status -j`.
pub fn service_json(r: &ServiceRow) -> Value {
    json!({
        "name": r.name,
        "state": r.state.as_str(),
        "pid": pid_json(r.pid),
        "uptime_ms": r.uptime_ms,
        "restarts": r.restarts,
        "health": r.health(),
        "last_exit": last_exit_json(r.last_exit),
        "reason": empty_null(&r.reason),
    })
}

/// `status <svc> -j`: the service object plus `details`; a key that comes
/// more than once (e.g. `event`) becomes an array of its values.
pub fn service_detail_json(r: &ServiceRow, details: &[(String, String)]) -> Value {
    let mut obj = service_json(r);
    let mut d = Map::new();
    for (k, v) in details {
        let count = details.iter().filter(|(k2, _)| k2 == k).count();
        if count > 1 {
            let arr = d
                .entry(k.clone())
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(a) = arr {
                a.push(Value::String(v.clone()));
            }
        } else {
            d.insert(k.clone(), Value::String(v.clone()));
        }
    }
    if let Value::Object(m) = &mut obj {
        m.insert("details".into(), Value::Object(d));
    }
    obj
}

/// One `Event` frame, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ev<'a> {
    pub ts_ms: u64,
    pub service: &'a str,
    pub kind: u8,
    pub state: WireState,
    pub pid: i32,
    pub detail: &'a str,
}

impl<'a> Ev<'a> {
    pub fn from_reply(r: &Reply<'a>) -> Option<Ev<'a>> {
        match *r {
            Reply::Event {
                ts_ms,
                service,
                kind,
                state,
                pid,
                detail,
            } => Some(Ev {
                ts_ms,
                service,
                kind,
                state,
                pid,
                detail,
            }),
            _ => None,
        }
    }
}

/// `TIMESTAMP SERVICE EVENT STATE pid=P DETAIL` (`pid=-` without a
/// process; no DETAIL when empty).
pub fn event_line(e: &Ev<'_>, style: Style) -> String {
    let mut s = format!(
        "{} {} {} {} pid={}",
        rfc3339_ms(e.ts_ms),
        e.service,
        event::name(e.kind),
        paint(e.state.as_str(), state_color(e.state), style),
        pid_text(e.pid)
    );
    if !e.detail.is_empty() {
        s.push(' ');
        s.push_str(&visible(e.detail.as_bytes()));
    }
    s
}

/// An event's `-j` line, newline included: the daemon's event log writes
/// the same bytes (`coffey.events`), from the same writer.
pub fn event_json(e: &Ev<'_>) -> Vec<u8> {
    let mut l = EventLine::default();
    l.event(e.ts_ms, e.service, e.kind, e.state, e.pid, e.detail)
        .to_vec()
}

pub fn stream_name(stream: u8) -> &'static str {
    match stream {
        0 => "stdout",
        1 => "stderr",
        // Output of an exec health check, kept in the service's ring.
        _ => "check",
    }
}

/// Text a service chose, as a terminal may show it: control bytes as
/// `\xNN` (`coffey::visible`), like the daemon's console; `-j` output keeps
/// the exact text.
pub fn visible(text: &[u8]) -> String {
    let mut out = Vec::with_capacity(text.len());
    coffey::visible::escape(text, &mut |p| {
        out.extend_from_slice(p);
        true
    });
    String::from_utf8(out).unwrap_or_default()
}

/// `TIMESTAMP stdout|stderr TEXT[ [cut]]\n`, the line's control bytes
/// made visible (a log must not drive the terminal that reads it).
pub fn log_line(ts_ms: u64, stream: u8, cut: bool, text: &[u8]) -> Vec<u8> {
    let mut out = format!("{} {} ", rfc3339_ms(ts_ms), stream_name(stream)).into_bytes();
    out.extend_from_slice(visible(text).as_bytes());
    if cut {
        out.extend_from_slice(b" [cut]");
    }
    out.push(b'\n');
    out
}

/// A log line as JSON; invalid UTF-8 becomes U+FFFD.
pub fn log_json(service: &str, ts_ms: u64, stream: u8, cut: bool, text: &[u8]) -> Value {
    json!({
        "service": service,
        "ts_ms": ts_ms,
        "ts": rfc3339_ms(ts_ms),
        "stream": stream_name(stream),
        "text": String::from_utf8_lossy(text),
        "cut": cut,
    })
}

/// `... N lines dropped` / `... N events dropped`.
pub fn dropped_line(count: u32, what: &str) -> String {
    format!("... {count} {what} dropped")
}

pub fn dropped_json(count: u32) -> Value {
    json!({ "dropped": count })
}

/// One reload plan item, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRow {
    pub action: u8,
    pub name: String,
    pub detail: String,
}

/// `ACTION NAME DETAIL`, aligned, no header.
pub fn plan_lines(items: &[PlanRow]) -> String {
    let wa = items
        .iter()
        .map(|i| plan::name(i.action).len())
        .max()
        .unwrap_or(0);
    let wn = items
        .iter()
        .map(|i| i.name.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for i in items {
        let line = format!("{:wa$}  {:wn$}  {}", plan::name(i.action), i.name, i.detail);
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub fn plan_json(items: &[PlanRow]) -> Value {
    Value::Array(
        items
            .iter()
            .map(|i| {
                json!({
                    "action": plan::name(i.action),
                    "name": i.name,
                    "detail": i.detail,
                })
            })
            .collect(),
    )
}

pub fn reload_json(items: &[PlanRow], dry_run: bool, message: &str) -> Value {
    json!({
        "ok": true,
        "dry_run": dry_run,
        "plan": plan_json(items),
        "applied": !dry_run,
        "message": message,
    })
}

pub fn ok_json(message: &str) -> Value {
    json!({ "ok": true, "message": message })
}

/// Build information of one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    pub version: String,
    pub commit: String,
    pub target: String,
    pub profile: String,
}

impl VersionInfo {
    /// This binary, from build.rs.
    pub fn client() -> VersionInfo {
        VersionInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            commit: env!("COFFEY_COMMIT").to_owned(),
            target: env!("COFFEY_TARGET").to_owned(),
            profile: env!("COFFEY_PROFILE").to_owned(),
        }
    }

    /// `0.1.0 (commit abc1234, x86_64-unknown-linux-musl, release)`
    pub fn text(&self) -> String {
        format!(
            "{} (commit {}, {}, {})",
            self.version, self.commit, self.target, self.profile
        )
    }

    pub fn json(&self) -> Value {
        json!({
            "version": self.version,
            "commit": self.commit,
            "target": self.target,
            "profile": self.profile,
        })
    }
}

/// Prints one compact JSON document and a newline; false if stdout is gone.
pub fn print_json(v: &Value) -> bool {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{v}").and_then(|()| out.flush()).is_ok()
}

/// Prints text as is; false if stdout is gone.
pub fn print_bytes(b: &[u8]) -> bool {
    let mut out = std::io::stdout().lock();
    out.write_all(b).and_then(|()| out.flush()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, state: WireState, pid: i32, health: &str, reason: &str) -> ServiceRow {
        ServiceRow {
            name: name.into(),
            state,
            pid,
            uptime_ms: if pid > 0 { 312_000 } else { 0 },
            restarts: 2,
            health: health.into(),
            last_exit: LastExit { kind: 0, value: 0 },
            reason: reason.into(),
        }
    }

    #[test]
    fn colour_only_on_a_tty_without_no_color() {
        assert!(color_enabled(true, false));
        assert!(!color_enabled(true, true));
        assert!(!color_enabled(false, false));
        assert!(!color_enabled(false, true));
        let on = Style { color: true };
        let off = Style { color: false };
        assert_eq!(paint("running", Some("32"), on), "\x1b[32mrunning\x1b[0m");
        assert_eq!(paint("running", Some("32"), off), "running");
        assert_eq!(state_color(WireState::Failed), Some("31"));
        assert_eq!(state_color(WireState::Backoff), Some("33"));
        assert_eq!(state_color(WireState::Waiting), Some("33"));
        assert_eq!(state_color(WireState::Stopped), None);
    }

    #[test]
    fn status_table_is_aligned() {
        let rows = vec![
            row("api", WireState::Running, 1234, "healthy", ""),
            row("database", WireState::Backoff, 0, "", "next try in 4s"),
        ];
        let t = status_table(&rows, 0, Style::default());
        assert_eq!(
            t,
            "NAME      STATE    PID   UPTIME  RESTARTS  HEALTH   REASON\n\
             api       running  1234  5m12s   2         healthy  -\n\
             database  backoff  -     -       2         -        next try in 4s\n"
        );
        // -v adds LAST EXIT.
        let mut r = row(
            "x",
            WireState::Failed,
            0,
            "-",
            "exec failed: No such file or directory",
        );
        r.last_exit = LastExit { kind: 2, value: 15 };
        let t = status_table(&[r], 1, Style::default());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "NAME  STATE   PID  UPTIME  RESTARTS  HEALTH  LAST EXIT  REASON"
        );
        assert_eq!(
            lines[1],
            "x     failed  -    -       2         -       SIGTERM    exec failed: No such file or directory"
        );
    }

    #[test]
    fn colour_does_not_break_alignment() {
        let rows = vec![
            row("a", WireState::Running, 1, "", ""),
            row("b", WireState::Stopped, 0, "", ""),
        ];
        let plain = status_table(&rows, 0, Style::default());
        let colored = status_table(&rows, 0, Style { color: true });
        assert_ne!(plain, colored);
        let stripped = colored.replace("\x1b[32m", "").replace("\x1b[0m", "");
        assert_eq!(stripped, plain);
    }

    #[test]
    fn status_detail_lists_details() {
        let r = row("api", WireState::Running, 7, "", "");
        let d = vec![
            ("binary".to_owned(), "/bin/sh".to_owned()),
            ("event".to_owned(), "spawned pid 7".to_owned()),
            ("event".to_owned(), "ready".to_owned()),
        ];
        let t = status_detail(&r, &d, Style::default());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "name:       api");
        assert_eq!(lines[1], "state:      running");
        assert_eq!(lines[6], "last exit:  -");
        assert_eq!(lines[8], "binary:     /bin/sh");
        assert_eq!(lines[9], "event:      spawned pid 7");
        assert_eq!(lines[10], "event:      ready");
    }

    #[test]
    fn service_json_fields() {
        let mut r = row("api", WireState::Running, 1234, "healthy", "");
        let v = service_json(&r);
        assert_eq!(v["name"], "api");
        assert_eq!(v["state"], "running");
        assert_eq!(v["pid"], 1234);
        assert_eq!(v["restarts"], 2);
        assert_eq!(v["uptime_ms"], 312_000);
        assert_eq!(v["health"], "healthy");
        assert_eq!(v["reason"], Value::Null);
        assert_eq!(v["last_exit"], Value::Null);

        r = row("db", WireState::Backoff, 0, "-", "next try in 4s");
        r.last_exit = LastExit { kind: 1, value: 3 };
        let v = service_json(&r);
        assert_eq!(v["pid"], Value::Null);
        assert_eq!(v["health"], Value::Null);
        assert_eq!(v["reason"], "next try in 4s");
        assert_eq!(v["last_exit"], json!({"code": 3}));
        r.last_exit = LastExit { kind: 2, value: 15 };
        r.health = String::new();
        let v = service_json(&r);
        assert_eq!(v["health"], Value::Null);
        assert_eq!(v["last_exit"], json!({"signal": "SIGTERM", "number": 15}));
    }

    #[test]
    fn detail_json_collects_repeated_keys() {
        let r = row("api", WireState::Running, 7, "", "");
        let d = vec![
            ("binary".to_owned(), "/bin/sh".to_owned()),
            ("event".to_owned(), "a".to_owned()),
            ("event".to_owned(), "b".to_owned()),
        ];
        let v = service_detail_json(&r, &d);
        assert_eq!(v["name"], "api");
        assert_eq!(v["details"]["binary"], "/bin/sh");
        assert_eq!(v["details"]["event"], json!(["a", "b"]));
    }

    #[test]
    fn events_human_and_json() {
        let e = Ev {
            ts_ms: 1_795_319_400_123,
            service: "api",
            kind: event::SPAWNED,
            state: WireState::Running,
            pid: 42,
            detail: "",
        };
        assert_eq!(
            event_line(&e, Style::default()),
            "2026-11-22T03:50:00.123Z api spawned running pid=42"
        );
        let line = event_json(&e);
        assert_eq!(line.last(), Some(&b'\n'));
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["ts_ms"], 1_795_319_400_123u64);
        assert_eq!(v["ts"], "2026-11-22T03:50:00.123Z");
        assert_eq!(v["service"], "api");
        assert_eq!(v["event"], "spawned");
        assert_eq!(v["state"], "running");
        assert_eq!(v["pid"], 42);
        assert_eq!(v["detail"], "");
        let e2 = Ev {
            kind: event::BACKOFF,
            state: WireState::Backoff,
            pid: 0,
            detail: "next try in 4s",
            ..e
        };
        assert_eq!(
            event_line(&e2, Style::default()),
            "2026-11-22T03:50:00.123Z api backoff backoff pid=- next try in 4s"
        );
        let v: Value = serde_json::from_slice(&event_json(&e2)).unwrap();
        assert_eq!(v["pid"], Value::Null);
        let reply = Reply::Event {
            ts_ms: 1,
            service: "x",
            kind: event::STOPPED,
            state: WireState::Stopped,
            pid: 0,
            detail: "",
        };
        assert_eq!(Ev::from_reply(&reply).unwrap().service, "x");
        assert!(Ev::from_reply(&Reply::End).is_none());
    }

    #[test]
    fn logs_human_and_json() {
        assert_eq!(
            log_line(1_795_319_400_123, 0, false, b"hello"),
            b"2026-11-22T03:50:00.123Z stdout hello\n".to_vec()
        );
        assert_eq!(
            log_line(0, 1, true, b"long"),
            b"1970-01-01T00:00:00.000Z stderr long [cut]\n".to_vec()
        );
        assert_eq!(
            log_line(0, 0, false, b"\x1b[2J\x07\r\tx\xff"),
            b"1970-01-01T00:00:00.000Z stdout \\x1b[2J\\x07\\x0d\tx\\xff\n".to_vec()
        );
        let v = log_json("api", 5, 1, true, b"a\xffb");
        assert_eq!(v["service"], "api");
        assert_eq!(v["ts_ms"], 5);
        assert_eq!(v["ts"], "1970-01-01T00:00:00.005Z");
        assert_eq!(v["stream"], "stderr");
        assert_eq!(v["text"], "a\u{fffd}b");
        assert_eq!(v["cut"], true);
        assert_eq!(dropped_line(3, "lines"), "... 3 lines dropped");
        assert_eq!(dropped_json(3), json!({"dropped": 3}));
    }

    #[test]
    fn reload_plan() {
        let items = vec![
            PlanRow {
                action: plan::ADD,
                name: "web".into(),
                detail: "new service".into(),
            },
            PlanRow {
                action: plan::UNCHANGED,
                name: "db".into(),
                detail: String::new(),
            },
        ];
        assert_eq!(
            plan_lines(&items),
            "add        web  new service\nunchanged  db\n"
        );
        let v = reload_json(&items, false, "reloaded: 1 added");
        assert_eq!(v["applied"], true);
        assert_eq!(v["dry_run"], false);
        assert_eq!(v["message"], "reloaded: 1 added");
        assert_eq!(
            v["plan"][0],
            json!({"action": "add", "name": "web", "detail": "new service"})
        );
        assert_eq!(v["plan"][1]["action"], "unchanged");
        assert_eq!(reload_json(&[], true, "")["applied"], false);
    }

    #[test]
    fn ok_and_version_json() {
        assert_eq!(ok_json("done"), json!({"ok": true, "message": "done"}));
        let c = VersionInfo::client();
        assert_eq!(c.version, env!("CARGO_PKG_VERSION"));
        assert!(!c.commit.is_empty() && !c.target.is_empty());
        assert!(c.profile == "debug" || c.profile == "release");
        let v = c.json();
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        assert!(c.text().starts_with(env!("CARGO_PKG_VERSION")));
    }

    #[test]
    fn service_row_from_reply() {
        let r = Reply::Service {
            name: "a",
            state: WireState::Completed,
            pid: 0,
            uptime_ms: 0,
            restarts: 0,
            health: "-",
            last_exit: LastExit { kind: 1, value: 0 },
            reason: "",
        };
        let row = ServiceRow::from_reply(&r).unwrap();
        assert_eq!(row.name, "a");
        assert_eq!(row.health(), None);
        assert_eq!(last_exit_text(row.last_exit), "exit 0");
        assert!(ServiceRow::from_reply(&Reply::End).is_none());
    }
}
