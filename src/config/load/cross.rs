//! Checks over every built service once all files are read: duplicate
//! names, dependencies and their cycles, `coffey.main`, and capacity.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::super::raw::RawFile;
use super::super::spec::{Condition, Config, Dep, Kind, Limits};
use super::{
    Entry, Seg, Severity, Sink, Src, DEFAULT_CLIENTS, I, K, MAX_CLIENTS, MAX_SERVICES,
    SERVICE_HEADROOM,
};

/// `coffey.main` must name a service (checked once every file is read).
pub(super) fn check_main(
    config: &Config,
    entries: &[Entry],
    srcs: &[Src],
    incomplete: bool,
    sink: &mut Sink,
) {
    let Some(main) = &config.main else { return };
    if incomplete || entries.iter().any(|e| e.spec.name == *main) {
        return;
    }
    // A service whose name was lost to error recovery may be the one.
    if entries.iter().any(|e| e.tainted && e.spec.name.is_empty()) {
        return;
    }
    let Some(src) = srcs.first() else { return };
    sink.add(
        Severity::Error,
        &src.file,
        src.pos(&[K("coffey"), K("main")]),
        None,
        format!("main service '{main}' is not defined"),
    );
}

pub(super) fn check_limits(
    raw: &RawFile,
    count: usize,
    srcs: &[Src],
    incomplete: bool,
    sink: &mut Sink,
) -> Limits {
    let limits = raw.coffey.as_ref().and_then(|c| c.limits.as_ref());
    let count32 = u32::try_from(count).unwrap_or(u32::MAX);
    let Some(src) = srcs.first() else {
        return Limits {
            services: count32,
            clients: DEFAULT_CLIENTS,
        };
    };
    let lp = |k: &'static str| [K("coffey"), K("limits"), K(k)];
    let mut add = |path: &[Seg], msg: String| {
        sink.add(Severity::Error, &src.file, src.pos(path), None, msg);
    };
    let services = match limits.and_then(|l| l.services) {
        Some(n) => {
            if n > MAX_SERVICES {
                add(
                    &lp("services"),
                    format!("limits.services is {n}; the maximum is {MAX_SERVICES}"),
                );
            } else if n < count32 && !incomplete {
                add(
                    &lp("services"),
                    format!(
                        "capacity below the number of services: limits.services is {n} but {count} services are defined"
                    ),
                );
            }
            n
        }
        None => {
            if count32 > MAX_SERVICES {
                add(
                    &[K("services")],
                    format!("too many services ({count}); the maximum is {MAX_SERVICES}"),
                );
            }
            count32.saturating_add(SERVICE_HEADROOM).min(MAX_SERVICES)
        }
    };
    let clients = limits.and_then(|l| l.clients).unwrap_or(DEFAULT_CLIENTS);
    if !(1..=MAX_CLIENTS).contains(&clients) {
        add(
            &lp("clients"),
            format!("limits.clients is {clients}; it must be between 1 and {MAX_CLIENTS}"),
        );
    }
    Limits { services, clients }
}

/// File and position of entry `e`'s `path` (relative to the service).
fn entry_pos(srcs: &[Src], e: &Entry, path: &[Seg]) -> (PathBuf, (usize, usize)) {
    match srcs.get(e.src) {
        Some(src) => {
            let mut full = e.prefix.clone();
            full.extend_from_slice(path);
            (src.file.clone(), src.outline.locate(&full))
        }
        None => (PathBuf::new(), (0, 0)),
    }
}

fn report(sink: &mut Sink, severity: Severity, srcs: &[Src], e: &Entry, path: &[Seg], msg: String) {
    let (file, pos) = entry_pos(srcs, e, path);
    let service = e.named.then_some(e.spec.name.as_str());
    sink.add(severity, &file, pos, service, msg);
}

/// Duplicates, dependencies (missing, condition vs. target) and cycles.
pub(super) fn cross_checks(entries: &[Entry], srcs: &[Src], incomplete: bool, sink: &mut Sink) {
    let by_name = duplicates(entries, srcs, sink);
    let adj = dependencies(entries, srcs, &by_name, incomplete, sink);
    find_cycles(entries, srcs, &adj, sink);
    log_targets(entries, srcs, &by_name, incomplete, sink);
}

