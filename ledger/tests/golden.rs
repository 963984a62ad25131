//! Golden fixtures of the stored format: one sample record of every event
//! kind, its stored bytes checked in under `tests/fixtures/v1/` and its
//! canonical JSON as an insta snapshot. A record stored today must decode
//! to the same value, and encode to the same bytes, for as long as format 1
//! is read.
//!
//! To add a kind: give it a sample in `sample`, then run
//! `REWIND_BLESS=1 cargo test -p rewind-ledger --test golden` (writes the
//! fixture) and `cargo insta review` (accepts the snapshot). Never bless a
//! change to an existing fixture: that is a format break.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rewind_ledger::canonical::{self, genesis, link, record_json};
use rewind_ledger::codec::{FORMAT_VERSION, decode_stored, encode_record, record_format};
use rewind_ledger::verify::stored_bytes;
use rewind_ledger::*;

fn digest(byte: u8) -> Digest {
    Digest([byte; 32])
}

fn counting_digest() -> Digest {
    Digest(std::array::from_fn(|index| index as u8))
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

/// The sample event of a kind. Strings carry what JSON must escape or must
/// leave alone (quotes, backslashes, control characters, non-ASCII, U+2028),
/// integers their extremes, options both `None` and `Some`.
fn sample(kind: &str) -> Event {
    match kind {
        "RunStarted" => Event::RunStarted(RunStarted {
            description: "vhosts: var/log → web/log \"quoted\"\tand tabbed".into(),
            spec_id: "vhost-restructure".into(),
            spec_path: "migrations/examples/vhosts.toml".into(),
            spec_sha256: counting_digest(),
            spec_text:
                "[migration]\nid = \"vhost-restructure\"\r\n# \\ backslash \u{1} \u{7f} \u{2028}\n"
                    .into(),
            target: Some("web-01".into()),
            vars: map(&[("root", "/srv/www"), ("Ümlaut", "ß"), ("", "empty key")]),
        }),
        "RunFinished" => Event::RunFinished(RunFinished {
            error: Some("step 3 failed: permission denied (os error 13)".into()),
            outcome: Outcome::Failed,
        }),
        "StepStarted" => Event::StepStarted(StepStarted {
            kind: "move".into(),
            operation: "move /srv/www/a/var/log to /srv/www/a/web/log".into(),
            params: map(&[("from", "var/log"), ("to", "web/log")]),
            step: u32::MAX,
        }),
        "StepFinished" => Event::StepFinished(StepFinished {
            step: 2,
            summary: "3 paths moved, 0 skipped".into(),
        }),
        "StepFailed" => Event::StepFailed(StepFailed {
            error: "interrupted: the process died during the step".into(),
            interrupted: true,
            step: 0,
        }),
        "BackupTaken" => Event::BackupTaken(BackupTaken {
            archive: digest(0xa1),
            copy: None,
            file_count: 1234,
            manifest: digest(0xb2),
            size: u64::MAX,
            source: "/srv/www/a".into(),
            step: 1,
        }),
        "PathMoved" => Event::PathMoved(PathMoved {
            copied: false,
            digest: digest(0x0f),
            file_type: FileType::Dir,
            from: "/srv/www/a/var/log".into(),
            step: 2,
            to: "/srv/www/a/web/log".into(),
        }),
        "ModeChanged" => Event::ModeChanged(ModeChanged {
            new: 0o750,
            old: 0o755,
            path: "/srv/www/a/web".into(),
            step: 3,
        }),
        "OwnerChanged" => Event::OwnerChanged(OwnerChanged {
            new_gid: 33,
            new_uid: 33,
            old_gid: 0,
            old_uid: u32::MAX,
            path: "/srv/www/a/web/app".into(),
            step: 4,
        }),
        "FileWritten" => Event::FileWritten(FileWritten {
            mode: 0o644,
            new: digest(0x11),
            old: Some(digest(0x22)),
            old_mode: Some(0o600),
            path: "/srv/www/a/web/app/public/.htaccess".into(),
            step: 5,
        }),
        "PathRemoved" => Event::PathRemoved(PathRemoved {
            digest: digest(0x33),
            file_type: FileType::Symlink,
            mode: 0o777,
            path: "/srv/www/a/current".into(),
            stash: digest(0x44),
            step: 6,
        }),
        "DirCreated" => Event::DirCreated(DirCreated {
            mode: 0o2750,
            path: "/srv/www/a/web/app/public".into(),
            step: 7,
        }),
        "RowsChanged" => Event::RowsChanged(RowsChanged {
            chunk: 3,
            columns: vec![
                Column {
                    name: "id".into(),
                    sql_type: "bigint".into(),
                },
                Column {
                    name: "name".into(),
                    sql_type: "text".into(),
                },
                Column {
                    name: "ratio".into(),
                    sql_type: "double precision".into(),
                },
                Column {
                    name: "logo".into(),
                    sql_type: "bytea".into(),
                },
                Column {
                    name: "price".into(),
                    sql_type: "numeric(10,2)".into(),
                },
            ],
            database: "postgres://app@db.internal/app".into(),
            key_columns: vec!["id".into()],
            rows: vec![
                RowImage {
                    after: Some(vec![
                        SqlValue::Integer(i64::MIN),
                        SqlValue::Text("Teams → Organizations \"quoted\"".into()),
                        SqlValue::Real("0x3ff8000000000000".into()),
                        SqlValue::Blob(Bytes(vec![0, 1, 0xfe, 0xff])),
                        SqlValue::Typed("12.50".into()),
                    ]),
                    before: None,
                    key: vec![SqlValue::Integer(i64::MIN)],
                },
                RowImage {
                    after: None,
                    before: Some(vec![
                        SqlValue::Integer(i64::MAX),
                        SqlValue::Null,
                        SqlValue::Real("0x8000000000000000".into()),
                        SqlValue::Blob(Bytes(Vec::new())),
                        SqlValue::Null,
                    ]),
                    key: vec![SqlValue::Integer(i64::MAX)],
                },
            ],
            step: 8,
            table: "organizations".into(),
        }),
        "RowsPacked" => {
            // The RowsChanged sample, with an updated row whose unchanged
            // columns pack as "the same as before".
            let Event::RowsChanged(mut rows) = sample("RowsChanged") else {
                unreachable!("the RowsChanged sample is a RowsChanged")
            };
            let before = vec![
                SqlValue::Integer(7),
                SqlValue::Text("line\nbreak, 'quoted'".into()),
                SqlValue::Real("0x7ff8000000000001".into()),
                SqlValue::Null,
                SqlValue::Typed("-0.00".into()),
            ];
            let mut after = before.clone();
            after[1] = SqlValue::Text("Zürich".into());
            rows.rows.push(RowImage {
                after: Some(after),
                before: Some(before),
                key: vec![SqlValue::Integer(7)],
            });
            Event::RowsPacked(RowsPacked::of(&rows).expect("the sample packs"))
        }
        "SequenceMoved" => Event::SequenceMoved(SequenceMoved {
            database: "sqlite:app.db".into(),
            new: i64::MAX,
            old: i64::MIN,
            old_is_called: true,
            sequence: "organizations_id_seq".into(),
            step: 9,
        }),
        "SchemaChanged" => Event::SchemaChanged(SchemaChanged {
            database: "sqlite:app.db".into(),
            down: Some("DROP TABLE organizations;".into()),
            irreversible: false,
            step: 10,
            up: "CREATE TABLE organizations (id INTEGER PRIMARY KEY, name TEXT);".into(),
        }),
        "CommandRun" => Event::CommandRun(CommandRun {
            argv: vec!["systemctl".into(), "reload".into(), "nginx".into()],
            exit_code: Some(-1),
            output: digest(0x55),
            step: 11,
            timed_out: false,
            undo: Some(vec!["systemctl".into(), "reload".into(), "nginx".into()]),
        }),
        "CheckRecorded" => Event::CheckRecorded(CheckRecorded {
            actual: "0".into(),
            check: "orphaned memberships".into(),
            expected: "0".into(),
            passed: true,
            step: 12,
        }),
        "RollbackStarted" => Event::RollbackStarted(RollbackStarted {
            cascade: true,
            skip_drift: false,
            target: RollbackTarget::Step("run-2026-01-02".into(), 3),
        }),
        "Compensated" => Event::Compensated(Compensated { undoes: u64::MAX }),
        "RollbackFinished" => Event::RollbackFinished(RollbackFinished {
            compensated: 12,
            drifted: 1,
            outcome: Outcome::Drifted,
        }),
        "DriftFound" => Event::DriftFound(DriftFound {
            actual: "mode 0777".into(),
            expected: "mode 0750".into(),
            seq: 42,
            subject: "/srv/www/a/web".into(),
        }),
        "Note" => Event::Note(Note {
            about_run: None,
            about_seq: Some(7),
            text: "checked with the customer — «ok» 👍\u{0}\u{1f}\\/".into(),
        }),
        "Checkpoint" => Event::Checkpoint(Checkpoint {
            head: counting_digest(),
            public_key: Bytes(vec![0x5a; 32]),
            seq: 41,
            signature: Bytes((0..64).collect()),
        }),
        "UndoStarted" => Event::UndoStarted(UndoStarted { undoes: 41 }),
        "NeverHappened" => Event::NeverHappened(NeverHappened {
            found: "all 2 rows at their before images: the transaction never committed".into(),
            keys: vec![
                vec![SqlValue::Integer(i64::MIN), SqlValue::Text("a\"b".into())],
                vec![SqlValue::Integer(i64::MAX), SqlValue::Null],
            ],
            paths: vec!["/srv/www/a/web/log".into(), "/srv/www/ü".into()],
            seq: u64::MAX,
            table: Some("applications".into()),
        }),
        other => panic!("no golden sample for event kind {other}: add one to `sample`"),
    }
}

/// Names the kind of every variant with no `_` arm: a new variant of
/// [`Event`] stops this file from compiling, pointing here; give it a sample
/// in [`sample`] and bless its fixture.
fn sampled_kind(event: &Event) -> &'static str {
    match event {
        Event::RunStarted(_) => "RunStarted",
        Event::RunFinished(_) => "RunFinished",
        Event::StepStarted(_) => "StepStarted",
        Event::StepFinished(_) => "StepFinished",
        Event::StepFailed(_) => "StepFailed",
        Event::BackupTaken(_) => "BackupTaken",
        Event::PathMoved(_) => "PathMoved",
        Event::ModeChanged(_) => "ModeChanged",
        Event::OwnerChanged(_) => "OwnerChanged",
        Event::FileWritten(_) => "FileWritten",
        Event::PathRemoved(_) => "PathRemoved",
        Event::DirCreated(_) => "DirCreated",
        Event::RowsChanged(_) => "RowsChanged",
        Event::SequenceMoved(_) => "SequenceMoved",
        Event::SchemaChanged(_) => "SchemaChanged",
        Event::CommandRun(_) => "CommandRun",
        Event::CheckRecorded(_) => "CheckRecorded",
        Event::RollbackStarted(_) => "RollbackStarted",
        Event::Compensated(_) => "Compensated",
        Event::RollbackFinished(_) => "RollbackFinished",
        Event::DriftFound(_) => "DriftFound",
        Event::Note(_) => "Note",
        Event::Checkpoint(_) => "Checkpoint",
        Event::UndoStarted(_) => "UndoStarted",
        Event::NeverHappened(_) => "NeverHappened",
        Event::RowsPacked(_) => "RowsPacked",
    }
}

