//! The one serialized schema: every event rewind records, past tense.
//!
//! Stability rules, enforced by the golden fixtures in `tests/golden.rs`:
//! - a variant is never renamed, removed, reordered or given a new meaning;
//!   bincode stores the variant's position, so new variants go at the end;
//! - a field is never added to, removed from or reordered in a stored struct;
//!   a change of shape is a new variant (`FooV2`) and the old one stays;
//! - no `#[serde(tag)]`, `untagged`, `flatten`, `skip_serializing_if` or
//!   `serde_json::Value`: bincode 2 cannot decode them;
//! - no floating-point fields: floats travel as typed strings (see
//!   [`SqlValue::Real`]) so that the canonical JSON never holds a float;
//! - struct fields are declared in sorted order, so that serde's field order
//!   is already the canonical (sorted) key order; `canonical` checks this.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::bytes::{Bytes, Digest};

/// What happened. One variant per kind of fact, each carrying what its
/// inverse and its drift check need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    RunStarted(RunStarted),
    RunFinished(RunFinished),
    StepStarted(StepStarted),
    StepFinished(StepFinished),
    StepFailed(StepFailed),
    BackupTaken(BackupTaken),
    PathMoved(PathMoved),
    ModeChanged(ModeChanged),
    OwnerChanged(OwnerChanged),
    FileWritten(FileWritten),
    PathRemoved(PathRemoved),
    DirCreated(DirCreated),
    RowsChanged(RowsChanged),
    SequenceMoved(SequenceMoved),
    SchemaChanged(SchemaChanged),
    CommandRun(CommandRun),
    CheckRecorded(CheckRecorded),
    RollbackStarted(RollbackStarted),
    Compensated(Compensated),
    RollbackFinished(RollbackFinished),
    DriftFound(DriftFound),
    Note(Note),
    Checkpoint(Checkpoint),
    UndoStarted(UndoStarted),
    NeverHappened(NeverHappened),
    RowsPacked(RowsPacked),
}

/// The name of every kind, in declaration order; `Event::kind` returns one of these.
pub const EVENT_KINDS: &[&str] = &[
    "RunStarted",
    "RunFinished",
    "StepStarted",
    "StepFinished",
    "StepFailed",
    "BackupTaken",
    "PathMoved",
    "ModeChanged",
    "OwnerChanged",
    "FileWritten",
    "PathRemoved",
    "DirCreated",
    "RowsChanged",
    "SequenceMoved",
    "SchemaChanged",
    "CommandRun",
    "CheckRecorded",
    "RollbackStarted",
    "Compensated",
    "RollbackFinished",
    "DriftFound",
    "Note",
    "Checkpoint",
    "UndoStarted",
    "NeverHappened",
    "RowsPacked",
];

/// A migration run began: one spec applied to one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStarted {
    pub description: String,
    pub spec_id: String,
    pub spec_path: String,
    pub spec_sha256: Digest,
    pub spec_text: String,
    pub target: Option<String>,
    pub vars: BTreeMap<String, String>,
}

/// How a run, step or rollback ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Succeeded,
    Failed,
    Interrupted,
    Drifted,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Interrupted => "interrupted",
            Outcome::Drifted => "drifted",
        })
    }
}

/// A run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFinished {
    pub error: Option<String>,
    pub outcome: Outcome,
}

/// The intent of a step, durable before its effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepStarted {
    /// The step's kind as written in the spec (`move`, `update`, …).
    pub kind: String,
    /// The concrete operation planned, in words.
    pub operation: String,
    /// The concrete parameters after variable substitution.
    pub params: BTreeMap<String, String>,
    pub step: u32,
}

/// A step ended well.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepFinished {
    pub step: u32,
    pub summary: String,
}

/// A step ended badly, or was found unfinished after a crash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepFailed {
    pub error: String,
    pub interrupted: bool,
    pub step: u32,
}

/// An archive of a tree was taken and stored in the blob store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupTaken {
    /// Blob holding the archive (tar + zstd).
    pub archive: Digest,
    /// Where a copy of the archive was also written, if asked for.
    pub copy: Option<String>,
    pub file_count: u64,
    /// Blob holding the per-file manifest (one line per entry with sha256).
    pub manifest: Digest,
    pub size: u64,
    pub source: String,
    pub step: u32,
}

