//! The projection runner (brief rule 6).
//!
//! Each projection owns some tables and a row in `projection_checkpoints`. The runner reads
//! the log in global order after the checkpoint, and in **one transaction** moves the
//! checkpoint forward (guarded: only if it still holds the value this runner read) and
//! applies the batch. So an event is never skipped, never applied twice, and a crash at any
//! point leaves rows and checkpoint in step. Two runners of one projection (two replicas)
//! cannot both apply a batch: the second one's guarded update matches no row and it rolls
//! back. A rebuild is the same code from [`Checkpoint::START`].
//!
//! Events of aggregate types a projection does not consume are passed over without a
//! transaction: the runner remembers how far it has *seen* and stores that only after many
//! such events (or at shutdown); after a crash it simply passes over them again.

use async_trait::async_trait;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::db::{Backend, Database, DbError, Tx};
use crate::event_log::{self, Checkpoint, StoredEvent};
use crate::lease::Leases;
use crate::on_backend;
use crate::telemetry::{label, CounterFamily, HistogramFamily};

/// A read model built from the log.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Its name in `projection_checkpoints` and on the command line.
    fn name(&self) -> &'static str;
    /// The aggregate types whose events it applies. Other events only move its checkpoint
    /// (in memory, stored lazily), and commands on other aggregates never wait for it.
    fn aggregate_types(&self) -> &'static [&'static str];
    /// Whether it applies events of `aggregate_type`: those of [`Projection::aggregate_types`]
    /// unless it says otherwise (the audit chain takes every event, yet no command waits
    /// for it).
    fn consumes(&self, aggregate_type: &str) -> bool {
        self.consumes_every_event() || self.aggregate_types().contains(&aggregate_type)
    }
    /// Whether it applies every event of the log, whatever its aggregate type (the audit
    /// chain); otherwise the runner fetches only the payloads of its types.
    fn consumes_every_event(&self) -> bool {
        false
    }
    /// The tables it owns; a rebuild empties them.
    fn tables(&self) -> &'static [&'static str];
    /// Applies one event inside the runner's transaction. Must be deterministic: time comes
    /// from the event's metadata, never from the clock.
    async fn apply(&self, tx: &mut Tx, event: &StoredEvent) -> Result<(), DbError>;
    /// Applies `events` (all of aggregate types it consumes, in log order) inside the
    /// runner's transaction, with the same outcome as applying them one by one (which is
    /// what it does unless the projection folds a batch in memory and writes each touched
    /// row once; see [`crate::bulk`]).
    async fn apply_batch(&self, tx: &mut Tx, events: &[&StoredEvent]) -> Result<(), DbError> {
        for event in events {
            self.apply(tx, event).await?;
        }
        Ok(())
    }
}

/// How many events a runner takes per transaction when it applies every aggregate type.
pub const BATCH_SIZE: i64 = 500;

/// How many events of the log a runner takes at once when it applies only some aggregate
/// types: those it passes over are never fetched, so the stretch can be longer.
const PASS_OVER_STRETCH: i64 = 2_000;

/// How much of the log one batch takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stretch {
    /// A live runner's: short transactions, so new events show soon and a batch holds its
    /// rows' locks briefly.
    Live,
    /// A catch-up's (a rebuild, a runner far behind in `catch_up`): ten times longer, so a
    /// projection that folds its batch writes each row once for many of its events and
    /// round trips are spread over more of them.
    CatchUp,
}

impl Stretch {
    fn events(self, passes_over: bool) -> i64 {
        let live = if passes_over {
            PASS_OVER_STRETCH
        } else {
            BATCH_SIZE
        };
        match self {
            Stretch::Live => live,
            Stretch::CatchUp => live * 10,
        }
    }
}

/// Rings whenever events are committed, so idle runners wake at once instead of polling;
/// and tells where projections run by other replicas stand.
#[derive(Debug, Clone)]
pub struct LogSignal {
    sender: Arc<watch::Sender<u64>>,
    checkpoints: broadcast::Sender<(String, Checkpoint)>,
}

impl Default for LogSignal {
    fn default() -> Self {
        Self {
            sender: Arc::new(watch::channel(0).0),
            checkpoints: broadcast::channel(1024).0,
        }
    }
}

