//! The ChannelConfig aggregate: how an organization reaches its customers on one channel
//! (one WhatsApp Cloud API number, one Telegram bot). Only what may be read by anyone who
//! reads the log is recorded here; the channel's secrets (access tokens, app secrets, bot
//! tokens) are stored by the caller outside the log (brief rule 8).

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::actor::Role;
use crate::command::{Command, DomainError};
use crate::conversation::Channel;

/// The public part of a channel's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelProfile {
    /// WHATSAPP, TELEGRAM, ...
    pub channel: Channel,
    /// Where the provider's API is reached; `None`: its public address.
    pub api_base_url: Option<String>,
    /// WhatsApp: the number's id, which routes webhook payloads to this organization.
    pub phone_number_id: Option<String>,
}

/// Commands of a channel configuration: (re)configure it. Admins only.
pub type ChannelCommand = Command<ChannelProfile>;

/// What happened to a channel configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ChannelEvent {
    /// The channel was configured or reconfigured (its secrets changed outside the log).
    ChannelConfigured {
        organization: String,
        profile: ChannelProfile,
    },
}

impl DomainEvent for ChannelEvent {
    fn event_type(&self) -> String {
        "ChannelConfigured".into()
    }

    fn event_version(&self) -> String {
        crate::upcast::current_version(&self.event_type()).to_string()
    }
}

/// A channel configuration as its events leave it.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelConfig {
    organization: Option<String>,
    profile: Option<ChannelProfile>,
}

impl ChannelConfig {
    /// The current profile, once configured.
    pub fn profile(&self) -> Option<&ChannelProfile> {
        self.profile.as_ref()
    }
}

impl Aggregate for ChannelConfig {
    const TYPE: &'static str = "ChannelConfig";
    type Command = ChannelCommand;
    type Event = ChannelEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: ChannelCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        if command.actor.role != Role::Admin {
            return Err(DomainError::NotPermitted(
                "only admins configure channels".into(),
            ));
        }
        if let Some(owner) = &self.organization {
            if *owner != command.organization {
                return Err(DomainError::NotFound);
            }
        }
        let mut profile = command.action;
        profile.api_base_url = profile
            .api_base_url
            .map(|url| url.trim().trim_end_matches('/').to_string())
            .filter(|url| !url.is_empty());
        if let Some(url) = &profile.api_base_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) || url.len() > 500 {
                return Err(DomainError::InvalidInput(
                    "apiBaseUrl must be an http(s) URL of at most 500 characters".into(),
                ));
            }
        }
        if profile.channel == Channel::Whatsapp {
            match profile.phone_number_id.as_deref().map(str::trim) {
                Some(id) if !id.is_empty() && id.len() <= 64 => {
                    profile.phone_number_id = Some(id.to_string())
                }
                _ => {
                    return Err(DomainError::InvalidInput(
                        "WhatsApp settings need a phoneNumberId".into(),
                    ))
                }
            }
        } else {
            profile.phone_number_id = None;
        }
        if self.profile.as_ref() != Some(&profile) || self.organization.is_none() {
            sink.write(
                ChannelEvent::ChannelConfigured {
                    organization: command.organization,
                    profile,
                },
                self,
            )
            .await;
        }
        Ok(())
    }

    fn apply(&mut self, event: ChannelEvent) {
        let ChannelEvent::ChannelConfigured {
            organization,
            profile,
        } = event;
        self.organization = Some(organization);
        self.profile = Some(profile);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actor::Actor;
    use cqrs_es::test::TestFramework;

    fn configure(role: Role, profile: ChannelProfile) -> ChannelCommand {
        ChannelCommand {
            organization: "acme".into(),
            actor: Actor::new("boss", role),
            action: profile,
        }
    }

    fn whatsapp(url: Option<&str>) -> ChannelProfile {
        ChannelProfile {
            channel: Channel::Whatsapp,
            api_base_url: url.map(Into::into),
            phone_number_id: Some(" 1234567890 ".into()),
        }
    }

    #[test]
    fn configuring_records_the_public_part_normalised() {
        TestFramework::<ChannelConfig>::with(())
            .given_no_previous_events()
            .when(configure(
                Role::Admin,
                whatsapp(Some("http://127.0.0.1:9/")),
            ))
            .then_expect_events(vec![ChannelEvent::ChannelConfigured {
                organization: "acme".into(),
                profile: ChannelProfile {
                    channel: Channel::Whatsapp,
                    api_base_url: Some("http://127.0.0.1:9".into()),
                    phone_number_id: Some("1234567890".into()),
                },
            }]);
    }

    #[test]
    fn bad_settings_and_non_admins_are_refused() {
        TestFramework::<ChannelConfig>::with(())
            .given_no_previous_events()
            .when(configure(Role::Admin, whatsapp(Some("ftp://x"))))
            .then_expect_error(DomainError::InvalidInput(
                "apiBaseUrl must be an http(s) URL of at most 500 characters".into(),
            ));
        let mut no_number = whatsapp(None);
        no_number.phone_number_id = None;
        TestFramework::<ChannelConfig>::with(())
            .given_no_previous_events()
            .when(configure(Role::Admin, no_number))
            .then_expect_error(DomainError::InvalidInput(
                "WhatsApp settings need a phoneNumberId".into(),
            ));
        TestFramework::<ChannelConfig>::with(())
            .given_no_previous_events()
            .when(configure(Role::Agent, whatsapp(None)))
            .then_expect_error(DomainError::NotPermitted(
                "only admins configure channels".into(),
            ));
    }

    #[test]
    fn reconfiguring_with_the_same_public_part_records_nothing() {
        // Secrets may have changed outside the log; the public part did not, so nothing
        // is recorded.
        let configured = ChannelEvent::ChannelConfigured {
            organization: "acme".into(),
            profile: ChannelProfile {
                channel: Channel::Whatsapp,
                api_base_url: None,
                phone_number_id: Some("1234567890".into()),
            },
        };
        TestFramework::<ChannelConfig>::with(())
            .given(vec![configured])
            .when(configure(Role::Admin, whatsapp(None)))
            .then_expect_events(vec![]);
    }
}
