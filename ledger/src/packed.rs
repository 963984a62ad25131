//! Packed row images: the rows of a [`RowsPacked`] event as one binary
//! value, written by the capture straight from the database's values, so
//! that a chunk costs the ledger one value to hash and store instead of
//! thousands of JSON objects.
//!
//! # Format (version 1)
//!
//! All integers are little-endian. For an event of `rows` rows over
//! `columns` columns:
//!
//! ```text
//! images := flags{rows} image{befores} image{afters}
//! flags  := u8: bit 0 the row has a before image (it was not inserted),
//!               bit 1 the row has an after image (it was not deleted);
//!               the other bits are 0, and at least one of the two is set
//! image  := value{columns}
//! value  := 0x00                        NULL
//!         | 0x01 i64                    INTEGER
//!         | 0x02 u64                    REAL: the IEEE-754 bits of the double
//!         | 0x03 len:u32 bytes{len}     TEXT, UTF-8
//!         | 0x04 len:u32 bytes{len}     BLOB
//!         | 0x05 len:u32 bytes{len}     a PostgreSQL value's text, UTF-8
//!         | 0x06                        after images only: the same value
//!                                       as the row's before image holds
//! ```
//!
//! The before images come first, in row order, for the rows with bit 0
//! set; then the after images, in row order, for the rows with bit 1 set.
//! A row's key is the value of each key column in its after image, or in
//! its before image when it has none. Nothing follows the last image.
//!
//! # Sealed images (record format 3)
//!
//! An event's images may instead be one zstd frame (RFC 8878) whose
//! content is the images above, with the content size in its header and
//! its checksum at its end. The two cannot be confused: a frame starts
//! with the bytes `28 b5 2f fd`, and the images above with a row's flags,
//! 1 to 3. The capture seals every event's images ([`Sealer`]) and keeps
//! them plain only where the frame would not be smaller. Row images are
//! most of what a ledger stores and writes; sealed, a million rows of the
//! benchmark's table cost the journal 26 MB of hex instead of 144 MB
//! (BENCHMARKS.md, Databases, run K).
//!
//! In JSON (the canonical form, the journal, exports) the bytes are
//! lowercase hex, as every [`Bytes`] value. `tools/unpack_rows.py` reads
//! them back from an export with Python's standard library, and for
//! sealed images its zstd module (Python 3.14, or the `zstandard` package
//! before it); `rewind show SEQ` prints them unpacked.

use std::borrow::Cow;

use crate::bytes::Bytes;
use crate::event::{RowImage, RowsChanged, RowsPacked, SqlValue};

const NULL: u8 = 0;
const INTEGER: u8 = 1;
const REAL: u8 = 2;
const TEXT: u8 = 3;
const BLOB: u8 = 4;
const TYPED: u8 = 5;
const SAME: u8 = 6;

/// The flag of a row with a before image.
pub const BEFORE: u8 = 1;
/// The flag of a row with an after image.
pub const AFTER: u8 = 2;

/// Builds the images of one event: every row's flags, then the before
/// images, then the after images, each written value by value.
#[derive(Debug, Default)]
pub struct Packer {
    flags: Vec<u8>,
    befores: Vec<u8>,
    afters: Vec<u8>,
}

/// Where the values of one image go.
pub struct ImageWriter<'a> {
    out: &'a mut Vec<u8>,
}

