//! `helpdesk export`: the event log as NDJSON or CSV, streamed in commit order.
//!
//! Memory stays constant whatever the log's size: events are read in pages of
//! [`PAGE`] by their place in the commit order and written straight out; payloads and
//! metadata are copied as the JSON text the log holds (never parsed and re-encoded), so
//! an analyst's checksum over the exported payloads equals one over the table.
//!
//! Reading and writing overlap: a reader task fetches the next page while the current one
//! is formatted, through a channel of [`PAGES_AHEAD`] pages, so at most that many pages
//! plus the one being written are ever held. Without the overlap the export ran at the
//! read rate times the share of time not spent formatting (136,727 events/s against a
//! read rate of 196,032 on the benchmark's log).
//!
//! Each record carries the log's columns plus the metadata fields analysts filter on:
//!
//! - NDJSON: one object per line, `{"position", "aggregateType", "aggregateId",
//!   "sequence", "eventType", "eventVersion", "occurredAt", "organizationId", "actorId",
//!   "actorRole", "payload": {...}, "metadata": {...}}`.
//! - CSV (RFC 4180, header row): the same fields in that order, payload and metadata as
//!   JSON text.

use std::borrow::Cow;
use std::io::Write;

use projections::event_log::{self, Checkpoint, LogFilter, RawEvent};
use projections::{Database, DbError};

/// Events read per round trip.
pub const PAGE: i64 = 5_000;

/// Pages read ahead of the one being written.
pub const PAGES_AHEAD: usize = 2;

/// The output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    Ndjson,
    /// Comma-separated values with a header row.
    Csv,
}

const FIELDS: [&str; 12] = [
    "position",
    "aggregateType",
    "aggregateId",
    "sequence",
    "eventType",
    "eventVersion",
    "occurredAt",
    "organizationId",
    "actorId",
    "actorRole",
    "payload",
    "metadata",
];

/// Writes every event matching `filter` to `out`; `progress` gets the count per page.
/// Returns how many events were written.
pub async fn export(
    db: &Database,
    filter: &LogFilter,
    format: Format,
    out: &mut impl Write,
    mut progress: impl FnMut(usize),
) -> anyhow::Result<u64> {
    if format == Format::Csv {
        write!(out, "{}\r\n", FIELDS.join(","))?;
    }
    let (pages, mut received) = tokio::sync::mpsc::channel(PAGES_AHEAD);
    let reader = tokio::spawn(read_pages(db.clone(), filter.clone(), pages));
    let mut written = 0u64;
    let mut line = Vec::with_capacity(4096);
    let formatted = async {
        while let Some(page) = received.recv().await {
            let page = page?;
            for event in &page {
                line.clear();
                match format {
                    Format::Ndjson => ndjson(event, &mut line)?,
                    Format::Csv => csv(event, &mut line)?,
                }
                out.write_all(&line)?;
            }
            written += page.len() as u64;
            progress(page.len());
        }
        out.flush()?;
        anyhow::Ok(())
    }
    .await;
    // Dropping the receiver (on an error here) stops the reader at its next send.
    drop(received);
    reader.await?;
    formatted?;
    Ok(written)
}
/// Sends the pages of the log matching `filter` in commit order until the log's end, the
/// first error, or the receiver's going away.
async fn read_pages(
    db: Database,
    filter: LogFilter,
    pages: tokio::sync::mpsc::Sender<Result<Vec<RawEvent>, DbError>>,
) {
    let mut after = Checkpoint::START;
    loop {
        let page = event_log::read_raw(&db, &filter, after, PAGE).await;
        let next = match &page {
            Ok(events) if events.is_empty() => return,
            Ok(events) => events
                .last()
                .filter(|_| events.len() as i64 == PAGE)
                .map(|last| last.checkpoint),
            Err(_) => None,
        };
        if pages.send(page).await.is_err() {
            return;
        }
        match next {
            Some(checkpoint) => after = checkpoint,
            None => return,
        }
    }
}

/// The metadata fields copied into their own columns, borrowed from the stored text where
/// it needs no unescaping (the others are skipped unparsed).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct MetadataFields<'a> {
    #[serde(borrow)]
    occurred_at: Cow<'a, str>,
    #[serde(borrow)]
    organization: Cow<'a, str>,
    #[serde(borrow)]
    actor_id: Cow<'a, str>,
    #[serde(borrow)]
    actor_role: Cow<'a, str>,
}

fn metadata_fields(event: &RawEvent) -> anyhow::Result<MetadataFields<'_>> {
    serde_json::from_str(&event.metadata).map_err(|e| {
        anyhow::anyhow!(
            "event at position {}: metadata: {e}",
            event.checkpoint.position
        )
    })
}

/// The stored JSON text on one line (stored JSON is compact already; anything else is
/// re-encoded).
fn one_line(json: &str) -> anyhow::Result<std::borrow::Cow<'_, str>> {
    if json.contains(['\n', '\r']) {
        let value: serde_json::Value = serde_json::from_str(json)?;
        Ok(serde_json::to_string(&value)?.into())
    } else {
        Ok(json.into())
    }
}

