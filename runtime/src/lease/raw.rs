//! A lease in a CDF RAW table, after dotnet-extractor-utils' idea: every replica keeps a
//! heartbeat row (key: its identity; columns `leader` and `leaseMillis`), and among the live
//! rows (updated within their lease, by CDF's own `lastUpdatedTime`, so clocks do not matter)
//! the one that claims `leader: true` leads. With no live claimer, the lowest live identity
//! claims.
//!
//! RAW has no compare-and-set, so two replicas can both claim when they decide within the same
//! try (a new replica whose row the other has not seen yet). The next try settles it: of two
//! live claimers the higher identity steps down at once (its fence closes), so the window is at
//! most one `retry-period`; state writes in it are still fenced by each replica's own deadline.
//! A graceful stop deletes the row, so a standby claims at its next try.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Attempt, BoxFuture, LeaseBackend, LeaseError};
use crate::cdf::CdfClient;
use crate::cdf::raw::{ROWS_ENDPOINT, delete_path, insert_path, list_path};
use crate::config::RawLeaseConfig;

/// Rows read per try: a table with more replicas than this is not a lease table.
const MAX_ROWS: usize = 1000;

/// A lease as heartbeat rows in RAW.
#[derive(Debug)]
pub struct RawLease {
    client: CdfClient,
    database: String,
    table: String,
    /// Whether this replica claimed at its last try.
    claiming: std::sync::atomic::AtomicBool,
    /// The lease's name: the `lease` column, so one table can hold several leases.
    name: String,
}

fn err(message: impl Into<String>) -> LeaseError {
    LeaseError::new("raw", message)
}

/// A live row: `(identity, claims)`.
type Live = Vec<(String, bool)>;

impl RawLease {
    /// The lease `name` in `config`'s table.
    pub fn new(client: CdfClient, config: &RawLeaseConfig, name: &str) -> RawLease {
        RawLease {
            client,
            database: config.database.clone(),
            table: config.table.clone(),
            claiming: std::sync::atomic::AtomicBool::new(false),
            name: name.to_owned(),
        }
    }

    fn key(&self, identity: &str) -> String {
        format!("{}/{identity}", self.name)
    }

    async fn beat(&self, identity: &str, claim: bool, duration: Duration) -> Result<(), LeaseError> {
        let body = json!({"items": [{
            "key": self.key(identity),
            "columns": {
                "lease": self.name,
                "identity": identity,
                "leader": claim,
                "leaseMillis": duration.as_millis() as u64,
            },
        }]});
        self.client
            .post(ROWS_ENDPOINT, &insert_path(&self.database, &self.table), &body)
            .await
            .map(|_| ())
            .map_err(|e| err(format!("cannot write the heartbeat row: {e}")))
    }

    /// The live rows of this lease, judged against our own row's `lastUpdatedTime`.
    async fn live(&self, identity: &str) -> Result<Live, LeaseError> {
        let path = list_path(&self.database, &self.table, MAX_ROWS);
        let page = self
            .client
            .get(ROWS_ENDPOINT, &path)
            .await
            .map_err(|e| err(format!("cannot read the heartbeat rows: {e}")))?;
        let rows: Vec<&Value> = page["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|r| r["columns"]["lease"].as_str() == Some(self.name.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        let ours = self.key(identity);
        let Some(now) = rows
            .iter()
            .find(|r| r["key"].as_str() == Some(ours.as_str()))
            .and_then(|r| r["lastUpdatedTime"].as_i64())
        else {
            return Err(err(
                "the heartbeat row just written is not in the table (or has no lastUpdatedTime)",
            ));
        };
        Ok(rows
            .iter()
            .filter_map(|r| {
                let id = r["columns"]["identity"].as_str()?;
                let updated = r["lastUpdatedTime"].as_i64()?;
                let lease = r["columns"]["leaseMillis"].as_i64().unwrap_or(15_000);
                (updated + lease >= now).then(|| {
                    (
                        id.to_owned(),
                        r["columns"]["leader"].as_bool().unwrap_or(false),
                    )
                })
            })
            .collect())
    }
}

impl LeaseBackend for RawLease {
    fn try_acquire_or_renew<'a>(
        &'a self,
        identity: &'a str,
        duration: Duration,
    ) -> BoxFuture<'a, Result<Attempt, LeaseError>> {
        Box::pin(async move {
            use std::sync::atomic::Ordering;
            let claiming = self.claiming.load(Ordering::Acquire);
            self.beat(identity, claiming, duration).await?;
            let live = self.live(identity).await?;
            let lowest_claimer = live
                .iter()
                .filter(|(id, claims)| *claims && id != identity)
                .map(|(id, _)| id)
                .min();
            if claiming {
                return Ok(match lowest_claimer {
                    Some(other) if other.as_str() < identity => {
                        self.claiming.store(false, Ordering::Release);
                        // Withdraw the claim now, so the other need not wait for it to age.
                        let _ = self.beat(identity, false, duration).await;
                        Attempt::HeldBy(Some(other.clone()))
                    }
                    _ => Attempt::Held { previous: None },
                });
            }
            if let Some(other) = lowest_claimer {
                return Ok(Attempt::HeldBy(Some(other.clone())));
            }
            let lowest = live.iter().map(|(id, _)| id.as_str()).min();
            if lowest.is_some_and(|l| l < identity) {
                // A live replica with a lower identity claims first.
                return Ok(Attempt::HeldBy(None));
            }
            self.beat(identity, true, duration).await?;
            self.claiming.store(true, Ordering::Release);
            Ok(Attempt::Held { previous: None })
        })
    }

    fn release<'a>(&'a self, identity: &'a str) -> BoxFuture<'a, Result<(), LeaseError>> {
        Box::pin(async move {
            self.claiming
                .store(false, std::sync::atomic::Ordering::Release);
            let (endpoint, path) = delete_path(&self.database, &self.table);
            self.client
                .post(
                    endpoint,
                    &path,
                    &json!({"items": [{"key": self.key(identity)}]}),
                )
                .await
                .map(|_| ())
                .map_err(|e| err(format!("cannot delete the heartbeat row: {e}")))
        })
    }

    fn describe(&self) -> String {
        format!("RAW table {}/{}", self.database, self.table)
    }
}
