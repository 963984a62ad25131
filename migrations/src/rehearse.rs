//! Rehearsals: a migration's targets copied into a scratch area, so that
//! `rewind rehearse` can apply, roll back and apply again there and compare
//! each state with the one before, without touching the real targets.
//!
//! What is copied: every declared root (a directory tree, with modes,
//! owners, mtimes and links), every SQLite database (`VACUUM INTO`, a
//! consistent copy even while others write) and every PostgreSQL database
//! (`CREATE DATABASE … TEMPLATE`, which PostgreSQL allows only while nobody
//! else is connected to the original). The variables are then rewritten to
//! name the copies, and the spec is resolved again; a rehearsal is refused
//! before anything is copied or run if any root or database of that
//! resolution still lies outside the scratch area (a path or database
//! written literally in the spec, rather than through a variable).
//! Commands (`exec` steps) act on the world outside the copies, so they are
//! left out unless asked for.
//!
//! A [`Snapshot`] is what a comparison needs: every root's manifest (path,
//! type, mode, owner, content sha256, link target) and every database's
//! dump (SQLite: [`Database::dump_sqlite`]; PostgreSQL: `pg_dump` of
//! schema and data, rows sorted inside each `COPY` block).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::db::dump::{self, PgDumpPart};
use rewind_ledger::SqlValue;

use crate::db::{Database, Engine, engine_of, quote_ident, redact_url};
use crate::error::MigrateError;
use crate::paths;
use crate::spec::{Resolved, Spec};
use crate::steps::StepSpec;
use crate::steps::move_::copy_tree;
use crate::tree::{self, Manifest};

/// One thing the rehearsal copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// `root` or `database`.
    pub what: &'static str,
    /// The original, with any password removed.
    pub original: String,
    /// The copy, with any password removed.
    pub copy: String,
    /// Absolute links in a copied root pointed at the copy.
    pub relinked: usize,
}

