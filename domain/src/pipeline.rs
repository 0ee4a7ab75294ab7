//! Pipelines (seed cloudchat-ten-features.md, Fitur 10): kanban boards of conversations.
//!
//! Two aggregates share the work, so that a busy board never funnels every card move
//! through one stream:
//!
//! - [`OrganizationPipelines`] (one per organization): the pipelines, their stages in
//!   order, each stage's automation, and which pipeline is the default. Everything that
//!   must hold across pipelines (one default, stage ids unique, a reorder naming exactly
//!   the pipeline's stages) is decided here.
//! - [`Card`] (one per pipeline and conversation, its id derived from both, so a
//!   conversation is in at most one stage of a pipeline): where the conversation sits, its
//!   labels, and the automation its latest stage entry still owes. A move is told the
//!   target stage as the pipelines aggregate holds it ([`StageRef`]) and refuses a stage of
//!   another pipeline.
//!
//! Removing a stage that holds cards needs a stage to move them to. The count of cards is
//! what the board showed the caller ([`PipelinesAction::RemoveStage`]); a card that lands
//! in the stage at the same instant is moved on by the pipeline process (to the named
//! stage, else the first one), so no card is ever lost in a removed stage.

use std::collections::BTreeSet;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::actor::Role;
use crate::command::{Command, DomainError};
use crate::limits::{within, MAX_NAME_CHARS, MAX_TEXT_CHARS};
use crate::priority::Priority;

/// Most pipelines of one organization (archived ones included).
pub const MAX_PIPELINES: usize = 200;
/// Most stages of one pipeline.
pub const MAX_STAGES: usize = 50;
/// Most automation steps of one stage.
pub const MAX_AUTOMATION: usize = 10;
/// Longest label, in characters.
pub const MAX_LABEL_CHARS: usize = 50;
/// Most labels of one card.
pub const MAX_LABELS: usize = 30;

/// What a stage does to a card that enters it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AutomationKind {
    /// Assigns the conversation's ticket to the agent named by the value.
    AssignAgent,
    /// Adds the value as a label to the card.
    AddLabel,
    /// Sets the priority of the conversation's ticket (URGENT, HIGH, MEDIUM or LOW).
    SetPriority,
}

/// One automation step of a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageAutomation {
    /// What it does.
    pub kind: AutomationKind,
    /// Its argument: an agent id, a label or a priority.
    pub value: String,
}

impl StageAutomation {
    /// The step with its value checked and normalised.
    fn checked(self) -> Result<Self, DomainError> {
        let value = self.value.trim().to_string();
        let value = match self.kind {
            AutomationKind::AssignAgent => {
                if value.is_empty() || !within(&value, MAX_NAME_CHARS) {
                    return Err(invalid("ASSIGN_AGENT needs an agent id"));
                }
                value
            }
            AutomationKind::AddLabel => label(&value)?,
            AutomationKind::SetPriority => {
                let priority: Priority = value.to_uppercase().parse().map_err(|_| {
                    invalid("SET_PRIORITY needs URGENT, HIGH, MEDIUM or LOW".to_string())
                })?;
                priority.as_str().to_string()
            }
        };
        Ok(Self {
            kind: self.kind,
            value,
        })
    }
}

/// A stage as it is defined (not where it stands: the pipeline keeps the order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    /// Its id, unique in the organization.
    pub stage_id: String,
    /// Its name.
    pub name: String,
    /// `#RRGGBB`.
    pub color: Option<String>,
    /// A final stage (won, lost, done): cards entering it count as closed.
    pub closed: bool,
    /// What happens to a card that enters it, in order.
    pub automation: Vec<StageAutomation>,
}

/// The changes of an `updateStage`; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageChanges {
    /// A new name.
    pub name: Option<String>,
    /// A new colour (`Some(None)` removes it).
    pub color: Option<Option<String>>,
    /// Whether it is a final stage.
    pub closed: Option<bool>,
    /// A new automation list.
    pub automation: Option<Vec<StageAutomation>>,
}

/// The changes of an `updatePipeline`; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineChanges {
    /// A new name.
    pub name: Option<String>,
    /// A new description (`Some(None)` removes it).
    pub description: Option<Option<String>>,
    /// A new colour (`Some(None)` removes it).
    pub color: Option<Option<String>>,
}

