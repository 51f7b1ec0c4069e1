//! RAW rows: `POST /raw/dbs/{db}/tables/{table}/rows?ensureParent=true`, at most 10 000 rows a
//! request, one table a request.

use std::sync::Arc;

use super::{Kind, Request};
use crate::cdf::raw::{MAX_ROWS_PER_REQUEST, ROWS_ENDPOINT, insert_path};

/// A row for a RAW table.
#[derive(Clone, Debug, PartialEq)]
pub struct RawRow {
    /// The database.
    pub database: String,
    /// The table.
    pub table: String,
    /// The row key.
    pub key: String,
    /// The columns.
    pub columns: serde_json::Map<String, serde_json::Value>,
}

/// A RAW row as the queue keeps it: the columns serialized (a few times smaller than a
/// `serde_json::Map`, and serialized once).
///
/// A producer that has its columns as JSON text already (a csv line written straight to JSON)
/// builds it with [`StoredRow::new`] and queues it with
/// [`Upload::raw_stored`](super::Upload::raw_stored): no map per row.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct StoredRow {
    #[serde(with = "arc_str")]
    database: Arc<str>,
    #[serde(with = "arc_str")]
    table: Arc<str>,
    key: String,
    columns: Box<serde_json::value::RawValue>,
}

impl StoredRow {
    /// A row of `database`.`table` whose columns are `columns`, a JSON object (share one
    /// `Arc` of each name among the rows of a table). `Err` says why `columns` is not an
    /// object.
    pub fn new(
        database: Arc<str>,
        table: Arc<str>,
        key: String,
        columns: Box<serde_json::value::RawValue>,
    ) -> Result<StoredRow, String> {
        // Valid JSON already: an object is one whose first byte is `{`.
        if !columns.get().trim_start().starts_with('{') {
            return Err(format!(
                "the columns of RAW row `{key}` are not a JSON object"
            ));
        }
        Ok(StoredRow {
            database,
            table,
            key,
            columns,
        })
    }

    /// The row key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The columns, as JSON text.
    pub fn columns(&self) -> &str {
        self.columns.get()
    }
}

/// An `Arc<str>` as a JSON string (serde's own impl needs its `rc` feature).
mod arc_str {
    use std::sync::Arc;

    pub fn serialize<S: serde::Serializer>(s: &Arc<str>, to: S) -> Result<S::Ok, S::Error> {
        to.serialize_str(s)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(from: D) -> Result<Arc<str>, D::Error> {
        <String as serde::Deserialize>::deserialize(from).map(Arc::from)
    }
}

/// Whether two names are the same: at once when the rows share one `Arc`.
fn same(a: &Arc<str>, b: &Arc<str>) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

/// The RAW rows queue kind.
#[derive(Debug)]
pub struct RawRows;

impl Kind for RawRows {
    type Item = RawRow;
    type Stored = StoredRow;
    const NAME: &'static str = "raw";
    const READ_AHEAD: usize = 4 * MAX_ROWS_PER_REQUEST;
    const MAX_ITEMS: usize = MAX_ROWS_PER_REQUEST;

    fn store(row: RawRow) -> StoredRow {
        let columns = serde_json::value::to_raw_value(&row.columns).expect("a JSON map serializes");
        StoredRow {
            database: row.database.into(),
            table: row.table.into(),
            key: row.key,
            columns,
        }
    }

    fn batch_len<'a>(mut items: impl Iterator<Item = &'a StoredRow>) -> usize {
        let Some(first) = items.next() else {
            return 0;
        };
        1 + items
            .take(MAX_ROWS_PER_REQUEST - 1)
            .take_while(|r| same(&r.database, &first.database) && same(&r.table, &first.table))
            .count()
    }

