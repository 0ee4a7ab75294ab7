//! Analysts and audit end to end against the real server (`CONTRACT.md`, "Analysts and
//! audit"), on every backend:
//!
//! - `events`: paging through an organization's log with small pages gives every event
//!   exactly once, in commit order (as the table orders it), with stable cursors; the
//!   aggregate type, aggregate id, event type and time filters narrow to exactly the events
//!   expected from what the test did; agents are refused, organizations never see each
//!   other's events, malformed cursors are bad input.
//! - `ticketHistory`: one entry per ticket event (created, assigned automatically with its
//!   decision, started, commented, resolved, reopened, priority changed, assigned by an
//!   admin, rated) with the right actor, a readable sentence and the status/assignee/
//!   priority changes; agents are refused, unknown and foreign tickets are NOT_FOUND.
//! - `ticketAsOf`: a ticket driven through a dozen changes reads, at the instant of each of
//!   its events, exactly as the live ticket read right after that change; before its first
//!   event it is null.
//! - Tamper evidence: an UPDATE, a DELETE and a reorder of one organization's events by
//!   someone with direct SQL access are each reported by `auditVerification` and by
//!   `helpdesk audit verify` (non-zero exit) at exactly the tampered position, while the
//!   other organization's chain stays ok; an untouched log verifies completely. So is an
//!   event inserted into the past of the log.
//! - `helpdesk export`: NDJSON and CSV (read with a strict RFC 4180 reader written here)
//!   hold every event once in commit order, payloads as stored (a checksum over them equals
//!   one over the table), and `--aggregate-type`, `--from`/`--to` and `--organization`
//!   filter correctly.
//! - `eraseCustomer`: a customer's name, handle and messages read "[erased]" and their
//!   unmatched chatbot questions are gone, other customers are untouched; the log keeps
//!   every event and only gains one `CustomerDataErased` record (none for a second
//!   erasure); `helpdesk replay` still succeeds and keeps them erased, the audit chain still
//!   verifies; agents are refused, unknown and foreign customers are NOT_FOUND.

mod common;

use chrono::{DateTime, Utc};
use common::{admin, agent, count, error_code, Backend, Server, TestDb};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::process::Output;
use std::time::Duration;
use tokio::time::Instant;

const EVENT_NODE: &str = "position aggregateType aggregateId sequence eventType eventVersion
    occurredAt actorId actorRole payload metadata";

const VERIFY: &str =
    "{ auditVerification { ok checkedEvents firstBadPosition problem pendingEvents headHash } }";

/// Every field of a ticket a past state can be compared on (`queuePosition` is null for
/// past states by design, `assignee` is today's agent record).
const TICKET_STATE: &str = "id number subject description status priority divisionId assigneeId
    createdAt updatedAt assignedAt resolvedAt closedAt resolution rating feedback createdBy
    comments { id ticketId text authorId createdAt }";

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Polls `probe` until it returns `Some`, at most 20 s.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn admin_of(organization: &str) -> String {
    Server::token(organization, "admin", "boss")
}

fn analyst_of(organization: &str) -> String {
    Server::token(organization, "analyst", "ana")
}

fn service() -> String {
    Server::token("acme", "service", "bridge")
}

fn time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {value}"))
        .parse()
        .unwrap_or_else(|e| panic!("not a time: {value}: {e}"))
}

/// One page of `events`.
async fn events_page(
    server: &Server,
    token: &str,
    filter: &Value,
    first: i64,
    after: Option<&str>,
) -> Value {
    let query = format!(
        "query($f: EventFilter, $n: Int, $a: String) {{ events(filter: $f, first: $n, after: $a) {{
            edges {{ cursor node {{ {EVENT_NODE} }} }} pageInfo {{ hasNextPage endCursor }} }} }}"
    );
    server
        .data(
            token,
            &query,
            json!({ "f": filter, "n": first, "a": after }),
        )
        .await["events"]
        .clone()
}

/// Every event matching `filter` after `after`, read `first` at a time: `(cursor, node)`.
async fn walk(
    server: &Server,
    token: &str,
    filter: &Value,
    first: i64,
    after: Option<String>,
) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut after = after;
    for _ in 0..10_000 {
        let page = events_page(server, token, filter, first, after.as_deref()).await;
        let edges = page["edges"].as_array().expect("edges");
        assert!(
            edges.len() as i64 <= first,
            "a page larger than first: {page}"
        );
        let info = &page["pageInfo"];
        match edges.last() {
            Some(last) => assert_eq!(info["endCursor"], last["cursor"], "{page}"),
            None => assert_eq!(info["endCursor"], Value::Null, "{page}"),
        }
        for edge in edges {
            let cursor = edge["cursor"].as_str().expect("cursor").to_string();
            out.push((cursor, edge["node"].clone()));
        }
        if info["hasNextPage"] != true {
            return out;
        }
        assert_eq!(edges.len() as i64, first, "only the last page may be short");
        after = Some(info["endCursor"].as_str().expect("endCursor").to_string());
    }
    panic!("paging through the events never ended");
}

/// The nodes of a walk.
fn nodes(walked: &[(String, Value)]) -> Vec<Value> {
    walked.iter().map(|(_, node)| node.clone()).collect()
}

fn positions(nodes: &[Value]) -> Vec<i64> {
    nodes
        .iter()
        .map(|n| n["position"].as_i64().expect("position"))
        .collect()
}

/// `(aggregateId, eventType)` of each node.
fn kinds(nodes: &[Value]) -> Vec<(String, String)> {
    nodes
        .iter()
        .map(|n| {
            (
                n["aggregateId"].as_str().expect("aggregateId").to_string(),
                n["eventType"].as_str().expect("eventType").to_string(),
            )
        })
        .collect()
}

/// The log's commit order on this backend.
fn commit_order(db: &projections::Database) -> &'static str {
    match db.backend_name() {
        "postgres" => "tx_id, position",
        _ => "position",
    }
}

/// One row of the events table.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    position: i64,
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    payload: String,
    metadata: String,
}

/// The rows of the events table (one organization's, or all), in commit order, read straight
/// from the table.
async fn table_rows(db: &projections::Database, organization: Option<&str>) -> Vec<Row> {
    let filter = if organization.is_some() {
        "WHERE organization_id = $1"
    } else {
        ""
    };
    let sql = format!(
        "SELECT position, aggregate_type, aggregate_id, sequence, event_type,
                CAST(payload AS TEXT), CAST(metadata AS TEXT)
           FROM events {filter} ORDER BY {}",
        commit_order(db)
    );
    type Tuple = (i64, String, String, i64, String, String, String);
    let rows: Vec<Tuple> = projections::on_backend!(db, |pool| {
        let mut query = sqlx::query_as::<_, Tuple>(&sql);
        if let Some(organization) = organization {
            query = query.bind(organization);
        }
        query
            .fetch_all(pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    });
    rows.into_iter()
        .map(|r| Row {
            position: r.0,
            aggregate_type: r.1,
            aggregate_id: r.2,
            sequence: r.3,
            event_type: r.4,
            payload: r.5,
            metadata: r.6,
        })
        .collect()
}

/// The organization's verification once every event is chained.
async fn verified(server: &Server, token: &str) -> Value {
    eventually("the audit chain to catch up with the log", || async {
        let v = server.data(token, VERIFY, json!({})).await["auditVerification"].clone();
        (v["pendingEvents"] == 0).then_some(v)
    })
    .await
}

/// Runs the `helpdesk` command line against `db`.
async fn cli(db: &TestDb, args: &[&str]) -> Output {
    tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_helpdesk"))
            .args(args)
            .env("DATABASE_URL", &db.url)
            .env("HELPDESK_JWT_SECRET", common::SECRET)
            .env("RUST_LOG", "warn")
            .env_remove("HELPDESK_FAILPOINT")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("helpdesk {args:?} did not finish within 300 s"))
    .expect("run helpdesk")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("UTF-8 stdout")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

async fn comment(server: &Server, token: &str, ticket: &str, text: &str) -> Value {
    server
        .data(
            token,
            "mutation($t: ID!, $x: String!) { addComment(ticketId: $t, text: $x) { id text } }",
            json!({ "t": ticket, "x": text }),
        )
        .await["addComment"]
        .clone()
}

async fn set_priority(server: &Server, token: &str, ticket: &str, priority: &str) {
    server
        .data(
            token,
            "mutation($id: ID!, $p: Priority!) { changeTicketPriority(id: $id, priority: $p) { id } }",
            json!({ "id": ticket, "p": priority }),
        )
        .await;
}

/// Runs `mutation(id: $id <args>) { id }` with the variables `vars` (plus `id`).
async fn act(server: &Server, token: &str, mutation: &str, args: &str, id: &str, vars: Value) {
    let declared: String = vars
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    let ty = match v {
                        Value::Number(_) => "Int!",
                        _ => "String",
                    };
                    format!(", ${k}: {ty}")
                })
                .collect()
        })
        .unwrap_or_default();
    let query = format!("mutation($id: ID!{declared}) {{ {mutation}(id: $id{args}) {{ id }} }}");
    let mut variables = vars;
    variables["id"] = json!(id);
    server.data(token, &query, variables).await;
}

