//! Source positions and error recovery for block-style YAML.
//!
//! serde gives no spans and stops at the first error. This file owns the two
//! workarounds:
//! - an *outline*: every `- ` item and `key:` of the text with its line and
//!   column, enough to answer "where is `services[2].backoff.max`?" for
//!   ordinary block YAML. Anything it does not understand (flow style,
//!   complex keys) falls back to the nearest enclosing entry it found;
//! - *recovery*: after a typed error, blank the innermost entry holding the
//!   error position (overwrite it with spaces so every other position stays
//!   exact) and parse again, up to [`MAX_ERRORS`] times.
//!
//! It must never panic: every access is `.get()`, and blanking only writes
//! spaces over existing characters.

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;

/// Cap on typed errors reported per file (and parse attempts).
pub(super) const MAX_ERRORS: usize = 50;

/// One step of a path into the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seg {
    K(&'static str),
    I(usize),
}

/// A `- ` item (key None) or a `key:` at a 1-based line and column.
#[derive(Debug, Clone)]
struct Tok {
    line: usize,
    col: usize,
    key: Option<String>,
    /// Column of the value on the same line, if any.
    value_col: Option<usize>,
}

/// Tokens `lo..hi` are the content of a node reported at `line:col`.
#[derive(Debug, Clone, Copy)]
struct Node {
    lo: usize,
    hi: usize,
    line: usize,
    col: usize,
}

#[derive(Debug, Default)]
pub(super) struct Outline {
    toks: Vec<Tok>,
}

/// libyaml counts `\r\n`, `\r`, NEL, LS and PS as line breaks; make them all
/// `\n` so our line numbers agree with serde's.
pub(super) fn normalize(text: &str) -> String {
    text.replace("\r\n", "\n")
        .replace(['\r', '\u{85}', '\u{2028}', '\u{2029}'], "\n")
}

fn indent_of(line: &[char]) -> usize {
    line.iter().take_while(|c| **c == ' ').count()
}

fn is_blank(line: &[char]) -> bool {
    matches!(line.get(indent_of(line)), None | Some('#'))
}

/// Parse a block-mapping key starting at `i`; returns (key, index after ':').
fn scan_key(chars: &[char], i: usize) -> Option<(String, usize)> {
    let first = *chars.get(i)?;
    let ends_key = |j: usize| matches!(chars.get(j), None | Some(' ') | Some('\t'));
    if first == '"' || first == '\'' {
        let mut j = i + 1;
        loop {
            let c = *chars.get(j)?;
            if first == '"' && c == '\\' {
                j += 2;
                continue;
            }
            if c == first {
                if first == '\'' && chars.get(j + 1) == Some(&'\'') {
                    j += 2;
                    continue;
                }
                break;
            }
            j += 1;
        }
        let mut key: String = chars.get(i + 1..j)?.iter().collect();
        if first == '\'' {
            key = key.replace("''", "'");
        }
        if chars.get(j + 1) == Some(&':') && ends_key(j + 2) {
            return Some((key, j + 2));
        }
        return None;
    }
    if "[]{},#&*!|>%@`?".contains(first) || first == ' ' {
        return None;
    }
    let mut j = i;
    loop {
        let c = *chars.get(j)?;
        if c == '#' && j > i && chars.get(j - 1) == Some(&' ') {
            return None;
        }
        if c == ':' && ends_key(j + 1) {
            let key: String = chars.get(i..j)?.iter().collect();
            return Some((key.trim_end().to_owned(), j + 1));
        }
        j += 1;
    }
}

fn value_col_at(chars: &[char], mut j: usize) -> Option<usize> {
    while matches!(chars.get(j), Some(' ') | Some('\t')) {
        j += 1;
    }
    match chars.get(j) {
        None | Some('#') => None,
        Some(_) => Some(j + 1),
    }
}

fn tokenize_line(line_no: usize, chars: &[char], out: &mut Vec<Tok>) {
    let mut i = indent_of(chars);
    while chars.get(i) == Some(&'-') && matches!(chars.get(i + 1), None | Some(' ')) {
        let dash = i;
        i += 1;
        while chars.get(i) == Some(&' ') {
            i += 1;
        }
        out.push(Tok {
            line: line_no,
            col: dash + 1,
            key: None,
            value_col: value_col_at(chars, i),
        });
    }
    if let Some((key, after)) = scan_key(chars, i) {
        out.push(Tok {
            line: line_no,
            col: i + 1,
            key: Some(key),
            value_col: value_col_at(chars, after),
        });
    }
}

impl Outline {
    pub(super) fn new(text: &str) -> Outline {
        let mut toks = Vec::new();
        for (n, line) in text.split('\n').enumerate() {
            let chars: Vec<char> = line.chars().collect();
            tokenize_line(n + 1, &chars, &mut toks);
        }
        Outline { toks }
    }

