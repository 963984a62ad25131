//! `rewind rehearse`: the vhost runbook and the teams runbook rehearsed on
//! scratch copies (SQLite, and PostgreSQL when a server answers), a
//! rollback that leaves something behind reported, and a spec whose root
//! cannot be pointed at a copy refused before anything is copied. In every
//! case the real targets and the operator's ledger stay as they were, and
//! the scratch area is gone afterwards.

use insta::assert_snapshot;
use rewind_migrations::db::Database;
use rewind_migrations::fixtures::build_vhost;
use rewind_migrations::tree::manifest;
use rewind_tests::TestEnv;

use crate::db_examples_cli::{on_fresh_panel, pg_admin, teams_fixture};

const RUNBOOK: &str = include_str!("../migrations/examples/ns3-vhost.toml");
const TEAMS: &str = include_str!("../migrations/examples/teams-to-organizations.toml");

/// Random scratch names, made stable for snapshots.
fn stable(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("rewind-rehearse-") {
        let start = at + "rewind-rehearse-".len();
        out.push_str(&rest[..start]);
        out.push_str("[ID]");
        let end = rest[start..]
            .find(|c: char| !c.is_ascii_alphanumeric())
            .map_or(rest.len(), |i| start + i);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// A world with a ledger, a vhost, a spec file and an empty scratch parent.
fn world(spec: &str) -> (TestEnv, std::path::PathBuf, String, String) {
    let env = TestEnv::with_ledger();
    let vhost = env.root().join("example.com");
    build_vhost(&vhost).unwrap();
    let spec_path = env.root().join("spec.toml");
    std::fs::write(&spec_path, spec).unwrap();
    let scratch = env.root().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    (
        env,
        vhost,
        spec_path.display().to_string(),
        scratch.display().to_string(),
    )
}

fn assert_untouched(env: &TestEnv, scratch: &str, head_before: &str) {
    assert_eq!(
        std::fs::read_dir(scratch).unwrap().count(),
        0,
        "the scratch area is removed"
    );
    assert_eq!(
        env.run(&["verify"]).stdout,
        head_before,
        "the operator's ledger is unchanged"
    );
}

#[test]
fn the_vhost_runbook_rehearses_exactly_and_leaves_the_vhost_alone() {
    let (env, vhost, spec, scratch) = world(RUNBOOK);
    let before = manifest(&vhost).unwrap();
    let head = env.run(&["verify"]).stdout;
    let target = format!("root={}", vhost.display());
    let output = env.run(&[
        "rehearse",
        &spec,
        "--target",
        &target,
        "--scratch",
        &scratch,
    ]);
    assert_eq!(output.code, 0, "{output:?}");
    assert_snapshot!(stable(&format!(
        "exit: {}\n----- stdout -----\n{}----- stderr -----\n{}",
        output.code, output.stdout, output.stderr
    )));
    assert_eq!(manifest(&vhost).unwrap(), before, "the vhost is untouched");
    assert_untouched(&env, &scratch, &head);
}

#[test]
fn what_a_rollback_leaves_behind_is_reported() {
    // A command with no undo: its file stays after the rollback.
    let spec = r#"
[migration]
id = "leaves-a-file"

[vars]
root = { required = true, root = true }

[[step]]
kind = "chmod"
path = "{root}/web"
mode = "0711"

[[step]]
kind = "exec"
argv = ["touch", "{root}/web/stray"]
"#;
    let (env, vhost, spec, scratch) = world(spec);
    let before = manifest(&vhost).unwrap();
    let head = env.run(&["verify"]).stdout;
    let target = format!("root={}", vhost.display());
    // Without --run-commands the command is left out, and all is exact.
    let skipped = env.run(&[
        "rehearse",
        &spec,
        "--target",
        &target,
        "--scratch",
        &scratch,
    ]);
    assert_eq!(skipped.code, 0, "{skipped:?}");
    assert!(
        skipped.stdout.contains("skipped step 2 (exec)"),
        "{skipped:?}"
    );
    let output = env.run(&[
        "rehearse",
        &spec,
        "--target",
        &target,
        "--scratch",
        &scratch,
        "--run-commands",
    ]);
    assert_eq!(output.code, 1, "{output:?}");
    assert!(
        output.stdout.contains("left by the rollback")
            && output.stdout.contains("example.com/web/stray")
            && output.stdout.contains("file that was not there"),
        "{output:?}"
    );
    assert!(
        output.stderr.contains("did not come back to the original"),
        "{output:?}"
    );
    assert_eq!(manifest(&vhost).unwrap(), before, "the vhost is untouched");
    assert!(!vhost.join("web/stray").exists());
    assert_untouched(&env, &scratch, &head);
}

#[test]
fn a_root_written_in_the_spec_is_refused_before_anything_is_copied() {
    let env = TestEnv::with_ledger();
    let vhost = env.root().join("example.com");
    build_vhost(&vhost).unwrap();
    let spec = format!(
        r#"
[migration]
id = "literal-root"
roots = ["{}"]

[[step]]
kind = "chmod"
path = "{}/web"
mode = "0750"
"#,
        vhost.display(),
        vhost.display()
    );
    let spec_path = env.root().join("spec.toml");
    std::fs::write(&spec_path, spec).unwrap();
    let scratch = env.root().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let output = env.run(&[
        "rehearse",
        &spec_path.display().to_string(),
        "--scratch",
        &scratch.display().to_string(),
    ]);
    assert_eq!(output.code, 2, "{output:?}");
    assert_snapshot!(stable(&output.stderr));
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
}

#[test]
fn the_teams_runbook_rehearses_exactly_on_sqlite() {
    let (env, _, spec, scratch) = world(TEAMS);
    let path = env.root().join("panel.db");
    std::fs::write(&path, b"").unwrap();
    let url = format!("sqlite://{}", path.display());
    Database::connect(&url)
        .unwrap()
        .execute_script(&teams_fixture::script(false, 30, 7))
        .unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let head = env.run(&["verify"]).stdout;
    let output = env.run(&[
        "rehearse",
        &spec,
        "--target",
        &format!("db={url}"),
        "--scratch",
        &scratch,
    ]);
    assert_eq!(output.code, 0, "{output:?}");
    assert!(
        output.stdout.contains("identical to the original")
            && output.stdout.contains("identical to the first apply"),
        "{output:?}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "the database file is untouched"
    );
    assert_untouched(&env, &scratch, &head);
}

#[test]
fn the_teams_runbook_rehearses_exactly_on_postgres_and_drops_its_copy() {
    // A short name, so that the scratch copy's name keeps all of it.
    on_fresh_panel("rwt", |url| {
        let (env, _, spec, scratch) = world(TEAMS);
        let organizations = || {
            Database::connect(url)
                .unwrap()
                .query("SELECT count(*) FROM organizations", &[])
                .map(|rows| rows.len())
        };
        assert!(organizations().is_err(), "no organizations table before");
        let head = env.run(&["verify"]).stdout;
        let output = env.run(&[
            "rehearse",
            &spec,
            "--target",
            &format!("db={url}"),
            "--scratch",
            &scratch,
        ]);
        assert_eq!(output.code, 0, "{output:?}");
        assert!(
            output.stdout.contains("identical to the original"),
            "{output:?}"
        );
        assert!(
            organizations().is_err(),
            "the original database is untouched"
        );
        assert_untouched(&env, &scratch, &head);
        let name = url.rsplit_once('/').map(|(_, name)| name).unwrap();
        let (_, mut admin) = pg_admin().unwrap();
        let left = admin
            .query(
                &format!(
                    "SELECT datname FROM pg_database WHERE datname LIKE 'rewind\\_rehearse\\_%{name}'"
                ),
                &[],
            )
            .unwrap();
        assert!(left.is_empty(), "the scratch copy is dropped: {left:?}");
    });
}

#[test]
fn an_absolute_link_into_the_root_is_pointed_at_the_copy() {
    // A deploy's `current` link, written with the root's absolute path.
    let spec = r#"
[migration]
id = "through-a-link"

[vars]
root = { required = true, root = true }

[[step]]
kind = "chmod"
path = "{root}/current/config"
mode = "0600"
"#;
    let (env, vhost, spec, scratch) = world(spec);
    let release = vhost.join("releases/3");
    std::fs::create_dir_all(&release).unwrap();
    std::fs::write(release.join("config"), "x = 1\n").unwrap();
    std::fs::set_permissions(
        release.join("config"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    std::os::unix::fs::symlink(&release, vhost.join("current")).unwrap();
    let before = manifest(&vhost).unwrap();
    let head = env.run(&["verify"]).stdout;
    let target = format!("root={}", vhost.display());
    let output = env.run(&[
        "rehearse",
        &spec,
        "--target",
        &target,
        "--scratch",
        &scratch,
    ]);
    assert_eq!(output.code, 0, "{output:?}");
    assert!(
        output
            .stdout
            .contains("(1 absolute link(s) into it pointed at the copy)")
            && output.stdout.contains("identical to the original"),
        "{output:?}"
    );
    assert_eq!(
        manifest(&vhost).unwrap(),
        before,
        "the file behind the link is untouched"
    );
    assert_untouched(&env, &scratch, &head);
}

#[test]
fn places_that_would_lead_a_rehearsal_back_to_the_original_are_refused() {
    let (env, vhost, spec, scratch) = world(RUNBOOK);
    let before = manifest(&vhost).unwrap();
    let target = format!("root={}", vhost.display());
    // A scratch directory inside the root would be copied into itself.
    let inside = vhost.join("scratch");
    std::fs::create_dir(&inside).unwrap();
    let output = env.run(&[
        "rehearse",
        &spec,
        "--target",
        &target,
        "--scratch",
        &inside.display().to_string(),
    ]);
    assert_eq!(output.code, 2, "{output:?}");
    assert!(output.stderr.contains("lies inside root"), "{output:?}");
    std::fs::remove_dir(&inside).unwrap();
    assert_eq!(manifest(&vhost).unwrap(), before);
    // A url whose parameters name the database would reach the original
    // whatever its path says.
    let teams = env.root().join("teams.toml");
    std::fs::write(&teams, TEAMS).unwrap();
    let output = env.run(&[
        "rehearse",
        &teams.display().to_string(),
        "--target",
        "db=postgres://app@127.0.0.1:1/copy?dbname=panel",
        "--scratch",
        &scratch,
    ]);
    assert_eq!(output.code, 2, "{output:?}");
    assert_snapshot!(stable(&output.stderr));
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
}
