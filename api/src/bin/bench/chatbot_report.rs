//! `--scenario chatbot-report`: `projections::chatbot::report` (the `chatbotReport` query and
//! the CSV export) for one bot over a year of hourly buckets holding
//! `--chatbot-interactions` (1,000,000) interactions.
//!
//! # Set-up
//!
//! A fresh database, migrated; no helpdesk, no projection runner. One bot of the bench
//! organization, in America/New_York (so the year holds both DST changes: 2025-11-02 falls
//! back, 2026-03-08 springs forward), with 100 answers and active Monday to Friday
//! 08:00-20:00 and Saturday 09:00-14:00. Its interactions are drawn (seeded) over the local
//! year 2025-11-01 00:00 to 2026-11-01 00:00, weighted by local hour (weekdays 09:00-17:00
//! about 17 times a night hour, see [`weight`]):
//!
//! - outside the active hours: an OUTSIDE_HOURS hand-off (about 10 %);
//! - otherwise 12 % LOW_CONFIDENCE hand-offs (confidence 0.05-0.6) asking one of 1,000
//!   distinct questions with a Zipf frequency (the most asked ~1,000 times as often as the
//!   least), each typed in one of four ways that normalise to the same text; the rest are
//!   answered (confidence 0.6-1.0), the answer drawn with a Zipf frequency over the 100;
//! - 30 % of all interactions are rated (37.5 % of the answered ones: hand-offs cannot be
//!   rated), 1 to 5, and 5 % of those rated twice (the later rating counts);
//! - conversations of 1 to 7 consecutive interactions, each of one of 12 customers, whose
//!   real keys (`personal_data::key_for`) seal the questions.
//!
//! Applying a million interactions through the projection issues some eight statements
//! each, far longer than this bench may take, so the rows the projection would have written
//! are **computed in the bench and inserted directly** (500 rows per statement): the
//! bucket of every interaction comes from `chatbot::slot`, the unmatched questions from
//! `menu::normalise`, exactly as the projection does. The shortcut is **proved equivalent**
//! first, on every backend: a `--chatbot-sample` (10,000) interaction year from the same
//! generator is applied event by event through `ChatbotAnalyticsProjection::apply` (the
//! real Bot and Conversation events, questions sealed, `runner::BATCH_SIZE` events per
//! transaction) into one fresh database and inserted the short way into another; every
//! table the projection owns must then hold the same rows (all columns, as text), or the
//! run fails. Then PostgreSQL `VACUUM (ANALYZE)` on those tables, SQLite `ANALYZE`.
//!
//! # What is measured (one client, one report at a time)
//!
//! `--chatbot-reports` (200) calls of `chatbot::report` each for: the whole year at HOUR,
//! DAY and WEEK granularity (from and to the local midnights of 2025-11-01 and 2026-11-01),
//! a random 30-day range at HOUR and a random 7-day range at HOUR (both starting on a
//! random local hour, so the range cuts two days). Each sample is one call, timed in the
//! bench (µs, HdrHistogram). Every answer is checked against the bench's own tally of the
//! interactions it generated — totals, every bucket's counts, the confidence histogram,
//! the top answers and the top unmatched questions — computed from the interaction times
//! with the time zone directly, not with the projection's code; a mismatch fails the run.
//!
//! With `--explain`: on PostgreSQL the year at HOUR, DAY and WEEK and a 30-day report at
//! HOUR run seven times more each on a connection with `auto_explain` (ANALYZE, BUFFERS),
//! and the last run's statements are printed with their server time and plan (by then
//! PostgreSQL may use generic plans for the prepared statements, as in the measured loop:
//! conditions on `$n` rather than on values show it); on SQLite, `EXPLAIN QUERY PLAN` of the same
//! statement texts (as captured on PostgreSQL, without `COLLATE "C"`; the planner does not
//! look at the parameters), so only when PostgreSQL ran first.

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, Datelike, Duration as TimeDelta, NaiveDate, NaiveTime, TimeZone, Utc};
use cqrs_es::DomainEvent;
use domain::bot::{BotAnswer, BotEvent};
use domain::conversation::{Channel, ConversationEvent, HandOffReason};
use domain::menu::normalise;
use domain::metadata::EventMetadata;
use domain::schedule::{parse_timezone, Schedule, WindowInput};
use domain::{Actor, Role};
use hdrhistogram::Histogram;
use projections::chatbot::{
    self, ChatbotAnalyticsProjection, ChatbotReport, Figures, Granularity, TOP_ANSWERS,
    TOP_UNMATCHED,
};
use projections::db::{timestamp, Backend};
use projections::event_log::{Checkpoint, StoredEvent};
use projections::personal_data::{self, CustomerKey};
use projections::runner::{Projection, BATCH_SIZE};
use projections::{on_backend, Database};
use rand::distributions::{Distribution, WeightedIndex};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::Row;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{
    latency_histogram, micros, on_fresh_databases, progress_bar, quantile_columns, quantile_header,
    Args, PgServer, SqliteFolder, ORGANIZATION,
};

/// The measured bot.
const BOT: &str = "bench-bot";

/// Its time zone: both DST changes fall inside the year.
const TIMEZONE: &str = "America/New_York";

/// The local dates the year runs between (midnight to midnight).
const YEAR: [(i32, u32, u32); 2] = [(2025, 11, 1), (2026, 11, 1)];

/// The bot's answers.
const ANSWERS: usize = 100;

/// Customers whose keys seal the questions.
const CUSTOMERS: usize = 12;

/// Share of the interactions inside the active hours that are low-confidence hand-offs.
const LOW_CONFIDENCE: f64 = 0.12;

/// Share of the answered interactions that are rated (30 % of all interactions).
const RATED: f64 = 0.375;

/// Share of the rated interactions rated a second time.
const RERATED: f64 = 0.05;

/// Rows per insert statement.
const BATCH: usize = 500;

/// `--explain`: runs of each explained report; the last one's plans are printed.
const EXPLAIN_RUNS: usize = 7;

/// What the things customers ask about are, for 40 x 25 = 1,000 distinct unmatched
/// questions ("do you ship a garden hose to boise").
const ITEMS: [&str; 40] = [
    "a garden hose",
    "a sofa",
    "frozen food",
    "a mattress",
    "a bicycle",
    "a piano",
    "live plants",
    "a refrigerator",
    "wine",
    "perfume",
    "a laptop",
    "batteries",
    "a kayak",
    "fireworks",
    "a washing machine",
    "paint",
    "a tent",
    "car tires",
    "a guitar",
    "glass vases",
    "a television",
    "books",
    "a treadmill",
    "a crib",
    "aquarium fish",
    "a grill",
    "a desk",
    "solar panels",
    "a printer",
    "cheese",
    "a rug",
    "a chandelier",
    "medicine",
    "a drone",
    "ski boots",
    "a lawn mower",
    "a bathtub",
    "a safe",
    "a surfboard",
    "a mirror",
];
const PLACES: [&str; 25] = [
    "Boise",
    "Anchorage",
    "Honolulu",
    "Puerto Rico",
    "Canada",
    "Mexico",
    "a PO box",
    "an APO address",
    "Guam",
    "Alaska",
    "Toronto",
    "Vancouver",
    "Montreal",
    "London",
    "Paris",
    "Berlin",
    "Tokyo",
    "Sydney",
    "Bogota",
    "Lima",
    "Jakarta",
    "Manila",
    "Nairobi",
    "Cairo",
    "Reykjavik",
];

