//! `--scenario subscribers`: 1,000 GraphQL subscribers on one server, each on a websocket of
//! its own, and how soon a stream of ticket creations reaches every one of them (issue 8).
//!
//! # Set-up (per backend, on a fresh database)
//!
//! The real HTTP server, [`api::server::serve`], runs in this process on a free port of
//! 127.0.0.1 (found by binding port 0 and releasing it), with the helpdesk's defaults except
//! `HELPDESK_JWT_SECRET` (the bench mints the tokens with it) and
//! `HELPDESK_OUTBOX_DELIVERY=off`. An admin creates one division (`assignmentMode: CLAIM`;
//! no agent is registered, so every ticket stays queued and nothing else moves the queue).
//!
//! The subscribers are real graphql-transport-ws clients (tokio-tungstenite), each on its
//! own TCP connection to `/graphql/ws`, each with its own agent token (`sub-0` …) in the
//! `connection_init` payload, each subscribed (id "1") to `queueUpdated(divisionId)` of
//! that division. They live in a **child process** — this same `bench` binary, started
//! with the environment variable [`FLEET_ENV`] and driven over its stdin and stdout — so
//! that the server's memory and CPU (this process) and the clients' (the child) are read
//! apart from `/proc`. The clients read with an 8 KiB buffer (tungstenite's default, 128
//! KiB, would be zero-filled on every read and cost the shared cores for nothing); they
//! take the receipt time the moment a frame is read off the socket, before parsing it, and
//! keep every receipt in memory until the phase is over.
//!
//! Before each measured phase the clients connect ([`CONNECT_AT_ONCE`] handshakes at a
//! time) and subscribe; then "sentinel" tickets are created until one has reached every
//! subscriber (graphql-transport-ws acknowledges no subscription, so this is how the bench
//! knows all of them are live); their messages are discarded.
//!
//! # Phases (one server, one after the other)
//!
//! 1. **1 subscriber, lean selection**: [`ALONE_MUTATIONS`] creations with one client — the
//!    pipeline without fan-out.
//! 2. **1,000 subscribers, lean selection**: `divisionId ticketId change at logPosition`,
//!    all of it carried by the feed's message (no resolver reads the database).
//! 3. **1,000 subscribers, `ticket { status queuePosition }`** as well — the selection
//!    `docs/api.md` shows: every subscriber resolves the ticket (one read of the tickets
//!    read model) and its queue position (one more statement) for every message.
//!
//! Between phases the clients close their connections and new ones connect.
//!
//! # What is measured
//!
//! In each phase the admin sends `createTicket(input: { subject, divisionId })` over HTTP
//! at a fixed rate of [`RATE`] per second, open loop (mutation `i` is sent at `i / RATE` s
//! whether or not the ones before have answered), [`MUTATIONS`] in all (phases 2 and 3).
//! Each creation is one `TicketCreated` in the division's queue, so every subscriber must
//! receive every one: `mutations × subscribers` deliveries are expected. After the last
//! answer the bench waits until all have arrived, or until none has arrived for
//! [`QUIET`], then collects the clients' receipts.
//!
//! **Delivery latency, the headline figure: from the event's `at` to the client.** `at`
//! (`occurredAt`) is the `occurred_at` the command side stamps (`Utc::now()`) *before* it
//! loads the Ticket aggregate and appends the event; the client's receipt time is
//! `SystemTime::now()` when the frame has been read off its socket. Both are the same
//! machine's real-time clock (same kernel, no skew between the two processes). So the
//! figure runs from just before the write to the client holding the message: it contains
//! the append and its commit (one store round trip or two), the tickets projection
//! applying the event, the feed noticing the checkpoint, reading the log and the ticket's
//! row, the broadcast, the subscriber's GraphQL execution and serialization, the websocket
//! write, the kernel, and the client task being scheduled. It is an **upper bound on the
//! latency from commit to client**, by the time of the append itself (a few ms — compare
//! `createTicket`'s own figures). The commit instant itself is not observable from outside
//! without changing production code. The table also gives, per delivery, the time **from
//! the instant before the bench sent the HTTP request** (a looser upper bound: adds HTTP,
//! authentication, parsing and the ticket-number allocation), and, per message, when its
//! **first** and its **last** subscriber had it (from `at`) and the **spread** between the
//! two — the fan-out's own cost. `createTicket` is timed too (its answer waits until every
//! projection shows the ticket, so it is no measure of the commit); how many deliveries
//! arrived before their mutation had answered is printed.
//!
//! **Completeness**: delivered vs expected; *missing* = expected deliveries that never
//! came (a subscriber lacking a ticket), *duplicates*, *REFETCH* items (a subscriber
//! fell more than 1,024 messages behind), error frames and connections that ended early,
//! and messages about tickets the bench did not create in that phase.
//!
//! **Memory**: `VmRSS` of this process (the server, plus the bench's own small driver:
//! one reqwest client) and of the client process, from `/proc/PID/status`: before the
//! server starts, once it has started (no subscriber), with the subscribers connected,
//! after the mutations, after they have left. Allocator caching means RSS need not fall
//! when connections close.
//!
//! **CPU** (from `/proc/PID/stat`, utime + stime, and `/proc/stat`) over each phase's
//! mutations and deliveries: this process (server + driver), the clients, the processes
//! named `postgres` (per pid: those that started meanwhile count whole, those that ended
//! meanwhile are lost; other users of that PostgreSQL server are included), and the whole
//! machine. The server's CPU per delivery follows.
//!
//! The server's `/metrics` are scraped before and after each phase: `createTicket`'s mean
//! and each projection's mean lag from `occurred_at`. µs resolution, HdrHistogram (3
//! significant digits). The load average (`/proc/loadavg`) is printed before and after each
//! backend. The open-file limit is raised to the hard limit when it is below what the
//! sockets need ([`raise_open_files`]).

use anyhow::{anyhow, bail, Context};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use api::auth::TokenKeys;
use domain::Role;

use super::{
    graphql, latency_histogram, loadavg, micros, on_fresh_databases, progress_bar,
    quantile_columns, quantile_header, scrape_metrics, Args, RunningServer, ORGANIZATION,
};

