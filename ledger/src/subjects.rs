//! The path and row index: which events touched a path (or anything below
//! it) or a row, found without reading every event.
//!
//! sled 0.34 spends about as much on each key it inserts as on the bytes
//! behind it, and an event can touch many paths or rows (a `RowsChanged` of
//! a thousand rows names a thousand), so one index key per subject would
//! cost the store several times the events themselves. Instead, subjects are
//! packed, like the events into pages: consecutive events' subjects form a
//! *group* of up to [`GROUP_ENTRIES`] entries (and [`GROUP_ITEMS`] filter
//! items), stored in the `index` tree as
//!
//! - `F · first` → a Bloom filter ([`FILTER_BITS`] bits) of everything a
//!   query may ask of the group: every path and each of its ancestors
//!   (`/srv/a/x` answers for `/srv/a/x`, `/srv/a`, `/srv` and the root,
//!   ``), every table, every table and row key;
//! - `G · first · segment` → `[1][zstd frame]` of the entries one batch
//!   added to the group, each `[kind: u8][length: u32 LE][subject][seq: u64
//!   LE]`, where a path subject is the path without a trailing `/` and a row
//!   subject is `table \0 key`;
//!
//! where `first` is the big-endian seq of the group's first event and
//! `segment` that of the batch's first event in the group. A query reads
//! every filter (4 KiB a group) and only the segments of the groups whose
//! filter may hold it; the entries are then matched exactly, and
//! `projections::history` filters the events again. Each batch adds one
//! segment to the newest group and writes its filter again, until the group
//! is full; the next writer continues it. Groups are written with the batch
//! whose events they hold, so the index is never behind the events it
//! covers; like every index, it is rebuilt from the events by `reindex`.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

use crate::error::{LedgerError, Result};
use crate::event::{Event, SqlValue, Subject, render_key_into};
use crate::record::Record;

/// Entries at which a group is full and the next one starts.
pub const GROUP_ENTRIES: usize = 4096;
/// Distinct filter items at which a group is full: about 0.8% false
/// positives at [`FILTER_BITS`] bits and [`PROBES`] probes.
pub const GROUP_ITEMS: usize = 3250;
/// The size of every group's filter: 4 KiB, so that a sled leaf of sixteen
/// filters stays inline in sled's log (larger leaves become files of their
/// own, created and deleted at each rewrite).
pub const FILTER_BITS: usize = 1 << 15;

const FILTER_TAG: u8 = b'F';
const GROUP_TAG: u8 = b'G';
const GROUP_FORMAT: u8 = 1;
const FILTER_FORMAT: u8 = 1;
/// Bits a filter item sets.
const PROBES: u32 = 7;

const PATH: u8 = b'p';
const ROW: u8 = b'w';
/// A table, in the filter only: `--table T` without `--key`.
const TABLE: u8 = b't';

/// One indexed subject of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubjectEntry {
    kind: u8,
    subject: Vec<u8>,
    seq: u64,
}

/// Adds the subjects of a record to `out`: those of
/// [`Event::subjects`], a row's written straight from its key (an event
/// names a thousand of them).
pub(crate) fn collect(record: &Record, out: &mut Vec<SubjectEntry>) {
    let row = |out: &mut Vec<SubjectEntry>, table: &str, key: &[SqlValue]| {
        let mut subject = String::with_capacity(table.len() + 24);
        subject.push_str(table);
        subject.push('\0');
        render_key_into(&mut subject, key);
        out.push(SubjectEntry {
            kind: ROW,
            subject: subject.into_bytes(),
            seq: record.seq,
        });
    };
    match &record.event {
        Event::RowsChanged(rows) => {
            for image in &rows.rows {
                row(out, &rows.table, &image.key);
            }
            return;
        }
        // Images that do not unpack name no rows, as in `Event::subjects`.
        Event::RowsPacked(packed) => {
            let start = out.len();
            // As many rows as the event says, within reason: `rows` is
            // read from the record, the images are not unpacked yet.
            out.reserve((packed.rows as usize).min(1 << 16));
            if crate::packed::for_each_key(packed, |key| row(out, &packed.table, key)).is_err() {
                out.truncate(start);
            }
            return;
        }
        _ => {}
    }
    for subject in record.event.subjects() {
        let (kind, subject) = match subject {
            Subject::Path(path) => (PATH, path.trim_end_matches('/').as_bytes().to_vec()),
            Subject::Row(table, key) => {
                let mut bytes = table.into_bytes();
                bytes.push(0);
                bytes.extend_from_slice(key.as_bytes());
                (ROW, bytes)
            }
        };
        out.push(SubjectEntry {
            kind,
            subject,
            seq: record.seq,
        });
    }
}

