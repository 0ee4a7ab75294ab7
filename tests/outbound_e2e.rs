//! The whole path of issue 4 against the real server and a fake WhatsApp Cloud API and
//! Telegram Bot API on 127.0.0.1, on both backends: signed webhooks in; the menu, the queue number, the "#"
//! answer, the "agent ready" notice and the agent's reply out through the outbox; retries
//! with one idempotency key, dead letters and `retryDelivery`; and a restart with a job
//! pending.

mod common;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use common::{admin, agent, Server, TestDb};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const APP_SECRET: &str = "wa-app-secret";
const NUMBER_ID: &str = "PN1";
const CUSTOMER: &str = "6281234567890";

/// One request the fake provider received.
#[derive(Debug, Clone)]
struct Sent {
    path: String,
    authorization: String,
    idempotency_key: String,
    to: String,
    text: String,
}

/// The fake WhatsApp Cloud API: records every request and answers with the scripted
/// statuses in order (200 once the script is used up).
#[derive(Clone, Default)]
struct Provider {
    sent: Arc<Mutex<Vec<Sent>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
    always_fail: Arc<Mutex<bool>>,
}

impl Provider {
    async fn start(&self) -> String {
        let app = Router::new()
            .route("/{number}/messages", post(answer))
            .route("/{bot}/sendMessage", post(answer_telegram))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake provider");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake provider");
        });
        url
    }

    fn sent(&self) -> Vec<Sent> {
        self.sent.lock().expect("lock").clone()
    }

    /// Waits until a request carrying `text` arrived (at least `times` of them).
    async fn wait_for(&self, text: &str, times: usize) -> Vec<Sent> {
        let found = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let matching: Vec<Sent> =
                    self.sent().into_iter().filter(|s| s.text == text).collect();
                if matching.len() >= times {
                    return matching;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            panic!(
                "the provider never got {text:?} x{times}; it got {:#?}",
                self.sent()
            )
        })
    }
}

async fn answer(
    State(provider): State<Provider>,
    axum::extract::Path(number): axum::extract::Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let mut sent = provider.sent.lock().expect("lock");
    sent.push(Sent {
        path: format!("/{number}/messages"),
        authorization: header("authorization"),
        idempotency_key: header("x-idempotency-key"),
        to: body["to"].as_str().unwrap_or_default().to_string(),
        text: body["text"]["body"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    });
    let scripted = provider.script.lock().expect("lock").pop_front();
    let status = if *provider.always_fail.lock().expect("lock") {
        500
    } else {
        scripted.unwrap_or(200)
    };
    let id = format!("wamid.out.{}", sent.len());
    (
        StatusCode::from_u16(status).expect("status"),
        Json(json!({ "messaging_product": "whatsapp", "messages": [{ "id": id }] })),
    )
}

/// The fake Telegram Bot API's `sendMessage`.
async fn answer_telegram(
    State(provider): State<Provider>,
    axum::extract::Path(bot): axum::extract::Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let mut sent = provider.sent.lock().expect("lock");
    sent.push(Sent {
        path: format!("/{bot}/sendMessage"),
        authorization: String::new(),
        idempotency_key: headers
            .get("x-idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        to: body["chat_id"].to_string(),
        text: body["text"].as_str().unwrap_or_default().to_string(),
    });
    let id = sent.len();
    (
        StatusCode::OK,
        Json(json!({ "ok": true, "result": { "message_id": id } })),
    )
}

/// A Telegram update with one text message from chat 777001, with the secret token.
async fn telegram_update(server: &Server, channel: &str, message_id: i64, text: &str) {
    let body = json!({ "update_id": 9000 + message_id, "message": { "message_id": message_id,
        "from": { "id": 777001, "is_bot": false, "first_name": "Sari" },
        "chat": { "id": 777001, "first_name": "Sari", "type": "private" },
        "date": 1700000000, "text": text } });
    let status = reqwest::Client::new()
        .post(format!("{}/webhooks/telegram/{channel}", server.base_url))
        .header("X-Telegram-Bot-Api-Secret-Token", "tg-secret")
        .json(&body)
        .send()
        .await
        .expect("telegram webhook")
        .status();
    assert_eq!(status.as_u16(), 200);
}

/// A WhatsApp Cloud API notification with one text message, signed.
async fn webhook(server: &Server, message_id: &str, text: &str) {
    let body = json!({ "object": "whatsapp_business_account", "entry": [{ "id": "WABA",
        "changes": [{ "field": "messages", "value": { "messaging_product": "whatsapp",
            "metadata": { "display_phone_number": "15550000000", "phone_number_id": NUMBER_ID },
            "contacts": [{ "profile": { "name": "Budi" }, "wa_id": CUSTOMER }],
            "messages": [{ "from": CUSTOMER, "id": message_id, "timestamp": "1700000000",
                "type": "text", "text": { "body": text } }] } }] }] })
    .to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(APP_SECRET.as_bytes()).expect("key");
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let status = reqwest::Client::new()
        .post(format!("{}/webhooks/whatsapp", server.base_url))
        .header("X-Hub-Signature-256", signature)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("webhook")
        .status();
    assert_eq!(status.as_u16(), 200);
}

async fn set_up(server: &Server, provider_url: &str) -> String {
    let admin = admin();
    server
        .data(
            &admin,
            "mutation($input: ConfigureChannelInput!) { configureChannel(input: $input) { id } }",
            json!({ "input": { "channel": "WHATSAPP", "apiBaseUrl": provider_url,
                "settings": { "phoneNumberId": NUMBER_ID, "accessToken": "wa-token",
                    "appSecret": APP_SECRET, "verifyToken": "v" } } }),
        )
        .await;
    server
        .data(
            &admin,
            "mutation { updateQueueSettings(input: { enabled: true }) { enabled } }",
            json!({}),
        )
        .await;
    let billing = server.create_division(&admin, "Billing").await;
    server
        .data(
            &admin,
            "mutation($d: ID!) { registerAgent(input: { id: \"dewi\", name: \"Dewi\", divisionIds: [$d] }) { id } }",
            json!({ "d": billing }),
        )
        .await;
    billing
}

async fn conversation_id(server: &Server) -> String {
    server
        .data(
            &admin(),
            "{ conversations { edges { node { id } } } }",
            json!({}),
        )
        .await["conversations"]["edges"][0]["node"]["id"]
        .as_str()
        .expect("conversation")
        .to_string()
}

async fn reply(server: &Server, conversation: &str, text: &str) -> String {
    server
        .data(
            &agent("dewi"),
            "mutation($id: ID!, $t: String!) { sendReply(conversationId: $id, text: $t) { id } }",
            json!({ "id": conversation, "t": text }),
        )
        .await["sendReply"]["id"]
        .as_str()
        .expect("message id")
        .to_string()
}

async fn job(server: &Server, status: &str, id: &str) -> Option<Value> {
    let page = server
        .data(
            &admin(),
            "query($s: String) { outbox(status: $s, first: 100) { totalCount edges { node {
                id status attempts idempotencyKey lastError deliveredAt } } } }",
            json!({ "s": status }),
        )
        .await;
    page["outbox"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"].clone())
        .find(|n| n["id"] == id)
}

