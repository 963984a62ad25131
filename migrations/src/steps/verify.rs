//! `verify`: evaluates checks against the world and records each as
//! `CheckRecorded` (expected, actual, passed). A failed check is an
//! outcome, not an error: with `on_fail = "stop"` (the default) the run
//! stops there; with `on_fail = "rollback"` the caller rolls the run back.
//!
//! Checks, one kind per table: `{ exists = P }`, `{ absent = P }`,
//! `{ path = P, mode = "0755" }`, `{ path = P, owner = "uid:gid" }`,
//! `{ path = P, sha256 = HEX }`, `{ path = P, tree_digest = HEX }`,
//! `{ path = P, free_disk = "2G" }`, `{ writable = P }`.
//!
//! SQL, on the step's database (`database`, or the one of `[migration]`):
//! `record = { name = "SELECT count(*) …" }` records named scalar
//! snapshots before the checks run; checks `{ query = Q, equals = V }`,
//! `{ query = Q, equals_recorded = NAME }` (a snapshot of this step or an
//! earlier one of the run), `{ query = Q, at_least = N }`,
//! `{ query_returns_no_rows = Q }`. Snapshots are `CheckRecorded` events
//! named `record:NAME`.
//!
//! Inverse: none; checks change nothing.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use rewind_ledger::{CheckRecorded, Event};
use serde::Deserialize;

use std::collections::BTreeMap;

use super::{KindInfo, Planned, StepContext, StepOutcome, parse_mode};
use crate::databases::Literal;
use crate::db;
use crate::error::{Location, MigrateError, SpecError};
use crate::plan::Sim;
use crate::tree;

pub const INFO: KindInfo = KindInfo {
    name: "verify",
    docs: "Evaluates `checks` (exists, absent, mode, owner, sha256, tree_digest, free_disk, writable; SQL: `query` with equals, equals_recorded or at_least, and query_returns_no_rows) and records each result; `record` keeps named SQL snapshots for later `equals_recorded`. `on_fail = \"stop\"` (default) stops the run at a failed check; `on_fail = \"rollback\"` rolls the run back.",
    inverse: None,
    fixture: "checks = [{ exists = \"{root}/web/index.html\" }, { absent = \"{root}/nope\" }, { path = \"{root}\", free_disk = \"1K\" }]\non_fail = \"stop\"",
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnFail {
    #[default]
    Stop,
    Rollback,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    #[serde(default)]
    pub checks: Vec<Check>,
    /// Named SQL snapshots: name → a query returning one value.
    #[serde(default)]
    pub record: BTreeMap<String, String>,
    #[serde(default)]
    pub on_fail: OnFail,
    #[serde(default)]
    pub database: Option<String>,
}

/// One check; exactly one kind of key besides `path`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Check {
    #[serde(default)]
    pub exists: Option<String>,
    #[serde(default)]
    pub absent: Option<String>,
    #[serde(default)]
    pub writable: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub tree_digest: Option<String>,
    #[serde(default)]
    pub free_disk: Option<String>,
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub equals: Option<Literal>,
    #[serde(default)]
    pub equals_recorded: Option<String>,
    #[serde(default)]
    pub at_least: Option<Literal>,
    #[serde(default)]
    pub query_returns_no_rows: Option<String>,
}

/// Parses `2G`, `500M`, `10K` or a number of bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, ""),
    };
    let number: u64 = digits.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return None,
    };
    number.checked_mul(factor)
}

/// Free bytes for unprivileged users on the filesystem holding `path`,
/// read from `df -P` (no unsafe `statvfs` binding needed).
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let output = std::process::Command::new("df")
        .arg("-Pk")
        .arg(path)
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .nth(1)
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|kib| kib.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| {
            std::io::Error::other(format!(
                "cannot read free space of {} from df",
                path.display()
            ))
        })
}

