//! The Ticket aggregate's state and its command handling.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::{AssignmentVia, TicketAction, TicketCommand, TicketError, TicketEvent};
use crate::actor::{Actor, Role};
use crate::limits::{within, MAX_SUBJECT_CHARS, MAX_TEXT_CHARS};
use crate::priority::Priority;

/// Where a ticket is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TicketStatus {
    /// Waiting in its division's queue.
    Queued,
    /// Given to an agent who has not started.
    Assigned,
    /// Being worked on.
    InProgress,
    /// Done; may be rated, closed or reopened.
    Resolved,
    /// Filed away; may be rated or reopened.
    Closed,
}

impl TicketStatus {
    /// The contract's name of the status.
    pub fn as_str(self) -> &'static str {
        match self {
            TicketStatus::Queued => "QUEUED",
            TicketStatus::Assigned => "ASSIGNED",
            TicketStatus::InProgress => "IN_PROGRESS",
            TicketStatus::Resolved => "RESOLVED",
            TicketStatus::Closed => "CLOSED",
        }
    }

    /// Whether the ticket occupies one of its agent's slots.
    pub fn is_active(self) -> bool {
        matches!(self, TicketStatus::Assigned | TicketStatus::InProgress)
    }
}

/// A ticket as its events leave it: only what its rules need.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ticket {
    organization: Option<String>,
    number: i64,
    status: Option<TicketStatus>,
    priority: Option<Priority>,
    assignee: Option<String>,
    last_assignee: Option<String>,
    rated: bool,
    division_id: Option<String>,
    /// How many events the ticket has (the sequence of the newest).
    version: u64,
    /// The version of the event that gave the current assignee the ticket.
    assigned_version: Option<u64>,
}

impl Aggregate for Ticket {
    const TYPE: &'static str = "Ticket";
    type Command = TicketCommand;
    type Event = TicketEvent;
    type Error = TicketError;
    type Services = ();

    async fn handle(
        &mut self,
        command: TicketCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), TicketError> {
        let TicketCommand {
            organization,
            actor,
            action,
        } = command;
        if actor.role == Role::Analyst {
            return Err(TicketError::NotPermitted(
                "analysts read tickets; they never change them".into(),
            ));
        }
        if let TicketAction::Create { .. } = action {
            if self.status.is_some() {
                return Err(TicketError::AlreadyExists);
            }
        } else {
            self.ensure_visible_to(&organization)?;
        }
        for event in self.decide(organization, &actor, action)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: TicketEvent) {
        self.version += 1;
        match event {
            TicketEvent::TicketCreated {
                organization,
                number,
                priority,
                division_id,
                ..
            } => {
                self.organization = Some(organization);
                self.number = number;
                self.priority = Some(priority);
                self.division_id = division_id;
                self.status = Some(TicketStatus::Queued);
            }
            TicketEvent::TicketAssigned { agent_id, .. } => {
                self.assignee = Some(agent_id.clone());
                self.last_assignee = Some(agent_id);
                self.assigned_version = Some(self.version);
                self.status = Some(TicketStatus::Assigned);
            }
            TicketEvent::TicketRequeued { .. } => {
                self.status = Some(TicketStatus::Queued);
                self.assignee = None;
                self.assigned_version = None;
            }
            TicketEvent::TicketStarted { .. } => self.status = Some(TicketStatus::InProgress),
            TicketEvent::TicketResolved { .. } => self.status = Some(TicketStatus::Resolved),
            TicketEvent::TicketClosed => self.status = Some(TicketStatus::Closed),
            TicketEvent::TicketReopened { .. } => {
                self.status = Some(TicketStatus::Queued);
                self.assignee = None;
                self.assigned_version = None;
                self.rated = false;
            }
            TicketEvent::TicketPriorityChanged { to, .. } => self.priority = Some(to),
            TicketEvent::CommentAdded { .. } => {}
            TicketEvent::TicketRated { .. } => self.rated = true,
        }
    }
}

impl Ticket {
    /// The ticket's status; `None` before it is created.
    pub fn status(&self) -> Option<TicketStatus> {
        self.status
    }

    /// The agent the ticket is (or was last) assigned to; see [`Ticket::active_holder`].
    pub fn assignee(&self) -> Option<&str> {
        self.assignee.as_deref()
    }

