//! Statements run on the SQLite connection's own handle, through SQLite's
//! C interface, where a step handles many rows: the capture of a chunk,
//! whose rows' values go straight into the packed images
//! ([`rewind_ledger::packed`]) by their storage class — read from rows
//! ([`Handle::run`]) or handed over by SQLite's preupdate hook as a
//! statement changes them ([`Handle::run_capturing`]) — and the load of a
//! rollback's images ([`Handle::run_many`]); without a `SqlValue`, an
//! allocation or a hand-over between threads per row (sqlx's SQLite driver
//! steps rows on a worker thread and sends them over one by one).
//!
//! The only unsafe code of the project. Every pointer used here comes from
//! SQLite and lives no longer than the locked handle it was made on; each
//! prepared statement is finalized by [`Statement`]'s `drop`, and the
//! preupdate hook, whose context points at a [`Changes`] on the caller's
//! stack, is removed by `Unhook`'s `drop` before that borrow ends.

#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr::{self, NonNull};

use libsqlite3_sys as ffi;
use rewind_ledger::SqlValue;
use rewind_ledger::packed::{AFTER, BEFORE, ImageWriter, Packer, read_values};
use sqlx::sqlite::LockedSqliteHandle;

use super::capture::ROWS_PER_EVENT;
use super::executor::Bind;
use super::sqlite::real_from_bits;

/// A connection's handle, locked for the caller (sqlx's worker does not
/// touch it meanwhile).
pub(crate) struct Handle {
    db: NonNull<ffi::sqlite3>,
}

/// A statement that failed, and SQLite's message (or the row handler's).
#[derive(Debug)]
pub(crate) struct Failed {
    pub statement: String,
    pub message: String,
}

/// One row of a running statement.
pub(crate) struct Row<'s> {
    statement: &'s Statement<'s>,
}

struct Statement<'h> {
    raw: NonNull<ffi::sqlite3_stmt>,
    handle: &'h Handle,
}

impl Drop for Statement<'_> {
    fn drop(&mut self) {
        // SAFETY: `raw` was prepared on this handle and is finalized once.
        unsafe {
            ffi::sqlite3_finalize(self.raw.as_ptr());
        }
    }
}

impl Handle {
    /// Runs `work` on a locked connection's handle.
    pub(crate) fn on<T>(locked: &mut LockedSqliteHandle<'_>, work: impl FnOnce(&Handle) -> T) -> T {
        // The handle is open, and sqlx's worker leaves it alone until
        // `locked` is released, after `work` has returned and every
        // statement it prepared has been finalized.
        work(&Handle {
            db: locked.as_raw_handle(),
        })
    }

