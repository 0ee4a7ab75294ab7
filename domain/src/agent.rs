//! The AgentStatus aggregate: an agent of one organization. This first version records
//! registration (name, capacity, divisions); presence and the slot ledger build on it.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::actor::Role;
use crate::command::{Command, DomainError};
use crate::limits::{within, MAX_NAME_CHARS};

/// Active tickets an agent may hold unless configured otherwise (seed: 5).
pub const DEFAULT_MAX_TICKETS: i64 = 5;
/// The highest capacity accepted.
pub const MAX_MAX_TICKETS: i64 = 100;

/// A command for one agent.
pub type AgentCommand = Command<AgentAction>;

/// The things that can be done to an agent.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentAction {
    /// Registers the agent (admin). Divisions must exist; the caller checks that.
    Register {
        name: String,
        max_tickets: i64,
        division_ids: Vec<String>,
    },
}

/// What happened to an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgentEvent {
    /// The agent was registered.
    AgentRegistered {
        organization: String,
        name: String,
        max_tickets: i64,
        division_ids: Vec<String>,
    },
}

impl DomainEvent for AgentEvent {
    fn event_type(&self) -> String {
        match self {
            AgentEvent::AgentRegistered { .. } => "AgentRegistered".into(),
        }
    }
    fn event_version(&self) -> String {
        "1.0".into()
    }
}

/// Why an agent command was refused.
pub type AgentError = DomainError;

/// An agent as its events leave it.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    organization: Option<String>,
}

impl Aggregate for AgentStatus {
    const TYPE: &'static str = "AgentStatus";
    type Command = AgentCommand;
    type Event = AgentEvent;
    type Error = AgentError;
    type Services = ();

    async fn handle(
        &mut self,
        command: AgentCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), AgentError> {
        match command.action {
            AgentAction::Register {
                name,
                max_tickets,
                division_ids,
            } => {
                if command.actor.role != Role::Admin {
                    return Err(AgentError::NotPermitted(
                        "only admins register agents".into(),
                    ));
                }
                if self.organization.is_some() {
                    return Err(AgentError::AlreadyExists);
                }
                let name = name.trim().to_string();
                if name.is_empty() || !within(&name, MAX_NAME_CHARS) {
                    return Err(AgentError::InvalidInput(format!(
                        "agent name must be 1 to {MAX_NAME_CHARS} characters"
                    )));
                }
                if !(1..=MAX_MAX_TICKETS).contains(&max_tickets) {
                    return Err(AgentError::InvalidInput(format!(
                        "maxTickets must be between 1 and {MAX_MAX_TICKETS}"
                    )));
                }
                let mut division_ids = division_ids;
                division_ids.sort();
                division_ids.dedup();
                sink.write(
                    AgentEvent::AgentRegistered {
                        organization: command.organization,
                        name,
                        max_tickets,
                        division_ids,
                    },
                    self,
                )
                .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: AgentEvent) {
        match event {
            AgentEvent::AgentRegistered { organization, .. } => {
                self.organization = Some(organization)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actor::Actor;
    use cqrs_es::test::TestFramework;

    fn register(role: Role, name: &str, max_tickets: i64) -> AgentCommand {
        AgentCommand {
            organization: "acme".into(),
            actor: Actor::new("boss", role),
            action: AgentAction::Register {
                name: name.into(),
                max_tickets,
                division_ids: vec!["b".into(), "a".into(), "b".into()],
            },
        }
    }

    fn registered() -> AgentEvent {
        AgentEvent::AgentRegistered {
            organization: "acme".into(),
            name: "Ann".into(),
            max_tickets: 5,
            division_ids: vec!["a".into(), "b".into()],
        }
    }

    #[test]
    fn admin_registers_an_agent_with_deduplicated_divisions() {
        TestFramework::<AgentStatus>::with(())
            .given_no_previous_events()
            .when(register(Role::Admin, " Ann ", 5))
            .then_expect_events(vec![registered()]);
    }

    #[test]
    fn registering_twice_is_refused() {
        TestFramework::<AgentStatus>::with(())
            .given(vec![registered()])
            .when(register(Role::Admin, "Ann", 5))
            .then_expect_error(AgentError::AlreadyExists);
    }

    #[test]
    fn only_admins_register_agents() {
        TestFramework::<AgentStatus>::with(())
            .given_no_previous_events()
            .when(register(Role::Agent, "Ann", 5))
            .then_expect_error(AgentError::NotPermitted(
                "only admins register agents".into(),
            ));
    }

    #[test]
    fn blank_names_and_capacities_out_of_range_are_refused() {
        TestFramework::<AgentStatus>::with(())
            .given_no_previous_events()
            .when(register(Role::Admin, " ", 5))
            .then_expect_error(AgentError::InvalidInput(
                "agent name must be 1 to 120 characters".into(),
            ));
        for capacity in [0, 101] {
            TestFramework::<AgentStatus>::with(())
                .given_no_previous_events()
                .when(register(Role::Admin, "Ann", capacity))
                .then_expect_error(AgentError::InvalidInput(
                    "maxTickets must be between 1 and 100".into(),
                ));
        }
    }
}
