//! Verification of a ledger: the store's chain, entry by entry, and the
//! journal against it; and the rebuild of a store from its journal.

use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::mpsc::{SyncSender, sync_channel};

use crate::bytes::Digest;
use crate::canonical::{genesis, link, write_line, write_record_json};
use crate::codec::{decode_stored, encode_stored};
use crate::error::{LedgerError, Result};
use crate::event::{Checkpoint, Event};
use crate::journal::{JournalReader, RawLine, parse_line};
use crate::record::Entry;
use crate::store::Ledger;

/// What is wrong at a seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProblemKind {
    /// The content no longer hashes to the stored hash, or the store and the
    /// journal hold different content for the seq.
    Altered,
    /// The seq is absent (from the store, or from the journal).
    Missing,
    /// An entry stands at a seq that is not its own.
    Reordered,
    /// An entry exists in the store beyond what the journal acknowledges.
    Extra,
    /// The stored bytes do not decode.
    Corrupt,
    /// The entry hashes as written, but what it holds cannot be used: row
    /// images that do not unpack.
    Unusable,
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProblemKind::Altered => "altered",
            ProblemKind::Missing => "missing",
            ProblemKind::Reordered => "reordered",
            ProblemKind::Extra => "extra",
            ProblemKind::Corrupt => "corrupt",
            ProblemKind::Unusable => "unusable",
        })
    }
}

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub seq: u64,
    pub kind: ProblemKind,
    pub detail: String,
}

/// The outcome of `verify`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChainReport {
    /// Entries whose hash was recomputed and matched.
    pub verified: u64,
    /// The head as verified (seq and hash).
    pub head_seq: u64,
    pub head_hash: Digest,
    pub problem: Option<Problem>,
    /// The first entry that hashes as written but whose content cannot be
    /// used ([`unusable`]); verification goes on past it, so that a later
    /// problem is still found.
    pub unusable: Option<Problem>,
}

/// Why an event, chained as written, is of no use to a rollback or a
/// reader: row images that do not unpack.
pub fn unusable(event: &Event) -> Option<String> {
    match event {
        Event::RowsPacked(packed) => crate::packed::keys(packed)
            .err()
            .map(|reason| format!("the row images do not unpack: {reason}")),
        _ => None,
    }
}

/// The first entry of `entries` that [`unusable`] refuses, as a problem.
pub fn first_unusable<'e>(entries: impl IntoIterator<Item = &'e Entry>) -> Option<Problem> {
    entries.into_iter().find_map(|entry| {
        unusable(&entry.record.event).map(|detail| Problem {
            seq: entry.seq(),
            kind: ProblemKind::Unusable,
            detail,
        })
    })
}

