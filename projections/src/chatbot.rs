//! Chatbot analytics (issue 5; seed cloudchat-ten-features.md, Fitur 2): the
//! "chatbot_analytics" projection and the report read from it.
//!
//! Every interaction of a bot with a customer is either *successful* (`BotAnswered`) or
//! *escalated* (`BotHandedOff`, for low confidence or outside the active hours). It is
//! counted once, when applied, in the hourly bucket of the bot's **own local time** (its
//! schedule's IANA timezone, Asia/Jakarta until one is set) — so the figures of a DST change
//! day are exact: the fall-back day has 25 hourly buckets (two labelled 01:00, with
//! different UTC starts) and the spring-forward day 23. A later change of timezone buckets
//! later interactions only; the past keeps the buckets it was counted in.
//!
//! A bucket's `start` is a UTC instant: the start of the local hour (at the UTC offset of
//! the interactions it holds), the local midnight of its day, or the local midnight of the
//! Monday that starts its week (weeks run Monday to Sunday, ISO 8601). Each hourly row
//! carries its day's and week's starts, so a DAY or WEEK report is one `GROUP BY` over at
//! most 24 × 366 rows per bot and year, whatever the number of interactions.
//!
//! Alongside the hourly figures: a confidence histogram (ten bins of 0.1, 1.0 in the last),
//! how often each answer was given, and the *unmatched questions* (low-confidence
//! hand-offs). These are counted per hour and rolled up per local day; a report sums the
//! day rows of the days its range covers whole and the hour rows of the (at most two) days
//! the range cuts — exact at the hour, at the cost of about one row per day and key.
//!
//! The unmatched questions are personal data sealed with the customer's key: they are
//! opened here, normalised ([`domain::menu::normalise`]) so that the same question counts
//! once however it was typed, and skipped when the key is gone — so that a rebuild after a
//! customer's erasure equals the live tables after [`forget_customer`] removed their rows.
//!
//! Confidences are kept in thousandths (the scorer rounds to three decimals), so every sum
//! is an exact integer and a rebuild reproduces the figures bit for bit on both backends.

use async_trait::async_trait;
use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, Offset, TimeZone, Timelike, Utc};
use domain::bot::BotEvent;
use domain::conversation::{ConversationEvent, HandOffReason, Sealed};
use domain::menu::normalise;
use domain::schedule::{parse_timezone, DEFAULT_TIMEZONE};

use crate::db::{parse_timestamp, timestamp, Backend, Database, DbError, Tx};
use crate::event_log::StoredEvent;
use crate::on_backend;
use crate::personal_data::CustomerKey;
use crate::runner::Projection;

/// The projection's name (`helpdesk replay --projection chatbot_analytics`).
pub const PROJECTION_NAME: &str = "chatbot_analytics";

/// How many answers the report lists.
pub const TOP_ANSWERS: i64 = 10;

/// How many unmatched questions the report lists.
pub const TOP_UNMATCHED: i64 = 50;

/// Bins of the confidence histogram, each 0.1 wide.
pub const CONFIDENCE_BINS: i64 = 10;

/// Every table the projection owns; a rebuild empties them all.
const TABLES: &[&str] = &[
    "chatbot_bots",
    "chatbot_answers",
    "chatbot_customers",
    "chatbot_interactions",
    "chatbot_hours",
    "chatbot_confidence",
    "chatbot_confidence_days",
    "chatbot_answer_uses",
    "chatbot_answer_days",
    "chatbot_unmatched",
    "chatbot_unmatched_days",
];

/// Builds the chatbot analytics tables from Bot and Conversation events.
#[derive(Debug, Default)]
pub struct ChatbotAnalyticsProjection;

#[async_trait]
impl Projection for ChatbotAnalyticsProjection {
    fn name(&self) -> &'static str {
        PROJECTION_NAME
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["Bot", "Conversation"]
    }

    fn tables(&self) -> &'static [&'static str] {
        TABLES
    }

    async fn apply(&self, tx: &mut Tx, event: &StoredEvent) -> Result<(), DbError> {
        match event.aggregate_type.as_str() {
            "Bot" => apply_bot(tx, event).await,
            "Conversation" => apply_conversation(tx, event).await,
            _ => Ok(()),
        }
    }
}

async fn apply_bot(tx: &mut Tx, event: &StoredEvent) -> Result<(), DbError> {
    let bot_id = event.aggregate_id.as_str();
    match event.decode::<BotEvent>()? {
        BotEvent::BotCreated { organization, .. } => {
            on_backend!(tx, |t| {
                sqlx::query(
                    "INSERT INTO chatbot_bots (bot_id, organization_id, timezone)
                     VALUES ($1, $2, $3)",
                )
                .bind(bot_id)
                .bind(&organization)
                .bind(DEFAULT_TIMEZONE)
                .execute(&mut **t)
                .await?;
            });
        }
        BotEvent::BotAnswerAdded { answer } => {
            on_backend!(tx, |t| {
                sqlx::query(
                    "INSERT INTO chatbot_answers (bot_id, answer_id, question) VALUES ($1, $2, $3)",
                )
                .bind(bot_id)
                .bind(&answer.answer_id)
                .bind(&answer.question)
                .execute(&mut **t)
                .await?;
            });
        }
        BotEvent::BotScheduleSet { schedule } => {
            on_backend!(tx, |t| {
                sqlx::query("UPDATE chatbot_bots SET timezone = $2 WHERE bot_id = $1")
                    .bind(bot_id)
                    .bind(&schedule.timezone)
                    .execute(&mut **t)
                    .await?;
            });
        }
    }
    Ok(())
}

