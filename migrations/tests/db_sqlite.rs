//! SQLite: every operation recorded through a real ledger and rolled back
//! to a dump identical to the one taken before; drift; bad input.

mod db_common;

use std::collections::BTreeMap;
use std::time::Duration;

use db_common::{SqliteFile, TestLedger, assert_same_dump, chinook_dir, skip_drift};
use rewind_ledger::{Bytes, Event, SqlValue};
use rewind_migrations::db::{
    Bind, Check, Database, DbError, Delete, Expectation, Insert, InsertSource, OnDrift, Schema,
    UndoOptions, Update, Verify, recorded_values,
};

const FIXTURE: &str = r#"
CREATE TABLE things (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    price REAL,
    qty INTEGER,
    data BLOB,
    anything,
    note TEXT COLLATE NOCASE
);
INSERT INTO things (name, price, qty, data, anything, note) VALUES
  ('plain', 1.5, 3, x'00ff', 42, 'a'),
  ('it''s "quoted"', -0.0, -9223372036854775808, x'', 1e308, 'b'),
  ('line
break', 0.1, 9223372036854775807, NULL, 'text', NULL),
  ('ünïcødé 🚀', 1e-300, 0, x'deadbeef', x'01', 'ß'),
  ('nulls', NULL, NULL, NULL, NULL, NULL),
  ('inf', 9e999, 7, x'10', -9e999, 'x'),
  ('mixed', 3, 'seven', 2.5, 2.0, 'y');
CREATE TABLE tags (name TEXT PRIMARY KEY, weight REAL) ;
INSERT INTO tags VALUES ('red', 1.0), ('green', 2.25), ('blue', NULL);
CREATE TABLE nokey (a, b);
CREATE TABLE parent (id INTEGER PRIMARY KEY, code TEXT UNIQUE, label TEXT);
CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent (id) ON DELETE CASCADE,
  parent_code TEXT REFERENCES parent (code) ON UPDATE CASCADE);
INSERT INTO parent VALUES (1, 'p1', 'one');
INSERT INTO child VALUES (1, 1, 'p1');
CREATE TABLE pairs (x TEXT, y INTEGER, v BLOB, PRIMARY KEY (x, y)) WITHOUT ROWID;
INSERT INTO pairs VALUES ('a', 1, x'01'), ('a', 2, NULL), ('b', 1, 'text');
INSERT INTO nokey VALUES (1, 2);
"#;

fn fixture() -> (SqliteFile, Database) {
    let file = SqliteFile::new();
    let mut database = file.connect();
    database.execute_script(FIXTURE).unwrap();
    (file, database)
}

fn set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn sqlite_round_trip_every_operation_restores_identical_dump() {
    let (_file, mut database) = fixture();
    let before = database.dump_sqlite().unwrap();
    let mut ledger = TestLedger::new();
    {
        let mut recorder = ledger.recorder();
        let report = database
            .update(
                &Update {
                    step: 1,
                    table: "things".into(),
                    key: None,
                    filter: Some("name <> 'nulls'".into()),
                    set: set(&[
                        ("price", "coalesce(price, 0) * 2"),
                        ("note", "upper(note)"),
                        ("anything", "'changed'"),
                    ]),
                    chunk_size: Some(2),
                },
                &mut recorder,
            )
            .unwrap();
        assert_eq!(report.rows, 6);
        assert_eq!(report.chunks, 3);
        let report = database
            .insert(
                &Insert {
                    step: 2,
                    table: "things".into(),
                    key: None,
                    source: InsertSource::Rows(vec![
                        BTreeMap::from([
                            ("name".to_owned(), SqlValue::Text("new 'one'".into())),
                            ("data".to_owned(), SqlValue::Blob(Bytes(vec![1, 2, 3]))),
                        ]),
                        BTreeMap::from([
                            ("name".to_owned(), SqlValue::Text("new two".into())),
                            ("data".to_owned(), SqlValue::Null),
                        ]),
                    ]),
                    chunk_size: Some(1000),
                },
                &mut recorder,
            )
            .unwrap();
        assert_eq!(report.rows, 2);
        let report = database
            .insert(
                &Insert {
                    step: 3,
                    table: "tags".into(),
                    key: None,
                    source: InsertSource::Select(
                        "SELECT name || '-tag' AS name, price AS weight FROM things WHERE qty > 0"
                            .into(),
                    ),
                    chunk_size: Some(1),
                },
                &mut recorder,
            )
            .unwrap();
        // A select is materialized once, then inserted one transaction per chunk.
        assert_eq!((report.rows, report.chunks), (4, 4));
        database
            .delete(
                &Delete {
                    step: 4,
                    table: "tags".into(),
                    key: None,
                    filter: Some("name IN ('red', 'blue')".into()),
                    chunk_size: Some(1000),
                },
                &mut recorder,
            )
            .unwrap();
        database
            .delete(
                &Delete {
                    step: 5,
                    table: "things".into(),
                    key: None,
                    filter: Some("id IN (2, 4)".into()),
                    chunk_size: Some(1),
                },
                &mut recorder,
            )
            .unwrap();
        database
            .update(
                &Update {
                    step: 5,
                    table: "pairs".into(),
                    key: None,
                    filter: Some("x = 'a'".into()),
                    set: set(&[("v", "'changed'")]),
                    chunk_size: Some(1),
                },
                &mut recorder,
            )
            .unwrap();
        database
            .delete(
                &Delete {
                    step: 5,
                    table: "pairs".into(),
                    key: None,
                    filter: Some("y = 1".into()),
                    chunk_size: Some(1000),
                },
                &mut recorder,
            )
            .unwrap();
        database
            .schema(
                &Schema {
                    step: 6,
                    kind: "ddl",
                    up: "ALTER TABLE things ADD COLUMN organization_id BIGINT; CREATE INDEX things_name ON things (name)".into(),
                    down: Some("DROP INDEX things_name; ALTER TABLE things DROP COLUMN organization_id".into()),
                    irreversible: false,
                },
                &mut recorder,
            )
            .unwrap();
    }
    let during = database.dump_sqlite().unwrap();
    assert_ne!(before, during);
    let kinds: Vec<&str> = ledger
        .events()
        .iter()
        .map(|(_, event)| event.kind())
        .collect();
    assert!(kinds.contains(&"SequenceMoved"), "{kinds:?}");
    let reports = ledger.roll_back(&mut database, UndoOptions::default());
    assert!(reports.iter().all(|report| report.drift.is_empty()));
    let after = database.dump_sqlite().unwrap();
    assert_same_dump(&before, &after, "sqlite round trip");
    // Undoing the oldest chunk again (a rollback interrupted after its
    // commit, before `Compensated` was recorded) changes nothing: rows
    // already at their before image are recognised, not reported as drift.
    let events = ledger.events();
    let first_chunk = events
        .iter()
        .find(|(_, event)| event.rows_changed().is_some())
        .unwrap();
    let report = database
        .undo(&first_chunk.1, UndoOptions::default())
        .unwrap();
    assert!(report.drift.is_empty(), "{report:?}");
    assert_eq!((report.restored, report.already_restored), (0, 2));
    assert_same_dump(&before, &database.dump_sqlite().unwrap(), "second rollback");
}

#[test]
fn sqlite_images_keep_storage_classes() {
    let (_file, mut database) = fixture();
    let mut ledger = TestLedger::new();
    database
        .update(
            &update_all("things", &[("qty", "qty")], 1000),
            &mut ledger.recorder(),
        )
        .unwrap();
    let events = ledger.events();
    let Some(Ok(rows)) = events[0].1.rows_changed() else {
        panic!("{events:?}")
    };
    let second = rows.rows[1].before.as_ref().unwrap();
    // SQLite itself stores an integral REAL such as -0.0 as an integer on disk, so its sign is not kept.
    assert_eq!(
        rows.rows[5].before.as_ref().unwrap()[2],
        SqlValue::Real(format!("0x{:016x}", f64::INFINITY.to_bits()))
    );
    assert_eq!(second[3], SqlValue::Integer(i64::MIN));
    assert_eq!(second[4], SqlValue::Blob(Bytes(Vec::new())));
    let mixed = rows.rows[6].before.as_ref().unwrap();
    assert_eq!(
        mixed[2],
        SqlValue::Real(format!("0x{:016x}", 3.0f64.to_bits()))
    );
    assert_eq!(mixed[3], SqlValue::Text("seven".into()));
    assert_eq!(
        mixed[4],
        SqlValue::Real(format!("0x{:016x}", 2.5f64.to_bits()))
    );
}

