//! Queue places stay exact with the bucketed queues of the "tickets" projection, on every
//! backend.
//!
//! - `places_stay_exact_across_buckets`: thousands of synthetic Ticket events (creations,
//!   assignments, requeues, reopens, priority changes, closings in a seeded random
//!   interleaving, over two organizations and three queues each) go straight through
//!   `TicketsProjection::apply`, next to a plain in-memory model of every queue. Agents
//!   taking queue heads empty the oldest buckets, and a drain empties whole queues and one
//!   organization, so bucket rows must disappear as well as appear. At checkpoints, paging,
//!   places, heads, the waiting divisions and organizations and the `queue_buckets` counts
//!   must equal the model exactly — in a queue whose join sequence numbers span several
//!   buckets, so that places mix bucket sums with a count inside a bucket.
//! - `migration_numbers_existing_queues_in_their_old_order`: a database filled in the
//!   pre-0005 shape (places ordered by waiting time, then number) keeps every queue's order
//!   and every place through migration 0005; afterwards a requeued ticket returns to the
//!   place the old rules gave it and a new ticket joins at the back.
//!
//! Set `QUEUE_PLACES_SEED` to replay another interleaving.

mod common;

use chrono::{DateTime, Duration as TimeDelta, TimeZone, Utc};
use common::TestDb;
use cqrs_es::DomainEvent;
use domain::metadata::EventMetadata;
use domain::priority::{Priority, PrioritySource};
use domain::ticket::{AssignmentVia, TicketEvent};
use domain::{Actor, Role};
use projections::db::{timestamp, Backend, Tx};
use projections::event_log::{Checkpoint, StoredEvent};
use projections::queue::{self, QueueKey, QueueRecord, BUCKET_WIDTH};
use projections::runner::Projection;
use projections::tickets::TicketsProjection;
use projections::{on_backend, Database};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

const ORGS: [&str; 2] = ["acme", "globex"];
/// The divisions of each organization (index as in [`ORGS`]); `""` is the queue of tickets
/// without a division, the one queue key both organizations share.
const DIVISIONS: [[&str; 2]; 2] = [
    ["acme-billing", "acme-hardware"],
    ["globex-billing", "globex-hardware"],
];
const PRIORITIES: [Priority; 4] = [
    Priority::Urgent,
    Priority::High,
    Priority::Medium,
    Priority::Low,
];

/// How many tickets the random history creates at most, and how many steps it takes.
const TICKETS: usize = 3_500;
const STEPS: usize = 12_000;
/// The share of steps that create a ticket while fewer than [`TICKETS`] exist.
const CREATE_SHARE: f64 = 0.3;
/// The share of the other steps that serve the head of a queue.
const SERVE_HEAD_SHARE: f64 = 0.12;
/// The step after which every globex queue and acme's hardware queue are emptied.
const DRAIN_AT: usize = 9_000;
/// Steps between two full comparisons with the model.
const CHECK_EVERY: usize = 3_000;
/// Events applied per transaction: one per event would make PostgreSQL the bottleneck.
const EVENTS_PER_TX: usize = 200;

/// `(organization, division key, priority rank, bucket, entries)`, as `queue_buckets` holds.
type BucketRow = (String, String, i64, i64, i64);

fn seed(default: u64) -> u64 {
    std::env::var("QUEUE_PLACES_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn org_index(org: &str) -> usize {
    ORGS.iter()
        .position(|o| *o == org)
        .expect("known organization")
}

fn other_org(org: &str) -> &'static str {
    ORGS[1 - org_index(org)]
}

/// Every queue key of both organizations, so that each organization is also asked about the
/// other's divisions (which must look empty to it).
fn all_division_keys() -> Vec<&'static str> {
    let mut keys = vec![""];
    keys.extend(DIVISIONS.iter().flatten());
    keys
}

fn time(base: DateTime<Utc>, seconds: i64) -> DateTime<Utc> {
    base + TimeDelta::seconds(seconds)
}

fn base_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 8, 0, 0).unwrap()
}

/// Applies events through the projection the way the runner does: in order, many per
/// transaction, each as the log would hand it over.
struct Writer {
    db: Database,
    tx: Option<Tx>,
    in_tx: usize,
    transactions: i64,
    position: i64,
    clock: DateTime<Utc>,
}

impl Writer {
    fn new(db: &Database, clock: DateTime<Utc>) -> Self {
        Self {
            db: db.clone(),
            tx: None,
            in_tx: 0,
            transactions: 0,
            position: 0,
            clock,
        }
    }

