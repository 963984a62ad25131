//! Undoing effect events: the drift check (the precondition column of
//! DESIGN.md's table) and the inverse, dispatched to the step module that
//! recorded the event, and the rollback loop that appends `Compensated`
//! for each inverse applied (and `UndoStarted` before an undo command,
//! which runs at most once).
//!
//! What to undo and in which order is decided by the inverse-plan
//! projection; this module only knows how.

use std::fmt;

use rewind_ledger::{
    BlobStore, CommandRun, Compensated, Draft, DriftFound, Event, Note, Outcome, RollbackFinished,
    RollbackStarted, RollbackTarget, SqlValue, StepStarted, UndoStarted, render_key,
};

use crate::databases::Databases;
use crate::db::{self, RowDrift, UndoOptions};
use crate::error::MigrateError;
use crate::recorder::{BATCH, Recorder};
use crate::steps::{chmod, chown, exec, mkdir, move_, remove, write};

/// The world no longer matches what an event left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub seq: u64,
    pub path: String,
    /// `missing`, `in the way`, `content`, `mode`, `owner`, `type`, `not empty`.
    pub what: String,
    pub expected: String,
    pub actual: String,
}

impl Drift {
    pub fn new(seq: u64, path: &str, what: &str, expected: &str, actual: &str) -> Drift {
        Drift {
            seq,
            path: path.to_owned(),
            what: what.to_owned(),
            expected: expected.to_owned(),
            actual: actual.to_owned(),
        }
    }
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seq {}: {}: {} (expected {}, found {})",
            self.seq, self.path, self.what, self.expected, self.actual
        )
    }
}

/// Checks the precondition of undoing `event` (stored at `seq`).
pub fn check_drift(
    blobs: &BlobStore,
    seq: u64,
    event: &Event,
) -> Result<Option<Drift>, MigrateError> {
    match event {
        Event::PathMoved(e) => move_::drift(blobs, seq, e),
        Event::ModeChanged(e) => chmod::drift(seq, e),
        Event::OwnerChanged(e) => chown::drift(seq, e),
        Event::FileWritten(e) => write::drift(seq, e),
        Event::PathRemoved(e) => remove::drift(seq, e),
        Event::DirCreated(e) => mkdir::drift(seq, e),
        Event::CommandRun(_) => Ok(None),
        Event::RunStarted(_)
        | Event::RunFinished(_)
        | Event::StepStarted(_)
        | Event::StepFinished(_)
        | Event::StepFailed(_)
        | Event::BackupTaken(_)
        | Event::RowsChanged(_)
        | Event::RowsPacked(_)
        | Event::SequenceMoved(_)
        | Event::SchemaChanged(_)
        | Event::CheckRecorded(_)
        | Event::RollbackStarted(_)
        | Event::Compensated(_)
        | Event::RollbackFinished(_)
        | Event::DriftFound(_)
        | Event::Note(_)
        | Event::Checkpoint(_)
        | Event::UndoStarted(_)
        | Event::NeverHappened(_) => Err(not_here(seq, event)),
    }
}

/// Clears what an interrupted effect of `event`, or an interrupted inverse,
/// left under rewind's own staging names, putting back a tree that was
/// moved aside when its copy never took its place (see
/// [`crate::steps::staging`]). Run before the drift check.
pub fn tidy(seq: u64, event: &Event) -> Result<(), MigrateError> {
    match event {
        Event::PathMoved(e) => move_::tidy(e),
        Event::FileWritten(e) => write::tidy(e),
        Event::PathRemoved(e) => remove::tidy(e),
        // Atomic effects: nothing is ever left half done.
        Event::ModeChanged(_)
        | Event::OwnerChanged(_)
        | Event::DirCreated(_)
        | Event::CommandRun(_) => Ok(()),
        Event::RunStarted(_)
        | Event::RunFinished(_)
        | Event::StepStarted(_)
        | Event::StepFinished(_)
        | Event::StepFailed(_)
        | Event::BackupTaken(_)
        | Event::RowsChanged(_)
        | Event::RowsPacked(_)
        | Event::SequenceMoved(_)
        | Event::SchemaChanged(_)
        | Event::CheckRecorded(_)
        | Event::RollbackStarted(_)
        | Event::Compensated(_)
        | Event::RollbackFinished(_)
        | Event::DriftFound(_)
        | Event::Note(_)
        | Event::Checkpoint(_)
        | Event::UndoStarted(_)
        | Event::NeverHappened(_) => Err(not_here(seq, event)),
    }
}

