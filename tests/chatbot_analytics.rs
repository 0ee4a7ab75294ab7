//! Chatbot analytics (issue 5) on every backend, from a fixture of Bot and Conversation
//! events applied straight through `ChatbotAnalyticsProjection`, as the runner applies them.
//!
//! The fixture: a bot in America/New_York whose interactions span Saturday 2026-10-31,
//! Sunday 2026-11-01 (DST ends at 02:00 EDT: the local hour 01:00 happens twice) and Monday
//! 2026-11-02; answered, handed-off (low confidence and outside hours), rated and re-rated
//! interactions; unmatched questions from two customers, sealed with their real keys. A
//! second organization's bot keeps the default timezone, Asia/Jakarta.
//!
//! - `fixture_gives_exact_figures_and_a_rebuild_equals_the_live_tables`: every HOUR, DAY
//!   and WEEK bucket, the totals, the histogram, the top answers and the unmatched questions
//!   are written out below; then a reset and a replay of the same events give the same
//!   rows in every table and the same reports; so does a replay after a customer's erasure
//!   (their questions disappear live and stay away on rebuild), even once the erased
//!   customer has a new key.
//! - `range_boundaries_include_starts_and_exclude_ends`: buckets whose start is in
//!   [from, to), at the microsecond, for hours, days and weeks.
//! - `report_endpoints_over_graphql_and_csv`: `chatbotReport` and
//!   `GET /reports/chatbot/{botId}.csv` against the real server: figures, roles, tenancy,
//!   bad parameters and tokens.

mod common;

use chrono::{DateTime, Utc};
use common::{Server, TestDb};
use cqrs_es::DomainEvent;
use domain::bot::{BotAnswer, BotEvent};
use domain::conversation::{Channel, ConversationEvent, HandOffReason, Sealed};
use domain::metadata::EventMetadata;
use domain::schedule::{Schedule, WindowInput};
use domain::{Actor, Role};
use projections::chatbot::{
    self, Bucket, ChatbotAnalyticsProjection, ChatbotReport, ConfidenceBin, Figures, Granularity,
    TopAnswer, UnmatchedQuestion,
};
use projections::db::parse_timestamp;
use projections::event_log::{Checkpoint, StoredEvent};
use projections::personal_data::{self, CustomerKey};
use projections::runner::{self, Projection};
use projections::{on_backend, Database};
use serde_json::{json, Value};
use sqlx::Row;
use std::collections::HashMap;

const ORG: &str = "acme";
const OTHER_ORG: &str = "globex";
const BOT: &str = "bot-ny";
const OTHER_BOT: &str = "bot-gx";
const ANN: &str = "cust-ann";
const BOB: &str = "cust-bob";
const GUS: &str = "cust-gus";

