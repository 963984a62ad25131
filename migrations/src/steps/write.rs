//! `write`: writes a file's content (`content`, or the content of the file
//! `source`), in place, so that an existing file keeps its inode and owner.
//! The old content is stashed in the blob store first and recorded in
//! `FileWritten` with its mode.
//!
//! Inverse: if the file still has the new content, put the old content and
//! mode back, or remove the file if there was none.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rewind_ledger::{BlobStore, Digest, Event, FileType, FileWritten};
use serde::Deserialize;

use super::{KindInfo, Planned, StepContext, StepOutcome, mode_of, parse_mode, refuse};
use crate::error::{Location, MigrateError, SpecError};
use crate::plan::Sim;
use crate::tree::file_sha256;
use crate::undo::Drift;

pub const INFO: KindInfo = KindInfo {
    name: "write",
    docs: "Writes `content` (or the content of the file `source`, read when the step runs) to `path`, with `mode` (default: the old mode, or \"0644\" for a new file). The old content is stashed in the blob store first. The parent directory must exist.",
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
        write_in_place(path, &content, mode)?;
        cx.record(Event::FileWritten(FileWritten {
            mode,
            new,
            old,
            old_mode,
            path: self.path.clone(),
            step: cx.step,
        }))?;
        Ok(StepOutcome::Done {
            summary: format!("wrote {} bytes to {}", content.len(), self.path),
        })
    }
}

/// Writes content into `path` (created if absent), then sets `mode`.
fn write_in_place(path: &Path, content: &[u8], mode: u32) -> Result<(), MigrateError> {
    let mut file = fs_err::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(content)?;
    file.sync_all()?;
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
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
            write_in_place(
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