/// What a query asks of the index.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wanted<'a> {
    /// Events on this path (no trailing `/`) or anything below it.
    Path(&'a str),
    /// Events on any row of this table.
    Table(&'a str),
    /// Events on this row: table and key as `render_key` writes it.
    Row(&'a str, &'a str),
}

impl Wanted<'_> {
    fn filter_item(&self) -> u64 {
        match self {
            Wanted::Path(path) => item_hash(PATH, path.as_bytes()),
            Wanted::Table(table) => item_hash(TABLE, table.as_bytes()),
            Wanted::Row(table, key) => {
                let mut hasher = Fnv::new(ROW);
                hasher.write(table.as_bytes());
                hasher.write(&[0]);
                hasher.write(key.as_bytes());
                hasher.finish()
            }
        }
    }

    fn matches(&self, kind: u8, subject: &[u8]) -> bool {
        match *self {
            Wanted::Path(path) => {
                kind == PATH
                    && subject.starts_with(path.as_bytes())
                    && matches!(subject.get(path.len()), None | Some(b'/'))
            }
            Wanted::Table(table) => {
                kind == ROW
                    && subject.starts_with(table.as_bytes())
                    && subject.get(table.len()) == Some(&0)
            }
            Wanted::Row(table, key) => {
                kind == ROW
                    && subject.len() == table.len() + 1 + key.len()
                    && subject.starts_with(table.as_bytes())
                    && subject[table.len()] == 0
                    && subject.ends_with(key.as_bytes())
            }
        }
    }
}

/// The newest group, kept by the appender and continued with each batch
/// until it is full.
#[derive(Debug, Default)]
pub(crate) struct OpenGroup {
    /// The seq of the group's first event; `None` while it holds nothing.
    first: Option<u64>,
    entries: usize,
    /// The filter items so far, and the filter they set.
    items: HashSet<u64, BuildHasherDefault<ItemHasher>>,
    filter: Vec<u8>,
}

impl OpenGroup {
    /// Loads the newest group of an index, to be continued if not full.
    pub(crate) fn load(index: &sled::Tree) -> Result<OpenGroup> {
        let Some((key, _)) = index.scan_prefix([FILTER_TAG]).next_back().transpose()? else {
            return Ok(OpenGroup::default());
        };
        let first = seq_at(&key, 1)?;
        let mut group = OpenGroup::default();
        let mut ignored = Vec::new();
        for entry in group_entries(index, first)? {
            group.take(&entry, first, &mut ignored);
        }
        if group.is_full() {
            return Ok(OpenGroup::default());
        }
        Ok(group)
    }

    fn is_full(&self) -> bool {
        self.entries >= GROUP_ENTRIES || self.items.len() >= GROUP_ITEMS
    }

    /// Adds one entry to the group and to the segment being built.
    fn take(&mut self, entry: &SubjectEntry, first: u64, segment: &mut Vec<u8>) {
        if self.first.is_none() {
            self.first = Some(first);
            self.filter = vec![0; FILTER_BITS / 8];
        }
        segment.push(entry.kind);
        segment.extend_from_slice(&(entry.subject.len() as u32).to_le_bytes());
        segment.extend_from_slice(&entry.subject);
        segment.extend_from_slice(&entry.seq.to_le_bytes());
        filter_items(entry, |item| {
            if self.items.insert(item) {
                for bit in probes(item, FILTER_BITS) {
                    self.filter[bit / 8] |= 1 << (bit % 8);
                }
            }
        });
        self.entries += 1;
    }

