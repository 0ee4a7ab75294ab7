//! Mutations: each runs one or more commands through the helpdesk and answers from the
//! projections once they show the change (read-your-writes).

use async_graphql::{Context, InputObject, Object, ID};
use domain::agent::AgentAction;
use domain::division::{DivisionChanges, DivisionProfile};
use domain::limits::{within, MAX_NAME_CHARS};
use domain::queue_settings::QueueSettingsChanges;
use domain::ticket::TicketAction;
use domain::Role;
use projections::tickets::CommentRecord;

use super::types::{
    Agent, AssignmentAlgorithm, AssignmentMode, BulkItemResult, BulkResult, Comment, Division,
    OfflinePolicy, Priority, QueueSettings, Ticket,
};
use super::{caller_in, helpdesk, parse_uuid, request_id};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::helpdesk::{Helpdesk, NewTicket};

/// The contract's `CreateTicketInput`.
#[derive(InputObject)]
pub struct CreateTicketInput {
    /// One-line summary (1..250 characters).
    pub subject: String,
    /// Details.
    pub description: Option<String>,
    /// Omitted -> detected from keywords in subject and description, else MEDIUM.
    pub priority: Option<Priority>,
    /// The division whose queue the ticket joins.
    pub division_id: Option<ID>,
}

/// The contract's `createDivision` input.
#[derive(InputObject)]
pub struct CreateDivisionInput {
    /// Shown in the menu.
    pub name: String,
    /// Shown under the name.
    pub description: Option<String>,
    /// Words that route customers here.
    pub keywords: Option<Vec<String>>,
    /// Place in the menu (1-based).
    pub position: Option<i64>,
    /// Default AUTO.
    pub assignment_mode: Option<AssignmentMode>,
    /// Default ROUND_ROBIN.
    pub algorithm: Option<AssignmentAlgorithm>,
    /// Default 10.
    pub avg_handling_minutes: Option<i64>,
}

/// The contract's `registerAgent` input.
#[derive(InputObject)]
pub struct RegisterAgentInput {
    /// The agent's id, the `sub` of their tokens (e.g. their id in your identity provider);
    /// omitted -> a new UUID. An id already registered is a `CONFLICT`.
    pub id: Option<ID>,
    /// Display name.
    pub name: String,
    /// Active tickets the agent may hold (default 5).
    pub max_tickets: Option<i64>,
    /// Divisions the agent serves.
    pub division_ids: Option<Vec<ID>>,
}

/// The contract's `updateQueueSettings` input; omitted fields stay as they are.
#[derive(InputObject)]
pub struct QueueSettingsInput {
    /// Queue mode on or off.
    pub enabled: Option<bool>,
    /// The first line of the division menu.
    pub welcome_message: Option<String>,
    /// Sent when a customer joins a queue; `{division}`, `{queue_number}`.
    pub queue_message_template: Option<String>,
    /// What a customer writes to ask for their place (at most 10 characters).
    pub check_queue_keyword: Option<String>,
    /// The answer to the check keyword.
    pub queue_position_message: Option<String>,
    /// Sent when no agent is online.
    pub no_agent_available_message: Option<String>,
    /// KEEP or REQUEUE.
    pub offline_policy: Option<OfflinePolicy>,
    /// 0 (never) to 604800.
    pub escalation_after_seconds: Option<i64>,
    /// Show "(N antrian, ~M menit)" after each division of the menu.
    pub show_wait_time: Option<bool>,
    /// Pick the division from a first message that clearly names one.
    pub detect_division: Option<bool>,
    /// Sent when an agent takes the ticket; `{agent_name}`, `{division}`.
    pub agent_ready_message: Option<String>,
}

/// `updateDivision` input; omitted fields stay as they are.
#[derive(InputObject)]
pub struct UpdateDivisionInput {
    /// Shown in the menu.
    pub name: Option<String>,
    /// Shown under the name.
    pub description: Option<String>,
    /// Words that route customers here.
    pub keywords: Option<Vec<String>>,
    /// Place in the menu (1-based).
    pub position: Option<i64>,
    /// AUTO or CLAIM.
    pub assignment_mode: Option<AssignmentMode>,
    /// ROUND_ROBIN, LEAST_LOADED or RANDOM.
    pub algorithm: Option<AssignmentAlgorithm>,
    /// Typical handling time.
    pub avg_handling_minutes: Option<i64>,
}

