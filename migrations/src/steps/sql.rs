//! `sql`: an opaque statement (or script) that rewind cannot capture row
//! by row, allowed only with a declared `down` or `irreversible = true`;
//! recorded as `SchemaChanged` like `ddl`.
//!
//! Inverse: run `down`; past an irreversible one only with
//! `--allow-irreversible`.

use serde::Deserialize;

use super::ddl::validate_schema;
use super::update::shown;
use super::{KindInfo, Planned, StepContext, StepOutcome};
use crate::db;
use crate::error::{Location, MigrateError, SpecError};
use crate::plan::{Sim, one_line};

pub const INFO: KindInfo = KindInfo {
    name: "sql",
    docs: "Runs `up`, SQL that rewind does not capture row by row, in one transaction. It must declare `down` (run on rollback) or `irreversible = true`. Prefer `update`/`insert`/`delete`, whose rows are recorded and checked for drift.",
    inverse: Some("runs `down`"),
    fixture: "up = \"UPDATE t SET n = n\"\ndown = \"UPDATE t SET n = n\"\ndatabase = \"sqlite://{root}/fixture.db\"",
};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sql {
    pub up: String,
    #[serde(default)]
    pub down: Option<String>,
    #[serde(default)]
    pub irreversible: bool,
    #[serde(default)]
    pub database: Option<String>,
}

impl Sql {
    pub fn strings(&self) -> Vec<String> {
        self.database.iter().cloned().collect()
    }

    pub fn substitute(&self, sub: &dyn Fn(&str) -> String) -> Sql {
        Sql {
            database: self.database.as_deref().map(sub),
            ..self.clone()
        }
    }

    pub fn validate(&self, at: &Location) -> Result<(), SpecError> {
        validate_schema(at, INFO.name, &self.up, &self.down, self.irreversible)
    }

    pub fn paths(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    pub fn operation(&self, step: u32) -> db::Schema {
        db::Schema {
            step,
            kind: "sql",
            up: self.up.clone(),
            down: self.down.clone(),
            irreversible: self.irreversible,
        }
    }

    pub fn plan(&self, _step: u32, _sim: &mut Sim) -> Result<Planned, MigrateError> {
        let undo = match &self.down {
            Some(down) => format!(" (down: {})", one_line(down)),
            None => " (irreversible)".into(),
        };
        Ok(Planned::new(format!("run `{}`{undo}", one_line(&self.up)))
            .param("database", shown(&self.database)))
    }

    pub fn apply(&self, cx: &mut StepContext<'_>) -> Result<StepOutcome, MigrateError> {
        let operation = self.operation(cx.step);
        cx.on_database(INFO.name, self.database.as_deref(), |database, recorder| {
            database.schema(&operation, recorder)
        })?;
        Ok(StepOutcome::Done {
            summary: "statement run".into(),
        })
    }
}