/// Subscribers of the measured phases.
const SUBSCRIBERS: usize = 1000;

/// `createTicket` mutations of each measured phase.
const MUTATIONS: u64 = 300;

/// Mutations of the one-subscriber phase.
const ALONE_MUTATIONS: u64 = 100;

/// Mutations sent per second (open loop).
const RATE: f64 = 10.0;

/// Websocket handshakes under way at once while the clients connect.
const CONNECT_AT_ONCE: usize = 50;

/// The clients' websocket read buffer.
const CLIENT_READ_BUFFER: usize = 8 * 1024;

/// Set (to the server's websocket URL) in the client process's environment.
const FLEET_ENV: &str = "BENCH_SUBSCRIBERS_FLEET";

/// The JWT secret of the bench's server (also handed to the client process).
const JWT_SECRET: &str = "bench-subscribers-jwt-secret";

/// How long a sentinel may take to reach every subscriber, and how many are tried.
const SENTINEL_WAIT: Duration = Duration::from_secs(30);
const SENTINELS: usize = 5;

/// Deliveries are awaited until none has come for this long.
const QUIET: Duration = Duration::from_secs(15);

/// How long the clients have to connect and subscribe.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// What the subscribers select.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Selection {
    /// What the feed's message carries; no resolver reads the database.
    Lean,
    /// The same and `ticket { status queuePosition }`, as `docs/api.md` shows.
    WithTicket,
}

impl Selection {
    fn query(self) -> &'static str {
        match self {
            Selection::Lean => {
                "subscription($d: ID) { queueUpdated(divisionId: $d) { \
                 divisionId ticketId change at logPosition } }"
            }
            Selection::WithTicket => {
                "subscription($d: ID) { queueUpdated(divisionId: $d) { \
                 divisionId ticketId change at logPosition ticket { status queuePosition } } }"
            }
        }
    }

    fn label(self) -> &'static str {
        match self {
            Selection::Lean => "lean",
            Selection::WithTicket => "+ ticket { status queuePosition }",
        }
    }

    /// The word naming it between the two processes.
    fn word(self) -> &'static str {
        match self {
            Selection::Lean => "lean",
            Selection::WithTicket => "ticket",
        }
    }

    fn from_word(word: &str) -> Option<Self> {
        match word {
            "lean" => Some(Selection::Lean),
            "ticket" => Some(Selection::WithTicket),
            _ => None,
        }
    }
}

/// One phase: who listens, how many tickets are created.
#[derive(Debug, Clone, Copy)]
struct PhaseSpec {
    subscribers: usize,
    selection: Selection,
    mutations: u64,
}

/// The phases, in order.
const PHASES: [PhaseSpec; 3] = [
    PhaseSpec {
        subscribers: 1,
        selection: Selection::Lean,
        mutations: ALONE_MUTATIONS,
    },
    PhaseSpec {
        subscribers: SUBSCRIBERS,
        selection: Selection::Lean,
        mutations: MUTATIONS,
    },
    PhaseSpec {
        subscribers: SUBSCRIBERS,
        selection: Selection::WithTicket,
        mutations: MUTATIONS,
    },
];

/// The figures of one phase.
pub struct Phase {
    spec: PhaseSpec,
    /// Subscribers that connected and subscribed, and how long that took.
    connected: usize,
    connect_time: Duration,
    /// Sentinels it took until one reached everybody.
    sentinels: usize,
    /// `createTicket` round trips, µs.
    mutation: Histogram<u64>,
    /// Per delivery: from the event's `at`, and from the request's start, µs.
    from_at: Histogram<u64>,
    from_start: Histogram<u64>,
    /// Per message: its first and last receipt from `at`, and the spread between them, µs.
    first: Histogram<u64>,
    last: Histogram<u64>,
    spread: Histogram<u64>,
    expected: u64,
    delivered: u64,
    missing: u64,
    duplicates: u64,
    /// Deliveries that came after one of a later log position (per subscriber).
    out_of_order: u64,
    refetch: u64,
    errors: u64,
    ended: u64,
    unexpected: u64,
    /// Deliveries that came before their mutation's answer.
    before_answer: u64,
    /// Deliveries stamped earlier than their `at` (clock trouble; recorded as 0).
    negative: u64,
    /// First request to last answer, and first request to last receipt.
    drive_wall: Duration,
    deliver_wall: Duration,
    cpu: CpuUse,
    /// From `/metrics`: per series label, samples and mean ms.
    steps: Vec<(String, u64, f64)>,
    /// A few of the error frames, as received.
    error_samples: Vec<String>,
}

/// CPU seconds used over a phase.
#[derive(Debug, Clone, Copy, Default)]
struct CpuUse {
    wall: f64,
    server: f64,
    clients: f64,
    postgres: f64,
    machine: f64,
}

/// `VmRSS` of the two processes at one moment, kB.
struct MemoryMark {
    when: String,
    server: Option<u64>,
    clients: Option<u64>,
}

/// The figures of one backend.
pub struct SubscribersRun {
    backend: &'static str,
    load_before: String,
    load_after: String,
    open_files: libc::rlim_t,
    phases: Vec<Phase>,
    memory: Vec<MemoryMark>,
}

/// Runs the scenario on the backends `--backend` selects (or, in the client process, the
/// clients: then nothing is returned).
pub async fn run(args: &Args) -> anyhow::Result<Vec<SubscribersRun>> {
    if let Ok(url) = std::env::var(FLEET_ENV) {
        fleet(&url).await.context("the subscriber process")?;
        return Ok(Vec::new());
    }
    on_fresh_databases(args, "bench_subs", |backend, url| async move {
        measure(backend, url).await
    })
    .await
}

// ---------------------------------------------------------------------------------------
// The server side (this process).

