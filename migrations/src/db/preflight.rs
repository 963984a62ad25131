//! The check before anything runs: every database step of a target is
//! prepared against the real schema, in order, inside one transaction that
//! is always rolled back.
//!
//! `ddl` and `sql` statements are executed inside that transaction (later
//! steps may name the tables and columns they create); row steps and
//! verify queries are only prepared, so no row is read into memory and no
//! sequence advances. What this finds — an unknown table or column, a
//! table without a usable key, a syntax error, a `sql` step without `down`
//! — is refused with the step's number before the run starts.
//!
//! PostgreSQL sequences are not transactional: a `sql` step run by the
//! preflight may advance one, and the rollback would not take it back. So
//! when the preflight runs statements on PostgreSQL, every sequence's state
//! is read first and set back afterwards.

use rewind_ledger::SqlValue;

use super::capture::{Context, Delete, InsertSource, Schema, Update, Verify};
use super::error::{DbError, Result};
use super::executor::{Bind, Engine, quote_ident};
use super::{Insert, catalog::TableInfo};

/// One database step, as the preflight sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    Update(Update),
    Insert(Insert),
    Delete(Delete),
    Schema(Schema),
    Verify(Verify),
}

impl Operation {
    /// The 1-based step number.
    pub fn step(&self) -> u32 {
        match self {
            Operation::Update(operation) => operation.step,
            Operation::Insert(operation) => operation.step,
            Operation::Delete(operation) => operation.step,
            Operation::Schema(operation) => operation.step,
            Operation::Verify(operation) => operation.step,
        }
    }
}

fn check_columns<'a>(info: &TableInfo, names: impl IntoIterator<Item = &'a String>) -> Result<()> {
    for name in names {
        if name == "rowid" || !info.columns.iter().any(|column| &column.name == name) {
            return Err(DbError::UnknownColumn {
                table: info.name.clone(),
                column: name.clone(),
            });
        }
    }
    Ok(())
}

async fn prepare(context: &mut Context<'_>, step: u32, sql: &str) -> Result<Vec<String>> {
    match context.executor.column_names(sql).await {
        Ok(names) => Ok(names),
        Err(error) => Err(context.statement_error(step, sql, error)),
    }
}

async fn check_one(context: &mut Context<'_>, operation: &Operation) -> Result<()> {
    let step = operation.step();
    match operation {
        Operation::Update(update) => {
            let info = context.table(&update.table, update.key.as_deref()).await?;
            if update.set.is_empty() {
                return Err(DbError::InvalidStep {
                    step,
                    problem: format!("update of table {} sets no column", info.name),
                });
            }
            check_columns(&info, update.set.keys())?;
            if let Some(column) = update.set.keys().find(|column| info.key.contains(column)) {
                return Err(DbError::SetsKeyColumn {
                    step,
                    table: info.name.clone(),
                    column: column.clone(),
                });
            }
            let sets = update
                .set
                .iter()
                .map(|(column, expression)| format!("{} = ({expression})", quote_ident(column)))
                .collect::<Vec<_>>()
                .join(", ");
            let filter = update.filter.as_deref().unwrap_or("TRUE");
            let sql = format!("UPDATE {} SET {sets} WHERE ({filter})", info.quoted);
            prepare(context, step, &sql).await?;
        }
        Operation::Delete(delete) => {
            let info = context.table(&delete.table, delete.key.as_deref()).await?;
            let filter = delete.filter.as_deref().unwrap_or("TRUE");
            let sql = format!("DELETE FROM {} WHERE ({filter})", info.quoted);
            prepare(context, step, &sql).await?;
        }
        Operation::Insert(insert) => {
            let info = context
                .insert_table(step, &insert.table, insert.key.as_deref())
                .await?;
            match &insert.source {
                InsertSource::Select(select) => {
                    let select = select.trim().trim_end_matches(';');
                    let names = prepare(context, step, select).await?;
                    check_columns(&info, names.iter())?;
                }
                InsertSource::Rows(rows) => {
                    if let Some(first) = rows.first() {
                        check_columns(&info, first.keys())?;
                        if let Some(index) = rows.iter().position(|row| row.keys().ne(first.keys()))
                        {
                            return Err(DbError::InvalidStep {
                                step,
                                problem: format!(
                                    "row {index} of the insert into {} names other columns than row 0",
                                    info.name
                                ),
                            });
                        }
                    }
                }
            }
        }
        Operation::Schema(schema) => {
            if schema.down.is_none() && !schema.irreversible {
                return Err(DbError::MissingDown {
                    step,
                    kind: schema.kind,
                });
            }
            context.script(step, &schema.up).await?;
        }
        Operation::Verify(verify) => {
            let queries = verify
                .record
                .values()
                .chain(verify.checks.iter().map(|check| &check.query));
            for query in queries {
                prepare(context, step, query.trim().trim_end_matches(';')).await?;
            }
        }
    }
    Ok(())
}

/// Every PostgreSQL sequence with its `last_value` and `is_called`.
async fn pg_sequences(context: &mut Context<'_>, step: u32) -> Result<Vec<(String, i64, bool)>> {
    let names = context
        .fetch(
            step,
            "SELECT c.oid::regclass::text FROM pg_class c WHERE c.relkind = 'S' ORDER BY 1",
            &[],
        )
        .await?;
    let mut states = Vec::new();
    for row in names {
        let name = match row.first() {
            Some(SqlValue::Text(name) | SqlValue::Typed(name)) => name.clone(),
            Some(other) => other.to_string(),
            None => continue,
        };
        // The name is the catalog's regclass output, quoted as needed.
        let state = context
            .fetch(
                step,
                &format!("SELECT last_value, is_called FROM {name}"),
                &[],
            )
            .await?;
        if let Some([SqlValue::Integer(value), SqlValue::Integer(is_called)]) =
            state.first().map(Vec::as_slice)
        {
            states.push((name, *value, *is_called != 0));
        }
    }
    Ok(states)
}

/// Prepares every operation in order inside one transaction, then rolls it
/// back whatever happened. An error comes with the step it is about.
pub(crate) async fn preflight(
    context: &mut Context<'_>,
    operations: &[Operation],
) -> Result<(), (u32, DbError)> {
    let Some(first) = operations.first() else {
        return Ok(());
    };
    let step = first.step();
    let runs_statements = operations
        .iter()
        .any(|operation| matches!(operation, Operation::Schema(_)));
    let sequences = if runs_statements && context.executor.engine() == Engine::Postgres {
        pg_sequences(context, step)
            .await
            .map_err(|error| (step, error))?
    } else {
        Vec::new()
    };
    context.begin(step).await.map_err(|error| (step, error))?;
    let mut outcome = Ok(());
    for operation in operations {
        if let Err(error) = check_one(context, operation).await {
            outcome = Err((operation.step(), error));
            break;
        }
    }
    context.rollback().await;
    if !sequences.is_empty() {
        let after = pg_sequences(context, step)
            .await
            .map_err(|error| (step, error))?;
        for (name, value, is_called) in sequences {
            if after.contains(&(name.clone(), value, is_called)) {
                continue;
            }
            context
                .fetch(
                    step,
                    "SELECT setval($1::regclass, $2, $3)::text",
                    &[
                        Bind::Value(SqlValue::Text(name)),
                        Bind::Value(SqlValue::Integer(value)),
                        Bind::Bool(is_called),
                    ],
                )
                .await
                .map_err(|error| (step, error))?;
        }
    }
    outcome
}
