//! `--scenario board`: the kanban board of a pipeline of 10 stages holding `--board-cards`
//! (50,000) cards — the first page of every column, as the GraphQL `board` query answers it
//! — and card moves end to end (`moveCard`), issue 6.
//!
//! # Set-up (per backend, on a fresh database)
//!
//! The real [`Helpdesk`] runs in this process with its defaults, except
//! `HELPDESK_OUTBOX_DELIVERY=off` (there is no provider to deliver to): projection runners,
//! the assignment, conversation and pipeline processes all live. Then:
//!
//! 1. **Through the command API** (`--workers` (8) at a time where it matters): escalation of
//!    unanswered conversations turned off (`escalationAfterSeconds` 0, so no ticket changes
//!    hands while the bench runs), 11 agents registered (offline, 100 tickets each), one
//!    pipeline with 10 stages (`New lead` … `Won`, `Lost`; no automation), and one ticket
//!    per [`TICKET_EVERY`] (50) cards — 1,000 — created and assigned by the admin to an
//!    agent, round robin.
//! 2. **Events decided by the real aggregates, written to the log in bulk.** For every card
//!    `i`: a WhatsApp customer with a key of their own (a `customer_keys` row, as
//!    `personal_data::key_for` stores it); the [`Conversation`] aggregate handles the
//!    customer's first message (`Receive`, name and text sealed with that key →
//!    `ConversationStarted`, `MessageReceived`) and, for every 50th, `LinkTicket` with one of
//!    the tickets above (`TicketLinked`); the [`Card`] aggregate handles `Place` with the
//!    stage reference of the pipelines aggregate as the helpdesk loads it (stage `i mod 10`,
//!    at the end → `CardPlaced`, so every column holds 5,000 cards) and, for a third of the
//!    cards, one or two `AddLabel` (`CardLabelAdded`). The ids are the helpdesk's own
//!    (`derived_id` of channel and handle, `pipelines::card_id`), the metadata what the
//!    commands would stamp (the channel's service actor, the placing agent), `occurred_at`
//!    spread over the past 30 days. The events (172,112) are appended in `INSERT`s of 500
//!    rows, one after the other, through the log's own columns and triggers (global
//!    position, NOTIFY), while the projections run. Deciding them through the command path
//!    instead (`receiveMessage` + `placeCard` per card, each waiting for the projections)
//!    would take far longer than this bench may run, and would measure nothing the scenario
//!    is about.
//! 3. **The projections catch up** by themselves (conversations, outbox, chatbot,
//!    notifications, pipelines, …; the conversation process announces the 1,000
//!    assignments to their customers): the bench waits until every projection has applied
//!    the whole log and nothing is left to announce. On PostgreSQL it runs `ANALYZE` on the
//!    pipelines projection's tables every [`ANALYSE_EVERY`] (10 s) meanwhile — what
//!    autovacuum does once a table has grown by a tenth, but checked every minute — because
//!    the projection's `SELECT MAX(rank) … AND id <> $3` (placing a card last) gets a
//!    generic plan while `board_cards` is empty, an aggregate over the whole stage rather
//!    than the last index entry, and keeps it until the table's statistics change: each
//!    placement then reads its whole column (3.7 ms for 5,000 cards in `psql`), and the
//!    catch-up took 324 s (with 2,500 tickets) instead of 108-132 s. Every row count is
//!    then checked (conversations, messages, announcements, cards, labels, linked and
//!    assigned tickets, stage counts). PostgreSQL: `VACUUM (ANALYZE)` (what autovacuum
//!    would have done by then). SQLite: nothing — the helpdesk never runs `ANALYZE` or
//!    `PRAGMA optimize`, so a production file has no statistics either.
//!
//! Seeding took 2.8-3.5 min on PostgreSQL and 1.2-1.4 min on SQLite on the 2-core VM of
//! `docs/performance.md` under a load average of 6-12 (each phase is printed); the whole
//! scenario about 5.5 min for both backends.
//!
//! # What is measured
//!
//! - **board**: `--board-requests` (200) GraphQL requests, one at a time, as an admin:
//!   `board(pipelineId, first: 20)` selecting per column the stage, `count`, `hasMore`,
//!   `endCursor` and per card `id customerName lastMessage assignee { name } labels
//!   enteredStageAt`. Each request runs through [`api::graphql::build_schema`] with the
//!   [`RequestContext`] the server would give it (parse, validation, resolvers — the
//!   statements and the opening of sealed names and messages — and the response serialized
//!   to JSON bytes as the HTTP handler would); no HTTP, no JWT check. Every answer is checked
//!   card by card against what was seeded (order, names, last messages, labels, assignees,
//!   counts); a wrong answer fails the run.
//! - **board statements only**: the same number of calls of the `projections` functions the
//!   resolver makes (pipeline, stages twice, one `pipelines::cards` page per column, labels,
//!   agents, customer keys), to tell the SQL from the GraphQL layer; with the time of each
//!   column's page by stage.
//! - **moveCard**: `--board-moves` (500) `moveCard(cardId, toStageId, position)` mutations
//!   through the same schema, from `--board-clients` (4) concurrent clients (each an agent,
//!   moving cards of its own share so that no two clients move the same card), selecting
//!   the card as the board shows it. A random card to a random stage (its own stage a tenth
//!   of the time: a reorder) at a random position from 0 to the column's length. The
//!   mutation returns after the command is written and every projection shows it
//!   (read-your-writes), then reads the card: that is the latency. Afterwards every moved
//!   card must be in the stage it was last moved to and every stage's `card_count` must equal
//!   its cards.
//! - **moves one at a time, taken apart**: [`SEQUENTIAL_MOVES`] (100) `moveCard` through
//!   GraphQL and as many `Helpdesk::move_card` calls (the reads, the command, the
//!   read-your-writes wait; no GraphQL, no reading the card back), alternating, one client;
//!   before each, the two aggregate loads `move_card` starts with (the card, the
//!   organization's pipelines), timed on their own.
//!
//! µs resolution, HdrHistogram. With `--explain` the statements of one board and of
//! applying one move (in a transaction rolled back) are run seven times more on a
//! connection with `auto_explain` (PostgreSQL; the last run's plans are printed, by then
//! the prepared statements may use generic plans, as in the measured loop), and SQLite's
//! `EXPLAIN QUERY PLAN` of the same statement texts. The load average (`/proc/loadavg`) is
//! printed before and after each backend.

use anyhow::{anyhow, bail, Context};
use async_graphql::{Request, Variables};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Duration as TimeDelta, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use domain::conversation::{Channel, Conversation, ConversationAction, Inbound};
use domain::metadata::EventMetadata;
use domain::pipeline::{Card, CardAction};
use domain::queue_settings::QueueSettingsChanges;
use domain::{Actor, Command, Role};
use hdrhistogram::Histogram;
use projections::db::{timestamp, Backend};
use projections::event_log::{self, Checkpoint, StoredEvent};
use projections::personal_data::{self, CustomerKey};
use projections::pipelines::{BoardFilter, PipelinesProjection};
use projections::runner::Projection;
use projections::{on_backend, Database};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use api::auth::Caller;
use api::config::Config;
use api::conversations::{channel_caller, channel_id, derived_id};
use api::graphql::{build_schema, HelpdeskSchema, RequestContext};
use api::helpdesk::{Helpdesk, NewTicket};
use api::pipelines::{card_id, NewStage};

