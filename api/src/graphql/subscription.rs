//! Subscriptions over graphql-transport-ws at `/graphql/ws` (the token comes in the
//! `connection_init` payload; see [`crate::server`]). Each stream reads one of the
//! helpdesk's real-time feeds ([`crate::realtime`]) and passes on only what belongs to the
//! caller's organization.

use std::sync::Arc;

use async_graphql::{ComplexObject, Context, SimpleObject, Subscription, ID};
use chrono::{DateTime, Utc};
use domain::Role;
use futures::Stream;
use projections::tickets::TicketRecord;

use super::conversations::Message;
use super::notifications::Notification;
use super::types::Ticket;
use super::{caller_in, helpdesk, parse_uuid};
use crate::error::ApiError;
use crate::pipelines::{BoardChange as Change, BoardChangeKind};
use crate::realtime::{Delivery, SharedQueuePosition, Subscriber, TicketChange};

/// One change of a board, sent once the board shows it.
#[derive(SimpleObject, Clone)]
pub struct BoardChange {
    /// The pipeline.
    pub pipeline_id: ID,
    /// What happened.
    pub kind: BoardChangeKind,
    /// The card, for card changes.
    pub card_id: Option<ID>,
    /// The stage a card left, or the stage that changed.
    pub from_stage_id: Option<ID>,
    /// The stage a card entered or sits in (for a removed stage: where its cards go).
    pub to_stage_id: Option<ID>,
    /// The place asked for in the stage (0-based; null: last).
    pub position: Option<i64>,
    /// When it happened (null for REFETCH).
    pub at: Option<DateTime<Utc>>,
    /// The event's position in the log (null for REFETCH).
    pub log_position: Option<i64>,
}

impl From<&Change> for BoardChange {
    fn from(change: &Change) -> Self {
        Self {
            pipeline_id: ID(change.pipeline_id.clone()),
            kind: change.kind,
            card_id: change.card_id.clone().map(ID),
            from_stage_id: change.from_stage_id.clone().map(ID),
            to_stage_id: change.to_stage_id.clone().map(ID),
            position: change.position.map(i64::from),
            at: Some(change.at),
            log_position: Some(change.log_position),
        }
    }
}

/// A change of a ticket; refetch what shows it (or read `ticket`, its state now).
#[derive(SimpleObject, Clone)]
#[graphql(complex)]
pub struct TicketUpdate {
    /// The ticket (null for a refetch).
    pub ticket_id: Option<ID>,
    /// The event: `TicketCreated`, `TicketAssigned`, ... (`REFETCH`: changes were missed
    /// because this subscriber read too slowly).
    pub change: String,
    /// When it happened (null for a refetch).
    pub at: Option<DateTime<Utc>>,
    /// The event's position in the log (null for a refetch).
    pub log_position: Option<i64>,
    /// The row and queue position shared by every subscriber of this change (none for a
    /// refetch).
    #[graphql(skip)]
    shared: Option<(Arc<TicketRecord>, SharedQueuePosition)>,
}

#[ComplexObject]
impl TicketUpdate {
    /// The ticket as the read model showed it once this change was applied (it may show
    /// later changes too); null for a refetch. A thousand subscribers share one read.
    async fn ticket(&self) -> async_graphql::Result<Option<Ticket>> {
        let Some((record, queue_position)) = &self.shared else {
            return Ok(None);
        };
        let mut ticket = Ticket::from_record(TicketRecord::clone(record))?;
        ticket.shared_queue_position = Some(queue_position.clone());
        Ok(Some(ticket))
    }
}

impl TicketUpdate {
    fn of(change: &TicketChange) -> Self {
        Self {
            ticket_id: Some(ID(change.ticket_id.clone())),
            change: change.event_type.clone(),
            at: Some(change.at),
            log_position: Some(change.log_position),
            shared: Some((change.ticket.clone(), change.queue_position.clone())),
        }
    }

    fn refetch() -> Self {
        Self {
            ticket_id: None,
            change: "REFETCH".into(),
            at: None,
            log_position: None,
            shared: None,
        }
    }
}

/// A change of a division's queue: a ticket joined, left or changed priority.
#[derive(SimpleObject, Clone)]
pub struct QueueUpdate {
    /// The division (null: the queue of tickets without one).
    pub division_id: Option<ID>,
    /// What changed.
    #[graphql(flatten)]
    pub update: TicketUpdate,
}

/// The deliveries of a feed that `keep` accepts for the caller's organization, as a stream;
/// a lag becomes `lagged()`.
fn deliveries<T, U>(
    subscriber: Subscriber<T>,
    organization: String,
    keep: impl Fn(&T) -> Option<U> + Send + Sync + 'static,
    lagged: impl Fn() -> U + Send + Sync + 'static,
) -> impl Stream<Item = U>
where
    T: Send + Sync + 'static,
    U: Send + 'static,
{
    let keep = std::sync::Arc::new(keep);
    let lagged = std::sync::Arc::new(lagged);
    futures::stream::unfold(subscriber, move |mut subscriber| {
        let organization = organization.clone();
        let keep = keep.clone();
        let lagged = lagged.clone();
        async move {
            loop {
                match subscriber.next().await? {
                    Delivery::Lagged => return Some((lagged(), subscriber)),
                    Delivery::Message(published) if published.organization == organization => {
                        if let Some(item) = keep(&published.message) {
                            return Some((item, subscriber));
                        }
                    }
                    Delivery::Message(_) => {}
                }
            }
        }
    })
}

