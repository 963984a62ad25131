//! The recorder: the one appender, shared by every target of a batch.
//!
//! It wraps the [`Ledger`] in a mutex so that concurrent targets append
//! whole batches in turn; the ledger itself assigns seqs, chains and makes
//! each batch durable. Blobs are written outside the lock: the blob store is
//! content-addressed and safe to write concurrently.

use std::sync::{Arc, Mutex, MutexGuard};

use rewind_ledger::{BlobStore, Draft, Entry, Event, Ledger};

use crate::error::MigrateError;

/// How many effect events a step buffers before handing them to the ledger.
pub const BATCH: usize = 1000;

/// A shared handle on the one appender.
#[derive(Clone, Debug)]
pub struct Recorder {
    ledger: Arc<Mutex<Ledger>>,
    blobs: BlobStore,
}

impl Recorder {
    pub fn new(ledger: Ledger) -> Recorder {
        let blobs = ledger.blobs().clone();
        Recorder {
            ledger: Arc::new(Mutex::new(ledger)),
            blobs,
        }
    }

    /// The blob store of the ledger.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// Locks the ledger for reading (or for appending as one unit).
    pub fn lock(&self) -> MutexGuard<'_, Ledger> {
        // A panic while holding the lock cannot leave a half-appended batch:
        // `append_batch` is all or nothing. So a poisoned lock is usable.
        self.ledger
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Appends events of one run as one durable batch.
    pub fn append(
        &self,
        run: Option<&str>,
        events: Vec<Event>,
    ) -> Result<Vec<Entry>, MigrateError> {
        let drafts = events
            .into_iter()
            .map(|event| Draft::new(run, event))
            .collect();
        Ok(self.lock().append_batch(drafts)?)
    }

    /// Appends events of one run as one durable batch, keeping nothing of
    /// them: the ledger then encodes them for its store off this thread
    /// ([`Ledger::append_batch_seqs`]). Returns the seqs they took.
    pub fn record(
        &self,
        run: Option<&str>,
        events: Vec<Event>,
    ) -> Result<std::ops::RangeInclusive<u64>, MigrateError> {
        let drafts = events
            .into_iter()
            .map(|event| Draft::new(run, event))
            .collect();
        Ok(self.lock().append_batch_seqs(drafts)?)
    }

    /// Appends drafts of possibly different runs as one durable batch.
    pub fn append_drafts(&self, drafts: Vec<Draft>) -> Result<Vec<Entry>, MigrateError> {
        Ok(self.lock().append_batch(drafts)?)
    }

    /// Appends one event.
    pub fn append_one(&self, run: Option<&str>, event: Event) -> Result<Entry, MigrateError> {
        Ok(self.append(run, vec![event])?.remove(0))
    }

    /// Gives the ledger back when no other handle is left.
    pub fn into_ledger(self) -> Option<Ledger> {
        Arc::into_inner(self.ledger)
            .map(|mutex| mutex.into_inner().unwrap_or_else(|p| p.into_inner()))
    }
}
