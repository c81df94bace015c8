//! `command:`: the service's argv as compose writes it, a string split with
//! POSIX shell quoting (no shell is run) or a list, instead of `binary` and
//! `args`. Its program is an absolute path or a bare name, which the
//! daemon looks up in the service's `PATH` at each spawn. `${VAR}` is
//! expanded in each word after the split, so a value never splits into
//! more words.

use std::path::{Path, PathBuf};

use super::super::limits::DEFAULT_PATH;
use super::super::raw::{RawCommand, RawService};
use super::super::target::Target;
use super::env::Env;
use super::{Ctx, Seg, K};

/// The program and its arguments from `command:` (None: no usable argv;
/// the problem is reported).
pub(super) fn build_command(
    cx: &mut Ctx,
    raw: &RawService,
    c: &RawCommand,
    target: &Target,
    env: &Env,
) -> Option<(PathBuf, Vec<String>)> {
    let at = [K("command")];
    if raw.binary.is_some() || raw.args.is_some() {
        cx.err(
            &at,
            "give either `command` or `binary` and `args`, not both".to_owned(),
        );
    }
    let argv = match c {
        RawCommand::List(v) => v.clone(),
        RawCommand::Shell(s) => {
            let Some(v) = shlex::split(s) else {
                cx.err(
                    &at,
                    format!("command `{s}` has an unterminated quote or a trailing backslash"),
                );
                return None;
            };
            v
        }
    };
    let mut argv = argv
        .iter()
        .map(|w| env.expand(cx, &at, w))
        .collect::<Option<Vec<String>>>()?
        .into_iter();
    let Some(program) = argv.next().filter(|p| !p.is_empty()) else {
        cx.err(&at, "command is empty".to_owned());
        return None;
    };
    let args: Vec<String> = argv.collect();
    if args.iter().chain([&program]).any(|a| a.contains('\0')) {
        cx.err(&at, "command contains a NUL byte".to_owned());
        return None;
    }
    check_program(cx, &program, target, env);
    Some((PathBuf::from(program), args))
}

/// An absolute program must be executable; a relative one with a `/` is
/// refused (it would depend on the working directory).
fn check_program(cx: &mut Ctx, program: &str, target: &Target, env: &Env) {
    let at = [K("command")];
    if !program.contains('/') {
        let path = env.lookup("PATH");
        return check_in_path(cx, (&at, ""), program, target, path, "start");
    }
    let p = PathBuf::from(program);
    if !p.is_absolute() {
        cx.err(
            &at,
            format!(
                "command program '{program}' must be an absolute path or a bare name looked up in PATH"
            ),
        );
    } else if let Err(why) = target.executable(&p) {
        cx.finding(&at, &format!("program {program} is not executable: {why}"));
    }
}

/// A bare name: whether it is in the service's `PATH` (`path`; the
/// daemon's when None) now. A warning at `at` (its text after `label`)
/// when not: it may be installed before the service starts; the daemon
/// looks it up again at each `when` (start, probe).
pub(super) fn check_in_path(
    cx: &mut Ctx,
    (at, label): (&[Seg], &str),
    program: &str,
    target: &Target,
    path: Option<String>,
    when: &str,
) {
    let path = path.unwrap_or_else(|| DEFAULT_PATH.to_owned());
    let found = path.split(':').any(|dir| {
        let dir = if dir.is_empty() { "." } else { dir };
        target.executable(&Path::new(dir).join(program)).is_ok()
    });
    if !found {
        cx.warn(
            at,
            format!(
                "{label}program '{program}' is not in PATH {path} ({}; it is looked up again at each {when})",
                target.place()
            ),
        );
    }
}
