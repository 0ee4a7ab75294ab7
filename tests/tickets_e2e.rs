//! End to end: the ticket lifecycle against the real server, on every backend.

mod common;

use common::{admin, agent, error_code, Server, TestDb};
use projections::db::Backend as DbBackend;
use serde_json::{json, Value};
use sqlx::Row;

const TICKET_FIELDS: &str = "id number subject description status priority divisionId assigneeId
    createdAt updatedAt assignedAt resolvedAt closedAt resolution rating feedback createdBy
    queuePosition";

/// Creates a ticket from a `CreateTicketInput` and returns it with [`TICKET_FIELDS`].
async fn create(server: &Server, token: &str, input: Value) -> Value {
    server.create_ticket(token, input, TICKET_FIELDS).await
}

/// Runs a mutation `name(id: $id ...)` returning a ticket; panics on errors.
async fn act(server: &Server, token: &str, mutation: &str, id: &str) -> Value {
    let name = mutation
        .split('(')
        .next()
        .expect("mutation name")
        .to_string();
    let query = format!("mutation($id: ID!) {{ {mutation} {{ {TICKET_FIELDS} }} }}");
    server.data(token, &query, json!({ "id": id })).await[name.as_str()].clone()
}

/// The ticket `id` with [`TICKET_FIELDS`] and its comments.
async fn ticket(server: &Server, token: &str, id: &str) -> Value {
    let fields = format!("{TICKET_FIELDS} comments {{ id text authorId createdAt }}");
    server.ticket(token, id, &fields).await
}

/// `(position, number)` of every entry of a queue, read in one page.
async fn queue(server: &Server, token: &str, division: Option<&str>) -> Vec<(i64, i64)> {
    let data = server
        .data(
            token,
            "query($d: ID) { queue(divisionId: $d, first: 100) { totalCount
               edges { node { position ticket { number } } } } }",
            json!({ "d": division }),
        )
        .await;
    let entries: Vec<(i64, i64)> = data["queue"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| {
            (
                e["node"]["position"].as_i64().expect("position"),
                e["node"]["ticket"]["number"].as_i64().expect("number"),
            )
        })
        .collect();
    assert_eq!(
        data["queue"]["totalCount"].as_i64(),
        Some(entries.len() as i64)
    );
    entries
}

/// Registers agents with the given ids (names too) serving `divisions`, in the organization
/// of the admin `token`; panics on errors.
async fn register_agents_in(server: &Server, token: &str, ids: &[&str], divisions: &[&str]) {
    for id in ids {
        server
            .data(
                token,
                "mutation($id: ID!, $d: [ID!]) { registerAgent(input: {id: $id, name: $id, divisionIds: $d}) { id } }",
                json!({ "id": id, "d": divisions }),
            )
            .await;
    }
}

/// Numbers of the tickets matching `filter`, in list order (newest first).
async fn numbers(server: &Server, token: &str, filter: Value) -> Vec<i64> {
    let data = server
        .data(
            token,
            "query($f: TicketFilter) { tickets(filter: $f, first: 100) { totalCount
               edges { node { number } } } }",
            json!({ "f": filter }),
        )
        .await;
    let numbers: Vec<i64> = data["tickets"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"]["number"].as_i64().expect("number"))
        .collect();
    assert_eq!(
        data["tickets"]["totalCount"].as_i64(),
        Some(numbers.len() as i64),
        "totalCount of {filter}"
    );
    numbers
}

