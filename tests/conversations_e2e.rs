//! Conversations end to end through GraphQL `receiveMessage` (the service role), on both
//! backends: the queue-mode flow of the seed (menu → choice → queue number → "#" → an
//! agent takes the ticket → the customer is told → the agent replies), queue mode off,
//! idempotent redelivery, and personal data kept out of the event log.

mod common;

use common::{admin, agent, count, Server, TestDb};
use serde_json::{json, Value};
use std::time::Duration;

const RECEIVE: &str = "mutation($input: ReceiveMessageInput!) { receiveMessage(input: $input) {
    id mode divisionId unreadCount needsHuman customerName externalId
    ticket { id status queuePosition divisionId }
    messages(first: 100) { totalCount edges { node { direction author text deliveryStatus } } } } }";

fn service() -> String {
    Server::token("acme", "service", "whatsapp-bridge")
}

async fn receive(server: &Server, phone: &str, text: &str, message_id: &str) -> Value {
    let input = json!({ "channel": "WHATSAPP", "externalId": phone, "customerName": "Budi Santoso",
                        "text": text, "externalMessageId": message_id });
    server
        .data(&service(), RECEIVE, json!({ "input": input }))
        .await["receiveMessage"]
        .clone()
}

/// The texts of the conversation's outbound messages, in order.
fn outbound(conversation: &Value) -> Vec<String> {
    conversation["messages"]["edges"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|e| e["node"]["direction"] == "OUTBOUND")
        .map(|e| e["node"]["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

async fn enable_queue_mode(server: &Server) {
    server
        .data(
            &admin(),
            "mutation { updateQueueSettings(input: { enabled: true }) { enabled } }",
            json!({}),
        )
        .await;
}

#[tokio::test]
async fn queue_mode_menu_choice_position_assignment_and_reply() {
    for db in TestDb::all().await {
        let server = Server::start(&db).await;
        let admin = admin();
        enable_queue_mode(&server).await;
        let billing = server
            .data(
                &admin,
                "mutation { createDivision(input: { name: \"Billing\", description: \"Pembayaran dan invoice\",
                    keywords: [\"tagihan\", \"bayar\"], position: 1 }) { id } }",
                json!({}),
            )
            .await["createDivision"]["id"]
            .as_str()
            .expect("division id")
            .to_string();
        server.create_division(&admin, "Support").await;
        // Two customers already wait in Billing, so the new one is third.
        for (phone, id) in [
            ("+6281100000001", "wamid.a1"),
            ("+6281100000002", "wamid.b1"),
        ] {
            receive(&server, phone, "halo", id).await;
            let chose = receive(&server, phone, "billing", &format!("{id}-2")).await;
            assert_eq!(chose["ticket"]["status"], "QUEUED", "{}", db.url);
        }

        let first = receive(&server, "+6281234567890", "Halo kak", "wamid.c1").await;
        assert_eq!(first["mode"], "BOT");
        assert_eq!(first["ticket"], Value::Null);
        assert_eq!(first["customerName"], "Budi Santoso");
        assert_eq!(first["externalId"], "+6281234567890");
        let menu = outbound(&first);
        assert_eq!(
            menu,
            vec![
                "Selamat datang di toko kami, silahkan pilih agen yang anda tuju\n\
                  1. Billing - Pembayaran dan invoice\n2. Support"
                    .to_string()
            ]
        );

        // An answer that picks nothing repeats the menu.
        let unclear = receive(&server, "+6281234567890", "saya bingung", "wamid.c2").await;
        assert_eq!(outbound(&unclear).len(), 2);
        assert_eq!(outbound(&unclear)[1], menu[0]);

        // "1" picks Billing: a ticket in Billing's queue, third in line.
        let chose = receive(&server, "+6281234567890", "1", "wamid.c3").await;
        assert_eq!(chose["mode"], "AGENT");
        assert_eq!(chose["divisionId"], billing);
        assert_eq!(chose["ticket"]["divisionId"], billing);
        assert_eq!(chose["ticket"]["queuePosition"], 3);
        assert_eq!(
            outbound(&chose).last().expect("queue message"),
            "Anda akan di layani oleh tim Billing, Tunggu dalam antrian ke 3. Tekan # untuk cek antrian"
        );
        let conversation_id = chose["id"].as_str().expect("id").to_string();
        let ticket_id = chose["ticket"]["id"].as_str().expect("ticket").to_string();

        // The first customer is served: ours moves up; "#" tells the new place.
        let head = server
            .data(
                &admin,
                "query($d: ID) { queue(divisionId: $d, first: 1) { edges { node { ticket { id } } } } }",
                json!({ "d": billing }),
            )
            .await["queue"]["edges"][0]["node"]["ticket"]["id"]
            .as_str()
            .expect("head")
            .to_string();
        let register = "mutation($id: ID!, $d: ID!) {
            registerAgent(input: { id: $id, name: $id, divisionIds: [$d] }) { id } }";
        for name in ["sari", "dewi"] {
            server
                .data(&admin, register, json!({ "id": name, "d": billing }))
                .await;
        }
        server.claim_ticket(&agent("sari"), &head).await;
        let asked = receive(&server, "+6281234567890", " # ", "wamid.c4").await;
        assert_eq!(
            outbound(&asked).last().expect("position message"),
            "Anda masih dalam antrian ke 2. mohon menunggu"
        );

        // A redelivered webhook changes nothing.
        let again = receive(&server, "+6281234567890", " # ", "wamid.c4").await;
        assert_eq!(
            again["messages"]["totalCount"],
            asked["messages"]["totalCount"]
        );

        // An agent takes the ticket: the customer is told, by name.
        server.claim_ticket(&agent("dewi"), &ticket_id).await;
        let told = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let c = server
                    .data(
                        &admin,
                        "query($id: ID!) { conversation(id: $id) { assignee { id }
                            messages(first: 100) { edges { node { direction text } } } } }",
                        json!({ "id": conversation_id }),
                    )
                    .await["conversation"]
                    .clone();
                if outbound(&c).iter().any(|t| t.starts_with("Agen dewi")) {
                    return c;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("the customer is told an agent is ready");
        assert_eq!(told["assignee"]["id"], "dewi");
        assert_eq!(
            outbound(&told).last().expect("notice"),
            "Agen dewi siap membantu Anda sekarang."
        );

        // Only the holder replies; the reply is queued for delivery.
        let reply = "mutation($id: ID!, $t: String!) { sendReply(conversationId: $id, text: $t) {
            direction author text deliveryStatus } }";
        let refused = server
            .graphql(
                Some(&agent("sari")),
                reply,
                json!({ "id": conversation_id, "t": "Halo" }),
            )
            .await;
        assert_eq!(common::error_code(&refused), Some("FORBIDDEN"));
        let sent = server
            .data(
                &agent("dewi"),
                reply,
                json!({ "id": conversation_id, "t": "Halo Budi, tagihan Anda sudah kami cek." }),
            )
            .await["sendReply"]
            .clone();
        assert_eq!(sent["direction"], "OUTBOUND");
        assert_eq!(sent["author"], "dewi");
        assert_eq!(sent["text"], "Halo Budi, tagihan Anda sudah kami cek.");

        // Unread badge: five customer messages, then read.
        let read = server
            .data(
                &agent("dewi"),
                "mutation($id: ID!) { markConversationRead(id: $id) { unreadCount needsHuman } }",
                json!({ "id": conversation_id }),
            )
            .await["markConversationRead"]
            .clone();
        assert_eq!(read["unreadCount"], 0);
        assert_eq!(read["needsHuman"], false);

        // Personal data never reaches the event log in clear.
        let direct = db.connect().await;
        for secret in ["+6281234567890", "Budi", "tagihan Anda", "saya bingung"] {
            let sql = format!(
                "SELECT COUNT(*) FROM events WHERE CAST(payload AS TEXT) LIKE '%{secret}%' OR CAST(metadata AS TEXT) LIKE '%{secret}%'"
            );
            assert_eq!(
                count(&direct, &sql).await,
                0,
                "{secret} in the log ({})",
                db.url
            );
        }
        server.stop().await;
    }
}

