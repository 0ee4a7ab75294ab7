//! The conversation process: tells customers when an agent takes their ticket, and
//! escalates conversations their agent leaves unanswered.
//!
//! Level-triggered, like the assignment process, so nothing is lost across restarts or
//! lease changes: each pass derives what is due from the read models.
//!
//! - **Announcements**: conversations whose active ticket's current assignment has not been
//!   announced (`announced_*` in `conversations` differs from the ticket's `assigned_at`)
//!   get `agentReadyMessage`. The announcement names the assignment, and the Conversation
//!   aggregate refuses a second one for the same assignment, so two attempts (a flow and
//!   this process, or two replicas around a lease change) still send one message.
//! - **Escalation** (centralized-chat-roadmap.md 3.2): a conversation whose agent has not
//!   replied within `escalationAfterSeconds` of the assignment (event time: the
//!   assignment's `occurred_at`, so the deadline survives restarts and needs no timer
//!   table) is taken from that agent and given to the next eligible one. A reply by the
//!   holder after the assignment locks ownership. The escalation command names the holder
//!   it was decided against, so a second attempt on a changed ticket is refused: it fires
//!   once. When nobody else can take the ticket it stays, and the next pass looks again.
//!
//! It runs in one replica at a time (the lease `ROLE`), wakes on every commit and looks
//! again every second.

use std::sync::Arc;
use std::time::Duration;

use domain::actor::{Actor, Role};
use domain::conversation::ConversationAction;
use domain::menu;
use domain::ticket::TicketStatus;
use projections::db::parse_timestamp;
use projections::personal_data;
use tokio_util::sync::CancellationToken;

use crate::conversations::derived_id;
use crate::error::{ApiError, ApiResult};
use crate::helpdesk::{Helpdesk, Origin, Wait};

/// The lease of the process.
pub const ROLE: &str = "conversation-process";

/// How many announcements one pass makes at most (the rest wait for the next pass).
const BATCH: i64 = 100;

/// Announces the current assignment of `ticket_id` on its conversation, once.
pub async fn announce_assignment(
    helpdesk: &Helpdesk,
    organization: &str,
    conversation_id: &str,
    ticket_id: &str,
    origin: &Origin,
) -> ApiResult<()> {
    let Some(ticket) = projections::tickets::ticket(&helpdesk.db, organization, ticket_id).await?
    else {
        return Ok(());
    };
    let active = ticket.status == TicketStatus::Assigned.as_str()
        || ticket.status == TicketStatus::InProgress.as_str();
    let (Some(assigned_at), Some(agent_id), true) =
        (&ticket.assigned_at, &ticket.assignee_id, active)
    else {
        return Ok(());
    };
    let assigned_micros = parse_timestamp(assigned_at)?.timestamp_micros();
    let settings = projections::queue_settings::settings(&helpdesk.db, organization).await?;
    let agent_name = projections::agents::agent(&helpdesk.db, organization, agent_id)
        .await?
        .map(|a| a.name)
        .unwrap_or_default();
    let division = match &ticket.division_id {
        Some(id) => projections::divisions::division(&helpdesk.db, organization, id)
            .await?
            .map(|d| d.name)
            .unwrap_or_default(),
        None => String::new(),
    };
    let text = menu::fill(
        &settings.agent_ready_message,
        &[("agent_name", agent_name), ("division", division)],
    );
    let conversation = helpdesk.load_conversation(conversation_id).await?;
    let key =
        personal_data::key_for(&helpdesk.db, organization, conversation.customer_id()).await?;
    helpdesk
        .execute(
            &helpdesk.conversations,
            conversation_id,
            ConversationAction::SendSystemMessage {
                message_id: derived_id(&["announce", ticket_id, assigned_at]),
                text: key.seal(&text),
                announces: Some((ticket_id.to_string(), assigned_micros)),
                offers_menu: false,
            },
            origin,
            "announceAssignment",
            Wait::No,
        )
        .await?;
    Ok(())
}

