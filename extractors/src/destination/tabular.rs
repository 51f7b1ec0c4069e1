//! Rows of a tabular source (a csv line: cells in the order of named columns) written straight
//! to a RAW row's JSON, without the `serde_json::Map` a record is: the columns' JSON is written
//! from the cells, the key rendered from them, and the table's names shared by every row.
//!
//! It gives what [`Destination::map`] gives for the same record (the same columns, key and
//! errors), in the order of the columns instead of sorted (a JSON object has no order); a name
//! that appears twice keeps its last cell, as the map's insert did.

use std::sync::Arc;

use extractor_runtime::upload::StoredRow;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

use super::field::{ColumnField, Field};
use super::{Destination, RecordError};

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

/// How rows of given columns become RAW rows of a `type: raw` destination
/// ([`Destination::raw_writer`]).
#[derive(Debug)]
pub struct RawWriter {
    database: Arc<str>,
    table: Arc<str>,
    key: Field,
    key_cells: ColumnField,
    /// The column names, `None` for a column a later one of the same name replaces.
    names: Vec<Option<String>>,
    /// Columns written per row.
    written: usize,
}

impl Destination {
    /// Writes rows whose cells are in the order of `columns` straight to RAW rows, when this
    /// is a `type: raw` destination whose key names columns only (a column, or a template of
    /// columns and text); `None` otherwise (map each record instead).
    pub fn raw_writer(&self, columns: &[String]) -> Option<RawWriter> {
        let Destination::Raw {
            database,
            table,
            key,
        } = self
        else {
            return None;
        };
        let key_cells = key.of_columns(columns)?;
        let names: Vec<Option<String>> = columns
            .iter()
            .enumerate()
            .map(|(i, name)| (!columns[i + 1..].contains(name)).then(|| name.clone()))
            .collect();
        Some(RawWriter {
            database: database.as_str().into(),
            table: table.as_str().into(),
            key: key.clone(),
            key_cells,
            written: names.iter().flatten().count(),
            names,
        })
    }
}

impl RawWriter {
    /// The RAW row of `cells` (one per column, in order).
    pub fn row(&self, cells: &[Cell<'_>]) -> Result<StoredRow, RecordError> {
        debug_assert_eq!(cells.len(), self.names.len());
        let key = super::raw_key(&self.key, self.key_cells.render(cells))?;
        let columns = serde_json::value::to_raw_value(&Columns {
            writer: self,
            cells,
        })
        .expect("cells serialize");
        Ok(
            StoredRow::new(self.database.clone(), self.table.clone(), key, columns)
                .expect("the columns are written as an object"),
        )
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
