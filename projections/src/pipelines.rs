//! The "pipelines" projection: pipelines and their stages, the kanban board of cards, the
//! stage history of every card, and the queries the board, the analytics and the pipeline
//! process read.
//!
//! One projection applies both the Pipelines and the Card events, so a stage's card count,
//! the cards on the board and the history always agree with each other (one transaction per
//! batch). Within a stage cards are ordered by a rank with gaps (see the migration); the
//! board shows the conversation's customer, last message and assignee read from the
//! conversations and tickets read models, with personal data still sealed (the caller opens
//! it with the customer's key).

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::pipeline::{AutomationOutcome, CardEvent, PipelinesEvent, Stage, StageAutomation};
use sqlx::FromRow;

use crate::db::{parse_timestamp, timestamp, Database, DbError, Tx};
use crate::event_log::StoredEvent;
use crate::on_backend;
use crate::runner::Projection;

/// The space left between neighbouring cards' ranks.
pub const RANK_GAP: i64 = 1 << 20;

/// Builds the pipeline tables from Pipelines and Card events.
#[derive(Debug, Default)]
pub struct PipelinesProjection;

impl PipelinesProjection {
    /// Its name.
    pub const NAME: &'static str = "pipelines";
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, DbError> {
    serde_json::to_string(value).map_err(|e| DbError::Corrupt(e.to_string()))
}

#[async_trait]
impl Projection for PipelinesProjection {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["Pipelines", "Card"]
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "pipelines",
            "pipeline_stages",
            "board_cards",
            "board_card_labels",
            "card_stage_history",
        ]
    }

    async fn apply(&self, tx: &mut Tx, event: &StoredEvent) -> Result<(), DbError> {
        match event.aggregate_type.as_str() {
            "Pipelines" => apply_pipelines(tx, event).await,
            "Card" => apply_card(tx, event).await,
            _ => Ok(()),
        }
    }
}