    fn message(&self) -> String {
        // SAFETY: sqlite3_errmsg returns a NUL-terminated string owned by
        // the connection, valid until its next call; it is copied at once.
        unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(self.db.as_ptr())) }
            .to_string_lossy()
            .into_owned()
    }

    fn prepare(&self, sql: &str) -> Result<Statement<'_>, String> {
        let length = c_int::try_from(sql.len()).map_err(|_| "statement too long".to_owned())?;
        let mut raw = ptr::null_mut();
        let mut tail: *const c_char = ptr::null();
        // SAFETY: the text and its length are valid for the call; `raw`
        // receives a statement or stays null, `tail` where it ended.
        let code = unsafe {
            ffi::sqlite3_prepare_v2(
                self.db.as_ptr(),
                sql.as_ptr().cast(),
                length,
                &mut raw,
                &mut tail,
            )
        };
        // Where the first statement ended: SQLite points into `sql`.
        let rest = (tail as usize)
            .checked_sub(sql.as_ptr() as usize)
            .and_then(|offset| sql.get(offset..))
            .unwrap_or("");
        match (code, NonNull::new(raw)) {
            (ffi::SQLITE_OK, Some(raw)) if !rest.trim().is_empty() => {
                drop(Statement { raw, handle: self });
                Err(format!(
                    "more than one statement: `{}` follows the first",
                    rest.trim()
                ))
            }
            (ffi::SQLITE_OK, Some(raw)) => Ok(Statement { raw, handle: self }),
            (ffi::SQLITE_OK, None) => Err("the statement is empty".to_owned()),
            _ => {
                if let Some(raw) = NonNull::new(raw) {
                    drop(Statement { raw, handle: self });
                }
                Err(self.message())
            }
        }
    }

    /// Runs `sql` with `binds`, handing each row it returns to `each`;
    /// returns how many rows it returned, or for a statement that returns
    /// none, how many it changed.
    pub(crate) fn run(
        &self,
        sql: &str,
        binds: &[Bind],
        each: impl FnMut(&Row<'_>) -> Result<(), String>,
    ) -> Result<u64, Failed> {
        self.run_inner(sql, binds, each).map_err(|message| Failed {
            statement: sql.to_owned(),
            message,
        })
    }

    /// Runs one prepared statement once per row of binds (loading a
    /// temporary table); returns the rows changed in all.
    pub(crate) fn run_many(&self, sql: &str, rows: &[Vec<Bind>]) -> Result<u64, Failed> {
        let failed = |message| Failed {
            statement: sql.to_owned(),
            message,
        };
        let statement = self.prepare(sql).map_err(failed)?;
        let mut changed = 0u64;
        for binds in rows {
            // SAFETY: a prepared statement of this handle, reset before it
            // is bound and stepped again.
            unsafe {
                ffi::sqlite3_reset(statement.raw.as_ptr());
                ffi::sqlite3_clear_bindings(statement.raw.as_ptr());
            }
            for (index, bind) in binds.iter().enumerate() {
                statement.bind(index + 1, bind).map_err(failed)?;
            }
            loop {
                // SAFETY: as above.
                match unsafe { ffi::sqlite3_step(statement.raw.as_ptr()) } {
                    ffi::SQLITE_ROW => {}
                    ffi::SQLITE_DONE => break,
                    _ => return Err(failed(self.message())),
                }
            }
            // SAFETY: the connection is open.
            changed +=
                u64::try_from(unsafe { ffi::sqlite3_changes64(self.db.as_ptr()) }).unwrap_or(0);
        }
        Ok(changed)
    }

    fn run_inner(
        &self,
        sql: &str,
        binds: &[Bind],
        mut each: impl FnMut(&Row<'_>) -> Result<(), String>,
    ) -> Result<u64, String> {
        let statement = self.prepare(sql)?;
        for (index, bind) in binds.iter().enumerate() {
            statement.bind(index + 1, bind)?;
        }
        let mut rows = 0u64;
        loop {
            // SAFETY: a prepared statement of this handle, its binds set.
            match unsafe { ffi::sqlite3_step(statement.raw.as_ptr()) } {
                ffi::SQLITE_ROW => {
                    rows += 1;
                    each(&Row {
                        statement: &statement,
                    })?;
                }
                ffi::SQLITE_DONE => break,
                _ => return Err(self.message()),
            }
        }
        // SAFETY: the connection is open.
        let columns = unsafe { ffi::sqlite3_column_count(statement.raw.as_ptr()) };
        if columns == 0 {
            // SAFETY: the connection is open.
            let changes = unsafe { ffi::sqlite3_changes64(self.db.as_ptr()) };
            return Ok(u64::try_from(changes).unwrap_or(0));
        }
        Ok(rows)
    }
}

impl Statement<'_> {
    fn bind(&self, index: usize, bind: &Bind) -> Result<(), String> {
        let at = c_int::try_from(index).map_err(|_| "too many binds".to_owned())?;
        let raw = self.raw.as_ptr();
        // SAFETY: `raw` is prepared; text and blobs are copied by SQLite
        // (SQLITE_TRANSIENT) before the call returns.
        let code = unsafe {
            match bind {
                Bind::Value(SqlValue::Null) => ffi::sqlite3_bind_null(raw, at),
                Bind::Value(SqlValue::Integer(value)) => ffi::sqlite3_bind_int64(raw, at, *value),
                Bind::Value(SqlValue::Real(bits)) => {
                    let value = real_from_bits(bits).map_err(|error| error.to_string())?;
                    ffi::sqlite3_bind_double(raw, at, value)
                }
                Bind::Value(SqlValue::Text(text) | SqlValue::Typed(text)) => {
                    ffi::sqlite3_bind_text64(
                        raw,
                        at,
                        text.as_ptr().cast(),
                        text.len() as u64,
                        ffi::SQLITE_TRANSIENT(),
                        ffi::SQLITE_UTF8 as u8,
                    )
                }
                Bind::Value(SqlValue::Blob(bytes)) => ffi::sqlite3_bind_blob64(
                    raw,
                    at,
                    bytes.as_slice().as_ptr().cast(),
                    bytes.as_slice().len() as u64,
                    ffi::SQLITE_TRANSIENT(),
                ),
                Bind::Bool(value) => ffi::sqlite3_bind_int64(raw, at, i64::from(*value)),
                Bind::TextArray(_) | Bind::IntArray(_) | Bind::BoolArray(_) => {
                    return Err("arrays cannot be bound on SQLite".to_owned());
                }
            }
        };
        match code {
            ffi::SQLITE_OK => Ok(()),
            _ => Err(self.handle.message()),
        }
    }
}