impl ImageWriter<'_> {
    /// Writes values to `out`, in the format of an image's values.
    pub fn new(out: &mut Vec<u8>) -> ImageWriter<'_> {
        ImageWriter { out }
    }

    #[inline]
    pub fn null(&mut self) {
        self.out.push(NULL);
    }

    #[inline]
    pub fn integer(&mut self, value: i64) {
        self.out.push(INTEGER);
        self.out.extend_from_slice(&value.to_le_bytes());
    }

    /// A double, by its exact bits.
    #[inline]
    pub fn real_bits(&mut self, bits: u64) {
        self.out.push(REAL);
        self.out.extend_from_slice(&bits.to_le_bytes());
    }

    /// UTF-8 text. Bytes that are not UTF-8 are the caller's to refuse:
    /// [`unpack`] does.
    #[inline]
    pub fn text(&mut self, text: &[u8]) {
        self.lengthy(TEXT, text);
    }

    #[inline]
    pub fn blob(&mut self, bytes: &[u8]) {
        self.lengthy(BLOB, bytes);
    }

    /// A PostgreSQL value's text.
    pub fn typed(&mut self, text: &str) {
        self.lengthy(TYPED, text.as_bytes());
    }

    /// In an after image: the value the before image holds.
    #[inline]
    pub fn same(&mut self) {
        self.out.push(SAME);
    }

    /// A value as [`SqlValue`] holds it; a `Real` that is not the hex
    /// bits of a double cannot be packed.
    pub fn value(&mut self, value: &SqlValue) -> Result<(), String> {
        match value {
            SqlValue::Null => self.null(),
            SqlValue::Integer(value) => self.integer(*value),
            SqlValue::Real(bits) => match bits
                .strip_prefix("0x")
                .filter(|digits| digits.len() == 16)
                .and_then(|digits| u64::from_str_radix(digits, 16).ok())
            {
                Some(bits) => self.real_bits(bits),
                None => return Err(format!("{bits} is not the bits of a double")),
            },
            SqlValue::Text(text) => self.text(text.as_bytes()),
            SqlValue::Blob(bytes) => self.blob(bytes.as_slice()),
            SqlValue::Typed(text) => self.typed(text),
        }
        Ok(())
    }

    #[inline]
    fn lengthy(&mut self, tag: u8, bytes: &[u8]) {
        let length = u32::try_from(bytes.len()).expect("a value under 4 GiB");
        self.out.push(tag);
        self.out.extend_from_slice(&length.to_le_bytes());
        self.out.extend_from_slice(bytes);
    }
}

impl Packer {
    pub fn new() -> Packer {
        Packer::default()
    }

    /// An empty packer with room for as many rows and bytes as `other`
    /// holds (the next event of a chunk is about as large as the last).
    pub fn sized_as(other: &Packer) -> Packer {
        Packer {
            flags: Vec::with_capacity(other.flags.len()),
            befores: Vec::with_capacity(other.befores.len()),
            afters: Vec::with_capacity(other.afters.len()),
        }
    }

    /// How many rows have been started.
    #[inline]
    pub fn rows(&self) -> usize {
        self.flags.len()
    }

    /// Starts a row; its images are then written with [`Packer::before`]
    /// and [`Packer::after`], in row order within each.
    #[inline]
    pub fn row(&mut self, flags: u8) {
        debug_assert!(flags & (BEFORE | AFTER) != 0 && flags & !(BEFORE | AFTER) == 0);
        self.flags.push(flags);
    }

    /// The writer of the next before image.
    #[inline]
    pub fn before(&mut self) -> ImageWriter<'_> {
        ImageWriter {
            out: &mut self.befores,
        }
    }

    /// The writer of the next after image.
    #[inline]
    pub fn after(&mut self) -> ImageWriter<'_> {
        ImageWriter {
            out: &mut self.afters,
        }
    }

    /// The images, in the format above.
    pub fn finish(self) -> Bytes {
        let mut out = Vec::with_capacity(self.flags.len() + self.befores.len() + self.afters.len());
        out.extend_from_slice(&self.flags);
        out.extend_from_slice(&self.befores);
        out.extend_from_slice(&self.afters);
        Bytes(out)
    }
}

/// The first bytes of a zstd frame, which sealed images start with.
const FRAME_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The most bytes sealed images may unpack to: a frame that announces
/// more is refused before anything is allocated for it.
const PLAIN_MAX: u64 = 1 << 30;

/// The zstd level images are sealed at: the fastest of the standard
/// levels, which compresses the benchmark's images 5.5 times at about
/// 400 MB/s on one core of the machines these were measured on.
const SEAL_LEVEL: i32 = 1;