/// Every subscription.
#[derive(Default)]
pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// Every change of a pipeline's board (admins, agents, analysts), sent after the board
    /// shows it; `REFETCH` when changes were missed.
    async fn board_changed(
        &self,
        ctx: &Context<'_>,
        pipeline_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = BoardChange>> {
        let caller = caller_in(
            ctx,
            &[Role::Admin, Role::Agent, Role::Analyst],
            "read pipelines",
        )?;
        let helpdesk = helpdesk(ctx)?;
        let pipeline_id = parse_uuid(&pipeline_id, "pipeline")?;
        // Subscribe first, so nothing committed after the check is missed.
        let subscriber = helpdesk.board_changes.subscribe();
        projections::pipelines::pipeline(&helpdesk.db, &caller.organization, &pipeline_id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::NotFound("pipeline not found".into()))?;
        Ok(deliveries(
            subscriber,
            caller.organization.clone(),
            {
                let pipeline_id = pipeline_id.clone();
                move |change: &Change| {
                    (change.pipeline_id == pipeline_id).then(|| BoardChange::from(change))
                }
            },
            move || BoardChange {
                pipeline_id: ID(pipeline_id.clone()),
                kind: BoardChangeKind::Refetch,
                card_id: None,
                from_stage_id: None,
                to_stage_id: None,
                position: None,
                at: None,
                log_position: None,
            },
        ))
    }

    /// Changes of a division's queue (`divisionId` omitted: the queue of tickets without a
    /// division), sent once the queue shows them (admins, agents, analysts).
    async fn queue_updated(
        &self,
        ctx: &Context<'_>,
        division_id: Option<ID>,
    ) -> async_graphql::Result<impl Stream<Item = QueueUpdate>> {
        let caller = caller_in(
            ctx,
            &[Role::Admin, Role::Agent, Role::Analyst],
            "read queues",
        )?;
        let helpdesk = helpdesk(ctx)?;
        let division_id = division_id
            .map(|d| parse_uuid(&d, "division"))
            .transpose()?;
        let subscriber = helpdesk.ticket_changes.subscribe();
        if let Some(division) = &division_id {
            helpdesk
                .ensure_division(&caller.organization, division)
                .await?;
        }
        let refetch_division = division_id.clone();
        Ok(deliveries(
            subscriber,
            caller.organization.clone(),
            move |change: &TicketChange| {
                (change.queue_changed && change.division_id == division_id).then(|| QueueUpdate {
                    division_id: change.division_id.clone().map(ID),
                    update: TicketUpdate::of(change),
                })
            },
            move || QueueUpdate {
                division_id: refetch_division.clone().map(ID),
                update: TicketUpdate::refetch(),
            },
        ))
    }

    /// Changes of the calling agent's tickets: assigned to or taken from them, started,
    /// resolved, reopened, commented... (agents; every ticket stays the holder's own).
    async fn my_tickets(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = TicketUpdate>> {
        let caller = caller_in(ctx, &[Role::Agent], "follow their own tickets")?;
        let helpdesk = helpdesk(ctx)?;
        let subscriber = helpdesk.ticket_changes.subscribe();
        let agent = caller.actor.id.clone();
        Ok(deliveries(
            subscriber,
            caller.organization.clone(),
            move |change: &TicketChange| {
                change
                    .agents
                    .contains(&agent)
                    .then(|| TicketUpdate::of(change))
            },
            TicketUpdate::refetch,
        ))
    }

    /// The caller's new notifications, as they are added (`notifications` shows them
    /// already). An error item says notifications were missed: refetch the list.
    async fn notification_added(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Notification>>> {
        let caller = super::caller(ctx)?;
        let helpdesk = helpdesk(ctx)?;
        let subscriber = helpdesk.notifications_added.subscribe();
        let user = caller.actor.id.clone();
        Ok(deliveries(
            subscriber,
            caller.organization.clone(),
            move |rows: &Vec<projections::notifications::NotificationRecord>| {
                rows.iter()
                    .find(|r| r.user_id == user)
                    .map(|r| Notification::from_record(r).map_err(Into::into))
            },
            || {
                Err(ApiError::Conflict(
                    "notifications were missed (read too slowly): refetch them".into(),
                )
                .into())
            },
        ))
    }

    /// New messages of a conversation, both ways, once the conversation shows them (admins,
    /// agents). An error item says messages were missed: refetch the conversation.
    async fn conversation_messages(
        &self,
        ctx: &Context<'_>,
        conversation_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Message>>> {
        let caller = caller_in(ctx, &[Role::Admin, Role::Agent], "read conversations")?;
        let helpdesk = helpdesk(ctx)?.clone();
        let conversation_id = parse_uuid(&conversation_id, "conversation")?;
        let subscriber = helpdesk.conversation_messages.subscribe();
        let organization = caller.organization.clone();
        projections::conversations::conversation(&helpdesk.db, &organization, &conversation_id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::NotFound("conversation not found".into()))?;
        let state = (subscriber, helpdesk, organization, conversation_id);
        Ok(futures::stream::unfold(state, |state| async move {
            let (mut subscriber, helpdesk, organization, conversation_id) = state;
            loop {
                let item = match subscriber.next().await? {
                    Delivery::Lagged => Err(ApiError::Conflict(
                        "messages were missed (read too slowly): refetch the conversation".into(),
                    )
                    .into()),
                    Delivery::Message(published)
                        if published.organization == organization
                            && published.message.conversation_id == conversation_id =>
                    {
                        match super::conversations::message_by_id(
                            &helpdesk,
                            &organization,
                            &conversation_id,
                            &published.message.message_id,
                        )
                        .await
                        {
                            Ok(Some(message)) => Ok(message),
                            Ok(None) => continue,
                            Err(error) => Err(error.into()),
                        }
                    }
                    Delivery::Message(_) => continue,
                };
                return Some((item, (subscriber, helpdesk, organization, conversation_id)));
            }
        }))
    }
}
