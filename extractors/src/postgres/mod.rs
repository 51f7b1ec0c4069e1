//! `type: postgres`: query a PostgreSQL database.
//!
//! Each run connects, prepares `query`, and reads its rows through a cursor (a portal in a
//! read-only transaction), `batch-size` rows at a time, so a large table never sits in memory.
//! Each row becomes a record (an object of its columns as JSON) for the `destination`.
//!
//! With `incremental-field`, `$1` is the high watermark (from the state store, else
//! `initial-value`), and the query must order by that field. After each batch the queues are
//! flushed and the watermark moves to the last row whose value group is complete: rows that
//! share the batch's last value are held back until a row with a higher value (or the end)
//! shows the group is whole. So a run that stops anywhere (database down, CDF down, shutdown)
//! neither skips rows that share a value nor queues a row twice; the next run resumes at the
//! watermark. A value shared by more than `HOLD_LIMIT` rows is queued as it comes (memory stays
//! bounded) and the watermark waits before it until the group ends.

pub mod config;
#[cfg(test)]
mod tests;
mod types;

use std::str::FromStr;

use extractor_runtime::{Extractor, Rejection, RunContext, TaskError};
use serde_json::Value;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_util::task::AbortOnDropHandle;

use crate::destination::Destination;
pub use config::PostgresConfig;
use extractor_runtime::upload::Refusals;

/// Rows of one watermark value held back at most (see [`Postgres`]); past it they are queued
/// and the watermark waits for the group's end.
const HOLD_LIMIT: usize = 50_000;

/// The `postgres` extractor.
pub struct Postgres {
    config: PostgresConfig,
    connect: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
    destination: Destination,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // tokio_postgres::Config's Debug redacts the password; so does Secret.
        f.debug_struct("Postgres")
            .field("config", &self.config)
            .field("connect", &self.connect)
            .finish_non_exhaustive()
    }
}

