//! The forward operations: `update`, `insert`, `delete`, `ddl`, `sql` and
//! `verify`, each capturing what its inverse and its drift check need.
//!
//! Crash safety: every chunk runs in its own transaction; its images are
//! handed to the [`Recorder`] (which appends them to the ledger and flushes)
//! *before* the transaction commits. If recording fails, the transaction
//! is rolled back, so the database never holds a change the ledger lacks.
//! A chunk's images are one recorder call: `RowsPacked` events of at most
//! [`ROWS_PER_EVENT`] rows, their images packed ([`rewind_ledger::packed`]).
//!
//! On SQLite the chunk's keys are its key range, or (with a `where`, which
//! the statement may stop matching) a temporary table of the picked keys,
//! and the images come from SQLite's own handle ([`super::sqlite_raw`]):
//! from its preupdate hook as the statement changes each row
//! ([`sqlite_hooked_chunk`]), or, when a trigger may change what the
//! statement wrote, read before and after it ([`sqlite_chunk`]). On
//! PostgreSQL one statement locks the chunk, changes it and returns its
//! images as one packed text ([`super::images`]), and while a chunk is
//! recorded and commits the next one's statement already runs on a second
//! connection ([`pg_overlapped`]).

use std::collections::BTreeMap;

use rewind_ledger::packed::{AFTER, BEFORE, ImageWriter, Packer, Sealer, pack, read_values};
use rewind_ledger::{
    Bytes, CheckRecorded, Event, RowImage, RowsPacked, SchemaChanged, SequenceMoved, SqlValue,
};

use super::catalog::{
    KeyRows, SequenceState, TableInfo, cascades, has_triggers, sequences, table_info,
};
use super::error::{DbError, Result};
use super::executor::{Bind, Engine, Executor, key_slots, quote_ident};
use super::images::{parse_pg, pg_record};
use super::sqlite_raw::{Changes, Failed, Op, Problem, Row};

/// The default number of rows per chunk: one transaction, whose images are
/// recorded (in one durable batch) before it commits. Each commit costs
/// the database a flush to disk, so chunks of 1000 rows spent most of a
/// large update waiting for them (BENCHMARKS.md, Databases); 10,000 rows
/// hold a write lock for tens of milliseconds and a few megabytes of
/// images in memory. On SQLite it is the size of an update's or delete's
/// first chunk only: the others are sized by time, and by the bytes of
/// their images ([`SQLITE_CHUNK_TIME`], [`SQLITE_CHUNK_BYTES`]).
pub const DEFAULT_CHUNK_SIZE: usize = 10_000;

/// How long a SQLite chunk whose size the step leaves to rewind should
/// take, from the moment its `BEGIN` has the write lock to its commit
/// ([`Database::set_chunk_time`](super::Database::set_chunk_time) changes
/// it). SQLite has one writer at a time: a chunk keeps every other writer
/// of the database waiting while it runs, whatever rows they write, so
/// what bounds a chunk is its time, not its rows. And each commit costs
/// SQLite its flushes to disk however few rows it holds (four fsyncs with
/// a rollback journal, about 15 ms a commit on the benchmark's machine,
/// BENCHMARKS.md, run M): chunks of 0.1 s spent a quarter of a 1M-row
/// update committing, chunks of 0.25 s a fifth, in about ten commits.
pub const SQLITE_CHUNK_TIME: std::time::Duration = std::time::Duration::from_millis(250);

/// The most bytes of images, as read and before they are sealed, a SQLite
/// chunk sized by time is made to hold: a chunk's images stay in memory
/// until they are recorded, and a chunk of wide rows can be fast.
pub const SQLITE_CHUNK_BYTES: usize = 64 << 20;

/// The size of the next chunk after one of `size` rows, whose images took
/// `bytes`, took `took`: the rows that would take `time` at its pace, at
/// most four times and at least a quarter of `size`, and 1000 to 1,000,000
/// rows; then no more than would make [`SQLITE_CHUNK_BYTES`] of images,
/// and at least one.
fn next_chunk_size(
    size: usize,
    took: std::time::Duration,
    time: std::time::Duration,
    bytes: usize,
) -> usize {
    let by_time = (size as f64 * time.as_secs_f64() / took.as_secs_f64().max(1e-6)) as usize;
    let by_bytes =
        usize::try_from(size as u128 * SQLITE_CHUNK_BYTES as u128 / bytes.max(1) as u128)
            .unwrap_or(usize::MAX);
    by_time
        .clamp(size / 4, size.saturating_mul(4))
        .clamp(1000, 1_000_000)
        .min(by_bytes.max(1))
}

/// The most rows one `RowsPacked` event holds; a larger chunk is recorded
/// as several events, all in the batch made durable before its commit.
pub const ROWS_PER_EVENT: usize = 1000;

/// Where events go: the ledger's one appender, flushed before returning.
pub trait Recorder {
    /// Makes the events durable, in order; an error aborts the chunk.
    fn record(
        &mut self,
        events: Vec<Event>,
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

impl<F, E> Recorder for F
where
    F: FnMut(Vec<Event>) -> std::result::Result<(), E>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn record(
        &mut self,
        events: Vec<Event>,
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self(events).map_err(Into::into)
    }
}

/// An `update` step: `UPDATE table SET column = expression, … WHERE where`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub step: u32,
    pub table: String,
    /// Key columns; `None` discovers them from the primary key.
    pub key: Option<Vec<String>>,
    /// A SQL condition over the table's columns; `None` updates every row.
    pub filter: Option<String>,
    /// Column name to SQL expression.
    pub set: BTreeMap<String, String>,
    /// Rows per chunk; `None` leaves it to rewind ([`DEFAULT_CHUNK_SIZE`],
    /// or on SQLite chunks sized by time, [`SQLITE_CHUNK_TIME`]).
    pub chunk_size: Option<usize>,
}

/// Where an `insert` step's rows come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertSource {
    /// A query whose column names are columns of the table.
    Select(String),
    /// Literal rows, column name to value; every row names the same columns.
    Rows(Vec<BTreeMap<String, SqlValue>>),
}

/// An `insert` step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert {
    pub step: u32,
    pub table: String,
    pub key: Option<Vec<String>>,
    pub source: InsertSource,
    /// Rows per chunk; `None`: [`DEFAULT_CHUNK_SIZE`] (an insert's rows
    /// are split into chunks before the first one runs, never by time).
    pub chunk_size: Option<usize>,
}

/// A `delete` step: `DELETE FROM table WHERE where`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    pub step: u32,
    pub table: String,
    pub key: Option<Vec<String>>,
    pub filter: Option<String>,
    /// Rows per chunk; `None` leaves it to rewind ([`DEFAULT_CHUNK_SIZE`],
    /// or on SQLite chunks sized by time, [`SQLITE_CHUNK_TIME`]).
    pub chunk_size: Option<usize>,
}

/// A `ddl` step, or a `sql` step (an opaque statement): `up` runs forward,
/// `down` on rollback; one of `down` and `irreversible` is required.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    pub step: u32,
    /// `ddl` or `sql`, for messages.
    pub kind: &'static str,
    pub up: String,
    pub down: Option<String>,
    pub irreversible: bool,
}

/// What a check expects of its query's scalar result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expectation {
    /// The value rendered as text equals this.
    Equals(String),
    /// The value equals the one recorded under this name by an earlier `record`.
    EqualsRecorded(String),
    /// The value, as a number, is at least this.
    AtLeast(String),
    /// The query returns no rows at all.
    ReturnsNoRows,
}

/// One check of a `verify` step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub query: String,
    pub expect: Expectation,
}

/// A `verify` step: named snapshots to record, and checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verify {
    pub step: u32,
    /// Name to a query returning one value.
    pub record: BTreeMap<String, String>,
    pub checks: Vec<Check>,
}

/// What a row-changing step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepReport {
    pub rows: u64,
    /// Transactions, one per chunk of at most `chunk_size` rows.
    pub chunks: u32,
    /// Every event recorded.
    pub events: u64,
    /// The `RowsPacked` events among them.
    pub row_events: u32,
    /// PostgreSQL ran the chunks overlapped on two connections.
    pub overlapped: bool,
}

/// What a `verify` step found; a failed check is a value, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub passed: bool,
    /// The values recorded by this step, by name.
    pub recorded: BTreeMap<String, String>,
    /// Every `CheckRecorded`, also handed to the recorder.
    pub checks: Vec<CheckRecorded>,
}

/// The prefix of a `CheckRecorded::check` that holds a named snapshot.
pub const RECORD_PREFIX: &str = "record:";

/// The named snapshots held by earlier `CheckRecorded` events, for
/// `equals_recorded`; a later one replaces an earlier one of the same name.
pub fn recorded_values<'a>(
    events: impl IntoIterator<Item = &'a Event>,
) -> BTreeMap<String, String> {
    let mut values = BTreeMap::new();
    for event in events {
        if let Event::CheckRecorded(check) = event
            && let Some(name) = check.check.strip_prefix(RECORD_PREFIX)
        {
            values.insert(name.to_owned(), check.actual.clone());
        }
    }
    values
}

pub(crate) struct Context<'a> {
    pub executor: &'a mut dyn Executor,
    pub database: &'a str,
    /// [`SQLITE_CHUNK_TIME`], or what the [`super::Database`] was set to.
    pub chunk_time: std::time::Duration,
}

