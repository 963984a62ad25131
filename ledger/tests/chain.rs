//! The hash chain end to end: random batches through the store and the
//! independent verifier, every kind of tampering at every position, and the
//! store's refusals and recoveries (second writer, crash catch-up, repair,
//! not a ledger, newer format, unknown seq).

use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;
use rewind_ledger::canonical::{entry_line, line, link, record_json};
use rewind_ledger::codec::FORMAT_VERSION;
use rewind_ledger::page::surgery;
use rewind_ledger::verify::{repair, stored_bytes, verify_journal};
use rewind_ledger::*;

fn origin() -> Origin {
    Origin {
        actor: "auditor@test".into(),
        host: "test-host".into(),
    }
}

fn pinned() -> Timestamp {
    "2026-03-04T05:06:07.000008Z".parse().unwrap()
}

fn ledger_dir(temp: &tempfile::TempDir) -> PathBuf {
    temp.path().join("ledger")
}

fn init(dir: &Path) -> Ledger {
    let mut ledger = Ledger::init(dir, "chain-test", origin()).unwrap();
    ledger.set_clock(pinned);
    ledger
}

fn open(dir: &Path) -> Ledger {
    let mut ledger = Ledger::open(dir, origin()).unwrap();
    ledger.set_clock(pinned);
    ledger
}

fn note(text: &str) -> Event {
    Event::Note(Note {
        about_run: None,
        about_seq: None,
        text: text.into(),
    })
}

/// A ledger of six events of mixed kinds, in three batches; returns its head.
fn six_events(dir: &Path) -> (u64, Digest) {
    let mut ledger = init(dir);
    let written = |path: &str| {
        Event::FileWritten(FileWritten {
            mode: 0o644,
            new: Digest([7; 32]),
            old: None,
            old_mode: None,
            path: path.into(),
            step: 1,
        })
    };
    ledger
        .append_batch(vec![
            Draft::new(Some("run-a"), note("alpha")),
            Draft::new(Some("run-a"), written("/srv/a")),
        ])
        .unwrap();
    ledger
        .append_batch(vec![
            Draft::new(Some("run-a"), note("gamma")),
            Draft::new(None, note("delta")),
            Draft::new(Some("run-b"), written("/srv/b")),
        ])
        .unwrap();
    ledger.append(None, note("zeta")).unwrap();
    ledger.head()
}

fn journal_path(dir: &Path) -> PathBuf {
    dir.join("journal.jsonl")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs `tools/verify_chain.py`; `None` when there is no python3.
// Saying so on stderr is the point: the test then checks less.
#[allow(clippy::print_stderr)]
fn python_verify(file: &Path, args: &[&str]) -> Option<(bool, String)> {
    let output = Command::new("python3")
        .arg(repo_root().join("tools/verify_chain.py"))
        .arg(file)
        .args(args)
        .output();
    match output {
        Ok(output) => Some((
            output.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        )),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("python3 not found: tools/verify_chain.py not run");
            None
        }
        Err(error) => panic!("running python3: {error}"),
    }
}

fn assert_python_accepts(file: &Path, args: &[&str], expected: &str) {
    if let Some((ok, output)) = python_verify(file, args) {
        assert!(ok, "verify_chain.py refused {}: {output}", file.display());
        assert!(output.contains(expected), "{output}");
    }
}

fn assert_python_refuses(file: &Path, args: &[&str], expected: &str) {
    if let Some((ok, output)) = python_verify(file, args) {
        assert!(!ok, "verify_chain.py accepted {}: {output}", file.display());
        assert!(
            output.contains(expected),
            "expected {expected:?} in: {output}"
        );
    }
}

/// The sled store of a closed ledger, opened directly as an attacker would.
fn with_events_tree(dir: &Path, change: impl FnOnce(&sled::Tree)) {
    let db = rewind_ledger::page::surgery::open_store(&dir.join("store"));
    let events = db.open_tree("events").unwrap();
    change(&events);
    db.flush().unwrap();
}

fn problem_of(dir: &Path) -> Option<Problem> {
    let ledger = open(dir);
    ledger.verify_chain().unwrap().problem
}

fn assert_problem(dir: &Path, seq: u64, kind: ProblemKind) {
    let problem = problem_of(dir).unwrap_or_else(|| panic!("tampering at seq {seq} not detected"));
    assert_eq!(
        (problem.seq, problem.kind),
        (seq, kind),
        "{}",
        problem.detail
    );
}

fn hex_of(digest: &Digest) -> String {
    digest.to_hex()
}

// ---------------------------------------------------------------------------
// Random chains.

fn sql_value() -> impl Strategy<Value = SqlValue> {
    prop_oneof![
        Just(SqlValue::Null),
        any::<i64>().prop_map(SqlValue::Integer),
        prop_oneof![Just(i64::MIN), Just(i64::MAX)].prop_map(SqlValue::Integer),
        any::<u64>().prop_map(|bits| SqlValue::Real(format!("{bits:#018x}"))),
        any::<String>().prop_map(SqlValue::Text),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(|b| SqlValue::Blob(Bytes(b))),
    ]
}