    fn root(&self) -> Node {
        Node {
            lo: 0,
            hi: self.toks.len(),
            line: 1,
            col: 1,
        }
    }

    fn tok(&self, i: usize) -> Option<&Tok> {
        self.toks.get(i)
    }

    fn key(&self, n: Node, k: &str) -> Option<Node> {
        let first = self.tok(n.lo).filter(|_| n.lo < n.hi)?;
        first.key.as_ref()?;
        let cm = first.col;
        for j in n.lo..n.hi {
            let t = self.tok(j)?;
            if t.col < cm {
                break;
            }
            if t.col == cm && t.key.as_deref() == Some(k) {
                let mut m = j + 1;
                while m < n.hi {
                    let u = self.tok(m)?;
                    if u.col < cm || (u.col == cm && u.key.is_some()) {
                        break;
                    }
                    m += 1;
                }
                return Some(Node {
                    lo: j + 1,
                    hi: m,
                    line: t.line,
                    col: t.value_col.unwrap_or(t.col),
                });
            }
        }
        None
    }

    /// Item `i` of a sequence, or the `i`th key of a mapping (an `env:`
    /// mapping's entries are reported by index).
    fn index(&self, n: Node, i: usize) -> Option<Node> {
        let first = self.tok(n.lo).filter(|_| n.lo < n.hi)?;
        let map = first.key.is_some();
        let cm = first.col;
        let mut count = 0;
        for j in n.lo..n.hi {
            let t = self.tok(j)?;
            if t.col < cm || (t.col == cm && t.key.is_some() != map) {
                break;
            }
            if t.col == cm {
                if count == i {
                    let mut m = j + 1;
                    while m < n.hi && self.tok(m)?.col > cm {
                        m += 1;
                    }
                    return Some(Node {
                        lo: j + 1,
                        hi: m,
                        line: t.line,
                        col: t.value_col.unwrap_or(t.col),
                    });
                }
                count += 1;
            }
        }
        None
    }

    fn walk(&self, path: &[Seg]) -> (Node, bool) {
        let mut node = self.root();
        for seg in path {
            let next = match *seg {
                Seg::K(k) => self.key(node, k),
                Seg::I(i) => self.index(node, i),
            };
            match next {
                Some(n) => node = n,
                None => return (node, false),
            }
        }
        (node, true)
    }

    /// Best position for `path`: the value if on the key's line, else the
    /// key or item; the nearest found ancestor when the path is not found.
    pub(super) fn locate(&self, path: &[Seg]) -> (usize, usize) {
        let (n, _) = self.walk(path);
        (n.line, n.col)
    }

    /// Whether `path` exists in the outline (as a key or item).
    pub(super) fn has(&self, path: &[Seg]) -> bool {
        self.walk(path).1
    }

    /// Start lines of the items of the sequence at `path`, and the line where
    /// the sequence ends (exclusive; usize::MAX for end of file).
    pub(super) fn items(&self, path: &[Seg]) -> (Vec<usize>, usize) {
        let (node, found) = self.walk(path);
        if !found {
            return (Vec::new(), 0);
        }
        let mut starts = Vec::new();
        let mut i = 0;
        while let Some(item) = self.index(node, i) {
            starts.push(item.line);
            i += 1;
        }
        let end = self.tok(node.hi).map_or(usize::MAX, |t| t.line);
        (starts, end)
    }
}

/// Strip serde's " at line L column C" for the position we print anyway.
pub(super) fn clean_message(msg: &str, line: usize, col: usize) -> String {
    msg.replace(&format!(" at line {line} column {col}"), "")
}

/// The closest entry above `row_idx` (0-based) that starts left of `col`,
/// or at `col` when `same_col` (a sequence may sit at its key's indent).
fn entry_above(lines: &[Vec<char>], row_idx: usize, col: usize, same_col: bool) -> Option<Tok> {
    for r in (0..row_idx).rev() {
        let prev = lines.get(r)?;
        let mut toks = Vec::new();
        tokenize_line(r + 1, prev, &mut toks);
        let found = toks
            .into_iter()
            .rfind(|t| t.col < col || (same_col && t.col == col && t.key.is_some()));
        if found.is_some() {
            return found;
        }
    }
    None
}

