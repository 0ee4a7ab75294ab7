//! Tamper evidence: one SHA-256 chain per organization over its events in commit order.
//!
//! Link `n` of an organization is `SHA-256(link n-1 || canonical(event n))`, where event
//! `n` is the organization's `n`-th event in the global commit order and link 0 is 32 zero
//! bytes. The canonical encoding ([`link_hash`]) takes every field the helpdesk reads —
//! position, aggregate type and id, sequence, event type and version, the payload as
//! stored (before upcasting, so a new upcaster never breaks the chain) and the metadata —
//! each length-prefixed, JSON with sorted keys and no spaces, so the same event always
//! encodes to the same bytes on either backend.
//!
//! **Per organization**, not over the global log: an organization's admin verifies their
//! own history without learning anything about other tenants' events, and erasing one
//! customer (brief rule 11) touches no event anyway.
//!
//! The chain is written by the `audit_chain` runner ([`AuditChainProjection`]), a
//! projection under the same lease, checkpoint and transaction rules as the read models,
//! moments after the events commit (PostgreSQL cannot know an event's commit-order
//! neighbour before commit). Unlike the read models it is **never rebuilt**: rebuilding it
//! would bless whatever the log holds now. [`verify`] recomputes the chain from the log and
//! names the first position where log and chain disagree: an event changed (UPDATE), gone
//! (DELETE) or moved (a changed position or commit order). Events written but not yet
//! chained are reported as pending. Whoever can rewrite both the log *and* the chain from
//! some point on could forge a consistent history; the head hash [`verify`] reports is
//! what to record outside the database (a ticket, a signed e-mail) to rule that out.

use async_trait::async_trait;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};

use crate::bulk::{Kind, Rows};
use crate::db::{Backend, Database, DbError, Tx};
use crate::event_log::{self, Checkpoint, LogFilter, StoredEvent};
use crate::on_backend;
use crate::runner::Projection;

/// The runner's name (its checkpoint row and its lease).
pub const AUDIT_CHAIN: &str = "audit_chain";

/// Link 0 of every chain.
pub const GENESIS: [u8; 32] = [0; 32];

/// Appends each event to its organization's chain.
#[derive(Debug, Default)]
pub struct AuditChainProjection;

#[async_trait]
impl Projection for AuditChainProjection {
    fn name(&self) -> &'static str {
        AUDIT_CHAIN
    }

    /// None: commands never wait for the chain (it is not a read model).
    fn aggregate_types(&self) -> &'static [&'static str] {
        &[]
    }

    fn consumes_every_event(&self) -> bool {
        true
    }

    fn tables(&self) -> &'static [&'static str] {
        &["audit_chain"]
    }

    async fn apply(&self, tx: &mut Tx, event: &StoredEvent) -> Result<(), DbError> {
        self.apply_batch(tx, &[event]).await
    }

    /// Reads the last link of each organization in the batch once, chains the batch's
    /// events in memory, and inserts their links in one statement.
    async fn apply_batch(&self, tx: &mut Tx, events: &[&StoredEvent]) -> Result<(), DbError> {
        let mut heads: HashMap<&str, (i64, [u8; 32])> = HashMap::new();
        let mut links = Rows::new("audit_chain", LINK_ROW);
        for event in events {
            let organization = event.metadata.organization.as_str();
            let (link, previous) = match heads.get(organization) {
                Some(head) => *head,
                None => last_link(tx, organization).await?,
            };
            let hash = link_hash(&previous, event)?;
            links.push([
                organization.into(),
                (link + 1).into(),
                event.position().into(),
                hex::encode(hash).into(),
            ])?;
            heads.insert(organization, (link + 1, hash));
        }
        links.insert(tx, "").await
    }
}

const LINK_ROW: &[(&str, Kind)] = &[
    ("organization_id", Kind::Text),
    ("link", Kind::Int),
    ("position", Kind::Int),
    ("hash", Kind::Text),
];

/// The organization's last stored link and hash (0 and [`GENESIS`] before its first event).
async fn last_link(tx: &mut Tx, organization: &str) -> Result<(i64, [u8; 32]), DbError> {
    let last: Option<(i64, String)> = on_backend!(tx, |t| sqlx::query_as(
        "SELECT link, hash FROM audit_chain WHERE organization_id = $1
          ORDER BY link DESC LIMIT 1"
    )
    .bind(organization)
    .fetch_optional(&mut **t)
    .await?);
    match last {
        Some((link, hash)) => Ok((link, parse_hash(&hash)?)),
        None => Ok((0, GENESIS)),
    }
}

fn parse_hash(text: &str) -> Result<[u8; 32], DbError> {
    let bytes = hex::decode(text).map_err(|e| DbError::Corrupt(format!("chain hash: {e}")))?;
    bytes
        .try_into()
        .map_err(|_| DbError::Corrupt("chain hash is not 32 bytes".into()))
}

