//! What admins and analysts ask of the log: a ticket's history in plain words and the
//! ticket as it was at a past instant; and erasing a customer's personal data.
//!
//! Both read the ticket's own events from the log (the caller's organization only). The
//! history walks them once, keeping the few fields whose before/after it reports. Time
//! travel replays them up to the instant through the tickets projection's own code into
//! scratch tables ([`projections::rebuild::Scratch`]), so the past state is exactly what
//! the live read model showed then.

use chrono::{DateTime, Utc};
use domain::customer::CustomerAction;
use domain::ticket::{AssignmentVia, TicketEvent};
use projections::event_log::{self, StoredEvent};
use projections::personal_data::Erasure;
use projections::rebuild::Scratch;
use projections::tickets::{CommentRecord, TicketRecord, TicketsProjection};
use projections::{Database, DbError};
use serde_json::{json, Map, Value};

/// One event of a ticket, told for people.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntryRecord {
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
    /// Which fields changed: `{field: {from, to}}`, plus details such as an assignment's
    /// decision.
    pub changes: Value,
}

/// The events of one ticket of `organization`, oldest first, up to `until` (inclusive);
/// none when the ticket belongs to another organization.
pub async fn ticket_events(
    db: &Database,
    organization: &str,
    ticket_id: &str,
    until: Option<DateTime<Utc>>,
) -> Result<Vec<StoredEvent>, DbError> {
    let mut events = event_log::aggregate_events(db, "Ticket", ticket_id).await?;
    // Every event of an aggregate carries its organization.
    if events
        .first()
        .is_some_and(|e| e.metadata.organization != organization)
    {
        return Ok(Vec::new());
    }
    if let Some(until) = until {
        // A prefix of the history: a state that existed. (A command retried after losing a
        // race to another replica keeps its earlier acceptance time, so times within an
        // aggregate can step back by a few milliseconds.)
        let kept = events
            .iter()
            .take_while(|e| e.occurred_at() <= until)
            .count();
        events.truncate(kept);
    }
    Ok(events)
}

/// The fields of a ticket whose before/after the history reports.
#[derive(Debug, Default)]
struct Tracked {
    status: Option<&'static str>,
    assignee: Option<String>,
    priority: Option<String>,
}

/// The ticket's history, one entry per event.
pub fn history(events: &[StoredEvent]) -> Result<Vec<AuditEntryRecord>, DbError> {
    let mut tracked = Tracked::default();
    events
        .iter()
        .map(|event| {
            let (action, changes) = describe(&mut tracked, event.decode::<TicketEvent>()?);
            Ok(AuditEntryRecord {
                position: event.position(),
                at: event.occurred_at(),
                actor_id: event.metadata.actor.id.clone(),
                actor_role: event.metadata.actor.role.as_str().to_string(),
                action,
                changes,
            })
        })
        .collect()
}

fn change(from: &Option<impl serde::Serialize>, to: &Option<impl serde::Serialize>) -> Value {
    json!({ "from": from, "to": to })
}

/// Moves `tracked` to `to` and records the change under `field` when it is one.
fn set_status(tracked: &mut Tracked, changes: &mut Map<String, Value>, to: &'static str) {
    if tracked.status != Some(to) {
        changes.insert("status".into(), change(&tracked.status, &Some(to)));
        tracked.status = Some(to);
    }
}

fn set_assignee(tracked: &mut Tracked, changes: &mut Map<String, Value>, to: Option<String>) {
    if tracked.assignee != to {
        changes.insert("assigneeId".into(), change(&tracked.assignee, &to));
        tracked.assignee = to;
    }
}

