//! Pipelines (issue 6): admins shape the organization's pipelines and stages; agents and
//! admins put conversations on them as cards and move the cards.
//!
//! A card command is told the target stage as the write side holds it (the organization's
//! pipelines aggregate, loaded from its events, never a read model that may lag), so a card
//! can never enter a stage of another pipeline or one that no longer exists at the time.
//! What a stage does to a card entering it runs afterwards in the pipeline process
//! ([`crate::pipeline_process`]).

use cqrs_es::EventStore as _;
use domain::actor::Role;
use domain::pipeline::{
    Card, CardAction, OrganizationPipelines, PipelineChanges, PipelinesAction, Stage,
    StageAutomation, StageChanges, StageRef,
};
use domain::DomainError;

use crate::auth::Caller;
use crate::conversations::derived_id;
use crate::error::{from_aggregate, ApiError, ApiResult};
use crate::helpdesk::{Helpdesk, Origin, Wait};

/// The id of an organization's pipelines aggregate.
pub fn pipelines_id(organization: &str) -> String {
    derived_id(&["pipelines", organization])
}

/// The id of the card of `conversation_id` on `pipeline_id`: one card per conversation and
/// pipeline, whoever places it first.
pub fn card_id(pipeline_id: &str, conversation_id: &str) -> String {
    derived_id(&["card", pipeline_id, conversation_id])
}

/// A stage as `addStage` gives it.
#[derive(Debug, Clone)]
pub struct NewStage {
    /// Its name.
    pub name: String,
    /// `#RRGGBB`.
    pub color: Option<String>,
    /// A final stage.
    pub closed: bool,
    /// What it does to cards entering it.
    pub automation: Vec<StageAutomation>,
    /// Where it goes (0-based; `None`: at the end).
    pub position: Option<usize>,
}

impl Helpdesk {
    /// The organization's pipelines as their events leave them now.
    pub async fn load_pipelines(&self, organization: &str) -> ApiResult<OrganizationPipelines> {
        let context = self
            .pipeline_history
            .load_aggregate(&pipelines_id(organization))
            .await
            .map_err(|e| from_aggregate("pipeline", e))?;
        Ok(context.aggregate)
    }

    /// A card as its events leave it now.
    pub async fn load_card(&self, organization: &str, card_id: &str) -> ApiResult<Card> {
        let context = self
            .card_history
            .load_aggregate(card_id)
            .await
            .map_err(|e| from_aggregate("card", e))?;
        let card = context.aggregate;
        if card.organization() != Some(organization) {
            return Err(ApiError::NotFound("card not found".into()));
        }
        Ok(card)
    }

    /// Runs a command on the organization's pipelines.
    async fn on_pipelines(
        &self,
        caller: &Caller,
        request_id: &str,
        action: PipelinesAction,
        name: &'static str,
    ) -> ApiResult<()> {
        self.execute(
            &self.pipelines,
            &pipelines_id(&caller.organization),
            action,
            &Origin::of(caller, request_id),
            name,
            Wait::ForProjections,
        )
        .await
        .map(|_| ())
    }

    /// Creates a pipeline; returns its id.
    pub async fn create_pipeline(
        &self,
        caller: &Caller,
        request_id: &str,
        name: String,
        description: Option<String>,
        color: Option<String>,
    ) -> ApiResult<String> {
        let pipeline_id = uuid::Uuid::new_v4().to_string();
        self.on_pipelines(
            caller,
            request_id,
            PipelinesAction::Create {
                pipeline_id: pipeline_id.clone(),
                name,
                description,
                color,
            },
            "createPipeline",
        )
        .await?;
        Ok(pipeline_id)
    }

    /// Renames or recolours a pipeline.
    pub async fn update_pipeline(
        &self,
        caller: &Caller,
        request_id: &str,
        pipeline_id: String,
        changes: PipelineChanges,
    ) -> ApiResult<()> {
        self.on_pipelines(
            caller,
            request_id,
            PipelinesAction::Update {
                pipeline_id,
                changes,
            },
            "updatePipeline",
        )
        .await
    }

    /// Archives a pipeline.
    pub async fn archive_pipeline(
        &self,
        caller: &Caller,
        request_id: &str,
        pipeline_id: String,
    ) -> ApiResult<()> {
        self.on_pipelines(
            caller,
            request_id,
            PipelinesAction::Archive { pipeline_id },
            "archivePipeline",
        )
        .await
    }

    /// Makes a pipeline the organization's default.
    pub async fn set_default_pipeline(
        &self,
        caller: &Caller,
        request_id: &str,
        pipeline_id: String,
    ) -> ApiResult<()> {
        self.on_pipelines(
            caller,
            request_id,
            PipelinesAction::SetDefault { pipeline_id },
            "setDefaultPipeline",
        )
        .await
    }

