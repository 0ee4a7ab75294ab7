//! Assignment: how a ticket reaches an agent.
//!
//! **The saga** ([`Helpdesk::assign_ticket`], used by claims, admin assignments, bulk
//! assignment and the process below): read the ticket, let it judge the assignment, reserve
//! a slot in the agent's ledger for the ticket's current version (refused with
//! `CAPACITY_REACHED` when the agent is full), then assign the ticket with that reservation.
//! If the ticket step fails the reservation is released; a ticket that changed in between
//! ("stale") is tried again from the start.
//!
//! **The process manager** ([`AssignmentProcess`]) runs in the replica holding the
//! `assignment` lease. It follows the event log, and for every organization whose tickets,
//! agents, divisions or queue settings changed — and for all of them every few seconds — it
//! reconciles the organization with its rules, level-triggered rather than event by event:
//!
//! 1. slots whose ticket left the agent (resolved, closed, reassigned, requeued) or whose
//!    assignment never happened are released;
//! 2. under the REQUEUE offline policy, assigned, not started tickets of offline agents go
//!    back to their queue at their original place;
//! 3. every AUTO queue gives its oldest highest-priority tickets to eligible agents (online,
//!    in the division, with a free slot) chosen by the division's algorithm.
//!
//! Being level-triggered it needs no state of its own: whatever it missed (a crash, a lost
//! lease, a failed command) the next pass sees. The invariants — never over capacity, never
//! two owners — hold whatever it does, because the aggregates enforce them.

use chrono::{DateTime, Utc};
use domain::agent::AgentAction;
use domain::assignment::{choose, AssignmentDecision, Candidate};
use domain::division::{AssignmentAlgorithm, AssignmentMode};
use domain::queue_settings::OfflinePolicy;
use domain::ticket::{AssignmentVia, TicketAction};
use domain::{Actor, Command, Role};
use projections::tickets::NO_DIVISION;
use projections::{event_log, Checkpoint};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::helpdesk::{Helpdesk, Origin, Wait};

/// The lease the process manager runs under.
pub const ROLE: &str = "assignment";

/// A saga step that has not reached the ticket this long after its reservation gives up
/// (and releases): after [`RESERVATION_GRACE`] the process manager would release the slot
/// itself, and a late assignment must never land on a released slot.
const SAGA_DEADLINE: Duration = Duration::from_secs(20);

/// How old a reservation whose assignment never happened must be before the process
/// manager releases it (the saga that made it has given up long before).
const RESERVATION_GRACE_SECONDS: i64 = 60;

/// How often an interactive assignment pass waits for another saga busy with the same
/// ticket and agent.
const BUSY_RETRIES: u32 = 8;

/// How often a stale reservation is retried by the saga.
const SAGA_ATTEMPTS: u32 = 3;

/// How often every organization is reconciled, whatever the log says.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// How long the process waits for the projections to show a batch before deciding.
const PROJECTION_PATIENCE: Duration = Duration::from_secs(5);

/// The aggregate types whose events can change who should get what.
const RELEVANT: &[&str] = &["Ticket", "AgentStatus", "Division", "QueueSettings"];

/// The actor of the process manager's commands.
pub fn system_actor() -> Actor {
    Actor::new("system:assignment", Role::Service)
}

/// Which step of the saga refused.
#[derive(Debug)]
enum SagaFailure {
    /// The agent's ledger (unknown agent, no free slot, offline, outside the division).
    Slot(ApiError),
    /// The ticket (wrong status, not permitted, changed meanwhile).
    Ticket(ApiError),
}

impl SagaFailure {
    fn into_error(self) -> ApiError {
        match self {
            SagaFailure::Slot(e) | SagaFailure::Ticket(e) => e,
        }
    }
}

