//! The daemon's settings from outside `services:`, owned: built once at
//! startup from the globals section of the compiled config
//! (`compiled::globals`) that the `__compile` child wrote, and read by
//! boot's PID 1 setup, `setup::start` and shutdown. The daemon never holds
//! a parsed `Config`: it never runs the YAML parser (see `compile_once`
//! in `reload/machine.rs`).
#![allow(clippy::disallowed_methods, clippy::disallowed_macros)] // startup

use super::compiled::{self, CGlobals, Compiled, Corrupt};
use crate::config::{DaemonLog, EventLog, Limits, Mount, ServiceLogs};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub struct Globals {
    /// The config file, as given on the command line or by the kernel.
    pub path: PathBuf,
    pub socket: PathBuf,
    pub pid_file: Option<PathBuf>,
    /// (name, gid): the socket is 0660 and owned by it; otherwise 0600.
    pub socket_group: Option<(String, u32)>,
    pub log: DaemonLog,
    pub events: Option<EventLog>,
    pub service_logs: ServiceLogs,
    pub limits: Limits,
    pub shutdown_timeout: u64,
    pub hostname: Option<String>,
    pub emergency: PathBuf,
    pub early_mounts: bool,
    pub mounts: Vec<Mount>,
    pub main: Option<String>,
    pub cgroup: Option<PathBuf>,
    /// The validator's warnings, one a line (printed at startup).
    pub warnings: String,
    /// How many services the config defines.
    pub services: usize,
}

fn path(b: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(b))
}

impl Globals {
    /// The owned globals of the valid compiled config `buf`, loaded from
    /// `file`. `Err` for the validator's messages is not here: see
    /// `compiled::decode`'s `Invalid`.
    pub fn decode(file: &Path, buf: &[u8]) -> Result<Globals, Corrupt> {
        let Compiled::Valid {
            shutdown_timeout,
            count,
            ..
        } = compiled::decode(buf)?
        else {
            return Err(Corrupt);
        };
        let g = compiled::globals(buf)?;
        Ok(Globals {
            path: file.to_path_buf(),
            socket: path(g.socket),
            pid_file: g.pid_file.map(path),
            socket_group: g.socket_group.map(|(n, gid)| (n.to_string(), gid)),
            log: DaemonLog {
                path: g.log_path.map(path),
                console: g.log_console,
                max_size: g.log_max_size,
                keep: g.log_keep,
            },
            events: g.events.map(|(p, max_size, keep)| EventLog {
                path: path(p),
                max_size,
                keep,
            }),
            service_logs: ServiceLogs {
                dir: g.logs_dir.map(path),
                max_size: g.logs_max_size,
                keep: g.logs_keep,
                buffer: g.logs_buffer,
            },
            limits: Limits {
                services: g.limit_services,
                clients: g.limit_clients,
            },
            shutdown_timeout,
            hostname: g.hostname.map(str::to_string),
            emergency: path(g.emergency),
            early_mounts: g.early_mounts,
            mounts: mounts(&g),
            main: g.main.map(str::to_string),
            cgroup: g.cgroup.map(path),
            warnings: g.warnings.to_string(),
            services: usize::from(count),
        })
    }
}

fn mounts(g: &CGlobals<'_>) -> Vec<Mount> {
    g.mounts()
        .map(|m| Mount {
            source: m.source.to_string(),
            target: path(m.target),
            fstype: m.fstype.to_string(),
            flags: m.flags,
            data: m.data.to_string(),
        })
        .collect()
}

/// Why startup has no config to run.
pub enum Failure {
    /// The validator's diagnostics, one a line, as the child wrote them.
    Invalid(String),
    /// The compile child could not run, died, or wrote no compiled config.
    Compiler(String),
}

/// The first config, compiled by the `__compile` child as reload does:
/// the owned globals and the compiled bytes.
pub fn compile(path: &std::path::Path) -> Result<(Globals, Vec<u8>), Failure> {
    let out = super::reload::machine::compile_once(path).map_err(Failure::Compiler)?;
    read_output(path, out)
}

