//! Recovery's reading of a database after a crash: a chunk whose images
//! were recorded and whose transaction never committed (the recorder
//! fails, so the transaction is rolled back, as the engine does when the
//! process dies) shows every row at its before image; a committed chunk
//! every row at its after image; anything else is drift. The same for the
//! SQLite sequence an insert advanced.

mod db_common;

use std::collections::BTreeMap;

use db_common::SqliteFile;
use rewind_ledger::{Event, SqlValue};
use rewind_migrations::db::{ChunkState, Database, Insert, InsertSource, SequenceState, Update};

fn things() -> (SqliteFile, Database) {
    let file = SqliteFile::new();
    let mut database = file.connect();
    database
        .execute_script(
            "CREATE TABLE things (id INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER NOT NULL, same TEXT);
             INSERT INTO things (n, same) VALUES (0, 'a'), (2, 'b'), (3, 'c');",
        )
        .unwrap();
    (file, database)
}

fn update() -> Update {
    Update {
        step: 1,
        table: "things".into(),
        key: None,
        filter: None,
        // The row with n = 0 keeps its value: its images are equal, and
        // the other rows still tell which image the chunk is at.
        set: BTreeMap::from([("n".to_owned(), "n * 10".to_owned())]),
        chunk_size: Some(100),
    }
}

/// Runs `work` with a recorder that keeps the events and, with `commit`
/// false, then fails, so the transaction never commits.
fn recorded(
    commit: bool,
    work: impl FnOnce(&mut dyn rewind_migrations::db::Recorder),
) -> Vec<Event> {
    let mut events = Vec::new();
    let mut recorder = |batch: Vec<Event>| -> Result<(), std::io::Error> {
        events.extend(batch);
        if commit {
            Ok(())
        } else {
            Err(std::io::Error::other("the process died here"))
        }
    };
    work(&mut recorder);
    events
}

#[test]
fn a_chunk_that_never_committed_shows_its_before_images() {
    let (_file, mut database) = things();
    let events = recorded(false, |recorder| {
        database.update(&update(), recorder).unwrap_err();
    });
    let [chunk @ (Event::RowsChanged(_) | Event::RowsPacked(_))] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(
        database.chunk_state(chunk).unwrap(),
        ChunkState::NeverCommitted
    );
}

#[test]
fn a_committed_chunk_shows_its_after_images_and_a_changed_row_is_drift() {
    let (_file, mut database) = things();
    let events = recorded(true, |recorder| {
        database.update(&update(), recorder).unwrap();
    });
    let chunk = &events[0];
    assert_eq!(database.chunk_state(chunk).unwrap(), ChunkState::Committed);
    // One row back at its before image: one transaction cannot leave that.
    database
        .execute_script("UPDATE things SET n = 2 WHERE id = 2")
        .unwrap();
    assert_eq!(
        database.chunk_state(chunk).unwrap(),
        ChunkState::Drifted {
            rows: Vec::new(),
            at_after: 2,
            at_before: 1
        }
    );
    // One row at neither image.
    database
        .execute_script("UPDATE things SET n = 7 WHERE id = 2")
        .unwrap();
    match database.chunk_state(chunk).unwrap() {
        ChunkState::Drifted { rows, .. } => {
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0].key, vec![SqlValue::Integer(2)]);
            assert_eq!(rows[0].columns, vec!["n".to_owned()]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_sqlite_sequence_of_an_insert_moves_only_with_its_commit() {
    let insert = Insert {
        step: 1,
        table: "things".into(),
        key: None,
        source: InsertSource::Select("SELECT 4 AS n, 'd' AS same".into()),
        chunk_size: Some(100),
    };
    for commit in [false, true] {
        let (_file, mut database) = things();
        let events = recorded(commit, |recorder| {
            let result = database.insert(&insert, recorder);
            assert_eq!(result.is_ok(), commit, "{result:?}");
        });
        let moved = events
            .iter()
            .find_map(|event| match event {
                Event::SequenceMoved(moved) => Some(moved.clone()),
                _ => None,
            })
            .expect("the insert advanced the sequence");
        let expected = if commit {
            SequenceState::Moved
        } else {
            SequenceState::NotMoved
        };
        assert_eq!(database.sequence_state(&moved).unwrap(), expected);
        database
            .execute_script("UPDATE sqlite_sequence SET seq = 99 WHERE name = 'things'")
            .unwrap();
        assert_eq!(
            database.sequence_state(&moved).unwrap(),
            SequenceState::Drifted(Some(99))
        );
    }
}
