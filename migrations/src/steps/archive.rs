//! Archives (tar + zstd) streamed into the blob store, with a per-file
//! sha256 manifest written alongside in the same pass: each file is read
//! once, hashed while it is archived. Shared by `backup` (and `backups
//! verify|restore`) and by `remove`, which stashes what it removes.
//!
//! Entries keep modes, ownership, mtimes, symlinks and empty directories.
//! The manifest has the line format of [`crate::tree`], so a restored
//! archive can be compared with the manifest of the original tree.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;

use rewind_ledger::{BlobStore, Digest, FileType};
use sha2::{Digest as _, Sha256};

use crate::error::MigrateError;
use crate::tree::{Node, file_type_of};

/// zstd level of archives, as `zstd -3`.
pub const LEVEL: i32 = 3;

/// What [`write_archive`] stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    pub archive: Digest,
    pub manifest: Digest,
    /// Compressed size of the archive.
    pub size: u64,
    /// Regular files archived.
    pub files: u64,
    /// Every entry (files, directories, links) in the manifest.
    pub entries: u64,
}

/// Which entries to leave out: glob patterns matched against the path
/// relative to the archived root, and against the entry's name.
#[derive(Debug, Clone, Default)]
pub struct Exclude {
    patterns: Vec<glob::Pattern>,
}

impl Exclude {
    pub fn new(patterns: &[String]) -> Result<Exclude, glob::PatternError> {
        Ok(Exclude {
            patterns: patterns
                .iter()
                .map(|p| glob::Pattern::new(p.trim_end_matches('/')))
                .collect::<Result<_, _>>()?,
        })
    }

    fn excludes(&self, relative: &Path) -> bool {
        let name = relative
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let relative = relative.to_string_lossy();
        self.patterns
            .iter()
            .any(|p| p.matches(&relative) || p.matches(&name))
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.hasher.update(&buf[..read]);
        Ok(read)
    }
}

/// Archives the tree at `source` into the blob store. With `root_name`,
/// the root itself is an entry under that name (a stash that restores the
/// path); without, entries are relative to the root, which is left out of
/// the archive but kept as `""` in the manifest.
pub fn write_archive(
    blobs: &BlobStore,
    source: &Path,
    root_name: Option<&str>,
    exclude: &Exclude,
) -> Result<Archived, MigrateError> {
    let archive_writer = blobs.writer()?;
    let mut manifest_writer = io::BufWriter::with_capacity(256 * 1024, blobs.writer()?);
    let mut encoder = zstd::Encoder::new(archive_writer, LEVEL)?;
    // Compression runs on worker threads (as `zstd -T0`) while this thread
    // reads, hashes and archives.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    encoder.multithread(u32::try_from(workers).unwrap_or(1))?;
    let mut builder = tar::Builder::new(io::BufWriter::with_capacity(1024 * 1024, encoder));
    builder.follow_symlinks(false);
    let mut files = 0u64;
    let mut entries = 0u64;
    let walker = walkdir::WalkDir::new(source)
        .follow_links(false)
        .follow_root_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|entry| {
            let relative = entry.path().strip_prefix(source).unwrap_or(entry.path());
            relative.as_os_str().is_empty() || !exclude.excludes(relative)
        });
    for entry in walker {
        let entry = entry.map_err(|error| {
            let path = error
                .path()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            io::Error::new(
                error
                    .io_error()
                    .map(io::Error::kind)
                    .unwrap_or(io::ErrorKind::Other),
                format!("cannot read {path}: {error}"),
            )
        })?;
        let path = entry.path();
        let relative = path.strip_prefix(source).unwrap_or(path);
        let name = match root_name {
            Some(root) if relative.as_os_str().is_empty() => Path::new(root).to_path_buf(),
            Some(root) => Path::new(root).join(relative),
            None => relative.to_path_buf(),
        };
        let metadata = fs_err::symlink_metadata(path)?;
        let file_type = file_type_of(&metadata);
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&metadata, tar::HeaderMode::Complete);
        let in_archive = !name.as_os_str().is_empty();
        let mut sha256 = None;
        match file_type {
            FileType::File => {
                files += 1;
                let file = fs_err::File::open(path)?;
                let mut reader = HashingReader {
                    inner: file,
                    hasher: Sha256::new(),
                };
                builder.append_data(&mut header, &name, &mut reader)?;
                sha256 = Some(Digest(reader.hasher.finalize().into()));
            }
            FileType::Dir if in_archive => {
                builder.append_data(&mut header, &name, io::empty())?;
            }
            FileType::Symlink => {
                let target = fs_err::read_link(path)?;
                builder.append_link(&mut header, &name, &target)?;
            }
            FileType::Dir | FileType::Other => {}
        }
        let node =
            Node::from_metadata(path, name.to_string_lossy().into_owned(), &metadata, sha256)?;
        manifest_writer.write_all(node.line().as_bytes())?;
        manifest_writer.write_all(b"\n")?;
        entries += 1;
    }
    let buffered = builder.into_inner()?;
    let encoder = buffered.into_inner().map_err(|error| error.into_error())?;
    let archive_writer = encoder.finish()?;
    let size = archive_writer.len();
    let archive = archive_writer.finish()?;
    let manifest = manifest_writer
        .into_inner()
        .map_err(|error| error.into_error())?
        .finish()?;
    Ok(Archived {
        archive,
        manifest,
        size,
        files,
        entries,
    })
}