/// Strings that JSON escapes or must leave alone, mixed into arbitrary ones.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\"\\\\/\u{0}-\u{1f}\u{7f}\u{2028}\u{2029}\u{feff}é€😀 a-z]{0,24}",
    ]
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        text().prop_map(|text| note(&text)),
        (text(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(path, new, old, step)| {
            Event::ModeChanged(ModeChanged {
                new,
                old,
                path,
                step,
            })
        }),
        any::<u64>().prop_map(|undoes| Event::Compensated(Compensated { undoes })),
        (text(), any::<i64>(), any::<i64>()).prop_map(|(sequence, new, old)| {
            Event::SequenceMoved(SequenceMoved {
                database: "db".into(),
                new,
                old,
                old_is_called: new > old,
                sequence,
                step: 1,
            })
        }),
        (
            text(),
            proptest::collection::vec(sql_value(), 1..4),
            proptest::collection::vec(any::<u8>(), 0..48)
        )
            .prop_map(|(table, values, blob)| {
                Event::RowsChanged(RowsChanged {
                    chunk: 0,
                    columns: Vec::new(),
                    database: "db".into(),
                    key_columns: vec!["id".into()],
                    rows: vec![RowImage {
                        after: Some(values.clone()),
                        before: Some(vec![SqlValue::Blob(Bytes(blob))]),
                        key: values,
                    }],
                    step: 2,
                    table,
                })
            }),
        (
            proptest::collection::btree_map(text(), text(), 0..4),
            any::<[u8; 32]>()
        )
            .prop_map(|(vars, digest)| {
                Event::RunStarted(RunStarted {
                    description: String::new(),
                    spec_id: "spec".into(),
                    spec_path: "spec.toml".into(),
                    spec_sha256: Digest(digest),
                    spec_text: String::new(),
                    target: None,
                    vars,
                })
            }),
        (
            proptest::option::of(any::<i32>()),
            any::<[u8; 32]>(),
            proptest::collection::vec(text(), 0..4)
        )
            .prop_map(|(exit_code, output, argv)| {
                Event::CommandRun(CommandRun {
                    argv,
                    exit_code,
                    output: Digest(output),
                    step: 3,
                    timed_out: exit_code.is_none(),
                    undo: None,
                })
            }),
    ]
}

fn draft() -> impl Strategy<Value = Draft> {
    (proptest::option::of(text()), event()).prop_map(|(run, event)| Draft { run, event })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever goes in comes back out, chains, survives a reopen, and an
    /// independent verifier agrees with every hash.
    #[test]
    fn random_batches_chain_and_verify(
        actor in text(),
        batches in proptest::collection::vec(proptest::collection::vec(draft(), 1..6), 1..4),
        checkpoint in any::<bool>(),
    ) {
        let temp = tempfile::tempdir().unwrap();
        let dir = ledger_dir(&temp);
        let origin = Origin { actor, host: "h\u{e9}st\n".into() };
        let mut ledger = Ledger::init(&dir, "prop-ledger", origin.clone()).unwrap();
        let mut appended = Vec::new();
        for batch in &batches {
            appended.extend(ledger.append_batch(batch.clone()).unwrap());
        }
        if checkpoint {
            // A signed checkpoint (signature bytes and all) at the end.
            appended.push(ledger.checkpoint(&[9; 32]).unwrap());
        }
        let head = ledger.head();
        drop(ledger);

        let ledger = Ledger::open(&dir, origin).unwrap();
        prop_assert_eq!(ledger.head(), head);
        prop_assert_eq!(ledger.caught_up(), 0);
        let report = ledger.verify_chain().unwrap();
        prop_assert_eq!(&report.problem, &None);
        prop_assert_eq!(report.verified, appended.len() as u64);
        prop_assert_eq!(report.head_hash, head.1);

        let read: Vec<Entry> = ledger.range(1..=head.0).collect::<Result<_>>().unwrap();
        prop_assert_eq!(&read, &appended);
        let drafts: Vec<&Draft> = batches.iter().flatten().collect();
        for (entry, draft) in read.iter().zip(drafts) {
            prop_assert_eq!(&entry.record.event, &draft.event);
            prop_assert_eq!(&entry.record.run, &draft.run);
        }

        // The journal is byte for byte the export of the range.
        let export: Vec<u8> = read
            .iter()
            .flat_map(|entry| {
                let mut bytes = entry_line(entry);
                bytes.push(b'\n');
                bytes
            })
            .collect();
        let journal = journal_path(&dir);
        prop_assert_eq!(std::fs::read(&journal).unwrap(), export);
        prop_assert_eq!(verify_journal(&journal, "prop-ledger").unwrap(), head);
        assert_python_accepts(
            &journal,
            &["--head", &hex_of(&head.1)],
            &format!("ok: {} events, seq 1..{}, head {}", head.0, head.0, head.1),
        );
    }
}

