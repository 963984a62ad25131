//! A ledger, a root and the glue `commands` provides in the binary:
//! resolve → plan → apply, and entries → inverse plan → rollback.

#![allow(dead_code)]
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rewind_ledger::{Entry, Ledger, Origin, RollbackTarget};
use rewind_migrations::apply::{RunReport, RunRequest, apply};
use rewind_migrations::spec::Spec;
use rewind_migrations::undo::{OnDrift, RollbackReport, UndoItem, rollback};
use rewind_migrations::{MigrateError, Recorder};
use rewind_projections::inverse::{self, PlanRefusal};

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub recorder: Recorder,
    runs: u32,
}

impl Harness {
    pub fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap().join("srv");
        std::fs::create_dir(&root).unwrap();
        let ledger = Ledger::init(
            &dir.path().join("ledger"),
            "test-ledger",
            Origin {
                actor: "tester".into(),
                host: "host".into(),
            },
        )
        .unwrap();
        Harness {
            dir,
            root,
            recorder: Recorder::new(ledger),
            runs: 0,
        }
    }

    pub fn spec(&self, text: &str) -> Spec {
        Spec::parse("test.toml", text).unwrap()
    }

    pub fn vars(&self) -> BTreeMap<String, String> {
        BTreeMap::from([("root".to_string(), self.root.display().to_string())])
    }

    /// Resolves, plans and applies; a refusal comes back as `Err`.
    pub fn apply(&mut self, text: &str) -> Result<RunReport, MigrateError> {
        let spec = Spec::parse("test.toml", text)?;
        let resolved = spec.resolve(&self.vars())?;
        let plan = rewind_migrations::plan::plan(&resolved)?;
        self.runs += 1;
        let run = format!("run-{}", self.runs);
        apply(
            &self.recorder,
            &RunRequest {
                run,
                spec: &spec,
                resolved: &resolved,
                plan: &plan,
                target: Some(self.root.display().to_string()),
            },
            &mut |_| {},
        )
    }

    pub fn entries(&self) -> Vec<Entry> {
        let ledger = self.recorder.lock();
        let head = ledger.head().0;
        ledger.range(1..=head.max(1)).map(Result::unwrap).collect()
    }

    pub fn plan_rollback(
        &self,
        target: &RollbackTarget,
        cascade: bool,
    ) -> Result<Vec<UndoItem>, PlanRefusal> {
        let plan = inverse::plan(&self.entries(), target, cascade)?;
        Ok(plan
            .items
            .into_iter()
            .map(|item| UndoItem {
                seq: item.seq,
                run: item.run,
                event: item.event,
                undo_started: item.undo_started,
                resolution: None,
            })
            .collect())
    }

    pub fn rollback(
        &self,
        target: RollbackTarget,
        cascade: bool,
        on_drift: OnDrift,
    ) -> Result<RollbackReport, PlanRefusal> {
        let items = self.plan_rollback(&target, cascade)?;
        let run = match &target {
            RollbackTarget::Run(run) | RollbackTarget::Step(run, _) => Some(run.clone()),
            RollbackTarget::After(_) => None,
        };
        Ok(rollback(
            &self.recorder,
            run.as_deref(),
            target,
            cascade,
            &items,
            on_drift,
            &mut rewind_migrations::databases::Databases::default(),
            &mut |_| {},
        )
        .unwrap())
    }

    pub fn manifest(&self) -> rewind_migrations::tree::Manifest {
        rewind_migrations::tree::manifest(&self.root).unwrap()
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }
}

pub fn run(n: u32) -> RollbackTarget {
    RollbackTarget::Run(format!("run-{n}"))
}

pub fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}
