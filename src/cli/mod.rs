//! The client role: talks to a running daemon over the control socket.
//!
//! Owns argument parsing for every role (`args`), finding the socket
//! (`socket`), the blocking connection and frame reader (`client`), the
//! commands and their wait logic (`commands`), and human/JSON rendering
//! (`render`, `timefmt`). It reuses the one wire codec
//! (`coffey::control::proto`) and must not invent frames of its own.
//!
//! The client is a short-lived process, so unlike the daemon it may allocate
//! and format freely; it must still never panic on a peer's bytes, and it
//! keeps stdout clean for pipes (errors and notes go to stderr).
#![allow(clippy::disallowed_macros, clippy::disallowed_methods)]

pub mod args;
mod client;
mod commands;
mod logs;
mod metrics;
mod render;
mod socket;
mod timefmt;
pub mod validate;
mod wait;

use coffey::control::proto::ErrorCode;

pub use args::Global;

/// Client exit codes (docs/CLI.md).
pub mod exit {
    pub const OK: i32 = 0;
    /// The command failed: service failed, reload rejected, daemon error.
    pub const FAILED: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const UNKNOWN_SERVICE: i32 = 3;
    /// `status NAME`: the service is not running or completed (as
    /// `systemctl is-active`'s 3, which an unknown unit also gets).
    pub const NOT_ACTIVE: i32 = 3;
    pub const UNREACHABLE: i32 = 4;
    pub const TIMEOUT: i32 = 5;
    pub const DENIED: i32 = 6;
}

/// Why a client command did not succeed.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Exit code (see [`exit`]).
    pub code: i32,
    /// Short machine-readable kind for JSON `error` (e.g. "unknown service").
    pub error: &'static str,
    /// Human message.
    pub message: String,
    /// Print `message` as is; otherwise prefixed with `coffeyd: `.
    pub plain: bool,
    /// Extra JSON fields for the error object (e.g. a rejected reload's plan).
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Failure {
    pub fn new(code: i32, error: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            code,
            error,
            message: message.into(),
            plain: false,
            extra: None,
        }
    }

    pub fn plain(mut self) -> Failure {
        self.plain = true;
        self
    }

    pub fn failed(message: impl Into<String>) -> Failure {
        Failure::new(exit::FAILED, "failed", message)
    }

    pub fn timeout(message: impl Into<String>) -> Failure {
        Failure::new(exit::TIMEOUT, "timeout", message)
    }

    /// The connection ended before the reply did.
    pub fn closed() -> Failure {
        Failure::new(
            exit::FAILED,
            "connection closed",
            "connection closed by daemon",
        )
    }

    pub fn protocol(message: impl Into<String>) -> Failure {
        Failure::new(exit::FAILED, "protocol error", message)
    }

    /// A `Reply::Error` from the daemon.
    pub fn from_daemon(code: ErrorCode, message: &str) -> Failure {
        let msg = if message.is_empty() {
            code.as_str().to_owned()
        } else {
            message.to_owned()
        };
        match code {
            ErrorCode::UnknownService => Failure::new(exit::UNKNOWN_SERVICE, code.as_str(), msg),
            ErrorCode::Denied => Failure::new(exit::DENIED, code.as_str(), msg),
            ErrorCode::Busy => Failure::new(
                exit::FAILED,
                code.as_str(),
                "coffeyd is busy (too many clients)",
            )
            .plain(),
            // Reload diagnostics are complete lines of their own.
            ErrorCode::Failed => Failure::new(exit::FAILED, code.as_str(), msg).plain(),
            _ => Failure::new(exit::FAILED, code.as_str(), msg),
        }
    }

    /// The stderr text.
    pub fn human(&self) -> String {
        if self.plain {
            self.message.clone()
        } else {
            format!("coffeyd: {}", self.message)
        }
    }

    /// The `-j` error object.
    pub fn json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("ok".into(), false.into());
        m.insert("error".into(), self.error.into());
        m.insert("code".into(), self.code.into());
        m.insert("message".into(), self.message.clone().into());
        if let Some(extra) = &self.extra {
            for (k, v) in extra {
                m.insert(k.clone(), v.clone());
            }
        }
        serde_json::Value::Object(m)
    }
}

/// Runs one client command; returns the exit code.
pub fn run(global: &Global, cmd: &args::Command) -> i32 {
    let style = render::Style::detect();
    let result = commands::run(global, cmd, style);
    match result {
        Ok(code) => code,
        Err(f) => {
            let text = f.human();
            let text = text.trim_end_matches('\n');
            if !text.is_empty() {
                eprintln!("{text}");
            }
            if global.json {
                render::print_json(&f.json());
            }
            f.code
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_errors_map_to_exit_codes() {
        let f = Failure::from_daemon(ErrorCode::UnknownService, "unknown service 'x'");
        assert_eq!(f.code, 3);
        assert_eq!(f.human(), "coffeyd: unknown service 'x'");
        let j = f.json();
        assert_eq!(j["ok"], false);
        assert_eq!(j["error"], "unknown service");
        assert_eq!(j["code"], 3);
        assert_eq!(j["message"], "unknown service 'x'");
        assert_eq!(Failure::from_daemon(ErrorCode::Denied, "").code, 6);
        assert_eq!(
            Failure::from_daemon(ErrorCode::Denied, "").message,
            "permission denied"
        );
        let busy = Failure::from_daemon(ErrorCode::Busy, "");
        assert_eq!(
            (busy.code, busy.human().as_str()),
            (1, "coffeyd is busy (too many clients)")
        );
        let rej = Failure::from_daemon(ErrorCode::Failed, "a.yaml:1:1: error: x");
        assert_eq!(
            (rej.code, rej.human().as_str()),
            (1, "a.yaml:1:1: error: x")
        );
        assert_eq!(Failure::from_daemon(ErrorCode::NoSlots, "full").code, 1);
        assert_eq!(Failure::timeout("t").code, 5);
        assert_eq!(Failure::closed().message, "connection closed by daemon");
    }
}
