//! Packed row images: the database builds a whole chunk's images into one
//! value, so that a chunk crosses sqlx as one row instead of one row per
//! table row (sqlx's SQLite driver hands rows over one by one from its
//! worker thread). This module writes the SQL that packs them and reads the
//! packed text back into exactly the [`SqlValue`]s the executors'
//! row-by-row decoders produce.
//!
//! - SQLite: `json_group_array` of one `json_array` per row. An integer is
//!   a JSON number, a text a JSON string (NUL and control characters
//!   escaped), NULL is `null`, a blob is `{"b": "<hex>"}`. A real is never
//!   sent as decimal text: SQLite's own rendering is not correctly rounded
//!   (`printf('%!.17g')` of 0x7b07ce91e5906136 reads back one ulp off), so
//!   a finite real is `[a, b, c]`, three integers with
//!   `x = a + (b + c / 2^62) / 2^62` — its integer part and two 62-bit
//!   steps of its fraction, found by exact operations, and checked by
//!   SQLite with the same operations in the same order as
//!   [`real_from_parts`] repeats them, so the double read back is the
//!   double stored; `[a, b]` when `c` is 0. An infinity is `["inf"]` or
//!   `["-inf"]`. A real the parts cannot hold (|x| ≥ 2^63, or bits below
//!   2^-124), and a real zero in a column without REAL affinity (where
//!   `-0.0` can be stored, and the parts lose the sign), is packed as `[]`:
//!   the chunk is then read again row by row ([`Packed::Inexact`]).
//! - PostgreSQL: `string_agg` of `ROW(c0::text, …)::text`, one record per
//!   line. The fields are the columns' `::text` forms, as the row-by-row
//!   path reads them, quoted by `record_out` where needed.

use rewind_ledger::{Bytes, SqlValue};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use super::sqlite::real_to_bits;

/// Whether SQLite gives a column of this declared type REAL affinity
/// (the rules of <https://sqlite.org/datatype3.html>, section 3.1): such a
/// column stores an integral real as an integer and reads it back as a
/// real, so a real zero read from it is always `+0.0`.
pub(crate) fn sqlite_real_affinity(declared: &str) -> bool {
    let upper = declared.to_ascii_uppercase();
    let has = |part: &str| upper.contains(part);
    !has("INT")
        && !has("CHAR")
        && !has("CLOB")
        && !has("TEXT")
        && !has("BLOB")
        && !upper.trim().is_empty()
        && (has("REAL") || has("FLOA") || has("DOUB"))
}

/// 2^62, the scale of each step of a real's fraction.
const SCALE: f64 = 4_611_686_018_427_387_904.0;
const SCALE_SQL: &str = "CAST(4611686018427387904 AS REAL)";

/// The double `a + (b + c / 2^62) / 2^62`, computed as SQLite checked it
/// (with two parts, `a + b / 2^62`).
pub(crate) fn real_from_parts(a: i64, b: i64, c: i64) -> f64 {
    a as f64 + (b as f64 + c as f64 / SCALE) / SCALE
}

/// The JSON of one SQLite value, `expression` being a column of a subquery.
pub(crate) fn sqlite_value_json(expression: &str, real_affinity: bool) -> String {
    let x = expression;
    let a = format!("CAST({x} AS INTEGER)");
    // The fraction scaled by 2^62, its integer part, and the rest scaled again.
    let scaled = format!("(({x} - {a}) * {SCALE_SQL})");
    let b = format!("CAST({scaled} AS INTEGER)");
    let c = format!("CAST(({scaled} - {b}) * {SCALE_SQL} AS INTEGER)");
    let zero = if real_affinity {
        String::new()
    } else {
        format!("WHEN {x} = 0 THEN json_array() ")
    };
    // Most reals need no third part: `[a, b]` stands for `[a, b, 0]`.
    let real = format!(
        "CASE {zero}WHEN {a} + {b} / {SCALE_SQL} = {x} THEN json_array({a}, {b}) \
         WHEN {x} = 9e999 THEN json_array('inf') WHEN {x} = -9e999 THEN json_array('-inf') \
         WHEN {a} + ({b} + {c} / {SCALE_SQL}) / {SCALE_SQL} = {x} THEN json_array({a}, {b}, {c}) \
         ELSE json_array() END"
    );
    format!(
        "CASE typeof({x}) WHEN 'real' THEN {real} \
         WHEN 'blob' THEN json_object('b', hex({x})) ELSE {x} END"
    )
}

