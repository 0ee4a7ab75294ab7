//! The client-facing error: one enum, mapped once to GraphQL `extensions.code`. Technical
//! failures are logged with `tracing` and reach the client only as `INTERNAL`.

use async_graphql::ErrorExtensions;
use cqrs_es::AggregateError;
use domain::DomainError;
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

impl ApiError {
    /// Maps a business refusal of a command on a `what` (ticket, division, agent).
    pub fn refused(what: &str, error: DomainError) -> Self {
        match error {
            DomainError::NotFound => ApiError::NotFound(format!("{what} not found")),
            DomainError::AlreadyExists => ApiError::Conflict(format!("{what} already exists")),
            DomainError::InvalidInput(why) => ApiError::BadUserInput(why),
            DomainError::InvalidTransition(why) => ApiError::InvalidTransition(why),
            DomainError::NotPermitted(why) => ApiError::Forbidden(why),
            DomainError::CapacityReached(why) => ApiError::CapacityReached(why),
            DomainError::Stale(why) => ApiError::Conflict(why),
        }
    }
}

/// A refusal met outside of a command on a known aggregate (e.g. a preview): tickets.
impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> Self {
        ApiError::refused("ticket", error)
    }
}

/// Maps a cqrs-es failure of a command on a `what`: business refusals keep their meaning,
/// a conflict that survived the retries is `CONFLICT`, everything else is internal.
pub fn from_aggregate(what: &str, error: AggregateError<DomainError>) -> ApiError {
    match error {
        AggregateError::UserError(e) => ApiError::refused(what, e),
        AggregateError::AggregateConflict => ApiError::Conflict(
            "another change to the same item was committed at the same moment; retry".into(),
        ),
        other => ApiError::internal(other),
    }
}

/// The result type of resolvers and commands.
pub type ApiResult<T> = Result<T, ApiError>;
