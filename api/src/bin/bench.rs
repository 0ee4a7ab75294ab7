//! `bench`: throughput, command latency and projection lag of the helpdesk's command side,
//! and two scenario benchmarks of the queue.
//!
//! `--scenario` picks what runs (each on PostgreSQL and on SQLite, as `--backend` says):
//!
//! - `lifecycle` (the default, described below): ticket lifecycles, with a bare cqrs-es
//!   baseline.
//! - `assignment`: how long a ticket waits for an agent with 500 agents busy and 10,000
//!   tickets queued — see the `assignment` module (`bench/assignment.rs`).
//! - `queue-position`: `projections::queue::position` and `page` on a queue of 100,000
//!   tickets — see the `queue_position` module (`bench/queue_position.rs`).
//! - `inbound`: signed WhatsApp webhooks per second end to end (HTTP → events →
//!   projections) against the real server on loopback — see the `inbound` module
//!   (`bench/inbound.rs`).
//! - `chatbot-report`: `projections::chatbot::report` over a year of hourly buckets holding
//!   1,000,000 interactions — see the `chatbot_report` module (`bench/chatbot_report.rs`).
//! - `board`: the first page of every column of a pipeline of 10 stages holding 50,000
//!   cards (the GraphQL `board` query), and `moveCard` end to end — see the `board` module
//!   (`bench/board.rs`).
//! - `log`: 1,000,000 events decided by the aggregates: reading the log, rebuilding every
//!   projection, the audit chain and its verification, the export — see the `log` module
//!   (`bench/log.rs`).
//! - `subscribers`: 1,000 graphql-transport-ws subscribers of `queueUpdated` on one real
//!   server while tickets are created: delivery latency, completeness, memory and CPU —
//!   see the `subscribers` module (`bench/subscribers.rs`).
//!
//! # What runs (lifecycle)
//!
//! `N` ticket lifecycles — create, admin assign, resolve (by the assigned agent), so `3N`
//! commands — are driven by `C` concurrent workers (tokio tasks taking the next lifecycle
//! from a shared counter), in this process, with the projection runners live:
//!
//! 1. **helpdesk / postgres** — [`Helpdesk`] on a fresh PostgreSQL database `bench_hd_*`.
//! 2. **baseline / postgres** — the bare cqrs-es + postgres-es stack: the same Ticket
//!    aggregate, the same commands and the same event metadata through
//!    [`CqrsFramework`] over a plain [`PostgresEventRepository`], on a separate fresh
//!    database `bench_base_*` that holds only postgres-es's own `events` table. No global
//!    order column, no trigger, no read models, no ticket-number counter (numbers come from
//!    an in-process counter), no waiting.
//! 3. **helpdesk / sqlite** — [`Helpdesk`] on a fresh SQLite file.
//!
//! The bench creates its databases and removes them afterwards (PostgreSQL databases are
//! dropped `WITH (FORCE)`; the SQLite file lives in a folder of its own).
//!
//! # What is measured
//!
//! - **commands/s**: `3N` divided by the wall time from the first command to the last.
//! - **p50 / p99 / max command latency**: one sample per command, timed around one
//!   `Helpdesk` call (`create_ticket` / `on_ticket`) — so it includes the ticket-number
//!   allocation, the event-store write, conflict retries and the read-your-writes wait until
//!   every projection shows the change. For the baseline: one `execute_with_metadata`.
//!   Recorded in microseconds with HdrHistogram (3 significant digits).
//! - **p99 projection lag**: read from the runners' own `helpdesk_projection_lag_seconds`
//!   histograms (`helpdesk.metrics.projections.lag`), the figure `/metrics` exports: one
//!   sample per event and projection, taken when the projection's transaction has
//!   committed, measured from the event's `occurred_at`. `occurred_at` is stamped by the
//!   command side *before* it loads the aggregate and writes, so each sample also contains
//!   that write (one store round trip or so): the figure is an upper bound on the lag
//!   from the event's commit. The histogram has fixed buckets (…, 25, 50, 100, 250 ms, …),
//!   so the bench prints the bucket holding the p99 (e.g. `25-50 ms`) rather than inventing
//!   digits inside it. An event is visible everywhere once *every* projection has applied
//!   it; the table shows the worst projection's bucket, and each projection's p50 and p99
//!   buckets are printed below the table. (The runners record no per-event pairing, so
//!   the p99 of "all projections done" can sit slightly above the worst projection's.)
//!
//! No warm-up: connection set-up and cold caches are part of the figures (a few commands
//! out of thousands). All settings other than `DATABASE_URL` are the helpdesk's defaults
//! (consistency timeout 5 s); the process environment is not read for them.
//!
//! # Running
//!
//! ```text
//! cargo run --release -p api --bin bench -- --lifecycles 2000 --workers 8
//! cargo run --release -p api --bin bench -- --backend sqlite --sqlite-path /tmp/bench
//! cargo run --release -p api --bin bench -- --scenario assignment
//! cargo run --release -p api --bin bench -- --scenario queue-position --explain
//! cargo run --release -p api --bin bench -- --scenario inbound
//! cargo run --release -p api --bin bench -- --scenario chatbot-report
//! cargo run --release -p api --bin bench -- --scenario board
//! cargo run --release -p api --bin bench -- --scenario log --backend postgres
//! cargo run --release -p api --bin bench -- --scenario subscribers
//! ```
//!
//! PostgreSQL is reached at `--postgres-url` (default `TEST_DATABASE_URL`, else
//! `postgres://postgres@127.0.0.1:5432/postgres`); that role must be allowed to create and
//! drop databases. Progress goes to stderr, the table to stdout.
//!
//! Run it on an otherwise idle machine and PostgreSQL server: the bench, the projection
//! runners and the database share the cores, so any other load shows in every figure, and
//! a long write transaction in the bench's database holds the projections back (the
//! runners only read events older than every transaction still running there).

