//! End to end: malformed input is refused with BAD_USER_INPUT and writes nothing; refused
//! transitions are INVALID_TRANSITION and say why. On every backend.

mod common;

use common::{admin, agent, count, error_code, has_no_data, Server, TestDb};
use serde_json::{json, Value};

const FIELDS: &str = "id number subject description status priority divisionId assigneeId
    updatedAt assignedAt resolvedAt closedAt resolution rating feedback queuePosition
    comments { id text }";

/// The ticket `id` with this file's [`FIELDS`].
async fn ticket(server: &Server, token: &str, id: &str) -> Value {
    server.ticket(token, id, FIELDS).await
}

/// How many events the log holds.
async fn event_count(db: &TestDb) -> i64 {
    let database = db.connect().await;
    let count = count(&database, "SELECT COUNT(*) FROM events").await;
    database.close().await;
    count
}

async fn ok(server: &Server, token: &str, mutation: &str, id: &str) -> Value {
    server.data(token, mutation, json!({ "id": id })).await
}

/// Asserts that a response failed with `code` and returned no data for its field, and that
/// the message is not empty.
fn assert_refused(response: &Value, code: &str, context: &str) {
    assert_eq!(error_code(response), Some(code), "{context}: {response}");
    assert!(
        response["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| !m.trim().is_empty()),
        "{context}: an error message: {response}"
    );
    assert!(
        has_no_data(response),
        "{context}: no data on a refusal: {response}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn create_ticket_refuses_bad_input_and_writes_nothing() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        let admin = admin();
        let unknown_division = uuid::Uuid::new_v4().to_string();
        let cases: Vec<(&str, Value)> = vec![
            ("empty subject", json!({"subject": ""})),
            ("whitespace subject", json!({"subject": " \t\n  "})),
            ("100 KB subject", json!({"subject": "s".repeat(100_000)})),
            ("251-char subject", json!({"subject": "s".repeat(251)})),
            (
                "25 KB description",
                json!({"subject": "ok", "description": "d".repeat(25_000)}),
            ),
            (
                "unknown division",
                json!({"subject": "ok", "divisionId": unknown_division}),
            ),
            (
                "malformed division id",
                json!({"subject": "ok", "divisionId": "billing"}),
            ),
            (
                "empty division id",
                json!({"subject": "ok", "divisionId": ""}),
            ),
            (
                "unknown priority",
                json!({"subject": "ok", "priority": "SUPER"}),
            ),
            (
                "lower-case priority",
                json!({"subject": "ok", "priority": "high"}),
            ),
            ("missing subject", json!({"description": "no subject"})),
            ("null subject", json!({"subject": null})),
            ("subject of the wrong type", json!({"subject": 42})),
        ];
        for (why, input) in cases {
            let response = server
                .graphql(
                    Some(&admin),
                    "mutation($i: CreateTicketInput!) { createTicket(input: $i) { id } }",
                    json!({ "i": input }),
                )
                .await;
            assert_refused(&response, "BAD_USER_INPUT", &format!("{b:?}: {why}"));
        }
        // Literal enum values and unknown fields are refused by GraphQL validation.
        for (why, mutation) in [
            (
                "literal unknown enum",
                "mutation { createTicket(input: {subject: \"ok\", priority: SUPER}) { id } }",
            ),
            (
                "unknown input field",
                "mutation { createTicket(input: {subject: \"ok\", colour: \"red\"}) { id } }",
            ),
            (
                "unknown output field",
                "mutation { createTicket(input: {subject: \"ok\"}) { id nope } }",
            ),
            ("syntax error", "mutation { createTicket(input: {subject: "),
        ] {
            let response = server.graphql(Some(&admin), mutation, json!({})).await;
            assert_refused(&response, "BAD_USER_INPUT", &format!("{b:?}: {why}"));
        }
        assert_eq!(server.ticket_total(&admin).await, 0, "{b:?}");
        assert_eq!(
            event_count(&db).await,
            0,
            "{b:?}: refused input reached the log"
        );

        // The limits themselves are accepted, and no ticket number was spent on refusals.
        let created = server
            .create_ticket(
                &admin,
                json!({"subject": "é".repeat(250), "description": "d".repeat(20_000)}),
                FIELDS,
            )
            .await;
        assert_eq!(created["number"], 1, "{b:?}: refusals spent ticket numbers");
        assert_eq!(
            created["subject"].as_str().map(|s| s.chars().count()),
            Some(250),
            "{b:?}"
        );
        assert_eq!(
            created["description"].as_str().map(str::len),
            Some(20_000),
            "{b:?}"
        );
        assert_eq!(event_count(&db).await, 1, "{b:?}");
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ticket_changes_refuse_bad_input_and_change_nothing() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        let admin = admin();
        let ann = agent("ann");
        server.register_agents(&admin, &["ann", "bob"]).await;
        let queued = server.create_ticket_id(&admin, "Queued").await;
        let assigned = server.create_ticket_id(&admin, "Assigned").await;
        server.claim_ticket(&ann, &assigned).await;
        let resolved = server.create_ticket_id(&admin, "Resolved").await;
        server.claim_ticket(&ann, &resolved).await;
        server.resolve_ticket(&ann, &resolved).await;
        let ids = [&queued, &assigned, &resolved];
        let mut before = Vec::new();
        for id in ids {
            before.push(ticket(&server, &admin, id).await);
        }
        let events_before = event_count(&db).await;

        // Malformed ids.
        let by_id = [
            (&ann, "mutation($id: ID!) { claimTicket(id: $id) { id } }"),
            (
                &admin,
                "mutation($id: ID!) { assignTicket(id: $id, agentId: \"bob\") { id } }",
            ),
            (&ann, "mutation($id: ID!) { startTicket(id: $id) { id } }"),
            (&ann, "mutation($id: ID!) { resolveTicket(id: $id) { id } }"),
            (&admin, "mutation($id: ID!) { closeTicket(id: $id) { id } }"),
            (
                &admin,
                "mutation($id: ID!) { reopenTicket(id: $id) { id } }",
            ),
            (
                &admin,
                "mutation($id: ID!) { changeTicketPriority(id: $id, priority: LOW) { id } }",
            ),
            (
                &ann,
                "mutation($id: ID!) { addComment(ticketId: $id, text: \"hi\") { id } }",
            ),
            (
                &admin,
                "mutation($id: ID!) { rateTicket(id: $id, rating: 5) { id } }",
            ),
            (&admin, "query($id: ID!) { ticket(id: $id) { id } }"),
        ];
        let truncated = &queued[..30];
        let malformed = ["nope", "", "42", "#1", truncated, &format!("{queued}x")];
        for (token, operation) in &by_id {
            for id in malformed {
                let response = server
                    .graphql(Some(token), operation, json!({ "id": id }))
                    .await;
                assert_refused(
                    &response,
                    "BAD_USER_INPUT",
                    &format!("{b:?}: id '{id}' in {operation}"),
                );
            }
            // A well-formed id that names nothing.
            let unknown = uuid::Uuid::new_v4().to_string();
            let response = server
                .graphql(Some(token), operation, json!({ "id": unknown }))
                .await;
            if operation.starts_with("query") {
                assert_eq!(response, json!({"data": {"ticket": null}}), "{b:?}");
            } else {
                assert_refused(
                    &response,
                    "NOT_FOUND",
                    &format!("{b:?}: unknown id in {operation}"),
                );
            }
        }

        // Bad values on real tickets.
        let bad: Vec<(&str, &str, String, &String)> = vec![
            ("30 KB comment", &ann, format!("mutation($id: ID!) {{ addComment(ticketId: $id, text: \"{}\") {{ id }} }}", "c".repeat(30_000)), &assigned),
            ("empty comment", &ann, "mutation($id: ID!) { addComment(ticketId: $id, text: \"\") { id } }".into(), &assigned),
            ("blank comment", &ann, "mutation($id: ID!) { addComment(ticketId: $id, text: \"  \\n \") { id } }".into(), &assigned),
            ("rating 0", &admin, "mutation($id: ID!) { rateTicket(id: $id, rating: 0) { id } }".into(), &resolved),
            ("rating 6", &admin, "mutation($id: ID!) { rateTicket(id: $id, rating: 6) { id } }".into(), &resolved),
            ("rating -1", &admin, "mutation($id: ID!) { rateTicket(id: $id, rating: -1) { id } }".into(), &resolved),
            ("rating as text", &admin, "mutation($id: ID!) { rateTicket(id: $id, rating: \"five\") { id } }".into(), &resolved),
            ("rating beyond Int", &admin, "mutation($id: ID!) { rateTicket(id: $id, rating: 99999999999) { id } }".into(), &resolved),
            ("25 KB feedback", &admin, format!("mutation($id: ID!) {{ rateTicket(id: $id, rating: 5, feedback: \"{}\") {{ id }} }}", "f".repeat(25_000)), &resolved),
            ("25 KB resolution", &ann, format!("mutation($id: ID!) {{ resolveTicket(id: $id, resolution: \"{}\") {{ id }} }}", "r".repeat(25_000)), &assigned),
            ("25 KB reopen reason", &admin, format!("mutation($id: ID!) {{ reopenTicket(id: $id, reason: \"{}\") {{ id }} }}", "r".repeat(25_000)), &resolved),
            ("empty agent id", &admin, "mutation($id: ID!) { assignTicket(id: $id, agentId: \"\") { id } }".into(), &queued),
            ("blank agent id", &admin, "mutation($id: ID!) { assignTicket(id: $id, agentId: \"   \") { id } }".into(), &queued),
            ("121-char agent id", &admin, format!("mutation($id: ID!) {{ assignTicket(id: $id, agentId: \"{}\") {{ id }} }}", "a".repeat(121)), &queued),
            ("unknown priority", &admin, "mutation($id: ID!) { changeTicketPriority(id: $id, priority: SUPER) { id } }".into(), &queued),
            ("missing priority", &admin, "mutation($id: ID!) { changeTicketPriority(id: $id) { id } }".into(), &queued),
            ("unknown bulk priority", &admin, "mutation($id: ID!) { bulkUpdateTicketPriority(ids: [$id], priority: NOW) { total } }".into(), &queued),
        ];
        for (why, token, mutation, id) in &bad {
            let response = server
                .graphql(Some(token), mutation, json!({ "id": id }))
                .await;
            assert_refused(&response, "BAD_USER_INPUT", &format!("{b:?}: {why}"));
        }
        // An unknown enum bound through a variable is refused as well.
        let response = server
            .graphql(
                Some(&admin),
                "mutation($id: ID!, $p: Priority!) { changeTicketPriority(id: $id, priority: $p) { id } }",
                json!({ "id": queued, "p": "SUPER" }),
            )
            .await;
        assert_refused(
            &response,
            "BAD_USER_INPUT",
            &format!("{b:?}: enum variable"),
        );

        for (id, was) in ids.iter().zip(&before) {
            assert_eq!(
                &ticket(&server, &admin, id).await,
                was,
                "{b:?}: a refused change changed {id}"
            );
        }
        assert_eq!(
            event_count(&db).await,
            events_before,
            "{b:?}: refused changes reached the log"
        );

        // The limits themselves are accepted.
        let comment = server
            .data(
                &ann,
                &format!(
                    "mutation($id: ID!) {{ addComment(ticketId: $id, text: \"{}\") {{ text }} }}",
                    "c".repeat(20_000)
                ),
                json!({ "id": assigned }),
            )
            .await;
        assert_eq!(
            comment["addComment"]["text"].as_str().map(str::len),
            Some(20_000),
            "{b:?}"
        );
        let rated = ok(
            &server,
            &admin,
            "mutation($id: ID!) { rateTicket(id: $id, rating: 1) { rating } }",
            &resolved,
        )
        .await;
        assert_eq!(rated["rateTicket"]["rating"], 1, "{b:?}");
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn list_arguments_are_checked() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        let admin = admin();
        for i in 0..3 {
            server.create_ticket_id(&admin, &format!("t{i}")).await;
        }
        let unknown_division = uuid::Uuid::new_v4().to_string();
        let ticket_cursor = server
            .data(
                &admin,
                "{ tickets(first: 1) { pageInfo { endCursor } } }",
                json!({}),
            )
            .await["tickets"]["pageInfo"]["endCursor"]
            .as_str()
            .unwrap()
            .to_string();
        let queue_cursor = server
            .data(
                &admin,
                "{ queue(first: 1) { pageInfo { endCursor } } }",
                json!({}),
            )
            .await["queue"]["pageInfo"]["endCursor"]
            .as_str()
            .unwrap()
            .to_string();
        let bad: Vec<(&str, String, Value, &str)> = vec![
            (
                "tickets first 0",
                "query { tickets(first: 0) { totalCount } }".into(),
                json!({}),
                "BAD_USER_INPUT",
            ),
            (
                "tickets first 1000",
                "query { tickets(first: 1000) { totalCount } }".into(),
                json!({}),
                "BAD_USER_INPUT",
            ),
            (
                "tickets first -1",
                "query { tickets(first: -1) { totalCount } }".into(),
                json!({}),
                "BAD_USER_INPUT",
            ),
            (
                "tickets first 101",
                "query { tickets(first: 101) { totalCount } }".into(),
                json!({}),
                "BAD_USER_INPUT",
            ),
            (
                "queue first 0",
                "query { queue(first: 0) { totalCount } }".into(),
                json!({}),
                "BAD_USER_INPUT",
            ),
            (
                "queue first 1000",
                "query { queue(first: 1000) { totalCount } }".into(),
                json!({}),
                "BAD_USER_INPUT",
            ),
            (
                "tickets garbage after",
                "query($a: String) { tickets(after: $a) { totalCount } }".into(),
                json!({"a": "garbage!!"}),
                "BAD_USER_INPUT",
            ),
            (
                "tickets base64 garbage after",
                "query($a: String) { tickets(after: $a) { totalCount } }".into(),
                json!({"a": "dGlja2V0OmFiYw"}),
                "BAD_USER_INPUT",
            ),
            (
                "tickets queue cursor",
                "query($a: String) { tickets(after: $a) { totalCount } }".into(),
                json!({"a": queue_cursor}),
                "BAD_USER_INPUT",
            ),
            (
                "queue garbage after",
                "query($a: String) { queue(after: $a) { totalCount } }".into(),
                json!({"a": "garbage!!"}),
                "BAD_USER_INPUT",
            ),
            (
                "queue ticket cursor",
                "query($a: String) { queue(after: $a) { totalCount } }".into(),
                json!({"a": ticket_cursor}),
                "BAD_USER_INPUT",
            ),
            (
                "status enum",
                "query { tickets(filter: {status: [DONE]}) { totalCount } }".into(),
                json!({}),
                "BAD_USER_INPUT",
            ),
            (
                "priority enum variable",
                "query($f: TicketFilter) { tickets(filter: $f) { totalCount } }".into(),
                json!({"f": {"priority": ["SUPER"]}}),
                "BAD_USER_INPUT",
            ),
            (
                "queue malformed division",
                "query { queue(divisionId: \"billing\") { totalCount } }".into(),
                json!({}),
                "BAD_USER_INPUT",
            ),
            (
                "queue unknown division",
                format!("query {{ queue(divisionId: \"{unknown_division}\") {{ totalCount }} }}"),
                json!({}),
                "NOT_FOUND",
            ),
        ];
        for (why, query, variables, code) in bad {
            let response = server.graphql(Some(&admin), &query, variables).await;
            assert_refused(&response, code, &format!("{b:?}: {why}"));
        }
        // Bulk calls are bounded.
        let ids: Vec<String> = (0..501).map(|i| format!("id-{i}")).collect();
        for mutation in [
            "mutation($ids: [ID!]!) { bulkAssignTickets(ids: $ids, agentId: \"ann\") { total } }",
            "mutation($ids: [ID!]!) { bulkUpdateTicketPriority(ids: $ids, priority: LOW) { total } }",
        ] {
            let response = server.graphql(Some(&admin), mutation, json!({ "ids": ids })).await;
            assert_refused(&response, "BAD_USER_INPUT", &format!("{b:?}: 501 ids"));
        }
        // The bounds themselves are fine.
        for query in [
            "{ tickets(first: 1) { totalCount } }",
            "{ tickets(first: 100) { totalCount } }",
            "{ queue(first: 100) { totalCount } }",
        ] {
            let data = server.data(&admin, query, json!({})).await;
            let total = data.as_object().unwrap().values().next().unwrap()["totalCount"].clone();
            assert_eq!(total, 3, "{b:?}: {query}");
        }
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn queries_deeper_than_the_limit_are_refused() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        let admin = admin();
        let nest = |levels: usize| {
            let mut query = "name".to_string();
            for _ in 0..levels {
                query = format!("ofType {{ {query} }}");
            }
            format!("{{ __schema {{ types {{ fields {{ type {{ {query} }} }} }} }} }}")
        };
        let response = server.graphql(Some(&admin), &nest(20), json!({})).await;
        assert_refused(
            &response,
            "BAD_USER_INPUT",
            &format!("{b:?}: 24 levels deep"),
        );
        assert!(
            response["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.to_lowercase().contains("deep")),
            "{b:?}: the refusal says the query is too deep: {response}"
        );
        // Without a token the depth check still answers with a code.
        let response = server.graphql(None, &nest(20), json!({})).await;
        assert!(error_code(&response).is_some(), "{b:?}: {response}");
        // A query within the limit is served.
        let shallow = server.graphql(Some(&admin), &nest(3), json!({})).await;
        assert!(shallow.get("errors").is_none(), "{b:?}: {shallow}");
        let real = server
            .data(
                &admin,
                "{ queue { edges { node { ticket { comments { id } } } } } }",
                json!({}),
            )
            .await;
        assert_eq!(real["queue"]["edges"], json!([]), "{b:?}");
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn queries_costlier_than_the_limit_are_refused() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        let admin = admin();
        server.create_ticket_id(&admin, "one").await;
        let page = "tickets(first: 100) { edges { cursor node { id number subject status
            priority queuePosition comments { id text authorId createdAt } } } }";
        let one = server
            .data(&admin, &format!("{{ a: {page} }}"), json!({}))
            .await;
        assert_eq!(one["a"]["edges"].as_array().map(Vec::len), Some(1), "{b:?}");
        // Each alias asks for 100 tickets with their comments: far beyond the budget.
        let many: Vec<String> = (0..20).map(|i| format!("a{i}: {page}")).collect();
        let response = server
            .graphql(
                Some(&admin),
                &format!("{{ {} }}", many.join(" ")),
                json!({}),
            )
            .await;
        assert_refused(&response, "BAD_USER_INPUT", &format!("{b:?}: 20 big pages"));
        assert!(
            response["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.to_lowercase().contains("complex")),
            "{b:?}: {response}"
        );
        server.stop().await;
    }
}