    /// The agent whose slot the ticket occupies: its assignee while ASSIGNED or
    /// IN_PROGRESS.
    pub fn active_holder(&self) -> Option<&str> {
        self.status
            .filter(|s| s.is_active())
            .and(self.assignee.as_deref())
    }

    /// The organization the ticket belongs to.
    pub fn organization(&self) -> Option<&str> {
        self.organization.as_deref()
    }

    /// How many events the ticket has; the version a slot reservation names.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The division whose queue the ticket waits in.
    pub fn division_id(&self) -> Option<&str> {
        self.division_id.as_deref()
    }

    /// Whether `agent_id` got the ticket with the slot reserved at `reservation`: the
    /// assignment event right after the reservation gave it to them and they still hold it.
    pub fn assigned_with(&self, agent_id: &str, reservation: u64) -> bool {
        self.assignee.as_deref() == Some(agent_id)
            && self.assigned_version == Some(reservation + 1)
            && self.status.is_some_and(TicketStatus::is_active)
    }

    /// What the ticket would decide for `command`, without changing anything: lets callers
    /// refuse bad input before spending resources (such as a ticket number) on it.
    pub fn preview(&self, command: &TicketCommand) -> Result<Vec<TicketEvent>, TicketError> {
        self.decide(
            command.organization.clone(),
            &command.actor,
            command.action.clone(),
        )
    }

    fn ensure_visible_to(&self, organization: &str) -> Result<TicketStatus, TicketError> {
        match (self.status, &self.organization) {
            (Some(status), Some(owner)) if owner == organization => Ok(status),
            _ => Err(TicketError::NotFound),
        }
    }

    fn current(&self) -> TicketStatus {
        self.status.unwrap_or(TicketStatus::Queued)
    }

    fn refuse<T>(&self, why: impl std::fmt::Display) -> Result<T, TicketError> {
        Err(TicketError::InvalidTransition(format!(
            "ticket #{} is {}: {why}",
            self.number,
            self.current().as_str()
        )))
    }

    /// Admins act on any ticket; an agent only on the ticket they hold.
    fn ensure_holder_or_admin(&self, actor: &Actor, what: &str) -> Result<(), TicketError> {
        match actor.role {
            Role::Admin => Ok(()),
            Role::Agent if self.assignee.as_deref() == Some(actor.id.as_str()) => Ok(()),
            _ => Err(TicketError::NotPermitted(format!(
                "only the ticket's assignee or an admin may {what} ticket #{}",
                self.number
            ))),
        }
    }

