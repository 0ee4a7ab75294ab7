//! Conversations and channels on the read side.
//!
//! - The "conversations" projection: `conversations` (one row per customer and channel,
//!   with mode, division, ticket, unread count and needs-human flag) and
//!   `conversation_messages` (both directions, texts still sealed).
//! - The "channels" projection: `channels`, the public part of each configured channel.
//! - The "outbox" projection: queues every outbound message in `outbox_jobs` for the
//!   delivery worker, routed by its own `outbox_routes` (it never reads another
//!   projection's tables, whose runner may be behind). It owns no table a rebuild may
//!   empty: the jobs are the delivery record, and a replay inserts nothing that is already
//!   there.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::channel::ChannelEvent;
use domain::conversation::{ConversationEvent, OutboundKind, Sealed};
use sqlx::FromRow;
use std::collections::HashMap;

use crate::bulk::{self, Kind, Rows};
use crate::db::{timestamp, Database, DbError, Tx};
use crate::event_log::StoredEvent;
use crate::on_backend;
use crate::runner::Projection;

/// Builds `conversations` and `conversation_messages` from Conversation events.
#[derive(Debug, Default)]
pub struct ConversationsProjection;

#[async_trait]
impl Projection for ConversationsProjection {
    fn name(&self) -> &'static str {
        "conversations"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["Conversation"]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["conversations", "conversation_messages", "bot_interactions"]
    }

    async fn apply(&self, tx: &mut Tx, event: &StoredEvent) -> Result<(), DbError> {
        self.apply_batch(tx, &[event]).await
    }

    /// Reads the batch's conversations once, folds the events into them in memory, writes
    /// each once, and inserts the batch's messages and bot interactions in one statement
    /// each.
    async fn apply_batch(&self, tx: &mut Tx, events: &[&StoredEvent]) -> Result<(), DbError> {
        let decoded = bulk::decode_all::<ConversationEvent>(events, "Conversation")?;
        if decoded.is_empty() {
            return Ok(());
        }
        let ids = bulk::aggregate_ids(&decoded);
        let select = format!(
            "SELECT {} FROM conversations",
            bulk::column_list(CONVERSATION_ROW)
        );
        let stored: Vec<ConversationRow> = bulk::select_in(tx, &select, "id", &ids).await?;
        let mut fold = ConversationFold {
            conversations: stored.into_iter().map(|c| (c.id.clone(), c)).collect(),
            messages: Rows::new("conversation_messages", MESSAGE_ROW),
            interactions: Rows::new("bot_interactions", INTERACTION_ROW),
        };
        for (event, conversation_event) in decoded {
            fold.apply(event, conversation_event)?;
        }
        let mut rows = Rows::new("conversations", CONVERSATION_ROW);
        for id in ids {
            if let Some(c) = fold.conversations.remove(&id) {
                rows.push([
                    c.id.into(),
                    c.organization_id.into(),
                    c.channel.into(),
                    c.channel_id.into(),
                    c.customer_id.into(),
                    c.external_id.into(),
                    c.customer_name.into(),
                    c.mode.into(),
                    c.division_id.into(),
                    c.ticket_id.into(),
                    c.needs_human.into(),
                    c.unread_count.into(),
                    c.last_message_at.into(),
                    c.last_agent_reply_at.into(),
                    c.last_agent_reply_by.into(),
                    c.announced_ticket_id.into(),
                    c.announced_assigned_at.into(),
                    c.created_at.into(),
                    c.version.into(),
                ])?;
            }
        }
        rows.insert(tx, &bulk::replace_on_conflict(CONVERSATION_ROW, &["id"]))
            .await?;
        fold.messages.insert(tx, "").await?;
        fold.interactions.insert(tx, "").await
    }
}

/// A `conversations` row (all its columns).
#[derive(Debug, Clone, FromRow)]
struct ConversationRow {
    id: String,
    organization_id: String,
    channel: String,
    channel_id: String,
    customer_id: String,
    external_id: String,
    customer_name: Option<String>,
    mode: String,
    division_id: Option<String>,
    ticket_id: Option<String>,
    needs_human: bool,
    unread_count: i64,
    last_message_at: String,
    last_agent_reply_at: Option<String>,
    last_agent_reply_by: Option<String>,
    announced_ticket_id: Option<String>,
    announced_assigned_at: Option<String>,
    created_at: String,
    version: i64,
}