use anyhow::{anyhow, bail, Context};
use chrono::Utc;
use clap::{Parser, ValueEnum};
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::CqrsFramework;
use domain::agent::AgentAction;
use domain::metadata::EventMetadata;
use domain::ticket::{Ticket, TicketAction, TicketCommand};
use domain::{Actor, PriorityKeywords, Role};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use postgres_es::PostgresEventRepository;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use api::auth::Caller;
use api::config::Config;
use api::error::ApiError;
use api::helpdesk::{all_projections, Helpdesk, NewTicket};
use projections::telemetry::label;

// The scenario modules live in `bench/` next to this file (this file stays the binary's root,
// as `api/Cargo.toml` names it).
#[path = "bench/assignment.rs"]
mod assignment;
#[path = "bench/board.rs"]
mod board;
#[path = "bench/chatbot_report.rs"]
mod chatbot_report;
#[path = "bench/inbound.rs"]
mod inbound;
#[path = "bench/log.rs"]
mod log;
#[path = "bench/queue_position.rs"]
mod queue_position;
#[path = "bench/subscribers.rs"]
mod subscribers;

/// How long a server started by a scenario may take to answer `/healthz`.
const STARTUP: Duration = Duration::from_secs(60);

/// The server running in this process.
struct RunningServer {
    /// `http://127.0.0.1:<port>`.
    base: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Starts [`api::server::serve`] on a free loopback port against `url`, with the
    /// helpdesk's defaults except the token secret (the scenario mints tokens with it) and
    /// outbound delivery (off: no provider to deliver to).
    async fn start(url: &str, http: &reqwest::Client, jwt_secret: &str) -> anyhow::Result<Self> {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").context("finding a port")?;
            probe.local_addr()?.port()
        };
        let addr = format!("127.0.0.1:{port}");
        let vars: std::collections::BTreeMap<&str, String> = [
            ("DATABASE_URL", url.to_string()),
            ("HELPDESK_ADDR", addr.clone()),
            ("HELPDESK_JWT_SECRET", jwt_secret.to_string()),
            ("HELPDESK_OUTBOX_DELIVERY", "off".to_string()),
        ]
        .into_iter()
        .collect();
        let config = Config::from_lookup(|key| vars.get(key).cloned())
            .context("building the server configuration")?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(api::server::serve(config, shutdown.clone()));
        let server = Self {
            base: format!("http://{addr}"),
            shutdown,
            task,
        };
        let deadline = Instant::now() + STARTUP;
        loop {
            if server.task.is_finished() {
                return Err(server
                    .stop()
                    .await
                    .err()
                    .unwrap_or_else(|| anyhow!("the server stopped at once")));
            }
            let healthy = http
                .get(format!("{}/healthz", server.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if healthy {
                return Ok(server);
            }
            if Instant::now() > deadline {
                let _ = server.stop().await;
                bail!("the server did not answer /healthz within {STARTUP:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Drains and stops the server.
    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match tokio::time::timeout(Duration::from_secs(30), self.task).await {
            Ok(joined) => joined.context("the server panicked")?,
            Err(_) => bail!("the server did not stop within 30 s"),
        }
    }
}

/// Posts a GraphQL request to a server a scenario started; fails on errors.
async fn graphql(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    query: &str,
    variables: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let response: serde_json::Value = http
        .post(format!("{base}/graphql"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "query": query, "variables": variables }))
        .send()
        .await
        .context("POST /graphql")?
        .json()
        .await
        .context("GraphQL answer")?;
    if let Some(errors) = response.get("errors") {
        bail!("GraphQL errors: {errors}");
    }
    Ok(response["data"].clone())
}

/// The `/metrics` series the scenarios' breakdowns use (commands, projection lag, conflict
/// retries, consistency timeouts): `name{labels}` → value.
async fn scrape_metrics(
    http: &reqwest::Client,
    base: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, f64>> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .context("GET /metrics")?
        .text()
        .await
        .context("reading /metrics")?;
    let wanted = [
        "helpdesk_command_duration_seconds_sum{",
        "helpdesk_command_duration_seconds_count{",
        "helpdesk_projection_lag_seconds_sum{",
        "helpdesk_projection_lag_seconds_count{",
        "helpdesk_command_conflict_retries_total{",
        "helpdesk_consistency_timeouts_total{",
    ];
    Ok(text
        .lines()
        .filter(|line| wanted.iter().any(|w| line.starts_with(w)))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect())
}

/// `/proc/loadavg`'s three load averages, or `?`: printed beside every figure, since the
/// machine is shared.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

/// The PostgreSQL server used when neither `--postgres-url` nor `TEST_DATABASE_URL` is set.
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The organization every bench ticket belongs to.
const ORGANIZATION: &str = "bench";

/// How many agents the tickets are spread over.
const AGENTS: usize = 16;

/// The commands of one lifecycle.
const COMMANDS_PER_LIFECYCLE: u64 = 3;

/// The p-quantiles reported.
const P50: f64 = 0.50;
const P90: f64 = 0.90;
const P99: f64 = 0.99;

/// postgres-es's own event table (its `db/init.sql`), the only table of the baseline.
const BASELINE_SCHEMA: &str = "
CREATE TABLE events
(
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    payload        json                         NOT NULL,
    metadata       json                         NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
)";

/// Command-line options.
#[derive(Debug, Parser)]
#[command(
    name = "bench",
    about = "Throughput, command latency and projection lag of the helpdesk, with a bare cqrs-es baseline"
)]
struct Args {
    /// Ticket lifecycles (create, assign, resolve) per backend.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    lifecycles: u64,
    /// Concurrent workers.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    workers: u64,
    /// Which storage to measure; the baseline runs whenever PostgreSQL does.
    #[arg(long, value_enum, default_value_t = BackendChoice::All)]
    backend: BackendChoice,
    /// A PostgreSQL server URL whose role may create databases; the bench creates and
    /// drops its own `bench_*` databases there.
    #[arg(long, env = "TEST_DATABASE_URL", default_value = DEFAULT_POSTGRES_URL)]
    postgres_url: String,
    /// Folder for the SQLite file (created if missing); default a fresh temporary folder.
    #[arg(long)]
    sqlite_path: Option<PathBuf>,
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Scenario::Lifecycle)]
    scenario: Scenario,
    /// assignment: registered agents (10 of them serve the express division, the rest the
    /// backlog division).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(12..=10_000))]
    agents: u64,
    /// assignment: active tickets each agent may hold (every backlog agent is filled).
    #[arg(long, default_value_t = domain::agent::DEFAULT_MAX_TICKETS as u64,
          value_parser = clap::value_parser!(u64).range(1..=domain::agent::MAX_MAX_TICKETS as u64))]
    capacity: u64,
    /// assignment: tickets still waiting in the backlog queue after the last measured sample.
    #[arg(long, default_value_t = 10_000)]
    queued: u64,
    /// assignment: samples of each measurement.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    samples: u64,
    /// assignment: agents resolving at the same time while slots are refilled (1: one at a
    /// time, the helpdesk at rest before each sample).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    resolvers: u64,
    /// queue-position: tickets waiting in the measured queue.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    queue_size: u64,
    /// queue-position: random `position` lookups.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    lookups: u64,
    /// queue-position: `page` calls after a random cursor (and a tenth as many head pages).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pages: u64,
    /// queue-position, chatbot-report and board: also print the query plans of the measured
    /// statements.
    #[arg(long)]
    explain: bool,
    /// assignment, queue-position, chatbot-report and board: keep the databases for inspection
    /// (their names are printed) instead of removing them.
    #[arg(long)]
    keep_databases: bool,
    /// inbound: concurrent webhook clients.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    inbound_clients: u64,
    /// inbound: messages of each flow.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    inbound_messages: u64,
    /// inbound: conversations the follow-ups of flow (b) are spread over, round robin.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    inbound_conversations: u64,
    /// chatbot-report: interactions of the measured bot over its year.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=20_000_000))]
    chatbot_interactions: u64,
    /// chatbot-report: calls of each measured report.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    chatbot_reports: u64,
    /// chatbot-report: interactions applied both through the projection and by the direct
    /// insert, whose tables must be equal.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    chatbot_sample: u64,
    /// board: cards on the pipeline (one conversation each), spread over its 10 stages.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(10..=2_000_000))]
    board_cards: u64,
    /// board: `board` requests measured (one at a time).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    board_requests: u64,
    /// board: `moveCard` mutations measured.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    board_moves: u64,
    /// board: concurrent clients moving cards.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    board_clients: u64,
    /// log: events in the log (decided by the aggregates, appended in bulk).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1_000..=20_000_000))]
    log_events: u64,
    /// log: seconds the audit chain's runner may chain for; the rest is filled in bulk.
    #[arg(long, default_value_t = 180)]
    log_chain_seconds: u64,
    /// log: events of the log's start applied again to count each projection's statements.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    log_profile_events: u64,
    /// log: rebuild (and profile) only these projections (default: every one).
    #[arg(long, value_delimiter = ',')]
    log_projections: Vec<String>,
    /// log: steps to leave out, to measure one part quickly (seeding and reading always run).
    #[arg(long, value_delimiter = ',', value_enum)]
    log_skip: Vec<LogStep>,
    /// log: rebuild all projections together once per value, that many applying at once
    /// (`helpdesk replay --jobs`).
    #[arg(long, value_delimiter = ',', default_value = "2")]
    log_replay_jobs: Vec<usize>,
}

