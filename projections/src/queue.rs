//! Queue queries over `queue_entries` (kept by the "tickets" projection): per division,
//! URGENT before HIGH before MEDIUM before LOW, then the longest-waiting first, then the
//! lower ticket number. A place is the count of entries ahead, so it is exact at every
//! moment without renumbering rows.

use sqlx::FromRow;

use crate::db::{Database, DbError};
use crate::on_backend;

/// A ticket waiting in a queue.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct QueueRecord {
    /// The waiting ticket.
    pub ticket_id: String,
    /// 0 = URGENT ... 3 = LOW.
    pub priority_rank: i64,
    /// When it entered the queue (stored timestamp).
    pub waiting_since: String,
    /// Its number, the last tie-breaker.
    pub number: i64,
}

/// The sort key of a queue entry, used as the page cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueKey {
    /// 0 = URGENT ... 3 = LOW.
    pub priority_rank: i64,
    /// When it entered the queue (stored timestamp).
    pub waiting_since: String,
    /// Ticket number.
    pub number: i64,
}

impl From<&QueueRecord> for QueueKey {
    fn from(record: &QueueRecord) -> Self {
        Self {
            priority_rank: record.priority_rank,
            waiting_since: record.waiting_since.clone(),
            number: record.number,
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

/// The queue order, as a row value: compared with `<` it says "served before".
const ORDER: &str = "(priority_rank, waiting_since, number)";

/// The 1-based place of a ticket in its queue, `None` when it is not queued (one round trip:
/// this is asked for every `Ticket.queuePosition`).
pub async fn position(
    db: &Database,
    organization: &str,
    ticket_id: &str,
) -> Result<Option<i64>, DbError> {
    let sql = "SELECT (SELECT COUNT(*) FROM queue_entries q
                  WHERE q.organization_id = me.organization_id
                    AND q.division_key = me.division_key
                    AND (q.priority_rank, q.waiting_since, q.number)
                      < (me.priority_rank, me.waiting_since, me.number)) + 1
           FROM queue_entries me WHERE me.ticket_id = $1 AND me.organization_id = $2";
    Ok(on_backend!(db, |pool| sqlx::query_scalar::<_, i64>(sql)
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
    let total_count: i64 = on_backend!(db, |pool| sqlx::query_scalar(
        "SELECT COUNT(*) FROM queue_entries WHERE organization_id = $1 AND division_key = $2"
    )
    .bind(organization)
    .bind(division_key)
    .fetch_one(pool)
    .await?);
    let (rank, since, number) = match after {
        Some(key) => (key.priority_rank, key.waiting_since.clone(), key.number),
        // Before every real entry: ranks are >= 0, numbers >= 1.
        None => (-1, String::new(), 0),
    };
    let sql = format!(
        "SELECT ticket_id, priority_rank, waiting_since, number FROM queue_entries
          WHERE organization_id = $1 AND division_key = $2 AND {ORDER} > ($3, $4, $5)
          ORDER BY priority_rank, waiting_since, number LIMIT $6"
    );
    let mut entries: Vec<QueueRecord> = on_backend!(db, |pool| sqlx::query_as(&sql)
        .bind(organization)
        .bind(division_key)
        .bind(rank)
        .bind(&since)
        .bind(number)
        .bind(first + 1)
        .fetch_all(pool)
        .await?);
    let has_next_page = entries.len() as i64 > first;
    entries.truncate(first as usize);
    let first_position = match entries.first() {
        Some(head) => {
            let sql = format!(
                "SELECT COUNT(*) + 1 FROM queue_entries
                  WHERE organization_id = $1 AND division_key = $2 AND {ORDER} < ($3, $4, $5)"
            );
            on_backend!(db, |pool| sqlx::query_scalar::<_, i64>(&sql)
                .bind(organization)
                .bind(division_key)
                .bind(head.priority_rank)
                .bind(&head.waiting_since)
                .bind(head.number)
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
pub async fn waiting_divisions(db: &Database, organization: &str) -> Result<Vec<String>, DbError> {
    Ok(on_backend!(db, |pool| sqlx::query_scalar(
        "SELECT DISTINCT division_key FROM queue_entries WHERE organization_id = $1"
    )
    .bind(organization)
    .fetch_all(pool)
    .await?))
}

/// The organizations with tickets waiting anywhere.
pub async fn waiting_organizations(db: &Database) -> Result<Vec<String>, DbError> {
    Ok(on_backend!(db, |pool| sqlx::query_scalar(
        "SELECT DISTINCT organization_id FROM queue_entries"
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
          ORDER BY q.priority_rank, q.waiting_since, q.number LIMIT $3"
    )
    .bind(organization)
    .bind(division_key)
    .bind(limit)
    .fetch_all(pool)
    .await?))
}
