//! `ddl`: a schema change (`up`, one or more statements) in one
//! transaction, recorded as `SchemaChanged` with its declared `down`, or
//! `irreversible = true`.
//!
//! Inverse: run `down`. Rolling back past an irreversible step is refused
//! unless the operator passes `--allow-irreversible`.

use serde::Deserialize;

use super::update::shown;
use super::{KindInfo, Planned, StepContext, StepOutcome};
use crate::db;
use crate::error::{Location, MigrateError, SpecError};
use crate::plan::{Sim, one_line};

pub const INFO: KindInfo = KindInfo {
    name: "ddl",
    docs: "Changes the schema: `up` (one or more statements) runs in one transaction; `down` undoes it on rollback, or `irreversible = true` says nothing can (rollback past it then needs `--allow-irreversible`).",
    inverse: Some("runs `down`"),
    fixture: "up = \"CREATE TABLE u (id INTEGER PRIMARY KEY)\"\ndown = \"DROP TABLE u\"\ndatabase = \"sqlite://{root}/fixture.db\"",
};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ddl {
    pub up: String,
    #[serde(default)]
    pub down: Option<String>,
    #[serde(default)]
    pub irreversible: bool,
    #[serde(default)]
    pub database: Option<String>,
}

/// `down` xor `irreversible`, shared with `sql`.
pub(crate) fn validate_schema(
    at: &Location,
    kind: &str,
    up: &str,
    down: &Option<String>,
    irreversible: bool,
) -> Result<(), SpecError> {
    if up.trim().is_empty() {
        return Err(SpecError::MissingField {
            at: at.clone(),
            field: "up".into(),
            reason: "give the statement(s) to run".into(),
        });
    }
    match (down, irreversible) {
        (None, false) => Err(SpecError::MissingField {
            at: at.clone(),
            field: "down".into(),
            reason: format!(
                "a `{kind}` step needs `down = \"…\"` to undo it, or `irreversible = true` if nothing can"
            ),
        }),
        (Some(_), true) => Err(SpecError::BadValue {
            at: at.clone(),
            field: "irreversible".into(),
            value: "true".into(),
            reason: "give `down` or `irreversible = true`, not both".into(),
        }),
        (Some(_), false) | (None, true) => Ok(()),
    }
}

impl Ddl {
    pub fn strings(&self) -> Vec<String> {
        self.database.iter().cloned().collect()
    }

    pub fn substitute(&self, sub: &dyn Fn(&str) -> String) -> Ddl {
        Ddl {
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
            kind: "ddl",
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
            summary: "schema changed".into(),
        })
    }
}