const CONVERSATION_ROW: &[(&str, Kind)] = &[
    ("id", Kind::Text),
    ("organization_id", Kind::Text),
    ("channel", Kind::Text),
    ("channel_id", Kind::Text),
    ("customer_id", Kind::Text),
    ("external_id", Kind::Text),
    ("customer_name", Kind::Text),
    ("mode", Kind::Text),
    ("division_id", Kind::Text),
    ("ticket_id", Kind::Text),
    ("needs_human", Kind::Bool),
    ("unread_count", Kind::Int),
    ("last_message_at", Kind::Text),
    ("last_agent_reply_at", Kind::Text),
    ("last_agent_reply_by", Kind::Text),
    ("announced_ticket_id", Kind::Text),
    ("announced_assigned_at", Kind::Text),
    ("created_at", Kind::Text),
    ("version", Kind::Int),
];

const MESSAGE_ROW: &[(&str, Kind)] = &[
    ("id", Kind::Text),
    ("conversation_id", Kind::Text),
    ("organization_id", Kind::Text),
    ("direction", Kind::Text),
    ("kind", Kind::Text),
    ("author_id", Kind::Text),
    ("text", Kind::Text),
    ("created_at", Kind::Text),
    ("position", Kind::Int),
];

const INTERACTION_ROW: &[(&str, Kind)] = &[
    ("interaction_id", Kind::Text),
    ("conversation_id", Kind::Text),
    ("organization_id", Kind::Text),
    ("bot_id", Kind::Text),
    ("message_id", Kind::Text),
];

/// The conversations of a batch as they stand, and the rows the batch adds.
struct ConversationFold {
    conversations: HashMap<String, ConversationRow>,
    messages: Rows,
    interactions: Rows,
}

impl ConversationFold {
    /// The stored conversation an event changes, its version moved to the event's.
    fn update(&mut self, event: &StoredEvent) -> Result<&mut ConversationRow, DbError> {
        let id = event.aggregate_id.as_str();
        let row = self.conversations.get_mut(id).ok_or_else(|| {
            DbError::Corrupt(format!(
                "conversation {id} event {} has no conversation row to update",
                event.sequence
            ))
        })?;
        row.version = event.sequence;
        Ok(row)
    }

