//! `remove`: removes a file, link or whole tree after stashing it (tar +
//! zstd, modes, owners and mtimes kept) in the blob store. `PathRemoved`,
//! naming the stash, is durable before anything is removed; the path is
//! then renamed to its staging name and deleted there, so a crash leaves
//! it whole or absent.
//!
//! Inverse: if the path is still absent, unpack the stash where it was and
//! check that the tree digest matches the recorded one.

use std::path::Path;

use rewind_ledger::{BlobStore, Event, PathRemoved};
use serde::Deserialize;

use super::archive::{Exclude, unpack, write_archive};
use super::staging::{self, Purpose};
use super::{KindInfo, Planned, StepContext, StepOutcome, refuse};
use crate::error::{Location, MigrateError, SpecError};
use crate::plan::Sim;
use crate::tree::{self, file_type_of};
use crate::undo::Drift;

pub const INFO: KindInfo = KindInfo {
    name: "remove",
    docs: "Removes `path` (a file, a symlink or a whole directory tree). Everything removed is first stashed in the blob store as an archive with modes, owners and mtimes; the event records the stash and the tree digest.",
    inverse: Some(
        "restores the path from its stash when the path is still absent, and checks the restored tree digest",
    ),
    fixture: "path = \"{root}/web/index.html\"",
};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Remove {
    pub path: String,
}

impl Remove {
    pub fn strings(&self) -> Vec<String> {
        vec![self.path.clone()]
    }

    pub fn substitute(&self, sub: &dyn Fn(&str) -> String) -> Remove {
        Remove {
            path: sub(&self.path),
        }
    }

    pub fn validate(&self, _at: &Location) -> Result<(), SpecError> {
        Ok(())
    }

    pub fn paths(&self) -> Vec<(&'static str, String)> {
        vec![("path", self.path.clone())]
    }

    pub fn plan(&self, step: u32, sim: &mut Sim) -> Result<Planned, MigrateError> {
        let path = Path::new(&self.path);
        if !sim.exists(path) {
            return Err(refuse(
                step,
                INFO.name,
                format!("{} does not exist", self.path),
            ));
        }
        sim.removed(path);
        Ok(Planned::new(format!("stash and remove {}", self.path)).param("path", &self.path))
    }

    pub fn apply(&self, cx: &mut StepContext<'_>) -> Result<StepOutcome, MigrateError> {
        let path = Path::new(&self.path);
        let Ok(metadata) = fs_err::symlink_metadata(path) else {
            return Err(refuse(
                cx.step,
                INFO.name,
                format!("{} does not exist", self.path),
            ));
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let digest = tree::digest(path)?;
        let archived = write_archive(cx.blobs(), path, Some(&name), &Exclude::default())?;
        staging::refuse_leftover(&staging::beside(path, Purpose::Remove))?;
        let target = path.to_path_buf();
        cx.record_ahead(
            Event::PathRemoved(PathRemoved {
                digest,
                file_type: file_type_of(&metadata),
                mode: std::os::unix::fs::PermissionsExt::mode(&metadata.permissions()) & 0o7777,
                path: self.path.clone(),
                stash: archived.archive,
                step: cx.step,
            }),
            move || staging::remove_whole(&target),
        )?;
        Ok(StepOutcome::Done {
            summary: format!(
                "stashed and removed {} ({} entries)",
                self.path, archived.entries
            ),
        })
    }
}

pub fn drift(seq: u64, event: &PathRemoved) -> Result<Option<Drift>, MigrateError> {
    match fs_err::symlink_metadata(&event.path) {
        Err(_) => Ok(None),
        Ok(metadata) => Ok(Some(Drift::new(
            seq,
            &event.path,
            "in the way",
            "absent",
            &format!("a {}", file_type_of(&metadata)),
        ))),
    }
}

/// Clears what an interrupted removal left: the tree, renamed aside and
/// partly deleted (the stash restores it).
pub fn tidy(event: &PathRemoved) -> Result<(), MigrateError> {
    staging::delete(&staging::beside(Path::new(&event.path), Purpose::Remove))
}

pub fn undo(blobs: &BlobStore, event: &PathRemoved) -> Result<(), MigrateError> {
    let path = Path::new(&event.path);
    let parent = path.parent().unwrap_or(Path::new("/"));
    unpack(blobs, &event.stash, parent)?;
    let actual = tree::digest(path)?;
    if actual != event.digest {
        return Err(MigrateError::BadArchive {
            archive: event.stash.to_hex(),
            reason: format!(
                "{} was restored but its tree digest is {} instead of {}",
                event.path,
                actual.short(),
                event.digest.short()
            ),
        });
    }
    Ok(())
}