#[tokio::test(flavor = "multi_thread")]
async fn create_queue_claim_resolve_rate_and_restart() {
    for db in TestDb::all().await {
        let server = Server::start(&db).await;
        let admin = admin();
        let agent = agent("ann");
        server.register_agents(&admin, &["ann"]).await;
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
        server.claim_ticket(&agent, &id).await;
        server.resolve_ticket(&agent, &id).await;
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

#[tokio::test(flavor = "multi_thread")]
async fn full_lifecycle_with_comments_close_and_reopen() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        let admin = admin();
        let ann = agent("ann");
        server.register_agents(&admin, &["ann", "bob"]).await;

        let created = create(
            &server,
            &admin,
            json!({"subject": "  VPN drops every hour  ", "description": "Since Monday"}),
        )
        .await;
        let id = created["id"].as_str().unwrap().to_string();
        assert_eq!(created["number"], 1, "{b:?}");
        assert_eq!(created["subject"], "VPN drops every hour", "{b:?}: trimmed");
        assert_eq!(created["description"], "Since Monday", "{b:?}");
        assert_eq!(created["status"], "QUEUED", "{b:?}");
        assert_eq!(created["priority"], "MEDIUM", "{b:?}");
        assert_eq!(created["queuePosition"], 1, "{b:?}");
        assert_eq!(created["createdBy"], "boss", "{b:?}");
        assert_eq!(created["assigneeId"], Value::Null, "{b:?}");
        assert_eq!(created["assignedAt"], Value::Null, "{b:?}");

        let claimed = act(&server, &ann, "claimTicket(id: $id)", &id).await;
        assert_eq!(claimed["status"], "ASSIGNED", "{b:?}");
        assert_eq!(claimed["assigneeId"], "ann", "{b:?}");
        assert_eq!(claimed["queuePosition"], Value::Null, "{b:?}");
        assert!(claimed["assignedAt"].is_string(), "{b:?}: {claimed}");
        assert_eq!(queue(&server, &admin, None).await, vec![], "{b:?}");

        let started = act(&server, &ann, "startTicket(id: $id)", &id).await;
        assert_eq!(started["status"], "IN_PROGRESS", "{b:?}");

        let first = server
            .data(
                &ann,
                "mutation($id: ID!) { addComment(ticketId: $id, text: \"  Looking into it \") { id text authorId createdAt } }",
                json!({"id": id}),
            )
            .await["addComment"]
            .clone();
        assert_eq!(first["text"], "Looking into it", "{b:?}");
        assert_eq!(first["authorId"], "ann", "{b:?}");
        let second = server
            .data(
                &admin,
                "mutation($id: ID!) { addComment(ticketId: $id, text: \"Customer called again\") { id text authorId } }",
                json!({"id": id}),
            )
            .await["addComment"]
            .clone();
        assert_ne!(first["id"], second["id"], "{b:?}");

        let resolved = server
            .data(
                &ann,
                &format!(
                    "mutation($id: ID!) {{ resolveTicket(id: $id, resolution: \"Replaced the router\") {{ {TICKET_FIELDS} }} }}"
                ),
                json!({"id": id}),
            )
            .await["resolveTicket"]
            .clone();
        assert_eq!(resolved["status"], "RESOLVED", "{b:?}");
        assert_eq!(resolved["resolution"], "Replaced the router", "{b:?}");
        assert!(resolved["resolvedAt"].is_string(), "{b:?}: {resolved}");
        assert_eq!(resolved["assigneeId"], "ann", "{b:?}");

        // The last agent may close it.
        let closed = act(&server, &ann, "closeTicket(id: $id)", &id).await;
        assert_eq!(closed["status"], "CLOSED", "{b:?}");
        assert!(closed["closedAt"].is_string(), "{b:?}: {closed}");

        let full = ticket(&server, &admin, &id).await;
        let comments: Vec<(&str, &str)> = full["comments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["text"].as_str().unwrap(), c["authorId"].as_str().unwrap()))
            .collect();
        assert_eq!(
            comments,
            vec![
                ("Looking into it", "ann"),
                ("Customer called again", "boss")
            ],
            "{b:?}"
        );
        assert_eq!(full["comments"][0]["id"], first["id"], "{b:?}");

        // Another ticket waits meanwhile: the reopened one queues behind it.
        let waiting = server.create_ticket_id(&admin, "Mouse broken").await;
        let reopened = server
            .data(
                &admin,
                &format!(
                    "mutation($id: ID!) {{ reopenTicket(id: $id, reason: \"It happened again\") {{ {TICKET_FIELDS} }} }}"
                ),
                json!({"id": id}),
            )
            .await["reopenTicket"]
            .clone();
        assert_eq!(reopened["status"], "QUEUED", "{b:?}");
        assert_eq!(reopened["queuePosition"], 2, "{b:?}");
        assert_eq!(reopened["assigneeId"], Value::Null, "{b:?}");
        assert_eq!(reopened["resolvedAt"], Value::Null, "{b:?}");
        assert_eq!(reopened["closedAt"], Value::Null, "{b:?}");
        assert_eq!(reopened["resolution"], Value::Null, "{b:?}");
        assert_eq!(
            queue(&server, &admin, None).await,
            vec![(1, 2), (2, 1)],
            "{b:?}"
        );
        assert_eq!(
            ticket(&server, &admin, &waiting).await["queuePosition"],
            1,
            "{b:?}"
        );
        // Comments survive a reopen.
        assert_eq!(
            ticket(&server, &admin, &id).await["comments"]
                .as_array()
                .unwrap()
                .len(),
            2,
            "{b:?}"
        );

        // Claimed again by someone else, worked and resolved.
        let bob = agent("bob");
        let again = act(&server, &bob, "claimTicket(id: $id)", &id).await;
        assert_eq!(again["assigneeId"], "bob", "{b:?}");
        assert_eq!(again["status"], "ASSIGNED", "{b:?}");
        assert_eq!(queue(&server, &admin, None).await, vec![(1, 2)], "{b:?}");
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn queue_orders_by_priority_then_age_and_follows_priority_changes() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        let admin = admin();
        let agent = agent("ann");
        server.register_agents(&admin, &["ann"]).await;
        let priorities = ["LOW", "MEDIUM", "URGENT", "HIGH", "MEDIUM", "URGENT", "LOW"];
        let mut ids = Vec::new();
        for (i, p) in priorities.iter().enumerate() {
            ids.push(
                server
                    .create_ticket_id_with(
                        &admin,
                        json!({"subject": format!("ticket {}", i + 1), "priority": p}),
                    )
                    .await,
            );
        }
        let expected = [3, 6, 4, 2, 5, 1, 7];
        let check = |order: &[i64]| {
            order
                .iter()
                .enumerate()
                .map(|(i, n)| (i as i64 + 1, *n))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            queue(&server, &admin, None).await,
            check(&expected),
            "{b:?}"
        );
        for (position, number) in check(&expected) {
            let t = ticket(&server, &admin, &ids[number as usize - 1]).await;
            assert_eq!(
                t["queuePosition"], position,
                "{b:?}: queuePosition of #{number}"
            );
        }

        // #7 LOW -> URGENT: behind the older URGENT tickets, ahead of everything else.
        let changed = act(
            &server,
            &admin,
            "changeTicketPriority(id: $id, priority: URGENT)",
            &ids[6],
        )
        .await;
        assert_eq!(changed["priority"], "URGENT", "{b:?}");
        assert_eq!(changed["queuePosition"], 3, "{b:?}");
        // #1 LOW -> HIGH: the oldest HIGH, so ahead of #4.
        let changed = act(
            &server,
            &agent,
            "changeTicketPriority(id: $id, priority: HIGH)",
            &ids[0],
        )
        .await;
        assert_eq!(changed["queuePosition"], 4, "{b:?}");
        let expected = [3, 6, 7, 1, 4, 2, 5];
        assert_eq!(
            queue(&server, &admin, None).await,
            check(&expected),
            "{b:?}"
        );
        // Demoting #3 URGENT -> LOW sends it to the end.
        let changed = act(
            &server,
            &admin,
            "changeTicketPriority(id: $id, priority: LOW)",
            &ids[2],
        )
        .await;
        assert_eq!(changed["queuePosition"], 7, "{b:?}");
        let expected = [6, 7, 1, 4, 2, 5, 3];
        assert_eq!(
            queue(&server, &admin, None).await,
            check(&expected),
            "{b:?}"
        );

        // Serving the head moves everyone up.
        act(&server, &agent, "claimTicket(id: $id)", &ids[5]).await;
        let expected = [7, 1, 4, 2, 5, 3];
        assert_eq!(
            queue(&server, &admin, None).await,
            check(&expected),
            "{b:?}"
        );
        assert_eq!(
            ticket(&server, &admin, &ids[2]).await["queuePosition"],
            6,
            "{b:?}"
        );
        assert_eq!(
            ticket(&server, &admin, &ids[5]).await["queuePosition"],
            Value::Null,
            "{b:?}"
        );
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn division_queues_are_separate() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        let admin = admin();
        let billing = server.create_division(&admin, "Billing").await;
        let tech = server.create_division(&admin, "Tech").await;
        let divisions = server
            .data(&admin, "{ divisions { id name } }", json!({}))
            .await;
        let mut names: Vec<&str> = divisions["divisions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec!["Billing", "Tech"], "{b:?}");

        let plain = server.create_ticket_id(&admin, "No division").await;
        let invoice = create(
            &server,
            &admin,
            json!({"subject": "Invoice wrong", "divisionId": billing}),
        )
        .await;
        assert_eq!(invoice["divisionId"], billing.as_str(), "{b:?}");
        assert_eq!(invoice["queuePosition"], 1, "{b:?}");
        let refund = create(
            &server,
            &admin,
            json!({"subject": "Refund", "divisionId": billing, "priority": "URGENT"}),
        )
        .await;
        assert_eq!(refund["queuePosition"], 1, "{b:?}");
        create(
            &server,
            &admin,
            json!({"subject": "Laptop", "divisionId": tech}),
        )
        .await;

        assert_eq!(queue(&server, &admin, None).await, vec![(1, 1)], "{b:?}");
        assert_eq!(
            queue(&server, &admin, Some(&billing)).await,
            vec![(1, 3), (2, 2)],
            "{b:?}"
        );
        assert_eq!(
            queue(&server, &admin, Some(&tech)).await,
            vec![(1, 4)],
            "{b:?}"
        );
        assert_eq!(
            ticket(&server, &admin, invoice["id"].as_str().unwrap()).await["queuePosition"],
            2,
            "{b:?}"
        );
        assert_eq!(
            ticket(&server, &admin, &plain).await["queuePosition"],
            1,
            "{b:?}"
        );
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn priority_is_detected_from_keywords_unless_explicit() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        let service = Server::token("acme", "service", "whatsapp");
        let cases = [
            (json!({"subject": "Server GAWAT, tolong!"}), "URGENT"),
            (json!({"subject": "ini tidak penting"}), "LOW"),
            (json!({"subject": "Tidak Penting sama sekali"}), "LOW"),
            (json!({"subject": "This is urgent"}), "URGENT"),
            (json!({"subject": "bisa besok saja"}), "LOW"),
            (
                json!({"subject": "Printer", "description": "kondisi gawat"}),
                "URGENT",
            ),
            (
                json!({"subject": "nanti saja, eh ternyata gawat"}),
                "URGENT",
            ),
            (json!({"subject": "sangat penting"}), "MEDIUM"),
            (json!({"subject": "menantikan jawaban"}), "MEDIUM"),
            (json!({"subject": "Printer jammed"}), "MEDIUM"),
            (json!({"subject": "gawat", "priority": "LOW"}), "LOW"),
            (
                json!({"subject": "tidak penting", "priority": "HIGH"}),
                "HIGH",
            ),
            (json!({"subject": "boring", "priority": "URGENT"}), "URGENT"),
        ];
        for (input, expected) in cases {
            let created = create(&server, &service, input.clone()).await;
            assert_eq!(created["priority"], expected, "{b:?}: {input}");
        }
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ticket_numbers_increase_per_organization() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        let acme = admin();
        let globex = Server::token("globex", "admin", "hank");
        let mut seen = Vec::new();
        for (token, org) in [
            (&acme, "acme"),
            (&acme, "acme"),
            (&globex, "globex"),
            (&acme, "acme"),
            (&globex, "globex"),
            (&acme, "acme"),
        ] {
            let created = create(&server, token, json!({"subject": "Hello"})).await;
            seen.push((org, created["number"].as_i64().unwrap()));
        }
        assert_eq!(
            seen,
            vec![
                ("acme", 1),
                ("acme", 2),
                ("globex", 1),
                ("acme", 3),
                ("globex", 2),
                ("acme", 4)
            ],
            "{b:?}"
        );
        assert_eq!(
            numbers(&server, &acme, json!(null)).await,
            vec![4, 3, 2, 1],
            "{b:?}"
        );
        assert_eq!(
            numbers(&server, &globex, json!(null)).await,
            vec![2, 1],
            "{b:?}"
        );
        server.stop().await;
    }
}

/// Walks a connection page by page (`first: 2`) and returns each page's numbers and
/// (hasNextPage, totalCount).
async fn walk(server: &Server, token: &str, query: &str, field: &str) -> Vec<(Vec<Value>, bool)> {
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let data = server.data(token, query, json!({ "after": after })).await;
        let connection = &data[field];
        let items: Vec<Value> = connection["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"].clone())
            .collect();
        let has_next = connection["pageInfo"]["hasNextPage"].as_bool().unwrap();
        let end = connection["pageInfo"]["endCursor"]
            .as_str()
            .map(String::from);
        let last_cursor = connection["edges"]
            .as_array()
            .unwrap()
            .last()
            .map(|e| e["cursor"].as_str().unwrap().to_string());
        assert_eq!(end, last_cursor, "endCursor is the last edge's cursor");
        assert_eq!(connection["totalCount"], 5, "totalCount on every page");
        pages.push((items, has_next));
        if !has_next {
            break;
        }
        assert!(pages.len() < 10, "pagination does not end");
        after = end;
    }
    pages
}

