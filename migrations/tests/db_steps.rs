//! The database step kinds as the spec parser and the planner see them:
//! the example runbooks parse, resolve and pass the preflight on the
//! generated panel fixture; specs that cannot work are refused with the
//! step, the field and where it is, before anything runs — and the
//! preflight leaves the database as it found it.

#[path = "../../tools/src/teams_fixture.rs"]
#[allow(dead_code)]
mod teams_fixture;

use std::collections::BTreeMap;

use rewind_migrations::db::{Database, DbError};
use rewind_migrations::plan::plan;
use rewind_migrations::spec::Spec;
use rewind_migrations::{MigrateError, SpecError};

const TEAMS: &str = include_str!("../examples/teams-to-organizations.toml");
const MODEL: &str = include_str!("../examples/organizational-model.toml");

fn panel(dir: &std::path::Path) -> String {
    let path = dir.join("panel.db");
    std::fs::write(&path, b"").unwrap();
    let url = format!("sqlite://{}", path.display());
    Database::connect(&url)
        .unwrap()
        .execute_script(&teams_fixture::script(false, 12, 3))
        .unwrap();
    url
}

fn dump(url: &str) -> String {
    Database::connect(url).unwrap().dump_sqlite().unwrap()
}

fn vars(url: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("db".to_owned(), url.to_owned())])
}

#[test]
fn the_examples_parse_resolve_and_pass_the_preflight() {
    let dir = tempfile::tempdir().unwrap();
    let url = panel(dir.path());
    let before = dump(&url);
    let spec = Spec::parse("teams-to-organizations.toml", TEAMS).unwrap();
    let resolved = spec.resolve(&vars(&url)).unwrap();
    assert_eq!(resolved.database_urls(), vec![url.clone()]);
    let planned = plan(&resolved).unwrap();
    assert_eq!(planned.steps.len(), spec.steps.len());
    assert_eq!(before, dump(&url), "the preflight changes nothing");
    // The organizational model needs the teams migration first: its very
    // first step reads organization_members, which does not exist yet.
    let model = Spec::parse("organizational-model.toml", MODEL).unwrap();
    let error = plan(&model.resolve(&vars(&url)).unwrap()).unwrap_err();
    assert!(
        matches!(
            &error,
            MigrateError::Db {
                step: Some(1),
                error: DbError::Statement { .. },
                ..
            }
        ),
        "{error}"
    );
    assert!(
        error.to_string().starts_with("step 1 (verify): "),
        "{error}"
    );
    assert_eq!(before, dump(&url));
}

/// The spec error of `steps` (after a header naming `{db}`, or none).
fn spec_error(steps: &str, database: bool) -> SpecError {
    let header = if database {
        "database = \"{db}\"\n"
    } else {
        ""
    };
    let text = format!(
        "[migration]\nid = \"case\"\n{header}[vars]\ndb = {{ required = true }}\n\n{steps}"
    );
    let spec = match Spec::parse("case.toml", &text) {
        Ok(spec) => spec,
        Err(error) => return error,
    };
    spec.resolve(&vars("sqlite:///nowhere.db")).unwrap_err()
}

