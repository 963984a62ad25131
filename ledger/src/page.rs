//! Pages: how entries sit in the sled `events` tree.
//!
//! sled 0.34 spends about as much on each key it inserts as on the bytes
//! behind it, and manages far fewer keys a second than a ledger must append
//! events. So entries are packed: one sled value holds the entries of up to
//! [`PAGE_ENTRIES`] consecutive seqs, keyed by the big-endian seq of its
//! first entry. Pages never overlap, so the page holding seq `n` is the one
//! with the greatest key ≤ `n`.
//!
//! A page is stored as `[2][zstd frame, with checksum]` of its plain form;
//! the plain form is `[PAGE_FORMAT][count: u32 LE]` followed, for each entry, by
//! `[seq: u64 LE][length: u32 LE][stored entry]`, where a stored entry is what
//! `codec::encode_stored` makes (`[format][hash][bincode(record)]`). Each
//! entry names its own seq, so a removed, added or moved entry shows as
//! missing, extra or reordered, never as a silently shifted chain.

use std::ops::Range;

use sled::IVec;

use crate::error::{LedgerError, Result};

/// The most entries one page holds.
pub const PAGE_ENTRIES: usize = 256;

const PAGE_FORMAT: u8 = 1;
/// A page whose body (everything after this byte) is a zstd frame of a
/// `PAGE_FORMAT` page. Entries of one ledger repeat their actor, host, ledger
/// id and most field names, so pages shrink several times, and sled's cost
/// follows the bytes it is handed.
const PAGE_COMPRESSED: u8 = 2;
/// The largest page body a compressed page may expand to.
const PAGE_MAX_BYTES: usize = 64 << 20;

/// Builds one compressed page from consecutive entries.
pub fn encode_page<'a>(entries: impl IntoIterator<Item = (u64, &'a [u8])>) -> Vec<u8> {
    let plain = encode_plain_page(entries);
    let mut out = vec![PAGE_COMPRESSED];
    // With a checksum, so that a damaged page is found as such before its
    // entries are read.
    let mut compressor = zstd::bulk::Compressor::new(1).expect("a zstd context");
    compressor.include_checksum(true).expect("a zstd parameter");
    out.extend_from_slice(
        &compressor
            .compress(&plain)
            .expect("compressing into memory"),
    );
    out
}

/// Builds one uncompressed page from consecutive entries.
fn encode_plain_page<'a>(entries: impl IntoIterator<Item = (u64, &'a [u8])>) -> Vec<u8> {
    let mut out = vec![PAGE_FORMAT, 0, 0, 0, 0];
    let mut count: u32 = 0;
    for (seq, bytes) in entries {
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
        count += 1;
    }
    out[1..5].copy_from_slice(&count.to_le_bytes());
    out
}

/// Adds pages for consecutive entries to a sled batch.
pub fn write_pages(batch: &mut sled::Batch, entries: &[(u64, Vec<u8>)]) {
    for page in entries.chunks(PAGE_ENTRIES) {
        let value = encode_page(page.iter().map(|(seq, bytes)| (*seq, bytes.as_slice())));
        batch.insert(&page[0].0.to_be_bytes(), value);
    }
}

/// The entries of a page: each seq and where its stored bytes lie.
pub fn parse_page(key: &[u8], value: &[u8]) -> Result<Vec<(u64, Range<usize>)>> {
    let page_seq = seq_of_key(key)?;
    let corrupt = |reason: String| LedgerError::Corrupt {
        seq: page_seq,
        reason,
    };
    if value.len() < 5 {
        return Err(corrupt(format!(
            "the page starting at seq {page_seq} has {} bytes",
            value.len()
        )));
    }
    if value[0] != PAGE_FORMAT {
        return Err(corrupt(format!(
            "the page starting at seq {page_seq} has format {}",
            value[0]
        )));
    }
    let count = u32::from_le_bytes(value[1..5].try_into().expect("four bytes")) as usize;
    let mut entries = Vec::with_capacity(count.min(PAGE_ENTRIES * 4));
    let mut at = 5;
    for _ in 0..count {
        let Some(header) = value.get(at..at + 12) else {
            return Err(corrupt(format!(
                "the page starting at seq {page_seq} ends inside an entry header"
            )));
        };
        let seq = u64::from_le_bytes(header[..8].try_into().expect("eight bytes"));
        let len = u32::from_le_bytes(header[8..].try_into().expect("four bytes")) as usize;
        let start = at + 12;
        if start + len > value.len() {
            return Err(corrupt(format!(
                "the entry for seq {seq} runs past the end of its page"
            )));
        }
        entries.push((seq, start..start + len));
        at = start + len;
    }
    if at != value.len() {
        return Err(corrupt(format!(
            "the page starting at seq {page_seq} has {} trailing bytes",
            value.len() - at
        )));
    }
    Ok(entries)
}

/// The seq of a page key.
pub fn seq_of_key(key: &[u8]) -> Result<u64> {
    let array: [u8; 8] = key.try_into().map_err(|_| LedgerError::Corrupt {
        seq: 0,
        reason: format!("a key of {} bytes is not a seq", key.len()),
    })?;
    Ok(u64::from_be_bytes(array))
}

/// A parsed page: its bytes (shared with sled's cache) and its entries.
#[derive(Debug, Clone)]
pub struct Page {
    pub key: u64,
    pub value: IVec,
    pub entries: Vec<(u64, Range<usize>)>,
}

impl Page {
    fn load(key: IVec, value: IVec) -> Result<Page> {
        let value = match value.first() {
            Some(&PAGE_COMPRESSED) => {
                let plain =
                    zstd::bulk::decompress(&value[1..], PAGE_MAX_BYTES).map_err(|error| {
                        LedgerError::Corrupt {
                            seq: seq_of_key(&key).unwrap_or(0),
                            reason: format!("the page does not decompress: {error}"),
                        }
                    })?;
                IVec::from(plain)
            }
            _ => value,
        };
        let entries = parse_page(&key, &value)?;
        Ok(Page {
            key: seq_of_key(&key)?,
            value,
            entries,
        })
    }