/// Every golden sample (all event kinds) in one ledger passes the
/// independent verifier: the canonical JSON of each kind is Python's.
#[test]
fn every_event_kind_verifies_with_python() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
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
    let temp = tempfile::tempdir().unwrap();
    let dir = ledger_dir(&temp);
    let mut ledger = init(&dir);
    ledger.append_batch(drafts).unwrap();
    ledger.checkpoint(&[3; 32]).unwrap();
    let (seq, head) = ledger.head();
    assert_eq!(seq, EVENT_KINDS.len() as u64);
    assert_eq!(ledger.verify_chain().unwrap().problem, None);
    assert_python_accepts(
        &journal_path(&dir),
        &["--head", &head.to_hex()],
        &format!("ok: {seq} events, seq 1..{seq}, head {head}"),
    );
}

// ---------------------------------------------------------------------------
// Tampering with the store, at every position.

#[test]
fn an_altered_byte_of_the_stored_hash_is_detected_at_its_seq() {
    for seq in 1..=6 {
        let temp = tempfile::tempdir().unwrap();
        let dir = ledger_dir(&temp);
        six_events(&dir);
        with_events_tree(&dir, |events| {
            let mut value = surgery::read(events, seq).unwrap();
            value[1 + (seq as usize * 5) % 32] ^= 0x40;
            surgery::replace(events, seq, value);
        });
        assert_problem(&dir, seq, ProblemKind::Altered);
    }
}

#[test]
fn an_altered_byte_of_the_stored_record_is_detected_at_its_seq() {
    for seq in 1..=6 {
        let temp = tempfile::tempdir().unwrap();
        let dir = ledger_dir(&temp);
        six_events(&dir);
        with_events_tree(&dir, |events| {
            let mut value = surgery::read(events, seq).unwrap();
            // One letter of the host name: the record still decodes.
            let at = value
                .windows(9)
                .position(|window| window == b"test-host")
                .unwrap();
            value[at] = b'b';
            surgery::replace(events, seq, value);
        });
        assert_problem(&dir, seq, ProblemKind::Altered);
    }
}

/// Flips, one at a time, every byte of one stored value: each flip is
/// reported at that seq (as altered, corrupt, or reordered when the flip
/// lands in the record's own seq), never passed.
#[test]
fn every_single_byte_flip_of_a_stored_value_is_detected() {
    let temp = tempfile::tempdir().unwrap();
    let dir = ledger_dir(&temp);
    six_events(&dir);
    let mut original = Vec::new();
    with_events_tree(&dir, |events| {
        original = surgery::read(events, 3).unwrap();
    });
    for offset in 0..original.len() {
        with_events_tree(&dir, |events| {
            let mut value = original.clone();
            value[offset] ^= 0x01;
            surgery::replace(events, 3, value);
        });
        let problem = problem_of(&dir)
            .unwrap_or_else(|| panic!("flipping byte {offset} of seq 3 is not detected"));
        assert_eq!(problem.seq, 3, "byte {offset}: {problem:?}");
        assert_ne!(problem.kind, ProblemKind::Missing, "byte {offset}");
        assert_ne!(problem.kind, ProblemKind::Extra, "byte {offset}");
    }
}

#[test]
fn a_deleted_event_is_detected_at_its_seq() {
    for seq in 1..=5 {
        let temp = tempfile::tempdir().unwrap();
        let dir = ledger_dir(&temp);
        six_events(&dir);
        with_events_tree(&dir, |events| {
            surgery::remove(events, seq);
        });
        assert_problem(&dir, seq, ProblemKind::Missing);
    }
}

/// The newest entry missing from the store while the journal holds it is
/// exactly what a crash between the journal's fsync and the store's write
/// leaves: opening the ledger puts it back from the journal.
#[test]
fn a_deleted_newest_event_is_restored_from_the_journal() {
    let temp = tempfile::tempdir().unwrap();
    let dir = ledger_dir(&temp);
    let head = six_events(&dir);
    with_events_tree(&dir, |events| {
        surgery::remove(events, 6);
    });
    let ledger = open(&dir);
    assert_eq!(ledger.caught_up(), 1);
    assert_eq!(ledger.head(), head);
    assert_eq!(ledger.verify_chain().unwrap().problem, None);
}