/// Commands on an organization's pipelines.
pub type PipelinesCommand = Command<PipelinesAction>;

/// What admins do to pipelines.
#[derive(Debug, Clone, PartialEq)]
pub enum PipelinesAction {
    /// Creates a pipeline (the organization's first becomes its default).
    Create {
        /// Its id (chosen by the caller, a UUID).
        pipeline_id: String,
        /// Its name.
        name: String,
        /// What it is for.
        description: Option<String>,
        /// `#RRGGBB`.
        color: Option<String>,
    },
    /// Renames or recolours a pipeline.
    Update {
        /// The pipeline.
        pipeline_id: String,
        /// What changes.
        changes: PipelineChanges,
    },
    /// Archives a pipeline: its board stays readable, nothing moves on it any more.
    Archive {
        /// The pipeline.
        pipeline_id: String,
    },
    /// Makes a pipeline the organization's default.
    SetDefault {
        /// The pipeline.
        pipeline_id: String,
    },
    /// Adds a stage at `position` (0-based; `None`: at the end).
    AddStage {
        /// The pipeline.
        pipeline_id: String,
        /// The stage.
        stage: Stage,
        /// Where it goes.
        position: Option<usize>,
    },
    /// Changes a stage.
    UpdateStage {
        /// The stage.
        stage_id: String,
        /// What changes.
        changes: StageChanges,
    },
    /// Puts a pipeline's stages in a new order; must name each of them exactly once.
    ReorderStages {
        /// The pipeline.
        pipeline_id: String,
        /// Every stage of the pipeline, in the new order.
        stage_ids: Vec<String>,
    },
    /// Removes a stage; its cards move to `move_cards_to`.
    RemoveStage {
        /// The stage.
        stage_id: String,
        /// Another stage of the same pipeline for the cards it holds.
        move_cards_to: Option<String>,
        /// How many cards the stage holds, as the board shows them.
        cards_in_stage: u64,
    },
}

/// What happened to an organization's pipelines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PipelinesEvent {
    /// A pipeline was created.
    PipelineCreated {
        organization: String,
        pipeline_id: String,
        name: String,
        description: Option<String>,
        color: Option<String>,
        /// It became the organization's default (its first active pipeline).
        default: bool,
    },
    /// A pipeline's name, description or colour changed.
    PipelineUpdated {
        pipeline_id: String,
        name: String,
        description: Option<String>,
        color: Option<String>,
    },
    /// A pipeline was archived; if it was the default, `new_default` took over.
    PipelineArchived {
        pipeline_id: String,
        new_default: Option<String>,
    },
    /// A pipeline became the default.
    DefaultPipelineSet { pipeline_id: String },
    /// A stage was added at `position`.
    StageAdded {
        pipeline_id: String,
        stage: Stage,
        position: usize,
    },
    /// A stage changed (the whole new definition).
    StageUpdated { pipeline_id: String, stage: Stage },
    /// The stages were put in this order.
    StagesReordered {
        pipeline_id: String,
        stage_ids: Vec<String>,
    },
    /// A stage was removed; its cards go to `cards_moved_to`.
    StageRemoved {
        pipeline_id: String,
        stage_id: String,
        cards_moved_to: Option<String>,
    },
}

impl DomainEvent for PipelinesEvent {
    fn event_type(&self) -> String {
        match self {
            PipelinesEvent::PipelineCreated { .. } => "PipelineCreated",
            PipelinesEvent::PipelineUpdated { .. } => "PipelineUpdated",
            PipelinesEvent::PipelineArchived { .. } => "PipelineArchived",
            PipelinesEvent::DefaultPipelineSet { .. } => "DefaultPipelineSet",
            PipelinesEvent::StageAdded { .. } => "StageAdded",
            PipelinesEvent::StageUpdated { .. } => "StageUpdated",
            PipelinesEvent::StagesReordered { .. } => "StagesReordered",
            PipelinesEvent::StageRemoved { .. } => "StageRemoved",
        }
        .into()
    }

    fn event_version(&self) -> String {
        crate::upcast::current_version(&self.event_type()).to_string()
    }
}

