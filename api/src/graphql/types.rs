//! GraphQL object types, enums and connections.

use async_graphql::{ComplexObject, Context, Enum, SimpleObject, ID};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use projections::agents::AgentRecord;
use projections::db::parse_timestamp;
use projections::divisions::DivisionRecord;
use projections::queue::QueueKey;
use projections::tickets::{CommentRecord, TicketRecord};

use super::{caller, helpdesk};
use crate::error::{ApiError, ApiResult};
use crate::realtime::SharedQueuePosition;

/// Where a ticket is in its lifecycle.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "domain::ticket::TicketStatus")]
pub enum TicketStatus {
    /// Waiting in its division's queue.
    Queued,
    /// Given to an agent who has not started.
    Assigned,
    /// Being worked on.
    InProgress,
    /// Done.
    Resolved,
    /// Filed away.
    Closed,
}

/// How urgent a ticket is; queues serve URGENT first.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "domain::priority::Priority")]
pub enum Priority {
    /// First.
    Urgent,
    /// Before MEDIUM and LOW.
    High,
    /// The default.
    Medium,
    /// Last.
    Low,
}

/// Push or pull assignment of a division's queue.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "domain::division::AssignmentMode")]
pub enum AssignmentMode {
    /// Tickets are assigned automatically.
    Auto,
    /// Agents take tickets from the queue.
    Claim,
}

/// How the next agent is chosen.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "domain::division::AssignmentAlgorithm")]
pub enum AssignmentAlgorithm {
    /// Least recently assigned eligible agent.
    RoundRobin,
    /// Fewest active tickets.
    LeastLoaded,
    /// Uniform draw, recorded in the event.
    Random,
}

fn parse_enum<T: serde::de::DeserializeOwned>(text: &str) -> ApiResult<T> {
    serde_json::from_value(serde_json::Value::String(text.into())).map_err(ApiError::internal)
}

fn time(text: &str) -> ApiResult<DateTime<Utc>> {
    parse_timestamp(text).map_err(ApiError::internal)
}

fn optional_time(text: &Option<String>) -> ApiResult<Option<DateTime<Utc>>> {
    text.as_deref().map(time).transpose()
}

/// A customer problem from creation to closing.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Ticket {
    /// Opaque id.
    pub id: ID,
    /// Human-friendly number, unique and increasing within the organization.
    pub number: i64,
    /// One-line summary.
    pub subject: String,
    /// Details.
    pub description: Option<String>,
    /// Lifecycle status.
    pub status: TicketStatus,
    /// Priority.
    pub priority: Priority,
    /// The division whose queue it belongs to.
    pub division_id: Option<ID>,
    /// The id of the agent holding it.
    pub assignee_id: Option<ID>,
    /// When it was opened.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When it was last assigned.
    pub assigned_at: Option<DateTime<Utc>>,
    /// When it was resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// When it was closed.
    pub closed_at: Option<DateTime<Utc>>,
    /// How it was resolved.
    pub resolution: Option<String>,
    /// The customer's rating, 1..5.
    pub rating: Option<i64>,
    /// The customer's words with the rating.
    pub feedback: Option<String>,
    /// Who opened it.
    pub created_by: ID,
    #[graphql(skip)]
    pub organization: String,
    /// Set for a past state (`ticketAsOf`): the comments it had then.
    #[graphql(skip)]
    pub as_of: Option<Vec<CommentRecord>>,
    /// Set for a ticket delivered to many subscribers at once: its queue position is read
    /// once and shared.
    #[graphql(skip)]
    pub shared_queue_position: Option<SharedQueuePosition>,
}

impl Ticket {
    /// Builds the GraphQL ticket from its read-model row.
    pub fn from_record(record: TicketRecord) -> ApiResult<Self> {
        Ok(Self {
            status: record.status().map_err(ApiError::internal)?.into(),
            priority: record.priority().map_err(ApiError::internal)?.into(),
            created_at: time(&record.created_at)?,
            updated_at: time(&record.updated_at)?,
            assigned_at: optional_time(&record.assigned_at)?,
            resolved_at: optional_time(&record.resolved_at)?,
            closed_at: optional_time(&record.closed_at)?,
            id: ID(record.id),
            number: record.number,
            subject: record.subject,
            description: record.description,
            division_id: record.division_id.map(ID),
            assignee_id: record.assignee_id.map(ID),
            resolution: record.resolution,
            rating: record.rating,
            feedback: record.feedback,
            created_by: ID(record.created_by),
            organization: record.organization_id,
            as_of: None,
            shared_queue_position: None,
        })
    }
}