#[test]
fn sqlite_drift_is_detected_and_left_alone() {
    let (_file, mut database) = fixture();
    let mut ledger = TestLedger::new();
    database
        .update(
            &Update {
                step: 1,
                table: "things".into(),
                key: None,
                filter: Some("id <= 3".into()),
                set: set(&[("qty", "100")]),
                chunk_size: Some(1000),
            },
            &mut ledger.recorder(),
        )
        .unwrap();
    // Someone changes a row the migration changed, and one it did not touch.
    database
        .execute_script(
            "UPDATE things SET qty = 555 WHERE id = 2; UPDATE things SET qty = 777 WHERE id = 5",
        )
        .unwrap();
    let events = ledger.events();
    let event = &events[0].1;
    let look = database.check_drift(event).unwrap();
    assert_eq!(look.drift.len(), 1);
    assert_eq!(look.drift[0].key, vec![SqlValue::Integer(2)]);
    assert_eq!(look.drift[0].columns, vec!["qty".to_owned()]);
    // Stop: nothing changes.
    let stopped = database.undo(event, UndoOptions::default()).unwrap();
    assert!(!stopped.applied);
    assert_eq!(
        (stopped.restored, stopped.drift.len()),
        (2, 1),
        "counts what it would restore"
    );
    let qty = |database: &mut Database, id: i64| {
        database
            .query(
                "SELECT qty FROM things WHERE id = ?1",
                &[rewind_migrations::db::Bind::Value(SqlValue::Integer(id))],
            )
            .unwrap()[0][0]
            .clone()
    };
    assert_eq!(qty(&mut database, 1), SqlValue::Integer(100));
    // Skip: the drifted row is left alone, the others restored, the untouched row keeps its write.
    let skipped = database.undo(event, skip_drift()).unwrap();
    assert!(skipped.applied);
    assert_eq!(skipped.restored, 2);
    assert_eq!(skipped.drift.len(), 1);
    assert_eq!(qty(&mut database, 1), SqlValue::Integer(3));
    assert_eq!(qty(&mut database, 2), SqlValue::Integer(555));
    assert_eq!(qty(&mut database, 3), SqlValue::Integer(i64::MAX));
    assert_eq!(qty(&mut database, 5), SqlValue::Integer(777));
    let drift = rewind_migrations::undo::row_drift(events[0].0, &skipped.drift[0]);
    let Event::DriftFound(found) = rewind_migrations::undo::drift_found(&drift, event) else {
        panic!()
    };
    assert_eq!(found.subject, "things (2): columns qty");
}

#[test]
fn sqlite_deleted_row_recreated_since_is_drift() {
    let (_file, mut database) = fixture();
    let mut ledger = TestLedger::new();
    database
        .delete(
            &Delete {
                step: 1,
                table: "tags".into(),
                key: None,
                filter: None,
                chunk_size: Some(1000),
            },
            &mut ledger.recorder(),
        )
        .unwrap();
    database
        .execute_script("INSERT INTO tags VALUES ('red', 9.0)")
        .unwrap();
    let event = ledger.events()[0].1.clone();
    let report = database.undo(&event, skip_drift()).unwrap();
    assert_eq!(report.drift.len(), 1);
    assert_eq!(report.restored, 2);
    let rows = database
        .query("SELECT name, weight FROM tags ORDER BY name", &[])
        .unwrap();
    assert_eq!(rows.len(), 3);
}

fn expect_nothing_changed(database: &mut Database, before: &str) {
    assert_same_dump(before, &database.dump_sqlite().unwrap(), "refused step");
}

#[test]
fn sqlite_bad_input_is_refused_with_nothing_changed() {
    let (file, mut database) = fixture();
    let before = database.dump_sqlite().unwrap();
    let mut ledger = TestLedger::new();
    let mut recorder = ledger.recorder();
    let update =
        |table: &str, key: Option<Vec<String>>, filter: &str, set_pairs: &[(&str, &str)]| Update {
            step: 7,
            table: table.into(),
            key,
            filter: Some(filter.into()),
            set: set(set_pairs),
            chunk_size: Some(1000),
        };
    let error = database
        .update(&update("nope", None, "1=1", &[("a", "1")]), &mut recorder)
        .unwrap_err();
    assert!(
        matches!(&error, DbError::UnknownTable { table, .. } if table == "nope"),
        "{error}"
    );
    let error = database
        .update(
            &update("things", None, "1=1", &[("nope", "1")]),
            &mut recorder,
        )
        .unwrap_err();
    assert!(
        matches!(&error, DbError::UnknownColumn { column, .. } if column == "nope"),
        "{error}"
    );
    let error = database
        .update(&update("nokey", None, "1=1", &[("a", "1")]), &mut recorder)
        .unwrap_err();
    assert!(matches!(&error, DbError::NoKey { .. }), "{error}");
    assert!(error.hint().unwrap().contains("key"));
    let error = database
        .update(
            &update(
                "things",
                Some(vec!["id".into(), "id".into()]),
                "1=1",
                &[("qty", "1")],
            ),
            &mut recorder,
        )
        .unwrap_err();
    assert!(
        matches!(&error, DbError::KeyColumnTwice { column, .. } if column == "id"),
        "{error}"
    );
    // A `set` that smuggles in a second statement is refused, never run
    // in part: the whole table is one chunk here, so no count could tell.
    let error = database
        .update(
            &Update {
                filter: None,
                ..update(
                    "things",
                    None,
                    "",
                    &[("qty", "7); DELETE FROM tags; SELECT (1")],
                )
            },
            &mut recorder,
        )
        .unwrap_err();
    assert!(
        matches!(&error, DbError::Statement { step: 7, message, .. } if message.contains("more than one statement")),
        "{error}"
    );
    let error = database
        .update(
            &update("things", None, "1=1", &[("id", "1")]),
            &mut recorder,
        )
        .unwrap_err();
    assert!(matches!(&error, DbError::SetsKeyColumn { .. }), "{error}");
    let error = database
        .update(
            &update("things", None, "qty >>>> 1", &[("qty", "1")]),
            &mut recorder,
        )
        .unwrap_err();
    assert!(
        matches!(&error, DbError::Statement { step: 7, statement, .. } if statement.contains("qty >>>> 1")),
        "{error}"
    );
    let error = database
        .schema(
            &Schema {
                step: 8,
                kind: "sql",
                up: "UPDATE things SET qty = 0".into(),
                down: None,
                irreversible: false,
            },
            &mut recorder,
        )
        .unwrap_err();
    assert!(
        matches!(
            &error,
            DbError::MissingDown {
                step: 8,
                kind: "sql"
            }
        ),
        "{error}"
    );
    let error = database
        .schema(
            &Schema {
                step: 9,
                kind: "ddl",
                up:
                    "ALTER TABLE things ADD COLUMN x INTEGER; ALTER TABLE nope ADD COLUMN y INTEGER"
                        .into(),
                down: Some("SELECT 1".into()),
                irreversible: false,
            },
            &mut recorder,
        )
        .unwrap_err();
    assert!(
        matches!(&error, DbError::Statement { step: 9, .. }),
        "{error}"
    );
    // Foreign keys that would change rows of another table, uncaptured.
    let error = database
        .delete(
            &Delete {
                step: 10,
                table: "parent".into(),
                key: None,
                filter: None,
                chunk_size: Some(1000),
            },
            &mut recorder,
        )
        .unwrap_err();
    assert!(
        matches!(&error, DbError::CascadingChange { action: "delete", referencing, .. } if referencing == "child"),
        "{error}"
    );
    let error = database
        .update(
            &update("parent", None, "1=1", &[("code", "'p2'")]),
            &mut recorder,
        )
        .unwrap_err();
    assert!(
        matches!(
            &error,
            DbError::CascadingChange {
                action: "update",
                ..
            }
        ),
        "{error}"
    );
    database
        .update(
            &update("parent", None, "1=1", &[("label", "label")]),
            &mut recorder,
        )
        .unwrap();
    // A recorder that fails: the chunk's transaction is rolled back.
    let mut failing = |_events: Vec<Event>| Err::<(), _>(std::io::Error::other("disk full"));
    let error = database
        .update(
            &update("things", None, "1=1", &[("qty", "0")]),
            &mut failing,
        )
        .unwrap_err();
    assert!(matches!(&error, DbError::Record { .. }), "{error}");
    drop(recorder);
    expect_nothing_changed(&mut database, &before);
    assert_eq!(
        ledger.events().len(),
        1,
        "only the harmless update of parent.label"
    );
    // Unreachable: a file that does not exist is not created.
    let missing = file.path.with_file_name("missing.db");
    let error = Database::connect(&format!("sqlite://{}", missing.display())).unwrap_err();
    assert!(matches!(error, DbError::Unreachable { .. }), "{error}");
    assert!(!missing.exists());
    let error = Database::connect("mysql://root:pw@localhost/x").unwrap_err();
    assert_eq!(
        error.to_string(),
        "unsupported database url mysql://root:***@localhost/x"
    );
}

