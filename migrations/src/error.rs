//! Errors of the migrations crate, with the fields an operator needs: the
//! spec file, line and column, the step, the path.
//!
//! Expected outcomes — a failed check, drift — are values, not errors (see
//! [`crate::apply::RunReport`] and [`crate::undo::Drift`]).

use std::fmt;
use std::path::PathBuf;

use rewind_ledger::LedgerError;

/// Where in a spec something is: file, 1-based line and column, and the
/// step (1-based, as operators count them) when it is inside one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub step: Option<u32>,
    pub kind: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)?;
        match (self.step, &self.kind) {
            (Some(step), Some(kind)) => write!(f, ": step {step} ({kind})"),
            (Some(step), None) => write!(f, ": step {step}"),
            _ => Ok(()),
        }
    }
}

/// A spec that cannot run: refused before anything is touched.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read spec {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{at}: {message}")]
    Parse { at: Location, message: String },

    #[error("{at}: unknown step kind `{kind}` (known kinds: {known})")]
    UnknownKind {
        at: Location,
        kind: String,
        known: String,
    },

    #[error("{at}: `{{{name}}}` names a variable the spec does not declare in [vars]")]
    UnknownVar { at: Location, name: String },

    #[error("{at}: variable `{name}` is required{}", help.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
    MissingVar {
        at: Location,
        name: String,
        help: Option<String>,
    },

    #[error("`--var {name}=…` sets a variable the spec does not declare (declared: {declared})")]
    UndeclaredVar { name: String, declared: String },

    #[error("`{text}` is not `name=value`")]
    BadAssignment { text: String },

    #[error("{file}:{line}: target `{text}` is not a list of `name=value`")]
    BadTarget {
        file: String,
        line: usize,
        text: String,
    },

    #[error("{at}: {field} `{value}` is invalid: {reason}")]
    BadValue {
        at: Location,
        field: String,
        value: String,
        reason: String,
    },

    #[error("{at}: `{field}` is missing: {reason}")]
    MissingField {
        at: Location,
        field: String,
        reason: String,
    },

    #[error(
        "{at}: the spec declares no roots: add `roots = [\"{{root}}\"]` to [migration] or `root = true` to a variable"
    )]
    NoRoots { at: Location },

    #[error(
        "{at}: the step needs a database and the spec names none: add `database = \"…\"` to [migration] or to the step"
    )]
    NoDatabase { at: Location },

    #[error("{at}: root `{root}` must be an absolute path")]
    RelativeRoot { at: Location, root: String },

    #[error("{at}: {field} `{path}` resolves to {resolved}, outside the declared roots ({roots})")]
    EscapesRoot {
        at: Location,
        field: String,
        path: String,
        resolved: String,
        roots: String,
    },
}

impl SpecError {
    /// The next thing an operator should do.
    pub fn hint(&self) -> Option<String> {
        match self {
            SpecError::Read { .. } => Some("check the path of the spec file".into()),
            SpecError::Parse { .. } => {
                Some("fix the spec; `rewind plan SPEC` checks it without changing anything".into())
            }
            SpecError::UnknownKind { .. } => Some(
                "each kind and its keys are documented in `migrations/src/steps/KIND.rs`".into(),
            ),
            SpecError::UnknownVar { name, .. } => Some(format!(
                "declare it: `[vars] {name} = {{ required = true }}`"
            )),
            SpecError::MissingVar { name, .. } => Some(format!(
                "pass `--var {name}=VALUE` or a `--target {name}=VALUE`"
            )),
            SpecError::UndeclaredVar { .. } | SpecError::BadAssignment { .. } => {
                Some("pass variables as `--var name=value`".into())
            }
            SpecError::BadTarget { .. } => {
                Some("write one target per line, like `root=/srv/example.com`".into())
            }
            SpecError::BadValue { .. } | SpecError::MissingField { .. } => None,
            SpecError::NoRoots { .. } => None,
            SpecError::RelativeRoot { .. } => Some(
                "pass the root as an absolute path, e.g. `--target root=$PWD/example.com`".into(),
            ),
            SpecError::NoDatabase { .. } => Some(
                "`database = \"{db}\"` in [migration] with `[vars] db = { required = true }` takes it per target"
                    .into(),
            ),
            SpecError::EscapesRoot { .. } => Some(
                "every path must stay under a declared root after `..` and symlinks are resolved"
                    .into(),
            ),
        }
    }
}

