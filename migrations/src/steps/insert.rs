//! `insert`: rows from a `select` (its column names are columns of the
//! table) or literal `rows`, recorded as `RowsPacked` with after images
//! only; sequences the insert advanced are recorded as `SequenceMoved`.
//!
//! Inverse: delete each inserted row, if it still equals its after image
//! (else drift); set each advanced sequence back.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::update::{chunk_rows, shown, validate_rows_step};
use super::{KindInfo, Planned, StepContext, StepOutcome};
use crate::databases::Literal;
use crate::db;
use crate::error::{Location, MigrateError, SpecError};
use crate::plan::{Sim, one_line};

pub const INFO: KindInfo = KindInfo {
    name: "insert",
    docs: "Inserts into `table` the rows of `select` (a query whose column names are columns of the table) or the literal `rows = [{ column = value, … }]`. `key` names the key columns (default: the primary key). Inserted rows and advanced sequences are recorded.",
    inverse: Some(
        "deletes each inserted row when it still equals its after image, and sets advanced sequences back",
    ),
    fixture: "table = \"t\"\nkey = [\"id\"]\nrows = [{ id = 10, n = 1 }]\ndatabase = \"sqlite://{root}/fixture.db\"",
};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Insert {
    pub table: String,
    #[serde(default)]
    pub key: Option<Vec<String>>,
    #[serde(default)]
    pub select: Option<String>,
    #[serde(default)]
    pub rows: Option<Vec<BTreeMap<String, Literal>>>,
    /// Signed, so that a negative size is refused by
    /// [`validate_rows_step`](super::update::validate_rows_step) in words.
    #[serde(default)]
    pub chunk_size: Option<i64>,
    #[serde(default)]
    pub database: Option<String>,
}

impl Insert {
    pub fn strings(&self) -> Vec<String> {
        self.database.iter().cloned().collect()
    }

    pub fn substitute(&self, sub: &dyn Fn(&str) -> String) -> Insert {
        Insert {
            database: self.database.as_deref().map(sub),
            ..self.clone()
        }
    }

    pub fn validate(&self, at: &Location) -> Result<(), SpecError> {
        validate_rows_step(at, &self.table, self.key.as_deref(), self.chunk_size)?;
        if self.select.is_some() == self.rows.is_some() {
            return Err(SpecError::BadValue {
                at: at.clone(),
                field: "select".into(),
                value: String::new(),
                reason: "give exactly one of `select = \"SELECT …\"` and `rows = [{ … }]`".into(),
            });
        }
        Ok(())
    }

    pub fn paths(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// The operation on `engine` (literal values are bound per engine).
    pub fn operation(&self, step: u32, engine: db::Engine) -> db::Insert {
        let source = match (&self.select, &self.rows) {
            (Some(select), _) => db::InsertSource::Select(select.clone()),
            (None, rows) => db::InsertSource::Rows(
                rows.iter()
                    .flatten()
                    .map(|row| {
                        row.iter()
                            .map(|(column, value)| (column.clone(), value.to_sql(engine)))
                            .collect()
                    })
                    .collect(),
            ),
        };
        db::Insert {
            step,
            table: self.table.clone(),
            key: self.key.clone(),
            source,
            chunk_size: chunk_rows(self.chunk_size),
        }
    }

    pub fn plan(&self, _step: u32, _sim: &mut Sim) -> Result<Planned, MigrateError> {
        let source = match (&self.select, &self.rows) {
            (Some(select), _) => format!("rows of `{}`", one_line(select)),
            (None, rows) => format!("{} literal row(s)", rows.as_ref().map_or(0, Vec::len)),
        };
        Ok(Planned::new(format!("insert into {} {source}", self.table))
            .param("database", shown(&self.database))
            .param("table", &self.table))
    }

    pub fn apply(&self, cx: &mut StepContext<'_>) -> Result<StepOutcome, MigrateError> {
        let step = cx.step;
        let report =
            cx.on_database(INFO.name, self.database.as_deref(), |database, recorder| {
                let operation = self.operation(step, database.engine());
                database.insert(&operation, recorder)
            })?;
        Ok(StepOutcome::Done {
            summary: format!("{} row(s) inserted into {}", report.rows, self.table),
        })
    }
}