#[test]
fn sqlite_irreversible_statement_is_refused_unless_allowed() {
    let (_file, mut database) = fixture();
    let mut ledger = TestLedger::new();
    database
        .schema(
            &Schema {
                step: 1,
                kind: "sql",
                up: "DELETE FROM nokey".into(),
                down: None,
                irreversible: true,
            },
            &mut ledger.recorder(),
        )
        .unwrap();
    let event = ledger.events()[0].1.clone();
    let error = database.undo(&event, UndoOptions::default()).unwrap_err();
    assert!(
        matches!(error, DbError::Irreversible { step: 1, .. }),
        "{error}"
    );
    let report = database
        .undo(
            &event,
            UndoOptions {
                on_drift: OnDrift::Stop,
                allow_irreversible: true,
                allow_triggers: false,
            },
        )
        .unwrap();
    assert!(!report.applied);
}

#[test]
fn sqlite_verify_records_and_checks() {
    let (_file, mut database) = fixture();
    let mut ledger = TestLedger::new();
    let report = database
        .verify(
            &Verify {
                step: 1,
                record: BTreeMap::from([(
                    "things".to_owned(),
                    "SELECT count(*) FROM things".to_owned(),
                )]),
                checks: vec![],
            },
            &BTreeMap::new(),
            &mut ledger.recorder(),
        )
        .unwrap();
    assert_eq!(report.recorded["things"], "7");
    let events: Vec<Event> = ledger
        .events()
        .into_iter()
        .map(|(_, event)| event)
        .collect();
    let earlier = recorded_values(&events);
    let report = database
        .verify(
            &Verify {
                step: 2,
                record: BTreeMap::new(),
                checks: vec![
                    Check {
                        query: "SELECT count(*) FROM things".into(),
                        expect: Expectation::EqualsRecorded("things".into()),
                    },
                    Check {
                        query: "SELECT count(*) FROM tags".into(),
                        expect: Expectation::Equals("3".into()),
                    },
                    Check {
                        query: "SELECT count(*) FROM tags".into(),
                        expect: Expectation::AtLeast("2".into()),
                    },
                    Check {
                        query: "SELECT * FROM things WHERE name IS NULL".into(),
                        expect: Expectation::ReturnsNoRows,
                    },
                ],
            },
            &earlier,
            &mut ledger.recorder(),
        )
        .unwrap();
    assert!(report.passed, "{report:?}");
    let failed = database
        .verify(
            &Verify {
                step: 3,
                record: BTreeMap::new(),
                checks: vec![
                    Check {
                        query: "SELECT count(*) FROM tags".into(),
                        expect: Expectation::AtLeast("10".into()),
                    },
                    Check {
                        query: "SELECT * FROM things".into(),
                        expect: Expectation::ReturnsNoRows,
                    },
                ],
            },
            &earlier,
            &mut ledger.recorder(),
        )
        .unwrap();
    assert!(!failed.passed);
    assert!(failed.checks.iter().all(|check| !check.passed));
    assert_eq!(failed.checks[1].actual, "7 rows");
}

#[test]
fn sqlite_chinook_migration_rolls_back_to_identical_dump() {
    let file = SqliteFile::copy_of(&chinook_dir().join("Chinook_Sqlite.sqlite"));
    let mut database = file.connect();
    let before = database.dump_sqlite().unwrap();
    let mut ledger = TestLedger::new();
    {
        let mut recorder = ledger.recorder();
        database
            .schema(
                &Schema {
                    step: 1,
                    kind: "ddl",
                    up: "ALTER TABLE Artist ADD COLUMN SortName NVARCHAR(120)".into(),
                    down: Some("ALTER TABLE Artist DROP COLUMN SortName".into()),
                    irreversible: false,
                },
                &mut recorder,
            )
            .unwrap();
        database
            .update(
                &Update {
                    step: 2,
                    table: "Artist".into(),
                    key: None,
                    filter: None,
                    set: set(&[("SortName", "lower(Name)")]),
                    chunk_size: Some(100),
                },
                &mut recorder,
            )
            .unwrap();
        database
            .update(
                &Update {
                    step: 3,
                    table: "Track".into(),
                    key: None,
                    filter: Some(
                        "GenreId IN (SELECT GenreId FROM Genre WHERE Name LIKE 'R%')".into(),
                    ),
                    set: set(&[
                        ("UnitPrice", "UnitPrice * 1.1"),
                        ("Composer", "coalesce(Composer, 'unknown')"),
                    ]),
                    chunk_size: Some(500),
                },
                &mut recorder,
            )
            .unwrap();
        database
            .insert(
                &Insert {
                    step: 4,
                    table: "Playlist".into(),
                    key: None,
                    source: InsertSource::Select(
                        "SELECT 100 + GenreId AS PlaylistId, 'Genre: ' || Name AS Name FROM Genre"
                            .into(),
                    ),
                    chunk_size: Some(1000),
                },
                &mut recorder,
            )
            .unwrap();
        database
            .insert(
                &Insert {
                    step: 5,
                    table: "PlaylistTrack".into(),
                    key: None,
                    source: InsertSource::Select(
                        "SELECT 100 + GenreId AS PlaylistId, TrackId FROM Track".into(),
                    ),
                    chunk_size: Some(1000),
                },
                &mut recorder,
            )
            .unwrap();
        database
            .delete(
                &Delete {
                    step: 6,
                    table: "InvoiceLine".into(),
                    key: None,
                    filter: Some(
                        "InvoiceId IN (SELECT InvoiceId FROM Invoice WHERE BillingCountry = 'USA')"
                            .into(),
                    ),
                    chunk_size: Some(100),
                },
                &mut recorder,
            )
            .unwrap();
        database
            .delete(
                &Delete {
                    step: 7,
                    table: "Invoice".into(),
                    key: None,
                    filter: Some("BillingCountry = 'USA'".into()),
                    chunk_size: Some(100),
                },
                &mut recorder,
            )
            .unwrap();
        database
            .delete(
                &Delete {
                    step: 8,
                    table: "PlaylistTrack".into(),
                    key: None,
                    filter: Some("PlaylistId = 1 AND TrackId < 100".into()),
                    chunk_size: Some(1000),
                },
                &mut recorder,
            )
            .unwrap();
    }
    assert_ne!(before, database.dump_sqlite().unwrap());
    assert_rolls_back(&ledger, &mut database, &before, "chinook sqlite");
    let original = std::process::Command::new("sqlite3")
        .arg(&file.path)
        .arg(".dump")
        .output();
    if let Ok(output) = original {
        let reference = std::process::Command::new("sqlite3")
            .arg(chinook_dir().join("Chinook_Sqlite.sqlite"))
            .arg(".dump")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&reference.stdout),
            "sqlite3 .dump"
        );
    }
}

