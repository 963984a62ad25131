//! The migration spec (TOML): parsing, variables, targets and validation.
//!
//! ```toml
//! [migration]
//! id = "ns3-vhost-layout"
//! description = "…"
//! roots = ["{root}"]            # optional, see below
//!
//! [vars]
//! root = { required = true, help = "the vhost directory" }
//! owner = { default = "0" }
//!
//! [[step]]
//! kind = "move"
//! from = "{root}/var/log"
//! to = "{root}/web/log"
//! ```
//!
//! Roots: every path a step names must stay under a declared root after
//! `..` is folded and symlinks in its parent directories are resolved (the
//! last component is not followed: moving or removing a symlink acts on the
//! link). The roots are `[migration] roots` when given; otherwise every
//! variable declared with `root = true`; otherwise the variable named
//! `root`. A spec with file steps and none of these is refused.
//!
//! Unknown keys, unknown step kinds, unknown `{variables}` and paths outside
//! the roots are errors that name the file, line, column and step, raised
//! before anything runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rewind_ledger::Digest;
use serde::Deserialize;
use toml::Spanned;

use crate::error::{Location, SpecError};
use crate::paths;
use crate::steps::{self, StepSpec};

/// The `[migration]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub id: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub roots: Option<Vec<String>>,
    /// The database URL of SQL migrations; file steps ignore it.
    #[serde(default)]
    pub database: Option<String>,
}

/// One entry of `[vars]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VarDecl {
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub help: Option<String>,
    /// Marks the variable as a root that every path must stay under.
    #[serde(default)]
    pub root: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    migration: Spanned<Header>,
    #[serde(default)]
    vars: BTreeMap<String, Spanned<VarDecl>>,
    #[serde(default)]
    step: Vec<Spanned<StepSpec>>,
}

/// Used only to locate an error: the steps as plain tables.
#[derive(Debug, Deserialize)]
struct LenientSpec {
    #[serde(default)]
    step: Vec<Spanned<toml::Table>>,
}

/// A parsed spec, not yet bound to variables.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The file name as the operator gave it (used in messages).
    pub file: String,
    pub text: String,
    pub sha256: Digest,
    pub header: Header,
    header_at: Location,
    pub vars: BTreeMap<String, (VarDecl, Location)>,
    pub steps: Vec<(StepSpec, Location)>,
}

/// A spec bound to one target's variables: every `{var}` substituted and
/// every path checked against the roots.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub vars: BTreeMap<String, String>,
    pub roots: Vec<PathBuf>,
    pub steps: Vec<ResolvedStep>,
}

impl Resolved {
    /// The database urls its steps talk to, with credentials, each once.
    pub fn database_urls(&self) -> Vec<String> {
        let mut urls: Vec<String> = Vec::new();
        for step in &self.steps {
            if let Some(url) = step.spec.database()
                && !urls.iter().any(|known| known == url)
            {
                urls.push(url.to_owned());
            }
        }
        urls
    }
}

/// One step after substitution.
#[derive(Debug, Clone)]
pub struct ResolvedStep {
    /// 1-based, as operators count steps.
    pub index: u32,
    pub spec: StepSpec,
    pub at: Location,
}

/// Converts a byte offset into a 1-based line and column (in characters).
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

