//! Configuration: YAML files -> validated [`Config`].
//!
//! Owns reading the main file and its `services.d` drop-ins, turning them into
//! the spec types of [`spec`], and reporting *every* problem with
//! `file:line:col` and the service name (DESIGN rule 10). This is the one part
//! of coffeyd that allocates freely: it runs at startup or in a short-lived
//! `validate` / compile child, never inside the event loop.
//!
//! It must stay self-contained (only `self`/`super`, std, serde,
//! serde_norway and nix), because the fuzz crate includes this directory by
//! path. It must never panic on any input: it is fuzzed.
//!
//! Layout: `units.rs` (durations, sizes, signals), `raw.rs` (serde shapes,
//! filled by the one visitor of `record.rs`),
//! `locate.rs` (positions and error recovery), `load.rs` (validation into
//! the spec; its parts, one per section, in `load/`), `target.rs`
//! (binaries, users and groups of the system the config runs on).
//!
//! [`load`] is the one decision whether a config can run, the daemon's
//! capacities (`limits.rs`) included: `validate`, daemon startup and the
//! reload compiler all call it, so they cannot disagree.
#![allow(clippy::disallowed_macros, clippy::disallowed_methods)]

// The daemon's fixed capacities, shared by path (this directory must stay
// self-contained for the fuzz crate).
mod guard;
#[allow(dead_code)]
#[path = "../limits.rs"]
mod limits;
mod load;
mod locate;
mod raw;
mod record;
pub mod spec;
mod target;
mod units;

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

pub use spec::*;
pub use target::Target;
// Public API for the CLI and other users; not every binary uses all of it.
#[allow(unused_imports)]
pub use units::{parse_duration, parse_signal, parse_size, parse_umask};

/// Bounds enforced by the validator (documented in docs/CONFIG.md).
#[allow(unused_imports)]
pub use load::{MAX_BUFFER, MAX_CLIENTS, MAX_SERVICES, MIN_BUFFER};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One finding of the loader. `line` and `col` are 1-based; 0 means the
/// problem concerns the whole file (e.g. it cannot be read).
#[derive(Debug, Clone, PartialEq)]
pub struct Diag {
    pub severity: Severity,
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    pub service: Option<String>,
    pub message: String,
}

impl fmt::Display for Diag {
    /// `FILE:LINE:COL: error: service 'NAME': MESSAGE`
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.col)?;
        }
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, ": {sev}: ")?;
        if let Some(name) = &self.service {
            write!(f, "service '{name}': ")?;
        }
        f.write_str(&self.message)
    }
}

/// Load the main file and its drop-ins, and validate everything, with
/// binaries, users and groups looked up on this system.
///
/// `Ok` holds the config and its warnings; `Err` holds every diagnostic
/// (errors and warnings), sorted by file and position.
pub fn load(path: &Path) -> Result<(Config, Vec<Diag>), Vec<Diag>> {
    load_for(path, &Target::Host)
}

/// Like [`load`], with binaries, users and groups looked up on `target`.
pub fn load_for(path: &Path, target: &Target) -> Result<(Config, Vec<Diag>), Vec<Diag>> {
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => load::load_text(path, &text, true, target),
            Err(e) => Err(vec![Diag {
                severity: Severity::Error,
                file: path.to_path_buf(),
                line: 0,
                col: 0,
                service: None,
                message: format!("file is not valid UTF-8: {e}"),
            }]),
        },
        Err(e) => Err(vec![Diag {
            severity: Severity::Error,
            file: path.to_path_buf(),
            line: 0,
            col: 0,
            service: None,
            message: format!("cannot read config: {e}"),
        }]),
    }
}

/// Like [`load`], with the main file's text given in memory. Drop-ins are
/// not read; the executable and user/group checks still run. Used by fuzzing.
#[allow(dead_code)]
pub fn load_str(path: &Path, text: &str) -> Result<(Config, Vec<Diag>), Vec<Diag>> {
    load::load_text(path, text, false, &Target::Host)
}

/// The `validate` command: print every diagnostic and a summary to `out`.
///
/// Returns exit code 0 (valid, possibly with warnings) with the config, or 1
/// (errors). Write errors on `out` are ignored (a closed stdout must not
/// turn a valid config into a failure).
pub fn run_validate(path: &Path, target: &Target, out: &mut dyn Write) -> (i32, Option<Config>) {
    match load_for(path, target) {
        Ok((config, warnings)) => {
            for w in &warnings {
                let _ = writeln!(out, "{w}");
            }
            let _ = writeln!(
                out,
                "config OK: {} services ({} warnings)",
                config.services.len(),
                warnings.len()
            );
            (0, Some(config))
        }
        Err(diags) => {
            for d in &diags {
                let _ = writeln!(out, "{d}");
            }
            let errors = diags
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .count();
            let _ = writeln!(
                out,
                "{} error(s), {} warning(s)",
                errors,
                diags.len().saturating_sub(errors)
            );
            (1, None)
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_cgroup;