/// `log: {to: NAME}`: the logger exists, is not the service itself, and
/// no chain of loggers comes back to where it started (each service has
/// at most one logger, so the chains are walked one step at a time).
fn log_targets(
    entries: &[Entry],
    srcs: &[Src],
    by_name: &BTreeMap<&str, usize>,
    incomplete: bool,
    sink: &mut Sink,
) {
    let path = [K("log"), K("to")];
    let mut next: Vec<Option<usize>> = vec![None; entries.len()];
    for (i, e) in entries.iter().enumerate() {
        let Some(to) = e.spec.log.to.as_deref() else {
            continue;
        };
        let msg = match by_name.get(to).copied() {
            Some(t) if t == i => format!("log.to '{to}': a service cannot log to itself"),
            Some(t) => {
                if let Some(n) = next.get_mut(i) {
                    *n = Some(t);
                }
                continue;
            }
            None if incomplete => continue,
            None => format!("log.to '{to}': no such service"),
        };
        report(sink, Severity::Error, srcs, e, &path, msg);
    }
    for s in 0..entries.len() {
        let mut chain = vec![s];
        let mut at = s;
        while let Some(t) = next.get(at).copied().flatten() {
            // Each cycle once: at the service defined first in it.
            if t < s || chain.len() > entries.len() {
                break;
            }
            chain.push(t);
            if t == s {
                let name = |i: &usize| entries.get(*i).map_or("?", |e| e.spec.name.as_str());
                let names: Vec<&str> = chain.iter().map(name).collect();
                if let Some(e) = entries.get(s) {
                    let msg = format!("logger cycle: {}", names.join(" -> "));
                    report(sink, Severity::Error, srcs, e, &path, msg);
                }
                break;
            }
            at = t;
        }
    }
}

/// A name defined twice is an error at the second; the first of each name
/// is the one dependencies resolve to.
fn duplicates<'e>(entries: &'e [Entry], srcs: &[Src], sink: &mut Sink) -> BTreeMap<&'e str, usize> {
    let mut by_name: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        if !e.named {
            continue;
        }
        match by_name
            .get(e.spec.name.as_str())
            .and_then(|f| entries.get(*f))
        {
            Some(first) => {
                let (ffile, (fl, fc)) = entry_pos(srcs, first, &[K("name")]);
                report(
                    sink,
                    Severity::Error,
                    srcs,
                    e,
                    &[K("name")],
                    format!(
                        "duplicate service name '{}' (first defined at {}:{fl}:{fc})",
                        e.spec.name,
                        ffile.display()
                    ),
                );
            }
            None => {
                by_name.insert(e.spec.name.as_str(), i);
            }
        }
    }
    by_name
}

/// Resolves every dependency: one not defined is an error (unless the main
/// file did not parse), and its condition is checked against the target.
/// Returns the edges (target entry, index in depends_on) for the cycle
/// search.
fn dependencies(
    entries: &[Entry],
    srcs: &[Src],
    by_name: &BTreeMap<&str, usize>,
    incomplete: bool,
    sink: &mut Sink,
) -> Vec<Vec<(usize, usize)>> {
    let mut adj: Vec<Vec<(usize, usize)>> = vec![Vec::new(); entries.len()];
    for (i, e) in entries.iter().enumerate() {
        for (k, dep) in e.spec.depends_on.iter().enumerate() {
            let item = e.dep_items.get(k).copied().unwrap_or(k);
            let dpath = [K("depends_on"), I(item)];
            let Some(t) = by_name.get(dep.name.as_str()).copied() else {
                if !incomplete {
                    report(
                        sink,
                        Severity::Error,
                        srcs,
                        e,
                        &dpath,
                        format!("depends on '{}', which is not defined", dep.name),
                    );
                }
                continue;
            };
            if let Some(edges) = adj.get_mut(i) {
                edges.push((t, k));
            }
            let Some(target) = entries.get(t) else {
                continue;
            };
            if !target.tainted {
                check_condition(sink, srcs, e, item, dep, target);
            }
        }
    }
    adj
}