impl Row<'_> {
    fn raw(&self) -> *mut ffi::sqlite3_stmt {
        self.statement.raw.as_ptr()
    }

    /// How many columns the row has.
    pub(crate) fn width(&self) -> usize {
        // SAFETY: a prepared statement.
        unsafe { ffi::sqlite3_column_count(self.raw()) as usize }
    }

    /// The bytes of a TEXT or BLOB value of column `column`.
    fn bytes(&self, column: c_int, text: bool) -> &[u8] {
        // SAFETY: the row is current; the pointer SQLite returns stays
        // valid until the next step, which cannot happen while `self` is
        // borrowed; sqlite3_column_bytes is asked after the pointer, as
        // SQLite's documentation prescribes.
        unsafe {
            let data: *const u8 = if text {
                ffi::sqlite3_column_text(self.raw(), column)
            } else {
                ffi::sqlite3_column_blob(self.raw(), column).cast()
            };
            let length = ffi::sqlite3_column_bytes(self.raw(), column);
            if data.is_null() || length <= 0 {
                &[]
            } else {
                std::slice::from_raw_parts(data, length as usize)
            }
        }
    }

    /// Writes the value of column `column` to an image, by its storage
    /// class; TEXT that is not UTF-8 is refused.
    pub(crate) fn write(&self, column: usize, out: &mut ImageWriter<'_>) -> Result<(), String> {
        let at = column as c_int;
        // SAFETY: the row is current and `at` is checked by SQLite (an
        // out-of-range column reads as NULL).
        let class = unsafe { ffi::sqlite3_column_type(self.raw(), at) };
        match class {
            // SAFETY: as above.
            ffi::SQLITE_INTEGER => {
                out.integer(unsafe { ffi::sqlite3_column_int64(self.raw(), at) })
            }
            ffi::SQLITE_FLOAT => {
                // SAFETY: as above.
                out.real_bits(unsafe { ffi::sqlite3_column_double(self.raw(), at) }.to_bits())
            }
            ffi::SQLITE_TEXT => {
                let bytes = self.bytes(at, true);
                if std::str::from_utf8(bytes).is_err() {
                    return Err(format!(
                        "column {} holds text that is not UTF-8",
                        column + 1
                    ));
                }
                out.text(bytes);
            }
            ffi::SQLITE_BLOB => out.blob(self.bytes(at, false)),
            _ => out.null(),
        }
        Ok(())
    }
}

/// What a statement run with [`Handle::run_capturing`] changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Update,
    Delete,
}

/// The images SQLite's preupdate hook collects while one `UPDATE` or
/// `DELETE` of one table runs: every row's values as they were and, for an
/// update, the values at `changed` as they become (the others "the same as
/// before"), in the order SQLite changes the rows.
pub(crate) struct Changes<'a> {
    /// The table, as the schema names it (compared without case).
    pub table: &'a str,
    pub op: Op,
    pub width: usize,
    /// Column positions the update sets, in column order.
    pub changed: &'a [usize],
    /// The first column is the table's rowid, which the hook gives apart
    /// from the other values (a table whose rowid no column names).
    pub rowid_first: bool,
    /// The images of the event being filled.
    pub packer: Packer,
    /// Where each event's images go once it holds [`ROWS_PER_EVENT`] rows
    /// (to be sealed while the statement goes on), and the last event's
    /// from [`Changes::finish`]; dropped with `self`, it ends the hand-over.
    pub full: std::sync::mpsc::Sender<Packer>,
    pub rows: usize,
    /// The first thing that keeps these images from being the statement's
    /// whole effect (another table changed, a row deleted by an update),
    /// or from being recorded.
    pub problem: Option<Problem>,
}

/// Why the images a hook collected cannot be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Problem {
    /// The statement did more than change the chunk's rows.
    Changed(String),
    /// A value is TEXT that is not UTF-8, which an image cannot hold:
    /// the column's position among the table's.
    NotUtf8 { column: usize },
    /// The capture itself failed (SQLite gave no value, the hook panicked).
    Failed(String),
}

