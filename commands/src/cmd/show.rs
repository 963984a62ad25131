//! `rewind show SEQ`: one event in full.

use rewind_ledger::Event;
use rewind_ledger::canonical::entry_line;

use crate::cli::ShowArgs;
use crate::context::Ctx;
use crate::error::CliResult;
use crate::printer::table;

pub fn run(ctx: &mut Ctx, args: ShowArgs) -> CliResult {
    let view = ctx.open_read()?;
    let entry = view.get(args.seq)?;
    // The rows of a packed chunk, unpacked: what its hex images hold. Images
    // that do not unpack are shown as stored, with a warning.
    let unpacked = match &entry.record.event {
        Event::RowsPacked(packed) => match packed.unpack() {
            Ok(rows) => Some(rows),
            Err(problem) => {
                ctx.printer.warning(&format!(
                    "seq {}: the packed images do not unpack: {problem}",
                    args.seq
                ));
                None
            }
        },
        _ => None,
    };
    if ctx.printer.json {
        let mut line: serde_json::Value =
            serde_json::from_slice(&entry_line(&entry)).map_err(anyhow::Error::from)?;
        if let Some(unpacked) = &unpacked {
            line["unpacked_rows"] =
                serde_json::to_value(&unpacked.rows).map_err(anyhow::Error::from)?;
        }
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
    let (label, event) = match &unpacked {
        Some(unpacked) => (
            "event, its images unpacked (`show --json` has them as stored):\n",
            serde_json::to_string_pretty(&Event::RowsChanged(unpacked.clone())),
        ),
        None => ("event:\n", serde_json::to_string_pretty(&record.event)),
    };
    let event = event.map_err(anyhow::Error::from)?;
    text.push_str(label);
    for line in event.lines() {
        text.push_str("  ");
        text.push_str(line);
        text.push('\n');
    }
    ctx.printer.data(&text)?;
    Ok(())
}
