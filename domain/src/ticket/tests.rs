//! Given/when/then tests of the Ticket aggregate.

use cqrs_es::test::{AggregateTestExecutor, TestFramework};
use cqrs_es::{Aggregate, DomainEvent};

use super::{
    AssignmentVia, Ticket, TicketAction, TicketCommand, TicketError, TicketEvent, TicketStatus,
};
use crate::actor::{Actor, Role};
use crate::limits::{MAX_SUBJECT_CHARS, MAX_TEXT_CHARS};
use crate::priority::{Priority, PrioritySource};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

const ORG: &str = "acme";
const NUMBER: i64 = 7;

fn admin() -> Actor {
    Actor::new("boss", Role::Admin)
}

fn agent(id: &str) -> Actor {
    Actor::new(id, Role::Agent)
}

fn service() -> Actor {
    Actor::new("whatsapp-bot", Role::Service)
}

/// A command of the ticket's own organization.
fn cmd(actor: Actor, action: TicketAction) -> TicketCommand {
    TicketCommand {
        organization: ORG.into(),
        actor,
        action,
    }
}

/// A command of another organization.
fn foreign(actor: Actor, action: TicketAction) -> TicketCommand {
    TicketCommand {
        organization: "globex".into(),
        actor,
        action,
    }
}

fn create_action(subject: &str) -> TicketAction {
    TicketAction::Create {
        number: NUMBER,
        subject: subject.into(),
        description: None,
        priority: Priority::Medium,
        priority_source: PrioritySource::Default,
        division_id: None,
    }
}

fn create(subject: &str) -> TicketCommand {
    cmd(service(), create_action(subject))
}

/// A create command with one field changed by `edit`.
fn create_with(edit: impl FnOnce(&mut TicketAction)) -> TicketCommand {
    let mut action = create_action("Printer jammed");
    edit(&mut action);
    cmd(service(), action)
}

fn resolve(resolution: Option<&str>) -> TicketAction {
    TicketAction::Resolve {
        resolution: resolution.map(Into::into),
    }
}

fn reopen(reason: Option<&str>) -> TicketAction {
    TicketAction::Reopen {
        reason: reason.map(Into::into),
    }
}

/// An admin assignment with the slot reserved at `version`.
fn assign(agent_id: &str, version: u64) -> TicketAction {
    TicketAction::Assign {
        agent_id: agent_id.into(),
        reservation: version,
    }
}

/// A claim with the slot reserved at `version`.
fn claim(version: u64) -> TicketAction {
    TicketAction::Claim {
        reservation: version,
    }
}

/// The version a ticket in `status` (built by [`history`]) is at.
fn version_of(status: TicketStatus) -> u64 {
    history(status).len() as u64
}

fn comment(text: &str) -> TicketAction {
    TicketAction::AddComment {
        comment_id: "c1".into(),
        text: text.into(),
    }
}

fn rate(rating: i32) -> TicketAction {
    TicketAction::Rate {
        rating,
        feedback: None,
    }
}

fn change_priority(priority: Priority) -> TicketAction {
    TicketAction::ChangePriority { priority }
}

/// Every action except Create, for the "not found" checks.
fn all_non_create_actions() -> Vec<TicketAction> {
    vec![
        claim(1),
        assign("ann", 1),
        TicketAction::Start,
        resolve(Some("fixed")),
        TicketAction::Close,
        reopen(None),
        change_priority(Priority::High),
        comment("hello"),
        rate(5),
    ]
}

fn created() -> TicketEvent {
    TicketEvent::TicketCreated {
        organization: ORG.into(),
        number: NUMBER,
        subject: "Printer jammed".into(),
        description: None,
        priority: Priority::Medium,
        priority_source: PrioritySource::Default,
        division_id: None,
    }
}

fn claimed_by(agent_id: &str) -> TicketEvent {
    TicketEvent::TicketAssigned {
        agent_id: agent_id.into(),
        previous_agent_id: None,
        via: AssignmentVia::Claim,
        decision: None,
    }
}

fn assigned_to(agent_id: &str, previous: Option<&str>) -> TicketEvent {
    TicketEvent::TicketAssigned {
        agent_id: agent_id.into(),
        previous_agent_id: previous.map(Into::into),
        via: AssignmentVia::Admin,
        decision: None,
    }
}

fn started(agent_id: &str) -> TicketEvent {
    TicketEvent::TicketStarted {
        agent_id: agent_id.into(),
    }
}

fn resolved(agent_id: &str) -> TicketEvent {
    TicketEvent::TicketResolved {
        agent_id: Some(agent_id.into()),
        resolution: None,
    }
}

fn reopened(previous: Option<&str>) -> TicketEvent {
    TicketEvent::TicketReopened {
        reason: None,
        previous_agent_id: previous.map(Into::into),
    }
}

fn rated(rating: i32) -> TicketEvent {
    TicketEvent::TicketRated {
        rating,
        feedback: None,
    }
}

/// The events that leave ticket #7 in `status`, worked by agent `ann` where it has an agent.
fn history(status: TicketStatus) -> Vec<TicketEvent> {
    let mut events = vec![created()];
    if status == TicketStatus::Queued {
        return events;
    }
    events.push(claimed_by("ann"));
    if status == TicketStatus::Assigned {
        return events;
    }
    events.push(started("ann"));
    if status == TicketStatus::InProgress {
        return events;
    }
    events.push(resolved("ann"));
    if status == TicketStatus::Resolved {
        return events;
    }
    events.push(TicketEvent::TicketClosed);
    events
}

fn given(events: Vec<TicketEvent>) -> AggregateTestExecutor<Ticket> {
    TestFramework::<Ticket>::with(()).given(events)
}

fn given_status(status: TicketStatus) -> AggregateTestExecutor<Ticket> {
    given(history(status))
}

fn given_nothing() -> AggregateTestExecutor<Ticket> {
    TestFramework::<Ticket>::with(()).given_no_previous_events()
}

/// The refusal `decide` gives when the status does not allow a command.
fn refused(status: TicketStatus, why: &str) -> TicketError {
    TicketError::InvalidTransition(format!("ticket #{NUMBER} is {}: {why}", status.as_str()))
}

fn invalid(why: &str) -> TicketError {
    TicketError::InvalidInput(why.into())
}