/// The link after `previous` for `event`, over its canonical encoding (an error only when
/// the stored payload cannot be read as a JSON value).
pub fn link_hash(previous: &[u8; 32], event: &StoredEvent) -> Result<[u8; 32], DbError> {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    field(event.metadata.organization.as_bytes());
    field(event.position().to_string().as_bytes());
    field(event.aggregate_type.as_bytes());
    field(event.aggregate_id.as_bytes());
    field(event.sequence.to_string().as_bytes());
    field(event.event_type.as_bytes());
    field(event.event_version.as_bytes());
    let mut json = Vec::new();
    canonical_json(&event.value()?, &mut json);
    field(&json);
    json.clear();
    let metadata: serde_json::Map<String, Value> = event
        .metadata
        .to_map()
        .into_iter()
        .map(|(key, value)| (key, Value::String(value)))
        .collect();
    canonical_json(&Value::Object(metadata), &mut json);
    field(&json);
    Ok(hasher.finalize().into())
}

/// JSON with object keys sorted and no whitespace, whatever order the value holds them in.
fn canonical_json(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // Serializing a string cannot fail.
                serde_json::to_writer(&mut *out, key).expect("a JSON string");
                out.push(b':');
                canonical_json(value, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_json(item, out);
            }
            out.push(b']');
        }
        scalar => serde_json::to_writer(&mut *out, scalar).expect("a JSON scalar"),
    }
}

/// What [`verify`] found for one organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// The organization verified.
    pub organization: String,
    /// No disagreement between log and chain.
    pub ok: bool,
    /// Events whose link was recomputed and matched, before any break.
    pub checked_events: i64,
    /// The first position where log and chain disagree.
    pub first_bad_position: Option<i64>,
    /// Why, in words.
    pub problem: Option<String>,
    /// Events of the organization after the last link (written, not chained yet).
    pub pending_events: i64,
    /// The last verified link's hash (hex): record it elsewhere to pin the history.
    pub head: Option<String>,
}

/// How many links or events one verification read takes.
const VERIFY_BATCH: i64 = 5_000;

/// Recomputes `organization`'s chain from the log and compares it link by link, calling
/// `progress` with the number of events checked per batch.
pub async fn verify(
    db: &Database,
    organization: &str,
    mut progress: impl FnMut(usize),
) -> Result<Verification, DbError> {
    let filter = LogFilter {
        organization: Some(organization.to_string()),
        ..LogFilter::default()
    };
    let mut result = Verification {
        organization: organization.to_string(),
        ok: true,
        checked_events: 0,
        first_bad_position: None,
        problem: None,
        pending_events: 0,
        head: None,
    };
    // Rows placed before the start of the log's order (SQLite: a position of zero or less,
    // or none; PostgreSQL: transaction 0 and such a position) are never read in order —
    // not by the projections, not by the walk below — yet an aggregate's own reads (by
    // key) would find them: a forged event. Nothing legitimate is there.
    let unreachable = match db {
        Backend::Sqlite(_) => "(position IS NULL OR position <= 0)",
        Backend::Postgres(_) => "tx_id::text::bigint = 0 AND position <= 0",
    };
    let sql = format!(
        "SELECT MIN(COALESCE(position, 0)) FROM events WHERE organization_id = $1 AND {unreachable}"
    );
    let outside: Option<i64> = on_backend!(db, |pool| sqlx::query_scalar(&sql)
        .bind(organization)
        .fetch_one(pool)
        .await?);
    if let Some(position) = outside {
        result.ok = false;
        result.first_bad_position = Some(position);
        result.problem = Some(format!(
            "an event at position {position} lies outside the log's order"
        ));
        return Ok(result);
    }
    let mut previous = GENESIS;
    let mut expected_link = 1i64;
    let mut events: VecDeque<event_log::RawEvent> = VecDeque::new();
    let mut event_cursor = Checkpoint::START;
    let mut log_exhausted = false;
    let broken = |result: &mut Verification, position: i64, why: String| {
        result.ok = false;
        result.first_bad_position = Some(position);
        result.problem = Some(why);
    };
    'links: loop {
        let links: Vec<(i64, i64, String)> = on_backend!(db, |pool| sqlx::query_as(
            "SELECT link, position, hash FROM audit_chain
              WHERE organization_id = $1 AND link >= $2 ORDER BY link LIMIT $3"
        )
        .bind(organization)
        .bind(expected_link)
        .bind(VERIFY_BATCH)
        .fetch_all(pool)
        .await?);
        if links.is_empty() {
            break;
        }
        let mut checked_in_batch = 0;
        for (link, position, stored_hash) in links {
            if link != expected_link {
                broken(
                    &mut result,
                    position,
                    format!("chain link {expected_link} is missing"),
                );
                break 'links;
            }
            if events.is_empty() && !log_exhausted {
                let batch = event_log::read_raw(db, &filter, event_cursor, VERIFY_BATCH).await?;
                log_exhausted = (batch.len() as i64) < VERIFY_BATCH;
                if let Some(last) = batch.last() {
                    event_cursor = last.checkpoint;
                }
                events.extend(batch);
            }
            let Some(event) = events.pop_front() else {
                broken(
                    &mut result,
                    position,
                    format!("the event at position {position} is missing from the log"),
                );
                break 'links;
            };
            let found = event.checkpoint.position;
            if found != position {
                let why = if found < position {
                    format!(
                        "the log holds an event at position {found} the chain does not know here"
                    )
                } else {
                    format!("the event at position {position} is missing from its place in the log")
                };
                broken(&mut result, found.min(position), why);
                break 'links;
            }
            let recomputed = match event
                .decode()
                .and_then(|stored| link_hash(&previous, &stored))
            {
                Ok(hash) => hash,
                Err(error) => {
                    broken(&mut result, position, format!("unreadable event: {error}"));
                    break 'links;
                }
            };
            if hex::encode(recomputed) != stored_hash {
                broken(
                    &mut result,
                    position,
                    format!("the event at position {position} differs from what was chained"),
                );
                break 'links;
            }
            previous = recomputed;
            result.checked_events += 1;
            result.head = Some(stored_hash);
            expected_link += 1;
            checked_in_batch += 1;
        }
        progress(checked_in_batch);
    }
    if result.ok {
        result.pending_events = events.len() as i64
            + if log_exhausted {
                0
            } else {
                event_log::count_filtered(db, &filter, event_cursor).await?
            };
    }
    Ok(result)
}

