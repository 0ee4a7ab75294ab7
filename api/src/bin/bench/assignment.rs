//! `--scenario assignment`: how long a ticket waits for an agent while 500 agents are busy
//! and 10,000 tickets are queued.
//!
//! # Set-up (the real command path, [`Helpdesk::start`] in this process)
//!
//! - Two AUTO / ROUND_ROBIN divisions: **backlog** and **express**.
//! - `--agents` agents (default 500), each with `--capacity` slots (default 5, the seed's
//!   default): 10 serve only *express*, the others (490) only *backlog*. Registered offline.
//! - `490 × 5 + --queued + --samples` tickets (default 13,450) are created in *backlog* by
//!   the admin, `--workers` at a time, all MEDIUM, while every agent is offline, so none is
//!   assigned.
//! - Every agent goes online. The assignment process fills each backlog agent (2,450
//!   tickets, oldest first, through the slot saga); the bench waits until the helpdesk is at
//!   rest (see `settle` below) and checks: every backlog agent holds `--capacity` tickets,
//!   `--queued + --samples` (11,000) tickets wait in the backlog queue and nobody can take
//!   them — they genuinely wait. Express agents are free and their queue is empty.
//!
//! # (b) A freed slot is refilled by the assignment process
//!
//! `--samples` times: a backlog agent (the next one, round the list) resolves its oldest
//! ticket. Its slot is the only free one that serves the backlog, so the assignment process
//! — woken by the `TicketResolved` event — releases the slot (`SlotReleased`), reserves it
//! for the head of the backlog queue (`SlotReserved`) and assigns that ticket
//! (`TicketAssigned`). Measured:
//!
//! - from the events' own `occurred_at` stamps (read back from the `events` table):
//!   `TicketResolved` → the agent's next `TicketAssigned` — **the assignment latency** —
//!   and the steps in between (`SlotReleased`, `SlotReserved`);
//! - wall clock: from the start of the `resolveTicket` call until the read model (polled
//!   every millisecond) shows the agent at full capacity again; and the `resolveTicket` call
//!   itself.
//!
//! With `--resolvers 1` (the default) one sample runs at a time and the helpdesk is at rest
//! before each (`settle`), and the bench checks the ticket given was the queue's head. With
//! `--resolvers K`, K agents resolve concurrently. No ticket is created meanwhile, so every
//! refill is the process's doing; the backlog queue shrinks from 11,000 to 10,000.
//!
//! # (a) A new ticket in a queue with a free agent is assigned inline
//!
//! Then, with 10,000 tickets still waiting in *backlog*, `--samples` tickets are created
//! one at a time in *express*, where agents are free. `createTicket` assigns such a ticket
//! itself before answering (the assignment process may race it; the events tell who won).
//! Measured: `TicketCreated` → `TicketAssigned` from the events' `occurred_at`, and wall
//! clock from the start of the `createTicket` call until the read model shows the ticket
//! ASSIGNED (what the GraphQL mutation reads back). After each sample the assignee
//! resolves it (not measured) and the bench waits until the helpdesk is at rest.
//!
//! `occurred_at` is stamped when a command is accepted, before its aggregate is loaded and
//! its event written, so an event-to-event figure starts one write late and ends one write
//! early; the wall-clock figures include every write and the projections.

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, Utc};
use domain::agent::{AgentAction, AgentEvent};
use domain::division::{AssignmentAlgorithm, AssignmentMode, DivisionProfile};
use domain::priority::Priority;
use domain::ticket::{TicketAction, TicketEvent};
use domain::{Actor, Role};
use hdrhistogram::Histogram;
use projections::event_log::{self, StoredEvent};
use projections::{Checkpoint, Database};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use api::auth::Caller;
use api::config::Config;
use api::helpdesk::{Helpdesk, NewTicket};

use super::{
    admin, failed, for_each_concurrently, latency_histogram, micros, on_fresh_databases,
    progress_bar, quantile_columns, quantile_header, Args, ORGANIZATION,
};

/// Agents serving the express division (the rest serve the backlog).
const EXPRESS_AGENTS: usize = 10;

/// How long a freed slot may stay free before the run is declared broken.
const REFILL_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the helpdesk may take to come to rest between samples.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

/// How long the assignment process may take to fill every backlog agent at set-up.
const FILL_TIMEOUT: Duration = Duration::from_secs(1800);

