//! Event versions and the upcasters that bring old payloads to the current shape.
//!
//! The log is kept forever and never rewritten, so when an event's shape changes the old
//! payloads stay as they were written, with their `event_version`; every reader lifts them
//! to the current shape on the way in. There is one list of steps ([`STEPS`]); cqrs-es
//! loads aggregates through it ([`LogUpcaster`]) and the projections decode through it
//! ([`upcast`]), so both sides always agree on what an old event means.
//!
//! A step changes one event type from one version to the next. The stored JSON fixtures
//! under `domain/tests/fixtures/events` hold an example of every version of every event
//! type ever written; `domain/tests/upcasters.rs` loads each into the current event types.

use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use serde_json::Value;

/// The version events are written with unless an event type says otherwise.
pub const INITIAL_VERSION: &str = "1.0";

/// One change of an event type's shape.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// The event type the step changes.
    pub event_type: &'static str,
    /// The version it reads.
    pub from: &'static str,
    /// The version it produces.
    pub to: &'static str,
    /// Rewrites the whole stored payload (`{"TicketAssigned": {...}}`).
    pub lift: fn(Value) -> Value,
}

/// Every shape change so far, oldest first.
pub const STEPS: &[Step] = &[Step {
    // 1.0 left `decision` out for assignments nobody decided on (a claim, an admin's
    // choice); 2.0 always states it, null when there was none.
    event_type: "TicketAssigned",
    from: "1.0",
    to: "2.0",
    lift: ticket_assigned_states_its_decision,
}];

fn ticket_assigned_states_its_decision(mut payload: Value) -> Value {
    if let Some(body) = payload
        .get_mut("TicketAssigned")
        .and_then(Value::as_object_mut)
    {
        body.entry("decision").or_insert(Value::Null);
    }
    payload
}

/// The version `event_type` is written with today.
pub fn current_version(event_type: &str) -> &'static str {
    STEPS
        .iter()
        .rev()
        .find(|step| step.event_type == event_type)
        .map_or(INITIAL_VERSION, |step| step.to)
}

/// Why a stored payload cannot be brought to the current shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpcastError {
    /// A version no step starts from and that is not the current one (written by a newer
    /// release, or corrupt).
    #[error("{event_type} version {version} is unknown (current: {current})")]
    UnknownVersion {
        /// The event type.
        event_type: String,
        /// The stored version.
        version: String,
        /// The version this release writes.
        current: &'static str,
    },
}

/// Lifts a stored payload of `event_type` at `version` to the current shape.
pub fn upcast(event_type: &str, version: &str, mut payload: Value) -> Result<Value, UpcastError> {
    let current = current_version(event_type);
    let mut at = version.to_string();
    while at != current {
        let step = STEPS
            .iter()
            .find(|step| step.event_type == event_type && step.from == at)
            .ok_or_else(|| UpcastError::UnknownVersion {
                event_type: event_type.to_string(),
                version: version.to_string(),
                current,
            })?;
        payload = (step.lift)(payload);
        at = step.to.to_string();
    }
    Ok(payload)
}

/// [`STEPS`] for cqrs-es, which loads aggregates through it.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogUpcaster;

impl EventUpcaster for LogUpcaster {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_version != current_version(event_type)
            && STEPS
                .iter()
                .any(|step| step.event_type == event_type && step.from == event_version)
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        // `can_upcast` vouched for the version, so the chain reaches the current one.
        if let Ok(payload) = upcast(
            &event.event_type,
            &event.event_version,
            event.payload.clone(),
        ) {
            event.payload = payload;
            event.event_version = current_version(&event.event_type).to_string();
        }
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_assignment_of_version_1_gains_an_explicit_decision() {
        let old = json!({"TicketAssigned": {"agent_id": "ann", "previous_agent_id": null, "via": "claim"}});
        let lifted = upcast("TicketAssigned", "1.0", old).expect("upcast");
        assert_eq!(lifted["TicketAssigned"]["decision"], Value::Null);
        assert_eq!(lifted["TicketAssigned"]["agent_id"], "ann");
    }

    #[test]
    fn current_payloads_pass_unchanged_and_unknown_versions_are_refused() {
        let payload = json!({"TicketClosed": null});
        assert_eq!(
            upcast("TicketClosed", "1.0", payload.clone()).expect("current"),
            payload
        );
        assert_eq!(
            upcast("TicketClosed", "9.0", payload),
            Err(UpcastError::UnknownVersion {
                event_type: "TicketClosed".into(),
                version: "9.0".into(),
                current: "1.0",
            })
        );
        assert_eq!(current_version("TicketAssigned"), "2.0");
    }

    #[test]
    fn the_cqrs_upcaster_lifts_only_old_versions() {
        let upcaster = LogUpcaster;
        assert!(upcaster.can_upcast("TicketAssigned", "1.0"));
        assert!(!upcaster.can_upcast("TicketAssigned", "2.0"));
        assert!(!upcaster.can_upcast("TicketClosed", "1.0"));
    }
}