/// Seals images ([module documentation](self)), reusing one compression
/// context for every event it is given.
pub struct Sealer {
    compressor: zstd::bulk::Compressor<'static>,
}

impl Sealer {
    pub fn new() -> Sealer {
        let mut compressor =
            zstd::bulk::Compressor::new(SEAL_LEVEL).expect("a zstd context at a standard level");
        // The frame's own checksum: a changed byte fails to unseal,
        // instead of unsealing into other images.
        compressor.include_checksum(true).expect("a zstd parameter");
        Sealer { compressor }
    }

    /// The images sealed, or as they are where the frame would not be
    /// smaller, or would unseal to more than [`plain`] accepts.
    pub fn seal(&mut self, plain: Bytes) -> Bytes {
        self.seal_within(plain, PLAIN_MAX)
    }

    fn seal_within(&mut self, plain: Bytes, most: u64) -> Bytes {
        if plain.as_slice().len() as u64 > most {
            return plain;
        }
        match self.compressor.compress(plain.as_slice()) {
            Ok(frame) if frame.len() < plain.as_slice().len() => Bytes(frame),
            _ => plain,
        }
    }
}

impl Default for Sealer {
    fn default() -> Sealer {
        Sealer::new()
    }
}

/// Whether images are sealed (one zstd frame).
pub fn is_sealed(images: &[u8]) -> bool {
    images.starts_with(&FRAME_MAGIC)
}

/// The images in the plain format, unsealed if they are sealed.
pub fn plain(images: &[u8]) -> Result<Cow<'_, [u8]>, String> {
    if !is_sealed(images) {
        return Ok(Cow::Borrowed(images));
    }
    let size = match zstd::zstd_safe::get_frame_content_size(images) {
        Ok(Some(size)) if size <= PLAIN_MAX => size,
        Ok(Some(size)) => {
            return Err(format!(
                "the sealed images announce {size} bytes, more than {PLAIN_MAX}"
            ));
        }
        Ok(None) | Err(_) => return Err("the sealed images announce no size".to_owned()),
    };
    thread_local! {
        // One decompression context a thread, made once (making one costs
        // about as much as unsealing a small event).
        static UNSEALER: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    let plain = UNSEALER
        .with_borrow_mut(|unsealer| {
            let unsealer = match unsealer {
                Some(unsealer) => unsealer,
                None => unsealer.insert(zstd::bulk::Decompressor::new()?),
            };
            unsealer.decompress(images, size as usize)
        })
        .map_err(|error| format!("the sealed images do not unseal: {error}"))?;
    if plain.len() as u64 != size {
        return Err(format!(
            "the sealed images unseal to {} bytes, not the {size} they announce",
            plain.len()
        ));
    }
    Ok(Cow::Owned(plain))
}

/// Packs images as [`RowImage`]s hold them (after images in full). The
/// format keeps no key apart from the images, so a row whose key is not
/// the value at `key_positions` of its images — a key a trigger changed —
/// cannot be packed.
pub fn pack(rows: &[RowImage], key_positions: &[usize]) -> Result<Bytes, String> {
    let mut packer = Packer::new();
    for (index, row) in rows.iter().enumerate() {
        let flags = if row.before.is_some() { BEFORE } else { 0 }
            | if row.after.is_some() { AFTER } else { 0 };
        if flags == 0 {
            return Err(format!(
                "row {index} has neither a before nor an after image"
            ));
        }
        for image in [&row.before, &row.after].into_iter().flatten() {
            let held: Option<Vec<&SqlValue>> = key_positions
                .iter()
                .map(|&position| image.get(position))
                .collect();
            if held.is_none_or(|held| !held.iter().copied().eq(row.key.iter())) {
                return Err(format!(
                    "row {index}: its key ({}) is not the key both its images hold: a key column changed",
                    crate::event::render_key(&row.key)
                ));
            }
        }
        packer.row(flags);
    }
    for before in rows.iter().filter_map(|row| row.before.as_ref()) {
        let mut writer = packer.before();
        for value in before {
            writer.value(value)?;
        }
    }
    for row in rows {
        if let Some(after) = &row.after {
            let mut writer = packer.after();
            for (position, value) in after.iter().enumerate() {
                match row.before.as_ref().and_then(|before| before.get(position)) {
                    Some(old) if old == value => writer.same(),
                    _ => writer.value(value)?,
                }
            }
        }
    }
    Ok(packer.finish())
}

