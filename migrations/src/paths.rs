//! Path arithmetic for root checks: folding `..` and resolving symlinks in
//! the part of a path that exists.

use std::path::{Component, Path, PathBuf};

/// Folds `.` and `..` without touching the filesystem.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Folds `..`, then resolves symlinks in the longest prefix that exists;
/// the rest is appended as written.
pub fn resolve(path: &Path) -> PathBuf {
    let normal = normalize(path);
    let mut existing = normal.clone();
    let mut rest = Vec::new();
    loop {
        if let Ok(canonical) = existing.canonicalize() {
            let mut out = canonical;
            for part in rest.iter().rev() {
                out.push(part);
            }
            // A symlink in the prefix may itself contain `..`.
            return normalize(&out);
        }
        match (
            existing.file_name().map(ToOwned::to_owned),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return normal,
        }
    }
}

/// Like [`resolve`], but the last component is not followed: the result
/// names the link itself when `path` is a symlink.
pub fn resolve_parent(path: &Path) -> PathBuf {
    let normal = normalize(path);
    match (normal.parent(), normal.file_name()) {
        (Some(parent), Some(name)) => resolve(parent).join(name),
        _ => normal,
    }
}

/// Whether `inner` is `outer` or lies below it (lexically).
pub fn is_within(inner: &Path, outer: &Path) -> bool {
    inner.starts_with(outer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_parent_components() {
        assert_eq!(
            normalize(Path::new("/srv/a/../b/./c")),
            PathBuf::from("/srv/b/c")
        );
        assert_eq!(
            normalize(Path::new("/srv/../../etc")),
            PathBuf::from("/etc")
        );
    }

    #[test]
    fn resolves_symlinked_parents() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("real")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("escape")).unwrap();
        assert_eq!(
            resolve_parent(&root.join("escape/passwd")),
            PathBuf::from("/etc/passwd")
        );
        assert_eq!(resolve_parent(&root.join("escape")), root.join("escape"));
        assert_eq!(resolve(&root.join("real/new/x")), root.join("real/new/x"));
    }
}