/// An event deleted from both the store and the journal leaves a gap in seq.
#[test]
fn an_event_deleted_from_store_and_journal_is_detected() {
    for seq in 1..=5 {
        let temp = tempfile::tempdir().unwrap();
        let dir = ledger_dir(&temp);
        six_events(&dir);
        with_events_tree(&dir, |events| {
            surgery::remove(events, seq);
        });
        let journal = std::fs::read_to_string(journal_path(&dir)).unwrap();
        let kept: String = journal
            .lines()
            .enumerate()
            .filter(|(index, _)| *index as u64 + 1 != seq)
            .map(|(_, line)| format!("{line}\n"))
            .collect();
        std::fs::write(journal_path(&dir), kept).unwrap();
        assert_problem(&dir, seq, ProblemKind::Missing);
        // Without seq 1 the rest is a valid export from the middle; an
        // auditor who knows the ledger id links it to the genesis hash.
        let genesis = rewind_ledger::canonical::genesis("chain-test").to_hex();
        let expected = if seq == 1 {
            "line 1: seq 2: prev".to_owned()
        } else {
            format!(
                "line {seq}: seq {}: out of order, seq {seq} belongs here",
                seq + 1
            )
        };
        assert_python_refuses(&journal_path(&dir), &["--prev", &genesis], &expected);
        if seq > 1 {
            assert_python_refuses(&journal_path(&dir), &[], &expected);
        }
    }
}

#[test]
fn two_swapped_events_are_detected_at_the_first() {
    for seq in 1..=5 {
        let temp = tempfile::tempdir().unwrap();
        let dir = ledger_dir(&temp);
        six_events(&dir);
        with_events_tree(&dir, |events| {
            surgery::swap(events, seq, seq + 1);
        });
        assert_problem(&dir, seq, ProblemKind::Reordered);
    }
}

/// A forged entry with a correct hash appended to the store only: the
/// journal does not acknowledge it.
#[test]
fn a_forged_event_appended_to_the_store_is_detected_as_extra() {
    let temp = tempfile::tempdir().unwrap();
    let dir = ledger_dir(&temp);
    let (seq, head) = six_events(&dir);
    let record = forged_record(seq + 1);
    let hash = link(&head, &record_json(&record));
    with_events_tree(&dir, |events| {
        surgery::push(events, seq + 1, stored_bytes(&hash, &record));
    });
    assert_problem(&dir, seq + 1, ProblemKind::Extra);
}

/// A forged entry in both store and journal whose hash does not follow.
#[test]
fn a_forged_event_with_a_bad_hash_in_store_and_journal_is_detected() {
    let temp = tempfile::tempdir().unwrap();
    let dir = ledger_dir(&temp);
    let (seq, head) = six_events(&dir);
    let record = forged_record(seq + 1);
    let bad = Digest::of(b"not the link");
    append_to_journal(&dir, &line(seq + 1, &head, &bad, &record_json(&record)));
    with_events_tree(&dir, |events| {
        surgery::push(events, seq + 1, stored_bytes(&bad, &record));
    });
    assert_problem(&dir, seq + 1, ProblemKind::Altered);
    assert_python_refuses(&journal_path(&dir), &[], "line 7: seq 7: altered");
}

/// A forger who rewrites store and journal consistently makes a valid chain;
/// only a head kept elsewhere (a checkpoint, `--head`) shows it.
#[test]
fn a_consistently_forged_tail_is_caught_only_against_a_known_head() {
    let temp = tempfile::tempdir().unwrap();
    let dir = ledger_dir(&temp);
    let (seq, head) = six_events(&dir);
    let record = forged_record(seq + 1);
    let hash = link(&head, &record_json(&record));
    append_to_journal(&dir, &line(seq + 1, &head, &hash, &record_json(&record)));
    with_events_tree(&dir, |events| {
        surgery::push(events, seq + 1, stored_bytes(&hash, &record));
    });
    assert_eq!(problem_of(&dir), None);
    assert_python_refuses(
        &journal_path(&dir),
        &["--head", &head.to_hex()],
        &format!("not at head {head}"),
    );
}

fn forged_record(seq: u64) -> Record {
    Record {
        actor: "mallory".into(),
        event: note("nothing happened"),
        host: "test-host".into(),
        ledger_id: "chain-test".into(),
        recorded_at: pinned(),
        run: None,
        seq,
    }
}

fn append_to_journal(dir: &Path, line: &[u8]) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(journal_path(dir))
        .unwrap();
    file.write_all(line).unwrap();
    file.write_all(b"\n").unwrap();
}

// ---------------------------------------------------------------------------
// Tampering with the journal and the export.

#[test]
fn an_altered_journal_line_is_detected_by_both_verifiers() {
    for seq in 1..=6 {
        let temp = tempfile::tempdir().unwrap();
        let dir = ledger_dir(&temp);
        six_events(&dir);
        let journal = std::fs::read_to_string(journal_path(&dir)).unwrap();
        let altered: String = journal
            .lines()
            .enumerate()
            .map(|(index, text)| {
                if index as u64 + 1 == seq {
                    format!("{}\n", text.replace("auditor@test", "auditor@tesT"))
                } else {
                    format!("{text}\n")
                }
            })
            .collect();
        assert_ne!(altered, journal);
        std::fs::write(journal_path(&dir), altered).unwrap();
        assert_problem(&dir, seq, ProblemKind::Altered);
        assert_python_refuses(
            &journal_path(&dir),
            &[],
            &format!("line {seq}: seq {seq}: altered"),
        );
    }
}