use super::{
    admin, failed, for_each_concurrently, latency_histogram, loadavg, micros, on_fresh_databases,
    progress_bar, quantile_columns, quantile_header, Args, ORGANIZATION,
};

/// The pipeline's stages, in order; the last two are final stages.
const STAGES: [&str; 10] = [
    "New lead",
    "Contacted",
    "Qualified",
    "Demo scheduled",
    "Proposal sent",
    "Negotiation",
    "Contract sent",
    "Onboarding",
    "Won",
    "Lost",
];

/// One card in this many has a ticket, assigned to an agent.
const TICKET_EVERY: usize = 50;

/// Tickets each agent may hold (the most an agent may).
const AGENT_CAPACITY: i64 = domain::agent::MAX_MAX_TICKETS;

/// The labels cards carry.
const LABELS: [&str; 5] = ["vip", "renewal", "enterprise", "follow-up", "trial"];

/// The board's page (the GraphQL default).
const PAGE: usize = 20;

/// Rows per insert statement.
const BATCH: usize = 500;

/// How long seeding may take to come to rest.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// PostgreSQL: how often the pipelines projection's tables are analysed while the
/// projections catch up.
const ANALYSE_EVERY: Duration = Duration::from_secs(10);

/// Moves of the one-client breakdown.
const SEQUENTIAL_MOVES: u64 = 100;

/// How long the log must stay still for the helpdesk to count as at rest.
const QUIET: Duration = Duration::from_millis(500);

/// `--explain`: runs of each explained statement group; the last one's plans are printed.
const EXPLAIN_RUNS: usize = 7;

/// The GraphQL `board` request measured.
const BOARD_QUERY: &str = "query Board($pipelineId: ID!) {
  board(pipelineId: $pipelineId, first: 20) {
    pipeline { id name }
    stages {
      stage { id name position cardCount }
      count
      hasMore
      endCursor
      cards { id customerName lastMessage assignee { name } labels enteredStageAt }
    }
  }
}";

/// The GraphQL `moveCard` mutation measured.
const MOVE_MUTATION: &str = "mutation Move($cardId: ID!, $toStageId: ID!, $position: Int) {
  moveCard(cardId: $cardId, toStageId: $toStageId, position: $position) {
    id stageId customerName lastMessage assignee { name } labels enteredStageAt
  }
}";

/// The figures of one backend.
pub struct BoardRun {
    backend: &'static str,
    setup: Setup,
    /// What the seeded board holds.
    shape: Shape,
    /// `board`, GraphQL, µs.
    board: Histogram<u64>,
    /// The projection calls the resolver makes, µs.
    statements: Histogram<u64>,
    /// Of those, each column's page by stage index, µs.
    columns: Vec<Histogram<u64>>,
    /// `moveCard`, GraphQL, µs.
    moves: Histogram<u64>,
    /// The moves' wall time.
    moves_wall: Duration,
    /// Moves within the card's own stage.
    reorders: u64,
    /// The one-client breakdown.
    alone: MovesAlone,
    /// Cards found elsewhere than where they were last moved, stages whose count disagreed.
    misplaced: usize,
    miscounted: usize,
    /// `/proc/loadavg` before and after.
    load: (String, String),
    /// `--explain`: the plans, as printed.
    plans: String,
}

/// How long each part of the set-up took.
#[derive(Default)]
struct Setup {
    /// Agents, pipeline, stages, tickets through the command API.
    api: Duration,
    /// Deciding the events and appending them.
    events: Duration,
    events_written: usize,
    /// From the last append until the helpdesk was at rest.
    catch_up: Duration,
    /// PostgreSQL `VACUUM (ANALYZE)`.
    analyse: Duration,
}

impl Setup {
    fn total(&self) -> Duration {
        self.api + self.events + self.catch_up + self.analyse
    }
}

/// What the board holds.
struct Shape {
    cards: usize,
    tickets: usize,
    labelled: usize,
    /// Cards on the first pages, of them with an assignee and with labels.
    shown: usize,
    shown_assigned: usize,
    shown_labelled: usize,
}

/// What was seeded: the ids, and the order of every column.
struct Seed {
    pipeline_id: String,
    /// Stage ids, in order.
    stages: Vec<String>,
    /// Card ids by card number.
    cards: Vec<String>,
    /// Agent ids; ticket `t` belongs to agent `t mod agents`.
    agents: Vec<String>,
    /// Ticket ids; ticket `t` is linked to card `t * TICKET_EVERY`.
    tickets: Vec<String>,
}

impl Seed {
    /// The card numbers of stage `s`, in board order (placement order).
    fn column(&self, s: usize) -> impl Iterator<Item = usize> + '_ {
        (s..self.cards.len()).step_by(STAGES.len())
    }
}

/// Runs the scenario on the backends `--backend` selects.
pub async fn run(args: &Args) -> anyhow::Result<Vec<BoardRun>> {
    // The statement texts captured on PostgreSQL, for SQLite's `EXPLAIN QUERY PLAN`.
    let captured: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let captured = &captured;
    on_fresh_databases(args, "bench_board", |backend, url| async move {
        measure(backend, &url, args, captured).await
    })
    .await
}

