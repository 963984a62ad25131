//! The inverses of the database events, each behind its drift check.
//!
//! A `RowsChanged` event is undone set-based, in one transaction (or, with
//! the other events of its chunk, in one transaction with a savepoint
//! each: [`undo_rows_group`]): its images are loaded into a temporary
//! table (PostgreSQL: one `unnest` of text arrays; SQLite: one prepared
//! insert run per row), the current rows are read with one join, each row
//! is compared with its after image, and then one `UPDATE … FROM`, one
//! `DELETE` and one `INSERT … SELECT` restore the rows that did not drift.
//! On PostgreSQL an `UPDATE … FROM … RETURNING` first restores the updated
//! rows whose every column's text still equals the after image's, checking
//! each as it finds it; only the rest are then read, locked and compared,
//! so that each row is looked up once. A `RowsPacked` is unpacked first.
//! A row that already equals its before image (a rollback interrupted
//! after its commit and run again) is left as it is and counted, not
//! reported as drift.

use rewind_ledger::{
    Event, RowImage, RowsChanged, RowsPacked, SchemaChanged, SequenceMoved, SqlValue,
};

use super::capture::{Context, context_error, raw_failed};
use super::catalog::{TableInfo, Trigger, triggers};
use super::error::{DbError, Result};
use super::executor::{Bind, Engine, key_slots, quote_ident};

/// What to do with rows that drifted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDrift {
    /// Change nothing in the chunk and report the drift.
    #[default]
    Stop,
    /// Leave drifted rows alone, restore the others.
    Skip,
}

/// How to undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UndoOptions {
    pub on_drift: OnDrift,
    /// Pass over `irreversible` statements instead of refusing.
    pub allow_irreversible: bool,
    /// Restore rows of a SQLite table with triggers, letting them fire,
    /// instead of refusing.
    pub allow_triggers: bool,
}

/// A row whose current state is neither its after image nor its before image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowDrift {
    pub table: String,
    pub key: Vec<SqlValue>,
    /// The columns that differ from the after image; every column when the
    /// row is missing or present against expectation.
    pub columns: Vec<String>,
    /// Every column of the images, in order.
    pub image_columns: Vec<String>,
    /// The after image (`None`: the row should be absent).
    pub expected: Option<Vec<SqlValue>>,
    /// The row now (`None`: it is absent).
    pub actual: Option<Vec<SqlValue>>,
}

/// What an undo did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UndoReport {
    /// Whether anything was changed: false when drift stopped the undo,
    /// on a dry run, and for a passed-over irreversible statement.
    pub applied: bool,
    /// Rows found at their after image: put back to their before image (or
    /// removed, or re-inserted) when `applied`, otherwise the rows that would be.
    pub restored: u64,
    /// Rows that already equalled their before image. After a crash between
    /// recording a chunk and its commit, [`super::Database::check_drift`]
    /// finds every row of the chunk here: the chunk never committed.
    pub already_restored: u64,
    pub drift: Vec<RowDrift>,
    /// Triggers of the table that fired while its rows were restored: on
    /// PostgreSQL those marked `ENABLE ALWAYS`, and every ordinary one when
    /// the session may not set `session_replication_role`.
    pub triggers_fired: Vec<String>,
}

pub(crate) async fn undo(
    context: &mut Context<'_>,
    event: &Event,
    options: UndoOptions,
    dry_run: bool,
) -> Result<UndoReport> {
    match event {
        Event::RowsChanged(rows) => undo_rows(context, rows, options, dry_run).await,
        Event::RowsPacked(packed) => undo_rows(context, &unpacked(packed)?, options, dry_run).await,
        Event::SequenceMoved(moved) => {
            if !dry_run {
                undo_sequence(context, moved).await?;
            }
            Ok(UndoReport {
                applied: !dry_run,
                ..UndoReport::default()
            })
        }
        Event::SchemaChanged(changed) => undo_schema(context, changed, options, dry_run).await,
        other => Err(DbError::NoInverse { kind: other.kind() }),
    }
}

/// The rows of a packed chunk.
pub(crate) fn unpacked(packed: &RowsPacked) -> Result<RowsChanged> {
    packed.unpack().map_err(|problem| DbError::BadImages {
        table: packed.table.clone(),
        chunk: packed.chunk,
        problem,
    })
}