impl Ledger {
    /// Recomputes every hash of the store from genesis, and checks that the
    /// journal holds the same lines; stops at the first problem.
    pub fn verify_chain(&self) -> Result<ChainReport> {
        // Decoding and canonicalizing the entries is most of the work and
        // needs no chain. So: one thread reads the store in chunks and deals
        // them out in turn to decoders, and this thread takes the decoded
        // chunks back in the same turn, links the hashes and compares the
        // journal. Returning early drops the receivers, which stops the rest.
        let decoders = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4));
        std::thread::scope(|scope| {
            let ledger_id = self.ledger_id();
            let mut to_decoders = Vec::with_capacity(decoders);
            let mut from_decoders = Vec::with_capacity(decoders);
            for _ in 0..decoders {
                let (raw_sender, raw_receiver) = sync_channel::<RawChunk>(2);
                let (sender, receiver) = sync_channel::<Chunk>(2);
                scope.spawn(move || {
                    for raw in raw_receiver {
                        if sender.send(decode_chunk(raw, ledger_id)).is_err() {
                            return;
                        }
                    }
                });
                to_decoders.push(raw_sender);
                from_decoders.push(receiver);
            }
            let tree = self.events_tree()?;
            scope.spawn(move || read_chunks(tree, &to_decoders));
            let in_turn = (0..).map_while(|turn| from_decoders[turn % decoders].recv().ok());
            self.check_chunks(in_turn)
        })
    }

    fn check_chunks(&self, chunks: impl Iterator<Item = Chunk>) -> Result<ChainReport> {
        let mut unusable = None;
        let (verified, head_hash, problem) = self.walk_chunks(chunks, &mut unusable)?;
        Ok(ChainReport {
            verified,
            head_seq: verified,
            head_hash,
            problem,
            unusable,
        })
    }

    /// Checks the chain entry by entry up to the first problem; returns
    /// the seq verified through, its hash and the problem, and sets
    /// `unusable` to the first entry [`unusable`] refuses.
    fn walk_chunks(
        &self,
        chunks: impl Iterator<Item = Chunk>,
        unusable: &mut Option<Problem>,
    ) -> Result<(u64, Digest, Option<Problem>)> {
        let journal_path = self.journal_path();
        let mut journal = JournalReader::open(&journal_path)?;
        let mut prev = genesis(self.ledger_id());
        let mut expected = 1u64;
        let problem = |seq, kind, detail: String| Problem { seq, kind, detail };
        let mut journal_line = Vec::with_capacity(1024);
        let mut expected_line = Vec::with_capacity(1024);
        for chunk in chunks {
            for item in chunk.entries {
                let Decoded { seq, decoded } = match item {
                    Ok(item) => item,
                    // A page that cannot be read: everything from its first
                    // seq on is unverifiable.
                    Err(LedgerError::Corrupt { seq, reason }) => {
                        let at = seq.max(expected);
                        return Ok((
                            expected - 1,
                            prev,
                            Some(problem(at, ProblemKind::Corrupt, reason)),
                        ));
                    }
                    Err(error) => return Err(error),
                };
                let verified = expected - 1;
                if seq > expected {
                    let detail = if seq == expected + 1 {
                        format!("seq {expected} is not in the store (the next entry is {seq})")
                    } else {
                        format!("seqs {expected} to {} are not in the store", seq - 1)
                    };
                    return Ok((
                        verified,
                        prev,
                        Some(problem(expected, ProblemKind::Missing, detail)),
                    ));
                }
                let checked = match decoded {
                    Ok(checked) => checked,
                    Err(LedgerError::Corrupt { reason, .. }) => {
                        return Ok((
                            verified,
                            prev,
                            Some(problem(seq, ProblemKind::Corrupt, reason)),
                        ));
                    }
                    Err(error) => return Err(error),
                };
                if checked.record_seq != seq {
                    let detail = format!(
                        "the entry stored at seq {seq} is seq {} of the chain",
                        checked.record_seq
                    );
                    return Ok((
                        verified,
                        prev,
                        Some(problem(seq, ProblemKind::Reordered, detail)),
                    ));
                }
                if let Some(other) = checked.foreign_ledger {
                    let detail = format!("the entry belongs to ledger {other}");
                    return Ok((
                        verified,
                        prev,
                        Some(problem(seq, ProblemKind::Altered, detail)),
                    ));
                }
                let json = &chunk.json[checked.json];
                let hash = link(&prev, json);
                if hash != checked.stored_hash {
                    let detail = format!(
                        "content hashes to {} but the stored hash is {}",
                        hash.short(),
                        checked.stored_hash.short()
                    );
                    return Ok((
                        verified,
                        prev,
                        Some(problem(seq, ProblemKind::Altered, detail)),
                    ));
                }
                if let Some(checkpoint) = &checked.checkpoint
                    && let Some(detail) =
                        crate::checkpoint::problem(self.ledger_id(), seq, &prev, checkpoint)
                {
                    return Ok((
                        verified,
                        prev,
                        Some(problem(seq, ProblemKind::Altered, detail)),
                    ));
                }
                let Some(number) = journal.next_into(&mut journal_line)? else {
                    let detail = format!("seq {seq} is in the store but not in the journal");
                    return Ok((
                        verified,
                        prev,
                        Some(problem(seq, ProblemKind::Extra, detail)),
                    ));
                };
                expected_line.clear();
                write_line(&mut expected_line, seq, &prev, &hash, json);
                if journal_line != expected_line {
                    let raw = RawLine {
                        number,
                        bytes: std::mem::take(&mut journal_line),
                    };
                    let detail = match parse_line(&raw, &journal_path) {
                        Ok(entry) if entry.seq() > seq => {
                            format!("seq {seq} is missing from the journal")
                        }
                        Ok(entry) if entry.seq() < seq => {
                            format!(
                                "journal line {} holds seq {} where seq {seq} belongs",
                                raw.number,
                                entry.seq()
                            )
                        }
                        Ok(_) => format!("journal line {} differs from the store", raw.number),
                        Err(error) => error.to_string(),
                    };
                    return Ok((
                        verified,
                        prev,
                        Some(problem(seq, ProblemKind::Altered, detail)),
                    ));
                }
                // Chained as written, but of no use to a rollback or a reader.
                if unusable.is_none()
                    && let Some(detail) = checked.images
                {
                    *unusable = Some(problem(seq, ProblemKind::Unusable, detail));
                }
                prev = hash;
                expected = seq + 1;
            }
        }
        let verified = expected - 1;
        if let Some(raw) = journal.next_line()? {
            let detail = format!(
                "journal line {} holds an entry the store does not have",
                raw.number
            );
            return Ok((
                verified,
                prev,
                Some(problem(expected, ProblemKind::Missing, detail)),
            ));
        }
        Ok((verified, prev, None))
    }
}

/// A run of stored values as read, in one buffer.
struct RawChunk {
    /// Each entry's seq and its value's place in `values`, or what went
    /// wrong reading it (the last entry then).
    entries: Vec<Result<(u64, Range<usize>)>>,
    values: Vec<u8>,
}

/// A run of stored entries as decoded, with their canonical JSON in one
/// buffer. Only what the chain check needs crosses threads: records are
/// dropped where they were decoded, which keeps the allocator from
/// shuttling memory between threads (that cost more than the decoding).
struct Chunk {
    entries: Vec<Result<Decoded>>,
    json: Vec<u8>,
}

/// One stored entry.
struct Decoded {
    seq: u64,
    decoded: Result<Checked>,
}

