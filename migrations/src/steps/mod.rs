//! The step kinds: one module per kind, one entry in [`REGISTRY`].
//!
//! Each module knows how to plan its step against a simulated world
//! ([`crate::plan::Sim`]), apply it (the intent is already durable when
//! `apply` runs), check drift against each of its events and undo them
//! ([`crate::undo`]). An effect on a file goes through
//! [`StepContext::record_ahead`]: its event, with everything its inverse
//! needs, is durable before the effect happens.
//! Adding a kind: a module here, a variant of [`StepSpec`], an entry in
//! [`REGISTRY`]; the exhaustive `match`es below point at the rest.

use std::collections::BTreeMap;

use rewind_ledger::Event;
use serde::Deserialize;

use crate::apply::Progress;
use crate::databases::Databases;
use crate::db::{self, Database};
use crate::error::{Location, MigrateError, SpecError};
use crate::plan::Sim;
use crate::recorder::{BATCH, Recorder};

pub mod archive;
pub mod backup;
pub mod chmod;
pub mod chown;
pub mod ddl;
pub mod delete;
pub mod exec;
pub mod insert;
pub mod mkdir;
pub mod move_;
pub mod remove;
pub mod sql;
pub mod staging;
pub mod update;
pub mod verify;
pub mod write;

/// One `[[step]]` of a spec, by kind.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum StepSpec {
    Backup(backup::Backup),
    Move(move_::Move),
    Chmod(chmod::Chmod),
    Chown(chown::Chown),
    Mkdir(mkdir::Mkdir),
    Write(write::Write),
    Remove(remove::Remove),
    Exec(exec::Exec),
    Verify(verify::Verify),
    Ddl(ddl::Ddl),
    Insert(insert::Insert),
    Update(update::Update),
    Delete(delete::Delete),
    Sql(sql::Sql),
}

/// What the registry knows about a kind.
#[derive(Debug, Clone, Copy)]
pub struct KindInfo {
    pub name: &'static str,
    /// One paragraph for operators: what the step does and its keys.
    pub docs: &'static str,
    /// How its events are undone, or `None` when it records nothing to undo.
    pub inverse: Option<&'static str>,
    /// A minimal spec step using it (the registry test parses and plans it).
    pub fixture: &'static str,
}

/// Every step kind, in the order operators meet them.
pub const REGISTRY: &[KindInfo] = &[
    backup::INFO,
    move_::INFO,
    chmod::INFO,
    chown::INFO,
    mkdir::INFO,
    write::INFO,
    remove::INFO,
    exec::INFO,
    verify::INFO,
    ddl::INFO,
    insert::INFO,
    update::INFO,
    delete::INFO,
    sql::INFO,
];

/// A step's plan: the concrete operation, in words and as parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub operation: String,
    pub params: BTreeMap<String, String>,
}

impl Planned {
    pub fn new(operation: impl Into<String>) -> Planned {
        Planned {
            operation: operation.into(),
            params: BTreeMap::new(),
        }
    }

    pub fn param(mut self, name: &str, value: impl Into<String>) -> Planned {
        self.params.insert(name.to_owned(), value.into());
        self
    }
}

/// How a step ended when it did not fail outright.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    Done {
        summary: String,
    },
    /// A verify step whose checks did not all pass.
    ChecksFailed {
        summary: String,
        rollback: bool,
    },
}

/// An effect on the world whose event is queued ahead of it.
type Effect = Box<dyn FnOnce() -> Result<(), MigrateError>>;

/// What a step's `apply` may use: the recorder (through `record` and
/// `record_ahead`), the blob store, its run and index.
pub struct StepContext<'a> {
    pub recorder: &'a Recorder,
    pub run: &'a str,
    pub step: u32,
    /// The run's database connections (opened on first use).
    pub databases: &'a mut Databases,
    /// Events not yet durable, oldest first. The last `effects.len()` of
    /// them describe effects not yet carried out.
    pending: Vec<Event>,
    /// The effects of the newest pending events, in order: each runs only
    /// once its event is durable.
    effects: Vec<Effect>,
    pub recorded: u64,
    /// Where a long step tells how far it got.
    progress: &'a mut dyn FnMut(&Progress),
}