async fn wait_for_job(server: &Server, status: &str, id: &str) -> Value {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Some(job) = job(server, status, id).await {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("job {id} never became {status}"))
}

#[tokio::test]
async fn from_webhook_to_the_customers_phone_with_retries_dead_letters_and_a_restart() {
    for db in TestDb::all().await {
        let provider = Provider::default();
        let provider_url = provider.start().await;
        let env = [("HELPDESK_OUTBOX_BACKOFF_MS", "100")];
        let server = Server::start_with(&db, &env).await;
        set_up(&server, &provider_url).await;

        // Menu, choice, queue number, "#".
        webhook(&server, "wamid.in.1", "halo").await;
        let menu = provider
            .wait_for(
                "Selamat datang di toko kami, silahkan pilih agen yang anda tuju\n1. Billing",
                1,
            )
            .await;
        assert_eq!(menu[0].path, format!("/{NUMBER_ID}/messages"));
        assert_eq!(menu[0].authorization, "Bearer wa-token");
        assert_eq!(menu[0].to, CUSTOMER);
        assert!(!menu[0].idempotency_key.is_empty());
        webhook(&server, "wamid.in.2", "1").await;
        provider
            .wait_for(
                "Anda akan di layani oleh tim Billing, Tunggu dalam antrian ke 1. Tekan # untuk cek antrian",
                1,
            )
            .await;
        webhook(&server, "wamid.in.3", "#").await;
        provider
            .wait_for("Anda masih dalam antrian ke 1. mohon menunggu", 1)
            .await;
        // A redelivered webhook sends nothing again.
        webhook(&server, "wamid.in.3", "#").await;

        // The agent takes the ticket: the customer is told; the reply reaches the phone.
        let conversation = conversation_id(&server).await;
        let ticket = server
            .data(
                &admin(),
                "query($id: ID!) { conversation(id: $id) { ticket { id } } }",
                json!({ "id": conversation }),
            )
            .await["conversation"]["ticket"]["id"]
            .as_str()
            .expect("ticket")
            .to_string();
        server.claim_ticket(&agent("dewi"), &ticket).await;
        provider
            .wait_for("Agen Dewi siap membantu Anda sekarang.", 1)
            .await;
        let first = reply(&server, &conversation, "Halo Budi, ada yang bisa dibantu?").await;
        provider
            .wait_for("Halo Budi, ada yang bisa dibantu?", 1)
            .await;
        wait_for_job(&server, "DELIVERED", &first).await;
        assert_eq!(
            provider
                .sent()
                .iter()
                .filter(|s| s.text == "Anda masih dalam antrian ke 1. mohon menunggu")
                .count(),
            1,
            "the redelivered '#' was answered once"
        );

        // 500 twice, then 200: delivered on the third attempt, one key throughout.
        provider.script.lock().expect("lock").extend([500, 500]);
        let retried = reply(&server, &conversation, "Tagihan Anda sudah lunas.").await;
        let attempts = provider.wait_for("Tagihan Anda sudah lunas.", 3).await;
        assert!(attempts
            .iter()
            .all(|s| s.idempotency_key == attempts[0].idempotency_key));
        let delivered = wait_for_job(&server, "DELIVERED", &retried).await;
        assert_eq!(delivered["attempts"], 3);

        // Always 500: a dead letter after three attempts, listed; retried by an admin.
        *provider.always_fail.lock().expect("lock") = true;
        let dead = reply(&server, &conversation, "Terima kasih!").await;
        let letter = wait_for_job(&server, "DEAD", &dead).await;
        assert_eq!(letter["attempts"], 3);
        assert_eq!(provider.wait_for("Terima kasih!", 3).await.len(), 3);
        *provider.always_fail.lock().expect("lock") = false;
        let retry = server
            .data(
                &admin(),
                "mutation($id: ID!) { retryDelivery(id: $id) { status attempts } }",
                json!({ "id": dead }),
            )
            .await;
        assert_eq!(retry["retryDelivery"]["status"], "PENDING");
        wait_for_job(&server, "DELIVERED", &dead).await;
        let again = server
            .graphql(
                Some(&admin()),
                "mutation($id: ID!) { retryDelivery(id: $id) { status } }",
                json!({ "id": dead }),
            )
            .await;
        assert_eq!(common::error_code(&again), Some("INVALID_TRANSITION"));

        // Killed with a job pending (the provider is down): after the restart it is sent.
        *provider.always_fail.lock().expect("lock") = true;
        let pending = reply(&server, &conversation, "Pesan terakhir").await;
        provider.wait_for("Pesan terakhir", 1).await;
        server.kill().await;
        *provider.always_fail.lock().expect("lock") = false;
        let server = Server::start_with(&db, &env).await;
        wait_for_job(&server, "DELIVERED", &pending).await;
        let copies = provider.wait_for("Pesan terakhir", 2).await;
        assert!(copies
            .iter()
            .all(|s| s.idempotency_key == copies[0].idempotency_key));
        server.stop().await;
    }
}

