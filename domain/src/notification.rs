//! The notification center (seed aglis-phase3-plan.md, milestone 1): what a user does to
//! their notifications. The notifications themselves are a projection of what happened
//! (a ticket assigned to them, a customer writing on their conversation, an escalation, a
//! ticket of theirs reopened); reading and deleting them are the user's own changes, and so
//! events too:
//!
//! - [`Notification`] (one per notification, its id the notification's): read, deleted.
//!   Small streams, so a busy inbox never makes one long stream to load.
//! - [`Inbox`] (one per user): "mark all read" and "clear read" up to a place in the log,
//!   so a bulk change is one event however many notifications it touches.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::command::{Command, DomainError};

/// Why a user is notified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NotificationKind {
    /// A ticket was assigned to them (by an admin, the assignment process or automation).
    TicketAssigned,
    /// The customer wrote on a conversation whose ticket they hold.
    CustomerMessage,
    /// An escalation took a ticket from them.
    EscalatedAway,
    /// An escalation gave them a ticket.
    EscalatedToYou,
    /// A ticket they held was reopened.
    TicketReopened,
}

impl NotificationKind {
    /// The stored and GraphQL name.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::TicketAssigned => "TICKET_ASSIGNED",
            NotificationKind::CustomerMessage => "CUSTOMER_MESSAGE",
            NotificationKind::EscalatedAway => "ESCALATED_AWAY",
            NotificationKind::EscalatedToYou => "ESCALATED_TO_YOU",
            NotificationKind::TicketReopened => "TICKET_REOPENED",
        }
    }
}

/// Commands on one notification.
pub type NotificationCommand = Command<NotificationAction>;

/// What its user does to a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotificationAction {
    /// Marks it read.
    MarkRead {
        /// Whose it is (the read model says; only they may act on it).
        owner_id: String,
    },
    /// Deletes it.
    Delete {
        /// Whose it is.
        owner_id: String,
    },
}

/// What happened to a notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NotificationEvent {
    /// Its user read it.
    NotificationRead {
        organization: String,
        user_id: String,
    },
    /// Its user deleted it.
    NotificationDeleted {
        organization: String,
        user_id: String,
    },
}

impl DomainEvent for NotificationEvent {
    fn event_type(&self) -> String {
        match self {
            NotificationEvent::NotificationRead { .. } => "NotificationRead",
            NotificationEvent::NotificationDeleted { .. } => "NotificationDeleted",
        }
        .into()
    }

    fn event_version(&self) -> String {
        crate::upcast::current_version(&self.event_type()).to_string()
    }
}

/// What its user did to one notification.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    organization: Option<String>,
    read: bool,
    deleted: bool,
}

/// Only the owner acts on a notification, in its organization.
fn owned(
    organization: &Option<String>,
    command_organization: &str,
    actor: &str,
    owner: &str,
) -> Result<(), DomainError> {
    if organization
        .as_deref()
        .is_some_and(|o| o != command_organization)
        || actor != owner
    {
        return Err(DomainError::NotFound);
    }
    Ok(())
}

impl Aggregate for Notification {
    const TYPE: &'static str = "Notification";
    type Command = NotificationCommand;
    type Event = NotificationEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: NotificationCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        let (owner, read) = match &command.action {
            NotificationAction::MarkRead { owner_id } => (owner_id, true),
            NotificationAction::Delete { owner_id } => (owner_id, false),
        };
        owned(
            &self.organization,
            &command.organization,
            &command.actor.id,
            owner,
        )?;
        if self.deleted {
            return Err(DomainError::NotFound);
        }
        let organization = command.organization.clone();
        let user_id = owner.clone();
        let event = if read {
            if self.read {
                return Ok(());
            }
            NotificationEvent::NotificationRead {
                organization,
                user_id,
            }
        } else {
            NotificationEvent::NotificationDeleted {
                organization,
                user_id,
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: NotificationEvent) {
        match event {
            NotificationEvent::NotificationRead { organization, .. } => {
                self.organization = Some(organization);
                self.read = true;
            }
            NotificationEvent::NotificationDeleted { organization, .. } => {
                self.organization = Some(organization);
                self.deleted = true;
            }
        }
    }
}

/// Commands on a user's inbox.
pub type InboxCommand = Command<InboxAction>;

/// What a user does to all their notifications at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboxAction {
    /// Marks every notification up to log position `up_to` read.
    ReadAll {
        /// The newest notification's place in the log, as the user saw it.
        up_to: i64,
    },
    /// Deletes every read notification up to log position `up_to`.
    ClearRead {
        /// The newest notification's place in the log, as the user saw it.
        up_to: i64,
    },
}