async fn apply_pipelines(tx: &mut Tx, event: &StoredEvent) -> Result<(), DbError> {
    let organization = event.metadata.organization.as_str();
    match event.decode::<PipelinesEvent>()? {
        PipelinesEvent::PipelineCreated {
            organization,
            pipeline_id,
            name,
            description,
            color,
            default,
        } => {
            if default {
                clear_default(tx, &organization).await?;
            }
            on_backend!(tx, |t| {
                sqlx::query(
                    "INSERT INTO pipelines (id, organization_id, name, description, color,
                        is_default, archived, created_at, created_seq)
                     VALUES ($1, $2, $3, $4, $5, $6, false, $7, $8)",
                )
                .bind(&pipeline_id)
                .bind(&organization)
                .bind(&name)
                .bind(&description)
                .bind(&color)
                .bind(default)
                .bind(timestamp(event.occurred_at()))
                .bind(event.position())
                .execute(&mut **t)
                .await?;
            });
        }
        PipelinesEvent::PipelineUpdated {
            pipeline_id,
            name,
            description,
            color,
        } => {
            on_backend!(tx, |t| {
                sqlx::query(
                    "UPDATE pipelines SET name = $2, description = $3, color = $4 WHERE id = $1",
                )
                .bind(&pipeline_id)
                .bind(&name)
                .bind(&description)
                .bind(&color)
                .execute(&mut **t)
                .await?;
            });
        }
        PipelinesEvent::PipelineArchived {
            pipeline_id,
            new_default,
        } => {
            on_backend!(tx, |t| {
                sqlx::query(
                    "UPDATE pipelines SET archived = true, is_default = false WHERE id = $1",
                )
                .bind(&pipeline_id)
                .execute(&mut **t)
                .await?;
            });
            if let Some(next) = new_default {
                set_default(tx, organization, &next).await?;
            }
        }
        PipelinesEvent::DefaultPipelineSet { pipeline_id } => {
            set_default(tx, organization, &pipeline_id).await?;
        }
        PipelinesEvent::StageAdded {
            pipeline_id,
            stage,
            position,
        } => {
            on_backend!(tx, |t| {
                sqlx::query(
                    "UPDATE pipeline_stages SET position = position + 1
                      WHERE pipeline_id = $1 AND position >= $2",
                )
                .bind(&pipeline_id)
                .bind(position as i64)
                .execute(&mut **t)
                .await?;
                sqlx::query(
                    "INSERT INTO pipeline_stages (id, pipeline_id, organization_id, name, color,
                        closed, automation, position, removed, cards_moved_to, card_count)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, false, NULL, 0)",
                )
                .bind(&stage.stage_id)
                .bind(&pipeline_id)
                .bind(organization)
                .bind(&stage.name)
                .bind(&stage.color)
                .bind(stage.closed)
                .bind(json(&stage.automation)?)
                .bind(position as i64)
                .execute(&mut **t)
                .await?;
            });
        }
        PipelinesEvent::StageUpdated { stage, .. } => {
            on_backend!(tx, |t| {
                sqlx::query(
                    "UPDATE pipeline_stages SET name = $2, color = $3, closed = $4,
                        automation = $5 WHERE id = $1",
                )
                .bind(&stage.stage_id)
                .bind(&stage.name)
                .bind(&stage.color)
                .bind(stage.closed)
                .bind(json(&stage.automation)?)
                .execute(&mut **t)
                .await?;
            });
        }
        PipelinesEvent::StagesReordered { stage_ids, .. } => {
            for (position, stage_id) in stage_ids.iter().enumerate() {
                on_backend!(tx, |t| {
                    sqlx::query("UPDATE pipeline_stages SET position = $2 WHERE id = $1")
                        .bind(stage_id)
                        .bind(position as i64)
                        .execute(&mut **t)
                        .await?;
                });
            }
        }
        PipelinesEvent::StageRemoved {
            pipeline_id,
            stage_id,
            cards_moved_to,
        } => {
            on_backend!(tx, |t| {
                let position: i64 =
                    sqlx::query_scalar("SELECT position FROM pipeline_stages WHERE id = $1")
                        .bind(&stage_id)
                        .fetch_one(&mut **t)
                        .await?;
                sqlx::query(
                    "UPDATE pipeline_stages SET removed = true, position = -1, cards_moved_to = $2
                      WHERE id = $1",
                )
                .bind(&stage_id)
                .bind(&cards_moved_to)
                .execute(&mut **t)
                .await?;
                sqlx::query(
                    "UPDATE pipeline_stages SET position = position - 1
                      WHERE pipeline_id = $1 AND position > $2",
                )
                .bind(&pipeline_id)
                .bind(position)
                .execute(&mut **t)
                .await?;
            });
        }
    }
    Ok(())
}

async fn clear_default(tx: &mut Tx, organization: &str) -> Result<(), DbError> {
    on_backend!(tx, |t| {
        sqlx::query(
            "UPDATE pipelines SET is_default = false WHERE organization_id = $1 AND is_default",
        )
        .bind(organization)
        .execute(&mut **t)
        .await?;
    });
    Ok(())
}

async fn set_default(tx: &mut Tx, organization: &str, pipeline_id: &str) -> Result<(), DbError> {
    clear_default(tx, organization).await?;
    on_backend!(tx, |t| {
        sqlx::query("UPDATE pipelines SET is_default = true WHERE id = $1")
            .bind(pipeline_id)
            .execute(&mut **t)
            .await?;
    });
    Ok(())
}

