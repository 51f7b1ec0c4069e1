//! A YAML document as a tree of [`Node`]s that remember where they stand in the file.
//!
//! The tree is read with serde-saphyr (every node wrapped in `Spanned`), then `${VAR}` is
//! substituted on scalar values (see [`super::env`]), then typed structs are deserialized from the
//! tree by [`NodeDeserializer`], which knows the key path and line:column of every value and puts
//! both into each error. Substituting on the tree, not on the text, is what keeps a secret with
//! `#`, `: ` or quotes from changing the document's structure.

use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};
use serde_saphyr::{Spanned, Tagged};

use super::error::Mark;
use super::path::KeyPath;
use super::suggest::did_you_mean;

/// One value of the YAML document, with its position.
#[derive(Clone, PartialEq)]
pub struct Node {
    pub(crate) kind: NodeKind,
    pub(crate) mark: Mark,
    /// A local tag written on the value (`!file`, `!env`), resolved by the substitution step.
    pub(crate) tag: Option<String>,
}

/// The shape of a [`Node`].
#[derive(Clone, PartialEq)]
pub(crate) enum NodeKind {
    Null,
    /// A boolean, an integer or a float, kept as written (`raw`) so that a string field given
    /// `0755` or `1.10` receives exactly that text.
    Scalar {
        raw: String,
        value: ScalarValue,
    },
    /// A string. `substituted` is set when a `${VAR}` form produced it: it may then be parsed
    /// as a number or boolean when the target field asks for one. `from_env` is set when a
    /// variable's value went into it: such a value may be a secret and is never quoted in an
    /// error.
    Str {
        value: String,
        substituted: bool,
        from_env: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum ScalarValue {
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
}

impl fmt::Debug for Node {
    // Never prints values: a node may hold a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Node({} at {})", self.kind.describe(), self.mark)
    }
}

impl NodeKind {
    /// A short description of the kind of value, for "expected X, found Y" messages.
    pub(crate) fn describe(&self) -> &'static str {
        match self {
            NodeKind::Null => "null",
            NodeKind::Scalar { value, .. } => match value {
                ScalarValue::Bool(_) => "a boolean",
                ScalarValue::Int(_) | ScalarValue::UInt(_) => "an integer",
                ScalarValue::Float(_) => "a number",
            },
            NodeKind::Str { .. } => "a string",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }
}

impl Node {
    /// Where this node starts in the file.
    pub fn mark(&self) -> Mark {
        self.mark
    }

    /// An empty mapping at `mark`.
    /// A string node.
    pub(crate) fn text(value: &str, mark: Mark) -> Node {
        Node {
            kind: NodeKind::Str {
                value: value.to_owned(),
                substituted: false,
                from_env: false,
            },
            mark,
            tag: None,
        }
    }

    /// An integer node.
    pub(crate) fn int(value: i64, mark: Mark) -> Node {
        Node {
            kind: NodeKind::Scalar {
                raw: value.to_string(),
                value: ScalarValue::Int(value),
            },
            mark,
            tag: None,
        }
    }

    /// A mapping node.
    pub(crate) fn map(entries: Vec<(Node, Node)>, mark: Mark) -> Node {
        Node {
            kind: NodeKind::Map(entries),
            mark,
            tag: None,
        }
    }

    /// Whether two nodes hold the same document, positions aside; in a mapping at the top,
    /// the entry `skip` (if any) is left out of the comparison. Mapping entries compare in
    /// any order.
    pub(crate) fn same_as(&self, other: &Node, skip: Option<&str>) -> bool {
        match (&self.kind, &other.kind) {
            (NodeKind::Null, NodeKind::Null) => true,
            (NodeKind::Scalar { raw: a, .. }, NodeKind::Scalar { raw: b, .. }) => a == b,
            (NodeKind::Str { value: a, .. }, NodeKind::Str { value: b, .. }) => a == b,
            (NodeKind::Seq(a), NodeKind::Seq(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same_as(y, None))
            }
            (NodeKind::Map(a), NodeKind::Map(b)) => {
                let kept = |entries: &'_ Vec<(Node, Node)>| {
                    entries
                        .iter()
                        .filter(|(k, _)| skip.is_none() || k.as_text() != skip)
                        .count()
                };
                kept(a) == kept(b)
                    && a
                        .iter()
                        .filter(|(k, _)| skip.is_none() || k.as_text() != skip)
                        .all(|(k, v)| {
                            b.iter()
                                .find(|(k2, _)| k2.same_as(k, None))
                                .is_some_and(|(_, v2)| v.same_as(v2, None))
                        })
            }
            _ => false,
        }
    }

