//! Crash safety of the projections, against the real server on every backend (brief rule 6).
//!
//! The server is killed (SIGKILL) while the "tickets" projection runner is stopped right
//! before committing a batch (`HELPDESK_FAILPOINT=projection-before-commit:tickets`): the
//! event is committed, its projection rows and checkpoint move are not. After a normal
//! restart the projection must apply that event exactly once — nothing lost, nothing twice.

mod common;

use common::{admin, count, Server, TestDb};
use projections::event_log::{self, Checkpoint};
use projections::runner::load_checkpoint;
use projections::Database;
use serde_json::{json, Value};
use std::time::Duration;

const FAILPOINT: (&str, &str) = ("HELPDESK_FAILPOINT", "projection-before-commit:tickets");
/// Mutations in flight while the runner is stopped give up waiting for it quickly.
const SHORT_WAIT: (&str, &str) = ("HELPDESK_CONSISTENCY_TIMEOUT_MS", "300");

const CREATE: &str =
    "mutation($s: String!) { createTicket(input: {subject: $s}) { id number status } }";
const COMMENT: &str =
    "mutation($t: ID!, $x: String!) { addComment(ticketId: $t, text: $x) { id text } }";

/// Starts a server on a fresh database, creates two tickets and stops it; returns their ids.
async fn two_tickets(db: &TestDb) -> Vec<String> {
    let server = Server::start(db).await;
    let mut ids = Vec::new();
    for (n, subject) in [(1, "Printer jammed"), (2, "VPN down")] {
        let created = server.data(&admin(), CREATE, json!({"s": subject})).await;
        assert_eq!(created["createTicket"]["number"], n, "{:?}", db.backend);
        ids.push(created["createTicket"]["id"].as_str().unwrap().to_string());
    }
    server.stop().await;
    ids
}

/// Posts a GraphQL request from its own task, as another client would; its result is not
/// awaited before the crash.
fn spawn_request(
    base_url: &str,
    query: &'static str,
    variables: Value,
) -> tokio::task::JoinHandle<()> {
    let url = format!("{base_url}/graphql");
    tokio::spawn(async move {
        // The server may die before answering: any outcome is fine here.
        let _ = reqwest::Client::new()
            .post(url)
            .bearer_auth(admin())
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await;
    })
}

/// Starts the server with the failpoint, sends `query` from another task, waits until the
/// runner is stopped before committing the batch with its event, and kills the server.
async fn crash_during(db: &TestDb, query: &'static str, variables: Value) {
    let mut server = Server::start_with(db, &[FAILPOINT, SHORT_WAIT]).await;
    let request = spawn_request(&server.base_url, query, variables);
    server
        .wait_for_line("FAILPOINT", Duration::from_secs(30))
        .await;
    server.kill().await;
    let _ = tokio::time::timeout(Duration::from_secs(10), request).await;
}

/// The place in the log of the newest event of a ticket.
async fn ticket_head(db: &Database, id: &str) -> Checkpoint {
    event_log::aggregate_head(db, "Ticket", id)
        .await
        .expect("aggregate head")
        .expect("the ticket has events")
}

