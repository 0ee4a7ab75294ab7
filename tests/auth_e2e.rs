//! End to end: authentication, roles and the wall between organizations, on every backend.

mod common;

use common::{admin, agent, error_code, has_no_data, Server, TestDb};
use serde_json::{json, Value};

const FIELDS: &str = "id number status priority assigneeId rating comments { id text }";

/// The ticket `id` with this file's [`FIELDS`].
async fn ticket(server: &Server, token: &str, id: &str) -> Value {
    server.ticket(token, id, FIELDS).await
}

/// Runs `mutation` with `$id` bound (when it declares it).
async fn run(server: &Server, token: &str, mutation: &str, id: &str) -> Value {
    let variables = if mutation.contains("$id") {
        json!({ "id": id })
    } else {
        json!({})
    };
    server.graphql(Some(token), mutation, variables).await
}

/// A token with arbitrary claims, signed with `secret`.
fn signed(secret: &[u8], claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("sign")
}

/// A token with `"alg": "none"` and no signature.
fn unsigned(claims: Value) -> String {
    use base64::Engine;
    let encode = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.",
        encode(json!({"alg": "none", "typ": "JWT"})),
        encode(claims)
    )
}

/// A valid token whose claims were swapped (org changed) after signing.
fn tampered(token: &str) -> String {
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: Value = serde_json::from_slice(&engine.decode(parts[1]).unwrap()).unwrap();
    claims["org"] = json!("globex");
    format!(
        "{}.{}.{}",
        parts[0],
        engine.encode(claims.to_string()),
        parts[2]
    )
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Posts with a raw `Authorization` header value.
async fn with_header(server: &Server, header: &str, query: &str) -> Value {
    reqwest::Client::new()
        .post(format!("{}/graphql", server.base_url))
        .header("Authorization", header)
        .json(&json!({ "query": query }))
        .send()
        .await
        .expect("POST /graphql")
        .json()
        .await
        .expect("JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_or_invalid_tokens_are_unauthenticated() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        let admin = admin();
        let id = server.create_ticket_id(&admin, "Existing").await;
        let secret = common::SECRET.as_bytes();
        let claims =
            |exp: u64, role: &str| json!({"sub": "boss", "org": "acme", "role": role, "exp": exp});
        let bad_tokens: Vec<(&str, String)> = vec![
            ("garbage", "not-a-token".to_string()),
            ("three garbage parts", "aaa.bbb.ccc".to_string()),
            ("expired", signed(secret, claims(now() - 3600, "admin"))),
            (
                "another secret",
                api::auth::TokenKeys::new(b"some-other-secret").issue(
                    "boss",
                    "acme",
                    domain::Role::Admin,
                    std::time::Duration::from_secs(3600),
                ),
            ),
            ("unknown role", signed(secret, claims(now() + 3600, "root"))),
            ("alg none", unsigned(claims(now() + 3600, "admin"))),
            (
                "HS384 with the right secret",
                jsonwebtoken::encode(
                    &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS384),
                    &claims(now() + 3600, "admin"),
                    &jsonwebtoken::EncodingKey::from_secret(secret),
                )
                .unwrap(),
            ),
            ("tampered claims", tampered(&admin)),
            (
                "no exp",
                signed(
                    secret,
                    json!({"sub": "boss", "org": "acme", "role": "admin"}),
                ),
            ),
            (
                "empty org",
                signed(
                    secret,
                    json!({"sub": "boss", "org": "", "role": "admin", "exp": now() + 3600}),
                ),
            ),
        ];
        let operations = [
            "{ tickets { totalCount } }".to_string(),
            format!("{{ ticket(id: \"{id}\") {{ id }} }}"),
            "{ queue { totalCount } }".to_string(),
            "{ divisions { id } }".to_string(),
            "mutation { createTicket(input: {subject: \"sneaky\"}) { id } }".to_string(),
            format!("mutation {{ claimTicket(id: \"{id}\") {{ id }} }}"),
            "mutation { createDivision(input: {name: \"sneaky\"}) { id } }".to_string(),
        ];
        for operation in &operations {
            let response = server.graphql(None, operation, json!({})).await;
            assert_eq!(
                error_code(&response),
                Some("UNAUTHENTICATED"),
                "{b:?}: no token, {operation}: {response}"
            );
            assert!(
                has_no_data(&response),
                "{b:?}: no data without a token: {response}"
            );
            for (why, token) in &bad_tokens {
                let response = server.graphql(Some(token), operation, json!({})).await;
                assert_eq!(
                    error_code(&response),
                    Some("UNAUTHENTICATED"),
                    "{b:?}: {why} token, {operation}: {response}"
                );
            }
        }
        for header in ["Basic Ym9zczpzZWNyZXQ=", "Bearer", "Token abc", &admin] {
            let response = with_header(&server, header, "{ tickets { totalCount } }").await;
            assert_eq!(
                error_code(&response),
                Some("UNAUTHENTICATED"),
                "{b:?}: header {header}: {response}"
            );
        }
        // A valid token still works, and nothing was written by the refused calls.
        assert_eq!(server.ticket_total(&admin).await, 1, "{b:?}");
        assert_eq!(
            ticket(&server, &admin, &id).await["status"],
            "QUEUED",
            "{b:?}"
        );
        let divisions = server.data(&admin, "{ divisions { id } }", json!({})).await;
        assert_eq!(divisions["divisions"], json!([]), "{b:?}");
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn roles_are_enforced() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        let admin = admin();
        let ann = agent("ann");
        let analyst = Server::token("acme", "analyst", "ada");
        let service = Server::token("acme", "service", "whatsapp");
        server.register_agents(&admin, &["ann", "bob"]).await;
        let queued = server.create_ticket_id(&admin, "Queued").await;
        let resolved = server.create_ticket_id(&admin, "Resolved").await;
        server.claim_ticket(&ann, &resolved).await;
        server.resolve_ticket(&ann, &resolved).await;
        let before_queued = ticket(&server, &admin, &queued).await;
        let before_resolved = ticket(&server, &admin, &resolved).await;
        assert_eq!(before_resolved["status"], "RESOLVED", "{b:?}");

        let forbidden: Vec<(&str, &str, String, &str)> = vec![
            ("agent", &ann, "mutation($id: ID!) { assignTicket(id: $id, agentId: \"bob\") { id } }".into(), &queued),
            ("analyst", &analyst, "mutation { createTicket(input: {subject: \"x\"}) { id } }".into(), &queued),
            ("analyst", &analyst, "mutation($id: ID!) { claimTicket(id: $id) { id } }".into(), &queued),
            ("analyst", &analyst, "mutation($id: ID!) { addComment(ticketId: $id, text: \"x\") { id } }".into(), &queued),
            ("analyst", &analyst, "mutation($id: ID!) { changeTicketPriority(id: $id, priority: URGENT) { id } }".into(), &queued),
            ("analyst", &analyst, "mutation($id: ID!) { closeTicket(id: $id) { id } }".into(), &queued),
            ("analyst", &analyst, "mutation($id: ID!) { rateTicket(id: $id, rating: 5) { id } }".into(), &resolved),
            ("agent", &ann, "mutation($id: ID!) { rateTicket(id: $id, rating: 5) { id } }".into(), &resolved),
            ("service", &service, "mutation($id: ID!) { claimTicket(id: $id) { id } }".into(), &queued),
            ("service", &service, "mutation($id: ID!) { assignTicket(id: $id, agentId: \"ann\") { id } }".into(), &queued),
            ("service", &service, "mutation($id: ID!) { changeTicketPriority(id: $id, priority: URGENT) { id } }".into(), &queued),
            ("admin", &admin, "mutation($id: ID!) { claimTicket(id: $id) { id } }".into(), &queued),
            ("agent", &ann, "mutation { createDivision(input: {name: \"Agents only\"}) { id } }".into(), &queued),
            ("analyst", &analyst, "mutation { createDivision(input: {name: \"Analysts\"}) { id } }".into(), &queued),
            ("service", &service, "mutation { createDivision(input: {name: \"Bots\"}) { id } }".into(), &queued),
            ("agent", &ann, "mutation($id: ID!) { bulkAssignTickets(ids: [$id], agentId: \"ann\") { total } }".into(), &queued),
            ("agent", &ann, "mutation($id: ID!) { bulkUpdateTicketPriority(ids: [$id], priority: URGENT) { total } }".into(), &queued),
            ("analyst", &analyst, "mutation($id: ID!) { bulkAssignTickets(ids: [$id], agentId: \"ann\") { total } }".into(), &queued),
            ("service", &service, "mutation($id: ID!) { bulkUpdateTicketPriority(ids: [$id], priority: URGENT) { total } }".into(), &queued),
        ];
        for (role, token, mutation, id) in &forbidden {
            let response = run(&server, token, mutation, id).await;
            assert_eq!(
                error_code(&response),
                Some("FORBIDDEN"),
                "{b:?}: {role} {mutation}: {response}"
            );
            assert!(
                response["errors"][0]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "{b:?}: a FORBIDDEN error says why: {response}"
            );
        }
        assert_eq!(
            ticket(&server, &admin, &queued).await,
            before_queued,
            "{b:?}"
        );
        assert_eq!(
            ticket(&server, &admin, &resolved).await,
            before_resolved,
            "{b:?}"
        );
        assert_eq!(server.ticket_total(&admin).await, 2, "{b:?}");
        let divisions = server.data(&admin, "{ divisions { id } }", json!({})).await;
        assert_eq!(divisions["divisions"], json!([]), "{b:?}");

        // Every role may read.
        for token in [&admin, &ann, &analyst, &service] {
            assert_eq!(server.ticket_total(token).await, 2, "{b:?}");
        }
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_only_work_their_own_tickets() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        let admin = admin();
        let ann = agent("ann");
        let bob = agent("bob");
        server.register_agents(&admin, &["ann", "bob"]).await;
        let id = server.create_ticket_id(&admin, "Ann's").await;
        server.claim_ticket(&ann, &id).await;
        let assigned = ticket(&server, &admin, &id).await;
        assert_eq!(assigned["assigneeId"], "ann", "{b:?}");

        for mutation in [
            "mutation($id: ID!) { startTicket(id: $id) { id } }",
            "mutation($id: ID!) { resolveTicket(id: $id) { id } }",
        ] {
            let response = run(&server, &bob, mutation, &id).await;
            assert_eq!(
                error_code(&response),
                Some("FORBIDDEN"),
                "{b:?}: bob {mutation}: {response}"
            );
        }
        assert_eq!(ticket(&server, &admin, &id).await, assigned, "{b:?}");

        let started = run(
            &server,
            &ann,
            "mutation($id: ID!) { startTicket(id: $id) { status } }",
            &id,
        )
        .await;
        assert_eq!(
            started["data"]["startTicket"]["status"], "IN_PROGRESS",
            "{b:?}: {started}"
        );
        let response = run(
            &server,
            &bob,
            "mutation($id: ID!) { resolveTicket(id: $id) { id } }",
            &id,
        )
        .await;
        assert_eq!(
            error_code(&response),
            Some("FORBIDDEN"),
            "{b:?}: {response}"
        );
        let resolved = run(
            &server,
            &ann,
            "mutation($id: ID!) { resolveTicket(id: $id) { status } }",
            &id,
        )
        .await;
        assert_eq!(
            resolved["data"]["resolveTicket"]["status"], "RESOLVED",
            "{b:?}: {resolved}"
        );
        // Nor close or reopen what another agent resolved.
        for mutation in [
            "mutation($id: ID!) { closeTicket(id: $id) { id } }",
            "mutation($id: ID!) { reopenTicket(id: $id) { id } }",
        ] {
            let response = run(&server, &bob, mutation, &id).await;
            assert_eq!(
                error_code(&response),
                Some("FORBIDDEN"),
                "{b:?}: bob {mutation}: {response}"
            );
        }
        assert_eq!(
            ticket(&server, &admin, &id).await["status"],
            "RESOLVED",
            "{b:?}"
        );
        // An admin may act on anyone's ticket.
        let reopened = run(
            &server,
            &admin,
            "mutation($id: ID!) { reopenTicket(id: $id) { status } }",
            &id,
        )
        .await;
        assert_eq!(
            reopened["data"]["reopenTicket"]["status"], "QUEUED",
            "{b:?}: {reopened}"
        );
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_service_role_creates_comments_and_rates() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        let admin = admin();
        let ann = agent("ann");
        let service = Server::token("acme", "service", "whatsapp-bot");
        server.register_agents(&admin, &["ann"]).await;
        let created = server
            .data(
                &service,
                "mutation { createTicket(input: {subject: \"From WhatsApp\", description: \"customer text\"}) { id number status createdBy } }",
                json!({}),
            )
            .await["createTicket"]
            .clone();
        assert_eq!(created["status"], "QUEUED", "{b:?}");
        assert_eq!(created["createdBy"], "whatsapp-bot", "{b:?}");
        let id = created["id"].as_str().unwrap().to_string();
        let comment = server
            .data(
                &service,
                "mutation($id: ID!) { addComment(ticketId: $id, text: \"customer: hello?\") { text authorId } }",
                json!({ "id": id }),
            )
            .await;
        assert_eq!(
            comment["addComment"],
            json!({"text": "customer: hello?", "authorId": "whatsapp-bot"}),
            "{b:?}"
        );
        server.claim_ticket(&ann, &id).await;
        server.resolve_ticket(&ann, &id).await;
        let rated = run(
            &server,
            &service,
            "mutation($id: ID!) { rateTicket(id: $id, rating: 3, feedback: \"ok\") { rating feedback } }",
            &id,
        )
        .await;
        assert_eq!(
            rated["data"]["rateTicket"],
            json!({"rating": 3, "feedback": "ok"}),
            "{b:?}: {rated}"
        );
        assert_eq!(
            ticket(&server, &admin, &id).await["comments"][0]["text"],
            "customer: hello?",
            "{b:?}"
        );
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn organizations_never_see_or_touch_each_other() {
    for db in TestDb::all().await {
        let b = db.backend;
        let server = Server::start(&db).await;
        let acme = admin();
        let acme_agent = agent("ann");
        let globex = Server::token("globex", "admin", "hank");
        let globex_agent = Server::token("globex", "agent", "gus");
        let globex_service = Server::token("globex", "service", "bot");
        // Both agents exist in their own organization, so a refusal below is about the
        // ticket being another organization's, not about an unknown agent.
        server.register_agents(&acme, &["ann"]).await;
        server.register_agents(&globex, &["gus"]).await;

        let acme_division = server.create_division(&acme, "Acme billing").await;
        let queued = server.create_ticket_id(&acme, "Acme queued").await;
        let resolved = server.create_ticket_id(&acme, "Acme resolved").await;
        server.claim_ticket(&acme_agent, &resolved).await;
        server.resolve_ticket(&acme_agent, &resolved).await;
        let assigned = server.create_ticket_id(&acme, "Acme assigned").await;
        server.claim_ticket(&acme_agent, &assigned).await;
        server.create_ticket_id(&globex, "Globex own").await;
        let before: Vec<Value> = futures::future::join_all(
            [&queued, &resolved, &assigned].map(|id| ticket(&server, &acme, id)),
        )
        .await;

        // Reading.
        for id in [&queued, &resolved, &assigned] {
            for token in [&globex, &globex_agent, &globex_service] {
                let response = server
                    .graphql(
                        Some(token),
                        "query($id: ID!) { ticket(id: $id) { id subject } }",
                        json!({ "id": id }),
                    )
                    .await;
                assert!(response.get("errors").is_none(), "{b:?}: {response}");
                assert_eq!(
                    response["data"]["ticket"],
                    Value::Null,
                    "{b:?}: globex reads an acme ticket"
                );
            }
        }
        let list = server
            .data(&globex, "{ tickets { totalCount edges { node { subject } } } queue { totalCount edges { node { ticket { subject } } } } }", json!({}))
            .await;
        assert_eq!(
            list,
            json!({
                "tickets": {"totalCount": 1, "edges": [{"node": {"subject": "Globex own"}}]},
                "queue": {"totalCount": 1, "edges": [{"node": {"ticket": {"subject": "Globex own"}}}]}
            }),
            "{b:?}"
        );
        let acme_list = server
            .data(
                &acme,
                "{ tickets { totalCount } queue { totalCount } }",
                json!({}),
            )
            .await;
        assert_eq!(
            acme_list,
            json!({"tickets": {"totalCount": 3}, "queue": {"totalCount": 1}}),
            "{b:?}"
        );
        // Searching by number does not cross over either.
        let search = server
            .data(
                &globex,
                "{ tickets(filter: {search: \"#2\"}) { totalCount } }",
                json!({}),
            )
            .await;
        assert_eq!(search["tickets"]["totalCount"], 0, "{b:?}");
        let response = server
            .graphql(
                Some(&globex),
                "query($d: ID) { queue(divisionId: $d) { totalCount } }",
                json!({ "d": acme_division }),
            )
            .await;
        assert_eq!(
            error_code(&response),
            Some("NOT_FOUND"),
            "{b:?}: {response}"
        );
        let divisions = server
            .data(&globex, "{ divisions { id } }", json!({}))
            .await;
        assert_eq!(divisions["divisions"], json!([]), "{b:?}");

        // Changing.
        let attempts: Vec<(&str, &str, &String)> = vec![
            (
                &globex_agent,
                "mutation($id: ID!) { claimTicket(id: $id) { id } }",
                &queued,
            ),
            (
                &globex,
                "mutation($id: ID!) { assignTicket(id: $id, agentId: \"gus\") { id } }",
                &queued,
            ),
            (
                &globex,
                "mutation($id: ID!) { assignTicket(id: $id, agentId: \"gus\") { id } }",
                &assigned,
            ),
            (
                &globex,
                "mutation($id: ID!) { startTicket(id: $id) { id } }",
                &assigned,
            ),
            (
                &globex,
                "mutation($id: ID!) { resolveTicket(id: $id) { id } }",
                &assigned,
            ),
            (
                &globex,
                "mutation($id: ID!) { closeTicket(id: $id) { id } }",
                &queued,
            ),
            (
                &globex,
                "mutation($id: ID!) { reopenTicket(id: $id) { id } }",
                &resolved,
            ),
            (
                &globex,
                "mutation($id: ID!) { changeTicketPriority(id: $id, priority: URGENT) { id } }",
                &queued,
            ),
            (
                &globex,
                "mutation($id: ID!) { addComment(ticketId: $id, text: \"hi\") { id } }",
                &queued,
            ),
            (
                &globex_service,
                "mutation($id: ID!) { addComment(ticketId: $id, text: \"hi\") { id } }",
                &assigned,
            ),
            (
                &globex,
                "mutation($id: ID!) { rateTicket(id: $id, rating: 1) { id } }",
                &resolved,
            ),
            (
                &globex_service,
                "mutation($id: ID!) { rateTicket(id: $id, rating: 1) { id } }",
                &resolved,
            ),
        ];
        for (token, mutation, id) in attempts {
            let response = run(&server, token, mutation, id).await;
            assert_eq!(
                error_code(&response),
                Some("NOT_FOUND"),
                "{b:?}: globex {mutation}: {response}"
            );
        }
        for mutation in [
            "mutation($id: ID!) { bulkAssignTickets(ids: [$id], agentId: \"gus\") { succeeded failed results { success code } } }",
            "mutation($id: ID!) { bulkUpdateTicketPriority(ids: [$id], priority: URGENT) { succeeded failed results { success code } } }",
        ] {
            let response = run(&server, &globex, mutation, &queued).await;
            let result = response["data"].as_object().and_then(|d| d.values().next()).cloned();
            assert_eq!(
                result,
                Some(json!({"succeeded": 0, "failed": 1, "results": [{"success": false, "code": "NOT_FOUND"}]})),
                "{b:?}: {response}"
            );
        }
        let after: Vec<Value> = futures::future::join_all(
            [&queued, &resolved, &assigned].map(|id| ticket(&server, &acme, id)),
        )
        .await;
        assert_eq!(after, before, "{b:?}: globex changed acme tickets");

        // Another organization's division cannot be used.
        let response = server
            .graphql(
                Some(&globex),
                "mutation($d: ID!) { createTicket(input: {subject: \"x\", divisionId: $d}) { id } }",
                json!({ "d": acme_division }),
            )
            .await;
        assert_eq!(
            error_code(&response),
            Some("BAD_USER_INPUT"),
            "{b:?}: {response}"
        );
        assert_eq!(server.ticket_total(&globex).await, 1, "{b:?}");
        server.stop().await;
    }
}