/// Applies the inverse of `event`; the caller checked drift first. An
/// `exec` undo command runs in its step's `cwd` and with its `timeout`,
/// read from the ledger.
pub fn undo(recorder: &Recorder, item: &UndoItem) -> Result<(), MigrateError> {
    let (seq, event) = (item.seq, &item.event);
    match event {
        Event::PathMoved(e) => move_::undo(e),
        Event::ModeChanged(e) => chmod::undo(e),
        Event::OwnerChanged(e) => chown::undo(e),
        Event::FileWritten(e) => write::undo(recorder.blobs(), e),
        Event::PathRemoved(e) => remove::undo(recorder.blobs(), e),
        Event::DirCreated(e) => mkdir::undo(e),
        Event::CommandRun(e) => {
            let params = intent_of(recorder, item.run.as_deref(), seq, e.step)?
                .map(|started| started.params)
                .unwrap_or_default();
            exec::undo(seq, e, &params)
        }
        Event::RunStarted(_)
        | Event::RunFinished(_)
        | Event::StepStarted(_)
        | Event::StepFinished(_)
        | Event::StepFailed(_)
        | Event::BackupTaken(_)
        | Event::RowsChanged(_)
        | Event::RowsPacked(_)
        | Event::SequenceMoved(_)
        | Event::SchemaChanged(_)
        | Event::CheckRecorded(_)
        | Event::RollbackStarted(_)
        | Event::Compensated(_)
        | Event::RollbackFinished(_)
        | Event::DriftFound(_)
        | Event::Note(_)
        | Event::Checkpoint(_)
        | Event::UndoStarted(_)
        | Event::NeverHappened(_) => Err(not_here(seq, event)),
    }
}

/// The intent of step `step` of `run`: its `StepStarted`, the newest one
/// recorded before `seq`.
fn intent_of(
    recorder: &Recorder,
    run: Option<&str>,
    seq: u64,
    step: u32,
) -> Result<Option<StepStarted>, MigrateError> {
    let ledger = recorder.lock();
    for at in (1..seq).rev() {
        let entry = ledger.get(at)?;
        if entry.record.run.as_deref() != run {
            continue;
        }
        if let Event::StepStarted(started) = entry.record.event {
            if started.step == step {
                return Ok(Some(started));
            }
        } else if let Event::RunStarted(_) = entry.record.event {
            return Ok(None);
        }
    }
    Ok(None)
}

/// Whether the world is already as it was before `event`: its inverse was
/// applied by a rollback that stopped before recording it, or the effect
/// itself never happened (its event is durable before the effect, and the
/// step was interrupted or failed in between).
pub fn already_undone(seq: u64, event: &Event) -> Result<bool, MigrateError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let metadata = |path: &str| std::fs::symlink_metadata(path).ok();
    Ok(match event {
        // The source goes aside before its copy takes its place (`tidy`
        // puts it back), so a whole source means the move did not happen,
        // whatever is at `to` now.
        Event::PathMoved(e) => {
            metadata(&e.from).is_some()
                && crate::tree::digest(std::path::Path::new(&e.from))? == e.digest
        }
        Event::ModeChanged(e) => {
            metadata(&e.path).is_some_and(|m| m.permissions().mode() & 0o7777 == e.old)
        }
        Event::OwnerChanged(e) => {
            metadata(&e.path).is_some_and(|m| (m.uid(), m.gid()) == (e.old_uid, e.old_gid))
        }
        Event::FileWritten(e) => match (&e.old, metadata(&e.path)) {
            (None, None) => true,
            (Some(old), Some(m)) if m.is_file() => {
                crate::tree::file_sha256(std::path::Path::new(&e.path))? == *old
                    && e.old_mode
                        .is_none_or(|mode| m.permissions().mode() & 0o7777 == mode)
            }
            _ => false,
        },
        Event::PathRemoved(e) => {
            metadata(&e.path).is_some()
                && crate::tree::digest(std::path::Path::new(&e.path))? == e.digest
        }
        Event::DirCreated(e) => metadata(&e.path).is_none(),
        Event::CommandRun(_) => false,
        Event::RunStarted(_)
        | Event::RunFinished(_)
        | Event::StepStarted(_)
        | Event::StepFinished(_)
        | Event::StepFailed(_)
        | Event::BackupTaken(_)
        | Event::RowsChanged(_)
        | Event::RowsPacked(_)
        | Event::SequenceMoved(_)
        | Event::SchemaChanged(_)
        | Event::CheckRecorded(_)
        | Event::RollbackStarted(_)
        | Event::Compensated(_)
        | Event::RollbackFinished(_)
        | Event::DriftFound(_)
        | Event::Note(_)
        | Event::Checkpoint(_)
        | Event::UndoStarted(_)
        | Event::NeverHappened(_) => return Err(not_here(seq, event)),
    })
}