/// The entry to blank for an error at `line:col`: the innermost entry
/// holding it, or, for a wrong-shape `container` error reported at the
/// first entry of a block map or sequence, the entry holding that whole
/// container (blanking only its first entry would report the rest again).
/// `Err(())`: a container error with no parent (the document itself).
fn target_at(
    lines: &[Vec<char>],
    line: usize,
    col: usize,
    container: bool,
) -> Result<Option<(Tok, bool)>, ()> {
    let row_idx = line.saturating_sub(1).min(lines.len().saturating_sub(1));
    let Some(row) = lines.get(row_idx) else {
        return Ok(None);
    };
    let mut toks = Vec::new();
    tokenize_line(row_idx + 1, row, &mut toks);
    if container {
        if let Some(first) = toks.iter().find(|t| t.line == line && t.col == col) {
            let before = toks.iter().rfind(|t| t.col < col).cloned();
            return match before.or_else(|| entry_above(lines, row_idx, col, first.key.is_none())) {
                Some(parent) => Ok(Some((parent, true))),
                None => Err(()),
            };
        }
    }
    match toks.into_iter().rfind(|t| t.col <= col) {
        Some(t) => Ok(Some((t, false))),
        // A continuation line: the closest less-indented entry above.
        None => Ok(entry_above(lines, row_idx, indent_of(row) + 1, false).map(|t| (t, false))),
    }
}

/// Overwrite the innermost entry holding `line:col` with spaces (see
/// [`target_at`]). Returns the blanked line numbers (1-based; empty when
/// nothing could be blanked) and, when a container error moved to the
/// entry holding the container, that entry's position.
fn blank_at(
    lines: &mut [Vec<char>],
    line: usize,
    col: usize,
    container: bool,
) -> (Vec<usize>, Option<(usize, usize)>) {
    let (t, moved) = match target_at(lines, line, col, container) {
        Ok(Some(t)) => t,
        Ok(None) => return (Vec::new(), None),
        Err(()) => {
            // The whole document has the wrong shape: one error is enough.
            let mut blanked = Vec::new();
            for (r, row) in lines.iter_mut().enumerate() {
                if !is_blank(row) {
                    blanked.push(r + 1);
                }
                row.iter_mut().for_each(|c| *c = ' ');
            }
            return (blanked, None);
        }
    };
    let at = moved.then_some((t.line, t.col));
    let mut blanked = Vec::new();
    let base = t.col.saturating_sub(1);
    let start = if t.key.is_some() { base } else { base + 1 };
    let seq_under_key = t.key.is_some() && t.value_col.is_none();
    if let Some(row) = lines.get_mut(t.line.saturating_sub(1)) {
        let mut changed = false;
        for c in row.iter_mut().skip(start) {
            if *c != ' ' {
                *c = ' ';
                changed = true;
            }
        }
        if changed {
            blanked.push(t.line);
        }
    }
    let mut r = t.line;
    while let Some(row) = lines.get_mut(r) {
        if is_blank(row) {
            r += 1;
            continue;
        }
        let ind = indent_of(row);
        let same_col_dash = seq_under_key
            && ind == base
            && row.get(ind) == Some(&'-')
            && matches!(row.get(ind + 1), None | Some(' '));
        if ind > base || same_col_dash {
            row.iter_mut().for_each(|c| *c = ' ');
            blanked.push(r + 1);
            r += 1;
        } else {
            break;
        }
    }
    (blanked, at)
}

/// Whether a serde message says a whole map or sequence has the wrong
/// shape (serde reports it at the container's first entry).
fn is_container_error(msg: &str) -> bool {
    msg.contains("invalid type: map") || msg.contains("invalid type: sequence")
}

