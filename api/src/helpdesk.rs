//! The command side: every change to the helpdesk goes through [`Helpdesk`].
//!
//! A command is executed against its aggregate through cqrs-es (events stamped with the
//! metadata of brief rule 7), retried a bounded number of times when another command on the
//! same aggregate committed first, and then — read-your-writes — the call waits (bounded)
//! until every projection has applied the aggregate's newest event, so the query that
//! follows sees the change.

use chrono::{DateTime, Utc};
use cqrs_es::{Aggregate, AggregateError, CqrsFramework};
use domain::agent::{AgentAction, AgentCommand, AgentStatus};
use domain::division::{Division, DivisionAction, DivisionCommand, DivisionProfile};
use domain::metadata::EventMetadata;
use domain::priority::Priority;
use domain::ticket::{Ticket, TicketAction, TicketCommand, TicketEvent, TicketStatus};
use domain::{DomainError, PriorityKeywords};
use projections::agents::AgentsProjection;
use projections::db::timestamp;
use projections::divisions::DivisionsProjection;
use projections::event_store::{event_store, EventStore};
use projections::runner::{
    LogSignal, Projection, ProjectionProgress, ProjectionRunners, ProjectionTelemetry,
    RunnerOptions,
};
use projections::telemetry::{label, CounterFamily, HistogramFamily};
use projections::tickets::{TicketRecord, TicketsProjection};
use projections::{event_log, Database};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use crate::auth::Caller;
use crate::config::Config;
use crate::error::{from_aggregate, ApiError, ApiResult};

/// How often a command is tried when concurrent commands on the same aggregate (from other
/// replicas) win.
const MAX_ATTEMPTS: u32 = 8;

/// Exponential backoff with full jitter (2 ms base, 200 ms cap), so that the same contenders
/// do not collide again in lockstep.
fn retry_delay(attempt: u32) -> Duration {
    let ceiling = (2u64 << attempt.min(10)).min(200);
    Duration::from_millis(rand::random::<u64>() % ceiling + 1)
}

/// Striped per-aggregate turns: one in-process mutex per stripe, chosen by hashing the
/// aggregate, so commands on one aggregate run one at a time in this process.
struct AggregateTurns {
    stripes: Vec<tokio::sync::Mutex<()>>,
}

impl AggregateTurns {
    fn new(stripes: usize) -> Self {
        Self {
            stripes: (0..stripes).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    async fn take(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (aggregate_type, aggregate_id).hash(&mut hasher);
        let stripe = (hasher.finish() % self.stripes.len() as u64) as usize;
        self.stripes[stripe].lock().await
    }
}

/// Every projection the helpdesk maintains, in the order they are listed to operators.
pub fn all_projections() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(TicketsProjection),
        Arc::new(DivisionsProjection),
        Arc::new(AgentsProjection),
    ]
}

/// Counters and histograms for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Command latency (including the read-your-writes wait) by command and outcome.
    pub commands: HistogramFamily,
    /// Commands whose projections did not catch up within the bound.
    pub consistency_timeouts: CounterFamily,
    /// Conflicts retried, by aggregate type.
    pub conflict_retries: CounterFamily,
    /// What the projection runners report.
    pub projections: Arc<ProjectionTelemetry>,
}

/// The input of `createTicket`, already parsed.
#[derive(Debug, Clone)]
pub struct NewTicket {
    /// One-line summary.
    pub subject: String,
    /// Details.
    pub description: Option<String>,
    /// Explicit priority; `None` -> detected from keywords, else MEDIUM.
    pub priority: Option<Priority>,
    /// The division whose queue it joins (must exist in the organization).
    pub division_id: Option<String>,
}

/// The running helpdesk: storage, aggregates, projections.
pub struct Helpdesk {
    /// The database.
    pub db: Database,
    tickets: CqrsFramework<Ticket, EventStore<Ticket>>,
    divisions: CqrsFramework<Division, EventStore<Division>>,
    agents: CqrsFramework<AgentStatus, EventStore<AgentStatus>>,
    /// Where the projections of this process stand.
    pub progress: ProjectionProgress,
    signal: LogSignal,
    /// Words that set a new ticket's priority.
    pub keywords: PriorityKeywords,
    consistency_timeout: Duration,
    aggregate_turns: AggregateTurns,
    /// Figures for `/metrics`.
    pub metrics: Arc<Metrics>,
}