/// The optional steps of `--scenario log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogStep {
    /// Every rebuild: each projection's own and all of them together (and the row-count
    /// checks after them).
    Rebuild,
    /// The rebuild of each projection on its own (all of them together still runs).
    Each,
    /// The statement profile of each projection.
    Profile,
    /// The audit chain's runner, its bulk fill and the verification.
    Chain,
    /// The NDJSON and CSV exports.
    Export,
}

/// The `--scenario` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Ticket lifecycles: throughput, command latency, projection lag (with the baseline).
    Lifecycle,
    /// Latency from a ticket's creation, or from a freed slot, to the ticket's assignment.
    Assignment,
    /// Queue-position and queue-page lookups in a long queue.
    QueuePosition,
    /// Inbound WhatsApp webhooks per second, end to end over HTTP on loopback.
    Inbound,
    /// The chatbot report over a year of 1,000,000 interactions.
    ChatbotReport,
    /// A pipeline board of 10 stages and 50,000 cards: first pages and card moves.
    Board,
    /// The event log at 1,000,000 events: reads, rebuilds, audit chain, export.
    Log,
    /// 1,000 websocket subscribers of one server: delivery latency, completeness, memory.
    Subscribers,
}

/// The `--backend` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendChoice {
    /// PostgreSQL, helpdesk and baseline.
    Postgres,
    /// SQLite (helpdesk only).
    Sqlite,
    /// Both.
    All,
}

