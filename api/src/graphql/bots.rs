//! The chatbot part of the schema (`CONTRACT.md`, "Chatbot"):
//! `createBot`, `addBotAnswer`, `setBotSchedule`, `rateBotInteraction`, `bots`,
//! `botStatus`.

use async_graphql::{Context, InputObject, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use domain::schedule::{Schedule, WindowInput};
use domain::Role;
use projections::bots::BotRecord;

use super::{caller_in, helpdesk, parse_uuid, request_id};
use crate::error::{ApiError, ApiResult};

/// A chatbot.
#[derive(SimpleObject)]
pub struct Bot {
    /// Opaque id.
    pub id: ID,
    /// Its name.
    pub name: String,
    /// The confidence (0..1) it needs before it answers.
    pub confidence_threshold: f64,
    /// The channels it serves; empty: all the organization's.
    pub channel_ids: Vec<ID>,
    /// Its answers, in the order they were added.
    pub answers: Vec<BotAnswer>,
    /// Its active hours.
    pub schedule: BotSchedule,
}

/// One answer of a bot.
#[derive(SimpleObject)]
pub struct BotAnswer {
    /// Opaque id.
    pub id: ID,
    /// The question it answers.
    pub question: String,
    /// The answer sent.
    pub answer: String,
    /// Words that point to it (normalised).
    pub keywords: Vec<String>,
}

/// A bot's active hours.
#[derive(SimpleObject)]
pub struct BotSchedule {
    /// Off: the bot answers at any time.
    pub enabled: bool,
    /// IANA timezone.
    pub timezone: String,
    /// Windows of local time.
    pub windows: Vec<BotWindow>,
    /// Sent outside the windows.
    pub outside_hours_message: Option<String>,
}

/// A window of local time.
#[derive(SimpleObject)]
pub struct BotWindow {
    /// 0 = Sunday ... 6 = Saturday.
    pub day_of_week: i64,
    /// "HH:MM".
    pub start: String,
    /// "HH:MM" (before start: the next day).
    pub end: String,
}

/// Whether a bot answers at an instant.
#[derive(SimpleObject)]
pub struct BotStatus {
    /// Whether it answers.
    pub active: bool,
    /// When that changes next (null: never, within the next week).
    pub next_change: Option<DateTime<Utc>>,
}

/// A rated bot interaction.
#[derive(SimpleObject)]
pub struct BotInteraction {
    /// Opaque id.
    pub id: ID,
    /// The bot.
    pub bot_id: ID,
    /// The conversation.
    pub conversation_id: ID,
    /// 1..5.
    pub rating: i64,
}

impl Bot {
    fn from_record(record: BotRecord) -> ApiResult<Self> {
        let schedule = record.schedule()?;
        Ok(Self {
            id: ID(record.id.clone()),
            name: record.name.clone(),
            confidence_threshold: record.confidence_threshold,
            channel_ids: record.channel_ids()?.into_iter().map(ID).collect(),
            answers: record
                .answers()?
                .into_iter()
                .map(|a| BotAnswer {
                    id: ID(a.answer_id),
                    question: a.question,
                    answer: a.answer,
                    keywords: a.keywords,
                })
                .collect(),
            schedule: BotSchedule {
                enabled: schedule.enabled,
                timezone: schedule.timezone,
                windows: schedule
                    .windows
                    .iter()
                    .map(|w| BotWindow {
                        day_of_week: i64::from(w.day_of_week),
                        start: w.start.format("%H:%M").to_string(),
                        end: w.end.format("%H:%M").to_string(),
                    })
                    .collect(),
                outside_hours_message: schedule.outside_hours_message,
            },
        })
    }
}

async fn load(ctx: &Context<'_>, organization: &str, id: &str) -> ApiResult<Bot> {
    let record = projections::bots::bot(&helpdesk(ctx)?.db, organization, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("bot not found".into()))?;
    Bot::from_record(record)
}

/// Bot queries.
#[derive(Default)]
pub struct BotQuery;

#[Object]
impl BotQuery {
    /// The organization's bots (admins, agents, analysts).
    async fn bots(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Bot>> {
        let caller = caller_in(ctx, &[Role::Admin, Role::Agent, Role::Analyst], "read bots")?;
        let records = projections::bots::bots(&helpdesk(ctx)?.db, &caller.organization)
            .await
            .map_err(ApiError::from)?;
        Ok(records
            .into_iter()
            .map(Bot::from_record)
            .collect::<ApiResult<Vec<_>>>()?)
    }

    /// Whether the bot answers at `at` (default now) and when that changes next.
    async fn bot_status(
        &self,
        ctx: &Context<'_>,
        bot_id: ID,
        at: Option<DateTime<Utc>>,
    ) -> async_graphql::Result<BotStatus> {
        let caller = caller_in(
            ctx,
            &[Role::Admin, Role::Agent, Role::Analyst, Role::Service],
            "read bots",
        )?;
        let id = parse_uuid(&bot_id, "bot")?;
        let record = projections::bots::bot(&helpdesk(ctx)?.db, &caller.organization, &id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::NotFound("bot not found".into()))?;
        let schedule = record.schedule().map_err(ApiError::from)?;
        let at = at.unwrap_or_else(Utc::now);
        Ok(BotStatus {
            active: schedule.is_active(at),
            next_change: schedule.next_change(at),
        })
    }
}

/// `createBot` input.
#[derive(InputObject)]
pub struct CreateBotInput {
    /// Its name.
    pub name: String,
    /// 0..1, default 0.6.
    pub confidence_threshold: Option<f64>,
    /// The channels it serves; none: all the organization's.
    pub channel_ids: Option<Vec<ID>>,
}

/// A window of `setBotSchedule`.
#[derive(InputObject)]
pub struct BotWindowInput {
    /// 0 = Sunday ... 6 = Saturday.
    pub day_of_week: i64,
    /// "HH:MM".
    pub start: String,
    /// "HH:MM"; before start: the window runs past midnight.
    pub end: String,
}

/// `setBotSchedule` input.
#[derive(InputObject)]
pub struct BotScheduleInput {
    /// Off: the bot answers at any time.
    pub enabled: bool,
    /// IANA timezone, e.g. Asia/Jakarta.
    pub timezone: String,
    /// The active windows.
    pub windows: Vec<BotWindowInput>,
    /// Sent to customers who write outside the windows.
    pub outside_hours_message: Option<String>,
}

/// Bot mutations.
#[derive(Default)]
pub struct BotMutation;

#[Object]
impl BotMutation {
    /// Creates a bot (admin).
    async fn create_bot(
        &self,
        ctx: &Context<'_>,
        input: CreateBotInput,
    ) -> async_graphql::Result<Bot> {
        let caller = caller_in(ctx, &[Role::Admin], "manage bots")?;
        let channel_ids = input
            .channel_ids
            .unwrap_or_default()
            .iter()
            .map(|c| parse_uuid(c, "channel"))
            .collect::<ApiResult<Vec<_>>>()?;
        let helpdesk = helpdesk(ctx)?;
        for channel in &channel_ids {
            let known = projections::conversations::channel(&helpdesk.db, channel)
                .await
                .map_err(ApiError::from)?
                .is_some_and(|(owner, _, _)| owner == caller.organization);
            if !known {
                return Err(ApiError::bad_input(format!("unknown channel '{channel}'")).into());
            }
        }
        let id = helpdesk
            .create_bot(
                caller,
                &request_id(ctx),
                input.name,
                input.confidence_threshold,
                channel_ids,
            )
            .await?;
        Ok(load(ctx, &caller.organization, &id).await?)
    }

    /// Adds an answer to a bot (admin).
    async fn add_bot_answer(
        &self,
        ctx: &Context<'_>,
        bot_id: ID,
        question: String,
        answer: String,
        keywords: Option<Vec<String>>,
    ) -> async_graphql::Result<BotAnswer> {
        let caller = caller_in(ctx, &[Role::Admin], "manage bots")?;
        let bot_id = parse_uuid(&bot_id, "bot")?;
        let answer_id = helpdesk(ctx)?
            .add_bot_answer(
                caller,
                &request_id(ctx),
                &bot_id,
                question,
                answer,
                keywords.unwrap_or_default(),
            )
            .await?;
        let bot = load(ctx, &caller.organization, &bot_id).await?;
        Ok(bot
            .answers
            .into_iter()
            .find(|a| a.id.as_str() == answer_id)
            .ok_or_else(|| ApiError::internal("the answer is not in the read model"))?)
    }

    /// Replaces a bot's active hours (admin).
    async fn set_bot_schedule(
        &self,
        ctx: &Context<'_>,
        bot_id: ID,
        input: BotScheduleInput,
    ) -> async_graphql::Result<Bot> {
        let caller = caller_in(ctx, &[Role::Admin], "manage bots")?;
        let bot_id = parse_uuid(&bot_id, "bot")?;
        let windows: Vec<WindowInput> = input
            .windows
            .into_iter()
            .map(|w| WindowInput {
                day_of_week: w.day_of_week,
                start: w.start,
                end: w.end,
            })
            .collect();
        let schedule = Schedule::new(
            input.enabled,
            &input.timezone,
            &windows,
            input.outside_hours_message,
        )
        .map_err(|e| ApiError::refused("bot", e))?;
        helpdesk(ctx)?
            .set_bot_schedule(caller, &request_id(ctx), &bot_id, schedule)
            .await?;
        Ok(load(ctx, &caller.organization, &bot_id).await?)
    }

    /// Rates one of a bot's answers, 1..5 (a later rating replaces it).
    async fn rate_bot_interaction(
        &self,
        ctx: &Context<'_>,
        interaction_id: ID,
        rating: i32,
    ) -> async_graphql::Result<BotInteraction> {
        let caller = caller_in(
            ctx,
            &[Role::Admin, Role::Agent, Role::Service],
            "rate bot answers",
        )?;
        let id = parse_uuid(&interaction_id, "interaction")?;
        let (conversation_id, bot_id) = helpdesk(ctx)?
            .rate_bot_interaction(caller, &request_id(ctx), &id, rating)
            .await?;
        Ok(BotInteraction {
            id: ID(id),
            bot_id: ID(bot_id),
            conversation_id: ID(conversation_id),
            rating: i64::from(rating),
        })
    }
}
