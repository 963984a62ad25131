//! `rewind init`: create a ledger.

use serde_json::json;

use crate::context::Ctx;
use crate::error::CliResult;

pub fn run(ctx: &mut Ctx) -> CliResult {
    let ledger_id = ctx
        .ledger_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let ledger = ctx.init(&ledger_id)?;
    let dir = ledger.dir().display().to_string();
    if ctx.printer.json {
        ctx.printer
            .json(&json!({ "ledger": dir, "ledger_id": ledger_id }))?;
    } else {
        ctx.printer
            .data(&format!("initialized ledger {dir} (id {ledger_id})\n"))?;
    }
    Ok(())
}
