//! Apply → rollback round trips of the file steps, the vhost runbook,
//! interrupted and dependency-aware rollbacks, and drift.

mod harness;

use harness::{Harness, exists, run};
use rewind_ledger::{Event, Outcome, RollbackTarget};
use rewind_migrations::undo::OnDrift;
use rewind_projections::inverse::PlanRefusal;

const RUNBOOK: &str = include_str!("../examples/ns3-vhost.toml");

#[test]
fn vhost_runbook_applies_and_rolls_back_to_an_identical_tree() {
    let mut h = Harness::new();
    rewind_migrations::fixtures::build_vhost(&h.root).unwrap();
    let before = h.manifest();
    let report = h.apply(RUNBOOK).unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    assert!(exists(&h.path("web/app/public/index.html")));
    assert!(exists(&h.path("web/log/access.log")));
    assert!(!exists(&h.path("var/log")));
    assert!(std::fs::read_dir(h.path(".archive")).unwrap().count() == 1);
    assert_ne!(before.diff(&h.manifest()), vec![]);
    let rolled = h.rollback(run(1), false, OnDrift::Stop).unwrap();
    assert_eq!(rolled.outcome, Outcome::Succeeded, "{rolled:#?}");
    assert_eq!(before.diff(&h.manifest()), vec![]);
    // A second rollback of the same run has nothing left to do.
    assert!(matches!(
        h.rollback(run(1), false, OnDrift::Stop),
        Err(PlanRefusal::NothingToUndo { already_compensated, .. }) if already_compensated > 0
    ));
}

