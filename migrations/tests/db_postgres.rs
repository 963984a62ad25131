//! PostgreSQL, against a real server (127.0.0.1:5432 as postgres, or
//! `REWIND_TEST_PG`): every test creates and drops its own database. Without
//! a server the tests say they were skipped; under `CI=true` they fail.

mod db_common;

use std::collections::BTreeMap;

use db_common::{PgDatabase, TestLedger, assert_same_dump, chinook_pg_script, skip_drift};
use rewind_ledger::{Event, SqlValue};
use rewind_migrations::db::{
    Bind, Check, Database, DbError, Delete, Expectation, Insert, InsertSource, OnDrift, Schema,
    StepReport, UndoOptions, Update, Verify,
};

const FIXTURE: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE things (
    id serial PRIMARY KEY,
    name text NOT NULL,
    price numeric(10,2),
    exact numeric,
    happened timestamptz,
    day date,
    doc jsonb,
    ident uuid,
    raw bytea,
    ratio float8,
    small float4,
    counts int[],
    labels text[],
    feeling mood,
    flag boolean,
    span interval
);
INSERT INTO things (name, price, exact, happened, day, doc, ident, raw, ratio, small, counts, labels, feeling, flag, span) VALUES
  ('plain', 12.50, 1.000000000000000000001, '2024-02-29 23:59:59.123456+02', '2024-02-29', '{"b": [1, 2.50], "a": null}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\x00ff', '-0', 1.1, '{1,2,NULL}', '{"a b","c,d","e\"f"}', 'ok', true, '1 day 02:03:04.5'),
  ('it''s "quoted"', -0.01, -12345678901234567890.123456789, '1970-01-01 00:00:00+00', '0001-01-01', '"just a string"', '00000000-0000-0000-0000-000000000000', '\x', 'NaN', 'NaN', '{}', '{}', 'sad', false, '-1 mons'),
  (E'line\nbreak\ttab \\ backslash', 9999999.99, 0, 'infinity', 'infinity', '[]', 'ffffffff-ffff-ffff-ffff-ffffffffffff', '\xdeadbeef', 'Infinity', '-Infinity', '{{1,2},{3,4}}', '{NULL}', 'happy', NULL, '0'),
  ('ünïcødé 🚀 ß', 0.00, 1e-30, '-infinity', '2000-01-01', '{"emoji": "🚀", "nested": {"x": [true, false, null]}}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12', '\x01', 0.1, 0.1, '{-2147483648,2147483647}', '{"ünï"}', NULL, true, '100 years'),
  ('nulls', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
  ('tiny', 0.01, 5e-324, '2024-06-01 12:00:00+00', '2024-06-01', '{}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a13', '\x10', 5e-324, 1e-45, '{0}', '{""}', 'ok', true, '1 sec'),
  ('big', 1.00, 1e30, '2024-06-01 12:00:00.000001+00', '2024-06-01', '{"n": 1e400}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a14', '\x20', 1.7976931348623157e308, 3.4028235e38, '{1}', '{"x"}', 'happy', false, '-1 sec');
CREATE TABLE tags (
    name text PRIMARY KEY,
    weight float8,
    thing_id int REFERENCES things (id)
);
INSERT INTO tags VALUES ('red', 1.0, 1), ('green', 2.25, 2), ('blue', NULL, NULL);
CREATE TABLE pairs (a int, b text, v text, PRIMARY KEY (a, b));
INSERT INTO pairs VALUES (1, 'x', 'one'), (1, 'y', 'two'), (2, 'x', 'three');
CREATE TABLE parent (id int PRIMARY KEY, code text UNIQUE);
CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent (id) ON DELETE SET NULL,
  parent_code text REFERENCES parent (code) ON UPDATE CASCADE);
INSERT INTO parent VALUES (1, 'p1');
INSERT INTO child VALUES (1, 1, 'p1');
CREATE TABLE nokey (a int, b int);
INSERT INTO nokey VALUES (1, 2);
CREATE TABLE ident (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);
INSERT INTO ident (v) VALUES ('a'), ('b');
"#;

fn fixture(prefix: &str) -> Option<(PgDatabase, Database)> {
    scratch_with(prefix, FIXTURE)
}

/// A database of its own, made by `script`.
fn scratch_with(prefix: &str, script: &str) -> Option<(PgDatabase, Database)> {
    let scratch = PgDatabase::create(prefix)?;
    let mut database = scratch.connect();
    database.execute_script(script).unwrap();
    Some((scratch, database))
}

fn set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// An `update` of every row of table `t`, step 1.
fn update_every_row(set_pairs: &[(&str, &str)], chunk_size: usize) -> Update {
    Update {
        step: 1,
        table: "t".into(),
        key: None,
        filter: None,
        set: set(set_pairs),
        chunk_size: Some(chunk_size),
    }
}

#[test]
fn postgres_round_trip_every_type_restores_identical_dump() {
    let Some((scratch, mut database)) = fixture("rw_roundtrip") else {
        return;
    };
    let data_before = scratch.dump(true);
    let schema_before = scratch.dump(false);
    assert!(
        data_before.contains("setval"),
        "the data dump carries sequence values"
    );
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
                        ("price", "coalesce(price, 0) + 1"),
                        ("exact", "exact * 3"),
                        ("happened", "happened + interval '1 hour'"),
                        ("day", "day + 1"),
                        ("doc", "coalesce(doc, '{}'::jsonb) || '{\"migrated\": true}'"),
                        ("ident", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380aff'"),
                        ("raw", "raw || '\\xab'::bytea"),
                        ("ratio", "-ratio"),
                        ("small", "-small"),
                        ("counts", "CASE WHEN array_ndims(counts) > 1 THEN counts || ARRAY[[7, 8]] ELSE array_append(counts, 7) END"),
                        ("labels", "array_append(labels, 'it''s')"),
                        ("feeling", "'happy'"),
                        ("flag", "NOT flag"),
                        ("span", "span * 2"),
                        ("name", "name || E' \\u00e9\\n'"),
                    ]),
                    chunk_size: Some(2),
                },
                &mut recorder,
            )
            .unwrap();
        assert_eq!((report.rows, report.chunks), (6, 3));
        let report = database
            .insert(
                &Insert {
                    step: 2,
                    table: "things".into(),
                    key: None,
                    source: InsertSource::Rows(vec![
                        BTreeMap::from([
                            ("name".to_owned(), SqlValue::Text("new 'one'".into())),
                            ("price".to_owned(), SqlValue::Text("3.14".into())),
                            ("doc".to_owned(), SqlValue::Text("{\"k\": 1}".into())),
                        ]),
                        BTreeMap::from([
                            ("name".to_owned(), SqlValue::Text("new two".into())),
                            ("price".to_owned(), SqlValue::Null),
                            ("doc".to_owned(), SqlValue::Null),
                        ]),
                    ]),
                    chunk_size: Some(1),
                },
                &mut recorder,
            )
            .unwrap();
        assert_eq!((report.rows, report.chunks), (2, 2));
        database
            .insert(
                &Insert {
                    step: 3,
                    table: "tags".into(),
                    key: None,
                    source: InsertSource::Select(
                        "SELECT name || '-tag' AS name, ratio AS weight, id AS thing_id FROM things WHERE id > 5".into(),
                    ),
                    chunk_size: Some(2),
                },
                &mut recorder,
            )
            .unwrap();
        database
            .insert(
                &Insert {
                    step: 4,
                    table: "ident".into(),
                    key: None,
                    source: InsertSource::Select("SELECT 'c' AS v".into()),
                    chunk_size: Some(10),
                },
                &mut recorder,
            )
            .unwrap();
        database
            .delete(
                &Delete {
                    step: 5,
                    table: "tags".into(),
                    key: None,
                    filter: Some("name IN ('red', 'blue')".into()),
                    chunk_size: Some(1),
                },
                &mut recorder,
            )
            .unwrap();
        database
            .delete(
                &Delete {
                    step: 6,
                    table: "things".into(),
                    key: None,
                    filter: Some("id IN (3, 5)".into()),
                    chunk_size: Some(1000),
                },
                &mut recorder,
            )
            .unwrap();
        database
            .delete(
                &Delete {
                    step: 7,
                    table: "pairs".into(),
                    key: None,
                    filter: Some("a = 1".into()),
                    chunk_size: Some(1),
                },
                &mut recorder,
            )
            .unwrap();
        database
            .delete(
                &Delete {
                    step: 8,
                    table: "ident".into(),
                    key: None,
                    filter: Some("v = 'a'".into()),
                    chunk_size: Some(1),
                },
                &mut recorder,
            )
            .unwrap();
        database
            .schema(
                &Schema {
                    step: 9,
                    kind: "ddl",
                    up: "ALTER TABLE things ADD COLUMN organization_id bigint; CREATE INDEX things_name ON things (name)"
                        .into(),
                    down: Some("DROP INDEX things_name; ALTER TABLE things DROP COLUMN organization_id".into()),
                    irreversible: false,
                },
                &mut recorder,
            )
            .unwrap();
    }
    assert_ne!(data_before, scratch.dump(true));
    let kinds: Vec<&str> = ledger
        .events()
        .iter()
        .map(|(_, event)| event.kind())
        .collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|kind| **kind == "SequenceMoved")
            .count(),
        3,
        "{kinds:?}"
    );
    let reports = ledger.roll_back(&mut database, UndoOptions::default());
    assert!(
        reports.iter().all(|report| report.drift.is_empty()),
        "{reports:?}"
    );
    assert_same_dump(&data_before, &scratch.dump(true), "pg data dump");
    assert_same_dump(&schema_before, &scratch.dump(false), "pg schema dump");
}

