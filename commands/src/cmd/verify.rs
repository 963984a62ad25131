//! `rewind verify`: recompute the chain and compare the store with its journal.

use rewind_ledger::View;
use rewind_ledger::verify::{Problem, first_unusable};
use serde_json::json;

use crate::context::Ctx;
use crate::error::{CliError, CliResult, exit};

pub fn run(ctx: &mut Ctx) -> CliResult {
    let view = ctx.open_read()?;
    let ledger = match view {
        View::Store(ledger) => ledger,
        View::Journal(ref snapshot, _) => {
            // Loading the snapshot already checked every link of the journal.
            let (seq, hash) = view.head();
            let unusable = first_unusable(&snapshot.entries);
            if ctx.printer.json {
                ctx.printer.json(&json!({ "verified": seq, "head_seq": seq, "head_hash": hash, "problem": null, "unusable": unusable, "source": "journal" }))?;
            } else if unusable.is_none() {
                ctx.printer.data(&format!(
                    "ok: {seq} events verified in the journal, head seq {seq} {hash}\n"
                ))?;
            }
            if !ctx.printer.json {
                ctx.printer.note("the store is in use; run verify again when it is free to compare the store too");
            }
            return match unusable {
                Some(unusable) => Err(unusable_error(&unusable, seq)),
                None => Ok(()),
            };
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
    match (&report.problem, &report.unusable) {
        (None, Some(unusable)) => Err(unusable_error(unusable, report.verified).hint(format!(
            "keep a copy of {} before changing anything",
            ledger.dir().display()
        ))),
        (None, None) => {
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
        (Some(problem), unusable) => {
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
            let error = error.hint("if the journal is intact (`python3 tools/verify_chain.py <ledger>/journal.jsonl`), `rewind repair` rebuilds the store from it");
            Err(match unusable {
                Some(unusable) => error.hint(format!(
                    "also, before it: seq {} is unusable ({})",
                    unusable.seq, unusable.detail
                )),
                None => error,
            })
        }
    }
}

/// A chain that verifies but holds an entry no rollback or reader can use.
fn unusable_error(unusable: &Problem, verified: u64) -> CliError {
    CliError::new(
        exit::VERIFY,
        anyhow::anyhow!(
            "seq {} is unusable: {} (the chain verifies through seq {verified})",
            unusable.seq,
            unusable.detail
        ),
    )
    // The journal holds the same content: a repair cannot help.
    .hint(format!(
        "the entry was recorded this way (its hash matches): `rewind show {}` prints it as stored; its rows cannot be rolled back from it",
        unusable.seq
    ))
}
