//! Subscriptions over graphql-transport-ws at `/graphql/ws` (the token comes in the
//! `connection_init` payload; see [`crate::server`]). Each stream reads one of the
//! helpdesk's real-time feeds ([`crate::realtime`]) and passes on only what belongs to the
//! caller's organization.

use async_graphql::{Context, Enum, SimpleObject, Subscription, ID};
use chrono::{DateTime, Utc};
use domain::Role;
use futures::Stream;

use super::{caller_in, helpdesk, parse_uuid};
use crate::error::ApiError;
use crate::pipelines::{BoardChange as Change, BoardChangeKind as ChangeKind};
use crate::realtime::Delivery;

/// What happened on a board.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum BoardChangeKind {
    /// A conversation was put on the board.
    CardPlaced,
    /// A card moved (to another stage, or within its own).
    CardMoved,
    /// A card's labels or automation outcome changed.
    CardUpdated,
    /// Stages were added, changed, reordered or removed.
    StagesChanged,
    /// The pipeline itself changed (name, archive, default).
    PipelineChanged,
    /// Changes were missed (this subscriber read too slowly): refetch the board.
    Refetch,
}

impl From<ChangeKind> for BoardChangeKind {
    fn from(kind: ChangeKind) -> Self {
        match kind {
            ChangeKind::CardPlaced => BoardChangeKind::CardPlaced,
            ChangeKind::CardMoved => BoardChangeKind::CardMoved,
            ChangeKind::CardUpdated => BoardChangeKind::CardUpdated,
            ChangeKind::StagesChanged => BoardChangeKind::StagesChanged,
            ChangeKind::PipelineChanged => BoardChangeKind::PipelineChanged,
        }
    }
}

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
            kind: change.kind.into(),
            card_id: change.card_id.clone().map(ID),
            from_stage_id: change.from_stage_id.clone().map(ID),
            to_stage_id: change.to_stage_id.clone().map(ID),
            position: change.position.map(i64::from),
            at: Some(change.at),
            log_position: Some(change.log_position),
        }
    }
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
        let organization = caller.organization.clone();
        Ok(futures::stream::unfold(
            subscriber,
            move |mut subscriber| {
                let organization = organization.clone();
                let pipeline_id = pipeline_id.clone();
                async move {
                    loop {
                        match subscriber.next().await? {
                            Delivery::Lagged => {
                                let refetch = BoardChange {
                                    pipeline_id: ID(pipeline_id.clone()),
                                    kind: BoardChangeKind::Refetch,
                                    card_id: None,
                                    from_stage_id: None,
                                    to_stage_id: None,
                                    position: None,
                                    at: None,
                                    log_position: None,
                                };
                                return Some((refetch, subscriber));
                            }
                            Delivery::Message(published)
                                if published.organization == organization
                                    && published.message.pipeline_id == pipeline_id =>
                            {
                                return Some((BoardChange::from(&published.message), subscriber));
                            }
                            Delivery::Message(_) => {}
                        }
                    }
                }
            },
        ))
    }
}
