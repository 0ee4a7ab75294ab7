//! The conversation process: tells customers when an agent takes their ticket.
//!
//! Level-triggered, like the assignment process: it looks for conversations whose active
//! ticket's current assignment has not been announced (`announced_*` in `conversations`
//! differs from the ticket's `assigned_at`) and announces each once. The announcement
//! names the assignment it announces, and the Conversation aggregate refuses a second one
//! for the same assignment, so two attempts (a flow and this process, or two replicas
//! around a lease change) still send one message. It runs in one replica at a time (the
//! lease `ROLE`), wakes on every commit and looks again every second.

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
        while !*lease.borrow_and_update() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = lease.changed() => if changed.is_err() { return },
            }
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

/// One look for unannounced assignments.
async fn pass(helpdesk: &Helpdesk) -> ApiResult<()> {
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
