//! `update`: `UPDATE table SET column = expression, … WHERE where`, chunk
//! by chunk, each chunk's rows recorded as `RowsPacked` with their before
//! and after images before its transaction commits ([`crate::db`]).
//!
//! Keys: `key = ["id"]`, or discovered from the primary key; a table
//! without a usable key, or a `key` two rows share, is refused before
//! anything runs. SQL text (`set`
//! expressions, `where`) is taken literally; only `database` takes
//! `{var}`s.
//!
//! Inverse: restore each row's before image, if the row still equals its
//! after image (else drift, reported with the differing columns).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{KindInfo, Planned, StepContext, StepOutcome};
use crate::db::{self, redact_url};
use crate::error::{Location, MigrateError, SpecError};
use crate::plan::Sim;

pub const INFO: KindInfo = KindInfo {
    name: "update",
    docs: "Updates rows of `table`: `set = { column = \"SQL expression\" }` on the rows matching `where` (all rows when absent), `chunk_size` rows per transaction (by default 10000 on PostgreSQL; on SQLite, first 10000 and then as many as take about 0.25 s, so that other writers wait no longer, but at least 1000 and no more than hold 64 MiB of images), recorded as events of at most 1000 rows. `key` names the key columns (default: the primary key). Every changed row's before and after image is recorded.",
    inverse: Some(
        "restores each row's before image when the row still equals its after image; drifted rows are reported with the columns that differ",
    ),
    fixture: "table = \"t\"\nkey = [\"id\"]\nwhere = \"n > 0\"\nset = { n = \"n + 1\" }\ndatabase = \"sqlite://{root}/fixture.db\"",
};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Update {
    pub table: String,
    #[serde(default)]
    pub key: Option<Vec<String>>,
    #[serde(default, rename = "where")]
    pub filter: Option<String>,
    pub set: BTreeMap<String, String>,
    /// Signed, so that a negative size is refused by
    /// [`validate_rows_step`](super::update::validate_rows_step) in words.
    #[serde(default)]
    pub chunk_size: Option<i64>,
    #[serde(default)]
    pub database: Option<String>,
}

/// Checks what TOML types cannot, shared by the row steps.
pub(crate) fn validate_rows_step(
    at: &Location,
    table: &str,
    key: Option<&[String]>,
    chunk_size: Option<i64>,
) -> Result<(), SpecError> {
    let bad = |field: &str, value: String, reason: &str| SpecError::BadValue {
        at: at.clone(),
        field: field.to_owned(),
        value,
        reason: reason.to_owned(),
    };
    if table.trim().is_empty() {
        return Err(bad("table", table.to_owned(), "name a table"));
    }
    if key.is_some_and(|key| key.is_empty() || key.iter().any(|c| c.trim().is_empty())) {
        return Err(bad(
            "key",
            format!("{key:?}"),
            "name one or more key columns, or leave `key` out to use the primary key",
        ));
    }
    if let Some(size) = chunk_size.filter(|&size| size < 1) {
        return Err(bad(
            "chunk_size",
            size.to_string(),
            "a chunk has at least 1 row",
        ));
    }
    Ok(())
}

/// A `chunk_size` that [`validate_rows_step`] took, as rows.
pub(crate) fn chunk_rows(chunk_size: Option<i64>) -> Option<usize> {
    chunk_size.and_then(|size| usize::try_from(size).ok())
}

/// `database` for plans and events: without its password.
pub(crate) fn shown(database: &Option<String>) -> String {
    database.as_deref().map(redact_url).unwrap_or_default()
}

impl Update {
    pub fn strings(&self) -> Vec<String> {
        self.database.iter().cloned().collect()
    }

    pub fn substitute(&self, sub: &dyn Fn(&str) -> String) -> Update {
        Update {
            database: self.database.as_deref().map(sub),
            ..self.clone()
        }
    }

    pub fn validate(&self, at: &Location) -> Result<(), SpecError> {
        validate_rows_step(at, &self.table, self.key.as_deref(), self.chunk_size)?;
        if self.set.is_empty() {
            return Err(SpecError::BadValue {
                at: at.clone(),
                field: "set".into(),
                value: "{}".into(),
                reason: "set at least one column, like `set = { n = \"n + 1\" }`".into(),
            });
        }
        Ok(())
    }

    pub fn paths(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    pub fn operation(&self, step: u32) -> db::Update {
        db::Update {
            step,
            table: self.table.clone(),
            key: self.key.clone(),
            filter: self.filter.clone(),
            set: self.set.clone(),
            chunk_size: chunk_rows(self.chunk_size),
        }
    }

    pub fn plan(&self, _step: u32, _sim: &mut Sim) -> Result<Planned, MigrateError> {
        let sets = self
            .set
            .iter()
            .map(|(column, expression)| format!("{column} = {expression}"))
            .collect::<Vec<_>>()
            .join(", ");
        let filter = self.filter.as_deref().unwrap_or("every row");
        Ok(
            Planned::new(format!("update {} set {sets} where {filter}", self.table))
                .param("database", shown(&self.database))
                .param("table", &self.table),
        )
    }

    pub fn apply(&self, cx: &mut StepContext<'_>) -> Result<StepOutcome, MigrateError> {
        let operation = self.operation(cx.step);
        let report =
            cx.on_database(INFO.name, self.database.as_deref(), |database, recorder| {
                database.update(&operation, recorder)
            })?;
        Ok(StepOutcome::Done {
            summary: format!(
                "{} row(s) of {} updated in {} chunk(s)",
                report.rows, self.table, report.chunks
            ),
        })
    }
}
