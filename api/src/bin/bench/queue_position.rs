//! `--scenario queue-position`: `projections::queue::position` (asked for every
//! `Ticket.queuePosition`) and `projections::queue::page` (the `queue` query) on one
//! division whose queue holds `--queue-size` (100,000) tickets.
//!
//! # Set-up
//!
//! A fresh database, migrated; no helpdesk, no projection runner. Creating 100,000 tickets
//! through the command path would take minutes and measure nothing this scenario is about,
//! so the rows the tickets projection would have written are **inserted directly**, in
//! batches of 500: one `tickets` row (status QUEUED) and one `queue_entries` row per ticket,
//! all in one organization and one division, ticket numbers 1..N, one arrival every 500 ms,
//! priorities drawn 5 % URGENT, 20 % HIGH, 60 % MEDIUM, 15 % LOW (seeded). Join sequence
//! numbers leave a gap after a third of the tickets (drawn), as the tickets already
//! assigned would have. Then the `queue_buckets` and `queue_counters` rows are computed from
//! the entries in SQL (what the projection keeps as entries come and go) and the tables
//! are analysed — PostgreSQL `VACUUM (ANALYZE)` (what autovacuum would have done by then, so
//! that index-only scans find the visibility map set), SQLite `ANALYZE`.
//!
//! # What is measured (one client, one query at a time)
//!
//! - `position`: `--lookups` (10,000) random queued tickets, uniform over the queue, each
//!   answer checked against the place computed in the bench. Target: p99 under 5 ms.
//! - `page` after a random cursor: `--pages` (1,000) pages of 20 (the GraphQL default)
//!   after a random entry's cursor, checked (first place, length, total).
//! - `page` at the head of the queue (no cursor): a tenth as many.
//!
//! Each sample is one call of the function, timed in the bench (µs, HdrHistogram). With
//! `--explain` the plans of the statements for the last ticket in the queue are printed
//! (PostgreSQL `EXPLAIN (ANALYZE, BUFFERS)`, SQLite `EXPLAIN QUERY PLAN`).

use anyhow::{bail, Context};
use chrono::{TimeZone, Utc};
use hdrhistogram::Histogram;
use projections::db::{timestamp, Backend};
use projections::queue::{QueueKey, BUCKET_WIDTH, PAGE_SQL, TOTAL_SQL};
use projections::Database;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::{
    latency_histogram, micros, on_fresh_databases, progress_bar, quantile_columns, quantile_header,
    Args, ORGANIZATION,
};

/// The division whose queue is measured.
const DIVISION: &str = "5b1f0c4e-0000-4000-8000-000000000001";

/// Rows per insert statement.
const BATCH: usize = 500;

/// The page size of the `queue` query when the client gives none.
const PAGE: i64 = 20;

/// The target of the issue.
const TARGET_P99_MS: f64 = 5.0;

/// The priority names, by queue rank.
const PRIORITIES: [&str; 4] = ["URGENT", "HIGH", "MEDIUM", "LOW"];

/// The figures of one backend.
pub struct QueueRun {
    backend: &'static str,
    /// Inserting and analysing.
    setup: Duration,
    /// Entries in the queue.
    size: usize,
    /// `position`, µs.
    position: Histogram<u64>,
    /// `page` after a random cursor, µs.
    page_after: Histogram<u64>,
    /// `page` without a cursor, µs.
    page_head: Histogram<u64>,
    /// Answers that disagreed with the bench's own computation.
    wrong: u64,
    /// `--explain`: the plans, as printed.
    plans: String,
}

/// One queued ticket.
struct Entry {
    id: String,
    rank: i64,
    seq: i64,
    since: String,
    number: i64,
}

/// Runs the scenario on the backends `--backend` selects.
pub async fn run(args: &Args) -> anyhow::Result<Vec<QueueRun>> {
    on_fresh_databases(args, "bench_queue", |backend, url| async move {
        let db = Database::connect(Some(&url))
            .await
            .with_context(|| format!("connecting to {backend}"))?;
        let measured = async {
            db.migrate().await?;
            measure(backend, &db, args).await
        }
        .await;
        db.close().await;
        measured
    })
    .await
}