/// Reads values back, one at a time.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

/// A value as read: [`SqlValue`], or "the same as the before image".
enum Read {
    Value(SqlValue),
    Same,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    fn take(&mut self, count: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(count)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| format!("the images end inside a value at byte {}", self.at))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn eight(&mut self) -> Result<[u8; 8], String> {
        Ok(self.take(8)?.try_into().expect("eight bytes"))
    }

    fn lengthy(&mut self) -> Result<&'a [u8], String> {
        let length = u32::from_le_bytes(self.take(4)?.try_into().expect("four bytes"));
        self.take(length as usize)
    }

    fn utf8(&mut self) -> Result<String, String> {
        let at = self.at;
        let bytes = self.lengthy()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("text at byte {at} is not UTF-8"))
    }

    fn read(&mut self) -> Result<Read, String> {
        let at = self.at;
        let tag = self.take(1)?[0];
        Ok(Read::Value(match tag {
            NULL => SqlValue::Null,
            INTEGER => SqlValue::Integer(i64::from_le_bytes(self.eight()?)),
            REAL => SqlValue::Real(format!("0x{:016x}", u64::from_le_bytes(self.eight()?))),
            TEXT => SqlValue::Text(self.utf8()?),
            BLOB => SqlValue::Blob(Bytes(self.lengthy()?.to_vec())),
            TYPED => SqlValue::Typed(self.utf8()?),
            SAME => return Ok(Read::Same),
            other => return Err(format!("unknown value tag {other} at byte {at}")),
        }))
    }

    /// Steps over one value; true if it was "the same as before".
    fn skip(&mut self) -> Result<bool, String> {
        let at = self.at;
        match self.take(1)?[0] {
            NULL => {}
            INTEGER | REAL => {
                self.take(8)?;
            }
            BLOB => {
                self.lengthy()?;
            }
            TEXT | TYPED => {
                if std::str::from_utf8(self.lengthy()?).is_err() {
                    return Err(format!("text at byte {at} is not UTF-8"));
                }
            }
            SAME => return Ok(true),
            other => return Err(format!("unknown value tag {other} at byte {at}")),
        }
        Ok(false)
    }

    fn image(
        &mut self,
        width: usize,
        before: Option<&[SqlValue]>,
    ) -> Result<Vec<SqlValue>, String> {
        (0..width)
            .map(|position| match self.read()? {
                Read::Value(value) => Ok(value),
                Read::Same => before
                    .and_then(|before| before.get(position))
                    .cloned()
                    .ok_or_else(|| {
                        format!("a value at byte {} refers to a before image", self.at - 1)
                    }),
            })
            .collect()
    }
}

/// The values `bytes` holds, written by an [`ImageWriter`] (never "the
/// same as before").
pub fn read_values(bytes: &[u8]) -> Result<Vec<SqlValue>, String> {
    let mut reader = Reader::new(bytes);
    let mut values = Vec::new();
    while reader.at < bytes.len() {
        match reader.read()? {
            Read::Value(value) => values.push(value),
            Read::Same => return Err("a value refers to a before image".to_owned()),
        }
    }
    Ok(values)
}

