//! What the capture and undo code needs to know about a table, read from
//! the engine's catalog: its columns with their declared types, its key
//! columns, and the sequences its inserts advance.

use rewind_ledger::{Column, SqlValue};

use super::error::{DbError, Result};
use super::executor::{Bind, Engine, Executor, quote_ident, quote_table};

/// A table as the capture code sees it.
#[derive(Debug, Clone)]
pub(crate) struct TableInfo {
    /// The name as the step gave it.
    pub name: String,
    /// The name quoted for SQL.
    pub quoted: String,
    /// The captured columns, in order. On a SQLite rowid table whose key is
    /// not the rowid, the first one is `rowid`, so a re-inserted row gets
    /// its old rowid back.
    pub columns: Vec<Column>,
    /// The key columns, a subset of `columns`.
    pub key: Vec<String>,
    /// The table's declaration names a conflict clause of its own (SQLite's
    /// `ON CONFLICT REPLACE`, `IGNORE`, …), which a statement's `OR …`
    /// would override.
    pub conflict_clauses: bool,
    /// The key holds every column of the primary key or of a unique index,
    /// so the database itself keeps it unique; otherwise only the rows do
    /// (a step checks them when it reads the table), which an insert could
    /// change.
    pub key_by_index: bool,
}

impl TableInfo {
    pub fn key_positions(&self) -> Vec<usize> {
        self.key
            .iter()
            .map(|name| {
                self.columns
                    .iter()
                    .position(|column| &column.name == name)
                    .unwrap_or(0)
            })
            .collect()
    }

    pub fn sql_type(&self, name: &str) -> &str {
        self.columns
            .iter()
            .find(|column| column.name == name)
            .map_or("text", |column| column.sql_type.as_str())
    }

