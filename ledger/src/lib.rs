//! The rewind ledger: the event schema, the record envelope, the binary
//! codec, the hash chain over canonical JSON, the sled store with its
//! write-ahead journal, the blob store, and verification.
//!
//! This crate never prints, never reads the environment and never touches a
//! migration target. Everything above it is a fold over what it stores.

pub mod blob;
pub mod bytes;
pub mod canonical;
pub mod checkpoint;
pub mod codec;
pub mod error;
pub mod event;
pub mod journal;
pub mod packed;
pub mod page;
pub mod record;
pub mod store;
mod subjects;
pub mod verify;
pub mod view;

pub use blob::BlobStore;
pub use bytes::{Bytes, Digest};
pub use error::{LedgerError, Result};
pub use event::*;
pub use record::{Entry, Record, Timestamp};
pub use store::{Access, Draft, Ledger, Origin, Selector};
pub use verify::{ChainReport, Problem, ProblemKind};
pub use view::View;