fn ndjson(event: &RawEvent, out: &mut Vec<u8>) -> anyhow::Result<()> {
    let fields = metadata_fields(event)?;
    write!(
        out,
        "{{\"position\":{},\"aggregateType\":",
        event.checkpoint.position
    )?;
    serde_json::to_writer(&mut *out, &event.aggregate_type)?;
    out.extend_from_slice(b",\"aggregateId\":");
    serde_json::to_writer(&mut *out, &event.aggregate_id)?;
    write!(out, ",\"sequence\":{},\"eventType\":", event.sequence)?;
    serde_json::to_writer(&mut *out, &event.event_type)?;
    out.extend_from_slice(b",\"eventVersion\":");
    serde_json::to_writer(&mut *out, &event.event_version)?;
    for (key, value) in [
        ("occurredAt", &fields.occurred_at),
        ("organizationId", &fields.organization),
        ("actorId", &fields.actor_id),
        ("actorRole", &fields.actor_role),
    ] {
        write!(out, ",\"{key}\":")?;
        serde_json::to_writer(&mut *out, value)?;
    }
    out.extend_from_slice(b",\"payload\":");
    out.extend_from_slice(one_line(&event.payload)?.as_bytes());
    out.extend_from_slice(b",\"metadata\":");
    out.extend_from_slice(one_line(&event.metadata)?.as_bytes());
    out.extend_from_slice(b"}\n");
    Ok(())
}

/// One CSV field, always quoted (quotes doubled): safe for commas, quotes and newlines.
fn csv_field(out: &mut Vec<u8>, value: &str) {
    out.push(b'"');
    for byte in value.bytes() {
        if byte == b'"' {
            out.push(b'"');
        }
        out.push(byte);
    }
    out.push(b'"');
}

fn csv(event: &RawEvent, out: &mut Vec<u8>) -> anyhow::Result<()> {
    let fields = metadata_fields(event)?;
    write!(out, "{},", event.checkpoint.position)?;
    csv_field(out, &event.aggregate_type);
    out.push(b',');
    csv_field(out, &event.aggregate_id);
    write!(out, ",{},", event.sequence)?;
    for value in [
        event.event_type.as_str(),
        &event.event_version,
        &fields.occurred_at,
        &fields.organization,
        &fields.actor_id,
        &fields.actor_role,
        &event.payload,
    ] {
        csv_field(out, value);
        out.push(b',');
    }
    csv_field(out, &event.metadata);
    out.extend_from_slice(b"\r\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> RawEvent {
        RawEvent {
            checkpoint: Checkpoint {
                tx_id: 0,
                position: 42,
            },
            aggregate_type: "Ticket".into(),
            aggregate_id: "t-1".into(),
            sequence: 3,
            event_type: "CommentAdded".into(),
            event_version: "1.0".into(),
            payload: r#"{"CommentAdded":{"text":"a \"quoted\", comma\nline"}}"#.into(),
            metadata: r#"{"organization":"acme","actor_id":"ann","actor_role":"agent","occurred_at":"2026-11-21T09:00:00.000000Z"}"#.into(),
        }
    }

    #[test]
    fn an_ndjson_line_is_one_json_object_with_the_payload_as_stored() {
        let mut out = Vec::new();
        ndjson(&event(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches('\n').count(), 1);
        let value: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(value["position"], 42);
        assert_eq!(value["actorRole"], "agent");
        assert_eq!(value["occurredAt"], "2026-11-21T09:00:00.000000Z");
        assert_eq!(
            value["payload"]["CommentAdded"]["text"],
            "a \"quoted\", comma\nline"
        );
    }

    #[test]
    fn the_copied_metadata_fields_are_the_metadata_keys() {
        use domain::metadata::keys;
        let metadata = serde_json::json!({
            keys::OCCURRED_AT: "2026-11-21T09:00:00.000000Z",
            keys::ORGANIZATION: "acme",
            keys::ACTOR_ID: "ann \"the\" agent",
            keys::ACTOR_ROLE: "agent",
            keys::REQUEST_ID: "r-1",
        });
        let event = RawEvent {
            metadata: metadata.to_string(),
            ..event()
        };
        let fields = metadata_fields(&event).unwrap();
        assert_eq!(fields.occurred_at, "2026-11-21T09:00:00.000000Z");
        assert_eq!(fields.organization, "acme");
        assert_eq!(fields.actor_id, "ann \"the\" agent");
        assert_eq!(fields.actor_role, "agent");
    }

    #[test]
    fn csv_fields_survive_quotes_commas_and_newlines() {
        let mut out = Vec::new();
        csv(&event(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("42,\"Ticket\",\"t-1\",3,\"CommentAdded\""));
        assert!(text.contains(r#""{""CommentAdded"":{""text"":""a \""quoted\"", comma\nline""}}""#));
        assert!(text.ends_with("\r\n"));
    }
}