const WRITERS: &[Role] = &[Role::Admin, Role::Agent];

/// Sets the calling agent's own presence: agents change only their own.
async fn presence(ctx: &Context<'_>, action: AgentAction) -> async_graphql::Result<Agent> {
    let caller = caller_in(ctx, &[Role::Agent], "change their presence")?;
    let agent_id = caller.actor.id.clone();
    agent_command(ctx, caller, &agent_id, action).await
}

/// An admin's command on an agent.
async fn on_agent(
    ctx: &Context<'_>,
    what: &str,
    agent_id: &str,
    action: AgentAction,
) -> async_graphql::Result<Agent> {
    let caller = caller_in(ctx, &[Role::Admin], what)?;
    agent_command(ctx, caller, agent_id, action).await
}

async fn agent_command(
    ctx: &Context<'_>,
    caller: &Caller,
    agent_id: &str,
    action: AgentAction,
) -> async_graphql::Result<Agent> {
    let helpdesk = helpdesk(ctx)?;
    helpdesk
        .on_agent(caller, &request_id(ctx), agent_id, action)
        .await?;
    let record = projections::agents::agent(&helpdesk.db, &caller.organization, agent_id)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| ApiError::NotFound("agent not found".into()))?;
    Ok(Agent::from(record))
}

/// The write side.
#[derive(Default)]
pub struct Mutation;

async fn ticket_after(helpdesk: &Helpdesk, caller: &Caller, id: &str) -> ApiResult<Ticket> {
    let record = projections::tickets::ticket(&helpdesk.db, &caller.organization, id)
        .await?
        .ok_or_else(|| {
            ApiError::internal(format!("ticket {id} was changed but is not visible yet"))
        })?;
    Ticket::from_record(record)
}

async fn act(
    ctx: &Context<'_>,
    roles: &[Role],
    what: &str,
    id: &ID,
    action: TicketAction,
) -> async_graphql::Result<Ticket> {
    let caller = caller_in(ctx, roles, what)?;
    let helpdesk = helpdesk(ctx)?;
    let id = parse_uuid(id, "ticket")?;
    helpdesk
        .on_ticket(caller, &request_id(ctx), &id, action)
        .await?;
    Ok(ticket_after(helpdesk, caller, &id).await?)
}

fn agent_id(id: &ID) -> ApiResult<String> {
    let id = id.trim();
    if id.is_empty() || !within(id, MAX_NAME_CHARS) {
        return Err(ApiError::bad_input("agentId must be 1 to 120 characters"));
    }
    Ok(id.to_string())
}

#[Object]
impl Mutation {
    /// Opens a ticket in its division's queue.
    async fn create_ticket(
        &self,
        ctx: &Context<'_>,
        input: CreateTicketInput,
    ) -> async_graphql::Result<Ticket> {
        let caller = caller_in(
            ctx,
            &[Role::Admin, Role::Agent, Role::Service],
            "create tickets",
        )?;
        let helpdesk = helpdesk(ctx)?;
        let division_id = input
            .division_id
            .map(|d| parse_uuid(&d, "division"))
            .transpose()?;
        let created = helpdesk
            .create_ticket(
                caller,
                &request_id(ctx),
                NewTicket {
                    subject: input.subject,
                    description: input.description,
                    priority: input.priority.map(Into::into),
                    division_id,
                },
            )
            .await?;
        let visible = projections::tickets::ticket(&helpdesk.db, &caller.organization, &created.id)
            .await
            .map_err(ApiError::from)?;
        Ok(Ticket::from_record(visible.unwrap_or(created))?)
    }