    fn decide(
        &self,
        organization: String,
        actor: &Actor,
        action: TicketAction,
    ) -> Result<Vec<TicketEvent>, TicketError> {
        let status = self.current();
        let event = match action {
            TicketAction::Create {
                number,
                subject,
                description,
                priority,
                priority_source,
                division_id,
            } => {
                let subject = subject.trim().to_string();
                if subject.is_empty() {
                    return Err(invalid("subject must not be empty"));
                }
                if !within(&subject, MAX_SUBJECT_CHARS) {
                    return Err(invalid(format!(
                        "subject must be at most {MAX_SUBJECT_CHARS} characters"
                    )));
                }
                let description = optional_text(description, "description")?;
                if number < 1 {
                    return Err(invalid("ticket number must be positive"));
                }
                if division_id.as_deref().is_some_and(|d| d.trim().is_empty()) {
                    return Err(invalid("divisionId must not be empty"));
                }
                TicketEvent::TicketCreated {
                    organization,
                    number,
                    subject,
                    description,
                    priority,
                    priority_source,
                    division_id,
                }
            }
            TicketAction::Claim { reservation } => {
                if actor.role != Role::Agent {
                    return Err(TicketError::NotPermitted(
                        "only agents claim tickets; admins assign them".into(),
                    ));
                }
                if self.assigned_with(&actor.id, reservation) {
                    return Ok(vec![]);
                }
                if status != TicketStatus::Queued {
                    return self.refuse("only a queued ticket can be claimed");
                }
                self.ensure_reservation_current(reservation)?;
                TicketEvent::TicketAssigned {
                    agent_id: actor.id.clone(),
                    previous_agent_id: None,
                    via: AssignmentVia::Claim,
                    decision: None,
                }
            }
            TicketAction::Assign {
                agent_id,
                reservation,
            } => {
                let via = match actor.role {
                    Role::Admin => AssignmentVia::Admin,
                    Role::Service => AssignmentVia::Automation,
                    _ => {
                        return Err(TicketError::NotPermitted(
                            "only admins assign tickets to agents".into(),
                        ))
                    }
                };
                if agent_id.trim().is_empty() {
                    return Err(invalid("agentId must not be empty"));
                }
                if self.assigned_with(&agent_id, reservation) {
                    return Ok(vec![]);
                }
                if !matches!(
                    status,
                    TicketStatus::Queued | TicketStatus::Assigned | TicketStatus::InProgress
                ) {
                    return self.refuse("a resolved or closed ticket must be reopened first");
                }
                if self.assignee.as_deref() == Some(agent_id.as_str()) {
                    return self.refuse(format!("it is already assigned to agent {agent_id}"));
                }
                self.ensure_reservation_current(reservation)?;
                TicketEvent::TicketAssigned {
                    agent_id,
                    previous_agent_id: self.assignee.clone(),
                    via,
                    decision: None,
                }
            }
            TicketAction::AutoAssign {
                agent_id,
                reservation,
                decision,
            } => {
                if !matches!(actor.role, Role::Service | Role::Admin) {
                    return Err(TicketError::NotPermitted(
                        "automatic assignment is the assignment process's".into(),
                    ));
                }
                if self.assigned_with(&agent_id, reservation) {
                    return Ok(vec![]);
                }
                if status != TicketStatus::Queued {
                    return self.refuse("only a queued ticket is assigned automatically");
                }
                if decision.winner != agent_id {
                    return Err(invalid("the decision names another agent"));
                }
                self.ensure_reservation_current(reservation)?;
                TicketEvent::TicketAssigned {
                    agent_id,
                    previous_agent_id: None,
                    via: AssignmentVia::Auto,
                    decision: Some(decision),
                }
            }
            TicketAction::Escalate {
                from_agent_id,
                agent_id,
                reservation,
                decision,
            } => {
                if !matches!(actor.role, Role::Service | Role::Admin) {
                    return Err(TicketError::NotPermitted(
                        "escalations are the conversation process's".into(),
                    ));
                }
                if self.assigned_with(&agent_id, reservation) {
                    return Ok(vec![]);
                }
                if !matches!(status, TicketStatus::Assigned | TicketStatus::InProgress)
                    || self.assignee.as_deref() != Some(from_agent_id.as_str())
                {
                    return self.refuse(format!(
                        "only a ticket agent {from_agent_id} holds can be escalated from them"
                    ));
                }
                if agent_id == from_agent_id {
                    return Err(invalid("an escalation goes to another agent"));
                }
                if decision.winner != agent_id {
                    return Err(invalid("the decision names another agent"));
                }
                self.ensure_reservation_current(reservation)?;
                TicketEvent::TicketAssigned {
                    agent_id,
                    previous_agent_id: Some(from_agent_id),
                    via: AssignmentVia::Escalation,
                    decision: Some(decision),
                }
            }
            TicketAction::Requeue { agent_id } => {
                if !matches!(actor.role, Role::Service | Role::Admin) {
                    return Err(TicketError::NotPermitted(
                        "tickets are requeued by the assignment process or an admin".into(),
                    ));
                }
                if status != TicketStatus::Assigned
                    || self.assignee.as_deref() != Some(agent_id.as_str())
                {
                    return self.refuse(format!(
                        "only a ticket assigned to agent {agent_id} and not started can be requeued"
                    ));
                }
                TicketEvent::TicketRequeued { agent_id }
            }
            TicketAction::Start => {
                if status != TicketStatus::Assigned {
                    return self.refuse("only an assigned ticket can be started");
                }
                self.ensure_holder_or_admin(actor, "start")?;
                TicketEvent::TicketStarted {
                    agent_id: self.assignee.clone().unwrap_or_default(),
                }
            }
            TicketAction::Resolve { resolution } => {
                if !status.is_active() {
                    return self.refuse("only an assigned or in-progress ticket can be resolved");
                }
                self.ensure_holder_or_admin(actor, "resolve")?;
                TicketEvent::TicketResolved {
                    agent_id: self.assignee.clone(),
                    resolution: optional_text(resolution, "resolution")?,
                }
            }
            TicketAction::Close => {
                match status {
                    TicketStatus::Closed => return self.refuse("it is already closed"),
                    TicketStatus::Resolved => self.ensure_holder_or_admin_or_last(actor)?,
                    _ if actor.role == Role::Admin => {}
                    _ => {
                        return self.refuse(
                            "only a resolved ticket can be closed (admins may close open tickets)",
                        )
                    }
                }
                TicketEvent::TicketClosed
            }
            TicketAction::Reopen { reason } => {
                if !matches!(status, TicketStatus::Resolved | TicketStatus::Closed) {
                    return self.refuse("only a resolved or closed ticket can be reopened");
                }
                self.ensure_holder_or_admin_or_last(actor)?;
                TicketEvent::TicketReopened {
                    reason: optional_text(reason, "reason")?,
                    previous_agent_id: self.last_assignee.clone(),
                }
            }
            TicketAction::ChangePriority { priority } => {
                if matches!(status, TicketStatus::Resolved | TicketStatus::Closed) {
                    return self.refuse("the priority of a finished ticket cannot change");
                }
                let from = self.priority.unwrap_or(Priority::Medium);
                if from == priority {
                    // Asking for the priority it already has changes nothing: no event.
                    return Ok(vec![]);
                }
                TicketEvent::TicketPriorityChanged { from, to: priority }
            }
            TicketAction::AddComment { comment_id, text } => {
                if status == TicketStatus::Closed {
                    return self.refuse("reopen it to comment");
                }
                let text = text.trim().to_string();
                if text.is_empty() {
                    return Err(invalid("comment text must not be empty"));
                }
                if !within(&text, MAX_TEXT_CHARS) {
                    return Err(invalid(format!(
                        "comment text must be at most {MAX_TEXT_CHARS} characters"
                    )));
                }
                TicketEvent::CommentAdded {
                    comment_id,
                    author_id: actor.id.clone(),
                    text,
                }
            }
            TicketAction::Rate { rating, feedback } => {
                if !matches!(actor.role, Role::Admin | Role::Service) {
                    return Err(TicketError::NotPermitted(
                        "ratings come from the customer's channel or an admin".into(),
                    ));
                }
                if !(1..=5).contains(&rating) {
                    return Err(invalid("rating must be between 1 and 5"));
                }
                if !matches!(status, TicketStatus::Resolved | TicketStatus::Closed) {
                    return self.refuse("only a resolved or closed ticket can be rated");
                }
                if self.rated {
                    return self.refuse("it has been rated already");
                }
                TicketEvent::TicketRated {
                    rating,
                    feedback: optional_text(feedback, "feedback")?,
                }
            }
        };
        Ok(vec![event])
    }

