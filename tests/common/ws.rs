//! A graphql-transport-ws client for subscription tests: connect with the token in
//! `connection_init`, subscribe, read the next `next` payload with a deadline.

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::Server;

/// An open subscription connection.
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How soon a change must reach a subscriber.
pub const WITHIN: Duration = Duration::from_secs(1);

/// Opens `/graphql/ws` with the graphql-transport-ws subprotocol and sends
/// `connection_init` carrying `token`; returns the socket and the first server frame.
pub async fn connect(server: &Server, token: Option<&str>) -> (Socket, Option<Message>) {
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

/// A connection with one subscription, id "1", to `query` with `variables`.
pub async fn subscribe(server: &Server, token: &str, query: &str, variables: Value) -> Socket {
    let (mut socket, ack) = connect(server, Some(token)).await;
    let ack: Value =
        serde_json::from_str(ack.expect("ack").to_text().expect("text")).expect("json");
    assert_eq!(ack["type"], "connection_ack");
    socket
        .send(Message::text(
            json!({ "id": "1", "type": "subscribe",
                    "payload": { "query": query, "variables": variables } })
            .to_string(),
        ))
        .await
        .expect("subscribe");
    socket
}

/// The next `next` payload of subscription "1" within `wait`, or `None`.
pub async fn next_change(socket: &mut Socket, wait: Duration) -> Option<Value> {
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