async fn apply_card(tx: &mut Tx, event: &StoredEvent) -> Result<(), DbError> {
    let card_id = event.aggregate_id.as_str();
    let at = timestamp(event.occurred_at());
    let actor = &event.metadata.actor;
    match event.decode::<CardEvent>()? {
        CardEvent::CardPlaced {
            organization,
            pipeline_id,
            conversation_id,
            stage_id,
            position,
            automation,
        } => {
            let rank = rank_for(tx, &pipeline_id, &stage_id, card_id, position).await?;
            on_backend!(tx, |t| {
                sqlx::query(
                    "INSERT INTO board_cards (id, organization_id, pipeline_id, stage_id,
                        conversation_id, rank, entry, entered_at, placed_at, moved_by,
                        automation_pending, automation, automation_at, version)
                     VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7, $8, $9, NULL, NULL, $10)",
                )
                .bind(card_id)
                .bind(&organization)
                .bind(&pipeline_id)
                .bind(&stage_id)
                .bind(&conversation_id)
                .bind(rank)
                .bind(&at)
                .bind(&actor.id)
                .bind(!automation.is_empty())
                .bind(event.sequence)
                .execute(&mut **t)
                .await?;
                sqlx::query(
                    "INSERT INTO card_stage_history (card_id, entry, organization_id, pipeline_id,
                        from_stage_id, to_stage_id, moved_by, moved_by_role, moved_at,
                        seconds_in_previous)
                     VALUES ($1, 1, $2, $3, NULL, $4, $5, $6, $7, NULL)",
                )
                .bind(card_id)
                .bind(&organization)
                .bind(&pipeline_id)
                .bind(&stage_id)
                .bind(&actor.id)
                .bind(actor.role.as_str())
                .bind(&at)
                .execute(&mut **t)
                .await?;
            });
            count_card(tx, &stage_id, 1).await?;
        }
        CardEvent::CardMoved {
            from_stage_id,
            to_stage_id,
            position,
            entry,
            automation,
        } => {
            let (organization, pipeline_id, entered_at): (String, String, String) =
                on_backend!(tx, |t| sqlx::query_as(
                    "SELECT organization_id, pipeline_id, entered_at FROM board_cards
                      WHERE id = $1"
                )
                .bind(card_id)
                .fetch_one(&mut **t)
                .await?);
            let rank = rank_for(tx, &pipeline_id, &to_stage_id, card_id, position).await?;
            if from_stage_id == to_stage_id {
                on_backend!(tx, |t| {
                    sqlx::query(
                        "UPDATE board_cards SET rank = $2, moved_by = $3, version = $4
                          WHERE id = $1",
                    )
                    .bind(card_id)
                    .bind(rank)
                    .bind(&actor.id)
                    .bind(event.sequence)
                    .execute(&mut **t)
                    .await?;
                });
                return Ok(());
            }
            let stayed = (event.occurred_at() - parse_timestamp(&entered_at)?)
                .num_seconds()
                .max(0);
            on_backend!(tx, |t| {
                sqlx::query(
                    "UPDATE board_cards SET stage_id = $2, rank = $3, entry = $4, entered_at = $5,
                        moved_by = $6, automation_pending = $7, version = $8
                      WHERE id = $1",
                )
                .bind(card_id)
                .bind(&to_stage_id)
                .bind(rank)
                .bind(entry as i64)
                .bind(&at)
                .bind(&actor.id)
                .bind(!automation.is_empty())
                .bind(event.sequence)
                .execute(&mut **t)
                .await?;
                sqlx::query(
                    "INSERT INTO card_stage_history (card_id, entry, organization_id, pipeline_id,
                        from_stage_id, to_stage_id, moved_by, moved_by_role, moved_at,
                        seconds_in_previous)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(card_id)
                .bind(entry as i64)
                .bind(&organization)
                .bind(&pipeline_id)
                .bind(&from_stage_id)
                .bind(&to_stage_id)
                .bind(&actor.id)
                .bind(actor.role.as_str())
                .bind(&at)
                .bind(stayed)
                .execute(&mut **t)
                .await?;
            });
            count_card(tx, &from_stage_id, -1).await?;
            count_card(tx, &to_stage_id, 1).await?;
        }
        CardEvent::CardLabelAdded { label } => add_label(tx, card_id, &label).await?,
        CardEvent::CardLabelRemoved { label } => {
            on_backend!(tx, |t| {
                sqlx::query("DELETE FROM board_card_labels WHERE card_id = $1 AND label = $2")
                    .bind(card_id)
                    .bind(&label)
                    .execute(&mut **t)
                    .await?;
            });
        }
        CardEvent::CardAutomationRan { outcomes, .. } => {
            on_backend!(tx, |t| {
                sqlx::query(
                    "UPDATE board_cards SET automation_pending = false, automation = $2,
                        automation_at = $3, version = $4
                      WHERE id = $1",
                )
                .bind(card_id)
                .bind(json(&outcomes)?)
                .bind(&at)
                .bind(event.sequence)
                .execute(&mut **t)
                .await?;
            });
            for outcome in &outcomes {
                if outcome.ok && outcome.step.kind == domain::pipeline::AutomationKind::AddLabel {
                    add_label(tx, card_id, &outcome.step.value).await?;
                }
            }
        }
    }
    Ok(())
}

