//! The pipeline part of the schema (`CONTRACT.md`, "Pipelines"): pipelines and stages,
//! the kanban `board` with its cards, `stageCards` for the rest of a column, a card's stage
//! history, and `pipelineAnalytics`.
//!
//! A board is read in a fixed number of statements whatever its size: the stages, one page
//! per column, the labels and agents of the cards shown, and the customers' keys to open
//! their names and last messages. Text search has to open every candidate card's personal
//! data (it is sealed in the read model), so it costs in proportion to the cards that pass
//! the other filters.

use std::collections::HashMap;

use async_graphql::{ComplexObject, Context, Enum, InputObject, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use domain::pipeline::{AutomationKind, PipelineChanges, StageAutomation, StageChanges};
use domain::Role;
use projections::agents::AgentRecord;
use projections::db::parse_timestamp;
use projections::personal_data::{self, CustomerKey};
use projections::pipelines::{BoardFilter, CardRecord, PipelineRecord, StageRecord};

use super::conversations::Conversation;
use super::types::{connection, Agent, PageInfo};
use super::{caller_in, helpdesk, page_size, parse_uuid, request_id};
use crate::auth::Caller;
use crate::conversations::open_sealed;
use crate::error::{ApiError, ApiResult};
use crate::helpdesk::Helpdesk;
use crate::pipelines::NewStage;

/// Who may read pipelines and boards.
const READERS: &[Role] = &[Role::Admin, Role::Agent, Role::Analyst];
/// Who may put cards on boards and move them.
const MOVERS: &[Role] = &[Role::Admin, Role::Agent];

/// What a stage does to a card entering it.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum AutomationType {
    /// Assigns the conversation's ticket to the agent named by the value.
    AssignAgent,
    /// Adds the value as a label of the card.
    AddLabel,
    /// Sets the conversation's ticket's priority (URGENT, HIGH, MEDIUM, LOW).
    SetPriority,
}

impl From<AutomationKind> for AutomationType {
    fn from(kind: AutomationKind) -> Self {
        match kind {
            AutomationKind::AssignAgent => AutomationType::AssignAgent,
            AutomationKind::AddLabel => AutomationType::AddLabel,
            AutomationKind::SetPriority => AutomationType::SetPriority,
        }
    }
}

impl From<AutomationType> for AutomationKind {
    fn from(kind: AutomationType) -> Self {
        match kind {
            AutomationType::AssignAgent => AutomationKind::AssignAgent,
            AutomationType::AddLabel => AutomationKind::AddLabel,
            AutomationType::SetPriority => AutomationKind::SetPriority,
        }
    }
}

/// One automation step of a stage.
#[derive(SimpleObject)]
pub struct StageAutomationStep {
    /// What it does.
    #[graphql(name = "type")]
    pub kind: AutomationType,
    /// Its argument.
    pub value: String,
}

impl From<StageAutomation> for StageAutomationStep {
    fn from(step: StageAutomation) -> Self {
        Self {
            kind: step.kind.into(),
            value: step.value,
        }
    }
}

/// One automation step as given to `addStage` / `updateStage`.
#[derive(InputObject)]
#[graphql(name = "StageAutomationInput")]
pub struct StageAutomationInput {
    /// What it does.
    #[graphql(name = "type")]
    pub kind: AutomationType,
    /// An agent id, a label or a priority.
    pub value: String,
}

fn steps(input: Vec<StageAutomationInput>) -> Vec<StageAutomation> {
    input
        .into_iter()
        .map(|s| StageAutomation {
            kind: s.kind.into(),
            value: s.value,
        })
        .collect()
}

/// A column of a pipeline.
#[derive(SimpleObject)]
pub struct Stage {
    /// Opaque id.
    pub id: ID,
    /// Its pipeline.
    pub pipeline_id: ID,
    /// Its name.
    pub name: String,
    /// `#RRGGBB`.
    pub color: Option<String>,
    /// A final stage (won, lost, done).
    pub is_closed_stage: bool,
    /// 0-based place in the pipeline.
    pub position: i64,
    /// Cards in it.
    pub card_count: i64,
    /// What happens to a card entering it, in order.
    pub automation: Vec<StageAutomationStep>,
}

impl Stage {
    fn from_record(record: &StageRecord) -> ApiResult<Self> {
        Ok(Self {
            id: ID(record.id.clone()),
            pipeline_id: ID(record.pipeline_id.clone()),
            name: record.name.clone(),
            color: record.color.clone(),
            is_closed_stage: record.closed,
            position: record.position,
            card_count: record.card_count,
            automation: record
                .automation()?
                .into_iter()
                .map(StageAutomationStep::from)
                .collect(),
        })
    }
}

