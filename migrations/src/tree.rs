//! Manifests and digests of file trees: path, type, mode, owner, content
//! sha256 and symlink target of every entry, in path order.
//!
//! One line per entry (the format of backup manifests too):
//!
//! ```text
//! file 0644 1000:1000 12 <sha256> "web/index.html"
//! dir 0755 1000:1000 0 - "web"
//! symlink 0777 1000:1000 0 - "web/current" -> "releases/3"
//! ```
//!
//! Paths are relative to the tree's root (`""` is the root itself) and
//! JSON-quoted so that spaces, newlines and unicode survive. Modification
//! times are deliberately left out: rollback restores content and modes,
//! and an identical manifest means identical content, not identical clocks.
//! The digest of a tree is the sha256 of its manifest lines; it is computed
//! streaming, so memory stays flat in the size of the tree.

use std::fmt;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use rewind_ledger::{Digest, FileType};
use sha2::{Digest as _, Sha256};

/// One entry of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub path: String,
    pub file_type: FileType,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub sha256: Option<Digest>,
    pub link: Option<String>,
}

/// A whole tree, in path order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    pub nodes: Vec<Node>,
}

/// One way two manifests differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub path: String,
    /// `missing`, `extra`, `type`, `mode`, `owner`, `content`, `link`.
    pub what: &'static str,
    pub expected: String,
    pub actual: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?}: {} (expected {}, found {})",
            self.path, self.what, self.expected, self.actual
        )
    }
}

/// The type of what `metadata` describes.
pub fn file_type_of(metadata: &std::fs::Metadata) -> FileType {
    let kind = metadata.file_type();
    if kind.is_symlink() {
        FileType::Symlink
    } else if kind.is_dir() {
        FileType::Dir
    } else if kind.is_file() {
        FileType::File
    } else {
        FileType::Other
    }
}

/// The short name used in manifest lines.
pub fn type_word(file_type: FileType) -> &'static str {
    match file_type {
        FileType::File => "file",
        FileType::Dir => "dir",
        FileType::Symlink => "symlink",
        FileType::Other => "other",
    }
}

/// The sha256 of a file's content, streamed.
pub fn file_sha256(path: &Path) -> io::Result<Digest> {
    let mut file = fs_err::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(Digest(hasher.finalize().into()))
}

impl Node {
    /// Describes one path (not following a final symlink); `relative` is
    /// the name it gets in the manifest.
    pub fn of(path: &Path, relative: String) -> io::Result<Node> {
        let metadata = fs_err::symlink_metadata(path)?;
        Node::from_metadata(path, relative, &metadata, None)
    }

    /// Like [`Node::of`] with the metadata at hand; `sha256` may be given
    /// by a caller that already hashed the content while reading it.
    pub fn from_metadata(
        path: &Path,
        relative: String,
        metadata: &std::fs::Metadata,
        sha256: Option<Digest>,
    ) -> io::Result<Node> {
        let file_type = file_type_of(metadata);
        let (size, sha256, link) = match file_type {
            FileType::File => (
                metadata.len(),
                Some(match sha256 {
                    Some(digest) => digest,
                    None => file_sha256(path)?,
                }),
                None,
            ),
            FileType::Symlink => (
                0,
                None,
                Some(fs_err::read_link(path)?.to_string_lossy().into_owned()),
            ),
            FileType::Dir | FileType::Other => (0, None, None),
        };
        Ok(Node {
            path: relative,
            file_type,
            mode: metadata.permissions().mode() & 0o7777,
            uid: metadata.uid(),
            gid: metadata.gid(),
            size,
            sha256,
            link,
        })
    }

    /// The manifest line, without its newline.
    pub fn line(&self) -> String {
        let quoted = serde_json::to_string(&self.path).unwrap_or_default();
        let sha = self
            .sha256
            .map(|d| d.to_hex())
            .unwrap_or_else(|| "-".into());
        let mut line = format!(
            "{} {:04o} {}:{} {} {} {}",
            type_word(self.file_type),
            self.mode,
            self.uid,
            self.gid,
            self.size,
            sha,
            quoted
        );
        if let Some(link) = &self.link {
            line.push_str(" -> ");
            line.push_str(&serde_json::to_string(link).unwrap_or_default());
        }
        line
    }
}

