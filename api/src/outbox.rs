//! The durable delivery of outbound messages to WhatsApp and Telegram (issue 4).
//!
//! **Where the jobs come from.** The "outbox" projection queues one `outbox_jobs` row per
//! outbound message (`PENDING`, due at once, `idempotency_key` = the message id, priority
//! 0 system / 1 reply / 2 bulk). The row is the delivery record: a rebuild never empties it.
//!
//! **The worker** ([`run`]) works the queue in the replica that holds the [`ROLE`] lease. The
//! role is the outbox projection's own name, so the worker lives where the jobs are written
//! and can wait for that projection after a commit instead of for the next poll. It:
//!
//! 1. on taking the lease, puts back to `PENDING` every job left `SENDING` by a worker that
//!    died mid-send (and, every half minute, any job `SENDING` for minutes);
//! 2. finds the channels with due jobs (`PENDING`, `next_attempt_at` <= now) and, per channel,
//!    takes as many of them as the channel's token bucket allows ([`DeliveryOptions`]
//!    `per_channel_rate`), highest priority first, then oldest first;
//! 3. claims each job with a guarded `UPDATE ... SET status = 'SENDING' WHERE status =
//!    'PENDING'`: two workers never send the same job from the same state;
//! 4. opens the customer's handle and the text with the customer's key, reads the channel's
//!    secrets, and calls the provider ([`WHATSAPP_API`], [`TELEGRAM_API`], or the channel's
//!    `apiBaseUrl`), with the idempotency key in [`IDEMPOTENCY_HEADER`];
//! 5. records the result: `DELIVERED` with the provider's message id; or a retry (`PENDING`
//!    again after 2 s, 4 s, ... doubling from `base_backoff`); or `DEAD` after `max_attempts`
//!    attempts or at once for a permanent failure (customer erased, channel not configured
//!    or its secrets missing, a provider 4xx other than 429).
//!
//! The channels are served concurrently; within one channel messages go one at a time, in
//! order, so a customer receives a channel's messages in the order they were taken.
//!
//! **Guarantees.**
//! - *At least once*: a job is `DELIVERED` only after the provider accepted it. A worker that
//!   dies between the provider's answer and the `DELIVERED` write leaves the job `SENDING`,
//!   and it is sent again — always with the same idempotency key, so that a provider (or a
//!   proxy) that honours the key can drop the duplicate.
//! - *Priority*: of a channel's due jobs, system messages go before replies, replies before
//!   bulk messages; equal priorities go oldest first. A job waiting for a retry does not
//!   hold back the jobs behind it.
//! - *Dead letters*: a job that cannot be delivered stays as `DEAD` with a short
//!   `last_error` (never a secret, a handle or a message text); an admin lists them with
//!   [`list`] and sends one again with [`retry`].
//! - A job whose conversation or message the read model does not show yet (a projection
//!   catching up or being rebuilt) waits without spending an attempt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::conversation::Sealed;
use futures::StreamExt;
use projections::db::{parse_timestamp, timestamp};
use projections::personal_data;
use projections::{event_log, on_backend, Database, DbError};
use serde_json::{json, Value};
use sqlx::FromRow;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{ApiError, ApiResult};
use crate::helpdesk::Helpdesk;

/// The lease the worker runs under: the outbox projection's (see the module documentation).
pub const ROLE: &str = "outbox";

/// The states of a job, as stored and as filtered by [`list`].
pub const STATUSES: [&str; 4] = ["PENDING", "SENDING", "DELIVERED", "DEAD"];

/// The WhatsApp Cloud API, when a channel names no `apiBaseUrl`.
pub const WHATSAPP_API: &str = "https://graph.facebook.com/v21.0";

/// The Telegram Bot API, when a channel names no `apiBaseUrl`.
pub const TELEGRAM_API: &str = "https://api.telegram.org";

/// The header that carries a job's idempotency key on every attempt.
pub const IDEMPOTENCY_HEADER: &str = "X-Idempotency-Key";

/// How long one provider request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The most jobs one channel sends in one round: the due jobs are looked at again after
/// that, so that a new system message does not wait behind a long bulk run.
const PER_CHANNEL_PER_ROUND: usize = 10;

/// How many channels are served at once.
const CONCURRENT_CHANNELS: usize = 32;

/// How long a job waits for the read model to show its message before it is looked at
/// again (no attempt is spent on it).
const READ_MODEL_DELAY: Duration = Duration::from_secs(1);

/// A job whose message the read model still does not show this long after it was queued
/// is given up (the same bound the outbox projection puts on old messages).
const READ_MODEL_PATIENCE_HOURS: i64 = projections::conversations::OUTBOX_MAX_AGE_HOURS;

/// A provider's "retry after" hint is followed up to this long.
const MAX_RETRY_HINT: Duration = Duration::from_secs(15 * 60);

/// A job `SENDING` for longer than this has no live worker behind it: a request lasts at
/// most [`REQUEST_TIMEOUT`].
const STALE_SENDING: Duration = Duration::from_secs(120);

/// How often jobs stuck `SENDING` are looked for while the lease is held.
const STALE_SWEEP_EVERY: Duration = Duration::from_secs(30);

/// How long the worker waits, after a commit, for the outbox projection to queue its jobs.
const PROJECTION_PATIENCE: Duration = Duration::from_secs(1);

