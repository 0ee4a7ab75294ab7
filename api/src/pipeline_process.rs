//! The pipeline process: runs what a stage does to a card entering it, and moves on cards
//! left in a removed stage.
//!
//! Level-triggered, like the other processes: each pass reads what is owed from the
//! "pipelines" read model (cards whose stage entry still owes automation; cards in removed
//! stages), so nothing is lost across restarts or lease changes.
//!
//! - **Automation**: each step of the entered stage runs in order — ASSIGN_AGENT through
//!   the assignment saga (slot reserved first, so capacity holds), SET_PRIORITY on the
//!   conversation's ticket, ADD_LABEL on the card. Steps are idempotent (an assignment or
//!   priority already in place counts as done), and the outcomes are recorded on the card
//!   in one `CardAutomationRan` event, which the card accepts once per stage entry. A
//!   business refusal (agent at capacity, no open ticket) is an outcome that says why,
//!   visible on the card; a technical failure records nothing and the next pass tries again.
//! - **Stranded cards**: a card moved into a stage at the moment the stage was removed is
//!   moved to where the stage's cards went (else the pipeline's first stage).
//!
//! It runs in one replica at a time (the lease `ROLE`), wakes when the "pipelines"
//! projection moves and looks again every 5 seconds.

use std::sync::Arc;
use std::time::Duration;

use domain::actor::{Actor, Role};
use domain::pipeline::{AutomationKind, AutomationOutcome, CardAction, StageAutomation};
use domain::priority::Priority;
use domain::ticket::{TicketAction, TicketStatus};
use tokio_util::sync::CancellationToken;

use crate::error::{ApiError, ApiResult};
use crate::helpdesk::{Helpdesk, Origin, Wait};

/// The lease of the process.
pub const ROLE: &str = "pipeline-process";

/// How many cards one pass handles at most (the rest wait for the next pass).
const BATCH: i64 = 100;

/// How often the process looks even when nothing moved.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// The actor of the process's commands.
pub fn system_actor() -> Actor {
    Actor::new("system:pipelines", Role::Service)
}

/// Starts the process (it waits for its lease).
pub fn spawn(helpdesk: Arc<Helpdesk>, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { run(helpdesk, shutdown).await })
}

