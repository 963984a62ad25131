//! History queries: which entries match the filters an incident reviewer
//! gives, and what a row looked like before and after.

use rewind_ledger::{Entry, Event, Selector, SqlValue, Subject, render_key};
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
pub fn keep_newest(entries: &mut Vec<Entry>, limit: Option<usize>) {
    if let Some(limit) = limit
        && entries.len() > limit
    {
        entries.drain(..entries.len() - limit);
    }
}

/// The event kinds that tell what became of a row event: a rollback's
/// [`with_aftermath`].
pub const AFTERMATH_KINDS: &[&str] = &["Compensated", "DriftFound", "RollbackStarted"];

/// Adds to the row events `found` of `table` (and `key`) the events that
/// tell what became of them, in seq order:
///
/// - the `Compensated` of the rollback that put a row event's before
///   images back;
/// - the `DriftFound` of a rollback that met the row changed since and
///   left it;
/// - for a `key`, the `DriftFound` of another row of the same event in a
///   rollback that skipped drift (`--on-drift skip`): that rollback
///   restored every row of the event but the drifted ones, this one with
///   them, and the event stays uncompensated ([`restored_beside`]).
///
/// `later` are entries of [`AFTERMATH_KINDS`]; the others are left out.
pub fn with_aftermath(
    found: Vec<Entry>,
    later: Vec<Entry>,
    table: &str,
    key: Option<&str>,
) -> Vec<Entry> {
    let seqs: std::collections::BTreeSet<u64> = found.iter().map(Entry::seq).collect();
    // Rollbacks never interleave (one holds the ledger at a time): a
    // rollback's drift is recorded after its `RollbackStarted`, before the
    // next one's.
    let skipping: Vec<(u64, bool)> = later
        .iter()
        .filter_map(|entry| match &entry.record.event {
            Event::RollbackStarted(started) => Some((entry.seq(), started.skip_drift)),
            _ => None,
        })
        .collect();
    let skipped = |seq: u64| {
        skipping
            .iter()
            .rev()
            .find(|(started, _)| *started < seq)
            .is_some_and(|(_, skip)| *skip)
    };
    let mut all = found;
    all.extend(later.into_iter().filter(|entry| match &entry.record.event {
        Event::Compensated(compensated) => seqs.contains(&compensated.undoes),
        Event::DriftFound(drift) => {
            seqs.contains(&drift.seq)
                && (!restored_beside(entry, table, key) || skipped(entry.seq()))
        }
        _ => false,
    }));
    all.sort_by_key(Entry::seq);
    all.dedup_by_key(|entry| entry.seq());
    all
}

/// Whether `entry`, of a row's history ([`with_aftermath`]), is the drift
/// of another row of the same event, which a rollback skipped while it
/// restored this row (`table`, `key`).
pub fn restored_beside(entry: &Entry, table: &str, key: Option<&str>) -> bool {
    match (&entry.record.event, key) {
        // A row's drift is recorded as `table (key): columns …`.
        (Event::DriftFound(drift), Some(key)) => {
            !drift.subject.starts_with(&format!("{table} ({key}): "))
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
    let value = |image: &Option<Vec<SqlValue>>, index: usize| {
        image.as_ref().map(|values| {
            values
                .get(index)
                .map(ToString::to_string)
                .unwrap_or_default()
        })
    };
    rows.columns
        .iter()
        .enumerate()
        .map(|(index, column)| ColumnChange {
            column: column.name.clone(),
            before: value(&row.before, index),
            after: value(&row.after, index),
        })
        .filter(|change| {
            change.before != change.after || change.before.is_none() || change.after.is_none()
        })
        .collect()
}
