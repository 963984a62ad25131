//! A first round trip through the store: append, reopen, read, verify.

use rewind_ledger::{Draft, Event, Ledger, Note, Origin};

fn origin() -> Origin {
    Origin {
        actor: "tester@host".into(),
        host: "host".into(),
    }
}

#[test]
fn append_reopen_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger");
    let mut ledger = Ledger::init(&path, "ledger-1", origin()).unwrap();
    let note = |text: &str| {
        Draft::new(
            Some("run-1"),
            Event::Note(Note {
                about_run: None,
                about_seq: None,
                text: text.into(),
            }),
        )
    };
    ledger
        .append_batch(vec![note("a"), note("b\n\"c\""), note("ü")])
        .unwrap();
    let head = ledger.head();
    drop(ledger);
    let ledger = Ledger::open(&path, origin()).unwrap();
    assert_eq!(ledger.head(), head);
    assert_eq!(ledger.get(2).unwrap().record.seq, 2);
    let report = ledger.verify_chain().unwrap();
    assert_eq!(report.problem, None, "{report:?}");
    assert_eq!(report.verified, 3);
    assert_eq!(
        ledger
            .candidates(&rewind_ledger::Selector {
                run: Some("run-1".into()),
                ..Default::default()
            })
            .unwrap(),
        Some(vec![1, 2, 3])
    );
    let second = Ledger::open(&path, origin()).unwrap_err();
    assert!(
        matches!(
            second,
            rewind_ledger::LedgerError::Locked {
                holder: Some(_),
                ..
            }
        ),
        "{second}"
    );
}

#[test]
fn the_path_index_is_written_behind_and_caught_up_by_the_first_query() {
    use rewind_ledger::{Digest, FileWritten, Selector};
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::init(&dir.path().join("ledger"), "ledger-2", origin()).unwrap();
    let written = |path: &str| {
        Draft::new(
            Some("run-1"),
            Event::FileWritten(FileWritten {
                mode: 0o644,
                new: Digest::of(path.as_bytes()),
                old: None,
                old_mode: None,
                path: path.into(),
                step: 1,
            }),
        )
    };
    ledger
        .append_batch(vec![
            written("/srv/a/x"),
            written("/srv/b/y"),
            written("/srv/a/z"),
        ])
        .unwrap();
    assert_eq!(ledger.subjects_behind().unwrap(), 3);
    let selector = Selector {
        path: Some("/srv/a".into()),
        ..Default::default()
    };
    assert_eq!(ledger.candidates(&selector).unwrap(), Some(vec![1, 3]));
    assert_eq!(ledger.subjects_behind().unwrap(), 0);
    ledger.append_batch(vec![written("/srv/a/w")]).unwrap();
    assert_eq!(ledger.candidates(&selector).unwrap(), Some(vec![1, 3, 4]));
}

#[test]
fn a_damaged_compressed_page_is_reported_and_repaired_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger");
    let mut ledger = Ledger::init(&path, "ledger-3", origin()).unwrap();
    let note = |text: String| {
        Draft::new(
            None,
            Event::Note(Note {
                about_run: None,
                about_seq: None,
                text,
            }),
        )
    };
    ledger
        .append_batch((0..10).map(|i| note(format!("first {i}"))).collect())
        .unwrap();
    ledger
        .append_batch((0..10).map(|i| note(format!("second {i}"))).collect())
        .unwrap();
    drop(ledger);
    {
        let db = sled::open(path.join("store")).unwrap();
        let events = db.open_tree("events").unwrap();
        let mut page = events.get(1u64.to_be_bytes()).unwrap().unwrap().to_vec();
        let middle = page.len() / 2;
        page[middle] ^= 0xff;
        events.insert(1u64.to_be_bytes(), page).unwrap();
        db.flush().unwrap();
    }
    let ledger = Ledger::open(&path, origin()).unwrap();
    let problem = ledger
        .verify_chain()
        .unwrap()
        .problem
        .expect("the damage is found");
    assert_eq!(
        (problem.seq, problem.kind),
        (1, rewind_ledger::ProblemKind::Corrupt),
        "{problem:?}"
    );
    drop(ledger);
    rewind_ledger::verify::repair(&path, origin()).unwrap();
    let ledger = Ledger::open(&path, origin()).unwrap();
    assert_eq!(ledger.verify_chain().unwrap().problem, None);
    assert_eq!(ledger.head().0, 20);
}

#[test]
fn a_writer_waits_for_a_reader_but_not_for_another_writer() {
    use rewind_ledger::{Access, LedgerError};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger");
    drop(Ledger::init(&path, "ledger-4", origin()).unwrap());
    let reader = Ledger::open_as(&path, origin(), Access::Read).unwrap();
    let released = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(400));
        drop(reader);
    });
    let started = std::time::Instant::now();
    let mut writer = Ledger::open(&path, origin()).expect("the writer waits for the reader");
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    released.join().unwrap();
    writer
        .append(
            None,
            Event::Note(Note {
                about_run: None,
                about_seq: None,
                text: "after".into(),
            }),
        )
        .unwrap();
    let second = Ledger::open(&path, origin()).unwrap_err();
    assert!(matches!(second, LedgerError::Locked { .. }), "{second}");
    let reading = Ledger::open_as(&path, origin(), Access::Read).unwrap_err();
    assert!(matches!(reading, LedgerError::Locked { .. }), "{reading}");
}