impl Check {
    fn kinds(&self) -> Vec<&'static str> {
        let mut kinds = Vec::new();
        for (name, set) in [
            ("exists", self.exists.is_some()),
            ("absent", self.absent.is_some()),
            ("writable", self.writable.is_some()),
            ("mode", self.mode.is_some()),
            ("owner", self.owner.is_some()),
            ("sha256", self.sha256.is_some()),
            ("tree_digest", self.tree_digest.is_some()),
            ("free_disk", self.free_disk.is_some()),
            ("equals", self.equals.is_some()),
            ("equals_recorded", self.equals_recorded.is_some()),
            ("at_least", self.at_least.is_some()),
            (
                "query_returns_no_rows",
                self.query_returns_no_rows.is_some(),
            ),
        ] {
            if set {
                kinds.push(name);
            }
        }
        kinds
    }

    fn substitute(&self, sub: &dyn Fn(&str) -> String) -> Check {
        let s = |v: &Option<String>| v.as_deref().map(sub);
        Check {
            exists: s(&self.exists),
            absent: s(&self.absent),
            writable: s(&self.writable),
            path: s(&self.path),
            mode: s(&self.mode),
            owner: s(&self.owner),
            sha256: s(&self.sha256),
            tree_digest: s(&self.tree_digest),
            free_disk: s(&self.free_disk),
            ..self.clone()
        }
    }

    /// Whether the check runs SQL.
    pub fn is_sql(&self) -> bool {
        self.query.is_some() || self.query_returns_no_rows.is_some()
    }

    /// The check for the database layer, if it is a SQL check.
    fn db_check(&self) -> Option<db::Check> {
        if let Some(query) = &self.query_returns_no_rows {
            return Some(db::Check {
                query: query.clone(),
                expect: db::Expectation::ReturnsNoRows,
            });
        }
        let query = self.query.clone()?;
        let expect = if let Some(value) = &self.equals {
            db::Expectation::Equals(value.text())
        } else if let Some(name) = &self.equals_recorded {
            db::Expectation::EqualsRecorded(name.clone())
        } else if let Some(bound) = &self.at_least {
            db::Expectation::AtLeast(bound.text())
        } else {
            return None;
        };
        Some(db::Check { query, expect })
    }

    /// The check in words.
    pub fn describe(&self) -> String {
        let path = self.path.as_deref().unwrap_or("");
        if let Some(p) = &self.exists {
            format!("exists {p}")
        } else if let Some(p) = &self.absent {
            format!("absent {p}")
        } else if let Some(p) = &self.writable {
            format!("writable {p}")
        } else if let Some(mode) = &self.mode {
            format!("mode of {path} is {mode}")
        } else if let Some(owner) = &self.owner {
            format!("owner of {path} is {owner}")
        } else if let Some(sha) = &self.sha256 {
            format!("sha256 of {path} is {sha}")
        } else if let Some(digest) = &self.tree_digest {
            format!("tree digest of {path} is {digest}")
        } else if let Some(free) = &self.free_disk {
            format!("free disk at {path} ≥ {free}")
        } else if let Some(query) = &self.query_returns_no_rows {
            format!("{query} returns no rows")
        } else if let (Some(query), Some(value)) = (&self.query, &self.equals) {
            format!("{query} equals {}", value.text())
        } else if let (Some(query), Some(name)) = (&self.query, &self.equals_recorded) {
            format!("{query} equals recorded {name}")
        } else if let (Some(query), Some(bound)) = (&self.query, &self.at_least) {
            format!("{query} at least {}", bound.text())
        } else {
            String::new()
        }
    }

    /// Evaluates the check: (expected, actual, passed).
    pub fn evaluate(&self) -> (String, String, bool) {
        let present = |p: &str| match std::fs::symlink_metadata(p) {
            Ok(m) => format!("a {}", tree::file_type_of(&m)),
            Err(_) => "nothing".to_string(),
        };
        let path = self.path.as_deref().unwrap_or("");
        let metadata = || std::fs::symlink_metadata(path);
        if let Some(p) = &self.exists {
            let actual = present(p);
            let passed = actual != "nothing";
            ("exists".into(), actual, passed)
        } else if let Some(p) = &self.absent {
            let actual = present(p);
            let passed = actual == "nothing";
            ("nothing".into(), actual, passed)
        } else if let Some(p) = &self.writable {
            let probe = Path::new(p).join(format!(".rewind-probe-{}", std::process::id()));
            match std::fs::File::create(&probe) {
                Ok(_) => {
                    let _ = std::fs::remove_file(&probe);
                    ("writable".into(), "writable".into(), true)
                }
                Err(error) => ("writable".into(), error.to_string(), false),
            }
        } else if let Some(mode) = &self.mode {
            let expected = super::mode_of(mode);
            match metadata() {
                Ok(m) => {
                    let actual = m.permissions().mode() & 0o7777;
                    (
                        format!("{expected:04o}"),
                        format!("{actual:04o}"),
                        actual == expected,
                    )
                }
                Err(_) => (format!("{expected:04o}"), "missing".into(), false),
            }
        } else if let Some(owner) = &self.owner {
            match metadata() {
                Ok(m) => {
                    let actual = format!("{}:{}", m.uid(), m.gid());
                    let passed = actual == *owner;
                    (owner.clone(), actual, passed)
                }
                Err(_) => (owner.clone(), "missing".into(), false),
            }
        } else if let Some(sha) = &self.sha256 {
            match tree::file_sha256(Path::new(path)) {
                Ok(actual) => (
                    sha.clone(),
                    actual.to_hex(),
                    actual.to_hex() == sha.to_ascii_lowercase(),
                ),
                Err(error) => (sha.clone(), error.to_string(), false),
            }
        } else if let Some(digest) = &self.tree_digest {
            match tree::digest(Path::new(path)) {
                Ok(actual) => (
                    digest.clone(),
                    actual.to_hex(),
                    actual.to_hex() == digest.to_ascii_lowercase(),
                ),
                Err(error) => (digest.clone(), error.to_string(), false),
            }
        } else if let Some(free) = &self.free_disk {
            let wanted = parse_size(free).unwrap_or(u64::MAX);
            match free_bytes(Path::new(path)) {
                Ok(actual) => (
                    format!("≥ {wanted} bytes"),
                    format!("{actual} bytes"),
                    actual >= wanted,
                ),
                Err(error) => (format!("≥ {wanted} bytes"), error.to_string(), false),
            }
        } else {
            (String::new(), String::new(), false)
        }
    }
}