fn describe(tracked: &mut Tracked, event: TicketEvent) -> (String, Value) {
    let mut changes = Map::new();
    let action = match event {
        TicketEvent::TicketCreated {
            number,
            subject,
            description,
            priority,
            priority_source,
            division_id,
            ..
        } => {
            set_status(tracked, &mut changes, "QUEUED");
            let priority = priority.as_str().to_string();
            changes.insert("number".into(), json!(number));
            changes.insert("subject".into(), json!({ "from": null, "to": subject }));
            if description.is_some() {
                changes.insert(
                    "description".into(),
                    json!({ "from": null, "to": description }),
                );
            }
            changes.insert("priority".into(), json!({ "from": null, "to": priority }));
            changes.insert("prioritySource".into(), json!(priority_source));
            changes.insert(
                "divisionId".into(),
                json!({ "from": null, "to": division_id }),
            );
            tracked.priority = Some(priority.clone());
            let division = division_id
                .map(|d| format!(" in division {d}"))
                .unwrap_or_default();
            format!("opened ticket #{number} \"{subject}\" at priority {priority}{division}; it joined the queue")
        }
        TicketEvent::TicketAssigned {
            agent_id,
            previous_agent_id,
            via,
            decision,
        } => {
            set_status(tracked, &mut changes, "ASSIGNED");
            set_assignee(tracked, &mut changes, Some(agent_id.clone()));
            changes.insert("via".into(), json!(via));
            let why = decision.as_ref().map(|d| {
                changes.insert("decision".into(), json!(d));
                format!(
                    "{} ({:?}: {} eligible, {} offline, {} at capacity)",
                    d.reason, d.algorithm, d.eligible, d.offline, d.full
                )
            });
            let why = why.map(|w| format!(": {w}")).unwrap_or_default();
            match via {
                AssignmentVia::Claim => format!("{agent_id} claimed the ticket from the queue"),
                AssignmentVia::Admin => format!("assigned the ticket to {agent_id}"),
                AssignmentVia::Auto => {
                    format!("assigned the ticket to {agent_id} automatically{why}")
                }
                AssignmentVia::Escalation => format!(
                    "escalated the ticket from {} to {agent_id}{why}",
                    previous_agent_id.as_deref().unwrap_or("nobody")
                ),
                AssignmentVia::Automation => {
                    format!("assigned the ticket to {agent_id} by a pipeline stage's automation")
                }
            }
        }
        TicketEvent::TicketRequeued { agent_id } => {
            set_status(tracked, &mut changes, "QUEUED");
            set_assignee(tracked, &mut changes, None);
            format!("returned the ticket to its place in the queue: {agent_id} went offline")
        }
        TicketEvent::TicketStarted { agent_id } => {
            set_status(tracked, &mut changes, "IN_PROGRESS");
            format!("{agent_id} started working on the ticket")
        }
        TicketEvent::TicketResolved { resolution, .. } => {
            set_status(tracked, &mut changes, "RESOLVED");
            if resolution.is_some() {
                changes.insert(
                    "resolution".into(),
                    json!({ "from": null, "to": resolution }),
                );
            }
            match resolution {
                Some(r) => format!("resolved the ticket: {r}"),
                None => "resolved the ticket".to_string(),
            }
        }
        TicketEvent::TicketClosed => {
            set_status(tracked, &mut changes, "CLOSED");
            "closed the ticket".to_string()
        }
        TicketEvent::TicketReopened {
            reason,
            previous_agent_id,
        } => {
            set_status(tracked, &mut changes, "QUEUED");
            set_assignee(tracked, &mut changes, None);
            if previous_agent_id.is_some() {
                changes.insert("previousAgentId".into(), json!(previous_agent_id));
            }
            match reason {
                Some(r) => format!("reopened the ticket: {r}"),
                None => "reopened the ticket".to_string(),
            }
        }
        TicketEvent::TicketPriorityChanged { from, to } => {
            changes.insert(
                "priority".into(),
                json!({ "from": from.as_str(), "to": to.as_str() }),
            );
            tracked.priority = Some(to.as_str().to_string());
            format!(
                "changed the priority from {} to {}",
                from.as_str(),
                to.as_str()
            )
        }
        TicketEvent::CommentAdded {
            comment_id,
            author_id,
            text,
        } => {
            changes.insert("commentId".into(), json!(comment_id));
            changes.insert("text".into(), json!(text));
            format!("{author_id} added a comment")
        }
        TicketEvent::TicketRated { rating, feedback } => {
            changes.insert("rating".into(), json!({ "from": null, "to": rating }));
            if feedback.is_some() {
                changes.insert("feedback".into(), json!({ "from": null, "to": feedback }));
            }
            format!("the customer rated the handling {rating} of 5")
        }
    };
    (action, Value::Object(changes))
}

/// The ticket as the tickets read model showed it at `at`, with the comments it had then;
/// `None` when it did not exist yet (or is not the organization's).
pub async fn ticket_as_of(
    db: &Database,
    organization: &str,
    ticket_id: &str,
    at: DateTime<Utc>,
) -> Result<Option<(TicketRecord, Vec<CommentRecord>)>, DbError> {
    let events = ticket_events(db, organization, ticket_id, Some(at)).await?;
    if events.is_empty() {
        return Ok(None);
    }
    let scratch = Scratch::new(db, &TicketsProjection).await?;
    let result = async {
        scratch.apply(&TicketsProjection, &events).await?;
        let ticket = projections::tickets::ticket(scratch.db(), organization, ticket_id).await?;
        let comments =
            projections::tickets::comments(scratch.db(), organization, ticket_id).await?;
        Ok(ticket.map(|t| (t, comments)))
    }
    .await;
    scratch.close().await;
    result
}

impl crate::helpdesk::Helpdesk {
    /// Erases a customer's personal data (`eraseCustomer`): deletes their key (see
    /// [`projections::personal_data::erase_customer`]), then records the erasure in the log
    /// (`CustomerDataErased`: who and when, nothing of what). `Ok(false)` when the
    /// organization has no such customer. A request that deleted the key but failed to
    /// record it is completed by the next one.
    pub async fn erase_customer(
        &self,
        caller: &crate::auth::Caller,
        request_id: &str,
        customer_id: &str,
    ) -> crate::error::ApiResult<bool> {
        if caller.actor.role != domain::Role::Admin {
            return Err(crate::error::ApiError::Forbidden(
                "only an admin may erase a customer's data".into(),
            ));
        }
        let erasure =
            projections::personal_data::erase_customer(&self.db, &caller.organization, customer_id)
                .await?;
        let key_deleted = match erasure {
            Erasure::Erased => true,
            Erasure::AlreadyErased => false,
            Erasure::Unknown => return Ok(false),
        };
        self.execute(
            &self.customers,
            customer_id,
            CustomerAction::Erase { key_deleted },
            &crate::helpdesk::Origin::of(caller, request_id),
            "eraseCustomer",
            crate::helpdesk::Wait::No,
        )
        .await?;
        if key_deleted {
            tracing::info!(
                organization = %caller.organization,
                customer = %customer_id,
                by = %caller.actor.id,
                "customer's personal data erased"
            );
        }
        Ok(true)
    }
}
