//! Database migrations end to end through the same commands as file ones:
//! the teams runbook (`rewind_migrations::fixtures::TEAMS_RUNBOOK`) on a
//! SQLite panel database — plan, apply, status, history of one row,
//! rollback (dry run, drift, skip) back to a byte-identical dump — and the
//! bad-input cases, each showing that nothing changed (dump identical,
//! ledger head unchanged).

use insta::assert_snapshot;
use rewind_migrations::db::Database;
use rewind_migrations::fixtures::{TEAMS_RUNBOOK, build_teams_sqlite};
use rewind_tests::TestEnv;

/// A ledger, a panel database of five teams at `[TEMP]/panel.db` and the
/// runbook at `[TEMP]/teams.toml`.
pub struct DbEnv {
    pub env: TestEnv,
    pub url: String,
    pub spec: String,
}

impl DbEnv {
    pub fn new() -> DbEnv {
        DbEnv::with_spec(TEAMS_RUNBOOK)
    }

    pub fn with_spec(text: &str) -> DbEnv {
        let env = TestEnv::with_ledger();
        let url = build_teams_sqlite(&env.root().join("panel.db"), 5).unwrap();
        let spec = env.root().join("teams.toml");
        std::fs::write(&spec, text).unwrap();
        DbEnv {
            env,
            url,
            spec: spec.display().to_string(),
        }
    }

    pub fn target(&self) -> String {
        format!("db={}", self.url)
    }

    pub fn dump(&self) -> String {
        Database::connect(&self.url).unwrap().dump_sqlite().unwrap()
    }

    pub fn sql(&self, script: &str) {
        Database::connect(&self.url)
            .unwrap()
            .execute_script(script)
            .unwrap();
    }

    pub fn head(&self) -> String {
        self.env.run(&["verify"]).stdout
    }

    pub fn apply(&self) -> String {
        self.env
            .snapshot(&["apply", &self.spec, "--target", &self.target(), "--yes"])
    }
}

#[test]
fn plan_apply_status_history_rollback_on_sqlite() {
    let db = DbEnv::new();
    let before = db.dump();
    let target = db.target();
    assert_snapshot!(
        "db_plan",
        db.env.snapshot(&["plan", &db.spec, "--target", &target])
    );
    assert_eq!(before, db.dump(), "plan changes nothing");
    assert_snapshot!("db_apply", db.apply());
    let applied = db.dump();
    assert_ne!(before, applied);
    assert_snapshot!("db_status_run", db.env.snapshot(&["status", "r1"]));
    assert_snapshot!(
        "db_history_row",
        db.env
            .snapshot(&["history", "--table", "applications", "--key", "10"])
    );
    assert_snapshot!(
        "db_rollback_dry_run",
        db.env.snapshot(&["rollback", "r1", "--dry-run"])
    );
    assert_eq!(applied, db.dump(), "a dry run changes nothing");
    assert_snapshot!("db_rollback", db.env.snapshot(&["rollback", "r1", "--yes"]));
    assert_eq!(before, db.dump(), "rolled back to a byte-identical dump");
}