/// The type of a filesystem object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileType {
    File,
    Dir,
    Symlink,
    Other,
}

impl fmt::Display for FileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileType::File => "file",
            FileType::Dir => "directory",
            FileType::Symlink => "symlink",
            FileType::Other => "special file",
        })
    }
}

/// A path was moved (renamed, or copied and removed across filesystems).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathMoved {
    pub copied: bool,
    /// Digest of the moved tree (paths, types, modes, contents, link targets).
    pub digest: Digest,
    pub file_type: FileType,
    pub from: String,
    pub step: u32,
    pub to: String,
}

/// A path's permission bits changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeChanged {
    pub new: u32,
    pub old: u32,
    pub path: String,
    pub step: u32,
}

/// A path's owner or group changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerChanged {
    pub new_gid: u32,
    pub new_uid: u32,
    pub old_gid: u32,
    pub old_uid: u32,
    pub path: String,
    pub step: u32,
}

/// A file's content was written; the old content, if any, is in the blob store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileWritten {
    pub mode: u32,
    pub new: Digest,
    pub old: Option<Digest>,
    pub old_mode: Option<u32>,
    pub path: String,
    pub step: u32,
}

/// A path was removed after its content was stashed in the blob store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathRemoved {
    pub digest: Digest,
    pub file_type: FileType,
    pub mode: u32,
    pub path: String,
    /// Blob holding an archive of what was removed.
    pub stash: Digest,
    pub step: u32,
}

/// A directory was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirCreated {
    pub mode: u32,
    pub path: String,
    pub step: u32,
}

/// One value of a row image, lossless.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SqlValue {
    Null,
    Integer(i64),
    /// A floating-point value as the exact bits of an IEEE-754 double, in
    /// hexadecimal (`0x3ff8000000000000` is 1.5), so NaN payloads and -0 survive.
    Real(String),
    Text(String),
    Blob(Bytes),
    /// A PostgreSQL value in its text form; the column's type restores it.
    Typed(String),
}

impl SqlValue {
    /// Its storage class, as SQLite's `typeof` names it (a PostgreSQL
    /// value's text is `text`): what tells apart two values that are
    /// written alike, the integer 20 and the text '20', NULL and 'NULL'.
    pub fn storage_class(&self) -> &'static str {
        match self {
            SqlValue::Null => "null",
            SqlValue::Integer(_) => "integer",
            SqlValue::Real(_) => "real",
            SqlValue::Text(_) | SqlValue::Typed(_) => "text",
            SqlValue::Blob(_) => "blob",
        }
    }

    /// As displayed, with its storage class when `other` is another value
    /// displayed alike.
    pub fn shown_beside(&self, other: Option<&SqlValue>) -> String {
        let text = self.to_string();
        match other {
            Some(other) if other != self && other.to_string() == text => {
                format!("{text} ({})", self.storage_class())
            }
            _ => text,
        }
    }
}

impl fmt::Display for SqlValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqlValue::Null => f.write_str("NULL"),
            SqlValue::Integer(value) => write!(f, "{value}"),
            SqlValue::Real(bits) => match u64::from_str_radix(bits.trim_start_matches("0x"), 16) {
                Ok(bits) => write!(f, "{:?}", f64::from_bits(bits)),
                Err(_) => f.write_str(bits),
            },
            SqlValue::Text(text) | SqlValue::Typed(text) => f.write_str(text),
            SqlValue::Blob(bytes) => write!(f, "x'{}'", hex::encode(bytes.as_slice())),
        }
    }
}

/// A column of a table whose rows were captured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    /// The declared type (`integer`, `numeric(10,2)`, `timestamptz`, …).
    pub sql_type: String,
}

/// The before and after images of one row. `before = None` means the row
/// was inserted; `after = None` means it was deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowImage {
    pub after: Option<Vec<SqlValue>>,
    pub before: Option<Vec<SqlValue>>,
    pub key: Vec<SqlValue>,
}

