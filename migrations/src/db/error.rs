//! Typed errors of the database layer, written for an operator at 3 a.m.:
//! each names the database (password removed), table or step, and
//! [`DbError::hint`] says what to do next. Drift is not an error: it is a
//! value in [`super::UndoReport`].

use thiserror::Error;

/// Something went wrong talking to a database, or a step was refused before
/// anything was touched.
#[derive(Debug, Error)]
pub enum DbError {
    #[error("unsupported database url {url}")]
    UnsupportedUrl { url: String },

    #[error("cannot reach database {database}: {message}")]
    Unreachable { database: String, message: String },

    #[error("database {database} refused the credentials: {message}")]
    AuthenticationFailed { database: String, message: String },

    #[error("unknown table {table} in {database}")]
    UnknownTable { database: String, table: String },

    #[error("unknown column {column} in table {table}")]
    UnknownColumn { table: String, column: String },

    #[error(
        "step {step}: rows of table {table} that the step would change have a NULL in their key ({key})"
    )]
    NullKey {
        step: u32,
        table: String,
        key: String,
    },

    #[error("the key of table {table} names column {column} twice")]
    KeyColumnTwice { table: String, column: String },

    #[error("the key ({key}) of table {table} cannot be checked for rows that share it: {message}")]
    KeyUncheckable {
        table: String,
        key: String,
        message: String,
    },

    #[error(
        "step {step}: an insert into table {table} needs a key that the primary key or a unique index keeps unique, and ({key}) is not: the rows it adds could share it"
    )]
    InsertKeyNotIndexed {
        step: u32,
        table: String,
        key: String,
    },

    #[error("table {table} has no usable key: no primary key and no key columns given")]
    NoKey { table: String },

    #[error("the key ({key}) of table {table} is not unique: more than one row holds {value}")]
    KeyNotUnique {
        table: String,
        key: String,
        value: String,
    },

    #[error("step {step}: set changes key column {column} of table {table}")]
    SetsKeyColumn {
        step: u32,
        table: String,
        column: String,
    },

    #[error(
        "step {step}: {action} on table {table} would cascade to table {referencing}, whose rows would not be captured"
    )]
    CascadingChange {
        step: u32,
        action: &'static str,
        table: String,
        referencing: String,
    },

    #[error(
        "step {step}: {action} on table {table} would also change the rows of the tables that inherit from it ({children}), which its images would record as rows of {table}"
    )]
    InheritedRows {
        step: u32,
        action: &'static str,
        table: String,
        children: String,
    },

    #[error("step {step}: {kind} step has neither a down statement nor irreversible = true")]
    MissingDown { step: u32, kind: &'static str },

    #[error("step {step}: {problem}")]
    InvalidStep { step: u32, problem: String },

    #[error("step {step}: statement failed on {database}: {message}\n  statement: {statement}")]
    Statement {
        step: u32,
        database: String,
        statement: String,
        message: String,
    },

    #[error(
        "step {step}: recording the images of table {table} failed, the transaction was rolled back: {source}"
    )]
    Record {
        step: u32,
        table: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error("step {step}: table {table} changed under the step: {problem}")]
    Concurrent {
        step: u32,
        table: String,
        problem: String,
    },

    #[error(
        "step {step}: column {column} of table {table} holds text that is not UTF-8 in a row the step changes, which rewind cannot record"
    )]
    NotUtf8 {
        step: u32,
        table: String,
        column: String,
    },

    #[error("step {step}: refusing to roll back irreversible statement {statement}")]
    Irreversible { step: u32, statement: String },

    #[error(
        "step {step}: refusing to restore rows of table {table}: its triggers {triggers} would fire and write what the ledger does not hold"
    )]
    TriggersWouldFire {
        step: u32,
        table: String,
        triggers: String,
    },

    #[error("cannot dump database {database}: {message}")]
    Dump { database: String, message: String },

    #[error("event kind {kind} has no database inverse")]
    NoInverse { kind: &'static str },

    #[error("the packed images of chunk {chunk} of table {table} cannot be read: {problem}")]
    BadImages {
        table: String,
        chunk: u32,
        problem: String,
    },

    #[error("cannot start the database runtime: {message}")]
    Runtime { message: String },
}