    /// Adds a stage; returns its id.
    pub async fn add_stage(
        &self,
        caller: &Caller,
        request_id: &str,
        pipeline_id: String,
        stage: NewStage,
    ) -> ApiResult<String> {
        self.ensure_automation_agents(&caller.organization, &stage.automation)
            .await?;
        let stage_id = uuid::Uuid::new_v4().to_string();
        self.on_pipelines(
            caller,
            request_id,
            PipelinesAction::AddStage {
                pipeline_id,
                stage: Stage {
                    stage_id: stage_id.clone(),
                    name: stage.name,
                    color: stage.color,
                    closed: stage.closed,
                    automation: stage.automation,
                },
                position: stage.position,
            },
            "addStage",
        )
        .await?;
        Ok(stage_id)
    }

    /// Changes a stage.
    pub async fn update_stage(
        &self,
        caller: &Caller,
        request_id: &str,
        stage_id: String,
        changes: StageChanges,
    ) -> ApiResult<()> {
        if let Some(steps) = &changes.automation {
            self.ensure_automation_agents(&caller.organization, steps)
                .await?;
        }
        self.on_pipelines(
            caller,
            request_id,
            PipelinesAction::UpdateStage { stage_id, changes },
            "updateStage",
        )
        .await
    }

    /// Puts a pipeline's stages in a new order.
    pub async fn reorder_stages(
        &self,
        caller: &Caller,
        request_id: &str,
        pipeline_id: String,
        stage_ids: Vec<String>,
    ) -> ApiResult<()> {
        self.on_pipelines(
            caller,
            request_id,
            PipelinesAction::ReorderStages {
                pipeline_id,
                stage_ids,
            },
            "reorderStages",
        )
        .await
    }

    /// Removes a stage; returns its pipeline. Its cards move to `move_cards_to` (moved by
    /// the pipeline process, each move recorded in the card's history).
    pub async fn remove_stage(
        &self,
        caller: &Caller,
        request_id: &str,
        stage_id: String,
        move_cards_to: Option<String>,
    ) -> ApiResult<String> {
        let Some(stage) =
            projections::pipelines::stage(&self.db, &caller.organization, &stage_id).await?
        else {
            return Err(ApiError::NotFound("stage not found".into()));
        };
        // The count the board shows: every move a caller made is on it (read-your-writes);
        // a move someone commits at this very moment may be missed, and the pipeline
        // process then moves that card on from the removed stage.
        let cards_in_stage = stage.card_count;
        self.on_pipelines(
            caller,
            request_id,
            PipelinesAction::RemoveStage {
                stage_id,
                move_cards_to,
                cards_in_stage: cards_in_stage.max(0) as u64,
            },
            "removeStage",
        )
        .await?;
        Ok(stage.pipeline_id)
    }