async fn apply_conversation(tx: &mut Tx, event: &StoredEvent) -> Result<(), DbError> {
    match event.decode::<ConversationEvent>()? {
        ConversationEvent::ConversationStarted { customer_id, .. } => {
            on_backend!(tx, |t| {
                sqlx::query(
                    "INSERT INTO chatbot_customers (conversation_id, customer_id) VALUES ($1, $2)",
                )
                .bind(&event.aggregate_id)
                .bind(&customer_id)
                .execute(&mut **t)
                .await?;
            });
        }
        ConversationEvent::BotAnswered {
            interaction_id,
            bot_id,
            answer_id,
            confidence,
            response_ms,
            ..
        } => {
            let interaction = Interaction {
                interaction_id: &interaction_id,
                bot_id: &bot_id,
                answered: Some((&answer_id, response_ms)),
                confidence: Some(confidence),
                unmatched: None,
            };
            record(tx, event, interaction).await?;
        }
        ConversationEvent::BotHandedOff {
            interaction_id,
            bot_id,
            reason,
            confidence,
            question,
            ..
        } => {
            let interaction = Interaction {
                interaction_id: &interaction_id,
                bot_id: &bot_id,
                answered: None,
                confidence,
                // Outside hours nothing was matched against the answers: not "unmatched".
                unmatched: (reason == HandOffReason::LowConfidence).then_some(&question),
            };
            record(tx, event, interaction).await?;
        }
        ConversationEvent::BotInteractionRated {
            interaction_id,
            rating,
        } => rate(tx, &interaction_id, i64::from(rating)).await?,
        _ => {}
    }
    Ok(())
}

/// One interaction as an event describes it.
struct Interaction<'a> {
    interaction_id: &'a str,
    bot_id: &'a str,
    /// The answer given and the response time, when the bot answered.
    answered: Option<(&'a str, i64)>,
    confidence: Option<f64>,
    /// The customer's question, when it was a low-confidence hand-off.
    unmatched: Option<&'a Sealed>,
}

/// The bucket columns of a row, as stored.
struct Stamps {
    hour_start: String,
    day_start: String,
    day_end: String,
    week_start: String,
}

async fn record(
    tx: &mut Tx,
    event: &StoredEvent,
    interaction: Interaction<'_>,
) -> Result<(), DbError> {
    let bot: Option<(String, String)> = on_backend!(tx, |t| sqlx::query_as(
        "SELECT organization_id, timezone FROM chatbot_bots WHERE bot_id = $1"
    )
    .bind(interaction.bot_id)
    .fetch_optional(&mut **t)
    .await?);
    // The inbound flow reads the bot before it records an interaction, so its creation is
    // always earlier in the log: a missing bot is a broken log, not a case to guess about.
    let (organization, timezone) = bot.ok_or_else(|| {
        DbError::Corrupt(format!(
            "interaction {} names bot {}, which was never created",
            interaction.interaction_id, interaction.bot_id
        ))
    })?;
    let slot = slot(&timezone, event.occurred_at());
    let stamps = Stamps {
        hour_start: timestamp(slot.hour_start),
        day_start: timestamp(slot.day_start),
        day_end: timestamp(slot.day_end),
        week_start: timestamp(slot.week_start),
    };
    let inserted = on_backend!(tx, |t| sqlx::query(
        "INSERT INTO chatbot_interactions (interaction_id, bot_id, organization_id, day_start,
            hour_start)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (interaction_id) DO NOTHING",
    )
    .bind(interaction.interaction_id)
    .bind(interaction.bot_id)
    .bind(&organization)
    .bind(&stamps.day_start)
    .bind(&stamps.hour_start)
    .execute(&mut **t)
    .await?
    .rows_affected());
    if inserted == 0 {
        // Already counted: an interaction is recorded once, whatever repeats it.
        return Ok(());
    }
    let successful = i64::from(interaction.answered.is_some());
    let response_ms = interaction.answered.map_or(0, |(_, ms)| ms);
    let confidence = interaction.confidence.map(thousandths);
    on_backend!(tx, |t| {
        sqlx::query(
            "INSERT INTO chatbot_hours (bot_id, day_start, hour_start, week_start, local_date,
                local_hour, interactions, successful, escalated, response_ms_sum,
                confidence_milli_sum, confidence_count, rating_sum, rating_count)
             VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8, $9, $10, $11, 0, 0)
             ON CONFLICT (bot_id, day_start, hour_start) DO UPDATE SET
                interactions = chatbot_hours.interactions + 1,
                successful = chatbot_hours.successful + excluded.successful,
                escalated = chatbot_hours.escalated + excluded.escalated,
                response_ms_sum = chatbot_hours.response_ms_sum + excluded.response_ms_sum,
                confidence_milli_sum =
                    chatbot_hours.confidence_milli_sum + excluded.confidence_milli_sum,
                confidence_count = chatbot_hours.confidence_count + excluded.confidence_count",
        )
        .bind(interaction.bot_id)
        .bind(&stamps.day_start)
        .bind(&stamps.hour_start)
        .bind(&stamps.week_start)
        .bind(slot.local_date.format("%Y-%m-%d").to_string())
        .bind(i64::from(slot.local_hour))
        .bind(successful)
        .bind(1 - successful)
        .bind(response_ms)
        .bind(confidence.unwrap_or(0))
        .bind(i64::from(confidence.is_some()))
        .execute(&mut **t)
        .await?;
    });
    let bot_id = interaction.bot_id;
    if let Some(milli) = confidence {
        let bin = Key::Int(confidence_bin(milli));
        count(tx, Counter::CONFIDENCE, bot_id, &stamps, &bin).await?;
    }
    if let Some((answer_id, _)) = interaction.answered {
        count(tx, Counter::ANSWERS, bot_id, &stamps, &Key::Text(answer_id)).await?;
    }
    if let Some(sealed) = interaction.unmatched {
        let opened = open_question(
            tx,
            &event.metadata.organization,
            &event.aggregate_id,
            sealed,
        )
        .await?;
        if let Some((customer_id, question)) = opened {
            on_backend!(tx, |t| {
                sqlx::query(
                    "INSERT INTO chatbot_unmatched (interaction_id, bot_id, organization_id,
                        customer_id, day_start, hour_start, day_end, question)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(interaction.interaction_id)
                .bind(bot_id)
                .bind(&organization)
                .bind(&customer_id)
                .bind(&stamps.day_start)
                .bind(&stamps.hour_start)
                .bind(&stamps.day_end)
                .bind(&question)
                .execute(&mut **t)
                .await?;
            });
            count_day(
                tx,
                Counter::UNMATCHED,
                bot_id,
                &stamps,
                &Key::Text(&question),
            )
            .await?;
        }
    }
    Ok(())
}

