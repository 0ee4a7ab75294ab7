//! Analysts and audit (`CONTRACT.md`, "Analysts and audit"): the `events` stream,
//! `ticketHistory`, `ticketAsOf`, `auditVerification` and `eraseCustomer`.
//!
//! Everything is confined to the caller's organization: the log is filtered on its
//! `organization_id` column, a ticket's events are read with the organization in the
//! filter, and verification walks the organization's own chain.

use async_graphql::{Context, InputObject, Json, Object, SimpleObject, ID};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use domain::Role;
use projections::event_log::{self, Checkpoint, LogFilter, StoredEvent};

use super::types::{PageInfo, Ticket};
use super::{caller_in, helpdesk, page_size, parse_uuid, request_id};
use crate::audit::{self, AuditEntryRecord};
use crate::error::{ApiError, ApiResult};

/// Which events `events` returns; every field narrows.
#[derive(InputObject, Default)]
pub struct EventFilter {
    /// Only this aggregate type (`Ticket`, `Conversation`, ...).
    pub aggregate_type: Option<String>,
    /// Only this aggregate.
    pub aggregate_id: Option<ID>,
    /// Only these event types (`TicketCreated`, ...).
    pub event_types: Option<Vec<String>>,
    /// Only events that occurred at or after this instant.
    pub from: Option<DateTime<Utc>>,
    /// Only events that occurred before this instant.
    pub to: Option<DateTime<Utc>>,
}

/// One event of the log, as stored.
#[derive(SimpleObject)]
pub struct EventRecord {
    /// Its place in the global log (commit order on PostgreSQL is by transaction, then
    /// position; pages follow that order).
    pub position: i64,
    /// `Ticket`, `Conversation`, ...
    pub aggregate_type: String,
    /// The aggregate instance.
    pub aggregate_id: ID,
    /// 1-based number within its aggregate.
    pub sequence: i64,
    /// `TicketCreated`, ...
    pub event_type: String,
    /// The payload's shape version.
    pub event_version: String,
    /// When the command was accepted.
    pub occurred_at: DateTime<Utc>,
    /// Who issued it.
    pub actor_id: String,
    /// Their role.
    pub actor_role: String,
    /// The payload exactly as stored (personal data sealed).
    pub payload: Json<serde_json::Value>,
    /// Organization, actor, time, request, correlation and causation.
    pub metadata: Json<serde_json::Value>,
}

impl EventRecord {
    fn from_stored(event: StoredEvent) -> ApiResult<Self> {
        let payload = event.value().map_err(ApiError::from)?;
        let metadata = serde_json::to_value(event.metadata.to_map()).unwrap_or_default();
        Ok(Self {
            position: event.position(),
            occurred_at: event.occurred_at(),
            actor_id: event.metadata.actor.id.clone(),
            actor_role: event.metadata.actor.role.as_str().to_string(),
            aggregate_type: event.aggregate_type,
            aggregate_id: ID(event.aggregate_id),
            sequence: event.sequence,
            event_type: event.event_type,
            event_version: event.event_version,
            payload: Json(payload),
            metadata: Json(metadata),
        })
    }
}

/// An event and its cursor.
#[derive(SimpleObject)]
pub struct EventEdge {
    /// Pass as `after` to continue after this event.
    pub cursor: String,
    /// The event.
    pub node: EventRecord,
}

/// A page of the log.
#[derive(SimpleObject)]
pub struct EventConnection {
    /// The page, in commit order.
    pub edges: Vec<EventEdge>,
    /// Whether more follow.
    pub page_info: PageInfo,
}

/// One event of a ticket, told for people.
#[derive(SimpleObject)]
pub struct AuditEntry {
    /// The event's place in the log.
    pub position: i64,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Who did it (a user, or `system:<process>`).
    pub actor_id: String,
    /// Their role.
    pub actor_role: String,
    /// What happened, in words.
    pub action: String,
    /// `{field: {from, to}}` for each field that changed, plus details (an assignment's
    /// `decision`: the agents considered and why the winner won).
    pub changes: Json<serde_json::Value>,
}

