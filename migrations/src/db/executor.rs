//! The one interface each database engine implements: run a statement with
//! bound values, fetch rows as lossless [`SqlValue`]s, run a script.
//!
//! Not `sqlx::any`, whose value types are lossy: each engine decodes its
//! own values. SQLite values keep their storage class; PostgreSQL queries
//! written by this module cast every captured column to `text`, so a
//! PostgreSQL row comes back as [`SqlValue::Typed`] text and `NULL`.

use std::future::Future;
use std::pin::Pin;

use rewind_ledger::SqlValue;

/// The engine behind a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// A value bound to a placeholder.
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    Value(SqlValue),
    Bool(bool),
    /// A PostgreSQL `text[]` (used to load many images in one statement).
    TextArray(Vec<Option<String>>),
    /// A PostgreSQL `int4[]`.
    IntArray(Vec<i32>),
    /// A PostgreSQL `bool[]`.
    BoolArray(Vec<bool>),
}

/// A boxed future, so that [`Executor`] stays object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, sqlx::Error>> + Send + 'a>>;

/// One connection to one database, as the capture and undo code needs it.
pub trait Executor: Send {
    /// Which engine this is; the capture code writes its SQL accordingly.
    fn engine(&self) -> Engine;

    /// Runs one statement with bound values; returns the rows affected.
    fn execute<'a>(&'a mut self, sql: &'a str, binds: &'a [Bind]) -> BoxFuture<'a, u64>;

    /// Runs one statement with bound values; returns every row.
    fn fetch<'a>(
        &'a mut self,
        sql: &'a str,
        binds: &'a [Bind],
    ) -> BoxFuture<'a, Vec<Vec<SqlValue>>>;

    /// Runs a script of one or more statements without bound values.
    fn script<'a>(&'a mut self, sql: &'a str) -> BoxFuture<'a, ()>;

    /// The names of the columns a query returns, without running it.
    fn column_names<'a>(&'a mut self, sql: &'a str) -> BoxFuture<'a, Vec<String>>;

    /// Runs statements without bound values, sent as one message on the
    /// future's first poll, so that the server works on them while the
    /// caller does something else before awaiting the rows. `None` where
    /// the engine has no such use (SQLite runs in the caller's process).
    fn fetch_sent<'a>(&'a mut self, sql: &'a str) -> Option<BoxFuture<'a, Vec<Vec<SqlValue>>>>;

    /// A second connection to the same database, with the settings this
    /// executor pins when it connects (not what was `SET` on this one
    /// since), or `None` where a second writer could not run beside the
    /// first (SQLite).
    fn sibling(&self) -> Option<BoxFuture<'static, Box<dyn Executor>>>;

    /// The SQLite executor this is, for the statements the capture runs on
    /// its handle ([`super::sqlite_raw`]); `None` on other engines.
    fn as_sqlite(&mut self) -> Option<&mut super::sqlite::SqliteExecutor>;
}

/// `k0, k1, …`: the key columns of rewind's temporary key and image
/// tables, one for each of a table's `count` key columns.
pub(crate) fn key_slots(count: usize) -> String {
    (0..count)
        .map(|i| format!("k{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Quotes an identifier: `a"b` becomes `"a""b"`.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a table name; on PostgreSQL `schema.table` is split into two
/// quoted identifiers.
pub fn quote_table(engine: Engine, table: &str) -> String {
    match (engine, table.split_once('.')) {
        (Engine::Postgres, Some((schema, name))) => {
            format!("{}.{}", quote_ident(schema), quote_ident(name))
        }
        _ => quote_ident(table),
    }
}

/// Removes the password from a database url, for the ledger and for output:
/// `postgres://app:secret@db/x` becomes `postgres://app:***@db/x`, and a
/// `password=` query parameter becomes `password=***`.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                let start = rest_start + colon + 1;
                out.replace_range(start..rest_start + at, "***");
            }
        }
    }
    if let Some(query_start) = out.find('?') {
        let (head, query) = out.split_at(query_start + 1);
        let redacted: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if name.eq_ignore_ascii_case("password") => format!("{name}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out = format!("{head}{}", redacted.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        let check =
            |input: &str, expected: &str| assert_eq!(redact_url(input), expected, "{input}");
        check(
            "postgres://app:s3cr%40t@db:5432/x",
            "postgres://app:***@db:5432/x",
        );
        check("postgres://app@db/x", "postgres://app@db/x");
        check(
            "postgres://db/x?user=a&password=pw&sslmode=require",
            "postgres://db/x?user=a&password=***&sslmode=require",
        );
        check("sqlite:///tmp/a.db", "sqlite:///tmp/a.db");
        check("postgres://u:p@w@host/db", "postgres://u:***@host/db");
    }

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_table(Engine::Postgres, "s.t"), "\"s\".\"t\"");
        assert_eq!(quote_table(Engine::Sqlite, "s.t"), "\"s.t\"");
    }
}
