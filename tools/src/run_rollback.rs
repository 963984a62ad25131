//! The rollback of one run by the path `rewind rollback RUN` takes: the
//! inverse plan projection over the whole ledger, then
//! `migrations::undo::rollback`, which records the rollback in the ledger.
//! Shared by the benchmarks, so that they time what an operator runs.

use rewind_ledger::{Outcome, RollbackTarget};
use rewind_migrations::Recorder;
use rewind_migrations::databases::Databases;
use rewind_migrations::undo::{OnDrift, RollbackReport, UndoItem, rollback};

/// Rolls back `run`, whose events must all undo without drift or failure.
pub fn roll_back_run(recorder: &Recorder, run: &str, databases: &mut Databases) -> RollbackReport {
    let entries: Vec<_> = {
        let ledger = recorder.lock();
        let head = ledger.head().0;
        ledger.range(1..=head).map(Result::unwrap).collect()
    };
    let target = RollbackTarget::Run(run.into());
    let plan = rewind_projections::inverse::plan(&entries, &target, false).unwrap();
    let items: Vec<UndoItem> = plan
        .items
        .into_iter()
        .map(|item| UndoItem {
            seq: item.seq,
            run: item.run,
            event: item.event,
            undo_started: item.undo_started,
            resolution: None,
        })
        .collect();
    let rolled = rollback(
        recorder,
        Some(run),
        target,
        false,
        &items,
        OnDrift::Stop,
        databases,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(rolled.outcome, Outcome::Succeeded, "{rolled:?}");
    rolled
}