#[test]
fn backup_archive_verifies_and_restores_identically() {
    let mut h = Harness::new();
    rewind_migrations::fixtures::build_vhost(&h.root).unwrap();
    let before = h.manifest();
    h.apply("[migration]\nid = \"b\"\n[vars]\nroot = { required = true }\n[[step]]\nkind = \"backup\"\npath = \"{root}\"\n")
        .unwrap();
    let taken = h
        .entries()
        .into_iter()
        .find_map(|e| match e.record.event {
            Event::BackupTaken(b) => Some(b),
            _ => None,
        })
        .unwrap();
    let blobs = h.recorder.blobs().clone();
    let (checked, problems) =
        rewind_migrations::steps::archive::verify_archive(&blobs, &taken.archive, &taken.manifest)
            .unwrap();
    assert_eq!(problems, vec![]);
    assert_eq!(checked as usize, before.nodes.len() - 1);
    let restored = h.dir.path().join("restored");
    std::fs::create_dir(&restored).unwrap();
    std::fs::set_permissions(
        &restored,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    rewind_migrations::steps::archive::unpack(&blobs, &taken.archive, &restored).unwrap();
    let after = rewind_migrations::tree::manifest(&restored).unwrap();
    let differences: Vec<_> = before
        .diff(&after)
        .into_iter()
        .filter(|d| !d.path.is_empty())
        .collect();
    assert_eq!(differences, vec![]);
}

#[test]
fn interrupted_rollback_run_again_never_undoes_twice() {
    let mut h = Harness::new();
    rewind_migrations::fixtures::build_vhost(&h.root).unwrap();
    let before = h.manifest();
    h.apply(RUNBOOK).unwrap();
    // Interrupt: undo only the three newest items, as a killed rollback would.
    let items = h.plan_rollback(&run(1), false).unwrap();
    let total = items.len();
    rewind_migrations::undo::rollback(
        &h.recorder,
        Some("run-1"),
        run(1),
        false,
        &items[..3],
        OnDrift::Stop,
        &mut rewind_migrations::databases::Databases::default(),
        &mut |_| {},
    )
    .unwrap();
    let rolled = h.rollback(run(1), false, OnDrift::Stop).unwrap();
    assert_eq!(rolled.compensated as usize, total - 3);
    assert_eq!(before.diff(&h.manifest()), vec![]);
    let mut undone: Vec<u64> = h
        .entries()
        .iter()
        .filter_map(|e| match &e.record.event {
            Event::Compensated(c) => Some(c.undoes),
            _ => None,
        })
        .collect();
    let count = undone.len();
    undone.sort_unstable();
    undone.dedup();
    assert_eq!(undone.len(), count, "an item was undone twice");
    assert_eq!(count, total);
}

const STEPS: &str = r#"
[migration]
id = "deps"
[vars]
root = { required = true }
[[step]]
kind = "mkdir"
path = "{root}/a"
[[step]]
kind = "write"
path = "{root}/a/f.txt"
content = "one"
[[step]]
kind = "chmod"
path = "{root}/a/f.txt"
mode = "0600"
[[step]]
kind = "mkdir"
path = "{root}/elsewhere"
"#;

#[test]
fn single_step_rollback_refuses_with_dependents_and_cascade_undoes_them() {
    let mut h = Harness::new();
    let before = h.manifest();
    h.apply(STEPS).unwrap();
    let target = RollbackTarget::Step("run-1".into(), 2);
    match h.rollback(target.clone(), false, OnDrift::Stop) {
        Err(PlanRefusal::Dependents { dependents, .. }) => {
            assert_eq!(dependents.len(), 1);
            assert!(matches!(dependents[0].event, Event::ModeChanged(_)));
            assert_eq!(dependents[0].step, Some(3));
        }
        other => panic!("expected a refusal naming dependents, got {other:?}"),
    }
    assert!(exists(&h.path("a/f.txt")), "a refusal changes nothing");
    let rolled = h.rollback(target, true, OnDrift::Stop).unwrap();
    assert_eq!(rolled.compensated, 2);
    assert!(!exists(&h.path("a/f.txt")));
    assert!(
        exists(&h.path("a")) && exists(&h.path("elsewhere")),
        "other steps are untouched"
    );
    // The newest step alone has no dependents.
    h.rollback(
        RollbackTarget::Step("run-1".into(), 4),
        false,
        OnDrift::Stop,
    )
    .unwrap();
    h.rollback(run(1), false, OnDrift::Stop).unwrap();
    assert_eq!(before.diff(&h.manifest()), vec![]);
}

#[test]
fn drift_stops_before_the_item_and_skip_records_it() {
    let mut h = Harness::new();
    h.apply(STEPS).unwrap();
    std::fs::write(h.path("a/f.txt"), "changed by someone").unwrap();
    std::fs::set_permissions(
        h.path("a/f.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let stopped = h.rollback(run(1), false, OnDrift::Stop).unwrap();
    assert_eq!(stopped.outcome, Outcome::Drifted);
    assert_eq!(stopped.drifted.len(), 1);
    assert_eq!(stopped.drifted[0].what, "content");
    assert!(stopped.drifted[0].path.ends_with("a/f.txt"));
    // Newer items were undone (elsewhere, the chmod), the drifted one and older are untouched.
    assert!(!exists(&h.path("elsewhere")));
    assert_eq!(
        std::fs::read_to_string(h.path("a/f.txt")).unwrap(),
        "changed by someone"
    );
    let skipped = h.rollback(run(1), false, OnDrift::Skip).unwrap();
    assert_eq!(skipped.outcome, Outcome::Drifted);
    // The write was skipped, so `a` is not empty and its DirCreated drifts too.
    assert_eq!(skipped.drifted.len(), 2);
    assert!(
        h.entries()
            .iter()
            .any(|e| matches!(e.record.event, Event::DriftFound(_))),
        "drift is recorded"
    );
}

#[test]
fn cross_filesystem_move_copies_verifies_and_removes() {
    let h = Harness::new();
    rewind_migrations::fixtures::build_vhost(&h.root).unwrap();
    let before = rewind_migrations::tree::manifest(&h.path("web")).unwrap();
    let copied =
        rewind_migrations::steps::move_::relocate(&h.path("web"), &h.path("web2"), true).unwrap();
    assert!(copied);
    assert!(!exists(&h.path("web")));
    let after = rewind_migrations::tree::manifest(&h.path("web2")).unwrap();
    assert_eq!(before.diff(&after), vec![]);
}

#[test]
fn rollback_killed_between_an_inverse_and_its_record_finishes_without_drift() {
    let mut h = Harness::new();
    rewind_migrations::fixtures::build_vhost(&h.root).unwrap();
    let before = h.manifest();
    h.apply(RUNBOOK).unwrap();
    // The process died after undoing the five newest items, before their
    // Compensated events were flushed.
    let items = h.plan_rollback(&run(1), false).unwrap();
    for item in &items[..5] {
        rewind_migrations::undo::undo(&h.recorder, item).unwrap();
    }
    // The dry run sees them in their old state, not as drift.
    let checks = rewind_migrations::undo::dry_run(
        h.recorder.blobs(),
        &mut rewind_migrations::databases::Databases::default(),
        &items,
    )
    .unwrap();
    assert!(
        checks.iter().all(|(_, drift, _)| drift.is_none()),
        "{checks:#?}"
    );
    let rolled = h.rollback(run(1), false, OnDrift::Stop).unwrap();
    assert_eq!(rolled.outcome, Outcome::Succeeded, "{rolled:#?}");
    assert_eq!(rolled.compensated as usize, items.len());
    assert_eq!(before.diff(&h.manifest()), vec![]);
}

#[test]
fn exec_undo_runs_in_the_steps_cwd_and_is_killed_at_its_timeout() {
    let mut h = Harness::new();
    std::fs::create_dir(h.path("work")).unwrap();
    h.apply(
        r#"
[migration]
id = "exec-undo"
[vars]
root = { required = true }
[[step]]
kind = "exec"
argv = ["true"]
cwd = "{root}/work"
timeout = 1
undo = ["sh", "-c", "pwd > where.txt; exec sleep 30"]
"#,
    )
    .unwrap();
    let rolled = h.rollback(run(1), false, OnDrift::Stop).unwrap();
    assert_eq!(rolled.outcome, Outcome::Failed, "{rolled:#?}");
    let error = rolled.error.unwrap_or_default();
    assert!(
        error.contains("did not finish within 1 s and was killed"),
        "{error}"
    );
    assert!(
        rolled.in_doubt.is_some(),
        "a failed undo command is in doubt"
    );
    assert_eq!(
        std::fs::read_to_string(h.path("work/where.txt")).unwrap(),
        format!("{}\n", h.path("work").display())
    );
}

#[test]
fn a_copy_interrupted_between_its_source_going_aside_and_taking_its_place_rolls_back() {
    use rewind_migrations::steps::staging::{Purpose, beside};
    let mut h = Harness::new();
    rewind_migrations::fixtures::build_vhost(&h.root).unwrap();
    let before = h.manifest();
    h.apply(
        "[migration]\nid = \"m\"\n[vars]\nroot = { required = true }\n[[step]]\nkind = \"move\"\nfrom = \"{root}/var/log\"\nto = \"{root}/web/log\"\n",
    )
    .unwrap();
    // The world as a copy across filesystems leaves it when killed between
    // its two renames: the source aside, its complete copy staged, neither
    // path there.
    let (from, to) = (h.path("var/log"), h.path("web/log"));
    std::fs::rename(&to, beside(&from, Purpose::Remove)).unwrap();
    rewind_migrations::steps::move_::copy_tree(
        &beside(&from, Purpose::Remove),
        &beside(&to, Purpose::Copy),
    )
    .unwrap();
    let rolled = h.rollback(run(1), false, OnDrift::Stop).unwrap();
    assert_eq!(rolled.outcome, Outcome::Succeeded, "{rolled:#?}");
    assert_eq!(before.diff(&h.manifest()), vec![]);
}
