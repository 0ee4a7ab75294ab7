//! Property test of automatic assignment: random sequences of presence, capacity, division,
//! ticket and queue-setting changes are driven through the real, in-process [`Helpdesk`]
//! (projections and assignment process running, SQLite in a fresh folder per case), and
//! after every step — once the helpdesk has settled — the invariants of assignment are
//! checked on the read models, cross-checked with the write side:
//!
//! 1. no agent is over capacity; a capacity lowered below the current load takes nothing
//!    away, but such an agent receives no new ticket while over capacity;
//! 2. no ticket has two owners: every active ticket has exactly one assignee, and the slot
//!    ledger (the aggregate and its `slot_reservations` projection) holds every active
//!    ticket for its assignee and nothing else;
//! 3. no ticket waits in an AUTO queue (or the no-division queue) while an eligible agent
//!    (online, serving the division, with a free slot) exists;
//! 4. every queue is ordered by priority, then oldest first, with positions 1..n.

use api::auth::Caller;
use api::config::Config;
use api::error::ApiError;
use api::helpdesk::{Helpdesk, NewTicket};
use cqrs_es::EventStore as _;
use domain::agent::{AgentAction, AgentStatus};
use domain::division::{AssignmentAlgorithm, AssignmentMode, DivisionChanges, DivisionProfile};
use domain::queue_settings::{OfflinePolicy, QueueSettingsChanges};
use domain::ticket::{TicketAction, TicketStatus};
use domain::{Actor, Priority, Role};
use projections::tickets::{TicketFilter, TicketRecord, NO_DIVISION};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestError, TestRunner};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const ORG: &str = "acme";
/// How long one step may take to come to rest.
const SETTLE: Duration = Duration::from_secs(20);
/// More than any case creates: every read asks for everything.
const ALL: i64 = 1_000;

// ---------------------------------------------------------------------------------------
// What a case is made of.

#[derive(Debug, Clone)]
struct DivisionSpec {
    auto: bool,
    algorithm: AssignmentAlgorithm,
}

#[derive(Debug, Clone)]
struct AgentSpec {
    max_tickets: i64,
    /// Bit `d` set: serves division `d`.
    divisions: u8,
    online: bool,
}

#[derive(Debug, Clone)]
struct World {
    divisions: Vec<DivisionSpec>,
    agents: Vec<AgentSpec>,
    requeue: bool,
}

/// One step. Agents and divisions are indexes taken modulo the world's counts; tickets are
/// picked among the tickets that fit the step at the time (e.g. a claim among the queued).
#[derive(Debug, Clone)]
enum Step {
    GoOnline(usize),
    GoOffline(usize),
    SetCapacity(usize, i64),
    SetDivisions(usize, u8),
    SetMode(usize, bool, AssignmentAlgorithm),
    Create(Option<usize>, Priority),
    Resolve(Index),
    Start(Index),
    ChangePriority(Index, Priority),
    Claim(usize, Index),
    AdminAssign(usize, Index),
    Reopen(Index),
    SetOfflinePolicy(bool),
}

/// A world and what happens in it. A step that is `None` is skipped: the sequence is
/// 15..=30 long, and shrinking a failure disables the steps it does not need (a shrunk
/// vector could not get shorter than 15).
#[derive(Clone)]
struct Scenario {
    world: World,
    steps: Vec<Option<Step>>,
}

impl std::fmt::Debug for Scenario {
    /// The world and the steps that run, numbered as in the failure report.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{:#?}", self.world)?;
        for (n, step) in self.steps.iter().enumerate() {
            if let Some(step) = step {
                writeln!(f, "step {}: {step:?}", n + 1)?;
            }
        }
        Ok(())
    }
}

fn priority() -> impl Strategy<Value = Priority> {
    prop_oneof![
        Just(Priority::Urgent),
        Just(Priority::High),
        Just(Priority::Medium),
        Just(Priority::Low),
    ]
}

fn algorithm() -> impl Strategy<Value = AssignmentAlgorithm> {
    prop_oneof![
        Just(AssignmentAlgorithm::RoundRobin),
        Just(AssignmentAlgorithm::LeastLoaded),
        Just(AssignmentAlgorithm::Random),
    ]
}

fn world() -> impl Strategy<Value = World> {
    let division =
        (any::<bool>(), algorithm()).prop_map(|(auto, algorithm)| DivisionSpec { auto, algorithm });
    let agent =
        (1i64..=3, any::<u8>(), any::<bool>()).prop_map(|(max_tickets, d, online)| AgentSpec {
            max_tickets,
            divisions: d & 0b111,
            online,
        });
    (
        prop::collection::vec(division, 2..=3),
        prop::collection::vec(agent, 3..=4),
        prop::bool::weighted(0.25),
    )
        .prop_map(|(divisions, agents, requeue)| World {
            divisions,
            agents,
            requeue,
        })
}