impl BackendChoice {
    fn postgres(self) -> bool {
        matches!(self, BackendChoice::Postgres | BackendChoice::All)
    }

    fn sqlite(self) -> bool {
        matches!(self, BackendChoice::Sqlite | BackendChoice::All)
    }
}

/// The allocator of the `helpdesk` binary, so that what is measured is what it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let outcome = match args.scenario {
        Scenario::Lifecycle => run(&args)
            .await
            .map(|results| print_report(&args, &results)),
        Scenario::Assignment => assignment::run(&args)
            .await
            .map(|runs| assignment::print_report(&args, &runs)),
        Scenario::QueuePosition => queue_position::run(&args)
            .await
            .map(|runs| queue_position::print_report(&args, &runs)),
        Scenario::Inbound => inbound::run(&args)
            .await
            .map(|runs| inbound::print_report(&args, &runs)),
        Scenario::ChatbotReport => chatbot_report::run(&args)
            .await
            .map(|runs| chatbot_report::print_report(&args, &runs)),
        Scenario::Board => board::run(&args)
            .await
            .map(|runs| board::print_report(&args, &runs)),
        Scenario::Log => log::run(&args)
            .await
            .map(|runs| log::print_report(&args, &runs)),
        Scenario::Subscribers => subscribers::run(&args)
            .await
            .map(|runs| subscribers::print_report(&args, &runs)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `measure(backend, url)` on a fresh PostgreSQL database named `<prefix>_*` and on a
/// fresh SQLite file, as `--backend` says; the databases are removed afterwards.
async fn on_fresh_databases<T, F, Fut>(
    args: &Args,
    prefix: &str,
    mut measure: F,
) -> anyhow::Result<Vec<T>>
where
    F: FnMut(&'static str, String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut results = Vec::new();
    if args.backend.postgres() {
        let server = PgServer::connect(&args.postgres_url).await?;
        let measured = async {
            let url = server.create_database(prefix).await?;
            measure("postgres", url).await
        }
        .await;
        // Drop the database whether or not the measurement succeeded.
        let dropped = if args.keep_databases {
            server.keep_databases().await;
            Ok(())
        } else {
            server.drop_databases().await
        };
        results.push(measured?);
        dropped?;
    }
    if args.backend.sqlite() {
        let folder = SqliteFolder::new(args.sqlite_path.as_deref())?;
        let url = format!("sqlite://{}", folder.file.display());
        let measured = measure("sqlite", url).await;
        if args.keep_databases {
            eprintln!("kept the SQLite database {}", folder.file.display());
        } else {
            folder.remove();
        }
        results.push(measured?);
    }
    Ok(results)
}

/// A progress bar on stderr for `len` steps of `what`.
fn progress_bar(len: u64, what: &str) -> anyhow::Result<ProgressBar> {
    let template = format!("  {{bar:40}} {{pos}}/{{len}} {what}  {{per_sec}}  eta {{eta}}");
    Ok(ProgressBar::new(len)
        .with_style(ProgressStyle::with_template(&template).context("progress bar template")?))
}

/// Runs `step(i)` for every `i` in `0..count`, `workers` at a time, showing progress; stops
/// at the first error.
async fn for_each_concurrently<F, Fut>(
    what: &str,
    count: u64,
    workers: u64,
    step: F,
) -> anyhow::Result<()>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    use futures::{StreamExt, TryStreamExt};
    let progress = progress_bar(count, what)?;
    let done = futures::stream::iter(0..count)
        .map(step)
        .buffer_unordered(workers.max(1) as usize)
        .try_for_each(|()| {
            progress.inc(1);
            futures::future::ready(Ok(()))
        })
        .await;
    progress.finish_and_clear();
    done
}

/// A latency quantile of a microsecond histogram, in milliseconds.
fn ms_at(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1e3
}