async fn measure(backend: &'static str, db: &Database, args: &Args) -> anyhow::Result<QueueRun> {
    let size = args.queue_size as usize;
    eprintln!("queue-position / {backend}: inserting {size} queued tickets");
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(20_240_101);
    let entries = generate(size, &mut rng);
    insert(db, &entries).await?;
    analyse(db).await?;
    let setup = started.elapsed();
    // Every entry's place, computed here: the answer each lookup must give.
    let mut order: Vec<usize> = (0..size).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&entries[a], &entries[b]);
        (a.rank, a.seq).cmp(&(b.rank, b.seq))
    });
    let mut place = vec![0i64; size];
    for (k, &index) in order.iter().enumerate() {
        place[index] = k as i64 + 1;
    }
    let mut wrong = 0;

    let mut position = latency_histogram()?;
    let progress = progress_bar(args.lookups, "position lookups")?;
    for _ in 0..args.lookups {
        let j = rng.gen_range(0..size);
        let started = Instant::now();
        let got = projections::queue::position(db, ORGANIZATION, &entries[j].id).await?;
        position.saturating_record(micros(started.elapsed()));
        wrong += u64::from(got != Some(place[j]));
        progress.inc(1);
    }
    progress.finish_and_clear();

    let mut page_after = latency_histogram()?;
    let progress = progress_bar(args.pages, "pages after a random cursor")?;
    for _ in 0..args.pages {
        let j = rng.gen_range(0..size);
        let key = QueueKey {
            priority_rank: entries[j].rank,
            seq: entries[j].seq,
        };
        let started = Instant::now();
        let page = projections::queue::page(db, ORGANIZATION, DIVISION, PAGE, Some(&key)).await?;
        page_after.saturating_record(micros(started.elapsed()));
        let behind = size as i64 - place[j];
        let right = page.first_position == place[j] + 1
            && page.entries.len() as i64 == behind.min(PAGE)
            && page.has_next_page == (behind > PAGE)
            && page.total_count == size as i64;
        wrong += u64::from(!right);
        progress.inc(1);
    }
    progress.finish_and_clear();

    let mut page_head = latency_histogram()?;
    for _ in 0..(args.pages / 10).max(1) {
        let started = Instant::now();
        let page = projections::queue::page(db, ORGANIZATION, DIVISION, PAGE, None).await?;
        page_head.saturating_record(micros(started.elapsed()));
        let right = page.first_position == 1
            && page.entries.len() as i64 == (size as i64).min(PAGE)
            && page.total_count == size as i64;
        wrong += u64::from(!right);
    }

    let plans = if args.explain {
        let last = &entries[*order.last().context("empty queue")?];
        explain(db, last).await?
    } else {
        String::new()
    };
    Ok(QueueRun {
        backend,
        setup,
        size,
        position,
        page_after,
        page_head,
        wrong,
        plans,
    })
}

/// `size` queued tickets in arrival order, priorities drawn from `rng`.
fn generate(size: usize, rng: &mut StdRng) -> Vec<Entry> {
    let start = Utc
        .with_ymd_and_hms(2025, 1, 6, 8, 0, 0)
        .single()
        .unwrap_or_else(Utc::now);
    let mut seq = 0;
    (0..size)
        .map(|i| {
            seq += if rng.gen_range(0..3) == 0 { 2 } else { 1 };
            let rank = match rng.gen_range(0..100) {
                0..=4 => 0,
                5..=24 => 1,
                25..=84 => 2,
                _ => 3,
            };
            Entry {
                id: uuid::Uuid::new_v4().to_string(),
                rank,
                seq,
                since: timestamp(start + chrono::Duration::milliseconds(500 * i as i64)),
                number: i as i64 + 1,
            }
        })
        .collect()
}