/// The sample record of a kind: a fixed envelope around the sample event.
fn sample_record(kind: &str) -> Record {
    let event = sample(kind);
    // Run-less kinds get `run: null`, so both shapes of the envelope are pinned.
    let run = match event {
        Event::Note(_) | Event::Checkpoint(_) => None,
        _ => Some("run-2026-01-02".to_owned()),
    };
    Record {
        actor: "ops@web-01".into(),
        event,
        host: "web-01".into(),
        ledger_id: "golden-ledger".into(),
        recorded_at: "2026-01-02T03:04:05.678901Z".parse().unwrap(),
        run,
        seq: 7,
    }
}

/// The stored value of a sample: its hash chains it to a fixed `prev`, so
/// the fixture pins the canonical JSON too.
fn sample_stored(record: &Record) -> Vec<u8> {
    let hash = link(&genesis(&record.ledger_id), &record_json(record));
    stored_bytes(&hash, record)
}

/// Where a kind's fixture lives: under the format its records are
/// written in (`tests/fixtures/v1/`, `v2/`).
fn fixture_path(kind: &str) -> PathBuf {
    format_dir(record_format(&sample(kind))).join(format!("{kind}.hex"))
}

fn format_dir(format: u8) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/v{format}"))
}

/// Hex in lines of 64 characters, so that a diff shows where bytes moved.
fn to_fixture_text(bytes: &[u8]) -> String {
    hex::encode(bytes)
        .as_bytes()
        .chunks(64)
        .map(|chunk| format!("{}\n", std::str::from_utf8(chunk).unwrap()))
        .collect()
}

