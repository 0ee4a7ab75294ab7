//! The QueueSettings aggregate: one per organization (its id is the organization). The
//! customer-facing queue texts (seed cloudchat-ten-features.md, Fitur 3) and the assignment
//! policies that are not per division: what happens to an agent's tickets when the agent
//! goes offline, and after how long an unanswered ticket is escalated.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::actor::Role;
use crate::command::{Command, DomainError};
use crate::limits::{within, MAX_TEXT_CHARS};

/// What happens to an agent's tickets when the agent goes offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OfflinePolicy {
    /// The tickets stay with the agent (the seed's recommendation).
    #[default]
    Keep,
    /// Assigned, not yet started tickets return to their queue at their original place.
    Requeue,
}

/// The longest escalation delay accepted: one week.
pub const MAX_ESCALATION_SECONDS: i64 = 7 * 24 * 3600;
/// The longest check keyword accepted.
pub const MAX_KEYWORD_CHARS: usize = 10;

/// An organization's queue settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSettings {
    /// Whether customers get the division menu (queue mode).
    pub enabled: bool,
    /// The first line of the division menu.
    pub welcome_message: String,
    /// Sent when the customer joined a queue; `{division}`, `{queue_number}`.
    pub queue_message_template: String,
    /// What a customer writes to ask for their place.
    pub check_queue_keyword: String,
    /// The answer to the check keyword; `{queue_number}`, `{division}`.
    pub queue_position_message: String,
    /// Sent when no agent is online.
    pub no_agent_available_message: String,
    /// What an agent going offline does to their tickets.
    pub offline_policy: OfflinePolicy,
    /// A ticket not answered within this many seconds goes to the next agent; 0 = never.
    pub escalation_after_seconds: i64,
    /// Show "(N antrian, ~M menit)" after each division of the menu (seed Fitur 4).
    #[serde(default)]
    pub show_wait_time: bool,
    /// Pick the division from the words of a customer's first message when they clearly
    /// name one, instead of showing the menu (seed Fitur 4).
    #[serde(default)]
    pub detect_division: bool,
    /// Sent when an agent takes the customer's ticket; `{agent_name}`, `{division}`.
    #[serde(default = "default_agent_ready_message")]
    pub agent_ready_message: String,
}

/// The default of [`QueueSettings::agent_ready_message`] (settings stored before it
/// existed read it too).
fn default_agent_ready_message() -> String {
    "Agen {agent_name} siap membantu Anda sekarang.".into()
}

impl Default for QueueSettings {
    /// The seed's texts (Indonesian) and defaults.
    fn default() -> Self {
        Self {
            enabled: false,
            welcome_message: "Selamat datang di toko kami, silahkan pilih agen yang anda tuju"
                .into(),
            queue_message_template: "Anda akan di layani oleh tim {division}, Tunggu dalam antrian ke {queue_number}. Tekan # untuk cek antrian".into(),
            check_queue_keyword: "#".into(),
            queue_position_message: "Anda masih dalam antrian ke {queue_number}. mohon menunggu"
                .into(),
            no_agent_available_message:
                "Maaf, saat ini tidak ada agen yang tersedia. Anda akan dilayani secepatnya."
                    .into(),
            offline_policy: OfflinePolicy::Keep,
            escalation_after_seconds: 300,
            show_wait_time: false,
            detect_division: false,
            agent_ready_message: default_agent_ready_message(),
        }
    }
}

/// Changes to the settings; `None` keeps a setting as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueSettingsChanges {
    pub enabled: Option<bool>,
    pub welcome_message: Option<String>,
    pub queue_message_template: Option<String>,
    pub check_queue_keyword: Option<String>,
    pub queue_position_message: Option<String>,
    pub no_agent_available_message: Option<String>,
    pub offline_policy: Option<OfflinePolicy>,
    pub escalation_after_seconds: Option<i64>,
    /// See [`QueueSettings::show_wait_time`].
    pub show_wait_time: Option<bool>,
    /// See [`QueueSettings::detect_division`].
    pub detect_division: Option<bool>,
    /// See [`QueueSettings::agent_ready_message`].
    pub agent_ready_message: Option<String>,
}

/// A command for an organization's queue settings.
pub type QueueSettingsCommand = Command<QueueSettingsChanges>;

/// What happened to the settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum QueueSettingsEvent {
    /// The settings changed; `settings` is the whole new set.
    QueueSettingsUpdated {
        organization: String,
        settings: QueueSettings,
    },
}

impl DomainEvent for QueueSettingsEvent {
    fn event_type(&self) -> String {
        "QueueSettingsUpdated".into()
    }
    fn event_version(&self) -> String {
        crate::upcast::current_version(&self.event_type()).to_string()
    }
}

/// An organization's queue settings as their events leave them.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrganizationQueue {
    settings: Option<QueueSettings>,
}

impl OrganizationQueue {
    /// The settings in force (the defaults until an admin changes them).
    pub fn settings(&self) -> QueueSettings {
        self.settings.clone().unwrap_or_default()
    }
}