    /// Writes the segment built so far, and the group's filter, into `batch`.
    fn write(&self, segment_first: u64, segment: &[u8], batch: &mut sled::Batch) {
        let Some(first) = self.first else {
            return;
        };
        let mut value = vec![GROUP_FORMAT];
        value
            .extend_from_slice(&zstd::bulk::compress(segment, 1).expect("compressing into memory"));
        let mut key = vec![GROUP_TAG];
        key.extend_from_slice(&first.to_be_bytes());
        key.extend_from_slice(&segment_first.to_be_bytes());
        batch.insert(key, value);
        let mut filter = vec![FILTER_FORMAT];
        filter.extend_from_slice(&self.filter);
        batch.insert(filter_key(first).as_slice(), filter);
    }

    /// Adds a batch's entries (in seq order) to the group, starting new
    /// groups as they fill up, and writes what changed into `batch`.
    pub(crate) fn add(&mut self, entries: Vec<SubjectEntry>, batch: &mut sled::Batch) {
        let mut segment = Vec::new();
        let mut segment_first = None;
        let mut entries = entries.iter().peekable();
        while let Some(entry) = entries.next() {
            let first = *segment_first.get_or_insert(entry.seq);
            self.take(entry, self.first.unwrap_or(first), &mut segment);
            // A group ends between events, never inside one.
            let event_ends = entries.peek().is_none_or(|next| next.seq != entry.seq);
            if self.is_full() && event_ends {
                self.write(first, &segment, batch);
                *self = OpenGroup::default();
                segment.clear();
                segment_first = None;
            }
        }
        if let Some(first) = segment_first {
            self.write(first, &segment, batch);
        }
    }
}

/// Hashes a filter item, itself a hash, with one multiply (SipHash, the
/// default, cost more than the rest of taking an entry).
#[derive(Default)]
struct ItemHasher(u64);

impl Hasher for ItemHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, item: u64) {
        self.0 = (item ^ (item >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    }

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }
}

/// What a query may ask of one entry, as filter items.
fn filter_items(entry: &SubjectEntry, mut item: impl FnMut(u64)) {
    match entry.kind {
        PATH => {
            // Each ancestor is a prefix ending before a `/`: one pass of the
            // hash yields them all.
            let mut hasher = Fnv::new(PATH);
            for &byte in &entry.subject {
                if byte == b'/' {
                    item(hasher.finish());
                }
                hasher.write(&[byte]);
            }
            item(hasher.finish());
        }
        _ => {
            item(item_hash(ROW, &entry.subject));
            let table = entry.subject.split(|&byte| byte == 0).next().unwrap_or(&[]);
            item(item_hash(TABLE, table));
        }
    }
}

fn filter_may_hold(filter: &[u8], item: u64) -> Result<bool> {
    let [FILTER_FORMAT, bytes @ ..] = filter else {
        return Err(damaged("a filter"));
    };
    if bytes.len() * 8 != FILTER_BITS {
        return Err(damaged("a filter"));
    }
    Ok(probes(item, FILTER_BITS).all(|bit| bytes[bit / 8] & (1 << (bit % 8)) != 0))
}

fn damaged(what: &str) -> LedgerError {
    LedgerError::Corrupt {
        seq: 0,
        reason: format!("{what} of the path and row index is damaged (run `rewind reindex`)"),
    }
}

/// The bits an item sets: double hashing of one 64-bit hash.
fn probes(item: u64, bits: usize) -> impl Iterator<Item = usize> {
    let (low, high) = (item & 0xffff_ffff, (item >> 32) | 1);
    (0..u64::from(PROBES))
        .map(move |i| (low.wrapping_add(i.wrapping_mul(high)) % bits as u64) as usize)
}