#[test]
fn a_truncated_export_is_detected_given_the_head() {
    let temp = tempfile::tempdir().unwrap();
    let dir = ledger_dir(&temp);
    let (_, head) = six_events(&dir);
    let journal = std::fs::read_to_string(journal_path(&dir)).unwrap();
    for dropped in 1..=5 {
        let kept: Vec<&str> = journal.lines().take(6 - dropped).collect();
        let export = temp.path().join(format!("export-{dropped}.jsonl"));
        std::fs::write(&export, kept.join("\n") + "\n").unwrap();
        // On its own a cut-off export is a valid chain…
        assert_python_accepts(&export, &[], &format!("seq 1..{}", 6 - dropped));
        // …but not one that reaches the head the auditor holds.
        assert_python_refuses(
            &export,
            &["--head", &head.to_hex()],
            &format!("ends at seq {}", 6 - dropped),
        );
    }
    assert_python_accepts(
        &journal_path(&dir),
        &["--head", &head.to_hex()],
        "ok: 6 events, seq 1..6",
    );
}

/// An export that starts mid-ledger links to the head an auditor holds.
#[test]
fn an_export_from_the_middle_links_to_a_known_prev() {
    let temp = tempfile::tempdir().unwrap();
    let dir = ledger_dir(&temp);
    let (_, head) = six_events(&dir);
    let ledger = open(&dir);
    let held = ledger.get(2).unwrap().hash;
    let export = temp.path().join("export.jsonl");
    let lines: Vec<u8> = ledger
        .range(3..=6)
        .flat_map(|entry| {
            let mut bytes = entry_line(&entry.unwrap());
            bytes.push(b'\n');
            bytes
        })
        .collect();
    std::fs::write(&export, &lines).unwrap();
    assert_python_accepts(
        &export,
        &["--prev", &held.to_hex(), "--head", &head.to_hex()],
        &format!("ok: 4 events, seq 3..6, head {head}"),
    );
    let other = ledger.get(1).unwrap().hash;
    assert_python_refuses(&export, &["--prev", &other.to_hex()], "line 1: seq 3: prev");
    // And stdin works for a piped export.
    if Command::new("python3").arg("--version").output().is_ok() {
        let output = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "python3 {} - < {}",
                repo_root().join("tools/verify_chain.py").display(),
                export.display()
            ))
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
    }
}

/// A float anywhere in a record has no canonical form: refused by both.
#[test]
fn a_float_in_a_record_is_refused() {
    let temp = tempfile::tempdir().unwrap();
    let dir = ledger_dir(&temp);
    six_events(&dir);
    let journal = std::fs::read_to_string(journal_path(&dir)).unwrap();
    let altered = journal.replacen("\"step\":1", "\"step\":1.0", 1);
    assert_ne!(altered, journal);
    std::fs::write(journal_path(&dir), &altered).unwrap();
    assert_python_refuses(&journal_path(&dir), &[], "line 2: float 1.0 is not allowed");
    let error = verify_journal(&journal_path(&dir), "chain-test").unwrap_err();
    assert!(
        matches!(error, LedgerError::Journal { line: 2, .. }),
        "{error}"
    );
}

// ---------------------------------------------------------------------------
// Refusals and recoveries of the store.

