//! The ledger commands: init, note, history, show, verify, audit export,
//! reindex, repair, completions, man — and their bad-input errors.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use insta::assert_snapshot;
use rewind_ledger::{
    Column, Digest, Draft, Event, FileType, Ledger, Origin, PathMoved, RowImage, RowsChanged,
    RunStarted, SqlValue, Timestamp,
};
use rewind_tests::{NOW, TestEnv};

fn origin() -> Origin {
    Origin {
        actor: "tester@testhost".into(),
        host: "testhost".into(),
    }
}

/// A ledger with a run on a target that moved a path and changed two rows.
fn populated() -> TestEnv {
    let env = TestEnv::with_ledger();
    let mut ledger = Ledger::open(&env.ledger, origin()).unwrap();
    let now: Timestamp = NOW.parse().unwrap();
    ledger.set_clock(move || now);
    let run = Some("r1");
    let started = RunStarted {
        description: "demo".into(),
        spec_id: "ns3-vhost".into(),
        spec_path: "ns3.toml".into(),
        spec_sha256: Digest::of(b"spec"),
        spec_text: "[migration]".into(),
        target: Some("example.com".into()),
        vars: BTreeMap::from([("root".into(), "/srv/example.com".into())]),
    };
    let moved = PathMoved {
        copied: false,
        digest: Digest::of(b"tree"),
        file_type: FileType::Dir,
        from: "/srv/example.com/var/log".into(),
        step: 1,
        to: "/srv/example.com/web/log".into(),
    };
    let rows = RowsChanged {
        chunk: 0,
        columns: vec![
            Column {
                name: "id".into(),
                sql_type: "integer".into(),
            },
            Column {
                name: "name".into(),
                sql_type: "text".into(),
            },
        ],
        database: "sqlite://app.db".into(),
        key_columns: vec!["id".into()],
        rows: vec![
            RowImage {
                after: Some(vec![
                    SqlValue::Integer(7),
                    SqlValue::Text("O'Brien & Co".into()),
                ]),
                before: Some(vec![SqlValue::Integer(7), SqlValue::Text("obrien".into())]),
                key: vec![SqlValue::Integer(7)],
            },
            RowImage {
                after: Some(vec![SqlValue::Integer(8), SqlValue::Text("new".into())]),
                before: None,
                key: vec![SqlValue::Integer(8)],
            },
        ],
        step: 2,
        table: "teams".into(),
    };
    ledger
        .append_batch(vec![
            Draft::new(run, Event::RunStarted(started)),
            Draft::new(run, Event::PathMoved(moved)),
            Draft::new(run, Event::RowsChanged(rows)),
        ])
        .unwrap();
    env
}

/// The files below `dir`, except sled's own internals (it rewrites its
/// snapshot files whenever it is opened).
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = walk(dir)
        .into_iter()
        .filter(|path| !path.contains("/store/"))
        .collect();
    names.sort();
    names
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            out.push(path.display().to_string());
            if path.is_dir() {
                out.extend(walk(&path));
            }
        }
    }
    out
}

