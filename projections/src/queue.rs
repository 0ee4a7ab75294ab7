//! Queue queries over `queue_entries` and `queue_buckets` (both kept by the "tickets"
//! projection): per division, URGENT before HIGH before MEDIUM before LOW, then in the order
//! the tickets joined the queue (`seq`: a requeued ticket keeps its original one, so it
//! returns to its old place).
//!
//! A place is counted, never stored, so it is exact at every moment without renumbering
//! rows. Counting every entry ahead would cost time in proportion to the place (28 ms at
//! 100,000 queued on PostgreSQL), so `queue_buckets` holds how many entries of each
//! priority fall in each run of [`BUCKET_WIDTH`] join sequence numbers: a place is the sum
//! of the bucket rows ahead (at most one per `BUCKET_WIDTH` sequence numbers) plus a count
//! of at most `BUCKET_WIDTH` entries of the ticket's own bucket.

use sqlx::FromRow;

use crate::db::{Database, DbError};
use crate::on_backend;

/// How many join sequence numbers one `queue_buckets` row covers (bucket = seq / width).
/// Migration 0005 built the first buckets with this width: changing it means rebuilding
/// the "tickets" projection.
pub const BUCKET_WIDTH: i64 = 1024;

/// A ticket waiting in a queue.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct QueueRecord {
    /// The waiting ticket.
    pub ticket_id: String,
    /// 0 = URGENT ... 3 = LOW.
    pub priority_rank: i64,
    /// Its place in the order of joining the queue (per queue, from 1).
    pub seq: i64,
    /// When it entered the queue (stored timestamp).
    pub waiting_since: String,
    /// Its number.
    pub number: i64,
}

/// The sort key of a queue entry, used as the page cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueKey {
    /// 0 = URGENT ... 3 = LOW.
    pub priority_rank: i64,
    /// Join sequence number within the queue.
    pub seq: i64,
}

impl From<&QueueRecord> for QueueKey {
    fn from(record: &QueueRecord) -> Self {
        Self {
            priority_rank: record.priority_rank,
            seq: record.seq,
        }
    }
}

/// A page of one queue.
#[derive(Debug, Clone)]
pub struct QueuePage {
    /// Entries in queue order.
    pub entries: Vec<QueueRecord>,
    /// The 1-based place of the first entry.
    pub first_position: i64,
    /// Whether more follow.
    pub has_next_page: bool,
    /// How many wait in this queue.
    pub total_count: i64,
}

/// The 1-based place of the entry `me` (a row source with `organization_id`,
/// `division_key`, `priority_rank` and `seq`): the bucket rows ahead of its bucket, then
/// the entries of its own bucket ahead of it.
fn place_sql(me: &str) -> String {
    format!(
        "SELECT CAST(COALESCE((SELECT SUM(b.entries) FROM queue_buckets b
                   WHERE b.organization_id = me.organization_id
                     AND b.division_key = me.division_key
                     AND (b.priority_rank < me.priority_rank
                          OR (b.priority_rank = me.priority_rank
                              AND b.bucket < me.seq / {BUCKET_WIDTH}))), 0)
              + (SELECT COUNT(*) FROM queue_entries q
                  WHERE q.organization_id = me.organization_id
                    AND q.division_key = me.division_key
                    AND q.priority_rank = me.priority_rank
                    AND q.seq >= me.seq / {BUCKET_WIDTH} * {BUCKET_WIDTH}
                    AND q.seq < me.seq)
              + 1 AS BIGINT)
           FROM {me}"
    )
}

/// The statement of [`position`]: `$1` the ticket, `$2` its organization.
pub fn position_sql() -> String {
    place_sql(
        "(SELECT organization_id, division_key, priority_rank, seq FROM queue_entries
           WHERE ticket_id = $1 AND organization_id = $2) me",
    )
}

/// The statement that places a queue key: `$1` organization, `$2` division key,
/// `$3` priority rank, `$4` seq.
pub fn key_place_sql() -> String {
    place_sql(
        "(SELECT CAST($1 AS TEXT) AS organization_id, CAST($2 AS TEXT) AS division_key,
                 CAST($3 AS BIGINT) AS priority_rank, CAST($4 AS BIGINT) AS seq) me",
    )
}

/// The statement of a queue's length: `$1` organization, `$2` division key.
pub const TOTAL_SQL: &str = "SELECT CAST(COALESCE(SUM(entries), 0) AS BIGINT) FROM queue_buckets
                              WHERE organization_id = $1 AND division_key = $2";

