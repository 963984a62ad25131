//! `rewind note`: a reviewer's annotation, appended like any other event.

use rewind_ledger::{Event, Note, Selector};
use serde_json::json;

use crate::cli::NoteArgs;
use crate::context::Ctx;
use crate::error::{CliError, CliResult};

pub fn run(ctx: &mut Ctx, args: NoteArgs) -> CliResult {
    if args.text.trim().is_empty() {
        return Err(CliError::usage("the note is empty")
            .hint("write the text in quotes: rewind note \"what you found\""));
    }
    let mut ledger = ctx.open_write()?;
    if let Some(seq) = args.seq {
        ledger.get(seq)?;
    }
    if let Some(run) = &args.run {
        let selector = Selector {
            run: Some(run.clone()),
            ..Selector::default()
        };
        if ledger.candidates(&selector)?.unwrap_or_default().is_empty() {
            return Err(
                CliError::usage(format!("there is no run {run:?} in this ledger"))
                    .hint("`rewind history --kind RunStarted` lists the runs"),
            );
        }
    }
    let note = Note {
        about_run: args.run.clone(),
        about_seq: args.seq,
        text: args.text,
    };
    let entry = ledger.append(args.run.as_deref(), Event::Note(note))?;
    if ctx.printer.json {
        ctx.printer
            .json(&json!({ "seq": entry.seq(), "hash": entry.hash.to_hex() }))?;
    } else {
        ctx.printer
            .data(&format!("recorded note as seq {}\n", entry.seq()))?;
    }
    Ok(())
}