/// The rows' flags, checked, and where each key column is among the
/// columns.
fn layout<'b>(event: &RowsPacked, bytes: &'b [u8]) -> Result<(&'b [u8], Vec<usize>), String> {
    let rows = event.rows as usize;
    let flags = bytes
        .get(..rows)
        .ok_or_else(|| format!("{rows} rows announced, {} bytes of images", bytes.len()))?;
    let key_positions = event
        .key_columns
        .iter()
        .map(|name| {
            event
                .columns
                .iter()
                .position(|column| &column.name == name)
                .ok_or_else(|| format!("key column {name} is not among the columns"))
        })
        .collect::<Result<Vec<_>, String>>()?;
    if let Some(twice) = (1..key_positions.len())
        .find(|&index| key_positions[..index].contains(&key_positions[index]))
    {
        return Err(format!(
            "key column {} is named twice",
            event.key_columns[twice]
        ));
    }
    if let Some((row, bad)) = flags
        .iter()
        .enumerate()
        .find(|&(_, &flag)| flag == 0 || flag & !(BEFORE | AFTER) != 0)
    {
        return Err(format!("row {row} has flags {bad}"));
    }
    Ok((flags, key_positions))
}

/// The keys of a packed event's rows, in order, read without building
/// their images.
pub fn keys(event: &RowsPacked) -> Result<Vec<Vec<SqlValue>>, String> {
    let mut keys = Vec::new();
    for_each_key(event, |key| keys.push(key.to_vec()))?;
    Ok(keys)
}

/// Calls `each` with the key of every row of a packed event, in order,
/// without building their images or a vector a row (the history index asks
/// this of every event it is given). On an error `each` may already have
/// been called for some rows, which the caller then disregards.
pub fn for_each_key(event: &RowsPacked, mut each: impl FnMut(&[SqlValue])) -> Result<(), String> {
    let bytes = plain(event.images.as_slice())?;
    let (flags, key_positions) = layout(event, &bytes)?;
    let width = event.columns.len();
    let key_width = key_positions.len();
    // Position in the row to position in the key.
    let mut slot = vec![None; width];
    for (index, &position) in key_positions.iter().enumerate() {
        slot[position] = Some(index);
    }
    // Appends a key read from one image to `out`.
    let read_key =
        |reader: &mut Reader<'_>, before: Option<&[SqlValue]>, out: &mut Vec<SqlValue>| {
            let start = out.len();
            out.resize(start + key_width, SqlValue::Null);
            for &index in &slot {
                match index {
                    None => {
                        if reader.skip()? && before.is_none() {
                            return Err("a value refers to a before image the row lacks".to_owned());
                        }
                    }
                    Some(index) => {
                        out[start + index] = match reader.read()? {
                            Read::Value(value) => value,
                            Read::Same => before
                                .map(|before| before[index].clone())
                                .ok_or("a key value refers to a before image")?,
                        };
                    }
                }
            }
            Ok::<_, String>(())
        };
    let mut reader = Reader::new(&bytes[flags.len()..]);
    // Every before image's key, one after the other (the after images
    // follow all of them): room for them all, but never for more than the
    // bytes can hold before images (of `width` values of a byte at least),
    // as the counts come from the record, which may be damaged.
    let before_images = flags.iter().filter(|&&flag| flag & BEFORE != 0).count();
    let mut befores = Vec::with_capacity(
        before_images.min((bytes.len() - flags.len()) / width.max(1)) * key_width,
    );
    for &flag in flags {
        if flag & BEFORE != 0 {
            read_key(&mut reader, None, &mut befores)?;
        }
    }
    let mut key = Vec::with_capacity(key_width);
    let mut at = 0;
    for &flag in flags {
        let before = (flag & BEFORE != 0).then(|| {
            at += key_width;
            &befores[at - key_width..at]
        });
        match (flag & AFTER, before) {
            (0, Some(before)) => each(before),
            _ => {
                // `layout` checked that a row without a before image has
                // an after image.
                key.clear();
                read_key(&mut reader, before, &mut key)?;
                each(&key);
            }
        }
    }
    if reader.at != reader.bytes.len() {
        return Err(format!(
            "{} bytes follow the last image",
            reader.bytes.len() - reader.at
        ));
    }
    Ok(())
}

