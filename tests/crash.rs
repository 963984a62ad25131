//! Crash tests: a child process appends batches and is killed at random
//! points; every batch it acknowledged must survive, and the ledger must
//! verify after the next open. A child `rewind apply` killed at points
//! spread over its file steps must leave a world that `rollback` puts back
//! exactly (paths, types, modes, owners, contents, no staging leftovers),
//! after `rewind recover` has recorded it interrupted (and a second
//! recovery appends nothing); a database step killed between its durable
//! images and its commit is recovered as never committed, and the rollback
//! leaves both databases byte-identical; a rollback killed right after an
//! undo command ran must not run it again.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rewind_ledger::{Ledger, Origin};
use rewind_migrations::db::Database;
use rewind_migrations::tree::manifest;
use rewind_tests::{PINNED, TestEnv};

const CHILD: &str = env!("CARGO_BIN_EXE_rewind-child");

fn origin() -> Origin {
    Origin {
        actor: "tester@testhost".into(),
        host: "testhost".into(),
    }
}

#[test]
fn killed_appenders_lose_nothing_they_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger");
    drop(Ledger::init(&path, "crash-ledger", origin()).unwrap());
    // A fixed pseudo-random sequence of kill points, different lengths of life.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut acknowledged = 0u64;
    for round in 0..12 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let lines_before_kill = 1 + seed % 40;
        let mut child = Command::new(env!("CARGO_BIN_EXE_append-forever"))
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut line = String::new();
        for _ in 0..lines_before_kill {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 || Instant::now() > deadline {
                break;
            }
            acknowledged = acknowledged.max(line.trim().parse().unwrap());
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let ledger = Ledger::open(&path, origin()).unwrap();
        let (head, _) = ledger.head();
        assert!(
            head >= acknowledged,
            "round {round}: head {head} lost acknowledged seq {acknowledged}"
        );
        let report = ledger.verify_chain().unwrap();
        assert_eq!(report.problem, None, "round {round}: {report:?}");
        assert_eq!(report.verified, head);
    }
    assert!(
        acknowledged > 12,
        "the child appended too little to test anything: {acknowledged}"
    );
}

/// Every file step kind, with more effects than one batch holds (`chown`
/// only as root).
fn steps_spec(as_root: bool) -> String {
    let chown = if as_root {
        "[[step]]\nkind = \"chown\"\npath = \"{root}/tree\"\nuser = \"4321\"\ngroup = \"4321\"\nrecursive = true\n"
    } else {
        ""
    };
    format!(
        r#"[migration]
id = "crash-steps"
[vars]
root = {{ required = true }}
[[step]]
kind = "backup"
path = "{{root}}/tree"
into = "{{root}}/.archive/copies"
[[step]]
kind = "chmod"
path = "{{root}}/tree"
recursive = true
dirs = "0700"
files = "0600"
{chown}[[step]]
kind = "write"
path = "{{root}}/config.txt"
source = "{{root}}/../config.new"
[[step]]
kind = "remove"
path = "{{root}}/old"
[[step]]
kind = "move"
from = "{{root}}/tree/*"
to = "{{root}}/moved/"
[[step]]
kind = "mkdir"
path = "{{root}}/made/a/b"
"#
    )
}