/// A rehearsal checked and ready to copy its targets: nothing has been
/// made yet. [`Planned::make`] copies them into a [`Scratch`].
#[derive(Debug)]
pub struct Planned {
    dir: PathBuf,
    spec: Spec,
    /// The outermost roots, each with the path of its copy.
    roots: Vec<(PathBuf, PathBuf)>,
    /// Each database url, with the url of its copy.
    databases: Vec<(String, String)>,
    vars: BTreeMap<String, String>,
    resolved: Resolved,
    skipped: Vec<(u32, &'static str, String)>,
}

/// The scratch area of one target's rehearsal: its copies, and the spec
/// resolved against them. Dropping it removes the copies (scratch
/// PostgreSQL databases included) unless [`Scratch::keep`] was called;
/// [`Scratch::clean_up`] does the same and says what it could not remove.
#[derive(Debug)]
pub struct Scratch {
    dir: PathBuf,
    keep: bool,
    pub copies: Vec<Copied>,
    /// The target's variables, rewritten to name the copies.
    pub vars: BTreeMap<String, String>,
    pub resolved: Resolved,
    /// Steps left out of the rehearsal: the step, its kind, and why.
    pub skipped: Vec<(u32, &'static str, String)>,
    /// Scratch PostgreSQL databases: the maintenance url and the name.
    databases: Vec<(String, String)>,
}

/// Connection parameters that would make a `postgres://` url name another
/// database or server than the one its path and authority say.
const REDIRECTING_PARAMETERS: &[&str] = &["dbname", "host", "hostaddr", "port", "service"];

impl Planned {
    /// Checks that everything `spec` resolved with `vars` touches can be
    /// copied into `dir` (which must not exist yet) and pointed at there;
    /// changes nothing.
    pub fn check(
        spec: &Spec,
        vars: &BTreeMap<String, String>,
        dir: &Path,
        run_commands: bool,
    ) -> Result<Planned, MigrateError> {
        let original = spec.resolve(vars)?;
        let dir = paths::resolve(dir);
        if dir.exists() {
            return Err(refused(
                format!("the scratch directory {} exists already", dir.display()),
                "give --scratch a directory of its own; rehearse makes a new one inside it",
            ));
        }
        // Outermost roots only: a root inside another is copied with it.
        let mut outermost: Vec<PathBuf> = Vec::new();
        for root in &original.roots {
            if !original
                .roots
                .iter()
                .any(|other| other != root && root.starts_with(other))
                && !outermost.contains(root)
            {
                outermost.push(root.clone());
            }
        }
        let mut roots = Vec::new();
        for (index, root) in outermost.into_iter().enumerate() {
            if dir.starts_with(&root) {
                return Err(refused(
                    format!(
                        "the scratch directory {} lies inside root {}, which would be copied into itself",
                        dir.display(),
                        root.display()
                    ),
                    "give --scratch a directory outside every root",
                ));
            }
            let name = root.file_name().map_or_else(
                || "root".to_owned(),
                |name| name.to_string_lossy().into_owned(),
            );
            let copy = dir.join(format!("root-{}-{name}", index + 1));
            roots.push((root, copy));
        }
        let mut databases = Vec::new();
        for (index, url) in original.database_urls().into_iter().enumerate() {
            let cannot_tell = || {
                refused(
                    format!("cannot tell the database of {}", redact_url(&url)),
                    "write the url as sqlite:///path/to/file or postgres://user@host/database",
                )
            };
            let copy = match engine_of(&url) {
                Some(Engine::Sqlite) => {
                    let path = sqlite_path(&url).ok_or_else(cannot_tell)?;
                    let name = Path::new(&path)
                        .file_name()
                        .map_or_else(|| "db".into(), |n| n.to_string_lossy().into_owned());
                    format!(
                        "sqlite://{}",
                        dir.join(format!("database-{}-{name}", index + 1)).display()
                    )
                }
                Some(Engine::Postgres) => {
                    if let Some(parameter) = query_parameters(&url)
                        .into_iter()
                        .find(|name| REDIRECTING_PARAMETERS.contains(&name.as_str()))
                    {
                        return Err(refused(
                            format!(
                                "the url {} sets `{parameter}=`, which a copy's url could not override",
                                redact_url(&url)
                            ),
                            "write the database in the url's path and the server in its authority: postgres://user@host:port/database",
                        ));
                    }
                    let (_, name) = postgres_database(&url).ok_or_else(cannot_tell)?;
                    let scratch_name = scratch_database_name(&name, &dir.display().to_string());
                    with_database(&url, &scratch_name).ok_or_else(cannot_tell)?
                }
                None => {
                    return Err(refused(
                        format!("{} is neither sqlite:// nor postgres://", redact_url(&url)),
                        "rehearse copies SQLite and PostgreSQL databases",
                    ));
                }
            };
            databases.push((url, copy));
        }
        // Every variable that names a database, a root, or a path below a
        // root is pointed at its copy; the rest are kept.
        let mut rewritten = vars.clone();
        for value in rewritten.values_mut() {
            if let Some((_, copy)) = databases.iter().find(|(url, _)| url == value) {
                *value = copy.clone();
                continue;
            }
            // A path is judged where it really leads, as the roots are.
            let path = Path::new(value.as_str());
            if !path.is_absolute() {
                continue;
            }
            let real = paths::resolve(path);
            if let Some((root, copy)) = roots.iter().find(|(root, _)| real.starts_with(root)) {
                let rest = real.strip_prefix(root).expect("starts with the root");
                *value = copy.join(rest).display().to_string();
            }
        }
        let mut resolved = spec.resolve(&rewritten)?;
        // Everything the rehearsal will touch must be a copy.
        for root in &resolved.roots {
            if !root.starts_with(&dir) {
                return Err(refused(
                    format!(
                        "root {} still lies outside the copies once the variables name them",
                        root.display()
                    ),
                    "give every root through a variable (`{root}`), so that it can be pointed at its copy",
                ));
            }
        }
        for url in resolved.database_urls() {
            if !databases.iter().any(|(_, copy)| *copy == url) {
                return Err(refused(
                    format!(
                        "database {} still lies outside the copies once the variables name them",
                        redact_url(&url)
                    ),
                    "give every database through a variable (`{db}`), so that it can be pointed at its copy",
                ));
            }
        }
        let mut skipped = Vec::new();
        if !run_commands {
            resolved.steps.retain(|step| {
                let outside = acts_outside_copies(&step.spec);
                if outside {
                    skipped.push((
                        step.index,
                        step.spec.kind(),
                        "it acts outside the copies; give --run-commands to run it".into(),
                    ));
                }
                !outside
            });
        }
        Ok(Planned {
            dir,
            spec: spec.clone(),
            roots,
            databases,
            vars: rewritten,
            resolved,
            skipped,
        })
    }