/// `count  p50  p90  p99  max` of a microsecond histogram, in milliseconds, for the scenario
/// tables (`-` columns when it holds no sample).
fn quantile_columns(histogram: &Histogram<u64>) -> String {
    if histogram.is_empty() {
        return format!("{:>6} {:>8} {:>8} {:>8} {:>8}", 0, "-", "-", "-", "-");
    }
    format!(
        "{:>6} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
        histogram.len(),
        ms_at(histogram, P50),
        ms_at(histogram, P90),
        ms_at(histogram, P99),
        histogram.max() as f64 / 1e3
    )
}

/// The header matching [`quantile_columns`].
fn quantile_header() -> String {
    format!(
        "{:>6} {:>8} {:>8} {:>8} {:>8}",
        "n", "p50 ms", "p90 ms", "p99 ms", "max ms"
    )
}

/// Runs the selected measurements, in the order helpdesk/postgres, baseline, helpdesk/sqlite.
async fn run(args: &Args) -> anyhow::Result<Vec<Measurement>> {
    let mut results = Vec::new();
    if args.backend.postgres() {
        let server = PgServer::connect(&args.postgres_url).await?;
        let measured = async {
            let url = server.create_database("bench_hd").await?;
            results.push(measure_helpdesk("helpdesk / postgres", &url, args).await?);
            let url = server.create_database("bench_base").await?;
            results.push(measure_baseline(&url, args).await?);
            anyhow::Ok(())
        }
        .await;
        // Drop the databases whether or not the measurements succeeded.
        let dropped = server.drop_databases().await;
        measured?;
        dropped?;
    }
    if args.backend.sqlite() {
        let folder = SqliteFolder::new(args.sqlite_path.as_deref())?;
        let url = format!("sqlite://{}", folder.file.display());
        let measured = measure_helpdesk("helpdesk / sqlite", &url, args).await;
        folder.remove();
        results.push(measured?);
    }
    Ok(results)
}

/// The figures of one measured run.
struct Measurement {
    /// What ran where, e.g. `helpdesk / postgres`.
    name: &'static str,
    /// The number of commands executed.
    commands: u64,
    /// From the first command's start to the last command's end.
    elapsed: Duration,
    /// Command latency, microseconds.
    latency: Histogram<u64>,
    /// The projection lag, for helpdesk runs.
    lag: Option<Lag>,
}

/// The p99 projection lag as the runners' fixed-bucket histograms tell it.
struct Lag {
    /// One entry per projection.
    by_projection: Vec<ProjectionLag>,
}

/// The p99 lag of one projection.
struct ProjectionLag {
    /// The projection's name.
    projection: &'static str,
    /// The bucket `(lower, upper]`, in seconds, holding its median; `None` without samples.
    p50: Option<(f64, f64)>,
    /// The bucket holding its p99.
    p99: Option<(f64, f64)>,
    /// How many events it recorded a lag for.
    samples: u64,
}

impl Lag {
    /// The bucket of the worst projection's p99: the event is visible everywhere only once
    /// the slowest projection has applied it.
    fn worst(&self) -> Option<(f64, f64)> {
        self.by_projection
            .iter()
            .filter_map(|p| p.p99)
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }
}

