//! A service's environment: `env_file:` files, then `env:` as a list of
//! `KEY=VALUE` strings or as a mapping (compose's two forms), with
//! `${VAR}` expansion (`expand.rs`). The daemon's own environment is the
//! base both override (spawn.rs); `env` overrides `env_file`. What the
//! daemon gets is the merged `KEY=VALUE` list, one entry per key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::super::raw::{RawEnv, RawService};
use super::super::target::{in_root, Target};
use super::super::Severity;
use super::expand::expand;
use super::{envfile, Ctx, Seg, I, K};

/// The merged environment of one service.
#[derive(Default)]
pub(super) struct Env {
    /// Keys in the order first set, and their last value.
    order: Vec<String>,
    vals: BTreeMap<String, String>,
    /// The keys `env:` sets (one set twice is a warning).
    seen: BTreeMap<String, usize>,
}

impl Env {
    fn set(&mut self, k: &str, v: String) {
        if self.vals.insert(k.to_owned(), v).is_none() {
            self.order.push(k.to_owned());
        }
    }

    /// `${NAME}`: the service's own value, else the daemon's environment
    /// (the compile child runs with it).
    pub fn lookup(&self, name: &str) -> Option<String> {
        self.vals
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
    }

    /// Expands `s`, reporting a problem at `path` (None then).
    pub fn expand(&self, cx: &mut Ctx, path: &[Seg], s: &str) -> Option<String> {
        match expand(s, &|n| self.lookup(n)) {
            Ok(v) => Some(v),
            Err(msg) => {
                cx.err(path, msg);
                None
            }
        }
    }

    /// The keys set (the login environment leaves them alone).
    pub fn keys(&self) -> BTreeMap<String, usize> {
        self.vals.keys().map(|k| (k.clone(), 0)).collect()
    }

    /// `KEY=VALUE` entries for the daemon.
    pub fn entries(&self) -> Vec<String> {
        self.order
            .iter()
            .map(|k| format!("{k}={}", self.vals.get(k).map_or("", String::as_str)))
            .collect()
    }
}

/// `env_file:` then `env:`.
pub(super) fn build_env(cx: &mut Ctx, raw: &RawService) -> Env {
    let mut env = Env::default();
    for (i, file) in raw.env_file.iter().flat_map(|f| f.0.iter()).enumerate() {
        read_env_file(cx, &mut env, i, file);
    }
    for (i, entry) in entries(cx, raw.env.as_ref()) {
        let path = [K("env"), I(i)];
        let Some((k, v)) = entry.split_once('=') else {
            cx.err(&path, format!("env entry '{entry}' is not KEY=VALUE"));
            continue;
        };
        if k.is_empty() {
            cx.err(&path, format!("env entry '{entry}' has an empty key"));
            continue;
        }
        if entry.contains('\0') {
            cx.err(&path, "env entry contains a NUL byte".to_owned());
        }
        if env.seen.insert(k.to_owned(), 0).is_some() {
            cx.warn(
                &path,
                format!("env key '{k}' is set twice; the last one wins"),
            );
        }
        if let Some(v) = env.expand(cx, &path, v) {
            env.set(k, v);
        }
    }
    env
}

/// One `env_file:` item: a path (relative to the file naming it), with a
/// leading `-` when a missing file is fine (systemd's `EnvironmentFile=-`).
fn read_env_file(cx: &mut Ctx, env: &mut Env, i: usize, item: &str) {
    let at = [K("env_file"), I(i)];
    let (optional, name) = match item.strip_prefix('-') {
        Some(n) => (true, n),
        None => (false, item),
    };
    let path = env_file_path(cx, name);
    let text = match read(cx.target, &path) {
        Ok(t) => t,
        Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            cx.err(&at, format!("env_file {}: {e}", path.display()));
            return;
        }
    };
    let lines = match envfile::parse(&text) {
        Ok(l) => l,
        Err((line, msg)) => return file_err(cx, &path, line, msg),
    };
    for l in lines {
        if l.value.contains('\0') {
            return file_err(
                cx,
                &path,
                l.line,
                "the value contains a NUL byte".to_owned(),
            );
        }
        let value = if l.expand {
            match expand(&l.value, &|n| env.lookup(n)) {
                Ok(v) => v,
                Err(msg) => return file_err(cx, &path, l.line, msg),
            }
        } else {
            l.value
        };
        env.set(&l.key, value);
    }
}

fn env_file_path(cx: &Ctx, name: &str) -> PathBuf {
    let p = Path::new(name);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    let dir = cx.src.file.parent().unwrap_or(Path::new("."));
    dir.join(p)
}

fn read(target: &Target, path: &Path) -> std::io::Result<String> {
    match target {
        Target::Host => std::fs::read_to_string(path),
        Target::Root(root) => {
            let p = in_root(root, path).map_err(std::io::Error::other)?;
            std::fs::read_to_string(p)
        }
    }
}

/// An error at `line` of an env file (its own file:line, not the config's).
fn file_err(cx: &mut Ctx, file: &Path, line: usize, msg: String) {
    let service = cx.service.clone();
    cx.sink.add(
        Severity::Error,
        file,
        (line, 1),
        service.as_deref(),
        format!("env_file: {msg}"),
    );
}

/// `env:` as `KEY=VALUE` strings with their item index; null items are
/// reported (unless error recovery made them).
fn entries(cx: &mut Ctx, env: Option<&RawEnv>) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let null = |cx: &mut Ctx, path: &[Seg], what: String| {
        if !cx.tainted(path) {
            cx.err(path, what);
        }
    };
    match env {
        None => {}
        Some(RawEnv::List(items)) => {
            for (i, item) in items.iter().enumerate() {
                match item {
                    Some(e) => out.push((i, e.clone())),
                    None => null(
                        cx,
                        &[K("env"), I(i)],
                        "empty env entry (write \"\" for an empty string)".to_owned(),
                    ),
                }
            }
        }
        Some(RawEnv::Map(items)) => {
            for (i, (k, v)) in items.iter().enumerate() {
                match v {
                    Some(v) if !k.contains('=') => out.push((i, format!("{k}={v}"))),
                    Some(_) => cx.err(&[K("env"), I(i)], format!("env key '{k}' contains '='")),
                    None => null(
                        cx,
                        &[K("env"), I(i)],
                        format!("env key '{k}' has no value (write \"\" for an empty string)"),
                    ),
                }
            }
        }
    }
    out
}