/// Inserts the `tickets` and `queue_entries` rows of `entries`.
async fn insert(db: &Database, entries: &[Entry]) -> anyhow::Result<()> {
    let progress = progress_bar(entries.len() as u64, "queued tickets inserted")?;
    for chunk in entries.chunks(BATCH) {
        // $1 the organization, $2 the division; then 7 values per ticket row, 5 per queue row.
        let mut tickets = String::from(
            "INSERT INTO tickets (id, organization_id, number, subject, description, status,
                priority, division_id, created_by, created_at, updated_at, search_text, version,
                queued_since, queue_seq) VALUES ",
        );
        let mut queue = String::from(
            "INSERT INTO queue_entries (ticket_id, organization_id, division_key, priority_rank,
                seq, waiting_since, number) VALUES ",
        );
        for k in 0..chunk.len() {
            let sep = if k == 0 { "" } else { ", " };
            let p = 3 + 7 * k;
            let _ = write!(
                tickets,
                "{sep}(${p}, $1, ${}, ${}, NULL, 'QUEUED', ${}, $2, 'bench-admin', ${}, ${}, ${}, \
                 1, ${}, ${})",
                p + 1,
                p + 2,
                p + 4,
                p + 5,
                p + 5,
                p + 3,
                p + 5,
                p + 6
            );
            let q = 3 + 5 * k;
            let _ = write!(
                queue,
                "{sep}(${q}, $1, $2, ${}, ${}, ${}, ${})",
                q + 1,
                q + 2,
                q + 3,
                q + 4
            );
        }
        projections::on_backend!(db, |pool| {
            let mut tx = pool.begin().await?;
            let mut statement = sqlx::query(&tickets).bind(ORGANIZATION).bind(DIVISION);
            for e in chunk {
                let subject = format!("Bench ticket {}: printer jammed", e.number);
                let search = format!("{}\n", subject.to_lowercase());
                statement = statement
                    .bind(&e.id)
                    .bind(e.number)
                    .bind(subject)
                    .bind(search)
                    .bind(PRIORITIES[e.rank as usize])
                    .bind(&e.since)
                    .bind(e.seq);
            }
            statement.execute(&mut *tx).await?;
            let mut statement = sqlx::query(&queue).bind(ORGANIZATION).bind(DIVISION);
            for e in chunk {
                statement = statement
                    .bind(&e.id)
                    .bind(e.rank)
                    .bind(e.seq)
                    .bind(&e.since)
                    .bind(e.number);
            }
            statement.execute(&mut *tx).await?;
            tx.commit().await?;
        });
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();
    let buckets = format!(
        "INSERT INTO queue_buckets (organization_id, division_key, priority_rank, bucket, entries)
         SELECT organization_id, division_key, priority_rank, seq / {BUCKET_WIDTH}, COUNT(*)
           FROM queue_entries GROUP BY organization_id, division_key, priority_rank,
                seq / {BUCKET_WIDTH}"
    );
    let counters = "INSERT INTO queue_counters (organization_id, division_key, last_seq)
         SELECT organization_id, division_key, MAX(seq) FROM queue_entries
          GROUP BY organization_id, division_key";
    projections::on_backend!(db, |pool| {
        sqlx::query(&buckets).execute(pool).await?;
        sqlx::query(counters).execute(pool).await?;
    });
    Ok(())
}

/// Statistics (and on PostgreSQL the visibility map) as a running system would have them.
async fn analyse(db: &Database) -> anyhow::Result<()> {
    match db {
        Backend::Postgres(pool) => {
            for table in ["queue_entries", "queue_buckets", "tickets"] {
                sqlx::query(&format!("VACUUM (ANALYZE) {table}"))
                    .execute(pool)
                    .await?;
            }
        }
        Backend::Sqlite(pool) => {
            sqlx::query("ANALYZE").execute(pool).await?;
        }
    }
    Ok(())
}