/// A counter kept per hour and per day: its tables and key column.
struct Counter {
    /// Per hour; `None` where the hour rows are the per-interaction rows themselves.
    hours: Option<&'static str>,
    days: &'static str,
    key: &'static str,
}

impl Counter {
    const CONFIDENCE: Counter = Counter {
        hours: Some("chatbot_confidence"),
        days: "chatbot_confidence_days",
        key: "bin",
    };
    const ANSWERS: Counter = Counter {
        hours: Some("chatbot_answer_uses"),
        days: "chatbot_answer_days",
        key: "answer_id",
    };
    const UNMATCHED: Counter = Counter {
        hours: None,
        days: "chatbot_unmatched_days",
        key: "question",
    };
}

/// The key of a counter row.
enum Key<'a> {
    Int(i64),
    Text(&'a str),
}

/// Adds one to the counter's hour row and day row of `key`.
async fn count(
    tx: &mut Tx,
    counter: Counter,
    bot_id: &str,
    stamps: &Stamps,
    key: &Key<'_>,
) -> Result<(), DbError> {
    if let Some(table) = counter.hours {
        let column = counter.key;
        let sql = format!(
            "INSERT INTO {table} (bot_id, day_start, hour_start, day_end, {column}, entries)
             VALUES ($1, $2, $3, $4, $5, 1)
             ON CONFLICT (bot_id, day_start, hour_start, {column})
             DO UPDATE SET entries = {table}.entries + 1"
        );
        let (first, second) = (&stamps.hour_start, &stamps.day_end);
        bump(tx, &sql, bot_id, &stamps.day_start, first, second, key).await?;
    }
    count_day(tx, counter, bot_id, stamps, key).await
}

/// Adds one to the counter's day row of `key`.
async fn count_day(
    tx: &mut Tx,
    counter: Counter,
    bot_id: &str,
    stamps: &Stamps,
    key: &Key<'_>,
) -> Result<(), DbError> {
    let (table, column) = (counter.days, counter.key);
    let sql = format!(
        "INSERT INTO {table} (bot_id, day_start, day_end, week_start, {column}, entries)
         VALUES ($1, $2, $3, $4, $5, 1)
         ON CONFLICT (bot_id, day_start, {column})
         DO UPDATE SET entries = {table}.entries + 1"
    );
    let (first, second) = (&stamps.day_end, &stamps.week_start);
    bump(tx, &sql, bot_id, &stamps.day_start, first, second, key).await
}

/// Runs a counter upsert: `$1` the bot, `$2` the day start, `$3` and `$4` two more stamps,
/// `$5` the key.
async fn bump(
    tx: &mut Tx,
    sql: &str,
    bot_id: &str,
    day_start: &str,
    third: &str,
    fourth: &str,
    key: &Key<'_>,
) -> Result<(), DbError> {
    on_backend!(tx, |t| {
        let query = sqlx::query(sql)
            .bind(bot_id)
            .bind(day_start)
            .bind(third)
            .bind(fourth);
        let query = match key {
            Key::Int(value) => query.bind(*value),
            Key::Text(value) => query.bind(*value),
        };
        query.execute(&mut **t).await?;
    });
    Ok(())
}

