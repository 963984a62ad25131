//! `rewind verify`: recompute the chain and compare the store with its journal.

use rewind_ledger::View;
use serde_json::json;

use crate::context::Ctx;
use crate::error::{CliError, CliResult, exit};

pub fn run(ctx: &mut Ctx) -> CliResult {
    let view = ctx.open_read()?;
    let ledger = match view {
        View::Store(ledger) => ledger,
        View::Journal(..) => {
            // Loading the snapshot already checked every link of the journal.
            let (seq, hash) = view.head();
            if ctx.printer.json {
                ctx.printer.json(&json!({ "verified": seq, "head_seq": seq, "head_hash": hash, "problem": null, "source": "journal" }))?;
            } else {
                ctx.printer.data(&format!(
                    "ok: {seq} events verified in the journal, head seq {seq} {hash}\n"
                ))?;
                ctx.printer.note("the store is in use; run verify again when it is free to compare the store too");
            }
            return Ok(());
        }
    };
    let report = ledger.verify_chain()?;
    if ctx.printer.json {
        ctx.printer.json(&report)?;
    }
    match &report.problem {
        None => {
            if !ctx.printer.json {
                ctx.printer.data(&format!(
                    "ok: {} events verified, store and journal agree, head seq {} {}\n",
                    report.verified, report.head_seq, report.head_hash
                ))?;
            }
            Ok(())
        }
        Some(problem) => Err(CliError::new(
            exit::VERIFY,
            anyhow::anyhow!("the ledger fails verification at seq {}: {} ({})", problem.seq, problem.kind, problem.detail),
        )
        .hint(format!(
            "seqs 1 to {} verified; keep a copy of {} before changing anything",
            report.verified,
            ledger.dir().display()
        ))
        .hint("if the journal is intact (`python3 tools/verify_chain.py <ledger>/journal.jsonl`), `rewind repair` rebuilds the store from it")),
    }
}
