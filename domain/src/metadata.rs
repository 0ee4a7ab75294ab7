//! The metadata every event carries (brief rule 7), stored beside the payload in the log.

use chrono::{DateTime, SecondsFormat, Utc};
use std::collections::HashMap;

use crate::actor::{Actor, Role};

/// Keys under which [`EventMetadata`] is stored in the events table's `metadata` JSON.
pub mod keys {
    /// The organization the event belongs to.
    pub const ORGANIZATION: &str = "organization";
    /// The token subject that issued the command.
    pub const ACTOR_ID: &str = "actor_id";
    /// The role of that subject.
    pub const ACTOR_ROLE: &str = "actor_role";
    /// When the command was accepted, RFC 3339 UTC.
    pub const OCCURRED_AT: &str = "occurred_at";
    /// The id of the request that carried the command.
    pub const REQUEST_ID: &str = "request_id";
    /// The id shared by every command of one business flow.
    pub const CORRELATION_ID: &str = "correlation_id";
    /// The position of the event that caused this command (process managers), if any.
    pub const CAUSATION_ID: &str = "causation_id";
}

/// Who did it, when, for which organization, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMetadata {
    /// The organization every affected aggregate belongs to.
    pub organization: String,
    /// The issuer of the command.
    pub actor: Actor,
    /// The moment the command was accepted (the only clock the domain knows).
    pub occurred_at: DateTime<Utc>,
    /// The request that carried the command.
    pub request_id: String,
    /// The flow this command belongs to; equals `request_id` for a flow's first command.
    pub correlation_id: String,
    /// The event that caused this command, for commands issued by process managers.
    pub causation_id: Option<String>,
}

impl EventMetadata {
    /// Flattens the metadata into the string map cqrs-es stores with each event.
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut map = HashMap::from([
            (keys::ORGANIZATION.into(), self.organization.clone()),
            (keys::ACTOR_ID.into(), self.actor.id.clone()),
            (keys::ACTOR_ROLE.into(), self.actor.role.as_str().into()),
            (
                keys::OCCURRED_AT.into(),
                self.occurred_at
                    .to_rfc3339_opts(SecondsFormat::Micros, true),
            ),
            (keys::REQUEST_ID.into(), self.request_id.clone()),
            (keys::CORRELATION_ID.into(), self.correlation_id.clone()),
        ]);
        if let Some(causation) = &self.causation_id {
            map.insert(keys::CAUSATION_ID.into(), causation.clone());
        }
        map
    }

    /// Reads metadata back from the stored map; `None` when a required key is missing
    /// or malformed.
    pub fn from_map(map: &HashMap<String, String>) -> Option<Self> {
        Some(Self {
            organization: map.get(keys::ORGANIZATION)?.clone(),
            actor: Actor {
                id: map.get(keys::ACTOR_ID)?.clone(),
                role: map.get(keys::ACTOR_ROLE)?.parse::<Role>().ok()?,
            },
            occurred_at: DateTime::parse_from_rfc3339(map.get(keys::OCCURRED_AT)?)
                .ok()?
                .with_timezone(&Utc),
            request_id: map.get(keys::REQUEST_ID)?.clone(),
            correlation_id: map.get(keys::CORRELATION_ID)?.clone(),
            causation_id: map.get(keys::CAUSATION_ID).cloned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_through_the_stored_map() {
        let metadata = EventMetadata {
            organization: "acme".into(),
            actor: Actor::new("agent-1", Role::Agent),
            occurred_at: DateTime::parse_from_rfc3339("2026-11-21T08:00:00.123456Z")
                .unwrap()
                .with_timezone(&Utc),
            request_id: "req-1".into(),
            correlation_id: "req-1".into(),
            causation_id: Some("42".into()),
        };
        assert_eq!(EventMetadata::from_map(&metadata.to_map()), Some(metadata));
    }

    #[test]
    fn metadata_without_an_organization_is_rejected() {
        let mut map = EventMetadata {
            organization: "acme".into(),
            actor: Actor::new("a", Role::Admin),
            occurred_at: Utc::now(),
            request_id: "r".into(),
            correlation_id: "r".into(),
            causation_id: None,
        }
        .to_map();
        map.remove(keys::ORGANIZATION);
        assert_eq!(EventMetadata::from_map(&map), None);
    }
}
