//! End to end: agent registration and `Ticket.assignee`, on every backend.

mod common;

use common::{admin, agent, error_code, Server, TestDb};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn a_registered_agent_claims_and_shows_as_assignee() {
    for db in TestDb::all().await {
        let server = Server::start(&db).await;
        let admin = admin();
        let division = server.create_division(&admin, "Billing").await;
        let agent = server
            .data(
                &admin,
                "mutation($d: ID!) { registerAgent(input: {name: \" Ann \", divisionIds: [$d, $d]}) { id name online maxTickets divisionIds } }",
                json!({"d": division}),
            )
            .await["registerAgent"]
            .clone();
        assert_eq!(agent["name"], "Ann", "{:?}", db.backend);
        assert_eq!(agent["online"], false);
        assert_eq!(agent["maxTickets"], 5);
        assert_eq!(agent["divisionIds"], json!([division]));
        let agent_id = agent["id"].as_str().unwrap();

        let ticket = server
            .data(&admin, "mutation($d: ID!) { createTicket(input: {subject: \"Bill\", divisionId: $d}) { id assignee { id } } }", json!({"d": division}))
            .await["createTicket"]
            .clone();
        assert_eq!(ticket["assignee"], json!(null));
        let ann = Server::token("acme", "agent", agent_id);
        let claimed = server
            .data(&ann, "mutation($id: ID!) { claimTicket(id: $id) { assigneeId assignee { id name maxTickets } } }", json!({"id": ticket["id"]}))
            .await;
        assert_eq!(
            claimed["claimTicket"],
            json!({"assigneeId": agent_id, "assignee": {"id": agent_id, "name": "Ann", "maxTickets": 5}})
        );

        // Another organization sees none of acme's agents.
        let other = Server::token("globex", "admin", "root");
        let listed = server.data(&other, "{ agents { id } }", json!({})).await;
        assert_eq!(listed["agents"], json!([]));
        let listed = server.data(&admin, "{ agents { id } }", json!({})).await;
        assert_eq!(listed["agents"], json!([{"id": agent_id}]));
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_registration_refuses_bad_input_and_non_admins() {
    for db in TestDb::all().await {
        let server = Server::start(&db).await;
        let admin = admin();
        let register =
            "mutation($input: RegisterAgentInput!) { registerAgent(input: $input) { id } }";
        for (input, code) in [
            (json!({"name": "  "}), "BAD_USER_INPUT"),
            (json!({"name": "Ann", "maxTickets": 0}), "BAD_USER_INPUT"),
            (
                json!({"name": "Ann", "divisionIds": ["not-a-uuid"]}),
                "BAD_USER_INPUT",
            ),
            (
                json!({"name": "Ann", "divisionIds": [uuid::Uuid::new_v4().to_string()]}),
                "BAD_USER_INPUT",
            ),
        ] {
            let response = server
                .graphql(Some(&admin), register, json!({"input": input}))
                .await;
            assert_eq!(
                error_code(&response),
                Some(code),
                "{:?} {input}: {response}",
                db.backend
            );
        }
        let agent = agent("ann");
        let response = server
            .graphql(Some(&agent), register, json!({"input": {"name": "Bob"}}))
            .await;
        assert_eq!(error_code(&response), Some("FORBIDDEN"));
        let listed = server.data(&admin, "{ agents { id } }", json!({})).await;
        assert_eq!(listed["agents"], json!([]), "nothing was written");
        server.stop().await;
    }
}
