//! `move`: renames a path, or with `from = "dir/*"` every child of a
//! directory into `to`. Each `PathMoved` (and each `DirCreated` of a
//! missing parent of the destination) is durable before the move. Across
//! filesystems it copies to the staging name beside `to`, verifies the
//! copy's manifest, renames the source aside, renames the copy into place
//! and deletes the source: a crash leaves one whole tree, at `from`, at
//! `to`, or aside with its complete copy staged (which `tidy` puts back).
//! `copied` in the event is decided before the move, from the devices of
//! the source and of the destination's nearest existing directory.
//!
//! Inverse: move `to` back to `from`, if `to` still has the recorded tree
//! digest and `from` is absent.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rewind_ledger::{BlobStore, Digest, Event, FileType, PathMoved};
use serde::Deserialize;

use super::staging::{self, Purpose};
use super::{KindInfo, Planned, StepContext, StepOutcome, mkdir, refuse};
use crate::error::{Location, MigrateError, SpecError};
use crate::plan::Sim;
use crate::tree::{self, file_type_of};
use crate::undo::Drift;

pub const INFO: KindInfo = KindInfo {
    name: "move",
    docs: "Moves `from` to `to` (a rename; across filesystems a copy, a digest check and a removal). `from = \"DIR/*\"` moves the children of DIR into the directory `to`, leaving out the child that contains `to`. A `to` ending in `/` receives `from` under its own name. Refuses a destination that exists.",
    inverse: Some(
        "moves `to` back to `from` when `to` still has the recorded tree digest and `from` is absent",
    ),
    fixture: "from = \"{root}/var/log\"\nto = \"{root}/web/log\"",
};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Move {
    pub from: String,
    pub to: String,
}

/// One concrete move.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pair {
    from: PathBuf,
    to: PathBuf,
}

impl Move {
    pub fn strings(&self) -> Vec<String> {
        vec![self.from.clone(), self.to.clone()]
    }

    pub fn substitute(&self, sub: &dyn Fn(&str) -> String) -> Move {
        Move {
            from: sub(&self.from),
            to: sub(&self.to),
        }
    }

    pub fn validate(&self, at: &Location) -> Result<(), SpecError> {
        if self.to.contains('*') {
            return Err(SpecError::BadValue {
                at: at.clone(),
                field: "to".into(),
                value: self.to.clone(),
                reason: "only `from` may end in `/*`".into(),
            });
        }
        Ok(())
    }

    pub fn paths(&self) -> Vec<(&'static str, String)> {
        vec![("from", self.from.clone()), ("to", self.to.clone())]
    }

    fn children_of(&self) -> Option<&str> {
        self.from.strip_suffix("/*")
    }

    /// The destination directory when moving children, or the destination.
    fn destination(&self) -> PathBuf {
        if self.children_of().is_some() {
            PathBuf::from(self.to.trim_end_matches('/'))
        } else if self.to.ends_with('/') {
            let name = Path::new(&self.from).file_name().unwrap_or_default();
            Path::new(self.to.trim_end_matches('/')).join(name)
        } else {
            PathBuf::from(&self.to)
        }
    }