impl Spec {
    /// Reads and parses a spec file.
    pub fn load(path: &Path) -> Result<Spec, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Spec::parse(&path.display().to_string(), &text)
    }

    /// Parses spec text; `file` names it in messages.
    pub fn parse(file: &str, text: &str) -> Result<Spec, SpecError> {
        let at = |offset: usize, step: Option<u32>, kind: Option<String>| {
            let (line, column) = line_column(text, offset);
            Location {
                file: file.to_owned(),
                line,
                column,
                step,
                kind,
            }
        };
        let raw: RawSpec = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(error) => return Err(locate_parse_error(file, text, &error)),
        };
        let header_at = at(raw.migration.span().start, None, None);
        let header = raw.migration.into_inner();
        if header.id.trim().is_empty() {
            return Err(SpecError::BadValue {
                at: header_at,
                field: "migration.id".into(),
                value: header.id,
                reason: "the id must not be empty".into(),
            });
        }
        let vars = raw
            .vars
            .into_iter()
            .map(|(name, decl)| {
                let location = at(decl.span().start, None, None);
                (name, (decl.into_inner(), location))
            })
            .collect();
        let steps = raw
            .step
            .into_iter()
            .enumerate()
            .map(|(index, step)| {
                let index = u32::try_from(index + 1).unwrap_or(u32::MAX);
                let location = at(
                    step.span().start,
                    Some(index),
                    Some(step.get_ref().kind().to_owned()),
                );
                (step.into_inner(), location)
            })
            .collect();
        let spec = Spec {
            file: file.to_owned(),
            text: text.to_owned(),
            sha256: Digest::of(text.as_bytes()),
            header,
            header_at,
            vars,
            steps,
        };
        spec.check_names()?;
        Ok(spec)
    }

    /// Every `{name}` must be declared, before any variable is bound.
    fn check_names(&self) -> Result<(), SpecError> {
        let check = |text: &str, at: &Location| -> Result<(), SpecError> {
            for name in placeholders(text) {
                if !self.vars.contains_key(&name) {
                    return Err(SpecError::UnknownVar {
                        at: at.clone(),
                        name,
                    });
                }
            }
            Ok(())
        };
        for root in self.header.roots.iter().flatten() {
            check(root, &self.header_at)?;
        }
        if let Some(database) = &self.header.database {
            check(database, &self.header_at)?;
        }
        for (step, at) in &self.steps {
            for text in step.strings() {
                check(&text, at)?;
            }
        }
        Ok(())
    }

    /// The variables a bare `--target VALUE` binds: the one required
    /// variable, if there is exactly one.
    pub fn sole_required_var(&self) -> Option<&str> {
        let mut required = self.vars.iter().filter(|(_, (decl, _))| decl.required);
        match (required.next(), required.next()) {
            (Some((name, _)), None) => Some(name),
            _ => None,
        }
    }

    /// Parses one target: `name=value` pairs separated by spaces, or a bare
    /// value for the spec's one required variable.
    pub fn target_vars(&self, text: &str) -> Result<BTreeMap<String, String>, SpecError> {
        let text = text.trim();
        if !text.contains('=')
            && let Some(name) = self.sole_required_var()
        {
            return Ok(BTreeMap::from([(name.to_owned(), text.to_owned())]));
        }
        parse_assignments(text.split_whitespace())
    }

    /// Binds variables (`--var` and a target's) and checks every path.
    pub fn resolve(&self, given: &BTreeMap<String, String>) -> Result<Resolved, SpecError> {
        for name in given.keys() {
            if !self.vars.contains_key(name) {
                return Err(SpecError::UndeclaredVar {
                    name: name.clone(),
                    declared: self.vars.keys().cloned().collect::<Vec<_>>().join(", "),
                });
            }
        }
        let mut vars = BTreeMap::new();
        for (name, (decl, at)) in &self.vars {
            let value = match (given.get(name), &decl.default) {
                (Some(value), _) => value.clone(),
                (None, Some(default)) => default.clone(),
                (None, None) if decl.required => {
                    return Err(SpecError::MissingVar {
                        at: at.clone(),
                        name: name.clone(),
                        help: decl.help.clone(),
                    });
                }
                (None, None) => String::new(),
            };
            vars.insert(name.clone(), value);
        }
        let roots = self.roots(&vars)?;
        let mut steps = Vec::with_capacity(self.steps.len());
        let database = self
            .header
            .database
            .as_deref()
            .map(|url| substitute(url, &vars))
            .filter(|url| !url.trim().is_empty());
        for (spec, at) in &self.steps {
            let mut resolved = spec.substitute(&|text| substitute(text, &vars))?;
            resolved.validate(at)?;
            if let Some(field) = resolved.database_mut() {
                if field.as_deref().is_none_or(|url| url.trim().is_empty()) {
                    *field = database.clone();
                }
                match field.as_deref() {
                    None => return Err(SpecError::NoDatabase { at: at.clone() }),
                    Some(url) if crate::db::engine_of(url).is_none() => {
                        return Err(SpecError::BadValue {
                            at: at.clone(),
                            field: "database".into(),
                            value: crate::db::redact_url(url),
                            reason: "use sqlite://path/to/file.db or postgres://user@host/dbname"
                                .into(),
                        });
                    }
                    Some(_) => {}
                }
            }
            for (field, path) in resolved.paths() {
                check_path(at, field, &path, &roots)?;
            }
            steps.push(ResolvedStep {
                index: at.step.unwrap_or(0),
                spec: resolved,
                at: at.clone(),
            });
        }
        Ok(Resolved { vars, roots, steps })
    }

    fn roots(&self, vars: &BTreeMap<String, String>) -> Result<Vec<PathBuf>, SpecError> {
        let texts: Vec<String> = match &self.header.roots {
            Some(roots) => roots.iter().map(|root| substitute(root, vars)).collect(),
            None => {
                let marked: Vec<String> = self
                    .vars
                    .iter()
                    .filter(|(_, (decl, _))| decl.root)
                    .map(|(name, _)| vars[name].clone())
                    .collect();
                if !marked.is_empty() {
                    marked
                } else if let Some(root) = vars.get("root") {
                    vec![root.clone()]
                } else {
                    Vec::new()
                }
            }
        };
        if texts.is_empty() && self.steps.iter().any(|(step, _)| !step.paths().is_empty()) {
            return Err(SpecError::NoRoots {
                at: self.header_at.clone(),
            });
        }
        texts
            .into_iter()
            .map(|text| {
                let path = PathBuf::from(&text);
                if !path.is_absolute() {
                    return Err(SpecError::RelativeRoot {
                        at: self.header_at.clone(),
                        root: text,
                    });
                }
                Ok(paths::resolve(&path))
            })
            .collect()
    }
}

