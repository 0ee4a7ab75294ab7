//! The "divisions" projection: the divisions of each organization, in menu order.

use async_trait::async_trait;
use domain::division::{DivisionEvent, DivisionProfile};
use sqlx::FromRow;

use crate::db::{timestamp, Database, DbError, Tx};
use crate::event_log::StoredEvent;
use crate::on_backend;
use crate::runner::Projection;

/// Builds `divisions` from Division events.
#[derive(Debug, Default)]
pub struct DivisionsProjection;

#[async_trait]
impl Projection for DivisionsProjection {
    fn name(&self) -> &'static str {
        "divisions"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["Division"]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["divisions"]
    }

    async fn apply(&self, tx: &mut Tx, event: &StoredEvent) -> Result<(), DbError> {
        if event.aggregate_type != "Division" {
            return Ok(());
        }
        match event.decode::<DivisionEvent>()? {
            DivisionEvent::DivisionCreated {
                organization,
                profile,
            } => {
                let (keywords, mode, algorithm) = settings_text(&profile)?;
                on_backend!(tx, |t| {
                    sqlx::query(
                        "INSERT INTO divisions (id, organization_id, name, description, keywords,
                        menu_position, assignment_mode, algorithm, avg_handling_minutes, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    )
                    .bind(&event.aggregate_id)
                    .bind(&organization)
                    .bind(&profile.name)
                    .bind(&profile.description)
                    .bind(&keywords)
                    .bind(profile.position)
                    .bind(&mode)
                    .bind(&algorithm)
                    .bind(profile.avg_handling_minutes)
                    .bind(timestamp(event.occurred_at()))
                    .execute(&mut **t)
                    .await?;
                });
            }
            DivisionEvent::DivisionUpdated { profile } => {
                let (keywords, mode, algorithm) = settings_text(&profile)?;
                on_backend!(tx, |t| {
                    sqlx::query(
                        "UPDATE divisions SET name = $2, description = $3, keywords = $4,
                            menu_position = $5, assignment_mode = $6, algorithm = $7,
                            avg_handling_minutes = $8
                          WHERE id = $1",
                    )
                    .bind(&event.aggregate_id)
                    .bind(&profile.name)
                    .bind(&profile.description)
                    .bind(&keywords)
                    .bind(profile.position)
                    .bind(&mode)
                    .bind(&algorithm)
                    .bind(profile.avg_handling_minutes)
                    .execute(&mut **t)
                    .await?;
                });
            }
        }
        Ok(())
    }
}

/// The stored text of a profile's keywords (JSON), mode and algorithm (contract names).
fn settings_text(profile: &DivisionProfile) -> Result<(String, String, String), DbError> {
    let name = |value: serde_json::Result<serde_json::Value>| {
        value
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .ok_or_else(|| DbError::Corrupt("unnamed division setting".into()))
    };
    Ok((
        serde_json::to_string(&profile.keywords).map_err(|e| DbError::Corrupt(e.to_string()))?,
        name(serde_json::to_value(profile.assignment_mode))?,
        name(serde_json::to_value(profile.algorithm))?,
    ))
}

/// A division as the read model holds it.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct DivisionRecord {
    /// The division id.
    pub id: String,
    /// Shown in the menu.
    pub name: String,
    /// Shown under the name.
    pub description: Option<String>,
    /// JSON array of routing words.
    pub keywords: String,
    /// Menu place; `None` sorts last.
    pub menu_position: Option<i64>,
    /// `AUTO` or `CLAIM`.
    pub assignment_mode: String,
    /// `ROUND_ROBIN`, `LEAST_LOADED` or `RANDOM`.
    pub algorithm: String,
    /// Typical handling time.
    pub avg_handling_minutes: i64,
    /// Stored timestamp.
    pub created_at: String,
}

impl DivisionRecord {
    /// The assignment mode as the domain type.
    pub fn mode(&self) -> Option<domain::division::AssignmentMode> {
        serde_json::from_value(serde_json::Value::String(self.assignment_mode.clone())).ok()
    }

    /// The assignment algorithm as the domain type.
    pub fn algorithm(&self) -> Option<domain::division::AssignmentAlgorithm> {
        serde_json::from_value(serde_json::Value::String(self.algorithm.clone())).ok()
    }

    /// The routing words.
    pub fn keywords(&self) -> Vec<String> {
        serde_json::from_str(&self.keywords).unwrap_or_default()
    }
}

const COLUMNS: &str = "id, name, description, keywords, menu_position, assignment_mode, algorithm,
    avg_handling_minutes, created_at";

/// The divisions of `organization` in menu order (position, then creation).
pub async fn divisions(db: &Database, organization: &str) -> Result<Vec<DivisionRecord>, DbError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM divisions WHERE organization_id = $1
          ORDER BY CASE WHEN menu_position IS NULL THEN 1 ELSE 0 END, menu_position, created_at, id"
    );
    Ok(on_backend!(db, |pool| sqlx::query_as::<_, DivisionRecord>(
        &sql
    )
    .bind(organization)
    .fetch_all(pool)
    .await?))
}

/// One division of `organization`.
pub async fn division(
    db: &Database,
    organization: &str,
    id: &str,
) -> Result<Option<DivisionRecord>, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM divisions WHERE id = $1 AND organization_id = $2");
    Ok(on_backend!(db, |pool| sqlx::query_as::<_, DivisionRecord>(
        &sql
    )
    .bind(id)
    .bind(organization)
    .fetch_optional(pool)
    .await?))
}