impl Helpdesk {
    /// Connects, migrates, and starts the projection runners (and, on PostgreSQL, the
    /// listener that wakes them). Everything stops when `shutdown` is cancelled.
    pub async fn start(
        config: &Config,
        shutdown: CancellationToken,
    ) -> anyhow::Result<(Arc<Self>, Vec<tokio::task::JoinHandle<()>>)> {
        let db = Database::connect(config.database_url.as_deref()).await?;
        db.migrate().await?;
        let metrics = Arc::new(Metrics::default());
        let signal = LogSignal::default();
        let listener = signal.listen_to_postgres(&db, shutdown.clone());
        let pause_before_commit = config
            .failpoint
            .as_deref()
            .and_then(|f| f.strip_prefix("projection-before-commit:"))
            .map(str::to_string);
        let runners = ProjectionRunners::new(
            db.clone(),
            all_projections(),
            signal.clone(),
            metrics.projections.clone(),
            RunnerOptions {
                pause_before_commit,
            },
        );
        let (progress, mut tasks) = runners.start(shutdown).await?;
        tasks.extend(listener);
        let helpdesk = Self {
            tickets: CqrsFramework::new(event_store(&db), vec![], ()),
            divisions: CqrsFramework::new(event_store(&db), vec![], ()),
            agents: CqrsFramework::new(event_store(&db), vec![], ()),
            db,
            progress,
            signal,
            keywords: config.priority_keywords.clone(),
            consistency_timeout: config.consistency_timeout,
            aggregate_turns: AggregateTurns::new(1024),
            metrics,
        };
        Ok((Arc::new(helpdesk), tasks))
    }

    /// Opens a ticket. Returns the ticket as its creation event describes it, for answering
    /// when the read model has not caught up within the consistency timeout (the event is
    /// committed: answering with an error would make clients create it twice).
    pub async fn create_ticket(
        &self,
        caller: &Caller,
        request_id: &str,
        input: NewTicket,
    ) -> ApiResult<TicketRecord> {
        if let Some(division) = &input.division_id {
            if projections::divisions::division(&self.db, &caller.organization, division)
                .await?
                .is_none()
            {
                return Err(ApiError::bad_input(format!(
                    "unknown division '{division}'"
                )));
            }
        }
        let text = format!(
            "{} {}",
            input.subject,
            input.description.as_deref().unwrap_or_default()
        );
        let (priority, priority_source) = self.keywords.resolve(input.priority, &text);
        let mut command = TicketCommand {
            organization: caller.organization.clone(),
            actor: caller.actor.clone(),
            action: TicketAction::Create {
                number: 1,
                subject: input.subject,
                description: input.description,
                priority,
                priority_source,
                division_id: input.division_id,
            },
        };
        // Refuse bad input before a ticket number is spent on it; the decided event is also
        // the answer if the read model lags (see below).
        let created = Ticket::default().preview(&command)?;
        let allocated = self.db.allocate_ticket_number(&caller.organization).await?;
        if let TicketAction::Create { number, .. } = &mut command.action {
            *number = allocated;
        }
        let id = uuid::Uuid::new_v4().to_string();
        let at = self
            .execute(
                &self.tickets,
                &id,
                command,
                caller,
                request_id,
                "createTicket",
            )
            .await?;
        match created.into_iter().next() {
            Some(TicketEvent::TicketCreated {
                organization,
                subject,
                description,
                priority,
                division_id,
                ..
            }) => Ok(TicketRecord {
                id,
                organization_id: organization,
                number: allocated,
                subject,
                description,
                status: TicketStatus::Queued.as_str().into(),
                priority: priority.as_str().into(),
                division_id,
                assignee_id: None,
                created_by: caller.actor.id.clone(),
                created_at: timestamp(at),
                updated_at: timestamp(at),
                assigned_at: None,
                resolved_at: None,
                closed_at: None,
                resolution: None,
                rating: None,
                feedback: None,
                version: 1,
            }),
            _ => Err(ApiError::internal(
                "ticket creation decided no TicketCreated event",
            )),
        }
    }

    /// Runs a command on an existing ticket; returns when it happened.
    pub async fn on_ticket(
        &self,
        caller: &Caller,
        request_id: &str,
        ticket_id: &str,
        action: TicketAction,
    ) -> ApiResult<DateTime<Utc>> {
        let name = command_name(&action);
        let command = TicketCommand {
            organization: caller.organization.clone(),
            actor: caller.actor.clone(),
            action,
        };
        self.execute(&self.tickets, ticket_id, command, caller, request_id, name)
            .await
    }

    /// Creates a division and returns its id.
    pub async fn create_division(
        &self,
        caller: &Caller,
        request_id: &str,
        profile: DivisionProfile,
    ) -> ApiResult<String> {
        let id = uuid::Uuid::new_v4().to_string();
        let command = DivisionCommand {
            organization: caller.organization.clone(),
            actor: caller.actor.clone(),
            action: DivisionAction::Create(profile),
        };
        self.execute(
            &self.divisions,
            &id,
            command,
            caller,
            request_id,
            "createDivision",
        )
        .await?;
        Ok(id)
    }