impl Context<'_> {
    pub(crate) fn statement_error(&self, step: u32, sql: &str, error: sqlx::Error) -> DbError {
        let message = match &error {
            sqlx::Error::Database(database_error) => database_error.message().to_owned(),
            other => other.to_string(),
        };
        DbError::Statement {
            step,
            database: self.database.to_owned(),
            statement: sql.to_owned(),
            message,
        }
    }

    pub async fn fetch(
        &mut self,
        step: u32,
        sql: &str,
        binds: &[Bind],
    ) -> Result<Vec<Vec<SqlValue>>> {
        match self.executor.fetch(sql, binds).await {
            Ok(rows) => Ok(rows),
            Err(error) => Err(self.statement_error(step, sql, error)),
        }
    }

    pub async fn execute(&mut self, step: u32, sql: &str, binds: &[Bind]) -> Result<u64> {
        match self.executor.execute(sql, binds).await {
            Ok(count) => Ok(count),
            Err(error) => Err(self.statement_error(step, sql, error)),
        }
    }

    pub async fn script(&mut self, step: u32, sql: &str) -> Result<()> {
        match self.executor.script(sql).await {
            Ok(()) => Ok(()),
            Err(error) => Err(self.statement_error(step, sql, error)),
        }
    }

    /// The chunks of a step on this connection ([`check_chunk_size`]).
    fn chunking(&self, step: u32, chunk_size: Option<usize>) -> Result<Chunking> {
        check_chunk_size(step, self.executor.engine(), chunk_size, self.chunk_time)
    }

    pub async fn begin(&mut self, step: u32) -> Result<()> {
        let sql = match self.executor.engine() {
            Engine::Sqlite => "BEGIN IMMEDIATE",
            Engine::Postgres => "BEGIN",
        };
        self.script(step, sql).await
    }

    pub async fn commit(&mut self, step: u32) -> Result<()> {
        self.script(step, "COMMIT").await
    }

    /// Rolls back the open transaction; an error here would hide the one
    /// that caused it, and the connection is dropped on error anyway.
    pub async fn rollback(&mut self) {
        let _ = self.executor.script("ROLLBACK").await;
    }

    /// A table about to be changed under `key` (the primary key when
    /// `None`), which no two rows may share.
    pub async fn table(&mut self, table: &str, key: Option<&[String]>) -> Result<TableInfo> {
        table_info(self.executor, self.database, table, key, KeyRows::Check).await
    }

    /// A table whose recorded rows are being restored by their key, which
    /// the step that recorded them checked.
    pub async fn recorded_table(&mut self, table: &str, key: &[String]) -> Result<TableInfo> {
        table_info(
            self.executor,
            self.database,
            table,
            Some(key),
            KeyRows::Recorded,
        )
        .await
    }

    /// A table an insert adds rows to under `key`: the database itself
    /// must keep the key unique, since the rows read now say nothing of
    /// the rows the insert adds.
    pub async fn insert_table(
        &mut self,
        step: u32,
        table: &str,
        key: Option<&[String]>,
    ) -> Result<TableInfo> {
        let info = self.table(table, key).await?;
        if !info.key_by_index {
            return Err(DbError::InsertKeyNotIndexed {
                step,
                table: info.name,
                key: info.key.join(", "),
            });
        }
        Ok(info)
    }

    /// Refuses a change that would reach rows of other tables, which its
    /// images would not hold: those of tables inheriting from it, or those
    /// a foreign key cascades into.
    async fn refuse_rows_elsewhere(
        &mut self,
        step: u32,
        table: &TableInfo,
        set: Option<&BTreeMap<String, String>>,
    ) -> Result<()> {
        let action = if set.is_none() { "delete" } else { "update" };
        // A statement on a table changes the rows of the tables that
        // inherit from it too (a partitioned table's partitions are its
        // own rows: re-inserted into it, they go back where they were).
        if self.executor.engine() == Engine::Postgres {
            let sql = "SELECT string_agg(c.relname::text, ', ' ORDER BY c.relname) \
                       FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                       JOIN pg_class p ON p.oid = i.inhparent \
                       WHERE i.inhparent = to_regclass($1) AND p.relkind = 'r'";
            let children = self
                .fetch(
                    step,
                    sql,
                    &[Bind::Value(SqlValue::Text(table.quoted.clone()))],
                )
                .await?;
            if let Some([SqlValue::Text(children) | SqlValue::Typed(children)]) =
                children.first().map(Vec::as_slice)
            {
                return Err(DbError::InheritedRows {
                    step,
                    action,
                    table: table.name.clone(),
                    children: children.clone(),
                });
            }
        }
        let found = match cascades(self.executor, table).await {
            Ok(found) => found,
            Err(error) => return Err(self.statement_error(step, "read foreign keys", error)),
        };
        for cascade in found {
            let hit = match set {
                None => cascade.on_delete,
                Some(set) => {
                    cascade.on_update
                        && cascade
                            .columns
                            .iter()
                            .any(|column| set.contains_key(column))
                }
            };
            if hit {
                return Err(DbError::CascadingChange {
                    step,
                    action,
                    table: table.name.clone(),
                    referencing: cascade.referencing,
                });
            }
        }
        Ok(())
    }

    async fn has_triggers(&mut self, step: u32, table: &TableInfo) -> Result<bool> {
        match has_triggers(self.executor, table).await {
            Ok(found) => Ok(found),
            Err(error) => Err(self.statement_error(step, "read triggers", error)),
        }
    }

    /// Whether a SQLite table has hidden (generated) columns.
    async fn sqlite_hidden_columns(&mut self, step: u32, table: &TableInfo) -> Result<bool> {
        let rows = self
            .fetch(
                step,
                "SELECT count(*) FROM pragma_table_xinfo(?1) WHERE hidden != 0",
                &[Bind::Value(SqlValue::Text(table.name.clone()))],
            )
            .await?;
        Ok(!matches!(
            rows.first().map(Vec::as_slice),
            Some([SqlValue::Integer(0)])
        ))
    }

    async fn sequences(&mut self, step: u32, table: &TableInfo) -> Result<Vec<SequenceState>> {
        match sequences(self.executor, table).await {
            Ok(states) => Ok(states),
            Err(error) => Err(self.statement_error(step, "read sequences", error)),
        }
    }

    /// Hands the open transaction's events to the recorder and commits only
    /// once they are durable; if recording or the commit fails, the
    /// transaction is rolled back.
    async fn record_then_commit(
        &mut self,
        step: u32,
        table: &str,
        events: Vec<Event>,
        recorder: &mut dyn Recorder,
    ) -> Result<()> {
        if let Err(source) = recorder.record(events) {
            self.rollback().await;
            return Err(DbError::Record {
                step,
                table: table.to_owned(),
                source,
            });
        }
        if let Err(error) = self.commit(step).await {
            self.rollback().await;
            return Err(error);
        }
        Ok(())
    }
}

/// `$n::type` on PostgreSQL, `?n` on SQLite.
fn placeholder(engine: Engine, index: usize, sql_type: &str) -> String {
    match engine {
        Engine::Sqlite => format!("?{index}"),
        Engine::Postgres => format!("${index}::{sql_type}"),
    }
}

