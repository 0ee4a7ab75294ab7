//! The event log in its global commit order.
//!
//! A [`Checkpoint`] is a place in that order: `(tx_id, position)`. On SQLite `tx_id` is
//! always 0 and `position` alone orders the log (single writer: insert order is commit
//! order). On PostgreSQL rows are ordered by the writing transaction's id and then by
//! position, and only rows whose transaction precedes every still-running one are read
//! (brief rule 5), so a reader never sees an event before an earlier-committed one.

use chrono::{DateTime, Utc};
use domain::metadata::EventMetadata;
use serde_json::Value;
use sqlx::Row;
use std::collections::HashMap;

use crate::db::{Backend, Database, DbError};

/// A place in the global order of the log; events at or before it have been seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Checkpoint {
    /// The writing transaction (PostgreSQL xid8), 0 on SQLite.
    pub tx_id: i64,
    /// The event's position in the log.
    pub position: i64,
}

impl Checkpoint {
    /// The start of the log: nothing seen yet.
    pub const START: Checkpoint = Checkpoint {
        tx_id: 0,
        position: 0,
    };
}

/// One event as stored in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Where it stands in the global order.
    pub checkpoint: Checkpoint,
    /// `Ticket`, `Division`, ...
    pub aggregate_type: String,
    /// The aggregate instance.
    pub aggregate_id: String,
    /// 1-based number of the event within its aggregate.
    pub sequence: i64,
    /// `TicketCreated`, ...
    pub event_type: String,
    /// Version of the payload's shape.
    pub event_version: String,
    /// The serialized domain event (`{"TicketCreated": {...}}`).
    pub payload: Value,
    /// Organization, actor, time and ids.
    pub metadata: EventMetadata,
}

impl StoredEvent {
    /// The global position.
    pub fn position(&self) -> i64 {
        self.checkpoint.position
    }

    /// When the command that produced it was accepted.
    pub fn occurred_at(&self) -> DateTime<Utc> {
        self.metadata.occurred_at
    }

    /// Decodes the payload as the domain event type `E`.
    pub fn decode<E: serde::de::DeserializeOwned>(&self) -> Result<E, DbError> {
        serde_json::from_value(self.payload.clone()).map_err(|e| {
            DbError::Corrupt(format!(
                "event at position {} ({}): {e}",
                self.position(),
                self.event_type
            ))
        })
    }
}

const SQLITE_READ: &str = "
SELECT position, 0 AS tx, aggregate_type, aggregate_id, sequence, event_type, event_version,
       payload, metadata
  FROM events
 WHERE position > $2 AND $1 >= 0
 ORDER BY position
 LIMIT $3";

/// The fence: the oldest transaction that was still running when this statement's snapshot
/// was taken and that may write to this database (`xmax` when there is none). Rows of older
/// transactions are final. Transaction ids are cluster-wide, so a plain
/// `pg_snapshot_xmin` would also wait for transactions of *other databases* on the same
/// server; those are left out — but only when `pg_stat_activity` positively shows them in
/// another database (an id it does not show, or shows without a database, still holds the
/// fence, so a race with the statistics view can only delay, never reorder).
const POSTGRES_READ: &str = "
WITH snapshot AS (SELECT pg_current_snapshot() AS s),
elsewhere AS (
    SELECT backend_xid::text AS xid FROM pg_stat_activity
     WHERE backend_xid IS NOT NULL AND datname IS NOT NULL AND datname <> current_database()
),
fence AS (
    SELECT COALESCE(MIN(running), (SELECT pg_snapshot_xmax(s) FROM snapshot)) AS tx
      FROM snapshot, pg_snapshot_xip(snapshot.s) AS running
     WHERE (running::text::bigint % 4294967296)::text NOT IN (SELECT xid FROM elsewhere)
)
SELECT position, tx_id::text::bigint AS tx, aggregate_type, aggregate_id, sequence, event_type,
       event_version, payload::text AS payload, metadata::text AS metadata
  FROM events, fence
 WHERE (tx_id, position) > ($1::text::xid8, $2)
   AND tx_id < fence.tx
 ORDER BY tx_id, position
 LIMIT $3";