async fn add_label(tx: &mut Tx, card_id: &str, label: &str) -> Result<(), DbError> {
    on_backend!(tx, |t| {
        sqlx::query(
            "INSERT INTO board_card_labels (card_id, pipeline_id, label)
             SELECT id, pipeline_id, $2 FROM board_cards WHERE id = $1
             ON CONFLICT (card_id, label) DO NOTHING",
        )
        .bind(card_id)
        .bind(label)
        .execute(&mut **t)
        .await?;
    });
    Ok(())
}

async fn count_card(tx: &mut Tx, stage_id: &str, delta: i64) -> Result<(), DbError> {
    on_backend!(tx, |t| {
        sqlx::query("UPDATE pipeline_stages SET card_count = card_count + $2 WHERE id = $1")
            .bind(stage_id)
            .bind(delta)
            .execute(&mut **t)
            .await?;
    });
    Ok(())
}

/// The rank that puts `card_id` at `position` (0-based, among the stage's other cards;
/// `None` or past the end: last).
async fn rank_for(
    tx: &mut Tx,
    pipeline_id: &str,
    stage_id: &str,
    card_id: &str,
    position: Option<u32>,
) -> Result<i64, DbError> {
    // At most two passes: a renumbering always leaves room.
    for _ in 0..2 {
        let neighbours = match position {
            None => None,
            Some(0) => Some(ranks(tx, pipeline_id, stage_id, card_id, 0, 1).await?),
            Some(p) => Some(ranks(tx, pipeline_id, stage_id, card_id, i64::from(p) - 1, 2).await?),
        };
        let rank = match (position, neighbours.as_deref()) {
            (Some(0), Some([next])) => Some(next - RANK_GAP),
            (Some(0), Some([])) => Some(RANK_GAP),
            (Some(_), Some([before, after])) => {
                (after - before >= 2).then_some(before + (after - before) / 2)
            }
            (Some(_), Some([before])) => Some(before + RANK_GAP),
            _ => {
                let last: Option<i64> = on_backend!(tx, |t| sqlx::query_scalar(
                    "SELECT MAX(rank) FROM board_cards
                      WHERE pipeline_id = $1 AND stage_id = $2 AND id <> $3"
                )
                .bind(pipeline_id)
                .bind(stage_id)
                .bind(card_id)
                .fetch_one(&mut **t)
                .await?);
                Some(last.unwrap_or(0) + RANK_GAP)
            }
        };
        if let Some(rank) = rank {
            return Ok(rank);
        }
        renumber(tx, pipeline_id, stage_id).await?;
    }
    Err(DbError::Corrupt(format!(
        "no rank left in stage {stage_id} after renumbering"
    )))
}

async fn ranks(
    tx: &mut Tx,
    pipeline_id: &str,
    stage_id: &str,
    card_id: &str,
    offset: i64,
    limit: i64,
) -> Result<Vec<i64>, DbError> {
    Ok(on_backend!(tx, |t| sqlx::query_scalar(
        "SELECT rank FROM board_cards
          WHERE pipeline_id = $1 AND stage_id = $2 AND id <> $3
          ORDER BY rank, id LIMIT $5 OFFSET $4"
    )
    .bind(pipeline_id)
    .bind(stage_id)
    .bind(card_id)
    .bind(offset)
    .bind(limit)
    .fetch_all(&mut **t)
    .await?))
}

/// Spreads a stage's ranks out again, keeping the order: rare (a gap of 2^20 takes twenty
/// moves into the same spot to run out), deterministic, and all in the batch's transaction.
async fn renumber(tx: &mut Tx, pipeline_id: &str, stage_id: &str) -> Result<(), DbError> {
    let ids: Vec<String> = on_backend!(tx, |t| sqlx::query_scalar(
        "SELECT id FROM board_cards WHERE pipeline_id = $1 AND stage_id = $2 ORDER BY rank, id"
    )
    .bind(pipeline_id)
    .bind(stage_id)
    .fetch_all(&mut **t)
    .await?);
    for (i, id) in ids.iter().enumerate() {
        on_backend!(tx, |t| {
            sqlx::query("UPDATE board_cards SET rank = $2 WHERE id = $1")
                .bind(id)
                .bind((i as i64 + 1) * RANK_GAP)
                .execute(&mut **t)
                .await?;
        });
    }
    Ok(())
}

