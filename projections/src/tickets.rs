//! The "tickets" projection: ticket details, comments and the queue entries, written together
//! so that a ticket's status and its place in the queue never disagree.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::priority::Priority;
use domain::ticket::{TicketEvent, TicketStatus};
use sqlx::FromRow;

use crate::db::{parse_timestamp, timestamp, Bind, Database, DbError, Statement, Tx};
use crate::event_log::StoredEvent;
use crate::queue::BUCKET_WIDTH;
use crate::runner::Projection;
use crate::{bind_all, on_backend};

/// Builds `tickets`, `ticket_comments`, the queues (`queue_entries`, `queue_buckets`,
/// `queue_counters`) and `agent_assignments` from Ticket events.
#[derive(Debug, Default)]
pub struct TicketsProjection;

/// The projection's name.
pub const TICKETS: &str = "tickets";

/// The division key of tickets without a division in `queue_entries`.
pub const NO_DIVISION: &str = "";

#[async_trait]
impl Projection for TicketsProjection {
    fn name(&self) -> &'static str {
        TICKETS
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["Ticket"]
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "tickets",
            "ticket_comments",
            "queue_entries",
            "queue_buckets",
            "queue_counters",
            "agent_assignments",
        ]
    }

    async fn apply(&self, tx: &mut Tx, event: &StoredEvent) -> Result<(), DbError> {
        if event.aggregate_type != "Ticket" {
            return Ok(());
        }
        let id = event.aggregate_id.as_str();
        let at = timestamp(event.occurred_at());
        let version = event.sequence;
        match event.decode::<TicketEvent>()? {
            TicketEvent::TicketCreated {
                organization,
                number,
                subject,
                description,
                priority,
                division_id,
                ..
            } => {
                on_backend!(tx, |t| {
                    sqlx::query(
                        "INSERT INTO tickets (id, organization_id, number, subject, description,
                            status, priority, division_id, created_by, created_at, updated_at, version,
                            search_text, queued_since)
                         VALUES ($1, $2, $3, $4, $5, 'QUEUED', $6, $7, $8, $9, $9, $10, $11, $9)",
                    )
                    .bind(id)
                    .bind(&organization)
                    .bind(number)
                    .bind(&subject)
                    .bind(&description)
                    .bind(priority.as_str())
                    .bind(&division_id)
                    .bind(&event.metadata.actor.id)
                    .bind(&at)
                    .bind(version)
                    .bind(search_text(&subject, description.as_deref()))
                    .execute(&mut **t)
                    .await?;
                });
                join_queue(tx, id, Place::Back).await?;
            }
            TicketEvent::TicketAssigned { agent_id, .. } => {
                update(
                    tx,
                    "status = 'ASSIGNED', assignee_id = $3, assigned_at = $4",
                    id,
                    version,
                    &[Bind::Text(agent_id.clone()), Bind::Text(at.clone())],
                    &at,
                )
                .await?;
                leave_queue(tx, id).await?;
                on_backend!(tx, |t| {
                    sqlx::query(
                        "INSERT INTO agent_assignments (agent_id, organization_id,
                            last_assigned_at, assigned_total)
                         SELECT $1, organization_id, $2, 1 FROM tickets WHERE id = $3
                         ON CONFLICT (agent_id) DO UPDATE
                            SET last_assigned_at = excluded.last_assigned_at,
                                assigned_total = agent_assignments.assigned_total + 1",
                    )
                    .bind(&agent_id)
                    .bind(&at)
                    .bind(id)
                    .execute(&mut **t)
                    .await?;
                });
            }
            TicketEvent::TicketStarted { .. } => {
                update(tx, "status = 'IN_PROGRESS'", id, version, &[], &at).await?;
            }
            TicketEvent::TicketResolved { resolution, .. } => {
                let resolution = resolution.map(Bind::Text);
                let (set, binds) = match resolution {
                    Some(r) => (
                        "status = 'RESOLVED', resolved_at = $3, resolution = $4",
                        vec![Bind::Text(at.clone()), r],
                    ),
                    None => (
                        "status = 'RESOLVED', resolved_at = $3, resolution = NULL",
                        vec![Bind::Text(at.clone())],
                    ),
                };
                update(tx, set, id, version, &binds, &at).await?;
            }
            TicketEvent::TicketClosed => {
                update(
                    tx,
                    "status = 'CLOSED', closed_at = $3",
                    id,
                    version,
                    &[Bind::Text(at.clone())],
                    &at,
                )
                .await?;
                leave_queue(tx, id).await?;
            }
            TicketEvent::TicketReopened { .. } => {
                // Back in the queue, behind those already waiting, at its current priority.
                update(
                    tx,
                    "status = 'QUEUED', assignee_id = NULL, assigned_at = NULL, resolved_at = NULL,
                     closed_at = NULL, resolution = NULL, rating = NULL, feedback = NULL,
                     queued_since = $3",
                    id,
                    version,
                    &[Bind::Text(at.clone())],
                    &at,
                )
                .await?;
                join_queue(tx, id, Place::Back).await?;
            }
            TicketEvent::TicketRequeued { .. } => {
                // Back at the place it had before it was assigned (its join sequence number and
                // `queued_since`).
                update(
                    tx,
                    "status = 'QUEUED', assignee_id = NULL, assigned_at = NULL",
                    id,
                    version,
                    &[],
                    &at,
                )
                .await?;
                join_queue(tx, id, Place::Original).await?;
            }
            TicketEvent::TicketPriorityChanged { to, .. } => {
                update(
                    tx,
                    "priority = $3",
                    id,
                    version,
                    &[Bind::Text(to.as_str().into())],
                    &at,
                )
                .await?;
                change_queue_priority(tx, id, to).await?;
            }
            TicketEvent::CommentAdded {
                comment_id,
                author_id,
                text,
            } => {
                update(tx, "", id, version, &[], &at).await?;
                on_backend!(tx, |t| {
                    sqlx::query(
                    "INSERT INTO ticket_comments (id, ticket_id, organization_id, author_id, text,
                        created_at, position)
                     SELECT $1, id, organization_id, $2, $3, $4, $5 FROM tickets WHERE id = $6"
                )
                .bind(&comment_id)
                .bind(&author_id)
                .bind(&text)
                .bind(&at)
                .bind(event.position())
                .bind(id)
                .execute(&mut **t)
                .await?;
                });
            }
            TicketEvent::TicketRated { rating, feedback } => {
                let mut binds = vec![Bind::Int(rating as i64)];
                let set = match feedback {
                    Some(f) => {
                        binds.push(Bind::Text(f));
                        "rating = $3, feedback = $4"
                    }
                    None => "rating = $3, feedback = NULL",
                };
                update(tx, set, id, version, &binds, &at).await?;
            }
        }
        Ok(())
    }
}