#[tokio::test(flavor = "multi_thread")]
async fn tickets_and_queue_paginate_relay_style() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        let admin = admin();
        for p in ["LOW", "HIGH", "MEDIUM", "URGENT", "HIGH"] {
            server
                .create_ticket_id_with(&admin, json!({"subject": "Paged", "priority": p}))
                .await;
        }
        let pages = walk(
            &server,
            &admin,
            "query($after: String) { tickets(first: 2, after: $after) { totalCount
               edges { cursor node { number } } pageInfo { hasNextPage endCursor } } }",
            "tickets",
        )
        .await;
        let shape: Vec<(Vec<i64>, bool)> = pages
            .iter()
            .map(|(items, next)| {
                (
                    items
                        .iter()
                        .map(|n| n["number"].as_i64().unwrap())
                        .collect(),
                    *next,
                )
            })
            .collect();
        assert_eq!(
            shape,
            vec![(vec![5, 4], true), (vec![3, 2], true), (vec![1], false)],
            "{b:?}"
        );

        let pages = walk(
            &server,
            &admin,
            "query($after: String) { queue(first: 2, after: $after) { totalCount
               edges { cursor node { position ticket { number } } } pageInfo { hasNextPage endCursor } } }",
            "queue",
        )
        .await;
        let shape: Vec<(Vec<(i64, i64)>, bool)> = pages
            .iter()
            .map(|(items, next)| {
                (
                    items
                        .iter()
                        .map(|n| {
                            (
                                n["position"].as_i64().unwrap(),
                                n["ticket"]["number"].as_i64().unwrap(),
                            )
                        })
                        .collect(),
                    *next,
                )
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                (vec![(1, 4), (2, 2)], true),
                (vec![(3, 5), (4, 3)], true),
                (vec![(5, 1)], false)
            ],
            "{b:?}"
        );

        // Past the end: an empty page.
        let last = server
            .data(
                &admin,
                "{ tickets(first: 5) { pageInfo { endCursor } } }",
                json!({}),
            )
            .await;
        let end = last["tickets"]["pageInfo"]["endCursor"].as_str().unwrap();
        let empty = server
            .data(
                &admin,
                "query($a: String) { tickets(first: 5, after: $a) { totalCount edges { cursor }
                   pageInfo { hasNextPage endCursor } } }",
                json!({ "a": end }),
            )
            .await;
        assert_eq!(
            empty["tickets"],
            json!({"totalCount": 5, "edges": [], "pageInfo": {"hasNextPage": false, "endCursor": null}}),
            "{b:?}"
        );
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_ticket_filter_field_narrows_the_list() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        let admin = admin();
        let ann = agent("ann");
        let bob = agent("bob");
        let billing = server.create_division(&admin, "Billing").await;
        // Both serve billing: they claim tickets of its queue below.
        register_agents_in(&server, &admin, &["ann", "bob"], &[&billing]).await;

        // #1 printer, URGENT, queued
        server
            .create_ticket_id_with(
                &admin,
                json!({"subject": "Printer on fire", "priority": "URGENT"}),
            )
            .await;
        // #2 HIGH, ann, assigned; "printer" only in the description
        let t2 = server
            .create_ticket_id_with(
                &admin,
                json!({"subject": "Paper", "description": "the PRINTER needs paper", "priority": "HIGH"}),
            )
            .await;
        act(&server, &ann, "claimTicket(id: $id)", &t2).await;
        // #3 billing, LOW, bob, in progress
        let t3 = server
            .create_ticket_id_with(
                &admin,
                json!({"subject": "Invoice 100% wrong", "divisionId": billing, "priority": "LOW"}),
            )
            .await;
        act(&server, &bob, "claimTicket(id: $id)", &t3).await;
        act(&server, &bob, "startTicket(id: $id)", &t3).await;
        // #4 billing, MEDIUM, ann, resolved
        let t4 = server
            .create_ticket_id_with(
                &admin,
                json!({"subject": "Refund_request", "divisionId": billing}),
            )
            .await;
        act(&server, &ann, "claimTicket(id: $id)", &t4).await;
        act(&server, &ann, "resolveTicket(id: $id)", &t4).await;
        // #5 MEDIUM, closed by an admin while queued
        let t5 = server.create_ticket_id(&admin, "Duplicate of #1").await;
        act(&server, &admin, "closeTicket(id: $id)", &t5).await;

        let cases = [
            (json!(null), vec![5, 4, 3, 2, 1]),
            (json!({}), vec![5, 4, 3, 2, 1]),
            (json!({"status": ["QUEUED"]}), vec![1]),
            (json!({"status": ["ASSIGNED", "IN_PROGRESS"]}), vec![3, 2]),
            (json!({"status": ["RESOLVED", "CLOSED"]}), vec![5, 4]),
            (json!({"status": []}), vec![5, 4, 3, 2, 1]),
            (json!({"priority": ["URGENT"]}), vec![1]),
            (json!({"priority": ["LOW", "HIGH"]}), vec![3, 2]),
            (json!({"priority": ["MEDIUM"]}), vec![5, 4]),
            (json!({"divisionId": billing}), vec![4, 3]),
            (json!({"assigneeId": "ann"}), vec![4, 2]),
            (json!({"assigneeId": "bob"}), vec![3]),
            (json!({"assigneeId": "nobody"}), vec![]),
            (json!({"search": "printer"}), vec![2, 1]),
            (json!({"search": "PRINTER"}), vec![2, 1]),
            (json!({"search": "  Printer  "}), vec![2, 1]),
            (json!({"search": "on fire"}), vec![1]),
            (json!({"search": "#3"}), vec![3]),
            (json!({"search": "4"}), vec![4]),
            // LIKE wildcards are literal.
            (json!({"search": "100%"}), vec![3]),
            (json!({"search": "_"}), vec![4]),
            (json!({"search": "%"}), vec![3]),
            (json!({"search": "nothing like this"}), vec![]),
            (json!({"search": ""}), vec![5, 4, 3, 2, 1]),
            // Fields combine with AND.
            (json!({"divisionId": billing, "assigneeId": "ann"}), vec![4]),
            (
                json!({"status": ["QUEUED", "ASSIGNED"], "search": "printer"}),
                vec![2, 1],
            ),
            (
                json!({"priority": ["MEDIUM"], "status": ["CLOSED"]}),
                vec![5],
            ),
        ];
        for (filter, expected) in cases {
            assert_eq!(
                numbers(&server, &admin, filter.clone()).await,
                expected,
                "{b:?}: filter {filter}"
            );
        }
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bulk_operations_report_per_item_and_keep_successes() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        let admin = admin();
        let ann = agent("ann");
        server.register_agents(&admin, &["ann", "bob"]).await;
        let t1 = server.create_ticket_id(&admin, "one").await;
        let t2 = server.create_ticket_id(&admin, "two").await;
        let t3 = server
            .create_ticket_id_with(&admin, json!({"subject": "three", "priority": "LOW"}))
            .await;
        let done = server.create_ticket_id(&admin, "done").await;
        act(&server, &ann, "claimTicket(id: $id)", &done).await;
        act(&server, &ann, "resolveTicket(id: $id)", &done).await;
        let unknown = uuid::Uuid::new_v4().to_string();

        let result = server
            .data(
                &admin,
                "mutation($ids: [ID!]!) { bulkAssignTickets(ids: $ids, agentId: \"bob\") {
                   total succeeded failed results { id success error code } } }",
                json!({"ids": [t1, unknown, "not-a-ticket", done, t2]}),
            )
            .await["bulkAssignTickets"]
            .clone();
        assert_eq!(result["total"], 5, "{b:?}: {result}");
        assert_eq!(result["succeeded"], 2, "{b:?}: {result}");
        assert_eq!(result["failed"], 3, "{b:?}: {result}");
        let results = result["results"].as_array().unwrap();
        let summary: Vec<(&str, bool, Option<&str>)> = results
            .iter()
            .map(|r| {
                (
                    r["id"].as_str().unwrap(),
                    r["success"].as_bool().unwrap(),
                    r["code"].as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (t1.as_str(), true, None),
                (unknown.as_str(), false, Some("NOT_FOUND")),
                ("not-a-ticket", false, Some("BAD_USER_INPUT")),
                (done.as_str(), false, Some("INVALID_TRANSITION")),
                (t2.as_str(), true, None),
            ],
            "{b:?}"
        );
        for r in results {
            assert_eq!(
                r["error"].is_string(),
                !r["success"].as_bool().unwrap(),
                "{b:?}: an error message exactly for failures: {r}"
            );
        }
        for id in [&t1, &t2] {
            let t = ticket(&server, &admin, id).await;
            assert_eq!(
                (t["status"].as_str(), t["assigneeId"].as_str()),
                (Some("ASSIGNED"), Some("bob")),
                "{b:?}"
            );
        }
        let t = ticket(&server, &admin, &done).await;
        assert_eq!(
            (t["status"].as_str(), t["assigneeId"].as_str()),
            (Some("RESOLVED"), Some("ann")),
            "{b:?}"
        );
        assert_eq!(
            ticket(&server, &admin, &t3).await["status"],
            "QUEUED",
            "{b:?}"
        );

        let result = server
            .data(
                &admin,
                "mutation($ids: [ID!]!) { bulkUpdateTicketPriority(ids: $ids, priority: URGENT) {
                   total succeeded failed results { id success error code } } }",
                json!({"ids": [t1, unknown, "#2", done, t3]}),
            )
            .await["bulkUpdateTicketPriority"]
            .clone();
        assert_eq!(
            (&result["total"], &result["succeeded"], &result["failed"]),
            (&json!(5), &json!(2), &json!(3)),
            "{b:?}: {result}"
        );
        let flags: Vec<(bool, Option<&str>)> = result["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["success"].as_bool().unwrap(), r["code"].as_str()))
            .collect();
        assert_eq!(
            flags,
            vec![
                (true, None),
                (false, Some("NOT_FOUND")),
                (false, Some("BAD_USER_INPUT")),
                (false, Some("INVALID_TRANSITION")),
                (true, None)
            ],
            "{b:?}"
        );
        let priority = |id: &str| {
            let server = &server;
            let admin = &admin;
            let id = id.to_string();
            async move { ticket(server, admin, &id).await["priority"].clone() }
        };
        assert_eq!(priority(&t1).await, "URGENT", "{b:?}");
        assert_eq!(priority(&t3).await, "URGENT", "{b:?}");
        assert_eq!(priority(&t2).await, "MEDIUM", "{b:?}");
        assert_eq!(priority(&done).await, "MEDIUM", "{b:?}");
        // #3 now heads the queue.
        assert_eq!(queue(&server, &admin, None).await, vec![(1, 3)], "{b:?}");

        // An empty list is fine.
        let empty = server
            .data(
                &admin,
                "mutation { bulkAssignTickets(ids: [], agentId: \"bob\") { total succeeded failed results { id } } }",
                json!({}),
            )
            .await;
        assert_eq!(
            empty["bulkAssignTickets"],
            json!({"total": 0, "succeeded": 0, "failed": 0, "results": []}),
            "{b:?}"
        );
        server.stop().await;
    }
}