/// Waits until the restarted server's "tickets" projection has applied the whole log, and
/// returns its checkpoint (which must then equal the head).
async fn wait_until_caught_up(db: &Database) -> Checkpoint {
    let head = event_log::log_head(db).await.expect("log head");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let checkpoint = load_checkpoint(db, "tickets").await.expect("checkpoint");
        if checkpoint >= head || tokio::time::Instant::now() > deadline {
            assert_eq!(checkpoint, head, "tickets checkpoint after restart");
            return checkpoint;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_before_projection_commit_of_a_comment_loses_nothing_and_applies_once() {
    for db in TestDb::all().await {
        let backend = db.backend;
        let ids = two_tickets(&db).await;
        let store = db.connect().await;
        let before = load_checkpoint(&store, "tickets").await.unwrap();
        assert_eq!(before, event_log::log_head(&store).await.unwrap());

        crash_during(
            &db,
            COMMENT,
            json!({"t": ids[0], "x": "Tried turning it off and on"}),
        )
        .await;

        // The event is in the log; its projection is not, and the checkpoint is before it.
        assert_eq!(
            count(
                &store,
                "SELECT COUNT(*) FROM events WHERE event_type = 'CommentAdded'"
            )
            .await,
            1,
            "{backend:?}: the comment event is committed"
        );
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM ticket_comments").await,
            0,
            "{backend:?}: the comment row died with the uncommitted batch"
        );
        let comment_at = ticket_head(&store, &ids[0]).await;
        let checkpoint = load_checkpoint(&store, "tickets").await.unwrap();
        assert!(
            checkpoint < comment_at,
            "{backend:?}: checkpoint {checkpoint:?} is not before the comment {comment_at:?}"
        );
        assert_eq!(checkpoint, before, "{backend:?}: checkpoint did not move");

        // A normal restart applies the comment exactly once.
        let server = Server::start(&db).await;
        let head = wait_until_caught_up(&store).await;
        assert!(head >= comment_at);
        let ticket = server
            .data(
                &admin(),
                "query($id: ID!) { ticket(id: $id) { number comments { text authorId } } }",
                json!({"id": ids[0]}),
            )
            .await;
        assert_eq!(
            ticket["ticket"],
            json!({"number": 1, "comments": [
                {"text": "Tried turning it off and on", "authorId": "boss"}
            ]}),
            "{backend:?}"
        );
        let list = server
            .data(
                &admin(),
                "{ tickets(first: 10) { totalCount edges { node { number } } } }",
                json!({}),
            )
            .await;
        assert_eq!(
            list["tickets"],
            json!({"totalCount": 2, "edges": [{"node": {"number": 2}}, {"node": {"number": 1}}]}),
            "{backend:?}"
        );
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM ticket_comments").await,
            1
        );
        assert_eq!(count(&store, "SELECT COUNT(*) FROM events").await, 3);
        server.stop().await;
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_before_projection_commit_of_a_creation_loses_nothing_and_applies_once() {
    for db in TestDb::all().await {
        let backend = db.backend;
        two_tickets(&db).await;
        let store = db.connect().await;
        let before = load_checkpoint(&store, "tickets").await.unwrap();

        crash_during(&db, CREATE, json!({"s": "Screen flickers"})).await;

        assert_eq!(
            count(
                &store,
                "SELECT COUNT(*) FROM events WHERE event_type = 'TicketCreated'"
            )
            .await,
            3,
            "{backend:?}: the third creation is committed"
        );
        assert_eq!(count(&store, "SELECT COUNT(*) FROM tickets").await, 2);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM queue_entries").await, 2);
        let head = event_log::log_head(&store).await.unwrap();
        let checkpoint = load_checkpoint(&store, "tickets").await.unwrap();
        assert!(
            checkpoint < head,
            "{backend:?}: checkpoint {checkpoint:?} is not before the creation {head:?}"
        );
        assert_eq!(checkpoint, before, "{backend:?}: checkpoint did not move");

        let server = Server::start(&db).await;
        wait_until_caught_up(&store).await;
        let list = server
            .data(
                &admin(),
                "{ tickets(first: 10) { totalCount edges { node { number subject status queuePosition } } } }",
                json!({}),
            )
            .await;
        assert_eq!(
            list["tickets"],
            json!({"totalCount": 3, "edges": [
                {"node": {"number": 3, "subject": "Screen flickers", "status": "QUEUED", "queuePosition": 3}},
                {"node": {"number": 2, "subject": "VPN down", "status": "QUEUED", "queuePosition": 2}},
                {"node": {"number": 1, "subject": "Printer jammed", "status": "QUEUED", "queuePosition": 1}},
            ]}),
            "{backend:?}"
        );
        assert_eq!(count(&store, "SELECT COUNT(*) FROM queue_entries").await, 3);
        server.stop().await;
        store.close().await;
    }
}

/// When projections lag past the consistency timeout, a creation is still answered — from
/// the committed event — never with an error that would make the client create it twice.
#[tokio::test(flavor = "multi_thread")]
async fn creations_are_answered_from_the_event_while_the_projection_lags() {
    for db in TestDb::all().await {
        let mut server = Server::start_with(
            &db,
            &[
                ("HELPDESK_FAILPOINT", "projection-before-commit:tickets"),
                ("HELPDESK_CONSISTENCY_TIMEOUT_MS", "300"),
            ],
        )
        .await;
        let admin = admin();
        let created = server
            .data(
                &admin,
                "mutation { createTicket(input: {subject: \"  Lagging  \"}) { id number subject status priority } }",
                json!({}),
            )
            .await["createTicket"]
            .clone();
        assert_eq!(created["number"], 1, "{:?}", db.backend);
        assert_eq!(created["subject"], "Lagging");
        assert_eq!(created["status"], "QUEUED");
        assert_eq!(created["priority"], "MEDIUM");
        server
            .wait_for_line("FAILPOINT", Duration::from_secs(10))
            .await;
        // On SQLite the paused projection transaction holds the single write lock, so a
        // second write would wait for it; PostgreSQL only locks the checkpoint row.
        let postgres = db.backend == common::Backend::Postgres;
        if postgres {
            let comment = server
                .data(
                    &admin,
                    "mutation($id: ID!) { addComment(ticketId: $id, text: \" hi \") { text authorId } }",
                    json!({"id": created["id"]}),
                )
                .await;
            assert_eq!(
                comment["addComment"],
                json!({"text": "hi", "authorId": "boss"})
            );
        }
        server.kill().await;

        // After a restart the projection catches up and shows exactly what was answered.
        let server = Server::start(&db).await;
        let ticket = server
            .data(
                &admin,
                "query($id: ID!) { ticket(id: $id) { number subject comments { text } } }",
                json!({"id": created["id"]}),
            )
            .await;
        let comments = if postgres {
            json!([{"text": "hi"}])
        } else {
            json!([])
        };
        assert_eq!(
            ticket["ticket"],
            json!({"number": 1, "subject": "Lagging", "comments": comments})
        );
        server.stop().await;
    }
}