impl Helpdesk {
    /// Gives a ticket to an agent through the saga: the calling agent's claim
    /// (`agent_id` = `None`) or an admin's assignment.
    pub async fn assign_ticket(
        &self,
        caller: &Caller,
        request_id: &str,
        ticket_id: &str,
        agent_id: Option<String>,
    ) -> ApiResult<DateTime<Utc>> {
        let started = Instant::now();
        let origin = Origin::of(caller, request_id);
        let (agent_id, route, name) = match agent_id {
            None => (caller.actor.id.clone(), Route::Claim, "claimTicket"),
            Some(agent) => (agent, Route::Admin, "assignTicket"),
        };
        let result = assign_with_slot(
            self,
            &origin,
            ticket_id,
            &agent_id,
            &route,
            Wait::ForProjections,
        )
        .await
        .map_err(SagaFailure::into_error);
        // The whole saga is the client's command; its steps are measured under their own
        // names (reserveSlot, assignWithSlot, releaseSlot).
        self.measure(name, started, &result);
        result
    }
}

/// Gives a ticket to the agent a pipeline stage's automation names (the pipeline
/// process's step; the caller waits for the projections itself).
pub(crate) async fn assign_by_automation(
    helpdesk: &Helpdesk,
    origin: &Origin,
    ticket_id: &str,
    agent_id: &str,
) -> ApiResult<()> {
    assign_with_slot(
        helpdesk,
        origin,
        ticket_id,
        agent_id,
        &Route::Automation,
        Wait::No,
    )
    .await
    .map(|_| ())
    .map_err(SagaFailure::into_error)
}

/// How a ticket gets its agent: what the saga's assignment step says, and what it
/// carries.
enum Route {
    /// The agent takes it from the queue.
    Claim,
    /// An admin chose the agent.
    Admin,
    /// A pipeline stage's automation named the agent.
    Automation,
    /// The assignment process chose the agent.
    Auto(AssignmentDecision),
    /// Taken from `from_agent`, who did not answer in time.
    Escalation {
        decision: AssignmentDecision,
        from_agent: String,
    },
}

impl Route {
    fn via(&self) -> AssignmentVia {
        match self {
            Route::Claim => AssignmentVia::Claim,
            Route::Admin => AssignmentVia::Admin,
            Route::Automation => AssignmentVia::Automation,
            Route::Auto(_) => AssignmentVia::Auto,
            Route::Escalation { .. } => AssignmentVia::Escalation,
        }
    }

    /// The ticket command giving the ticket to `agent_id` with the slot reserved at
    /// `reservation`.
    fn action(&self, agent_id: &str, reservation: u64) -> TicketAction {
        let agent_id = agent_id.to_string();
        match self {
            Route::Claim => TicketAction::Claim { reservation },
            Route::Admin | Route::Automation => TicketAction::Assign {
                agent_id,
                reservation,
            },
            Route::Auto(decision) => TicketAction::AutoAssign {
                agent_id,
                reservation,
                decision: decision.clone(),
            },
            Route::Escalation {
                decision,
                from_agent,
            } => TicketAction::Escalate {
                from_agent_id: from_agent.clone(),
                agent_id,
                reservation,
                decision: decision.clone(),
            },
        }
    }
}

