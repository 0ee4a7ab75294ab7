//! The metadata every event carries (brief rule 7), stored beside the payload in the log.

use chrono::{DateTime, SecondsFormat, Utc};
use std::borrow::Cow;
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

    /// Reads metadata back from the stored map's JSON text (what [`EventMetadata::to_map`]
    /// wrote); `None` when it is not such a map or a required key is missing or
    /// malformed. Reads the text in place: the log is read a million events at a time.
    pub fn from_json(text: &str) -> Option<Self> {
        let stored: StoredMetadata<'_> = serde_json::from_str(text).ok()?;
        Some(Self {
            organization: stored.organization?.into_owned(),
            actor: Actor {
                id: stored.actor_id?.into_owned(),
                role: stored.actor_role?.parse::<Role>().ok()?,
            },
            occurred_at: DateTime::parse_from_rfc3339(&stored.occurred_at?)
                .ok()?
                .with_timezone(&Utc),
            request_id: stored.request_id?.into_owned(),
            correlation_id: stored.correlation_id?.into_owned(),
            causation_id: stored.causation_id.map(Cow::into_owned),
        })
    }
}

/// The stored map's fields, borrowed from its text where no unescaping is needed (the
/// names are those of [`keys`]; a test holds them together).
#[derive(serde::Deserialize)]
struct StoredMetadata<'a> {
    #[serde(borrow)]
    organization: Option<Cow<'a, str>>,
    #[serde(borrow)]
    actor_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    actor_role: Option<Cow<'a, str>>,
    #[serde(borrow)]
    occurred_at: Option<Cow<'a, str>>,
    #[serde(borrow)]
    request_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    correlation_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    causation_id: Option<Cow<'a, str>>,
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
        let stored = serde_json::to_string(&metadata.to_map()).unwrap();
        assert_eq!(EventMetadata::from_json(&stored), Some(metadata.clone()));
        // Escaped text is unescaped.
        let escaped = EventMetadata {
            request_id: "req \"1\"\n".into(),
            ..metadata
        };
        let stored = serde_json::to_string(&escaped.to_map()).unwrap();
        assert_eq!(EventMetadata::from_json(&stored), Some(escaped));
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
        let stored = serde_json::to_string(&map).unwrap();
        assert_eq!(EventMetadata::from_json(&stored), None);
        assert_eq!(EventMetadata::from_json("[]"), None);
    }
}