/// The most rows one [`list`] page returns.
const MAX_PAGE: i64 = 1000;

/// `last_error` is cut to this many characters.
const MAX_ERROR_CHARS: usize = 200;

/// How the worker paces itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryOptions {
    /// The wait after the first failed attempt; it doubles after each further one.
    pub base_backoff: Duration,
    /// Attempts before a job is dead.
    pub max_attempts: u32,
    /// Messages per second per channel (a token bucket holding one second's worth).
    pub per_channel_rate: u32,
    /// How often the queue is looked at when nothing wakes the worker earlier.
    pub poll_every: Duration,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        Self {
            base_backoff: Duration::from_secs(2),
            max_attempts: 3,
            per_channel_rate: 20,
            poll_every: Duration::from_millis(500),
        }
    }
}

impl DeliveryOptions {
    /// The defaults, with `HELPDESK_OUTBOX_BACKOFF_MS` (base backoff in milliseconds) and
    /// `HELPDESK_OUTBOX_RATE` (messages per second per channel, at least 1) when set.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`DeliveryOptions::from_env`] reading through `lookup`. A value that does not parse
    /// is reported and the default kept: the worker must run whatever the environment says.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let mut options = Self::default();
        let number = |name: &str| -> Option<u64> {
            let value = lookup(name).filter(|v| !v.trim().is_empty())?;
            match value.trim().parse::<u64>() {
                Ok(n) => Some(n),
                Err(_) => {
                    tracing::warn!(name, "not a whole number; the default is used");
                    None
                }
            }
        };
        if let Some(ms) = number("HELPDESK_OUTBOX_BACKOFF_MS") {
            options.base_backoff = Duration::from_millis(ms);
        }
        if let Some(rate) = number("HELPDESK_OUTBOX_RATE") {
            if rate == 0 {
                tracing::warn!("HELPDESK_OUTBOX_RATE must be at least 1; the default is used");
            } else {
                options.per_channel_rate = u32::try_from(rate).unwrap_or(u32::MAX);
            }
        }
        options
    }

    /// The wait after failed attempt number `attempt` (1-based): `base_backoff`,
    /// doubled for each attempt after the first.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(20);
        self.base_backoff.saturating_mul(1u32 << doublings)
    }
}

/// Runs the delivery worker with [`DeliveryOptions::from_env`] whenever this replica holds
/// the [`ROLE`] lease, until `shutdown`. A send in flight at shutdown is finished (at most
/// [`REQUEST_TIMEOUT`]).
pub async fn run(helpdesk: Arc<Helpdesk>, shutdown: CancellationToken) {
    run_with(helpdesk, DeliveryOptions::from_env(), shutdown).await
}

/// [`run`] with explicit options (tests shorten the backoff and the poll).
pub async fn run_with(
    helpdesk: Arc<Helpdesk>,
    options: DeliveryOptions,
    shutdown: CancellationToken,
) {
    let http = match reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        // A redirect would carry the access token to wherever the provider points.
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(http) => http,
        Err(error) => {
            tracing::error!(%error, "the outbox cannot build its HTTP client; nothing is sent");
            return;
        }
    };
    let mut lease = helpdesk.leases.watch(ROLE);
    let mut wake = helpdesk.log_signal().subscribe();
    let worker = Worker {
        limiter: Mutex::new(RateLimiter::new(options.per_channel_rate)),
        helpdesk,
        options,
        http,
    };
    loop {
        if !projections::lease::until_held(&mut lease, &shutdown).await {
            return;
        }
        tracing::info!("delivering outbound messages here");
        // Whoever held the lease before may have died mid-send: at least once, not at most.
        match requeue_sending(&worker.helpdesk.db, None).await {
            Ok(0) => {}
            Ok(jobs) => tracing::warn!(jobs, "jobs left SENDING are queued again"),
            Err(error) => {
                tracing::warn!(%error, "the outbox cannot requeue jobs left SENDING");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
        }
        let mut next_sweep = Instant::now() + STALE_SWEEP_EVERY;
        while *lease.borrow() && !shutdown.is_cancelled() {
            if Instant::now() >= next_sweep {
                let cutoff =
                    Utc::now() - chrono::Duration::from_std(STALE_SENDING).unwrap_or_default();
                match requeue_sending(&worker.helpdesk.db, Some(cutoff)).await {
                    Ok(0) => {}
                    Ok(jobs) => tracing::warn!(jobs, "jobs stuck SENDING are queued again"),
                    Err(error) => tracing::warn!(%error, "the outbox cannot requeue stuck jobs"),
                }
                next_sweep = Instant::now() + STALE_SWEEP_EVERY;
            }
            let pause = match worker.round(&lease, &shutdown).await {
                // More may be due at once: the rounds cap what one channel sends.
                Ok(round) if round.claimed > 0 => continue,
                Ok(round) => worker.pause(round.rate_wait).await,
                Err(error) => {
                    tracing::warn!(%error, "the outbox cannot read its queue");
                    Duration::from_secs(1)
                }
            };
            let woken = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = lease.changed() => false,
                Ok(()) = wake.changed() => true,
                _ = tokio::time::sleep(pause) => false,
            };
            if woken {
                worker.wait_for_outbox_projection().await;
            }
        }
        if shutdown.is_cancelled() {
            return;
        }
        tracing::info!("outbox lease lost");
    }
}

