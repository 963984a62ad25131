//! `chown`: sets the owner and/or group of a path, optionally recursively
//! (symlinks themselves, never their targets). Names are looked up in
//! `/etc/passwd` and `/etc/group`; numbers are taken as ids. One
//! `OwnerChanged` per changed path with the old ids, durable before the
//! owner is set (in batches of up to 1000 paths, one fsync each).
//!
//! Inverse: set the old owner and group, if the current ones are the new.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rewind_ledger::{Event, OwnerChanged};
use serde::Deserialize;

use super::{KindInfo, Planned, StepContext, StepOutcome, refuse};
use crate::error::{Location, MigrateError, SpecError};
use crate::plan::Sim;
use crate::undo::Drift;

pub const INFO: KindInfo = KindInfo {
    name: "chown",
    docs: "Sets the `user` and/or `group` (names from /etc/passwd and /etc/group, or numeric ids) of `path`; `recursive = true` walks the tree. Symlinks are changed themselves, never their targets.",
    inverse: Some(
        "sets each recorded path back to its old owner and group when they are still the new ones",
    ),
    fixture: "path = \"{root}/web\"\nuser = \"0\"\ngroup = \"0\"\nrecursive = true",
};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chown {
    pub path: String,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub recursive: bool,
}

/// Looks a name up in a passwd-format file (name:x:id:…), or parses a number.
fn lookup(file: &str, name: &str) -> Option<u32> {
    if let Ok(id) = name.parse() {
        return Some(id);
    }
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then_some(())?;
        fields.nth(1)?.parse().ok()
    })
}

impl Chown {
    pub fn strings(&self) -> Vec<String> {
        let mut all = vec![self.path.clone()];
        all.extend(self.user.iter().cloned());
        all.extend(self.group.iter().cloned());
        all
    }

    pub fn substitute(&self, sub: &dyn Fn(&str) -> String) -> Chown {
        Chown {
            path: sub(&self.path),
            user: self.user.as_deref().map(sub),
            group: self.group.as_deref().map(sub),
            recursive: self.recursive,
        }
    }

    pub fn validate(&self, at: &Location) -> Result<(), SpecError> {
        if self.user.is_none() && self.group.is_none() {
            return Err(SpecError::BadValue {
                at: at.clone(),
                field: "user".into(),
                value: String::new(),
                reason: "give `user`, `group` or both".into(),
            });
        }
        for (field, file, value) in [
            ("user", "/etc/passwd", &self.user),
            ("group", "/etc/group", &self.group),
        ] {
            if let Some(value) = value
                && lookup(file, value).is_none()
            {
                return Err(SpecError::BadValue {
                    at: at.clone(),
                    field: field.into(),
                    value: value.clone(),
                    reason: format!("not a number and not found in {file}"),
                });
            }
        }
        Ok(())
    }

    pub fn paths(&self) -> Vec<(&'static str, String)> {
        vec![("path", self.path.clone())]
    }

    fn ids(&self) -> (Option<u32>, Option<u32>) {
        (
            self.user.as_deref().and_then(|u| lookup("/etc/passwd", u)),
            self.group.as_deref().and_then(|g| lookup("/etc/group", g)),
        )
    }

    pub fn plan(&self, step: u32, sim: &mut Sim) -> Result<Planned, MigrateError> {
        if !sim.exists(Path::new(&self.path)) {
            return Err(refuse(
                step,
                INFO.name,
                format!("{} does not exist", self.path),
            ));
        }
        let who = format!(
            "{}:{}",
            self.user.as_deref().unwrap_or(""),
            self.group.as_deref().unwrap_or("")
        );
        let recursive = if self.recursive { " recursively" } else { "" };
        Ok(
            Planned::new(format!("chown {who} {}{recursive}", self.path))
                .param("path", &self.path)
                .param("owner", who)
                .param("recursive", self.recursive.to_string()),
        )
    }

    pub fn apply(&self, cx: &mut StepContext<'_>) -> Result<StepOutcome, MigrateError> {
        let root = Path::new(&self.path);
        if fs_err::symlink_metadata(root).is_err() {
            return Err(refuse(
                cx.step,
                INFO.name,
                format!("{} does not exist", self.path),
            ));
        }
        let (uid, gid) = self.ids();
        let mut changed = 0u64;
        let walker = walkdir::WalkDir::new(root)
            .follow_links(false)
            .follow_root_links(false)
            .sort_by_file_name()
            .max_depth(if self.recursive { usize::MAX } else { 0 });
        for entry in walker {
            let entry = entry.map_err(|e| std::io::Error::other(e.to_string()))?;
            let metadata = fs_err::symlink_metadata(entry.path())?;
            let (old_uid, old_gid) = (metadata.uid(), metadata.gid());
            let (new_uid, new_gid) = (uid.unwrap_or(old_uid), gid.unwrap_or(old_gid));
            if (old_uid, old_gid) == (new_uid, new_gid) {
                continue;
            }
            changed += 1;
            let path = entry.into_path();
            cx.record_ahead(
                Event::OwnerChanged(OwnerChanged {
                    new_gid,
                    new_uid,
                    old_gid,
                    old_uid,
                    path: path.display().to_string(),
                    step: cx.step,
                }),
                move || set_owner(&path, new_uid, new_gid),
            )?;
        }
        Ok(StepOutcome::Done {
            summary: format!("changed the owner of {changed} path(s)"),
        })
    }
}

pub fn drift(seq: u64, event: &OwnerChanged) -> Result<Option<Drift>, MigrateError> {
    let expected = format!("{}:{}", event.new_uid, event.new_gid);
    match fs_err::symlink_metadata(&event.path) {
        Err(_) => Ok(Some(Drift::new(
            seq,
            &event.path,
            "missing",
            &expected,
            "nothing",
        ))),
        Ok(metadata) if (metadata.uid(), metadata.gid()) == (event.new_uid, event.new_gid) => {
            Ok(None)
        }
        Ok(metadata) => Ok(Some(Drift::new(
            seq,
            &event.path,
            "owner",
            &expected,
            &format!("{}:{}", metadata.uid(), metadata.gid()),
        ))),
    }
}

/// Sets the owner and group of `path` itself (a symlink, not its target).
fn set_owner(path: &Path, uid: u32, gid: u32) -> Result<(), MigrateError> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|error| {
        std::io::Error::new(
            error.kind(),
            format!("failed to chown {}: {error}", path.display()),
        )
    })?;
    Ok(())
}

pub fn undo(event: &OwnerChanged) -> Result<(), MigrateError> {
    set_owner(Path::new(&event.path), event.old_uid, event.old_gid)
}