#[tokio::test]
async fn queue_mode_off_opens_a_ticket_at_once_and_a_resolved_ticket_a_new_one() {
    for db in TestDb::all().await {
        let server = Server::start(&db).await;
        let first = receive(&server, "+62800", "printer rusak, gawat", "m-1").await;
        assert_eq!(first["mode"], "AGENT");
        assert_eq!(first["needsHuman"], true);
        assert_eq!(first["ticket"]["status"], "QUEUED");
        assert_eq!(first["ticket"]["divisionId"], Value::Null);
        assert!(outbound(&first).is_empty());
        let ticket = first["ticket"]["id"].as_str().expect("ticket").to_string();
        let urgent = server.ticket(&admin(), &ticket, "priority").await;
        assert_eq!(urgent["priority"], "URGENT");

        let second = receive(&server, "+62800", "masih rusak", "m-2").await;
        assert_eq!(second["ticket"]["id"], ticket.as_str());
        assert_eq!(second["unreadCount"], 2);

        server.register_agents(&admin(), &["eko"]).await;
        server.claim_ticket(&agent("eko"), &ticket).await;
        server.resolve_ticket(&agent("eko"), &ticket).await;
        let after = receive(&server, "+62800", "rusak lagi", "m-3").await;
        assert_ne!(after["ticket"]["id"], ticket.as_str());
        assert_eq!(after["ticket"]["status"], "QUEUED");

        // Only the service role delivers customer messages.
        let input = json!({ "channel": "TELEGRAM", "externalId": "42", "text": "hi" });
        let refused = server
            .graphql(Some(&admin()), RECEIVE, json!({ "input": input }))
            .await;
        assert_eq!(common::error_code(&refused), Some("FORBIDDEN"));
        let empty = json!({ "channel": "TELEGRAM", "externalId": "42", "text": "  " });
        let refused = server
            .graphql(Some(&service()), RECEIVE, json!({ "input": empty }))
            .await;
        assert_eq!(common::error_code(&refused), Some("BAD_USER_INPUT"));
        server.stop().await;
    }
}