// ---------------------------------------------------------------------------------------
// events
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn events_pages_in_commit_order_filters_and_stays_in_its_organization() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        let acme = admin();
        let globex = admin_of("globex");
        let analyst = analyst_of("acme");
        // What the test does to acme's tickets, in order: (ticket, event type).
        let mut expected: Vec<(String, String)> = Vec::new();
        let created = |id: &str| (id.to_string(), "TicketCreated".to_string());

        // Phase one, the two organizations interleaved; a division for another aggregate type.
        let division = server.create_division(&acme, "Billing").await;
        let mut phase_one = Vec::new();
        let mut globex_tickets = Vec::new();
        for i in 0..4 {
            let id = server
                .create_ticket_id(&acme, &format!("acme phase one {i}"))
                .await;
            expected.push(created(&id));
            phase_one.push(id);
            globex_tickets.push(
                server
                    .create_ticket_id(&globex, &format!("globex {i}"))
                    .await,
            );
        }
        comment(&server, &acme, &phase_one[1], "first comment").await;
        expected.push((phase_one[1].clone(), "CommentAdded".into()));
        set_priority(&server, &acme, &phase_one[0], "HIGH").await;
        expected.push((phase_one[0].clone(), "TicketPriorityChanged".into()));
        let phase_one_end = expected.len();
        let between = Utc::now();

        // Phase two.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut phase_two = Vec::new();
        for i in 0..3 {
            let id = server
                .create_ticket_id_with(
                    &acme,
                    json!({ "subject": format!("acme phase two {i}"), "divisionId": division }),
                )
                .await;
            expected.push(created(&id));
            phase_two.push(id);
        }
        set_priority(&server, &acme, &phase_one[0], "URGENT").await;
        expected.push((phase_one[0].clone(), "TicketPriorityChanged".into()));
        comment(&server, &acme, &phase_two[0], "second comment").await;
        expected.push((phase_two[0].clone(), "CommentAdded".into()));
        comment(&server, &acme, &phase_one[0], "third comment").await;
        expected.push((phase_one[0].clone(), "CommentAdded".into()));
        let phase_two_end = expected.len();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let after_two = Utc::now();
        tokio::time::sleep(Duration::from_millis(5)).await;

        // Phase three: one more each.
        let late = server.create_ticket_id(&acme, "acme late").await;
        expected.push(created(&late));
        globex_tickets.push(server.create_ticket_id(&globex, "globex late").await);

        // Small pages: every event exactly once, in the order of the table's commit order.
        let direct = db.connect().await;
        let rows = table_rows(&direct, Some("acme")).await;
        let everything = walk(&server, &analyst, &json!({}), 3, None).await;
        let all = nodes(&everything);
        assert_eq!(
            positions(&all),
            rows.iter().map(|r| r.position).collect::<Vec<_>>(),
            "{b:?}: every acme event once, in commit order"
        );
        let distinct: HashSet<i64> = positions(&all).into_iter().collect();
        assert_eq!(distinct.len(), all.len(), "{b:?}: no event twice");
        if b == Backend::Sqlite {
            assert!(
                positions(&all).windows(2).all(|w| w[0] < w[1]),
                "{b:?}: positions increase"
            );
        }
        let cursors: HashSet<&String> = everything.iter().map(|(c, _)| c).collect();
        assert_eq!(cursors.len(), everything.len(), "{b:?}: distinct cursors");
        for (node, row) in all.iter().zip(&rows) {
            assert_eq!(node["aggregateType"], row.aggregate_type.as_str(), "{b:?}");
            assert_eq!(node["aggregateId"], row.aggregate_id.as_str(), "{b:?}");
            assert_eq!(node["sequence"], row.sequence, "{b:?}");
            assert_eq!(node["eventType"], row.event_type.as_str(), "{b:?}");
            assert_eq!(node["metadata"]["organization"], "acme", "{b:?}: {node}");
            assert_eq!(node["actorId"], "boss", "{b:?}: {node}");
            assert_eq!(node["actorRole"], "admin", "{b:?}: {node}");
            assert!(node["payload"].is_object(), "{b:?}: {node}");
            assert!(node["eventVersion"].is_string(), "{b:?}: {node}");
            time(&node["occurredAt"]);
        }
        // Within each aggregate the sequence numbers run 1, 2, 3, ...
        let mut last_sequence: HashMap<(String, String), i64> = HashMap::new();
        for node in &all {
            let key = (
                node["aggregateType"].as_str().unwrap().to_string(),
                node["aggregateId"].as_str().unwrap().to_string(),
            );
            let next = last_sequence.get(&key).copied().unwrap_or(0) + 1;
            assert_eq!(node["sequence"], next, "{b:?}: {node}");
            last_sequence.insert(key, next);
        }
        // The ticket events are exactly what the test did, in that order.
        let ticket_nodes: Vec<Value> = all
            .iter()
            .filter(|n| n["aggregateType"] == "Ticket")
            .cloned()
            .collect();
        assert_eq!(kinds(&ticket_nodes), expected, "{b:?}");
        assert!(
            all.iter()
                .any(|n| n["aggregateType"] == "Division" && n["aggregateId"] == division.as_str()),
            "{b:?}: the division's event is in the log"
        );

        // Stable cursors: larger pages, and the admin, walk the same events with the same
        // cursors; a walk resumed from any cursor continues right after it.
        assert_eq!(
            walk(&server, &analyst, &json!({}), 7, None).await,
            everything,
            "{b:?}"
        );
        assert_eq!(
            walk(&server, &acme, &json!({}), 100, None).await,
            everything,
            "{b:?}"
        );
        let middle = everything.len() / 2;
        let resumed = walk(
            &server,
            &analyst,
            &json!({}),
            4,
            Some(everything[middle].0.clone()),
        )
        .await;
        assert_eq!(resumed, everything[middle + 1..], "{b:?}");
        // New events land after every old page; old cursors still resume at the same place.
        let newest = server.create_ticket_id(&acme, "acme newest").await;
        expected.push(created(&newest));
        let resumed = walk(
            &server,
            &analyst,
            &json!({}),
            4,
            Some(everything[middle].0.clone()),
        )
        .await;
        assert_eq!(
            resumed[..everything.len() - middle - 1],
            everything[middle + 1..],
            "{b:?}"
        );
        assert_eq!(
            kinds(&nodes(&resumed[everything.len() - middle - 1..])),
            vec![created(&newest)],
            "{b:?}"
        );
        let everything = walk(&server, &analyst, &json!({}), 5, None).await;
        let all = nodes(&everything);
        assert_eq!(
            positions(&all),
            table_rows(&direct, Some("acme"))
                .await
                .iter()
                .map(|r| r.position)
                .collect::<Vec<_>>(),
            "{b:?}"
        );

        // Filters, each compared with what the test did.
        let only = |filter: Value| {
            let server = &server;
            let analyst = &analyst;
            async move { nodes(&walk(server, analyst, &filter, 3, None).await) }
        };
        let tickets = only(json!({ "aggregateType": "Ticket" })).await;
        assert_eq!(kinds(&tickets), expected, "{b:?}: aggregateType");
        let divisions = only(json!({ "aggregateType": "Division" })).await;
        assert_eq!(
            divisions,
            all.iter()
                .filter(|n| n["aggregateType"] == "Division")
                .cloned()
                .collect::<Vec<_>>(),
            "{b:?}"
        );
        assert!(!divisions.is_empty(), "{b:?}");
        assert!(
            only(json!({ "aggregateType": "NoSuchAggregate" }))
                .await
                .is_empty(),
            "{b:?}"
        );

        let one = only(json!({ "aggregateId": phase_one[0] })).await;
        assert_eq!(
            one.iter()
                .map(|n| (
                    n["eventType"].as_str().unwrap().to_string(),
                    n["sequence"].as_i64().unwrap()
                ))
                .collect::<Vec<_>>(),
            vec![
                ("TicketCreated".to_string(), 1),
                ("TicketPriorityChanged".to_string(), 2),
                ("TicketPriorityChanged".to_string(), 3),
                ("CommentAdded".to_string(), 4),
            ],
            "{b:?}: aggregateId"
        );
        assert_eq!(
            one[1]["payload"]["TicketPriorityChanged"]["to"], "HIGH",
            "{b:?}: {}",
            one[1]
        );
        let typed = only(json!({ "eventTypes": ["CommentAdded", "TicketPriorityChanged"] })).await;
        assert_eq!(
            kinds(&typed),
            expected
                .iter()
                .filter(|(_, t)| t == "CommentAdded" || t == "TicketPriorityChanged")
                .cloned()
                .collect::<Vec<_>>(),
            "{b:?}: eventTypes"
        );
        assert_eq!(typed.len(), 5, "{b:?}");

        // Time: phase two alone, by the instants taken between the phases.
        let window = only(
            json!({ "aggregateType": "Ticket", "from": between.to_rfc3339(),
                                  "to": after_two.to_rfc3339() }),
        )
        .await;
        assert_eq!(
            kinds(&window),
            expected[phase_one_end..phase_two_end].to_vec(),
            "{b:?}: from/to"
        );
        let since = only(
            json!({ "from": between.to_rfc3339(), "aggregateType": "Ticket",
                                 "eventTypes": ["TicketCreated"] }),
        )
        .await;
        let mut later: Vec<String> = phase_two.clone();
        later.push(late.clone());
        later.push(newest.clone());
        assert_eq!(
            since
                .iter()
                .map(|n| n["aggregateId"].as_str().unwrap().to_string())
                .collect::<Vec<_>>(),
            later,
            "{b:?}: from with other filters"
        );
        let before = only(json!({ "to": between.to_rfc3339(), "aggregateType": "Ticket" })).await;
        assert_eq!(
            kinds(&before),
            expected[..phase_one_end].to_vec(),
            "{b:?}: to"
        );
        // `from` is inclusive and `to` exclusive, to the microsecond of an event's time.
        let (k, m) = (2, all.len() - 3);
        let (from, to) = (time(&all[k]["occurredAt"]), time(&all[m]["occurredAt"]));
        let ranged =
            only(json!({ "from": all[k]["occurredAt"], "to": all[m]["occurredAt"] })).await;
        let expected_range: Vec<Value> = all
            .iter()
            .filter(|n| {
                let t = time(&n["occurredAt"]);
                from <= t && t < to
            })
            .cloned()
            .collect();
        assert_eq!(ranged, expected_range, "{b:?}: from/to at event times");
        assert!(ranged.contains(&all[k]), "{b:?}: from is inclusive");
        assert!(!ranged.contains(&all[m]), "{b:?}: to is exclusive");
        let reversed = server
            .graphql(
                Some(&analyst),
                "query($f: EventFilter) { events(filter: $f) { edges { cursor } } }",
                json!({ "f": { "from": after_two.to_rfc3339(), "to": between.to_rfc3339() } }),
            )
            .await;
        assert_eq!(error_code(&reversed), Some("BAD_USER_INPUT"), "{b:?}");

        // Tenancy: globex sees its own events only, and acme none of globex's.
        let globex_all = nodes(&walk(&server, &analyst_of("globex"), &json!({}), 3, None).await);
        assert_eq!(
            positions(&globex_all),
            table_rows(&direct, Some("globex"))
                .await
                .iter()
                .map(|r| r.position)
                .collect::<Vec<_>>(),
            "{b:?}"
        );
        assert_eq!(globex_all.len(), globex_tickets.len(), "{b:?}");
        for node in &globex_all {
            assert_eq!(node["metadata"]["organization"], "globex", "{b:?}: {node}");
            assert!(
                globex_tickets.contains(&node["aggregateId"].as_str().unwrap().to_string()),
                "{b:?}: {node}"
            );
        }
        let acme_ids: HashSet<String> = all
            .iter()
            .map(|n| n["aggregateId"].as_str().unwrap().to_string())
            .collect();
        assert!(
            globex_tickets.iter().all(|t| !acme_ids.contains(t)),
            "{b:?}: acme sees a globex event"
        );
        assert_eq!(
            table_rows(&direct, None).await.len(),
            all.len() + globex_all.len(),
            "{b:?}: the two organizations' events are the whole log"
        );
        let foreign = nodes(
            &walk(
                &server,
                &analyst_of("globex"),
                &json!({ "aggregateId": phase_one[0] }),
                10,
                None,
            )
            .await,
        );
        assert!(foreign.is_empty(), "{b:?}: {foreign:?}");
        let foreign = nodes(
            &walk(
                &server,
                &analyst,
                &json!({ "aggregateId": globex_tickets[0] }),
                10,
                None,
            )
            .await,
        );
        assert!(foreign.is_empty(), "{b:?}: {foreign:?}");
        // A cursor of acme's log does not open globex's earlier events to acme either.
        let crossed = walk(
            &server,
            &analyst,
            &json!({}),
            100,
            Some(everything[0].0.clone()),
        )
        .await;
        assert_eq!(crossed, everything[1..], "{b:?}");

        // Refusals.
        for token in [agent("ann"), service()] {
            let refused = server
                .graphql(Some(&token), "{ events { edges { cursor } } }", json!({}))
                .await;
            assert_eq!(error_code(&refused), Some("FORBIDDEN"), "{b:?}: {refused}");
        }
        for cursor in [
            "not a cursor",
            "",
            "ZXZlbnQ6eDp5",   // event:x:y
            "dGlja2V0OjE6Mg", // ticket:1:2
            "ZXZlbnQ6MTI",    // event:12
        ] {
            let refused = server
                .graphql(
                    Some(&analyst),
                    "query($a: String) { events(first: 2, after: $a) { edges { cursor } } }",
                    json!({ "a": cursor }),
                )
                .await;
            assert_eq!(
                error_code(&refused),
                Some("BAD_USER_INPUT"),
                "{b:?}: cursor {cursor:?}: {refused}"
            );
        }
        for first in [0, -1, 101] {
            let refused = server
                .graphql(
                    Some(&analyst),
                    "query($n: Int) { events(first: $n) { edges { cursor } } }",
                    json!({ "n": first }),
                )
                .await;
            assert_eq!(
                error_code(&refused),
                Some("BAD_USER_INPUT"),
                "{b:?}: first {first}"
            );
        }
        direct.close().await;
        server.stop().await;
    }
}

