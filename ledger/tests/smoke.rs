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

/// Events on paths under a few vhosts and on rows of two tables, some
/// touching many rows, so that the path and row index spans several groups.
fn subject_drafts(batch: u64) -> Vec<Draft> {
    use rewind_ledger::{Column, Digest, FileWritten, RowImage, RowsChanged, SqlValue};
    (0..40)
        .map(|i| {
            let n = batch * 40 + i;
            let event = if n.is_multiple_of(5) {
                let rows = (0..(n % 300))
                    .map(|r| RowImage {
                        after: None,
                        before: None,
                        key: vec![SqlValue::Integer(((n * 7 + r) % 500) as i64)],
                    })
                    .collect();
                Event::RowsChanged(RowsChanged {
                    chunk: 0,
                    columns: vec![Column {
                        name: "id".into(),
                        sql_type: "integer".into(),
                    }],
                    database: "sqlite:///tmp/panel.db".into(),
                    key_columns: vec!["id".into()],
                    rows,
                    step: 1,
                    table: if n.is_multiple_of(2) { "teams" } else { "team" }.into(),
                })
            } else {
                let path = format!("/srv/vhost-{}/web/{}/f{n}", n % 3, n % 4);
                Event::FileWritten(FileWritten {
                    mode: 0o644,
                    new: Digest::of(path.as_bytes()),
                    old: None,
                    old_mode: None,
                    path: if n.is_multiple_of(7) {
                        format!("{path}/")
                    } else {
                        path
                    },
                    step: 1,
                })
            };
            Draft::new(Some("run-1"), event)
        })
        .collect()
}