/// One pipeline as its events leave it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    /// Its id.
    pub pipeline_id: String,
    /// Its name.
    pub name: String,
    /// What it is for.
    pub description: Option<String>,
    /// `#RRGGBB`.
    pub color: Option<String>,
    /// Archived: readable, frozen.
    pub archived: bool,
    /// Its live stages, in order.
    pub stages: Vec<Stage>,
    /// Removed stages and where their cards went.
    pub removed: Vec<(String, Option<String>)>,
}

impl Pipeline {
    /// The live stage `stage_id`, with its index.
    pub fn stage(&self, stage_id: &str) -> Option<(usize, &Stage)> {
        self.stages
            .iter()
            .enumerate()
            .find(|(_, s)| s.stage_id == stage_id)
    }

    /// Where a card in `stage_id` belongs: the stage itself while it is live; for a removed
    /// stage the stage its cards were sent to (followed while that one was removed too),
    /// else the first stage. `None` when the pipeline has no stage left.
    pub fn home_of(&self, stage_id: &str) -> Option<&Stage> {
        let mut current = stage_id.to_string();
        // Each removed stage is visited at most once, so the chain ends.
        for _ in 0..=self.removed.len() {
            if let Some((_, stage)) = self.stage(&current) {
                return Some(stage);
            }
            match self.removed.iter().find(|(id, _)| *id == current) {
                Some((_, Some(next))) => current = next.clone(),
                _ => break,
            }
        }
        self.stages.first()
    }

    /// The stage as a card move is told about it.
    pub fn stage_ref(&self, stage: &Stage) -> StageRef {
        StageRef {
            pipeline_id: self.pipeline_id.clone(),
            stage_id: stage.stage_id.clone(),
            automation: stage.automation.clone(),
        }
    }
}

/// An organization's pipelines as their events leave them.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrganizationPipelines {
    organization: Option<String>,
    pipelines: Vec<Pipeline>,
    default: Option<String>,
}

impl OrganizationPipelines {
    /// The pipelines, oldest first.
    pub fn pipelines(&self) -> &[Pipeline] {
        &self.pipelines
    }

    /// The default pipeline's id.
    pub fn default_pipeline(&self) -> Option<&str> {
        self.default.as_deref()
    }

    /// One pipeline.
    pub fn pipeline(&self, pipeline_id: &str) -> Option<&Pipeline> {
        self.pipelines.iter().find(|p| p.pipeline_id == pipeline_id)
    }

    /// The pipeline holding stage `stage_id` (live or removed).
    pub fn pipeline_of_stage(&self, stage_id: &str) -> Option<&Pipeline> {
        self.pipelines
            .iter()
            .find(|p| p.stage(stage_id).is_some() || p.removed.iter().any(|(id, _)| id == stage_id))
    }

    fn active(&self, organization: &str, pipeline_id: &str) -> Result<&Pipeline, DomainError> {
        let pipeline = self.known(organization, pipeline_id)?;
        if pipeline.archived {
            return Err(DomainError::InvalidTransition(
                "the pipeline is archived".into(),
            ));
        }
        Ok(pipeline)
    }

    fn known(&self, organization: &str, pipeline_id: &str) -> Result<&Pipeline, DomainError> {
        if self.organization.as_deref() != Some(organization) {
            return Err(DomainError::NotFound);
        }
        self.pipeline(pipeline_id).ok_or(DomainError::NotFound)
    }

    /// The active pipeline holding live stage `stage_id`.
    fn live_stage(
        &self,
        organization: &str,
        stage_id: &str,
    ) -> Result<(&Pipeline, usize), DomainError> {
        let pipeline = self
            .pipeline_of_stage(stage_id)
            .filter(|p| p.stage(stage_id).is_some())
            .ok_or(DomainError::NotFound)?;
        let pipeline = self.active(organization, &pipeline.pipeline_id)?;
        let (index, _) = pipeline.stage(stage_id).ok_or(DomainError::NotFound)?;
        Ok((pipeline, index))
    }

    fn stage_id_taken(&self, stage_id: &str) -> bool {
        self.pipeline_of_stage(stage_id).is_some()
    }

