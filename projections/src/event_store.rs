//! The cqrs-es event repository over either backend, so aggregates have one store type.
//! Only `new_event_store` is used over it (brief rule 4: the crates' snapshot stores apply
//! events twice).

use cqrs_es::persist::{
    PersistedEventRepository, PersistedEventStore, PersistenceError, ReplayStream, SerializedEvent,
    SerializedSnapshot,
};
use cqrs_es::Aggregate;
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlite_es::SqliteEventRepository;

use crate::db::{Backend, Database};

/// sqlite-es or postgres-es, behind one type.
pub type EventRepository = Backend<SqliteEventRepository, PostgresEventRepository>;

/// The event store every aggregate uses.
pub type EventStore<A> = PersistedEventStore<EventRepository, A>;

/// Builds the event repository over `db`.
pub fn event_repository(db: &Database) -> EventRepository {
    match db {
        Backend::Sqlite(pool) => Backend::Sqlite(SqliteEventRepository::new(pool.clone())),
        Backend::Postgres(pool) => Backend::Postgres(PostgresEventRepository::new(pool.clone())),
    }
}

/// Builds an event store (no snapshots) for aggregate `A` over `db`; old event versions are
/// lifted to today's shape as they load (`domain::upcast`).
pub fn event_store<A: Aggregate>(db: &Database) -> EventStore<A> {
    PersistedEventStore::new_event_store(event_repository(db))
        .with_upcasters(vec![Box::new(domain::upcast::LogUpcaster)])
}

impl PersistedEventRepository for EventRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        crate::on_backend!(self, |r| r.get_events::<A>(aggregate_id).await)
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        crate::on_backend!(self, |r| r
            .get_last_events::<A>(aggregate_id, last_sequence)
            .await)
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        crate::on_backend!(self, |r| r.get_snapshot::<A>(aggregate_id).await)
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        crate::on_backend!(self, |r| r.persist::<A>(events, snapshot_update).await)
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        crate::on_backend!(self, |r| r.stream_events::<A>(aggregate_id).await)
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        crate::on_backend!(self, |r| r.stream_all_events::<A>().await)
    }
}
