//! The notification center (`CONTRACT.md`, "Real time and notifications"):
//! `notifications`, `unreadNotificationCount`, `markNotificationRead`,
//! `markAllNotificationsRead`, `deleteNotification`, `clearReadNotifications`. Every
//! signed-in user has their own notifications (the token's `sub`).

use async_graphql::{Context, Enum, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use projections::db::parse_timestamp;
use projections::notifications::NotificationRecord;

use super::types::{connection, PageInfo};
use super::{caller, helpdesk, page_size, parse_uuid, request_id};
use crate::error::{ApiError, ApiResult};

/// Why a user is notified.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum NotificationKind {
    /// A ticket was assigned to you.
    TicketAssigned,
    /// The customer wrote on a conversation whose ticket you hold.
    CustomerMessage,
    /// An escalation took a ticket from you.
    EscalatedAway,
    /// An escalation gave you a ticket.
    EscalatedToYou,
    /// A ticket you held was reopened.
    TicketReopened,
}

/// One notification.
#[derive(SimpleObject, Clone)]
pub struct Notification {
    /// Opaque id.
    pub id: ID,
    /// Why.
    pub kind: NotificationKind,
    /// What it says.
    pub title: String,
    /// The ticket.
    pub ticket_id: Option<ID>,
    /// Its number.
    pub ticket_number: Option<i64>,
    /// The conversation (customer messages).
    pub conversation_id: Option<ID>,
    /// When it happened.
    pub created_at: DateTime<Utc>,
    /// Whether it was read.
    pub read: bool,
    /// When it was read.
    pub read_at: Option<DateTime<Utc>>,
}

impl Notification {
    /// The GraphQL notification of a read-model row.
    pub fn from_record(record: &NotificationRecord) -> ApiResult<Self> {
        let kind = match record.kind.as_str() {
            "TICKET_ASSIGNED" => NotificationKind::TicketAssigned,
            "CUSTOMER_MESSAGE" => NotificationKind::CustomerMessage,
            "ESCALATED_AWAY" => NotificationKind::EscalatedAway,
            "ESCALATED_TO_YOU" => NotificationKind::EscalatedToYou,
            "TICKET_REOPENED" => NotificationKind::TicketReopened,
            other => return Err(ApiError::internal(format!("notification kind {other:?}"))),
        };
        let ticket = record
            .ticket_number
            .map(|n| format!("Ticket #{n}"))
            .unwrap_or_else(|| "A ticket".into());
        let title = match kind {
            NotificationKind::TicketAssigned => format!("{ticket} was assigned to you"),
            NotificationKind::CustomerMessage => format!("New customer message on {ticket}"),
            NotificationKind::EscalatedAway => {
                format!("{ticket} was escalated to another agent")
            }
            NotificationKind::EscalatedToYou => format!("{ticket} was escalated to you"),
            NotificationKind::TicketReopened => format!("{ticket} was reopened"),
        };
        let read_at = record.read_at.as_deref().map(parse_timestamp).transpose()?;
        Ok(Self {
            id: ID(record.id.clone()),
            kind,
            title,
            ticket_id: record.ticket_id.clone().map(ID),
            ticket_number: record.ticket_number,
            conversation_id: record.conversation_id.clone().map(ID),
            created_at: parse_timestamp(&record.created_at)?,
            read: read_at.is_some(),
            read_at,
        })
    }
}

connection!(NotificationConnection, NotificationEdge, Notification);

fn cursor(position: i64) -> String {
    format!("n{position}")
}

fn parse_cursor(cursor: &str) -> ApiResult<i64> {
    cursor
        .strip_prefix('n')
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| ApiError::bad_input("malformed notification cursor"))
}

/// Notification queries.
#[derive(Default)]
pub struct NotificationQuery;

#[Object]
impl NotificationQuery {
    /// The caller's notifications, newest first.
    async fn notifications(
        &self,
        ctx: &Context<'_>,
        unread_only: Option<bool>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<NotificationConnection> {
        let caller = caller(ctx)?;
        let first = page_size(first)?;
        let before = after.as_deref().map(parse_cursor).transpose()?;
        let (mut rows, total) = projections::notifications::notifications(
            &helpdesk(ctx)?.db,
            &caller.organization,
            &caller.actor.id,
            unread_only.unwrap_or(false),
            before,
            first + 1,
        )
        .await
        .map_err(ApiError::from)?;
        let more = rows.len() as i64 > first;
        rows.truncate(first as usize);
        let edges = rows
            .iter()
            .map(|r| {
                Ok(NotificationEdge {
                    cursor: cursor(r.position),
                    node: Notification::from_record(r)?,
                })
            })
            .collect::<ApiResult<Vec<_>>>()?;
        Ok(NotificationConnection::new(edges, more, total))
    }

    /// How many of the caller's notifications are unread (the bell's badge).
    async fn unread_notification_count(&self, ctx: &Context<'_>) -> async_graphql::Result<i64> {
        let caller = caller(ctx)?;
        let (count, _) = projections::notifications::counted(
            &helpdesk(ctx)?.db,
            &caller.organization,
            &caller.actor.id,
            false,
        )
        .await
        .map_err(ApiError::from)?;
        Ok(count)
    }
}

/// Notification mutations.
#[derive(Default)]
pub struct NotificationMutation;

#[Object]
impl NotificationMutation {
    /// Marks one of the caller's notifications read.
    async fn mark_notification_read(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Notification> {
        let caller = caller(ctx)?;
        let helpdesk = helpdesk(ctx)?;
        let id = parse_uuid(&id, "notification")?;
        helpdesk
            .mark_notification_read(caller, &request_id(ctx), &id)
            .await?;
        let record =
            projections::notifications::notification(&helpdesk.db, &caller.organization, &id)
                .await
                .map_err(ApiError::from)?
                .ok_or_else(|| ApiError::NotFound("notification not found".into()))?;
        Ok(Notification::from_record(&record)?)
    }

    /// Marks all the caller's notifications read; returns how many were unread.
    async fn mark_all_notifications_read(&self, ctx: &Context<'_>) -> async_graphql::Result<i64> {
        let caller = caller(ctx)?;
        Ok(helpdesk(ctx)?
            .mark_all_notifications_read(caller, &request_id(ctx))
            .await?)
    }

    /// Deletes one of the caller's notifications.
    async fn delete_notification(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        let caller = caller(ctx)?;
        let id = parse_uuid(&id, "notification")?;
        helpdesk(ctx)?
            .delete_notification(caller, &request_id(ctx), &id)
            .await?;
        Ok(true)
    }

    /// Deletes the caller's read notifications; returns how many.
    async fn clear_read_notifications(&self, ctx: &Context<'_>) -> async_graphql::Result<i64> {
        let caller = caller(ctx)?;
        Ok(helpdesk(ctx)?
            .clear_read_notifications(caller, &request_id(ctx))
            .await?)
    }
}