impl Measurement {
    /// Commands per second over the whole run.
    fn throughput(&self) -> f64 {
        self.commands as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// A latency quantile in milliseconds.
    fn millis_at(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1e3
    }
}

/// Drives the lifecycles through the real [`Helpdesk`] at `url`, projections running.
async fn measure_helpdesk(
    name: &'static str,
    url: &str,
    args: &Args,
) -> anyhow::Result<Measurement> {
    let config = Config::from_lookup(|key| (key == "DATABASE_URL").then(|| url.to_string()))
        .context("building the helpdesk configuration")?;
    let shutdown = CancellationToken::new();
    let (helpdesk, tasks) = Helpdesk::start(&config, shutdown.clone())
        .await
        .with_context(|| format!("starting the helpdesk on {}", redact(url)))?;
    // The agents tickets are assigned to, offline so that the assignment process leaves the
    // admin's assignments to the admin.
    for n in 0..AGENTS {
        let registered = helpdesk
            .on_agent(
                &admin(),
                "bench-setup",
                &format!("bench-agent-{n}"),
                AgentAction::Register {
                    name: format!("Bench agent {n}"),
                    max_tickets: domain::agent::MAX_MAX_TICKETS,
                    division_ids: vec![],
                },
            )
            .await;
        match registered {
            Ok(_) | Err(ApiError::Conflict(_)) => {}
            Err(e) => return Err(failed("registerAgent", &e)),
        }
    }
    let driven = drive(
        name,
        Arc::new(Driver::Helpdesk(helpdesk.clone())),
        args.lifecycles,
        args.workers,
    )
    .await;
    let lag = projection_lag(&helpdesk);
    shutdown.cancel();
    for task in tasks {
        let _ = task.await;
    }
    helpdesk.db.close().await;
    let (elapsed, latency) = driven?;
    Ok(Measurement {
        name,
        commands: latency.len(),
        elapsed,
        latency,
        lag: Some(lag),
    })
}

/// Reads each projection's p99 lag bucket from the runners' telemetry.
fn projection_lag(helpdesk: &Helpdesk) -> Lag {
    let lag = &helpdesk.metrics.projections.lag;
    let by_projection = all_projections()
        .iter()
        .map(|projection| {
            let series = lag.series(&format!("projection=\"{}\"", label(projection.name())));
            ProjectionLag {
                projection: projection.name(),
                p50: series.as_ref().and_then(|h| h.quantile_bucket(P50)),
                p99: series.as_ref().and_then(|h| h.quantile_bucket(P99)),
                samples: series.as_ref().map_or(0, |h| h.count()),
            }
        })
        .collect();
    Lag { by_projection }
}

/// Drives the lifecycles through bare cqrs-es over postgres-es at `url`.
async fn measure_baseline(url: &str, args: &Args) -> anyhow::Result<Measurement> {
    let options = PgConnectOptions::from_str(url).context("parsing the baseline URL")?;
    // The same pool size as the helpdesk's (projections::db).
    let pool = PgPoolOptions::new()
        .max_connections(20)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .context("connecting to the baseline database")?;
    sqlx::query(BASELINE_SCHEMA)
        .execute(&pool)
        .await
        .context("creating the baseline events table")?;
    let store = PersistedEventStore::new_event_store(PostgresEventRepository::new(pool.clone()));
    let baseline = Baseline {
        cqrs: CqrsFramework::new(store, vec![], ()),
        numbers: AtomicI64::new(0),
        keywords: PriorityKeywords::default(),
    };
    let name = "baseline / postgres";
    let driven = drive(
        name,
        Arc::new(Driver::Baseline(Box::new(baseline))),
        args.lifecycles,
        args.workers,
    )
    .await;
    pool.close().await;
    let (elapsed, latency) = driven?;
    Ok(Measurement {
        name,
        commands: latency.len(),
        elapsed,
        latency,
        lag: None,
    })
}

/// The bare cqrs-es stack of the baseline.
struct Baseline {
    cqrs: CqrsFramework<Ticket, PersistedEventStore<PostgresEventRepository, Ticket>>,
    /// Ticket numbers, allocated in process (the helpdesk allocates them in the database).
    numbers: AtomicI64,
    /// The helpdesk's default keyword lists, so both produce the same `TicketCreated`.
    keywords: PriorityKeywords,
}

impl Baseline {
    /// Executes one command with the metadata the helpdesk stamps on its events.
    async fn execute(
        &self,
        caller: &Caller,
        request_id: &str,
        aggregate_id: &str,
        action: TicketAction,
    ) -> anyhow::Result<()> {
        let metadata = EventMetadata {
            organization: caller.organization.clone(),
            actor: caller.actor.clone(),
            occurred_at: Utc::now(),
            request_id: request_id.to_string(),
            correlation_id: request_id.to_string(),
            causation_id: None,
        }
        .to_map();
        let command = TicketCommand {
            organization: caller.organization.clone(),
            actor: caller.actor.clone(),
            action,
        };
        self.cqrs
            .execute_with_metadata(aggregate_id, command, metadata)
            .await
            .map_err(|e| anyhow!("baseline command on ticket {aggregate_id} failed: {e}"))
    }
}

/// What executes the commands of a lifecycle.
enum Driver {
    /// The real command side.
    Helpdesk(Arc<Helpdesk>),
    /// Bare cqrs-es.
    Baseline(Box<Baseline>),
}

impl Driver {
    /// Opens ticket number `i` of the run as the admin; returns its id.
    async fn create(&self, i: u64) -> anyhow::Result<String> {
        let caller = admin();
        let request_id = format!("bench-{i}-create");
        let subject = format!("Bench ticket {i}: printer jammed");
        let description = Some("The printer on floor 3 shows error E-42.".to_string());
        match self {
            Driver::Helpdesk(helpdesk) => {
                let input = NewTicket {
                    subject,
                    description,
                    priority: None,
                    division_id: None,
                };
                helpdesk
                    .create_ticket(&caller, &request_id, input)
                    .await
                    .map(|ticket| ticket.id)
                    .map_err(|e| failed("createTicket", &e))
            }
            Driver::Baseline(baseline) => {
                let text = format!("{subject} {}", description.as_deref().unwrap_or_default());
                let (priority, priority_source) = baseline.keywords.resolve(None, &text);
                let id = uuid::Uuid::new_v4().to_string();
                let action = TicketAction::Create {
                    number: baseline.numbers.fetch_add(1, Ordering::Relaxed) + 1,
                    subject,
                    description,
                    priority,
                    priority_source,
                    division_id: None,
                };
                baseline.execute(&caller, &request_id, &id, action).await?;
                Ok(id)
            }
        }
    }

    /// The admin gives ticket `i` to its agent (through the slot saga on the helpdesk).
    async fn assign(&self, i: u64, id: &str) -> anyhow::Result<()> {
        let request_id = format!("bench-{i}-assign");
        let agent_id = agent_of(i).actor.id;
        match self {
            Driver::Helpdesk(helpdesk) => helpdesk
                .assign_ticket(&admin(), &request_id, id, Some(agent_id))
                .await
                .map(|_| ())
                .map_err(|e| failed("assignTicket", &e)),
            Driver::Baseline(baseline) => {
                let action = TicketAction::Assign {
                    agent_id,
                    reservation: 1,
                };
                baseline.execute(&admin(), &request_id, id, action).await
            }
        }
    }