#[test]
fn specs_that_cannot_work_name_the_step_and_field() {
    let error = spec_error(
        "[[step]]\nkind = \"update\"\ntable = \"t\"\nset = { a = \"1\" }\n",
        false,
    );
    assert!(
        matches!(&error, SpecError::NoDatabase { at } if at.step == Some(1) && at.line == 6),
        "{error}"
    );

    let error = spec_error(
        "[[step]]\nkind = \"sql\"\nup = \"UPDATE t SET a = 1\"\n",
        true,
    );
    assert!(
        matches!(&error, SpecError::MissingField { at, field, .. } if at.step == Some(1) && field == "down"),
        "{error}"
    );

    let error = spec_error(
        "[[step]]\nkind = \"ddl\"\nup = \"DROP TABLE t\"\ndown = \"…\"\nirreversible = true\n",
        true,
    );
    assert!(
        matches!(&error, SpecError::BadValue { field, .. } if field == "irreversible"),
        "{error}"
    );

    let error = spec_error(
        "[[step]]\nkind = \"insert\"\ntable = \"t\"\nselect = \"SELECT 1 AS a\"\nrows = [{ a = 1 }]\n",
        true,
    );
    assert!(
        matches!(&error, SpecError::BadValue { field, .. } if field == "select"),
        "{error}"
    );

    let error = spec_error(
        "[[step]]\nkind = \"verify\"\nchecks = [{ query = \"SELECT 1\" }]\n",
        true,
    );
    assert!(
        matches!(&error, SpecError::BadValue { field, .. } if field == "checks[0]"),
        "{error}"
    );

    for (kind, size) in [("update", "0"), ("delete", "-1"), ("insert", "-5")] {
        let fields = match kind {
            "update" => "set = { a = \"1\" }",
            "delete" => "where = \"TRUE\"",
            _ => "rows = [{ a = 1 }]",
        };
        let error = spec_error(
            &format!("[[step]]\nkind = \"{kind}\"\ntable = \"t\"\n{fields}\nchunk_size = {size}\n"),
            true,
        );
        assert!(
            matches!(&error, SpecError::BadValue { field, value, .. } if field == "chunk_size" && value == size),
            "{error}"
        );
        assert!(
            error.to_string().contains("a chunk has at least 1 row"),
            "{error}"
        );
    }

    let error = spec_error(
        "[[step]]\nkind = \"delete\"\ntable = \"t\"\nwhere = \"TRUE\"\ndatabase = \"mysql://x\"\n",
        true,
    );
    assert!(
        matches!(&error, SpecError::BadValue { field, .. } if field == "database"),
        "{error}"
    );
}

/// A database step tells how far it got after every chunk, in rows
/// recorded, before it finishes.
#[test]
fn a_database_step_reports_its_rows_as_its_chunks_are_recorded() {
    use rewind_migrations::Recorder;
    use rewind_migrations::apply::{Progress, RunRequest, apply};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.db");
    std::fs::write(&path, b"").unwrap();
    let url = format!("sqlite://{}", path.display());
    Database::connect(&url)
        .unwrap()
        .execute_script(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER NOT NULL); \
             INSERT INTO t VALUES (1, 0), (2, 0), (3, 0), (4, 0), (5, 0)",
        )
        .unwrap();
    let text = "[migration]\nid = \"progress\"\ndescription = \"d\"\ndatabase = \"{db}\"\n\n\
                [vars]\ndb = { required = true }\n\n\
                [[step]]\nkind = \"update\"\ntable = \"t\"\nset = { n = \"n + 1\" }\nchunk_size = 2\n";
    let spec = Spec::parse("progress.toml", text).unwrap();
    let resolved = spec.resolve(&vars(&url)).unwrap();
    let planned = plan(&resolved).unwrap();
    let ledger = rewind_ledger::Ledger::init(
        &dir.path().join("ledger"),
        "progress-ledger",
        rewind_ledger::Origin {
            actor: "tester".into(),
            host: "host".into(),
        },
    )
    .unwrap();
    let recorder = Recorder::new(ledger);
    let mut seen = Vec::new();
    let report = apply(
        &recorder,
        &RunRequest {
            run: "r1".into(),
            spec: &spec,
            resolved: &resolved,
            plan: &planned,
            target: None,
        },
        &mut |progress: &Progress| match progress {
            Progress::StepAdvanced { step, done } => seen.push(format!("{step}: {done}")),
            Progress::StepFinished { step, .. } => seen.push(format!("{step}: finished")),
            _ => {}
        },
    )
    .unwrap();
    assert_eq!(report.outcome, rewind_ledger::Outcome::Succeeded);
    assert_eq!(
        seen,
        [
            "1: 2 row(s) recorded",
            "1: 4 row(s) recorded",
            "1: 5 row(s) recorded",
            "1: finished"
        ]
    );
}
