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
    let manifest_writer = io::BufWriter::with_capacity(256 * 1024, blobs.writer()?);
    // The manifest thread hashes file contents and writes manifest lines, in
    // order, while this thread reads and archives: each file is read once.
    let (sender, receiver) = std::sync::mpsc::sync_channel::<ToManifest>(256);
    std::thread::scope(|scope| {
        let manifest = scope.spawn(move || write_manifest(manifest_writer, receiver));
        let archived = archive_entries(blobs, source, root_name, exclude, &sender);
        drop(sender);
        let manifest = manifest.join().expect("the manifest thread does not panic");
        let (archive, size, files, entries) = archived?;
        Ok(Archived {
            archive,
            manifest: manifest?,
            size,
            files,
            entries,
        })
    })
}

/// What the archiving thread tells the manifest thread, in tree order.
enum ToManifest {
    /// Content of the current file.
    Chunk(Vec<u8>),
    /// The current file ended; its node waits for the content's sha256.
    File(Node),
    /// A directory, link or special file.
    Entry(Node),
}

fn write_manifest(
    mut out: io::BufWriter<rewind_ledger::blob::BlobWriter>,
    receiver: std::sync::mpsc::Receiver<ToManifest>,
) -> Result<Digest, MigrateError> {
    let mut hasher = Sha256::new();
    for message in receiver {
        let node = match message {
            ToManifest::Chunk(chunk) => {
                hasher.update(&chunk);
                continue;
            }
            ToManifest::File(mut node) => {
                node.sha256 = Some(Digest(std::mem::take(&mut hasher).finalize().into()));
                node
            }
            ToManifest::Entry(node) => node,
        };
        out.write_all(node.line().as_bytes())?;
        out.write_all(b"\n")?;
    }
    Ok(out
        .into_inner()
        .map_err(|error| error.into_error())?
        .finish()?)
}

/// A file reader that passes every chunk on to the manifest thread.
struct ChunkReader<'a> {
    inner: fs_err::File,
    sender: &'a std::sync::mpsc::SyncSender<ToManifest>,
}

impl Read for ChunkReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        if read > 0 {
            self.sender
                .send(ToManifest::Chunk(buf[..read].to_vec()))
                .map_err(|_| io::Error::other("the manifest writer stopped"))?;
        }
        Ok(read)
    }
}

fn archive_entries(
    blobs: &BlobStore,
    source: &Path,
    root_name: Option<&str>,
    exclude: &Exclude,
    sender: &std::sync::mpsc::SyncSender<ToManifest>,
) -> Result<(Digest, u64, u64, u64), MigrateError> {
    let send = |message: ToManifest| {
        sender
            .send(message)
            .map_err(|_| io::Error::other("the manifest writer stopped"))
    };
    let archive_writer = blobs.writer()?;
    let mut encoder = zstd::Encoder::new(archive_writer, LEVEL)?;
    // Compression runs on worker threads (as `zstd -T0`).
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
        let manifest_name = name.to_string_lossy().into_owned();
        match file_type {
            FileType::File => {
                files += 1;
                let mut reader = ChunkReader {
                    inner: fs_err::File::open(path)?,
                    sender,
                };
                builder.append_data(&mut header, &name, &mut reader)?;
                // The sha256 is filled in by the manifest thread.
                let node =
                    Node::from_metadata(path, manifest_name, &metadata, Some(Digest::default()))?;
                send(ToManifest::File(node))?;
            }
            FileType::Dir | FileType::Symlink | FileType::Other => {
                match file_type {
                    FileType::Dir if in_archive => {
                        builder.append_data(&mut header, &name, io::empty())?
                    }
                    FileType::Symlink => {
                        let target = fs_err::read_link(path)?;
                        builder.append_link(&mut header, &name, &target)?;
                    }
                    FileType::Dir | FileType::File | FileType::Other => {}
                }
                send(ToManifest::Entry(Node::from_metadata(
                    path,
                    manifest_name,
                    &metadata,
                    None,
                )?))?;
            }
        }
        entries += 1;
    }
    let buffered = builder.into_inner()?;
    let encoder = buffered.into_inner().map_err(|error| error.into_error())?;
    let archive_writer = encoder.finish()?;
    let size = archive_writer.len();
    let archive = archive_writer.finish()?;
    Ok((archive, size, files, entries))
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
