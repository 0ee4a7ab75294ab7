//! The event log in its global commit order.
//!
//! A [`Checkpoint`] is a place in that order: `(tx_id, position)`. On SQLite `tx_id` is
//! always 0 and `position` alone orders the log (single writer: insert order is commit
//! order). On PostgreSQL rows are ordered by the writing transaction's id and then by
//! position, and only rows whose transaction precedes every still-running one are read
//! (brief rule 5), so a reader never sees an event before an earlier-committed one.

use chrono::{DateTime, Utc};
use domain::metadata::EventMetadata;
use serde_json::value::RawValue;
use serde_json::Value;
use sqlx::Row;

use crate::db::{Backend, Bind, Database, DbError, Statement};
use crate::{bind_all, on_backend};

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
#[derive(Debug, Clone)]
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
    /// The serialized domain event (`{"TicketCreated": {...}}`), as stored: the JSON text
    /// is parsed only by whoever reads it (a projection into its event type, in one step).
    pub payload: Box<RawValue>,
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

    /// The payload as stored, parsed into a JSON value (not upcast).
    pub fn value(&self) -> Result<Value, DbError> {
        serde_json::from_str(self.payload.get()).map_err(|e| {
            DbError::Corrupt(format!(
                "event at position {}: payload: {e}",
                self.position()
            ))
        })
    }

    /// Decodes the payload as the domain event type `E`, lifted to today's shape first
    /// (`domain::upcast`). The stored payload itself stays as written: the audit chain
    /// hashes that.
    pub fn decode<E: serde::de::DeserializeOwned>(&self) -> Result<E, DbError> {
        // Nearly every stored event is already in today's shape: parse its text straight
        // into the event type, without a JSON value in between.
        let decoded = if self.event_version == domain::upcast::current_version(&self.event_type) {
            serde_json::from_str(self.payload.get())
        } else {
            let current =
                domain::upcast::upcast(&self.event_type, &self.event_version, self.value()?)
                    .map_err(|e| {
                        DbError::Corrupt(format!("event at position {}: {e}", self.position()))
                    })?;
            serde_json::from_value(current)
        };
        decoded.map_err(|e| {
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
macro_rules! postgres_fence {
    () => {
        "WITH snapshot AS (SELECT pg_current_snapshot() AS s),
elsewhere AS (
    SELECT backend_xid::text AS xid FROM pg_stat_activity
     WHERE backend_xid IS NOT NULL AND datname IS NOT NULL AND datname <> current_database()
),
fence AS (
    SELECT COALESCE(MIN(running), (SELECT pg_snapshot_xmax(s) FROM snapshot)) AS tx
      FROM snapshot, pg_snapshot_xip(snapshot.s) AS running
     WHERE (running::text::bigint % 4294967296)::text NOT IN (SELECT xid FROM elsewhere)
)
"
    };
}

const POSTGRES_READ: &str = concat!(
    postgres_fence!(),
    "SELECT position, tx_id::text::bigint AS tx, aggregate_type, aggregate_id, sequence, event_type,
       event_version, payload::text AS payload, metadata::text AS metadata
  FROM events, fence
 WHERE (tx_id, position) > ($1::text::xid8, $2)
   AND tx_id < fence.tx
 ORDER BY tx_id, position
 LIMIT $3"
);

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

/// One stretch of the log as a projection reads it: every event in order is passed over,
/// but only those of the wanted aggregate types come with their payload and metadata.
#[derive(Debug, Clone, Default)]
pub struct LogWindow {
    /// The wanted events of the stretch, decoded, in commit order.
    pub events: Vec<StoredEvent>,
    /// How many events the stretch holds, wanted or not.
    pub read: usize,
    /// The stretch's last event (wanted or not) and when it occurred: where a reader that
    /// has taken the stretch stands.
    pub last: Option<(Checkpoint, DateTime<Utc>)>,
}

/// Takes the next `limit` events after `after` in global commit order (behind the same
/// fence as [`read_after`]) and returns only those of `wanted` aggregate types (`None`:
/// all), decoded, with where the stretch ends. A projection consuming a few types passes
/// over the rest without fetching or parsing them, which is most of a rebuild's reading.
pub async fn read_window(
    db: &Database,
    after: Checkpoint,
    limit: i64,
    wanted: Option<&[&str]>,
) -> Result<LogWindow, DbError> {
    let Some(wanted) = wanted else {
        // Every event wanted: the plain ordered read costs the database less than marking
        // each row of the stretch.
        let events = read_after(db, after, limit).await?;
        return Ok(LogWindow {
            read: events.len(),
            last: events
                .last()
                .map(|last| (last.checkpoint, last.occurred_at())),
            events,
        });
    };
    // Only the wanted rows and the stretch's last row leave the database (with the
    // stretch's length): passing over costs an index step, not a row.
    const SQLITE: &str = "
WITH stretch AS (
    SELECT *, aggregate_type IN (SELECT value FROM json_each($4)) AS wanted
      FROM events
     WHERE position > $2 AND $1 >= 0
     ORDER BY position
     LIMIT $3
), marked AS (
    SELECT *, COUNT(*) OVER () AS read, ROW_NUMBER() OVER (ORDER BY position DESC) AS from_end
      FROM stretch
)
SELECT position, 0 AS tx, aggregate_type, aggregate_id, sequence, event_type, event_version,
       CASE WHEN wanted THEN payload END AS payload,
       CASE WHEN wanted THEN metadata END AS metadata,
       json_extract(metadata, '$.occurred_at') AS occurred_at, read
  FROM marked
 WHERE wanted OR from_end = 1
 ORDER BY position";
    const POSTGRES: &str = concat!(
        postgres_fence!(),
        ", stretch AS (
    SELECT events.*, aggregate_type = ANY($4::text[]) AS wanted
      FROM events, fence
     WHERE (tx_id, position) > ($1::text::xid8, $2)
       AND tx_id < fence.tx
     ORDER BY tx_id, position
     LIMIT $3
), marked AS (
    SELECT *, COUNT(*) OVER () AS read,
           ROW_NUMBER() OVER (ORDER BY tx_id DESC, position DESC) AS from_end
      FROM stretch
)
SELECT position, tx_id::text::bigint AS tx, aggregate_type, aggregate_id, sequence,
       event_type, event_version,
       CASE WHEN wanted THEN payload::text END AS payload,
       CASE WHEN wanted THEN metadata::text END AS metadata,
       metadata->>'occurred_at' AS occurred_at, read
  FROM marked
 WHERE wanted OR from_end = 1
 ORDER BY tx_id, position"
    );
    let rows: Vec<WindowRow> = match db {
        Backend::Sqlite(pool) => {
            let wanted = serde_json::json!(wanted).to_string();
            sqlx::query(SQLITE)
                .bind(after.tx_id)
                .bind(after.position)
                .bind(limit)
                .bind(wanted)
                .fetch_all(pool)
                .await?
                .iter()
                .map(window_row)
                .collect::<Result<_, _>>()?
        }
        Backend::Postgres(pool) => sqlx::query(POSTGRES)
            .bind(after.tx_id.to_string())
            .bind(after.position)
            .bind(limit)
            .bind(wanted.iter().map(|t| t.to_string()).collect::<Vec<_>>())
            .fetch_all(pool)
            .await?
            .iter()
            .map(window_row)
            .collect::<Result<_, _>>()?,
    };
    let mut window = LogWindow {
        read: rows.first().map_or(0, |row| row.read),
        ..LogWindow::default()
    };
    for row in rows {
        let checkpoint = row.raw.checkpoint;
        let occurred_at = DateTime::parse_from_rfc3339(&row.occurred_at)
            .map_err(|e| {
                DbError::Corrupt(format!(
                    "event at position {}: metadata: occurred_at: {e}",
                    checkpoint.position
                ))
            })?
            .with_timezone(&Utc);
        window.last = Some((checkpoint, occurred_at));
        if row.wanted {
            window.events.push(row.raw.decode()?);
        }
    }
    Ok(window)
}

/// A row of [`read_window`]: the event's JSON is empty when it was not wanted.
struct WindowRow {
    raw: RawEvent,
    wanted: bool,
    occurred_at: String,
    /// The stretch's length.
    read: usize,
}

fn window_row<R: Row>(row: &R) -> Result<WindowRow, DbError>
where
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
{
    let payload: Option<String> = row.try_get("payload")?;
    let metadata: Option<String> = row.try_get("metadata")?;
    let occurred_at: Option<String> = row.try_get("occurred_at")?;
    let checkpoint = checkpoint_of(row)?;
    let read: i64 = row.try_get("read")?;
    let occurred_at = occurred_at.ok_or_else(|| {
        DbError::Corrupt(format!(
            "event at position {}: metadata without occurred_at",
            checkpoint.position
        ))
    })?;
    Ok(WindowRow {
        wanted: payload.is_some(),
        raw: RawEvent {
            checkpoint,
            aggregate_type: row.try_get("aggregate_type")?,
            aggregate_id: row.try_get("aggregate_id")?,
            sequence: row.try_get("sequence")?,
            event_type: row.try_get("event_type")?,
            event_version: row.try_get("event_version")?,
            payload: payload.unwrap_or_default(),
            metadata: metadata.unwrap_or_default(),
        },
        occurred_at,
        read: usize::try_from(read).unwrap_or_default(),
    })
}

/// [`read_after`] inside a transaction: what the transaction sees (a rebuild's swap reads
/// the last events while it holds the live checkpoint).
pub async fn read_after_in(
    tx: &mut crate::db::Tx,
    after: Checkpoint,
    limit: i64,
) -> Result<Vec<StoredEvent>, DbError> {
    let rows = match tx {
        Backend::Sqlite(t) => sqlx::query(SQLITE_READ)
            .bind(after.tx_id)
            .bind(after.position)
            .bind(limit)
            .fetch_all(&mut **t)
            .await?
            .iter()
            .map(decode_row)
            .collect::<Result<Vec<_>, _>>()?,
        Backend::Postgres(t) => sqlx::query(POSTGRES_READ)
            .bind(after.tx_id.to_string())
            .bind(after.position)
            .bind(limit)
            .fetch_all(&mut **t)
            .await?
            .iter()
            .map(decode_row)
            .collect::<Result<Vec<_>, _>>()?,
    };
    Ok(rows)
}

/// Every event of one aggregate, by sequence (its own order, which is also its commit
/// order): the primary key finds them, however long the log.
pub async fn aggregate_events(
    db: &Database,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Vec<StoredEvent>, DbError> {
    let sql = match db {
        Backend::Sqlite(_) => {
            "SELECT position, 0 AS tx, aggregate_type, aggregate_id, sequence, event_type,
                    event_version, payload, metadata
               FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence"
        }
        Backend::Postgres(_) => {
            "SELECT position, tx_id::text::bigint AS tx, aggregate_type, aggregate_id, sequence,
                    event_type, event_version, payload::text AS payload, metadata::text AS metadata
               FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence"
        }
    };
    on_backend!(db, |pool| sqlx::query(sql)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_all(pool)
        .await?
        .iter()
        .map(decode_row)
        .collect())
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
    raw_row(row)?.decode()
}

impl RawEvent {
    /// Parses the stored JSON: payload as it was written (not upcast), metadata as the
    /// helpdesk reads it.
    pub fn decode(self) -> Result<StoredEvent, DbError> {
        let position = self.checkpoint.position;
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            DbError::Corrupt(format!("event at position {position}: {what}: {e}"))
        };
        let metadata = EventMetadata::from_json(&self.metadata).ok_or_else(|| {
            corrupt(
                "metadata",
                &"not a map with organization, actor, time and request ids",
            )
        })?;
        Ok(StoredEvent {
            checkpoint: self.checkpoint,
            payload: RawValue::from_string(self.payload).map_err(|e| corrupt("payload", &e))?,
            aggregate_type: self.aggregate_type,
            aggregate_id: self.aggregate_id,
            sequence: self.sequence,
            event_type: self.event_type,
            event_version: self.event_version,
            metadata,
        })
    }
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

/// Which events a filtered read returns; every field narrows (all empty: the whole log).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// Only this organization's events.
    pub organization: Option<String>,
    /// Only this aggregate type (`Ticket`, ...).
    pub aggregate_type: Option<String>,
    /// Only this aggregate instance.
    pub aggregate_id: Option<String>,
    /// Only these event types (empty: all).
    pub event_types: Vec<String>,
    /// Only events that occurred at or after this instant.
    pub from: Option<DateTime<Utc>>,
    /// Only events that occurred before this instant.
    pub to: Option<DateTime<Utc>>,
}

/// One event exactly as stored: payload and metadata as the JSON text in the table.
/// What the export writes, without parsing (see [`read_raw`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
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
    /// The payload's stored JSON text.
    pub payload: String,
    /// The metadata's stored JSON text.
    pub metadata: String,
}

/// Builds the filtered read: rows in global commit order after `after`, at most `limit`.
/// On PostgreSQL only rows behind the fence are read (see [`read_after`]), so a page once
/// read never gains an earlier row later: paging over it is stable.
fn filtered_read(
    backend: &'static str,
    filter: &LogFilter,
    after: Checkpoint,
    limit: i64,
) -> Statement {
    let postgres = backend == "postgres";
    let mut statement = Statement::new("");
    let mut conditions = Vec::new();
    if postgres {
        let tx = statement.bind(Bind::Text(after.tx_id.to_string()));
        let position = statement.bind(Bind::Int(after.position));
        conditions.push(format!(
            "(tx_id, position) > ({tx}::text::xid8, {position})"
        ));
        conditions.push("tx_id < fence.tx".to_string());
    } else {
        let position = statement.bind(Bind::Int(after.position));
        conditions.push(format!("position > {position}"));
    }
    // With an aggregate named, the primary key (type, id, sequence) finds its few events;
    // SQLite's planner would otherwise walk the organization's index (`+` keeps it off).
    let organization = if !postgres && filter.aggregate_id.is_some() {
        "+organization_id"
    } else {
        "organization_id"
    };
    let text_filters = [
        (organization, &filter.organization),
        ("aggregate_type", &filter.aggregate_type),
        ("aggregate_id", &filter.aggregate_id),
    ];
    for (column, value) in text_filters {
        if let Some(value) = value {
            let placeholder = statement.bind(Bind::Text(value.clone()));
            conditions.push(format!("{column} = {placeholder}"));
        }
    }
    if !filter.event_types.is_empty() {
        let placeholders: Vec<String> = filter
            .event_types
            .iter()
            .map(|t| statement.bind(Bind::Text(t.clone())))
            .collect();
        conditions.push(format!("event_type IN ({})", placeholders.join(", ")));
    }
    // Stored times are fixed-width RFC 3339 (microseconds, `Z`), so text order is time order.
    let occurred_at = if postgres {
        "(metadata ->> 'occurred_at')"
    } else {
        "json_extract(metadata, '$.occurred_at')"
    };
    if let Some(from) = filter.from {
        let placeholder = statement.bind(Bind::Text(crate::db::timestamp(from)));
        conditions.push(format!("{occurred_at} >= {placeholder}"));
    }
    if let Some(to) = filter.to {
        let placeholder = statement.bind(Bind::Text(crate::db::timestamp(to)));
        conditions.push(format!("{occurred_at} < {placeholder}"));
    }
    let limit = statement.bind(Bind::Int(limit));
    let conditions = conditions.join(" AND ");
    statement.sql = if postgres {
        let fence = postgres_fence!();
        format!(
            "{fence}SELECT position, tx_id::text::bigint AS tx, aggregate_type, aggregate_id,
                    sequence, event_type, event_version, payload::text AS payload,
                    metadata::text AS metadata
               FROM events, fence
              WHERE {conditions}
              ORDER BY tx_id, position
              LIMIT {limit}"
        )
    } else {
        format!(
            "SELECT position, 0 AS tx, aggregate_type, aggregate_id, sequence, event_type,
                    event_version, payload, metadata
               FROM events
              WHERE {conditions}
              ORDER BY position
              LIMIT {limit}"
        )
    };
    statement
}

/// Up to `limit` events matching `filter` after `after`, in global commit order, decoded.
pub async fn read_filtered(
    db: &Database,
    filter: &LogFilter,
    after: Checkpoint,
    limit: i64,
) -> Result<Vec<StoredEvent>, DbError> {
    let statement = filtered_read(db.backend_name(), filter, after, limit);
    on_backend!(db, |pool| bind_all!(sqlx::query(&statement.sql), statement)
        .fetch_all(pool)
        .await?
        .iter()
        .map(decode_row)
        .collect())
}

/// Up to `limit` events matching `filter` after `after`, in global commit order, as
/// stored (no JSON parsing: the export's fast path).
pub async fn read_raw(
    db: &Database,
    filter: &LogFilter,
    after: Checkpoint,
    limit: i64,
) -> Result<Vec<RawEvent>, DbError> {
    let statement = filtered_read(db.backend_name(), filter, after, limit);
    on_backend!(db, |pool| bind_all!(sqlx::query(&statement.sql), statement)
        .fetch_all(pool)
        .await?
        .iter()
        .map(raw_row)
        .collect())
}

fn raw_row<R: Row>(row: &R) -> Result<RawEvent, DbError>
where
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
{
    Ok(RawEvent {
        checkpoint: checkpoint_of(row)?,
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
        event_type: row.try_get("event_type")?,
        event_version: row.try_get("event_version")?,
        payload: row.try_get("payload")?,
        metadata: row.try_get("metadata")?,
    })
}

/// How many events match `filter` after `after` (the export's progress total).
pub async fn count_filtered(
    db: &Database,
    filter: &LogFilter,
    after: Checkpoint,
) -> Result<i64, DbError> {
    let statement = filtered_read(db.backend_name(), filter, after, i64::MAX);
    let sql = format!("SELECT COUNT(*) FROM ({}) AS matching", statement.sql);
    Ok(on_backend!(db, |pool| bind_all!(
        sqlx::query_scalar(&sql),
        statement
    )
    .fetch_one(pool)
    .await?))
}
