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

/// Resolves a path the way the kernel walks it: component by component,
/// following each symlink where it stands before a later `..` applies, so
/// that `root/link/../x` is judged where it really leads. Once a component
/// does not exist, the rest is folded as written (a missing directory has no
/// links to follow). A dangling symlink is followed by its text.
pub fn resolve(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    let mut exists = true;
    for component in path.components() {
        match component {
            Component::RootDir | Component::Prefix(_) => out.push(component.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => {
                out.push(name);
                if !exists {
                    continue;
                }
                match std::fs::symlink_metadata(&out) {
                    Ok(meta) if meta.file_type().is_symlink() => match out.canonicalize() {
                        Ok(target) => out = target,
                        Err(_) => {
                            // Dangling: where creating through it would land.
                            let target = std::fs::read_link(&out).unwrap_or_default();
                            out.pop();
                            out = normalize(&out.join(target));
                            exists = false;
                        }
                    },
                    Ok(_) => {}
                    Err(_) => exists = false,
                }
            }
        }
    }
    out
}

/// Like [`resolve`], but a last component that is a name is not followed:
/// the result names the link itself when `path` is a symlink.
pub fn resolve_parent(path: &Path) -> PathBuf {
    match (path.parent(), path.components().next_back()) {
        (Some(parent), Some(Component::Normal(name))) => resolve(parent).join(name),
        _ => resolve(path),
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

    /// Regression: `..` after a symlink leads where the kernel takes it,
    /// not where folding the text would.
    #[test]
    fn parent_components_apply_after_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        let root = base.join("root");
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::fs::create_dir_all(base.join("outside/sub")).unwrap();
        std::os::unix::fs::symlink(base.join("outside/sub"), root.join("l")).unwrap();
        let sneaky = root.join("l/../pwned");
        assert_eq!(resolve_parent(&sneaky), base.join("outside/pwned"));
        assert!(!is_within(&resolve_parent(&sneaky), &root));
        assert_eq!(resolve_parent(&root.join("real/../x")), root.join("x"));
        // A dangling link is judged by where it points.
        std::os::unix::fs::symlink(base.join("outside/missing"), root.join("dangling")).unwrap();
        assert_eq!(
            resolve(&root.join("dangling/new")),
            base.join("outside/missing/new")
        );
    }
}
