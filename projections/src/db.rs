//! The database handle. Without `DATABASE_URL` the helpdesk keeps everything in one SQLite
//! file; with `postgres://...` it uses PostgreSQL. Both run the same code: SQL is written
//! once with `$N` placeholders (which SQLite also understands) and portable types, and
//! [`on_backend!`](crate::on_backend) expands a body once per backend.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// One value per backend: a pool, a transaction, a connection.
#[derive(Debug, Clone)]
pub enum Backend<S, P> {
    /// The embedded SQLite file.
    Sqlite(S),
    /// PostgreSQL.
    Postgres(P),
}

/// Runs `$body` with `$c` bound to the backend's value, compiled once per backend.
#[macro_export]
macro_rules! on_backend {
    ($target:expr, |$c:ident| $body:expr) => {
        match $target {
            $crate::db::Backend::Sqlite($c) => $body,
            $crate::db::Backend::Postgres($c) => $body,
        }
    };
}

/// The connection pool of whichever backend is configured.
pub type Database = Backend<SqlitePool, PgPool>;

/// A transaction on whichever backend is configured.
pub type Tx =
    Backend<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Transaction<'static, sqlx::Postgres>>;

/// Storage failures. Technical, never shown to clients beyond "internal".
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database refused or failed a statement.
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The URL is not one the helpdesk understands.
    #[error("unsupported database URL '{0}': use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    /// Stored data could not be read back.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// Work that depended on another task stopped because that task failed (a rebuild's
    /// shared read of the log).
    #[error("abandoned: {0}")]
    Abandoned(String),
    /// The data folder could not be created.
    #[error("cannot create data folder {path}: {source}")]
    DataFolder {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The SQLite file used when no `DATABASE_URL` is set.
pub const DEFAULT_SQLITE_PATH: &str = "./data/helpdesk.db";

impl Database {
    /// Connects to `url` (`None` -> the default SQLite file), creating the SQLite file and
    /// its folder if needed. Does not migrate: see [`Database::migrate`].
    pub async fn connect(url: Option<&str>) -> Result<Self, DbError> {
        let url = url.filter(|u| !u.trim().is_empty());
        match url {
            None => Self::connect_sqlite(Path::new(DEFAULT_SQLITE_PATH)).await,
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                let options = PgConnectOptions::from_str(u)?;
                let pool = PgPoolOptions::new()
                    .max_connections(20)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options)
                    .await?;
                Ok(Backend::Postgres(pool))
            }
            Some(u) if u.starts_with("sqlite:") => {
                let path = u
                    .trim_start_matches("sqlite://")
                    .trim_start_matches("sqlite:");
                let path = path.split('?').next().unwrap_or(path);
                Self::connect_sqlite(Path::new(path)).await
            }
            Some(other) => Err(DbError::UnsupportedUrl(other.to_string())),
        }
    }

    async fn connect_sqlite(path: &Path) -> Result<Self, DbError> {
        if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder).map_err(|source| DbError::DataFolder {
                path: folder.to_path_buf(),
                source,
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?;
        Ok(Backend::Sqlite(pool))
    }

    /// Applies the migrations under `migrations/sqlite` or `migrations/postgres`. Safe to
    /// run from several replicas at once (PostgreSQL takes an advisory lock).
    pub async fn migrate(&self) -> Result<(), DbError> {
        match self {
            Backend::Sqlite(pool) => sqlx::migrate!("../migrations/sqlite").run(pool).await?,
            Backend::Postgres(pool) => sqlx::migrate!("../migrations/postgres").run(pool).await?,
        }
        Ok(())
    }

    /// A second handle on the same database with exactly one connection, never recycled
    /// while it is open: for work that keeps state on its connection, such as the
    /// temporary shadow tables of a rebuild.
    pub async fn single_connection(&self) -> Result<Database, DbError> {
        Ok(match self {
            Backend::Sqlite(pool) => Backend::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .acquire_timeout(Duration::from_secs(60))
                    .connect_with((*pool.connect_options()).clone())
                    .await?,
            ),
            Backend::Postgres(pool) => Backend::Postgres(
                PgPoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .acquire_timeout(Duration::from_secs(60))
                    .connect_with((*pool.connect_options()).clone())
                    .await?,
            ),
        })
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Starts a transaction. On SQLite the first statement should write, so that the
    /// write lock is taken up front (a read-then-write transaction can fail to upgrade).
    pub async fn begin(&self) -> Result<Tx, DbError> {
        Ok(match self {
            Backend::Sqlite(pool) => Backend::Sqlite(pool.begin().await?),
            Backend::Postgres(pool) => Backend::Postgres(pool.begin().await?),
        })
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), DbError> {
        on_backend!(self, |pool| {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    /// Allocates the next ticket number of `organization`: unique and increasing, never
    /// given to two tickets (a failed creation leaves a gap rather than a duplicate).
    ///
    /// On PostgreSQL the allocation does not wait for its WAL flush: the `TicketCreated`
    /// commit that records the number flushes the log up to and past it, and if that event
    /// never commits, losing the allocation in a crash harms nothing.
    pub async fn allocate_ticket_number(&self, organization: &str) -> Result<i64, DbError> {
        let sql = "INSERT INTO ticket_number_counters (organization_id, last_number) VALUES ($1, 1)
                   ON CONFLICT (organization_id)
                   DO UPDATE SET last_number = ticket_number_counters.last_number + 1
                   RETURNING last_number";
        let number: i64 = match self {
            Backend::Sqlite(pool) => {
                sqlx::query_scalar(sql)
                    .bind(organization)
                    .fetch_one(pool)
                    .await?
            }
            Backend::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SET LOCAL synchronous_commit = off")
                    .execute(&mut *tx)
                    .await?;
                let number = sqlx::query_scalar(sql)
                    .bind(organization)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                number
            }
        };
        Ok(number)
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        on_backend!(self, |pool| pool.close().await)
    }
}

impl Tx {
    /// Commits the transaction.
    pub async fn commit(self) -> Result<(), DbError> {
        on_backend!(self, |tx| tx.commit().await?);
        Ok(())
    }
}

/// Formats a time the way read models store it: RFC 3339 UTC with microseconds, fixed
/// width, so that text order is time order.
pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Reads a stored [`timestamp`] back.
pub fn parse_timestamp(text: &str) -> Result<chrono::DateTime<chrono::Utc>, DbError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| DbError::Corrupt(format!("bad timestamp '{text}': {e}")))
}

