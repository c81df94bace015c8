//! One service entry: name, exec (binary, args, env, working dir, user),
//! restart and backoff, dependencies, logs, checks and limits. Each section
//! is built by its own function, in the order the diagnostics come out.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::super::raw::{
    List, RawBackoff, RawCondition, RawDep, RawKind, RawRestart, RawService, RawServiceLog,
};
use super::super::spec::{
    Backoff, Check, CheckKind, Condition, Dep, Healthcheck, Kind, Millis, Restart, ServiceLog,
    ServiceSpec,
};
use super::super::target::Target;
use super::super::units::fmt_ms;
use super::bounds::{check_command_size, check_exec_size, check_name};
use super::check::build_check;
use super::command::{build_command, check_in_path};
use super::creds::{build_creds, Creds};
use super::env::{build_env, Env};
use super::resources::{build_resources, rlimits};
use super::{
    check_buffer, check_path, resolve, Ctx, Entry, Globals, Seg, Sink, Src,
    DEFAULT_BACKOFF_INITIAL, DEFAULT_BACKOFF_MAX, DEFAULT_BACKOFF_MULTIPLIER,
    DEFAULT_BACKOFF_RESET, DEFAULT_DEGRADED_AFTER, DEFAULT_STOP_TIMEOUT, I, K, LOG_PATH_MAX,
    MAX_BACKOFF_MULTIPLIER, MAX_DEPS,
};

/// What the service runs, as whom and with which environment.
struct Exec {
    binary: PathBuf,
    args: Vec<String>,
    env: Vec<String>,
    working_dir: Option<PathBuf>,
    creds: Creds,
}

/// Build one service. Never fails: problems go to the sink, and the entry is
/// still returned so other services' dependencies on it resolve.
#[allow(clippy::too_many_arguments)]
pub(super) fn build_service(
    raw: &RawService,
    src: &Src,
    src_idx: usize,
    prefix: Vec<Seg>,
    tainted: bool,
    fallback_name: Option<&str>,
    g: &Globals,
    sink: &mut Sink,
) -> Entry {
    let name = raw
        .name
        .clone()
        .or_else(|| fallback_name.map(str::to_owned));
    let mut cx = Ctx {
        sink,
        src,
        prefix: &prefix,
        service: name.clone(),
        target: g.target,
    };
    let named = service_name(&mut cx, raw, name.as_deref());
    let name = name.unwrap_or_default();
    // The service's own name, once it is usable (for self-dependencies and
    // the default log file).
    let own = named.then_some(name.as_str());
    let exec = build_exec(&mut cx, raw, g.target);
    let (kind, restart) = kind_and_restart(&mut cx, raw);
    let backoff = build_backoff(&mut cx, raw.backoff.as_ref());
    let (depends_on, dep_items) = build_deps(&mut cx, raw.depends_on.as_ref(), own);
    let log = build_log(&mut cx, raw.log.as_ref(), g, own);
    let healthcheck = build_healthcheck(&mut cx, raw, restart, &exec);
    let rlimits = rlimits(&mut cx, raw.rlimits.as_ref());
    let start_timeout = start_timeout(&mut cx, raw);
    let resources = build_resources(&mut cx, raw.resources.as_ref(), g.cgroup);
    let (fds, fd_names) =
        super::fds::build_service_fds(&mut cx, raw.fds.as_ref(), &g.fds, &healthcheck);
    let spec = ServiceSpec {
        name,
        binary: exec.binary,
        args: exec.args,
        env: exec.env,
        working_dir: exec.working_dir,
        user: exec.creds.user,
        group: exec.creds.group,
        supplementary_gids: exec.creds.groups,
        login_env: exec.creds.login_env,
        cred_error: exec.creds.error,
        umask: raw.umask.map(|u| u.0),
        rlimits,
        kind,
        restart,
        backoff,
        max_restarts: raw.max_restarts.unwrap_or(0),
        degraded_after: raw.degraded_after.unwrap_or(DEFAULT_DEGRADED_AFTER),
        stop_signal: raw
            .stop_signal
            .map_or(nix::sys::signal::Signal::SIGTERM as i32, |s| s.0),
        stop_timeout: raw.stop_timeout.map_or(DEFAULT_STOP_TIMEOUT, |d| d.0),
        resources,
        depends_on,
        log,
        healthcheck,
        start_timeout,
        fds,
        fd_names,
    };
    Entry {
        spec,
        src: src_idx,
        prefix,
        named,
        tainted,
        dep_items,
    }
}

