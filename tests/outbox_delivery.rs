//! The outbound delivery worker (`api::outbox`) against a fake provider, on every backend.
//!
//! Each case starts the real, in-process [`Helpdesk`] on a fresh database, writes the rows
//! the conversations, channels and outbox projections would have written (texts and handles
//! sealed with the customer's key, channel secrets stored aside), starts a fake WhatsApp /
//! Telegram provider on 127.0.0.1:0 that records every request and answers from a script
//! per idempotency key, and runs the worker with a 50 ms backoff.
//!
//! - `failed_attempts_are_retried_with_the_same_key`: 500, 500, 200 -> DELIVERED on the 3rd
//!   attempt, one idempotency key throughout, the backoff doubling between attempts.
//! - `dead_letters_are_listed_and_retried`: always 500 -> DEAD after exactly 3 attempts,
//!   listed by `list(.., Some("DEAD"))`; `retry` sends it again; the admin operations'
//!   refusals (not DEAD, other organization, bad status filter).
//! - `system_goes_before_reply_before_bulk`: due jobs go out by priority, then age.
//! - `permanent_failures_are_dead_at_once`: a 400, a Telegram `ok:false` 400, an erased
//!   customer (never sent), a channel without secrets; a 429 is retried instead.
//! - `requests_have_the_providers_shapes`: WhatsApp and Telegram paths, credentials, bodies.
//! - `a_job_left_sending_is_sent_after_a_restart`: a worker dies mid-send; the next one
//!   sends the job again with the same key.
//! - `each_channel_is_rate_limited_on_its_own`: a token bucket per channel.

mod common;

use api::config::Config;
use api::error::ApiError;
use api::helpdesk::Helpdesk;
use api::outbox::{self, DeliveryOptions, OutboxJobRecord};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use common::TestDb;
use projections::db::timestamp;
use projections::personal_data::{self, CustomerKey};
use projections::{on_backend, Database};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const ORG: &str = "acme";
const OTHER_ORG: &str = "globex";
const WA_TOKEN: &str = "wa-secret-token";
const WA_PHONE: &str = "PHONE123";
const TG_TOKEN: &str = "123456:tg-secret-token";
/// Long enough for any case on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(30);

fn fast() -> DeliveryOptions {
    DeliveryOptions {
        base_backoff: Duration::from_millis(50),
        max_attempts: 3,
        per_channel_rate: 20,
        poll_every: Duration::from_millis(50),
    }
}

// ---------------------------------------------------------------------------------------
// The fake provider.

/// One request the fake provider received.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    path: String,
    authorization: Option<String>,
    key: Option<String>,
    body: Value,
}

/// What the fake provider answers.
#[derive(Debug, Clone)]
enum Answer {
    Status(u16, Value),
    /// Never answers (within the test): the worker's request is in flight.
    Hang,
}

#[derive(Default)]
struct Fake {
    seen: Mutex<Vec<Seen>>,
    /// Answers by idempotency key, in order; then the provider's success.
    script: Mutex<HashMap<String, VecDeque<Answer>>>,
    next_id: AtomicU64,
}

impl Fake {
    fn script(&self, key: &str, answers: Vec<Answer>) {
        self.script
            .lock()
            .unwrap()
            .insert(key.to_string(), answers.into());
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn seen_for(&self, key: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.key.as_deref() == Some(key))
            .collect()
    }
}

fn status(code: u16) -> Answer {
    Answer::Status(
        code,
        json!({ "error": { "code": code, "message": "scripted" } }),
    )
}