    /// Makes the copies, then checks that the spec resolved against them
    /// still touches nothing else (a copied link may lead back out).
    pub fn make(self) -> Result<Scratch, MigrateError> {
        fs_err::create_dir(&self.dir)?;
        // From here on, dropping the scratch removes what was made.
        let mut scratch = Scratch {
            dir: self.dir.clone(),
            keep: false,
            copies: Vec::new(),
            vars: self.vars.clone(),
            resolved: self.resolved,
            skipped: self.skipped,
            databases: Vec::new(),
        };
        for (root, copy) in &self.roots {
            if !root.is_dir() {
                return Err(refused(
                    format!("root {} is not a directory", root.display()),
                    "a root is the directory a migration works in; check the target's variables",
                ));
            }
            copy_tree(root, copy)?;
            let relinked = relink(copy, &self.roots)?;
            scratch.copies.push(Copied {
                what: "root",
                original: root.display().to_string(),
                copy: copy.display().to_string(),
                relinked,
            });
        }
        for (url, copy) in &self.databases {
            copy_database(url, copy, &mut scratch.databases)?;
            scratch.copies.push(Copied {
                what: "database",
                original: redact_url(url),
                copy: redact_url(copy),
                relinked: 0,
            });
        }
        // With the copies in place, every path is resolved again through
        // the links that are now there.
        match self.spec.resolve(&self.vars) {
            Ok(_) => Ok(scratch),
            Err(error) => Err(refused(
                format!(
                    "once copied, a path leads out of the copies ({error}); a link in a root that leads outside every root cannot be rehearsed"
                ),
                "rehearse follows the links of a copied root; a link that leads outside every root takes a step outside the copies",
            )),
        }
    }
}

impl Scratch {
    /// The scratch directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Leaves the copies in place when this value is dropped.
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Removes the copies (unless kept) and says what it could not remove.
    pub fn clean_up(mut self) -> Vec<String> {
        let left = self.remove();
        self.keep = true;
        left
    }

    fn remove(&mut self) -> Vec<String> {
        if self.keep {
            return Vec::new();
        }
        let mut left = Vec::new();
        for (maintenance, name) in std::mem::take(&mut self.databases) {
            let dropped = Database::connect(&maintenance).and_then(|mut database| {
                database.execute_script(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    quote_ident(&name)
                ))
            });
            if let Err(error) = dropped {
                left.push(format!(
                    "the scratch database {name} on {} ({error})",
                    redact_url(&maintenance)
                ));
            }
        }
        if let Err(error) = std::fs::remove_dir_all(&self.dir)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            left.push(format!("{} ({error})", self.dir.display()));
        }
        left
    }