/// The ticket's current assignee, as the read model shows it.
async fn assignee(server: &Server, ticket: &str) -> Option<String> {
    server.ticket(&admin(), ticket, "assignee { id }").await["assignee"]["id"]
        .as_str()
        .map(str::to_string)
}

#[tokio::test]
async fn an_unanswered_conversation_is_escalated_and_a_reply_locks_it() {
    for db in TestDb::all().await {
        let server = Server::start(&db).await;
        server
            .data(
                &admin(),
                "mutation { updateQueueSettings(input: { escalationAfterSeconds: 3 }) { escalationAfterSeconds } }",
                json!({}),
            )
            .await;
        server.register_agents(&admin(), &["ann", "bob"]).await;
        for name in ["ann", "bob"] {
            server
                .data(&agent(name), "mutation { goOnline { online } }", json!({}))
                .await;
        }
        let first = receive(&server, "+62811", "halo, pesanan saya belum sampai", "e-1").await;
        let ticket = first["ticket"]["id"].as_str().expect("ticket").to_string();
        let conversation = first["id"].as_str().expect("id").to_string();
        let holder = assignee(&server, &ticket).await.expect("assigned at once");
        let other = if holder == "ann" { "bob" } else { "ann" };

        // Nobody answers: within a few seconds the other agent has it.
        let escalated = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                if assignee(&server, &ticket).await.as_deref() == Some(other) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(escalated.is_ok(), "not escalated to {other} ({})", db.url);
        let direct = db.connect().await;
        let recorded = count(
            &direct,
            &format!(
                "SELECT COUNT(*) FROM events WHERE aggregate_id = '{ticket}'
                   AND CAST(payload AS TEXT) LIKE '%\"escalation\"%'
                   AND CAST(payload AS TEXT) LIKE '%did not answer the customer within 3 s%'"
            ),
        )
        .await;
        assert_eq!(recorded, 1, "one escalation, with its reason ({})", db.url);

        // The new holder answers: ownership is locked, no further escalation.
        server
            .data(
                &agent(other),
                "mutation($id: ID!) { sendReply(conversationId: $id, text: \"Sebentar ya\") { id } }",
                json!({ "id": conversation }),
            )
            .await;
        // Past the deadline of the new assignment: the reply has locked it. (3 s leaves the
        // reply room on a loaded machine; 1 s made the test race its own reply.)
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(assignee(&server, &ticket).await.as_deref(), Some(other));
        let escalations = count(
            &direct,
            &format!(
                "SELECT COUNT(*) FROM events WHERE aggregate_id = '{ticket}'
                   AND CAST(payload AS TEXT) LIKE '%\"escalation\"%'"
            ),
        )
        .await;
        assert_eq!(escalations, 1, "{}", db.url);
        server.stop().await;
    }
}