/// The saga: reserve the agent's slot for the ticket's current version, then assign.
async fn assign_with_slot(
    helpdesk: &Helpdesk,
    origin: &Origin,
    ticket_id: &str,
    agent_id: &str,
    route: &Route,
    wait: Wait,
) -> Result<DateTime<Utc>, SagaFailure> {
    let via = route.via();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let ticket = helpdesk
            .load_ticket(&origin.organization, ticket_id)
            .await
            .map_err(SagaFailure::Ticket)?;
        let reservation = ticket.version();
        let action = route.action(agent_id, reservation);
        // The ticket's verdict first, so a refused assignment never touches the agent.
        let judged = ticket.preview(&Command {
            organization: origin.organization.clone(),
            actor: origin.actor.clone(),
            action: action.clone(),
        });
        if let Err(refusal) = judged {
            return Err(SagaFailure::Ticket(ApiError::refused("ticket", refusal)));
        }
        let reserved_at = Instant::now();
        helpdesk
            .execute(
                &helpdesk.agents,
                agent_id,
                AgentAction::ReserveSlot {
                    ticket_id: ticket_id.to_string(),
                    ticket_version: reservation,
                    division_id: ticket.division_id().map(str::to_string),
                    via,
                    reservation_id: uuid::Uuid::new_v4().to_string(),
                },
                origin,
                "reserveSlot",
                Wait::No,
            )
            .await
            .map_err(SagaFailure::Slot)?;
        let outcome = if reserved_at.elapsed() > SAGA_DEADLINE {
            Err(ApiError::Conflict(
                "the assignment took too long and was abandoned; retry".into(),
            ))
        } else {
            helpdesk
                .execute(
                    &helpdesk.tickets,
                    ticket_id,
                    action,
                    origin,
                    "assignWithSlot",
                    wait,
                )
                .await
        };
        let error = match outcome {
            Ok(at) => return Ok(at),
            Err(error) => error,
        };
        // A lost answer may hide a success: then the slot is in use and stays.
        if let Ok(now) = helpdesk.load_ticket(&origin.organization, ticket_id).await {
            if now.assigned_with(agent_id, reservation) {
                if wait == Wait::ForProjections {
                    helpdesk
                        .wait_for_projections("Ticket", ticket_id)
                        .await
                        .map_err(SagaFailure::Ticket)?;
                }
                return Ok(Utc::now());
            }
        }
        release(helpdesk, origin, agent_id, ticket_id, reservation + 1).await;
        let stale = matches!(error, ApiError::Conflict(_));
        if !stale || attempt >= SAGA_ATTEMPTS {
            return Err(SagaFailure::Ticket(error));
        }
    }
}

/// Frees the agent's slot for the ticket if it was reserved before `ticket_version`.
async fn release(
    helpdesk: &Helpdesk,
    origin: &Origin,
    agent_id: &str,
    ticket_id: &str,
    ticket_version: u64,
) {
    let released = helpdesk
        .execute(
            &helpdesk.agents,
            agent_id,
            AgentAction::ReleaseSlot {
                ticket_id: ticket_id.to_string(),
                ticket_version,
            },
            origin,
            "releaseSlot",
            Wait::No,
        )
        .await;
    if let Err(error) = released {
        // The process manager finds the slot idle and releases it on its next pass.
        tracing::warn!(
            agent_id,
            ticket_id,
            code = error.code(),
            "slot release failed"
        );
    }
}

/// Gives waiting tickets of one queue (`division_id` `None`: tickets without a division)
/// to eligible agents, oldest highest-priority first, at most `limit` of them; each
/// assignment waits for the projections when `wait` says so. Returns how many were
/// assigned. Queues of CLAIM divisions are left to the agents.
pub(crate) async fn assign_waiting(
    helpdesk: &Helpdesk,
    organization: &str,
    division_id: Option<&str>,
    origin: &Origin,
    limit: Option<usize>,
    wait: Wait,
) -> usize {
    match try_assign_waiting(helpdesk, organization, division_id, origin, limit, wait).await {
        Ok(assigned) => assigned,
        Err(error) => {
            tracing::warn!(
                organization,
                division_id,
                code = error.code(),
                "automatic assignment pass failed"
            );
            0
        }
    }
}

