//! `--scenario log`: the event log at 1,000,000 events — reading it, rebuilding every
//! projection from it, the audit chain over it, and exporting it (issue 7).
//!
//! # Set-up (per backend, on a fresh database)
//!
//! [`Database::connect`] and [`Database::migrate`] only: no `Helpdesk`, so no projection,
//! process or runner runs while the log is written or measured.
//!
//! **Events decided by the real aggregates, appended in bulk.** A discrete-event simulation
//! of a year of helpdesk work (fixed random seed) drives the domain aggregates in memory —
//! `Aggregate::handle`, which applies each decided event to the aggregate as the event
//! store would — and appends what they decide, with the metadata the command side stamps
//! (organization, actor, `occurred_at`, request and correlation ids, causation ids for the
//! process managers' commands), until exactly `--log-events` (1,000,000) events are
//! written:
//!
//! - [`ORGANIZATIONS`] (8) organizations of different sizes; for each, first a WhatsApp
//!   channel (`ChannelConfigured`), four divisions (`DivisionCreated`) and 6-19 agents
//!   (`AgentRegistered` with two divisions each and 10 slots, `AgentWentOnline`).
//! - Then tickets arriving at random (exponential gaps; ~110 a day per organization share)
//!   over the year before now, each one a lifecycle whose steps follow at random delays of
//!   minutes to days, so the lifecycles of many tickets interleave in the log as they would:
//!   `TicketCreated` (by an admin or an agent; subject and description from a few templates,
//!   priority from the default keywords, a division for three in four), the assignment saga
//!   (`SlotReserved` on the agent, then `TicketAssigned`: half by an admin to an agent
//!   serving the division, half claimed by the agent; an agent without a free slot is
//!   skipped), `TicketStarted`, 0-3 `CommentAdded`, `TicketResolved`, `SlotReleased` (the
//!   assignment process, caused by the resolution), for one in six `TicketRated`, and for
//!   five in six `TicketClosed` up to three days later.
//! - One ticket in four comes from a WhatsApp conversation instead: a customer with a key
//!   of their own (a `customer_keys` row as `personal_data::key_for` stores it; handle, name
//!   and every text sealed with it) writes (`ConversationStarted`, `MessageReceived`), gets
//!   the menu (`OutboundMessageQueued`), picks a division (`MessageReceived`,
//!   `DivisionChosen`); the channel's service actor opens the ticket (id derived from the
//!   conversation, as the helpdesk does), links it (`TicketLinked`) and tells the queue
//!   place (`OutboundMessageQueued`); after the assignment the agent is announced
//!   (`OutboundMessageQueued` with `announces`), the agent replies, the customer answers
//!   (`MessageReceived`, a notification for the agent) and the agent reads it
//!   (`ConversationRead`).
//!
//! Tickets still open when the budget runs out stay open, as in any live log. Rows go to
//! `events` through the log's own columns and defaults (position, commit order, the
//! organization column; on PostgreSQL the NOTIFY trigger fires, nobody listens): on
//! PostgreSQL one `INSERT … SELECT FROM UNNEST(…)` of [`BATCH`] (5,000) rows per statement,
//! on SQLite `INSERT`s of 500 rows, 5,000 per transaction. A writer task appends while the
//! generator decides the next batch. Then the ticket-number counters are set, and on
//! PostgreSQL `VACUUM (ANALYZE)` runs (what autovacuum would have done by then; timed
//! apart).
//!
//! # What is measured
//!
//! 1. **Reading the log** in commit order, as the runners do: `event_log::read_after` in
//!    pages of 500 (the runner's batch) and of 5,000, rows decoded into `StoredEvent`s
//!    (payload and metadata JSON parsed); and `read_raw` in pages of 5,000 (the export's
//!    read, JSON left as text). The ceiling of anything that reads the whole log.
//! 2. **Rebuilds**: `projections::rebuild::rebuild` of every projection of
//!    `all_projections()` on its own, one after the other (skip with `--log-skip each`):
//!    wall time, events applied, the swap time it reports. Events/s per projection is the
//!    log's length over its wall time; overall, the log's length over the sum. Then all of
//!    them together from one read of the log, as `helpdesk replay` does
//!    (`rebuild::rebuild_all`), once per `--log-replay-jobs` value (projections applying
//!    at once; default 2, replay's default on PostgreSQL): the log's length over the wall
//!    time. Then every read model's row count is checked against what the simulation
//!    decided.
//! 3. **Where the rebuild time goes**: the round trip (`SELECT 1` on one connection, 2,000
//!    times), and for every projection owning tables, the first `--log-profile-events`
//!    (20,000) events of the log applied again into scratch copies of its tables
//!    (`rebuild::Scratch`), one event per transaction, timing each event; on PostgreSQL
//!    every statement sqlx executes is counted and timed from sqlx's own query log (the
//!    `sqlx::query` tracing events, seen by a subscriber scoped to that work; on SQLite
//!    sqlx logs from its worker thread, where the scoped subscriber does not reach, so
//!    there only the time per event is shown). Weighted by the log's event types this gives
//!    the statements per applied event and the time spent in statements for the whole log,
//!    to compare with the rebuild's wall time.
//! 4. **Audit chain**: the real `AuditChainProjection` through the runner's own batch step
//!    (`runner::batch`, the loop of `runner::catch_up`) from the start of the log, for at
//!    most `--log-chain-seconds` (180 s) or the whole log; the rest of the chain, if any, is
//!    filled in bulk with the hashes of the same `audit::link_hash` (per organization,
//!    continuing from the runner's last link; timed and reported apart). Then
//!    `audit::verify` for every organization over the whole log: every link must verify.
//! 5. **Export**: `api::export::export` of the whole log as NDJSON and as CSV into a byte
//!    counter around `std::io::sink()`: events/s, MB/s, and the process's resident memory
//!    before and its peak during each export (`VmRSS`, `VmHWM` of `/proc/self/status`; the
//!    peak is reset through `/proc/self/clear_refs` before each export, so it is the
//!    export's own). Also `event_log::count_filtered`, which `helpdesk export` runs first
//!    for its progress bar.
//!
//! The load average (`/proc/loadavg`) is printed at each step.

