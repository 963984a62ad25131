//! `rewind show SEQ`: one event in full.

use rewind_ledger::canonical::entry_line;

use crate::cli::ShowArgs;
use crate::context::Ctx;
use crate::error::CliResult;
use crate::printer::table;

pub fn run(ctx: &mut Ctx, args: ShowArgs) -> CliResult {
    let view = ctx.open_read()?;
    let entry = view.get(args.seq)?;
    if ctx.printer.json {
        let line: serde_json::Value =
            serde_json::from_slice(&entry_line(&entry)).map_err(anyhow::Error::from)?;
        ctx.printer.json(&line)?;
        return Ok(());
    }
    let record = &entry.record;
    let rows = vec![
        vec!["recorded at".into(), record.recorded_at.to_string()],
        vec!["actor".into(), record.actor.clone()],
        vec!["host".into(), record.host.clone()],
        vec![
            "run".into(),
            record.run.clone().unwrap_or_else(|| "-".into()),
        ],
        vec!["kind".into(), record.event.kind().into()],
        vec![
            "summary".into(),
            rewind_projections::describe::summary(&record.event),
        ],
        vec!["hash".into(), entry.hash.to_hex()],
        vec!["prev".into(), entry.prev.to_hex()],
    ];
    let mut text = table(&["seq", &record.seq.to_string()], &rows);
    let event = serde_json::to_string_pretty(&record.event).map_err(anyhow::Error::from)?;
    text.push_str("event:\n");
    for line in event.lines() {
        text.push_str("  ");
        text.push_str(line);
        text.push('\n');
    }
    ctx.printer.data(&text)?;
    Ok(())
}
