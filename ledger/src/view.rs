//! Read access for commands that change nothing: the store when the ledger
//! is free, or — while another rewind holds it — the journal, which that
//! process appends to (and fsyncs) before anything is considered done.

use std::collections::BTreeSet;
use std::path::Path;

use crate::bytes::Digest;
use crate::canonical::genesis;
use crate::error::{LedgerError, Result};
use crate::event::Event;
use crate::journal::{JournalReader, parse_line};
use crate::record::Entry;
use crate::store::{Ledger, Origin, Selector, read_marker};

/// The whole journal, read into memory and chain-checked while reading.
#[derive(Debug)]
pub struct Snapshot {
    pub ledger_id: String,
    pub entries: Vec<Entry>,
}

impl Snapshot {
    /// Reads the journal of the ledger in `dir`, checking each link.
    pub fn load(dir: &Path) -> Result<Snapshot> {
        let marker = read_marker(dir)?;
        let path = dir.join("journal.jsonl");
        let mut reader = JournalReader::open(&path)?;
        let mut prev = genesis(&marker.ledger_id);
        let mut entries = Vec::new();
        while let Some(raw) = reader.next_line()? {
            let entry = parse_line(&raw, &path)?;
            if entry.prev != prev || entry.seq() != entries.len() as u64 + 1 {
                return Err(LedgerError::Journal {
                    path: path.clone(),
                    line: raw.number,
                    reason: format!("seq {} does not follow seq {}", entry.seq(), entries.len()),
                });
            }
            prev = entry.hash;
            entries.push(entry);
        }
        Ok(Snapshot {
            ledger_id: marker.ledger_id,
            entries,
        })
    }
}

/// Where reads are answered from.
#[derive(Debug)]
pub enum View {
    Store(Box<Ledger>),
    /// The ledger is held by the process with this pid (if known).
    Journal(Snapshot, Option<u32>),
}

impl View {
    /// Opens the store, or the journal if another rewind holds the ledger.
    pub fn open(dir: &Path, origin: Origin) -> Result<View> {
        match Ledger::open_as(dir, origin, crate::store::Access::Read) {
            Ok(ledger) => Ok(View::Store(Box::new(ledger))),
            Err(LedgerError::Locked { holder, .. }) => {
                Ok(View::Journal(Snapshot::load(dir)?, holder))
            }
            Err(error) => Err(error),
        }
    }

    pub fn ledger_id(&self) -> &str {
        match self {
            View::Store(ledger) => ledger.ledger_id(),
            View::Journal(snapshot, _) => &snapshot.ledger_id,
        }
    }

    /// The newest seq and its hash.
    pub fn head(&self) -> (u64, Digest) {
        match self {
            View::Store(ledger) => ledger.head(),
            View::Journal(snapshot, _) => match snapshot.entries.last() {
                Some(entry) => (entry.seq(), entry.hash),
                None => (0, genesis(&snapshot.ledger_id)),
            },
        }
    }

    /// One entry by seq.
    pub fn get(&self, seq: u64) -> Result<Entry> {
        match self {
            View::Store(ledger) => ledger.get(seq),
            View::Journal(snapshot, _) => seq
                .checked_sub(1)
                .and_then(|index| snapshot.entries.get(index as usize))
                .cloned()
                .ok_or(LedgerError::UnknownSeq {
                    seq,
                    head: snapshot.entries.len() as u64,
                }),
        }
    }

    /// Entries of the seq range, in order, passed to `visit` one by one.
    pub fn for_each_in(
        &self,
        first: u64,
        last: u64,
        mut visit: impl FnMut(&Entry) -> Result<()>,
    ) -> Result<()> {
        if first > last {
            return Ok(());
        }
        match self {
            View::Store(ledger) => {
                for entry in ledger.range(first..=last) {
                    visit(&entry?)?;
                }
            }
            View::Journal(snapshot, _) => {
                let start = first.saturating_sub(1) as usize;
                let end = (last as usize).min(snapshot.entries.len());
                for entry in snapshot.entries.get(start..end).unwrap_or_default() {
                    visit(entry)?;
                }
            }
        }
        Ok(())
    }

    /// The entries a selector may match: a superset that the caller filters
    /// exactly (see `rewind_projections::history`). Uses the indexes when the
    /// store is open.
    pub fn select(&self, selector: &Selector, kind: Option<&str>) -> Result<Vec<Entry>> {
        match self {
            View::Store(ledger) => {
                let window = ledger.seq_window(selector.since, selector.until)?;
                let seqs = match ledger.candidates(selector)? {
                    Some(seqs) => Some(seqs),
                    None => match kind {
                        Some(kind) => ledger.seqs_of_kind(kind)?,
                        None => None,
                    },
                };
                match seqs {
                    Some(seqs) => seqs
                        .into_iter()
                        .filter(|seq| window.contains(seq))
                        .map(|seq| ledger.get(seq))
                        .collect(),
                    None => ledger.range(window).collect(),
                }
            }
            View::Journal(snapshot, _) => Ok(snapshot.entries.clone()),
        }
    }

    /// What became of the events at `seqs`: the `Compensated` that undid
    /// one and the `DriftFound` about one ([`Event::about`]), and every
    /// rollback's bounds (`RollbackStarted`, `RollbackFinished`) recorded
    /// after the first of them; in seq order. Through the store's indexes,
    /// or one pass over the journal ([`aftermath_in`]).
    pub fn aftermath(&self, seqs: &BTreeSet<u64>) -> Result<Vec<Entry>> {
        let Some(&first) = seqs.first() else {
            return Ok(Vec::new());
        };
        match self {
            View::Store(ledger) => {
                let mut found = ledger.about(seqs)?;
                for kind in ["RollbackStarted", "RollbackFinished"] {
                    let bounds = ledger.seqs_of_kind(kind)?.unwrap_or_default();
                    found.extend(bounds.into_iter().filter(|seq| *seq > first));
                }
                found.sort_unstable();
                found.dedup();
                found.into_iter().map(|seq| ledger.get(seq)).collect()
            }
            View::Journal(snapshot, _) => Ok(aftermath_in(&snapshot.entries, seqs)),
        }
    }

    /// The runs started for a target, in order.
    pub fn runs_of_target(&self, target: &str) -> Result<Vec<String>> {
        match self {
            View::Store(ledger) => ledger.runs_of_target(target),
            View::Journal(snapshot, _) => Ok(snapshot
                .entries
                .iter()
                .filter_map(|entry| match (&entry.record.event, &entry.record.run) {
                    (Event::RunStarted(started), Some(run))
                        if started.target.as_deref() == Some(target) =>
                    {
                        Some(run.clone())
                    }
                    _ => None,
                })
                .collect()),
        }
    }
}

/// [`View::aftermath`] of the events at `seqs`, read from `entries` (all
/// of a ledger's, in order).
pub fn aftermath_in(entries: &[Entry], seqs: &BTreeSet<u64>) -> Vec<Entry> {
    let Some(&first) = seqs.first() else {
        return Vec::new();
    };
    entries
        .iter()
        .filter(|entry| match &entry.record.event {
            Event::RollbackStarted(_) | Event::RollbackFinished(_) => entry.seq() > first,
            event => event.about().is_some_and(|about| seqs.contains(&about)),
        })
        .cloned()
        .collect()
}
