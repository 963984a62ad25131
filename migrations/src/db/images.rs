//! Packed PostgreSQL row images: the server builds a whole chunk's images
//! into one value, `string_agg` of `ROW(c0::text, …)::text`, one record
//! per line, so that a chunk crosses sqlx as one row instead of one row
//! per table row. The fields are the columns' `::text` forms, as the
//! row-by-row path reads them, quoted by `record_out` where needed; this
//! module writes the SQL that packs them and reads the packed text back
//! into exactly the [`SqlValue`]s the row-by-row decoder produces.
//!
//! (SQLite's rows are read on its handle and packed as they are stepped:
//! [`super::sqlite_raw`].)

use rewind_ledger::SqlValue;

/// `ROW(e0::text, e1::text, …)::text`: one record of text fields.
pub(crate) fn pg_record(fields: &[String]) -> String {
    format!("ROW({})::text", fields.join(", "))
}

/// Reads `string_agg` of records joined by newlines; every record must
/// have `width` fields. A field is NULL when empty and unquoted; quoted
/// fields double `"` and escape `\`, as `record_out` writes them.
pub(crate) fn parse_pg(packed: &str, width: usize) -> Result<Vec<Vec<SqlValue>>, String> {
    let bytes = packed.as_bytes();
    let mut rows = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] != b'(' {
            return Err(format!(
                "a packed record starts with {:?}",
                bytes[at] as char
            ));
        }
        at += 1;
        let mut row = Vec::with_capacity(width);
        loop {
            let field = match bytes.get(at) {
                Some(b',' | b')') => SqlValue::Null,
                Some(b'"') => {
                    at += 1;
                    let mut text = String::new();
                    let mut run = at;
                    loop {
                        match bytes.get(at) {
                            Some(b'"') if bytes.get(at + 1) == Some(&b'"') => {
                                text.push_str(&packed[run..=at]);
                                at += 2;
                                run = at;
                            }
                            Some(b'"') => {
                                text.push_str(&packed[run..at]);
                                at += 1;
                                break;
                            }
                            Some(b'\\') => {
                                text.push_str(&packed[run..at]);
                                // The escaped character is ASCII (`\` or `"`).
                                run = at + 1;
                                at += 2;
                            }
                            Some(_) => at += 1,
                            None => return Err("a quoted field does not end".to_owned()),
                        }
                    }
                    SqlValue::Typed(text)
                }
                Some(_) => {
                    let start = at;
                    while !matches!(bytes.get(at), Some(b',' | b')') | None) {
                        at += 1;
                    }
                    SqlValue::Typed(packed[start..at].to_owned())
                }
                None => return Err("a packed record does not end".to_owned()),
            };
            row.push(field);
            match bytes.get(at) {
                Some(b',') => at += 1,
                Some(b')') => {
                    at += 1;
                    break;
                }
                _ => return Err("a packed field is followed by neither , nor )".to_owned()),
            }
        }
        if row.len() != width {
            return Err(format!(
                "a packed record has {} fields, not {width}",
                row.len()
            ));
        }
        rows.push(row);
        match bytes.get(at) {
            Some(b'\n') => at += 1,
            None => {}
            Some(other) => return Err(format!("a packed record ends in {:?}", *other as char)),
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(text: &str) -> SqlValue {
        SqlValue::Typed(text.to_owned())
    }

    #[test]
    fn reads_postgres_records() {
        let packed = "(1,,\"\",\"a \"\"b\"\" \\\\ c\")\n(2,\"x,y\",\"(\n)\",plain)";
        assert_eq!(
            parse_pg(packed, 4).unwrap(),
            vec![
                vec![typed("1"), SqlValue::Null, typed(""), typed("a \"b\" \\ c")],
                vec![typed("2"), typed("x,y"), typed("(\n)"), typed("plain")],
            ]
        );
        assert_eq!(parse_pg("()", 1).unwrap(), vec![vec![SqlValue::Null]]);
        assert_eq!(parse_pg("", 3).unwrap(), Vec::<Vec<SqlValue>>::new());
        assert!(parse_pg("(1,2)", 3).is_err());
        assert!(parse_pg("(1,\"2)", 2).is_err());
        assert!(parse_pg("(1)x", 1).is_err());
    }
}