impl From<AuditEntryRecord> for AuditEntry {
    fn from(record: AuditEntryRecord) -> Self {
        Self {
            position: record.position,
            at: record.at,
            actor_id: record.actor_id,
            actor_role: record.actor_role,
            action: record.action,
            changes: Json(record.changes),
        }
    }
}

/// The result of recomputing the organization's tamper-evidence chain.
#[derive(SimpleObject)]
pub struct AuditVerification {
    /// Log and chain agree.
    pub ok: bool,
    /// Events verified before any break.
    pub checked_events: i64,
    /// The first position where log and chain disagree.
    pub first_bad_position: Option<i64>,
    /// Why, in words.
    pub problem: Option<String>,
    /// Events written but not chained yet (the chain follows the log within moments).
    pub pending_events: i64,
    /// The hash of the last verified link: record it elsewhere to pin today's history.
    pub head_hash: Option<String>,
}

/// Cursor of an event: its place in the commit order.
fn event_cursor(checkpoint: Checkpoint) -> String {
    URL_SAFE_NO_PAD.encode(format!(
        "event:{}:{}",
        checkpoint.tx_id, checkpoint.position
    ))
}

fn parse_event_cursor(cursor: &str) -> ApiResult<Checkpoint> {
    URL_SAFE_NO_PAD
        .decode(cursor.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| {
            let (tx_id, position) = text.strip_prefix("event:")?.split_once(':')?;
            Some(Checkpoint {
                tx_id: tx_id.parse().ok()?,
                position: position.parse().ok()?,
            })
        })
        .ok_or_else(|| ApiError::bad_input("malformed cursor"))
}

/// Longest accepted filter text (an aggregate or event type name).
const MAX_NAME: usize = 100;

fn name_filter(value: Option<String>, what: &str) -> ApiResult<Option<String>> {
    match value.map(|v| v.trim().to_string()) {
        Some(v) if v.is_empty() || v.chars().count() > MAX_NAME => Err(ApiError::bad_input(
            format!("{what} must be 1 to {MAX_NAME} characters"),
        )),
        other => Ok(other),
    }
}

/// The analysts' and auditors' queries.
#[derive(Default)]
pub struct AuditQuery;