fn at(text: &str) -> DateTime<Utc> {
    parse_timestamp(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// An event before it is numbered: time, aggregate type, id, organization, payload, type.
type Pending = (
    DateTime<Utc>,
    &'static str,
    String,
    &'static str,
    Value,
    String,
);

/// The fixture's events, gathered in any order.
struct Log {
    pending: Vec<Pending>,
}

impl Log {
    fn bot(&mut self, time: &str, org: &'static str, id: &str, event: BotEvent) {
        let (payload, kind) = (json!(event), event.event_type());
        self.pending
            .push((at(time), "Bot", id.into(), org, payload, kind));
    }

    fn conversation(&mut self, time: &str, org: &'static str, id: &str, event: ConversationEvent) {
        let (payload, kind) = (json!(event), event.event_type());
        self.pending
            .push((at(time), "Conversation", id.into(), org, payload, kind));
    }

    /// The stored events: ordered by time (stable), numbered per aggregate and globally.
    fn stored(mut self) -> Vec<StoredEvent> {
        self.pending.sort_by_key(|p| p.0);
        let mut sequences: HashMap<String, i64> = HashMap::new();
        self.pending
            .into_iter()
            .enumerate()
            .map(|(index, (time, kind, id, org, payload, event_type))| {
                let sequence = sequences.entry(format!("{kind}/{id}")).or_default();
                *sequence += 1;
                let request = format!("req-{index}");
                StoredEvent {
                    checkpoint: Checkpoint {
                        tx_id: 0,
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
                        organization: org.into(),
                        actor: Actor::new("whatsapp-bridge", Role::Service),
                        occurred_at: time,
                        request_id: request.clone(),
                        correlation_id: request,
                        causation_id: None,
                    },
                }
            })
            .collect()
    }
}

fn answer(id: &str, question: &str) -> BotEvent {
    BotEvent::BotAnswerAdded {
        answer: BotAnswer {
            answer_id: id.into(),
            question: question.into(),
            answer: format!("The answer to {question}"),
            keywords: vec![],
        },
    }
}

fn started(org: &str, customer: &str, key: &CustomerKey) -> ConversationEvent {
    ConversationEvent::ConversationStarted {
        organization: org.into(),
        channel: Channel::Whatsapp,
        channel_id: format!("{org}-whatsapp"),
        customer_id: customer.into(),
        external_id: key.seal(&format!("+1 555 {customer}")),
        customer_name: Some(key.seal(customer)),
    }
}

fn answered(id: &str, bot: &str, answer: &str, confidence: f64, ms: i64) -> ConversationEvent {
    ConversationEvent::BotAnswered {
        interaction_id: id.into(),
        bot_id: bot.into(),
        answer_id: answer.into(),
        confidence,
        response_ms: ms,
        question: Sealed("v1:not-opened-for-answered-questions".into()),
        message_id: format!("{id}-answer"),
    }
}

fn handed_off(
    id: &str,
    bot: &str,
    reason: HandOffReason,
    confidence: Option<f64>,
    question: Sealed,
) -> ConversationEvent {
    ConversationEvent::BotHandedOff {
        interaction_id: id.into(),
        bot_id: bot.into(),
        reason,
        confidence,
        question,
    }
}

fn rated(id: &str, rating: i32) -> ConversationEvent {
    ConversationEvent::BotInteractionRated {
        interaction_id: id.into(),
        rating,
    }
}

/// The fixture, sealed with the customers' keys in `db`. Times are UTC; New York is UTC-4
/// until 2026-11-01 06:00Z and UTC-5 from then on.
async fn fixture(db: &Database) -> Vec<StoredEvent> {
    let ann = personal_data::key_for(db, ORG, ANN).await.expect("key");
    let bob = personal_data::key_for(db, ORG, BOB).await.expect("key");
    let gus = personal_data::key_for(db, OTHER_ORG, GUS)
        .await
        .expect("key");
    let low = HandOffReason::LowConfidence;
    let mut log = Log {
        pending: Vec::new(),
    };
    let created = |org: &str| BotEvent::BotCreated {
        organization: org.into(),
        name: "Tania".into(),
        confidence_threshold: 0.6,
        channel_ids: vec![],
    };
    log.bot("2026-10-01T12:00:00Z", ORG, BOT, created(ORG));
    log.bot(
        "2026-10-01T12:01:00Z",
        ORG,
        BOT,
        answer("a-hours", "What are your opening hours?"),
    );
    log.bot(
        "2026-10-01T12:02:00Z",
        ORG,
        BOT,
        answer("a-ship", "How much is shipping?"),
    );
    log.bot(
        "2026-10-01T12:03:00Z",
        ORG,
        BOT,
        answer("a-refund", "How do I get a refund?"),
    );
    let week: Vec<WindowInput> = (0..7)
        .map(|day| WindowInput {
            day_of_week: day,
            start: "00:00".into(),
            end: "23:00".into(),
        })
        .collect();
    let schedule =
        Schedule::new(true, "America/New_York", &week, Some("Closed".into())).expect("schedule");
    log.bot(
        "2026-10-01T12:04:00Z",
        ORG,
        BOT,
        BotEvent::BotScheduleSet { schedule },
    );
    log.bot(
        "2026-10-01T12:05:00Z",
        OTHER_ORG,
        OTHER_BOT,
        created(OTHER_ORG),
    );
    log.bot(
        "2026-10-01T12:06:00Z",
        OTHER_ORG,
        OTHER_BOT,
        answer("g-promo", "Ada promo?"),
    );
    log.conversation(
        "2026-10-30T12:00:00Z",
        ORG,
        "conv-ann",
        started(ORG, ANN, &ann),
    );
    log.conversation(
        "2026-10-30T12:00:01Z",
        ORG,
        "conv-bob",
        started(ORG, BOB, &bob),
    );
    log.conversation(
        "2026-10-30T12:00:02Z",
        OTHER_ORG,
        "conv-gus",
        started(OTHER_ORG, GUS, &gus),
    );

    // Saturday 2026-10-31, EDT (UTC-4).
    let c = "conv-ann";
    log.conversation(
        "2026-10-31T13:15:00Z",
        ORG,
        c,
        answered("i1", BOT, "a-hours", 0.95, 800),
    );
    let b = "conv-bob";
    log.conversation(
        "2026-10-31T13:40:00Z",
        ORG,
        b,
        answered("i2", BOT, "a-ship", 0.8, 1200),
    );
    let q = ann.seal("Can I pay with CRYPTO?");
    log.conversation(
        "2026-10-31T13:55:00Z",
        ORG,
        c,
        handed_off("i3", BOT, low, Some(0.35), q),
    );
    log.conversation("2026-10-31T14:00:00Z", ORG, b, rated("i2", 2));
    let q = bob.seal("halo?");
    let outside = HandOffReason::OutsideHours;
    log.conversation(
        "2026-11-01T03:30:00Z",
        ORG,
        b,
        handed_off("i4", BOT, outside, None, q),
    );
    // Sunday 2026-11-01: 01:00-02:00 EDT, then 01:00-02:00 EST again.
    log.conversation(
        "2026-11-01T05:10:00Z",
        ORG,
        c,
        answered("i5", BOT, "a-hours", 1.0, 500),
    );
    let q = bob.seal("  can i pay with crypto  ");
    log.conversation(
        "2026-11-01T05:50:00Z",
        ORG,
        b,
        handed_off("i6", BOT, low, Some(0.2), q),
    );
    log.conversation(
        "2026-11-01T06:20:00Z",
        ORG,
        b,
        answered("i7", BOT, "a-refund", 0.65, 2000),
    );
    let q = ann.seal("Where is my parcel??");
    log.conversation(
        "2026-11-01T06:45:00Z",
        ORG,
        c,
        handed_off("i8", BOT, low, Some(0.5), q),
    );
    log.conversation("2026-11-01T07:00:00Z", ORG, b, rated("i7", 3));
    log.conversation("2026-11-01T15:00:00Z", ORG, b, rated("i2", 4));
    log.conversation(
        "2026-11-01T19:00:00Z",
        ORG,
        c,
        answered("i9", BOT, "a-hours", 0.9, 700),
    );
    // Monday 2026-11-02, EST (UTC-5).
    log.conversation(
        "2026-11-02T13:05:00Z",
        ORG,
        b,
        answered("i10", BOT, "a-ship", 0.75, 900),
    );
    let q = ann.seal("Do you sell gift cards?");
    log.conversation(
        "2026-11-02T13:30:00Z",
        ORG,
        c,
        handed_off("i11", BOT, low, Some(0.1), q),
    );
    log.conversation("2026-11-02T14:00:00Z", ORG, b, rated("i10", 1));
    log.conversation("2026-11-02T20:00:00Z", ORG, c, rated("i1", 5));

    // globex, Asia/Jakarta (UTC+7): Sunday 23:59 and Monday 03:30 local.
    let g = "conv-gus";
    let q = gus.seal("Ada promo?");
    log.conversation(
        "2026-11-01T16:59:00Z",
        OTHER_ORG,
        g,
        handed_off("g1", OTHER_BOT, low, Some(0.55), q),
    );
    log.conversation(
        "2026-11-01T20:30:00Z",
        OTHER_ORG,
        g,
        answered("g2", OTHER_BOT, "g-promo", 0.6, 300),
    );
    log.stored()
}

/// Applies the events through the projection, a few per transaction, as the runner does.
async fn apply(db: &Database, events: &[StoredEvent]) {
    for batch in events.chunks(5) {
        let mut tx = db.begin().await.expect("begin");
        for event in batch {
            if let Err(e) = ChatbotAnalyticsProjection.apply(&mut tx, event).await {
                panic!("applying {event:?}: {e}");
            }
        }
        tx.commit().await.expect("commit");
    }
}

async fn report(
    db: &Database,
    org: &str,
    bot: &str,
    from: &str,
    to: &str,
    g: Granularity,
) -> ChatbotReport {
    chatbot::report(db, org, bot, at(from), at(to), g)
        .await
        .expect("report")
        .unwrap_or_else(|| panic!("bot {bot} of {org} not found"))
}

/// The whole fixture.
const FROM: &str = "2026-10-01T00:00:00Z";
const TO: &str = "2026-12-01T00:00:00Z";

#[allow(clippy::too_many_arguments)]
fn figures(
    interactions: i64,
    successful: i64,
    escalated: i64,
    success_rate: f64,
    escalation_rate: f64,
    avg_response_ms: Option<f64>,
    avg_confidence: Option<f64>,
    avg_rating: Option<f64>,
) -> Figures {
    Figures {
        interactions,
        successful,
        escalated,
        success_rate,
        escalation_rate,
        avg_response_ms,
        avg_confidence,
        avg_rating,
    }
}

fn bucket(start: &str, figures: Figures) -> Bucket {
    Bucket {
        start: at(start),
        figures,
    }
}

fn histogram(counts: [i64; 10]) -> Vec<ConfidenceBin> {
    let bounds = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];
    (0..10)
        .map(|i| ConfidenceBin {
            from: bounds[i],
            to: bounds[i + 1],
            count: counts[i],
        })
        .collect()
}

fn top(answers: &[(&str, &str, i64)]) -> Vec<TopAnswer> {
    answers
        .iter()
        .map(|(id, question, count)| TopAnswer {
            answer_id: id.to_string(),
            question: Some(question.to_string()),
            count: *count,
        })
        .collect()
}

fn unmatched(questions: &[(&str, i64)]) -> Vec<UnmatchedQuestion> {
    questions
        .iter()
        .map(|(text, count)| UnmatchedQuestion {
            text: text.to_string(),
            count: *count,
        })
        .collect()
}

// The hours of New York (label: local time).
/// Sat 09:00 EDT: i1 (0.95, 800 ms, rated 5), i2 (0.8, 1200 ms, rated 2 then 4), i3 (0.35).
fn sat_0900() -> Figures {
    figures(
        3,
        2,
        1,
        2.0 / 3.0,
        1.0 / 3.0,
        Some(1000.0),
        Some(0.7),
        Some(4.5),
    )
}
/// Sat 23:00 EDT: i4, outside hours (no confidence).
fn sat_2300() -> Figures {
    figures(1, 0, 1, 0.0, 1.0, None, None, None)
}
/// Sun 01:00 EDT: i5 (1.0, 500 ms), i6 (0.2).
fn sun_0100_edt() -> Figures {
    figures(2, 1, 1, 0.5, 0.5, Some(500.0), Some(0.6), None)
}
/// Sun 01:00 EST: i7 (0.65, 2000 ms, rated 3), i8 (0.5).
fn sun_0100_est() -> Figures {
    figures(2, 1, 1, 0.5, 0.5, Some(2000.0), Some(0.575), Some(3.0))
}
/// Sun 14:00 EST: i9 (0.9, 700 ms).
fn sun_1400() -> Figures {
    figures(1, 1, 0, 1.0, 0.0, Some(700.0), Some(0.9), None)
}
/// Mon 08:00 EST: i10 (0.75, 900 ms, rated 1), i11 (0.1).
fn mon_0800() -> Figures {
    figures(2, 1, 1, 0.5, 0.5, Some(900.0), Some(0.425), Some(1.0))
}
/// Sunday, all 24 + 1 hours.
fn sunday() -> Figures {
    figures(5, 3, 2, 0.6, 0.4, Some(3200.0 / 3.0), Some(0.65), Some(3.0))
}
/// Saturday.
fn saturday() -> Figures {
    figures(4, 2, 2, 0.5, 0.5, Some(1000.0), Some(0.7), Some(4.5))
}
/// Everything.
fn all_of_it() -> Figures {
    figures(
        11,
        6,
        5,
        6.0 / 11.0,
        5.0 / 11.0,
        Some(6100.0 / 6.0),
        Some(0.62),
        Some(3.25),
    )
}

/// Every row of every table of the projection, sorted, as text.
async fn tables(db: &Database) -> Vec<(String, Vec<Vec<String>>)> {
    let mut all = Vec::new();
    for table in ChatbotAnalyticsProjection.tables() {
        let sql = format!("SELECT * FROM {table}");
        let mut rows: Vec<Vec<String>> = on_backend!(db, |pool| sqlx::query(&sql)
            .fetch_all(pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| {
                        if let Ok(text) = row.try_get::<Option<String>, _>(i) {
                            format!("{text:?}")
                        } else if let Ok(number) = row.try_get::<Option<i64>, _>(i) {
                            format!("{number:?}")
                        } else {
                            panic!("{table}: column {i} is neither text nor integer")
                        }
                    })
                    .collect()
            })
            .collect());
        rows.sort();
        all.push((table.to_string(), rows));
    }
    all
}