fn not_permitted(why: &str) -> TicketError {
    TicketError::NotPermitted(why.into())
}

const OPEN: [TicketStatus; 3] = [
    TicketStatus::Queued,
    TicketStatus::Assigned,
    TicketStatus::InProgress,
];
const FINISHED: [TicketStatus; 2] = [TicketStatus::Resolved, TicketStatus::Closed];
const ALL: [TicketStatus; 5] = [
    TicketStatus::Queued,
    TicketStatus::Assigned,
    TicketStatus::InProgress,
    TicketStatus::Resolved,
    TicketStatus::Closed,
];

// ---------------------------------------------------------------------------------------
// Create
// ---------------------------------------------------------------------------------------

#[test]
fn create_opens_a_ticket_with_trimmed_texts() {
    given_nothing()
        .when(cmd(
            service(),
            TicketAction::Create {
                number: NUMBER,
                subject: "  Printer jammed \n".into(),
                description: Some("  paper stuck in tray 2  ".into()),
                priority: Priority::Urgent,
                priority_source: PrioritySource::Keyword {
                    keyword: "gawat".into(),
                },
                division_id: Some("div-1".into()),
            },
        ))
        .then_expect_events(vec![TicketEvent::TicketCreated {
            organization: ORG.into(),
            number: NUMBER,
            subject: "Printer jammed".into(),
            description: Some("paper stuck in tray 2".into()),
            priority: Priority::Urgent,
            priority_source: PrioritySource::Keyword {
                keyword: "gawat".into(),
            },
            division_id: Some("div-1".into()),
        }]);
}

#[test]
fn create_records_the_callers_organization() {
    given_nothing()
        .when(foreign(service(), create_action("Printer jammed")))
        .then_expect_events(vec![TicketEvent::TicketCreated {
            organization: "globex".into(),
            number: NUMBER,
            subject: "Printer jammed".into(),
            description: None,
            priority: Priority::Medium,
            priority_source: PrioritySource::Default,
            division_id: None,
        }]);
}

#[test]
fn create_with_an_empty_or_blank_subject_is_refused() {
    for subject in ["", "   ", "\t\n "] {
        given_nothing()
            .when(create(subject))
            .then_expect_error(invalid("subject must not be empty"));
    }
}

#[test]
fn create_with_a_100_kb_subject_is_refused() {
    given_nothing()
        .when(create(&"x".repeat(100 * 1024)))
        .then_expect_error(invalid("subject must be at most 250 characters"));
}

#[test]
fn subject_limit_counts_characters_not_bytes() {
    // 250 two-byte characters (500 bytes) fit; 251 do not.
    let fits = "é".repeat(MAX_SUBJECT_CHARS);
    given_nothing()
        .when(create(&fits))
        .then_expect_events(vec![TicketEvent::TicketCreated {
            organization: ORG.into(),
            number: NUMBER,
            subject: fits.clone(),
            description: None,
            priority: Priority::Medium,
            priority_source: PrioritySource::Default,
            division_id: None,
        }]);
    given_nothing()
        .when(create(&"é".repeat(MAX_SUBJECT_CHARS + 1)))
        .then_expect_error(invalid("subject must be at most 250 characters"));
}

#[test]
fn subject_limit_applies_after_trimming() {
    let padded = format!("   {}   ", "s".repeat(MAX_SUBJECT_CHARS));
    let result = given_nothing().when(create(&padded)).inspect_result();
    assert!(result.is_ok(), "{result:?}");
}

#[test]
fn create_with_a_too_long_description_is_refused() {
    given_nothing()
        .when(create_with(|a| {
            if let TicketAction::Create { description, .. } = a {
                *description = Some("d".repeat(MAX_TEXT_CHARS + 1));
            }
        }))
        .then_expect_error(invalid("description must be at most 20000 characters"));
}

#[test]
fn a_description_of_exactly_the_limit_is_accepted() {
    let events = given_nothing()
        .when(create_with(|a| {
            if let TicketAction::Create { description, .. } = a {
                *description = Some("d".repeat(MAX_TEXT_CHARS));
            }
        }))
        .inspect_result()
        .expect("accepted");
    let [TicketEvent::TicketCreated { description, .. }] = events.as_slice() else {
        panic!("expected one TicketCreated, got {events:?}");
    };
    assert_eq!(description.as_deref().map(str::len), Some(MAX_TEXT_CHARS));
}

#[test]
fn a_blank_description_becomes_none() {
    for blank in ["", "   ", "\n\t"] {
        given_nothing()
            .when(create_with(|a| {
                if let TicketAction::Create { description, .. } = a {
                    *description = Some(blank.into());
                }
            }))
            .then_expect_events(vec![created()]);
    }
}

#[test]
fn create_with_a_number_below_one_is_refused() {
    for bad in [0, -1, i64::MIN] {
        given_nothing()
            .when(create_with(|a| {
                if let TicketAction::Create { number, .. } = a {
                    *number = bad;
                }
            }))
            .then_expect_error(invalid("ticket number must be positive"));
    }
}

#[test]
fn create_with_a_blank_division_id_is_refused() {
    for blank in ["", "  "] {
        given_nothing()
            .when(create_with(|a| {
                if let TicketAction::Create { division_id, .. } = a {
                    *division_id = Some(blank.into());
                }
            }))
            .then_expect_error(invalid("divisionId must not be empty"));
    }
}

#[test]
fn creating_twice_is_refused() {
    given(vec![created()])
        .when(create("Printer jammed"))
        .then_expect_error(TicketError::AlreadyExists);
    // However far along the ticket is.
    for status in ALL {
        given_status(status)
            .when(create("Another subject"))
            .then_expect_error(TicketError::AlreadyExists);
    }
}

// ---------------------------------------------------------------------------------------
// Visibility
// ---------------------------------------------------------------------------------------

#[test]
fn commands_from_another_organization_are_not_found() {
    for status in ALL {
        for action in all_non_create_actions() {
            given_status(status)
                .when(foreign(admin(), action))
                .then_expect_error(TicketError::NotFound);
        }
    }
}