/// A chunk of rows of one table changed in one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowsChanged {
    pub chunk: u32,
    /// The columns the images hold, in order.
    pub columns: Vec<Column>,
    /// The database, with any password removed.
    pub database: String,
    pub key_columns: Vec<String>,
    pub rows: Vec<RowImage>,
    pub step: u32,
    pub table: String,
}

/// A chunk of rows of one table changed in one transaction, as
/// [`RowsChanged`] records it, with the images packed into one binary
/// value ([`crate::packed`]) that the capture writes straight from the
/// database's values: a thousand JSON objects less to build, hash and
/// store per chunk. [`RowsPacked::unpack`] gives the `RowsChanged`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowsPacked {
    pub chunk: u32,
    /// The columns the images hold, in order.
    pub columns: Vec<Column>,
    /// The database, with any password removed.
    pub database: String,
    /// The rows' images in the packed format.
    pub images: Bytes,
    pub key_columns: Vec<String>,
    /// How many rows the images hold.
    pub rows: u32,
    pub step: u32,
    pub table: String,
}

/// A database sequence was advanced by a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceMoved {
    pub database: String,
    pub new: i64,
    pub old: i64,
    pub old_is_called: bool,
    pub sequence: String,
    pub step: u32,
}

/// A schema statement ran, with its declared inverse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaChanged {
    pub database: String,
    pub down: Option<String>,
    pub irreversible: bool,
    pub step: u32,
    pub up: String,
}

/// A command ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRun {
    pub argv: Vec<String>,
    pub exit_code: Option<i32>,
    /// Blob holding the combined output.
    pub output: Digest,
    pub step: u32,
    pub timed_out: bool,
    pub undo: Option<Vec<String>>,
}

/// A check was evaluated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRecorded {
    pub actual: String,
    pub check: String,
    pub expected: String,
    pub passed: bool,
    pub step: u32,
}

/// What a rollback undoes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RollbackTarget {
    Run(String),
    Step(String, u32),
    After(u64),
}

impl fmt::Display for RollbackTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RollbackTarget::Run(run) => write!(f, "run {run}"),
            RollbackTarget::Step(run, step) => write!(f, "step {run}:{step}"),
            RollbackTarget::After(seq) => write!(f, "everything after seq {seq}"),
        }
    }
}

/// A rollback began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackStarted {
    pub cascade: bool,
    pub skip_drift: bool,
    pub target: RollbackTarget,
}

/// The inverse of the event at `undoes` was applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compensated {
    pub undoes: u64,
}

/// A rollback ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackFinished {
    pub compensated: u64,
    pub drifted: u64,
    pub outcome: Outcome,
}

/// The world no longer matched what the event at `seq` left behind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftFound {
    pub actual: String,
    pub expected: String,
    pub seq: u64,
    pub subject: String,
}

/// Free text by a person, attached to a seq or a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    pub about_run: Option<String>,
    pub about_seq: Option<u64>,
    pub text: String,
}

/// A signed statement of the head of the chain, to be kept elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub head: Digest,
    pub public_key: Bytes,
    pub seq: u64,
    pub signature: Bytes,
}

/// The inverse of the event at `undoes` is about to run, and the world
/// will not show whether it ran: an `exec` step's undo command. Durable
/// before the command starts; a `Compensated` for the same seq says that
/// it finished. Without one, the undo is in doubt (the rollback was killed
/// or the command failed), and no rollback runs it again unless told to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UndoStarted {
    pub undoes: u64,
}

/// Recovery found that the effect of the event at `seq` never took place:
/// its event was made durable ahead of it (a file effect, or a database
/// chunk before its commit) by a process that died before the effect
/// happened, and the world is as it was before it. No rollback undoes it
/// and status does not count it as an effect. It names the paths and rows
/// of the event at `seq`, so that `history` of a path or a row shows it
/// next to that event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeverHappened {
    /// What recovery found in the world, in words.
    pub found: String,
    /// The keys of the rows of a `RowsChanged` (empty for a file event).
    pub keys: Vec<Vec<SqlValue>>,
    /// The paths of a file event (empty for a database event).
    pub paths: Vec<String>,
    pub seq: u64,
    /// The table of a `RowsChanged`.
    pub table: Option<String>,
}

