//! The Ticket aggregate: one customer problem from creation to closing.
//!
//! Lifecycle (the contract's `TicketStatus`):
//!
//! ```text
//!   create ──► QUEUED ──claim/assign──► ASSIGNED ──start──► IN_PROGRESS
//!                ▲                         │ ▲ assign (reassign)  │
//!                │                         └─┴──────◄─────────────┤
//!                │                         resolve               resolve
//!                │                           ▼                    ▼
//!                └────────reopen─────────  RESOLVED ──close──► CLOSED
//!                                             (rate 1..5 once, while RESOLVED or CLOSED)
//! ```
//!
//! Every refusal is a [`TicketError`] saying why; nothing is written when a command is
//! refused.
//!
//! Assignments (claim, admin assign, automatic assign) carry the **reservation** of the
//! agent's slot: the ticket version the slot was reserved for (see
//! [`crate::agent`]). The ticket accepts it only at exactly that version, so an assignment
//! never lands on a ticket that changed after its slot was taken; repeating an assignment
//! that already happened is a no-op, which makes the reserve-then-assign saga safe to
//! retry from anywhere.

mod state;
#[cfg(test)]
mod tests;

pub use state::{Ticket, TicketStatus};

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::assignment::AssignmentDecision;
use crate::command::{Command, DomainError};
use crate::priority::{Priority, PrioritySource};

/// A command for one ticket.
pub type TicketCommand = Command<TicketAction>;

/// The things that can be done to a ticket.
#[derive(Debug, Clone, PartialEq)]
pub enum TicketAction {
    /// Opens the ticket. `number` is allocated by the caller, unique per organization.
    Create {
        number: i64,
        subject: String,
        description: Option<String>,
        priority: Priority,
        priority_source: PrioritySource,
        division_id: Option<String>,
    },
    /// The calling agent takes a queued ticket with the slot reserved at version
    /// `reservation`.
    Claim { reservation: u64 },
    /// An admin gives the ticket to `agent_id` (also reassigns an assigned ticket).
    Assign { agent_id: String, reservation: u64 },
    /// The assignment process gives a queued ticket to the agent its policy chose.
    AutoAssign {
        agent_id: String,
        reservation: u64,
        decision: AssignmentDecision,
    },
    /// The assignee did not answer the customer in time: the conversation process gives
    /// the ticket to the agent its policy chose instead. Refused when `from_agent_id` no
    /// longer holds it (the escalation was decided on an older state).
    Escalate {
        from_agent_id: String,
        agent_id: String,
        reservation: u64,
        decision: AssignmentDecision,
    },
    /// The agent went offline under the REQUEUE policy: an assigned, not yet started ticket
    /// goes back to its queue at its original place.
    Requeue { agent_id: String },
    /// The assignee starts working on it.
    Start,
    /// The work is done.
    Resolve { resolution: Option<String> },
    /// The ticket is filed away.
    Close,
    /// A resolved or closed ticket goes back to the queue.
    Reopen { reason: Option<String> },
    /// The ticket moves to another priority (and so another place in its queue).
    ChangePriority { priority: Priority },
    /// A note on the ticket.
    AddComment { comment_id: String, text: String },
    /// The customer's satisfaction, 1..5.
    Rate {
        rating: i32,
        feedback: Option<String>,
    },
}

/// How a ticket got its agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssignmentVia {
    /// The agent took it from the queue.
    Claim,
    /// An admin chose the agent.
    Admin,
    /// The assignment process chose the agent (the decision is in the event).
    Auto,
    /// Taken from an agent who did not answer the customer in time and given to the agent
    /// the policy chose (the decision, with the reason, is in the event).
    Escalation,
    /// A pipeline stage's automation named the agent (the admin who configured the stage
    /// chose, so it is treated like an admin's assignment).
    Automation,
}

/// What happened to a ticket. Who and when are in the event's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TicketEvent {
    /// The ticket was opened and entered its division's queue.
    TicketCreated {
        organization: String,
        number: i64,
        subject: String,
        description: Option<String>,
        priority: Priority,
        priority_source: PrioritySource,
        division_id: Option<String>,
    },
    /// The ticket got an agent (first assignment or reassignment).
    TicketAssigned {
        agent_id: String,
        previous_agent_id: Option<String>,
        via: AssignmentVia,
        /// For automatic assignments: who was considered and why this agent won. Always
        /// stated since version 2.0 (null when nobody decided); 1.0 payloads without it are
        /// lifted by `crate::upcast`.
        decision: Option<AssignmentDecision>,
    },
    /// The assigned agent went offline (REQUEUE policy): back to the queue, at the place it
    /// had before it was assigned.
    TicketRequeued { agent_id: String },
    /// The assignee started working.
    TicketStarted { agent_id: String },
    /// The work is done.
    TicketResolved {
        agent_id: Option<String>,
        resolution: Option<String>,
    },
    /// The ticket was filed away.
    TicketClosed,
    /// The ticket went back to the queue; its last agent is remembered.
    TicketReopened {
        reason: Option<String>,
        previous_agent_id: Option<String>,
    },
    /// The priority changed.
    TicketPriorityChanged { from: Priority, to: Priority },
    /// A comment was added.
    CommentAdded {
        comment_id: String,
        author_id: String,
        text: String,
    },
    /// The customer rated the handling.
    TicketRated {
        rating: i32,
        feedback: Option<String>,
    },
}

impl DomainEvent for TicketEvent {
    fn event_type(&self) -> String {
        match self {
            TicketEvent::TicketCreated { .. } => "TicketCreated",
            TicketEvent::TicketAssigned { .. } => "TicketAssigned",
            TicketEvent::TicketRequeued { .. } => "TicketRequeued",
            TicketEvent::TicketStarted { .. } => "TicketStarted",
            TicketEvent::TicketResolved { .. } => "TicketResolved",
            TicketEvent::TicketClosed => "TicketClosed",
            TicketEvent::TicketReopened { .. } => "TicketReopened",
            TicketEvent::TicketPriorityChanged { .. } => "TicketPriorityChanged",
            TicketEvent::CommentAdded { .. } => "CommentAdded",
            TicketEvent::TicketRated { .. } => "TicketRated",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        crate::upcast::current_version(&self.event_type()).to_string()
    }
}

/// Why a ticket command was refused.
pub type TicketError = DomainError;