// ---------------------------------------------------------------------------------------
// ticketHistory
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn ticket_history_tells_every_event_with_its_actor_and_changes() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        let boss = admin();
        let support = server.create_division(&boss, "Support").await;
        server
            .data(
                &boss,
                "mutation($d: ID!) { registerAgent(input: {id: \"ann\", name: \"Ann\", divisionIds: [$d]}) { id } }",
                json!({ "d": support }),
            )
            .await;
        server.register_agents(&boss, &["ben"]).await;
        let ann = agent("ann");
        let ben = agent("ben");
        server
            .data(&ann, "mutation { goOnline { id } }", json!({}))
            .await;

        // Created in an AUTO division with Ann online: the assignment process gives it to her.
        let created = server
            .create_ticket(
                &boss,
                json!({ "subject": "Printer streaks", "divisionId": support }),
                "id number priority",
            )
            .await;
        let id = created["id"].as_str().expect("id").to_string();
        let number = created["number"].as_i64().expect("number");
        let initial_priority = created["priority"].as_str().expect("priority").to_string();
        eventually("the automatic assignment", || async {
            let t = server.ticket(&boss, &id, "status assigneeId").await;
            (t == json!({ "status": "ASSIGNED", "assigneeId": "ann" })).then_some(())
        })
        .await;
        // From now on only people assign (the reopened ticket waits for the admin).
        server
            .data(
                &boss,
                "mutation($d: ID!) { updateDivision(id: $d, input: {assignmentMode: CLAIM}) { id } }",
                json!({ "d": support }),
            )
            .await;
        act(&server, &ann, "startTicket", "", &id, json!({})).await;
        comment(&server, &ann, &id, "Cleaned the drum").await;
        act(
            &server,
            &ann,
            "resolveTicket",
            ", resolution: $r",
            &id,
            json!({ "r": "Toner replaced" }),
        )
        .await;
        act(
            &server,
            &boss,
            "reopenTicket",
            ", reason: $r",
            &id,
            json!({ "r": "Still streaky" }),
        )
        .await;
        set_priority(&server, &boss, &id, "URGENT").await;
        server
            .data(
                &boss,
                "mutation($id: ID!) { assignTicket(id: $id, agentId: \"ben\") { id } }",
                json!({ "id": id }),
            )
            .await;
        act(&server, &ben, "startTicket", "", &id, json!({})).await;
        act(&server, &ben, "resolveTicket", "", &id, json!({})).await;
        server
            .data(
                &boss,
                "mutation($id: ID!) { rateTicket(id: $id, rating: 4, feedback: \"Quick\") { id } }",
                json!({ "id": id }),
            )
            .await;

        let history = server
            .data(
                &boss,
                "query($id: ID!) { ticketHistory(id: $id) { position at actorId actorRole action changes } }",
                json!({ "id": id }),
            )
            .await["ticketHistory"]
            .clone();
        let history = history.as_array().expect("history").clone();
        let events = nodes(&walk(&server, &boss, &json!({ "aggregateId": id }), 100, None).await);
        assert_eq!(
            events
                .iter()
                .map(|e| e["eventType"].as_str().unwrap())
                .collect::<Vec<_>>(),
            [
                "TicketCreated",
                "TicketAssigned",
                "TicketStarted",
                "CommentAdded",
                "TicketResolved",
                "TicketReopened",
                "TicketPriorityChanged",
                "TicketAssigned",
                "TicketStarted",
                "TicketResolved",
                "TicketRated",
            ],
            "{b:?}"
        );
        assert_eq!(history.len(), events.len(), "{b:?}: one entry per event");
        for (entry, event) in history.iter().zip(&events) {
            assert_eq!(entry["position"], event["position"], "{b:?}: {entry}");
            assert_eq!(time(&entry["at"]), time(&event["occurredAt"]), "{b:?}");
            assert_eq!(entry["actorId"], event["actorId"], "{b:?}: {entry}");
            assert_eq!(entry["actorRole"], event["actorRole"], "{b:?}: {entry}");
            let action = entry["action"].as_str().expect("action");
            assert!(
                action.len() > 5 && !action.contains('{'),
                "{b:?}: readable: {action}"
            );
        }
        let actors: Vec<(&str, &str)> = history
            .iter()
            .map(|e| {
                (
                    e["actorId"].as_str().unwrap(),
                    e["actorRole"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            actors,
            [
                ("boss", "admin"),
                ("system:assignment", "service"),
                ("ann", "agent"),
                ("ann", "agent"),
                ("ann", "agent"),
                ("boss", "admin"),
                ("boss", "admin"),
                ("boss", "admin"),
                ("ben", "agent"),
                ("ben", "agent"),
                ("boss", "admin"),
            ],
            "{b:?}"
        );
        let status = |i: usize| history[i]["changes"]["status"].clone();
        let from_to = |from: Value, to: Value| json!({ "from": from, "to": to });
        let action = |i: usize| history[i]["action"].as_str().unwrap().to_string();
        let changes = |i: usize| history[i]["changes"].clone();

        // Created.
        assert_eq!(status(0), from_to(Value::Null, json!("QUEUED")), "{b:?}");
        assert_eq!(
            changes(0)["priority"]["to"],
            initial_priority.as_str(),
            "{b:?}"
        );
        assert!(
            action(0).contains(&format!("#{number}")) && action(0).contains("Printer streaks"),
            "{b:?}: {}",
            action(0)
        );
        // Assigned automatically, with the decision.
        assert_eq!(
            status(1),
            from_to(json!("QUEUED"), json!("ASSIGNED")),
            "{b:?}"
        );
        assert_eq!(
            changes(1)["assigneeId"],
            from_to(Value::Null, json!("ann")),
            "{b:?}"
        );
        assert!(
            action(1).contains("ann") && action(1).contains("automatically"),
            "{b:?}: {}",
            action(1)
        );
        let decision = &changes(1)["decision"];
        assert_eq!(decision["winner"], "ann", "{b:?}: {decision}");
        assert_eq!(decision["algorithm"], "ROUND_ROBIN", "{b:?}: {decision}");
        assert_eq!(decision["eligible"], 1, "{b:?}: {decision}");
        assert!(
            decision["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{b:?}: {decision}"
        );
        assert!(
            decision["considered"]
                .as_array()
                .is_some_and(|c| c.len() == 1 && c[0].to_string().contains("ann")),
            "{b:?}: {decision}"
        );
        // Started, commented, resolved.
        assert_eq!(
            status(2),
            from_to(json!("ASSIGNED"), json!("IN_PROGRESS")),
            "{b:?}"
        );
        assert!(
            action(2).contains("ann") && action(2).contains("start"),
            "{b:?}: {}",
            action(2)
        );
        assert_eq!(status(3), Value::Null, "{b:?}: a comment changes no status");
        assert!(
            action(3).contains("ann") && action(3).contains("comment"),
            "{b:?}: {}",
            action(3)
        );
        assert_eq!(changes(3)["text"], "Cleaned the drum", "{b:?}");
        assert_eq!(
            status(4),
            from_to(json!("IN_PROGRESS"), json!("RESOLVED")),
            "{b:?}"
        );
        assert!(action(4).contains("Toner replaced"), "{b:?}: {}", action(4));
        assert_eq!(changes(4)["resolution"]["to"], "Toner replaced", "{b:?}");
        // Reopened: back to the queue, without its agent.
        assert_eq!(
            status(5),
            from_to(json!("RESOLVED"), json!("QUEUED")),
            "{b:?}"
        );
        assert_eq!(
            changes(5)["assigneeId"],
            from_to(json!("ann"), Value::Null),
            "{b:?}"
        );
        assert!(
            action(5).contains("reopened") && action(5).contains("Still streaky"),
            "{b:?}: {}",
            action(5)
        );
        // Priority.
        assert_eq!(
            changes(6)["priority"],
            from_to(json!(initial_priority), json!("URGENT")),
            "{b:?}"
        );
        assert_eq!(status(6), Value::Null, "{b:?}");
        assert!(
            action(6).contains("URGENT") && action(6).contains(&initial_priority),
            "{b:?}: {}",
            action(6)
        );
        // Assigned by the admin: no decision.
        assert_eq!(
            status(7),
            from_to(json!("QUEUED"), json!("ASSIGNED")),
            "{b:?}"
        );
        assert_eq!(
            changes(7)["assigneeId"],
            from_to(Value::Null, json!("ben")),
            "{b:?}"
        );
        assert!(
            changes(7)["decision"].is_null(),
            "{b:?}: an admin's choice has no algorithm's decision: {}",
            changes(7)
        );
        assert!(
            action(7).contains("ben") && !action(7).contains("automatically"),
            "{b:?}: {}",
            action(7)
        );
        assert_eq!(
            status(8),
            from_to(json!("ASSIGNED"), json!("IN_PROGRESS")),
            "{b:?}"
        );
        assert!(action(8).contains("ben"), "{b:?}: {}", action(8));
        assert_eq!(
            status(9),
            from_to(json!("IN_PROGRESS"), json!("RESOLVED")),
            "{b:?}"
        );
        // Rated.
        assert_eq!(
            changes(10)["rating"],
            from_to(Value::Null, json!(4)),
            "{b:?}"
        );
        assert!(action(10).contains('4'), "{b:?}: {}", action(10));

        // Refusals: agents and analysts; unknown and foreign tickets.
        let history_of = |token: String, id: String| {
            let server = &server;
            async move {
                server
                    .graphql(
                        Some(&token),
                        "query($id: ID!) { ticketHistory(id: $id) { position } }",
                        json!({ "id": id }),
                    )
                    .await
            }
        };
        for token in [ann.clone(), analyst_of("acme")] {
            let refused = history_of(token, id.clone()).await;
            assert_eq!(error_code(&refused), Some("FORBIDDEN"), "{b:?}: {refused}");
        }
        let unknown = history_of(boss.clone(), uuid::Uuid::new_v4().to_string()).await;
        assert_eq!(error_code(&unknown), Some("NOT_FOUND"), "{b:?}: {unknown}");
        let foreign = history_of(admin_of("globex"), id.clone()).await;
        assert_eq!(error_code(&foreign), Some("NOT_FOUND"), "{b:?}: {foreign}");
        let division_id = history_of(boss.clone(), support.clone()).await;
        assert_eq!(
            error_code(&division_id),
            Some("NOT_FOUND"),
            "{b:?}: a division is no ticket: {division_id}"
        );
        let malformed = history_of(boss.clone(), "not-an-id".into()).await;
        assert_eq!(error_code(&malformed), Some("BAD_USER_INPUT"), "{b:?}");
        server.stop().await;
    }
}

// ---------------------------------------------------------------------------------------
// ticketAsOf
// ---------------------------------------------------------------------------------------

/// The live ticket and the time of its newest event, which must be its only event after
/// the `seen` ones before.
async fn snapshot(server: &Server, id: &str, seen: usize) -> (Value, String) {
    let boss = admin();
    let live = server.ticket(&boss, id, TICKET_STATE).await;
    let events = nodes(&walk(server, &boss, &json!({ "aggregateId": id }), 100, None).await);
    assert_eq!(
        events.len(),
        seen + 1,
        "the change produced exactly one ticket event: {events:?}"
    );
    let at = events[seen]["occurredAt"]
        .as_str()
        .expect("occurredAt")
        .to_string();
    (live, at)
}

#[tokio::test(flavor = "multi_thread")]
async fn ticket_as_of_each_event_equals_the_live_ticket_right_after_it() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        let boss = admin();
        server.register_agents(&boss, &["ann", "ben"]).await;
        let ann = agent("ann");
        let ben = agent("ben");

        // (live ticket after the change, occurredAt of the event it produced)
        let mut states: Vec<(Value, String)> = Vec::new();
        let id = server
            .create_ticket_id_with(
                &boss,
                json!({ "subject": "Scanner offline", "description": "Third floor" }),
            )
            .await;
        states.push(snapshot(&server, &id, 0).await);
        // A dozen changes by admin and agents, each recorded right after it.
        macro_rules! then {
            ($do:expr) => {{
                $do;
                let step = snapshot(&server, &id, states.len()).await;
                states.push(step);
            }};
        }
        then!(set_priority(&server, &boss, &id, "HIGH").await);
        then!(server.claim_ticket(&ann, &id).await);
        then!(comment(&server, &ann, &id, "Looking at it").await);
        then!(act(&server, &ann, "startTicket", "", &id, json!({})).await);
        then!(
            act(
                &server,
                &ann,
                "resolveTicket",
                ", resolution: $r",
                &id,
                json!({ "r": "Rebooted" })
            )
            .await
        );
        then!(
            act(
                &server,
                &boss,
                "reopenTicket",
                ", reason: $r",
                &id,
                json!({ "r": "Offline again" })
            )
            .await
        );
        then!(set_priority(&server, &boss, &id, "URGENT").await);
        then!(
            server
                .data(
                    &boss,
                    "mutation($id: ID!) { assignTicket(id: $id, agentId: \"ben\") { id } }",
                    json!({ "id": id }),
                )
                .await
        );
        then!(comment(&server, &ben, &id, "Replaced the cable").await);
        then!(
            act(
                &server,
                &ben,
                "resolveTicket",
                ", resolution: $r",
                &id,
                json!({ "r": "New cable" })
            )
            .await
        );
        then!(
            server
                .data(
                    &boss,
                    "mutation($id: ID!) { rateTicket(id: $id, rating: 5, feedback: \"Great\") { id } }",
                    json!({ "id": id }),
                )
                .await
        );
        then!(act(&server, &boss, "closeTicket", "", &id, json!({})).await);
        assert_eq!(states.len(), 13, "{b:?}");
        assert_eq!(states.last().unwrap().0["status"], "CLOSED", "{b:?}");
        assert_eq!(
            states.last().unwrap().0["comments"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );

        let as_of = |token: String, at: String| {
            let server = &server;
            let id = id.clone();
            async move {
                let query =
                    format!("query($id: ID!, $at: DateTime!) {{ ticketAsOf(id: $id, at: $at) {{ {TICKET_STATE} queuePosition }} }}");
                server
                    .graphql(Some(&token), &query, json!({ "id": id, "at": at }))
                    .await
            }
        };
        let analyst = analyst_of("acme");
        let micro = chrono::Duration::microseconds(1);
        for (i, (live, at)) in states.iter().enumerate() {
            let past = as_of(boss.clone(), at.clone()).await;
            assert!(past.get("errors").is_none(), "{b:?}: {past}");
            let mut past = past["data"]["ticketAsOf"].clone();
            assert_eq!(past["queuePosition"], Value::Null, "{b:?}: {past}");
            past.as_object_mut().unwrap().remove("queuePosition");
            assert_eq!(&past, live, "{b:?}: the ticket at its event {i} ({at})");
            // Analysts read the past too.
            let seen_by_analyst = as_of(analyst.clone(), at.clone()).await;
            assert_eq!(
                seen_by_analyst["data"]["ticketAsOf"]["status"], live["status"],
                "{b:?}: {seen_by_analyst}"
            );
            // Just before the next event it still is this state.
            if let Some((_, next)) = states.get(i + 1) {
                let just_before = (time(&json!(next)) - micro).to_rfc3339();
                if time(&json!(just_before)) > time(&json!(at)) {
                    let past = as_of(boss.clone(), just_before.clone()).await;
                    let mut past = past["data"]["ticketAsOf"].clone();
                    past.as_object_mut()
                        .expect("a ticket")
                        .remove("queuePosition");
                    assert_eq!(&past, live, "{b:?}: the ticket just before event {}", i + 1);
                }
            }
        }
        let first = time(&json!(states[0].1));
        let before = as_of(boss.clone(), (first - micro).to_rfc3339()).await;
        assert!(before.get("errors").is_none(), "{b:?}: {before}");
        assert_eq!(
            before["data"]["ticketAsOf"],
            Value::Null,
            "{b:?}: before it existed"
        );
        let long_before = as_of(boss.clone(), "2000-01-01T00:00:00Z".into()).await;
        assert_eq!(long_before["data"]["ticketAsOf"], Value::Null, "{b:?}");
        // Far in the future it is today's ticket.
        let future = as_of(
            boss.clone(),
            (Utc::now() + chrono::Duration::days(1)).to_rfc3339(),
        )
        .await;
        let mut future = future["data"]["ticketAsOf"].clone();
        future
            .as_object_mut()
            .expect("a ticket")
            .remove("queuePosition");
        assert_eq!(
            future,
            server.ticket(&boss, &id, TICKET_STATE).await,
            "{b:?}"
        );
        // Agents are refused; another organization never sees it.
        let refused = as_of(ann.clone(), states[3].1.clone()).await;
        assert_eq!(error_code(&refused), Some("FORBIDDEN"), "{b:?}: {refused}");
        let foreign = as_of(admin_of("globex"), states[3].1.clone()).await;
        assert!(foreign.get("errors").is_none(), "{b:?}: {foreign}");
        assert_eq!(
            foreign["data"]["ticketAsOf"],
            Value::Null,
            "{b:?}: {foreign}"
        );
        server.stop().await;
    }
}

// ---------------------------------------------------------------------------------------
// Tamper evidence
// ---------------------------------------------------------------------------------------

/// A log of two organizations, interleaved; returns once both chains have caught up and
/// the untouched log verified completely, through GraphQL and the command line.
/// Returns acme's and globex's rows in commit order.
async fn populated(db: &TestDb, server: &Server) -> (Vec<Row>, Vec<Row>) {
    let b = db.backend;
    let acme = admin();
    let globex = admin_of("globex");
    server.create_division(&acme, "Billing").await;
    for i in 0..5 {
        let mine = server
            .create_ticket_id(&acme, &format!("Acme ticket number {i}"))
            .await;
        let theirs = server
            .create_ticket_id(&globex, &format!("Globex ticket number {i}"))
            .await;
        comment(server, &acme, &mine, &format!("acme note {i}")).await;
        if i % 2 == 0 {
            comment(server, &globex, &theirs, &format!("globex note {i}")).await;
            set_priority(server, &acme, &mine, "HIGH").await;
        }
    }
    let direct = db.connect().await;
    let acme_rows = table_rows(&direct, Some("acme")).await;
    let globex_rows = table_rows(&direct, Some("globex")).await;
    direct.close().await;
    assert_eq!(acme_rows.len(), 14, "{b:?}");
    assert_eq!(globex_rows.len(), 8, "{b:?}");

    // Untouched: everything verifies.
    for (token, rows) in [(&acme, &acme_rows), (&globex, &globex_rows)] {
        let v = verified(server, token).await;
        assert_eq!(v["ok"], true, "{b:?}: {v}");
        assert_eq!(v["checkedEvents"], rows.len(), "{b:?}: {v}");
        assert_eq!(v["firstBadPosition"], Value::Null, "{b:?}: {v}");
        assert_eq!(v["problem"], Value::Null, "{b:?}: {v}");
        let head = v["headHash"].as_str().expect("headHash");
        assert!(
            head.len() == 64 && head.chars().all(|c| c.is_ascii_hexdigit()),
            "{b:?}: {v}"
        );
    }
    let acme_head = verified(server, &acme).await["headHash"].clone();
    let output = cli(db, &["audit", "verify"]).await;
    let out = stdout(&output);
    assert!(
        output.status.success(),
        "{b:?}: audit verify of an untouched log: {out} {}",
        stderr(&output)
    );
    assert!(
        out.contains(&format!("acme: ok, {} events verified", acme_rows.len())),
        "{b:?}: {out}"
    );
    assert!(
        out.contains(&format!(
            "globex: ok, {} events verified",
            globex_rows.len()
        )),
        "{b:?}: {out}"
    );
    assert!(
        out.contains(acme_head.as_str().expect("head")),
        "{b:?}: the command prints the same head hash: {out}"
    );
    let output = cli(db, &["audit", "verify", "--organization", "acme"]).await;
    assert!(output.status.success(), "{b:?}: {}", stderr(&output));
    assert!(!stdout(&output).contains("globex"), "{b:?}");

    // Only admins verify.
    for token in [agent("ann"), analyst_of("acme")] {
        let refused = server.graphql(Some(&token), VERIFY, json!({})).await;
        assert_eq!(error_code(&refused), Some("FORBIDDEN"), "{b:?}: {refused}");
    }
    (acme_rows, globex_rows)
}

/// Plays an attacker with direct SQL access: removes the append-only guard, then runs
/// `statements` in one transaction.
async fn tamper(db: &TestDb, statements: &[String]) {
    let direct = db.connect().await;
    let unguard: &[&str] = match db.backend {
        Backend::Sqlite => &[
            "DROP TRIGGER IF EXISTS events_no_update",
            "DROP TRIGGER IF EXISTS events_no_delete",
            "DROP TRIGGER IF EXISTS events_position_fixed",
        ],
        Backend::Postgres => &["ALTER TABLE events DISABLE TRIGGER events_append_only"],
    };
    projections::on_backend!(&direct, |pool| {
        for sql in unguard {
            sqlx::query(sql)
                .execute(pool)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        let mut tx = pool.begin().await.expect("begin");
        for sql in statements {
            let done = sqlx::query(sql)
                .execute(&mut *tx)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            assert_eq!(done.rows_affected(), 1, "{sql}");
        }
        tx.commit().await.expect("commit");
    });
    direct.close().await;
}

/// After tampering with acme's log at `position`, with `good` acme events before it: both
/// the query and the command report exactly that position, and globex is still fine.
async fn assert_broken_at(db: &TestDb, server: &Server, position: i64, good: usize, globex: usize) {
    let b = db.backend;
    let v = server.data(&admin(), VERIFY, json!({})).await["auditVerification"].clone();
    assert_eq!(v["ok"], false, "{b:?}: {v}");
    assert_eq!(v["firstBadPosition"], position, "{b:?}: {v}");
    assert_eq!(v["checkedEvents"], good, "{b:?}: {v}");
    assert!(
        v["problem"].as_str().is_some_and(|p| !p.is_empty()),
        "{b:?}: {v}"
    );
    let theirs = verified(server, &admin_of("globex")).await;
    assert_eq!(theirs["ok"], true, "{b:?}: globex is untouched: {theirs}");
    assert_eq!(theirs["checkedEvents"], globex, "{b:?}: {theirs}");

    let output = cli(db, &["audit", "verify"]).await;
    let (out, err) = (stdout(&output), stderr(&output));
    assert!(!output.status.success(), "{b:?}: must fail: {out} {err}");
    let acme_line = out
        .lines()
        .find(|l| l.starts_with("acme:"))
        .unwrap_or_else(|| panic!("{b:?}: no acme line: {out}"));
    assert!(
        acme_line.contains(&format!("position {position} ")),
        "{b:?}: names position {position}: {acme_line}"
    );
    assert!(
        err.contains(&format!("first bad position {position} ")),
        "{b:?}: {err}"
    );
    assert!(
        out.contains(&format!("globex: ok, {globex} events verified")),
        "{b:?}: {out}"
    );
    let output = cli(db, &["audit", "verify", "--organization", "acme"]).await;
    assert!(!output.status.success(), "{b:?}: {}", stdout(&output));
    assert!(
        stdout(&output).contains(&format!("position {position} ")),
        "{b:?}: {}",
        stdout(&output)
    );
    let output = cli(db, &["audit", "verify", "--organization", "globex"]).await;
    assert!(
        output.status.success(),
        "{b:?}: globex alone verifies: {} {}",
        stdout(&output),
        stderr(&output)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_updated_event_is_reported_at_its_position() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        let (acme_rows, globex_rows) = populated(&db, &server).await;
        let index = acme_rows
            .iter()
            .position(|r| r.payload.contains("Acme ticket number 2"))
            .expect("the third ticket's creation");
        let target = acme_rows[index].position;
        let payload = match b {
            Backend::Sqlite => "replace(payload, 'Acme ticket number 2', 'Acme ticket number 7')",
            Backend::Postgres => {
                "replace(payload::text, 'Acme ticket number 2', 'Acme ticket number 7')::json"
            }
        };
        tamper(
            &db,
            &[format!(
                "UPDATE events SET payload = {payload} WHERE position = {target}"
            )],
        )
        .await;
        assert_broken_at(&db, &server, target, index, globex_rows.len()).await;

        // New events keep being written and chained; the break stays where it was.
        server
            .create_ticket_id(&admin(), "After the tampering")
            .await;
        let direct = db.connect().await;
        let total = table_rows(&direct, Some("acme")).await.len();
        direct.close().await;
        assert_eq!(total, acme_rows.len() + 1, "{b:?}");
        eventually("the new event to be chained", || async {
            let direct = db.connect().await;
            let chained = count(
                &direct,
                "SELECT COUNT(*) FROM audit_chain WHERE organization_id = 'acme'",
            )
            .await;
            direct.close().await;
            (chained == total as i64).then_some(())
        })
        .await;
        assert_broken_at(&db, &server, target, index, globex_rows.len()).await;
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_event_is_reported_at_its_position() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        let (acme_rows, globex_rows) = populated(&db, &server).await;
        let index = acme_rows
            .iter()
            .position(|r| r.payload.contains("acme note 2"))
            .expect("the third comment");
        assert_eq!(acme_rows[index].event_type, "CommentAdded", "{b:?}");
        let target = acme_rows[index].position;
        tamper(
            &db,
            &[format!("DELETE FROM events WHERE position = {target}")],
        )
        .await;
        assert_broken_at(&db, &server, target, index, globex_rows.len()).await;
        server.stop().await;
    }
}

/// The remaining way to rewrite history: an event slipped into the past, behind every
/// runner, so that nothing chains it (cqrs-es still loads it into its aggregate, and
/// `ticketHistory` and `ticketAsOf` read it, since they read an aggregate's events by key).
/// PostgreSQL runs first here so that its result is known whatever SQLite's is.
#[tokio::test(flavor = "multi_thread")]
async fn an_event_inserted_into_the_past_is_reported_at_its_position() {
    for db in TestDb::all().await.into_iter().rev() {
        let b = db.backend;
        let server = Server::start(&db).await;
        let (acme_rows, globex_rows) = populated(&db, &server).await;
        // A copy of a comment under a new sequence number, at position 0. On SQLite that
        // is before the whole log; on PostgreSQL it is given the transaction id of acme's
        // sixth event, so it sits right before that event in the commit order.
        let index = acme_rows
            .iter()
            .position(|r| r.event_type == "CommentAdded")
            .expect("a comment");
        let source = acme_rows[index].position;
        let (columns, values, good) = match b {
            Backend::Sqlite => ("", String::new(), 0),
            Backend::Postgres => {
                let middle = acme_rows[5].position;
                (
                    ", tx_id",
                    format!(", (SELECT tx_id FROM events WHERE position = {middle})"),
                    5,
                )
            }
        };
        tamper(
            &db,
            &[format!(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type,
                    event_version, payload, metadata, position{columns})
                 SELECT aggregate_type, aggregate_id, 999, event_type, event_version, payload,
                        metadata, 0{values}
                   FROM events WHERE position = {source}"
            )],
        )
        .await;
        assert_broken_at(&db, &server, 0, good, globex_rows.len()).await;
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reordered_log_is_reported_at_the_first_moved_position() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        let (acme_rows, globex_rows) = populated(&db, &server).await;
        // Two acme events some way apart, globex events between them.
        let (i, j) = (5, 11);
        let (low, high) = (acme_rows[i].position, acme_rows[j].position);
        assert!(low < high, "{b:?}");
        assert!(
            globex_rows
                .iter()
                .any(|r| low < r.position && r.position < high),
            "{b:?}: another organization's events lie between"
        );
        // Swap their positions (through a free value: positions are unique).
        tamper(
            &db,
            &[
                format!("UPDATE events SET position = -1 WHERE position = {low}"),
                format!("UPDATE events SET position = {low} WHERE position = {high}"),
                format!("UPDATE events SET position = {high} WHERE position = -1"),
            ],
        )
        .await;
        assert_broken_at(&db, &server, low, i, globex_rows.len()).await;
        server.stop().await;
    }
}

// ---------------------------------------------------------------------------------------
// Export
// ---------------------------------------------------------------------------------------

/// JSON with sorted keys and no whitespace.
fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let inner: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&map[k])))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(items) => {
            format!(
                "[{}]",
                items.iter().map(canonical).collect::<Vec<_>>().join(",")
            )
        }
        scalar => scalar.to_string(),
    }
}

