//! `logs` of every service, or of several: `docker compose logs` style,
//! each line after its service's name (`api | 2026-...Z stdout TEXT`),
//! merged by time.
//!
//! The daemon only serves its rings (a `Logs` request with no name: each
//! service's last `-n` lines in slot order, `End`, then with `-f` every
//! service's new lines as they come); the merging is done here, so the
//! daemon's side stays small. The history is sorted by timestamp (stable,
//! so one service's lines keep their order); lines that come after `End`
//! are printed as they arrive, which is their time order. Several names
//! filter that stream here.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use coffey::control::proto::{Reply, Request};

use super::client::{unexpected, Conn};
use super::commands::{connect, late, print_line, read_status, REPLY_TIMEOUT};
use super::render;
use super::{exit, Failure, Global};

/// One history line, owned until the history is sorted.
struct Line {
    service: String,
    ts_ms: u64,
    stream: u8,
    cut: bool,
    text: Vec<u8>,
}

/// How lines are printed: names to keep (empty: all) and the name width.
struct Out<'a> {
    g: &'a Global,
    keep: BTreeSet<&'a str>,
    width: usize,
}

impl Out<'_> {
    fn wanted(&self, service: &str) -> bool {
        self.keep.is_empty() || self.keep.contains(service)
    }

    /// Prints one line; false once stdout is gone.
    fn line(&self, service: &str, ts_ms: u64, stream: u8, cut: bool, text: &[u8]) -> bool {
        if self.g.json {
            return render::print_json(&render::log_json(service, ts_ms, stream, cut, text));
        }
        let mut b = format!("{service:<w$} | ", w = self.width).into_bytes();
        b.extend(render::log_line(ts_ms, stream, cut, text));
        render::print_bytes(&b)
    }

    fn dropped(&self, count: u32) -> bool {
        if self.g.json {
            render::print_json(&render::dropped_json(count))
        } else {
            print_line(&render::dropped_line(count, "lines"))
        }
    }
}

/// The names the daemon knows; an unknown one in `names` is exit 3.
fn known(path: &Path, names: &[String]) -> Result<Vec<String>, Failure> {
    let mut c = connect(path, REPLY_TIMEOUT)?;
    c.send(&Request::Status {
        name: "",
        verbose: 0,
    })?;
    let (rows, _) = read_status(&mut c).map_err(|f| late(f, "status"))?;
    if let Some(n) = names.iter().find(|n| !rows.iter().any(|r| &r.name == *n)) {
        return Err(Failure::new(
            exit::UNKNOWN_SERVICE,
            "unknown service",
            format!("unknown service '{n}'"),
        ));
    }
    Ok(rows.into_iter().map(|r| r.name).collect())
}

/// `logs` with no name or several: the last `lines` lines of each
/// service no older than `oldest` (wall-clock ms), merged by time; then,
/// with `follow`, the new lines as they come.
pub(super) fn merged(
    g: &Global,
    path: &Path,
    names: &[String],
    lines: u16,
    follow: bool,
    oldest: u64,
) -> Result<(), Failure> {
    let all = known(path, names)?;
    let keep: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let width = all
        .iter()
        .filter(|n| keep.is_empty() || keep.contains(n.as_str()))
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0);
    let out = Out { g, keep, width };
    let mut c = Conn::connect(path)?;
    c.set_deadline(Some(Instant::now() + REPLY_TIMEOUT));
    c.send(&Request::Logs {
        name: "",
        lines,
        follow,
    })?;
    if !history(&mut c, &out, oldest)? || !follow {
        return Ok(());
    }
    c.set_deadline(None);
    loop {
        let printed = match c.recv()? {
            Reply::LogLine {
                service,
                ts_ms,
                stream,
                cut,
                text,
            } if out.wanted(service) => out.line(service, ts_ms, stream, cut, text),
            Reply::LogLine { .. } => true,
            Reply::Dropped { count } => out.dropped(count),
            Reply::Error { code, message } => return Err(Failure::from_daemon(code, message)),
            other => return Err(unexpected(&other)),
        };
        if !printed {
            return Ok(());
        }
    }
}

/// Reads the history up to `End`, then prints it sorted by time; false
/// when stdout is gone.
fn history(c: &mut Conn, out: &Out<'_>, oldest: u64) -> Result<bool, Failure> {
    let mut hist: Vec<Line> = Vec::new();
    let mut dropped: u32 = 0;
    loop {
        match c.recv().map_err(|f| late(f, "logs"))? {
            Reply::LogLine {
                service,
                ts_ms,
                stream,
                cut,
                text,
            } => {
                if ts_ms >= oldest && out.wanted(service) {
                    hist.push(Line {
                        service: service.to_owned(),
                        ts_ms,
                        stream,
                        cut,
                        text: text.to_vec(),
                    });
                }
            }
            Reply::Dropped { count } => dropped = dropped.saturating_add(count),
            Reply::End => break,
            // An unknown name '' is a daemon that predates `logs` of
            // every service.
            Reply::Error { code, message } => return Err(Failure::from_daemon(code, message)),
            other => return Err(unexpected(&other)),
        }
    }
    if dropped > 0 && !out.dropped(dropped) {
        return Ok(false);
    }
    hist.sort_by_key(|l| l.ts_ms);
    for l in &hist {
        if !out.line(&l.service, l.ts_ms, l.stream, l.cut, &l.text) {
            return Ok(false);
        }
    }
    Ok(true)
}
