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

use crate::bytes::{Digest, write_hex};
use crate::event::{Column, Event, RowsChanged, RowsPacked, SqlValue};
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
///
/// A `RowsChanged` or a `RowsPacked` (a thousand row images, the bulk of a database step's
/// ledger) is written by hand: the same bytes as serde's, which the tests
/// check on random records, without its per-value machinery. Every other
/// kind goes through serde_json.
pub fn write_record_json(out: &mut Vec<u8>, record: &Record) {
    match &record.event {
        Event::RowsChanged(rows) => write_rows_record(out, record, rows),
        Event::RowsPacked(rows) => write_packed_record(out, record, rows),
        _ => serde_json::to_writer(out, record).expect("records serialize to JSON"),
    }
}

fn write_rows_record(out: &mut Vec<u8>, record: &Record, rows: &RowsChanged) {
    write_envelope(out, record, |out| {
        write_chunk_head(
            out,
            b"RowsChanged",
            rows.chunk,
            &rows.columns,
            &rows.database,
        );
        out.extend_from_slice(b",\"key_columns\":");
        write_names(out, &rows.key_columns);
        out.extend_from_slice(b",\"rows\":[");
        for (index, row) in rows.rows.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"after\":");
            write_image(out, row.after.as_deref());
            out.extend_from_slice(b",\"before\":");
            write_image(out, row.before.as_deref());
            out.extend_from_slice(b",\"key\":");
            write_image(out, Some(&row.key));
            out.push(b'}');
        }
        out.extend_from_slice(b"],\"step\":");
        write_integer(out, rows.step);
        out.extend_from_slice(b",\"table\":");
        write_str(out, &rows.table);
        out.extend_from_slice(b"}}");
    });
}

/// A `RowsPacked`, by hand: its images are hex written straight into the
/// output, not a string built and then scanned for escapes.
fn write_packed_record(out: &mut Vec<u8>, record: &Record, rows: &RowsPacked) {
    write_envelope(out, record, |out| {
        write_chunk_head(
            out,
            b"RowsPacked",
            rows.chunk,
            &rows.columns,
            &rows.database,
        );
        out.extend_from_slice(b",\"images\":\"");
        let bytes = rows.images.as_slice();
        let start = out.len();
        out.resize(start + bytes.len() * 2, 0);
        write_hex(bytes, &mut out[start..]);
        out.extend_from_slice(b"\",\"key_columns\":");
        write_names(out, &rows.key_columns);
        out.extend_from_slice(b",\"rows\":");
        write_integer(out, rows.rows);
        out.extend_from_slice(b",\"step\":");
        write_integer(out, rows.step);
        out.extend_from_slice(b",\"table\":");
        write_str(out, &rows.table);
        out.extend_from_slice(b"}}");
    });
}

/// A record around its event, which `event` writes.
fn write_envelope(out: &mut Vec<u8>, record: &Record, event: impl FnOnce(&mut Vec<u8>)) {
    out.extend_from_slice(b"{\"actor\":");
    write_str(out, &record.actor);
    out.extend_from_slice(b",\"event\":");
    event(out);
    out.extend_from_slice(b",\"host\":");
    write_str(out, &record.host);
    out.extend_from_slice(b",\"ledger_id\":");
    write_str(out, &record.ledger_id);
    out.extend_from_slice(b",\"recorded_at\":");
    write_str(out, &record.recorded_at.to_string());
    out.extend_from_slice(b",\"run\":");
    match &record.run {
        Some(run) => write_str(out, run),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"seq\":");
    write_integer(out, record.seq);
    out.push(b'}');
}

/// `{"<kind>":{"chunk":…,"columns":[…],"database":"…"`: what the two
/// kinds of a chunk's rows begin with.
fn write_chunk_head(
    out: &mut Vec<u8>,
    kind: &[u8],
    chunk: u32,
    columns: &[Column],
    database: &str,
) {
    out.extend_from_slice(b"{\"");
    out.extend_from_slice(kind);
    out.extend_from_slice(b"\":{\"chunk\":");
    write_integer(out, chunk);
    out.extend_from_slice(b",\"columns\":");
    write_columns(out, columns);
    out.extend_from_slice(b",\"database\":");
    write_str(out, database);
}

fn write_columns(out: &mut Vec<u8>, columns: &[Column]) {
    out.push(b'[');
    for (index, column) in columns.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"name\":");
        write_str(out, &column.name);
        out.extend_from_slice(b",\"sql_type\":");
        write_str(out, &column.sql_type);
        out.push(b'}');
    }
    out.push(b']');
}

fn write_names(out: &mut Vec<u8>, names: &[String]) {
    out.push(b'[');
    for (index, name) in names.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_str(out, name);
    }
    out.push(b']');
}