    /// Applies `event` as the `sequence`-th event of ticket `id` one second after the previous
    /// event (or at `at`); returns its stored timestamp.
    async fn apply_at(
        &mut self,
        organization: &str,
        id: &str,
        sequence: i64,
        event: TicketEvent,
        at: Option<DateTime<Utc>>,
    ) -> String {
        self.position += 1;
        self.clock += TimeDelta::seconds(1);
        let occurred_at = at.unwrap_or(self.clock);
        if self.tx.is_none() {
            self.tx = Some(self.db.begin().await.expect("begin"));
            self.transactions += 1;
        }
        let request = format!("req-{}", self.position);
        let stored = StoredEvent {
            checkpoint: Checkpoint {
                tx_id: self.transactions,
                position: self.position,
            },
            aggregate_type: "Ticket".into(),
            aggregate_id: id.into(),
            sequence,
            event_type: event.event_type(),
            event_version: event.event_version(),
            payload: serde_json::value::to_raw_value(&event).expect("serialize event"),
            metadata: EventMetadata {
                organization: organization.into(),
                actor: Actor::new("boss", Role::Admin),
                occurred_at,
                request_id: request.clone(),
                correlation_id: request,
                causation_id: None,
            },
        };
        let tx = self.tx.as_mut().expect("open transaction");
        if let Err(e) = TicketsProjection.apply(tx, &stored).await {
            panic!("applying {stored:?}: {e}");
        }
        self.in_tx += 1;
        if self.in_tx >= EVENTS_PER_TX {
            self.commit().await;
        }
        timestamp(occurred_at)
    }

    async fn apply(
        &mut self,
        organization: &str,
        id: &str,
        sequence: i64,
        event: TicketEvent,
    ) -> String {
        self.apply_at(organization, id, sequence, event, None).await
    }

    async fn commit(&mut self) {
        if let Some(tx) = self.tx.take() {
            tx.commit().await.expect("commit");
        }
        self.in_tx = 0;
    }
}

fn created_event(
    organization: &str,
    number: i64,
    priority: Priority,
    division: Option<&str>,
) -> TicketEvent {
    TicketEvent::TicketCreated {
        organization: organization.into(),
        number,
        subject: format!("Ticket {number}"),
        description: None,
        priority,
        priority_source: PrioritySource::Explicit,
        division_id: division.map(str::to_string),
    }
}

// ---------------------------------------------------------------------------------------
// Checks shared by both tests.
// ---------------------------------------------------------------------------------------

/// Panics at the first entry where `got` and `want` differ, naming both.
fn assert_same_entries(got: &[QueueRecord], want: &[QueueRecord], context: &str) {
    if let Some(i) = (0..got.len().max(want.len())).find(|&i| got.get(i) != want.get(i)) {
        panic!(
            "{context}: entry {i} differs (got {} entries, expected {}):\n  got      {:?}\n  expected {:?}",
            got.len(),
            want.len(),
            got.get(i),
            want.get(i)
        );
    }
}

/// Walks the whole queue with cursors, `size` entries a page, and compares every page with
/// the expected order (`compare` maps an entry to what is compared: the migration test
/// cannot know the sequence numbers in advance).
async fn walk_pages(
    db: &Database,
    org: &str,
    key: &str,
    expected: &[QueueRecord],
    size: i64,
    compare: fn(&QueueRecord) -> QueueRecord,
    label: &str,
) {
    let total = expected.len() as i64;
    let mut after: Option<QueueKey> = None;
    let mut offset = 0usize;
    let mut last: Option<QueueKey> = None;
    loop {
        let context = format!("{label}: queue {org}/{key:?}, page of {size} after {after:?}");
        let page = queue::page(db, org, key, size, after.as_ref())
            .await
            .expect("page");
        let end = (offset + size as usize).min(expected.len());
        let got: Vec<QueueRecord> = page.entries.iter().map(compare).collect();
        let want: Vec<QueueRecord> = expected[offset..end].iter().map(compare).collect();
        assert_same_entries(&got, &want, &context);
        assert_eq!(page.total_count, total, "{context}: total_count");
        assert_eq!(
            page.first_position,
            offset as i64 + 1,
            "{context}: first_position"
        );
        assert_eq!(
            page.has_next_page,
            end < expected.len(),
            "{context}: has_next_page"
        );
        last = page.entries.last().map(QueueKey::from).or(last);
        if !page.has_next_page {
            break;
        }
        offset = end;
        after = last;
    }
    // The key of the real last entry: `expected` may not know the sequence numbers.
    if let Some(last) = last {
        let context = format!("{label}: queue {org}/{key:?}, page after its last entry");
        let page = queue::page(db, org, key, size, Some(&last))
            .await
            .expect("page");
        assert!(page.entries.is_empty(), "{context}: {:?}", page.entries);
        assert_eq!(page.first_position, total + 1, "{context}: first_position");
        assert!(!page.has_next_page, "{context}: has_next_page");
        assert_eq!(page.total_count, total, "{context}: total_count");
    }
}

async fn bucket_rows(db: &Database, sql: &str) -> Vec<BucketRow> {
    on_backend!(db, |pool| sqlx::query_as::<_, BucketRow>(sql)
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}")))
}

