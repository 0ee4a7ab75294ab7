//! Queries: read straight from the projections, confined to the caller's organization.

use async_graphql::{Context, InputObject, Object, ID};
use projections::tickets::TicketFilter as TicketFilterRecord;

use super::types::{
    parse_queue_cursor, parse_ticket_cursor, queue_cursor, ticket_cursor, Agent, AgentWorkload,
    Division, MyQueue, Priority, QueueConnection, QueueEdge, QueueEntry, QueueSettings, Ticket,
    TicketConnection, TicketEdge, TicketStatus,
};
use super::{caller, caller_in, helpdesk, page_size, parse_uuid};
use crate::conversations::DEFAULT_HANDLING_MINUTES;
use crate::error::{ApiError, ApiResult};
use domain::Role;

/// The contract's `TicketFilter`.
#[derive(InputObject, Default)]
pub struct TicketFilter {
    /// Any of these statuses.
    pub status: Option<Vec<TicketStatus>>,
    /// Any of these priorities.
    pub priority: Option<Vec<Priority>>,
    /// Only this division.
    pub division_id: Option<ID>,
    /// Only this agent's tickets.
    pub assignee_id: Option<ID>,
    /// Words in subject or description, or a number (`42`, `#42`).
    pub search: Option<String>,
}

/// The read side.
#[derive(Default)]
pub struct Query;

/// A page costs its node selection once per requested item (out-of-range sizes are refused
/// by the resolver, so they are priced as the largest page here).
fn page_cost(first: Option<i32>, child_complexity: usize) -> usize {
    let items = first.unwrap_or(20).clamp(1, super::MAX_PAGE) as usize;
    items.saturating_mul(child_complexity).saturating_add(1)
}