/// How long the log must stay unchanged for the helpdesk to count as at rest.
const QUIET: Duration = Duration::from_millis(100);

/// How often the read model is polled for a refill.
const POLL: Duration = Duration::from_millis(1);

/// The figures of one backend.
pub struct AssignmentRun {
    /// `postgres` or `sqlite`.
    backend: &'static str,
    /// The wall time of the set-up.
    setup: Duration,
    /// Tickets created at set-up.
    created: u64,
    /// Backlog tickets waiting before (b), after (b) and after (a).
    queued: [i64; 3],
    /// (b): its figures.
    freed: Freed,
    /// (a): its figures.
    fresh: Fresh,
}

/// (b): a freed slot refilled by the assignment process. Histograms in microseconds.
struct Freed {
    /// `TicketResolved` → the agent's next `TicketAssigned` (events' `occurred_at`).
    assigned: Histogram<u64>,
    /// `TicketResolved` → the agent's `SlotReleased`.
    released: Histogram<u64>,
    /// `TicketResolved` → the agent's next `SlotReserved`.
    reserved: Histogram<u64>,
    /// `resolveTicket` call start → the read model shows the agent full again.
    observed: Histogram<u64>,
    /// The `resolveTicket` call.
    resolve_call: Histogram<u64>,
    /// Samples whose refill was not the queue's head (checked with one resolver only).
    not_head: u64,
    /// Resolutions without a later assignment to the same agent in the log.
    unpaired: usize,
    /// Assignments of the refills made by someone else than the assignment process.
    not_by_process: u64,
    /// The wall time of the whole measurement (for refills per second).
    elapsed: Duration,
}

/// (a): a new ticket assigned at creation. Histograms in microseconds.
struct Fresh {
    /// `TicketCreated` → `TicketAssigned` (events' `occurred_at`).
    assigned: Histogram<u64>,
    /// `createTicket` call start → the read model shows the ticket ASSIGNED.
    observed: Histogram<u64>,
    /// The `createTicket` call alone.
    create_call: Histogram<u64>,
    /// Tickets the assignment process assigned rather than `createTicket` itself.
    by_process: u64,
    /// Created tickets without an assignment in the log.
    unpaired: usize,
}

/// The divisions and agents of the set-up.
struct Layout {
    backlog: String,
    express: String,
    backlog_agents: Vec<String>,
    express_agents: Vec<String>,
}

/// Runs the scenario on the backends `--backend` selects.
pub async fn run(args: &Args) -> anyhow::Result<Vec<AssignmentRun>> {
    if args.resolvers as usize * 2 > args.agents as usize - EXPRESS_AGENTS {
        bail!("--resolvers must be at most half the backlog agents");
    }
    on_fresh_databases(args, "bench_assign", |backend, url| async move {
        measure(backend, &url, args).await
    })
    .await
}

/// Starts a helpdesk on `url`, sets it up and measures.
async fn measure(backend: &'static str, url: &str, args: &Args) -> anyhow::Result<AssignmentRun> {
    let config = Config::from_lookup(|key| (key == "DATABASE_URL").then(|| url.to_string()))
        .context("building the helpdesk configuration")?;
    let shutdown = CancellationToken::new();
    let (helpdesk, tasks) = Helpdesk::start(&config, shutdown.clone())
        .await
        .with_context(|| format!("starting the helpdesk on {backend}"))?;
    let measured = measure_on(backend, &helpdesk, args).await;
    shutdown.cancel();
    for task in tasks {
        let _ = task.await;
    }
    helpdesk.db.close().await;
    measured
}

async fn measure_on(
    backend: &'static str,
    helpdesk: &Arc<Helpdesk>,
    args: &Args,
) -> anyhow::Result<AssignmentRun> {
    eprintln!("assignment / {backend}: set-up");
    let started = Instant::now();
    let (layout, created) = set_up(helpdesk, args).await?;
    let setup = started.elapsed();
    eprintln!(
        "assignment / {backend}: set up in {:.0} s",
        setup.as_secs_f64()
    );
    let db = &helpdesk.db;
    let queued_before = waiting(db, &layout.backlog).await?;
    eprintln!("assignment / {backend}: (b) freed slots, {queued_before} tickets queued");
    let freed = measure_freed_slots(helpdesk, &layout, args).await?;
    let queued_between = waiting(db, &layout.backlog).await?;
    eprintln!("assignment / {backend}: (a) new tickets, {queued_between} tickets queued");
    let fresh = measure_fresh_tickets(helpdesk, &layout, args).await?;
    let queued_after = waiting(db, &layout.backlog).await?;
    Ok(AssignmentRun {
        backend,
        setup,
        created,
        queued: [queued_before, queued_between, queued_after],
        freed,
        fresh,
    })
}