async fn try_assign_waiting(
    helpdesk: &Helpdesk,
    organization: &str,
    division_id: Option<&str>,
    origin: &Origin,
    limit: Option<usize>,
    wait: Wait,
) -> ApiResult<usize> {
    let db = &helpdesk.db;
    let algorithm = match division_id {
        None => AssignmentAlgorithm::RoundRobin,
        Some(division) => {
            let Some(record) = projections::divisions::division(db, organization, division).await?
            else {
                return Ok(0);
            };
            if record.mode() == Some(AssignmentMode::Claim) {
                return Ok(0);
            }
            record.algorithm().unwrap_or_default()
        }
    };
    let mut agents = projections::agents::workload(db, organization, division_id).await?;
    let free: i64 = agents
        .iter()
        .filter(|a| a.has_free_slot())
        .map(|a| a.agent.max_tickets - a.active_tickets)
        .sum();
    if free <= 0 {
        return Ok(0);
    }
    let wanted = limit.map_or(free, |l| free.min(l as i64));
    let heads =
        projections::queue::heads(db, organization, division_id.unwrap_or(NO_DIVISION), wanted)
            .await?;
    let origin = Origin {
        actor: system_actor(),
        ..origin.clone()
    };
    // Agents whose ledger refused a slot in this pass (a release not yet seen, a presence
    // change): not offered again until the next pass.
    let mut refused: BTreeSet<String> = BTreeSet::new();
    let mut assigned = 0;
    'tickets: for (ticket_id, _) in heads {
        let mut busy_retries = 0u32;
        loop {
            let candidates = candidates(&agents, |id| refused.contains(id));
            let Some(decision) = choose(algorithm, &candidates, rand::random()) else {
                break 'tickets;
            };
            let winner = decision.winner.clone();
            let started = Instant::now();
            let outcome = assign_with_slot(
                helpdesk,
                &origin,
                &ticket_id,
                &winner,
                &Route::Auto(decision),
                wait,
            )
            .await;
            let measured = match &outcome {
                Ok(at) => Ok(*at),
                Err(SagaFailure::Slot(e) | SagaFailure::Ticket(e)) => Err(e.clone()),
            };
            helpdesk.measure("autoAssignTicket", started, &measured);
            match outcome {
                Ok(at) => {
                    assigned += 1;
                    if let Some(agent) = agents.iter_mut().find(|a| a.agent.id == winner) {
                        agent.active_tickets += 1;
                        agent.last_assigned_at = Some(projections::db::timestamp(at));
                    }
                    continue 'tickets;
                }
                Err(SagaFailure::Slot(ApiError::Conflict(_))) => {
                    // Another saga is assigning this ticket to this agent right now. The
                    // process moves on; a caller waiting for the answer gives it a moment,
                    // so that it answers with the assignment once it has landed.
                    busy_retries += 1;
                    if wait == Wait::No || busy_retries > BUSY_RETRIES {
                        continue 'tickets;
                    }
                    tokio::time::sleep(Duration::from_millis(10 * busy_retries as u64)).await;
                }
                Err(SagaFailure::Slot(error)) => {
                    tracing::debug!(agent = winner, code = error.code(), "slot refused");
                    refused.insert(winner);
                }
                Err(SagaFailure::Ticket(error)) => {
                    // Claimed, reprioritised or closed meanwhile: the next pass sees it.
                    tracing::debug!(ticket = ticket_id, code = error.code(), "ticket refused");
                    continue 'tickets;
                }
            }
        }
    }
    Ok(assigned)
}

/// The agents of a division's workload as the assignment policy sees them, but those
/// `passed_over` says to skip.
fn candidates(
    agents: &[projections::agents::AgentWorkload],
    passed_over: impl Fn(&str) -> bool,
) -> Vec<Candidate> {
    agents
        .iter()
        .filter(|a| !passed_over(&a.agent.id))
        .map(|a| Candidate {
            agent_id: a.agent.id.clone(),
            online: a.agent.online,
            serves_division: true,
            active: a.active_tickets,
            max_tickets: a.agent.max_tickets,
            last_assigned_at: a
                .last_assigned_at
                .as_deref()
                .and_then(|t| projections::db::parse_timestamp(t).ok()),
        })
        .collect()
}