/// The reports compared before and after a rebuild.
async fn reports(db: &Database) -> Vec<ChatbotReport> {
    let mut all = Vec::new();
    for g in [Granularity::Hour, Granularity::Day, Granularity::Week] {
        all.push(report(db, ORG, BOT, FROM, TO, g).await);
        all.push(report(db, OTHER_ORG, OTHER_BOT, FROM, TO, g).await);
    }
    all
}

async fn rebuild(db: &Database, events: &[StoredEvent]) {
    runner::reset(db, &ChatbotAnalyticsProjection)
        .await
        .expect("reset");
    for (table, rows) in tables(db).await {
        assert!(rows.is_empty(), "{table} not emptied by the reset");
    }
    apply(db, events).await;
}

#[tokio::test]
async fn fixture_gives_exact_figures_and_a_rebuild_equals_the_live_tables() {
    for test_db in TestDb::all().await {
        let db = test_db.connect().await;
        let backend = db.backend_name();
        let events = fixture(&db).await;
        apply(&db, &events).await;

        // The projection owns every chatbot table, so a replay rebuilds them all.
        let mut owned: Vec<&str> = ChatbotAnalyticsProjection.tables().to_vec();
        owned.sort();
        let sql = match backend {
            "sqlite" => "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'chatbot!_%' ESCAPE '!' ORDER BY name",
            _ => "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' AND table_name LIKE 'chatbot!_%' ESCAPE '!' ORDER BY table_name",
        };
        let existing: Vec<String> = on_backend!(&db, |pool| sqlx::query_scalar(sql)
            .fetch_all(pool)
            .await
            .expect("tables"));
        assert_eq!(existing, owned, "{backend}");

        // The two 01:00 hours of the fall-back day, side by side.
        let hours: Vec<(String, String, i64)> = on_backend!(&db, |pool| sqlx::query_as(
            "SELECT hour_start, local_date, local_hour FROM chatbot_hours WHERE bot_id = $1
              ORDER BY hour_start"
        )
        .bind(BOT)
        .fetch_all(pool)
        .await
        .expect("hours"));
        let expected_hours = [
            ("2026-10-31T13:00:00.000000Z", "2026-10-31", 9),
            ("2026-11-01T03:00:00.000000Z", "2026-10-31", 23),
            ("2026-11-01T05:00:00.000000Z", "2026-11-01", 1),
            ("2026-11-01T06:00:00.000000Z", "2026-11-01", 1),
            ("2026-11-01T19:00:00.000000Z", "2026-11-01", 14),
            ("2026-11-02T13:00:00.000000Z", "2026-11-02", 8),
        ]
        .map(|(s, d, h)| (s.to_string(), d.to_string(), h));
        assert_eq!(hours, expected_hours, "{backend}");

        let hourly = report(&db, ORG, BOT, FROM, TO, Granularity::Hour).await;
        assert_eq!(hourly.timezone, "America/New_York");
        assert_eq!(
            hourly.buckets,
            vec![
                bucket("2026-10-31T13:00:00Z", sat_0900()),
                bucket("2026-11-01T03:00:00Z", sat_2300()),
                bucket("2026-11-01T05:00:00Z", sun_0100_edt()),
                bucket("2026-11-01T06:00:00Z", sun_0100_est()),
                bucket("2026-11-01T19:00:00Z", sun_1400()),
                bucket("2026-11-02T13:00:00Z", mon_0800()),
            ],
            "{backend}"
        );
        assert_eq!(hourly.totals, all_of_it(), "{backend}");
        assert_eq!(
            hourly.confidence_histogram,
            histogram([0, 1, 1, 1, 0, 1, 1, 1, 1, 3]),
            "{backend}"
        );
        assert_eq!(
            hourly.top_answers,
            top(&[
                ("a-hours", "What are your opening hours?", 3),
                ("a-ship", "How much is shipping?", 2),
                ("a-refund", "How do I get a refund?", 1),
            ]),
            "{backend}"
        );
        // Normalised: two customers' spellings of one question count together; ties by text;
        // the outside-hours "halo?" is not an unmatched question.
        assert_eq!(
            hourly.unmatched_questions,
            unmatched(&[
                ("can i pay with crypto", 2),
                ("do you sell gift cards", 1),
                ("where is my parcel", 1),
            ]),
            "{backend}"
        );

        // Days start at local midnight: EDT on Saturday and Sunday, EST on Monday.
        let daily = report(&db, ORG, BOT, FROM, TO, Granularity::Day).await;
        assert_eq!(
            daily.buckets,
            vec![
                bucket("2026-10-31T04:00:00Z", saturday()),
                bucket("2026-11-01T04:00:00Z", sunday()),
                bucket("2026-11-02T05:00:00Z", mon_0800()),
            ],
            "{backend}"
        );
        assert_eq!(daily.totals, all_of_it(), "{backend}");
        assert_eq!(daily.top_answers, hourly.top_answers, "{backend}");
        assert_eq!(daily.unmatched_questions, hourly.unmatched_questions);
        assert_eq!(daily.confidence_histogram, hourly.confidence_histogram);

        // Weeks start on Monday's local midnight: 2026-10-26 (EDT) and 2026-11-02 (EST).
        let weekly = report(&db, ORG, BOT, FROM, TO, Granularity::Week).await;
        assert_eq!(
            weekly.buckets,
            vec![
                bucket(
                    "2026-10-26T04:00:00Z",
                    figures(
                        9,
                        5,
                        4,
                        5.0 / 9.0,
                        4.0 / 9.0,
                        Some(1040.0),
                        Some(0.66875),
                        Some(4.0)
                    )
                ),
                bucket("2026-11-02T05:00:00Z", mon_0800()),
            ],
            "{backend}"
        );
        assert_eq!(weekly.totals, all_of_it(), "{backend}");

        // Sunday alone: its answers, questions and confidences only.
        let sunday_only = report(
            &db,
            ORG,
            BOT,
            "2026-11-01T04:00:00Z",
            "2026-11-02T05:00:00Z",
            Granularity::Day,
        )
        .await;
        assert_eq!(
            sunday_only.buckets,
            vec![bucket("2026-11-01T04:00:00Z", sunday())]
        );
        assert_eq!(sunday_only.totals, sunday(), "{backend}");
        assert_eq!(
            sunday_only.top_answers,
            top(&[
                ("a-hours", "What are your opening hours?", 2),
                ("a-refund", "How do I get a refund?", 1),
            ])
        );
        assert_eq!(
            sunday_only.unmatched_questions,
            unmatched(&[("can i pay with crypto", 1), ("where is my parcel", 1)])
        );
        assert_eq!(
            sunday_only.confidence_histogram,
            histogram([0, 0, 1, 0, 0, 1, 1, 0, 0, 2])
        );

        // The other organization's bot: Asia/Jakarta (UTC+7), and invisible to acme.
        let jakarta = report(&db, OTHER_ORG, OTHER_BOT, FROM, TO, Granularity::Day).await;
        assert_eq!(jakarta.timezone, "Asia/Jakarta");
        assert_eq!(
            jakarta.buckets,
            vec![
                bucket(
                    "2026-10-31T17:00:00Z",
                    figures(1, 0, 1, 0.0, 1.0, None, Some(0.55), None)
                ),
                bucket(
                    "2026-11-01T17:00:00Z",
                    figures(1, 1, 0, 1.0, 0.0, Some(300.0), Some(0.6), None)
                ),
            ],
            "{backend}"
        );
        assert_eq!(jakarta.unmatched_questions, unmatched(&[("ada promo", 1)]));
        for (org, bot) in [(ORG, OTHER_BOT), (OTHER_ORG, BOT), (ORG, "no-such-bot")] {
            let found = chatbot::report(&db, org, bot, at(FROM), at(TO), Granularity::Day)
                .await
                .expect("report");
            assert!(found.is_none(), "{backend}: {org} sees {bot}");
        }

        // A rebuild from zero gives the same rows and the same reports.
        let live_tables = tables(&db).await;
        let live_reports = reports(&db).await;
        rebuild(&db, &events).await;
        assert_eq!(tables(&db).await, live_tables, "{backend}: rebuilt tables");
        assert_eq!(
            reports(&db).await,
            live_reports,
            "{backend}: rebuilt reports"
        );

        // Bob is erased: his key and his unmatched questions go together...
        let mut tx = db.begin().await.expect("begin");
        on_backend!(&mut tx, |t| sqlx::query(
            "DELETE FROM customer_keys WHERE customer_id = $1"
        )
        .bind(BOB)
        .execute(&mut **t)
        .await
        .expect("erase key")
        .rows_affected());
        let forgotten = chatbot::forget_customer(&mut tx, ORG, BOB)
            .await
            .expect("forget");
        tx.commit().await.expect("commit");
        assert_eq!(forgotten, 1, "{backend}");
        let after_erasure = report(&db, ORG, BOT, FROM, TO, Granularity::Day).await;
        assert_eq!(
            after_erasure.unmatched_questions,
            unmatched(&[
                ("can i pay with crypto", 1),
                ("do you sell gift cards", 1),
                ("where is my parcel", 1),
            ]),
            "{backend}"
        );
        // ...the figures stay (they hold no personal data)...
        assert_eq!(after_erasure.buckets, daily.buckets, "{backend}");
        // ...and a rebuild, which can no longer open his questions, gives the same tables.
        let erased_tables = tables(&db).await;
        rebuild(&db, &events).await;
        assert_eq!(
            tables(&db).await,
            erased_tables,
            "{backend}: rebuilt after erasure"
        );
        // Bob writes again and gets a new key: his old questions still stay closed.
        personal_data::key_for(&db, ORG, BOB)
            .await
            .expect("new key");
        rebuild(&db, &events).await;
        assert_eq!(
            tables(&db).await,
            erased_tables,
            "{backend}: rebuilt after a new key"
        );
    }
}

