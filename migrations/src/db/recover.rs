//! Recovery of a database step whose process died: a chunk's images are
//! durable before its transaction commits, so the newest chunks of an
//! unfinished step may never have committed. The rows tell: every row at
//! its after image means the transaction committed, every row at its
//! before image means it never did (the engine rolled it back when the
//! connection died). Anything else is drift. Only reads; the drift check
//! of the inverse ([`Database::check_drift`]) does the comparing.

use rewind_ledger::{Event, RowsChanged, SequenceMoved, SqlValue};

use super::executor::{Bind, Engine};
use super::undo::RowDrift;
use super::{Database, Result};

/// What the rows of a `RowsChanged` show now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkState {
    /// Every row equals its after image: the transaction committed.
    Committed,
    /// Every row equals its before image: the transaction never committed.
    NeverCommitted,
    /// Some rows match neither image (`rows`), or some are at their after
    /// image and others at their before image, which one transaction
    /// cannot leave.
    Drifted {
        rows: Vec<RowDrift>,
        at_after: u64,
        at_before: u64,
    },
}

/// What a sequence shows now, against a `SequenceMoved`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SequenceState {
    /// At its new value, or on PostgreSQL, where a sequence moves whether
    /// or not its transaction commits.
    Moved,
    /// At its old value: the transaction never committed.
    NotMoved,
    /// At another value (`None`: SQLite holds no value for it).
    Drifted(Option<i64>),
}

impl Database {
    /// Whether the transaction of a `RowsChanged` chunk committed, read
    /// from its rows; changes nothing.
    pub fn chunk_state(&mut self, event: &Event) -> Result<ChunkState> {
        let report = self.check_drift(event)?;
        // A row whose images are equal is at its after image either way.
        let unchanged = match event {
            Event::RowsChanged(rows) => unchanged(rows),
            Event::RowsPacked(packed) => unchanged(&super::undo::unpacked(packed)?),
            _ => 0,
        };
        Ok(if !report.drift.is_empty() {
            ChunkState::Drifted {
                rows: report.drift,
                at_after: report.restored,
                at_before: report.already_restored,
            }
        } else if report.already_restored == 0 {
            ChunkState::Committed
        } else if report.restored == unchanged {
            ChunkState::NeverCommitted
        } else {
            ChunkState::Drifted {
                rows: Vec::new(),
                at_after: report.restored,
                at_before: report.already_restored,
            }
        })
    }

    /// Whether the transaction that moved a sequence committed. On SQLite
    /// the sequence is a row of `sqlite_sequence`, inside the transaction;
    /// a PostgreSQL sequence is not transactional, so it moved.
    pub fn sequence_state(&mut self, moved: &SequenceMoved) -> Result<SequenceState> {
        if self.engine() == Engine::Postgres {
            return Ok(SequenceState::Moved);
        }
        let rows = self.query(
            "SELECT seq FROM sqlite_sequence WHERE name = ?1",
            &[Bind::Value(SqlValue::Text(moved.sequence.clone()))],
        )?;
        let value = match rows.first().and_then(|row| row.first()) {
            Some(SqlValue::Integer(value)) => Some(*value),
            _ => None,
        };
        Ok(match value {
            Some(value) if value == moved.new => SequenceState::Moved,
            Some(value) if moved.old_is_called && value == moved.old => SequenceState::NotMoved,
            None if !moved.old_is_called => SequenceState::NotMoved,
            other => SequenceState::Drifted(other),
        })
    }
}

/// How many rows of a chunk the change left as they were.
fn unchanged(rows: &RowsChanged) -> u64 {
    rows.rows
        .iter()
        .filter(|row| row.before == row.after)
        .count() as u64
}
