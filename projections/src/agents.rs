//! The "agents" projection: each organization's agents and their settings.

use async_trait::async_trait;
use domain::agent::AgentEvent;
use sqlx::FromRow;

use crate::db::{timestamp, Database, DbError, Tx};
use crate::event_log::StoredEvent;
use crate::on_backend;
use crate::runner::Projection;

/// Builds `agents` from AgentStatus events.
#[derive(Debug, Default)]
pub struct AgentsProjection;

#[async_trait]
impl Projection for AgentsProjection {
    fn name(&self) -> &'static str {
        "agents"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["AgentStatus"]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["agents"]
    }

    async fn apply(&self, tx: &mut Tx, event: &StoredEvent) -> Result<(), DbError> {
        if event.aggregate_type != "AgentStatus" {
            return Ok(());
        }
        match event.decode::<AgentEvent>()? {
            AgentEvent::AgentRegistered {
                organization,
                name,
                max_tickets,
                division_ids,
            } => {
                let division_ids = serde_json::to_string(&division_ids)
                    .map_err(|e| DbError::Corrupt(e.to_string()))?;
                on_backend!(tx, |t| {
                    sqlx::query(
                        "INSERT INTO agents (id, organization_id, name, max_tickets, division_ids,
                            registered_at)
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(&event.aggregate_id)
                    .bind(&organization)
                    .bind(&name)
                    .bind(max_tickets)
                    .bind(&division_ids)
                    .bind(timestamp(event.occurred_at()))
                    .execute(&mut **t)
                    .await?;
                });
            }
        }
        Ok(())
    }
}

/// An agent as the read model holds it.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct AgentRecord {
    /// The agent id (the `sub` of the agent's tokens).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Active tickets the agent may hold.
    pub max_tickets: i64,
    /// JSON array of division ids.
    pub division_ids: String,
    /// Whether the agent is online.
    pub online: bool,
}

impl AgentRecord {
    /// The agent's divisions.
    pub fn division_ids(&self) -> Vec<String> {
        serde_json::from_str(&self.division_ids).unwrap_or_default()
    }
}

const COLUMNS: &str = "id, name, max_tickets, division_ids, online";

/// The agents of `organization`, by name.
pub async fn agents(db: &Database, organization: &str) -> Result<Vec<AgentRecord>, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM agents WHERE organization_id = $1 ORDER BY name, id");
    Ok(on_backend!(db, |pool| sqlx::query_as::<_, AgentRecord>(
        &sql
    )
    .bind(organization)
    .fetch_all(pool)
    .await?))
}

/// One agent of `organization`.
pub async fn agent(
    db: &Database,
    organization: &str,
    id: &str,
) -> Result<Option<AgentRecord>, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM agents WHERE id = $1 AND organization_id = $2");
    Ok(on_backend!(db, |pool| sqlx::query_as::<_, AgentRecord>(
        &sql
    )
    .bind(id)
    .bind(organization)
    .fetch_optional(pool)
    .await?))
}

/// How many agents of `organization` are online and serve `division_id` (`None`: any
/// online agent serves tickets without a division).
pub async fn online_serving(
    db: &Database,
    organization: &str,
    division_id: Option<&str>,
) -> Result<i64, DbError> {
    let divisions: Vec<String> = on_backend!(db, |pool| sqlx::query_scalar(
        "SELECT division_ids FROM agents WHERE organization_id = $1 AND online = $2"
    )
    .bind(organization)
    .bind(true)
    .fetch_all(pool)
    .await?);
    Ok(divisions
        .iter()
        .filter(|json| match division_id {
            None => true,
            Some(division) => serde_json::from_str::<Vec<String>>(json)
                .unwrap_or_default()
                .iter()
                .any(|d| d == division),
        })
        .count() as i64)
}
