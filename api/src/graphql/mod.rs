//! The GraphQL schema of `CONTRACT.md`: queries and mutations, Relay connections, and every
//! error carrying `extensions.code`.
//!
//! - [`types`]: the object types (`Ticket`, `QueueEntry`, `Division`, connections, ...).
//! - [`query`]: the read side, straight from the projections.
//! - [`mutation`]: the write side, through [`crate::helpdesk::Helpdesk`].
//! - [`conversations`]: conversations, messages and channels (both sides).
//! - [`bots`]: chatbots, their answers, active hours and ratings.
//! - [`chatbot_report`]: the chatbot analytics report.
//! - [`pipelines`]: pipelines, stages, the kanban board and its cards, pipeline analytics.
//! - [`notifications`]: the caller's notification center.
//! - [`audit`]: the event stream, a ticket's history and past states, the audit chain's
//!   verification, and erasing a customer's personal data.
//! - [`subscription`]: the subscriptions (`boardChanged`), fed by [`crate::realtime`].
//!
//! Each request carries a [`RequestContext`]: the authenticated caller (or why there is none)
//! and a request id that ends up in the metadata of the events it causes.

pub mod audit;
pub mod bots;
pub mod chatbot_report;
pub mod conversations;
pub mod mutation;
pub mod notifications;
pub mod pipelines;
pub mod query;
pub mod subscription;
pub mod types;

use async_graphql::{Context, MergedObject, Schema};
use domain::Role;
use std::sync::Arc;

use crate::auth::{AuthError, Caller};
use crate::error::{ApiError, ApiResult};
use crate::helpdesk::Helpdesk;

/// Every query: tickets, queues, agents and divisions; conversations.
#[derive(MergedObject, Default)]
pub struct QueryRoot(
    query::Query,
    conversations::ConversationQuery,
    bots::BotQuery,
    chatbot_report::ChatbotReportQuery,
    pipelines::PipelineQuery,
    notifications::NotificationQuery,
    audit::AuditQuery,
);

/// Every mutation.
#[derive(MergedObject, Default)]
pub struct MutationRoot(
    mutation::Mutation,
    conversations::ConversationMutation,
    bots::BotMutation,
    pipelines::PipelineMutation,
    notifications::NotificationMutation,
    audit::AuditMutation,
);

/// The helpdesk's GraphQL schema.
pub type HelpdeskSchema = Schema<QueryRoot, MutationRoot, subscription::SubscriptionRoot>;

/// Deepest query accepted.
pub const MAX_DEPTH: usize = 12;
/// Most expensive query accepted (each field costs 1; a connection costs its selection once
/// per requested item).
pub const MAX_COMPLEXITY: usize = 5_000;
/// Largest page of a connection.
pub const MAX_PAGE: i32 = 100;

/// Builds the schema over a running helpdesk (`None`: for exporting the SDL only).
pub fn build_schema(helpdesk: Option<Arc<Helpdesk>>) -> HelpdeskSchema {
    let mut builder = Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        subscription::SubscriptionRoot,
    )
    .limit_depth(MAX_DEPTH)
    .limit_complexity(MAX_COMPLEXITY);
    if let Some(helpdesk) = helpdesk {
        builder = builder.data(helpdesk);
    }
    builder.finish()
}

/// The schema in SDL, as exported to `docs/schema.graphql`.
pub fn sdl() -> String {
    build_schema(None).sdl()
}

/// Who is calling, and which request this is.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The caller, or why the token was refused.
    pub caller: Result<Caller, AuthError>,
    /// Ends up in the events' metadata.
    pub request_id: String,
}

/// The caller, or `UNAUTHENTICATED`.
pub fn caller<'a>(ctx: &'a Context<'_>) -> ApiResult<&'a Caller> {
    match ctx.data_opt::<RequestContext>() {
        Some(RequestContext { caller: Ok(c), .. }) => Ok(c),
        Some(RequestContext { caller: Err(e), .. }) => Err(e.clone().into()),
        None => Err(ApiError::Unauthenticated("missing bearer token".into())),
    }
}

/// The caller, if its role is one of `roles`; else `FORBIDDEN`.
pub fn caller_in<'a>(ctx: &'a Context<'_>, roles: &[Role], what: &str) -> ApiResult<&'a Caller> {
    let caller = caller(ctx)?;
    if roles.contains(&caller.actor.role) {
        Ok(caller)
    } else {
        Err(ApiError::Forbidden(format!(
            "the {} role may not {what}",
            caller.actor.role
        )))
    }
}

/// The running helpdesk.
pub fn helpdesk<'a>(ctx: &'a Context<'_>) -> ApiResult<&'a Arc<Helpdesk>> {
    ctx.data::<Arc<Helpdesk>>()
        .map_err(|_| ApiError::internal("schema built without a helpdesk"))
}

/// The request id of this request.
pub fn request_id(ctx: &Context<'_>) -> String {
    ctx.data_opt::<RequestContext>()
        .map(|r| r.request_id.clone())
        .unwrap_or_default()
}

/// Parses an opaque id that must be a UUID.
pub fn parse_uuid(id: &str, what: &str) -> ApiResult<String> {
    uuid::Uuid::parse_str(id.trim())
        .map(|u| u.to_string())
        .map_err(|_| ApiError::bad_input(format!("malformed {what} id '{}'", truncate(id, 64))))
}

/// The requested page size, 1..=MAX_PAGE (default 20).
pub fn page_size(first: Option<i32>) -> ApiResult<i64> {
    match first {
        None => Ok(20),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n as i64),
        Some(n) => Err(ApiError::bad_input(format!(
            "first must be between 1 and {MAX_PAGE}, got {n}"
        ))),
    }
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}
