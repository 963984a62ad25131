//! `rewind audit export`: the audit trail of a period or a run, as lines an
//! auditor verifies without rewind (`tools/verify_chain.py`).
//!
//! An export is always a contiguous seq range, so that it proves nothing in
//! between was left out: `--run` exports from the run's first to its last
//! event, including whatever else was recorded in between.

use std::io::Write;

use rewind_ledger::canonical::entry_line;
use rewind_ledger::{Digest, Selector};
use rewind_projections::audit::{Format, Header, Report};

use crate::cli::{ExportArgs, ExportFormat};
use crate::context::{Ctx, parse_window};
use crate::error::{CliError, CliResult};

pub fn export(ctx: &mut Ctx, args: ExportArgs) -> CliResult {
    let (since, until) = parse_window(args.since.as_deref(), args.until.as_deref())?;
    let view = ctx.open_read()?;
    let (head, _) = view.head();
    let mut first = 1;
    let mut last = head;
    if let Some(run) = &args.run {
        let selector = Selector {
            run: Some(run.clone()),
            ..Selector::default()
        };
        let seqs: Vec<u64> = view
            .select(&selector, None)?
            .iter()
            .filter(|e| e.record.run.as_deref() == Some(run))
            .map(|e| e.seq())
            .collect();
        let (Some(&start), Some(&end)) = (seqs.first(), seqs.last()) else {
            return Err(
                CliError::usage(format!("there is no run {run:?} in this ledger"))
                    .hint("`rewind history --kind RunStarted` lists the runs"),
            );
        };
        first = start;
        last = end;
    }
    if since.is_some() || until.is_some() {
        let selector = Selector {
            since,
            until,
            ..Selector::default()
        };
        let window: Vec<u64> = view
            .select(&selector, None)?
            .iter()
            .map(|e| e.seq())
            .filter(|seq| (first..=last).contains(seq))
            .collect();
        match (window.first(), window.last()) {
            (Some(&start), Some(&end)) => {
                first = start;
                last = end;
            }
            _ => last = 0,
        }
    }
    let mut file = args
        .output
        .as_ref()
        .map(fs_err::File::create)
        .transpose()?
        .map(std::io::BufWriter::new);
    let out: &mut dyn Write = match &mut file {
        Some(file) => file,
        None => ctx.printer.out(),
    };
    let mut count = 0u64;
    let mut end_hash = Digest::default();
    let format = match args.format {
        ExportFormat::Jsonl => None,
        ExportFormat::Csv => Some(Format::Csv),
        ExportFormat::Md => Some(Format::Markdown),
        ExportFormat::Html => Some(Format::Html),
    };
    match format {
        None => {
            view.for_each_in(first, last, |entry| {
                let mut line = entry_line(entry);
                line.push(b'\n');
                out.write_all(&line)?;
                count += 1;
                end_hash = entry.hash;
                Ok(())
            })?;
        }
        Some(format) => {
            let mut report = Report::new(
                format,
                Header {
                    ledger_id: view.ledger_id().to_owned(),
                    first,
                    last,
                    scope: scope(&args),
                    jsonl_command: jsonl_command(&args),
                },
            );
            report.begin(out)?;
            view.for_each_in(first, last, |entry| {
                report.entry(out, entry)?;
                count += 1;
                end_hash = entry.hash;
                Ok(())
            })?;
            report.end(out)?;
        }
    }
    out.flush()?;
    if count == 0 {
        ctx.printer
            .warning("no events in that range; nothing was exported");
    } else {
        let place = args
            .output
            .as_ref()
            .map(|p| format!(" to {}", p.display()))
            .unwrap_or_default();
        ctx.printer.status(&format!(
            "exported {count} events (seq {first} to {last}, head {end_hash}){place}"
        ));
    }
    Ok(())
}

/// What the range was asked for, in words, for a report's header.
fn scope(args: &ExportArgs) -> String {
    let mut parts = Vec::new();
    if let Some(run) = &args.run {
        parts.push(format!("run {run}"));
    }
    if let Some(since) = &args.since {
        parts.push(format!("since {since}"));
    }
    if let Some(until) = &args.until {
        parts.push(format!("until {until}"));
    }
    if parts.is_empty() {
        "the whole ledger".to_owned()
    } else {
        parts.join(", ")
    }
}

/// The command that exports the same range as JSONL, the verifiable form.
fn jsonl_command(args: &ExportArgs) -> String {
    let mut command = String::from("rewind audit export --format jsonl -o trail.jsonl");
    for (flag, value) in [
        ("--run", &args.run),
        ("--since", &args.since),
        ("--until", &args.until),
    ] {
        if let Some(value) = value {
            command.push_str(&format!(" {flag} {}", shell_word(value)));
        }
    }
    command
}

/// A word as a POSIX shell reads it back.
fn shell_word(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/+@=".contains(c))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}