fn key_placeholders(engine: Engine, info: &TableInfo, first: usize) -> String {
    info.key
        .iter()
        .enumerate()
        .map(|(offset, name)| placeholder(engine, first + offset, info.sql_type(name)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A step's chunks: `chunk_size` rows each where the step sets it;
/// otherwise [`DEFAULT_CHUNK_SIZE`] rows each, or on SQLite the first
/// chunk of that many and every other sized to take `time`
/// ([`next_chunk_size`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Chunking {
    first: usize,
    time: Option<std::time::Duration>,
}

fn check_chunk_size(
    step: u32,
    engine: Engine,
    chunk_size: Option<usize>,
    time: std::time::Duration,
) -> Result<Chunking> {
    match chunk_size {
        Some(0) => Err(DbError::InvalidStep {
            step,
            problem: "chunk_size must be at least 1".to_owned(),
        }),
        Some(rows) => Ok(Chunking {
            first: rows,
            time: None,
        }),
        None => Ok(Chunking {
            first: DEFAULT_CHUNK_SIZE,
            time: (engine == Engine::Sqlite).then_some(time),
        }),
    }
}

/// A chunk's images as `RowsPacked` events of at most [`ROWS_PER_EVENT`]
/// rows each, numbered on from the step's previous events.
fn chunk_events(
    database: &str,
    info: &TableInfo,
    step: u32,
    report: &mut StepReport,
    images: Vec<RowImage>,
) -> Result<Vec<Event>> {
    if images.iter().any(|row| row.key.contains(&SqlValue::Null)) {
        return Err(DbError::NullKey {
            step,
            table: info.name.clone(),
            key: info.key.join(", "),
        });
    }
    let mut events = Vec::with_capacity(images.len().div_ceil(ROWS_PER_EVENT));
    let key_positions = info.key_positions();
    let mut sealer = Sealer::new();
    for rows in images.chunks(ROWS_PER_EVENT) {
        // A trigger or rule that changes a key column: the row's images
        // would be found under neither key.
        let packed = pack(rows, &key_positions).map_err(|problem| DbError::InvalidStep {
            step,
            problem: format!(
                "table {}: {problem}; rewind finds rows by their key and cannot record a change of it \
                 (a trigger or rule that sets a key column)",
                info.name
            ),
        })?;
        events.push(Event::RowsPacked(RowsPacked {
            chunk: report.row_events,
            columns: info.columns.clone(),
            database: database.to_owned(),
            images: sealer.seal(packed),
            key_columns: info.key.clone(),
            rows: rows.len() as u32,
            step,
            table: info.name.clone(),
        }));
        report.row_events += 1;
    }
    Ok(events)
}

fn sequence_events(
    database: &str,
    step: u32,
    before: &[SequenceState],
    after: &[SequenceState],
) -> Vec<Event> {
    before
        .iter()
        .zip(after)
        .filter(|(old, new)| old != new)
        .map(|(old, new)| {
            Event::SequenceMoved(SequenceMoved {
                database: database.to_owned(),
                new: new.value,
                old: old.value,
                old_is_called: old.is_called,
                sequence: old.name.clone(),
                step,
            })
        })
        .collect()
}

pub(crate) fn key_of(row: &[SqlValue], positions: &[usize]) -> Vec<SqlValue> {
    positions
        .iter()
        .map(|&position| row[position].clone())
        .collect()
}

/// What `update` and `delete` share: the table, the rows they pick and how
/// each chunk finds them again.
struct RowsPlan<'a> {
    step: u32,
    info: &'a TableInfo,
    filter: Option<&'a str>,
    /// Rows in the next chunk: the step's, or sized by time as the step
    /// goes ([`Chunking`]).
    chunk_size: std::cell::Cell<usize>,
    chunk_time: Option<std::time::Duration>,
    /// `"k0", "k1"`: the key columns.
    keys: String,
    key_positions: Vec<usize>,
    /// Whether the table has triggers (or, on PostgreSQL, rules), which
    /// may change more than the statement says: read once per step.
    triggers: bool,
}

/// The temporary table that holds the keys of a filtered SQLite chunk, so
/// that its statement and the read-back after it touch exactly the picked
/// rows even when the statement changes whether a row matches the filter.
const SQLITE_KEYS: &str = "temp._rw_keys";

impl<'a> RowsPlan<'a> {
    fn new(
        step: u32,
        info: &'a TableInfo,
        filter: Option<&'a str>,
        chunking: Chunking,
        triggers: bool,
    ) -> RowsPlan<'a> {
        RowsPlan {
            step,
            info,
            filter,
            chunk_size: std::cell::Cell::new(chunking.first),
            chunk_time: chunking.time,
            keys: info.key_list(""),
            key_positions: info.key_positions(),
            triggers,
        }
    }

    fn table(&self) -> &str {
        &self.info.quoted
    }

    fn chunk_size(&self) -> usize {
        self.chunk_size.get()
    }

    /// ` AND (keys) > ($1, …)` after the first chunk, with its binds.
    fn lower(&self, engine: Engine, lower: Option<&[SqlValue]>) -> (String, Vec<Bind>) {
        match lower {
            None => (String::new(), Vec::new()),
            Some(values) => (
                format!(
                    " AND ({}) > ({})",
                    self.keys,
                    key_placeholders(engine, self.info, 1)
                ),
                values.iter().cloned().map(Bind::Value).collect(),
            ),
        }
    }

    /// `"t"."c", …`: the columns at `positions`, qualified by the table.
    fn sqlite_select(&self, positions: impl IntoIterator<Item = usize>) -> String {
        positions
            .into_iter()
            .map(|position| {
                let column = &self.info.columns[position];
                format!("{}.{}", self.table(), quote_ident(&column.name))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    async fn create_sqlite_keys(&self, context: &mut Context<'_>) -> Result<()> {
        let columns = key_slots(self.info.key.len());
        context
            .script(
                self.step,
                &format!(
                    "DROP TABLE IF EXISTS {SQLITE_KEYS}; CREATE TEMP TABLE _rw_keys ({columns})"
                ),
            )
            .await
    }

    /// Refuses, before anything changes, rows the step would change whose
    /// key holds a NULL: the chunks' key ranges cannot hold them, nor can a
    /// rollback find them again (NULL equals nothing).
    async fn refuse_null_keys(&self, context: &mut Context<'_>) -> Result<()> {
        let nulls = self
            .info
            .key
            .iter()
            .map(|name| format!("{} IS NULL", quote_ident(name)))
            .collect::<Vec<_>>()
            .join(" OR ");
        let sql = format!(
            "SELECT 1 FROM {} WHERE ({}) AND ({nulls}) LIMIT 1",
            self.table(),
            self.filter.unwrap_or("TRUE")
        );
        if context.fetch(self.step, &sql, &[]).await?.is_empty() {
            return Ok(());
        }
        Err(DbError::NullKey {
            step: self.step,
            table: self.info.name.clone(),
            key: self.info.key.join(", "),
        })
    }

    /// The condition that matches the rows of the keys table.
    fn in_sqlite_keys(&self) -> String {
        format!(
            "({}) IN (SELECT {} FROM {SQLITE_KEYS})",
            self.keys,
            key_slots(self.info.key.len())
        )
    }

    /// Fills the keys table with the next filtered chunk's keys, in key
    /// order; returns how many.
    async fn pick_sqlite_keys(
        &self,
        context: &mut Context<'_>,
        filter: &str,
        lower_sql: &str,
        lower_binds: &[Bind],
    ) -> Result<u64> {
        let (table, keys, limit) = (self.table(), &self.keys, self.chunk_size());
        context
            .script(self.step, &format!("DELETE FROM {SQLITE_KEYS}"))
            .await?;
        context
            .execute(
                self.step,
                &format!(
                    "INSERT INTO {SQLITE_KEYS} SELECT {keys} FROM {table} WHERE ({filter}){lower_sql} \
                     ORDER BY {keys} LIMIT {limit}"
                ),
                lower_binds,
            )
            .await
    }

    async fn drop_sqlite_keys(&self, context: &mut Context<'_>) {
        let _ = context
            .script(self.step, &format!("DROP TABLE IF EXISTS {SQLITE_KEYS}"))
            .await;
    }

    /// The PostgreSQL CTE that locks the next chunk's rows in key order
    /// and casts their before images to text: `_rw_old(_rw_k0…, _rw_b0…)`.
    fn pg_old(&self, lower_sql: &str) -> String {
        let columns = pg_keys_and_texts(self.info, "_rw_b");
        format!(
            "_rw_old AS (SELECT {columns} FROM {} WHERE ({}){lower_sql} \
             ORDER BY {} LIMIT {} FOR UPDATE)",
            self.table(),
            self.filter.unwrap_or("TRUE"),
            self.keys,
            self.chunk_size()
        )
    }

    /// `"t"."k0" = _rw_old._rw_k0 AND …`
    fn pg_join(&self) -> String {
        self.info
            .key
            .iter()
            .enumerate()
            .map(|(i, name)| format!("{}.{} = _rw_old._rw_k{i}", self.table(), quote_ident(name)))
            .collect::<Vec<_>>()
            .join(" AND ")
    }
}

/// `SELECT count(*), string_agg(ROW(fields)::text, …)` over `source`,
/// the records in key order.
fn pg_packed_select(info: &TableInfo, fields: &[String], source: &str) -> String {
    let order = (0..info.key.len())
        .map(|i| format!("_rw_result._rw_k{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT count(*), string_agg({}, E'\\n' ORDER BY {order}) FROM {source} AS _rw_result",
        pg_record(fields)
    )
}

/// `"k" AS _rw_k0, …, "c"::text AS {image}0, …`: the typed keys, to order
/// by, and every column's text, as PostgreSQL images are read.
fn pg_keys_and_texts(info: &TableInfo, image: &str) -> String {
    let keys = info
        .key
        .iter()
        .enumerate()
        .map(|(i, name)| format!("{} AS _rw_k{i}", quote_ident(name)));
    let texts = info
        .columns
        .iter()
        .enumerate()
        .map(|(i, column)| format!("{}::text AS {image}{i}", quote_ident(&column.name)));
    keys.chain(texts).collect::<Vec<_>>().join(", ")
}

fn concurrent(info: &TableInfo, step: u32, problem: impl Into<String>) -> DbError {
    DbError::Concurrent {
        step,
        table: info.name.clone(),
        problem: problem.into(),
    }
}

/// The image of an updated row: the after image is the before image with
/// the columns at `changed` (in column order) taken from `changed_values`.
fn update_image(
    plan: &RowsPlan<'_>,
    before: Vec<SqlValue>,
    changed: &[usize],
    changed_values: impl IntoIterator<Item = SqlValue>,
) -> RowImage {
    let mut changed_values = changed_values.into_iter();
    let mut changed = changed.iter().peekable();
    let after = before
        .iter()
        .enumerate()
        .map(|(position, value)| match changed.next_if_eq(&&position) {
            Some(_) => changed_values.next().unwrap_or(SqlValue::Null),
            None => value.clone(),
        })
        .collect();
    RowImage {
        key: key_of(&before, &plan.key_positions),
        before: Some(before),
        after: Some(after),
    }
}

/// The PostgreSQL rows of a packed select: the count, then the records.
fn pg_unpack(
    context: &Context<'_>,
    step: u32,
    sql: &str,
    rows: &[Vec<SqlValue>],
    width: usize,
) -> Result<Vec<Vec<SqlValue>>> {
    let bad = |message: String| DbError::Statement {
        step,
        database: context.database.to_owned(),
        statement: sql.to_owned(),
        message,
    };
    let (count, packed) = match rows.first().map(Vec::as_slice) {
        Some([SqlValue::Integer(count), SqlValue::Null]) => (*count, ""),
        Some([SqlValue::Integer(count), SqlValue::Typed(packed)]) => (*count, packed.as_str()),
        other => return Err(bad(format!("unexpected packed images {other:?}"))),
    };
    let records = parse_pg(packed, width)
        .map_err(|problem| bad(format!("cannot read the packed images: {problem}")))?;
    if records.len() as i64 != count {
        return Err(bad(format!(
            "{count} rows changed but {} images read",
            records.len()
        )));
    }
    Ok(records)
}

pub(crate) async fn update(
    context: &mut Context<'_>,
    operation: &Update,
    recorder: &mut dyn Recorder,
) -> Result<StepReport> {
    let step = operation.step;
    let chunking = context.chunking(step, operation.chunk_size)?;
    let info = context
        .table(&operation.table, operation.key.as_deref())
        .await?;
    if operation.set.is_empty() {
        return Err(DbError::InvalidStep {
            step,
            problem: format!("update of table {} sets no column", info.name),
        });
    }
    for column in operation.set.keys() {
        if !info.columns.iter().any(|known| &known.name == column) || column == "rowid" {
            return Err(DbError::UnknownColumn {
                table: info.name.clone(),
                column: column.clone(),
            });
        }
        if info.key.contains(column) {
            return Err(DbError::SetsKeyColumn {
                step,
                table: info.name.clone(),
                column: column.clone(),
            });
        }
    }
    context
        .refuse_rows_elsewhere(step, &info, Some(&operation.set))
        .await?;
    // The after image reads back only the columns the statement sets and
    // takes the others from the before image, unless a trigger or rule
    // could change them too.
    let triggers = context.has_triggers(step, &info).await?;
    let changed: Vec<usize> = if triggers {
        (0..info.columns.len()).collect()
    } else {
        info.columns
            .iter()
            .enumerate()
            .filter(|(_, column)| operation.set.contains_key(&column.name))
            .map(|(position, _)| position)
            .collect()
    };
    let sets = operation
        .set
        .iter()
        .map(|(column, expression)| format!("{} = ({expression})", quote_ident(column)))
        .collect::<Vec<_>>()
        .join(", ");
    let values = operation
        .set
        .iter()
        .map(|(column, expression)| (expression.clone(), info.sql_type(column).to_owned()))
        .collect();
    let plan = RowsPlan::new(step, &info, operation.filter.as_deref(), chunking, triggers);
    let change = Change::Update {
        sets,
        values,
        changed,
    };
    change_rows(context, &plan, &change, recorder).await
}

pub(crate) async fn delete(
    context: &mut Context<'_>,
    operation: &Delete,
    recorder: &mut dyn Recorder,
) -> Result<StepReport> {
    let step = operation.step;
    let chunking = context.chunking(step, operation.chunk_size)?;
    let info = context
        .table(&operation.table, operation.key.as_deref())
        .await?;
    context.refuse_rows_elsewhere(step, &info, None).await?;
    let triggers = context.has_triggers(step, &info).await?;
    let plan = RowsPlan::new(step, &info, operation.filter.as_deref(), chunking, triggers);
    change_rows(context, &plan, &Change::Delete, recorder).await
}

/// The images of one chunk: packed as SQLite's rows were read, or as
/// PostgreSQL's packed text was parsed.
enum Chunk {
    Packed(SqliteChunk),
    Images(Vec<RowImage>),
}

/// What `update` or `delete` does to each chunk's rows.
enum Change {
    Update {
        /// `"c" = (expression), …`
        sets: String,
        /// The same expressions alone, each with its column's type.
        values: Vec<(String, String)>,
        /// The positions of the columns read back for the after image.
        changed: Vec<usize>,
    },
    Delete,
}

impl Change {
    /// The SQLite statement that changes the rows of `info` matching
    /// `bound`, and how its count reads in an error.
    ///
    /// An update runs `OR ROLLBACK` unless the table declares conflict
    /// clauses of its own or has triggers (SQLite applies the statement's
    /// `OR` to every statement of a trigger, and over the conflict clauses
    /// of the tables they write): a constraint it breaks then ends the
    /// chunk's transaction, as the step's error would anyway, and SQLite
    /// keeps no statement journal, a copy of every page the statement
    /// changes made so that a failing statement could be undone alone
    /// inside the transaction (about a quarter of a bare `UPDATE`'s time).
    fn sqlite_statement(&self, plan: &RowsPlan<'_>, bound: &str) -> (String, &'static str) {
        let table = &plan.info.quoted;
        let or_rollback = !plan.info.conflict_clauses && !plan.triggers;
        match self {
            Change::Update { sets, .. } => (
                format!(
                    "UPDATE {}{table} SET {sets} WHERE {bound}",
                    if or_rollback { "OR ROLLBACK " } else { "" }
                ),
                "the update changed",
            ),
            Change::Delete => (
                format!("DELETE FROM {table} WHERE {bound}"),
                "the delete removed",
            ),
        }
    }
}

/// Changes the picked rows chunk by chunk, each chunk one transaction
/// whose images are recorded before it commits.
async fn change_rows(
    context: &mut Context<'_>,
    plan: &RowsPlan<'_>,
    change: &Change,
    recorder: &mut dyn Recorder,
) -> Result<StepReport> {
    let engine = context.executor.engine();
    let sqlite_keys = engine == Engine::Sqlite && plan.filter.is_some();
    // SQLite's preupdate hook hands over each row's images as the statement
    // changes it, unless a trigger may change what the statement wrote or
    // the table has columns the hook counts that the images do not hold
    // (generated ones).
    let hooked = engine == Engine::Sqlite
        && !plan.triggers
        && !context.sqlite_hidden_columns(plan.step, plan.info).await?;
    plan.refuse_null_keys(context).await?;
    if sqlite_keys {
        plan.create_sqlite_keys(context).await?;
    }
    let mut report = StepReport::default();
    let mut lower: Option<Vec<SqlValue>> = None;
    let mut overlap_asked = false;
    let result = loop {
        let size = plan.chunk_size();
        if let Err(error) = context.begin(plan.step).await {
            break Err(error);
        }
        // From the moment the chunk holds the write lock: a wait for
        // another writer inside `BEGIN` is not this chunk's pace.
        let started = std::time::Instant::now();
        let chunk = match engine {
            Engine::Sqlite if hooked => {
                sqlite_hooked_chunk(context, plan, change, lower.as_deref())
                    .await
                    .map(|chunk| chunk.map(Chunk::Packed))
            }
            Engine::Sqlite => sqlite_chunk(context, plan, change, lower.as_deref())
                .await
                .map(|chunk| chunk.map(Chunk::Packed)),
            Engine::Postgres => pg_chunk(context, plan, change, lower.as_deref())
                .await
                .map(|images| (!images.is_empty()).then_some(Chunk::Images(images))),
        };
        let chunk = match chunk {
            Ok(None) => {
                context.rollback().await;
                break Ok(report);
            }
            Ok(Some(chunk)) => chunk,
            Err(error) => {
                context.rollback().await;
                break Err(error);
            }
        };
        let mut bytes = 0;
        let (count, last, events) = match chunk {
            Chunk::Packed(chunk) => {
                bytes = chunk.plain;
                let events = packed_events(
                    context.database,
                    plan.info,
                    plan.step,
                    &mut report,
                    chunk.images,
                );
                (chunk.rows, chunk.last, events)
            }
            Chunk::Images(images) => {
                // A full chunk: there may be more, which a second connection
                // can overlap (asked once per step, so that a step of one
                // chunk never connects again).
                if images.len() == plan.chunk_size() && !overlap_asked {
                    overlap_asked = true;
                    let sibling = match overlap_sibling(context, plan, change).await {
                        Ok(sibling) => sibling,
                        Err(error) => {
                            context.rollback().await;
                            break Err(error);
                        }
                    };
                    if let Some(mut sibling) = sibling {
                        let database = context.database;
                        let chunk_time = context.chunk_time;
                        let first = Context {
                            executor: &mut *context.executor,
                            database,
                            chunk_time,
                        };
                        let second = Context {
                            executor: &mut *sibling,
                            database,
                            chunk_time,
                        };
                        return pg_overlapped(
                            first, second, plan, change, recorder, report, images,
                        )
                        .await;
                    }
                }
                let count = images.len();
                let last = images
                    .last()
                    .map(|image| image.key.clone())
                    .unwrap_or_default();
                match chunk_events(context.database, plan.info, plan.step, &mut report, images) {
                    Ok(events) => (count, last, events),
                    Err(error) => {
                        context.rollback().await;
                        break Err(error);
                    }
                }
            }
        };
        lower = Some(last);
        report.events += events.len() as u64;
        if let Err(error) = context
            .record_then_commit(plan.step, &plan.info.name, events, recorder)
            .await
        {
            break Err(error);
        }
        report.rows += count as u64;
        report.chunks += 1;
        if count < size {
            break Ok(report);
        }
        if let Some(time) = plan.chunk_time {
            plan.chunk_size
                .set(next_chunk_size(size, started.elapsed(), time, bytes));
        }
    };
    if sqlite_keys {
        plan.drop_sqlite_keys(context).await;
    }
    result
}

/// The images of deleted rows.
fn deleted_images(plan: &RowsPlan<'_>, before: Vec<Vec<SqlValue>>) -> Vec<RowImage> {
    before
        .into_iter()
        .map(|row| RowImage {
            key: key_of(&row, &plan.key_positions),
            before: Some(row),
            after: None,
        })
        .collect()
}

/// A SQLite chunk, its images packed as they were read, in events of at
/// most [`ROWS_PER_EVENT`] rows each.
struct SqliteChunk {
    rows: usize,
    /// The key of its last row, after which the next chunk starts.
    last: Vec<SqlValue>,
    /// Each event's row count and sealed images.
    images: Vec<(usize, Bytes)>,
    /// The bytes of its images before they were sealed: what the chunk
    /// held in memory while it was read.
    plain: usize,
}

/// Each event's row count and images, sealed one by one as `packers`
/// gives them, and the bytes of all of them before.
fn sealed(packers: impl IntoIterator<Item = Packer>) -> (Vec<(usize, Bytes)>, usize) {
    let mut sealer = Sealer::new();
    let mut plain = 0;
    let images = packers
        .into_iter()
        .map(|packer| {
            let rows = packer.rows();
            let images = packer.finish();
            plain += images.as_slice().len();
            (rows, sealer.seal(images))
        })
        .collect();
    (images, plain)
}

/// Writes a SQLite chunk's after images from rows of its key and changed
/// columns, which must come in the order the rows were picked; every
/// other column is "the same as before".
struct Afters<'a> {
    packers: &'a mut Vec<Packer>,
    /// The picked rows' keys, packed, row `i` ending at `key_ends[i]`.
    picked_keys: &'a [u8],
    key_ends: &'a [usize],
    key_count: usize,
    changed: &'a [usize],
    width: usize,
    index: usize,
    /// A row came that is not the next one picked (or one too many).
    out_of_order: bool,
    key: Vec<u8>,
}

impl Afters<'_> {
    fn take(&mut self, row: &Row<'_>) -> std::result::Result<(), String> {
        if self.out_of_order || self.index == self.key_ends.len() {
            self.out_of_order = true;
            return Ok(());
        }
        self.key.clear();
        let mut writer = ImageWriter::new(&mut self.key);
        for column in 0..self.key_count {
            row.write(column, &mut writer)?;
        }
        let start = self.index.checked_sub(1).map_or(0, |i| self.key_ends[i]);
        if self.key != self.picked_keys[start..self.key_ends[self.index]] {
            self.out_of_order = true;
            return Ok(());
        }
        let mut after = self.packers[self.index / ROWS_PER_EVENT].after();
        let mut read_columns = self.changed.iter().enumerate().peekable();
        for position in 0..self.width {
            match read_columns.next_if(|&(_, &changed)| changed == position) {
                Some((offset, _)) => row.write(self.key_count + offset, &mut after)?,
                None => after.same(),
            }
        }
        self.index += 1;
        Ok(())
    }
}

/// Changes the next SQLite chunk in the open transaction and packs its
/// images; `None` when no row is left. The chunk's keys are its key range,
/// or (with a `where`, which the statement may stop matching) the keys
/// table filled here. The rows' values go from SQLite's handle straight
/// into the images ([`super::sqlite_raw`]): the before images as the rows
/// are picked, then, after the statement, the key and the changed columns
/// read back in the same order, each key checked against the one picked.
async fn sqlite_chunk(
    context: &mut Context<'_>,
    plan: &RowsPlan<'_>,
    change: &Change,
    lower: Option<&[SqlValue]>,
) -> Result<Option<SqliteChunk>> {
    let step = plan.step;
    let table = plan.table();
    let keys = &plan.keys;
    let limit = plan.chunk_size();
    let (lower_sql, lower_binds) = plan.lower(Engine::Sqlite, lower);
    let all = plan.sqlite_select(0..plan.info.columns.len());
    // Where the chunk's rows are read again, in key order, and the
    // condition that matches exactly them (with its binds once the chunk's
    // last key is known).
    let (pick, pick_binds, keyed) = match plan.filter {
        None => (
            format!(
                "SELECT {all} FROM {table} WHERE TRUE{lower_sql} ORDER BY {keys} LIMIT {limit}"
            ),
            lower_binds.clone(),
            None,
        ),
        Some(filter) => {
            plan.pick_sqlite_keys(context, filter, &lower_sql, &lower_binds)
                .await?;
            let join = plan
                .info
                .key
                .iter()
                .enumerate()
                .map(|(i, name)| format!("{table}.{} = _rw_k.k{i}", quote_ident(name)))
                .collect::<Vec<_>>()
                .join(" AND ");
            // CROSS JOIN keeps the key table outside, read in the order it was filled.
            let source =
                format!("{SQLITE_KEYS} AS _rw_k CROSS JOIN {table} ON {join} ORDER BY _rw_k.rowid");
            (
                format!("SELECT {all} FROM {source}"),
                Vec::new(),
                Some((plan.in_sqlite_keys(), source)),
            )
        }
    };
    let database = context.database.to_owned();
    let failed = |failed: Failed| raw_failed(&database, step, failed);
    let Some(executor) = context.executor.as_sqlite() else {
        unreachable!("a SQLite chunk runs on a SQLite executor")
    };
    let key_positions = &plan.key_positions;
    let width = plan.info.columns.len();
    executor
        .with_handle(|handle| {
            // The before images; each row's key, packed, in `picked_keys`.
            let mut packers: Vec<Packer> = Vec::new();
            let mut picked_keys = Vec::new();
            let mut key_ends = Vec::new();
            let flags = match change {
                Change::Update { .. } => BEFORE | AFTER,
                Change::Delete => BEFORE,
            };
            let rows = handle
                .run(&pick, &pick_binds, |row| {
                    if key_ends.len() % ROWS_PER_EVENT == 0 {
                        packers.push(Packer::new());
                    }
                    let packer = packers.last_mut().expect("a packer");
                    packer.row(flags);
                    let mut before = packer.before();
                    for column in 0..width {
                        row.write(column, &mut before)?;
                    }
                    let mut key = ImageWriter::new(&mut picked_keys);
                    for &position in key_positions {
                        row.write(position, &mut key)?;
                    }
                    key_ends.push(picked_keys.len());
                    Ok(())
                })
                .map_err(failed)? as usize;
            if rows == 0 {
                return Ok(None);
            }
            let last_start = rows.checked_sub(2).map_or(0, |i| key_ends[i]);
            let last = read_values(&picked_keys[last_start..])
                .map_err(|problem| concurrent(plan.info, step, problem))?;
            let (bound, binds, source) = match &keyed {
                None => {
                    let bound = format!(
                        "TRUE{lower_sql} AND ({keys}) <= ({})",
                        key_placeholders(Engine::Sqlite, plan.info, lower_binds.len() + 1)
                    );
                    let mut binds = lower_binds.clone();
                    binds.extend(last.iter().cloned().map(Bind::Value));
                    let source = format!("{table} WHERE {bound} ORDER BY {keys}");
                    (bound, binds, source)
                }
                Some((bound, source)) => (bound.clone(), Vec::new(), source.clone()),
            };
            let (statement, done) = change.sqlite_statement(plan, &bound);
            let count = handle.run(&statement, &binds, |_| Ok(())).map_err(failed)?;
            if count != rows as u64 {
                return Err(concurrent(
                    plan.info,
                    step,
                    format!("captured {rows} rows but {done} {count}"),
                ));
            }
            let Change::Update { changed, .. } = change else {
                let (images, plain) = sealed(packers);
                return Ok(Some(SqliteChunk {
                    rows,
                    last,
                    images,
                    plain,
                }));
            };
            let mut afters = Afters {
                packers: &mut packers,
                picked_keys: &picked_keys,
                key_ends: &key_ends,
                key_count: key_positions.len(),
                changed,
                width,
                index: 0,
                out_of_order: false,
                key: Vec::new(),
            };
            // The after images, read back in key order. (`RETURNING` costs
            // SQLite more than this second read, and gives no order.)
            let read = format!(
                "SELECT {} FROM {source}",
                plan.sqlite_select(key_positions.iter().chain(changed).copied())
            );
            let read_back = handle
                .run(&read, &binds, |row| afters.take(row))
                .map_err(failed)?;
            if afters.out_of_order || read_back != rows as u64 {
                return Err(concurrent(
                    plan.info,
                    step,
                    format!(
                        "captured {rows} rows but read back {read_back} other or \
                         differently keyed rows after the update"
                    ),
                ));
            }
            let (images, plain) = sealed(packers);
            Ok(Some(SqliteChunk {
                rows,
                last,
                images,
                plain,
            }))
        })
        .await
        .map_err(|error| context_error(&database, step, error))?
}

/// Changes the next SQLite chunk in the open transaction, its images
/// written by SQLite's preupdate hook as the statement changes each row
/// ([`Changes`]): no read of the rows before or after. The chunk is the
/// keys up to the `chunk_size`-th after `lower` (found in the key index
/// alone), or, with a `where`, the keys picked into the keys table; the
/// statement must change exactly those rows and nothing else.
async fn sqlite_hooked_chunk(
    context: &mut Context<'_>,
    plan: &RowsPlan<'_>,
    change: &Change,
    lower: Option<&[SqlValue]>,
) -> Result<Option<SqliteChunk>> {
    let step = plan.step;
    let table = plan.table();
    let keys = &plan.keys;
    let limit = plan.chunk_size();
    let (lower_sql, lower_binds) = plan.lower(Engine::Sqlite, lower);
    let key_columns = key_slots(plan.info.key.len());
    let picked = match plan.filter {
        None => None,
        Some(filter) => {
            let picked = plan
                .pick_sqlite_keys(context, filter, &lower_sql, &lower_binds)
                .await?;
            if picked == 0 {
                return Ok(None);
            }
            Some(picked)
        }
    };
    let database = context.database.to_owned();
    let failed = |failed: Failed| raw_failed(&database, step, failed);
    let Some(executor) = context.executor.as_sqlite() else {
        unreachable!("a SQLite chunk runs on a SQLite executor")
    };
    let (op, changed) = match change {
        Change::Update { changed, .. } => (Op::Update, changed.as_slice()),
        Change::Delete => (Op::Delete, &[][..]),
    };
    executor
        .with_handle(|handle| {
            // The chunk's condition, its last key, and how many rows it
            // holds (the statement must change every one: a row an `ON
            // CONFLICT IGNORE` clause skips would end the step early).
            let (bound, binds, last, expected) = match picked {
                None => {
                    let upper = handle
                        .first_row(
                            &format!(
                                "SELECT {keys} FROM {table} WHERE TRUE{lower_sql} \
                                 ORDER BY {keys} LIMIT 1 OFFSET {}",
                                limit - 1
                            ),
                            &lower_binds,
                        )
                        .map_err(failed)?;
                    match upper {
                        Some(upper) => {
                            let bound = format!(
                                "TRUE{lower_sql} AND ({keys}) <= ({})",
                                key_placeholders(Engine::Sqlite, plan.info, lower_binds.len() + 1)
                            );
                            let mut binds = lower_binds.clone();
                            binds.extend(upper.iter().cloned().map(Bind::Value));
                            (bound, binds, upper, limit as u64)
                        }
                        // Fewer than a chunk's rows are left: all of them.
                        None => {
                            let left = handle
                                .first_row(
                                    &format!("SELECT count(*) FROM {table} WHERE TRUE{lower_sql}"),
                                    &lower_binds,
                                )
                                .map_err(failed)?;
                            let left = match left.as_deref() {
                                Some([SqlValue::Integer(left)]) => *left as u64,
                                other => {
                                    return Err(concurrent(
                                        plan.info,
                                        step,
                                        format!("cannot count the rows left: {other:?}"),
                                    ));
                                }
                            };
                            (format!("TRUE{lower_sql}"), lower_binds.clone(), Vec::new(), left)
                        }
                    }
                }
                Some(_) => {
                    let last = handle
                        .first_row(
                            &format!(
                                "SELECT {key_columns} FROM {SQLITE_KEYS} ORDER BY rowid DESC LIMIT 1"
                            ),
                            &[],
                        )
                        .map_err(failed)?
                        .unwrap_or_default();
                    (
                        plan.in_sqlite_keys(),
                        Vec::new(),
                        last,
                        picked.unwrap_or_default(),
                    )
                }
            };
            let (statement, done) = change.sqlite_statement(plan, &bound);
            // Each event's images are sealed on a thread of their own as
            // soon as the hook has filled them, while the statement goes
            // on changing rows.
            let (full, to_seal) = std::sync::mpsc::channel::<Packer>();
            let no_sealer = |problem: String| DbError::Runtime {
                message: format!("sealing the row images of {}: {problem}", plan.info.name),
            };
            let (count, rows, problem, images) = std::thread::scope(|scope| {
                // No thread, no statement: nothing has changed yet.
                let sealing = std::thread::Builder::new()
                    .name("rewind-seal".into())
                    .spawn_scoped(scope, move || sealed(to_seal))
                    .map_err(|error| no_sealer(format!("no thread: {error}")))?;
                let mut changes = Changes {
                    table: &plan.info.name,
                    op,
                    width: plan.info.columns.len(),
                    changed,
                    rowid_first: plan.info.columns[0].name == "rowid"
                        && plan.info.columns[0].sql_type == "ROWID",
                    packer: Packer::new(),
                    full,
                    rows: 0,
                    problem: None,
                };
                let count = handle.run_capturing(&statement, &binds, &mut changes);
                let (rows, problem) = changes.finish();
                // A sealer that panicked fails the chunk, which then rolls back.
                let images = sealing
                    .join()
                    .map_err(|_| no_sealer("its thread panicked".to_owned()))?;
                Ok::<_, DbError>((count, rows, problem, images))
            })?;
            let count = count.map_err(failed)?;
            match problem {
                Some(Problem::Changed(problem)) => {
                    return Err(concurrent(plan.info, step, problem));
                }
                Some(Problem::Failed(problem)) => {
                    return Err(DbError::Runtime {
                        message: format!(
                            "capturing the rows of {} in step {step}: {problem}",
                            plan.info.name
                        ),
                    });
                }
                Some(Problem::NotUtf8 { column }) => {
                    return Err(DbError::NotUtf8 {
                        step,
                        table: plan.info.name.clone(),
                        column: plan.info.columns[column].name.clone(),
                    });
                }
                None => {}
            }
            if count != rows as u64 {
                return Err(concurrent(
                    plan.info,
                    step,
                    format!("captured {rows} rows but {done} {count}"),
                ));
            }
            if count != expected {
                return Err(concurrent(
                    plan.info,
                    step,
                    format!(
                        "the chunk holds {expected} rows but {done} {count} \
                         (a row skipped by an ON CONFLICT IGNORE clause?)"
                    ),
                ));
            }
            if count == 0 {
                return Ok(None);
            }
            let (images, plain) = images;
            Ok(Some(SqliteChunk {
                rows,
                last,
                images,
                plain,
            }))
        })
        .await
        .map_err(|error| context_error(&database, step, error))?
}

/// A chunk's packed images as `RowsPacked` events, numbered on from the
/// step's previous events.
fn packed_events(
    database: &str,
    info: &TableInfo,
    step: u32,
    report: &mut StepReport,
    images: Vec<(usize, Bytes)>,
) -> Vec<Event> {
    images
        .into_iter()
        .map(|(rows, images)| {
            let event = Event::RowsPacked(RowsPacked {
                chunk: report.row_events,
                columns: info.columns.clone(),
                database: database.to_owned(),
                rows: u32::try_from(rows).expect("at most ROWS_PER_EVENT rows"),
                images,
                key_columns: info.key.clone(),
                step,
                table: info.name.clone(),
            });
            report.row_events += 1;
            event
        })
        .collect()
}

/// A statement run on SQLite's handle that failed.
pub(crate) fn raw_failed(database: &str, step: u32, failed: Failed) -> DbError {
    DbError::Statement {
        step,
        database: database.to_owned(),
        statement: failed.statement,
        message: failed.message,
    }
}

/// The error of a connection whose handle could not be had.
pub(crate) fn context_error(database: &str, step: u32, error: sqlx::Error) -> DbError {
    DbError::Statement {
        step,
        database: database.to_owned(),
        statement: "lock the connection".to_owned(),
        message: error.to_string(),
    }
}

async fn pg_chunk(
    context: &mut Context<'_>,
    plan: &RowsPlan<'_>,
    change: &Change,
    lower: Option<&[SqlValue]>,
) -> Result<Vec<RowImage>> {
    let (lower_sql, lower_binds) = plan.lower(Engine::Postgres, lower);
    let (sql, width) = pg_chunk_sql(plan, change, &lower_sql);
    let rows = context.fetch(plan.step, &sql, &lower_binds).await?;
    pg_chunk_images(context, plan, change, &sql, &rows, width)
}

/// The one statement that locks a PostgreSQL chunk's rows in key order,
/// changes them and returns their packed images, and how many fields each
/// packed record has.
fn pg_chunk_sql(plan: &RowsPlan<'_>, change: &Change, lower_sql: &str) -> (String, usize) {
    let table = plan.table();
    let column_count = plan.info.columns.len();
    let (statement, width) = match change {
        Change::Update { sets, changed, .. } => {
            let returning = (0..plan.info.key.len())
                .map(|i| format!("_rw_old._rw_k{i}"))
                .chain((0..column_count).map(|i| format!("_rw_old._rw_b{i}")))
                .chain(changed.iter().enumerate().map(|(offset, &position)| {
                    let name = quote_ident(&plan.info.columns[position].name);
                    format!("{table}.{name}::text AS _rw_a{offset}")
                }))
                .collect::<Vec<_>>()
                .join(", ");
            (
                format!(
                    "UPDATE {table} SET {sets} FROM _rw_old WHERE {}{lower_sql} RETURNING {returning}",
                    plan.pg_join()
                ),
                column_count + changed.len(),
            )
        }
        Change::Delete => (
            format!(
                "DELETE FROM {table} USING _rw_old WHERE {}{lower_sql} RETURNING _rw_old.*",
                plan.pg_join()
            ),
            column_count,
        ),
    };
    let fields: Vec<String> = (0..column_count)
        .map(|i| format!("_rw_b{i}"))
        .chain((column_count..width).map(|i| format!("_rw_a{}", i - column_count)))
        .collect();
    let sql = format!(
        "WITH {}, _rw_changed AS ({statement}) {}",
        plan.pg_old(lower_sql),
        pg_packed_select(plan.info, &fields, "_rw_changed"),
    );
    (sql, width)
}

/// The images of a chunk from the rows its statement returned.
fn pg_chunk_images(
    context: &Context<'_>,
    plan: &RowsPlan<'_>,
    change: &Change,
    sql: &str,
    rows: &[Vec<SqlValue>],
    width: usize,
) -> Result<Vec<RowImage>> {
    let records = pg_unpack(context, plan.step, sql, rows, width)?;
    let Change::Update { changed, .. } = change else {
        return Ok(deleted_images(plan, records));
    };
    let column_count = plan.info.columns.len();
    Ok(records
        .into_iter()
        .map(|mut record| {
            let changed_values = record.split_off(column_count);
            update_image(plan, record, changed, changed_values)
        })
        .collect())
}

/// Whether a PostgreSQL step's chunks may overlap (see
/// [`pg_overlapped`]): the next chunk's statement runs before this chunk
/// commits and does not see its changes, so nothing the step runs may read
/// rows of the table or meet this chunk's locks. Only a plain table
/// ([`PLAIN_TABLE`]) with no trigger or rule (its partitions' counting
/// too), and nothing in `set` or `where` that is not immutable
/// ([`calls_only_immutable`]).
async fn may_overlap(
    context: &mut Context<'_>,
    plan: &RowsPlan<'_>,
    change: &Change,
) -> Result<bool> {
    if context.executor.engine() != Engine::Postgres || plan.triggers {
        return Ok(false);
    }
    let plain = context
        .fetch(
            plan.step,
            PLAIN_TABLE,
            &[Bind::Value(SqlValue::Text(plan.info.quoted.clone()))],
        )
        .await?;
    if !matches!(
        plain.first().map(Vec::as_slice),
        Some([SqlValue::Integer(0)])
    ) {
        return Ok(false);
    }
    calls_only_immutable(context, plan, change).await
}

/// 0 for a table whose chunks may overlap, counting what forbids it:
/// - a view, partitions or inheritance children, row-level security, a
///   temporary table (each statement would run more than it shows);
/// - CHECK constraints and columns of a domain type (checks an index
///   probe does not judge);
/// - a foreign key to itself (the next chunk's check would not see this
///   chunk's new keys), a deferrable constraint (this chunk's check at its
///   commit could wait for the next chunk's locks, whose transaction waits
///   for that commit);
/// - a transaction that is not read committed (a stricter one fails on the
///   other chunk's rows), a lock or statement timeout (the next chunk may
///   wait for this one's row locks, a wait one chunk after the other never
///   has);
/// - temporary objects of the session, which a second connection would not
///   see.
const PLAIN_TABLE: &str = "SELECT \
      CASE WHEN c.relkind = 'r' AND NOT c.relrowsecurity AND c.relpersistence <> 't' \
        THEN 0 ELSE 1 END \
    + (SELECT count(*) FROM pg_inherits WHERE inhparent = c.oid) \
    + (SELECT count(*) FROM pg_constraint WHERE conrelid = c.oid AND contype = 'c') \
    + (SELECT count(*) FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid \
       WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND ty.typtype = 'd') \
    + (SELECT count(*) FROM pg_constraint \
       WHERE conrelid = c.oid AND confrelid = c.oid AND contype = 'f') \
    + (SELECT count(*) FROM pg_constraint \
       WHERE condeferrable AND (conrelid = c.oid OR confrelid = c.oid)) \
    + CASE WHEN current_setting('transaction_isolation') = 'read committed' THEN 0 ELSE 1 END \
    + CASE WHEN current_setting('lock_timeout') = '0' \
        AND current_setting('statement_timeout') = '0' THEN 0 ELSE 1 END \
    + (SELECT count(*) FROM pg_class x WHERE x.relnamespace = pg_my_temp_schema()) \
    + (SELECT count(*) FROM pg_proc x WHERE x.pronamespace = pg_my_temp_schema()) \
    + (SELECT count(*) FROM pg_type x WHERE x.typnamespace = pg_my_temp_schema()) \
    FROM pg_class c WHERE c.oid = to_regclass($1)";

/// Whether everything the step's `set` and `where` call is immutable: only
/// an immutable function promises not to read tables, and one that reads
/// the table would see it without the chunks before. PostgreSQL itself
/// judges, inside a savepoint rolled back at once. Each expression, cast
/// to its column's type (an assignment cast calls a function too), and the
/// `where` go into indexes of an empty copy of the table, which it refuses
/// when they call anything that is not immutable, built-in or not,
/// directly or through an operator, or hold a subquery. A view of the same
/// expressions names the domains they use, whose checks an index does not
/// judge. Anything PostgreSQL will not make counts as calling something
/// else.
async fn calls_only_immutable(
    context: &mut Context<'_>,
    plan: &RowsPlan<'_>,
    change: &Change,
) -> Result<bool> {
    let step = plan.step;
    let table = plan.table();
    let values: &[(String, String)] = match change {
        Change::Update { values, .. } => values,
        Change::Delete => &[],
    };
    let mut probe = format!("CREATE TEMP TABLE _rw_probe (LIKE {table}); ");
    for (expression, sql_type) in values {
        // `IS NULL`: a boolean, which every type's value gives, indexable
        // whether or not the type has a btree operator class (json).
        probe.push_str(&format!(
            "CREATE INDEX ON pg_temp._rw_probe (((({expression})::{sql_type}) IS NULL)); "
        ));
    }
    if let Some(filter) = plan.filter {
        probe.push_str(&format!(
            "CREATE INDEX ON pg_temp._rw_probe ((1)) WHERE ({filter}); "
        ));
    }
    let listed = values
        .iter()
        .enumerate()
        .map(|(i, (expression, sql_type))| format!("(({expression})::{sql_type}) AS v{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    probe.push_str(&format!(
        "CREATE TEMP VIEW _rw_probe_v AS SELECT {} FROM {table} WHERE ({})",
        if listed.is_empty() { "1" } else { &listed },
        plan.filter.unwrap_or("TRUE")
    ));
    context.script(step, "SAVEPOINT _rw_probe").await?;
    let domains = match context.executor.script(&probe).await {
        Ok(()) => {
            context
                .fetch(
                    step,
                    "SELECT count(*) FROM pg_depend d \
                     JOIN pg_rewrite r ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid \
                     JOIN pg_type ty ON d.refclassid = 'pg_type'::regclass AND ty.oid = d.refobjid \
                     WHERE r.ev_class = 'pg_temp._rw_probe_v'::regclass AND ty.typtype = 'd'",
                    &[],
                )
                .await
        }
        Err(_) => Ok(Vec::new()),
    };
    context
        .script(
            step,
            "ROLLBACK TO SAVEPOINT _rw_probe; RELEASE SAVEPOINT _rw_probe",
        )
        .await?;
    Ok(matches!(
        domains?.first().map(Vec::as_slice),
        Some([SqlValue::Integer(0)])
    ))
}

/// A second connection for [`pg_overlapped`], when the step may overlap
/// ([`may_overlap`]) and one can be had whose session matches this one's:
/// without it (the server's connection limit, say), or when this session's
/// settings differ from a fresh one's (a `sql` step's `SET search_path`,
/// say), the chunks run one after the other.
async fn overlap_sibling(
    context: &mut Context<'_>,
    plan: &RowsPlan<'_>,
    change: &Change,
) -> Result<Option<Box<dyn Executor>>> {
    if !may_overlap(context, plan, change).await? {
        return Ok(None);
    }
    let Some(connecting) = context.executor.sibling() else {
        return Ok(None);
    };
    let Ok(mut sibling) = connecting.await else {
        return Ok(None);
    };
    let here = context.fetch(plan.step, SESSION_STATE, &[]).await?;
    let same = sibling
        .fetch(SESSION_STATE, &[])
        .await
        .is_ok_and(|there| there == here);
    Ok(same.then_some(sibling))
}

/// What a second connection must share for its statements to mean the
/// same: the user and role (`SET ROLE` shows in no setting), the schemas
/// names resolve in, and every setting whatever set it (a `sql` step's
/// `SET`, or an `ALTER DATABASE … SET` that only a new connection gets).
const SESSION_STATE: &str = "SELECT current_user || E'\\n' || session_user || E'\\n' \
     || current_schemas(true)::text || E'\\n' \
     || string_agg(name || '=' || setting, E'\\n' ORDER BY name) FROM pg_settings";

/// ` AND (keys) > (E'v'::type, …)`: [`RowsPlan::lower`] with the values
/// written into the statement as escape-string literals, `\` and `'`
/// doubled, which read the same whatever `standard_conforming_strings`
/// says; for a statement sent in one message without binds. `None` for a
/// value that PostgreSQL's text images never hold.
fn pg_lower_literal(info: &TableInfo, lower: &[SqlValue]) -> Option<String> {
    let literals = info
        .key
        .iter()
        .zip(lower)
        .map(|(name, value)| match value {
            SqlValue::Typed(text) | SqlValue::Text(text) => Some(format!(
                "E'{}'::{}",
                text.replace('\\', "\\\\").replace('\'', "''"),
                info.sql_type(name)
            )),
            SqlValue::Null => Some(format!("NULL::{}", info.sql_type(name))),
            SqlValue::Integer(_) | SqlValue::Real(_) | SqlValue::Blob(_) => None,
        })
        .collect::<Option<Vec<_>>>()?;
    Some(format!(
        " AND ({}) > ({})",
        info.key_list(""),
        literals.join(", ")
    ))
}

/// PostgreSQL chunks on two connections, overlapped: once a chunk's
/// statement has returned its images, the next chunk's statement is sent
/// on the other connection, in a transaction of its own, and runs on the
/// server while this chunk's images are recorded and its transaction
/// commits. The order of the ledger is kept: a chunk's images are recorded
/// only after the chunk before it committed, so, as without overlap, only
/// the newest recorded chunk can be uncommitted after a crash, and a
/// failing chunk leaves the ones before it committed.
async fn pg_overlapped<'c>(
    mut first: Context<'c>,
    mut second: Context<'c>,
    plan: &RowsPlan<'_>,
    change: &Change,
    recorder: &mut dyn Recorder,
    mut report: StepReport,
    mut images: Vec<RowImage>,
) -> Result<StepReport> {
    let step = plan.step;
    // Both connections' statements are made for one chunk size.
    debug_assert!(
        plan.chunk_time.is_none(),
        "PostgreSQL chunks are never timed"
    );
    report.overlapped = true;
    let mut contexts = [&mut first, &mut second];
    // Which connection holds the open transaction of `images`.
    let mut now = 0;
    loop {
        let [a, b] = &mut contexts;
        let (this, other) = if now == 0 { (a, b) } else { (b, a) };
        if images.is_empty() {
            this.rollback().await;
            return Ok(report);
        }
        let count = images.len();
        let lower = images
            .last()
            .map(|image| image.key.clone())
            .unwrap_or_default();
        let next = (count == plan.chunk_size())
            .then(|| pg_lower_literal(plan.info, &lower))
            .flatten()
            .map(|lower_sql| {
                let (sql, width) = pg_chunk_sql(plan, change, &lower_sql);
                (format!("BEGIN; {sql}"), width)
            });
        let events = match chunk_events(this.database, plan.info, step, &mut report, images) {
            Ok(events) => events,
            Err(error) => {
                this.rollback().await;
                return Err(error);
            }
        };
        report.events += events.len() as u64;
        let Some((next_sql, width)) = next else {
            // The last chunk, or one whose key cannot be written as a
            // literal: recorded and committed, then on without overlap.
            this.record_then_commit(step, &plan.info.name, events, recorder)
                .await?;
            report.rows += count as u64;
            report.chunks += 1;
            if count < plan.chunk_size() {
                return Ok(report);
            }
            this.begin(step).await?;
            images = match pg_chunk(this, plan, change, Some(&lower)).await {
                Ok(images) => images,
                Err(error) => {
                    this.rollback().await;
                    return Err(error);
                }
            };
            continue;
        };
        let (recorded, rows) = {
            let mut pending = other
                .executor
                .fetch_sent(&next_sql)
                .expect("a PostgreSQL connection sends a statement in one message");
            // One poll sends it; the server runs it while this chunk is recorded.
            let early = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(match pending.as_mut().poll(cx) {
                    std::task::Poll::Ready(rows) => Some(rows),
                    std::task::Poll::Pending => None,
                })
            })
            .await;
            let recorded = this
                .record_then_commit(step, &plan.info.name, events, recorder)
                .await;
            let rows = match early {
                Some(rows) => rows,
                None => pending.await,
            };
            (recorded, rows)
        };
        if let Err(error) = recorded {
            other.rollback().await;
            return Err(error);
        }
        report.rows += count as u64;
        report.chunks += 1;
        let next_images = rows
            .map_err(|error| other.statement_error(step, &next_sql, error))
            .and_then(|rows| pg_chunk_images(other, plan, change, &next_sql, &rows, width));
        images = match next_images {
            Ok(images) => images,
            Err(error) => {
                other.rollback().await;
                return Err(error);
            }
        };
        now = 1 - now;
    }
}

