//! The journal: the same entries as the sled store, as JSONL export lines,
//! in a plain append-only file. It is written and fsynced before the store
//! for every batch, so it is the ledger's write-ahead log: after a crash the
//! store catches up from it, and `rewind repair` rebuilds a damaged store
//! from it. A journal line is byte for byte the line `audit export` prints.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::bytes::Digest;
use crate::canonical::{canonicalize, line, link, record_json};
use crate::error::{LedgerError, Result};
use crate::record::{Entry, Record};

/// The append side of the journal.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: fs_err::File,
}

impl Journal {
    /// Opens for appending, creating the file if needed. An incomplete last
    /// line (a crash in the middle of a write, before its fsync) is cut off:
    /// it was never acknowledged.
    pub fn open(path: &Path) -> Result<Journal> {
        let mut file = fs_err::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        let len = file.metadata()?.len();
        if len > 0 {
            let tail = complete_length(&mut file, len)?;
            if tail != len {
                file.file().set_len(tail)?;
                file.sync_all()?;
            }
        }
        Ok(Journal {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends complete lines (each ending in a newline) and makes them
    /// durable. On failure nothing of them stays: the file is cut back to
    /// where it was, so a later append never follows a torn line. (After a
    /// failed fsync the kernel may have dropped the pages; the ledger then
    /// refuses further appends until it is opened again.)
    pub fn append(&mut self, lines: &[u8]) -> Result<()> {
        debug_assert!(lines.is_empty() || lines.ends_with(b"\n"));
        let before = self.file.metadata()?.len();
        let written = self
            .file
            .write_all(lines)
            .and_then(|()| self.file.file().sync_data());
        if let Err(error) = written {
            let _ = self.file.file().set_len(before);
            return Err(error.into());
        }
        Ok(())
    }
}

/// The length of the file up to and including its last newline.
fn complete_length(file: &mut fs_err::File, len: u64) -> Result<u64> {
    let mut end = len;
    let mut buf = vec![0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(pos) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start + pos as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// One line of a journal, as read.
#[derive(Debug, Clone)]
pub struct RawLine {
    /// 1-based line number in the file.
    pub number: u64,
    /// The line without its newline.
    pub bytes: Vec<u8>,
}

/// Reads the complete lines of a journal (an incomplete last line is skipped:
/// a writer may be in the middle of it).
pub struct JournalReader {
    path: PathBuf,
    reader: BufReader<fs_err::File>,
    number: u64,
}

impl JournalReader {
    pub fn open(path: &Path) -> Result<JournalReader> {
        let file = fs_err::File::open(path)?;
        Ok(JournalReader {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 20, file),
            number: 0,
        })
    }

    /// Reads the next complete line into `bytes` (without its newline) and
    /// returns its number, or `None` at the end; reuses the buffer.
    pub fn next_into(&mut self, bytes: &mut Vec<u8>) -> Result<Option<u64>> {
        bytes.clear();
        let read = self.reader.read_until(b'\n', bytes)?;
        if read == 0 || !bytes.ends_with(b"\n") {
            return Ok(None);
        }
        bytes.pop();
        self.number += 1;
        Ok(Some(self.number))
    }

    /// The next complete line, or `None` at the end.
    pub fn next_line(&mut self) -> Result<Option<RawLine>> {
        let mut bytes = Vec::with_capacity(512);
        let read = self.reader.read_until(b'\n', &mut bytes)?;
        if read == 0 || !bytes.ends_with(b"\n") {
            return Ok(None);
        }
        bytes.pop();
        self.number += 1;
        Ok(Some(RawLine {
            number: self.number,
            bytes,
        }))
    }

    /// Opens at a byte offset where a line starts, numbering that line
    /// `number` (see [`offset_after_seq`]).
    pub fn open_at(path: &Path, offset: u64, number: u64) -> Result<JournalReader> {
        let mut file = fs_err::File::open(path)?;
        file.seek(SeekFrom::Start(offset))?;
        Ok(JournalReader {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 16, file),
            number: number.saturating_sub(1),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The byte offset where the first complete line with a seq greater than
/// `after` starts (the end of the complete lines if there is none), found by
/// reading line starts backwards from the end: opening a ledger after a
/// crash needs only the tail of the journal, not all of it. `None` when a
/// line on the way does not start with `{"seq":N,` — the caller then reads
/// from the start, which reports the damage properly.
pub fn offset_after_seq(path: &Path, after: u64) -> Result<Option<u64>> {
    use std::os::unix::fs::FileExt;
    let mut file = fs_err::File::open(path)?;
    let len = file.metadata()?.len();
    let complete = complete_length(&mut file, len)?;
    if after == 0 || complete == 0 {
        return Ok(Some(0));
    }
    let seq_at = |offset: u64| -> Result<Option<u64>> {
        let mut start = [0u8; 32];
        let read = file.file().read_at(&mut start, offset)?;
        let Some(rest) = start[..read].strip_prefix(b"{\"seq\":") else {
            return Ok(None);
        };
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || rest.get(digits) != Some(&b',') {
            return Ok(None);
        }
        Ok(std::str::from_utf8(&rest[..digits])
            .ok()
            .and_then(|text| text.parse().ok()))
    };
    let mut answer = complete;
    // The newline that ends a line is at `end - 1`; the line starts after the
    // newline before it, or at 0.
    let mut chunk = vec![0u8; 1 << 16];
    let mut end = complete - 1;
    loop {
        let from = end.saturating_sub(chunk.len() as u64);
        let part = &mut chunk[..(end - from) as usize];
        file.file().read_exact_at(part, from)?;
        let mut cursor = part.len();
        while let Some(newline) = part[..cursor].iter().rposition(|&b| b == b'\n') {
            let start = from + newline as u64 + 1;
            match seq_at(start)? {
                None => return Ok(None),
                Some(seq) if seq > after => answer = start,
                Some(_) => return Ok(Some(answer)),
            }
            cursor = newline;
        }
        if from == 0 {
            // The first line of the file.
            return match seq_at(0)? {
                None => Ok(None),
                Some(seq) if seq > after => Ok(Some(0)),
                Some(_) => Ok(Some(answer)),
            };
        }
        end = from;
    }
}

impl Iterator for JournalReader {
    type Item = Result<RawLine>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_line().transpose()
    }
}

/// Parses an export or journal line and checks that its hash follows from
/// its `prev` and its record. Does not check that `prev` links to anything.
pub fn parse_line(raw: &RawLine, path: &Path) -> Result<Entry> {
    let fail = |reason: String| LedgerError::Journal {
        path: path.to_path_buf(),
        line: raw.number,
        reason,
    };
    let value: Value =
        serde_json::from_slice(&raw.bytes).map_err(|error| fail(format!("not JSON: {error}")))?;
    let field = |name: &str| {
        value
            .get(name)
            .ok_or_else(|| fail(format!("no \"{name}\" field")))
    };
    let seq = field("seq")?
        .as_u64()
        .ok_or_else(|| fail("\"seq\" is not a whole number".into()))?;
    let digest = |name: &str| {
        field(name)?
            .as_str()
            .and_then(Digest::from_hex)
            .ok_or_else(|| fail(format!("\"{name}\" is not 64 hex characters")))
    };
    let prev = digest("prev")?;
    let hash = digest("hash")?;
    let record_value = field("record")?;
    let canonical = canonicalize(record_value).map_err(|error| fail(error.0))?;
    let record: Record = serde_json::from_value(record_value.clone())
        .map_err(|error| fail(format!("record does not parse: {error}")))?;
    if record_json(&record) != canonical {
        return Err(fail("record has fields this rewind does not know".into()));
    }
    if record.seq != seq {
        return Err(fail(format!(
            "line says seq {seq} but its record says {}",
            record.seq
        )));
    }
    if link(&prev, &canonical) != hash {
        return Err(fail(format!(
            "seq {seq}: hash does not match prev and record"
        )));
    }
    if line(seq, &prev, &hash, &canonical) != raw.bytes {
        return Err(fail(format!("seq {seq}: line is not in canonical form")));
    }
    Ok(Entry { hash, prev, record })
}