/// A pipeline as the read model holds it.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct PipelineRecord {
    /// Its id.
    pub id: String,
    /// Its organization.
    pub organization_id: String,
    /// Its name.
    pub name: String,
    /// What it is for.
    pub description: Option<String>,
    /// `#RRGGBB`.
    pub color: Option<String>,
    /// The organization's default pipeline.
    pub is_default: bool,
    /// Archived: frozen.
    pub archived: bool,
    /// When it was created.
    pub created_at: String,
}

/// A stage as the read model holds it.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct StageRecord {
    /// Its id.
    pub id: String,
    /// Its pipeline.
    pub pipeline_id: String,
    /// Its name.
    pub name: String,
    /// `#RRGGBB`.
    pub color: Option<String>,
    /// A final stage.
    pub closed: bool,
    /// JSON automation steps.
    pub automation: String,
    /// 0-based place; -1 once removed.
    pub position: i64,
    /// Removed.
    pub removed: bool,
    /// Cards it holds.
    pub card_count: i64,
}

impl StageRecord {
    /// The automation steps.
    pub fn automation(&self) -> Result<Vec<StageAutomation>, DbError> {
        serde_json::from_str(&self.automation).map_err(|e| DbError::Corrupt(e.to_string()))
    }

    /// The stage's definition.
    pub fn definition(&self) -> Result<Stage, DbError> {
        Ok(Stage {
            stage_id: self.id.clone(),
            name: self.name.clone(),
            color: self.color.clone(),
            closed: self.closed,
            automation: self.automation()?,
        })
    }
}

const PIPELINE_COLUMNS: &str =
    "id, organization_id, name, description, color, is_default, archived, created_at";
const STAGE_COLUMNS: &str =
    "id, pipeline_id, name, color, closed, automation, position, removed, card_count";

/// The organization's pipelines, oldest first (archived ones only when asked).
pub async fn pipelines(
    db: &Database,
    organization: &str,
    include_archived: bool,
) -> Result<Vec<PipelineRecord>, DbError> {
    let sql = format!(
        "SELECT {PIPELINE_COLUMNS} FROM pipelines
          WHERE organization_id = $1 AND ($2 OR NOT archived) ORDER BY created_seq"
    );
    Ok(on_backend!(db, |pool| sqlx::query_as(&sql)
        .bind(organization)
        .bind(include_archived)
        .fetch_all(pool)
        .await?))
}

/// One pipeline of the organization.
pub async fn pipeline(
    db: &Database,
    organization: &str,
    id: &str,
) -> Result<Option<PipelineRecord>, DbError> {
    let sql =
        format!("SELECT {PIPELINE_COLUMNS} FROM pipelines WHERE id = $1 AND organization_id = $2");
    Ok(on_backend!(db, |pool| sqlx::query_as(&sql)
        .bind(id)
        .bind(organization)
        .fetch_optional(pool)
        .await?))
}

/// A pipeline's live stages, in order.
pub async fn stages(db: &Database, pipeline_id: &str) -> Result<Vec<StageRecord>, DbError> {
    let sql = format!(
        "SELECT {STAGE_COLUMNS} FROM pipeline_stages
          WHERE pipeline_id = $1 AND NOT removed ORDER BY position"
    );
    Ok(on_backend!(db, |pool| sqlx::query_as(&sql)
        .bind(pipeline_id)
        .fetch_all(pool)
        .await?))
}

/// One stage of the organization (live or removed).
pub async fn stage(
    db: &Database,
    organization: &str,
    id: &str,
) -> Result<Option<StageRecord>, DbError> {
    let sql = format!(
        "SELECT {STAGE_COLUMNS} FROM pipeline_stages WHERE id = $1 AND organization_id = $2"
    );
    Ok(on_backend!(db, |pool| sqlx::query_as(&sql)
        .bind(id)
        .bind(organization)
        .fetch_optional(pool)
        .await?))
}

/// Which cards a board shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoardFilter {
    /// Only cards whose conversation's ticket this agent holds.
    pub assignee_id: Option<String>,
    /// Only cards with this label.
    pub label: Option<String>,
}

