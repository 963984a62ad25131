//! The record envelope: one event with who, when, where and in which run.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::bytes::Digest;
use crate::event::Event;

/// A UTC instant with microsecond precision, written as
/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` everywhere (always six fraction digits), so
/// that its text form is fixed and hashes the same in every language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    /// Truncates to whole microseconds.
    pub fn new(instant: DateTime<Utc>) -> Timestamp {
        Timestamp(instant.trunc_subsecs(6))
    }

    /// The current time.
    pub fn now() -> Timestamp {
        Timestamp::new(Utc::now())
    }

    pub fn as_datetime(&self) -> DateTime<Utc> {
        self.0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%dT%H:%M:%S%.6fZ"))
    }
}

impl FromStr for Timestamp {
    type Err = chrono::ParseError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Timestamp::new(
            DateTime::parse_from_rfc3339(text)?.with_timezone(&Utc),
        ))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let parsed: Timestamp = text.parse().map_err(serde::de::Error::custom)?;
        if parsed.to_string() != text {
            return Err(serde::de::Error::custom(format!(
                "timestamp {text:?} is not in canonical form"
            )));
        }
        Ok(parsed)
    }
}

/// One stored fact: the event and its envelope. Fields are in sorted order
/// (see `canonical`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Who did it: `--actor`, `REWIND_ACTOR`, or user@host.
    pub actor: String,
    pub event: Event,
    /// The machine it was recorded on.
    pub host: String,
    /// The ledger this record belongs to; the genesis hash is derived from it.
    pub ledger_id: String,
    pub recorded_at: Timestamp,
    /// The run the event belongs to, if any.
    pub run: Option<String>,
    /// Position in the ledger, gap-free from 1.
    pub seq: u64,
}

/// A record as stored: with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `hash_n = sha256(prev ‖ canonical_json(record))`.
    pub hash: Digest,
    /// `hash_{n-1}`, or the genesis hash for seq 1.
    pub prev: Digest,
    pub record: Record,
}

impl Entry {
    pub fn seq(&self) -> u64 {
        self.record.seq
    }
}