/// A varied workload over two organizations: divisions, every transition, comments,
/// priority changes, ratings, a reopen.
async fn workload(server: &Server) {
    let admin = admin();
    let ann = agent("ann");
    let bob = agent("bob");
    let service = Server::token("acme", "service", "whatsapp");
    let other = Server::token("globex", "admin", "hank");
    let billing = server.create_division(&admin, "Billing").await;
    server.create_division(&other, "Globex support").await;
    // The claiming agents serve billing (every third ticket is a billing one); carol only
    // gets an admin assignment; gus is globex's.
    for (token, id, name, divisions) in [
        (&admin, "ann", "Ann", vec![billing.as_str()]),
        (&admin, "bob", "Bob", vec![billing.as_str()]),
        (&admin, "carol", "Carol", vec![]),
        (&other, "gus", "Gus", vec![]),
    ] {
        server
            .data(
                token,
                "mutation($id: ID!, $n: String!, $d: [ID!]) { registerAgent(input: {id: $id, name: $n, maxTickets: 7, divisionIds: $d}) { id } }",
                json!({ "id": id, "n": name, "d": divisions }),
            )
            .await;
    }
    let mut ids = Vec::new();
    for i in 0..12 {
        let mut input = json!({ "subject": format!("Problem {i}"), "description": "details" });
        if i % 3 == 0 {
            input["divisionId"] = json!(billing);
        }
        if i % 4 == 1 {
            input["subject"] = json!(format!("gawat {i}"));
        }
        let token = if i % 2 == 0 { &admin } else { &service };
        ids.push(server.create_ticket_id_with(token, input).await);
    }
    for i in 0..3 {
        create(server, &other, json!({ "subject": format!("Globex {i}") })).await;
    }
    for (i, id) in ids.iter().enumerate().take(8) {
        let agent = if i % 2 == 0 { &ann } else { &bob };
        act(server, agent, "claimTicket(id: $id)", id).await;
        server
            .data(
                agent,
                "mutation($id: ID!) { addComment(ticketId: $id, text: \"on it\") { id } }",
                json!({ "id": id }),
            )
            .await;
        if i < 6 {
            act(server, agent, "startTicket(id: $id)", id).await;
        }
        if i < 4 {
            server
                .data(
                    agent,
                    "mutation($id: ID!) { resolveTicket(id: $id, resolution: \"fixed\") { id } }",
                    json!({ "id": id }),
                )
                .await;
        }
    }
    server
        .data(
            &service,
            "mutation($id: ID!) { rateTicket(id: $id, rating: 4, feedback: \"thanks\") { id } }",
            json!({ "id": ids[0] }),
        )
        .await;
    act(server, &admin, "closeTicket(id: $id)", &ids[1]).await;
    act(server, &admin, "reopenTicket(id: $id)", &ids[2]).await;
    act(
        server,
        &admin,
        "changeTicketPriority(id: $id, priority: URGENT)",
        &ids[10],
    )
    .await;
    act(
        server,
        &admin,
        "assignTicket(id: $id, agentId: \"carol\")",
        &ids[5],
    )
    .await;
    server
        .data(
            &admin,
            "mutation($ids: [ID!]!) { bulkUpdateTicketPriority(ids: $ids, priority: LOW) { succeeded } }",
            json!({ "ids": [ids[9], ids[11]] }),
        )
        .await;
    server
        .data(
            &service,
            "mutation($id: ID!) { addComment(ticketId: $id, text: \"customer: any news?\") { id } }",
            json!({ "id": ids[9] }),
        )
        .await;
}