    /// ASSIGN_AGENT steps must name an agent of the organization.
    async fn ensure_automation_agents(
        &self,
        organization: &str,
        steps: &[StageAutomation],
    ) -> ApiResult<()> {
        for step in steps {
            if step.kind == domain::pipeline::AutomationKind::AssignAgent {
                let agent = step.value.trim();
                if projections::agents::agent(&self.db, organization, agent)
                    .await?
                    .is_none()
                {
                    return Err(ApiError::bad_input(format!(
                        "ASSIGN_AGENT names agent '{}', who is not an agent of the organization",
                        agent.chars().take(64).collect::<String>()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Puts a conversation on a pipeline (default: its first stage); returns the card id.
    pub async fn place_card(
        &self,
        caller: &Caller,
        request_id: &str,
        pipeline_id: &str,
        conversation_id: &str,
        stage_id: Option<&str>,
        position: Option<u32>,
    ) -> ApiResult<String> {
        if projections::conversations::conversation(&self.db, &caller.organization, conversation_id)
            .await?
            .is_none()
        {
            return Err(ApiError::NotFound("conversation not found".into()));
        }
        let pipelines = self.load_pipelines(&caller.organization).await?;
        let pipeline = live_pipeline(&pipelines, pipeline_id)?;
        let stage = match stage_id {
            Some(id) => target_stage(&pipelines, pipeline_id, id)?,
            None => pipeline.stages.first().ok_or_else(|| {
                ApiError::InvalidTransition("the pipeline has no stages yet".into())
            })?,
        };
        let card_id = card_id(pipeline_id, conversation_id);
        self.execute(
            &self.cards,
            &card_id,
            CardAction::Place {
                conversation_id: conversation_id.to_string(),
                stage: pipeline.stage_ref(stage),
                position,
            },
            &Origin::of(caller, request_id),
            "placeCard",
            Wait::ForProjections,
        )
        .await
        .map_err(|e| match e {
            ApiError::Conflict(m) if m == "card already exists" => ApiError::Conflict(
                "the conversation is on this pipeline already: move its card".into(),
            ),
            other => other,
        })?;
        Ok(card_id)
    }

    /// Moves a card to a stage of its pipeline, at `position` (0-based; `None`: last).
    pub async fn move_card(
        &self,
        caller: &Caller,
        request_id: &str,
        card_id: &str,
        to_stage_id: &str,
        position: Option<u32>,
    ) -> ApiResult<()> {
        let card = self.load_card(&caller.organization, card_id).await?;
        let pipelines = self.load_pipelines(&caller.organization).await?;
        let target = match pipelines.pipeline_of_stage(to_stage_id) {
            // A stage of another pipeline: the card refuses it (the domain's rule).
            Some(other) if other.pipeline_id != card.pipeline_id() => {
                let (_, stage) = other.stage(to_stage_id).ok_or_else(stage_gone)?;
                other.stage_ref(stage)
            }
            _ => {
                let pipeline = live_pipeline(&pipelines, card.pipeline_id())?;
                let stage = target_stage(&pipelines, card.pipeline_id(), to_stage_id)?;
                pipeline.stage_ref(stage)
            }
        };
        self.on_card(
            &Origin::of(caller, request_id),
            card_id,
            CardAction::Move {
                stage: target,
                position,
            },
            "moveCard",
            Wait::ForProjections,
        )
        .await
    }

    /// Adds (or removes) a label of a card.
    pub async fn label_card(
        &self,
        caller: &Caller,
        request_id: &str,
        card_id: &str,
        label: String,
        add: bool,
    ) -> ApiResult<()> {
        let (action, name) = if add {
            (CardAction::AddLabel { label }, "labelCard")
        } else {
            (CardAction::RemoveLabel { label }, "unlabelCard")
        };
        self.on_card(
            &Origin::of(caller, request_id),
            card_id,
            action,
            name,
            Wait::ForProjections,
        )
        .await
    }

    /// Runs a command on a card.
    pub(crate) async fn on_card(
        &self,
        origin: &Origin,
        card_id: &str,
        action: CardAction,
        name: &'static str,
        wait: Wait,
    ) -> ApiResult<()> {
        if matches!(origin.actor.role, Role::Analyst) {
            return Err(ApiError::Forbidden(
                "the analyst role may not change pipeline cards".into(),
            ));
        }
        self.execute(&self.cards, card_id, action, origin, name, wait)
            .await
            .map(|_| ())
    }
}

fn stage_gone() -> ApiError {
    ApiError::NotFound("stage not found".into())
}

/// An active pipeline of the organization.
fn live_pipeline<'a>(
    pipelines: &'a OrganizationPipelines,
    pipeline_id: &str,
) -> ApiResult<&'a domain::pipeline::Pipeline> {
    let pipeline = pipelines
        .pipeline(pipeline_id)
        .ok_or_else(|| ApiError::NotFound("pipeline not found".into()))?;
    if pipeline.archived {
        return Err(ApiError::refused(
            "pipeline",
            DomainError::InvalidTransition("the pipeline is archived".into()),
        ));
    }
    Ok(pipeline)
}

/// A live stage of `pipeline_id`; a stage of another pipeline is the caller's mistake.
fn target_stage<'a>(
    pipelines: &'a OrganizationPipelines,
    pipeline_id: &str,
    stage_id: &str,
) -> ApiResult<&'a Stage> {
    match pipelines.pipeline_of_stage(stage_id) {
        None => Err(stage_gone()),
        Some(p) if p.pipeline_id != pipeline_id => Err(ApiError::bad_input(
            "the stage belongs to another pipeline than the card",
        )),
        Some(p) => p
            .stage(stage_id)
            .map(|(_, s)| s)
            .ok_or_else(|| ApiError::InvalidTransition("the stage was removed".into())),
    }
}

/// The target of a card leaving a removed stage, as the pipeline process moves it.
pub(crate) fn home_ref(pipelines: &OrganizationPipelines, card: &Card) -> Option<StageRef> {
    let pipeline = pipelines.pipeline(card.pipeline_id())?;
    if pipeline.stage(card.stage_id()).is_some() {
        return None;
    }
    let home = pipeline.home_of(card.stage_id())?;
    // Moved because its stage went away, not by anyone's choice: the target's automation
    // does not run.
    Some(StageRef {
        pipeline_id: pipeline.pipeline_id.clone(),
        stage_id: home.stage_id.clone(),
        automation: vec![],
    })
}

/// What changed on a board, as `boardChanged` tells subscribers.
#[derive(Debug, Clone, PartialEq)]
pub struct BoardChange {
    /// The pipeline.
    pub pipeline_id: String,
    /// What happened.
    pub kind: BoardChangeKind,
    /// The card, for card changes.
    pub card_id: Option<String>,
    /// The stage a card left (moves) or the stage that changed (stage changes).
    pub from_stage_id: Option<String>,
    /// The stage a card entered or sits in.
    pub to_stage_id: Option<String>,
    /// The place asked for in the stage (0-based; `None`: last).
    pub position: Option<u32>,
    /// When it happened.
    pub at: chrono::DateTime<chrono::Utc>,
    /// The event's position in the log.
    pub log_position: i64,
}

/// The kinds of board change.
#[derive(async_graphql::Enum, Debug, Clone, Copy, PartialEq, Eq)]
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
    /// Changes were missed (the subscriber read too slowly): refetch the board.
    Refetch,
}

/// The board change an event of the log means, if any (the feed's translation).
pub async fn board_change(
    db: projections::Database,
    event: projections::event_log::StoredEvent,
) -> Option<crate::realtime::Published<BoardChange>> {
    use domain::pipeline::{CardEvent, PipelinesEvent};
    let mut change = BoardChange {
        pipeline_id: String::new(),
        kind: BoardChangeKind::PipelineChanged,
        card_id: None,
        from_stage_id: None,
        to_stage_id: None,
        position: None,
        at: event.occurred_at(),
        log_position: event.position(),
    };
    let organization = event.metadata.organization.clone();
    match event.aggregate_type.as_str() {
        "Pipelines" => {
            let decoded: PipelinesEvent = event.decode().ok()?;
            let (pipeline_id, kind, stage) = match decoded {
                PipelinesEvent::PipelineCreated { pipeline_id, .. }
                | PipelinesEvent::PipelineUpdated { pipeline_id, .. }
                | PipelinesEvent::PipelineArchived { pipeline_id, .. }
                | PipelinesEvent::DefaultPipelineSet { pipeline_id } => {
                    (pipeline_id, BoardChangeKind::PipelineChanged, None)
                }
                PipelinesEvent::StageAdded {
                    pipeline_id, stage, ..
                }
                | PipelinesEvent::StageUpdated { pipeline_id, stage } => (
                    pipeline_id,
                    BoardChangeKind::StagesChanged,
                    Some(stage.stage_id),
                ),
                PipelinesEvent::StagesReordered { pipeline_id, .. } => {
                    (pipeline_id, BoardChangeKind::StagesChanged, None)
                }
                PipelinesEvent::StageRemoved {
                    pipeline_id,
                    stage_id,
                    cards_moved_to,
                } => {
                    change.to_stage_id = cards_moved_to;
                    (pipeline_id, BoardChangeKind::StagesChanged, Some(stage_id))
                }
            };
            change.pipeline_id = pipeline_id;
            change.kind = kind;
            change.from_stage_id = stage;
        }
        "Card" => {
            let decoded: CardEvent = event.decode().ok()?;
            change.card_id = Some(event.aggregate_id.clone());
            match decoded {
                CardEvent::CardPlaced {
                    pipeline_id,
                    stage_id,
                    position,
                    ..
                } => {
                    change.kind = BoardChangeKind::CardPlaced;
                    change.pipeline_id = pipeline_id;
                    change.to_stage_id = Some(stage_id);
                    change.position = position;
                    return Some(crate::realtime::Published {
                        organization,
                        message: change,
                    });
                }
                CardEvent::CardMoved {
                    from_stage_id,
                    to_stage_id,
                    position,
                    ..
                } => {
                    change.kind = BoardChangeKind::CardMoved;
                    change.from_stage_id = Some(from_stage_id);
                    change.to_stage_id = Some(to_stage_id);
                    change.position = position;
                }
                CardEvent::CardLabelAdded { .. }
                | CardEvent::CardLabelRemoved { .. }
                | CardEvent::CardAutomationRan { .. } => {
                    change.kind = BoardChangeKind::CardUpdated;
                }
            }
            // Later card events do not name the pipeline; the card's row does (the feed
            // runs after the projection committed it).
            let card = projections::pipelines::card(&db, &organization, &event.aggregate_id)
                .await
                .ok()??;
            change.pipeline_id = card.pipeline_id;
            if change.kind == BoardChangeKind::CardUpdated {
                change.to_stage_id = Some(card.stage_id);
            }
        }
        _ => return None,
    }
    Some(crate::realtime::Published {
        organization,
        message: change,
    })
}
