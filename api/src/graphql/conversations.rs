//! The conversation part of the schema (`CONTRACT.md`, "Conversations and channels"):
//! `receiveMessage`, `sendReply`, `markConversationRead`, `configureChannel`,
//! `conversation`, `conversations`. Personal data is opened here, per request, with the
//! customers' keys; an erased customer's data reads as "[erased]".

use std::collections::HashMap;

use async_graphql::{ComplexObject, Context, Enum, InputObject, Object, SimpleObject, ID};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use domain::channel::ChannelProfile;
use domain::Role;
use projections::conversations::{ConversationFilter, ConversationRecord, MessageRecord};
use projections::db::parse_timestamp;
use projections::personal_data::{self, CustomerKey};

use super::types::{connection, Agent, PageInfo, Ticket};
use super::{caller, caller_in, helpdesk, page_size, parse_uuid, request_id};
use crate::conversations::{open_sealed, InboundMessage};
use crate::error::{ApiError, ApiResult};

/// Where a conversation takes place.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "domain::conversation::Channel")]
pub enum Channel {
    /// WhatsApp Cloud API.
    Whatsapp,
    /// Telegram Bot API.
    Telegram,
    /// A web chat widget.
    Web,
    /// Any other integration.
    Api,
}

/// Who answers the customer.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "domain::conversation::ConversationMode")]
pub enum ConversationMode {
    /// The bot and the division menu.
    Bot,
    /// The agents.
    Agent,
}

/// Which way a message went.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum MessageDirection {
    /// From the customer.
    Inbound,
    /// To the customer.
    Outbound,
}

/// A customer on a channel, with the messages both ways.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Conversation {
    /// Opaque id.
    pub id: ID,
    /// The channel.
    pub channel: Channel,
    /// The customer (one per person and channel).
    pub customer_id: ID,
    /// The customer's handle on the channel (phone number, chat id).
    pub external_id: String,
    /// The customer's display name.
    pub customer_name: Option<String>,
    /// BOT or AGENT.
    pub mode: ConversationMode,
    /// The division the customer chose.
    pub division_id: Option<ID>,
    /// Customer messages not read yet.
    pub unread_count: i64,
    /// Whether the customer waits for a human.
    pub needs_human: bool,
    /// The last message either way.
    pub last_message_at: DateTime<Utc>,
    /// When it started.
    pub created_at: DateTime<Utc>,
    #[graphql(skip)]
    record: ConversationRecord,
}

