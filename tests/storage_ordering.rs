//! The global order of the event log under concurrent writers (brief rules 5 and 6), with
//! the projections crate in-process.
//!
//! Several tasks append at once for a few seconds: half through cqrs-es (the write side the
//! helpdesk uses), half with raw SQL transactions that stay open a random while after their
//! insert, so that on PostgreSQL insert order (position) differs from commit order. A test
//! projection records every event it applies, in order, in a table whose primary key is the
//! position (applying an event twice fails the batch). Afterwards:
//! - every committed event was applied exactly once;
//! - per aggregate, sequences were applied in increasing order;
//! - the fence: when A's commit returned before B's transaction began, A was applied first.

mod common;

use async_trait::async_trait;
use chrono::Utc;
use common::TestDb;
use cqrs_es::CqrsFramework;
use domain::metadata::EventMetadata;
use domain::priority::{Priority, PrioritySource};
use domain::ticket::{Ticket, TicketAction, TicketCommand, TicketEvent};
use domain::{Actor, Role};
use projections::db::{Backend, Tx};
use projections::event_log::{self, StoredEvent};
use projections::event_store::{event_store, EventStore};
use projections::runner::{
    LogSignal, Projection, ProjectionRunners, ProjectionTelemetry, RunnerOptions,
};
use projections::{on_backend, Database, DbError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long the appenders run.
const APPEND_FOR: Duration = Duration::from_millis(2500);
/// Appenders going through cqrs-es, and appenders writing raw SQL.
const CQRS_APPENDERS: u64 = 4;
const RAW_APPENDERS: u64 = 4;
const ORGANIZATION: &str = "acme";

/// Records each event it applies, and in which order, in `seen_events`.
struct SeenProjection;

#[async_trait]
impl Projection for SeenProjection {
    fn name(&self) -> &'static str {
        "seen"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["Ticket"]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["seen_events"]
    }

    async fn apply(&self, tx: &mut Tx, event: &StoredEvent) -> Result<(), DbError> {
        on_backend!(tx, |t| {
            sqlx::query(
                "INSERT INTO seen_events (position, seen_order, aggregate_id, sequence)
                 SELECT $1, COALESCE(MAX(seen_order), 0) + 1, $2, $3 FROM seen_events",
            )
            .bind(event.position())
            .bind(&event.aggregate_id)
            .bind(event.sequence)
            .execute(&mut **t)
            .await?;
        });
        Ok(())
    }
}

/// One appended event and when its transaction ran, as seen from the appender: `began` is
/// no earlier than the transaction's start, `committed` no earlier than its commit.
#[derive(Debug, Clone)]
struct Appended {
    aggregate_id: String,
    sequence: i64,
    began: Instant,
    committed: Instant,
    via: &'static str,
}

fn metadata(request: &str) -> HashMap<String, String> {
    EventMetadata {
        organization: ORGANIZATION.into(),
        actor: Actor::new("boss", Role::Admin),
        occurred_at: Utc::now(),
        request_id: request.into(),
        correlation_id: request.into(),
        causation_id: None,
    }
    .to_map()
}

fn created(number: i64) -> TicketEvent {
    TicketEvent::TicketCreated {
        organization: ORGANIZATION.into(),
        number,
        subject: format!("Ticket {number}"),
        description: None,
        priority: Priority::Medium,
        priority_source: PrioritySource::Explicit,
        division_id: None,
    }
}

/// Picks the aggregate of the next event: a new ticket now and then, else one of the task's.
fn next_target(rng: &mut StdRng, sequences: &BTreeMap<String, i64>) -> Option<String> {
    if sequences.is_empty() || rng.gen_bool(0.1) {
        return None;
    }
    let index = rng.gen_range(0..sequences.len());
    sequences.keys().nth(index).cloned()
}

