//! `--scenario inbound`: inbound WhatsApp webhook messages per second, end to end — signed
//! HTTP request → events → projections — on loopback (issue 4).
//!
//! # Set-up (per backend, on a fresh database)
//!
//! The real HTTP server, [`api::server::serve`], runs in this process on a free port of
//! 127.0.0.1 (chosen by binding port 0 and releasing it; `serve` prints its
//! `helpdesk listening on http://ADDR` line on stdout, as it always does), with the
//! helpdesk's defaults except `HELPDESK_JWT_SECRET` (the bench mints an admin token with it)
//! and `HELPDESK_OUTBOX_DELIVERY=off`: there is no provider to deliver to, so nothing is
//! sent out (the outbox jobs are still queued by the outbox projection). An admin
//! configures the organization's WhatsApp channel through GraphQL (`configureChannel`);
//! no agent is registered, so every ticket stays queued.
//!
//! # Flows (each one measured on its own, in this order)
//!
//! - **(a) new customers, queue mode off**: `--inbound-messages` (2,000) messages, each
//!   from a new `wa_id`: the conversation is started, the message recorded (sealed with a
//!   new customer key), a ticket created (without division) and linked — the heavy path.
//! - **(b) follow-ups**: as many messages again to the first `--inbound-conversations`
//!   (20) conversations of (a), round robin; each customer already has an open ticket, so
//!   the message is only recorded. A conversation receives ~100 follow-ups, so the latency
//!   is also printed per quarter of the run (by follow-up number) — the Conversation
//!   aggregate has no snapshots and is loaded from all its events, so a growing
//!   conversation would show here.
//! - **(c) new customers, queue mode on**: queue mode enabled and one division created
//!   (through GraphQL, not measured), then as many messages from new `wa_id`s: each
//!   conversation starts, the message is recorded and the division menu is queued for the
//!   outbox (one `OutboundMessageQueued`, one outbox job); no ticket.
//!
//! Every message is one signed `POST /webhooks/whatsapp` (a WhatsApp Cloud API
//! notification with one text message and a unique `wamid`; `X-Hub-Signature-256` computed
//! before the clock starts), sent by `--inbound-clients` (8) concurrent clients — tokio
//! tasks taking the next message from a shared counter — through one reqwest client with
//! keep-alive. The webhook answers 200 only once the message's flow has run and every
//! projection shows the conversation's events, so each request's latency is the end-to-end
//! figure. Anything but 200 fails the run.
//!
//! # What is measured
//!
//! - **messages/s**: messages / wall time of the flow, first request to last answer.
//! - **latency** p50 / p90 / p99 / max per request (µs, HdrHistogram, 3 significant digits).
//! - **where the time goes**: the server's own `helpdesk_command_duration_seconds` (scraped
//!   from `/metrics` before and after each flow): per command, how many ran and their mean;
//!   `receiveMessage`, `linkTicket` and `sendSystemMessage` are written without waiting for
//!   projections, `createTicket` includes its read-your-writes wait. Conflict retries and
//!   consistency timeouts are printed too.
//! - **Conversation aggregate loads** after (b): [`LOADS`] loads, one at a time, of a
//!   conversation of (a) without follow-ups and of the busiest one of (b), through the
//!   helpdesk's event store (what the command side does ~3 times per follow-up).
//! - **checks** after each flow, read from the database at once (the 200s promise the
//!   projections are there): conversations, tickets, conversations linked to a ticket,
//!   `conversation_messages` INBOUND and OUTBOUND rows, `outbox_jobs`, and the
//!   `MessageReceived` / `OutboundMessageQueued` events in the log must all equal what was
//!   sent — anything missing or duplicated fails the run.
//!
//! The load average (`/proc/loadavg`) is printed before and after each backend.

use anyhow::{anyhow, bail, Context};
use hdrhistogram::Histogram;
use hmac::{Hmac, Mac};
use projections::Database;
use serde_json::json;
use sha2::Sha256;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

use api::auth::TokenKeys;
use cqrs_es::EventStore as _;
use domain::conversation::{Channel, Conversation};
use domain::Role;

