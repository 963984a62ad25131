//! Verification of a ledger: the store's chain, entry by entry, and the
//! journal against it; and the rebuild of a store from its journal.

use std::fmt;
use std::path::Path;

use crate::bytes::Digest;
use crate::canonical::{genesis, line, link, record_json};
use crate::codec::{decode_stored, encode_stored};
use crate::error::{LedgerError, Result};
use crate::journal::{JournalReader, parse_line};
use crate::store::{Ledger, decode_seq};

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
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProblemKind::Altered => "altered",
            ProblemKind::Missing => "missing",
            ProblemKind::Reordered => "reordered",
            ProblemKind::Extra => "extra",
            ProblemKind::Corrupt => "corrupt",
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
}

impl Ledger {
    /// Recomputes every hash of the store from genesis, and checks that the
    /// journal holds the same lines; stops at the first problem.
    pub fn verify_chain(&self) -> Result<ChainReport> {
        let journal_path = self.journal_path();
        let mut journal = JournalReader::open(&journal_path)?;
        let mut prev = genesis(self.ledger_id());
        let mut expected = 1u64;
        let problem = |seq, kind, detail: String| Problem { seq, kind, detail };
        let report = |verified: u64, prev: Digest, found: Option<Problem>| ChainReport {
            verified,
            head_seq: verified,
            head_hash: prev,
            problem: found,
        };
        for item in self.events_tree().iter() {
            let (key, value) = item?;
            let seq = decode_seq(&key)?;
            let verified = expected - 1;
            if seq > expected {
                let detail = if seq == expected + 1 {
                    format!("seq {expected} is not in the store (the next entry is {seq})")
                } else {
                    format!("seqs {expected} to {} are not in the store", seq - 1)
                };
                return Ok(report(
                    verified,
                    prev,
                    Some(problem(expected, ProblemKind::Missing, detail)),
                ));
            }
            let (stored_hash, record) = match decode_stored(&value, seq) {
                Ok(decoded) => decoded,
                Err(LedgerError::Corrupt { reason, .. }) => {
                    return Ok(report(
                        verified,
                        prev,
                        Some(problem(seq, ProblemKind::Corrupt, reason)),
                    ));
                }
                Err(error) => return Err(error),
            };
            if record.seq != seq {
                let detail = format!(
                    "the entry stored at seq {seq} is seq {} of the chain",
                    record.seq
                );
                return Ok(report(
                    verified,
                    prev,
                    Some(problem(seq, ProblemKind::Reordered, detail)),
                ));
            }
            if record.ledger_id != self.ledger_id() {
                let detail = format!("the entry belongs to ledger {}", record.ledger_id);
                return Ok(report(
                    verified,
                    prev,
                    Some(problem(seq, ProblemKind::Altered, detail)),
                ));
            }
            let json = record_json(&record);
            let hash = link(&prev, &json);
            if hash != stored_hash {
                let detail = format!(
                    "content hashes to {} but the stored hash is {}",
                    hash.short(),
                    stored_hash.short()
                );
                return Ok(report(
                    verified,
                    prev,
                    Some(problem(seq, ProblemKind::Altered, detail)),
                ));
            }
            match journal.next_line()? {
                None => {
                    let detail = format!("seq {seq} is in the store but not in the journal");
                    return Ok(report(
                        verified,
                        prev,
                        Some(problem(seq, ProblemKind::Extra, detail)),
                    ));
                }
                Some(raw) => {
                    if raw.bytes != line(seq, &prev, &hash, &json) {
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
                        return Ok(report(
                            verified,
                            prev,
                            Some(problem(seq, ProblemKind::Altered, detail)),
                        ));
                    }
                }
            }
            prev = hash;
            expected = seq + 1;
        }
        let verified = expected - 1;
        if let Some(raw) = journal.next_line()? {
            let detail = format!(
                "journal line {} holds an entry the store does not have",
                raw.number
            );
            return Ok(report(
                verified,
                prev,
                Some(problem(expected, ProblemKind::Missing, detail)),
            ));
        }
        Ok(report(verified, prev, None))
    }
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
    let lock = crate::store::acquire_lock(dir)?;
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