impl BoardFilter {
    /// Whether it keeps every card.
    pub fn is_empty(&self) -> bool {
        self.assignee_id.is_none() && self.label.is_none()
    }
}

/// A card as the board shows it (personal data still sealed).
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct CardRecord {
    /// Its id.
    pub id: String,
    /// Its organization.
    pub organization_id: String,
    /// Its pipeline.
    pub pipeline_id: String,
    /// Its stage.
    pub stage_id: String,
    /// The conversation.
    pub conversation_id: String,
    /// Its order in the stage.
    pub rank: i64,
    /// When it entered its stage.
    pub entered_at: String,
    /// When it was placed on the pipeline.
    pub placed_at: String,
    /// Who put it where it is.
    pub moved_by: String,
    /// Its stage entry still owes automation.
    pub automation_pending: bool,
    /// JSON outcomes of the latest automation run.
    pub automation: Option<String>,
    /// When that ran.
    pub automation_at: Option<String>,
    /// The conversation's customer.
    pub customer_id: Option<String>,
    /// Sealed display name.
    pub customer_name: Option<String>,
    /// The conversation's ticket.
    pub ticket_id: Option<String>,
    /// The agent holding that ticket, while it is active.
    pub assignee_id: Option<String>,
    /// Sealed text of the last customer or agent message.
    pub last_message: Option<String>,
    /// When the last message came or went.
    pub last_message_at: Option<String>,
}

impl CardRecord {
    /// The latest automation run's outcomes.
    pub fn automation(&self) -> Result<Vec<AutomationOutcome>, DbError> {
        match &self.automation {
            None => Ok(vec![]),
            Some(text) => serde_json::from_str(text).map_err(|e| DbError::Corrupt(e.to_string())),
        }
    }
}

const CARD_SELECT: &str = "SELECT b.id, b.organization_id, b.pipeline_id, b.stage_id,
        b.conversation_id, b.rank, b.entered_at, b.placed_at, b.moved_by,
        b.automation_pending, b.automation, b.automation_at,
        c.customer_id, c.customer_name, c.ticket_id,
        CASE WHEN t.status IN ('ASSIGNED', 'IN_PROGRESS') THEN t.assignee_id END AS assignee_id,
        (SELECT m.text FROM conversation_messages m
          WHERE m.conversation_id = b.conversation_id AND m.kind <> 'SYSTEM'
          ORDER BY m.position DESC LIMIT 1) AS last_message,
        c.last_message_at
   FROM board_cards b
   LEFT JOIN conversations c ON c.id = b.conversation_id
   LEFT JOIN tickets t ON t.id = c.ticket_id";

/// The filter's conditions; parameters `$2` (assignee) and `$3` (label).
const FILTERED: &str = "(CAST($2 AS text) IS NULL
         OR (t.assignee_id = $2 AND t.status IN ('ASSIGNED', 'IN_PROGRESS')))
    AND (CAST($3 AS text) IS NULL
         OR EXISTS (SELECT 1 FROM board_card_labels l WHERE l.card_id = b.id AND l.label = $3))";