/// A pipeline: a kanban board of conversations.
#[derive(SimpleObject)]
pub struct Pipeline {
    /// Opaque id.
    pub id: ID,
    /// Its name.
    pub name: String,
    /// What it is for.
    pub description: Option<String>,
    /// `#RRGGBB`.
    pub color: Option<String>,
    /// The organization's default pipeline.
    pub is_default: bool,
    /// Archived: readable, nothing moves on it.
    pub archived: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Its stages, in order.
    pub stages: Vec<Stage>,
}

async fn pipeline_of(db: &projections::Database, record: PipelineRecord) -> ApiResult<Pipeline> {
    let stages = projections::pipelines::stages(db, &record.id).await?;
    Ok(Pipeline {
        id: ID(record.id),
        name: record.name,
        description: record.description,
        color: record.color,
        is_default: record.is_default,
        archived: record.archived,
        created_at: parse_timestamp(&record.created_at)?,
        stages: stages
            .iter()
            .map(Stage::from_record)
            .collect::<ApiResult<_>>()?,
    })
}

async fn load_pipeline(helpdesk: &Helpdesk, caller: &Caller, id: &str) -> ApiResult<Pipeline> {
    let record = projections::pipelines::pipeline(&helpdesk.db, &caller.organization, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("pipeline not found".into()))?;
    pipeline_of(&helpdesk.db, record).await
}

/// How one automation step went.
#[derive(SimpleObject)]
pub struct AutomationOutcome {
    /// What it does.
    #[graphql(name = "type")]
    pub kind: AutomationType,
    /// Its argument.
    pub value: String,
    /// Whether it did what it says.
    pub ok: bool,
    /// Why it could not.
    pub detail: Option<String>,
}

/// One stage entry of a card.
#[derive(SimpleObject)]
pub struct StageMove {
    /// The stage left (null for the placement).
    pub from_stage_id: Option<ID>,
    /// The stage entered.
    pub to_stage_id: ID,
    /// Who moved it ("system:pipelines" when a removed stage's cards moved on).
    pub moved_by: String,
    /// Their role.
    pub moved_by_role: String,
    /// When.
    pub moved_at: DateTime<Utc>,
    /// Seconds the card spent in the stage it left.
    pub seconds_in_previous_stage: Option<i64>,
}

/// A conversation on a pipeline.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Card {
    /// Opaque id (one card per conversation and pipeline).
    pub id: ID,
    /// Its pipeline.
    pub pipeline_id: ID,
    /// The stage it is in.
    pub stage_id: ID,
    /// The conversation.
    pub conversation_id: ID,
    /// The customer's name ("[erased]" once erased).
    pub customer_name: Option<String>,
    /// The last customer or agent message.
    pub last_message: Option<String>,
    /// When the conversation's last message came or went.
    pub last_message_at: Option<DateTime<Utc>>,
    /// The agent holding the conversation's active ticket.
    pub assignee: Option<Agent>,
    /// Its labels.
    pub labels: Vec<String>,
    /// When it entered its stage (how long it has sat there).
    pub entered_stage_at: DateTime<Utc>,
    /// When it was put on the pipeline.
    pub placed_at: DateTime<Utc>,
    /// Who put it where it is.
    pub moved_by: String,
    /// Its stage's automation has not run yet.
    pub automation_pending: bool,
    /// How the latest automation run went, step by step (empty: none ran).
    pub automation: Vec<AutomationOutcome>,
    /// When that ran.
    pub automation_ran_at: Option<DateTime<Utc>>,
    #[graphql(skip)]
    record: CardRecord,
}

#[ComplexObject]
impl Card {
    /// 0-based place in its stage.
    async fn position(&self, ctx: &Context<'_>) -> async_graphql::Result<i64> {
        Ok(
            projections::pipelines::place_in_stage(&helpdesk(ctx)?.db, &self.record)
                .await
                .map_err(ApiError::from)?,
        )
    }