/// Checks the service's name (from `name:` or the drop-in's file name);
/// whether it is usable.
fn service_name(cx: &mut Ctx, raw: &RawService, name: Option<&str>) -> bool {
    let Some(n) = name else {
        if !cx.blanked(&[K("name")]) {
            cx.err(&[], "missing required key 'name'".to_owned());
        }
        return false;
    };
    match check_name(n) {
        Ok(()) => true,
        Err(msg) => {
            if raw.name.is_none() {
                cx.err(
                    &[],
                    format!("{msg} (the name comes from the file name; set `name:`)"),
                );
            } else {
                cx.err(&[K("name")], msg);
            }
            false
        }
    }
}

/// Binary, args, env, working dir and credentials, then whether they fit
/// the exec buffer.
fn build_exec(cx: &mut Ctx, raw: &RawService, target: &Target) -> Exec {
    // The environment first: `${VAR}` in the command reads it.
    let env = build_env(cx, raw);
    let (binary, args) = match &raw.command {
        Some(c) => build_command(cx, raw, c, target, &env).unwrap_or_default(),
        None => (build_binary(cx, raw, target), build_args(cx, raw, &env)),
    };
    let working_dir = build_working_dir(cx, raw, target);
    let creds = build_creds(cx, raw, &env.keys());
    let env = env.entries();
    check_exec_size(
        cx,
        &binary,
        working_dir.as_deref(),
        &args,
        &env,
        &creds.login_env,
    );
    Exec {
        binary,
        args,
        env,
        working_dir,
        creds,
    }
}

/// `args:`, each with `${VAR}` expanded.
fn build_args(cx: &mut Ctx, raw: &RawService, env: &Env) -> Vec<String> {
    let args = list_strings(cx, raw.args.as_ref(), "args", |cx, path, a| {
        if a.contains('\0') {
            cx.err(path, "argument contains a NUL byte".to_owned());
        }
    });
    let items = raw.args.iter().flatten().enumerate();
    let at = items.filter(|(_, a)| a.is_some()).map(|(i, _)| i);
    args.iter()
        .zip(at)
        .map(|(a, i)| env.expand(cx, &[K("args"), I(i)], a).unwrap_or_default())
        .collect()
}

/// `binary:`: an absolute path, executable on the target.
fn build_binary(cx: &mut Ctx, raw: &RawService, target: &Target) -> PathBuf {
    let Some(b) = &raw.binary else {
        if !cx.blanked(&[K("binary")]) {
            cx.err(
                &[],
                "missing required key 'binary' (or 'command')".to_owned(),
            );
        }
        return PathBuf::new();
    };
    let p = PathBuf::from(b);
    if check_path(cx, &[K("binary")], "binary", b) {
        if !p.is_absolute() {
            cx.err(
                &[K("binary")],
                format!("binary '{b}' must be an absolute path"),
            );
        } else if let Err(why) = target.executable(&p) {
            cx.finding(
                &[K("binary")],
                &format!("binary {b} is not executable: {why}"),
            );
        }
    }
    p
}

/// `working_dir:`: absolute; a missing directory is only a warning (it may
/// be made before the service starts).
fn build_working_dir(cx: &mut Ctx, raw: &RawService, target: &Target) -> Option<PathBuf> {
    let w = raw.working_dir.as_ref()?;
    if !check_path(cx, &[K("working_dir")], "working_dir", w) {
        return None;
    }
    let p = PathBuf::from(w);
    if !p.is_absolute() {
        cx.err(
            &[K("working_dir")],
            format!("working_dir '{w}' must be an absolute path"),
        );
    } else if !dir_exists(target, &p) {
        cx.warn(
            &[K("working_dir")],
            format!("working_dir {w} is not a directory (yet); starting will fail"),
        );
    }
    Some(p)
}

fn dir_exists(target: &Target, p: &Path) -> bool {
    match target {
        Target::Host => p.is_dir(),
        Target::Root(root) => super::super::target::in_root(root, p).is_ok_and(|r| r.is_dir()),
    }
}

/// `type:` and `restart:` (a oneshot defaults to never).
fn kind_and_restart(cx: &mut Ctx, raw: &RawService) -> (Kind, Restart) {
    let kind = match raw.kind {
        Some(RawKind::Oneshot) => Kind::Oneshot,
        Some(RawKind::Service) | None => Kind::Service,
    };
    let restart = match raw.restart {
        Some(RawRestart::Always) => Restart::Always,
        Some(RawRestart::OnFailure) => Restart::OnFailure,
        Some(RawRestart::Never) => Restart::Never,
        None if kind == Kind::Oneshot => Restart::Never,
        None => Restart::Always,
    };
    if kind == Kind::Oneshot && restart == Restart::Always {
        cx.warn(
            &[K("restart")],
            "oneshot with restart: always re-runs forever (use a service, or restart: on-failure)"
                .to_owned(),
        );
    }
    (kind, restart)
}