fn not_here(seq: u64, event: &Event) -> MigrateError {
    MigrateError::CannotUndo {
        seq,
        kind: event.kind().to_owned(),
        reason: "the filesystem executor does not undo this kind of event".into(),
    }
}

/// The database an event of the database layer belongs to, or `None` for
/// every other event.
pub fn database_of(event: &Event) -> Option<&str> {
    match event {
        Event::RowsChanged(e) => Some(&e.database),
        Event::RowsPacked(e) => Some(&e.database),
        Event::SequenceMoved(e) => Some(&e.database),
        Event::SchemaChanged(e) => Some(&e.database),
        Event::RunStarted(_)
        | Event::RunFinished(_)
        | Event::StepStarted(_)
        | Event::StepFinished(_)
        | Event::StepFailed(_)
        | Event::BackupTaken(_)
        | Event::PathMoved(_)
        | Event::ModeChanged(_)
        | Event::OwnerChanged(_)
        | Event::FileWritten(_)
        | Event::PathRemoved(_)
        | Event::DirCreated(_)
        | Event::CommandRun(_)
        | Event::CheckRecorded(_)
        | Event::RollbackStarted(_)
        | Event::Compensated(_)
        | Event::RollbackFinished(_)
        | Event::DriftFound(_)
        | Event::Note(_)
        | Event::Checkpoint(_)
        | Event::UndoStarted(_)
        | Event::NeverHappened(_) => None,
    }
}

fn db_error(event: &Event, error: db::DbError) -> MigrateError {
    MigrateError::Db {
        step: event.step(),
        kind: event.kind().to_owned(),
        error,
    }
}

/// A drifted row as a [`Drift`]: table and key, the differing columns,
/// their expected (after image) and found values.
pub fn row_drift(seq: u64, drift: &RowDrift) -> Drift {
    let names = &drift.image_columns;
    // A value written as the other side's is told apart by its storage
    // class: the integer 20 and the text '20', NULL and the text 'NULL'.
    let render = |image: &Option<Vec<SqlValue>>, other: &Option<Vec<SqlValue>>| match image {
        None => "absent".to_owned(),
        Some(values) => names
            .iter()
            .zip(values)
            .enumerate()
            .filter(|(_, (name, _))| drift.columns.contains(name))
            .map(|(index, (name, value))| {
                let other = other.as_ref().and_then(|other| other.get(index));
                format!("{name}={}", value.shown_beside(other))
            })
            .collect::<Vec<_>>()
            .join(", "),
    };
    Drift {
        seq,
        path: format!(
            "{} ({})",
            drift.table,
            rewind_ledger::render_key(&drift.key)
        ),
        what: format!("columns {}", drift.columns.join(", ")),
        expected: render(&drift.expected, &drift.actual),
        actual: render(&drift.actual, &drift.expected),
    }
}

/// The `DriftFound` recording `drift` of `event`: a file's subject is its
/// path, a row's its table, key and differing columns.
pub fn drift_found(drift: &Drift, event: &Event) -> Event {
    Event::DriftFound(if database_of(event).is_some() {
        DriftFound {
            actual: drift.actual.clone(),
            expected: drift.expected.clone(),
            seq: drift.seq,
            subject: format!("{}: {}", drift.path, drift.what),
        }
    } else {
        DriftFound {
            actual: format!("{}: {}", drift.what, drift.actual),
            expected: drift.expected.clone(),
            seq: drift.seq,
            subject: drift.path.clone(),
        }
    })
}

/// The drift undoing a database event would meet now; changes nothing.
pub fn check_db_drift(
    databases: &mut Databases,
    seq: u64,
    event: &Event,
) -> Result<Vec<Drift>, MigrateError> {
    let Some(url) = database_of(event) else {
        return Ok(Vec::new());
    };
    let database = databases.get(url).map_err(|e| db_error(event, e))?;
    let report = database
        .check_drift(event)
        .map_err(|e| db_error(event, e))?;
    Ok(report
        .drift
        .iter()
        .map(|drift| row_drift(seq, drift))
        .collect())
}