/// `queue_buckets` must equal a count of the entries themselves (and `expected`, when the
/// test knows it), with no empty or negative rows left behind.
async fn check_buckets(db: &Database, expected: Option<&[BucketRow]>, label: &str) {
    let stored = bucket_rows(
        db,
        "SELECT organization_id, division_key, priority_rank, bucket, entries FROM queue_buckets
          ORDER BY organization_id, division_key, priority_rank, bucket",
    )
    .await;
    let counted = bucket_rows(
        db,
        &format!(
            "SELECT organization_id, division_key, priority_rank, seq / {BUCKET_WIDTH}, COUNT(*)
               FROM queue_entries
              GROUP BY organization_id, division_key, priority_rank, seq / {BUCKET_WIDTH}
              ORDER BY organization_id, division_key, priority_rank, seq / {BUCKET_WIDTH}"
        ),
    )
    .await;
    let not_positive: Vec<&BucketRow> = stored.iter().filter(|row| row.4 <= 0).collect();
    assert!(
        not_positive.is_empty(),
        "{label}: queue_buckets rows with entries <= 0: {not_positive:?}"
    );
    assert_eq!(
        stored, counted,
        "{label}: queue_buckets differs from the entries it counts"
    );
    if let Some(expected) = expected {
        assert_eq!(
            stored, expected,
            "{label}: queue_buckets differs from the model"
        );
    }
}