    /// The assigned agent resolves ticket `i`.
    async fn resolve(&self, i: u64, id: &str) -> anyhow::Result<()> {
        let action = TicketAction::Resolve {
            resolution: Some("Cleared the paper path.".to_string()),
        };
        self.on_ticket(&agent_of(i), &format!("bench-{i}-resolve"), id, action)
            .await
    }

    async fn on_ticket(
        &self,
        caller: &Caller,
        request_id: &str,
        id: &str,
        action: TicketAction,
    ) -> anyhow::Result<()> {
        match self {
            Driver::Helpdesk(helpdesk) => {
                let name = api::helpdesk::command_name(&action);
                helpdesk
                    .on_ticket(caller, request_id, id, action)
                    .await
                    .map(|_| ())
                    .map_err(|e| failed(name, &e))
            }
            Driver::Baseline(baseline) => baseline.execute(caller, request_id, id, action).await,
        }
    }
}

/// The admin who creates and assigns every ticket.
fn admin() -> Caller {
    Caller {
        organization: ORGANIZATION.into(),
        actor: Actor::new("bench-admin", Role::Admin),
    }
}

/// The agent ticket `i` is assigned to.
fn agent_of(i: u64) -> Caller {
    Caller {
        organization: ORGANIZATION.into(),
        actor: Actor::new(format!("bench-agent-{}", i % AGENTS as u64), Role::Agent),
    }
}

/// Describes a refused or failed helpdesk command.
fn failed(command: &str, error: &ApiError) -> anyhow::Error {
    anyhow!("{command} failed: {} {}", error.code(), error.message())
}

/// A latency histogram in microseconds, from 1 µs to 10 minutes, 3 significant digits.
fn latency_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000, 3).context("creating a latency histogram")
}

/// Runs `lifecycles` lifecycles with `workers` concurrent workers; returns the wall time and
/// the latency of every command. The first failing command stops the run.
async fn drive(
    name: &'static str,
    driver: Arc<Driver>,
    lifecycles: u64,
    workers: u64,
) -> anyhow::Result<(Duration, Histogram<u64>)> {
    eprintln!("{name}: {lifecycles} lifecycles, {workers} workers");
    let progress = ProgressBar::new(lifecycles).with_style(
        ProgressStyle::with_template("  {bar:40} {pos}/{len} lifecycles  {per_sec}  eta {eta}")
            .context("progress bar template")?,
    );
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..workers {
        let driver = driver.clone();
        let next = next.clone();
        let progress = progress.clone();
        set.spawn(async move {
            let mut latency = latency_histogram()?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= lifecycles {
                    return anyhow::Ok(latency);
                }
                let t = Instant::now();
                let id = driver.create(i).await?;
                latency.saturating_record(micros(t.elapsed()));
                let t = Instant::now();
                driver.assign(i, &id).await?;
                latency.saturating_record(micros(t.elapsed()));
                let t = Instant::now();
                driver.resolve(i, &id).await?;
                latency.saturating_record(micros(t.elapsed()));
                progress.inc(1);
            }
        });
    }
    let mut latency = latency_histogram()?;
    let mut first_error = None;
    while let Some(joined) = set.join_next().await {
        match joined.context("a worker panicked").and_then(|r| r) {
            Ok(worker) => latency
                .add(&worker)
                .map_err(|e| anyhow!("merging latency histograms: {e:?}"))?,
            Err(error) => {
                if first_error.is_none() {
                    // Stop the other workers: the run is invalid anyway.
                    next.store(u64::MAX / 2, Ordering::Relaxed);
                    first_error = Some(error);
                }
            }
        }
    }
    let elapsed = started.elapsed();
    progress.finish_and_clear();
    if let Some(error) = first_error {
        return Err(error.context(format!("{name}: a command failed")));
    }
    if latency.len() != lifecycles * COMMANDS_PER_LIFECYCLE {
        bail!(
            "{name}: {} commands recorded, expected {}",
            latency.len(),
            lifecycles * COMMANDS_PER_LIFECYCLE
        );
    }
    eprintln!("{name}: done in {:.1} s", elapsed.as_secs_f64());
    Ok((elapsed, latency))
}

/// A duration in whole microseconds, saturating.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Prints the table (and each projection's lag bucket) on stdout.
fn print_report(args: &Args, results: &[Measurement]) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "\n{} lifecycles x {} commands, {} workers, {cores} cores\n",
        args.lifecycles, COMMANDS_PER_LIFECYCLE, args.workers
    );
    println!(
        "{:<21} {:>8} {:>8} {:>10} {:>9} {:>9} {:>9} {:>17}",
        "run", "commands", "wall s", "commands/s", "p50 ms", "p99 ms", "max ms", "p99 proj. lag ms"
    );
    for m in results {
        let lag = match &m.lag {
            None => "-".to_string(),
            Some(lag) => lag.worst().map_or("no samples".into(), bucket),
        };
        println!(
            "{:<21} {:>8} {:>8.1} {:>10.0} {:>9.2} {:>9.2} {:>9.1} {:>17}",
            m.name,
            m.commands,
            m.elapsed.as_secs_f64(),
            m.throughput(),
            m.millis_at(P50),
            m.millis_at(P99),
            m.latency.max() as f64 / 1e3,
            lag
        );
    }
    for m in results {
        if let Some(lag) = &m.lag {
            println!(
                "\n{}: projection lag, histogram bucket holding the quantile",
                m.name
            );
            println!(
                "  {:<12} {:>12} {:>12} {:>8}",
                "projection", "p50 ms", "p99 ms", "events"
            );
            for p in &lag.by_projection {
                println!(
                    "  {:<12} {:>12} {:>12} {:>8}",
                    p.projection,
                    p.p50.map_or("-".into(), bucket),
                    p.p99.map_or("-".into(), bucket),
                    p.samples
                );
            }
        }
    }
}