    fn pipeline_mut(&mut self, pipeline_id: &str) -> Option<&mut Pipeline> {
        self.pipelines
            .iter_mut()
            .find(|p| p.pipeline_id == pipeline_id)
    }
}

fn invalid(message: impl Into<String>) -> DomainError {
    DomainError::InvalidInput(message.into())
}

fn text(value: &str, field: &str, max: usize) -> Result<String, DomainError> {
    let value = value.trim();
    if value.is_empty() || !within(value, max) {
        return Err(invalid(format!("{field} must be 1 to {max} characters")));
    }
    Ok(value.to_string())
}

fn optional_text(
    value: Option<String>,
    field: &str,
    max: usize,
) -> Result<Option<String>, DomainError> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => text(v, field, max).map(Some),
    }
}

/// A colour must be `#RRGGBB` (stored upper-case).
fn color(value: Option<String>) -> Result<Option<String>, DomainError> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => {
            let hex = v.strip_prefix('#').unwrap_or("");
            if hex.len() == 6 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
                Ok(Some(format!("#{}", hex.to_uppercase())))
            } else {
                Err(invalid(format!("color must be #RRGGBB, got '{v}'")))
            }
        }
    }
}

/// A label: trimmed, 1 to [`MAX_LABEL_CHARS`] characters.
pub fn label(value: &str) -> Result<String, DomainError> {
    text(value, "label", MAX_LABEL_CHARS)
}

fn automation(steps: Vec<StageAutomation>) -> Result<Vec<StageAutomation>, DomainError> {
    if steps.len() > MAX_AUTOMATION {
        return Err(invalid(format!(
            "a stage has at most {MAX_AUTOMATION} automation steps"
        )));
    }
    steps.into_iter().map(StageAutomation::checked).collect()
}