/// Ledger first: a chunk whose images were recorded but whose transaction
/// never committed (the process died in between) leaves every row at its
/// before image, which `check_drift` reports so that `recover` can tell.
#[test]
fn sqlite_recorded_but_uncommitted_chunk_is_recognised() {
    let (_file, mut database) = fixture();
    let before = database.dump_sqlite().unwrap();
    let mut ledger = TestLedger::new();
    {
        let mut append = ledger.recorder();
        // Records durably, then fails as a crash before the commit would.
        let mut record_then_die = |events: Vec<Event>| -> Result<(), std::io::Error> {
            append(events).unwrap();
            Err(std::io::Error::other("killed before commit"))
        };
        let error = database
            .update(
                &Update {
                    step: 1,
                    table: "things".into(),
                    key: None,
                    filter: None,
                    set: set(&[("qty", "12345")]),
                    chunk_size: Some(1000),
                },
                &mut record_then_die,
            )
            .unwrap_err();
        assert!(matches!(error, DbError::Record { .. }), "{error}");
    }
    assert_same_dump(
        &before,
        &database.dump_sqlite().unwrap(),
        "uncommitted chunk",
    );
    let events = ledger.events();
    assert_eq!(events.len(), 1);
    let report = database.check_drift(&events[0].1).unwrap();
    assert_eq!(
        (report.restored, report.already_restored, report.drift.len()),
        (0, 7, 0)
    );
}

/// SQLite table names are case-insensitive: a step may name `THINGS`; the
/// events carry the declared name, which `sqlite_sequence` uses too.
#[test]
fn sqlite_table_named_in_another_case() {
    let (_file, mut database) = fixture();
    let before = database.dump_sqlite().unwrap();
    let mut ledger = TestLedger::new();
    {
        let mut recorder = ledger.recorder();
        database
            .insert(
                &Insert {
                    step: 1,
                    table: "THINGS".into(),
                    key: None,
                    source: InsertSource::Select(
                        "SELECT 'copy ' || name AS name FROM things".into(),
                    ),
                    chunk_size: Some(3),
                },
                &mut recorder,
            )
            .unwrap();
        database
            .update(
                &Update {
                    step: 2,
                    table: "PAIRS".into(),
                    key: None,
                    filter: None,
                    set: set(&[("v", "x || y")]),
                    chunk_size: Some(2),
                },
                &mut recorder,
            )
            .unwrap();
    }
    let events = ledger.events();
    assert!(events.iter().any(
        |(_, event)| matches!(event.rows_changed(), Some(Ok(rows)) if rows.table == "things")
    ));
    assert!(events.iter().any(
        |(_, event)| matches!(event, Event::SequenceMoved(moved) if moved.sequence == "things")
    ));
    ledger.roll_back(&mut database, UndoOptions::default());
    assert_same_dump(
        &before,
        &database.dump_sqlite().unwrap(),
        "case-insensitive names",
    );
}

/// A deterministic xorshift generator, so that the values below are the
/// same on every run.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Images are read packed (one value per chunk, see `db::images`); every
/// value, whatever its storage class, must come back exactly as the
/// row-by-row decoder reads it: random doubles (subnormals, infinities,
/// both zeros), texts with NUL and control characters or that look like
/// the packing, blobs, and `-0.0` in a column without REAL affinity (which
/// the packed text cannot hold, so its chunk is read again row by row). A
/// chunk of more than 1000 rows is one transaction recorded as several
/// events.
#[test]
fn sqlite_packed_images_equal_row_by_row_reads() {
    let file = SqliteFile::new();
    let mut database = file.connect();
    database
        .execute_script("CREATE TABLE vals (id INTEGER PRIMARY KEY, r REAL, x, t TEXT, b BLOB)")
        .unwrap();
    let texts = [
        "a\0b",
        "\u{1}\t\n\r\"\\\u{7f}\u{80}\u{2028}",
        r#"["1.5"]"#,
        r#"{"b":"00"}"#,
        "",
        "ünïcødé 🚀",
        "[]",
    ];
    // Reals the packed parts hold (|x| < 2^63, no bits below 2^-124) go in
    // the first 2500 rows; zeros without REAL affinity in the next 50, the
    // reals the parts cannot hold in the last 50: the chunks holding those
    // are read again row by row.
    let packable = [
        0.0,
        -0.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        0.1,
        1.0 / 3.0,
        1e-20,
        -7.5,
    ];
    let unpackable = [f64::MIN_POSITIVE, 5e-324, f64::MAX, 1e19, -1e-300];
    let real = |value: f64| SqlValue::Real(format!("0x{:016x}", value.to_bits()));
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    database.execute_script("BEGIN").unwrap();
    for id in 1..=2600_i64 {
        let bits = next(&mut state);
        let zeros = (2501..=2550).contains(&id);
        let late = id > 2550;
        // A random sign and mantissa with an exponent from 2^-70 to 2^62.
        let random = f64::from_bits((bits & 0x800f_ffff_ffff_ffff) | ((953 + bits % 133) << 52));
        let r = match id % 10 {
            0 if late => unpackable[(id as usize / 10) % unpackable.len()],
            1 if late => f64::from_bits(bits).max(f64::MIN),
            0 | 1 => packable[(id as usize / 10) % packable.len()],
            _ => random,
        };
        let x = match id % 6 {
            0 if zeros => real(-0.0),
            1 if zeros => real(0.0),
            0 | 1 => real(random),
            2 => SqlValue::Integer(bits as i64),
            3 => SqlValue::Text(texts[id as usize % texts.len()].to_owned()),
            4 => SqlValue::Blob(Bytes(bits.to_le_bytes().to_vec())),
            _ => {
                let value = packable[id as usize % packable.len()];
                real(if value == 0.0 { 0.25 } else { value })
            }
        };
        let t = if id % 13 == 0 {
            SqlValue::Null
        } else {
            SqlValue::Text(format!("{} {id}", texts[id as usize % texts.len()]))
        };
        let b = match id % 4 {
            0 => SqlValue::Null,
            1 => SqlValue::Blob(Bytes(Vec::new())),
            _ => SqlValue::Blob(Bytes(bits.to_be_bytes()[..(id % 8) as usize].to_vec())),
        };
        database
            .query(
                "INSERT INTO vals VALUES (?1, ?2, ?3, ?4, ?5)",
                &[
                    Bind::Value(SqlValue::Integer(id)),
                    Bind::Value(real(r)),
                    Bind::Value(x),
                    Bind::Value(t),
                    Bind::Value(b),
                ],
            )
            .unwrap();
    }
    database.execute_script("COMMIT").unwrap();
    let exact = database
        .query("SELECT id, r, x, t, b FROM vals ORDER BY id", &[])
        .unwrap();
    assert!(exact.iter().any(|row| row[2] == real(-0.0)));
    let before = database.dump_sqlite().unwrap();
    let mut ledger = TestLedger::new();
    {
        let mut recorder = ledger.recorder();
        // Every row (key ranges: 1-2550, read again row by row for its
        // zeros, then 2551-2600), then a filtered part (keys held aside).
        let report = database
            .update(
                &Update {
                    step: 1,
                    table: "vals".into(),
                    key: None,
                    filter: None,
                    set: set(&[("t", "t")]),
                    chunk_size: Some(2550),
                },
                &mut recorder,
            )
            .unwrap();
        assert_eq!((report.rows, report.chunks, report.events), (2600, 2, 4));
        let report = database
            .update(
                &Update {
                    step: 2,
                    table: "vals".into(),
                    key: None,
                    filter: Some("id % 3 = 0".into()),
                    set: set(&[("r", "r"), ("x", "x"), ("b", "b")]),
                    chunk_size: Some(800),
                },
                &mut recorder,
            )
            .unwrap();
        assert_eq!(report.rows, 866);
        let report = database
            .delete(
                &Delete {
                    step: 3,
                    table: "vals".into(),
                    key: None,
                    filter: Some("id % 2 = 1".into()),
                    chunk_size: Some(1200),
                },
                &mut recorder,
            )
            .unwrap();
        assert_eq!((report.rows, report.chunks, report.events), (1300, 2, 3));
    }
    let by_id = |key: &[SqlValue]| {
        let SqlValue::Integer(id) = key[0] else {
            panic!("{key:?}")
        };
        &exact[id as usize - 1]
    };
    let mut seen = 0;
    for (_, event) in ledger.events() {
        let Some(Ok(rows)) = event.rows_changed() else {
            continue;
        };
        assert!(rows.rows.len() <= 1000);
        for image in &rows.rows {
            let exact = by_id(&image.key);
            assert_eq!(
                image.before.as_ref(),
                Some(exact),
                "before of {:?}",
                image.key
            );
            if rows.step < 3 {
                assert_eq!(
                    image.after.as_ref(),
                    Some(exact),
                    "after of {:?}",
                    image.key
                );
            }
            seen += 1;
        }
        let keys: Vec<&SqlValue> = rows.rows.iter().map(|image| &image.key[0]).collect();
        assert!(keys.is_sorted_by(|a, b| match (a, b) {
            (SqlValue::Integer(a), SqlValue::Integer(b)) => a < b,
            _ => false,
        }));
    }
    assert_eq!(seen, 2600 + 866 + 1300);
    assert_rolls_back(&ledger, &mut database, &before, "packed images");
}