/// Binds a statement of `projections::queue` for the entry `last` (a macro: the query
/// types of the two backends differ).
macro_rules! bind_for_last {
    ($query:expr, $binds:expr, $last:expr) => {
        match $binds {
            Binds::Ticket => $query.bind(&$last.id).bind(ORGANIZATION),
            Binds::Queue => $query.bind(ORGANIZATION).bind(DIVISION),
            Binds::Key => $query
                .bind(ORGANIZATION)
                .bind(DIVISION)
                .bind($last.rank)
                .bind($last.seq),
            Binds::Page => $query
                .bind(ORGANIZATION)
                .bind(DIVISION)
                .bind($last.rank)
                .bind($last.seq - 1)
                .bind(PAGE + 1),
        }
    };
}

/// What a statement of `projections::queue` is bound to.
#[derive(Clone, Copy)]
enum Binds {
    /// `position`: the ticket and its organization.
    Ticket,
    /// The queue: organization and division.
    Queue,
    /// A queue key: organization, division, rank, seq.
    Key,
    /// A page: organization, division, the key before it and its length.
    Page,
}

/// The plans of the queue statements for the last ticket in the queue.
async fn explain(db: &Database, last: &Entry) -> anyhow::Result<String> {
    let mut out = String::new();
    let position = projections::queue::position_sql();
    let place = projections::queue::key_place_sql();
    let statements: [(&str, &str, Binds); 4] = [
        (
            "position (last ticket in the queue)",
            &position,
            Binds::Ticket,
        ),
        ("page: total count", TOTAL_SQL, Binds::Queue),
        (
            "page: entries after the last ticket's first neighbour",
            PAGE_SQL,
            Binds::Page,
        ),
        (
            "page: place of the first entry (last ticket)",
            &place,
            Binds::Key,
        ),
    ];
    for (what, sql, binds) in statements {
        let _ = writeln!(out, "-- {what}");
        let lines: Vec<String> = match db {
            Backend::Postgres(pool) => {
                let sql = format!("EXPLAIN (ANALYZE, BUFFERS) {sql}");
                let query = sqlx::query_scalar::<_, String>(&sql);
                let query = bind_for_last!(query, binds, last);
                query.fetch_all(pool).await?
            }
            Backend::Sqlite(pool) => {
                let sql = format!("EXPLAIN QUERY PLAN {sql}");
                let query = sqlx::query_as::<_, (i64, i64, i64, String)>(&sql);
                let query = bind_for_last!(query, binds, last);
                query
                    .fetch_all(pool)
                    .await?
                    .into_iter()
                    .map(|(_, _, _, detail)| detail)
                    .collect()
            }
        };
        for line in lines {
            let _ = writeln!(out, "   {line}");
        }
    }
    if out.is_empty() {
        bail!("no plan");
    }
    Ok(out)
}

/// Prints the table (and the plans) on stdout.
pub fn print_report(args: &Args, runs: &[QueueRun]) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "\nqueue-position: one division, {} queued tickets (rows inserted directly), \
         {} lookups, {} pages, one client, {cores} cores",
        args.queue_size, args.lookups, args.pages
    );
    for run in runs {
        println!(
            "{}: set-up {:.1} s; {} answers disagreed with the expected places",
            run.backend,
            run.setup.as_secs_f64(),
            run.wrong
        );
    }
    println!(
        "\n{:<9} {:<40} {} {:>14}",
        "backend",
        "query",
        quantile_header(),
        "target"
    );
    for run in runs {
        let target = if run.position.value_at_quantile(0.99) as f64 / 1e3 < TARGET_P99_MS {
            "p99<5ms: met"
        } else {
            "p99<5ms: MISSED"
        };
        println!(
            "{:<9} {:<40} {} {:>14}",
            run.backend,
            format!("position ({} queued)", run.size),
            quantile_columns(&run.position),
            target
        );
        println!(
            "{:<9} {:<40} {}",
            run.backend,
            format!("page of {PAGE} after a random cursor"),
            quantile_columns(&run.page_after)
        );
        println!(
            "{:<9} {:<40} {}",
            run.backend,
            format!("page of {PAGE} at the head"),
            quantile_columns(&run.page_head)
        );
    }
    for run in runs.iter().filter(|r| !r.plans.is_empty()) {
        println!("\n{}: plans\n{}", run.backend, run.plans);
    }
}