/// Every entry of a group, from all its segments.
fn group_entries(index: &sled::Tree, first: u64) -> Result<Vec<SubjectEntry>> {
    let mut entries = Vec::new();
    visit_group(index, first, |kind, subject, seq| {
        entries.push(SubjectEntry {
            kind,
            subject: subject.to_vec(),
            seq,
        });
    })?;
    Ok(entries)
}

/// Calls `visit` with the kind, subject and seq of every entry of a group,
/// without copying them out of the decompressed segments.
fn visit_group(
    index: &sled::Tree,
    first: u64,
    mut visit: impl FnMut(u8, &[u8], u64),
) -> Result<()> {
    let mut prefix = vec![GROUP_TAG];
    prefix.extend_from_slice(&first.to_be_bytes());
    for segment in index.scan_prefix(&prefix) {
        let (key, value) = segment?;
        let segment = seq_at(&key, 9)?;
        let bad = |reason: &str| LedgerError::Corrupt {
            seq: segment,
            reason: format!(
                "the path and row index segment of seq {segment} {reason} (run `rewind reindex`)"
            ),
        };
        let [GROUP_FORMAT, frame @ ..] = &value[..] else {
            return Err(bad("has an unknown format"));
        };
        let plain = zstd::stream::decode_all(frame).map_err(|_| bad("does not decompress"))?;
        let mut rest = plain.as_slice();
        while let [kind, l0, l1, l2, l3, tail @ ..] = rest {
            let length = u32::from_le_bytes([*l0, *l1, *l2, *l3]) as usize;
            if tail.len() < length + 8 {
                return Err(bad("ends inside an entry"));
            }
            let (subject, tail) = tail.split_at(length);
            let (seq, tail) = tail.split_at(8);
            visit(
                *kind,
                subject,
                u64::from_le_bytes(seq.try_into().expect("eight bytes")),
            );
            rest = tail;
        }
        if !rest.is_empty() {
            return Err(bad("ends inside an entry"));
        }
    }
    Ok(())
}

/// The seqs of the events a query may want, in order, without duplicates.
pub(crate) fn query(index: &sled::Tree, wanted: Wanted<'_>) -> Result<Vec<u64>> {
    let item = wanted.filter_item();
    let mut seqs = Vec::new();
    for filter in index.scan_prefix([FILTER_TAG]) {
        let (key, filter) = filter?;
        if !filter_may_hold(&filter, item)? {
            continue;
        }
        visit_group(index, seq_at(&key, 1)?, |kind, subject, seq| {
            if wanted.matches(kind, subject) {
                seqs.push(seq);
            }
        })?;
    }
    seqs.sort_unstable();
    seqs.dedup();
    Ok(seqs)
}

fn filter_key(first: u64) -> [u8; 9] {
    let mut key = [FILTER_TAG; 9];
    key[1..].copy_from_slice(&first.to_be_bytes());
    key
}

/// The big-endian seq at `at` in an index key.
fn seq_at(key: &[u8], at: usize) -> Result<u64> {
    key.get(at..at + 8)
        .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| damaged("a key"))
}

fn item_hash(kind: u8, bytes: &[u8]) -> u64 {
    let mut hasher = Fnv::new(kind);
    hasher.write(bytes);
    hasher.finish()
}

/// FNV-1a, 64 bits, over a kind byte and then the subject's bytes, with a
/// final mix so that every bit of the result depends on every input byte.
/// Fixed here rather than taken from std, whose hashers may change between
/// releases: filters are stored.
struct Fnv(u64);