    fn apply(
        &mut self,
        event: &StoredEvent,
        conversation_event: ConversationEvent,
    ) -> Result<(), DbError> {
        let id = event.aggregate_id.as_str();
        let at = timestamp(event.occurred_at());
        match conversation_event {
            ConversationEvent::ConversationStarted {
                organization,
                channel,
                channel_id,
                customer_id,
                external_id,
                customer_name,
            } => {
                if self.conversations.contains_key(id) {
                    return Err(DbError::Corrupt(format!("conversation {id} started twice")));
                }
                self.conversations.insert(
                    id.to_string(),
                    ConversationRow {
                        id: id.to_string(),
                        organization_id: organization,
                        channel: channel.as_str().to_string(),
                        channel_id,
                        customer_id,
                        external_id: external_id.0,
                        customer_name: customer_name.map(|n| n.0),
                        mode: "BOT".into(),
                        division_id: None,
                        ticket_id: None,
                        needs_human: false,
                        unread_count: 0,
                        last_message_at: at.clone(),
                        last_agent_reply_at: None,
                        last_agent_reply_by: None,
                        announced_ticket_id: None,
                        announced_assigned_at: None,
                        created_at: at,
                        version: event.sequence,
                    },
                );
            }
            ConversationEvent::MessageReceived { message_id, text } => {
                self.message(event, message_id, "INBOUND", "CUSTOMER", None, text)?;
                // A customer writing to the humans waits for one of them.
                let row = self.update(event)?;
                row.unread_count += 1;
                row.last_message_at = at;
                row.needs_human = row.mode == "AGENT";
            }
            ConversationEvent::DivisionChosen { division_id } => {
                self.update(event)?.division_id = Some(division_id);
            }
            ConversationEvent::TicketLinked { ticket_id } => {
                let row = self.update(event)?;
                row.ticket_id = Some(ticket_id);
                row.mode = "AGENT".into();
                row.needs_human = true;
            }
            ConversationEvent::OutboundMessageQueued {
                message_id,
                kind,
                author_id,
                text,
                announces,
                ..
            } => {
                self.message(
                    event,
                    message_id,
                    "OUTBOUND",
                    kind.as_str(),
                    author_id.clone(),
                    text,
                )?;
                match (kind, author_id, announces) {
                    (OutboundKind::Reply, Some(author), _) => {
                        let row = self.update(event)?;
                        row.last_message_at = at.clone();
                        row.last_agent_reply_at = Some(at);
                        row.last_agent_reply_by = Some(author);
                        row.needs_human = false;
                    }
                    (_, _, Some((ticket_id, assigned_micros))) => {
                        let assigned_at = DateTime::<Utc>::from_timestamp_micros(assigned_micros)
                            .map(timestamp)
                            .ok_or_else(|| {
                                DbError::Corrupt(format!(
                                    "conversation {id}: announced time {assigned_micros}"
                                ))
                            })?;
                        let row = self.update(event)?;
                        row.last_message_at = at;
                        row.announced_ticket_id = Some(ticket_id);
                        row.announced_assigned_at = Some(assigned_at);
                    }
                    _ => self.update(event)?.last_message_at = at,
                }
            }
            ConversationEvent::ConversationRead { .. } => {
                self.update(event)?.unread_count = 0;
            }
            ConversationEvent::BotHandedOff {
                interaction_id,
                bot_id,
                ..
            } => {
                self.interaction(event, interaction_id, bot_id, None)?;
                self.update(event)?.needs_human = true;
            }
            ConversationEvent::BotAnswered {
                interaction_id,
                bot_id,
                message_id,
                ..
            } => {
                self.interaction(event, interaction_id, bot_id, Some(message_id))?;
                self.update(event)?;
            }
            ConversationEvent::BotInteractionRated { .. } => {
                // Counted by the chatbot analytics; the conversation only moves its version.
                self.update(event)?;
            }
        }
        Ok(())
    }

    fn interaction(
        &mut self,
        event: &StoredEvent,
        interaction_id: String,
        bot_id: String,
        answer_message_id: Option<String>,
    ) -> Result<(), DbError> {
        self.interactions.push([
            interaction_id.into(),
            event.aggregate_id.as_str().into(),
            event.metadata.organization.as_str().into(),
            bot_id.into(),
            answer_message_id.into(),
        ])
    }

    fn message(
        &mut self,
        event: &StoredEvent,
        message_id: String,
        direction: &str,
        kind: &str,
        author_id: Option<String>,
        text: Sealed,
    ) -> Result<(), DbError> {
        self.messages.push([
            message_id.into(),
            event.aggregate_id.as_str().into(),
            event.metadata.organization.as_str().into(),
            direction.into(),
            kind.into(),
            author_id.into(),
            text.0.into(),
            timestamp(event.occurred_at()).into(),
            event.position().into(),
        ])
    }
}

/// The conversation and bot of a bot interaction.
pub async fn interaction_conversation(
    db: &Database,
    organization: &str,
    interaction_id: &str,
) -> Result<Option<(String, String)>, DbError> {
    Ok(on_backend!(db, |pool| sqlx::query_as(
        "SELECT conversation_id, bot_id FROM bot_interactions
          WHERE interaction_id = $1 AND organization_id = $2"
    )
    .bind(interaction_id)
    .bind(organization)
    .fetch_optional(pool)
    .await?))
}

/// Builds `channels` from ChannelConfig events.
#[derive(Debug, Default)]
pub struct ChannelsProjection;

