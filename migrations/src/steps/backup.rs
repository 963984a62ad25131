//! `backup`: archives a tree (tar + zstd) into the blob store with a
//! per-file sha256 manifest, and optionally copies the archive into a
//! directory (`into`). The archive itself has no inverse: it is a safety
//! net that `rewind backups restore` uses. The copy in `into` (and any
//! directory made for it) is recorded as `DirCreated`/`FileWritten`, durable
//! before the copy starts, and written through a staging file renamed into
//! place, so a rollback removes it and leaves the tree exactly as it was,
//! even after a crash in the middle of the copy.

use std::path::{Path, PathBuf};

use rewind_ledger::{BackupTaken, BlobStore, Digest, DirCreated, Event, FileType, FileWritten};
use serde::Deserialize;

use super::archive::{Exclude, write_archive};
use super::{KindInfo, Planned, StepContext, StepOutcome, refuse};
use crate::error::{Location, MigrateError, SpecError};
use crate::plan::Sim;

pub const INFO: KindInfo = KindInfo {
    name: "backup",
    docs: "Archives `path` (tar + zstd, modes, owners, mtimes, symlinks and empty directories kept) into the ledger's blob store with a per-file sha256 manifest. `exclude` lists glob patterns (relative paths or names) to leave out; `into` also writes a copy of the archive to that directory.",
    inverse: Some(
        "none for the archive (it is the safety net); the copy written to `into` and directories made for it are removed",
    ),
    fixture: "path = \"{root}\"\nexclude = [\".archive\"]\ninto = \"{root}/.archive\"",
};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backup {
    pub path: String,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub into: Option<String>,
}

impl Backup {
    pub fn strings(&self) -> Vec<String> {
        let mut all = vec![self.path.clone()];
        all.extend(self.exclude.iter().cloned());
        all.extend(self.into.iter().cloned());
        all
    }

    pub fn substitute(&self, sub: &dyn Fn(&str) -> String) -> Backup {
        Backup {
            path: sub(&self.path),
            exclude: self.exclude.iter().map(|e| sub(e)).collect(),
            into: self.into.as_deref().map(sub),
        }
    }

    pub fn validate(&self, at: &Location) -> Result<(), SpecError> {
        Exclude::new(&self.exclude)
            .map(|_| ())
            .map_err(|error| SpecError::BadValue {
                at: at.clone(),
                field: "exclude".into(),
                value: self.exclude.join(", "),
                reason: error.to_string(),
            })
    }

    pub fn paths(&self) -> Vec<(&'static str, String)> {
        let mut paths = vec![("path", self.path.clone())];
        paths.extend(self.into.iter().map(|into| ("into", into.clone())));
        paths
    }

    pub fn plan(&self, step: u32, sim: &mut Sim) -> Result<Planned, MigrateError> {
        let path = Path::new(&self.path);
        if !sim.exists(path) {
            return Err(refuse(
                step,
                INFO.name,
                format!("{} does not exist, nothing to back up", self.path),
            ));
        }
        let mut planned = Planned::new(format!("archive {} into the blob store", self.path))
            .param("path", &self.path);
        if !self.exclude.is_empty() {
            planned = planned.param("exclude", self.exclude.join(","));
        }
        if let Some(into) = &self.into {
            let into = Path::new(into);
            if let Some((blocker, state)) = sim.blocking_ancestor(&into.join("x")) {
                return Err(refuse(
                    step,
                    INFO.name,
                    format!("{} is a {state}, not a directory", blocker.display()),
                ));
            }
            for dir in sim.missing_ancestors(&into.join("x")) {
                sim.created(&dir, FileType::Dir);
            }
            planned
                .operation
                .push_str(&format!(", copy to {}/", into.display()));
            planned = planned.param("into", into.display().to_string());
        }
        Ok(planned)
    }

    pub fn apply(&self, cx: &mut StepContext<'_>) -> Result<StepOutcome, MigrateError> {
        let source = Path::new(&self.path);
        let exclude = Exclude::new(&self.exclude).unwrap_or_default();
        // Refuse an unreadable tree before anything is stored.
        fs_err::read_dir(source)?;
        let archived = write_archive(cx.blobs(), source, None, &exclude)?;
        let mut copy = None;
        if let Some(into) = &self.into {
            let into = PathBuf::from(into);
            let name = format!("{}-step{}.tar.zst", cx.run, cx.step);
            let target = into.join(name);
            if fs_err::symlink_metadata(&target).is_ok() {
                return Err(refuse(
                    cx.step,
                    INFO.name,
                    format!("{} already exists", target.display()),
                ));
            }
            let created: Vec<PathBuf> = into
                .ancestors()
                .take_while(|a| fs_err::symlink_metadata(a).is_err())
                .map(Path::to_path_buf)
                .collect();
            // The copy's effect below makes these directories.
            for dir in created.iter().rev() {
                cx.record_ahead(
                    Event::DirCreated(DirCreated {
                        mode: 0o700,
                        path: dir.display().to_string(),
                        step: cx.step,
                    }),
                    || Ok(()),
                )?;
            }
            let blobs = cx.blobs().clone();
            let (archive, copy_to) = (archived.archive, target.clone());
            cx.record_ahead(
                Event::FileWritten(FileWritten {
                    mode: 0o600,
                    new: archived.archive,
                    old: None,
                    old_mode: None,
                    path: target.display().to_string(),
                    step: cx.step,
                }),
                move || copy_archive(&blobs, &archive, &created, &copy_to),
            )?;
            copy = Some(target.display().to_string());
        }
        cx.record(Event::BackupTaken(BackupTaken {
            archive: archived.archive,
            copy,
            file_count: archived.files,
            manifest: archived.manifest,
            size: archived.size,
            source: self.path.clone(),
            step: cx.step,
        }))?;
        Ok(StepOutcome::Done {
            summary: format!(
                "archived {} files ({} entries) of {}",
                archived.files, archived.entries, self.path
            ),
        })
    }
}

/// Copies the archive to `target`, first creating the directories
/// `created` (listed innermost first; made outermost first, mode 0700). On failure — a full disk, most
/// often — the partial copy and those directories are removed, so the tree
/// is left as it was.
fn copy_archive(
    blobs: &BlobStore,
    archive: &Digest,
    created: &[PathBuf],
    target: &Path,
) -> Result<(), MigrateError> {
    let attempt = || -> Result<(), MigrateError> {
        for dir in created.iter().rev() {
            fs_err::create_dir(dir)?;
            fs_err::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        }
        super::write::replace_with(target, 0o600, |file| {
            std::io::copy(&mut blobs.open(archive)?, file).map_err(|error| {
                std::io::Error::new(
                    error.kind(),
                    format!("cannot copy the archive to {}: {error}", target.display()),
                )
            })?;
            Ok(())
        })
    };
    let result = attempt();
    if result.is_err() {
        for dir in created {
            let _ = std::fs::remove_dir(dir);
        }
    }
    result
}