/// Everything a client can read, per organization.
async fn client_view(server: &Server) -> Value {
    let mut view = json!({});
    for org in ["acme", "globex"] {
        let token = Server::token(org, "admin", "boss");
        let divisions = server
            .data(&token, "{ divisions { id name } }", json!({}))
            .await;
        let mut queues = vec![];
        for division in std::iter::once(Value::Null).chain(
            divisions["divisions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["id"].clone()),
        ) {
            queues.push(
                server
                    .data(
                        &token,
                        "query($d: ID) { queue(divisionId: $d, first: 100) { totalCount
                           edges { cursor node { position waitingSince ticket { id number } } } } }",
                        json!({ "d": division }),
                    )
                    .await,
            );
        }
        let tickets = server
            .data(
                &token,
                &format!(
                    "{{ tickets(first: 100) {{ totalCount edges {{ cursor node {{ {TICKET_FIELDS}
                       comments {{ id text authorId createdAt }} }} }} }} }}"
                ),
                json!({}),
            )
            .await;
        view[org] = json!({ "divisions": divisions, "queues": queues, "tickets": tickets });
    }
    view
}

/// Every row of every projection's tables, each column as text, rows sorted (the same
/// order as by primary key for the comparison), tables by name.
async fn dump(db: &projections::Database) -> Vec<(String, Vec<Vec<Option<String>>>)> {
    let mut tables: Vec<&str> = api::helpdesk::all_projections()
        .iter()
        .flat_map(|p| p.tables().iter().copied())
        .collect();
    tables.sort();
    for required in ["tickets", "ticket_comments", "queue_entries", "divisions"] {
        assert!(tables.contains(&required), "no projection owns {required}");
    }
    let mut out = Vec::new();
    for table in tables {
        let columns: Vec<String> = match db {
            DbBackend::Sqlite(pool) => {
                sqlx::query_scalar("SELECT name FROM pragma_table_info($1) ORDER BY cid")
                    .bind(table)
                    .fetch_all(pool)
                    .await
                    .expect("columns")
            }
            DbBackend::Postgres(pool) => sqlx::query_scalar(
                "SELECT column_name::text FROM information_schema.columns
                  WHERE table_name = $1 AND table_schema = current_schema()
                  ORDER BY ordinal_position",
            )
            .bind(table)
            .fetch_all(pool)
            .await
            .expect("columns"),
        };
        assert!(columns.len() >= 2, "table {table} has columns {columns:?}");
        let select: Vec<String> = columns
            .iter()
            .map(|c| format!("CAST({c} AS TEXT)"))
            .collect();
        let sql = format!("SELECT {} FROM {table}", select.join(", "));
        let mut rows: Vec<Vec<Option<String>>> =
            projections::on_backend!(db, |pool| sqlx::query(&sql)
                .fetch_all(pool)
                .await
                .expect("dump rows")
                .iter()
                .map(|row| (0..columns.len())
                    .map(|i| row.try_get::<Option<String>, _>(i).expect("text column"))
                    .collect())
                .collect());
        // The first column is the primary key of every read-model table.
        rows.sort();
        out.push((table.to_string(), rows));
    }
    out
}

