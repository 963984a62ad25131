//! The example runbooks (`migrations/examples/teams-to-organizations.toml`
//! then `organizational-model.toml`) through the command line on the
//! generated panel fixture (`tools/src/teams_fixture.rs`): on SQLite, and
//! on PostgreSQL when a server answers (127.0.0.1:5432 user postgres, or
//! `REWIND_TEST_PG`; skipped with a message without one, but failing under
//! `CI=true`). Both applied, both rolled back, newest first, to a
//! byte-identical dump (`.dump`-like for SQLite, `pg_dump` for PostgreSQL,
//! sequences included).

#[path = "../tools/src/teams_fixture.rs"]
#[allow(dead_code)]
pub(crate) mod teams_fixture;

use rewind_migrations::db::Database;
use rewind_tests::TestEnv;

const TEAMS: &str = include_str!("../migrations/examples/teams-to-organizations.toml");
const MODEL: &str = include_str!("../migrations/examples/organizational-model.toml");

/// Applies both examples to `url`, checks each run succeeded, rolls both
/// back (newest first) and returns what `dump` says afterwards.
fn round_trip(env: &TestEnv, url: &str, dump: &dyn Fn() -> String) {
    let before = dump();
    let target = format!("db={url}");
    for (name, text) in [("teams.toml", TEAMS), ("model.toml", MODEL)] {
        let path = env.root().join(name);
        std::fs::write(&path, text).unwrap();
        let path = path.display().to_string();
        let plan = env.run(&["plan", &path, "--target", &target]);
        // The model's plan needs the teams migration applied first.
        if name == "teams.toml" {
            assert_eq!(plan.code, 0, "{plan:?}");
        }
        let applied = env.run(&["apply", &path, "--target", &target, "--yes"]);
        assert_eq!(applied.code, 0, "{name}: {applied:?}");
    }
    assert_ne!(before, dump(), "the examples changed the database");
    // Run ids are `r<first seq>`; the listing has them oldest first.
    let runs = env.run(&["status", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&runs.stdout).unwrap();
    let mut ids: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run["run"].as_str().unwrap().to_owned())
        .collect();
    ids.reverse();
    for run in ids {
        let rolled = env.run(&["rollback", &run, "--yes"]);
        assert_eq!(rolled.code, 0, "{run}: {rolled:?}");
    }
    let after = dump();
    if before != after {
        let differing: Vec<String> = before
            .lines()
            .zip(after.lines())
            .filter(|(old, new)| old != new)
            .take(5)
            .map(|(old, new)| format!("before: {old}\n after: {new}"))
            .collect();
        panic!(
            "the rolled-back database differs from the original ({} vs {} lines):\n{}",
            before.lines().count(),
            after.lines().count(),
            differing.join("\n")
        );
    }
}

#[test]
fn both_examples_round_trip_on_sqlite() {
    let env = TestEnv::with_ledger();
    let path = env.root().join("panel.db");
    std::fs::write(&path, b"").unwrap();
    let url = format!("sqlite://{}", path.display());
    Database::connect(&url)
        .unwrap()
        .execute_script(&teams_fixture::script(false, 30, 7))
        .unwrap();
    let dump = || Database::connect(&url).unwrap().dump_sqlite().unwrap();
    round_trip(&env, &url, &dump);
}

