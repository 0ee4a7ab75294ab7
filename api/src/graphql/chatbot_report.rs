//! The chatbot report of the schema (`CONTRACT.md`, "Chatbot"):
//! `chatbotReport(botId, from, to, granularity)`, read from the "chatbot_analytics"
//! projection ([`projections::chatbot`]). Admins and analysts read it; the same report is
//! served as CSV by [`crate::reports`].
//!
//! Buckets start on the bot's local hour, local midnight (DAY) or the local midnight of the
//! Monday that starts the week (WEEK), given as UTC instants; a fall-back day has two
//! buckets for its repeated local hour. Buckets without interactions are left out.

use async_graphql::{Context, Enum, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use projections::chatbot;

use super::{caller, helpdesk};
use crate::reports::{chatbot_report, DEFAULT_GRANULARITY};

/// The width of a report's buckets, in the bot's own timezone.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "projections::chatbot::Granularity")]
pub enum ChatbotGranularity {
    /// One bucket per local hour.
    Hour,
    /// One bucket per local day, from local midnight.
    Day,
    /// One bucket per local week, from Monday's local midnight (ISO weeks).
    Week,
}

/// How the bot did over a bucket or a whole report.
#[derive(SimpleObject, Clone, Copy, Debug)]
pub struct ChatbotFigures {
    /// Questions the bot answered or handed off.
    pub interactions: i64,
    /// Answered by the bot.
    pub successful: i64,
    /// Handed off to the humans (low confidence or outside the active hours).
    pub escalated: i64,
    /// successful / interactions (0 without interactions).
    pub success_rate: f64,
    /// escalated / interactions (0 without interactions).
    pub escalation_rate: f64,
    /// Mean response time of the answered questions, in milliseconds.
    pub avg_response_ms: Option<f64>,
    /// Mean confidence of the questions that were scored (not those outside hours).
    pub avg_confidence: Option<f64>,
    /// Mean rating (1..5) of the rated answers, each at its latest rating.
    pub avg_rating: Option<f64>,
}

impl From<chatbot::Figures> for ChatbotFigures {
    fn from(f: chatbot::Figures) -> Self {
        Self {
            interactions: f.interactions,
            successful: f.successful,
            escalated: f.escalated,
            success_rate: f.success_rate,
            escalation_rate: f.escalation_rate,
            avg_response_ms: f.avg_response_ms,
            avg_confidence: f.avg_confidence,
            avg_rating: f.avg_rating,
        }
    }
}

/// One bucket: its start and its figures.
#[derive(SimpleObject, Clone, Copy, Debug)]
pub struct ChatbotBucket {
    /// The UTC instant of the bucket's local hour, midnight or Monday midnight.
    pub start: DateTime<Utc>,
    #[graphql(flatten)]
    figures: ChatbotFigures,
}

/// An answer and how often the bot gave it.
#[derive(SimpleObject, Clone, Debug)]
pub struct ChatbotTopAnswer {
    /// The answer.
    pub answer_id: ID,
    /// The question it answers.
    pub question: Option<String>,
    /// How often it was given.
    pub count: i64,
}

/// A question the bot could not match (normalised: lower case, no accents or punctuation),
/// and how often customers asked it.
#[derive(SimpleObject, Clone, Debug)]
pub struct ChatbotUnmatchedQuestion {
    /// The question.
    pub text: String,
    /// How often.
    pub count: i64,
}

/// Interactions whose confidence was at least `from` and below `to` (the last bin includes
/// 1.0).
#[derive(SimpleObject, Clone, Copy, Debug)]
pub struct ChatbotConfidenceBin {
    /// Lower bound.
    pub from: f64,
    /// Upper bound.
    pub to: f64,
    /// Interactions in the bin.
    pub count: i64,
}

/// How a bot performed over a range.
#[derive(SimpleObject, Clone, Debug)]
pub struct ChatbotReport {
    /// The bot.
    pub bot_id: ID,
    /// The bot's timezone, whose local hours the buckets follow.
    pub timezone: String,
    /// The granularity of the buckets.
    pub granularity: ChatbotGranularity,
    /// The figures of every bucket of the report together.
    pub totals: ChatbotFigures,
    /// The buckets whose start is in [from, to) and that hold interactions, oldest first.
    pub buckets: Vec<ChatbotBucket>,
    /// The answers given most (at most 10), most first.
    pub top_answers: Vec<ChatbotTopAnswer>,
    /// The unmatched questions (at most 50), most frequent first, ties by text.
    pub unmatched_questions: Vec<ChatbotUnmatchedQuestion>,
    /// Ten bins of 0.1 from 0 to 1.
    pub confidence_histogram: Vec<ChatbotConfidenceBin>,
}

/// The chatbot report query.
#[derive(Default)]
pub struct ChatbotReportQuery;

#[Object]
impl ChatbotReportQuery {
    /// How a bot performed over the buckets whose start is in [from, to), in the bot's own
    /// timezone (DST-correct). Admin or analyst. `granularity` defaults to DAY.
    async fn chatbot_report(
        &self,
        ctx: &Context<'_>,
        bot_id: ID,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        granularity: Option<ChatbotGranularity>,
    ) -> async_graphql::Result<ChatbotReport> {
        let caller = caller(ctx)?;
        let helpdesk = helpdesk(ctx)?;
        let granularity = granularity.map_or(DEFAULT_GRANULARITY, Into::into);
        let report = chatbot_report(&helpdesk.db, caller, &bot_id, from, to, granularity).await?;
        Ok(ChatbotReport {
            bot_id: ID(bot_id.trim().to_string()),
            timezone: report.timezone,
            granularity: granularity.into(),
            totals: report.totals.into(),
            buckets: report
                .buckets
                .into_iter()
                .map(|b| ChatbotBucket {
                    start: b.start,
                    figures: b.figures.into(),
                })
                .collect(),
            top_answers: report
                .top_answers
                .into_iter()
                .map(|a| ChatbotTopAnswer {
                    answer_id: ID(a.answer_id),
                    question: a.question,
                    count: a.count,
                })
                .collect(),
            unmatched_questions: report
                .unmatched_questions
                .into_iter()
                .map(|q| ChatbotUnmatchedQuestion {
                    text: q.text,
                    count: q.count,
                })
                .collect(),
            confidence_histogram: report
                .confidence_histogram
                .into_iter()
                .map(|b| ChatbotConfidenceBin {
                    from: b.from,
                    to: b.to,
                    count: b.count,
                })
                .collect(),
        })
    }
}
