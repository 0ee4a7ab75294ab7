//! Mutations: each runs one or more commands through the helpdesk and answers from the
//! projections once they show the change (read-your-writes).

use async_graphql::{Context, InputObject, Object, ID};
use domain::division::DivisionProfile;
use domain::limits::{within, MAX_NAME_CHARS};
use domain::ticket::TicketAction;
use domain::Role;
use projections::tickets::CommentRecord;

use super::types::{
    Agent, AssignmentAlgorithm, AssignmentMode, BulkItemResult, BulkResult, Comment, Division,
    Priority, Ticket,
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
    /// Display name.
    pub name: String,
    /// Active tickets the agent may hold (default 5).
    pub max_tickets: Option<i64>,
    /// Divisions the agent serves.
    pub division_ids: Option<Vec<ID>>,
}

const WRITERS: &[Role] = &[Role::Admin, Role::Agent];

/// The write side.
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

    /// The calling agent takes a queued ticket.
    async fn claim_ticket(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Ticket> {
        act(
            ctx,
            &[Role::Agent],
            "claim tickets",
            &id,
            TicketAction::Claim,
        )
        .await
    }

    /// An admin gives a ticket to an agent (reassigns an assigned one).
    async fn assign_ticket(
        &self,
        ctx: &Context<'_>,
        id: ID,
        agent_id: ID,
    ) -> async_graphql::Result<Ticket> {
        let agent_id = self::agent_id(&agent_id)?;
        act(
            ctx,
            &[Role::Admin],
            "assign tickets",
            &id,
            TicketAction::Assign { agent_id },
        )
        .await
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
        bulk(ctx, "assign tickets", ids, |_| TicketAction::Assign {
            agent_id: agent_id.clone(),
        })
        .await
    }

    /// Changes the priority of many tickets; each item succeeds or fails on its own.
    async fn bulk_update_ticket_priority(
        &self,
        ctx: &Context<'_>,
        ids: Vec<ID>,
        priority: Priority,
    ) -> async_graphql::Result<BulkResult> {
        bulk(ctx, "change priorities in bulk", ids, |_| {
            TicketAction::ChangePriority {
                priority: priority.into(),
            }
        })
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
        let id = helpdesk
            .register_agent(
                caller,
                &request_id(ctx),
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
}

/// Most items one bulk call may carry.
const MAX_BULK: usize = 500;

async fn bulk(
    ctx: &Context<'_>,
    what: &str,
    ids: Vec<ID>,
    action: impl Fn(&str) -> TicketAction,
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
            Ok(ticket_id) => {
                helpdesk
                    .on_ticket(caller, &request_id, &ticket_id, action(&ticket_id))
                    .await
            }
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