#[test]
fn a_second_writer_is_refused_naming_the_holder() {
    let temp = tempfile::tempdir().unwrap();
    let dir = ledger_dir(&temp);
    let first = init(&dir);
    let error = Ledger::open(&dir, origin()).unwrap_err();
    match &error {
        LedgerError::Locked {
            dir: locked,
            holder,
        } => {
            assert_eq!(locked, &dir);
            assert_eq!(*holder, Some(std::process::id()));
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    assert!(
        error
            .to_string()
            .contains(&format!("(pid {})", std::process::id())),
        "{error}"
    );
    // repair refuses too, before moving anything.
    assert!(matches!(
        repair(&dir, origin()),
        Err(LedgerError::Locked { .. })
    ));
    assert!(dir.join("store").exists());
    drop(first);
    open(&dir);
}

/// A crash after the journal's fsync and before the store's write: the
/// journal holds entries the store lacks; opening catches up, indexes too.
#[test]
fn a_crash_between_journal_and_store_is_caught_up_on_open() {
    let temp = tempfile::tempdir().unwrap();
    let dir = ledger_dir(&temp);
    let (seq, head) = six_events(&dir);
    let mut prev = head;
    for next in seq + 1..=seq + 2 {
        let mut record = forged_record(next);
        record.run = Some("run-crash".into());
        let json = record_json(&record);
        let hash = link(&prev, &json);
        append_to_journal(&dir, &line(next, &prev, &hash, &json));
        prev = hash;
    }
    // And half a line, as a write cut short leaves it: never acknowledged.
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(journal_path(&dir))
            .unwrap();
        file.write_all(b"{\"seq\":9,\"prev\":\"ab").unwrap();
    }
    let mut ledger = open(&dir);
    assert_eq!(ledger.caught_up(), 2);
    assert_eq!(ledger.head(), (8, prev));
    assert_eq!(ledger.get(8).unwrap().record.seq, 8);
    assert_eq!(ledger.verify_chain().unwrap().problem, None);
    let selector = Selector {
        run: Some("run-crash".into()),
        ..Selector::default()
    };
    assert_eq!(ledger.candidates(&selector).unwrap(), Some(vec![7, 8]));
    // The partial line is gone, and the next append follows the caught-up head.
    let entry = ledger.append(None, note("after the crash")).unwrap();
    assert_eq!((entry.seq(), entry.prev), (9, prev));
    assert_eq!(ledger.verify_chain().unwrap().problem, None);
    drop(ledger);
    assert_python_accepts(&journal_path(&dir), &[], "ok: 9 events, seq 1..9");
}

#[test]
fn repair_rebuilds_a_deleted_store_from_the_journal() {
    let temp = tempfile::tempdir().unwrap();
    let dir = ledger_dir(&temp);
    let head = six_events(&dir);
    std::fs::remove_dir_all(dir.join("store")).unwrap();
    let report = repair(&dir, origin()).unwrap();
    assert_eq!(
        (report.entries, report.head, report.kept),
        (6, head.1, None)
    );
    let ledger = open(&dir);
    assert_eq!(ledger.head(), head);
    assert_eq!(ledger.verify_chain().unwrap().problem, None);
    let selector = Selector {
        run: Some("run-a".into()),
        ..Selector::default()
    };
    assert_eq!(ledger.candidates(&selector).unwrap(), Some(vec![1, 2, 3]));
    let selector = Selector {
        path: Some("/srv".into()),
        ..Selector::default()
    };
    assert_eq!(ledger.candidates(&selector).unwrap(), Some(vec![2, 5]));
}

#[test]
fn repair_rebuilds_a_damaged_store_and_keeps_the_old_one() {
    let temp = tempfile::tempdir().unwrap();
    let dir = ledger_dir(&temp);
    let head = six_events(&dir);
    with_events_tree(&dir, |events| {
        let mut value = surgery::read(events, 4).unwrap();
        value[10] ^= 0xff;
        surgery::replace(events, 4, value);
        surgery::remove(events, 2);
    });
    assert_problem(&dir, 2, ProblemKind::Missing);
    let report = repair(&dir, origin()).unwrap();
    let kept = dir.join("store.damaged-1");
    assert_eq!(report.kept.as_deref(), Some(kept.as_path()));
    assert!(kept.join("db").exists());
    assert_eq!(report.entries, 6);
    let ledger = open(&dir);
    assert_eq!(ledger.head(), head);
    assert_eq!(ledger.verify_chain().unwrap().problem, None);
    drop(ledger);
    // A second repair keeps the first one's leftovers too.
    let report = repair(&dir, origin()).unwrap();
    assert_eq!(report.kept, Some(dir.join("store.damaged-2")));
}

#[test]
fn repair_refuses_a_journal_that_fails_the_chain() {
    let temp = tempfile::tempdir().unwrap();
    let dir = ledger_dir(&temp);
    six_events(&dir);
    let journal = std::fs::read_to_string(journal_path(&dir)).unwrap();
    std::fs::write(journal_path(&dir), journal.replacen("gamma", "gammA", 1)).unwrap();
    let error = repair(&dir, origin()).unwrap_err();
    assert!(
        matches!(error, LedgerError::Journal { line: 3, .. }),
        "{error}"
    );
    // Nothing moved.
    assert!(dir.join("store").exists());
    assert!(!dir.join("store.damaged-1").exists());

    // A journal line out of order is refused as well.
    let mut lines: Vec<&str> = journal.lines().collect();
    lines.swap(3, 4);
    std::fs::write(journal_path(&dir), lines.join("\n") + "\n").unwrap();
    let error = repair(&dir, origin()).unwrap_err();
    assert!(
        matches!(error, LedgerError::Journal { line: 4, .. }),
        "{error}"
    );
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|item| item.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn a_directory_that_is_not_a_ledger_is_refused_untouched() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("project");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "hello").unwrap();
    let error = Ledger::open(&dir, origin()).unwrap_err();
    assert!(matches!(error, LedgerError::NotALedger { .. }), "{error}");
    assert!(matches!(
        repair(&dir, origin()),
        Err(LedgerError::NotALedger { .. })
    ));
    let error = Ledger::init(&dir, "x", origin()).unwrap_err();
    assert!(matches!(error, LedgerError::DirNotEmpty { .. }), "{error}");
    // A LEDGER file that is something else.
    std::fs::write(dir.join("LEDGER"), "[package]\nname = \"x\"\n").unwrap();
    let error = Ledger::open(&dir, origin()).unwrap_err();
    assert!(matches!(error, LedgerError::NotALedger { .. }), "{error}");
    assert_eq!(listing(&dir), ["LEDGER", "notes.txt"]);
    // No directory at all.
    let error = Ledger::open(&temp.path().join("absent"), origin()).unwrap_err();
    assert!(matches!(error, LedgerError::NotALedger { .. }), "{error}");
    assert!(!temp.path().join("absent").exists());
}

