//! The database half of rewind: row transforms on SQLite and PostgreSQL
//! with lossless before/after images, and their exact inverses.
//!
//! Entry point: [`Database::connect`] with a `sqlite://…` or `postgres://…`
//! url. Each forward operation ([`Database::update`], [`Database::insert`],
//! [`Database::delete`], [`Database::schema`], [`Database::verify`]) hands
//! its events to a [`Recorder`] — the ledger's one appender — and commits
//! each chunk's transaction only after the recorder returned, so the images
//! are durable first. [`Database::undo`] applies the inverse of one
//! `RowsPacked` (or `RowsChanged`), `SequenceMoved` or `SchemaChanged` event after checking
//! drift; [`Database::check_drift`] only looks.
//!
//! Each engine is its own [`Executor`]; values are never squeezed through
//! `sqlx::any`. Identifiers are always quoted, values always bound. The
//! database url in events and messages has its password removed
//! ([`redact_url`]).
//!
//! Recovery after a crash: a chunk's `RowsPacked` events (one per at most
//! [`ROWS_PER_EVENT`] rows, all in one durable batch) are in the ledger
//! before its transaction commits, so the newest chunk of an unfinished
//! step may never have committed. [`Database::chunk_state`] tells, through
//! [`Database::check_drift`] on each of its events: every row at its before
//! image (`already_restored`) means it did not commit; every row at its
//! after image (`restored`) means it did.
//!
//! This module never prints and never writes the ledger itself.

mod capture;
mod catalog;
pub mod dump;
mod error;
mod executor;
mod images;
mod postgres;
mod preflight;
mod recover;
mod sqlite;
mod sqlite_raw;
mod undo;

use std::borrow::Cow;
use std::collections::BTreeMap;

use rewind_ledger::{Event, RowsChanged, SqlValue};

pub use capture::{
    Check, DEFAULT_CHUNK_SIZE, Delete, Expectation, Insert, InsertSource, RECORD_PREFIX,
    ROWS_PER_EVENT, Recorder, SQLITE_CHUNK_BYTES, SQLITE_CHUNK_TIME, Schema, StepReport, Update,
    Verify, VerifyReport, recorded_values,
};
pub use error::{DbError, Result};
pub use executor::{Bind, BoxFuture, Engine, Executor, quote_ident, quote_table, redact_url};
pub use postgres::PgExecutor;
pub use preflight::Operation;
pub use recover::{ChunkState, SequenceState};
pub use sqlite::SqliteExecutor;
pub use undo::{OnDrift, RowDrift, UndoOptions, UndoReport};

use capture::Context;

