//! `validate -j`: the offline config check as one JSON document.
//!
//! The human form lives in main.rs (it prints the daemon's budget line);
//! this is the same check for scripts: every diagnostic with its position,
//! and the budget when the config is valid. No socket is involved.

use std::path::Path;

use serde_json::{json, Value};

use crate::config::{self, Diag, Severity, Target};
use crate::daemon;

fn diag_json(d: &Diag) -> Value {
    json!({
        "severity": match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        },
        "file": d.file.display().to_string(),
        "line": d.line,
        "col": d.col,
        "service": d.service,
        "message": d.message,
        "text": d.to_string(),
    })
}

/// Prints the JSON report; returns the exit code (0 valid, 1 errors).
pub fn run_json(path: &Path, target: &Target) -> i32 {
    let (code, doc) = match config::load_for(path, target) {
        Ok((cfg, warnings)) => {
            let b = daemon::setup::budget(&cfg);
            let doc = json!({
                "ok": true,
                "file": path.display().to_string(),
                "services": cfg.services.len(),
                "diagnostics": warnings.iter().map(diag_json).collect::<Vec<_>>(),
                "budget": {
                    "slots": b.slots,
                    "total_bytes": b.total(),
                    "ring_bytes": b.ring_bytes,
                    "line_bytes": b.line_bytes,
                    "table_bytes": b.table_bytes,
                    "exec_bytes": b.exec_bytes,
                    "conn_bytes": b.conn_bytes,
                    "reload_bytes": b.reload_bytes,
                    "fixed_bytes": b.fixed_bytes,
                    "fds": b.fds,
                },
            });
            (0, doc)
        }
        Err(diags) => {
            let doc = json!({
                "ok": false,
                "file": path.display().to_string(),
                "services": Value::Null,
                "diagnostics": diags.iter().map(diag_json).collect::<Vec<_>>(),
                "budget": Value::Null,
            });
            (1, doc)
        }
    };
    super::render::print_json(&doc);
    code
}
