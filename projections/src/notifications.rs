//! The "notifications" projection: each user's notifications, derived from what happened
//! to tickets and conversations, with what the user did to them (read, deleted).
//!
//! Who is notified:
//!
//! - `TICKET_ASSIGNED`: the agent a ticket is assigned to (not when they took it themselves);
//! - `ESCALATED_TO_YOU` / `ESCALATED_AWAY`: both agents of an escalation;
//! - `TICKET_REOPENED`: the agent who last held a reopened ticket (not when they reopened it);
//! - `CUSTOMER_MESSAGE`: the agent holding the ticket of a conversation the customer wrote on.
//!
//! A notification's id derives from the causing event's position and the user, so a rebuild
//! gives the same ids, and reads and deletions (events of the Notification aggregate with
//! that id) land on the same rows.

use async_trait::async_trait;
use domain::conversation::ConversationEvent;
use domain::notification::{InboxEvent, NotificationEvent, NotificationKind};
use domain::ticket::{AssignmentVia, TicketEvent};
use sqlx::FromRow;
use std::collections::{BTreeSet, HashMap};

use crate::bulk::{self, Kind, Rows};
use crate::db::{timestamp, Backend, Database, DbError, Tx};
use crate::event_log::StoredEvent;
use crate::on_backend;
use crate::runner::Projection;

/// Builds the notification tables.
#[derive(Debug, Default)]
pub struct NotificationsProjection;

impl NotificationsProjection {
    /// Its name.
    pub const NAME: &'static str = "notifications";
}

const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x2f6e_91c4_5a3b_4d7e_b0a8_6c1d_9e4f_7a25);

/// The id of the notification `user_id` gets from the event at `position`.
pub fn notification_id(position: i64, user_id: &str) -> String {
    uuid::Uuid::new_v5(&NAMESPACE, format!("{position}\u{1f}{user_id}").as_bytes()).to_string()
}

#[async_trait]
impl Projection for NotificationsProjection {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["Ticket", "Conversation", "Notification", "Inbox"]
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "notifications",
            "notification_tickets",
            "notification_conversations",
        ]
    }

    async fn apply(&self, tx: &mut Tx, event: &StoredEvent) -> Result<(), DbError> {
        self.apply_batch(tx, &[event]).await
    }

    /// Ticket and Conversation events (nearly all of them) are folded in memory a run at a
    /// time; a user's own Notification and Inbox events, which change stored notifications
    /// by id or by position, are applied one by one after the run before them is written.
    async fn apply_batch(&self, tx: &mut Tx, events: &[&StoredEvent]) -> Result<(), DbError> {
        let mut run: Vec<&StoredEvent> = Vec::new();
        for event in events {
            match event.aggregate_type.as_str() {
                "Ticket" | "Conversation" => run.push(event),
                "Notification" | "Inbox" => {
                    Fold::apply_run(tx, &std::mem::take(&mut run)).await?;
                    if event.aggregate_type == "Notification" {
                        apply_notification(tx, event).await?;
                    } else {
                        apply_inbox(tx, event).await?;
                    }
                }
                _ => {}
            }
        }
        Fold::apply_run(tx, &run).await
    }
}

/// A `notification_tickets` row: who holds the ticket now.
#[derive(Debug, Clone, FromRow)]
struct TicketRow {
    ticket_id: String,
    organization_id: String,
    number: i64,
    holder_id: Option<String>,
}

const TICKET_ROW: &[(&str, Kind)] = &[
    ("ticket_id", Kind::Text),
    ("organization_id", Kind::Text),
    ("number", Kind::Int),
    ("holder_id", Kind::Text),
];

const CONVERSATION_ROW: &[(&str, Kind)] =
    &[("conversation_id", Kind::Text), ("ticket_id", Kind::Text)];

const NOTIFICATION_ROW: &[(&str, Kind)] = &[
    ("id", Kind::Text),
    ("organization_id", Kind::Text),
    ("user_id", Kind::Text),
    ("kind", Kind::Text),
    ("ticket_id", Kind::Text),
    ("ticket_number", Kind::Int),
    ("conversation_id", Kind::Text),
    ("created_at", Kind::Text),
    ("position", Kind::Int),
    ("read_at", Kind::Text),
    ("deleted", Kind::Bool),
];

/// The ticket holders and conversation links a run of Ticket and Conversation events
/// touches, read once, changed in memory, written once, with the notifications the run adds.
#[derive(Debug)]
struct Fold {
    tickets: HashMap<String, TicketRow>,
    changed_tickets: BTreeSet<String>,
    conversations: HashMap<String, String>,
    changed_conversations: BTreeSet<String>,
    notifications: Rows,
}