/// A report's `[from, to)`.
type Range = (DateTime<Utc>, DateTime<Utc>);

/// The figures of one backend.
pub struct ChatbotRun {
    backend: &'static str,
    /// Generating, inserting and analysing the year.
    setup: Duration,
    /// The equivalence check of the bulk insert against the projection.
    sample: SampleCheck,
    /// What the year holds.
    mix: Mix,
    /// Rows per table after the set-up.
    rows: Vec<(&'static str, i64)>,
    /// Per measured report: its name, buckets per answer (min, max) and latencies (µs).
    reports: Vec<(String, (usize, usize), Histogram<u64>)>,
    /// `--explain`: the plans, as printed.
    plans: String,
}

/// The outcome of driving a sample both ways.
struct SampleCheck {
    interactions: usize,
    events: usize,
    /// Applying the events through the projection, commits included.
    projection: Duration,
    /// Rows compared (and found equal) over every table.
    rows: usize,
    tables: usize,
}

/// How the generated interactions split.
#[derive(Default, Clone, Copy)]
struct Mix {
    interactions: usize,
    answered: usize,
    low_confidence: usize,
    outside_hours: usize,
    rated: usize,
    rerated: usize,
    conversations: usize,
}

/// Runs the scenario on the backends `--backend` selects.
pub async fn run(args: &Args) -> anyhow::Result<Vec<ChatbotRun>> {
    let calendar = Calendar::new()?;
    // The statement texts captured on PostgreSQL, for SQLite's `EXPLAIN QUERY PLAN`.
    let captured: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let (calendar, captured) = (&calendar, &captured);
    on_fresh_databases(args, "bench_chatbot", |backend, url| async move {
        let sample = check_sample(args, backend, calendar).await?;
        let db = Database::connect(Some(&url))
            .await
            .with_context(|| format!("connecting to {backend}"))?;
        let measured = async {
            db.migrate().await?;
            measure(backend, &db, &url, args, calendar, sample, captured).await
        }
        .await;
        db.close().await;
        measured
    })
    .await
}

async fn measure(
    backend: &'static str,
    db: &Database,
    url: &str,
    args: &Args,
    calendar: &Calendar,
    sample: SampleCheck,
    captured: &Mutex<Vec<String>>,
) -> anyhow::Result<ChatbotRun> {
    let size = args.chatbot_interactions as usize;
    eprintln!("chatbot-report / {backend}: a year of {size} interactions, inserted directly");
    let started = Instant::now();
    let data = generate(size, 20_251_101, calendar)?;
    let mix = data.mix();
    // The customers' keys, as a real database holds them (no row below depends on them).
    keys(db).await?;
    let tables = bulk_rows(&data, calendar)?;
    insert_tables(db, tables).await?;
    analyse(db).await?;
    let setup = started.elapsed();
    let mut rows = Vec::new();
    for table in ChatbotAnalyticsProjection.tables() {
        let count: i64 = on_backend!(db, |pool| sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM {table}"
        ))
        .fetch_one(pool)
        .await?);
        rows.push((*table, count));
    }

    let (year_from, year_to) = calendar.year;
    let mut rng = StdRng::seed_from_u64(5);
    let mut reports = Vec::new();
    let queries: [(&str, Granularity, Option<i64>); 5] = [
        ("year, HOUR", Granularity::Hour, None),
        ("year, DAY", Granularity::Day, None),
        ("year, WEEK", Granularity::Week, None),
        ("random 30 days, HOUR", Granularity::Hour, Some(30 * 24)),
        ("random 7 days, HOUR", Granularity::Hour, Some(7 * 24)),
    ];
    for (name, granularity, span) in queries {
        let mut latency = latency_histogram()?;
        let mut buckets = (usize::MAX, 0);
        let fixed = match span {
            None => Some(data.expect(calendar, year_from, year_to, granularity)),
            Some(_) => None,
        };
        let progress = progress_bar(args.chatbot_reports, &format!("reports: {name}"))?;
        for _ in 0..args.chatbot_reports {
            let drawn;
            let (from, to, expected) = match (span, &fixed) {
                (Some(hours), _) => {
                    let (from, to) = calendar.random_range(&mut rng, hours);
                    drawn = data.expect(calendar, from, to, granularity);
                    (from, to, &drawn)
                }
                (None, Some(expected)) => (year_from, year_to, expected),
                (None, None) => bail!("no expectation for {name}"),
            };
            let started = Instant::now();
            let report = chatbot::report(db, ORGANIZATION, BOT, from, to, granularity).await?;
            latency.saturating_record(micros(started.elapsed()));
            let report = report.with_context(|| format!("{backend}: the bot is missing"))?;
            if let Err(why) = expected.check(&report) {
                bail!(
                    "{backend}: report {name} from {} to {} disagrees with the generated \
                     interactions: {why}",
                    timestamp(from),
                    timestamp(to)
                );
            }
            buckets = (
                buckets.0.min(report.buckets.len()),
                buckets.1.max(report.buckets.len()),
            );
            progress.inc(1);
        }
        progress.finish_and_clear();
        reports.push((name.to_string(), buckets, latency));
    }

    let plans = if args.explain {
        let year = (year_from, year_to);
        let ranges = [
            ("year, HOUR", Granularity::Hour, year),
            ("year, DAY", Granularity::Day, year),
            ("year, WEEK", Granularity::Week, year),
            (
                "random 30 days, HOUR",
                Granularity::Hour,
                calendar.random_range(&mut rng, 30 * 24),
            ),
        ];
        match db {
            Backend::Postgres(_) => match explain_postgres(url, &ranges).await {
                Ok((plans, statements)) => {
                    *captured.lock().unwrap_or_else(|e| e.into_inner()) = statements;
                    plans
                }
                Err(error) => format!("   (no plans: {error:#})\n"),
            },
            Backend::Sqlite(_) => {
                let statements = captured.lock().unwrap_or_else(|e| e.into_inner()).clone();
                explain_sqlite(db, &statements).await?
            }
        }
    } else {
        String::new()
    };
    Ok(ChatbotRun {
        backend,
        setup,
        sample,
        mix,
        rows,
        reports,
        plans,
    })
}

// ---------------------------------------------------------------------------------------
// The local calendar, computed with the time zone directly (not with the projection's code).

/// One UTC hour of the calendar (New York's offsets are whole hours, so a UTC hour is one
/// local hour).
struct Hour {
    start: DateTime<Utc>,
    /// 0 = Monday.
    weekday: u32,
    local_hour: u32,
    /// The UTC instants of its local day's and local week's (Monday's) midnight.
    day_start: DateTime<Utc>,
    week_start: DateTime<Utc>,
}

/// The hours around the measured year.
struct Calendar {
    /// The first hour's start.
    origin: DateTime<Utc>,
    hours: Vec<Hour>,
    /// The local midnights the year runs between.
    year: Range,
}