/// What happened to a user's inbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InboxEvent {
    /// Everything up to `up_to` was marked read.
    AllNotificationsRead {
        organization: String,
        user_id: String,
        up_to: i64,
    },
    /// Every read notification up to `up_to` was deleted.
    ReadNotificationsCleared {
        organization: String,
        user_id: String,
        up_to: i64,
    },
}

impl DomainEvent for InboxEvent {
    fn event_type(&self) -> String {
        match self {
            InboxEvent::AllNotificationsRead { .. } => "AllNotificationsRead",
            InboxEvent::ReadNotificationsCleared { .. } => "ReadNotificationsCleared",
        }
        .into()
    }

    fn event_version(&self) -> String {
        crate::upcast::current_version(&self.event_type()).to_string()
    }
}

/// A user's inbox: only its organization matters to the rules.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inbox {
    organization: Option<String>,
}

impl Aggregate for Inbox {
    const TYPE: &'static str = "Inbox";
    type Command = InboxCommand;
    type Event = InboxEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: InboxCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        if self
            .organization
            .as_deref()
            .is_some_and(|o| o != command.organization)
        {
            return Err(DomainError::NotFound);
        }
        let organization = command.organization;
        let user_id = command.actor.id;
        let event = match command.action {
            InboxAction::ReadAll { up_to } => InboxEvent::AllNotificationsRead {
                organization,
                user_id,
                up_to,
            },
            InboxAction::ClearRead { up_to } => InboxEvent::ReadNotificationsCleared {
                organization,
                user_id,
                up_to,
            },
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: InboxEvent) {
        match event {
            InboxEvent::AllNotificationsRead { organization, .. }
            | InboxEvent::ReadNotificationsCleared { organization, .. } => {
                self.organization = Some(organization);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;
    use crate::actor::{Actor, Role};

    fn by(user: &str, action: NotificationAction) -> NotificationCommand {
        NotificationCommand {
            organization: "acme".into(),
            actor: Actor::new(user, Role::Agent),
            action,
        }
    }

    fn read() -> NotificationEvent {
        NotificationEvent::NotificationRead {
            organization: "acme".into(),
            user_id: "ann".into(),
        }
    }

    #[test]
    fn only_the_owner_reads_or_deletes_and_reading_twice_changes_nothing() {
        let mark = |user: &str| {
            by(
                user,
                NotificationAction::MarkRead {
                    owner_id: "ann".into(),
                },
            )
        };
        TestFramework::<Notification>::with(())
            .given_no_previous_events()
            .when(mark("ann"))
            .then_expect_events(vec![read()]);
        TestFramework::<Notification>::with(())
            .given(vec![read()])
            .when(mark("ann"))
            .then_expect_events(vec![]);
        TestFramework::<Notification>::with(())
            .given_no_previous_events()
            .when(mark("bob"))
            .then_expect_error(DomainError::NotFound);
        let deleted = NotificationEvent::NotificationDeleted {
            organization: "acme".into(),
            user_id: "ann".into(),
        };
        TestFramework::<Notification>::with(())
            .given(vec![read()])
            .when(by(
                "ann",
                NotificationAction::Delete {
                    owner_id: "ann".into(),
                },
            ))
            .then_expect_events(vec![deleted.clone()]);
        TestFramework::<Notification>::with(())
            .given(vec![deleted])
            .when(mark("ann"))
            .then_expect_error(DomainError::NotFound);
    }

    #[test]
    fn bulk_changes_are_one_event_for_the_caller() {
        let mut command = InboxCommand {
            organization: "acme".into(),
            actor: Actor::new("ann", Role::Agent),
            action: InboxAction::ReadAll { up_to: 42 },
        };
        TestFramework::<Inbox>::with(())
            .given_no_previous_events()
            .when(command.clone())
            .then_expect_events(vec![InboxEvent::AllNotificationsRead {
                organization: "acme".into(),
                user_id: "ann".into(),
                up_to: 42,
            }]);
        command.organization = "globex".into();
        TestFramework::<Inbox>::with(())
            .given(vec![InboxEvent::AllNotificationsRead {
                organization: "acme".into(),
                user_id: "ann".into(),
                up_to: 42,
            }])
            .when(command)
            .then_expect_error(DomainError::NotFound);
    }
}