#[test]
fn commands_on_a_ticket_never_created_are_not_found() {
    for action in all_non_create_actions() {
        for actor in [admin(), agent("ann"), service()] {
            given_nothing()
                .when(cmd(actor, action.clone()))
                .then_expect_error(TicketError::NotFound);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Claim
// ---------------------------------------------------------------------------------------

#[test]
fn an_agent_claims_a_queued_ticket() {
    given_status(TicketStatus::Queued)
        .when(cmd(agent("ann"), claim(version_of(TicketStatus::Queued))))
        .then_expect_events(vec![claimed_by("ann")]);
}

#[test]
fn admins_and_services_cannot_claim() {
    for actor in [admin(), service()] {
        given_status(TicketStatus::Queued)
            .when(cmd(actor, claim(version_of(TicketStatus::Queued))))
            .then_expect_error(not_permitted(
                "only agents claim tickets; admins assign them",
            ));
    }
}

#[test]
fn claim_names_the_ticket_and_its_status_when_refused() {
    given_status(TicketStatus::Assigned)
        .when(cmd(agent("bob"), claim(version_of(TicketStatus::Assigned))))
        .then_expect_error(TicketError::InvalidTransition(
            "ticket #7 is ASSIGNED: only a queued ticket can be claimed".into(),
        ));
}

#[test]
fn only_a_queued_ticket_can_be_claimed() {
    for status in [
        TicketStatus::Assigned,
        TicketStatus::InProgress,
        TicketStatus::Resolved,
        TicketStatus::Closed,
    ] {
        for who in ["ann", "bob"] {
            given_status(status)
                .when(cmd(agent(who), claim(version_of(status))))
                .then_expect_error(refused(status, "only a queued ticket can be claimed"));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Assign
// ---------------------------------------------------------------------------------------

#[test]
fn an_admin_assigns_a_queued_ticket() {
    given_status(TicketStatus::Queued)
        .when(cmd(
            admin(),
            assign("ann", version_of(TicketStatus::Queued)),
        ))
        .then_expect_events(vec![assigned_to("ann", None)]);
}

#[test]
fn an_admin_reassigns_an_assigned_ticket() {
    given_status(TicketStatus::Assigned)
        .when(cmd(
            admin(),
            assign("bob", version_of(TicketStatus::Assigned)),
        ))
        .then_expect_events(vec![assigned_to("bob", Some("ann"))]);
}

#[test]
fn an_admin_reassigns_an_in_progress_ticket() {
    given_status(TicketStatus::InProgress)
        .when(cmd(
            admin(),
            assign("bob", version_of(TicketStatus::InProgress)),
        ))
        .then_expect_events(vec![assigned_to("bob", Some("ann"))]);
}

#[test]
fn a_reassigned_ticket_must_be_started_again_by_its_new_agent() {
    let mut events = history(TicketStatus::InProgress);
    events.push(assigned_to("bob", Some("ann")));
    given(events.clone())
        .when(cmd(agent("bob"), TicketAction::Start))
        .then_expect_events(vec![started("bob")]);
    given(events.clone())
        .when(cmd(agent("ann"), TicketAction::Start))
        .then_expect_error(not_permitted(
            "only the ticket's assignee or an admin may start ticket #7",
        ));
    given(events)
        .when(cmd(agent("ann"), resolve(None)))
        .then_expect_error(not_permitted(
            "only the ticket's assignee or an admin may resolve ticket #7",
        ));
}

#[test]
fn a_chain_of_reassignments_records_each_previous_agent() {
    given(vec![
        created(),
        assigned_to("ann", None),
        assigned_to("bob", Some("ann")),
    ])
    .when(cmd(admin(), assign("cid", 3)))
    .then_expect_events(vec![assigned_to("cid", Some("bob"))]);
}

#[test]
fn assigning_to_the_current_agent_is_refused() {
    for status in [TicketStatus::Assigned, TicketStatus::InProgress] {
        given_status(status)
            .when(cmd(admin(), assign("ann", version_of(status))))
            .then_expect_error(refused(status, "it is already assigned to agent ann"));
    }
}

#[test]
fn agents_cannot_assign() {
    for actor in [agent("ann"), agent("bob")] {
        given_status(TicketStatus::Queued)
            .when(cmd(actor, assign("ann", version_of(TicketStatus::Queued))))
            .then_expect_error(not_permitted("only admins assign tickets to agents"));
    }
}

#[test]
fn a_service_assigns_for_a_stage_automation() {
    given_status(TicketStatus::Queued)
        .when(cmd(
            service(),
            assign("ann", version_of(TicketStatus::Queued)),
        ))
        .then_expect_events(vec![TicketEvent::TicketAssigned {
            agent_id: "ann".into(),
            previous_agent_id: None,
            via: AssignmentVia::Automation,
            decision: None,
        }]);
}

#[test]
fn assigning_to_a_blank_agent_id_is_refused() {
    for blank in ["", "   "] {
        given_status(TicketStatus::Queued)
            .when(cmd(
                admin(),
                assign(blank, version_of(TicketStatus::Queued)),
            ))
            .then_expect_error(invalid("agentId must not be empty"));
    }
}

#[test]
fn a_finished_ticket_cannot_be_assigned() {
    for status in FINISHED {
        for who in ["ann", "bob"] {
            given_status(status)
                .when(cmd(admin(), assign(who, version_of(status))))
                .then_expect_error(refused(
                    status,
                    "a resolved or closed ticket must be reopened first",
                ));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Start
// ---------------------------------------------------------------------------------------

#[test]
fn the_assignee_starts_the_ticket() {
    given_status(TicketStatus::Assigned)
        .when(cmd(agent("ann"), TicketAction::Start))
        .then_expect_events(vec![started("ann")]);
}

#[test]
fn an_admin_starts_the_ticket_for_its_assignee() {
    given_status(TicketStatus::Assigned)
        .when(cmd(admin(), TicketAction::Start))
        .then_expect_events(vec![started("ann")]);
}

#[test]
fn another_agent_or_a_service_cannot_start_the_ticket() {
    for actor in [agent("bob"), service()] {
        given_status(TicketStatus::Assigned)
            .when(cmd(actor, TicketAction::Start))
            .then_expect_error(not_permitted(
                "only the ticket's assignee or an admin may start ticket #7",
            ));
    }
}

#[test]
fn only_an_assigned_ticket_can_be_started() {
    for status in [
        TicketStatus::Queued,
        TicketStatus::InProgress,
        TicketStatus::Resolved,
        TicketStatus::Closed,
    ] {
        for actor in [agent("ann"), admin()] {
            given_status(status)
                .when(cmd(actor, TicketAction::Start))
                .then_expect_error(refused(status, "only an assigned ticket can be started"));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Resolve
// ---------------------------------------------------------------------------------------

#[test]
fn the_assignee_resolves_an_assigned_ticket() {
    given_status(TicketStatus::Assigned)
        .when(cmd(agent("ann"), resolve(None)))
        .then_expect_events(vec![resolved("ann")]);
}

#[test]
fn the_assignee_resolves_an_in_progress_ticket_with_a_trimmed_resolution() {
    given_status(TicketStatus::InProgress)
        .when(cmd(agent("ann"), resolve(Some("  replaced the roller \n"))))
        .then_expect_events(vec![TicketEvent::TicketResolved {
            agent_id: Some("ann".into()),
            resolution: Some("replaced the roller".into()),
        }]);
}

#[test]
fn a_blank_resolution_becomes_none() {
    given_status(TicketStatus::InProgress)
        .when(cmd(agent("ann"), resolve(Some("   "))))
        .then_expect_events(vec![resolved("ann")]);
}

#[test]
fn an_admin_resolves_on_behalf_of_the_assignee() {
    given_status(TicketStatus::InProgress)
        .when(cmd(admin(), resolve(Some("done"))))
        .then_expect_events(vec![TicketEvent::TicketResolved {
            agent_id: Some("ann".into()),
            resolution: Some("done".into()),
        }]);
}

#[test]
fn another_agent_or_a_service_cannot_resolve() {
    for status in [TicketStatus::Assigned, TicketStatus::InProgress] {
        for actor in [agent("bob"), service()] {
            given_status(status)
                .when(cmd(actor, resolve(Some("done"))))
                .then_expect_error(not_permitted(
                    "only the ticket's assignee or an admin may resolve ticket #7",
                ));
        }
    }
}

#[test]
fn a_too_long_resolution_is_refused() {
    given_status(TicketStatus::InProgress)
        .when(cmd(
            agent("ann"),
            resolve(Some(&"r".repeat(MAX_TEXT_CHARS + 1))),
        ))
        .then_expect_error(invalid("resolution must be at most 20000 characters"));
}

#[test]
fn only_an_assigned_or_in_progress_ticket_can_be_resolved() {
    for status in [
        TicketStatus::Queued,
        TicketStatus::Resolved,
        TicketStatus::Closed,
    ] {
        for actor in [agent("ann"), admin()] {
            given_status(status)
                .when(cmd(actor, resolve(None)))
                .then_expect_error(refused(
                    status,
                    "only an assigned or in-progress ticket can be resolved",
                ));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Close
// ---------------------------------------------------------------------------------------

#[test]
fn the_last_agent_closes_a_resolved_ticket() {
    given_status(TicketStatus::Resolved)
        .when(cmd(agent("ann"), TicketAction::Close))
        .then_expect_events(vec![TicketEvent::TicketClosed]);
}

#[test]
fn an_admin_closes_a_resolved_ticket() {
    given_status(TicketStatus::Resolved)
        .when(cmd(admin(), TicketAction::Close))
        .then_expect_events(vec![TicketEvent::TicketClosed]);
}

#[test]
fn an_admin_may_close_an_open_ticket() {
    for status in OPEN {
        given_status(status)
            .when(cmd(admin(), TicketAction::Close))
            .then_expect_events(vec![TicketEvent::TicketClosed]);
    }
}

#[test]
fn an_agent_may_not_close_an_open_ticket_even_their_own() {
    for status in OPEN {
        for actor in [agent("ann"), agent("bob"), service()] {
            given_status(status)
                .when(cmd(actor, TicketAction::Close))
                .then_expect_error(refused(
                    status,
                    "only a resolved ticket can be closed (admins may close open tickets)",
                ));
        }
    }
}

#[test]
fn closing_twice_is_refused() {
    for actor in [admin(), agent("ann"), agent("bob")] {
        given_status(TicketStatus::Closed)
            .when(cmd(actor, TicketAction::Close))
            .then_expect_error(refused(TicketStatus::Closed, "it is already closed"));
    }
}

#[test]
fn another_agent_or_a_service_cannot_close_a_resolved_ticket() {
    for actor in [agent("bob"), service()] {
        given_status(TicketStatus::Resolved)
            .when(cmd(actor, TicketAction::Close))
            .then_expect_error(not_permitted(
                "only the ticket's last agent or an admin may close or reopen ticket #7",
            ));
    }
}

#[test]
fn after_a_reassignment_only_the_new_agent_closes() {
    let events = vec![
        created(),
        claimed_by("ann"),
        assigned_to("bob", Some("ann")),
        resolved("bob"),
    ];
    given(events.clone())
        .when(cmd(agent("bob"), TicketAction::Close))
        .then_expect_events(vec![TicketEvent::TicketClosed]);
    given(events)
        .when(cmd(agent("ann"), TicketAction::Close))
        .then_expect_error(not_permitted(
            "only the ticket's last agent or an admin may close or reopen ticket #7",
        ));
}

// ---------------------------------------------------------------------------------------
// Reopen
// ---------------------------------------------------------------------------------------

#[test]
fn the_last_agent_reopens_a_resolved_ticket() {
    given_status(TicketStatus::Resolved)
        .when(cmd(agent("ann"), reopen(Some("  still jams  "))))
        .then_expect_events(vec![TicketEvent::TicketReopened {
            reason: Some("still jams".into()),
            previous_agent_id: Some("ann".into()),
        }]);
}

#[test]
fn an_admin_reopens_a_closed_ticket() {
    given_status(TicketStatus::Closed)
        .when(cmd(admin(), reopen(None)))
        .then_expect_events(vec![reopened(Some("ann"))]);
}

#[test]
fn the_last_agent_reopens_a_closed_ticket_and_a_blank_reason_becomes_none() {
    given_status(TicketStatus::Closed)
        .when(cmd(agent("ann"), reopen(Some("  "))))
        .then_expect_events(vec![reopened(Some("ann"))]);
}

#[test]
fn reopening_a_ticket_closed_before_anyone_had_it_names_no_agent() {
    given(vec![created(), TicketEvent::TicketClosed])
        .when(cmd(admin(), reopen(None)))
        .then_expect_events(vec![reopened(None)]);
}

#[test]
fn a_too_long_reason_is_refused() {
    given_status(TicketStatus::Resolved)
        .when(cmd(admin(), reopen(Some(&"r".repeat(MAX_TEXT_CHARS + 1)))))
        .then_expect_error(invalid("reason must be at most 20000 characters"));
}

#[test]
fn only_a_resolved_or_closed_ticket_can_be_reopened() {
    for status in OPEN {
        for actor in [admin(), agent("ann")] {
            given_status(status)
                .when(cmd(actor, reopen(None)))
                .then_expect_error(refused(
                    status,
                    "only a resolved or closed ticket can be reopened",
                ));
        }
    }
}

#[test]
fn another_agent_or_a_service_cannot_reopen() {
    for status in FINISHED {
        for actor in [agent("bob"), service()] {
            given_status(status)
                .when(cmd(actor, reopen(None)))
                .then_expect_error(not_permitted(
                    "only the ticket's last agent or an admin may close or reopen ticket #7",
                ));
        }
    }
}

#[test]
fn a_reopened_ticket_is_queued_again_and_can_be_claimed() {
    for status in FINISHED {
        let mut events = history(status);
        events.push(reopened(Some("ann")));
        given(events.clone())
            .when(cmd(agent("bob"), claim(events.len() as u64)))
            .then_expect_events(vec![claimed_by("bob")]);
        given(events.clone())
            .when(cmd(agent("ann"), claim(events.len() as u64)))
            .then_expect_events(vec![claimed_by("ann")]);
        // An admin assignment after a reopen has no current agent to replace.
        let version = events.len() as u64;
        given(events)
            .when(cmd(admin(), assign("bob", version)))
            .then_expect_events(vec![assigned_to("bob", None)]);
    }
}

#[test]
fn a_reopened_ticket_cannot_be_rated_until_resolved_again() {
    let mut events = history(TicketStatus::Resolved);
    events.extend([rated(2), reopened(Some("ann"))]);
    given(events)
        .when(cmd(service(), rate(4)))
        .then_expect_error(refused(
            TicketStatus::Queued,
            "only a resolved or closed ticket can be rated",
        ));
}

#[test]
fn a_reopened_ticket_can_be_rated_again_once_resolved_again() {
    let mut events = history(TicketStatus::Closed);
    events.extend([
        rated(2),
        reopened(Some("ann")),
        claimed_by("bob"),
        started("bob"),
        resolved("bob"),
    ]);
    given(events.clone())
        .when(cmd(service(), rate(5)))
        .then_expect_events(vec![rated(5)]);
    // And only once again.
    events.push(rated(5));
    given(events)
        .when(cmd(service(), rate(4)))
        .then_expect_error(refused(TicketStatus::Resolved, "it has been rated already"));
}

#[test]
fn after_a_reopen_and_a_new_agent_the_old_agent_loses_the_ticket() {
    let events = vec![
        created(),
        claimed_by("ann"),
        resolved("ann"),
        reopened(Some("ann")),
        claimed_by("bob"),
        resolved("bob"),
    ];
    given(events.clone())
        .when(cmd(agent("ann"), reopen(None)))
        .then_expect_error(not_permitted(
            "only the ticket's last agent or an admin may close or reopen ticket #7",
        ));
    given(events)
        .when(cmd(agent("bob"), reopen(None)))
        .then_expect_events(vec![reopened(Some("bob"))]);
}

// ---------------------------------------------------------------------------------------
// Change priority
// ---------------------------------------------------------------------------------------

#[test]
fn changing_the_priority_of_an_open_ticket_records_from_and_to() {
    for status in OPEN {
        given_status(status)
            .when(cmd(admin(), change_priority(Priority::Urgent)))
            .then_expect_events(vec![TicketEvent::TicketPriorityChanged {
                from: Priority::Medium,
                to: Priority::Urgent,
            }]);
    }
}

#[test]
fn the_from_priority_follows_earlier_changes() {
    given(vec![
        created(),
        TicketEvent::TicketPriorityChanged {
            from: Priority::Medium,
            to: Priority::High,
        },
    ])
    .when(cmd(admin(), change_priority(Priority::Low)))
    .then_expect_events(vec![TicketEvent::TicketPriorityChanged {
        from: Priority::High,
        to: Priority::Low,
    }]);
}

#[test]
fn the_from_priority_is_the_one_the_ticket_was_created_with() {
    given(vec![TicketEvent::TicketCreated {
        organization: ORG.into(),
        number: NUMBER,
        subject: "Server down".into(),
        description: None,
        priority: Priority::Urgent,
        priority_source: PrioritySource::Explicit,
        division_id: Some("div-1".into()),
    }])
    .when(cmd(admin(), change_priority(Priority::Medium)))
    .then_expect_events(vec![TicketEvent::TicketPriorityChanged {
        from: Priority::Urgent,
        to: Priority::Medium,
    }]);
}

#[test]
fn asking_for_the_current_priority_writes_nothing() {
    for status in OPEN {
        given_status(status)
            .when(cmd(admin(), change_priority(Priority::Medium)))
            .then_expect_events(vec![]);
    }
}

#[test]
fn the_priority_of_a_finished_ticket_cannot_change() {
    for status in FINISHED {
        // Even to the priority it already has: the status is checked first.
        for priority in [Priority::Urgent, Priority::Medium] {
            given_status(status)
                .when(cmd(admin(), change_priority(priority)))
                .then_expect_error(refused(
                    status,
                    "the priority of a finished ticket cannot change",
                ));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Comments
// ---------------------------------------------------------------------------------------

#[test]
fn a_comment_is_trimmed_and_authored_by_the_actor() {
    given_status(TicketStatus::InProgress)
        .when(cmd(
            agent("ann"),
            TicketAction::AddComment {
                comment_id: "c-42".into(),
                text: "  ordered a new roller \n".into(),
            },
        ))
        .then_expect_events(vec![TicketEvent::CommentAdded {
            comment_id: "c-42".into(),
            author_id: "ann".into(),
            text: "ordered a new roller".into(),
        }]);
}

#[test]
fn comments_are_allowed_on_every_status_but_closed() {
    for status in [
        TicketStatus::Queued,
        TicketStatus::Assigned,
        TicketStatus::InProgress,
        TicketStatus::Resolved,
    ] {
        for actor in [admin(), agent("bob"), service()] {
            let author = actor.id.clone();
            given_status(status)
                .when(cmd(actor, comment("thanks")))
                .then_expect_events(vec![TicketEvent::CommentAdded {
                    comment_id: "c1".into(),
                    author_id: author,
                    text: "thanks".into(),
                }]);
        }
    }
}

#[test]
fn an_empty_comment_is_refused() {
    for blank in ["", "  ", "\n\t "] {
        given_status(TicketStatus::Queued)
            .when(cmd(agent("ann"), comment(blank)))
            .then_expect_error(invalid("comment text must not be empty"));
    }
}

#[test]
fn a_too_long_comment_is_refused() {
    given_status(TicketStatus::Queued)
        .when(cmd(agent("ann"), comment(&"c".repeat(MAX_TEXT_CHARS + 1))))
        .then_expect_error(invalid("comment text must be at most 20000 characters"));
}

#[test]
fn a_comment_of_exactly_the_limit_is_accepted() {
    let text = "c".repeat(MAX_TEXT_CHARS);
    given_status(TicketStatus::Queued)
        .when(cmd(agent("ann"), comment(&format!("  {text}  "))))
        .then_expect_events(vec![TicketEvent::CommentAdded {
            comment_id: "c1".into(),
            author_id: "ann".into(),
            text,
        }]);
}

#[test]
fn a_closed_ticket_takes_no_comments() {
    for actor in [admin(), agent("ann")] {
        given_status(TicketStatus::Closed)
            .when(cmd(actor, comment("one more thing")))
            .then_expect_error(refused(TicketStatus::Closed, "reopen it to comment"));
    }
}

// ---------------------------------------------------------------------------------------
// Rating
// ---------------------------------------------------------------------------------------

#[test]
fn a_resolved_or_closed_ticket_is_rated_1_to_5() {
    for status in FINISHED {
        for rating in 1..=5 {
            given_status(status)
                .when(cmd(service(), rate(rating)))
                .then_expect_events(vec![rated(rating)]);
        }
    }
}

#[test]
fn rating_feedback_is_trimmed_and_blank_feedback_becomes_none() {
    given_status(TicketStatus::Resolved)
        .when(cmd(
            service(),
            TicketAction::Rate {
                rating: 4,
                feedback: Some("  quick and friendly ".into()),
            },
        ))
        .then_expect_events(vec![TicketEvent::TicketRated {
            rating: 4,
            feedback: Some("quick and friendly".into()),
        }]);
    given_status(TicketStatus::Resolved)
        .when(cmd(
            service(),
            TicketAction::Rate {
                rating: 4,
                feedback: Some("   ".into()),
            },
        ))
        .then_expect_events(vec![rated(4)]);
}

#[test]
fn too_long_feedback_is_refused() {
    given_status(TicketStatus::Closed)
        .when(cmd(
            service(),
            TicketAction::Rate {
                rating: 4,
                feedback: Some("f".repeat(MAX_TEXT_CHARS + 1)),
            },
        ))
        .then_expect_error(invalid("feedback must be at most 20000 characters"));
}

#[test]
fn a_rating_outside_1_to_5_is_refused() {
    for status in FINISHED {
        for rating in [0, 6, -1, i32::MIN, i32::MAX] {
            given_status(status)
                .when(cmd(service(), rate(rating)))
                .then_expect_error(invalid("rating must be between 1 and 5"));
        }
    }
}

#[test]
fn rating_twice_is_refused() {
    let mut events = history(TicketStatus::Resolved);
    events.push(rated(3));
    given(events.clone())
        .when(cmd(service(), rate(5)))
        .then_expect_error(refused(TicketStatus::Resolved, "it has been rated already"));
    // Closing does not reset the rating.
    events.push(TicketEvent::TicketClosed);
    given(events)
        .when(cmd(service(), rate(5)))
        .then_expect_error(refused(TicketStatus::Closed, "it has been rated already"));
}

#[test]
fn an_open_ticket_cannot_be_rated() {
    for status in OPEN {
        given_status(status)
            .when(cmd(service(), rate(5)))
            .then_expect_error(refused(
                status,
                "only a resolved or closed ticket can be rated",
            ));
    }
}

// ---------------------------------------------------------------------------------------
// State and the stored form of events
// ---------------------------------------------------------------------------------------

#[test]
fn applying_events_tracks_status_and_assignee() {
    let mut ticket = Ticket::default();
    assert_eq!(ticket.status(), None);
    assert_eq!(ticket.assignee(), None);

    let steps: Vec<(TicketEvent, TicketStatus, Option<&str>)> = vec![
        (created(), TicketStatus::Queued, None),
        (claimed_by("ann"), TicketStatus::Assigned, Some("ann")),
        (started("ann"), TicketStatus::InProgress, Some("ann")),
        (
            assigned_to("bob", Some("ann")),
            TicketStatus::Assigned,
            Some("bob"),
        ),
        (resolved("bob"), TicketStatus::Resolved, Some("bob")),
        (TicketEvent::TicketClosed, TicketStatus::Closed, Some("bob")),
        (rated(4), TicketStatus::Closed, Some("bob")),
        (reopened(Some("bob")), TicketStatus::Queued, None),
    ];
    for (event, status, assignee) in steps {
        let label = event.event_type();
        ticket.apply(event);
        assert_eq!(ticket.status(), Some(status), "after {label}");
        assert_eq!(ticket.assignee(), assignee, "after {label}");
    }
}

#[test]
fn statuses_are_active_only_while_an_agent_works_them() {
    let active: Vec<TicketStatus> = ALL.into_iter().filter(|s| s.is_active()).collect();
    assert_eq!(active, [TicketStatus::Assigned, TicketStatus::InProgress]);
}

#[test]
fn status_names_match_the_contract_and_their_serialized_form() {
    let names = ["QUEUED", "ASSIGNED", "IN_PROGRESS", "RESOLVED", "CLOSED"];
    for (status, name) in ALL.into_iter().zip(names) {
        assert_eq!(status.as_str(), name);
        assert_eq!(serde_json::to_value(status).unwrap(), name);
    }
}

#[test]
fn assignment_via_is_stored_in_snake_case() {
    assert_eq!(serde_json::to_value(AssignmentVia::Claim).unwrap(), "claim");
    assert_eq!(serde_json::to_value(AssignmentVia::Admin).unwrap(), "admin");
}

/// One event of every variant, with the name it is stored under.
fn every_event() -> Vec<(TicketEvent, &'static str)> {
    vec![
        (created(), "TicketCreated"),
        (claimed_by("ann"), "TicketAssigned"),
        (started("ann"), "TicketStarted"),
        (resolved("ann"), "TicketResolved"),
        (TicketEvent::TicketClosed, "TicketClosed"),
        (reopened(Some("ann")), "TicketReopened"),
        (
            TicketEvent::TicketPriorityChanged {
                from: Priority::Low,
                to: Priority::High,
            },
            "TicketPriorityChanged",
        ),
        (
            TicketEvent::CommentAdded {
                comment_id: "c1".into(),
                author_id: "ann".into(),
                text: "hi".into(),
            },
            "CommentAdded",
        ),
        (rated(5), "TicketRated"),
        (
            TicketEvent::TicketRequeued {
                agent_id: "ann".into(),
            },
            "TicketRequeued",
        ),
    ]
}

#[test]
fn event_type_names_never_change() {
    let events = every_event();
    // Guard against a new variant being added without a line here: the match below fails
    // to compile when a variant is missing.
    for (event, _) in &events {
        match event {
            TicketEvent::TicketCreated { .. }
            | TicketEvent::TicketAssigned { .. }
            | TicketEvent::TicketStarted { .. }
            | TicketEvent::TicketResolved { .. }
            | TicketEvent::TicketClosed
            | TicketEvent::TicketReopened { .. }
            | TicketEvent::TicketPriorityChanged { .. }
            | TicketEvent::CommentAdded { .. }
            | TicketEvent::TicketRated { .. }
            | TicketEvent::TicketRequeued { .. } => {}
        }
    }
    assert_eq!(events.len(), 10);
    for (event, name) in events {
        assert_eq!(event.event_type(), name);
        assert_eq!(
            event.event_version(),
            crate::upcast::current_version(name),
            "{name}"
        );
    }
}

#[test]
fn serialized_events_are_tagged_with_their_event_type_and_round_trip() {
    for (event, name) in every_event() {
        let json = serde_json::to_value(&event).unwrap();
        let tag = match &json {
            serde_json::Value::String(unit) => unit.clone(),
            serde_json::Value::Object(map) => {
                assert_eq!(map.len(), 1, "{json}");
                map.keys().next().unwrap().clone()
            }
            other => panic!("unexpected serialized form {other}"),
        };
        assert_eq!(tag, name);
        let back: TicketEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }
}

#[test]
fn a_refusal_reads_well_as_a_message() {
    // The domain error is shared by every aggregate; the API names the aggregate
    // ("ticket not found").
    assert_eq!(TicketError::NotFound.to_string(), "not found");
    assert_eq!(TicketError::AlreadyExists.to_string(), "already exists");
    assert_eq!(
        refused(
            TicketStatus::InProgress,
            "only an assigned ticket can be started"
        )
        .to_string(),
        "ticket #7 is IN_PROGRESS: only an assigned ticket can be started"
    );
}

#[test]
fn analysts_never_change_tickets() {
    let analyst = Actor::new("ana", Role::Analyst);
    TestFramework::<Ticket>::with(())
        .given_no_previous_events()
        .when(cmd(analyst.clone(), create_action("Printer")))
        .then_expect_error(TicketError::NotPermitted(
            "analysts read tickets; they never change them".into(),
        ));
    TestFramework::<Ticket>::with(())
        .given(vec![created()])
        .when(cmd(analyst, TicketAction::Close))
        .then_expect_error(TicketError::NotPermitted(
            "analysts read tickets; they never change them".into(),
        ));
}

#[test]
fn agents_cannot_rate_tickets() {
    TestFramework::<Ticket>::with(())
        .given(vec![created(), claimed_by("ann"), resolved("ann")])
        .when(cmd(agent("ann"), rate(5)))
        .then_expect_error(TicketError::NotPermitted(
            "ratings come from the customer's channel or an admin".into(),
        ));
}

// ---------------------------------------------------------------------------------------
// Slot reservations, automatic assignment and requeue
// ---------------------------------------------------------------------------------------

fn decision_for(agent_id: &str) -> crate::assignment::AssignmentDecision {
    use crate::assignment::{choose, Candidate};
    use crate::division::AssignmentAlgorithm;
    let candidates = [Candidate {
        agent_id: agent_id.into(),
        online: true,
        serves_division: true,
        active: 0,
        max_tickets: 5,
        last_assigned_at: None,
    }];
    choose(AssignmentAlgorithm::RoundRobin, &candidates, 0).unwrap()
}

fn auto_assign(agent_id: &str, version: u64) -> TicketAction {
    TicketAction::AutoAssign {
        agent_id: agent_id.into(),
        reservation: version,
        decision: decision_for(agent_id),
    }
}

fn auto_assigned(agent_id: &str) -> TicketEvent {
    TicketEvent::TicketAssigned {
        agent_id: agent_id.into(),
        previous_agent_id: None,
        via: AssignmentVia::Auto,
        decision: Some(decision_for(agent_id)),
    }
}

#[test]
fn a_reservation_made_for_an_older_version_is_stale() {
    let events = vec![
        created(),
        TicketEvent::TicketPriorityChanged {
            from: Priority::Medium,
            to: Priority::High,
        },
    ];
    let stale =
        TicketError::Stale("ticket #7 changed while the agent's slot was being reserved".into());
    given(events.clone())
        .when(cmd(agent("ann"), claim(1)))
        .then_expect_error(stale.clone());
    given(events.clone())
        .when(cmd(admin(), assign("ann", 1)))
        .then_expect_error(stale.clone());
    given(events.clone())
        .when(cmd(service(), auto_assign("ann", 1)))
        .then_expect_error(stale);
    given(events)
        .when(cmd(service(), auto_assign("ann", 2)))
        .then_expect_events(vec![auto_assigned("ann")]);
}

#[test]
fn repeating_an_assignment_that_happened_with_the_same_reservation_is_a_no_op() {
    given(vec![created(), claimed_by("ann")])
        .when(cmd(agent("ann"), claim(1)))
        .then_expect_events(vec![]);
    given(vec![created(), auto_assigned("ann")])
        .when(cmd(service(), auto_assign("ann", 1)))
        .then_expect_events(vec![]);
    given(vec![
        created(),
        assigned_to("ann", None),
        assigned_to("bob", Some("ann")),
    ])
    .when(cmd(admin(), assign("bob", 2)))
    .then_expect_events(vec![]);
    // Another agent's claim with that reservation is refused as usual.
    given(vec![created(), claimed_by("ann")])
        .when(cmd(agent("bob"), claim(1)))
        .then_expect_error(refused(
            TicketStatus::Assigned,
            "only a queued ticket can be claimed",
        ));
}

#[test]
fn a_reservation_does_not_revive_once_the_ticket_moved_on() {
    // Ann got it with reservation 1, resolved it, it was reopened: the old reservation is
    // no longer hers to repeat, and it is stale for a new assignment.
    given(vec![
        created(),
        claimed_by("ann"),
        resolved("ann"),
        reopened(Some("ann")),
    ])
    .when(cmd(agent("ann"), claim(1)))
    .then_expect_error(TicketError::Stale(
        "ticket #7 changed while the agent's slot was being reserved".into(),
    ));
}

#[test]
fn automatic_assignment_is_for_queued_tickets_by_the_assignment_process() {
    given_status(TicketStatus::Queued)
        .when(cmd(service(), auto_assign("ann", 1)))
        .then_expect_events(vec![auto_assigned("ann")]);
    given_status(TicketStatus::Queued)
        .when(cmd(agent("ann"), auto_assign("ann", 1)))
        .then_expect_error(not_permitted(
            "automatic assignment is the assignment process's",
        ));
    for status in [TicketStatus::Assigned, TicketStatus::Resolved] {
        given_status(status)
            .when(cmd(service(), auto_assign("bob", version_of(status))))
            .then_expect_error(refused(
                status,
                "only a queued ticket is assigned automatically",
            ));
    }
    let mut mismatched = auto_assign("bob", 1);
    if let TicketAction::AutoAssign { decision, .. } = &mut mismatched {
        decision.winner = "cid".into();
    }
    given_status(TicketStatus::Queued)
        .when(cmd(service(), mismatched))
        .then_expect_error(invalid("the decision names another agent"));
}

#[test]
fn an_assigned_not_started_ticket_is_requeued_when_its_agent_goes_offline() {
    let requeue = |who: &str| TicketAction::Requeue {
        agent_id: who.into(),
    };
    given_status(TicketStatus::Assigned)
        .when(cmd(service(), requeue("ann")))
        .then_expect_events(vec![TicketEvent::TicketRequeued {
            agent_id: "ann".into(),
        }]);
    for (status, who) in [
        (TicketStatus::InProgress, "ann"),
        (TicketStatus::Assigned, "bob"),
        (TicketStatus::Queued, "ann"),
    ] {
        given_status(status)
            .when(cmd(service(), requeue(who)))
            .then_expect_error(refused(
                status,
                &format!("only a ticket assigned to agent {who} and not started can be requeued"),
            ));
    }
    given_status(TicketStatus::Assigned)
        .when(cmd(agent("ann"), requeue("ann")))
        .then_expect_error(not_permitted(
            "tickets are requeued by the assignment process or an admin",
        ));
    // Back in the queue, it can be claimed at its new version.
    let mut events = history(TicketStatus::Assigned);
    events.push(TicketEvent::TicketRequeued {
        agent_id: "ann".into(),
    });
    given(events)
        .when(cmd(agent("bob"), claim(3)))
        .then_expect_events(vec![claimed_by("bob")]);
}

#[test]
fn the_active_holder_is_the_assignee_only_while_the_ticket_is_active() {
    let mut ticket = Ticket::default();
    for event in [created(), claimed_by("ann")] {
        ticket.apply(event);
    }
    assert_eq!(ticket.active_holder(), Some("ann"));
    assert_eq!(ticket.version(), 2);
    assert!(ticket.assigned_with("ann", 1));
    ticket.apply(resolved("ann"));
    assert_eq!(ticket.active_holder(), None);
    assert_eq!(ticket.assignee(), Some("ann"));
    assert!(!ticket.assigned_with("ann", 1));
}

#[test]
fn old_assignment_events_without_a_decision_still_read() {
    let json = serde_json::json!({"TicketAssigned": {
        "agent_id": "ann", "previous_agent_id": null, "via": "claim"}});
    let event: TicketEvent = serde_json::from_value(json).unwrap();
    assert_eq!(event, claimed_by("ann"));
}

#[test]
fn an_unanswered_ticket_is_escalated_from_its_holder_only() {
    let escalate = |from: &str, to: &str| TicketAction::Escalate {
        from_agent_id: from.into(),
        agent_id: to.into(),
        reservation: 2,
        decision: decision_for(to),
    };
    for status in [TicketStatus::Assigned, TicketStatus::InProgress] {
        let reservation = history(status).len() as u64;
        let mut action = escalate("ann", "bob");
        if let TicketAction::Escalate { reservation: r, .. } = &mut action {
            *r = reservation;
        }
        given_status(status)
            .when(cmd(service(), action))
            .then_expect_events(vec![TicketEvent::TicketAssigned {
                agent_id: "bob".into(),
                previous_agent_id: Some("ann".into()),
                via: AssignmentVia::Escalation,
                decision: Some(decision_for("bob")),
            }]);
    }
    // Decided on an older state: someone else holds it now, or it is queued or done.
    for status in [TicketStatus::Queued, TicketStatus::Resolved] {
        given_status(status)
            .when(cmd(service(), escalate("ann", "bob")))
            .then_expect_error(refused(
                status,
                "only a ticket agent ann holds can be escalated from them",
            ));
    }
    given_status(TicketStatus::Assigned)
        .when(cmd(service(), escalate("cid", "bob")))
        .then_expect_error(refused(
            TicketStatus::Assigned,
            "only a ticket agent cid holds can be escalated from them",
        ));
    given_status(TicketStatus::Assigned)
        .when(cmd(service(), escalate("ann", "ann")))
        .then_expect_error(invalid("an escalation goes to another agent"));
    given_status(TicketStatus::Assigned)
        .when(cmd(agent("bob"), escalate("ann", "bob")))
        .then_expect_error(not_permitted("escalations are the conversation process's"));
}
