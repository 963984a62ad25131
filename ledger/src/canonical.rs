//! The hash chain and the canonical JSON it hashes.
//!
//! # Specification (format 1)
//!
//! An auditor can recompute every hash with nothing but a JSON library and
//! sha256; `tools/verify_chain.py` does so without our code.
//!
//! - `hash_0 = sha256(UTF-8("rewind-ledger-v1:" + ledger_id))`.
//! - `hash_n = sha256(hash_{n-1} ‖ canonical_json(record_n))`, where
//!   `hash_{n-1}` enters as its 32 raw bytes and the canonical JSON as its
//!   UTF-8 bytes.
//! - `canonical_json(record)` is the record as a JSON object with
//!   - object keys sorted by code point, at every depth;
//!   - no insignificant whitespace: `,` between items, `:` between key and value;
//!   - strings as UTF-8, unescaped except `"` → `\"`, `\` → `\\`, and the
//!     control characters U+0000–U+001F: `\b \t \n \f \r` in their short
//!     forms, the rest as `\u00xx` with lowercase hex; nothing else is escaped
//!     (not `/`, not U+007F, not U+2028);
//!   - integers in plain decimal; no floats anywhere (a float is a stored
//!     string, e.g. `SqlValue::Real`); `true`, `false`, `null`.
//!
//!   This is exactly Python's
//!   `json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`.
//! - In JSON, the record's fields are: `actor`, `event`, `host`, `ledger_id`,
//!   `recorded_at` (`YYYY-MM-DDTHH:MM:SS.ffffffZ`), `run` (string or null),
//!   `seq`. `event` is `{"<Kind>": {…fields…}}`; unit enum values are strings;
//!   digests and bytes are lowercase hex strings; absent options are null.
//! - A journal or export line is
//!   `{"seq":n,"prev":"<hex hash_{n-1}>","hash":"<hex hash_n>","record":<canonical_json>}`.
//!
//! Implementation note: event structs declare their fields in sorted order,
//! so serde_json's output of a [`Record`] is already canonical; [`canonicalize`]
//! is the general (slower) path for parsed JSON, and the tests check that both
//! agree for every event kind.

use std::io::Write;

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::bytes::Digest;
use crate::record::{Entry, Record};

/// The prefix of the genesis preimage.
pub const GENESIS_PREFIX: &str = "rewind-ledger-v1:";

/// `hash_0` of a ledger.
pub fn genesis(ledger_id: &str) -> Digest {
    Digest::of(format!("{GENESIS_PREFIX}{ledger_id}").as_bytes())
}

/// The canonical JSON of a record.
pub fn record_json(record: &Record) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    write_record_json(&mut out, record);
    out
}

/// Appends the canonical JSON of a record to `out`.
pub fn write_record_json(out: &mut Vec<u8>, record: &Record) {
    serde_json::to_writer(out, record).expect("records serialize to JSON");
}

/// `sha256(prev ‖ canonical)`.
pub fn link(prev: &Digest, canonical: &[u8]) -> Digest {
    let mut hasher = Sha256::new();
    hasher.update(prev.0);
    hasher.update(canonical);
    Digest(hasher.finalize().into())
}

/// Why a JSON value has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotCanonical(pub String);

/// Writes the canonical form of any JSON value, refusing floats.
pub fn canonicalize(value: &Value) -> Result<Vec<u8>, NotCanonical> {
    let mut out = Vec::new();
    write_canonical(value, &mut out)?;
    Ok(out)
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) -> Result<(), NotCanonical> {
    match value {
        Value::Null | Value::Bool(_) | Value::String(_) => {
            serde_json::to_writer(&mut *out, value).expect("writing to a Vec");
        }
        Value::Number(number) => {
            if number.is_f64() {
                return Err(NotCanonical(format!("float {number} is not allowed")));
            }
            write!(out, "{number}").expect("writing to a Vec");
        }
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_canonical(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (index, key) in keys.into_iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, key).expect("writing to a Vec");
                out.push(b':');
                write_canonical(&map[key], out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

/// The journal and export line of an entry, without the newline, given the
/// record's canonical JSON.
pub fn line(entry_seq: u64, prev: &Digest, hash: &Digest, canonical: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(canonical.len() + 180);
    write_line(&mut out, entry_seq, prev, hash, canonical);
    out
}

/// Appends the line of [`line`] to `out`. Appending and verification write
/// one line per entry, so this avoids the formatting machinery: it is a
/// measurable part of both.
pub fn write_line(
    out: &mut Vec<u8>,
    entry_seq: u64,
    prev: &Digest,
    hash: &Digest,
    canonical: &[u8],
) {
    out.extend_from_slice(b"{\"seq\":");
    write!(out, "{entry_seq}").expect("writing to a Vec");
    out.extend_from_slice(b",\"prev\":\"");
    push_hex(out, prev);
    out.extend_from_slice(b"\",\"hash\":\"");
    push_hex(out, hash);
    out.extend_from_slice(b"\",\"record\":");
    out.extend_from_slice(canonical);
    out.push(b'}');
}

fn push_hex(out: &mut Vec<u8>, digest: &Digest) {
    out.extend_from_slice(&digest.hex_bytes());
}

/// The journal and export line of an entry, without the newline.
pub fn entry_line(entry: &Entry) -> Vec<u8> {
    line(
        entry.seq(),
        &entry.prev,
        &entry.hash,
        &record_json(&entry.record),
    )
}