impl<'a> StepContext<'a> {
    pub fn new(
        recorder: &'a Recorder,
        run: &'a str,
        step: u32,
        databases: &'a mut Databases,
        progress: &'a mut dyn FnMut(&Progress),
    ) -> StepContext<'a> {
        StepContext {
            recorder,
            run,
            step,
            databases,
            pending: Vec::new(),
            effects: Vec::new(),
            recorded: 0,
            progress,
        }
    }

    /// Runs `work` on the database at `url`; the events it hands to the
    /// recorder are appended (durably) at once, before its transaction
    /// commits, through the one appender.
    pub fn on_database<T>(
        &mut self,
        kind: &str,
        url: Option<&str>,
        work: impl FnOnce(&mut Database, &mut dyn db::Recorder) -> db::Result<T>,
    ) -> Result<T, MigrateError> {
        let step = self.step;
        let Some(url) = url else {
            return Err(MigrateError::NoDatabase {
                step,
                kind: kind.to_owned(),
            });
        };
        self.flush()?;
        let recorder = self.recorder;
        let run = self.run;
        let database = self.databases.get(url).map_err(|error| MigrateError::Db {
            step: Some(step),
            kind: kind.to_owned(),
            error,
        })?;
        let mut count = 0u64;
        let mut rows = 0u64;
        let progress = &mut *self.progress;
        let mut sink = |events: Vec<Event>| -> Result<(), MigrateError> {
            count += events.len() as u64;
            let chunk_rows: u64 = events
                .iter()
                .map(|event| match event {
                    Event::RowsPacked(packed) => u64::from(packed.rows),
                    Event::RowsChanged(changed) => changed.rows.len() as u64,
                    _ => 0,
                })
                .sum();
            recorder.record(Some(run), events)?;
            if chunk_rows > 0 {
                rows += chunk_rows;
                progress(&Progress::StepAdvanced {
                    step,
                    done: format!("{rows} row(s) recorded"),
                });
            }
            Ok(())
        };
        let result = work(database, &mut sink);
        self.recorded += count;
        result.map_err(|error| MigrateError::Db {
            step: Some(step),
            kind: kind.to_owned(),
            error,
        })
    }

    pub fn blobs(&self) -> &rewind_ledger::BlobStore {
        self.recorder.blobs()
    }

    /// Queues the event of something that has already happened (a command
    /// that ran, a check, a backup); batches are handed to the appender.
    pub fn record(&mut self, event: Event) -> Result<(), MigrateError> {
        // Effects queued ahead happen first, so that the ledger's order
        // stays the world's order.
        if !self.effects.is_empty() {
            self.flush()?;
        }
        self.pending.push(event);
        self.recorded += 1;
        if self.pending.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// Queues the event of an effect that has not happened yet, with the
    /// effect. The event must carry everything its inverse needs (old
    /// modes and owners, the digests of stashed content, already in the
    /// blob store). Up to [`BATCH`] events are made durable at once, then
    /// their effects run in order: after a crash the ledger may hold an
    /// event whose effect never happened, and the inverse then finds its
    /// path in the old state and records it undone without acting
    /// ([`crate::undo::already_undone`]); it never finds an effect the
    /// ledger does not know.
    pub fn record_ahead(
        &mut self,
        event: Event,
        effect: impl FnOnce() -> Result<(), MigrateError> + 'static,
    ) -> Result<(), MigrateError> {
        self.pending.push(event);
        self.effects.push(Box::new(effect));
        self.recorded += 1;
        if self.pending.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// Carries out the effects queued ahead, their events made durable
    /// first; events with no effect waiting stay queued.
    pub fn finish_effects(&mut self) -> Result<(), MigrateError> {
        if self.effects.is_empty() {
            Ok(())
        } else {
            self.flush()
        }
    }

    /// Hands back the queued events, for the caller to append with its own.
    /// Events of effects that were never carried out (the step stopped
    /// with an error before `finish_effects`) are dropped with them.
    pub fn take_pending(&mut self) -> Vec<Event> {
        let done = self.pending.len() - self.effects.len();
        self.recorded -= self.effects.len() as u64;
        self.effects.clear();
        self.pending.truncate(done);
        std::mem::take(&mut self.pending)
    }

    /// Makes every queued event durable (one batch), then carries out the
    /// effects queued ahead, in order; the first that fails stops the rest.
    pub fn flush(&mut self) -> Result<(), MigrateError> {
        if !self.pending.is_empty() {
            let events = std::mem::take(&mut self.pending);
            self.recorder.record(Some(self.run), events)?;
        }
        for effect in std::mem::take(&mut self.effects) {
            effect()?;
        }
        Ok(())
    }
}

/// Parses an octal mode such as `"0755"` or `"750"`.
pub fn parse_mode(at: &Location, field: &str, text: &str) -> Result<u32, SpecError> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o7777 && !digits.is_empty() => Ok(mode),
        _ => Err(SpecError::BadValue {
            at: at.clone(),
            field: field.to_owned(),
            value: text.to_owned(),
            reason: "a mode is up to four octal digits, like \"0755\"".into(),
        }),
    }
}

