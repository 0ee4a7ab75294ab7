//! Rebuilding a projection beside the live one, then swapping it in atomically.
//!
//! `helpdesk replay` must not leave readers looking at half-built tables while the service
//! keeps serving, so a rebuild never touches the live tables until it is complete:
//!
//! 1. **Shadow tables.** On a connection of its own, the rebuild creates *temporary*
//!    tables with the names and the exact definitions (columns, keys, indexes) of the
//!    projection's tables and of `projection_checkpoints`. Temporary tables come first in
//!    name lookup on both PostgreSQL (`pg_temp`) and SQLite (`temp`), so the projection's
//!    own code, unchanged, writes into the shadow copies on that connection, while every
//!    other connection keeps reading and writing the live ones. The log itself is not
//!    shadowed: events are read from the real `events` table.
//! 2. **Catch-up.** The ordinary runner code ([`runner::catch_up`]) applies the whole log
//!    from the start into the shadow tables, in batches with progress.
//! 3. **Swap**, in one transaction on the same connection: lock the live checkpoint row
//!    (the live runner's guarded update now waits), apply the events that arrived since the
//!    catch-up into the shadow, replace the live rows by the shadow rows, and move the live
//!    checkpoint to the shadow's. Readers see the old rows until the commit and the new
//!    ones after it; the live runner finds its checkpoint moved, reloads it and carries on
//!    from there, so no event is lost or applied twice.
//!
//! An interrupted rebuild leaves nothing behind: temporary tables vanish with their
//! connection, and the live tables were never touched. Running it again restarts cleanly.
//! If the connection were replaced mid-rebuild (the temporary tables gone), the batches'
//! guarded checkpoint update would find the live checkpoint instead of the shadow's and
//! stop, and the swap would fail on the missing shadow tables: a broken rebuild cannot
//! write into the live tables.
//!
//! A projection that owns no tables (the outbox: its jobs are delivery records, and its
//! inserts are idempotent) only has its checkpoint shadowed.

use std::time::Duration;

use crate::db::{Backend, Database, DbError, Tx};
use crate::event_log::{self, Checkpoint, StoredEvent};
use crate::on_backend;
use crate::runner::{self, Projection, BATCH_SIZE};

/// What a finished rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    /// Where the swapped-in tables stand in the log.
    pub checkpoint: Checkpoint,
    /// Events applied during the catch-up and the swap.
    pub applied: usize,
    /// How long the swap transaction held the live checkpoint.
    pub swap: Duration,
}

/// Rebuilds `projection` from the start of the log into shadow tables and swaps them in;
/// `progress` receives the number of events each batch read.
pub async fn rebuild(
    db: &Database,
    projection: &dyn Projection,
    mut progress: impl FnMut(usize),
) -> Result<Rebuilt, DbError> {
    // The live row must exist for the swap to lock it.
    runner::load_checkpoint(db, projection.name()).await?;
    let shadow = db.single_connection().await?;
    let result = async {
        let live_schema = create_shadow_tables(&shadow, projection).await?;
        let mut applied = 0usize;
        runner::catch_up(&shadow, projection, |read, batch_applied| {
            applied += batch_applied;
            progress(read);
        })
        .await?;
        let started = std::time::Instant::now();
        let tail = swap(&shadow, projection, &live_schema).await?;
        progress(tail.read);
        Ok(Rebuilt {
            checkpoint: tail.checkpoint,
            applied: applied + tail.applied,
            swap: started.elapsed(),
        })
    }
    .await;
    shadow.close().await;
    result
}