impl Fnv {
    fn new(kind: u8) -> Fnv {
        let mut hasher = Fnv(0xcbf2_9ce4_8422_2325);
        hasher.write(&[kind]);
        hasher
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// splitmix64's finalizer over the state.
    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(subject: &str, seq: u64) -> SubjectEntry {
        SubjectEntry {
            kind: PATH,
            subject: subject.as_bytes().to_vec(),
            seq,
        }
    }

    fn row(table: &str, key: &str, seq: u64) -> SubjectEntry {
        SubjectEntry {
            kind: ROW,
            subject: [table.as_bytes(), &[0], key.as_bytes()].concat(),
            seq,
        }
    }

    /// The seqs of the entries that match, as a query over one group finds them.
    fn matching(entries: &[SubjectEntry], wanted: Wanted<'_>) -> Vec<u64> {
        entries
            .iter()
            .filter(|entry| wanted.matches(entry.kind, &entry.subject))
            .map(|entry| entry.seq)
            .collect()
    }

    #[test]
    fn a_packed_events_rows_are_indexed_by_key_unless_its_images_do_not_unpack() {
        use crate::event::{Column, RowImage, RowsChanged, RowsPacked};
        use crate::{Bytes, Timestamp};
        let text = |s: &str| SqlValue::Text(s.to_owned());
        let image = |key: &str, before: Option<i64>, after: Option<i64>| RowImage {
            key: vec![text(key), SqlValue::Integer(7)],
            before: before.map(|n| vec![SqlValue::Integer(n), text(key), SqlValue::Integer(7)]),
            after: after.map(|n| vec![SqlValue::Integer(n), text(key), SqlValue::Integer(7)]),
        };
        let column = |name: &str| Column {
            name: name.to_owned(),
            sql_type: "text".to_owned(),
        };
        // Key columns after another column, and rows updated, inserted and
        // deleted: each kind of image holds the key in its own place.
        let changed = RowsChanged {
            chunk: 0,
            columns: vec![column("n"), column("k"), column("j")],
            database: "db".to_owned(),
            key_columns: vec!["k".to_owned(), "j".to_owned()],
            rows: vec![
                image("a,b", Some(1), Some(2)),
                image("c", None, Some(3)),
                image("d", Some(4), None),
            ],
            step: 1,
            table: "t".to_owned(),
        };
        let packed = RowsPacked::of(&changed).unwrap();
        let record = |packed: RowsPacked| Record {
            actor: "a".to_owned(),
            event: Event::RowsPacked(packed),
            host: "h".to_owned(),
            ledger_id: "l".to_owned(),
            recorded_at: Timestamp::now(),
            run: None,
            seq: 9,
        };
        let mut out = vec![path("/srv", 1)];
        collect(&record(packed.clone()), &mut out);
        assert_eq!(
            out,
            vec![
                path("/srv", 1),
                row("t", "a\\,b,7", 9),
                row("t", "c,7", 9),
                row("t", "d,7", 9),
            ]
        );
        // A byte too many after the last image: no row, and nothing else lost.
        let mut images = packed.images.0.clone();
        images.push(0);
        let mut out = vec![path("/srv", 1)];
        collect(
            &record(RowsPacked {
                images: Bytes(images),
                ..packed
            }),
            &mut out,
        );
        assert_eq!(out, vec![path("/srv", 1)]);
    }

    #[test]
    fn a_path_query_matches_the_path_and_what_lies_below_it_only() {
        let entries = [
            path("/srv/a", 1),
            path("/srv/a/x", 2),
            path("/srv/ab", 3),
            path("/srv/a-b/y", 4),
            path("/srv", 5),
            path("relative/a", 6),
        ];
        let matching = |wanted| matching(&entries, wanted);
        assert_eq!(matching(Wanted::Path("/srv/a")), [1, 2]);
        assert_eq!(matching(Wanted::Path("/srv")), [1, 2, 3, 4, 5]);
        // The root, as `history --path /` asks for it once trimmed.
        assert_eq!(matching(Wanted::Path("")), [1, 2, 3, 4, 5]);
        assert_eq!(matching(Wanted::Path("relative")), [6]);
        assert_eq!(matching(Wanted::Path("/srv/a/x/deeper")), Vec::<u64>::new());
    }

    #[test]
    fn a_row_query_matches_its_table_and_exact_key_only() {
        let entries = [
            row("t", "1", 1),
            row("t", "10", 2),
            row("tt", "1", 3),
            path("t", 4),
        ];
        let matching = |wanted| matching(&entries, wanted);
        assert_eq!(matching(Wanted::Row("t", "1")), [1]);
        assert_eq!(matching(Wanted::Row("t", "10")), [2]);
        assert_eq!(matching(Wanted::Table("t")), [1, 2]);
        assert_eq!(matching(Wanted::Table("tt")), [3]);
    }

    #[test]
    fn a_filter_holds_every_ancestor_of_its_paths_and_rarely_anything_else() {
        let mut group = OpenGroup::default();
        let mut segment = Vec::new();
        for index in 0..1500 {
            group.take(
                &path(&format!("/srv/vhost-{}/web/f{index}", index % 7), index),
                0,
                &mut segment,
            );
            group.take(
                &row("organizations", &index.to_string(), index),
                0,
                &mut segment,
            );
        }
        let filter = [&[FILTER_FORMAT][..], &group.filter].concat();
        for wanted in [
            Wanted::Path(""),
            Wanted::Path("/srv"),
            Wanted::Path("/srv/vhost-3"),
            Wanted::Path("/srv/vhost-3/web"),
            Wanted::Path("/srv/vhost-3/web/f1494"),
            Wanted::Table("organizations"),
            Wanted::Row("organizations", "1499"),
        ] {
            assert!(
                filter_may_hold(&filter, wanted.filter_item()).unwrap(),
                "{wanted:?}"
            );
        }
        let absent = (0..10_000)
            .filter(|index| {
                let key = format!("absent-{index}");
                filter_may_hold(&filter, Wanted::Row("organizations", &key).filter_item()).unwrap()
            })
            .count();
        // About 0.5% at this fill (3,000 items) by design; 3% would mean a
        // broken filter.
        assert!(absent < 300, "{absent} false positives in 10,000");
    }

    #[test]
    fn groups_end_between_events_and_the_next_writer_continues_the_open_one() {
        let mut open = OpenGroup::default();
        let mut batch = sled::Batch::default();
        // A hundred rows changed again and again: the entries fill the group
        // long before its filter items do.
        let entry = |i: u64| row("t", &(i % 100).to_string(), 1 + i / 3);
        let count = GROUP_ENTRIES as u64 + 10;
        open.add((0..count).map(entry).collect(), &mut batch);
        // The group filled up inside the event of seq 1366 (entries 4095,
        // 4096, 4097), and closed after it.
        assert_eq!(open.first, Some(1367));
        assert_eq!(open.entries, 8);
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new()
            .path(dir.path())
            .temporary(true)
            .open()
            .unwrap();
        let index = db.open_tree("index").unwrap();
        index.apply_batch(batch).unwrap();
        let mut expected: Vec<u64> = (0..count)
            .filter(|i| i % 100 == 96)
            .map(|i| 1 + i / 3)
            .collect();
        expected.dedup();
        assert_eq!(query(&index, Wanted::Row("t", "96")).unwrap(), expected);
        let mut reloaded = OpenGroup::load(&index).unwrap();
        assert_eq!(
            (
                reloaded.first,
                reloaded.entries,
                &reloaded.items,
                &reloaded.filter
            ),
            (open.first, open.entries, &open.items, &open.filter)
        );
        // A second segment of the open group.
        let mut batch = sled::Batch::default();
        reloaded.add(vec![row("t", "x", 1400), row("u", "x", 1401)], &mut batch);
        index.apply_batch(batch).unwrap();
        assert_eq!(
            query(&index, Wanted::Table("t")).unwrap().last(),
            Some(&1400)
        );
        assert_eq!(query(&index, Wanted::Row("u", "x")).unwrap(), [1401]);
        assert_eq!(group_entries(&index, 1367).unwrap().len(), 10);
    }

    #[test]
    fn a_group_is_also_full_when_its_filter_is() {
        let mut open = OpenGroup::default();
        let mut batch = sled::Batch::default();
        // Every row is new: one item each, and one for the table.
        open.add(
            (0..5000).map(|i| row("t", &i.to_string(), i + 1)).collect(),
            &mut batch,
        );
        assert_eq!(open.first, Some(GROUP_ITEMS as u64));
        assert_eq!(open.entries, 5000 - (GROUP_ITEMS - 1));
    }
}
