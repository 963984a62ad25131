//! The filesystem migration commands end to end on the vhost runbook:
//! plan, apply, status, history, rollback (dry run, drift, dependents),
//! backups, and the spec errors, as snapshots with a pinned world.

use std::path::PathBuf;

use insta::assert_snapshot;
use rewind_tests::TestEnv;

pub const RUNBOOK: &str = include_str!("../migrations/examples/ns3-vhost.toml");

/// A ledger, the vhost at `[TEMP]/example.com` and the runbook at
/// `[TEMP]/ns3-vhost.toml`.
pub fn vhost_env() -> (TestEnv, PathBuf) {
    let env = TestEnv::with_ledger();
    let vhost = env.root().join("example.com");
    rewind_migrations::fixtures::build_vhost(&vhost).unwrap();
    std::fs::write(env.root().join("ns3-vhost.toml"), RUNBOOK).unwrap();
    (env, vhost)
}

pub fn spec_path(env: &TestEnv) -> String {
    env.root().join("ns3-vhost.toml").display().to_string()
}

pub fn target(vhost: &std::path::Path) -> String {
    format!("root={}", vhost.display())
}

/// Values that depend on the machine or on file times, not on rewind.
fn settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"got \d+ bytes", "got [N] bytes");
    settings.add_filter(
        r"\(\d+ files, \d+ bytes\) as [0-9a-f]{12}",
        "([N] files, [N] bytes) as [ARCHIVE]",
    );
    settings
}

#[test]
fn plan_apply_status_history_rollback() {
    let (env, vhost) = vhost_env();
    let spec = spec_path(&env);
    let target = target(&vhost);
    let before = rewind_migrations::tree::manifest(&vhost).unwrap();
    settings().bind(|| {
        assert_snapshot!("plan", env.snapshot(&["plan", &spec, "--target", &target]));
        assert_eq!(
            before,
            rewind_migrations::tree::manifest(&vhost).unwrap(),
            "plan changes nothing"
        );
        assert_snapshot!(
            "apply",
            env.snapshot(&["apply", &spec, "--target", &target, "--yes"])
        );
        assert_snapshot!("status", env.snapshot(&["status"]));
        assert_snapshot!("status_run", env.snapshot(&["status", "r1"]));
        assert_snapshot!(
            "history_run",
            env.snapshot(&["history", "--run", "r1", "--kind", "PathMoved"])
        );
        assert_snapshot!(
            "rollback_dry_run",
            env.snapshot(&["rollback", "r1", "--dry-run"])
        );
        assert_snapshot!(
            "rollback_step_with_dependents",
            env.snapshot(&["rollback", "r1:3"])
        );
        assert_snapshot!("rollback", env.snapshot(&["rollback", "r1", "--yes"]));
        assert_snapshot!("status_rolled_back", env.snapshot(&["status"]));
    });
    assert_eq!(
        before.diff(&rewind_migrations::tree::manifest(&vhost).unwrap()),
        vec![]
    );
}

#[test]
fn drift_report_stops_with_exit_3_and_skip_goes_on() {
    let (env, vhost) = vhost_env();
    let spec = spec_path(&env);
    let out = env.run(&["apply", &spec, "--target", &target(&vhost), "--yes"]);
    assert_eq!(out.code, 0, "{out:?}");
    // Someone edits a moved file and loosens a directory after the migration.
    std::fs::write(
        vhost.join("web/app/public/index.html"),
        "<h1>edited live</h1>\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/hosts", vhost.join("web/log/stray link")).unwrap();
    settings().bind(|| {
        assert_snapshot!(
            "drift_dry_run",
            env.snapshot(&["rollback", "r1", "--dry-run"])
        );
        assert_snapshot!("drift_report", env.snapshot(&["rollback", "r1", "--yes"]));
        assert_snapshot!(
            "drift_skip",
            env.snapshot(&["rollback", "r1", "--yes", "--on-drift", "skip"])
        );
    });
    assert_eq!(
        std::fs::read_to_string(vhost.join("web/app/public/index.html")).unwrap(),
        "<h1>edited live</h1>\n",
        "a drifted path is never touched"
    );
}

