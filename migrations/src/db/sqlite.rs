//! The SQLite executor: one `SqliteConnection`, values decoded by their
//! storage class (INTEGER, REAL as exact bits, TEXT, BLOB, NULL) and bound
//! back as the same class, so a restored value is the value captured.

use std::str::FromStr;

use rewind_ledger::{Bytes, SqlValue};
use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqliteRow};
use sqlx::{
    AssertSqlSafe, Connection, Decode, Row, SqlSafeStr, SqliteConnection, Statement, TypeInfo,
    ValueRef,
};

use super::executor::{Bind, BoxFuture, Engine, Executor};
use super::sqlite_raw::Handle;

/// A connection to one SQLite database file.
pub struct SqliteExecutor {
    connection: SqliteConnection,
}

impl SqliteExecutor {
    /// Opens an existing database file; a missing file is an error, never
    /// created, unless the url asks for it with `mode=rwc`.
    pub async fn connect(url: &str) -> Result<SqliteExecutor, sqlx::Error> {
        let create = url.contains("mode=rwc");
        // A large row buffer lets sqlx's worker thread run ahead instead of
        // handing over (and waking this thread) every few rows.
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(create)
            .row_buffer_size(4096)
            // A page cache of up to 64 MiB for this connection (SQLite's
            // default is 2 MiB): a chunk's rows, and a rollback's lookups
            // in a table of millions of rows, stay in memory instead of
            // being read again from the file, or spilled to it mid-chunk.
            .pragma("cache_size", "-65536");
        let connection = SqliteConnection::connect_with(&options).await?;
        Ok(SqliteExecutor { connection })
    }

    /// Runs `work` on the connection's own handle ([`super::sqlite_raw`]),
    /// inside whatever transaction the connection has open.
    pub(crate) async fn with_handle<T>(
        &mut self,
        work: impl FnOnce(&Handle) -> T,
    ) -> Result<T, sqlx::Error> {
        let mut locked = self.connection.lock_handle().await?;
        Ok(Handle::on(&mut locked, work))
    }
}

fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Sqlite, SqliteArguments>,
    binds: &'q [Bind],
) -> Result<sqlx::query::Query<'q, sqlx::Sqlite, SqliteArguments>, sqlx::Error> {
    for bind in binds {
        query = match bind {
            Bind::Value(SqlValue::Null) => query.bind(None::<i64>),
            Bind::Value(SqlValue::Integer(value)) => query.bind(*value),
            Bind::Value(SqlValue::Real(bits)) => query.bind(real_from_bits(bits)?),
            Bind::Value(SqlValue::Text(text) | SqlValue::Typed(text)) => query.bind(text.as_str()),
            Bind::Value(SqlValue::Blob(bytes)) => query.bind(bytes.0.as_slice()),
            Bind::Bool(value) => query.bind(i64::from(*value)),
            Bind::TextArray(_) | Bind::IntArray(_) | Bind::BoolArray(_) => {
                return Err(sqlx::Error::Protocol(
                    "arrays cannot be bound on SQLite".into(),
                ));
            }
        };
    }
    Ok(query)
}

/// Parses `0x…` hex bits back into the double they encode.
pub(crate) fn real_from_bits(bits: &str) -> Result<f64, sqlx::Error> {
    u64::from_str_radix(bits.trim_start_matches("0x"), 16)
        .map(f64::from_bits)
        .map_err(|_| sqlx::Error::Protocol(format!("bad real image {bits}")))
}

/// The exact bits of a double as `0x` and 16 hex digits.
pub(crate) fn real_to_bits(value: f64) -> String {
    format!("0x{:016x}", value.to_bits())
}

fn decode_row(row: &SqliteRow) -> Result<Vec<SqlValue>, sqlx::Error> {
    let mut values = Vec::with_capacity(row.len());
    for index in 0..row.len() {
        let raw = row.try_get_raw(index)?;
        if raw.is_null() {
            values.push(SqlValue::Null);
            continue;
        }
        let class = raw.type_info().name().to_owned();
        let value = match class.as_str() {
            "INTEGER" => SqlValue::Integer(
                <i64 as Decode<sqlx::Sqlite>>::decode(raw).map_err(sqlx::Error::Decode)?,
            ),
            "REAL" => SqlValue::Real(real_to_bits(
                <f64 as Decode<sqlx::Sqlite>>::decode(raw).map_err(sqlx::Error::Decode)?,
            )),
            "BLOB" => SqlValue::Blob(Bytes(
                <Vec<u8> as Decode<sqlx::Sqlite>>::decode(raw).map_err(sqlx::Error::Decode)?,
            )),
            _ => SqlValue::Text(
                <String as Decode<sqlx::Sqlite>>::decode(raw).map_err(sqlx::Error::Decode)?,
            ),
        };
        values.push(value);
    }
    Ok(values)
}

impl Executor for SqliteExecutor {
    fn engine(&self) -> Engine {
        Engine::Sqlite
    }

    fn execute<'a>(&'a mut self, sql: &'a str, binds: &'a [Bind]) -> BoxFuture<'a, u64> {
        Box::pin(async move {
            let query = bind_all(
                sqlx::query(AssertSqlSafe(sql.to_owned())).persistent(false),
                binds,
            )?;
            Ok(query.execute(&mut self.connection).await?.rows_affected())
        })
    }

    fn fetch<'a>(
        &'a mut self,
        sql: &'a str,
        binds: &'a [Bind],
    ) -> BoxFuture<'a, Vec<Vec<SqlValue>>> {
        Box::pin(async move {
            let query = bind_all(
                sqlx::query(AssertSqlSafe(sql.to_owned())).persistent(false),
                binds,
            )?;
            let rows = query.fetch_all(&mut self.connection).await?;
            rows.iter().map(decode_row).collect()
        })
    }

    fn script<'a>(&'a mut self, sql: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
                .execute(&mut self.connection)
                .await?;
            Ok(())
        })
    }

    fn fetch_sent<'a>(&'a mut self, _sql: &'a str) -> Option<BoxFuture<'a, Vec<Vec<SqlValue>>>> {
        None
    }

    fn sibling(&self) -> Option<BoxFuture<'static, Box<dyn Executor>>> {
        None
    }

    fn as_sqlite(&mut self) -> Option<&mut SqliteExecutor> {
        Some(self)
    }

    fn column_names<'a>(&'a mut self, sql: &'a str) -> BoxFuture<'a, Vec<String>> {
        Box::pin(async move {
            let statement = sqlx::Executor::prepare(
                &mut self.connection,
                AssertSqlSafe(sql.to_owned()).into_sql_str(),
            )
            .await?;
            Ok(statement
                .columns()
                .iter()
                .map(|column| sqlx::Column::name(column).to_owned())
                .collect())
        })
    }
}