    pub(crate) fn empty_map(mark: Mark) -> Node {
        Node {
            kind: NodeKind::Map(Vec::new()),
            mark,
            tag: None,
        }
    }

    /// Whether the node is YAML null (`~`, `null` or nothing).
    pub fn is_null(&self) -> bool {
        matches!(self.kind, NodeKind::Null)
    }

    /// The scalar's text, when it is a scalar written in the file or produced by substitution.
    pub(crate) fn as_text(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Str { value, .. } => Some(value),
            NodeKind::Scalar { raw, .. } => Some(raw),
            _ => None,
        }
    }

    /// The value under `key`, when this node is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            NodeKind::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_text() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The `index`th item, when this node is a list.
    pub fn index(&self, index: usize) -> Option<&Node> {
        match &self.kind {
            NodeKind::Seq(items) => items.get(index),
            _ => None,
        }
    }

    /// Reads a YAML document into a tree. `source` is the text; errors carry serde-saphyr's
    /// location.
    pub(crate) fn parse(source: &str) -> Result<Node, serde_saphyr::Error> {
        // The parser's limits grow with the text (a value takes at least two bytes of it, so a
        // plain file never reaches them: 100 000 tasks load), but not with aliases: a small file
        // that expands far (an alias bomb) still stops at the default 250 000 values.
        let options = serde_saphyr::options! {
            strict_booleans: true,
            leading_zero_numbers_as_strings: true,
            with_snippet: false,
            budget: serde_saphyr::budget! {
                max_nodes: (source.len() / 2).max(250_000),
                max_events: source.len().max(1_000_000),
            },
        };
        let spanned: RawNode = serde_saphyr::from_str_with_options(source, options)?;
        Ok(Node::from_spanned(spanned, source))
    }

    fn from_spanned(spanned: RawNode, source: &str) -> Node {
        let loc = spanned.referenced;
        let mark = Mark {
            line: loc.line() as u32,
            column: loc.column() as u32,
        };
        let raw_text = || {
            let span = loc.span();
            match (span.byte_offset(), span.byte_len()) {
                (Some(start), Some(len)) => source
                    .get(start as usize..(start + len) as usize)
                    .map(str::to_owned),
                _ => None,
            }
        };
        let Tagged(value, tag) = spanned.value;
        // The core schema's own tags (`!!str`, `!!int`) are the YAML's business; any other is
        // kept for the config to resolve (`!env`, `!file`) or refuse.
        let tag = tag.filter(|t| !t.starts_with("tag:yaml.org,2002:") && !t.starts_with("!!"));
        let kind = match value {
            RawKind::Null => NodeKind::Null,
            RawKind::Scalar(value) => {
                let fallback = match value {
                    ScalarValue::Bool(b) => b.to_string(),
                    ScalarValue::Int(i) => i.to_string(),
                    ScalarValue::UInt(u) => u.to_string(),
                    ScalarValue::Float(f) => f.to_string(),
                };
                NodeKind::Scalar {
                    raw: raw_text().unwrap_or(fallback),
                    value,
                }
            }
            RawKind::Str(value) => NodeKind::Str {
                value,
                substituted: false,
                from_env: false,
            },
            RawKind::Seq(items) => NodeKind::Seq(
                items
                    .into_iter()
                    .map(|i| Node::from_spanned(i, source))
                    .collect(),
            ),
            RawKind::Map(entries) => NodeKind::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| (Node::from_spanned(k, source), Node::from_spanned(v, source)))
                    .collect(),
            ),
        };
        Node { kind, mark, tag }
    }
}

/// A value as serde-saphyr reads it: its position, its tag, and the value.
type RawNode = Spanned<Tagged<RawKind>>;

