//! The modules form layers: no module reaches, through its paths, back
//! to one that reaches it (issue 10: "break the control↔reload and
//! service↔sys circles"). Read from the sources, so a new circle fails
//! here and names its modules. Tests inside a module (`#[cfg(test)]` to
//! the end of the file) and comments do not count. The core crate
//! (`src/*.rs`, `crate::` paths) and the daemon's modules (`src/daemon/*`,
//! `super::` and `crate::daemon::` paths) have none. (A module may call
//! up through an interface it owns, as reload's `Followers` and
//! `machine::Readers`, which the control socket implements.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_macros,
    clippy::disallowed_methods
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn src(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(sub)
}

/// The modules `src/lib.rs` declares.
fn core_modules() -> Vec<String> {
    let lib = std::fs::read_to_string(src("lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect()
}

/// The modules of `src/daemon/`: its files and directories.
fn daemon_modules() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(src("daemon"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "mod.rs")
        .map(|n| n.trim_end_matches(".rs").to_string())
        .collect();
    v.sort();
    v
}

/// A module's files, each as (code without comments and tests, whether
/// it is a submodule's file `dir/module/x.rs`, where `super::` is the
/// module itself).
fn code_of(dir: &Path, module: &str) -> Vec<(String, bool)> {
    let file = dir.join(format!("{module}.rs"));
    let mut texts = Vec::new();
    if file.exists() {
        texts.push((std::fs::read_to_string(file).unwrap(), false));
    } else {
        for e in std::fs::read_dir(dir.join(module)).unwrap() {
            let p = e.unwrap().path();
            let inner = p.file_name().unwrap() != "mod.rs";
            texts.push((std::fs::read_to_string(p).unwrap(), inner));
        }
    }
    texts
        .into_iter()
        .map(|(t, inner)| (without_tests_and_comments(&t), inner))
        .collect()
}

fn without_tests_and_comments(text: &str) -> String {
    let mut code = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        code.push_str(line.split("//").next().unwrap());
        code.push('\n');
    }
    code
}

/// The modules named by `PREFIX NAME` or `PREFIX {NAME, ...}` in `code`.
fn uses(code: &str, prefixes: &[&str], modules: &[String]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for prefix in prefixes {
        for (at, _) in code.match_indices(prefix) {
            let rest = &code[at + prefix.len()..];
            let names: Vec<&str> = match rest.strip_prefix('{') {
                Some(list) => list[..list.find('}').unwrap_or(list.len())]
                    .split(',')
                    .map(|n| n.trim().split("::").next().unwrap())
                    .collect(),
                None => vec![rest
                    .split(|c: char| !c.is_alphanumeric() && c != '_')
                    .next()
                    .unwrap()],
            };
            out.extend(
                names
                    .into_iter()
                    .filter(|n| modules.iter().any(|m| m == n))
                    .map(String::from),
            );
        }
    }
    out
}

fn graph(dir: &Path, modules: &[String], outer: &[&str], inner: &[&str]) -> Graph {
    modules
        .iter()
        .map(|m| {
            let mut to = BTreeSet::new();
            for (code, is_inner) in code_of(dir, m) {
                to.extend(uses(&code, if is_inner { inner } else { outer }, modules));
            }
            to.remove(m);
            (m.clone(), to)
        })
        .collect()
}

fn core_graph() -> Graph {
    graph(&src(""), &core_modules(), &["crate::"], &["crate::"])
}

fn daemon_graph() -> Graph {
    let (outer, inner) = (
        ["super::", "crate::daemon::"],
        ["super::super::", "crate::daemon::"],
    );
    graph(&src("daemon"), &daemon_modules(), &outer, &inner)
}

/// A circle through `at`, if the depth-first walk from it finds one.
fn circle(
    g: &Graph,
    at: &str,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(i) = path.iter().position(|p| p == at) {
        let mut c = path[i..].to_vec();
        c.push(at.to_string());
        return Some(c);
    }
    if !done.insert(at.to_string()) {
        return None;
    }
    path.push(at.to_string());
    for next in &g[at] {
        if let Some(c) = circle(g, next, path, done) {
            return Some(c);
        }
    }
    path.pop();
    None
}

/// Every module on some circle of `g`: one that reaches itself.
fn on_circles(g: &Graph) -> BTreeSet<String> {
    g.keys()
        .filter(|m| g[*m].iter().any(|n| reaches(g, n, m)))
        .cloned()
        .collect()
}

/// Whether `to` is reachable from `from`.
fn reaches(g: &Graph, from: &str, to: &str) -> bool {
    let (mut seen, mut todo) = (BTreeSet::new(), vec![from.to_string()]);
    while let Some(m) = todo.pop() {
        if m == to {
            return true;
        }
        if seen.insert(m.clone()) {
            todo.extend(g[&m].iter().cloned());
        }
    }
    false
}

#[test]
fn the_core_modules_have_no_circles() {
    let g = core_graph();
    assert!(g.len() > 5, "read the modules of src/lib.rs: {g:?}");
    // The reader finds real edges (so a silent parse cannot pass).
    assert!(g["supervisor"].contains("service"), "{g:?}");
    let mut done = BTreeSet::new();
    for m in g.keys() {
        if let Some(c) = circle(&g, m, &mut Vec::new(), &mut done) {
            panic!("modules in a circle: {}", c.join(" -> "));
        }
    }
}

#[test]
fn the_daemon_modules_have_no_circles() {
    let g = daemon_graph();
    assert!(g["reload"].contains("compiled"), "{g:?}");
    assert!(
        g["control"].contains("reload"),
        "inner files are read: {g:?}"
    );
    let on = on_circles(&g);
    assert!(on.is_empty(), "modules on circles: {on:?} in {g:#?}");
}

#[test]
fn the_reader_finds_a_circle_when_there_is_one() {
    let mut g = core_graph();
    g.get_mut("time").unwrap().insert("supervisor".into());
    let found = circle(&g, "supervisor", &mut Vec::new(), &mut BTreeSet::new());
    assert!(found.is_some(), "supervisor -> time -> supervisor missed");
    let mut d = daemon_graph();
    d.get_mut("clock").unwrap().insert("log".into());
    assert!(
        on_circles(&d).contains("clock"),
        "log -> clock -> log missed"
    );
}