#[async_trait]
impl Projection for ChannelsProjection {
    fn name(&self) -> &'static str {
        "channels"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["ChannelConfig"]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["channels"]
    }

    async fn apply(&self, tx: &mut Tx, event: &StoredEvent) -> Result<(), DbError> {
        if event.aggregate_type != "ChannelConfig" {
            return Ok(());
        }
        let ChannelEvent::ChannelConfigured {
            organization,
            profile,
        } = event.decode::<ChannelEvent>()?;
        on_backend!(tx, |t| {
            sqlx::query(
                "INSERT INTO channels (id, organization_id, channel, api_base_url, phone_number_id,
                    configured_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (id) DO UPDATE SET api_base_url = excluded.api_base_url,
                    phone_number_id = excluded.phone_number_id,
                    configured_at = excluded.configured_at",
            )
            .bind(&event.aggregate_id)
            .bind(&organization)
            .bind(profile.channel.as_str())
            .bind(&profile.api_base_url)
            .bind(&profile.phone_number_id)
            .bind(timestamp(event.occurred_at()))
            .execute(&mut **t)
            .await?;
        });
        Ok(())
    }
}

/// How old an outbound message may be when the outbox first sees it and still be sent.
/// Older ones (a log restored into a fresh database, say) are recorded as dead letters
/// instead: customers must not receive last month's messages, and an admin can still send
/// one with `retryDelivery`.
pub const OUTBOX_MAX_AGE_HOURS: i64 = 24;

/// Queues outbound messages in `outbox_jobs`.
#[derive(Debug, Default)]
pub struct OutboxProjection;

#[async_trait]
impl Projection for OutboxProjection {
    fn name(&self) -> &'static str {
        "outbox"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["Conversation"]
    }

    fn tables(&self) -> &'static [&'static str] {
        // None: see the module documentation.
        &[]
    }

    async fn apply(&self, tx: &mut Tx, event: &StoredEvent) -> Result<(), DbError> {
        self.apply_batch(tx, &[event]).await
    }

    /// Routes and jobs of the whole batch in two statements. A route already stored wins
    /// over a later `ConversationStarted` of the same conversation, and a message already
    /// queued is left as it is (a replay inserts nothing that is there).
    async fn apply_batch(&self, tx: &mut Tx, events: &[&StoredEvent]) -> Result<(), DbError> {
        let mut started = Vec::new();
        let mut queued = Vec::new();
        for event in events.iter().filter(|e| e.aggregate_type == "Conversation") {
            match event.decode::<ConversationEvent>()? {
                ConversationEvent::ConversationStarted {
                    organization,
                    channel_id,
                    ..
                } => started.push((event.aggregate_id.clone(), organization, channel_id)),
                ConversationEvent::OutboundMessageQueued {
                    message_id, kind, ..
                } => queued.push((*event, message_id, kind)),
                _ => {}
            }
        }
        if started.is_empty() && queued.is_empty() {
            return Ok(());
        }
        let mut conversations: Vec<String> = queued
            .iter()
            .map(|(e, ..)| e.aggregate_id.clone())
            .collect();
        conversations.extend(started.iter().map(|(id, ..)| id.clone()));
        conversations.sort();
        conversations.dedup();
        let stored: Vec<(String, String, String)> = bulk::select_in(
            tx,
            "SELECT conversation_id, organization_id, channel_id FROM outbox_routes",
            "conversation_id",
            &conversations,
        )
        .await?;
        let mut routes: HashMap<String, (String, String)> = stored
            .into_iter()
            .map(|(conversation, organization, channel)| (conversation, (organization, channel)))
            .collect();
        let mut new_routes = Rows::new("outbox_routes", ROUTE_ROW);
        for (conversation, organization, channel) in started {
            if let std::collections::hash_map::Entry::Vacant(vacant) = routes.entry(conversation) {
                new_routes.push([
                    vacant.key().as_str().into(),
                    organization.as_str().into(),
                    channel.as_str().into(),
                ])?;
                vacant.insert((organization, channel));
            }
        }
        let now = Utc::now();
        let mut jobs = Rows::new("outbox_jobs", JOB_ROW);
        for (event, message_id, kind) in queued {
            // The conversation's start never seen would lose the message: refuse to move on.
            let (organization, channel) = routes.get(&event.aggregate_id).ok_or_else(|| {
                DbError::Corrupt(format!(
                    "outbound message {message_id} of conversation {} has no route",
                    event.aggregate_id
                ))
            })?;
            let queued_at = event.occurred_at();
            let too_old = now - queued_at > chrono::Duration::hours(OUTBOX_MAX_AGE_HOURS);
            let (status, last_error) = if too_old {
                (
                    "DEAD",
                    Some("older than 24 hours when queued; not sent".to_string()),
                )
            } else {
                ("PENDING", None)
            };
            jobs.push([
                message_id.as_str().into(),
                organization.as_str().into(),
                event.aggregate_id.as_str().into(),
                channel.as_str().into(),
                kind.delivery_priority().into(),
                timestamp(queued_at).into(),
                message_id.into(),
                status.into(),
                0.into(),
                timestamp(queued_at).into(),
                last_error.into(),
                timestamp(now).into(),
            ])?;
        }
        new_routes.insert(tx, "").await?;
        jobs.insert(tx, "ON CONFLICT (message_id) DO NOTHING").await
    }
}