use super::{
    graphql, latency_histogram, loadavg, micros, on_fresh_databases, progress_bar,
    quantile_columns, quantile_header, scrape_metrics, Args, RunningServer, ORGANIZATION,
};

/// The JWT secret of the bench's server.
const JWT_SECRET: &str = "bench-inbound-jwt-secret";

/// The WhatsApp channel's app secret (signs the webhooks) and business number.
const APP_SECRET: &str = "bench-wa-app-secret";
const NUMBER_ID: &str = "BENCH-PN-1";

/// The parts flow (b)'s latency is split into, by follow-up number.
const DEPTH_SEGMENTS: u64 = 4;

/// How many times each timed Conversation aggregate is loaded.
const LOADS: u64 = 200;

/// One flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// New customer, queue mode off: conversation + ticket.
    NewCustomer,
    /// A message to an existing conversation with an open ticket.
    FollowUp,
    /// New customer, queue mode on with one division: the menu is queued.
    Menu,
}

impl Flow {
    fn label(self) -> &'static str {
        match self {
            Flow::NewCustomer => "(a) new customer -> conversation + ticket",
            Flow::FollowUp => "(b) follow-up -> message recorded",
            Flow::Menu => "(c) queue mode, new customer -> menu",
        }
    }

    /// The `wa_id` of message `i`'s customer.
    fn customer(self, i: u64, conversations: u64) -> String {
        match self {
            Flow::NewCustomer => format!("6281{i:08}"),
            Flow::FollowUp => format!("6281{:08}", i % conversations),
            Flow::Menu => format!("6282{i:08}"),
        }
    }

    /// The text of message `i`.
    fn text(self, i: u64) -> String {
        match self {
            Flow::NewCustomer => format!("Halo, pesanan saya #{i} belum sampai"),
            Flow::FollowUp => format!("Ada kabar? ({i})"),
            Flow::Menu => "halo".to_string(),
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Flow::NewCustomer => "a",
            Flow::FollowUp => "b",
            Flow::Menu => "c",
        }
    }
}

/// The figures of one flow on one backend.
pub struct FlowRun {
    flow: Flow,
    messages: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
    /// (b): the latency by segment of the run, with the follow-up numbers it covers.
    by_depth: Vec<(u64, u64, Histogram<u64>)>,
    /// Per command label: calls and mean ms, from the server's metrics.
    steps: Vec<(String, u64, f64)>,
    /// Conflict retries and consistency timeouts during the flow.
    retries: u64,
    timeouts: u64,
    /// What was checked in the database afterwards.
    checked: String,
    /// (b): loading a short and the longest Conversation aggregate, timed afterwards.
    loads: Vec<AggregateLoads>,
}

/// Repeated loads of one Conversation aggregate from the event store.
struct AggregateLoads {
    /// Its events.
    events: i64,
    /// One sample per `load_aggregate`, µs.
    latency: Histogram<u64>,
}

/// The figures of one backend.
pub struct InboundRun {
    backend: &'static str,
    load_before: String,
    load_after: String,
    flows: Vec<FlowRun>,
}

/// Runs the scenario on the backends `--backend` selects.
pub async fn run(args: &Args) -> anyhow::Result<Vec<InboundRun>> {
    on_fresh_databases(args, "bench_inbound", |backend, url| async move {
        measure(backend, url, args).await
    })
    .await
}

async fn measure(backend: &'static str, url: String, args: &Args) -> anyhow::Result<InboundRun> {
    let load_before = loadavg();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.inbound_clients as usize * 2)
        .timeout(Duration::from_secs(60))
        .build()
        .context("building the HTTP client")?;
    let server = RunningServer::start(&url, &http, JWT_SECRET).await?;
    let measured = async {
        let db = Database::connect(Some(&url))
            .await
            .context("connecting to the database for the checks")?;
        let measured = measure_flows(backend, &server.base, &http, &db, args).await;
        db.close().await;
        measured
    }
    .await;
    drop(http);
    let stopped = server.stop().await;
    let flows = measured?;
    stopped.context("stopping the server")?;
    Ok(InboundRun {
        backend,
        load_before,
        load_after: loadavg(),
        flows,
    })
}