async fn run(helpdesk: Arc<Helpdesk>, shutdown: CancellationToken) {
    let mut lease = helpdesk.leases.watch(ROLE);
    let Some(mut moved) = helpdesk
        .progress
        .watch(projections::pipelines::PipelinesProjection::NAME)
    else {
        tracing::error!("the pipeline process found no pipelines projection");
        return;
    };
    loop {
        if !projections::lease::until_held(&mut lease, &shutdown).await {
            return;
        }
        while *lease.borrow() && !shutdown.is_cancelled() {
            if let Err(error) = pass(&helpdesk).await {
                tracing::warn!(code = error.code(), "pipeline process pass failed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = lease.changed() => {}
                _ = moved.changed() => {}
                _ = tokio::time::sleep(SWEEP_EVERY) => {}
            }
        }
    }
}

/// One look for owed automation and stranded cards.
pub async fn pass(helpdesk: &Helpdesk) -> ApiResult<()> {
    for owed in projections::pipelines::stranded_cards(&helpdesk.db, BATCH).await? {
        if let Err(error) = rehome(helpdesk, &owed.organization_id, &owed.id).await {
            tracing::warn!(
                card = owed.id,
                code = error.code(),
                "moving a stranded card failed"
            );
        }
    }
    for owed in projections::pipelines::owed_automation(&helpdesk.db, BATCH).await? {
        if let Err(error) = automate(helpdesk, &owed.organization_id, &owed.id).await {
            tracing::warn!(
                card = owed.id,
                code = error.code(),
                "stage automation failed"
            );
        }
    }
    Ok(())
}

fn origin(organization: &str, card_id: &str) -> Origin {
    Origin {
        organization: organization.to_string(),
        actor: system_actor(),
        request_id: uuid::Uuid::new_v4().to_string(),
        causation_id: Some(format!("Card/{card_id}")),
    }
}

async fn rehome(helpdesk: &Helpdesk, organization: &str, card_id: &str) -> ApiResult<()> {
    let card = helpdesk.load_card(organization, card_id).await?;
    let pipelines = helpdesk.load_pipelines(organization).await?;
    let Some(home) = crate::pipelines::home_ref(&pipelines, &card) else {
        return Ok(());
    };
    helpdesk
        .on_card(
            &origin(organization, card_id),
            card_id,
            CardAction::Rehome {
                from_stage_id: card.stage_id().to_string(),
                stage: home,
            },
            "rehomeCard",
            Wait::No,
        )
        .await
}

/// Runs the automation a card's stage entry owes and records how it went.
async fn automate(helpdesk: &Helpdesk, organization: &str, card_id: &str) -> ApiResult<()> {
    let card = helpdesk.load_card(organization, card_id).await?;
    let Some(owed) = card.pending_automation().cloned() else {
        return Ok(());
    };
    let origin = origin(organization, card_id);
    let ticket_id = projections::conversations::conversation(
        &helpdesk.db,
        organization,
        card.conversation_id(),
    )
    .await?
    .and_then(|c| c.ticket_id);
    let mut outcomes = Vec::with_capacity(owed.steps.len());
    for step in owed.steps {
        // A move meanwhile supersedes this entry: its remaining steps must not touch the
        // ticket any more (and nothing is recorded for it).
        let now = helpdesk.load_card(organization, card_id).await?;
        if now.pending_automation().map(|p| p.entry) != Some(owed.entry) {
            return Ok(());
        }
        let result = run_step(helpdesk, &origin, ticket_id.as_deref(), &step).await;
        let outcome = match result {
            Ok(()) => AutomationOutcome {
                step,
                ok: true,
                detail: None,
            },
            // Technical trouble: record nothing, the next pass runs the entry again (every
            // step is idempotent).
            Err(ApiError::Internal) => return Err(ApiError::Internal),
            Err(refusal) => AutomationOutcome {
                step,
                ok: false,
                detail: Some(refusal.message().to_string()),
            },
        };
        outcomes.push(outcome);
    }
    helpdesk
        .on_card(
            &origin,
            card_id,
            CardAction::RecordAutomation {
                entry: owed.entry,
                outcomes,
            },
            "recordAutomation",
            Wait::No,
        )
        .await
}

async fn run_step(
    helpdesk: &Helpdesk,
    origin: &Origin,
    ticket_id: Option<&str>,
    step: &StageAutomation,
) -> ApiResult<()> {
    match step.kind {
        // The card itself takes the label when the outcome is recorded.
        AutomationKind::AddLabel => Ok(()),
        AutomationKind::AssignAgent => {
            let ticket_id = open_ticket(helpdesk, origin, ticket_id).await?;
            let ticket = helpdesk
                .load_ticket(&origin.organization, &ticket_id)
                .await?;
            if ticket.assignee() == Some(step.value.as_str()) {
                return Ok(());
            }
            crate::assignment::assign_by_automation(helpdesk, origin, &ticket_id, &step.value).await
        }
        AutomationKind::SetPriority => {
            let ticket_id = open_ticket(helpdesk, origin, ticket_id).await?;
            let priority: Priority = step
                .value
                .parse()
                .map_err(|e: String| ApiError::BadUserInput(e))?;
            helpdesk
                .execute(
                    &helpdesk.tickets,
                    &ticket_id,
                    TicketAction::ChangePriority { priority },
                    origin,
                    "changeTicketPriority",
                    Wait::No,
                )
                .await
                .map(|_| ())
        }
    }
}

/// The conversation's ticket, while it is open.
async fn open_ticket(
    helpdesk: &Helpdesk,
    origin: &Origin,
    ticket_id: Option<&str>,
) -> ApiResult<String> {
    let none = || ApiError::InvalidTransition("the conversation has no open ticket".into());
    let ticket_id = ticket_id.ok_or_else(none)?;
    let ticket = helpdesk
        .load_ticket(&origin.organization, ticket_id)
        .await?;
    match ticket.status() {
        Some(TicketStatus::Queued | TicketStatus::Assigned | TicketStatus::InProgress) => {
            Ok(ticket_id.to_string())
        }
        _ => Err(none()),
    }
}