/// Parses a mode already validated by `validate`.
pub fn mode_of(text: &str) -> u32 {
    u32::from_str_radix(text.strip_prefix("0o").unwrap_or(text), 8).unwrap_or(0)
}

impl StepSpec {
    /// The step's `database` field, for steps that talk to a database
    /// (a `verify` only when it has SQL checks); `None` for file steps.
    pub fn database_mut(&mut self) -> Option<&mut Option<String>> {
        match self {
            StepSpec::Backup(_)
            | StepSpec::Move(_)
            | StepSpec::Chmod(_)
            | StepSpec::Chown(_)
            | StepSpec::Mkdir(_)
            | StepSpec::Write(_)
            | StepSpec::Remove(_)
            | StepSpec::Exec(_) => None,
            StepSpec::Verify(s) => s.database_mut(),
            StepSpec::Ddl(s) => Some(&mut s.database),
            StepSpec::Insert(s) => Some(&mut s.database),
            StepSpec::Update(s) => Some(&mut s.database),
            StepSpec::Delete(s) => Some(&mut s.database),
            StepSpec::Sql(s) => Some(&mut s.database),
        }
    }

    /// The database this step talks to, once resolved.
    pub fn database(&self) -> Option<&str> {
        match self {
            StepSpec::Backup(_)
            | StepSpec::Move(_)
            | StepSpec::Chmod(_)
            | StepSpec::Chown(_)
            | StepSpec::Mkdir(_)
            | StepSpec::Write(_)
            | StepSpec::Remove(_)
            | StepSpec::Exec(_) => None,
            StepSpec::Verify(s) => s.database.as_deref().filter(|_| s.has_sql()),
            StepSpec::Ddl(s) => s.database.as_deref(),
            StepSpec::Insert(s) => s.database.as_deref(),
            StepSpec::Update(s) => s.database.as_deref(),
            StepSpec::Delete(s) => s.database.as_deref(),
            StepSpec::Sql(s) => s.database.as_deref(),
        }
    }

    /// What the database preflight prepares for this step (`step` is its
    /// 1-based index); `None` for file steps.
    pub fn db_operation(&self, step: u32) -> Option<db::Operation> {
        match self {
            StepSpec::Backup(_)
            | StepSpec::Move(_)
            | StepSpec::Chmod(_)
            | StepSpec::Chown(_)
            | StepSpec::Mkdir(_)
            | StepSpec::Write(_)
            | StepSpec::Remove(_)
            | StepSpec::Exec(_) => None,
            StepSpec::Verify(s) => s.db_operation(step),
            StepSpec::Ddl(s) => Some(db::Operation::Schema(s.operation(step))),
            // The preflight checks literal rows' columns, never binds them.
            StepSpec::Insert(s) => {
                Some(db::Operation::Insert(s.operation(step, db::Engine::Sqlite)))
            }
            StepSpec::Update(s) => Some(db::Operation::Update(s.operation(step))),
            StepSpec::Delete(s) => Some(db::Operation::Delete(s.operation(step))),
            StepSpec::Sql(s) => Some(db::Operation::Schema(s.operation(step))),
        }
    }