/// `backoff:` with its defaults: initial at most max, a sane multiplier.
fn build_backoff(cx: &mut Ctx, rb: Option<&RawBackoff>) -> Backoff {
    let bp = |k: &'static str| [K("backoff"), K(k)];
    let backoff = Backoff {
        initial: rb
            .and_then(|b| b.initial)
            .map_or(DEFAULT_BACKOFF_INITIAL, |d| d.0),
        max: rb.and_then(|b| b.max).map_or(DEFAULT_BACKOFF_MAX, |d| d.0),
        multiplier: rb
            .and_then(|b| b.multiplier)
            .unwrap_or(DEFAULT_BACKOFF_MULTIPLIER),
        reset_after: rb
            .and_then(|b| b.reset_after)
            .map_or(DEFAULT_BACKOFF_RESET, |d| d.0),
    };
    if backoff.initial == 0 {
        // Allowed (some want a restart at once), but say what it costs.
        cx.warn(
            &bp("initial"),
            "backoff.initial is 0: a service that keeps crashing is restarted at once, in a loop without delay"
                .to_owned(),
        );
    }
    if backoff.initial > backoff.max {
        let at = if rb.and_then(|b| b.max).is_some() {
            bp("max")
        } else {
            bp("initial")
        };
        cx.err(
            &at,
            format!(
                "backoff.initial ({}) is larger than backoff.max ({})",
                fmt_ms(backoff.initial),
                fmt_ms(backoff.max)
            ),
        );
    }
    let m = backoff.multiplier;
    if !m.is_finite() || m < 1.0 {
        cx.err(
            &bp("multiplier"),
            format!("backoff.multiplier must be a finite number >= 1.0 (got {m})"),
        );
    } else if m > MAX_BACKOFF_MULTIPLIER {
        cx.err(
            &bp("multiplier"),
            format!("backoff.multiplier must be at most {MAX_BACKOFF_MULTIPLIER} (got {m})"),
        );
    }
    backoff
}

/// `depends_on:`: the dependencies kept, and for each its index in the YAML
/// list (for positions in the cross checks). Self and repeated entries are
/// dropped; whether the targets exist is a cross check.
fn build_deps(
    cx: &mut Ctx,
    list: Option<&List<RawDep>>,
    own: Option<&str>,
) -> (Vec<Dep>, Vec<usize>) {
    let mut depends_on = Vec::new();
    let mut dep_items = Vec::new();
    if let Some(list) = list {
        let mut seen = BTreeSet::new();
        for (i, item) in list.iter().enumerate() {
            let path = [K("depends_on"), I(i)];
            let Some(dep) = item else {
                if !cx.tainted(&path) {
                    cx.err(&path, "empty depends_on entry".to_owned());
                }
                continue;
            };
            if own == Some(dep.name.as_str()) {
                cx.err(&path, "depends on itself".to_owned());
                continue;
            }
            if !seen.insert(dep.name.clone()) {
                cx.warn(&path, format!("dependency '{}' is listed twice", dep.name));
                continue;
            }
            let condition = match dep.condition {
                Some(RawCondition::Healthy) => Condition::Healthy,
                Some(RawCondition::Completed) => Condition::Completed,
                Some(RawCondition::Started) | None => Condition::Started,
            };
            depends_on.push(Dep {
                name: dep.name.clone(),
                condition,
            });
            dep_items.push(i);
        }
    }
    if depends_on.len() > MAX_DEPS {
        cx.err(
            &[K("depends_on")],
            format!(
                "depends_on: {} entries, the most is {MAX_DEPS}",
                depends_on.len()
            ),
        );
    }
    (depends_on, dep_items)
}

/// `log:`: the file (default `<service_logs.dir>/<name>.log`), console and
/// ring size, defaulting to `coffey.service_logs`.
fn build_log(
    cx: &mut Ctx,
    rl: Option<&RawServiceLog>,
    g: &Globals,
    own: Option<&str>,
) -> ServiceLog {
    let file = match rl.and_then(|l| l.file.as_ref()) {
        Some(f) if check_path(cx, &[K("log"), K("file")], "log.file", f) => {
            let base = g.log_dir.as_deref().unwrap_or(&g.base_dir);
            Some(resolve(base, f))
        }
        Some(_) => None,
        None => own.and_then(|name| g.log_dir.as_ref().map(|d| d.join(format!("{name}.log")))),
    };
    if let Some(f) = &file {
        let len = f.as_os_str().len();
        if len > LOG_PATH_MAX {
            let (path, from): (&[Seg], &str) = if rl.and_then(|l| l.file.as_ref()).is_some() {
                (&[K("log"), K("file")], "")
            } else {
                (&[], " (from coffey.service_logs.dir)")
            };
            cx.err(
                path,
                format!(
                    "log file path {}{from} is {len} bytes, the most is {LOG_PATH_MAX}",
                    f.display()
                ),
            );
        }
    }
    let buffer = match rl.and_then(|l| l.buffer) {
        Some(b) => check_buffer(cx, &[K("log"), K("buffer")], "log.buffer", b.0),
        None => g.buffer,
    };
    ServiceLog {
        file,
        console: rl.and_then(|l| l.console).unwrap_or(g.console),
        buffer,
        to: rl.and_then(|l| l.to.clone()),
    }
}

