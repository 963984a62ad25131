//! Unfinished work, for `rewind recover`: runs with a `RunStarted` and no
//! `RunFinished`, the step each left open (a `StepStarted` with no
//! `StepFinished` or `StepFailed`) with the events that step recorded, and
//! rollbacks with a `RollbackStarted` and no `RollbackFinished`.
//!
//! Whether the process behind unfinished work is still alive is not in
//! the events; the ledger's lock tells it. A process holding the ledger to
//! write is alive; a process that holds the write lock itself knows every
//! unfinished run and rollback it did not start is dead. The caller
//! decides, and only then recovers what this fold finds.

use std::collections::{BTreeMap, BTreeSet};

use rewind_ledger::{Entry, Event, RollbackTarget};

/// The kinds that open and close runs and rollbacks: from these alone
/// [`unfinished`] finds what is unfinished (without the open steps).
pub const MARKER_KINDS: &[&str] = &[
    "RunStarted",
    "RunFinished",
    "RollbackStarted",
    "RollbackFinished",
];

/// A step that started and never ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenStep {
    pub step: u32,
    pub kind: String,
    pub operation: String,
    /// The seq of its `StepStarted`.
    pub started_seq: u64,
    /// The events the step recorded, oldest first, without those already
    /// compensated or already found never to have happened.
    pub events: Vec<(u64, Event)>,
}

/// A run that started and never finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnfinishedRun {
    pub run: String,
    /// The seq of its `RunStarted`.
    pub started_seq: u64,
    pub open_step: Option<OpenStep>,
}

/// A rollback that started and never finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnfinishedRollback {
    /// The run its events were recorded under (`None` for `--after`).
    pub run: Option<String>,
    /// The seq of its `RollbackStarted`.
    pub started_seq: u64,
    pub target: RollbackTarget,
    /// `Compensated` and `DriftFound` recorded after it started, before the
    /// next run or rollback began.
    pub compensated: u64,
    pub drifted: u64,
    /// Undo commands it started that nothing says finished: (the seq the
    /// command undoes, the seq of its `UndoStarted`).
    pub in_doubt: Vec<(u64, u64)>,
}

/// Everything unfinished, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unfinished {
    pub runs: Vec<UnfinishedRun>,
    pub rollbacks: Vec<UnfinishedRollback>,
}

impl Unfinished {
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty() && self.rollbacks.is_empty()
    }

    /// The oldest seq that starts unfinished work: the entries from there
    /// to the head hold everything [`unfinished`] needs to tell the open
    /// steps.
    pub fn first_seq(&self) -> Option<u64> {
        let runs = self.runs.iter().map(|run| run.started_seq);
        let rollbacks = self.rollbacks.iter().map(|rollback| rollback.started_seq);
        runs.chain(rollbacks).min()
    }
}