/// SHA-256 (hex) over the payloads, each canonical and followed by a newline.
fn payload_digest<'a>(payloads: impl Iterator<Item = &'a Value>) -> String {
    let mut hasher = Sha256::new();
    for payload in payloads {
        hasher.update(canonical(payload).as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(hasher.finalize())
}

/// A strict RFC 4180 reader: fields separated by commas, records by CRLF, fields with
/// commas, quotes or line breaks quoted with quotes doubled. Returns each record with the
/// line break that ended it (`"\r\n"`, or `"\n"` where a bare LF was met).
fn parse_csv(text: &str) -> Vec<(Vec<String>, &'static str)> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut fresh = true; // nothing of the current field read yet
    while let Some(c) = chars.next() {
        match c {
            '"' if fresh => {
                // A quoted field: up to the closing quote, "" is one quote.
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some('"') => break,
                        Some(other) => field.push(other),
                        None => panic!("unterminated quoted field in record {}", records.len()),
                    }
                }
                fresh = false;
                assert!(
                    matches!(chars.peek(), None | Some(',') | Some('\r') | Some('\n')),
                    "text after a closing quote in record {}",
                    records.len()
                );
            }
            '"' => panic!(
                "a quote inside an unquoted field in record {}",
                records.len()
            ),
            ',' => {
                record.push(std::mem::take(&mut field));
                fresh = true;
            }
            '\r' => {
                assert_eq!(chars.next(), Some('\n'), "CR without LF");
                record.push(std::mem::take(&mut field));
                records.push((std::mem::take(&mut record), "\r\n"));
                fresh = true;
            }
            '\n' => {
                record.push(std::mem::take(&mut field));
                records.push((std::mem::take(&mut record), "\n"));
                fresh = true;
            }
            other => {
                field.push(other);
                fresh = false;
            }
        }
    }
    assert!(
        fresh && field.is_empty() && record.is_empty(),
        "the last record has no line break"
    );
    records
}