const ROUTE_ROW: &[(&str, Kind)] = &[
    ("conversation_id", Kind::Text),
    ("organization_id", Kind::Text),
    ("channel_id", Kind::Text),
];

const JOB_ROW: &[(&str, Kind)] = &[
    ("message_id", Kind::Text),
    ("organization_id", Kind::Text),
    ("conversation_id", Kind::Text),
    ("channel_id", Kind::Text),
    ("priority", Kind::Int),
    ("queued_at", Kind::Text),
    ("idempotency_key", Kind::Text),
    ("status", Kind::Text),
    ("attempts", Kind::Int),
    ("next_attempt_at", Kind::Text),
    ("last_error", Kind::Text),
    ("updated_at", Kind::Text),
];

/// A conversation as the read model holds it (personal data still sealed).
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct ConversationRecord {
    /// The conversation id.
    pub id: String,
    /// Its organization.
    pub organization_id: String,
    /// WHATSAPP, TELEGRAM, ...
    pub channel: String,
    /// The configured channel.
    pub channel_id: String,
    /// The customer.
    pub customer_id: String,
    /// Sealed handle.
    pub external_id: String,
    /// Sealed display name.
    pub customer_name: Option<String>,
    /// BOT or AGENT.
    pub mode: String,
    /// The division chosen.
    pub division_id: Option<String>,
    /// The last ticket linked.
    pub ticket_id: Option<String>,
    /// The agent holding the ticket, while it is active.
    pub assignee_id: Option<String>,
    /// Whether the customer waits for a human.
    pub needs_human: bool,
    /// Customer messages not read.
    pub unread_count: i64,
    /// The last message either way.
    pub last_message_at: String,
    /// When it started.
    pub created_at: String,
}

/// What the conversation queries select: the row and the active ticket's assignee.
const SELECT: &str = "SELECT c.id, c.organization_id, c.channel, c.channel_id, c.customer_id,
        c.external_id, c.customer_name, c.mode, c.division_id, c.ticket_id,
        CASE WHEN t.status IN ('ASSIGNED', 'IN_PROGRESS') THEN t.assignee_id END AS assignee_id,
        c.needs_human, c.unread_count, c.last_message_at, c.created_at
   FROM conversations c LEFT JOIN tickets t ON t.id = c.ticket_id";

/// One conversation of the organization.
pub async fn conversation(
    db: &Database,
    organization: &str,
    id: &str,
) -> Result<Option<ConversationRecord>, DbError> {
    let sql = format!("{SELECT} WHERE c.id = $1 AND c.organization_id = $2");
    Ok(on_backend!(db, |pool| sqlx::query_as(&sql)
        .bind(id)
        .bind(organization)
        .fetch_optional(pool)
        .await?))
}