    /// The state of every copy now.
    pub fn snapshot(&self) -> Result<Snapshot, MigrateError> {
        let mut roots = BTreeMap::new();
        for copied in self.copies.iter().filter(|c| c.what == "root") {
            let path = Path::new(&copied.copy);
            let manifest = if path.exists() {
                Some(tree::manifest(path)?)
            } else {
                None
            };
            roots.insert(copied.original.clone(), manifest);
        }
        let mut databases = BTreeMap::new();
        for url in self.resolved.database_urls() {
            let original = self
                .copies
                .iter()
                .find(|c| c.what == "database" && c.copy == redact_url(&url))
                .map_or_else(|| redact_url(&url), |c| c.original.clone());
            databases.insert(original, dump_database(&url)?);
        }
        Ok(Snapshot { roots, databases })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}

/// Points every absolute link in `copy` that leads into one of the roots at
/// the same place in that root's copy instead; returns how many it changed.
/// (A deploy's `current -> /srv/site/releases/3` would otherwise lead a
/// rehearsal's steps back into the original.)
fn relink(copy: &Path, roots: &[(PathBuf, PathBuf)]) -> Result<usize, MigrateError> {
    let mut relinked = 0;
    for entry in walkdir::WalkDir::new(copy).follow_links(false) {
        let entry = entry.map_err(|e| std::io::Error::other(e.to_string()))?;
        if !entry.path_is_symlink() {
            continue;
        }
        let target = fs_err::read_link(entry.path())?;
        if !target.is_absolute() {
            continue;
        }
        let real = paths::resolve(&target);
        let Some((root, root_copy)) = roots.iter().find(|(root, _)| real.starts_with(root)) else {
            continue;
        };
        let rest = real.strip_prefix(root).expect("starts with the root");
        fs_err::remove_file(entry.path())?;
        std::os::unix::fs::symlink(root_copy.join(rest), entry.path())?;
        relinked += 1;
    }
    Ok(relinked)
}

/// Whether a step acts on the world beyond the paths and databases it
/// names, which a rehearsal cannot copy.
fn acts_outside_copies(step: &StepSpec) -> bool {
    match step {
        StepSpec::Exec(_) => true,
        StepSpec::Backup(_)
        | StepSpec::Move(_)
        | StepSpec::Chmod(_)
        | StepSpec::Chown(_)
        | StepSpec::Mkdir(_)
        | StepSpec::Write(_)
        | StepSpec::Remove(_)
        | StepSpec::Verify(_)
        | StepSpec::Ddl(_)
        | StepSpec::Insert(_)
        | StepSpec::Update(_)
        | StepSpec::Delete(_)
        | StepSpec::Sql(_) => false,
    }
}

fn refused(reason: String, hint: &str) -> MigrateError {
    MigrateError::Rehearsal {
        reason,
        hint: hint.to_owned(),
    }
}

/// The state of a rehearsal's copies at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Each root (by its original path): its manifest, or `None` if it is gone.
    pub roots: BTreeMap<String, Option<Manifest>>,
    /// Each database (by its original url, redacted): its dump.
    pub databases: BTreeMap<String, String>,
}

/// One difference between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The root or database, and the path or dump line within it.
    pub place: String,
    pub difference: String,
}

/// At most this many differences are listed per root or database.
const MOST_LISTED: usize = 20;

impl Snapshot {
    /// What differs in `now` from `self`.
    pub fn differences(&self, now: &Snapshot) -> Vec<Found> {
        let mut found = Vec::new();
        for (root, before) in &self.roots {
            let after = now.roots.get(root).cloned().flatten();
            match (before, after) {
                (None, None) => {}
                (Some(_), None) => found.push(Found {
                    place: root.clone(),
                    difference: "the root is gone".into(),
                }),
                (None, Some(_)) => found.push(Found {
                    place: root.clone(),
                    difference: "the root appeared".into(),
                }),
                (Some(before), Some(after)) => {
                    found.extend(tree_differences(root, before, &after));
                }
            }
        }
        for (database, before) in &self.databases {
            let after = now.databases.get(database).map_or("", String::as_str);
            found.extend(dump_differences(database, before, after));
        }
        found
    }
}

fn tree_differences(root: &str, before: &Manifest, after: &Manifest) -> Vec<Found> {
    let place = |path: &str| {
        if path.is_empty() {
            root.to_owned()
        } else {
            format!("{root}/{path}")
        }
    };
    let before_nodes: BTreeMap<&str, &tree::Node> =
        before.nodes.iter().map(|n| (n.path.as_str(), n)).collect();
    let after_nodes: BTreeMap<&str, &tree::Node> =
        after.nodes.iter().map(|n| (n.path.as_str(), n)).collect();
    let mut found = Vec::new();
    for (path, node) in &before_nodes {
        match after_nodes.get(path) {
            None => found.push(Found {
                place: place(path),
                difference: format!("{} missing", tree::type_word(node.file_type)),
            }),
            Some(now) => {
                for difference in tree::compare(node, now) {
                    found.push(Found {
                        place: place(path),
                        difference: format!(
                            "{} (was {}, now {})",
                            difference.what, difference.expected, difference.actual
                        ),
                    });
                }
            }
        }
    }
    for (path, node) in &after_nodes {
        if !before_nodes.contains_key(path) {
            found.push(Found {
                place: place(path),
                difference: format!("{} that was not there", tree::type_word(node.file_type)),
            });
        }
    }
    cap(found, root)
}