/// Puts `SENDING` jobs back to `PENDING`: all of them (`None`), or those not touched since
/// `older_than`. Returns how many.
async fn requeue_sending(db: &Database, older_than: Option<DateTime<Utc>>) -> Result<u64, DbError> {
    let now = timestamp(Utc::now());
    // Without a cutoff every SENDING row qualifies: `updated_at` is never after now.
    let cutoff = older_than.map(timestamp).unwrap_or_else(|| now.clone());
    Ok(on_backend!(db, |pool| sqlx::query(
        "UPDATE outbox_jobs SET status = 'PENDING', updated_at = $1
          WHERE status = 'SENDING' AND updated_at <= $2"
    )
    .bind(&now)
    .bind(&cutoff)
    .execute(pool)
    .await?
    .rows_affected()))
}

/// A due job, as the worker claims it.
#[derive(Debug, Clone, FromRow)]
struct DueJob {
    message_id: String,
    organization_id: String,
    channel_id: String,
    queued_at: String,
    idempotency_key: String,
    attempts: i64,
}

/// Everything a job needs to be sent, read after it is claimed (secrets are read only for
/// jobs about to go out). Every part may be missing.
#[derive(Debug, FromRow)]
struct JobDetails {
    customer_id: Option<String>,
    external_id: Option<String>,
    conversation_channel: Option<String>,
    text: Option<String>,
    channel_row: Option<String>,
    channel: Option<String>,
    api_base_url: Option<String>,
    phone_number_id: Option<String>,
    settings: Option<String>,
}

/// What one round did.
struct Round {
    /// Jobs claimed (sent, failed, deferred).
    claimed: usize,
    /// The soonest a rate-limited channel has a token again.
    rate_wait: Option<Duration>,
}

struct Worker {
    helpdesk: Arc<Helpdesk>,
    options: DeliveryOptions,
    http: reqwest::Client,
    // Taken and refunded between awaits only; never held across one.
    limiter: Mutex<RateLimiter>,
}

impl Worker {
    fn db(&self) -> &Database {
        &self.helpdesk.db
    }

    /// One pass: every channel with due jobs sends what its bucket allows.
    async fn round(
        &self,
        lease: &watch::Receiver<bool>,
        shutdown: &CancellationToken,
    ) -> Result<Round, DbError> {
        let now = timestamp(Utc::now());
        // Channel by channel, so that one channel's backlog never hides another's jobs.
        let channels: Vec<(String, i64)> = on_backend!(self.db(), |pool| sqlx::query_as(
            "SELECT channel_id, MIN(priority) AS top FROM outbox_jobs
              WHERE status = 'PENDING' AND next_attempt_at <= $1
              GROUP BY channel_id ORDER BY top, channel_id"
        )
        .bind(&now)
        .fetch_all(pool)
        .await?);
        let mut rate_wait: Option<Duration> = None;
        let mut allowed = Vec::new();
        {
            let mut limiter = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
            let at = Instant::now();
            for (channel_id, _) in channels {
                match limiter.take_up_to(&channel_id, PER_CHANNEL_PER_ROUND, at) {
                    Ok(tokens) => allowed.push((channel_id, tokens)),
                    Err(wait) => rate_wait = Some(rate_wait.map_or(wait, |w| w.min(wait))),
                }
            }
        }
        let results: Vec<Result<usize, DbError>> = futures::stream::iter(allowed)
            .map(|(channel_id, tokens)| {
                self.serve_channel(channel_id, tokens, &now, lease, shutdown)
            })
            .buffer_unordered(CONCURRENT_CHANNELS)
            .collect()
            .await;
        let mut claimed = 0;
        let mut first_error = None;
        for result in results {
            match result {
                Ok(n) => claimed += n,
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) if claimed == 0 => Err(error),
            Some(error) => {
                tracing::warn!(%error, "the outbox failed on one channel");
                Ok(Round { claimed, rate_wait })
            }
            None => Ok(Round { claimed, rate_wait }),
        }
    }

    /// Sends up to `tokens` due jobs of one channel, one at a time in priority order.
    /// Returns how many it claimed; unused tokens go back to the bucket.
    async fn serve_channel(
        &self,
        channel_id: String,
        tokens: usize,
        now: &str,
        lease: &watch::Receiver<bool>,
        shutdown: &CancellationToken,
    ) -> Result<usize, DbError> {
        let jobs: Result<Vec<DueJob>, DbError> = async {
            Ok(on_backend!(self.db(), |pool| sqlx::query_as(
                "SELECT message_id, organization_id, channel_id, queued_at, idempotency_key,
                        attempts
                   FROM outbox_jobs
                  WHERE status = 'PENDING' AND next_attempt_at <= $1 AND channel_id = $2
                  ORDER BY priority, queued_at, message_id LIMIT $3"
            )
            .bind(now)
            .bind(&channel_id)
            .bind(tokens as i64)
            .fetch_all(pool)
            .await?))
        }
        .await;
        let jobs = match jobs {
            Ok(jobs) => jobs,
            Err(error) => {
                self.refund(&channel_id, tokens);
                return Err(error);
            }
        };
        let mut used = 0;
        let mut claimed = 0;
        for job in jobs {
            // Stop between messages, never in the middle of one.
            if shutdown.is_cancelled() || !*lease.borrow() {
                break;
            }
            used += 1;
            if self.deliver(job).await? {
                claimed += 1;
            }
        }
        self.refund(&channel_id, tokens - used);
        Ok(claimed)
    }

