//! History queries: which entries match the filters an incident reviewer
//! gives, and what a row looked like before and after.

use std::collections::BTreeSet;

use rewind_ledger::{DriftFound, Entry, Event, Selector, SqlValue, Subject, render_key};
use serde::Serialize;

/// A history query: the index-backed selector plus what only a scan can check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub selector: Selector,
    /// An event kind name, as in `rewind_ledger::EVENT_KINDS`.
    pub kind: Option<String>,
    /// Keep only the newest N matches.
    pub limit: Option<usize>,
}

/// Whether an entry matches every filter of the query. `target_runs` are the
/// runs started for the query's target, if it names one.
pub fn matches(query: &Query, entry: &Entry, target_runs: &[String]) -> bool {
    let record = &entry.record;
    let selector = &query.selector;
    if let Some(run) = &selector.run
        && record.run.as_deref() != Some(run.as_str())
    {
        return false;
    }
    if selector.target.is_some()
        && !record
            .run
            .as_ref()
            .is_some_and(|run| target_runs.contains(run))
    {
        return false;
    }
    if selector
        .since
        .is_some_and(|since| record.recorded_at < since)
    {
        return false;
    }
    if selector
        .until
        .is_some_and(|until| record.recorded_at > until)
    {
        return false;
    }
    if let Some(kind) = &query.kind
        && record.event.kind() != kind
    {
        return false;
    }
    if selector.path.is_none() && selector.table.is_none() {
        return true;
    }
    let subjects = record.event.subjects();
    if let Some(path) = &selector.path {
        let path = path.trim_end_matches('/');
        let below = format!("{path}/");
        let touches = subjects.iter().any(|subject| match subject {
            Subject::Path(p) => {
                let p = p.trim_end_matches('/');
                p == path || p.starts_with(&below)
            }
            Subject::Row(..) => false,
        });
        if !touches {
            return false;
        }
    }
    if let Some(table) = &selector.table {
        let touches = subjects.iter().any(|subject| match subject {
            Subject::Row(t, k) => t == table && selector.key.as_ref().is_none_or(|key| key == k),
            Subject::Path(_) => false,
        });
        if !touches {
            return false;
        }
    }
    true
}

/// Filters candidates exactly and applies the limit (keeping the newest).
pub fn filter(query: &Query, candidates: Vec<Entry>, target_runs: &[String]) -> Vec<Entry> {
    let mut kept: Vec<Entry> = candidates
        .into_iter()
        .filter(|entry| matches(query, entry, target_runs))
        .collect();
    keep_newest(&mut kept, query.limit);
    kept
}

/// Keeps the newest `limit` entries, if a limit is given.
fn keep_newest(entries: &mut Vec<Entry>, limit: Option<usize>) {
    if let Some(limit) = limit
        && entries.len() > limit
    {
        entries.drain(..entries.len() - limit);
    }
}

/// The event kinds that tell what became of a row event, and the
/// rollbacks' bounds that say which rollback recorded them: the entries
/// [`with_aftermath`] reads.
pub const AFTERMATH_KINDS: &[&str] = &[
    "Compensated",
    "DriftFound",
    "RollbackStarted",
    "RollbackFinished",
];

/// A row's history (`query` names a table, and maybe a key): the row's
/// events, found whatever `--kind`, `--since` or `--until` ask (what
/// became of them names no row, and the rollback of a change before
/// `--since` may fall after it), with what became of them
/// ([`with_aftermath`]); then every filter of `query` but the row's own,
/// on the whole.
///
/// `select` gives the candidates for a selector (narrowed by an index or
/// not: [`filter`] checks them); `aftermath` the entries of
/// [`AFTERMATH_KINDS`] about a set of row events (`View::aftermath`), asked
/// only when `--kind` leaves any of them.
pub fn row_history<E>(
    query: &Query,
    table: &str,
    target_runs: &[String],
    select: impl FnOnce(&Selector) -> Result<Vec<Entry>, E>,
    aftermath: impl FnOnce(&BTreeSet<u64>) -> Result<Vec<Entry>, E>,
) -> Result<Vec<Entry>, E> {
    let rows = Query {
        selector: Selector {
            since: None,
            until: None,
            ..query.selector.clone()
        },
        kind: None,
        limit: None,
    };
    let found = filter(&rows, select(&rows.selector)?, target_runs);
    let wants_aftermath = query
        .kind
        .as_deref()
        .is_none_or(|kind| AFTERMATH_KINDS.contains(&kind));
    let later = if wants_aftermath {
        aftermath(&found.iter().map(Entry::seq).collect())?
    } else {
        Vec::new()
    };
    let merged = with_aftermath(found, later, table, query.selector.key.as_deref());
    let scope = Query {
        selector: Selector {
            path: None,
            table: None,
            key: None,
            ..query.selector.clone()
        },
        ..query.clone()
    };
    Ok(filter(&scope, merged, target_runs))
}