/// Starts the process (it waits for its lease).
pub fn spawn(helpdesk: Arc<Helpdesk>, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { run(helpdesk, shutdown).await })
}

async fn run(helpdesk: Arc<Helpdesk>, shutdown: CancellationToken) {
    let mut lease = helpdesk.leases.watch(ROLE);
    let mut wake = helpdesk.log_signal().subscribe();
    loop {
        if !projections::lease::until_held(&mut lease, &shutdown).await {
            return;
        }
        while *lease.borrow() && !shutdown.is_cancelled() {
            if let Err(error) = pass(&helpdesk).await {
                tracing::warn!(code = error.code(), "conversation process pass failed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = lease.changed() => {}
                _ = wake.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

/// One look for escalations and unannounced assignments.
async fn pass(helpdesk: &Helpdesk) -> ApiResult<()> {
    escalate_due(helpdesk).await?;
    announce_due(helpdesk).await
}

/// The shortest escalation delay that can be due (1 s): rows assigned later cannot be.
const MIN_ESCALATION: chrono::Duration = chrono::Duration::seconds(1);

/// Escalates every conversation whose deadline passed.
async fn escalate_due(helpdesk: &Helpdesk) -> ApiResult<()> {
    let now = chrono::Utc::now();
    let latest = projections::db::timestamp(now - MIN_ESCALATION);
    let mut delays: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    for due in
        projections::conversations::unanswered_assignments(&helpdesk.db, &latest, BATCH).await?
    {
        let delay = match delays.get(&due.organization_id) {
            Some(delay) => *delay,
            None => {
                let settings =
                    projections::queue_settings::settings(&helpdesk.db, &due.organization_id)
                        .await?;
                delays.insert(
                    due.organization_id.clone(),
                    settings.escalation_after_seconds,
                );
                settings.escalation_after_seconds
            }
        };
        if delay <= 0 {
            continue;
        }
        let assigned_at = parse_timestamp(&due.assigned_at)?;
        if now < assigned_at + chrono::Duration::seconds(delay) {
            continue;
        }
        let origin = Origin {
            organization: due.organization_id.clone(),
            actor: Actor::new("system:conversations", Role::Service),
            request_id: uuid::Uuid::new_v4().to_string(),
            causation_id: Some(format!("Ticket/{}", due.ticket_id)),
        };
        let escalated =
            crate::assignment::escalate(helpdesk, &origin, &due.ticket_id, &due.assignee_id, delay)
                .await;
        match escalated {
            Ok(Some(to)) => tracing::info!(
                ticket = due.ticket_id,
                from = due.assignee_id,
                to,
                "escalated an unanswered conversation"
            ),
            Ok(None) => {}
            Err(error) => tracing::debug!(
                ticket = due.ticket_id,
                code = error.code(),
                "escalation refused"
            ),
        }
    }
    Ok(())
}

/// Announces every assignment not announced yet.
async fn announce_due(helpdesk: &Helpdesk) -> ApiResult<()> {
    for (organization, conversation_id, ticket_id) in
        projections::conversations::unannounced_assignments(&helpdesk.db, BATCH).await?
    {
        let origin = Origin {
            organization: organization.clone(),
            actor: Actor::new("system:conversations", Role::Service),
            request_id: uuid::Uuid::new_v4().to_string(),
            causation_id: Some(format!("Ticket/{ticket_id}")),
        };
        let announced = announce_assignment(
            helpdesk,
            &organization,
            &conversation_id,
            &ticket_id,
            &origin,
        )
        .await;
        match announced {
            Ok(()) | Err(ApiError::Conflict(_)) => {}
            Err(error) => {
                tracing::warn!(
                    conversation_id,
                    code = error.code(),
                    "announcing an assignment failed"
                );
            }
        }
    }
    Ok(())
}