fn write_image(out: &mut Vec<u8>, values: Option<&[SqlValue]>) {
    let Some(values) = values else {
        out.extend_from_slice(b"null");
        return;
    };
    out.push(b'[');
    for (index, value) in values.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        match value {
            SqlValue::Null => out.extend_from_slice(b"\"Null\""),
            SqlValue::Integer(integer) => {
                out.extend_from_slice(b"{\"Integer\":");
                write_integer(out, *integer);
                out.push(b'}');
            }
            SqlValue::Real(bits) => {
                out.extend_from_slice(b"{\"Real\":");
                write_str(out, bits);
                out.push(b'}');
            }
            SqlValue::Text(text) => {
                out.extend_from_slice(b"{\"Text\":");
                write_str(out, text);
                out.push(b'}');
            }
            SqlValue::Blob(bytes) => {
                out.extend_from_slice(b"{\"Blob\":\"");
                let start = out.len();
                out.resize(start + bytes.0.len() * 2, 0);
                write_hex(&bytes.0, &mut out[start..]);
                out.extend_from_slice(b"\"}");
            }
            SqlValue::Typed(text) => {
                out.extend_from_slice(b"{\"Typed\":");
                write_str(out, text);
                out.push(b'}');
            }
        }
    }
    out.push(b']');
}

fn write_integer(out: &mut Vec<u8>, value: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// A JSON string as the specification above escapes it: `"`, `\\` and the
/// control characters U+0000–U+001F, nothing else.
fn write_str(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut start = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        let escaped: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => {
                out.extend_from_slice(&bytes[start..at]);
                const DIGITS: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(DIGITS[usize::from(byte >> 4)]);
                out.push(DIGITS[usize::from(byte & 0x0f)]);
                start = at + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..at]);
        out.extend_from_slice(escaped);
        start = at + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
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

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::bytes::Bytes;
    use crate::event::{Column, RowImage};

    /// Any value, its text rich in what JSON must escape.
    pub(crate) fn value() -> impl Strategy<Value = SqlValue> {
        prop_oneof![
            Just(SqlValue::Null),
            any::<i64>().prop_map(SqlValue::Integer),
            any::<u64>().prop_map(|bits| SqlValue::Real(format!("{bits:#018x}"))),
            any::<String>().prop_map(SqlValue::Text),
            prop::collection::vec(any::<u8>(), 0..40).prop_map(|b| SqlValue::Blob(Bytes(b))),
            "[\\x00-\\x7f\"\\\\é€😀]{0,20}".prop_map(SqlValue::Typed),
        ]
    }

    fn image(width: usize) -> impl Strategy<Value = Vec<SqlValue>> {
        prop::collection::vec(value(), width)
    }

    fn record() -> impl Strategy<Value = Record> {
        (1usize..5)
            .prop_flat_map(|width| {
                (
                    prop::collection::vec(
                        (
                            prop::option::of(image(width)),
                            prop::option::of(image(width)),
                            image(1),
                        ),
                        0..12,
                    ),
                    prop::collection::vec((any::<String>(), "[a-z()0-9, ]{1,12}"), width),
                    any::<String>(),
                    prop::option::of(any::<String>()),
                    (any::<u32>(), any::<u32>(), any::<u64>()),
                )
            })
            .prop_map(|(rows, columns, text, run, (chunk, step, seq))| Record {
                actor: format!("{text}@host\u{1}\t\"\\"),
                event: Event::RowsChanged(RowsChanged {
                    chunk,
                    columns: columns
                        .into_iter()
                        .map(|(name, sql_type)| Column { name, sql_type })
                        .collect(),
                    database: text.clone(),
                    key_columns: vec![text.clone(), "id".into()],
                    rows: rows
                        .into_iter()
                        .map(|(after, before, key)| RowImage { after, before, key })
                        .collect(),
                    step,
                    table: text.clone(),
                }),
                host: text.clone(),
                ledger_id: "ledger\u{7f}\u{2028}".into(),
                recorded_at: "2026-12-01T10:00:00.000001Z".parse().unwrap(),
                run,
                seq,
            })
    }

    proptest! {
        #[test]
        fn rows_and_packed_rows_written_by_hand_are_what_serde_writes(record in record()) {
            let mut by_hand = Vec::new();
            write_record_json(&mut by_hand, &record);
            let by_serde = serde_json::to_vec(&record).unwrap();
            prop_assert_eq!(
                String::from_utf8(by_hand).unwrap(),
                String::from_utf8(by_serde).unwrap()
            );
            let Event::RowsChanged(rows) = &record.event else {
                unreachable!("the strategy makes RowsChanged records")
            };
            // The JSON alone is checked here: any bytes serve as images.
            let packed = RowsPacked {
                chunk: rows.chunk,
                columns: rows.columns.clone(),
                database: rows.database.clone(),
                images: Bytes(serde_json::to_vec(&rows.rows).unwrap()),
                key_columns: rows.key_columns.clone(),
                rows: rows.rows.len() as u32,
                step: rows.step,
                table: rows.table.clone(),
            };
            let packed = Record {
                event: Event::RowsPacked(packed),
                ..record.clone()
            };
            let mut by_hand = Vec::new();
            write_record_json(&mut by_hand, &packed);
            let by_serde = serde_json::to_vec(&packed).unwrap();
            prop_assert_eq!(
                String::from_utf8(by_hand).unwrap(),
                String::from_utf8(by_serde).unwrap()
            );
        }
    }
}