fn model_buckets(queues: &BTreeMap<(String, String), Vec<QueueRecord>>) -> Vec<BucketRow> {
    let mut counts = BTreeMap::<(String, String, i64, i64), i64>::new();
    for ((org, key), entries) in queues {
        for entry in entries {
            let bucket = (
                org.clone(),
                key.clone(),
                entry.priority_rank,
                entry.seq / BUCKET_WIDTH,
            );
            *counts.entry(bucket).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .map(|((org, key, rank, bucket), n)| (org, key, rank, bucket, n))
        .collect()
}

// ---------------------------------------------------------------------------------------
// 1. A random history against an in-memory model.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Queued,
    Assigned,
    InProgress,
    Resolved,
    Closed,
}

/// What the model knows of a ticket.
#[derive(Debug, Clone)]
struct ModelTicket {
    id: String,
    org: &'static str,
    division_key: &'static str,
    number: i64,
    status: Status,
    priority: Priority,
    /// Join sequence number of its last creation or reopen.
    seq: i64,
    /// Stored timestamp of that join.
    waiting_since: String,
    /// Events applied so far (the next event's sequence is one more).
    version: i64,
    assignee: Option<String>,
    last_assignee: Option<String>,
}

#[derive(Debug, Default)]
struct Model {
    tickets: Vec<ModelTicket>,
    /// Last join sequence number handed out per queue.
    counters: HashMap<(&'static str, &'static str), i64>,
    /// Last ticket number per organization.
    numbers: HashMap<&'static str, i64>,
}

impl Model {
    fn next_seq(&mut self, org: &'static str, key: &'static str) -> i64 {
        let counter = self.counters.entry((org, key)).or_default();
        *counter += 1;
        *counter
    }

    /// Every queue of the model in queue order: priority, then join order.
    fn queues(&self) -> BTreeMap<(String, String), Vec<QueueRecord>> {
        let mut queues = BTreeMap::<(String, String), Vec<QueueRecord>>::new();
        for t in self.tickets.iter().filter(|t| t.status == Status::Queued) {
            queues
                .entry((t.org.to_string(), t.division_key.to_string()))
                .or_default()
                .push(QueueRecord {
                    ticket_id: t.id.clone(),
                    priority_rank: t.priority.queue_rank(),
                    seq: t.seq,
                    waiting_since: t.waiting_since.clone(),
                    number: t.number,
                });
        }
        for entries in queues.values_mut() {
            entries.sort_by_key(|e| (e.priority_rank, e.seq));
        }
        queues
    }
}

fn random_agent(rng: &mut StdRng, not: Option<&str>) -> String {
    loop {
        let agent = format!("agent-{}", rng.gen_range(1..=12));
        if Some(agent.as_str()) != not {
            return agent;
        }
    }
}

fn other_priority(rng: &mut StdRng, from: Priority) -> Priority {
    loop {
        let to = *PRIORITIES.choose(rng).expect("priorities");
        if to != from {
            return to;
        }
    }
}

/// Creates one ticket: most in acme's billing division, so that its queue numbers run
/// through several buckets.
async fn create_ticket(rng: &mut StdRng, model: &mut Model, writer: &mut Writer) {
    let org_i = usize::from(!rng.gen_bool(0.88));
    let org = ORGS[org_i];
    let roll = rng.gen_range(0..100);
    let division = match (org_i, roll) {
        (0, 0..=69) | (1, 0..=29) => Some(DIVISIONS[org_i][0]),
        (0, 70..=84) | (1, 30..=49) => Some(DIVISIONS[org_i][1]),
        _ => None,
    };
    let key = division.unwrap_or("");
    let priority = match rng.gen_range(0..100) {
        0..=9 => Priority::Urgent,
        10..=29 => Priority::High,
        30..=79 => Priority::Medium,
        _ => Priority::Low,
    };
    let number = {
        let n = model.numbers.entry(org).or_default();
        *n += 1;
        *n
    };
    let id = uuid::Uuid::from_u128(rng.gen()).to_string();
    let seq = model.next_seq(org, key);
    let waiting_since = writer
        .apply(org, &id, 1, created_event(org, number, priority, division))
        .await;
    model.tickets.push(ModelTicket {
        id,
        org,
        division_key: key,
        number,
        status: Status::Queued,
        priority,
        seq,
        waiting_since,
        version: 1,
        assignee: None,
        last_assignee: None,
    });
}

/// The ticket goes to an agent (another one, if it has one already).
fn assign(rng: &mut StdRng, t: &mut ModelTicket) -> TicketEvent {
    let agent = random_agent(rng, t.assignee.as_deref());
    let event = TicketEvent::TicketAssigned {
        agent_id: agent.clone(),
        previous_agent_id: t.assignee.clone(),
        via: if t.assignee.is_none() && rng.gen_bool(0.5) {
            AssignmentVia::Claim
        } else {
            AssignmentVia::Admin
        },
        decision: None,
    };
    t.status = Status::Assigned;
    t.assignee = Some(agent.clone());
    t.last_assignee = Some(agent);
    event
}

fn change_priority(rng: &mut StdRng, t: &mut ModelTicket) -> TicketEvent {
    let to = other_priority(rng, t.priority);
    let event = TicketEvent::TicketPriorityChanged {
        from: t.priority,
        to,
    };
    t.priority = to;
    event
}

fn close(t: &mut ModelTicket) -> TicketEvent {
    t.status = Status::Closed;
    TicketEvent::TicketClosed
}

/// Applies the ticket's next event; returns its stored timestamp.
async fn emit(writer: &mut Writer, t: &mut ModelTicket, event: TicketEvent) -> String {
    t.version += 1;
    writer.apply(t.org, &t.id, t.version, event).await
}

/// An agent takes the head of a random non-empty queue (or an admin closes it), as queues
/// are really served: this is what empties the oldest buckets of a band.
async fn serve_head(rng: &mut StdRng, model: &mut Model, writer: &mut Writer) {
    let queues: Vec<(&str, &str)> = model
        .tickets
        .iter()
        .filter(|t| t.status == Status::Queued)
        .map(|t| (t.org, t.division_key))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let Some(&(org, key)) = queues.choose(rng) else {
        return;
    };
    let head = model
        .tickets
        .iter_mut()
        .filter(|t| t.status == Status::Queued && t.org == org && t.division_key == key)
        .min_by_key(|t| (t.priority.queue_rank(), t.seq))
        .expect("a queued ticket");
    let event = if rng.gen_bool(0.9) {
        assign(rng, head)
    } else {
        close(head)
    };
    emit(writer, head, event).await;
}

/// Takes every queued ticket that `drained` selects out of its queue, so that whole queues
/// (and an organization's every queue) empty and their bucket rows must go.
async fn drain(
    rng: &mut StdRng,
    model: &mut Model,
    writer: &mut Writer,
    drained: impl Fn(&ModelTicket) -> bool,
) {
    for t in model
        .tickets
        .iter_mut()
        .filter(|t| t.status == Status::Queued && drained(t))
    {
        let event = if rng.gen_bool(0.7) {
            assign(rng, t)
        } else {
            close(t)
        };
        emit(writer, t, event).await;
    }
}

/// One random step of a random existing ticket, allowed by the ticket's rules.
async fn step_ticket(rng: &mut StdRng, model: &mut Model, writer: &mut Writer) {
    let i = rng.gen_range(0..model.tickets.len());
    let roll = rng.gen_range(0..100);
    let (org, key) = (model.tickets[i].org, model.tickets[i].division_key);
    // Reopening takes a new join sequence number: the back of the queue.
    let reopen_seq = matches!(
        (model.tickets[i].status, roll),
        (Status::Resolved, 0..=64) | (Status::Closed, 0..=59)
    )
    .then(|| model.next_seq(org, key));
    let t = &mut model.tickets[i];
    let event = match (t.status, roll) {
        (Status::Queued, 0..=44) => assign(rng, t),
        (Status::Queued, 45..=84) => change_priority(rng, t),
        (Status::Queued, _) => close(t),
        (Status::Assigned, 0..=34) => {
            t.status = Status::Queued;
            TicketEvent::TicketRequeued {
                agent_id: t.assignee.take().expect("assignee"),
            }
        }
        (Status::Assigned, 35..=49) | (Status::InProgress, 60..=79) => change_priority(rng, t),
        (Status::Assigned, 50..=69) => {
            t.status = Status::InProgress;
            TicketEvent::TicketStarted {
                agent_id: t.assignee.clone().expect("assignee"),
            }
        }
        (Status::Assigned, 70..=89) | (Status::InProgress, 0..=59) => {
            t.status = Status::Resolved;
            TicketEvent::TicketResolved {
                agent_id: t.assignee.clone(),
                resolution: None,
            }
        }
        (Status::Assigned | Status::InProgress, _) => assign(rng, t),
        (Status::Resolved | Status::Closed, _) if reopen_seq.is_some() => {
            t.status = Status::Queued;
            t.assignee = None;
            t.seq = reopen_seq.expect("reopen seq");
            TicketEvent::TicketReopened {
                reason: None,
                previous_agent_id: t.last_assignee.clone(),
            }
        }
        (Status::Resolved, _) => close(t),
        (Status::Closed, _) => return,
    };
    let reopened = matches!(event, TicketEvent::TicketReopened { .. });
    let at = emit(writer, t, event).await;
    if reopened {
        t.waiting_since = at;
    }
}

/// Compares everything the queue module reads with the model. Places are asked for every
/// queued ticket when `every_place`, else for a sample that includes both sides of every
/// bucket and priority boundary.
async fn check_against_model(
    db: &Database,
    model: &Model,
    rng: &mut StdRng,
    every_place: bool,
    label: &str,
) {
    let queues = model.queues();
    let no_entries = Vec::new();
    let mut places: Vec<(&str, &str, i64)> = Vec::new();
    let versions: HashMap<&str, i64> = model
        .tickets
        .iter()
        .map(|t| (t.id.as_str(), t.version))
        .collect();
    for org in ORGS {
        for key in all_division_keys() {
            let expected = queues
                .get(&(org.to_string(), key.to_string()))
                .unwrap_or(&no_entries);
            let size = rng.gen_range(150..=600);
            walk_pages(db, org, key, expected, size, QueueRecord::clone, label).await;
            for (i, entry) in expected.iter().enumerate() {
                let band = |e: &QueueRecord| (e.priority_rank, e.seq / BUCKET_WIDTH);
                let boundary = i == 0
                    || i + 1 == expected.len()
                    || band(&expected[i - 1]) != band(entry)
                    || band(&expected[i + 1]) != band(entry);
                if every_place || boundary || rng.gen_bool(0.1) {
                    places.push((org, entry.ticket_id.as_str(), i as i64 + 1));
                }
            }
            let heads = queue::heads(db, org, key, 30).await.expect("heads");
            let want: Vec<(String, i64)> = expected
                .iter()
                .take(30)
                .map(|e| (e.ticket_id.clone(), versions[e.ticket_id.as_str()]))
                .collect();
            assert_eq!(heads, want, "{label}: heads of {org}/{key:?}");
        }
    }
    for (i, (org, id, place)) in places.iter().enumerate() {
        let got = queue::position(db, org, id).await.expect("position");
        assert_eq!(
            got,
            Some(*place),
            "{label}: position of {id} in {org} (model place {place})"
        );
        if i % 10 == 0 {
            let foreign = queue::position(db, other_org(org), id)
                .await
                .expect("position");
            assert_eq!(
                foreign,
                None,
                "{label}: {id} of {org} has a place in {}",
                other_org(org)
            );
        }
    }
    let not_queued: Vec<&ModelTicket> = model
        .tickets
        .iter()
        .filter(|t| t.status != Status::Queued)
        .collect();
    for t in not_queued.choose_multiple(rng, 150) {
        let got = queue::position(db, t.org, &t.id).await.expect("position");
        assert_eq!(
            got, None,
            "{label}: {:?} ticket {} has a place",
            t.status, t.id
        );
    }
    check_buckets(db, Some(&model_buckets(&queues)), label).await;
    for org in ORGS {
        let mut got = queue::waiting_divisions(db, org)
            .await
            .expect("waiting divisions");
        got.sort();
        let want: Vec<String> = queues
            .keys()
            .filter(|(o, _)| o == org)
            .map(|(_, key)| key.clone())
            .collect();
        assert_eq!(got, want, "{label}: waiting divisions of {org}");
    }
    let mut got = queue::waiting_organizations(db)
        .await
        .expect("waiting organizations");
    got.sort();
    let want: Vec<String> = queues
        .keys()
        .map(|(org, _)| org.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(got, want, "{label}: waiting organizations");
}

#[tokio::test]
async fn places_stay_exact_across_buckets() {
    let seed = seed(0x51ace5);
    for test_db in TestDb::all().await {
        let started = Instant::now();
        let db = test_db.connect().await;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut model = Model::default();
        let mut writer = Writer::new(&db, base_time());
        for step in 1..=STEPS {
            if model.tickets.len() < TICKETS
                && (model.tickets.is_empty() || rng.gen_bool(CREATE_SHARE))
            {
                create_ticket(&mut rng, &mut model, &mut writer).await;
            } else if rng.gen_bool(SERVE_HEAD_SHARE) {
                serve_head(&mut rng, &mut model, &mut writer).await;
            } else {
                step_ticket(&mut rng, &mut model, &mut writer).await;
            }
            if step == DRAIN_AT {
                drain(&mut rng, &mut model, &mut writer, |t| {
                    t.org == "globex" || t.division_key == DIVISIONS[0][1]
                })
                .await;
                let left: Vec<(String, String)> = model.queues().into_keys().collect();
                assert_eq!(
                    left,
                    [("acme", ""), ("acme", DIVISIONS[0][0])].map(|(o, k)| (o.into(), k.into())),
                    "the drain should leave two of acme's queues only"
                );
            }
            if step % CHECK_EVERY == 0 || step == STEPS {
                writer.commit().await;
                let label = format!(
                    "{:?} seed {seed} after step {step} (event {})",
                    test_db.backend, writer.position
                );
                check_against_model(&db, &model, &mut rng, step == STEPS, &label).await;
            }
        }
        let queues = model.queues();
        let spread: Vec<String> = queues
            .iter()
            .map(|((org, key), entries)| {
                let buckets: BTreeSet<i64> = entries.iter().map(|e| e.seq / BUCKET_WIDTH).collect();
                format!(
                    "{org}/{key:?}: {} queued in buckets {buckets:?}",
                    entries.len()
                )
            })
            .collect();
        let busiest = &queues[&("acme".to_string(), DIVISIONS[0][0].to_string())];
        let buckets: BTreeSet<i64> = busiest.iter().map(|e| e.seq / BUCKET_WIDTH).collect();
        assert!(
            buckets.len() >= 3,
            "the busiest queue should span several buckets: {spread:?}"
        );
        eprintln!(
            "{:?}: {} events, {} tickets in {:.1?}; {spread:?}",
            test_db.backend,
            writer.position,
            model.tickets.len(),
            started.elapsed()
        );
        db.close().await;
    }
}

// ---------------------------------------------------------------------------------------
// 2. Migration 0005 over queues kept the old way.
// ---------------------------------------------------------------------------------------

/// A ticket as a pre-0005 helpdesk stored it.
#[derive(Debug, Clone)]
struct OldTicket {
    id: String,
    org: &'static str,
    division: Option<&'static str>,
    number: i64,
    status: &'static str,
    priority: Priority,
    created_at: String,
    queued_since: String,
    assignee: Option<String>,
    version: i64,
}

impl OldTicket {
    fn key(&self) -> &'static str {
        self.division.unwrap_or("")
    }

    /// Its place in the pre-0005 order: priority, then waiting time, then number.
    fn old_order(&self) -> (i64, String, i64) {
        (
            self.priority.queue_rank(),
            self.queued_since.clone(),
            self.number,
        )
    }

    fn record(&self) -> QueueRecord {
        QueueRecord {
            ticket_id: self.id.clone(),
            priority_rank: self.priority.queue_rank(),
            seq: 0,
            waiting_since: self.queued_since.clone(),
            number: self.number,
        }
    }
}

/// Old tickets with many equal waiting times (whole seconds over a quarter of an hour), a
/// share that were reopened (waiting since long after their creation), numbers given in
/// creation order, and every status.
fn old_tickets(rng: &mut StdRng) -> Vec<OldTicket> {
    let base = base_time();
    let mut tickets = Vec::new();
    for (org_i, (org, count)) in [("acme", 2_600), ("globex", 200)].into_iter().enumerate() {
        let mut created: Vec<(i64, u128)> = (0..count)
            .map(|_| (rng.gen_range(0..900), rng.gen()))
            .collect();
        created.sort();
        for (n, (created_s, id)) in created.into_iter().enumerate() {
            let division = match rng.gen_range(0..100) {
                0..=59 => Some(DIVISIONS[org_i][0]),
                60..=84 => Some(DIVISIONS[org_i][1]),
                _ => None,
            };
            let queued_s = if rng.gen_bool(0.15) {
                created_s + rng.gen_range(1..900)
            } else {
                created_s
            };
            let (status, version) = match rng.gen_range(0..100) {
                0..=54 => ("QUEUED", 1),
                55..=74 => ("ASSIGNED", 2),
                75..=79 => ("IN_PROGRESS", 3),
                80..=89 => ("RESOLVED", 4),
                _ => ("CLOSED", 5),
            };
            tickets.push(OldTicket {
                id: uuid::Uuid::from_u128(id).to_string(),
                org,
                division,
                number: n as i64 + 1,
                status,
                priority: *PRIORITIES.choose(rng).expect("priorities"),
                created_at: timestamp(time(base, created_s)),
                queued_since: timestamp(time(base, queued_s)),
                assignee: (status != "QUEUED").then(|| random_agent(rng, None)),
                version,
            });
        }
    }
    // Rows in random order: the migration must not lean on insertion order or ids.
    tickets.shuffle(rng);
    tickets
}

/// Runs only the migrations before 0005, as a helpdesk of that time had.
async fn migrate_before_0005(db: &Database) {
    let folder = match db {
        Backend::Sqlite(_) => "sqlite",
        Backend::Postgres(_) => "postgres",
    };
    let path = format!("{}/../migrations/{folder}", env!("CARGO_MANIFEST_DIR"));
    let mut migrator = sqlx::migrate::Migrator::new(std::path::Path::new(&path))
        .await
        .expect("read migrations");
    let old: Vec<_> = migrator
        .migrations
        .iter()
        .filter(|m| m.version < 5)
        .cloned()
        .collect();
    assert_eq!(old.len(), 4, "migrations 0001..0004");
    migrator.migrations = old.into();
    on_backend!(db, |pool| migrator
        .run(pool)
        .await
        .expect("migrate to 0004"));
}

async fn insert_old(db: &Database, tickets: &[OldTicket]) {
    let mut tx = db.begin().await.expect("begin");
    for t in tickets {
        let assigned_at = t.assignee.as_ref().map(|_| t.queued_since.clone());
        on_backend!(&mut tx, |c| {
            sqlx::query(
                "INSERT INTO tickets (id, organization_id, number, subject, description, status,
                    priority, division_id, assignee_id, created_by, created_at, updated_at,
                    assigned_at, search_text, version, queued_since)
                 VALUES ($1, $2, $3, $4, NULL, $5, $6, $7, $8, 'boss', $9, $10, $11, $12, $13, $10)",
            )
            .bind(&t.id)
            .bind(t.org)
            .bind(t.number)
            .bind(format!("Ticket {}", t.number))
            .bind(t.status)
            .bind(t.priority.as_str())
            .bind(t.division)
            .bind(&t.assignee)
            .bind(&t.created_at)
            .bind(&t.queued_since)
            .bind(&assigned_at)
            .bind(format!("ticket {}\n", t.number))
            .bind(t.version)
            .execute(&mut **c)
            .await
            .expect("insert old ticket");
            if t.status == "QUEUED" {
                sqlx::query(
                    "INSERT INTO queue_entries (ticket_id, organization_id, division_key,
                        priority_rank, waiting_since, number)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&t.id)
                .bind(t.org)
                .bind(t.key())
                .bind(t.priority.queue_rank())
                .bind(&t.queued_since)
                .bind(t.number)
                .execute(&mut **c)
                .await
                .expect("insert old queue entry");
            }
        });
    }
    tx.commit().await.expect("commit");
}