/// The rows of a packed event, each with its key and both images in full.
pub fn unpack(event: &RowsPacked) -> Result<Vec<RowImage>, String> {
    let bytes = plain(event.images.as_slice())?;
    let (flags, key_positions) = layout(event, &bytes)?;
    let rows = flags.len();
    let width = event.columns.len();
    let mut reader = Reader::new(&bytes[rows..]);
    let mut befores = Vec::with_capacity(rows);
    for &flag in flags {
        befores.push(match flag & BEFORE {
            0 => None,
            _ => Some(reader.image(width, None)?),
        });
    }
    let mut images = Vec::with_capacity(rows);
    for (&flag, before) in flags.iter().zip(befores) {
        let after = match flag & AFTER {
            0 => None,
            _ => Some(reader.image(width, before.as_deref())?),
        };
        let keyed = after
            .as_ref()
            .or(before.as_ref())
            .expect("a row has an image");
        let key = key_positions
            .iter()
            .map(|&position| keyed[position].clone())
            .collect();
        images.push(RowImage { after, before, key });
    }
    if reader.at != reader.bytes.len() {
        return Err(format!(
            "{} bytes follow the last image",
            reader.bytes.len() - reader.at
        ));
    }
    Ok(images)
}

impl RowsPacked {
    /// The same chunk as a [`RowsChanged`], its rows unpacked.
    pub fn unpack(&self) -> Result<RowsChanged, String> {
        Ok(RowsChanged {
            chunk: self.chunk,
            columns: self.columns.clone(),
            database: self.database.clone(),
            key_columns: self.key_columns.clone(),
            rows: unpack(self)?,
            step: self.step,
            table: self.table.clone(),
        })
    }

    /// How many rows were updated, inserted and deleted, read from the
    /// rows' flags alone (none, of images that do not unseal).
    pub fn shape(&self) -> (usize, usize, usize) {
        let bytes = plain(self.images.as_slice()).unwrap_or_default();
        let flags = &bytes[..(self.rows as usize).min(bytes.len())];
        let count = |wanted: u8| flags.iter().filter(|&&flag| flag == wanted).count();
        (count(BEFORE | AFTER), count(AFTER), count(BEFORE))
    }