/// 1,200 files in 12 directories (two chmod batches), a configuration file
/// of 2 MiB and its new content of 4 MiB beside the tree, and a directory
/// to remove.
fn build_tree(root: &Path) {
    let set = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    for d in 0..12 {
        let dir = root.join(format!("tree/d{d:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        set(&dir, 0o755);
        for f in 0..100 {
            let file = dir.join(format!("f{f:03}.txt"));
            std::fs::write(&file, format!("file {d} {f}\n")).unwrap();
            set(&file, if f % 7 == 0 { 0o640 } else { 0o644 });
        }
    }
    set(&root.join("tree"), 0o755);
    std::fs::write(root.join("config.txt"), "old ".repeat(1 << 19)).unwrap();
    std::fs::write(root.with_file_name("config.new"), "new ".repeat(1 << 20)).unwrap();
    set(&root.join("config.txt"), 0o640);
    std::fs::create_dir_all(root.join("old/sub")).unwrap();
    for f in 0..50 {
        std::fs::write(root.join(format!("old/sub/o{f}")), format!("old {f}")).unwrap();
    }
    set(root, 0o755);
}

fn journal_len(ledger: &Path) -> u64 {
    std::fs::metadata(ledger.join("journal.jsonl"))
        .map(|m| m.len())
        .unwrap_or(0)
}

/// Runs the child `rewind ARGS…`; kills it as soon as `kill_now` says so.
/// Returns whether it was killed.
fn child_until(env: &TestEnv, args: &[&str], kill_now: &dyn Fn() -> bool) -> bool {
    let mut child = Command::new(CHILD)
        .envs(PINNED)
        .arg("--ledger")
        .arg(&env.ledger)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if kill_now() {
            child.kill().unwrap();
            child.wait().unwrap();
            return true;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn is_root() -> bool {
    std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0
}

/// When the crash test kills `rewind apply`.
#[derive(Debug, Clone, Copy)]
enum Kill {
    Never,
    AtJournalByte(u64),
    /// When the size of this path under the root changes (or it appears).
    WhenChanges(&'static str),
}

/// Where in the journal each step begins (the end of its `StepStarted`
/// line), and where the journal ends.
fn step_offsets(ledger: &Path) -> (Vec<u64>, u64) {
    let text = std::fs::read_to_string(ledger.join("journal.jsonl")).unwrap();
    let mut offsets = Vec::new();
    let mut end = 0u64;
    for line in text.split_inclusive('\n') {
        end += line.len() as u64;
        if line.contains("\"StepStarted\":") {
            offsets.push(end);
        }
    }
    (offsets, end)
}

#[test]
fn apply_killed_during_file_steps_rolls_back_to_the_exact_original_tree() {
    let spec = steps_spec(is_root());
    let run_apply = |env: &TestEnv, kill: Kill| -> bool {
        let root = env.root().join("srv");
        std::fs::write(env.root().join("spec.toml"), &spec).unwrap();
        let target = format!("root={}", root.display());
        let spec_path = env.root().join("spec.toml");
        let args = [
            "apply",
            spec_path.to_str().unwrap(),
            "--target",
            &target,
            "--yes",
        ];
        let size = |relative: &str| std::fs::metadata(root.join(relative)).map(|m| m.len()).ok();
        let watched = match kill {
            Kill::WhenChanges(relative) => size(relative),
            Kill::Never | Kill::AtJournalByte(_) => None,
        };
        child_until(env, &args, &|| match kill {
            Kill::Never => false,
            Kill::AtJournalByte(at) => journal_len(&env.ledger) >= at,
            Kill::WhenChanges(relative) => size(relative) != watched,
        })
    };
    // Where each step's events lie in the journal of a whole run, to kill
    // inside every step: just after its intent, and somewhere later.
    let calibration = TestEnv::with_ledger();
    build_tree(&calibration.root().join("srv"));
    assert!(!run_apply(&calibration, Kill::Never));
    let (steps, end) = step_offsets(&calibration.ledger);
    assert_eq!(steps.len(), if is_root() { 7 } else { 6 });
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut kill_points = Vec::new();
    for (index, &begins) in steps.iter().enumerate() {
        let ends = steps.get(index + 1).copied().unwrap_or(end);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        kill_points.push(Kill::AtJournalByte(begins + 1));
        kill_points.push(Kill::AtJournalByte(
            begins + 1 + seed % (ends - begins).max(1),
        ));
    }
    // The first touch of the tree by an effect whose event the journal
    // cannot have shown yet: a file truncated in place, a directory made
    // for a copy that is still being written.
    kill_points.push(Kill::WhenChanges("config.txt"));
    kill_points.push(Kill::WhenChanges(".archive/copies"));
    let mut killed = 0;
    let mut recovered = 0;
    let mut never_happened = 0;
    for (round, kill) in kill_points.iter().copied().enumerate() {
        let env = TestEnv::with_ledger();
        let root = env.root().join("srv");
        build_tree(&root);
        let before = manifest(&root).unwrap();
        killed += usize::from(run_apply(&env, kill));
        let unfinished = !journal_text(&env.ledger).contains("\"RunFinished\":");
        recovered += usize::from(unfinished);
        let context = format!("round {round}, killed {kill:?}");
        // No process holds the ledger: an unfinished run is dead.
        let expected = if unfinished {
            "interrupted (run `rewind recover`)"
        } else {
            "migrated"
        };
        assert_eq!(run_state(&env, "r1"), expected, "{context}");
        let recover = env.run(&["recover", "--json"]);
        assert_eq!(recover.code, 0, "{context}: {recover:?}");
        let report: serde_json::Value = serde_json::from_str(&recover.stdout).unwrap();
        assert_eq!(
            report["runs"].as_array().unwrap().len(),
            usize::from(unfinished),
            "{context}: {report}"
        );
        never_happened += report["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|run| run["never_happened"].as_array().unwrap().len())
            .sum::<usize>();
        let expected = if unfinished {
            "interrupted"
        } else {
            "migrated"
        };
        assert_eq!(run_state(&env, "r1"), expected, "{context}");
        // A second recovery finds nothing and appends nothing.
        let length = journal_len(&env.ledger);
        let again = env.run(&["recover"]);
        assert_eq!(again.code, 0, "{context}: {again:?}");
        assert!(
            again.stderr.contains("nothing to recover"),
            "{context}: {again:?}"
        );
        assert_eq!(journal_len(&env.ledger), length, "{context}");
        // Effects recorded and never carried out are no drift.
        let dry = env.run(&["rollback", "r1", "--dry-run"]);
        assert!(
            dry.code == 0 || dry.stderr.contains("recorded no effect"),
            "round {round}, killed {kill:?}: {dry:?}"
        );
        let rolled = env.run(&["rollback", "r1", "--yes"]);
        let context = format!(
            "round {round}, killed {kill:?} (the journal ends at {end}): exit {}, {}{}",
            rolled.code,
            rolled.stdout,
            rolled.stderr.lines().take(3).collect::<Vec<_>>().join("\n")
        );
        assert!(
            rolled.code == 0 || rolled.stderr.contains("recorded no effect"),
            "{context}"
        );
        assert_eq!(before.diff(&manifest(&root).unwrap()), vec![], "{context}");
    }
    assert!(
        killed * 2 >= kill_points.len(),
        "only {killed} of {} runs were killed",
        kill_points.len()
    );
    assert!(
        recovered * 2 >= kill_points.len(),
        "only {recovered} of {} runs were left unfinished",
        kill_points.len()
    );
    assert!(
        never_happened > 0,
        "no kill fell between an effect's durable event and the effect"
    );
}

fn journal_text(ledger: &Path) -> String {
    std::fs::read_to_string(ledger.join("journal.jsonl")).unwrap_or_default()
}

/// The state `rewind status --json` gives the run.
fn run_state(env: &TestEnv, run: &str) -> String {
    let status = env.run(&["status", "--json"]);
    assert_eq!(status.code, 0, "{status:?}");
    let runs: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    runs.as_array()
        .unwrap()
        .iter()
        .find(|status| status["run"] == run)
        .map(|status| status["state"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// A SQLite database of one table `t` with ten rows, at `path`.
fn small_database(path: &Path) -> String {
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let mut database = Database::connect(&url).unwrap();
    let mut script =
        "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER NOT NULL, label TEXT);".to_owned();
    for id in 1..=10 {
        script.push_str(&format!(
            "INSERT INTO t VALUES ({id}, {}, 'row {id}');",
            id * 10
        ));
    }
    database.execute_script(&script).unwrap();
    format!("sqlite://{}", path.display())
}

fn dump(url: &str) -> String {
    Database::connect(url).unwrap().dump_sqlite().unwrap()
}

#[test]
fn a_database_step_killed_before_its_commit_is_recovered_as_never_committed() {
    let env = TestEnv::with_ledger();
    let one = small_database(&env.root().join("one.db"));
    let two = small_database(&env.root().join("two.db"));
    let (one_before, two_before) = (dump(&one), dump(&two));
    let spec = env.root().join("spec.toml");
    std::fs::write(
        &spec,
        r#"[migration]
id = "db-crash"
[vars]
one = { required = true }
two = { required = true }
[[step]]
kind = "update"
database = "{one}"
table = "t"
set = { n = "n + 1" }
[[step]]
kind = "update"
database = "{two}"
table = "t"
set = { n = "n * 2", label = "'changed'" }
"#,
    )
    .unwrap();
    // A reader of the second database holds it, so the step's commit
    // there waits (SQLite's busy timeout) after its images are durable.
    let mut reader = Database::connect(&two).unwrap();
    reader.execute_script("BEGIN").unwrap();
    reader.query("SELECT count(*) FROM t", &[]).unwrap();
    let (var_one, var_two) = (format!("one={one}"), format!("two={two}"));
    let args = [
        "apply",
        spec.to_str().unwrap(),
        "--var",
        &var_one,
        "--var",
        &var_two,
        "--yes",
    ];
    let killed = child_until(&env, &args, &|| {
        let journal = journal_text(&env.ledger);
        journal.matches("\"RowsChanged\":").count() + journal.matches("\"RowsPacked\":").count()
            == 2
    });
    assert!(
        killed,
        "the apply ended before its second chunk was recorded"
    );
    reader.execute_script("ROLLBACK").unwrap();
    drop(reader);
    assert_eq!(dump(&two), two_before, "the second chunk never committed");
    assert_eq!(run_state(&env, "r1"), "interrupted (run `rewind recover`)");
    let recovered = env.run(&["recover", "--json"]);
    assert_eq!(recovered.code, 0, "{recovered:?}");
    let report: serde_json::Value = serde_json::from_str(&recovered.stdout).unwrap();
    let run = &report["runs"][0];
    assert_eq!(run["step"], 2, "{report}");
    assert_eq!(
        run["never_happened"].as_array().unwrap().len(),
        1,
        "{report}"
    );
    assert_eq!(run_state(&env, "r1"), "interrupted");
    let never = env.run(&[
        "history",
        "--table",
        "t",
        "--key",
        "3",
        "--kind",
        "NeverHappened",
    ]);
    assert!(
        never.stdout.contains("its transaction never committed"),
        "{never:?}"
    );
    // The rollback undoes the chunk that committed and leaves the other.
    let rolled = env.run(&["rollback", "r1", "--yes"]);
    assert_eq!(rolled.code, 0, "{rolled:?}");
    assert!(rolled.stdout.contains("1 inverse(s) applied"), "{rolled:?}");
    assert_eq!(dump(&one), one_before);
    assert_eq!(dump(&two), two_before);
    assert_eq!(run_state(&env, "r1"), "rolled back");
}

#[test]
fn recovering_a_ledger_with_nothing_unfinished_appends_nothing() {
    let env = TestEnv::with_ledger();
    let root = env.root().join("srv");
    std::fs::create_dir(&root).unwrap();
    let spec = env.root().join("spec.toml");
    std::fs::write(
        &spec,
        "[migration]\nid = \"finished\"\n[vars]\nroot = { required = true }\n[[step]]\nkind = \"mkdir\"\npath = \"{root}/a\"\n",
    )
    .unwrap();
    let target = format!("root={}", root.display());
    let applied = env.run(&[
        "apply",
        spec.to_str().unwrap(),
        "--target",
        &target,
        "--yes",
    ]);
    assert_eq!(applied.code, 0, "{applied:?}");
    let length = journal_len(&env.ledger);
    insta::assert_snapshot!(env.snapshot(&["recover"]), @r"
    exit: 0
    ----- stdout -----
    ----- stderr -----
    note: nothing to recover: every run and rollback in the ledger finished
    ");
    insta::assert_snapshot!(env.snapshot(&["recover", "--dry-run", "--json"]), @r#"
    exit: 0
    ----- stdout -----
    {
      "dry_run": true,
      "runs": [],
      "rollbacks": []
    }
    ----- stderr -----
    "#);
    assert_eq!(journal_len(&env.ledger), length);
}

/// An undo command that counts its runs in `undo-runs.txt` and, the first
/// time, kills the rollback that runs it (its parent) before the rollback
/// can record its end.
const UNDO_ONCE_THEN_KILL: &str =
    "echo undone >> undo-runs.txt\n[ $(wc -l < undo-runs.txt) -gt 1 ] || kill -9 $PPID\n";

/// Applies `steps` (`[[step]]` tables; `{root}/undo.sh` is
/// [`UNDO_ONCE_THEN_KILL`]) as run r1 to a fresh root, then rolls r1 back
/// in a child that the undo command kills. Returns the world, the root and
/// the seq of the `CommandRun`.
fn rollback_killed_by_its_undo(steps: &str) -> (TestEnv, PathBuf, String) {
    let env = TestEnv::with_ledger();
    let root = env.root().join("srv");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("undo.sh"), UNDO_ONCE_THEN_KILL).unwrap();
    let spec =
        format!("[migration]\nid = \"undo-once\"\n[vars]\nroot = {{ required = true }}\n{steps}");
    let spec_path = env.root().join("spec.toml");
    std::fs::write(&spec_path, spec).unwrap();
    let target = format!("root={}", root.display());
    let applied = env.run(&[
        "apply",
        spec_path.to_str().unwrap(),
        "--target",
        &target,
        "--yes",
    ]);
    assert_eq!(applied.code, 0, "{applied:?}");
    assert!(!child_until(&env, &["rollback", "r1", "--yes"], &|| false));
    assert_eq!(
        undo_runs(&root),
        1,
        "the undo command ran once, then killed the rollback"
    );
    let listed = env
        .run(&["history", "--kind", "CommandRun", "--json"])
        .stdout;
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let seq = listed[0]["seq"].as_u64().unwrap().to_string();
    (env, root, seq)
}

fn undo_runs(root: &Path) -> usize {
    std::fs::read_to_string(root.join("undo-runs.txt"))
        .unwrap_or_default()
        .lines()
        .count()
}

const UNDO_STEP: &str = r#"
[[step]]
kind = "exec"
argv = ["true"]
cwd = "{root}"
undo = ["sh", "{root}/undo.sh"]
"#;

#[test]
fn a_rollback_killed_after_an_undo_command_ran_does_not_run_it_again() {
    let mkdir = |name: &str| format!("[[step]]\nkind = \"mkdir\"\npath = \"{{root}}/{name}\"\n");
    let (env, root, seq) =
        rollback_killed_by_its_undo(&format!("{}{UNDO_STEP}{}", mkdir("a"), mkdir("b")));
    assert!(!root.join("b").exists(), "the newer step was undone");
    assert!(
        root.join("a").exists(),
        "the rollback stopped at the command"
    );
    // Run again: it stops at the command in doubt, and says what to do.
    insta::assert_snapshot!(env.snapshot(&["rollback", "r1", "--yes"]), @r"
    exit: 1
    ----- stdout -----
    rolled back run r1: 0 inverse(s) applied, 0 drifted, outcome failed
    ----- stderr -----
    note: recovered what a rewind that died left unfinished, recording it interrupted: the rollback of run r1; `rewind status` shows it
    error: the rollback stopped: seq 6: the undo command `sh [TEMP]/srv/undo.sh` was started at seq 14 by a rollback that stopped before recording its end; it may or may not have taken effect, and is not run twice
    hint: check whether `sh [TEMP]/srv/undo.sh` took effect; then run the rollback again with `--mark-undone 6` if it did, or with `--retry-undo 6` to run it again
    ");
    assert_eq!(undo_runs(&root), 1, "an undo in doubt is not run again");
    // The operator checked: it took effect.
    let marked = env.run(&["rollback", "r1", "--mark-undone", &seq, "--yes"]);
    assert_eq!(marked.code, 0, "{marked:?}");
    assert_eq!(undo_runs(&root), 1);
    assert!(!root.join("a").exists());
    let notes = env.run(&["history", "--kind", "Note"]);
    assert!(notes.stdout.contains("took effect"), "{notes:?}");
}

#[test]
fn an_undo_command_in_doubt_runs_again_only_when_asked() {
    let (env, root, seq) = rollback_killed_by_its_undo(UNDO_STEP);
    let again = env.run(&["rollback", "r1", "--yes"]);
    assert_eq!(again.code, 1, "{again:?}");
    let wrong = env.run(&["rollback", "r1", "--retry-undo", "1", "--yes"]);
    assert_eq!(wrong.code, 2, "{wrong:?}");
    assert!(
        wrong.stderr.contains("seq 1 is not an undo in doubt"),
        "{wrong:?}"
    );
    assert_eq!(undo_runs(&root), 1);
    let retried = env.run(&["rollback", "r1", "--retry-undo", &seq, "--yes"]);
    assert_eq!(retried.code, 0, "{retried:?}");
    assert_eq!(undo_runs(&root), 2);
}
