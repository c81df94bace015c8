//! The core crate's modules form layers: no module reaches, through
//! `crate::` paths, back to one that reaches it (issue 10: "break the
//! service↔sys circle"). Read from the sources, so a new circle fails
//! here and names its modules. Tests inside a module (`#[cfg(test)]`
//! to the end of the file) and comments do not count.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_macros,
    clippy::disallowed_methods
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// The modules `src/lib.rs` declares.
fn core_modules() -> Vec<String> {
    let lib = std::fs::read_to_string(Path::new(SRC).join("lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect()
}

/// A module's code without comments and without its tests.
fn code_of(module: &str) -> String {
    let file = Path::new(SRC).join(format!("{module}.rs"));
    let mut texts = Vec::new();
    if file.exists() {
        texts.push(std::fs::read_to_string(file).unwrap());
    } else {
        for e in std::fs::read_dir(Path::new(SRC).join(module)).unwrap() {
            texts.push(std::fs::read_to_string(e.unwrap().path()).unwrap());
        }
    }
    let mut code = String::new();
    for t in texts {
        for line in t.lines() {
            if line.trim_start().starts_with("#[cfg(test)]") {
                break;
            }
            code.push_str(line.split("//").next().unwrap());
            code.push('\n');
        }
    }
    code
}

/// The modules named by `crate::NAME` or `crate::{NAME, ...}` in `code`.
fn uses(code: &str, modules: &[String]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
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
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let modules = core_modules();
    modules
        .iter()
        .map(|m| {
            let mut to = uses(&code_of(m), &modules);
            to.remove(m);
            (m.clone(), to)
        })
        .collect()
}

/// A circle through `at`, if the depth-first walk from it finds one.
fn circle(
    g: &BTreeMap<String, BTreeSet<String>>,
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

#[test]
fn the_core_modules_have_no_circles() {
    let g = graph();
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
fn the_reader_finds_a_circle_when_there_is_one() {
    let mut g = graph();
    g.get_mut("time").unwrap().insert("supervisor".into());
    let found = circle(&g, "supervisor", &mut Vec::new(), &mut BTreeSet::new());
    assert!(found.is_some(), "supervisor -> time -> supervisor missed");
}