fn dump_differences(database: &str, before: &str, after: &str) -> Vec<Found> {
    if before == after {
        return Vec::new();
    }
    let before_lines: std::collections::BTreeSet<&str> = before.lines().collect();
    let after_lines: std::collections::BTreeSet<&str> = after.lines().collect();
    let mut found = Vec::new();
    for line in before_lines.difference(&after_lines) {
        found.push(Found {
            place: database.to_owned(),
            difference: format!("lost: {line}"),
        });
    }
    for line in after_lines.difference(&before_lines) {
        found.push(Found {
            place: database.to_owned(),
            difference: format!("gained: {line}"),
        });
    }
    if found.is_empty() {
        found.push(Found {
            place: database.to_owned(),
            difference: "the same lines in another order".into(),
        });
    }
    cap(found, database)
}

fn cap(mut found: Vec<Found>, place: &str) -> Vec<Found> {
    if found.len() > MOST_LISTED {
        let more = found.len() - MOST_LISTED;
        found.truncate(MOST_LISTED);
        found.push(Found {
            place: place.to_owned(),
            difference: format!("… and {more} more"),
        });
    }
    found
}

fn dump_database(url: &str) -> Result<String, MigrateError> {
    let db_error = |error| MigrateError::Db {
        step: None,
        kind: "rehearse".into(),
        error,
    };
    match engine_of(url) {
        Some(Engine::Postgres) => {
            let schema = dump::postgres(url, PgDumpPart::Schema).map_err(db_error)?;
            let data = dump::postgres(url, PgDumpPart::Data).map_err(db_error)?;
            Ok(format!("{schema}\n{data}"))
        }
        Some(Engine::Sqlite) | None => Database::connect(url)
            .and_then(|mut database| database.dump_sqlite())
            .map_err(db_error),
    }
}

fn copy_database(
    url: &str,
    copy: &str,
    scratch_databases: &mut Vec<(String, String)>,
) -> Result<(), MigrateError> {
    let db_error = |error| MigrateError::Db {
        step: None,
        kind: "rehearse".into(),
        error,
    };
    match engine_of(url) {
        Some(Engine::Sqlite) => {
            let path = sqlite_path(copy).expect("made from a path");
            let mut database = Database::connect(url).map_err(db_error)?;
            database
                .execute_script(&format!("VACUUM INTO '{}'", path.replace('\'', "''")))
                .map_err(db_error)
        }
        Some(Engine::Postgres) => {
            let (original, name) = (
                postgres_database(url).expect("checked by prepare").1,
                postgres_database(copy).expect("made by prepare").1,
            );
            let maintenance = with_database(url, "postgres").expect("checked by prepare");
            let mut database = Database::connect(&maintenance).map_err(db_error)?;
            database
                .execute_script(&format!(
                    "CREATE DATABASE {} TEMPLATE {}",
                    quote_ident(&name),
                    quote_ident(&original)
                ))
                .map_err(|error| MigrateError::RehearsalCopy {
                    reason: format!(
                        "cannot copy {} with CREATE DATABASE … TEMPLATE: {error} \
                         (PostgreSQL copies a database only while nobody else is connected to it)",
                        redact_url(url)
                    ),
                })?;
            scratch_databases.push((maintenance, name.clone()));
            // The copy's url must reach the copy, whatever else it says.
            let reached = Database::connect(copy)
                .and_then(|mut database| database.query("SELECT current_database()", &[]))
                .map_err(db_error)?;
            match reached.first().and_then(|row| row.first()) {
                Some(SqlValue::Text(current) | SqlValue::Typed(current)) if *current == name => {
                    Ok(())
                }
                other => Err(refused(
                    format!(
                        "the copy's url {} reaches database {other:?}, not the copy {name}",
                        redact_url(copy)
                    ),
                    "write the database in the url's path and nothing in its parameters that names another",
                )),
            }
        }
        None => Err(refused(
            format!("{} is neither sqlite:// nor postgres://", redact_url(url)),
            "rehearse copies SQLite and PostgreSQL databases",
        )),
    }
}

