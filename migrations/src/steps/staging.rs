//! Rewind's own names beside a target path: where `write` prepares the new
//! content, where `move` copies a tree across filesystems, and where a tree
//! goes to be deleted. Each is a sibling of the path (the same directory,
//! so the same filesystem, and a rename into place is atomic), named after
//! the path, so that a crash leaves the path whole — old or new, never half
//! written, half copied or half removed — and the rollback that follows
//! finds what the interrupted effect left and clears it (`tidy` in the
//! `write`, `move` and `remove` modules).

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rewind_ledger::Digest;

use crate::error::MigrateError;

/// What a staging name is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// New content of a file, renamed over it once complete.
    Write,
    /// A copy of a tree from another filesystem, renamed into place once
    /// complete and verified.
    Copy,
    /// A tree renamed out of the way, then deleted.
    Remove,
}

impl Purpose {
    fn word(self) -> &'static str {
        match self {
            Purpose::Write => "write",
            Purpose::Copy => "copy",
            Purpose::Remove => "remove",
        }
    }
}

/// The staging name of `path` for `purpose`: `.rewind-remove.<16 hex>` in
/// the same directory, the hex taken from the sha256 of the path's own name
/// (so the name fits whatever the length of the original).
pub fn beside(path: &Path, purpose: Purpose) -> PathBuf {
    let name = path.file_name().unwrap_or_default();
    let digest = Digest::of(name.as_bytes()).to_hex();
    path.with_file_name(format!(".rewind-{}.{}", purpose.word(), &digest[..16]))
}

/// Whether something exists at `path` (a dangling symlink counts).
pub fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// Refuses to stage over a leftover of an interrupted step.
pub fn refuse_leftover(staged: &Path) -> Result<(), MigrateError> {
    if exists(staged) {
        return Err(MigrateError::Leftover {
            path: staged.display().to_string(),
        });
    }
    Ok(())
}

/// Deletes a file, link or tree of ours; nothing there is fine.
pub fn delete(path: &Path) -> Result<(), MigrateError> {
    match std::fs::symlink_metadata(path) {
        Err(_) => Ok(()),
        Ok(metadata) if metadata.is_dir() => Ok(fs_err::remove_dir_all(path)?),
        Ok(_) => Ok(fs_err::remove_file(path)?),
    }
}

/// Removes `path` (a file, link or whole tree) by renaming it to its
/// staging name first and deleting it there: a crash leaves `path` either
/// whole or absent.
pub fn remove_whole(path: &Path) -> Result<(), MigrateError> {
    let aside = beside(path, Purpose::Remove);
    refuse_leftover(&aside)?;
    fs_err::rename(path, &aside)?;
    delete(&aside)
}

/// Makes a rename in `directory` durable.
pub fn sync_dir(directory: &Path) -> Result<(), MigrateError> {
    fs_err::File::open(directory)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names_are_hidden_siblings_whatever_the_length_of_the_name() {
        let long = "x".repeat(255);
        let path = Path::new("/srv/a").join(&long);
        let staged = beside(&path, Purpose::Copy);
        assert_eq!(staged.parent(), Some(Path::new("/srv/a")));
        let name = staged.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(".rewind-copy."), "{name}");
        assert_eq!(name.len(), ".rewind-copy.".len() + 16);
        assert_ne!(beside(&path, Purpose::Remove), staged);
        assert_ne!(beside(Path::new("/srv/a/y"), Purpose::Copy), staged);
    }
}
