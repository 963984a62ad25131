//! Recovery after a crash: for each run and rollback whose process died
//! (the inverse plan's sibling projection, `projections::recovery`, finds
//! them; the caller knows they are dead because it holds the write lock),
//! compares the world with the events of the step left open and appends
//! what truly happened.
//!
//! Events of effects are durable before the effects (file effects up to
//! 1000 at a time, a database chunk before its commit), and a step carries
//! its effects out in the order of their events. So the effects of an
//! open step that took place are a prefix of its events: walking them
//! newest first, each is checked against the world until one is found
//! done; every older one is done too. A file event is found done when its
//! drift check passes ([`undo::check_drift`]) and never done when its path
//! is in its old state ([`undo::already_undone`]), after clearing what an
//! interrupted effect left under rewind's staging names ([`undo::tidy`]);
//! a `RowsChanged` chunk by its rows ([`crate::db::Database::chunk_state`]).
//! An effect that never took place gets a `NeverHappened`, so that status,
//! history and the inverse plan leave it out; a world that matches neither
//! state is drift, reported and recorded as `DriftFound`, never guessed
//! at. Then the step gets `StepFailed{interrupted}` and the run
//! `RunFinished{Interrupted}`. An interrupted rollback gets
//! `RollbackFinished{Interrupted}` and stays re-runnable: what it undid
//! without recording is found undone by the next rollback.

use rewind_ledger::{
    BlobStore, Draft, Event, NeverHappened, Outcome, RollbackFinished, RunFinished, StepFailed,
};

use crate::databases::Databases;
use crate::db::{ChunkState, SequenceState};
use crate::error::MigrateError;
use crate::recorder::Recorder;
use crate::undo::{self, Drift, database_of, drift_found, row_drift};

/// A run whose process died, as the ledger shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRun {
    pub run: String,
    pub open_step: Option<OpenStep>,
}

/// The step a dead run left open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenStep {
    pub step: u32,
    pub kind: String,
    pub operation: String,
    /// The events it recorded, oldest first, none compensated.
    pub events: Vec<(u64, Event)>,
}

/// A rollback whose process died.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRollback {
    /// The run its events are recorded under.
    pub run: Option<String>,
    pub started_seq: u64,
    /// What it rolled back, in words.
    pub target: String,
    pub compensated: u64,
    pub drifted: u64,
    /// (the seq an undo command undoes, the seq of its `UndoStarted`).
    pub in_doubt: Vec<(u64, u64)>,
}

/// What recovery found for one event of an open step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Its effect took place (or the event records something done).
    Happened,
    /// Its effect never took place; what the world showed.
    NeverHappened(String),
    /// The world matches neither what the event left behind nor what was
    /// there before.
    Drifted(Vec<Drift>),
}

/// How one dead run was closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecovery {
    pub run: String,
    /// The open step: its number and kind.
    pub step: Option<(u32, String)>,
    /// Effects of the open step that took place.
    pub happened: u64,
    /// Seqs of effects that never took place.
    pub never_happened: Vec<u64>,
    pub drift: Vec<Drift>,
    /// The error recorded with the step (or the run, between steps).
    pub error: String,
}

/// What a recovery found and recorded (or, on a dry run, would record).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    pub runs: Vec<RunRecovery>,
    /// The dead rollbacks, each closed as it stood.
    pub rollbacks: Vec<OpenRollback>,
}

impl Recovery {
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty() && self.rollbacks.is_empty()
    }

    /// Every drift found, run by run.
    pub fn drift(&self) -> impl Iterator<Item = &Drift> {
        self.runs.iter().flat_map(|run| run.drift.iter())
    }
}

/// Whether an event's effect is recorded ahead of it, so that it may
/// never have happened; the others record what was already done.
fn recorded_ahead(event: &Event) -> bool {
    match event {
        Event::PathMoved(_)
        | Event::ModeChanged(_)
        | Event::OwnerChanged(_)
        | Event::FileWritten(_)
        | Event::PathRemoved(_)
        | Event::DirCreated(_)
        | Event::RowsChanged(_)
        | Event::RowsPacked(_)
        | Event::SequenceMoved(_)
        | Event::SchemaChanged(_) => true,
        Event::BackupTaken(_) | Event::CommandRun(_) | Event::CheckRecorded(_) => false,
        // Not effects of a step.
        Event::RunStarted(_)
        | Event::RunFinished(_)
        | Event::StepStarted(_)
        | Event::StepFinished(_)
        | Event::StepFailed(_)
        | Event::RollbackStarted(_)
        | Event::Compensated(_)
        | Event::RollbackFinished(_)
        | Event::DriftFound(_)
        | Event::Note(_)
        | Event::Checkpoint(_)
        | Event::UndoStarted(_)
        | Event::NeverHappened(_) => false,
    }
}