/// The after image reads back only the columns an update sets, unless a
/// trigger could change others: then the whole row is read back.
#[test]
fn sqlite_after_image_sees_what_a_trigger_changed() {
    let (_file, mut database) = fixture();
    database
        .execute_script(
            "CREATE TRIGGER stamp AFTER UPDATE OF qty ON things BEGIN \
             UPDATE things SET note = 'touched' WHERE id = NEW.id; END",
        )
        .unwrap();
    let mut ledger = TestLedger::new();
    database
        .update(
            &Update {
                step: 1,
                table: "things".into(),
                key: None,
                filter: Some("id <= 2".into()),
                set: set(&[("qty", "qty + 1")]),
                chunk_size: Some(1000),
            },
            &mut ledger.recorder(),
        )
        .unwrap();
    let events = ledger.events();
    let Some(Ok(rows)) = events[0].1.rows_changed() else {
        panic!("{events:?}")
    };
    let note = rows.columns.iter().position(|c| c.name == "note").unwrap();
    for image in &rows.rows {
        assert_eq!(
            image.after.as_ref().unwrap()[note],
            SqlValue::Text("touched".into())
        );
    }
    let now = database
        .query("SELECT * FROM things WHERE id <= 2 ORDER BY id", &[])
        .unwrap();
    let after: Vec<Vec<SqlValue>> = rows
        .rows
        .iter()
        .map(|image| image.after.clone().unwrap())
        .collect();
    assert_eq!(after, now);
}

/// SQLite cannot turn a trigger off for one transaction: restoring rows of
/// a table with triggers is refused, naming them, before anything is
/// touched, unless allowed (`--allow-triggers`: they fire, and the report
/// names them); without the trigger the rollback goes through.
#[test]
fn sqlite_rollback_refuses_to_fire_triggers_unless_allowed() {
    let (_file, mut database) = fixture();
    let original = database.dump_sqlite().unwrap();
    let mut ledger = TestLedger::new();
    database
        .update(
            &Update {
                step: 1,
                table: "things".into(),
                key: None,
                filter: Some("id <= 3".into()),
                set: set(&[("qty", "qty + 1")]),
                chunk_size: Some(1000),
            },
            &mut ledger.recorder(),
        )
        .unwrap();
    database
        .execute_script(
            "CREATE TABLE audit (id INTEGER); \
             CREATE TRIGGER audit_things AFTER UPDATE ON things BEGIN INSERT INTO audit VALUES (NEW.id); END",
        )
        .unwrap();
    let before_rollback = database.dump_sqlite().unwrap();
    let (_, event) = ledger.events().pop().unwrap();
    // Looking is allowed: a dry run changes nothing, so nothing fires.
    let look = database.check_drift(&event).unwrap();
    assert_eq!((look.restored, look.drift.len()), (3, 0));
    let error = database.undo(&event, UndoOptions::default()).unwrap_err();
    assert!(
        matches!(&error, DbError::TriggersWouldFire { table, triggers, .. }
            if table == "things" && triggers == "audit_things"),
        "{error}"
    );
    assert!(error.hint().unwrap().contains("--allow-triggers"));
    assert_same_dump(
        &before_rollback,
        &database.dump_sqlite().unwrap(),
        "refused rollback",
    );
    // Allowed, the rows come back and the trigger fires, and says so.
    let allowed = UndoOptions {
        allow_triggers: true,
        ..UndoOptions::default()
    };
    let copy = tempfile::NamedTempFile::new().unwrap();
    database
        .execute_script(&format!("VACUUM INTO '{}'", copy.path().display()))
        .unwrap();
    let mut fired = Database::connect(&format!("sqlite://{}", copy.path().display())).unwrap();
    let report = fired.undo(&event, allowed).unwrap();
    assert_eq!(
        (report.restored, report.triggers_fired),
        (3, vec!["audit_things".to_owned()])
    );
    assert_eq!(
        fired.query("SELECT count(*) FROM audit", &[]).unwrap(),
        vec![vec![rewind_ledger::SqlValue::Integer(3)]]
    );
    database
        .execute_script("DROP TRIGGER audit_things; DROP TABLE audit")
        .unwrap();
    let report = database.undo(&event, UndoOptions::default()).unwrap();
    assert_eq!((report.restored, report.triggers_fired.len()), (3, 0));
    assert_same_dump(&original, &database.dump_sqlite().unwrap(), "rolled back");
}

/// An insert's chunk of more than 1000 rows is one transaction recorded as
/// several events of at most 1000 rows.
#[test]
fn sqlite_insert_chunk_is_recorded_as_events_of_at_most_1000_rows() {
    let (_file, mut database) = fixture();
    let before = database.dump_sqlite().unwrap();
    let mut ledger = TestLedger::new();
    let report = database
        .insert(
            &Insert {
                step: 1,
                table: "tags".into(),
                key: None,
                source: InsertSource::Select(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500) \
                     SELECT 'tag ' || i AS name, i * 0.25 AS weight FROM n"
                        .into(),
                ),
                chunk_size: Some(2000),
            },
            &mut ledger.recorder(),
        )
        .unwrap();
    assert_eq!((report.rows, report.chunks, report.events), (2500, 2, 3));
    let sizes: Vec<usize> = ledger
        .events()
        .iter()
        .filter_map(|(_, event)| event.rows_changed().map(|rows| rows.unwrap().rows.len()))
        .collect();
    assert_eq!(sizes, [1000, 1000, 500]);
    ledger.roll_back(&mut database, UndoOptions::default());
    assert_same_dump(
        &before,
        &database.dump_sqlite().unwrap(),
        "insert rolled back",
    );
}