#[tokio::test]
async fn range_boundaries_include_starts_and_exclude_ends() {
    for test_db in TestDb::all().await {
        let db = test_db.connect().await;
        let backend = db.backend_name();
        apply(&db, &fixture(&db).await).await;
        let starts = |r: &ChatbotReport| -> Vec<DateTime<Utc>> {
            r.buckets.iter().map(|b| b.start).collect()
        };
        let cases = [
            // The first 01:00 (EDT) starts exactly at `from`; the second (EST) exactly at `to`.
            (
                "2026-11-01T05:00:00Z",
                "2026-11-01T06:00:00Z",
                Granularity::Hour,
                vec!["2026-11-01T05:00:00Z"],
            ),
            // A microsecond later both ends move past a start.
            (
                "2026-11-01T05:00:00.000001Z",
                "2026-11-01T06:00:00.000001Z",
                Granularity::Hour,
                vec!["2026-11-01T06:00:00Z"],
            ),
            // A DAY range from a microsecond after Saturday's midnight leaves Saturday out,
            // although its hours lie inside; Monday starts before `to` and is in.
            (
                "2026-10-31T04:00:00.000001Z",
                "2026-11-02T05:00:00.000001Z",
                Granularity::Day,
                vec!["2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z"],
            ),
            (
                "2026-10-26T04:00:00Z",
                "2026-11-02T05:00:00Z",
                Granularity::Week,
                vec!["2026-10-26T04:00:00Z"],
            ),
            (
                "2026-10-26T03:59:59.999999Z",
                "2026-11-02T05:00:00.000001Z",
                Granularity::Week,
                vec!["2026-10-26T04:00:00Z", "2026-11-02T05:00:00Z"],
            ),
        ];
        for (from, to, granularity, expected) in cases {
            let got = report(&db, ORG, BOT, from, to, granularity).await;
            let expected: Vec<DateTime<Utc>> = expected.into_iter().map(at).collect();
            assert_eq!(
                starts(&got),
                expected,
                "{backend}: {granularity:?} [{from}, {to})"
            );
        }
        // The totals, answers, questions and histogram cover exactly the buckets in range.
        let second = report(
            &db,
            ORG,
            BOT,
            "2026-11-01T05:00:00.000001Z",
            "2026-11-01T06:00:00.000001Z",
            Granularity::Hour,
        )
        .await;
        assert_eq!(second.totals, sun_0100_est(), "{backend}");
        assert_eq!(
            second.top_answers,
            top(&[("a-refund", "How do I get a refund?", 1)])
        );
        assert_eq!(
            second.unmatched_questions,
            unmatched(&[("where is my parcel", 1)])
        );
        assert_eq!(
            second.confidence_histogram,
            histogram([0, 0, 0, 0, 0, 1, 1, 0, 0, 0])
        );
        // HOUR over a day cut at its start, a whole day and a day cut at its end: the
        // whole day is read from the day rows, the cut ones from their hours.
        let mixed = report(
            &db,
            ORG,
            BOT,
            "2026-10-31T13:30:00Z",
            "2026-11-02T13:00:00.000001Z",
            Granularity::Hour,
        )
        .await;
        assert_eq!(
            starts(&mixed),
            [
                "2026-11-01T03:00:00Z",
                "2026-11-01T05:00:00Z",
                "2026-11-01T06:00:00Z",
                "2026-11-01T19:00:00Z",
                "2026-11-02T13:00:00Z"
            ]
            .map(at)
        );
        assert_eq!(
            mixed.totals,
            figures(
                8,
                4,
                4,
                0.5,
                0.5,
                Some(1025.0),
                Some(4100.0 / 7000.0),
                Some(2.0)
            ),
            "{backend}"
        );
        assert_eq!(
            mixed.top_answers,
            top(&[
                ("a-hours", "What are your opening hours?", 2),
                ("a-refund", "How do I get a refund?", 1),
                ("a-ship", "How much is shipping?", 1),
            ])
        );
        assert_eq!(
            mixed.unmatched_questions,
            unmatched(&[
                ("can i pay with crypto", 1),
                ("do you sell gift cards", 1),
                ("where is my parcel", 1),
            ])
        );
        assert_eq!(
            mixed.confidence_histogram,
            histogram([0, 1, 1, 0, 0, 1, 1, 1, 0, 2])
        );
        // HOUR from Sunday's first moment to within it: only that day's first hours.
        let morning = report(
            &db,
            ORG,
            BOT,
            "2026-11-01T04:00:00Z",
            "2026-11-01T06:00:00.000001Z",
            Granularity::Hour,
        )
        .await;
        assert_eq!(
            morning.totals,
            figures(4, 2, 2, 0.5, 0.5, Some(1250.0), Some(0.5875), Some(3.0)),
            "{backend}"
        );
        assert_eq!(
            morning.top_answers,
            top(&[
                ("a-hours", "What are your opening hours?", 1),
                ("a-refund", "How do I get a refund?", 1),
            ])
        );
        assert_eq!(
            morning.unmatched_questions,
            unmatched(&[("can i pay with crypto", 1), ("where is my parcel", 1)])
        );
        assert_eq!(
            morning.confidence_histogram,
            histogram([0, 0, 1, 0, 0, 1, 1, 0, 0, 1])
        );
        // An empty range: zero rates, no averages, ten empty bins.
        let empty = report(
            &db,
            ORG,
            BOT,
            "2026-11-01T07:00:00Z",
            "2026-11-01T19:00:00Z",
            Granularity::Hour,
        )
        .await;
        assert!(empty.buckets.is_empty() && empty.top_answers.is_empty());
        assert!(empty.unmatched_questions.is_empty());
        assert_eq!(
            empty.totals,
            figures(0, 0, 0, 0.0, 0.0, None, None, None),
            "{backend}"
        );
        assert_eq!(empty.confidence_histogram, histogram([0; 10]));
    }
}

