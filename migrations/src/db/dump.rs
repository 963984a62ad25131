//! A lossless text dump of a SQLite database, for comparing a database
//! before and after a rollback (`rehearse`, tests): the schema in
//! `sqlite_master` order, then every table's rows in rowid (or key) order,
//! each value with its storage class and REAL values as exact bits. It is
//! stricter than the `sqlite3` shell's `.dump`, which prints no rowids and
//! rounds REAL values.

use rewind_ledger::SqlValue;

use super::capture::Context;
use super::error::Result;
use super::executor::{Engine, quote_ident};

fn render(value: &SqlValue) -> String {
    match value {
        SqlValue::Null => "NULL".to_owned(),
        SqlValue::Integer(value) => value.to_string(),
        SqlValue::Real(bits) => format!("real({bits})"),
        SqlValue::Text(text) | SqlValue::Typed(text) => format!("'{}'", text.replace('\'', "''")),
        SqlValue::Blob(bytes) => format!("x'{}'", hex::encode(bytes.as_slice())),
    }
}

pub(crate) async fn sqlite(context: &mut Context<'_>) -> Result<String> {
    debug_assert_eq!(context.executor.engine(), Engine::Sqlite);
    let mut out = String::new();
    let objects = context
        .fetch(
            0,
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY rowid",
            &[],
        )
        .await?;
    let mut tables = Vec::new();
    for object in &objects {
        let [kind, name, _, sql] = object.as_slice() else {
            continue;
        };
        out.push_str(&format!("-- {} {}\n{};\n", kind, render(name), sql));
        if let (SqlValue::Text(kind), SqlValue::Text(name), SqlValue::Text(sql)) = (kind, name, sql)
            && kind == "table"
        {
            let without_rowid = sql
                .to_ascii_uppercase()
                .replace(char::is_whitespace, "")
                .contains("WITHOUTROWID");
            tables.push((name.clone(), without_rowid));
        }
    }
    for (name, without_rowid) in tables {
        let sql = if without_rowid {
            format!("SELECT * FROM {}", quote_ident(&name))
        } else {
            format!("SELECT rowid, * FROM {} ORDER BY rowid", quote_ident(&name))
        };
        let rows = context.fetch(0, &sql, &[]).await?;
        for row in rows {
            let values = row.iter().map(render).collect::<Vec<_>>().join(",");
            out.push_str(&format!(
                "INSERT INTO {} VALUES({values});\n",
                quote_ident(&name)
            ));
        }
    }
    Ok(out)
}