    pub fn plan(&self, step: u32, sim: &mut Sim) -> Result<Planned, MigrateError> {
        let destination = self.destination();
        if let Some((blocker, state)) = sim.blocking_ancestor(&destination) {
            return Err(refuse(
                step,
                INFO.name,
                format!(
                    "{} is a {state}, not a directory, so {} cannot be created",
                    blocker.display(),
                    destination.display()
                ),
            ));
        }
        let pairs = match self.children_of() {
            Some(dir) => {
                let dir = Path::new(dir);
                if sim.state(dir) != Some(FileType::Dir) {
                    return Err(refuse(
                        step,
                        INFO.name,
                        format!("{} is not a directory", dir.display()),
                    ));
                }
                match sim.state(&destination) {
                    None => {
                        for ancestor in sim.missing_ancestors(&destination) {
                            sim.created(&ancestor, FileType::Dir);
                        }
                        sim.created(&destination, FileType::Dir);
                    }
                    Some(FileType::Dir) => {}
                    Some(other) => {
                        return Err(refuse(
                            step,
                            INFO.name,
                            format!(
                                "{} exists and is a {other}, not a directory",
                                destination.display()
                            ),
                        ));
                    }
                }
                sim.children(dir)
                    .into_iter()
                    .filter(|child| !destination.starts_with(child))
                    .map(|child| Pair {
                        to: destination.join(child.file_name().unwrap_or_default()),
                        from: child,
                    })
                    .collect::<Vec<_>>()
            }
            None => {
                let from = PathBuf::from(&self.from);
                if !sim.exists(&from) {
                    return Err(refuse(
                        step,
                        INFO.name,
                        format!("{} does not exist", from.display()),
                    ));
                }
                if destination.starts_with(&from) {
                    return Err(refuse(
                        step,
                        INFO.name,
                        format!("cannot move {} into itself", from.display()),
                    ));
                }
                for ancestor in sim.missing_ancestors(&destination) {
                    sim.created(&ancestor, FileType::Dir);
                }
                vec![Pair {
                    from,
                    to: destination.clone(),
                }]
            }
        };
        for pair in &pairs {
            if let Some(existing) = sim.state(&pair.to) {
                return Err(refuse(
                    step,
                    INFO.name,
                    format!(
                        "{} already exists (a {existing}); refusing to move {} onto it",
                        pair.to.display(),
                        pair.from.display()
                    ),
                ));
            }
            sim.moved(&pair.from, &pair.to);
        }
        let operation = match self.children_of() {
            Some(dir) => format!(
                "move {} entries of {dir}/ into {}/",
                pairs.len(),
                destination.display()
            ),
            None => format!("move {} to {}", self.from, destination.display()),
        };
        Ok(Planned::new(operation)
            .param("from", &self.from)
            .param("to", destination.display().to_string()))
    }

    pub fn apply(&self, cx: &mut StepContext<'_>) -> Result<StepOutcome, MigrateError> {
        let destination = self.destination();
        let pairs: Vec<Pair> = match self.children_of() {
            Some(dir) => {
                let dir = Path::new(dir);
                let mode = fs_err::metadata(dir)?.permissions().mode() & 0o7777;
                make_parents(cx, &destination.join("x"), mode)?;
                let mut children: Vec<PathBuf> = fs_err::read_dir(dir)?
                    .map(|entry| entry.map(|e| e.path()))
                    .collect::<Result<_, _>>()?;
                children.sort();
                children
                    .into_iter()
                    .filter(|child| !destination.starts_with(child))
                    .map(|child| Pair {
                        to: destination.join(child.file_name().unwrap_or_default()),
                        from: child,
                    })
                    .collect()
            }
            None => {
                make_parents(cx, &destination, 0o755)?;
                vec![Pair {
                    from: PathBuf::from(&self.from),
                    to: destination.clone(),
                }]
            }
        };
        for pair in &pairs {
            if fs_err::symlink_metadata(&pair.to).is_ok() {
                return Err(refuse(
                    cx.step,
                    INFO.name,
                    format!(
                        "{} already exists; refusing to move {} onto it",
                        pair.to.display(),
                        pair.from.display()
                    ),
                ));
            }
        }
        let digests = manifests(cx.blobs(), &pairs)?;
        let mut copied_any = false;
        for (pair, digest) in pairs.iter().zip(digests) {
            let metadata = fs_err::symlink_metadata(&pair.from)?;
            let copied = crosses_filesystems(&pair.from, &pair.to)?;
            copied_any |= copied;
            let step = cx.step;
            let Pair { from, to } = pair.clone();
            cx.record_ahead(
                Event::PathMoved(PathMoved {
                    copied,
                    digest,
                    file_type: file_type_of(&metadata),
                    from: from.display().to_string(),
                    step,
                    to: to.display().to_string(),
                }),
                move || {
                    if fs_err::symlink_metadata(&to).is_ok() {
                        return Err(refuse(
                            step,
                            INFO.name,
                            format!(
                                "{} appeared while the step ran; refusing to move onto it",
                                to.display()
                            ),
                        ));
                    }
                    relocate(&from, &to, false).map(|_| ())
                },
            )?;
        }
        let how = if copied_any {
            " (copied across filesystems)"
        } else {
            ""
        };
        Ok(StepOutcome::Done {
            summary: format!(
                "moved {} path(s) to {}{how}",
                pairs.len(),
                destination.display()
            ),
        })
    }
}

