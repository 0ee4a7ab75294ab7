//! The "tickets" projection: ticket details, comments and the queue entries, written together
//! so that a ticket's status and its place in the queue never disagree.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::priority::Priority;
use domain::ticket::{TicketEvent, TicketStatus};
use sqlx::FromRow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::bulk::{self, Kind, Rows, Value};
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
        self.apply_batch(tx, &[event]).await
    }

    async fn apply_batch(&self, tx: &mut Tx, events: &[&StoredEvent]) -> Result<(), DbError> {
        let decoded = bulk::decode_all::<TicketEvent>(events, "Ticket")?;
        if decoded.is_empty() {
            return Ok(());
        }
        let mut fold = Fold::load(tx, &decoded).await?;
        for (event, ticket_event) in decoded {
            fold.apply(event, ticket_event)?;
        }
        fold.write(tx).await
    }
}

/// What the `search` filter matches: subject and description, lower-cased.
fn search_text(subject: &str, description: Option<&str>) -> String {
    format!("{}\n{}", subject, description.unwrap_or_default()).to_lowercase()
}

/// A `tickets` row as the projection writes it (all its columns).
#[derive(Debug, Clone, FromRow)]
struct TicketRow {
    id: String,
    organization_id: String,
    number: i64,
    subject: String,
    description: Option<String>,
    status: String,
    priority: String,
    division_id: Option<String>,
    assignee_id: Option<String>,
    created_by: String,
    created_at: String,
    updated_at: String,
    assigned_at: Option<String>,
    resolved_at: Option<String>,
    closed_at: Option<String>,
    resolution: Option<String>,
    rating: Option<i64>,
    feedback: Option<String>,
    search_text: String,
    version: i64,
    queued_since: Option<String>,
    queue_seq: Option<i64>,
}

const TICKET_ROW: &[(&str, Kind)] = &[
    ("id", Kind::Text),
    ("organization_id", Kind::Text),
    ("number", Kind::Int),
    ("subject", Kind::Text),
    ("description", Kind::Text),
    ("status", Kind::Text),
    ("priority", Kind::Text),
    ("division_id", Kind::Text),
    ("assignee_id", Kind::Text),
    ("created_by", Kind::Text),
    ("created_at", Kind::Text),
    ("updated_at", Kind::Text),
    ("assigned_at", Kind::Text),
    ("resolved_at", Kind::Text),
    ("closed_at", Kind::Text),
    ("resolution", Kind::Text),
    ("rating", Kind::Int),
    ("feedback", Kind::Text),
    ("search_text", Kind::Text),
    ("version", Kind::Int),
    ("queued_since", Kind::Text),
    ("queue_seq", Kind::Int),
];

impl TicketRow {
    fn values(self) -> [Value; 22] {
        [
            self.id.into(),
            self.organization_id.into(),
            self.number.into(),
            self.subject.into(),
            self.description.into(),
            self.status.into(),
            self.priority.into(),
            self.division_id.into(),
            self.assignee_id.into(),
            self.created_by.into(),
            self.created_at.into(),
            self.updated_at.into(),
            self.assigned_at.into(),
            self.resolved_at.into(),
            self.closed_at.into(),
            self.resolution.into(),
            self.rating.into(),
            self.feedback.into(),
            self.search_text.into(),
            self.version.into(),
            self.queued_since.into(),
            self.queue_seq.into(),
        ]
    }

    /// The queue key of its division.
    fn division_key(&self) -> String {
        self.division_id
            .clone()
            .unwrap_or_else(|| NO_DIVISION.to_string())
    }
}

/// A `queue_entries` row.
#[derive(Debug, Clone, FromRow)]
struct EntryRow {
    ticket_id: String,
    organization_id: String,
    division_key: String,
    priority_rank: i64,
    seq: i64,
    waiting_since: String,
    number: i64,
}

const ENTRY_ROW: &[(&str, Kind)] = &[
    ("ticket_id", Kind::Text),
    ("organization_id", Kind::Text),
    ("division_key", Kind::Text),
    ("priority_rank", Kind::Int),
    ("seq", Kind::Int),
    ("waiting_since", Kind::Text),
    ("number", Kind::Int),
];

