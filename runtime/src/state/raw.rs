//! Watermarks in a CDF RAW table: one row per key, columns `low` and `high`.

use crate::percent::encode_segment;
use std::collections::BTreeMap;

use super::{Marks, StateError, Watermarks};
use crate::cdf::raw::{MAX_ROWS_PER_REQUEST, ROWS_ENDPOINT as ROWS, insert_path, list_path};
use crate::cdf::{CdfClient, CdfError, CdfErrorKind};

/// Empty pages in a row (each with a next cursor) after which a state load gives up.
const MAX_EMPTY_PAGES: usize = 100;

/// Watermarks in a RAW table. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RawStateStore {
    client: CdfClient,
    database: String,
    table: String,
    pub(super) states: Marks,
}

impl RawStateStore {
    /// Reads every row of `database`/`table` (a missing table is an empty state). With `reset`,
    /// nothing is read. In dry-run nothing is read either: the state starts empty.
    pub async fn open(
        client: CdfClient,
        database: &str,
        table: &str,
        reset: bool,
    ) -> Result<Self, StateError> {
        let mut states = BTreeMap::new();
        if !reset && !client.is_dry_run() {
            let base = list_path(database, table, 1000);
            let mut cursor: Option<String> = None;
            // A misbehaving peer must not keep us reading forever: a cursor seen before, or
            // page after page with nothing in it, ends the load with an error.
            let mut seen = std::collections::HashSet::new();
            let mut empty_pages = 0;
            loop {
                let path = match &cursor {
                    Some(c) => format!("{base}&cursor={}", encode_segment(c)),
                    None => base.clone(),
                };
                let page = match client.get(ROWS, &path).await {
                    Ok(page) => page,
                    Err(e) if e.kind() == &CdfErrorKind::Rejected && e.status() == Some(404) => {
                        break;
                    }
                    Err(e) => return Err(StateError::Raw(e)),
                };
                for row in page["items"].as_array().into_iter().flatten() {
                    let Some(key) = row["key"].as_str() else {
                        continue;
                    };
                    let columns = &row["columns"];
                    let value = |name: &str| columns.get(name).filter(|v| !v.is_null()).cloned();
                    states.insert(
                        key.to_owned(),
                        Watermarks {
                            low: value("low"),
                            high: value("high"),
                        },
                    );
                }
                let items = page["items"].as_array().map_or(0, Vec::len);
                empty_pages = if items == 0 { empty_pages + 1 } else { 0 };
                match page["nextCursor"].as_str() {
                    Some(c) if !c.is_empty() => {
                        let bad = |why: &str| {
                            StateError::Raw(CdfError::new(
                                CdfErrorKind::BadResponse,
                                ROWS,
                                format!(
                                    "reading the state from RAW {database}/{table}: {why}; stopped"
                                ),
                            ))
                        };
                        if !seen.insert(c.to_owned()) {
                            return Err(bad("CDF returned a cursor it had returned before"));
                        }
                        if empty_pages >= MAX_EMPTY_PAGES {
                            return Err(bad(&format!(
                                "{MAX_EMPTY_PAGES} pages in a row were empty but had a next cursor"
                            )));
                        }
                        cursor = Some(c.to_owned());
                    }
                    _ => break,
                }
            }
        }
        Ok(RawStateStore {
            client,
            database: database.to_owned(),
            table: table.to_owned(),
            states: Marks::new(states),
        })
    }

    /// The watermarks of `key`.
    pub fn get(&self, key: &str) -> Option<Watermarks> {
        self.states.get(key)
    }

    /// Sets the watermarks of `key` (in memory until [`save`](Self::save)).
    pub fn set(&self, key: &str, watermarks: Watermarks) {
        self.states.set(key, watermarks);
    }

    /// Writes every key as a row, at most 10 000 rows a request.
    pub async fn save(&self) -> Result<(), StateError> {
        let rows: Vec<serde_json::Value> = self
            .states
            .snapshot()
            .into_iter()
            .map(|(key, w)| {
                serde_json::json!({
                    "key": key,
                    "columns": {
                        "low": w.low.clone().unwrap_or(serde_json::Value::Null),
                        "high": w.high.clone().unwrap_or(serde_json::Value::Null),
                    },
                })
            })
            .collect();
        let path = insert_path(&self.database, &self.table);
        for chunk in rows.chunks(MAX_ROWS_PER_REQUEST) {
            self.states.fenced()?;
            self.client
                .post(ROWS, &path, &serde_json::json!({ "items": chunk }))
                .await
                .map_err(StateError::Raw)?;
        }
        Ok(())
    }
}
