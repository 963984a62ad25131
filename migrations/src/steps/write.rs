//! `write`: writes a file's content (`content`, or the content of the file
//! `source`). The old content is stashed in the blob store and recorded in
//! `FileWritten` with its mode, durable before the file is touched. The new
//! content goes to a staging file in the same directory (fsynced, given the
//! mode and the old file's owner and group), which is renamed over the
//! path: a crash leaves the old content or the new, never part of either.
//! The file gets a new inode, so hard links to the old one keep the old
//! content.
//!
//! Inverse: if the file still has the new content, put the old content and
//! mode back the same way, or remove the file if there was none.

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use fs_err::os::unix::fs::OpenOptionsExt;
use rewind_ledger::{BlobStore, Digest, Event, FileType, FileWritten};
use serde::Deserialize;

use super::staging::{self, Purpose};
use super::{KindInfo, Planned, StepContext, StepOutcome, mode_of, parse_mode, refuse};
use crate::error::{Location, MigrateError, SpecError};
use crate::plan::Sim;
use crate::tree::file_sha256;
use crate::undo::Drift;

pub const INFO: KindInfo = KindInfo {
    name: "write",
    docs: "Writes `content` (or the content of the file `source`, read when the step runs) to `path`, with `mode` (default: the old mode, or \"0644\" for a new file). The old content is stashed in the blob store first; the new content replaces the file whole, by a rename, keeping its owner and group. The parent directory must exist.",
    inverse: Some(
        "restores the old content and mode, or removes a file that did not exist, when the file still has the written content",
    ),
    fixture: "path = \"{root}/web/.htaccess\"\ncontent = \"Options -Indexes\\n\"",
};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Write {
    pub path: String,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub mode: Option<String>,
}

impl Write {
    pub fn strings(&self) -> Vec<String> {
        let mut all = vec![self.path.clone()];
        all.extend(self.content.iter().cloned());
        all.extend(self.source.iter().cloned());
        all
    }

    pub fn substitute(&self, sub: &dyn Fn(&str) -> String) -> Write {
        Write {
            path: sub(&self.path),
            content: self.content.as_deref().map(sub),
            source: self.source.as_deref().map(sub),
            mode: self.mode.clone(),
        }
    }

    pub fn validate(&self, at: &Location) -> Result<(), SpecError> {
        if let Some(mode) = &self.mode {
            parse_mode(at, "mode", mode)?;
        }
        if self.content.is_some() == self.source.is_some() {
            return Err(SpecError::BadValue {
                at: at.clone(),
                field: "content".into(),
                value: String::new(),
                reason: "give exactly one of `content` and `source`".into(),
            });
        }
        Ok(())
    }

    /// `source` is only read, so it may live outside the roots.
    pub fn paths(&self) -> Vec<(&'static str, String)> {
        vec![("path", self.path.clone())]
    }

    pub fn plan(&self, step: u32, sim: &mut Sim) -> Result<Planned, MigrateError> {
        let path = Path::new(&self.path);
        let parent = path.parent().unwrap_or(Path::new("/"));
        if sim.state(parent) != Some(FileType::Dir) {
            return Err(refuse(
                step,
                INFO.name,
                format!("the directory {} does not exist", parent.display()),
            ));
        }
        match sim.state(path) {
            None | Some(FileType::File) => {}
            Some(other) => {
                return Err(refuse(
                    step,
                    INFO.name,
                    format!("{} is a {other}, not a file", self.path),
                ));
            }
        }
        if let Some(source) = &self.source
            && !Path::new(source).is_file()
        {
            return Err(refuse(
                step,
                INFO.name,
                format!("the source {source} is not a readable file"),
            ));
        }
        let verb = if sim.exists(path) {
            "overwrite"
        } else {
            "create"
        };
        sim.created(path, FileType::File);
        let what = match (&self.content, &self.source) {
            (Some(content), _) => format!("{} bytes", content.len()),
            (None, Some(source)) => format!("the content of {source}"),
            (None, None) => String::new(),
        };
        Ok(Planned::new(format!("{verb} {} with {what}", self.path)).param("path", &self.path))
    }