/// The customer of `conversation_id` and their question, opened and normalised; `None`
/// when it cannot be opened any more.
async fn open_question(
    tx: &mut Tx,
    organization: &str,
    conversation_id: &str,
    sealed: &Sealed,
) -> Result<Option<(String, String)>, DbError> {
    let customer: Option<String> = on_backend!(tx, |t| sqlx::query_scalar(
        "SELECT customer_id FROM chatbot_customers WHERE conversation_id = $1"
    )
    .bind(conversation_id)
    .fetch_optional(&mut **t)
    .await?);
    let customer = customer.ok_or_else(|| {
        DbError::Corrupt(format!(
            "conversation {conversation_id} records a bot hand-off before it started"
        ))
    })?;
    // PostgreSQL: the key row stays locked until this transaction ends, so an erasure
    // (which deletes the key, then this projection's rows of the customer) waits for it
    // and then removes the question written here too. SQLite has one writer anyway.
    const KEY: &str =
        "SELECT secret_key FROM customer_keys WHERE customer_id = $1 AND organization_id = $2";
    let sql = match tx {
        Backend::Postgres(_) => format!("{KEY} FOR SHARE"),
        Backend::Sqlite(_) => KEY.to_string(),
    };
    let stored: Option<String> = on_backend!(tx, |t| sqlx::query_scalar(&sql)
        .bind(&customer)
        .bind(organization)
        .fetch_optional(&mut **t)
        .await?);
    let Some(stored) = stored else {
        // The customer was erased: their question is gone with their key.
        return Ok(None);
    };
    let key = CustomerKey::from_stored(&customer, &stored)?;
    // A question that does not open with the current key was sealed with a key erased
    // since (the customer wrote again afterwards and got a new one): erased as well.
    Ok(key
        .open(sealed)
        .ok()
        .map(|question| (customer, normalise(&question))))
}

async fn rate(tx: &mut Tx, interaction_id: &str, rating: i64) -> Result<(), DbError> {
    let found: Option<(String, String, String, Option<i64>)> = on_backend!(tx, |t| {
        sqlx::query_as(
            "SELECT bot_id, day_start, hour_start, rating FROM chatbot_interactions
              WHERE interaction_id = $1",
        )
        .bind(interaction_id)
        .fetch_optional(&mut **t)
        .await?
    });
    // Only answered interactions can be rated, and their answer comes first in the log.
    let (bot_id, day_start, hour_start, previous) = found.ok_or_else(|| {
        DbError::Corrupt(format!(
            "rating of interaction {interaction_id}, which was never recorded"
        ))
    })?;
    // A new rating replaces the previous one: the hour keeps one rating per interaction.
    let (added, counted) = match previous {
        Some(old) => (rating - old, 0),
        None => (rating, 1),
    };
    on_backend!(tx, |t| {
        sqlx::query("UPDATE chatbot_interactions SET rating = $2 WHERE interaction_id = $1")
            .bind(interaction_id)
            .bind(rating)
            .execute(&mut **t)
            .await?;
        sqlx::query(
            "UPDATE chatbot_hours SET rating_sum = rating_sum + $4,
                    rating_count = rating_count + $5
              WHERE bot_id = $1 AND day_start = $2 AND hour_start = $3",
        )
        .bind(&bot_id)
        .bind(&day_start)
        .bind(&hour_start)
        .bind(added)
        .bind(counted)
        .execute(&mut **t)
        .await?;
    });
    Ok(())
}

/// Removes the unmatched questions of an erased customer (their rows and their share of
/// the day counts); returns how many questions. Call it in the erasure's transaction, with
/// the deletion of the customer's key: a rebuild then skips the same questions (their key
/// is gone), so live and rebuilt tables stay equal.
pub async fn forget_customer(
    tx: &mut Tx,
    organization: &str,
    customer_id: &str,
) -> Result<u64, DbError> {
    // The customer's questions of the day row `d`.
    const THEIRS: &str = "FROM chatbot_unmatched u
         WHERE u.customer_id = $1 AND u.organization_id = $2
           AND u.bot_id = chatbot_unmatched_days.bot_id
           AND u.day_start = chatbot_unmatched_days.day_start
           AND u.question = chatbot_unmatched_days.question";
    let decrement = format!(
        "UPDATE chatbot_unmatched_days SET entries = entries - (SELECT COUNT(*) {THEIRS})
          WHERE EXISTS (SELECT 1 {THEIRS})"
    );
    let emptied = format!(
        "DELETE FROM chatbot_unmatched_days WHERE entries <= 0 AND EXISTS (SELECT 1 {THEIRS})"
    );
    Ok(on_backend!(tx, |t| {
        for sql in [&decrement, &emptied] {
            sqlx::query(sql)
                .bind(customer_id)
                .bind(organization)
                .execute(&mut **t)
                .await?;
        }
        sqlx::query("DELETE FROM chatbot_unmatched WHERE customer_id = $1 AND organization_id = $2")
            .bind(customer_id)
            .bind(organization)
            .execute(&mut **t)
            .await?
            .rows_affected()
    }))
}

/// A confidence in thousandths, within [0, 1000].
fn thousandths(confidence: f64) -> i64 {
    // `as` turns NaN into 0; the scorer never produces it.
    (confidence.clamp(0.0, 1.0) * 1000.0).round() as i64
}

/// The histogram bin of a confidence in thousandths: 0.0-0.1 is bin 0, ..., and 0.9-1.0
/// (1.0 included) bin 9.
fn confidence_bin(milli: i64) -> i64 {
    (milli / 100).clamp(0, CONFIDENCE_BINS - 1)
}

