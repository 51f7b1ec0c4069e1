//! `${VAR}` substitution on the scalar values of a parsed tree.
//!
//! Forms: `${VAR}` (an error when unset), `${VAR:-default}` (default when unset or empty),
//! `${VAR:?message}` (an error with `message` when unset or empty), and `$$` for a literal `$`.
//! A `$` followed by anything else is kept as written. Keys are never substituted.
//!
//! Substitution happens after parsing, on each string value separately, so the value of a
//! variable is data and never YAML: `#`, `: `, quotes, newlines and a leading `*&![{` arrive byte
//! for byte and cannot change the document's structure.

use super::error::{ConfigError, ConfigErrorKind};
use super::node::{Node, NodeKind};
use super::path::KeyPath;

/// Looks a variable up; `None` when it is unset.
pub(crate) type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Substitutes every string value of `node` in place; returns every problem found.
pub(crate) fn substitute(
    node: &mut Node,
    path: &KeyPath<'_>,
    lookup: Lookup<'_>,
) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    walk(node, path, lookup, &mut errors);
    errors
}

fn walk(node: &mut Node, path: &KeyPath<'_>, lookup: Lookup<'_>, errors: &mut Vec<ConfigError>) {
    let mark = node.mark;
    match &mut node.kind {
        NodeKind::Str {
            value,
            substituted,
            from_env,
        } => {
            if !value.contains('$') {
                return;
            }
            match expand(value, lookup) {
                Ok(Expanded {
                    text,
                    used_env,
                    used_form,
                }) => {
                    *substituted = used_form;
                    *value = text;
                    *from_env = used_env;
                }
                Err(message) => errors.push(
                    ConfigError::new(ConfigErrorKind::Environment, message)
                        .at(Some(mark), path.to_string()),
                ),
            }
        }
        NodeKind::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(item, &KeyPath::Index(path, i), lookup, errors);
            }
        }
        NodeKind::Map(entries) => {
            for (key, value) in entries.iter_mut() {
                let key_text = key.as_text().unwrap_or("?").to_owned();
                walk(value, &KeyPath::Key(path, &key_text), lookup, errors);
            }
        }
        NodeKind::Null | NodeKind::Scalar { .. } => {}
    }
}

/// The result of expanding one string.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Expanded {
    pub(crate) text: String,
    /// Whether any variable's value went into `text`.
    pub(crate) used_env: bool,
    /// Whether any `${...}` form was expanded (a default counts).
    pub(crate) used_form: bool,
}

/// Expands one string. The error message names the variable, never its value.
pub(crate) fn expand(input: &str, lookup: Lookup<'_>) -> Result<Expanded, String> {
    let mut out = String::with_capacity(input.len());
    let mut used_env = false;
    let mut used_form = false;
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body_and_tail) = after.strip_prefix('{') {
            let Some(end) = body_and_tail.find('}') else {
                return Err("unterminated `${` in a value: close it with `}`, or write `$$` for a literal `$`".to_owned());
            };
            let body = &body_and_tail[..end];
            let (name, op) = split_body(body)?;
            used_form = true;
            let value = lookup(name);
            match op {
                Op::Required => match value {
                    Some(v) => {
                        out.push_str(&v);
                        used_env = true;
                    }
                    None => {
                        return Err(format!(
                            "environment variable `{name}` is not set (use `${{{name}:-default}}` to give a default)"
                        ));
                    }
                },
                Op::Default(default) => match value {
                    Some(v) if !v.is_empty() => {
                        out.push_str(&v);
                        used_env = true;
                    }
                    _ => out.push_str(default),
                },
                Op::Error(message) => match value {
                    Some(v) if !v.is_empty() => {
                        out.push_str(&v);
                        used_env = true;
                    }
                    _ => {
                        let why = if message.is_empty() {
                            "required"
                        } else {
                            message
                        };
                        return Err(format!(
                            "environment variable `{name}` is unset or empty: {why}"
                        ));
                    }
                },
            }
            rest = &body_and_tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(Expanded {
        text: out,
        used_env,
        used_form,
    })
}

enum Op<'a> {
    Required,
    Default(&'a str),
    Error(&'a str),
}

fn split_body(body: &str) -> Result<(&str, Op<'_>), String> {
    let (name, op) = if let Some(i) = body.find(":-") {
        (&body[..i], Op::Default(&body[i + 2..]))
    } else if let Some(i) = body.find(":?") {
        (&body[..i], Op::Error(&body[i + 2..]))
    } else {
        (body, Op::Required)
    };
    if let Op::Default(text) | Op::Error(text) = &op
        && text.contains("${")
    {
        return Err(format!(
            "`${{{body}}}}}`: a `${{...}}` inside a default or message is not supported; give the default as plain text"
        ));
    }
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && name.chars().all(|c| c == '_' || c.is_ascii_alphanumeric());
    if !valid {
        return Err(format!(
            "`${{{body}}}` is not a valid variable reference: a name is letters, digits and `_`, \
             optionally followed by `:-default` or `:?message`"
        ));
    }
    Ok((name, op))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SET" => Some("value".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn ok(input: &str) -> String {
        expand(input, &env).unwrap().text
    }

    #[test]
    fn forms() {
        assert_eq!(ok("${SET}"), "value");
        assert_eq!(ok("a-${SET}-b"), "a-value-b");
        assert_eq!(ok("${EMPTY}"), "");
        assert_eq!(ok("${UNSET:-fallback}"), "fallback");
        assert_eq!(ok("${EMPTY:-fallback}"), "fallback");
        assert_eq!(ok("${SET:-fallback}"), "value");
        assert_eq!(ok("${UNSET:-}"), "");
        assert_eq!(ok("${SET:?must be set}"), "value");
        assert_eq!(ok("cost: $$5"), "cost: $5");
        assert_eq!(ok("$$${SET}"), "$value");
        assert_eq!(ok("a $ b $x"), "a $ b $x");
        assert_eq!(ok("no vars"), "no vars");
    }

    #[test]
    fn tracks_whether_the_environment_was_used() {
        assert!(expand("${SET}", &env).unwrap().used_env);
        assert!(!expand("${UNSET:-d}", &env).unwrap().used_env);
        assert!(!expand("$$", &env).unwrap().used_env);
    }

    #[test]
    fn errors_name_the_variable() {
        let e = expand("${UNSET}", &env).unwrap_err();
        assert!(e.contains("`UNSET` is not set"), "{e}");
        let e = expand("${EMPTY:?give the tenant id}", &env).unwrap_err();
        assert!(
            e.contains("`EMPTY` is unset or empty: give the tenant id"),
            "{e}"
        );
        let e = expand("${1BAD}", &env).unwrap_err();
        assert!(e.contains("not a valid variable reference"), "{e}");
        let e = expand("${OPEN", &env).unwrap_err();
        assert!(e.contains("unterminated"), "{e}");
    }
}