/// The old state a file event's path was found in, in words.
fn old_state(event: &Event) -> String {
    match event {
        Event::PathMoved(e) => format!("{} still holds the tree that was to move", e.from),
        Event::ModeChanged(e) => format!("{} still has mode {:04o}", e.path, e.old),
        Event::OwnerChanged(e) => {
            format!("{} is still owned by {}:{}", e.path, e.old_uid, e.old_gid)
        }
        Event::FileWritten(e) if e.old.is_none() => format!("{} still does not exist", e.path),
        Event::FileWritten(e) => format!("{} still holds its old content", e.path),
        Event::PathRemoved(e) => format!("{} is still there, whole", e.path),
        Event::DirCreated(e) => format!("{} does not exist", e.path),
        other => format!("{} in its old state", undo::subject(other)),
    }
}

fn db_error(event: &Event, error: crate::db::DbError) -> MigrateError {
    MigrateError::Db {
        step: event.step(),
        kind: event.kind().to_owned(),
        error,
    }
}

/// What the world shows of one event. `tidy` clears staging leftovers of
/// file effects first (not on a dry run).
fn verdict(
    blobs: &BlobStore,
    databases: &mut Databases,
    seq: u64,
    event: &Event,
    tidy: bool,
) -> Result<Verdict, MigrateError> {
    if !recorded_ahead(event) {
        // Recorded after the fact: a backup taken, a command that ran, a check.
        return Ok(Verdict::Happened);
    }
    let Some(url) = database_of(event) else {
        if tidy {
            undo::tidy(seq, event)?;
        }
        if undo::already_undone(seq, event)? {
            return Ok(Verdict::NeverHappened(old_state(event)));
        }
        return Ok(match undo::check_drift(blobs, seq, event)? {
            None => Verdict::Happened,
            Some(drift) => Verdict::Drifted(vec![drift]),
        });
    };
    let database = databases.get(url).map_err(|e| db_error(event, e))?;
    let chunk = match event {
        Event::RowsChanged(rows) => Some((rows.rows.len(), rows.chunk, &rows.table)),
        Event::RowsPacked(rows) => Some((rows.rows as usize, rows.chunk, &rows.table)),
        _ => None,
    };
    match event {
        Event::RowsChanged(_) | Event::RowsPacked(_) => {
            let (count, chunk, table) = chunk.expect("a row event");
            let state = database
                .chunk_state(event)
                .map_err(|e| db_error(event, e))?;
            Ok(match state {
                ChunkState::Committed => Verdict::Happened,
                ChunkState::NeverCommitted => Verdict::NeverHappened(format!(
                    "the {count} row(s) of chunk {chunk} of {table} are at their before images: its transaction never committed",
                )),
                ChunkState::Drifted {
                    rows: drifted,
                    at_after,
                    at_before,
                } if drifted.is_empty() => Verdict::Drifted(vec![Drift::new(
                    seq,
                    &format!("{table} (chunk {chunk})"),
                    "rows",
                    "every row at its after image (committed) or every row at its before image (never committed)",
                    &format!("{at_after} at their after image, {at_before} at their before image"),
                )]),
                ChunkState::Drifted { rows: drifted, .. } => {
                    Verdict::Drifted(drifted.iter().map(|row| row_drift(seq, row)).collect())
                }
            })
        }
        Event::SequenceMoved(moved) => {
            let state = database
                .sequence_state(moved)
                .map_err(|e| db_error(event, e))?;
            Ok(match state {
                SequenceState::Moved => Verdict::Happened,
                SequenceState::NotMoved => Verdict::NeverHappened(format!(
                    "sequence {} is still at {}: its transaction never committed",
                    moved.sequence, moved.old
                )),
                SequenceState::Drifted(found) => Verdict::Drifted(vec![Drift::new(
                    seq,
                    &format!("sequence {}", moved.sequence),
                    "value",
                    &format!("{} (or {} had it never moved)", moved.new, moved.old),
                    &found.map_or_else(|| "no value".to_owned(), |value| value.to_string()),
                )]),
            })
        }
        // What a schema statement changed is not recorded beside it, so the
        // database cannot show whether the transaction committed.
        Event::SchemaChanged(changed) => Ok(Verdict::Drifted(vec![Drift::new(
            seq,
            &changed.database,
            "schema",
            &format!("`{}` committed, or never run", changed.up),
            "a schema that cannot show which",
        )])),
        _ => Ok(Verdict::Happened),
    }
}

