//! The helpdesk's business rules, free of IO, clocks and randomness.
//!
//! - [`ticket`]: the Ticket aggregate — its commands, events and lifecycle
//!   (queued → assigned → in progress → resolved → closed, reopen, rating, comments).
//! - [`agent`]: the AgentStatus aggregate — an agent's registration (capacity, divisions).
//! - [`division`]: the Division aggregate — the teams whose queues tickets wait in.
//! - [`priority`]: ticket priorities, their queue order and keyword detection.
//! - [`command`]: the shape of every command (organization, actor, action) and the one
//!   error type of the layer, [`command::DomainError`].
//! - [`actor`]: who issues a command (id and role), carried into every event's metadata.
//! - [`metadata`]: the metadata stamped on every event (organization, actor, time,
//!   request/correlation and causation ids).
//! - [`limits`]: the input bounds shared by every command.
//!
//! Aggregates are driven by cqrs-es; every aggregate has given/when/then tests beside it.
//! Time is never read here: it arrives in event metadata chosen by the caller.

pub mod actor;
pub mod agent;
pub mod command;
pub mod division;
pub mod limits;
pub mod metadata;
pub mod priority;
pub mod ticket;

pub use actor::{Actor, Role};
pub use command::{Command, DomainError};
pub use priority::{Priority, PriorityKeywords};
