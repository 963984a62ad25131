//! What `plan`, `apply` and `demo` share: reading a spec, its variables and
//! targets into one resolved plan per target, run ids, turning migration
//! errors into operator errors, and reading the entries a rollback needs.

use std::collections::BTreeMap;

use rewind_ledger::{Entry, Ledger, RollbackTarget, Selector};
use rewind_migrations::apply::redact_words;
use rewind_migrations::db::DbError;
use rewind_migrations::plan::{Plan, plan};
use rewind_migrations::spec::{Resolved, Spec, parse_assignments, parse_targets_file};
use rewind_migrations::{MigrateError, SpecError};

use crate::cli::SpecArgs;
use crate::error::{CliError, CliResult, exit};

impl From<SpecError> for CliError {
    fn from(error: SpecError) -> CliError {
        let hint = error.hint();
        let mut cli = CliError::new(exit::USAGE, error);
        cli.hints.extend(hint);
        cli.hints.push("nothing was changed".into());
        cli
    }
}

/// A spec that cannot work on this database is bad usage (exit 2); a
/// database that cannot be reached, or fails, is a failure (exit 1).
fn db_exit_code(error: &DbError) -> u8 {
    match error {
        DbError::UnsupportedUrl { .. }
        | DbError::UnknownTable { .. }
        | DbError::UnknownColumn { .. }
        | DbError::NoKey { .. }
        | DbError::KeyNotUnique { .. }
        | DbError::KeyUncheckable { .. }
        | DbError::InsertKeyNotIndexed { .. }
        | DbError::KeyColumnTwice { .. }
        | DbError::NullKey { .. }
        | DbError::SetsKeyColumn { .. }
        | DbError::CascadingChange { .. }
        | DbError::InheritedRows { .. }
        | DbError::MissingDown { .. }
        | DbError::InvalidStep { .. }
        | DbError::Statement { .. } => exit::USAGE,
        DbError::Unreachable { .. }
        | DbError::AuthenticationFailed { .. }
        | DbError::Record { .. }
        | DbError::Concurrent { .. }
        | DbError::NotUtf8 { .. }
        | DbError::Irreversible { .. }
        | DbError::TriggersWouldFire { .. }
        | DbError::NoInverse { .. }
        | DbError::BadImages { .. }
        | DbError::Dump { .. }
        | DbError::Runtime { .. } => exit::FAILED,
    }
}

impl From<DbError> for CliError {
    fn from(error: DbError) -> CliError {
        let hint = error.hint();
        let mut cli = CliError::new(db_exit_code(&error), error);
        cli.hints.extend(hint.map(str::to_owned));
        cli
    }
}

impl From<MigrateError> for CliError {
    fn from(error: MigrateError) -> CliError {
        if let MigrateError::Db {
            error: db_error, ..
        } = &error
        {
            let code = db_exit_code(db_error);
            let hint = error.hint();
            let mut cli = CliError::new(code, error);
            cli.hints.extend(hint);
            return cli;
        }
        match error {
            MigrateError::Spec(spec) => spec.into(),
            MigrateError::Ledger(ledger) => ledger.into(),
            refused @ MigrateError::Rehearsal { .. } => {
                let hint = refused.hint();
                let mut cli = CliError::new(exit::USAGE, refused);
                cli.hints.extend(hint);
                cli
            }
            other => {
                let hint = other.hint();
                let mut cli = CliError::new(exit::FAILED, other);
                cli.hints.extend(hint);
                cli
            }
        }
    }
}

/// One target, resolved and planned.
pub struct TargetPlan {
    /// The target's name as recorded (`None` for a spec run without targets).
    pub target: Option<String>,
    pub resolved: Resolved,
    pub plan: Plan,
}

/// `sqlite://panel.db` with its path made absolute, so that the events
/// name the file wherever a later rollback runs; other values unchanged.
pub fn absolute_sqlite(value: &str) -> String {
    let Some(rest) = value.strip_prefix("sqlite://") else {
        return value.to_owned();
    };
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, format!("?{query}")),
        None => (rest, String::new()),
    };
    if path.is_empty() || path.starts_with('/') || path.starts_with(':') {
        return value.to_owned();
    }
    match std::path::absolute(path) {
        Ok(absolute) => format!("sqlite://{}{query}", absolute.display()),
        Err(_) => value.to_owned(),
    }
}

