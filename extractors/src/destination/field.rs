//! A destination field: a column name, a JSON pointer, a template of both, or a constant.

use std::borrow::Cow;
use std::fmt;

use serde_json::Value;

/// Where a destination value comes from in a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    text: String,
    kind: FieldKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum FieldKind {
    Ref(Ref),
    Template(Vec<Part>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Ref {
    /// A top-level key of the record (a CSV or SQL column).
    Column(String),
    /// An RFC 6901 JSON pointer.
    Pointer(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Ref(Ref),
}

impl Field {
    /// Reads a field: `name` (a column), `/a/b` (a JSON pointer), a template such as
    /// `{site}-{/sensor/id}` (`{{` and `}}` for literal braces), or `'text'`, a constant.
    pub fn parse(text: &str) -> Result<Field, String> {
        if text.trim().is_empty() {
            return Err(
                "is empty; name a column, a /json/pointer, a {template} or a 'constant'".to_owned(),
            );
        }
        let kind = if let Some(constant) = text
            .strip_prefix('\'')
            .and_then(|t| t.strip_suffix('\''))
            .filter(|_| text.len() >= 2)
        {
            FieldKind::Template(vec![Part::Literal(constant.to_owned())])
        } else if text.contains(['{', '}']) {
            FieldKind::Template(parse_template(text)?)
        } else {
            FieldKind::Ref(parse_ref(text)?)
        };
        Ok(Field {
            text: text.to_owned(),
            kind,
        })
    }

    /// A name for the field: the column, a pointer's last segment, or a template's text.
    pub fn name(&self) -> &str {
        match &self.kind {
            FieldKind::Ref(Ref::Column(c)) => c,
            FieldKind::Ref(Ref::Pointer(p)) => p.rsplit('/').next().unwrap_or(p),
            FieldKind::Template(_) => &self.text,
        }
    }

    /// The value in `record`; a template renders to a string. `None` when something is missing.
    pub fn resolve<'r>(&self, record: &'r Value) -> Option<Cow<'r, Value>> {
        match &self.kind {
            FieldKind::Ref(r) => r.resolve(record).map(Cow::Borrowed),
            FieldKind::Template(_) => self
                .render(record)
                .ok()
                .map(|s| Cow::Owned(Value::String(s))),
        }
    }

    /// Whether the record has a non-null value for the field.
    pub fn is_present(&self, record: &Value) -> bool {
        match &self.kind {
            FieldKind::Ref(r) => r.resolve(record).is_some_and(|v| !v.is_null()),
            FieldKind::Template(parts) => parts.iter().all(|p| match p {
                Part::Literal(_) => true,
                Part::Ref(r) => r.resolve(record).is_some_and(|v| !v.is_null()),
            }),
        }
    }

    /// The value as text (strings as they are, other values as JSON). On a missing or null
    /// value, `Err` names the column or pointer.
    pub fn render(&self, record: &Value) -> Result<String, String> {
        match &self.kind {
            FieldKind::Ref(r) => r.text(record),
            FieldKind::Template(parts) => {
                let mut out = String::new();
                for part in parts {
                    match part {
                        Part::Literal(l) => out.push_str(l),
                        Part::Ref(r) => out.push_str(&r.text(record)?),
                    }
                }
                Ok(out)
            }
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Ref {
    fn resolve<'r>(&self, record: &'r Value) -> Option<&'r Value> {
        match self {
            Ref::Column(c) => record.get(c),
            Ref::Pointer(p) => record.pointer(p),
        }
    }

    fn text(&self, record: &Value) -> Result<String, String> {
        match self.resolve(record) {
            None | Some(Value::Null) => Err(match self {
                Ref::Column(c) | Ref::Pointer(c) => c.clone(),
            }),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Ok(other.to_string()),
        }
    }
}

fn parse_ref(text: &str) -> Result<Ref, String> {
    if !text.starts_with('/') {
        return Ok(Ref::Column(text.to_owned()));
    }
    // RFC 6901: `~` must be followed by `0` (~) or `1` (/).
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '~' && !matches!(chars.peek(), Some((_, '0' | '1'))) {
            return Err(format!(
                "`{text}` is not a JSON pointer: `~` at byte {i} must be followed by 0 (for ~) or 1 (for /)"
            ));
        }
    }
    Ok(Ref::Pointer(text.to_owned()))
}

fn parse_template(text: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        match c {
            '{' if rest.starts_with("{{") => {
                literal.push('{');
                rest = &rest[2..];
            }
            '}' if rest.starts_with("}}") => {
                literal.push('}');
                rest = &rest[2..];
            }
            '{' => {
                let at = text.len() - rest.len();
                let Some(end) = rest.find('}') else {
                    return Err(format!(
                        "`{text}`: the `{{` at byte {at} is not closed (write `{{{{` for a literal brace)"
                    ));
                };
                let inner = &rest[1..end];
                if inner.trim().is_empty() || inner.contains('{') {
                    return Err(format!(
                        "`{text}`: `{{{inner}}}` at byte {at} must name a column or a /json/pointer"
                    ));
                }
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                }
                parts.push(Part::Ref(
                    parse_ref(inner).map_err(|e| format!("`{text}`: {e}"))?,
                ));
                rest = &rest[end + 1..];
            }
            '}' => {
                let at = text.len() - rest.len();
                return Err(format!(
                    "`{text}`: the `}}` at byte {at} closes nothing (write `}}}}` for a literal brace)"
                ));
            }
            c => {
                literal.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    Ok(parts)
}

/// A field of a tabular row: a column or a template of columns and text, the columns by their
/// place in the row ([`Field::of_columns`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ColumnField {
    parts: Vec<CellPart>,
    /// One column, not a template: its value is the cell's, not a text.
    plain: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum CellPart {
    Literal(String),
    /// The column's place, and its name.
    Cell(usize, String),
}

impl Field {
    /// The field for rows of `columns`, when it names columns only (no JSON pointer) and each
    /// is one of `columns` (the last of a name that appears twice, as a record keeps it).
    pub(super) fn of_columns(&self, columns: &[String]) -> Option<ColumnField> {
        let cell = |r: &Ref| match r {
            Ref::Column(c) => columns
                .iter()
                .rposition(|name| name == c)
                .map(|i| CellPart::Cell(i, c.clone())),
            Ref::Pointer(_) => None,
        };
        let plain = matches!(self.kind, FieldKind::Ref(_));
        let parts = match &self.kind {
            FieldKind::Ref(r) => vec![cell(r)?],
            FieldKind::Template(parts) => parts
                .iter()
                .map(|p| match p {
                    Part::Literal(l) => Some(CellPart::Literal(l.clone())),
                    Part::Ref(r) => cell(r),
                })
                .collect::<Option<_>>()?,
        };
        Some(ColumnField { parts, plain })
    }
}

impl ColumnField {
    /// The field's text in a row, as [`Field::render`] gives it for the row's record.
    pub(super) fn render(&self, cells: &[super::tabular::Cell<'_>]) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                CellPart::Literal(l) => out.push_str(l),
                CellPart::Cell(i, name) => {
                    cells[*i].push_text(&mut out).ok_or_else(|| name.clone())?
                }
            }
        }
        Ok(out)
    }

    /// The field's value in a row, as [`Field::resolve`] gives it for the row's record.
    pub(super) fn value(&self, cells: &[super::tabular::Cell<'_>]) -> Option<Value> {
        match (self.plain, self.parts.as_slice()) {
            (true, [CellPart::Cell(i, _)]) => Some(cells[*i].clone().into_value()),
            _ => self.render(cells).ok().map(Value::String),
        }
    }
}