use anyhow::{anyhow, bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Duration as TimeDelta, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use domain::agent::{AgentAction, AgentStatus};
use domain::channel::{ChannelConfig, ChannelProfile};
use domain::conversation::{Channel, Conversation, ConversationAction, Inbound};
use domain::division::{
    AssignmentAlgorithm, AssignmentMode, Division, DivisionAction, DivisionProfile,
};
use domain::metadata::EventMetadata;
use domain::ticket::{AssignmentVia, Ticket, TicketAction};
use domain::{Actor, Command, PriorityKeywords, Role};
use projections::audit::{self, AuditChainProjection, AUDIT_CHAIN, GENESIS};
use projections::db::{timestamp, Backend};
use projections::event_log::{self, Checkpoint, LogFilter, StoredEvent};
use projections::personal_data::CustomerKey;
use projections::rebuild::{self, Scratch};
use projections::runner::{self, Cursor, Step, Stretch};
use projections::{on_backend, Database};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::conversations::{channel_id, derived_id};
use api::export::{self, Format};
use api::helpdesk::all_projections;

use super::{loadavg, on_fresh_databases, progress_bar, Args, LogStep};

/// The organizations and their shares of the tickets.
const ORGANIZATIONS: [(&str, u32); 8] = [
    ("acme", 30),
    ("globex", 20),
    ("initech", 14),
    ("umbrella", 10),
    ("hooli", 9),
    ("stark", 7),
    ("wayne", 6),
    ("wonka", 4),
];

/// Each organization's divisions.
const DIVISIONS: [&str; 4] = ["Billing", "Technical", "Sales", "Returns"];

/// Slots of every agent.
const AGENT_CAPACITY: i64 = 10;

/// Rows per append (PostgreSQL: per statement; SQLite: per transaction).
const BATCH: usize = 5_000;

/// SQLite: rows per `INSERT` statement.
const SQLITE_ROWS: usize = 500;

/// The simulated period, ending an hour ago.
const YEAR_DAYS: i64 = 365;

/// Events a ticket lifecycle makes on average in this simulation (to spread the arrivals
/// over the year; the exact total is `--log-events` whatever this says).
const EVENTS_PER_TICKET: f64 = 11.0;

/// The pages read in (1).
const READ_PAGES: [i64; 2] = [500, 5_000];

/// `SELECT 1` round trips timed.
const ROUND_TRIPS: usize = 2_000;

/// The fixed seed of the simulation.
const SEED: u64 = 0x1065_7e57;

/// The figures of one backend.
pub struct LogRun {
    backend: &'static str,
    seeding: Seeding,
    reads: Vec<ReadRate>,
    rebuilds: Vec<RebuildFigures>,
    /// Every projection rebuilt as `helpdesk replay` does, from one read of the log:
    /// (projections applying at once, events applied, wall time), per `--log-replay-jobs`.
    replay_all: Vec<(usize, usize, Duration)>,
    /// Row counts that differ from what was seeded: (table, found, expected).
    mismatches: Vec<(String, i64, i64)>,
    checked_tables: usize,
    /// `SELECT 1` on one connection: (median, mean).
    round_trip: (Duration, Duration),
    profiles: Vec<Profile>,
    profile_events: usize,
    chain: Option<ChainFigures>,
    exports: Vec<ExportFigures>,
    count_filtered: Duration,
    /// (step, load average).
    loads: Vec<(String, String)>,
}

struct Seeding {
    tally: Tally,
    elapsed: Duration,
    /// Time the writer task spent appending (overlapping the generation).
    writer_busy: Duration,
    vacuum: Duration,
    log_bytes: i64,
    /// `VmHWM` after seeding, kB.
    peak_kb: u64,
}

struct ReadRate {
    what: String,
    events: u64,
    elapsed: Duration,
}

struct RebuildFigures {
    projection: &'static str,
    applied: usize,
    elapsed: Duration,
    swap: Duration,
    load: String,
}

/// One projection's statements and time by event type, on the sample.
struct Profile {
    projection: &'static str,
    /// Event type -> figures.
    by_type: BTreeMap<String, TypeProfile>,
}

#[derive(Default, Clone)]
struct TypeProfile {
    /// Events of the type in the whole log (of aggregate types the projection consumes).
    in_log: u64,
    /// Events of the type in the sample.
    events: u64,
    /// Statements executed for them (not counting BEGIN / COMMIT), PostgreSQL only.
    statements: u64,
    /// Time inside those statements, seconds.
    statement_secs: f64,
    /// Wall time of applying them, one transaction per event, seconds.
    wall_secs: f64,
}

struct ChainFigures {
    by_runner: u64,
    runner: Duration,
    filled: u64,
    fill: Duration,
    organizations: usize,
    verified: i64,
    verify: Duration,
    pending: i64,
    broken: Vec<String>,
}

struct ExportFigures {
    format: &'static str,
    events: u64,
    bytes: u64,
    elapsed: Duration,
    rss_before_kb: u64,
    peak_during_kb: u64,
    peak_reset: bool,
}

/// What the simulation decided, for the row-count checks.
#[derive(Default, Debug, Clone)]
struct Tally {
    events: u64,
    channels: u64,
    divisions: u64,
    agents: u64,
    tickets: u64,
    assigned: u64,
    comments: u64,
    resolved: u64,
    rated: u64,
    closed: u64,
    reserved: u64,
    released: u64,
    conversations: u64,
    inbound: u64,
    outbound: u64,
    notifications: u64,
}

/// Runs the scenario on the backends `--backend` selects.
pub async fn run(args: &Args) -> anyhow::Result<Vec<LogRun>> {
    on_fresh_databases(args, "bench_log", |backend, url| async move {
        measure(backend, &url, args).await
    })
    .await
}

async fn measure(backend: &'static str, url: &str, args: &Args) -> anyhow::Result<LogRun> {
    let db = Database::connect(Some(url))
        .await
        .with_context(|| format!("connecting to {backend}"))?;
    db.migrate().await?;
    let measured = measure_on(backend, &db, args).await;
    db.close().await;
    measured
}

async fn measure_on(backend: &'static str, db: &Database, args: &Args) -> anyhow::Result<LogRun> {
    let n = args.log_events;
    let mut loads = vec![("start".to_string(), loadavg())];
    eprintln!(
        "log / {backend}: deciding and appending {n} events (load {})",
        loadavg()
    );
    let seeding = seed(db, n).await?;
    loads.push(("seeded".into(), loadavg()));
    eprintln!(
        "log / {backend}: seeded in {:.1} s ({:.0} events/s), {} tickets, {} conversations; \
         vacuum {:.1} s",
        seeding.elapsed.as_secs_f64(),
        n as f64 / seeding.elapsed.as_secs_f64(),
        seeding.tally.tickets,
        seeding.tally.conversations,
        seeding.vacuum.as_secs_f64()
    );

    // 1. Reading.
    let mut reads = Vec::new();
    for page in READ_PAGES {
        let started = Instant::now();
        let events = read_all(db, page).await?;
        reads.push(ReadRate {
            what: format!("read_after, pages of {page}, decoded"),
            events,
            elapsed: started.elapsed(),
        });
    }
    let started = Instant::now();
    let events = read_all_raw(db, READ_PAGES[1]).await?;
    reads.push(ReadRate {
        what: format!("read_raw, pages of {}, as stored", READ_PAGES[1]),
        events,
        elapsed: started.elapsed(),
    });
    for read in &reads {
        if read.events != n {
            bail!("{}: read {} events, expected {n}", read.what, read.events);
        }
        eprintln!(
            "log / {backend}: {} — {:.1} s, {:.0} events/s",
            read.what,
            read.elapsed.as_secs_f64(),
            read.events as f64 / read.elapsed.as_secs_f64()
        );
    }
    loads.push(("read".into(), loadavg()));

    // 2. Rebuilds.
    let chosen = |name: &str| {
        args.log_projections.is_empty() || args.log_projections.iter().any(|p| p == name)
    };
    let mut rebuilds = Vec::new();
    for projection in all_projections().into_iter().filter(|p| {
        !args.log_skip.contains(&LogStep::Rebuild)
            && !args.log_skip.contains(&LogStep::Each)
            && chosen(p.name())
    }) {
        let progress = progress_bar(n, &format!("events read ({})", projection.name()))?;
        let started = Instant::now();
        let rebuilt = rebuild::rebuild(db, projection.clone(), |read| progress.inc(read as u64))
            .await
            .with_context(|| format!("rebuilding {}", projection.name()))?;
        let elapsed = started.elapsed();
        progress.finish_and_clear();
        let load = loadavg();
        eprintln!(
            "log / {backend}: rebuilt {} in {:.1} s ({} applied, swap {:.0} ms; load {load})",
            projection.name(),
            elapsed.as_secs_f64(),
            rebuilt.applied,
            rebuilt.swap.as_secs_f64() * 1e3
        );
        rebuilds.push(RebuildFigures {
            projection: projection.name(),
            applied: rebuilt.applied,
            elapsed,
            swap: rebuilt.swap,
            load,
        });
    }
    let mut replay_all = Vec::new();
    let every_projection =
        args.log_projections.is_empty() && !args.log_skip.contains(&LogStep::Rebuild);
    for &at_once in args.log_replay_jobs.iter().filter(|_| every_projection) {
        let projections = all_projections();
        let progress = progress_bar(
            n * projections.len() as u64,
            &format!("events read (all projections, {at_once} at once)"),
        )?;
        let started = Instant::now();
        let mut applied = 0;
        for (name, outcome) in rebuild::rebuild_all(db, &projections, at_once, |_, read| {
            progress.inc(read as u64)
        })
        .await
        {
            applied += outcome
                .with_context(|| format!("rebuilding {name}"))?
                .applied;
        }
        let elapsed = started.elapsed();
        progress.finish_and_clear();
        eprintln!(
            "log / {backend}: rebuilt every projection from one read, {at_once} at once, in \
             {:.1} s ({:.0} log events/s; load {})",
            elapsed.as_secs_f64(),
            rate(n, elapsed),
            loadavg()
        );
        replay_all.push((at_once, applied, elapsed));
    }
    loads.push(("rebuilt".into(), loadavg()));
    let (checked_tables, mismatches) = if every_projection {
        check_counts(db, &seeding.tally).await?
    } else {
        (0, Vec::new())
    };
    for (table, found, expected) in &mismatches {
        eprintln!("log / {backend}: {table} holds {found} rows, expected {expected}");
    }

    // 3. Where the time goes.
    let round_trip = round_trip(db).await?;
    let (profiles, profile_events) = if args.log_skip.contains(&LogStep::Profile) {
        (Vec::new(), 0)
    } else {
        profile(db, args.log_profile_events as usize, &chosen).await?
    };
    loads.push(("profiled".into(), loadavg()));

    // 4. Audit chain.
    let chain = if args.log_skip.contains(&LogStep::Chain) {
        None
    } else {
        Some(chain(db, n, Duration::from_secs(args.log_chain_seconds)).await?)
    };
    loads.push(("chained".into(), loadavg()));

    // 5. Export.
    let started = Instant::now();
    let counted = event_log::count_filtered(db, &LogFilter::default(), Checkpoint::START).await?;
    let count_filtered = started.elapsed();
    if counted != n as i64 {
        bail!("count_filtered says {counted} events, expected {n}");
    }
    let mut exports = Vec::new();
    let formats = if args.log_skip.contains(&LogStep::Export) {
        Vec::new()
    } else {
        vec![(Format::Ndjson, "NDJSON"), (Format::Csv, "CSV")]
    };
    for (format, name) in formats {
        let peak_reset = reset_peak();
        let (rss_before_kb, _) = memory();
        let progress = progress_bar(n, &format!("events exported ({name})"))?;
        let mut out = Counting {
            inner: std::io::sink(),
            bytes: 0,
        };
        let started = Instant::now();
        let events = export::export(db, &LogFilter::default(), format, &mut out, |k| {
            progress.inc(k as u64)
        })
        .await?;
        let elapsed = started.elapsed();
        progress.finish_and_clear();
        let (_, peak_during_kb) = memory();
        if events != n {
            bail!("the {name} export wrote {events} events, expected {n}");
        }
        eprintln!(
            "log / {backend}: export {name} {:.1} s, {:.0} events/s, {:.1} MB/s",
            elapsed.as_secs_f64(),
            events as f64 / elapsed.as_secs_f64(),
            out.bytes as f64 / 1e6 / elapsed.as_secs_f64()
        );
        exports.push(ExportFigures {
            format: name,
            events,
            bytes: out.bytes,
            elapsed,
            rss_before_kb,
            peak_during_kb,
            peak_reset,
        });
    }
    loads.push(("exported".into(), loadavg()));
    Ok(LogRun {
        backend,
        seeding,
        reads,
        rebuilds,
        replay_all,
        mismatches,
        checked_tables,
        round_trip,
        profiles,
        profile_events,
        chain,
        exports,
        count_filtered,
        loads,
    })
}

// ---------------------------------------------------------------------------------------
// Seeding: the simulation.

/// One row of the event log, as the event store writes it (JSON as text).
struct Row {
    aggregate_type: &'static str,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: String,
    metadata: String,
}

/// A `customer_keys` row: customer, organization, stored key.
type KeyRow = (String, String, String);

/// What the generator hands the writer.
struct Batch {
    rows: Vec<Row>,
    keys: Vec<KeyRow>,
}

/// What one command did to the log.
enum Emitted {
    /// Written; the position of its last event.
    Written(i64),
    /// The aggregate refused (the reason), or decided nothing.
    Refused(String),
    /// Its events would overshoot `--log-events`.
    Full,
}

/// Decides commands on aggregates and queues their events for the writer.
struct Generator {
    rng: StdRng,
    budget: u64,
    tally: Tally,
    rows: Vec<Row>,
    keys: Vec<KeyRow>,
    sender: tokio::sync::mpsc::Sender<Batch>,
    requests: u64,
}

impl Generator {
    /// A fresh request id (the correlation id too).
    fn request(&mut self, prefix: &str) -> String {
        self.requests += 1;
        format!("{prefix}-{}", self.requests)
    }

    /// A random UUID from the seeded generator.
    fn uuid(&mut self) -> String {
        let mut bytes = [0u8; 16];
        self.rng.fill_bytes(&mut bytes);
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
    }

    /// Has `aggregate` decide `action` by `actor`; when it decides events that still fit
    /// the budget, applies them to it (as the store would) and queues them with their
    /// metadata. `seq` is the aggregate's event count.
    #[allow(clippy::too_many_arguments)]
    async fn emit<A>(
        &mut self,
        aggregate: &mut A,
        id: &str,
        seq: &mut i64,
        organization: &str,
        actor: &Actor,
        action: A::Command,
        at_ms: i64,
        request: &str,
        causation: Option<i64>,
    ) -> anyhow::Result<Emitted>
    where
        A: Aggregate<Services = ()> + Clone,
    {
        let mut decided = aggregate.clone();
        let sink = EventSink::default();
        if let Err(refused) = decided.handle(action, &(), &sink).await {
            return Ok(Emitted::Refused(refused.to_string()));
        }
        let events = sink.collect().await;
        if events.is_empty() {
            return Ok(Emitted::Refused("no event".into()));
        }
        if self.tally.events + events.len() as u64 > self.budget {
            return Ok(Emitted::Full);
        }
        *aggregate = decided;
        let metadata = EventMetadata {
            organization: organization.to_string(),
            actor: actor.clone(),
            occurred_at: at(at_ms),
            request_id: request.to_string(),
            correlation_id: request.to_string(),
            causation_id: causation.map(|p| p.to_string()),
        };
        let metadata = serde_json::to_string(&metadata.to_map())?;
        for event in events {
            *seq += 1;
            self.tally.events += 1;
            self.rows.push(Row {
                aggregate_type: A::TYPE,
                aggregate_id: id.to_string(),
                sequence: *seq,
                event_type: event.event_type(),
                event_version: event.event_version(),
                payload: serde_json::to_string(&event)?,
                metadata: metadata.clone(),
            });
        }
        if self.rows.len() >= BATCH {
            self.flush().await?;
        }
        // One writer, appending in order on a fresh log: positions are 1, 2, 3, …
        Ok(Emitted::Written(self.tally.events as i64))
    }

    /// Hands the queued rows to the writer.
    async fn flush(&mut self) -> anyhow::Result<()> {
        if self.rows.is_empty() && self.keys.is_empty() {
            return Ok(());
        }
        let batch = Batch {
            rows: std::mem::take(&mut self.rows),
            keys: std::mem::take(&mut self.keys),
        };
        self.sender
            .send(batch)
            .await
            .map_err(|_| anyhow!("the writer stopped"))
    }

    /// A delay between `lo` and `hi` minutes, in milliseconds.
    fn minutes(&mut self, lo: f64, hi: f64) -> i64 {
        (self.rng.gen_range(lo..hi) * 60_000.0) as i64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.gen_bool(p)
    }
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_else(Utc::now)
}

/// Whether `emitted` wrote; a refusal where none is possible is a bench bug.
fn written(emitted: Emitted, what: &str) -> anyhow::Result<Option<i64>> {
    match emitted {
        Emitted::Written(position) => Ok(Some(position)),
        Emitted::Full => Ok(None),
        Emitted::Refused(why) => bail!("the aggregate refused the bench's {what}: {why}"),
    }
}

struct Org {
    name: &'static str,
    admin: Actor,
    /// The WhatsApp channel's service actor.
    service: Actor,
    channel: String,
    divisions: Vec<String>,
    agents: Vec<Agent>,
    numbers: i64,
}

struct Agent {
    id: String,
    actor: Actor,
    status: AgentStatus,
    seq: i64,
    /// Indexes into the organization's divisions.
    divisions: [usize; 2],
}

/// A customer's side of a ticket that came from WhatsApp.
struct Chat {
    id: String,
    conversation: Conversation,
    seq: i64,
    customer: String,
    external: String,
    key: CustomerKey,
    first_text: String,
}

/// Where a lifecycle stands: the step it takes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    ChatStart,
    ChatMenu,
    ChatChoice,
    ChatOpen,
    Create,
    Assign,
    Announce,
    Start,
    Reply,
    FollowUp,
    MarkRead,
    Comment,
    Resolve,
    Release,
    Rate,
    Close,
}