/// The rows of a packed chunk, sealed or not, read the same through
/// `rewind show --json` and through `tools/unpack_rows.py` on an audit
/// export (no rewind needed); `show` in text prints them unpacked.
#[test]
fn packed_rows_unpack_the_same_with_and_without_rewind() {
    let db = DbEnv::new();
    db.apply();
    // The capture seals its images; a rewind before format 3 left them
    // plain, as this event holds them.
    {
        use rewind_ledger::{
            Column, Event, Ledger, Origin, RowImage, RowsChanged, RowsPacked, SqlValue,
        };
        let plain = RowsPacked::of(&RowsChanged {
            chunk: 0,
            columns: vec![Column {
                name: "id".into(),
                sql_type: "INTEGER".into(),
            }],
            database: db.url.clone(),
            key_columns: vec!["id".into()],
            rows: vec![RowImage {
                after: None,
                before: Some(vec![SqlValue::Integer(99)]),
                key: vec![SqlValue::Integer(99)],
            }],
            step: 9,
            table: "teams".into(),
        })
        .unwrap();
        let origin = Origin {
            actor: "tester@testhost".into(),
            host: "testhost".into(),
        };
        let mut ledger = Ledger::open(&db.env.ledger, origin).unwrap();
        ledger.append(Some("r0"), Event::RowsPacked(plain)).unwrap();
    }
    let export = db.env.root().join("trail.jsonl");
    let output = db.env.run(&[
        "audit",
        "export",
        "--format",
        "jsonl",
        "--output",
        export.to_str().unwrap(),
    ]);
    assert_eq!(output.code, 0, "{output:?}");
    // The capture seals images where that makes them smaller: both forms
    // are in this trail.
    let trail = std::fs::read_to_string(&export).unwrap();
    let images: Vec<String> = trail
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter_map(|line| {
            line["record"]["event"]["RowsPacked"]["images"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert!(
        images.iter().any(|images| images.starts_with("28b52ffd")),
        "{trail}"
    );
    assert!(
        images.iter().any(|images| !images.starts_with("28b52ffd")),
        "{trail}"
    );
    if !crate::ledger_cli::python_reads_zstd() {
        return;
    }
    let Some((ok, stdout, stderr)) = crate::ledger_cli::python_tool("unpack_rows.py", &export, &[])
    else {
        return;
    };
    assert!(ok, "{stderr}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(lines.len() >= 3, "{stdout}");
    for line in &lines {
        let seq = line["seq"].to_string();
        let shown = db.env.run(&["show", &seq, "--json"]);
        let shown: serde_json::Value = serde_json::from_str(&shown.stdout).unwrap();
        assert_eq!(shown["unpacked_rows"], line["rows"], "seq {seq}");
        assert!(!line["rows"].as_array().unwrap().is_empty());
    }
    let text = db.env.run(&["show", &lines[0]["seq"].to_string()]).stdout;
    assert!(text.contains("its images unpacked"), "{text}");
    assert!(text.contains("\"before\""), "{text}");
}

#[test]
fn drift_on_a_row_stops_the_rollback_and_names_table_key_and_columns() {
    let db = DbEnv::new();
    let before = db.dump();
    assert!(db.apply().starts_with("exit: 0"));
    // Someone re-owns an application the migration touched, and edits a
    // row it did not touch.
    db.sql(
        "UPDATE applications SET organization_id = 4 WHERE id = 10;\n\
         UPDATE users SET name = 'renamed' WHERE id = 1",
    );
    let drifted = db.dump();
    assert_snapshot!(
        "db_drift_dry_run",
        db.env.snapshot(&["rollback", "r1", "--dry-run"])
    );
    assert_snapshot!(
        "db_drift_report",
        db.env.snapshot(&["rollback", "r1", "--yes"])
    );
    // Newest first: the licences deleted by step 5 came back, then the
    // drifted applications chunk stopped the rollback untouched.
    let stopped = db.dump();
    assert_ne!(drifted, stopped);
    assert!(
        stopped.contains("'app 10 — \"Platform\"',4)"),
        "the drifted row is left alone"
    );
    assert!(
        stopped.contains("'panel',9)"),
        "the deleted licence is back"
    );
    // Skipping leaves the drifted row (and the untouched one) as found and
    // restores the rest.
    let skipped = db
        .env
        .snapshot(&["rollback", "r1", "--yes", "--on-drift", "skip"]);
    assert!(skipped.starts_with("exit: 3"), "{skipped}");
    // The event of the drifted row had its other rows restored, and says so.
    assert!(
        skipped.contains(" 1 in part (their rows restored but the drifted ones), 1 drifted"),
        "{skipped}"
    );
    // The run's status counts the drift the rollbacks left, each time.
    let status = db.env.run(&["status", "r1"]);
    assert!(
        status
            .stdout
            .contains("2 row(s) or path(s) found changed since and left alone by a rollback"),
        "{status:?}"
    );
    let status = db.env.run(&["--json", "status", "r1"]);
    assert!(status.stdout.contains("\"drift_found\": 2"), "{status:?}");
    let now = db.dump();
    assert!(
        now.contains("renamed"),
        "rows the migration did not touch keep later writes"
    );
    assert_ne!(before, now);
    // A row's history goes on past the migration: the drifted row shows
    // each rollback that met it changed and left it, and no undo.
    let row = |key: &str| kinds(&db.env.history(&["--table", "applications", "--key", key]));
    assert_eq!(
        row("10"),
        ["RowsPacked", "DriftFound", "DriftFound"],
        "the dry run records nothing; each of the two rollbacks records the drift"
    );
    let text = db
        .env
        .snapshot(&["history", "--table", "applications", "--key", "10"]);
    assert!(
        text.contains("drift at seq")
            && text.contains("applications (10): columns organization_id"),
        "{text}"
    );
}

fn kinds(items: &[serde_json::Value]) -> Vec<String> {
    items
        .iter()
        .map(|item| item["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// A restored row's history ends with the rollback that put it back: the
/// `Compensated` of its event, or, when a rollback skipped the drift of
/// another row of that event and restored this one, that drift. A rollback
/// that stopped at the drift restored neither.
#[test]
fn a_rows_history_shows_the_rollback_that_restored_it() {
    let db = DbEnv::new();
    assert!(db.apply().starts_with("exit: 0"));
    // Application 10 is re-owned by hand; 11 is in the same chunk.
    db.sql("UPDATE applications SET organization_id = 4 WHERE id = 10");
    let row = |table: &str, key: &str| db.env.history(&["--table", table, "--key", key]);
    // Stopped at the drift: the chunk, 11 with it, is untouched.
    let stopped = db.env.snapshot(&["rollback", "r1", "--yes"]);
    assert!(stopped.starts_with("exit: 3"), "{stopped}");
    assert_eq!(kinds(&row("applications", "11")), ["RowsPacked"]);
    // Licence 3, deleted by step 5, was put back before the stop.
    let licence = row("licences", "3");
    assert_eq!(kinds(&licence), ["RowsPacked", "Compensated"]);
    assert_eq!(
        licence[1]["event"]["Compensated"]["undoes"],
        licence[0]["seq"]
    );
    let text = db
        .env
        .run(&["history", "--table", "licences", "--key", "3"])
        .stdout;
    assert!(
        text.contains(&format!("undid seq {} ", licence[0]["seq"]))
            || text.contains(&format!("undid seq {}\n", licence[0]["seq"])),
        "{text}"
    );
    // Skipped: 11 is restored beside the drifted 10, its event left open.
    let skipped = db
        .env
        .snapshot(&["rollback", "r1", "--yes", "--on-drift", "skip"]);
    assert!(skipped.starts_with("exit: 3"), "{skipped}");
    let eleven = row("applications", "11");
    assert_eq!(kinds(&eleven), ["RowsPacked", "DriftFound"]);
    assert_eq!(eleven[1]["restored"], true);
    let text = db
        .env
        .run(&["history", "--table", "applications", "--key", "11"])
        .stdout;
    assert!(
        text.contains(
            "this row back at its before image; other rows of the event left as found: drift at seq"
        ),
        "{text}"
    );
    let ten = row("applications", "10");
    assert_eq!(kinds(&ten), ["RowsPacked", "DriftFound", "DriftFound"]);
    assert!(ten.iter().all(|item| item.get("restored").is_none()));
    // `--kind` keeps one kind of the row's history, its aftermath too.
    let only = |kind: &str| {
        kinds(
            &db.env
                .history(&["--table", "licences", "--key", "3", "--kind", kind]),
        )
    };
    assert_eq!(only("RowsPacked"), ["RowsPacked"]);
    assert_eq!(only("Compensated"), ["Compensated"]);
    assert_eq!(
        kinds(&db.env.history(&[
            "--table",
            "applications",
            "--key",
            "10",
            "--kind",
            "DriftFound"
        ],)),
        ["DriftFound", "DriftFound"]
    );
}

/// `--since` keeps the rollback of a change made before it: the change is
/// found to tell what its rollback undid, and only the rollback is shown.
#[test]
fn a_rows_history_since_a_time_keeps_a_later_rollback_of_an_earlier_change() {
    let db = DbEnv::new();
    assert!(db.apply().starts_with("exit: 0"));
    let rolled = db
        .env
        .run_at("2026-01-05T00:00:00Z", &["rollback", "r1", "--yes"]);
    assert_eq!(rolled.code, 0, "{rolled:?}");
    let row = ["--table", "licences", "--key", "3"];
    assert_eq!(kinds(&db.env.history(&row)), ["RowsPacked", "Compensated"]);
    let since = db
        .env
        .history(&[&row[..], &["--since", "2026-01-04"]].concat());
    assert_eq!(kinds(&since), ["Compensated"]);
    let until = db
        .env
        .history(&[&row[..], &["--until", "2026-01-03"]].concat());
    assert_eq!(kinds(&until), ["RowsPacked"]);
}

/// Several rows of one event drifted, and the rollback that skipped them
/// is recorded under no run (`--after`): a drifted row's history shows
/// its own drift and no restore; a row restored beside them shows one
/// line for that rollback, under `--run` too.
#[test]
fn a_rows_history_tells_its_own_drift_from_its_neighbours() {
    let db = DbEnv::new();
    assert!(db.apply().starts_with("exit: 0"));
    db.sql(
        "UPDATE applications SET organization_id = 4 WHERE id IN (10, 11);\n\
         UPDATE applications SET organization_id = 3 WHERE id = 20",
    );
    let skipped = db
        .env
        .snapshot(&["rollback", "--after", "1", "--yes", "--on-drift", "skip"]);
    assert!(skipped.starts_with("exit: 3"), "{skipped}");
    for args in [
        &["--table", "applications", "--key", "11"][..],
        &["--table", "applications", "--key", "11", "--run", "r1"],
    ] {
        let eleven = db.env.history(args);
        assert_eq!(kinds(&eleven), ["RowsPacked", "DriftFound"], "{args:?}");
        assert!(eleven[1].get("restored").is_none(), "{args:?}");
        assert!(
            eleven[1]["summary"]
                .as_str()
                .unwrap()
                .contains("applications (11): columns organization_id"),
            "{eleven:?}"
        );
    }
    for args in [
        &["--table", "applications", "--key", "21"][..],
        &["--table", "applications", "--key", "21", "--run", "r1"],
    ] {
        let neighbour = db.env.history(args);
        assert_eq!(kinds(&neighbour), ["RowsPacked", "DriftFound"], "{args:?}");
        assert_eq!(neighbour[1]["restored"], true, "{args:?}");
    }
    // The whole table: each drift once, none called a restore.
    let table = db
        .env
        .history(&["--table", "applications", "--kind", "DriftFound"]);
    assert_eq!(table.len(), 3, "{table:?}");
    assert!(table.iter().all(|item| item.get("restored").is_none()));
}

#[test]
fn a_failing_verify_with_on_fail_rollback_rolls_the_run_back() {
    let spec = TEAMS_RUNBOOK.replace("equals_recorded = \"owned\" }", "equals = 12345 }");
    let db = DbEnv::with_spec(&spec);
    let before = db.dump();
    assert_snapshot!("db_verify_rollback", db.apply());
    assert_eq!(before, db.dump(), "the run was rolled back");
}

#[test]
fn two_sqlite_targets_with_jobs() {
    let db = DbEnv::new();
    let second = build_teams_sqlite(&db.env.root().join("second.db"), 3).unwrap();
    let before = (
        db.dump(),
        Database::connect(&second).unwrap().dump_sqlite().unwrap(),
    );
    let output = db.env.run(&[
        "apply",
        &db.spec,
        "--target",
        &db.target(),
        "--target",
        &format!("db={second}"),
        "--jobs",
        "2",
        "--yes",
    ]);
    assert_eq!(output.code, 0, "{output:?}");
    for run in ["r1", "r2"] {
        let rolled = db.env.run(&["rollback", run, "--yes"]);
        assert_eq!(rolled.code, 0, "{rolled:?}");
    }
    let after = (
        db.dump(),
        Database::connect(&second).unwrap().dump_sqlite().unwrap(),
    );
    assert_eq!(before, after);
}

/// Applies a one-off spec to the panel database and checks that it was
/// refused before anything ran: exit code, dump and ledger head unchanged.
fn refused(name: &str, steps: &str, database: Option<&str>) -> String {
    let header = match database {
        Some(url) => format!("database = \"{url}\"\n"),
        None => String::new(),
    };
    let text = format!(
        "[migration]\nid = \"{name}\"\n{header}[vars]\ndb = {{ required = true }}\n\n{steps}"
    );
    let db = DbEnv::with_spec(&text);
    let before = db.dump();
    let head = db.head();
    let output = db.apply();
    assert_eq!(before, db.dump(), "{name}: the database is unchanged");
    assert_eq!(head, db.head(), "{name}: the ledger is unchanged");
    output
}

const UPDATE_LICENCES: &str =
    "[[step]]\nkind = \"update\"\ntable = \"licences\"\nset = { seats = \"seats + 1\" }\n\n";

#[test]
fn bad_input_is_refused_before_anything_runs() {
    let cases: Vec<(&str, String, Option<&str>)> = vec![
        ("no_database", UPDATE_LICENCES.to_owned(), None),
        (
            "unknown_table",
            format!(
                "{UPDATE_LICENCES}[[step]]\nkind = \"update\"\ntable = \"licenses\"\nset = {{ seats = \"1\" }}\n"
            ),
            Some("{db}"),
        ),
        (
            "unknown_column",
            format!(
                "{UPDATE_LICENCES}[[step]]\nkind = \"update\"\ntable = \"licences\"\nset = {{ seats_total = \"1\" }}\n"
            ),
            Some("{db}"),
        ),
        (
            "sql_syntax_error",
            format!(
                "{UPDATE_LICENCES}[[step]]\nkind = \"delete\"\ntable = \"licences\"\nwhere = \"seats >< 3\"\n"
            ),
            Some("{db}"),
        ),
        (
            "table_without_key",
            format!(
                "[[step]]\nkind = \"ddl\"\nup = \"CREATE TABLE audit_log (message TEXT)\"\ndown = \"DROP TABLE audit_log\"\n\n\
                 {UPDATE_LICENCES}[[step]]\nkind = \"insert\"\ntable = \"audit_log\"\nselect = \"SELECT name AS message FROM teams\"\n"
            ),
            Some("{db}"),
        ),
        (
            "key_not_unique",
            format!(
                "{UPDATE_LICENCES}[[step]]\nkind = \"update\"\ntable = \"team_members\"\nkey = [\"team_id\"]\nset = {{ is_owner = \"NOT is_owner\" }}\n"
            ),
            Some("{db}"),
        ),
        (
            "sql_without_down",
            format!(
                "{UPDATE_LICENCES}[[step]]\nkind = \"sql\"\nup = \"UPDATE teams SET name = upper(name)\"\n"
            ),
            Some("{db}"),
        ),
        (
            "unreachable_database",
            UPDATE_LICENCES.to_owned(),
            Some("sqlite:///nonexistent/panel.db"),
        ),
    ];
    let mut all = String::new();
    for (name, steps, database) in cases {
        all.push_str(&format!(
            "### {name}\n{}\n",
            refused(name, &steps, database)
        ));
    }
    assert_snapshot!("db_bad_input", all);
}

#[test]
fn rollback_past_an_irreversible_step_is_refused_unless_allowed() {
    let spec = format!(
        "[migration]\nid = \"irreversible\"\ndatabase = \"{{db}}\"\n[vars]\ndb = {{ required = true }}\n\n\
         {UPDATE_LICENCES}[[step]]\nkind = \"sql\"\nup = \"DELETE FROM applications WHERE team_id IS NULL\"\nirreversible = true\n"
    );
    let db = DbEnv::with_spec(&spec);
    assert!(db.apply().starts_with("exit: 0"));
    let applied = db.dump();
    let head = db.head();
    assert_snapshot!(
        "db_irreversible_refused",
        db.env.snapshot(&["rollback", "r1", "--yes"])
    );
    // The dry run shows the plan, then refuses as the rollback would.
    let dry = db.env.run(&["rollback", "r1", "--dry-run"]);
    assert_eq!(dry.code, 1, "{dry:?}");
    assert!(dry.stdout.contains("rollback plan of run r1"), "{dry:?}");
    assert!(
        dry.stdout.contains("none: irreversible")
            && dry.stdout.contains("refused without --allow-irreversible"),
        "{dry:?}"
    );
    let json = db.env.run(&["--json", "rollback", "r1", "--dry-run"]);
    assert_eq!(json.code, 1, "{json:?}");
    let listed: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|item| item["precondition"] == "refused without --allow-irreversible"),
        "{listed}"
    );
    assert!(
        dry.stderr
            .contains("the rollback would pass irreversible step(s): seq"),
        "{dry:?}"
    );
    let dry = db
        .env
        .run(&["rollback", "r1", "--dry-run", "--allow-irreversible"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    assert_eq!(applied, db.dump());
    assert_eq!(head, db.head());
    let allowed = db
        .env
        .snapshot(&["rollback", "r1", "--yes", "--allow-irreversible"]);
    assert!(allowed.starts_with("exit: 0"), "{allowed}");
    assert!(
        !db.dump().contains("unowned"),
        "the irreversible delete stays"
    );
}

#[test]
fn demo_tours_the_teams_database_and_ends_with_an_identical_dump() {
    let env = TestEnv::new();
    let out = env.run(&["demo"]);
    assert_eq!(out.code, 0, "{out:?}");
    for section in [
        "== 8.", "== 9.", "== 10.", "== 11.", "== 12.", "== 13.", "== 14.", "== 15.",
    ] {
        assert!(
            out.stdout.contains(section),
            "{section} missing:\n{}",
            out.stdout
        );
    }
    assert!(
        out.stdout.contains("organization_id  NULL    1"),
        "before and after side by side:\n{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("4 inverse(s) applied, 0 drifted, outcome succeeded"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("identical: "), "{}", out.stdout);
    // The row's history after the rollback: its change, then its undo.
    let after = &out.stdout[out.stdout.find("== 14.").unwrap()..];
    let change = after.find("applications: 8 updated").expect(after);
    let undo = after.find("undid seq").expect(after);
    assert!(change < undo, "{after}");
}

#[test]
fn rolling_back_one_step_whose_rows_a_later_step_changed_names_the_dependents() {
    let spec = format!(
        "[migration]\nid = \"twice\"\ndatabase = \"{{db}}\"\n[vars]\ndb = {{ required = true }}\n\n\
         {UPDATE_LICENCES}[[step]]\nkind = \"update\"\ntable = \"licences\"\nwhere = \"id = 2\"\nset = {{ product = \"'panel pro'\" }}\n"
    );
    let db = DbEnv::with_spec(&spec);
    let before = db.dump();
    assert!(db.apply().starts_with("exit: 0"));
    let refused = db.env.run(&["rollback", "r1:1", "--yes"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("later dependents") && refused.stderr.contains("licences(2)"),
        "{refused:?}"
    );
    let cascaded = db.env.run(&["rollback", "r1:1", "--cascade", "--yes"]);
    assert_eq!(cascaded.code, 0, "{cascaded:?}");
    assert_eq!(before, db.dump());
}

#[test]
fn rolling_back_a_schema_step_alone_names_the_row_steps_standing_on_it() {
    let db = DbEnv::new();
    let before = db.dump();
    assert!(db.apply().starts_with("exit: 0"));
    let applied = db.dump();
    let refused = db.env.run(&["rollback", "r1:2", "--yes"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("later dependents")
            && refused.stderr.contains("organizations(1)")
            && refused.stderr.contains("applications(10)"),
        "{refused:?}"
    );
    assert_eq!(applied, db.dump(), "nothing was changed");
    let cascaded = db.env.run(&["rollback", "r1:2", "--cascade", "--yes"]);
    assert_eq!(cascaded.code, 0, "{cascaded:?}");
    assert_eq!(before, db.dump());
}

#[test]
fn one_spec_with_file_and_database_steps_rolls_back_both() {
    let spec = "[migration]\nid = \"mixed\"\ndatabase = \"{db}\"\n\n[vars]\nroot = { required = true, root = true }\ndb = { required = true }\n\n\
                [[step]]\nkind = \"mkdir\"\npath = \"{root}/exports\"\n\n\
                [[step]]\nkind = \"update\"\ntable = \"licences\"\nset = { seats = \"seats * 2\" }\n\n\
                [[step]]\nkind = \"verify\"\nchecks = [{ exists = \"{root}/exports\" }, { query = \"SELECT min(seats) FROM licences\", at_least = 12 }]\n";
    let db = DbEnv::with_spec(spec);
    let root = db.env.root().join("site");
    std::fs::create_dir(&root).unwrap();
    let before = db.dump();
    let target = format!("root={} db={}", root.display(), db.url);
    let applied = db
        .env
        .run(&["apply", &db.spec, "--target", &target, "--yes"]);
    assert_eq!(applied.code, 0, "{applied:?}");
    assert!(root.join("exports").is_dir());
    assert_ne!(before, db.dump());
    let rolled = db.env.run(&["rollback", "r1", "--yes"]);
    assert_eq!(rolled.code, 0, "{rolled:?}");
    assert!(!root.join("exports").exists());
    assert_eq!(before, db.dump());
}

/// The events of one chunk are undone in one transaction, newest first,
/// each behind a savepoint: drift in the middle event stops the rollback
/// there with the newer event restored and recorded, the drifted event and
/// the older one untouched; skipping then restores all but the drifted row.
#[test]
fn drift_inside_a_chunk_keeps_the_newer_events_of_the_chunk_undone() {
    let db = DbEnv::with_spec(
        "[migration]\nid = \"bump\"\ndatabase = \"{db}\"\n\n[vars]\ndb = { required = true }\n\n\
         [[step]]\nkind = \"update\"\ntable = \"counters\"\nset = { n = \"n + 1\" }\nchunk_size = 10000\n",
    );
    db.sql(
        "CREATE TABLE counters (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);\n\
         WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 2500)\n\
         INSERT INTO counters SELECT i, 0 FROM s",
    );
    let before = db.dump();
    let applied = db.apply();
    assert!(applied.starts_with("exit: 0"), "{applied}");
    // Rows 1–1000, 1001–2000 and 2001–2500 are three events of one chunk.
    db.sql("UPDATE counters SET n = 7 WHERE id = 1500");
    let count = |sql: &str| -> i64 {
        let rows = Database::connect(&db.url).unwrap().query(sql, &[]).unwrap();
        match rows[0][0] {
            rewind_ledger::SqlValue::Integer(n) => n,
            ref other => panic!("{other:?}"),
        }
    };
    let stopped = db.env.run(&["rollback", "r1", "--yes"]);
    assert_eq!(stopped.code, 3, "{stopped:?}");
    assert_eq!(
        count("SELECT count(*) FROM counters WHERE id > 2000 AND n = 0"),
        500
    );
    assert_eq!(
        count("SELECT count(*) FROM counters WHERE id <= 2000 AND n = 1"),
        1999
    );
    assert_eq!(count("SELECT n FROM counters WHERE id = 1500"), 7);
    let history = db.env.run(&["history", "--kind", "Compensated", "--json"]);
    assert_eq!(
        history.stdout.matches("\"undoes\":").count(),
        1,
        "{}",
        history.stdout
    );
    let skipped = db
        .env
        .run(&["rollback", "r1", "--yes", "--on-drift", "skip"]);
    assert_eq!(skipped.code, 3, "{skipped:?}");
    assert_eq!(count("SELECT count(*) FROM counters WHERE n = 0"), 2499);
    assert_eq!(count("SELECT n FROM counters WHERE id = 1500"), 7);
    db.sql("UPDATE counters SET n = 0 WHERE id = 1500");
    assert_eq!(db.dump(), before);
}

/// `rollback --json --on-drift skip`: an event whose other rows were
/// restored around a drifted one is counted in part, not as applied.
#[test]
fn a_rollback_that_skips_drift_counts_the_events_it_restored_in_part() {
    let spec = format!(
        "[migration]\nid = \"in-part\"\ndatabase = \"{{db}}\"\n[vars]\ndb = {{ required = true }}\n\n{UPDATE_LICENCES}"
    );
    let db = DbEnv::with_spec(&spec);
    assert!(db.apply().starts_with("exit: 0"));
    db.sql("UPDATE licences SET seats = 100 WHERE id = 1");
    let out = db
        .env
        .run(&["--json", "rollback", "r1", "--yes", "--on-drift", "skip"]);
    assert_eq!(out.code, 3, "{out:?}");
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["compensated"], 0, "{report}");
    assert_eq!(report["in_part"], 1, "{report}");
    assert_eq!(report["drift"].as_array().unwrap().len(), 1, "{report}");
    assert!(
        db.dump().contains("'panel',100)"),
        "the drifted row is left"
    );
    assert!(db.dump().contains("'panel',7)"), "the others are restored");
}