    fn request(items: &[&StoredRow]) -> Request {
        let first = items[0];
        #[derive(serde::Serialize)]
        struct Row<'a> {
            key: &'a str,
            columns: &'a serde_json::value::RawValue,
        }
        let rows: Vec<Row<'_>> = items
            .iter()
            .map(|r| Row {
                key: &r.key,
                columns: &r.columns,
            })
            .collect();
        Request {
            endpoint: ROWS_ENDPOINT,
            path: insert_path(&first.database, &first.table),
            items: rows.len(),
            body: super::items_body(&rows),
        }
    }

    fn id(item: &StoredRow) -> Option<std::borrow::Cow<'_, str>> {
        Some(item.key.as_str().into())
    }

    fn from_json(mut v: serde_json::Value) -> Result<StoredRow, String> {
        let text = |v: &serde_json::Value, key: &str| {
            v[key]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("a RAW row without a text `{key}`"))
        };
        let columns = match v["columns"].take() {
            serde_json::Value::Object(m) => m,
            _ => return Err("a RAW row without `columns`".to_owned()),
        };
        Ok(RawRows::store(RawRow {
            database: text(&v, "database")?,
            table: text(&v, "table")?,
            key: text(&v, "key")?,
            columns,
        }))
    }

    fn encode(item: &StoredRow) -> Vec<u8> {
        serde_json::to_vec(item).expect("a stored row serializes")
    }

    fn decode(bytes: &[u8]) -> Result<StoredRow, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    fn to_json(item: &StoredRow) -> serde_json::Value {
        serde_json::json!({
            "database": &*item.database,
            "table": &*item.table,
            "key": item.key,
            "columns": serde_json::from_str::<serde_json::Value>(item.columns.get())
                .unwrap_or(serde_json::Value::Null),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    fn row(table: &str, key: usize) -> StoredRow {
        let mut columns = serde_json::Map::new();
        columns.insert("n".into(), serde_json::json!(key));
        RawRows::store(RawRow {
            database: "plant db".into(),
            table: table.into(),
            key: key.to_string(),
            columns,
        })
    }

    #[test]
    fn splits_at_the_limit_and_at_a_table_change() {
        let mut items: VecDeque<StoredRow> = (0..25_000).map(|i| row("a", i)).collect();
        items.extend((0..3).map(|i| row("b", i)));
        let r = RawRows::next_request(&items);
        assert_eq!(r.items, 10_000);
        assert_eq!(
            r.json()["items"][7],
            serde_json::json!({"key": "7", "columns": {"n": 7}})
        );
        assert_eq!(
            r.path,
            "/raw/dbs/plant%20db/tables/a/rows?ensureParent=true"
        );
        items.drain(..20_000);
        let r = RawRows::next_request(&items);
        assert_eq!(r.items, 5_000, "the rest of table a, not table b's rows");
        items.drain(..5_000);
        let r = RawRows::next_request(&items);
        assert_eq!(
            (r.items, r.path.as_str()),
            (3, "/raw/dbs/plant%20db/tables/b/rows?ensureParent=true")
        );
    }

    #[test]
    fn a_stored_row_keeps_its_disk_form_and_takes_only_an_object() {
        let columns = |text: &str| serde_json::value::RawValue::from_string(text.into()).unwrap();
        let row = StoredRow::new("db".into(), "t".into(), "k1".into(), columns(r#"{"n":1}"#))
            .unwrap();
        // The disk buffer's form, as before the names were shared: files written by an older
        // build are read.
        let bytes = RawRows::encode(&row);
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"database":"db","table":"t","key":"k1","columns":{"n":1}}"#
        );
        let back = RawRows::decode(&bytes).unwrap();
        assert_eq!((back.key(), back.columns()), ("k1", r#"{"n":1}"#));
        assert_eq!(RawRows::to_json(&back)["table"], serde_json::json!("t"));
        let e = StoredRow::new("db".into(), "t".into(), "k2".into(), columns("[1]")).unwrap_err();
        assert_eq!(e, "the columns of RAW row `k2` are not a JSON object");
    }
}