struct Case {
    org: usize,
    step: Phase,
    ticket_id: String,
    ticket: Ticket,
    division: Option<usize>,
    agent: Option<usize>,
    assigned_at: i64,
    assigned_position: i64,
    resolved_position: i64,
    comments: u32,
    rate: bool,
    close: bool,
    chat: Option<Chat>,
}

const SUBJECTS: [&str; 10] = [
    "Cannot log in to the {} portal",
    "Invoice {} was charged twice",
    "The {} app crashes on start",
    "Refund for order {}",
    "urgent: {} is down for the whole team",
    "Question about the {} plan",
    "Password reset mail does not arrive ({})",
    "Please update our billing address besok ({})",
    "Export from {} is missing rows",
    "Printer {} on the third floor jams",
];

const PRODUCTS: [&str; 8] = [
    "Billing", "Atlas", "Orbit", "Nimbus", "Vector", "Pulse", "Harbor", "Quill",
];

const SENTENCES: [&str; 8] = [
    "It started this morning after the update.",
    "We tried restarting and clearing the cache, nothing changed.",
    "Three colleagues see the same error message.",
    "The error reads: request failed with status 500.",
    "Could you please have a look as soon as possible?",
    "Attached are the order number and a screenshot.",
    "It worked fine last week.",
    "We are on the business plan with 40 seats.",
];

const COMMENTS: [&str; 6] = [
    "Asked the customer for the exact error message and a screenshot.",
    "Reproduced on staging; the session cookie expires too early.",
    "Escalated to the platform team, waiting for their answer.",
    "Refund issued, the customer will see it in 3-5 working days.",
    "Customer confirmed the workaround helps for now.",
    "Checked the logs: the import job timed out twice last night.",
];

const RESOLUTIONS: [&str; 4] = [
    "Reset the account and confirmed the login works.",
    "Duplicate charge refunded.",
    "Fixed by the 4.2.1 release.",
    "Explained the plan limits; no fault found.",
];

fn customer_name(i: u64) -> String {
    const FIRST: [&str; 12] = [
        "Siti", "Budi", "Ayu", "Rizky", "Dewi", "Agus", "Putri", "Hendra", "Maria", "Joko", "Lina",
        "Andi",
    ];
    const LAST: [&str; 8] = [
        "Rahayu", "Santoso", "Wijaya", "Pratama", "Lestari", "Hidayat", "Kusuma", "Nugroho",
    ];
    format!(
        "{} {}",
        FIRST[(i % 12) as usize],
        LAST[((i / 12) % 8) as usize]
    )
}

/// Decides and appends `n` events on `db`; returns what was decided and how long it took.
async fn seed(db: &Database, n: u64) -> anyhow::Result<Seeding> {
    let started = Instant::now();
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Batch>(2);
    let progress = progress_bar(n, "events decided and appended")?;
    let writer = {
        let db = db.clone();
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut busy = Duration::ZERO;
            while let Some(batch) = receiver.recv().await {
                let t = Instant::now();
                append_keys(&db, &batch.keys).await?;
                append(&db, &batch.rows).await?;
                busy += t.elapsed();
                progress.inc(batch.rows.len() as u64);
            }
            anyhow::Ok(busy)
        })
    };
    let mut generator = Generator {
        rng: StdRng::seed_from_u64(SEED),
        budget: n,
        tally: Tally::default(),
        rows: Vec::with_capacity(BATCH + 8),
        keys: Vec::new(),
        sender,
        requests: 0,
    };
    let simulated = simulate(&mut generator).await;
    let flushed = match simulated {
        Ok(orgs) => generator.flush().await.map(|()| orgs),
        Err(error) => Err(error),
    };
    let Generator { tally, sender, .. } = generator;
    drop(sender);
    let writer_busy = writer.await.context("the writer panicked")??;
    let orgs = flushed?;
    progress.finish_and_clear();
    if tally.events != n {
        bail!("the simulation wrote {} events, expected {n}", tally.events);
    }
    // The counters the command side allocates ticket numbers from.
    for org in &orgs {
        on_backend!(db, |pool| {
            sqlx::query(
                "INSERT INTO ticket_number_counters (organization_id, last_number) VALUES ($1, $2)",
            )
            .bind(org.name)
            .bind(org.numbers)
            .execute(pool)
            .await?;
        });
    }
    let elapsed = started.elapsed();
    let (_, peak_kb) = memory();
    let started = Instant::now();
    let log_bytes = match db {
        Backend::Postgres(pool) => {
            sqlx::query("VACUUM (ANALYZE)").execute(pool).await?;
            sqlx::query_scalar("SELECT pg_total_relation_size('events')")
                .fetch_one(pool)
                .await?
        }
        Backend::Sqlite(pool) => sqlx::query_scalar(
            "SELECT p.page_count * s.page_size FROM pragma_page_count() p, pragma_page_size() s",
        )
        .fetch_one(pool)
        .await?,
    };
    let vacuum = started.elapsed();
    Ok(Seeding {
        tally,
        elapsed,
        writer_busy,
        vacuum,
        log_bytes,
        peak_kb,
    })
}

