//! `chmod`: sets permission bits on a path, or with `recursive = true` on
//! a whole tree, with separate `dirs` and `files` modes (like 755/644).
//! Symlinks are left alone. One `ModeChanged` per path whose mode changes,
//! carrying the old mode, durable before the mode is set (in batches of
//! up to 1000 paths, one fsync each).
//!
//! Inverse: set the old mode, if the current mode is still the new one.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rewind_ledger::{Event, FileType, ModeChanged};
use serde::Deserialize;

use super::{KindInfo, Planned, StepContext, StepOutcome, mode_of, parse_mode, refuse};
use crate::error::{Location, MigrateError, SpecError};
use crate::plan::Sim;
use crate::tree::file_type_of;
use crate::undo::Drift;

pub const INFO: KindInfo = KindInfo {
    name: "chmod",
    docs: "Sets the mode of `path` (octal, like \"0755\"). With `recursive = true` it walks the tree: directories get `dirs` (or `mode`), files get `files` (or `mode`); symlinks are skipped. Paths already at the wanted mode are not recorded.",
    inverse: Some(
        "sets each recorded path back to its old mode when its current mode is still the new one",
    ),
    fixture: "path = \"{root}/web\"\nrecursive = true\ndirs = \"0755\"\nfiles = \"0644\"",
};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chmod {
    pub path: String,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub dirs: Option<String>,
    #[serde(default)]
    pub files: Option<String>,
    #[serde(default)]
    pub recursive: bool,
}

impl Chmod {
    pub fn strings(&self) -> Vec<String> {
        vec![self.path.clone()]
    }

    pub fn substitute(&self, sub: &dyn Fn(&str) -> String) -> Chmod {
        Chmod {
            path: sub(&self.path),
            ..self.clone()
        }
    }

    pub fn validate(&self, at: &Location) -> Result<(), SpecError> {
        for (field, value) in [
            ("mode", &self.mode),
            ("dirs", &self.dirs),
            ("files", &self.files),
        ] {
            if let Some(value) = value {
                parse_mode(at, field, value)?;
            }
        }
        if self.mode.is_none() && self.dirs.is_none() && self.files.is_none() {
            return Err(SpecError::BadValue {
                at: at.clone(),
                field: "mode".into(),
                value: String::new(),
                reason: "give `mode`, or `dirs` and/or `files`".into(),
            });
        }
        Ok(())
    }

    pub fn paths(&self) -> Vec<(&'static str, String)> {
        vec![("path", self.path.clone())]
    }

    fn mode_for(&self, file_type: FileType) -> Option<u32> {
        let specific = match file_type {
            FileType::Dir => self.dirs.as_deref(),
            FileType::File => self.files.as_deref(),
            FileType::Symlink | FileType::Other => return None,
        };
        specific.or(self.mode.as_deref()).map(mode_of)
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(mode) = &self.mode {
            parts.push(mode.clone());
        }
        if let Some(dirs) = &self.dirs {
            parts.push(format!("dirs {dirs}"));
        }
        if let Some(files) = &self.files {
            parts.push(format!("files {files}"));
        }
        parts.join(", ")
    }

    pub fn plan(&self, step: u32, sim: &mut Sim) -> Result<Planned, MigrateError> {
        if !sim.exists(Path::new(&self.path)) {
            return Err(refuse(
                step,
                INFO.name,
                format!("{} does not exist", self.path),
            ));
        }
        let recursive = if self.recursive { " recursively" } else { "" };
        Ok(Planned::new(format!(
            "chmod {} {}{recursive}",
            self.describe(),
            self.path
        ))
        .param("path", &self.path)
        .param("modes", self.describe())
        .param("recursive", self.recursive.to_string()))
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
        let mut seen = 0u64;
        let mut changed = 0u64;
        let walker = walkdir::WalkDir::new(root)
            .follow_links(false)
            .follow_root_links(false)
            .sort_by_file_name()
            .max_depth(if self.recursive { usize::MAX } else { 0 });
        for entry in walker {
            let entry = entry.map_err(|e| std::io::Error::other(e.to_string()))?;
            let metadata = fs_err::symlink_metadata(entry.path())?;
            seen += 1;
            let Some(new) = self.mode_for(file_type_of(&metadata)) else {
                continue;
            };
            let old = metadata.permissions().mode() & 0o7777;
            if old == new {
                continue;
            }
            changed += 1;
            let path = entry.into_path();
            cx.record_ahead(
                Event::ModeChanged(ModeChanged {
                    new,
                    old,
                    path: path.display().to_string(),
                    step: cx.step,
                }),
                move || set_mode(&path, new),
            )?;
        }
        Ok(StepOutcome::Done {
            summary: format!("changed the mode of {changed} of {seen} path(s)"),
        })
    }
}

pub fn drift(seq: u64, event: &ModeChanged) -> Result<Option<Drift>, MigrateError> {
    match fs_err::symlink_metadata(&event.path) {
        Err(_) => Ok(Some(Drift::new(
            seq,
            &event.path,
            "missing",
            &format!("mode {:04o}", event.new),
            "nothing",
        ))),
        Ok(metadata) => {
            let mode = metadata.permissions().mode() & 0o7777;
            if mode == event.new {
                Ok(None)
            } else {
                Ok(Some(Drift::new(
                    seq,
                    &event.path,
                    "mode",
                    &format!("{:04o}", event.new),
                    &format!("{mode:04o}"),
                )))
            }
        }
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), MigrateError> {
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

pub fn undo(event: &ModeChanged) -> Result<(), MigrateError> {
    set_mode(Path::new(&event.path), event.old)
}