/// A value bound to a dynamically built statement.
#[derive(Debug, Clone)]
pub enum Bind {
    /// A text value.
    Text(String),
    /// An integer value.
    Int(i64),
    /// A boolean value.
    Bool(bool),
}

/// A statement assembled from optional filters, with `$N` placeholders numbered as binds
/// are pushed (valid on both backends).
#[derive(Debug, Clone, Default)]
pub struct Statement {
    /// The SQL so far.
    pub sql: String,
    /// The values, in placeholder order.
    pub binds: Vec<Bind>,
}

impl Statement {
    /// Starts a statement.
    pub fn new(sql: &str) -> Self {
        Self {
            sql: sql.to_string(),
            binds: Vec::new(),
        }
    }

    /// Adds a value and returns its placeholder.
    pub fn bind(&mut self, value: Bind) -> String {
        self.binds.push(value);
        format!("${}", self.binds.len())
    }

    /// Appends SQL text.
    pub fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }
}

/// Binds a [`Statement`]'s values onto a sqlx query (`query`, `query_as` or `query_scalar`).
#[macro_export]
macro_rules! bind_all {
    ($query:expr, $statement:expr) => {{
        let mut query = $query;
        for value in &$statement.binds {
            query = match value {
                $crate::db::Bind::Text(text) => query.bind(text.clone()),
                $crate::db::Bind::Int(int) => query.bind(*int),
                $crate::db::Bind::Bool(flag) => query.bind(*flag),
            };
        }
        query
    }};
}