/// Starts a helpdesk on `url`, seeds it and measures.
async fn measure(
    backend: &'static str,
    url: &str,
    args: &Args,
    captured: &Mutex<Vec<String>>,
) -> anyhow::Result<BoardRun> {
    let vars: HashMap<&str, String> = HashMap::from([
        ("DATABASE_URL", url.to_string()),
        ("HELPDESK_OUTBOX_DELIVERY", "off".to_string()),
    ]);
    let config = Config::from_lookup(|key| vars.get(key).cloned())
        .context("building the helpdesk configuration")?;
    let shutdown = CancellationToken::new();
    let (helpdesk, tasks) = Helpdesk::start(&config, shutdown.clone())
        .await
        .with_context(|| format!("starting the helpdesk on {backend}"))?;
    let measured = measure_on(backend, &helpdesk, url, args, captured).await;
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
    url: &str,
    args: &Args,
    captured: &Mutex<Vec<String>>,
) -> anyhow::Result<BoardRun> {
    let load_before = loadavg();
    let size = args.board_cards as usize;
    let mut setup = Setup::default();
    eprintln!("board / {backend}: set-up through the API (load {load_before})");
    let started = Instant::now();
    let seed = set_up_api(helpdesk, size, args.workers).await?;
    setup.api = started.elapsed();
    eprintln!(
        "board / {backend}: API set-up done in {:.1} s; deciding and appending the events of \
         {size} cards",
        setup.api.as_secs_f64()
    );
    let started = Instant::now();
    let seed = write_events(helpdesk, seed, size).await?;
    setup.events = started.elapsed();
    setup.events_written = seed.1;
    let seed = seed.0;
    let started = Instant::now();
    catch_up(helpdesk).await?;
    setup.catch_up = started.elapsed();
    let started = Instant::now();
    if let Backend::Postgres(pool) = &helpdesk.db {
        sqlx::query("VACUUM (ANALYZE)").execute(pool).await?;
    }
    setup.analyse = started.elapsed();
    let mut shape = check_seeded(&helpdesk.db, &seed).await?;
    eprintln!(
        "board / {backend}: seeded in {:.1} s (API {:.1} s, events {:.1} s, catch-up {:.1} s, \
         analyse {:.1} s)",
        setup.total().as_secs_f64(),
        setup.api.as_secs_f64(),
        setup.events.as_secs_f64(),
        setup.catch_up.as_secs_f64(),
        setup.analyse.as_secs_f64()
    );

    let schema = build_schema(Some(helpdesk.clone()));

    // (a) The board, one request at a time.
    let mut board = latency_histogram()?;
    let progress = progress_bar(args.board_requests, "board requests")?;
    for n in 0..args.board_requests {
        let (elapsed, data) = execute(
            &schema,
            &admin(),
            BOARD_QUERY,
            json!({ "pipelineId": seed.pipeline_id }),
            format!("bench-board-{n}"),
        )
        .await?;
        board.saturating_record(micros(elapsed));
        let (shown, assigned, labelled) = check_board(&data, &seed)
            .map_err(|why| anyhow!("{backend}: board answer {n} is wrong: {why}"))?;
        shape.shown = shown;
        shape.shown_assigned = assigned;
        shape.shown_labelled = labelled;
        progress.inc(1);
    }
    progress.finish_and_clear();

    // The same board, its statements only.
    let mut statements = latency_histogram()?;
    let mut columns = (0..STAGES.len())
        .map(|_| latency_histogram())
        .collect::<anyhow::Result<Vec<_>>>()?;
    for _ in 0..args.board_requests {
        let started = Instant::now();
        let pages = board_statements(&helpdesk.db, &seed.pipeline_id).await?;
        statements.saturating_record(micros(started.elapsed()));
        for (s, page) in pages.iter().enumerate() {
            columns[s].saturating_record(micros(*page));
        }
    }

    // (b) Card moves, `--board-clients` at a time.
    let (moves, moves_wall, reorders, mut last) = drive_moves(&schema, &seed, size, args).await?;
    settle(helpdesk).await?;
    // The same, one at a time, taken apart.
    let alone = moves_alone(helpdesk, &schema, &seed, size, &mut last).await?;
    settle(helpdesk).await?;
    let (misplaced, miscounted) = check_moved(&helpdesk.db, &seed, &last, size).await?;

    let plans = if args.explain {
        explain(helpdesk, url, &seed, captured).await?
    } else {
        String::new()
    };
    Ok(BoardRun {
        backend,
        setup,
        shape,
        board,
        statements,
        columns,
        moves,
        moves_wall,
        reorders,
        alone,
        misplaced,
        miscounted,
        load: (load_before, loadavg()),
        plans,
    })
}

// ---------------------------------------------------------------------------------------
// Set-up.

fn customer_name(i: usize) -> String {
    const FIRST: [&str; 16] = [
        "Siti", "Budi", "Ayu", "Rizky", "Dewi", "Agus", "Putri", "Hendra", "Maria", "Joko", "Lina",
        "Andi", "Rina", "Yusuf", "Nadia", "Eko",
    ];
    const LAST: [&str; 12] = [
        "Rahayu", "Santoso", "Wijaya", "Pratama", "Lestari", "Hidayat", "Kusuma", "Nugroho",
        "Saputra", "Halim", "Siregar", "Tan",
    ];
    format!(
        "{} {} {i}",
        FIRST[i % FIRST.len()],
        LAST[(i / FIRST.len()) % LAST.len()]
    )
}

fn first_message(i: usize) -> String {
    format!(
        "Hello, we are {} people and would like a quote for the {} plan (ref {i}).",
        5 + i % 200,
        ["starter", "team", "business", "enterprise"][i % 4]
    )
}

fn wa_id(i: usize) -> String {
    format!("62812{i:08}")
}

/// The labels of card `i`, sorted.
fn labels_of(i: usize) -> Vec<&'static str> {
    if !i.is_multiple_of(3) {
        return vec![];
    }
    let mut labels = vec![LABELS[(i / 3) % LABELS.len()]];
    if i.is_multiple_of(9) {
        let second = LABELS[(i / 9 + 2) % LABELS.len()];
        if second != labels[0] {
            labels.push(second);
        }
    }
    labels.sort_unstable();
    labels
}

/// The agent who placed card `i` (and moved nothing yet).
fn agent_id(n: usize) -> String {
    format!("bench-agent-{n:02}")
}

fn agent_name(n: usize) -> String {
    format!("Bench agent {n:02}")
}

/// Settings, agents, the pipeline with its stages, and the tickets, through the command API.
async fn set_up_api(helpdesk: &Arc<Helpdesk>, size: usize, workers: u64) -> anyhow::Result<Seed> {
    let admin = admin();
    helpdesk
        .update_queue_settings(
            &admin,
            "bench-settings",
            QueueSettingsChanges {
                escalation_after_seconds: Some(0),
                ..QueueSettingsChanges::default()
            },
        )
        .await
        .map_err(|e| failed("updateQueueSettings", &e))?;
    let tickets = size.div_ceil(TICKET_EVERY);
    let agents: Vec<String> = (0..(tickets as i64 / AGENT_CAPACITY + 1) as usize)
        .map(agent_id)
        .collect();
    for_each_concurrently("agents registered", agents.len() as u64, workers, |n| {
        let id = agents[n as usize].clone();
        async move {
            helpdesk
                .register_agent(
                    &super::admin(),
                    &format!("bench-register-{id}"),
                    Some(id),
                    agent_name(n as usize),
                    AGENT_CAPACITY,
                    vec![],
                )
                .await
                .map_err(|e| failed("registerAgent", &e))?;
            Ok(())
        }
    })
    .await?;
    let pipeline_id = helpdesk
        .create_pipeline(
            &admin,
            "bench-pipeline",
            "Sales".into(),
            Some("Leads from WhatsApp".into()),
            Some("#1E88E5".into()),
        )
        .await
        .map_err(|e| failed("createPipeline", &e))?;
    let mut stages = Vec::new();
    for (s, name) in STAGES.iter().enumerate() {
        let stage = NewStage {
            name: (*name).into(),
            color: None,
            closed: s + 2 >= STAGES.len(),
            automation: vec![],
            position: None,
        };
        let id = helpdesk
            .add_stage(
                &admin,
                &format!("bench-stage-{s}"),
                pipeline_id.clone(),
                stage,
            )
            .await
            .map_err(|e| failed("addStage", &e))?;
        stages.push(id);
    }
    let ids: Vec<Mutex<String>> = (0..tickets).map(|_| Mutex::default()).collect();
    let (ids_ref, agents_ref) = (&ids, &agents);
    for_each_concurrently(
        "tickets created and assigned",
        tickets as u64,
        workers,
        |t| async move {
            let t = t as usize;
            let input = NewTicket {
                subject: format!("Quote request from {}", customer_name(t * TICKET_EVERY)),
                description: Some(first_message(t * TICKET_EVERY)),
                priority: None,
                division_id: None,
            };
            let ticket = helpdesk
                .create_ticket(&super::admin(), &format!("bench-ticket-{t}"), input)
                .await
                .map_err(|e| failed("createTicket", &e))?;
            let agent = agents_ref[t % agents_ref.len()].clone();
            helpdesk
                .assign_ticket(
                    &super::admin(),
                    &format!("bench-assign-{t}"),
                    &ticket.id,
                    Some(agent),
                )
                .await
                .map_err(|e| failed("assignTicket", &e))?;
            *ids_ref[t].lock().unwrap_or_else(|e| e.into_inner()) = ticket.id;
            Ok(())
        },
    )
    .await?;
    let tickets = ids
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect();
    let cards = Vec::with_capacity(size);
    Ok(Seed {
        pipeline_id,
        stages,
        cards,
        agents,
        tickets,
    })
}