/// Where an instant falls in a bot's local calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// The UTC instant at which its local hour began, at the instant's own UTC offset (the
    /// two 01:00 hours of a fall-back day have different starts).
    pub hour_start: DateTime<Utc>,
    /// The UTC instant of its local day's first moment (midnight, or the end of a DST gap
    /// that swallows midnight).
    pub day_start: DateTime<Utc>,
    /// The UTC instant of the next local day's first moment.
    pub day_end: DateTime<Utc>,
    /// The UTC instant of the first moment of the Monday that starts its local week.
    pub week_start: DateTime<Utc>,
    /// Its local date.
    pub local_date: NaiveDate,
    /// Its local hour, 0..23.
    pub local_hour: u32,
}

/// Where `at` falls in the local calendar of `timezone` (an IANA name; an unknown one, which
/// the schedule's validation never lets through, counts as [`DEFAULT_TIMEZONE`]).
pub fn slot(timezone: &str, at: DateTime<Utc>) -> Slot {
    match parse_timezone(timezone).or_else(|_| parse_timezone(DEFAULT_TIMEZONE)) {
        Ok(tz) => slot_in(&tz, at),
        // Unreachable: the default is a known name. UTC keeps the projection going anyway.
        Err(_) => slot_in(&Utc, at),
    }
}

fn slot_in<Z: TimeZone>(tz: &Z, at: DateTime<Utc>) -> Slot {
    let local = at.with_timezone(tz);
    let offset = Duration::seconds(i64::from(local.offset().fix().local_minus_utc()));
    let naive = local.naive_local();
    let date = naive.date();
    let hour = date.and_time(NaiveTime::from_hms_opt(naive.hour(), 0, 0).unwrap_or(NaiveTime::MIN));
    let monday = date - Duration::days(i64::from(date.weekday().num_days_from_monday()));
    Slot {
        hour_start: Utc.from_utc_datetime(&(hour - offset)),
        day_start: start_of_day(tz, date),
        day_end: start_of_day(tz, date + Duration::days(1)),
        week_start: start_of_day(tz, monday),
        local_date: date,
        local_hour: naive.hour(),
    }
}

/// The first instant of `date` in `tz`: its midnight (the earlier one if midnight repeats),
/// or, where a DST gap swallows midnight, the end of the gap.
fn start_of_day<Z: TimeZone>(tz: &Z, date: NaiveDate) -> DateTime<Utc> {
    let midnight = date.and_time(NaiveTime::MIN);
    // Gaps are at most a few hours and every real zone changes on a quarter hour.
    for quarter in 0..(4 * 24) {
        let local = midnight + Duration::minutes(15 * quarter);
        if let Some(at) = tz.from_local_datetime(&local).earliest() {
            return at.with_timezone(&Utc);
        }
    }
    Utc.from_utc_datetime(&midnight)
}

/// The width of a report's buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Granularity {
    /// One bucket per local hour.
    Hour,
    /// One bucket per local day, starting at local midnight.
    Day,
    /// One bucket per local week, starting at Monday's local midnight.
    Week,
}

impl Granularity {
    /// The contract's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Hour => "HOUR",
            Granularity::Day => "DAY",
            Granularity::Week => "WEEK",
        }
    }
}

impl std::str::FromStr for Granularity {
    type Err = String;

    /// `HOUR`, `DAY` or `WEEK`, in any case.
    fn from_str(name: &str) -> Result<Self, String> {
        match name.trim().to_ascii_uppercase().as_str() {
            "HOUR" => Ok(Granularity::Hour),
            "DAY" => Ok(Granularity::Day),
            "WEEK" => Ok(Granularity::Week),
            _ => Err(format!(
                "unknown granularity {name:?}: use HOUR, DAY or WEEK"
            )),
        }
    }
}

/// The stored sums of some hourly rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Sums {
    interactions: i64,
    successful: i64,
    escalated: i64,
    response_ms_sum: i64,
    confidence_milli_sum: i64,
    confidence_count: i64,
    rating_sum: i64,
    rating_count: i64,
}

impl Sums {
    fn add(&mut self, other: &Sums) {
        self.interactions += other.interactions;
        self.successful += other.successful;
        self.escalated += other.escalated;
        self.response_ms_sum += other.response_ms_sum;
        self.confidence_milli_sum += other.confidence_milli_sum;
        self.confidence_count += other.confidence_count;
        self.rating_sum += other.rating_sum;
        self.rating_count += other.rating_count;
    }

    fn figures(&self) -> Figures {
        let share = |part: i64| {
            if self.interactions == 0 {
                0.0
            } else {
                part as f64 / self.interactions as f64
            }
        };
        // One division each, so that an exact decimal average reads back as that literal.
        let average = |sum: i64, count: i64, scale: i64| {
            (count > 0).then(|| sum as f64 / (count * scale) as f64)
        };
        Figures {
            interactions: self.interactions,
            successful: self.successful,
            escalated: self.escalated,
            success_rate: share(self.successful),
            escalation_rate: share(self.escalated),
            avg_response_ms: average(self.response_ms_sum, self.successful, 1),
            avg_confidence: average(self.confidence_milli_sum, self.confidence_count, 1000),
            avg_rating: average(self.rating_sum, self.rating_count, 1),
        }
    }
}

/// The figures of a bucket or of a whole report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    /// Interactions: questions the bot either answered or handed off.
    pub interactions: i64,
    /// Answered by the bot.
    pub successful: i64,
    /// Handed off to the humans (low confidence or outside hours).
    pub escalated: i64,
    /// successful / interactions (0 without interactions).
    pub success_rate: f64,
    /// escalated / interactions (0 without interactions).
    pub escalation_rate: f64,
    /// Mean response time of the answered interactions, in ms (none without any).
    pub avg_response_ms: Option<f64>,
    /// Mean confidence of the interactions that have one (outside-hours hand-offs have
    /// none).
    pub avg_confidence: Option<f64>,
    /// Mean rating of the rated interactions (each at its latest rating).
    pub avg_rating: Option<f64>,
}

