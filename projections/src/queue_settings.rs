//! The "queue_settings" projection: each organization's queue settings (the defaults until
//! an admin changes them).

use async_trait::async_trait;
use domain::queue_settings::{QueueSettings, QueueSettingsEvent};

use crate::db::{timestamp, Database, DbError, Tx};
use crate::event_log::StoredEvent;
use crate::on_backend;
use crate::runner::Projection;

/// Builds `queue_settings` from QueueSettings events.
#[derive(Debug, Default)]
pub struct QueueSettingsProjection;

#[async_trait]
impl Projection for QueueSettingsProjection {
    fn name(&self) -> &'static str {
        "queue_settings"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["QueueSettings"]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["queue_settings"]
    }

    async fn apply(&self, tx: &mut Tx, event: &StoredEvent) -> Result<(), DbError> {
        let QueueSettingsEvent::QueueSettingsUpdated {
            organization,
            settings,
        } = event.decode::<QueueSettingsEvent>()?;
        let settings =
            serde_json::to_string(&settings).map_err(|e| DbError::Corrupt(e.to_string()))?;
        on_backend!(tx, |t| {
            sqlx::query(
                "INSERT INTO queue_settings (organization_id, settings, updated_at)
                 VALUES ($1, $2, $3)
                 ON CONFLICT (organization_id) DO UPDATE
                    SET settings = excluded.settings, updated_at = excluded.updated_at",
            )
            .bind(&organization)
            .bind(&settings)
            .bind(timestamp(event.occurred_at()))
            .execute(&mut **t)
            .await?;
        });
        Ok(())
    }
}

/// The queue settings of `organization`.
pub async fn settings(db: &Database, organization: &str) -> Result<QueueSettings, DbError> {
    let stored: Option<String> = on_backend!(db, |pool| sqlx::query_scalar(
        "SELECT settings FROM queue_settings WHERE organization_id = $1"
    )
    .bind(organization)
    .fetch_optional(pool)
    .await?);
    match stored {
        None => Ok(QueueSettings::default()),
        Some(json) => serde_json::from_str(&json).map_err(|e| DbError::Corrupt(e.to_string())),
    }
}