/// Rebuilds each of `projections` as [`rebuild`] does, `at_once` of them at a time (each on
/// its connection, each swapped in as soon as it is complete), so the database's work for
/// one overlaps the helpdesk's folding for another. `progress` receives the projection's
/// name and the events each batch read. Returns every projection's outcome in the order
/// given; a failed rebuild does not stop the others (its live tables stay as they were).
pub async fn rebuild_all(
    db: &Database,
    projections: &[std::sync::Arc<dyn Projection>],
    at_once: usize,
    progress: impl Fn(&'static str, usize) + Sync,
) -> Vec<(&'static str, Result<Rebuilt, DbError>)> {
    use futures::StreamExt;
    let progress = &progress;
    futures::stream::iter(projections.iter())
        .map(|projection| async move {
            let name = projection.name();
            (
                name,
                rebuild(db, projection.as_ref(), |read| progress(name, read)).await,
            )
        })
        .buffered(at_once.max(1))
        .collect()
        .await
}

/// Empty copies of a projection's tables on a connection of their own, filled by the
/// projection's own code from chosen events: what the read model *would* hold after just
/// those events. Time travel (`ticketAsOf`) reads a past state this way, so it can never
/// disagree with what the live projection showed. Nothing reaches the live tables; the
/// copies vanish with [`Scratch::close`] (or when the connection drops).
#[derive(Debug)]
pub struct Scratch {
    db: Database,
}

impl Scratch {
    /// Opens the connection and creates the empty copies of `projection`'s tables.
    pub async fn new(db: &Database, projection: &dyn Projection) -> Result<Self, DbError> {
        let scratch = db.single_connection().await?;
        if let Err(error) = create_shadow_tables(&scratch, projection).await {
            scratch.close().await;
            return Err(error);
        }
        Ok(Self { db: scratch })
    }

    /// Applies `events` (those the projection consumes) in one transaction.
    pub async fn apply(
        &self,
        projection: &dyn Projection,
        events: &[StoredEvent],
    ) -> Result<(), DbError> {
        let consumed: Vec<&StoredEvent> = events
            .iter()
            .filter(|e| projection.consumes(&e.aggregate_type))
            .collect();
        let mut tx = self.db.begin().await?;
        projection.apply_batch(&mut tx, &consumed).await?;
        tx.commit().await
    }

    /// The connection, for the read model's ordinary queries (they find the copies).
    pub fn db(&self) -> &Database {
        &self.db
    }

    /// Drops the copies with their connection.
    pub async fn close(self) {
        self.db.close().await;
    }
}

/// The schema holding the live tables (PostgreSQL: the first of the search path; SQLite:
/// `main`), after creating the shadow copies.
async fn create_shadow_tables(
    shadow: &Database,
    projection: &dyn Projection,
) -> Result<String, DbError> {
    let tables = shadowed_tables(projection);
    match shadow {
        Backend::Postgres(pool) => {
            let schema: String = sqlx::query_scalar("SELECT current_schema()")
                .fetch_one(pool)
                .await?;
            for table in &tables {
                sqlx::query(&format!(
                    "CREATE TEMPORARY TABLE {table} (LIKE {schema}.{table} INCLUDING ALL)"
                ))
                .execute(pool)
                .await?;
            }
            Ok(schema)
        }
        Backend::Sqlite(pool) => {
            for table in &tables {
                let definitions: Vec<(String, String)> = sqlx::query_as(
                    "SELECT type, sql FROM main.sqlite_master
                      WHERE tbl_name = $1 AND sql IS NOT NULL AND type IN ('table', 'index')
                      ORDER BY type = 'index', name",
                )
                .bind(table)
                .fetch_all(pool)
                .await?;
                if definitions.is_empty() {
                    return Err(DbError::Corrupt(format!("no table {table} to shadow")));
                }
                for (kind, sql) in definitions {
                    sqlx::query(&temporary_definition(&kind, &sql)?)
                        .execute(pool)
                        .await?;
                }
            }
            Ok("main".into())
        }
    }
}

/// The projection's tables and its checkpoint table.
fn shadowed_tables(projection: &dyn Projection) -> Vec<&'static str> {
    let mut tables = projection.tables().to_vec();
    tables.push("projection_checkpoints");
    tables
}

/// Rewrites a SQLite `CREATE TABLE` / `CREATE [UNIQUE] INDEX` statement to create the
/// same object in the `temp` schema.
fn temporary_definition(kind: &str, sql: &str) -> Result<String, DbError> {
    let rewritten = match kind {
        "table" => sql
            .strip_prefix("CREATE TABLE ")
            .map(|rest| format!("CREATE TEMP TABLE {rest}")),
        _ => sql
            .strip_prefix("CREATE UNIQUE INDEX ")
            .map(|rest| format!("CREATE UNIQUE INDEX temp.{rest}"))
            .or_else(|| {
                sql.strip_prefix("CREATE INDEX ")
                    .map(|rest| format!("CREATE INDEX temp.{rest}"))
            }),
    };
    rewritten.ok_or_else(|| DbError::Corrupt(format!("cannot shadow this definition: {sql}")))
}