    /// The kind's name as written in specs.
    pub fn kind(&self) -> &'static str {
        match self {
            StepSpec::Backup(_) => backup::INFO.name,
            StepSpec::Move(_) => move_::INFO.name,
            StepSpec::Chmod(_) => chmod::INFO.name,
            StepSpec::Chown(_) => chown::INFO.name,
            StepSpec::Mkdir(_) => mkdir::INFO.name,
            StepSpec::Write(_) => write::INFO.name,
            StepSpec::Remove(_) => remove::INFO.name,
            StepSpec::Exec(_) => exec::INFO.name,
            StepSpec::Verify(_) => verify::INFO.name,
            StepSpec::Ddl(_) => ddl::INFO.name,
            StepSpec::Insert(_) => insert::INFO.name,
            StepSpec::Update(_) => update::INFO.name,
            StepSpec::Delete(_) => delete::INFO.name,
            StepSpec::Sql(_) => sql::INFO.name,
        }
    }

    /// Every text field, for checking `{var}` names.
    pub fn strings(&self) -> Vec<String> {
        match self {
            StepSpec::Backup(s) => s.strings(),
            StepSpec::Move(s) => s.strings(),
            StepSpec::Chmod(s) => s.strings(),
            StepSpec::Chown(s) => s.strings(),
            StepSpec::Mkdir(s) => s.strings(),
            StepSpec::Write(s) => s.strings(),
            StepSpec::Remove(s) => s.strings(),
            StepSpec::Exec(s) => s.strings(),
            StepSpec::Verify(s) => s.strings(),
            StepSpec::Ddl(s) => s.strings(),
            StepSpec::Insert(s) => s.strings(),
            StepSpec::Update(s) => s.strings(),
            StepSpec::Delete(s) => s.strings(),
            StepSpec::Sql(s) => s.strings(),
        }
    }

    /// A copy with every text field passed through `sub`.
    pub fn substitute(&self, sub: &dyn Fn(&str) -> String) -> Result<StepSpec, SpecError> {
        Ok(match self {
            StepSpec::Backup(s) => StepSpec::Backup(s.substitute(sub)),
            StepSpec::Move(s) => StepSpec::Move(s.substitute(sub)),
            StepSpec::Chmod(s) => StepSpec::Chmod(s.substitute(sub)),
            StepSpec::Chown(s) => StepSpec::Chown(s.substitute(sub)),
            StepSpec::Mkdir(s) => StepSpec::Mkdir(s.substitute(sub)),
            StepSpec::Write(s) => StepSpec::Write(s.substitute(sub)),
            StepSpec::Remove(s) => StepSpec::Remove(s.substitute(sub)),
            StepSpec::Exec(s) => StepSpec::Exec(s.substitute(sub)),
            StepSpec::Verify(s) => StepSpec::Verify(s.substitute(sub)),
            StepSpec::Ddl(s) => StepSpec::Ddl(s.substitute(sub)),
            StepSpec::Insert(s) => StepSpec::Insert(s.substitute(sub)),
            StepSpec::Update(s) => StepSpec::Update(s.substitute(sub)),
            StepSpec::Delete(s) => StepSpec::Delete(s.substitute(sub)),
            StepSpec::Sql(s) => StepSpec::Sql(s.substitute(sub)),
        })
    }

    /// Checks values that TOML types cannot (modes, sizes, one check kind).
    pub fn validate(&self, at: &Location) -> Result<(), SpecError> {
        match self {
            StepSpec::Backup(s) => s.validate(at),
            StepSpec::Move(s) => s.validate(at),
            StepSpec::Chmod(s) => s.validate(at),
            StepSpec::Chown(s) => s.validate(at),
            StepSpec::Mkdir(s) => s.validate(at),
            StepSpec::Write(s) => s.validate(at),
            StepSpec::Remove(s) => s.validate(at),
            StepSpec::Exec(s) => s.validate(at),
            StepSpec::Verify(s) => s.validate(at),
            StepSpec::Ddl(s) => s.validate(at),
            StepSpec::Insert(s) => s.validate(at),
            StepSpec::Update(s) => s.validate(at),
            StepSpec::Delete(s) => s.validate(at),
            StepSpec::Sql(s) => s.validate(at),
        }
    }

    /// The paths the step acts on, with their field names, for root checks.
    pub fn paths(&self) -> Vec<(&'static str, String)> {
        match self {
            StepSpec::Backup(s) => s.paths(),
            StepSpec::Move(s) => s.paths(),
            StepSpec::Chmod(s) => s.paths(),
            StepSpec::Chown(s) => s.paths(),
            StepSpec::Mkdir(s) => s.paths(),
            StepSpec::Write(s) => s.paths(),
            StepSpec::Remove(s) => s.paths(),
            StepSpec::Exec(s) => s.paths(),
            StepSpec::Verify(s) => s.paths(),
            StepSpec::Ddl(s) => s.paths(),
            StepSpec::Insert(s) => s.paths(),
            StepSpec::Update(s) => s.paths(),
            StepSpec::Delete(s) => s.paths(),
            StepSpec::Sql(s) => s.paths(),
        }
    }

    /// Plans against the simulated world, refusing what cannot work.
    pub fn plan(&self, step: u32, sim: &mut Sim) -> Result<Planned, MigrateError> {
        match self {
            StepSpec::Backup(s) => s.plan(step, sim),
            StepSpec::Move(s) => s.plan(step, sim),
            StepSpec::Chmod(s) => s.plan(step, sim),
            StepSpec::Chown(s) => s.plan(step, sim),
            StepSpec::Mkdir(s) => s.plan(step, sim),
            StepSpec::Write(s) => s.plan(step, sim),
            StepSpec::Remove(s) => s.plan(step, sim),
            StepSpec::Exec(s) => s.plan(step, sim),
            StepSpec::Verify(s) => s.plan(step, sim),
            StepSpec::Ddl(s) => s.plan(step, sim),
            StepSpec::Insert(s) => s.plan(step, sim),
            StepSpec::Update(s) => s.plan(step, sim),
            StepSpec::Delete(s) => s.plan(step, sim),
            StepSpec::Sql(s) => s.plan(step, sim),
        }
    }

    /// Does the step; its intent is already durable.
    pub fn apply(&self, cx: &mut StepContext<'_>) -> Result<StepOutcome, MigrateError> {
        match self {
            StepSpec::Backup(s) => s.apply(cx),
            StepSpec::Move(s) => s.apply(cx),
            StepSpec::Chmod(s) => s.apply(cx),
            StepSpec::Chown(s) => s.apply(cx),
            StepSpec::Mkdir(s) => s.apply(cx),
            StepSpec::Write(s) => s.apply(cx),
            StepSpec::Remove(s) => s.apply(cx),
            StepSpec::Exec(s) => s.apply(cx),
            StepSpec::Verify(s) => s.apply(cx),
            StepSpec::Ddl(s) => s.apply(cx),
            StepSpec::Insert(s) => s.apply(cx),
            StepSpec::Update(s) => s.apply(cx),
            StepSpec::Delete(s) => s.apply(cx),
            StepSpec::Sql(s) => s.apply(cx),
        }
    }
}