impl Calendar {
    fn new() -> anyhow::Result<Self> {
        let tz = parse_timezone(TIMEZONE).map_err(|e| anyhow!("{TIMEZONE}: {e}"))?;
        let midnight = |date: NaiveDate| {
            tz.from_local_datetime(&date.and_time(NaiveTime::MIN))
                .earliest()
                .map(|at| at.with_timezone(&Utc))
                .ok_or_else(|| anyhow!("no midnight on {date} in {TIMEZONE}"))
        };
        let date = |(y, m, d): (i32, u32, u32)| {
            NaiveDate::from_ymd_opt(y, m, d).ok_or_else(|| anyhow!("bad date {y}-{m}-{d}"))
        };
        let year = (midnight(date(YEAR[0])?)?, midnight(date(YEAR[1])?)?);
        // Ten days either side: the weeks around the year's ends.
        let origin = year.0 - TimeDelta::days(10);
        let count = (year.1 + TimeDelta::days(10) - origin).num_hours();
        let mut hours = Vec::with_capacity(count as usize);
        for h in 0..count {
            let start = origin + TimeDelta::hours(h);
            let local = start.with_timezone(&tz).naive_local();
            let day = local.date();
            let monday = day - TimeDelta::days(i64::from(day.weekday().num_days_from_monday()));
            hours.push(Hour {
                start,
                weekday: day.weekday().num_days_from_monday(),
                local_hour: chrono::Timelike::hour(&local),
                day_start: midnight(day)?,
                week_start: midnight(monday)?,
            });
        }
        Ok(Self {
            origin,
            hours,
            year,
        })
    }

    /// The index of the hour holding `at`.
    fn index(&self, at: DateTime<Utc>) -> usize {
        (at - self.origin).num_seconds().div_euclid(3600) as usize
    }

    /// The hours of the year.
    fn year_hours(&self) -> std::ops::Range<usize> {
        self.index(self.year.0)..self.index(self.year.1)
    }

    /// A range of `hours` hours inside the year, starting on a random hour.
    fn random_range(&self, rng: &mut StdRng, hours: i64) -> Range {
        let year = self.year_hours();
        let last = year.end as i64 - hours;
        let first = rng.gen_range(year.start as i64..=last.max(year.start as i64));
        let from = self.hours[first as usize].start;
        (from, from + TimeDelta::hours(hours))
    }

    /// The start of the bucket of `granularity` holding `at`.
    fn bucket(&self, at: DateTime<Utc>, granularity: Granularity) -> DateTime<Utc> {
        let hour = &self.hours[self.index(at)];
        match granularity {
            Granularity::Hour => hour.start,
            Granularity::Day => hour.day_start,
            Granularity::Week => hour.week_start,
        }
    }

    /// The first start of a bucket of `granularity` at or after `at`.
    fn bucket_at_or_after(&self, at: DateTime<Utc>, granularity: Granularity) -> DateTime<Utc> {
        self.hours[self.index(at)..]
            .iter()
            .map(|hour| self.bucket(hour.start, granularity))
            .find(|start| *start >= at)
            .unwrap_or(at)
    }
}

/// How many interactions an hour draws, relative to a night hour.
fn weight(hour: &Hour) -> f64 {
    match (hour.weekday, hour.local_hour) {
        (0..=4, 9..=16) => 10.0,
        (0..=4, 8 | 17..=19) => 6.0,
        (5, 9..=13) => 4.0,
        _ => 0.6,
    }
}

/// The bot's active hours: Monday to Friday 08:00-20:00, Saturday 09:00-14:00.
fn schedule() -> anyhow::Result<Schedule> {
    let mut windows: Vec<WindowInput> = (1..=5)
        .map(|day| WindowInput {
            day_of_week: day,
            start: "08:00".into(),
            end: "20:00".into(),
        })
        .collect();
    windows.push(WindowInput {
        day_of_week: 6,
        start: "09:00".into(),
        end: "14:00".into(),
    });
    Schedule::new(
        true,
        TIMEZONE,
        &windows,
        Some("We are closed; an agent will answer.".into()),
    )
    .map_err(|e| anyhow!("schedule: {e}"))
}

// ---------------------------------------------------------------------------------------
// The generated interactions.

#[derive(Clone, Copy)]
enum Outcome {
    Answered {
        answer: u16,
        milli: i64,
        response_ms: i64,
    },
    LowConfidence {
        milli: i64,
        question: u16,
        /// How it was typed (0..4); every way normalises to the same text.
        typed: u8,
    },
    OutsideHours,
}

#[derive(Clone, Copy)]
struct Interaction {
    at: DateTime<Utc>,
    conversation: u32,
    outcome: Outcome,
    /// The rating that counts, if rated.
    rating: Option<i64>,
    /// An earlier rating it replaced.
    first_rating: Option<i64>,
}

/// One year of interactions, in time order.
struct Data {
    interactions: Vec<Interaction>,
    /// The customer of each conversation.
    customers: Vec<u16>,
    schedule: Schedule,
}

fn interaction_id(i: usize) -> String {
    format!("bench-ix-{i:07}")
}

fn conversation_id(c: u32) -> String {
    format!("bench-conv-{c:07}")
}

fn customer_id(c: u16) -> String {
    format!("bench-customer-{c:02}")
}

fn answer_id(a: u16) -> String {
    format!("answer-{a:03}")
}

/// The question answer `a` answers.
fn answer_question(a: u16) -> String {
    let a = usize::from(a);
    format!(
        "How long does delivery of {} to {} take?",
        ITEMS[a % ITEMS.len()],
        PLACES[(a / ITEMS.len() + a) % PLACES.len()]
    )
}

/// Unmatched question `q` as customer typed it the `typed`-th way.
fn typed_question(q: u16, typed: u8) -> String {
    let q = usize::from(q);
    let (item, place) = (ITEMS[q % ITEMS.len()], PLACES[q / ITEMS.len()]);
    match typed {
        0 => format!("Do you ship {item} to {place}?"),
        1 => format!(
            "DO YOU SHIP {} TO {}??",
            item.to_uppercase(),
            place.to_uppercase()
        ),
        2 => format!("  do you  ship {item} to {place}"),
        _ => format!("Dó yóu ship {item} to {place}... 🙏"),
    }
}

/// Unmatched question `q` as the report lists it.
fn normalised_question(q: u16) -> String {
    normalise(&typed_question(q, 0))
}

/// `size` interactions over the calendar's year, drawn with `seed`.
fn generate(size: usize, seed: u64, calendar: &Calendar) -> anyhow::Result<Data> {
    let mut rng = StdRng::seed_from_u64(seed);
    let schedule = schedule()?;
    let year: Vec<usize> = calendar.year_hours().collect();
    let hour_of = WeightedIndex::new(year.iter().map(|&h| weight(&calendar.hours[h])))?;
    let answer_of = WeightedIndex::new((0..ANSWERS).map(|k| 1.0 / (k as f64 + 1.0).powf(0.8)))?;
    let questions = ITEMS.len() * PLACES.len();
    let question_of = WeightedIndex::new((0..questions).map(|q| 1.0 / (q as f64 + 1.0)))?;
    let rating_of = WeightedIndex::new([5, 5, 15, 35, 40])?;
    let mut times: Vec<DateTime<Utc>> = (0..size)
        .map(|_| {
            let hour = &calendar.hours[year[hour_of.sample(&mut rng)]];
            hour.start + TimeDelta::milliseconds(rng.gen_range(0..3_600_000))
        })
        .collect();
    times.sort();
    let mut customers = Vec::new();
    let mut left_in_conversation = 0;
    let interactions = times
        .into_iter()
        .map(|at| {
            if left_in_conversation == 0 {
                customers.push(rng.gen_range(0..CUSTOMERS) as u16);
                left_in_conversation = rng.gen_range(1..=7);
            }
            left_in_conversation -= 1;
            let outcome = if !schedule.is_active(at) {
                Outcome::OutsideHours
            } else if rng.gen_bool(LOW_CONFIDENCE) {
                Outcome::LowConfidence {
                    milli: rng.gen_range(50..600),
                    question: question_of.sample(&mut rng) as u16,
                    typed: rng.gen_range(0..4),
                }
            } else {
                Outcome::Answered {
                    answer: answer_of.sample(&mut rng) as u16,
                    milli: 600 + (400.0 * rng.gen::<f64>().sqrt()).round() as i64,
                    response_ms: 150 + (rng.gen::<f64>().powi(2) * 2_850.0) as i64,
                }
            };
            let answered = matches!(outcome, Outcome::Answered { .. });
            let (rating, first_rating) = if answered && rng.gen_bool(RATED) {
                let first = rating_of.sample(&mut rng) as i64 + 1;
                if rng.gen_bool(RERATED) {
                    (Some(rating_of.sample(&mut rng) as i64 + 1), Some(first))
                } else {
                    (Some(first), None)
                }
            } else {
                (None, None)
            };
            Interaction {
                at,
                conversation: (customers.len() - 1) as u32,
                outcome,
                rating,
                first_rating,
            }
        })
        .collect();
    Ok(Data {
        interactions,
        customers,
        schedule,
    })
}