impl Changes<'_> {
    /// Hands over the last event's images, and ends the hand-over: the
    /// rows captured, and the problem met, if any.
    pub(crate) fn finish(mut self) -> (usize, Option<Problem>) {
        if self.packer.rows() > 0 {
            // A sealer that is gone: as in `take`.
            let _ = self.full.send(std::mem::take(&mut self.packer));
        }
        (self.rows, self.problem)
    }

    fn take(
        &mut self,
        db: *mut ffi::sqlite3,
        op: c_int,
        database: &CStr,
        table: &CStr,
        rowids: (i64, i64),
    ) {
        if self.problem.is_some() {
            return;
        }
        if database.to_bytes() != b"main" {
            // rewind's own temporary tables.
            return;
        }
        if !table.to_bytes().eq_ignore_ascii_case(self.table.as_bytes()) {
            self.problem = Some(Problem::Changed(format!(
                "the statement also changed rows of table {}",
                table.to_string_lossy()
            )));
            return;
        }
        let expected = match self.op {
            Op::Update => ffi::SQLITE_UPDATE,
            Op::Delete => ffi::SQLITE_DELETE,
        };
        if op != expected {
            self.problem = Some(Problem::Changed(format!(
                "the statement also {} rows of the table (a REPLACE conflict clause?)",
                if op == ffi::SQLITE_DELETE {
                    "deleted"
                } else {
                    "inserted"
                }
            )));
            return;
        }
        // SAFETY: called from the preupdate hook of `db`, for this change.
        let count = unsafe { ffi::sqlite3_preupdate_count(db) } as usize;
        let first = usize::from(self.rowid_first);
        if count + first != self.width {
            self.problem = Some(Problem::Changed(format!(
                "the table's rows have {count} values, {} columns were expected",
                self.width - first
            )));
            return;
        }
        if self.op == Op::Update && rowids.0 != rowids.1 {
            self.problem = Some(Problem::Changed("the statement changed a rowid".to_owned()));
            return;
        }
        if self.rows > 0 && self.rows.is_multiple_of(ROWS_PER_EVENT) {
            // A sealer that is gone has failed; the caller hears of it
            // when it joins the sealer.
            let next = Packer::sized_as(&self.packer);
            let _ = self.full.send(std::mem::replace(&mut self.packer, next));
        }
        self.rows += 1;
        let packer = &mut self.packer;
        packer.row(match self.op {
            Op::Update => BEFORE | AFTER,
            Op::Delete => BEFORE,
        });
        let not_utf8 = |column| Problem::NotUtf8 { column };
        let result = (|| {
            let mut before = packer.before();
            if self.rowid_first {
                before.integer(rowids.0);
            }
            for column in first..self.width {
                write_value(preupdate(db, column - first, false)?, &mut before)
                    .map_err(|()| not_utf8(column))?;
            }
            if self.op == Op::Update {
                let mut after = packer.after();
                let mut changed = self.changed.iter().peekable();
                for column in 0..self.width {
                    match changed.next_if_eq(&&column) {
                        Some(_) if column >= first => {
                            write_value(preupdate(db, column - first, true)?, &mut after)
                                .map_err(|()| not_utf8(column))?;
                        }
                        Some(_) | None => after.same(),
                    }
                }
            }
            Ok::<(), Problem>(())
        })();
        if let Err(problem) = result {
            self.problem = Some(problem);
        }
    }
}

/// A value of the row being changed, as it was (`new` false) or becomes.
fn preupdate(
    db: *mut ffi::sqlite3,
    column: usize,
    new: bool,
) -> Result<*mut ffi::sqlite3_value, Problem> {
    let mut value = ptr::null_mut();
    // SAFETY: called inside the preupdate hook of `db`; the value SQLite
    // returns lives until the hook returns.
    let code = unsafe {
        if new {
            ffi::sqlite3_preupdate_new(db, column as c_int, &mut value)
        } else {
            ffi::sqlite3_preupdate_old(db, column as c_int, &mut value)
        }
    };
    match code {
        ffi::SQLITE_OK if !value.is_null() => Ok(value),
        _ => Err(Problem::Failed(format!(
            "SQLite gave no value for column {}",
            column + 1
        ))),
    }
}