    fn refund(&self, channel_id: &str, tokens: usize) {
        if tokens > 0 {
            let mut limiter = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
            limiter.refund(channel_id, tokens);
        }
    }

    /// Claims, sends and records one job. `false` when another worker had claimed it.
    async fn deliver(&self, job: DueJob) -> Result<bool, DbError> {
        let now = timestamp(Utc::now());
        let claimed = on_backend!(self.db(), |pool| sqlx::query(
            "UPDATE outbox_jobs SET status = 'SENDING', updated_at = $2
              WHERE message_id = $1 AND status = 'PENDING' AND next_attempt_at <= $2"
        )
        .bind(&job.message_id)
        .bind(&now)
        .execute(pool)
        .await?
        .rows_affected());
        if claimed != 1 {
            return Ok(false);
        }
        let prepared = match self.prepare(&job).await {
            Ok(prepared) => prepared,
            Err(error) => {
                // Give the job back; if even that fails, the stale sweep will.
                let _ = self.defer(&job, "storage error; will retry", false).await;
                return Err(error);
            }
        };
        let attempt = u32::try_from(job.attempts)
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        match prepared {
            Prepared::Wait(reason) => {
                let too_old = parse_timestamp(&job.queued_at)
                    .map(|queued| {
                        Utc::now() - queued > chrono::Duration::hours(READ_MODEL_PATIENCE_HOURS)
                    })
                    .unwrap_or(true);
                if too_old {
                    self.record_failure(&job, attempt, "none", &Failure::permanent(reason))
                        .await?;
                } else {
                    self.defer(&job, reason, true).await?;
                }
            }
            Prepared::Dead(reason) => {
                self.record_failure(&job, attempt, "none", &Failure::permanent(reason))
                    .await?;
            }
            Prepared::Send(request) => {
                let kind = request.kind();
                match request.send(&self.http, &job.idempotency_key).await {
                    Ok(delivered) => {
                        tracing::info!(
                            job = %job.message_id,
                            channel = %job.channel_id,
                            provider = kind,
                            status = delivered.status,
                            attempt,
                            "delivered"
                        );
                        self.record_delivery(&job, attempt, delivered.provider_id)
                            .await?;
                    }
                    Err(failure) => {
                        tracing::warn!(
                            job = %job.message_id,
                            channel = %job.channel_id,
                            provider = kind,
                            status = failure.status,
                            attempt,
                            error = %failure.error,
                            "delivery failed"
                        );
                        self.record_failure(&job, attempt, kind, &failure).await?;
                    }
                }
            }
        }
        Ok(true)
    }

    /// Reads and opens what the job needs, or says why it cannot be sent (now or ever).
    async fn prepare(&self, job: &DueJob) -> Result<Prepared, DbError> {
        let details: JobDetails = on_backend!(self.db(), |pool| sqlx::query_as(
            "SELECT c.customer_id, c.external_id, c.channel AS conversation_channel, m.text,
                    ch.id AS channel_row, ch.channel, ch.api_base_url, ch.phone_number_id,
                    s.settings
               FROM outbox_jobs o
               LEFT JOIN conversations c
                      ON c.id = o.conversation_id AND c.organization_id = o.organization_id
               LEFT JOIN conversation_messages m
                      ON m.id = o.message_id AND m.organization_id = o.organization_id
               LEFT JOIN channels ch
                      ON ch.id = o.channel_id AND ch.organization_id = o.organization_id
               LEFT JOIN channel_secrets s
                      ON s.channel_id = o.channel_id AND s.organization_id = o.organization_id
              WHERE o.message_id = $1"
        )
        .bind(&job.message_id)
        .fetch_one(pool)
        .await?);
        // The secrets are written before the channel's event and kept through rebuilds:
        // without them the channel was never configured.
        let Some(settings) = details.settings else {
            return Ok(Prepared::Dead("channel not configured"));
        };
        let (Some(customer_id), Some(external_id), Some(text)) =
            (details.customer_id, details.external_id, details.text)
        else {
            return Ok(Prepared::Wait("waiting for the conversation read model"));
        };
        if details.channel_row.is_none() {
            return Ok(Prepared::Wait("waiting for the channels read model"));
        }
        let keys = personal_data::keys(
            self.db(),
            &job.organization_id,
            std::slice::from_ref(&customer_id),
        )
        .await?;
        let Some(key) = keys.get(&customer_id) else {
            return Ok(Prepared::Dead("customer erased"));
        };
        let (Ok(to), Ok(text)) = (key.open(&Sealed(external_id)), key.open(&Sealed(text))) else {
            return Ok(Prepared::Dead(
                "message does not open with the customer's key",
            ));
        };
        let channel = details
            .channel
            .or(details.conversation_channel)
            .unwrap_or_default();
        let base = details
            .api_base_url
            .map(|url| url.trim().trim_end_matches('/').to_string())
            .filter(|url| !url.is_empty());
        let Some(settings) = Settings::parse(&settings) else {
            return Ok(Prepared::Dead("channel secrets unreadable"));
        };
        let request = match channel.as_str() {
            "WHATSAPP" => {
                let phone_number_id = settings
                    .phone_number_id
                    .or(details.phone_number_id)
                    .filter(|id| !id.trim().is_empty());
                let (Some(phone_number_id), Some(access_token)) =
                    (phone_number_id, settings.access_token)
                else {
                    return Ok(Prepared::Dead(
                        "channel secrets missing (phoneNumberId, accessToken)",
                    ));
                };
                Request::WhatsApp {
                    base: base.unwrap_or_else(|| WHATSAPP_API.to_string()),
                    phone_number_id,
                    access_token,
                    to,
                    text,
                }
            }
            "TELEGRAM" => {
                let Some(bot_token) = settings.bot_token else {
                    return Ok(Prepared::Dead("channel secrets missing (botToken)"));
                };
                Request::Telegram {
                    base: base.unwrap_or_else(|| TELEGRAM_API.to_string()),
                    bot_token,
                    chat_id: to,
                    text,
                }
            }
            _ => return Ok(Prepared::Dead("no delivery client for this channel")),
        };
        Ok(Prepared::Send(request))
    }