/// A fixed histogram bucket `(lower, upper]` in seconds, as milliseconds: `25-50`.
fn bucket((lower, upper): (f64, f64)) -> String {
    // Round to 0.1 ms so that 0.025 s reads 25, not 25.000000000000004.
    let ms = |seconds: f64| (seconds * 1e4).round() / 10.0;
    if upper.is_infinite() {
        format!(">{}", ms(lower))
    } else {
        format!("{}-{}", ms(lower), ms(upper))
    }
}

/// A PostgreSQL server on which the bench creates (and later drops) its databases.
struct PgServer {
    /// The URL given, pointing at an existing database.
    url: String,
    /// A connection to that database, for `CREATE` / `DROP DATABASE`.
    admin: PgPool,
    /// The databases created so far.
    created: std::sync::Mutex<Vec<String>>,
}

impl PgServer {
    /// Connects to the server at `url`.
    async fn connect(url: &str) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .with_context(|| format!("invalid --postgres-url {}", redact(url)))?;
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .with_context(|| format!("cannot reach PostgreSQL at {}", redact(url)))?;
        Ok(Self {
            url: url.to_string(),
            admin,
            created: std::sync::Mutex::default(),
        })
    }

    /// Creates a fresh database `<prefix>_<random>` and returns its URL.
    async fn create_database(&self, prefix: &str) -> anyhow::Result<String> {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&self.admin)
            .await
            .with_context(|| format!("creating database {name}"))?;
        self.created
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name.clone());
        with_database(&self.url, &name)
    }

    /// Leaves the databases this bench created in place, naming them on stderr.
    async fn keep_databases(self) {
        for name in self
            .created
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            eprintln!("kept the PostgreSQL database {name}");
        }
        self.admin.close().await;
    }

    /// Drops every database this bench created.
    async fn drop_databases(self) -> anyhow::Result<()> {
        let names = std::mem::take(&mut *self.created.lock().unwrap_or_else(|e| e.into_inner()));
        for name in names {
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&self.admin)
                .await
                .with_context(|| format!("dropping database {name}"))?;
        }
        self.admin.close().await;
        Ok(())
    }
}

/// `url` with its database replaced by `name`; user, host, port and parameters are kept.
fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let (scheme, rest) = base
        .split_once("://")
        .ok_or_else(|| anyhow!("--postgres-url must look like postgres://user@host/db"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let mut out = format!("{scheme}://{authority}/{name}");
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    Ok(out)
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}@{host}")
        }
        None => url.to_string(),
    }
}

/// Where the SQLite run keeps its file; removed afterwards.
struct SqliteFolder {
    /// The database file.
    file: PathBuf,
    /// The folder, when the bench created it (then it is removed whole).
    own_folder: Option<PathBuf>,
}

impl SqliteFolder {
    /// A fresh file in `folder` (created if missing), or in a new temporary folder.
    fn new(folder: Option<&Path>) -> anyhow::Result<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let (folder, own) = match folder {
            Some(folder) => (folder.to_path_buf(), false),
            None => (std::env::temp_dir().join(format!("bench_{id}")), true),
        };
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("creating the SQLite folder {}", folder.display()))?;
        Ok(Self {
            file: folder.join(format!("bench_{id}.db")),
            own_folder: own.then_some(folder),
        })
    }

    /// Deletes the database (with its WAL files) or the whole temporary folder.
    fn remove(self) {
        match &self.own_folder {
            Some(folder) => {
                let _ = std::fs::remove_dir_all(folder);
            }
            None => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut path = self.file.clone().into_os_string();
                    path.push(suffix);
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        let url = |u| with_database(u, "bench_x").unwrap();
        assert_eq!(
            url("postgres://postgres@127.0.0.1:5432/postgres"),
            "postgres://postgres@127.0.0.1:5432/bench_x"
        );
        assert_eq!(url("postgres://u:p@h"), "postgres://u:p@h/bench_x");
        assert_eq!(
            url("postgresql://u@h/db?sslmode=disable"),
            "postgresql://u@h/bench_x?sslmode=disable"
        );
        assert!(with_database("nonsense", "bench_x").is_err());
    }

    #[test]
    fn passwords_are_not_printed() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }

    #[test]
    fn the_lag_bucket_reads_in_milliseconds() {
        assert_eq!(bucket((0.025, 0.05)), "25-50");
        assert_eq!(bucket((0.0, 0.0025)), "0-2.5");
        assert_eq!(bucket((30.0, f64::INFINITY)), ">30000");
    }
}