/// What serde-saphyr hands us through `deserialize_any`.
enum RawKind {
    Null,
    Scalar(ScalarValue),
    Str(String),
    Seq(Vec<RawNode>),
    Map(Vec<(RawNode, RawNode)>),
}

impl<'de> de::Deserialize<'de> for RawKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RawVisitor;
        impl<'de> Visitor<'de> for RawVisitor {
            type Value = RawKind;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E>(self) -> Result<RawKind, E> {
                Ok(RawKind::Null)
            }
            fn visit_none<E>(self) -> Result<RawKind, E> {
                Ok(RawKind::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<RawKind, D::Error> {
                <RawKind as de::Deserialize>::deserialize(d)
            }
            fn visit_bool<E>(self, v: bool) -> Result<RawKind, E> {
                Ok(RawKind::Scalar(ScalarValue::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<RawKind, E> {
                Ok(RawKind::Scalar(ScalarValue::Int(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<RawKind, E> {
                Ok(RawKind::Scalar(ScalarValue::UInt(v)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<RawKind, E> {
                Ok(RawKind::Scalar(ScalarValue::Float(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<RawKind, E> {
                Ok(RawKind::Str(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<RawKind, E> {
                Ok(RawKind::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawKind, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(RawKind::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawKind, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(RawKind::Map(entries))
            }
        }
        deserializer.deserialize_any(RawVisitor)
    }
}

/// An error met while deserializing typed values from a [`Node`] tree.
///
/// It starts as a bare message raised by serde; the innermost [`NodeDeserializer`] it passes
/// through stamps it with that node's key path and position.
#[derive(Debug)]
pub(crate) struct DeError {
    pub(crate) message: String,
    pub(crate) path: Option<String>,
    pub(crate) mark: Option<Mark>,
    /// Set by `missing_field`: the key is appended to the path of the mapping that lacks it.
    pub(crate) missing_key: Option<&'static str>,
    /// Set by `unknown_field`: the key, and the keys that would have been known.
    unknown_key: Option<(String, &'static [&'static str])>,
}

impl DeError {
    fn new(message: impl Into<String>) -> Self {
        let message = message.into();
        DeError {
            message,
            path: None,
            mark: None,
            missing_key: None,
            unknown_key: None,
        }
    }

    /// This error in the terms of a `{type: variant, ...}` mapping whose keys are `path`'s: a
    /// key it lacks is one `type: variant` needs, a key it does not know does not apply to it.
    fn in_variant(mut self, variant: &str, path: &KeyPath<'_>, entries: &[(Node, Node)]) -> Self {
        if self.mark.is_none()
            && let Some(key) = self.missing_key
        {
            self.message = format!("`type: {variant}` needs `{key}`");
        }
        if let Some((key, expected)) = &self.unknown_key
            && self.path.as_deref() == Some(KeyPath::Key(path, key).to_string().as_str())
        {
            let hint = match did_you_mean(key, expected) {
                s if s.starts_with(", did you mean") => s,
                _ => String::new(),
            };
            self.message = format!("`{key}` does not apply to `type: {variant}`{hint}");
            // Where the value is, as for every other problem with a value.
            if let Some((_, value)) = entries.iter().find(|(k, _)| k.as_text() == Some(key)) {
                self.mark = Some(value.mark);
            }
        }
        self
    }

    fn at(mut self, node: &Node, path: &KeyPath<'_>) -> Self {
        if self.mark.is_none() {
            self.mark = Some(node.mark);
            let mut p = path.to_string();
            if let Some(key) = self.missing_key {
                p = KeyPath::Key(path, key).to_string();
            }
            self.path = Some(p);
            // A value from the environment may be a secret: never repeat it.
            if let NodeKind::Str {
                value,
                from_env: true,
                ..
            } = &node.kind
                && !value.is_empty()
            {
                self.message = self
                    .message
                    .replace(value.as_str(), "<value from environment>");
            }
        }
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError::new(msg.to_string())
    }

    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        let found = match unexp {
            de::Unexpected::Str(s) => format!("the string `{s}`"),
            de::Unexpected::Unit => "null".to_owned(),
            de::Unexpected::Seq => "a list".to_owned(),
            de::Unexpected::Map => "a mapping".to_owned(),
            other => other.to_string(),
        };
        DeError::new(format!("expected {exp}, found {found}"))
    }

    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        let expected = match exp.to_string().as_str() {
            "u8" => "an integer from 0 to 255".to_owned(),
            "u16" => "an integer from 0 to 65535".to_owned(),
            "u32" => "an integer from 0 to 4294967295".to_owned(),
            "u64" | "usize" => "a non-negative integer".to_owned(),
            other => other.to_owned(),
        };
        let found = match unexp {
            de::Unexpected::Signed(i) => format!("`{i}`"),
            de::Unexpected::Unsigned(u) => format!("`{u}`"),
            other => other.to_string(),
        };
        DeError::new(format!("{found} is out of range: expected {expected}"))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let mut e = match crate::config::suggest::foreign_key(field, expected) {
            Some(what_instead) => DeError::new(format!("`{field}` {what_instead}")),
            None => DeError::new(format!(
                "unknown key `{field}`{}",
                did_you_mean(field, expected)
            )),
        };
        e.unknown_key = Some((field.to_owned(), expected));
        e
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        DeError::new(format!(
            "unknown value `{variant}`{}",
            did_you_mean(variant, expected)
        ))
    }

    fn missing_field(field: &'static str) -> Self {
        let mut e = DeError::new(format!("missing required key `{field}`"));
        e.missing_key = Some(field);
        e
    }

    fn duplicate_field(field: &'static str) -> Self {
        DeError::new(format!("duplicate key `{field}`"))
    }
}

/// Deserializes typed values from a [`Node`], tracking the key path.
pub(crate) struct NodeDeserializer<'de, 'p> {
    node: &'de Node,
    path: &'p KeyPath<'p>,
}

impl<'de: 'p, 'p> NodeDeserializer<'de, 'p> {
    pub(crate) fn new(node: &'de Node, path: &'p KeyPath<'p>) -> Self {
        NodeDeserializer { node, path }
    }

    fn type_error(&self, expected: &str) -> DeError {
        let found = match &self.node.kind {
            // Quote what the file says; a value from the environment is not repeated.
            NodeKind::Str {
                value,
                from_env: false,
                ..
            } => format!("the string `{value}`"),
            other => other.describe().to_owned(),
        };
        DeError::new(format!("expected {expected}, found {found}")).at(self.node, self.path)
    }

    /// Text that a number or boolean target may be parsed from: a substituted string.
    fn env_text(&self) -> Option<&'de str> {
        match &self.node.kind {
            NodeKind::Str {
                value,
                substituted: true,
                ..
            } => Some(value.trim()),
            _ => None,
        }
    }

    fn number<V: Visitor<'de>>(self, visitor: V, what: &str) -> Result<V::Value, DeError> {
        let result = match &self.node.kind {
            NodeKind::Scalar { value, .. } => match *value {
                ScalarValue::Int(i) => visitor.visit_i64::<DeError>(i),
                ScalarValue::UInt(u) => visitor.visit_u64::<DeError>(u),
                ScalarValue::Float(f) => visitor.visit_f64::<DeError>(f),
                ScalarValue::Bool(_) => return Err(self.type_error(what)),
            },
            _ => match self.env_text() {
                Some(t) => {
                    if let Ok(u) = t.parse::<u64>() {
                        visitor.visit_u64::<DeError>(u)
                    } else if let Ok(i) = t.parse::<i64>() {
                        visitor.visit_i64::<DeError>(i)
                    } else if let Ok(f) = t.parse::<f64>() {
                        visitor.visit_f64::<DeError>(f)
                    } else {
                        return Err(self.type_error(what));
                    }
                }
                None => return Err(self.type_error(what)),
            },
        };
        result.map_err(|e| e.at(self.node, self.path))
    }
}

macro_rules! forward_number {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            self.number(visitor, "a number")
        }
    )*};
}

impl<'de: 'p, 'p> Deserializer<'de> for NodeDeserializer<'de, 'p> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let (node, path) = (self.node, self.path);
        let result = match &node.kind {
            NodeKind::Null => visitor.visit_unit::<DeError>(),
            NodeKind::Scalar { value, .. } => match *value {
                ScalarValue::Bool(b) => visitor.visit_bool::<DeError>(b),
                ScalarValue::Int(i) => visitor.visit_i64::<DeError>(i),
                ScalarValue::UInt(u) => visitor.visit_u64::<DeError>(u),
                ScalarValue::Float(f) => visitor.visit_f64::<DeError>(f),
            },
            NodeKind::Str { value, .. } => visitor.visit_borrowed_str::<DeError>(value),
            NodeKind::Seq(items) => visitor.visit_seq(NodeSeqAccess {
                items: items.iter().enumerate(),
                path,
            }),
            NodeKind::Map(entries) => visitor.visit_map(NodeMapAccess::new(entries.iter(), path)),
        };
        result.map_err(|e| e.at(node, path))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let parsed = match (&self.node.kind, self.env_text()) {
            (
                NodeKind::Scalar {
                    value: ScalarValue::Bool(b),
                    ..
                },
                _,
            ) => Some(*b),
            (_, Some("true" | "True" | "TRUE")) => Some(true),
            (_, Some("false" | "False" | "FALSE")) => Some(false),
            _ => None,
        };
        match parsed {
            Some(b) => visitor
                .visit_bool(b)
                .map_err(|e: DeError| e.at(self.node, self.path)),
            None => Err(self.type_error("`true` or `false`")),
        }
    }

    forward_number! {
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
        deserialize_f32 deserialize_f64
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node.as_text() {
            Some(text) if !matches!(self.node.kind, NodeKind::Seq(_) | NodeKind::Map(_)) => visitor
                .visit_borrowed_str::<DeError>(text)
                .map_err(|e| e.at(self.node, self.path)),
            _ => Err(self.type_error("a string")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let empty_from_env = matches!(
            &self.node.kind,
            NodeKind::Str { value, substituted: true, .. } if value.is_empty()
        );
        if self.node.is_null() || empty_from_env {
            visitor
                .visit_none::<DeError>()
                .map_err(|e| e.at(self.node, self.path))
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            visitor
                .visit_unit::<DeError>()
                .map_err(|e| e.at(self.node, self.path))
        } else {
            Err(self.type_error("null"))
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            NodeKind::Seq(_) => self.deserialize_any(visitor),
            _ => Err(self.type_error("a list")),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            NodeKind::Map(_) => self.deserialize_any(visitor),
            _ => Err(self.type_error("a mapping")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if name == super::value::STRUCT {
            // A `Value<T>`: the value, and where it is.
            return visitor.visit_map(super::value::Where::new(self.node, self.path));
        }
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let (node, path) = (self.node, self.path);
        let entries = match &node.kind {
            NodeKind::Str { value, .. } => {
                return visitor
                    .visit_enum(UnitVariant { text: value, de: self })
                    .map_err(|e| e.at(node, path));
            }
            NodeKind::Map(entries) => entries,
            _ => return Err(self.type_error("one of the listed values")),
        };
        // `{type: variant, key: value, ...}`: the variant's keys beside its `type`.
        if let Some((_, tag)) = entries.iter().find(|(k, _)| k.as_text() == Some("type")) {
            let tag_path = KeyPath::Key(path, "type");
            let NodeKind::Str { value: variant, .. } = &tag.kind else {
                return Err(NodeDeserializer::new(tag, &tag_path)
                    .type_error(&format!("one of {}", listed(variants))));
            };
            return visitor
                .visit_enum(TaggedVariant {
                    variant,
                    tag,
                    entries,
                    node,
                    path,
                })
                .map_err(|e| e.at(node, path));
        }
        // `{variant: {...}}`: one key, the variant's name.
        let named: Vec<&(Node, Node)> = entries
            .iter()
            .filter(|(k, _)| k.as_text().is_some_and(|t| variants.contains(&t)))
            .collect();
        match (named.as_slice(), entries.len()) {
            ([(key, value)], 1) => {
                let variant = key.as_text().unwrap_or_default();
                let value_path = KeyPath::Key(path, variant);
                visitor
                    .visit_enum(KeyedVariant {
                        variant,
                        key,
                        de: NodeDeserializer::new(value, &value_path),
                    })
                    .map_err(|e| e.at(value, &value_path))
                    .map_err(|e| e.at(node, path))
            }
            ([(first, _), (second, value), ..], _) => {
                let (a, b) = (
                    first.as_text().unwrap_or_default(),
                    second.as_text().unwrap_or_default(),
                );
                Err(
                    DeError::new(format!("give either `{a}` or `{b}`, not both"))
                        .at(value, &KeyPath::Key(path, b)),
                )
            }
            _ if SINGLE_KEY_ENUMS.contains(&name) => match entries.first() {
                Some((key, _)) => {
                    let text = key.as_text().unwrap_or_default();
                    Err(DeError::new(format!(
                        "unknown key `{text}`{}",
                        did_you_mean(text, variants)
                    ))
                    .at(key, &KeyPath::Key(path, text)))
                }
                None => Err(DeError::new(format!(
                    "give {}",
                    variants
                        .iter()
                        .map(|v| format!("`{v}: {{...}}`"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ))
                .at(node, path)),
            },
            _ => {
                let mut e = DeError::new(format!(
                    "missing required key `type` (one of {})",
                    listed(variants)
                ));
                e.missing_key = Some("type");
                Err(e.at(node, path))
            }
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit::<DeError>()
    }
}

struct UnitVariant<'de, 'p> {
    text: &'de str,
    de: NodeDeserializer<'de, 'p>,
}

impl<'de: 'p, 'p> EnumAccess<'de> for UnitVariant<'de, 'p> {
    type Error = DeError;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), DeError> {
        let de: de::value::BorrowedStrDeserializer<'de, DeError> =
            de::value::BorrowedStrDeserializer::new(self.text);
        seed.deserialize(de).map(|v| (v, self))
    }
}

impl<'de: 'p, 'p> VariantAccess<'de> for UnitVariant<'de, 'p> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        Ok(())
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, _seed: S) -> Result<S::Value, DeError> {
        Err(self.de.type_error("a mapping with one key"))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, _visitor: V) -> Result<V::Value, DeError> {
        Err(self.de.type_error("a mapping with one key"))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, DeError> {
        Err(self.de.type_error("a mapping with one key"))
    }
}

/// The enums written as a mapping with one key, the variant's name (`state-store: {local:
/// {...}}`, as python-extractor-utils writes it), rather than with a `type` key: only how a
/// mapping with neither is reported depends on it.
const SINGLE_KEY_ENUMS: &[&str] = &["StateStoreConfig"];

/// `` `a`, `b`, `c` ``.
fn listed(variants: &[&str]) -> String {
    variants
        .iter()
        .map(|v| format!("`{v}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A variant written as `{type: variant, ...}`: its other keys are the variant's.
struct TaggedVariant<'de, 'p> {
    variant: &'de str,
    tag: &'de Node,
    entries: &'de [(Node, Node)],
    node: &'de Node,
    path: &'p KeyPath<'p>,
}

impl<'de, 'p> TaggedVariant<'de, 'p> {
    /// The entries but `type`.
    fn rest(&self) -> impl Iterator<Item = &'de (Node, Node)> + use<'de> {
        self.entries
            .iter()
            .filter(|(k, _)| k.as_text() != Some("type"))
    }
}

impl<'de: 'p, 'p> EnumAccess<'de> for TaggedVariant<'de, 'p> {
    type Error = DeError;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), DeError> {
        let de: de::value::BorrowedStrDeserializer<'de, DeError> =
            de::value::BorrowedStrDeserializer::new(self.variant);
        let (tag, path) = (self.tag, self.path);
        seed.deserialize(de)
            .map(|v| (v, self))
            .map_err(|e| e.at(tag, &KeyPath::Key(path, "type")))
    }
}

impl<'de: 'p, 'p> VariantAccess<'de> for TaggedVariant<'de, 'p> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        match self.rest().next() {
            None => Ok(()),
            Some((key, value)) => {
                let text = key.as_text().unwrap_or_default();
                Err(
                    DeError::new(format!("`type: {}` takes no `{text}`", self.variant))
                        .at(value, &KeyPath::Key(self.path, text)),
                )
            }
        }
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, DeError> {
        let (variant, path, entries) = (self.variant, self.path, self.entries);
        seed.deserialize(RestDeserializer(self))
            .map_err(|e| e.in_variant(variant, path, entries))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, _visitor: V) -> Result<V::Value, DeError> {
        Err(DeError::new("a list variant cannot be written as a mapping").at(self.node, self.path))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let (variant, path, entries) = (self.variant, self.path, self.entries);
        visitor
            .visit_map(NodeMapAccess::new(self.rest(), path))
            .map_err(|e| e.in_variant(variant, path, entries))
    }
}

/// The keys of a `{type: variant, ...}` mapping but `type`, for a newtype variant's struct.
struct RestDeserializer<'de, 'p>(TaggedVariant<'de, 'p>);

impl<'de: 'p, 'p> Deserializer<'de> for RestDeserializer<'de, 'p> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let path = self.0.path;
        visitor.visit_map(NodeMapAccess::new(self.0.rest(), path))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

/// A variant written as `{variant: value}`.
struct KeyedVariant<'de, 'p> {
    variant: &'de str,
    key: &'de Node,
    de: NodeDeserializer<'de, 'p>,
}

impl<'de: 'p, 'p> EnumAccess<'de> for KeyedVariant<'de, 'p> {
    type Error = DeError;
    type Variant = NodeDeserializer<'de, 'p>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, NodeDeserializer<'de, 'p>), DeError> {
        let de: de::value::BorrowedStrDeserializer<'de, DeError> =
            de::value::BorrowedStrDeserializer::new(self.variant);
        let key = self.key;
        seed.deserialize(de)
            .map(|v| (v, self.de))
            .map_err(|e| e.at(key, &KeyPath::Root))
    }
}

impl<'de: 'p, 'p> VariantAccess<'de> for NodeDeserializer<'de, 'p> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        match &self.node.kind {
            NodeKind::Null => Ok(()),
            NodeKind::Map(entries) if entries.is_empty() => Ok(()),
            _ => Err(self.type_error("nothing (null)")),
        }
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, DeError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_tuple(len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_struct("", fields, visitor)
    }
}

struct NodeSeqAccess<'p, I> {
    items: I,
    path: &'p KeyPath<'p>,
}

impl<'de: 'p, 'p, I: Iterator<Item = (usize, &'de Node)>> SeqAccess<'de> for NodeSeqAccess<'p, I> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some((index, node)) => {
                let path = KeyPath::Index(self.path, index);
                seed.deserialize(NodeDeserializer::new(node, &path))
                    .map(Some)
                    .map_err(|e| e.at(node, &path))
            }
            None => Ok(None),
        }
    }
}

struct NodeMapAccess<'de, 'p, I> {
    entries: I,
    value: Option<&'de Node>,
    path: &'p KeyPath<'p>,
    key_path: Option<&'de str>,
}

impl<'de, 'p, I> NodeMapAccess<'de, 'p, I> {
    /// The entries of the mapping at `path`.
    fn new(entries: I, path: &'p KeyPath<'p>) -> Self {
        NodeMapAccess {
            entries,
            value: None,
            path,
            key_path: None,
        }
    }
}

impl<'de: 'p, 'p, I: Iterator<Item = &'de (Node, Node)>> MapAccess<'de>
    for NodeMapAccess<'de, 'p, I>
{
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        let Some(text) = key.as_text() else {
            return Err(DeError::new(format!(
                "a key must be a string, found {}",
                key.kind.describe()
            ))
            .at(key, self.path));
        };
        self.value = Some(value);
        self.key_path = Some(text);
        let path = KeyPath::Key(self.path, text);
        let de: de::value::BorrowedStrDeserializer<'de, DeError> =
            de::value::BorrowedStrDeserializer::new(text);
        seed.deserialize(de).map(Some).map_err(|e| e.at(key, &path))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let value = self
            .value
            .take()
            .expect("next_value called before next_key");
        let key = self.key_path.take().unwrap_or_default();
        let path = KeyPath::Key(self.path, key);
        seed.deserialize(NodeDeserializer::new(value, &path))
            .map_err(|e| e.at(value, &path))
    }
}
