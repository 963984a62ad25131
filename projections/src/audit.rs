//! Audit reports of a seq range: CSV, Markdown and HTML, written entry by
//! entry so that a million events never sit in memory.
//!
//! The JSONL export (the journal's own lines) is the proof; these are for
//! reading, filing and spreadsheets. Markdown and HTML end with the range's
//! first `prev` and last hash, the newest checkpoint in it, and the commands
//! that prove it.
//!
//! The CSV still carries the proof: its `seq`, `prev`, `hash` and `record`
//! (the canonical JSON) columns are exactly what `tools/verify_chain.py`
//! checks, so the chain of a CSV export verifies like a JSONL one. Its
//! header is exactly [`CSV_COLUMNS`] (the verifier holds the same list, and
//! a test keeps the two equal) and every row has exactly that many fields.
//! The reading columns are checked against their record: `recorded_at`,
//! `run`, `actor`, `host`, `kind` and `step` (the event's own `step`, empty
//! when it has none). `summary` is [`describe::summary`], a sentence only
//! this code can write: the verifier cannot recompute it, leaves it
//! unchecked and says so. What a verified CSV proves is therefore the chain,
//! the records and every column but `summary`.
//!
//! A spreadsheet reads a cell that starts with `=`, `+`, `-` or `@` (or a
//! tab or carriage return before one) as a formula, and an actor, a host, a
//! run id or a table name in a summary is text an operator chose. So a
//! reading cell (every column but `seq`, `prev`, `hash` and `record`, which
//! hold digits, hex and JSON) whose text starts with one of
//! [`FORMULA_STARTS`] is written with one leading `'`, which spreadsheets
//! take as "text follows"; a value starting with `'` gets one too, so that
//! stripping exactly one leading `'` from a cell that has one gives back the
//! value. The verifier does that strip before comparing a cell with its
//! record, and refuses a cell not written by this rule (a formula left
//! unescaped, a `'` that was not needed), `summary` included, so a CSV that
//! verifies is also one a spreadsheet shows as text.
//!
//! Spreadsheet programs cut a cell at 32,767 characters, and the `record`
//! of a large `RowsChanged` is longer: verify the CSV as it was exported,
//! never a copy a spreadsheet saved again.

use std::borrow::Cow;
use std::io::{self, Write};

use rewind_ledger::canonical::record_json;
use rewind_ledger::{Digest, Entry, Event};

use crate::describe;

/// How a report is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Markdown,
    Html,
}

/// What a report says about itself before its first event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub ledger_id: String,
    pub first: u64,
    pub last: u64,
    /// What the range was asked for as: `run r1`, `since …`, or the whole ledger.
    pub scope: String,
    /// The command that exports exactly `first..=last` as JSONL.
    pub jsonl_command: String,
}

/// The columns of the CSV report, in order.
pub const CSV_COLUMNS: [&str; 11] = [
    "seq",
    "prev",
    "hash",
    "recorded_at",
    "run",
    "actor",
    "host",
    "kind",
    "step",
    "summary",
    "record",
];

/// The first characters that make a spreadsheet read a cell as something
/// other than the text it holds; a reading cell starting with one gets a
/// leading `'` (see the module docs). `tools/verify_chain.py` holds the same
/// list.
pub const FORMULA_STARTS: [char; 7] = ['=', '+', '-', '@', '\t', '\r', '\''];

/// Writes one report, one entry at a time: `begin`, `entry` for each entry
/// in seq order, then `end`.
#[derive(Debug)]
pub struct Report {
    format: Format,
    header: Header,
    count: u64,
    first_prev: Option<Digest>,
    last_hash: Option<Digest>,
    /// The newest checkpoint seen: its seq, the head it signs, its key.
    checkpoint: Option<(u64, Digest, String)>,
}

impl Report {
    pub fn new(format: Format, header: Header) -> Report {
        Report {
            format,
            header,
            count: 0,
            first_prev: None,
            last_hash: None,
            checkpoint: None,
        }
    }