/// The most `RowsChanged` events undone in one database transaction: as
/// many as one chunk of the default size makes. A group is of consecutive
/// events, so it may span the end of one chunk and the start of another.
const ROW_GROUP: usize = 10;

/// The items at the start of `items` that change rows of one table in one
/// step of one run: up to [`ROW_GROUP`] of them, undone in one transaction.
/// Empty unless the first is a `RowsChanged`.
fn row_group(items: &[UndoItem]) -> &[UndoItem] {
    /// Database, table, step and key columns of a row event.
    fn chunk_of(event: &Event) -> Option<(&str, &str, u32, &[String])> {
        match event {
            Event::RowsChanged(e) => Some((&e.database, &e.table, e.step, &e.key_columns)),
            Event::RowsPacked(e) => Some((&e.database, &e.table, e.step, &e.key_columns)),
            _ => None,
        }
    }
    let same = |a: &UndoItem, b: &UndoItem| {
        a.run == b.run && chunk_of(&a.event).is_some() && chunk_of(&a.event) == chunk_of(&b.event)
    };
    let Some(first) = items.first() else {
        return items;
    };
    if chunk_of(&first.event).is_none() {
        return &items[..0];
    }
    let length = items
        .iter()
        .take(ROW_GROUP)
        .take_while(|item| same(first, item))
        .count();
    &items[..length]
}

/// One item to undo, as the inverse plan lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndoItem {
    pub seq: u64,
    pub run: Option<String>,
    pub event: Event,
    /// The seq of an `UndoStarted` for this item that nothing says
    /// finished: its undo command may or may not have taken effect.
    pub undo_started: Option<u64>,
    /// What the operator decided for an undo in doubt.
    pub resolution: Option<Resolution>,
}

/// What to do with an undo command in doubt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// It took effect: record it compensated, with a note, without running it.
    Undone,
    /// Run it again.
    Retry,
}

/// An undo command that started and is not known to have taken effect;
/// it is not run again unless the operator decides so ([`Resolution`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InDoubt {
    /// The seq of the `CommandRun` it undoes.
    pub seq: u64,
    /// The seq of its `UndoStarted`.
    pub started: u64,
    pub command: String,
}

/// What to do on drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDrift {
    /// Stop before touching the drifted item.
    Stop,
    /// Record `DriftFound`, leave the item, go on.
    Skip,
}

/// Progress of a rollback, for the printer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackProgress {
    Undone {
        seq: u64,
        kind: &'static str,
        subject: String,
    },
    Drifted(Drift),
}

/// How a rollback went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackReport {
    pub compensated: u64,
    /// Database events whose rows were restored but for those that
    /// drifted (`--on-drift skip`): left uncompensated, so that a later
    /// rollback finishes them.
    pub in_part: u64,
    pub drifted: Vec<Drift>,
    pub outcome: Outcome,
    /// Set when an inverse failed outright (not drift).
    pub error: Option<String>,
    /// Set when the rollback stopped at an undo command in doubt (with
    /// `error`): one an earlier rollback started, or one that failed now.
    pub in_doubt: Option<InDoubt>,
}

/// The subject of an event in words: its first path, or its table and
/// rows (`teams(7)`; `teams(1 … 1000, 1000 rows)`).
pub fn subject(event: &Event) -> String {
    let rows: Option<(&String, Vec<Vec<SqlValue>>)> = match event {
        Event::RowsChanged(e) => {
            Some((&e.table, e.rows.iter().map(|row| row.key.clone()).collect()))
        }
        Event::RowsPacked(e) => {
            Some((&e.table, rewind_ledger::packed::keys(e).unwrap_or_default()))
        }
        _ => None,
    };
    if let Some((table, keys)) = rows {
        return match keys.as_slice() {
            [] => table.clone(),
            [key] => format!("{table}({})", render_key(key)),
            [first, .., last] => format!(
                "{table}({} … {}, {} rows)",
                render_key(first),
                render_key(last),
                keys.len()
            ),
        };
    }
    match event.subjects().into_iter().next() {
        Some(rewind_ledger::Subject::Path(path)) => path,
        Some(rewind_ledger::Subject::Row(table, key)) => format!("{table}({key})"),
        None => match event {
            Event::CommandRun(e) => e.argv.join(" "),
            Event::SchemaChanged(e) => format!("`{}`", shortened(&e.up)),
            Event::SequenceMoved(e) => e.sequence.clone(),
            _ => String::new(),
        },
    }
}