#[Object]
impl AuditQuery {
    /// The organization's events in commit order (analysts and admins).
    async fn events(
        &self,
        ctx: &Context<'_>,
        filter: Option<EventFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<EventConnection> {
        let caller = caller_in(ctx, &[Role::Analyst, Role::Admin], "read the event log")?;
        let first = page_size(first)?;
        let after = after
            .as_deref()
            .map(parse_event_cursor)
            .transpose()?
            .unwrap_or(Checkpoint::START);
        let filter = filter.unwrap_or_default();
        if let (Some(from), Some(to)) = (filter.from, filter.to) {
            if from > to {
                return Err(ApiError::bad_input("from must not be after to").into());
            }
        }
        let event_types = filter.event_types.unwrap_or_default();
        if event_types.len() > 50 {
            return Err(ApiError::bad_input("at most 50 event types").into());
        }
        let log_filter = LogFilter {
            organization: Some(caller.organization.clone()),
            aggregate_type: name_filter(filter.aggregate_type, "aggregateType")?,
            aggregate_id: name_filter(filter.aggregate_id.map(|id| id.0), "aggregateId")?,
            event_types: event_types
                .into_iter()
                .map(|t| name_filter(Some(t), "an event type").map(Option::unwrap_or_default))
                .collect::<ApiResult<_>>()?,
            from: filter.from,
            to: filter.to,
        };
        let db = &helpdesk(ctx)?.db;
        let mut page = event_log::read_filtered(db, &log_filter, after, first + 1)
            .await
            .map_err(ApiError::from)?;
        let has_next_page = page.len() as i64 > first;
        page.truncate(first as usize);
        let edges: Vec<EventEdge> = page
            .into_iter()
            .map(|event| {
                Ok(EventEdge {
                    cursor: event_cursor(event.checkpoint),
                    node: EventRecord::from_stored(event)?,
                })
            })
            .collect::<ApiResult<_>>()?;
        Ok(EventConnection {
            page_info: PageInfo {
                has_next_page,
                end_cursor: edges.last().map(|e| e.cursor.clone()),
            },
            edges,
        })
    }

    /// Every event of a ticket in plain words, oldest first (admins).
    async fn ticket_history(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Vec<AuditEntry>> {
        let caller = caller_in(ctx, &[Role::Admin], "read a ticket's history")?;
        let id = parse_uuid(&id, "ticket")?;
        let db = &helpdesk(ctx)?.db;
        let events = audit::ticket_events(db, &caller.organization, &id, None)
            .await
            .map_err(ApiError::from)?;
        if events.is_empty() {
            return Err(ApiError::NotFound("ticket not found".into()).into());
        }
        let entries = audit::history(&events).map_err(ApiError::from)?;
        Ok(entries.into_iter().map(AuditEntry::from).collect())
    }

    /// The ticket as it was at `at` (admins and analysts); null if it did not exist yet.
    async fn ticket_as_of(
        &self,
        ctx: &Context<'_>,
        id: ID,
        at: DateTime<Utc>,
    ) -> async_graphql::Result<Option<Ticket>> {
        let caller = caller_in(
            ctx,
            &[Role::Admin, Role::Analyst],
            "read a ticket's past states",
        )?;
        let id = parse_uuid(&id, "ticket")?;
        let db = &helpdesk(ctx)?.db;
        let past = audit::ticket_as_of(db, &caller.organization, &id, at)
            .await
            .map_err(ApiError::from)?;
        let Some((record, comments)) = past else {
            return Ok(None);
        };
        let mut ticket = Ticket::from_record(record)?;
        ticket.as_of = Some(comments);
        Ok(Some(ticket))
    }

    /// Recomputes the organization's tamper-evidence chain from the log (admins).
    async fn audit_verification(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<AuditVerification> {
        let caller = caller_in(ctx, &[Role::Admin], "verify the audit chain")?;
        let db = &helpdesk(ctx)?.db;
        let result = projections::audit::verify(db, &caller.organization, |_| {})
            .await
            .map_err(ApiError::from)?;
        if !result.ok {
            tracing::warn!(
                organization = %caller.organization,
                position = ?result.first_bad_position,
                problem = ?result.problem,
                "audit chain broken"
            );
        }
        Ok(AuditVerification {
            ok: result.ok,
            checked_events: result.checked_events,
            first_bad_position: result.first_bad_position,
            problem: result.problem,
            pending_events: result.pending_events,
            head_hash: result.head,
        })
    }
}

/// The erasure mutation.
#[derive(Default)]
pub struct AuditMutation;

#[Object]
impl AuditMutation {
    /// Erases a customer's personal data (admins): their name, handle and messages read
    /// as "[erased]" from now on, everywhere; the log records the erasure
    /// (`CustomerDataErased`, no personal data), and replay and the audit chain are
    /// unaffected. Erasing an already erased customer is true again; an unknown one is
    /// NOT_FOUND.
    async fn erase_customer(
        &self,
        ctx: &Context<'_>,
        customer_id: ID,
    ) -> async_graphql::Result<bool> {
        let caller = caller_in(ctx, &[Role::Admin], "erase a customer's data")?;
        let customer_id = parse_uuid(&customer_id, "customer")?;
        let found = helpdesk(ctx)?
            .erase_customer(caller, &request_id(ctx), &customer_id)
            .await?;
        if !found {
            return Err(ApiError::NotFound("customer not found".into()).into());
        }
        Ok(true)
    }
}
