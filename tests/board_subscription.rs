//! `boardChanged` over graphql-transport-ws at `/graphql/ws`, against the real server.
//!
//! - On every backend: the token goes in `connection_init`; a bad or missing token refuses
//!   the connection; a card placed and moved reaches the subscriber within a second, and a
//!   board refetched on the message already shows the change; a subscriber of another
//!   organization receives nothing and may not subscribe to a pipeline it cannot see.
//! - On PostgreSQL: two server processes on one database; a move made through the first
//!   reaches a subscriber of the second within a second.

mod common;

use common::{admin, Server, TestDb};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const WITHIN: Duration = Duration::from_secs(1);

/// Opens `/graphql/ws` with the graphql-transport-ws subprotocol and sends
/// `connection_init` carrying `token`; returns the socket and the first server frame.
async fn connect(server: &Server, token: Option<&str>) -> (Socket, Option<Message>) {
    let url = format!("{}/graphql/ws", server.base_url.replacen("http", "ws", 1));
    let mut request = url.into_client_request().expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    let (mut socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket handshake");
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("graphql-transport-ws")
    );
    let payload = match token {
        Some(t) => json!({ "authorization": format!("Bearer {t}") }),
        None => json!({}),
    };
    socket
        .send(Message::text(
            json!({ "type": "connection_init", "payload": payload }).to_string(),
        ))
        .await
        .expect("send init");
    let first = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("no answer to connection_init")
        .and_then(Result::ok);
    (socket, first)
}

/// A subscriber of `boardChanged(pipelineId)`.
async fn subscribe(server: &Server, token: &str, pipeline_id: &str) -> Socket {
    let (mut socket, ack) = connect(server, Some(token)).await;
    let ack: Value =
        serde_json::from_str(ack.expect("ack").to_text().expect("text")).expect("json");
    assert_eq!(ack["type"], "connection_ack");
    socket
        .send(Message::text(
            json!({ "id": "1", "type": "subscribe", "payload": {
                "query": "subscription($p: ID!) { boardChanged(pipelineId: $p) {
                    pipelineId kind cardId fromStageId toStageId position at logPosition } }",
                "variables": { "p": pipeline_id } } })
            .to_string(),
        ))
        .await
        .expect("subscribe");
    socket
}

/// The next `next` payload of subscription "1" within `wait`, or `None`.
async fn next_change(socket: &mut Socket, wait: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let frame = tokio::time::timeout_at(deadline, socket.next())
            .await
            .ok()??
            .ok()?;
        let Message::Text(text) = frame else { continue };
        let message: Value = serde_json::from_str(&text).expect("json");
        match message["type"].as_str() {
            Some("next") => return Some(message["payload"].clone()),
            Some("ping") => {
                let _ = socket
                    .send(Message::text(json!({ "type": "pong" }).to_string()))
                    .await;
            }
            _ => return Some(message),
        }
    }
}

/// A pipeline with stages "New" and "Won", and a conversation; returns their ids.
async fn board(server: &Server, org: &str, phone: &str) -> (String, String, String, String) {
    let admin = Server::token(org, "admin", "boss");
    let service = Server::token(org, "service", "bridge");
    let pipeline = server
        .data(
            &admin,
            "mutation { createPipeline(input: { name: \"Sales\" }) { id } }",
            json!({}),
        )
        .await["createPipeline"]["id"]
        .as_str()
        .expect("pipeline")
        .to_string();
    let mut stages = Vec::new();
    for name in ["New", "Won"] {
        let stage = server
            .data(
                &admin,
                "mutation($p: ID!, $n: String!) { addStage(pipelineId: $p, input: { name: $n }) { id } }",
                json!({ "p": pipeline, "n": name }),
            )
            .await["addStage"]["id"]
            .as_str()
            .expect("stage")
            .to_string();
        stages.push(stage);
    }
    let conversation = server
        .data(
            &service,
            "mutation($input: ReceiveMessageInput!) { receiveMessage(input: $input) { id } }",
            json!({ "input": { "channel": "WHATSAPP", "externalId": phone,
                "customerName": "Budi", "text": "halo", "externalMessageId": format!("m-{phone}") } }),
        )
        .await["receiveMessage"]["id"]
        .as_str()
        .expect("conversation")
        .to_string();
    (pipeline, stages[0].clone(), stages[1].clone(), conversation)
}

async fn place(server: &Server, token: &str, pipeline: &str, conversation: &str) -> String {
    server
        .data(
            token,
            "mutation($p: ID!, $c: ID!) { placeCard(pipelineId: $p, conversationId: $c) { id } }",
            json!({ "p": pipeline, "c": conversation }),
        )
        .await["placeCard"]["id"]
        .as_str()
        .expect("card")
        .to_string()
}