async fn undo_sequence(context: &mut Context<'_>, moved: &SequenceMoved) -> Result<()> {
    let step = moved.step;
    match context.executor.engine() {
        Engine::Postgres => {
            context
                .fetch(
                    step,
                    "SELECT setval($1::regclass, $2, $3)::text",
                    &[
                        Bind::Value(SqlValue::Text(moved.sequence.clone())),
                        Bind::Value(SqlValue::Integer(moved.old)),
                        Bind::Bool(moved.old_is_called),
                    ],
                )
                .await?;
        }
        Engine::Sqlite => {
            let name = Bind::Value(SqlValue::Text(moved.sequence.clone()));
            if moved.old_is_called {
                let value = Bind::Value(SqlValue::Integer(moved.old));
                let updated = context
                    .execute(
                        step,
                        "UPDATE sqlite_sequence SET seq = ?2 WHERE name = ?1",
                        &[name.clone(), value.clone()],
                    )
                    .await?;
                if updated == 0 {
                    context
                        .execute(
                            step,
                            "INSERT INTO sqlite_sequence (name, seq) VALUES (?1, ?2)",
                            &[name, value],
                        )
                        .await?;
                }
            } else {
                context
                    .execute(step, "DELETE FROM sqlite_sequence WHERE name = ?1", &[name])
                    .await?;
            }
        }
    }
    Ok(())
}

async fn undo_schema(
    context: &mut Context<'_>,
    changed: &SchemaChanged,
    options: UndoOptions,
    dry_run: bool,
) -> Result<UndoReport> {
    let step = changed.step;
    let down = match (&changed.down, changed.irreversible) {
        (Some(down), false) => down,
        _ if options.allow_irreversible => return Ok(UndoReport::default()),
        _ => {
            return Err(DbError::Irreversible {
                step,
                statement: changed.up.clone(),
            });
        }
    };
    if dry_run {
        return Ok(UndoReport::default());
    }
    context.begin(step).await?;
    if let Err(error) = context.script(step, down).await {
        context.rollback().await;
        return Err(error);
    }
    context.commit(step).await?;
    Ok(UndoReport {
        applied: true,
        ..UndoReport::default()
    })
}