impl Verify {
    pub fn strings(&self) -> Vec<String> {
        self.database
            .iter()
            .cloned()
            .chain(self.checks.iter().flat_map(|c| {
                [
                    &c.exists,
                    &c.absent,
                    &c.writable,
                    &c.path,
                    &c.mode,
                    &c.owner,
                    &c.sha256,
                    &c.tree_digest,
                    &c.free_disk,
                ]
                .into_iter()
                .flatten()
                .cloned()
                .collect::<Vec<_>>()
            }))
            .collect()
    }

    pub fn substitute(&self, sub: &dyn Fn(&str) -> String) -> Verify {
        Verify {
            checks: self.checks.iter().map(|c| c.substitute(sub)).collect(),
            record: self.record.clone(),
            on_fail: self.on_fail,
            database: self.database.as_deref().map(sub),
        }
    }

    /// Whether the step runs SQL (records snapshots or has SQL checks).
    pub fn has_sql(&self) -> bool {
        !self.record.is_empty() || self.checks.iter().any(Check::is_sql)
    }

    pub fn database_mut(&mut self) -> Option<&mut Option<String>> {
        if self.has_sql() {
            Some(&mut self.database)
        } else {
            None
        }
    }

    fn sql_operation(&self, step: u32) -> db::Verify {
        db::Verify {
            step,
            record: self.record.clone(),
            checks: self.checks.iter().filter_map(Check::db_check).collect(),
        }
    }

    pub fn db_operation(&self, step: u32) -> Option<db::Operation> {
        self.has_sql()
            .then(|| db::Operation::Verify(self.sql_operation(step)))
    }