/// One bucket of a report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// The UTC instant of its local hour, midnight or Monday midnight.
    pub start: DateTime<Utc>,
    /// Its figures.
    pub figures: Figures,
}

/// An answer and how often the bot gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopAnswer {
    /// The answer.
    pub answer_id: String,
    /// The question it answers, as the admin wrote it.
    pub question: Option<String>,
    /// How often it was given.
    pub count: i64,
}

/// A question the bot could not match, normalised, and how often it was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmatchedQuestion {
    /// The normalised question.
    pub text: String,
    /// How often.
    pub count: i64,
}

/// One bin of the confidence histogram: `from <= confidence < to` (the last bin includes
/// 1.0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConfidenceBin {
    /// Lower bound.
    pub from: f64,
    /// Upper bound.
    pub to: f64,
    /// Interactions with a confidence in the bin.
    pub count: i64,
}

/// How a bot performed over a range.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatbotReport {
    /// The bot's timezone now (the buckets are in the timezone of their time).
    pub timezone: String,
    /// The figures of every bucket of the report together.
    pub totals: Figures,
    /// The buckets whose start is in the range and that hold interactions, oldest first.
    pub buckets: Vec<Bucket>,
    /// The answers given most, most first (ties by answer id), at most [`TOP_ANSWERS`].
    pub top_answers: Vec<TopAnswer>,
    /// The unmatched questions, most frequent first (ties by text), at most
    /// [`TOP_UNMATCHED`].
    pub unmatched_questions: Vec<UnmatchedQuestion>,
    /// Ten bins of 0.1 from 0 to 1.
    pub confidence_histogram: Vec<ConfidenceBin>,
}

/// Whether `bot_id` is a bot of `organization`, and its timezone.
pub async fn bot_timezone(
    db: &Database,
    organization: &str,
    bot_id: &str,
) -> Result<Option<String>, DbError> {
    Ok(on_backend!(db, |pool| sqlx::query_scalar(
        "SELECT timezone FROM chatbot_bots WHERE bot_id = $1 AND organization_id = $2"
    )
    .bind(bot_id)
    .bind(organization)
    .fetch_optional(pool)
    .await?))
}

type SumsRow = (String, i64, i64, i64, i64, i64, i64, i64, i64);

/// How long before one of its hours a local day can start: a day lasts at most 25 hours;
/// two days leave room for a change of timezone in between.
const DAY_REACH: Duration = Duration::days(2);

/// How long before one of its days a local week can start.
const WEEK_REACH: Duration = Duration::days(8);

/// The statements of a report at one granularity. Every one filters on its table's
/// primary key prefix `(bot_id, day_start)`, with the reaches above as bounds.
struct Plan {
    /// `$1` bot, `$2` from, `$3` to, then the plan's extra bounds.
    buckets: String,
    bucket_binds: Vec<String>,
    detail_binds: Vec<String>,
    granularity: Granularity,
}

impl Plan {
    fn new(granularity: Granularity, from: DateTime<Utc>, to: DateTime<Utc>) -> Self {
        let text = |at: DateTime<Utc>| timestamp(at.clamp(earliest(), latest()));
        let days_before = |at: DateTime<Utc>| at.checked_sub_signed(DAY_REACH).unwrap_or(at);
        let (from_text, to_text) = (text(from), text(to));
        let sums = "CAST(SUM(interactions) AS bigint), CAST(SUM(successful) AS bigint),
            CAST(SUM(escalated) AS bigint), CAST(SUM(response_ms_sum) AS bigint),
            CAST(SUM(confidence_milli_sum) AS bigint), CAST(SUM(confidence_count) AS bigint),
            CAST(SUM(rating_sum) AS bigint), CAST(SUM(rating_count) AS bigint)";
        let (filter, column, bucket_extra, detail_extra) = match granularity {
            // Hours whose day starts at most two days before `from`.
            Granularity::Hour => (
                "day_start >= $4 AND day_start < $3 AND hour_start >= $2 AND hour_start < $3",
                "hour_start",
                vec![text(days_before(from))],
                vec![text(days_before(from)), text(from.max(days_before(to)))],
            ),
            Granularity::Day => (
                "day_start >= $2 AND day_start < $3",
                "day_start",
                vec![],
                vec![],
            ),
            // Days of weeks that start in the range start before `to` plus a week.
            Granularity::Week => {
                let reach = vec![text(to.checked_add_signed(WEEK_REACH).unwrap_or(to))];
                (
                    "day_start >= $2 AND day_start < $4 AND week_start >= $2 AND week_start < $3",
                    "week_start",
                    reach.clone(),
                    reach,
                )
            }
        };
        let base = |extra: Vec<String>| {
            let mut binds = vec![from_text.clone(), to_text.clone()];
            binds.extend(extra);
            binds
        };
        Plan {
            buckets: format!(
                "SELECT {column}, {sums} FROM chatbot_hours WHERE bot_id = $1 AND {filter}
                  GROUP BY {column} ORDER BY {column}"
            ),
            bucket_binds: base(bucket_extra),
            detail_binds: base(detail_extra),
            granularity,
        }
    }