/// The queued tickets of each queue in the pre-0005 order.
fn old_queues(tickets: &[OldTicket]) -> BTreeMap<(String, String), Vec<&OldTicket>> {
    let mut queues = BTreeMap::<(String, String), Vec<&OldTicket>>::new();
    for t in tickets.iter().filter(|t| t.status == "QUEUED") {
        queues
            .entry((t.org.to_string(), t.key().to_string()))
            .or_default()
            .push(t);
    }
    for entries in queues.values_mut() {
        entries.sort_by_key(|t| t.old_order());
    }
    queues
}

/// What can be compared before the sequence numbers are known.
fn without_seq(record: &QueueRecord) -> QueueRecord {
    QueueRecord {
        seq: 0,
        ..record.clone()
    }
}

/// Pages and every place of every queue in the pre-0005 order, plus the buckets.
async fn check_old_order(db: &Database, tickets: &[OldTicket], label: &str) {
    let queues = old_queues(tickets);
    for org in ORGS {
        for key in all_division_keys() {
            let expected: Vec<QueueRecord> = queues
                .get(&(org.to_string(), key.to_string()))
                .map(|q| q.iter().map(|t| t.record()).collect())
                .unwrap_or_default();
            walk_pages(db, org, key, &expected, 500, without_seq, label).await;
            for (i, entry) in expected.iter().enumerate() {
                let got = queue::position(db, org, &entry.ticket_id)
                    .await
                    .expect("position");
                assert_eq!(
                    got,
                    Some(i as i64 + 1),
                    "{label}: place of {entry:?} in {org}/{key:?}"
                );
            }
        }
    }
    for t in tickets.iter().filter(|t| t.status != "QUEUED") {
        let got = queue::position(db, t.org, &t.id).await.expect("position");
        assert_eq!(
            got, None,
            "{label}: {} ticket {} has a place",
            t.status, t.id
        );
    }
    check_buckets(db, None, label).await;
}