impl Aggregate for OrganizationPipelines {
    const TYPE: &'static str = "Pipelines";
    type Command = PipelinesCommand;
    type Event = PipelinesEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: PipelinesCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        if command.actor.role != Role::Admin {
            return Err(DomainError::NotPermitted(
                "only admins manage pipelines".into(),
            ));
        }
        let organization = command.organization;
        if self
            .organization
            .as_deref()
            .is_some_and(|owner| owner != organization)
        {
            return Err(DomainError::NotFound);
        }
        let event = match command.action {
            PipelinesAction::Create {
                pipeline_id,
                name,
                description,
                color: colour,
            } => {
                if self.pipeline(&pipeline_id).is_some() {
                    return Err(DomainError::AlreadyExists);
                }
                if self.pipelines.len() >= MAX_PIPELINES {
                    return Err(invalid(format!(
                        "an organization has at most {MAX_PIPELINES} pipelines"
                    )));
                }
                PipelinesEvent::PipelineCreated {
                    default: self.default.is_none(),
                    organization,
                    pipeline_id,
                    name: text(&name, "name", MAX_NAME_CHARS)?,
                    description: optional_text(description, "description", MAX_TEXT_CHARS)?,
                    color: color(colour)?,
                }
            }
            PipelinesAction::Update {
                pipeline_id,
                changes,
            } => {
                let pipeline = self.active(&organization, &pipeline_id)?;
                let name = match changes.name {
                    Some(name) => text(&name, "name", MAX_NAME_CHARS)?,
                    None => pipeline.name.clone(),
                };
                let description = match changes.description {
                    Some(d) => optional_text(d, "description", MAX_TEXT_CHARS)?,
                    None => pipeline.description.clone(),
                };
                let colour = match changes.color {
                    Some(c) => color(c)?,
                    None => pipeline.color.clone(),
                };
                if (&name, &description, &colour)
                    == (&pipeline.name, &pipeline.description, &pipeline.color)
                {
                    return Ok(());
                }
                PipelinesEvent::PipelineUpdated {
                    pipeline_id,
                    name,
                    description,
                    color: colour,
                }
            }
            PipelinesAction::Archive { pipeline_id } => {
                let pipeline = self.known(&organization, &pipeline_id)?;
                if pipeline.archived {
                    return Ok(());
                }
                let new_default = if self.default.as_deref() == Some(pipeline_id.as_str()) {
                    self.pipelines
                        .iter()
                        .find(|p| !p.archived && p.pipeline_id != pipeline_id)
                        .map(|p| p.pipeline_id.clone())
                } else {
                    None
                };
                PipelinesEvent::PipelineArchived {
                    pipeline_id,
                    new_default,
                }
            }
            PipelinesAction::SetDefault { pipeline_id } => {
                self.active(&organization, &pipeline_id)?;
                if self.default.as_deref() == Some(pipeline_id.as_str()) {
                    return Ok(());
                }
                PipelinesEvent::DefaultPipelineSet { pipeline_id }
            }
            PipelinesAction::AddStage {
                pipeline_id,
                stage,
                position,
            } => {
                let pipeline = self.active(&organization, &pipeline_id)?;
                if self.stage_id_taken(&stage.stage_id) {
                    return Err(DomainError::AlreadyExists);
                }
                if pipeline.stages.len() >= MAX_STAGES {
                    return Err(invalid(format!(
                        "a pipeline has at most {MAX_STAGES} stages"
                    )));
                }
                let position = position
                    .unwrap_or(pipeline.stages.len())
                    .min(pipeline.stages.len());
                PipelinesEvent::StageAdded {
                    pipeline_id,
                    stage: Stage {
                        stage_id: stage.stage_id,
                        name: text(&stage.name, "name", MAX_NAME_CHARS)?,
                        color: color(stage.color)?,
                        closed: stage.closed,
                        automation: automation(stage.automation)?,
                    },
                    position,
                }
            }
            PipelinesAction::UpdateStage { stage_id, changes } => {
                let (pipeline, index) = self.live_stage(&organization, &stage_id)?;
                let old = &pipeline.stages[index];
                let stage = Stage {
                    stage_id,
                    name: match changes.name {
                        Some(name) => text(&name, "name", MAX_NAME_CHARS)?,
                        None => old.name.clone(),
                    },
                    color: match changes.color {
                        Some(c) => color(c)?,
                        None => old.color.clone(),
                    },
                    closed: changes.closed.unwrap_or(old.closed),
                    automation: match changes.automation {
                        Some(steps) => automation(steps)?,
                        None => old.automation.clone(),
                    },
                };
                if &stage == old {
                    return Ok(());
                }
                PipelinesEvent::StageUpdated {
                    pipeline_id: pipeline.pipeline_id.clone(),
                    stage,
                }
            }
            PipelinesAction::ReorderStages {
                pipeline_id,
                stage_ids,
            } => {
                let pipeline = self.active(&organization, &pipeline_id)?;
                let mut seen = BTreeSet::new();
                for id in &stage_ids {
                    if pipeline.stage(id).is_none() {
                        return Err(invalid(format!(
                            "stage {id} is not a stage of this pipeline"
                        )));
                    }
                    if !seen.insert(id.as_str()) {
                        return Err(invalid(format!("stage {id} is named twice")));
                    }
                }
                if seen.len() != pipeline.stages.len() {
                    return Err(invalid(format!(
                        "stageIds must name all {} stages of the pipeline",
                        pipeline.stages.len()
                    )));
                }
                if pipeline
                    .stages
                    .iter()
                    .map(|s| &s.stage_id)
                    .eq(stage_ids.iter())
                {
                    return Ok(());
                }
                PipelinesEvent::StagesReordered {
                    pipeline_id,
                    stage_ids,
                }
            }
            PipelinesAction::RemoveStage {
                stage_id,
                move_cards_to,
                cards_in_stage,
            } => {
                let (pipeline, _) = self.live_stage(&organization, &stage_id)?;
                if let Some(target) = &move_cards_to {
                    if *target == stage_id {
                        return Err(invalid("cards cannot move to the stage being removed"));
                    }
                    if pipeline.stage(target).is_none() {
                        return Err(invalid(format!(
                            "stage {target} is not a stage of this pipeline"
                        )));
                    }
                } else if cards_in_stage > 0 {
                    return Err(DomainError::InvalidTransition(format!(
                        "the stage holds {cards_in_stage} cards: name a stage to move them to"
                    )));
                }
                PipelinesEvent::StageRemoved {
                    pipeline_id: pipeline.pipeline_id.clone(),
                    stage_id,
                    cards_moved_to: move_cards_to,
                }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: PipelinesEvent) {
        match event {
            PipelinesEvent::PipelineCreated {
                organization,
                pipeline_id,
                name,
                description,
                color,
                default,
            } => {
                self.organization = Some(organization);
                if default {
                    self.default = Some(pipeline_id.clone());
                }
                self.pipelines.push(Pipeline {
                    pipeline_id,
                    name,
                    description,
                    color,
                    archived: false,
                    stages: vec![],
                    removed: vec![],
                });
            }
            PipelinesEvent::PipelineUpdated {
                pipeline_id,
                name,
                description,
                color,
            } => {
                if let Some(p) = self.pipeline_mut(&pipeline_id) {
                    p.name = name;
                    p.description = description;
                    p.color = color;
                }
            }
            PipelinesEvent::PipelineArchived {
                pipeline_id,
                new_default,
            } => {
                if let Some(p) = self.pipeline_mut(&pipeline_id) {
                    p.archived = true;
                }
                if self.default.as_deref() == Some(pipeline_id.as_str()) {
                    self.default = new_default;
                }
            }
            PipelinesEvent::DefaultPipelineSet { pipeline_id } => {
                self.default = Some(pipeline_id);
            }
            PipelinesEvent::StageAdded {
                pipeline_id,
                stage,
                position,
            } => {
                if let Some(p) = self.pipeline_mut(&pipeline_id) {
                    let at = position.min(p.stages.len());
                    p.stages.insert(at, stage);
                }
            }
            PipelinesEvent::StageUpdated { pipeline_id, stage } => {
                if let Some(p) = self.pipeline_mut(&pipeline_id) {
                    if let Some(old) = p.stages.iter_mut().find(|s| s.stage_id == stage.stage_id) {
                        *old = stage;
                    }
                }
            }
            PipelinesEvent::StagesReordered {
                pipeline_id,
                stage_ids,
            } => {
                if let Some(p) = self.pipeline_mut(&pipeline_id) {
                    p.stages.sort_by_key(|s| {
                        stage_ids
                            .iter()
                            .position(|id| *id == s.stage_id)
                            .unwrap_or(usize::MAX)
                    });
                }
            }
            PipelinesEvent::StageRemoved {
                pipeline_id,
                stage_id,
                cards_moved_to,
            } => {
                if let Some(p) = self.pipeline_mut(&pipeline_id) {
                    p.stages.retain(|s| s.stage_id != stage_id);
                    p.removed.push((stage_id, cards_moved_to));
                }
            }
        }
    }
}

/// A stage as a card command is told about it, read from the pipelines aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageRef {
    /// The pipeline holding the stage.
    pub pipeline_id: String,
    /// The stage.
    pub stage_id: String,
    /// What the stage does to a card entering it.
    pub automation: Vec<StageAutomation>,
}