    /// Packs a [`RowsChanged`].
    pub fn of(rows: &RowsChanged) -> Result<RowsPacked, String> {
        let key_positions = rows
            .key_columns
            .iter()
            .map(|name| {
                rows.columns
                    .iter()
                    .position(|column| &column.name == name)
                    .ok_or_else(|| format!("key column {name} is not among the columns"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(RowsPacked {
            chunk: rows.chunk,
            columns: rows.columns.clone(),
            database: rows.database.clone(),
            images: pack(&rows.rows, &key_positions)?,
            key_columns: rows.key_columns.clone(),
            rows: u32::try_from(rows.rows.len()).expect("fewer than 2^32 rows an event"),
            step: rows.step,
            table: rows.table.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::canonical::tests::value;
    use crate::event::Column;

    /// A row of `width` columns keyed by column 0: inserted, deleted, or
    /// updated with some columns kept.
    fn row(width: usize) -> impl Strategy<Value = RowImage> {
        (
            prop::collection::vec(value(), width),
            prop::collection::vec(prop::option::of(value()), width),
            0u8..3,
        )
            .prop_map(|(first, changes, shape)| {
                let changed: Vec<SqlValue> = first
                    .iter()
                    .zip(changes)
                    .enumerate()
                    .map(|(position, (old, new))| match new {
                        Some(new) if position > 0 => new,
                        _ => old.clone(),
                    })
                    .collect();
                let (before, after) = match shape {
                    0 => (None, Some(first)),
                    1 => (Some(first), None),
                    _ => (Some(first), Some(changed)),
                };
                let key = vec![after.as_ref().or(before.as_ref()).unwrap()[0].clone()];
                RowImage { after, before, key }
            })
    }

    fn event(rows: Vec<RowImage>, width: usize) -> RowsChanged {
        RowsChanged {
            chunk: 0,
            columns: (0..width)
                .map(|i| Column {
                    name: format!("c{i}"),
                    sql_type: "any".into(),
                })
                .collect(),
            database: "sqlite:///x.db".into(),
            key_columns: vec!["c0".into()],
            rows,
            step: 1,
            table: "t".into(),
        }
    }

    proptest! {
        #[test]
        fn unpacks_to_what_was_packed(
            (rows, width) in (1usize..5).prop_flat_map(|width| {
                (prop::collection::vec(row(width), 0..20), Just(width))
            })
        ) {
            let rows = event(rows, width);
            let packed = RowsPacked::of(&rows).unwrap();
            let expected: Vec<Vec<SqlValue>> = rows.rows.iter().map(|row| row.key.clone()).collect();
            prop_assert_eq!(keys(&packed).unwrap(), expected.clone());
            prop_assert_eq!(packed.unpack().unwrap(), rows.clone());
            // Sealed or left plain, the same rows come back.
            let sealed = RowsPacked {
                images: Sealer::new().seal(packed.images.clone()),
                ..packed.clone()
            };
            prop_assert!(sealed.images.as_slice().len() <= packed.images.as_slice().len());
            prop_assert_eq!(keys(&sealed).unwrap(), expected);
            prop_assert_eq!(sealed.unpack().unwrap(), rows);
            prop_assert_eq!(sealed.shape(), packed.shape());
        }
    }

    #[test]
    fn images_are_sealed_only_where_that_makes_them_smaller() {
        let one = RowsPacked::of(&event(
            vec![RowImage {
                after: None,
                before: Some(vec![SqlValue::Integer(1)]),
                key: vec![SqlValue::Integer(1)],
            }],
            1,
        ))
        .unwrap();
        assert_eq!(Sealer::new().seal(one.images.clone()), one.images);
        let many = RowsPacked::of(&event(
            (0..1000)
                .map(|id| RowImage {
                    after: None,
                    before: Some(vec![SqlValue::Integer(id)]),
                    key: vec![SqlValue::Integer(id)],
                })
                .collect(),
            1,
        ))
        .unwrap();
        let sealed = Sealer::new().seal(many.images.clone());
        assert!(is_sealed(sealed.as_slice()));
        // Nor where they would unseal to more than `plain` accepts.
        let bound = many.images.as_slice().len() as u64 - 1;
        assert_eq!(
            Sealer::new().seal_within(many.images.clone(), bound),
            many.images
        );
        assert!(sealed.as_slice().len() * 4 < many.images.as_slice().len());
        assert_eq!(plain(sealed.as_slice()).unwrap(), many.images.as_slice());
    }

    #[test]
    fn sealed_images_that_do_not_unseal_are_refused() {
        let many: Vec<u8> = (0..4000u32).flat_map(|i| (i % 7).to_le_bytes()).collect();
        let sealed = Sealer::new().seal(Bytes(many)).0;
        assert!(is_sealed(&sealed));
        // Cut short, one byte changed, or announcing more than may be
        // allocated for it.
        let mut changed = sealed.clone();
        let last = changed.len() - 2;
        changed[last] ^= 0x55;
        let mut huge = zstd::bulk::compress(&[], 1).unwrap();
        huge.truncate(4);
        // A frame header announcing 2^40 bytes: single segment, 8-byte size.
        huge.extend_from_slice(&[0xe0]);
        huge.extend_from_slice(&(1u64 << 40).to_le_bytes());
        for bad in [&sealed[..sealed.len() / 2], &changed, &huge] {
            let packed = RowsPacked {
                images: Bytes(bad.to_vec()),
                ..RowsPacked::of(&event(Vec::new(), 1)).unwrap()
            };
            assert!(plain(bad).is_err(), "{bad:?}");
            assert!(packed.unpack().is_err());
            assert!(keys(&packed).is_err());
            assert_eq!(packed.shape(), (0, 0, 0));
        }
    }

    #[test]
    fn an_unchanged_column_of_an_update_packs_as_one_byte() {
        let before = vec![SqlValue::Integer(1), SqlValue::Text("a long text".into())];
        let after = vec![SqlValue::Integer(1), SqlValue::Text("changed".into())];
        let rows = event(
            vec![RowImage {
                after: Some(after),
                before: Some(before),
                key: vec![SqlValue::Integer(1)],
            }],
            2,
        );
        let packed = RowsPacked::of(&rows).unwrap();
        // flags, before (9 + 16), after (SAME + 12).
        assert_eq!(packed.images.0.len(), 1 + 9 + 16 + 1 + 12);
        assert_eq!(packed.images.0[1 + 25], SAME);
    }

    #[test]
    fn keys_refuse_what_unpack_refuses_in_other_columns() {
        let two = RowsPacked::of(&event(Vec::new(), 2)).unwrap();
        let one = [INTEGER, 1, 0, 0, 0, 0, 0, 0, 0];
        for images in [
            // A non-key column's text is not UTF-8.
            [&[BEFORE][..], &one, &[TEXT, 1, 0, 0, 0, 0xff]].concat(),
            // A before image's non-key column says "the same as before".
            [&[BEFORE][..], &one, &[SAME]].concat(),
            // So does an inserted row's.
            [&[AFTER][..], &one, &[SAME]].concat(),
        ] {
            let packed = RowsPacked {
                images: Bytes(images),
                rows: 1,
                ..two.clone()
            };
            assert!(packed.unpack().is_err(), "{:?}", packed.images);
            assert!(keys(&packed).is_err(), "{:?}", packed.images);
        }
    }

    #[test]
    fn a_row_whose_key_changed_is_not_packed() {
        let image = |key: i64| Some(vec![SqlValue::Integer(key), SqlValue::Null]);
        let changed = event(
            vec![RowImage {
                after: image(2),
                before: image(1),
                key: vec![SqlValue::Integer(1)],
            }],
            2,
        );
        let problem = RowsPacked::of(&changed).unwrap_err();
        assert!(problem.contains("a key column changed"), "{problem}");
        let misnamed = event(
            vec![RowImage {
                after: None,
                before: image(1),
                key: vec![SqlValue::Integer(3)],
            }],
            2,
        );
        assert!(RowsPacked::of(&misnamed).is_err());
    }

    #[test]
    fn refuses_images_that_do_not_hold_what_they_announce() {
        let rows = event(
            vec![RowImage {
                after: None,
                before: Some(vec![SqlValue::Text("x".into())]),
                key: vec![SqlValue::Text("x".into())],
            }],
            1,
        );
        let good = RowsPacked::of(&rows).unwrap();
        let with = |images: Vec<u8>, count: u32| RowsPacked {
            images: Bytes(images),
            rows: count,
            ..good.clone()
        };
        let bytes = good.images.0.clone();
        let problems = [
            with(bytes.clone(), 2),
            with(bytes[..bytes.len() - 1].to_vec(), 1),
            with([bytes.as_slice(), &[0]].concat(), 1),
            with([&[4u8][..], &bytes[1..]].concat(), 1),
            with([&[1u8, 9][..]].concat(), 1),
            with([&[1u8, 3, 1, 0, 0, 0, 0xff][..]].concat(), 1),
            with([&[2u8, 6][..]].concat(), 1),
            // More rows than any memory holds: refused, not allocated.
            with(bytes.clone(), u32::MAX),
            // A key column named twice.
            RowsPacked {
                key_columns: [good.key_columns.clone(), good.key_columns.clone()].concat(),
                ..good.clone()
            },
        ];
        for packed in problems {
            assert!(packed.unpack().is_err(), "{:?} unpacked", packed.images);
            assert!(keys(&packed).is_err(), "{:?} gave keys", packed.images);
        }
        assert!(
            RowsPacked::of(&event(
                vec![RowImage {
                    after: Some(vec![SqlValue::Real("1.5".into())]),
                    before: None,
                    key: vec![SqlValue::Real("1.5".into())],
                }],
                1
            ))
            .is_err()
        );
    }
}