/// A step that leaves its chunk size to rewind runs on SQLite in chunks
/// sized by time: the first of 10,000 rows, each next one from the pace of
/// the last, within a quarter and four times of it (never fewer than 1000
/// rows). A chunk time of zero makes every next chunk a quarter of the
/// last, an hour four times the last: the chunks come out the same on any
/// machine. Whichever way a chunk is captured (the preupdate hook, keys a
/// filter picked, rows read before and after the statement for a table
/// with a generated column, a delete), every row is changed once, recorded
/// once, and rolled back exactly.
#[test]
fn sqlite_steps_in_chunks_sized_by_time_roll_back_exactly() {
    let file = SqliteFile::new();
    let mut database = file.connect();
    database
        .execute_script(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, s TEXT); \
             CREATE TABLE g (id INTEGER PRIMARY KEY, n INTEGER, \
               d INTEGER GENERATED ALWAYS AS (n * 2)); \
             WITH RECURSIVE i(v) AS (SELECT 1 UNION ALL SELECT v + 1 FROM i WHERE v < 45000) \
             INSERT INTO t SELECT v, v * 3, 'row ' || v FROM i; \
             INSERT INTO g (id, n) SELECT id, n FROM t WHERE id <= 15000",
        )
        .unwrap();
    let before = database.dump_sqlite().unwrap();
    let mut ledger = TestLedger::new();
    let (quarter, four) = (Duration::ZERO, Duration::from_secs(3600));
    let timed = |step, table, sets: &[(&str, &str)], filter: Option<&str>| Update {
        step,
        chunk_size: None,
        filter: filter.map(str::to_owned),
        ..update_all(table, sets, 1)
    };
    // 45,000 rows: 10,000, 2,500, then 32 chunks of 1000 and one of 500.
    database.set_chunk_time(quarter);
    let all = database
        .update(
            &timed(1, "t", &[("n", "n + 1"), ("s", "s || '!'")], None),
            &mut ledger.recorder(),
        )
        .unwrap();
    assert_eq!((all.rows, all.chunks), (45_000, 35));
    // 22,500 picked rows: 10,000, then the 12,500 left of the 40,000 the
    // next chunk may hold.
    database.set_chunk_time(four);
    let picked = database
        .update(
            &timed(2, "t", &[("n", "n * 2")], Some("id % 2 = 1")),
            &mut ledger.recorder(),
        )
        .unwrap();
    assert_eq!((picked.rows, picked.chunks), (22_500, 2));
    // Read before and after the statement: 10,000, 2,500, 1000, 1000, 500.
    database.set_chunk_time(quarter);
    let generated = database
        .update(
            &timed(3, "g", &[("n", "n - 1")], None),
            &mut ledger.recorder(),
        )
        .unwrap();
    assert_eq!((generated.rows, generated.chunks), (15_000, 5));
    // 22,500 deleted rows: 10,000, 2,500 and ten of 1000, the last of
    // which leaves nothing for a next one.
    let deleted = database
        .delete(
            &Delete {
                step: 4,
                table: "t".into(),
                key: None,
                filter: Some("id % 2 = 0".into()),
                chunk_size: None,
            },
            &mut ledger.recorder(),
        )
        .unwrap();
    assert_eq!((deleted.rows, deleted.chunks), (22_500, 12));
    // The first step's rows, each recorded once, in key order.
    let mut keys: Vec<i64> = Vec::new();
    for (_, event) in ledger.events() {
        let rows = event.rows_changed().unwrap().unwrap();
        if rows.step == 1 {
            keys.extend(rows.rows.iter().map(|row| match row.key.as_slice() {
                [SqlValue::Integer(id)] => *id,
                other => panic!("key {other:?}"),
            }));
        }
    }
    assert_eq!(keys, (1..=45_000).collect::<Vec<i64>>());
    // Left: the odd rows, each updated by the first two steps.
    let left = database
        .query(
            "SELECT count(*), sum(id % 2 = 1 AND n = (id * 3 + 1) * 2 AND s = 'row ' || id || '!') \
             FROM t",
            &[],
        )
        .unwrap();
    assert_eq!(
        left,
        vec![vec![SqlValue::Integer(22_500), SqlValue::Integer(22_500)]]
    );
    ledger.roll_back(&mut database, UndoOptions::default());
    assert_same_dump(
        &before,
        &database.dump_sqlite().unwrap(),
        "timed chunks rolled back",
    );
}

/// A key that is not the rowid and has no index: the update scans the
/// table in rowid order, the opposite of the key order in which the chunk
/// was picked, so the rows its RETURNING gives are read back in key order
/// instead; every image still belongs to its own row.
#[test]
fn sqlite_after_images_follow_the_picked_rows_whatever_order_the_update_returns() {
    let (_file, mut database, before) = scratch(
        "CREATE TABLE codes (id INTEGER PRIMARY KEY, code TEXT NOT NULL, v INTEGER); \
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 250) \
             INSERT INTO codes SELECT i, printf('c%04d', 1000 - i), i * 3 FROM s",
    );
    let mut ledger = TestLedger::new();
    let report = database
        .update(
            &Update {
                step: 1,
                table: "codes".into(),
                key: Some(vec!["code".into()]),
                filter: None,
                set: set(&[("v", "v + id")]),
                chunk_size: Some(100),
            },
            &mut ledger.recorder(),
        )
        .unwrap();
    assert_eq!((report.rows, report.chunks), (250, 3));
    let mut seen = 0;
    for (_, event) in ledger.events() {
        let Event::RowsPacked(packed) = &event else {
            continue;
        };
        for row in packed.unpack().unwrap().rows {
            let (before, after) = (row.before.unwrap(), row.after.unwrap());
            let SqlValue::Integer(id) = before[0] else {
                panic!("{before:?}")
            };
            assert_eq!(row.key, [SqlValue::Text(format!("c{:04}", 1000 - id))]);
            assert_eq!(before[2], SqlValue::Integer(id * 3));
            assert_eq!(after[..2], before[..2]);
            assert_eq!(after[2], SqlValue::Integer(id * 4));
            seen += 1;
        }
    }
    assert_eq!(seen, 250);
    assert_rolls_back(&ledger, &mut database, &before, "rolled back");
}

/// An update whose `REPLACE` conflict clause deletes another row does more
/// than its images could undo: the chunk fails and is rolled back.
#[test]
fn sqlite_an_update_that_replaces_another_row_fails_with_nothing_changed() {
    let (_file, mut database, before) = scratch(
        "CREATE TABLE r (id INTEGER PRIMARY KEY, u TEXT UNIQUE ON CONFLICT REPLACE, v INTEGER); \
             INSERT INTO r VALUES (1, 'a', 10), (2, 'b', 20)",
    );
    let mut ledger = TestLedger::new();
    let error = database
        .update(
            &Update {
                step: 1,
                table: "r".into(),
                key: None,
                filter: Some("id = 2".into()),
                set: set(&[("u", "'a'")]),
                chunk_size: Some(1000),
            },
            &mut ledger.recorder(),
        )
        .unwrap_err();
    assert!(
        matches!(&error, DbError::Concurrent { problem, .. } if problem.contains("deleted")),
        "{error}"
    );
    assert_same_dump(
        &before,
        &database.dump_sqlite().unwrap(),
        "after the failed step",
    );
    assert!(ledger.events().is_empty());
}

/// A table with a generated column is captured by reading its rows before
/// and after the statement (the preupdate hook counts the generated
/// column, the images do not hold it), and rolls back exactly.
#[test]
fn sqlite_a_table_with_a_generated_column_rolls_back_exactly() {
    let (_file, mut database, before) = scratch(
        "CREATE TABLE g (id INTEGER PRIMARY KEY, price REAL, qty INTEGER, \
             total REAL GENERATED ALWAYS AS (price * qty) VIRTUAL); \
             INSERT INTO g (id, price, qty) VALUES (1, 1.5, 2), (2, 0.1, 3), (3, NULL, 4)",
    );
    let mut ledger = TestLedger::new();
    let report = database
        .update(
            &update_all("g", &[("qty", "qty * 10")], 2),
            &mut ledger.recorder(),
        )
        .unwrap();
    assert_eq!((report.rows, report.chunks), (3, 2));
    assert_ne!(before, database.dump_sqlite().unwrap());
    assert_rolls_back(&ledger, &mut database, &before, "rolled back");
}

/// Rows written before `ALTER TABLE … ADD COLUMN` hold no value for the
/// new column on disk; their before images still hold its default, and
/// the rollback brings back the same rows.
#[test]
fn sqlite_rows_older_than_an_added_column_keep_its_default_in_their_images() {
    let (_file, mut database, before) = scratch(
        "CREATE TABLE late (id INTEGER PRIMARY KEY, v INTEGER); \
             INSERT INTO late VALUES (1, 10), (2, 20); \
             ALTER TABLE late ADD COLUMN w TEXT DEFAULT 'seven'",
    );
    let mut ledger = TestLedger::new();
    database
        .update(
            &update_all("late", &[("v", "v + 1")], 1000),
            &mut ledger.recorder(),
        )
        .unwrap();
    let events = ledger.events();
    let Some(Ok(rows)) = events[0].1.rows_changed() else {
        panic!("{events:?}")
    };
    for row in &rows.rows {
        assert_eq!(
            row.before.as_ref().unwrap()[2],
            SqlValue::Text("seven".into())
        );
    }
    assert_rolls_back(&ledger, &mut database, &before, "rolled back");
}