    pub fn apply(&self, cx: &mut StepContext<'_>) -> Result<StepOutcome, MigrateError> {
        let path = Path::new(&self.path);
        let content = match (&self.content, &self.source) {
            (Some(content), _) => content.clone().into_bytes(),
            (None, Some(source)) => fs_err::read(source)?,
            (None, None) => Vec::new(),
        };
        let (old, old_mode) = match fs_err::symlink_metadata(path) {
            Ok(metadata) if metadata.is_file() => {
                let stash = cx.blobs().put_reader(&mut fs_err::File::open(path)?)?;
                (Some(stash), Some(metadata.permissions().mode() & 0o7777))
            }
            Ok(_) => {
                return Err(refuse(
                    cx.step,
                    INFO.name,
                    format!("{} is not a regular file", self.path),
                ));
            }
            Err(_) => (None, None),
        };
        let mode = self
            .mode
            .as_deref()
            .map(mode_of)
            .or(old_mode)
            .unwrap_or(0o644);
        let new = Digest::of(&content);
        let summary = format!("wrote {} bytes to {}", content.len(), self.path);
        let target = path.to_path_buf();
        cx.record_ahead(
            Event::FileWritten(FileWritten {
                mode,
                new,
                old,
                old_mode,
                path: self.path.clone(),
                step: cx.step,
            }),
            move || replace(&target, &content, mode),
        )?;
        Ok(StepOutcome::Done { summary })
    }
}

/// Puts `content` at `path` with `mode`: written to the staging file beside
/// it, fsynced, then renamed over it. An existing file's owner and group
/// are kept.
fn replace(path: &Path, content: &[u8], mode: u32) -> Result<(), MigrateError> {
    replace_with(path, mode, |file| Ok(file.write_all(content)?))
}

/// Like [`replace`], with the content written by `fill` into the staging
/// file (streamed, for an archive copy).
pub fn replace_with(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut fs_err::File) -> Result<(), MigrateError>,
) -> Result<(), MigrateError> {
    let staged = staging::beside(path, Purpose::Write);
    let result = write_staged(path, &staged, fill, mode).and_then(|()| {
        fs_err::rename(&staged, path)?;
        staging::sync_dir(path.parent().unwrap_or(Path::new("/")))
    });
    if result.is_err() {
        // Only ours; the file itself is untouched until the rename.
        let _ = std::fs::remove_file(&staged);
    }
    result
}

fn write_staged(
    path: &Path,
    staged: &Path,
    fill: impl FnOnce(&mut fs_err::File) -> Result<(), MigrateError>,
    mode: u32,
) -> Result<(), MigrateError> {
    let owner = std::fs::symlink_metadata(path)
        .ok()
        .map(|metadata| (metadata.uid(), metadata.gid()));
    // A staging file left by an interrupted write is ours; whatever is
    // there is replaced, never followed (it could be a symlink).
    staging::delete(staged)?;
    let mut file = fs_err::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(staged)?;
    fill(&mut file)?;
    if let Some((uid, gid)) = owner {
        let metadata = file.metadata()?;
        if (metadata.uid(), metadata.gid()) != (uid, gid) {
            std::os::unix::fs::fchown(file.file(), Some(uid), Some(gid)).map_err(|error| {
                std::io::Error::new(
                    error.kind(),
                    format!(
                        "cannot give the new content of {} its owner {uid}:{gid}: {error}",
                        path.display()
                    ),
                )
            })?;
        }
    }
    // After the chown, which clears the set-id bits.
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.sync_all()?;
    Ok(())
}

/// Clears the staging file an interrupted write (or undo) left.
pub fn tidy(event: &FileWritten) -> Result<(), MigrateError> {
    staging::delete(&staging::beside(Path::new(&event.path), Purpose::Write))
}

pub fn drift(seq: u64, event: &FileWritten) -> Result<Option<Drift>, MigrateError> {
    let expected = format!("sha256 {}", event.new.short());
    match fs_err::symlink_metadata(&event.path) {
        Err(_) => Ok(Some(Drift::new(
            seq,
            &event.path,
            "missing",
            &expected,
            "nothing",
        ))),
        Ok(metadata) if !metadata.is_file() => Ok(Some(Drift::new(
            seq,
            &event.path,
            "type",
            "a file",
            &crate::tree::file_type_of(&metadata).to_string(),
        ))),
        Ok(metadata) => {
            let actual = file_sha256(Path::new(&event.path))?;
            let mode = metadata.permissions().mode() & 0o7777;
            if actual != event.new {
                Ok(Some(Drift::new(
                    seq,
                    &event.path,
                    "content",
                    &expected,
                    &format!("sha256 {}", actual.short()),
                )))
            } else if mode != event.mode {
                // The inverse restores the old mode too; a mode set since
                // would be lost silently.
                Ok(Some(Drift::new(
                    seq,
                    &event.path,
                    "mode",
                    &format!("{:04o}", event.mode),
                    &format!("{mode:04o}"),
                )))
            } else {
                Ok(None)
            }
        }
    }
}

pub fn undo(blobs: &BlobStore, event: &FileWritten) -> Result<(), MigrateError> {
    match (&event.old, event.old_mode) {
        (Some(old), old_mode) => {
            let content = blobs.get(old)?;
            replace(
                Path::new(&event.path),
                &content,
                old_mode.unwrap_or(event.mode),
            )
        }
        (None, _) => {
            fs_err::remove_file(&event.path)?;
            Ok(())
        }
    }
}