/// Appends through cqrs-es until `until`: ticket creations and comments.
async fn cqrs_appender(
    db: Database,
    cqrs: Arc<CqrsFramework<Ticket, EventStore<Ticket>>>,
    signal: LogSignal,
    until: Instant,
    seed: u64,
) -> Vec<Appended> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sequences = BTreeMap::<String, i64>::new();
    let mut appended = Vec::new();
    while Instant::now() < until {
        let (id, action) = match next_target(&mut rng, &sequences) {
            None => {
                let number = db.allocate_ticket_number(ORGANIZATION).await.unwrap();
                let action = TicketAction::Create {
                    number,
                    subject: format!("Ticket {number}"),
                    description: None,
                    priority: Priority::Medium,
                    priority_source: PrioritySource::Explicit,
                    division_id: None,
                };
                (uuid::Uuid::new_v4().to_string(), action)
            }
            Some(id) => {
                let action = TicketAction::AddComment {
                    comment_id: uuid::Uuid::new_v4().to_string(),
                    text: format!("comment {}", appended.len()),
                };
                (id, action)
            }
        };
        let command = TicketCommand {
            organization: ORGANIZATION.into(),
            actor: Actor::new("boss", Role::Admin),
            action,
        };
        let request = uuid::Uuid::new_v4().to_string();
        let began = Instant::now();
        cqrs.execute_with_metadata(&id, command, metadata(&request))
            .await
            .unwrap_or_else(|e| panic!("cqrs-es command on {id}: {e}"));
        let committed = Instant::now();
        signal.ring();
        let sequence = sequences.entry(id.clone()).or_insert(0);
        *sequence += 1;
        appended.push(Appended {
            aggregate_id: id,
            sequence: *sequence,
            began,
            committed,
            via: "cqrs-es",
        });
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..3))).await;
    }
    appended
}

/// Appends with raw SQL until `until`, each transaction kept open a random 0-50 ms after
/// its insert (PostgreSQL: `pg_sleep`; SQLite: holding the write lock meanwhile).
async fn raw_appender(db: Database, until: Instant, seed: u64) -> Vec<Appended> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sequences = BTreeMap::<String, i64>::new();
    let mut appended = Vec::new();
    while Instant::now() < until {
        let (id, event) = match next_target(&mut rng, &sequences) {
            None => {
                let number = db.allocate_ticket_number(ORGANIZATION).await.unwrap();
                (uuid::Uuid::new_v4().to_string(), created(number))
            }
            Some(id) => {
                let event = TicketEvent::CommentAdded {
                    comment_id: uuid::Uuid::new_v4().to_string(),
                    author_id: "boss".into(),
                    text: format!("raw comment {}", appended.len()),
                };
                (id, event)
            }
        };
        let sequence = sequences.get(&id).copied().unwrap_or(0) + 1;
        let event_type = cqrs_es::DomainEvent::event_type(&event);
        let payload = serde_json::to_string(&event).unwrap();
        let request = uuid::Uuid::new_v4().to_string();
        let metadata = serde_json::to_string(&metadata(&request)).unwrap();
        // SQLite has one writer: a shorter hold leaves the write lock to the others too.
        let hold = match db {
            Backend::Postgres(_) => Duration::from_millis(rng.gen_range(0..=50)),
            Backend::Sqlite(_) => Duration::from_millis(rng.gen_range(0..=5)),
        };
        let (began, committed) = match &db {
            Backend::Postgres(pool) => {
                let mut tx = pool.begin().await.unwrap();
                let began = Instant::now();
                sqlx::query(
                    "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type,
                        event_version, payload, metadata)
                     VALUES ('Ticket', $1, $2, $3, '1.0', $4::json, $5::json)",
                )
                .bind(&id)
                .bind(sequence)
                .bind(&event_type)
                .bind(&payload)
                .bind(&metadata)
                .execute(&mut *tx)
                .await
                .unwrap();
                sqlx::query("SELECT pg_sleep($1)")
                    .bind(hold.as_secs_f64())
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                (began, Instant::now())
            }
            Backend::Sqlite(pool) => {
                let mut tx = pool.begin().await.unwrap();
                let began = Instant::now();
                sqlx::query(
                    "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type,
                        event_version, payload, metadata)
                     VALUES ('Ticket', $1, $2, $3, '1.0', $4, $5)",
                )
                .bind(&id)
                .bind(sequence)
                .bind(&event_type)
                .bind(&payload)
                .bind(&metadata)
                .execute(&mut *tx)
                .await
                .unwrap();
                tokio::time::sleep(hold).await;
                tx.commit().await.unwrap();
                (began, Instant::now())
            }
        };
        sequences.insert(id.clone(), sequence);
        appended.push(Appended {
            aggregate_id: id,
            sequence,
            began,
            committed,
            via: "raw SQL",
        });
        if matches!(db, Backend::Sqlite(_)) {
            // Let the other writers (and the runner) have the write lock now and then.
            tokio::time::sleep(Duration::from_millis(rng.gen_range(5..=30))).await;
        }
    }
    appended
}

