//! The "agents" projection: each organization's agents and their settings.

use async_trait::async_trait;
use domain::agent::AgentEvent;
use sqlx::FromRow;
use std::collections::BTreeMap;

use crate::bulk::{self, Kind, Rows};
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
        &["agents", "slot_reservations"]
    }

    async fn apply(&self, tx: &mut Tx, event: &StoredEvent) -> Result<(), DbError> {
        self.apply_batch(tx, &[event]).await
    }

    /// Reads the batch's agents and all their slot reservations, folds the events in
    /// memory, and writes the agents back and their reservations anew.
    async fn apply_batch(&self, tx: &mut Tx, events: &[&StoredEvent]) -> Result<(), DbError> {
        let decoded = bulk::decode_all::<AgentEvent>(events, "AgentStatus")?;
        if decoded.is_empty() {
            return Ok(());
        }
        let ids = bulk::aggregate_ids(&decoded);
        let select = format!("SELECT {} FROM agents", bulk::column_list(AGENT_ROW));
        let stored: Vec<AgentRow> = bulk::select_in(tx, &select, "id", &ids).await?;
        let mut agents: BTreeMap<String, AgentRow> =
            stored.into_iter().map(|a| (a.id.clone(), a)).collect();
        let select = format!(
            "SELECT {} FROM slot_reservations",
            bulk::column_list(RESERVATION_ROW)
        );
        let stored: Vec<ReservationRow> = bulk::select_in(tx, &select, "agent_id", &ids).await?;
        let mut reservations: BTreeMap<(String, String), ReservationRow> = stored
            .into_iter()
            .map(|r| ((r.agent_id.clone(), r.ticket_id.clone()), r))
            .collect();
        for (event, agent_event) in decoded {
            let id = event.aggregate_id.as_str();
            let at = timestamp(event.occurred_at());
            // Changes to an agent never registered change nothing, as an UPDATE would.
            let agent = agents.get_mut(id);
            match agent_event {
                AgentEvent::AgentRegistered {
                    organization,
                    name,
                    max_tickets,
                    division_ids,
                } => {
                    if agent.is_some() {
                        return Err(DbError::Corrupt(format!("agent {id} registered twice")));
                    }
                    agents.insert(
                        id.to_string(),
                        AgentRow {
                            id: id.to_string(),
                            organization_id: organization,
                            name,
                            max_tickets,
                            division_ids: json_list(&division_ids)?,
                            online: false,
                            registered_at: at,
                            online_since: None,
                        },
                    );
                }
                AgentEvent::AgentWentOnline => {
                    if let Some(agent) = agent {
                        agent.online = true;
                        agent.online_since = Some(at);
                    }
                }
                AgentEvent::AgentWentOffline => {
                    if let Some(agent) = agent {
                        agent.online = false;
                        agent.online_since = None;
                    }
                }
                AgentEvent::AgentCapacityChanged { to, .. } => {
                    if let Some(agent) = agent {
                        agent.max_tickets = to;
                    }
                }
                AgentEvent::AgentDivisionsChanged { division_ids } => {
                    if let Some(agent) = agent {
                        agent.division_ids = json_list(&division_ids)?;
                    }
                }
                AgentEvent::SlotReserved {
                    ticket_id,
                    ticket_version,
                    ..
                } => {
                    // A reservation made again keeps its organization and takes the new
                    // version and time.
                    let reservation = reservations
                        .entry((id.to_string(), ticket_id.clone()))
                        .or_insert_with(|| ReservationRow {
                            agent_id: id.to_string(),
                            ticket_id,
                            organization_id: event.metadata.organization.clone(),
                            ticket_version: 0,
                            reserved_at: String::new(),
                        });
                    reservation.ticket_version = ticket_version as i64;
                    reservation.reserved_at = at;
                }
                AgentEvent::SlotReleased { ticket_id, .. } => {
                    reservations.remove(&(id.to_string(), ticket_id));
                }
            }
        }
        let mut rows = Rows::new("agents", AGENT_ROW);
        for agent in agents.into_values() {
            rows.push([
                agent.id.into(),
                agent.organization_id.into(),
                agent.name.into(),
                agent.max_tickets.into(),
                agent.division_ids.into(),
                agent.online.into(),
                agent.registered_at.into(),
                agent.online_since.into(),
            ])?;
        }
        rows.insert(tx, &bulk::replace_on_conflict(AGENT_ROW, &["id"]))
            .await?;
        // Every reservation of these agents was read above: write their set anew.
        bulk::delete_in(tx, "slot_reservations", "agent_id", &ids, "").await?;
        let mut rows = Rows::new("slot_reservations", RESERVATION_ROW);
        for reservation in reservations.into_values() {
            rows.push([
                reservation.agent_id.into(),
                reservation.ticket_id.into(),
                reservation.organization_id.into(),
                reservation.ticket_version.into(),
                reservation.reserved_at.into(),
            ])?;
        }
        rows.insert(tx, "").await
    }
}

/// An `agents` row (all its columns).
#[derive(Debug, Clone, FromRow)]
struct AgentRow {
    id: String,
    organization_id: String,
    name: String,
    max_tickets: i64,
    division_ids: String,
    online: bool,
    registered_at: String,
    online_since: Option<String>,
}

const AGENT_ROW: &[(&str, Kind)] = &[
    ("id", Kind::Text),
    ("organization_id", Kind::Text),
    ("name", Kind::Text),
    ("max_tickets", Kind::Int),
    ("division_ids", Kind::Text),
    ("online", Kind::Bool),
    ("registered_at", Kind::Text),
    ("online_since", Kind::Text),
];

/// A `slot_reservations` row.
#[derive(Debug, Clone, FromRow)]
struct ReservationRow {
    agent_id: String,
    ticket_id: String,
    organization_id: String,
    ticket_version: i64,
    reserved_at: String,
}

const RESERVATION_ROW: &[(&str, Kind)] = &[
    ("agent_id", Kind::Text),
    ("ticket_id", Kind::Text),
    ("organization_id", Kind::Text),
    ("ticket_version", Kind::Int),
    ("reserved_at", Kind::Text),
];

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
