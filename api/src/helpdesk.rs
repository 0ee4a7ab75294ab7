//! The command side: every change to the helpdesk goes through [`Helpdesk`].
//!
//! A command is executed against its aggregate through cqrs-es (events stamped with the
//! metadata of brief rule 7), retried a bounded number of times when another command on the
//! same aggregate committed first, and then — read-your-writes — the call waits (bounded)
//! until every projection has applied the aggregate's newest event, so the query that
//! follows sees the change.

use chrono::{DateTime, Utc};
use cqrs_es::{Aggregate, AggregateError, CqrsFramework, EventStore as _};
use domain::agent::{AgentAction, AgentStatus};
use domain::channel::ChannelConfig;
use domain::conversation::Conversation;
use domain::division::{Division, DivisionAction, DivisionChanges, DivisionProfile};
use domain::metadata::EventMetadata;
use domain::pipeline::{Card, OrganizationPipelines};
use domain::priority::Priority;
use domain::queue_settings::{OrganizationQueue, QueueSettingsChanges};
use domain::ticket::{Ticket, TicketAction, TicketCommand, TicketEvent, TicketStatus};
use domain::{Actor, Command, DomainError, PriorityKeywords};
use projections::agents::AgentsProjection;
use projections::bots::BotsProjection;
use projections::chatbot::ChatbotAnalyticsProjection;
use projections::conversations::{ChannelsProjection, ConversationsProjection, OutboxProjection};
use projections::db::timestamp;
use projections::divisions::DivisionsProjection;
use projections::event_store::{event_store, EventStore};
use projections::lease::Leases;
use projections::queue_settings::QueueSettingsProjection;
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
        Arc::new(QueueSettingsProjection),
        Arc::new(ConversationsProjection),
        Arc::new(ChannelsProjection),
        Arc::new(OutboxProjection),
        Arc::new(BotsProjection),
        Arc::new(ChatbotAnalyticsProjection),
        Arc::new(projections::pipelines::PipelinesProjection),
        Arc::new(projections::notifications::NotificationsProjection),
    ]
}

/// Every role one replica at a time runs: each projector, the assignment process and the
/// conversation process. The outbox delivery shares the lease of the "outbox" projection,
/// so it runs beside the projector that queues its jobs.
pub fn lease_roles() -> Vec<&'static str> {
    let mut roles: Vec<&'static str> = all_projections().iter().map(|p| p.name()).collect();
    roles.push(crate::assignment::ROLE);
    roles.push(crate::conversation_process::ROLE);
    roles.push(crate::pipeline_process::ROLE);
    roles.push(projections::audit::AUDIT_CHAIN);
    roles
}

/// Who issues a command and on whose behalf: the metadata of brief rule 7.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The organization acted in.
    pub organization: String,
    /// Who acts.
    pub actor: Actor,
    /// The request (or process step) that issued the command.
    pub request_id: String,
    /// The event that caused it, for commands of a process manager.
    pub causation_id: Option<String>,
}

