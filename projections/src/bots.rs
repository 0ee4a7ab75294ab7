//! The "bots" projection: each chatbot with its answers and active hours, as the inbound
//! flow reads them on every customer message (one row, no replay of the bot's events).

use async_trait::async_trait;
use domain::bot::{BotAnswer, BotEvent};
use domain::schedule::Schedule;
use sqlx::FromRow;

use crate::db::{timestamp, Database, DbError, Tx};
use crate::event_log::StoredEvent;
use crate::on_backend;
use crate::runner::Projection;

/// Builds `bots` from Bot events.
#[derive(Debug, Default)]
pub struct BotsProjection;

fn json<T: serde::Serialize>(value: &T) -> Result<String, DbError> {
    serde_json::to_string(value).map_err(|e| DbError::Corrupt(e.to_string()))
}

#[async_trait]
impl Projection for BotsProjection {
    fn name(&self) -> &'static str {
        "bots"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["Bot"]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["bots"]
    }

    async fn apply(&self, tx: &mut Tx, event: &StoredEvent) -> Result<(), DbError> {
        if event.aggregate_type != "Bot" {
            return Ok(());
        }
        let id = event.aggregate_id.as_str();
        let version = event.sequence;
        match event.decode::<BotEvent>()? {
            BotEvent::BotCreated {
                organization,
                name,
                confidence_threshold,
                channel_ids,
            } => {
                let channel_ids = json(&channel_ids)?;
                let schedule = json(&Schedule::default())?;
                on_backend!(tx, |t| {
                    sqlx::query(
                        "INSERT INTO bots (id, organization_id, name, confidence_threshold,
                            channel_ids, answers, schedule, created_at, version)
                         VALUES ($1, $2, $3, $4, $5, '[]', $6, $7, $8)",
                    )
                    .bind(id)
                    .bind(&organization)
                    .bind(&name)
                    .bind(confidence_threshold)
                    .bind(&channel_ids)
                    .bind(&schedule)
                    .bind(timestamp(event.occurred_at()))
                    .bind(version)
                    .execute(&mut **t)
                    .await?;
                });
            }
            BotEvent::BotAnswerAdded { answer } => {
                let mut record = load(tx, id).await?;
                record.push(answer);
                let answers = json(&record)?;
                set(tx, id, version, "answers", &answers).await?;
            }
            BotEvent::BotScheduleSet { schedule } => {
                set(tx, id, version, "schedule", &json(&schedule)?).await?;
            }
        }
        Ok(())
    }
}

async fn load(tx: &mut Tx, id: &str) -> Result<Vec<BotAnswer>, DbError> {
    let answers: String = on_backend!(tx, |t| sqlx::query_scalar(
        "SELECT answers FROM bots WHERE id = $1"
    )
    .bind(id)
    .fetch_one(&mut **t)
    .await?);
    serde_json::from_str(&answers).map_err(|e| DbError::Corrupt(e.to_string()))
}

async fn set(
    tx: &mut Tx,
    id: &str,
    version: i64,
    column: &str,
    value: &str,
) -> Result<(), DbError> {
    let sql = format!("UPDATE bots SET {column} = $3, version = $2 WHERE id = $1");
    on_backend!(tx, |t| {
        sqlx::query(&sql)
            .bind(id)
            .bind(version)
            .bind(value)
            .execute(&mut **t)
            .await?;
    });
    Ok(())
}

/// A bot as the read model holds it.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct BotRecord {
    /// The bot id.
    pub id: String,
    /// Its organization.
    pub organization_id: String,
    /// Its name.
    pub name: String,
    /// The confidence it needs before it answers.
    pub confidence_threshold: f64,
    /// JSON array of channel ids (empty: all).
    pub channel_ids: String,
    /// JSON array of answers.
    pub answers: String,
    /// JSON schedule.
    pub schedule: String,
    /// When it was created.
    pub created_at: String,
}

impl BotRecord {
    /// The channels it serves (empty: all the organization's).
    pub fn channel_ids(&self) -> Result<Vec<String>, DbError> {
        serde_json::from_str(&self.channel_ids).map_err(|e| DbError::Corrupt(e.to_string()))
    }

    /// Its answers, in the order they were added.
    pub fn answers(&self) -> Result<Vec<BotAnswer>, DbError> {
        serde_json::from_str(&self.answers).map_err(|e| DbError::Corrupt(e.to_string()))
    }

    /// Its active hours.
    pub fn schedule(&self) -> Result<Schedule, DbError> {
        serde_json::from_str(&self.schedule).map_err(|e| DbError::Corrupt(e.to_string()))
    }
}

const COLUMNS: &str =
    "id, organization_id, name, confidence_threshold, channel_ids, answers, schedule, created_at";

/// The organization's bots, oldest first.
pub async fn bots(db: &Database, organization: &str) -> Result<Vec<BotRecord>, DbError> {
    let sql =
        format!("SELECT {COLUMNS} FROM bots WHERE organization_id = $1 ORDER BY created_at, id");
    Ok(on_backend!(db, |pool| sqlx::query_as(&sql)
        .bind(organization)
        .fetch_all(pool)
        .await?))
}

/// One bot of the organization.
pub async fn bot(
    db: &Database,
    organization: &str,
    id: &str,
) -> Result<Option<BotRecord>, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM bots WHERE id = $1 AND organization_id = $2");
    Ok(on_backend!(db, |pool| sqlx::query_as(&sql)
        .bind(id)
        .bind(organization)
        .fetch_optional(pool)
        .await?))
}

/// The bot serving a channel: the oldest bot naming it, else the oldest serving every
/// channel.
pub async fn bot_for_channel(
    db: &Database,
    organization: &str,
    channel_id: &str,
) -> Result<Option<BotRecord>, DbError> {
    let all = bots(db, organization).await?;
    let mut fallback = None;
    for bot in all {
        let channels = bot.channel_ids()?;
        if channels.iter().any(|c| c == channel_id) {
            return Ok(Some(bot));
        }
        if channels.is_empty() && fallback.is_none() {
            fallback = Some(bot);
        }
    }
    Ok(fallback)
}