/// A statement on one line (`plan::one_line`), cut after 60
/// characters: enough to tell which one it was.
fn shortened(statement: &str) -> String {
    const MAX: usize = 60;
    let line = crate::plan::one_line(statement);
    match line.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{} …", line[..cut].trim_end()),
        None => line,
    }
}

/// Undoes `items` in the order given (newest first), recording the
/// rollback. `run` is the run the rollback's own events belong to;
/// database events go through `databases` (connected once per database).
// Each argument is a separate decision of the caller; a struct would only
// rename them.
#[allow(clippy::too_many_arguments)]
pub fn rollback(
    recorder: &Recorder,
    run: Option<&str>,
    target: RollbackTarget,
    cascade: bool,
    items: &[UndoItem],
    on_drift: OnDrift,
    databases: &mut Databases,
    progress: &mut dyn FnMut(&RollbackProgress),
) -> Result<RollbackReport, MigrateError> {
    recorder.append_one(
        run,
        Event::RollbackStarted(RollbackStarted {
            cascade,
            skip_drift: on_drift == OnDrift::Skip,
            target,
        }),
    )?;
    let mut report = RollbackReport {
        compensated: 0,
        in_part: 0,
        drifted: Vec::new(),
        outcome: Outcome::Succeeded,
        error: None,
        in_doubt: None,
    };
    // Compensations are appended in batches, one flush per batch. A crash
    // between an inverse and its batch's flush leaves items undone but not
    // recorded; the next run of the rollback finds them in their original
    // state (`already_undone`) and records them without acting again. An
    // undo command leaves nothing to find: it is announced by a durable
    // `UndoStarted` and never run twice without the operator's word.
    let mut pending: Vec<Draft> = Vec::new();
    let flush = |pending: &mut Vec<Draft>| -> Result<(), MigrateError> {
        if !pending.is_empty() {
            recorder.append_drafts(std::mem::take(pending))?;
        }
        Ok(())
    };
    // Items already undone as part of the group of an earlier item.
    let mut grouped = 0;
    for (index, item) in items.iter().enumerate() {
        if grouped > 0 {
            grouped -= 1;
            continue;
        }
        if let Some(url) = database_of(&item.event) {
            // The database layer checks drift and undoes in one transaction;
            // the next items that change rows of the same table in the same
            // step (the events of one chunk) share it.
            let options = UndoOptions {
                on_drift: match on_drift {
                    OnDrift::Stop => db::OnDrift::Stop,
                    OnDrift::Skip => db::OnDrift::Skip,
                },
                allow_irreversible: true,
                allow_triggers: databases.allow_triggers,
            };
            let group = row_group(&items[index..]);
            // An error names the event it arose at.
            let undone = match databases.get(url) {
                Err(error) => Err(db_error(&item.event, error)),
                Ok(database) if group.len() > 1 => {
                    let events: Vec<&Event> = group.iter().map(|item| &item.event).collect();
                    database
                        .undo_group(&events, options)
                        .map_err(|(at, error)| db_error(&group[at].event, error))
                }
                Ok(database) => database
                    .undo(&item.event, options)
                    .map(|report| vec![report])
                    .map_err(|error| db_error(&item.event, error)),
            };
            let undone = match undone {
                Ok(undone) => undone,
                Err(error) => {
                    report.outcome = Outcome::Failed;
                    report.error = Some(error.to_string());
                    break;
                }
            };
            grouped = undone.len().saturating_sub(1);
            let mut stopped = false;
            for (item, undone) in items[index..].iter().zip(&undone) {
                if !undone.drift.is_empty() {
                    flush(&mut pending)?;
                    let mut events = Vec::new();
                    for row in &undone.drift {
                        let drift = row_drift(item.seq, row);
                        progress(&RollbackProgress::Drifted(drift.clone()));
                        events.push(drift_found(&drift, &item.event));
                        report.drifted.push(drift);
                    }
                    recorder.append(item.run.as_deref(), events)?;
                    match on_drift {
                        OnDrift::Stop => {
                            report.outcome = Outcome::Drifted;
                            stopped = true;
                            break;
                        }
                        // The rows that did not drift were restored; the item
                        // stays uncompensated so that a later rollback, after
                        // the drift is dealt with, finishes it.
                        OnDrift::Skip => {
                            if undone.restored > 0 {
                                report.in_part += 1;
                            }
                            continue;
                        }
                    }
                }
                pending.push(Draft::new(
                    item.run.as_deref(),
                    Event::Compensated(Compensated { undoes: item.seq }),
                ));
                report.compensated += 1;
                progress(&RollbackProgress::Undone {
                    seq: item.seq,
                    kind: item.event.kind(),
                    subject: if undone.already_restored > 0 && undone.restored == 0 {
                        format!("{} (found already undone)", subject(&item.event))
                    } else if !undone.triggers_fired.is_empty() {
                        format!(
                            "{} (triggers fired: {})",
                            subject(&item.event),
                            undone.triggers_fired.join(", ")
                        )
                    } else {
                        subject(&item.event)
                    },
                });
            }
            // The database undo has committed: record it before the next one.
            flush(&mut pending)?;
            if stopped {
                break;
            }
            continue;
        }
        if let Event::CommandRun(command) = &item.event {
            if undo_command(recorder, item, command, &mut pending, &mut report, progress)? {
                continue;
            }
            break;
        }
        if let Err(error) = tidy(item.seq, &item.event) {
            report.outcome = Outcome::Failed;
            report.error = Some(error.to_string());
            break;
        }
        let mut act = true;
        match check_drift(recorder.blobs(), item.seq, &item.event) {
            Ok(Some(_)) if already_undone(item.seq, &item.event)? => act = false,
            Ok(Some(drift)) => {
                flush(&mut pending)?;
                progress(&RollbackProgress::Drifted(drift.clone()));
                recorder.append_one(item.run.as_deref(), drift_found(&drift, &item.event))?;
                report.drifted.push(drift);
                match on_drift {
                    OnDrift::Stop => {
                        report.outcome = Outcome::Drifted;
                        break;
                    }
                    OnDrift::Skip => continue,
                }
            }
            Ok(None) => {}
            Err(error) => {
                report.outcome = Outcome::Failed;
                report.error = Some(error.to_string());
                break;
            }
        }
        if act && let Err(error) = undo(recorder, item) {
            report.outcome = Outcome::Failed;
            report.error = Some(error.to_string());
            break;
        }
        pending.push(Draft::new(
            item.run.as_deref(),
            Event::Compensated(Compensated { undoes: item.seq }),
        ));
        if pending.len() >= BATCH {
            flush(&mut pending)?;
        }
        report.compensated += 1;
        progress(&RollbackProgress::Undone {
            seq: item.seq,
            kind: item.event.kind(),
            subject: if act {
                subject(&item.event)
            } else {
                format!("{} (found already undone)", subject(&item.event))
            },
        });
    }
    flush(&mut pending)?;
    if report.outcome == Outcome::Succeeded && !report.drifted.is_empty() {
        report.outcome = Outcome::Drifted;
    }
    recorder.append_one(
        run,
        Event::RollbackFinished(RollbackFinished {
            compensated: report.compensated,
            drifted: report.drifted.len() as u64,
            outcome: report.outcome,
        }),
    )?;
    Ok(report)
}