/// The compile child's output: the validator's messages, or the globals
/// and the compiled bytes.
fn read_output(path: &std::path::Path, out: Vec<u8>) -> Result<(Globals, Vec<u8>), Failure> {
    if let Ok(Compiled::Invalid(text)) = compiled::decode(&out) {
        return Err(Failure::Invalid(text.to_string()));
    }
    let g = Globals::decode(path, &out).map_err(|_| {
        Failure::Compiler(format!(
            "the config compiler wrote {} bytes that are no compiled config",
            out.len()
        ))
    })?;
    Ok((g, out))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// Every global the daemon uses survives the compiled form, warnings
    /// included, and a truncated globals section is refused.
    #[test]
    fn globals_round_trip_through_the_compiled_form() {
        let dir = std::env::temp_dir().join(format!("cfy-globals-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.yaml");
        std::fs::write(
            &p,
            "coffey:\n  socket: /run/x.sock\n  pid_file: /run/x.pid\n  log:\n    path: /var/log/c.log\n    console: false\n    max_size: 2M\n    keep: 4\n  events: {path: /var/log/ev.jsonl, max_size: 64K, keep: 3}\n  service_logs:\n    dir: /var/log/svc\n    buffer: 8K\n    keep: 2\n  limits:\n    services: 7\n    clients: 3\n  shutdown_timeout: 4s\n  hostname: board-1\n  emergency: /bin/ash\n  early_mounts: false\n  mounts:\n    - {source: tmpfs, target: /tmp, type: tmpfs, options: 'nosuid,mode=1777'}\n  main: a\n  cgroup: /sys/fs/cgroup/c\nservices:\n  - name: a\n    binary: /bin/sh\n  - name: b\n    binary: /bin/true\n",
        )
        .unwrap();
        let (cfg, _) = crate::config::load(&p).unwrap();
        let bytes = compiled::encode_with(&cfg, "w1\nw2");
        let g = Globals::decode(&p, &bytes).unwrap();
        assert_eq!(g.path, p);
        assert_eq!(g.socket, cfg.socket);
        assert_eq!(g.pid_file, cfg.pid_file);
        assert_eq!(g.socket_group, cfg.socket_group);
        assert_eq!(g.log, cfg.log);
        assert!(cfg.events.is_some());
        assert_eq!(g.events, cfg.events);
        assert_eq!(g.service_logs, cfg.service_logs);
        assert_eq!(g.limits, cfg.limits);
        assert_eq!(g.shutdown_timeout, cfg.shutdown_timeout);
        assert_eq!(g.hostname.as_deref(), Some("board-1"));
        assert_eq!(g.emergency, cfg.emergency);
        assert!(!g.early_mounts);
        assert_eq!(g.mounts, cfg.mounts);
        assert_eq!(g.mounts.len(), 1);
        assert_eq!(g.main.as_deref(), Some("a"));
        assert_eq!(g.cgroup, cfg.cgroup);
        assert_eq!(g.warnings, "w1\nw2");
        assert_eq!(g.services, 2);
        // Reload's decoder skips the section and still finds the services.
        let Ok(Compiled::Valid { count, .. }) = compiled::decode(&bytes) else {
            panic!()
        };
        assert_eq!(count, 2);
        for k in 0..bytes.len() {
            assert!(Globals::decode(&p, &bytes[..k]).is_err(), "cut at {k}");
        }
        assert!(Globals::decode(&p, &compiled::encode_error("bad")).is_err());
    }

    /// A compiler that writes no compiled config is a clear error, not a
    /// config, and the validator's messages are passed on as they are.
    #[test]
    fn a_compiler_that_writes_garbage_is_a_compiler_failure() {
        let p = std::path::Path::new("/etc/coffey/config.yaml");
        match read_output(p, b"#!garbage".to_vec()) {
            Err(Failure::Compiler(why)) => assert!(
                why.contains("config compiler wrote 9 bytes that are no compiled config"),
                "{why}"
            ),
            _ => panic!("garbage was taken for a config"),
        }
        match read_output(p, compiled::encode_error("a.yaml:1:1: error: x")) {
            Err(Failure::Invalid(t)) => assert_eq!(t, "a.yaml:1:1: error: x"),
            _ => panic!("the diagnostics were lost"),
        }
    }
}