/// A `queue_counters` row.
#[derive(Debug, Clone, FromRow)]
struct CounterRow {
    organization_id: String,
    division_key: String,
    last_seq: i64,
}

const COUNTER_ROW: &[(&str, Kind)] = &[
    ("organization_id", Kind::Text),
    ("division_key", Kind::Text),
    ("last_seq", Kind::Int),
];

const BUCKET_ROW: &[(&str, Kind)] = &[
    ("organization_id", Kind::Text),
    ("division_key", Kind::Text),
    ("priority_rank", Kind::Int),
    ("bucket", Kind::Int),
    ("entries", Kind::Int),
];

const ASSIGNMENT_ROW: &[(&str, Kind)] = &[
    ("agent_id", Kind::Text),
    ("organization_id", Kind::Text),
    ("last_assigned_at", Kind::Text),
    ("assigned_total", Kind::Int),
];

const COMMENT_ROW: &[(&str, Kind)] = &[
    ("id", Kind::Text),
    ("ticket_id", Kind::Text),
    ("organization_id", Kind::Text),
    ("author_id", Kind::Text),
    ("text", Kind::Text),
    ("created_at", Kind::Text),
    ("position", Kind::Int),
];

/// Where a ticket joining its queue is placed among those of its priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Behind everyone already there: a new join sequence number (creation, reopen).
    Back,
    /// At the place it had before it was assigned: its own sequence number (requeue).
    Original,
}

/// A queue bucket: (organization, division key, priority rank, bucket).
type BucketKey = (String, String, i64, i64);

/// The rows one batch of ticket events touches: read in one statement per table, changed
/// in memory event by event exactly as the events dictate, written back once per table.
/// Most ticket events follow another event of the same ticket (created, assigned, started,
/// resolved, closed), so a batch writes far fewer rows than it applies events.
#[derive(Debug, Default)]
struct Fold {
    tickets: HashMap<String, TicketRow>,
    /// Ticket ids in the order first touched, so rows are written in a stable order.
    touched: Vec<String>,
    /// The queue entry of each touched ticket as it stands (`None`: not queued).
    entries: HashMap<String, Option<EntryRow>>,
    /// Tickets whose entry was stored before the batch.
    stored_entries: Vec<String>,
    /// `last_seq` by (organization, division key), of the organizations touched.
    counters: HashMap<(String, String), i64>,
    changed_counters: BTreeSet<(String, String)>,
    /// Net change of each bucket's count.
    buckets: BTreeMap<BucketKey, i64>,
    /// Agent -> (organization, last assignment time, assignments in the batch).
    assignments: BTreeMap<String, (String, String, i64)>,
    comments: Vec<[Value; 7]>,
}

