//! Run, step and target status: a fold over entries.
//!
//! A run's lifecycle: `running` (started: its spec parsed, its paths
//! checked and its plan accepted, not finished yet), then `migrated`,
//! `failed` or `interrupted` (its process died and `rewind recover`
//! recorded what truly happened), then `rolled back` once every effect
//! with an inverse has been compensated (`partly rolled back` before
//! that). An unfinished run is only running while a writer holds the
//! ledger: with none, its process is dead and the run is shown as
//! `interrupted (run `rewind recover`)`. An effect that recovery found
//! never took place (`NeverHappened`) is not counted as an effect.

use std::collections::BTreeMap;
use std::fmt;

use rewind_ledger::{Entry, Event, Outcome, Timestamp};

use crate::inverse::has_inverse;

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lifecycle {
    Running,
    /// Unfinished, and no process holds the ledger to write: the process
    /// that ran it died, and nothing has recovered it yet.
    Abandoned,
    Migrated,
    Failed,
    /// Its process died; recovery recorded what happened.
    Interrupted,
    PartlyRolledBack,
    RolledBack,
}

impl fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lifecycle::Running => "running",
            Lifecycle::Abandoned => "interrupted (run `rewind recover`)",
            Lifecycle::Migrated => "migrated",
            Lifecycle::Failed => "failed",
            Lifecycle::Interrupted => "interrupted",
            Lifecycle::PartlyRolledBack => "partly rolled back",
            Lifecycle::RolledBack => "rolled back",
        })
    }
}

/// Whether a process holds the ledger to write, as its lock tells: only
/// then can an unfinished run still be running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    Holding,
    Absent,
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepState {
    Started,
    Finished,
    Failed,
    /// Its process died during the step; recovery recorded it.
    Interrupted,
    RolledBack,
}

impl fmt::Display for StepState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StepState::Started => "started",
            StepState::Finished => "finished",
            StepState::Failed => "failed",
            StepState::Interrupted => "interrupted",
            StepState::RolledBack => "rolled back",
        })
    }
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepStatus {
    pub step: u32,
    pub kind: String,
    pub operation: String,
    pub state: StepState,
    /// The summary of a finished step or the error of a failed one.
    pub detail: String,
    pub effects: u64,
    pub compensated: u64,
    pub first_seq: u64,
}

/// One run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStatus {
    pub run: String,
    pub spec_id: String,
    pub target: Option<String>,
    pub actor: String,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub outcome: Option<Outcome>,
    pub error: Option<String>,
    pub lifecycle: Lifecycle,
    pub steps: Vec<StepStatus>,
    pub first_seq: u64,
    pub last_seq: u64,
    pub effects: u64,
    pub compensated: u64,
    /// Effects recorded ahead that recovery found never took place.
    pub never_happened: u64,
    pub drift_found: u64,
}