/// Undoes a `CommandRun` at most once: `UndoStarted` is durable before its
/// undo command starts (appended with the compensations `pending`), and
/// `Compensated` right after it exits 0. An undo in doubt stops the
/// rollback unless the operator resolved it. Returns whether the rollback
/// goes on.
fn undo_command(
    recorder: &Recorder,
    item: &UndoItem,
    command: &CommandRun,
    pending: &mut Vec<Draft>,
    report: &mut RollbackReport,
    progress: &mut dyn FnMut(&RollbackProgress),
) -> Result<bool, MigrateError> {
    let argv = command.undo.as_deref().unwrap_or_default().join(" ");
    let run = item.run.as_deref();
    let compensated = Draft::new(run, Event::Compensated(Compensated { undoes: item.seq }));
    let stop = |report: &mut RollbackReport, error: String, started: u64| {
        report.outcome = Outcome::Failed;
        report.error = Some(error);
        report.in_doubt = Some(InDoubt {
            seq: item.seq,
            started,
            command: argv.clone(),
        });
        Ok(false)
    };
    let described = match (item.undo_started, item.resolution) {
        (Some(started), None) => {
            return stop(
                report,
                format!(
                    "seq {}: the undo command `{argv}` was started at seq {started} by a rollback that stopped before recording its end; it may or may not have taken effect, and is not run twice",
                    item.seq
                ),
                started,
            );
        }
        (Some(started), Some(Resolution::Undone)) => {
            let note = Note {
                about_run: item.run.clone(),
                about_seq: Some(item.seq),
                text: format!(
                    "the operator found that the undo command `{argv}` (started at seq {started}) took effect; recorded as undone without running it again"
                ),
            };
            pending.extend([Draft::new(run, Event::Note(note)), compensated]);
            recorder.append_drafts(std::mem::take(pending))?;
            format!("{} (marked undone)", subject(&item.event))
        }
        (None, _) | (Some(_), Some(Resolution::Retry)) => {
            pending.push(Draft::new(
                run,
                Event::UndoStarted(UndoStarted { undoes: item.seq }),
            ));
            let appended = recorder.append_drafts(std::mem::take(pending))?;
            let started = appended.last().map_or(0, |entry| entry.seq());
            if let Err(error) = undo(recorder, item) {
                return stop(report, error.to_string(), started);
            }
            recorder.append_drafts(vec![compensated])?;
            subject(&item.event)
        }
    };
    report.compensated += 1;
    progress(&RollbackProgress::Undone {
        seq: item.seq,
        kind: item.event.kind(),
        subject: described,
    });
    Ok(true)
}

