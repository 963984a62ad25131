//! The forward operations: `update`, `insert`, `delete`, `ddl`, `sql` and
//! `verify`, each capturing what its inverse and its drift check need.
//!
//! Crash safety: every chunk runs in its own transaction; its images are
//! handed to the [`Recorder`] (which appends them to the ledger and flushes)
//! *before* the transaction commits. If recording fails, the transaction
//! is rolled back, so the database never holds a change the ledger lacks.

use std::collections::{BTreeMap, HashMap};

use rewind_ledger::{
    CheckRecorded, Event, RowImage, RowsChanged, SchemaChanged, SequenceMoved, SqlValue,
};

use super::catalog::{SequenceState, TableInfo, cascades, sequences, table_info};
use super::error::{DbError, Result};
use super::executor::{Bind, Engine, Executor, quote_ident};

/// The default number of rows per transaction and per `RowsChanged` event.
pub const DEFAULT_CHUNK_SIZE: usize = 1000;

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
    pub chunk_size: usize,
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
    pub chunk_size: usize,
}

/// A `delete` step: `DELETE FROM table WHERE where`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    pub step: u32,
    pub table: String,
    pub key: Option<Vec<String>>,
    pub filter: Option<String>,
    pub chunk_size: usize,
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
    pub chunks: u32,
    pub events: u64,
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

    pub async fn execute_many(&mut self, step: u32, sql: &str, rows: &[Vec<Bind>]) -> Result<u64> {
        match self.executor.execute_many(sql, rows).await {
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

    pub async fn table(&mut self, table: &str, key: Option<&[String]>) -> Result<TableInfo> {
        table_info(self.executor, self.database, table, key).await
    }

    /// Refuses a change that a foreign key would cascade into another table.
    async fn refuse_cascades(
        &mut self,
        step: u32,
        table: &TableInfo,
        set: Option<&BTreeMap<String, String>>,
    ) -> Result<()> {
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
                    action: if set.is_none() { "delete" } else { "update" },
                    table: table.name.clone(),
                    referencing: cascade.referencing,
                });
            }
        }
        Ok(())
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