impl Postgres {
    /// Checks the config (no connection is made).
    pub fn new(config: PostgresConfig) -> Result<Self, Rejection> {
        let mut problems = Rejection::new();
        let connect =
            match tokio_postgres::Config::from_str(config.connection_string.expose_secret()) {
                Ok(mut c) => {
                    c.connect_timeout(config.connect_timeout.get());
                    if c.get_hosts().is_empty() {
                        problems.push("connection-string", "names no host (add `host=...`)");
                    }
                    if c.get_ssl_mode() != tokio_postgres::config::SslMode::Require
                        && config.tls.is_some()
                    {
                        problems.push(
                            "tls",
                            "applies with `sslmode=require` in the connection string only",
                        );
                    }
                    Some(c)
                }
                Err(e) => {
                    // The parser's message names the problem, never the text (it may hold a password).
                    let detail =
                        std::error::Error::source(&e).map_or(String::new(), |s| format!(": {s}"));
                    problems.push("connection-string", format!("cannot be read: {e}{detail}"));
                    None
                }
            };
        let has_param = config.query.contains("$1");
        let normalized = config
            .query
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_ascii_lowercase();
        match (&config.incremental_field, has_param) {
            (Some(field), true) => {
                if !normalized.contains("order by") {
                    problems.push("query", format!("must ORDER BY `{field}`: the watermark is the last row's `{field}`"));
                }
                if config.initial_value.is_none() {
                    problems.push("", "`incremental-field` needs `initial-value`, the `$1` of the first run (0, or a time like 2020-01-01T00:00:00Z)");
                }
            }
            (Some(field), false) => problems.push(
                "query",
                format!("has no `$1`: with `incremental-field` it must compare `{field}` with it (`WHERE {field} > $1 ORDER BY {field}`)"),
            ),
            (None, true) => problems.push("", "the query uses `$1`; name the `incremental-field` it is the watermark of"),
            (None, false) => {
                if config.initial_value.is_some() {
                    problems.push("initial-value", "applies only with `incremental-field`");
                }
            }
        }
        if config.query.contains("$2") {
            problems.push("query", "only `$1` (the watermark) can be bound");
        }
        if config.batch_size == 0 || config.batch_size > i32::MAX as u32 {
            problems.push("batch-size", "must be at least 1");
        }
        let tls = match &connect {
            Some(c) if c.get_ssl_mode() == tokio_postgres::config::SslMode::Require => {
                match tls_connector(&config) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        let at = if config.tls.is_some() {
                            "tls.ca-file"
                        } else {
                            "connection-string"
                        };
                        problems.push(at, e);
                        None
                    }
                }
            }
            _ => None,
        };
        let destination = Destination::new(&config.destination)
            .map_err(|r| problems.extend_under("destination", r))
            .ok();
        match (connect, destination) {
            (Some(connect), Some(destination)) if problems.is_empty() => Ok(Postgres {
                config,
                connect,
                tls,
                destination,
            }),
            _ => Err(problems),
        }
    }

    async fn extract(&self, ctx: &RunContext) -> Result<(u64, u64), TaskError> {
        let upload = self.destination.upload(ctx);
        let mut refused = Refusals::default();
        let since = match &self.config.incremental_field {
            Some(_) => upload
                .resume::<Value>("")?
                .or_else(|| self.config.initial_value.clone()),
            None => None,
        };

        let db = |e: tokio_postgres::Error| database_error(&e);
        let (mut client, _stop) = match &self.tls {
            Some(tls) => connect(&self.connect, tls.clone(), ctx.task()).await,
            None => connect(&self.connect, NoTls, ctx.task()).await,
        }
        .map_err(db)?;

        let statement = client.prepare(&self.config.query).await.map_err(db)?;
        let unreadable: Vec<String> = statement
            .columns()
            .iter()
            .filter(|c| !types::readable(c.type_()))
            .map(|c| format!("`{}` ({})", c.name(), c.type_()))
            .collect();
        if !unreadable.is_empty() {
            return Err(TaskError::permanent(format!(
                "the query returns columns of types the postgres extractor does not read: {}; cast them to text in the query (`col::text`)",
                unreadable.join(", ")
            )));
        }
        let field_index = match &self.config.incremental_field {
            Some(f) => Some(
                statement
                    .columns()
                    .iter()
                    .position(|c| c.name() == f)
                    .ok_or_else(|| {
                        TaskError::permanent(format!(
                            "`incremental-field: {f}` is not a column of the query's result"
                        ))
                    })?,
            ),
            None => None,
        };
        let params: Vec<Box<dyn ToSql + Sync + Send>> = match (statement.params(), &since) {
            ([], _) => Vec::new(),
            ([ty], Some(since)) => vec![types::param(since, ty).map_err(TaskError::permanent)?],
            _ => {
                return Err(TaskError::permanent(
                    "the query has parameters other than `$1`",
                ));
            }
        };
        let params: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();

        let tx = client
            .build_transaction()
            .read_only(true)
            .start()
            .await
            .map_err(db)?;
        let portal = tx.bind(&statement, &params).await.map_err(db)?;
        let batch = self.config.batch_size as i32;
        // Rows read but not queued yet: the trailing group of equal watermarks.
        let mut held: Vec<(Value, Value)> = Vec::new();
        let (mut rows, mut batches) = (0u64, 0u64);
        loop {
            let fetched = tx.query_portal(&portal, batch).await.map_err(db)?;
            let end = fetched.len() < batch as usize;
            for row in &fetched {
                let mut object = serde_json::Map::with_capacity(row.len());
                for (i, column) in row.columns().iter().enumerate() {
                    let types::JsonValue(v) = row.try_get(i).map_err(|e| {
                        TaskError::permanent(format!("column `{}`: {e}", column.name()))
                    })?;
                    object.insert(column.name().to_owned(), v);
                }
                let mark = field_index.map_or(Value::Null, |i| {
                    object
                        .get(statement.columns()[i].name())
                        .cloned()
                        .unwrap_or(Value::Null)
                });
                held.push((mark, Value::Object(object)));
            }
            rows += fetched.len() as u64;
            batches += 1;
            // Queue every row but the trailing group (unless the query is done).
            let mut keep = match (end, field_index, held.last()) {
                (false, Some(_), Some((last, _))) => {
                    held.iter().rev().take_while(|(m, _)| m == last).count()
                }
                _ => 0,
            };
            // One value over very many rows: queue them to bound memory, but leave the
            // watermark before the group until it is whole (a stop re-reads the group).
            let open_group =
                keep > 0 && keep == held.len() && keep >= HOLD_LIMIT.max(batch as usize);
            if open_group {
                keep = 0;
            }
            let ready: Vec<(Value, Value)> = held.drain(..held.len() - keep).collect();
            let mut mark = None;
            for (m, record) in ready {
                self.destination.send(ctx, &upload, record).await?;
                mark = Some(m);
            }
            if open_group {
                mark = None;
            }
            if let (Some(m), Some(_)) = (mark, field_index) {
                if m.is_null() {
                    return Err(TaskError::permanent(format!(
                        "`{}` is NULL in a row: it cannot be a watermark",
                        self.config.incremental_field.as_deref().unwrap_or_default()
                    )));
                }
                upload.checkpoint("", &m);
            }
            refused.merge(upload.deliver().await?);
            if end {
                break;
            }
            if ctx.is_cancelled() {
                return Err(TaskError::transient(format!("cancelled after {rows} rows")));
            }
        }
        tx.commit().await.map_err(db)?;
        match upload.refused_error(&refused) {
            Some(e) => Err(e),
            None => Ok((rows, batches)),
        }
    }
}

