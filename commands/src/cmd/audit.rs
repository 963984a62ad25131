//! `rewind audit export`: the audit trail of a period or a run, as lines an
//! auditor verifies without rewind (`tools/verify_chain.py`).
//!
//! An export is always a contiguous seq range, so that it proves nothing in
//! between was left out: `--run` exports from the run's first to its last
//! event, including whatever else was recorded in between. `--from-seq` and
//! `--to-seq` bound the range by seq; given with `--run`, `--since` or
//! `--until`, the export is what all of them cover. The Markdown and HTML
//! reports print the JSONL command of exactly their range by seq, so that it
//! still exports the same events after the ledger has grown.

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
    let (mut first, mut last) = seq_bounds(&args, head)?;
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
        first = first.max(start);
        last = last.min(end);
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
                    jsonl_command: jsonl_command(first, last),
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
    if let Some(seq) = args.from_seq {
        parts.push(format!("from seq {seq}"));
    }
    if let Some(seq) = args.to_seq {
        parts.push(format!("to seq {seq}"));
    }
    if parts.is_empty() {
        "the whole ledger".to_owned()
    } else {
        parts.join(", ")
    }
}

/// The command that exports exactly `first..=last` as JSONL, the
/// verifiable form. It names seqs, not the filters asked for: a run or a
/// period goes on growing with the ledger, the seqs of an export do not.
fn jsonl_command(first: u64, last: u64) -> String {
    format!("rewind audit export --format jsonl -o trail.jsonl --from-seq {first} --to-seq {last}")
}

/// The seqs `--from-seq` and `--to-seq` allow, `1..=head` without them;
/// a seq the ledger does not hold is a usage error naming the head.
fn seq_bounds(args: &ExportArgs, head: u64) -> CliResult<(u64, u64)> {
    let holds = if head == 0 {
        "it holds no events yet".to_owned()
    } else {
        format!("--from-seq and --to-seq take a seq from 1 to {head}")
    };
    for (flag, seq) in [("--from-seq", args.from_seq), ("--to-seq", args.to_seq)] {
        if let Some(seq) = seq
            && !(1..=head).contains(&seq)
        {
            return Err(CliError::usage(format!(
                "{flag} {seq} is outside the ledger, whose head is seq {head}"
            ))
            .hint(holds));
        }
    }
    let first = args.from_seq.unwrap_or(1);
    let last = args.to_seq.unwrap_or(head);
    if first > last {
        return Err(
            CliError::usage(format!("--from-seq {first} comes after --to-seq {last}"))
                .hint("the range is inclusive: give --from-seq at or before --to-seq"),
        );
    }
    Ok((first, last))
}
