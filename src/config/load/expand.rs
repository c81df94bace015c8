//! `${VAR}` expansion as compose does it, at config-compile time (the
//! daemon never expands anything): `${VAR}`, `${VAR:-default}` (unset or
//! empty), `${VAR-default}` (unset only), and `$$` for a literal `$`. A
//! `$` before anything else (`$HOME`, `$1`) is kept as written, so a
//! `sh -c` script keeps its own variables.

/// Expands `s`, looking each name up in `lookup`. Err: the message (an
/// unset variable without a default, or a malformed `${`).
pub(super) fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        let (before, from) = rest.split_at(at);
        out.push_str(before);
        let after = from.get(1..).unwrap_or("");
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = closing(body).ok_or_else(|| {
                format!("`${{` without its `}}` in '{s}' (write `$$` for a literal `$`)")
            })?;
            out.push_str(&one(body.get(..end).unwrap_or(""), lookup)?);
            rest = body.get(end + 1..).unwrap_or("");
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Where the `}` closing a `${` is in `body` (the text after `${`),
/// counting nested `${` in a default.
fn closing(body: &str) -> Option<usize> {
    let mut depth = 0usize;
    let b = body.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'{' if i > 0 && b.get(i - 1) == Some(&b'$') => depth += 1,
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// One `NAME`, `NAME:-default` or `NAME-default` (the inside of `${}`).
fn one(inner: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let name_len = inner
        .char_indices()
        .find(|&(i, c)| !(c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(inner.len(), |(i, _)| i);
    let (name, op) = inner.split_at(name_len);
    if name.is_empty() {
        return Err(format!(
            "`${{{inner}}}` is not a variable (write `$${{` for a literal `${{`)"
        ));
    }
    let value = lookup(name);
    let default = |d: &str| expand(d, lookup);
    if op.is_empty() {
        return value.ok_or_else(|| {
            format!("variable '{name}' is not set (give a default: `${{{name}:-default}}`)")
        });
    }
    if let Some(d) = op.strip_prefix(":-") {
        return match value.filter(|v| !v.is_empty()) {
            Some(v) => Ok(v),
            None => default(d),
        };
    }
    if let Some(d) = op.strip_prefix('-') {
        return value.map_or_else(|| default(d), Ok);
    }
    Err(format!(
        "`${{{inner}}}`: only `${{NAME}}`, `${{NAME:-default}}` and `${{NAME-default}}` are expanded (write `$${{` for a literal `${{`)"
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::expand;

    fn vars(name: &str) -> Option<String> {
        match name {
            "A" => Some("1".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn names_defaults_and_dollars() {
        let e = |s: &str| expand(s, &vars);
        assert_eq!(e("x${A}y").unwrap(), "x1y");
        assert_eq!(
            e("${NO:-d}|${EMPTY:-d}|${EMPTY-d}|${NO-d}").unwrap(),
            "d|d||d"
        );
        assert_eq!(e("${NO:-${A}}").unwrap(), "1");
        assert_eq!(e("$$ $$$$ $HOME $1 ${A}$").unwrap(), "$ $$ $HOME $1 1$");
        assert_eq!(e("$${A}").unwrap(), "${A}");
        assert!(e("${NO}").unwrap_err().contains("variable 'NO' is not set"));
        assert!(e("${A").unwrap_err().contains("without its `}`"));
        assert!(e("${0%/*}").unwrap_err().contains("is not a variable"));
        assert!(e("${A:?x}").unwrap_err().contains("only `${NAME}`"));
    }
}
