//! The "agents" projection: each organization's agents and their settings.

use async_trait::async_trait;
use domain::agent::AgentEvent;
use sqlx::FromRow;

use crate::db::{timestamp, Bind, Database, DbError, Statement, Tx};
use crate::event_log::StoredEvent;
use crate::runner::Projection;
use crate::{bind_all, on_backend};

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
        &["agents", "slot_reservations"]
    }

    async fn apply(&self, tx: &mut Tx, event: &StoredEvent) -> Result<(), DbError> {
        if event.aggregate_type != "AgentStatus" {
            return Ok(());
        }
        let id = event.aggregate_id.as_str();
        let at = timestamp(event.occurred_at());
        let (sql, binds): (&str, Vec<Bind>) = match event.decode::<AgentEvent>()? {
            AgentEvent::AgentRegistered {
                organization,
                name,
                max_tickets,
                division_ids,
            } => (
                "INSERT INTO agents (id, organization_id, name, max_tickets, division_ids,
                    registered_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                vec![
                    Bind::Text(organization),
                    Bind::Text(name),
                    Bind::Int(max_tickets),
                    Bind::Text(json_list(&division_ids)?),
                    Bind::Text(at),
                ],
            ),
            AgentEvent::AgentWentOnline => (
                "UPDATE agents SET online = $2, online_since = $3 WHERE id = $1",
                vec![Bind::Bool(true), Bind::Text(at)],
            ),
            AgentEvent::AgentWentOffline => (
                "UPDATE agents SET online = $2, online_since = NULL WHERE id = $1",
                vec![Bind::Bool(false)],
            ),
            AgentEvent::AgentCapacityChanged { to, .. } => (
                "UPDATE agents SET max_tickets = $2 WHERE id = $1",
                vec![Bind::Int(to)],
            ),
            AgentEvent::AgentDivisionsChanged { division_ids } => (
                "UPDATE agents SET division_ids = $2 WHERE id = $1",
                vec![Bind::Text(json_list(&division_ids)?)],
            ),
            AgentEvent::SlotReserved {
                ticket_id,
                ticket_version,
                ..
            } => (
                "INSERT INTO slot_reservations (agent_id, ticket_id, organization_id,
                    ticket_version, reserved_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (agent_id, ticket_id) DO UPDATE
                    SET ticket_version = excluded.ticket_version,
                        reserved_at = excluded.reserved_at",
                vec![
                    Bind::Text(ticket_id),
                    Bind::Text(event.metadata.organization.clone()),
                    Bind::Int(ticket_version as i64),
                    Bind::Text(at),
                ],
            ),
            AgentEvent::SlotReleased { ticket_id, .. } => (
                "DELETE FROM slot_reservations WHERE agent_id = $1 AND ticket_id = $2",
                vec![Bind::Text(ticket_id)],
            ),
        };
        let mut statement = Statement::new(sql);
        statement.bind(Bind::Text(id.into()));
        statement.binds.extend(binds);
        on_backend!(tx, |t| {
            bind_all!(sqlx::query(&statement.sql), statement)
                .execute(&mut **t)
                .await?;
        });
        Ok(())
    }
}

fn json_list(values: &[String]) -> Result<String, DbError> {
    serde_json::to_string(values).map_err(|e| DbError::Corrupt(e.to_string()))
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

/// An agent with the figures of the workload view and of the assignment policy.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct AgentWorkload {
    /// The agent.
    #[sqlx(flatten)]
    pub agent: AgentRecord,
    /// Tickets ASSIGNED or IN_PROGRESS with the agent.
    pub active_tickets: i64,
    /// When the agent was last given a ticket (stored timestamp).
    pub last_assigned_at: Option<String>,
}

impl AgentWorkload {
    /// Whether the agent serves `division_id` (everyone serves tickets without one).
    pub fn serves(&self, division_id: Option<&str>) -> bool {
        match division_id {
            None => true,
            Some(division) => self.agent.division_ids().iter().any(|d| d == division),
        }
    }

    /// Online with a free slot.
    pub fn has_free_slot(&self) -> bool {
        self.agent.online && self.active_tickets < self.agent.max_tickets
    }
}

/// Every agent of `organization` with their active tickets and last assignment, by name;
/// only those serving `division_id` when it is given.
pub async fn workload(
    db: &Database,
    organization: &str,
    division_id: Option<&str>,
) -> Result<Vec<AgentWorkload>, DbError> {
    let sql = "SELECT a.id, a.name, a.max_tickets, a.division_ids, a.online,
            (SELECT COUNT(*) FROM tickets t
              WHERE t.organization_id = a.organization_id AND t.assignee_id = a.id
                AND t.status IN ('ASSIGNED', 'IN_PROGRESS')) AS active_tickets,
            aa.last_assigned_at
       FROM agents a LEFT JOIN agent_assignments aa ON aa.agent_id = a.id
      WHERE a.organization_id = $1
      ORDER BY a.name, a.id";
    let rows: Vec<AgentWorkload> = on_backend!(db, |pool| sqlx::query_as(sql)
        .bind(organization)
        .fetch_all(pool)
        .await?);
    Ok(match division_id {
        None => rows,
        Some(_) => rows.into_iter().filter(|w| w.serves(division_id)).collect(),
    })
}

/// A slot whose ticket is not (or not yet) active with its agent.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct IdleSlot {
    /// The agent holding the slot.
    pub agent_id: String,
    /// The ticket it was reserved for.
    pub ticket_id: String,
    /// The ticket version the reservation named.
    pub ticket_version: i64,
    /// When it was reserved (stored timestamp).
    pub reserved_at: String,
    /// The ticket's version as the tickets projection shows it (`None`: not visible yet).
    pub current_version: Option<i64>,
}

/// The slots of `organization` whose ticket the tickets projection does not show as
/// active with the slot's agent: reservations in flight, and slots to release.
pub async fn idle_slots(db: &Database, organization: &str) -> Result<Vec<IdleSlot>, DbError> {
    Ok(on_backend!(db, |pool| sqlx::query_as(
        "SELECT r.agent_id, r.ticket_id, r.ticket_version, r.reserved_at,
                t.version AS current_version
           FROM slot_reservations r LEFT JOIN tickets t ON t.id = r.ticket_id
          WHERE r.organization_id = $1
            AND (t.id IS NULL OR t.assignee_id IS NULL OR t.assignee_id <> r.agent_id
                 OR t.status NOT IN ('ASSIGNED', 'IN_PROGRESS'))"
    )
    .bind(organization)
    .fetch_all(pool)
    .await?))
}

/// Every organization with agents.
pub async fn organizations(db: &Database) -> Result<Vec<String>, DbError> {
    Ok(on_backend!(db, |pool| sqlx::query_scalar(
        "SELECT DISTINCT organization_id FROM agents"
    )
    .fetch_all(pool)
    .await?))
}