impl Data {
    fn mix(&self) -> Mix {
        let mut mix = Mix {
            interactions: self.interactions.len(),
            conversations: self.customers.len(),
            ..Mix::default()
        };
        for i in &self.interactions {
            match i.outcome {
                Outcome::Answered { .. } => mix.answered += 1,
                Outcome::LowConfidence { .. } => mix.low_confidence += 1,
                Outcome::OutsideHours => mix.outside_hours += 1,
            }
            mix.rated += usize::from(i.rating.is_some());
            mix.rerated += usize::from(i.first_rating.is_some());
        }
        mix
    }

    /// What a report over `[from, to)` at `granularity` must say: the buckets whose start
    /// is in the range, which hold the interactions from the first bucket start at or after
    /// `from` to the first at or after `to`.
    fn expect(
        &self,
        calendar: &Calendar,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        granularity: Granularity,
    ) -> Expected {
        let first = calendar.bucket_at_or_after(from, granularity);
        let end = calendar.bucket_at_or_after(to, granularity);
        let lo = self.interactions.partition_point(|i| i.at < first);
        let hi = self.interactions.partition_point(|i| i.at < end);
        let mut e = Expected::default();
        let mut answers: HashMap<u16, i64> = HashMap::new();
        let mut unmatched: HashMap<u16, i64> = HashMap::new();
        for i in &self.interactions[lo..hi] {
            e.interactions += 1;
            let bucket = e
                .buckets
                .entry(calendar.bucket(i.at, granularity))
                .or_default();
            bucket[0] += 1;
            match i.outcome {
                Outcome::Answered {
                    answer,
                    milli,
                    response_ms,
                } => {
                    e.successful += 1;
                    bucket[1] += 1;
                    e.response_ms += response_ms;
                    e.milli += milli;
                    e.confident += 1;
                    e.bins[(milli / 100).min(9) as usize] += 1;
                    *answers.entry(answer).or_default() += 1;
                }
                Outcome::LowConfidence {
                    milli, question, ..
                } => {
                    e.escalated += 1;
                    bucket[2] += 1;
                    e.milli += milli;
                    e.confident += 1;
                    e.bins[(milli / 100).min(9) as usize] += 1;
                    *unmatched.entry(question).or_default() += 1;
                }
                Outcome::OutsideHours => {
                    e.escalated += 1;
                    bucket[2] += 1;
                }
            }
            if let Some(rating) = i.rating {
                e.rating += rating;
                e.rated += 1;
            }
        }
        let mut answers: Vec<(String, i64)> = answers
            .into_iter()
            .map(|(a, n)| (answer_id(a), n))
            .collect();
        answers.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        answers.truncate(TOP_ANSWERS as usize);
        e.top_answers = answers;
        let mut unmatched: Vec<(String, i64)> = unmatched
            .into_iter()
            .map(|(q, n)| (normalised_question(q), n))
            .collect();
        unmatched.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        unmatched.truncate(TOP_UNMATCHED as usize);
        e.unmatched = unmatched;
        e
    }
}

/// A report's figures as the generated interactions give them.
#[derive(Default)]
struct Expected {
    interactions: i64,
    successful: i64,
    escalated: i64,
    response_ms: i64,
    milli: i64,
    confident: i64,
    rating: i64,
    rated: i64,
    bins: [i64; 10],
    /// Bucket start -> interactions, successful, escalated.
    buckets: BTreeMap<DateTime<Utc>, [i64; 3]>,
    top_answers: Vec<(String, i64)>,
    unmatched: Vec<(String, i64)>,
}