impl LogSignal {
    /// Checkpoint moves announced by any replica (PostgreSQL only).
    pub fn checkpoints(&self) -> broadcast::Receiver<(String, Checkpoint)> {
        self.checkpoints.subscribe()
    }

    /// Says that new events were committed.
    pub fn ring(&self) {
        self.sender.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees every ring after this call.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.sender.subscribe()
    }

    /// On PostgreSQL, rings on every `helpdesk_events` notification (sent by a trigger when
    /// any replica commits events) and passes on every `helpdesk_checkpoints` notification
    /// (a projection's checkpoint moved). Reconnects on failure; polling covers the gaps.
    /// Returns the listening task (none on SQLite), to be awaited before the pool is closed.
    pub fn listen_to_postgres(
        &self,
        db: &Database,
        shutdown: CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let Backend::Postgres(pool) = db else {
            return None;
        };
        let pool = pool.clone();
        let signal = self.clone();
        Some(tokio::spawn(async move {
            loop {
                let listened = async {
                    let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
                    listener
                        .listen_all(["helpdesk_events", "helpdesk_checkpoints"])
                        .await?;
                    loop {
                        let notification = listener.recv().await?;
                        if notification.channel() == "helpdesk_checkpoints" {
                            if let Some(moved) = parse_checkpoint_notice(notification.payload()) {
                                let _ = signal.checkpoints.send(moved);
                            }
                        } else {
                            signal.ring();
                        }
                    }
                    #[allow(unreachable_code)]
                    Ok::<(), sqlx::Error>(())
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    result = listened => {
                        if let Err(error) = result {
                            tracing::warn!(%error, "event notification listener failed; reconnecting");
                        }
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }))
    }
}

/// Reads "name tx_id position".
fn parse_checkpoint_notice(payload: &str) -> Option<(String, Checkpoint)> {
    let mut parts = payload.split(' ');
    let name = parts.next()?.to_string();
    let tx_id = parts.next()?.parse().ok()?;
    let position = parts.next()?.parse().ok()?;
    Some((name, Checkpoint { tx_id, position }))
}

/// Figures the runners report, exported at `/metrics`.
#[derive(Debug, Default)]
pub struct ProjectionTelemetry {
    /// Seconds from an event's `occurred_at` to the commit of its projection row.
    pub lag: HistogramFamily,
    /// Events applied, per projection.
    pub applied: CounterFamily,
    /// Failed batches, per projection.
    pub failures: CounterFamily,
}

/// Where every projection of this process stands; commands wait on it for read-your-writes.
#[derive(Debug, Clone, Default)]
pub struct ProjectionProgress {
    receivers: BTreeMap<&'static str, (&'static [&'static str], watch::Receiver<Checkpoint>)>,
}

/// A projection did not reach the wanted place in time.
#[derive(Debug, thiserror::Error)]
#[error("projection '{projection}' has not reached the change yet")]
pub struct Lagging {
    /// The first projection found behind.
    pub projection: &'static str,
}

impl ProjectionProgress {
    /// The checkpoint of each projection, by name.
    pub fn checkpoints(&self) -> BTreeMap<&'static str, Checkpoint> {
        self.receivers
            .iter()
            .map(|(name, (_, rx))| (*name, *rx.borrow()))
            .collect()
    }

    /// Follows the checkpoint of projection `name` (as this process sees it, whichever
    /// replica runs the projector).
    pub fn watch(&self, name: &str) -> Option<watch::Receiver<Checkpoint>> {
        self.receivers.get(name).map(|(_, rx)| rx.clone())
    }

    /// Waits until every projection has passed `target`, at most `timeout`.
    pub async fn wait_for_all(&self, target: Checkpoint, timeout: Duration) -> Result<(), Lagging> {
        self.wait_until(target, timeout, |_| true).await
    }

    /// Waits until every projection that consumes `aggregate_type` has passed `target`, at
    /// most `timeout`.
    pub async fn wait_for(
        &self,
        aggregate_type: &str,
        target: Checkpoint,
        timeout: Duration,
    ) -> Result<(), Lagging> {
        self.wait_until(target, timeout, |types| types.contains(&aggregate_type))
            .await
    }

    async fn wait_until(
        &self,
        target: Checkpoint,
        timeout: Duration,
        concerned: impl Fn(&[&str]) -> bool,
    ) -> Result<(), Lagging> {
        let deadline = tokio::time::Instant::now() + timeout;
        for (name, (types, receiver)) in &self.receivers {
            if !concerned(types) {
                continue;
            }
            let mut receiver = receiver.clone();
            let reached = tokio::time::timeout_at(deadline, async {
                receiver.wait_for(|cp| *cp >= target).await.is_ok()
            })
            .await;
            if reached != Ok(true) {
                return Err(Lagging { projection: name });
            }
        }
        Ok(())
    }
}

/// Test and operations hooks.
#[derive(Debug, Clone, Default)]
pub struct RunnerOptions {
    /// Stop forever right before committing a batch of this projection, after printing
    /// `FAILPOINT projection-before-commit:<name>` on stdout — lets a test kill the process
    /// between an event's commit and its projection's.
    pub pause_before_commit: Option<String>,
}

/// The projection runners of one process.
pub struct ProjectionRunners {
    db: Database,
    projections: Vec<Arc<dyn Projection>>,
    signal: LogSignal,
    telemetry: Arc<ProjectionTelemetry>,
    options: RunnerOptions,
}

impl ProjectionRunners {
    /// Prepares runners for `projections` over `db`.
    pub fn new(
        db: Database,
        projections: Vec<Arc<dyn Projection>>,
        signal: LogSignal,
        telemetry: Arc<ProjectionTelemetry>,
        options: RunnerOptions,
    ) -> Self {
        Self {
            db,
            projections,
            signal,
            telemetry,
            options,
        }
    }

    /// Starts one task per projection; they stop when `shutdown` is cancelled. A task applies
    /// events while this process holds its projection's lease and otherwise follows the
    /// checkpoint that the holder moves. Returns where each stands, for read-your-writes
    /// waits.
    pub async fn start(
        self,
        leases: &Leases,
        shutdown: CancellationToken,
    ) -> Result<(ProjectionProgress, Vec<tokio::task::JoinHandle<()>>), DbError> {
        let mut progress = ProjectionProgress::default();
        let mut tasks = Vec::new();
        for projection in self.projections {
            let start = load_checkpoint(&self.db, projection.name()).await?;
            let (sender, receiver) = watch::channel(start);
            progress
                .receivers
                .insert(projection.name(), (projection.aggregate_types(), receiver));
            let runner = Runner {
                db: self.db.clone(),
                projection,
                progress: sender,
                telemetry: self.telemetry.clone(),
                options: self.options.clone(),
            };
            let wake = self.signal.subscribe();
            let lease = leases.watch(runner.projection.name());
            let followed = self.signal.checkpoints();
            tasks.push(tokio::spawn(runner.lead_or_follow(
                lease,
                followed,
                wake,
                shutdown.clone(),
            )));
        }
        Ok((progress, tasks))
    }
}

struct Runner {
    db: Database,
    projection: Arc<dyn Projection>,
    progress: watch::Sender<Checkpoint>,
    telemetry: Arc<ProjectionTelemetry>,
    options: RunnerOptions,
}

/// How long an idle runner sleeps when no signal comes (other replicas' events, missed
/// notifications, the PostgreSQL fence held by a transaction that wrote no events).
const IDLE_POLL: Duration = Duration::from_millis(250);

/// How often a runner that follows another replica reads the stored checkpoint, in case a
/// notification was missed.
const FOLLOWER_POLL: Duration = Duration::from_secs(1);

/// How long after a ring a runner keeps looking for events hidden behind the fence.
const FENCE_PATIENCE: Duration = Duration::from_millis(500);

impl Runner {
    /// Applies events while the lease is held; otherwise follows the holder's checkpoint.
    async fn lead_or_follow(
        self,
        mut lease: watch::Receiver<bool>,
        mut followed: broadcast::Receiver<(String, Checkpoint)>,
        mut wake: watch::Receiver<u64>,
        shutdown: CancellationToken,
    ) {
        let name = self.projection.name();
        loop {
            while !*lease.borrow_and_update() {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = lease.changed() => {}
                    notice = followed.recv() => match notice {
                        Ok((projection, checkpoint)) if projection == name => {
                            self.progress.send_replace(checkpoint);
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => self.reload().await,
                        Err(broadcast::error::RecvError::Closed) => {
                            tokio::select! {
                                _ = shutdown.cancelled() => return,
                                _ = lease.changed() => {}
                            }
                        }
                    },
                    // Notifications can be missed while the listener reconnects.
                    _ = tokio::time::sleep(FOLLOWER_POLL) => self.reload().await,
                }
            }
            tracing::info!(projection = name, "running the projector here");
            // The previous holder may have moved the checkpoint: start from what is stored.
            self.reload().await;
            self.run(&mut lease, &mut wake, &shutdown).await;
            if shutdown.is_cancelled() {
                return;
            }
            tracing::info!(projection = name, "lease lost; following the new holder");
        }
    }

    async fn reload(&self) {
        // A plain read: the row exists since start, and an upsert would queue behind the
        // holder's row lock while it applies a batch.
        match read_checkpoint(&self.db, self.projection.name()).await {
            Ok(stored) => {
                self.progress.send_replace(stored);
            }
            Err(error) => {
                tracing::warn!(projection = self.projection.name(), %error, "cannot reload checkpoint")
            }
        }
    }

    /// Applies batches until shutdown or until the lease is lost.
    async fn run(
        &self,
        lease: &mut watch::Receiver<bool>,
        wake: &mut watch::Receiver<u64>,
        shutdown: &CancellationToken,
    ) {
        let name = self.projection.name();
        let mut cursor = Cursor::at(*self.progress.borrow());
        let mut failures = 0u32;
        // After a ring the new events may stay hidden behind the PostgreSQL fence for a few
        // milliseconds (an older transaction still running): keep looking, backing off,
        // until this deadline — and at once on the next ring.
        let mut look_again_until: Option<tokio::time::Instant> = None;
        let mut fence_retries = 0u32;
        loop {
            if !*lease.borrow() {
                break;
            }
            let step = batch(
                &self.db,
                self.projection.as_ref(),
                cursor,
                Stretch::Live,
                Some(&self.telemetry),
                self.options.pause_before_commit.as_deref() == Some(name),
            )
            .await;
            let pause = match step {
                Ok(Step::Advanced { cursor: to, .. }) => {
                    failures = 0;
                    fence_retries = 0;
                    cursor = to;
                    self.progress.send_replace(cursor.seen);
                    continue;
                }
                Ok(Step::Overtaken) => match load_checkpoint(&self.db, name).await {
                    Ok(stored) => {
                        cursor = Cursor::at(stored);
                        self.progress.send_replace(stored);
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(projection = name, %error, "cannot reload checkpoint");
                        Duration::from_millis(200)
                    }
                },
                Ok(Step::Idle) => {
                    failures = 0;
                    let now = tokio::time::Instant::now();
                    let patience = if look_again_until.is_some_and(|deadline| now < deadline) {
                        fence_retries = (fence_retries + 1).min(5);
                        Duration::from_millis(1 << fence_retries)
                    } else {
                        look_again_until = None;
                        fence_retries = 0;
                        IDLE_POLL
                    };
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = lease.changed() => {}
                        _ = wake.changed() => {
                            look_again_until = Some(tokio::time::Instant::now() + FENCE_PATIENCE);
                            fence_retries = 0;
                        }
                        _ = tokio::time::sleep(patience) => {}
                    }
                    continue;
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    self.telemetry
                        .failures
                        .add(format!("projection=\"{}\"", label(name)), 1);
                    tracing::error!(projection = name, %error, "projection batch failed; retrying");
                    Duration::from_millis(100u64 << failures.min(6))
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        // Store how far the runner has seen, so a restart does not pass over those events
        // again (harmless either way).
        if let Err(error) = flush(&self.db, self.projection.as_ref(), cursor).await {
            tracing::warn!(projection = name, %error, "cannot store the checkpoint at shutdown");
        }
    }
}

/// How far a runner has seen the log, and how far that is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The stored checkpoint (what the guarded update compares against).
    pub stored: Checkpoint,
    /// Everything up to here is reflected (the rest since `stored` was not for this
    /// projection).
    pub seen: Checkpoint,
    passed_over: usize,
}

impl Cursor {
    /// A cursor at a stored checkpoint.
    pub fn at(stored: Checkpoint) -> Self {
        Self {
            stored,
            seen: stored,
            passed_over: 0,
        }
    }
}

/// How many passed-over events a runner may keep unstored.
const STORE_AFTER_PASSED_OVER: usize = 5_000;

/// What one batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Read `read` events and applied `applied` of them (possibly none: only passed over
    /// others).
    Advanced {
        cursor: Cursor,
        read: usize,
        applied: usize,
    },
    /// Nothing new in the log.
    Idle,
    /// Someone else (another replica, a rebuild) moved the stored checkpoint first.
    Overtaken,
}

/// Takes the next batch after `cursor.seen`: applies the events this projection consumes,
/// in one transaction with the guarded checkpoint move.
pub async fn batch(
    db: &Database,
    projection: &dyn Projection,
    cursor: Cursor,
    stretch: Stretch,
    telemetry: Option<&ProjectionTelemetry>,
    pause_before_commit: bool,
) -> Result<Step, DbError> {
    let wanted = (!projection.consumes_every_event()).then(|| projection.aggregate_types());
    // Passing over costs little, so a projection of a few types takes a longer stretch.
    let stretch = stretch.events(wanted.is_some());
    let window = event_log::read_window(db, cursor.seen, stretch, wanted).await?;
    apply_window(
        db,
        projection,
        cursor,
        &window,
        telemetry,
        pause_before_commit,
    )
    .await
}

/// The second half of [`batch`]: applies the events of `window` (read after `cursor.seen`,
/// possibly with events of other types, which are passed over) that `projection`
/// consumes, in one transaction with the guarded checkpoint move. A rebuild of many
/// projections reads each window once and hands it to every one of them.
pub async fn apply_window(
    db: &Database,
    projection: &dyn Projection,
    cursor: Cursor,
    window: &event_log::LogWindow,
    telemetry: Option<&ProjectionTelemetry>,
    pause_before_commit: bool,
) -> Result<Step, DbError> {
    let Some((to, last_occurred_at)) = window.last else {
        return Ok(Step::Idle);
    };
    let relevant: Vec<&StoredEvent> = window
        .events
        .iter()
        .filter(|e| projection.consumes(&e.aggregate_type))
        .collect();
    let passed_over = cursor.passed_over + window.read - relevant.len();
    if relevant.is_empty() && passed_over < STORE_AFTER_PASSED_OVER {
        return Ok(Step::Advanced {
            cursor: Cursor {
                stored: cursor.stored,
                seen: to,
                passed_over,
            },
            read: window.read,
            applied: 0,
        });
    }
    let mut tx = db.begin().await?;
    if !store_checkpoint(
        &mut tx,
        projection.name(),
        cursor.stored,
        to,
        &last_occurred_at,
    )
    .await?
    {
        return Ok(Step::Overtaken);
    }
    projection.apply_batch(&mut tx, &relevant).await?;
    if pause_before_commit && !relevant.is_empty() {
        println!("FAILPOINT projection-before-commit:{}", projection.name());
        let _ = std::io::stdout().flush();
        std::future::pending::<()>().await;
    }
    tx.commit().await?;
    if let Some(telemetry) = telemetry {
        let labels = format!("projection=\"{}\"", label(projection.name()));
        let now = chrono::Utc::now();
        for event in &relevant {
            let lag = (now - event.occurred_at()).num_microseconds().unwrap_or(0) as f64 / 1e6;
            telemetry.lag.observe(labels.clone(), lag);
        }
        telemetry.applied.add(labels, relevant.len() as u64);
    }
    Ok(Step::Advanced {
        cursor: Cursor::at(to),
        read: window.read,
        applied: relevant.len(),
    })
}

/// The guarded checkpoint move, first in a projection transaction (on SQLite it takes the
/// write lock before any read). On PostgreSQL the transaction need not wait for its WAL
/// flush: rows and checkpoint commit together, so a commit lost in a crash is applied again.
/// `false` when the stored checkpoint is no longer `from`.
async fn store_checkpoint(
    tx: &mut Tx,
    name: &str,
    from: Checkpoint,
    to: Checkpoint,
    occurred_at: &chrono::DateTime<chrono::Utc>,
) -> Result<bool, DbError> {
    if let Backend::Postgres(t) = tx {
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut **t)
            .await?;
    }
    let moved = on_backend!(tx, |t| sqlx::query(
        "UPDATE projection_checkpoints SET tx_id = $1, position = $2, updated_at = $3
          WHERE name = $4 AND tx_id = $5 AND position = $6"
    )
    .bind(to.tx_id)
    .bind(to.position)
    .bind(occurred_at.to_rfc3339())
    .bind(name)
    .bind(from.tx_id)
    .bind(from.position)
    .execute(&mut **t)
    .await?
    .rows_affected());
    Ok(moved == 1)
}

/// Stores `cursor.seen` when it is ahead of what is stored.
pub async fn flush(
    db: &Database,
    projection: &dyn Projection,
    cursor: Cursor,
) -> Result<(), DbError> {
    if cursor.seen == cursor.stored {
        return Ok(());
    }
    let mut tx = db.begin().await?;
    let now = chrono::Utc::now();
    if store_checkpoint(&mut tx, projection.name(), cursor.stored, cursor.seen, &now).await? {
        tx.commit().await?;
    }
    Ok(())
}

/// Reads (creating if needed) the checkpoint of `name`.
pub async fn load_checkpoint(db: &Database, name: &str) -> Result<Checkpoint, DbError> {
    let (tx_id, position): (i64, i64) = on_backend!(db, |pool| {
        sqlx::query(
            "INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .execute(pool)
        .await?;
        sqlx::query_as("SELECT tx_id, position FROM projection_checkpoints WHERE name = $1")
            .bind(name)
            .fetch_one(pool)
            .await?
    });
    Ok(Checkpoint { tx_id, position })
}

/// Reads the stored checkpoint of `name` (the start when it has none yet).
pub async fn read_checkpoint(db: &Database, name: &str) -> Result<Checkpoint, DbError> {
    let stored: Option<(i64, i64)> = on_backend!(db, |pool| sqlx::query_as(
        "SELECT tx_id, position FROM projection_checkpoints WHERE name = $1"
    )
    .bind(name)
    .fetch_optional(pool)
    .await?);
    Ok(
        stored.map_or(Checkpoint::START, |(tx_id, position)| Checkpoint {
            tx_id,
            position,
        }),
    )
}

/// Empties the projection's tables and moves its checkpoint back to the start, in one
/// transaction; running runners notice and rebuild from there.
pub async fn reset(db: &Database, projection: &dyn Projection) -> Result<(), DbError> {
    load_checkpoint(db, projection.name()).await?;
    let mut tx = db.begin().await?;
    on_backend!(&mut tx, |t| {
        sqlx::query(
            "UPDATE projection_checkpoints SET tx_id = 0, position = 0, updated_at = NULL
              WHERE name = $1",
        )
        .bind(projection.name())
        .execute(&mut **t)
        .await?;
        for table in projection.tables() {
            sqlx::query(&format!("DELETE FROM {table}"))
                .execute(&mut **t)
                .await?;
        }
    });
    tx.commit().await
}

/// Applies batches until the projection has passed everything committed when it started,
/// calling `on_batch(read, applied)` with the number of events each batch read and how
/// many of them it applied, and stores the final checkpoint. Used by tests to bring live
/// projections up to the log (a rebuild uses `rebuild::rebuild_all`'s shared read).
pub async fn catch_up(
    db: &Database,
    projection: &dyn Projection,
    mut on_batch: impl FnMut(usize, usize),
) -> Result<Checkpoint, DbError> {
    let target = event_log::log_head(db).await?;
    let mut cursor = Cursor::at(load_checkpoint(db, projection.name()).await?);
    while cursor.seen < target {
        match batch(db, projection, cursor, Stretch::CatchUp, None, false).await? {
            Step::Advanced {
                cursor: to,
                read,
                applied,
            } => {
                cursor = to;
                on_batch(read, applied);
            }
            Step::Overtaken => cursor = Cursor::at(load_checkpoint(db, projection.name()).await?),
            // The fence may hide the head for a moment on PostgreSQL.
            Step::Idle => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
    flush(db, projection, cursor).await?;
    Ok(cursor.seen)
}