#[test]
fn postgres_images_are_text_with_column_types() {
    let Some((_scratch, mut database)) = fixture("rw_images") else {
        return;
    };
    let mut ledger = TestLedger::new();
    database
        .update(
            &Update {
                step: 1,
                table: "things".into(),
                key: None,
                filter: Some("id <= 3".into()),
                set: set(&[("flag", "flag")]),
                chunk_size: Some(1000),
            },
            &mut ledger.recorder(),
        )
        .unwrap();
    let events = ledger.events();
    let Some(Ok(rows)) = events[0].1.rows_changed() else {
        panic!()
    };
    let types: Vec<&str> = rows
        .columns
        .iter()
        .map(|column| column.sql_type.as_str())
        .collect();
    assert_eq!(&types[..4], ["integer", "text", "numeric(10,2)", "numeric"]);
    assert!(types.contains(&"timestamp with time zone"));
    let first = rows.rows[0].before.as_ref().unwrap();
    assert_eq!(first[9], SqlValue::Typed("-0".into()));
    assert_eq!(
        first[4],
        SqlValue::Typed("2024-02-29 21:59:59.123456+00".into())
    );
    assert_eq!(
        rows.rows[1].before.as_ref().unwrap()[9],
        SqlValue::Typed("NaN".into())
    );
    assert_eq!(
        rows.rows[2].before.as_ref().unwrap()[1],
        SqlValue::Typed("line\nbreak\ttab \\ backslash".into())
    );
    assert_eq!(rows.rows[0].key, vec![SqlValue::Typed("1".into())]);
}

/// The drift check compares every column's text: a write since the
/// update to any one column of a row (a float made -0, equal to 0 as a
/// value) is drift on that row and that column only.
#[test]
fn postgres_drift_on_each_column_of_each_kind_is_found() {
    let columns = ["s", "i", "b", "flag", "u", "f"];
    let Some((_scratch, mut database)) = scratch_with(
        "rw_drift_kinds",
        "CREATE TABLE t (id int PRIMARY KEY, s smallint, i integer, b bigint, flag boolean, \
         u uuid, f float8, n int); \
         INSERT INTO t SELECT k, k, k, k, true, md5(k::text)::uuid, 0, 0 \
         FROM generate_series(1, 7) AS k",
    ) else {
        return;
    };
    let mut ledger = TestLedger::new();
    database
        .update(
            &update_every_row(&[("n", "n + 1")], 100),
            &mut ledger.recorder(),
        )
        .unwrap();
    // Row k + 1 gets a write to column k; row 7 is left alone. The float
    // becomes -0, equal to 0 as a value but not as text.
    database
        .execute_script(
            "UPDATE t SET s = 100 WHERE id = 1; UPDATE t SET i = 100 WHERE id = 2; \
             UPDATE t SET b = 100 WHERE id = 3; UPDATE t SET flag = false WHERE id = 4; \
             UPDATE t SET u = md5('x')::uuid WHERE id = 5; UPDATE t SET f = '-0' WHERE id = 6",
        )
        .unwrap();
    let event = ledger.events()[0].1.clone();
    let report = database.undo(&event, skip_drift()).unwrap();
    let drift: Vec<(SqlValue, Vec<String>)> = report
        .drift
        .iter()
        .map(|row| (row.key[0].clone(), row.columns.clone()))
        .collect();
    let expected: Vec<(SqlValue, Vec<String>)> = columns
        .iter()
        .enumerate()
        .map(|(k, column)| {
            (
                SqlValue::Typed((k + 1).to_string()),
                vec![column.to_string()],
            )
        })
        .collect();
    assert_eq!(drift, expected);
    assert_eq!(report.restored, 1);
    let n = database.query("SELECT n FROM t ORDER BY id", &[]).unwrap();
    let n: Vec<SqlValue> = n.into_iter().map(|row| row[0].clone()).collect();
    assert_eq!(n, [1, 1, 1, 1, 1, 1, 0].map(SqlValue::Integer).to_vec());
}

/// A column whose type changed since the capture, so that its after
/// image no longer fits it: the rollback reports the row's drift, as its
/// dry run does, instead of failing on a cast.
#[test]
fn postgres_a_column_retyped_since_the_capture_is_drift_not_an_error() {
    let Some((_scratch, mut database)) = scratch_with(
        "rw_drift_retyped",
        "CREATE TABLE t (id int PRIMARY KEY, n bigint, s text); \
         INSERT INTO t VALUES (1, 100000, 'a'), (2, 5, 'b')",
    ) else {
        return;
    };
    let mut ledger = TestLedger::new();
    database
        .update(
            &update_every_row(&[("n", "n * 2")], 100),
            &mut ledger.recorder(),
        )
        .unwrap();
    database
        .execute_script("UPDATE t SET n = 7 WHERE id = 1; ALTER TABLE t ALTER n TYPE smallint")
        .unwrap();
    let event = ledger.events()[0].1.clone();
    let look = database.check_drift(&event).unwrap();
    let report = database.undo(&event, skip_drift()).unwrap();
    for drift in [&look.drift, &report.drift] {
        assert_eq!(drift.len(), 1);
        assert_eq!(drift[0].key, vec![SqlValue::Typed("1".into())]);
        assert_eq!(drift[0].columns, vec!["n".to_owned()]);
    }
    assert_eq!(report.restored, 1);
    let n = database
        .query("SELECT n::int FROM t ORDER BY id", &[])
        .unwrap();
    let n: Vec<SqlValue> = n.into_iter().map(|row| row[0].clone()).collect();
    assert_eq!(n, [7, 5].map(SqlValue::Integer).to_vec());
}

#[test]
fn postgres_drift_is_detected_and_left_alone() {
    let Some((_scratch, mut database)) = fixture("rw_drift") else {
        return;
    };
    let mut ledger = TestLedger::new();
    database
        .update(
            &Update {
                step: 1,
                table: "things".into(),
                key: None,
                filter: Some("id <= 3".into()),
                set: set(&[("price", "price * 10"), ("doc", "'{\"v\": 2}'")]),
                chunk_size: Some(1000),
            },
            &mut ledger.recorder(),
        )
        .unwrap();
    // A concurrent write to a row the migration changed, and to one it did not touch.
    database
        .execute_script("UPDATE things SET doc = '{\"v\": 3}' WHERE id = 2; UPDATE things SET price = 1 WHERE id = 6")
        .unwrap();
    let event = ledger.events()[0].1.clone();
    let look = database.check_drift(&event).unwrap();
    assert_eq!(look.drift.len(), 1);
    assert_eq!(look.drift[0].table, "things");
    assert_eq!(look.drift[0].key, vec![SqlValue::Typed("2".into())]);
    assert_eq!(look.drift[0].columns, vec!["doc".to_owned()]);
    let stopped = database.undo(&event, UndoOptions::default()).unwrap();
    assert!(!stopped.applied);
    let price = |database: &mut Database, id: i64| {
        database
            .query(
                "SELECT price::text, doc::text FROM things WHERE id = $1",
                &[Bind::Value(SqlValue::Integer(id))],
            )
            .unwrap()[0]
            .clone()
    };
    assert_eq!(price(&mut database, 1)[0], SqlValue::Typed("125.00".into()));
    let report = database.undo(&event, skip_drift()).unwrap();
    assert_eq!((report.restored, report.drift.len()), (2, 1));
    assert_eq!(price(&mut database, 1)[0], SqlValue::Typed("12.50".into()));
    assert_eq!(
        price(&mut database, 2)[1],
        SqlValue::Typed("{\"v\": 3}".into())
    );
    assert_eq!(
        price(&mut database, 3)[0],
        SqlValue::Typed("9999999.99".into())
    );
    assert_eq!(price(&mut database, 6)[0], SqlValue::Typed("1.00".into()));
}