    fn ensure_reservation_current(&self, reservation: u64) -> Result<(), TicketError> {
        if reservation == self.version {
            Ok(())
        } else {
            Err(TicketError::Stale(format!(
                "ticket #{} changed while the agent's slot was being reserved",
                self.number
            )))
        }
    }

    /// For finished tickets the "holder" is the agent who last had it.
    fn ensure_holder_or_admin_or_last(&self, actor: &Actor) -> Result<(), TicketError> {
        match actor.role {
            Role::Admin => Ok(()),
            Role::Agent if self.last_assignee.as_deref() == Some(actor.id.as_str()) => Ok(()),
            _ => Err(TicketError::NotPermitted(format!(
                "only the ticket's last agent or an admin may close or reopen ticket #{}",
                self.number
            ))),
        }
    }
}

fn invalid(why: impl Into<String>) -> TicketError {
    TicketError::InvalidInput(why.into())
}

/// Trims an optional free text; blank becomes `None`; too long is refused.
fn optional_text(value: Option<String>, field: &str) -> Result<Option<String>, TicketError> {
    let Some(value) = value.map(|v| v.trim().to_string()) else {
        return Ok(None);
    };
    if value.is_empty() {
        return Ok(None);
    }
    if !within(&value, MAX_TEXT_CHARS) {
        return Err(invalid(format!(
            "{field} must be at most {MAX_TEXT_CHARS} characters"
        )));
    }
    Ok(Some(value))
}