/// A typed error found while parsing: position and message.
#[derive(Debug, Clone)]
pub(super) struct TypedError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Deserialize `text` (already normalized and known to be valid YAML) as
/// `T`, collecting up to [`MAX_ERRORS`] typed errors by blanking each broken
/// entry and retrying. Returns the value (None if recovery gave up), the
/// errors and the set of blanked line numbers.
pub(super) fn parse_recovering<T: DeserializeOwned>(
    text: &str,
) -> (Option<T>, Vec<TypedError>, BTreeSet<usize>) {
    let mut errors = Vec::new();
    let mut tainted = BTreeSet::new();
    let mut lines: Vec<Vec<char>> = text.split('\n').map(|l| l.chars().collect()).collect();
    let mut seen = BTreeSet::new();
    let mut current = text.to_owned();
    for attempt in 0..=MAX_ERRORS {
        let err = match serde_norway::from_str::<T>(&current) {
            Ok(v) => return (Some(v), errors, tainted),
            Err(e) => e,
        };
        if attempt > 0 && serde_norway::from_str::<serde_norway::Value>(&current).is_err() {
            // Blanking broke the structure: stop; what we reported is real.
            break;
        }
        if attempt == MAX_ERRORS {
            break;
        }
        let (line, col) = err.location().map_or((0, 0), |l| (l.line(), l.column()));
        let message = clean_message(&err.to_string(), line, col);
        if line == 0 {
            errors.push(TypedError { line, col, message });
            break;
        }
        if !seen.insert((line, col)) {
            // Blanking did not get past it: it is reported already.
            break;
        }
        let container = is_container_error(&message);
        let (blanked, target) = blank_at(&mut lines, line, col, container);
        // A container error is reported where the container's key is.
        let (eline, ecol) = target.unwrap_or((line, col));
        errors.push(TypedError {
            line: eline,
            col: ecol,
            message,
        });
        if blanked.is_empty() {
            break;
        }
        tainted.insert(line);
        tainted.extend(blanked);
        current = lines
            .iter()
            .map(|l| l.iter().collect::<String>())
            .collect::<Vec<_>>()
            .join("\n");
    }
    (None, errors, tainted)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
coffey:
  socket: /run/x.sock
  limits:
    services: 3
services:
  - name: api
    binary: /bin/sh
    env:
      - A=1
      - B
  - name: web
    depends_on:
      - api
      - name: db
        condition: healthy
";

    #[test]
    fn locates_paths() {
        let o = Outline::new(DOC);
        assert_eq!(o.locate(&[Seg::K("coffey"), Seg::K("socket")]), (2, 11));
        assert_eq!(
            o.locate(&[Seg::K("coffey"), Seg::K("limits"), Seg::K("services")]),
            (4, 15)
        );
        assert_eq!(o.locate(&[Seg::K("services"), Seg::I(0)]), (6, 5));
        assert_eq!(
            o.locate(&[Seg::K("services"), Seg::I(0), Seg::K("env"), Seg::I(1)]),
            (10, 9)
        );
        assert_eq!(
            o.locate(&[Seg::K("services"), Seg::I(1), Seg::K("name")]),
            (11, 11)
        );
        let dep = [
            Seg::K("services"),
            Seg::I(1),
            Seg::K("depends_on"),
            Seg::I(1),
        ];
        assert_eq!(o.locate(&dep), (14, 9));
        let cond = [dep[0], dep[1], dep[2], dep[3], Seg::K("condition")];
        assert_eq!(o.locate(&cond), (15, 20));
        // Missing: nearest ancestor.
        assert_eq!(
            o.locate(&[Seg::K("services"), Seg::I(1), Seg::K("backoff")]),
            (11, 5)
        );
        assert!(!o.has(&[Seg::K("services"), Seg::I(2)]));
        assert_eq!(o.items(&[Seg::K("services")]), (vec![6, 11], usize::MAX));
    }

    #[test]
    fn sequence_at_key_indent() {
        let o = Outline::new("services:\n- name: a\n- name: b\n  binary: x\nother: 1\n");
        assert_eq!(
            o.locate(&[Seg::K("services"), Seg::I(1), Seg::K("binary")]),
            (4, 11)
        );
        assert_eq!(o.items(&[Seg::K("services")]), (vec![2, 3], 5));
    }

    #[test]
    fn quoted_keys_and_comments() {
        let o = Outline::new("# c\n\"a b\": 1 # x\n'c''d': 2\ne: 'x: y' # z\n");
        assert_eq!(o.locate(&[Seg::K("a b")]), (2, 8));
        assert_eq!(o.locate(&[Seg::K("c'd")]), (3, 9));
        assert_eq!(o.locate(&[Seg::K("e")]), (4, 4));
    }

    #[test]
    fn blanking_keeps_positions() {
        let mut lines: Vec<Vec<char>> = "a:\n  b: 1\n  c:\n    - x\n  d: 2\n"
            .split('\n')
            .map(|l| l.chars().collect())
            .collect();
        assert_eq!(blank_at(&mut lines, 3, 3, false).0, vec![3, 4]);
        let text: Vec<String> = lines.iter().map(|l| l.iter().collect()).collect();
        assert_eq!(text, vec!["a:", "  b: 1", "    ", "       ", "  d: 2", ""]);
    }

    #[test]
    fn never_panics_on_odd_input() {
        for text in [
            "",
            "-",
            "- - -",
            ":",
            "\"",
            "'a",
            "a: \"b",
            "- a:\n-\n  - :",
            "\u{85}x: 1",
        ] {
            let o = Outline::new(text);
            let _ = o.locate(&[Seg::K("a"), Seg::I(3), Seg::K("b")]);
            let _ = o.items(&[Seg::K("services")]);
            let mut lines: Vec<Vec<char>> = text.split('\n').map(|l| l.chars().collect()).collect();
            for l in 0..4 {
                for c in 0..4 {
                    let _ = blank_at(&mut lines, l, c, false);
                    let _ = blank_at(&mut lines, l, c, true);
                }
            }
        }
    }
}
