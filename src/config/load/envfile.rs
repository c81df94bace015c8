//! `env_file:` files: `KEY=VALUE` lines as compose's `env_file` and
//! systemd's `EnvironmentFile=` read them. Blank lines and lines starting
//! with `#` or `;` are skipped; `export ` before a key is allowed; a
//! value may be in single quotes (taken as written) or double quotes
//! (`\"`, `\\`, `\$`, `\n` escapes); an unquoted value is trimmed and ends
//! at ` #`. Read at config-compile time; errors name the file's line.

/// One entry: the key, the value, whether `${}` expansion applies (not to
/// single-quoted values, as in compose), and its 1-based line.
pub(super) struct Line {
    pub key: String,
    pub value: String,
    pub expand: bool,
    pub line: usize,
}

/// The entries of `text`, or the first bad line: (line, message).
pub(super) fn parse(text: &str) -> Result<Vec<Line>, (usize, String)> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let l = raw.trim_start();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        let l = l.strip_prefix("export ").map_or(l, str::trim_start);
        let Some((key, value)) = l.split_once('=') else {
            return Err((line, format!("'{}' is not KEY=VALUE", raw.trim())));
        };
        let key = key.trim_end();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err((line, format!("'{}' has no usable key", raw.trim())));
        }
        let (value, expand) = value_of(value.trim_start()).map_err(|e| (line, e))?;
        out.push(Line {
            key: key.to_owned(),
            value,
            expand,
            line,
        });
    }
    Ok(out)
}

/// A value as written after `=`: quoted or plain; and whether to expand.
fn value_of(v: &str) -> Result<(String, bool), String> {
    if let Some(q) = v.strip_prefix('\'') {
        let (inner, tail) = q
            .split_once('\'')
            .ok_or_else(|| "a single quote is not closed on its line".to_owned())?;
        return trailing(tail).map(|()| (inner.to_owned(), false));
    }
    if let Some(q) = v.strip_prefix('"') {
        return double(q).map(|s| (s, true));
    }
    let end = v.find(" #").or_else(|| v.find("\t#")).unwrap_or(v.len());
    Ok((v.get(..end).unwrap_or(v).trim_end().to_owned(), true))
}

/// The inside of a double-quoted value (`q`: after the opening quote).
fn double(q: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = q.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return trailing(q.get(i + 1..).unwrap_or("")).map(|()| out),
            '\\' => match chars.next().map(|(_, e)| e) {
                Some('n') => out.push('\n'),
                // `\$` stays `$$` so the expansion keeps it a literal `$`.
                Some('$') => out.push_str("$$"),
                Some(e @ ('"' | '\\')) => out.push(e),
                Some(e) => {
                    out.push('\\');
                    out.push(e);
                }
                None => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    Err("a double quote is not closed on its line".to_owned())
}

/// After a closing quote: only blanks or a `#` comment.
fn trailing(tail: &str) -> Result<(), String> {
    let t = tail.trim_start();
    if t.is_empty() || t.starts_with('#') {
        Ok(())
    } else {
        Err(format!("unexpected '{t}' after the closing quote"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::parse;

    #[test]
    fn comments_quotes_export_and_errors() {
        let text = "# c\n\n; c\nA=1\nexport B = two words  # note\nC='x $Y \"q\"'\nD=\"a\\\"b\\\\c\\$d ${E}\"\nE=\nF=a#b\n";
        let got: Vec<(String, String, bool, usize)> = parse(text)
            .unwrap()
            .into_iter()
            .map(|l| (l.key, l.value, l.expand, l.line))
            .collect();
        let want = [
            ("A", "1", true, 4),
            ("B", "two words", true, 5),
            ("C", "x $Y \"q\"", false, 6),
            ("D", "a\"b\\c$$d ${E}", true, 7),
            ("E", "", true, 8),
            ("F", "a#b", true, 9),
        ];
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!((g.0.as_str(), g.1.as_str(), g.2, g.3), w);
        }
        assert_eq!(parse("A=1\nnope\n").err().unwrap().0, 2);
        assert_eq!(parse("A='x\n").err().unwrap().0, 1);
        assert_eq!(parse("A=\"x\" y\n").err().unwrap().0, 1);
        assert_eq!(parse("=1\n").err().unwrap().0, 1);
    }
}
