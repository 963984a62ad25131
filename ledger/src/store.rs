//! The ledger on disk: a directory holding the marker, the lock, the sled
//! store, the journal and the blob store.
//!
//! ```text
//! .rewind/            mode 0700
//!   LEDGER            marker: format and ledger id
//!   lock              flock held by the one writer; holds its pid
//!   journal.jsonl     write-ahead journal, one export line per entry
//!   store/            sled: `events` (seq → entry), `index`, `meta`
//!   blobs/ab/cdef…    content-addressed blobs
//! ```
//!
//! One [`Ledger`] value is the one appender: it assigns seqs, chains, writes
//! the journal (fsync), then the store (flush + fsync). Indexes live in the
//! `index` tree and are rebuildable from `events` (`reindex`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::RangeInclusive;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::blob::{BlobStore, sync_dir};
use crate::bytes::Digest;
use crate::canonical::{genesis, link, record_json, write_line};
use crate::codec::{FORMAT_VERSION, decode_stored, encode_stored, set_stored_hash};
use crate::error::{LedgerError, Result};
use crate::event::Event;
use crate::journal::{Journal, JournalReader, offset_after_seq, parse_line};
use crate::page;
use crate::record::{Entry, Record, Timestamp};
use crate::subjects::{self, OpenGroup, SubjectEntry, Wanted};

const MARKER: &str = "LEDGER";
const MARKER_MAGIC: &str = "rewind-ledger";
const JOURNAL: &str = "journal.jsonl";
const STORE: &str = "store";
const LOCK: &str = "lock";
const INDEXED_THROUGH: &[u8] = b"\xffindexed_through";
/// The layout of the `index` tree; an index of another layout is dropped and
/// rebuilt from the events when the ledger is opened.
const INDEX_FORMAT: &[u8] = b"\xffindex_format";
/// 3: row keys rendered with `,` and `\` escaped in text values.
/// 4: `Compensated` and `DriftFound` also by the seq they are about (`u`).
const INDEX_FORMAT_VERSION: &[u8] = b"4";
/// The layout of the ledger's directory, in its marker file (the records'
/// own format is [`FORMAT_VERSION`], per record).
const LEDGER_FORMAT: u32 = 1;
/// How many events, or paths and rows, `catch_up_index` indexes in one sled
/// batch: events of a thousand rows name a thousand subjects each.
const CATCH_UP_EVENTS: usize = 50_000;
const CATCH_UP_SUBJECTS: usize = 1_000_000;

/// Who is appending, recorded in every envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub actor: String,
    pub host: String,
}

/// An event waiting for its seq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub run: Option<String>,
    pub event: Event,
}

impl Draft {
    pub fn new(run: Option<&str>, event: Event) -> Draft {
        Draft {
            run: run.map(str::to_owned),
            event,
        }
    }
}

/// What the marker file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub format: u32,
    pub ledger_id: String,
}

/// Which entries a query may need; the caller filters them further.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    pub run: Option<String>,
    pub target: Option<String>,
    /// A path; events on it and on anything below it match.
    pub path: Option<String>,
    /// A table, and optionally one row key as `render_key` writes it.
    pub table: Option<String>,
    pub key: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

/// The lock file, held while the ledger is open for writing.
#[derive(Debug)]
pub(crate) struct Lock {
    _file: File,
}

/// Why a process holds the lock: to append, or only to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Write,
    Read,
}

impl Access {
    fn word(self) -> &'static str {
        match self {
            Access::Write => "write",
            Access::Read => "read",
        }
    }
}

/// How long anyone waits for a holder that only reads.
const READER_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

pub(crate) fn acquire_lock(dir: &Path, access: Access) -> Result<Lock> {
    let path = dir.join(LOCK);
    let mut file = fs_err::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)?
        .into_parts()
        .0;
    // A child process forked by another thread of this process (a step's
    // command, a test's helper) shares the lock's open file until it execs;
    // give such a brief holder a moment before calling the ledger taken. A
    // holder that only reads (history, status, verify, an export) is waited
    // for: it finishes on its own, and a writer must not fail because of it.
    let started = std::time::Instant::now();
    let mut attempt = 0;
    let holder = loop {
        match file.try_lock() {
            Ok(()) => break None,
            Err(TryLockError::Error(source)) => return Err(source.into()),
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.seek(SeekFrom::Start(0));
                let _ = file.read_to_string(&mut text);
                let mut words = text.split_whitespace();
                let pid: Option<u32> = words.next().and_then(|word| word.parse().ok());
                let reading = words.next() == Some(Access::Read.word());
                let patient = if reading {
                    started.elapsed() < READER_PATIENCE
                } else {
                    attempt < 25
                };
                if !patient {
                    break Some(pid);
                }
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    };
    if let Some(holder) = holder {
        return Err(LedgerError::Locked {
            dir: dir.to_path_buf(),
            holder,
        });
    }
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    write!(file, "{} {}", std::process::id(), access.word())?;
    Ok(Lock { _file: file })
}

