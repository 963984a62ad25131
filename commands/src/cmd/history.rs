//! `rewind history`: events filtered by run, target, path, row, kind, time.

use rewind_ledger::{EVENT_KINDS, Entry, Selector, View};
use rewind_projections::describe::summary;
use rewind_projections::history::{self, ColumnChange, Query};
use serde::Serialize;

use crate::cli::HistoryArgs;
use crate::context::{Ctx, parse_window};
use crate::error::{CliError, CliResult};
use crate::printer::table;

#[derive(Serialize)]
struct Item<'a> {
    seq: u64,
    recorded_at: String,
    actor: &'a str,
    host: &'a str,
    run: Option<&'a str>,
    kind: &'static str,
    summary: String,
    hash: String,
    event: &'a rewind_ledger::Event,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    changes: Vec<ColumnChange>,
    /// The drift of another row of the same event, which the rollback
    /// skipped while it restored this row (`history::restored_beside`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    restored: bool,
}

pub fn run(ctx: &mut Ctx, args: HistoryArgs) -> CliResult {
    if let Some(kind) = &args.kind
        && !EVENT_KINDS.contains(&kind.as_str())
    {
        let suggestion = EVENT_KINDS.iter().find(|k| k.eq_ignore_ascii_case(kind));
        let error = CliError::usage(format!("there is no event kind {kind:?}"));
        return Err(match suggestion {
            Some(known) => error.hint(format!("did you mean --kind {known}?")),
            None => error.hint(format!("kinds are: {}", EVENT_KINDS.join(", "))),
        });
    }
    let (since, until) = parse_window(args.since.as_deref(), args.until.as_deref())?;
    let query = Query {
        selector: Selector {
            run: args.run,
            target: args.target,
            path: args.path,
            table: args.table,
            key: args.key,
            since,
            until,
        },
        kind: args.kind,
        limit: args.limit,
    };
    let view = ctx.open_read()?;
    if let View::Store(ledger) = &view {
        let unfinished = super::recover::unfinished_runs(ledger)?;
        if !unfinished.is_empty() {
            ctx.printer.note(&format!(
                "{} (run `rewind recover`)",
                super::recover::describe_unfinished(&unfinished)
            ));
        }
    }
    let target_runs = match &query.selector.target {
        Some(target) => view.runs_of_target(target)?,
        None => Vec::new(),
    };
    let entries = match &query.selector.table {
        None => {
            let candidates = view.select(&query.selector, query.kind.as_deref())?;
            history::filter(&query, candidates, &target_runs)
        }
        // A row's history goes on past its changes: the rollbacks that put
        // it back, or met it changed since and left it.
        Some(table) => history::row_history(
            &query,
            table,
            &target_runs,
            |selector| view.select(selector, None),
            |seqs| view.aftermath(seqs),
        )?,
    };
    let restored = |entry: &Entry| match &query.selector.table {
        Some(table) => history::restored_beside(entry, table, query.selector.key.as_deref()),
        None => false,
    };
    // The sentence of an entry in a row's history.
    let said = |entry: &Entry| {
        let said = summary(&entry.record.event);
        if restored(entry) {
            format!(
                "this row back at its before image; other rows of the event left as found: {said}"
            )
        } else {
            said
        }
    };
    let changes = |entry: &Entry| match (&query.selector.table, &query.selector.key) {
        (Some(table), Some(key)) => history::row_changes(&entry.record.event, table, key),
        _ => Vec::new(),
    };
    if ctx.printer.json {
        let items: Vec<Item> = entries
            .iter()
            .map(|entry| Item {
                seq: entry.seq(),
                recorded_at: entry.record.recorded_at.to_string(),
                actor: &entry.record.actor,
                host: &entry.record.host,
                run: entry.record.run.as_deref(),
                kind: entry.record.event.kind(),
                summary: said(entry),
                hash: entry.hash.to_hex(),
                event: &entry.record.event,
                changes: changes(entry),
                restored: restored(entry),
            })
            .collect();
        ctx.printer.json(&items)?;
        return Ok(());
    }
    if entries.is_empty() {
        ctx.printer.note("no events match");
        return Ok(());
    }
    let mut text = String::new();
    let mut rows = Vec::new();
    let flush = |rows: &mut Vec<Vec<String>>, text: &mut String| {
        if !rows.is_empty() {
            text.push_str(&table(
                &["SEQ", "RECORDED AT", "ACTOR", "RUN", "EVENT"],
                rows,
            ));
            rows.clear();
        }
    };
    let with_changes = query.selector.key.is_some();
    for entry in &entries {
        let record = &entry.record;
        rows.push(vec![
            record.seq.to_string(),
            record
                .recorded_at
                .as_datetime()
                .format("%Y-%m-%d %H:%M:%S")
                .to_string(),
            record.actor.clone(),
            record.run.clone().unwrap_or_else(|| "-".into()),
            said(entry),
        ]);
        let changes = changes(entry);
        if with_changes && !changes.is_empty() {
            // Before/after values side by side, under the event they belong to.
            flush(&mut rows, &mut text);
            let change_rows: Vec<Vec<String>> = changes
                .into_iter()
                .map(|change| {
                    vec![
                        format!("    {}", change.column),
                        change.before.unwrap_or_else(|| "(no row)".into()),
                        change.after.unwrap_or_else(|| "(no row)".into()),
                    ]
                })
                .collect();
            text.push_str(&table(&["    COLUMN", "BEFORE", "AFTER"], &change_rows));
        }
    }
    flush(&mut rows, &mut text);
    ctx.printer.data(&text)?;
    Ok(())
}
