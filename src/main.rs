//! coffeyd: one binary, three roles.
//!
//! - no subcommand: the supervisor daemon (`daemon/`)
//! - `validate`: lint a config offline (`config/`)
//! - any other subcommand, or `ctl <cmd>`: a client of the control socket
//!   (`cli/`); invoked as `coffeyctl` (e.g. through a symlink) it is only
//!   ever a client
//!
//! This file only picks the role; argument parsing lives in `cli::args`
//! (lexopt). Nothing here may run after the daemon's startup ends.

mod cli;
mod config;
mod daemon;

use std::io::Write;

use cli::args::{self, Invocation};

#[global_allocator]
static ALLOC: daemon::Counting = daemon::Counting;

/// Daemon and validator exit codes (documented in docs/CLI.md); the
/// client's, usage included, are in `cli::exit`.
mod exit {
    pub const OK: i32 = 0;
}

fn validate(path: &std::path::Path, target: &config::Target) -> i32 {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let (code, cfg) = config::run_validate(path, target, &mut out);
    if let Some(cfg) = cfg {
        let b = daemon::setup::budget(&cfg);
        let kib = |n: usize| n.div_ceil(1024);
        let _ = writeln!(
            out,
            "budget: {} service slots ({} configured), {} KiB preallocated: \
             log rings {} KiB, line buffers {} KiB, tables {} KiB, argv/envp {} KiB, \
             connections {} KiB, reload {} KiB, fixed {} KiB \
             (rings, exec, connection and reload buffers cost memory only as used); \
             file descriptors: {}",
            b.slots,
            cfg.services.len(),
            kib(b.total()),
            kib(b.ring_bytes),
            kib(b.line_bytes),
            kib(b.table_bytes),
            kib(b.exec_bytes),
            kib(b.conn_bytes),
            kib(b.reload_bytes),
            kib(b.fixed_bytes),
            b.fds
        );
    }
    code
}

fn main() {
    // Hidden: the reload child (`coffeyd __compile -c FILE`), see
    // daemon/reload/. Not a user command.
    {
        let a: Vec<std::ffi::OsString> = std::env::args_os().skip(1).take(3).collect();
        if a.first().is_some_and(|x| x == "__compile") && a.get(1).is_some_and(|x| x == "-c") {
            if let Some(path) = a.get(2) {
                std::process::exit(daemon::compile_child(std::path::Path::new(path)));
            }
        }
    }
    // SAFETY: getpid never fails.
    if unsafe { nix::libc::getpid() } == 1 {
        // PID 1: the kernel passes unknown boot parameters as argv; never
        // exit over them. Only -c/--config, --container and single/S count.
        let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
        let mut config = std::path::PathBuf::from(args::DEFAULT_CONFIG);
        let (mut container, mut single) = (false, false);
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.to_str() {
                Some("-c" | "--config") => {
                    if let Some(p) = it.next() {
                        config = p.into();
                    }
                }
                Some("--container") => container = true,
                Some("single" | "S") => single = true,
                _ => {}
            }
        }
        std::process::exit(daemon::boot(config, container, single));
    }
    let mut argv = std::env::args_os();
    let power = args::power_name(std::env::args_os().next().as_deref());
    let client_only = args::is_ctl_name(argv.next().as_deref());
    let prog = args::prog(client_only);
    // argv[0] poweroff/reboot/halt: that verb (busybox-style symlinks).
    let parsed = match power {
        Some(verb) => args::parse(
            std::iter::once(std::ffi::OsString::from(verb)).chain(argv),
            true,
        ),
        None => args::parse(argv, client_only),
    };
    let inv = match parsed {
        Ok(i) => i,
        Err(e) => {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{prog}: {e}");
            if client_only && e.0 == "a command is required" {
                let _ = write!(err, "{}", args::usage(true));
            } else {
                let _ = writeln!(err, "try '{prog} --help'");
            }
            std::process::exit(cli::exit::USAGE);
        }
    };
    let code = match inv {
        Invocation::Help => {
            let _ = write!(std::io::stdout(), "{}", args::usage(client_only));
            exit::OK
        }
        Invocation::Client { global, cmd } => {
            // Short-lived: allocations from a bump arena (daemon/alloc.rs).
            daemon::client_allocator();
            cli::run(&global, &cmd)
        }
        Invocation::Validate { config, json, root } => {
            let target = root.map_or(config::Target::Host, config::Target::Root);
            if json {
                cli::validate::run_json(&config, &target)
            } else {
                validate(&config, &target)
            }
        }
        Invocation::Daemon { config, container } => daemon::boot(config, container, false),
    };
    std::process::exit(code);
}