/// The key of a row's drift on `table`: a row's `DriftFound` subject is
/// `table (key): columns …`. `None` for any other drift (a path, a chunk
/// found uncommitted by `recover`).
fn drifted_key<'a>(drift: &'a DriftFound, table: &str) -> Option<&'a str> {
    let rest = drift.subject.strip_prefix(table)?.strip_prefix(" (")?;
    rest.find("): columns ").map(|end| &rest[..end])
}

/// Adds to the row events `found` of `table` (and `key`) the events that
/// tell what became of them, in seq order:
///
/// - the `Compensated` of the rollback that put a row event's before
///   images back;
/// - the `DriftFound` of a rollback (or of `recover`) that met the row
///   changed since and left it; for a `key`, that row's only;
/// - for a `key`, one `DriftFound` of another row of the same event from
///   each rollback that skipped drift (`--on-drift skip`) and met none in
///   this row: that rollback put back every row of the event but the
///   drifted ones, this one with them, and left the event uncompensated
///   ([`restored_beside`]).
///
/// `later` are entries of [`AFTERMATH_KINDS`]: at least the
/// `Compensated` and `DriftFound` about the events of `found`, and every
/// rollback's bounds after the first of them, in any order
/// (`View::aftermath`). A rollback is told by its `RollbackStarted` up to
/// its `RollbackFinished` (or the next rollback's start, after a crash),
/// whatever run either is recorded under.
pub fn with_aftermath(
    found: Vec<Entry>,
    later: Vec<Entry>,
    table: &str,
    key: Option<&str>,
) -> Vec<Entry> {
    let seqs: BTreeSet<u64> = found.iter().map(Entry::seq).collect();
    // Where each rollback starts (with whether it skips drift) and ends.
    let mut bounds: Vec<(u64, Option<bool>)> = later
        .iter()
        .filter_map(|entry| match &entry.record.event {
            Event::RollbackStarted(started) => Some((entry.seq(), Some(started.skip_drift))),
            Event::RollbackFinished(_) => Some((entry.seq(), None)),
            _ => None,
        })
        .collect();
    bounds.sort_unstable();
    // The first seq of the rollback that skipped drift and recorded `seq`.
    let skipping = |seq: u64| -> Option<u64> {
        let before = bounds.partition_point(|(bound, _)| *bound < seq);
        match bounds.get(before.checked_sub(1)?)? {
            (started, Some(true)) => Some(*started),
            _ => None,
        }
    };
    // The rollbacks (by their first seq) that met this row's drift in an event.
    let mut own: BTreeSet<(u64, u64)> = BTreeSet::new();
    if let Some(key) = key {
        for entry in &later {
            if let Event::DriftFound(drift) = &entry.record.event
                && seqs.contains(&drift.seq)
                && drifted_key(drift, table) == Some(key)
                && let Some(rollback) = skipping(entry.seq())
            {
                own.insert((rollback, drift.seq));
            }
        }
    }
    let mut beside: BTreeSet<(u64, u64)> = BTreeSet::new();
    let mut all = found;
    for entry in later {
        let keep = match &entry.record.event {
            Event::Compensated(compensated) => seqs.contains(&compensated.undoes),
            Event::DriftFound(drift) if seqs.contains(&drift.seq) => match key {
                None => true,
                Some(key) => match drifted_key(drift, table) {
                    Some(drifted) if drifted == key => true,
                    Some(_) => skipping(entry.seq()).is_some_and(|rollback| {
                        let at = (rollback, drift.seq);
                        !own.contains(&at) && beside.insert(at)
                    }),
                    None => false,
                },
            },
            _ => false,
        };
        if keep {
            all.push(entry);
        }
    }
    all.sort_by_key(Entry::seq);
    all.dedup_by_key(|entry| entry.seq());
    all
}