pub(crate) async fn insert(
    context: &mut Context<'_>,
    operation: &Insert,
    recorder: &mut dyn Recorder,
) -> Result<StepReport> {
    let step = operation.step;
    // An insert's chunks are never timed: their rows are split up front.
    let chunk_size = context.chunking(step, operation.chunk_size)?.first;
    let info = context
        .insert_table(step, &operation.table, operation.key.as_deref())
        .await?;
    let engine = context.executor.engine();
    let table = &info.quoted;
    let column_count = info.columns.len();
    let key_positions = info.key_positions();
    let check_columns = |names: &[String]| -> Result<()> {
        for name in names {
            if !info.columns.iter().any(|column| &column.name == name) {
                return Err(DbError::UnknownColumn {
                    table: info.name.clone(),
                    column: name.clone(),
                });
            }
        }
        Ok(())
    };
    let mut dropped_source: Option<&str> = None;
    // Each batch is the SQL that inserts it plus its binds.
    let batches: Vec<(String, Vec<Bind>)> = match &operation.source {
        InsertSource::Select(select) => {
            let select = select.trim().trim_end_matches(';');
            let names = match context.executor.column_names(select).await {
                Ok(names) => names,
                Err(error) => return Err(context.statement_error(step, select, error)),
            };
            check_columns(&names)?;
            let target = names
                .iter()
                .map(|name| quote_ident(name))
                .collect::<Vec<_>>()
                .join(", ");
            // The select runs once, into a temporary table numbered by row,
            // so that each chunk is its own transaction over a fixed source.
            let source = match engine {
                Engine::Sqlite => "temp._rw_source",
                Engine::Postgres => "pg_temp._rw_source",
            };
            context
                .script(step, &format!("DROP TABLE IF EXISTS {source}"))
                .await?;
            context
                .script(
                    step,
                    &format!(
                        "CREATE TEMP TABLE _rw_source AS SELECT row_number() OVER () AS _rw_n, _rw_s.* FROM ({select}) AS _rw_s"
                    ),
                )
                .await?;
            dropped_source = Some(source);
            let count = match context
                .fetch(step, &format!("SELECT count(*) FROM {source}"), &[])
                .await
            {
                Ok(rows) => match rows.first().and_then(|row| row.first()) {
                    Some(SqlValue::Integer(count)) => *count as usize,
                    _ => 0,
                },
                Err(error) => {
                    let _ = context
                        .script(step, &format!("DROP TABLE IF EXISTS {source}"))
                        .await;
                    return Err(error);
                }
            };
            (0..count)
                .step_by(chunk_size)
                .map(|low| {
                    let high = low + chunk_size;
                    (
                        format!(
                            "INSERT INTO {table} ({target}) SELECT {target} FROM {source} \
                             WHERE _rw_n > {low} AND _rw_n <= {high} ORDER BY _rw_n"
                        ),
                        Vec::new(),
                    )
                })
                .collect()
        }
        InsertSource::Rows(rows) => {
            let Some(first) = rows.first() else {
                return Ok(StepReport::default());
            };
            let names: Vec<String> = first.keys().cloned().collect();
            check_columns(&names)?;
            if let Some(index) = rows.iter().position(|row| row.keys().ne(first.keys())) {
                return Err(DbError::InvalidStep {
                    step,
                    problem: format!(
                        "row {index} of the insert into {} names other columns than row 0",
                        info.name
                    ),
                });
            }
            let target = names
                .iter()
                .map(|name| quote_ident(name))
                .collect::<Vec<_>>()
                .join(", ");
            // Keep each statement within the engines' limits on bound values.
            let rows_per_statement = chunk_size.min((30_000 / names.len().max(1)).max(1));
            rows.chunks(rows_per_statement)
                .map(|chunk| {
                    let mut binds = Vec::new();
                    let mut tuples = Vec::new();
                    for row in chunk {
                        let mut tuple = Vec::new();
                        for (name, value) in row {
                            binds.push(Bind::Value(value.clone()));
                            tuple.push(placeholder(engine, binds.len(), info.sql_type(name)));
                        }
                        tuples.push(format!("({})", tuple.join(", ")));
                    }
                    (
                        format!(
                            "INSERT INTO {table} ({target}) VALUES {}",
                            tuples.join(", ")
                        ),
                        binds,
                    )
                })
                .collect()
        }
    };
    let result = async {
        let mut report = StepReport::default();
        for (insert_sql, binds) in batches {
            let sql = match engine {
                Engine::Sqlite => {
                    // RETURNING hands rows over one by one; an insert's rows
                    // are known only once inserted, so they come back that way.
                    let returning = info
                        .columns
                        .iter()
                        .map(|column| quote_ident(&column.name))
                        .collect::<Vec<_>>()
                        .join(", ");
                    format!("{insert_sql} RETURNING {returning}")
                }
                Engine::Postgres => {
                    let returning = pg_keys_and_texts(&info, "_rw_a");
                    let fields: Vec<String> =
                        (0..column_count).map(|i| format!("_rw_a{i}")).collect();
                    format!(
                        "WITH _rw_new AS ({insert_sql} RETURNING {returning}) {}",
                        pg_packed_select(&info, &fields, "_rw_new")
                    )
                }
            };
            context.begin(step).await?;
            let chunk = async {
                let before_sequences = context.sequences(step, &info).await?;
                let rows = context.fetch(step, &sql, &binds).await?;
                let rows = match engine {
                    Engine::Sqlite => rows,
                    Engine::Postgres => pg_unpack(context, step, &sql, &rows, column_count)?,
                };
                let after_sequences = context.sequences(step, &info).await?;
                Ok((before_sequences, rows, after_sequences))
            }
            .await;
            let (before_sequences, rows, after_sequences) = match chunk {
                Ok(chunk) => chunk,
                Err(error) => {
                    context.rollback().await;
                    return Err(error);
                }
            };
            let mut events =
                sequence_events(context.database, step, &before_sequences, &after_sequences);
            let count = rows.len() as u64;
            let images: Vec<RowImage> = rows
                .into_iter()
                .map(|row| RowImage {
                    key: key_of(&row, &key_positions),
                    before: None,
                    after: Some(row),
                })
                .collect();
            if !images.is_empty() {
                report.chunks += 1;
            }
            match chunk_events(context.database, &info, step, &mut report, images) {
                Ok(chunk) => events.extend(chunk),
                Err(error) => {
                    context.rollback().await;
                    return Err(error);
                }
            }
            let event_count = events.len() as u64;
            context
                .record_then_commit(step, &info.name, events, recorder)
                .await?;
            report.rows += count;
            report.events += event_count;
        }
        Ok(report)
    }
    .await;
    if let Some(source) = dropped_source {
        let _ = context
            .script(step, &format!("DROP TABLE IF EXISTS {source}"))
            .await;
    }
    result
}