/// Whether two JSON values are equal, numbers within a relative 1e-12: a client's JSON
/// parser need not read the shortest decimal form of a float back to the same bits.
fn close(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::Number(a), Value::Number(b)) => match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) => (a - b).abs() <= 1e-12 * b.abs().max(1.0),
            _ => a == b,
        },
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| close(v, w)))
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(v, w)| close(v, w))
        }
        _ => got == want,
    }
}

fn assert_close(got: &Value, want: Value) {
    assert!(close(got, &want), "got {got}\nwant {want}");
}

/// The wiring of `chatbotReport` and the CSV route: the server over a database the fixture
/// was applied to directly (its log is empty, so the server's own runners leave the rows
/// as they are).
#[tokio::test]
async fn report_endpoints_over_graphql_and_csv() {
    const QUERY: &str =
        "query($bot: ID!, $from: DateTime!, $to: DateTime!, $g: ChatbotGranularity) {
        chatbotReport(botId: $bot, from: $from, to: $to, granularity: $g) {
            botId timezone granularity
            totals { interactions successful escalated successRate escalationRate
                     avgResponseMs avgConfidence avgRating }
            buckets { start interactions successful escalated successRate escalationRate
                      avgResponseMs avgConfidence avgRating }
            topAnswers { answerId question count }
            unmatchedQuestions { text count }
            confidenceHistogram { from to count } } }";
    for test_db in TestDb::all().await {
        let db = test_db.connect().await;
        apply(&db, &fixture(&db).await).await;
        db.close().await;
        let server = Server::start(&test_db).await;
        let admin = Server::token(ORG, "admin", "boss");
        let analyst = Server::token(ORG, "analyst", "ana");
        let vars = |bot: &str, from: &str, to: &str, g: &str| json!({ "bot": bot, "from": from, "to": to, "g": g });

        let data = server
            .data(&analyst, QUERY, vars(BOT, FROM, TO, "DAY"))
            .await;
        let report = &data["chatbotReport"];
        assert_eq!(report["timezone"], "America/New_York");
        assert_eq!(report["granularity"], "DAY");
        assert_close(
            &report["totals"],
            json!({ "interactions": 11, "successful": 6, "escalated": 5,
                    "successRate": 6.0 / 11.0, "escalationRate": 5.0 / 11.0,
                    "avgResponseMs": 6100.0 / 6.0, "avgConfidence": 0.62, "avgRating": 3.25 }),
        );
        assert_close(
            &report["buckets"][1],
            json!({ "start": "2026-11-01T04:00:00+00:00", "interactions": 5, "successful": 3,
                    "escalated": 2, "successRate": 0.6, "escalationRate": 0.4,
                    "avgResponseMs": 3200.0 / 3.0, "avgConfidence": 0.65, "avgRating": 3.0 }),
        );
        assert_eq!(report["buckets"].as_array().map(Vec::len), Some(3));
        assert_eq!(
            report["topAnswers"][0],
            json!({ "answerId": "a-hours", "question": "What are your opening hours?", "count": 3 })
        );
        assert_eq!(
            report["unmatchedQuestions"][0],
            json!({ "text": "can i pay with crypto", "count": 2 })
        );
        assert_eq!(
            report["confidenceHistogram"][9],
            json!({ "from": 0.9, "to": 1.0, "count": 3 })
        );

        let refused = |response: Value| common::error_code(&response).map(str::to_string);
        let agent = Server::token(ORG, "agent", "ann");
        let response = server
            .graphql(Some(&agent), QUERY, vars(BOT, FROM, TO, "DAY"))
            .await;
        assert_eq!(refused(response).as_deref(), Some("FORBIDDEN"));
        let response = server
            .graphql(Some(&admin), QUERY, vars(OTHER_BOT, FROM, TO, "DAY"))
            .await;
        assert_eq!(refused(response).as_deref(), Some("NOT_FOUND"));
        let response = server
            .graphql(Some(&admin), QUERY, vars(BOT, TO, FROM, "DAY"))
            .await;
        assert_eq!(refused(response).as_deref(), Some("BAD_USER_INPUT"));
        let response = server
            .graphql(None, QUERY, vars(BOT, FROM, TO, "DAY"))
            .await;
        assert_eq!(refused(response).as_deref(), Some("UNAUTHENTICATED"));

        // The CSV: one row per bucket, the same figures.
        let http = reqwest::Client::new();
        let get = |path: String, token: Option<&str>| {
            let mut request = http.get(format!("{}{path}", server.base_url));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            async move {
                let response = request.send().await.expect("GET");
                let status = response.status().as_u16();
                let kind = response
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                (status, kind, response.text().await.unwrap_or_default())
            }
        };
        let path = |bot: &str, query: &str| format!("/reports/chatbot/{bot}.csv?{query}");
        let range = format!("from={FROM}&to={TO}");
        let (status, kind, body) = get(
            path(BOT, &format!("{range}&granularity=HOUR")),
            Some(&admin),
        )
        .await;
        assert_eq!(
            (status, kind.as_str()),
            (200, "text/csv; charset=utf-8"),
            "{body}"
        );
        let expected = [
            "start,interactions,successful,escalated,successRate,escalationRate,avgResponseMs,avgConfidence,avgRating",
            &format!("2026-10-31T13:00:00Z,3,2,1,{},{},1000,0.7,4.5", 2.0 / 3.0, 1.0 / 3.0),
            "2026-11-01T03:00:00Z,1,0,1,0,1,,,",
            "2026-11-01T05:00:00Z,2,1,1,0.5,0.5,500,0.6,",
            "2026-11-01T06:00:00Z,2,1,1,0.5,0.5,2000,0.575,3",
            "2026-11-01T19:00:00Z,1,1,0,1,0,700,0.9,",
            "2026-11-02T13:00:00Z,2,1,1,0.5,0.5,900,0.425,1",
        ];
        assert_eq!(body, format!("{}\n", expected.join("\n")));
        let (status, _, body) = get(
            path(
                BOT,
                "from=2026-10-26T00:00:00-04:00&to=2026-11-09T00:00:00Z&granularity=week",
            ),
            Some(&analyst),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body.lines().count(), 3, "{body}");
        assert!(body.contains("\n2026-10-26T04:00:00Z,9,5,4,"), "{body}");
        // Without granularity: DAY.
        let (status, _, body) = get(path(BOT, &range), Some(&admin)).await;
        assert_eq!((status, body.lines().count()), (200, 4), "{body}");

        let bad_token = "not-a-token";
        for (query, token, status) in [
            (range.clone(), None, 401),
            (range.clone(), Some(bad_token), 401),
            (range.clone(), Some(agent.as_str()), 403),
            (
                format!("{range}&granularity=MONTH"),
                Some(admin.as_str()),
                400,
            ),
            (format!("to={TO}"), Some(admin.as_str()), 400),
            (format!("from=yesterday&to={TO}"), Some(admin.as_str()), 400),
            (format!("from={TO}&to={FROM}"), Some(admin.as_str()), 400),
        ] {
            let (got, _, body) = get(path(BOT, &query), token).await;
            assert_eq!(got, status, "{query} {token:?}: {body}");
        }
        for bot in [OTHER_BOT, "no-such-bot"] {
            let (got, _, _) = get(path(bot, &range), Some(&admin)).await;
            assert_eq!(got, 404, "{bot}");
        }
        let (got, _, _) = get(format!("/reports/chatbot/{BOT}?{range}"), Some(&admin)).await;
        assert_eq!(got, 404);
        server.stop().await;
    }
}