/// Anything that stops a plan, an apply or a rollback.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Spec(#[from] SpecError),

    #[error(transparent)]
    Ledger(#[from] LedgerError),

    /// File errors come from `fs_err` and already name their path.
    #[error(transparent)]
    Io(#[from] std::io::Error),

    #[error("step {step} ({kind}): {reason}")]
    Refused {
        step: u32,
        kind: String,
        reason: String,
    },

    #[error("step {step} (exec): `{command}` did not finish within {seconds} s and was killed")]
    TimedOut {
        step: u32,
        command: String,
        seconds: u64,
    },

    #[error("step {step} (exec): `{command}` exited with {code}")]
    CommandFailed {
        step: u32,
        command: String,
        code: String,
    },

    #[error("spec `{id}` changed since run {run} applied it (sha256 {previous} → {current})")]
    ChangedSpec {
        id: String,
        run: String,
        previous: String,
        current: String,
    },

    #[error("seq {seq} ({kind}): {reason}")]
    CannotUndo {
        seq: u64,
        kind: String,
        reason: String,
    },

    #[error("{path} is left over from an interrupted step of rewind")]
    Leftover { path: String },

    #[error("the backup archive {archive} is damaged: {reason}")]
    BadArchive { archive: String, reason: String },

    /// A database step or inverse failed, or was refused before anything ran.
    #[error("{}", db_message(*step, kind, error))]
    Db {
        step: Option<u32>,
        kind: String,
        error: crate::db::DbError,
    },

    #[error(
        "step {step} ({kind}): no database: set `database = \"…\"` in [migration] or in the step"
    )]
    NoDatabase { step: u32, kind: String },

    /// The spec cannot be pointed at copies of its targets.
    #[error("cannot rehearse: {reason}")]
    Rehearsal { reason: String, hint: String },

    /// A target could not be copied for a rehearsal.
    #[error("cannot rehearse: {reason}")]
    RehearsalCopy { reason: String },
}

fn db_message(step: Option<u32>, kind: &str, source: &crate::db::DbError) -> String {
    let text = source.to_string();
    match step {
        Some(step) if !text.starts_with("step ") => format!("step {step} ({kind}): {text}"),
        Some(step) => match text.strip_prefix(&format!("step {step}: ")) {
            Some(rest) => format!("step {step} ({kind}): {rest}"),
            None => text,
        },
        None => text,
    }
}

impl MigrateError {
    /// The next thing an operator should do.
    pub fn hint(&self) -> Option<String> {
        match self {
            MigrateError::Spec(error) => error.hint(),
            MigrateError::Ledger(LedgerError::Locked { .. }) => {
                Some("wait for the other rewind to finish; only one may write the ledger".into())
            }
            MigrateError::Ledger(_) | MigrateError::Io(_) => None,
            MigrateError::Refused { .. } => Some(
                "nothing was changed by this step; fix the world or the spec, then apply again"
                    .into(),
            ),
            MigrateError::TimedOut { .. } | MigrateError::CommandFailed { .. } => {
                Some("`rewind status` shows what ran; `rewind rollback RUN` undoes it".into())
            }
            MigrateError::ChangedSpec { .. } => {
                Some("use a new migration id, or pass `--allow-changed-spec`".into())
            }
            MigrateError::CannotUndo { .. } => None,
            MigrateError::Leftover { .. } => Some(
                "roll back the run whose step was interrupted (`rewind status` lists it), which clears it; or remove it by hand"
                    .into(),
            ),
            MigrateError::BadArchive { .. } => {
                Some("`rewind backups verify` checks every archive".into())
            }
            MigrateError::Db {
                error: crate::db::DbError::Unreachable { database, .. },
                ..
            } if database.starts_with("sqlite:") => Some(
                "check that the SQLite file exists: sqlite://PATH opens an existing file, and a relative PATH is relative to the current directory"
                    .into(),
            ),
            MigrateError::Db { error, .. } => error.hint().map(str::to_owned),
            MigrateError::NoDatabase { .. } => Some(
                "`database = \"{db}\"` with `[vars] db = { required = true }` takes it per target"
                    .into(),
            ),
            MigrateError::Rehearsal { hint, .. } => Some(format!("{hint}; nothing outside the scratch area was touched")),
            MigrateError::RehearsalCopy { .. } => Some(
                "nothing outside the scratch area was changed; rehearse again when nobody else uses the database, or on a copy made by hand"
                    .into(),
            ),
        }
    }
}