/// Visits every entry of the tree at `root` (the root first, then in path
/// order), without following symlinks. `root` may be a file or a symlink.
pub fn walk(root: &Path, mut visit: impl FnMut(&Path, Node) -> io::Result<()>) -> io::Result<()> {
    for entry in walkdir::WalkDir::new(root)
        .follow_links(false)
        .follow_root_links(false)
        .sort_by_file_name()
    {
        let entry = entry.map_err(|error| {
            let path = error
                .path()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            io::Error::other(format!("reading {path}: {error}"))
        })?;
        let relative = entry
            .path()
            .strip_prefix(root)
            .unwrap_or(entry.path())
            .to_string_lossy()
            .into_owned();
        let metadata = entry.metadata().map_err(|error| {
            io::Error::other(format!("reading {}: {error}", entry.path().display()))
        })?;
        let node = Node::from_metadata(entry.path(), relative, &metadata, None)?;
        visit(entry.path(), node)?;
    }
    Ok(())
}

/// The manifest of a tree.
pub fn manifest(root: &Path) -> io::Result<Manifest> {
    let mut nodes = Vec::new();
    walk(root, |_, node| {
        nodes.push(node);
        Ok(())
    })?;
    Ok(Manifest { nodes })
}

/// Writes the manifest lines of a tree, streamed. Written into a blob, the
/// blob's name is the tree's digest, so an event carrying a digest can
/// find the manifest it summarises.
pub fn write_manifest(root: &Path, out: &mut impl std::io::Write) -> io::Result<()> {
    walk(root, |_, node| {
        out.write_all(node.line().as_bytes())?;
        out.write_all(b"\n")
    })
}

/// Parses a manifest line back into a node.
pub fn parse_line(line: &str) -> Option<Node> {
    let mut fields = line.splitn(6, ' ');
    let file_type = match fields.next()? {
        "file" => FileType::File,
        "dir" => FileType::Dir,
        "symlink" => FileType::Symlink,
        "other" => FileType::Other,
        _ => return None,
    };
    let mode = u32::from_str_radix(fields.next()?, 8).ok()?;
    let (uid, gid) = fields.next()?.split_once(':')?;
    let size = fields.next()?.parse().ok()?;
    let sha256 = match fields.next()? {
        "-" => None,
        hex => Some(Digest::from_hex(hex)?),
    };
    let rest = fields.next()?;
    let mut strings = serde_json::Deserializer::from_str(rest).into_iter::<String>();
    let path = strings.next()?.ok()?;
    let consumed = strings.byte_offset();
    let link = match rest[consumed..].strip_prefix(" -> ") {
        Some(link) => Some(serde_json::from_str(link).ok()?),
        None => None,
    };
    Some(Node {
        path,
        file_type,
        mode,
        uid: uid.parse().ok()?,
        gid: gid.parse().ok()?,
        size,
        sha256,
        link,
    })
}

/// Parses manifest text.
pub fn parse_manifest(text: &str) -> Option<Manifest> {
    Some(Manifest {
        nodes: text.lines().map(parse_line).collect::<Option<_>>()?,
    })
}

/// The digest of a tree: sha256 of its manifest lines, streamed.
pub fn digest(root: &Path) -> io::Result<Digest> {
    let mut hasher = Sha256::new();
    walk(root, |_, node| {
        hasher.update(node.line().as_bytes());
        hasher.update(b"\n");
        Ok(())
    })?;
    Ok(Digest(hasher.finalize().into()))
}

impl Manifest {
    /// The manifest as text, one line per entry.
    pub fn text(&self) -> String {
        let mut text = String::new();
        for node in &self.nodes {
            text.push_str(&node.line());
            text.push('\n');
        }
        text
    }

    /// The digest of the manifest (equal to [`digest`] of the same tree).
    pub fn digest(&self) -> Digest {
        Digest::of(self.text().as_bytes())
    }