#[tokio::test]
async fn the_menu_shows_waits_and_a_clear_first_message_skips_it() {
    for db in TestDb::all().await {
        let server = Server::start(&db).await;
        let admin = admin();
        server
            .data(
                &admin,
                "mutation { updateQueueSettings(input: { enabled: true, showWaitTime: true,
                    detectDivision: true }) { enabled } }",
                json!({}),
            )
            .await;
        let billing = server
            .data(
                &admin,
                "mutation { createDivision(input: { name: \"Billing\", keywords: [\"tagihan\"],
                    assignmentMode: CLAIM, avgHandlingMinutes: 15 }) { id } }",
                json!({}),
            )
            .await["createDivision"]["id"]
            .as_str()
            .expect("division")
            .to_string();
        // Two customers wait in Billing; one agent serving it is online.
        for phone in ["+621", "+622"] {
            let opened = receive(&server, phone, "mau tanya tagihan", &format!("{phone}-1")).await;
            assert_eq!(opened["divisionId"], billing, "detected from the words");
            assert_eq!(
                outbound(&opened),
                vec![format!(
                    "Anda akan di layani oleh tim Billing, Tunggu dalam antrian ke {}. Tekan # untuk cek antrian",
                    if phone == "+621" { 1 } else { 2 }
                )]
            );
        }
        server
            .data(
                &admin,
                "mutation($d: ID!) { registerAgent(input: { id: \"rina\", name: \"Rina\", divisionIds: [$d] }) { id } }",
                json!({ "d": billing }),
            )
            .await;
        server
            .data(
                &agent("rina"),
                "mutation { goOnline { online } }",
                json!({}),
            )
            .await;
        // A first message naming no division gets the menu, with the wait of a newcomer:
        // third in line x 15 minutes / 1 agent.
        let menu = receive(&server, "+623", "halo", "+623-1").await;
        assert_eq!(
            outbound(&menu),
            vec![
                "Selamat datang di toko kami, silahkan pilih agen yang anda tuju\n\
                  1. Billing (2 antrian, ~45 menit)"
                    .to_string()
            ]
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn escalation_deadlines_survive_a_restart() {
    for db in TestDb::all().await {
        let server = Server::start(&db).await;
        server
            .data(
                &admin(),
                "mutation { updateQueueSettings(input: { escalationAfterSeconds: 2 }) { escalationAfterSeconds } }",
                json!({}),
            )
            .await;
        server.register_agents(&admin(), &["ann", "bob"]).await;
        for name in ["ann", "bob"] {
            server
                .data(&agent(name), "mutation { goOnline { online } }", json!({}))
                .await;
        }
        let first = receive(&server, "+62899", "halo", "r-1").await;
        let ticket = first["ticket"]["id"].as_str().expect("ticket").to_string();
        let holder = assignee(&server, &ticket).await.expect("assigned at once");
        // The process dies before the deadline; the deadline lives in the log, not in it.
        server.kill().await;
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let server = Server::start(&db).await;
        let moved = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                match assignee(&server, &ticket).await {
                    Some(now) if now != holder => return now,
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("not escalated after the restart ({})", db.url));
        assert_ne!(moved, holder);
        server.stop().await;
    }
}

#[tokio::test]
async fn conversations_filter_by_mode_division_assignee_and_unread() {
    for db in TestDb::all().await {
        let server = Server::start(&db).await;
        let admin = admin();
        enable_queue_mode(&server).await;
        let billing = server.create_division(&admin, "Billing").await;
        server
            .data(
                &admin,
                "mutation($d: ID!) { registerAgent(input: { id: \"dewi\", name: \"Dewi\", divisionIds: [$d] }) { id } }",
                json!({ "d": billing }),
            )
            .await;
        receive(&server, "+6201", "halo", "f-1").await;
        let chose = receive(&server, "+6201", "billing", "f-2").await;
        let chosen = chose["id"].as_str().expect("id").to_string();
        let browsing = receive(&server, "+6202", "halo", "f-3").await;
        let ticket = chose["ticket"]["id"].as_str().expect("ticket").to_string();
        server.claim_ticket(&agent("dewi"), &ticket).await;
        let list = |filter: Value| {
            let server = &server;
            let admin = admin.clone();
            async move {
                let page = server
                    .data(
                        &admin,
                        "query($f: ConversationFilterInput) { conversations(filter: $f) {
                            totalCount edges { node { id } } } }",
                        json!({ "f": filter }),
                    )
                    .await;
                let ids: Vec<String> = page["conversations"]["edges"]
                    .as_array()
                    .expect("edges")
                    .iter()
                    .map(|e| e["node"]["id"].as_str().unwrap_or_default().to_string())
                    .collect();
                assert_eq!(page["conversations"]["totalCount"], ids.len());
                ids
            }
        };
        assert_eq!(list(json!({ "mode": "AGENT" })).await, vec![chosen.clone()]);
        assert_eq!(
            list(json!({ "mode": "BOT" })).await,
            vec![browsing["id"].as_str().expect("id").to_string()]
        );
        assert_eq!(
            list(json!({ "divisionId": billing })).await,
            vec![chosen.clone()]
        );
        assert_eq!(
            list(json!({ "assigneeId": "dewi" })).await,
            vec![chosen.clone()]
        );
        assert_eq!(list(json!({ "assigneeId": "nobody" })).await.len(), 0);
        assert_eq!(list(json!({ "unreadOnly": true })).await.len(), 2);
        server
            .data(
                &agent("dewi"),
                "mutation($id: ID!) { markConversationRead(id: $id) { unreadCount } }",
                json!({ "id": chosen }),
            )
            .await;
        assert_eq!(list(json!({ "unreadOnly": true })).await.len(), 1);
        // Another organization sees none of them.
        let foreign = server
            .data(
                &Server::token("globex", "admin", "gina"),
                "{ conversations { totalCount } }",
                json!({}),
            )
            .await;
        assert_eq!(foreign["conversations"]["totalCount"], 0);
        server.stop().await;
    }
}