pub(crate) fn admin_url() -> String {
    std::env::var("REWIND_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `admin` with its database name replaced by `name`.
pub(crate) fn with_database(admin: &str, name: &str) -> String {
    let (base, query) = match admin.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (admin, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    format!("{}/{name}{query}", &base[..path_start])
}

/// `pg_dump` (schema, data and sequence values) with the rows of each COPY
/// block sorted: pg_dump writes rows in physical order, which an UPDATE
/// changes even when every value is restored.
fn pg_dump(url: &str) -> String {
    let output = std::process::Command::new("pg_dump")
        .args([
            "--no-owner",
            "--no-privileges",
            "--restrict-key=rewindtest",
            url,
        ])
        .output()
        .expect("pg_dump runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let mut out = Vec::new();
    let mut block: Vec<&str> = Vec::new();
    let mut in_copy = false;
    for line in text.lines() {
        if in_copy {
            if line == "\\." {
                block.sort_unstable();
                out.append(&mut block);
                out.push(line);
                in_copy = false;
            } else {
                block.push(line);
            }
        } else {
            in_copy = line.starts_with("COPY ");
            out.push(line);
        }
    }
    out.join("\n")
}

/// The admin connection, or `None` (saying the test was skipped) when no
/// server answers; under `CI=true` a missing server fails the test.
// The skip message is the test's own output, so it goes to stderr.
#[allow(clippy::print_stderr)]
pub(crate) fn pg_admin() -> Option<(String, Database)> {
    let admin_url = admin_url();
    match Database::connect(&admin_url) {
        Ok(admin) => Some((admin_url, admin)),
        Err(error) => {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "CI=true but PostgreSQL is not reachable at {admin_url}: {error}"
            );
            eprintln!("skipped: PostgreSQL is not reachable at {admin_url} ({error})");
            None
        }
    }
}

/// Runs `test` with the url of a fresh PostgreSQL database holding the
/// panel fixture, dropped afterwards whatever happens; skips (or fails under
/// `CI=true`) without a server.
pub(crate) fn on_fresh_panel(prefix: &str, test: impl FnOnce(&str)) {
    let Some((admin_url, mut admin)) = pg_admin() else {
        return;
    };
    let name = format!(
        "{prefix}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    admin
        .execute_script(&format!("CREATE DATABASE \"{name}\""))
        .unwrap();
    let url = with_database(&admin_url, &name);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Database::connect(&url)
            .unwrap()
            .execute_script(&teams_fixture::script(true, 30, 7))
            .unwrap();
        test(&url);
    }));
    admin
        .execute_script(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .unwrap();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn both_examples_round_trip_on_postgres() {
    on_fresh_panel("rewind_cli_examples", |url| {
        let env = TestEnv::with_ledger();
        let dump = || pg_dump(url);
        round_trip(&env, url, &dump);
    });
}

#[test]
fn wrong_credentials_on_postgres_are_refused_without_showing_the_password() {
    let Some((admin_url, _admin)) = pg_admin() else {
        return;
    };
    let env = TestEnv::with_ledger();
    let path = env.root().join("teams.toml");
    std::fs::write(&path, TEAMS).unwrap();
    // An unknown role with a password: refused whatever pg_hba asks for.
    let url = with_database(&admin_url, "postgres").replacen(
        "postgres://postgres@",
        "postgres://rewind_no_such_role:hunter2@",
        1,
    );
    let head = env.run(&["verify"]).stdout;
    let output = env.run(&[
        "apply",
        &path.display().to_string(),
        "--target",
        &format!("db={url}"),
        "--yes",
    ]);
    assert_eq!(output.code, 1, "{output:?}");
    assert!(
        output.stderr.contains("refused the credentials"),
        "{output:?}"
    );
    assert!(
        output.stderr.contains("rewind_no_such_role:***@"),
        "{output:?}"
    );
    assert!(!output.stderr.contains("hunter2"), "{output:?}");
    assert!(!output.stdout.contains("hunter2"), "{output:?}");
    assert_eq!(head, env.run(&["verify"]).stdout, "the ledger is unchanged");
}

#[test]
fn a_password_in_the_target_never_reaches_the_ledger_or_the_output() {
    let Some((admin_url, mut admin)) = pg_admin() else {
        return;
    };
    let name = format!("rewind_cli_secret_{}", std::process::id());
    admin
        .execute_script(&format!("DROP DATABASE IF EXISTS \"{name}\""))
        .unwrap();
    admin
        .execute_script(&format!("CREATE DATABASE \"{name}\""))
        .unwrap();
    let plain = with_database(&admin_url, &name);
    let result = std::panic::catch_unwind(|| {
        Database::connect(&plain)
            .unwrap()
            .execute_script(&rewind_migrations::fixtures::teams_script(4))
            .unwrap();
        // The local server trusts user postgres, so any password connects;
        // what matters is where the password shows up.
        let with_password =
            plain.replacen("postgres://postgres@", "postgres://postgres:s3cret@", 1);
        assert_ne!(
            with_password, plain,
            "REWIND_TEST_PG is not postgres://postgres@…"
        );
        let env = TestEnv::with_ledger();
        let spec = env.root().join("teams.toml");
        std::fs::write(&spec, rewind_migrations::fixtures::TEAMS_RUNBOOK).unwrap();
        let spec = spec.display().to_string();
        let target = format!("db={with_password}");
        let mut outputs = vec![
            env.run(&["plan", &spec, "--target", &target]),
            env.run(&["apply", &spec, "--target", &target, "--yes"]),
        ];
        assert_eq!(outputs[1].code, 0, "{:?}", outputs[1]);
        outputs.push(env.run(&["status", "r1"]));
        outputs.push(env.run(&["history", "--json"]));
        outputs.push(env.run(&["audit", "export", "--format", "jsonl"]));
        outputs.push(env.run(&["rollback", "r1", "--dry-run"]));
        // The ledger holds `postgres:***@`; `--database` gives the password back.
        let rolled = env.run(&["rollback", "r1", "--yes", "--database", &with_password]);
        assert_eq!(rolled.code, 0, "{rolled:?}");
        outputs.push(rolled);
        for output in &outputs {
            assert!(
                !output.stdout.contains("s3cret") && !output.stderr.contains("s3cret"),
                "{output:?}"
            );
        }
        assert!(outputs[4].stdout.contains("postgres:***@"));
        let mut files = vec![env.ledger.clone()];
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            } else {
                let bytes = std::fs::read(&path).unwrap();
                assert!(
                    !bytes.windows(6).any(|window| window == b"s3cret"),
                    "{} holds the password",
                    path.display()
                );
            }
        }
    });
    admin
        .execute_script(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .unwrap();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn a_refused_postgres_spec_leaves_even_sequences_as_they_were() {
    let Some((admin_url, mut admin)) = pg_admin() else {
        return;
    };
    let name = format!("rewind_cli_preflight_{}", std::process::id());
    admin
        .execute_script(&format!("DROP DATABASE IF EXISTS \"{name}\""))
        .unwrap();
    admin
        .execute_script(&format!("CREATE DATABASE \"{name}\""))
        .unwrap();
    let url = with_database(&admin_url, &name);
    let result = std::panic::catch_unwind(|| {
        Database::connect(&url)
            .unwrap()
            .execute_script(
                "CREATE TABLE things (id serial PRIMARY KEY, name text NOT NULL);\n\
                 INSERT INTO things (name) VALUES ('a'), ('b')",
            )
            .unwrap();
        let env = TestEnv::with_ledger();
        let spec = env.root().join("case.toml");
        // Step 1 runs in the preflight's transaction and advances the
        // serial's sequence, which a rollback does not take back; step 2
        // names a table that does not exist.
        std::fs::write(
            &spec,
            "[migration]\nid = \"case\"\ndatabase = \"{db}\"\n[vars]\ndb = { required = true }\n\n\
             [[step]]\nkind = \"sql\"\nup = \"INSERT INTO things (name) VALUES ('c')\"\n\
             down = \"DELETE FROM things WHERE name = 'c'\"\n\n\
             [[step]]\nkind = \"update\"\ntable = \"nothings\"\nset = { name = \"'x'\" }\n",
        )
        .unwrap();
        let before = pg_dump(&url);
        let head = env.run(&["verify"]).stdout;
        let output = env.run(&[
            "apply",
            &spec.display().to_string(),
            "--target",
            &format!("db={url}"),
            "--yes",
        ]);
        assert_eq!(output.code, 2, "{output:?}");
        assert!(
            output
                .stderr
                .contains("step 2 (update): unknown table nothings"),
            "{output:?}"
        );
        assert!(
            before == pg_dump(&url),
            "the database (sequences included) is unchanged"
        );
        assert_eq!(head, env.run(&["verify"]).stdout, "the ledger is unchanged");
    });
    admin
        .execute_script(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .unwrap();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn literal_booleans_insert_on_postgres_and_roll_back() {
    let Some((admin_url, mut admin)) = pg_admin() else {
        return;
    };
    let name = format!("rewind_cli_literals_{}", std::process::id());
    admin
        .execute_script(&format!("DROP DATABASE IF EXISTS \"{name}\""))
        .unwrap();
    admin
        .execute_script(&format!("CREATE DATABASE \"{name}\""))
        .unwrap();
    let url = with_database(&admin_url, &name);
    let result = std::panic::catch_unwind(|| {
        Database::connect(&url)
            .unwrap()
            .execute_script(
                "CREATE TABLE flags (id int PRIMARY KEY, enabled boolean NOT NULL, weight float8)",
            )
            .unwrap();
        let env = TestEnv::with_ledger();
        let spec = env.root().join("case.toml");
        std::fs::write(
            &spec,
            "[migration]\nid = \"flags\"\ndatabase = \"{db}\"\n[vars]\ndb = { required = true }\n\n\
             [[step]]\nkind = \"insert\"\ntable = \"flags\"\n\
             rows = [{ id = 1, enabled = true, weight = 0.5 }, { id = 2, enabled = false, weight = -1.25 }]\n\n\
             [[step]]\nkind = \"verify\"\nchecks = [{ query = \"SELECT count(*) FROM flags WHERE enabled\", equals = 1 }]\n",
        )
        .unwrap();
        let before = pg_dump(&url);
        let output = env.run(&[
            "apply",
            &spec.display().to_string(),
            "--target",
            &format!("db={url}"),
            "--yes",
        ]);
        assert_eq!(output.code, 0, "{output:?}");
        let rolled = env.run(&["rollback", "r1", "--yes"]);
        assert_eq!(rolled.code, 0, "{rolled:?}");
        assert!(before == pg_dump(&url));
    });
    admin
        .execute_script(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .unwrap();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