#[test]
fn postgres_bad_input_is_refused_with_nothing_changed() {
    let Some((scratch, mut database)) = fixture("rw_bad") else {
        return;
    };
    let before = scratch.dump(true);
    let mut ledger = TestLedger::new();
    let mut recorder = ledger.recorder();
    let update = |table: &str, filter: &str, set_pairs: &[(&str, &str)]| Update {
        step: 3,
        table: table.into(),
        key: None,
        filter: Some(filter.into()),
        set: set(set_pairs),
        chunk_size: Some(1000),
    };
    let error = database
        .update(&update("nope", "true", &[("a", "1")]), &mut recorder)
        .unwrap_err();
    assert!(
        matches!(&error, DbError::UnknownTable { table, .. } if table == "nope"),
        "{error}"
    );
    let error = database
        .update(&update("things", "true", &[("nope", "1")]), &mut recorder)
        .unwrap_err();
    assert!(matches!(&error, DbError::UnknownColumn { .. }), "{error}");
    let error = database
        .update(
            &update("things", "nope = 1", &[("name", "'x'")]),
            &mut recorder,
        )
        .unwrap_err();
    assert!(
        matches!(&error, DbError::Statement { message, .. } if message.contains("nope")),
        "{error}"
    );
    let error = database
        .update(&update("nokey", "true", &[("a", "1")]), &mut recorder)
        .unwrap_err();
    assert!(matches!(&error, DbError::NoKey { .. }), "{error}");
    let error = database
        .update(
            &update("things", "id = = 1", &[("name", "'x'")]),
            &mut recorder,
        )
        .unwrap_err();
    assert!(
        matches!(&error, DbError::Statement { step: 3, statement, message, .. } if statement.contains("id = = 1") && message.contains("syntax")),
        "{error}"
    );
    // Half of a migration's rows fail a constraint: the chunk is rolled back whole.
    let error = database
        .update(
            &update(
                "things",
                "true",
                &[("name", "CASE WHEN id = 3 THEN NULL ELSE 'x' END")],
            ),
            &mut recorder,
        )
        .unwrap_err();
    assert!(matches!(&error, DbError::Statement { .. }), "{error}");
    let error = database
        .schema(
            &Schema {
                step: 4,
                kind: "ddl",
                up: "ALTER TABLE things ADD COLUMN z int; ALTER TABLE nope ADD COLUMN z int".into(),
                down: Some("ALTER TABLE things DROP COLUMN z".into()),
                irreversible: false,
            },
            &mut recorder,
        )
        .unwrap_err();
    assert!(
        matches!(&error, DbError::Statement { step: 4, .. }),
        "{error}"
    );
    let error = database
        .schema(
            &Schema {
                step: 5,
                kind: "sql",
                up: "UPDATE things SET flag = true".into(),
                down: None,
                irreversible: false,
            },
            &mut recorder,
        )
        .unwrap_err();
    assert!(matches!(&error, DbError::MissingDown { .. }), "{error}");
    let error = database
        .delete(
            &Delete {
                step: 6,
                table: "parent".into(),
                key: None,
                filter: None,
                chunk_size: Some(1000),
            },
            &mut recorder,
        )
        .unwrap_err();
    assert!(
        matches!(&error, DbError::CascadingChange { referencing, .. } if referencing == "child"),
        "{error}"
    );
    let error = database
        .update(
            &update("parent", "true", &[("code", "'p2'")]),
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
    let mut failing = |_events: Vec<Event>| Err::<(), _>(std::io::Error::other("disk full"));
    let error = database
        .update(&update("things", "true", &[("flag", "true")]), &mut failing)
        .unwrap_err();
    assert!(matches!(&error, DbError::Record { .. }), "{error}");
    drop(recorder);
    assert!(ledger.events().is_empty());
    assert_same_dump(&before, &scratch.dump(true), "refused steps");
    // Wrong password and unreachable server.
    let wrong = scratch.url.replacen(
        "postgres://postgres@",
        "postgres://rewind_nobody:hunter2@",
        1,
    );
    let error = Database::connect(&wrong).unwrap_err();
    assert!(
        matches!(&error, DbError::AuthenticationFailed { .. }),
        "{error}"
    );
    assert!(!error.to_string().contains("hunter2"), "{error}");
    let error = Database::connect("postgres://postgres:secret@127.0.0.1:1/x").unwrap_err();
    assert!(
        matches!(&error, DbError::Unreachable { database, .. } if database == "postgres://postgres:***@127.0.0.1:1/x"),
        "{error}"
    );
    assert!(!error.to_string().contains("secret"));
}

/// Credentials the server refuses are their own error, whatever pg_hba
/// asks for: a wrong password (28P01) where it checks passwords, an
/// unknown role (28000) where it trusts local users. No role is created,
/// since roles are shared by the whole cluster.
#[test]
fn postgres_wrong_credentials_are_their_own_error() {
    let Some(scratch) = PgDatabase::create("rw_auth") else {
        return;
    };
    let url = scratch.url.replacen(
        "postgres://postgres@",
        "postgres://rewind_no_such_role:hunter2@",
        1,
    );
    let error = Database::connect(&url).unwrap_err();
    assert!(
        matches!(error, DbError::AuthenticationFailed { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("rewind_no_such_role:***@"),
        "{error}"
    );
    assert!(!error.to_string().contains("hunter2"), "{error}");
    assert!(error.hint().unwrap().contains("password"));
}

#[test]
fn postgres_verify_records_and_checks() {
    let Some((_scratch, mut database)) = fixture("rw_verify") else {
        return;
    };
    let mut ledger = TestLedger::new();
    let report = database
        .verify(
            &Verify {
                step: 1,
                record: BTreeMap::from([(
                    "things".to_owned(),
                    "SELECT count(*) FROM things".to_owned(),
                )]),
                checks: vec![
                    Check {
                        query: "SELECT count(*) FROM things".into(),
                        expect: Expectation::EqualsRecorded("things".into()),
                    },
                    Check {
                        query: "SELECT sum(price) FROM things".into(),
                        expect: Expectation::AtLeast("100".into()),
                    },
                    Check {
                        query: "SELECT * FROM tags WHERE thing_id NOT IN (SELECT id FROM things)"
                            .into(),
                        expect: Expectation::ReturnsNoRows,
                    },
                    Check {
                        query: "SELECT count(*) FROM nokey".into(),
                        expect: Expectation::Equals("2".into()),
                    },
                ],
            },
            &BTreeMap::new(),
            &mut ledger.recorder(),
        )
        .unwrap();
    assert_eq!(report.recorded["things"], "7");
    assert!(!report.passed);
    let passed: Vec<bool> = report.checks.iter().map(|check| check.passed).collect();
    assert_eq!(passed, [true, true, true, true, false]);
    assert_eq!(ledger.events().len(), 5);
}

#[test]
fn postgres_chinook_migration_rolls_back_to_identical_dump() {
    let Some(scratch) = PgDatabase::create("rw_chinook") else {
        return;
    };
    let mut database = scratch.connect();
    database.execute_script(&chinook_pg_script()).unwrap();
    let data_before = scratch.dump(true);
    let schema_before = scratch.dump(false);
    let mut ledger = TestLedger::new();
    {
        let mut recorder = ledger.recorder();
        database
            .schema(
                &Schema {
                    step: 1,
                    kind: "ddl",
                    up: "ALTER TABLE artist ADD COLUMN sort_name varchar(120)".into(),
                    down: Some("ALTER TABLE artist DROP COLUMN sort_name".into()),
                    irreversible: false,
                },
                &mut recorder,
            )
            .unwrap();
        database
            .update(
                &Update {
                    step: 2,
                    table: "artist".into(),
                    key: None,
                    filter: None,
                    set: set(&[("sort_name", "lower(name)")]),
                    chunk_size: Some(100),
                },
                &mut recorder,
            )
            .unwrap();
        database
            .update(
                &Update {
                    step: 3,
                    table: "track".into(),
                    key: None,
                    filter: Some(
                        "genre_id IN (SELECT genre_id FROM genre WHERE name LIKE 'R%')".into(),
                    ),
                    set: set(&[
                        ("unit_price", "unit_price * 1.1"),
                        ("composer", "coalesce(composer, 'unknown')"),
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
                    table: "playlist".into(),
                    key: None,
                    source: InsertSource::Select(
                        "SELECT 'Genre: ' || name AS name FROM genre ORDER BY genre_id".into(),
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
                    table: "playlist_track".into(),
                    key: None,
                    source: InsertSource::Select(
                        "SELECT p.playlist_id, t.track_id FROM track t JOIN genre g USING (genre_id) \
                         JOIN playlist p ON p.name = 'Genre: ' || g.name"
                            .into(),
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
                    table: "invoice_line".into(),
                    key: None,
                    filter: Some("invoice_id IN (SELECT invoice_id FROM invoice WHERE billing_country = 'USA')".into()),
                    chunk_size: Some(100),
                },
                &mut recorder,
            )
            .unwrap();
        database
            .delete(
                &Delete {
                    step: 7,
                    table: "invoice".into(),
                    key: None,
                    filter: Some("billing_country = 'USA'".into()),
                    chunk_size: Some(100),
                },
                &mut recorder,
            )
            .unwrap();
    }
    assert_ne!(data_before, scratch.dump(true));
    let reports = ledger.roll_back(&mut database, UndoOptions::default());
    assert!(reports.iter().all(|report| report.drift.is_empty()));
    assert_same_dump(&data_before, &scratch.dump(true), "chinook pg data");
    assert_same_dump(&schema_before, &scratch.dump(false), "chinook pg schema");
}

/// Regression: the chunk's rows were ordered by the text of their key, so
/// with keys 1…1000 the chunk ended at "999" and row 1000 was updated twice.
#[test]
fn postgres_chunks_follow_key_order_not_text_order() {
    let Some((_scratch, mut database)) = scratch_with(
        "rw_order",
        "CREATE TABLE t (id bigint PRIMARY KEY, a bigint NOT NULL); \
             INSERT INTO t SELECT i, 0 FROM generate_series(1, 2500) AS i",
    ) else {
        return;
    };
    let mut ledger = TestLedger::new();
    let report = database
        .update(
            &update_every_row(&[("a", "a + 1")], 1000),
            &mut ledger.recorder(),
        )
        .unwrap();
    assert_eq!((report.rows, report.chunks), (2500, 3));
    let rows = database
        .query("SELECT count(*) FROM t WHERE a <> 1", &[])
        .unwrap();
    assert_eq!(rows[0][0], SqlValue::Integer(0));
    let deleted = database
        .delete(
            &Delete {
                step: 2,
                table: "t".into(),
                key: None,
                filter: None,
                chunk_size: Some(1000),
            },
            &mut ledger.recorder(),
        )
        .unwrap();
    assert_eq!(deleted.rows, 2500);
    ledger.roll_back(&mut database, UndoOptions::default());
    let rows = database
        .query("SELECT count(*), sum(a)::int8 FROM t", &[])
        .unwrap();
    assert_eq!(rows[0], vec![SqlValue::Integer(2500), SqlValue::Integer(0)]);
}

/// An insert from a select commits chunk by chunk: when a later chunk
/// fails, the earlier ones stay recorded and roll back exactly, and the
/// step can run again.
#[test]
fn postgres_insert_select_failing_mid_way_keeps_recorded_chunks() {
    let Some((scratch, mut database)) = fixture("rw_insert_fail") else {
        return;
    };
    let before = scratch.dump(true);
    let mut ledger = TestLedger::new();
    let insert = |select: &str| Insert {
        step: 1,
        table: "tags".into(),
        key: None,
        source: InsertSource::Select(select.into()),
        chunk_size: Some(2),
    };
    let error = database
        .insert(
            &insert(
                "SELECT name FROM (VALUES ('a', 1), ('b', 2), ('red', 3)) AS v(name, n) ORDER BY n",
            ),
            &mut ledger.recorder(),
        )
        .unwrap_err();
    assert!(
        matches!(&error, DbError::Statement { message, .. } if message.contains("duplicate")),
        "{error}"
    );
    assert_eq!(ledger.events().len(), 1);
    let report = database
        .insert(&insert("SELECT 'c' AS name"), &mut ledger.recorder())
        .unwrap();
    assert_eq!(report.rows, 1);
    ledger.roll_back(&mut database, UndoOptions::default());
    assert_same_dump(&before, &scratch.dump(true), "insert select rolled back");
}

/// Images are read packed (records of the columns' `::text`, see
/// `db::images`); they must equal what the row-by-row path reads, for text
/// that needs quoting in a record (quotes, backslashes, parentheses,
/// commas, whitespace, the empty string) and for types whose `::text`
/// differs from their output (boolean, character(n)). A chunk of more than
/// 1000 rows is one transaction recorded as several events.
#[test]
fn postgres_packed_images_equal_row_by_row_reads() {
    let Some(scratch) = PgDatabase::create("rw_packed") else {
        return;
    };
    let mut database = scratch.connect();
    database
        .execute_script(
            r#"CREATE TABLE vals (id int PRIMARY KEY, t text, flag boolean, code character(5),
                 ratio float8, amount numeric, tags text[], doc jsonb);
               INSERT INTO vals SELECT i,
                 CASE i % 7 WHEN 0 THEN NULL WHEN 1 THEN '' WHEN 2 THEN 'a "b" \ c'
                   WHEN 3 THEN E'(x,\ny)\t ' WHEN 4 THEN 'ünï ' || i ELSE 'plain' || i END,
                 CASE i % 3 WHEN 0 THEN NULL ELSE i % 2 = 0 END,
                 CASE WHEN i % 4 = 0 THEN 'ab' ELSE NULL END,
                 CASE i % 5 WHEN 0 THEN '-0'::float8 WHEN 1 THEN 'NaN' WHEN 2 THEN 1.0 / i ELSE i * 1e300 END,
                 i * 0.001,
                 ARRAY['x,y', NULL, '"q"', ''],
                 jsonb_build_object('k', i, 's', 'a"b')
               FROM generate_series(1, 2600) AS i"#,
        )
        .unwrap();
    let columns = ["id", "t", "flag", "code", "ratio", "amount", "tags", "doc"];
    let select = columns
        .iter()
        .map(|column| format!("{column}::text"))
        .collect::<Vec<_>>()
        .join(", ");
    let exact = database
        .query(&format!("SELECT {select} FROM vals ORDER BY vals.id"), &[])
        .unwrap();
    let before = scratch.dump(true);
    let mut ledger = TestLedger::new();
    {
        let mut recorder = ledger.recorder();
        let report = database
            .update(
                &Update {
                    step: 1,
                    table: "vals".into(),
                    key: None,
                    filter: None,
                    set: set(&[("t", "t")]),
                    chunk_size: Some(2500),
                },
                &mut recorder,
            )
            .unwrap();
        assert_eq!((report.rows, report.chunks, report.events), (2600, 2, 4));
        let report = database
            .delete(
                &Delete {
                    step: 2,
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
    let mut seen = 0;
    for (_, event) in ledger.events() {
        let Some(Ok(rows)) = event.rows_changed() else {
            continue;
        };
        assert!(rows.rows.len() <= 1000);
        for image in &rows.rows {
            let SqlValue::Typed(id) = &image.key[0] else {
                panic!("{:?}", image.key)
            };
            let exact = &exact[id.parse::<usize>().unwrap() - 1];
            assert_eq!(image.before.as_ref(), Some(exact), "before of {id}");
            if rows.step == 1 {
                assert_eq!(image.after.as_ref(), Some(exact), "after of {id}");
            }
            seen += 1;
        }
    }
    assert_eq!(seen, 2600 + 1300);
    let reports = ledger.roll_back(&mut database, UndoOptions::default());
    assert!(reports.iter().all(|report| report.drift.is_empty()));
    assert_same_dump(&before, &scratch.dump(true), "packed images");
}

/// A trigger that changes columns the update does not set: the after image
/// is read back whole, so it holds what the trigger wrote.
#[test]
fn postgres_after_image_sees_what_a_trigger_changed() {
    let Some((_scratch, mut database)) = fixture("rw_trigger_after") else {
        return;
    };
    database
        .execute_script(
            "CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN NEW.name := NEW.name || ' (touched)'; RETURN NEW; END $$; \
             CREATE TRIGGER stamp BEFORE UPDATE ON things FOR EACH ROW EXECUTE FUNCTION stamp()",
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
                set: set(&[("flag", "NOT flag")]),
                chunk_size: Some(1000),
            },
            &mut ledger.recorder(),
        )
        .unwrap();
    let events = ledger.events();
    let Some(Ok(rows)) = events[0].1.rows_changed() else {
        panic!("{events:?}")
    };
    let names: Vec<&SqlValue> = rows
        .rows
        .iter()
        .map(|image| &image.after.as_ref().unwrap()[1])
        .collect();
    assert_eq!(
        names,
        [
            &SqlValue::Typed("plain (touched)".into()),
            &SqlValue::Typed("it's \"quoted\" (touched)".into())
        ]
    );
}

/// A trigger that changes a key column makes the row another row: rewind,
/// which finds rows by their key, refuses the step (its chunk rolled back,
/// nothing recorded) instead of recording images a rollback would apply to
/// the wrong row.
#[test]
fn postgres_a_trigger_that_changes_the_key_fails_the_step_with_nothing_changed() {
    let Some((scratch, mut database)) = fixture("rw_trigger_key") else {
        return;
    };
    database
        .execute_script(
            "CREATE TABLE codes (code text PRIMARY KEY, v int); \
             INSERT INTO codes VALUES ('a', 1), ('b', 2); \
             CREATE FUNCTION shout() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN NEW.code := upper(NEW.code); RETURN NEW; END $$; \
             CREATE TRIGGER shout BEFORE UPDATE ON codes FOR EACH ROW EXECUTE FUNCTION shout()",
        )
        .unwrap();
    let before = scratch.dump(true);
    let mut ledger = TestLedger::new();
    let error = database
        .update(
            &Update {
                step: 1,
                table: "codes".into(),
                key: None,
                filter: None,
                set: set(&[("v", "v + 10")]),
                chunk_size: Some(1000),
            },
            &mut ledger.recorder(),
        )
        .unwrap_err();
    assert!(
        error.to_string().contains("cannot record a change of it"),
        "{error}"
    );
    assert_eq!(scratch.dump(true), before, "nothing changed");
    assert!(ledger.events().is_empty(), "{:?}", ledger.events());
}

/// Restoring rows does not fire the table's ordinary triggers: the undo
/// sets `session_replication_role = replica` for its transaction. A
/// trigger marked `ENABLE ALWAYS` fires anyway and is named in the
/// report; so is every trigger when the user may not set the role.
#[test]
fn postgres_rollback_turns_triggers_off() {
    let Some((scratch, mut database)) = fixture("rw_undo_triggers") else {
        return;
    };
    let things = |database: &mut Database| {
        database
            .query("SELECT id, flag FROM things ORDER BY id", &[])
            .unwrap()
    };
    let original = things(&mut database);
    let update = |database: &mut Database, ledger: &mut TestLedger| {
        database
            .update(
                &Update {
                    step: 1,
                    table: "things".into(),
                    key: None,
                    filter: Some("id <= 3".into()),
                    set: set(&[("flag", "NOT coalesce(flag, false)")]),
                    chunk_size: Some(1000),
                },
                &mut ledger.recorder(),
            )
            .unwrap();
        ledger.events().pop().unwrap().1
    };
    database
        .execute_script(
            "CREATE TABLE audit (id int, fired_by text); \
             CREATE FUNCTION audit_row() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN INSERT INTO audit VALUES (NEW.id, TG_NAME); RETURN NEW; END $$",
        )
        .unwrap();
    let audited = |database: &mut Database| {
        database
            .query(
                "SELECT fired_by, count(*)::int8 FROM audit GROUP BY 1 ORDER BY 1",
                &[],
            )
            .unwrap()
    };
    let mut ledger = TestLedger::new();
    let event = update(&mut database, &mut ledger);
    database
        .execute_script(
            "CREATE TRIGGER ordinary AFTER UPDATE ON things FOR EACH ROW EXECUTE FUNCTION audit_row(); \
             CREATE TRIGGER always AFTER UPDATE ON things FOR EACH ROW EXECUTE FUNCTION audit_row(); \
             ALTER TABLE things ENABLE ALWAYS TRIGGER always",
        )
        .unwrap();
    let report = database.undo(&event, UndoOptions::default()).unwrap();
    assert_eq!(report.restored, 3);
    assert_eq!(report.triggers_fired, ["always"]);
    assert_eq!(
        audited(&mut database),
        [vec![SqlValue::Typed("always".into()), SqlValue::Integer(3)]]
    );
    assert_eq!(things(&mut database), original);

    // A user who may not set session_replication_role: the triggers fire,
    // and the report says which.
    let role = format!("rw_plain_{}", std::process::id());
    let mut admin = scratch.admin();
    admin
        .execute_script(&format!("CREATE ROLE {role} LOGIN PASSWORD 'plain'"))
        .unwrap();
    database
        .execute_script(&format!(
            "GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}; \
             GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}; TRUNCATE audit"
        ))
        .unwrap();
    let event = update(&mut database, &mut ledger);
    database.execute_script("TRUNCATE audit").unwrap();
    let mut plain = scratch.connect_as(&role, "plain");
    let report = plain.undo(&event, UndoOptions::default()).unwrap();
    assert_eq!(report.restored, 3);
    assert_eq!(report.triggers_fired, ["always", "ordinary"]);
    assert_eq!(
        audited(&mut database),
        [
            vec![SqlValue::Typed("always".into()), SqlValue::Integer(3)],
            vec![SqlValue::Typed("ordinary".into()), SqlValue::Integer(3)],
        ]
    );
    assert_eq!(things(&mut database), original);
    drop(plain);
    drop(database);
    drop(scratch);
    admin.execute_script(&format!("DROP ROLE {role}")).unwrap();
}

fn rows_changed(ledger: &TestLedger) -> Vec<rewind_ledger::RowsChanged> {
    ledger
        .events()
        .into_iter()
        .filter_map(|(_, event)| event.rows_changed().map(|rows| rows.unwrap().into_owned()))
        .collect()
}

/// A step's chunks overlap on two connections (the next one's statement
/// carries the last key as a literal): text keys that need quoting in SQL
/// still split into chunks that meet exactly, every row changed once, the
/// chunks recorded in key order, and the rollback exact.
#[test]
fn postgres_overlapped_chunks_meet_exactly_on_quoted_text_keys() {
    let Some((scratch, mut database)) = scratch_with(
        "rw_overlap_keys",
        r#"CREATE TABLE t (k text COLLATE "C" PRIMARY KEY, a int NOT NULL, b text NOT NULL DEFAULT '');
               INSERT INTO t VALUES ('a''b', 0), ('a''''b', 0), (E'back\\slash', 0),
                 ('comma, (paren)', 0), ('"double"', 0), ('ünï 🚀', 0), ('', 0),
                 ('z', 0), ('$1', 0), ('--', 0), ('x''); DROP TABLE t; --', 0)"#,
    ) else {
        return;
    };
    let before = scratch.dump(false);
    let mut ledger = TestLedger::new();
    let report = database
        .update(
            &update_every_row(&[("a", "a + 1"), ("b", "b || 'x'")], 2),
            &mut ledger.recorder(),
        )
        .unwrap();
    assert_eq!((report.rows, report.chunks), (11, 6));
    assert!(report.overlapped, "an immutable set overlaps its chunks");
    let rows = database
        .query("SELECT count(*) FROM t WHERE a = 1", &[])
        .unwrap();
    assert_eq!(rows[0][0], SqlValue::Integer(11));
    let chunks = rows_changed(&ledger);
    let keys: Vec<SqlValue> = chunks
        .iter()
        .flat_map(|chunk| chunk.rows.iter().map(|row| row.key[0].clone()))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_by(|a, b| match (a, b) {
        (SqlValue::Typed(a), SqlValue::Typed(b)) => a.as_bytes().cmp(b.as_bytes()),
        _ => panic!("PostgreSQL keys are text: {a:?} {b:?}"),
    });
    assert_eq!(keys, sorted, "the chunks are recorded in key order");
    assert_eq!(
        chunks.iter().map(|chunk| chunk.chunk).collect::<Vec<_>>(),
        (0..6).collect::<Vec<_>>()
    );
    let deleted = database
        .delete(
            &Delete {
                step: 2,
                table: "t".into(),
                key: None,
                filter: Some("a = 1".into()),
                chunk_size: Some(3),
            },
            &mut ledger.recorder(),
        )
        .unwrap();
    assert_eq!((deleted.rows, deleted.chunks), (11, 4));
    assert!(deleted.overlapped, "an immutable where overlaps its chunks");
    ledger.roll_back(&mut database, UndoOptions::default());
    assert_same_dump(
        &before,
        &scratch.dump(false),
        "overlapped chunks rolled back",
    );
}

/// A `set` that reads other rows of the table sees what the earlier chunks
/// committed, as chunks run one after the other: such a step does not
/// overlap its chunks.
#[test]
fn postgres_set_reading_the_table_sees_earlier_chunks() {
    assert_each_chunk_sees_the_ones_before(
        "rw_overlap_reads",
        "",
        "(SELECT count(*) FROM t WHERE a > 0) + 1",
    );
}

/// The same through a function that reads the table, which the text of
/// the `set` does not show: a function PostgreSQL may not call immutable
/// keeps the chunks one after the other too.
#[test]
fn postgres_set_calling_a_function_that_reads_the_table_sees_earlier_chunks() {
    assert_each_chunk_sees_the_ones_before(
        "rw_overlap_function",
        "CREATE FUNCTION \"Done\"() RETURNS bigint LANGUAGE sql STABLE \
         AS 'SELECT count(*) FROM t WHERE a > 0'",
        "abs(\"Done\"()) + 1",
    );
}

/// Functions reached in ways the text of the `set` hides: behind a comment
/// or a string that holds a quote, by attribute notation, through an
/// operator. PostgreSQL resolves them, so each keeps its chunks in order.
#[test]
fn postgres_functions_behind_comments_strings_notations_and_operators_are_seen() {
    let done = "CREATE FUNCTION done() RETURNS bigint LANGUAGE sql STABLE \
                AS 'SELECT count(*) FROM t WHERE a > 0'";
    let cases = [
        (
            "rw_overlap_comment",
            done.to_owned(),
            "1 /* don't */ + done()",
        ),
        ("rw_overlap_line", done.to_owned(), "1 + -- it's\n done()"),
        (
            "rw_overlap_escape",
            done.to_owned(),
            r"(E'\'' = '''')::int + done()",
        ),
        (
            "rw_overlap_dollar",
            done.to_owned(),
            "($$it's$$ = 'x')::int + 1 + done()",
        ),
        (
            "rw_overlap_attribute",
            "CREATE FUNCTION done_of(t) RETURNS bigint LANGUAGE sql STABLE \
             AS 'SELECT count(*) FROM t WHERE a > 0'"
                .to_owned(),
            "t.done_of + 1",
        ),
        (
            "rw_overlap_operator",
            format!(
                "{done}; CREATE FUNCTION plus_done(int, int) RETURNS bigint LANGUAGE sql STABLE \
                 AS 'SELECT $1 + $2 + done()'; \
                 CREATE OPERATOR #@# (LEFTARG = int, RIGHTARG = int, FUNCTION = plus_done)"
            ),
            "0 #@# 1",
        ),
    ];
    for (name, setup, expression) in cases {
        assert_each_chunk_sees_the_ones_before(name, &setup, expression);
    }
}

/// Built-in functions that are not immutable, which PostgreSQL records no
/// dependency on: one that reads the table through dynamic SQL keeps the
/// chunks in order, and `random()` is not taken for immutable either.
#[test]
fn postgres_built_in_functions_that_are_not_immutable_are_seen() {
    assert_each_chunk_sees_the_ones_before(
        "rw_overlap_builtin",
        "",
        "(xpath('/row/count/text()', query_to_xml('SEL' || 'ECT count(*) FROM t WHERE a > 0', \
         false, true, '')))[1]::text::int + 1",
    );
    assert_eq!(
        chunks_overlap(
            "rw_overlap_random",
            "CREATE TABLE t (id int PRIMARY KEY, a int NOT NULL)",
            "a + (random() * 0)::int + 1",
        ),
        Some(false)
    );
}

/// What runs besides the expressions themselves: a CHECK constraint, a
/// column of a domain type, a cast to a domain, an assignment cast through
/// a function that is not immutable (plpgsql: a SQL function PostgreSQL
/// inlines is judged by its body). None of these overlaps.
#[test]
fn postgres_checks_domains_and_casts_keep_the_chunks_in_order() {
    let cases = [
        (
            "rw_overlap_check",
            "CREATE TABLE t (id int PRIMARY KEY, a int NOT NULL CHECK (a >= 0))",
            "a + 1",
        ),
        (
            "rw_overlap_domain",
            "CREATE DOMAIN nonneg AS int CHECK (VALUE >= 0); \
             CREATE TABLE t (id int PRIMARY KEY, a nonneg NOT NULL)",
            "a + 1",
        ),
        (
            "rw_overlap_to_domain",
            "CREATE DOMAIN nonneg AS int CHECK (VALUE >= 0); \
             CREATE TABLE t (id int PRIMARY KEY, a int NOT NULL)",
            "(a + 1)::nonneg",
        ),
        (
            "rw_overlap_assignment",
            "CREATE TYPE boxed AS (v int); \
             CREATE FUNCTION boxed_of(int) RETURNS boxed LANGUAGE plpgsql STABLE \
             AS 'BEGIN RETURN ROW($1)::boxed; END'; \
             CREATE CAST (int AS boxed) WITH FUNCTION boxed_of(int) AS ASSIGNMENT; \
             CREATE TABLE t (id int PRIMARY KEY, a boxed NOT NULL)",
            "7",
        ),
    ];
    for (name, script, expression) in cases {
        assert_eq!(
            chunks_overlap(name, script, expression),
            Some(false),
            "{name}"
        );
    }
    assert_eq!(
        chunks_overlap(
            "rw_overlap_plain",
            "CREATE TABLE t (id int PRIMARY KEY, a int NOT NULL)",
            "a + 1",
        ),
        Some(true)
    );
}

/// Tables whose updates run more than the statement shows, or that a
/// second connection would not see alike, never overlap: row-level
/// security, partitions, a temporary function of the session (a table
/// with inheritance children is refused outright). A type with no btree
/// operator class (json) still does.
#[test]
fn postgres_tables_a_second_connection_could_not_treat_alike_do_not_overlap() {
    let plain = "CREATE TABLE t (id int PRIMARY KEY, a int NOT NULL)";
    let cases = [
        (
            "rw_overlap_rls",
            format!("{plain}; ALTER TABLE t ENABLE ROW LEVEL SECURITY"),
            "a + 1",
        ),
        (
            "rw_overlap_partitions",
            "CREATE TABLE t (id int PRIMARY KEY, a int NOT NULL) PARTITION BY RANGE (id); \
             CREATE TABLE t1 PARTITION OF t DEFAULT"
                .to_owned(),
            "a + 1",
        ),
        (
            "rw_overlap_temp",
            format!(
                "{plain}; CREATE FUNCTION pg_temp.bump(int) RETURNS int LANGUAGE sql IMMUTABLE \
                 AS 'SELECT $1 + 1'"
            ),
            "pg_temp.bump(a)",
        ),
    ];
    for (name, script, expression) in cases {
        assert_eq!(
            chunks_overlap(name, &script, expression),
            Some(false),
            "{name}"
        );
    }
    let Some((_scratch, mut database)) = scratch_with(
        "rw_overlap_json",
        "CREATE TABLE t (id int PRIMARY KEY, j json); \
         INSERT INTO t SELECT i, NULL FROM generate_series(1, 6) AS i",
    ) else {
        return;
    };
    let report = database
        .update(
            &update_every_row(&[("j", "'[1]'::json")], 2),
            &mut TestLedger::new().recorder(),
        )
        .unwrap();
    assert!(report.overlapped, "a json column overlaps");
}

/// A trigger on a partition that changes a column the step does not set:
/// the after image holds what the trigger wrote, and the rollback restores
/// the table exactly.
#[test]
fn postgres_a_partitions_trigger_is_in_the_after_image_and_rolls_back() {
    let Some((scratch, mut database)) = scratch_with(
        "rw_partition_trigger",
        "CREATE TABLE t (id int PRIMARY KEY, a int NOT NULL, b int NOT NULL) PARTITION BY RANGE (id); \
         CREATE TABLE t1 PARTITION OF t DEFAULT; \
         CREATE FUNCTION set_b() RETURNS trigger LANGUAGE plpgsql AS \
           'BEGIN NEW.b := 42; RETURN NEW; END'; \
         CREATE TRIGGER set_b BEFORE UPDATE ON t1 FOR EACH ROW EXECUTE FUNCTION set_b(); \
         INSERT INTO t SELECT i, 0, 0 FROM generate_series(1, 6) AS i",
    ) else {
        return;
    };
    let before = scratch.dump(true);
    let mut ledger = TestLedger::new();
    database
        .update(
            &update_every_row(&[("a", "a + 1")], 4),
            &mut ledger.recorder(),
        )
        .unwrap();
    let b = database.query("SELECT DISTINCT b FROM t", &[]).unwrap();
    assert_eq!(b, vec![vec![SqlValue::Integer(42)]]);
    let Event::RowsPacked(packed) = &ledger.events()[0].1 else {
        panic!("packed images");
    };
    let after = packed.unpack().unwrap().rows[0].after.clone().unwrap();
    assert_eq!(after[2], SqlValue::Typed("42".into()), "{after:?}");
    ledger.roll_back(&mut database, UndoOptions::default());
    assert_same_dump(
        &before,
        &scratch.dump(true),
        "the partitioned table rolled back",
    );
}

/// A table other tables inherit from: an update or a delete on it would
/// change their rows too, recorded as its own, so it is refused with
/// nothing changed. A partitioned table's partitions are its own rows: a
/// delete on it rolls back exactly, each row back in its partition.
#[test]
fn postgres_inherited_rows_are_refused_and_partitions_roll_back() {
    let Some((scratch, mut database)) = scratch_with(
        "rw_inherits",
        "CREATE TABLE t (id int PRIMARY KEY, a int NOT NULL); \
         CREATE TABLE tc (extra text) INHERITS (t); \
         INSERT INTO t VALUES (1, 0); INSERT INTO tc VALUES (2, 0, 'x'); \
         CREATE TABLE p (id int PRIMARY KEY, a int NOT NULL) PARTITION BY RANGE (id); \
         CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (10); \
         CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (10) TO (20); \
         INSERT INTO p SELECT i, i FROM generate_series(1, 19) AS i",
    ) else {
        return;
    };
    let before = scratch.dump(true);
    let mut ledger = TestLedger::new();
    let error = database
        .update(
            &update_every_row(&[("a", "a + 1")], 100),
            &mut ledger.recorder(),
        )
        .unwrap_err();
    assert!(
        matches!(&error, DbError::InheritedRows { action: "update", children, .. } if children == "tc"),
        "{error}"
    );
    let error = database
        .delete(
            &Delete {
                step: 2,
                table: "t".into(),
                key: None,
                filter: Some("a = 0".into()),
                chunk_size: Some(100),
            },
            &mut ledger.recorder(),
        )
        .unwrap_err();
    assert!(
        matches!(
            &error,
            DbError::InheritedRows {
                action: "delete",
                ..
            }
        ),
        "{error}"
    );
    assert!(ledger.events().is_empty());
    assert_same_dump(&before, &scratch.dump(true), "refused steps");
    database
        .delete(
            &Delete {
                step: 3,
                table: "p".into(),
                key: None,
                filter: Some("id % 3 = 0".into()),
                chunk_size: Some(4),
            },
            &mut ledger.recorder(),
        )
        .unwrap();
    ledger.roll_back(&mut database, UndoOptions::default());
    assert_same_dump(
        &before,
        &scratch.dump(true),
        "the partitioned delete rolled back",
    );
}

/// What a second connection would meet differently: a foreign key of the
/// table to itself (its check would not see the other chunk's new keys),
/// a stricter isolation level, a lock timeout, a `search_path` an `ALTER
/// DATABASE` set after this connection was opened. None of these overlaps,
/// and the update changes the table this connection names.
#[test]
fn postgres_self_references_isolation_and_database_settings_do_not_overlap() {
    assert_eq!(
        chunks_overlap(
            "rw_overlap_self_fk",
            "CREATE TABLE t (id int PRIMARY KEY, a int NOT NULL, parent int REFERENCES t (id))",
            "a + 1",
        ),
        Some(false)
    );
    let alter = |setting: &str| {
        format!(
            "CREATE TABLE t (id int PRIMARY KEY, a int NOT NULL); \
             CREATE SCHEMA other; CREATE TABLE other.t (id int PRIMARY KEY, a int NOT NULL); \
             INSERT INTO other.t SELECT i, 0 FROM generate_series(1, 6) AS i; \
             DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET {setting}', current_database()); END $$"
        )
    };
    let Some((scratch, mut database, report)) = update_in_pairs(
        "rw_overlap_db_path",
        &alter("search_path = other, public"),
        "a + 1",
    ) else {
        return;
    };
    assert!(!report.overlapped);
    let sums = database
        .query(
            "SELECT (SELECT sum(a) FROM public.t)::int, (SELECT sum(a) FROM other.t)::int",
            &[],
        )
        .unwrap();
    assert_eq!(sums[0], vec![SqlValue::Integer(6), SqlValue::Integer(0)]);
    drop((scratch, database));
    // A setting both connections get from the database, opened after the
    // ALTER: repeatable read; a lock timeout (the next chunk may wait for
    // this one's locks, which it never does one chunk after the other).
    for (name, setting) in [
        (
            "rw_overlap_isolation",
            "default_transaction_isolation = ''repeatable read''",
        ),
        ("rw_overlap_lock_timeout", "lock_timeout = 1000"),
    ] {
        let Some(scratch) = PgDatabase::create(name) else {
            return;
        };
        scratch
            .connect()
            .execute_script(&format!(
                "{}; INSERT INTO t SELECT i, 0 FROM generate_series(1, 6) AS i",
                alter(setting)
            ))
            .unwrap();
        let report = scratch
            .connect()
            .update(
                &update_every_row(&[("a", "a + 1")], 2),
                &mut TestLedger::new().recorder(),
            )
            .unwrap();
        assert_eq!((report.rows, report.overlapped), (6, false), "{name}");
    }
}

/// After a `SET ROLE`, which shows in no setting, a second connection
/// would name another table `t` (the `"$user"` schema of the search path):
/// the chunks run one after the other, all on the role's table.
#[test]
fn postgres_a_role_set_in_the_session_does_not_overlap() {
    let Some(scratch) = PgDatabase::create("rw_overlap_role") else {
        return;
    };
    let role = format!("rw_role_{}", std::process::id());
    let mut admin = scratch.admin();
    admin
        .execute_script(&format!("CREATE ROLE {role}"))
        .unwrap();
    let mut database = scratch.connect();
    let setup = database.execute_script(&format!(
        "CREATE TABLE t (id int PRIMARY KEY, a int NOT NULL); \
         INSERT INTO t SELECT i, 0 FROM generate_series(1, 6) AS i; \
         CREATE SCHEMA {role} AUTHORIZATION {role}; \
         CREATE TABLE {role}.t (id int PRIMARY KEY, a int NOT NULL); \
         INSERT INTO {role}.t SELECT i, 0 FROM generate_series(1, 6) AS i; \
         ALTER TABLE {role}.t OWNER TO {role}; SET ROLE {role}"
    ));
    let result = setup.and_then(|()| {
        database.update(
            &update_every_row(&[("a", "a + 1")], 2),
            &mut TestLedger::new().recorder(),
        )
    });
    let sums = database.execute_script("RESET ROLE").and_then(|()| {
        database.query(
            &format!(
                "SELECT (SELECT sum(a) FROM {role}.t)::int, (SELECT sum(a) FROM public.t)::int"
            ),
            &[],
        )
    });
    drop(database);
    drop(scratch);
    admin.execute_script(&format!("DROP ROLE {role}")).unwrap();
    let report = result.unwrap();
    assert!(!report.overlapped);
    assert_eq!(
        sums.unwrap()[0],
        vec![SqlValue::Integer(6), SqlValue::Integer(0)]
    );
}

/// Whether an update of `a` in chunks of two over six rows of the table
/// `script` makes ran its chunks overlapped (`None`: no server).
fn chunks_overlap(name: &str, script: &str, expression: &str) -> Option<bool> {
    update_in_pairs(name, script, expression).map(|(_, _, report)| report.overlapped)
}

/// Six rows at 0, updated two to a chunk to one more than the rows already
/// above 0: 1, 1, 3, 3, 5, 5 when each chunk sees the chunks before it.
fn assert_each_chunk_sees_the_ones_before(name: &str, setup: &str, expression: &str) {
    let Some((_scratch, mut database, report)) = update_in_pairs(
        name,
        &format!("CREATE TABLE t (id int PRIMARY KEY, a int NOT NULL); {setup}"),
        expression,
    ) else {
        return;
    };
    assert!(!report.overlapped, "{name}: the chunks overlapped");
    let rows = database.query("SELECT a FROM t ORDER BY id", &[]).unwrap();
    let values: Vec<SqlValue> = rows.into_iter().map(|row| row[0].clone()).collect();
    assert_eq!(
        values,
        [1, 1, 3, 3, 5, 5].map(SqlValue::Integer).to_vec(),
        "each chunk saw the chunks before it"
    );
}

/// The table `script` makes, given six rows (`id` 1 to 6, `a` 0), then
/// `a` set to `expression` two rows to a chunk.
fn update_in_pairs(
    name: &str,
    script: &str,
    expression: &str,
) -> Option<(PgDatabase, Database, StepReport)> {
    let (scratch, mut database) = scratch_with(
        name,
        &format!("{script}; INSERT INTO t (id, a) SELECT i, 0 FROM generate_series(1, 6) AS i"),
    )?;
    let mut ledger = TestLedger::new();
    let report = database
        .update(
            &update_every_row(&[("a", expression)], 2),
            &mut ledger.recorder(),
        )
        .unwrap();
    assert_eq!(report.rows, 6, "{name}");
    Some((scratch, database, report))
}

/// A chunk that fails while the one before it is being recorded on the
/// other connection: the chunks before it stay committed and recorded,
/// it and the rows after it are untouched, and the rollback is exact.
#[test]
fn postgres_failing_overlapped_chunk_keeps_the_chunks_before_it() {
    let Some((scratch, mut database)) = scratch_with(
        "rw_overlap_fail",
        "CREATE TABLE t (id int PRIMARY KEY, a int NOT NULL); \
             INSERT INTO t SELECT i, i FROM generate_series(1, 9) AS i",
    ) else {
        return;
    };
    let before = scratch.dump(false);
    let mut ledger = TestLedger::new();
    let error = database
        .update(
            &update_every_row(&[("a", "100 / (id - 7)")], 2),
            &mut ledger.recorder(),
        )
        .unwrap_err();
    assert!(
        matches!(&error, DbError::Statement { message, .. } if message.contains("division by zero")),
        "{error}"
    );
    let recorded: Vec<u64> = rows_changed(&ledger)
        .iter()
        .flat_map(|chunk| chunk.rows.iter())
        .map(|row| match &row.key[0] {
            SqlValue::Typed(id) => id.parse().unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(recorded, vec![1, 2, 3, 4, 5, 6]);
    let rows = database
        .query("SELECT id FROM t WHERE a = id ORDER BY id", &[])
        .unwrap();
    assert_eq!(
        rows.into_iter()
            .map(|row| row[0].clone())
            .collect::<Vec<_>>(),
        [7, 8, 9].map(SqlValue::Integer).to_vec()
    );
    ledger.roll_back(&mut database, UndoOptions::default());
    assert_same_dump(&before, &scratch.dump(false), "failed step rolled back");
}

fn sql_step(up: &str, down: &str) -> Schema {
    Schema {
        step: 0,
        kind: "sql",
        up: up.into(),
        down: Some(down.into()),
        irreversible: false,
    }
}

fn column(database: &mut Database, sql: &str) -> Vec<SqlValue> {
    database
        .query(sql, &[])
        .unwrap()
        .into_iter()
        .map(|row| row[0].clone())
        .collect()
}

/// A key the next chunk's statement carries as a literal stays a literal
/// after a `sql` step turned `standard_conforming_strings` off.
#[test]
fn postgres_key_literals_hold_whatever_the_session_set() {
    let Some((_scratch, mut database)) = scratch_with(
        "rw_overlap_scs",
        r#"CREATE TABLE t (k text COLLATE "C" PRIMARY KEY, a int NOT NULL);
           CREATE TABLE victim (x int); INSERT INTO victim VALUES (1), (2);
           INSERT INTO t VALUES ('0', 0), (E'\\'') LIMIT 1) SELECT 1; COMMIT; DELETE FROM victim; --', 0), ('z', 0)"#,
    ) else {
        return;
    };
    let mut ledger = TestLedger::new();
    database
        .schema(
            &sql_step(
                "SET standard_conforming_strings = off",
                "SET standard_conforming_strings = on",
            ),
            &mut ledger.recorder(),
        )
        .unwrap();
    database
        .update(
            &update_every_row(&[("a", "a + 1")], 1),
            &mut ledger.recorder(),
        )
        .unwrap();
    assert_eq!(
        column(&mut database, "SELECT count(*) FROM victim"),
        vec![SqlValue::Integer(2)]
    );
    assert_eq!(
        column(&mut database, "SELECT a FROM t ORDER BY k"),
        [1, 1, 1].map(SqlValue::Integer).to_vec()
    );
}

/// A session whose settings a `sql` step changed (here `search_path`)
/// runs its chunks on its own connection only: every chunk updates the
/// table the step names in that session.
#[test]
fn postgres_chunks_stay_in_the_sessions_search_path() {
    let Some((_scratch, mut database)) = scratch_with(
        "rw_overlap_path",
        "CREATE SCHEMA app; \
         CREATE TABLE app.t (id int PRIMARY KEY, a int NOT NULL); \
         INSERT INTO app.t SELECT i, 0 FROM generate_series(1, 6) AS i; \
         CREATE TABLE public.t (id int PRIMARY KEY, a int NOT NULL); \
         INSERT INTO public.t SELECT i, 0 FROM generate_series(1, 6) AS i",
    ) else {
        return;
    };
    let mut ledger = TestLedger::new();
    database
        .schema(
            &sql_step("SET search_path TO app", "SET search_path TO public"),
            &mut ledger.recorder(),
        )
        .unwrap();
    database
        .update(
            &update_every_row(&[("a", "a + 1")], 2),
            &mut ledger.recorder(),
        )
        .unwrap();
    assert_eq!(
        column(&mut database, "SELECT a FROM app.t ORDER BY id"),
        [1; 6].map(SqlValue::Integer).to_vec()
    );
    assert_eq!(
        column(&mut database, "SELECT count(*) FROM public.t WHERE a <> 0"),
        vec![SqlValue::Integer(0)]
    );
}

/// A deferred foreign key is checked at each chunk's commit, which would
/// wait for the next chunk's locks if the chunks overlapped: such a table's
/// chunks run one after the other, and the step finishes.
#[test]
fn postgres_deferred_constraints_do_not_hang_a_step() {
    let Some((scratch, _database)) = scratch_with(
        "rw_overlap_deferred",
        "CREATE TABLE t (id int PRIMARY KEY, \
           parent_id int REFERENCES t (id) DEFERRABLE INITIALLY DEFERRED, a int NOT NULL); \
         INSERT INTO t SELECT i, NULL, 0 FROM generate_series(1, 6) AS i",
    ) else {
        return;
    };
    let (done, finished) = std::sync::mpsc::channel();
    let mut database = scratch.connect();
    std::thread::spawn(move || {
        let mut ledger = TestLedger::new();
        let result = database.update(
            &update_every_row(&[("parent_id", "4"), ("a", "a + 1")], 2),
            &mut ledger.recorder(),
        );
        let _ = done.send(result.map(|report| report.rows));
    });
    let result = finished.recv_timeout(std::time::Duration::from_secs(20));
    if result.is_err() {
        // Free the server's backends before failing.
        let _ = scratch.admin().execute_script(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{}' AND pid <> pg_backend_pid()",
            scratch.name
        ));
    }
    assert_eq!(result.expect("the step finished").unwrap(), 6);
}

/// The events of one chunk undone as a group on PostgreSQL: drift in the
/// middle event stops the group there, with the newer event restored and
/// the drifted one and the older one untouched; skipping restores every
/// row but the drifted one; run again, the restored rows count as already
/// restored and the drifted row is still reported.
#[test]
fn postgres_a_chunks_events_undo_as_a_group_with_a_savepoint_each() {
    let Some((_scratch, mut database)) = scratch_with(
        "rw_undo_group",
        "CREATE TABLE t (id int PRIMARY KEY, n int NOT NULL); \
         INSERT INTO t SELECT i, 0 FROM generate_series(1, 2500) AS i",
    ) else {
        return;
    };
    let mut ledger = TestLedger::new();
    database
        .update(
            &update_every_row(&[("n", "n + 1")], 10_000),
            &mut ledger.recorder(),
        )
        .unwrap();
    database
        .execute_script("UPDATE t SET n = 7 WHERE id = 1500")
        .unwrap();
    let events: Vec<Event> = ledger.events().into_iter().rev().map(|(_, e)| e).collect();
    assert_eq!(events.len(), 3, "three events of 1000, 1000 and 500 rows");
    let group: Vec<&Event> = events.iter().collect();
    let count = |database: &mut Database, sql: &str| column(database, sql)[0].clone();
    let stopped = database.undo_group(&group, UndoOptions::default()).unwrap();
    assert_eq!(
        stopped
            .iter()
            .map(|report| (report.applied, report.restored, report.drift.len()))
            .collect::<Vec<_>>(),
        vec![(true, 500, 0), (false, 999, 1)]
    );
    assert_eq!(
        count(
            &mut database,
            "SELECT count(*) FROM t WHERE id > 2000 AND n = 0"
        ),
        SqlValue::Integer(500)
    );
    assert_eq!(
        count(
            &mut database,
            "SELECT count(*) FROM t WHERE id <= 2000 AND n = 1"
        ),
        SqlValue::Integer(1999)
    );
    let skip = UndoOptions {
        on_drift: OnDrift::Skip,
        ..UndoOptions::default()
    };
    let skipped = database.undo_group(&group, skip).unwrap();
    assert_eq!(
        skipped
            .iter()
            .map(|report| (report.restored, report.already_restored, report.drift.len()))
            .collect::<Vec<_>>(),
        vec![(0, 500, 0), (999, 0, 1), (1000, 0, 0)]
    );
    assert_eq!(
        count(&mut database, "SELECT count(*) FROM t WHERE n = 0"),
        SqlValue::Integer(2499)
    );
    let again = database.undo_group(&group, skip).unwrap();
    assert_eq!(
        again
            .iter()
            .map(|report| (report.already_restored, report.drift.len()))
            .collect::<Vec<_>>(),
        vec![(500, 0), (999, 1), (1000, 0)]
    );
}

/// The recorder fails while the next chunk's statement already runs on the
/// other connection: that chunk is rolled back with this one, the chunks
/// before stay committed and recorded, and the rows after are untouched.
#[test]
fn postgres_a_failing_recorder_rolls_back_the_chunk_in_flight_too() {
    let Some((_scratch, mut database)) = scratch_with(
        "rw_overlap_record",
        "CREATE TABLE t (id int PRIMARY KEY, a int NOT NULL); \
         INSERT INTO t SELECT i, 0 FROM generate_series(1, 8) AS i",
    ) else {
        return;
    };
    let mut ledger = TestLedger::new();
    let mut calls = 0;
    let mut inner = ledger.recorder();
    let mut failing = |events: Vec<Event>| {
        calls += 1;
        if calls == 2 {
            return Err(std::io::Error::other("the disk is full"));
        }
        inner(events).map_err(std::io::Error::other)
    };
    let error = database
        .update(&update_every_row(&[("a", "a + 1")], 2), &mut failing)
        .unwrap_err();
    assert!(matches!(error, DbError::Record { .. }), "{error}");
    drop(inner);
    assert_eq!(rows_changed(&ledger).len(), 1);
    assert_eq!(
        column(&mut database, "SELECT id FROM t WHERE a = 1 ORDER BY id"),
        [1, 2].map(SqlValue::Integer).to_vec()
    );
    let idle = column(
        &mut database,
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
    );
    assert_eq!(idle, vec![SqlValue::Integer(0)], "no transaction left open");
}

/// A key a step names must be one no two rows share, as on SQLite: the
/// key's duplicates are refused before anything runs; a key that covers a
/// valid unique index (its key columns, not those it only includes) or the
/// primary key is taken, and so is one no two rows share now.
#[test]
fn postgres_a_key_two_rows_share_is_refused_before_anything_changes() {
    let Some((scratch, mut database)) = scratch_with(
        "rw_key_unique",
        "CREATE TABLE t (id int PRIMARY KEY, n int, m int, g int, v int NOT NULL, j json); \
         CREATE UNIQUE INDEX t_m ON t (m) INCLUDE (n); \
         CREATE UNIQUE INDEX t_n_over_one ON t (n) WHERE n > 1; \
         INSERT INTO t VALUES (1, 1, 10, 100, 0), (2, 1, 20, 200, 0), (3, 3, 30, 300, 0)",
    ) else {
        return;
    };
    // A unique index whose build failed on the duplicates stays behind,
    // not valid: it keeps nothing unique.
    assert!(
        database
            .execute_script("CREATE UNIQUE INDEX CONCURRENTLY t_n_failed ON t (n)")
            .is_err()
    );
    let before = scratch.dump(true);
    let mut ledger = TestLedger::new();
    let update = |key: &[&str]| Update {
        key: Some(key.iter().map(|column| (*column).to_owned()).collect()),
        ..update_every_row(&[("v", "v + 1")], 100)
    };
    let error = database
        .update(&update(&["n"]), &mut ledger.recorder())
        .unwrap_err();
    assert!(
        matches!(&error, DbError::KeyNotUnique { key, value, .. } if key == "n" && value == "1"),
        "{error}"
    );
    // A key of a json column cannot be compared: its own refusal.
    let error = database
        .update(&update(&["j"]), &mut ledger.recorder())
        .unwrap_err();
    assert!(
        matches!(&error, DbError::KeyUncheckable { key, .. } if key == "j"),
        "{error}"
    );
    assert_eq!(scratch.dump(true), before, "refused");
    assert!(ledger.events().is_empty());
    for key in [&["m"][..], &["n", "id"], &["g"]] {
        let report = database
            .update(&update(key), &mut ledger.recorder())
            .unwrap();
        assert_eq!(report.rows, 3, "{key:?}");
    }
    ledger.roll_back(&mut database, UndoOptions::default());
    assert_eq!(scratch.dump(true), before, "rolled back");
}