/// A `set` whose value the column's affinity converts ('5' into an INTEGER
/// column, 2 into a REAL one) is recorded as stored, so the rollback finds
/// the row at its after image.
#[test]
fn sqlite_after_images_hold_values_as_the_column_stored_them() {
    let (_file, mut database, before) = scratch(
        "CREATE TABLE aff (id INTEGER PRIMARY KEY, n INTEGER, r REAL, t TEXT); \
             INSERT INTO aff VALUES (1, 1, 1.5, 'x')",
    );
    let mut ledger = TestLedger::new();
    database
        .update(
            &update_all("aff", &[("n", "'5'"), ("r", "2"), ("t", "3")], 1000),
            &mut ledger.recorder(),
        )
        .unwrap();
    let events = ledger.events();
    let Some(Ok(rows)) = events[0].1.rows_changed() else {
        panic!("{events:?}")
    };
    let stored = database
        .query("SELECT id, n, r, t FROM aff", &[])
        .unwrap()
        .remove(0);
    assert_eq!(rows.rows[0].after.as_ref().unwrap(), &stored);
    assert_eq!(stored[1], SqlValue::Integer(5));
    assert_rolls_back(&ledger, &mut database, &before, "rolled back");
}

/// Rows whose key holds a NULL cannot be found again by key: a step that
/// would change them is refused before anything runs, whichever way it
/// would capture them.
#[test]
fn sqlite_rows_with_a_null_key_are_refused_before_anything_changes() {
    let (_file, mut database, before) = scratch(
        "CREATE TABLE nk (code TEXT PRIMARY KEY, v INTEGER); \
             INSERT INTO nk VALUES (NULL, 1), ('a', 2), ('b', 3), ('c', 4), ('d', 5)",
    );
    let mut ledger = TestLedger::new();
    let update = |filter: Option<&str>| Update {
        step: 1,
        table: "nk".into(),
        key: None,
        filter: filter.map(str::to_owned),
        set: set(&[("v", "v + 100")]),
        chunk_size: Some(2),
    };
    for filter in [None, Some("v > 0")] {
        let error = database
            .update(&update(filter), &mut ledger.recorder())
            .unwrap_err();
        assert!(matches!(&error, DbError::NullKey { .. }), "{error}");
        let error = database
            .delete(
                &Delete {
                    step: 2,
                    table: "nk".into(),
                    key: None,
                    filter: filter.map(str::to_owned),
                    chunk_size: Some(2),
                },
                &mut ledger.recorder(),
            )
            .unwrap_err();
        assert!(matches!(&error, DbError::NullKey { .. }), "{error}");
    }
    assert_same_dump(&before, &database.dump_sqlite().unwrap(), "refused");
    assert!(ledger.events().is_empty());
    // The rows with a key are changed when `where` leaves the others out.
    let report = database
        .update(&update(Some("code IS NOT NULL")), &mut ledger.recorder())
        .unwrap();
    assert_eq!(report.rows, 4);
}

/// A key a step names must be one no two rows share: rollback finds each
/// row again by its key, and would restore or delete every row holding
/// it. A key that covers the primary key or a unique index is taken as it
/// is; any other, only while no two rows of the table share it (a partial
/// unique index does not count, nor one on more columns than the key), and
/// never by an insert. Each refusal comes before anything runs.
#[test]
fn sqlite_a_key_two_rows_share_is_refused_before_anything_changes() {
    let (_file, mut database, before) = scratch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, code TEXT UNIQUE, g INTEGER, v INTEGER); \
             CREATE UNIQUE INDEX t_n_over_one ON t (n) WHERE n > 1; \
             CREATE UNIQUE INDEX t_n_code ON t (n, code); \
             INSERT INTO t VALUES (1, 1, 'a', 10, 0), (2, 1, 'b', 20, 0), (3, 3, 'c', 30, 0)",
    );
    let mut ledger = TestLedger::new();
    let update = |key: &[&str]| Update {
        key: Some(key.iter().map(|column| (*column).to_owned()).collect()),
        ..update_all("t", &[("v", "v + 1")], 100)
    };
    let refused = |error: DbError| {
        assert_refused(
            &error,
            matches!(&error, DbError::KeyNotUnique { key, value, .. } if key == "n" && value == "1"),
            "unique index",
        );
    };
    refused(
        database
            .update(&update(&["n"]), &mut ledger.recorder())
            .unwrap_err(),
    );
    refused(
        database
            .delete(
                &Delete {
                    step: 2,
                    table: "t".into(),
                    key: Some(vec!["n".into()]),
                    filter: Some("id = 3".into()),
                    chunk_size: None,
                },
                &mut ledger.recorder(),
            )
            .unwrap_err(),
    );
    // An insert of one row `id`, with `value` in the key column `key`.
    let insert = |key: &str, id: i64, value: i64| Insert {
        step: 3,
        table: "t".into(),
        key: Some(vec![key.to_owned()]),
        source: InsertSource::Rows(vec![BTreeMap::from([
            ("id".to_owned(), SqlValue::Integer(id)),
            (key.to_owned(), SqlValue::Integer(value)),
        ])]),
        chunk_size: None,
    };
    refused(
        database
            .insert(&insert("n", 4, 4), &mut ledger.recorder())
            .unwrap_err(),
    );
    // An insert needs a key the database keeps unique: one the rows hold
    // once each now may not be so once it has added its own.
    let error = database
        .insert(&insert("g", 5, 10), &mut ledger.recorder())
        .unwrap_err();
    assert_refused(
        &error,
        matches!(&error, DbError::InsertKeyNotIndexed { key, .. } if key == "g"),
        "unique index",
    );
    assert_same_dump(&before, &database.dump_sqlite().unwrap(), "refused");
    assert!(ledger.events().is_empty());
    // Keys that cover the primary key or a unique index, and one that no
    // two rows share though nothing declares it unique.
    for key in [&["n", "id"][..], &["code"], &["g"]] {
        let report = database
            .update(&update(key), &mut ledger.recorder())
            .unwrap();
        assert_eq!(report.rows, 3, "{key:?}");
    }
    assert_rolls_back(&ledger, &mut database, &before, "unique keys");
}

/// TEXT that is not UTF-8 (SQLite keeps whatever bytes it is given) cannot
/// be held by an image: the step fails naming the table and column, not
/// as a change made under it, and nothing of its chunk stays.
#[test]
fn sqlite_text_that_is_not_utf8_fails_the_step_naming_its_column() {
    let file = SqliteFile::new();
    let mut database = file.connect();
    database
        .execute_script(
            "CREATE TABLE w (id INTEGER PRIMARY KEY, v TEXT, n INTEGER); \
             INSERT INTO w VALUES (1, 'fine', 1), (2, CAST(x'fffe41' AS TEXT), 2)",
        )
        .unwrap();
    // Read as hex: the text cannot be decoded as a string.
    let rows = |database: &mut Database| {
        database
            .query("SELECT id, typeof(v), hex(v), n FROM w ORDER BY id", &[])
            .unwrap()
    };
    let before = rows(&mut database);
    let mut ledger = TestLedger::new();
    let refused = |error: DbError| {
        assert_refused(
            &error,
            matches!(&error, DbError::NotUtf8 { table, column, .. } if table == "w" && column == "v"),
            "CAST(column AS BLOB)",
        );
    };
    refused(
        database
            .update(
                &update_all("w", &[("n", "n + 1")], 100),
                &mut ledger.recorder(),
            )
            .unwrap_err(),
    );
    refused(
        database
            .delete(
                &Delete {
                    step: 2,
                    table: "w".into(),
                    key: None,
                    filter: Some("TRUE".into()),
                    chunk_size: None,
                },
                &mut ledger.recorder(),
            )
            .unwrap_err(),
    );
    assert_eq!(rows(&mut database), before);
    assert!(ledger.events().is_empty());
}

