//! `rewind verify`: recompute the chain and compare the store with its journal.

use rewind_ledger::View;
use rewind_ledger::verify::ProblemKind;
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
    let newest_checkpoint = match ledger
        .seqs_of_kind("Checkpoint")?
        .unwrap_or_default()
        .last()
    {
        Some(&seq) if seq <= report.verified => match ledger.get(seq)?.record.event {
            rewind_ledger::Event::Checkpoint(checkpoint) => Some(checkpoint),
            _ => None,
        },
        _ => None,
    };
    if ctx.printer.json {
        let mut value = serde_json::to_value(&report).map_err(anyhow::Error::from)?;
        value["checkpoint"] = match &newest_checkpoint {
            Some(checkpoint) => json!({
                "seq": checkpoint.seq,
                "head": checkpoint.head,
                "public_key": hex::encode(checkpoint.public_key.as_slice()),
            }),
            None => serde_json::Value::Null,
        };
        ctx.printer.json(&value)?;
    }
    match &report.problem {
        None => {
            if !ctx.printer.json {
                ctx.printer.data(&format!(
                    "ok: {} events verified, store and journal agree, head seq {} {}\n",
                    report.verified, report.head_seq, report.head_hash
                ))?;
                match &newest_checkpoint {
                    Some(checkpoint) => ctx.printer.data(&format!(
                        "newest signed checkpoint: seq {} head {} (key {})\n",
                        checkpoint.seq,
                        checkpoint.head,
                        hex::encode(checkpoint.public_key.as_slice())
                    ))?,
                    None => ctx.printer.note(
                        "no signed checkpoint yet: `rewind checkpoint --key FILE` lets an auditor detect a cut-off chain",
                    ),
                }
            }
            Ok(())
        }
        Some(problem) => {
            let error = CliError::new(
                exit::VERIFY,
                anyhow::anyhow!(
                    "the ledger fails verification at seq {}: {} ({})",
                    problem.seq,
                    problem.kind,
                    problem.detail
                ),
            )
            .hint(format!(
                "seqs 1 to {} verified; keep a copy of {} before changing anything",
                report.verified,
                ledger.dir().display()
            ));
            Err(match problem.kind {
                // The journal holds the same content: a repair cannot help.
                ProblemKind::Unusable => error.hint(format!(
                    "the entry was recorded this way (its hash matches): `rewind show {}` prints it as stored; its rows cannot be rolled back from it",
                    problem.seq
                )),
                _ => error.hint("if the journal is intact (`python3 tools/verify_chain.py <ledger>/journal.jsonl`), `rewind repair` rebuilds the store from it"),
            })
        }
    }
}