/// The verdict of every event of an open step (oldest first), walking
/// newest first and stopping at the first effect found done.
pub fn reconcile(
    blobs: &BlobStore,
    databases: &mut Databases,
    events: &[(u64, Event)],
    tidy: bool,
) -> Result<Vec<(u64, Verdict)>, MigrateError> {
    let mut verdicts = Vec::with_capacity(events.len());
    let mut settled = false;
    for (seq, event) in events.iter().rev() {
        let found = if settled {
            Verdict::Happened
        } else {
            verdict(blobs, databases, *seq, event, tidy)?
        };
        // A PostgreSQL sequence moves whether or not its transaction
        // commits, so it proves nothing about the events before it.
        settled = found == Verdict::Happened && !matches!(event, Event::SequenceMoved(_));
        verdicts.push((*seq, found));
    }
    verdicts.reverse();
    Ok(verdicts)
}

/// Closes one dead run: what its open step's events came to, then
/// `StepFailed{interrupted}` and `RunFinished{Interrupted}`. Returns the
/// findings and the events that record them.
fn recover_run(
    blobs: &BlobStore,
    databases: &mut Databases,
    open: &OpenRun,
    tidy: bool,
) -> Result<(RunRecovery, Vec<Event>), MigrateError> {
    let mut events = Vec::new();
    let mut found = RunRecovery {
        run: open.run.clone(),
        step: None,
        happened: 0,
        never_happened: Vec::new(),
        drift: Vec::new(),
        error: "interrupted: the process died between steps".into(),
    };
    if let Some(step) = &open.open_step {
        let verdicts = reconcile(blobs, databases, &step.events, tidy)?;
        for ((seq, verdict), (_, event)) in verdicts.into_iter().zip(&step.events) {
            match verdict {
                Verdict::Happened if recorded_ahead(event) => found.happened += 1,
                Verdict::Happened => {}
                Verdict::NeverHappened(what) => {
                    found.never_happened.push(seq);
                    events.push(Event::NeverHappened(NeverHappened::of(seq, event, what)));
                }
                Verdict::Drifted(drift) => {
                    events.extend(drift.iter().map(|d| drift_found(d, event)));
                    found.drift.extend(drift);
                }
            }
        }
        let ran_command = step
            .events
            .iter()
            .any(|(_, event)| matches!(event, Event::CommandRun(_)));
        let mut error = format!(
            "interrupted: the process died during the step ({})",
            step.operation
        );
        if found.happened + found.never_happened.len() as u64 > 0 || !found.drift.is_empty() {
            error.push_str(&format!(
                "; recovery found {} recorded effect(s) done and {} never done",
                found.happened,
                found.never_happened.len()
            ));
        }
        if !found.drift.is_empty() {
            error.push_str(&format!(", and {} drifted", found.drift.len()));
        }
        if step.kind == "exec" && !ran_command {
            error.push_str("; its command may or may not have run, and nothing records it");
        }
        events.push(Event::StepFailed(StepFailed {
            error: error.clone(),
            interrupted: true,
            step: step.step,
        }));
        found.step = Some((step.step, step.kind.clone()));
        found.error = format!("step {} ({}) {error}", step.step, step.kind);
    }
    events.push(Event::RunFinished(RunFinished {
        error: Some(found.error.clone()),
        outcome: Outcome::Interrupted,
    }));
    Ok((found, events))
}

/// Recovers every dead run and rollback given; with `dry_run`, only looks
/// (staging leftovers stay, so an effect interrupted inside a copy across
/// filesystems shows as drift until a real recovery clears it).
pub fn recover(
    recorder: &Recorder,
    databases: &mut Databases,
    runs: &[OpenRun],
    rollbacks: &[OpenRollback],
    dry_run: bool,
) -> Result<Recovery, MigrateError> {
    let mut recovery = Recovery::default();
    // Interrupted rollbacks are closed first: a drift recovery records
    // below then falls after every rollback's end, so that nobody reads it
    // as the drift an unfinished rollback met (`projections::history`
    // tells a rollback's drift by the rollback's bounds).
    let mut drafts = Vec::new();
    for open in rollbacks {
        drafts.push(Draft::new(
            open.run.as_deref(),
            Event::RollbackFinished(RollbackFinished {
                compensated: open.compensated,
                drifted: open.drifted,
                outcome: Outcome::Interrupted,
            }),
        ));
        recovery.rollbacks.push(open.clone());
    }
    if !dry_run && !drafts.is_empty() {
        recorder.append_drafts(drafts)?;
    }
    for open in runs {
        let (found, events) = recover_run(recorder.blobs(), databases, open, !dry_run)?;
        if !dry_run {
            // One durable batch a run: a crash during recovery leaves the run
            // unfinished, and the next recovery looks again.
            recorder.append(Some(&open.run), events)?;
        }
        recovery.runs.push(found);
    }
    Ok(recovery)
}
