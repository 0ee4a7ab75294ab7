//! Set-based reads and writes for projections that apply a batch at once.
//!
//! A projection applying one statement per event is bound by round trips (about 100 µs
//! each here), not by the database's work. [`Projection::apply_batch`] lets a projection
//! read the rows a batch touches in one statement per table, fold the batch in memory, and
//! write each touched row once. These helpers keep those statements the same on both
//! backends:
//!
//! - [`Rows`] writes many rows in one statement: on PostgreSQL
//!   `INSERT … SELECT * FROM UNNEST($1::text[], $2::bigint[], …)`, one array per column; on
//!   SQLite `INSERT … SELECT value ->> 0, … FROM json_each($1)`, the rows as one JSON array
//!   of arrays. Both take an optional `ON CONFLICT` clause, so upserts are one statement too.
//! - [`select_in`] and [`delete_in`] take a list of keys for `column IN (…)`: `= ANY($1)`
//!   on PostgreSQL, `IN (SELECT value FROM json_each($1))` on SQLite.
//!
//! The SQL text depends only on the table and columns, never on the number of rows, so
//! each statement is prepared once per connection.
//!
//! [`Projection::apply_batch`]: crate::runner::Projection::apply_batch

use crate::db::{Backend, DbError, Tx};
use crate::event_log::StoredEvent;

/// A column's SQL type, as the arrays are typed on PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `text`.
    Text,
    /// `bigint`.
    Int,
    /// `boolean` (an integer 0 or 1 on SQLite).
    Bool,
}

/// One value of a row written by [`Rows`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A text value or NULL.
    Text(Option<String>),
    /// An integer value or NULL.
    Int(Option<i64>),
    /// A boolean value or NULL.
    Bool(Option<bool>),
}

impl From<bool> for Value {
    fn from(value: bool) -> Self {
        Value::Bool(Some(value))
    }
}

impl From<String> for Value {
    fn from(value: String) -> Self {
        Value::Text(Some(value))
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Value::Text(Some(value.to_string()))
    }
}

impl From<Option<String>> for Value {
    fn from(value: Option<String>) -> Self {
        Value::Text(value)
    }
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Value::Int(Some(value))
    }
}

impl From<Option<i64>> for Value {
    fn from(value: Option<i64>) -> Self {
        Value::Int(value)
    }
}

/// Rows for one table, written by one statement.
#[derive(Debug)]
pub struct Rows {
    table: &'static str,
    columns: &'static [(&'static str, Kind)],
    values: Vec<Value>,
}

impl Rows {
    /// No rows yet for `table`'s `columns`.
    pub fn new(table: &'static str, columns: &'static [(&'static str, Kind)]) -> Self {
        Self {
            table,
            columns,
            values: Vec::new(),
        }
    }

    /// Adds a row: one value per column, in the columns' order, of the column's kind.
    pub fn push(&mut self, row: impl IntoIterator<Item = Value>) -> Result<(), DbError> {
        let before = self.values.len();
        self.values.extend(row);
        let pushed = &self.values[before..];
        let fits = pushed.len() == self.columns.len()
            && pushed.iter().zip(self.columns).all(|(value, (_, kind))| {
                matches!(
                    (value, kind),
                    (Value::Text(_), Kind::Text)
                        | (Value::Int(_), Kind::Int)
                        | (Value::Bool(_), Kind::Bool)
                )
            });
        if !fits {
            self.values.truncate(before);
            return Err(DbError::Corrupt(format!(
                "a row for {} does not match its columns",
                self.table
            )));
        }
        Ok(())
    }

    /// How many rows were pushed.
    pub fn len(&self) -> usize {
        self.values.len() / self.columns.len().max(1)
    }

    /// Whether no row was pushed.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `INSERT`s every row in one statement followed by `on_conflict` (empty, or an
    /// `ON CONFLICT …` clause; conflicting rows must not repeat a key within the rows).
    /// Nothing is sent when there are no rows.
    pub async fn insert(self, tx: &mut Tx, on_conflict: &str) -> Result<(), DbError> {
        if self.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = self.columns.iter().map(|(name, _)| *name).collect();
        let names = names.join(", ");
        let width = self.columns.len();
        match tx {
            Backend::Postgres(t) => {
                let arrays: Vec<String> = self
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, (_, kind))| match kind {
                        Kind::Text => format!("${}::text[]", i + 1),
                        Kind::Int => format!("${}::bigint[]", i + 1),
                        Kind::Bool => format!("${}::boolean[]", i + 1),
                    })
                    .collect();
                let sql = format!(
                    "INSERT INTO {} ({names}) SELECT * FROM UNNEST({}) WHERE true {on_conflict}",
                    self.table,
                    arrays.join(", ")
                );
                let mut query = sqlx::query(&sql);
                for (column, (_, kind)) in self.columns.iter().enumerate() {
                    let cells = self.values.iter().skip(column).step_by(width);
                    query = match kind {
                        Kind::Text => query.bind(
                            cells
                                .map(|value| match value {
                                    Value::Text(text) => text.clone(),
                                    _ => None,
                                })
                                .collect::<Vec<Option<String>>>(),
                        ),
                        Kind::Int => query.bind(
                            cells
                                .map(|value| match value {
                                    Value::Int(int) => *int,
                                    _ => None,
                                })
                                .collect::<Vec<Option<i64>>>(),
                        ),
                        Kind::Bool => query.bind(
                            cells
                                .map(|value| match value {
                                    Value::Bool(flag) => *flag,
                                    _ => None,
                                })
                                .collect::<Vec<Option<bool>>>(),
                        ),
                    };
                }
                query.execute(&mut **t).await?;
            }
            Backend::Sqlite(t) => {
                let cells: Vec<String> = (0..width).map(|i| format!("value ->> {i}")).collect();
                let sql = format!(
                    "INSERT INTO {} ({names}) SELECT {} FROM json_each($1) WHERE true {on_conflict}",
                    self.table,
                    cells.join(", ")
                );
                let rows: Vec<serde_json::Value> = self
                    .values
                    .chunks(width)
                    .map(|row| row.iter().map(json_of).collect())
                    .collect();
                let rows = serde_json::Value::Array(rows).to_string();
                sqlx::query(&sql).bind(rows).execute(&mut **t).await?;
            }
        }
        Ok(())
    }
}