#[test]
fn a_newer_format_is_refused_untouched() {
    let temp = tempfile::tempdir().unwrap();
    let dir = ledger_dir(&temp);
    six_events(&dir);
    let marker = std::fs::read_to_string(dir.join("LEDGER")).unwrap();
    assert!(marker.contains("format = 1\n"), "{marker}");
    std::fs::write(
        dir.join("LEDGER"),
        marker.replace("format = 1", "format = 2"),
    )
    .unwrap();
    let before = std::fs::read(journal_path(&dir)).unwrap();
    let error = Ledger::open(&dir, origin()).unwrap_err();
    assert!(
        matches!(
            error,
            LedgerError::NewerFormat {
                found: 2,
                supported: 1,
                ..
            }
        ),
        "{error}"
    );
    assert!(matches!(
        repair(&dir, origin()),
        Err(LedgerError::NewerFormat { .. })
    ));
    assert_eq!(std::fs::read(journal_path(&dir)).unwrap(), before);
    assert!(!dir.join("store.damaged-1").exists());
    // A LEDGER file without its format line is damaged, not guessed at.
    std::fs::write(dir.join("LEDGER"), "rewind-ledger\nid = chain-test\n").unwrap();
    let error = Ledger::open(&dir, origin()).unwrap_err();
    assert!(matches!(error, LedgerError::BadMarker { .. }), "{error}");
}

#[test]
fn a_record_in_a_newer_format_is_refused_with_its_seq() {
    let temp = tempfile::tempdir().unwrap();
    let dir = ledger_dir(&temp);
    six_events(&dir);
    with_events_tree(&dir, |events| {
        let mut value = surgery::read(events, 3).unwrap();
        value[0] = FORMAT_VERSION + 1;
        surgery::replace(events, 3, value);
    });
    let ledger = open(&dir);
    let error = ledger.get(3).unwrap_err();
    assert!(
        matches!(
            error,
            LedgerError::NewerRecord { seq: 3, found, supported }
                if found == FORMAT_VERSION + 1 && supported == FORMAT_VERSION
        ),
        "{error}"
    );
}

#[test]
fn an_unknown_seq_is_refused_naming_the_range() {
    let temp = tempfile::tempdir().unwrap();
    let dir = ledger_dir(&temp);
    six_events(&dir);
    let ledger = open(&dir);
    for seq in [0, 7, u64::MAX] {
        let error = ledger.get(seq).unwrap_err();
        assert!(
            matches!(error, LedgerError::UnknownSeq { seq: s, head: 6 } if s == seq),
            "{error}"
        );
    }
    assert_eq!(
        ledger.get(7).unwrap_err().to_string(),
        "there is no seq 7 (the ledger holds 1 to 6)"
    );
}

/// The catch-up reads the journal backwards from its end to find the
/// lines the store lacks; here they span more than one read chunk.
#[test]
fn a_store_far_behind_its_journal_catches_up_from_the_tail() {
    let temp = tempfile::tempdir().unwrap();
    let dir = ledger_dir(&temp);
    let mut ledger = init(&dir);
    let long = "x".repeat(700);
    for batch in 0..6 {
        let drafts = (0..50)
            .map(|index| Draft::new(Some("run-long"), note(&format!("{batch}-{index} {long}"))))
            .collect();
        ledger.append_batch(drafts).unwrap();
    }
    let head = ledger.head();
    drop(ledger);
    assert!(std::fs::metadata(journal_path(&dir)).unwrap().len() > 3 * 65536);
    with_events_tree(&dir, |events| {
        for seq in 151..=300 {
            surgery::remove(events, seq);
        }
    });
    let ledger = open(&dir);
    assert_eq!(ledger.caught_up(), 150);
    assert_eq!(ledger.head(), head);
    assert_eq!(ledger.verify_chain().unwrap().problem, None);
    let selector = Selector {
        run: Some("run-long".into()),
        ..Selector::default()
    };
    assert_eq!(
        ledger.candidates(&selector).unwrap(),
        Some((1..=300).collect())
    );
}