fn engine_text_column(engine: Engine, expression: &str) -> String {
    match engine {
        Engine::Sqlite => expression.to_owned(),
        Engine::Postgres => format!("{expression}::text"),
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

fn check_chunk_size(step: u32, chunk_size: usize) -> Result<usize> {
    if chunk_size == 0 {
        return Err(DbError::InvalidStep {
            step,
            problem: "chunk_size must be at least 1".to_owned(),
        });
    }
    Ok(chunk_size)
}

fn rows_changed(
    database: &str,
    info: &TableInfo,
    step: u32,
    chunk: u32,
    rows: Vec<RowImage>,
) -> Event {
    Event::RowsChanged(RowsChanged {
        chunk,
        columns: info.columns.clone(),
        database: database.to_owned(),
        key_columns: info.key.clone(),
        rows,
        step,
        table: info.name.clone(),
    })
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

/// A hashable rendering of a key, exact for every value kind.
pub(crate) fn key_string(key: &[SqlValue]) -> String {
    format!("{key:?}")
}

pub(crate) async fn update(
    context: &mut Context<'_>,
    operation: &Update,
    recorder: &mut dyn Recorder,
) -> Result<StepReport> {
    let step = operation.step;
    let chunk_size = check_chunk_size(step, operation.chunk_size)?;
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
        .refuse_cascades(step, &info, Some(&operation.set))
        .await?;
    let engine = context.executor.engine();
    let filter = operation.filter.as_deref().unwrap_or("TRUE");
    let table = &info.quoted;
    let keys = info.key_list("");
    let sets = operation
        .set
        .iter()
        .map(|(column, expression)| format!("{} = ({expression})", quote_ident(column)))
        .collect::<Vec<_>>()
        .join(", ");
    let column_count = info.columns.len();
    let key_positions = info.key_positions();
    let mut report = StepReport::default();
    let mut lower: Option<Vec<SqlValue>> = None;
    loop {
        let lower_sql = if lower.is_some() {
            format!(" AND ({keys}) > ({})", key_placeholders(engine, &info, 1))
        } else {
            String::new()
        };
        let lower_binds: Vec<Bind> = lower.iter().flatten().cloned().map(Bind::Value).collect();
        context.begin(step).await?;
        let images = match engine {
            Engine::Postgres => {
                let old_keys = info
                    .key
                    .iter()
                    .enumerate()
                    .map(|(i, name)| format!("{} AS _rw_k{i}", quote_ident(name)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let old_images = info
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, column)| format!("{}::text AS _rw_b{i}", quote_ident(&column.name)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let join = info
                    .key
                    .iter()
                    .enumerate()
                    .map(|(i, name)| format!("{table}.{} = _rw_old._rw_k{i}", quote_ident(name)))
                    .collect::<Vec<_>>()
                    .join(" AND ");
                let returning_keys = (0..info.key.len())
                    .map(|i| format!("_rw_old._rw_k{i}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let returning_before = (0..column_count)
                    .map(|i| format!("_rw_old._rw_b{i}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let returning_after = info
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, column)| {
                        format!("{table}.{}::text AS _rw_a{i}", quote_ident(&column.name))
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let select_keys = (0..info.key.len())
                    .map(|i| format!("_rw_k{i}::text"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let select_images = (0..column_count)
                    .map(|i| format!("_rw_b{i}"))
                    .chain((0..column_count).map(|i| format!("_rw_a{i}")))
                    .collect::<Vec<_>>()
                    .join(", ");
                // Qualified, so that it names the typed key and not the
                // text column of the same name in the select list.
                let order = (0..info.key.len())
                    .map(|i| format!("_rw_result._rw_k{i}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!(
                    "WITH _rw_old AS (SELECT {old_keys}, {old_images} FROM {table} WHERE ({filter}){lower_sql} \
                     ORDER BY {keys} LIMIT {chunk_size} FOR UPDATE), \
                     _rw_new AS (UPDATE {table} SET {sets} FROM _rw_old WHERE {join}{lower_sql} \
                     RETURNING {returning_keys}, {returning_before}, {returning_after}) \
                     SELECT {select_keys}, {select_images} FROM _rw_new AS _rw_result ORDER BY {order}"
                );
                let rows = match context.fetch(step, &sql, &lower_binds).await {
                    Ok(rows) => rows,
                    Err(error) => {
                        context.rollback().await;
                        return Err(error);
                    }
                };
                let key_count = info.key.len();
                rows.into_iter()
                    .map(|row| RowImage {
                        key: row[..key_count].to_vec(),
                        before: Some(row[key_count..key_count + column_count].to_vec()),
                        after: Some(row[key_count + column_count..].to_vec()),
                    })
                    .collect::<Vec<_>>()
            }
            Engine::Sqlite => {
                let columns = info
                    .columns
                    .iter()
                    .map(|column| quote_ident(&column.name))
                    .collect::<Vec<_>>()
                    .join(", ");
                let select = format!(
                    "SELECT {columns} FROM {table} WHERE ({filter}){lower_sql} ORDER BY {keys} LIMIT {chunk_size}"
                );
                let before = match context.fetch(step, &select, &lower_binds).await {
                    Ok(rows) => rows,
                    Err(error) => {
                        context.rollback().await;
                        return Err(error);
                    }
                };
                if before.is_empty() {
                    Vec::new()
                } else {
                    let upper = key_of(
                        before.last().map(Vec::as_slice).unwrap_or_default(),
                        &key_positions,
                    );
                    let first_upper = lower_binds.len() + 1;
                    let update = format!(
                        "UPDATE {table} SET {sets} WHERE ({filter}){lower_sql} AND ({keys}) <= ({}) RETURNING {columns}",
                        key_placeholders(engine, &info, first_upper)
                    );
                    let mut binds = lower_binds.clone();
                    binds.extend(upper.into_iter().map(Bind::Value));
                    let after = match context.fetch(step, &update, &binds).await {
                        Ok(rows) => rows,
                        Err(error) => {
                            context.rollback().await;
                            return Err(error);
                        }
                    };
                    let mut after_by_key: HashMap<String, Vec<SqlValue>> = after
                        .into_iter()
                        .map(|row| (key_string(&key_of(&row, &key_positions)), row))
                        .collect();
                    let mut images = Vec::with_capacity(before.len());
                    for row in before {
                        let key = key_of(&row, &key_positions);
                        let Some(after) = after_by_key.remove(&key_string(&key)) else {
                            context.rollback().await;
                            return Err(DbError::Concurrent {
                                step,
                                table: info.name.clone(),
                                problem: "a selected row was not updated".to_owned(),
                            });
                        };
                        images.push(RowImage {
                            key,
                            before: Some(row),
                            after: Some(after),
                        });
                    }
                    if !after_by_key.is_empty() {
                        context.rollback().await;
                        return Err(DbError::Concurrent {
                            step,
                            table: info.name.clone(),
                            problem: "the update changed rows that were not captured".to_owned(),
                        });
                    }
                    images
                }
            }
        };
        if images.is_empty() {
            context.rollback().await;
            break;
        }
        lower = images.last().map(|image| image.key.clone());
        let count = images.len();
        let event = rows_changed(context.database, &info, step, report.chunks, images);
        context
            .record_then_commit(step, &info.name, vec![event], recorder)
            .await?;
        report.rows += count as u64;
        report.chunks += 1;
        report.events += 1;
        if count < chunk_size {
            break;
        }
    }
    Ok(report)
}

pub(crate) async fn delete(
    context: &mut Context<'_>,
    operation: &Delete,
    recorder: &mut dyn Recorder,
) -> Result<StepReport> {
    let step = operation.step;
    let chunk_size = check_chunk_size(step, operation.chunk_size)?;
    let info = context
        .table(&operation.table, operation.key.as_deref())
        .await?;
    context.refuse_cascades(step, &info, None).await?;
    let engine = context.executor.engine();
    let filter = operation.filter.as_deref().unwrap_or("TRUE");
    let table = &info.quoted;
    let keys = info.key_list("");
    let column_count = info.columns.len();
    let key_positions = info.key_positions();
    let mut report = StepReport::default();
    let mut lower: Option<Vec<SqlValue>> = None;
    loop {
        let lower_sql = if lower.is_some() {
            format!(" AND ({keys}) > ({})", key_placeholders(engine, &info, 1))
        } else {
            String::new()
        };
        let lower_binds: Vec<Bind> = lower.iter().flatten().cloned().map(Bind::Value).collect();
        context.begin(step).await?;
        let images: Vec<RowImage> = match engine {
            Engine::Postgres => {
                let old_keys = info
                    .key
                    .iter()
                    .enumerate()
                    .map(|(i, name)| format!("{} AS _rw_k{i}", quote_ident(name)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let old_images = info
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, column)| format!("{}::text AS _rw_b{i}", quote_ident(&column.name)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let join = info
                    .key
                    .iter()
                    .enumerate()
                    .map(|(i, name)| format!("{table}.{} = _rw_old._rw_k{i}", quote_ident(name)))
                    .collect::<Vec<_>>()
                    .join(" AND ");
                let select_keys = (0..info.key.len())
                    .map(|i| format!("_rw_k{i}::text"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let select_images = (0..column_count)
                    .map(|i| format!("_rw_b{i}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                // Qualified, so that it names the typed key and not the
                // text column of the same name in the select list.
                let order = (0..info.key.len())
                    .map(|i| format!("_rw_result._rw_k{i}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!(
                    "WITH _rw_old AS (SELECT {old_keys}, {old_images} FROM {table} WHERE ({filter}){lower_sql} \
                     ORDER BY {keys} LIMIT {chunk_size} FOR UPDATE), \
                     _rw_gone AS (DELETE FROM {table} USING _rw_old WHERE {join}{lower_sql} RETURNING _rw_old.*) \
                     SELECT {select_keys}, {select_images} FROM _rw_gone AS _rw_result ORDER BY {order}"
                );
                let rows = match context.fetch(step, &sql, &lower_binds).await {
                    Ok(rows) => rows,
                    Err(error) => {
                        context.rollback().await;
                        return Err(error);
                    }
                };
                let key_count = info.key.len();
                rows.into_iter()
                    .map(|row| RowImage {
                        key: row[..key_count].to_vec(),
                        before: Some(row[key_count..].to_vec()),
                        after: None,
                    })
                    .collect()
            }
            Engine::Sqlite => {
                let columns = info
                    .columns
                    .iter()
                    .map(|column| quote_ident(&column.name))
                    .collect::<Vec<_>>()
                    .join(", ");
                let select = format!(
                    "SELECT {columns} FROM {table} WHERE ({filter}){lower_sql} ORDER BY {keys} LIMIT {chunk_size}"
                );
                let before = match context.fetch(step, &select, &lower_binds).await {
                    Ok(rows) => rows,
                    Err(error) => {
                        context.rollback().await;
                        return Err(error);
                    }
                };
                if !before.is_empty() {
                    let upper = key_of(
                        before.last().map(Vec::as_slice).unwrap_or_default(),
                        &key_positions,
                    );
                    let delete = format!(
                        "DELETE FROM {table} WHERE ({filter}){lower_sql} AND ({keys}) <= ({})",
                        key_placeholders(engine, &info, lower_binds.len() + 1)
                    );
                    let mut binds = lower_binds.clone();
                    binds.extend(upper.into_iter().map(Bind::Value));
                    let deleted = match context.execute(step, &delete, &binds).await {
                        Ok(count) => count,
                        Err(error) => {
                            context.rollback().await;
                            return Err(error);
                        }
                    };
                    if deleted != before.len() as u64 {
                        context.rollback().await;
                        return Err(DbError::Concurrent {
                            step,
                            table: info.name.clone(),
                            problem: format!(
                                "captured {} rows but the delete removed {deleted}",
                                before.len()
                            ),
                        });
                    }
                }
                before
                    .into_iter()
                    .map(|row| RowImage {
                        key: key_of(&row, &key_positions),
                        before: Some(row),
                        after: None,
                    })
                    .collect()
            }
        };
        if images.is_empty() {
            context.rollback().await;
            break;
        }
        lower = images.last().map(|image| image.key.clone());
        let count = images.len();
        let event = rows_changed(context.database, &info, step, report.chunks, images);
        context
            .record_then_commit(step, &info.name, vec![event], recorder)
            .await?;
        report.rows += count as u64;
        report.chunks += 1;
        report.events += 1;
        if count < chunk_size {
            break;
        }
    }
    Ok(report)
}

pub(crate) async fn insert(
    context: &mut Context<'_>,
    operation: &Insert,
    recorder: &mut dyn Recorder,
) -> Result<StepReport> {
    let step = operation.step;
    let chunk_size = check_chunk_size(step, operation.chunk_size)?;
    let info = context
        .table(&operation.table, operation.key.as_deref())
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
    let returning = info
        .columns
        .iter()
        .map(|column| engine_text_column(engine, &quote_ident(&column.name)))
        .collect::<Vec<_>>()
        .join(", ");
    let result = async {
        let mut report = StepReport::default();
        for (insert_sql, binds) in batches {
            let sql = match engine {
                Engine::Sqlite => format!("{insert_sql} RETURNING {returning}"),
                Engine::Postgres => {
                    let keys = (0..info.key.len())
                        .map(|i| format!("_rw_k{i}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let returning_keys = info
                        .key
                        .iter()
                        .enumerate()
                        .map(|(i, name)| format!("{} AS _rw_k{i}", quote_ident(name)))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let returning_images = info
                        .columns
                        .iter()
                        .enumerate()
                        .map(|(i, column)| format!("{}::text AS _rw_a{i}", quote_ident(&column.name)))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let images = (0..column_count)
                        .map(|i| format!("_rw_a{i}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    format!(
                        "WITH _rw_new AS ({insert_sql} RETURNING {returning_keys}, {returning_images}) \
                         SELECT {images} FROM _rw_new ORDER BY {keys}"
                    )
                }
            };
            context.begin(step).await?;
            let before_sequences = match context.sequences(step, &info).await {
                Ok(states) => states,
                Err(error) => {
                    context.rollback().await;
                    return Err(error);
                }
            };
            let rows = match context.fetch(step, &sql, &binds).await {
                Ok(rows) => rows,
                Err(error) => {
                    context.rollback().await;
                    return Err(error);
                }
            };
            let after_sequences = match context.sequences(step, &info).await {
                Ok(states) => states,
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
            let mut images = images.into_iter().peekable();
            let mut chunks = 0;
            while images.peek().is_some() {
                let chunk: Vec<RowImage> = images.by_ref().take(chunk_size).collect();
                events.push(rows_changed(
                    context.database,
                    &info,
                    step,
                    report.chunks + chunks,
                    chunk,
                ));
                chunks += 1;
            }
            let event_count = events.len() as u64;
            context
                .record_then_commit(step, &info.name, events, recorder)
                .await?;
            report.rows += count;
            report.chunks += chunks;
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