/// A SQLite chunk read back from its packed text.
#[derive(Debug, PartialEq)]
pub(crate) enum Packed {
    Rows(Vec<Vec<SqlValue>>),
    /// A real the packing cannot hold exactly (a zero whose sign it cannot
    /// tell, or beyond its parts): read the chunk again row by row.
    Inexact,
}

/// One value of a packed SQLite row; `None` is a real packed as `[]`.
struct Cell(Option<SqlValue>);

impl<'de> Deserialize<'de> for Cell {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Cell, D::Error> {
        deserializer.deserialize_any(CellVisitor)
    }
}

struct CellVisitor;

impl<'de> Visitor<'de> for CellVisitor {
    type Value = Cell;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a packed SQLite value")
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Cell, E> {
        Ok(Cell(Some(SqlValue::Integer(value))))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Cell, E> {
        i64::try_from(value)
            .map(|value| Cell(Some(SqlValue::Integer(value))))
            .map_err(|_| E::custom(format!("integer {value} out of range")))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Cell, E> {
        Ok(Cell(Some(SqlValue::Text(value.to_owned()))))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Cell, E> {
        Ok(Cell(Some(SqlValue::Text(value))))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Cell, E> {
        Ok(Cell(Some(SqlValue::Null)))
    }

    /// `[a, b, c]` is a real, `["inf"]` or `["-inf"]` an infinity, `[]` a
    /// real the parts cannot hold exactly.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Cell, A::Error> {
        let Some(first) = seq.next_element::<Part>()? else {
            return Ok(Cell(None));
        };
        let value = match first {
            Part::Infinity(negative) => {
                if negative {
                    f64::NEG_INFINITY
                } else {
                    f64::INFINITY
                }
            }
            Part::Integer(a) => {
                let mut next = || -> Result<i64, A::Error> {
                    match seq.next_element::<Part>()? {
                        Some(Part::Integer(part)) => Ok(part),
                        _ => Err(de::Error::custom("a real packs two or three integers")),
                    }
                };
                let b = next()?;
                match seq.next_element::<Part>()? {
                    None => real_from_parts(a, b, 0),
                    Some(Part::Integer(c)) => real_from_parts(a, b, c),
                    Some(Part::Infinity(_)) => {
                        return Err(de::Error::custom("a real packs integers"));
                    }
                }
            }
        };
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::custom("a real packs one value"));
        }
        Ok(Cell(Some(SqlValue::Real(real_to_bits(value)))))
    }

    /// `{"b": "00FF"}` is a blob.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Cell, A::Error> {
        let Some((tag, digits)) = map.next_entry::<&str, &str>()? else {
            return Err(de::Error::custom("an empty object packs no value"));
        };
        if tag != "b" {
            return Err(de::Error::custom(format!("unknown packed tag {tag}")));
        }
        let bytes = hex::decode(digits).map_err(de::Error::custom)?;
        Ok(Cell(Some(SqlValue::Blob(Bytes(bytes)))))
    }
}

/// One element of a packed real.
enum Part {
    Integer(i64),
    /// Negative or not.
    Infinity(bool),
}