fn row_counts(dump: &[(String, Vec<Vec<Option<String>>>)]) -> Vec<(&str, usize)> {
    let known = [
        "tickets",
        "ticket_comments",
        "queue_entries",
        "divisions",
        "agents",
    ];
    dump.iter()
        .filter(|(t, _)| known.contains(&t.as_str()))
        .map(|(t, rows)| (t.as_str(), rows.len()))
        .collect()
}

/// What the workload leaves in the read models (tables by name).
const EXPECTED_ROWS: [(&str, usize); 5] = [
    ("agents", 4),
    ("divisions", 2),
    ("queue_entries", 8),
    ("ticket_comments", 9),
    ("tickets", 15),
];

#[tokio::test(flavor = "multi_thread")]
async fn restart_keeps_all_data() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        workload(&server).await;
        let before = client_view(&server).await;
        assert_eq!(
            before["acme"]["tickets"]["tickets"]["totalCount"], 12,
            "{b:?}"
        );
        assert_eq!(
            before["globex"]["tickets"]["tickets"]["totalCount"], 3,
            "{b:?}"
        );
        server.stop().await;

        let server = Server::start(&db).await;
        let after = client_view(&server).await;
        assert_eq!(
            after, before,
            "{b:?}: the restarted server answers differently"
        );
        // Numbering continues where it stopped.
        let admin = admin();
        let created = create(&server, &admin, json!({"subject": "after restart"})).await;
        assert_eq!(created["number"], 13, "{b:?}");
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn projections_rebuilt_from_the_start_equal_the_live_ones() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        workload(&server).await;
        server.stop().await;

        let database = db.connect().await;
        let live = dump(&database).await;
        assert_eq!(row_counts(&live), EXPECTED_ROWS, "{b:?}");
        for projection in api::helpdesk::all_projections() {
            projections::runner::reset(&database, projection.as_ref())
                .await
                .expect("reset");
            let emptied = dump(&database).await;
            for (table, rows) in &emptied {
                if projection.tables().contains(&table.as_str()) {
                    assert!(rows.is_empty(), "{b:?}: reset left rows in {table}");
                }
            }
            projections::runner::catch_up(&database, projection.as_ref(), |_, _| {})
                .await
                .expect("catch up");
        }
        let rebuilt = dump(&database).await;
        for ((table, live_rows), (_, rebuilt_rows)) in live.iter().zip(&rebuilt) {
            assert_eq!(
                live_rows.len(),
                rebuilt_rows.len(),
                "{b:?}: row count of {table}"
            );
            for (l, r) in live_rows.iter().zip(rebuilt_rows) {
                assert_eq!(l, r, "{b:?}: a rebuilt row of {table} differs");
            }
        }
        assert_eq!(live, rebuilt, "{b:?}");
        database.close().await;

        // The server serves the rebuilt tables as before.
        let server = Server::start(&db).await;
        let admin = admin();
        assert_eq!(
            numbers(&server, &admin, json!(null)).await.len(),
            12,
            "{b:?}"
        );
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_command_rebuilds_the_same_tables() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        workload(&server).await;
        server.stop().await;

        let database = db.connect().await;
        let live = dump(&database).await;
        assert_eq!(row_counts(&live), EXPECTED_ROWS, "{b:?}");
        // Damage the read models so that a replay that does nothing is noticed.
        projections::on_backend!(&database, |pool| {
            sqlx::query("DELETE FROM queue_entries")
                .execute(pool)
                .await
                .expect("delete");
            sqlx::query("UPDATE tickets SET subject = 'damaged'")
                .execute(pool)
                .await
                .expect("update");
            sqlx::query("DELETE FROM divisions")
                .execute(pool)
                .await
                .expect("delete");
        });
        assert_ne!(dump(&database).await, live, "{b:?}");
        database.close().await;

        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_helpdesk"))
            .arg("replay")
            .env("DATABASE_URL", &db.url)
            .env("HELPDESK_JWT_SECRET", common::SECRET)
            .env("RUST_LOG", "warn")
            .output()
            .await
            .expect("run helpdesk replay");
        assert!(
            output.status.success(),
            "{b:?}: helpdesk replay failed: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let database = db.connect().await;
        let replayed = dump(&database).await;
        assert_eq!(
            replayed, live,
            "{b:?}: helpdesk replay rebuilt different rows"
        );
        database.close().await;

        // An unknown projection name is refused.
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_helpdesk"))
            .args(["replay", "--projection", "nope"])
            .env("DATABASE_URL", &db.url)
            .env("HELPDESK_JWT_SECRET", common::SECRET)
            .output()
            .await
            .expect("run helpdesk replay");
        assert!(!output.status.success(), "{b:?}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("unknown projection"),
            "{b:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_on_the_lifecycle_leave_the_ticket_alone() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        let admin = admin();
        let ann = agent("ann");
        let id = server.create_ticket_id(&admin, "Closed soon").await;
        act(&server, &admin, "closeTicket(id: $id)", &id).await;
        let before = ticket(&server, &admin, &id).await;
        let response = server
            .graphql(
                Some(&ann),
                "mutation($id: ID!) { addComment(ticketId: $id, text: \"hello\") { id } }",
                json!({ "id": id }),
            )
            .await;
        assert_eq!(
            error_code(&response),
            Some("INVALID_TRANSITION"),
            "{b:?}: {response}"
        );
        assert_eq!(ticket(&server, &admin, &id).await, before, "{b:?}");
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn search_ignores_case_beyond_ascii() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        let admin = admin();
        server.create_ticket_id(&admin, "Écran cassé").await;
        server.create_ticket_id(&admin, "ÜBER wichtig").await;
        server.create_ticket_id(&admin, "plain ascii").await;
        let cases = [
            ("cassé", vec![1]),
            ("CASSÉ", vec![1]),
            // The subject's own spelling must find it.
            ("Écran", vec![1]),
            ("écran", vec![1]),
            ("ÉCRAN", vec![1]),
            ("über", vec![2]),
            ("ÜBER", vec![2]),
            ("PLAIN", vec![3]),
        ];
        let mut failures = Vec::new();
        for (search, expected) in cases {
            let found = numbers(&server, &admin, json!({ "search": search })).await;
            if found != expected {
                failures.push(format!(
                    "search '{search}' found {found:?}, expected {expected:?}"
                ));
            }
        }
        assert!(failures.is_empty(), "{b:?}: {failures:#?}");
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reopening_clears_the_rating_and_allows_a_new_one() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        let admin = admin();
        let ann = agent("ann");
        let service = Server::token("acme", "service", "bot");
        server.register_agents(&admin, &["ann"]).await;
        let id = server.create_ticket_id(&admin, "Twice").await;
        act(&server, &ann, "claimTicket(id: $id)", &id).await;
        act(&server, &ann, "resolveTicket(id: $id)", &id).await;
        let rated = server
            .data(
                &service,
                "mutation($id: ID!) { rateTicket(id: $id, rating: 2, feedback: \"meh\") { rating feedback } }",
                json!({ "id": id }),
            )
            .await;
        assert_eq!(
            rated["rateTicket"],
            json!({"rating": 2, "feedback": "meh"}),
            "{b:?}"
        );
        let reopened = act(&server, &ann, "reopenTicket(id: $id)", &id).await;
        assert_eq!(
            (
                &reopened["status"],
                &reopened["rating"],
                &reopened["feedback"]
            ),
            (&json!("QUEUED"), &Value::Null, &Value::Null),
            "{b:?}"
        );
        act(&server, &ann, "claimTicket(id: $id)", &id).await;
        act(&server, &ann, "resolveTicket(id: $id)", &id).await;
        let rated = server
            .data(
                &service,
                "mutation($id: ID!) { rateTicket(id: $id, rating: 5) { rating feedback status } }",
                json!({ "id": id }),
            )
            .await;
        assert_eq!(
            rated["rateTicket"],
            json!({"rating": 5, "feedback": null, "status": "RESOLVED"}),
            "{b:?}"
        );
        // A closed ticket keeps its rating.
        let closed = act(&server, &admin, "closeTicket(id: $id)", &id).await;
        assert_eq!(
            (&closed["status"], &closed["rating"]),
            (&json!("CLOSED"), &json!(5)),
            "{b:?}"
        );
        server.stop().await;
    }
}