/// Verification reads and decodes the store in chunks of 512 on several
/// threads: a ledger of several chunks verifies, and tampering deep in it
/// is still reported at its own seq.
#[test]
fn tampering_beyond_the_first_chunks_is_detected_at_its_seq() {
    let temp = tempfile::tempdir().unwrap();
    let dir = ledger_dir(&temp);
    let mut ledger = init(&dir);
    for batch in 0..4 {
        let drafts = (0..500)
            .map(|index| Draft::new(None, note(&format!("{batch}-{index}"))))
            .collect();
        ledger.append_batch(drafts).unwrap();
    }
    let report = ledger.verify_chain().unwrap();
    assert_eq!((report.verified, report.problem), (2000, None));
    drop(ledger);
    for (seq, kind) in [
        (1537, ProblemKind::Altered),
        (1025, ProblemKind::Missing),
        (600, ProblemKind::Reordered),
    ] {
        with_events_tree(&dir, |events| match kind {
            ProblemKind::Altered => {
                let mut value = surgery::read(events, seq).unwrap();
                let at = value
                    .windows(9)
                    .position(|window| window == b"test-host")
                    .unwrap();
                value[at] = b'T';
                surgery::replace(events, seq, value);
            }
            ProblemKind::Missing => {
                surgery::remove(events, seq);
            }
            _ => {
                let other = surgery::read(events, seq + 700).unwrap();
                surgery::replace(events, seq, other);
            }
        });
        // Each tampering is earlier than the last, so it is the first problem.
        assert_problem(&dir, seq, kind);
    }
}

/// A program holding the sled store itself (not through rewind's lock)
/// gets a Locked error, not sled's bare "could not acquire lock" io error.
#[test]
fn a_store_held_outside_rewind_is_reported_as_locked() {
    let temp = tempfile::tempdir().unwrap();
    let dir = ledger_dir(&temp);
    six_events(&dir);
    // The ledger closed a moment ago: `open_store` waits until sled lets go.
    let held = rewind_ledger::page::surgery::open_store(&dir.join("store"));
    let error = Ledger::open(&dir, origin()).unwrap_err();
    assert!(
        matches!(error, LedgerError::Locked { holder: None, .. }),
        "{error:?}"
    );
    drop(held);
    open(&dir);
}

/// The run index keeps a run's seqs as ranges, one key per run per batch:
/// runs interleaved within and across batches come back exactly, before
/// and after a reindex, and through a target too.
#[test]
fn run_index_ranges_survive_interleaving_and_reindex() {
    let temp = tempfile::tempdir().unwrap();
    let dir = ledger_dir(&temp);
    let mut ledger = init(&dir);
    let started = |target: &str| {
        Event::RunStarted(RunStarted {
            description: String::new(),
            spec_id: "spec".into(),
            spec_path: "spec.toml".into(),
            spec_sha256: Digest::default(),
            spec_text: String::new(),
            target: Some(target.into()),
            vars: Default::default(),
        })
    };
    ledger
        .append_batch(vec![
            Draft::new(Some("run-a"), started("web-01")),
            Draft::new(Some("run-b"), started("web-02")),
            Draft::new(Some("run-a"), note("a")),
            Draft::new(Some("run-a"), note("a")),
            Draft::new(None, note("none")),
            Draft::new(Some("run-b"), note("b")),
            Draft::new(Some("run-a"), note("a")),
        ])
        .unwrap();
    ledger
        .append_batch(vec![
            Draft::new(Some("run-b"), note("b")),
            Draft::new(Some("run-a"), note("a")),
            Draft::new(Some("run-c"), started("web-01")),
        ])
        .unwrap();
    ledger.append(Some("run-a"), note("a")).unwrap();
    let check = |ledger: &Ledger| {
        let run = |name: &str| {
            ledger
                .candidates(&Selector {
                    run: Some(name.into()),
                    ..Selector::default()
                })
                .unwrap()
        };
        assert_eq!(run("run-a"), Some(vec![1, 3, 4, 7, 9, 11]));
        assert_eq!(run("run-b"), Some(vec![2, 6, 8]));
        assert_eq!(run("run-c"), Some(vec![10]));
        assert_eq!(run("run"), Some(vec![]));
        let target = ledger
            .candidates(&Selector {
                target: Some("web-01".into()),
                ..Selector::default()
            })
            .unwrap();
        assert_eq!(target, Some(vec![1, 3, 4, 7, 9, 10, 11]));
        let both = ledger
            .candidates(&Selector {
                target: Some("web-01".into()),
                run: Some("run-c".into()),
                ..Selector::default()
            })
            .unwrap();
        assert_eq!(both, Some(vec![10]));
    };
    check(&ledger);
    assert_eq!(ledger.reindex().unwrap(), 11);
    check(&ledger);
    drop(ledger);
    check(&open(&dir));
}

/// `get` remembers the hash it read last, for the next seq's `prev`:
/// in any order of reads, every entry comes back with its own `prev`.
#[test]
fn get_in_any_order_gives_each_entry_its_prev() {
    let temp = tempfile::tempdir().unwrap();
    let dir = ledger_dir(&temp);
    six_events(&dir);
    let ledger = open(&dir);
    let all: Vec<Entry> = ledger.range(1..=6).collect::<Result<_>>().unwrap();
    for pair in all.windows(2) {
        assert_eq!(pair[1].prev, pair[0].hash);
    }
    for seq in [3, 4, 5, 1, 2, 6, 6, 5, 2, 3, 1] {
        assert_eq!(ledger.get(seq).unwrap(), all[seq as usize - 1], "seq {seq}");
    }
}