    /// The stored bytes of `seq`, if this page holds it.
    pub fn get(&self, seq: u64) -> Option<&[u8]> {
        let index = self.entries.binary_search_by_key(&seq, |(s, _)| *s).ok()?;
        Some(&self.value[self.entries[index].1.clone()])
    }

    pub fn first_seq(&self) -> Option<u64> {
        self.entries.first().map(|(seq, _)| *seq)
    }

    pub fn last_seq(&self) -> Option<u64> {
        self.entries.last().map(|(seq, _)| *seq)
    }
}

/// The page that would hold `seq`, if any.
pub fn page_for(tree: &sled::Tree, seq: u64) -> Result<Option<Page>> {
    match tree.range(..=seq.to_be_bytes()).next_back() {
        Some(item) => {
            let (key, value) = item?;
            Page::load(key, value).map(Some)
        }
        None => Ok(None),
    }
}

/// The newest page that holds any entry (only a damaged store has empty ones).
pub fn last_page(tree: &sled::Tree) -> Result<Option<Page>> {
    for item in tree.iter().rev() {
        let (key, value) = item?;
        let page = Page::load(key, value)?;
        if !page.entries.is_empty() {
            return Ok(Some(page));
        }
    }
    Ok(None)
}

/// Iterates the stored entries with seq ≥ `from`, in page order.
pub fn entries_from(tree: &sled::Tree, from: u64) -> Entries {
    let start = match tree.range(..=from.to_be_bytes()).next_back() {
        Some(Ok((key, _))) => key.to_vec(),
        _ => from.to_be_bytes().to_vec(),
    };
    Entries {
        pages: tree.range(start..),
        page: None,
        index: 0,
        from,
        failed: false,
    }
}

/// An iterator of `(seq, page bytes, range of the entry)`.
pub struct Entries {
    pages: sled::Iter,
    page: Option<Page>,
    index: usize,
    from: u64,
    failed: bool,
}

impl Iterator for Entries {
    type Item = Result<(u64, IVec, Range<usize>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.failed {
                return None;
            }
            if let Some(page) = &self.page
                && let Some((seq, range)) = page.entries.get(self.index)
            {
                self.index += 1;
                if *seq < self.from {
                    continue;
                }
                return Some(Ok((*seq, page.value.clone(), range.clone())));
            }
            let loaded = self
                .pages
                .next()?
                .map_err(LedgerError::from)
                .and_then(|(key, value)| Page::load(key, value));
            match loaded {
                Ok(page) => {
                    self.page = Some(page);
                    self.index = 0;
                }
                Err(error) => {
                    self.failed = true;
                    return Some(Err(error));
                }
            }
        }
    }
}

/// Direct edits of stored entries, for tests that tamper with a store the
/// way an attacker with file access would. Never used by rewind itself.
#[doc(hidden)]
pub mod surgery {
    use super::*;

    /// The sled store in `store` (a ledger's `store` directory), opened
    /// directly, as an attacker with file access would. sled lets go of its
    /// file lock a moment after a ledger of this process closed (its
    /// background threads finish first), so a held lock is retried for up
    /// to two seconds.
    pub fn open_store(store: &std::path::Path) -> sled::Db {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            match sled::open(store) {
                Ok(db) => return db,
                Err(error)
                    if error.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(error) => panic!("opening {} directly: {error}", store.display()),
            }
        }
    }

    fn rewrite(tree: &sled::Tree, seq: u64, edit: impl FnOnce(&mut Vec<(u64, Vec<u8>)>)) {
        let page = page_for(tree, seq)
            .expect("readable page")
            .expect("a page holds the seq");
        let mut entries: Vec<(u64, Vec<u8>)> = page
            .entries
            .iter()
            .map(|(s, r)| (*s, page.value[r.clone()].to_vec()))
            .collect();
        edit(&mut entries);
        let value = encode_page(entries.iter().map(|(s, b)| (*s, b.as_slice())));
        tree.insert(page.key.to_be_bytes(), value)
            .expect("sled insert");
    }

    /// The stored bytes of an entry.
    pub fn read(tree: &sled::Tree, seq: u64) -> Option<Vec<u8>> {
        page_for(tree, seq)
            .ok()
            .flatten()
            .and_then(|page| page.get(seq).map(<[u8]>::to_vec))
    }

    /// Replaces the stored bytes of an entry.
    pub fn replace(tree: &sled::Tree, seq: u64, bytes: Vec<u8>) {
        rewrite(tree, seq, |entries| {
            let slot = entries
                .iter_mut()
                .find(|(s, _)| *s == seq)
                .expect("the entry exists");
            slot.1 = bytes;
        });
    }

    /// Removes an entry.
    pub fn remove(tree: &sled::Tree, seq: u64) {
        rewrite(tree, seq, |entries| entries.retain(|(s, _)| *s != seq));
    }

    /// Adds an entry after the newest one.
    pub fn push(tree: &sled::Tree, seq: u64, bytes: Vec<u8>) {
        let value = encode_page([(seq, bytes.as_slice())]);
        tree.insert(seq.to_be_bytes(), value).expect("sled insert");
    }

    /// Swaps the stored bytes of two entries (each keeps its slot's seq).
    pub fn swap(tree: &sled::Tree, a: u64, b: u64) {
        let first = read(tree, a).expect("entry a");
        let second = read(tree, b).expect("entry b");
        replace(tree, a, second);
        replace(tree, b, first);
    }
}
