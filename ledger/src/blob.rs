//! The content-addressed blob store: `blobs/ab/cdef…`, named by sha256.
//!
//! Blobs are written to a temporary file, fsynced, renamed into place, and the
//! directory fsynced; a blob that exists is therefore complete. Reads verify
//! the content against the name.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::bytes::Digest;
use crate::error::{LedgerError, Result};

/// The blob store of one ledger.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    pub fn new(root: impl Into<PathBuf>) -> BlobStore {
        BlobStore { root: root.into() }
    }

    /// Where the blob with this digest lives.
    pub fn path_of(&self, digest: &Digest) -> PathBuf {
        let hex = digest.to_hex();
        self.root.join(&hex[..2]).join(&hex[2..])
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path_of(digest).is_file()
    }

    /// Stores bytes; returns their digest.
    pub fn put(&self, data: &[u8]) -> Result<Digest> {
        let mut writer = self.writer()?;
        writer.write_all(data)?;
        writer.finish()
    }

    /// Stores a stream; returns its digest.
    pub fn put_reader(&self, reader: &mut impl Read) -> Result<Digest> {
        let mut writer = self.writer()?;
        io::copy(reader, &mut writer)?;
        writer.finish()
    }

    /// A writer whose content becomes a blob on `finish`.
    pub fn writer(&self) -> Result<BlobWriter> {
        fs_err::create_dir_all(&self.root)?;
        let file = tempfile::NamedTempFile::new_in(&self.root).map_err(|source| {
            io::Error::new(
                source.kind(),
                format!(
                    "creating a temporary blob in {}: {source}",
                    self.root.display()
                ),
            )
        })?;
        Ok(BlobWriter {
            root: self.root.clone(),
            file: Some(file),
            hasher: Sha256::new(),
            len: 0,
        })
    }

    /// Reads a blob and checks it against its digest.
    pub fn get(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.path_of(digest);
        let data = match fs_err::read(&path) {
            Ok(data) => data,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Err(LedgerError::BlobMissing { digest: *digest });
            }
            Err(error) => return Err(error.into()),
        };
        let actual = Digest::of(&data);
        if actual != *digest {
            return Err(LedgerError::BlobCorrupt {
                digest: *digest,
                actual,
            });
        }
        Ok(data)
    }

    /// Opens a blob for streaming; the caller verifies with [`BlobStore::check`]
    /// when it needs to, since streaming readers see the content only once.
    pub fn open(&self, digest: &Digest) -> Result<fs_err::File> {
        let path = self.path_of(digest);
        if !path.is_file() {
            return Err(LedgerError::BlobMissing { digest: *digest });
        }
        Ok(fs_err::File::open(path)?)
    }

    /// Re-hashes a stored blob.
    pub fn check(&self, digest: &Digest) -> Result<()> {
        let mut file = self.open(digest)?;
        let mut hasher = Sha256::new();
        io::copy(&mut file, &mut hasher)?;
        let actual = Digest(hasher.finalize().into());
        if actual != *digest {
            return Err(LedgerError::BlobCorrupt {
                digest: *digest,
                actual,
            });
        }
        Ok(())
    }
}

/// Streams content into the blob store.
pub struct BlobWriter {
    root: PathBuf,
    file: Option<tempfile::NamedTempFile>,
    hasher: Sha256,
    len: u64,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Makes the content durable under its digest.
    pub fn finish(mut self) -> Result<Digest> {
        let digest = Digest(std::mem::take(&mut self.hasher).finalize().into());
        let file = self.file.take().expect("finish is called once");
        let dir = self.root.join(&digest.to_hex()[..2]);
        let target = dir.join(&digest.to_hex()[2..]);
        if target.is_file() {
            return Ok(digest);
        }
        file.as_file().sync_all()?;
        fs_err::create_dir_all(&dir)?;
        file.persist(&target).map_err(|error| {
            io::Error::new(
                error.error.kind(),
                format!("storing blob {}: {}", target.display(), error.error),
            )
        })?;
        sync_dir(&dir)?;
        sync_dir(&self.root)?;
        Ok(digest)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.file.as_mut().expect("not finished").write(buf)?;
        self.hasher.update(&buf[..written]);
        self.len += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("not finished").flush()
    }
}

/// Fsyncs a directory so that renames and creations in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs_err::File::open(dir)?.sync_all()
}