impl NeverHappened {
    /// The record that the effect of `event`, stored at `seq`, never
    /// happened, naming what `event` names.
    pub fn of(seq: u64, event: &Event, found: String) -> NeverHappened {
        let (table, keys) = match event {
            Event::RowsChanged(e) => (
                Some(e.table.clone()),
                e.rows.iter().map(|row| row.key.clone()).collect(),
            ),
            Event::RowsPacked(e) => (
                Some(e.table.clone()),
                crate::packed::keys(e).unwrap_or_default(),
            ),
            _ => (None, Vec::new()),
        };
        let paths = event
            .subjects()
            .into_iter()
            .filter_map(|subject| match subject {
                Subject::Path(path) => Some(path),
                Subject::Row(..) => None,
            })
            .collect();
        NeverHappened {
            found,
            keys,
            paths,
            seq,
            table,
        }
    }
}

/// A key under which an event is found by `history`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Subject {
    Path(String),
    /// Table and the row's key rendered as text, comma-separated.
    Row(String, String),
}

/// Renders a row key as `history --key` accepts it: values joined by
/// commas, a comma or backslash inside a text value escaped with a
/// backslash (`Smith\, Jo,3` is the key `('Smith, Jo', 3)`), so that two
/// keys whose columns hold values of one type each never render alike. (In
/// a SQLite column without a type, the integer 1 and the text '1' still
/// render alike: the history of one shows the other's events too.)
pub fn render_key(key: &[SqlValue]) -> String {
    let mut rendered = String::new();
    render_key_into(&mut rendered, key);
    rendered
}

/// [`render_key`], appended to `out`.
pub fn render_key_into(out: &mut String, key: &[SqlValue]) {
    use std::fmt::Write as _;
    for (index, value) in key.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        match value {
            SqlValue::Integer(value) => out.push_str(itoa::Buffer::new().format(*value)),
            SqlValue::Text(text) | SqlValue::Typed(text) => {
                for c in text.chars() {
                    if c == ',' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
            }
            other => write!(out, "{other}").expect("writing to a String"),
        }
    }
}

impl Event {
    /// The seq of the event this one tells what became of: the event a
    /// `Compensated` undid, or the one a `DriftFound` found changed since.
    pub fn about(&self) -> Option<u64> {
        match self {
            Event::Compensated(compensated) => Some(compensated.undoes),
            Event::DriftFound(drift) => Some(drift.seq),
            _ => None,
        }
    }