/// Which conversations a list shows.
#[derive(Debug, Clone, Default)]
pub struct ConversationFilter {
    /// BOT or AGENT.
    pub mode: Option<String>,
    /// The division chosen.
    pub division_id: Option<String>,
    /// The agent holding the active ticket.
    pub assignee_id: Option<String>,
    /// Only those with unread customer messages.
    pub unread_only: bool,
}

/// A page of conversations, the most recently active first.
pub struct ConversationPage {
    /// The rows.
    pub rows: Vec<ConversationRecord>,
    /// Whether more follow.
    pub has_next_page: bool,
    /// How many match the filter.
    pub total_count: i64,
}

/// The organization's conversations matching `filter`, the latest message first, after
/// the cursor `(last_message_at, id)`.
pub async fn conversations(
    db: &Database,
    organization: &str,
    filter: &ConversationFilter,
    first: i64,
    after: Option<(String, String)>,
) -> Result<ConversationPage, DbError> {
    let mut conditions = vec!["c.organization_id = $1".to_string()];
    let mut texts: Vec<String> = vec![organization.to_string()];
    let mut push = |condition: &str, value: String, texts: &mut Vec<String>| {
        texts.push(value);
        conditions.push(condition.replace('?', &format!("${}", texts.len())));
    };
    if let Some(mode) = &filter.mode {
        push("c.mode = ?", mode.clone(), &mut texts);
    }
    if let Some(division) = &filter.division_id {
        push("c.division_id = ?", division.clone(), &mut texts);
    }
    if let Some(assignee) = &filter.assignee_id {
        push(
            "t.assignee_id = ? AND t.status IN ('ASSIGNED', 'IN_PROGRESS')",
            assignee.clone(),
            &mut texts,
        );
    }
    if filter.unread_only {
        conditions.push("c.unread_count > 0".into());
    }
    let matching = conditions.join(" AND ");
    let count_sql = format!(
        "SELECT COUNT(*) FROM conversations c LEFT JOIN tickets t ON t.id = c.ticket_id
          WHERE {matching}"
    );
    let total_count: i64 = on_backend!(db, |pool| {
        let mut query = sqlx::query_scalar(&count_sql);
        for text in &texts {
            query = query.bind(text);
        }
        query.fetch_one(pool).await?
    });
    let mut page_conditions = matching.clone();
    let mut page_texts = texts.clone();
    if let Some((last_message_at, id)) = after {
        page_texts.push(last_message_at);
        page_texts.push(id);
        let (a, b) = (page_texts.len() - 1, page_texts.len());
        page_conditions.push_str(&format!(
            " AND (c.last_message_at < ${a} OR (c.last_message_at = ${a} AND c.id > ${b}))"
        ));
    }
    let sql = format!(
        "{SELECT} WHERE {page_conditions} ORDER BY c.last_message_at DESC, c.id LIMIT {}",
        first + 1
    );
    let mut rows: Vec<ConversationRecord> = on_backend!(db, |pool| {
        let mut query = sqlx::query_as(&sql);
        for text in &page_texts {
            query = query.bind(text);
        }
        query.fetch_all(pool).await?
    });
    let has_next_page = rows.len() as i64 > first;
    rows.truncate(first as usize);
    Ok(ConversationPage {
        rows,
        has_next_page,
        total_count,
    })
}

/// A message as the read model holds it, with its delivery status (outbound only).
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct MessageRecord {
    /// The message id.
    pub id: String,
    /// Its conversation.
    pub conversation_id: String,
    /// INBOUND or OUTBOUND.
    pub direction: String,
    /// CUSTOMER, REPLY, SYSTEM or BULK.
    pub kind: String,
    /// The agent who wrote a reply.
    pub author_id: Option<String>,
    /// Sealed text.
    pub text: String,
    /// When it was received or queued.
    pub created_at: String,
    /// Its place in the log (the message order and cursor).
    pub position: i64,
    /// PENDING, SENDING, DELIVERED or DEAD; `None` for inbound messages.
    pub delivery_status: Option<String>,
    /// For a bot's answer: the interaction (what `rateBotInteraction` names).
    pub bot_interaction_id: Option<String>,
}

