//! Chatbots (issue 5): admins create bots, give them answers and active hours; the
//! inbound flow asks [`Helpdesk::bot_turn`] whether the conversation's bot answers a
//! customer's message, hands it to the humans, or is not there at all.
//!
//! Inside the active hours the message is scored against the answers
//! ([`domain::bot::best_answer`]): at or above the bot's threshold the answer goes out
//! through the outbox and the interaction is recorded (question, answer, confidence,
//! response time); below it the question is recorded as unmatched and the humans take
//! over. Outside the hours the bot stays silent, sends the outside-hours message if there
//! is one, and the humans take over.

use std::time::Instant;

use chrono::{DateTime, Utc};
use domain::actor::Role;
use domain::bot::{best_answer, BotAction, BotAnswer};
use domain::conversation::{Conversation, ConversationAction, HandOffReason};
use domain::schedule::Schedule;
use projections::personal_data::CustomerKey;

use crate::auth::Caller;
use crate::conversations::derived_id;
use crate::error::{ApiError, ApiResult};
use crate::helpdesk::{Helpdesk, Origin, Wait};

/// What the bot did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BotTurn {
    /// The conversation has no bot: the humans' flow goes on as without one.
    NoBot,
    /// The bot answered; nothing else happens.
    Answered,
    /// The bot handed the customer to the humans (their flow goes on).
    HandedOff,
}

/// A customer message the bot looks at.
pub struct BotQuestion<'a> {
    /// The conversation.
    pub conversation_id: &'a str,
    /// The message (the interaction's id derives from it).
    pub message_id: &'a str,
    /// Its text.
    pub text: &'a str,
    /// When it arrived (for the response time).
    pub received: Instant,
    /// The customer's key, to seal the question and the answer.
    pub key: &'a CustomerKey,
}

impl Helpdesk {
    /// Creates a bot; returns its id.
    pub async fn create_bot(
        &self,
        caller: &Caller,
        request_id: &str,
        name: String,
        confidence_threshold: Option<f64>,
        channel_ids: Vec<String>,
    ) -> ApiResult<String> {
        let id = uuid::Uuid::new_v4().to_string();
        self.on_bot(
            caller,
            request_id,
            &id,
            BotAction::Create {
                name,
                confidence_threshold,
                channel_ids,
            },
            "createBot",
        )
        .await?;
        Ok(id)
    }

    /// Adds an answer to a bot; returns its id.
    pub async fn add_bot_answer(
        &self,
        caller: &Caller,
        request_id: &str,
        bot_id: &str,
        question: String,
        answer: String,
        keywords: Vec<String>,
    ) -> ApiResult<String> {
        let answer_id = uuid::Uuid::new_v4().to_string();
        self.on_bot(
            caller,
            request_id,
            bot_id,
            BotAction::AddAnswer(BotAnswer {
                answer_id: answer_id.clone(),
                question,
                answer,
                keywords,
            }),
            "addBotAnswer",
        )
        .await?;
        Ok(answer_id)
    }

    /// Replaces a bot's active hours.
    pub async fn set_bot_schedule(
        &self,
        caller: &Caller,
        request_id: &str,
        bot_id: &str,
        schedule: Schedule,
    ) -> ApiResult<()> {
        self.on_bot(
            caller,
            request_id,
            bot_id,
            BotAction::SetSchedule(schedule),
            "setBotSchedule",
        )
        .await
    }

    /// Rates one of a bot's answers (1..5); returns the interaction's conversation.
    pub async fn rate_bot_interaction(
        &self,
        caller: &Caller,
        request_id: &str,
        interaction_id: &str,
        rating: i32,
    ) -> ApiResult<(String, String)> {
        let Some((conversation_id, bot_id)) = projections::conversations::interaction_conversation(
            &self.db,
            &caller.organization,
            interaction_id,
        )
        .await?
        else {
            return Err(ApiError::NotFound("bot interaction not found".into()));
        };
        self.execute(
            &self.conversations,
            &conversation_id,
            ConversationAction::RateBotInteraction {
                interaction_id: interaction_id.to_string(),
                rating,
            },
            &Origin::of(caller, request_id),
            "rateBotInteraction",
            Wait::ForProjections,
        )
        .await?;
        Ok((conversation_id, bot_id))
    }

    async fn on_bot(
        &self,
        caller: &Caller,
        request_id: &str,
        bot_id: &str,
        action: BotAction,
        name: &'static str,
    ) -> ApiResult<()> {
        if caller.actor.role != Role::Admin {
            return Err(ApiError::Forbidden("only admins manage bots".into()));
        }
        self.execute(
            &self.bots,
            bot_id,
            action,
            &Origin::of(caller, request_id),
            name,
            Wait::ForProjections,
        )
        .await?;
        Ok(())
    }

    /// The bot's turn on a customer message of a conversation without a ticket (see the
    /// module documentation). `now` decides the active hours.
    pub(crate) async fn bot_turn(
        &self,
        conversation: &Conversation,
        question: BotQuestion<'_>,
        origin: &Origin,
        now: DateTime<Utc>,
    ) -> ApiResult<BotTurn> {
        let Some(bot) = projections::bots::bot_for_channel(
            &self.db,
            &origin.organization,
            conversation.channel_id(),
        )
        .await?
        else {
            return Ok(BotTurn::NoBot);
        };
        let interaction_id = derived_id(&["interaction", question.message_id]);
        if conversation.has_interaction(&interaction_id) {
            // A flow run again for the same message: the bot already took its turn.
            return Ok(if conversation.bot_answered(&interaction_id) {
                BotTurn::Answered
            } else {
                BotTurn::HandedOff
            });
        }
        let schedule = bot.schedule()?;
        let sealed_question = question.key.seal(question.text);
        let step = |action| {
            self.execute(
                &self.conversations,
                question.conversation_id,
                action,
                origin,
                "botTurn",
                Wait::No,
            )
        };
        if !schedule.is_active(now) {
            if let Some(message) = &schedule.outside_hours_message {
                step(ConversationAction::SendSystemMessage {
                    message_id: derived_id(&["reply", question.message_id, "outside-hours"]),
                    text: question.key.seal(message),
                    announces: None,
                    offers_menu: false,
                })
                .await?;
            }
            step(ConversationAction::BotHandOff {
                interaction_id,
                bot_id: bot.id.clone(),
                reason: HandOffReason::OutsideHours,
                confidence: None,
                question: sealed_question,
            })
            .await?;
            return Ok(BotTurn::HandedOff);
        }
        let answers = bot.answers()?;
        let best = best_answer(question.text, &answers);
        match best {
            Some((answer, confidence)) if confidence >= bot.confidence_threshold => {
                let response_ms = question.received.elapsed().as_millis() as i64;
                step(ConversationAction::BotAnswer {
                    interaction_id,
                    bot_id: bot.id.clone(),
                    answer_id: answer.answer_id.clone(),
                    confidence,
                    response_ms,
                    question: sealed_question,
                    message_id: derived_id(&["reply", question.message_id, "bot"]),
                    text: question.key.seal(&answer.answer),
                })
                .await?;
                Ok(BotTurn::Answered)
            }
            best => {
                step(ConversationAction::BotHandOff {
                    interaction_id,
                    bot_id: bot.id.clone(),
                    reason: HandOffReason::LowConfidence,
                    confidence: Some(best.map_or(0.0, |(_, c)| c)),
                    question: sealed_question,
                })
                .await?;
                Ok(BotTurn::HandedOff)
            }
        }
    }
}
