//! Dumps for comparing a database before and after a rollback (`rehearse`,
//! tests).
//!
//! SQLite: a lossless text dump in Rust: the schema in `sqlite_master`
//! order, then every table's rows in rowid (or key) order, each value with
//! its storage class and REAL values as exact bits. It is stricter than the
//! `sqlite3` shell's `.dump`, which prints no rowids and rounds REAL values.
//!
//! PostgreSQL: `pg_dump` (schema or data, sequence values included), with
//! the rows of each `COPY` block sorted, because pg_dump writes rows in
//! physical order, which an `UPDATE` changes even when it restores every
//! value. The password travels in `PGPASSWORD`, not on the command line.

use rewind_ledger::SqlValue;

use super::capture::Context;
use super::error::{DbError, Result};
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

/// What a PostgreSQL dump holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgDumpPart {
    Schema,
    /// Rows and sequence values.
    Data,
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%'
            && let Some(value) = text
                .get(index + 1..index + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(value);
            index += 3;
            continue;
        }
        out.push(bytes[index]);
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits the password out of a url: the url without it, and the password.
fn split_password(url: &str) -> (String, Option<String>) {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return (url.to_owned(), None);
    };
    let authority_end = url[scheme_end..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| scheme_end + i);
    let Some(at) = url[scheme_end..authority_end]
        .rfind('@')
        .map(|i| scheme_end + i)
    else {
        return (url.to_owned(), None);
    };
    match url[scheme_end..at].find(':').map(|i| scheme_end + i) {
        Some(colon) => (
            format!("{}{}", &url[..colon], &url[at..]),
            Some(percent_decode(&url[colon + 1..at])),
        ),
        None => (url.to_owned(), None),
    }
}

/// Runs `pg_dump` on `url` and sorts the rows of each `COPY` block.
pub fn postgres(url: &str, part: PgDumpPart) -> Result<String> {
    let (url_without_password, password) = split_password(url);
    let mode = match part {
        PgDumpPart::Schema => "--schema-only",
        PgDumpPart::Data => "--data-only",
    };
    let mut command = std::process::Command::new("pg_dump");
    command.args([
        mode,
        "--no-owner",
        "--restrict-key=rewind",
        "--dbname",
        &url_without_password,
    ]);
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    let failed = |message: String| DbError::Dump {
        database: super::redact_url(url),
        message,
    };
    let output = command
        .output()
        .map_err(|error| failed(format!("cannot run pg_dump: {error}")))?;
    if !output.status.success() {
        return Err(failed(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ));
    }
    let text = String::from_utf8(output.stdout).map_err(|error| failed(error.to_string()))?;
    let mut out = Vec::new();
    let mut block: Vec<&str> = Vec::new();
    let mut in_copy = false;
    for line in text.lines() {
        if in_copy {
            if line == "\\." {
                block.sort_unstable();
                out.append(&mut block);
                out.push(line);
                in_copy = false;
            } else {
                block.push(line);
            }
        } else {
            in_copy = line.starts_with("COPY ");
            out.push(line);
        }
    }
    Ok(out.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_the_password_out() {
        assert_eq!(
            split_password("postgres://app:s%40cret@db:5432/x?sslmode=require"),
            (
                "postgres://app@db:5432/x?sslmode=require".to_owned(),
                Some("s@cret".to_owned())
            )
        );
        assert_eq!(
            split_password("postgres://app@db/x"),
            ("postgres://app@db/x".to_owned(), None)
        );
    }
}