/// What the `search` filter matches: subject and description, lower-cased.
fn search_text(subject: &str, description: Option<&str>) -> String {
    format!("{}\n{}", subject, description.unwrap_or_default()).to_lowercase()
}

/// `UPDATE tickets SET <set>, updated_at, version WHERE id` (`set` may be empty). `$1` is the id, `$2` the
/// version; `set` uses `$3...` for `binds`.
async fn update(
    tx: &mut Tx,
    set: &str,
    id: &str,
    version: i64,
    binds: &[Bind],
    at: &str,
) -> Result<(), DbError> {
    let mut statement = Statement::new("");
    statement.bind(Bind::Text(id.into()));
    statement.bind(Bind::Int(version));
    statement.binds.extend_from_slice(binds);
    let at_placeholder = statement.bind(Bind::Text(at.into()));
    let set = if set.is_empty() {
        String::new()
    } else {
        format!("{set}, ")
    };
    statement.sql = format!(
        "UPDATE tickets SET {set}updated_at = {at_placeholder}, version = $2 WHERE id = $1"
    );
    let updated = on_backend!(tx, |t| bind_all!(sqlx::query(&statement.sql), statement)
        .execute(&mut **t)
        .await?
        .rows_affected());
    if updated != 1 {
        return Err(DbError::Corrupt(format!(
            "ticket {id} event {version} has no ticket row to update"
        )));
    }
    Ok(())
}

