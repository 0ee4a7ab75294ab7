//! The helpdesk's business rules, free of IO, clocks and randomness.
//!
//! - [`ticket`]: the Ticket aggregate — its commands, events and lifecycle
//!   (queued → assigned → in progress → resolved → closed, reopen, rating, comments).
//! - [`agent`]: the AgentStatus aggregate — registration, presence, capacity, divisions and
//!   the slot ledger that enforces capacity (reserve, then assign; release when the ticket
//!   leaves the agent).
//! - [`division`]: the Division aggregate — the teams whose queues tickets wait in, with
//!   their assignment mode and algorithm.
//! - [`queue_settings`]: the per-organization queue texts, offline policy and escalation
//!   delay.
//! - [`conversation`]: the Conversation aggregate — a customer on a channel, messages both
//!   ways (personal data sealed with the customer's key), the division chosen and the
//!   ticket humans work on.
//! - [`customer`]: the CustomerPrivacy aggregate — each erasure of a customer's personal
//!   data, recorded in the log (what was erased never is).
//! - [`channel`]: the ChannelConfig aggregate — the public part of a WhatsApp or Telegram
//!   channel's configuration (its secrets stay outside the log).
//! - [`menu`]: queue mode's division menu, how an answer picks a division, detection from
//!   free text, and the message templates.
//! - [`assignment`]: the policy choosing an agent (round robin, least loaded, random with a
//!   recorded draw) and the decision record kept in the assignment event.
//! - [`bot`]: the Bot aggregate (answers, threshold, channels, active hours) and the
//!   deterministic scoring of a message against its answers.
//! - [`notification`]: the notification center's user actions — Notification (read,
//!   deleted) and Inbox (mark all read, clear read) aggregates.
//! - [`pipeline`]: kanban pipelines — the OrganizationPipelines aggregate (pipelines,
//!   ordered stages, stage automation, the default pipeline) and the Card aggregate (a
//!   conversation's place on one pipeline, its labels, the automation its stage entry owes).
//! - [`schedule`]: the chatbot's active hours in its own timezone (DST-correct, overnight
//!   windows).
//! - [`wait`]: the estimated wait of a queued customer (median handling time).
//! - [`priority`]: ticket priorities, their queue order and keyword detection.
//! - [`command`]: the shape of every command (organization, actor, action) and the one
//!   error type of the layer, [`command::DomainError`].
//! - [`actor`]: who issues a command (id and role), carried into every event's metadata.
//! - [`metadata`]: the metadata stamped on every event (organization, actor, time,
//!   request/correlation and causation ids).
//! - [`limits`]: the input bounds shared by every command.
//! - [`upcast`]: event versions and the upcasters that lift old payloads to today's shape.
//!
//! Aggregates are driven by cqrs-es; every aggregate has given/when/then tests beside it.
//! Time is never read here: it arrives in event metadata chosen by the caller.

pub mod actor;
pub mod agent;
pub mod assignment;
pub mod bot;
pub mod channel;
pub mod command;
pub mod conversation;
pub mod customer;
pub mod division;
pub mod limits;
pub mod menu;
pub mod metadata;
pub mod notification;
pub mod pipeline;
pub mod priority;
pub mod queue_settings;
pub mod schedule;
pub mod ticket;
pub mod upcast;
pub mod wait;

pub use actor::{Actor, Role};
pub use command::{Command, DomainError};
pub use priority::{Priority, PriorityKeywords};
