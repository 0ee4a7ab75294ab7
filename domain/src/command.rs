//! What every command carries, and the one error type of the domain layer.

use crate::actor::Actor;

/// A command for one aggregate, issued by `actor` of `organization`.
#[derive(Debug, Clone, PartialEq)]
pub struct Command<Action> {
    /// The caller's organization; an aggregate of another organization is "not found".
    pub organization: String,
    /// Who issues the command.
    pub actor: Actor,
    /// What to do.
    pub action: Action,
}

/// Why a command was refused. These are business facts, never technical failures; nothing
/// is written when a command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// No such aggregate in the caller's organization.
    #[error("not found")]
    NotFound,
    /// An aggregate with this id exists already.
    #[error("already exists")]
    AlreadyExists,
    /// The command's input is malformed (empty subject, rating out of range, ...).
    #[error("{0}")]
    InvalidInput(String),
    /// The aggregate's state does not allow the command.
    #[error("{0}")]
    InvalidTransition(String),
    /// The caller may not do this (wrong role, not the ticket's assignee, ...).
    #[error("{0}")]
    NotPermitted(String),
    /// The agent has no free slot for another active ticket.
    #[error("{0}")]
    CapacityReached(String),
    /// The aggregate changed since the caller looked (a reservation made for an older
    /// version of a ticket); looking again and retrying may succeed.
    #[error("{0}")]
    Stale(String),
}