/// Where a ticket joining its queue is placed among those of its priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Behind everyone already there: a new join sequence number (creation, reopen).
    Back,
    /// At the place it had before it was assigned: its own sequence number (requeue).
    Original,
}

/// A queue entry's coordinates, what its bucket count depends on.
struct EntryKey {
    organization: String,
    division_key: String,
    priority_rank: i64,
    seq: i64,
}

/// Puts the ticket in its division's queue at its priority and `place`.
async fn join_queue(tx: &mut Tx, id: &str, place: Place) -> Result<(), DbError> {
    let (organization, division_id, priority, number, queued_since, seq): (
        String,
        Option<String>,
        String,
        i64,
        String,
        Option<i64>,
    ) = on_backend!(tx, |t| {
        sqlx::query_as(
            "SELECT organization_id, division_id, priority, number,
                    COALESCE(queued_since, created_at), queue_seq
               FROM tickets WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&mut **t)
        .await?
    });
    let priority: Priority = priority.parse().map_err(DbError::Corrupt)?;
    let division_key = division_id.unwrap_or_else(|| NO_DIVISION.to_string());
    let seq = match (place, seq) {
        (Place::Original, Some(seq)) => seq,
        // A ticket never numbered (none are, after migration 0005) joins at the back.
        _ => {
            let seq = next_seq(tx, &organization, &division_key).await?;
            on_backend!(tx, |t| {
                sqlx::query("UPDATE tickets SET queue_seq = $2 WHERE id = $1")
                    .bind(id)
                    .bind(seq)
                    .execute(&mut **t)
                    .await?;
            });
            seq
        }
    };
    let key = EntryKey {
        organization,
        division_key,
        priority_rank: priority.queue_rank(),
        seq,
    };
    on_backend!(tx, |t| {
        sqlx::query(
            "INSERT INTO queue_entries (ticket_id, organization_id, division_key,
                priority_rank, seq, waiting_since, number)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(&key.organization)
        .bind(&key.division_key)
        .bind(key.priority_rank)
        .bind(key.seq)
        .bind(&queued_since)
        .bind(number)
        .execute(&mut **t)
        .await?;
    });
    count_in_bucket(tx, &key, 1).await
}

/// The next join sequence number of a queue. Only the projection writes the counter, one
/// event at a time, so replaying the log hands out the same numbers.
async fn next_seq(tx: &mut Tx, organization: &str, division_key: &str) -> Result<i64, DbError> {
    Ok(on_backend!(tx, |t| {
        sqlx::query_scalar(
            "INSERT INTO queue_counters (organization_id, division_key, last_seq)
             VALUES ($1, $2, 1)
             ON CONFLICT (organization_id, division_key)
                DO UPDATE SET last_seq = queue_counters.last_seq + 1
             RETURNING last_seq",
        )
        .bind(organization)
        .bind(division_key)
        .fetch_one(&mut **t)
        .await?
    }))
}

/// Adds `delta` (+1 or -1) to the count of the entry's bucket; a bucket left empty is
/// deleted, so the buckets of a queue are never more than its entries.
async fn count_in_bucket(tx: &mut Tx, key: &EntryKey, delta: i64) -> Result<(), DbError> {
    let bucket = key.seq / BUCKET_WIDTH;
    on_backend!(tx, |t| {
        sqlx::query(
            "INSERT INTO queue_buckets (organization_id, division_key, priority_rank, bucket,
                entries)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (organization_id, division_key, priority_rank, bucket)
                DO UPDATE SET entries = queue_buckets.entries + excluded.entries",
        )
        .bind(&key.organization)
        .bind(&key.division_key)
        .bind(key.priority_rank)
        .bind(bucket)
        .bind(delta)
        .execute(&mut **t)
        .await?;
        if delta < 0 {
            sqlx::query(
                "DELETE FROM queue_buckets
                  WHERE organization_id = $1 AND division_key = $2 AND priority_rank = $3
                    AND bucket = $4 AND entries <= 0",
            )
            .bind(&key.organization)
            .bind(&key.division_key)
            .bind(key.priority_rank)
            .bind(bucket)
            .execute(&mut **t)
            .await?;
        }
    });
    Ok(())
}