/// The events `command` makes `aggregate` decide (applied to it, as the store would).
async fn decide<A>(aggregate: &mut A, command: A::Command) -> anyhow::Result<Vec<A::Event>>
where
    A: Aggregate<Services = ()>,
{
    let sink = EventSink::default();
    aggregate
        .handle(command, &(), &sink)
        .await
        .map_err(|e| anyhow!("{} refused a bench command: {e}", A::TYPE))?;
    Ok(sink.collect().await)
}

/// One row of the event log, as the event store writes it.
struct LogRow {
    aggregate_type: &'static str,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: Value,
    metadata: Value,
}

fn rows<E: DomainEvent>(
    aggregate_type: &'static str,
    aggregate_id: &str,
    first_sequence: i64,
    events: Vec<E>,
    metadata: &EventMetadata,
) -> anyhow::Result<Vec<LogRow>> {
    let metadata = serde_json::to_value(metadata.to_map())?;
    events
        .into_iter()
        .enumerate()
        .map(|(k, event)| {
            Ok(LogRow {
                aggregate_type,
                aggregate_id: aggregate_id.to_string(),
                sequence: first_sequence + k as i64,
                event_type: event.event_type(),
                event_version: event.event_version(),
                payload: serde_json::to_value(&event)?,
                metadata: metadata.clone(),
            })
        })
        .collect()
}

/// Keys, conversations and cards: decided by the aggregates, appended in bulk. Returns the
/// seed with its cards and the number of events written.
async fn write_events(
    helpdesk: &Helpdesk,
    mut seed: Seed,
    size: usize,
) -> anyhow::Result<(Seed, usize)> {
    let db = &helpdesk.db;
    let channel = channel_id(ORGANIZATION, Channel::Whatsapp);
    let service = channel_caller(ORGANIZATION, &channel).actor;
    let customers: Vec<String> = (0..size)
        .map(|i| {
            derived_id(&[
                "customer",
                ORGANIZATION,
                Channel::Whatsapp.as_str(),
                &wa_id(i),
            ])
        })
        .collect();
    let keys = insert_keys(db, &customers).await?;
    let pipelines = helpdesk
        .load_pipelines(ORGANIZATION)
        .await
        .map_err(|e| failed("loadPipelines", &e))?;
    let pipeline = pipelines
        .pipeline(&seed.pipeline_id)
        .context("the bench pipeline is missing")?;
    let start = Utc::now() - TimeDelta::days(30);
    let step = TimeDelta::days(30).num_milliseconds() / size.max(1) as i64;
    let mut log = Vec::new();
    for (i, customer) in customers.iter().enumerate() {
        let at = start + TimeDelta::milliseconds(step * i as i64);
        let external = wa_id(i);
        let conversation_id = derived_id(&["conversation", &channel, &external]);
        let key = &keys[i];
        let request = format!("bench-wamid-{i}");
        let meta = |actor: &Actor, at: DateTime<Utc>, request: &str| EventMetadata {
            organization: ORGANIZATION.into(),
            actor: actor.clone(),
            occurred_at: at,
            request_id: request.to_string(),
            correlation_id: request.to_string(),
            causation_id: None,
        };
        let command = |action| Command {
            organization: ORGANIZATION.to_string(),
            actor: service.clone(),
            action,
        };
        let mut conversation = Conversation::default();
        let inbound = Inbound {
            channel: Channel::Whatsapp,
            channel_id: channel.clone(),
            customer_id: customer.clone(),
            external_id: key.seal(&external),
            customer_name: Some(key.seal(&customer_name(i))),
            message_id: derived_id(&["message", &conversation_id, &request]),
            text: key.seal(&first_message(i)),
        };
        let mut events = decide(
            &mut conversation,
            command(ConversationAction::Receive(inbound)),
        )
        .await?;
        if i % TICKET_EVERY == 0 {
            let ticket_id = seed.tickets[i / TICKET_EVERY].clone();
            events.extend(
                decide(
                    &mut conversation,
                    command(ConversationAction::LinkTicket { ticket_id }),
                )
                .await?,
            );
        }
        log.extend(rows(
            Conversation::TYPE,
            &conversation_id,
            1,
            events,
            &meta(&service, at, &request),
        )?);

        let (_, stage) = pipeline
            .stage(&seed.stages[i % STAGES.len()])
            .context("a bench stage is missing")?;
        let id = card_id(&seed.pipeline_id, &conversation_id);
        let placer = Actor::new(agent_id(i % seed.agents.len()), Role::Agent);
        let card_command = |action| Command {
            organization: ORGANIZATION.to_string(),
            actor: placer.clone(),
            action,
        };
        let mut card = Card::default();
        let placed = decide(
            &mut card,
            card_command(CardAction::Place {
                conversation_id: conversation_id.clone(),
                stage: pipeline.stage_ref(stage),
                position: None,
            }),
        )
        .await?;
        let placed_at = at + TimeDelta::minutes(3);
        log.extend(rows(
            Card::TYPE,
            &id,
            1,
            placed,
            &meta(&placer, placed_at, &format!("bench-place-{i}")),
        )?);
        for (k, label) in labels_of(i).into_iter().enumerate() {
            let added = decide(
                &mut card,
                card_command(CardAction::AddLabel {
                    label: label.to_string(),
                }),
            )
            .await?;
            log.extend(rows(
                Card::TYPE,
                &id,
                2 + k as i64,
                added,
                &meta(
                    &placer,
                    placed_at + TimeDelta::minutes(1 + k as i64),
                    &format!("bench-label-{i}-{k}"),
                ),
            )?);
        }
        seed.cards.push(id);
    }
    let written = log.len();
    let progress = progress_bar(written as u64, "events appended")?;
    for chunk in log.chunks(BATCH) {
        append(db, chunk).await?;
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();
    Ok((seed, written))
}

/// A key per customer, stored as `personal_data::key_for` stores it.
async fn insert_keys(db: &Database, customers: &[String]) -> anyhow::Result<Vec<CustomerKey>> {
    let created = timestamp(Utc::now());
    let mut keys = Vec::with_capacity(customers.len());
    for chunk in customers.chunks(BATCH) {
        let mut sql = String::from(
            "INSERT INTO customer_keys (customer_id, organization_id, secret_key, created_at) \
             VALUES ",
        );
        let mut stored = Vec::with_capacity(chunk.len());
        for k in 0..chunk.len() {
            let sep = if k == 0 { "" } else { ", " };
            let _ = write!(sql, "{sep}(${}, $1, ${}, $2)", 3 + 2 * k, 4 + 2 * k);
            let mut bytes = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut bytes);
            stored.push(STANDARD.encode(bytes));
        }
        on_backend!(db, |pool| {
            let mut query = sqlx::query(&sql).bind(ORGANIZATION).bind(&created);
            for (customer, key) in chunk.iter().zip(&stored) {
                query = query.bind(customer).bind(key);
            }
            query.execute(pool).await?;
        });
        for (customer, key) in chunk.iter().zip(&stored) {
            keys.push(CustomerKey::from_stored(customer, key)?);
        }
    }
    Ok(keys)
}