impl DbError {
    /// The next thing an operator could do about this error, if there is one.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            DbError::UnsupportedUrl { .. } => {
                Some("use sqlite://path/to/file.db or postgres://user@host/dbname")
            }
            DbError::Unreachable { .. } => {
                Some("check that the server runs and the url's host, port and database name")
            }
            DbError::AuthenticationFailed { .. } => {
                Some("check the user and password in the url, or the server's pg_hba.conf")
            }
            DbError::UnknownTable { .. } => {
                Some("check the table name in the step, and the database url")
            }
            DbError::UnknownColumn { .. } => {
                Some("check the column names in the step's key and set")
            }
            DbError::KeyColumnTwice { .. } => Some("name each key column once in the step's key"),
            DbError::NullKey { .. } => Some(
                "rows are found again by their key, and NULL equals nothing: give the step `key = [\"column\", …]` naming columns without NULLs, or leave those rows out with `where`",
            ),
            DbError::KeyNotUnique { .. } => Some(
                "rows are found again by their key: name columns that the primary key or a unique index covers, or columns no two rows share",
            ),
            DbError::KeyUncheckable { .. } => Some(
                "name key columns whose values the database can compare for equality (a json column cannot be)",
            ),
            DbError::InsertKeyNotIndexed { .. } => Some(
                "create a unique index on the key columns, or name a key that the primary key or a unique index covers",
            ),
            DbError::NoKey { .. } => {
                Some("give the step `key = [\"column\", …]` naming unique, non-null columns")
            }
            DbError::SetsKeyColumn { .. } => Some(
                "key columns identify rows in the ledger; change them with a delete and an insert",
            ),
            DbError::CascadingChange { .. } => Some(
                "change the referencing rows in an earlier step of their own, or use a sql step with a down",
            ),
            DbError::InheritedRows { .. } => Some(
                "run the step on each inheriting table, and the parent's own rows with a sql step (UPDATE ONLY …) with a down",
            ),
            DbError::MissingDown { .. } => {
                Some("add `down = \"…\"`, or `irreversible = true` if it cannot be undone")
            }
            DbError::InvalidStep { .. } => Some("fix the step in the spec"),
            DbError::Statement { .. } => Some(
                "fix the statement in the spec; nothing was changed by this step's failed transaction",
            ),
            DbError::Record { .. } => {
                Some("check the ledger directory (space, permissions), then apply again")
            }
            DbError::Concurrent { .. } => Some(
                "nothing of the failing chunk stays; if another writer changed the table, stop it and apply again; if the statement itself did more than change its chunk's rows (a REPLACE or IGNORE conflict clause, another table), change the step",
            ),
            DbError::NotUtf8 { .. } => Some(
                "SQLite keeps a TEXT value's bytes as given, and rewind records text as UTF-8: convert the value (a BLOB keeps its bytes: CAST(column AS BLOB)) or leave the row out with `where`; nothing of the failing chunk stays",
            ),
            DbError::BadImages { .. } => Some(
                "run `rewind verify`: if the chain holds, the event was recorded this way and its rows cannot be restored from it",
            ),
            DbError::Irreversible { .. } => {
                Some("pass --allow-irreversible to roll back past it without undoing it")
            }
            DbError::TriggersWouldFire { .. } => Some(
                "nothing of this chunk was restored; pass --allow-triggers to restore the rows and let the triggers fire (what they write is not in the ledger), or drop the triggers, roll back, and create them again",
            ),
            DbError::Dump { .. } => {
                Some("check that pg_dump is installed and matches the server's major version")
            }
            DbError::NoInverse { .. } | DbError::Runtime { .. } => None,
        }
    }
}

/// Shorthand for results of this module.
pub type Result<T, E = DbError> = std::result::Result<T, E>;