async fn measure(backend: &'static str, url: String) -> anyhow::Result<SubscribersRun> {
    let load_before = loadavg();
    // Each subscriber holds a socket here and one in the client process.
    let open_files = raise_open_files((SUBSCRIBERS + 512) as libc::rlim_t)?;
    let mut memory = vec![MemoryMark {
        when: "bench process, before the server starts".into(),
        server: rss_kb("self"),
        clients: None,
    }];
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(60))
        .build()
        .context("building the HTTP client")?;
    let server = RunningServer::start(&url, &http, JWT_SECRET).await?;
    let measured = measure_on(backend, &server.base, &http, &mut memory).await;
    drop(http);
    let stopped = server.stop().await;
    let phases = measured?;
    stopped.context("stopping the server")?;
    Ok(SubscribersRun {
        backend,
        load_before,
        load_after: loadavg(),
        open_files,
        phases,
        memory,
    })
}

async fn measure_on(
    backend: &'static str,
    base: &str,
    http: &reqwest::Client,
    memory: &mut Vec<MemoryMark>,
) -> anyhow::Result<Vec<Phase>> {
    let keys = TokenKeys::new(JWT_SECRET.as_bytes());
    let admin = keys.issue(
        "bench-admin",
        ORGANIZATION,
        Role::Admin,
        Duration::from_secs(24 * 3600),
    );
    let division = graphql(
        http,
        base,
        &admin,
        "mutation { createDivision(input: { name: \"Billing\", assignmentMode: CLAIM }) { id } }",
        json!({}),
    )
    .await?["createDivision"]["id"]
        .as_str()
        .ok_or_else(|| anyhow!("createDivision returned no id"))?
        .to_string();
    let ws_url = format!("{}/graphql/ws", base.replacen("http", "ws", 1));
    let mut fleet = Fleet::spawn(&ws_url).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    memory.push(MemoryMark {
        when: "server started, no subscriber".into(),
        server: rss_kb("self"),
        clients: fleet.rss(),
    });
    let client = Driver {
        http,
        base,
        token: &admin,
        division: &division,
    };
    let mut phases = Vec::new();
    for (p, spec) in PHASES.iter().enumerate() {
        let phase = run_phase(backend, p, *spec, &client, &mut fleet, memory).await;
        match phase {
            Ok(phase) => phases.push(phase),
            Err(error) => {
                fleet.stop().await;
                return Err(error.context(format!("{backend}: phase {}", p + 1)));
            }
        }
    }
    fleet.stop().await;
    Ok(phases)
}