fn as_text(value: &SqlValue) -> Option<String> {
    match value {
        SqlValue::Null => None,
        SqlValue::Text(text) | SqlValue::Typed(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

/// Which image a current row equals.
enum State {
    AtAfter,
    AtBefore,
    Drifted(RowDrift),
}

fn classify(rows: &RowsChanged, image: &RowImage, current: Option<Vec<SqlValue>>) -> State {
    if current == image.after {
        return State::AtAfter;
    }
    if current == image.before {
        return State::AtBefore;
    }
    let names: Vec<String> = rows
        .columns
        .iter()
        .map(|column| column.name.clone())
        .collect();
    let columns = match (&current, &image.after) {
        (Some(now), Some(after)) => names
            .iter()
            .zip(now.iter().zip(after))
            .filter(|(_, (now, after))| now != after)
            .map(|(name, _)| name.clone())
            .collect(),
        _ => names.clone(),
    };
    State::Drifted(RowDrift {
        table: rows.table.clone(),
        key: image.key.clone(),
        columns,
        image_columns: names,
        expected: image.after.clone(),
        actual: current,
    })
}

/// What undoing a `RowsChanged` needs from the catalog, read (and the
/// undo refused where it must be) before its transaction begins.
struct Prepared {
    info: TableInfo,
    triggers: Vec<Trigger>,
}

async fn prepare_rows(
    context: &mut Context<'_>,
    rows: &RowsChanged,
    options: UndoOptions,
    dry_run: bool,
) -> Result<Prepared> {
    let step = rows.step;
    let engine = context.executor.engine();
    let info = context
        .recorded_table(&rows.table, &rows.key_columns)
        .await?;
    check_columns(&info, rows)?;
    let triggers = match triggers(context.executor, &info).await {
        Ok(triggers) => triggers,
        Err(error) => return Err(context.statement_error(step, "read triggers", error)),
    };
    // SQLite cannot turn a trigger off for one transaction, and dropping and
    // creating it again would move it in the schema: refuse instead.
    if !dry_run && engine == Engine::Sqlite && !triggers.is_empty() && !options.allow_triggers {
        return Err(DbError::TriggersWouldFire {
            step,
            table: info.name.clone(),
            triggers: triggers
                .iter()
                .map(|trigger| trigger.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(Prepared { info, triggers })
}

/// Refuses images of a column the table no longer has.
fn check_columns(info: &TableInfo, rows: &RowsChanged) -> Result<()> {
    match rows
        .columns
        .iter()
        .find(|column| !info.columns.iter().any(|known| known.name == column.name))
    {
        Some(column) => Err(DbError::UnknownColumn {
            table: rows.table.clone(),
            column: column.name.clone(),
        }),
        None => Ok(()),
    }
}

async fn undo_rows(
    context: &mut Context<'_>,
    rows: &RowsChanged,
    options: UndoOptions,
    dry_run: bool,
) -> Result<UndoReport> {
    let prepared = prepare_rows(context, rows, options, dry_run).await?;
    context.begin(rows.step).await?;
    let result = restore_rows(context, rows, &prepared, options, dry_run).await;
    match result {
        Ok(report) if report.applied => {
            context.commit(rows.step).await?;
            Ok(report)
        }
        Ok(report) => {
            context.rollback().await;
            Ok(report)
        }
        Err(error) => {
            context.rollback().await;
            Err(error)
        }
    }
}

/// Undoes several `RowsChanged` events of one table in one transaction,
/// in the order given, each behind a savepoint: an event that drift stops
/// (`OnDrift::Stop`) changes nothing and ends the group, and the events
/// before it commit. One commit for a whole chunk's events instead of one
/// each. Returns a report for each event undone or stopped at; an error
/// comes with the index of the event it arose at.
pub(crate) async fn undo_rows_group(
    context: &mut Context<'_>,
    group: &[&RowsChanged],
    options: UndoOptions,
) -> std::result::Result<Vec<UndoReport>, (usize, DbError)> {
    let Some(first) = group.first() else {
        return Ok(Vec::new());
    };
    // The catalog is read once for the group: its events are of one table
    // with one key (see `row_group` in `migrations/src/undo.rs`).
    if let Some((index, other)) = group
        .iter()
        .enumerate()
        .find(|(_, rows)| rows.table != first.table || rows.key_columns != first.key_columns)
    {
        let problem = format!(
            "events of tables {} and {} cannot be undone as one group",
            first.table, other.table
        );
        let step = other.step;
        return Err((index, DbError::InvalidStep { step, problem }));
    }
    let prepared = prepare_rows(context, first, options, false)
        .await
        .map_err(|error| (0, error))?;
    for (index, rows) in group.iter().enumerate() {
        check_columns(&prepared.info, rows).map_err(|error| (index, error))?;
    }
    let step = first.step;
    context.begin(step).await.map_err(|error| (0, error))?;
    // The event being undone, for an error's attribution.
    let mut at = 0;
    let result = async {
        let mut reports = Vec::with_capacity(group.len());
        for (index, rows) in group.iter().enumerate() {
            at = index;
            context.script(step, "SAVEPOINT _rw_event").await?;
            let report = restore_rows(context, rows, &prepared, options, false).await?;
            let applied = report.applied;
            context
                .script(
                    step,
                    if applied {
                        "RELEASE SAVEPOINT _rw_event"
                    } else {
                        "ROLLBACK TO SAVEPOINT _rw_event; RELEASE SAVEPOINT _rw_event"
                    },
                )
                .await?;
            reports.push(report);
            if !applied {
                break;
            }
        }
        Ok(reports)
    }
    .await;
    match result {
        Ok(reports) => {
            context.commit(step).await.map_err(|error| (at, error))?;
            Ok(reports)
        }
        Err(error) => {
            context.rollback().await;
            Err((at, error))
        }
    }
}

/// The drift check and restore of one `RowsChanged`, inside the caller's
/// transaction; `applied` is false when it changed nothing (a dry run, or
/// drift with `OnDrift::Stop`), and the caller then rolls back.
async fn restore_rows(
    context: &mut Context<'_>,
    rows: &RowsChanged,
    prepared: &Prepared,
    options: UndoOptions,
    dry_run: bool,
) -> Result<UndoReport> {
    let step = rows.step;
    let engine = context.executor.engine();
    let Prepared { info, triggers } = prepared;
    let column_count = rows.columns.len();
    let key_count = rows.key_columns.len();
    let images = "_rw_images";
    // The types to cast to are read from the catalog now, never taken from the ledger.
    let cast = |name: &str| -> String {
        match engine {
            Engine::Postgres => format!("::{}", info.sql_type(name)),
            Engine::Sqlite => String::new(),
        }
    };
    {
        let triggers_fired = if dry_run {
            Vec::new()
        } else {
            quiet_triggers(context, step, triggers).await?
        };
        let present = format!(
            "CASE WHEN t.{} IS NULL THEN 0 ELSE 1 END",
            quote_ident(&rows.key_columns[0])
        );
        let current_columns = rows
            .columns
            .iter()
            .map(|column| match engine {
                Engine::Postgres => format!("t.{}::text", quote_ident(&column.name)),
                Engine::Sqlite => format!("t.{}", quote_ident(&column.name)),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let table = &info.quoted;
        // `{table}.k0 = i.k0::type AND …`: the rows of the images.
        let key_join = |table: &str| {
            rows.key_columns
                .iter()
                .enumerate()
                .map(|(i, name)| format!("{table}.{} = i.k{i}{}", quote_ident(name), cast(name)))
                .collect::<Vec<_>>()
                .join(" AND ")
        };
        let join = key_join("t");
        let key_positions = info_positions(rows);
        let non_key: Vec<usize> = (0..column_count)
            .filter(|i| !key_positions.contains(i))
            .collect();
        let restore_join = key_join(table);
        let sets = non_key
            .iter()
            .map(|&i| {
                let name = &rows.columns[i].name;
                format!("{} = i.b{i}{}", quote_ident(name), cast(name))
            })
            .collect::<Vec<_>>()
            .join(", ");
        // PostgreSQL: the updated rows still at their after image are
        // restored by one statement that checks them as it finds them, so
        // each row is looked up once (a table larger than the server's
        // buffers pays for every lookup), reading the images straight from
        // the arrays sent with it. The rest — inserted and deleted rows,
        // and rows not at their after image — are loaded into the image
        // table, then read, locked and classified below; drift that stops
        // the undo rolls this back with everything else.
        let mut done = vec![false; rows.rows.len()];
        let mut arrays = None;
        if engine == Engine::Postgres && !dry_run && !non_key.is_empty() {
            let images = pg_image_arrays(rows);
            let (binds, source) = (&images.0, &images.1);
            let now = rows
                .columns
                .iter()
                .map(|column| format!("{table}.{}::text COLLATE \"C\"", quote_ident(&column.name)))
                .collect::<Vec<_>>()
                .join(", ");
            let afters = (0..column_count)
                .map(|i| format!("i.a{i} COLLATE \"C\""))
                .collect::<Vec<_>>()
                .join(", ");
            let restored = context
                .fetch(
                    step,
                    &format!(
                        "UPDATE {table} SET {sets} FROM {source} WHERE {restore_join} \
                         AND i.hb AND i.ha AND ROW({now}) IS NOT DISTINCT FROM ROW({afters}) \
                         RETURNING i.idx"
                    ),
                    binds,
                )
                .await?;
            let mut ids = Vec::with_capacity(restored.len());
            for row in restored {
                if let Some(SqlValue::Integer(index)) = row.first()
                    && let Some(slot) = done.get_mut(*index as usize)
                    && !*slot
                {
                    *slot = true;
                    ids.push(*index);
                }
            }
            // Every row restored, the common case: nothing is left to read,
            // classify, delete or insert.
            if ids.len() == rows.rows.len() {
                return Ok(UndoReport {
                    triggers_fired,
                    restored: ids.len() as u64,
                    applied: true,
                    ..UndoReport::default()
                });
            }
            arrays = Some((images, ids));
        }
        let (images_made, restored_ids) = arrays.unzip();
        load_images(context, step, rows, images_made).await?;
        if let Some(ids) = restored_ids {
            forget_images(context, step, &ids).await?;
        }
        let current_sql = match engine {
            // Locks the rows it reads, so that nobody changes them between
            // the drift check and the restore; a row it does not return is
            // absent.
            Engine::Postgres => format!(
                "SELECT i.idx, 1, {current_columns} FROM {images} AS i JOIN {table} AS t ON {join} \
                 ORDER BY i.idx FOR UPDATE OF t"
            ),
            // BEGIN IMMEDIATE already keeps every other writer out.
            Engine::Sqlite => format!(
                "SELECT i.idx, {present}, {current_columns} FROM {images} AS i LEFT JOIN {table} AS t ON {join} ORDER BY i.idx"
            ),
        };
        let mut current: Vec<Option<Vec<SqlValue>>> = vec![None; rows.rows.len()];
        for row in context.fetch(step, &current_sql, &[]).await? {
            if let (SqlValue::Integer(index), SqlValue::Integer(1)) = (&row[0], &row[1])
                && let Some(slot) = current.get_mut(*index as usize)
            {
                *slot = Some(row[2..].to_vec());
            }
        }
        let mut report = UndoReport {
            triggers_fired,
            ..UndoReport::default()
        };
        let mut leave_alone: Vec<i64> = Vec::new();
        for (index, (image, now)) in rows.rows.iter().zip(current).enumerate() {
            if done[index] {
                report.restored += 1;
                continue;
            }
            match classify(rows, image, now) {
                State::AtAfter => report.restored += 1,
                State::AtBefore => {
                    report.already_restored += 1;
                    leave_alone.push(index as i64);
                }
                State::Drifted(drift) => {
                    report.drift.push(drift);
                    leave_alone.push(index as i64);
                }
            }
        }
        if dry_run || (!report.drift.is_empty() && options.on_drift == OnDrift::Stop) {
            return Ok(report);
        }
        forget_images(context, step, &leave_alone).await?;
        if !non_key.is_empty() {
            context
                .execute(
                    step,
                    &format!("UPDATE {table} SET {sets} FROM {images} AS i WHERE {restore_join} AND i.hb AND i.ha"),
                    &[],
                )
                .await?;
        }
        let delete = match engine {
            Engine::Postgres => {
                format!("DELETE FROM {table} USING {images} AS i WHERE {restore_join} AND NOT i.hb")
            }
            Engine::Sqlite => {
                let keys = rows
                    .key_columns
                    .iter()
                    .map(|name| quote_ident(name))
                    .collect::<Vec<_>>()
                    .join(", ");
                let image_keys = key_slots(key_count);
                format!(
                    "DELETE FROM {table} WHERE ({keys}) IN (SELECT {image_keys} FROM {images} WHERE NOT hb)"
                )
            }
        };
        context.execute(step, &delete, &[]).await?;
        let target = rows
            .columns
            .iter()
            .map(|column| quote_ident(&column.name))
            .collect::<Vec<_>>()
            .join(", ");
        let values = rows
            .columns
            .iter()
            .enumerate()
            .map(|(i, column)| format!("i.b{i}{}", cast(&column.name)))
            .collect::<Vec<_>>()
            .join(", ");
        let overriding = match engine {
            Engine::Postgres => " OVERRIDING SYSTEM VALUE",
            Engine::Sqlite => "",
        };
        context
            .execute(
                step,
                &format!(
                    "INSERT INTO {table} ({target}){overriding} SELECT {values} FROM {images} AS i WHERE NOT i.ha ORDER BY i.idx"
                ),
                &[],
            )
            .await?;
        // Gone before the next event of a group loads its own.
        let drop = match engine {
            Engine::Sqlite => "DROP TABLE temp._rw_images",
            Engine::Postgres => "DROP TABLE pg_temp._rw_images",
        };
        context.execute(step, drop, &[]).await?;
        report.applied = true;
        Ok(report)
    }
}

/// Removes the images at `ids` from the temporary image table, so that the
/// statements after it leave their rows alone.
async fn forget_images(context: &mut Context<'_>, step: u32, ids: &[i64]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    match context.executor.engine() {
        Engine::Postgres => {
            let ids = ids.iter().map(|&id| id as i32).collect();
            context
                .execute(
                    step,
                    "DELETE FROM _rw_images WHERE idx = ANY($1::int4[])",
                    &[Bind::IntArray(ids)],
                )
                .await?;
        }
        Engine::Sqlite => {
            for chunk in ids.chunks(10_000) {
                let marks = (1..=chunk.len())
                    .map(|i| format!("?{i}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let binds: Vec<Bind> = chunk
                    .iter()
                    .map(|&id| Bind::Value(SqlValue::Integer(id)))
                    .collect();
                context
                    .execute(
                        step,
                        &format!("DELETE FROM temp._rw_images WHERE idx IN ({marks})"),
                        &binds,
                    )
                    .await?;
            }
        }
    }
    Ok(())
}

/// Turns a PostgreSQL table's ordinary triggers off for the rest of the
/// transaction with `SET LOCAL session_replication_role = replica`, which
/// needs a superuser (or `GRANT SET ON PARAMETER`); when that is refused,
/// the triggers stay on. Returns the triggers that will fire. Replica mode
/// also skips the checks behind foreign keys, so it is set only when an
/// ordinary trigger would fire: the rows restored are their before images.
async fn quiet_triggers(
    context: &mut Context<'_>,
    step: u32,
    triggers: &[Trigger],
) -> Result<Vec<String>> {
    let firing = |states: &[char]| -> Vec<String> {
        triggers
            .iter()
            .filter(|trigger| states.contains(&trigger.enabled))
            .map(|trigger| trigger.name.clone())
            .collect()
    };
    if context.executor.engine() == Engine::Sqlite {
        // SQLite's triggers all fire (restoring them was allowed).
        return Ok(triggers
            .iter()
            .map(|trigger| trigger.name.clone())
            .collect());
    }
    if !triggers.iter().any(|t| t.enabled == 'O') {
        return Ok(firing(&['A']));
    }
    context.script(step, "SAVEPOINT _rw_replica").await?;
    let replica = context
        .executor
        .script("SET LOCAL session_replication_role = replica")
        .await
        .is_ok();
    if replica {
        context
            .script(step, "RELEASE SAVEPOINT _rw_replica")
            .await?;
        Ok(firing(&['A', 'R']))
    } else {
        context
            .script(
                step,
                "ROLLBACK TO SAVEPOINT _rw_replica; RELEASE SAVEPOINT _rw_replica",
            )
            .await?;
        Ok(firing(&['O', 'A']))
    }
}

fn info_positions(rows: &RowsChanged) -> Vec<usize> {
    rows.key_columns
        .iter()
        .filter_map(|name| rows.columns.iter().position(|column| &column.name == name))
        .collect()
}

/// The columns of the image table: each row's index, whether it has a
/// before and an after image, its key, its before and its after values.
fn image_columns(rows: &RowsChanged) -> Vec<String> {
    ["idx".to_owned(), "hb".to_owned(), "ha".to_owned()]
        .into_iter()
        .chain((0..rows.key_columns.len()).map(|i| format!("k{i}")))
        .chain((0..rows.columns.len()).map(|i| format!("b{i}")))
        .chain((0..rows.columns.len()).map(|i| format!("a{i}")))
        .collect()
}

/// The images as one PostgreSQL array for each of [`image_columns`] (the
/// values as text), and `unnest(…) AS i(…)`, the rows they make.
fn pg_image_arrays(rows: &RowsChanged) -> (Vec<Bind>, String) {
    let mut binds = vec![
        Bind::IntArray((0..rows.rows.len() as i32).collect()),
        Bind::BoolArray(rows.rows.iter().map(|row| row.before.is_some()).collect()),
        Bind::BoolArray(rows.rows.iter().map(|row| row.after.is_some()).collect()),
    ];
    for i in 0..rows.key_columns.len() {
        binds.push(Bind::TextArray(
            rows.rows
                .iter()
                .map(|row| row.key.get(i).and_then(as_text))
                .collect(),
        ));
    }
    fn before(row: &RowImage) -> Option<&[SqlValue]> {
        row.before.as_deref()
    }
    fn after(row: &RowImage) -> Option<&[SqlValue]> {
        row.after.as_deref()
    }
    for image in [before, after] {
        for i in 0..rows.columns.len() {
            binds.push(Bind::TextArray(
                rows.rows
                    .iter()
                    .map(|row| image(row).and_then(|values| values.get(i).and_then(as_text)))
                    .collect(),
            ));
        }
    }
    let arrays = binds
        .iter()
        .enumerate()
        .map(|(i, bind)| match bind {
            Bind::IntArray(_) => format!("${}::int4[]", i + 1),
            Bind::BoolArray(_) => format!("${}::bool[]", i + 1),
            _ => format!("${}::text[]", i + 1),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let source = format!("unnest({arrays}) AS i({})", image_columns(rows).join(", "));
    (binds, source)
}

/// Creates the temporary image table and fills it: on PostgreSQL with one
/// statement (from `arrays`, [`pg_image_arrays`] made already), on SQLite
/// with one prepared insert run per row.
async fn load_images(
    context: &mut Context<'_>,
    step: u32,
    rows: &RowsChanged,
    arrays: Option<(Vec<Bind>, String)>,
) -> Result<()> {
    let engine = context.executor.engine();
    let column_count = rows.columns.len();
    let key_count = rows.key_columns.len();
    let names = image_columns(rows);
    match engine {
        Engine::Postgres => {
            let definitions = names
                .iter()
                .map(|name| match name.as_str() {
                    "idx" => "idx int4".to_owned(),
                    "hb" | "ha" => format!("{name} bool"),
                    other => format!("{other} text"),
                })
                .collect::<Vec<_>>()
                .join(", ");
            context
                .script(
                    step,
                    &format!("CREATE TEMP TABLE _rw_images ({definitions}) ON COMMIT DROP"),
                )
                .await?;
            let (binds, source) = arrays.unwrap_or_else(|| pg_image_arrays(rows));
            context
                .execute(
                    step,
                    &format!("INSERT INTO _rw_images SELECT * FROM {source}"),
                    &binds,
                )
                .await?;
        }
        Engine::Sqlite => {
            context
                .script(
                    step,
                    &format!("CREATE TEMP TABLE _rw_images ({})", names.join(", ")),
                )
                .await?;
            // One prepared single-row insert, run per row: SQLite compiles a
            // statement with thousands of placeholders far more slowly.
            let marks = (1..=names.len())
                .map(|i| format!("?{i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let values: Vec<Vec<Bind>> = rows
                .rows
                .iter()
                .enumerate()
                .map(|(index, row)| {
                    let mut binds = Vec::with_capacity(names.len());
                    binds.push(Bind::Value(SqlValue::Integer(index as i64)));
                    binds.push(Bind::Value(SqlValue::Integer(i64::from(
                        row.before.is_some(),
                    ))));
                    binds.push(Bind::Value(SqlValue::Integer(i64::from(
                        row.after.is_some(),
                    ))));
                    for i in 0..key_count {
                        binds.push(Bind::Value(
                            row.key.get(i).cloned().unwrap_or(SqlValue::Null),
                        ));
                    }
                    for image in [&row.before, &row.after] {
                        for i in 0..column_count {
                            binds.push(Bind::Value(
                                image
                                    .as_ref()
                                    .and_then(|values| values.get(i).cloned())
                                    .unwrap_or(SqlValue::Null),
                            ));
                        }
                    }
                    binds
                })
                .collect();
            // On SQLite's own handle: through sqlx, each row cost tens of
            // microseconds (BENCHMARKS.md, run H).
            let sql = format!("INSERT INTO temp._rw_images VALUES ({marks})");
            let database = context.database.to_owned();
            let Some(executor) = context.executor.as_sqlite() else {
                unreachable!("SQLite images load on a SQLite executor")
            };
            executor
                .with_handle(|handle| handle.run_many(&sql, &values))
                .await
                .map_err(|error| context_error(&database, step, error))?
                .map_err(|failed| raw_failed(&database, step, failed))?;
            let image_keys = key_slots(key_count);
            context
                .script(
                    step,
                    &format!("CREATE INDEX temp._rw_images_key ON _rw_images ({image_keys})"),
                )
                .await?;
        }
    }
    Ok(())
}
