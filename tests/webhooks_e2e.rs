//! The providers' webhooks against the real server, on both backends, with the payload
//! fixtures of `tests/fixtures/webhooks/`: the WhatsApp handshake, signed and unsigned
//! notifications, malformed payloads, redeliveries, and Telegram's secret token.

mod common;

use common::{admin, count, Server, TestDb};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

const APP_SECRET: &str = "wa-app-secret";
const NUMBER_ID: &str = "106540352242922";

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../tests/fixtures/webhooks/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn post(server: &Server, path: &str, headers: &[(&str, String)], body: Vec<u8>) -> u16 {
    let mut request = reqwest::Client::new()
        .post(format!("{}{path}", server.base_url))
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    request.send().await.expect("POST").status().as_u16()
}

async fn configure(server: &Server) -> String {
    let configure = "mutation($input: ConfigureChannelInput!) { configureChannel(input: $input) { id channel apiBaseUrl } }";
    let whatsapp = json!({ "channel": "WHATSAPP", "settings": { "phoneNumberId": NUMBER_ID,
        "accessToken": "wa-token", "appSecret": APP_SECRET, "verifyToken": "verify-me" } });
    server
        .data(&admin(), configure, json!({ "input": whatsapp }))
        .await;
    let telegram = json!({ "channel": "TELEGRAM", "apiBaseUrl": "http://127.0.0.1:9",
        "settings": { "botToken": "123:abc", "secretToken": "tg-secret" } });
    let configured = server
        .data(&admin(), configure, json!({ "input": telegram }))
        .await;
    assert_eq!(
        configured["configureChannel"]["apiBaseUrl"],
        "http://127.0.0.1:9"
    );
    configured["configureChannel"]["id"]
        .as_str()
        .expect("channel id")
        .to_string()
}

#[tokio::test]
async fn whatsapp_and_telegram_webhooks_store_verified_messages_once() {
    for db in TestDb::all().await {
        let server = Server::start(&db).await;
        let telegram_channel = configure(&server).await;
        let direct = db.connect().await;
        let messages = "SELECT COUNT(*) FROM conversation_messages WHERE direction = 'INBOUND'";

        // The subscription handshake.
        let (status, body) = server
            .get("/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=1158201444")
            .await;
        assert_eq!((status, body.as_str()), (200, "1158201444"));
        let (status, _) = server
            .get("/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1")
            .await;
        assert_eq!(status, 403);

        // Unsigned, wrongly signed, malformed: refused, nothing stored.
        let body = fixture("whatsapp_text.json");
        assert_eq!(
            post(&server, "/webhooks/whatsapp", &[], body.clone()).await,
            401
        );
        let forged = vec![("X-Hub-Signature-256", sign("not-the-secret", &body))];
        assert_eq!(
            post(&server, "/webhooks/whatsapp", &forged, body.clone()).await,
            401
        );
        let garbage = b"{\"entry\": 5}".to_vec();
        let signed_garbage = vec![("X-Hub-Signature-256", sign(APP_SECRET, &garbage))];
        assert_eq!(
            post(&server, "/webhooks/whatsapp", &signed_garbage, garbage).await,
            400
        );
        assert_eq!(count(&direct, messages).await, 0, "{}", db.url);

        // Signed: stored; delivered twice: stored once.
        let signed = vec![("X-Hub-Signature-256", sign(APP_SECRET, &body))];
        assert_eq!(
            post(&server, "/webhooks/whatsapp", &signed, body.clone()).await,
            200
        );
        assert_eq!(
            post(&server, "/webhooks/whatsapp", &signed, body.clone()).await,
            200
        );
        assert_eq!(count(&direct, messages).await, 1, "{}", db.url);
        let listed = server
            .data(
                &admin(),
                "{ conversations { totalCount edges { node { channel externalId customerName
                    messages { edges { node { direction text } } } } } } }",
                json!({}),
            )
            .await;
        let node = &listed["conversations"]["edges"][0]["node"];
        assert_eq!(node["channel"], "WHATSAPP");
        assert_eq!(node["externalId"], "5511987654321");
        assert_eq!(node["customerName"], "Ana Souza");
        assert_eq!(
            node["messages"]["edges"][0]["node"]["text"],
            "Hello, my order #1042 has not arrived yet."
        );

        // Telegram: the secret token decides; unknown channels are 404.
        let update = fixture("telegram_text.json");
        let path = format!("/webhooks/telegram/{telegram_channel}");
        let wrong = vec![("X-Telegram-Bot-Api-Secret-Token", "nope".to_string())];
        assert_eq!(post(&server, &path, &wrong, update.clone()).await, 401);
        assert_eq!(
            post(
                &server,
                "/webhooks/telegram/no-such-channel",
                &[],
                update.clone()
            )
            .await,
            404
        );
        let right = vec![("X-Telegram-Bot-Api-Secret-Token", "tg-secret".to_string())];
        assert_eq!(
            post(&server, &path, &right, b"not json".to_vec()).await,
            400
        );
        assert_eq!(count(&direct, messages).await, 1, "{}", db.url);
        assert_eq!(post(&server, &path, &right, update.clone()).await, 200);
        assert_eq!(post(&server, &path, &right, update).await, 200);
        assert_eq!(count(&direct, messages).await, 2, "{}", db.url);

        // A number belongs to one organization.
        let taken = server
            .graphql(
                Some(&Server::token("globex", "admin", "gina")),
                "mutation($input: ConfigureChannelInput!) { configureChannel(input: $input) { id } }",
                json!({ "input": { "channel": "WHATSAPP", "settings": { "phoneNumberId": NUMBER_ID,
                    "accessToken": "t", "appSecret": "s", "verifyToken": "v" } } }),
            )
            .await;
        assert_eq!(common::error_code(&taken), Some("CONFLICT"));
        // Missing secrets are refused by name.
        let incomplete = server
            .graphql(
                Some(&admin()),
                "mutation($input: ConfigureChannelInput!) { configureChannel(input: $input) { id } }",
                json!({ "input": { "channel": "TELEGRAM", "settings": { "botToken": "x" } } }),
            )
            .await;
        assert_eq!(common::error_code(&incomplete), Some("BAD_USER_INPUT"));

        // Secrets never enter the log, and no query returns them.
        for secret in [APP_SECRET, "wa-token", "tg-secret", "123:abc", "verify-me"] {
            let sql = format!(
                "SELECT COUNT(*) FROM events WHERE CAST(payload AS TEXT) LIKE '%{secret}%'"
            );
            assert_eq!(count(&direct, &sql).await, 0, "{secret} in the log");
        }
        server.stop().await;
    }
}