/// Every ticket numbered 1.. per queue in (waiting since, number) order, queue entries
/// carrying their ticket's number, and each counter at its queue's highest number.
async fn check_numbering(db: &Database, tickets: &[OldTicket], label: &str) {
    let seqs: HashMap<String, Option<i64>> =
        on_backend!(db, |pool| sqlx::query_as::<_, (String, Option<i64>)>(
            "SELECT id, queue_seq FROM tickets"
        )
        .fetch_all(pool)
        .await
        .expect("ticket seqs"))
        .into_iter()
        .collect();
    let mut groups = BTreeMap::<(String, String), Vec<&OldTicket>>::new();
    for t in tickets {
        groups
            .entry((t.org.to_string(), t.key().to_string()))
            .or_default()
            .push(t);
    }
    let mut want_counters = Vec::new();
    for ((org, key), mut group) in groups {
        group.sort_by_key(|t| (t.queued_since.clone(), t.number));
        for (i, t) in group.iter().enumerate() {
            assert_eq!(
                seqs[&t.id],
                Some(i as i64 + 1),
                "{label}: queue_seq of {t:?}, place {} of {org}/{key:?} by (queued_since, number)",
                i + 1
            );
        }
        want_counters.push((org, key, group.len() as i64));
    }
    let counters: Vec<(String, String, i64)> = on_backend!(db, |pool| sqlx::query_as(
        "SELECT organization_id, division_key, last_seq FROM queue_counters
          ORDER BY organization_id, division_key"
    )
    .fetch_all(pool)
    .await
    .expect("queue counters"));
    assert_eq!(counters, want_counters, "{label}: queue_counters");
    let max_seqs: Vec<(String, String, i64)> = on_backend!(db, |pool| sqlx::query_as(
        "SELECT organization_id, COALESCE(division_id, ''), MAX(queue_seq) FROM tickets
          GROUP BY organization_id, COALESCE(division_id, '')
          ORDER BY organization_id, COALESCE(division_id, '')"
    )
    .fetch_all(pool)
    .await
    .expect("max seqs"));
    assert_eq!(
        counters, max_seqs,
        "{label}: last_seq is not the queue's highest number"
    );
    let stray = common::count(
        db,
        "SELECT COUNT(*) FROM queue_entries q JOIN tickets t ON t.id = q.ticket_id
          WHERE t.queue_seq IS NULL OR q.seq <> t.queue_seq",
    )
    .await;
    assert_eq!(
        stray, 0,
        "{label}: queue entries whose seq is not their ticket's"
    );
}

