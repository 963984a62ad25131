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
//! Inverse: none; checks change nothing.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use rewind_ledger::{CheckRecorded, Event};
use serde::Deserialize;

use super::{KindInfo, Planned, StepContext, StepOutcome, parse_mode};
use crate::error::{Location, MigrateError, SpecError};
use crate::plan::Sim;
use crate::tree;

pub const INFO: KindInfo = KindInfo {
    name: "verify",
    docs: "Evaluates `checks` (exists, absent, mode, owner, sha256, tree_digest, free_disk, writable) and records each result. `on_fail = \"stop\"` (default) stops the run at a failed check; `on_fail = \"rollback\"` rolls the run back.",
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
    pub checks: Vec<Check>,
    #[serde(default)]
    pub on_fail: OnFail,
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
        }
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
        self.checks
            .iter()
            .flat_map(|c| {
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
            })
            .collect()
    }

    pub fn substitute(&self, sub: &dyn Fn(&str) -> String) -> Verify {
        Verify {
            checks: self.checks.iter().map(|c| c.substitute(sub)).collect(),
            on_fail: self.on_fail,
        }
    }

    pub fn validate(&self, at: &Location) -> Result<(), SpecError> {
        for (index, check) in self.checks.iter().enumerate() {
            let bad = |reason: String| SpecError::BadValue {
                at: at.clone(),
                field: format!("checks[{index}]"),
                value: check.kinds().join(", "),
                reason,
            };
            let kinds = check.kinds();
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
        let checks: Vec<String> = self.checks.iter().map(Check::describe).collect();
        Ok(Planned::new(format!(
            "check {} (on failure: {on_fail})",
            checks.join("; ")
        ))
        .param("checks", self.checks.len().to_string()))
    }

    pub fn apply(&self, cx: &mut StepContext<'_>) -> Result<StepOutcome, MigrateError> {
        let mut failed = Vec::new();
        for check in &self.checks {
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
        if failed.is_empty() {
            Ok(StepOutcome::Done {
                summary: format!("{} check(s) passed", self.checks.len()),
            })
        } else {
            Ok(StepOutcome::ChecksFailed {
                summary: format!(
                    "{} of {} check(s) failed: {}",
                    failed.len(),
                    self.checks.len(),
                    failed.join("; ")
                ),
                rollback: self.on_fail == OnFail::Rollback,
            })
        }
    }
}