    pub fn validate(&self, at: &Location) -> Result<(), SpecError> {
        if self.checks.is_empty() && self.record.is_empty() {
            return Err(SpecError::BadValue {
                at: at.clone(),
                field: "checks".into(),
                value: "[]".into(),
                reason: "give at least one check (or a `record` snapshot)".into(),
            });
        }
        for (index, check) in self.checks.iter().enumerate() {
            let bad = |reason: String| SpecError::BadValue {
                at: at.clone(),
                field: format!("checks[{index}]"),
                value: check.kinds().join(", "),
                reason,
            };
            let kinds = check.kinds();
            if check.is_sql() {
                let fine = match (&check.query, &check.query_returns_no_rows) {
                    (Some(_), None) => kinds.len() == 1 && kinds[0] != "query_returns_no_rows",
                    (None, Some(_)) => kinds == ["query_returns_no_rows"],
                    (Some(_), Some(_)) | (None, None) => false,
                };
                if !fine || check.path.is_some() {
                    return Err(bad("a SQL check is `{ query = \"…\", equals = V }` (or equals_recorded, at_least), or `{ query_returns_no_rows = \"…\" }`".into()));
                }
                if let Some(name) = &check.equals_recorded
                    && name.trim().is_empty()
                {
                    return Err(bad("equals_recorded names a snapshot of `record`".into()));
                }
                continue;
            }
            if kinds.len() != 1 {
                return Err(bad("each check has exactly one of exists, absent, writable, mode, owner, sha256, tree_digest, free_disk".into()));
            }
            let needs_path = !matches!(kinds[0], "exists" | "absent" | "writable");
            if needs_path != check.path.is_some() {
                return Err(bad(if needs_path {
                    format!("a `{}` check needs `path`", kinds[0])
                } else {
                    format!("a `{}` check names its path itself; drop `path`", kinds[0])
                }));
            }
            if let Some(mode) = &check.mode {
                parse_mode(at, &format!("checks[{index}].mode"), mode)?;
            }
            if let Some(free) = &check.free_disk
                && parse_size(free).is_none()
            {
                return Err(bad(format!("free_disk `{free}` is not a size like \"2G\"")));
            }
        }
        Ok(())
    }

    pub fn paths(&self) -> Vec<(&'static str, String)> {
        self.checks
            .iter()
            .flat_map(|c| {
                [
                    ("exists", &c.exists),
                    ("absent", &c.absent),
                    ("writable", &c.writable),
                    ("path", &c.path),
                ]
                .into_iter()
                .filter_map(|(field, value)| value.clone().map(|v| (field, v)))
                .collect::<Vec<_>>()
            })
            .collect()
    }

    pub fn plan(&self, _step: u32, _sim: &mut Sim) -> Result<Planned, MigrateError> {
        let on_fail = match self.on_fail {
            OnFail::Stop => "stop",
            OnFail::Rollback => "roll back",
        };
        let mut checks: Vec<String> = self
            .record
            .iter()
            .map(|(name, query)| format!("record {name} = {query}"))
            .collect();
        checks.extend(self.checks.iter().map(Check::describe));
        let mut planned = Planned::new(format!(
            "check {} (on failure: {on_fail})",
            checks.join("; ")
        ))
        .param("checks", self.checks.len().to_string());
        if self.has_sql() {
            planned = planned.param("database", super::update::shown(&self.database));
        }
        Ok(planned)
    }

    pub fn apply(&self, cx: &mut StepContext<'_>) -> Result<StepOutcome, MigrateError> {
        let mut failed = Vec::new();
        for check in self.checks.iter().filter(|check| !check.is_sql()) {
            let (expected, actual, passed) = check.evaluate();
            if !passed {
                failed.push(format!("{}: found {actual}", check.describe()));
            }
            cx.record(Event::CheckRecorded(CheckRecorded {
                actual,
                check: check.describe(),
                expected,
                passed,
                step: cx.step,
            }))?;
        }
        if self.has_sql() {
            let operation = self.sql_operation(cx.step);
            let earlier = cx.databases.recorded.clone();
            let report =
                cx.on_database(INFO.name, self.database.as_deref(), |database, recorder| {
                    database.verify(&operation, &earlier, recorder)
                })?;
            cx.databases.recorded.extend(report.recorded.clone());
            for check in report.checks.iter().filter(|check| !check.passed) {
                failed.push(format!(
                    "{}: expected {}, found {}",
                    check.check, check.expected, check.actual
                ));
            }
        }
        if failed.is_empty() {
            Ok(StepOutcome::Done {
                summary: format!("{} check(s) passed", self.checks.len()),
            })
        } else {
            Ok(StepOutcome::ChecksFailed {
                summary: format!(
                    "{} of {} check(s) failed: {}",
                    failed.len(),
                    self.checks.len() + self.record.len(),
                    failed.join("; ")
                ),
                rollback: self.on_fail == OnFail::Rollback,
            })
        }
    }
}