pub(crate) async fn schema(
    context: &mut Context<'_>,
    operation: &Schema,
    recorder: &mut dyn Recorder,
) -> Result<()> {
    let step = operation.step;
    if operation.down.is_none() && !operation.irreversible {
        return Err(DbError::MissingDown {
            step,
            kind: operation.kind,
        });
    }
    context.begin(step).await?;
    if let Err(error) = context.script(step, &operation.up).await {
        context.rollback().await;
        return Err(error);
    }
    let event = Event::SchemaChanged(SchemaChanged {
        database: context.database.to_owned(),
        down: operation.down.clone(),
        irreversible: operation.irreversible,
        step,
        up: operation.up.clone(),
    });
    context
        .record_then_commit(step, "", vec![event], recorder)
        .await
}

async fn scalar(context: &mut Context<'_>, step: u32, query: &str) -> Result<String> {
    let query = query.trim().trim_end_matches(';');
    let sql = match context.executor.engine() {
        Engine::Sqlite => format!("SELECT ({query})"),
        Engine::Postgres => format!("SELECT (({query}))::text"),
    };
    let rows = context.fetch(step, &sql, &[]).await?;
    Ok(match rows.first().and_then(|row| row.first()) {
        None | Some(SqlValue::Null) => "NULL".to_owned(),
        Some(value) => value.to_string(),
    })
}