#[test]
fn backups_list_verify_restore() {
    let (env, vhost) = vhost_env();
    let spec = spec_path(&env);
    let out = env.run(&["apply", &spec, "--target", &target(&vhost), "--yes"]);
    assert_eq!(out.code, 0, "{out:?}");
    let listed = env.run(&["backups", "list", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    let seq = listed[0]["seq"].as_u64().unwrap().to_string();
    let verified = env.run(&["backups", "verify"]);
    assert_eq!(verified.code, 0, "{verified:?}");
    assert!(
        verified
            .stdout
            .contains("ok (25 entries match the manifest)"),
        "{}",
        verified.stdout
    );
    let restored = env.root().join("restored");
    let out = env.run(&[
        "backups",
        "restore",
        &seq,
        "--into",
        &restored.display().to_string(),
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    // The archive was taken before anything moved: it holds the 1.0 layout.
    assert!(restored.join("var/log/access.log").is_file());
    assert!(restored.join("web/index.html").is_file());
    assert!(!restored.join(".archive").exists(), ".archive is excluded");
}

#[test]
fn several_targets_run_concurrently_and_one_failure_does_not_stop_the_others() {
    let env = TestEnv::with_ledger();
    let mut targets = Vec::new();
    for name in ["a.example", "b.example", "c.example"] {
        let vhost = env.root().join(name);
        rewind_migrations::fixtures::build_vhost(&vhost).unwrap();
        targets.push(format!("root={}", vhost.display()));
    }
    std::fs::write(env.root().join("ns3-vhost.toml"), RUNBOOK).unwrap();
    // b's reload command fails.
    let file = env.root().join("targets.txt");
    std::fs::write(
        &file,
        format!(
            "# three vhosts\n{}\n{} reload=false\n{}\n",
            targets[0], targets[1], targets[2]
        ),
    )
    .unwrap();
    let out = env.run(&[
        "apply",
        &spec_path(&env),
        "--targets-file",
        &file.display().to_string(),
        "--jobs",
        "3",
        "--yes",
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", out.stdout);
    assert_eq!(out.stdout.matches("succeeded").count(), 2, "{}", out.stdout);
    assert!(out.stdout.contains("reload=false"), "{}", out.stdout);
    assert!(
        out.stdout.contains("`sh -c false` exited with 1"),
        "{}",
        out.stdout
    );
    let status = env.run(&["status", "--json"]);
    let runs: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 3);
}

fn spec_error(name: &str, text: &str) -> String {
    let bare = name == "no_roots";
    let env = TestEnv::with_ledger();
    let vhost = env.root().join("example.com");
    rewind_migrations::fixtures::build_vhost(&vhost).unwrap();
    std::os::unix::fs::symlink("/etc", vhost.join("etc-link")).unwrap();
    let path = env.root().join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    let before = rewind_migrations::tree::manifest(&vhost).unwrap();
    let target = if bare {
        vhost.display().to_string()
    } else {
        target(&vhost)
    };
    let out = env.snapshot(&["plan", &path.display().to_string(), "--target", &target]);
    let apply = env.run(&[
        "apply",
        &path.display().to_string(),
        "--target",
        &target,
        "--yes",
    ]);
    assert_eq!(apply.code, 2, "{apply:?}");
    assert_eq!(before, rewind_migrations::tree::manifest(&vhost).unwrap());
    out
}

const HEAD: &str = "[migration]\nid = \"t\"\n[vars]\nroot = { required = true }\n";

#[test]
fn spec_errors_name_file_line_column_and_step() {
    let cases = [
        ("bad_toml", format!("{HEAD}[[step]]\nkind = \"move\"\nfrom = \"{{root}}/a\nto = \"b\"\n")),
        ("unknown_kind", format!("{HEAD}[[step]]\nkind = \"mkdir\"\npath = \"{{root}}/x\"\n\n[[step]]\nkind = \"teleport\"\npath = \"{{root}}\"\n")),
        ("unknown_key", format!("{HEAD}[[step]]\nkind = \"chmod\"\npath = \"{{root}}/web\"\nmode = \"0755\"\nrecursve = true\n")),
        ("unknown_var", format!("{HEAD}[[step]]\nkind = \"mkdir\"\npath = \"{{rooot}}/x\"\n")),
        ("missing_var", "[migration]\nid = \"t\"\n[vars]\nroot = { required = true }\nowner = { required = true, help = \"the vhost's uid\" }\n[[step]]\nkind = \"chown\"\npath = \"{root}/web\"\nuser = \"{owner}\"\n".to_string()),
        ("escape_dotdot", format!("{HEAD}[[step]]\nkind = \"remove\"\npath = \"{{root}}/web/../../../etc/passwd\"\n")),
        ("escape_symlink", format!("{HEAD}[[step]]\nkind = \"write\"\npath = \"{{root}}/etc-link/motd\"\ncontent = \"hi\"\n")),
        ("bad_mode", format!("{HEAD}[[step]]\nkind = \"chmod\"\npath = \"{{root}}/web\"\nmode = \"0958\"\n")),
        ("relative_path", format!("{HEAD}[[step]]\nkind = \"mkdir\"\npath = \"web/new\"\n")),
        ("no_roots", "[migration]\nid = \"t\"\n[vars]\nvhost = { required = true }\n[[step]]\nkind = \"mkdir\"\npath = \"{vhost}/x\"\n".to_string()),
    ];
    for (name, text) in cases {
        assert_snapshot!(format!("spec_error_{name}"), spec_error(name, &text));
    }
}

#[test]
fn demo_tours_the_runbook_and_ends_identical() {
    let env = TestEnv::new();
    let out = env.run(&["demo"]);
    assert_eq!(out.code, 0, "{out:?}");
    for section in [
        "== 1.", "== 2.", "== 3.", "== 4.", "== 5.", "== 6.", "== 7.",
    ] {
        assert!(
            out.stdout.contains(section),
            "{section} missing:\n{}",
            out.stdout
        );
    }
    assert!(
        out.stdout.contains("identical: 26 entries"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("rolled back run r1: 23 inverse(s) applied, 0 drifted, outcome succeeded"),
        "{}",
        out.stdout
    );
}