#[ComplexObject]
impl Ticket {
    /// 1-based place in its division queue while QUEUED, else null (and null for a past
    /// state, whose queue around it is not reconstructed).
    async fn queue_position(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<i64>> {
        if self.status != TicketStatus::Queued || self.as_of.is_some() {
            return Ok(None);
        }
        caller(ctx)?;
        let helpdesk = helpdesk(ctx)?;
        let read = || async {
            projections::queue::position(&helpdesk.db, &self.organization, &self.id)
                .await
                .map_err(ApiError::from)
        };
        Ok(match &self.shared_queue_position {
            Some(shared) => *shared.get_or_try_init(read).await?,
            None => read().await?,
        })
    }

    /// The agent holding the ticket (null when none, or not a registered agent).
    async fn assignee(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Agent>> {
        let Some(agent_id) = &self.assignee_id else {
            return Ok(None);
        };
        caller(ctx)?;
        let helpdesk = helpdesk(ctx)?;
        let record = projections::agents::agent(&helpdesk.db, &self.organization, agent_id)
            .await
            .map_err(ApiError::from)?;
        Ok(record.map(Agent::from))
    }

    /// Comments, oldest first (for a past state: those it had then).
    async fn comments(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Comment>> {
        caller(ctx)?;
        if let Some(past) = &self.as_of {
            return Ok(past
                .iter()
                .cloned()
                .map(Comment::from_record)
                .collect::<ApiResult<_>>()?);
        }
        let helpdesk = helpdesk(ctx)?;
        let records = projections::tickets::comments(&helpdesk.db, &self.organization, &self.id)
            .await
            .map_err(ApiError::from)?;
        Ok(records
            .into_iter()
            .map(Comment::from_record)
            .collect::<ApiResult<_>>()?)
    }
}

/// A note on a ticket.
#[derive(SimpleObject)]
pub struct Comment {
    /// Opaque id.
    pub id: ID,
    /// Its ticket.
    pub ticket_id: ID,
    /// What was written.
    pub text: String,
    /// Who wrote it.
    pub author_id: ID,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl Comment {
    /// Builds the GraphQL comment from its read-model row.
    pub fn from_record(record: CommentRecord) -> ApiResult<Self> {
        Ok(Self {
            created_at: time(&record.created_at)?,
            id: ID(record.id),
            ticket_id: ID(record.ticket_id),
            text: record.text,
            author_id: ID(record.author_id),
        })
    }
}

/// An agent of the organization.
#[derive(SimpleObject)]
pub struct Agent {
    /// Opaque id; the `sub` of the agent's tokens.
    pub id: ID,
    /// Display name.
    pub name: String,
    /// Whether the agent is online.
    pub online: bool,
    /// Active tickets (ASSIGNED or IN_PROGRESS) the agent may hold.
    pub max_tickets: i64,
    /// The divisions whose queues the agent serves.
    pub division_ids: Vec<ID>,
}

impl From<AgentRecord> for Agent {
    fn from(record: AgentRecord) -> Self {
        Self {
            division_ids: record.division_ids().into_iter().map(ID).collect(),
            id: ID(record.id),
            name: record.name,
            online: record.online,
            max_tickets: record.max_tickets,
        }
    }
}

/// A team with its own queue.
#[derive(SimpleObject)]
pub struct Division {
    /// Opaque id.
    pub id: ID,
    /// Shown in the menu.
    pub name: String,
    /// Shown under the name.
    pub description: Option<String>,
    /// Words that route customers here.
    pub keywords: Vec<String>,
    /// Place in the menu.
    pub position: Option<i64>,
    /// Push or pull.
    pub assignment_mode: AssignmentMode,
    /// Agent choice.
    pub algorithm: AssignmentAlgorithm,
    /// Typical handling time.
    pub avg_handling_minutes: i64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

impl Division {
    /// Builds the GraphQL division from its read-model row.
    pub fn from_record(record: DivisionRecord) -> ApiResult<Self> {
        let mode: domain::division::AssignmentMode = parse_enum(&record.assignment_mode)?;
        let algorithm: domain::division::AssignmentAlgorithm = parse_enum(&record.algorithm)?;
        Ok(Self {
            keywords: record.keywords(),
            created_at: time(&record.created_at)?,
            id: ID(record.id),
            name: record.name,
            description: record.description,
            position: record.menu_position,
            assignment_mode: mode.into(),
            algorithm: algorithm.into(),
            avg_handling_minutes: record.avg_handling_minutes,
        })
    }
}

/// A ticket's place in a queue.
#[derive(SimpleObject)]
pub struct QueueEntry {
    /// 1-based place.
    pub position: i64,
    /// The waiting ticket.
    pub ticket: Ticket,
    /// Since when it waits.
    pub waiting_since: DateTime<Utc>,
    /// Place x typical handling time / eligible agents online; null while no eligible agent
    /// is online (nobody to wait for).
    pub estimated_wait_seconds: Option<i64>,
}

/// Relay page information.
#[derive(SimpleObject)]
pub struct PageInfo {
    /// Whether more items follow.
    pub has_next_page: bool,
    /// The cursor of the last item of the page.
    pub end_cursor: Option<String>,
}

/// Declares a Relay connection and its edge type for one node type.
macro_rules! connection {
    ($connection:ident, $edge:ident, $node:ty) => {
        /// An item and its cursor.
        #[derive(SimpleObject)]
        pub struct $edge {
            /// Pass as `after` to continue after this item.
            pub cursor: String,
            /// The item.
            pub node: $node,
        }

        /// A Relay connection.
        #[derive(SimpleObject)]
        pub struct $connection {
            /// The page.
            pub edges: Vec<$edge>,
            /// Whether more follow.
            pub page_info: PageInfo,
            /// How many items match in all.
            pub total_count: i64,
        }

        impl $connection {
            /// Builds a connection from items with their cursors.
            pub fn new(edges: Vec<$edge>, has_next_page: bool, total_count: i64) -> Self {
                let end_cursor = edges.last().map(|e| e.cursor.clone());
                Self {
                    edges,
                    page_info: PageInfo {
                        has_next_page,
                        end_cursor,
                    },
                    total_count,
                }
            }
        }
    };
}

pub(crate) use connection;

connection!(TicketConnection, TicketEdge, Ticket);
connection!(QueueConnection, QueueEdge, QueueEntry);

/// The outcome of one item of a bulk operation.
#[derive(SimpleObject)]
pub struct BulkItemResult {
    /// The item.
    pub id: ID,
    /// Whether it succeeded.
    pub success: bool,
    /// Why it failed.
    pub error: Option<String>,
    /// The error's code when it failed.
    pub code: Option<String>,
}

/// Per-item results of a bulk operation; failures never undo successes.
#[derive(SimpleObject)]
pub struct BulkResult {
    /// Items asked for.
    pub total: i64,
    /// Items done.
    pub succeeded: i64,
    /// Items refused.
    pub failed: i64,
    /// One entry per item, in input order.
    pub results: Vec<BulkItemResult>,
}

/// Cursor of a ticket in the tickets list (newest first, by number).
pub fn ticket_cursor(number: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("ticket:{number}"))
}

/// Reads a tickets-list cursor.
pub fn parse_ticket_cursor(cursor: &str) -> ApiResult<i64> {
    decode(cursor)
        .and_then(|text| text.strip_prefix("ticket:").and_then(|n| n.parse().ok()))
        .ok_or_else(|| ApiError::bad_input("malformed cursor"))
}

/// Cursor of a queue entry: its place in the queue order (priority, then join sequence).
pub fn queue_cursor(key: &QueueKey) -> String {
    URL_SAFE_NO_PAD.encode(format!("queue:{}|{}", key.priority_rank, key.seq))
}

/// Reads a queue cursor. Cursors written before the join sequence existed (three fields)
/// are refused as malformed: a client starts again from the head.
pub fn parse_queue_cursor(cursor: &str) -> ApiResult<QueueKey> {
    let parsed = decode(cursor).and_then(|text| {
        let (rank, seq) = text.strip_prefix("queue:")?.split_once('|')?;
        Some(QueueKey {
            priority_rank: rank.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    });
    parsed.ok_or_else(|| ApiError::bad_input("malformed cursor"))
}

fn decode(cursor: &str) -> Option<String> {
    URL_SAFE_NO_PAD
        .decode(cursor.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        assert_eq!(parse_ticket_cursor(&ticket_cursor(42)), Ok(42));
        let key = QueueKey {
            priority_rank: 1,
            seq: 7,
        };
        assert_eq!(parse_queue_cursor(&queue_cursor(&key)), Ok(key));
        assert!(parse_ticket_cursor("!!").is_err());
        assert!(parse_queue_cursor(&ticket_cursor(1)).is_err());
        let old_style = URL_SAFE_NO_PAD.encode("queue:1|2026-11-21T08:00:00.000000Z|7");
        assert!(parse_queue_cursor(&old_style).is_err());
    }
}

/// What happens to an agent's tickets when the agent goes offline.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "domain::queue_settings::OfflinePolicy")]
pub enum OfflinePolicy {
    /// The tickets stay with the agent.
    Keep,
    /// Assigned, not started tickets return to their queue at their original place.
    Requeue,
}

/// An agent's load, as the admin workload view shows it.
#[derive(SimpleObject)]
pub struct AgentWorkload {
    /// The agent.
    pub agent: Agent,
    /// Whether the agent is online.
    pub online: bool,
    /// Tickets ASSIGNED or IN_PROGRESS with the agent.
    pub active_tickets: i64,
    /// The agent's capacity.
    pub max_tickets: i64,
    /// Online with a free slot: would get the next ticket of their divisions' AUTO queues.
    pub eligible: bool,
    /// When the agent was last given a ticket.
    pub last_assigned_at: Option<DateTime<Utc>>,
    /// Free slots (`maxTickets - activeTickets`, never below 0).
    pub slots_available: i64,
}

impl AgentWorkload {
    /// Builds the view from its read-model row.
    pub fn from_record(record: projections::agents::AgentWorkload) -> ApiResult<Self> {
        let eligible = record.has_free_slot();
        Ok(Self {
            online: record.agent.online,
            active_tickets: record.active_tickets,
            max_tickets: record.agent.max_tickets,
            slots_available: (record.agent.max_tickets - record.active_tickets).max(0),
            last_assigned_at: optional_time(&record.last_assigned_at)?,
            eligible,
            agent: Agent::from(record.agent),
        })
    }
}

/// The calling agent's own queue.
#[derive(SimpleObject)]
pub struct MyQueue {
    /// Active tickets in working order: in progress first, then assigned, oldest first.
    pub tickets: Vec<Ticket>,
    /// How many tickets are active.
    pub active_count: i64,
    /// The agent's capacity.
    pub max_tickets: i64,
    /// Free slots.
    pub slots_available: i64,
    /// Whether the agent is online.
    pub online: bool,
}

/// An organization's queue texts and policies.
#[derive(SimpleObject)]
pub struct QueueSettings {
    /// Whether customers get the division menu (queue mode).
    pub enabled: bool,
    /// The first line of the division menu.
    pub welcome_message: String,
    /// Sent when a customer joins a queue; `{division}`, `{queue_number}`.
    pub queue_message_template: String,
    /// What a customer writes to ask for their place.
    pub check_queue_keyword: String,
    /// The answer to the check keyword; `{queue_number}`, `{division}`.
    pub queue_position_message: String,
    /// Sent when no agent is online.
    pub no_agent_available_message: String,
    /// What an agent going offline does to their tickets.
    pub offline_policy: OfflinePolicy,
    /// A ticket not answered within this many seconds goes to the next agent; 0 = never.
    pub escalation_after_seconds: i64,
    /// Whether the menu shows each division's queue and estimated wait.
    pub show_wait_time: bool,
    /// Whether a first message that clearly names a division skips the menu.
    pub detect_division: bool,
    /// Sent when an agent takes the ticket; `{agent_name}`, `{division}`.
    pub agent_ready_message: String,
}

impl From<domain::queue_settings::QueueSettings> for QueueSettings {
    fn from(settings: domain::queue_settings::QueueSettings) -> Self {
        Self {
            enabled: settings.enabled,
            welcome_message: settings.welcome_message,
            queue_message_template: settings.queue_message_template,
            check_queue_keyword: settings.check_queue_keyword,
            queue_position_message: settings.queue_position_message,
            no_agent_available_message: settings.no_agent_available_message,
            offline_policy: settings.offline_policy.into(),
            escalation_after_seconds: settings.escalation_after_seconds,
            show_wait_time: settings.show_wait_time,
            detect_division: settings.detect_division,
            agent_ready_message: settings.agent_ready_message,
        }
    }
}
