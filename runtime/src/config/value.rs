//! [`Value`]: a value of the config that remembers where it was written (cargo's `Value<T>`),
//! so that a check made after loading points at it: `tasks[1].schedule.expression` at 15:44.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, Visitor};

use super::error::Mark;
use super::node::{DeError, Node, NodeDeserializer};
use super::path::KeyPath;

/// The struct name by which the config's deserializer recognises a [`Value`].
pub(crate) const STRUCT: &str = "$extractor_runtime::config::Value";
const FIELDS: &[&str] = &["line", "column", "path", "value"];

/// A value and where the config has it: its key path and line:column.
///
/// It derefs to the value. Read from the config, it knows its place; made in code
/// ([`Value::new`]), it has none.
#[derive(Clone)]
pub struct Value<T> {
    value: T,
    place: Option<(Mark, String)>,
}

impl<T> Value<T> {
    /// A value made in code: it has no place in a file.
    pub fn new(value: T) -> Self {
        Value { value, place: None }
    }

    /// Where the value is written, if it was read from a file.
    pub fn mark(&self) -> Option<Mark> {
        self.place.as_ref().map(|(m, _)| *m)
    }

    /// Its key path (`tasks[1].name`), if it was read from a file.
    pub fn key_path(&self) -> Option<&str> {
        self.place.as_ref().map(|(_, p)| p.as_str())
    }

    /// The value.
    pub fn get(&self) -> &T {
        &self.value
    }
}

impl<T> std::ops::Deref for Value<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: fmt::Debug> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

impl<T: fmt::Display> fmt::Display for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

impl<T: PartialEq> PartialEq for Value<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<T: schemars::JsonSchema> schemars::JsonSchema for Value<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> std::borrow::Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

impl<'de, T: de::Deserialize<'de>> de::Deserialize<'de> for Value<T> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ValueVisitor<T>(std::marker::PhantomData<T>);

        impl<'de, T: de::Deserialize<'de>> Visitor<'de> for ValueVisitor<T> {
            type Value = Value<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value of the config")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value<T>, A::Error> {
                let (mut line, mut column, mut path, mut value) = (None, None, None, None);
                while let Some(key) = map.next_key::<&str>()? {
                    match key {
                        "line" => line = Some(map.next_value::<u32>()?),
                        "column" => column = Some(map.next_value::<u32>()?),
                        "path" => path = Some(map.next_value::<String>()?),
                        "value" => value = Some(map.next_value::<T>()?),
                        other => return Err(de::Error::unknown_field(other, FIELDS)),
                    }
                }
                let value = value.ok_or_else(|| de::Error::missing_field("value"))?;
                let place = match (line, column, path) {
                    (Some(line), Some(column), Some(path)) => Some((Mark { line, column }, path)),
                    _ => None,
                };
                Ok(Value { value, place })
            }
        }

        d.deserialize_struct(STRUCT, FIELDS, ValueVisitor(std::marker::PhantomData))
    }
}

/// What the config's deserializer hands a [`Value`]: the node's line, column and key path, then
/// the node itself.
pub(crate) struct Where<'de, 'p> {
    node: &'de Node,
    path: &'p KeyPath<'p>,
    next: usize,
}

impl<'de, 'p> Where<'de, 'p> {
    pub(crate) fn new(node: &'de Node, path: &'p KeyPath<'p>) -> Self {
        Where {
            node,
            path,
            next: 0,
        }
    }
}

impl<'de: 'p, 'p> MapAccess<'de> for Where<'de, 'p> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some(key) = FIELDS.get(self.next) else {
            return Ok(None);
        };
        let de: de::value::BorrowedStrDeserializer<'de, DeError> =
            de::value::BorrowedStrDeserializer::new(key);
        seed.deserialize(de).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let field = self.next;
        self.next += 1;
        let mark = self.node.mark();
        match field {
            0 => seed.deserialize(de::value::U32Deserializer::new(mark.line)),
            1 => seed.deserialize(de::value::U32Deserializer::new(mark.column)),
            2 => seed.deserialize(de::value::StringDeserializer::new(self.path.to_string())),
            _ => seed.deserialize(NodeDeserializer::new(self.node, self.path)),
        }
    }
}
