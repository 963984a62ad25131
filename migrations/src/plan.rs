//! Planning: every step of a resolved spec against a simulated world, so
//! that a move onto an existing path or a chmod of a missing one is refused
//! before anything runs, even when an earlier step is what creates or moves
//! the path in question.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rewind_ledger::FileType;

use crate::db::{self, Database};
use crate::error::MigrateError;
use crate::spec::Resolved;
use crate::steps::Planned;
use crate::tree::file_type_of;

/// SQL on one line, for a plan's or a rollback's table: each line's
/// whitespace runs folded, blank lines dropped, and a line break shown as
/// ` ↵ ` (folded into a space, `-- a comment` would swallow the statement
/// after it).
pub fn one_line(sql: &str) -> String {
    sql.lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ↵ ")
}

/// One planned step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStep {
    pub index: u32,
    pub kind: &'static str,
    pub operation: String,
    pub params: BTreeMap<String, String>,
}

/// The plan of one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub vars: BTreeMap<String, String>,
    pub steps: Vec<PlannedStep>,
}

/// Plans every step; the first refusal stops the plan. Database steps are
/// then prepared against their database ([`preflight`]).
pub fn plan(resolved: &Resolved) -> Result<Plan, MigrateError> {
    let mut sim = Sim::default();
    let mut steps = Vec::with_capacity(resolved.steps.len());
    for step in &resolved.steps {
        let Planned { operation, params } = step.spec.plan(step.index, &mut sim)?;
        steps.push(PlannedStep {
            index: step.index,
            kind: step.spec.kind(),
            operation,
            params,
        });
    }
    preflight(resolved)?;
    Ok(Plan {
        vars: resolved.vars.clone(),
        steps,
    })
}