fn step() -> impl Strategy<Value = Step> {
    let agent = 0usize..4;
    let division = 0usize..3;
    prop_oneof![
        8 => (prop::option::weighted(0.7, division.clone()), priority())
            .prop_map(|(d, p)| Step::Create(d, p)),
        3 => any::<Index>().prop_map(Step::Resolve),
        3 => agent.clone().prop_map(Step::GoOnline),
        2 => agent.clone().prop_map(Step::GoOffline),
        2 => (agent.clone(), 1i64..=3).prop_map(|(a, m)| Step::SetCapacity(a, m)),
        2 => (agent.clone(), 0u8..8).prop_map(|(a, d)| Step::SetDivisions(a, d)),
        2 => (division, any::<bool>(), algorithm()).prop_map(|(d, auto, alg)| Step::SetMode(d, auto, alg)),
        2 => (agent.clone(), any::<Index>()).prop_map(|(a, t)| Step::Claim(a, t)),
        1 => (agent, any::<Index>()).prop_map(|(a, t)| Step::AdminAssign(a, t)),
        1 => any::<Index>().prop_map(Step::Start),
        1 => (any::<Index>(), priority()).prop_map(|(t, p)| Step::ChangePriority(t, p)),
        1 => any::<Index>().prop_map(Step::Reopen),
        1 => any::<bool>().prop_map(Step::SetOfflinePolicy),
    ]
}

