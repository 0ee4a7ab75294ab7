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
        match event.aggregate_type.as_str() {
            "Ticket" => apply_ticket(tx, event).await,
            "Conversation" => apply_conversation(tx, event).await,
            "Notification" => apply_notification(tx, event).await,
            "Inbox" => apply_inbox(tx, event).await,
            _ => Ok(()),
        }
    }
}

async fn apply_ticket(tx: &mut Tx, event: &StoredEvent) -> Result<(), DbError> {
    let ticket_id = event.aggregate_id.as_str();
    let actor = event.metadata.actor.id.as_str();
    match event.decode::<TicketEvent>()? {
        TicketEvent::TicketCreated {
            organization,
            number,
            ..
        } => {
            on_backend!(tx, |t| {
                sqlx::query(
                    "INSERT INTO notification_tickets (ticket_id, organization_id, number, holder_id)
                     VALUES ($1, $2, $3, NULL)",
                )
                .bind(ticket_id)
                .bind(&organization)
                .bind(number)
                .execute(&mut **t)
                .await?;
            });
        }
        TicketEvent::TicketAssigned {
            agent_id,
            previous_agent_id,
            via,
            ..
        } => {
            set_holder(tx, ticket_id, Some(&agent_id)).await?;
            if via == AssignmentVia::Escalation {
                notify(tx, event, &agent_id, NotificationKind::EscalatedToYou, None).await?;
                if let Some(previous) = &previous_agent_id {
                    notify(tx, event, previous, NotificationKind::EscalatedAway, None).await?;
                }
            } else if agent_id != actor {
                notify(tx, event, &agent_id, NotificationKind::TicketAssigned, None).await?;
            }
        }
        TicketEvent::TicketReopened {
            previous_agent_id, ..
        } => {
            set_holder(tx, ticket_id, None).await?;
            if let Some(previous) = previous_agent_id.filter(|p| p != actor) {
                notify(tx, event, &previous, NotificationKind::TicketReopened, None).await?;
            }
        }
        TicketEvent::TicketRequeued { .. }
        | TicketEvent::TicketResolved { .. }
        | TicketEvent::TicketClosed => set_holder(tx, ticket_id, None).await?,
        TicketEvent::TicketStarted { .. }
        | TicketEvent::TicketPriorityChanged { .. }
        | TicketEvent::CommentAdded { .. }
        | TicketEvent::TicketRated { .. } => {}
    }
    Ok(())
}

async fn set_holder(tx: &mut Tx, ticket_id: &str, holder: Option<&str>) -> Result<(), DbError> {
    on_backend!(tx, |t| {
        sqlx::query("UPDATE notification_tickets SET holder_id = $2 WHERE ticket_id = $1")
            .bind(ticket_id)
            .bind(holder)
            .execute(&mut **t)
            .await?;
    });
    Ok(())
}

/// Adds the notification `user_id` gets from `event` (about its ticket, or the ticket
/// `ticket_id` for conversation events).
async fn notify(
    tx: &mut Tx,
    event: &StoredEvent,
    user_id: &str,
    kind: NotificationKind,
    conversation: Option<(&str, &str)>,
) -> Result<(), DbError> {
    let (ticket_id, conversation_id) = match conversation {
        Some((conversation_id, ticket_id)) => (ticket_id, Some(conversation_id)),
        None => (event.aggregate_id.as_str(), None),
    };
    on_backend!(tx, |t| {
        sqlx::query(
            "INSERT INTO notifications (id, organization_id, user_id, kind, ticket_id,
                ticket_number, conversation_id, created_at, position, read_at, deleted)
             SELECT $1, $2, $3, $4, $5,
                    (SELECT number FROM notification_tickets WHERE ticket_id = $5), $6, $7, $8,
                    NULL, false
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(notification_id(event.position(), user_id))
        .bind(&event.metadata.organization)
        .bind(user_id)
        .bind(kind.as_str())
        .bind(ticket_id)
        .bind(conversation_id)
        .bind(timestamp(event.occurred_at()))
        .bind(event.position())
        .execute(&mut **t)
        .await?;
    });
    Ok(())
}

async fn apply_conversation(tx: &mut Tx, event: &StoredEvent) -> Result<(), DbError> {
    let conversation_id = event.aggregate_id.as_str();
    match event.decode::<ConversationEvent>()? {
        ConversationEvent::TicketLinked { ticket_id } => {
            on_backend!(tx, |t| {
                sqlx::query(
                    "INSERT INTO notification_conversations (conversation_id, ticket_id)
                     VALUES ($1, $2)
                     ON CONFLICT (conversation_id) DO UPDATE SET ticket_id = excluded.ticket_id",
                )
                .bind(conversation_id)
                .bind(&ticket_id)
                .execute(&mut **t)
                .await?;
            });
        }
        ConversationEvent::MessageReceived { .. } => {
            let holder: Option<(String, Option<String>)> = on_backend!(tx, |t| sqlx::query_as(
                "SELECT c.ticket_id, k.holder_id FROM notification_conversations c
                   JOIN notification_tickets k ON k.ticket_id = c.ticket_id
                  WHERE c.conversation_id = $1"
            )
            .bind(conversation_id)
            .fetch_optional(&mut **t)
            .await?);
            if let Some((ticket_id, Some(holder))) = holder {
                notify(
                    tx,
                    event,
                    &holder,
                    NotificationKind::CustomerMessage,
                    Some((conversation_id, &ticket_id)),
                )
                .await?;
            }
        }
        _ => {}
    }
    Ok(())
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