    /// Registers an agent and returns its id (the `sub` of its tokens).
    pub async fn register_agent(
        &self,
        caller: &Caller,
        request_id: &str,
        name: String,
        max_tickets: i64,
        division_ids: Vec<String>,
    ) -> ApiResult<String> {
        for division in &division_ids {
            if projections::divisions::division(&self.db, &caller.organization, division)
                .await?
                .is_none()
            {
                return Err(ApiError::bad_input(format!(
                    "unknown division '{division}'"
                )));
            }
        }
        let id = uuid::Uuid::new_v4().to_string();
        let command = AgentCommand {
            organization: caller.organization.clone(),
            actor: caller.actor.clone(),
            action: AgentAction::Register {
                name,
                max_tickets,
                division_ids,
            },
        };
        self.execute(
            &self.agents,
            &id,
            command,
            caller,
            request_id,
            "registerAgent",
        )
        .await?;
        Ok(id)
    }

    async fn execute<A>(
        &self,
        cqrs: &CqrsFramework<A, EventStore<A>>,
        aggregate_id: &str,
        command: A::Command,
        caller: &Caller,
        request_id: &str,
        name: &'static str,
    ) -> ApiResult<DateTime<Utc>>
    where
        A: Aggregate,
        A::Command: Clone,
        A: Aggregate<Error = DomainError>,
    {
        let started = Instant::now();
        let result = self
            .execute_and_wait(cqrs, aggregate_id, command, caller, request_id)
            .await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.code(),
        };
        self.metrics.commands.observe(
            format!("command=\"{}\",outcome=\"{outcome}\"", label(name)),
            started.elapsed().as_secs_f64(),
        );
        result
    }

    async fn execute_and_wait<A>(
        &self,
        cqrs: &CqrsFramework<A, EventStore<A>>,
        aggregate_id: &str,
        command: A::Command,
        caller: &Caller,
        request_id: &str,
    ) -> ApiResult<DateTime<Utc>>
    where
        A: Aggregate,
        A::Command: Clone,
        A: Aggregate<Error = DomainError>,
    {
        let occurred_at = Utc::now();
        let metadata = EventMetadata {
            organization: caller.organization.clone(),
            actor: caller.actor.clone(),
            occurred_at,
            request_id: request_id.to_string(),
            correlation_id: request_id.to_string(),
            causation_id: None,
        }
        .to_map();
        {
            // Commands on one aggregate from this process take turns, so they never conflict
            // with each other; only other replicas can still win a race (retried below).
            let _turn = self.aggregate_turns.take(A::TYPE, aggregate_id).await;
            let mut attempt = 0;
            loop {
                attempt += 1;
                match cqrs
                    .execute_with_metadata(aggregate_id, command.clone(), metadata.clone())
                    .await
                {
                    Ok(()) => break,
                    Err(AggregateError::AggregateConflict) if attempt < MAX_ATTEMPTS => {
                        self.metrics
                            .conflict_retries
                            .add(format!("aggregate=\"{}\"", A::TYPE), 1);
                        tokio::time::sleep(retry_delay(attempt)).await;
                    }
                    Err(error) => return Err(from_aggregate(noun(A::TYPE), error)),
                }
            }
        }
        self.signal.ring();
        self.wait_for_projections(A::TYPE, aggregate_id).await?;
        Ok(occurred_at)
    }

    /// Waits (bounded) until every projection reflects the newest event of an aggregate.
    /// A timeout is logged and counted, not an error: the change is committed either way.
    pub async fn wait_for_projections(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> ApiResult<()> {
        let Some(head) = event_log::aggregate_head(&self.db, aggregate_type, aggregate_id).await?
        else {
            return Ok(());
        };
        if let Err(lagging) = self
            .progress
            .wait_for(aggregate_type, head, self.consistency_timeout)
            .await
        {
            tracing::warn!(
                projection = lagging.projection,
                aggregate_type,
                aggregate_id,
                "projection did not reach the change within the consistency timeout"
            );
            self.metrics
                .consistency_timeouts
                .add(format!("projection=\"{}\"", lagging.projection), 1);
        }
        Ok(())
    }
}

/// How clients call an aggregate type in messages.
fn noun(aggregate_type: &str) -> &'static str {
    match aggregate_type {
        "Division" => "division",
        "AgentStatus" => "agent",
        _ => "ticket",
    }
}

/// The contract's name of the mutation behind a ticket action, for metrics.
pub fn command_name(action: &TicketAction) -> &'static str {
    match action {
        TicketAction::Create { .. } => "createTicket",
        TicketAction::Claim => "claimTicket",
        TicketAction::Assign { .. } => "assignTicket",
        TicketAction::Start => "startTicket",
        TicketAction::Resolve { .. } => "resolveTicket",
        TicketAction::Close => "closeTicket",
        TicketAction::Reopen { .. } => "reopenTicket",
        TicketAction::ChangePriority { .. } => "changeTicketPriority",
        TicketAction::AddComment { .. } => "addComment",
        TicketAction::Rate { .. } => "rateTicket",
    }
}