/// Takes the ticket out of its queue, if it is in one; returns where it was.
async fn leave_queue(tx: &mut Tx, id: &str) -> Result<Option<EntryKey>, DbError> {
    let left: Option<(String, String, i64, i64)> = on_backend!(tx, |t| {
        sqlx::query_as(
            "DELETE FROM queue_entries WHERE ticket_id = $1
             RETURNING organization_id, division_key, priority_rank, seq",
        )
        .bind(id)
        .fetch_optional(&mut **t)
        .await?
    });
    let Some((organization, division_key, priority_rank, seq)) = left else {
        return Ok(None);
    };
    let key = EntryKey {
        organization,
        division_key,
        priority_rank,
        seq,
    };
    count_in_bucket(tx, &key, -1).await?;
    Ok(Some(key))
}

/// Moves a queued ticket to the band of its new priority, keeping its join sequence number.
async fn change_queue_priority(tx: &mut Tx, id: &str, to: Priority) -> Result<(), DbError> {
    let Some(mut key) = leave_queue(tx, id).await? else {
        return Ok(());
    };
    key.priority_rank = to.queue_rank();
    on_backend!(tx, |t| {
        sqlx::query(
            "INSERT INTO queue_entries (ticket_id, organization_id, division_key,
                priority_rank, seq, waiting_since, number)
             SELECT id, organization_id, $2, $3, $4, COALESCE(queued_since, created_at), number
               FROM tickets WHERE id = $1",
        )
        .bind(id)
        .bind(&key.division_key)
        .bind(key.priority_rank)
        .bind(key.seq)
        .execute(&mut **t)
        .await?;
    });
    count_in_bucket(tx, &key, 1).await
}

/// A ticket as the read model holds it.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct TicketRecord {
    /// The ticket id (a UUID).
    pub id: String,
    /// Its organization.
    pub organization_id: String,
    /// The organization's human-friendly number.
    pub number: i64,
    /// One-line summary.
    pub subject: String,
    /// Details.
    pub description: Option<String>,
    /// `QUEUED`, ...
    pub status: String,
    /// `URGENT`, ...
    pub priority: String,
    /// The division whose queue it belongs to.
    pub division_id: Option<String>,
    /// The agent holding it.
    pub assignee_id: Option<String>,
    /// Who created it.
    pub created_by: String,
    /// Stored timestamps (see [`crate::db::timestamp`]).
    pub created_at: String,
    /// Time of the last change.
    pub updated_at: String,
    /// Time of the last assignment.
    pub assigned_at: Option<String>,
    /// Time of resolution.
    pub resolved_at: Option<String>,
    /// Time of closing.
    pub closed_at: Option<String>,
    /// How it was resolved.
    pub resolution: Option<String>,
    /// The customer's rating, 1..5.
    pub rating: Option<i64>,
    /// The customer's words with the rating.
    pub feedback: Option<String>,
    /// The sequence of the last event applied.
    pub version: i64,
}

impl TicketRecord {
    /// The status as the domain type.
    pub fn status(&self) -> Result<TicketStatus, DbError> {
        serde_json::from_value(serde_json::Value::String(self.status.clone()))
            .map_err(|e| DbError::Corrupt(format!("ticket {} status: {e}", self.id)))
    }

    /// The priority as the domain type.
    pub fn priority(&self) -> Result<Priority, DbError> {
        self.priority.parse().map_err(DbError::Corrupt)
    }

    /// Parses one of the stored timestamps.
    pub fn time(text: &Option<String>) -> Result<Option<DateTime<Utc>>, DbError> {
        text.as_deref().map(parse_timestamp).transpose()
    }
}

const TICKET_COLUMNS: &str = "id, organization_id, number, subject, description, status, priority,
    division_id, assignee_id, created_by, created_at, updated_at, assigned_at, resolved_at,
    closed_at, resolution, rating, feedback, version";