    /// How `actual` differs from `self`, in path order.
    pub fn diff(&self, actual: &Manifest) -> Vec<Difference> {
        let mut differences = Vec::new();
        let mut expected_iter = self.nodes.iter().peekable();
        let mut actual_iter = actual.nodes.iter().peekable();
        loop {
            match (expected_iter.peek(), actual_iter.peek()) {
                (None, None) => break,
                (Some(e), None) => {
                    differences.push(missing(e));
                    expected_iter.next();
                }
                (None, Some(a)) => {
                    differences.push(extra(a));
                    actual_iter.next();
                }
                (Some(e), Some(a)) => {
                    // walkdir sorts siblings by name, so compare by components.
                    match path_order(&e.path, &a.path) {
                        std::cmp::Ordering::Less => {
                            differences.push(missing(e));
                            expected_iter.next();
                        }
                        std::cmp::Ordering::Greater => {
                            differences.push(extra(a));
                            actual_iter.next();
                        }
                        std::cmp::Ordering::Equal => {
                            differences.extend(compare(e, a));
                            expected_iter.next();
                            actual_iter.next();
                        }
                    }
                }
            }
        }
        differences
    }
}

fn path_order(a: &str, b: &str) -> std::cmp::Ordering {
    Path::new(a).components().cmp(Path::new(b).components())
}

fn missing(node: &Node) -> Difference {
    Difference {
        path: node.path.clone(),
        what: "missing",
        expected: type_word(node.file_type).into(),
        actual: "nothing".into(),
    }
}

fn extra(node: &Node) -> Difference {
    Difference {
        path: node.path.clone(),
        what: "extra",
        expected: "nothing".into(),
        actual: type_word(node.file_type).into(),
    }
}

/// How one entry differs from what was expected.
pub fn compare(expected: &Node, actual: &Node) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut push = |what: &'static str, e: String, a: String| {
        out.push(Difference {
            path: expected.path.clone(),
            what,
            expected: e,
            actual: a,
        })
    };
    if expected.file_type != actual.file_type {
        push(
            "type",
            type_word(expected.file_type).into(),
            type_word(actual.file_type).into(),
        );
        return out;
    }
    if expected.mode != actual.mode {
        push(
            "mode",
            format!("{:04o}", expected.mode),
            format!("{:04o}", actual.mode),
        );
    }
    if (expected.uid, expected.gid) != (actual.uid, actual.gid) {
        push(
            "owner",
            format!("{}:{}", expected.uid, expected.gid),
            format!("{}:{}", actual.uid, actual.gid),
        );
    }
    if expected.sha256 != actual.sha256 {
        let short = |d: Option<Digest>| {
            d.map(|d| format!("sha256 {}", d.short()))
                .unwrap_or_default()
        };
        push("content", short(expected.sha256), short(actual.sha256));
    }
    if expected.link != actual.link {
        push(
            "link",
            expected.link.clone().unwrap_or_default(),
            actual.link.clone().unwrap_or_default(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_digest_matches_streamed_digest_and_diff_names_changes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a b/ü")).unwrap();
        std::fs::write(root.join("a b/ü/x.txt"), "hello").unwrap();
        std::os::unix::fs::symlink("a b", root.join("link")).unwrap();
        let before = manifest(root).unwrap();
        assert_eq!(before.digest(), digest(root).unwrap());
        std::fs::write(root.join("a b/ü/x.txt"), "changed").unwrap();
        std::fs::set_permissions(root.join("a b"), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::create_dir(root.join("new")).unwrap();
        let after = manifest(root).unwrap();
        assert_eq!(parse_manifest(&after.text()).unwrap(), after);
        let whats: Vec<_> = before
            .diff(&after)
            .iter()
            .map(|d| (d.path.clone(), d.what))
            .collect();
        assert_eq!(
            whats,
            vec![
                ("a b".to_string(), "mode"),
                ("a b/ü/x.txt".to_string(), "content"),
                ("new".to_string(), "extra")
            ]
        );
    }
}