/// `completed` needs a oneshot; `healthy` without a readiness check means
/// started, which is worth a warning.
fn check_condition(
    sink: &mut Sink,
    srcs: &[Src],
    e: &Entry,
    item: usize,
    dep: &Dep,
    target: &Entry,
) {
    let cpath = [K("depends_on"), I(item), K("condition")];
    match dep.condition {
        Condition::Completed if target.spec.kind != Kind::Oneshot => report(
            sink,
            Severity::Error,
            srcs,
            e,
            &cpath,
            format!(
                "condition completed on '{}', which is not type: oneshot (it never completes)",
                dep.name
            ),
        ),
        Condition::Healthy
            if target.spec.healthcheck.readiness.is_none()
                && target.spec.healthcheck.startup.is_none() =>
        {
            report(
            sink,
            Severity::Warning,
            srcs,
            e,
            &cpath,
            format!(
                "condition healthy on '{}': dependency has no readiness check; `healthy` means started",
                dep.name
            ),
            )
        }
        _ => {}
    }
}

/// Iterative DFS (no recursion: fuzzed input may chain thousands of
/// services). Each cycle is reported once, rotated to start at the service
/// defined first, at its `depends_on` entry that closes the loop.
fn find_cycles(entries: &[Entry], srcs: &[Src], adj: &[Vec<(usize, usize)>], sink: &mut Sink) {
    const WHITE: u8 = 0;
    const GRAY: u8 = 1;
    const BLACK: u8 = 2;
    let mut color = vec![WHITE; entries.len()];
    let mut reported: BTreeSet<Vec<usize>> = BTreeSet::new();
    for s in 0..entries.len() {
        if color.get(s) != Some(&WHITE) {
            continue;
        }
        if let Some(c) = color.get_mut(s) {
            *c = GRAY;
        }
        let mut stack: Vec<(usize, usize)> = vec![(s, 0)];
        while let Some(&(u, ei)) = stack.last() {
            let next = adj.get(u).and_then(|a| a.get(ei)).map(|(v, _)| *v);
            let Some(v) = next else {
                if let Some(c) = color.get_mut(u) {
                    *c = BLACK;
                }
                stack.pop();
                continue;
            };
            if let Some(top) = stack.last_mut() {
                top.1 += 1;
            }
            match color.get(v).copied() {
                Some(WHITE) => {
                    if let Some(c) = color.get_mut(v) {
                        *c = GRAY;
                    }
                    stack.push((v, 0));
                }
                Some(GRAY) => {
                    let start = stack.iter().position(|(x, _)| *x == v).unwrap_or(0);
                    let cycle: Vec<usize> = stack
                        .get(start..)
                        .unwrap_or_default()
                        .iter()
                        .map(|(x, _)| *x)
                        .collect();
                    report_cycle(entries, srcs, adj, &cycle, &mut reported, sink);
                }
                _ => {}
            }
        }
    }
}

fn report_cycle(
    entries: &[Entry],
    srcs: &[Src],
    adj: &[Vec<(usize, usize)>],
    cycle: &[usize],
    reported: &mut BTreeSet<Vec<usize>>,
    sink: &mut Sink,
) {
    let Some(m) = cycle
        .iter()
        .enumerate()
        .min_by_key(|(_, x)| **x)
        .map(|(i, _)| i)
    else {
        return;
    };
    let (tail, head) = cycle.split_at(m);
    let rotated: Vec<usize> = head.iter().chain(tail).copied().collect();
    if !reported.insert(rotated.clone()) {
        return;
    }
    let name = |i: &usize| entries.get(*i).map_or("?", |e| e.spec.name.as_str());
    let mut path: Vec<&str> = rotated.iter().map(name).collect();
    if let Some(first) = rotated.first() {
        path.push(name(first));
    }
    let (Some(&a), Some(&b)) = (rotated.first(), rotated.get(1).or(rotated.first())) else {
        return;
    };
    let Some(e) = entries.get(a) else { return };
    let k = adj
        .get(a)
        .and_then(|edges| edges.iter().find(|(v, _)| *v == b))
        .map_or(0, |(_, k)| *k);
    let item = e.dep_items.get(k).copied().unwrap_or(k);
    report(
        sink,
        Severity::Error,
        srcs,
        e,
        &[K("depends_on"), I(item)],
        format!("dependency cycle: {}", path.join(" -> ")),
    );
}