#[tokio::test]
async fn telegram_menu_to_reply_through_the_bot_api() {
    for db in TestDb::all().await {
        let provider = Provider::default();
        let provider_url = provider.start().await;
        let server = Server::start(&db).await;
        set_up(&server, &provider_url).await;
        let channel = server
            .data(
                &admin(),
                "mutation($input: ConfigureChannelInput!) { configureChannel(input: $input) { id } }",
                json!({ "input": { "channel": "TELEGRAM", "apiBaseUrl": provider_url,
                    "settings": { "botToken": "123:abc", "secretToken": "tg-secret" } } }),
            )
            .await["configureChannel"]["id"]
            .as_str()
            .expect("channel")
            .to_string();
        telegram_update(&server, &channel, 1, "halo").await;
        let menu = provider
            .wait_for(
                "Selamat datang di toko kami, silahkan pilih agen yang anda tuju\n1. Billing",
                1,
            )
            .await;
        assert_eq!(menu[0].path, "/bot123:abc/sendMessage");
        assert_eq!(menu[0].to, "777001");
        telegram_update(&server, &channel, 2, "Billing").await;
        provider
            .wait_for(
                "Anda akan di layani oleh tim Billing, Tunggu dalam antrian ke 1. Tekan # untuk cek antrian",
                1,
            )
            .await;
        telegram_update(&server, &channel, 3, "#").await;
        provider
            .wait_for("Anda masih dalam antrian ke 1. mohon menunggu", 1)
            .await;
        let conversation = conversation_id(&server).await;
        let ticket = server
            .data(
                &admin(),
                "query($id: ID!) { conversation(id: $id) { channel ticket { id } } }",
                json!({ "id": conversation }),
            )
            .await["conversation"]
            .clone();
        assert_eq!(ticket["channel"], "TELEGRAM");
        let ticket = ticket["ticket"]["id"].as_str().expect("ticket").to_string();
        server.claim_ticket(&agent("dewi"), &ticket).await;
        provider
            .wait_for("Agen Dewi siap membantu Anda sekarang.", 1)
            .await;
        let sent = reply(&server, &conversation, "Halo Sari!").await;
        provider.wait_for("Halo Sari!", 1).await;
        wait_for_job(&server, "DELIVERED", &sent).await;
        server.stop().await;
    }
}