fn at_least(actual: &str, bound: &str) -> bool {
    match (actual.trim().parse::<i128>(), bound.trim().parse::<i128>()) {
        (Ok(actual), Ok(bound)) => actual >= bound,
        _ => match (actual.trim().parse::<f64>(), bound.trim().parse::<f64>()) {
            (Ok(actual), Ok(bound)) => actual >= bound,
            _ => false,
        },
    }
}

pub(crate) async fn verify(
    context: &mut Context<'_>,
    operation: &Verify,
    earlier: &BTreeMap<String, String>,
    recorder: &mut dyn Recorder,
) -> Result<VerifyReport> {
    let step = operation.step;
    let mut report = VerifyReport {
        passed: true,
        recorded: BTreeMap::new(),
        checks: Vec::new(),
    };
    for (name, query) in &operation.record {
        let actual = scalar(context, step, query).await?;
        report.recorded.insert(name.clone(), actual.clone());
        report.checks.push(CheckRecorded {
            actual,
            check: format!("{RECORD_PREFIX}{name}"),
            expected: query.clone(),
            passed: true,
            step,
        });
    }
    for check in &operation.checks {
        let (description, expected, actual, passed) = match &check.expect {
            Expectation::Equals(expected) => {
                let actual = scalar(context, step, &check.query).await?;
                let passed = &actual == expected;
                (
                    format!("{} equals {expected}", check.query),
                    expected.clone(),
                    actual,
                    passed,
                )
            }
            Expectation::EqualsRecorded(name) => {
                let actual = scalar(context, step, &check.query).await?;
                let expected = report
                    .recorded
                    .get(name)
                    .or_else(|| earlier.get(name))
                    .cloned();
                let Some(expected) = expected else {
                    return Err(DbError::InvalidStep {
                        step,
                        problem: format!(
                            "equals_recorded names {name}, which no earlier verify step recorded"
                        ),
                    });
                };
                let passed = actual == expected;
                (
                    format!("{} equals recorded {name}", check.query),
                    expected,
                    actual,
                    passed,
                )
            }
            Expectation::AtLeast(bound) => {
                let actual = scalar(context, step, &check.query).await?;
                let passed = at_least(&actual, bound);
                (
                    format!("{} at least {bound}", check.query),
                    format!(">= {bound}"),
                    actual,
                    passed,
                )
            }
            Expectation::ReturnsNoRows => {
                let query = check.query.trim().trim_end_matches(';');
                let rows = context
                    .fetch(
                        step,
                        &format!("SELECT count(*) FROM ({query}) AS _rw_rows"),
                        &[],
                    )
                    .await?;
                let count = rows
                    .first()
                    .and_then(|row| row.first())
                    .map(ToString::to_string)
                    .unwrap_or_default();
                let passed = count == "0";
                (
                    format!("{query} returns no rows"),
                    "0 rows".to_owned(),
                    format!("{count} rows"),
                    passed,
                )
            }
        };
        report.passed &= passed;
        report.checks.push(CheckRecorded {
            actual,
            check: description,
            expected,
            passed,
            step,
        });
    }
    let events = report
        .checks
        .iter()
        .cloned()
        .map(Event::CheckRecorded)
        .collect();
    recorder.record(events).map_err(|source| DbError::Record {
        step,
        table: String::new(),
        source,
    })?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_timed_chunk_is_as_large_as_its_time_allows_within_its_bounds() {
        let ms = Duration::from_millis;
        let next = |size, took, bytes| next_chunk_size(size, took, ms(100), bytes);
        // 10,000 rows in 50 ms: 20,000 rows take the 100 ms a chunk may.
        assert_eq!(next(10_000, ms(50), 1 << 20), 20_000);
        assert_eq!(next(10_000, ms(100), 1 << 20), 10_000);
        // At most four times, at least a quarter of the last chunk.
        assert_eq!(next(10_000, ms(1), 1 << 20), 40_000);
        assert_eq!(next(10_000, Duration::ZERO, 1 << 20), 40_000);
        assert_eq!(next(10_000, ms(5_000), 1 << 20), 2_500);
        // Never fewer than 1000 rows, nor more than a million.
        assert_eq!(next(2_000, ms(1_000), 1 << 10), 1_000);
        assert_eq!(next(900_000, ms(10), 1 << 20), 1_000_000);
        // Nor more than would make SQLITE_CHUNK_BYTES of images: rows of
        // 1 MiB each, fast as they may be, come 64 a chunk, and at least one.
        assert_eq!(next(1_000, ms(1), 1_000 << 20), 64);
        assert_eq!(next(10, ms(1), 1 << 30), 1);
        // A time of zero makes every chunk as small as it may be, a long
        // one as large.
        assert_eq!(next_chunk_size(10_000, ms(1), Duration::ZERO, 1), 2_500);
        assert_eq!(
            next_chunk_size(10_000, ms(900), Duration::from_secs(3600), 1),
            40_000
        );
    }

    #[test]
    fn a_chunk_counts_its_images_as_read_not_as_sealed() {
        // Two events of rows that seal to far less than they hold.
        let packers = (0..2).map(|_| {
            let mut packer = Packer::new();
            for _ in 0..1000 {
                packer.row(BEFORE);
                packer.before().text(&[b'x'; 100]);
            }
            packer
        });
        let (images, plain) = sealed(packers);
        let rows: Vec<usize> = images.iter().map(|(rows, _)| *rows).collect();
        assert_eq!(rows, [1000, 1000]);
        let sealed_bytes: usize = images.iter().map(|(_, bytes)| bytes.as_slice().len()).sum();
        // A flag and a tagged, sized text of 100 bytes a row.
        assert!(plain > 2 * 1000 * 100, "{plain}");
        assert!(
            sealed_bytes * 10 < plain,
            "{sealed_bytes} sealed of {plain}"
        );
    }

    #[test]
    fn only_a_sqlite_step_without_chunk_size_is_timed() {
        let time = Duration::from_millis(7);
        let chunking = |engine, size| check_chunk_size(1, engine, size, time).unwrap();
        assert_eq!(
            chunking(Engine::Sqlite, None),
            Chunking {
                first: DEFAULT_CHUNK_SIZE,
                time: Some(time)
            }
        );
        for engine in [Engine::Sqlite, Engine::Postgres] {
            assert_eq!(
                chunking(engine, Some(7)),
                Chunking {
                    first: 7,
                    time: None
                }
            );
        }
        assert_eq!(
            chunking(Engine::Postgres, None),
            Chunking {
                first: DEFAULT_CHUNK_SIZE,
                time: None
            }
        );
        assert!(check_chunk_size(1, Engine::Sqlite, Some(0), time).is_err());
    }
}
