//! The AgentStatus aggregate: an agent of one organization — registration, presence
//! (online/offline), capacity, the divisions the agent serves, and the **slot ledger**: the
//! tickets the agent holds or is about to be given.
//!
//! The ledger is where the capacity invariant lives. A ticket reaches an agent in two steps
//! (a small saga run by whoever assigns): first a slot is reserved here — refused with
//! `CapacityReached` when every slot is taken — then the ticket is assigned with that
//! reservation. A reservation names the ticket version it was made for, and is released
//! when the ticket later leaves the agent (resolved, closed, reassigned, requeued) or when
//! the ticket step failed; a release older than the reservation is ignored, so a late or
//! repeated release can never free a slot that a newer assignment took.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

use crate::actor::Role;
use crate::command::{Command, DomainError};
use crate::limits::{within, MAX_NAME_CHARS};
use crate::ticket::AssignmentVia;

/// Active tickets an agent may hold unless configured otherwise (seed: 5).
pub const DEFAULT_MAX_TICKETS: i64 = 5;
/// The highest capacity accepted.
pub const MAX_MAX_TICKETS: i64 = 100;
/// The most divisions one agent may serve.
pub const MAX_DIVISIONS: usize = 100;

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
    /// The agent starts taking tickets. Sent to the calling agent's own aggregate.
    GoOnline,
    /// The agent stops taking new tickets.
    GoOffline,
    /// An admin changes how many active tickets the agent may hold.
    SetCapacity { max_tickets: i64 },
    /// An admin changes the divisions the agent serves (they must exist; the caller checks).
    SetDivisions { division_ids: Vec<String> },
    /// Takes a slot for `ticket_id` as it stood at `ticket_version`, for the assignment
    /// `via`. `division_id` is the ticket's division, checked against the agent's divisions
    /// for claims and automatic assignment (admins may assign across divisions).
    ReserveSlot {
        ticket_id: String,
        ticket_version: u64,
        division_id: Option<String>,
        via: AssignmentVia,
        /// Unique per saga attempt: only the saga that made a reservation may repeat it.
        reservation_id: String,
    },
    /// The ticket left the agent at `ticket_version` (or the assignment the reservation was
    /// for did not happen): frees its slot if it was reserved before that version.
    ReleaseSlot {
        ticket_id: String,
        ticket_version: u64,
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
    /// The agent went online.
    AgentWentOnline,
    /// The agent went offline.
    AgentWentOffline,
    /// The agent's capacity changed.
    AgentCapacityChanged { from: i64, to: i64 },
    /// The agent's divisions changed.
    AgentDivisionsChanged { division_ids: Vec<String> },
    /// A slot was taken for a ticket.
    SlotReserved {
        ticket_id: String,
        ticket_version: u64,
        via: AssignmentVia,
        /// The saga attempt that made it.
        #[serde(default)]
        reservation_id: String,
    },
    /// A slot was freed.
    SlotReleased {
        ticket_id: String,
        ticket_version: u64,
    },
}

impl DomainEvent for AgentEvent {
    fn event_type(&self) -> String {
        match self {
            AgentEvent::AgentRegistered { .. } => "AgentRegistered",
            AgentEvent::AgentWentOnline => "AgentWentOnline",
            AgentEvent::AgentWentOffline => "AgentWentOffline",
            AgentEvent::AgentCapacityChanged { .. } => "AgentCapacityChanged",
            AgentEvent::AgentDivisionsChanged { .. } => "AgentDivisionsChanged",
            AgentEvent::SlotReserved { .. } => "SlotReserved",
            AgentEvent::SlotReleased { .. } => "SlotReleased",
        }
        .into()
    }
    fn event_version(&self) -> String {
        crate::upcast::current_version(&self.event_type()).to_string()
    }
}

/// Why an agent command was refused.
pub type AgentError = DomainError;