#[ComplexObject]
impl Conversation {
    /// The conversation's current (or last) ticket.
    async fn ticket(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Ticket>> {
        let Some(ticket_id) = &self.record.ticket_id else {
            return Ok(None);
        };
        let helpdesk = helpdesk(ctx)?;
        let record =
            projections::tickets::ticket(&helpdesk.db, &self.record.organization_id, ticket_id)
                .await
                .map_err(ApiError::from)?;
        Ok(record.map(Ticket::from_record).transpose()?)
    }

    /// The agent holding the conversation's active ticket.
    async fn assignee(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Agent>> {
        let Some(agent_id) = &self.record.assignee_id else {
            return Ok(None);
        };
        let helpdesk = helpdesk(ctx)?;
        let record =
            projections::agents::agent(&helpdesk.db, &self.record.organization_id, agent_id)
                .await
                .map_err(ApiError::from)?;
        Ok(record.map(Agent::from))
    }

    /// Messages, oldest first.
    async fn messages(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<MessageConnection> {
        let helpdesk = helpdesk(ctx)?;
        let first = page_size(first)?;
        let after = after.as_deref().map(parse_message_cursor).transpose()?;
        let (rows, more, total) = projections::conversations::messages(
            &helpdesk.db,
            &self.record.organization_id,
            &self.record.id,
            first,
            after,
        )
        .await
        .map_err(ApiError::from)?;
        let keys = personal_data::keys(
            &helpdesk.db,
            &self.record.organization_id,
            std::slice::from_ref(&self.record.customer_id),
        )
        .await
        .map_err(ApiError::from)?;
        let edges = rows
            .into_iter()
            .map(|row| {
                Ok(MessageEdge {
                    cursor: message_cursor(row.position),
                    node: Message::from_record(row, &keys, &self.record.customer_id)?,
                })
            })
            .collect::<ApiResult<Vec<_>>>()?;
        Ok(MessageConnection::new(edges, more, total))
    }
}

impl Conversation {
    fn from_record(
        record: ConversationRecord,
        keys: &HashMap<String, CustomerKey>,
    ) -> ApiResult<Self> {
        let customer = record.customer_id.as_str();
        Ok(Self {
            id: ID(record.id.clone()),
            channel: parse_enum::<domain::conversation::Channel>(&record.channel)?.into(),
            customer_id: ID(record.customer_id.clone()),
            external_id: open_sealed(keys, customer, &record.external_id)?,
            customer_name: record
                .customer_name
                .as_deref()
                .map(|n| open_sealed(keys, customer, n))
                .transpose()?,
            mode: parse_enum::<domain::conversation::ConversationMode>(&record.mode)?.into(),
            division_id: record.division_id.clone().map(ID),
            unread_count: record.unread_count,
            needs_human: record.needs_human,
            last_message_at: parse_timestamp(&record.last_message_at)?,
            created_at: parse_timestamp(&record.created_at)?,
            record,
        })
    }
}

/// One message, its text opened with the customer's key.
pub(crate) async fn message_by_id(
    helpdesk: &crate::helpdesk::Helpdesk,
    organization: &str,
    conversation_id: &str,
    message_id: &str,
) -> ApiResult<Option<Message>> {
    let Some(conversation) =
        projections::conversations::conversation(&helpdesk.db, organization, conversation_id)
            .await?
    else {
        return Ok(None);
    };
    let Some(row) = projections::conversations::message(&helpdesk.db, organization, message_id)
        .await?
        .filter(|m| m.conversation_id == conversation_id)
    else {
        return Ok(None);
    };
    let keys = personal_data::keys(
        &helpdesk.db,
        organization,
        std::slice::from_ref(&conversation.customer_id),
    )
    .await?;
    Ok(Some(Message::from_record(
        row,
        &keys,
        &conversation.customer_id,
    )?))
}

/// One conversation of the organization, personal data opened.
pub(crate) async fn conversation_by_id(
    helpdesk: &crate::helpdesk::Helpdesk,
    organization: &str,
    id: &str,
) -> ApiResult<Option<Conversation>> {
    let Some(record) =
        projections::conversations::conversation(&helpdesk.db, organization, id).await?
    else {
        return Ok(None);
    };
    let keys = personal_data::keys(
        &helpdesk.db,
        organization,
        std::slice::from_ref(&record.customer_id),
    )
    .await?;
    Ok(Some(Conversation::from_record(record, &keys)?))
}

fn parse_enum<T: serde::de::DeserializeOwned>(stored: &str) -> ApiResult<T> {
    serde_json::from_value(serde_json::Value::String(stored.to_string()))
        .map_err(|e| ApiError::internal(format!("stored enum {stored:?}: {e}")))
}

/// One message of a conversation.
#[derive(SimpleObject)]
pub struct Message {
    /// Opaque id.
    pub id: ID,
    /// INBOUND or OUTBOUND.
    pub direction: MessageDirection,
    /// "customer", "system" or the id of the agent who wrote a reply.
    pub author: String,
    /// The text ("[erased]" once the customer's data was erased).
    pub text: String,
    /// When it was received or queued.
    pub created_at: DateTime<Utc>,
    /// Outbound messages: PENDING, SENDING, DELIVERED or DEAD; null for inbound ones.
    pub delivery_status: Option<String>,
    /// A bot's answer: its interaction, for `rateBotInteraction`.
    pub bot_interaction_id: Option<ID>,
}

impl Message {
    fn from_record(
        row: MessageRecord,
        keys: &HashMap<String, CustomerKey>,
        customer_id: &str,
    ) -> ApiResult<Self> {
        let direction = if row.direction == "INBOUND" {
            MessageDirection::Inbound
        } else {
            MessageDirection::Outbound
        };
        let author = match (&row.author_id, row.kind.as_str()) {
            (Some(agent), _) => agent.clone(),
            (None, "CUSTOMER") => "customer".into(),
            (None, _) => "system".into(),
        };
        Ok(Self {
            id: ID(row.id),
            direction,
            author,
            text: open_sealed(keys, customer_id, &row.text)?,
            created_at: parse_timestamp(&row.created_at)?,
            delivery_status: row.delivery_status,
            bot_interaction_id: row.bot_interaction_id.map(ID),
        })
    }
}

connection!(MessageConnection, MessageEdge, Message);
connection!(ConversationConnection, ConversationEdge, Conversation);
connection!(OutboxConnection, OutboxEdge, OutboxJob);

fn message_cursor(position: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("message:{position}"))
}

fn parse_message_cursor(cursor: &str) -> ApiResult<i64> {
    URL_SAFE_NO_PAD
        .decode(cursor.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| t.strip_prefix("message:").and_then(|n| n.parse().ok()))
        .ok_or_else(|| ApiError::bad_input("malformed cursor"))
}

fn conversation_cursor(record: &ConversationRecord) -> String {
    URL_SAFE_NO_PAD.encode(format!(
        "conversation:{}|{}",
        record.last_message_at, record.id
    ))
}

fn parse_conversation_cursor(cursor: &str) -> ApiResult<(String, String)> {
    URL_SAFE_NO_PAD
        .decode(cursor.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| {
            let (at, id) = t.strip_prefix("conversation:")?.split_once('|')?;
            parse_timestamp(at).ok()?;
            Some((at.to_string(), id.to_string()))
        })
        .ok_or_else(|| ApiError::bad_input("malformed cursor"))
}

/// The contract's conversation filter.
#[derive(InputObject, Default)]
pub struct ConversationFilterInput {
    /// BOT or AGENT.
    pub mode: Option<ConversationMode>,
    /// The division chosen.
    pub division_id: Option<ID>,
    /// The agent holding the active ticket.
    pub assignee_id: Option<ID>,
    /// Only conversations with unread customer messages.
    pub unread_only: Option<bool>,
}

/// A message waiting for, in, or after delivery (admins).
#[derive(SimpleObject)]
pub struct OutboxJob {
    /// The outbound message's id (also the job's).
    pub id: ID,
    /// Its conversation.
    pub conversation_id: ID,
    /// The channel it goes out on.
    pub channel_id: ID,
    /// 0 system, 1 reply, 2 bulk: lower goes first.
    pub priority: i64,
    /// PENDING, SENDING, DELIVERED or DEAD.
    pub status: String,
    /// Attempts made.
    pub attempts: i64,
    /// Sent with every attempt, so the provider can recognise a repeat.
    pub idempotency_key: String,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it was queued.
    pub queued_at: DateTime<Utc>,
    /// When a PENDING job is due.
    pub next_attempt_at: DateTime<Utc>,
    /// When the provider accepted it.
    pub delivered_at: Option<DateTime<Utc>>,
    /// The provider's id of the delivered message.
    pub provider_message_id: Option<String>,
}

impl OutboxJob {
    fn from_record(record: crate::outbox::OutboxJobRecord) -> ApiResult<Self> {
        Ok(Self {
            id: ID(record.message_id),
            conversation_id: ID(record.conversation_id),
            channel_id: ID(record.channel_id),
            priority: record.priority,
            status: record.status,
            attempts: record.attempts,
            idempotency_key: record.idempotency_key,
            last_error: record.last_error,
            queued_at: parse_timestamp(&record.queued_at)?,
            next_attempt_at: parse_timestamp(&record.next_attempt_at)?,
            delivered_at: record
                .delivered_at
                .as_deref()
                .map(parse_timestamp)
                .transpose()?,
            provider_message_id: record.provider_message_id,
        })
    }
}

fn outbox_cursor((queued_at, id): (String, String)) -> String {
    URL_SAFE_NO_PAD.encode(format!("outbox:{queued_at}|{id}"))
}

fn parse_outbox_cursor(cursor: &str) -> ApiResult<(String, String)> {
    URL_SAFE_NO_PAD
        .decode(cursor.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| {
            let (at, id) = t.strip_prefix("outbox:")?.split_once('|')?;
            parse_timestamp(at).ok()?;
            Some((at.to_string(), id.to_string()))
        })
        .ok_or_else(|| ApiError::bad_input("malformed cursor"))
}

/// Conversation queries.
#[derive(Default)]
pub struct ConversationQuery;

#[Object]
impl ConversationQuery {
    /// One conversation of the caller's organization (agents, admins).
    async fn conversation(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<Conversation>> {
        let caller = caller_in(ctx, &[Role::Admin, Role::Agent], "read conversations")?;
        let id = parse_uuid(&id, "conversation")?;
        Ok(conversation_by_id(helpdesk(ctx)?, &caller.organization, &id).await?)
    }

    /// Outbound messages by delivery status (PENDING, SENDING, DELIVERED, DEAD), oldest
    /// first (admins).
    async fn outbox(
        &self,
        ctx: &Context<'_>,
        status: Option<String>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<OutboxConnection> {
        Ok(Self::outbox_page(ctx, status, first, after).await?)
    }

    /// The organization's conversations, the most recently active first (agents, admins).
    async fn conversations(
        &self,
        ctx: &Context<'_>,
        filter: Option<ConversationFilterInput>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<ConversationConnection> {
        let caller = caller_in(ctx, &[Role::Admin, Role::Agent], "read conversations")?;
        let helpdesk = helpdesk(ctx)?;
        let first = page_size(first)?;
        let after = after
            .as_deref()
            .map(parse_conversation_cursor)
            .transpose()?;
        let filter = filter.unwrap_or_default();
        let filter = ConversationFilter {
            mode: filter.mode.map(|m| {
                domain::conversation::ConversationMode::from(m)
                    .as_str()
                    .to_string()
            }),
            division_id: filter
                .division_id
                .map(|d| parse_uuid(&d, "division"))
                .transpose()?,
            assignee_id: filter.assignee_id.map(|a| a.to_string()),
            unread_only: filter.unread_only.unwrap_or(false),
        };
        let page = projections::conversations::conversations(
            &helpdesk.db,
            &caller.organization,
            &filter,
            first,
            after,
        )
        .await
        .map_err(ApiError::from)?;
        let customers: Vec<String> = page.rows.iter().map(|r| r.customer_id.clone()).collect();
        let keys = personal_data::keys(&helpdesk.db, &caller.organization, &customers)
            .await
            .map_err(ApiError::from)?;
        let edges = page
            .rows
            .into_iter()
            .map(|record| {
                Ok(ConversationEdge {
                    cursor: conversation_cursor(&record),
                    node: Conversation::from_record(record, &keys)?,
                })
            })
            .collect::<ApiResult<Vec<_>>>()?;
        Ok(ConversationConnection::new(
            edges,
            page.has_next_page,
            page.total_count,
        ))
    }
}

impl ConversationQuery {
    async fn outbox_page(
        ctx: &Context<'_>,
        status: Option<String>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<OutboxConnection> {
        let caller = caller_in(ctx, &[Role::Admin], "read the outbox")?;
        let helpdesk = helpdesk(ctx)?;
        let first = page_size(first)?;
        let after = after.as_deref().map(parse_outbox_cursor).transpose()?;
        let (rows, has_next_page, total_count) = crate::outbox::list(
            &helpdesk.db,
            &caller.organization,
            status.as_deref(),
            first,
            after,
        )
        .await?;
        let edges = rows
            .into_iter()
            .map(|record| {
                Ok(OutboxEdge {
                    cursor: outbox_cursor(record.cursor()),
                    node: OutboxJob::from_record(record)?,
                })
            })
            .collect::<ApiResult<Vec<_>>>()?;
        Ok(OutboxConnection::new(edges, has_next_page, total_count))
    }
}

/// `receiveMessage` input.
#[derive(InputObject)]
pub struct ReceiveMessageInput {
    /// The channel.
    pub channel: Channel,
    /// The customer's handle on it.
    pub external_id: String,
    /// Their display name.
    pub customer_name: Option<String>,
    /// The text.
    pub text: String,
    /// The provider's message id: a second delivery of the same id is stored once.
    pub external_message_id: Option<String>,
}

/// `configureChannel` input. `settings` holds the secrets (WHATSAPP: phoneNumberId,
/// accessToken, appSecret, verifyToken; TELEGRAM: botToken, secretToken); they are stored
/// outside the event log and never returned.
#[derive(InputObject)]
pub struct ConfigureChannelInput {
    /// The channel.
    pub channel: Channel,
    /// The provider's API address (tests point it at a local fake); default its public one.
    pub api_base_url: Option<String>,
    /// The channel's settings, secrets included.
    pub settings: async_graphql::Json<serde_json::Value>,
}

/// A configured channel (never its secrets).
#[derive(SimpleObject)]
pub struct ChannelConfig {
    /// The channel id (the Telegram webhook is `/webhooks/telegram/{id}`).
    pub id: ID,
    /// The channel.
    pub channel: Channel,
    /// The provider's API address, when not the public one.
    pub api_base_url: Option<String>,
}

/// The settings each channel needs.
fn required_settings(channel: domain::conversation::Channel) -> &'static [&'static str] {
    match channel {
        domain::conversation::Channel::Whatsapp => {
            &["phoneNumberId", "accessToken", "appSecret", "verifyToken"]
        }
        domain::conversation::Channel::Telegram => &["botToken", "secretToken"],
        _ => &[],
    }
}

/// Conversation mutations.
#[derive(Default)]
pub struct ConversationMutation;

#[Object]
impl ConversationMutation {
    /// A customer's message (service role; idempotent on `externalMessageId`).
    async fn receive_message(
        &self,
        ctx: &Context<'_>,
        input: ReceiveMessageInput,
    ) -> async_graphql::Result<Conversation> {
        let caller = caller_in(ctx, &[Role::Service], "deliver customer messages")?;
        let helpdesk = helpdesk(ctx)?;
        let received = helpdesk
            .receive_message(
                caller,
                &request_id(ctx),
                InboundMessage {
                    channel: input.channel.into(),
                    channel_id: None,
                    external_id: input.external_id,
                    customer_name: input.customer_name,
                    text: input.text,
                    external_message_id: input.external_message_id,
                },
            )
            .await?;
        load(ctx, &received.conversation_id).await
    }

    /// An agent's reply to the customer; the agent must hold the conversation's ticket.
    async fn send_reply(
        &self,
        ctx: &Context<'_>,
        conversation_id: ID,
        text: String,
    ) -> async_graphql::Result<Message> {
        let caller = caller_in(ctx, &[Role::Agent, Role::Admin], "reply to customers")?;
        let id = parse_uuid(&conversation_id, "conversation")?;
        let helpdesk = helpdesk(ctx)?;
        let message_id = helpdesk
            .send_reply(caller, &request_id(ctx), &id, &text)
            .await?;
        let conversation = load(ctx, &id).await?;
        let (rows, _, _) = projections::conversations::messages(
            &helpdesk.db,
            &caller.organization,
            &id,
            1,
            last_position_before(&helpdesk.db, &caller.organization, &id, &message_id).await?,
        )
        .await
        .map_err(ApiError::from)?;
        let row = rows
            .into_iter()
            .find(|r| r.id == message_id)
            .ok_or_else(|| ApiError::internal("the reply is not in the read model"))?;
        let keys = personal_data::keys(
            &helpdesk.db,
            &caller.organization,
            std::slice::from_ref(&conversation.record.customer_id),
        )
        .await
        .map_err(ApiError::from)?;
        Ok(Message::from_record(
            row,
            &keys,
            &conversation.record.customer_id,
        )?)
    }

    /// Sends a dead letter again: back to PENDING with its attempts reset and the same
    /// idempotency key (admins). Other statuses: INVALID_TRANSITION.
    async fn retry_delivery(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<OutboxJob> {
        let caller = caller_in(ctx, &[Role::Admin], "retry deliveries")?;
        let id = parse_uuid(&id, "message")?;
        let helpdesk = helpdesk(ctx)?;
        let record = crate::outbox::retry(&helpdesk.db, &caller.organization, &id).await?;
        helpdesk.log_signal().ring();
        Ok(OutboxJob::from_record(record)?)
    }

    /// Marks the customer's messages read (unread count back to 0).
    async fn mark_conversation_read(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Conversation> {
        let caller = caller_in(ctx, &[Role::Agent, Role::Admin], "read conversations")?;
        let id = parse_uuid(&id, "conversation")?;
        helpdesk(ctx)?
            .mark_conversation_read(caller, &request_id(ctx), &id)
            .await?;
        load(ctx, &id).await
    }

    /// Configures the organization's channel of a kind (admin). Secrets stay outside the
    /// event log and are never returned.
    async fn configure_channel(
        &self,
        ctx: &Context<'_>,
        input: ConfigureChannelInput,
    ) -> async_graphql::Result<ChannelConfig> {
        let caller = caller_in(ctx, &[Role::Admin], "configure channels")?;
        let channel: domain::conversation::Channel = input.channel.into();
        let serde_json::Value::Object(settings) = input.settings.0 else {
            return Err(ApiError::bad_input("settings must be a JSON object").into());
        };
        for name in required_settings(channel) {
            let present = settings
                .get(*name)
                .and_then(|v| v.as_str())
                .is_some_and(|v| !v.trim().is_empty());
            if !present {
                return Err(ApiError::bad_input(format!(
                    "settings.{name} is required for {}",
                    channel.as_str()
                ))
                .into());
            }
        }
        let profile = ChannelProfile {
            channel,
            api_base_url: input.api_base_url,
            phone_number_id: settings
                .get("phoneNumberId")
                .and_then(|v| v.as_str())
                .map(str::to_string),
        };
        let helpdesk = helpdesk(ctx)?;
        let id = helpdesk
            .configure_channel(caller, &request_id(ctx), profile, settings)
            .await?;
        let (_, _, api_base_url) = projections::conversations::channel(&helpdesk.db, &id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::internal("the channel is not in the read model"))?;
        Ok(ChannelConfig {
            id: ID(id),
            channel: channel.into(),
            api_base_url,
        })
    }
}

/// The conversation as the caller's organization sees it now.
async fn load(ctx: &Context<'_>, id: &str) -> async_graphql::Result<Conversation> {
    let caller = caller(ctx)?;
    let helpdesk = helpdesk(ctx)?;
    let record = projections::conversations::conversation(&helpdesk.db, &caller.organization, id)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| ApiError::NotFound("conversation not found".into()))?;
    let keys = personal_data::keys(
        &helpdesk.db,
        &caller.organization,
        std::slice::from_ref(&record.customer_id),
    )
    .await
    .map_err(ApiError::from)?;
    Ok(Conversation::from_record(record, &keys)?)
}

/// The position just before a message (its page then starts with it).
async fn last_position_before(
    db: &projections::Database,
    organization: &str,
    conversation_id: &str,
    message_id: &str,
) -> ApiResult<Option<i64>> {
    let position =
        projections::conversations::message_position(db, organization, conversation_id, message_id)
            .await?;
    Ok(position.map(|p| p - 1))
}