async fn answer(
    State(fake): State<Arc<Fake>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let key = header("x-idempotency-key");
    fake.seen.lock().unwrap().push(Seen {
        at: Instant::now(),
        path: uri.path().to_string(),
        authorization: header("authorization"),
        key: key.clone(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    let scripted = key.and_then(|key| {
        fake.script
            .lock()
            .unwrap()
            .get_mut(&key)
            .and_then(VecDeque::pop_front)
    });
    match scripted {
        Some(Answer::Hang) => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Some(Answer::Status(code, body)) => {
            (StatusCode::from_u16(code).unwrap(), Json(body)).into_response()
        }
        None => {
            let n = fake.next_id.fetch_add(1, Ordering::SeqCst) + 1;
            if uri.path().ends_with("/sendMessage") {
                Json(json!({ "ok": true, "result": { "message_id": n } })).into_response()
            } else {
                Json(json!({
                    "messaging_product": "whatsapp",
                    "contacts": [{ "input": "x", "wa_id": "x" }],
                    "messages": [{ "id": format!("wamid.{n}") }],
                }))
                .into_response()
            }
        }
    }
}

/// Starts the fake provider; returns it and its base URL.
async fn fake_provider() -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake::default());
    let app = axum::Router::new()
        .fallback(answer)
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind fake provider");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (fake, format!("http://{address}"))
}

// ---------------------------------------------------------------------------------------
// The helpdesk and its rows.

struct Desk {
    helpdesk: Arc<Helpdesk>,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Desk {
    async fn start(db: &TestDb) -> Desk {
        let url = db.url.clone();
        // The tests run their own delivery workers, with their own options.
        let config = Config::from_lookup(|key| match key {
            "DATABASE_URL" => Some(url.clone()),
            "HELPDESK_OUTBOX_DELIVERY" => Some("off".into()),
            _ => None,
        })
        .expect("config");
        let shutdown = CancellationToken::new();
        let (helpdesk, tasks) = Helpdesk::start(&config, shutdown.clone())
            .await
            .expect("start the helpdesk");
        Desk {
            helpdesk,
            shutdown,
            tasks,
        }
    }

    fn db(&self) -> &Database {
        &self.helpdesk.db
    }

    /// Starts a worker; cancel the token (graceful) or abort the task (a crash) to stop it.
    fn worker(&self, options: DeliveryOptions) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let token = self.shutdown.child_token();
        let task = tokio::spawn(outbox::run_with(
            self.helpdesk.clone(),
            options,
            token.clone(),
        ));
        (token, task)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        self.helpdesk.db.close().await;
    }

    /// A configured channel: its public row and its secrets.
    async fn channel(&self, org: &str, id: &str, kind: &str, base: &str, settings: Value) {
        let now = timestamp(Utc::now());
        let phone = settings
            .get("phoneNumberId")
            .and_then(Value::as_str)
            .map(str::to_string);
        on_backend!(self.db(), |pool| {
            sqlx::query(
                "INSERT INTO channels (id, organization_id, channel, api_base_url,
                    phone_number_id, configured_at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id)
            .bind(org)
            .bind(kind)
            .bind(base)
            .bind(phone)
            .bind(&now)
            .execute(pool)
            .await
            .expect("channel row");
        });
        self.secrets(org, id, settings).await;
    }

    async fn secrets(&self, org: &str, id: &str, settings: Value) {
        on_backend!(self.db(), |pool| {
            sqlx::query(
                "INSERT INTO channel_secrets (channel_id, organization_id, settings, updated_at)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(id)
            .bind(org)
            .bind(settings.to_string())
            .bind(timestamp(Utc::now()))
            .execute(pool)
            .await
            .expect("channel secrets");
        });
    }

    async fn whatsapp(&self, org: &str, id: &str, base: &str) {
        let settings = json!({
            "phoneNumberId": WA_PHONE, "accessToken": WA_TOKEN,
            "appSecret": "app-secret", "verifyToken": "verify",
        });
        self.channel(org, id, "WHATSAPP", &format!("{base}/wa"), settings)
            .await;
    }

    async fn telegram(&self, org: &str, id: &str, base: &str) {
        let settings = json!({ "botToken": TG_TOKEN, "secretToken": "tg-webhook-secret" });
        self.channel(org, id, "TELEGRAM", &format!("{base}/tg"), settings)
            .await;
    }

    /// A conversation of a new customer whose handle is `handle`; returns the key.
    async fn conversation(
        &self,
        org: &str,
        id: &str,
        kind: &str,
        channel_id: &str,
        handle: &str,
    ) -> Conversation {
        let customer_id = format!("customer-{id}");
        let key = personal_data::key_for(self.db(), org, &customer_id)
            .await
            .expect("customer key");
        let now = timestamp(Utc::now());
        on_backend!(self.db(), |pool| {
            sqlx::query(
                "INSERT INTO conversations (id, organization_id, channel, channel_id,
                    customer_id, external_id, customer_name, mode, needs_human, unread_count,
                    last_message_at, created_at, version)
                 VALUES ($1, $2, $3, $4, $5, $6, NULL, 'BOT', $7, 0, $8, $8, 1)",
            )
            .bind(id)
            .bind(org)
            .bind(kind)
            .bind(channel_id)
            .bind(&customer_id)
            .bind(key.seal(handle).0)
            .bind(false)
            .bind(&now)
            .execute(pool)
            .await
            .expect("conversation row");
        });
        Conversation {
            org: org.to_string(),
            id: id.to_string(),
            channel_id: channel_id.to_string(),
            customer_id,
            key,
        }
    }

    /// An outbound message and its PENDING job, due now, queued `age_ms` ago.
    async fn queue(
        &self,
        conversation: &Conversation,
        message_id: &str,
        priority: i64,
        text: &str,
        age_ms: i64,
    ) {
        let kind = ["SYSTEM", "REPLY", "BULK"][priority as usize];
        let queued_at = timestamp(Utc::now() - chrono::Duration::milliseconds(age_ms));
        let position = POSITION.fetch_add(1, Ordering::SeqCst) as i64;
        on_backend!(self.db(), |pool| {
            sqlx::query(
                "INSERT INTO conversation_messages (id, conversation_id, organization_id,
                    direction, kind, author_id, text, created_at, position)
                 VALUES ($1, $2, $3, 'OUTBOUND', $4, NULL, $5, $6, $7)",
            )
            .bind(message_id)
            .bind(&conversation.id)
            .bind(&conversation.org)
            .bind(kind)
            .bind(conversation.key.seal(text).0)
            .bind(&queued_at)
            .bind(position)
            .execute(pool)
            .await
            .expect("message row");
            sqlx::query(
                "INSERT INTO outbox_jobs (message_id, organization_id, conversation_id,
                    channel_id, priority, queued_at, idempotency_key, status, attempts,
                    next_attempt_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $1, 'PENDING', 0, $6, $6)",
            )
            .bind(message_id)
            .bind(&conversation.org)
            .bind(&conversation.id)
            .bind(&conversation.channel_id)
            .bind(priority)
            .bind(&queued_at)
            .execute(pool)
            .await
            .expect("outbox job");
        });
    }

    async fn job(&self, org: &str, message_id: &str) -> OutboxJobRecord {
        outbox::job(self.db(), org, message_id)
            .await
            .expect("read job")
            .expect("job exists")
    }

    /// Waits until the job has `status`; returns it.
    async fn wait_for(&self, message_id: &str, status: &str) -> OutboxJobRecord {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let job = self.job(ORG, message_id).await;
            if job.status == status {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {message_id} is still {job:?}, not {status}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Positions of the seeded messages (unique in a test binary: only their order matters).
static POSITION: AtomicU64 = AtomicU64::new(1);

struct Conversation {
    org: String,
    id: String,
    channel_id: String,
    customer_id: String,
    key: CustomerKey,
}

/// Runs `case` on every backend, printing how long each took.
macro_rules! on_every_backend {
    ($name:literal, |$desk:ident, $base:ident, $fake:ident| $body:expr) => {{
        for db in TestDb::all().await {
            let started = Instant::now();
            let $desk = Desk::start(&db).await;
            let ($fake, $base) = fake_provider().await;
            $body;
            $desk.stop().await;
            eprintln!("{} on {:?}: {:?}", $name, db.backend, started.elapsed());
        }
    }};
}

fn gaps(seen: &[Seen]) -> Vec<Duration> {
    seen.windows(2).map(|w| w[1].at - w[0].at).collect()
}

// ---------------------------------------------------------------------------------------
// The cases.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_attempts_are_retried_with_the_same_key() {
    on_every_backend!("retried", |desk, base, fake| {
        desk.whatsapp(ORG, "wa", &base).await;
        let chat = desk
            .conversation(ORG, "c1", "WHATSAPP", "wa", "6281200001111")
            .await;
        desk.queue(&chat, "m1", 1, "Halo, tiket Anda sudah dibuat", 0)
            .await;
        fake.script("m1", vec![status(500), status(500)]);
        let (_stop, _worker) = desk.worker(fast());

        let job = desk.wait_for("m1", "DELIVERED").await;
        assert_eq!(job.attempts, 3);
        assert_eq!(job.provider_message_id.as_deref(), Some("wamid.1"));
        assert!(job.delivered_at.is_some());
        assert_eq!(job.last_error, None);
        let seen = fake.seen();
        assert_eq!(seen.len(), 3, "three attempts: {seen:?}");
        assert!(seen.iter().all(|s| s.key.as_deref() == Some("m1")));
        assert!(seen.iter().all(|s| s.body == seen[0].body));
        // 50 ms after the first failure, 100 ms after the second.
        let gaps = gaps(&seen);
        assert!(gaps[0] >= Duration::from_millis(45), "{gaps:?}");
        assert!(gaps[1] >= Duration::from_millis(95), "{gaps:?}");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letters_are_listed_and_retried() {
    on_every_backend!("dead letters", |desk, base, fake| {
        desk.whatsapp(ORG, "wa", &base).await;
        let chat = desk
            .conversation(ORG, "c1", "WHATSAPP", "wa", "6281200001111")
            .await;
        let text = "Nomor antrian Anda: 7";
        desk.queue(&chat, "m-dead", 0, text, 10).await;
        desk.queue(&chat, "m-fine", 1, "Terima kasih", 0).await;
        fake.script("m-dead", vec![status(500), status(503), status(500)]);
        let (stop, worker) = desk.worker(fast());

        let dead = desk.wait_for("m-dead", "DEAD").await;
        assert_eq!(dead.attempts, 3);
        let error = dead.last_error.clone().expect("last error");
        assert!(error.contains("HTTP 500"), "{error}");
        assert!(!error.contains(WA_TOKEN) && !error.contains(text) && !error.contains("62812"));
        desk.wait_for("m-fine", "DELIVERED").await;
        // No fourth attempt comes, however long one waits.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(fake.seen_for("m-dead").len(), 3);
        assert_eq!(desk.job(ORG, "m-dead").await.status, "DEAD");

        let (rows, more, total) = outbox::list(desk.db(), ORG, Some("DEAD"), 10, None)
            .await
            .expect("list dead");
        assert_eq!((rows.len(), more, total), (1, false, 1));
        assert_eq!(rows[0].message_id, "m-dead");
        let (rows, more, total) = outbox::list(desk.db(), ORG, None, 1, None)
            .await
            .expect("list all");
        assert_eq!((rows.len(), more, total), (1, true, 2));
        assert_eq!(rows[0].message_id, "m-dead", "the oldest first");
        let (rows, more, _) = outbox::list(desk.db(), ORG, None, 1, Some(rows[0].cursor()))
            .await
            .expect("next page");
        assert_eq!((rows[0].message_id.as_str(), more), ("m-fine", false));
        let (rows, _, total) = outbox::list(desk.db(), OTHER_ORG, None, 10, None)
            .await
            .expect("other organization");
        assert_eq!((rows.len(), total), (0, 0));
        assert!(matches!(
            outbox::list(desk.db(), ORG, Some("LOST"), 10, None).await,
            Err(ApiError::BadUserInput(_))
        ));

        // The admin's refusals.
        assert!(matches!(
            outbox::retry(desk.db(), OTHER_ORG, "m-dead").await,
            Err(ApiError::NotFound(_))
        ));
        assert!(matches!(
            outbox::retry(desk.db(), ORG, "no-such-job").await,
            Err(ApiError::NotFound(_))
        ));
        let refused = outbox::retry(desk.db(), ORG, "m-fine").await;
        assert!(
            matches!(&refused, Err(e) if e.code() == "INVALID_TRANSITION"),
            "{refused:?}"
        );

        // Retried: queued again from scratch, and the provider now takes it.
        let retried = outbox::retry(desk.db(), ORG, "m-dead")
            .await
            .expect("retry");
        assert_eq!((retried.status.as_str(), retried.attempts), ("PENDING", 0));
        let delivered = desk.wait_for("m-dead", "DELIVERED").await;
        assert_eq!(delivered.attempts, 1);
        let seen = fake.seen_for("m-dead");
        assert_eq!(seen.len(), 4);
        assert!(seen.iter().all(|s| s.body == seen[0].body));
        stop.cancel();
        worker.await.expect("worker stops");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn system_goes_before_reply_before_bulk() {
    on_every_backend!("priorities", |desk, base, fake| {
        desk.whatsapp(ORG, "wa", &base).await;
        let chat = desk
            .conversation(ORG, "c1", "WHATSAPP", "wa", "6281200001111")
            .await;
        // Queued oldest first: bulk, reply, system, bulk, reply, system.
        let jobs = [
            ("bulk-1", 2),
            ("reply-1", 1),
            ("system-1", 0),
            ("bulk-2", 2),
            ("reply-2", 1),
            ("system-2", 0),
        ];
        for (n, (id, priority)) in jobs.iter().enumerate() {
            desk.queue(&chat, id, *priority, id, 1000 - n as i64 * 100)
                .await;
        }
        let (_stop, _worker) = desk.worker(fast());
        for (id, _) in jobs {
            desk.wait_for(id, "DELIVERED").await;
        }
        let order: Vec<String> = fake
            .seen()
            .iter()
            .map(|s| {
                s.body["text"]["body"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        assert_eq!(
            order,
            ["system-1", "system-2", "reply-1", "reply-2", "bulk-1", "bulk-2"]
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn permanent_failures_are_dead_at_once() {
    on_every_backend!("permanent", |desk, base, fake| {
        desk.whatsapp(ORG, "wa", &base).await;
        desk.telegram(ORG, "tg", &base).await;
        let chat = desk
            .conversation(ORG, "c1", "WHATSAPP", "wa", "6281200001111")
            .await;
        let tg_chat = desk
            .conversation(ORG, "c2", "TELEGRAM", "tg", "987654321")
            .await;
        let erased = desk
            .conversation(ORG, "c3", "WHATSAPP", "wa", "6281200002222")
            .await;
        // A channel whose secrets are gone (only its public row remains).
        desk.channel(ORG, "wa-2", "WHATSAPP", &format!("{base}/wa"), json!({}))
            .await;
        on_backend!(desk.db(), |pool| {
            sqlx::query("DELETE FROM channel_secrets WHERE channel_id = 'wa-2'")
                .execute(pool)
                .await
                .expect("drop secrets");
        });
        let unconfigured = desk
            .conversation(ORG, "c4", "WHATSAPP", "wa-2", "6281200003333")
            .await;
        desk.queue(&chat, "m-400", 1, "refused", 0).await;
        desk.queue(&chat, "m-429", 1, "later", 0).await;
        desk.queue(&tg_chat, "m-tg-400", 1, "chat not found", 0)
            .await;
        desk.queue(&erased, "m-erased", 1, "nobody", 0).await;
        desk.queue(&unconfigured, "m-nochannel", 1, "nowhere", 0)
            .await;
        on_backend!(desk.db(), |pool| {
            sqlx::query("DELETE FROM customer_keys WHERE customer_id = $1")
                .bind(&erased.customer_id)
                .execute(pool)
                .await
                .expect("erase customer");
        });
        fake.script("m-400", vec![status(400)]);
        fake.script("m-429", vec![status(429)]);
        fake.script(
            "m-tg-400",
            vec![Answer::Status(
                400,
                json!({ "ok": false, "error_code": 400, "description": "Bad Request: chat not found" }),
            )],
        );
        let (_stop, _worker) = desk.worker(fast());

        let job = desk.wait_for("m-400", "DEAD").await;
        assert_eq!(job.attempts, 1);
        assert!(job
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("HTTP 400"));
        let job = desk.wait_for("m-tg-400", "DEAD").await;
        assert_eq!(job.attempts, 1);
        assert!(job
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("error_code 400"));
        let job = desk.wait_for("m-erased", "DEAD").await;
        assert_eq!(job.last_error.as_deref(), Some("customer erased"));
        let job = desk.wait_for("m-nochannel", "DEAD").await;
        assert_eq!(job.last_error.as_deref(), Some("channel not configured"));
        let job = desk.wait_for("m-429", "DELIVERED").await;
        assert_eq!(job.attempts, 2, "a 429 is retried");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(fake.seen_for("m-400").len(), 1);
        assert_eq!(fake.seen_for("m-tg-400").len(), 1);
        assert_eq!(fake.seen_for("m-erased").len(), 0, "never sent");
        assert_eq!(fake.seen_for("m-nochannel").len(), 0, "never sent");
        assert_eq!(fake.seen_for("m-429").len(), 2);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_have_the_providers_shapes() {
    on_every_backend!("shapes", |desk, base, fake| {
        desk.whatsapp(ORG, "wa", &base).await;
        desk.telegram(ORG, "tg", &base).await;
        let wa_chat = desk
            .conversation(ORG, "c1", "WHATSAPP", "wa", "6281200001111")
            .await;
        let tg_chat = desk
            .conversation(ORG, "c2", "TELEGRAM", "tg", "987654321")
            .await;
        desk.queue(&wa_chat, "m-wa", 0, "Pilih divisi: 1. Billing", 0)
            .await;
        desk.queue(&tg_chat, "m-tg", 0, "Pilih divisi: 2. Teknis", 0)
            .await;
        let (_stop, _worker) = desk.worker(fast());
        let wa = desk.wait_for("m-wa", "DELIVERED").await;
        let tg = desk.wait_for("m-tg", "DELIVERED").await;

        let seen = fake.seen_for("m-wa");
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].path, format!("/wa/{WA_PHONE}/messages"));
        assert_eq!(
            seen[0].authorization.as_deref(),
            Some(format!("Bearer {WA_TOKEN}").as_str())
        );
        assert_eq!(
            seen[0].body,
            json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": "6281200001111",
                "type": "text",
                "text": { "preview_url": false, "body": "Pilih divisi: 1. Billing" },
            })
        );
        assert!(wa
            .provider_message_id
            .as_deref()
            .is_some_and(|id| id.starts_with("wamid.")));

        let seen = fake.seen_for("m-tg");
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].path, format!("/tg/bot{TG_TOKEN}/sendMessage"));
        assert_eq!(seen[0].authorization, None);
        assert_eq!(
            seen[0].body,
            json!({ "chat_id": 987654321, "text": "Pilih divisi: 2. Teknis" })
        );
        let tg_id: u64 = tg
            .provider_message_id
            .as_deref()
            .and_then(|id| id.parse().ok())
            .expect("telegram message id");
        assert!(tg_id >= 1);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_left_sending_is_sent_after_a_restart() {
    on_every_backend!("restart", |desk, base, fake| {
        desk.whatsapp(ORG, "wa", &base).await;
        let chat = desk
            .conversation(ORG, "c1", "WHATSAPP", "wa", "6281200001111")
            .await;
        desk.queue(&chat, "m1", 1, "Agen kami akan segera membalas", 0)
            .await;
        fake.script("m1", vec![Answer::Hang]);
        let (_, worker) = desk.worker(fast());
        // The request is in flight: the job is SENDING.
        let deadline = Instant::now() + PATIENCE;
        while fake.seen_for("m1").is_empty() {
            assert!(Instant::now() < deadline, "the worker never sent");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(desk.job(ORG, "m1").await.status, "SENDING");
        // The worker dies mid-send.
        worker.abort();
        let _ = worker.await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(desk.job(ORG, "m1").await.status, "SENDING");

        let (_stop, _worker) = desk.worker(fast());
        let job = desk.wait_for("m1", "DELIVERED").await;
        assert_eq!(
            job.attempts, 1,
            "the interrupted attempt was never recorded"
        );
        let seen = fake.seen_for("m1");
        assert_eq!(seen.len(), 2, "sent twice: at least once");
        assert_eq!(seen[0].body, seen[1].body);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_channel_is_rate_limited_on_its_own() {
    on_every_backend!("rate limit", |desk, base, fake| {
        desk.whatsapp(ORG, "wa", &base).await;
        desk.telegram(OTHER_ORG, "tg", &base).await;
        let busy = desk
            .conversation(ORG, "c1", "WHATSAPP", "wa", "6281200001111")
            .await;
        let quiet = desk
            .conversation(OTHER_ORG, "c2", "TELEGRAM", "tg", "555")
            .await;
        for n in 0..10 {
            desk.queue(&busy, &format!("bulk-{n:02}"), 2, "promo", 1000 - n)
                .await;
        }
        desk.queue(&quiet, "tg-1", 2, "hello", 0).await;
        let options = DeliveryOptions {
            per_channel_rate: 4,
            ..fast()
        };
        let (_stop, _worker) = desk.worker(options);
        for n in 0..10 {
            desk.wait_for(&format!("bulk-{n:02}"), "DELIVERED").await;
        }
        let tg = outbox::job(desk.db(), OTHER_ORG, "tg-1")
            .await
            .expect("read")
            .expect("job");
        assert_eq!(tg.status, "DELIVERED");

        let seen = fake.seen();
        let whatsapp: Vec<&Seen> = seen.iter().filter(|s| s.path.starts_with("/wa/")).collect();
        let telegram = seen
            .iter()
            .find(|s| s.path.starts_with("/tg/"))
            .expect("telegram request");
        assert_eq!(whatsapp.len(), 10);
        // A burst of a second's worth (4), then 4 per second: 6 more take >= 1.5 s.
        let span = whatsapp[9].at - whatsapp[0].at;
        assert!(span >= Duration::from_millis(1400), "{span:?}");
        assert!(
            whatsapp[4].at - whatsapp[0].at >= Duration::from_millis(200),
            "the fifth waited for a token"
        );
        // The other channel's bucket is its own: it did not wait behind the busy one.
        assert!(telegram.at < whatsapp[4].at);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_never_send_one_job() {
    on_every_backend!("two workers", |desk, base, fake| {
        desk.whatsapp(ORG, "wa", &base).await;
        desk.telegram(ORG, "tg", &base).await;
        let wa_chat = desk
            .conversation(ORG, "c1", "WHATSAPP", "wa", "6281200001111")
            .await;
        let tg_chat = desk
            .conversation(ORG, "c2", "TELEGRAM", "tg", "987654321")
            .await;
        // Both workers hold the lease here (one process); let both finish their start-up
        // requeue before there is anything to send.
        let (_stop_a, _a) = desk.worker(fast());
        let (_stop_b, _b) = desk.worker(fast());
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut ids = Vec::new();
        for n in 0..15 {
            for (chat, channel) in [(&wa_chat, "wa"), (&tg_chat, "tg")] {
                let id = format!("{channel}-{n:02}");
                desk.queue(chat, &id, n % 3, "hi", 0).await;
                ids.push(id);
            }
        }
        for id in &ids {
            desk.wait_for(id, "DELIVERED").await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        for id in &ids {
            assert_eq!(fake.seen_for(id).len(), 1, "{id} sent once");
            assert_eq!(desk.job(ORG, id).await.attempts, 1);
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_waits_for_its_message_without_spending_attempts() {
    on_every_backend!("read model wait", |desk, base, fake| {
        desk.whatsapp(ORG, "wa", &base).await;
        let chat = desk
            .conversation(ORG, "c1", "WHATSAPP", "wa", "6281200001111")
            .await;
        desk.queue(&chat, "m1", 1, "Halo", 0).await;
        // The conversations projection has not shown the message yet (behind, or being
        // rebuilt): the job must neither be sent nor spend its attempts.
        let sealed: String = on_backend!(desk.db(), |pool| {
            let sealed =
                sqlx::query_scalar("SELECT text FROM conversation_messages WHERE id = 'm1'")
                    .fetch_one(pool)
                    .await
                    .expect("text");
            sqlx::query("DELETE FROM conversation_messages WHERE id = 'm1'")
                .execute(pool)
                .await
                .expect("hide message");
            sealed
        });
        let (_stop, _worker) = desk.worker(fast());
        let deadline = Instant::now() + PATIENCE;
        let waiting = loop {
            let job = desk.job(ORG, "m1").await;
            if job.last_error.is_some() {
                break job;
            }
            assert!(
                Instant::now() < deadline,
                "the worker never looked at {job:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(waiting.status, "PENDING");
        assert_eq!(waiting.attempts, 0);
        assert_eq!(
            waiting.last_error.as_deref(),
            Some("waiting for the conversation read model")
        );
        assert!(fake.seen().is_empty());
        on_backend!(desk.db(), |pool| {
            sqlx::query(
                "INSERT INTO conversation_messages (id, conversation_id, organization_id,
                    direction, kind, author_id, text, created_at, position)
                 VALUES ('m1', 'c1', $1, 'OUTBOUND', 'REPLY', NULL, $2, $3, 0)",
            )
            .bind(ORG)
            .bind(&sealed)
            .bind(timestamp(Utc::now()))
            .execute(pool)
            .await
            .expect("message shows up");
        });
        let job = desk.wait_for("m1", "DELIVERED").await;
        assert_eq!(job.attempts, 1);
        assert_eq!(fake.seen_for("m1").len(), 1);
    });
}