/// One ticket of `organization`, if it exists there.
pub async fn ticket(
    db: &Database,
    organization: &str,
    id: &str,
) -> Result<Option<TicketRecord>, DbError> {
    let sql =
        format!("SELECT {TICKET_COLUMNS} FROM tickets WHERE id = $1 AND organization_id = $2");
    Ok(on_backend!(db, |pool| sqlx::query_as::<_, TicketRecord>(
        &sql
    )
    .bind(id)
    .bind(organization)
    .fetch_optional(pool)
    .await?))
}

/// The active tickets of an agent in the order they should be worked on: in progress first,
/// then assigned, the oldest first.
pub async fn agent_queue(
    db: &Database,
    organization: &str,
    agent_id: &str,
) -> Result<Vec<TicketRecord>, DbError> {
    let sql = format!(
        "SELECT {TICKET_COLUMNS} FROM tickets
          WHERE organization_id = $1 AND assignee_id = $2 AND status IN ('IN_PROGRESS', 'ASSIGNED')
          ORDER BY CASE status WHEN 'IN_PROGRESS' THEN 0 ELSE 1 END, created_at, number"
    );
    Ok(on_backend!(db, |pool| sqlx::query_as::<_, TicketRecord>(
        &sql
    )
    .bind(organization)
    .bind(agent_id)
    .fetch_all(pool)
    .await?))
}

/// Tickets of `organization` that are assigned (not started) to agents who are offline:
/// `(ticket id, agent id)`.
pub async fn assigned_to_offline_agents(
    db: &Database,
    organization: &str,
) -> Result<Vec<(String, String)>, DbError> {
    Ok(on_backend!(db, |pool| sqlx::query_as(
        "SELECT t.id, t.assignee_id FROM tickets t JOIN agents a ON a.id = t.assignee_id
          WHERE t.organization_id = $1 AND t.status = 'ASSIGNED' AND a.online = $2"
    )
    .bind(organization)
    .bind(false)
    .fetch_all(pool)
    .await?))
}

/// The contract's `TicketFilter`.
#[derive(Debug, Clone, Default)]
pub struct TicketFilter {
    /// Any of these statuses (empty: all).
    pub statuses: Vec<TicketStatus>,
    /// Any of these priorities (empty: all).
    pub priorities: Vec<Priority>,
    /// Only this division.
    pub division_id: Option<String>,
    /// Only this agent's tickets.
    pub assignee_id: Option<String>,
    /// Words in the subject or description, or a ticket number (`42` or `#42`).
    pub search: Option<String>,
}

/// A page of tickets, newest first.
#[derive(Debug, Clone)]
pub struct TicketPage {
    /// The tickets of the page.
    pub tickets: Vec<TicketRecord>,
    /// Whether more follow.
    pub has_next_page: bool,
    /// How many match the filter in all.
    pub total_count: i64,
}

fn filtered(organization: &str, filter: &TicketFilter, select: &str) -> Statement {
    let mut s = Statement::new(select);
    let org = s.bind(Bind::Text(organization.into()));
    s.push(&format!(" FROM tickets WHERE organization_id = {org}"));
    let list = |s: &mut Statement, column: &str, values: Vec<&str>| {
        if values.is_empty() {
            return;
        }
        let placeholders: Vec<String> = values
            .into_iter()
            .map(|v| s.bind(Bind::Text(v.into())))
            .collect();
        s.push(&format!(" AND {column} IN ({})", placeholders.join(", ")));
    };
    list(
        &mut s,
        "status",
        filter.statuses.iter().map(|x| x.as_str()).collect(),
    );
    list(
        &mut s,
        "priority",
        filter.priorities.iter().map(|x| x.as_str()).collect(),
    );
    if let Some(division) = &filter.division_id {
        let p = s.bind(Bind::Text(division.clone()));
        s.push(&format!(" AND division_id = {p}"));
    }
    if let Some(assignee) = &filter.assignee_id {
        let p = s.bind(Bind::Text(assignee.clone()));
        s.push(&format!(" AND assignee_id = {p}"));
    }
    if let Some(search) = filter
        .search
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        let pattern = format!(
            "%{}%",
            search
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let p = s.bind(Bind::Text(pattern));
        let mut clause = format!(" AND (search_text LIKE {p} ESCAPE '\\'");
        if let Ok(number) = search.trim_start_matches('#').parse::<i64>() {
            let n = s.bind(Bind::Int(number));
            clause.push_str(&format!(" OR number = {n}"));
        }
        clause.push(')');
        s.push(&clause);
    }
    s
}