async fn rows<T>(db: &Database, sql: &str) -> Vec<T>
where
    T: Send + Unpin,
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>,
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
{
    on_backend!(db, |pool| sqlx::query_as::<_, T>(sql)
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}")))
}

/// Runs the appenders against a projection runner on `db` and checks what it applied.
async fn concurrent_appends_are_applied_once_in_commit_order(db: Database) {
    let backend = db.backend_name();
    on_backend!(&db, |pool| {
        sqlx::query(
            "CREATE TABLE seen_events (position BIGINT PRIMARY KEY,
                seen_order BIGINT NOT NULL UNIQUE, aggregate_id TEXT NOT NULL,
                sequence BIGINT NOT NULL)",
        )
        .execute(pool)
        .await
        .unwrap();
    });

    let shutdown = CancellationToken::new();
    let signal = LogSignal::default();
    signal.listen_to_postgres(&db, shutdown.clone());
    let (leases, _) = projections::lease::Leases::start(&db, &["seen"], shutdown.clone());
    let (progress, runners) = ProjectionRunners::new(
        db.clone(),
        vec![Arc::new(SeenProjection)],
        signal.clone(),
        Arc::new(ProjectionTelemetry::default()),
        RunnerOptions::default(),
    )
    .start(&leases, shutdown.clone())
    .await
    .unwrap();

    let cqrs = Arc::new(CqrsFramework::new(event_store::<Ticket>(&db), vec![], ()));
    let until = Instant::now() + APPEND_FOR;
    let mut appenders = Vec::new();
    for seed in 0..CQRS_APPENDERS {
        appenders.push(tokio::spawn(cqrs_appender(
            db.clone(),
            cqrs.clone(),
            signal.clone(),
            until,
            seed,
        )));
    }
    for seed in 0..RAW_APPENDERS {
        appenders.push(tokio::spawn(raw_appender(db.clone(), until, 100 + seed)));
    }
    let mut appended = Vec::new();
    for appender in appenders {
        appended.extend(appender.await.expect("appender panicked"));
    }

    let head = event_log::log_head(&db).await.unwrap();
    progress
        .wait_for("Ticket", head, Duration::from_secs(15))
        .await
        .unwrap_or_else(|e| panic!("{backend}: {e} (head {head:?})"));
    shutdown.cancel();
    for runner in runners {
        runner.await.unwrap();
    }

    // Every committed event was applied exactly once.
    let events: Vec<(i64, String, i64)> = rows(
        &db,
        "SELECT position, aggregate_id, sequence FROM events ORDER BY position",
    )
    .await;
    let seen: Vec<(i64, i64, String, i64)> = rows(
        &db,
        "SELECT position, seen_order, aggregate_id, sequence FROM seen_events ORDER BY seen_order",
    )
    .await;
    assert_eq!(
        events.len(),
        appended.len(),
        "{backend}: the log holds what was appended"
    );
    assert_eq!(seen.len(), events.len(), "{backend}: applied vs committed");
    let committed_positions: BTreeSet<i64> = events.iter().map(|e| e.0).collect();
    let seen_positions: BTreeSet<i64> = seen.iter().map(|s| s.0).collect();
    assert_eq!(
        seen_positions, committed_positions,
        "{backend}: applied positions"
    );
    let by_position: HashMap<i64, (&str, i64)> = events
        .iter()
        .map(|(p, a, s)| (*p, (a.as_str(), *s)))
        .collect();
    for (position, _, aggregate, sequence) in &seen {
        assert_eq!(
            by_position[position],
            (aggregate.as_str(), *sequence),
            "{backend}: event at position {position}"
        );
    }
    for (order, s) in seen.iter().enumerate() {
        assert_eq!(s.1, order as i64 + 1, "{backend}: seen_order has no gaps");
    }

    // Per aggregate, sequences were applied in increasing order (1, 2, 3, ...).
    let mut last = HashMap::<&str, i64>::new();
    for (position, _, aggregate, sequence) in &seen {
        let previous = last.insert(aggregate.as_str(), *sequence).unwrap_or(0);
        assert_eq!(
            *sequence,
            previous + 1,
            "{backend}: aggregate {aggregate} event {sequence} (position {position}) applied after event {previous}"
        );
    }

    // The fence: A committed before B began => A applied before B.
    let order_of: HashMap<(&str, i64), i64> = seen
        .iter()
        .map(|(_, order, a, s)| ((a.as_str(), *s), *order))
        .collect();
    let mut timed: Vec<(&Appended, i64)> = appended
        .iter()
        .map(|a| {
            let order = order_of
                .get(&(a.aggregate_id.as_str(), a.sequence))
                .copied()
                .unwrap_or_else(|| panic!("{backend}: {a:?} was not applied"));
            (a, order)
        })
        .collect();
    timed.sort_by_key(|(a, _)| a.committed);
    // prefix_max[i]: the latest-applied event among the first i + 1 to commit.
    let mut prefix_max: Vec<usize> = Vec::with_capacity(timed.len());
    for i in 0..timed.len() {
        let best = match prefix_max.last() {
            Some(&j) if timed[j].1 > timed[i].1 => j,
            _ => i,
        };
        prefix_max.push(best);
    }
    let mut constrained_pairs = 0usize;
    for (b, b_order) in &timed {
        let before = timed.partition_point(|(a, _)| a.committed < b.began);
        constrained_pairs += before;
        if before == 0 {
            continue;
        }
        let (a, a_order) = timed[prefix_max[before - 1]];
        assert!(
            a_order < *b_order,
            "{backend}: {a:?} committed before {b:?} began, but was applied after it \
             (seen_order {a_order} > {b_order})"
        );
    }
    // For the record: how often a commit returned before that of an event with a lower
    // position (on PostgreSQL a reader going by position alone could then skip that event;
    // on SQLite, where commit order is insert order, this only counts scheduling delays).
    let position_of: HashMap<(&str, i64), i64> = events
        .iter()
        .map(|(p, a, s)| ((a.as_str(), *s), *p))
        .collect();
    let mut highest_committed = 0;
    let mut overtaken = 0;
    for (a, _) in &timed {
        let position = position_of[&(a.aggregate_id.as_str(), a.sequence)];
        if position < highest_committed {
            overtaken += 1;
        }
        highest_committed = highest_committed.max(position);
    }
    let applied_after_higher = seen.windows(2).filter(|w| w[0].0 > w[1].0).count();
    eprintln!(
        "{backend}: {} events ({} via raw SQL), {constrained_pairs} ordered pairs checked, \
         {overtaken} commits returned after a higher position's, {applied_after_higher} \
         applied after a higher position",
        appended.len(),
        appended.iter().filter(|a| a.via == "raw SQL").count(),
    );
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_applies_concurrent_appends_once_in_commit_order() {
    let Some(test_db) = TestDb::postgres().await else {
        return;
    };
    concurrent_appends_are_applied_once_in_commit_order(test_db.connect().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_applies_concurrent_appends_once_in_commit_order() {
    let test_db = TestDb::sqlite();
    concurrent_appends_are_applied_once_in_commit_order(test_db.connect().await).await;
}