/// Appends rows to the event log in one statement (the log's defaults and triggers number
/// them and wake the projections).
async fn append(db: &Database, rows: &[LogRow]) -> anyhow::Result<()> {
    let mut sql = String::from(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload, metadata) VALUES ",
    );
    for k in 0..rows.len() {
        let sep = if k == 0 { "" } else { ", " };
        let p = 7 * k;
        let _ = write!(
            sql,
            "{sep}(${}, ${}, ${}, ${}, ${}, ${}, ${})",
            p + 1,
            p + 2,
            p + 3,
            p + 4,
            p + 5,
            p + 6,
            p + 7
        );
    }
    on_backend!(db, |pool| {
        let mut query = sqlx::query(&sql);
        for row in rows {
            query = query
                .bind(row.aggregate_type)
                .bind(&row.aggregate_id)
                .bind(row.sequence)
                .bind(&row.event_type)
                .bind(&row.event_version)
                .bind(&row.payload)
                .bind(&row.metadata);
        }
        query.execute(pool).await?;
    });
    Ok(())
}

/// Waits until the projections have applied the whole log and the conversation process has
/// announced every assignment, showing how far the slowest projection is.
async fn catch_up(helpdesk: &Helpdesk) -> anyhow::Result<()> {
    let db = &helpdesk.db;
    let head = event_log::log_head(db).await?;
    let progress = progress_bar(head.position.max(0) as u64, "events applied (slowest)")?;
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut analysed = Instant::now();
    loop {
        if let Backend::Postgres(pool) = db {
            // What autovacuum does when a table has grown by a tenth, every
            // [`ANALYSE_EVERY`] instead of every minute: it replaces the projection's cached
            // generic plans, built while `board_cards` was empty (see the module docs).
            if analysed.elapsed() >= ANALYSE_EVERY {
                for table in PipelinesProjection.tables() {
                    sqlx::query(&format!("ANALYZE {table}"))
                        .execute(pool)
                        .await?;
                }
                analysed = Instant::now();
            }
        }
        let head = event_log::log_head(db).await?;
        let slowest = helpdesk
            .progress
            .checkpoints()
            .values()
            .map(|c| c.position)
            .min()
            .unwrap_or(0);
        progress.set_length(head.position.max(0) as u64);
        progress.set_position(slowest.max(0) as u64);
        let applied = helpdesk
            .progress
            .wait_for_all(head, Duration::from_millis(500))
            .await
            .is_ok();
        if applied
            && projections::conversations::unannounced_assignments(db, 1)
                .await?
                .is_empty()
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("the projections did not catch up within {SETTLE_TIMEOUT:?}");
        }
    }
    progress.finish_and_clear();
    settle(helpdesk).await
}

/// Waits until every projection has applied the whole log and the log has then not grown
/// for [`QUIET`]. (Not `Helpdesk::settle`: see the assignment scenario's `settle`.)
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

/// Checks every read model the board reads holds what was seeded.
async fn check_seeded(db: &Database, seed: &Seed) -> anyhow::Result<Shape> {
    let size = seed.cards.len();
    let tickets = seed.tickets.len();
    let labels: usize = (0..size).map(|i| labels_of(i).len()).sum();
    let labelled = (0..size).filter(|i| !labels_of(*i).is_empty()).count();
    let checks: [(&str, &str, usize); 8] = [
        ("conversations", "SELECT COUNT(*) FROM conversations", size),
        (
            "conversations with a ticket",
            "SELECT COUNT(*) FROM conversations WHERE ticket_id IS NOT NULL",
            tickets,
        ),
        (
            "inbound messages",
            "SELECT COUNT(*) FROM conversation_messages WHERE direction = 'INBOUND'",
            size,
        ),
        (
            "announcements",
            "SELECT COUNT(*) FROM conversation_messages WHERE kind = 'SYSTEM'",
            tickets,
        ),
        (
            "assigned tickets",
            "SELECT COUNT(*) FROM tickets WHERE status = 'ASSIGNED'",
            tickets,
        ),
        ("cards", "SELECT COUNT(*) FROM board_cards", size),
        (
            "card labels",
            "SELECT COUNT(*) FROM board_card_labels",
            labels,
        ),
        (
            "cards counted in their stages",
            "SELECT CAST(COALESCE(SUM(card_count), 0) AS bigint) FROM pipeline_stages",
            size,
        ),
    ];
    for (what, sql, expected) in checks {
        let found: i64 = on_backend!(db, |pool| sqlx::query_scalar(sql).fetch_one(pool).await?);
        if found != expected as i64 {
            bail!("set-up: {found} {what}, expected {expected}");
        }
    }
    Ok(Shape {
        cards: size,
        tickets,
        labelled,
        shown: 0,
        shown_assigned: 0,
        shown_labelled: 0,
    })
}

// ---------------------------------------------------------------------------------------
// Measurement.

/// Executes one GraphQL request as `caller`; returns its latency (execution and
/// serialization of the response) and its `data`. Any error fails.
async fn execute(
    schema: &HelpdeskSchema,
    caller: &Caller,
    query: &str,
    variables: Value,
    request_id: String,
) -> anyhow::Result<(Duration, Value)> {
    let request = Request::new(query)
        .variables(Variables::from_json(variables))
        .data(RequestContext {
            caller: Ok(caller.clone()),
            request_id,
        });
    let started = Instant::now();
    let response = schema.execute(request).await;
    let body = serde_json::to_vec(&response)?;
    let elapsed = started.elapsed();
    if !response.errors.is_empty() {
        bail!(
            "GraphQL errors: {}",
            serde_json::to_string(&response.errors).unwrap_or_default()
        );
    }
    let mut parsed: Value = serde_json::from_slice(&body)?;
    Ok((elapsed, parsed["data"].take()))
}

/// Checks a board answer against the seeded board; returns the cards shown, of them with an
/// assignee and with labels.
fn check_board(data: &Value, seed: &Seed) -> Result<(usize, usize, usize), String> {
    let board = &data["board"];
    if board["pipeline"]["id"] != json!(seed.pipeline_id) {
        return Err("another pipeline".into());
    }
    let columns = board["stages"].as_array().ok_or("no stages")?;
    if columns.len() != STAGES.len() {
        return Err(format!("{} columns", columns.len()));
    }
    let (mut shown, mut assigned, mut labelled) = (0, 0, 0);
    for (s, column) in columns.iter().enumerate() {
        if column["stage"]["id"] != json!(seed.stages[s]) {
            return Err(format!("column {s} is another stage"));
        }
        let expected: Vec<usize> = seed.column(s).collect();
        let count = expected.len();
        if column["count"] != json!(count) || column["stage"]["cardCount"] != json!(count) {
            return Err(format!("column {s} counts {}", column["count"]));
        }
        if column["hasMore"] != json!(count > PAGE) {
            return Err(format!("column {s}: hasMore {}", column["hasMore"]));
        }
        let cards = column["cards"].as_array().ok_or("no cards")?;
        if cards.len() != count.min(PAGE) {
            return Err(format!("column {s} shows {} cards", cards.len()));
        }
        for (card, &i) in cards.iter().zip(&expected) {
            let assignee = (i % TICKET_EVERY == 0).then(|| {
                let agent = (i / TICKET_EVERY) % seed.agents.len();
                json!({ "name": agent_name(agent) })
            });
            let labels = labels_of(i);
            let right = card["id"] == json!(seed.cards[i])
                && card["customerName"] == json!(customer_name(i))
                && card["lastMessage"] == json!(first_message(i))
                && card["assignee"] == json!(assignee)
                && card["labels"] == json!(labels)
                && card["enteredStageAt"].is_string();
            if !right {
                return Err(format!("column {s}: expected card {i}, got {card}"));
            }
            shown += 1;
            assigned += usize::from(assignee.is_some());
            labelled += usize::from(!labels.is_empty());
        }
    }
    Ok((shown, assigned, labelled))
}