/// Tickets of `organization` matching `filter`, newest first, `first` of them after the
/// ticket numbered `after`.
pub async fn tickets(
    db: &Database,
    organization: &str,
    filter: &TicketFilter,
    first: i64,
    after_number: Option<i64>,
) -> Result<TicketPage, DbError> {
    let count = filtered(organization, filter, "SELECT COUNT(*)");
    let mut page = filtered(organization, filter, &format!("SELECT {TICKET_COLUMNS}"));
    if let Some(after) = after_number {
        let p = page.bind(Bind::Int(after));
        page.push(&format!(" AND number < {p}"));
    }
    let limit = page.bind(Bind::Int(first + 1));
    page.push(&format!(" ORDER BY number DESC LIMIT {limit}"));
    let (total_count, mut tickets): (i64, Vec<TicketRecord>) = on_backend!(db, |pool| (
        bind_all!(sqlx::query_scalar(&count.sql), count)
            .fetch_one(pool)
            .await?,
        bind_all!(sqlx::query_as::<_, TicketRecord>(&page.sql), page)
            .fetch_all(pool)
            .await?
    ));
    let has_next_page = tickets.len() as i64 > first;
    tickets.truncate(first as usize);
    Ok(TicketPage {
        tickets,
        has_next_page,
        total_count,
    })
}

/// A comment as the read model holds it.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct CommentRecord {
    /// The comment id.
    pub id: String,
    /// Its ticket.
    pub ticket_id: String,
    /// Who wrote it.
    pub author_id: String,
    /// What was written.
    pub text: String,
    /// When (stored timestamp).
    pub created_at: String,
}

/// The comments of a ticket, oldest first.
pub async fn comments(
    db: &Database,
    organization: &str,
    ticket_id: &str,
) -> Result<Vec<CommentRecord>, DbError> {
    Ok(on_backend!(db, |pool| sqlx::query_as::<_, CommentRecord>(
        "SELECT id, ticket_id, author_id, text, created_at FROM ticket_comments
          WHERE ticket_id = $1 AND organization_id = $2 ORDER BY position"
    )
    .bind(ticket_id)
    .bind(organization)
    .fetch_all(pool)
    .await?))
}

/// One comment of `organization`.
pub async fn comment(
    db: &Database,
    organization: &str,
    id: &str,
) -> Result<Option<CommentRecord>, DbError> {
    Ok(on_backend!(db, |pool| sqlx::query_as::<_, CommentRecord>(
        "SELECT id, ticket_id, author_id, text, created_at FROM ticket_comments
          WHERE id = $1 AND organization_id = $2"
    )
    .bind(id)
    .bind(organization)
    .fetch_optional(pool)
    .await?))
}

/// How long the latest `limit` resolved tickets of a queue (`division_key`, `""`: tickets
/// without a division) took from their last assignment to their resolution, in seconds,
/// the latest first.
pub async fn recent_handling_seconds(
    db: &Database,
    organization: &str,
    division_key: &str,
    limit: i64,
) -> Result<Vec<i64>, DbError> {
    let division = if division_key == NO_DIVISION {
        "division_id IS NULL AND $2 = ''"
    } else {
        "division_id = $2"
    };
    let sql = format!(
        "SELECT assigned_at, resolved_at FROM tickets
          WHERE organization_id = $1 AND {division}
            AND resolved_at IS NOT NULL AND assigned_at IS NOT NULL
          ORDER BY resolved_at DESC LIMIT $3"
    );
    let rows: Vec<(String, String)> = on_backend!(db, |pool| sqlx::query_as(&sql)
        .bind(organization)
        .bind(division_key)
        .bind(limit)
        .fetch_all(pool)
        .await?);
    rows.iter()
        .map(|(assigned, resolved)| {
            let took = parse_timestamp(resolved)? - parse_timestamp(assigned)?;
            Ok(took.num_seconds().max(0))
        })
        .collect()
}