/// How one automation step went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutomationOutcome {
    /// The step.
    pub step: StageAutomation,
    /// Whether it did what it says (or found it done already).
    pub ok: bool,
    /// Why it could not, in words for the card's reader.
    pub detail: Option<String>,
}

/// Commands on a card.
pub type CardCommand = Command<CardAction>;

/// What users (and the pipeline process) do to a card.
#[derive(Debug, Clone, PartialEq)]
pub enum CardAction {
    /// Puts a conversation on a pipeline.
    Place {
        /// The conversation.
        conversation_id: String,
        /// The stage it starts in.
        stage: StageRef,
        /// Its place in the stage (0-based; `None`: at the end).
        position: Option<u32>,
    },
    /// Moves the card to a stage of its pipeline (its own stage: a new place in it).
    Move {
        /// The target stage.
        stage: StageRef,
        /// Its place in the target stage (0-based; `None`: at the end).
        position: Option<u32>,
    },
    /// Moves the card on from a removed stage (the pipeline process): nothing happens when
    /// the card has left `from_stage_id` meanwhile, so a user's later move always stands.
    Rehome {
        /// The removed stage the card was found in.
        from_stage_id: String,
        /// Where the removed stage's cards go.
        stage: StageRef,
    },
    /// Adds a label.
    AddLabel {
        /// The label.
        label: String,
    },
    /// Removes a label.
    RemoveLabel {
        /// The label.
        label: String,
    },
    /// Records how the automation of stage entry `entry` went (the pipeline process).
    RecordAutomation {
        /// The stage entry it belongs to.
        entry: u32,
        /// One outcome per step, in order.
        outcomes: Vec<AutomationOutcome>,
    },
}