#[test]
fn init_creates_a_private_ledger_and_refuses_twice() {
    let env = TestEnv::new();
    assert_snapshot!(env.snapshot(&["init"]), @r"
    exit: 0
    ----- stdout -----
    initialized ledger [TEMP]/ledger (id 00000000-0000-4000-8000-000000000001)
    ----- stderr -----
    ");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&env.ledger).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_snapshot!(env.snapshot(&["init"]), @r"
    exit: 2
    ----- stdout -----
    ----- stderr -----
    error: [TEMP]/ledger already holds a rewind ledger
    hint: use it as it is, or pass --ledger with another directory
    ");
}

#[test]
fn note_history_show() {
    let env = populated();
    assert_snapshot!(env.snapshot(&[
        "note",
        "checked the vhost by hand",
        "--run",
        "r1",
        "--seq",
        "2"
    ]));
    assert_snapshot!(env.snapshot(&["history"]));
    assert_snapshot!(env.snapshot(&["show", "4"]));
    assert_snapshot!(env.snapshot(&["--json", "show", "1"]));
}

#[test]
fn history_filters() {
    let env = populated();
    env.run(&["note", "unrelated"]);
    let seqs = |args: &[&str]| -> Vec<u64> {
        let mut argv = vec!["--json", "history"];
        argv.extend_from_slice(args);
        let output = env.run(&argv);
        assert_eq!(output.code, 0, "{output:?}");
        let items: Vec<serde_json::Value> = serde_json::from_str(&output.stdout).unwrap();
        items
            .iter()
            .map(|item| item["seq"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(seqs(&[]), vec![1, 2, 3, 4]);
    assert_eq!(seqs(&["--run", "r1"]), vec![1, 2, 3]);
    assert_eq!(seqs(&["--target", "example.com"]), vec![1, 2, 3]);
    assert_eq!(seqs(&["--target", "other.org"]), Vec::<u64>::new());
    assert_eq!(seqs(&["--path", "/srv/example.com"]), vec![2]);
    assert_eq!(seqs(&["--path", "/srv/example.com/web/log/"]), vec![2]);
    assert_eq!(seqs(&["--path", "/srv/example"]), Vec::<u64>::new());
    assert_eq!(seqs(&["--table", "teams"]), vec![3]);
    assert_eq!(seqs(&["--table", "teams", "--key", "8"]), vec![3]);
    assert_eq!(seqs(&["--table", "teams", "--key", "9"]), Vec::<u64>::new());
    assert_eq!(seqs(&["--kind", "Note"]), vec![4]);
    assert_eq!(seqs(&["--kind", "PathMoved", "--run", "r1"]), vec![2]);
    assert_eq!(
        seqs(&["--since", "2026-01-02", "--until", "2026-01-02"]),
        vec![1, 2, 3, 4]
    );
    assert_eq!(seqs(&["--since", "2026-01-03"]), Vec::<u64>::new());
    assert_eq!(
        seqs(&["--until", "2026-01-02T03:04:04Z"]),
        Vec::<u64>::new()
    );
    assert_eq!(seqs(&["--limit", "2"]), vec![3, 4]);
    // The incident reviewer's view: the row before and after, side by side.
    assert_snapshot!(env.snapshot(&["history", "--table", "teams", "--key", "7"]));
}

#[test]
fn verify_and_export_agree_with_the_independent_verifier() {
    let env = populated();
    assert_snapshot!(env.snapshot(&["verify"]));
    let export = env.root().join("export.jsonl");
    let output = env.run(&[
        "audit",
        "export",
        "--format",
        "jsonl",
        "-o",
        export.to_str().unwrap(),
    ]);
    assert_eq!(output.code, 0, "{output:?}");
    let journal = std::fs::read(env.ledger.join("journal.jsonl")).unwrap();
    assert_eq!(
        std::fs::read(&export).unwrap(),
        journal,
        "a full export is the journal, byte for byte"
    );
    let run_export = env.run(&["audit", "export", "--run", "r1"]);
    assert_eq!(run_export.stdout.lines().count(), 3);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/verify_chain.py");
    if script.exists() && Command::new("python3").arg("--version").output().is_ok() {
        let status = Command::new("python3")
            .arg(&script)
            .arg(&export)
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stdout)
        );
    }
}

#[test]
fn tampering_is_reported_with_its_seq_and_repair_rebuilds_from_the_journal() {
    let env = populated();
    {
        let db = sled::open(env.ledger.join("store")).unwrap();
        let events = db.open_tree("events").unwrap();
        let key = 2u64.to_be_bytes();
        let mut value = events.get(key).unwrap().unwrap().to_vec();
        let last = value.len() - 3;
        value[last] ^= 0x01;
        events.insert(key, value).unwrap();
        db.flush().unwrap();
    }
    let output = env.run(&["verify"]);
    assert_eq!(output.code, 4, "{output:?}");
    assert!(output.stderr.contains("at seq 2"), "{}", output.stderr);
    assert_snapshot!(env.snapshot(&["repair"]));
    assert_eq!(env.run(&["verify"]).code, 0);
}

#[test]
fn bad_input_changes_nothing() {
    let env = populated();
    let before = listing(env.root());
    let journal = std::fs::read(env.ledger.join("journal.jsonl")).unwrap();
    assert_snapshot!("unknown_seq", env.snapshot(&["show", "99"]));
    assert_snapshot!(
        "unknown_seq_note",
        env.snapshot(&["note", "x", "--seq", "99"])
    );
    assert_snapshot!(
        "unknown_run_note",
        env.snapshot(&["note", "x", "--run", "nope"])
    );
    assert_snapshot!(
        "malformed_time",
        env.snapshot(&["history", "--since", "last tuesday"])
    );
    assert_snapshot!(
        "unknown_kind",
        env.snapshot(&["history", "--kind", "pathmoved"])
    );
    assert_snapshot!("empty_note", env.snapshot(&["note", "  "]));
    assert_eq!(
        std::fs::read(env.ledger.join("journal.jsonl")).unwrap(),
        journal
    );

    let not_a_ledger = env.root().join("plain");
    std::fs::create_dir(&not_a_ledger).unwrap();
    std::fs::write(not_a_ledger.join("notes.txt"), "hello").unwrap();
    assert_snapshot!(
        "not_a_ledger",
        env.snapshot(&["--ledger", not_a_ledger.to_str().unwrap(), "history"])
    );
    assert_snapshot!(
        "init_non_empty",
        env.snapshot(&["--ledger", not_a_ledger.to_str().unwrap(), "init"])
    );
    assert_eq!(
        listing(&not_a_ledger),
        vec![not_a_ledger.join("notes.txt").display().to_string()]
    );
    let mut after = listing(env.root());
    after.retain(|path| !path.contains("/plain"));
    assert_eq!(before, after);
}

#[test]
fn newer_format_and_corrupt_record_are_refused() {
    let env = populated();
    let marker = env.ledger.join("LEDGER");
    let original = std::fs::read_to_string(&marker).unwrap();
    std::fs::write(&marker, original.replace("format = 1", "format = 2")).unwrap();
    assert_snapshot!("newer_format", env.snapshot(&["history"]));
    std::fs::write(&marker, &original).unwrap();
    {
        let db = sled::open(env.ledger.join("store")).unwrap();
        db.open_tree("events")
            .unwrap()
            .insert(3u64.to_be_bytes(), vec![1u8, 2, 3])
            .unwrap();
        db.flush().unwrap();
    }
    assert_snapshot!("corrupt_record", env.snapshot(&["show", "3"]));
}

#[test]
fn a_held_ledger_refuses_writers_and_readers_use_the_journal() {
    let env = populated();
    let holder = Ledger::open(&env.ledger, origin()).unwrap();
    assert_snapshot!("second_writer", env.snapshot(&["note", "while held"]));
    assert_snapshot!(
        "reader_while_held",
        env.snapshot(&["history", "--run", "r1"])
    );
    let verify = env.run(&["verify"]);
    assert_eq!(verify.code, 0, "{verify:?}");
    drop(holder);
    assert_eq!(env.run(&["note", "after"]).code, 0);
}

#[test]
fn completions_and_man_page() {
    let env = TestEnv::new();
    let bash = env.run(&["completions", "bash"]);
    assert_eq!(bash.code, 0);
    assert!(bash.stdout.contains("rewind") && bash.stdout.contains("history"));
    let man = env.run(&["man"]);
    assert!(
        man.stdout.starts_with(".ie") || man.stdout.contains(".TH"),
        "{}",
        &man.stdout[..100.min(man.stdout.len())]
    );
    assert_snapshot!("help", env.snapshot(&["--help"]));
}