/// `first` messages of a conversation in order, after the message at `after_position`, and
/// the conversation's message count.
pub async fn messages(
    db: &Database,
    organization: &str,
    conversation_id: &str,
    first: i64,
    after_position: Option<i64>,
) -> Result<(Vec<MessageRecord>, bool, i64), DbError> {
    let total: i64 = on_backend!(db, |pool| sqlx::query_scalar(
        "SELECT COUNT(*) FROM conversation_messages
          WHERE conversation_id = $1 AND organization_id = $2"
    )
    .bind(conversation_id)
    .bind(organization)
    .fetch_one(pool)
    .await?);
    let mut rows: Vec<MessageRecord> = on_backend!(db, |pool| {
        sqlx::query_as(
        "SELECT m.id, m.conversation_id, m.direction, m.kind, m.author_id, m.text, m.created_at,
                m.position, o.status AS delivery_status, b.interaction_id AS bot_interaction_id
           FROM conversation_messages m LEFT JOIN outbox_jobs o ON o.message_id = m.id
                LEFT JOIN bot_interactions b ON b.message_id = m.id
          WHERE m.conversation_id = $1 AND m.organization_id = $2 AND m.position > $3
          ORDER BY m.position LIMIT $4"
    )
    .bind(conversation_id)
    .bind(organization)
    .bind(after_position.unwrap_or(-1))
    .bind(first + 1)
    .fetch_all(pool)
    .await?
    });
    let more = rows.len() as i64 > first;
    rows.truncate(first as usize);
    Ok((rows, more, total))
}

/// One message of a conversation.
pub async fn message(
    db: &Database,
    organization: &str,
    message_id: &str,
) -> Result<Option<MessageRecord>, DbError> {
    Ok(on_backend!(db, |pool| sqlx::query_as(
        "SELECT m.id, m.conversation_id, m.direction, m.kind, m.author_id, m.text, m.created_at,
                m.position, o.status AS delivery_status, b.interaction_id AS bot_interaction_id
           FROM conversation_messages m LEFT JOIN outbox_jobs o ON o.message_id = m.id
                LEFT JOIN bot_interactions b ON b.message_id = m.id
          WHERE m.id = $1 AND m.organization_id = $2"
    )
    .bind(message_id)
    .bind(organization)
    .fetch_optional(pool)
    .await?))
}

/// Stores a channel's secrets (outside the event log), replacing earlier ones.
pub async fn store_channel_secrets(
    db: &Database,
    channel_id: &str,
    organization: &str,
    settings_json: &str,
) -> Result<(), DbError> {
    on_backend!(db, |pool| {
        sqlx::query(
            "INSERT INTO channel_secrets (channel_id, organization_id, settings, updated_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (channel_id) DO UPDATE
                SET settings = excluded.settings, updated_at = excluded.updated_at
              WHERE channel_secrets.organization_id = excluded.organization_id",
        )
        .bind(channel_id)
        .bind(organization)
        .bind(settings_json)
        .bind(timestamp(Utc::now()))
        .execute(pool)
        .await?;
    });
    Ok(())
}

/// A channel's secrets (the settings given to configureChannel), for the webhooks and the
/// delivery worker only.
pub async fn channel_secrets(
    db: &Database,
    channel_id: &str,
) -> Result<Option<serde_json::Value>, DbError> {
    let stored: Option<String> = on_backend!(db, |pool| sqlx::query_scalar(
        "SELECT settings FROM channel_secrets WHERE channel_id = $1"
    )
    .bind(channel_id)
    .fetch_optional(pool)
    .await?);
    stored
        .map(|json| serde_json::from_str(&json).map_err(|e| DbError::Corrupt(e.to_string())))
        .transpose()
}

