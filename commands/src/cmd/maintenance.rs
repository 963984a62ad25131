//! `rewind reindex` and `rewind repair`: rebuild what is derived.

use serde_json::json;

use crate::context::Ctx;
use crate::error::CliResult;

pub fn reindex(ctx: &mut Ctx) -> CliResult {
    let mut ledger = ctx.open_write()?;
    let count = ledger.reindex()?;
    if ctx.printer.json {
        ctx.printer.json(&json!({ "reindexed": count }))?;
    } else {
        ctx.printer.data(&format!("reindexed {count} events\n"))?;
    }
    Ok(())
}

pub fn repair(ctx: &mut Ctx) -> CliResult {
    let report = rewind_ledger::verify::repair(&ctx.ledger_dir, ctx.origin.clone())?;
    let kept = report.kept.as_ref().map(|path| path.display().to_string());
    if ctx.printer.json {
        ctx.printer
            .json(&json!({ "entries": report.entries, "head": report.head, "kept": kept }))?;
    } else {
        ctx.printer.data(&format!(
            "rebuilt the store from the journal: {} events, head {}\n",
            report.entries, report.head
        ))?;
        if let Some(kept) = kept {
            ctx.printer.note(&format!(
                "the previous store was kept at {kept}; remove it once you no longer need it"
            ));
        }
    }
    Ok(())
}