/// For `--dry-run`: the drift each item would meet (none for an item found
/// in its old state, which the rollback records undone). An item is
/// checked now only when no newer item of the plan will have changed what
/// its check looks at first — a newer event on the same path or inside it,
/// or a newer move, removal or creation above it (a newer chmod or chown
/// of an ancestor does not matter); the others are checked when reached.
pub fn dry_run(
    blobs: &BlobStore,
    databases: &mut Databases,
    items: &[UndoItem],
) -> Result<Vec<(u64, Option<Drift>, bool)>, MigrateError> {
    use rewind_ledger::Subject;
    use std::path::Path;
    let mut out = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let subjects = item.event.subjects();
        let shadowed = items[..index].iter().any(|newer| {
            let attribute_only =
                matches!(newer.event, Event::ModeChanged(_) | Event::OwnerChanged(_));
            newer.event.subjects().iter().any(|n| {
                subjects.iter().any(|o| match (n, o) {
                    (Subject::Path(n), Subject::Path(o)) => {
                        Path::new(n).starts_with(o)
                            || (!attribute_only && Path::new(o).starts_with(n))
                    }
                    _ => n == o,
                })
            })
        });
        if shadowed {
            out.push((item.seq, None, false));
        } else if database_of(&item.event).is_some() {
            // A schema change may remove what an older item's check reads:
            // once one is ahead, older database items are checked when reached.
            let schema_ahead = items[..index]
                .iter()
                .any(|newer| matches!(newer.event, Event::SchemaChanged(_)));
            if schema_ahead || matches!(item.event, Event::SchemaChanged(_)) {
                out.push((item.seq, None, !schema_ahead));
            } else {
                let drift = check_db_drift(databases, item.seq, &item.event)?;
                out.push((item.seq, drift.into_iter().next(), true));
            }
        } else {
            // Found in its old state (its effect never happened, or an
            // interrupted rollback undid it), it is recorded undone
            // without acting: no drift.
            let drift = match check_drift(blobs, item.seq, &item.event)? {
                Some(_) if already_undone(item.seq, &item.event)? => None,
                drift => drift,
            };
            out.push((item.seq, drift, true));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_tells_values_written_alike_apart_by_their_storage_class() {
        let names = ["id", "n", "s", "v"].map(str::to_owned).to_vec();
        let drift = RowDrift {
            table: "t".into(),
            key: vec![SqlValue::Integer(1)],
            columns: names[1..].to_vec(),
            image_columns: names,
            expected: Some(vec![
                SqlValue::Integer(1),
                SqlValue::Integer(20),
                SqlValue::Null,
                SqlValue::Integer(3),
            ]),
            actual: Some(vec![
                SqlValue::Integer(1),
                SqlValue::Text("20".into()),
                SqlValue::Text("NULL".into()),
                SqlValue::Integer(4),
            ]),
        };
        let drift = row_drift(7, &drift);
        assert_eq!(drift.expected, "n=20 (integer), s=NULL (null), v=3");
        assert_eq!(drift.actual, "n=20 (text), s=NULL (text), v=4");
    }
}
