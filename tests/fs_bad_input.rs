//! The bad-input table of `docs/bad-input.md`: each case's message as a
//! snapshot, and a check that nothing changed — the target tree, and the
//! ledger where the case is refused before a run starts.

use insta::assert_snapshot;
use rewind_ledger::{Ledger, Origin};
use rewind_tests::TestEnv;

use crate::fs_cli::{spec_path, target, vhost_env};

const HEAD: &str = "[migration]\nid = \"t\"\n[vars]\nroot = { required = true }\n";

/// The ledger's head seq, read from its journal (one line per event).
fn head(env: &TestEnv) -> usize {
    std::fs::read_to_string(env.ledger.join("journal.jsonl"))
        .unwrap()
        .lines()
        .count()
}

/// Runs `args` against a fresh vhost and checks the tree did not change
/// (and the ledger, unless `records_a_run`); returns the snapshot text.
fn case(spec: &str, args: &[&str], records_a_run: bool) -> String {
    let (env, vhost) = vhost_env();
    std::fs::write(env.root().join("case.toml"), spec).unwrap();
    let case_spec = env.root().join("case.toml").display().to_string();
    let target = target(&vhost);
    let args: Vec<String> = args
        .iter()
        .map(|a| a.replace("SPEC", &case_spec).replace("TARGET", &target))
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let before = rewind_migrations::tree::manifest(&vhost).unwrap();
    let head_before = head(&env);
    let out = env.snapshot(&args);
    assert_eq!(
        before.diff(&rewind_migrations::tree::manifest(&vhost).unwrap()),
        vec![],
        "the tree changed"
    );
    if !records_a_run {
        assert_eq!(head(&env), head_before, "the ledger changed");
    }
    out
}

#[test]
fn bad_toml() {
    let spec = format!(
        "{HEAD}[[step]]\nkind = \"move\"\nfrom = \"{{root}}/var/log\nto = \"{{root}}/web/log\"\n"
    );
    assert_snapshot!(case(
        &spec,
        &["apply", "SPEC", "--target", "TARGET", "--yes"],
        false
    ));
}

#[test]
fn unknown_step_kind() {
    let spec = format!("{HEAD}[[step]]\nkind = \"rsync\"\nfrom = \"{{root}}/web\"\n");
    assert_snapshot!(case(
        &spec,
        &["apply", "SPEC", "--target", "TARGET", "--yes"],
        false
    ));
}

#[test]
fn missing_variable() {
    let spec = format!("{HEAD}[[step]]\nkind = \"mkdir\"\npath = \"{{root}}/web/app\"\n");
    assert_snapshot!(case(&spec, &["apply", "SPEC", "--yes"], false));
}

#[test]
fn path_escaping_root_via_dotdot() {
    let spec = format!(
        "{HEAD}[[step]]\nkind = \"chmod\"\npath = \"{{root}}/../../etc/shadow\"\nmode = \"0644\"\n"
    );
    assert_snapshot!(case(
        &spec,
        &["apply", "SPEC", "--target", "TARGET", "--yes"],
        false
    ));
}

#[test]
fn path_escaping_root_via_symlink() {
    // web/home.html is a symlink inside the vhost; make one that leaves it.
    let (env, vhost) = vhost_env();
    std::os::unix::fs::symlink("/etc", vhost.join("etc-link")).unwrap();
    let spec = format!("{HEAD}[[step]]\nkind = \"remove\"\npath = \"{{root}}/etc-link/passwd\"\n");
    std::fs::write(env.root().join("case.toml"), spec).unwrap();
    let before = rewind_migrations::tree::manifest(&vhost).unwrap();
    let out = env.snapshot(&[
        "apply",
        &env.root().join("case.toml").display().to_string(),
        "--target",
        &target(&vhost),
        "--yes",
    ]);
    assert_eq!(before, rewind_migrations::tree::manifest(&vhost).unwrap());
    assert!(std::path::Path::new("/etc/passwd").exists());
    assert_snapshot!(out);
}

#[test]
fn move_onto_an_existing_target() {
    let spec = format!(
        "{HEAD}[[step]]\nkind = \"mkdir\"\npath = \"{{root}}/web/log\"\n[[step]]\nkind = \"move\"\nfrom = \"{{root}}/var/log\"\nto = \"{{root}}/web/log\"\n"
    );
    assert_snapshot!(case(
        &spec,
        &["apply", "SPEC", "--target", "TARGET", "--yes"],
        false
    ));
}

#[test]
fn chmod_of_a_missing_path() {
    let spec = format!(
        "{HEAD}[[step]]\nkind = \"move\"\nfrom = \"{{root}}/var/log\"\nto = \"{{root}}/web/log\"\n[[step]]\nkind = \"chmod\"\npath = \"{{root}}/var/log\"\nmode = \"0750\"\n"
    );
    assert_snapshot!(case(
        &spec,
        &["apply", "SPEC", "--target", "TARGET", "--yes"],
        false
    ));
}