    /// The `(k, w)` rows of a counter in the range: key and weight, to be summed by key.
    /// DAY and WEEK read day rows. HOUR reads the day rows of the days wholly inside the
    /// range, and the hour rows of the days it cuts: those starting before `from` (`$4` is
    /// two days before it) and those ending after `to` (`$5`, the later of `from` and two
    /// days before `to`) — disjoint, so nothing counts twice.
    fn counter(&self, days: &str, hours: &str, key: &str, weight: &str) -> String {
        match self.granularity {
            Granularity::Hour => format!(
                "SELECT {key} AS k, entries AS w FROM {days}
                  WHERE bot_id = $1 AND day_start >= $2 AND day_start < $3 AND day_end <= $3
                 UNION ALL
                 SELECT {key}, {weight} FROM {hours}
                  WHERE bot_id = $1 AND day_start >= $4 AND day_start < $2
                    AND hour_start >= $2 AND hour_start < $3
                 UNION ALL
                 SELECT {key}, {weight} FROM {hours}
                  WHERE bot_id = $1 AND day_start >= $5 AND day_start < $3 AND day_end > $3
                    AND hour_start < $3"
            ),
            Granularity::Day => format!(
                "SELECT {key} AS k, entries AS w FROM {days}
                  WHERE bot_id = $1 AND day_start >= $2 AND day_start < $3"
            ),
            Granularity::Week => format!(
                "SELECT {key} AS k, entries AS w FROM {days}
                  WHERE bot_id = $1 AND day_start >= $2 AND day_start < $4
                    AND week_start >= $2 AND week_start < $3"
            ),
        }
    }
}