const CSV_HEADER: [&str; 12] = [
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

/// The NDJSON lines of an export, parsed.
fn ndjson_lines(output: &Output) -> Vec<Value> {
    let text = stdout(output);
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "ends with a line break"
    );
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("line {i} is not JSON: {e}: {line}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn export_writes_every_event_once_as_stored_in_ndjson_and_csv() {
    let mut bare_line_feeds = Vec::new();
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        let acme = admin();
        let globex = admin_of("globex");
        server.create_division(&acme, "Billing").await;
        let mut tickets = Vec::new();
        for i in 0..110 {
            tickets.push(
                server
                    .create_ticket_id(&acme, &format!("Export ticket {i}"))
                    .await,
            );
            if i % 5 == 0 {
                server
                    .create_ticket_id(&globex, &format!("Globex export {i}"))
                    .await;
            }
        }
        let middle = Utc::now();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let bulk = "mutation($ids: [ID!]!, $p: Priority!) { bulkUpdateTicketPriority(ids: $ids, priority: $p) { succeeded } }";
        let done = server
            .data(&acme, bulk, json!({ "ids": tickets, "p": "HIGH" }))
            .await;
        assert_eq!(done["bulkUpdateTicketPriority"]["succeeded"], 110, "{b:?}");
        let done = server
            .data(&acme, bulk, json!({ "ids": tickets[..60], "p": "LOW" }))
            .await;
        assert_eq!(done["bulkUpdateTicketPriority"]["succeeded"], 60, "{b:?}");
        // Texts that need quoting in CSV and escaping in JSON.
        for (i, text) in [
            "plain",
            "with, a comma",
            "with \"quotes\" inside",
            "two\nlines",
            "carriage\r\nreturn, \"all\" of it",
            "ünïcödé ✓ 日本語",
            "trailing backslash \\",
        ]
        .iter()
        .enumerate()
        {
            comment(&server, &acme, &tickets[i], text).await;
        }
        server.stop().await;

        let direct = db.connect().await;
        let rows = table_rows(&direct, None).await;
        let total = count(&direct, "SELECT COUNT(*) FROM events").await;
        assert_eq!(rows.len() as i64, total, "{b:?}");
        assert!(total >= 300, "{b:?}: a few hundred events: {total}");

        // NDJSON: one line per event, in commit order, payloads as stored.
        let output = cli(&db, &["export", "--format", "ndjson"]).await;
        assert!(output.status.success(), "{b:?}: {}", stderr(&output));
        assert!(
            stderr(&output).contains(&format!("exported {total} events")),
            "{b:?}: {}",
            stderr(&output)
        );
        let lines = ndjson_lines(&output);
        assert_eq!(lines.len() as i64, total, "{b:?}: one line per event");
        for (line, row) in lines.iter().zip(&rows) {
            assert_eq!(line["position"], row.position, "{b:?}: {line}");
            assert_eq!(line["aggregateType"], row.aggregate_type.as_str(), "{b:?}");
            assert_eq!(line["aggregateId"], row.aggregate_id.as_str(), "{b:?}");
            assert_eq!(line["sequence"], row.sequence, "{b:?}");
            assert_eq!(line["eventType"], row.event_type.as_str(), "{b:?}");
            let metadata: Value = serde_json::from_str(&row.metadata).expect("metadata");
            assert_eq!(line["metadata"], metadata, "{b:?}");
            assert_eq!(line["organizationId"], metadata["organization"], "{b:?}");
            assert_eq!(line["actorId"], metadata["actor_id"], "{b:?}: {line}");
            assert_eq!(line["actorRole"], metadata["actor_role"], "{b:?}: {line}");
            assert_eq!(line["occurredAt"], metadata["occurred_at"], "{b:?}: {line}");
            let keys: Vec<&String> = line.as_object().unwrap().keys().collect();
            assert_eq!(keys.len(), CSV_HEADER.len(), "{b:?}: {line}");
        }
        let table_payloads: Vec<Value> = rows
            .iter()
            .map(|r| serde_json::from_str(&r.payload).expect("stored payload"))
            .collect();
        assert_eq!(
            payload_digest(lines.iter().map(|l| &l["payload"])),
            payload_digest(table_payloads.iter()),
            "{b:?}: checksum over the exported payloads equals the table's"
        );
        assert!(
            lines.iter().any(
                |l| l["payload"]["CommentAdded"]["text"] == "carriage\r\nreturn, \"all\" of it"
            ),
            "{b:?}: the tricky comment survives"
        );

        // CSV: a header and one record per event, the same fields, payloads byte for byte.
        let output = cli(&db, &["export", "--format", "csv"]).await;
        assert!(output.status.success(), "{b:?}: {}", stderr(&output));
        let text = stdout(&output);
        let records = parse_csv(&text);
        assert_eq!(
            records.len() as i64,
            total + 1,
            "{b:?}: header plus one per event"
        );
        assert_eq!(records[0].0, CSV_HEADER, "{b:?}: header");
        for ((record, _), (line, row)) in records[1..].iter().zip(lines.iter().zip(&rows)) {
            assert_eq!(record.len(), 12, "{b:?}: {record:?}");
            assert_eq!(record[0], row.position.to_string(), "{b:?}");
            assert_eq!(record[1], row.aggregate_type, "{b:?}");
            assert_eq!(record[2], row.aggregate_id, "{b:?}");
            assert_eq!(record[3], row.sequence.to_string(), "{b:?}");
            assert_eq!(record[4], row.event_type, "{b:?}");
            for (k, key) in CSV_HEADER.iter().enumerate().take(10).skip(5) {
                assert_eq!(Value::String(record[k].clone()), line[*key], "{b:?}: {key}");
            }
            assert_eq!(record[10], row.payload, "{b:?}: payload as stored");
            assert_eq!(record[11], row.metadata, "{b:?}: metadata as stored");
        }

        // --aggregate-type.
        let output = cli(&db, &["export", "--aggregate-type", "Ticket"]).await;
        assert!(output.status.success(), "{b:?}: {}", stderr(&output));
        let tickets_only = ndjson_lines(&output);
        let expected: Vec<&Value> = lines
            .iter()
            .filter(|l| l["aggregateType"] == "Ticket")
            .collect();
        assert_eq!(
            tickets_only.iter().collect::<Vec<_>>(),
            expected,
            "{b:?}: --aggregate-type Ticket"
        );
        assert_eq!(
            tickets_only.len() as i64,
            count(
                &direct,
                "SELECT COUNT(*) FROM events WHERE aggregate_type = 'Ticket'"
            )
            .await,
            "{b:?}"
        );
        assert!(expected.len() < lines.len(), "{b:?}: other types exist");

        // --from/--to: inclusive and exclusive, at event times and in between.
        let times: Vec<DateTime<Utc>> = lines.iter().map(|l| time(&l["occurredAt"])).collect();
        let windows = [
            (times[40], times[200]),
            (middle, times[times.len() - 1]),
            (times[0], middle),
        ];
        for (from, to) in windows {
            let (from_text, to_text) = (from.to_rfc3339(), to.to_rfc3339());
            let output = cli(&db, &["export", "--from", &from_text, "--to", &to_text]).await;
            assert!(output.status.success(), "{b:?}: {}", stderr(&output));
            let got = ndjson_lines(&output);
            let expected: Vec<Value> = lines
                .iter()
                .zip(&times)
                .filter(|(_, t)| from <= **t && **t < to)
                .map(|(l, _)| l.clone())
                .collect();
            assert!(!expected.is_empty(), "{b:?}");
            assert_eq!(got, expected, "{b:?}: --from {from_text} --to {to_text}");
        }
        let output = cli(
            &db,
            &[
                "export",
                "--format",
                "csv",
                "--aggregate-type",
                "Ticket",
                "--from",
                &middle.to_rfc3339(),
            ],
        )
        .await;
        assert!(output.status.success(), "{b:?}: {}", stderr(&output));
        let got = parse_csv(&stdout(&output));
        let expected: Vec<String> = lines
            .iter()
            .zip(&times)
            .filter(|(l, t)| l["aggregateType"] == "Ticket" && **t >= middle)
            .map(|(l, _)| l["position"].to_string())
            .collect();
        assert_eq!(
            got[1..]
                .iter()
                .map(|(r, _)| r[0].clone())
                .collect::<Vec<_>>(),
            expected,
            "{b:?}: CSV with filters"
        );
        assert_eq!(
            expected.len(),
            170 + 7,
            "{b:?}: the priority changes and comments"
        );

        // --organization.
        let output = cli(&db, &["export", "--organization", "globex"]).await;
        assert!(output.status.success(), "{b:?}: {}", stderr(&output));
        let theirs = ndjson_lines(&output);
        assert_eq!(theirs.len(), 22, "{b:?}");
        assert!(
            theirs.iter().all(|l| l["organizationId"] == "globex"),
            "{b:?}"
        );
        direct.close().await;

        // RFC 4180: every record, the header too, ends with CRLF (checked once both
        // backends ran).
        let bare: Vec<usize> = records
            .iter()
            .enumerate()
            .filter(|(_, (_, end))| *end != "\r\n")
            .map(|(i, _)| i)
            .collect();
        if !bare.is_empty() {
            bare_line_feeds.push((b, bare));
        }
    }
    assert!(
        bare_line_feeds.is_empty(),
        "CSV records ending with a bare LF instead of CRLF (record 0 is the header): \
         {bare_line_feeds:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Erasure
// ---------------------------------------------------------------------------------------

const CONVERSATION: &str = "id customerId customerName externalId channel
    messages(first: 100) { edges { node { direction author text } } }";

async fn receive(
    server: &Server,
    channel: &str,
    handle: &str,
    name: &str,
    text: &str,
    id: &str,
) -> Value {
    let query = format!(
        "mutation($input: ReceiveMessageInput!) {{ receiveMessage(input: $input) {{ {CONVERSATION} }} }}"
    );
    let input = json!({ "channel": channel, "externalId": handle, "customerName": name,
                        "text": text, "externalMessageId": id });
    server
        .data(&service(), &query, json!({ "input": input }))
        .await["receiveMessage"]
        .clone()
}

async fn conversation(server: &Server, id: &str) -> Value {
    let query = format!("query($id: ID!) {{ conversation(id: $id) {{ {CONVERSATION} }} }}");
    server.data(&admin(), &query, json!({ "id": id })).await["conversation"].clone()
}

/// The texts of a conversation's messages in one direction.
fn texts(conversation: &Value, direction: &str) -> Vec<String> {
    conversation["messages"]["edges"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|e| e["node"]["direction"] == direction)
        .map(|e| e["node"]["text"].as_str().expect("text").to_string())
        .collect()
}

async fn unmatched(server: &Server, bot: &str) -> Vec<String> {
    let from = (Utc::now() - chrono::Duration::hours(2)).to_rfc3339();
    let to = (Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    let report = server
        .data(
            &admin(),
            "query($b: ID!, $f: DateTime!, $t: DateTime!) { chatbotReport(botId: $b, from: $f, to: $t,
                granularity: HOUR) {
                unmatchedQuestions { text count } } }",
            json!({ "b": bot, "f": from, "t": to }),
        )
        .await;
    let mut questions: Vec<String> = report["chatbotReport"]["unmatchedQuestions"]
        .as_array()
        .expect("unmatched")
        .iter()
        .map(|q| q["text"].as_str().expect("text").to_string())
        .collect();
    questions.sort();
    questions
}

async fn erase(server: &Server, token: String, customer: String) -> Value {
    server
        .graphql(
            Some(&token),
            "mutation($c: ID!) { eraseCustomer(customerId: $c) }",
            json!({ "c": customer }),
        )
        .await
}

/// What the erasure test knows of its customers.
struct Customers {
    budi: String,
    sari: String,
    citra: String,
    sari_before: Value,
    citra_before: Value,
    bot: String,
}

/// Budi's name, handle and messages read "[erased]" wherever conversations are read, his
/// unmatched question is gone; Sari and Citra are as they were.
async fn assert_budi_erased(server: &Server, known: &Customers, when: &str) {
    let budi = conversation(server, &known.budi).await;
    assert_eq!(budi["customerName"], "[erased]", "{when}: {budi}");
    assert_eq!(budi["externalId"], "[erased]", "{when}: {budi}");
    assert_eq!(texts(&budi, "INBOUND"), ["[erased]", "[erased]"], "{when}");
    let listed = server
        .data(
            &admin(),
            "{ conversations(first: 100) { edges { node { id customerName externalId } } } }",
            json!({}),
        )
        .await;
    let listed = listed["conversations"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .find(|e| e["node"]["id"] == known.budi.as_str())
        .expect("Budi's conversation listed")["node"]
        .clone();
    assert_eq!(listed["customerName"], "[erased]", "{when}: {listed}");
    assert_eq!(listed["externalId"], "[erased]", "{when}: {listed}");
    assert_eq!(
        conversation(server, &known.sari).await,
        known.sari_before,
        "{when}: Sari untouched"
    );
    assert_eq!(
        conversation(server, &known.citra).await,
        known.citra_before,
        "{when}: Citra untouched"
    );
    let questions = unmatched(server, &known.bot).await;
    assert_eq!(questions.len(), 1, "{when}: {questions:?}");
    assert!(questions[0].contains("diskon"), "{when}: {questions:?}");
}

/// The log holds `before` unchanged plus exactly one record of Budi's erasure, by the admin.
async fn assert_erasure_recorded(
    server: &Server,
    direct: &projections::Database,
    before: &[Row],
    customer: &str,
    when: &str,
) {
    let rows = table_rows(direct, None).await;
    assert_eq!(rows.len(), before.len() + 1, "{when}: one event more");
    assert_eq!(
        &rows[..before.len()],
        before,
        "{when}: the old events as they were"
    );
    let record = &rows[before.len()];
    assert_eq!(
        (record.aggregate_type.as_str(), record.event_type.as_str()),
        ("CustomerPrivacy", "CustomerDataErased"),
        "{when}: {record:?}"
    );
    assert_eq!(record.aggregate_id, customer, "{when}");
    let recorded = nodes(
        &walk(
            server,
            &admin(),
            &json!({ "eventTypes": ["CustomerDataErased"] }),
            10,
            None,
        )
        .await,
    );
    assert_eq!(recorded.len(), 1, "{when}: {recorded:?}");
    assert_eq!(recorded[0]["actorId"], "boss", "{when}");
    assert_eq!(recorded[0]["actorRole"], "admin", "{when}");
    assert_eq!(recorded[0]["aggregateId"], customer, "{when}");
}

#[tokio::test(flavor = "multi_thread")]
async fn erasing_a_customer_blanks_their_data_and_keeps_the_log_replayable() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        let boss = admin();
        let bot = server
            .data(
                &boss,
                "mutation { createBot(input: { name: \"Tania\" }) { id } }",
                json!({}),
            )
            .await["createBot"]["id"]
            .as_str()
            .expect("bot")
            .to_string();
        server
            .data(
                &boss,
                "mutation($b: ID!) { addBotAnswer(botId: $b, question: \"Jam berapa toko buka?\",
                    answer: \"Kami buka setiap hari pukul 08:00-17:00.\", keywords: [\"jam buka\"]) { id } }",
                json!({ "b": bot }),
            )
            .await;

        // Budi (WhatsApp) asks what the bot cannot answer, then writes on; Sari (Telegram)
        // asks too; Citra (WhatsApp) gets a bot answer.
        receive(
            &server,
            "WHATSAPP",
            "+6281100001111",
            "Budi Santoso",
            "bisa kirim ke luar negeri?",
            "b-1",
        )
        .await;
        let budi = receive(
            &server,
            "WHATSAPP",
            "+6281100001111",
            "Budi Santoso",
            "alamat saya Jl. Melati 7",
            "b-2",
        )
        .await;
        let sari = receive(
            &server,
            "TELEGRAM",
            "sari_tg",
            "Sari Dewi",
            "apakah ada diskon untuk member?",
            "s-1",
        )
        .await;
        let citra = receive(
            &server,
            "WHATSAPP",
            "+6281100003333",
            "Citra",
            "jam berapa toko buka?",
            "c-1",
        )
        .await;
        let budi_id = budi["id"].as_str().expect("id").to_string();
        let budi_customer = budi["customerId"].as_str().expect("customerId").to_string();
        let sari_id = sari["id"].as_str().expect("id").to_string();
        let citra_id = citra["id"].as_str().expect("id").to_string();
        assert_eq!(budi["customerName"], "Budi Santoso", "{b:?}");
        assert_eq!(budi["externalId"], "+6281100001111", "{b:?}");
        assert_eq!(
            texts(&budi, "INBOUND"),
            ["bisa kirim ke luar negeri?", "alamat saya Jl. Melati 7"],
            "{b:?}"
        );
        let questions = eventually("both unmatched questions in the report", || async {
            let questions = unmatched(&server, &bot).await;
            (questions.len() == 2).then_some(questions)
        })
        .await;
        assert!(
            questions[0].contains("diskon") && questions[1].contains("luar negeri"),
            "{b:?}: {questions:?}"
        );
        let sari_before = conversation(&server, &sari_id).await;
        let citra_before = conversation(&server, &citra_id).await;
        let direct = db.connect().await;
        let events_before = table_rows(&direct, None).await;

        // Refusals first: agents, another organization's admin, unknown customers.
        let refused = erase(&server, agent("ann"), budi_customer.clone()).await;
        assert_eq!(error_code(&refused), Some("FORBIDDEN"), "{b:?}: {refused}");
        let refused = erase(&server, analyst_of("acme"), budi_customer.clone()).await;
        assert_eq!(error_code(&refused), Some("FORBIDDEN"), "{b:?}: {refused}");
        let foreign = erase(&server, admin_of("globex"), budi_customer.clone()).await;
        assert_eq!(error_code(&foreign), Some("NOT_FOUND"), "{b:?}: {foreign}");
        let unknown = erase(&server, boss.clone(), uuid::Uuid::new_v4().to_string()).await;
        assert_eq!(error_code(&unknown), Some("NOT_FOUND"), "{b:?}: {unknown}");
        assert_eq!(
            conversation(&server, &budi_id).await["customerName"],
            "Budi Santoso",
            "{b:?}: nothing erased by a refusal"
        );

        // Erased.
        let erased = erase(&server, boss.clone(), budi_customer.clone()).await;
        assert_eq!(erased["data"]["eraseCustomer"], true, "{b:?}: {erased}");
        let known = Customers {
            budi: budi_id.clone(),
            sari: sari_id.clone(),
            citra: citra_id.clone(),
            sari_before: sari_before.clone(),
            citra_before: citra_before.clone(),
            bot: bot.clone(),
        };
        assert_budi_erased(&server, &known, &format!("{b:?} after the erasure")).await;
        assert_eq!(
            count(
                &direct,
                &format!(
                    "SELECT COUNT(*) FROM chatbot_unmatched WHERE customer_id = '{budi_customer}'"
                )
            )
            .await,
            0,
            "{b:?}"
        );
        // The log keeps every event as it was and only gains the record of the erasure (who
        // and when, nothing of what); it still verifies, and never held Budi's words in clear.
        assert_erasure_recorded(
            &server,
            &direct,
            &events_before,
            &budi_customer,
            &format!("{b:?} after the erasure"),
        )
        .await;
        let v = verified(&server, &boss).await;
        assert_eq!(v["ok"], true, "{b:?}: {v}");
        assert_eq!(
            v["checkedEvents"],
            table_rows(&direct, Some("acme")).await.len(),
            "{b:?}: {v}"
        );
        let mut log = nodes(
            &walk(
                &server,
                &boss,
                &json!({ "aggregateId": budi_id }),
                100,
                None,
            )
            .await,
        );
        assert!(!log.is_empty(), "{b:?}");
        log.extend(nodes(
            &walk(
                &server,
                &boss,
                &json!({ "aggregateId": budi_customer }),
                100,
                None,
            )
            .await,
        ));
        for event in &log {
            let text = event["payload"].to_string();
            assert!(
                !text.contains("Budi") && !text.contains("luar negeri") && !text.contains("Melati"),
                "{b:?}: personal data in the log: {text}"
            );
        }

        // Erasing again is fine, and records nothing new.
        let again = erase(&server, boss.clone(), budi_customer.clone()).await;
        assert_eq!(again["data"]["eraseCustomer"], true, "{b:?}: {again}");
        assert_erasure_recorded(
            &server,
            &direct,
            &events_before,
            &budi_customer,
            &format!("{b:?} after erasing again"),
        )
        .await;
        assert_budi_erased(&server, &known, &format!("{b:?} after erasing again")).await;

        // A replay rebuilds every projection from the log and keeps Budi erased.
        server.stop().await;
        let output = cli(&db, &["replay"]).await;
        assert!(
            output.status.success(),
            "{b:?}: replay after an erasure: {}",
            stderr(&output)
        );
        let server = Server::start(&db).await;
        assert_budi_erased(&server, &known, &format!("{b:?} after the replay")).await;
        let v = verified(&server, &boss).await;
        assert_eq!(v["ok"], true, "{b:?}: {v}");
        assert_eq!(
            v["checkedEvents"],
            table_rows(&direct, Some("acme")).await.len(),
            "{b:?}: {v}"
        );
        let again = erase(&server, boss.clone(), budi_customer.clone()).await;
        assert_eq!(again["data"]["eraseCustomer"], true, "{b:?}: {again}");
        assert_erasure_recorded(
            &server,
            &direct,
            &events_before,
            &budi_customer,
            &format!("{b:?} after the replay"),
        )
        .await;
        let output = cli(&db, &["audit", "verify"]).await;
        assert!(output.status.success(), "{b:?}: {}", stdout(&output));
        direct.close().await;
        server.stop().await;
    }
}