/// Folds entries (in seq order) into the status of every run they start;
/// `writer` says whether an unfinished run may still be running.
pub fn runs(entries: &[Entry], writer: Writer) -> Vec<RunStatus> {
    let mut runs: BTreeMap<String, RunStatus> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    // seq of an effect → (run, step), to credit compensations.
    let mut effect_of: BTreeMap<u64, (String, Option<u32>)> = BTreeMap::new();
    for entry in entries {
        let record = &entry.record;
        if let Event::RunStarted(started) = &record.event {
            let run = record.run.clone().unwrap_or_default();
            order.push(run.clone());
            runs.insert(
                run.clone(),
                RunStatus {
                    run,
                    spec_id: started.spec_id.clone(),
                    target: started.target.clone(),
                    actor: record.actor.clone(),
                    started_at: record.recorded_at,
                    finished_at: None,
                    outcome: None,
                    error: None,
                    lifecycle: Lifecycle::Running,
                    steps: Vec::new(),
                    first_seq: entry.seq(),
                    last_seq: entry.seq(),
                    effects: 0,
                    compensated: 0,
                    never_happened: 0,
                    drift_found: 0,
                },
            );
            continue;
        }
        if let Event::Compensated(compensated) = &record.event {
            if let Some((run, step)) = effect_of.get(&compensated.undoes)
                && let Some(status) = runs.get_mut(run)
            {
                status.compensated += 1;
                status.last_seq = status.last_seq.max(entry.seq());
                if let Some(step) = step
                    && let Some(step) = status.steps.iter_mut().find(|s| s.step == *step)
                {
                    step.compensated += 1;
                }
            }
            continue;
        }
        if let Event::NeverHappened(never) = &record.event {
            if let Some((run, step)) = effect_of.remove(&never.seq)
                && let Some(status) = runs.get_mut(&run)
            {
                status.effects -= 1;
                status.never_happened += 1;
                status.last_seq = status.last_seq.max(entry.seq());
                if let Some(step) = step
                    && let Some(step) = status.steps.iter_mut().find(|s| s.step == step)
                {
                    step.effects -= 1;
                }
            }
            continue;
        }
        let Some(status) = record.run.as_ref().and_then(|run| runs.get_mut(run)) else {
            continue;
        };
        status.last_seq = entry.seq();
        match &record.event {
            Event::StepStarted(started) => status.steps.push(StepStatus {
                step: started.step,
                kind: started.kind.clone(),
                operation: started.operation.clone(),
                state: StepState::Started,
                detail: String::new(),
                effects: 0,
                compensated: 0,
                first_seq: entry.seq(),
            }),
            Event::StepFinished(finished) => {
                if let Some(step) = status.steps.iter_mut().find(|s| s.step == finished.step) {
                    step.state = StepState::Finished;
                    step.detail = finished.summary.clone();
                }
            }
            Event::StepFailed(failed) => {
                if let Some(step) = status.steps.iter_mut().find(|s| s.step == failed.step) {
                    step.state = if failed.interrupted {
                        StepState::Interrupted
                    } else {
                        StepState::Failed
                    };
                    step.detail = failed.error.clone();
                }
            }
            Event::RunFinished(finished) => {
                status.outcome = Some(finished.outcome);
                status.error = finished.error.clone();
                status.finished_at = Some(record.recorded_at);
            }
            Event::DriftFound(_) => status.drift_found += 1,
            event if has_inverse(event) => {
                status.effects += 1;
                effect_of.insert(entry.seq(), (status.run.clone(), event.step()));
                if let Some(step) = event.step()
                    && let Some(step) = status.steps.iter_mut().find(|s| s.step == step)
                {
                    step.effects += 1;
                }
            }
            _ => {}
        }
    }
    order
        .into_iter()
        .filter_map(|run| runs.remove(&run))
        .map(|mut status| {
            for step in &mut status.steps {
                if step.effects > 0 && step.compensated == step.effects {
                    step.state = StepState::RolledBack;
                }
            }
            status.lifecycle = if status.effects > 0 && status.compensated == status.effects {
                Lifecycle::RolledBack
            } else if status.compensated > 0 {
                Lifecycle::PartlyRolledBack
            } else {
                match (status.outcome, writer) {
                    (None, Writer::Holding) => Lifecycle::Running,
                    (None, Writer::Absent) => Lifecycle::Abandoned,
                    (Some(Outcome::Succeeded), _) => Lifecycle::Migrated,
                    (Some(Outcome::Interrupted), _) => Lifecycle::Interrupted,
                    (Some(Outcome::Failed | Outcome::Drifted), _) => Lifecycle::Failed,
                }
            };
            status
        })
        .collect()
}

/// The newest run of each target, by target name.
pub fn targets(runs: &[RunStatus]) -> BTreeMap<String, &RunStatus> {
    let mut latest = BTreeMap::new();
    for run in runs {
        if let Some(target) = &run.target {
            latest.insert(target.clone(), run);
        }
    }
    latest
}