/// Connects the phase's subscribers, creates its tickets, collects the receipts, lets the
/// subscribers go.
async fn run_phase(
    backend: &'static str,
    p: usize,
    spec: PhaseSpec,
    driver: &Driver<'_>,
    fleet: &mut Fleet,
    memory: &mut Vec<MemoryMark>,
) -> anyhow::Result<Phase> {
    let name = format!(
        "{backend}: phase {} — {} subscriber(s), {}",
        p + 1,
        spec.subscribers,
        spec.selection.label()
    );
    eprintln!("{name}: connecting (load {})", loadavg());
    let started = Instant::now();
    let reply = fleet
        .request(&format!(
            "connect {} {} {}",
            spec.subscribers,
            spec.selection.word(),
            driver.division
        ))
        .await?;
    let connect_time = started.elapsed();
    let connected = match reply.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["connected", total, failed] => {
            let total: usize = total.parse()?;
            let failed: usize = failed.parse()?;
            if failed > 0 || total != spec.subscribers {
                bail!("{total} subscribers connected, {failed} failed");
            }
            total
        }
        _ => bail!("unexpected answer from the client process: {reply}"),
    };
    // graphql-transport-ws acknowledges no subscription: wait until a ticket reaches all.
    let mut sentinels = 0;
    let mut live = false;
    while !live && sentinels < SENTINELS {
        sentinels += 1;
        let ticket = driver
            .create(&format!("Sentinel {}-{sentinels}", p + 1))
            .await?
            .0;
        let deadline = Instant::now() + SENTINEL_WAIT;
        while Instant::now() < deadline {
            let seen: usize = fleet
                .request(&format!("seen {ticket}"))
                .await?
                .trim_start_matches("seen ")
                .parse()?;
            if seen >= connected {
                live = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    if !live {
        bail!("none of {SENTINELS} sentinel tickets reached all {connected} subscribers");
    }
    fleet.request("reset").await?;
    eprintln!(
        "{name}: {connected} connected and live in {:.1} s; {} createTicket at {RATE}/s",
        connect_time.as_secs_f64(),
        spec.mutations
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    memory.push(MemoryMark {
        when: format!(
            "phase {}: {connected} subscriber(s) connected ({})",
            p + 1,
            spec.selection.label()
        ),
        server: rss_kb("self"),
        clients: fleet.rss(),
    });

    let metrics_before = scrape_metrics(driver.http, driver.base).await?;
    let cpu_before = CpuSnapshot::take(fleet.pid);
    let expected = spec.mutations * connected as u64;
    let sent = driver.drive(p, spec.mutations).await?;
    let progress = progress_bar(expected, "deliveries")?;
    let mut last_count = 0;
    let mut last_change = Instant::now();
    loop {
        let count: u64 = fleet
            .request("total")
            .await?
            .split_whitespace()
            .nth(1)
            .ok_or_else(|| anyhow!("bad total"))?
            .parse()?;
        progress.set_position(count.min(expected));
        if count != last_count {
            last_count = count;
            last_change = Instant::now();
        }
        if count >= expected || last_change.elapsed() > QUIET {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    progress.finish_and_clear();
    let cpu = CpuSnapshot::take(fleet.pid).since(&cpu_before);
    let metrics_after = scrape_metrics(driver.http, driver.base).await?;
    memory.push(MemoryMark {
        when: format!("phase {}: after the mutations", p + 1),
        server: rss_kb("self"),
        clients: fleet.rss(),
    });
    let receipts = fleet.dump().await?;
    fleet.request("close").await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    memory.push(MemoryMark {
        when: format!("phase {}: after the subscribers left", p + 1),
        server: rss_kb("self"),
        clients: fleet.rss(),
    });
    let mut phase = tally(spec, connected, &sent, &receipts)?;
    phase.connect_time = connect_time;
    phase.sentinels = sentinels;
    phase.cpu = cpu;
    phase.steps = metric_steps(&metrics_before, &metrics_after);
    eprintln!(
        "{name}: {} of {} delivered, {} missing, {} REFETCH",
        phase.delivered, phase.expected, phase.missing, phase.refetch
    );
    Ok(phase)
}

/// The admin's HTTP side: creates the tickets.
struct Driver<'a> {
    http: &'a reqwest::Client,
    base: &'a str,
    token: &'a str,
    division: &'a str,
}

/// One `createTicket` as sent: the ticket, when the request started and when it answered
/// (µs since the epoch), its round trip.
struct Sent {
    ticket: String,
    start_us: i64,
    answer_us: i64,
    round_trip: Duration,
}

impl Driver<'_> {
    /// Creates a ticket in the division; its id and the round trip.
    async fn create(&self, subject: &str) -> anyhow::Result<(String, Duration)> {
        let started = Instant::now();
        let data = graphql(
            self.http,
            self.base,
            self.token,
            "mutation($input: CreateTicketInput!) { createTicket(input: $input) { id } }",
            json!({ "input": { "subject": subject, "divisionId": self.division } }),
        )
        .await?;
        let id = data["createTicket"]["id"]
            .as_str()
            .ok_or_else(|| anyhow!("createTicket returned no id"))?
            .to_string();
        Ok((id, started.elapsed()))
    }

    /// Sends `n` creations at [`RATE`] per second, open loop; returns them in order.
    async fn drive(&self, p: usize, n: u64) -> anyhow::Result<Vec<Sent>> {
        let started = tokio::time::Instant::now();
        let mut set = JoinSet::new();
        for i in 0..n {
            tokio::time::sleep_until(started + Duration::from_secs_f64(i as f64 / RATE)).await;
            let (http, base, token, division) = (
                self.http.clone(),
                self.base.to_string(),
                self.token.to_string(),
                self.division.to_string(),
            );
            set.spawn(async move {
                let driver = Driver {
                    http: &http,
                    base: &base,
                    token: &token,
                    division: &division,
                };
                let start_us = now_us();
                let (ticket, round_trip) = driver
                    .create(&format!("Bench ticket {}-{i}", p + 1))
                    .await
                    .with_context(|| format!("createTicket {i}"))?;
                anyhow::Ok((
                    i,
                    Sent {
                        ticket,
                        start_us,
                        answer_us: now_us(),
                        round_trip,
                    },
                ))
            });
        }
        let mut sent = Vec::new();
        while let Some(joined) = set.join_next().await {
            sent.push(joined.context("a mutation task panicked")??);
        }
        sent.sort_by_key(|(i, _)| *i);
        Ok(sent.into_iter().map(|(_, s)| s).collect())
    }
}

/// Who received one message, when (in the client process, and as it reports it).
struct Receipts {
    log_position: i64,
    at: String,
    /// (subscriber, receipt µs since the epoch).
    by: Vec<(u32, i64)>,
}

/// Everything the client process recorded in a phase.
#[derive(Default)]
struct Dump {
    messages: HashMap<String, Receipts>,
    refetch: u64,
    ended: u64,
    errors: u64,
    error_samples: Vec<String>,
}

/// Matches the receipts with what was sent.
fn tally(spec: PhaseSpec, subscribers: usize, sent: &[Sent], dump: &Dump) -> anyhow::Result<Phase> {
    let mut phase = Phase {
        spec,
        connected: subscribers,
        connect_time: Duration::ZERO,
        sentinels: 0,
        mutation: latency_histogram()?,
        from_at: latency_histogram()?,
        from_start: latency_histogram()?,
        first: latency_histogram()?,
        last: latency_histogram()?,
        spread: latency_histogram()?,
        expected: sent.len() as u64 * subscribers as u64,
        delivered: 0,
        missing: 0,
        duplicates: 0,
        out_of_order: 0,
        refetch: dump.refetch,
        errors: dump.errors,
        ended: dump.ended,
        unexpected: 0,
        before_answer: 0,
        negative: 0,
        drive_wall: Duration::ZERO,
        deliver_wall: Duration::ZERO,
        cpu: CpuUse::default(),
        steps: Vec::new(),
        error_samples: dump.error_samples.clone(),
    };
    let first_start = sent.iter().map(|s| s.start_us).min().unwrap_or(0);
    let last_answer = sent.iter().map(|s| s.answer_us).max().unwrap_or(0);
    let mut last_receipt = first_start;
    let mut seen = vec![0u32; subscribers];
    // Per subscriber: (receipt, log position) of what it received, to check the order.
    let mut order: Vec<Vec<(i64, i64)>> = vec![Vec::new(); subscribers];
    for s in sent {
        phase.mutation.saturating_record(micros(s.round_trip));
        let Some(message) = dump.messages.get(&s.ticket) else {
            phase.missing += subscribers as u64;
            continue;
        };
        let at = chrono::DateTime::parse_from_rfc3339(&message.at)
            .with_context(|| format!("the `at` of ticket {}: {:?}", s.ticket, message.at))?;
        let at_us = at.timestamp_micros();
        seen.iter_mut().for_each(|n| *n = 0);
        let (mut first, mut last) = (i64::MAX, i64::MIN);
        for &(subscriber, received) in &message.by {
            let count = seen
                .get_mut(subscriber as usize)
                .ok_or_else(|| anyhow!("a receipt of unknown subscriber {subscriber}"))?;
            *count += 1;
            if *count > 1 {
                phase.duplicates += 1;
                continue;
            }
            phase.delivered += 1;
            order[subscriber as usize].push((received, message.log_position));
            if received < at_us {
                phase.negative += 1;
            }
            if received < s.answer_us {
                phase.before_answer += 1;
            }
            phase
                .from_at
                .saturating_record((received - at_us).max(0) as u64);
            phase
                .from_start
                .saturating_record((received - s.start_us).max(0) as u64);
            first = first.min(received);
            last = last.max(received);
        }
        if first <= last {
            phase.first.saturating_record((first - at_us).max(0) as u64);
            phase.last.saturating_record((last - at_us).max(0) as u64);
            phase.spread.saturating_record((last - first) as u64);
            last_receipt = last_receipt.max(last);
        }
        phase.missing += seen.iter().filter(|n| **n == 0).count() as u64;
    }
    for received in &mut order {
        received.sort_unstable();
        phase.out_of_order += received
            .windows(2)
            .filter(|pair| pair[1].1 < pair[0].1)
            .count() as u64;
    }
    let created: std::collections::HashSet<&str> = sent.iter().map(|s| s.ticket.as_str()).collect();
    phase.unexpected = dump
        .messages
        .iter()
        .filter(|(ticket, _)| !created.contains(ticket.as_str()))
        .map(|(_, m)| m.by.len() as u64)
        .sum();
    phase.drive_wall = Duration::from_micros((last_answer - first_start).max(0) as u64);
    phase.deliver_wall = Duration::from_micros((last_receipt - first_start).max(0) as u64);
    Ok(phase)
}

/// Per command and per projection's lag: samples and mean ms between two scrapes, and the
/// consistency timeouts (as a row of their own).
fn metric_steps(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> Vec<(String, u64, f64)> {
    let delta = |series: &str| {
        after.get(series).copied().unwrap_or(0.0) - before.get(series).copied().unwrap_or(0.0)
    };
    let mut steps = Vec::new();
    for series in after.keys() {
        for (family, prefix) in [
            ("helpdesk_command_duration_seconds", ""),
            ("helpdesk_projection_lag_seconds", "lag "),
        ] {
            let Some(labels) = series
                .strip_prefix(family)
                .and_then(|s| s.strip_prefix("_count{"))
                .and_then(|s| s.strip_suffix('}'))
            else {
                continue;
            };
            let calls = delta(series);
            if calls > 0.0 {
                let sum = delta(&format!("{family}_sum{{{labels}}}"));
                let label = labels
                    .replace("command=", "")
                    .replace("projection=", "")
                    .replace(",outcome=", " ")
                    .replace('"', "");
                steps.push((format!("{prefix}{label}"), calls as u64, sum * 1e3 / calls));
            }
        }
        if series.starts_with("helpdesk_consistency_timeouts_total{") && delta(series) > 0.0 {
            steps.push((
                format!("consistency timeouts {series}"),
                delta(series) as u64,
                0.0,
            ));
        }
    }
    steps
}

/// The client process, seen from the server's side.
struct Fleet {
    child: tokio::process::Child,
    pid: u32,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Fleet {
    /// Starts this binary again as the client process, connected to `ws_url`.
    async fn spawn(ws_url: &str) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding the bench binary")?;
        let mut child = tokio::process::Command::new(exe)
            .args(["--scenario", "subscribers"])
            .env(FLEET_ENV, ws_url)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting the client process")?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("the client process has no pid"))?;
        let stdin = child.stdin.take().context("the client process's stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("its stdout")?).lines();
        let mut fleet = Self {
            child,
            pid,
            stdin,
            stdout,
        };
        let ready = fleet.line().await?;
        if ready != "ready" {
            bail!("the client process said {ready:?} instead of ready");
        }
        Ok(fleet)
    }

    /// The client process's next line.
    async fn line(&mut self) -> anyhow::Result<String> {
        match tokio::time::timeout(Duration::from_secs(600), self.stdout.next_line()).await {
            Ok(Ok(Some(line))) => Ok(line),
            Ok(Ok(None)) => bail!("the client process ended"),
            Ok(Err(error)) => Err(error).context("reading from the client process"),
            Err(_) => bail!("the client process did not answer within 10 minutes"),
        }
    }

    /// Sends one command and reads the one-line answer.
    async fn request(&mut self, command: &str) -> anyhow::Result<String> {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .context("writing to the client process")?;
        self.stdin.flush().await?;
        let answer = self.line().await?;
        if let Some(error) = answer.strip_prefix("failed ") {
            bail!("the client process failed: {error}");
        }
        Ok(answer)
    }

    /// Everything the clients recorded since the last reset.
    async fn dump(&mut self) -> anyhow::Result<Dump> {
        let mut dump = Dump::default();
        let mut header = self.request("dump").await?;
        let mut current: Option<(String, Receipts)> = None;
        loop {
            let words: Vec<&str> = header.split(' ').collect();
            match words.as_slice() {
                ["end"] => break,
                ["m", ticket, position, at] => {
                    if let Some((ticket, receipts)) = current.take() {
                        dump.messages.insert(ticket, receipts);
                    }
                    current = Some((
                        ticket.to_string(),
                        Receipts {
                            log_position: position.parse()?,
                            at: at.to_string(),
                            by: Vec::new(),
                        },
                    ));
                }
                ["r", subscriber, received] => {
                    let (_, receipts) = current
                        .as_mut()
                        .ok_or_else(|| anyhow!("a receipt before its message"))?;
                    receipts.by.push((subscriber.parse()?, received.parse()?));
                }
                ["s", refetch, ended, errors] => {
                    dump.refetch = refetch.parse()?;
                    dump.ended = ended.parse()?;
                    dump.errors = errors.parse()?;
                }
                ["e", ..] => dump.error_samples.push(header[2..].to_string()),
                _ => bail!("unexpected dump line from the client process: {header}"),
            }
            header = self.line().await?;
        }
        if let Some((ticket, receipts)) = current.take() {
            dump.messages.insert(ticket, receipts);
        }
        Ok(dump)
    }

    fn rss(&self) -> Option<u64> {
        rss_kb(&self.pid.to_string())
    }

    /// Closes the client process's stdin and waits for it (or kills it).
    async fn stop(mut self) {
        let _ = self.stdin.shutdown().await;
        drop(self.stdin);
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// The client process.

/// What the subscribers have received since the last reset.
#[derive(Default)]
struct Records {
    /// By ticket: log position, `at`, and who received it when.
    messages: HashMap<String, Receipts>,
    receipts: u64,
    refetch: u64,
    ended: u64,
    errors: u64,
    error_samples: Vec<String>,
}

impl Records {
    fn error(&mut self, text: String) {
        self.errors += 1;
        if self.error_samples.len() < 5 {
            self.error_samples.push(text.replace('\n', " "));
        }
    }
}

type Shared = Arc<Mutex<Records>>;

fn lock(records: &Shared) -> std::sync::MutexGuard<'_, Records> {
    records.lock().unwrap_or_else(|e| e.into_inner())
}

/// The client process: answers commands on stdin, one line each on stdout.
///
/// - `connect N SELECTION DIVISION` → `connected TOTAL FAILED`
/// - `seen TICKET` → `seen N` (subscribers that have received it)
/// - `total` → `total RECEIPTS REFETCH ERRORS ENDED`
/// - `reset` → `reset` (forgets the receipts)
/// - `dump` → `m TICKET POSITION AT`, its `r SUBSCRIBER MICROS` lines, …, `s REFETCH ENDED
///   ERRORS`, `e TEXT` lines, `end`
/// - `close` → `closed` (every connection closed)
///
/// It ends when stdin closes.
async fn fleet(ws_url: &str) -> anyhow::Result<()> {
    raise_open_files((SUBSCRIBERS + 256) as libc::rlim_t)?;
    let keys = TokenKeys::new(JWT_SECRET.as_bytes());
    let records: Shared = Arc::default();
    let mut stop = CancellationToken::new();
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut total = 0usize;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut out = std::io::stdout();
    writeln!(out, "ready")?;
    out.flush()?;
    while let Some(line) = stdin.next_line().await? {
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["connect", n, selection, division] => {
                let n: usize = n.parse()?;
                let selection = Selection::from_word(selection)
                    .ok_or_else(|| anyhow!("unknown selection {selection}"))?;
                let failed = connect(
                    ws_url,
                    &keys,
                    selection,
                    division,
                    total..total + n,
                    &records,
                    &stop,
                    &mut tasks,
                )
                .await;
                total += n - failed;
                format!("connected {total} {failed}")
            }
            ["seen", ticket] => {
                let records = lock(&records);
                let n = records.messages.get(*ticket).map_or(0, |m| m.by.len());
                format!("seen {n}")
            }
            ["total"] => {
                let r = lock(&records);
                format!(
                    "total {} {} {} {}",
                    r.receipts, r.refetch, r.errors, r.ended
                )
            }
            ["reset"] => {
                *lock(&records) = Records::default();
                "reset".to_string()
            }
            ["dump"] => {
                let records = std::mem::take(&mut *lock(&records));
                let mut buffered = std::io::BufWriter::new(&mut out);
                for (ticket, message) in &records.messages {
                    writeln!(
                        buffered,
                        "m {ticket} {} {}",
                        message.log_position, message.at
                    )?;
                    for (subscriber, received) in &message.by {
                        writeln!(buffered, "r {subscriber} {received}")?;
                    }
                }
                writeln!(
                    buffered,
                    "s {} {} {}",
                    records.refetch, records.ended, records.errors
                )?;
                for sample in &records.error_samples {
                    writeln!(buffered, "e {sample}")?;
                }
                buffered.flush()?;
                "end".to_string()
            }
            ["close"] => {
                stop.cancel();
                while tasks.join_next().await.is_some() {}
                stop = CancellationToken::new();
                total = 0;
                *lock(&records) = Records::default();
                "closed".to_string()
            }
            _ => format!("failed unknown command {line:?}"),
        };
        writeln!(out, "{answer}")?;
        out.flush()?;
    }
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Opens the subscribers numbered `range`, [`CONNECT_AT_ONCE`] at a time, each reading
/// on in a task of `tasks`; returns how many failed.
#[allow(clippy::too_many_arguments)]
async fn connect(
    ws_url: &str,
    keys: &TokenKeys,
    selection: Selection,
    division: &str,
    range: std::ops::Range<usize>,
    records: &Shared,
    stop: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> usize {
    let progress = progress_bar(range.len() as u64, "subscribers connected").ok();
    let gate = Arc::new(tokio::sync::Semaphore::new(CONNECT_AT_ONCE));
    let mut ready = Vec::new();
    for n in range {
        let token = keys.issue(
            &format!("sub-{n}"),
            ORGANIZATION,
            Role::Agent,
            Duration::from_secs(24 * 3600),
        );
        let (tell, told) = tokio::sync::oneshot::channel();
        ready.push(told);
        let (url, division, records, stop, gate) = (
            ws_url.to_string(),
            division.to_string(),
            records.clone(),
            stop.clone(),
            gate.clone(),
        );
        tasks.spawn(async move {
            let socket = {
                let Ok(_permit) = gate.acquire().await else {
                    return;
                };
                tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    open(&url, &token, selection.query(), &division),
                )
                .await
                .unwrap_or_else(|_| Err(anyhow!("timed out")))
            };
            match socket {
                Ok(socket) => {
                    let _ = tell.send(Ok(()));
                    listen(n as u32, socket, &records, &stop).await;
                }
                Err(error) => {
                    let _ = tell.send(Err(error));
                }
            }
        });
    }
    let mut failed = 0;
    for told in ready {
        match told.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                failed += 1;
                if failed <= 3 {
                    eprintln!("a subscriber could not connect: {error:#}");
                }
            }
            Err(_) => failed += 1,
        }
        if let Some(progress) = &progress {
            progress.inc(1);
        }
    }
    if let Some(progress) = progress {
        progress.finish_and_clear();
    }
    failed
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `/graphql/ws`, sends `connection_init` with `token`, awaits the ack and
/// subscribes (id "1") to `query` for `division`.
async fn open(url: &str, token: &str, query: &str, division: &str) -> anyhow::Result<Socket> {
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse()?);
    let config = WebSocketConfig::default().read_buffer_size(CLIENT_READ_BUFFER);
    let (mut socket, _) =
        tokio_tungstenite::connect_async_with_config(request, Some(config), true).await?;
    socket
        .send(Message::text(
            json!({ "type": "connection_init",
                    "payload": { "authorization": format!("Bearer {token}") } })
            .to_string(),
        ))
        .await?;
    loop {
        let frame = socket
            .next()
            .await
            .ok_or_else(|| anyhow!("closed before connection_ack"))??;
        if let Message::Text(text) = frame {
            let message: Value = serde_json::from_str(text.as_str())?;
            if message["type"] == "connection_ack" {
                break;
            }
            bail!("answered connection_init with {message}");
        }
    }
    socket
        .send(Message::text(
            json!({ "id": "1", "type": "subscribe",
                    "payload": { "query": query, "variables": { "d": division } } })
            .to_string(),
        ))
        .await?;
    Ok(socket)
}

/// Reads subscriber `n`'s socket until `stop`, recording every message.
async fn listen(n: u32, mut socket: Socket, records: &Shared, stop: &CancellationToken) {
    loop {
        let frame = tokio::select! {
            _ = stop.cancelled() => {
                let _ = socket.close(None).await;
                return;
            }
            frame = socket.next() => frame,
        };
        let received = now_us();
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                lock(records).ended += 1;
                return;
            }
            Some(Ok(_)) => continue,
        };
        let message: Value = match serde_json::from_str(text.as_str()) {
            Ok(message) => message,
            Err(_) => {
                lock(records).error(format!("not JSON: {}", text.as_str()));
                continue;
            }
        };
        match message["type"].as_str() {
            Some("next") => {
                let update = &message["payload"]["data"]["queueUpdated"];
                let mut records = lock(records);
                if message["payload"].get("errors").is_some() {
                    records.error(message.to_string());
                } else if update["change"] == "REFETCH" {
                    records.refetch += 1;
                } else if let (Some(ticket), Some(at), Some(position)) = (
                    update["ticketId"].as_str(),
                    update["at"].as_str(),
                    update["logPosition"].as_i64(),
                ) {
                    records.receipts += 1;
                    records
                        .messages
                        .entry(ticket.to_string())
                        .or_insert_with(|| Receipts {
                            log_position: position,
                            at: at.to_string(),
                            by: Vec::new(),
                        })
                        .by
                        .push((n, received));
                } else {
                    records.error(message.to_string());
                }
            }
            Some("ping") => {
                let _ = socket
                    .send(Message::text(json!({ "type": "pong" }).to_string()))
                    .await;
            }
            Some("pong") => {}
            _ => {
                lock(records).error(message.to_string());
                if message["type"] == "complete" {
                    lock(records).ended += 1;
                    return;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Both processes.

/// Microseconds since the epoch, from the real-time clock.
fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Raises this process's soft limit on open files to `wanted` if it is lower (up to the
/// hard limit); returns the soft limit in force.
fn raise_open_files(wanted: libc::rlim_t) -> anyhow::Result<libc::rlim_t> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given, which lives on this stack.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    if limit.rlim_cur >= wanted {
        return Ok(limit.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: wanted.min(limit.rlim_max),
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit only reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setrlimit(RLIMIT_NOFILE)");
    }
    if raised.rlim_cur < wanted {
        bail!(
            "{wanted} open files are needed but the hard limit is {}: raise it (ulimit -Hn)",
            limit.rlim_max
        );
    }
    eprintln!(
        "raised the open-file limit from {} to {}",
        limit.rlim_cur, raised.rlim_cur
    );
    Ok(raised.rlim_cur)
}

/// `VmRSS` of process `pid` (`self` for this one), kB.
fn rss_kb(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// utime + stime of process `pid`, in clock ticks, and its command name.
fn cpu_ticks(pid: &str) -> Option<(u64, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_string();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state (0), …, utime (11), stime (12).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime, name))
}

/// CPU counters at one moment, in clock ticks.
struct CpuSnapshot {
    at: Instant,
    server: u64,
    clients: u64,
    /// By pid: every process named `postgres`.
    postgres: HashMap<String, u64>,
    machine: u64,
}

impl CpuSnapshot {
    fn take(clients: u32) -> Self {
        let postgres = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                name.bytes().all(|b| b.is_ascii_digit()).then_some(name)
            })
            .filter_map(|pid| {
                let (ticks, name) = cpu_ticks(&pid)?;
                (name == "postgres").then_some((pid, ticks))
            })
            .collect();
        // The first line of /proc/stat: user nice system idle iowait irq softirq steal …
        let machine = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|stat| {
                let line = stat.lines().next()?.to_string();
                let values: Vec<u64> = line
                    .split_whitespace()
                    .skip(1)
                    .take(8)
                    .filter_map(|v| v.parse().ok())
                    .collect();
                (values.len() == 8).then(|| values.iter().sum::<u64>() - values[3] - values[4])
            })
            .unwrap_or(0);
        Self {
            at: Instant::now(),
            server: cpu_ticks("self").map_or(0, |c| c.0),
            clients: cpu_ticks(&clients.to_string()).map_or(0, |c| c.0),
            postgres,
            machine,
        }
    }

    /// The CPU seconds used since `before`.
    fn since(&self, before: &CpuSnapshot) -> CpuUse {
        // SAFETY: sysconf reads a constant of the system.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let seconds = |now: u64, then: u64| now.saturating_sub(then) as f64 / ticks;
        CpuUse {
            wall: self.at.duration_since(before.at).as_secs_f64(),
            server: seconds(self.server, before.server),
            clients: seconds(self.clients, before.clients),
            // Processes that started since count whole; those that ended are lost.
            postgres: self
                .postgres
                .iter()
                .map(|(pid, ticks)| seconds(*ticks, before.postgres.get(pid).copied().unwrap_or(0)))
                .sum(),
            machine: seconds(self.machine, before.machine),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The report.

/// Prints the tables on stdout (nothing in the client process).
pub fn print_report(_args: &Args, runs: &[SubscribersRun]) {
    if runs.is_empty() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "\nsubscribers: queueUpdated(divisionId) over graphql-transport-ws, one websocket and \
         one agent token per subscriber (clients in a child process); createTicket in that \
         division at {RATE}/s, open loop; server in process on loopback; {cores} cores"
    );
    for run in runs {
        println!(
            "{}: load average {} before, {} after; open-file limit {}",
            run.backend, run.load_before, run.load_after, run.open_files
        );
    }
    println!(
        "\n{:<9} {:<38} {:<26} {}",
        "backend",
        "phase",
        "latency",
        quantile_header()
    );
    for run in runs {
        for (p, phase) in run.phases.iter().enumerate() {
            let label = format!(
                "{}. {} sub., {}",
                p + 1,
                phase.connected,
                phase.spec.selection.label()
            );
            let rows: [(&str, &Histogram<u64>); 6] = [
                ("delivery, from `at`", &phase.from_at),
                ("delivery, from request", &phase.from_start),
                ("first subscriber, from `at`", &phase.first),
                ("last subscriber, from `at`", &phase.last),
                ("spread first..last", &phase.spread),
                ("createTicket round trip", &phase.mutation),
            ];
            for (r, (what, histogram)) in rows.iter().enumerate() {
                println!(
                    "{:<9} {:<38} {:<26} {}",
                    run.backend,
                    if r == 0 { label.as_str() } else { "" },
                    what,
                    quantile_columns(histogram)
                );
            }
        }
    }
    println!(
        "\ncompleteness: every subscriber must receive every ticket (unordered: deliveries \
         after one of a later log position; other: deliveries of tickets not created in the \
         phase; <answer: delivered before the mutation had answered)"
    );
    println!(
        "{:<9} {:<6} {:>9} {:>9} {:>8} {:>5} {:>9} {:>8} {:>7} {:>6} {:>6} {:>10} {:>10} {:>9}",
        "backend",
        "phase",
        "expected",
        "delivered",
        "missing",
        "dup.",
        "unordered",
        "REFETCH",
        "errors",
        "ended",
        "other",
        "<answer %",
        "drive s",
        "deliver s"
    );
    for run in runs {
        for (p, phase) in run.phases.iter().enumerate() {
            println!(
                "{:<9} {:<6} {:>9} {:>9} {:>8} {:>5} {:>9} {:>8} {:>7} {:>6} {:>6} {:>10.1} {:>10.1} {:>9.1}",
                run.backend,
                p + 1,
                phase.expected,
                phase.delivered,
                phase.missing,
                phase.duplicates,
                phase.out_of_order,
                phase.refetch,
                phase.errors,
                phase.ended,
                phase.unexpected,
                phase.before_answer as f64 * 100.0 / phase.delivered.max(1) as f64,
                phase.drive_wall.as_secs_f64(),
                phase.deliver_wall.as_secs_f64()
            );
        }
    }
    for run in runs {
        for (p, phase) in run.phases.iter().enumerate() {
            if phase.negative > 0 {
                println!(
                    "{} phase {}: {} deliveries stamped before their `at` (recorded as 0)",
                    run.backend,
                    p + 1,
                    phase.negative
                );
            }
            for sample in &phase.error_samples {
                println!("{} phase {}: error frame {sample}", run.backend, p + 1);
            }
        }
    }
    println!(
        "\nconnecting: subscribers, seconds to connect and subscribe ({CONNECT_AT_ONCE} \
         handshakes at a time), sentinels until all were live"
    );
    for run in runs {
        for (p, phase) in run.phases.iter().enumerate() {
            println!(
                "  {} phase {}: {} in {:.1} s, {} sentinel(s)",
                run.backend,
                p + 1,
                phase.connected,
                phase.connect_time.as_secs_f64(),
                phase.sentinels
            );
        }
    }
    println!(
        "\nCPU seconds over each phase's mutations and deliveries (server = this process: \
         server + driver; postgres = every process so named; machine = all cores busy, \
         other users included). fan-out = the server's CPU beyond phase 1's per mutation, \
         per delivery"
    );
    println!(
        "{:<9} {:<6} {:>7} {:>8} {:>8} {:>9} {:>8} {:>12} {:>13} {:>13} {:>13}",
        "backend",
        "phase",
        "wall s",
        "server",
        "clients",
        "postgres",
        "machine",
        "server ms/mut",
        "server µs/msg",
        "fan-out µs/msg",
        "clients µs/msg"
    );
    for run in runs {
        // The server's CPU per mutation with one subscriber: the command path's own share.
        let alone = run
            .phases
            .iter()
            .find(|phase| phase.connected == 1)
            .map(|phase| phase.cpu.server / phase.spec.mutations.max(1) as f64);
        for (p, phase) in run.phases.iter().enumerate() {
            let delivered = phase.delivered.max(1) as f64;
            let fan_out = match alone {
                Some(alone) if phase.connected > 1 => format!(
                    "{:.1}",
                    (phase.cpu.server - alone * phase.spec.mutations as f64) * 1e6 / delivered
                ),
                _ => "-".to_string(),
            };
            println!(
                "{:<9} {:<6} {:>7.1} {:>8.2} {:>8.2} {:>9.2} {:>8.2} {:>12.2} {:>13.1} {:>13} {:>13.1}",
                run.backend,
                p + 1,
                phase.cpu.wall,
                phase.cpu.server,
                phase.cpu.clients,
                phase.cpu.postgres,
                phase.cpu.machine,
                phase.cpu.server * 1e3 / phase.spec.mutations.max(1) as f64,
                phase.cpu.server * 1e6 / delivered,
                fan_out,
                phase.cpu.clients * 1e6 / delivered
            );
        }
    }
    println!(
        "\nmemory, VmRSS MB (server = this process: the server and the bench's driver; \
         clients = the client process)"
    );
    for run in runs {
        println!("  {}", run.backend);
        for mark in &run.memory {
            let mb = |kb: Option<u64>| {
                kb.map_or("-".to_string(), |k| format!("{:.1}", k as f64 / 1024.0))
            };
            println!(
                "    {:<58} server {:>8}  clients {:>8}",
                mark.when,
                mb(mark.server),
                mb(mark.clients)
            );
        }
    }
    println!(
        "\nserver side, per phase (from /metrics): commands (calls, mean ms incl. the \
         read-your-writes wait) and each projection's lag (events, mean ms from occurred_at)"
    );
    for run in runs {
        for (p, phase) in run.phases.iter().enumerate() {
            println!("  {} phase {}:", run.backend, p + 1);
            for (label, calls, mean) in &phase.steps {
                println!("    {label:<40} {calls:>7} {mean:>8.2}");
            }
        }
    }
}