/// The tree digest of each source, computed before anything moves. Each
/// manifest goes to the blob store under its digest, so that a drift check
/// can later name exactly what differs. Several are written at once: each
/// blob is fsynced, and the waits overlap.
fn manifests(blobs: &BlobStore, pairs: &[Pair]) -> Result<Vec<Digest>, MigrateError> {
    let threads = pairs.len().clamp(1, 8);
    let chunk = pairs.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = pairs
            .chunks(chunk)
            .map(|group| {
                scope.spawn(move || {
                    group
                        .iter()
                        .map(|pair| {
                            let mut manifest = blobs.writer()?;
                            tree::write_manifest(&pair.from, &mut manifest)?;
                            Ok(manifest.finish()?)
                        })
                        .collect::<Result<Vec<Digest>, MigrateError>>()
                })
            })
            .collect();
        let mut digests = Vec::with_capacity(pairs.len());
        for handle in handles {
            digests.extend(handle.join().expect("manifest threads do not panic")?);
        }
        Ok(digests)
    })
}

/// Creates the missing ancestors of `path` (not `path`), recording each.
fn make_parents(cx: &mut StepContext<'_>, path: &Path, mode: u32) -> Result<(), MigrateError> {
    let mut missing: Vec<&Path> = path
        .ancestors()
        .skip(1)
        .take_while(|a| fs_err::symlink_metadata(a).is_err())
        .collect();
    missing.reverse();
    for dir in missing {
        mkdir::create_dir_ahead(cx, dir, mode)?;
    }
    Ok(())
}

/// Whether moving `from` to `to` will copy: the source and the nearest
/// existing directory above `to` are on different devices.
fn crosses_filesystems(from: &Path, to: &Path) -> Result<bool, MigrateError> {
    let source = fs_err::symlink_metadata(from)?.dev();
    let above = to
        .ancestors()
        .skip(1)
        .find_map(|ancestor| std::fs::metadata(ancestor).ok());
    Ok(above.is_some_and(|metadata| metadata.dev() != source))
}

/// Moves `from` to `to`: a rename, or across filesystems (or when
/// `force_copy`) a copy to the staging name beside `to`, a manifest
/// comparison, the source renamed aside, the copy renamed into place and
/// the source deleted. Returns whether it copied.
pub fn relocate(from: &Path, to: &Path, force_copy: bool) -> Result<bool, MigrateError> {
    if !force_copy {
        match std::fs::rename(from, to) {
            Ok(()) => return Ok(false),
            Err(error) if error.raw_os_error() == Some(libc::EXDEV) => {}
            Err(error) => {
                return Err(std::io::Error::new(
                    error.kind(),
                    format!(
                        "failed to move {} to {}: {error}",
                        from.display(),
                        to.display()
                    ),
                )
                .into());
            }
        }
    }
    let staged = staging::beside(to, Purpose::Copy);
    let aside = staging::beside(from, Purpose::Remove);
    staging::refuse_leftover(&staged)?;
    staging::refuse_leftover(&aside)?;
    let before = tree::manifest(from)?;
    let copy = copy_tree(from, &staged).and_then(|()| {
        let differences = before.diff(&tree::manifest(&staged)?);
        match differences.first() {
            None => Ok(()),
            Some(first) => Err(std::io::Error::other(format!(
                "the copy of {} for {} differs ({first}); the source was kept",
                from.display(),
                to.display(),
            ))
            .into()),
        }
    });
    if let Err(error) = copy {
        let _ = staging::delete(&staged);
        return Err(error);
    }
    fs_err::rename(from, &aside)?;
    if let Err(error) = fs_err::rename(&staged, to) {
        let _ = std::fs::rename(&aside, from);
        let _ = staging::delete(&staged);
        return Err(error.into());
    }
    staging::delete(&aside)?;
    Ok(true)
}