impl Fold {
    /// Reads the stored rows of every ticket in the batch, their queue entries and the queue
    /// counters of their organizations.
    async fn load(tx: &mut Tx, events: &[(&StoredEvent, TicketEvent)]) -> Result<Self, DbError> {
        let mut fold = Fold::default();
        let mut ids = BTreeSet::new();
        let mut organizations = BTreeSet::new();
        // A batch of a live runner is often one event: read only the tables it needs.
        let (mut moves_queues, mut numbers_joins) = (false, false);
        for (event, ticket_event) in events {
            if ids.insert(event.aggregate_id.as_str()) {
                fold.touched.push(event.aggregate_id.clone());
            }
            match ticket_event {
                TicketEvent::TicketCreated { organization, .. } => {
                    organizations.insert(organization.clone());
                    (moves_queues, numbers_joins) = (true, true);
                }
                TicketEvent::TicketReopened { .. } | TicketEvent::TicketRequeued { .. } => {
                    (moves_queues, numbers_joins) = (true, true);
                }
                TicketEvent::TicketAssigned { .. }
                | TicketEvent::TicketClosed
                | TicketEvent::TicketPriorityChanged { .. } => moves_queues = true,
                TicketEvent::TicketStarted { .. }
                | TicketEvent::TicketResolved { .. }
                | TicketEvent::CommentAdded { .. }
                | TicketEvent::TicketRated { .. } => {}
            }
        }
        let ids: Vec<String> = ids.into_iter().map(str::to_string).collect();
        let select = format!("SELECT {} FROM tickets", bulk::column_list(TICKET_ROW));
        let rows: Vec<TicketRow> = bulk::select_in(tx, &select, "id", &ids).await?;
        for row in rows {
            organizations.insert(row.organization_id.clone());
            fold.tickets.insert(row.id.clone(), row);
        }
        if !moves_queues {
            return Ok(fold);
        }
        let select = format!("SELECT {} FROM queue_entries", bulk::column_list(ENTRY_ROW));
        let stored: Vec<EntryRow> = bulk::select_in(tx, &select, "ticket_id", &ids).await?;
        for entry in stored {
            fold.stored_entries.push(entry.ticket_id.clone());
            fold.entries.insert(entry.ticket_id.clone(), Some(entry));
        }
        if !numbers_joins {
            return Ok(fold);
        }
        let organizations: Vec<String> = organizations.into_iter().collect();
        let select = format!(
            "SELECT {} FROM queue_counters",
            bulk::column_list(COUNTER_ROW)
        );
        let counters: Vec<CounterRow> =
            bulk::select_in(tx, &select, "organization_id", &organizations).await?;
        for counter in counters {
            fold.counters.insert(
                (counter.organization_id, counter.division_key),
                counter.last_seq,
            );
        }
        Ok(fold)
    }

    /// The stored ticket an event changes, its `updated_at` and `version` moved to the event.
    fn update(&mut self, id: &str, event: &StoredEvent) -> Result<&mut TicketRow, DbError> {
        let row = self.tickets.get_mut(id).ok_or_else(|| {
            DbError::Corrupt(format!(
                "ticket {id} event {} has no ticket row to update",
                event.sequence
            ))
        })?;
        row.updated_at = timestamp(event.occurred_at());
        row.version = event.sequence;
        Ok(row)
    }

    fn apply(&mut self, event: &StoredEvent, ticket_event: TicketEvent) -> Result<(), DbError> {
        let id = event.aggregate_id.as_str();
        let at = timestamp(event.occurred_at());
        match ticket_event {
            TicketEvent::TicketCreated {
                organization,
                number,
                subject,
                description,
                priority,
                division_id,
                ..
            } => {
                if self.tickets.contains_key(id) {
                    return Err(DbError::Corrupt(format!("ticket {id} created twice")));
                }
                let row = TicketRow {
                    id: id.to_string(),
                    organization_id: organization,
                    number,
                    search_text: search_text(&subject, description.as_deref()),
                    subject,
                    description,
                    status: "QUEUED".into(),
                    priority: priority.as_str().into(),
                    division_id,
                    assignee_id: None,
                    created_by: event.metadata.actor.id.clone(),
                    created_at: at.clone(),
                    updated_at: at.clone(),
                    assigned_at: None,
                    resolved_at: None,
                    closed_at: None,
                    resolution: None,
                    rating: None,
                    feedback: None,
                    version: event.sequence,
                    queued_since: Some(at),
                    queue_seq: None,
                };
                self.tickets.insert(id.to_string(), row);
                self.join_queue(id, Place::Back)?;
            }
            TicketEvent::TicketAssigned { agent_id, .. } => {
                let row = self.update(id, event)?;
                row.status = "ASSIGNED".into();
                row.assignee_id = Some(agent_id.clone());
                row.assigned_at = Some(at.clone());
                let organization = row.organization_id.clone();
                self.leave_queue(id);
                let assignment =
                    self.assignments
                        .entry(agent_id)
                        .or_insert((organization, at.clone(), 0));
                assignment.1 = at;
                assignment.2 += 1;
            }
            TicketEvent::TicketStarted { .. } => {
                self.update(id, event)?.status = "IN_PROGRESS".into();
            }
            TicketEvent::TicketResolved { resolution, .. } => {
                let row = self.update(id, event)?;
                row.status = "RESOLVED".into();
                row.resolved_at = Some(at);
                row.resolution = resolution;
            }
            TicketEvent::TicketClosed => {
                let row = self.update(id, event)?;
                row.status = "CLOSED".into();
                row.closed_at = Some(at);
                self.leave_queue(id);
            }
            TicketEvent::TicketReopened { .. } => {
                // Back in the queue, behind those already waiting, at its current priority.
                let row = self.update(id, event)?;
                row.status = "QUEUED".into();
                row.assignee_id = None;
                row.assigned_at = None;
                row.resolved_at = None;
                row.closed_at = None;
                row.resolution = None;
                row.rating = None;
                row.feedback = None;
                row.queued_since = Some(at);
                self.join_queue(id, Place::Back)?;
            }
            TicketEvent::TicketRequeued { .. } => {
                // Back at the place it had before it was assigned (its join sequence number
                // and `queued_since`).
                let row = self.update(id, event)?;
                row.status = "QUEUED".into();
                row.assignee_id = None;
                row.assigned_at = None;
                self.join_queue(id, Place::Original)?;
            }
            TicketEvent::TicketPriorityChanged { to, .. } => {
                self.update(id, event)?.priority = to.as_str().into();
                self.change_queue_priority(id, to);
            }
            TicketEvent::CommentAdded {
                comment_id,
                author_id,
                text,
            } => {
                let organization = self.update(id, event)?.organization_id.clone();
                self.comments.push([
                    comment_id.into(),
                    id.into(),
                    organization.into(),
                    author_id.into(),
                    text.into(),
                    at.into(),
                    event.position().into(),
                ]);
            }
            TicketEvent::TicketRated { rating, feedback } => {
                let row = self.update(id, event)?;
                row.rating = Some(rating as i64);
                row.feedback = feedback;
            }
        }
        Ok(())
    }