/// What the `board` resolver asks the read models (`graphql::pipelines`: `load_pipeline`,
/// `stages`, `column_pages` without filter, `CardContext::load`); returns each column
/// page's time.
async fn board_statements(db: &Database, pipeline_id: &str) -> anyhow::Result<Vec<Duration>> {
    projections::pipelines::pipeline(db, ORGANIZATION, pipeline_id)
        .await?
        .context("no pipeline")?;
    projections::pipelines::stages(db, pipeline_id).await?;
    let stages = projections::pipelines::stages(db, pipeline_id).await?;
    let mut rows = Vec::new();
    let mut times = Vec::with_capacity(stages.len());
    for stage in &stages {
        let started = Instant::now();
        let mut page = projections::pipelines::cards(
            db,
            pipeline_id,
            Some(&stage.id),
            &BoardFilter::default(),
            None,
            PAGE as i64 + 1,
        )
        .await?;
        times.push(started.elapsed());
        page.truncate(PAGE);
        rows.extend(page);
    }
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let mut customers: Vec<String> = rows.iter().filter_map(|r| r.customer_id.clone()).collect();
    customers.sort();
    customers.dedup();
    if rows.iter().any(|r| r.assignee_id.is_some()) {
        projections::agents::agents(db, ORGANIZATION).await?;
    }
    projections::pipelines::labels(db, &ids).await?;
    personal_data::keys(db, ORGANIZATION, &customers).await?;
    Ok(times)
}

/// The last stage each moved card was sent to, by card number.
type LastMoves = HashMap<usize, usize>;

/// Drives `--board-moves` moves from `--board-clients` clients; returns the latencies, the
/// wall time, the moves within a stage and where each moved card was last sent.
async fn drive_moves(
    schema: &HelpdeskSchema,
    seed: &Seed,
    size: usize,
    args: &Args,
) -> anyhow::Result<(Histogram<u64>, Duration, u64, LastMoves)> {
    let clients = (args.board_clients as usize).min(size);
    let moves = args.board_moves;
    let column = size / STAGES.len();
    let progress = progress_bar(moves, "cards moved")?;
    let next = Arc::new(AtomicU64::new(0));
    let stages = Arc::new(seed.stages.clone());
    let cards = Arc::new(seed.cards.clone());
    let started = Instant::now();
    let mut set = JoinSet::new();
    for c in 0..clients {
        let (schema, next, progress) = (schema.clone(), next.clone(), progress.clone());
        let (stages, cards) = (stages.clone(), cards.clone());
        let caller = Caller {
            organization: ORGANIZATION.into(),
            actor: Actor::new(agent_id(c % seed.agents.len()), Role::Agent),
        };
        // Where each card of this client's share is now: stage `i mod 10` at first.
        set.spawn(async move {
            let mut rng = StdRng::seed_from_u64(6_000 + c as u64);
            let mut latency = latency_histogram()?;
            let mut last = LastMoves::new();
            let mut reorders = 0;
            let share = (size - c).div_ceil(clients);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= moves {
                    return anyhow::Ok((latency, last, reorders));
                }
                let i = c + clients * rng.gen_range(0..share);
                let current = last.get(&i).copied().unwrap_or(i % STAGES.len());
                // A tenth of the moves reorder the card within its stage.
                let to = if rng.gen_bool(0.1) {
                    current
                } else {
                    let other = rng.gen_range(0..STAGES.len() - 1);
                    if other >= current {
                        other + 1
                    } else {
                        other
                    }
                };
                let position = rng.gen_range(0..=column) as i64;
                let (elapsed, data) = execute(
                    &schema,
                    &caller,
                    MOVE_MUTATION,
                    json!({ "cardId": cards[i], "toStageId": stages[to], "position": position }),
                    format!("bench-move-{n}"),
                )
                .await?;
                latency.saturating_record(micros(elapsed));
                let moved = &data["moveCard"];
                if moved["id"] != json!(cards[i]) || moved["stageId"] != json!(stages[to]) {
                    bail!("move {n} of card {i} to stage {to} answered {moved}");
                }
                reorders += u64::from(to == current);
                last.insert(i, to);
                progress.inc(1);
            }
        });
    }
    let mut latency = latency_histogram()?;
    let mut last = LastMoves::new();
    let mut reorders = 0;
    let mut first_error = None;
    while let Some(joined) = set.join_next().await {
        match joined.context("a client panicked").and_then(|r| r) {
            Ok((client, moved, reordered)) => {
                latency
                    .add(&client)
                    .map_err(|e| anyhow!("merging latency histograms: {e:?}"))?;
                last.extend(moved);
                reorders += reordered;
            }
            Err(error) => {
                next.store(u64::MAX / 2, Ordering::Relaxed);
                first_error.get_or_insert(error);
            }
        }
    }
    let wall = started.elapsed();
    progress.finish_and_clear();
    if let Some(error) = first_error {
        return Err(error.context("a move failed"));
    }
    Ok((latency, wall, reorders, last))
}

/// One client's moves, taken apart, µs.
struct MovesAlone {
    /// `moveCard` through GraphQL, as above.
    graphql: Histogram<u64>,
    /// `Helpdesk::move_card`: the reads, the command and the read-your-writes wait.
    command: Histogram<u64>,
    /// What `move_card` reads before the command: the card and the pipelines aggregates.
    reads: Histogram<u64>,
}

