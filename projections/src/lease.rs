//! Leases: which replica runs each projector and the assignment process.
//!
//! Any number of `helpdesk serve` processes may share one PostgreSQL database. Each role
//! (a projection's name, `assignment`) is held by exactly one of them at a time through a
//! PostgreSQL session-level advisory lock taken on a dedicated connection. When the holding
//! process dies — even by SIGKILL — its connection closes and PostgreSQL releases the lock
//! at once; the other replicas try every [`LEASE_RETRY`] and one of them takes over. A
//! replica that shuts down gracefully unlocks before it goes.
//!
//! Leases make the work efficient, not correct: correctness never depends on them. A
//! projection's guarded checkpoint lets only one runner apply a batch, and capacity and
//! single ownership are enforced inside the aggregates, so a moment with two holders (a
//! partitioned holder that has not noticed yet) can waste work but never corrupt anything.
//!
//! On SQLite (one process per database file) this process holds every lease.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::db::{Backend, Database};

/// How often a replica tries the leases it does not hold, and checks the connection that
/// holds the others.
pub const LEASE_RETRY: Duration = Duration::from_secs(1);

/// The leases of this process: a flag per role, true while this process holds it.
#[derive(Debug, Clone)]
pub struct Leases {
    held: BTreeMap<&'static str, Arc<watch::Sender<bool>>>,
}

impl Leases {
    /// Starts contending for `roles`. On PostgreSQL returns the task that holds them (it
    /// unlocks when `shutdown` is cancelled); on SQLite every lease is held at once.
    pub fn start(
        db: &Database,
        roles: &[&'static str],
        shutdown: CancellationToken,
    ) -> (Self, Option<tokio::task::JoinHandle<()>>) {
        let on_sqlite = matches!(db, Backend::Sqlite(_));
        let held: BTreeMap<&'static str, Arc<watch::Sender<bool>>> = roles
            .iter()
            .map(|role| (*role, Arc::new(watch::channel(on_sqlite).0)))
            .collect();
        let task = match db {
            Backend::Sqlite(_) => None,
            Backend::Postgres(pool) => Some(tokio::spawn(hold_leases(
                pool.clone(),
                held.clone(),
                shutdown,
            ))),
        };
        (Self { held }, task)
    }

    /// The flag of `role`. Panics for a role that was not named at start: that is a
    /// programming error, not a runtime condition.
    pub fn watch(&self, role: &str) -> watch::Receiver<bool> {
        match self.held.get(role) {
            Some(sender) => sender.subscribe(),
            None => panic!("no lease is contended for role '{role}'"),
        }
    }

    /// Every role this process contends for.
    pub fn roles(&self) -> Vec<&'static str> {
        self.held.keys().copied().collect()
    }

    /// The roles this process holds now.
    pub fn held(&self) -> Vec<&'static str> {
        self.held
            .iter()
            .filter(|(_, flag)| *flag.borrow())
            .map(|(role, _)| *role)
            .collect()
    }
}

/// The advisory-lock key of a role: a stable 64-bit FNV-1a hash of `helpdesk:<role>`.
pub fn lock_key(role: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in "helpdesk:".bytes().chain(role.bytes()) {
        hash ^= byte as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

async fn hold_leases(
    pool: sqlx::PgPool,
    senders: BTreeMap<&'static str, Arc<watch::Sender<bool>>>,
    shutdown: CancellationToken,
) {
    let lose_all = || {
        for sender in senders.values() {
            sender.send_if_modified(|held| std::mem::replace(held, false));
        }
    };
    loop {
        let session = async {
            // A connection of its own, outside the pool: the locks live as long as it does.
            let mut connection = pool.acquire().await?.detach();
            loop {
                for (role, sender) in &senders {
                    if *sender.borrow() {
                        continue;
                    }
                    let won: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                        .bind(lock_key(role))
                        .fetch_one(&mut connection)
                        .await?;
                    if won {
                        tracing::info!(role, "lease taken");
                        sender.send_replace(true);
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        lose_all();
                        let _ = sqlx::query("SELECT pg_advisory_unlock_all()")
                            .execute(&mut connection)
                            .await;
                        return Ok::<(), sqlx::Error>(());
                    }
                    _ = tokio::time::sleep(LEASE_RETRY) => {}
                }
                // The locks are only as alive as this connection.
                sqlx::query("SELECT 1").execute(&mut connection).await?;
            }
        };
        match session.await {
            Ok(()) => return,
            Err(error) => {
                lose_all();
                tracing::warn!(%error, "lease connection failed; every lease is given up");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(LEASE_RETRY) => {}
        }
    }
}

/// Waits until `lease` is held; `false` when `shutdown` came first or the lease is gone.
/// The processes that run in one replica at a time wait here between their turns.
pub async fn until_held(lease: &mut watch::Receiver<bool>, shutdown: &CancellationToken) -> bool {
    while !*lease.borrow_and_update() {
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            changed = lease.changed() => if changed.is_err() { return false },
        }
    }
    !shutdown.is_cancelled()
}

#[cfg(test)]
mod tests {
    use super::lock_key;

    #[test]
    fn lock_keys_are_stable_and_distinct() {
        assert_eq!(lock_key("tickets"), lock_key("tickets"));
        assert_ne!(lock_key("tickets"), lock_key("agents"));
        assert_ne!(lock_key("assignment"), lock_key("divisions"));
    }
}