#[test]
fn a_second_apply_while_one_runs() {
    let (env, vhost) = vhost_env();
    let holder = Ledger::open(
        &env.ledger,
        Origin {
            actor: "other".into(),
            host: "testhost".into(),
        },
    )
    .unwrap();
    let before = rewind_migrations::tree::manifest(&vhost).unwrap();
    let out = env.snapshot(&[
        "apply",
        &spec_path(&env),
        "--target",
        &target(&vhost),
        "--yes",
    ]);
    drop(holder);
    assert_eq!(before, rewind_migrations::tree::manifest(&vhost).unwrap());
    assert_eq!(head(&env), 0);
    assert_snapshot!(out);
}

#[test]
fn rollback_of_an_unknown_run() {
    assert_snapshot!(case("", &["rollback", "r404", "--yes"], false));
}

#[test]
fn rollback_of_a_run_already_rolled_back() {
    let (env, vhost) = vhost_env();
    let spec = spec_path(&env);
    assert_eq!(
        env.run(&["apply", &spec, "--target", &target(&vhost), "--yes"])
            .code,
        0
    );
    assert_eq!(env.run(&["rollback", "r1", "--yes"]).code, 0);
    let before = rewind_migrations::tree::manifest(&vhost).unwrap();
    let head_before = head(&env);
    let out = env.snapshot(&["rollback", "r1", "--yes"]);
    assert_eq!(before, rewind_migrations::tree::manifest(&vhost).unwrap());
    assert_eq!(head(&env), head_before);
    assert_snapshot!(out);
}

#[test]
fn exec_timeout() {
    let spec = format!(
        "{HEAD}[[step]]\nkind = \"exec\"\nargv = [\"sleep\", \"30\"]\ntimeout = 1\n[[step]]\nkind = \"remove\"\npath = \"{{root}}/web\"\n"
    );
    assert_snapshot!(case(
        &spec,
        &["apply", "SPEC", "--target", "TARGET", "--yes"],
        true
    ));
}

#[test]
fn a_changed_spec_under_the_same_id() {
    let (env, vhost) = vhost_env();
    let spec = spec_path(&env);
    assert_eq!(
        env.run(&["apply", &spec, "--target", &target(&vhost), "--yes"])
            .code,
        0
    );
    assert_eq!(env.run(&["rollback", "r1", "--yes"]).code, 0);
    std::fs::write(&spec, format!("{}\n# edited\n", crate::fs_cli::RUNBOOK)).unwrap();
    let before = rewind_migrations::tree::manifest(&vhost).unwrap();
    let head_before = head(&env);
    let out = env.snapshot(&["apply", &spec, "--target", &target(&vhost), "--yes"]);
    assert_eq!(before, rewind_migrations::tree::manifest(&vhost).unwrap());
    assert_eq!(head(&env), head_before);
    assert_snapshot!(out);
}

#[test]
fn unknown_key_in_a_step() {
    let spec = format!(
        "{HEAD}[[step]]\nkind = \"move\"\nfrom = \"{{root}}/var/log\"\ndest = \"{{root}}/web/log\"\n"
    );
    assert_snapshot!(case(
        &spec,
        &["apply", "SPEC", "--target", "TARGET", "--yes"],
        false
    ));
}

/// A field unknown to, or missing from, a later step is reported at that
/// step, with its number and kind, not at the first step's.
#[test]
fn unknown_or_missing_key_in_a_later_step() {
    let spec = format!(
        "{HEAD}[[step]]\nkind = \"mkdir\"\npath = \"{{root}}/web\"\n\n\
         [[step]]\nkind = \"chmod\"\npath = \"{{root}}/web\"\nmod = \"0755\"\n\n\
         [[step]]\nkind = \"move\"\nfrom = \"{{root}}/var/log\"\n"
    );
    assert_snapshot!(case(
        &spec,
        &["apply", "SPEC", "--target", "TARGET", "--yes"],
        false
    ));
    let spec = format!(
        "{HEAD}[[step]]\nkind = \"mkdir\"\npath = \"{{root}}/web\"\n\n\
         [[step]]\nkind = \"move\"\nfrom = \"{{root}}/var/log\"\n"
    );
    assert_snapshot!(case(
        &spec,
        &["apply", "SPEC", "--target", "TARGET", "--yes"],
        false
    ));
    // An error outside the steps names no step: a table after them, or the
    // header, a bad step after it or not.
    let outside = |spec: &str, said: &str| {
        let out = case(
            spec,
            &["apply", "SPEC", "--target", "TARGET", "--yes"],
            false,
        );
        assert!(out.contains(said) && !out.contains("step 1"), "{out}");
    };
    outside(
        "[migration]\nid = \"t\"\n\n[[step]]\nkind = \"mkdir\"\npath = \"{root}/web\"\n\n\
         [vars]\nroot = { required = true, idx = 1 }\n",
        "case.toml:9:27: unknown field `idx`",
    );
    outside(
        "[migration]\nidd = \"t\"\n\n[[step]]\nkind = \"chmod\"\npath = \"/x\"\nmod = \"1\"\n",
        "case.toml:2:1: unknown field `idd`",
    );
}