#[Object]
impl Query {
    /// One ticket of the caller's organization.
    async fn ticket(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Ticket>> {
        let caller = caller(ctx)?;
        let id = parse_uuid(&id, "ticket")?;
        let record = projections::tickets::ticket(&helpdesk(ctx)?.db, &caller.organization, &id)
            .await
            .map_err(ApiError::from)?;
        Ok(record.map(Ticket::from_record).transpose()?)
    }

    /// Tickets of the caller's organization, newest first.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn tickets(
        &self,
        ctx: &Context<'_>,
        filter: Option<TicketFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<TicketConnection> {
        let caller = caller(ctx)?;
        let first = page_size(first)?;
        let after = after.as_deref().map(parse_ticket_cursor).transpose()?;
        let filter = filter.unwrap_or_default();
        let filter = TicketFilterRecord {
            statuses: filter
                .status
                .unwrap_or_default()
                .into_iter()
                .map(Into::into)
                .collect(),
            priorities: filter
                .priority
                .unwrap_or_default()
                .into_iter()
                .map(Into::into)
                .collect(),
            division_id: filter.division_id.map(|d| d.0),
            assignee_id: filter.assignee_id.map(|a| a.0),
            search: filter.search,
        };
        let page = projections::tickets::tickets(
            &helpdesk(ctx)?.db,
            &caller.organization,
            &filter,
            first,
            after,
        )
        .await
        .map_err(ApiError::from)?;
        let edges = page
            .tickets
            .into_iter()
            .map(|record| {
                Ok(TicketEdge {
                    cursor: ticket_cursor(record.number),
                    node: Ticket::from_record(record)?,
                })
            })
            .collect::<ApiResult<Vec<_>>>()?;
        Ok(TicketConnection::new(
            edges,
            page.has_next_page,
            page.total_count,
        ))
    }

    /// The queue of a division (without `divisionId`: of tickets that have no division), in
    /// the order tickets will be served.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn queue(
        &self,
        ctx: &Context<'_>,
        division_id: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<QueueConnection> {
        let caller = caller(ctx)?;
        let helpdesk = helpdesk(ctx)?;
        let first = page_size(first)?;
        let after = after.as_deref().map(parse_queue_cursor).transpose()?;
        let (division_key, handling_minutes) = match division_id {
            Some(id) => {
                let id = parse_uuid(&id, "division")?;
                let division =
                    projections::divisions::division(&helpdesk.db, &caller.organization, &id)
                        .await
                        .map_err(ApiError::from)?
                        .ok_or_else(|| ApiError::NotFound("division not found".into()))?;
                (id, division.avg_handling_minutes)
            }
            None => (
                projections::tickets::NO_DIVISION.to_string(),
                DEFAULT_HANDLING_MINUTES,
            ),
        };
        let handling_seconds = helpdesk
            .typical_handling_seconds(&caller.organization, &division_key, handling_minutes)
            .await?;
        let online = projections::agents::online_serving(
            &helpdesk.db,
            &caller.organization,
            Some(division_key.as_str()).filter(|k| !k.is_empty()),
        )
        .await
        .map_err(ApiError::from)?;
        let page = projections::queue::page(
            &helpdesk.db,
            &caller.organization,
            &division_key,
            first,
            after.as_ref(),
        )
        .await
        .map_err(ApiError::from)?;
        let mut edges = Vec::with_capacity(page.entries.len());
        for (offset, entry) in page.entries.iter().enumerate() {
            let record =
                projections::tickets::ticket(&helpdesk.db, &caller.organization, &entry.ticket_id)
                    .await
                    .map_err(ApiError::from)?
                    .ok_or_else(|| {
                        ApiError::internal(format!("queued ticket {} has no row", entry.ticket_id))
                    })?;
            edges.push(QueueEdge {
                cursor: queue_cursor(&entry.into()),
                node: QueueEntry {
                    estimated_wait_seconds: domain::wait::estimated_wait_seconds(
                        page.first_position + offset as i64,
                        handling_seconds,
                        online,
                    ),
                    position: page.first_position + offset as i64,
                    waiting_since: projections::db::parse_timestamp(&entry.waiting_since)
                        .map_err(ApiError::from)?,
                    ticket: Ticket::from_record(record)?,
                },
            });
        }
        Ok(QueueConnection::new(
            edges,
            page.has_next_page,
            page.total_count,
        ))
    }

    /// The agents of the caller's organization, by name.
    async fn agents(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Agent>> {
        let caller = caller(ctx)?;
        let records = projections::agents::agents(&helpdesk(ctx)?.db, &caller.organization)
            .await
            .map_err(ApiError::from)?;
        Ok(records.into_iter().map(Agent::from).collect())
    }

    /// The divisions of the caller's organization, in menu order.
    async fn divisions(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Division>> {
        let caller = caller(ctx)?;
        let records = projections::divisions::divisions(&helpdesk(ctx)?.db, &caller.organization)
            .await
            .map_err(ApiError::from)?;
        Ok(records
            .into_iter()
            .map(Division::from_record)
            .collect::<ApiResult<_>>()?)
    }

    /// The organization's queue texts and policies (the seed's defaults until changed).
    async fn queue_settings(&self, ctx: &Context<'_>) -> async_graphql::Result<QueueSettings> {
        let caller = caller(ctx)?;
        let settings =
            projections::queue_settings::settings(&helpdesk(ctx)?.db, &caller.organization)
                .await
                .map_err(ApiError::from)?;
        Ok(settings.into())
    }

    /// Every agent's load (admin); only the agents of `divisionId` when it is given.
    async fn workload(
        &self,
        ctx: &Context<'_>,
        division_id: Option<ID>,
    ) -> async_graphql::Result<Vec<AgentWorkload>> {
        let caller = caller_in(ctx, &[Role::Admin], "see the workload of agents")?;
        let helpdesk = helpdesk(ctx)?;
        let division_id = division_id
            .map(|d| parse_uuid(&d, "division"))
            .transpose()?;
        if let Some(division) = &division_id {
            projections::divisions::division(&helpdesk.db, &caller.organization, division)
                .await
                .map_err(ApiError::from)?
                .ok_or_else(|| ApiError::NotFound("division not found".into()))?;
        }
        let rows = projections::agents::workload(
            &helpdesk.db,
            &caller.organization,
            division_id.as_deref(),
        )
        .await
        .map_err(ApiError::from)?;
        Ok(rows
            .into_iter()
            .map(AgentWorkload::from_record)
            .collect::<ApiResult<_>>()?)
    }

    /// The calling agent's active tickets in working order, and their free slots.
    async fn my_queue(&self, ctx: &Context<'_>) -> async_graphql::Result<MyQueue> {
        let caller = caller_in(ctx, &[Role::Agent], "have a queue of their own")?;
        let helpdesk = helpdesk(ctx)?;
        let agent =
            projections::agents::agent(&helpdesk.db, &caller.organization, &caller.actor.id)
                .await
                .map_err(ApiError::from)?
                .ok_or_else(|| ApiError::NotFound("agent not found".into()))?;
        let tickets =
            projections::tickets::agent_queue(&helpdesk.db, &caller.organization, &caller.actor.id)
                .await
                .map_err(ApiError::from)?;
        let active_count = tickets.len() as i64;
        Ok(MyQueue {
            tickets: tickets
                .into_iter()
                .map(Ticket::from_record)
                .collect::<ApiResult<_>>()?,
            active_count,
            max_tickets: agent.max_tickets,
            slots_available: (agent.max_tickets - active_count).max(0),
            online: agent.online,
        })
    }
}