fn scenario(steps: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Scenario> {
    (
        world(),
        prop::collection::vec(prop::option::weighted(0.95, step()), steps),
    )
        .prop_map(|(world, steps)| Scenario { world, steps })
}

// ---------------------------------------------------------------------------------------
// The test's model: what the driver changed successfully, and what the last check saw.

#[derive(Debug, Clone)]
struct AgentModel {
    id: String,
    online: bool,
    max_tickets: i64,
    divisions: BTreeSet<String>,
}

impl AgentModel {
    fn serves(&self, division: Option<&str>) -> bool {
        division.is_none_or(|d| self.divisions.contains(d))
    }
}

#[derive(Debug, Clone)]
struct TicketModel {
    number: i64,
    division: Option<String>,
    priority: Priority,
    /// The step at which it last entered its queue (created or reopened; a requeue keeps
    /// the place it had): the "age" of the queue order.
    queued_at_step: usize,
}

#[derive(Debug, Default)]
struct Model {
    division_ids: Vec<String>,
    /// Whether each division is AUTO.
    auto: Vec<bool>,
    agents: Vec<AgentModel>,
    tickets: BTreeMap<String, TicketModel>,
    requeue: bool,
    /// Each agent's active tickets as the previous check saw them.
    previously_active: BTreeMap<String, BTreeSet<String>>,
    /// What happened so far, for failure reports.
    log: Vec<String>,
}

impl Model {
    fn division_of(&self, index: usize) -> String {
        self.division_ids[index % self.division_ids.len()].clone()
    }

    fn divisions_of(&self, mask: u8) -> Vec<String> {
        (0..self.division_ids.len())
            .filter(|d| mask & (1 << d) != 0)
            .map(|d| self.division_ids[d].clone())
            .collect()
    }

    fn agent(&self, index: usize) -> usize {
        index % self.agents.len()
    }

    /// `d0`, `d1`, ... for divisions, `-` for no division.
    fn label(&self, division: Option<&str>) -> String {
        match division {
            None => "-".into(),
            Some(id) => match self.division_ids.iter().position(|d| d == id) {
                Some(index) => format!("d{index}"),
                None => id.into(),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------
// Callers and outcomes.

fn admin() -> Caller {
    Caller {
        organization: ORG.into(),
        actor: Actor::new("admin-1", Role::Admin),
    }
}

fn agent_caller(id: &str) -> Caller {
    Caller {
        organization: ORG.into(),
        actor: Actor::new(id, Role::Agent),
    }
}

/// `Ok(true)`: done; `Ok(false)`: an expected business refusal; `Err`: a failure the
/// driver's commands should never meet.
fn outcome<T>(
    what: &str,
    result: Result<T, ApiError>,
    log: &mut Vec<String>,
) -> Result<bool, String> {
    match result {
        Ok(_) => {
            log.push(format!("{what}: ok"));
            Ok(true)
        }
        Err(
            e @ (ApiError::CapacityReached(_)
            | ApiError::InvalidTransition(_)
            | ApiError::Forbidden(_)
            | ApiError::Conflict(_)),
        ) => {
            log.push(format!("{what}: refused {} ({})", e.code(), e.message()));
            Ok(false)
        }
        Err(e) => Err(format!("{what}: unexpected {} ({})", e.code(), e.message())),
    }
}

macro_rules! ensure {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            return Err(format!($($why)+));
        }
    };
}

// ---------------------------------------------------------------------------------------
// One case.

/// A SQLite folder of its own, removed when dropped.
struct Folder(PathBuf);

impl Folder {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!(
            "helpdesk-assignment-properties-{}",
            uuid::Uuid::new_v4()
        ));
        std::fs::create_dir_all(&path).expect("temp folder");
        Self(path)
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn run_case(scenario: Scenario) -> Result<(), String> {
    let folder = Folder::new();
    let url = format!("sqlite://{}", folder.0.join("helpdesk.db").display());
    let config = Config::from_lookup(|key| (key == "DATABASE_URL").then(|| url.clone()))
        .map_err(|e| e.to_string())?;
    let shutdown = CancellationToken::new();
    let (helpdesk, tasks) = Helpdesk::start(&config, shutdown.clone())
        .await
        .map_err(|e| format!("starting the helpdesk: {e:#}"))?;
    let mut model = Model::default();
    let result = drive(&helpdesk, &scenario, &mut model).await;
    shutdown.cancel();
    for task in tasks {
        let _ = task.await;
    }
    helpdesk.db.close().await;
    drop(helpdesk);
    drop(folder);
    if std::env::var_os("ASSIGNMENT_PROPERTIES_VERBOSE").is_some() {
        eprintln!("--- case ---\n{}", model.log.join("\n"));
    }
    result.map_err(|why| {
        format!(
            "{why}\n--- what happened (step: outcome) ---\n{}",
            model.log.join("\n")
        )
    })
}

async fn drive(
    helpdesk: &Arc<Helpdesk>,
    scenario: &Scenario,
    model: &mut Model,
) -> Result<(), String> {
    setup(helpdesk, &scenario.world, model).await?;
    settle(helpdesk, "setup").await?;
    check(helpdesk, model)
        .await
        .map_err(|why| format!("after setup: {why}"))?;
    for (n, step) in scenario.steps.iter().enumerate() {
        let number = n + 1;
        let Some(step) = step else { continue };
        perform(helpdesk, number, step, model).await?;
        settle(helpdesk, &format!("step {number}")).await?;
        check(helpdesk, model)
            .await
            .map_err(|why| format!("after step {number} ({step:?}): {why}"))?;
    }
    Ok(())
}

async fn settle(helpdesk: &Helpdesk, when: &str) -> Result<(), String> {
    ensure!(
        helpdesk.settle(SETTLE).await,
        "the helpdesk did not settle within {SETTLE:?} after {when}"
    );
    Ok(())
}

async fn setup(helpdesk: &Helpdesk, world: &World, model: &mut Model) -> Result<(), String> {
    let admin = admin();
    for (d, spec) in world.divisions.iter().enumerate() {
        let mode = if spec.auto {
            AssignmentMode::Auto
        } else {
            AssignmentMode::Claim
        };
        let id = helpdesk
            .create_division(
                &admin,
                "setup",
                DivisionProfile {
                    name: format!("Division {d}"),
                    description: None,
                    keywords: vec![],
                    position: None,
                    assignment_mode: mode,
                    algorithm: spec.algorithm,
                    avg_handling_minutes: 10,
                },
            )
            .await
            .map_err(|e| format!("createDivision: {}", e.code()))?;
        model.log.push(format!(
            "setup: d{d} = {id} ({mode:?}, {:?})",
            spec.algorithm
        ));
        model.division_ids.push(id);
        model.auto.push(spec.auto);
    }
    for (a, spec) in world.agents.iter().enumerate() {
        let id = format!("agent-{a}");
        let divisions = model.divisions_of(spec.divisions);
        helpdesk
            .register_agent(
                &admin,
                "setup",
                Some(id.clone()),
                format!("Agent {a}"),
                spec.max_tickets,
                divisions.clone(),
            )
            .await
            .map_err(|e| format!("registerAgent: {}", e.code()))?;
        if spec.online {
            helpdesk
                .on_agent(&agent_caller(&id), "setup", &id, AgentAction::GoOnline)
                .await
                .map_err(|e| format!("goOnline: {}", e.code()))?;
        }
        let labels: Vec<String> = divisions.iter().map(|d| model.label(Some(d))).collect();
        model.log.push(format!(
            "setup: {id} max {} divisions {labels:?} online {}",
            spec.max_tickets, spec.online
        ));
        model.agents.push(AgentModel {
            id,
            online: spec.online,
            max_tickets: spec.max_tickets,
            divisions: divisions.into_iter().collect(),
        });
    }
    if world.requeue {
        set_policy(helpdesk, true, "setup", "setup: ", model).await?;
    }
    Ok(())
}

async fn set_policy(
    helpdesk: &Helpdesk,
    requeue: bool,
    request_id: &str,
    what: &str,
    model: &mut Model,
) -> Result<(), String> {
    let policy = if requeue {
        OfflinePolicy::Requeue
    } else {
        OfflinePolicy::Keep
    };
    let result = helpdesk
        .update_queue_settings(
            &admin(),
            request_id,
            QueueSettingsChanges {
                offline_policy: Some(policy),
                ..Default::default()
            },
        )
        .await;
    if outcome(
        &format!("{what}offline policy {policy:?}"),
        result,
        &mut model.log,
    )? {
        model.requeue = requeue;
    }
    Ok(())
}

/// The tickets (by number) whose status is one of `statuses`, from the read model.
async fn tickets_in(
    helpdesk: &Helpdesk,
    statuses: &[TicketStatus],
) -> Result<Vec<TicketRecord>, String> {
    let filter = TicketFilter {
        statuses: statuses.to_vec(),
        ..Default::default()
    };
    let mut page = projections::tickets::tickets(&helpdesk.db, ORG, &filter, ALL, None)
        .await
        .map_err(|e| e.to_string())?
        .tickets;
    page.sort_by_key(|t| t.number);
    Ok(page)
}

async fn pick(
    helpdesk: &Helpdesk,
    statuses: &[TicketStatus],
    index: &Index,
) -> Result<Option<TicketRecord>, String> {
    let candidates = tickets_in(helpdesk, statuses).await?;
    Ok((!candidates.is_empty()).then(|| candidates[index.index(candidates.len())].clone()))
}

async fn perform(
    helpdesk: &Helpdesk,
    n: usize,
    step: &Step,
    model: &mut Model,
) -> Result<(), String> {
    use TicketStatus::*;
    let rid = format!("step-{n}");
    let admin = admin();
    match step {
        Step::GoOnline(a) | Step::GoOffline(a) => {
            let a = model.agent(*a);
            let id = model.agents[a].id.clone();
            let online = matches!(step, Step::GoOnline(_));
            let action = if online {
                AgentAction::GoOnline
            } else {
                AgentAction::GoOffline
            };
            let result = helpdesk
                .on_agent(&agent_caller(&id), &rid, &id, action)
                .await;
            if outcome(
                &format!("{n}: {id} online={online}"),
                result,
                &mut model.log,
            )? {
                model.agents[a].online = online;
            }
        }
        Step::SetCapacity(a, max) => {
            let a = model.agent(*a);
            let id = model.agents[a].id.clone();
            let result = helpdesk
                .on_agent(
                    &admin,
                    &rid,
                    &id,
                    AgentAction::SetCapacity { max_tickets: *max },
                )
                .await;
            if outcome(&format!("{n}: {id} capacity {max}"), result, &mut model.log)? {
                model.agents[a].max_tickets = *max;
            }
        }
        Step::SetDivisions(a, mask) => {
            let a = model.agent(*a);
            let id = model.agents[a].id.clone();
            let divisions = model.divisions_of(*mask);
            let result = helpdesk
                .on_agent(
                    &admin,
                    &rid,
                    &id,
                    AgentAction::SetDivisions {
                        division_ids: divisions.clone(),
                    },
                )
                .await;
            let labels: Vec<String> = divisions.iter().map(|d| model.label(Some(d))).collect();
            if outcome(
                &format!("{n}: {id} divisions {labels:?}"),
                result,
                &mut model.log,
            )? {
                model.agents[a].divisions = divisions.into_iter().collect();
            }
        }
        Step::SetMode(d, auto, algorithm) => {
            let index = d % model.division_ids.len();
            let id = model.division_of(index);
            let mode = if *auto {
                AssignmentMode::Auto
            } else {
                AssignmentMode::Claim
            };
            let result = helpdesk
                .update_division(
                    &admin,
                    &rid,
                    &id,
                    DivisionChanges {
                        assignment_mode: Some(mode),
                        algorithm: Some(*algorithm),
                        ..Default::default()
                    },
                )
                .await;
            let what = format!("{n}: d{index} {mode:?} {algorithm:?}");
            if outcome(&what, result, &mut model.log)? {
                model.auto[index] = *auto;
            }
        }
        Step::Create(division, priority) => {
            let division = division.map(|d| model.division_of(d));
            let result = helpdesk
                .create_ticket(
                    &admin,
                    &rid,
                    NewTicket {
                        subject: format!("Ticket of step {n}"),
                        description: None,
                        priority: Some(*priority),
                        division_id: division.clone(),
                    },
                )
                .await;
            let what = format!(
                "{n}: create {priority:?} in {}",
                model.label(division.as_deref())
            );
            match result {
                Ok(ticket) => {
                    model.log.push(format!("{what}: ok #{}", ticket.number));
                    model.tickets.insert(
                        ticket.id,
                        TicketModel {
                            number: ticket.number,
                            division,
                            priority: *priority,
                            queued_at_step: n,
                        },
                    );
                }
                Err(e) => return Err(format!("{what}: unexpected {} ({})", e.code(), e.message())),
            }
        }
        Step::Resolve(index) => {
            let Some(ticket) = pick(helpdesk, &[Assigned, InProgress], index).await? else {
                model.log.push(format!("{n}: resolve: nothing active"));
                return Ok(());
            };
            let result = helpdesk
                .on_ticket(
                    &admin,
                    &rid,
                    &ticket.id,
                    TicketAction::Resolve { resolution: None },
                )
                .await;
            outcome(
                &format!("{n}: resolve #{}", ticket.number),
                result,
                &mut model.log,
            )?;
        }
        Step::Start(index) => {
            let Some(ticket) = pick(helpdesk, &[Assigned], index).await? else {
                model.log.push(format!("{n}: start: nothing assigned"));
                return Ok(());
            };
            let holder = ticket.assignee_id.clone().unwrap_or_default();
            let result = helpdesk
                .on_ticket(
                    &agent_caller(&holder),
                    &rid,
                    &ticket.id,
                    TicketAction::Start,
                )
                .await;
            let what = format!("{n}: {holder} starts #{}", ticket.number);
            outcome(&what, result, &mut model.log)?;
        }
        Step::ChangePriority(index, priority) => {
            let Some(ticket) = pick(helpdesk, &[Queued, Assigned, InProgress], index).await? else {
                model
                    .log
                    .push(format!("{n}: change priority: no open ticket"));
                return Ok(());
            };
            let result = helpdesk
                .on_ticket(
                    &admin,
                    &rid,
                    &ticket.id,
                    TicketAction::ChangePriority {
                        priority: *priority,
                    },
                )
                .await;
            let what = format!("{n}: #{} priority {priority:?}", ticket.number);
            if outcome(&what, result, &mut model.log)? {
                if let Some(t) = model.tickets.get_mut(&ticket.id) {
                    t.priority = *priority;
                }
            }
        }
        Step::Claim(a, index) => {
            let id = model.agents[model.agent(*a)].id.clone();
            let Some(ticket) = pick(helpdesk, &[Queued], index).await? else {
                model.log.push(format!("{n}: {id} claims: nothing queued"));
                return Ok(());
            };
            let result = helpdesk
                .assign_ticket(&agent_caller(&id), &rid, &ticket.id, None)
                .await;
            outcome(
                &format!("{n}: {id} claims #{}", ticket.number),
                result,
                &mut model.log,
            )?;
        }
        Step::AdminAssign(a, index) => {
            let id = model.agents[model.agent(*a)].id.clone();
            let Some(ticket) = pick(helpdesk, &[Queued, Assigned, InProgress], index).await? else {
                model
                    .log
                    .push(format!("{n}: assign to {id}: no open ticket"));
                return Ok(());
            };
            let result = helpdesk
                .assign_ticket(&admin, &rid, &ticket.id, Some(id.clone()))
                .await;
            let what = format!(
                "{n}: admin assigns #{} ({} of {:?}) to {id}",
                ticket.number, ticket.status, ticket.assignee_id
            );
            outcome(&what, result, &mut model.log)?;
        }
        Step::Reopen(index) => {
            let Some(ticket) = pick(helpdesk, &[Resolved], index).await? else {
                model.log.push(format!("{n}: reopen: nothing resolved"));
                return Ok(());
            };
            let result = helpdesk
                .on_ticket(
                    &admin,
                    &rid,
                    &ticket.id,
                    TicketAction::Reopen { reason: None },
                )
                .await;
            if outcome(
                &format!("{n}: reopen #{}", ticket.number),
                result,
                &mut model.log,
            )? {
                if let Some(t) = model.tickets.get_mut(&ticket.id) {
                    t.queued_at_step = n;
                }
            }
        }
        Step::SetOfflinePolicy(requeue) => {
            set_policy(helpdesk, *requeue, &rid, &format!("{n}: "), model).await?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The invariants.

async fn fetch_pairs(helpdesk: &Helpdesk, sql: &str) -> Result<Vec<(String, String)>, String> {
    Ok(projections::on_backend!(&helpdesk.db, |pool| {
        sqlx::query_as::<_, (String, String)>(sql)
            .bind(ORG)
            .fetch_all(pool)
            .await
            .map_err(|e| format!("{sql}: {e}"))?
    }))
}

type QueueRow = (String, String, i64, String, i64);

async fn check(helpdesk: &Helpdesk, model: &mut Model) -> Result<(), String> {
    let db = &helpdesk.db;
    let err = |e: projections::DbError| e.to_string();

    // --- The tickets, as the read model and the write side see them.
    let records = projections::tickets::tickets(db, ORG, &TicketFilter::default(), ALL, None)
        .await
        .map_err(err)?
        .tickets;
    ensure!(
        records.len() == model.tickets.len(),
        "the read model shows {} tickets, {} were created",
        records.len(),
        model.tickets.len()
    );
    let mut tickets: BTreeMap<String, (TicketStatus, TicketRecord)> = BTreeMap::new();
    for record in records {
        let status = record.status().map_err(err)?;
        let Some(expected) = model.tickets.get(&record.id) else {
            return Err(format!("ticket #{} was never created", record.number));
        };
        ensure!(
            record.priority().map_err(err)? == expected.priority
                && record.division_id == expected.division,
            "ticket #{} has priority {} in {:?}, expected {:?} in {:?}",
            record.number,
            record.priority,
            record.division_id,
            expected.priority,
            expected.division
        );
        let written = helpdesk
            .load_ticket(ORG, &record.id)
            .await
            .map_err(|e| format!("loading ticket #{}: {}", record.number, e.code()))?;
        ensure!(
            written.status() == Some(status)
                && written.active_holder()
                    == record.assignee_id.as_deref().filter(|_| status.is_active()),
            "ticket #{}: the read model says {} with {:?}, its events say {:?} with {:?}",
            record.number,
            record.status,
            record.assignee_id,
            written.status(),
            written.active_holder()
        );
        tickets.insert(record.id.clone(), (status, record));
    }

    // --- The agents: the read model agrees with what the driver set.
    let workload = projections::agents::workload(db, ORG, None)
        .await
        .map_err(err)?;
    ensure!(
        workload.len() == model.agents.len(),
        "{} agents in the read model, {} registered",
        workload.len(),
        model.agents.len()
    );
    let mut active: BTreeMap<String, BTreeSet<String>> = model
        .agents
        .iter()
        .map(|a| (a.id.clone(), BTreeSet::new()))
        .collect();

    // --- Invariant 2: one owner per active ticket.
    for (id, (status, record)) in &tickets {
        if !status.is_active() {
            continue;
        }
        let Some(assignee) = &record.assignee_id else {
            return Err(format!("active ticket #{} has no assignee", record.number));
        };
        let Some(held) = active.get_mut(assignee) else {
            return Err(format!(
                "active ticket #{} is held by unknown agent {assignee}",
                record.number
            ));
        };
        held.insert(id.clone());
    }
    let slots = fetch_pairs(
        helpdesk,
        "SELECT agent_id, ticket_id FROM slot_reservations WHERE organization_id = $1",
    )
    .await?;
    let mut projected_slots: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (agent, ticket) in &slots {
        projected_slots
            .entry(agent.clone())
            .or_default()
            .insert(ticket.clone());
    }
    let number = |ticket: &str| {
        tickets
            .get(ticket)
            .map_or_else(|| format!("?{ticket}"), |(_, r)| format!("#{}", r.number))
    };
    let numbers = |set: &BTreeSet<String>| set.iter().map(|t| number(t)).collect::<Vec<_>>();
    let agent_store = projections::event_store::event_store::<AgentStatus>(db);
    for agent in &model.agents {
        let held = &active[&agent.id];
        let projected = projected_slots.remove(&agent.id).unwrap_or_default();
        ensure!(
            projected == *held,
            "agent {} holds active tickets {:?} but slot_reservations shows {:?}",
            agent.id,
            numbers(held),
            numbers(&projected)
        );
        let ledger: BTreeSet<String> = agent_store
            .load_aggregate(&agent.id)
            .await
            .map_err(|e| format!("loading agent {}: {e}", agent.id))?
            .aggregate
            .slots()
            .keys()
            .cloned()
            .collect();
        ensure!(
            ledger == *held,
            "agent {} holds active tickets {:?} but its slot ledger holds {:?}",
            agent.id,
            numbers(held),
            numbers(&ledger)
        );
    }
    ensure!(
        projected_slots.is_empty(),
        "slot_reservations names unknown agents: {projected_slots:?}"
    );

    // --- Invariant 1: capacity.
    for agent in &model.agents {
        let Some(row) = workload.iter().find(|w| w.agent.id == agent.id) else {
            return Err(format!("agent {} is missing from the workload", agent.id));
        };
        let divisions: BTreeSet<String> = row.agent.division_ids().into_iter().collect();
        ensure!(
            row.agent.online == agent.online
                && row.agent.max_tickets == agent.max_tickets
                && divisions == agent.divisions,
            "agent {} reads online={} max={} divisions={:?}, expected online={} max={} divisions={:?}",
            agent.id,
            row.agent.online,
            row.agent.max_tickets,
            divisions,
            agent.online,
            agent.max_tickets,
            agent.divisions
        );
        let held = &active[&agent.id];
        ensure!(
            row.active_tickets == held.len() as i64,
            "workload says agent {} has {} active tickets, the tickets say {}",
            agent.id,
            row.active_tickets,
            held.len()
        );
        let before = model
            .previously_active
            .get(&agent.id)
            .cloned()
            .unwrap_or_default();
        let gained: BTreeSet<String> = held.difference(&before).cloned().collect();
        ensure!(
            held.len() as i64 <= agent.max_tickets || gained.is_empty(),
            "agent {} (max {}) holds {} active tickets {:?}, and got {:?} in this step",
            agent.id,
            agent.max_tickets,
            held.len(),
            numbers(held),
            numbers(&gained)
        );
    }

    // --- Under REQUEUE, no assigned, not started ticket stays with an offline agent.
    if model.requeue {
        for (status, record) in tickets.values() {
            if *status != TicketStatus::Assigned {
                continue;
            }
            let assignee = record.assignee_id.as_deref().unwrap_or_default();
            let online = model.agents.iter().any(|a| a.id == assignee && a.online);
            ensure!(
                online,
                "REQUEUE policy, but ticket #{} stays ASSIGNED to offline agent {assignee}",
                record.number
            );
        }
    }

    // --- Invariant 3: nothing waits in an AUTO queue while an eligible agent has room.
    for (status, record) in tickets.values() {
        if *status != TicketStatus::Queued {
            continue;
        }
        let division = record.division_id.as_deref();
        let auto = match division {
            None => true,
            Some(d) => {
                let index = model
                    .division_ids
                    .iter()
                    .position(|id| id == d)
                    .ok_or_else(|| format!("ticket #{} in unknown division", record.number))?;
                model.auto[index]
            }
        };
        if !auto {
            continue;
        }
        let eligible: Vec<String> = model
            .agents
            .iter()
            .filter(|a| {
                a.online && a.serves(division) && (active[&a.id].len() as i64) < a.max_tickets
            })
            .map(|a| format!("{} ({}/{})", a.id, active[&a.id].len(), a.max_tickets))
            .collect();
        ensure!(
            eligible.is_empty(),
            "ticket #{} ({}) waits in the AUTO queue of {:?} while {:?} could take it",
            record.number,
            record.priority,
            division,
            eligible
        );
    }

    // --- Invariant 4: the queues.
    let entries: Vec<QueueRow> = projections::on_backend!(db, |pool| sqlx::query_as(
        "SELECT ticket_id, division_key, priority_rank, waiting_since, number
           FROM queue_entries WHERE organization_id = $1"
    )
    .bind(ORG)
    .fetch_all(pool)
    .await
    .map_err(|e| e.to_string())?);
    let queued: BTreeSet<&String> = tickets
        .iter()
        .filter(|(_, (s, _))| *s == TicketStatus::Queued)
        .map(|(id, _)| id)
        .collect();
    let entered: BTreeSet<&String> = entries.iter().map(|e| &e.0).collect();
    ensure!(
        entries.len() == entered.len() && entered == queued,
        "queue_entries {:?} disagree with the QUEUED tickets {:?}",
        entries.iter().map(|e| number(&e.0)).collect::<Vec<_>>(),
        queued.iter().map(|t| number(t)).collect::<Vec<_>>()
    );
    for (ticket, key, rank, _, entry_number) in &entries {
        let (_, record) = &tickets[ticket];
        ensure!(
            *key == record.division_id.clone().unwrap_or_default()
                && *rank == record.priority().map_err(err)?.queue_rank()
                && *entry_number == record.number,
            "the queue entry of #{} ({key:?}, rank {rank}) disagrees with the ticket ({:?}, {})",
            record.number,
            record.division_id,
            record.priority
        );
    }
    let mut keys: Vec<String> = model.division_ids.clone();
    keys.push(NO_DIVISION.to_string());
    for key in keys {
        let page = projections::queue::page(db, ORG, &key, ALL, None)
            .await
            .map_err(err)?;
        let shown: Vec<String> = page.entries.iter().map(|e| number(&e.ticket_id)).collect();
        let mut expected: Vec<(&String, &TicketModel)> = model
            .tickets
            .iter()
            .filter(|(id, t)| queued.contains(id) && t.division.clone().unwrap_or_default() == key)
            .collect();
        expected.sort_by_key(|(_, t)| (t.priority.queue_rank(), t.queued_at_step, t.number));
        let expected: Vec<String> = expected.iter().map(|(id, _)| number(id)).collect();
        ensure!(
            shown == expected,
            "queue {key:?} is {shown:?}; by priority then age it should be {expected:?}"
        );
        ensure!(
            page.first_position == 1
                && page.total_count == page.entries.len() as i64
                && !page.has_next_page,
            "queue {key:?}: first position {}, total {}, {} entries, more: {}",
            page.first_position,
            page.total_count,
            page.entries.len(),
            page.has_next_page
        );
        for pair in page.entries.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            ensure!(
                a.priority_rank < b.priority_rank
                    || (a.priority_rank == b.priority_rank && a.waiting_since <= b.waiting_since),
                "queue {key:?}: {} (rank {}, since {}) before {} (rank {}, since {})",
                number(&a.ticket_id),
                a.priority_rank,
                a.waiting_since,
                number(&b.ticket_id),
                b.priority_rank,
                b.waiting_since
            );
        }
        for (i, entry) in page.entries.iter().enumerate() {
            let position = projections::queue::position(db, ORG, &entry.ticket_id)
                .await
                .map_err(err)?;
            ensure!(
                position == Some(i as i64 + 1),
                "queue {key:?}: {} is shown at {} but its position is {position:?}",
                number(&entry.ticket_id),
                i + 1
            );
        }
    }

    // What the step left, for failure reports.
    let mut state: Vec<String> = model
        .agents
        .iter()
        .map(|a| {
            format!(
                "{}{} {}/{} {:?}",
                a.id,
                if a.online { "(on)" } else { "" },
                active[&a.id].len(),
                a.max_tickets,
                numbers(&active[&a.id])
            )
        })
        .collect();
    let mut waiting: Vec<(String, i64, usize, String)> = queued
        .iter()
        .map(|t| {
            let (_, record) = &tickets[*t];
            let label = model.label(record.division_id.as_deref());
            let shown = format!("#{} {} {label}", record.number, record.priority);
            let queued_at = model.tickets[*t].queued_at_step;
            let rank = model.tickets[*t].priority.queue_rank();
            (label, rank, queued_at, shown)
        })
        .collect();
    waiting.sort();
    let queued_numbers: Vec<String> = waiting.into_iter().map(|w| w.3).collect();
    state.push(format!("queued {queued_numbers:?}"));
    model.log.push(format!("    => {}", state.join("; ")));
    model.previously_active = active;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The test.

fn env_number(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

#[test]
fn assignment_keeps_its_invariants_under_random_changes() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let config = ProptestConfig {
        cases: env_number("PROPTEST_CASES", 24),
        max_shrink_iters: env_number("PROPTEST_MAX_SHRINK_ITERS", 256),
        max_shrink_time: 240_000,
        // Failures are reported with their minimal sequence; no regression file is written.
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let started = Instant::now();
    let mut runner = TestRunner::new(config);
    let result = runner.run(&scenario(15..=30), |scenario| {
        runtime
            .block_on(run_case(scenario))
            .map_err(TestCaseError::fail)
    });
    eprintln!("assignment properties: {:?}", started.elapsed());
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, scenario)) => {
            panic!("an invariant broke.\nminimal scenario: {scenario:?}\n{why}")
        }
        Err(TestError::Abort(why)) => panic!("aborted: {why}"),
    }
}
