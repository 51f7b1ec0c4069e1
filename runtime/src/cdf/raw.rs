//! RAW rows on the wire: `POST /raw/dbs/{db}/tables/{table}/rows?ensureParent=true`, at most
//! [`MAX_ROWS_PER_REQUEST`] rows a request, one table a request. Shared by the RAW upload
//! queue and the RAW state store.

use crate::percent::encode_segment;

/// The API's limit of rows per request.
pub const MAX_ROWS_PER_REQUEST: usize = 10_000;

/// The endpoint's template: the `endpoint` label of its metrics.
pub const ROWS_ENDPOINT: &str = "/raw/dbs/{db}/tables/{table}/rows";

/// The path that lists up to `limit` rows of `database`/`table` (add `&cursor=` for the next
/// page).
pub fn list_path(database: &str, table: &str, limit: usize) -> String {
    format!(
        "/raw/dbs/{}/tables/{}/rows?limit={limit}",
        encode_segment(database),
        encode_segment(table)
    )
}

/// The path that deletes rows of `database`/`table` by key, and its metrics label.
pub fn delete_path(database: &str, table: &str) -> (&'static str, String) {
    (
        "/raw/dbs/{db}/tables/{table}/rows/delete",
        format!(
            "/raw/dbs/{}/tables/{}/rows/delete",
            encode_segment(database),
            encode_segment(table)
        ),
    )
}

/// The path that inserts rows into `database`/`table`, creating both when missing.
pub fn insert_path(database: &str, table: &str) -> String {
    format!(
        "/raw/dbs/{}/tables/{}/rows?ensureParent=true",
        encode_segment(database),
        encode_segment(table)
    )
}
