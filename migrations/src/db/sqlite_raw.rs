//! Statements run on the SQLite connection's own handle, through SQLite's
//! C interface, for the capture of large chunks: each row's values go
//! straight into the packed images ([`rewind_ledger::packed`]), by their
//! storage class, without a `SqlValue`, an allocation or a hand-over
//! between threads per row (sqlx's SQLite driver steps rows on a worker
//! thread and sends them over one by one).
//!
//! The only unsafe code of the project. Every pointer used here comes from
//! SQLite, lives no longer than the locked handle it was made on, and each
//! prepared statement is finalized by [`Statement`]'s `drop`.

#![allow(unsafe_code)]

use std::ffi::{CStr, c_int};
use std::ptr::{self, NonNull};

use libsqlite3_sys as ffi;
use rewind_ledger::SqlValue;
use rewind_ledger::packed::ImageWriter;
use sqlx::sqlite::LockedSqliteHandle;

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
        // SAFETY: the text and its length are valid for the call; `raw`
        // receives a statement or stays null.
        let code = unsafe {
            ffi::sqlite3_prepare_v2(
                self.db.as_ptr(),
                sql.as_ptr().cast(),
                length,
                &mut raw,
                ptr::null_mut(),
            )
        };
        match (code, NonNull::new(raw)) {
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