/// Reads and checks the marker of a ledger directory.
pub fn read_marker(dir: &Path) -> Result<Marker> {
    let path = dir.join(MARKER);
    if !path.is_file() {
        return Err(LedgerError::NotALedger {
            dir: dir.to_path_buf(),
        });
    }
    let text = fs_err::read_to_string(&path)?;
    let bad = |reason: &str| LedgerError::BadMarker {
        path: path.clone(),
        reason: reason.to_owned(),
    };
    let mut lines = text.lines();
    if lines.next() != Some(MARKER_MAGIC) {
        return Err(LedgerError::NotALedger {
            dir: dir.to_path_buf(),
        });
    }
    let mut fields = BTreeMap::new();
    for line in lines {
        let (key, value) = line
            .split_once(" = ")
            .ok_or_else(|| bad("a line is not `key = value`"))?;
        fields.insert(key.trim(), value.trim());
    }
    let format: u32 = fields
        .get("format")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad("no format"))?;
    if format > LEDGER_FORMAT {
        return Err(LedgerError::NewerFormat {
            dir: dir.to_path_buf(),
            found: format,
            supported: LEDGER_FORMAT,
        });
    }
    let ledger_id = fields.get("id").ok_or_else(|| bad("no id"))?.to_string();
    Ok(Marker { format, ledger_id })
}

/// The writable ledger: the one appender.
pub struct Ledger {
    dir: PathBuf,
    ledger_id: String,
    db: sled::Db,
    events: sled::Tree,
    index: sled::Tree,
    journal: Journal,
    blobs: BlobStore,
    head: (u64, Digest),
    last_time: Option<Timestamp>,
    origin: Origin,
    clock: Box<dyn Fn() -> Timestamp + Send + Sync>,
    caught_up: u64,
    /// How many events were indexed while opening (an index behind its
    /// events, or of another layout, rebuilt).
    indexed_on_open: u64,
    /// The seq and hash of the entry `get` read last: history reads runs
    /// of consecutive seqs, and the next entry's `prev` is this hash, so
    /// it need not be read again.
    last_page: Mutex<Option<page::Page>>,
    /// The store write of the newest batch, still running (see `append_batch`).
    pending: Mutex<Option<std::thread::JoinHandle<Result<()>>>>,
    /// Why this handle refuses to go on (see `settle`).
    broken: Mutex<Option<String>>,
    /// The newest group of the path and row index (see `subjects`), which
    /// the store writer continues with each batch.
    open_group: Arc<Mutex<OpenGroup>>,
    _lock: Lock,
}

