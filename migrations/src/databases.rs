//! The database connections of one run, one plan or one rollback: opened
//! lazily, once per database, and dropped with it.
//!
//! Events carry a database url with its password removed
//! ([`db::redact_url`]). A rollback finds the full url (with credentials)
//! among the urls the caller knows — `--database` on the command line, or
//! the urls of the run being applied; failing that it connects with the
//! redacted url minus the `***`, so that `PGPASSWORD` or `~/.pgpass`
//! can supply the password.
//!
//! [`Database`] owns a single-threaded tokio runtime and blocks on it, so
//! this is used only from plain threads or `spawn_blocking`, never from an
//! async task.

use std::collections::BTreeMap;

use rewind_ledger::SqlValue;
use serde::Deserialize;

use crate::db::{self, Database, DbError};

/// Lazily opened connections, keyed by redacted url.
#[derive(Debug, Default)]
pub struct Databases {
    /// Redacted url → the url to connect with.
    credentials: BTreeMap<String, String>,
    open: BTreeMap<String, Database>,
    /// Named snapshots recorded by the `verify` steps of this run, for
    /// `equals_recorded`.
    pub recorded: BTreeMap<String, String>,
    /// A rollback may restore rows of SQLite tables with triggers, letting
    /// them fire (`rollback --allow-triggers`).
    pub allow_triggers: bool,
}

impl Databases {
    /// Connections that will use `urls` (with credentials) where they match.
    pub fn new(urls: impl IntoIterator<Item = String>) -> Databases {
        Databases {
            credentials: urls
                .into_iter()
                .map(|url| (db::redact_url(&url), url))
                .collect(),
            open: BTreeMap::new(),
            recorded: BTreeMap::new(),
            allow_triggers: false,
        }
    }

    /// The connection to `url` (full or redacted), opened on first use.
    pub fn get(&mut self, url: &str) -> Result<&mut Database, DbError> {
        let redacted = db::redact_url(url);
        if !self.open.contains_key(&redacted) {
            let full = if redacted != url {
                url.to_owned()
            } else {
                self.credentials
                    .get(&redacted)
                    .cloned()
                    .unwrap_or_else(|| redacted.replacen(":***@", "@", 1))
            };
            let database = Database::connect(&full)?;
            self.open.insert(redacted.clone(), database);
        }
        Ok(self.open.get_mut(&redacted).expect("just opened"))
    }
}

/// A literal value in a spec (`rows = [{ id = 1, name = "x" }]`, `equals = 0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Literal {
    Integer(i64),
    /// The float's text as written by TOML's parser.
    Real(String),
    Text(String),
    Bool(bool),
}

impl Literal {
    /// The value as a check compares it: its text.
    pub fn text(&self) -> String {
        match self {
            Literal::Integer(value) => value.to_string(),
            Literal::Real(text) | Literal::Text(text) => text.clone(),
            Literal::Bool(value) => value.to_string(),
        }
    }

    /// The value to bind on `engine`: SQLite stores booleans as 1/0;
    /// PostgreSQL casts `true`/`false` text to its column's type.
    pub fn to_sql(&self, engine: db::Engine) -> SqlValue {
        match self {
            Literal::Integer(value) => SqlValue::Integer(*value),
            Literal::Real(text) => match text.parse::<f64>() {
                Ok(value) => SqlValue::Real(format!("{:#018x}", value.to_bits())),
                Err(_) => SqlValue::Text(text.clone()),
            },
            Literal::Text(text) => SqlValue::Text(text.clone()),
            Literal::Bool(value) => match engine {
                db::Engine::Sqlite => SqlValue::Integer(i64::from(*value)),
                db::Engine::Postgres => SqlValue::Text(value.to_string()),
            },
        }
    }
}

impl<'de> Deserialize<'de> for Literal {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Literal, D::Error> {
        match toml::Value::deserialize(deserializer)? {
            toml::Value::Integer(value) => Ok(Literal::Integer(value)),
            toml::Value::Float(value) => Ok(Literal::Real(value.to_string())),
            toml::Value::String(text) => Ok(Literal::Text(text)),
            toml::Value::Boolean(value) => Ok(Literal::Bool(value)),
            toml::Value::Datetime(value) => Ok(Literal::Text(value.to_string())),
            toml::Value::Array(_) | toml::Value::Table(_) => Err(serde::de::Error::custom(
                "expected a number, a string or a boolean",
            )),
        }
    }
}