async fn measure_flows(
    backend: &'static str,
    base: &str,
    http: &reqwest::Client,
    db: &Database,
    args: &Args,
) -> anyhow::Result<Vec<FlowRun>> {
    let token = TokenKeys::new(JWT_SECRET.as_bytes()).issue(
        "bench-admin",
        ORGANIZATION,
        Role::Admin,
        Duration::from_secs(24 * 3600),
    );
    graphql(
        http,
        base,
        &token,
        "mutation($input: ConfigureChannelInput!) { configureChannel(input: $input) { id } }",
        json!({ "input": { "channel": "WHATSAPP", "apiBaseUrl": "http://127.0.0.1:9",
            "settings": { "phoneNumberId": NUMBER_ID, "accessToken": "bench-token",
                "appSecret": APP_SECRET, "verifyToken": "bench-verify" } } }),
    )
    .await?;
    let n = args.inbound_messages;
    let conversations = args.inbound_conversations.min(n);
    let mut flows = Vec::new();

    let mut run = drive(backend, Flow::NewCustomer, base, http, args, conversations).await?;
    run.checked = check(
        db,
        &Expected {
            conversations: n,
            tickets: n,
            linked: n,
            inbound: n,
            outbound: 0,
            outbox: 0,
            busy_conversations: 0,
        },
    )
    .await
    .with_context(|| format!("{backend}: after flow (a)"))?;
    flows.push(run);

    let mut run = drive(backend, Flow::FollowUp, base, http, args, conversations).await?;
    run.checked = check(
        db,
        &Expected {
            conversations: n,
            tickets: n,
            linked: n,
            inbound: 2 * n,
            outbound: 0,
            outbox: 0,
            busy_conversations: conversations,
        },
    )
    .await
    .with_context(|| format!("{backend}: after flow (b)"))?;
    // A conversation of (a) without follow-ups (when there is one), and the busiest of (b).
    let mut customers = vec![Flow::FollowUp.customer(0, conversations)];
    if n > conversations {
        customers.insert(0, Flow::NewCustomer.customer(n - 1, conversations));
    }
    for customer in customers {
        run.loads.push(time_loads(db, &customer).await?);
    }
    flows.push(run);

    graphql(
        http,
        base,
        &token,
        "mutation { updateQueueSettings(input: { enabled: true }) { enabled } }",
        json!({}),
    )
    .await?;
    graphql(
        http,
        base,
        &token,
        "mutation { createDivision(input: { name: \"Billing\" }) { id } }",
        json!({}),
    )
    .await?;
    let mut run = drive(backend, Flow::Menu, base, http, args, conversations).await?;
    run.checked = check(
        db,
        &Expected {
            conversations: 2 * n,
            tickets: n,
            linked: n,
            inbound: 3 * n,
            outbound: n,
            outbox: n,
            busy_conversations: conversations,
        },
    )
    .await
    .with_context(|| format!("{backend}: after flow (c)"))?;
    flows.push(run);
    Ok(flows)
}

/// A WhatsApp Cloud API notification with one text message, and its signature header.
fn signed_webhook(customer: &str, name: &str, wamid: &str, text: &str) -> (String, String) {
    let body = json!({ "object": "whatsapp_business_account", "entry": [{ "id": "BENCH-WABA",
        "changes": [{ "field": "messages", "value": { "messaging_product": "whatsapp",
            "metadata": { "display_phone_number": "15550000000", "phone_number_id": NUMBER_ID },
            "contacts": [{ "profile": { "name": name }, "wa_id": customer }],
            "messages": [{ "from": customer, "id": wamid, "timestamp": "1700000000",
                "type": "text", "text": { "body": text } }] } }] }] })
    .to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(APP_SECRET.as_bytes())
        .expect("HMAC-SHA256 takes keys of any length");
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    (body, signature)
}