/// The events of `aggregate_type` in a batch, each with its payload decoded as `E`.
pub fn decode_all<'e, E: serde::de::DeserializeOwned>(
    events: &[&'e StoredEvent],
    aggregate_type: &str,
) -> Result<Vec<(&'e StoredEvent, E)>, DbError> {
    events
        .iter()
        .filter(|e| e.aggregate_type == aggregate_type)
        .map(|e| Ok((*e, e.decode::<E>()?)))
        .collect()
}

/// The distinct aggregate ids of decoded events, sorted (the keys to read their rows by).
pub fn aggregate_ids<E>(decoded: &[(&StoredEvent, E)]) -> Vec<String> {
    let mut ids: Vec<String> = decoded
        .iter()
        .map(|(e, _)| e.aggregate_id.clone())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// `a, b, c` of the columns, for a `SELECT` of the rows [`Rows`] writes.
pub fn column_list(columns: &[(&str, Kind)]) -> String {
    columns
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

fn json_of(value: &Value) -> serde_json::Value {
    match value {
        Value::Text(Some(text)) => serde_json::Value::String(text.clone()),
        Value::Int(Some(int)) => serde_json::Value::from(*int),
        Value::Bool(Some(flag)) => serde_json::Value::from(*flag),
        Value::Text(None) | Value::Int(None) | Value::Bool(None) => serde_json::Value::Null,
    }
}

/// `ON CONFLICT (key) DO UPDATE SET c = excluded.c` for every column of `columns` not in
/// `key`: the written row replaces the stored one.
pub fn replace_on_conflict(columns: &[(&str, Kind)], key: &[&str]) -> String {
    let set: Vec<String> = columns
        .iter()
        .filter(|(name, _)| !key.contains(name))
        .map(|(name, _)| format!("{name} = excluded.{name}"))
        .collect();
    format!(
        "ON CONFLICT ({}) DO UPDATE SET {}",
        key.join(", "),
        set.join(", ")
    )
}

/// `column` is one of the keys bound as `$1`, on `tx`'s backend: `= ANY($1)` with a text
/// array on PostgreSQL, `IN (SELECT value FROM json_each($1))` with a JSON array on SQLite.
fn one_of(tx: &Tx, column: &str) -> String {
    match tx {
        Backend::Postgres(_) => format!("{column} = ANY($1)"),
        Backend::Sqlite(_) => format!("{column} IN (SELECT value FROM json_each($1))"),
    }
}

/// Runs `{select} WHERE {column} IN keys` (`select` is a `SELECT … FROM …` without a
/// `WHERE`) and decodes the rows as `T`. Nothing is sent for no keys.
pub async fn select_in<T>(
    tx: &mut Tx,
    select: &str,
    column: &str,
    keys: &[String],
) -> Result<Vec<T>, DbError>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
        + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
        + Send
        + Unpin,
{
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!("{select} WHERE {}", one_of(tx, column));
    Ok(match tx {
        Backend::Postgres(t) => sqlx::query_as(&sql).bind(keys).fetch_all(&mut **t).await?,
        Backend::Sqlite(t) => {
            sqlx::query_as(&sql)
                .bind(serde_json::Value::from(keys).to_string())
                .fetch_all(&mut **t)
                .await?
        }
    })
}

/// `DELETE FROM {table} WHERE {column} IN keys {and}` (`and` is empty or `AND …` on the
/// row's own columns). Nothing is sent for no keys.
pub async fn delete_in(
    tx: &mut Tx,
    table: &str,
    column: &str,
    keys: &[String],
    and: &str,
) -> Result<(), DbError> {
    if keys.is_empty() {
        return Ok(());
    }
    let sql = format!("DELETE FROM {table} WHERE {} {and}", one_of(tx, column));
    match tx {
        Backend::Postgres(t) => {
            sqlx::query(&sql).bind(keys).execute(&mut **t).await?;
        }
        Backend::Sqlite(t) => {
            sqlx::query(&sql)
                .bind(serde_json::Value::from(keys).to_string())
                .execute(&mut **t)
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLUMNS: &[(&str, Kind)] = &[("id", Kind::Text), ("n", Kind::Int), ("note", Kind::Text)];

    #[test]
    fn a_row_must_match_the_columns() {
        let mut rows = Rows::new("t", COLUMNS);
        rows.push(["a".into(), 1.into(), None::<String>.into()])
            .unwrap();
        assert!(rows
            .push(["b".into(), "x".into(), None::<String>.into()])
            .is_err());
        assert!(rows.push(["c".into(), 1.into()]).is_err());
        assert!(rows
            .push(["d".into(), true.into(), None::<String>.into()])
            .is_err());
        assert_eq!(rows.len(), 1);
    }

    #[test]
    fn replacing_sets_every_column_but_the_key() {
        assert_eq!(
            replace_on_conflict(COLUMNS, &["id"]),
            "ON CONFLICT (id) DO UPDATE SET n = excluded.n, note = excluded.note"
        );
    }
}