#[tokio::test]
async fn migration_numbers_existing_queues_in_their_old_order() {
    let seed = seed(0x0005);
    for test_db in TestDb::all().await {
        let started = Instant::now();
        let label = format!("{:?} seed {seed}", test_db.backend);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut tickets = old_tickets(&mut rng);
        {
            let db = Database::connect(Some(&test_db.url))
                .await
                .expect("connect");
            migrate_before_0005(&db).await;
            insert_old(&db, &tickets).await;
            db.close().await;
        }
        let db = test_db.connect().await;
        check_numbering(&db, &tickets, &label).await;
        check_old_order(&db, &tickets, &format!("{label}, just migrated")).await;

        // Requeued tickets go back where the old rules put them: among the waiting, by
        // priority, waiting time and number — including reopened ones, whose waiting time is
        // not their creation time.
        let mut writer = Writer::new(&db, time(base_time(), 3_600));
        let mut assigned: Vec<usize> = (0..tickets.len())
            .filter(|&i| tickets[i].status == "ASSIGNED" && tickets[i].org == "acme")
            .collect();
        assigned.shuffle(&mut rng);
        let reopened = assigned
            .iter()
            .position(|&i| tickets[i].queued_since != tickets[i].created_at)
            .expect("an assigned ticket that was reopened");
        assigned.swap(0, reopened);
        for &i in assigned.iter().take(15) {
            let t = &tickets[i];
            let ahead = tickets
                .iter()
                .filter(|o| o.status == "QUEUED" && o.org == t.org && o.key() == t.key())
                .filter(|o| o.old_order() < t.old_order())
                .count() as i64;
            let agent_id = t.assignee.clone().expect("assignee");
            writer
                .apply(
                    t.org,
                    &t.id,
                    t.version + 1,
                    TicketEvent::TicketRequeued { agent_id },
                )
                .await;
            writer.commit().await;
            let got = queue::position(&db, t.org, &t.id).await.expect("position");
            assert_eq!(
                got,
                Some(ahead + 1),
                "{label}: requeued {t:?} should return to its old place"
            );
            let t = &mut tickets[i];
            t.status = "QUEUED";
            t.assignee = None;
            t.version += 1;
        }
        check_old_order(&db, &tickets, &format!("{label}, after requeues")).await;

        // New tickets join at the back of their priority, even one whose event carries a
        // time earlier than everyone waiting.
        let division = DIVISIONS[0][0];
        let mut number = tickets
            .iter()
            .filter(|t| t.org == "acme")
            .map(|t| t.number)
            .max()
            .unwrap_or(0);
        let mut new_ids: Vec<(String, Priority)> = Vec::new();
        for (priority, at) in [
            (Priority::Low, None),
            (Priority::Urgent, Some(time(base_time(), -86_400))),
            (Priority::Medium, None),
        ] {
            number += 1;
            let last_seq = common::count(
                &db,
                &format!(
                    "SELECT last_seq FROM queue_counters
                      WHERE organization_id = 'acme' AND division_key = '{division}'"
                ),
            )
            .await;
            let id = uuid::Uuid::from_u128(rng.gen()).to_string();
            writer
                .apply_at(
                    "acme",
                    &id,
                    1,
                    created_event("acme", number, priority, Some(division)),
                    at,
                )
                .await;
            writer.commit().await;
            let at_or_before = tickets
                .iter()
                .filter(|o| o.status == "QUEUED" && o.org == "acme" && o.key() == division)
                .filter(|o| o.priority.queue_rank() <= priority.queue_rank())
                .count() as i64
                + new_ids
                    .iter()
                    .filter(|(_, p)| p.queue_rank() <= priority.queue_rank())
                    .count() as i64;
            let got = queue::position(&db, "acme", &id).await.expect("position");
            assert_eq!(
                got,
                Some(at_or_before + 1),
                "{label}: a new {priority:?} ticket should join at the back of its priority"
            );
            let seq = common::count(
                &db,
                &format!("SELECT queue_seq FROM tickets WHERE id = '{id}'"),
            )
            .await;
            assert_eq!(
                seq,
                last_seq + 1,
                "{label}: a new ticket takes the queue's next number"
            );
            new_ids.push((id, priority));
        }
        check_buckets(&db, None, &format!("{label}, after new tickets")).await;
        let total = queue::page(&db, "acme", division, 1, None)
            .await
            .expect("page")
            .total_count;
        let low = queue::position(&db, "acme", &new_ids[0].0)
            .await
            .expect("position");
        assert_eq!(
            low,
            Some(total),
            "{label}: the new LOW ticket is last of all"
        );
        eprintln!("{label}: migration checks in {:.1?}", started.elapsed());
        db.close().await;
    }
}
