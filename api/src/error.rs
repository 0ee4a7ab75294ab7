//! The client-facing error: one enum, mapped once to GraphQL `extensions.code`. Technical
//! failures are logged with `tracing` and reach the client only as `INTERNAL`.

use async_graphql::ErrorExtensions;
use cqrs_es::AggregateError;
use domain::agent::AgentError;
use domain::division::DivisionError;
use domain::ticket::TicketError;
use projections::DbError;

use crate::auth::AuthError;

/// An error as a client sees it. Deliberately not `Display`: it reaches GraphQL only
/// through the conversion below, which always attaches the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// No or invalid token.
    Unauthenticated(String),
    /// The caller's role may not do this.
    Forbidden(String),
    /// No such thing in the caller's organization.
    NotFound(String),
    /// Malformed or out-of-range input; nothing was written.
    BadUserInput(String),
    /// A concurrent change won; retry.
    Conflict(String),
    /// The current state does not allow this.
    InvalidTransition(String),
    /// An agent has no free slot.
    CapacityReached(String),
    /// Something failed inside; details are in the server log only.
    Internal,
}

impl ApiError {
    /// The contract's `extensions.code`.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated(_) => "UNAUTHENTICATED",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::BadUserInput(_) => "BAD_USER_INPUT",
            ApiError::Conflict(_) => "CONFLICT",
            ApiError::InvalidTransition(_) => "INVALID_TRANSITION",
            ApiError::CapacityReached(_) => "CAPACITY_REACHED",
            ApiError::Internal => "INTERNAL",
        }
    }

    /// The message shown to the client.
    pub fn message(&self) -> &str {
        match self {
            ApiError::Unauthenticated(m)
            | ApiError::Forbidden(m)
            | ApiError::NotFound(m)
            | ApiError::BadUserInput(m)
            | ApiError::Conflict(m)
            | ApiError::InvalidTransition(m)
            | ApiError::CapacityReached(m) => m,
            ApiError::Internal => "internal error",
        }
    }

    /// Logs a technical failure and hides it from the client.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error");
        ApiError::Internal
    }

    /// A malformed input.
    pub fn bad_input(why: impl Into<String>) -> Self {
        ApiError::BadUserInput(why.into())
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(error: ApiError) -> Self {
        let code = error.code();
        async_graphql::Error::new(error.message()).extend_with(|_, e| e.set("code", code))
    }
}

impl From<DbError> for ApiError {
    fn from(error: DbError) -> Self {
        ApiError::internal(error)
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        ApiError::Unauthenticated(error.to_string())
    }
}

impl From<TicketError> for ApiError {
    fn from(error: TicketError) -> Self {
        match error {
            TicketError::NotFound => ApiError::NotFound("ticket not found".into()),
            TicketError::AlreadyExists => ApiError::Conflict("ticket already exists".into()),
            TicketError::InvalidInput(why) => ApiError::BadUserInput(why),
            TicketError::InvalidTransition(why) => ApiError::InvalidTransition(why),
            TicketError::NotPermitted(why) => ApiError::Forbidden(why),
        }
    }
}

impl From<DivisionError> for ApiError {
    fn from(error: DivisionError) -> Self {
        match error {
            DivisionError::AlreadyExists => ApiError::Conflict("division already exists".into()),
            DivisionError::InvalidInput(why) => ApiError::BadUserInput(why),
            DivisionError::NotPermitted(why) => ApiError::Forbidden(why),
        }
    }
}

impl From<AgentError> for ApiError {
    fn from(error: AgentError) -> Self {
        match error {
            AgentError::AlreadyExists => ApiError::Conflict("agent already exists".into()),
            AgentError::InvalidInput(why) => ApiError::BadUserInput(why),
            AgentError::NotPermitted(why) => ApiError::Forbidden(why),
        }
    }
}

/// Maps a cqrs-es failure: business refusals keep their meaning, a conflict that survived
/// the retries is `CONFLICT`, everything else is internal.
pub fn from_aggregate<E>(error: AggregateError<E>) -> ApiError
where
    E: std::error::Error + Into<ApiError>,
{
    match error {
        AggregateError::UserError(e) => e.into(),
        AggregateError::AggregateConflict => ApiError::Conflict(
            "another change to the same item was committed at the same moment; retry".into(),
        ),
        other => ApiError::internal(other),
    }
}

/// The result type of resolvers and commands.
pub type ApiResult<T> = Result<T, ApiError>;