impl Origin {
    /// A command of a GraphQL caller.
    pub fn of(caller: &Caller, request_id: &str) -> Self {
        Self {
            organization: caller.organization.clone(),
            actor: caller.actor.clone(),
            request_id: request_id.to_string(),
            causation_id: None,
        }
    }
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
    pub(crate) tickets: CqrsFramework<Ticket, EventStore<Ticket>>,
    divisions: CqrsFramework<Division, EventStore<Division>>,
    pub(crate) agents: CqrsFramework<AgentStatus, EventStore<AgentStatus>>,
    queue_settings: CqrsFramework<OrganizationQueue, EventStore<OrganizationQueue>>,
    ticket_history: EventStore<Ticket>,
    pub(crate) conversations: CqrsFramework<Conversation, EventStore<Conversation>>,
    pub(crate) conversation_history: EventStore<Conversation>,
    pub(crate) channels: CqrsFramework<ChannelConfig, EventStore<ChannelConfig>>,
    pub(crate) bots: CqrsFramework<domain::bot::Bot, EventStore<domain::bot::Bot>>,
    pub(crate) pipelines: CqrsFramework<OrganizationPipelines, EventStore<OrganizationPipelines>>,
    pub(crate) pipeline_history: EventStore<OrganizationPipelines>,
    pub(crate) cards: CqrsFramework<Card, EventStore<Card>>,
    pub(crate) card_history: EventStore<Card>,
    pub(crate) notifications: CqrsFramework<
        domain::notification::Notification,
        EventStore<domain::notification::Notification>,
    >,
    pub(crate) inboxes:
        CqrsFramework<domain::notification::Inbox, EventStore<domain::notification::Inbox>>,
    pub(crate) customers: CqrsFramework<
        domain::customer::CustomerPrivacy,
        EventStore<domain::customer::CustomerPrivacy>,
    >,
    /// Which replica runs what.
    pub leases: Leases,
    /// How far the assignment process (when it runs here) has reconciled the log.
    pub(crate) assignment_progress: tokio::sync::watch::Sender<projections::Checkpoint>,
    /// Where the projections of this process stand.
    pub progress: ProjectionProgress,
    signal: LogSignal,
    /// Words that set a new ticket's priority.
    pub keywords: PriorityKeywords,
    consistency_timeout: Duration,
    aggregate_turns: AggregateTurns,
    /// Figures for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// What subscribers of board changes receive.
    pub board_changes: crate::realtime::Feed<crate::pipelines::BoardChange>,
    /// What subscribers of queues and of their own tickets receive.
    pub ticket_changes: crate::realtime::Feed<crate::realtime::TicketChange>,
    /// What subscribers of their notifications receive.
    pub notifications_added:
        crate::realtime::Feed<Vec<projections::notifications::NotificationRecord>>,
    /// What subscribers of a conversation's messages receive.
    pub conversation_messages: crate::realtime::Feed<crate::realtime::ConversationMessage>,
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
        // The audit chain runs like a projection but is never rebuilt, so it is not among
        // `all_projections`.
        let mut projections = all_projections();
        projections.push(Arc::new(projections::audit::AuditChainProjection));
        let roles = lease_roles();
        let (leases, lease_task) = Leases::start(&db, &roles, shutdown.clone());
        let pause_before_commit = config
            .failpoint
            .as_deref()
            .and_then(|f| f.strip_prefix("projection-before-commit:"))
            .map(str::to_string);
        let runners = ProjectionRunners::new(
            db.clone(),
            projections,
            signal.clone(),
            metrics.projections.clone(),
            RunnerOptions {
                pause_before_commit,
            },
        );
        let (progress, mut tasks) = runners.start(&leases, shutdown.clone()).await?;
        tasks.extend(listener);
        tasks.extend(lease_task);
        let board_watch = progress
            .watch(projections::pipelines::PipelinesProjection::NAME)
            .ok_or_else(|| anyhow::anyhow!("the pipelines projection is not running"))?;
        let (board_changes, board_task) = crate::realtime::Feed::start(
            db.clone(),
            vec![board_watch],
            &["Pipelines", "Card"],
            Arc::new(|db, event| Box::pin(crate::pipelines::board_change(db, event))),
            shutdown.clone(),
        );
        tasks.push(board_task);
        let tickets_watch = progress
            .watch(TicketsProjection.name())
            .ok_or_else(|| anyhow::anyhow!("the tickets projection is not running"))?;
        let (ticket_changes, tickets_task) = crate::realtime::Feed::start(
            db.clone(),
            vec![tickets_watch],
            &["Ticket"],
            Arc::new(|db, event| Box::pin(crate::realtime::ticket_change(db, event))),
            shutdown.clone(),
        );
        tasks.push(tickets_task);
        let notifications_watch = progress
            .watch(projections::notifications::NotificationsProjection::NAME)
            .ok_or_else(|| anyhow::anyhow!("the notifications projection is not running"))?;
        let (notifications_added, notifications_task) = crate::realtime::Feed::start(
            db.clone(),
            vec![notifications_watch],
            &["Ticket", "Conversation"],
            Arc::new(|db, event| Box::pin(crate::realtime::notifications_added(db, event))),
            shutdown.clone(),
        );
        tasks.push(notifications_task);
        // A message's row is the conversations projection's, its delivery status the outbox's.
        let conversations_watch = [ConversationsProjection.name(), OutboxProjection.name()]
            .into_iter()
            .map(|name| {
                progress
                    .watch(name)
                    .ok_or_else(|| anyhow::anyhow!("the {name} projection is not running"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let (conversation_messages, conversations_task) = crate::realtime::Feed::start(
            db.clone(),
            conversations_watch,
            &["Conversation"],
            Arc::new(|db, event| Box::pin(crate::realtime::conversation_message(db, event))),
            shutdown.clone(),
        );
        tasks.push(conversations_task);
        let helpdesk = Self {
            tickets: CqrsFramework::new(event_store(&db), vec![], ()),
            divisions: CqrsFramework::new(event_store(&db), vec![], ()),
            agents: CqrsFramework::new(event_store(&db), vec![], ()),
            queue_settings: CqrsFramework::new(event_store(&db), vec![], ()),
            ticket_history: event_store(&db),
            conversations: CqrsFramework::new(event_store(&db), vec![], ()),
            conversation_history: event_store(&db),
            channels: CqrsFramework::new(event_store(&db), vec![], ()),
            bots: CqrsFramework::new(event_store(&db), vec![], ()),
            pipelines: CqrsFramework::new(event_store(&db), vec![], ()),
            pipeline_history: event_store(&db),
            cards: CqrsFramework::new(event_store(&db), vec![], ()),
            card_history: event_store(&db),
            notifications: CqrsFramework::new(event_store(&db), vec![], ()),
            inboxes: CqrsFramework::new(event_store(&db), vec![], ()),
            customers: CqrsFramework::new(event_store(&db), vec![], ()),
            leases,
            assignment_progress: tokio::sync::watch::channel(projections::Checkpoint::START).0,
            db,
            progress,
            signal,
            keywords: config.priority_keywords.clone(),
            consistency_timeout: config.consistency_timeout,
            aggregate_turns: AggregateTurns::new(1024),
            metrics,
            board_changes,
            ticket_changes,
            notifications_added,
            conversation_messages,
        };
        let helpdesk = Arc::new(helpdesk);
        tasks.push(crate::assignment::AssignmentProcess::spawn(
            helpdesk.clone(),
            shutdown.clone(),
        ));
        tasks.push(crate::conversation_process::spawn(
            helpdesk.clone(),
            shutdown.clone(),
        ));
        tasks.push(crate::pipeline_process::spawn(
            helpdesk.clone(),
            shutdown.clone(),
        ));
        if config.outbox_delivery {
            tasks.push(tokio::spawn(crate::outbox::run(helpdesk.clone(), shutdown)));
        }
        Ok((helpdesk, tasks))
    }

    /// Waits until this process's assignment process and projections have handled every
    /// committed event and the log has stopped growing: the helpdesk is at rest. For tests
    /// and tools running the whole helpdesk in one process; `false` on timeout.
    pub async fn settle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut reconciled = self.assignment_progress.subscribe();
        loop {
            let Ok(head) = event_log::log_head(&self.db).await else {
                return false;
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if self.progress.wait_for_all(head, left).await.is_err() {
                return false;
            }
            // Only a boolean survives this statement: the `watch::Ref` inside the result holds
            // the channel's read lock, and keeping it across the next `.await` would block the
            // assignment process's `send_replace` (a runtime thread) until the query returns.
            let caught_up = matches!(
                tokio::time::timeout_at(deadline, reconciled.wait_for(|at| *at >= head)).await,
                Ok(Ok(_))
            );
            if !caught_up {
                return false;
            }
            match event_log::log_head(&self.db).await {
                Ok(now) if now == head => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    }

    /// What rings when events are committed.
    pub fn log_signal(&self) -> &LogSignal {
        &self.signal
    }

    /// A ticket as its events leave it now (the write side's view, not a projection's).
    pub async fn load_ticket(&self, organization: &str, ticket_id: &str) -> ApiResult<Ticket> {
        let context = self
            .ticket_history
            .load_aggregate(ticket_id)
            .await
            .map_err(|e| from_aggregate("ticket", e))?;
        let ticket = context.aggregate;
        if ticket.status().is_none() || ticket.organization() != Some(organization) {
            return Err(ApiError::NotFound("ticket not found".into()));
        }
        Ok(ticket)
    }

    /// Opens a ticket. Returns the ticket as its creation event describes it, for answering
    /// when the read model has not caught up within the consistency timeout (the event is
    /// committed: answering with an error would make clients create it twice). When the
    /// ticket's queue is served automatically, an agent is looked for at once.
    pub async fn create_ticket(
        &self,
        caller: &Caller,
        request_id: &str,
        input: NewTicket,
    ) -> ApiResult<TicketRecord> {
        let id = uuid::Uuid::new_v4().to_string();
        self.create_ticket_with_id(caller, request_id, input, id)
            .await
    }

    /// [`Helpdesk::create_ticket`] with the id chosen by the caller: a flow that must never
    /// open two tickets for one cause derives the id from the cause, and a second attempt
    /// is refused with `CONFLICT` (already exists).
    pub async fn create_ticket_with_id(
        &self,
        caller: &Caller,
        request_id: &str,
        input: NewTicket,
        id: String,
    ) -> ApiResult<TicketRecord> {
        if let Some(division) = &input.division_id {
            self.ensure_division(&caller.organization, division).await?;
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
        let origin = Origin::of(caller, request_id);
        let at = self
            .execute(
                &self.tickets,
                &id,
                command.action,
                &origin,
                "createTicket",
                Wait::ForProjections,
            )
            .await?;
        let Some(TicketEvent::TicketCreated {
            organization,
            subject,
            description,
            priority,
            division_id,
            ..
        }) = created.into_iter().next()
        else {
            return Err(ApiError::internal(
                "ticket creation decided no TicketCreated event",
            ));
        };
        // "Assigned at once": the assignment process would do it a moment later; doing it
        // here lets the creator see the assignee in the answer.
        let caused = Origin {
            causation_id: Some(format!("Ticket/{id}/1")),
            ..origin
        };
        let assigned_here = crate::assignment::assign_waiting(
            self,
            &organization,
            division_id.as_deref(),
            &caused,
            Some(1),
            Wait::ForProjections,
        )
        .await;
        // The assignment process may have given the ticket away first: answer with that.
        if assigned_here == 0 && self.load_ticket(&organization, &id).await?.version() > 1 {
            self.wait_for_projections(Ticket::TYPE, &id).await?;
        }
        Ok(TicketRecord {
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
        })
    }

    /// Runs a command on an existing ticket; returns when it happened. Assignments go
    /// through [`Helpdesk::assign_ticket`] instead (they need a slot).
    pub async fn on_ticket(
        &self,
        caller: &Caller,
        request_id: &str,
        ticket_id: &str,
        action: TicketAction,
    ) -> ApiResult<DateTime<Utc>> {
        let name = command_name(&action);
        self.execute(
            &self.tickets,
            ticket_id,
            action,
            &Origin::of(caller, request_id),
            name,
            Wait::ForProjections,
        )
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
        self.execute(
            &self.divisions,
            &id,
            DivisionAction::Create(profile),
            &Origin::of(caller, request_id),
            "createDivision",
            Wait::ForProjections,
        )
        .await?;
        Ok(id)
    }

    /// Changes a division's settings.
    pub async fn update_division(
        &self,
        caller: &Caller,
        request_id: &str,
        division_id: &str,
        changes: DivisionChanges,
    ) -> ApiResult<()> {
        self.execute(
            &self.divisions,
            division_id,
            DivisionAction::Update(changes),
            &Origin::of(caller, request_id),
            "updateDivision",
            Wait::ForProjections,
        )
        .await?;
        Ok(())
    }

    /// Changes the organization's queue settings.
    pub async fn update_queue_settings(
        &self,
        caller: &Caller,
        request_id: &str,
        changes: QueueSettingsChanges,
    ) -> ApiResult<()> {
        let organization = caller.organization.clone();
        self.execute(
            &self.queue_settings,
            &organization,
            changes,
            &Origin::of(caller, request_id),
            "updateQueueSettings",
            Wait::ForProjections,
        )
        .await?;
        Ok(())
    }

    /// The typical handling time of a queue in seconds (`division_key` `""`: tickets without
    /// a division): see [`domain::wait`].
    pub async fn typical_handling_seconds(
        &self,
        organization: &str,
        division_key: &str,
        fallback_minutes: i64,
    ) -> ApiResult<i64> {
        let recent = projections::tickets::recent_handling_seconds(
            &self.db,
            organization,
            division_key,
            domain::wait::RECENT_RESOLUTIONS,
        )
        .await?;
        Ok(domain::wait::typical_handling_seconds(
            &recent,
            fallback_minutes,
        ))
    }

    /// Refuses a division id that does not exist in `organization`.
    pub async fn ensure_division(&self, organization: &str, division: &str) -> ApiResult<()> {
        match projections::divisions::division(&self.db, organization, division).await? {
            Some(_) => Ok(()),
            None => Err(ApiError::bad_input(format!(
                "unknown division '{division}'"
            ))),
        }
    }

    /// Registers an agent and returns its id (the `sub` of its tokens): `id` when given
    /// (the agent's id in the organization's identity provider), else a new UUID.
    pub async fn register_agent(
        &self,
        caller: &Caller,
        request_id: &str,
        id: Option<String>,
        name: String,
        max_tickets: i64,
        division_ids: Vec<String>,
    ) -> ApiResult<String> {
        for division in &division_ids {
            self.ensure_division(&caller.organization, division).await?;
        }
        let id = id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        self.on_agent(
            caller,
            request_id,
            &id,
            AgentAction::Register {
                name,
                max_tickets,
                division_ids,
            },
        )
        .await?;
        Ok(id)
    }

    /// Runs a command on an agent (presence, capacity, divisions).
    pub async fn on_agent(
        &self,
        caller: &Caller,
        request_id: &str,
        agent_id: &str,
        action: AgentAction,
    ) -> ApiResult<DateTime<Utc>> {
        if let AgentAction::SetDivisions { division_ids } = &action {
            for division in division_ids {
                self.ensure_division(&caller.organization, division).await?;
            }
        }
        let name = match &action {
            AgentAction::Register { .. } => "registerAgent",
            AgentAction::GoOnline => "goOnline",
            AgentAction::GoOffline => "goOffline",
            AgentAction::SetCapacity { .. } => "setAgentCapacity",
            AgentAction::SetDivisions { .. } => "setAgentDivisions",
            AgentAction::ReserveSlot { .. } => "reserveSlot",
            AgentAction::ReleaseSlot { .. } => "releaseSlot",
        };
        self.execute(
            &self.agents,
            agent_id,
            action,
            &Origin::of(caller, request_id),
            name,
            Wait::ForProjections,
        )
        .await
    }

    /// Runs `action` on aggregate `aggregate_id` as `origin`, retrying conflicts with other
    /// replicas; with [`Wait::ForProjections`], returns once the projections show it.
    pub(crate) async fn execute<A, Action>(
        &self,
        cqrs: &CqrsFramework<A, EventStore<A>>,
        aggregate_id: &str,
        action: Action,
        origin: &Origin,
        name: &'static str,
        wait: Wait,
    ) -> ApiResult<DateTime<Utc>>
    where
        A: Aggregate<Command = Command<Action>, Error = DomainError>,
        Action: Clone,
    {
        let started = Instant::now();
        let command = Command {
            organization: origin.organization.clone(),
            actor: origin.actor.clone(),
            action,
        };
        let result = self
            .execute_and_wait(cqrs, aggregate_id, command, origin, wait)
            .await;
        self.measure(name, started, &result);
        result
    }

    /// Records a command's latency and outcome for `/metrics`.
    pub(crate) fn measure<T>(&self, name: &str, started: Instant, result: &ApiResult<T>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => e.code(),
        };
        self.metrics.commands.observe(
            format!("command=\"{}\",outcome=\"{outcome}\"", label(name)),
            started.elapsed().as_secs_f64(),
        );
    }

    async fn execute_and_wait<A>(
        &self,
        cqrs: &CqrsFramework<A, EventStore<A>>,
        aggregate_id: &str,
        command: A::Command,
        origin: &Origin,
        wait: Wait,
    ) -> ApiResult<DateTime<Utc>>
    where
        A: Aggregate,
        A::Command: Clone,
        A: Aggregate<Error = DomainError>,
    {
        let occurred_at = Utc::now();
        let metadata = EventMetadata {
            organization: origin.organization.clone(),
            actor: origin.actor.clone(),
            occurred_at,
            request_id: origin.request_id.clone(),
            correlation_id: origin.request_id.clone(),
            causation_id: origin.causation_id.clone(),
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
        if wait == Wait::ForProjections {
            self.wait_for_projections(A::TYPE, aggregate_id).await?;
        }
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
/// Whether a command returns only once the projections show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Read-your-writes: the answer is built from the projections.
    ForProjections,
    /// An inner step of a saga; the caller waits at the end.
    No,
}

/// How clients call an aggregate type in messages.
fn noun(aggregate_type: &str) -> &'static str {
    match aggregate_type {
        "Division" => "division",
        "AgentStatus" => "agent",
        "QueueSettings" => "queue settings",
        "Pipelines" => "pipeline",
        "Card" => "card",
        "Notification" => "notification",
        "Inbox" => "notifications",
        "CustomerPrivacy" => "customer",
        _ => "ticket",
    }
}

/// The contract's name of the mutation behind a ticket action, for metrics.
pub fn command_name(action: &TicketAction) -> &'static str {
    match action {
        TicketAction::Create { .. } => "createTicket",
        TicketAction::Claim { .. } => "claimTicket",
        TicketAction::Assign { .. } => "assignTicket",
        TicketAction::AutoAssign { .. } => "autoAssignTicket",
        TicketAction::Escalate { .. } => "escalateTicket",
        TicketAction::Requeue { .. } => "requeueTicket",
        TicketAction::Start => "startTicket",
        TicketAction::Resolve { .. } => "resolveTicket",
        TicketAction::Close => "closeTicket",
        TicketAction::Reopen { .. } => "reopenTicket",
        TicketAction::ChangePriority { .. } => "changeTicketPriority",
        TicketAction::AddComment { .. } => "addComment",
        TicketAction::Rate { .. } => "rateTicket",
    }
}
