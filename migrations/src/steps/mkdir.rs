//! `mkdir`: creates a directory and any missing parents, each recorded as
//! `DirCreated` with its mode before it is created. An existing directory
//! is left as it is.
//!
//! Inverse: remove the directory if it is still there and empty.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rewind_ledger::{DirCreated, Event, FileType};
use serde::Deserialize;

use super::{KindInfo, Planned, StepContext, StepOutcome, mode_of, parse_mode, refuse};
use crate::error::{Location, MigrateError, SpecError};
use crate::plan::Sim;
use crate::undo::Drift;

pub const INFO: KindInfo = KindInfo {
    name: "mkdir",
    docs: "Creates the directory `path` with `mode` (default \"0755\"), and any missing parents with the same mode. A directory that already exists is left alone and not recorded; any other file in the way is refused.",
    inverse: Some(
        "removes each directory it created, when the directory still exists and is empty",
    ),
    fixture: "path = \"{root}/web/app/public\"\nmode = \"0750\"",
};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mkdir {
    pub path: String,
    #[serde(default)]
    pub mode: Option<String>,
}

impl Mkdir {
    pub fn strings(&self) -> Vec<String> {
        vec![self.path.clone()]
    }

    pub fn substitute(&self, sub: &dyn Fn(&str) -> String) -> Mkdir {
        Mkdir {
            path: sub(&self.path),
            mode: self.mode.clone(),
        }
    }

    pub fn validate(&self, at: &Location) -> Result<(), SpecError> {
        if let Some(mode) = &self.mode {
            parse_mode(at, "mode", mode)?;
        }
        Ok(())
    }

    pub fn paths(&self) -> Vec<(&'static str, String)> {
        vec![("path", self.path.clone())]
    }

    fn mode(&self) -> u32 {
        self.mode.as_deref().map(mode_of).unwrap_or(0o755)
    }

    pub fn plan(&self, step: u32, sim: &mut Sim) -> Result<Planned, MigrateError> {
        let path = Path::new(&self.path);
        match sim.state(path) {
            Some(FileType::Dir) => {
                return Ok(
                    Planned::new(format!("leave {} (already a directory)", self.path))
                        .param("path", &self.path),
                );
            }
            Some(other) => {
                return Err(refuse(
                    step,
                    INFO.name,
                    format!("{} exists and is a {other}", self.path),
                ));
            }
            None => {}
        }
        if let Some((blocker, state)) = sim.blocking_ancestor(path) {
            return Err(refuse(
                step,
                INFO.name,
                format!("{} is a {state}, not a directory", blocker.display()),
            ));
        }
        for dir in sim.missing_ancestors(path) {
            sim.created(&dir, FileType::Dir);
        }
        sim.created(path, FileType::Dir);
        Ok(Planned::new(format!(
            "create directory {} ({:04o})",
            self.path,
            self.mode()
        ))
        .param("path", &self.path)
        .param("mode", format!("{:04o}", self.mode())))
    }

    pub fn apply(&self, cx: &mut StepContext<'_>) -> Result<StepOutcome, MigrateError> {
        let path = PathBuf::from(&self.path);
        if let Ok(metadata) = fs_err::symlink_metadata(&path) {
            if metadata.is_dir() {
                return Ok(StepOutcome::Done {
                    summary: format!("{} already existed", self.path),
                });
            }
            return Err(refuse(
                cx.step,
                INFO.name,
                format!("{} exists and is not a directory", self.path),
            ));
        }
        let mut missing: Vec<&Path> = path
            .ancestors()
            .take_while(|a| fs_err::symlink_metadata(a).is_err())
            .collect();
        missing.reverse();
        let count = missing.len();
        for dir in missing {
            create_dir_ahead(cx, dir, self.mode())?;
        }
        Ok(StepOutcome::Done {
            summary: format!("created {count} directory(ies)"),
        })
    }
}

/// Records `DirCreated` for `dir` ahead of creating it with `mode` (its
/// parent exists by then: parents are queued first).
pub fn create_dir_ahead(
    cx: &mut StepContext<'_>,
    dir: &Path,
    mode: u32,
) -> Result<(), MigrateError> {
    let dir = dir.to_path_buf();
    cx.record_ahead(
        Event::DirCreated(DirCreated {
            mode,
            path: dir.display().to_string(),
            step: cx.step,
        }),
        move || {
            fs_err::create_dir(&dir)?;
            fs_err::set_permissions(&dir, std::fs::Permissions::from_mode(mode))?;
            Ok(())
        },
    )
}

pub fn drift(seq: u64, event: &DirCreated) -> Result<Option<Drift>, MigrateError> {
    match fs_err::symlink_metadata(&event.path) {
        Err(_) => Ok(Some(Drift::new(
            seq,
            &event.path,
            "missing",
            "an empty directory",
            "nothing",
        ))),
        Ok(metadata) if !metadata.is_dir() => Ok(Some(Drift::new(
            seq,
            &event.path,
            "type",
            "an empty directory",
            &crate::tree::file_type_of(&metadata).to_string(),
        ))),
        Ok(_) => {
            let entries: Vec<String> = fs_err::read_dir(&event.path)?
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .take(3)
                .collect();
            if entries.is_empty() {
                Ok(None)
            } else {
                Ok(Some(Drift::new(
                    seq,
                    &event.path,
                    "not empty",
                    "an empty directory",
                    &format!("entries such as {}", entries.join(", ")),
                )))
            }
        }
    }
}

pub fn undo(event: &DirCreated) -> Result<(), MigrateError> {
    fs_err::remove_dir(&event.path)?;
    Ok(())
}