/// A refusal of step `step` of kind `kind`.
pub fn refuse(step: u32, kind: &str, reason: impl Into<String>) -> MigrateError {
    MigrateError::Refused {
        step,
        kind: kind.to_owned(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Spec;

    #[test]
    fn every_kind_has_docs_an_inverse_statement_and_a_fixture_that_plans() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("web")).unwrap();
        std::fs::write(root.join("web/index.html"), "<h1>hi</h1>\n").unwrap();
        std::fs::create_dir_all(root.join("var/log")).unwrap();
        // An empty file is an empty SQLite database.
        std::fs::write(root.join("fixture.db"), b"").unwrap();
        let url = format!("sqlite://{}/fixture.db", root.display());
        Database::connect(&url)
            .unwrap()
            .execute_script("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER)")
            .unwrap();
        for info in REGISTRY {
            assert!(info.docs.len() > 40, "{} needs docs", info.name);
            if let Some(inverse) = info.inverse {
                assert!(!inverse.is_empty(), "{}", info.name);
            }
            let text = format!(
                "[migration]\nid = \"fixture\"\n[vars]\nroot = {{ required = true }}\n[[step]]\nkind = \"{}\"\n{}\n",
                info.name, info.fixture
            );
            let spec =
                Spec::parse("fixture.toml", &text).unwrap_or_else(|e| panic!("{}: {e}", info.name));
            assert_eq!(spec.steps[0].0.kind(), info.name);
            let vars = BTreeMap::from([("root".to_string(), root.display().to_string())]);
            let resolved = spec
                .resolve(&vars)
                .unwrap_or_else(|e| panic!("{}: {e}", info.name));
            crate::plan::plan(&resolved).unwrap_or_else(|e| panic!("{}: {e}", info.name));
        }
        assert_eq!(REGISTRY.len(), 14);
    }
}