/// The set-up of every organization, then the tickets until the budget is spent.
async fn simulate(g: &mut Generator) -> anyhow::Result<Vec<Org>> {
    let end = (Utc::now() - TimeDelta::hours(1)).timestamp_millis();
    let start = end - TimeDelta::days(YEAR_DAYS).num_milliseconds();
    let mut orgs = Vec::new();
    let mut t = start - TimeDelta::days(1).num_milliseconds();
    for (name, weight) in ORGANIZATIONS {
        let org = set_up(g, name, weight, t).await?;
        t += 60_000;
        orgs.push(org);
    }
    let total_weight: u32 = ORGANIZATIONS.iter().map(|(_, w)| w).sum();
    let tickets = (g.budget as f64 / EVENTS_PER_TICKET).max(1.0);
    let gap_ms = (end - start) as f64 / tickets;
    // (time, tie-break, case id); case id 0 is the next arrival.
    let mut heap: BinaryHeap<Reverse<(i64, u64, u64)>> = BinaryHeap::new();
    let mut cases: HashMap<u64, Case> = HashMap::new();
    let mut order = 0u64;
    let mut next_case = 1u64;
    heap.push(Reverse((start, 0, 0)));
    let keywords = PriorityKeywords::default();
    while g.tally.events < g.budget {
        let Some(Reverse((now, _, id))) = heap.pop() else {
            break;
        };
        order += 1;
        if id == 0 {
            let mut pick = g.rng.gen_range(0..total_weight);
            let mut org = 0;
            while pick >= ORGANIZATIONS[org].1 {
                pick -= ORGANIZATIONS[org].1;
                org += 1;
            }
            let chat = g.chance(0.25);
            let case = Case {
                org,
                step: if chat {
                    Phase::ChatStart
                } else {
                    Phase::Create
                },
                ticket_id: String::new(),
                ticket: Ticket::default(),
                division: None,
                agent: None,
                assigned_at: 0,
                assigned_position: 0,
                resolved_position: 0,
                comments: [0, 1, 1, 2, 2, 3][g.rng.gen_range(0..6)],
                rate: g.chance(1.0 / 6.0),
                close: g.chance(5.0 / 6.0),
                chat: None,
            };
            cases.insert(next_case, case);
            heap.push(Reverse((now, order, next_case)));
            next_case += 1;
            let gap = -(1.0 - g.rng.gen::<f64>()).ln() * gap_ms;
            heap.push(Reverse((now + gap as i64 + 1, order, 0)));
            continue;
        }
        let Some(mut case) = cases.remove(&id) else {
            continue;
        };
        let org = &mut orgs[case.org];
        if let Some(next) = advance(g, org, &mut case, now, &keywords).await? {
            cases.insert(id, case);
            heap.push(Reverse((next, order, id)));
        }
    }
    Ok(orgs)
}

/// Channel, divisions and agents of one organization, decided at `t`.
async fn set_up(g: &mut Generator, name: &'static str, weight: u32, t: i64) -> anyhow::Result<Org> {
    let admin = Actor::new(format!("admin-{name}"), Role::Admin);
    let channel = channel_id(name, Channel::Whatsapp);
    let service = api::conversations::channel_caller(name, &channel).actor;
    let request = g.request("setup");
    let mut config = ChannelConfig::default();
    let profile = ChannelProfile {
        channel: Channel::Whatsapp,
        api_base_url: None,
        phone_number_id: Some(format!("1065{:08}", weight * 7919)),
    };
    let emitted = g
        .emit(
            &mut config,
            &channel,
            &mut 0,
            name,
            &admin,
            command(name, &admin, profile),
            t,
            &request,
            None,
        )
        .await?;
    written(emitted, "channel configuration")?;
    g.tally.channels += 1;
    let mut divisions = Vec::new();
    for (k, division) in DIVISIONS.iter().enumerate() {
        let id = g.uuid();
        let profile = DivisionProfile {
            name: (*division).to_string(),
            description: Some(format!("{division} questions")),
            keywords: vec![division.to_lowercase()],
            position: Some(k as i64 + 1),
            assignment_mode: if k == 2 {
                AssignmentMode::Claim
            } else {
                AssignmentMode::Auto
            },
            algorithm: AssignmentAlgorithm::RoundRobin,
            avg_handling_minutes: 20 + 10 * k as i64,
        };
        let request = g.request("setup");
        let action = command(name, &admin, DivisionAction::Create(profile));
        let emitted = g
            .emit(
                &mut Division::default(),
                &id,
                &mut 0,
                name,
                &admin,
                action,
                t,
                &request,
                None,
            )
            .await?;
        written(emitted, "division")?;
        g.tally.divisions += 1;
        divisions.push(id);
    }
    let mut agents = Vec::new();
    for k in 0..(4 + weight as usize / 2) {
        let id = format!("agent-{name}-{k:02}");
        let actor = Actor::new(id.clone(), Role::Agent);
        let served = [k % DIVISIONS.len(), (k + 1) % DIVISIONS.len()];
        let mut agent = Agent {
            id: id.clone(),
            actor: actor.clone(),
            status: AgentStatus::default(),
            seq: 0,
            divisions: served,
        };
        let request = g.request("setup");
        let action = command(
            name,
            &admin,
            AgentAction::Register {
                name: format!("Agent {k} of {name}"),
                max_tickets: AGENT_CAPACITY,
                division_ids: served.iter().map(|d| divisions[*d].clone()).collect(),
            },
        );
        let emitted = g
            .emit(
                &mut agent.status,
                &id,
                &mut agent.seq,
                name,
                &admin,
                action,
                t,
                &request,
                None,
            )
            .await?;
        written(emitted, "agent registration")?;
        let request = g.request("presence");
        let action = command(name, &actor, AgentAction::GoOnline);
        let emitted = g
            .emit(
                &mut agent.status,
                &id,
                &mut agent.seq,
                name,
                &actor,
                action,
                t + 1_000,
                &request,
                None,
            )
            .await?;
        written(emitted, "agent presence")?;
        g.tally.agents += 1;
        agents.push(agent);
    }
    Ok(Org {
        name,
        admin,
        service,
        channel,
        divisions,
        agents,
        numbers: 0,
    })
}

fn command<A>(organization: &str, actor: &Actor, action: A) -> Command<A> {
    Command {
        organization: organization.to_string(),
        actor: actor.clone(),
        action,
    }
}