/// Runs a refused mutation and checks the code, that the message names the ticket and
/// contains `why`, and that nothing changed.
async fn refused(server: &Server, db: &TestDb, token: &str, mutation: &str, id: &str, why: &str) {
    let admin = admin();
    let before = ticket(server, &admin, id).await;
    let events = event_count(db).await;
    let response = server
        .graphql(Some(token), mutation, json!({ "id": id }))
        .await;
    let b = db.backend;
    assert_refused(
        &response,
        "INVALID_TRANSITION",
        &format!("{b:?}: {mutation}"),
    );
    let message = response["errors"][0]["message"]
        .as_str()
        .unwrap_or_default();
    let number = before["number"].as_i64().unwrap();
    let status = before["status"].as_str().unwrap();
    assert!(
        message.contains(&format!("#{number}"))
            && message.contains(status)
            && message.contains(why),
        "{b:?}: the message of {mutation} should name #{number}, {status} and '{why}': {message}"
    );
    assert_eq!(
        ticket(server, &admin, id).await,
        before,
        "{b:?}: {mutation} changed the ticket"
    );
    assert_eq!(
        event_count(db).await,
        events,
        "{b:?}: {mutation} wrote events"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_transitions_say_why() {
    for db in TestDb::all().await {
        let server = Server::start(&db).await;
        let admin = admin();
        let ann = agent("ann");
        let bob = agent("bob");
        server.register_agents(&admin, &["ann", "bob"]).await;
        let queued = server.create_ticket_id(&admin, "Queued").await;
        let assigned = server.create_ticket_id(&admin, "Assigned").await;
        server.claim_ticket(&ann, &assigned).await;
        let resolved = server.create_ticket_id(&admin, "Resolved").await;
        server.claim_ticket(&ann, &resolved).await;
        server.resolve_ticket(&ann, &resolved).await;
        ok(
            &server,
            &admin,
            "mutation($id: ID!) { rateTicket(id: $id, rating: 4) { id } }",
            &resolved,
        )
        .await;
        let closed = server.create_ticket_id(&admin, "Closed").await;
        ok(
            &server,
            &admin,
            "mutation($id: ID!) { closeTicket(id: $id) { id } }",
            &closed,
        )
        .await;

        let cases: Vec<(&String, &str, &String, &str)> = vec![
            (
                &bob,
                "mutation($id: ID!) { claimTicket(id: $id) { id } }",
                &assigned,
                "only a queued ticket can be claimed",
            ),
            (
                &ann,
                "mutation($id: ID!) { claimTicket(id: $id) { id } }",
                &assigned,
                "only a queued ticket can be claimed",
            ),
            (
                &ann,
                "mutation($id: ID!) { resolveTicket(id: $id) { id } }",
                &queued,
                "only an assigned or in-progress ticket can be resolved",
            ),
            (
                &admin,
                "mutation($id: ID!) { resolveTicket(id: $id) { id } }",
                &resolved,
                "only an assigned or in-progress ticket can be resolved",
            ),
            (
                &admin,
                "mutation($id: ID!) { rateTicket(id: $id, rating: 5) { id } }",
                &queued,
                "only a resolved or closed ticket can be rated",
            ),
            (
                &admin,
                "mutation($id: ID!) { rateTicket(id: $id, rating: 5) { id } }",
                &assigned,
                "only a resolved or closed ticket can be rated",
            ),
            (
                &admin,
                "mutation($id: ID!) { rateTicket(id: $id, rating: 5) { id } }",
                &resolved,
                "rated already",
            ),
            (
                &admin,
                "mutation($id: ID!) { reopenTicket(id: $id) { id } }",
                &queued,
                "only a resolved or closed ticket can be reopened",
            ),
            (
                &ann,
                "mutation($id: ID!) { reopenTicket(id: $id) { id } }",
                &assigned,
                "only a resolved or closed ticket can be reopened",
            ),
            (
                &admin,
                "mutation($id: ID!) { startTicket(id: $id) { id } }",
                &queued,
                "only an assigned ticket can be started",
            ),
            (
                &admin,
                "mutation($id: ID!) { closeTicket(id: $id) { id } }",
                &closed,
                "already closed",
            ),
            (
                &ann,
                "mutation($id: ID!) { closeTicket(id: $id) { id } }",
                &assigned,
                "only a resolved ticket can be closed",
            ),
            (
                &admin,
                "mutation($id: ID!) { changeTicketPriority(id: $id, priority: URGENT) { id } }",
                &resolved,
                "cannot change",
            ),
            (
                &admin,
                "mutation($id: ID!) { assignTicket(id: $id, agentId: \"ann\") { id } }",
                &assigned,
                "already assigned",
            ),
            (
                &admin,
                "mutation($id: ID!) { assignTicket(id: $id, agentId: \"bob\") { id } }",
                &closed,
                "reopened first",
            ),
            (
                &ann,
                "mutation($id: ID!) { addComment(ticketId: $id, text: \"hello\") { id } }",
                &closed,
                "reopen it to comment",
            ),
        ];
        for (token, mutation, id, why) in cases {
            refused(&server, &db, token, mutation, id, why).await;
        }
        server.stop().await;
    }
}