/// What happened to a card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CardEvent {
    /// A conversation was put on a pipeline.
    CardPlaced {
        organization: String,
        pipeline_id: String,
        conversation_id: String,
        stage_id: String,
        position: Option<u32>,
        /// The automation the entry owes (the stage's, as it was).
        automation: Vec<StageAutomation>,
    },
    /// The card moved. Between stages it is a new stage entry (numbered `entry`, the
    /// placement being 1) owing `automation`; within its stage only its place changed.
    CardMoved {
        from_stage_id: String,
        to_stage_id: String,
        position: Option<u32>,
        entry: u32,
        automation: Vec<StageAutomation>,
    },
    /// A label was added.
    CardLabelAdded { label: String },
    /// A label was removed.
    CardLabelRemoved { label: String },
    /// The automation of stage entry `entry` ran; labels it added are the card's now.
    CardAutomationRan {
        entry: u32,
        stage_id: String,
        outcomes: Vec<AutomationOutcome>,
    },
}

impl DomainEvent for CardEvent {
    fn event_type(&self) -> String {
        match self {
            CardEvent::CardPlaced { .. } => "CardPlaced",
            CardEvent::CardMoved { .. } => "CardMoved",
            CardEvent::CardLabelAdded { .. } => "CardLabelAdded",
            CardEvent::CardLabelRemoved { .. } => "CardLabelRemoved",
            CardEvent::CardAutomationRan { .. } => "CardAutomationRan",
        }
        .into()
    }

    fn event_version(&self) -> String {
        crate::upcast::current_version(&self.event_type()).to_string()
    }
}

/// The automation a stage entry still owes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingAutomation {
    /// The entry.
    pub entry: u32,
    /// The stage entered.
    pub stage_id: String,
    /// The steps, in order.
    pub steps: Vec<StageAutomation>,
}

/// A conversation's place on one pipeline.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Card {
    organization: Option<String>,
    pipeline_id: String,
    conversation_id: String,
    stage_id: String,
    entry: u32,
    labels: BTreeSet<String>,
    pending: Option<PendingAutomation>,
}

impl Card {
    /// The organization, once placed.
    pub fn organization(&self) -> Option<&str> {
        self.organization.as_deref()
    }

    /// Its pipeline.
    pub fn pipeline_id(&self) -> &str {
        &self.pipeline_id
    }

    /// The conversation it stands for.
    pub fn conversation_id(&self) -> &str {
        &self.conversation_id
    }

    /// The stage it is in.
    pub fn stage_id(&self) -> &str {
        &self.stage_id
    }

    /// The automation its latest stage entry still owes.
    pub fn pending_automation(&self) -> Option<&PendingAutomation> {
        self.pending.as_ref()
    }

    /// Its labels.
    pub fn labels(&self) -> &BTreeSet<String> {
        &self.labels
    }

    fn require(&self, organization: &str) -> Result<(), DomainError> {
        match &self.organization {
            Some(owner) if owner == organization => Ok(()),
            _ => Err(DomainError::NotFound),
        }
    }
}