    pub fn begin(&self, out: &mut (impl Write + ?Sized)) -> io::Result<()> {
        let Header {
            ledger_id,
            first,
            last,
            scope,
            ..
        } = &self.header;
        match self.format {
            Format::Csv => csv_row(out, CSV_COLUMNS),
            Format::Markdown => {
                writeln!(out, "# Audit trail of ledger {}", markdown(ledger_id))?;
                writeln!(out)?;
                writeln!(out, "Events seq {first} to {last} ({}).", markdown(scope))?;
                writeln!(out)?;
                writeln!(out, "| seq | recorded (UTC) | run | actor | host | event |")?;
                writeln!(out, "| ---: | --- | --- | --- | --- | --- |")
            }
            Format::Html => {
                let title = format!("Audit trail of ledger {ledger_id}");
                write!(
                    out,
                    "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
                     <title>{}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n\
                     <p>Events seq {first} to {last} ({}).</p>\n<table>\n<thead><tr><th>seq</th>\
                     <th>recorded (UTC)</th><th>run</th><th>actor</th><th>host</th><th>kind</th>\
                     <th>event</th></tr></thead>\n<tbody>\n",
                    html(&title),
                    html(&title),
                    html(scope)
                )
            }
        }
    }

    pub fn entry(&mut self, out: &mut (impl Write + ?Sized), entry: &Entry) -> io::Result<()> {
        self.count += 1;
        self.first_prev.get_or_insert(entry.prev);
        self.last_hash = Some(entry.hash);
        if let Event::Checkpoint(checkpoint) = &entry.record.event {
            self.checkpoint = Some((
                entry.seq(),
                checkpoint.head,
                hex::encode(checkpoint.public_key.as_slice()),
            ));
        }
        let record = &entry.record;
        let run = record.run.as_deref().unwrap_or("");
        let summary = describe::summary(&record.event);
        match self.format {
            Format::Csv => {
                let json = record_json(record);
                let step = record
                    .event
                    .step()
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                let recorded_at = record.recorded_at.to_string();
                let reading = [
                    recorded_at.as_str(),
                    run,
                    &record.actor,
                    &record.host,
                    record.event.kind(),
                    &step,
                    &summary,
                ]
                .map(spreadsheet_text);
                let seq = entry.seq().to_string();
                let (prev, hash) = (entry.prev.to_hex(), entry.hash.to_hex());
                let proof = [seq.as_str(), &prev, &hash];
                let record = std::str::from_utf8(&json).expect("canonical JSON is UTF-8");
                csv_row(
                    out,
                    proof
                        .into_iter()
                        .chain(reading.iter().map(|cell| cell.as_ref()))
                        .chain([record]),
                )
            }
            Format::Markdown => writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                entry.seq(),
                record.recorded_at,
                markdown(run),
                markdown(&record.actor),
                markdown(&record.host),
                markdown(&summary)
            ),
            Format::Html => writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                entry.seq(),
                record.recorded_at,
                html(run),
                html(&record.actor),
                html(&record.host),
                record.event.kind(),
                html(&summary)
            ),
        }
    }

    pub fn end(&self, out: &mut (impl Write + ?Sized)) -> io::Result<()> {
        let (Some(first_prev), Some(last_hash)) = (self.first_prev, self.last_hash) else {
            return match self.format {
                Format::Csv => Ok(()),
                Format::Markdown => writeln!(out, "\nNo events in this range."),
                Format::Html => write!(
                    out,
                    "</tbody>\n</table>\n<p>No events in this range.</p>\n</body>\n</html>\n"
                ),
            };
        };
        let checkpoint = match &self.checkpoint {
            Some((seq, head, key)) => format!("seq {seq}, signing head {head} with key {key}"),
            None => "none in this range".to_owned(),
        };
        let facts = [
            ("events", self.count.to_string()),
            ("prev of the first event", first_prev.to_hex()),
            ("hash of the last event", last_hash.to_hex()),
            ("newest checkpoint", checkpoint),
        ];
        let prove = format!(
            "{}\npython3 tools/verify_chain.py trail.jsonl --prev {first_prev} --head {last_hash}",
            self.header.jsonl_command
        );
        match self.format {
            Format::Csv => Ok(()),
            Format::Markdown => {
                writeln!(out, "\n## Proof\n")?;
                writeln!(out, "| | |\n| --- | --- |")?;
                for (name, value) in facts {
                    writeln!(out, "| {name} | {} |", markdown(&value))?;
                }
                writeln!(
                    out,
                    "\nThis report is for reading. The proof that nothing in the range was \
                     altered, removed or reordered is the JSONL export of the same range, \
                     checked without rewind:\n\n```sh\n{prove}\n```"
                )
            }
            Format::Html => {
                write!(
                    out,
                    "</tbody>\n</table>\n<h2>Proof</h2>\n<table class=\"proof\">\n"
                )?;
                for (name, value) in facts {
                    writeln!(out, "<tr><th>{name}</th><td>{}</td></tr>", html(&value))?;
                }
                write!(
                    out,
                    "</table>\n<p>This report is for reading. The proof that nothing in the range \
                     was altered, removed or reordered is the JSONL export of the same range, \
                     checked without rewind:</p>\n<pre>{}</pre>\n</body>\n</html>\n",
                    html(&prove)
                )
            }
        }
    }
}