/// What the chain check needs of a decoded entry.
struct Checked {
    stored_hash: Digest,
    /// The seq the record itself names.
    record_seq: u64,
    /// The record's ledger id, when it is not this ledger's.
    foreign_ledger: Option<String>,
    checkpoint: Option<Checkpoint>,
    /// Why the entry is [`unusable`].
    images: Option<String>,
    /// The record's canonical JSON, in [`Chunk::json`].
    json: Range<usize>,
}

/// How many entries travel together.
const CHUNK: usize = 512;

/// Reads the events tree in order and deals chunks of it out to the
/// decoders in turn, until the end, an error, or a decoder hangs up.
fn read_chunks(tree: &sled::Tree, decoders: &[SyncSender<RawChunk>]) {
    let new_chunk = || RawChunk {
        entries: Vec::with_capacity(CHUNK),
        values: Vec::with_capacity(CHUNK * 320),
    };
    let mut chunk = new_chunk();
    let mut turn = 0;
    for item in crate::page::entries_from(tree, 1) {
        let entry = item.map(|(seq, value, place)| {
            let start = chunk.values.len();
            chunk.values.extend_from_slice(&value[place]);
            (seq, start..chunk.values.len())
        });
        let failed = entry.is_err();
        chunk.entries.push(entry);
        if chunk.entries.len() == CHUNK || failed {
            let full = std::mem::replace(&mut chunk, new_chunk());
            if decoders[turn % decoders.len()].send(full).is_err() || failed {
                return;
            }
            turn += 1;
        }
    }
    if !chunk.entries.is_empty() {
        let _ = decoders[turn % decoders.len()].send(chunk);
    }
}

/// Decodes a chunk and writes each record's canonical JSON.
fn decode_chunk(raw: RawChunk, ledger_id: &str) -> Chunk {
    let mut json = Vec::with_capacity(raw.entries.len() * 640);
    let entries = raw
        .entries
        .into_iter()
        .map(|entry| {
            let (seq, place) = entry?;
            let decoded = decode_stored(&raw.values[place], seq).map(|(stored_hash, record)| {
                let start = json.len();
                write_record_json(&mut json, &record);
                let images = unusable(&record.event);
                Checked {
                    stored_hash,
                    record_seq: record.seq,
                    foreign_ledger: (record.ledger_id != ledger_id).then_some(record.ledger_id),
                    checkpoint: match record.event {
                        Event::Checkpoint(checkpoint) => Some(checkpoint),
                        _ => None,
                    },
                    images,
                    json: start..json.len(),
                }
            });
            Ok(Decoded { seq, decoded })
        })
        .collect();
    Chunk { entries, json }
}

/// Checks a journal's whole chain on its own; returns its entries' count and head.
pub fn verify_journal(path: &Path, ledger_id: &str) -> Result<(u64, Digest)> {
    let mut reader = JournalReader::open(path)?;
    let mut prev = genesis(ledger_id);
    let mut count = 0;
    while let Some(raw) = reader.next_line()? {
        let entry = parse_line(&raw, path)?;
        if entry.seq() != count + 1 || entry.prev != prev || entry.record.ledger_id != ledger_id {
            return Err(LedgerError::Journal {
                path: path.to_path_buf(),
                line: raw.number,
                reason: format!(
                    "seq {} does not follow seq {count} of the chain",
                    entry.seq()
                ),
            });
        }
        prev = entry.hash;
        count += 1;
    }
    Ok((count, prev))
}

/// Rebuilds the sled store of the ledger in `dir` from its journal, after
/// checking the journal's chain. The old store is kept beside it as
/// `store.damaged-<n>`. The caller holds no `Ledger` for `dir`.
pub fn repair(dir: &Path, origin: crate::store::Origin) -> Result<RepairReport> {
    let marker = crate::store::read_marker(dir)?;
    let journal = dir.join("journal.jsonl");
    let (count, head) = verify_journal(&journal, &marker.ledger_id)?;
    // Take the lock before moving anything.
    let lock = crate::store::acquire_lock(dir, crate::store::Access::Write)?;
    let store = dir.join("store");
    let mut kept = None;
    if store.exists() {
        let mut n = 1;
        let aside = loop {
            let candidate = dir.join(format!("store.damaged-{n}"));
            if !candidate.exists() {
                break candidate;
            }
            n += 1;
        };
        fs_err::rename(&store, &aside)?;
        kept = Some(aside);
    }
    let ledger = Ledger::open_locked(dir, lock, origin)?;
    let (seq, hash) = ledger.head();
    if seq != count || hash != head {
        return Err(LedgerError::Diverged {
            reason: format!("rebuilt store ends at seq {seq}, journal at {count}"),
        });
    }
    Ok(RepairReport {
        entries: count,
        head,
        kept,
    })
}

/// What `repair` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairReport {
    pub entries: u64,
    pub head: Digest,
    pub kept: Option<std::path::PathBuf>,
}

/// Encodes an entry the way the store keeps it (for tests that tamper).
pub fn stored_bytes(hash: &Digest, record: &crate::record::Record) -> Vec<u8> {
    encode_stored(hash, record)
}
