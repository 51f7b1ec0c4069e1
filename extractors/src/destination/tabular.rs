//! Rows of a tabular source (a csv line: cells in the order of named columns) made into items
//! without the `serde_json::Map` a record is: a RAW row's columns are written straight to JSON
//! and the table's names shared by every row; a datapoint's fields are read from the cells.
//!
//! It gives what [`Destination::map`] gives for the same record (the same columns, key,
//! datapoint and errors); a RAW row's columns are in the order of the columns instead of
//! sorted (a JSON object has no order), and a name that appears twice keeps its last cell, as
//! the map's insert did.

use std::borrow::Cow;
use std::sync::Arc;

use extractor_runtime::upload::{Datapoint, StoredRow};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

use super::field::{ColumnField, Field};
use super::{Destination, Item, RecordError};

/// One cell of a row, borrowing its text from the source's buffer.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell<'a> {
    /// An empty field of a typed column.
    Null,
    /// A boolean.
    Bool(bool),
    /// A number.
    Number(serde_json::Number),
    /// A text.
    Text(&'a str),
}

impl Cell<'_> {
    /// The cell as a JSON value.
    pub fn into_value(self) -> Value {
        match self {
            Cell::Null => Value::Null,
            Cell::Bool(b) => Value::Bool(b),
            Cell::Number(n) => Value::Number(n),
            Cell::Text(s) => Value::String(s.to_owned()),
        }
    }

    /// The cell as a field's text (texts as they are, other values as JSON writes them);
    /// `None` when it is null.
    pub(super) fn push_text(&self, out: &mut String) -> Option<()> {
        match self {
            Cell::Null => return None,
            Cell::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Cell::Number(n) => {
                use std::fmt::Write;
                write!(out, "{n}").expect("a String takes any text");
            }
            Cell::Text(s) => out.push_str(s),
        }
        Some(())
    }
}

impl Serialize for Cell<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Cell::Null => s.serialize_unit(),
            Cell::Bool(b) => s.serialize_bool(*b),
            Cell::Number(n) => n.serialize(s),
            Cell::Text(t) => s.serialize_str(t),
        }
    }
}

/// How rows of given columns become items of a destination ([`Destination::row_writer`]).
#[derive(Debug)]
pub struct RowWriter(Writer);

#[derive(Debug)]
enum Writer {
    Raw(RawWriter),
    Datapoints(PointWriter),
}

/// What a row becomes.
#[derive(Debug)]
pub enum Written {
    /// A RAW row, its columns written as JSON.
    Raw(StoredRow),
    /// Any other item.
    Item(Item),
}

#[derive(Debug)]
struct RawWriter {
    database: Arc<str>,
    table: Arc<str>,
    key: Field,
    key_cells: ColumnField,
    /// The column names, `None` for a column a later one of the same name replaces.
    names: Vec<Option<String>>,
    /// Columns written per row.
    written: usize,
}

#[derive(Debug)]
struct PointWriter {
    external_id: (Field, ColumnField),
    space: Option<Arc<str>>,
    timestamp: (Field, ColumnField),
    value: (Field, ColumnField),
}

impl Destination {
    /// Makes items of rows whose cells are in the order of `columns` without a record per row,
    /// for RAW rows (the columns written straight to JSON) and datapoints (without
    /// `new-series`), when their fields name columns only (a column, or a template of columns
    /// and text); `None` otherwise: map each record instead.
    pub fn row_writer(&self, columns: &[String]) -> Option<RowWriter> {
        let writer = match self {
            Destination::Raw {
                database,
                table,
                key,
            } => {
                let names: Vec<Option<String>> = columns
                    .iter()
                    .enumerate()
                    .map(|(i, name)| (!columns[i + 1..].contains(name)).then(|| name.clone()))
                    .collect();
                Writer::Raw(RawWriter {
                    database: database.as_str().into(),
                    table: table.as_str().into(),
                    key: key.clone(),
                    key_cells: key.of_columns(columns)?,
                    written: names.iter().flatten().count(),
                    names,
                })
            }
            Destination::Datapoints {
                external_id,
                space,
                timestamp,
                value,
                new_series: None,
                ..
            } => {
                let of = |f: &Field| Some((f.clone(), f.of_columns(columns)?));
                Writer::Datapoints(PointWriter {
                    external_id: of(external_id)?,
                    space: space.clone(),
                    timestamp: of(timestamp)?,
                    value: of(value)?,
                })
            }
            _ => return None,
        };
        Some(RowWriter(writer))
    }
}

impl RowWriter {
    /// The item of `cells` (one per column, in order): what [`Destination::map`] makes of the
    /// row's record.
    pub fn write(&self, cells: &[Cell<'_>]) -> Result<Written, RecordError> {
        match &self.0 {
            Writer::Raw(w) => {
                debug_assert_eq!(cells.len(), w.names.len());
                let key = super::raw_key(&w.key, w.key_cells.render(cells))?;
                let columns = serde_json::value::to_raw_value(&Columns { writer: w, cells })
                    .expect("cells serialize");
                Ok(Written::Raw(
                    StoredRow::new(w.database.clone(), w.table.clone(), key, columns)
                        .expect("the columns are written as an object"),
                ))
            }
            Writer::Datapoints(w) => {
                let (field, at) = &w.external_id;
                let external_id = at.render(cells).map_err(|missing| {
                    let key = if w.space.is_some() {
                        "instance-id.external-id"
                    } else {
                        "external-id"
                    };
                    super::bad(key, field, &format!("has no value for `{missing}`"))
                })?;
                let (field, at) = &w.timestamp;
                let timestamp =
                    super::time_of(field, at.value(cells).map(Cow::Owned), "timestamp")?;
                let (field, at) = &w.value;
                let value = super::value_of(field, at.value(cells).map(Cow::Owned))?;
                let point = Datapoint {
                    external_id,
                    timestamp,
                    value,
                };
                Ok(Written::Item(match &w.space {
                    Some(space) => Item::NodeDatapoint(point, space.clone(), None),
                    None => Item::Datapoint(point, None),
                }))
            }
        }
    }
}

/// A row's columns as a JSON object.
struct Columns<'r, 'c> {
    writer: &'r RawWriter,
    cells: &'r [Cell<'c>],
}

impl Serialize for Columns<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.writer.written))?;
        for (name, cell) in self.writer.names.iter().zip(self.cells) {
            if let Some(name) = name {
                map.serialize_entry(name, cell)?;
            }
        }
        map.end()
    }
}