/// Puts back what an interrupted copy across filesystems left, forward or
/// by an undo, so that the tree is whole at `from` or at `to`: a source
/// moved aside whose copy never took its place is renamed back, a source
/// aside whose copy did is deleted, and staged copies are deleted.
pub fn tidy(event: &PathMoved) -> Result<(), MigrateError> {
    let (from, to) = (Path::new(&event.from), Path::new(&event.to));
    for (source, destination) in [(from, to), (to, from)] {
        let aside = staging::beside(source, Purpose::Remove);
        if staging::exists(&aside) {
            if !staging::exists(source) && !staging::exists(destination) {
                fs_err::rename(&aside, source)?;
            } else {
                staging::delete(&aside)?;
            }
        }
        staging::delete(&staging::beside(destination, Purpose::Copy))?;
    }
    Ok(())
}

/// Copies a tree keeping modes, owners (when permitted), mtimes and links.
pub fn copy_tree(from: &Path, to: &Path) -> Result<(), MigrateError> {
    let root = super::archive::is_root();
    let mut directories = Vec::new();
    for entry in walkdir::WalkDir::new(from)
        .follow_links(false)
        .follow_root_links(false)
        .sort_by_file_name()
    {
        let entry = entry.map_err(|e| std::io::Error::other(e.to_string()))?;
        let relative = entry.path().strip_prefix(from).unwrap_or(entry.path());
        let target = if relative.as_os_str().is_empty() {
            to.to_path_buf()
        } else {
            to.join(relative)
        };
        let metadata = fs_err::symlink_metadata(entry.path())?;
        match file_type_of(&metadata) {
            FileType::Dir => {
                fs_err::create_dir(&target)?;
                directories.push((target.clone(), metadata.clone()));
            }
            FileType::File => {
                fs_err::copy(entry.path(), &target)?;
                let file = fs_err::File::options().write(true).open(&target)?;
                file.set_modified(metadata.modified()?)?;
            }
            FileType::Symlink => {
                std::os::unix::fs::symlink(fs_err::read_link(entry.path())?, &target)?;
            }
            FileType::Other => {
                return Err(std::io::Error::other(format!(
                    "{} is a special file; rewind does not copy those",
                    entry.path().display()
                ))
                .into());
            }
        }
        if root {
            std::os::unix::fs::lchown(&target, Some(metadata.uid()), Some(metadata.gid()))?;
        }
        if !metadata.file_type().is_symlink() {
            std::fs::set_permissions(
                &target,
                std::fs::Permissions::from_mode(metadata.mode() & 0o7777),
            )?;
        }
    }
    for (dir, metadata) in directories.into_iter().rev() {
        if let Ok(handle) = std::fs::File::open(&dir) {
            let _ = handle.set_modified(metadata.modified()?);
        }
    }
    Ok(())
}

/// The precondition of undoing a move: `to` has the digest, `from` is absent.
pub fn drift(
    blobs: &BlobStore,
    seq: u64,
    event: &PathMoved,
) -> Result<Option<Drift>, MigrateError> {
    let to = Path::new(&event.to);
    if fs_err::symlink_metadata(&event.from).is_ok() {
        return Ok(Some(Drift::new(
            seq,
            &event.from,
            "in the way",
            "absent",
            "something exists",
        )));
    }
    if fs_err::symlink_metadata(to).is_err() {
        return Ok(Some(Drift::new(
            seq,
            &event.to,
            "missing",
            &format!("a {}", event.file_type),
            "nothing",
        )));
    }
    let actual = tree::digest(to)?;
    if actual != event.digest
        && let Ok(text) = blobs.get(&event.digest)
        && let Some(expected) = tree::parse_manifest(&String::from_utf8_lossy(&text))
        && let Some(first) = expected.diff(&tree::manifest(to)?).into_iter().next()
    {
        let path = if first.path.is_empty() {
            event.to.clone()
        } else {
            to.join(&first.path).display().to_string()
        };
        return Ok(Some(Drift::new(
            seq,
            &path,
            first.what,
            &first.expected,
            &first.actual,
        )));
    }
    if actual != event.digest {
        return Ok(Some(Drift::new(
            seq,
            &event.to,
            "content",
            &format!("tree digest {}", event.digest.short()),
            &format!("tree digest {}", actual.short()),
        )));
    }
    Ok(None)
}

/// Moves `to` back to `from`.
pub fn undo(event: &PathMoved) -> Result<(), MigrateError> {
    relocate(Path::new(&event.to), Path::new(&event.from), false)?;
    Ok(())
}