/// The cards of a stage (`None`: of every stage) that pass `filter`, in board order (stage
/// by stage as the rows come, by rank within a stage), after rank `after`, at most `limit`.
pub async fn cards(
    db: &Database,
    pipeline_id: &str,
    stage_id: Option<&str>,
    filter: &BoardFilter,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<CardRecord>, DbError> {
    // Two statements rather than an `IS NULL OR` on the stage, so that a column's page walks
    // the (pipeline, stage, rank) index instead of sorting the whole pipeline.
    let sql = match stage_id {
        Some(_) => format!(
            "{CARD_SELECT}
              WHERE b.pipeline_id = $1 AND b.stage_id = $4 AND b.rank > $5 AND {FILTERED}
              ORDER BY b.rank, b.id LIMIT $6"
        ),
        None => format!(
            "{CARD_SELECT}
              WHERE b.pipeline_id = $1 AND b.rank > $5 AND {FILTERED}
                AND CAST($4 AS text) IS NULL
              ORDER BY b.stage_id, b.rank, b.id LIMIT $6"
        ),
    };
    Ok(on_backend!(db, |pool| sqlx::query_as(&sql)
        .bind(pipeline_id)
        .bind(&filter.assignee_id)
        .bind(&filter.label)
        .bind(stage_id)
        .bind(after.unwrap_or(i64::MIN))
        .bind(limit)
        .fetch_all(pool)
        .await?))
}

/// How many cards of each stage pass `filter`.
pub async fn filtered_counts(
    db: &Database,
    pipeline_id: &str,
    filter: &BoardFilter,
) -> Result<HashMap<String, i64>, DbError> {
    let sql = format!(
        "SELECT b.stage_id, COUNT(*) FROM board_cards b
           LEFT JOIN conversations c ON c.id = b.conversation_id
           LEFT JOIN tickets t ON t.id = c.ticket_id
          WHERE b.pipeline_id = $1 AND {FILTERED}
          GROUP BY b.stage_id"
    );
    let rows: Vec<(String, i64)> = on_backend!(db, |pool| sqlx::query_as(&sql)
        .bind(pipeline_id)
        .bind(&filter.assignee_id)
        .bind(&filter.label)
        .fetch_all(pool)
        .await?);
    Ok(rows.into_iter().collect())
}

/// One card of the organization.
pub async fn card(
    db: &Database,
    organization: &str,
    id: &str,
) -> Result<Option<CardRecord>, DbError> {
    let sql = format!("{CARD_SELECT} WHERE b.id = $1 AND b.organization_id = $2");
    Ok(on_backend!(db, |pool| sqlx::query_as(&sql)
        .bind(id)
        .bind(organization)
        .fetch_optional(pool)
        .await?))
}

/// The cards of a conversation, one per pipeline it is on.
pub async fn cards_of_conversation(
    db: &Database,
    organization: &str,
    conversation_id: &str,
) -> Result<Vec<CardRecord>, DbError> {
    let sql = format!(
        "{CARD_SELECT} WHERE b.conversation_id = $1 AND b.organization_id = $2 ORDER BY b.id"
    );
    Ok(on_backend!(db, |pool| sqlx::query_as(&sql)
        .bind(conversation_id)
        .bind(organization)
        .fetch_all(pool)
        .await?))
}

/// The 0-based place of a card in its stage.
pub async fn place_in_stage(db: &Database, card: &CardRecord) -> Result<i64, DbError> {
    Ok(on_backend!(db, |pool| sqlx::query_scalar(
        "SELECT COUNT(*) FROM board_cards
          WHERE pipeline_id = $1 AND stage_id = $2 AND (rank < $3 OR (rank = $3 AND id < $4))"
    )
    .bind(&card.pipeline_id)
    .bind(&card.stage_id)
    .bind(card.rank)
    .bind(&card.id)
    .fetch_one(pool)
    .await?))
}

/// The labels of these cards.
pub async fn labels(
    db: &Database,
    card_ids: &[String],
) -> Result<HashMap<String, Vec<String>>, DbError> {
    let mut found: HashMap<String, Vec<String>> = HashMap::new();
    for chunk in card_ids.chunks(200) {
        let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT card_id, label FROM board_card_labels WHERE card_id IN ({})
              ORDER BY card_id, label",
            placeholders.join(", ")
        );
        let rows: Vec<(String, String)> = on_backend!(db, |pool| {
            let mut query = sqlx::query_as(&sql);
            for id in chunk {
                query = query.bind(id);
            }
            query.fetch_all(pool).await?
        });
        for (card, label) in rows {
            found.entry(card).or_default().push(label);
        }
    }
    Ok(found)
}

/// One stage entry of a card.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct StageMove {
    /// The card.
    pub card_id: String,
    /// 1 for the placement, then one per move between stages.
    pub entry: i64,
    /// The stage left (none for the placement).
    pub from_stage_id: Option<String>,
    /// The stage entered.
    pub to_stage_id: String,
    /// Who moved it.
    pub moved_by: String,
    /// Their role.
    pub moved_by_role: String,
    /// When.
    pub moved_at: String,
    /// Seconds spent in the stage left.
    pub seconds_in_previous: Option<i64>,
}

