//! The inverse plan: for a rollback target (a run, one step of a run, or
//! everything after a seq), the effect events that were applied and not
//! yet compensated, newest first.
//!
//! Rolling back one step that is not the newest is dependency-aware: later
//! events touching the same paths (or rows) are its dependents; without
//! `cascade` the plan refuses and names them, with it they are undone too,
//! newest first. A `Compensated{undoes}` anywhere in the entries removes
//! that seq from every plan, so an interrupted rollback run again never
//! undoes an item twice; an `UndoStarted{undoes}` without one marks the
//! item's undo command as in doubt (`Item::undo_started`). A
//! `NeverHappened{seq}` (recovery found that an effect recorded ahead of
//! it never took place) removes that seq too, without counting it as
//! compensated.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rewind_ledger::{Entry, Event, RollbackTarget, Subject};

/// Whether an event is an effect with an inverse (what a rollback undoes).
pub fn has_inverse(event: &Event) -> bool {
    match event {
        Event::PathMoved(_)
        | Event::ModeChanged(_)
        | Event::OwnerChanged(_)
        | Event::FileWritten(_)
        | Event::PathRemoved(_)
        | Event::DirCreated(_)
        | Event::RowsChanged(_)
        | Event::RowsPacked(_)
        | Event::SequenceMoved(_) => true,
        Event::SchemaChanged(e) => !e.irreversible,
        Event::CommandRun(e) => e.undo.is_some(),
        Event::RunStarted(_)
        | Event::RunFinished(_)
        | Event::StepStarted(_)
        | Event::StepFinished(_)
        | Event::StepFailed(_)
        | Event::BackupTaken(_)
        | Event::CheckRecorded(_)
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

/// One inverse to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub seq: u64,
    pub run: Option<String>,
    pub step: Option<u32>,
    pub event: Event,
    /// Included only because it depends on the targeted step (`--cascade`).
    pub dependent: bool,
    /// The seq of the newest `UndoStarted` for it: an undo command that an
    /// earlier rollback started and nothing says finished (it is still in
    /// the plan, so no `Compensated` followed). It is in doubt.
    pub undo_started: Option<u64>,
}

/// What a rollback will undo, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InversePlan {
    pub target: RollbackTarget,
    pub items: Vec<Item>,
    /// Effects of the target already compensated by an earlier rollback.
    pub already_compensated: usize,
    /// Irreversible schema changes in the target, newest first: nothing
    /// undoes them, so a rollback past them must be allowed explicitly.
    pub irreversible: Vec<Item>,
}

/// Why there is no plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanRefusal {
    #[error("there is no run {run} in the ledger")]
    UnknownRun { run: String },

    #[error("run {run} has no step {step}")]
    UnknownStep { run: String, step: u32 },

    #[error("{target} {}", if *already_compensated > 0 { format!("is already rolled back ({already_compensated} effects compensated)") } else { "recorded no effect that can be undone".to_string() })]
    NothingToUndo {
        target: RollbackTarget,
        already_compensated: usize,
    },

    #[error("{target} has later dependents: {}", dependents.iter().map(describe).collect::<Vec<_>>().join("; "))]
    Dependents {
        target: RollbackTarget,
        dependents: Vec<Item>,
    },
}

impl PlanRefusal {
    /// The next thing an operator should do.
    pub fn hint(&self) -> Option<String> {
        match self {
            PlanRefusal::UnknownRun { .. } | PlanRefusal::UnknownStep { .. } => {
                Some("`rewind status` lists runs and their steps".into())
            }
            PlanRefusal::NothingToUndo { .. } => {
                Some("`rewind status RUN` shows what the run did".into())
            }
            PlanRefusal::Dependents { target, .. } => Some(format!(
                "pass `--cascade` to undo the dependents too (newest first), or roll them back first; {target} is untouched"
            )),
        }
    }
}

/// `seq 42 (run r1 step 3) PathMoved /srv/a/web/log`.
pub fn describe(item: &Item) -> String {
    let at = match (&item.run, item.step) {
        (Some(run), Some(step)) => format!(" ({run}:{step})"),
        (Some(run), None) => format!(" ({run})"),
        _ => String::new(),
    };
    let subject = match item.event.subjects().into_iter().next() {
        Some(Subject::Path(path)) => format!(" {path}"),
        Some(Subject::Row(table, key)) => format!(" {table}({key})"),
        None => String::new(),
    };
    format!("seq {}{at} {}{subject}", item.seq, item.event.kind())
}