/// Folds entries (in seq order, from at least [`Unfinished::first_seq`]
/// to the head) into the unfinished runs and rollbacks. Given only the
/// entries of [`MARKER_KINDS`], it finds the same runs and rollbacks,
/// without their open steps.
pub fn unfinished(entries: &[Entry]) -> Unfinished {
    let settled: BTreeSet<u64> = entries
        .iter()
        .filter_map(|entry| match &entry.record.event {
            Event::Compensated(compensated) => Some(compensated.undoes),
            Event::NeverHappened(never) => Some(never.seq),
            _ => None,
        })
        .collect();
    let mut runs: BTreeMap<String, UnfinishedRun> = BTreeMap::new();
    // Open rollbacks by the run their events are recorded under, newest last.
    let mut rollbacks: BTreeMap<Option<String>, Vec<UnfinishedRollback>> = BTreeMap::new();
    // The rollback that later `Compensated`, `DriftFound` and `UndoStarted`
    // belong to: the newest one started, until another run or rollback begins.
    let mut current: Option<(Option<String>, u64)> = None;
    for entry in entries {
        let record = &entry.record;
        let seq = entry.seq();
        match &record.event {
            Event::RunStarted(_) => {
                current = None;
                if let Some(run) = &record.run {
                    runs.insert(
                        run.clone(),
                        UnfinishedRun {
                            run: run.clone(),
                            started_seq: seq,
                            open_step: None,
                        },
                    );
                }
            }
            Event::RunFinished(_) => {
                if let Some(run) = &record.run {
                    runs.remove(run);
                }
            }
            Event::StepStarted(started) => {
                if let Some(open) = record.run.as_ref().and_then(|run| runs.get_mut(run)) {
                    open.open_step = Some(OpenStep {
                        step: started.step,
                        kind: started.kind.clone(),
                        operation: started.operation.clone(),
                        started_seq: seq,
                        events: Vec::new(),
                    });
                }
            }
            Event::StepFinished(_) | Event::StepFailed(_) => {
                if let Some(open) = record.run.as_ref().and_then(|run| runs.get_mut(run))
                    && open.open_step.as_ref().map(|step| step.step) == record.event.step()
                {
                    open.open_step = None;
                }
            }
            Event::RollbackStarted(started) => {
                current = Some((record.run.clone(), seq));
                rollbacks
                    .entry(record.run.clone())
                    .or_default()
                    .push(UnfinishedRollback {
                        run: record.run.clone(),
                        started_seq: seq,
                        target: started.target.clone(),
                        compensated: 0,
                        drifted: 0,
                        in_doubt: Vec::new(),
                    });
            }
            Event::RollbackFinished(_) => {
                if let Some(open) = rollbacks.get_mut(&record.run)
                    && let Some(closed) = open.pop()
                    && current
                        .as_ref()
                        .is_some_and(|(_, at)| *at == closed.started_seq)
                {
                    current = None;
                }
            }
            Event::Compensated(_) | Event::DriftFound(_) | Event::UndoStarted(_) => {
                if let Some(rollback) = current.as_ref().and_then(|(run, at)| {
                    rollbacks
                        .get_mut(run)
                        .and_then(|open| open.iter_mut().find(|r| r.started_seq == *at))
                }) {
                    match &record.event {
                        Event::Compensated(compensated) => {
                            rollback.compensated += 1;
                            rollback
                                .in_doubt
                                .retain(|(undoes, _)| *undoes != compensated.undoes);
                        }
                        Event::DriftFound(_) => rollback.drifted += 1,
                        Event::UndoStarted(started) => {
                            rollback
                                .in_doubt
                                .retain(|(undoes, _)| *undoes != started.undoes);
                            rollback.in_doubt.push((started.undoes, seq));
                        }
                        _ => {}
                    }
                }
            }
            event => {
                if let Some(open) = record.run.as_ref().and_then(|run| runs.get_mut(run))
                    && let Some(step) = &mut open.open_step
                    && event.step() == Some(step.step)
                    && !settled.contains(&seq)
                {
                    step.events.push((seq, event.clone()));
                }
            }
        }
    }
    let mut runs: Vec<UnfinishedRun> = runs.into_values().collect();
    runs.sort_by_key(|run| run.started_seq);
    let mut rollbacks: Vec<UnfinishedRollback> = rollbacks.into_values().flatten().collect();
    rollbacks.sort_by_key(|rollback| rollback.started_seq);
    Unfinished { runs, rollbacks }
}

#[cfg(test)]
mod tests {
    use rewind_ledger::{
        Compensated, DirCreated, ModeChanged, NeverHappened, Outcome, RollbackFinished,
        RollbackStarted, RunFinished, StepFinished, StepStarted, UndoStarted,
    };

    use super::*;
    use crate::inverse::tests::{entry, run_started};

    fn step_started(step: u32) -> Event {
        Event::StepStarted(StepStarted {
            kind: "chmod".into(),
            operation: "chmod".into(),
            params: Default::default(),
            step,
        })
    }

    fn mode(path: &str, step: u32) -> Event {
        Event::ModeChanged(ModeChanged {
            new: 0o700,
            old: 0o755,
            path: path.into(),
            step,
        })
    }

    fn rollback_started(run: &str) -> Event {
        Event::RollbackStarted(RollbackStarted {
            cascade: false,
            skip_drift: false,
            target: RollbackTarget::Run(run.into()),
        })
    }

    fn finished(outcome: Outcome) -> Event {
        Event::RollbackFinished(RollbackFinished {
            compensated: 0,
            drifted: 0,
            outcome,
        })
    }