#[test]
fn the_path_and_row_index_answers_as_a_scan_of_every_event_would() {
    use rewind_ledger::{Selector, Subject};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger");
    let queries: Vec<Selector> = [
        ("/srv", None, None),
        ("/", None, None),
        ("/srv/vhost-1", None, None),
        ("/srv/vhost-1/", None, None),
        ("/srv/vhost-1/web/2", None, None),
        ("/srv/vhost-1/web/2/f41", None, None),
        ("/srv/vhost", None, None),
        ("", Some("teams"), None),
        ("", Some("team"), None),
        ("", Some("teams"), Some("7")),
        ("", Some("team"), Some("499")),
        ("", Some("team"), Some("49")),
        ("", Some("absent"), None),
    ]
    .into_iter()
    .map(|(path, table, key)| Selector {
        path: (!path.is_empty()).then(|| path.to_owned()),
        table: table.map(str::to_owned),
        key: key.map(str::to_owned),
        ..Selector::default()
    })
    .collect();
    // What each query must find: every event whose subjects match it.
    let expected = |entries: &[rewind_ledger::Entry], selector: &Selector| -> Vec<u64> {
        entries
            .iter()
            .filter(|entry| {
                entry
                    .record
                    .event
                    .subjects()
                    .iter()
                    .any(|subject| match subject {
                        Subject::Path(path) => selector.path.as_deref().is_some_and(|wanted| {
                            let wanted = wanted.trim_end_matches('/');
                            let path = path.trim_end_matches('/');
                            path == wanted || path.starts_with(&format!("{wanted}/"))
                        }),
                        Subject::Row(table, key) => {
                            selector.table.as_deref() == Some(table.as_str())
                                && selector.key.as_deref().is_none_or(|wanted| wanted == key)
                        }
                    })
            })
            .map(|entry| entry.seq())
            .collect()
    };
    let check = |ledger: &Ledger, moment: &str| {
        let (head, _) = ledger.head();
        let entries: Vec<_> = ledger.range(1..=head).map(Result::unwrap).collect();
        for selector in &queries {
            assert_eq!(
                ledger.candidates(selector).unwrap(),
                Some(expected(&entries, selector)),
                "{moment}: {selector:?}"
            );
        }
        entries
    };
    let mut ledger = Ledger::init(&path, "ledger-2", origin()).unwrap();
    // Both ways in: entries back (encoded here), or seqs only (the store
    // writer encodes the records and takes their subjects).
    for batch in 0..30 {
        if batch % 2 == 0 {
            ledger.append_batch(subject_drafts(batch)).unwrap();
        } else {
            let first = ledger.head().0 + 1;
            let seqs = ledger.append_batch_seqs(subject_drafts(batch)).unwrap();
            assert_eq!(seqs, first..=first + 39);
        }
    }
    assert_eq!(ledger.verify_chain().unwrap().problem, None);
    check(&ledger, "after appending");
    drop(ledger);
    // The newest group is continued by the next writer.
    let mut ledger = Ledger::open(&path, origin()).unwrap();
    for batch in 30..45 {
        ledger.append_batch_seqs(subject_drafts(batch)).unwrap();
    }
    check(&ledger, "after reopening and appending");
    ledger.reindex().unwrap();
    check(&ledger, "after reindex");
    drop(ledger);
    // An index without its layout marker (of an older layout, or a clear
    // cut short) is rebuilt on open, whatever is left in it.
    {
        let db = rewind_ledger::page::surgery::open_store(&path.join("store"));
        let index = db.open_tree("index").unwrap();
        assert!(index.remove(b"\xffindex_format").unwrap().is_some());
        // Half its keys gone, its `indexed_through` marker kept.
        let half: Vec<_> = index
            .iter()
            .keys()
            .map(Result::unwrap)
            .filter(|key| key[0] != 0xff)
            .step_by(2)
            .collect();
        for key in half {
            index.remove(key).unwrap();
        }
        db.flush().unwrap();
    }
    let ledger = Ledger::open(&path, origin()).unwrap();
    assert_eq!(ledger.indexed_on_open(), ledger.head().0);
    let entries = check(&ledger, "after an index without its layout marker");
    assert!(
        !expected(&entries, &queries[9]).is_empty() && expected(&entries, &queries[12]).is_empty(),
        "the queries cover both hits and misses"
    );
    drop(ledger);
    // An index of layout 2, whose row keys were rendered without escapes,
    // is rebuilt on open too.
    {
        let db = rewind_ledger::page::surgery::open_store(&path.join("store"));
        let index = db.open_tree("index").unwrap();
        index.insert(b"\xffindex_format", b"2").unwrap();
        db.flush().unwrap();
    }
    let ledger = Ledger::open(&path, origin()).unwrap();
    assert_eq!(ledger.indexed_on_open(), ledger.head().0);
    check(&ledger, "after an index of layout 2");
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
        let db = rewind_ledger::page::surgery::open_store(&path.join("store"));
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

/// Row images that do not unpack are chained like any content, but no
/// rollback or reader can use them: verify names the entry.
#[test]
fn verify_reports_row_images_that_do_not_unpack() {
    use rewind_ledger::{Bytes, Column, RowsPacked, verify::ProblemKind};
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::init(&dir.path().join("ledger"), "ledger-1", origin()).unwrap();
    let packed = |images: Vec<u8>| {
        Draft::new(
            Some("run-1"),
            Event::RowsPacked(RowsPacked {
                chunk: 0,
                columns: vec![Column {
                    name: "id".into(),
                    sql_type: "INTEGER".into(),
                }],
                database: "sqlite:app.db".into(),
                images: Bytes(images),
                key_columns: vec!["id".into()],
                rows: 1,
                step: 1,
                table: "t".into(),
            }),
        )
    };
    // One deleted row: its flags, then its before image, the INTEGER 7.
    let mut whole = vec![1, 1];
    whole.extend_from_slice(&7i64.to_le_bytes());
    let cut = whole[..whole.len() - 1].to_vec();
    ledger.append_batch(vec![packed(whole)]).unwrap();
    assert_eq!(ledger.verify_chain().unwrap().problem, None);
    ledger.append_batch(vec![packed(cut)]).unwrap();
    ledger
        .append_batch(vec![Draft::new(
            Some("run-1"),
            Event::Note(Note {
                about_run: None,
                about_seq: None,
                text: "third".into(),
            }),
        )])
        .unwrap();
    let report = ledger.verify_chain().unwrap();
    assert_eq!(report.problem, None);
    let unusable = report.unusable.expect("an unusable entry");
    assert_eq!((unusable.seq, unusable.kind), (2, ProblemKind::Unusable));
    assert!(
        unusable.detail.contains("row images"),
        "{}",
        unusable.detail
    );
    assert_eq!(report.verified, 3, "the chain is verified past it");
    // A change to a later line is still found, the unusable entry with it.
    drop(ledger);
    let journal = dir.path().join("ledger").join("journal.jsonl");
    let text = std::fs::read_to_string(&journal).unwrap();
    std::fs::write(&journal, text.replace("\"third\"", "\"THIRD\"")).unwrap();
    let ledger = Ledger::open(&dir.path().join("ledger"), origin()).unwrap();
    let report = ledger.verify_chain().unwrap();
    let problem = report.problem.expect("the altered line");
    assert_eq!((problem.seq, problem.kind), (3, ProblemKind::Altered));
    assert_eq!(report.unusable.map(|unusable| unusable.seq), Some(2));
}

/// What became of some events — the `Compensated` that undid them, the
/// `DriftFound` about them, the rollbacks' bounds after the first — read
/// the same from the store's indexes and from the journal while another
/// process holds the ledger, and from an index rebuilt at open.
#[test]
fn an_events_aftermath_reads_the_same_from_store_and_journal() {
    use rewind_ledger::{
        Compensated, DriftFound, Outcome, RollbackFinished, RollbackStarted, RollbackTarget, View,
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger");
    let mut ledger = Ledger::init(&path, "ledger-1", origin()).unwrap();
    let note = Event::Note(Note {
        about_run: None,
        about_seq: None,
        text: "n".into(),
    });
    let compensated = |undoes| Event::Compensated(Compensated { undoes });
    let drift = |seq| {
        Event::DriftFound(DriftFound {
            actual: String::new(),
            expected: String::new(),
            seq,
            subject: "t (1): columns a".into(),
        })
    };
    let started = Event::RollbackStarted(RollbackStarted {
        cascade: false,
        skip_drift: true,
        target: RollbackTarget::Run("r".into()),
    });
    let finished = Event::RollbackFinished(RollbackFinished {
        compensated: 1,
        drifted: 1,
        outcome: Outcome::Drifted,
    });
    ledger
        .append_batch(
            [
                note.clone(),    // 1
                started.clone(), // 2: before the first event asked about
                note.clone(),    // 3
                started,         // 4
                drift(3),        // 5
                compensated(1),  // 6
                drift(2),        // 7: about another event
                compensated(3),  // 8
                finished,        // 9
                note,            // 10
            ]
            .into_iter()
            .map(|event| Draft::new(Some("r"), event))
            .collect(),
        )
        .unwrap();
    // A few events are looked up one by one, many in one scan.
    let (few, many) = ([3, 10].into_iter().collect(), (1..=80).collect());
    let seqs = |view: &View| -> Vec<u64> {
        let of = |seqs| -> Vec<u64> {
            view.aftermath(seqs)
                .unwrap()
                .iter()
                .map(|e| e.seq())
                .collect()
        };
        assert_eq!(of(&many), vec![2, 4, 5, 6, 7, 8, 9]);
        of(&few)
    };
    drop(ledger);
    let store = View::open(&path, origin()).unwrap();
    assert!(matches!(store, View::Store(_)));
    assert_eq!(seqs(&store), vec![4, 5, 8, 9]);
    drop(store);
    {
        // A writer holds the ledger: the reader falls back to the journal.
        let _writer = Ledger::open(&path, origin()).unwrap();
        let journal = View::open(&path, origin()).unwrap();
        assert!(matches!(journal, View::Journal(..)), "{journal:?}");
        assert_eq!(seqs(&journal), vec![4, 5, 8, 9]);
    }
    // The index rebuilt from the events answers the same.
    let mut ledger = Ledger::open(&path, origin()).unwrap();
    ledger.reindex().unwrap();
    drop(ledger);
    assert_eq!(
        seqs(&View::open(&path, origin()).unwrap()),
        vec![4, 5, 8, 9]
    );
}