    /// Puts the ticket in its division's queue at its priority and `place`.
    fn join_queue(&mut self, id: &str, place: Place) -> Result<(), DbError> {
        let row = self
            .tickets
            .get(id)
            .ok_or_else(|| DbError::Corrupt(format!("ticket {id} has no row to queue")))?;
        let priority: Priority = row.priority.parse().map_err(DbError::Corrupt)?;
        let organization = row.organization_id.clone();
        let division_key = row.division_key();
        let seq = match (place, row.queue_seq) {
            (Place::Original, Some(seq)) => seq,
            // A ticket never numbered (none are, after migration 0005) joins at the back.
            _ => {
                // Only the projection moves the counter, one event at a time, so replaying
                // the log hands out the same numbers.
                let counter = self
                    .counters
                    .entry((organization.clone(), division_key.clone()))
                    .or_insert(0);
                *counter += 1;
                let seq = *counter;
                self.changed_counters
                    .insert((organization.clone(), division_key.clone()));
                if let Some(row) = self.tickets.get_mut(id) {
                    row.queue_seq = Some(seq);
                }
                seq
            }
        };
        let row = &self.tickets[id];
        let entry = EntryRow {
            ticket_id: id.to_string(),
            organization_id: organization,
            division_key,
            priority_rank: priority.queue_rank(),
            seq,
            waiting_since: row
                .queued_since
                .clone()
                .unwrap_or_else(|| row.created_at.clone()),
            number: row.number,
        };
        if let Some(Some(_)) = self.entries.get(id) {
            return Err(DbError::Corrupt(format!("ticket {id} is queued twice")));
        }
        self.count_in_bucket(&entry, 1);
        self.entries.insert(id.to_string(), Some(entry));
        Ok(())
    }

    /// Takes the ticket out of its queue, if it is in one; returns its entry.
    fn leave_queue(&mut self, id: &str) -> Option<EntryRow> {
        let entry = self.entries.insert(id.to_string(), None).flatten()?;
        self.count_in_bucket(&entry, -1);
        Some(entry)
    }