/// [`SEQUENTIAL_MOVES`] moves through GraphQL and as many through `Helpdesk::move_card`,
/// one at a time, alternating; and the aggregate loads `move_card` starts with, before each.
async fn moves_alone(
    helpdesk: &Helpdesk,
    schema: &HelpdeskSchema,
    seed: &Seed,
    size: usize,
    last: &mut LastMoves,
) -> anyhow::Result<MovesAlone> {
    let column = size / STAGES.len();
    let caller = Caller {
        organization: ORGANIZATION.into(),
        actor: Actor::new(agent_id(0), Role::Agent),
    };
    let mut rng = StdRng::seed_from_u64(7_000);
    let mut alone = MovesAlone {
        graphql: latency_histogram()?,
        command: latency_histogram()?,
        reads: latency_histogram()?,
    };
    let progress = progress_bar(2 * SEQUENTIAL_MOVES, "cards moved one at a time")?;
    for n in 0..2 * SEQUENTIAL_MOVES {
        let i = rng.gen_range(0..size);
        let current = last.get(&i).copied().unwrap_or(i % STAGES.len());
        let to = (current + rng.gen_range(1..STAGES.len())) % STAGES.len();
        let position = rng.gen_range(0..=column) as u32;
        let (card, stage) = (&seed.cards[i], &seed.stages[to]);
        let started = Instant::now();
        helpdesk
            .load_card(ORGANIZATION, card)
            .await
            .map_err(|e| failed("loadCard", &e))?;
        helpdesk
            .load_pipelines(ORGANIZATION)
            .await
            .map_err(|e| failed("loadPipelines", &e))?;
        alone.reads.saturating_record(micros(started.elapsed()));
        let request = format!("bench-move-alone-{n}");
        if n % 2 == 0 {
            let (elapsed, data) = execute(
                schema,
                &caller,
                MOVE_MUTATION,
                json!({ "cardId": card, "toStageId": stage, "position": position }),
                request,
            )
            .await?;
            if data["moveCard"]["stageId"] != json!(stage) {
                bail!("move of card {i} to stage {to} answered {data}");
            }
            alone.graphql.saturating_record(micros(elapsed));
        } else {
            let started = Instant::now();
            helpdesk
                .move_card(&caller, &request, card, stage, Some(position))
                .await
                .map_err(|e| failed("moveCard", &e))?;
            alone.command.saturating_record(micros(started.elapsed()));
        }
        last.insert(i, to);
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok(alone)
}

/// Cards not where they were last moved to, and stages whose count differs from their
/// cards.
async fn check_moved(
    db: &Database,
    seed: &Seed,
    last: &LastMoves,
    size: usize,
) -> anyhow::Result<(usize, usize)> {
    let mut misplaced = 0;
    for (&i, &to) in last {
        let card = projections::pipelines::card(db, ORGANIZATION, &seed.cards[i])
            .await?
            .with_context(|| format!("card {i} is gone"))?;
        misplaced += usize::from(card.stage_id != seed.stages[to]);
    }
    let counted: Vec<(String, i64, i64)> = on_backend!(db, |pool| {
        sqlx::query_as(
        "SELECT s.id, s.card_count, (SELECT COUNT(*) FROM board_cards b WHERE b.stage_id = s.id)
           FROM pipeline_stages s"
    )
    .fetch_all(pool)
    .await?
    });
    let miscounted = counted.iter().filter(|(_, a, b)| a != b).count();
    let total: i64 = counted.iter().map(|(_, _, b)| b).sum();
    if total != size as i64 {
        bail!("after the moves the board holds {total} cards, expected {size}");
    }
    Ok((misplaced, miscounted))
}

// ---------------------------------------------------------------------------------------
// --explain.

/// The plans of one board's statements and of applying one move.
async fn explain(
    helpdesk: &Helpdesk,
    url: &str,
    seed: &Seed,
    captured: &Mutex<Vec<String>>,
) -> anyhow::Result<String> {
    // The card moved (and rolled back): the first card of the first column, to the middle
    // of the sixth.
    let i = 0;
    let to = 5;
    let position = (seed.cards.len() / STAGES.len() / 2) as u32;
    let event = move_event(helpdesk, seed, i, to, position).await?;
    match &helpdesk.db {
        Backend::Postgres(_) => match explain_postgres(url, seed, &event).await {
            Ok((plans, statements)) => {
                *captured.lock().unwrap_or_else(|e| e.into_inner()) = statements;
                Ok(plans)
            }
            Err(error) => Ok(format!("   (no plans: {error:#})\n")),
        },
        Backend::Sqlite(pool) => {
            let statements = captured.lock().unwrap_or_else(|e| e.into_inner()).clone();
            explain_sqlite(pool, &statements).await
        }
    }
}

/// The `CardMoved` event moving card `i` to stage `to` at `position` would be, as stored.
async fn move_event(
    helpdesk: &Helpdesk,
    seed: &Seed,
    i: usize,
    to: usize,
    position: u32,
) -> anyhow::Result<StoredEvent> {
    let db = &helpdesk.db;
    let id = &seed.cards[i];
    let mut card = helpdesk
        .load_card(ORGANIZATION, id)
        .await
        .map_err(|e| failed("loadCard", &e))?;
    let pipelines = helpdesk
        .load_pipelines(ORGANIZATION)
        .await
        .map_err(|e| failed("loadPipelines", &e))?;
    let pipeline = pipelines
        .pipeline(&seed.pipeline_id)
        .context("no pipeline")?;
    let (_, stage) = pipeline.stage(&seed.stages[to]).context("no stage")?;
    let actor = Actor::new(agent_id(0), Role::Agent);
    let events = decide(
        &mut card,
        Command {
            organization: ORGANIZATION.into(),
            actor: actor.clone(),
            action: CardAction::Move {
                stage: pipeline.stage_ref(stage),
                position: Some(position),
            },
        },
    )
    .await?;
    let event = events
        .into_iter()
        .next()
        .context("the move decided nothing")?;
    let sequence: i64 = on_backend!(db, |pool| sqlx::query_scalar(
        "SELECT COALESCE(MAX(sequence), 0) + 1 FROM events
          WHERE aggregate_type = 'Card' AND aggregate_id = $1"
    )
    .bind(id)
    .fetch_one(pool)
    .await?);
    let head = event_log::log_head(db).await?;
    Ok(StoredEvent {
        checkpoint: Checkpoint {
            tx_id: head.tx_id,
            position: head.position + 1,
        },
        aggregate_type: Card::TYPE.into(),
        aggregate_id: id.clone(),
        sequence,
        event_type: event.event_type(),
        event_version: event.event_version(),
        payload: serde_json::value::to_raw_value(&event)?,
        metadata: EventMetadata {
            organization: ORGANIZATION.into(),
            actor,
            occurred_at: Utc::now(),
            request_id: "bench-explain".into(),
            correlation_id: "bench-explain".into(),
            causation_id: None,
        },
    })
}

/// On a connection with `auto_explain`: a board's statements and one move's, each run
/// [`EXPLAIN_RUNS`] times; the last run's plans, and the statement texts.
async fn explain_postgres(
    url: &str,
    seed: &Seed,
    event: &StoredEvent,
) -> anyhow::Result<(String, Vec<String>)> {
    use tracing::instrument::WithSubscriber;
    use tracing_subscriber::layer::SubscriberExt;

    let options = PgConnectOptions::from_str(url)?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .after_connect(|conn, _| {
            Box::pin(async move {
                for setting in [
                    "LOAD 'auto_explain'",
                    "SET auto_explain.log_min_duration = 0",
                    "SET auto_explain.log_analyze = on",
                    "SET auto_explain.log_buffers = on",
                    "SET auto_explain.log_level = notice",
                    "SET client_min_messages = notice",
                ] {
                    sqlx::query(setting).execute(&mut *conn).await?;
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await
        .context("connecting with auto_explain (needs a superuser)")?;
    let db: Database = Backend::Postgres(pool);
    let notices = Arc::new(Mutex::new(Vec::new()));
    let dispatch =
        tracing::Dispatch::new(tracing_subscriber::registry().with(Notices(notices.clone())));
    let mut out = String::new();
    let mut statements = Vec::new();
    for what in ["board (first page of every column)", "apply one CardMoved"] {
        let mut wall = Duration::ZERO;
        for _ in 0..EXPLAIN_RUNS {
            notices.lock().unwrap_or_else(|e| e.into_inner()).clear();
            let started = Instant::now();
            if what.starts_with("board") {
                board_statements(&db, &seed.pipeline_id)
                    .with_subscriber(dispatch.clone())
                    .await?;
            } else {
                async {
                    let mut tx = db.begin().await?;
                    PipelinesProjection.apply(&mut tx, event).await?;
                    // Dropped without commit: rolled back.
                    anyhow::Ok(())
                }
                .with_subscriber(dispatch.clone())
                .await?;
            }
            wall = started.elapsed();
        }
        let logged = std::mem::take(&mut *notices.lock().unwrap_or_else(|e| e.into_inner()));
        if logged.is_empty() {
            bail!("auto_explain logged nothing");
        }
        let durations: Vec<f64> = logged
            .iter()
            .filter_map(|n| {
                n.strip_prefix("duration: ")?
                    .split(' ')
                    .next()?
                    .parse()
                    .ok()
            })
            .collect();
        let _ = writeln!(
            out,
            "-- {what}, run {EXPLAIN_RUNS} on the connection: {} statements, {:.1} ms in the \
             server, {:.1} ms in the bench (timing overhead included)",
            durations.len(),
            durations.iter().sum::<f64>(),
            wall.as_secs_f64() * 1e3
        );
        for notice in logged {
            let mut lines = notice.lines();
            let _ = writeln!(out, "   -- {}", lines.next().unwrap_or_default());
            let mut text = Vec::new();
            let mut in_text = true;
            for line in lines {
                in_text &= !line.contains("(cost=");
                if in_text {
                    text.push(line.trim_start_matches("Query Text: ").trim());
                } else {
                    let _ = writeln!(out, "   {}", clip(line));
                }
            }
            let sql = text.join(" ");
            let _ = writeln!(out, "   -- {}", shorten(&sql));
            if !statements.contains(&sql) {
                statements.push(sql);
            }
        }
    }
    db.close().await;
    Ok((out, statements))
}

/// The first 300 characters of a statement, on one line.
fn shorten(sql: &str) -> String {
    let line = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(300) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line,
    }
}

/// A plan line cut at 200 characters (the lists of 200 card and customer ids).
fn clip(line: &str) -> String {
    match line.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_string(),
    }
}

/// Records the messages of PostgreSQL notices sqlx receives.
struct Notices(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Notices {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != "sqlx::postgres::notice" {
            return;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        if message.0.contains("plan:") {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(message.0);
        }
    }
}

/// The `message` field of an event.
struct Message(String);

impl tracing::field::Visit for Message {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_string();
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" && self.0.is_empty() {
            self.0 = format!("{value:?}");
        }
    }
}

/// SQLite's `EXPLAIN QUERY PLAN` of the statements captured on PostgreSQL, with NULL
/// parameters (the planner does not look at them).
async fn explain_sqlite(pool: &sqlx::SqlitePool, statements: &[String]) -> anyhow::Result<String> {
    if statements.is_empty() {
        return Ok(
            "   (no plans: the statement texts are captured on PostgreSQL, which did \
                   not run or gave none)\n"
                .into(),
        );
    }
    let mut out = String::new();
    for sql in statements {
        let parameters = (1..=300).filter(|k| sql.contains(&format!("${k}"))).count();
        let _ = writeln!(out, "-- {}", shorten(sql));
        let plan = format!("EXPLAIN QUERY PLAN {sql}");
        let mut query = sqlx::query_as::<_, (i64, i64, i64, String)>(&plan);
        for _ in 0..parameters {
            query = query.bind(None::<String>);
        }
        match query.fetch_all(pool).await {
            Ok(rows) => {
                for (_, _, _, detail) in rows {
                    let _ = writeln!(out, "   {detail}");
                }
            }
            Err(error) => {
                let _ = writeln!(out, "   (no plan: {error})");
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// The table.

/// Prints the tables (and the plans) on stdout.
pub fn print_report(args: &Args, runs: &[BoardRun]) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "\nboard: one pipeline of {} stages, {} cards (one conversation each), first page of \
         {PAGE}; {} board requests (one client), {} moves ({} clients), {cores} cores",
        STAGES.len(),
        args.board_cards,
        args.board_requests,
        args.board_moves,
        args.board_clients
    );
    for run in runs {
        let s = &run.setup;
        let shape = &run.shape;
        println!(
            "{}: seeded in {:.1} s — API {:.1} s (agents, pipeline, stages, {} tickets created \
             and assigned), {} events decided and appended {:.1} s, projections at rest \
             {:.1} s later, analyse {:.1} s; load {} -> {}",
            run.backend,
            s.total().as_secs_f64(),
            s.api.as_secs_f64(),
            shape.tickets,
            s.events_written,
            s.events.as_secs_f64(),
            s.catch_up.as_secs_f64(),
            s.analyse.as_secs_f64(),
            run.load.0,
            run.load.1
        );
        println!(
            "{}: {} cards, {} with a ticket, {} labelled; every board answer right ({} cards \
             shown, {} with an assignee, {} labelled); moves: {} within a stage, {:.0} moves/s, \
             {} cards not in their last stage, {} stages miscounted",
            run.backend,
            shape.cards,
            shape.tickets,
            shape.labelled,
            shape.shown,
            shape.shown_assigned,
            shape.shown_labelled,
            run.reorders,
            run.moves.len() as f64 / run.moves_wall.as_secs_f64().max(f64::EPSILON),
            run.misplaced,
            run.miscounted
        );
    }
    println!(
        "\n{:<9} {:<46} {}",
        "backend",
        "measurement",
        quantile_header()
    );
    for run in runs {
        println!(
            "{:<9} {:<46} {}",
            run.backend,
            format!("board(first: {PAGE}), GraphQL, 1 client"),
            quantile_columns(&run.board)
        );
        println!(
            "{:<9} {:<46} {}",
            run.backend,
            "  its statements only (projection calls)",
            quantile_columns(&run.statements)
        );
        println!(
            "{:<9} {:<46} {}",
            run.backend,
            format!("moveCard, GraphQL, {} clients", args.board_clients),
            quantile_columns(&run.moves)
        );
        println!(
            "{:<9} {:<46} {}",
            run.backend,
            "moveCard, GraphQL, 1 client",
            quantile_columns(&run.alone.graphql)
        );
        println!(
            "{:<9} {:<46} {}",
            run.backend,
            "  Helpdesk::move_card (command + wait)",
            quantile_columns(&run.alone.command)
        );
        println!(
            "{:<9} {:<46} {}",
            run.backend,
            "  its aggregate loads (card, pipelines)",
            quantile_columns(&run.alone.reads)
        );
    }
    println!("\ncolumn page (pipelines::cards, {PAGE}+1 rows), p50 / p99 ms by stage:");
    for run in runs {
        let cells: Vec<String> = run
            .columns
            .iter()
            .map(|h| {
                format!(
                    "{:.2}/{:.2}",
                    h.value_at_quantile(0.5) as f64 / 1e3,
                    h.value_at_quantile(0.99) as f64 / 1e3
                )
            })
            .collect();
        println!("{:<9} {}", run.backend, cells.join("  "));
    }
    for run in runs.iter().filter(|r| !r.plans.is_empty()) {
        println!("\n{}: plans\n{}", run.backend, run.plans);
    }
}