/// The statement of a page: `first` entries after the key (`$3` rank, `$4` seq) in queue
/// order (`$1` organization, `$2` division key, `$5` how many). Written as the rest of the
/// key's priority followed by the lower priorities, because SQLite bounds an index range
/// by the first column of a row-value comparison only and would read the whole priority
/// band up to the key.
pub const PAGE_SQL: &str = "SELECT * FROM (
      SELECT * FROM (SELECT ticket_id, priority_rank, seq, waiting_since, number FROM queue_entries
                      WHERE organization_id = $1 AND division_key = $2
                        AND priority_rank = $3 AND seq > $4
                      ORDER BY seq LIMIT $5) same_priority
      UNION ALL
      SELECT * FROM (SELECT ticket_id, priority_rank, seq, waiting_since, number FROM queue_entries
                      WHERE organization_id = $1 AND division_key = $2 AND priority_rank > $3
                      ORDER BY priority_rank, seq LIMIT $5) lower_priorities
    ) page ORDER BY priority_rank, seq LIMIT $5";

/// The 1-based place of a ticket in its queue, `None` when it is not queued (one round trip:
/// this is asked for every `Ticket.queuePosition`).
pub async fn position(
    db: &Database,
    organization: &str,
    ticket_id: &str,
) -> Result<Option<i64>, DbError> {
    let sql = position_sql();
    Ok(on_backend!(db, |pool| sqlx::query_scalar::<_, i64>(&sql)
        .bind(ticket_id)
        .bind(organization)
        .fetch_optional(pool)
        .await?))
}

/// `first` entries of the queue of `division_key` (`""`: tickets without a division) after
/// the entry with key `after`.
pub async fn page(
    db: &Database,
    organization: &str,
    division_key: &str,
    first: i64,
    after: Option<&QueueKey>,
) -> Result<QueuePage, DbError> {
    let total_count: i64 = on_backend!(db, |pool| sqlx::query_scalar(TOTAL_SQL)
        .bind(organization)
        .bind(division_key)
        .fetch_one(pool)
        .await?);
    // Before every real entry: ranks and sequence numbers are >= 0.
    let after = after.copied().unwrap_or(QueueKey {
        priority_rank: -1,
        seq: -1,
    });
    let mut entries: Vec<QueueRecord> = on_backend!(db, |pool| sqlx::query_as(PAGE_SQL)
        .bind(organization)
        .bind(division_key)
        .bind(after.priority_rank)
        .bind(after.seq)
        .bind(first + 1)
        .fetch_all(pool)
        .await?);
    let has_next_page = entries.len() as i64 > first;
    entries.truncate(first as usize);
    let first_position = match entries.first() {
        Some(head) => {
            let sql = key_place_sql();
            on_backend!(db, |pool| sqlx::query_scalar::<_, i64>(&sql)
                .bind(organization)
                .bind(division_key)
                .bind(head.priority_rank)
                .bind(head.seq)
                .fetch_one(pool)
                .await?)
        }
        None => total_count + 1,
    };
    Ok(QueuePage {
        entries,
        first_position,
        has_next_page,
        total_count,
    })
}

/// The divisions of `organization` with tickets waiting (`""`: tickets without a division).
/// Read from the buckets: one row per 1,024 entries at most, where the entries would be
/// one row each (PostgreSQL 15 cannot skip through an index).
pub async fn waiting_divisions(db: &Database, organization: &str) -> Result<Vec<String>, DbError> {
    Ok(on_backend!(db, |pool| sqlx::query_scalar(
        "SELECT DISTINCT division_key FROM queue_buckets WHERE organization_id = $1"
    )
    .bind(organization)
    .fetch_all(pool)
    .await?))
}

/// The organizations with tickets waiting anywhere.
pub async fn waiting_organizations(db: &Database) -> Result<Vec<String>, DbError> {
    Ok(on_backend!(db, |pool| sqlx::query_scalar(
        "SELECT DISTINCT organization_id FROM queue_buckets"
    )
    .fetch_all(pool)
    .await?))
}

/// The first `limit` tickets of a queue in order, with the ticket version each was read at
/// (what a slot reservation names).
pub async fn heads(
    db: &Database,
    organization: &str,
    division_key: &str,
    limit: i64,
) -> Result<Vec<(String, i64)>, DbError> {
    Ok(on_backend!(db, |pool| sqlx::query_as(
        "SELECT q.ticket_id, t.version FROM queue_entries q JOIN tickets t ON t.id = q.ticket_id
          WHERE q.organization_id = $1 AND q.division_key = $2
          ORDER BY q.priority_rank, q.seq LIMIT $3"
    )
    .bind(organization)
    .bind(division_key)
    .bind(limit)
    .fetch_all(pool)
    .await?))
}