    /// Every stage entry, oldest first.
    async fn history(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<StageMove>> {
        let rows = projections::pipelines::history(&helpdesk(ctx)?.db, &self.record.id)
            .await
            .map_err(ApiError::from)?;
        Ok(rows
            .into_iter()
            .map(|m| {
                Ok(StageMove {
                    from_stage_id: m.from_stage_id.map(ID),
                    to_stage_id: ID(m.to_stage_id),
                    moved_by: m.moved_by,
                    moved_by_role: m.moved_by_role,
                    moved_at: parse_timestamp(&m.moved_at)?,
                    seconds_in_previous_stage: m.seconds_in_previous,
                })
            })
            .collect::<ApiResult<Vec<_>>>()?)
    }

    /// The conversation.
    async fn conversation(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Conversation>> {
        let helpdesk = helpdesk(ctx)?;
        Ok(super::conversations::conversation_by_id(
            helpdesk,
            &self.record.organization_id,
            &self.record.conversation_id,
        )
        .await?)
    }
}

/// What cards need besides their rows: labels, agents and the customers' keys.
struct CardContext {
    labels: HashMap<String, Vec<String>>,
    agents: HashMap<String, AgentRecord>,
    keys: HashMap<String, CustomerKey>,
}

impl CardContext {
    async fn load(helpdesk: &Helpdesk, organization: &str, rows: &[CardRecord]) -> ApiResult<Self> {
        let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        let mut customers: Vec<String> =
            rows.iter().filter_map(|r| r.customer_id.clone()).collect();
        customers.sort();
        customers.dedup();
        let agents = if rows.iter().any(|r| r.assignee_id.is_some()) {
            projections::agents::agents(&helpdesk.db, organization)
                .await?
                .into_iter()
                .map(|a| (a.id.clone(), a))
                .collect()
        } else {
            HashMap::new()
        };
        Ok(Self {
            labels: projections::pipelines::labels(&helpdesk.db, &ids).await?,
            agents,
            keys: personal_data::keys(&helpdesk.db, organization, &customers).await?,
        })
    }

    fn open(&self, record: &CardRecord, sealed: Option<&str>) -> ApiResult<Option<String>> {
        match (&record.customer_id, sealed) {
            (Some(customer), Some(sealed)) => open_sealed(&self.keys, customer, sealed).map(Some),
            _ => Ok(None),
        }
    }

    fn card(&self, record: CardRecord) -> ApiResult<Card> {
        Ok(Card {
            id: ID(record.id.clone()),
            pipeline_id: ID(record.pipeline_id.clone()),
            stage_id: ID(record.stage_id.clone()),
            conversation_id: ID(record.conversation_id.clone()),
            customer_name: self.open(&record, record.customer_name.as_deref())?,
            last_message: self.open(&record, record.last_message.as_deref())?,
            last_message_at: record
                .last_message_at
                .as_deref()
                .map(parse_timestamp)
                .transpose()?,
            assignee: record
                .assignee_id
                .as_ref()
                .and_then(|a| self.agents.get(a))
                .cloned()
                .map(Agent::from),
            labels: self.labels.get(&record.id).cloned().unwrap_or_default(),
            entered_stage_at: parse_timestamp(&record.entered_at)?,
            placed_at: parse_timestamp(&record.placed_at)?,
            moved_by: record.moved_by.clone(),
            automation_pending: record.automation_pending,
            automation: record
                .automation()?
                .into_iter()
                .map(|o| AutomationOutcome {
                    kind: o.step.kind.into(),
                    value: o.step.value,
                    ok: o.ok,
                    detail: o.detail,
                })
                .collect(),
            automation_ran_at: record
                .automation_at
                .as_deref()
                .map(parse_timestamp)
                .transpose()?,
            record,
        })
    }

    /// Whether the card's customer name or last message contains `needle` (lower-case).
    fn matches(&self, record: &CardRecord, needle: &str) -> ApiResult<bool> {
        for sealed in [
            record.customer_name.as_deref(),
            record.last_message.as_deref(),
        ] {
            if let Some(text) = self.open(record, sealed)? {
                if text.to_lowercase().contains(needle) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}

async fn load_card(helpdesk: &Helpdesk, organization: &str, id: &str) -> ApiResult<Card> {
    let record = projections::pipelines::card(&helpdesk.db, organization, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("card not found".into()))?;
    let context = CardContext::load(helpdesk, organization, std::slice::from_ref(&record)).await?;
    context.card(record)
}

/// A column of the board.
#[derive(SimpleObject)]
pub struct BoardStage {
    /// The stage.
    pub stage: Stage,
    /// Cards in it that pass the filter.
    pub count: i64,
    /// The first cards, in order.
    pub cards: Vec<Card>,
    /// Whether more cards follow (`stageCards` with `after: endCursor`).
    pub has_more: bool,
    /// The cursor after the last card shown.
    pub end_cursor: Option<String>,
}

/// A pipeline as a kanban board.
#[derive(SimpleObject)]
pub struct Board {
    /// The pipeline.
    pub pipeline: Pipeline,
    /// Its columns, in stage order.
    pub stages: Vec<BoardStage>,
}

connection!(CardConnection, CardEdge, Card);

/// Which cards a board shows.
#[derive(InputObject, Default)]
pub struct BoardFilterInput {
    /// Only cards whose conversation's active ticket this agent holds.
    pub assignee_id: Option<ID>,
    /// Only cards with this label.
    pub label: Option<String>,
    /// Only cards whose customer name or last message contains this (any case).
    pub search: Option<String>,
}

/// A board filter, parsed.
struct ParsedFilter {
    rows: BoardFilter,
    search: Option<String>,
}

fn parse_filter(filter: Option<BoardFilterInput>) -> ApiResult<ParsedFilter> {
    let filter = filter.unwrap_or_default();
    let search = filter
        .search
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty());
    if search.as_ref().is_some_and(|s| s.chars().count() > 200) {
        return Err(ApiError::bad_input("search must be at most 200 characters"));
    }
    Ok(ParsedFilter {
        rows: BoardFilter {
            assignee_id: filter.assignee_id.map(|a| a.trim().to_string()),
            label: filter
                .label
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty()),
        },
        search,
    })
}

fn card_cursor(rank: i64) -> String {
    format!("r{rank}")
}

fn parse_card_cursor(cursor: &str) -> ApiResult<i64> {
    cursor
        .strip_prefix('r')
        .and_then(|r| r.parse().ok())
        .ok_or_else(|| ApiError::bad_input("malformed card cursor"))
}

/// One column's page: its cards after `after`, how many pass the filter, whether more follow.
struct ColumnPage {
    rows: Vec<CardRecord>,
    count: i64,
    more: bool,
}

/// Pages of the given columns. Without search: one statement per column (plus the counts
/// when filtered). With search: every candidate of the pipeline is opened and matched.
async fn column_pages(
    helpdesk: &Helpdesk,
    organization: &str,
    pipeline_id: &str,
    stages: &[StageRecord],
    filter: &ParsedFilter,
    after: Option<i64>,
    first: i64,
) -> ApiResult<(Vec<ColumnPage>, CardContext)> {
    let db = &helpdesk.db;
    let single = (stages.len() == 1).then(|| stages[0].id.as_str());
    let mut pages = Vec::with_capacity(stages.len());
    match &filter.search {
        None => {
            let counts = if filter.rows.is_empty() {
                None
            } else {
                Some(projections::pipelines::filtered_counts(db, pipeline_id, &filter.rows).await?)
            };
            for stage in stages {
                let mut rows = projections::pipelines::cards(
                    db,
                    pipeline_id,
                    Some(&stage.id),
                    &filter.rows,
                    after,
                    first + 1,
                )
                .await?;
                let more = rows.len() as i64 > first;
                rows.truncate(first as usize);
                let count = match &counts {
                    None => stage.card_count,
                    Some(counts) => counts.get(&stage.id).copied().unwrap_or(0),
                };
                pages.push(ColumnPage { rows, count, more });
            }
            let all: Vec<CardRecord> = pages.iter().flat_map(|p| p.rows.clone()).collect();
            let context = CardContext::load(helpdesk, organization, &all).await?;
            Ok((pages, context))
        }
        Some(needle) => {
            let candidates = projections::pipelines::cards(
                db,
                pipeline_id,
                single,
                &filter.rows,
                None,
                i64::MAX,
            )
            .await?;
            let context = CardContext::load(helpdesk, organization, &candidates).await?;
            let mut by_stage: HashMap<String, Vec<CardRecord>> = HashMap::new();
            for record in candidates {
                if context.matches(&record, needle)? {
                    by_stage
                        .entry(record.stage_id.clone())
                        .or_default()
                        .push(record);
                }
            }
            for stage in stages {
                let matching = by_stage.remove(&stage.id).unwrap_or_default();
                let count = matching.len() as i64;
                let mut rows: Vec<CardRecord> = matching
                    .into_iter()
                    .filter(|r| after.is_none_or(|a| r.rank > a))
                    .collect();
                let more = rows.len() as i64 > first;
                rows.truncate(first as usize);
                pages.push(ColumnPage { rows, count, more });
            }
            Ok((pages, context))
        }
    }
}

/// Figures of one stage over the range.
#[derive(SimpleObject)]
pub struct StageAnalytics {
    /// The stage.
    pub stage_id: ID,
    /// Its name.
    pub name: String,
    /// Whether it is a final stage.
    pub is_closed_stage: bool,
    /// Entries into the stage within the range (placements included).
    pub entered: i64,
    /// Cards in the stage now.
    pub current: i64,
    /// Average seconds spent in the stage by the entries within the range that have left it
    /// (null: none left yet).
    pub avg_seconds_in_stage: Option<f64>,
    /// Share (0..1) of the entries within the range whose next move went further along the
    /// pipeline (null for the last stage or without entries).
    pub conversion_to_next: Option<f64>,
}

/// A pipeline's figures over a time range.
#[derive(SimpleObject)]
pub struct PipelineAnalytics {
    /// The pipeline.
    pub pipeline_id: ID,
    /// Start of the range (inclusive).
    pub from: DateTime<Utc>,
    /// End of the range (exclusive).
    pub to: DateTime<Utc>,
    /// Entries into any stage within the range.
    pub entered: i64,
    /// Entries into closed stages within the range.
    pub closed: i64,
    /// Per stage, in stage order.
    pub stages: Vec<StageAnalytics>,
}

/// Pipeline queries.
#[derive(Default)]
pub struct PipelineQuery;

#[Object]
impl PipelineQuery {
    /// The organization's pipelines, oldest first (archived ones with `includeArchived`).
    async fn pipelines(
        &self,
        ctx: &Context<'_>,
        include_archived: Option<bool>,
    ) -> async_graphql::Result<Vec<Pipeline>> {
        let caller = caller_in(ctx, READERS, "read pipelines")?;
        let helpdesk = helpdesk(ctx)?;
        let records = projections::pipelines::pipelines(
            &helpdesk.db,
            &caller.organization,
            include_archived.unwrap_or(false),
        )
        .await
        .map_err(ApiError::from)?;
        let mut pipelines = Vec::with_capacity(records.len());
        for record in records {
            pipelines.push(pipeline_of(&helpdesk.db, record).await?);
        }
        Ok(pipelines)
    }

    /// One pipeline.
    async fn pipeline(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Pipeline>> {
        let caller = caller_in(ctx, READERS, "read pipelines")?;
        let id = parse_uuid(&id, "pipeline")?;
        match load_pipeline(helpdesk(ctx)?, caller, &id).await {
            Ok(p) => Ok(Some(p)),
            Err(ApiError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// A pipeline as a kanban board: every stage in order with its count and its first
    /// `first` cards (default 20, at most 100).
    async fn board(
        &self,
        ctx: &Context<'_>,
        pipeline_id: ID,
        filter: Option<BoardFilterInput>,
        first: Option<i32>,
    ) -> async_graphql::Result<Board> {
        let caller = caller_in(ctx, READERS, "read pipelines")?;
        let helpdesk = helpdesk(ctx)?;
        let pipeline_id = parse_uuid(&pipeline_id, "pipeline")?;
        let filter = parse_filter(filter)?;
        let first = page_size(first)?;
        let pipeline = load_pipeline(helpdesk, caller, &pipeline_id).await?;
        let stages = projections::pipelines::stages(&helpdesk.db, &pipeline_id)
            .await
            .map_err(ApiError::from)?;
        let (pages, context) = column_pages(
            helpdesk,
            &caller.organization,
            &pipeline_id,
            &stages,
            &filter,
            None,
            first,
        )
        .await?;
        let mut columns = Vec::with_capacity(stages.len());
        for (stage, page) in stages.iter().zip(pages) {
            let end_cursor = page.rows.last().map(|r| card_cursor(r.rank));
            columns.push(BoardStage {
                stage: Stage::from_record(stage)?,
                count: page.count,
                cards: page
                    .rows
                    .into_iter()
                    .map(|r| context.card(r))
                    .collect::<ApiResult<_>>()?,
                has_more: page.more,
                end_cursor,
            });
        }
        Ok(Board {
            pipeline,
            stages: columns,
        })
    }

    /// The cards of one column, in order, after `after` (a column's `endCursor`).
    async fn stage_cards(
        &self,
        ctx: &Context<'_>,
        stage_id: ID,
        filter: Option<BoardFilterInput>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<CardConnection> {
        let caller = caller_in(ctx, READERS, "read pipelines")?;
        let helpdesk = helpdesk(ctx)?;
        let stage_id = parse_uuid(&stage_id, "stage")?;
        let filter = parse_filter(filter)?;
        let first = page_size(first)?;
        let after = after.as_deref().map(parse_card_cursor).transpose()?;
        let stage = projections::pipelines::stage(&helpdesk.db, &caller.organization, &stage_id)
            .await
            .map_err(ApiError::from)?
            .filter(|s| !s.removed)
            .ok_or_else(|| ApiError::NotFound("stage not found".into()))?;
        let (mut pages, context) = column_pages(
            helpdesk,
            &caller.organization,
            &stage.pipeline_id,
            std::slice::from_ref(&stage),
            &filter,
            after,
            first,
        )
        .await?;
        let page = pages.pop().unwrap_or(ColumnPage {
            rows: vec![],
            count: 0,
            more: false,
        });
        let edges = page
            .rows
            .into_iter()
            .map(|r| {
                Ok(CardEdge {
                    cursor: card_cursor(r.rank),
                    node: context.card(r)?,
                })
            })
            .collect::<ApiResult<Vec<_>>>()?;
        Ok(CardConnection::new(edges, page.more, page.count))
    }

    /// One card.
    async fn card(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Card>> {
        let caller = caller_in(ctx, READERS, "read pipelines")?;
        let id = parse_uuid(&id, "card")?;
        match load_card(helpdesk(ctx)?, &caller.organization, &id).await {
            Ok(card) => Ok(Some(card)),
            Err(ApiError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// How cards flow through a pipeline's stages within `[from, to)` (default: everything
    /// up to now). Admins and analysts.
    async fn pipeline_analytics(
        &self,
        ctx: &Context<'_>,
        pipeline_id: ID,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> async_graphql::Result<PipelineAnalytics> {
        let caller = caller_in(
            ctx,
            &[Role::Admin, Role::Analyst],
            "read pipeline analytics",
        )?;
        let helpdesk = helpdesk(ctx)?;
        let pipeline_id = parse_uuid(&pipeline_id, "pipeline")?;
        let from = from.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
        let to = to.unwrap_or_else(Utc::now);
        if to <= from {
            return Err(ApiError::bad_input("to must be after from").into());
        }
        let pipeline = load_pipeline(helpdesk, caller, &pipeline_id).await?;
        let figures = projections::pipelines::analytics(&helpdesk.db, &pipeline_id, from, to)
            .await
            .map_err(ApiError::from)?;
        let names: HashMap<&str, &str> = pipeline
            .stages
            .iter()
            .map(|s| (s.id.as_str(), s.name.as_str()))
            .collect();
        let entered = figures.iter().map(|f| f.entered).sum();
        let closed = figures.iter().filter(|f| f.closed).map(|f| f.entered).sum();
        Ok(PipelineAnalytics {
            pipeline_id: ID(pipeline_id.clone()),
            from,
            to,
            entered,
            closed,
            stages: figures
                .into_iter()
                .map(|f| StageAnalytics {
                    name: names.get(f.stage_id.as_str()).unwrap_or(&"").to_string(),
                    stage_id: ID(f.stage_id),
                    is_closed_stage: f.closed,
                    entered: f.entered,
                    current: f.current,
                    avg_seconds_in_stage: f.avg_seconds_in_stage,
                    conversion_to_next: f.conversion_to_next,
                })
                .collect(),
        })
    }
}

/// `createPipeline` input.
#[derive(InputObject)]
pub struct CreatePipelineInput {
    /// Its name.
    pub name: String,
    /// What it is for.
    pub description: Option<String>,
    /// `#RRGGBB`.
    pub color: Option<String>,
}

/// `updatePipeline` input; omitted fields stay as they are.
#[derive(InputObject)]
pub struct UpdatePipelineInput {
    /// A new name.
    pub name: Option<String>,
    /// A new description (empty removes it).
    pub description: Option<String>,
    /// A new colour (empty removes it).
    pub color: Option<String>,
}

/// `addStage` input.
#[derive(InputObject)]
pub struct AddStageInput {
    /// Its name.
    pub name: String,
    /// `#RRGGBB`.
    pub color: Option<String>,
    /// A final stage (won, lost, done).
    pub is_closed_stage: Option<bool>,
    /// 0-based place (default: last).
    pub position: Option<i32>,
    /// What happens to a card entering it.
    pub automation: Option<Vec<StageAutomationInput>>,
}

/// `updateStage` input; omitted fields stay as they are.
#[derive(InputObject)]
pub struct UpdateStageInput {
    /// A new name.
    pub name: Option<String>,
    /// A new colour (empty removes it).
    pub color: Option<String>,
    /// Whether it is a final stage.
    pub is_closed_stage: Option<bool>,
    /// A new automation list (empty removes it).
    pub automation: Option<Vec<StageAutomationInput>>,
}

fn position(value: Option<i32>, what: &str) -> ApiResult<Option<u32>> {
    match value {
        None => Ok(None),
        Some(p) if p >= 0 => Ok(Some(p as u32)),
        Some(p) => Err(ApiError::bad_input(format!(
            "{what} must be 0 or more, got {p}"
        ))),
    }
}

/// Pipeline mutations.
#[derive(Default)]
pub struct PipelineMutation;

#[Object]
impl PipelineMutation {
    /// Creates a pipeline (admin); the organization's first becomes its default.
    async fn create_pipeline(
        &self,
        ctx: &Context<'_>,
        input: CreatePipelineInput,
    ) -> async_graphql::Result<Pipeline> {
        let caller = caller_in(ctx, &[Role::Admin], "manage pipelines")?;
        let helpdesk = helpdesk(ctx)?;
        let id = helpdesk
            .create_pipeline(
                caller,
                &request_id(ctx),
                input.name,
                input.description,
                input.color,
            )
            .await?;
        Ok(load_pipeline(helpdesk, caller, &id).await?)
    }

    /// Renames, describes or recolours a pipeline (admin).
    async fn update_pipeline(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdatePipelineInput,
    ) -> async_graphql::Result<Pipeline> {
        let caller = caller_in(ctx, &[Role::Admin], "manage pipelines")?;
        let helpdesk = helpdesk(ctx)?;
        let id = parse_uuid(&id, "pipeline")?;
        let changes = PipelineChanges {
            name: input.name,
            description: input.description.map(Some),
            color: input.color.map(Some),
        };
        helpdesk
            .update_pipeline(caller, &request_id(ctx), id.clone(), changes)
            .await?;
        Ok(load_pipeline(helpdesk, caller, &id).await?)
    }

    /// Archives a pipeline (admin): its board stays readable, nothing moves on it. If it was
    /// the default, the oldest active pipeline becomes the default.
    async fn archive_pipeline(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Pipeline> {
        let caller = caller_in(ctx, &[Role::Admin], "manage pipelines")?;
        let helpdesk = helpdesk(ctx)?;
        let id = parse_uuid(&id, "pipeline")?;
        helpdesk
            .archive_pipeline(caller, &request_id(ctx), id.clone())
            .await?;
        Ok(load_pipeline(helpdesk, caller, &id).await?)
    }

    /// Makes a pipeline the organization's default (admin).
    async fn set_default_pipeline(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Pipeline> {
        let caller = caller_in(ctx, &[Role::Admin], "manage pipelines")?;
        let helpdesk = helpdesk(ctx)?;
        let id = parse_uuid(&id, "pipeline")?;
        helpdesk
            .set_default_pipeline(caller, &request_id(ctx), id.clone())
            .await?;
        Ok(load_pipeline(helpdesk, caller, &id).await?)
    }

    /// Adds a stage (admin).
    async fn add_stage(
        &self,
        ctx: &Context<'_>,
        pipeline_id: ID,
        input: AddStageInput,
    ) -> async_graphql::Result<Stage> {
        let caller = caller_in(ctx, &[Role::Admin], "manage pipelines")?;
        let helpdesk = helpdesk(ctx)?;
        let pipeline_id = parse_uuid(&pipeline_id, "pipeline")?;
        let stage = NewStage {
            name: input.name,
            color: input.color,
            closed: input.is_closed_stage.unwrap_or(false),
            automation: steps(input.automation.unwrap_or_default()),
            position: position(input.position, "position")?.map(|p| p as usize),
        };
        let id = helpdesk
            .add_stage(caller, &request_id(ctx), pipeline_id, stage)
            .await?;
        Ok(load_stage(helpdesk, caller, &id).await?)
    }

    /// Changes a stage (admin).
    async fn update_stage(
        &self,
        ctx: &Context<'_>,
        stage_id: ID,
        input: UpdateStageInput,
    ) -> async_graphql::Result<Stage> {
        let caller = caller_in(ctx, &[Role::Admin], "manage pipelines")?;
        let helpdesk = helpdesk(ctx)?;
        let stage_id = parse_uuid(&stage_id, "stage")?;
        let changes = StageChanges {
            name: input.name,
            color: input.color.map(Some),
            closed: input.is_closed_stage,
            automation: input.automation.map(steps),
        };
        helpdesk
            .update_stage(caller, &request_id(ctx), stage_id.clone(), changes)
            .await?;
        Ok(load_stage(helpdesk, caller, &stage_id).await?)
    }

    /// Puts a pipeline's stages in a new order (admin); must name each stage once.
    async fn reorder_stages(
        &self,
        ctx: &Context<'_>,
        pipeline_id: ID,
        stage_ids: Vec<ID>,
    ) -> async_graphql::Result<Pipeline> {
        let caller = caller_in(ctx, &[Role::Admin], "manage pipelines")?;
        let helpdesk = helpdesk(ctx)?;
        let pipeline_id = parse_uuid(&pipeline_id, "pipeline")?;
        let stage_ids = stage_ids
            .iter()
            .map(|s| parse_uuid(s, "stage"))
            .collect::<ApiResult<Vec<_>>>()?;
        helpdesk
            .reorder_stages(caller, &request_id(ctx), pipeline_id.clone(), stage_ids)
            .await?;
        Ok(load_pipeline(helpdesk, caller, &pipeline_id).await?)
    }

    /// Removes a stage (admin). A stage holding cards needs `moveCardsTo`, another stage of
    /// the same pipeline; its cards then move there.
    async fn remove_stage(
        &self,
        ctx: &Context<'_>,
        stage_id: ID,
        move_cards_to: Option<ID>,
    ) -> async_graphql::Result<Pipeline> {
        let caller = caller_in(ctx, &[Role::Admin], "manage pipelines")?;
        let helpdesk = helpdesk(ctx)?;
        let stage_id = parse_uuid(&stage_id, "stage")?;
        let move_cards_to = move_cards_to.map(|s| parse_uuid(&s, "stage")).transpose()?;
        let pipeline_id = helpdesk
            .remove_stage(caller, &request_id(ctx), stage_id, move_cards_to)
            .await?;
        Ok(load_pipeline(helpdesk, caller, &pipeline_id).await?)
    }

    /// Puts a conversation on a pipeline (admins, agents), in `stageId` (default: the first
    /// stage) at `position` (0-based; default: last). Once per conversation and pipeline.
    async fn place_card(
        &self,
        ctx: &Context<'_>,
        pipeline_id: ID,
        conversation_id: ID,
        stage_id: Option<ID>,
        position: Option<i32>,
    ) -> async_graphql::Result<Card> {
        let caller = caller_in(ctx, MOVERS, "move pipeline cards")?;
        let helpdesk = helpdesk(ctx)?;
        let pipeline_id = parse_uuid(&pipeline_id, "pipeline")?;
        let conversation_id = parse_uuid(&conversation_id, "conversation")?;
        let stage_id = stage_id.map(|s| parse_uuid(&s, "stage")).transpose()?;
        let position = self::position(position, "position")?;
        let card_id = helpdesk
            .place_card(
                caller,
                &request_id(ctx),
                &pipeline_id,
                &conversation_id,
                stage_id.as_deref(),
                position,
            )
            .await?;
        Ok(load_card(helpdesk, &caller.organization, &card_id).await?)
    }

    /// Moves a card to a stage of its pipeline (admins, agents) at `position` (0-based;
    /// default: last). Entering another stage runs that stage's automation.
    async fn move_card(
        &self,
        ctx: &Context<'_>,
        card_id: ID,
        to_stage_id: ID,
        position: Option<i32>,
    ) -> async_graphql::Result<Card> {
        let caller = caller_in(ctx, MOVERS, "move pipeline cards")?;
        let helpdesk = helpdesk(ctx)?;
        let card_id = parse_uuid(&card_id, "card")?;
        let to_stage_id = parse_uuid(&to_stage_id, "stage")?;
        let position = self::position(position, "position")?;
        helpdesk
            .move_card(caller, &request_id(ctx), &card_id, &to_stage_id, position)
            .await?;
        Ok(load_card(helpdesk, &caller.organization, &card_id).await?)
    }

    /// Adds a label to a card (admins, agents).
    async fn label_card(
        &self,
        ctx: &Context<'_>,
        card_id: ID,
        label: String,
    ) -> async_graphql::Result<Card> {
        relabel(ctx, card_id, label, true).await
    }

    /// Removes a label from a card (admins, agents).
    async fn unlabel_card(
        &self,
        ctx: &Context<'_>,
        card_id: ID,
        label: String,
    ) -> async_graphql::Result<Card> {
        relabel(ctx, card_id, label, false).await
    }
}

async fn relabel(
    ctx: &Context<'_>,
    card_id: ID,
    label: String,
    add: bool,
) -> async_graphql::Result<Card> {
    let caller = caller_in(ctx, MOVERS, "label pipeline cards")?;
    let helpdesk = helpdesk(ctx)?;
    let card_id = parse_uuid(&card_id, "card")?;
    helpdesk
        .label_card(caller, &request_id(ctx), &card_id, label, add)
        .await?;
    Ok(load_card(helpdesk, &caller.organization, &card_id).await?)
}

async fn load_stage(helpdesk: &Helpdesk, caller: &Caller, id: &str) -> ApiResult<Stage> {
    let record = projections::pipelines::stage(&helpdesk.db, &caller.organization, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("stage not found".into()))?;
    Stage::from_record(&record)
}