impl Aggregate for Card {
    const TYPE: &'static str = "Card";
    type Command = CardCommand;
    type Event = CardEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: CardCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        let role = command.actor.role;
        let recording = matches!(command.action, CardAction::RecordAutomation { .. });
        let permitted = if recording {
            role == Role::Service
        } else {
            matches!(role, Role::Admin | Role::Agent | Role::Service)
        };
        if !permitted {
            return Err(DomainError::NotPermitted(format!(
                "the {role} role may not change pipeline cards"
            )));
        }
        let event = match command.action {
            CardAction::Place {
                conversation_id,
                stage,
                position,
            } => {
                if self.organization.is_some() {
                    return Err(DomainError::AlreadyExists);
                }
                CardEvent::CardPlaced {
                    organization: command.organization,
                    pipeline_id: stage.pipeline_id,
                    conversation_id,
                    stage_id: stage.stage_id,
                    position,
                    automation: stage.automation,
                }
            }
            CardAction::Move { stage, position } => {
                self.require(&command.organization)?;
                if stage.pipeline_id != self.pipeline_id {
                    return Err(invalid(
                        "the stage belongs to another pipeline than the card",
                    ));
                }
                let changes_stage = stage.stage_id != self.stage_id;
                CardEvent::CardMoved {
                    from_stage_id: self.stage_id.clone(),
                    entry: if changes_stage {
                        self.entry + 1
                    } else {
                        self.entry
                    },
                    to_stage_id: stage.stage_id,
                    position,
                    automation: if changes_stage {
                        stage.automation
                    } else {
                        vec![]
                    },
                }
            }
            CardAction::Rehome {
                from_stage_id,
                stage,
            } => {
                self.require(&command.organization)?;
                if self.stage_id != from_stage_id || stage.stage_id == self.stage_id {
                    return Ok(());
                }
                if stage.pipeline_id != self.pipeline_id {
                    return Err(invalid(
                        "the stage belongs to another pipeline than the card",
                    ));
                }
                CardEvent::CardMoved {
                    from_stage_id,
                    entry: self.entry + 1,
                    to_stage_id: stage.stage_id,
                    position: None,
                    automation: stage.automation,
                }
            }
            CardAction::AddLabel { label: wanted } => {
                self.require(&command.organization)?;
                let wanted = label(&wanted)?;
                if self.labels.contains(&wanted) {
                    return Ok(());
                }
                if self.labels.len() >= MAX_LABELS {
                    return Err(invalid(format!("a card has at most {MAX_LABELS} labels")));
                }
                CardEvent::CardLabelAdded { label: wanted }
            }
            CardAction::RemoveLabel { label: unwanted } => {
                self.require(&command.organization)?;
                let unwanted = unwanted.trim().to_string();
                if !self.labels.contains(&unwanted) {
                    return Ok(());
                }
                CardEvent::CardLabelRemoved { label: unwanted }
            }
            CardAction::RecordAutomation { entry, outcomes } => {
                self.require(&command.organization)?;
                let Some(pending) = &self.pending else {
                    // Recorded already (or superseded by a later move): nothing owed.
                    return Ok(());
                };
                if pending.entry != entry {
                    return Ok(());
                }
                if outcomes.len() != pending.steps.len()
                    || outcomes
                        .iter()
                        .zip(&pending.steps)
                        .any(|(o, s)| o.step != *s)
                {
                    return Err(invalid("the outcomes do not match the stage's automation"));
                }
                CardEvent::CardAutomationRan {
                    entry,
                    stage_id: pending.stage_id.clone(),
                    outcomes,
                }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: CardEvent) {
        match event {
            CardEvent::CardPlaced {
                organization,
                pipeline_id,
                conversation_id,
                stage_id,
                automation,
                ..
            } => {
                self.organization = Some(organization);
                self.pipeline_id = pipeline_id;
                self.conversation_id = conversation_id;
                self.entry = 1;
                self.pending = owed(1, &stage_id, automation);
                self.stage_id = stage_id;
            }
            CardEvent::CardMoved {
                to_stage_id,
                entry,
                automation,
                ..
            } => {
                if entry != self.entry {
                    // A new stage entry: what the previous one still owed is superseded.
                    self.entry = entry;
                    self.pending = owed(entry, &to_stage_id, automation);
                }
                self.stage_id = to_stage_id;
            }
            CardEvent::CardLabelAdded { label } => {
                self.labels.insert(label);
            }
            CardEvent::CardLabelRemoved { label } => {
                self.labels.remove(&label);
            }
            CardEvent::CardAutomationRan { outcomes, .. } => {
                self.pending = None;
                for outcome in outcomes {
                    if outcome.ok && outcome.step.kind == AutomationKind::AddLabel {
                        self.labels.insert(outcome.step.value);
                    }
                }
            }
        }
    }
}

fn owed(entry: u32, stage_id: &str, steps: Vec<StageAutomation>) -> Option<PendingAutomation> {
    (!steps.is_empty()).then(|| PendingAutomation {
        entry,
        stage_id: stage_id.to_string(),
        steps,
    })
}

#[cfg(test)]
mod tests;
