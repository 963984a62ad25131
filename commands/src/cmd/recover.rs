//! `rewind recover [--dry-run]`: closes what a process that died left
//! unfinished. Holding the write lock, this process knows that every
//! unfinished run and rollback in the ledger is dead; the recovery
//! projection finds them, and the migrations executors compare the world
//! with the events of each open step and record what truly happened.
//! `apply` and `rollback` recover first, in one line on stderr; `status`
//! and `history` show unfinished work as interrupted when no writer holds
//! the ledger. Drift found exits 3.

use rewind_ledger::{Entry, Ledger};
use rewind_migrations::Recorder;
use rewind_migrations::databases::Databases;
use rewind_migrations::recover::{self, OpenRollback, OpenRun, OpenStep, Recovery};
use rewind_projections::recovery::{MARKER_KINDS, Unfinished, unfinished};
use serde::Serialize;

use super::rollback::render_drift;
use crate::cli::RecoverArgs;
use crate::context::Ctx;
use crate::error::{CliError, CliResult, exit};
use crate::printer::Printer;

/// The unfinished runs and rollbacks, from the run and rollback markers
/// alone (no open steps): cheap, for read-only commands.
pub fn unfinished_runs(ledger: &Ledger) -> CliResult<Unfinished> {
    let mut seqs: Vec<Vec<u64>> = Vec::new();
    for kind in MARKER_KINDS {
        seqs.push(ledger.seqs_of_kind(kind)?.unwrap_or_default());
    }
    // Every run and rollback that finished has one end for its start.
    if seqs[0].len() == seqs[1].len() && seqs[2].len() == seqs[3].len() {
        return Ok(Unfinished::default());
    }
    let mut seqs: Vec<u64> = seqs.into_iter().flatten().collect();
    seqs.sort_unstable();
    let markers: Vec<Entry> = seqs
        .into_iter()
        .map(|seq| ledger.get(seq))
        .collect::<Result<_, _>>()?;
    Ok(unfinished(&markers))
}

/// The unfinished runs with their open steps and every unfinished rollback.
pub fn find(ledger: &Ledger) -> CliResult<Unfinished> {
    let found = unfinished_runs(ledger)?;
    let Some(first) = found.first_seq() else {
        return Ok(found);
    };
    let head = ledger.head().0;
    let entries: Vec<Entry> = ledger.range(first..=head).collect::<Result<_, _>>()?;
    Ok(unfinished(&entries))
}

/// Finds and recovers what dead processes left unfinished (only looks
/// with `dry_run`). The caller holds the write lock.
pub fn recover_dead(
    recorder: &Recorder,
    databases: &mut Databases,
    dry_run: bool,
) -> CliResult<Recovery> {
    let found = find(&recorder.lock())?;
    if found.is_empty() {
        return Ok(Recovery::default());
    }
    let runs: Vec<OpenRun> = found
        .runs
        .into_iter()
        .map(|run| OpenRun {
            run: run.run,
            open_step: run.open_step.map(|step| OpenStep {
                step: step.step,
                kind: step.kind,
                operation: step.operation,
                events: step.events,
            }),
        })
        .collect();
    let rollbacks: Vec<OpenRollback> = found
        .rollbacks
        .into_iter()
        .map(|rollback| OpenRollback {
            run: rollback.run,
            started_seq: rollback.started_seq,
            target: rollback.target.to_string(),
            compensated: rollback.compensated,
            drifted: rollback.drifted,
            in_doubt: rollback.in_doubt,
        })
        .collect();
    Ok(recover::recover(
        recorder, databases, &runs, &rollbacks, dry_run,
    )?)
}

/// For `apply` and `rollback`: recovers first, says so in one line on
/// stderr, and warns of each drift it found (recorded; the rollback of
/// that run stops at it).
pub fn recover_first(
    printer: &mut Printer,
    recorder: &Recorder,
    databases: &mut Databases,
) -> CliResult {
    let recovery = recover_dead(recorder, databases, false)?;
    if recovery.is_empty() {
        return Ok(());
    }
    let mut closed: Vec<String> = recovery
        .runs
        .iter()
        .map(|run| match &run.step {
            Some((step, _)) => format!(
                "run {} (step {step}, {} effect(s) never happened)",
                run.run,
                run.never_happened.len()
            ),
            None => format!("run {}", run.run),
        })
        .collect();
    closed.extend(
        recovery
            .rollbacks
            .iter()
            .map(|rollback| format!("the rollback of {}", rollback.target)),
    );
    printer.note(&format!(
        "recovered what a rewind that died left unfinished, recording it interrupted: {}; `rewind status` shows it",
        closed.join(", ")
    ));
    for drift in recovery.drift() {
        printer.warning(&format!("recovery found drift at {drift}"));
    }
    Ok(())
}

/// For `rollback --dry-run`, which changes nothing: says what the
/// rollback would recover first.
pub fn mention_unfinished(printer: &mut Printer, ledger: &Ledger) -> CliResult {
    let found = unfinished_runs(ledger)?;
    if !found.is_empty() {
        printer.note(&format!(
            "{}; the rollback records what happened first (`rewind recover --dry-run` shows it)",
            describe_unfinished(&found)
        ));
    }
    Ok(())
}

/// `run r1 and the rollback of run r2 never finished, and no rewind holds
/// the ledger: they were interrupted`.
pub fn describe_unfinished(found: &Unfinished) -> String {
    let mut names: Vec<String> = found
        .runs
        .iter()
        .map(|run| format!("run {}", run.run))
        .collect();
    names.extend(
        found
            .rollbacks
            .iter()
            .map(|rollback| format!("the rollback of {}", rollback.target)),
    );
    format!(
        "{} never finished, and no rewind holds the ledger: interrupted",
        names.join(", ")
    )
}

