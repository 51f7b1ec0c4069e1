//! RAW rows: `POST /raw/dbs/{db}/tables/{table}/rows?ensureParent=true`, at most 10 000 rows a
//! request, one table a request.

use crate::percent::encode_segment;
use std::collections::VecDeque;

use super::{Kind, Request};

/// The API's limit of rows per request.
pub const MAX_ROWS_PER_REQUEST: usize = 10_000;

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

/// The RAW rows queue kind.
#[derive(Debug)]
pub struct RawRows;

impl Kind for RawRows {
    type Item = RawRow;
    const NAME: &'static str = "raw";

    fn next_request(items: &VecDeque<RawRow>) -> Request {
        let first = &items[0];
        #[derive(serde::Serialize)]
        struct Row<'a> {
            key: &'a str,
            columns: &'a serde_json::Map<String, serde_json::Value>,
        }
        let rows: Vec<Row<'_>> = items
            .iter()
            .take(MAX_ROWS_PER_REQUEST)
            .take_while(|r| r.database == first.database && r.table == first.table)
            .map(|r| Row {
                key: &r.key,
                columns: &r.columns,
            })
            .collect();
        Request {
            endpoint: "/raw/dbs/{db}/tables/{table}/rows",
            path: format!(
                "/raw/dbs/{}/tables/{}/rows?ensureParent=true",
                encode_segment(&first.database),
                encode_segment(&first.table)
            ),
            items: rows.len(),
            body: super::items_body(&rows),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(table: &str, key: usize) -> RawRow {
        RawRow {
            database: "plant db".into(),
            table: table.into(),
            key: key.to_string(),
            columns: serde_json::Map::new(),
        }
    }

    #[test]
    fn splits_at_the_limit_and_at_a_table_change() {
        let mut items: VecDeque<RawRow> = (0..25_000).map(|i| row("a", i)).collect();
        items.extend((0..3).map(|i| row("b", i)));
        let r = RawRows::next_request(&items);
        assert_eq!(r.items, 10_000);
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
}