fn check_path(at: &Location, field: &str, path: &str, roots: &[PathBuf]) -> Result<(), SpecError> {
    let trimmed = path.strip_suffix("/*").unwrap_or(path);
    let candidate = Path::new(trimmed);
    let bad = |resolved: String| SpecError::EscapesRoot {
        at: at.clone(),
        field: field.to_owned(),
        path: path.to_owned(),
        resolved,
        roots: roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    };
    if !candidate.is_absolute() {
        return Err(SpecError::BadValue {
            at: at.clone(),
            field: field.to_owned(),
            value: path.to_owned(),
            reason: "paths must be absolute; start it with a root variable such as `{root}/`"
                .into(),
        });
    }
    let resolved = paths::resolve_parent(candidate);
    if roots.iter().any(|root| resolved.starts_with(root)) {
        Ok(())
    } else {
        Err(bad(resolved.display().to_string()))
    }
}

/// The `{name}` placeholders in a text (`{{` is a literal brace).
pub fn placeholders(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        if rest[start..].starts_with("{{") {
            rest = &rest[start + 2..];
            continue;
        }
        match rest[start..].find('}') {
            Some(end) => {
                names.push(rest[start + 1..start + end].to_owned());
                rest = &rest[start + end + 1..];
            }
            None => break,
        }
    }
    names
}

/// Replaces `{name}` with its value; names were checked at parse time.
pub fn substitute(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(['{', '}']) {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
        } else if tail.starts_with('{') {
            match tail.find('}') {
                Some(end) => {
                    let name = &tail[1..end];
                    out.push_str(vars.get(name).map(String::as_str).unwrap_or_default());
                    rest = &tail[end + 1..];
                }
                None => {
                    out.push_str(tail);
                    rest = "";
                }
            }
        } else {
            out.push('}');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Parses `name=value` words (from `--var` or a target).
pub fn parse_assignments<'a>(
    words: impl IntoIterator<Item = &'a str>,
) -> Result<BTreeMap<String, String>, SpecError> {
    let mut vars = BTreeMap::new();
    for word in words {
        let Some((name, value)) = word.split_once('=') else {
            return Err(SpecError::BadAssignment {
                text: word.to_owned(),
            });
        };
        if name.is_empty() {
            return Err(SpecError::BadAssignment {
                text: word.to_owned(),
            });
        }
        vars.insert(name.to_owned(), value.to_owned());
    }
    Ok(vars)
}

/// Reads a targets file: one target per line, `#` comments and blank lines
/// ignored. Returns each target's text with its line number.
pub fn parse_targets_file(file: &str, text: &str) -> Result<Vec<(usize, String)>, SpecError> {
    let mut targets = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.split_whitespace().any(|word| word.starts_with('=')) {
            return Err(SpecError::BadTarget {
                file: file.to_owned(),
                line: number + 1,
                text: line.to_owned(),
            });
        }
        targets.push((number + 1, line.to_owned()));
    }
    Ok(targets)
}

fn locate_parse_error(file: &str, text: &str, error: &toml::de::Error) -> SpecError {
    let offset = error.span().map(|span| span.start).unwrap_or(0);
    let (line, column) = line_column(text, offset);
    let mut at = Location {
        file: file.to_owned(),
        line,
        column,
        step: None,
        kind: None,
    };
    let message = error.message().trim().to_owned();
    if let Ok(lenient) = toml::from_str::<LenientSpec>(text) {
        // The first step that does not parse alone, if any: toml reports a
        // field missing from or unknown to a step, or a value of the wrong
        // type, at the start of the steps, whichever step it is in.
        let failing = lenient.step.iter().enumerate().find_map(|(alone, step)| {
            step.get_ref()
                .clone()
                .try_into::<StepSpec>()
                .err()
                .map(|error| (alone, step, error))
        });
        // The step the error's place falls in: the last one starting at or
        // before it (a step's span may cover only its `[[step]]` header).
        let placed = lenient
            .step
            .iter()
            .enumerate()
            .filter(|(_, step)| step.span().start <= offset)
            .max_by_key(|(_, step)| step.span().start);
        let found = match (placed, failing) {
            // The error's own place is in the failing step.
            (Some((index, step)), Some((alone, _, _))) if alone == index => Some((index, step)),
            // The failing step's own error, which toml placed elsewhere.
            (_, Some((alone, failed, error))) if error.message().trim() == message => {
                (at.line, at.column) = line_column(text, failed.span().start);
                Some((alone, failed))
            }
            // Another error: in the step its place falls in, if any.
            (placed, Some(_)) => placed,
            // Every step parses alone: the error is outside them (a
            // `[vars]` table after the steps).
            (_, None) => None,
        };
        if let Some((index, step)) = found {
            let kind = step
                .get_ref()
                .get("kind")
                .and_then(|k| k.as_str())
                .map(str::to_owned);
            at.step = u32::try_from(index + 1).ok();
            at.kind = kind.clone();
            if let Some(kind) = kind
                && !steps::REGISTRY.iter().any(|info| info.name == kind)
            {
                return SpecError::UnknownKind {
                    at,
                    kind,
                    known: steps::REGISTRY
                        .iter()
                        .map(|info| info.name)
                        .collect::<Vec<_>>()
                        .join(", "),
                };
            }
        }
    }
    SpecError::Parse { at, message }
}
