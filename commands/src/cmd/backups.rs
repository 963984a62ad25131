//! `rewind backups list|verify|restore`: the archives backup steps took,
//! checked against their manifests and unpacked into a directory.

use rewind_ledger::{BackupTaken, Event};
use rewind_migrations::steps::archive::{unpack, verify_archive};
use serde::Serialize;

use crate::cli::{BackupsListArgs, BackupsRestoreArgs, BackupsSelectArgs};
use crate::context::Ctx;
use crate::error::{CliError, CliResult, exit};
use crate::printer::table;

#[derive(Serialize)]
struct Listed {
    seq: u64,
    run: Option<String>,
    target: Option<String>,
    recorded_at: String,
    source: String,
    files: u64,
    size: u64,
    archive: String,
    manifest: String,
    copy: Option<String>,
}

fn backups(ctx: &mut Ctx) -> CliResult<Vec<Listed>> {
    let view = ctx.open_read()?;
    let (head, _) = view.head();
    let mut targets = std::collections::BTreeMap::new();
    let mut found = Vec::new();
    view.for_each_in(1, head, |entry| {
        match &entry.record.event {
            Event::RunStarted(started) => {
                targets.insert(entry.record.run.clone(), started.target.clone());
            }
            Event::BackupTaken(taken) => found.push(listed(
                entry,
                taken,
                targets.get(&entry.record.run).cloned().flatten(),
            )),
            _ => {}
        }
        Ok(())
    })?;
    Ok(found)
}

fn listed(entry: &rewind_ledger::Entry, taken: &BackupTaken, target: Option<String>) -> Listed {
    Listed {
        seq: entry.seq(),
        run: entry.record.run.clone(),
        target,
        recorded_at: entry.record.recorded_at.to_string(),
        source: taken.source.clone(),
        files: taken.file_count,
        size: taken.size,
        archive: taken.archive.to_hex(),
        manifest: taken.manifest.to_hex(),
        copy: taken.copy.clone(),
    }
}

pub fn list(ctx: &mut Ctx, args: BackupsListArgs) -> CliResult {
    let mut all = backups(ctx)?;
    if let Some(target) = &args.target {
        all.retain(|b| b.target.as_deref() == Some(target));
    }
    if ctx.printer.json {
        ctx.printer.json(&all)?;
        return Ok(());
    }
    if all.is_empty() {
        ctx.printer.note("no backups recorded");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|b| {
            vec![
                b.seq.to_string(),
                b.run.clone().unwrap_or_default(),
                b.target.clone().unwrap_or_else(|| "-".into()),
                b.files.to_string(),
                b.size.to_string(),
                b.archive[..12].to_owned(),
                b.source.clone(),
            ]
        })
        .collect();
    ctx.printer.data(&table(
        &[
            "SEQ", "RUN", "TARGET", "FILES", "BYTES", "ARCHIVE", "SOURCE",
        ],
        &rows,
    ))?;
    Ok(())
}

pub fn verify(ctx: &mut Ctx, args: BackupsSelectArgs) -> CliResult {
    let mut all = backups(ctx)?;
    if let Some(seq) = args.seq {
        all.retain(|b| b.seq == seq);
        if all.is_empty() {
            return Err(CliError::usage(format!("seq {seq} is not a backup"))
                .hint("`rewind backups list` shows the backups"));
        }
    }
    let blobs = rewind_ledger::BlobStore::new(ctx.ledger_dir.join("blobs"));
    let mut bad = 0;
    let mut rows = Vec::new();
    for backup in &all {
        let archive = rewind_ledger::Digest::from_hex(&backup.archive).unwrap_or_default();
        let manifest = rewind_ledger::Digest::from_hex(&backup.manifest).unwrap_or_default();
        let verdict = match verify_archive(&blobs, &archive, &manifest) {
            Ok((entries, problems)) if problems.is_empty() => {
                format!("ok ({entries} entries match the manifest)")
            }
            Ok((_, problems)) => {
                bad += 1;
                format!(
                    "{} problem(s), first: {} {}",
                    problems.len(),
                    problems[0].path,
                    problems[0].problem
                )
            }
            Err(error) => {
                bad += 1;
                error.to_string()
            }
        };
        rows.push(vec![backup.seq.to_string(), backup.source.clone(), verdict]);
    }
    ctx.printer
        .data(&table(&["SEQ", "SOURCE", "VERIFY"], &rows))?;
    if bad > 0 {
        return Err(CliError::new(
            exit::VERIFY,
            anyhow::anyhow!("{bad} backup(s) failed verification"),
        ));
    }
    Ok(())
}

pub fn restore(ctx: &mut Ctx, args: BackupsRestoreArgs) -> CliResult {
    let all = backups(ctx)?;
    let Some(backup) = all.iter().find(|b| b.seq == args.seq) else {
        return Err(CliError::usage(format!("seq {} is not a backup", args.seq))
            .hint("`rewind backups list` shows the backups"));
    };
    if args.into.exists() && fs_err::read_dir(&args.into)?.next().is_some() {
        return Err(
            CliError::usage(format!("{} is not empty", args.into.display()))
                .hint("restore into a new or empty directory, then compare or copy what you need"),
        );
    }
    fs_err::create_dir_all(&args.into)?;
    let blobs = rewind_ledger::BlobStore::new(ctx.ledger_dir.join("blobs"));
    let archive = rewind_ledger::Digest::from_hex(&backup.archive).unwrap_or_default();
    unpack(&blobs, &archive, &args.into)?;
    ctx.printer.data(&format!(
        "restored {} file(s) of {} (seq {}) into {}\n",
        backup.files,
        backup.source,
        backup.seq,
        args.into.display()
    ))?;
    Ok(())
}