fn overlaps(a: &Subject, b: &Subject) -> bool {
    match (a, b) {
        (Subject::Path(a), Subject::Path(b)) => {
            Path::new(a).starts_with(b) || Path::new(b).starts_with(a)
        }
        (Subject::Row(..), Subject::Row(..)) => a == b,
        (Subject::Path(_), Subject::Row(..)) | (Subject::Row(..), Subject::Path(_)) => false,
    }
}

/// The database a database event belongs to.
fn database_of(event: &Event) -> Option<&str> {
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

/// Whether a later database event depends on an earlier one through the
/// schema: a schema change names no rows, but what it creates or drops
/// is what later row events on that database may stand on, and a later
/// schema change may remove what an earlier row event's inverse needs.
fn schema_dependent(earlier: &Event, later: &Event) -> bool {
    let same_database = database_of(earlier).is_some_and(|a| database_of(later) == Some(a));
    same_database
        && (matches!(earlier, Event::SchemaChanged(_)) || matches!(later, Event::SchemaChanged(_)))
}

/// Builds the inverse plan from `entries` (in seq order; for a run or a
/// step, from the run's first event to the head, so that compensations and
/// later dependents are seen).
pub fn plan(
    entries: &[Entry],
    target: &RollbackTarget,
    cascade: bool,
) -> Result<InversePlan, PlanRefusal> {
    let compensated: BTreeSet<u64> = entries
        .iter()
        .filter_map(|entry| match &entry.record.event {
            Event::Compensated(c) => Some(c.undoes),
            _ => None,
        })
        .collect();
    // Effects whose event was recorded ahead and that recovery found never
    // took place: nothing to undo, and not counted as compensated.
    let never_happened: BTreeSet<u64> = entries
        .iter()
        .filter_map(|entry| match &entry.record.event {
            Event::NeverHappened(never) => Some(never.seq),
            _ => None,
        })
        .collect();
    let mut started: BTreeMap<u64, u64> = BTreeMap::new();
    for entry in entries {
        if let Event::UndoStarted(undo) = &entry.record.event {
            started.insert(undo.undoes, entry.seq());
        }
    }
    let item = |entry: &Entry, dependent: bool| Item {
        seq: entry.seq(),
        run: entry.record.run.clone(),
        step: entry.record.event.step(),
        event: entry.record.event.clone(),
        dependent,
        undo_started: started.get(&entry.seq()).copied(),
    };
    let in_target = |entry: &Entry| match target {
        RollbackTarget::Run(run) => entry.record.run.as_deref() == Some(run),
        RollbackTarget::Step(run, step) => {
            entry.record.run.as_deref() == Some(run) && entry.record.event.step() == Some(*step)
        }
        RollbackTarget::After(seq) => entry.seq() > *seq,
    };
    match target {
        RollbackTarget::Run(run) | RollbackTarget::Step(run, _) => {
            let started = entries.iter().any(|e| {
                e.record.run.as_deref() == Some(run)
                    && matches!(e.record.event, Event::RunStarted(_))
            });
            if !started {
                return Err(PlanRefusal::UnknownRun { run: run.clone() });
            }
            if let RollbackTarget::Step(run, step) = target
                && !entries.iter().any(|e| {
                    e.record.run.as_deref() == Some(run)
                        && matches!(&e.record.event, Event::StepStarted(s) if s.step == *step)
                })
            {
                return Err(PlanRefusal::UnknownStep {
                    run: run.clone(),
                    step: *step,
                });
            }
        }
        RollbackTarget::After(_) => {}
    }
    let mut already_compensated = 0;
    let mut chosen: BTreeMap<u64, Item> = BTreeMap::new();
    for entry in entries.iter().filter(|e| {
        in_target(e) && has_inverse(&e.record.event) && !never_happened.contains(&e.seq())
    }) {
        if compensated.contains(&entry.seq()) {
            already_compensated += 1;
        } else {
            chosen.insert(entry.seq(), item(entry, false));
        }
    }
    let irreversible: Vec<Item> = entries
        .iter()
        .filter(|e| {
            in_target(e)
                && !never_happened.contains(&e.seq())
                && matches!(&e.record.event, Event::SchemaChanged(s) if s.irreversible)
                && chosen.keys().next().is_some_and(|first| e.seq() > *first)
        })
        .rev()
        .map(|e| item(e, false))
        .collect();
    if chosen.is_empty() {
        return Err(PlanRefusal::NothingToUndo {
            target: target.clone(),
            already_compensated,
        });
    }
    if let RollbackTarget::Step(..) = target {
        // Later effects touching what the chosen items touched, transitively.
        let mut subjects: Vec<Subject> = chosen.values().flat_map(|i| i.event.subjects()).collect();
        let mut database_events: Vec<Event> = chosen
            .values()
            .filter(|i| database_of(&i.event).is_some())
            .map(|i| i.event.clone())
            .collect();
        let first = *chosen.keys().next().expect("not empty");
        let mut dependents: BTreeMap<u64, Item> = BTreeMap::new();
        for entry in entries.iter().filter(|e| e.seq() > first) {
            if chosen.contains_key(&entry.seq())
                || compensated.contains(&entry.seq())
                || never_happened.contains(&entry.seq())
                || !has_inverse(&entry.record.event)
            {
                continue;
            }
            let touches = entry.record.event.subjects();
            if touches
                .iter()
                .any(|t| subjects.iter().any(|s| overlaps(s, t)))
                || database_events
                    .iter()
                    .any(|earlier| schema_dependent(earlier, &entry.record.event))
            {
                subjects.extend(touches);
                if database_of(&entry.record.event).is_some() {
                    database_events.push(entry.record.event.clone());
                }
                dependents.insert(entry.seq(), item(entry, true));
            }
        }
        if !dependents.is_empty() {
            if !cascade {
                return Err(PlanRefusal::Dependents {
                    target: target.clone(),
                    dependents: dependents.into_values().rev().collect(),
                });
            }
            chosen.extend(dependents);
        }
    }
    Ok(InversePlan {
        target: target.clone(),
        items: chosen.into_values().rev().collect(),
        already_compensated,
        irreversible,
    })
}

/// The inverse of an event, in words, for plans and dry runs.
pub fn describe_inverse(event: &Event) -> String {
    match event {
        Event::PathMoved(e) => format!("move {} back to {}", e.to, e.from),
        Event::ModeChanged(e) => format!("chmod {:04o} {} (now {:04o})", e.old, e.path, e.new),
        Event::OwnerChanged(e) => format!(
            "chown {}:{} {} (now {}:{})",
            e.old_uid, e.old_gid, e.path, e.new_uid, e.new_gid
        ),
        Event::FileWritten(e) => match e.old {
            Some(old) => format!(
                "restore the old content of {} (sha256 {})",
                e.path,
                old.short()
            ),
            None => format!("remove {} (it did not exist)", e.path),
        },
        Event::PathRemoved(e) => format!("restore {} from its stash", e.path),
        Event::DirCreated(e) => format!("remove the directory {} if empty", e.path),
        Event::RowsChanged(e) => format!("restore {} row(s) of {}", e.rows.len(), e.table),
        Event::RowsPacked(e) => format!("restore {} row(s) of {}", e.rows, e.table),
        Event::SequenceMoved(e) => format!("set sequence {} back to {}", e.sequence, e.old),
        Event::SchemaChanged(e) => match &e.down {
            Some(down) => format!("run `{down}`"),
            None => "irreversible".into(),
        },
        Event::CommandRun(e) => match &e.undo {
            Some(undo) => format!("run `{}`", undo.join(" ")),
            None => "none".into(),
        },
        Event::RunStarted(_)
        | Event::RunFinished(_)
        | Event::StepStarted(_)
        | Event::StepFinished(_)
        | Event::StepFailed(_)
        | Event::BackupTaken(_)
        | Event::CheckRecorded(_)
        | Event::RollbackStarted(_)
        | Event::Compensated(_)
        | Event::RollbackFinished(_)
        | Event::DriftFound(_)
        | Event::Note(_)
        | Event::Checkpoint(_)
        | Event::UndoStarted(_)
        | Event::NeverHappened(_) => "none".into(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use rewind_ledger::{
        Compensated, Digest, DirCreated, FileType, ModeChanged, PathMoved, Record, RunStarted,
        StepStarted,
    };

    use super::*;

    pub(crate) fn entry(seq: u64, run: Option<&str>, event: Event) -> Entry {
        Entry {
            hash: Digest::default(),
            prev: Digest::default(),
            record: Record {
                actor: "a".into(),
                event,
                host: "h".into(),
                ledger_id: "l".into(),
                recorded_at: "2026-01-01T00:00:00Z".parse().unwrap(),
                run: run.map(str::to_owned),
                seq,
            },
        }
    }

    pub(crate) fn run_started() -> Event {
        Event::RunStarted(RunStarted {
            description: String::new(),
            spec_id: "s".into(),
            spec_path: "s.toml".into(),
            spec_sha256: Digest::default(),
            spec_text: String::new(),
            target: None,
            vars: Default::default(),
        })
    }

    fn started(step: u32) -> Event {
        Event::StepStarted(StepStarted {
            kind: "k".into(),
            operation: String::new(),
            params: Default::default(),
            step,
        })
    }

    /// r1: step 1 mkdir /v/a, step 2 moves /v/a/x → /v/b, step 3 chmods /v/c.
    fn ledger() -> Vec<Entry> {
        let run = Some("r1");
        vec![
            entry(1, run, run_started()),
            entry(2, run, started(1)),
            entry(
                3,
                run,
                Event::DirCreated(DirCreated {
                    mode: 0o755,
                    path: "/v/a".into(),
                    step: 1,
                }),
            ),
            entry(4, run, started(2)),
            entry(
                5,
                run,
                Event::PathMoved(PathMoved {
                    copied: false,
                    digest: Digest::default(),
                    file_type: FileType::File,
                    from: "/v/a/x".into(),
                    step: 2,
                    to: "/v/b".into(),
                }),
            ),
            entry(6, run, started(3)),
            entry(
                7,
                run,
                Event::ModeChanged(ModeChanged {
                    new: 0o700,
                    old: 0o755,
                    path: "/v/c".into(),
                    step: 3,
                }),
            ),
        ]
    }

    #[test]
    fn a_run_is_undone_newest_first_and_compensated_items_are_left_out() {
        let mut entries = ledger();
        let plan = super::plan(&entries, &RollbackTarget::Run("r1".into()), false).unwrap();
        assert_eq!(
            plan.items.iter().map(|i| i.seq).collect::<Vec<_>>(),
            vec![7, 5, 3]
        );
        entries.push(entry(
            8,
            Some("r1"),
            Event::Compensated(Compensated { undoes: 7 }),
        ));
        let plan = super::plan(&entries, &RollbackTarget::Run("r1".into()), false).unwrap();
        assert_eq!(
            plan.items.iter().map(|i| i.seq).collect::<Vec<_>>(),
            vec![5, 3]
        );
        assert_eq!(plan.already_compensated, 1);
    }

    #[test]
    fn an_older_step_names_its_dependents_and_cascade_takes_them() {
        let entries = ledger();
        let target = RollbackTarget::Step("r1".into(), 1);
        match super::plan(&entries, &target, false) {
            Err(PlanRefusal::Dependents { dependents, .. }) => {
                assert_eq!(
                    dependents.iter().map(|i| i.seq).collect::<Vec<_>>(),
                    vec![5]
                );
            }
            other => panic!("{other:?}"),
        }
        let plan = super::plan(&entries, &target, true).unwrap();
        assert_eq!(
            plan.items
                .iter()
                .map(|i| (i.seq, i.dependent))
                .collect::<Vec<_>>(),
            vec![(5, true), (3, false)]
        );
        // Step 3 touches nothing the others touch.
        let plan = super::plan(&entries, &RollbackTarget::Step("r1".into(), 3), false).unwrap();
        assert_eq!(plan.items.len(), 1);
    }

    #[test]
    fn unknown_runs_steps_and_finished_rollbacks_are_refused() {
        let entries = ledger();
        assert!(matches!(
            super::plan(&entries, &RollbackTarget::Run("r9".into()), false),
            Err(PlanRefusal::UnknownRun { .. })
        ));
        assert!(matches!(
            super::plan(&entries, &RollbackTarget::Step("r1".into(), 9), false),
            Err(PlanRefusal::UnknownStep { .. })
        ));
        assert_eq!(
            super::plan(&entries, &RollbackTarget::After(4), false)
                .unwrap()
                .items
                .len(),
            2
        );
        assert!(matches!(
            super::plan(&entries, &RollbackTarget::After(7), false),
            Err(PlanRefusal::NothingToUndo { .. })
        ));
    }

    #[test]
    fn an_undo_started_and_not_compensated_is_in_doubt() {
        let mut entries = ledger();
        let target = RollbackTarget::Run("r1".into());
        entries.push(entry(
            8,
            Some("r1"),
            Event::UndoStarted(rewind_ledger::UndoStarted { undoes: 5 }),
        ));
        let plan = super::plan(&entries, &target, false).unwrap();
        assert_eq!(
            plan.items
                .iter()
                .map(|i| (i.seq, i.undo_started))
                .collect::<Vec<_>>(),
            vec![(7, None), (5, Some(8)), (3, None)]
        );
        // Retried: the newest start counts; finished: out of the plan.
        entries.push(entry(
            9,
            Some("r1"),
            Event::UndoStarted(rewind_ledger::UndoStarted { undoes: 5 }),
        ));
        let plan = super::plan(&entries, &target, false).unwrap();
        assert_eq!(plan.items[1].undo_started, Some(9));
        entries.push(entry(
            10,
            Some("r1"),
            Event::Compensated(Compensated { undoes: 5 }),
        ));
        let plan = super::plan(&entries, &target, false).unwrap();
        assert_eq!(
            plan.items.iter().map(|i| i.seq).collect::<Vec<_>>(),
            vec![7, 3]
        );
    }

    #[test]
    fn an_effect_that_never_happened_is_left_out_of_the_plan_and_of_status() {
        let mut entries = ledger();
        entries.push(entry(
            8,
            Some("r1"),
            Event::NeverHappened(rewind_ledger::NeverHappened {
                found: "/v/c still has mode 0755".into(),
                keys: Vec::new(),
                paths: vec!["/v/c".into()],
                seq: 7,
                table: None,
            }),
        ));
        let plan = super::plan(&entries, &RollbackTarget::Run("r1".into()), false).unwrap();
        assert_eq!(
            plan.items.iter().map(|i| i.seq).collect::<Vec<_>>(),
            vec![5, 3]
        );
        assert_eq!(plan.already_compensated, 0);
        assert!(matches!(
            super::plan(&entries, &RollbackTarget::Step("r1".into(), 3), false),
            Err(PlanRefusal::NothingToUndo {
                already_compensated: 0,
                ..
            })
        ));
        let runs = crate::status::runs(&entries, crate::status::Writer::Holding);
        assert_eq!(runs[0].lifecycle, crate::status::Lifecycle::Running);
        assert_eq!((runs[0].effects, runs[0].never_happened), (2, 1));
        assert_eq!(runs[0].steps[2].effects, 0);
    }

    #[test]
    fn status_follows_the_lifecycle() {
        let mut entries = ledger();
        let runs = crate::status::runs(&entries, crate::status::Writer::Absent);
        assert_eq!(runs[0].lifecycle, crate::status::Lifecycle::Abandoned);
        assert_eq!(runs[0].effects, 3);
        for (seq, undoes) in [(8, 7), (9, 5)] {
            entries.push(entry(
                seq,
                Some("r1"),
                Event::Compensated(Compensated { undoes }),
            ));
        }
        assert_eq!(
            crate::status::runs(&entries, crate::status::Writer::Absent)[0].lifecycle,
            crate::status::Lifecycle::PartlyRolledBack
        );
        entries.push(entry(
            10,
            Some("r1"),
            Event::Compensated(Compensated { undoes: 3 }),
        ));
        let runs = crate::status::runs(&entries, crate::status::Writer::Absent);
        assert_eq!(runs[0].lifecycle, crate::status::Lifecycle::RolledBack);
        assert!(
            runs[0]
                .steps
                .iter()
                .all(|s| s.state == crate::status::StepState::RolledBack)
        );
    }
}