/// Builds the state described in the module documentation; returns it and the number of
/// tickets created.
async fn set_up(helpdesk: &Arc<Helpdesk>, args: &Args) -> anyhow::Result<(Layout, u64)> {
    let capacity = args.capacity as i64;
    let backlog = create_division(helpdesk, "Backlog").await?;
    let express = create_division(helpdesk, "Express").await?;
    let backlog_count = args.agents as usize - EXPRESS_AGENTS;
    let layout = Layout {
        backlog_agents: (0..backlog_count)
            .map(|n| format!("bench-agent-{n:04}"))
            .collect(),
        express_agents: (0..EXPRESS_AGENTS)
            .map(|n| format!("bench-express-{n:02}"))
            .collect(),
        backlog,
        express,
    };
    let agents: Vec<(&String, &String)> = layout
        .backlog_agents
        .iter()
        .map(|a| (a, &layout.backlog))
        .chain(layout.express_agents.iter().map(|a| (a, &layout.express)))
        .collect();
    for_each_concurrently(
        "agents registered",
        agents.len() as u64,
        args.workers,
        |i| {
            let (agent, division) = agents[i as usize];
            async move {
                helpdesk
                    .register_agent(
                        &admin(),
                        &format!("bench-register-{agent}"),
                        Some(agent.clone()),
                        format!("Bench {agent}"),
                        capacity,
                        vec![division.clone()],
                    )
                    .await
                    .map_err(|e| failed("registerAgent", &e))?;
                Ok(())
            }
        },
    )
    .await?;
    let to_fill = backlog_count as u64 * args.capacity;
    let tickets = to_fill + args.queued + args.samples;
    for_each_concurrently("backlog tickets created", tickets, args.workers, |i| {
        let division = layout.backlog.clone();
        async move {
            create_ticket(helpdesk, &format!("bench-backlog-{i}"), &division).await?;
            Ok(())
        }
    })
    .await?;
    for_each_concurrently("agents online", agents.len() as u64, args.workers, |i| {
        let (agent, _) = agents[i as usize];
        async move {
            helpdesk
                .on_agent(
                    &agent_caller(agent),
                    &format!("bench-online-{agent}"),
                    agent,
                    AgentAction::GoOnline,
                )
                .await
                .map_err(|e| failed("goOnline", &e))?;
            Ok(())
        }
    })
    .await?;
    // The assignment process fills the backlog agents now.
    let progress = progress_bar(to_fill, "backlog slots filled by the assignment process")?;
    let started = Instant::now();
    loop {
        let active = active_in_organization(&helpdesk.db).await?;
        progress.set_position(active.max(0) as u64);
        if active as u64 >= to_fill {
            break;
        }
        if started.elapsed() > FILL_TIMEOUT {
            bail!("the assignment process filled {active} of {to_fill} slots in {FILL_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    progress.finish_and_clear();
    settle(helpdesk).await?;
    // The state the measurements rely on.
    let active = active_in_organization(&helpdesk.db).await?;
    let backlog_waiting = waiting(&helpdesk.db, &layout.backlog).await?;
    let express_waiting = waiting(&helpdesk.db, &layout.express).await?;
    let expected = (args.queued + args.samples) as i64;
    if active as u64 != to_fill || backlog_waiting != expected || express_waiting != 0 {
        bail!(
            "set-up: {active} active tickets (expected {to_fill}), {backlog_waiting} waiting in \
             backlog (expected {expected}), {express_waiting} in express (expected 0)"
        );
    }
    for agent in &layout.backlog_agents {
        let held = active_of(&helpdesk.db, agent).await?;
        if held != capacity {
            bail!("set-up: agent {agent} holds {held} tickets, expected {capacity}");
        }
    }
    Ok((layout, tickets))
}

/// (b): `--samples` freed slots, `--resolvers` at a time.
async fn measure_freed_slots(
    helpdesk: &Arc<Helpdesk>,
    layout: &Layout,
    args: &Args,
) -> anyhow::Result<Freed> {
    let from = event_log::log_head(&helpdesk.db).await?;
    let sequential = args.resolvers == 1;
    let progress = progress_bar(args.samples, "freed slots refilled")?;
    let walls = Mutex::new((latency_histogram()?, latency_histogram()?, 0u64));
    let next = AtomicU64::new(0);
    // The resolvers run as futures of this one task: they mostly wait for the database.
    let resolver = || async {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= args.samples {
                return anyhow::Ok(());
            }
            let agent = &layout.backlog_agents[i as usize % layout.backlog_agents.len()];
            let sample = free_one_slot(helpdesk, agent, &layout.backlog, i, sequential).await?;
            {
                let mut walls = walls.lock().unwrap_or_else(|e| e.into_inner());
                walls.0.saturating_record(micros(sample.resolve_call));
                walls.1.saturating_record(micros(sample.observed));
                walls.2 += u64::from(!sample.was_head);
            }
            if sequential {
                settle(helpdesk).await?;
            }
            progress.inc(1);
        }
    };
    let started = Instant::now();
    let resolved = futures::future::try_join_all((0..args.resolvers).map(|_| resolver())).await;
    let elapsed = started.elapsed();
    progress.finish_and_clear();
    resolved.context("(b) freed slots")?;
    settle(helpdesk).await?;
    let (resolve_call, observed, not_head) = walls.into_inner().unwrap_or_else(|e| e.into_inner());
    let backlog_agents: HashSet<&str> = layout.backlog_agents.iter().map(String::as_str).collect();
    let mut freed = pair_freed_slots(&events_after(&helpdesk.db, from).await?, &backlog_agents)?;
    freed.resolve_call = resolve_call;
    freed.observed = observed;
    freed.not_head = not_head;
    freed.elapsed = elapsed;
    Ok(freed)
}

/// One sample of (b): what the resolving side saw.
struct FreedSample {
    resolve_call: Duration,
    observed: Duration,
    /// Whether the refill was the queue's head (always true when not checked).
    was_head: bool,
}

/// `agent` resolves its oldest ticket; waits until its slot is taken again.
async fn free_one_slot(
    helpdesk: &Helpdesk,
    agent: &str,
    backlog: &str,
    i: u64,
    check_head: bool,
) -> anyhow::Result<FreedSample> {
    let db = &helpdesk.db;
    let before = active_of(db, agent).await?;
    let ticket = oldest_active(db, agent)
        .await?
        .ok_or_else(|| anyhow!("agent {agent} holds no ticket to resolve"))?;
    let head = if check_head {
        projections::queue::heads(db, ORGANIZATION, backlog, 1)
            .await?
            .into_iter()
            .next()
            .map(|(id, _)| id)
    } else {
        None
    };
    let started = Instant::now();
    helpdesk
        .on_ticket(
            &agent_caller(agent),
            &format!("bench-resolve-{i}"),
            &ticket,
            TicketAction::Resolve {
                resolution: Some("Cleared the paper path.".into()),
            },
        )
        .await
        .map_err(|e| failed("resolveTicket", &e))?;
    let resolve_call = started.elapsed();
    while active_of(db, agent).await? < before {
        if started.elapsed() > REFILL_TIMEOUT {
            bail!("agent {agent}'s freed slot was not refilled within {REFILL_TIMEOUT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
    let observed = started.elapsed();
    let was_head = match head {
        None => true,
        Some(head) => {
            let record = projections::tickets::ticket(db, ORGANIZATION, &head).await?;
            record.and_then(|r| r.assignee_id).as_deref() == Some(agent)
        }
    };
    Ok(FreedSample {
        resolve_call,
        observed,
        was_head,
    })
}

/// Pairs every backlog agent's `TicketResolved` with its next `SlotReleased`,
/// `SlotReserved` and `TicketAssigned`, in log order.
fn pair_freed_slots(events: &[StoredEvent], agents: &HashSet<&str>) -> anyhow::Result<Freed> {
    struct Pending {
        resolved_at: DateTime<Utc>,
        released: bool,
        reserved: bool,
    }
    let mut freed = Freed {
        assigned: latency_histogram()?,
        released: latency_histogram()?,
        reserved: latency_histogram()?,
        observed: latency_histogram()?,
        resolve_call: latency_histogram()?,
        not_head: 0,
        unpaired: 0,
        not_by_process: 0,
        elapsed: Duration::ZERO,
    };
    let mut pending: HashMap<String, Pending> = HashMap::new();
    for event in events {
        match event.aggregate_type.as_str() {
            "Ticket" => match event.decode::<TicketEvent>()? {
                TicketEvent::TicketResolved {
                    agent_id: Some(agent),
                    ..
                } if agents.contains(agent.as_str()) => {
                    pending.insert(
                        agent,
                        Pending {
                            resolved_at: event.occurred_at(),
                            released: false,
                            reserved: false,
                        },
                    );
                }
                TicketEvent::TicketAssigned { agent_id, .. } => {
                    if let Some(p) = pending.remove(&agent_id) {
                        freed
                            .assigned
                            .saturating_record(between(p.resolved_at, event.occurred_at()));
                        if event.metadata.actor != api::assignment::system_actor()
                            || !event.metadata.request_id.starts_with("assignment-")
                        {
                            freed.not_by_process += 1;
                        }
                    }
                }
                _ => {}
            },
            "AgentStatus" => {
                let Some(p) = pending.get_mut(&event.aggregate_id) else {
                    continue;
                };
                match event.decode::<AgentEvent>()? {
                    AgentEvent::SlotReleased { .. } if !p.released => {
                        p.released = true;
                        freed
                            .released
                            .saturating_record(between(p.resolved_at, event.occurred_at()));
                    }
                    AgentEvent::SlotReserved { .. } if !p.reserved => {
                        p.reserved = true;
                        freed
                            .reserved
                            .saturating_record(between(p.resolved_at, event.occurred_at()));
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    freed.unpaired = pending.len();
    Ok(freed)
}

/// (a): `--samples` tickets created one at a time in the express division.
async fn measure_fresh_tickets(
    helpdesk: &Arc<Helpdesk>,
    layout: &Layout,
    args: &Args,
) -> anyhow::Result<Fresh> {
    let db = &helpdesk.db;
    let from = event_log::log_head(db).await?;
    let mut create_call = latency_histogram()?;
    let mut observed = latency_histogram()?;
    let progress = progress_bar(args.samples, "express tickets created")?;
    for i in 0..args.samples {
        let started = Instant::now();
        let id = create_ticket(helpdesk, &format!("bench-express-{i}"), &layout.express).await?;
        create_call.saturating_record(micros(started.elapsed()));
        // What the GraphQL mutation reads back; polled in case the process won the race.
        let assignee = loop {
            let record = projections::tickets::ticket(db, ORGANIZATION, &id).await?;
            if let Some(agent) = record.and_then(|r| r.assignee_id) {
                break agent;
            }
            if started.elapsed() > REFILL_TIMEOUT {
                bail!("express ticket {id} was not assigned within {REFILL_TIMEOUT:?}");
            }
            tokio::time::sleep(POLL).await;
        };
        observed.saturating_record(micros(started.elapsed()));
        // Free the slot again (not measured) and let the helpdesk come to rest.
        helpdesk
            .on_ticket(
                &agent_caller(&assignee),
                &format!("bench-express-resolve-{i}"),
                &id,
                TicketAction::Resolve { resolution: None },
            )
            .await
            .map_err(|e| failed("resolveTicket", &e))?;
        settle(helpdesk).await?;
        progress.inc(1);
    }
    progress.finish_and_clear();
    let mut fresh = pair_fresh_tickets(&events_after(db, from).await?, &layout.express)?;
    fresh.create_call = create_call;
    fresh.observed = observed;
    Ok(fresh)
}

/// Pairs every express `TicketCreated` with the ticket's `TicketAssigned`.
fn pair_fresh_tickets(events: &[StoredEvent], express: &str) -> anyhow::Result<Fresh> {
    let mut fresh = Fresh {
        assigned: latency_histogram()?,
        observed: latency_histogram()?,
        create_call: latency_histogram()?,
        by_process: 0,
        unpaired: 0,
    };
    // ticket id -> (created at, the creating request)
    let mut created: HashMap<&str, (DateTime<Utc>, &str)> = HashMap::new();
    for event in events.iter().filter(|e| e.aggregate_type == "Ticket") {
        match event.decode::<TicketEvent>()? {
            TicketEvent::TicketCreated { division_id, .. }
                if division_id.as_deref() == Some(express) =>
            {
                created.insert(
                    &event.aggregate_id,
                    (event.occurred_at(), &event.metadata.request_id),
                );
            }
            TicketEvent::TicketAssigned { .. } => {
                if let Some((at, request)) = created.remove(event.aggregate_id.as_str()) {
                    fresh
                        .assigned
                        .saturating_record(between(at, event.occurred_at()));
                    // createTicket assigns under its own request id; the process under its own.
                    if event.metadata.request_id != request {
                        fresh.by_process += 1;
                    }
                }
            }
            _ => {}
        }
    }
    fresh.unpaired = created.len();
    Ok(fresh)
}

/// Microseconds from `earlier` to `later` (0 if the clock says otherwise).
fn between(earlier: DateTime<Utc>, later: DateTime<Utc>) -> u64 {
    (later - earlier)
        .num_microseconds()
        .map_or(0, |us| us.max(0) as u64)
}

/// Every event after `from`, in log order.
async fn events_after(db: &Database, from: Checkpoint) -> anyhow::Result<Vec<StoredEvent>> {
    let mut events = Vec::new();
    let mut cursor = from;
    loop {
        let batch = event_log::read_after(db, cursor, 5000).await?;
        let Some(last) = batch.last() else {
            return Ok(events);
        };
        cursor = last.checkpoint;
        events.extend(batch);
    }
}

/// Waits until the helpdesk is at rest: every projection has applied the whole log and the
/// log has then not grown for [`QUIET`] (time for the assignment process to act on what the
/// projections show).
///
/// Not [`Helpdesk::settle`]: that future holds a `tokio::sync::watch::Ref` of the assignment
/// process's progress across an `.await` (`event_log::log_head`), so it is not `Send`, and
/// the process's `send_replace` blocks its runtime thread meanwhile — with this bench's two
/// worker threads that deadlocked the whole runtime (seen in gdb: a worker parked in
/// `RawRwLock::lock_exclusive_slow` under `api::assignment::run`).
async fn settle(helpdesk: &Helpdesk) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let head = event_log::log_head(&helpdesk.db).await?;
        let left = deadline.saturating_duration_since(Instant::now());
        if let Err(lagging) = helpdesk.progress.wait_for_all(head, left).await {
            bail!("the helpdesk did not come to rest within {SETTLE_TIMEOUT:?}: {lagging}");
        }
        tokio::time::sleep(QUIET).await;
        if event_log::log_head(&helpdesk.db).await? == head {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the helpdesk did not come to rest within {SETTLE_TIMEOUT:?}");
        }
    }
}

/// An AUTO, ROUND_ROBIN division.
async fn create_division(helpdesk: &Helpdesk, name: &str) -> anyhow::Result<String> {
    let profile = DivisionProfile {
        name: name.into(),
        description: None,
        keywords: vec![],
        position: None,
        assignment_mode: AssignmentMode::Auto,
        algorithm: AssignmentAlgorithm::RoundRobin,
        avg_handling_minutes: 10,
    };
    helpdesk
        .create_division(&admin(), &format!("bench-division-{name}"), profile)
        .await
        .map_err(|e| failed("createDivision", &e))
}

/// The admin opens a MEDIUM ticket in `division`; returns its id.
async fn create_ticket(
    helpdesk: &Helpdesk,
    request_id: &str,
    division: &str,
) -> anyhow::Result<String> {
    let input = NewTicket {
        subject: format!("Bench ticket {request_id}: printer jammed"),
        description: Some("The printer on floor 3 shows error E-42.".into()),
        priority: Some(Priority::Medium),
        division_id: Some(division.to_string()),
    };
    helpdesk
        .create_ticket(&admin(), request_id, input)
        .await
        .map(|ticket| ticket.id)
        .map_err(|e| failed("createTicket", &e))
}

/// The agent `id` acting for itself.
fn agent_caller(id: &str) -> Caller {
    Caller {
        organization: ORGANIZATION.into(),
        actor: Actor::new(id, Role::Agent),
    }
}

/// One `COUNT(*)` (or other single integer) over the read model.
async fn scalar(db: &Database, sql: &str, binds: &[&str]) -> anyhow::Result<i64> {
    Ok(projections::on_backend!(db, |pool| {
        let mut query = sqlx::query_scalar::<_, i64>(sql);
        for value in binds {
            query = query.bind(*value);
        }
        query.fetch_one(pool).await?
    }))
}

/// Tickets waiting in `division`'s queue.
async fn waiting(db: &Database, division: &str) -> anyhow::Result<i64> {
    scalar(
        db,
        "SELECT COUNT(*) FROM queue_entries WHERE organization_id = $1 AND division_key = $2",
        &[ORGANIZATION, division],
    )
    .await
}

/// Active (assigned or in progress) tickets in the organization.
async fn active_in_organization(db: &Database) -> anyhow::Result<i64> {
    scalar(
        db,
        "SELECT COUNT(*) FROM tickets
          WHERE organization_id = $1 AND status IN ('ASSIGNED', 'IN_PROGRESS')",
        &[ORGANIZATION],
    )
    .await
}

/// Active tickets of `agent`.
async fn active_of(db: &Database, agent: &str) -> anyhow::Result<i64> {
    scalar(
        db,
        "SELECT COUNT(*) FROM tickets
          WHERE organization_id = $1 AND assignee_id = $2 AND status IN ('ASSIGNED', 'IN_PROGRESS')",
        &[ORGANIZATION, agent],
    )
    .await
}

/// The oldest active ticket of `agent`.
async fn oldest_active(db: &Database, agent: &str) -> anyhow::Result<Option<String>> {
    Ok(projections::on_backend!(db, |pool| {
        sqlx::query_scalar::<_, String>(
            "SELECT id FROM tickets
              WHERE organization_id = $1 AND assignee_id = $2
                AND status IN ('ASSIGNED', 'IN_PROGRESS')
              ORDER BY number LIMIT 1",
        )
        .bind(ORGANIZATION)
        .bind(agent)
        .fetch_optional(pool)
        .await?
    }))
}

/// Prints the table on stdout.
pub fn print_report(args: &Args, runs: &[AssignmentRun]) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "\nassignment: {} agents ({} backlog + {EXPRESS_AGENTS} express), {} slots each, \
         {} samples, {} resolver(s), {} set-up workers, {cores} cores",
        args.agents,
        args.agents as usize - EXPRESS_AGENTS,
        args.capacity,
        args.samples,
        args.resolvers,
        args.workers
    );
    for run in runs {
        println!(
            "{}: set-up {:.0} s ({} tickets created); backlog queue {} -> {} during (b), {} during (a)",
            run.backend,
            run.setup.as_secs_f64(),
            run.created,
            run.queued[0],
            run.queued[1],
            run.queued[2],
        );
    }
    println!("\n{:<9} {:<58} {}", "backend", "measure", quantile_header());
    for run in runs {
        let rows: [(&str, &Histogram<u64>); 8] = [
            (
                "(b) TicketResolved -> TicketAssigned (freed slot refilled)",
                &run.freed.assigned,
            ),
            ("    TicketResolved -> SlotReleased", &run.freed.released),
            ("    TicketResolved -> SlotReserved", &run.freed.reserved),
            (
                "    wall: resolveTicket start -> refill visible",
                &run.freed.observed,
            ),
            ("    wall: resolveTicket call", &run.freed.resolve_call),
            (
                "(a) TicketCreated -> TicketAssigned (agent free)",
                &run.fresh.assigned,
            ),
            (
                "    wall: createTicket start -> ASSIGNED visible",
                &run.fresh.observed,
            ),
            ("    wall: createTicket call", &run.fresh.create_call),
        ];
        for (measure, histogram) in rows {
            println!(
                "{:<9} {:<58} {}",
                run.backend,
                measure,
                quantile_columns(histogram)
            );
        }
    }
    println!();
    for run in runs {
        println!(
            "{}: (b) {:.1} refills/s over {:.0} s; {} refills not by the assignment process, \
             {} not the queue head, {} resolutions without a refill in the log; (a) {} of {} \
             assigned by the process rather than createTicket, {} without an assignment in the \
             log",
            run.backend,
            run.freed.assigned.len() as f64 / run.freed.elapsed.as_secs_f64().max(f64::EPSILON),
            run.freed.elapsed.as_secs_f64(),
            run.freed.not_by_process,
            run.freed.not_head,
            run.freed.unpaired,
            run.fresh.by_process,
            run.fresh.assigned.len(),
            run.fresh.unpaired,
        );
    }
}
