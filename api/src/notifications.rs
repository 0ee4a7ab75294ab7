//! The notification center (issue 8): a user marks their notifications read, deletes them,
//! or does either to all of them at once. The notifications come from the "notifications"
//! projection; these are the user's own changes, recorded as events
//! ([`domain::notification`]).

use domain::notification::{InboxAction, NotificationAction};

use crate::auth::Caller;
use crate::conversations::derived_id;
use crate::error::{ApiError, ApiResult};
use crate::helpdesk::{Helpdesk, Origin, Wait};

/// The id of a user's inbox aggregate.
fn inbox_id(organization: &str, user_id: &str) -> String {
    derived_id(&["inbox", organization, user_id])
}

impl Helpdesk {
    /// Marks one of the caller's notifications read.
    pub async fn mark_notification_read(
        &self,
        caller: &Caller,
        request_id: &str,
        id: &str,
    ) -> ApiResult<()> {
        self.on_notification(caller, request_id, id, true).await
    }

    /// Deletes one of the caller's notifications.
    pub async fn delete_notification(
        &self,
        caller: &Caller,
        request_id: &str,
        id: &str,
    ) -> ApiResult<()> {
        self.on_notification(caller, request_id, id, false).await
    }

    async fn on_notification(
        &self,
        caller: &Caller,
        request_id: &str,
        id: &str,
        read: bool,
    ) -> ApiResult<()> {
        // Another user's notification does not exist for the caller.
        let owner_id = projections::notifications::notification(&self.db, &caller.organization, id)
            .await?
            .filter(|n| n.user_id == caller.actor.id)
            .ok_or_else(|| ApiError::NotFound("notification not found".into()))?
            .user_id;
        let (action, name) = if read {
            (
                NotificationAction::MarkRead { owner_id },
                "markNotificationRead",
            )
        } else {
            (
                NotificationAction::Delete { owner_id },
                "deleteNotification",
            )
        };
        self.execute(
            &self.notifications,
            id,
            action,
            &Origin::of(caller, request_id),
            name,
            Wait::ForProjections,
        )
        .await
        .map(|_| ())
    }

    /// Marks every notification the caller has (up to the newest they could see) read;
    /// returns how many were unread.
    pub async fn mark_all_notifications_read(
        &self,
        caller: &Caller,
        request_id: &str,
    ) -> ApiResult<i64> {
        self.on_all(caller, request_id, false).await
    }

    /// Deletes every notification the caller has read; returns how many.
    pub async fn clear_read_notifications(
        &self,
        caller: &Caller,
        request_id: &str,
    ) -> ApiResult<i64> {
        self.on_all(caller, request_id, true).await
    }

    /// Marks the unread ones read (`read` false) or deletes the read ones, up to the newest
    /// of them now: one event however many it touches.
    async fn on_all(&self, caller: &Caller, request_id: &str, read: bool) -> ApiResult<i64> {
        let (count, newest) = projections::notifications::counted(
            &self.db,
            &caller.organization,
            &caller.actor.id,
            read,
        )
        .await?;
        let Some(up_to) = newest else {
            return Ok(0);
        };
        let (action, name) = if read {
            (InboxAction::ClearRead { up_to }, "clearReadNotifications")
        } else {
            (InboxAction::ReadAll { up_to }, "markAllNotificationsRead")
        };
        self.execute(
            &self.inboxes,
            &inbox_id(&caller.organization, &caller.actor.id),
            action,
            &Origin::of(caller, request_id),
            name,
            Wait::ForProjections,
        )
        .await?;
        Ok(count)
    }
}
