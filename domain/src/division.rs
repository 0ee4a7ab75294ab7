//! The Division aggregate: a team (Billing, Technical, ...) with its own queue and its
//! assignment settings.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::actor::Role;
use crate::command::{Command, DomainError};
use crate::limits::{within, MAX_NAME_CHARS, MAX_TEXT_CHARS};

/// Whether queued tickets are pushed to agents or pulled by them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AssignmentMode {
    /// Tickets are assigned automatically.
    #[default]
    Auto,
    /// Agents take tickets from the queue.
    Claim,
}

/// How the next agent is chosen in AUTO mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AssignmentAlgorithm {
    /// The least recently assigned eligible agent.
    #[default]
    RoundRobin,
    /// The eligible agent with the fewest active tickets.
    LeastLoaded,
    /// A uniformly random eligible agent (the draw is recorded in the event).
    Random,
}

/// The settings a division is created with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DivisionProfile {
    /// Shown to customers in the division menu.
    pub name: String,
    /// Shown under the name in the menu.
    pub description: Option<String>,
    /// Words that route a customer to this division.
    pub keywords: Vec<String>,
    /// Place in the menu (1-based); `None` puts it last.
    pub position: Option<i64>,
    /// Push or pull.
    pub assignment_mode: AssignmentMode,
    /// Agent choice in AUTO mode.
    pub algorithm: AssignmentAlgorithm,
    /// Typical handling time, the basis of wait estimates until real figures exist.
    pub avg_handling_minutes: i64,
}

/// A command for one division.
pub type DivisionCommand = Command<DivisionAction>;

/// Changes to a division's settings; `None` keeps a setting as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DivisionChanges {
    /// New menu name.
    pub name: Option<String>,
    /// New description (`Some(None)` clears it).
    pub description: Option<Option<String>>,
    /// New routing keywords.
    pub keywords: Option<Vec<String>>,
    /// New menu place (`Some(None)` puts it last).
    pub position: Option<Option<i64>>,
    /// Push or pull.
    pub assignment_mode: Option<AssignmentMode>,
    /// Agent choice in AUTO mode.
    pub algorithm: Option<AssignmentAlgorithm>,
    /// Typical handling time.
    pub avg_handling_minutes: Option<i64>,
}

/// The things that can be done to a division.
#[derive(Debug, Clone, PartialEq)]
pub enum DivisionAction {
    /// Creates the division.
    Create(DivisionProfile),
    /// Changes some of its settings.
    Update(DivisionChanges),
}

/// What happened to a division.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DivisionEvent {
    /// The division was created.
    DivisionCreated {
        organization: String,
        profile: DivisionProfile,
    },
    /// The division's settings changed; `profile` is the whole new profile.
    DivisionUpdated { profile: DivisionProfile },
}

impl DomainEvent for DivisionEvent {
    fn event_type(&self) -> String {
        match self {
            DivisionEvent::DivisionCreated { .. } => "DivisionCreated".into(),
            DivisionEvent::DivisionUpdated { .. } => "DivisionUpdated".into(),
        }
    }
    fn event_version(&self) -> String {
        crate::upcast::current_version(&self.event_type()).to_string()
    }
}

/// Why a division command was refused.
pub type DivisionError = DomainError;

/// A division as its events leave it.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Division {
    organization: Option<String>,
    profile: Option<DivisionProfile>,
}

impl Division {
    /// The division's current settings (`None` before it is created).
    pub fn profile(&self) -> Option<&DivisionProfile> {
        self.profile.as_ref()
    }
}

impl Aggregate for Division {
    const TYPE: &'static str = "Division";
    type Command = DivisionCommand;
    type Event = DivisionEvent;
    type Error = DivisionError;
    type Services = ();