/// Takes the case's next step at `now`; returns when it takes the one after, or `None`
/// when the lifecycle is over (or the budget ran out).
async fn advance(
    g: &mut Generator,
    org: &mut Org,
    case: &mut Case,
    now: i64,
    keywords: &PriorityKeywords,
) -> anyhow::Result<Option<i64>> {
    let name = org.name;
    let next = match case.step {
        Phase::ChatStart => {
            let i = g.tally.conversations + 1;
            let external = format!("62812{i:08}");
            let customer = derived_id(&["customer", name, Channel::Whatsapp.as_str(), &external]);
            let id = derived_id(&["conversation", &org.channel, &external]);
            let mut secret = [0u8; 32];
            g.rng.fill_bytes(&mut secret);
            let stored = STANDARD.encode(secret);
            let key = CustomerKey::from_stored(&customer, &stored)?;
            let product = PRODUCTS[g.rng.gen_range(0..PRODUCTS.len())];
            let first_text = if g.chance(0.1) {
                format!("Halo, {product} gawat, tidak bisa dipakai sama sekali!")
            } else {
                format!("Halo, saya ada pertanyaan tentang {product}, nomor pesanan {i}.")
            };
            let mut chat = Chat {
                id,
                conversation: Conversation::default(),
                seq: 0,
                customer,
                external,
                key,
                first_text,
            };
            let text = chat.first_text.clone();
            let emitted = receive(g, org, &mut chat, &text, now, Some(customer_name(i))).await?;
            if written(emitted, "first message")?.is_none() {
                return Ok(None);
            }
            g.keys
                .push((chat.customer.clone(), name.to_string(), stored));
            g.tally.conversations += 1;
            g.tally.inbound += 1;
            case.chat = Some(chat);
            case.step = Phase::ChatMenu;
            now + g.rng.gen_range(1_000..3_000)
        }
        Phase::ChatMenu => {
            let chat = case.chat.as_mut().context("no chat")?;
            let text = chat.key.seal(&menu_text());
            let message_id = derived_id(&["menu", &chat.id, "1"]);
            let action = ConversationAction::SendSystemMessage {
                message_id,
                text,
                announces: None,
                offers_menu: true,
            };
            if !system_message(g, org, chat, action, now, None).await? {
                return Ok(None);
            }
            case.step = Phase::ChatChoice;
            now + g.minutes(0.3, 5.0)
        }
        Phase::ChatChoice => {
            let division = g.rng.gen_range(0..DIVISIONS.len());
            let chat = case.chat.as_mut().context("no chat")?;
            let emitted = receive(g, org, chat, &(division + 1).to_string(), now, None).await?;
            if written(emitted, "menu choice")?.is_none() {
                return Ok(None);
            }
            g.tally.inbound += 1;
            let request = g.request("process");
            let action = command(
                name,
                &org.service,
                ConversationAction::ChooseDivision {
                    division_id: org.divisions[division].clone(),
                },
            );
            let emitted = g
                .emit(
                    &mut chat.conversation,
                    &chat.id.clone(),
                    &mut chat.seq,
                    name,
                    &org.service,
                    action,
                    now,
                    &request,
                    None,
                )
                .await?;
            if written(emitted, "division choice")?.is_none() {
                return Ok(None);
            }
            case.division = Some(division);
            case.step = Phase::ChatOpen;
            now + 1_000
        }
        Phase::ChatOpen => {
            let chat = case.chat.as_mut().context("no chat")?;
            case.ticket_id = derived_id(&["ticket", &chat.id, "1"]);
            let (priority, priority_source) = keywords.resolve(None, &chat.first_text);
            org.numbers += 1;
            let request = g.request("wamid");
            let action = TicketAction::Create {
                number: org.numbers,
                subject: "WhatsApp conversation".into(),
                description: None,
                priority,
                priority_source,
                division_id: case.division.map(|d| org.divisions[d].clone()),
            };
            let mut seq = case.ticket.version() as i64;
            let emitted = g
                .emit(
                    &mut case.ticket,
                    &case.ticket_id,
                    &mut seq,
                    name,
                    &org.service,
                    command(name, &org.service, action),
                    now,
                    &request,
                    None,
                )
                .await?;
            if written(emitted, "ticket creation")?.is_none() {
                return Ok(None);
            }
            g.tally.tickets += 1;
            let action = command(
                name,
                &org.service,
                ConversationAction::LinkTicket {
                    ticket_id: case.ticket_id.clone(),
                },
            );
            let emitted = g
                .emit(
                    &mut chat.conversation,
                    &chat.id.clone(),
                    &mut chat.seq,
                    name,
                    &org.service,
                    action,
                    now,
                    &request,
                    None,
                )
                .await?;
            if written(emitted, "ticket link")?.is_none() {
                return Ok(None);
            }
            let text = chat.key.seal(&format!(
                "Thank you! You are number {} in the {} queue.",
                g.rng.gen_range(1..20),
                DIVISIONS[case.division.unwrap_or(0)]
            ));
            let action = ConversationAction::SendSystemMessage {
                message_id: derived_id(&["queued", &chat.id, &case.ticket_id]),
                text,
                announces: None,
                offers_menu: false,
            };
            if !system_message(g, org, chat, action, now, None).await? {
                return Ok(None);
            }
            case.step = Phase::Assign;
            now + g.minutes(2.0, 90.0)
        }
        Phase::Create => {
            let product = PRODUCTS[g.rng.gen_range(0..PRODUCTS.len())];
            let subject = SUBJECTS[g.rng.gen_range(0..SUBJECTS.len())].replace("{}", product);
            let mut description = String::new();
            for _ in 0..g.rng.gen_range(1..6) {
                if !description.is_empty() {
                    description.push(' ');
                }
                description.push_str(SENTENCES[g.rng.gen_range(0..SENTENCES.len())]);
            }
            let (priority, priority_source) =
                keywords.resolve(None, &format!("{subject} {description}"));
            case.division = g.chance(0.75).then(|| g.rng.gen_range(0..DIVISIONS.len()));
            case.ticket_id = g.uuid();
            org.numbers += 1;
            let actor = if g.chance(0.3) {
                org.admin.clone()
            } else {
                org.agents[g.rng.gen_range(0..org.agents.len())]
                    .actor
                    .clone()
            };
            let request = g.request("req");
            let action = TicketAction::Create {
                number: org.numbers,
                subject,
                description: Some(description),
                priority,
                priority_source,
                division_id: case.division.map(|d| org.divisions[d].clone()),
            };
            let mut seq = 0;
            let emitted = g
                .emit(
                    &mut case.ticket,
                    &case.ticket_id,
                    &mut seq,
                    name,
                    &actor,
                    command(name, &actor, action),
                    now,
                    &request,
                    None,
                )
                .await?;
            if written(emitted, "ticket creation")?.is_none() {
                return Ok(None);
            }
            g.tally.tickets += 1;
            case.step = Phase::Assign;
            now + g.minutes(2.0, 90.0)
        }
        Phase::Assign => {
            let by_admin = g.chance(0.5);
            let first = g.rng.gen_range(0..org.agents.len());
            let mut assigned = false;
            for k in 0..org.agents.len() {
                let a = (first + k) % org.agents.len();
                if !by_admin {
                    if let Some(d) = case.division {
                        if !org.agents[a].divisions.contains(&d) {
                            continue;
                        }
                    }
                }
                let agent = &mut org.agents[a];
                let actor = if by_admin {
                    org.admin.clone()
                } else {
                    agent.actor.clone()
                };
                let version = case.ticket.version();
                let request = g.request("req");
                let reservation_id = g.uuid();
                let reserve = AgentAction::ReserveSlot {
                    ticket_id: case.ticket_id.clone(),
                    ticket_version: version,
                    division_id: case.division.map(|d| org.divisions[d].clone()),
                    via: if by_admin {
                        AssignmentVia::Admin
                    } else {
                        AssignmentVia::Claim
                    },
                    reservation_id,
                };
                let agent_id = agent.id.clone();
                match g
                    .emit(
                        &mut agent.status,
                        &agent_id,
                        &mut agent.seq,
                        name,
                        &actor,
                        command(name, &actor, reserve),
                        now,
                        &request,
                        None,
                    )
                    .await?
                {
                    Emitted::Written(_) => {}
                    Emitted::Full => return Ok(None),
                    // No free slot: the next agent.
                    Emitted::Refused(_) => continue,
                }
                g.tally.reserved += 1;
                let action = if by_admin {
                    TicketAction::Assign {
                        agent_id: agent_id.clone(),
                        reservation: version,
                    }
                } else {
                    TicketAction::Claim {
                        reservation: version,
                    }
                };
                let mut seq = version as i64;
                let emitted = g
                    .emit(
                        &mut case.ticket,
                        &case.ticket_id,
                        &mut seq,
                        name,
                        &actor,
                        command(name, &actor, action),
                        now + 40,
                        &request,
                        None,
                    )
                    .await?;
                let Some(position) = written(emitted, "assignment")? else {
                    return Ok(None);
                };
                g.tally.assigned += 1;
                if by_admin {
                    g.tally.notifications += 1;
                }
                case.agent = Some(a);
                case.assigned_at = now + 40;
                case.assigned_position = position;
                assigned = true;
                break;
            }
            if !assigned {
                // Every agent who could take it is full: the queue waits.
                now + g.minutes(20.0, 40.0)
            } else if case.chat.is_some() {
                case.step = Phase::Announce;
                now + 1_000
            } else {
                case.step = Phase::Start;
                now + g.minutes(1.0, 45.0)
            }
        }
        Phase::Announce => {
            let chat = case.chat.as_mut().context("no chat")?;
            let agent = &org.agents[case.agent.context("no agent")?];
            let text = chat.key.seal(&format!("{} will help you now.", agent.id));
            let action = ConversationAction::SendSystemMessage {
                message_id: derived_id(&["announce", &chat.id, &case.ticket_id]),
                text,
                announces: Some((case.ticket_id.clone(), case.assigned_at * 1_000)),
                offers_menu: false,
            };
            if !system_message(g, org, chat, action, now, Some(case.assigned_position)).await? {
                return Ok(None);
            }
            case.step = Phase::Start;
            now + g.minutes(1.0, 45.0)
        }
        Phase::Start => {
            let actor = org.agents[case.agent.context("no agent")?].actor.clone();
            if !on_ticket(g, name, case, &actor, TicketAction::Start, now).await? {
                return Ok(None);
            }
            if case.chat.is_some() {
                case.step = Phase::Reply;
                now + g.minutes(1.0, 10.0)
            } else {
                after_work(g, case, now)
            }
        }
        Phase::Reply => {
            let actor = org.agents[case.agent.context("no agent")?].actor.clone();
            let message_id = g.uuid();
            let chat = case.chat.as_mut().context("no chat")?;
            let text = chat.key.seal(
                "Thanks for waiting. Could you tell me the order number and what you see on screen?",
            );
            let request = g.request("req");
            let action = command(name, &actor, ConversationAction::Reply { message_id, text });
            let emitted = g
                .emit(
                    &mut chat.conversation,
                    &chat.id.clone(),
                    &mut chat.seq,
                    name,
                    &actor,
                    action,
                    now,
                    &request,
                    None,
                )
                .await?;
            if written(emitted, "reply")?.is_none() {
                return Ok(None);
            }
            g.tally.outbound += 1;
            case.step = Phase::FollowUp;
            now + g.minutes(1.0, 30.0)
        }
        Phase::FollowUp => {
            let chat = case.chat.as_mut().context("no chat")?;
            let text = format!(
                "Nomor pesanan {}, layar menampilkan kode error {}.",
                g.rng.gen_range(10_000..99_999),
                g.rng.gen_range(100..600)
            );
            let emitted = receive(g, org, chat, &text, now, None).await?;
            if written(emitted, "customer follow-up")?.is_none() {
                return Ok(None);
            }
            g.tally.inbound += 1;
            // The linked ticket is held: its agent is notified.
            g.tally.notifications += 1;
            case.step = Phase::MarkRead;
            now + g.minutes(1.0, 10.0)
        }
        Phase::MarkRead => {
            let actor = org.agents[case.agent.context("no agent")?].actor.clone();
            let chat = case.chat.as_mut().context("no chat")?;
            let request = g.request("req");
            let action = command(name, &actor, ConversationAction::MarkRead);
            let emitted = g
                .emit(
                    &mut chat.conversation,
                    &chat.id.clone(),
                    &mut chat.seq,
                    name,
                    &actor,
                    action,
                    now,
                    &request,
                    None,
                )
                .await?;
            if written(emitted, "mark read")?.is_none() {
                return Ok(None);
            }
            after_work(g, case, now)
        }
        Phase::Comment => {
            let actor = if g.chance(0.1) {
                org.admin.clone()
            } else {
                org.agents[case.agent.context("no agent")?].actor.clone()
            };
            let comment_id = g.uuid();
            let text = COMMENTS[g.rng.gen_range(0..COMMENTS.len())].to_string();
            let action = TicketAction::AddComment { comment_id, text };
            if !on_ticket(g, name, case, &actor, action, now).await? {
                return Ok(None);
            }
            g.tally.comments += 1;
            case.comments -= 1;
            after_work(g, case, now)
        }
        Phase::Resolve => {
            let actor = org.agents[case.agent.context("no agent")?].actor.clone();
            let resolution = g
                .chance(0.8)
                .then(|| RESOLUTIONS[g.rng.gen_range(0..RESOLUTIONS.len())].to_string());
            let request = g.request("req");
            let mut seq = case.ticket.version() as i64;
            let action = command(name, &actor, TicketAction::Resolve { resolution });
            let emitted = g
                .emit(
                    &mut case.ticket,
                    &case.ticket_id,
                    &mut seq,
                    name,
                    &actor,
                    action,
                    now,
                    &request,
                    None,
                )
                .await?;
            let Some(position) = written(emitted, "resolution")? else {
                return Ok(None);
            };
            g.tally.resolved += 1;
            case.resolved_position = position;
            case.step = Phase::Release;
            now + g.rng.gen_range(50..2_000)
        }
        Phase::Release => {
            let agent = &mut org.agents[case.agent.context("no agent")?];
            let system = Actor::new("system:assignment", Role::Service);
            let request = format!("assignment-{}", g.uuid());
            let action = command(
                name,
                &system,
                AgentAction::ReleaseSlot {
                    ticket_id: case.ticket_id.clone(),
                    ticket_version: case.ticket.version(),
                },
            );
            let agent_id = agent.id.clone();
            let emitted = g
                .emit(
                    &mut agent.status,
                    &agent_id,
                    &mut agent.seq,
                    name,
                    &system,
                    action,
                    now,
                    &request,
                    Some(case.resolved_position),
                )
                .await?;
            if written(emitted, "slot release")?.is_none() {
                return Ok(None);
            }
            g.tally.released += 1;
            if case.rate {
                case.step = Phase::Rate;
                now + g.minutes(10.0, 600.0)
            } else if case.close {
                case.step = Phase::Close;
                now + g.minutes(60.0, 72.0 * 60.0)
            } else {
                return Ok(None);
            }
        }
        Phase::Rate => {
            let actor = if case.chat.is_some() {
                org.service.clone()
            } else {
                org.admin.clone()
            };
            let rating = g.rng.gen_range(1..=5);
            let feedback = (rating < 3).then(|| "Took too long.".to_string());
            if !on_ticket(
                g,
                name,
                case,
                &actor,
                TicketAction::Rate { rating, feedback },
                now,
            )
            .await?
            {
                return Ok(None);
            }
            g.tally.rated += 1;
            if !case.close {
                return Ok(None);
            }
            case.step = Phase::Close;
            now + g.minutes(60.0, 72.0 * 60.0)
        }
        Phase::Close => {
            let actor = if g.chance(0.3) {
                org.admin.clone()
            } else {
                org.agents[case.agent.context("no agent")?].actor.clone()
            };
            if !on_ticket(g, name, case, &actor, TicketAction::Close, now).await? {
                return Ok(None);
            }
            g.tally.closed += 1;
            return Ok(None);
        }
    };
    Ok(Some(next))
}

