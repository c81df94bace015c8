//! The persistent event log (`coffey.events`): every event the `events`
//! stream carries is appended to a file as one JSON line, as it happens,
//! so the state changes outlive a reader that crashed. The line is the
//! one `events -j` prints (`coffey::control::eventline`, one writer for
//! both); the file rotates by size as the daemon log does (`LogFile`).
//! Both buffers are made at startup: appending does not allocate.

use super::log::{log, Log};
use super::logfile::{LogFile, Problem};
use coffey::control::eventline::EventLine;
use coffey::control::proto::Reply;

pub struct EventLog {
    file: LogFile,
    line: EventLine,
}

impl EventLog {
    /// The log of `cfg.events`, opened now so that a failure is said at
    /// once (it is retried as events come, as the daemon log is).
    #[allow(clippy::disallowed_methods)] // startup: the one allocation
    pub fn open(cfg: &crate::config::EventLog, log: &mut Log) -> Option<Box<EventLog>> {
        use std::os::unix::ffi::OsStrExt;
        if let Some(dir) = cfg.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let bytes = cfg.path.as_os_str().as_bytes();
        let Some(mut file) = LogFile::new(bytes, cfg.max_size, cfg.keep) else {
            log!(log, "events: path {} is too long", cfg.path.display());
            return None;
        };
        if let Err(e) = file.open_at_start(super::clock::now().millis()) {
            log!(
                log,
                "events: cannot open {}: {}; retrying as events come",
                cfg.path.display(),
                super::words::errno_desc(e)
            );
        }
        Some(Box::new(EventLog {
            file,
            line: EventLine::default(),
        }))
    }

    /// Appends `rep` when it is an event; what went wrong, if anything.
    pub fn append(&mut self, rep: &Reply<'_>) -> Problem {
        let Reply::Event {
            ts_ms,
            service,
            kind,
            state,
            pid,
            detail,
        } = *rep
        else {
            return Problem::None;
        };
        let bytes = self.line.event(ts_ms, service, kind, state, pid, detail);
        self.file.write(bytes, super::clock::now().millis())
    }
}
