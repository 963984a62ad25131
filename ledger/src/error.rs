//! Errors of the ledger crate, with the fields an operator needs.

use std::path::PathBuf;

use crate::bytes::Digest;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("{dir} is not a rewind ledger (no LEDGER file)")]
    NotALedger { dir: PathBuf },

    #[error("{dir} already holds a rewind ledger")]
    AlreadyInitialized { dir: PathBuf },

    #[error("{dir} is not empty and is not a rewind ledger")]
    DirNotEmpty { dir: PathBuf },

    #[error("the ledger at {dir} has format {found}, this rewind reads up to format {supported}")]
    NewerFormat {
        dir: PathBuf,
        found: u32,
        supported: u32,
    },

    #[error(
        "seq {seq} was written in record format {found}, this rewind reads up to format {supported}"
    )]
    NewerRecord { seq: u64, found: u8, supported: u8 },

    #[error("the ledger at {dir} is held by another rewind{}", holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default())]
    Locked { dir: PathBuf, holder: Option<u32> },

    #[error("the LEDGER file at {path} is damaged: {reason}")]
    BadMarker { path: PathBuf, reason: String },

    #[error("seq {seq} is corrupt: {reason}")]
    Corrupt { seq: u64, reason: String },

    #[error("there is no seq {seq} (the ledger holds 1 to {head})")]
    UnknownSeq { seq: u64, head: u64 },

    #[error("the journal at {path} is damaged at line {line}: {reason}")]
    Journal {
        path: PathBuf,
        line: u64,
        reason: String,
    },

    #[error("the store and the journal disagree: {reason}")]
    Diverged { reason: String },

    #[error("blob {digest} is missing from the blob store")]
    BlobMissing { digest: Digest },

    #[error("blob {digest} is damaged: its content hashes to {actual}")]
    BlobCorrupt { digest: Digest, actual: Digest },

    #[error("the ledger stopped after a failed write ({reason})")]
    Broken { reason: String },

    #[error(transparent)]
    Io(#[from] std::io::Error),

    #[error("the sled store failed: {0}")]
    Sled(#[from] sled::Error),
}

pub type Result<T, E = LedgerError> = std::result::Result<T, E>;
