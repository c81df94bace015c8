//! Guards run on a file's text before the YAML parser sees it, against
//! inputs that cost the parser far more than their size.
//!
//! Deep flow nesting (`[[[[...` or `{a: {a: ...`) is the one found so far:
//! the parser's recursion limit refuses it at depth 128, but its scanner
//! first reads the whole line ahead, checking every open flow level at
//! every token, so 100,000 levels on one line took 80 s to refuse (the
//! torture suite's hostile configs, docs/RELIABILITY.md). Counting the
//! levels first refuses it in linear time. No config the parser accepts is
//! refused: its limit is the same 128.

/// The parser's recursion limit (serde_norway): deeper never parses.
pub(super) const MAX_FLOW_DEPTH: usize = 128;

/// The 1-based line and column of the first flow opener deeper than
/// [`MAX_FLOW_DEPTH`], if any. Brackets inside quotes and comments do not
/// count; unbalanced ones in plain text count up, which can only refuse
/// text that has more than 128 unclosed openers.
pub(super) fn too_deep(text: &str) -> Option<(usize, usize)> {
    let (mut depth, mut line, mut col) = (0usize, 1usize, 0usize);
    let mut quote: Option<char> = None;
    let (mut escaped, mut comment, mut prev) = (false, false, '\n');
    for c in text.chars() {
        col += 1;
        if c == '\n' {
            (line, col, comment) = (line + 1, 0, false);
            // A quoted scalar may span lines; a comment may not.
            prev = c;
            continue;
        }
        match quote {
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if comment => {}
            None => match c {
                '#' if prev.is_whitespace() => comment = true,
                '\'' | '"' => quote = Some(c),
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_FLOW_DEPTH {
                        return Some((line, col));
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        prev = c;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_flow_nesting_is_refused_at_the_first_level_too_deep() {
        let deep = format!("a: {}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(too_deep(&deep), Some((1, 3 + MAX_FLOW_DEPTH + 1)));
        let maps = format!("x: 1\nb: {}{}", "{a: ".repeat(200), "}".repeat(200));
        assert!(too_deep(&maps).is_some_and(|(l, _)| l == 2));
    }

    #[test]
    fn ordinary_and_quoted_brackets_pass() {
        assert_eq!(too_deep("args: [a, [b, {c: d}]]\n"), None);
        let quoted = format!(
            "args: ['{}', \"{}\"] # {}\n",
            "[".repeat(300),
            "{".repeat(300),
            "[".repeat(300)
        );
        assert_eq!(too_deep(&quoted), None);
        let ok = format!(
            "a: {}{}",
            "[".repeat(MAX_FLOW_DEPTH),
            "]".repeat(MAX_FLOW_DEPTH)
        );
        assert_eq!(too_deep(&ok), None);
    }
}