/// Writes a value by its storage class; TEXT that is not UTF-8 is refused.
fn write_value(value: *mut ffi::sqlite3_value, out: &mut ImageWriter<'_>) -> Result<(), ()> {
    // SAFETY: `value` is a live value SQLite handed over; the bytes it
    // points to are read before anything else touches it, length after
    // pointer as SQLite's documentation prescribes.
    unsafe {
        match ffi::sqlite3_value_type(value) {
            ffi::SQLITE_INTEGER => out.integer(ffi::sqlite3_value_int64(value)),
            ffi::SQLITE_FLOAT => out.real_bits(ffi::sqlite3_value_double(value).to_bits()),
            ffi::SQLITE_TEXT => {
                // UTF-8 text as it is stored: sqlite3_value_text would first
                // copy it to add a terminating NUL (a value of the page being
                // changed has none).
                let data = if ffi::sqlite3_value_encoding(value) == ffi::SQLITE_UTF8 {
                    ffi::sqlite3_value_blob(value).cast::<u8>()
                } else {
                    ffi::sqlite3_value_text(value)
                };
                let bytes = slice(data, ffi::sqlite3_value_bytes(value));
                if std::str::from_utf8(bytes).is_err() {
                    return Err(());
                }
                out.text(bytes);
            }
            ffi::SQLITE_BLOB => {
                let data = ffi::sqlite3_value_blob(value).cast::<u8>();
                out.blob(slice(data, ffi::sqlite3_value_bytes(value)));
            }
            _ => out.null(),
        }
    }
    Ok(())
}

/// # Safety
///
/// `data` is null or points to `length` bytes that outlive the slice.
unsafe fn slice<'a>(data: *const u8, length: c_int) -> &'a [u8] {
    if data.is_null() || length <= 0 {
        &[]
    } else {
        // SAFETY: as the caller promises.
        unsafe { std::slice::from_raw_parts(data, length as usize) }
    }
}

unsafe extern "C" fn on_preupdate(
    context: *mut c_void,
    db: *mut ffi::sqlite3,
    op: c_int,
    database: *const c_char,
    table: *const c_char,
    old_rowid: i64,
    new_rowid: i64,
) {
    // SAFETY: `context` is the `Changes` registered by `run_capturing`,
    // which outlives the statement; the names are NUL-terminated strings
    // SQLite owns for the call.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
        let changes = &mut *context.cast::<Changes<'_>>();
        changes.take(
            db,
            op,
            CStr::from_ptr(database),
            CStr::from_ptr(table),
            (old_rowid, new_rowid),
        );
    }));
    if outcome.is_err() {
        // SAFETY: as above.
        let changes = unsafe { &mut *context.cast::<Changes<'_>>() };
        changes.problem = Some(Problem::Failed("capturing a row panicked".to_owned()));
    }
}

/// Unregisters the preupdate hook, whatever way the statement ended.
struct Unhook<'h>(&'h Handle);

impl Drop for Unhook<'_> {
    fn drop(&mut self) {
        // SAFETY: the connection is open; no hook is left pointing at a
        // `Changes` that is about to go.
        unsafe {
            ffi::sqlite3_preupdate_hook(self.0.db.as_ptr(), None, ptr::null_mut());
        }
    }
}

impl Handle {
    /// Runs `sql`, an `UPDATE` or `DELETE` of `changes.table`, with
    /// SQLite's preupdate hook writing every row it changes into
    /// `changes`; returns how many rows SQLite says it changed.
    pub(crate) fn run_capturing(
        &self,
        sql: &str,
        binds: &[Bind],
        changes: &mut Changes<'_>,
    ) -> Result<u64, Failed> {
        // SAFETY: the hook's context is `changes`, borrowed for this call;
        // `Unhook` removes the hook before the borrow ends.
        unsafe {
            ffi::sqlite3_preupdate_hook(
                self.db.as_ptr(),
                Some(on_preupdate),
                (changes as *mut Changes<'_>).cast(),
            );
        }
        let unhook = Unhook(self);
        let result = self.run(sql, binds, |_| Ok(()));
        drop(unhook);
        result
    }

    /// The values of the first row `sql` returns, if any.
    pub(crate) fn first_row(
        &self,
        sql: &str,
        binds: &[Bind],
    ) -> Result<Option<Vec<SqlValue>>, Failed> {
        let mut packed = None;
        self.run(sql, binds, |row| {
            if packed.is_none() {
                let mut bytes = Vec::new();
                let mut writer = ImageWriter::new(&mut bytes);
                for column in 0..row.width() {
                    row.write(column, &mut writer)?;
                }
                packed = Some(bytes);
            }
            Ok(())
        })?;
        packed
            .map(|bytes| {
                read_values(&bytes).map_err(|message| Failed {
                    statement: sql.to_owned(),
                    message,
                })
            })
            .transpose()
    }
}