    /// The calling agent takes a queued ticket (within their divisions and capacity).
    async fn claim_ticket(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Ticket> {
        let caller = caller_in(ctx, &[Role::Agent], "claim tickets")?;
        let helpdesk = helpdesk(ctx)?;
        let id = parse_uuid(&id, "ticket")?;
        helpdesk
            .assign_ticket(caller, &request_id(ctx), &id, None)
            .await?;
        Ok(ticket_after(helpdesk, caller, &id).await?)
    }

    /// An admin gives a ticket to an agent (reassigns an assigned one).
    async fn assign_ticket(
        &self,
        ctx: &Context<'_>,
        id: ID,
        agent_id: ID,
    ) -> async_graphql::Result<Ticket> {
        let caller = caller_in(ctx, &[Role::Admin], "assign tickets")?;
        let helpdesk = helpdesk(ctx)?;
        let agent_id = self::agent_id(&agent_id)?;
        let id = parse_uuid(&id, "ticket")?;
        helpdesk
            .assign_ticket(caller, &request_id(ctx), &id, Some(agent_id))
            .await?;
        Ok(ticket_after(helpdesk, caller, &id).await?)
    }

    /// The assignee starts working.
    async fn start_ticket(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Ticket> {
        act(ctx, WRITERS, "start tickets", &id, TicketAction::Start).await
    }

    /// The work is done.
    async fn resolve_ticket(
        &self,
        ctx: &Context<'_>,
        id: ID,
        resolution: Option<String>,
    ) -> async_graphql::Result<Ticket> {
        act(
            ctx,
            WRITERS,
            "resolve tickets",
            &id,
            TicketAction::Resolve { resolution },
        )
        .await
    }

    /// The ticket is filed away.
    async fn close_ticket(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Ticket> {
        act(ctx, WRITERS, "close tickets", &id, TicketAction::Close).await
    }

    /// A resolved or closed ticket goes back to the queue.
    async fn reopen_ticket(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: Option<String>,
    ) -> async_graphql::Result<Ticket> {
        act(
            ctx,
            WRITERS,
            "reopen tickets",
            &id,
            TicketAction::Reopen { reason },
        )
        .await
    }

    /// Moves a ticket to another priority (and place in its queue).
    async fn change_ticket_priority(
        &self,
        ctx: &Context<'_>,
        id: ID,
        priority: Priority,
    ) -> async_graphql::Result<Ticket> {
        act(
            ctx,
            WRITERS,
            "change priorities",
            &id,
            TicketAction::ChangePriority {
                priority: priority.into(),
            },
        )
        .await
    }

    /// Adds a comment to a ticket.
    async fn add_comment(
        &self,
        ctx: &Context<'_>,
        ticket_id: ID,
        text: String,
    ) -> async_graphql::Result<Comment> {
        let caller = caller_in(
            ctx,
            &[Role::Admin, Role::Agent, Role::Service],
            "comment on tickets",
        )?;
        let helpdesk = helpdesk(ctx)?;
        let ticket_id = parse_uuid(&ticket_id, "ticket")?;
        let comment_id = uuid::Uuid::new_v4().to_string();
        let at = helpdesk
            .on_ticket(
                caller,
                &request_id(ctx),
                &ticket_id,
                TicketAction::AddComment {
                    comment_id: comment_id.clone(),
                    text: text.clone(),
                },
            )
            .await?;
        let visible =
            projections::tickets::comment(&helpdesk.db, &caller.organization, &comment_id)
                .await
                .map_err(ApiError::from)?;
        // The event is committed: if the read model lags, answer from what was recorded
        // (an error would make the client comment twice).
        let record = visible.unwrap_or_else(|| CommentRecord {
            id: comment_id,
            ticket_id,
            author_id: caller.actor.id.clone(),
            text: text.trim().to_string(),
            created_at: projections::db::timestamp(at),
        });
        Ok(Comment::from_record(record)?)
    }

    /// The customer's rating (1..5) of a resolved or closed ticket.
    async fn rate_ticket(
        &self,
        ctx: &Context<'_>,
        id: ID,
        rating: i32,
        feedback: Option<String>,
    ) -> async_graphql::Result<Ticket> {
        act(
            ctx,
            &[Role::Admin, Role::Service],
            "rate tickets",
            &id,
            TicketAction::Rate { rating, feedback },
        )
        .await
    }

    /// Assigns many tickets to one agent; each item succeeds or fails on its own.
    async fn bulk_assign_tickets(
        &self,
        ctx: &Context<'_>,
        ids: Vec<ID>,
        agent_id: ID,
    ) -> async_graphql::Result<BulkResult> {
        let agent_id = self::agent_id(&agent_id)?;
        bulk(ctx, "assign tickets", ids, BulkAction::Assign(agent_id)).await
    }

    /// Changes the priority of many tickets; each item succeeds or fails on its own.
    async fn bulk_update_ticket_priority(
        &self,
        ctx: &Context<'_>,
        ids: Vec<ID>,
        priority: Priority,
    ) -> async_graphql::Result<BulkResult> {
        bulk(
            ctx,
            "change priorities in bulk",
            ids,
            BulkAction::Priority(priority.into()),
        )
        .await
    }

    /// Registers an agent (admin). Give the agent a token with `sub` = the returned id.
    async fn register_agent(
        &self,
        ctx: &Context<'_>,
        input: RegisterAgentInput,
    ) -> async_graphql::Result<Agent> {
        let caller = caller_in(ctx, &[Role::Admin], "register agents")?;
        let helpdesk = helpdesk(ctx)?;
        let division_ids = input
            .division_ids
            .unwrap_or_default()
            .iter()
            .map(|d| parse_uuid(d, "division"))
            .collect::<ApiResult<Vec<_>>>()?;
        let chosen_id = input.id.as_ref().map(agent_id).transpose()?;
        let id = helpdesk
            .register_agent(
                caller,
                &request_id(ctx),
                chosen_id,
                input.name,
                input
                    .max_tickets
                    .unwrap_or(domain::agent::DEFAULT_MAX_TICKETS),
                division_ids,
            )
            .await?;
        let record = projections::agents::agent(&helpdesk.db, &caller.organization, &id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::internal("agent recorded but not visible yet"))?;
        Ok(Agent::from(record))
    }

    /// Creates a division (admin).
    async fn create_division(
        &self,
        ctx: &Context<'_>,
        input: CreateDivisionInput,
    ) -> async_graphql::Result<Division> {
        let caller = caller_in(ctx, &[Role::Admin], "create divisions")?;
        let helpdesk = helpdesk(ctx)?;
        let profile = DivisionProfile {
            name: input.name,
            description: input.description,
            keywords: input.keywords.unwrap_or_default(),
            position: input.position,
            assignment_mode: input.assignment_mode.map(Into::into).unwrap_or_default(),
            algorithm: input.algorithm.map(Into::into).unwrap_or_default(),
            avg_handling_minutes: input.avg_handling_minutes.unwrap_or(10),
        };
        let id = helpdesk
            .create_division(caller, &request_id(ctx), profile)
            .await?;
        let record = projections::divisions::division(&helpdesk.db, &caller.organization, &id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::internal("division recorded but not visible yet"))?;
        Ok(Division::from_record(record)?)
    }

    /// The calling agent starts taking tickets.
    async fn go_online(&self, ctx: &Context<'_>) -> async_graphql::Result<Agent> {
        presence(ctx, AgentAction::GoOnline).await
    }

    /// The calling agent stops taking new tickets (what happens to their tickets follows
    /// the organization's offline policy).
    async fn go_offline(&self, ctx: &Context<'_>) -> async_graphql::Result<Agent> {
        presence(ctx, AgentAction::GoOffline).await
    }

    /// Changes how many active tickets an agent may hold (admin). Raising it lets queued
    /// tickets flow to the agent at once; lowering it never takes tickets away.
    async fn set_agent_capacity(
        &self,
        ctx: &Context<'_>,
        agent_id: ID,
        max_tickets: i64,
    ) -> async_graphql::Result<Agent> {
        let agent_id = self::agent_id(&agent_id)?;
        on_agent(
            ctx,
            "change agents' capacity",
            &agent_id,
            AgentAction::SetCapacity { max_tickets },
        )
        .await
    }

    /// Changes the divisions an agent serves (admin).
    async fn set_agent_divisions(
        &self,
        ctx: &Context<'_>,
        agent_id: ID,
        division_ids: Vec<ID>,
    ) -> async_graphql::Result<Agent> {
        let agent_id = self::agent_id(&agent_id)?;
        let division_ids = division_ids
            .iter()
            .map(|d| parse_uuid(d, "division"))
            .collect::<ApiResult<Vec<_>>>()?;
        on_agent(
            ctx,
            "change agents' divisions",
            &agent_id,
            AgentAction::SetDivisions { division_ids },
        )
        .await
    }

    /// Changes a division's settings (admin); omitted fields stay as they are.
    async fn update_division(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateDivisionInput,
    ) -> async_graphql::Result<Division> {
        let caller = caller_in(ctx, &[Role::Admin], "change divisions")?;
        let helpdesk = helpdesk(ctx)?;
        let id = parse_uuid(&id, "division")?;
        let changes = DivisionChanges {
            name: input.name,
            description: input.description.map(Some),
            keywords: input.keywords,
            position: input.position.map(Some),
            assignment_mode: input.assignment_mode.map(Into::into),
            algorithm: input.algorithm.map(Into::into),
            avg_handling_minutes: input.avg_handling_minutes,
        };
        helpdesk
            .update_division(caller, &request_id(ctx), &id, changes)
            .await?;
        let record = projections::divisions::division(&helpdesk.db, &caller.organization, &id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::NotFound("division not found".into()))?;
        Ok(Division::from_record(record)?)
    }

    /// Changes the organization's queue texts and policies (admin); omitted fields stay.
    async fn update_queue_settings(
        &self,
        ctx: &Context<'_>,
        input: QueueSettingsInput,
    ) -> async_graphql::Result<QueueSettings> {
        let caller = caller_in(ctx, &[Role::Admin], "change queue settings")?;
        let helpdesk = helpdesk(ctx)?;
        let changes = QueueSettingsChanges {
            enabled: input.enabled,
            welcome_message: input.welcome_message,
            queue_message_template: input.queue_message_template,
            check_queue_keyword: input.check_queue_keyword,
            queue_position_message: input.queue_position_message,
            no_agent_available_message: input.no_agent_available_message,
            offline_policy: input.offline_policy.map(Into::into),
            escalation_after_seconds: input.escalation_after_seconds,
            show_wait_time: input.show_wait_time,
            detect_division: input.detect_division,
            agent_ready_message: input.agent_ready_message,
        };
        helpdesk
            .update_queue_settings(caller, &request_id(ctx), changes)
            .await?;
        let settings = projections::queue_settings::settings(&helpdesk.db, &caller.organization)
            .await
            .map_err(ApiError::from)?;
        Ok(settings.into())
    }
}

/// Most items one bulk call may carry.
const MAX_BULK: usize = 500;

/// What a bulk call does to each ticket.
enum BulkAction {
    Assign(String),
    Priority(domain::Priority),
}

async fn bulk(
    ctx: &Context<'_>,
    what: &str,
    ids: Vec<ID>,
    action: BulkAction,
) -> async_graphql::Result<BulkResult> {
    let caller = caller_in(ctx, &[Role::Admin], what)?;
    let helpdesk = helpdesk(ctx)?;
    if ids.len() > MAX_BULK {
        return Err(ApiError::bad_input(format!("at most {MAX_BULK} ids per call")).into());
    }
    let request_id = request_id(ctx);
    let mut results = Vec::with_capacity(ids.len());
    for id in ids {
        let outcome = match parse_uuid(&id, "ticket") {
            Ok(ticket_id) => match &action {
                BulkAction::Assign(agent_id) => {
                    helpdesk
                        .assign_ticket(caller, &request_id, &ticket_id, Some(agent_id.clone()))
                        .await
                }
                BulkAction::Priority(priority) => {
                    helpdesk
                        .on_ticket(
                            caller,
                            &request_id,
                            &ticket_id,
                            TicketAction::ChangePriority {
                                priority: *priority,
                            },
                        )
                        .await
                }
            },
            Err(e) => Err(e),
        };
        results.push(BulkItemResult {
            id,
            success: outcome.is_ok(),
            code: outcome.as_ref().err().map(|e| e.code().to_string()),
            error: outcome.err().map(|e| e.message().to_string()),
        });
    }
    let succeeded = results.iter().filter(|r| r.success).count() as i64;
    Ok(BulkResult {
        total: results.len() as i64,
        succeeded,
        failed: results.len() as i64 - succeeded,
        results,
    })
}