async fn move_card(server: &Server, token: &str, card: &str, stage: &str) {
    server
        .data(
            token,
            "mutation($c: ID!, $s: ID!) { moveCard(cardId: $c, toStageId: $s) { id } }",
            json!({ "c": card, "s": stage }),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn board_changes_reach_subscribers_of_the_organization_only() {
    for db in TestDb::all().await {
        let server = Server::start(&db).await;
        let admin = admin();
        let (pipeline, new, won, conversation) = board(&server, "acme", "+6281100001").await;
        let (other_pipeline, _, _, _) = board(&server, "globex", "+6281100002").await;

        // Refused without a valid token.
        for token in [None, Some("not-a-token")] {
            let (mut socket, first) = connect(&server, token).await;
            let reason = match first {
                Some(Message::Close(Some(frame))) => frame.reason.to_string(),
                other => {
                    panic!(
                        "{:?}: expected the connection to be refused, got {other:?}",
                        db.backend
                    )
                }
            };
            assert!(
                reason.starts_with("unauthenticated"),
                "{:?}: {reason}",
                db.backend
            );
            assert!(next_change(&mut socket, Duration::from_millis(200))
                .await
                .is_none());
        }

        let mut watcher = subscribe(&server, &admin, &pipeline).await;
        let mut outsider = subscribe(
            &server,
            &Server::token("globex", "admin", "boss"),
            &other_pipeline,
        )
        .await;
        // Another organization cannot watch this board.
        let mut trespasser = subscribe(
            &server,
            &Server::token("globex", "admin", "boss"),
            &pipeline,
        )
        .await;
        let refused = next_change(&mut trespasser, Duration::from_secs(5))
            .await
            .expect("an answer");
        assert_eq!(
            refused["errors"][0]["extensions"]["code"], "NOT_FOUND",
            "{:?}: {refused}",
            db.backend
        );

        // Give the subscription a moment to be registered before the change.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let card = place(&server, &admin, &pipeline, &conversation).await;
        let placed = next_change(&mut watcher, WITHIN)
            .await
            .unwrap_or_else(|| panic!("{:?}: no CARD_PLACED within a second", db.backend));
        let placed = &placed["data"]["boardChanged"];
        assert_eq!(placed["kind"], "CARD_PLACED", "{:?}", db.backend);
        assert_eq!(placed["cardId"], card.as_str());
        assert_eq!(placed["toStageId"], new.as_str());

        move_card(&server, &admin, &card, &won).await;
        let moved = next_change(&mut watcher, WITHIN)
            .await
            .unwrap_or_else(|| panic!("{:?}: no CARD_MOVED within a second", db.backend));
        let moved = &moved["data"]["boardChanged"];
        assert_eq!(moved["kind"], "CARD_MOVED", "{:?}", db.backend);
        assert_eq!(
            (moved["fromStageId"].as_str(), moved["toStageId"].as_str()),
            (Some(new.as_str()), Some(won.as_str()))
        );
        // A refetch on the message sees the move.
        let board = server
            .data(
                &admin,
                "query($p: ID!) { board(pipelineId: $p) { stages { stage { id } count cards { id } } } }",
                json!({ "p": pipeline }),
            )
            .await;
        let won_column = &board["board"]["stages"][1];
        assert_eq!(won_column["stage"]["id"], won.as_str());
        assert_eq!(won_column["cards"][0]["id"], card.as_str());

        assert!(
            next_change(&mut outsider, Duration::from_millis(500))
                .await
                .is_none(),
            "{:?}: another organization's subscriber received a change",
            db.backend
        );
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_change_on_one_replica_reaches_a_subscriber_of_another() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let first = Server::start(&db).await;
    let second = Server::start(&db).await;
    let admin = admin();
    let (pipeline, _, won, conversation) = board(&first, "acme", "+6281100003").await;
    let card = place(&first, &admin, &pipeline, &conversation).await;
    let mut watcher = subscribe(&second, &admin, &pipeline).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    move_card(&first, &admin, &card, &won).await;
    let moved = next_change(&mut watcher, WITHIN)
        .await
        .expect("the second replica's subscriber got nothing within a second");
    assert_eq!(moved["data"]["boardChanged"]["kind"], "CARD_MOVED");
    assert_eq!(moved["data"]["boardChanged"]["cardId"], card.as_str());
    first.stop().await;
    second.stop().await;
}