/// Every organization that has events or chain links, in name order.
pub async fn organizations(db: &Database) -> Result<Vec<String>, DbError> {
    Ok(on_backend!(db, |pool| sqlx::query_scalar(
        "SELECT organization_id FROM audit_chain GROUP BY organization_id
         UNION
         SELECT organization_id FROM events WHERE organization_id IS NOT NULL
          GROUP BY organization_id
         ORDER BY 1"
    )
    .fetch_all(pool)
    .await?))
}

/// How many links the organization's chain has (for progress bars).
pub async fn chain_length(db: &Database, organization: &str) -> Result<i64, DbError> {
    Ok(on_backend!(db, |pool| sqlx::query_scalar(
        "SELECT COALESCE(MAX(link), 0) FROM audit_chain WHERE organization_id = $1"
    )
    .bind(organization)
    .fetch_one(pool)
    .await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use domain::actor::{Actor, Role};
    use domain::metadata::EventMetadata;
    use serde_json::json;

    fn event(payload: Value) -> StoredEvent {
        StoredEvent {
            checkpoint: Checkpoint {
                tx_id: 0,
                position: 7,
            },
            aggregate_type: "Ticket".into(),
            aggregate_id: "t-1".into(),
            sequence: 2,
            event_type: "TicketClosed".into(),
            event_version: "1.0".into(),
            payload: serde_json::value::RawValue::from_string(payload.to_string()).unwrap(),
            metadata: EventMetadata {
                organization: "acme".into(),
                actor: Actor {
                    id: "ann".into(),
                    role: Role::Agent,
                },
                occurred_at: chrono::Utc.with_ymd_and_hms(2026, 11, 21, 9, 0, 0).unwrap(),
                request_id: "r".into(),
                correlation_id: "r".into(),
                causation_id: None,
            },
        }
    }

    #[test]
    fn key_order_does_not_change_the_link_but_any_value_does() {
        let a = event(serde_json::from_str(r#"{"X":{"b":1,"a":[true,null]}}"#).unwrap());
        let b = event(serde_json::from_str(r#"{"X": {"a": [true, null], "b": 1}}"#).unwrap());
        assert_eq!(
            link_hash(&GENESIS, &a).unwrap(),
            link_hash(&GENESIS, &b).unwrap()
        );
        let c = event(json!({"X": {"a": [true, null], "b": 2}}));
        assert_ne!(
            link_hash(&GENESIS, &a).unwrap(),
            link_hash(&GENESIS, &c).unwrap()
        );
        let mut moved = a.clone();
        moved.checkpoint.position = 8;
        assert_ne!(
            link_hash(&GENESIS, &a).unwrap(),
            link_hash(&GENESIS, &moved).unwrap()
        );
        let mut other_actor = a.clone();
        other_actor.metadata.actor.id = "bob".into();
        assert_ne!(
            link_hash(&GENESIS, &a).unwrap(),
            link_hash(&GENESIS, &other_actor).unwrap()
        );
        assert_ne!(
            link_hash(&GENESIS, &a).unwrap(),
            link_hash(&[1; 32], &a).unwrap()
        );
    }

    #[test]
    fn fields_cannot_bleed_into_each_other() {
        // Without length prefixes "Ticket"+"t-1" and "Ticke"+"tt-1" would encode alike.
        let a = event(json!(null));
        let mut b = a.clone();
        b.aggregate_type = "Ticke".into();
        b.aggregate_id = "tt-1".into();
        assert_ne!(
            link_hash(&GENESIS, &a).unwrap(),
            link_hash(&GENESIS, &b).unwrap()
        );
    }
}