    /// The rows of a `RowsChanged` or a `RowsPacked` (unpacked), or `None`
    /// for any other kind.
    pub fn rows_changed(&self) -> Option<Result<Cow<'_, RowsChanged>, String>> {
        match self {
            Event::RowsChanged(rows) => Some(Ok(Cow::Borrowed(rows))),
            Event::RowsPacked(packed) => Some(packed.unpack().map(Cow::Owned)),
            _ => None,
        }
    }

    /// The variant's name, as in [`EVENT_KINDS`].
    pub fn kind(&self) -> &'static str {
        match self {
            Event::RunStarted(_) => "RunStarted",
            Event::RunFinished(_) => "RunFinished",
            Event::StepStarted(_) => "StepStarted",
            Event::StepFinished(_) => "StepFinished",
            Event::StepFailed(_) => "StepFailed",
            Event::BackupTaken(_) => "BackupTaken",
            Event::PathMoved(_) => "PathMoved",
            Event::ModeChanged(_) => "ModeChanged",
            Event::OwnerChanged(_) => "OwnerChanged",
            Event::FileWritten(_) => "FileWritten",
            Event::PathRemoved(_) => "PathRemoved",
            Event::DirCreated(_) => "DirCreated",
            Event::RowsChanged(_) => "RowsChanged",
            Event::SequenceMoved(_) => "SequenceMoved",
            Event::SchemaChanged(_) => "SchemaChanged",
            Event::CommandRun(_) => "CommandRun",
            Event::CheckRecorded(_) => "CheckRecorded",
            Event::RollbackStarted(_) => "RollbackStarted",
            Event::Compensated(_) => "Compensated",
            Event::RollbackFinished(_) => "RollbackFinished",
            Event::DriftFound(_) => "DriftFound",
            Event::Note(_) => "Note",
            Event::Checkpoint(_) => "Checkpoint",
            Event::UndoStarted(_) => "UndoStarted",
            Event::NeverHappened(_) => "NeverHappened",
            Event::RowsPacked(_) => "RowsPacked",
        }
    }

    /// The step of its run this event belongs to, if any.
    pub fn step(&self) -> Option<u32> {
        match self {
            Event::StepStarted(e) => Some(e.step),
            Event::StepFinished(e) => Some(e.step),
            Event::StepFailed(e) => Some(e.step),
            Event::BackupTaken(e) => Some(e.step),
            Event::PathMoved(e) => Some(e.step),
            Event::ModeChanged(e) => Some(e.step),
            Event::OwnerChanged(e) => Some(e.step),
            Event::FileWritten(e) => Some(e.step),
            Event::PathRemoved(e) => Some(e.step),
            Event::DirCreated(e) => Some(e.step),
            Event::RowsChanged(e) => Some(e.step),
            Event::RowsPacked(e) => Some(e.step),
            Event::SequenceMoved(e) => Some(e.step),
            Event::SchemaChanged(e) => Some(e.step),
            Event::CommandRun(e) => Some(e.step),
            Event::CheckRecorded(e) => Some(e.step),
            Event::RunStarted(_)
            | Event::RunFinished(_)
            | Event::RollbackStarted(_)
            | Event::Compensated(_)
            | Event::RollbackFinished(_)
            | Event::DriftFound(_)
            | Event::Note(_)
            | Event::Checkpoint(_)
            | Event::UndoStarted(_)
            | Event::NeverHappened(_) => None,
        }
    }

    /// The paths and rows this event touched, for the history indexes and
    /// for dependency-aware rollback.
    pub fn subjects(&self) -> Vec<Subject> {
        match self {
            Event::BackupTaken(e) => vec![Subject::Path(e.source.clone())],
            Event::PathMoved(e) => vec![Subject::Path(e.from.clone()), Subject::Path(e.to.clone())],
            Event::ModeChanged(e) => vec![Subject::Path(e.path.clone())],
            Event::OwnerChanged(e) => vec![Subject::Path(e.path.clone())],
            Event::FileWritten(e) => vec![Subject::Path(e.path.clone())],
            Event::PathRemoved(e) => vec![Subject::Path(e.path.clone())],
            Event::DirCreated(e) => vec![Subject::Path(e.path.clone())],
            Event::RowsChanged(e) => e
                .rows
                .iter()
                .map(|row| Subject::Row(e.table.clone(), render_key(&row.key)))
                .collect(),
            // Images that do not unpack name no rows: their rollback (and
            // `rewind show`) says why.
            Event::RowsPacked(e) => crate::packed::keys(e)
                .map(|keys| {
                    keys.iter()
                        .map(|key| Subject::Row(e.table.clone(), render_key(key)))
                        .collect()
                })
                .unwrap_or_default(),
            Event::NeverHappened(e) => e
                .paths
                .iter()
                .map(|path| Subject::Path(path.clone()))
                .chain(e.table.iter().flat_map(|table| {
                    e.keys
                        .iter()
                        .map(|key| Subject::Row(table.clone(), render_key(key)))
                }))
                .collect(),
            Event::RunStarted(_)
            | Event::RunFinished(_)
            | Event::StepStarted(_)
            | Event::StepFinished(_)
            | Event::StepFailed(_)
            | Event::SequenceMoved(_)
            | Event::SchemaChanged(_)
            | Event::CommandRun(_)
            | Event::CheckRecorded(_)
            | Event::RollbackStarted(_)
            | Event::Compensated(_)
            | Event::RollbackFinished(_)
            | Event::DriftFound(_)
            | Event::Note(_)
            | Event::Checkpoint(_)
            | Event::UndoStarted(_) => Vec::new(),
        }
    }
}