fn absolute_sqlite_vars(vars: BTreeMap<String, String>) -> BTreeMap<String, String> {
    vars.into_iter()
        .map(|(name, value)| (name, absolute_sqlite(&value)))
        .collect()
}

/// One target, resolved but not planned.
pub struct ResolvedTarget {
    /// The target as given, with any password removed.
    pub target: Option<String>,
    pub resolved: Resolved,
}

/// Reads the spec and binds every target's variables, checking every path
/// against the roots; touches no target (no plan, no preflight).
pub fn resolve_all(args: &SpecArgs) -> CliResult<(Spec, Vec<ResolvedTarget>)> {
    let spec = Spec::load(&args.spec)?;
    let given = absolute_sqlite_vars(parse_assignments(args.vars.iter().map(String::as_str))?);
    let mut targets: Vec<String> = args.targets.clone();
    if let Some(file) = &args.targets_file {
        let text = fs_err::read_to_string(file)?;
        targets.extend(
            parse_targets_file(&file.display().to_string(), &text)?
                .into_iter()
                .map(|(_, text)| text),
        );
    }
    let mut resolved = Vec::new();
    if targets.is_empty() {
        resolved.push(ResolvedTarget {
            target: None,
            resolved: spec.resolve(&given)?,
        });
    }
    for target in targets {
        let mut vars: BTreeMap<String, String> = given.clone();
        vars.extend(absolute_sqlite_vars(spec.target_vars(&target)?));
        resolved.push(ResolvedTarget {
            // A target may hold a database url: it is shown without its password.
            target: Some(redact_words(target.trim())),
            resolved: spec.resolve(&vars)?,
        });
    }
    Ok((spec, resolved))
}

/// Reads the spec, binds every target's variables, checks every path and
/// plans every step — all before anything runs.
pub fn load(args: &SpecArgs) -> CliResult<(Spec, Vec<TargetPlan>)> {
    let (spec, targets) = resolve_all(args)?;
    let mut planned = Vec::new();
    for ResolvedTarget { target, resolved } in targets {
        let plan = plan(&resolved).map_err(|e| refused(e, target.as_deref()))?;
        planned.push(TargetPlan {
            target,
            resolved,
            plan,
        });
    }
    Ok((spec, planned))
}

fn refused(error: MigrateError, target: Option<&str>) -> CliError {
    let mut cli: CliError = error.into();
    if let Some(target) = target {
        cli.error = cli
            .error
            .context(format!("target {target} cannot be planned"));
    }
    cli.hints.push("nothing was changed".into());
    cli
}

/// Fresh run ids, one per target.
pub fn run_ids(sequential: bool, ledger: &Ledger, count: usize) -> Vec<String> {
    let head = ledger.head().0;
    (0..count)
        .map(|index| {
            if sequential {
                format!("r{}", head + 1 + index as u64)
            } else {
                uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
            }
        })
        .collect()
}

/// The entries an inverse plan of `target` needs: from the run's first
/// event (or the seq after `--after`) to the head.
pub fn entries_for(ledger: &Ledger, target: &RollbackTarget) -> CliResult<Vec<Entry>> {
    let head = ledger.head().0;
    let start = match target {
        RollbackTarget::Run(run) | RollbackTarget::Step(run, _) => {
            let seqs = ledger
                .candidates(&Selector {
                    run: Some(run.clone()),
                    ..Selector::default()
                })?
                .unwrap_or_default();
            match seqs.first() {
                Some(first) => *first,
                None => return Ok(Vec::new()),
            }
        }
        RollbackTarget::After(seq) => seq + 1,
    };
    if start > head {
        return Ok(Vec::new());
    }
    Ok(ledger.range(start..=head).collect::<Result<_, _>>()?)
}

/// Every entry, for status.
pub fn all_entries(ledger: &Ledger) -> CliResult<Vec<Entry>> {
    let head = ledger.head().0;
    if head == 0 {
        return Ok(Vec::new());
    }
    Ok(ledger.range(1..=head).collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::absolute_sqlite;

    #[test]
    fn relative_sqlite_paths_become_absolute() {
        let url = absolute_sqlite("sqlite://panel.db?mode=ro");
        assert!(url.starts_with("sqlite:///"), "{url}");
        assert!(url.ends_with("/panel.db?mode=ro"), "{url}");
        for unchanged in [
            "sqlite:///srv/panel.db",
            "sqlite://:memory:",
            "postgres://u@h/db",
            "/srv/site",
        ] {
            assert_eq!(absolute_sqlite(unchanged), unchanged);
        }
    }
}