/// The file of a `sqlite://` url.
fn sqlite_path(url: &str) -> Option<String> {
    let rest = url.strip_prefix("sqlite://")?;
    let path = rest.split_once('?').map_or(rest, |(path, _)| path);
    (!path.is_empty() && !path.starts_with(':')).then(|| path.to_owned())
}

/// The url up to its database name, and the name, of a `postgres://` url.
fn postgres_database(url: &str) -> Option<(String, String)> {
    let scheme_end = url.find("://")? + 3;
    let slash = url[scheme_end..].find('/').map(|i| scheme_end + i)?;
    let end = url[slash + 1..]
        .find(['?', '#'])
        .map_or(url.len(), |i| slash + 1 + i);
    let name = &url[slash + 1..end];
    (!name.is_empty()).then(|| (url[..slash].to_owned(), name.to_owned()))
}

/// The names of a url's query parameters.
fn query_parameters(url: &str) -> Vec<String> {
    let Some((_, query)) = url.split_once('?') else {
        return Vec::new();
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map_or(pair, |(name, _)| name)
                .to_ascii_lowercase()
        })
        .collect()
}

/// The url with another database name, its parameters kept.
fn with_database(url: &str, name: &str) -> Option<String> {
    let (base, old) = postgres_database(url)?;
    let rest = &url[base.len() + 1 + old.len()..];
    Some(format!("{base}/{name}{rest}"))
}

/// A scratch database's name: the original's, marked, with a suffix unique
/// to the scratch directory; at most 63 bytes, PostgreSQL's limit.
fn scratch_database_name(original: &str, scratch: &str) -> String {
    let tag = &rewind_ledger::Digest::of(scratch.as_bytes()).to_hex()[..10];
    let mut name = format!("rewind_rehearse_{tag}_");
    for character in original.chars() {
        if name.len() + character.len_utf8() > 63 {
            break;
        }
        name.push(character);
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_urls_take_another_database_and_keep_their_parameters() {
        assert_eq!(
            postgres_database("postgres://app:pw@db:5432/panel?sslmode=require"),
            Some(("postgres://app:pw@db:5432".into(), "panel".into()))
        );
        assert_eq!(
            with_database("postgres://app:pw@db:5432/panel?sslmode=require", "copy").as_deref(),
            Some("postgres://app:pw@db:5432/copy?sslmode=require")
        );
        assert_eq!(postgres_database("postgres://db:5432"), None);
        let name = scratch_database_name(&"x".repeat(100), "/tmp/a");
        assert!(
            name.len() <= 63 && name.starts_with("rewind_rehearse_"),
            "{name}"
        );
        assert_ne!(name, scratch_database_name(&"x".repeat(100), "/tmp/b"));
    }

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(
            sqlite_path("sqlite:///srv/app.db?mode=rw").as_deref(),
            Some("/srv/app.db")
        );
        assert_eq!(sqlite_path("sqlite://:memory:"), None);
    }

    #[test]
    fn differing_dumps_name_the_lines_lost_and_gained() {
        let found = dump_differences("db", "a\nb\nc", "a\nc\nd");
        assert_eq!(
            found
                .iter()
                .map(|f| f.difference.as_str())
                .collect::<Vec<_>>(),
            ["lost: b", "gained: d"]
        );
        assert_eq!(
            dump_differences("db", "a\nb", "b\na")[0].difference,
            "the same lines in another order"
        );
        assert!(dump_differences("db", "a", "a").is_empty());
    }
}