/// Conversations whose active ticket's assignment was not announced to the customer yet:
/// `(organization, conversation id, ticket id)`, oldest assignment first.
pub async fn unannounced_assignments(
    db: &Database,
    limit: i64,
) -> Result<Vec<(String, String, String)>, DbError> {
    Ok(on_backend!(db, |pool| sqlx::query_as(
        "SELECT c.organization_id, c.id, t.id FROM conversations c
           JOIN tickets t ON t.id = c.ticket_id
          WHERE t.status IN ('ASSIGNED', 'IN_PROGRESS') AND t.assigned_at IS NOT NULL
            AND (c.announced_ticket_id IS NULL OR c.announced_ticket_id <> t.id
                 OR c.announced_assigned_at IS NULL OR c.announced_assigned_at <> t.assigned_at)
          ORDER BY t.assigned_at LIMIT $1"
    )
    .bind(limit)
    .fetch_all(pool)
    .await?))
}

/// Where a message stands in the log (its order within the conversation).
pub async fn message_position(
    db: &Database,
    organization: &str,
    conversation_id: &str,
    message_id: &str,
) -> Result<Option<i64>, DbError> {
    Ok(on_backend!(db, |pool| sqlx::query_scalar(
        "SELECT position FROM conversation_messages
          WHERE id = $1 AND conversation_id = $2 AND organization_id = $3"
    )
    .bind(message_id)
    .bind(conversation_id)
    .bind(organization)
    .fetch_optional(pool)
    .await?))
}

/// A conversation whose agent has not answered since the ticket was assigned to them.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct Unanswered {
    /// Its organization.
    pub organization_id: String,
    /// The conversation.
    pub conversation_id: String,
    /// Its active ticket.
    pub ticket_id: String,
    /// The agent holding it.
    pub assignee_id: String,
    /// When it was assigned to them (event time).
    pub assigned_at: String,
}

/// Active conversation tickets whose holder has not replied since the assignment, the
/// oldest assignment first. A reply by the holder after the assignment locks ownership, so
/// those never appear.
pub async fn unanswered_assignments(
    db: &Database,
    assigned_before: &str,
    limit: i64,
) -> Result<Vec<Unanswered>, DbError> {
    Ok(on_backend!(db, |pool| sqlx::query_as(
        "SELECT c.organization_id, c.id AS conversation_id, t.id AS ticket_id,
                t.assignee_id, t.assigned_at
           FROM conversations c JOIN tickets t ON t.id = c.ticket_id
          WHERE t.status IN ('ASSIGNED', 'IN_PROGRESS') AND t.assignee_id IS NOT NULL
            AND t.assigned_at IS NOT NULL AND t.assigned_at <= $1
            AND NOT (c.last_agent_reply_by IS NOT NULL AND c.last_agent_reply_by = t.assignee_id
                     AND c.last_agent_reply_at >= t.assigned_at)
          ORDER BY t.assigned_at LIMIT $2"
    )
    .bind(assigned_before)
    .bind(limit)
    .fetch_all(pool)
    .await?))
}

/// The ids of every configured channel of one kind (all organizations).
pub async fn channels_of_kind(db: &Database, channel: &str) -> Result<Vec<String>, DbError> {
    Ok(on_backend!(db, |pool| sqlx::query_scalar(
        "SELECT id FROM channels WHERE channel = $1 ORDER BY id"
    )
    .bind(channel)
    .fetch_all(pool)
    .await?))
}

/// The configured channel with this id, as `(organization, channel, api_base_url)`.
pub async fn channel(
    db: &Database,
    id: &str,
) -> Result<Option<(String, String, Option<String>)>, DbError> {
    Ok(on_backend!(db, |pool| sqlx::query_as(
        "SELECT organization_id, channel, api_base_url FROM channels WHERE id = $1"
    )
    .bind(id)
    .fetch_optional(pool)
    .await?))
}

/// The WhatsApp channel of a phone number id, as `(channel id, organization)`.
pub async fn whatsapp_channel(
    db: &Database,
    phone_number_id: &str,
) -> Result<Option<(String, String)>, DbError> {
    Ok(on_backend!(db, |pool| sqlx::query_as(
        "SELECT id, organization_id FROM channels
          WHERE channel = 'WHATSAPP' AND phone_number_id = $1"
    )
    .bind(phone_number_id)
    .fetch_optional(pool)
    .await?))
}