/// Connects, and drives the connection on a task that ends with the returned guard.
async fn connect<T>(
    config: &tokio_postgres::Config,
    tls: T,
    task: &str,
) -> Result<(tokio_postgres::Client, AbortOnDropHandle<()>), tokio_postgres::Error>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let (client, connection) = config.connect(tls).await?;
    let task = task.to_owned();
    let connection = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(task = %task, "the database connection ended: {e}");
        }
    });
    Ok((client, AbortOnDropHandle::new(connection)))
}

/// TLS for `sslmode=require`: the server's certificate is verified against `ca-file`, or the
/// system's roots.
fn tls_connector(config: &PostgresConfig) -> Result<MakeRustlsConnect, String> {
    let tls = crate::tls::ClientTls {
        ca_file: config.tls.as_ref().and_then(|t| t.ca_file.clone()),
        ..crate::tls::ClientTls::default()
    };
    Ok(MakeRustlsConnect::new(tls.client_config()?))
}

/// SQL errors (a bad query, a missing table, no permission) are permanent; connection problems
/// are transient.
fn database_error(e: &tokio_postgres::Error) -> TaskError {
    match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            let message = format!("PostgreSQL error {code}: {}", db.message());
            // Class 08 (connection), 40 (rollback: serialization, deadlock), 53 (resources),
            // 57 (operator intervention: shutdown, cancel) can pass.
            if ["08", "40", "53", "57"].iter().any(|c| code.starts_with(c)) {
                TaskError::transient(message)
            } else {
                TaskError::permanent(message)
            }
        }
        None => {
            let mut message = format!("PostgreSQL: {e}");
            if let Some(source) = std::error::Error::source(e) {
                message.push_str(&format!(": {source}"));
            }
            TaskError::transient(message)
        }
    }
}

impl Extractor for Postgres {
    async fn run(&self, ctx: RunContext) -> Result<(), TaskError> {
        let (rows, batches) = self.extract(&ctx).await?;
        tracing::info!(task = %ctx.task(), rows, batches, "postgres run done");
        Ok(())
    }
}