    /// Moves a queued ticket to the band of its new priority, keeping its join sequence
    /// number.
    fn change_queue_priority(&mut self, id: &str, to: Priority) {
        let Some(mut entry) = self.leave_queue(id) else {
            return;
        };
        let row = &self.tickets[id];
        entry.priority_rank = to.queue_rank();
        entry.waiting_since = row
            .queued_since
            .clone()
            .unwrap_or_else(|| row.created_at.clone());
        entry.number = row.number;
        self.count_in_bucket(&entry, 1);
        self.entries.insert(id.to_string(), Some(entry));
    }

    /// Adds `delta` to the count of the entry's bucket.
    fn count_in_bucket(&mut self, entry: &EntryRow, delta: i64) {
        let key = (
            entry.organization_id.clone(),
            entry.division_key.clone(),
            entry.priority_rank,
            entry.seq / BUCKET_WIDTH,
        );
        *self.buckets.entry(key).or_insert(0) += delta;
    }

    /// Writes every touched row: one statement per table and kind of change.
    async fn write(mut self, tx: &mut Tx) -> Result<(), DbError> {
        let mut tickets = Rows::new("tickets", TICKET_ROW);
        let mut entries = Rows::new("queue_entries", ENTRY_ROW);
        for id in &self.touched {
            if let Some(row) = self.tickets.remove(id) {
                tickets.push(row.values())?;
            }
            if let Some(Some(entry)) = self.entries.remove(id) {
                entries.push([
                    entry.ticket_id.into(),
                    entry.organization_id.into(),
                    entry.division_key.into(),
                    entry.priority_rank.into(),
                    entry.seq.into(),
                    entry.waiting_since.into(),
                    entry.number.into(),
                ])?;
            }
        }
        tickets
            .insert(tx, &bulk::replace_on_conflict(TICKET_ROW, &["id"]))
            .await?;
        bulk::delete_in(tx, "queue_entries", "ticket_id", &self.stored_entries, "").await?;
        entries.insert(tx, "").await?;

        let mut counters = Rows::new("queue_counters", COUNTER_ROW);
        for key in self.changed_counters {
            let last_seq = self.counters[&key];
            counters.push([key.0.into(), key.1.into(), last_seq.into()])?;
        }
        counters
            .insert(
                tx,
                &bulk::replace_on_conflict(COUNTER_ROW, &["organization_id", "division_key"]),
            )
            .await?;

        // A bucket left empty is deleted, so the buckets of a queue are never more than its
        // entries.
        let mut buckets = Rows::new("queue_buckets", BUCKET_ROW);
        let mut emptied = BTreeSet::new();
        for ((organization, division_key, rank, bucket), delta) in self.buckets {
            if delta == 0 {
                continue;
            }
            if delta < 0 {
                emptied.insert(organization.clone());
            }
            buckets.push([
                organization.into(),
                division_key.into(),
                rank.into(),
                bucket.into(),
                delta.into(),
            ])?;
        }
        buckets
            .insert(
                tx,
                "ON CONFLICT (organization_id, division_key, priority_rank, bucket)
                    DO UPDATE SET entries = queue_buckets.entries + excluded.entries",
            )
            .await?;
        let emptied: Vec<String> = emptied.into_iter().collect();
        bulk::delete_in(
            tx,
            "queue_buckets",
            "organization_id",
            &emptied,
            "AND entries <= 0",
        )
        .await?;

        let mut assignments = Rows::new("agent_assignments", ASSIGNMENT_ROW);
        for (agent, (organization, last_assigned_at, total)) in self.assignments {
            assignments.push([
                agent.into(),
                organization.into(),
                last_assigned_at.into(),
                total.into(),
            ])?;
        }
        assignments
            .insert(
                tx,
                "ON CONFLICT (agent_id) DO UPDATE
                    SET last_assigned_at = excluded.last_assigned_at,
                        assigned_total = agent_assignments.assigned_total + excluded.assigned_total",
            )
            .await?;

        let mut comments = Rows::new("ticket_comments", COMMENT_ROW);
        for comment in self.comments {
            comments.push(comment)?;
        }
        comments.insert(tx, "").await
    }
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