    async fn record_delivery(
        &self,
        job: &DueJob,
        attempt: u32,
        provider_id: Option<String>,
    ) -> Result<(), DbError> {
        let now = timestamp(Utc::now());
        // Any state but DELIVERED: the provider has the message, whatever another worker
        // that took the job over meanwhile wrote.
        on_backend!(self.db(), |pool| {
            sqlx::query(
                "UPDATE outbox_jobs SET status = 'DELIVERED', attempts = $2, delivered_at = $3,
                        provider_message_id = $4, last_error = NULL, updated_at = $3
                  WHERE message_id = $1 AND status <> 'DELIVERED'",
            )
            .bind(&job.message_id)
            .bind(i64::from(attempt))
            .bind(&now)
            .bind(provider_id)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    async fn record_failure(
        &self,
        job: &DueJob,
        attempt: u32,
        kind: &str,
        failure: &Failure,
    ) -> Result<(), DbError> {
        let now = Utc::now();
        let last_error: String = failure.error.chars().take(MAX_ERROR_CHARS).collect();
        let (status, next_attempt_at) = if failure.retryable && attempt < self.options.max_attempts
        {
            let wait = self
                .options
                .backoff(attempt)
                .max(failure.retry_after.unwrap_or_default().min(MAX_RETRY_HINT));
            (
                "PENDING",
                now + chrono::Duration::from_std(wait).unwrap_or_default(),
            )
        } else {
            ("DEAD", now)
        };
        if status == "DEAD" {
            tracing::warn!(
                job = %job.message_id,
                channel = %job.channel_id,
                provider = kind,
                attempt,
                "dead letter"
            );
        }
        on_backend!(self.db(), |pool| {
            sqlx::query(
                "UPDATE outbox_jobs SET status = $2, attempts = $3, next_attempt_at = $4,
                        last_error = $5, updated_at = $6
                  WHERE message_id = $1 AND status = 'SENDING'",
            )
            .bind(&job.message_id)
            .bind(status)
            .bind(i64::from(attempt))
            .bind(timestamp(next_attempt_at))
            .bind(&last_error)
            .bind(timestamp(now))
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Back to `PENDING` shortly, without spending an attempt.
    async fn defer(&self, job: &DueJob, reason: &str, note: bool) -> Result<(), DbError> {
        let now = Utc::now();
        let next = now + chrono::Duration::from_std(READ_MODEL_DELAY).unwrap_or_default();
        on_backend!(self.db(), |pool| {
            sqlx::query(
                "UPDATE outbox_jobs SET status = 'PENDING', next_attempt_at = $2,
                        last_error = CASE WHEN $3 THEN $4 ELSE last_error END, updated_at = $5
                  WHERE message_id = $1 AND status = 'SENDING'",
            )
            .bind(&job.message_id)
            .bind(timestamp(next))
            .bind(note)
            .bind(reason)
            .bind(timestamp(now))
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// How long to sleep when a round found nothing to send: until the next job is due, a
    /// rate-limited channel has a token, or the poll comes round.
    async fn pause(&self, rate_wait: Option<Duration>) -> Duration {
        let mut pause = self.options.poll_every;
        if let Some(wait) = rate_wait {
            pause = pause.min(wait);
        }
        let next: Result<Option<String>, DbError> = async {
            Ok(on_backend!(self.db(), |pool| sqlx::query_scalar(
                "SELECT MIN(next_attempt_at) FROM outbox_jobs WHERE status = 'PENDING'"
            )
            .fetch_one(pool)
            .await?))
        }
        .await;
        if let Ok(Some(next)) = next {
            if let Ok(next) = parse_timestamp(&next) {
                match (next - Utc::now()).to_std() {
                    Ok(until) => pause = pause.min(until),
                    // Due already, yet not taken: a job that became due since the round
                    // began (a rate-limited channel's jobs are covered by `rate_wait`).
                    Err(_) if rate_wait.is_none() => pause = pause.min(Duration::from_millis(10)),
                    Err(_) => {}
                }
            }
        }
        pause
    }

    /// After a commit: give the outbox projection a moment to queue the jobs it brings.
    async fn wait_for_outbox_projection(&self) {
        if let Ok(head) = event_log::log_head(self.db()).await {
            let _ = self
                .helpdesk
                .progress
                .wait_for("Conversation", head, PROJECTION_PATIENCE)
                .await;
        }
    }
}

/// A channel's stored settings (the JSON object given to `configureChannel`); only what
/// delivery needs is read. Ids given as JSON numbers are taken as their digits.
struct Settings {
    phone_number_id: Option<String>,
    access_token: Option<String>,
    bot_token: Option<String>,
}

impl Settings {
    fn parse(stored: &str) -> Option<Self> {
        let Value::Object(object) = serde_json::from_str::<Value>(stored).ok()? else {
            return None;
        };
        let text = |name: &str| -> Option<String> {
            match object.get(name)? {
                Value::String(text) => Some(text.trim().to_string()),
                Value::Number(number) => Some(number.to_string()),
                _ => None,
            }
            .filter(|text| !text.is_empty())
        };
        Some(Self {
            phone_number_id: text("phoneNumberId"),
            access_token: text("accessToken"),
            bot_token: text("botToken"),
        })
    }
}

/// What a claimed job leads to.
enum Prepared {
    /// A request for the provider.
    Send(Request),
    /// Never deliverable: dead at once.
    Dead(&'static str),
    /// Not yet readable: looked at again soon, no attempt spent.
    Wait(&'static str),
}

/// A message ready for its provider. Holds secrets and the text: never logged.
enum Request {
    WhatsApp {
        base: String,
        phone_number_id: String,
        access_token: String,
        to: String,
        text: String,
    },
    Telegram {
        base: String,
        bot_token: String,
        chat_id: String,
        text: String,
    },
}

/// The provider accepted the message.
struct Delivered {
    status: u16,
    provider_id: Option<String>,
}

/// An attempt that failed.
#[derive(Debug)]
struct Failure {
    /// For `last_error`: no secret, handle or text.
    error: String,
    retryable: bool,
    /// The provider's own "try again in".
    retry_after: Option<Duration>,
    status: Option<u16>,
}

impl Failure {
    fn permanent(error: &str) -> Self {
        Self {
            error: error.to_string(),
            retryable: false,
            retry_after: None,
            status: None,
        }
    }

    /// A request that got no answer: always worth another attempt. The reqwest error is
    /// not shown: its text would carry the URL, and a Telegram URL carries the bot token.
    fn transport(error: &reqwest::Error) -> Self {
        let what = if error.is_timeout() {
            "request timed out"
        } else if error.is_connect() {
            "connection failed"
        } else {
            "request failed"
        };
        Self {
            error: what.to_string(),
            retryable: true,
            retry_after: None,
            status: None,
        }
    }
}

/// 429 and 5xx are the provider's "not now"; any other refusal will not change.
fn retryable_status(code: u64) -> bool {
    code == 429 || code >= 500
}

impl Request {
    fn kind(&self) -> &'static str {
        match self {
            Request::WhatsApp { .. } => "whatsapp",
            Request::Telegram { .. } => "telegram",
        }
    }

    async fn send(
        self,
        http: &reqwest::Client,
        idempotency_key: &str,
    ) -> Result<Delivered, Failure> {
        match self {
            Request::WhatsApp {
                base,
                phone_number_id,
                access_token,
                to,
                text,
            } => {
                let body = json!({
                    "messaging_product": "whatsapp",
                    "recipient_type": "individual",
                    "to": to,
                    "type": "text",
                    "text": { "preview_url": false, "body": text },
                });
                let response = http
                    .post(format!("{base}/{phone_number_id}/messages"))
                    .bearer_auth(access_token)
                    .header(IDEMPOTENCY_HEADER, idempotency_key)
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| Failure::transport(&e))?;
                let (status, retry_after, answer) = read_answer(response).await;
                if (200..300).contains(&status) {
                    let provider_id = answer
                        .pointer("/messages/0/id")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    return Ok(Delivered {
                        status,
                        provider_id,
                    });
                }
                let code = answer.pointer("/error/code").and_then(Value::as_i64);
                Err(Failure {
                    error: match code {
                        Some(code) => format!("whatsapp answered HTTP {status} (error {code})"),
                        None => format!("whatsapp answered HTTP {status}"),
                    },
                    retryable: retryable_status(u64::from(status)),
                    retry_after,
                    status: Some(status),
                })
            }
            Request::Telegram {
                base,
                bot_token,
                chat_id,
                text,
            } => {
                // Telegram takes a numeric chat id as a number, a channel's @name as text.
                let chat_id = match chat_id.trim().parse::<i64>() {
                    Ok(number) => json!(number),
                    Err(_) => json!(chat_id),
                };
                let response = http
                    .post(format!("{base}/bot{bot_token}/sendMessage"))
                    .header(IDEMPOTENCY_HEADER, idempotency_key)
                    .json(&json!({ "chat_id": chat_id, "text": text }))
                    .send()
                    .await
                    .map_err(|e| Failure::transport(&e))?;
                let (status, retry_after, answer) = read_answer(response).await;
                let ok = answer.get("ok").and_then(Value::as_bool);
                if (200..300).contains(&status) && ok != Some(false) {
                    let provider_id = answer.pointer("/result/message_id").and_then(|id| {
                        id.as_i64()
                            .map(|n| n.to_string())
                            .or_else(|| id.as_str().map(str::to_string))
                    });
                    return Ok(Delivered {
                        status,
                        provider_id,
                    });
                }
                let code = answer
                    .get("error_code")
                    .and_then(Value::as_u64)
                    .unwrap_or(u64::from(status));
                let hint = answer
                    .pointer("/parameters/retry_after")
                    .and_then(Value::as_u64)
                    .map(Duration::from_secs);
                Err(Failure {
                    error: format!("telegram answered HTTP {status} (error_code {code})"),
                    retryable: retryable_status(code) || retryable_status(u64::from(status)),
                    retry_after: hint.or(retry_after),
                    status: Some(status),
                })
            }
        }
    }
}

/// The status, a `Retry-After` in seconds, and the JSON body (`null` when there is none or
/// it is not JSON: the status alone decides then).
async fn read_answer(response: reqwest::Response) -> (u16, Option<Duration>, Value) {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = response.bytes().await.unwrap_or_default();
    let answer = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, retry_after, answer)
}

/// Token buckets per channel, in this process's memory: a lease holder that changes starts
/// with full buckets, which at worst allows one extra second's burst.
#[derive(Debug)]
struct RateLimiter {
    per_second: f64,
    buckets: HashMap<String, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    fn new(per_second: u32) -> Self {
        Self {
            per_second: f64::from(per_second.max(1)),
            buckets: HashMap::new(),
        }
    }

    fn bucket(&mut self, channel: &str, now: Instant) -> &mut Bucket {
        let capacity = self.per_second;
        let bucket = self.buckets.entry(channel.to_string()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * capacity).min(capacity);
        bucket.at = now;
        bucket
    }

    /// Takes up to `most` whole tokens; with none available, says when one will be.
    fn take_up_to(&mut self, channel: &str, most: usize, now: Instant) -> Result<usize, Duration> {
        let per_second = self.per_second;
        let bucket = self.bucket(channel, now);
        let whole = bucket.tokens.floor() as usize;
        if whole == 0 {
            let missing = 1.0 - bucket.tokens;
            return Err(Duration::from_secs_f64(missing / per_second));
        }
        let taken = whole.min(most);
        bucket.tokens -= taken as f64;
        Ok(taken)
    }

    fn refund(&mut self, channel: &str, tokens: usize) {
        let capacity = self.per_second;
        if let Some(bucket) = self.buckets.get_mut(channel) {
            bucket.tokens = (bucket.tokens + tokens as f64).min(capacity);
        }
    }
}

/// A job as the admin's `outbox` query shows it.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct OutboxJobRecord {
    /// The outbound message (also the job's id).
    pub message_id: String,
    /// Its organization.
    pub organization_id: String,
    /// Its conversation.
    pub conversation_id: String,
    /// The configured channel it goes out on.
    pub channel_id: String,
    /// 0 system, 1 reply, 2 bulk: lower goes first.
    pub priority: i64,
    /// When the message was queued.
    pub queued_at: String,
    /// Sent with every attempt, so the provider can recognise a repeat.
    pub idempotency_key: String,
    /// PENDING, SENDING, DELIVERED or DEAD.
    pub status: String,
    /// Attempts made so far.
    pub attempts: i64,
    /// When a PENDING job is due.
    pub next_attempt_at: String,
    /// Why the last attempt failed (short; no secrets, no text).
    pub last_error: Option<String>,
    /// The provider's id of the delivered message.
    pub provider_message_id: Option<String>,
    /// When the provider accepted it.
    pub delivered_at: Option<String>,
    /// The job's last change.
    pub updated_at: String,
}

impl OutboxJobRecord {
    /// The [`list`] cursor of this row: `(queued_at, message_id)`.
    pub fn cursor(&self) -> (String, String) {
        (self.queued_at.clone(), self.message_id.clone())
    }
}

const SELECT_JOB: &str = "SELECT message_id, organization_id, conversation_id, channel_id,
        priority, queued_at, idempotency_key, status, attempts, next_attempt_at, last_error,
        provider_message_id, delivered_at, updated_at
   FROM outbox_jobs";

/// One job of the organization.
pub async fn job(
    db: &Database,
    organization: &str,
    message_id: &str,
) -> Result<Option<OutboxJobRecord>, DbError> {
    let sql = format!("{SELECT_JOB} WHERE message_id = $1 AND organization_id = $2");
    Ok(on_backend!(db, |pool| sqlx::query_as(&sql)
        .bind(message_id)
        .bind(organization)
        .fetch_optional(pool)
        .await?))
}

/// A page of the organization's jobs, optionally of one status, in queue order
/// (`queued_at`, then message id), after the cursor `(queued_at, message_id)` of
/// [`OutboxJobRecord::cursor`]. Returns the rows, whether more follow, and how many match.
/// An unknown status or a negative `first` is `BAD_USER_INPUT`; `first` is capped at 1000.
pub async fn list(
    db: &Database,
    organization: &str,
    status: Option<&str>,
    first: i64,
    after: Option<(String, String)>,
) -> ApiResult<(Vec<OutboxJobRecord>, bool, i64)> {
    if let Some(status) = status {
        if !STATUSES.contains(&status) {
            return Err(ApiError::bad_input(format!(
                "status must be one of {}",
                STATUSES.join(", ")
            )));
        }
    }
    if first < 0 {
        return Err(ApiError::bad_input("first must not be negative"));
    }
    let first = first.min(MAX_PAGE);
    let mut matching = "organization_id = $1".to_string();
    let mut binds: Vec<String> = vec![organization.to_string()];
    if let Some(status) = status {
        binds.push(status.to_string());
        matching.push_str(&format!(" AND status = ${}", binds.len()));
    }
    let count_sql = format!("SELECT COUNT(*) FROM outbox_jobs WHERE {matching}");
    let total: i64 = on_backend!(db, |pool| {
        let mut query = sqlx::query_scalar(&count_sql);
        for bind in &binds {
            query = query.bind(bind);
        }
        query.fetch_one(pool).await.map_err(DbError::from)?
    });
    let mut page = matching;
    if let Some((queued_at, message_id)) = after {
        binds.push(queued_at);
        binds.push(message_id);
        let (a, b) = (binds.len() - 1, binds.len());
        page.push_str(&format!(
            " AND (queued_at > ${a} OR (queued_at = ${a} AND message_id > ${b}))"
        ));
    }
    let sql = format!(
        "{SELECT_JOB} WHERE {page} ORDER BY queued_at, message_id LIMIT {}",
        first + 1
    );
    let mut rows: Vec<OutboxJobRecord> = on_backend!(db, |pool| {
        let mut query = sqlx::query_as(&sql);
        for bind in &binds {
            query = query.bind(bind);
        }
        query.fetch_all(pool).await.map_err(DbError::from)?
    });
    let has_next = rows.len() as i64 > first;
    rows.truncate(first as usize);
    Ok((rows, has_next, total))
}

/// Sends a dead job again: `PENDING`, no attempts spent, due now (its `last_error` stays
/// until the next attempt). A job of another organization is `NOT_FOUND`; a job that is not
/// `DEAD` is `INVALID_TRANSITION` (it is queued, being sent, or delivered already).
pub async fn retry(
    db: &Database,
    organization: &str,
    message_id: &str,
) -> ApiResult<OutboxJobRecord> {
    let now = timestamp(Utc::now());
    let updated = on_backend!(db, |pool| sqlx::query(
        "UPDATE outbox_jobs SET status = 'PENDING', attempts = 0, next_attempt_at = $3,
                updated_at = $3
          WHERE message_id = $1 AND organization_id = $2 AND status = 'DEAD'"
    )
    .bind(message_id)
    .bind(organization)
    .bind(&now)
    .execute(pool)
    .await
    .map_err(DbError::from)?
    .rows_affected());
    let Some(record) = job(db, organization, message_id).await? else {
        return Err(ApiError::NotFound("outbox job not found".into()));
    };
    if updated == 0 {
        return Err(ApiError::InvalidTransition(format!(
            "only DEAD jobs can be retried; this one is {}",
            record.status
        )));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base() {
        let options = DeliveryOptions::default();
        assert_eq!(options.backoff(1), Duration::from_secs(2));
        assert_eq!(options.backoff(2), Duration::from_secs(4));
        assert_eq!(options.backoff(3), Duration::from_secs(8));
        assert_eq!(options.backoff(200), Duration::from_secs(2 << 20));
    }

    #[test]
    fn options_read_the_environment_and_keep_defaults_for_bad_values() {
        let options = DeliveryOptions::from_lookup(|name| match name {
            "HELPDESK_OUTBOX_BACKOFF_MS" => Some("50".into()),
            "HELPDESK_OUTBOX_RATE" => Some("7".into()),
            _ => None,
        });
        assert_eq!(options.base_backoff, Duration::from_millis(50));
        assert_eq!(options.per_channel_rate, 7);
        assert_eq!(options.max_attempts, 3);
        let bad = DeliveryOptions::from_lookup(|name| match name {
            "HELPDESK_OUTBOX_BACKOFF_MS" => Some("soon".into()),
            "HELPDESK_OUTBOX_RATE" => Some("0".into()),
            _ => None,
        });
        assert_eq!(bad, DeliveryOptions::default());
    }

    #[test]
    fn buckets_allow_a_second_of_burst_then_the_rate() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(4);
        assert_eq!(limiter.take_up_to("a", 10, start), Ok(4));
        let wait = limiter.take_up_to("a", 10, start).expect_err("empty");
        assert!(wait > Duration::from_millis(200) && wait <= Duration::from_millis(250));
        // Another channel has its own bucket.
        assert_eq!(limiter.take_up_to("b", 2, start), Ok(2));
        let later = start + Duration::from_millis(500);
        assert_eq!(limiter.take_up_to("a", 10, later), Ok(2));
        limiter.refund("a", 1);
        assert_eq!(limiter.take_up_to("a", 10, later), Ok(1));
        // Refunds never overfill.
        limiter.refund("b", 100);
        assert_eq!(limiter.take_up_to("b", 100, later), Ok(4));
    }

    #[test]
    fn only_429_and_5xx_are_retried() {
        assert!(retryable_status(429));
        assert!(retryable_status(500));
        assert!(retryable_status(503));
        assert!(!retryable_status(400));
        assert!(!retryable_status(401));
        assert!(!retryable_status(404));
    }
}
