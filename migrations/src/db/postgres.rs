//! The PostgreSQL executor: one `PgConnection` whose session settings are
//! pinned (ISO dates, UTC, shortest-exact floats, hex bytea) so that the
//! text form of a value is the same whenever it is captured or compared.
//! Captured columns are cast to `text` by the queries; restored values are
//! bound as text and cast back to the column's type in SQL.

use std::str::FromStr;

use rewind_ledger::{Bytes, SqlValue};
use sqlx::postgres::{PgArguments, PgConnectOptions, PgRow};
use sqlx::{
    AssertSqlSafe, Connection, Decode, PgConnection, Row, SqlSafeStr, Statement, TypeInfo, ValueRef,
};

use super::executor::{Bind, BoxFuture, Engine, Executor};
use super::sqlite::{real_from_bits, real_to_bits};

/// Session settings that fix the text form of dates, intervals, floats and bytea.
const SESSION: &str = "SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; \
SET TimeZone = 'UTC'; SET extra_float_digits = 1; SET bytea_output = 'hex'; \
SET client_encoding = 'UTF8'; SET standard_conforming_strings = on";

/// A connection to one PostgreSQL database.
pub struct PgExecutor {
    connection: PgConnection,
    options: PgConnectOptions,
}

impl PgExecutor {
    /// Connects and pins the session settings.
    pub async fn connect(url: &str) -> Result<PgExecutor, sqlx::Error> {
        PgExecutor::connect_with(PgConnectOptions::from_str(url)?).await
    }

    async fn connect_with(options: PgConnectOptions) -> Result<PgExecutor, sqlx::Error> {
        let mut connection = PgConnection::connect_with(&options).await?;
        sqlx::raw_sql(SESSION).execute(&mut connection).await?;
        Ok(PgExecutor {
            connection,
            options,
        })
    }
}

/// Binds borrowed, not copied: an array of a thousand images is encoded
/// straight from the caller's values.
fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Postgres, PgArguments>,
    binds: &'q [Bind],
) -> Result<sqlx::query::Query<'q, sqlx::Postgres, PgArguments>, sqlx::Error> {
    for bind in binds {
        query = match bind {
            Bind::Value(SqlValue::Null) => query.bind(None::<String>),
            Bind::Value(SqlValue::Integer(value)) => query.bind(*value),
            Bind::Value(SqlValue::Real(bits)) => query.bind(real_from_bits(bits)?),
            Bind::Value(SqlValue::Text(text) | SqlValue::Typed(text)) => query.bind(text.as_str()),
            Bind::Value(SqlValue::Blob(bytes)) => query.bind(bytes.0.as_slice()),
            Bind::Bool(value) => query.bind(*value),
            Bind::TextArray(values) => query.bind(values.as_slice()),
            Bind::IntArray(values) => query.bind(values.as_slice()),
            Bind::BoolArray(values) => query.bind(values.as_slice()),
        };
    }
    Ok(query)
}

fn decode<'r, T: Decode<'r, sqlx::Postgres>>(
    raw: sqlx::postgres::PgValueRef<'r>,
) -> Result<T, sqlx::Error> {
    T::decode(raw).map_err(sqlx::Error::Decode)
}

fn decode_row(row: &PgRow) -> Result<Vec<SqlValue>, sqlx::Error> {
    let mut values = Vec::with_capacity(row.len());
    for index in 0..row.len() {
        let raw = row.try_get_raw(index)?;
        if raw.is_null() {
            values.push(SqlValue::Null);
            continue;
        }
        let type_name = raw.type_info().name().to_owned();
        let value = match type_name.as_str() {
            "INT2" => SqlValue::Integer(i64::from(decode::<i16>(raw)?)),
            "INT4" => SqlValue::Integer(i64::from(decode::<i32>(raw)?)),
            "INT8" => SqlValue::Integer(decode::<i64>(raw)?),
            "BOOL" => SqlValue::Integer(i64::from(decode::<bool>(raw)?)),
            "FLOAT8" => SqlValue::Real(real_to_bits(decode::<f64>(raw)?)),
            "FLOAT4" => SqlValue::Real(real_to_bits(f64::from(decode::<f32>(raw)?))),
            "BYTEA" => SqlValue::Blob(Bytes(decode::<Vec<u8>>(raw)?)),
            "TEXT" | "VARCHAR" | "NAME" | "BPCHAR" | "UNKNOWN" => {
                SqlValue::Typed(decode::<String>(raw)?)
            }
            other => {
                return Err(sqlx::Error::Protocol(format!(
                    "column {index} has type {other}; rewind reads it as text (cast it with ::text)"
                )));
            }
        };
        values.push(value);
    }
    Ok(values)
}

impl Executor for PgExecutor {
    fn engine(&self) -> Engine {
        Engine::Postgres
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

    fn fetch_sent<'a>(&'a mut self, sql: &'a str) -> Option<BoxFuture<'a, Vec<Vec<SqlValue>>>> {
        // The simple query protocol: one `Query` message, written and
        // flushed before the first poll returns (an extended query would
        // wait for its `Parse` to be answered before sending the rest).
        Some(Box::pin(async move {
            let rows = sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
                .fetch_all(&mut self.connection)
                .await?;
            rows.iter().map(decode_row).collect()
        }))
    }

    fn sibling(&self) -> Option<BoxFuture<'static, Box<dyn Executor>>> {
        let options = self.options.clone();
        Some(Box::pin(async move {
            let executor = PgExecutor::connect_with(options).await?;
            Ok(Box::new(executor) as Box<dyn Executor>)
        }))
    }

    fn as_sqlite(&mut self) -> Option<&mut super::sqlite::SqliteExecutor> {
        None
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