/// What the swap's last catch-up did.
struct Tail {
    checkpoint: Checkpoint,
    read: usize,
    applied: usize,
}

/// Step 3: finishes the shadow under the live checkpoint's lock and replaces the live rows.
async fn swap(shadow: &Database, projection: &dyn Projection, live: &str) -> Result<Tail, DbError> {
    let name = projection.name();
    let temp = match shadow {
        Backend::Sqlite(_) => "temp",
        Backend::Postgres(_) => "pg_temp",
    };
    let mut tx = shadow.begin().await?;
    // SQLite: a write first, so the transaction holds the database's write lock from here.
    let lock = match &tx {
        Backend::Sqlite(_) => {
            format!("UPDATE {live}.projection_checkpoints SET name = name WHERE name = $1")
        }
        Backend::Postgres(_) => {
            format!("SELECT name FROM {live}.projection_checkpoints WHERE name = $1 FOR UPDATE")
        }
    };
    on_backend!(&mut tx, |t| {
        sqlx::query(&lock).bind(name).execute(&mut **t).await?;
    });
    let live_checkpoint = read_checkpoint_in(&mut tx, live, name).await?;
    let mut cursor = read_checkpoint_in(&mut tx, temp, name).await?;
    let mut applied = 0;
    let mut read = 0;
    loop {
        let events = event_log::read_after_in(&mut tx, cursor, BATCH_SIZE).await?;
        let Some(last) = events.last() else { break };
        cursor = last.checkpoint;
        read += events.len();
        let consumed: Vec<&StoredEvent> = events
            .iter()
            .filter(|e| projection.consumes(&e.aggregate_type))
            .collect();
        projection.apply_batch(&mut tx, &consumed).await?;
        applied += consumed.len();
    }
    if cursor < live_checkpoint {
        // Everything the live runner applied was committed before this transaction read
        // the log, so the shadow has seen it; anything else is a bug worth stopping for.
        return Err(DbError::Corrupt(format!(
            "rebuild of {name} reached {cursor:?}, behind the live {live_checkpoint:?}"
        )));
    }
    on_backend!(&mut tx, |t| {
        for table in projection.tables() {
            sqlx::query(&format!("DELETE FROM {live}.{table}"))
                .execute(&mut **t)
                .await?;
            sqlx::query(&format!(
                "INSERT INTO {live}.{table} SELECT * FROM {temp}.{table}"
            ))
            .execute(&mut **t)
            .await?;
        }
        sqlx::query(&format!(
            "UPDATE {live}.projection_checkpoints SET tx_id = $1, position = $2, updated_at = $3
              WHERE name = $4"
        ))
        .bind(cursor.tx_id)
        .bind(cursor.position)
        .bind(chrono::Utc::now().to_rfc3339())
        .bind(name)
        .execute(&mut **t)
        .await?;
    });
    tx.commit().await?;
    Ok(Tail {
        checkpoint: cursor,
        read,
        applied,
    })
}

async fn read_checkpoint_in(tx: &mut Tx, schema: &str, name: &str) -> Result<Checkpoint, DbError> {
    let (tx_id, position): (i64, i64) = on_backend!(tx, |t| sqlx::query_as(&format!(
        "SELECT tx_id, position FROM {schema}.projection_checkpoints WHERE name = $1"
    ))
    .bind(name)
    .fetch_one(&mut **t)
    .await?);
    Ok(Checkpoint { tx_id, position })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_definitions_move_to_the_temp_schema() {
        assert_eq!(
            temporary_definition("table", "CREATE TABLE tickets (id text PRIMARY KEY) STRICT")
                .unwrap(),
            "CREATE TEMP TABLE tickets (id text PRIMARY KEY) STRICT"
        );
        assert_eq!(
            temporary_definition("index", "CREATE INDEX tickets_by_org ON tickets (org)").unwrap(),
            "CREATE INDEX temp.tickets_by_org ON tickets (org)"
        );
        assert_eq!(
            temporary_definition("index", "CREATE UNIQUE INDEX u ON t (a, b)").unwrap(),
            "CREATE UNIQUE INDEX temp.u ON t (a, b)"
        );
        assert!(temporary_definition("index", "create index x on t (a)").is_err());
    }
}