impl Fold {
    async fn apply_run(tx: &mut Tx, run: &[&StoredEvent]) -> Result<(), DbError> {
        if run.is_empty() {
            return Ok(());
        }
        let mut decoded = Vec::with_capacity(run.len());
        let mut conversation_ids = BTreeSet::new();
        let mut ticket_ids = BTreeSet::new();
        for event in run {
            let decoded_event = if event.aggregate_type == "Ticket" {
                ticket_ids.insert(event.aggregate_id.clone());
                Decoded::Ticket(event.decode::<TicketEvent>()?)
            } else {
                let conversation_event = event.decode::<ConversationEvent>()?;
                match &conversation_event {
                    ConversationEvent::TicketLinked { ticket_id } => {
                        ticket_ids.insert(ticket_id.clone());
                        conversation_ids.insert(event.aggregate_id.clone());
                    }
                    ConversationEvent::MessageReceived { .. } => {
                        conversation_ids.insert(event.aggregate_id.clone());
                    }
                    _ => {}
                }
                Decoded::Conversation(conversation_event)
            };
            decoded.push((*event, decoded_event));
        }
        let mut fold = Fold {
            tickets: HashMap::new(),
            changed_tickets: BTreeSet::new(),
            conversations: HashMap::new(),
            changed_conversations: BTreeSet::new(),
            notifications: Rows::new("notifications", NOTIFICATION_ROW),
        };
        let conversation_ids: Vec<String> = conversation_ids.into_iter().collect();
        let links: Vec<(String, String)> = bulk::select_in(
            tx,
            "SELECT conversation_id, ticket_id FROM notification_conversations",
            "conversation_id",
            &conversation_ids,
        )
        .await?;
        for (conversation, ticket) in links {
            ticket_ids.insert(ticket.clone());
            fold.conversations.insert(conversation, ticket);
        }
        let ticket_ids: Vec<String> = ticket_ids.into_iter().collect();
        let select = format!(
            "SELECT {} FROM notification_tickets",
            bulk::column_list(TICKET_ROW)
        );
        let rows: Vec<TicketRow> = bulk::select_in(tx, &select, "ticket_id", &ticket_ids).await?;
        fold.tickets = rows.into_iter().map(|r| (r.ticket_id.clone(), r)).collect();
        for (event, decoded_event) in decoded {
            match decoded_event {
                Decoded::Ticket(ticket_event) => fold.ticket(event, ticket_event)?,
                Decoded::Conversation(conversation_event) => {
                    fold.conversation(event, conversation_event)?
                }
            }
        }
        fold.write(tx).await
    }

    fn ticket(&mut self, event: &StoredEvent, ticket_event: TicketEvent) -> Result<(), DbError> {
        let ticket_id = event.aggregate_id.as_str();
        let actor = event.metadata.actor.id.as_str();
        match ticket_event {
            TicketEvent::TicketCreated {
                organization,
                number,
                ..
            } => {
                if self.tickets.contains_key(ticket_id) {
                    return Err(DbError::Corrupt(format!(
                        "ticket {ticket_id} created twice"
                    )));
                }
                self.tickets.insert(
                    ticket_id.to_string(),
                    TicketRow {
                        ticket_id: ticket_id.to_string(),
                        organization_id: organization,
                        number,
                        holder_id: None,
                    },
                );
                self.changed_tickets.insert(ticket_id.to_string());
            }
            TicketEvent::TicketAssigned {
                agent_id,
                previous_agent_id,
                via,
                ..
            } => {
                self.set_holder(ticket_id, Some(agent_id.clone()));
                if via == AssignmentVia::Escalation {
                    self.notify(event, &agent_id, NotificationKind::EscalatedToYou, None)?;
                    if let Some(previous) = &previous_agent_id {
                        self.notify(event, previous, NotificationKind::EscalatedAway, None)?;
                    }
                } else if agent_id != actor {
                    self.notify(event, &agent_id, NotificationKind::TicketAssigned, None)?;
                }
            }
            TicketEvent::TicketReopened {
                previous_agent_id, ..
            } => {
                self.set_holder(ticket_id, None);
                if let Some(previous) = previous_agent_id.filter(|p| p != actor) {
                    self.notify(event, &previous, NotificationKind::TicketReopened, None)?;
                }
            }
            TicketEvent::TicketRequeued { .. }
            | TicketEvent::TicketResolved { .. }
            | TicketEvent::TicketClosed => self.set_holder(ticket_id, None),
            TicketEvent::TicketStarted { .. }
            | TicketEvent::TicketPriorityChanged { .. }
            | TicketEvent::CommentAdded { .. }
            | TicketEvent::TicketRated { .. } => {}
        }
        Ok(())
    }