/// One connection to one database, with its own single-threaded runtime so
/// that callers stay synchronous. Do not call it from inside an async runtime.
pub struct Database {
    runtime: tokio::runtime::Runtime,
    executor: Box<dyn Executor>,
    url: String,
    /// How long a SQLite chunk sized by rewind should take.
    chunk_time: std::time::Duration,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Which engine a url names, or `None`.
pub fn engine_of(url: &str) -> Option<Engine> {
    if url.starts_with("sqlite:") {
        Some(Engine::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Some(Engine::Postgres)
    } else {
        None
    }
}

fn connect_error(database: &str, error: sqlx::Error) -> DbError {
    if let sqlx::Error::Database(database_error) = &error {
        let code = database_error
            .code()
            .map(|code| code.into_owned())
            .unwrap_or_default();
        if code == "28P01" || code == "28000" {
            return DbError::AuthenticationFailed {
                database: database.to_owned(),
                message: database_error.message().to_owned(),
            };
        }
        return DbError::Unreachable {
            database: database.to_owned(),
            message: database_error.message().to_owned(),
        };
    }
    DbError::Unreachable {
        database: database.to_owned(),
        message: error.to_string(),
    }
}

impl Database {
    /// Connects to `sqlite://path` (an existing file) or `postgres://…`.
    pub fn connect(url: &str) -> Result<Database> {
        let redacted = redact_url(url);
        let engine = engine_of(url).ok_or_else(|| DbError::UnsupportedUrl {
            url: redacted.clone(),
        })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| DbError::Runtime {
                message: error.to_string(),
            })?;
        let executor: Box<dyn Executor> = runtime
            .block_on(async {
                match engine {
                    Engine::Sqlite => SqliteExecutor::connect(url)
                        .await
                        .map(|e| Box::new(e) as Box<dyn Executor>),
                    Engine::Postgres => PgExecutor::connect(url)
                        .await
                        .map(|e| Box::new(e) as Box<dyn Executor>),
                }
            })
            .map_err(|error| connect_error(&redacted, error))?;
        Ok(Database {
            runtime,
            executor,
            url: redacted,
            chunk_time: SQLITE_CHUNK_TIME,
        })
    }

    /// How long a SQLite chunk whose size the step leaves to rewind should
    /// take ([`SQLITE_CHUNK_TIME`] unless set). Zero makes each chunk after
    /// the first as small as the sizing allows, a long time as large: so
    /// that tests can tell chunk sizes apart whatever the machine's speed.
    pub fn set_chunk_time(&mut self, time: std::time::Duration) {
        self.chunk_time = time;
    }

    /// The engine behind the connection.
    pub fn engine(&self) -> Engine {
        self.executor.engine()
    }

    /// The url with any password removed, as written to events.
    pub fn redacted_url(&self) -> &str {
        &self.url
    }

    fn run<T>(&mut self, work: impl AsyncFnOnce(&mut Context<'_>) -> Result<T>) -> Result<T> {
        let mut context = Context {
            executor: &mut *self.executor,
            database: &self.url,
            chunk_time: self.chunk_time,
        };
        self.runtime.block_on(work(&mut context))
    }

    /// Runs an `update` step chunk by chunk, recording each chunk's images
    /// before its transaction commits.
    pub fn update(
        &mut self,
        operation: &Update,
        recorder: &mut dyn Recorder,
    ) -> Result<StepReport> {
        self.run(async |context| capture::update(context, operation, recorder).await)
    }

    /// Runs an `insert` step; inserted rows and any sequence it advanced are recorded.
    pub fn insert(
        &mut self,
        operation: &Insert,
        recorder: &mut dyn Recorder,
    ) -> Result<StepReport> {
        self.run(async |context| capture::insert(context, operation, recorder).await)
    }

    /// Runs a `delete` step chunk by chunk, recording the deleted rows.
    pub fn delete(
        &mut self,
        operation: &Delete,
        recorder: &mut dyn Recorder,
    ) -> Result<StepReport> {
        self.run(async |context| capture::delete(context, operation, recorder).await)
    }

    /// Runs a `ddl` or `sql` step in a transaction, recording `SchemaChanged`.
    pub fn schema(&mut self, operation: &Schema, recorder: &mut dyn Recorder) -> Result<()> {
        self.run(async |context| capture::schema(context, operation, recorder).await)
    }

    /// Runs a `verify` step; `earlier` holds values recorded by earlier
    /// steps of the run (see [`recorded_values`]).
    pub fn verify(
        &mut self,
        operation: &Verify,
        earlier: &BTreeMap<String, String>,
        recorder: &mut dyn Recorder,
    ) -> Result<VerifyReport> {
        self.run(async |context| capture::verify(context, operation, earlier, recorder).await)
    }

    /// Prepares every operation against the real schema, in order, inside a
    /// transaction that is rolled back: refuses what would fail, changes nothing.
    pub fn preflight(&mut self, operations: &[Operation]) -> Result<(), (u32, DbError)> {
        let mut context = Context {
            executor: &mut *self.executor,
            database: &self.url,
            chunk_time: self.chunk_time,
        };
        self.runtime
            .block_on(preflight::preflight(&mut context, operations))
    }

    /// Applies the inverse of one database event, after its drift check.
    pub fn undo(&mut self, event: &Event, options: UndoOptions) -> Result<UndoReport> {
        self.run(async |context| undo::undo(context, event, options, false).await)
    }

    /// Undoes several `RowsPacked` or `RowsChanged` events of one table (the events of one
    /// chunk, say) in one transaction, in the order given: see
    /// `undo_rows_group` in `undo.rs`. Any other event is refused, with
    /// nothing done. An error comes with the index of the event it arose at.
    pub fn undo_group(
        &mut self,
        events: &[&Event],
        options: UndoOptions,
    ) -> std::result::Result<Vec<UndoReport>, (usize, DbError)> {
        let mut group = Vec::with_capacity(events.len());
        for (index, event) in events.iter().enumerate() {
            match event {
                Event::RowsChanged(rows) => group.push(Cow::Borrowed(rows)),
                Event::RowsPacked(packed) => {
                    group.push(Cow::Owned(undo::unpacked(packed).map_err(|e| (index, e))?));
                }
                other => return Err((index, DbError::NoInverse { kind: other.kind() })),
            }
        }
        let group: Vec<&RowsChanged> = group.iter().map(|rows| rows.as_ref()).collect();
        let mut context = Context {
            executor: &mut *self.executor,
            database: &self.url,
            chunk_time: self.chunk_time,
        };
        self.runtime
            .block_on(undo::undo_rows_group(&mut context, &group, options))
    }

    /// Reports the drift the inverse of `event` would meet; changes nothing.
    pub fn check_drift(&mut self, event: &Event) -> Result<UndoReport> {
        let options = UndoOptions {
            on_drift: OnDrift::Skip,
            allow_irreversible: true,
            allow_triggers: true,
        };
        self.run(async |context| undo::undo(context, event, options, true).await)
    }

    /// Runs a script of statements outside any step (fixtures, tests).
    pub fn execute_script(&mut self, sql: &str) -> Result<()> {
        self.run(async |context| context.script(0, sql).await)
    }

    /// Runs one query with bound values and returns its rows.
    pub fn query(&mut self, sql: &str, binds: &[Bind]) -> Result<Vec<Vec<SqlValue>>> {
        self.run(async |context| context.fetch(0, sql, binds).await)
    }

    /// A lossless text dump of a SQLite database (schema, then every row
    /// with its rowid and storage classes); see [`dump`].
    pub fn dump_sqlite(&mut self) -> Result<String> {
        self.run(async |context| dump::sqlite(context).await)
    }
}