/// Sends the messages of `flow` with `--inbound-clients` concurrent clients.
async fn drive(
    backend: &'static str,
    flow: Flow,
    base: &str,
    http: &reqwest::Client,
    args: &Args,
    conversations: u64,
) -> anyhow::Result<FlowRun> {
    let n = args.inbound_messages;
    let clients = args.inbound_clients;
    let segments = if flow == Flow::FollowUp {
        DEPTH_SEGMENTS.min(n)
    } else {
        1
    };
    // Message i belongs to segment i * segments / n; segment s holds bounds[s]..bounds[s+1].
    let bounds: Vec<u64> = (0..=segments).map(|s| (s * n).div_ceil(segments)).collect();
    eprintln!(
        "inbound / {backend}: {} — {n} messages, {clients} clients",
        flow.label()
    );
    let before = scrape_metrics(http, base).await?;
    let progress = progress_bar(n, "webhooks")?;
    let next = Arc::new(AtomicU64::new(0));
    let url = format!("{base}/webhooks/whatsapp");
    let started = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..clients {
        let (http, url, next, progress) =
            (http.clone(), url.clone(), next.clone(), progress.clone());
        set.spawn(async move {
            let mut latency = (0..segments)
                .map(|_| latency_histogram())
                .collect::<anyhow::Result<Vec<_>>>()?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(latency);
                }
                let customer = flow.customer(i, conversations);
                let (body, signature) = signed_webhook(
                    &customer,
                    &format!("Bench customer {customer}"),
                    &format!("wamid.bench.{}.{i}", flow.tag()),
                    &flow.text(i),
                );
                let t = Instant::now();
                let response = http
                    .post(&url)
                    .header("X-Hub-Signature-256", signature)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .with_context(|| format!("message {i}: POST /webhooks/whatsapp"))?;
                let status = response.status();
                let answer = response.text().await.unwrap_or_default();
                let elapsed = micros(t.elapsed());
                if status != reqwest::StatusCode::OK {
                    bail!("message {i}: the webhook answered {status}: {answer}");
                }
                latency[(i * segments / n) as usize].saturating_record(elapsed);
                progress.inc(1);
            }
        });
    }
    let mut by_segment = (0..segments)
        .map(|_| latency_histogram())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut first_error = None;
    while let Some(joined) = set.join_next().await {
        match joined.context("a client panicked").and_then(|r| r) {
            Ok(worker) => {
                for (total, part) in by_segment.iter_mut().zip(&worker) {
                    total
                        .add(part)
                        .map_err(|e| anyhow!("merging latency histograms: {e:?}"))?;
                }
            }
            Err(error) => {
                if first_error.is_none() {
                    next.store(u64::MAX / 2, Ordering::Relaxed);
                    first_error = Some(error);
                }
            }
        }
    }
    let elapsed = started.elapsed();
    progress.finish_and_clear();
    if let Some(error) = first_error {
        return Err(error.context(format!("inbound / {backend}: {}", flow.label())));
    }
    let mut latency = latency_histogram()?;
    for part in &by_segment {
        latency
            .add(part)
            .map_err(|e| anyhow!("merging latency histograms: {e:?}"))?;
    }
    if latency.len() != n {
        bail!("{} answers recorded, expected {n}", latency.len());
    }
    let after = scrape_metrics(http, base).await?;
    let (steps, retries, timeouts) = metric_steps(&before, &after);
    eprintln!(
        "inbound / {backend}: {} done in {:.1} s",
        flow.tag(),
        elapsed.as_secs_f64()
    );
    let by_depth = if segments > 1 {
        by_segment
            .into_iter()
            .enumerate()
            .map(|(s, h)| {
                // Message i is follow-up number i / conversations + 1 of its conversation.
                let first = bounds[s] / conversations + 1;
                let last = (bounds[s + 1] - 1) / conversations + 1;
                (first, last, h)
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(FlowRun {
        flow,
        messages: n,
        elapsed,
        latency,
        by_depth,
        steps,
        retries,
        timeouts,
        checked: String::new(),
        loads: Vec::new(),
    })
}

/// Per command (`command="x",outcome="y"`) and per projection's lag (`projection="x"`):
/// samples and mean ms between two scrapes; and the conflict retries and consistency
/// timeouts in between.
fn metric_steps(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> (Vec<(String, u64, f64)>, u64, u64) {
    let delta = |series: &str| {
        after.get(series).copied().unwrap_or(0.0) - before.get(series).copied().unwrap_or(0.0)
    };
    let mut steps = Vec::new();
    let mut retries = 0.0;
    let mut timeouts = 0.0;
    let families = [
        ("helpdesk_command_duration_seconds", ""),
        ("helpdesk_projection_lag_seconds", "lag "),
    ];
    for series in after.keys() {
        let histogram = families.iter().find_map(|(family, prefix)| {
            let labels = series
                .strip_prefix(*family)?
                .strip_prefix("_count{")?
                .strip_suffix('}')?;
            Some((*family, *prefix, labels))
        });
        if let Some((family, prefix, labels)) = histogram {
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
        } else if series.starts_with("helpdesk_command_conflict_retries_total{") {
            retries += delta(series);
        } else if series.starts_with("helpdesk_consistency_timeouts_total{") {
            timeouts += delta(series);
        }
    }
    (steps, retries as u64, timeouts as u64)
}

/// Times [`LOADS`] loads of the Conversation aggregate of WhatsApp customer `customer`, as
/// the command side loads it (the whole event stream, no snapshot).
async fn time_loads(db: &Database, customer: &str) -> anyhow::Result<AggregateLoads> {
    let channel = api::conversations::channel_id(ORGANIZATION, Channel::Whatsapp);
    let id = api::conversations::derived_id(&["conversation", &channel, customer]);
    let sql = "SELECT COUNT(*) FROM events WHERE aggregate_type = 'Conversation'
                 AND aggregate_id = $1";
    let events: i64 = projections::on_backend!(db, |pool| sqlx::query_scalar(sql)
        .bind(&id)
        .fetch_one(pool)
        .await
        .context("counting a conversation's events")?);
    let store = projections::event_store::event_store::<Conversation>(db);
    let mut latency = latency_histogram()?;
    for _ in 0..LOADS {
        let started = Instant::now();
        let loaded = store
            .load_aggregate(&id)
            .await
            .map_err(|e| anyhow!("loading conversation {id}: {e}"))?;
        latency.saturating_record(micros(started.elapsed()));
        if !loaded.aggregate.started() {
            bail!("conversation {id} of customer {customer} has no events");
        }
    }
    Ok(AggregateLoads { events, latency })
}

/// What the database must hold after a flow.
struct Expected {
    conversations: u64,
    tickets: u64,
    /// Conversations linked to a ticket.
    linked: u64,
    /// `conversation_messages` rows INBOUND, and `MessageReceived` events.
    inbound: u64,
    /// `conversation_messages` rows OUTBOUND, and `OutboundMessageQueued` events.
    outbound: u64,
    /// `outbox_jobs` rows.
    outbox: u64,
    /// Conversations with more than one inbound message.
    busy_conversations: u64,
}

/// Counts the rows the flows must have left; fails on any difference.
async fn check(db: &Database, expected: &Expected) -> anyhow::Result<String> {
    let checks: [(&str, &str, u64); 9] = [
        (
            "conversations",
            "SELECT COUNT(*) FROM conversations",
            expected.conversations,
        ),
        ("tickets", "SELECT COUNT(*) FROM tickets", expected.tickets),
        (
            "linked",
            "SELECT COUNT(*) FROM conversations WHERE ticket_id IS NOT NULL",
            expected.linked,
        ),
        (
            "inbound rows",
            "SELECT COUNT(*) FROM conversation_messages WHERE direction = 'INBOUND'",
            expected.inbound,
        ),
        (
            "MessageReceived",
            "SELECT COUNT(*) FROM events WHERE aggregate_type = 'Conversation'
               AND event_type = 'MessageReceived'",
            expected.inbound,
        ),
        (
            "outbound rows",
            "SELECT COUNT(*) FROM conversation_messages WHERE direction = 'OUTBOUND'",
            expected.outbound,
        ),
        (
            "OutboundMessageQueued",
            "SELECT COUNT(*) FROM events WHERE aggregate_type = 'Conversation'
               AND event_type = 'OutboundMessageQueued'",
            expected.outbound,
        ),
        (
            "outbox jobs",
            "SELECT COUNT(*) FROM outbox_jobs",
            expected.outbox,
        ),
        (
            "conversations with follow-ups",
            "SELECT COUNT(*) FROM (SELECT conversation_id FROM conversation_messages
               WHERE direction = 'INBOUND' GROUP BY conversation_id HAVING COUNT(*) > 1) busy",
            expected.busy_conversations,
        ),
    ];
    let mut report = Vec::new();
    let mut wrong = Vec::new();
    for (what, sql, want) in checks {
        let got: i64 = projections::on_backend!(db, |pool| sqlx::query_scalar(sql)
            .fetch_one(pool)
            .await
            .with_context(|| format!("counting {what}"))?);
        report.push(format!("{what} {got}"));
        if got != want as i64 {
            wrong.push(format!("{what}: {got}, expected {want}"));
        }
    }
    if !wrong.is_empty() {
        bail!(
            "the database disagrees with what was sent: {}",
            wrong.join("; ")
        );
    }
    Ok(report.join(", "))
}

/// Prints the tables on stdout.
pub fn print_report(args: &Args, runs: &[InboundRun]) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "\ninbound: signed POST /webhooks/whatsapp, one message each, {} clients, {} messages \
         per flow, (b) over {} conversations; server in process on loopback, outbox delivery \
         off; {cores} cores",
        args.inbound_clients,
        args.inbound_messages,
        args.inbound_conversations.min(args.inbound_messages)
    );
    for run in runs {
        println!(
            "{}: load average {} before, {} after",
            run.backend, run.load_before, run.load_after
        );
    }
    println!(
        "\n{:<9} {:<42} {:>7} {:>8} {}",
        "backend",
        "flow",
        "wall s",
        "msgs/s",
        quantile_header()
    );
    for run in runs {
        for flow in &run.flows {
            println!(
                "{:<9} {:<42} {:>7.1} {:>8.0} {}",
                run.backend,
                flow.flow.label(),
                flow.elapsed.as_secs_f64(),
                flow.messages as f64 / flow.elapsed.as_secs_f64().max(f64::EPSILON),
                quantile_columns(&flow.latency)
            );
        }
    }
    println!("\n(b) by follow-up number (message k of each conversation is follow-up k)");
    println!(
        "{:<9} {:<42} {:>7} {:>8} {}",
        "backend",
        "follow-ups",
        "",
        "",
        quantile_header()
    );
    for run in runs {
        for flow in &run.flows {
            for (first, last, histogram) in &flow.by_depth {
                println!(
                    "{:<9} {:<42} {:>7} {:>8} {}",
                    run.backend,
                    format!("#{first}-#{last}"),
                    "",
                    "",
                    quantile_columns(histogram)
                );
            }
        }
    }
    println!(
        "\nConversation aggregate loads after (b), {LOADS} each, one at a time \
         (the command side loads it ~3 times per follow-up, ~5 times per new customer)"
    );
    println!("{:<9} {:<42} {}", "backend", "aggregate", quantile_header());
    for run in runs {
        for flow in &run.flows {
            for load in &flow.loads {
                println!(
                    "{:<9} {:<42} {}",
                    run.backend,
                    format!("conversation with {} events", load.events),
                    quantile_columns(&load.latency)
                );
            }
        }
    }
    println!(
        "\nserver side, per flow (from /metrics): commands (calls, mean ms incl. any \
         read-your-writes wait) and each projection's lag (events, mean ms from occurred_at)"
    );
    for run in runs {
        for flow in &run.flows {
            println!(
                "{} {}: {} conflict retries, {} consistency timeouts",
                run.backend,
                flow.flow.label(),
                flow.retries,
                flow.timeouts
            );
            for (label, calls, mean) in &flow.steps {
                println!("    {label:<32} {calls:>7} {mean:>8.2}");
            }
        }
    }
    println!("\nchecked in the database after each flow:");
    for run in runs {
        for flow in &run.flows {
            println!("  {} {}: {}", run.backend, flow.flow.tag(), flow.checked);
        }
    }
}