    /// A ticket never created keeps no holder, as an UPDATE of no row would.
    fn set_holder(&mut self, ticket_id: &str, holder: Option<String>) {
        if let Some(row) = self.tickets.get_mut(ticket_id) {
            row.holder_id = holder;
            self.changed_tickets.insert(ticket_id.to_string());
        }
    }

    fn conversation(
        &mut self,
        event: &StoredEvent,
        conversation_event: ConversationEvent,
    ) -> Result<(), DbError> {
        let conversation_id = event.aggregate_id.as_str();
        match conversation_event {
            ConversationEvent::TicketLinked { ticket_id } => {
                self.conversations
                    .insert(conversation_id.to_string(), ticket_id);
                self.changed_conversations
                    .insert(conversation_id.to_string());
            }
            ConversationEvent::MessageReceived { .. } => {
                let holder = self
                    .conversations
                    .get(conversation_id)
                    .and_then(|ticket_id| self.tickets.get(ticket_id))
                    .and_then(|row| Some((row.ticket_id.clone(), row.holder_id.clone()?)));
                if let Some((ticket_id, holder)) = holder {
                    self.notify(
                        event,
                        &holder,
                        NotificationKind::CustomerMessage,
                        Some((conversation_id, &ticket_id)),
                    )?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Adds the notification `user_id` gets from `event` (about its ticket, or the ticket
    /// `ticket_id` for conversation events), with the ticket's number as it stands.
    fn notify(
        &mut self,
        event: &StoredEvent,
        user_id: &str,
        kind: NotificationKind,
        conversation: Option<(&str, &str)>,
    ) -> Result<(), DbError> {
        let (ticket_id, conversation_id) = match conversation {
            Some((conversation_id, ticket_id)) => (ticket_id, Some(conversation_id.to_string())),
            None => (event.aggregate_id.as_str(), None),
        };
        let number = self.tickets.get(ticket_id).map(|row| row.number);
        self.notifications.push([
            notification_id(event.position(), user_id).into(),
            event.metadata.organization.as_str().into(),
            user_id.into(),
            kind.as_str().into(),
            ticket_id.into(),
            number.into(),
            conversation_id.into(),
            timestamp(event.occurred_at()).into(),
            event.position().into(),
            None::<String>.into(),
            false.into(),
        ])
    }

    async fn write(mut self, tx: &mut Tx) -> Result<(), DbError> {
        let mut tickets = Rows::new("notification_tickets", TICKET_ROW);
        for id in &self.changed_tickets {
            if let Some(row) = self.tickets.remove(id) {
                tickets.push([
                    row.ticket_id.into(),
                    row.organization_id.into(),
                    row.number.into(),
                    row.holder_id.into(),
                ])?;
            }
        }
        tickets
            .insert(tx, &bulk::replace_on_conflict(TICKET_ROW, &["ticket_id"]))
            .await?;
        let mut links = Rows::new("notification_conversations", CONVERSATION_ROW);
        for id in self.changed_conversations {
            if let Some(ticket) = self.conversations.remove(&id) {
                links.push([id.into(), ticket.into()])?;
            }
        }
        links
            .insert(
                tx,
                &bulk::replace_on_conflict(CONVERSATION_ROW, &["conversation_id"]),
            )
            .await?;
        self.notifications
            .insert(tx, "ON CONFLICT (id) DO NOTHING")
            .await
    }
}

/// A decoded event of a run.
enum Decoded {
    Ticket(TicketEvent),
    Conversation(ConversationEvent),
}

async fn apply_notification(tx: &mut Tx, event: &StoredEvent) -> Result<(), DbError> {
    let id = event.aggregate_id.as_str();
    match event.decode::<NotificationEvent>()? {
        NotificationEvent::NotificationRead { .. } => on_backend!(tx, |t| {
            sqlx::query("UPDATE notifications SET read_at = $2 WHERE id = $1 AND read_at IS NULL")
                .bind(id)
                .bind(timestamp(event.occurred_at()))
                .execute(&mut **t)
                .await?;
        }),
        NotificationEvent::NotificationDeleted { .. } => on_backend!(tx, |t| {
            sqlx::query("UPDATE notifications SET deleted = true WHERE id = $1")
                .bind(id)
                .execute(&mut **t)
                .await?;
        }),
    }
    Ok(())
}

async fn apply_inbox(tx: &mut Tx, event: &StoredEvent) -> Result<(), DbError> {
    match event.decode::<InboxEvent>()? {
        InboxEvent::AllNotificationsRead {
            organization,
            user_id,
            up_to,
        } => on_backend!(tx, |t| {
            sqlx::query(
                "UPDATE notifications SET read_at = $4
                  WHERE organization_id = $1 AND user_id = $2 AND position <= $3
                    AND read_at IS NULL AND NOT deleted",
            )
            .bind(&organization)
            .bind(&user_id)
            .bind(up_to)
            .bind(timestamp(event.occurred_at()))
            .execute(&mut **t)
            .await?;
        }),
        InboxEvent::ReadNotificationsCleared {
            organization,
            user_id,
            up_to,
        } => on_backend!(tx, |t| {
            sqlx::query(
                "UPDATE notifications SET deleted = true
                  WHERE organization_id = $1 AND user_id = $2 AND position <= $3
                    AND read_at IS NOT NULL AND NOT deleted",
            )
            .bind(&organization)
            .bind(&user_id)
            .bind(up_to)
            .execute(&mut **t)
            .await?;
        }),
    }
    Ok(())
}

/// A notification as the read model holds it.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct NotificationRecord {
    /// Its id.
    pub id: String,
    /// Its organization.
    pub organization_id: String,
    /// Whose it is.
    pub user_id: String,
    /// Why (see the module docs).
    pub kind: String,
    /// The ticket.
    pub ticket_id: Option<String>,
    /// Its number.
    pub ticket_number: Option<i64>,
    /// The conversation (customer messages).
    pub conversation_id: Option<String>,
    /// When it happened.
    pub created_at: String,
    /// The causing event's place in the log.
    pub position: i64,
    /// When the user read it.
    pub read_at: Option<String>,
}

const COLUMNS: &str = "id, organization_id, user_id, kind, ticket_id, ticket_number,
    conversation_id, created_at, position, read_at";

/// A user's notifications, newest first, before position `before`, at most `limit`;
/// with the count of all that match.
pub async fn notifications(
    db: &Database,
    organization: &str,
    user_id: &str,
    unread_only: bool,
    before: Option<i64>,
    limit: i64,
) -> Result<(Vec<NotificationRecord>, i64), DbError> {
    let filter = "organization_id = $1 AND user_id = $2 AND NOT deleted
        AND ($3 = false OR read_at IS NULL)";
    let page = format!(
        "SELECT {COLUMNS} FROM notifications WHERE {filter} AND position < $4
          ORDER BY position DESC, id LIMIT $5"
    );
    let total = format!("SELECT COUNT(*) FROM notifications WHERE {filter}");
    // Page and count from one snapshot, so `totalCount` never disagrees with the page while
    // notifications arrive (SQLite: a read transaction is a snapshot in WAL mode).
    let mut tx = db.begin().await?;
    if let Backend::Postgres(t) = &mut tx {
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut **t)
            .await?;
    }
    let found = on_backend!(&mut tx, |t| {
        let rows = sqlx::query_as(&page)
            .bind(organization)
            .bind(user_id)
            .bind(unread_only)
            .bind(before.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(&mut **t)
            .await?;
        let count: i64 = sqlx::query_scalar(&total)
            .bind(organization)
            .bind(user_id)
            .bind(unread_only)
            .fetch_one(&mut **t)
            .await?;
        (rows, count)
    });
    tx.commit().await?;
    Ok(found)
}

/// One notification of a user.
pub async fn notification(
    db: &Database,
    organization: &str,
    id: &str,
) -> Result<Option<NotificationRecord>, DbError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM notifications WHERE id = $1 AND organization_id = $2 AND NOT deleted"
    );
    Ok(on_backend!(db, |pool| sqlx::query_as(&sql)
        .bind(id)
        .bind(organization)
        .fetch_optional(pool)
        .await?))
}

/// The notifications an event at `position` caused.
pub async fn caused_by(db: &Database, position: i64) -> Result<Vec<NotificationRecord>, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM notifications WHERE position = $1 ORDER BY id");
    Ok(on_backend!(db, |pool| sqlx::query_as(&sql)
        .bind(position)
        .fetch_all(pool)
        .await?))
}

/// How many of a user's notifications are read (`read`) or unread, and the newest one's
/// position.
pub async fn counted(
    db: &Database,
    organization: &str,
    user_id: &str,
    read: bool,
) -> Result<(i64, Option<i64>), DbError> {
    Ok(on_backend!(db, |pool| sqlx::query_as(
        "SELECT COUNT(*), MAX(position) FROM notifications
          WHERE organization_id = $1 AND user_id = $2 AND NOT deleted
            AND (read_at IS NOT NULL) = $3"
    )
    .bind(organization)
    .bind(user_id)
    .bind(read)
    .fetch_one(pool)
    .await?))
}