fn utc(value: &Value, what: &str) -> chrono::DateTime<chrono::FixedOffset> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value}"));
    let parsed = chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{what} '{text}' is not RFC 3339: {e}"));
    assert_eq!(
        parsed.offset().local_minus_utc(),
        0,
        "{what} '{text}' is not UTC"
    );
    parsed
}

#[tokio::test(flavor = "multi_thread")]
async fn timestamps_are_rfc3339_utc_and_in_order() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        let admin = admin();
        let ann = agent("ann");
        server.register_agents(&admin, &["ann"]).await;
        let started = chrono::Utc::now() - chrono::Duration::seconds(5);
        let id = server.create_ticket_id(&admin, "Timed").await;
        let waiting = server
            .data(
                &admin,
                "{ queue { edges { node { waitingSince ticket { createdAt } } } } }",
                json!({}),
            )
            .await;
        let node = &waiting["queue"]["edges"][0]["node"];
        assert_eq!(
            utc(&node["waitingSince"], "waitingSince"),
            utc(&node["ticket"]["createdAt"], "createdAt"),
            "{b:?}: a new ticket waits since its creation"
        );
        act(&server, &ann, "claimTicket(id: $id)", &id).await;
        act(&server, &ann, "resolveTicket(id: $id)", &id).await;
        let comment = server
            .data(
                &admin,
                "mutation($id: ID!) { addComment(ticketId: $id, text: \"late note\") { createdAt } }",
                json!({ "id": id }),
            )
            .await;
        let commented = utc(&comment["addComment"]["createdAt"], "comment createdAt");
        let closed = act(&server, &admin, "closeTicket(id: $id)", &id).await;
        let created = utc(&closed["createdAt"], "createdAt");
        let assigned = utc(&closed["assignedAt"], "assignedAt");
        let resolved = utc(&closed["resolvedAt"], "resolvedAt");
        let closed_at = utc(&closed["closedAt"], "closedAt");
        let updated = utc(&closed["updatedAt"], "updatedAt");
        assert!(created >= started, "{b:?}: createdAt {created} is too old");
        assert!(
            created <= assigned && assigned <= resolved && resolved <= closed_at,
            "{b:?}: {created} {assigned} {resolved} {closed_at}"
        );
        assert_eq!(updated, closed_at, "{b:?}: updatedAt is the last change");
        assert!(
            closed_at <= chrono::Utc::now() + chrono::Duration::seconds(5),
            "{b:?}: closedAt in the future"
        );
        assert!(
            resolved <= commented && commented <= closed_at,
            "{b:?}: comment at {commented}"
        );
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn queue_entries_carry_the_contract_fields() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        let admin = admin();
        for i in 0..3 {
            server
                .create_ticket_id(&admin, &format!("waiting {i}"))
                .await;
        }
        // CONTRACT.md: QueueEntry { position: Int! ticket: Ticket! waitingSince: DateTime!
        // estimatedWaitSeconds: Int }
        let response = server
            .graphql(
                Some(&admin),
                "{ queue { edges { node { position waitingSince estimatedWaitSeconds ticket { number } } } } }",
                json!({}),
            )
            .await;
        assert!(
            response.get("errors").is_none(),
            "{b:?}: the contract's QueueEntry.estimatedWaitSeconds is not served: {response}"
        );
        let mut previous = -1;
        for edge in response["data"]["queue"]["edges"].as_array().unwrap() {
            let estimate = &edge["node"]["estimatedWaitSeconds"];
            if let Some(seconds) = estimate.as_i64() {
                assert!(seconds >= 0, "{b:?}: {estimate}");
                assert!(seconds >= previous, "{b:?}: estimates grow along the queue");
                previous = seconds;
            } else {
                assert!(estimate.is_null(), "{b:?}: {estimate}");
            }
        }
        server.stop().await;
    }
}