/// After starting, replying or commenting: the next comment, else the resolution.
fn after_work(g: &mut Generator, case: &mut Case, now: i64) -> i64 {
    if case.comments > 0 {
        case.step = Phase::Comment;
        now + g.minutes(5.0, 180.0)
    } else {
        case.step = Phase::Resolve;
        now + g.minutes(10.0, 240.0)
    }
}

/// One ticket command by `actor`; `false` when the budget ran out.
async fn on_ticket(
    g: &mut Generator,
    organization: &str,
    case: &mut Case,
    actor: &Actor,
    action: TicketAction,
    now: i64,
) -> anyhow::Result<bool> {
    let request = g.request("req");
    let mut seq = case.ticket.version() as i64;
    let what = api::helpdesk::command_name(&action);
    let emitted = g
        .emit(
            &mut case.ticket,
            &case.ticket_id,
            &mut seq,
            organization,
            actor,
            command(organization, actor, action),
            now,
            &request,
            None,
        )
        .await?;
    Ok(written(emitted, what)?.is_some())
}

/// The customer's message `text` through the channel (starting the conversation when
/// `name` is given).
async fn receive(
    g: &mut Generator,
    org: &Org,
    chat: &mut Chat,
    text: &str,
    now: i64,
    name: Option<String>,
) -> anyhow::Result<Emitted> {
    let wamid = format!("wamid.{}", g.uuid());
    let inbound = Inbound {
        channel: Channel::Whatsapp,
        channel_id: org.channel.clone(),
        customer_id: chat.customer.clone(),
        external_id: chat.key.seal(&chat.external),
        customer_name: name.map(|n| chat.key.seal(&n)),
        message_id: derived_id(&["message", &chat.id, &wamid]),
        text: chat.key.seal(text),
    };
    let action = command(org.name, &org.service, ConversationAction::Receive(inbound));
    let id = chat.id.clone();
    g.emit(
        &mut chat.conversation,
        &id,
        &mut chat.seq,
        org.name,
        &org.service,
        action,
        now,
        &wamid,
        None,
    )
    .await
}

/// A message of the helpdesk itself to the customer; `false` when the budget ran out.
async fn system_message(
    g: &mut Generator,
    org: &Org,
    chat: &mut Chat,
    action: ConversationAction,
    now: i64,
    causation: Option<i64>,
) -> anyhow::Result<bool> {
    let request = g.request("process");
    let action = command(org.name, &org.service, action);
    let id = chat.id.clone();
    let emitted = g
        .emit(
            &mut chat.conversation,
            &id,
            &mut chat.seq,
            org.name,
            &org.service,
            action,
            now,
            &request,
            causation,
        )
        .await?;
    let done = written(emitted, "system message")?.is_some();
    if done {
        g.tally.outbound += 1;
    }
    Ok(done)
}

fn menu_text() -> String {
    let mut text = String::from("Welcome! Please choose:");
    for (k, division) in DIVISIONS.iter().enumerate() {
        let _ = write!(text, "\n{}. {division}", k + 1);
    }
    text
}

// ---------------------------------------------------------------------------------------
// Seeding: the writer.

/// PostgreSQL: one statement per batch; `ORDER BY n` keeps the batch's order in the
/// positions the column default hands out.
const PG_APPEND: &str = "
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                    payload, metadata)
SELECT t, i, s, e, v, p::json, m::json
  FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::text[],
              $7::text[]) WITH ORDINALITY AS r(t, i, s, e, v, p, m, n)
 ORDER BY n";