/// The earliest instant stored texts can order (year 0).
fn earliest() -> DateTime<Utc> {
    DateTime::from_timestamp(-62_167_219_200, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The latest instant stored texts can order (the end of year 9999).
fn latest() -> DateTime<Utc> {
    DateTime::from_timestamp(253_402_300_799, 999_999_000).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The report of `bot_id` over the buckets of `granularity` whose start is in `[from, to)`:
/// whole local hours, days or weeks only (a DAY report from noon leaves that day out).
/// Totals, answers, unmatched questions and the histogram cover exactly those buckets.
/// `None` when the bot is not one of `organization`.
///
/// All figures are read in one snapshot. A year costs at most ~8,800 hourly rows and, for
/// each bin, answer or question, one row per day (plus the hours of two days).
pub async fn report(
    db: &Database,
    organization: &str,
    bot_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    granularity: Granularity,
) -> Result<Option<ChatbotReport>, DbError> {
    let plan = Plan::new(granularity, from, to);
    // Ties in text order must break the same way on both backends: bytewise.
    let bytewise = match db {
        Backend::Sqlite(_) => "",
        Backend::Postgres(_) => " COLLATE \"C\"",
    };
    let histogram_sql = format!(
        "SELECT k, CAST(SUM(w) AS bigint) FROM ({}) x GROUP BY k",
        plan.counter(
            "chatbot_confidence_days",
            "chatbot_confidence",
            "bin",
            "entries"
        )
    );
    let answers_sql = format!(
        "SELECT t.k, a.question, t.n
           FROM (SELECT k, CAST(SUM(w) AS bigint) AS n FROM ({}) x GROUP BY k) t
           LEFT JOIN chatbot_answers a ON a.bot_id = $1 AND a.answer_id = t.k
          ORDER BY t.n DESC, t.k{bytewise}
          LIMIT {TOP_ANSWERS}",
        plan.counter(
            "chatbot_answer_days",
            "chatbot_answer_uses",
            "answer_id",
            "entries"
        )
    );
    let unmatched_sql = format!(
        "SELECT k, CAST(SUM(w) AS bigint) AS n FROM ({}) x GROUP BY k
          ORDER BY n DESC, k{bytewise}
          LIMIT {TOP_UNMATCHED}",
        plan.counter(
            "chatbot_unmatched_days",
            "chatbot_unmatched",
            "question",
            "1"
        )
    );
    let mut tx = db.begin().await?;
    let (timezone, rows, bins, answers, unmatched) = on_backend!(&mut tx, |t| {
        if let Backend::Postgres(_) = db {
            // One snapshot for every query below (SQLite's read transaction is one already).
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut **t)
                .await?;
        }
        let timezone: Option<String> = sqlx::query_scalar(
            "SELECT timezone FROM chatbot_bots WHERE bot_id = $1 AND organization_id = $2",
        )
        .bind(bot_id)
        .bind(organization)
        .fetch_optional(&mut **t)
        .await?;
        let Some(timezone) = timezone else {
            return Ok(None);
        };
        let mut query = sqlx::query_as(&plan.buckets).bind(bot_id);
        for value in &plan.bucket_binds {
            query = query.bind(value);
        }
        let rows: Vec<SumsRow> = query.fetch_all(&mut **t).await?;
        let mut query = sqlx::query_as(&histogram_sql).bind(bot_id);
        for value in &plan.detail_binds {
            query = query.bind(value);
        }
        let bins: Vec<(i64, i64)> = query.fetch_all(&mut **t).await?;
        let mut query = sqlx::query_as(&answers_sql).bind(bot_id);
        for value in &plan.detail_binds {
            query = query.bind(value);
        }
        let answers: Vec<(String, Option<String>, i64)> = query.fetch_all(&mut **t).await?;
        let mut query = sqlx::query_as(&unmatched_sql).bind(bot_id);
        for value in &plan.detail_binds {
            query = query.bind(value);
        }
        let unmatched: Vec<(String, i64)> = query.fetch_all(&mut **t).await?;
        (timezone, rows, bins, answers, unmatched)
    });
    tx.commit().await?;

    let mut totals = Sums::default();
    let mut buckets = Vec::with_capacity(rows.len());
    for (start, interactions, successful, escalated, response, milli, confident, rating, rated) in
        rows
    {
        let sums = Sums {
            interactions,
            successful,
            escalated,
            response_ms_sum: response,
            confidence_milli_sum: milli,
            confidence_count: confident,
            rating_sum: rating,
            rating_count: rated,
        };
        totals.add(&sums);
        buckets.push(Bucket {
            start: parse_timestamp(&start)?,
            figures: sums.figures(),
        });
    }
    let mut counts = [0i64; CONFIDENCE_BINS as usize];
    for (bin, count) in bins {
        counts[bin.clamp(0, CONFIDENCE_BINS - 1) as usize] += count;
    }
    let confidence_histogram = counts
        .iter()
        .enumerate()
        .map(|(bin, count)| ConfidenceBin {
            from: bin as f64 / 10.0,
            to: (bin + 1) as f64 / 10.0,
            count: *count,
        })
        .collect();
    Ok(Some(ChatbotReport {
        timezone,
        totals: totals.figures(),
        buckets,
        top_answers: answers
            .into_iter()
            .map(|(answer_id, question, count)| TopAnswer {
                answer_id,
                question,
                count,
            })
            .collect(),
        unmatched_questions: unmatched
            .into_iter()
            .map(|(text, count)| UnmatchedQuestion { text, count })
            .collect(),
        confidence_histogram,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        parse_timestamp(text).expect("time")
    }

    #[test]
    fn new_york_fall_back_has_two_one_oclock_hours_in_one_day() {
        let first = slot("America/New_York", utc("2026-11-01T05:30:00Z"));
        let second = slot("America/New_York", utc("2026-11-01T06:30:00Z"));
        assert_eq!((first.local_hour, second.local_hour), (1, 1));
        assert_eq!(first.hour_start, utc("2026-11-01T05:00:00Z"));
        assert_eq!(second.hour_start, utc("2026-11-01T06:00:00Z"));
        assert_eq!(first.day_start, utc("2026-11-01T04:00:00Z"));
        assert_eq!(second.day_start, first.day_start);
        // The fall-back day lasts 25 hours.
        assert_eq!(first.day_end, utc("2026-11-02T05:00:00Z"));
        assert_eq!(first.week_start, utc("2026-10-26T04:00:00Z"));
        let monday = slot("America/New_York", utc("2026-11-02T13:05:00Z"));
        assert_eq!(monday.day_start, utc("2026-11-02T05:00:00Z"));
        assert_eq!(monday.week_start, monday.day_start);
    }

    #[test]
    fn spring_forward_skips_the_missing_hour() {
        let before = slot("America/New_York", utc("2026-03-08T06:59:00Z"));
        let after = slot("America/New_York", utc("2026-03-08T07:00:00Z"));
        assert_eq!((before.local_hour, after.local_hour), (1, 3));
        assert_eq!(before.hour_start, utc("2026-03-08T06:00:00Z"));
        assert_eq!(after.hour_start, utc("2026-03-08T07:00:00Z"));
        assert_eq!(after.day_start, utc("2026-03-08T05:00:00Z"));
    }

    #[test]
    fn half_hour_zones_and_midnight_gaps() {
        let kathmandu = slot("Asia/Kathmandu", utc("2026-01-05T04:20:00Z"));
        assert_eq!(kathmandu.local_hour, 10);
        assert_eq!(kathmandu.hour_start, utc("2026-01-05T04:15:00Z"));
        // Santiago skipped 2022-09-11 00:00-01:00: the day began at 01:00 local (04:00Z).
        let santiago = slot("America/Santiago", utc("2022-09-11T15:00:00Z"));
        assert_eq!(santiago.day_start, utc("2022-09-11T04:00:00Z"));
        // Unknown names (never accepted by the schedule) fall back to the default zone.
        let unknown = slot("Mars/Olympus", utc("2026-01-05T04:20:00Z"));
        assert_eq!(unknown, slot(DEFAULT_TIMEZONE, utc("2026-01-05T04:20:00Z")));
        assert_eq!(unknown.local_hour, 11);
    }

    #[test]
    fn confidences_fall_in_tenths_with_one_in_the_last_bin() {
        let bins: Vec<i64> = [0.0, 0.099, 0.1, 0.3, 0.7, 0.95, 1.0]
            .iter()
            .map(|c| confidence_bin(thousandths(*c)))
            .collect();
        assert_eq!(bins, vec![0, 0, 1, 3, 7, 9, 9]);
        assert_eq!(thousandths(0.6), 600);
    }

    #[test]
    fn granularities_parse_in_any_case() {
        assert_eq!("week".parse(), Ok(Granularity::Week));
        assert_eq!(" HOUR ".parse(), Ok(Granularity::Hour));
        assert!("month".parse::<Granularity>().is_err());
    }
}