/// Reads up to `limit` events after `after`, in global commit order.
pub async fn read_after(
    db: &Database,
    after: Checkpoint,
    limit: i64,
) -> Result<Vec<StoredEvent>, DbError> {
    let rows = match db {
        Backend::Sqlite(pool) => sqlx::query(SQLITE_READ)
            .bind(after.tx_id)
            .bind(after.position)
            .bind(limit)
            .fetch_all(pool)
            .await?
            .iter()
            .map(decode_row)
            .collect::<Result<Vec<_>, _>>()?,
        Backend::Postgres(pool) => sqlx::query(POSTGRES_READ)
            .bind(after.tx_id.to_string())
            .bind(after.position)
            .bind(limit)
            .fetch_all(pool)
            .await?
            .iter()
            .map(decode_row)
            .collect::<Result<Vec<_>, _>>()?,
    };
    Ok(rows)
}

/// The place of the newest event of one aggregate: once a projection has passed it, every
/// event of that aggregate written so far is reflected. `None` if it has no events.
pub async fn aggregate_head(
    db: &Database,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Option<Checkpoint>, DbError> {
    let head = match db {
        Backend::Sqlite(pool) => sqlx::query(
            "SELECT 0 AS tx, position FROM events
              WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence DESC LIMIT 1",
        )
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_optional(pool)
        .await?
        .map(|row| checkpoint_of(&row)),
        Backend::Postgres(pool) => sqlx::query(
            "SELECT tx_id::text::bigint AS tx, position FROM events
              WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence DESC LIMIT 1",
        )
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_optional(pool)
        .await?
        .map(|row| checkpoint_of(&row)),
    };
    head.transpose()
}

/// The place of the newest committed event of the whole log.
pub async fn log_head(db: &Database) -> Result<Checkpoint, DbError> {
    let head = match db {
        Backend::Sqlite(pool) => sqlx::query(
            "SELECT 0 AS tx, position FROM events WHERE position IS NOT NULL
              ORDER BY position DESC LIMIT 1",
        )
        .fetch_optional(pool)
        .await?
        .map(|row| checkpoint_of(&row)),
        Backend::Postgres(pool) => sqlx::query(
            "SELECT tx_id::text::bigint AS tx, position FROM events
              ORDER BY tx_id DESC, position DESC LIMIT 1",
        )
        .fetch_optional(pool)
        .await?
        .map(|row| checkpoint_of(&row)),
    };
    Ok(head.transpose()?.unwrap_or(Checkpoint::START))
}

fn checkpoint_of<R: Row>(row: &R) -> Result<Checkpoint, DbError>
where
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
{
    Ok(Checkpoint {
        tx_id: row.try_get("tx")?,
        position: row.try_get("position")?,
    })
}

fn decode_row<R: Row>(row: &R) -> Result<StoredEvent, DbError>
where
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
{
    let position: i64 = row.try_get("position")?;
    let payload: String = row.try_get("payload")?;
    let metadata: String = row.try_get("metadata")?;
    let corrupt = |what: &str, e: &dyn std::fmt::Display| {
        DbError::Corrupt(format!("event at position {position}: {what}: {e}"))
    };
    let metadata_map: HashMap<String, String> =
        serde_json::from_str(&metadata).map_err(|e| corrupt("metadata", &e))?;
    let metadata = EventMetadata::from_map(&metadata_map)
        .ok_or_else(|| corrupt("metadata", &"missing organization, actor or time"))?;
    Ok(StoredEvent {
        checkpoint: Checkpoint {
            tx_id: row.try_get("tx")?,
            position,
        },
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
        event_type: row.try_get("event_type")?,
        event_version: row.try_get("event_version")?,
        payload: serde_json::from_str(&payload).map_err(|e| corrupt("payload", &e))?,
        metadata,
    })
}

/// How many committed events lie after `after`, counting at most `cap` (cheap on a long
/// backlog). Used by `/readyz` and `/metrics`.
pub async fn count_after(db: &Database, after: Checkpoint, cap: i64) -> Result<i64, DbError> {
    let count = match db {
        Backend::Sqlite(pool) => sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT 1 FROM events WHERE position > $1 LIMIT $2) AS behind",
        )
        .bind(after.position)
        .bind(cap)
        .fetch_one(pool)
        .await?,
        Backend::Postgres(pool) => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM (SELECT 1 FROM events
                  WHERE (tx_id, position) > ($1::text::xid8, $2)
                  LIMIT $3) AS behind",
            )
            .bind(after.tx_id.to_string())
            .bind(after.position)
            .bind(cap)
            .fetch_one(pool)
            .await?
        }
    };
    Ok(count)
}