impl Aggregate for OrganizationQueue {
    const TYPE: &'static str = "QueueSettings";
    type Command = QueueSettingsCommand;
    type Event = QueueSettingsEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: QueueSettingsCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        if command.actor.role != Role::Admin {
            return Err(DomainError::NotPermitted(
                "only admins change queue settings".into(),
            ));
        }
        let current = self.settings();
        let changes = command.action;
        let text = |value: Option<String>, current: &str, field: &str| {
            let value = value.map(|v| v.trim().to_string());
            match value {
                None => Ok(current.to_string()),
                Some(v) if v.is_empty() => Err(DomainError::InvalidInput(format!(
                    "{field} must not be empty"
                ))),
                Some(v) if !within(&v, MAX_TEXT_CHARS) => Err(DomainError::InvalidInput(format!(
                    "{field} must be at most {MAX_TEXT_CHARS} characters"
                ))),
                Some(v) => Ok(v),
            }
        };
        let settings = QueueSettings {
            enabled: changes.enabled.unwrap_or(current.enabled),
            welcome_message: text(
                changes.welcome_message,
                &current.welcome_message,
                "welcomeMessage",
            )?,
            queue_message_template: text(
                changes.queue_message_template,
                &current.queue_message_template,
                "queueMessageTemplate",
            )?,
            check_queue_keyword: text(
                changes.check_queue_keyword,
                &current.check_queue_keyword,
                "checkQueueKeyword",
            )?,
            queue_position_message: text(
                changes.queue_position_message,
                &current.queue_position_message,
                "queuePositionMessage",
            )?,
            no_agent_available_message: text(
                changes.no_agent_available_message,
                &current.no_agent_available_message,
                "noAgentAvailableMessage",
            )?,
            offline_policy: changes.offline_policy.unwrap_or(current.offline_policy),
            escalation_after_seconds: changes
                .escalation_after_seconds
                .unwrap_or(current.escalation_after_seconds),
            show_wait_time: changes.show_wait_time.unwrap_or(current.show_wait_time),
            detect_division: changes.detect_division.unwrap_or(current.detect_division),
            agent_ready_message: text(
                changes.agent_ready_message,
                &current.agent_ready_message,
                "agentReadyMessage",
            )?,
        };
        if !within(&settings.check_queue_keyword, MAX_KEYWORD_CHARS) {
            return Err(DomainError::InvalidInput(format!(
                "checkQueueKeyword must be at most {MAX_KEYWORD_CHARS} characters"
            )));
        }
        if !(0..=MAX_ESCALATION_SECONDS).contains(&settings.escalation_after_seconds) {
            return Err(DomainError::InvalidInput(format!(
                "escalationAfterSeconds must be between 0 (never) and {MAX_ESCALATION_SECONDS}"
            )));
        }
        if self.settings.as_ref() != Some(&settings) {
            sink.write(
                QueueSettingsEvent::QueueSettingsUpdated {
                    organization: command.organization,
                    settings,
                },
                self,
            )
            .await;
        }
        Ok(())
    }

    fn apply(&mut self, event: QueueSettingsEvent) {
        match event {
            QueueSettingsEvent::QueueSettingsUpdated { settings, .. } => {
                self.settings = Some(settings)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actor::Actor;
    use cqrs_es::test::TestFramework;

    fn change(role: Role, changes: QueueSettingsChanges) -> QueueSettingsCommand {
        QueueSettingsCommand {
            organization: "acme".into(),
            actor: Actor::new("boss", role),
            action: changes,
        }
    }

    #[test]
    fn the_defaults_are_the_seed_texts() {
        let defaults = QueueSettings::default();
        assert_eq!(defaults.check_queue_keyword, "#");
        assert_eq!(defaults.offline_policy, OfflinePolicy::Keep);
        assert_eq!(defaults.escalation_after_seconds, 300);
        assert!(defaults.queue_message_template.contains("{queue_number}"));
    }

    #[test]
    fn the_first_change_records_the_whole_settings() {
        let expected = QueueSettings {
            offline_policy: OfflinePolicy::Requeue,
            ..Default::default()
        };
        TestFramework::<OrganizationQueue>::with(())
            .given_no_previous_events()
            .when(change(
                Role::Admin,
                QueueSettingsChanges {
                    offline_policy: Some(OfflinePolicy::Requeue),
                    ..Default::default()
                },
            ))
            .then_expect_events(vec![QueueSettingsEvent::QueueSettingsUpdated {
                organization: "acme".into(),
                settings: expected,
            }]);
    }

    #[test]
    fn setting_what_is_already_set_writes_nothing() {
        TestFramework::<OrganizationQueue>::with(())
            .given(vec![QueueSettingsEvent::QueueSettingsUpdated {
                organization: "acme".into(),
                settings: QueueSettings::default(),
            }])
            .when(change(
                Role::Admin,
                QueueSettingsChanges {
                    check_queue_keyword: Some(" # ".into()),
                    ..Default::default()
                },
            ))
            .then_expect_events(vec![]);
    }

    #[test]
    fn bad_settings_and_non_admins_are_refused() {
        TestFramework::<OrganizationQueue>::with(())
            .given_no_previous_events()
            .when(change(Role::Agent, QueueSettingsChanges::default()))
            .then_expect_error(DomainError::NotPermitted(
                "only admins change queue settings".into(),
            ));
        TestFramework::<OrganizationQueue>::with(())
            .given_no_previous_events()
            .when(change(
                Role::Admin,
                QueueSettingsChanges {
                    escalation_after_seconds: Some(-1),
                    ..Default::default()
                },
            ))
            .then_expect_error(DomainError::InvalidInput(
                "escalationAfterSeconds must be between 0 (never) and 604800".into(),
            ));
        TestFramework::<OrganizationQueue>::with(())
            .given_no_previous_events()
            .when(change(
                Role::Admin,
                QueueSettingsChanges {
                    check_queue_keyword: Some("cek antrian saya".into()),
                    ..Default::default()
                },
            ))
            .then_expect_error(DomainError::InvalidInput(
                "checkQueueKeyword must be at most 10 characters".into(),
            ));
        TestFramework::<OrganizationQueue>::with(())
            .given_no_previous_events()
            .when(change(
                Role::Admin,
                QueueSettingsChanges {
                    welcome_message: Some("  ".into()),
                    ..Default::default()
                },
            ))
            .then_expect_error(DomainError::InvalidInput(
                "welcomeMessage must not be empty".into(),
            ));
    }
}