impl<'de> Deserialize<'de> for Part {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Part, D::Error> {
        struct PartVisitor;
        impl Visitor<'_> for PartVisitor {
            type Value = Part;

            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a part of a packed real")
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Part, E> {
                Ok(Part::Integer(value))
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Part, E> {
                i64::try_from(value)
                    .map(Part::Integer)
                    .map_err(|_| E::custom(format!("integer {value} out of range")))
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<Part, E> {
                match value {
                    "inf" => Ok(Part::Infinity(false)),
                    "-inf" => Ok(Part::Infinity(true)),
                    other => Err(E::custom(format!("bad real {other}"))),
                }
            }
        }
        deserializer.deserialize_any(PartVisitor)
    }
}

/// Reads `json_group_array` output; every row must have `width` values.
pub(crate) fn parse_sqlite(packed: &str, width: usize) -> Result<Packed, String> {
    let mut deserializer = serde_json::Deserializer::from_str(packed);
    let rows = de::DeserializeSeed::deserialize(RowsSeed { width }, &mut deserializer)
        .and_then(|rows| deserializer.end().map(|()| rows))
        .map_err(|error| error.to_string())?;
    Ok(rows.map_or(Packed::Inexact, Packed::Rows))
}

/// The rows of a chunk, straight into their vectors; `None` when a value
/// is inexact.
struct RowsSeed {
    width: usize,
}

impl<'de> de::DeserializeSeed<'de> for RowsSeed {
    type Value = Option<Vec<Vec<SqlValue>>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RowsSeed {
    type Value = Option<Vec<Vec<SqlValue>>>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("an array of packed rows")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut rows = Vec::new();
        let mut exact = true;
        while let Some(row) = seq.next_element_seed(RowSeed { width: self.width })? {
            match row {
                Some(row) if exact => rows.push(row),
                Some(_) => {}
                None => exact = false,
            }
        }
        Ok(exact.then_some(rows))
    }
}

/// One row of `width` values; `None` when one of them is inexact.
struct RowSeed {
    width: usize,
}

impl<'de> de::DeserializeSeed<'de> for RowSeed {
    type Value = Option<Vec<SqlValue>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RowSeed {
    type Value = Option<Vec<SqlValue>>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a packed row")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut values = Vec::with_capacity(self.width);
        let mut exact = true;
        while let Some(Cell(value)) = seq.next_element()? {
            match value {
                Some(value) => values.push(value),
                None => exact = false,
            }
        }
        if exact && values.len() != self.width {
            return Err(de::Error::custom(format!(
                "a packed row has {} values, not {}",
                values.len(),
                self.width
            )));
        }
        Ok(exact.then_some(values))
    }
}

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

    #[test]
    fn reads_sqlite_json() {
        let packed = r#"[[1,-9223372036854775808,"a\u0000b",null,{"b":"00FF"},[1,2305843009213693952,0],["-inf"],["1.5"]]]"#;
        let error = parse_sqlite(packed, 8).unwrap_err();
        assert!(error.contains("bad real"), "{error}");
        let packed = r#"[[1,-9223372036854775808,"a\u0000b",null,{"b":"00FF"},[1,2305843009213693952,0],["-inf"],[-2,-2305843009213693952]]]"#;
        assert_eq!(
            parse_sqlite(packed, 8).unwrap(),
            Packed::Rows(vec![vec![
                SqlValue::Integer(1),
                SqlValue::Integer(i64::MIN),
                SqlValue::Text("a\0b".into()),
                SqlValue::Null,
                SqlValue::Blob(Bytes(vec![0, 255])),
                SqlValue::Real(real_to_bits(1.5)),
                SqlValue::Real(real_to_bits(f64::NEG_INFINITY)),
                SqlValue::Real(real_to_bits(-2.5)),
            ]])
        );
        assert_eq!(parse_sqlite(r#"[[1,[]]]"#, 2).unwrap(), Packed::Inexact);
        assert!(parse_sqlite(r#"[[1]]"#, 2).is_err());
        assert!(parse_sqlite(r#"[[1.5]]"#, 1).is_err());
        assert!(parse_sqlite(r#"[[[1]]]"#, 1).is_err());
        assert!(parse_sqlite(r#"[[["inf",1]]]"#, 1).is_err());
        assert!(parse_sqlite(r#"[[[1,2,3,4]]]"#, 1).is_err());
    }

    #[test]
    fn real_parts_rebuild_the_double() {
        let check = |value: f64| {
            let a = value.trunc() as i64;
            let scaled = (value - a as f64) * SCALE;
            let b = scaled.trunc() as i64;
            let c = ((scaled - b as f64) * SCALE).trunc() as i64;
            assert_eq!(
                real_from_parts(a, b, c).to_bits(),
                value.to_bits(),
                "{value}"
            );
        };
        for value in [
            0.1,
            -0.1,
            1.0 / 3.0,
            1e-20,
            -123456.789,
            9.007199254740993e15,
            0.5,
        ] {
            check(value);
        }
    }

    #[test]
    fn knows_real_affinity() {
        for declared in ["REAL", "double precision", "FLOAT", "float8"] {
            assert!(sqlite_real_affinity(declared), "{declared}");
        }
        // "FLOATING POINT" holds "INT", so its affinity is INTEGER.
        for declared in [
            "",
            "BLOB",
            "NUMERIC",
            "INTEGER",
            "FLOATING POINT",
            "ANY",
            "TEXT",
            "CHARFLOAT",
        ] {
            assert!(!sqlite_real_affinity(declared), "{declared}");
        }
    }
}