impl Drop for Ledger {
    fn drop(&mut self) {
        // The journal holds the batch either way; this only spares the next
        // open a catch-up.
        let _ = self.settle();
    }
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("dir", &self.dir)
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// Creates a new ledger in `dir` (created with mode 0700 if absent; an
    /// existing directory must be empty).
    pub fn init(dir: &Path, ledger_id: &str, origin: Origin) -> Result<Ledger> {
        if dir.join(MARKER).exists() {
            return Err(LedgerError::AlreadyInitialized {
                dir: dir.to_path_buf(),
            });
        }
        if dir.exists() {
            if fs_err::read_dir(dir)?.next().is_some() {
                return Err(LedgerError::DirNotEmpty {
                    dir: dir.to_path_buf(),
                });
            }
        } else {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| {
                    std::io::Error::new(
                        source.kind(),
                        format!("creating {}: {source}", dir.display()),
                    )
                })?;
        }
        let lock = acquire_lock(dir, Access::Write)?;
        let marker = format!("{MARKER_MAGIC}\nformat = {LEDGER_FORMAT}\nid = {ledger_id}\n");
        let temp = dir.join(format!("{MARKER}.tmp"));
        fs_err::write(&temp, marker)?;
        fs_err::File::open(&temp)?.sync_all()?;
        fs_err::File::create(dir.join(JOURNAL))?.sync_all()?;
        fs_err::rename(&temp, dir.join(MARKER))?;
        sync_dir(dir)?;
        Self::open_locked(dir, lock, origin)
    }

    /// Opens an existing ledger for writing. Refuses if another process
    /// holds it to write; waits for one that only reads.
    pub fn open(dir: &Path, origin: Origin) -> Result<Ledger> {
        Self::open_as(dir, origin, Access::Write)
    }

    /// Opens an existing ledger, saying whether this process will append.
    /// Only one process holds a ledger at a time (sled allows no more); the
    /// access tells others whether to wait for it or read the journal.
    pub fn open_as(dir: &Path, origin: Origin, access: Access) -> Result<Ledger> {
        read_marker(dir)?;
        let lock = acquire_lock(dir, access)?;
        Self::open_locked(dir, lock, origin)
    }

    pub(crate) fn open_locked(dir: &Path, lock: Lock, origin: Origin) -> Result<Ledger> {
        let marker = read_marker(dir)?;
        let db = open_store(dir)?;
        let events = db.open_tree("events")?;
        let index = db.open_tree("index")?;
        let journal = Journal::open(&dir.join(JOURNAL))?;
        let mut ledger = Ledger {
            dir: dir.to_path_buf(),
            head: (0, genesis(&marker.ledger_id)),
            ledger_id: marker.ledger_id,
            db,
            events,
            index,
            journal,
            blobs: BlobStore::new(dir.join("blobs")),
            last_time: None,
            origin,
            clock: Box::new(Timestamp::now),
            caught_up: 0,
            indexed_on_open: 0,
            last_page: Mutex::new(None),
            pending: Mutex::new(None),
            broken: Mutex::new(None),
            open_group: Arc::new(Mutex::new(OpenGroup::default())),
            _lock: lock,
        };
        if let Some(page) = page::last_page(&ledger.events)?
            && let Some(seq) = page.last_seq()
        {
            let (hash, record) =
                decode_stored(page.get(seq).expect("the page holds its last seq"), seq)?;
            ledger.head = (seq, hash);
            ledger.last_time = Some(record.recorded_at);
        }
        ledger.catch_up_from_journal()?;
        if ledger.index.get(INDEX_FORMAT)?.as_deref() != Some(INDEX_FORMAT_VERSION) {
            ledger.clear_index()?;
        }
        *ledger.lock_group() = OpenGroup::load(&ledger.index)?;
        ledger.indexed_on_open = ledger.catch_up_index()?;
        Ok(ledger)
    }

    /// Replays journal entries the store lacks: a crash after the journal's
    /// fsync and before the store's write leaves exactly that.
    fn catch_up_from_journal(&mut self) -> Result<()> {
        let path = self.dir.join(JOURNAL);
        // Only the lines after the store's head matter: find them from the
        // end, so that opening a large ledger does not read all its journal.
        let mut reader = match offset_after_seq(&path, self.head.0)? {
            Some(offset) => JournalReader::open_at(&path, offset, self.head.0 + 1)?,
            None => JournalReader::open(&path)?,
        };
        let mut missing = Vec::new();
        while let Some(raw) = reader.next_line()? {
            if raw.number <= self.head.0 {
                continue;
            }
            let entry = parse_line(&raw, &path)?;
            let expected_prev = missing
                .last()
                .map(|e: &Entry| e.hash)
                .unwrap_or(self.head.1);
            if entry.seq() != raw.number || entry.prev != expected_prev {
                return Err(LedgerError::Diverged {
                    reason: format!(
                        "journal line {} (seq {}) does not follow the store's head at seq {}",
                        raw.number,
                        entry.seq(),
                        self.head.0
                    ),
                });
            }
            missing.push(entry);
        }
        if missing.is_empty() {
            return Ok(());
        }
        self.caught_up = missing.len() as u64;
        let stored: Vec<(u64, Vec<u8>)> = missing
            .iter()
            .map(|entry| (entry.seq(), encode_stored(&entry.hash, &entry.record)))
            .collect();
        let mut batch = sled::Batch::default();
        page::write_pages(&mut batch, &stored);
        self.events.apply_batch(batch)?;
        self.make_store_durable()?;
        let last = missing.last().expect("not empty");
        self.head = (last.seq(), last.hash);
        self.last_time = Some(last.record.recorded_at);
        Ok(())
    }

    /// How many entries the store took over from the journal when it was opened.
    pub fn caught_up(&self) -> u64 {
        self.caught_up
    }

    /// How many events were indexed when the ledger was opened.
    pub fn indexed_on_open(&self) -> u64 {
        self.indexed_on_open
    }

    fn lock_group(&self) -> std::sync::MutexGuard<'_, OpenGroup> {
        self.open_group.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Indexes the events beyond the index's marker: after a crash between
    /// the journal and the store, after `repair`, or for `reindex`.
    fn catch_up_index(&mut self) -> Result<u64> {
        let indexed = match self.index.get(INDEXED_THROUGH)? {
            Some(bytes) => decode_key(&bytes)?,
            None => 0,
        };
        if indexed >= self.head.0 {
            return Ok(0);
        }
        let mut entries = page::entries_from(&self.events, indexed + 1).peekable();
        while entries.peek().is_some() {
            let mut batch = sled::Batch::default();
            let mut runs = RunRanges::default();
            let mut subjects = Vec::new();
            let mut last = indexed;
            for item in entries.by_ref().take(CATCH_UP_EVENTS) {
                let (seq, value, place) = item?;
                let (_, record) = decode_stored(&value[place], seq)?;
                index_record(&mut batch, &mut runs, &record);
                subjects::collect(&record, &mut subjects);
                last = seq;
                if subjects.len() >= CATCH_UP_SUBJECTS {
                    break;
                }
            }
            runs.write(&mut batch);
            self.lock_group().add(subjects, &mut batch);
            batch.insert(INDEXED_THROUGH, &last.to_be_bytes());
            self.index.apply_batch(batch)?;
        }
        self.make_store_durable()?;
        Ok(self.head.0 - indexed)
    }

    /// Drops and rebuilds every index from the events tree.
    pub fn reindex(&mut self) -> Result<u64> {
        self.settle()?;
        self.clear_index()?;
        self.catch_up_index()?;
        Ok(self.head.0)
    }

    /// Empties the index, marked with the current layout, so that
    /// `catch_up_index` rebuilds it from the first event.
    fn clear_index(&mut self) -> Result<()> {
        // sled clears key by key, and the markers sort last: they go first,
        // durably, so that a clear cut short is never taken for a complete
        // index (it has no layout marker, and is rebuilt on the next open).
        self.index.remove(INDEX_FORMAT)?;
        self.index.remove(INDEXED_THROUGH)?;
        self.make_store_durable()?;
        self.index.clear()?;
        self.index.insert(INDEX_FORMAT, INDEX_FORMAT_VERSION)?;
        *self.lock_group() = OpenGroup::default();
        Ok(())
    }

    /// Replaces the clock (tests pin it).
    pub fn set_clock(&mut self, clock: impl Fn() -> Timestamp + Send + Sync + 'static) {
        self.clock = Box::new(clock);
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn ledger_id(&self) -> &str {
        &self.ledger_id
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// The newest seq and its hash; `(0, genesis)` when empty.
    pub fn head(&self) -> (u64, Digest) {
        self.head
    }

    /// Appends events as one durable batch: seqs, chain, journal (fsync),
    /// then the store behind it. Returns the stored entries.
    pub fn append_batch(&mut self, drafts: Vec<Draft>) -> Result<Vec<Entry>> {
        Ok(self.append_records(drafts, true)?.1)
    }

    /// Appends like [`Ledger::append_batch`], returning only the seqs: the
    /// records then go to the store writer, which encodes them for the store
    /// and takes their paths and rows for the index off the caller's path.
    /// What a migration's recorder uses (it keeps nothing of what it appends).
    pub fn append_batch_seqs(&mut self, drafts: Vec<Draft>) -> Result<RangeInclusive<u64>> {
        let first = self.head.0 + 1;
        let (last, _) = self.append_records(drafts, false)?;
        Ok(first..=last)
    }

    /// The one appender. With `entries`, the records come back to the caller
    /// and are encoded for the store here; without, they move to the store
    /// writer. Returns the new head's seq and the entries.
    fn append_records(&mut self, drafts: Vec<Draft>, entries: bool) -> Result<(u64, Vec<Entry>)> {
        if drafts.is_empty() {
            return Ok((self.head.0, Vec::new()));
        }
        // Time never runs backwards inside a ledger, so that `--since` can
        // binary-search by seq.
        let now = (self.clock)();
        let now = match self.last_time {
            Some(last) if last > now => last,
            _ => now,
        };
        let (mut seq, mut prev) = self.head;
        let records: Vec<Record> = drafts
            .into_iter()
            .map(|draft| {
                seq += 1;
                Record {
                    actor: self.origin.actor.clone(),
                    event: draft.event,
                    host: self.origin.host.clone(),
                    ledger_id: self.ledger_id.clone(),
                    recorded_at: now,
                    run: draft.run,
                    seq,
                }
            })
            .collect();
        // The canonical JSON (and, for entries, the stored value) of each
        // record does not depend on the chain: it is made on two threads, and
        // only the hashing that follows is sequential.
        let encoded = if entries {
            encode_all(&records, |record| {
                (
                    record_json(record),
                    Some(encode_stored(&Digest::default(), record)),
                )
            })
        } else {
            encode_all(&records, |record| (record_json(record), None))
        };
        // A line is its record's JSON and, around it, the seq and two hashes.
        let mut lines = Vec::with_capacity(encoded.iter().map(|(json, _)| json.len() + 192).sum());
        let mut index = sled::Batch::default();
        let mut runs = RunRanges::default();
        let mut hashes = Vec::with_capacity(records.len());
        for (record, (json, _)) in records.iter().zip(&encoded) {
            let hash = link(&prev, json);
            write_line(&mut lines, record.seq, &prev, &hash, json);
            lines.push(b'\n');
            index_record(&mut index, &mut runs, record);
            hashes.push((prev, hash));
            prev = hash;
        }
        runs.write(&mut index);
        index.insert(INDEXED_THROUGH, &seq.to_be_bytes());
        let (job, appended) = if entries {
            let mut stored_entries = Vec::with_capacity(records.len());
            let mut subjects = Vec::new();
            let mut appended = Vec::with_capacity(records.len());
            for ((record, (_, stored)), (prev, hash)) in
                records.into_iter().zip(encoded).zip(hashes)
            {
                let mut stored = stored.expect("encoded for entries");
                set_stored_hash(&mut stored, &hash);
                stored_entries.push((record.seq, stored));
                subjects::collect(&record, &mut subjects);
                appended.push(Entry { hash, prev, record });
            }
            (StoreJob::Encoded(stored_entries, subjects), appended)
        } else {
            let hashes = hashes.into_iter().map(|(_, hash)| hash).collect();
            (StoreJob::Records(records, hashes), Vec::new())
        };
        // Store writes stay in order: the previous batch's must be done.
        self.settle()?;
        // The journal's fsync is what makes the batch durable: from here on
        // it is acknowledged. The store is written behind it, on its own
        // thread, while the caller prepares its next batch; any read, the
        // next append and dropping the ledger wait for it (`settle`). A crash
        // before it finishes leaves the store behind the journal, which the
        // next open catches up. The store is flushed to the OS but not
        // fsynced: after a power loss it recovers a consistent prefix of
        // itself (sled's log) and catches up from the journal likewise.
        if let Err(error) = self.journal.append(&lines) {
            // The journal may have lost pages it had acknowledged to the
            // kernel (a failed fsync); only a fresh open can tell.
            *self.broken.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(format!("writing the journal failed: {error}"));
            return Err(error);
        }
        let (events_tree, index_tree, db, open_group) = (
            self.events.clone(),
            self.index.clone(),
            self.db.clone(),
            self.open_group.clone(),
        );
        let writer = std::thread::Builder::new()
            .name("rewind-store-writer".into())
            .spawn(move || -> Result<()> {
                let (stored_entries, subjects) = job.encoded();
                let mut events = sled::Batch::default();
                page::write_pages(&mut events, &stored_entries);
                events_tree.apply_batch(events)?;
                open_group
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .add(subjects, &mut index);
                index_tree.apply_batch(index)?;
                db.flush()?;
                Ok(())
            })?;
        *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = Some(writer);
        self.head = (seq, prev);
        self.last_time = Some(now);
        Ok((seq, appended))
    }

    /// Waits until the store holds every appended batch (appends return once
    /// the journal has them; the store is written behind).
    pub fn wait_for_store(&self) -> Result<()> {
        self.settle()
    }

    /// Waits for the store write of the newest batch, if it is running, and
    /// reports its failure.
    ///
    /// A failed store write leaves the store behind an acknowledged journal;
    /// from then on this `Ledger` refuses every read and append (`Broken`),
    /// so that nothing is read from, or written after, a gap. Opening the
    /// ledger again catches the store up from the journal.
    fn settle(&self) -> Result<()> {
        let mut broken = self.broken.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(reason) = broken.as_ref() {
            return Err(LedgerError::Broken {
                reason: reason.clone(),
            });
        }
        let writer = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let result = match writer {
            Some(writer) => writer.join().unwrap_or_else(|_| {
                Err(std::io::Error::other("the store writer thread panicked").into())
            }),
            None => Ok(()),
        };
        if let Err(error) = result {
            let reason = error.to_string();
            *broken = Some(reason.clone());
            return Err(LedgerError::Broken { reason });
        }
        Ok(())
    }

    /// Appends one event.
    pub fn append(&mut self, run: Option<&str>, event: Event) -> Result<Entry> {
        Ok(self.append_batch(vec![Draft::new(run, event)])?.remove(0))
    }

    /// sled's `flush` writes its buffers but does not fsync on Linux; the
    /// data file is fsynced here so that a batch survives power loss too.
    fn make_store_durable(&self) -> Result<()> {
        self.db.flush()?;
        fs_err::File::open(self.dir.join(STORE).join("db"))?.sync_data()?;
        Ok(())
    }

    /// One entry by seq.
    pub fn get(&self, seq: u64) -> Result<Entry> {
        let Some(value) = self.stored(seq)? else {
            return Err(LedgerError::UnknownSeq {
                seq,
                head: self.head.0,
            });
        };
        let (hash, record) = decode_stored(&value, seq)?;
        let prev = self.prev_of(seq)?;
        Ok(Entry { hash, prev, record })
    }

    /// The stored bytes of one entry. The page last read is kept, so that
    /// reading neighbours (history, `prev` lookups) costs one sled read a page.
    fn stored(&self, seq: u64) -> Result<Option<Vec<u8>>> {
        self.settle()?;
        let mut cached = self.last_page.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(page) = cached.as_ref()
            && let (Some(first), Some(last)) = (page.first_seq(), page.last_seq())
            && (first..=last).contains(&seq)
        {
            return Ok(page.get(seq).map(<[u8]>::to_vec));
        }
        let Some(page) = page::page_for(&self.events, seq)? else {
            return Ok(None);
        };
        let found = page.get(seq).map(<[u8]>::to_vec);
        *cached = Some(page);
        Ok(found)
    }

    /// Entries in a seq range, in order.
    pub fn range(&self, seqs: RangeInclusive<u64>) -> impl Iterator<Item = Result<Entry>> + '_ {
        let start = *seqs.start();
        let end = *seqs.end();
        let mut prev: Option<Digest> = None;
        let settled = self.settle().err().map(Err);
        settled.into_iter().chain(
            page::entries_from(&self.events, start)
                .take_while(move |item| !matches!(item, Ok((seq, _, _)) if *seq > end))
                .map(move |item| {
                    let (seq, value, place) = item?;
                    let (hash, record) = decode_stored(&value[place], seq)?;
                    let prev_hash = match prev {
                        Some(hash) => hash,
                        None => self.prev_of(seq)?,
                    };
                    prev = Some(hash);
                    Ok(Entry {
                        hash,
                        prev: prev_hash,
                        record,
                    })
                }),
        )
    }

    fn prev_of(&self, seq: u64) -> Result<Digest> {
        if seq <= 1 {
            return Ok(genesis(&self.ledger_id));
        }
        match self.stored(seq - 1)? {
            // Only the hash is needed: it sits before the record, so the
            // record is not decoded (this halves the cost of `get`).
            Some(value) => stored_hash(&value, seq - 1),
            None => Err(LedgerError::Corrupt {
                seq,
                reason: format!("seq {} is missing", seq - 1),
            }),
        }
    }

    /// The seqs a selector narrows to through the indexes, in order, or
    /// `None` when no index applies (the caller scans a range instead).
    pub fn candidates(&self, selector: &Selector) -> Result<Option<Vec<u64>>> {
        self.settle()?;
        let mut sets: Vec<Vec<u64>> = Vec::new();
        if let Some(run) = &selector.run {
            sets.push(self.scan_index(&prefixed(b'r', &[run.as_bytes()]))?);
        }
        if let Some(target) = &selector.target {
            let mut seqs = Vec::new();
            for run in self.runs_of_target(target)? {
                seqs.extend(self.scan_index(&prefixed(b'r', &[run.as_bytes()]))?);
            }
            seqs.sort_unstable();
            sets.push(seqs);
        }
        if let Some(path) = &selector.path {
            let path = path.trim_end_matches('/');
            sets.push(subjects::query(&self.index, Wanted::Path(path))?);
        }
        if let Some(table) = &selector.table {
            let wanted = match &selector.key {
                Some(key) => Wanted::Row(table, key),
                None => Wanted::Table(table),
            };
            sets.push(subjects::query(&self.index, wanted)?);
        }
        let Some(mut result) = sets.pop() else {
            return Ok(None);
        };
        for other in sets {
            result.retain(|seq| other.binary_search(seq).is_ok());
        }
        Ok(Some(result))
    }

    fn scan_index(&self, prefix: &[u8]) -> Result<Vec<u64>> {
        let mut seqs = Vec::new();
        for item in self.index.scan_prefix(prefix) {
            let (key, value) = item?;
            if key.len() == prefix.len() + 8 {
                index_value_seqs(decode_key(&key[prefix.len()..])?, &value, &mut seqs)?;
            }
        }
        Ok(seqs)
    }

    /// Runs started for a target, oldest first.
    pub fn runs_of_target(&self, target: &str) -> Result<Vec<String>> {
        self.settle()?;
        let prefix = prefixed(b't', &[target.as_bytes()]);
        let mut runs = Vec::new();
        for item in self.index.scan_prefix(&prefix) {
            let (key, _) = item?;
            runs.push(String::from_utf8_lossy(&key[prefix.len() + 8..]).into_owned());
        }
        Ok(runs)
    }

    /// Seqs of the events of a run-level kind (`RunStarted`, `RunFinished`,
    /// `RollbackStarted`, `RollbackFinished`, `Compensated`, `DriftFound`,
    /// `Note`, `Checkpoint`, `UndoStarted`, `NeverHappened`), or `None` for a
    /// kind that is not indexed.
    pub fn seqs_of_kind(&self, kind: &str) -> Result<Option<Vec<u64>>> {
        self.settle()?;
        if !INDEXED_KINDS.contains(&kind) {
            return Ok(None);
        }
        self.scan_index(&prefixed(b'k', &[kind.as_bytes()]))
            .map(Some)
    }

    /// Seqs of the `Compensated` that undid one of the events at `seqs`
    /// and of the `DriftFound` about one, in order.
    pub fn about(&self, seqs: &BTreeSet<u64>) -> Result<Vec<u64>> {
        self.settle()?;
        let (Some(&first), Some(&last)) = (seqs.first(), seqs.last()) else {
            return Ok(Vec::new());
        };
        let key = |seq: u64| prefixed(b'u', &[&seq.to_be_bytes()]);
        let mut found = Vec::new();
        // A few events: a scan each; many (a table's whole history): one
        // scan over the keys about every seq from the first to the last.
        if seqs.len() <= 64 {
            for &seq in seqs {
                found.extend(self.scan_index(&key(seq))?);
            }
        } else {
            let end = match last.checked_add(1) {
                Some(next) => key(next),
                None => vec![b'v'],
            };
            for item in self.index.range(key(first)..end) {
                let (key, _) = item?;
                // `u`, the seq it is about, 0, the event's seq.
                if key.len() == 18 && seqs.contains(&decode_key(&key[1..9])?) {
                    found.push(decode_key(&key[10..])?);
                }
            }
        }
        found.sort_unstable();
        Ok(found)
    }

    /// The first seq recorded at or after `instant` (head + 1 if none).
    pub fn first_seq_at_or_after(&self, instant: Timestamp) -> Result<u64> {
        let (mut low, mut high) = (1, self.head.0 + 1);
        while low < high {
            let mid = low + (high - low) / 2;
            if self.get(mid)?.record.recorded_at < instant {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        Ok(low)
    }

    /// The seq range a time window covers.
    pub fn seq_window(
        &self,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
    ) -> Result<RangeInclusive<u64>> {
        let start = match since {
            Some(since) => self.first_seq_at_or_after(since)?,
            None => 1,
        };
        let end = match until {
            Some(until) => {
                let after = self.first_seq_at_or_after(until)?;
                // `until` is inclusive: take entries recorded exactly then too.
                let mut end = after.saturating_sub(1);
                while end < self.head.0 && self.get(end + 1)?.record.recorded_at == until {
                    end += 1;
                }
                end
            }
            None => self.head.0,
        };
        Ok(start..=end)
    }

    pub(crate) fn events_tree(&self) -> Result<&sled::Tree> {
        self.settle()?;
        Ok(&self.events)
    }

    pub(crate) fn journal_path(&self) -> PathBuf {
        self.dir.join(JOURNAL)
    }
}

/// Opens the sled store. Our own lock is held, so sled's file lock can only
/// be held by a `Ledger` of this process that was just dropped (sled's
/// background threads release it a moment after the drop) or by another
/// program that opened the store directly: wait briefly, then say so instead
/// of passing on sled's bare "could not acquire lock" io error.
fn open_store(dir: &Path) -> Result<sled::Db> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let opened = sled::Config::new()
            .path(dir.join(STORE))
            .flush_every_ms(None)
            .open();
        match opened {
            Err(sled::Error::Io(error)) if error.to_string().contains("could not acquire lock") => {
                if Instant::now() >= deadline {
                    return Err(LedgerError::Locked {
                        dir: dir.to_path_buf(),
                        holder: None,
                    });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            opened => return Ok(opened?),
        }
    }
}

/// `encode` of every record, in order, on two threads for a large batch.
fn encode_all<T: Send>(records: &[Record], encode: impl Fn(&Record) -> T + Sync) -> Vec<T> {
    if records.len() < 256 {
        return records.iter().map(&encode).collect();
    }
    let (first, second) = records.split_at(records.len() / 2);
    std::thread::scope(|scope| {
        let second = scope.spawn(|| second.iter().map(&encode).collect::<Vec<_>>());
        let mut out: Vec<_> = first.iter().map(&encode).collect();
        out.extend(second.join().expect("encoding records does not panic"));
        out
    })
}

/// What the store writer of one batch is handed: stored values and the
/// index's subjects already made, or the records and their hashes to make
/// them from.
enum StoreJob {
    Encoded(Vec<(u64, Vec<u8>)>, Vec<SubjectEntry>),
    Records(Vec<Record>, Vec<Digest>),
}

impl StoreJob {
    fn encoded(self) -> (Vec<(u64, Vec<u8>)>, Vec<SubjectEntry>) {
        match self {
            StoreJob::Encoded(stored, subjects) => (stored, subjects),
            StoreJob::Records(records, hashes) => {
                let mut subjects = Vec::new();
                let stored = records
                    .iter()
                    .zip(hashes)
                    .map(|(record, hash)| {
                        subjects::collect(record, &mut subjects);
                        (record.seq, encode_stored(&hash, record))
                    })
                    .collect();
                (stored, subjects)
            }
        }
    }
}

/// Kinds indexed by kind: rare, run-level events that listings start from.
pub const INDEXED_KINDS: &[&str] = &[
    "RunStarted",
    "RunFinished",
    "RollbackStarted",
    "RollbackFinished",
    "Compensated",
    "DriftFound",
    "Note",
    "Checkpoint",
    "UndoStarted",
    "NeverHappened",
];

fn prefixed(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut key = vec![tag];
    for part in parts {
        key.extend_from_slice(part);
        key.push(0);
    }
    key
}

/// The run index of a batch being written: for each run, its seqs as
/// ranges. It is written as one key per run per batch,
/// `r<run>\0<first seq>` → `(start, count)` pairs of big-endian u64s, so the
/// run index costs one sled insert per batch rather than one per event.
/// (Other index keys have an empty value and stand for the seq they end in.)
#[derive(Default)]
struct RunRanges(BTreeMap<String, Vec<(u64, u64)>>);

impl RunRanges {
    fn add(&mut self, run: &str, seq: u64) {
        let ranges = match self.0.get_mut(run) {
            Some(ranges) => ranges,
            None => self.0.entry(run.to_owned()).or_default(),
        };
        match ranges.last_mut() {
            Some((start, count)) if *start + *count == seq => *count += 1,
            _ => ranges.push((seq, 1)),
        }
    }

    fn write(self, batch: &mut sled::Batch) {
        for (run, ranges) in self.0 {
            let mut key = prefixed(b'r', &[run.as_bytes()]);
            key.extend_from_slice(&ranges[0].0.to_be_bytes());
            let mut value = Vec::with_capacity(ranges.len() * 16);
            for (start, count) in ranges {
                value.extend_from_slice(&start.to_be_bytes());
                value.extend_from_slice(&count.to_be_bytes());
            }
            batch.insert(key, value);
        }
    }
}

/// The seqs an index entry stands for (see [`RunRanges`]).
fn index_value_seqs(key_seq: u64, value: &[u8], seqs: &mut Vec<u64>) -> Result<()> {
    if value.is_empty() {
        seqs.push(key_seq);
        return Ok(());
    }
    if !value.len().is_multiple_of(16) {
        return Err(LedgerError::Corrupt {
            seq: key_seq,
            reason: format!(
                "an index value of {} bytes (run `rewind reindex`)",
                value.len()
            ),
        });
    }
    for pair in value.chunks_exact(16) {
        let start = decode_key(&pair[..8])?;
        let count = decode_key(&pair[8..])?;
        seqs.extend(start..start.saturating_add(count));
    }
    Ok(())
}

fn index_record(batch: &mut sled::Batch, runs: &mut RunRanges, record: &Record) {
    let seq = record.seq.to_be_bytes();
    let with_seq = |mut key: Vec<u8>| {
        key.extend_from_slice(&seq);
        key
    };
    if let Some(run) = &record.run {
        runs.add(run, record.seq);
        if let Event::RunStarted(started) = &record.event
            && let Some(target) = &started.target
        {
            let mut key = with_seq(prefixed(b't', &[target.as_bytes()]));
            key.extend_from_slice(run.as_bytes());
            batch.insert(key, &[]);
        }
    }
    let kind = record.event.kind();
    if INDEXED_KINDS.contains(&kind) {
        batch.insert(with_seq(prefixed(b'k', &[kind.as_bytes()])), &[]);
    }
    if let Some(about) = record.event.about() {
        batch.insert(with_seq(prefixed(b'u', &[&about.to_be_bytes()])), &[]);
    }
}

fn decode_key(bytes: &[u8]) -> Result<u64> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| LedgerError::Corrupt {
        seq: 0,
        reason: format!("a key of {} bytes is not a seq", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(array))
}

/// The hash of a stored value, checked like `decode_stored` checks it,
/// without decoding the record.
fn stored_hash(value: &[u8], seq: u64) -> Result<Digest> {
    match value {
        [version, hash @ ..] if (1..=FORMAT_VERSION).contains(version) && hash.len() >= 32 => {
            let mut out = [0u8; 32];
            out.copy_from_slice(&hash[..32]);
            Ok(Digest(out))
        }
        // Anything else is refused with decode_stored's own error.
        _ => decode_stored(value, seq).map(|(hash, _)| hash),
    }
}