/// Unpacks an archive blob into `into`, restoring modes, owners (when
/// permitted) and mtimes.
pub fn unpack(blobs: &BlobStore, archive: &Digest, into: &Path) -> Result<(), MigrateError> {
    let file = blobs.open(archive)?;
    let decoder = zstd::Decoder::new(file)?;
    let mut tar = tar::Archive::new(decoder);
    tar.set_preserve_permissions(true);
    tar.set_preserve_ownerships(is_root());
    tar.set_preserve_mtime(true);
    tar.set_unpack_xattrs(false);
    tar.set_overwrite(false);
    tar.unpack(into).map_err(|error| MigrateError::BadArchive {
        archive: archive.to_hex(),
        reason: format!("unpacking into {}: {error}", into.display()),
    })
}

/// Whether this process may give files away (restore their owners).
pub fn is_root() -> bool {
    // Our own files' uid is our effective uid; /proc is always there on Linux.
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// One difference found by [`verify_archive`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveProblem {
    pub path: String,
    pub problem: String,
}

/// Re-reads an archive and checks every entry against the manifest:
/// path, type, mode, owner, size, content sha256 and link target.
pub fn verify_archive(
    blobs: &BlobStore,
    archive: &Digest,
    manifest: &Digest,
) -> Result<(u64, Vec<ArchiveProblem>), MigrateError> {
    blobs.check(archive)?;
    let expected: Vec<String> = BufReader::new(blobs.open(manifest)?)
        .lines()
        .collect::<Result<_, _>>()?;
    let decoder = zstd::Decoder::new(blobs.open(archive)?)?;
    let mut tar = tar::Archive::new(decoder);
    let mut actual = Vec::new();
    for entry in tar.entries()? {
        let mut entry = entry?;
        let header = entry.header().clone();
        let path = entry
            .path()?
            .to_string_lossy()
            .trim_end_matches('/')
            .to_owned();
        let file_type = match header.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => FileType::File,
            tar::EntryType::Directory => FileType::Dir,
            tar::EntryType::Symlink => FileType::Symlink,
            _ => FileType::Other,
        };
        let mut sha256 = None;
        let mut size = 0;
        if file_type == FileType::File {
            let mut hasher = Sha256::new();
            size = io::copy(&mut entry, &mut hasher)?;
            sha256 = Some(Digest(hasher.finalize().into()));
        }
        let link = match file_type {
            FileType::Symlink => entry.link_name()?.map(|l| l.to_string_lossy().into_owned()),
            FileType::File | FileType::Dir | FileType::Other => None,
        };
        let node = Node {
            path,
            file_type,
            mode: header.mode()? & 0o7777,
            uid: u32::try_from(header.uid()?).unwrap_or(u32::MAX),
            gid: u32::try_from(header.gid()?).unwrap_or(u32::MAX),
            size,
            sha256,
            link,
        };
        actual.push(node.line());
    }
    // The root of a backup is in the manifest (as "") but not in the archive.
    let expected: Vec<&String> = expected
        .iter()
        .filter(|line| !line.ends_with(" \"\""))
        .collect();
    let mut problems = Vec::new();
    let mut actual_iter = actual.iter();
    for line in &expected {
        match actual_iter.next() {
            Some(found) if found == *line => {}
            Some(found) => problems.push(ArchiveProblem {
                path: line.to_string(),
                problem: format!("archive holds {found}"),
            }),
            None => problems.push(ArchiveProblem {
                path: line.to_string(),
                problem: "missing from the archive".into(),
            }),
        }
    }
    for extra in actual_iter {
        problems.push(ArchiveProblem {
            path: extra.clone(),
            problem: "in the archive but not in the manifest".into(),
        });
    }
    Ok((expected.len() as u64, problems))
}