/// Takes `ticket_id` from `from_agent`, who did not answer its customer within
/// `after_seconds`, and gives it to the agent the division's policy chooses among the
/// others (online, serving the division, with a free slot). Returns the new agent, or
/// `None` when nobody else can take it now (the ticket stays; the next pass looks again).
pub(crate) async fn escalate(
    helpdesk: &Helpdesk,
    origin: &Origin,
    ticket_id: &str,
    from_agent: &str,
    after_seconds: i64,
) -> ApiResult<Option<String>> {
    let db = &helpdesk.db;
    let ticket = helpdesk
        .load_ticket(&origin.organization, ticket_id)
        .await?;
    let division_id = ticket.division_id().map(str::to_string);
    let algorithm = match &division_id {
        Some(division) => projections::divisions::division(db, &origin.organization, division)
            .await?
            .and_then(|d| d.algorithm())
            .unwrap_or_default(),
        None => AssignmentAlgorithm::RoundRobin,
    };
    let agents =
        projections::agents::workload(db, &origin.organization, division_id.as_deref()).await?;
    let candidates = candidates(&agents, |id| id == from_agent);
    let Some(mut decision) = choose(algorithm, &candidates, rand::random()) else {
        return Ok(None);
    };
    decision.reason = format!(
        "escalated: agent {from_agent} did not answer the customer within {after_seconds} s; {}",
        decision.reason
    );
    let winner = decision.winner.clone();
    let started = Instant::now();
    let route = Route::Escalation {
        decision,
        from_agent: from_agent.to_string(),
    };
    let outcome = assign_with_slot(helpdesk, origin, ticket_id, &winner, &route, Wait::No)
        .await
        .map_err(SagaFailure::into_error);
    helpdesk.measure("escalateTicket", started, &outcome);
    outcome.map(|_| Some(winner))
}

/// One pass over an organization: release idle slots, requeue for offline agents, fill
/// every AUTO queue. `cause` names the newest event that prompted the pass
/// (`type/id/sequence`), recorded as the causation of the commands it issues.
async fn reconcile(
    helpdesk: &Helpdesk,
    organization: &str,
    cause: Option<String>,
) -> ApiResult<usize> {
    let origin = Origin {
        organization: organization.to_string(),
        actor: system_actor(),
        request_id: format!("assignment-{}", uuid::Uuid::new_v4()),
        causation_id: cause,
    };
    release_idle_slots(helpdesk, &origin).await?;
    let settings = projections::queue_settings::settings(&helpdesk.db, organization).await?;
    if settings.offline_policy == OfflinePolicy::Requeue {
        for (ticket_id, agent_id) in
            projections::tickets::assigned_to_offline_agents(&helpdesk.db, organization).await?
        {
            let requeued = helpdesk
                .execute(
                    &helpdesk.tickets,
                    &ticket_id,
                    TicketAction::Requeue { agent_id },
                    &origin,
                    "requeueTicket",
                    Wait::No,
                )
                .await;
            if let Err(error) = requeued {
                tracing::debug!(ticket = ticket_id, code = error.code(), "requeue refused");
            }
        }
    }
    let mut assigned = 0;
    for key in projections::queue::waiting_divisions(&helpdesk.db, organization).await? {
        let division = (key != NO_DIVISION).then_some(key.as_str());
        // Nobody waits for the process's answers: it decides on its own bookkeeping and
        // waits for the projections once per batch instead.
        assigned += assign_waiting(helpdesk, organization, division, &origin, None, Wait::No).await;
    }
    Ok(assigned)
}

/// Releases slots whose ticket moved on without (or away from) their agent; a reservation
/// whose assignment never happened is released once it is older than the saga can live.
async fn release_idle_slots(helpdesk: &Helpdesk, origin: &Origin) -> ApiResult<()> {
    let now = Utc::now();
    for slot in projections::agents::idle_slots(&helpdesk.db, &origin.organization).await? {
        let reserved = slot.ticket_version as u64;
        let ended = match slot.current_version {
            // The ticket moved past the reservation and is not the agent's as of that version:
            // a newer reservation of the same ticket would not be touched by this release.
            Some(current) if current as u64 > reserved => current as u64,
            _ => {
                let old_enough = projections::db::parse_timestamp(&slot.reserved_at)
                    .map(|at| (now - at).num_seconds() >= RESERVATION_GRACE_SECONDS)
                    .unwrap_or(true);
                if !old_enough {
                    continue; // a saga may be between its two steps
                }
                match helpdesk
                    .load_ticket(&origin.organization, &slot.ticket_id)
                    .await
                {
                    Ok(ticket) if ticket.assigned_with(&slot.agent_id, reserved) => continue,
                    Ok(ticket) => ticket.version().max(reserved + 1),
                    Err(_) => reserved + 1,
                }
            }
        };
        release(helpdesk, origin, &slot.agent_id, &slot.ticket_id, ended).await;
    }
    Ok(())
}