/// Prepares the database steps of `resolved`, per database and in order,
/// inside a transaction that is rolled back: an unknown table or column, a
/// table without a usable key or a SQL syntax error is refused, naming the
/// step, before anything runs. Connects once per database.
pub fn preflight(resolved: &Resolved) -> Result<(), MigrateError> {
    let mut by_database: BTreeMap<&str, Vec<db::Operation>> = BTreeMap::new();
    for step in &resolved.steps {
        if let (Some(url), Some(operation)) =
            (step.spec.database(), step.spec.db_operation(step.index))
        {
            by_database.entry(url).or_default().push(operation);
        }
    }
    let kind_of = |index: u32| {
        resolved
            .steps
            .iter()
            .find(|step| step.index == index)
            .map_or("", |step| step.spec.kind())
            .to_owned()
    };
    for (url, operations) in by_database {
        let first = operations.first().map_or(0, db::Operation::step);
        let mut database = Database::connect(url).map_err(|error| MigrateError::Db {
            step: Some(first),
            kind: kind_of(first),
            error,
        })?;
        database
            .preflight(&operations)
            .map_err(|(step, error)| MigrateError::Db {
                step: Some(step),
                kind: kind_of(step),
                error,
            })?;
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum SimOp {
    Moved { from: PathBuf, to: PathBuf },
    Created { path: PathBuf, file_type: FileType },
    Removed { path: PathBuf },
}

/// The world as it will be after the steps planned so far: the real
/// filesystem seen through the planned operations.
#[derive(Debug, Default, Clone)]
pub struct Sim {
    ops: Vec<SimOp>,
}

impl Sim {
    /// What will be at `path`, or `None` when nothing will be.
    pub fn state(&self, path: &Path) -> Option<FileType> {
        match self.origin(path) {
            Origin::Real(real) => std::fs::symlink_metadata(real)
                .ok()
                .map(|m| file_type_of(&m)),
            Origin::Created(file_type) => Some(file_type),
            Origin::Absent => None,
        }
    }

    pub fn exists(&self, path: &Path) -> bool {
        self.state(path).is_some()
    }

    fn origin(&self, path: &Path) -> Origin {
        let mut path = path.to_path_buf();
        for op in self.ops.iter().rev() {
            match op {
                SimOp::Created {
                    path: created,
                    file_type,
                } => {
                    if path == *created {
                        return Origin::Created(*file_type);
                    }
                    if path.starts_with(created) {
                        return Origin::Absent;
                    }
                }
                SimOp::Removed { path: removed } => {
                    if path.starts_with(removed) {
                        return Origin::Absent;
                    }
                }
                SimOp::Moved { from, to } => {
                    if let Ok(rest) = path.strip_prefix(to) {
                        path = if rest.as_os_str().is_empty() {
                            from.clone()
                        } else {
                            from.join(rest)
                        };
                    } else if path.starts_with(from) {
                        return Origin::Absent;
                    }
                }
            }
        }
        Origin::Real(path)
    }

    /// The children that will be in directory `dir`, sorted.
    pub fn children(&self, dir: &Path) -> Vec<PathBuf> {
        let mut names = BTreeSet::new();
        if let Origin::Real(real) = self.origin(dir)
            && let Ok(entries) = std::fs::read_dir(&real)
        {
            for entry in entries.flatten() {
                names.insert(dir.join(entry.file_name()));
            }
        }
        for op in &self.ops {
            let candidate = match op {
                SimOp::Moved { to, .. } => to,
                SimOp::Created { path, .. } => path,
                SimOp::Removed { .. } => continue,
            };
            if candidate.parent() == Some(dir) {
                names.insert(candidate.clone());
            }
        }
        names.into_iter().filter(|path| self.exists(path)).collect()
    }

    pub fn moved(&mut self, from: &Path, to: &Path) {
        self.ops.push(SimOp::Moved {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
        });
    }

    pub fn created(&mut self, path: &Path, file_type: FileType) {
        self.ops.push(SimOp::Created {
            path: path.to_path_buf(),
            file_type,
        });
    }

    pub fn removed(&mut self, path: &Path) {
        self.ops.push(SimOp::Removed {
            path: path.to_path_buf(),
        });
    }

    /// The nearest existing ancestor of `path` that is not a directory, if
    /// any: creating `path` (and its missing parents) would fail there.
    pub fn blocking_ancestor(&self, path: &Path) -> Option<(PathBuf, FileType)> {
        path.ancestors()
            .skip(1)
            .filter(|ancestor| !ancestor.as_os_str().is_empty())
            .find_map(|ancestor| {
                self.state(ancestor)
                    .map(|state| (ancestor.to_path_buf(), state))
            })
            .filter(|(_, state)| *state != FileType::Dir)
    }

    /// The ancestors of `path` that do not exist yet, outermost first.
    pub fn missing_ancestors(&self, path: &Path) -> Vec<PathBuf> {
        let mut missing: Vec<PathBuf> = path
            .ancestors()
            .skip(1)
            .take_while(|ancestor| !ancestor.as_os_str().is_empty() && !self.exists(ancestor))
            .map(Path::to_path_buf)
            .collect();
        missing.reverse();
        missing
    }
}

enum Origin {
    Real(PathBuf),
    Created(FileType),
    Absent,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A statement's line breaks stay visible on one line: folded into
    /// spaces, the comment would seem to hold the statement after it.
    #[test]
    fn one_line_marks_line_breaks() {
        assert_eq!(
            super::one_line("-- drop it\n   DROP TABLE x;\n\n  DROP   TABLE y\n"),
            "-- drop it ↵ DROP TABLE x; ↵ DROP TABLE y"
        );
        assert_eq!(super::one_line("SELECT  1"), "SELECT 1");
    }

    #[test]
    fn sim_follows_moves_creations_and_removals() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("web")).unwrap();
        std::fs::write(root.join("web/index.html"), "x").unwrap();
        let mut sim = Sim::default();
        sim.created(&root.join("web/app"), FileType::Dir);
        sim.moved(
            &root.join("web/index.html"),
            &root.join("web/app/index.html"),
        );
        assert!(!sim.exists(&root.join("web/index.html")));
        assert_eq!(
            sim.state(&root.join("web/app/index.html")),
            Some(FileType::File)
        );
        assert_eq!(sim.children(&root.join("web")), vec![root.join("web/app")]);
        sim.removed(&root.join("web/app"));
        assert!(!sim.exists(&root.join("web/app/index.html")));
    }
}