impl Expected {
    /// The first difference between `report` and these figures.
    fn check(&self, report: &ChatbotReport) -> Result<(), String> {
        if report.timezone != TIMEZONE {
            return Err(format!("timezone {}", report.timezone));
        }
        let t = &report.totals;
        let counts = [t.interactions, t.successful, t.escalated];
        let want = [self.interactions, self.successful, self.escalated];
        if counts != want {
            return Err(format!(
                "totals (interactions, successful, escalated) {counts:?}, expected {want:?}"
            ));
        }
        let average = |sum: i64, count: i64, scale: f64| {
            (count > 0).then(|| sum as f64 / count as f64 / scale)
        };
        let averages = [
            (
                "avg_response_ms",
                t.avg_response_ms,
                average(self.response_ms, self.successful, 1.0),
            ),
            (
                "avg_confidence",
                t.avg_confidence,
                average(self.milli, self.confident, 1000.0),
            ),
            (
                "avg_rating",
                t.avg_rating,
                average(self.rating, self.rated, 1.0),
            ),
        ];
        for (what, got, want) in averages {
            let close = match (got, want) {
                (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                (None, None) => true,
                _ => false,
            };
            if !close {
                return Err(format!("{what} {got:?}, expected {want:?}"));
            }
        }
        rates_agree(t)?;
        if report.buckets.len() != self.buckets.len() {
            return Err(format!(
                "{} buckets, expected {}",
                report.buckets.len(),
                self.buckets.len()
            ));
        }
        for (bucket, (start, want)) in report.buckets.iter().zip(&self.buckets) {
            let f = &bucket.figures;
            let got = [f.interactions, f.successful, f.escalated];
            if bucket.start != *start || got != *want {
                return Err(format!(
                    "bucket {} holds {got:?}, expected bucket {} with {want:?}",
                    timestamp(bucket.start),
                    timestamp(*start)
                ));
            }
        }
        let bins: Vec<i64> = report
            .confidence_histogram
            .iter()
            .map(|b| b.count)
            .collect();
        if bins != self.bins {
            return Err(format!(
                "confidence histogram {bins:?}, expected {:?}",
                self.bins
            ));
        }
        let answers: Vec<(String, i64)> = report
            .top_answers
            .iter()
            .map(|a| (a.answer_id.clone(), a.count))
            .collect();
        if answers != self.top_answers {
            return Err(format!(
                "top answers {answers:?}, expected {:?}",
                self.top_answers
            ));
        }
        for a in &report.top_answers {
            let id = a.answer_id.trim_start_matches("answer-").parse::<u16>();
            if a.question != id.ok().map(answer_question) {
                return Err(format!(
                    "answer {} has question {:?}",
                    a.answer_id, a.question
                ));
            }
        }
        let unmatched: Vec<(String, i64)> = report
            .unmatched_questions
            .iter()
            .map(|q| (q.text.clone(), q.count))
            .collect();
        if unmatched != self.unmatched {
            return Err(format!(
                "unmatched questions {unmatched:?}, expected {:?}",
                self.unmatched
            ));
        }
        Ok(())
    }
}

/// The rates agree with the counts they are made of.
fn rates_agree(t: &Figures) -> Result<(), String> {
    let share = |part: i64| {
        if t.interactions == 0 {
            0.0
        } else {
            part as f64 / t.interactions as f64
        }
    };
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12;
    if !close(t.success_rate, share(t.successful)) || !close(t.escalation_rate, share(t.escalated))
    {
        return Err(format!(
            "rates {} / {} for {} of {} successful",
            t.success_rate, t.escalation_rate, t.successful, t.interactions
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The real events, applied through the projection (the sample).

/// The key of every customer, created in `db` (as the inbound flow does).
async fn keys(db: &Database) -> anyhow::Result<Vec<CustomerKey>> {
    let mut keys = Vec::new();
    for c in 0..CUSTOMERS as u16 {
        keys.push(personal_data::key_for(db, ORGANIZATION, &customer_id(c)).await?);
    }
    Ok(keys)
}

/// The Bot and Conversation events of `data`, in log order.
fn events(data: &Data, calendar: &Calendar, keys: &[CustomerKey]) -> Vec<StoredEvent> {
    let mut pending: Vec<(
        DateTime<Utc>,
        &'static str,
        String,
        serde_json::Value,
        String,
    )> = Vec::new();
    let mut bot = |at: DateTime<Utc>, event: BotEvent| {
        let json = serde_json::to_value(&event).unwrap_or_default();
        pending.push((at, "Bot", BOT.to_string(), json, event.event_type()));
    };
    let created = calendar.year.0 - TimeDelta::days(1);
    bot(
        created,
        BotEvent::BotCreated {
            organization: ORGANIZATION.into(),
            name: "Bench bot".into(),
            confidence_threshold: domain::bot::DEFAULT_CONFIDENCE_THRESHOLD,
            channel_ids: vec![],
        },
    );
    for a in 0..ANSWERS as u16 {
        bot(
            created + TimeDelta::seconds(1 + i64::from(a)),
            BotEvent::BotAnswerAdded {
                answer: BotAnswer {
                    answer_id: answer_id(a),
                    question: answer_question(a),
                    answer: format!("Usually {} working days.", 2 + a % 5),
                    keywords: vec![],
                },
            },
        );
    }
    bot(
        created + TimeDelta::hours(1),
        BotEvent::BotScheduleSet {
            schedule: data.schedule.clone(),
        },
    );
    let mut conversation = |at: DateTime<Utc>, c: u32, event: ConversationEvent| {
        let json = serde_json::to_value(&event).unwrap_or_default();
        let id = conversation_id(c);
        pending.push((at, "Conversation", id, json, event.event_type()));
    };
    let mut started = None;
    for (i, x) in data.interactions.iter().enumerate() {
        let customer = data.customers[x.conversation as usize];
        let key = &keys[usize::from(customer)];
        if started != Some(x.conversation) {
            started = Some(x.conversation);
            let event = ConversationEvent::ConversationStarted {
                organization: ORGANIZATION.into(),
                channel: Channel::Whatsapp,
                channel_id: "bench-whatsapp".into(),
                customer_id: customer_id(customer),
                external_id: key.seal(&format!("+1 555 010 {customer:04}")),
                customer_name: Some(key.seal(&format!("Customer {customer}"))),
            };
            conversation(x.at, x.conversation, event);
        }
        let id = interaction_id(i);
        let event = match x.outcome {
            Outcome::Answered {
                answer,
                milli,
                response_ms,
            } => ConversationEvent::BotAnswered {
                interaction_id: id.clone(),
                bot_id: BOT.into(),
                answer_id: answer_id(answer),
                confidence: milli as f64 / 1000.0,
                response_ms,
                question: key.seal(&answer_question(answer)),
                message_id: format!("{id}-answer"),
            },
            Outcome::LowConfidence {
                milli,
                question,
                typed,
            } => ConversationEvent::BotHandedOff {
                interaction_id: id.clone(),
                bot_id: BOT.into(),
                reason: HandOffReason::LowConfidence,
                confidence: Some(milli as f64 / 1000.0),
                question: key.seal(&typed_question(question, typed)),
            },
            Outcome::OutsideHours => ConversationEvent::BotHandedOff {
                interaction_id: id.clone(),
                bot_id: BOT.into(),
                reason: HandOffReason::OutsideHours,
                confidence: None,
                question: key.seal("hello, anyone there?"),
            },
        };
        conversation(x.at, x.conversation, event);
        // Rated a little later; a second rating later still.
        let ratings = [(x.first_rating, 60), (x.rating, 600)];
        let ratings = ratings.iter().filter_map(|(r, s)| r.map(|r| (r, *s)));
        for (rating, seconds) in ratings {
            let event = ConversationEvent::BotInteractionRated {
                interaction_id: id.clone(),
                rating: rating as i32,
            };
            conversation(x.at + TimeDelta::seconds(seconds), x.conversation, event);
        }
    }
    // Log order: by time (stable, so a conversation starts before its first interaction).
    pending.sort_by_key(|p| p.0);
    let mut sequences: HashMap<String, i64> = HashMap::new();
    pending
        .into_iter()
        .enumerate()
        .map(|(index, (at, kind, id, payload, event_type))| {
            let sequence = sequences.entry(id.clone()).or_default();
            *sequence += 1;
            let request = format!("bench-req-{index}");
            StoredEvent {
                checkpoint: Checkpoint {
                    tx_id: 1 + index as i64 / BATCH_SIZE,
                    position: index as i64 + 1,
                },
                aggregate_type: kind.into(),
                aggregate_id: id,
                sequence: *sequence,
                event_type,
                event_version: "1.0".into(),
                payload: serde_json::value::to_raw_value(&payload)
                    .expect("a JSON value serializes"),
                metadata: EventMetadata {
                    organization: ORGANIZATION.into(),
                    actor: match kind {
                        "Bot" => Actor::new("bench-admin", Role::Admin),
                        _ => Actor::new("whatsapp-bridge", Role::Service),
                    },
                    occurred_at: at,
                    request_id: request.clone(),
                    correlation_id: request,
                    causation_id: None,
                },
            }
        })
        .collect()
}

/// Applies `events` through the projection, `BATCH_SIZE` per transaction, as the runner does.
async fn apply_events(db: &Database, events: &[StoredEvent]) -> anyhow::Result<Duration> {
    let progress = progress_bar(events.len() as u64, "events through the projection")?;
    let started = Instant::now();
    for chunk in events.chunks(BATCH_SIZE as usize) {
        let mut tx = db.begin().await?;
        for event in chunk {
            ChatbotAnalyticsProjection
                .apply(&mut tx, event)
                .await
                .with_context(|| format!("applying event {}", event.position()))?;
        }
        tx.commit().await?;
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();
    Ok(started.elapsed())
}

// ---------------------------------------------------------------------------------------
// The same rows, computed here and inserted directly.

/// A value of a row.
enum Cell {
    Text(String),
    Int(i64),
    NullInt,
}

/// The rows of one table.
struct Table {
    name: &'static str,
    columns: &'static [&'static str],
    rows: Vec<Vec<Cell>>,
}

/// The bucket columns of an hour, as the projection stores them.
struct Stamps {
    hour_start: String,
    day_start: String,
    day_end: String,
    week_start: String,
    local_date: String,
    local_hour: i64,
}

/// Every row the projection would write for `data`, by table.
fn bulk_rows(data: &Data, calendar: &Calendar) -> anyhow::Result<Vec<Table>> {
    use Cell::{Int, NullInt, Text};
    let text = |s: &str| Text(s.to_string());
    // The bucket columns of every hour that holds an interaction (per UTC hour: New York's
    // offsets are whole hours, so every instant of a UTC hour has the same slot).
    let mut stamps: HashMap<usize, Stamps> = HashMap::new();
    for x in &data.interactions {
        stamps.entry(calendar.index(x.at)).or_insert_with(|| {
            let slot = chatbot::slot(TIMEZONE, x.at);
            Stamps {
                hour_start: timestamp(slot.hour_start),
                day_start: timestamp(slot.day_start),
                day_end: timestamp(slot.day_end),
                week_start: timestamp(slot.week_start),
                local_date: slot.local_date.format("%Y-%m-%d").to_string(),
                local_hour: i64::from(slot.local_hour),
            }
        });
    }
    let mut interactions = Vec::with_capacity(data.interactions.len());
    let mut unmatched = Vec::new();
    // hour -> interactions, successful, escalated, response, milli, confident, rating, rated
    let mut hours: BTreeMap<usize, [i64; 8]> = BTreeMap::new();
    let mut confidence: BTreeMap<(usize, i64), i64> = BTreeMap::new();
    let mut answer_uses: BTreeMap<(usize, u16), i64> = BTreeMap::new();
    // Day rows, keyed by the day's start text and an hour of the day (for its stamps).
    let mut confidence_days: BTreeMap<(String, i64), (usize, i64)> = BTreeMap::new();
    let mut answer_days: BTreeMap<(String, String), (usize, i64)> = BTreeMap::new();
    let mut unmatched_days: BTreeMap<(String, String), (usize, i64)> = BTreeMap::new();
    for (i, x) in data.interactions.iter().enumerate() {
        let hour = calendar.index(x.at);
        let s = &stamps[&hour];
        let id = interaction_id(i);
        interactions.push(vec![
            Text(id.clone()),
            text(BOT),
            text(ORGANIZATION),
            text(&s.day_start),
            text(&s.hour_start),
            x.rating.map_or(NullInt, Int),
        ]);
        let sums = hours.entry(hour).or_default();
        sums[0] += 1;
        if let Some(rating) = x.rating {
            sums[6] += rating;
            sums[7] += 1;
        }
        let milli = match x.outcome {
            Outcome::Answered {
                answer,
                milli,
                response_ms,
            } => {
                sums[1] += 1;
                sums[3] += response_ms;
                *answer_uses.entry((hour, answer)).or_default() += 1;
                let day = (s.day_start.clone(), answer_id(answer));
                answer_days.entry(day).or_insert((hour, 0)).1 += 1;
                Some(milli)
            }
            Outcome::LowConfidence {
                milli,
                question,
                typed,
            } => {
                sums[2] += 1;
                let question = normalise(&typed_question(question, typed));
                let customer = data.customers[x.conversation as usize];
                unmatched.push(vec![
                    Text(id),
                    text(BOT),
                    text(ORGANIZATION),
                    Text(customer_id(customer)),
                    text(&s.day_start),
                    text(&s.hour_start),
                    text(&s.day_end),
                    text(&question),
                ]);
                let day = (s.day_start.clone(), question);
                unmatched_days.entry(day).or_insert((hour, 0)).1 += 1;
                Some(milli)
            }
            Outcome::OutsideHours => {
                sums[2] += 1;
                None
            }
        };
        if let Some(milli) = milli {
            sums[4] += milli;
            sums[5] += 1;
            let bin = (milli / 100).clamp(0, 9);
            *confidence.entry((hour, bin)).or_default() += 1;
            let day = (s.day_start.clone(), bin);
            confidence_days.entry(day).or_insert((hour, 0)).1 += 1;
        }
    }
    let stamp = |hour: &usize| &stamps[hour];
    let mut customers = Vec::with_capacity(data.customers.len());
    for (c, customer) in data.customers.iter().enumerate() {
        customers.push(vec![
            Text(conversation_id(c as u32)),
            Text(customer_id(*customer)),
        ]);
    }
    let tables = vec![
        Table {
            name: "chatbot_bots",
            columns: &["bot_id", "organization_id", "timezone"],
            rows: vec![vec![text(BOT), text(ORGANIZATION), text(TIMEZONE)]],
        },
        Table {
            name: "chatbot_answers",
            columns: &["bot_id", "answer_id", "question"],
            rows: (0..ANSWERS as u16)
                .map(|a| vec![text(BOT), Text(answer_id(a)), Text(answer_question(a))])
                .collect(),
        },
        Table {
            name: "chatbot_customers",
            columns: &["conversation_id", "customer_id"],
            rows: customers,
        },
        Table {
            name: "chatbot_interactions",
            columns: &[
                "interaction_id",
                "bot_id",
                "organization_id",
                "day_start",
                "hour_start",
                "rating",
            ],
            rows: interactions,
        },
        Table {
            name: "chatbot_hours",
            columns: &[
                "bot_id",
                "day_start",
                "hour_start",
                "week_start",
                "local_date",
                "local_hour",
                "interactions",
                "successful",
                "escalated",
                "response_ms_sum",
                "confidence_milli_sum",
                "confidence_count",
                "rating_sum",
                "rating_count",
            ],
            rows: hours
                .iter()
                .map(|(hour, sums)| {
                    let s = stamp(hour);
                    let mut row = vec![
                        text(BOT),
                        text(&s.day_start),
                        text(&s.hour_start),
                        text(&s.week_start),
                        text(&s.local_date),
                        Int(s.local_hour),
                    ];
                    row.extend(sums.iter().map(|v| Int(*v)));
                    row
                })
                .collect(),
        },
        Table {
            name: "chatbot_confidence",
            columns: &[
                "bot_id",
                "day_start",
                "hour_start",
                "day_end",
                "bin",
                "entries",
            ],
            rows: confidence
                .iter()
                .map(|((hour, bin), n)| {
                    let s = stamp(hour);
                    vec![
                        text(BOT),
                        text(&s.day_start),
                        text(&s.hour_start),
                        text(&s.day_end),
                        Int(*bin),
                        Int(*n),
                    ]
                })
                .collect(),
        },
        Table {
            name: "chatbot_confidence_days",
            columns: &[
                "bot_id",
                "day_start",
                "day_end",
                "week_start",
                "bin",
                "entries",
            ],
            rows: confidence_days
                .iter()
                .map(|((day, bin), (hour, n))| {
                    let s = stamp(hour);
                    vec![
                        text(BOT),
                        text(day),
                        text(&s.day_end),
                        text(&s.week_start),
                        Int(*bin),
                        Int(*n),
                    ]
                })
                .collect(),
        },
        Table {
            name: "chatbot_answer_uses",
            columns: &[
                "bot_id",
                "day_start",
                "hour_start",
                "day_end",
                "answer_id",
                "entries",
            ],
            rows: answer_uses
                .iter()
                .map(|((hour, answer), n)| {
                    let s = stamp(hour);
                    vec![
                        text(BOT),
                        text(&s.day_start),
                        text(&s.hour_start),
                        text(&s.day_end),
                        Text(answer_id(*answer)),
                        Int(*n),
                    ]
                })
                .collect(),
        },
        Table {
            name: "chatbot_answer_days",
            columns: &[
                "bot_id",
                "day_start",
                "day_end",
                "week_start",
                "answer_id",
                "entries",
            ],
            rows: answer_days
                .iter()
                .map(|((day, answer), (hour, n))| {
                    let s = stamp(hour);
                    vec![
                        text(BOT),
                        text(day),
                        text(&s.day_end),
                        text(&s.week_start),
                        text(answer),
                        Int(*n),
                    ]
                })
                .collect(),
        },
        Table {
            name: "chatbot_unmatched",
            columns: &[
                "interaction_id",
                "bot_id",
                "organization_id",
                "customer_id",
                "day_start",
                "hour_start",
                "day_end",
                "question",
            ],
            rows: unmatched,
        },
        Table {
            name: "chatbot_unmatched_days",
            columns: &[
                "bot_id",
                "day_start",
                "day_end",
                "week_start",
                "question",
                "entries",
            ],
            rows: unmatched_days
                .iter()
                .map(|((day, question), (hour, n))| {
                    let s = stamp(hour);
                    vec![
                        text(BOT),
                        text(day),
                        text(&s.day_end),
                        text(&s.week_start),
                        text(question),
                        Int(*n),
                    ]
                })
                .collect(),
        },
    ];
    // Every table the projection owns is written here, and nothing else.
    let mut ours: Vec<&str> = tables.iter().map(|t| t.name).collect();
    let mut theirs: Vec<&str> = ChatbotAnalyticsProjection.tables().to_vec();
    ours.sort_unstable();
    theirs.sort_unstable();
    if ours != theirs {
        bail!("the projection owns {theirs:?}; the bench fills {ours:?}");
    }
    Ok(tables)
}

/// Inserts `tables`, `BATCH` rows per statement, one transaction per table.
async fn insert_tables(db: &Database, tables: Vec<Table>) -> anyhow::Result<()> {
    let total: usize = tables.iter().map(|t| t.rows.len()).sum();
    let progress = progress_bar(total as u64, "rows inserted")?;
    for table in tables {
        let width = table.columns.len();
        let mut rows = table.rows.into_iter();
        let mut tx = db.begin().await?;
        loop {
            let chunk: Vec<Vec<Cell>> = rows.by_ref().take(BATCH).collect();
            if chunk.is_empty() {
                break;
            }
            let mut sql = format!(
                "INSERT INTO {} ({}) VALUES ",
                table.name,
                table.columns.join(", ")
            );
            for r in 0..chunk.len() {
                sql.push_str(if r == 0 { "(" } else { ", (" });
                for c in 0..width {
                    let sep = if c == 0 { "" } else { ", " };
                    let _ = write!(sql, "{sep}${}", r * width + c + 1);
                }
                sql.push(')');
            }
            let n = chunk.len() as u64;
            on_backend!(&mut tx, |t| {
                let mut query = sqlx::query(&sql);
                for cell in chunk.into_iter().flatten() {
                    query = match cell {
                        Cell::Text(value) => query.bind(value),
                        Cell::Int(value) => query.bind(value),
                        Cell::NullInt => query.bind(None::<i64>),
                    };
                }
                query
                    .execute(&mut **t)
                    .await
                    .with_context(|| format!("inserting into {}", table.name))?;
            });
            progress.inc(n);
        }
        tx.commit().await?;
    }
    progress.finish_and_clear();
    Ok(())
}

/// Statistics (and on PostgreSQL the visibility map) as a running system would have them.
async fn analyse(db: &Database) -> anyhow::Result<()> {
    match db {
        Backend::Postgres(pool) => {
            for table in ChatbotAnalyticsProjection.tables() {
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

// ---------------------------------------------------------------------------------------
// The equivalence check.

/// Drives a sample year through the projection and through the bulk insert, into two fresh
/// databases of `backend`, and fails unless every table holds the same rows.
async fn check_sample(
    args: &Args,
    backend: &'static str,
    calendar: &Calendar,
) -> anyhow::Result<SampleCheck> {
    let size = args.chatbot_sample as usize;
    eprintln!(
        "chatbot-report / {backend}: checking the direct insert against the projection on \
         {size} interactions"
    );
    let data = generate(size, 7, calendar)?;
    let both = |real: String, short: String| {
        let data = &data;
        async move {
            let real = Database::connect(Some(&real)).await?;
            let short = Database::connect(Some(&short)).await?;
            let checked = async {
                real.migrate().await?;
                short.migrate().await?;
                let sealing = keys(&real).await?;
                let events = events(data, calendar, &sealing);
                let projection = apply_events(&real, &events).await?;
                keys(&short).await?;
                insert_tables(&short, bulk_rows(data, calendar)?).await?;
                let (rows, tables) = compare(&real, &short).await?;
                anyhow::Ok(SampleCheck {
                    interactions: data.interactions.len(),
                    events: events.len(),
                    projection,
                    rows,
                    tables,
                })
            }
            .await;
            real.close().await;
            short.close().await;
            checked
        }
    };
    if backend == "postgres" {
        let server = PgServer::connect(&args.postgres_url).await?;
        let checked = async {
            let real = server.create_database("bench_chatbot_projected").await?;
            let short = server.create_database("bench_chatbot_inserted").await?;
            both(real, short).await
        }
        .await;
        let dropped = if args.keep_databases {
            server.keep_databases().await;
            Ok(())
        } else {
            server.drop_databases().await
        };
        let checked = checked?;
        dropped?;
        Ok(checked)
    } else {
        let real = SqliteFolder::new(args.sqlite_path.as_deref())?;
        let short = SqliteFolder::new(args.sqlite_path.as_deref())?;
        let url = |f: &SqliteFolder| format!("sqlite://{}", f.file.display());
        let checked = both(url(&real), url(&short)).await;
        for folder in [real, short] {
            if args.keep_databases {
                eprintln!("kept the SQLite database {}", folder.file.display());
            } else {
                folder.remove();
            }
        }
        checked
    }
}

/// Every row of every table of the projection in `a` and `b`, compared as text; returns
/// the rows and tables compared.
async fn compare(a: &Database, b: &Database) -> anyhow::Result<(usize, usize)> {
    let mut compared = 0;
    let tables = ChatbotAnalyticsProjection.tables();
    for table in tables {
        let (left, right) = (dump(a, table).await?, dump(b, table).await?);
        if left.is_empty() {
            bail!("the sample left {table} empty: the comparison would prove nothing");
        }
        if let Some(k) = (0..left.len().max(right.len())).find(|&k| left.get(k) != right.get(k)) {
            bail!(
                "the direct insert differs from the projection in {table} ({} rows projected, \
                 {} inserted); first difference, in sorted order:\n  projected {:?}\n  \
                 inserted  {:?}",
                left.len(),
                right.len(),
                left.get(k),
                right.get(k)
            );
        }
        compared += left.len();
    }
    Ok((compared, tables.len()))
}

/// The rows of `table`, every column as text, sorted.
async fn dump(db: &Database, table: &str) -> anyhow::Result<Vec<Vec<Option<String>>>> {
    let columns: Vec<String> = match db {
        Backend::Postgres(pool) => {
            sqlx::query_scalar(
                "SELECT CAST(column_name AS text) FROM information_schema.columns
                  WHERE table_schema = current_schema() AND table_name = $1
                  ORDER BY ordinal_position",
            )
            .bind(table)
            .fetch_all(pool)
            .await?
        }
        Backend::Sqlite(pool) => {
            sqlx::query_scalar("SELECT name FROM pragma_table_info($1) ORDER BY cid")
                .bind(table)
                .fetch_all(pool)
                .await?
        }
    };
    if columns.is_empty() {
        bail!("table {table} has no columns");
    }
    let list: Vec<String> = columns
        .iter()
        .map(|c| format!("CAST({c} AS text)"))
        .collect();
    let order: Vec<String> = (1..=columns.len()).map(|k| k.to_string()).collect();
    let sql = format!(
        "SELECT {} FROM {table} ORDER BY {}",
        list.join(", "),
        order.join(", ")
    );
    Ok(on_backend!(db, |pool| {
        let rows = sqlx::query(&sql).fetch_all(pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut values = Vec::with_capacity(columns.len());
            for k in 0..columns.len() {
                values.push(row.try_get::<Option<String>, _>(k)?);
            }
            out.push(values);
        }
        out
    }))
}

// ---------------------------------------------------------------------------------------
// Plans.

/// The plans of the report's statements on PostgreSQL, as `auto_explain` logs them (with
/// ANALYZE and BUFFERS) on a connection of its own; and the statement texts.
async fn explain_postgres(
    url: &str,
    ranges: &[(&str, Granularity, Range)],
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
    for (what, granularity, (from, to)) in ranges {
        // The plans of the last run: by then PostgreSQL may have switched the connection's
        // prepared statements to generic plans (after five runs), as in the measured loop.
        let mut wall = Duration::ZERO;
        for _ in 0..EXPLAIN_RUNS {
            notices.lock().unwrap_or_else(|e| e.into_inner()).clear();
            let started = Instant::now();
            let report = chatbot::report(&db, ORGANIZATION, BOT, *from, *to, *granularity)
                .with_subscriber(dispatch.clone())
                .await;
            wall = started.elapsed();
            report?;
        }
        let logged = std::mem::take(&mut *notices.lock().unwrap_or_else(|e| e.into_inner()));
        if logged.is_empty() {
            bail!("auto_explain logged nothing");
        }
        // "duration: 1.2 ms  plan:\n...": the server's time of each statement.
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
        let listed: Vec<String> = durations.iter().map(|d| format!("{d:.1}")).collect();
        let _ = writeln!(
            out,
            "-- report {what}, {} to {}, run {EXPLAIN_RUNS} on the connection: {:.1} ms in \
             the server ({} ms), {:.1} ms in the bench (timing overhead included)",
            timestamp(*from),
            timestamp(*to),
            durations.iter().sum::<f64>(),
            listed.join(" + "),
            wall.as_secs_f64() * 1e3
        );
        for notice in logged {
            // "duration: 1.2 ms  plan:\nQuery Text: SELECT ...\n<plan lines>"
            let mut lines = notice.lines();
            let _ = writeln!(out, "   -- {}", lines.next().unwrap_or_default());
            let mut text = Vec::new();
            let mut in_text = true;
            for line in lines {
                in_text &= !line.contains("(cost=");
                if in_text {
                    text.push(line.trim_start_matches("Query Text: ").trim());
                } else {
                    let _ = writeln!(out, "   {line}");
                }
            }
            let sql = text.join(" ");
            if !statements.contains(&sql) {
                statements.push(sql);
            }
        }
    }
    db.close().await;
    Ok((out, statements))
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

/// SQLite's `EXPLAIN QUERY PLAN` of the statements captured on PostgreSQL (the same texts,
/// but for PostgreSQL's bytewise collation), with NULL parameters (the planner does not
/// look at them).
async fn explain_sqlite(db: &Database, statements: &[String]) -> anyhow::Result<String> {
    let Backend::Sqlite(pool) = db else {
        bail!("not SQLite");
    };
    if statements.is_empty() {
        return Ok(
            "   (no plans: the statement texts are captured on PostgreSQL, which did \
                   not run or gave none)\n"
                .into(),
        );
    }
    let mut out = String::new();
    for sql in statements {
        let sql = sql.replace(" COLLATE \"C\"", "");
        let parameters = (1..=9).filter(|k| sql.contains(&format!("${k}"))).count();
        let _ = writeln!(out, "-- {sql}");
        let plan = format!("EXPLAIN QUERY PLAN {sql}");
        let mut query = sqlx::query_as::<_, (i64, i64, i64, String)>(&plan);
        for _ in 0..parameters {
            query = query.bind(None::<String>);
        }
        for (_, _, _, detail) in query.fetch_all(pool).await? {
            let _ = writeln!(out, "   {detail}");
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// The table.

/// Prints the table (and the plans) on stdout.
pub fn print_report(args: &Args, runs: &[ChatbotRun]) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "\nchatbot-report: one bot ({TIMEZONE}), {} interactions over the local year {}-{:02}-{:02} \
         to {}-{:02}-{:02} (rows inserted directly, checked against the projection on {}), \
         {} calls per report, one client, {cores} cores",
        args.chatbot_interactions,
        YEAR[0].0,
        YEAR[0].1,
        YEAR[0].2,
        YEAR[1].0,
        YEAR[1].1,
        YEAR[1].2,
        args.chatbot_sample,
        args.chatbot_reports
    );
    if let Some(run) = runs.first() {
        let m = run.mix;
        let pct = |n: usize| 100.0 * n as f64 / m.interactions.max(1) as f64;
        println!(
            "mix: {:.1} % answered, {:.1} % low-confidence and {:.1} % outside-hours hand-offs, \
             {:.1} % rated ({} rated twice), {} conversations",
            pct(m.answered),
            pct(m.low_confidence),
            pct(m.outside_hours),
            pct(m.rated),
            m.rerated,
            m.conversations
        );
    }
    for run in runs {
        let s = &run.sample;
        let per_second = s.events as f64 / s.projection.as_secs_f64().max(f64::EPSILON);
        let full = args.chatbot_interactions as f64 * s.events as f64
            / s.interactions.max(1) as f64
            / per_second;
        println!(
            "{}: sample of {} interactions ({} events) through the projection in {:.1} s \
             ({per_second:.0} events/s, so ~{:.1} min for the full year); equal to the direct \
             insert in all {} tables ({} rows)",
            run.backend,
            s.interactions,
            s.events,
            s.projection.as_secs_f64(),
            full / 60.0,
            s.tables,
            s.rows
        );
        let rows: Vec<String> = run
            .rows
            .iter()
            .map(|(table, n)| format!("{} {n}", table.trim_start_matches("chatbot_")))
            .collect();
        println!(
            "{}: set-up {:.1} s; rows: {}",
            run.backend,
            run.setup.as_secs_f64(),
            rows.join(", ")
        );
    }
    println!(
        "\n{:<9} {:<22} {:>11} {}",
        "backend",
        "report",
        "buckets",
        quantile_header()
    );
    for run in runs {
        for (name, (least, most), latency) in &run.reports {
            let buckets = if least == most {
                least.to_string()
            } else {
                format!("{least}-{most}")
            };
            println!(
                "{:<9} {:<22} {:>11} {}",
                run.backend,
                name,
                buckets,
                quantile_columns(latency)
            );
        }
    }
    for run in runs.iter().filter(|r| !r.plans.is_empty()) {
        println!("\n{}: plans\n{}", run.backend, run.plans);
    }
}