    /// `"k0", "k1"`, optionally qualified by `prefix.`.
    pub fn key_list(&self, prefix: &str) -> String {
        self.key
            .iter()
            .map(|name| format!("{prefix}{}", quote_ident(name)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn text(value: &SqlValue) -> String {
    match value {
        SqlValue::Text(text) | SqlValue::Typed(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Reads a table's columns and key; refuses an unknown table, unknown key
/// columns, and a table without a usable key.
pub(crate) async fn table_info(
    executor: &mut dyn Executor,
    database: &str,
    table: &str,
    key: Option<&[String]>,
    rows: KeyRows,
) -> Result<TableInfo> {
    let engine = executor.engine();
    let quoted = quote_table(engine, table);
    let mut canonical = table.to_owned();
    let unreachable = |error: sqlx::Error| DbError::Unreachable {
        database: database.to_owned(),
        message: error.to_string(),
    };
    let mut conflict_clauses = false;
    let (mut columns, primary_key, rowid_alias) = match engine {
        Engine::Sqlite => {
            let rows = executor
                .fetch(
                    "SELECT name, type, pk FROM pragma_table_xinfo(?1) WHERE hidden = 0 ORDER BY cid",
                    &[Bind::Value(SqlValue::Text(table.to_owned()))],
                )
                .await
                .map_err(unreachable)?;
            let mut columns = Vec::new();
            let mut primary_key: Vec<(i64, String)> = Vec::new();
            for row in &rows {
                let name = text(&row[0]);
                if let SqlValue::Integer(position) = row[2]
                    && position > 0
                {
                    primary_key.push((position, name.clone()));
                }
                columns.push(Column {
                    name,
                    sql_type: text(&row[1]),
                });
            }
            primary_key.sort();
            let primary_key: Vec<String> = primary_key.into_iter().map(|(_, name)| name).collect();
            // The name as declared, which `sqlite_sequence` uses too.
            let declared = executor
                .fetch(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name = ?1 COLLATE NOCASE",
                    &[Bind::Value(SqlValue::Text(table.to_owned()))],
                )
                .await
                .map_err(unreachable)?;
            // The declaration, upper case, without its white space (a
            // quoted name that holds these words only errs on the safe side).
            let declaration = declared
                .first()
                .map(|row| {
                    text(&row[1])
                        .to_ascii_uppercase()
                        .replace(char::is_whitespace, "")
                })
                .unwrap_or_default();
            let without_rowid = declaration.contains("WITHOUTROWID");
            conflict_clauses = declaration.contains("ONCONFLICT");
            if let Some(row) = declared.first() {
                canonical = text(&row[0]);
            }
            let rowid_alias = primary_key.len() == 1
                && columns.iter().any(|column| {
                    column.name == primary_key[0] && column.sql_type.eq_ignore_ascii_case("INTEGER")
                });
            (columns, primary_key, without_rowid || rowid_alias)
        }
        Engine::Postgres => {
            let exists = executor
                .fetch(
                    "SELECT to_regclass($1) IS NOT NULL",
                    &[Bind::Value(SqlValue::Text(quoted.clone()))],
                )
                .await
                .map_err(unreachable)?;
            if exists.first().map(|row| &row[0]) != Some(&SqlValue::Integer(1)) {
                return Err(DbError::UnknownTable {
                    database: database.to_owned(),
                    table: table.to_owned(),
                });
            }
            let rows = executor
                .fetch(
                    "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
                     WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped \
                     AND a.attgenerated = '' ORDER BY a.attnum",
                    &[Bind::Value(SqlValue::Text(quoted.clone()))],
                )
                .await
                .map_err(unreachable)?;
            let columns = rows
                .iter()
                .map(|row| Column {
                    name: text(&row[0]),
                    sql_type: text(&row[1]),
                })
                .collect();
            let primary_key = executor
                .fetch(
                    "SELECT a.attname::text FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid \
                     AND a.attnum = ANY(i.indkey) WHERE i.indrelid = to_regclass($1) AND i.indisprimary \
                     ORDER BY array_position(i.indkey::int2[], a.attnum)",
                    &[Bind::Value(SqlValue::Text(quoted.clone()))],
                )
                .await
                .map_err(unreachable)?
                .iter()
                .map(|row| text(&row[0]))
                .collect();
            (columns, primary_key, true)
        }
    };
    if columns.is_empty() {
        return Err(DbError::UnknownTable {
            database: database.to_owned(),
            table: table.to_owned(),
        });
    }
    let given = key.is_some_and(|key| !key.is_empty());
    let key: Vec<String> = match key {
        Some(key) if !key.is_empty() => key.to_vec(),
        _ => primary_key.clone(),
    };
    if key.is_empty() {
        return Err(DbError::NoKey {
            table: table.to_owned(),
        });
    }
    for (index, name) in key.iter().enumerate() {
        if key[..index].contains(name) {
            return Err(DbError::KeyColumnTwice {
                table: table.to_owned(),
                column: name.clone(),
            });
        }
        if !columns.iter().any(|column| &column.name == name) {
            return Err(DbError::UnknownColumn {
                table: table.to_owned(),
                column: name.clone(),
            });
        }
    }
    let key_by_index = !given
        || refuse_key_not_unique(executor, &quoted, &canonical, &key, &primary_key, rows)
            .await
            .map_err(|error| match error {
                KeyCheck::Failed(error) => unreachable(error),
                KeyCheck::Refused(error) => error,
            })?;
    if !rowid_alias {
        columns.insert(
            0,
            Column {
                name: "rowid".to_owned(),
                sql_type: "ROWID".to_owned(),
            },
        );
    }
    Ok(TableInfo {
        quoted: quote_table(engine, &canonical),
        name: canonical,
        columns,
        key,
        conflict_clauses,
        key_by_index,
    })
}

/// Whether a key that no index keeps unique is checked against the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyRows {
    /// A step about to change rows: no two may share the key.
    Check,
    /// Rows recorded under the key, being restored: the step checked it.
    Recorded,
}

/// Why a key given by a step could not be taken.
enum KeyCheck {
    Failed(sqlx::Error),
    Refused(DbError),
}

impl From<sqlx::Error> for KeyCheck {
    fn from(error: sqlx::Error) -> KeyCheck {
        KeyCheck::Failed(error)
    }
}

/// Refuses a key a step names that two rows may share: rollback finds each
/// row again by its key, and a key two rows share would restore, or delete,
/// both. A key is unique when it holds every column of the primary key or
/// of a valid unique index (not partial, not on expressions): then `true`;
/// otherwise, with [`KeyRows::Check`], when no two rows of the table hold
/// the same key now: then `false`.
async fn refuse_key_not_unique(
    executor: &mut dyn Executor,
    quoted: &str,
    table: &str,
    key: &[String],
    primary_key: &[String],
    check: KeyRows,
) -> std::result::Result<bool, KeyCheck> {
    let covers = |columns: &[String]| {
        !columns.is_empty() && columns.iter().all(|column| key.contains(column))
    };
    if covers(primary_key) {
        return Ok(true);
    }
    // Each unique index's key columns, as rows of (index, column name),
    // an index's rows together; an expression's column has no name.
    let rows = match executor.engine() {
        Engine::Sqlite => {
            executor
                .fetch(
                    "SELECT il.name, ii.name FROM pragma_index_list(?1) AS il \
                     JOIN pragma_index_info(il.name) AS ii \
                     WHERE il.\"unique\" AND NOT il.partial ORDER BY il.seq, ii.seqno",
                    &[Bind::Value(SqlValue::Text(table.to_owned()))],
                )
                .await?
        }
        Engine::Postgres => {
            executor
                .fetch(
                    "SELECT i.indexrelid::text, a.attname::text FROM pg_index i \
                     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                     WHERE i.indrelid = to_regclass($1) AND i.indisunique \
                     AND i.indisvalid AND i.indisready AND i.indislive \
                     AND i.indpred IS NULL AND i.indexprs IS NULL \
                     AND array_position(i.indkey::int2[], a.attnum) < i.indnkeyatts \
                     ORDER BY i.indexrelid",
                    &[Bind::Value(SqlValue::Text(quoted.to_owned()))],
                )
                .await?
        }
    };
    let mut indexes: Vec<(String, Vec<String>)> = Vec::new();
    for row in &rows {
        let index = text(&row[0]);
        let column = match &row[1] {
            SqlValue::Null => String::new(),
            other => text(other),
        };
        match indexes.last_mut() {
            Some((last, columns)) if *last == index => columns.push(column),
            _ => indexes.push((index, vec![column])),
        }
    }
    if indexes.iter().any(|(_, columns)| covers(columns)) {
        return Ok(true);
    }
    if check == KeyRows::Recorded {
        return Ok(false);
    }
    let keys = key
        .iter()
        .map(|name| quote_ident(name))
        .collect::<Vec<_>>()
        .join(", ");
    let present = key
        .iter()
        .map(|name| format!("{} IS NOT NULL", quote_ident(name)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let shared = executor
        .fetch(
            &format!(
                "SELECT {keys} FROM {quoted} WHERE {present} GROUP BY {keys} HAVING count(*) > 1 LIMIT 1"
            ),
            &[],
        )
        .await
        .map_err(|error| {
            KeyCheck::Refused(DbError::KeyUncheckable {
                table: table.to_owned(),
                key: key.join(", "),
                message: error.to_string(),
            })
        })?;
    match shared.first() {
        None => Ok(false),
        Some(values) => Err(KeyCheck::Refused(DbError::KeyNotUnique {
            table: table.to_owned(),
            key: key.join(", "),
            value: rewind_ledger::event::render_key(values),
        })),
    }
}

/// The state of a sequence: its value and whether `nextval` was called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SequenceState {
    pub name: String,
    pub value: i64,
    pub is_called: bool,
}

/// The sequences a table's inserts advance: PostgreSQL sequences owned by
/// its columns, or the table's row in SQLite's `sqlite_sequence` (then
/// `is_called` says whether the row existed).
pub(crate) async fn sequences(
    executor: &mut dyn Executor,
    table: &TableInfo,
) -> Result<Vec<SequenceState>, sqlx::Error> {
    match executor.engine() {
        Engine::Sqlite => {
            let has_table = executor
                .fetch(
                    "SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_sequence'",
                    &[],
                )
                .await?;
            if has_table.first().map(|row| &row[0]) != Some(&SqlValue::Integer(1)) {
                return Ok(Vec::new());
            }
            let rows = executor
                .fetch(
                    "SELECT seq FROM sqlite_sequence WHERE name = ?1",
                    &[Bind::Value(SqlValue::Text(table.name.clone()))],
                )
                .await?;
            Ok(vec![match rows.first().map(|row| &row[0]) {
                Some(SqlValue::Integer(value)) => SequenceState {
                    name: table.name.clone(),
                    value: *value,
                    is_called: true,
                },
                _ => SequenceState {
                    name: table.name.clone(),
                    value: 0,
                    is_called: false,
                },
            }])
        }
        Engine::Postgres => {
            let names = executor
                .fetch(
                    "SELECT s.oid::regclass::text FROM pg_depend d JOIN pg_class s ON s.oid = d.objid \
                     WHERE s.relkind = 'S' AND d.classid = 'pg_class'::regclass \
                     AND d.refclassid = 'pg_class'::regclass AND d.refobjid = to_regclass($1) \
                     AND d.deptype IN ('a', 'i') ORDER BY 1",
                    &[Bind::Value(SqlValue::Text(table.quoted.clone()))],
                )
                .await?;
            let mut states = Vec::new();
            for row in names {
                let name = text(&row[0]);
                // The name comes from the catalog's regclass output, which quotes it as needed.
                let state = executor
                    .fetch(&format!("SELECT last_value, is_called FROM {name}"), &[])
                    .await?;
                if let Some([SqlValue::Integer(value), SqlValue::Integer(is_called)]) =
                    state.first().map(Vec::as_slice)
                {
                    states.push(SequenceState {
                        name,
                        value: *value,
                        is_called: *is_called != 0,
                    });
                }
            }
            Ok(states)
        }
    }
}

/// A foreign key of another table that references this one and changes
/// its own rows when a referenced row is deleted or its key updated
/// (`CASCADE`, `SET NULL`, `SET DEFAULT`): rows rewind would not capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cascade {
    pub referencing: String,
    /// The referenced columns; empty means the primary key.
    pub columns: Vec<String>,
    pub on_delete: bool,
    pub on_update: bool,
}

/// The foreign keys that cascade into other tables from `table`.
pub(crate) async fn cascades(
    executor: &mut dyn Executor,
    table: &TableInfo,
) -> Result<Vec<Cascade>, sqlx::Error> {
    let rows = match executor.engine() {
        Engine::Sqlite => {
            executor
                .fetch(
                    "SELECT m.name, coalesce(f.\"to\", ''), \
                     f.on_delete IN ('CASCADE', 'SET NULL', 'SET DEFAULT'), \
                     f.on_update IN ('CASCADE', 'SET NULL', 'SET DEFAULT') \
                     FROM sqlite_master AS m, pragma_foreign_key_list(m.name) AS f \
                     WHERE m.type = 'table' AND f.\"table\" = ?1 COLLATE NOCASE",
                    &[Bind::Value(SqlValue::Text(table.name.clone()))],
                )
                .await?
        }
        Engine::Postgres => {
            executor
                .fetch(
                    "SELECT c.conrelid::regclass::text, \
                     (SELECT string_agg(a.attname::text, ',' ORDER BY a.attnum) FROM pg_attribute a \
                      WHERE a.attrelid = c.confrelid AND a.attnum = ANY(c.confkey)), \
                     c.confdeltype IN ('c', 'n', 'd'), c.confupdtype IN ('c', 'n', 'd') \
                     FROM pg_constraint c WHERE c.contype = 'f' AND c.confrelid = to_regclass($1)",
                    &[Bind::Value(SqlValue::Text(table.quoted.clone()))],
                )
                .await?
        }
    };
    Ok(rows
        .iter()
        .map(|row| Cascade {
            referencing: text(&row[0]),
            columns: text(&row[1])
                .split(',')
                .filter(|name| !name.is_empty())
                .map(str::to_owned)
                .collect(),
            on_delete: row[2] == SqlValue::Integer(1),
            on_update: row[3] == SqlValue::Integer(1),
        })
        .collect())
}

/// A trigger on a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Trigger {
    pub name: String,
    /// PostgreSQL's `tgenabled`: `O` fires in ordinary sessions, `R` only
    /// with `session_replication_role = replica`, `A` always, `D` never.
    /// SQLite triggers always fire: `A`.
    pub enabled: char,
}

/// The table's triggers, by name; on PostgreSQL those a user created (not
/// the ones behind foreign keys).
pub(crate) async fn triggers(
    executor: &mut dyn Executor,
    table: &TableInfo,
) -> Result<Vec<Trigger>, sqlx::Error> {
    let rows = match executor.engine() {
        Engine::Sqlite => {
            executor
                .fetch(
                    "SELECT name, 'A' FROM (SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger' \
                     UNION ALL SELECT name, tbl_name FROM sqlite_temp_master WHERE type = 'trigger') \
                     WHERE tbl_name = ?1 COLLATE NOCASE ORDER BY name",
                    &[Bind::Value(SqlValue::Text(table.name.clone()))],
                )
                .await?
        }
        Engine::Postgres => {
            executor
                .fetch(
                    "WITH RECURSIVE tree(oid) AS (SELECT to_regclass($1)::oid \
                       UNION SELECT i.inhrelid FROM pg_inherits i JOIN tree ON i.inhparent = tree.oid) \
                     SELECT tgname::text, tgenabled::text FROM pg_trigger \
                     WHERE tgrelid IN (SELECT oid FROM tree) AND NOT tgisinternal ORDER BY tgname",
                    &[Bind::Value(SqlValue::Text(table.quoted.clone()))],
                )
                .await?
        }
    };
    Ok(rows
        .iter()
        .map(|row| Trigger {
            name: text(&row[0]),
            enabled: text(&row[1]).chars().next().unwrap_or('O'),
        })
        .collect())
}

/// Whether the table has triggers (or, on PostgreSQL, rewrite rules) that
/// could change a row beyond what a statement's `SET` names; on
/// PostgreSQL its partitions' and inheritance children's count too, since
/// a statement on the table changes their rows.
pub(crate) async fn has_triggers(
    executor: &mut dyn Executor,
    table: &TableInfo,
) -> Result<bool, sqlx::Error> {
    if !triggers(executor, table).await?.is_empty() {
        return Ok(true);
    }
    if executor.engine() == Engine::Sqlite {
        return Ok(false);
    }
    let rules = executor
        .fetch(
            "WITH RECURSIVE tree(oid) AS (SELECT to_regclass($1)::oid \
               UNION SELECT i.inhrelid FROM pg_inherits i JOIN tree ON i.inhparent = tree.oid) \
             SELECT EXISTS (SELECT 1 FROM pg_rewrite \
               WHERE ev_class IN (SELECT oid FROM tree) AND rulename <> '_RETURN')",
            &[Bind::Value(SqlValue::Text(table.quoted.clone()))],
        )
        .await?;
    Ok(rules.first().map(|row| &row[0]) == Some(&SqlValue::Integer(1)))
}
