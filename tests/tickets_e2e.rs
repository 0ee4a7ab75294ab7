//! End to end: the ticket lifecycle against the real server, on every backend.

mod common;

use common::{Server, TestDb};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn create_queue_claim_resolve_rate_and_restart() {
    for db in TestDb::all().await {
        let server = Server::start(&db).await;
        let admin = Server::token("acme", "admin", "boss");
        let agent = Server::token("acme", "agent", "ann");
        let created = server
            .data(
                &admin,
                "mutation($s: String!) { createTicket(input: {subject: $s}) { id number status priority queuePosition } }",
                json!({"s": "Printer jammed"}),
            )
            .await;
        let ticket = &created["createTicket"];
        assert_eq!(ticket["status"], "QUEUED", "{:?}", db.backend);
        assert_eq!(ticket["queuePosition"], 1);
        let id = ticket["id"].as_str().unwrap().to_string();
        server
            .data(
                &agent,
                "mutation($id: ID!) { claimTicket(id: $id) { status } }",
                json!({"id": id}),
            )
            .await;
        server
            .data(
                &agent,
                "mutation($id: ID!) { resolveTicket(id: $id) { status } }",
                json!({"id": id}),
            )
            .await;
        let rated = server
            .data(
                &admin,
                "mutation($id: ID!) { rateTicket(id: $id, rating: 5) { status rating } }",
                json!({"id": id}),
            )
            .await;
        assert_eq!(
            rated["rateTicket"],
            json!({"status": "RESOLVED", "rating": 5})
        );
        server.stop().await;

        let server = Server::start(&db).await;
        let after = server
            .data(
                &admin,
                "query($id: ID!) { ticket(id: $id) { number status rating assigneeId } }",
                json!({"id": id}),
            )
            .await;
        assert_eq!(
            after["ticket"],
            json!({"number": 1, "status": "RESOLVED", "rating": 5, "assigneeId": "ann"})
        );
        server.stop().await;
    }
}