    #[test]
    fn a_finished_ledger_has_nothing_unfinished() {
        let (r1, r2) = (Some("r1"), Some("r2"));
        let entries = vec![
            entry(1, r1, run_started()),
            entry(2, r1, step_started(1)),
            entry(3, r1, mode("/v/a", 1)),
            entry(
                4,
                r1,
                Event::StepFinished(StepFinished {
                    step: 1,
                    summary: String::new(),
                }),
            ),
            entry(
                5,
                r1,
                Event::RunFinished(RunFinished {
                    error: None,
                    outcome: Outcome::Succeeded,
                }),
            ),
            entry(6, r1, rollback_started("r1")),
            entry(7, r1, Event::Compensated(Compensated { undoes: 3 })),
            entry(8, r1, finished(Outcome::Succeeded)),
            entry(9, r2, run_started()),
            entry(
                10,
                r2,
                Event::RunFinished(RunFinished {
                    error: None,
                    outcome: Outcome::Succeeded,
                }),
            ),
        ];
        let found = unfinished(&entries);
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(found.first_seq(), None);
    }

    #[test]
    fn open_runs_keep_their_open_step_and_its_unsettled_events() {
        let (r1, r2) = (Some("r1"), Some("r2"));
        let entries = vec![
            entry(1, r1, run_started()),
            entry(2, r2, run_started()),
            entry(3, r1, step_started(1)),
            entry(4, r2, step_started(1)),
            entry(5, r1, mode("/v/a", 1)),
            entry(6, r1, mode("/v/b", 1)),
            entry(7, r2, mode("/w/a", 1)),
            entry(
                8,
                r2,
                Event::StepFinished(StepFinished {
                    step: 1,
                    summary: String::new(),
                }),
            ),
            entry(
                9,
                r1,
                Event::NeverHappened(NeverHappened {
                    found: String::new(),
                    keys: Vec::new(),
                    paths: vec!["/v/b".into()],
                    seq: 6,
                    table: None,
                }),
            ),
        ];
        let found = unfinished(&entries);
        assert_eq!(found.first_seq(), Some(1));
        assert_eq!(
            found
                .runs
                .iter()
                .map(|run| (
                    run.run.as_str(),
                    run.open_step.as_ref().map(|step| (
                        step.step,
                        step.events.iter().map(|(seq, _)| *seq).collect::<Vec<_>>()
                    ))
                ))
                .collect::<Vec<_>>(),
            vec![("r1", Some((1, vec![5]))), ("r2", None)]
        );
        // The markers alone find the same runs.
        let markers: Vec<Entry> = entries
            .iter()
            .filter(|entry| MARKER_KINDS.contains(&entry.record.event.kind()))
            .cloned()
            .collect();
        let runs: Vec<String> = unfinished(&markers)
            .runs
            .into_iter()
            .map(|run| run.run)
            .collect();
        assert_eq!(runs, vec!["r1", "r2"]);
    }

    #[test]
    fn an_open_rollback_counts_its_compensations_and_its_undo_commands_in_doubt() {
        let r1 = Some("r1");
        let dir = Event::DirCreated(DirCreated {
            mode: 0o755,
            path: "/v/d".into(),
            step: 1,
        });
        let entries = vec![
            entry(1, r1, rollback_started("r1")),
            entry(2, r1, finished(Outcome::Drifted)),
            entry(3, r1, rollback_started("r1")),
            entry(4, r1, Event::Compensated(Compensated { undoes: 40 })),
            entry(5, r1, Event::UndoStarted(UndoStarted { undoes: 30 })),
            entry(6, r1, Event::UndoStarted(UndoStarted { undoes: 20 })),
            entry(7, r1, Event::Compensated(Compensated { undoes: 20 })),
            entry(8, r1, dir),
        ];
        let found = unfinished(&entries);
        assert_eq!(found.runs, Vec::new());
        assert_eq!(
            found.rollbacks,
            vec![UnfinishedRollback {
                run: Some("r1".into()),
                started_seq: 3,
                target: RollbackTarget::Run("r1".into()),
                compensated: 2,
                drifted: 0,
                in_doubt: vec![(30, 5)],
            }]
        );
    }
}