const STYLE: &str = "body { font-family: system-ui, sans-serif; margin: 2em; }\n\
table { border-collapse: collapse; }\n\
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; vertical-align: top; }\n\
td:first-child { text-align: right; }\n\
.proof td { font-family: monospace; }\n";

/// One CSV line (RFC 4180): a field holding a comma, quote, CR or LF is
/// quoted, with quotes doubled; lines end in CRLF.
fn csv_row<'a>(
    out: &mut (impl Write + ?Sized),
    fields: impl IntoIterator<Item = &'a str>,
) -> io::Result<()> {
    for (index, field) in fields.into_iter().enumerate() {
        if index > 0 {
            out.write_all(b",")?;
        }
        if field.contains([',', '"', '\r', '\n']) {
            write!(out, "\"{}\"", field.replace('"', "\"\""))?;
        } else {
            out.write_all(field.as_bytes())?;
        }
    }
    out.write_all(b"\r\n")
}

/// A reading cell of the CSV: text starting with one of [`FORMULA_STARTS`]
/// gets one leading `'`, so that a spreadsheet shows it as text.
fn spreadsheet_text(text: &str) -> Cow<'_, str> {
    if text.starts_with(FORMULA_STARTS) {
        Cow::Owned(format!("'{text}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// Text for a Markdown table cell: pipes, backslashes and the characters
/// that start markup are escaped; line breaks become spaces.
fn markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '\\' | '|' | '*' | '_' | '`' | '[' | ']' | '<' | '>' | '#' => {
                out.push('\\');
                out.push(character);
            }
            '\r' | '\n' => out.push(' '),
            other => out.push(other),
        }
    }
    out
}

/// Text for HTML content or attributes.
fn html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_they_must_be() {
        let mut out = Vec::new();
        csv_row(&mut out, ["plain", "a,b", "say \"hi\"", "two\nlines", ""]).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",\r\n"
        );
    }

    #[test]
    fn a_cell_a_spreadsheet_would_run_gets_one_leading_quote() {
        for (text, cell) in [
            ("=HYPERLINK(\"x\")", "'=HYPERLINK(\"x\")"),
            ("+1", "'+1"),
            ("-1", "'-1"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\t=1", "'\t=1"),
            ("\r=1", "'\r=1"),
            ("'quoted", "''quoted"),
            ("a=1", "a=1"),
            (" =1", " =1"),
            ("", ""),
        ] {
            assert_eq!(spreadsheet_text(text), cell, "{text:?}");
        }
    }

    #[test]
    fn markup_in_text_stays_text() {
        assert_eq!(markdown("a|b *c* `d`\nnext"), "a\\|b \\*c\\* \\`d\\` next");
        assert_eq!(
            html("<script>alert('x')</script> & \"y\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
        );
    }
}
