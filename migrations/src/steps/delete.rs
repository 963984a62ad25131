//! `delete`: `DELETE FROM table WHERE where`, chunk by chunk, each deleted
//! row recorded whole (`RowsPacked` with a before image and no after
//! image) before its transaction commits.
//!
//! Inverse: re-insert each deleted row, if its key is still absent (else
//! drift).

use serde::Deserialize;

use super::update::{chunk_rows, shown, validate_rows_step};
use super::{KindInfo, Planned, StepContext, StepOutcome};
use crate::db;
use crate::error::{Location, MigrateError, SpecError};
use crate::plan::Sim;

pub const INFO: KindInfo = KindInfo {
    name: "delete",
    docs: "Deletes the rows of `table` matching `where` (required; `where = \"TRUE\"` for all), `chunk_size` rows per transaction (by default 10000 on PostgreSQL; on SQLite, first 10000 and then as many as take about 0.25 s, so that other writers wait no longer, but at least 1000 and no more than hold 64 MiB of images), recorded as events of at most 1000 rows. `key` names the key columns (default: the primary key). Every deleted row is recorded whole.",
    inverse: Some("re-inserts each deleted row when its key is still absent"),
    fixture: "table = \"t\"\nwhere = \"n < 0\"\ndatabase = \"sqlite://{root}/fixture.db\"",
};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delete {
    pub table: String,
    #[serde(default)]
    pub key: Option<Vec<String>>,
    #[serde(rename = "where")]
    pub filter: String,
    /// Signed, so that a negative size is refused by
    /// [`validate_rows_step`](super::update::validate_rows_step) in words.
    #[serde(default)]
    pub chunk_size: Option<i64>,
    #[serde(default)]
    pub database: Option<String>,
}

impl Delete {
    pub fn strings(&self) -> Vec<String> {
        self.database.iter().cloned().collect()
    }

    pub fn substitute(&self, sub: &dyn Fn(&str) -> String) -> Delete {
        Delete {
            database: self.database.as_deref().map(sub),
            ..self.clone()
        }
    }

    pub fn validate(&self, at: &Location) -> Result<(), SpecError> {
        validate_rows_step(at, &self.table, self.key.as_deref(), self.chunk_size)?;
        if self.filter.trim().is_empty() {
            return Err(SpecError::BadValue {
                at: at.clone(),
                field: "where".into(),
                value: String::new(),
                reason: "give a condition; `where = \"TRUE\"` deletes every row".into(),
            });
        }
        Ok(())
    }

    pub fn paths(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    pub fn operation(&self, step: u32) -> db::Delete {
        db::Delete {
            step,
            table: self.table.clone(),
            key: self.key.clone(),
            filter: Some(self.filter.clone()),
            chunk_size: chunk_rows(self.chunk_size),
        }
    }

    pub fn plan(&self, _step: u32, _sim: &mut Sim) -> Result<Planned, MigrateError> {
        Ok(
            Planned::new(format!("delete from {} where {}", self.table, self.filter))
                .param("database", shown(&self.database))
                .param("table", &self.table),
        )
    }

    pub fn apply(&self, cx: &mut StepContext<'_>) -> Result<StepOutcome, MigrateError> {
        let operation = self.operation(cx.step);
        let report =
            cx.on_database(INFO.name, self.database.as_deref(), |database, recorder| {
                database.delete(&operation, recorder)
            })?;
        Ok(StepOutcome::Done {
            summary: format!(
                "{} row(s) of {} deleted in {} chunk(s)",
                report.rows, self.table, report.chunks
            ),
        })
    }
}