/// The assignment process manager (see the module documentation).
pub struct AssignmentProcess;

impl AssignmentProcess {
    /// Runs the process whenever this replica holds the `assignment` lease, until
    /// `shutdown`.
    pub fn spawn(
        helpdesk: Arc<Helpdesk>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move { run(helpdesk, shutdown).await })
    }
}

async fn run(helpdesk: Arc<Helpdesk>, shutdown: CancellationToken) {
    let mut lease = helpdesk.leases.watch(ROLE);
    let mut wake = helpdesk.log_signal().subscribe();
    loop {
        if !projections::lease::until_held(&mut lease, &shutdown).await {
            return;
        }
        tracing::info!("running the assignment process here");
        // Everything before the head is covered by the first sweep.
        let mut cursor = match event_log::log_head(&helpdesk.db).await {
            Ok(head) => head,
            Err(error) => {
                tracing::warn!(%error, "assignment process cannot read the log head");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut next_sweep = tokio::time::Instant::now();
        while *lease.borrow() && !shutdown.is_cancelled() {
            if tokio::time::Instant::now() >= next_sweep {
                sweep(&helpdesk).await;
                next_sweep = tokio::time::Instant::now() + SWEEP_EVERY;
            }
            match event_log::read_after(&helpdesk.db, cursor, 1000).await {
                Ok(events) if !events.is_empty() => {
                    cursor = events.last().map(|e| e.checkpoint).unwrap_or(cursor);
                    let mut organizations: BTreeMap<String, String> = BTreeMap::new();
                    let mut newest: BTreeMap<&str, Checkpoint> = BTreeMap::new();
                    for event in &events {
                        if let Some(kind) = RELEVANT
                            .iter()
                            .find(|t| **t == event.aggregate_type.as_str())
                        {
                            organizations.insert(
                                event.metadata.organization.clone(),
                                format!(
                                    "{}/{}/{}",
                                    event.aggregate_type, event.aggregate_id, event.sequence
                                ),
                            );
                            newest.insert(*kind, event.checkpoint);
                        }
                    }
                    // Decide on read models that include these events.
                    for (kind, checkpoint) in newest {
                        let _ = helpdesk
                            .progress
                            .wait_for(kind, checkpoint, PROJECTION_PATIENCE)
                            .await;
                    }
                    for (organization, cause) in organizations {
                        if let Err(error) = reconcile(&helpdesk, &organization, Some(cause)).await {
                            tracing::warn!(organization, code = error.code(), "reconcile failed");
                        }
                    }
                    helpdesk.assignment_progress.send_replace(cursor);
                }
                Ok(_) => {
                    helpdesk.assignment_progress.send_replace(cursor);
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = lease.changed() => {}
                        _ = wake.changed() => {}
                        _ = tokio::time::sleep_until(next_sweep) => {}
                        _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "assignment process cannot read the log");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        if shutdown.is_cancelled() {
            return;
        }
        tracing::info!("assignment lease lost");
    }
}

/// Reconciles every organization that has agents.
async fn sweep(helpdesk: &Helpdesk) {
    let organizations = match projections::agents::organizations(&helpdesk.db).await {
        Ok(organizations) => organizations,
        Err(error) => {
            tracing::warn!(%error, "assignment sweep cannot list organizations");
            return;
        }
    };
    for organization in organizations {
        if let Err(error) = reconcile(helpdesk, &organization, None).await {
            tracing::warn!(organization, code = error.code(), "reconcile failed");
        }
    }
}