/// `healthcheck:`: both checks, whether an exec check fits its buffer with
/// the service's env, and a liveness check that can never restart.
fn build_healthcheck(cx: &mut Ctx, raw: &RawService, restart: Restart, exec: &Exec) -> Healthcheck {
    let rh = raw.healthcheck.as_ref();
    let healthcheck = Healthcheck {
        readiness: rh
            .and_then(|h| h.readiness.as_ref())
            .and_then(|c| build_check(cx, c, "readiness")),
        liveness: rh
            .and_then(|h| h.liveness.as_ref())
            .and_then(|c| build_check(cx, c, "liveness")),
        startup: rh
            .and_then(|h| h.startup.as_ref())
            .and_then(|c| build_check(cx, c, "startup")),
    };
    for (which, c) in [
        ("readiness", &healthcheck.readiness),
        ("liveness", &healthcheck.liveness),
        ("startup", &healthcheck.startup),
    ] {
        if let Some(Check {
            kind: CheckKind::Exec { command },
            ..
        }) = c
        {
            let own = (exec.env.as_slice(), exec.creds.login_env.as_slice());
            check_command_size(cx, which, command, exec.working_dir.as_deref(), own);
            check_probe_in_path(cx, which, command, exec);
        }
    }
    startup_with_notify(cx, &healthcheck);
    if restart == Restart::Never && healthcheck.liveness.is_some() {
        cx.warn(
            &[K("healthcheck"), K("liveness")],
            "liveness check with restart: never: a failed check stops the service for good"
                .to_owned(),
        );
    }
    healthcheck
}

/// An exec check's bare program name: is it in the PATH its probes get
/// (the service's env, else the daemon's)? Looked up again at each probe.
fn check_probe_in_path(cx: &mut Ctx, which: &'static str, command: &[String], exec: &Exec) {
    let Some(program) = command.first().filter(|p| !p.contains('/')) else {
        return;
    };
    let path = exec
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .map(str::to_owned)
        .or_else(|| std::env::var("PATH").ok());
    let at = [K("healthcheck"), K(which), K("command"), I(0)];
    let label = format!("healthcheck.{which}: ");
    check_in_path(cx, (&at, &label), program, cx.target, path, "probe");
}

/// A startup probe gates the readiness probe; a notify readiness check
/// is the service's own word, which a probe cannot gate: an error.
fn startup_with_notify(cx: &mut Ctx, h: &Healthcheck) {
    let notify = matches!(
        h.readiness,
        Some(Check {
            kind: CheckKind::Notify { .. },
            ..
        })
    );
    if notify && h.startup.is_some() {
        cx.err(
            &[K("healthcheck"), K("startup")],
            "healthcheck.startup cannot be used with a notify readiness check: the service says itself when it has started".to_owned(),
        );
    }
}

/// `start_timeout:`: at least 1ms, and only of use with a readiness check.
fn start_timeout(cx: &mut Ctx, raw: &RawService) -> Option<Millis> {
    let start_timeout = raw.start_timeout.map(|d| d.0);
    // A startup check without readiness also decides when it is ready.
    let readiness =
        (raw.healthcheck.as_ref()).and_then(|h| h.readiness.as_ref().or(h.startup.as_ref()));
    if start_timeout == Some(0) {
        cx.err(
            &[K("start_timeout")],
            "start_timeout must be at least 1ms (leave it out to wait forever)".to_owned(),
        );
    } else if start_timeout.is_some() && readiness.is_none() {
        cx.warn(
            &[K("start_timeout")],
            "start_timeout has no effect without a readiness check (the service is ready once started)"
                .to_owned(),
        );
    }
    start_timeout
}

/// A list of strings, with null items reported (unless recovery made them).
fn list_strings(
    cx: &mut Ctx,
    list: Option<&Vec<Option<String>>>,
    key: &'static str,
    mut check: impl FnMut(&mut Ctx, &[Seg], &str),
) -> Vec<String> {
    let mut out = Vec::new();
    for (i, item) in list.into_iter().flatten().enumerate() {
        let path = [K(key), I(i)];
        match item {
            Some(s) => {
                check(cx, &path, s);
                out.push(s.clone());
            }
            None => {
                if !cx.tainted(&path) {
                    cx.err(
                        &path,
                        format!("empty {key} entry (write \"\" for an empty string)"),
                    );
                }
            }
        }
    }
    out
}