async fn append(db: &Database, rows: &[Row]) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    match db {
        Backend::Postgres(pool) => {
            sqlx::query(PG_APPEND)
                .bind(rows.iter().map(|r| r.aggregate_type).collect::<Vec<_>>())
                .bind(
                    rows.iter()
                        .map(|r| r.aggregate_id.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(rows.iter().map(|r| r.sequence).collect::<Vec<_>>())
                .bind(
                    rows.iter()
                        .map(|r| r.event_type.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    rows.iter()
                        .map(|r| r.event_version.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(rows.iter().map(|r| r.payload.as_str()).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.metadata.as_str()).collect::<Vec<_>>())
                .execute(pool)
                .await?;
        }
        Backend::Sqlite(pool) => {
            let mut tx = pool.begin().await?;
            for chunk in rows.chunks(SQLITE_ROWS) {
                let sql = values_insert(
                    "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                     event_version, payload, metadata) VALUES ",
                    7,
                    chunk.len(),
                );
                let mut query = sqlx::query(&sql);
                for row in chunk {
                    query = query
                        .bind(row.aggregate_type)
                        .bind(&row.aggregate_id)
                        .bind(row.sequence)
                        .bind(&row.event_type)
                        .bind(&row.event_version)
                        .bind(&row.payload)
                        .bind(&row.metadata);
                }
                query.execute(&mut *tx).await?;
            }
            tx.commit().await?;
        }
    }
    Ok(())
}

/// `head` followed by `rows` groups of `columns` placeholders.
fn values_insert(head: &str, columns: usize, rows: usize) -> String {
    let mut sql = String::from(head);
    for k in 0..rows {
        sql.push_str(if k == 0 { "(" } else { ", (" });
        for c in 0..columns {
            let sep = if c == 0 { "" } else { ", " };
            let _ = write!(sql, "{sep}${}", k * columns + c + 1);
        }
        sql.push(')');
    }
    sql
}

/// The customers' keys, as `personal_data::key_for` stores them.
async fn append_keys(db: &Database, keys: &[KeyRow]) -> anyhow::Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let created = timestamp(Utc::now());
    match db {
        Backend::Postgres(pool) => {
            sqlx::query(
                "INSERT INTO customer_keys (customer_id, organization_id, secret_key, created_at)
                 SELECT c, o, k, $4 FROM UNNEST($1::text[], $2::text[], $3::text[]) AS r(c, o, k)",
            )
            .bind(keys.iter().map(|k| k.0.as_str()).collect::<Vec<_>>())
            .bind(keys.iter().map(|k| k.1.as_str()).collect::<Vec<_>>())
            .bind(keys.iter().map(|k| k.2.as_str()).collect::<Vec<_>>())
            .bind(&created)
            .execute(pool)
            .await?;
        }
        Backend::Sqlite(pool) => {
            for chunk in keys.chunks(SQLITE_ROWS) {
                let sql = values_insert(
                    "INSERT INTO customer_keys (customer_id, organization_id, secret_key, \
                     created_at) VALUES ",
                    4,
                    chunk.len(),
                );
                let mut query = sqlx::query(&sql);
                for (customer, organization, key) in chunk {
                    query = query
                        .bind(customer)
                        .bind(organization)
                        .bind(key)
                        .bind(&created);
                }
                query.execute(pool).await?;
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 1. Reading; 2. the row counts after the rebuilds.

/// Reads the whole log with `read_after` in pages of `page`; returns the events read.
async fn read_all(db: &Database, page: i64) -> anyhow::Result<u64> {
    let mut cursor = Checkpoint::START;
    let mut read = 0u64;
    loop {
        let events = event_log::read_after(db, cursor, page).await?;
        let Some(last) = events.last() else { break };
        cursor = last.checkpoint;
        read += events.len() as u64;
    }
    Ok(read)
}

/// The same with `read_raw` (no JSON parsing).
async fn read_all_raw(db: &Database, page: i64) -> anyhow::Result<u64> {
    let mut cursor = Checkpoint::START;
    let mut read = 0u64;
    let filter = LogFilter::default();
    loop {
        let events = event_log::read_raw(db, &filter, cursor, page).await?;
        let Some(last) = events.last() else { break };
        cursor = last.checkpoint;
        read += events.len() as u64;
    }
    Ok(read)
}

/// Every read model's row count against the simulation's tally: (tables checked,
/// mismatches).
async fn check_counts(
    db: &Database,
    t: &Tally,
) -> anyhow::Result<(usize, Vec<(String, i64, i64)>)> {
    let expected: Vec<(&str, u64)> = vec![
        ("channels", t.channels),
        ("divisions", t.divisions),
        ("agents", t.agents),
        ("slot_reservations", t.reserved - t.released),
        ("tickets", t.tickets),
        ("ticket_comments", t.comments),
        ("queue_entries", t.tickets - t.assigned),
        ("notification_tickets", t.tickets),
        ("notifications", t.notifications),
        ("conversations", t.conversations),
        ("conversation_messages", t.inbound + t.outbound),
        ("outbox_routes", t.conversations),
        ("outbox_jobs", t.outbound),
        ("chatbot_customers", t.conversations),
        ("customer_keys", t.conversations),
    ];
    let mut mismatches = Vec::new();
    for (table, want) in &expected {
        let found: i64 = on_backend!(db, |pool| sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM {table}"
        ))
        .fetch_one(pool)
        .await?);
        if found != *want as i64 {
            mismatches.push((table.to_string(), found, *want as i64));
        }
    }
    let statuses: Vec<(String, i64)> = on_backend!(db, |pool| sqlx::query_as(
        "SELECT status, COUNT(*) FROM tickets GROUP BY status"
    )
    .fetch_all(pool)
    .await?);
    let status = |s: &str| {
        statuses
            .iter()
            .find(|(name, _)| name == s)
            .map_or(0, |(_, c)| *c)
    };
    let closed = status("CLOSED");
    if closed != t.closed as i64 {
        mismatches.push(("tickets CLOSED".into(), closed, t.closed as i64));
    }
    let resolved = status("RESOLVED");
    if resolved != (t.resolved - t.closed) as i64 {
        mismatches.push((
            "tickets RESOLVED".into(),
            resolved,
            (t.resolved - t.closed) as i64,
        ));
    }
    Ok((expected.len() + 2, mismatches))
}

// ---------------------------------------------------------------------------------------
// 3. Where the time goes.

/// [`ROUND_TRIPS`] `SELECT CAST(1 AS BIGINT)` on one connection: (median, mean).
async fn round_trip(db: &Database) -> anyhow::Result<(Duration, Duration)> {
    let single = db.single_connection().await?;
    let result = async {
        let mut samples = Vec::with_capacity(ROUND_TRIPS);
        for _ in 0..ROUND_TRIPS {
            let started = Instant::now();
            let _: i64 = on_backend!(&single, |pool| sqlx::query_scalar(
                "SELECT CAST(1 AS BIGINT)"
            )
            .fetch_one(pool)
            .await?);
            samples.push(started.elapsed());
        }
        let mean = samples.iter().sum::<Duration>() / ROUND_TRIPS as u32;
        samples.sort_unstable();
        anyhow::Ok((samples[ROUND_TRIPS / 2], mean))
    }
    .await;
    single.close().await;
    result
}

/// Statements and time of every projection owning tables, by event type, on the first
/// `sample` events of the log; with each type's count in the whole log.
async fn profile(
    db: &Database,
    sample: usize,
    chosen: &dyn Fn(&str) -> bool,
) -> anyhow::Result<(Vec<Profile>, usize)> {
    use tracing::instrument::WithSubscriber;
    use tracing_subscriber::layer::SubscriberExt;

    let mut events: Vec<StoredEvent> = Vec::with_capacity(sample);
    let mut cursor = Checkpoint::START;
    while events.len() < sample {
        let page = event_log::read_after(db, cursor, 5_000).await?;
        let Some(last) = page.last() else { break };
        cursor = last.checkpoint;
        events.extend(page);
    }
    events.truncate(sample);
    let in_log: Vec<(String, String, i64)> = on_backend!(db, |pool| {
        sqlx::query_as(
        "SELECT aggregate_type, event_type, COUNT(*) FROM events GROUP BY aggregate_type, event_type"
    )
    .fetch_all(pool)
    .await?
    });
    let counter = Arc::new(Mutex::new(StatementCount::default()));
    let dispatch =
        tracing::Dispatch::new(tracing_subscriber::registry().with(Statements(counter.clone())));
    let mut profiles = Vec::new();
    for projection in all_projections() {
        if !chosen(projection.name()) {
            continue;
        }
        if projection.tables().is_empty() {
            // The outbox: its inserts land in the live tables (filled by the rebuild, so
            // every insert would meet a conflict); not representative.
            continue;
        }
        let mut by_type: BTreeMap<String, TypeProfile> = BTreeMap::new();
        for (aggregate_type, event_type, count) in &in_log {
            if projection.consumes(aggregate_type) {
                by_type.entry(event_type.clone()).or_default().in_log += *count as u64;
            }
        }
        if by_type.is_empty() {
            continue;
        }
        let scratch = Scratch::new(db, projection.as_ref()).await?;
        let applied = async {
            for event in events
                .iter()
                .filter(|e| projection.consumes(&e.aggregate_type))
            {
                let before = counter.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let started = Instant::now();
                scratch
                    .apply(projection.as_ref(), std::slice::from_ref(event))
                    .with_subscriber(dispatch.clone())
                    .await?;
                let wall = started.elapsed().as_secs_f64();
                let after = counter.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let figures = by_type.entry(event.event_type.clone()).or_default();
                figures.events += 1;
                figures.wall_secs += wall;
                figures.statements += after.statements - before.statements;
                figures.statement_secs += after.seconds - before.seconds;
            }
            anyhow::Ok(())
        }
        .await;
        scratch.close().await;
        applied.with_context(|| format!("profiling {}", projection.name()))?;
        profiles.push(Profile {
            projection: projection.name(),
            by_type,
        });
    }
    Ok((profiles, events.len()))
}

#[derive(Default, Clone)]
struct StatementCount {
    statements: u64,
    seconds: f64,
}

/// Counts the statements sqlx logs (`sqlx::query`), leaving out transaction control.
struct Statements(Arc<Mutex<StatementCount>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Statements {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != "sqlx::query" {
            return;
        }
        let mut fields = QueryFields::default();
        event.record(&mut fields);
        let control = ["BEGIN", "COMMIT", "ROLLBACK"].iter().any(|c| {
            fields
                .summary
                .trim_start()
                .to_ascii_uppercase()
                .starts_with(c)
        });
        if control {
            return;
        }
        let mut count = self.0.lock().unwrap_or_else(|e| e.into_inner());
        count.statements += 1;
        count.seconds += fields.elapsed_secs;
    }
}

#[derive(Default)]
struct QueryFields {
    summary: String,
    elapsed_secs: f64,
}

impl tracing::field::Visit for QueryFields {
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        if field.name() == "elapsed_secs" {
            self.elapsed_secs = value;
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "summary" {
            self.summary = value.to_string();
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "summary" && self.summary.is_empty() {
            self.summary = format!("{value:?}").trim_matches('"').to_string();
        }
    }
}

// ---------------------------------------------------------------------------------------
// 4. The audit chain.

async fn chain(db: &Database, n: u64, limit: Duration) -> anyhow::Result<ChainFigures> {
    let projection = AuditChainProjection;
    let head = event_log::log_head(db).await?;
    let mut cursor = Cursor::at(runner::load_checkpoint(db, AUDIT_CHAIN).await?);
    let progress = progress_bar(n, "events chained by the runner")?;
    let started = Instant::now();
    let mut by_runner = 0u64;
    while cursor.seen < head && started.elapsed() < limit {
        match runner::batch(db, &projection, cursor, Stretch::Live, None, false).await? {
            Step::Advanced {
                cursor: to,
                read,
                applied,
            } => {
                cursor = to;
                by_runner += applied as u64;
                progress.inc(read as u64);
            }
            Step::Overtaken => bail!("the audit chain's checkpoint moved under the bench"),
            Step::Idle => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
    runner::flush(db, &projection, cursor).await?;
    let runner_time = started.elapsed();
    progress.finish_and_clear();
    eprintln!(
        "audit chain: the runner chained {by_runner} events in {:.1} s",
        runner_time.as_secs_f64()
    );

    // The rest in bulk, with the same link function.
    let started = Instant::now();
    let mut filled = 0u64;
    if cursor.seen < head {
        let progress = progress_bar(n - by_runner, "links filled in bulk")?;
        let heads: Vec<(String, i64, String)> = on_backend!(db, |pool| sqlx::query_as(
            "SELECT a.organization_id, a.link, a.hash FROM audit_chain a
              WHERE a.link = (SELECT MAX(b.link) FROM audit_chain b
                               WHERE b.organization_id = a.organization_id)"
        )
        .fetch_all(pool)
        .await?);
        let mut last: HashMap<String, (i64, [u8; 32])> = HashMap::new();
        for (organization, link, hash) in heads {
            let bytes: [u8; 32] = hex::decode(&hash)?
                .try_into()
                .map_err(|_| anyhow!("a chain hash is not 32 bytes"))?;
            last.insert(organization, (link, bytes));
        }
        let mut after = cursor.seen;
        loop {
            let page = event_log::read_after(db, after, BATCH as i64).await?;
            let Some(end) = page.last() else { break };
            after = end.checkpoint;
            let mut links = Vec::with_capacity(page.len());
            for event in &page {
                let (link, previous) = last
                    .entry(event.metadata.organization.clone())
                    .or_insert((0, GENESIS));
                let hash = audit::link_hash(previous, event)?;
                *link += 1;
                *previous = hash;
                links.push((
                    event.metadata.organization.clone(),
                    *link,
                    event.position(),
                    hex::encode(hash),
                ));
            }
            insert_links(db, &links).await?;
            filled += links.len() as u64;
            progress.inc(links.len() as u64);
        }
        on_backend!(db, |pool| {
            sqlx::query(
                "UPDATE projection_checkpoints SET tx_id = $1, position = $2 WHERE name = $3",
            )
            .bind(after.tx_id)
            .bind(after.position)
            .bind(AUDIT_CHAIN)
            .execute(pool)
            .await?;
        });
        progress.finish_and_clear();
    }
    let fill = started.elapsed();

    let organizations = audit::organizations(db).await?;
    let progress = progress_bar(n, "events verified")?;
    let started = Instant::now();
    let mut verified = 0;
    let mut pending = 0;
    let mut broken = Vec::new();
    for organization in &organizations {
        let result = audit::verify(db, organization, |k| progress.inc(k as u64)).await?;
        verified += result.checked_events;
        pending += result.pending_events;
        if !result.ok {
            broken.push(format!(
                "{organization}: at position {:?}: {}",
                result.first_bad_position,
                result.problem.unwrap_or_default()
            ));
        }
    }
    let verify = started.elapsed();
    progress.finish_and_clear();
    Ok(ChainFigures {
        by_runner,
        runner: runner_time,
        filled,
        fill,
        organizations: organizations.len(),
        verified,
        verify,
        pending,
        broken,
    })
}

async fn insert_links(db: &Database, links: &[(String, i64, i64, String)]) -> anyhow::Result<()> {
    match db {
        Backend::Postgres(pool) => {
            sqlx::query(
                "INSERT INTO audit_chain (organization_id, link, position, hash)
                 SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::text[])",
            )
            .bind(links.iter().map(|l| l.0.as_str()).collect::<Vec<_>>())
            .bind(links.iter().map(|l| l.1).collect::<Vec<_>>())
            .bind(links.iter().map(|l| l.2).collect::<Vec<_>>())
            .bind(links.iter().map(|l| l.3.as_str()).collect::<Vec<_>>())
            .execute(pool)
            .await?;
        }
        Backend::Sqlite(pool) => {
            let mut tx = pool.begin().await?;
            for chunk in links.chunks(SQLITE_ROWS) {
                let sql = values_insert(
                    "INSERT INTO audit_chain (organization_id, link, position, hash) VALUES ",
                    4,
                    chunk.len(),
                );
                let mut query = sqlx::query(&sql);
                for (organization, link, position, hash) in chunk {
                    query = query
                        .bind(organization)
                        .bind(link)
                        .bind(position)
                        .bind(hash);
                }
                query.execute(&mut *tx).await?;
            }
            tx.commit().await?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 5. Export; memory; load.

/// Counts the bytes written through it.
struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: std::io::Write> std::io::Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// `VmRSS` and `VmHWM` of this process, kB (0 when unknown).
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets `VmHWM` to the current RSS (Linux 4.0+); whether it worked.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

// ---------------------------------------------------------------------------------------
// The tables.

fn rate(events: u64, elapsed: Duration) -> f64 {
    events as f64 / elapsed.as_secs_f64().max(f64::EPSILON)
}

/// Prints the tables on stdout.
pub fn print_report(args: &Args, runs: &[LogRun]) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let n = args.log_events;
    println!(
        "\nlog: {n} events decided by the aggregates, {} organizations; {cores} cores",
        ORGANIZATIONS.len()
    );
    for run in runs {
        let s = &run.seeding;
        let t = &s.tally;
        println!(
            "\n{}: seeded in {:.1} s ({:.0} events/s; the writer was busy {:.1} s), log {:.0} MB \
             on disk with its indexes, peak RSS {:.0} MB; {} tickets ({} assigned, {} resolved, \
             {} closed, {} rated, {} comments), {} conversations ({} in, {} out), {} agents, {} \
             divisions; {} {:.1} s",
            run.backend,
            s.elapsed.as_secs_f64(),
            rate(n, s.elapsed),
            s.writer_busy.as_secs_f64(),
            s.log_bytes as f64 / 1e6,
            s.peak_kb as f64 / 1e3,
            t.tickets,
            t.assigned,
            t.resolved,
            t.closed,
            t.rated,
            t.comments,
            t.conversations,
            t.inbound,
            t.outbound,
            t.agents,
            t.divisions,
            if run.backend == "postgres" {
                "VACUUM (ANALYZE)"
            } else {
                "measuring the log"
            },
            s.vacuum.as_secs_f64()
        );
        let loads: Vec<String> = run
            .loads
            .iter()
            .map(|(step, load)| format!("{step} {load}"))
            .collect();
        println!("{}: load average: {}", run.backend, loads.join("; "));

        println!("\n{}: reading the log in commit order", run.backend);
        println!(
            "  {:<40} {:>9} {:>8} {:>10}",
            "read", "events", "s", "events/s"
        );
        for read in &run.reads {
            println!(
                "  {:<40} {:>9} {:>8.1} {:>10.0}",
                read.what,
                read.events,
                read.elapsed.as_secs_f64(),
                rate(read.events, read.elapsed)
            );
        }

        if !run.rebuilds.is_empty() {
            println!(
                "\n{}: rebuild (projections::rebuild::rebuild, one projection after the other)",
                run.backend
            );
            println!(
                "  {:<17} {:>9} {:>8} {:>12} {:>11} {:>12} {:>9}  load after",
                "projection",
                "applied",
                "wall s",
                "log events/s",
                "applied/s",
                "µs/applied",
                "swap ms"
            );
            let mut total = Duration::ZERO;
            for r in &run.rebuilds {
                total += r.elapsed;
                let per = if r.applied > 0 {
                    format!("{:.0}", r.elapsed.as_secs_f64() * 1e6 / r.applied as f64)
                } else {
                    "-".into()
                };
                println!(
                    "  {:<17} {:>9} {:>8.1} {:>12.0} {:>11.0} {:>12} {:>9.0}  {}",
                    r.projection,
                    r.applied,
                    r.elapsed.as_secs_f64(),
                    rate(n, r.elapsed),
                    rate(r.applied as u64, r.elapsed),
                    per,
                    r.swap.as_secs_f64() * 1e3,
                    r.load
                );
            }
            println!(
                "  {:<17} {:>9} {:>8.1} {:>12.0}   (overall: log events / total wall time)",
                "all",
                run.rebuilds.iter().map(|r| r.applied).sum::<usize>(),
                total.as_secs_f64(),
                rate(n, total)
            );
        }
        if !run.replay_all.is_empty() {
            println!(
                "\n{}: rebuild of every projection from one read of the log \
                 (projections::rebuild::rebuild_all, as `helpdesk replay`)",
                run.backend
            );
            for (at_once, applied, elapsed) in &run.replay_all {
                println!(
                    "  {:<17} {:>9} {:>8.1} {:>12.0}   ({at_once} applying at once)",
                    "all, one read",
                    applied,
                    elapsed.as_secs_f64(),
                    rate(n, *elapsed)
                );
            }
        }
        if run.checked_tables > 0 || !run.mismatches.is_empty() {
            if run.mismatches.is_empty() {
                println!(
                    "  row counts: all {} checks equal what the simulation decided",
                    run.checked_tables
                );
            } else {
                for (table, found, expected) in &run.mismatches {
                    println!("  ROW COUNT MISMATCH: {table} holds {found}, expected {expected}");
                }
            }
        }
        if !run.profiles.is_empty() {
            println!(
                "\n{}: where the rebuild time goes — round trip (SELECT 1, one connection) median \
             {:.0} µs, mean {:.0} µs; the first {} events of the log applied again into scratch \
             tables, one event per transaction{}",
                run.backend,
                run.round_trip.0.as_secs_f64() * 1e6,
                run.round_trip.1.as_secs_f64() * 1e6,
                run.profile_events,
                if run.backend == "postgres" {
                    "; statements from sqlx's query log (BEGIN/COMMIT left out)"
                } else {
                    " (statements not counted on SQLite)"
                }
            );
            println!(
                "  {:<17} {:<22} {:>9} {:>7} {:>8} {:>10} {:>10} {:>11}",
                "projection",
                "event type",
                "in log",
                "sample",
                "stmts/ev",
                "µs/stmt",
                "µs/ev stmt",
                "µs/ev wall"
            );
            for p in &run.profiles {
                let mut log_events = 0u64;
                let mut log_statements = 0f64;
                let mut log_statement_secs = 0f64;
                let mut log_wall_secs = 0f64;
                for (event_type, f) in &p.by_type {
                    let per = |x: f64| {
                        if f.events > 0 {
                            x / f.events as f64
                        } else {
                            0.0
                        }
                    };
                    log_events += f.in_log;
                    log_statements += per(f.statements as f64) * f.in_log as f64;
                    log_statement_secs += per(f.statement_secs) * f.in_log as f64;
                    log_wall_secs += per(f.wall_secs) * f.in_log as f64;
                    if f.events == 0 {
                        println!(
                            "  {:<17} {:<22} {:>9} {:>7}",
                            p.projection, event_type, f.in_log, 0
                        );
                        continue;
                    }
                    let per_statement = if f.statements > 0 {
                        format!("{:.0}", f.statement_secs * 1e6 / f.statements as f64)
                    } else {
                        "-".into()
                    };
                    println!(
                        "  {:<17} {:<22} {:>9} {:>7} {:>8.2} {:>10} {:>10.0} {:>11.0}",
                        p.projection,
                        event_type,
                        f.in_log,
                        f.events,
                        per(f.statements as f64),
                        per_statement,
                        per(f.statement_secs) * 1e6,
                        per(f.wall_secs) * 1e6
                    );
                }
                let wall = run
                    .rebuilds
                    .iter()
                    .find(|r| r.projection == p.projection)
                    .map_or(0.0, |r| r.elapsed.as_secs_f64());
                println!(
                "  {:<17} {:<22} {:>9}    whole log, weighted: {:.2} statements/event, {:.0} s in \
                 statements (at one event per transaction: {:.0} s wall); the rebuild took {:.0} s",
                p.projection,
                "= all consumed",
                log_events,
                log_statements / log_events.max(1) as f64,
                log_statement_secs,
                log_wall_secs,
                wall
            );
            }
        }
        if let Some(c) = &run.chain {
            println!("\n{}: audit chain", run.backend);
            println!(
            "  runner (AuditChainProjection through runner::batch, {} s at most): {} events in \
             {:.1} s = {:.0} events/s",
            args.log_chain_seconds,
            c.by_runner,
            c.runner.as_secs_f64(),
            rate(c.by_runner, c.runner)
        );
            if c.filled > 0 {
                println!(
                    "  the rest filled in bulk (audit::link_hash in the bench, UNNEST/multi-row \
                 inserts of 5,000): {} events in {:.1} s = {:.0} events/s",
                    c.filled,
                    c.fill.as_secs_f64(),
                    rate(c.filled, c.fill)
                );
            }
            println!(
                "  audit::verify, {} organizations: {} events in {:.1} s = {:.0} events/s; {} \
             pending; {}",
                c.organizations,
                c.verified,
                c.verify.as_secs_f64(),
                rate(c.verified.max(0) as u64, c.verify),
                c.pending,
                if c.broken.is_empty() && c.verified == n as i64 {
                    "every link verified".to_string()
                } else {
                    format!("NOT VERIFIED: {}", c.broken.join("; "))
                }
            );
        }

        println!(
            "\n{}: export of the whole log (api::export::export into a byte counter around \
             std::io::sink); count_filtered (helpdesk export's progress total) {:.1} s",
            run.backend,
            run.count_filtered.as_secs_f64()
        );
        println!(
            "  {:<7} {:>9} {:>9} {:>7} {:>10} {:>7} {:>14} {:>16}",
            "format", "events", "MB", "s", "events/s", "MB/s", "RSS before MB", "peak during MB"
        );
        for e in &run.exports {
            println!(
                "  {:<7} {:>9} {:>9.0} {:>7.1} {:>10.0} {:>7.1} {:>14.1} {:>16}",
                e.format,
                e.events,
                e.bytes as f64 / 1e6,
                e.elapsed.as_secs_f64(),
                rate(e.events, e.elapsed),
                e.bytes as f64 / 1e6 / e.elapsed.as_secs_f64().max(f64::EPSILON),
                e.rss_before_kb as f64 / 1e3,
                if e.peak_reset {
                    format!("{:.1}", e.peak_during_kb as f64 / 1e3)
                } else {
                    format!("{:.1} (not reset)", e.peak_during_kb as f64 / 1e3)
                }
            );
        }
    }
}
