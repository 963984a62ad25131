//! The example runbooks in `migrations/examples/` run end to end on the
//! generated panel fixture, on SQLite and PostgreSQL: every verify passes,
//! every row is recorded, and rolling both back restores an identical dump.
//!
//! The spec parser lives elsewhere; this test reads the TOML with a small
//! mapping onto `migrations::db` operations, enough for the examples.

mod db_common;
#[path = "../../tools/src/teams_fixture.rs"]
mod teams_fixture;

use std::collections::BTreeMap;

use db_common::{PgDatabase, SqliteFile, TestLedger, assert_same_dump};
use rewind_ledger::{Event, SqlValue};
use rewind_migrations::db::{
    Check, Database, Delete, Expectation, Insert, InsertSource, Schema, UndoOptions, Update,
    Verify, recorded_values,
};
use toml::Value;

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn strings(value: Option<&Value>) -> Option<Vec<String>> {
    value
        .and_then(Value::as_array)
        .map(|items| items.iter().map(text).collect())
}

fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_table)
        .map(|table| table.iter().map(|(k, v)| (k.clone(), text(v))).collect())
        .unwrap_or_default()
}

fn sql_value(value: &Value) -> SqlValue {
    match value {
        Value::String(text) => SqlValue::Text(text.clone()),
        Value::Integer(number) => SqlValue::Integer(*number),
        Value::Float(number) => SqlValue::Real(format!("0x{:016x}", number.to_bits())),
        other => SqlValue::Text(other.to_string()),
    }
}

/// Applies every step of a spec; returns false at the first failed verify.
fn apply(spec: &str, database: &mut Database, ledger: &mut TestLedger) -> bool {
    let spec: Value = toml::from_str(spec).unwrap();
    for (index, step) in spec["step"].as_array().unwrap().iter().enumerate() {
        let step_number = index as u32 + 1;
        let table = step.get("table").map(text).unwrap_or_default();
        let key = strings(step.get("key"));
        let chunk_size = step
            .get("chunk_size")
            .and_then(Value::as_integer)
            .map(|n| n as usize);
        let filter = step.get("where").map(text);
        let kind = step["kind"].as_str().unwrap();
        let events: Vec<Event> = ledger
            .events()
            .into_iter()
            .map(|(_, event)| event)
            .collect();
        let mut recorder = ledger.recorder();
        match kind {
            "verify" => {
                let checks = step
                    .get("checks")
                    .and_then(Value::as_array)
                    .map(|checks| {
                        checks
                            .iter()
                            .map(|check| {
                                if let Some(query) = check.get("query_returns_no_rows") {
                                    return Check {
                                        query: text(query),
                                        expect: Expectation::ReturnsNoRows,
                                    };
                                }
                                let expect = if let Some(value) = check.get("equals") {
                                    Expectation::Equals(text(value))
                                } else if let Some(value) = check.get("equals_recorded") {
                                    Expectation::EqualsRecorded(text(value))
                                } else {
                                    Expectation::AtLeast(text(&check["at_least"]))
                                };
                                Check {
                                    query: text(&check["query"]),
                                    expect,
                                }
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let verify = Verify {
                    step: step_number,
                    record: string_map(step.get("record")),
                    checks,
                };
                let report = database
                    .verify(&verify, &recorded_values(&events), &mut recorder)
                    .unwrap();
                if !report.passed {
                    let failed: Vec<_> =
                        report.checks.iter().filter(|check| !check.passed).collect();
                    panic!("step {step_number} failed: {failed:?}");
                }
            }
            "ddl" | "sql" => database
                .schema(
                    &Schema {
                        step: step_number,
                        kind: if kind == "ddl" { "ddl" } else { "sql" },
                        up: text(&step["up"]),
                        down: step.get("down").map(text),
                        irreversible: step
                            .get("irreversible")
                            .and_then(Value::as_bool)
                            .unwrap_or(false),
                    },
                    &mut recorder,
                )
                .unwrap(),
            "insert" => {
                let source = match step.get("select") {
                    Some(select) => InsertSource::Select(text(select)),
                    None => InsertSource::Rows(
                        step["rows"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|row| {
                                row.as_table()
                                    .unwrap()
                                    .iter()
                                    .map(|(k, v)| (k.clone(), sql_value(v)))
                                    .collect()
                            })
                            .collect(),
                    ),
                };
                let report = database
                    .insert(
                        &Insert {
                            step: step_number,
                            table,
                            key,
                            source,
                            chunk_size,
                        },
                        &mut recorder,
                    )
                    .unwrap();
                assert!(report.rows > 0, "step {step_number} inserted nothing");
            }
            "update" => {
                let report = database
                    .update(
                        &Update {
                            step: step_number,
                            table,
                            key,
                            filter,
                            set: string_map(step.get("set")),
                            chunk_size,
                        },
                        &mut recorder,
                    )
                    .unwrap();
                assert!(report.rows > 0, "step {step_number} updated nothing");
            }
            "delete" => {
                database
                    .delete(
                        &Delete {
                            step: step_number,
                            table,
                            key,
                            filter,
                            chunk_size,
                        },
                        &mut recorder,
                    )
                    .unwrap();
            }
            other => panic!("unknown step kind {other}"),
        }
    }
    true
}

fn example(name: &str) -> String {
    std::fs::read_to_string(format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn run_examples(database: &mut Database, dump: &mut dyn FnMut(&mut Database) -> String) {
    let before = dump(database);
    let mut ledger = TestLedger::new();
    assert!(apply(
        &example("teams-to-organizations.toml"),
        database,
        &mut ledger
    ));
    assert!(apply(
        &example("organizational-model.toml"),
        database,
        &mut ledger
    ));
    let rows: usize = ledger
        .events()
        .iter()
        .map(|(_, event)| {
            event
                .rows_changed()
                .map_or(0, |rows| rows.unwrap().rows.len())
        })
        .sum();
    assert!(rows > 1000, "only {rows} rows recorded");
    let reports = ledger.roll_back(database, UndoOptions::default());
    assert!(reports.iter().all(|report| report.drift.is_empty()));
    assert_same_dump(&before, &dump(database), "examples rolled back");
}

#[test]
fn examples_run_and_roll_back_on_sqlite() {
    let file = SqliteFile::new();
    let mut database = file.connect();
    database
        .execute_script(&teams_fixture::script(false, 150, 7))
        .unwrap();
    run_examples(&mut database, &mut |database| {
        database.dump_sqlite().unwrap()
    });
}

#[test]
fn examples_run_and_roll_back_on_postgres() {
    let Some(scratch) = PgDatabase::create("rw_examples") else {
        return;
    };
    let mut database = scratch.connect();
    database
        .execute_script(&teams_fixture::script(true, 150, 7))
        .unwrap();
    run_examples(&mut database, &mut |_| {
        scratch.dump(true) + &scratch.dump(false)
    });
}