fn read_fixture(kind: &str) -> Vec<u8> {
    read_hex(&fixture_path(kind), kind)
}

fn read_hex(path: &std::path::Path, kind: &str) -> Vec<u8> {
    let path = path.to_path_buf();
    if !path.exists() && std::env::var_os("REWIND_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, to_fixture_text(&sample_stored(&sample_record(kind)))).unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "fixture {} is missing ({error}); create it with \
             `REWIND_BLESS=1 cargo test -p rewind-ledger --test golden`",
            path.display()
        )
    });
    let hex: String = text.split_whitespace().collect();
    hex::decode(hex).unwrap_or_else(|error| panic!("{} is not hex: {error}", path.display()))
}

#[test]
fn every_kind_has_a_sample_of_that_kind() {
    for kind in EVENT_KINDS {
        let event = sample(kind);
        assert_eq!(event.kind(), *kind);
        assert_eq!(sampled_kind(&event), *kind);
    }
}

/// A serde deserializer that only records the variant names `Event`'s derive
/// passes to `deserialize_enum`: the real list, in declaration order.
struct VariantProbe<'a>(&'a mut Vec<&'static str>);

impl<'de> serde::Deserializer<'de> for VariantProbe<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("only enums are probed"))
    }

    fn deserialize_enum<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.extend_from_slice(variants);
        Err(serde::de::Error::custom("probed"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

/// `EVENT_KINDS` is exactly the enum's variants in declaration order. The
/// order matters: bincode stores a variant by its position.
#[test]
fn event_kinds_lists_every_variant_in_declaration_order() {
    let mut variants = Vec::new();
    let _ = <Event as serde::Deserialize>::deserialize(VariantProbe(&mut variants));
    assert_eq!(variants, EVENT_KINDS);
}

#[test]
fn committed_fixtures_decode_to_the_samples_and_encode_to_the_same_bytes() {
    for kind in EVENT_KINDS {
        let expected = sample_record(kind);
        let bytes = read_fixture(kind);
        assert_eq!(
            bytes[0],
            record_format(&expected.event),
            "{kind}: format byte"
        );
        let (hash, record) = decode_stored(&bytes, 7).unwrap_or_else(|error| {
            panic!("{kind}: the committed fixture no longer decodes: {error}")
        });
        assert_eq!(
            record, expected,
            "{kind}: the fixture decodes to another value"
        );
        assert_eq!(
            stored_bytes(&hash, &record),
            bytes,
            "{kind}: re-encoding the fixture gives other bytes"
        );
        assert_eq!(
            sample_stored(&expected),
            bytes,
            "{kind}: today's encoding of the sample differs from the fixture"
        );
        assert_eq!(
            hash,
            link(&genesis("golden-ledger"), &record_json(&record)),
            "{kind}: the canonical JSON changed (its hash differs from the fixture's)"
        );
    }
}

#[test]
fn no_fixture_without_a_kind() {
    for format in 1..=FORMAT_VERSION {
        let dir = format_dir(format);
        for item in std::fs::read_dir(&dir).unwrap() {
            let name = item.unwrap().file_name().into_string().unwrap();
            let kind = name.strip_suffix(".hex").unwrap_or(&name);
            assert!(
                EVENT_KINDS.contains(&kind),
                "{name} in {} is not the fixture of a kind",
                dir.display()
            );
        }
    }
}

/// A `RowsPacked` as rewind stored it before format 2 (format byte 1,
/// the same body) still decodes to the sample, and its hash is the same.
#[test]
fn a_rows_packed_stored_in_format_1_still_decodes() {
    let old = read_hex(&format_dir(1).join("RowsPacked.hex"), "RowsPacked");
    assert_eq!(old[0], 1);
    let (hash, record) = decode_stored(&old, 7).unwrap();
    assert_eq!(record, sample_record("RowsPacked"));
    let today = read_fixture("RowsPacked");
    assert_eq!((today[0], &today[1..]), (2, &old[1..]));
    assert_eq!(hash, decode_stored(&today, 7).unwrap().0);
}

/// A `RowsPacked` whose images are sealed (format 3, one zstd frame of
/// the plain images) decodes to the sample's rows. Only decoding is pinned:
/// another zstd may seal the same images into other bytes.
#[test]
fn a_sealed_rows_packed_decodes_to_the_samples_rows() {
    let path = format_dir(3).join("RowsPacked.hex");
    let plain = sample_record("RowsPacked");
    if !path.exists() && std::env::var_os("REWIND_BLESS").is_some() {
        let mut sealed = plain.clone();
        let Event::RowsPacked(packed) = &mut sealed.event else {
            unreachable!("the RowsPacked sample is a RowsPacked")
        };
        packed.images = packed::Sealer::new().seal(packed.images.clone());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, to_fixture_text(&sample_stored(&sealed))).unwrap();
    }
    let bytes = read_hex(&path, "RowsPacked");
    assert_eq!(bytes[0], 3, "format byte");
    let (hash, record) = decode_stored(&bytes, 7).unwrap();
    assert_eq!(record_format(&record.event), 3);
    let (Event::RowsPacked(sealed), Event::RowsPacked(expected)) = (&record.event, &plain.event)
    else {
        panic!("not a RowsPacked: {record:?}")
    };
    assert!(packed::is_sealed(sealed.images.as_slice()));
    assert!(sealed.images.as_slice().len() < expected.images.as_slice().len());
    assert_eq!(sealed.unpack().unwrap(), expected.unpack().unwrap());
    assert_eq!(
        packed::keys(sealed).unwrap(),
        packed::keys(expected).unwrap()
    );
    assert_eq!(sealed.shape(), expected.shape());
    assert_eq!(hash, link(&genesis("golden-ledger"), &record_json(&record)));
}

/// A record of a format newer than this rewind reads is refused as such,
/// not as one that does not decode.
#[test]
fn a_record_of_a_newer_format_is_refused_as_newer() {
    let mut bytes = read_fixture("Note");
    bytes[0] = FORMAT_VERSION + 1;
    assert!(matches!(
        decode_stored(&bytes, 7),
        Err(LedgerError::NewerRecord { seq: 7, found, supported })
            if found == FORMAT_VERSION + 1 && supported == FORMAT_VERSION
    ));
}

#[test]
fn canonical_json_of_every_kind() {
    for kind in EVENT_KINDS {
        let json = String::from_utf8(record_json(&sample_record(kind))).unwrap();
        insta::assert_snapshot!(format!("canonical_{kind}"), json);
    }
}

#[test]
fn serde_field_order_is_the_canonical_sorted_order() {
    for kind in EVENT_KINDS {
        let record = sample_record(kind);
        let value = serde_json::to_value(&record).unwrap();
        assert_eq!(
            String::from_utf8(record_json(&record)).unwrap(),
            String::from_utf8(canonical::canonicalize(&value).unwrap()).unwrap(),
            "{kind}: a struct declares its fields out of sorted order"
        );
    }
}

#[test]
fn json_round_trips_every_kind() {
    for kind in EVENT_KINDS {
        let record = sample_record(kind);
        let parsed: Record = serde_json::from_slice(&record_json(&record)).unwrap();
        assert_eq!(parsed, record, "{kind}");
    }
}

#[test]
fn digest_and_bytes_are_raw_in_bincode_and_lowercase_hex_in_json() {
    let digest = Digest(std::array::from_fn(|index| 0xa0 + index as u8));
    let bytes = Bytes(vec![0xde, 0xad, 0xbe, 0xef, 0x00]);

    // bincode's serde serializer is not human readable: a length and the raw bytes.
    let config = bincode::config::standard();
    let encoded = bincode::serde::encode_to_vec(digest, config).unwrap();
    assert_eq!(encoded[0], 32);
    assert_eq!(&encoded[1..], &digest.0[..]);
    let encoded = bincode::serde::encode_to_vec(&bytes, config).unwrap();
    assert_eq!(encoded, [5, 0xde, 0xad, 0xbe, 0xef, 0x00]);
    let (decoded, _): (Bytes, usize) = bincode::serde::decode_from_slice(&encoded, config).unwrap();
    assert_eq!(decoded, bytes);

    // JSON is human readable: lowercase hex strings.
    let json = serde_json::to_string(&digest).unwrap();
    assert_eq!(json, format!("\"{}\"", hex::encode(digest.0)));
    assert!(json.chars().all(|c| !c.is_ascii_uppercase()));
    assert_eq!(serde_json::to_string(&bytes).unwrap(), "\"deadbeef00\"");
    assert_eq!(serde_json::to_string(&Bytes::default()).unwrap(), "\"\"");
    assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), digest);

    // Uppercase hex would hash differently from what was stored: refused.
    assert!(serde_json::from_str::<Bytes>("\"DEADBEEF00\"").is_err());
    assert!(serde_json::from_str::<Digest>("\"abcd\"").is_err());

    // Inside a record, the bincode body holds the digest raw, not as hex.
    let record = sample_record("Checkpoint");
    let body = encode_record(&record);
    let raw = counting_digest().0;
    assert!(body.windows(32).any(|window| window == raw));
    let hex_text = counting_digest().to_hex();
    assert!(!body.windows(64).any(|window| window == hex_text.as_bytes()));
}
