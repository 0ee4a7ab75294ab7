//! `helpdesk export`: the event log as NDJSON or CSV, streamed in commit order.
//!
//! Memory stays constant whatever the log's size: events are read in pages of
//! [`PAGE`] by their place in the commit order and written straight out; payloads and
//! metadata are copied as the JSON text the log holds (never parsed and re-encoded), so
//! an analyst's checksum over the exported payloads equals one over the table.
//!
//! Each record carries the log's columns plus the metadata fields analysts filter on:
//!
//! - NDJSON: one object per line, `{"position", "aggregateType", "aggregateId",
//!   "sequence", "eventType", "eventVersion", "occurredAt", "organizationId", "actorId",
//!   "actorRole", "payload": {...}, "metadata": {...}}`.
//! - CSV (RFC 4180, header row): the same fields in that order, payload and metadata as
//!   JSON text.

use std::collections::HashMap;
use std::io::Write;

use projections::event_log::{self, Checkpoint, LogFilter, RawEvent};
use projections::Database;

/// Events read per round trip.
pub const PAGE: i64 = 5_000;

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
    let mut after = Checkpoint::START;
    let mut written = 0u64;
    let mut line = Vec::with_capacity(4096);
    loop {
        let page = event_log::read_raw(db, filter, after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.checkpoint;
        let full = page.len() as i64 == PAGE;
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
        if !full {
            break;
        }
    }
    out.flush()?;
    Ok(written)
}

/// The metadata fields copied into their own columns.
fn metadata_fields(event: &RawEvent) -> anyhow::Result<[String; 4]> {
    let map: HashMap<String, String> = serde_json::from_str(&event.metadata).map_err(|e| {
        anyhow::anyhow!(
            "event at position {}: metadata: {e}",
            event.checkpoint.position
        )
    })?;
    let field = |key: &str| map.get(key).cloned().unwrap_or_default();
    use domain::metadata::keys;
    Ok([
        field(keys::OCCURRED_AT),
        field(keys::ORGANIZATION),
        field(keys::ACTOR_ID),
        field(keys::ACTOR_ROLE),
    ])
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
    let [occurred_at, organization, actor_id, actor_role] = metadata_fields(event)?;
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
        ("occurredAt", occurred_at),
        ("organizationId", organization),
        ("actorId", actor_id),
        ("actorRole", actor_role),
    ] {
        write!(out, ",\"{key}\":")?;
        serde_json::to_writer(&mut *out, &value)?;
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
    let [occurred_at, organization, actor_id, actor_role] = metadata_fields(event)?;
    write!(out, "{},", event.checkpoint.position)?;
    csv_field(out, &event.aggregate_type);
    out.push(b',');
    csv_field(out, &event.aggregate_id);
    write!(out, ",{},", event.sequence)?;
    for value in [
        &event.event_type,
        &event.event_version,
        &occurred_at,
        &organization,
        &actor_id,
        &actor_role,
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
    fn csv_fields_survive_quotes_commas_and_newlines() {
        let mut out = Vec::new();
        csv(&event(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("42,\"Ticket\",\"t-1\",3,\"CommentAdded\""));
        assert!(text.contains(r#""{""CommentAdded"":{""text"":""a \""quoted\"", comma\nline""}}""#));
        assert!(text.ends_with("\r\n"));
    }
}
