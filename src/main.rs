//! coffeyd: one binary, three roles.
//!
//! - no subcommand: the supervisor daemon (`daemon/`)
//! - `validate`: lint a config offline (`config/`)
//! - any other subcommand, or `ctl <cmd>`: a client of the control socket
//!
//! This file only picks the role; argument parsing uses lexopt.

mod config;
mod daemon;

use std::io::Write;
use std::path::PathBuf;

#[global_allocator]
static ALLOC: daemon::Counting = daemon::Counting;

const DEFAULT_CONFIG: &str = "/etc/coffey/config.yaml";

const USAGE: &str = "\
usage: coffeyd [-c FILE]              run the supervisor
       coffeyd validate [-c FILE]     check a config offline
       coffeyd version                print the version

options:
  -c, --config FILE   main config file (default /etc/coffey/config.yaml)
  -h, --help          this help
";

/// Exit codes (documented in docs/CLI.md).
mod exit {
    pub const OK: i32 = 0;
    pub const CONFIG: i32 = 1;
    pub const USAGE: i32 = 2;
}

enum Cmd {
    Daemon,
    Validate,
    Version,
    Help,
}

struct Args {
    cmd: Cmd,
    config: PathBuf,
}

fn parse() -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut cmd = Cmd::Daemon;
    let mut config = PathBuf::from(DEFAULT_CONFIG);
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next()? {
        match arg {
            Short('c') | Long("config") => config = p.value()?.into(),
            Short('h') | Long("help") => cmd = Cmd::Help,
            Short('V') | Long("version") => cmd = Cmd::Version,
            Value(v) if matches!(cmd, Cmd::Daemon) => {
                cmd = match v.to_str() {
                    Some("validate") => Cmd::Validate,
                    Some("version") => Cmd::Version,
                    Some("help") => Cmd::Help,
                    _ => return Err(Value(v).unexpected()),
                }
            }
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Args { cmd, config })
}

fn validate(path: &std::path::Path) -> i32 {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let (code, cfg) = config::run_validate(path, &mut out);
    if let Some(cfg) = cfg {
        let b = daemon::setup::budget(&cfg);
        let kib = |n: usize| n.div_ceil(1024);
        let _ = writeln!(
            out,
            "budget: {} service slots ({} configured), {} KiB preallocated: \
             log rings {} KiB, line buffers {} KiB, tables {} KiB, argv/envp {} KiB, fixed {} KiB; \
             file descriptors: {}",
            b.slots,
            cfg.services.len(),
            kib(b.total()),
            kib(b.ring_bytes),
            kib(b.line_bytes),
            kib(b.table_bytes),
            kib(b.exec_bytes),
            kib(b.fixed_bytes),
            b.fds
        );
    }
    code
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("coffeyd: {e}\n{USAGE}");
            std::process::exit(exit::USAGE);
        }
    };
    let code = match args.cmd {
        Cmd::Help => {
            print!("{USAGE}");
            exit::OK
        }
        Cmd::Version => {
            println!("coffeyd {}", env!("CARGO_PKG_VERSION"));
            exit::OK
        }
        Cmd::Validate => validate(&args.config),
        Cmd::Daemon => match config::load(&args.config) {
            Ok((cfg, warnings)) => {
                for w in &warnings {
                    eprintln!("{w}");
                }
                daemon::run(cfg)
            }
            Err(diags) => {
                for d in &diags {
                    eprintln!("{d}");
                }
                eprintln!(
                    "coffeyd: {}: config has errors; not starting",
                    args.config.display()
                );
                exit::CONFIG
            }
        },
    };
    std::process::exit(code);
}
