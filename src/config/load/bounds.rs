//! Fixed sizes a service must fit: its name, and the exec buffers of the
//! service and of its exec checks (`limits.rs`).

use std::path::Path;

use super::{Ctx, Seg, EXEC_ARENA, I, K, MAX_ARGS, MAX_ENV_EXTRA, MAX_NAME_LEN};

/// Service names: 1..=31 of [A-Za-z0-9_.-], not starting with '.' or '-'
/// (they become file names, and '-' would read as a CLI option).
pub(super) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("service name is empty".to_owned());
    }
    let len = name.chars().count();
    if len > MAX_NAME_LEN {
        return Err(format!(
            "service name '{name}' is too long ({len} characters, at most {MAX_NAME_LEN})"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(format!(
            "service name '{name}' has invalid characters (allowed: A-Z a-z 0-9 _ . -)"
        ));
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err(format!(
            "service name '{name}' must not start with '.' or '-'"
        ));
    }
    Ok(())
}

/// The per-service exec buffer holds the binary path, the working dir,
/// the args and the env entries (login env included), each with a NUL.
/// Reported at the entry that crosses the limit.
pub(super) fn check_exec_size(
    cx: &mut Ctx,
    binary: &Path,
    working_dir: Option<&Path>,
    args: &[String],
    env: &[String],
    login: &[String],
) {
    if args.len() > MAX_ARGS {
        cx.err(
            &[K("args")],
            format!("args: {} entries, the most is {MAX_ARGS}", args.len()),
        );
    }
    if env.len() > MAX_ENV_EXTRA {
        cx.err(
            &[K("env")],
            format!("env: {} entries, the most is {MAX_ENV_EXTRA}", env.len()),
        );
    }
    let cwd = working_dir.map_or(1, |w| w.as_os_str().len());
    let mut total = binary.as_os_str().len() + 1 + cwd + 1;
    let mut at: Option<Vec<Seg>> = (total > EXEC_ARENA).then(|| vec![K("binary")]);
    let items = args
        .iter()
        .enumerate()
        .map(|(i, a)| (vec![K("args"), I(i)], a))
        .chain(
            env.iter()
                .enumerate()
                .map(|(i, e)| (vec![K("env"), I(i)], e)),
        )
        .chain(login.iter().map(|e| (vec![K("user")], e)));
    for (path, item) in items {
        total += item.len() + 1;
        if total > EXEC_ARENA && at.is_none() {
            at = Some(path);
        }
    }
    if let Some(path) = at {
        let with_login = if login.is_empty() {
            ""
        } else {
            " (with the HOME, USER, LOGNAME and SHELL of `user`)"
        };
        cx.err(
            &path,
            format!(
                "binary, working_dir, args and env{with_login} take {total} bytes, the most is {EXEC_ARENA} (8 KiB)"
            ),
        );
    }
}

/// An exec check runs with the service's env and working dir in its own
/// exec buffer of the same size; its argv includes the program.
pub(super) fn check_command_size(
    cx: &mut Ctx,
    which: &'static str,
    command: &[String],
    working_dir: Option<&Path>,
    (env, login): (&[String], &[String]),
) {
    let at = [K("healthcheck"), K(which), K("command")];
    if command.len() > MAX_ARGS + 1 {
        cx.err(
            &at,
            format!(
                "healthcheck.{which}.command: {} entries, the most is {}",
                command.len(),
                MAX_ARGS + 1
            ),
        );
    }
    let cwd = working_dir.map_or(1, |w| w.as_os_str().len()) + 1;
    let total: usize = cwd
        + command
            .iter()
            .chain(env)
            .chain(login)
            .map(|x| x.len() + 1)
            .sum::<usize>();
    if total > EXEC_ARENA {
        cx.err(
            &at,
            format!(
                "healthcheck.{which}.command, working_dir and env take {total} bytes, the most is {EXEC_ARENA} (8 KiB)"
            ),
        );
    }
}
