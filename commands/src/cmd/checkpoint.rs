//! `rewind checkpoint`: sign the head of the chain with a key kept
//! elsewhere, and print the head to be stored outside this host.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;

use rewind_ledger::checkpoint::{message, public_key};
use serde_json::json;

use crate::cli::CheckpointArgs;
use crate::context::Ctx;
use crate::error::{CliError, CliResult};

fn read_seed(path: &std::path::Path) -> CliResult<[u8; 32]> {
    let text = fs_err::read_to_string(path).map_err(|error| {
        CliError::usage(error.to_string()).hint(format!(
            "create a key with `rewind checkpoint --key {} --generate-key`",
            path.display()
        ))
    })?;
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed).map_err(|_| {
        CliError::usage(format!(
            "{} does not hold a key (64 hex characters)",
            path.display()
        ))
        .hint("point --key at the file `rewind checkpoint --generate-key` wrote")
    })?;
    Ok(seed)
}

fn generate_seed(path: &std::path::Path) -> CliResult<[u8; 32]> {
    let mut seed = [0u8; 32];
    fs_err::File::open("/dev/urandom")?.read_exact(&mut seed)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|error| {
            CliError::usage(format!(
                "cannot create key file {}: {error}",
                path.display()
            ))
            .hint("choose a path that does not exist yet; rewind never overwrites a key")
        })?;
    std::io::Write::write_all(&mut file, format!("{}\n", hex::encode(seed)).as_bytes())?;
    file.sync_all()?;
    Ok(seed)
}

pub fn run(ctx: &mut Ctx, args: CheckpointArgs) -> CliResult {
    let mut ledger = ctx.open_write()?;
    let seed = if args.generate_key {
        generate_seed(&args.key)?
    } else {
        read_seed(&args.key)?
    };
    let entry = ledger.checkpoint(&seed)?;
    let rewind_ledger::Event::Checkpoint(checkpoint) = &entry.record.event else {
        unreachable!("Ledger::checkpoint appends a Checkpoint")
    };
    let statement = message(ledger.ledger_id(), checkpoint.seq, &checkpoint.head);
    let key = hex::encode(public_key(&seed));
    if ctx.printer.json {
        ctx.printer.json(&json!({
            "seq": entry.seq(),
            "head_seq": checkpoint.seq,
            "head": checkpoint.head,
            "public_key": key,
            "statement": statement,
        }))?;
    } else {
        ctx.printer.data(&format!(
            "signed the head at seq {} as checkpoint seq {}\npublic key {key}\n{statement}\n",
            checkpoint.seq,
            entry.seq()
        ))?;
        ctx.printer.note("keep the last line outside this host (a ticket, a witness file): it is what a cut-off chain cannot match");
        if args.generate_key {
            ctx.printer.note(&format!(
                "created the signing key {}; move it off this host and pass it with --key next time",
                args.key.display()
            ));
        }
    }
    Ok(())
}