#[derive(Serialize)]
struct JsonDrift<'a> {
    seq: u64,
    path: &'a str,
    differs: &'a str,
    expected: &'a str,
    found: &'a str,
}

#[derive(Serialize)]
struct JsonRun<'a> {
    run: &'a str,
    step: Option<u32>,
    kind: Option<&'a str>,
    happened: u64,
    never_happened: &'a [u64],
    drift: Vec<JsonDrift<'a>>,
    error: &'a str,
}

#[derive(Serialize)]
struct JsonInDoubt {
    seq: u64,
    started: u64,
}

#[derive(Serialize)]
struct JsonRollback<'a> {
    run: Option<&'a str>,
    started_seq: u64,
    target: &'a str,
    compensated: u64,
    drifted: u64,
    in_doubt: Vec<JsonInDoubt>,
}

#[derive(Serialize)]
struct JsonRecovery<'a> {
    dry_run: bool,
    runs: Vec<JsonRun<'a>>,
    rollbacks: Vec<JsonRollback<'a>>,
}

fn json(recovery: &Recovery, dry_run: bool) -> JsonRecovery<'_> {
    JsonRecovery {
        dry_run,
        runs: recovery
            .runs
            .iter()
            .map(|run| JsonRun {
                run: &run.run,
                step: run.step.as_ref().map(|(step, _)| *step),
                kind: run.step.as_ref().map(|(_, kind)| kind.as_str()),
                happened: run.happened,
                never_happened: &run.never_happened,
                drift: run
                    .drift
                    .iter()
                    .map(|d| JsonDrift {
                        seq: d.seq,
                        path: &d.path,
                        differs: &d.what,
                        expected: &d.expected,
                        found: &d.actual,
                    })
                    .collect(),
                error: &run.error,
            })
            .collect(),
        rollbacks: recovery
            .rollbacks
            .iter()
            .map(|rollback| JsonRollback {
                run: rollback.run.as_deref(),
                started_seq: rollback.started_seq,
                target: &rollback.target,
                compensated: rollback.compensated,
                drifted: rollback.drifted,
                in_doubt: rollback
                    .in_doubt
                    .iter()
                    .map(|(seq, started)| JsonInDoubt {
                        seq: *seq,
                        started: *started,
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// The report of a recovery, one line per run and rollback, then the drift.
pub fn render(recovery: &Recovery, dry_run: bool) -> String {
    let verb = if dry_run {
        "would recover"
    } else {
        "recovered"
    };
    let mut text = String::new();
    for run in &recovery.runs {
        match &run.step {
            Some((step, kind)) => text.push_str(&format!(
                "{verb} run {}: step {step} ({kind}) interrupted; {} recorded effect(s) done, {} never done{}\n",
                run.run,
                run.happened,
                run.never_happened.len(),
                if run.drift.is_empty() {
                    String::new()
                } else {
                    format!(", {} drifted", run.drift.len())
                }
            )),
            None => text.push_str(&format!(
                "{verb} run {}: interrupted between steps\n",
                run.run
            )),
        }
    }
    for rollback in &recovery.rollbacks {
        text.push_str(&format!(
            "{verb} the rollback of {} (started at seq {}): interrupted after {} inverse(s), {} drifted\n",
            rollback.target, rollback.started_seq, rollback.compensated, rollback.drifted
        ));
        for (seq, started) in &rollback.in_doubt {
            text.push_str(&format!(
                "  the undo command of seq {seq} was started at seq {started} and may or may not have taken effect\n"
            ));
        }
    }
    let drift: Vec<_> = recovery.drift().cloned().collect();
    if !drift.is_empty() {
        text.push_str(&render_drift(&drift));
    }
    text
}

pub fn run(ctx: &mut Ctx, args: RecoverArgs) -> CliResult {
    let ledger = ctx.open_write()?;
    let recorder = Recorder::new(ledger);
    let mut databases = Databases::new(args.databases.clone());
    let recovery = recover_dead(&recorder, &mut databases, args.dry_run)?;
    if ctx.printer.json {
        ctx.printer.json(&json(&recovery, args.dry_run))?;
    } else if recovery.is_empty() {
        ctx.printer
            .note("nothing to recover: every run and rollback in the ledger finished");
    } else {
        ctx.printer.data(&render(&recovery, args.dry_run))?;
        if args.dry_run {
            ctx.printer.note("dry run: nothing was changed");
        }
    }
    let drifted = recovery.drift().count();
    if drifted > 0 {
        return Err(CliError::new(
            exit::DRIFT,
            anyhow::anyhow!(
                "the world matches neither what {drifted} recorded effect(s) left behind nor what was there before"
            ),
        )
        .hint(if args.dry_run {
            "`rewind recover` records the drift as DriftFound and the runs as interrupted"
        } else {
            "the drift is recorded as DriftFound; put the paths or rows back as expected, then `rewind rollback RUN` undoes the rest"
        }));
    }
    let in_doubt: Vec<u64> = recovery
        .rollbacks
        .iter()
        .flat_map(|rollback| rollback.in_doubt.iter().map(|(seq, _)| *seq))
        .collect();
    if let Some(seq) = in_doubt.first() {
        ctx.printer.note(&format!(
            "an undo command in doubt is not run again by itself: check whether it took effect, then run the rollback again with `--mark-undone {seq}` if it did, or with `--retry-undo {seq}`"
        ));
    }
    Ok(())
}