/// An agent as its events leave it.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    organization: Option<String>,
    name: String,
    online: bool,
    max_tickets: i64,
    division_ids: BTreeSet<String>,
    /// Held or reserved slots: ticket id -> the ticket version the slot was reserved at.
    slots: BTreeMap<String, u64>,
    /// Ticket id -> the saga attempt that reserved its slot.
    reservation_ids: BTreeMap<String, String>,
}

impl AgentStatus {
    /// Whether the agent is online.
    pub fn online(&self) -> bool {
        self.online
    }

    /// The tickets holding (or about to hold) a slot, with the version each was reserved at.
    pub fn slots(&self) -> &BTreeMap<String, u64> {
        &self.slots
    }

    /// The agent's capacity.
    pub fn max_tickets(&self) -> i64 {
        self.max_tickets
    }

    /// The divisions the agent serves.
    pub fn division_ids(&self) -> &BTreeSet<String> {
        &self.division_ids
    }

    fn decide(&self, command: AgentCommand) -> Result<Vec<AgentEvent>, AgentError> {
        let AgentCommand {
            organization,
            actor,
            action,
        } = command;
        if actor.role == Role::Analyst {
            return Err(AgentError::NotPermitted(
                "analysts read agents; they never change them".into(),
            ));
        }
        if let AgentAction::Register {
            name,
            max_tickets,
            division_ids,
        } = action
        {
            if actor.role != Role::Admin {
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
            check_capacity(max_tickets)?;
            return Ok(vec![AgentEvent::AgentRegistered {
                organization,
                name,
                max_tickets,
                division_ids: normalise_divisions(division_ids)?,
            }]);
        }
        if self.organization.as_deref() != Some(organization.as_str()) {
            return Err(AgentError::NotFound);
        }
        let admin_only = |what: &str| {
            if actor.role == Role::Admin {
                Ok(())
            } else {
                Err(AgentError::NotPermitted(format!("only admins {what}")))
            }
        };
        let event = match action {
            AgentAction::Register { .. } => unreachable!("handled above"),
            AgentAction::GoOnline | AgentAction::GoOffline => {
                if actor.role != Role::Agent {
                    return Err(AgentError::NotPermitted(
                        "agents set their own presence".into(),
                    ));
                }
                let online = action == AgentAction::GoOnline;
                if self.online == online {
                    return Ok(vec![]);
                }
                if online {
                    AgentEvent::AgentWentOnline
                } else {
                    AgentEvent::AgentWentOffline
                }
            }
            AgentAction::SetCapacity { max_tickets } => {
                admin_only("change an agent's capacity")?;
                check_capacity(max_tickets)?;
                if max_tickets == self.max_tickets {
                    return Ok(vec![]);
                }
                AgentEvent::AgentCapacityChanged {
                    from: self.max_tickets,
                    to: max_tickets,
                }
            }
            AgentAction::SetDivisions { division_ids } => {
                admin_only("change an agent's divisions")?;
                let division_ids = normalise_divisions(division_ids)?;
                if division_ids.iter().eq(self.division_ids.iter()) {
                    return Ok(vec![]);
                }
                AgentEvent::AgentDivisionsChanged { division_ids }
            }
            AgentAction::ReserveSlot {
                ticket_id,
                ticket_version,
                division_id,
                via,
                reservation_id,
            } => {
                match self.slots.get(&ticket_id) {
                    Some(reserved) if *reserved == ticket_version => {
                        if self.reservation_ids.get(&ticket_id) == Some(&reservation_id) {
                            // The same saga repeating its step: nothing new.
                            return Ok(vec![]);
                        }
                        // Two sagas must never share one slot: the other might release it
                        // while this one assigns.
                        return Err(AgentError::Stale(format!(
                            "another assignment of this ticket to agent {} is in progress",
                            self.name
                        )));
                    }
                    Some(reserved) if *reserved > ticket_version => {
                        return Err(AgentError::Stale(
                            "the ticket changed since it was read".into(),
                        ));
                    }
                    _ => {}
                }
                if matches!(via, AssignmentVia::Auto | AssignmentVia::Escalation) && !self.online {
                    return Err(AgentError::InvalidTransition(format!(
                        "agent {} is offline",
                        self.name
                    )));
                }
                if matches!(
                    via,
                    AssignmentVia::Auto | AssignmentVia::Claim | AssignmentVia::Escalation
                ) {
                    if let Some(division) = &division_id {
                        if !self.division_ids.contains(division) {
                            return Err(AgentError::NotPermitted(format!(
                                "agent {} does not serve the ticket's division",
                                self.name
                            )));
                        }
                    }
                }
                // A stale reservation of the same ticket is replaced, not added to.
                let taken = self.slots.keys().filter(|t| **t != ticket_id).count() as i64;
                if taken >= self.max_tickets {
                    return Err(AgentError::CapacityReached(format!(
                        "agent {} already holds {taken} of {} active tickets",
                        self.name, self.max_tickets
                    )));
                }
                AgentEvent::SlotReserved {
                    ticket_id,
                    ticket_version,
                    via,
                    reservation_id,
                }
            }
            AgentAction::ReleaseSlot {
                ticket_id,
                ticket_version,
            } => match self.slots.get(&ticket_id) {
                Some(reserved) if *reserved < ticket_version => AgentEvent::SlotReleased {
                    ticket_id,
                    ticket_version,
                },
                // Not held, or held by a newer reservation than this release is about.
                _ => return Ok(vec![]),
            },
        };
        Ok(vec![event])
    }
}

fn check_capacity(max_tickets: i64) -> Result<(), AgentError> {
    if (1..=MAX_MAX_TICKETS).contains(&max_tickets) {
        Ok(())
    } else {
        Err(AgentError::InvalidInput(format!(
            "maxTickets must be between 1 and {MAX_MAX_TICKETS}"
        )))
    }
}

fn normalise_divisions(division_ids: Vec<String>) -> Result<Vec<String>, AgentError> {
    let set: BTreeSet<String> = division_ids
        .into_iter()
        .map(|d| d.trim().to_string())
        .collect();
    if set.contains("") {
        return Err(AgentError::InvalidInput(
            "division ids must not be empty".into(),
        ));
    }
    if set.len() > MAX_DIVISIONS {
        return Err(AgentError::InvalidInput(format!(
            "an agent serves at most {MAX_DIVISIONS} divisions"
        )));
    }
    Ok(set.into_iter().collect())
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
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: AgentEvent) {
        match event {
            AgentEvent::AgentRegistered {
                organization,
                name,
                max_tickets,
                division_ids,
            } => {
                self.organization = Some(organization);
                self.name = name;
                self.max_tickets = max_tickets;
                self.division_ids = division_ids.into_iter().collect();
            }
            AgentEvent::AgentWentOnline => self.online = true,
            AgentEvent::AgentWentOffline => self.online = false,
            AgentEvent::AgentCapacityChanged { to, .. } => self.max_tickets = to,
            AgentEvent::AgentDivisionsChanged { division_ids } => {
                self.division_ids = division_ids.into_iter().collect()
            }
            AgentEvent::SlotReserved {
                ticket_id,
                ticket_version,
                reservation_id,
                ..
            } => {
                self.slots.insert(ticket_id.clone(), ticket_version);
                self.reservation_ids.insert(ticket_id, reservation_id);
            }
            AgentEvent::SlotReleased { ticket_id, .. } => {
                self.slots.remove(&ticket_id);
                self.reservation_ids.remove(&ticket_id);
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

    fn as_role(role: Role, action: AgentAction) -> AgentCommand {
        AgentCommand {
            organization: "acme".into(),
            actor: Actor::new("someone", role),
            action,
        }
    }

    /// The reservation id the helpers use: one saga attempt per ticket and version.
    fn saga(ticket: &str, version: u64) -> String {
        format!("{ticket}@{version}")
    }

    fn reserve(ticket: &str, version: u64, via: AssignmentVia) -> AgentAction {
        AgentAction::ReserveSlot {
            ticket_id: ticket.into(),
            ticket_version: version,
            division_id: Some("a".into()),
            via,
            reservation_id: saga(ticket, version),
        }
    }

    fn reserved(ticket: &str, version: u64, via: AssignmentVia) -> AgentEvent {
        AgentEvent::SlotReserved {
            ticket_id: ticket.into(),
            ticket_version: version,
            via,
            reservation_id: saga(ticket, version),
        }
    }

    fn full_agent(capacity: usize) -> Vec<AgentEvent> {
        let mut events = vec![registered(), AgentEvent::AgentWentOnline];
        for i in 0..capacity {
            events.push(reserved(&format!("t{i}"), 1, AssignmentVia::Auto));
        }
        events
    }

    #[test]
    fn agents_go_online_and_offline_and_repeating_changes_nothing() {
        TestFramework::<AgentStatus>::with(())
            .given(vec![registered()])
            .when(as_role(Role::Agent, AgentAction::GoOnline))
            .then_expect_events(vec![AgentEvent::AgentWentOnline]);
        TestFramework::<AgentStatus>::with(())
            .given(vec![registered(), AgentEvent::AgentWentOnline])
            .when(as_role(Role::Agent, AgentAction::GoOnline))
            .then_expect_events(vec![]);
        TestFramework::<AgentStatus>::with(())
            .given(vec![registered(), AgentEvent::AgentWentOnline])
            .when(as_role(Role::Agent, AgentAction::GoOffline))
            .then_expect_events(vec![AgentEvent::AgentWentOffline]);
    }

    #[test]
    fn presence_is_the_agents_own_business() {
        for role in [Role::Admin, Role::Service] {
            TestFramework::<AgentStatus>::with(())
                .given(vec![registered()])
                .when(as_role(role, AgentAction::GoOnline))
                .then_expect_error(AgentError::NotPermitted(
                    "agents set their own presence".into(),
                ));
        }
        TestFramework::<AgentStatus>::with(())
            .given(vec![registered()])
            .when(as_role(Role::Analyst, AgentAction::GoOnline))
            .then_expect_error(AgentError::NotPermitted(
                "analysts read agents; they never change them".into(),
            ));
    }

    #[test]
    fn unknown_agents_and_other_organizations_are_not_found() {
        TestFramework::<AgentStatus>::with(())
            .given_no_previous_events()
            .when(as_role(Role::Agent, AgentAction::GoOnline))
            .then_expect_error(AgentError::NotFound);
        let mut command = as_role(Role::Admin, AgentAction::SetCapacity { max_tickets: 3 });
        command.organization = "globex".into();
        TestFramework::<AgentStatus>::with(())
            .given(vec![registered()])
            .when(command)
            .then_expect_error(AgentError::NotFound);
    }

    #[test]
    fn slots_are_reserved_up_to_capacity_and_no_further() {
        TestFramework::<AgentStatus>::with(())
            .given(full_agent(4))
            .when(as_role(
                Role::Service,
                reserve("t9", 1, AssignmentVia::Auto),
            ))
            .then_expect_events(vec![reserved("t9", 1, AssignmentVia::Auto)]);
        for via in [
            AssignmentVia::Auto,
            AssignmentVia::Claim,
            AssignmentVia::Admin,
        ] {
            TestFramework::<AgentStatus>::with(())
                .given(full_agent(5))
                .when(as_role(Role::Admin, reserve("t9", 1, via)))
                .then_expect_error(AgentError::CapacityReached(
                    "agent Ann already holds 5 of 5 active tickets".into(),
                ));
        }
    }

    #[test]
    fn the_same_reservation_twice_is_one_and_a_stale_one_is_replaced() {
        TestFramework::<AgentStatus>::with(())
            .given(full_agent(5))
            .when(as_role(
                Role::Service,
                reserve("t4", 1, AssignmentVia::Auto),
            ))
            .then_expect_events(vec![]);
        // t4 was reserved at version 1 and never assigned; a new reservation at version 3
        // takes its place instead of a sixth slot.
        TestFramework::<AgentStatus>::with(())
            .given(full_agent(5))
            .when(as_role(
                Role::Service,
                reserve("t4", 3, AssignmentVia::Auto),
            ))
            .then_expect_events(vec![reserved("t4", 3, AssignmentVia::Auto)]);
    }

    #[test]
    fn two_sagas_never_share_a_slot() {
        let mut other = reserve("t4", 1, AssignmentVia::Auto);
        if let AgentAction::ReserveSlot { reservation_id, .. } = &mut other {
            *reservation_id = "another saga".into();
        }
        TestFramework::<AgentStatus>::with(())
            .given(full_agent(5))
            .when(as_role(Role::Service, other))
            .then_expect_error(AgentError::Stale(
                "another assignment of this ticket to agent Ann is in progress".into(),
            ));
        // A reservation for an older version than the one held comes from a stale read.
        let mut given = full_agent(5);
        given.push(reserved("t4", 3, AssignmentVia::Auto));
        TestFramework::<AgentStatus>::with(())
            .given(given)
            .when(as_role(
                Role::Service,
                reserve("t4", 2, AssignmentVia::Auto),
            ))
            .then_expect_error(AgentError::Stale(
                "the ticket changed since it was read".into(),
            ));
    }

    #[test]
    fn a_release_frees_the_slot_only_when_it_is_newer_than_the_reservation() {
        let release = |version| AgentAction::ReleaseSlot {
            ticket_id: "t0".into(),
            ticket_version: version,
        };
        TestFramework::<AgentStatus>::with(())
            .given(full_agent(5))
            .when(as_role(Role::Service, release(4)))
            .then_expect_events(vec![AgentEvent::SlotReleased {
                ticket_id: "t0".into(),
                ticket_version: 4,
            }]);
        let mut given = full_agent(5);
        given.push(reserved("t0", 6, AssignmentVia::Auto));
        TestFramework::<AgentStatus>::with(())
            .given(given)
            .when(as_role(Role::Service, release(4)))
            .then_expect_events(vec![]);
        TestFramework::<AgentStatus>::with(())
            .given(full_agent(1))
            .when(as_role(
                Role::Service,
                AgentAction::ReleaseSlot {
                    ticket_id: "unknown".into(),
                    ticket_version: 9,
                },
            ))
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_freed_slot_can_be_taken_again() {
        let mut given = full_agent(5);
        given.push(AgentEvent::SlotReleased {
            ticket_id: "t2".into(),
            ticket_version: 3,
        });
        TestFramework::<AgentStatus>::with(())
            .given(given)
            .when(as_role(
                Role::Service,
                reserve("t9", 1, AssignmentVia::Auto),
            ))
            .then_expect_events(vec![reserved("t9", 1, AssignmentVia::Auto)]);
    }

    #[test]
    fn automatic_assignment_needs_an_online_agent_but_claims_and_admins_do_not() {
        TestFramework::<AgentStatus>::with(())
            .given(vec![registered()])
            .when(as_role(
                Role::Service,
                reserve("t1", 1, AssignmentVia::Auto),
            ))
            .then_expect_error(AgentError::InvalidTransition("agent Ann is offline".into()));
        TestFramework::<AgentStatus>::with(())
            .given(vec![registered()])
            .when(as_role(Role::Admin, reserve("t1", 1, AssignmentVia::Admin)))
            .then_expect_events(vec![reserved("t1", 1, AssignmentVia::Admin)]);
    }

    #[test]
    fn claims_outside_the_agents_divisions_are_forbidden_but_admins_may_cross() {
        let outside = |via| AgentAction::ReserveSlot {
            ticket_id: "t1".into(),
            ticket_version: 1,
            division_id: Some("z".into()),
            via,
            reservation_id: saga("t1", 1),
        };
        for via in [AssignmentVia::Claim, AssignmentVia::Auto] {
            TestFramework::<AgentStatus>::with(())
                .given(vec![registered(), AgentEvent::AgentWentOnline])
                .when(as_role(Role::Agent, outside(via)))
                .then_expect_error(AgentError::NotPermitted(
                    "agent Ann does not serve the ticket's division".into(),
                ));
        }
        TestFramework::<AgentStatus>::with(())
            .given(vec![registered()])
            .when(as_role(Role::Admin, outside(AssignmentVia::Admin)))
            .then_expect_events(vec![reserved("t1", 1, AssignmentVia::Admin)]);
        // Tickets without a division may go to anyone.
        TestFramework::<AgentStatus>::with(())
            .given(vec![registered()])
            .when(as_role(
                Role::Agent,
                AgentAction::ReserveSlot {
                    ticket_id: "t1".into(),
                    ticket_version: 1,
                    division_id: None,
                    via: AssignmentVia::Claim,
                    reservation_id: saga("t1", 1),
                },
            ))
            .then_expect_events(vec![reserved("t1", 1, AssignmentVia::Claim)]);
    }

    #[test]
    fn admins_change_capacity_and_a_lower_capacity_blocks_new_slots() {
        TestFramework::<AgentStatus>::with(())
            .given(full_agent(3))
            .when(as_role(
                Role::Admin,
                AgentAction::SetCapacity { max_tickets: 2 },
            ))
            .then_expect_events(vec![AgentEvent::AgentCapacityChanged { from: 5, to: 2 }]);
        let mut given = full_agent(3);
        given.push(AgentEvent::AgentCapacityChanged { from: 5, to: 2 });
        TestFramework::<AgentStatus>::with(())
            .given(given)
            .when(as_role(
                Role::Service,
                reserve("t9", 1, AssignmentVia::Auto),
            ))
            .then_expect_error(AgentError::CapacityReached(
                "agent Ann already holds 3 of 2 active tickets".into(),
            ));
        TestFramework::<AgentStatus>::with(())
            .given(vec![registered()])
            .when(as_role(
                Role::Admin,
                AgentAction::SetCapacity { max_tickets: 5 },
            ))
            .then_expect_events(vec![]);
        TestFramework::<AgentStatus>::with(())
            .given(vec![registered()])
            .when(as_role(
                Role::Agent,
                AgentAction::SetCapacity { max_tickets: 9 },
            ))
            .then_expect_error(AgentError::NotPermitted(
                "only admins change an agent's capacity".into(),
            ));
        TestFramework::<AgentStatus>::with(())
            .given(vec![registered()])
            .when(as_role(
                Role::Admin,
                AgentAction::SetCapacity { max_tickets: 0 },
            ))
            .then_expect_error(AgentError::InvalidInput(
                "maxTickets must be between 1 and 100".into(),
            ));
    }

    #[test]
    fn admins_change_divisions() {
        TestFramework::<AgentStatus>::with(())
            .given(vec![registered()])
            .when(as_role(
                Role::Admin,
                AgentAction::SetDivisions {
                    division_ids: vec!["c".into(), "a".into()],
                },
            ))
            .then_expect_events(vec![AgentEvent::AgentDivisionsChanged {
                division_ids: vec!["a".into(), "c".into()],
            }]);
        TestFramework::<AgentStatus>::with(())
            .given(vec![registered()])
            .when(as_role(
                Role::Admin,
                AgentAction::SetDivisions {
                    division_ids: vec!["b".into(), "a".into()],
                },
            ))
            .then_expect_events(vec![]);
        TestFramework::<AgentStatus>::with(())
            .given(vec![registered()])
            .when(as_role(
                Role::Agent,
                AgentAction::SetDivisions {
                    division_ids: vec![],
                },
            ))
            .then_expect_error(AgentError::NotPermitted(
                "only admins change an agent's divisions".into(),
            ));
    }
}