/// A row that an `ON CONFLICT IGNORE` clause makes the statement skip
/// leaves its chunk short: the step fails, its chunk rolled back, instead
/// of ending early as if the table were done; the chunks before it are
/// recorded and roll back.
#[test]
fn sqlite_a_row_the_update_skips_fails_the_step() {
    let (_file, mut database, before) = scratch(
        "CREATE TABLE ig (id INTEGER PRIMARY KEY, v INTEGER NOT NULL ON CONFLICT IGNORE); \
             INSERT INTO ig VALUES (1, 1), (2, 2), (3, 3), (4, 4), (5, 5)",
    );
    for (skipped, chunk_size) in [(1, 2), (5, 2), (1, 1000)] {
        let mut ledger = TestLedger::new();
        let error = database
            .update(
                &Update {
                    step: 1,
                    table: "ig".into(),
                    key: None,
                    filter: None,
                    set: set(&[(
                        "v",
                        &format!("CASE WHEN id = {skipped} THEN NULL ELSE v + 100 END"),
                    )]),
                    chunk_size: Some(chunk_size),
                },
                &mut ledger.recorder(),
            )
            .unwrap_err();
        assert!(
            matches!(&error, DbError::Concurrent { problem, .. } if problem.contains("IGNORE")),
            "{error}"
        );
        let recorded = ledger.events().len();
        assert_eq!(
            recorded,
            (skipped - 1) / chunk_size,
            "chunks before the failing one"
        );
        let reports = ledger.roll_back(&mut database, UndoOptions::default());
        assert!(reports.iter().all(|report| report.drift.is_empty()));
        assert_same_dump(&before, &database.dump_sqlite().unwrap(), "rolled back");
    }
}

/// A constraint the update breaks in its third chunk (the statement runs
/// `OR ROLLBACK`, without a statement journal): the step fails naming it,
/// that chunk's transaction is gone with nothing of it recorded, and the
/// two chunks before it are recorded and roll back to an identical dump.
/// The connection then takes the next step as usual.
#[test]
fn sqlite_a_constraint_broken_mid_step_fails_it_with_its_chunk_unrecorded() {
    let (_file, mut database, before) = scratch(
        "CREATE TABLE c (id INTEGER PRIMARY KEY, u INTEGER UNIQUE NOT NULL, v TEXT); \
             INSERT INTO c VALUES (1, 10, 'a'), (2, 20, 'b'), (3, 30, 'c'), (4, 40, 'd'), \
             (5, 50, 'e'), (6, 60, 'f')",
    );
    let mut ledger = TestLedger::new();
    // Row 5 takes row 1's old value: unique, until row 6 does too.
    let update = update_all(
        "c",
        &[
            ("u", "CASE WHEN id >= 5 THEN 10 ELSE u + 1 END"),
            ("v", "v || '!'"),
        ],
        2,
    );
    let error = database
        .update(&update, &mut ledger.recorder())
        .unwrap_err();
    assert!(
        error.to_string().contains("UNIQUE constraint failed: c.u"),
        "{error}"
    );
    assert_eq!(ledger.events().len(), 2, "the two chunks before it");
    let rows = |database: &mut Database| {
        database
            .query("SELECT id, u, v FROM c ORDER BY id", &[])
            .unwrap()
    };
    let now = rows(&mut database);
    assert_eq!(
        now[4..],
        [
            vec![
                SqlValue::Integer(5),
                SqlValue::Integer(50),
                SqlValue::Text("e".into())
            ],
            vec![
                SqlValue::Integer(6),
                SqlValue::Integer(60),
                SqlValue::Text("f".into())
            ],
        ],
        "the failed chunk left nothing"
    );
    assert_eq!(
        now[0][1],
        SqlValue::Integer(11),
        "the first chunk committed"
    );
    // The connection is in no transaction: the next step runs and commits.
    database
        .execute_script("UPDATE c SET v = v WHERE id = 6")
        .unwrap();
    assert_rolls_back(&ledger, &mut database, &before, "rolled back");
}

/// A trigger whose own statement resolves a conflict (`INSERT OR
/// REPLACE`) still works under the step: the update of a table with
/// triggers runs without the `OR ROLLBACK` that would override it.
#[test]
fn sqlite_a_trigger_that_replaces_a_row_of_its_own_still_runs() {
    let (_file, mut database, _before) = scratch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER); \
             CREATE TABLE latest (id INTEGER PRIMARY KEY, v INTEGER); \
             CREATE TRIGGER t_latest AFTER UPDATE ON t BEGIN \
               INSERT OR REPLACE INTO latest VALUES (1, NEW.v); END; \
             INSERT INTO t VALUES (1, 10), (2, 20), (3, 30)",
    );
    let mut ledger = TestLedger::new();
    let report = database
        .update(
            &update_all("t", &[("v", "v + 1")], 1000),
            &mut ledger.recorder(),
        )
        .unwrap();
    assert_eq!(report.rows, 3);
    assert_eq!(
        database.query("SELECT id, v FROM latest", &[]).unwrap(),
        vec![vec![SqlValue::Integer(1), SqlValue::Integer(31)]]
    );
}

/// Update, then delete, every row of a table in chunks of two, then roll
/// both back to an identical dump.
fn update_delete_round_trip(script: &str, table: &str, sets: &[(&str, &str)]) {
    let (_file, mut database, before) = scratch(script);
    let mut ledger = TestLedger::new();
    database
        .update(
            &Update {
                step: 1,
                table: table.into(),
                key: None,
                filter: None,
                set: set(sets),
                chunk_size: Some(2),
            },
            &mut ledger.recorder(),
        )
        .unwrap();
    database
        .delete(
            &Delete {
                step: 2,
                table: table.into(),
                key: None,
                filter: Some("1 = 1".into()),
                chunk_size: Some(2),
            },
            &mut ledger.recorder(),
        )
        .unwrap();
    assert_rolls_back(&ledger, &mut database, &before, table);
}

/// The preupdate hook's columns in the layouts SQLite stores differently:
/// an INTEGER PRIMARY KEY that is not the first column, a WITHOUT ROWID
/// table whose key columns come last and in another order, a table whose
/// rowid no column names, each with a column added after its rows.
#[test]
fn sqlite_hooked_capture_round_trips_every_table_layout() {
    update_delete_round_trip(
        "CREATE TABLE ip (a TEXT, id INTEGER PRIMARY KEY, b); \
         INSERT INTO ip VALUES ('x', 5, 1), ('y', 9, 2.5), ('z', 12, x'00'); \
         ALTER TABLE ip ADD COLUMN c REAL DEFAULT 3",
        "ip",
        &[("a", "a || '!'"), ("c", "'7'"), ("b", "'12'")],
    );
    update_delete_round_trip(
        "CREATE TABLE wr (v TEXT, k2 INTEGER, k1 TEXT, w, PRIMARY KEY (k1, k2)) WITHOUT ROWID; \
         INSERT INTO wr VALUES ('p', 2, 'a', 1), ('q', 1, 'a', NULL), ('r', 1, 'b', 'x'); \
         ALTER TABLE wr ADD COLUMN d INTEGER DEFAULT 42",
        "wr",
        &[("v", "v || k1"), ("d", "'8'"), ("w", "1.0")],
    );
    update_delete_round_trip(
        "CREATE TABLE rp (name TEXT PRIMARY KEY, n REAL, m); \
         INSERT INTO rp VALUES ('a', 1, 1), ('b', 2.5, 'x'), ('c', NULL, x'01'); \
         ALTER TABLE rp ADD COLUMN z TEXT DEFAULT 'zz'",
        "rp",
        &[("n", "'3'"), ("z", "5")],
    );
}

/// A new database made by `script`, and its dump.
fn scratch(script: &str) -> (SqliteFile, Database, String) {
    let file = SqliteFile::new();
    let mut database = file.connect();
    database.execute_script(script).unwrap();
    let before = database.dump_sqlite().unwrap();
    (file, database, before)
}

/// `error` is the refusal expected (`expected`), with a hint that says `hint`.
fn assert_refused(error: &DbError, expected: bool, hint: &str) {
    assert!(expected, "{error}");
    let said = error.hint().unwrap_or_default();
    assert!(said.contains(hint), "{said}");
}

/// An update of every row of `table`, as step 1.
fn update_all(table: &str, sets: &[(&str, &str)], chunk_size: usize) -> Update {
    Update {
        step: 1,
        table: table.into(),
        key: None,
        filter: None,
        set: set(sets),
        chunk_size: Some(chunk_size),
    }
}

/// Rolls back every database event of `ledger`, newest first: no drift,
/// and the dump is `before` again.
fn assert_rolls_back(ledger: &TestLedger, database: &mut Database, before: &str, what: &str) {
    let reports = ledger.roll_back(database, UndoOptions::default());
    assert!(
        reports.iter().all(|report| report.drift.is_empty()),
        "{what}: {reports:?}"
    );
    assert_same_dump(before, &database.dump_sqlite().unwrap(), what);
}
