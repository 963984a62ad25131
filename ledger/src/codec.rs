//! The one binary codec of stored records: bincode 2.0.1 through serde,
//! standard configuration (little endian, variable-length integers).
//!
//! A stored value in the `events` tree is `[FORMAT_VERSION][hash: 32 bytes]
//! [bincode(record)]`. Nothing else in the workspace calls bincode.

use crate::bytes::Digest;
use crate::error::LedgerError;
use crate::record::Record;

/// The newest record format this rewind reads and writes: the layout of
/// the stored value and the record schema's encoding. A record of a newer
/// format is refused (`NewerRecord`), never guessed at.
///
/// Event kinds are only ever added at the end of `Event` (so that the
/// variant indices of the others stay), and each record is written in the
/// oldest format that holds its kind ([`record_format`]): a rewind that
/// reads format 1 still reads every record of a kind it knows, and says
/// of a `RowsPacked` (format 2) that a newer rewind wrote it, instead of
/// calling it a record that does not decode. (`NeverHappened` predates
/// the rule: a rewind older than it reads one as not decoding.) Format 3
/// is a `RowsPacked` whose images are sealed ([`crate::packed`]): the
/// same encoding as format 2, images a format-2 rewind cannot read.
pub const FORMAT_VERSION: u8 = 3;

/// The format a record of `event`'s kind is written in.
pub fn record_format(event: &crate::event::Event) -> u8 {
    match event {
        crate::event::Event::RowsPacked(packed)
            if crate::packed::is_sealed(packed.images.as_slice()) =>
        {
            3
        }
        crate::event::Event::RowsPacked(_) => 2,
        _ => 1,
    }
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes a record with bincode.
pub fn encode_record(record: &Record) -> Vec<u8> {
    bincode::serde::encode_to_vec(record, config()).expect("records contain only encodable types")
}

/// Decodes a record; `seq` is only for the error message.
pub fn decode_record(bytes: &[u8], seq: u64) -> Result<Record, LedgerError> {
    let (record, used) = bincode::serde::decode_from_slice(bytes, config()).map_err(|source| {
        LedgerError::Corrupt {
            seq,
            reason: format!("record does not decode: {source}"),
        }
    })?;
    if used != bytes.len() {
        return Err(LedgerError::Corrupt {
            seq,
            reason: format!("{} trailing bytes after the record", bytes.len() - used),
        });
    }
    Ok(record)
}

/// Encodes a stored value: version, hash, record.
pub fn encode_stored(hash: &Digest, record: &Record) -> Vec<u8> {
    // One buffer, sized for a typical record, that bincode appends to.
    let mut out = Vec::with_capacity(320);
    out.push(record_format(&record.event));
    out.extend_from_slice(&hash.0);
    bincode::serde::encode_into_std_write(record, &mut out, config())
        .expect("records contain only encodable types");
    out
}

/// Fills in the hash of a value made by `encode_stored` with a blank hash.
pub fn set_stored_hash(stored: &mut [u8], hash: &Digest) {
    stored[1..33].copy_from_slice(&hash.0);
}

/// Decodes a stored value into its hash and record.
pub fn decode_stored(bytes: &[u8], seq: u64) -> Result<(Digest, Record), LedgerError> {
    let Some((&version, rest)) = bytes.split_first() else {
        return Err(LedgerError::Corrupt {
            seq,
            reason: "empty stored value".into(),
        });
    };
    if version > FORMAT_VERSION {
        return Err(LedgerError::NewerRecord {
            seq,
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    if version == 0 || rest.len() < 32 {
        return Err(LedgerError::Corrupt {
            seq,
            reason: format!("bad header (version {version}, {} bytes)", bytes.len()),
        });
    }
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&rest[..32]);
    Ok((Digest(hash), decode_record(&rest[32..], seq)?))
}