/// A card's stage entries, oldest first.
pub async fn history(db: &Database, card_id: &str) -> Result<Vec<StageMove>, DbError> {
    Ok(on_backend!(db, |pool| sqlx::query_as(
        "SELECT card_id, entry, from_stage_id, to_stage_id, moved_by, moved_by_role, moved_at,
                seconds_in_previous
           FROM card_stage_history WHERE card_id = $1 ORDER BY entry"
    )
    .bind(card_id)
    .fetch_all(pool)
    .await?))
}

/// Figures of one stage over a time range.
#[derive(Debug, Clone, PartialEq)]
pub struct StageFigures {
    /// The stage.
    pub stage_id: String,
    /// Stage entries within the range (placements included).
    pub entered: i64,
    /// Cards in the stage now.
    pub current: i64,
    /// Average seconds in the stage of the entries within the range that have left it.
    pub avg_seconds_in_stage: Option<f64>,
    /// Share of the entries within the range whose next move went further along the
    /// pipeline; `None` for the last stage or without entries.
    pub conversion_to_next: Option<f64>,
    /// Whether it is a final stage.
    pub closed: bool,
}

/// The analytics of a pipeline's live stages (in order) over `[from, to)`.
pub async fn analytics(
    db: &Database,
    pipeline_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<StageFigures>, DbError> {
    let live = stages(db, pipeline_id).await?;
    let rows: Vec<(String, i64, i64, Option<i64>, i64)> = on_backend!(db, |pool| {
        sqlx::query_as(
            "SELECT h.to_stage_id, COUNT(*),
                    SUM(CASE WHEN ns.position > s.position THEN 1 ELSE 0 END),
                    CAST(SUM(n.seconds_in_previous) AS BIGINT), COUNT(n.card_id)
               FROM card_stage_history h
               JOIN pipeline_stages s ON s.id = h.to_stage_id
               LEFT JOIN card_stage_history n ON n.card_id = h.card_id AND n.entry = h.entry + 1
               LEFT JOIN pipeline_stages ns ON ns.id = n.to_stage_id
              WHERE h.pipeline_id = $1 AND h.moved_at >= $2 AND h.moved_at < $3
              GROUP BY h.to_stage_id",
        )
        .bind(pipeline_id)
        .bind(timestamp(from))
        .bind(timestamp(to))
        .fetch_all(pool)
        .await?
    });
    let by_stage: HashMap<String, (i64, i64, Option<i64>, i64)> = rows
        .into_iter()
        .map(|(stage, entered, forward, seconds, left)| (stage, (entered, forward, seconds, left)))
        .collect();
    let last = live.len().saturating_sub(1);
    Ok(live
        .iter()
        .enumerate()
        .map(|(i, stage)| {
            let (entered, forward, seconds, left) =
                by_stage.get(&stage.id).cloned().unwrap_or((0, 0, None, 0));
            StageFigures {
                stage_id: stage.id.clone(),
                entered,
                current: stage.card_count,
                avg_seconds_in_stage: (left > 0).then(|| seconds.unwrap_or(0) as f64 / left as f64),
                conversion_to_next: (i < last && entered > 0)
                    .then(|| forward as f64 / entered as f64),
                closed: stage.closed,
            }
        })
        .collect())
}

/// A card whose stage entry still owes automation.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct OwedAutomation {
    /// The card.
    pub id: String,
    /// Its organization.
    pub organization_id: String,
}

/// Cards whose automation has not run yet, oldest first.
pub async fn owed_automation(db: &Database, limit: i64) -> Result<Vec<OwedAutomation>, DbError> {
    Ok(on_backend!(db, |pool| sqlx::query_as(
        "SELECT id, organization_id FROM board_cards WHERE automation_pending
          ORDER BY entered_at, id LIMIT $1"
    )
    .bind(limit)
    .fetch_all(pool)
    .await?))
}

/// Cards left in a removed stage (they arrived as it was removed).
pub async fn stranded_cards(db: &Database, limit: i64) -> Result<Vec<OwedAutomation>, DbError> {
    Ok(on_backend!(db, |pool| sqlx::query_as(
        "SELECT b.id, b.organization_id FROM board_cards b
           JOIN pipeline_stages s ON s.id = b.stage_id
          WHERE s.removed ORDER BY b.id LIMIT $1"
    )
    .bind(limit)
    .fetch_all(pool)
    .await?))
}
