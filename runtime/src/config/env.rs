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

/// Substitutes every string value of `node` in place and resolves its tags; returns every
/// problem found, and warnings (each as a located [`ConfigError`] to print, not to fail on).
pub(crate) fn substitute(
    node: &mut Node,
    path: &KeyPath<'_>,
    lookup: Lookup<'_>,
) -> (Vec<ConfigError>, Vec<ConfigError>) {
    let mut found = Found::default();
    walk(node, path, lookup, &mut found);
    (found.errors, found.warnings)
}

#[derive(Default)]
struct Found {
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
}

fn walk(node: &mut Node, path: &KeyPath<'_>, lookup: Lookup<'_>, found: &mut Found) {
    let mark = node.mark;
    if let Some(tag) = node.tag.take() {
        let located = |message: String| {
            ConfigError::new(ConfigErrorKind::Environment, message).at(Some(mark), path.to_string())
        };
        match resolve_tag(node, &tag, lookup) {
            Ok(Some(warning)) => found.warnings.push(located(warning)),
            Ok(None) => {}
            Err(message) => found.errors.push(located(message)),
        }
        return;
    }
    let errors = &mut found.errors;
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
                walk(item, &KeyPath::Index(path, i), lookup, found);
            }
        }
        NodeKind::Map(entries) => {
            for (key, value) in entries.iter_mut() {
                let key_text = key.as_text().unwrap_or("?").to_owned();
                walk(value, &KeyPath::Key(path, &key_text), lookup, found);
            }
        }
        NodeKind::Null | NodeKind::Scalar { .. } => {}
    }
}

/// The tags a value may carry.
const TAGS: &str = "`!env NAME` (an environment variable), `!file PATH` (a file's content) and `!keyvault NAME` (an Azure Key Vault secret)";

/// Replaces a tagged value by what it names: `!env NAME` by the variable's value, `!file PATH`
/// by the file's content (one trailing newline trimmed; `${VAR}` in PATH is substituted
/// first). Either value is treated as a secret: never quoted in an error, printed as `***`.
/// Returns a warning when there is one.
fn resolve_tag(node: &mut Node, tag: &str, lookup: Lookup<'_>) -> Result<Option<String>, String> {
    let NodeKind::Str { value, .. } = &node.kind else {
        let written = match tag {
            "!env" | "!file" | "!keyvault" => format!("`{tag}` takes a name, like `{tag} {}`", if tag == "!file" { "/run/secrets/my-secret" } else { "MY_SECRET" }),
            _ => format!("unknown YAML tag `{tag}`: a value may carry {TAGS}"),
        };
        return Err(written);
    };
    let mut warning = None;
    let text = match tag {
        "!env" => lookup(value).ok_or_else(|| {
            format!("`!env {value}`: the environment variable {value} is not set")
        })?,
        "!file" => {
            let path = match expand(value, lookup) {
                Ok(e) => e.text,
                Err(message) => return Err(message),
            };
            let (text, open) = read_secret_file(std::path::Path::new(&path))?;
            if open {
                warning = Some(format!("`!file {path}`: the file is readable by every user of this machine: `chmod o-r` it"));
            }
            text
        }
        "!keyvault" => {
            // Read from the vault once the whole tree is substituted (`super::vault`): the
            // name, substituted, stays with its tag until then.
            let name = expand(value, lookup)?.text;
            if !crate::keyvault::valid_name(&name) {
                return Err(format!("`!keyvault {name}`: a Key Vault secret name is 1 to 127 letters, digits and dashes"));
            }
            node.kind = NodeKind::Str {
                value: name,
                substituted: true,
                from_env: true,
            };
            node.tag = Some(tag.to_owned());
            return Ok(None);
        }
        _ => return Err(format!("unknown YAML tag `{tag}`: a value may carry {TAGS}")),
    };
    node.kind = NodeKind::Str {
        value: text,
        substituted: true,
        from_env: true,
    };
    Ok(warning)
}

/// A secret file's content, one trailing newline (`\n` or `\r\n`) trimmed, as Kubernetes and
/// Docker secrets are written, and whether every user may read it (accepted, with a warning).
fn read_secret_file(path: &std::path::Path) -> Result<(String, bool), String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("`!file {}`: cannot read it: {e}", path.display()))?;
    let mut text = String::from_utf8(bytes)
        .map_err(|_| format!("`!file {}`: the file is not UTF-8 text", path.display()))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    use std::os::unix::fs::PermissionsExt as _;
    let open = std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0);
    Ok((text, open))
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