    async fn handle(
        &mut self,
        command: DivisionCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DivisionError> {
        if command.actor.role != Role::Admin {
            return Err(DivisionError::NotPermitted(
                "only admins manage divisions".into(),
            ));
        }
        match command.action {
            DivisionAction::Create(profile) => {
                if self.organization.is_some() {
                    return Err(DivisionError::AlreadyExists);
                }
                let profile = validate(profile)?;
                sink.write(
                    DivisionEvent::DivisionCreated {
                        organization: command.organization,
                        profile,
                    },
                    self,
                )
                .await;
            }
            DivisionAction::Update(changes) => {
                let current = match (&self.organization, &self.profile) {
                    (Some(owner), Some(profile)) if *owner == command.organization => profile,
                    _ => return Err(DivisionError::NotFound),
                };
                let mut profile = current.clone();
                if let Some(name) = changes.name {
                    profile.name = name;
                }
                if let Some(description) = changes.description {
                    profile.description = description;
                }
                if let Some(keywords) = changes.keywords {
                    profile.keywords = keywords;
                }
                if let Some(position) = changes.position {
                    profile.position = position;
                }
                if let Some(mode) = changes.assignment_mode {
                    profile.assignment_mode = mode;
                }
                if let Some(algorithm) = changes.algorithm {
                    profile.algorithm = algorithm;
                }
                if let Some(minutes) = changes.avg_handling_minutes {
                    profile.avg_handling_minutes = minutes;
                }
                let profile = validate(profile)?;
                if profile != *current {
                    sink.write(DivisionEvent::DivisionUpdated { profile }, self)
                        .await;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: DivisionEvent) {
        match event {
            DivisionEvent::DivisionCreated {
                organization,
                profile,
            } => {
                self.organization = Some(organization);
                self.profile = Some(profile);
            }
            DivisionEvent::DivisionUpdated { profile } => self.profile = Some(profile),
        }
    }
}

fn validate(mut profile: DivisionProfile) -> Result<DivisionProfile, DivisionError> {
    let invalid = |why: &str| Err(DivisionError::InvalidInput(why.into()));
    profile.name = profile.name.trim().to_string();
    if profile.name.is_empty() {
        return invalid("division name must not be empty");
    }
    if !within(&profile.name, MAX_NAME_CHARS) {
        return invalid("division name is too long");
    }
    if profile
        .description
        .as_deref()
        .is_some_and(|d| !within(d, MAX_TEXT_CHARS))
    {
        return invalid("division description is too long");
    }
    profile.keywords = profile
        .keywords
        .iter()
        .map(|k| k.trim().to_lowercase())
        .filter(|k| !k.is_empty())
        .collect();
    if profile.keywords.iter().any(|k| !within(k, MAX_NAME_CHARS)) {
        return invalid("a division keyword is too long");
    }
    if profile.position.is_some_and(|p| p < 1) {
        return invalid("position must be 1 or more");
    }
    if !(1..=24 * 60).contains(&profile.avg_handling_minutes) {
        return invalid("avgHandlingMinutes must be between 1 and 1440");
    }
    Ok(profile)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actor::Actor;
    use cqrs_es::test::TestFramework;

    fn profile(name: &str) -> DivisionProfile {
        DivisionProfile {
            name: name.into(),
            description: None,
            keywords: vec![" Tagihan ".into(), "".into()],
            position: None,
            assignment_mode: AssignmentMode::Auto,
            algorithm: AssignmentAlgorithm::RoundRobin,
            avg_handling_minutes: 10,
        }
    }

    fn create(name: &str, role: Role) -> DivisionCommand {
        DivisionCommand {
            organization: "acme".into(),
            actor: Actor::new("boss", role),
            action: DivisionAction::Create(profile(name)),
        }
    }

    #[test]
    fn admin_creates_a_division_with_normalised_keywords() {
        let mut expected = profile("Billing");
        expected.keywords = vec!["tagihan".into()];
        TestFramework::<Division>::with(())
            .given_no_previous_events()
            .when(create(" Billing ", Role::Admin))
            .then_expect_events(vec![DivisionEvent::DivisionCreated {
                organization: "acme".into(),
                profile: expected,
            }]);
    }

    #[test]
    fn creating_twice_is_refused() {
        TestFramework::<Division>::with(())
            .given(vec![DivisionEvent::DivisionCreated {
                organization: "acme".into(),
                profile: profile("Billing"),
            }])
            .when(create("Billing", Role::Admin))
            .then_expect_error(DivisionError::AlreadyExists);
    }

    #[test]
    fn agents_cannot_create_divisions() {
        TestFramework::<Division>::with(())
            .given_no_previous_events()
            .when(create("Billing", Role::Agent))
            .then_expect_error(DivisionError::NotPermitted(
                "only admins manage divisions".into(),
            ));
    }

    #[test]
    fn blank_name_and_bad_handling_time_are_refused() {
        TestFramework::<Division>::with(())
            .given_no_previous_events()
            .when(create("  ", Role::Admin))
            .then_expect_error(DivisionError::InvalidInput(
                "division name must not be empty".into(),
            ));
        let mut command = create("Billing", Role::Admin);
        let DivisionAction::Create(p) = &mut command.action else {
            unreachable!()
        };
        p.avg_handling_minutes = 0;
        TestFramework::<Division>::with(())
            .given_no_previous_events()
            .when(command)
            .then_expect_error(DivisionError::InvalidInput(
                "avgHandlingMinutes must be between 1 and 1440".into(),
            ));
    }

    fn existing() -> Vec<DivisionEvent> {
        vec![DivisionEvent::DivisionCreated {
            organization: "acme".into(),
            profile: validate(profile("Billing")).unwrap(),
        }]
    }

    fn update(changes: DivisionChanges) -> DivisionCommand {
        DivisionCommand {
            organization: "acme".into(),
            actor: Actor::new("boss", Role::Admin),
            action: DivisionAction::Update(changes),
        }
    }

    #[test]
    fn admins_switch_a_division_to_claim_mode_and_least_loaded() {
        let mut expected = validate(profile("Billing")).unwrap();
        expected.assignment_mode = AssignmentMode::Claim;
        expected.algorithm = AssignmentAlgorithm::LeastLoaded;
        TestFramework::<Division>::with(())
            .given(existing())
            .when(update(DivisionChanges {
                assignment_mode: Some(AssignmentMode::Claim),
                algorithm: Some(AssignmentAlgorithm::LeastLoaded),
                ..Default::default()
            }))
            .then_expect_events(vec![DivisionEvent::DivisionUpdated { profile: expected }]);
    }

    #[test]
    fn an_update_that_changes_nothing_writes_nothing() {
        TestFramework::<Division>::with(())
            .given(existing())
            .when(update(DivisionChanges {
                name: Some(" Billing ".into()),
                ..Default::default()
            }))
            .then_expect_events(vec![]);
    }

    #[test]
    fn updates_are_validated_and_need_an_existing_division_of_the_organization() {
        TestFramework::<Division>::with(())
            .given(existing())
            .when(update(DivisionChanges {
                avg_handling_minutes: Some(0),
                ..Default::default()
            }))
            .then_expect_error(DivisionError::InvalidInput(
                "avgHandlingMinutes must be between 1 and 1440".into(),
            ));
        TestFramework::<Division>::with(())
            .given_no_previous_events()
            .when(update(DivisionChanges::default()))
            .then_expect_error(DivisionError::NotFound);
        let mut foreign = update(DivisionChanges::default());
        foreign.organization = "globex".into();
        TestFramework::<Division>::with(())
            .given(existing())
            .when(foreign)
            .then_expect_error(DivisionError::NotFound);
    }
}