/// Whether `entry`, of a row's history ([`with_aftermath`]), is the drift
/// of another row of the same event, which a rollback skipped while it
/// restored this row (`table`, `key`).
pub fn restored_beside(entry: &Entry, table: &str, key: Option<&str>) -> bool {
    match (&entry.record.event, key) {
        (Event::DriftFound(drift), Some(key)) => {
            drifted_key(drift, table).is_some_and(|drifted| drifted != key)
        }
        _ => false,
    }
}

/// One column of one row, before and after an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ColumnChange {
    pub column: String,
    /// `None` when the row did not exist before (inserted).
    pub before: Option<String>,
    /// `None` when the row does not exist after (deleted).
    pub after: Option<String>,
}

/// The columns of the row with `key` in a `RowsChanged` event, side by side,
/// changed columns only (all columns for an insert or delete).
pub fn row_changes(event: &Event, table: &str, key: &str) -> Vec<ColumnChange> {
    let Some(Ok(rows)) = event.rows_changed() else {
        return Vec::new();
    };
    if rows.table != table {
        return Vec::new();
    }
    let Some(row) = rows.rows.iter().find(|row| render_key(&row.key) == key) else {
        return Vec::new();
    };
    fn value(image: &Option<Vec<SqlValue>>, index: usize) -> Option<Option<&SqlValue>> {
        image.as_ref().map(|values| values.get(index))
    }
    // Compared as values, shown as text: a NULL that became the text
    // 'NULL' is a change, shown with the storage classes.
    let shown = |value: Option<Option<&SqlValue>>, other: Option<Option<&SqlValue>>| {
        value.map(|value| {
            value
                .map(|value| value.shown_beside(other.flatten()))
                .unwrap_or_default()
        })
    };
    rows.columns
        .iter()
        .enumerate()
        .filter_map(|(index, column)| {
            let (before, after) = (value(&row.before, index), value(&row.after, index));
            (before != after || before.is_none() || after.is_none()).then(|| ColumnChange {
                column: column.name.clone(),
                before: shown(before, after),
                after: shown(after, before),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use rewind_ledger::{
        Compensated, Outcome, RollbackFinished, RollbackStarted, RollbackTarget, RowsChanged,
    };

    use super::*;
    use crate::inverse::tests::entry;

    fn rows_event() -> Event {
        Event::RowsChanged(RowsChanged {
            chunk: 0,
            columns: Vec::new(),
            database: "sqlite://x.db".into(),
            key_columns: vec!["id".into()],
            rows: Vec::new(),
            step: 1,
            table: "t".into(),
        })
    }

    fn started(skip_drift: bool) -> Event {
        Event::RollbackStarted(RollbackStarted {
            cascade: false,
            skip_drift,
            target: RollbackTarget::Run("r1".into()),
        })
    }

    fn finished() -> Event {
        Event::RollbackFinished(RollbackFinished {
            compensated: 0,
            drifted: 1,
            outcome: Outcome::Drifted,
        })
    }

    fn drift(of: u64, subject: &str) -> Event {
        Event::DriftFound(DriftFound {
            actual: String::new(),
            expected: String::new(),
            seq: of,
            subject: subject.into(),
        })
    }

    fn seqs(found: &[Entry], later: &[Entry], key: Option<&str>) -> Vec<u64> {
        with_aftermath(found.to_vec(), later.to_vec(), "t", key)
            .iter()
            .map(Entry::seq)
            .collect()
    }

    /// Which rollback recorded a drift is told by the rollbacks' bounds in
    /// seq order, whatever order the kinds were read in, and a rollback
    /// that never finished ends where the next one starts.
    #[test]
    fn a_drift_belongs_to_the_rollback_around_it() {
        let found = vec![entry(2, Some("r1"), rows_event())];
        let later = vec![
            // In no particular order.
            entry(4, Some("r1"), drift(2, "t (1): columns a")),
            entry(8, Some("r1"), drift(2, "t (1): columns a")),
            entry(11, Some("r1"), drift(2, "t (1): columns a")),
            // `recover` closes the rollback that never finished, then
            // records drift of its own: a row's, and a chunk's.
            entry(12, None, finished()),
            entry(13, Some("r1"), drift(2, "t (1): columns a")),
            entry(16, Some("r1"), drift(2, "t (chunk 0): rows")),
            entry(3, None, started(true)),
            entry(7, None, started(false)),
            entry(10, None, started(true)),
            entry(5, None, finished()),
            entry(9, None, finished()),
            entry(
                14,
                Some("r1"),
                Event::Compensated(Compensated { undoes: 2 }),
            ),
            entry(
                15,
                Some("r1"),
                Event::Compensated(Compensated { undoes: 6 }),
            ),
        ];
        // Row 2 was restored beside row 1 by the skipping rollbacks at 3 and
        // 10, not by `recover` (13, after the bound at 12).
        assert_eq!(seqs(&found, &later, Some("2")), vec![2, 4, 11, 14]);
        assert!(restored_beside(&later[0], "t", Some("2")));
        // Row 1's own drift, each time, and none of it a restore.
        assert_eq!(seqs(&found, &later, Some("1")), vec![2, 4, 8, 11, 13, 14]);
        assert!(!restored_beside(&later[0], "t", Some("1")));
        // The table: every drift of its events.
        assert_eq!(seqs(&found, &later, None), vec![2, 4, 8, 11, 13, 14, 16]);
        // Another table's drift with a name that starts alike is not this
        // table's.
        assert_eq!(
            drifted_key(
                &DriftFound {
                    actual: String::new(),
                    expected: String::new(),
                    seq: 2,
                    subject: "tt (1): columns a".into(),
                },
                "t"
            ),
            None
        );
    }

    /// A skipping rollback's drift ends at its `RollbackFinished`: drift
    /// recorded later (by `recover`, of a chunk a later run left open) is
    /// not that rollback's, and restored nothing.
    #[test]
    fn a_rollback_ends_at_its_finish() {
        let found = vec![entry(6, Some("r2"), rows_event())];
        let later = vec![
            entry(3, None, started(true)),
            entry(5, None, finished()),
            entry(8, Some("r2"), drift(6, "t (1): columns a")),
        ];
        assert_eq!(seqs(&found, &later, Some("2")), vec![6]);
        assert_eq!(seqs(&found, &later, Some("1")), vec![6, 8]);
    }

    /// A rollback that met this row's own drift restored nothing of it,
    /// whatever other rows of the event it also skipped; it is said once
    /// for a row restored beside several drifted ones.
    #[test]
    fn a_drifted_row_is_not_restored_beside_its_neighbours() {
        let found = vec![entry(2, Some("r1"), rows_event())];
        let later = vec![
            entry(3, None, started(true)),
            entry(4, Some("r1"), drift(2, "t (1): columns a")),
            entry(5, Some("r1"), drift(2, "t (2): columns a")),
            entry(6, Some("r1"), drift(2, "t (3): columns a")),
            entry(7, None, finished()),
        ];
        assert_eq!(seqs(&found, &later, Some("2")), vec![2, 5]);
        assert_eq!(seqs(&found, &later, Some("4")), vec![2, 4]);
    }

    /// A change between values written alike is a change, shown with the
    /// storage classes; a column that kept its value is left out.
    #[test]
    fn a_row_change_between_values_written_alike_shows_their_storage_classes() {
        use rewind_ledger::{Column, RowImage};
        let column = |name: &str| Column {
            name: name.into(),
            sql_type: String::new(),
        };
        let event = Event::RowsChanged(RowsChanged {
            columns: vec![column("id"), column("n"), column("s"), column("v")],
            rows: vec![RowImage {
                key: vec![SqlValue::Integer(1)],
                before: Some(vec![
                    SqlValue::Integer(1),
                    SqlValue::Integer(20),
                    SqlValue::Null,
                    SqlValue::Integer(3),
                ]),
                after: Some(vec![
                    SqlValue::Integer(1),
                    SqlValue::Text("20".into()),
                    SqlValue::Text("NULL".into()),
                    SqlValue::Integer(3),
                ]),
            }],
            ..match rows_event() {
                Event::RowsChanged(rows) => rows,
                _ => unreachable!(),
            }
        });
        let shown: Vec<(String, Option<String>, Option<String>)> = row_changes(&event, "t", "1")
            .into_iter()
            .map(|change| (change.column, change.before, change.after))
            .collect();
        let some = |text: &str| Some(text.to_owned());
        assert_eq!(
            shown,
            [
                ("n".to_owned(), some("20 (integer)"), some("20 (text)")),
                ("s".to_owned(), some("NULL (null)"), some("NULL (text)")),
            ]
        );
    }
}
