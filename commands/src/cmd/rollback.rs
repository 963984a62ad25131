//! `rewind rollback RUN | RUN:STEP | --after SEQ`: asks the inverse-plan
//! projection what to undo (newest first, never what is already
//! compensated), then has the migrations executors check drift and undo
//! each item. Drift stops before the item with exit 3 unless
//! `--on-drift skip`; `--dry-run` prints the plan and the drift it would
//! meet and changes nothing. What a rewind that died left unfinished is
//! recovered first (`recover.rs`).

use std::collections::BTreeMap;
use std::io::IsTerminal;

use rewind_ledger::RollbackTarget;
use rewind_migrations::Recorder;
use rewind_migrations::databases::Databases;
use rewind_migrations::plan::one_line;
use rewind_migrations::undo::{
    self, Drift, OnDrift, Resolution, RollbackProgress, RollbackReport, UndoItem,
};
use rewind_projections::inverse::{self, InversePlan, PlanRefusal, describe_inverse};
use serde::Serialize;

use super::apply::confirm;
use super::spec_input::entries_for;
use crate::cli::{OnDriftArg, RollbackArgs};
use crate::context::Ctx;
use crate::error::{CliError, CliResult, exit};
use crate::printer::{Printer, table};

/// What a rollback came to.
pub enum Rollback {
    Done(RollbackReport),
    Refused(PlanRefusal),
    /// It would pass irreversible steps and was not allowed to.
    Irreversible(Vec<inverse::Item>),
}

/// The refusal to roll back past irreversible steps.
pub fn irreversible_error(items: &[inverse::Item]) -> CliError {
    let names = items
        .iter()
        .map(inverse::describe)
        .collect::<Vec<_>>()
        .join("; ");
    CliError::new(
        exit::FAILED,
        anyhow::anyhow!("the rollback would pass irreversible step(s): {names}"),
    )
    .hint("pass --allow-irreversible to undo everything else and leave those changes in place")
    .hint("nothing was changed")
}

/// Plans from the ledger's entries.
pub fn plan(
    recorder: &Recorder,
    target: &RollbackTarget,
    cascade: bool,
) -> CliResult<Result<InversePlan, PlanRefusal>> {
    let entries = {
        let ledger = recorder.lock();
        entries_for(&ledger, target)?
    };
    Ok(inverse::plan(&entries, target, cascade))
}

fn items(plan: &InversePlan, resolutions: &BTreeMap<u64, Resolution>) -> Vec<UndoItem> {
    plan.items
        .iter()
        .map(|item| UndoItem {
            seq: item.seq,
            run: item.run.clone(),
            event: item.event.clone(),
            undo_started: item.undo_started,
            resolution: resolutions.get(&item.seq).copied(),
        })
        .collect()
}

/// What `--mark-undone` and `--retry-undo` decide, refused for a seq whose
/// undo is not in doubt in this plan.
fn resolutions(args: &RollbackArgs, plan: &InversePlan) -> CliResult<BTreeMap<u64, Resolution>> {
    let mut decided = BTreeMap::new();
    let given = args
        .mark_undone
        .iter()
        .map(|seq| (*seq, Resolution::Undone))
        .chain(args.retry_undo.iter().map(|seq| (*seq, Resolution::Retry)));
    for (seq, resolution) in given {
        if !plan
            .items
            .iter()
            .any(|item| item.seq == seq && item.undo_started.is_some())
        {
            return Err(CliError::usage(format!(
                "seq {seq} is not an undo in doubt in the rollback of {}",
                plan.target
            ))
            .hint("an undo is in doubt when a rollback started its command and stopped before recording its end; `--dry-run` marks them")
            .hint("nothing was changed"));
        }
        if decided
            .insert(seq, resolution)
            .is_some_and(|earlier| earlier != resolution)
        {
            return Err(CliError::usage(format!(
                "seq {seq} is given both to --mark-undone and to --retry-undo"
            ))
            .hint("nothing was changed"));
        }
    }
    Ok(decided)
}

fn own_run(target: &RollbackTarget) -> Option<&str> {
    match target {
        RollbackTarget::Run(run) | RollbackTarget::Step(run, _) => Some(run),
        RollbackTarget::After(_) => None,
    }
}

/// Plans and carries out a rollback.
#[allow(clippy::too_many_arguments)]
pub fn roll_back(
    recorder: &Recorder,
    target: RollbackTarget,
    cascade: bool,
    on_drift: OnDrift,
    allow_irreversible: bool,
    databases: &mut Databases,
    progress: &mut dyn FnMut(&RollbackProgress),
) -> CliResult<Rollback> {
    let plan = match plan(recorder, &target, cascade)? {
        Ok(plan) => plan,
        Err(refusal) => return Ok(Rollback::Refused(refusal)),
    };
    if !allow_irreversible && !plan.irreversible.is_empty() {
        return Ok(Rollback::Irreversible(plan.irreversible));
    }
    let run = own_run(&target).map(str::to_owned);
    let report = undo::rollback(
        recorder,
        run.as_deref(),
        target,
        cascade,
        &items(&plan, &BTreeMap::new()),
        on_drift,
        databases,
        progress,
    )?;
    Ok(Rollback::Done(report))
}

fn parse_target(args: &RollbackArgs) -> CliResult<RollbackTarget> {
    if let Some(seq) = args.after {
        return Ok(RollbackTarget::After(seq));
    }
    let text = args.target.clone().unwrap_or_default();
    match text.rsplit_once(':') {
        Some((run, step)) => match step.parse() {
            Ok(step) => Ok(RollbackTarget::Step(run.to_owned(), step)),
            Err(_) => Err(CliError::usage(format!("`{text}` is not RUN or RUN:STEP"))
                .hint("a step is its number, as `rewind status RUN` lists it: r1:3")),
        },
        None => Ok(RollbackTarget::Run(text)),
    }
}

/// The drift report: what differs, where, and how.
pub fn render_drift(drift: &[Drift]) -> String {
    let rows: Vec<Vec<String>> = drift
        .iter()
        .map(|d| {
            vec![
                d.seq.to_string(),
                d.path.clone(),
                d.what.clone(),
                d.expected.clone(),
                d.actual.clone(),
            ]
        })
        .collect();
    table(&["SEQ", "PATH", "DIFFERS", "EXPECTED", "FOUND"], &rows)
}

#[derive(Serialize)]
struct DryItem {
    seq: u64,
    run: Option<String>,
    step: Option<u32>,
    event: &'static str,
    inverse: String,
    dependent: bool,
    /// `ok`, `drift: …`, `checked when reached`, or what becomes of an
    /// irreversible step.
    precondition: String,
}

fn refusal_error(refusal: PlanRefusal) -> CliError {
    let code = match refusal {
        PlanRefusal::UnknownRun { .. } | PlanRefusal::UnknownStep { .. } => exit::USAGE,
        PlanRefusal::NothingToUndo { .. } | PlanRefusal::Dependents { .. } => exit::FAILED,
    };
    let hint = refusal.hint();
    let mut error = CliError::new(code, refusal);
    error.hints.extend(hint);
    error.hints.push("nothing was changed".into());
    error
}

pub fn run(ctx: &mut Ctx, args: RollbackArgs) -> CliResult {
    let target = parse_target(&args)?;
    let on_drift = match args.on_drift {
        OnDriftArg::Stop => OnDrift::Stop,
        OnDriftArg::Skip => OnDrift::Skip,
    };
    let ledger = ctx.open_write()?;
    let mut databases = Databases::new(args.databases.clone());
    databases.allow_triggers = args.allow_triggers;
    let recorder = if args.dry_run {
        super::recover::mention_unfinished(&mut ctx.printer, &ledger)?;
        Recorder::new(ledger)
    } else {
        // What a rewind that died left unfinished is recorded first, so
        // that the plan leaves out the effects that never happened.
        let recorder = Recorder::new(ledger);
        super::recover::recover_first(&mut ctx.printer, &recorder, &mut databases)?;
        recorder
    };
    let plan = plan(&recorder, &target, args.cascade)?.map_err(refusal_error)?;
    if !args.allow_irreversible && !plan.irreversible.is_empty() && !args.dry_run {
        return Err(irreversible_error(&plan.irreversible));
    }
    let resolutions = resolutions(&args, &plan)?;
    if args.dry_run {
        let checks = undo::dry_run(
            recorder.blobs(),
            &mut databases,
            &items(&plan, &resolutions),
        )?;
        let mut drifted = 0;
        let mut rows: Vec<DryItem> = plan
            .items
            .iter()
            .zip(checks)
            .map(|(item, (_, drift, checked))| DryItem {
                seq: item.seq,
                run: item.run.clone(),
                step: item.step,
                event: item.event.kind(),
                inverse: describe_inverse(&item.event),
                dependent: item.dependent,
                precondition: match (drift, checked) {
                    _ if item.undo_started.is_some() && !resolutions.contains_key(&item.seq) => {
                        format!(
                            "in doubt: its undo command was started at seq {} and may not have finished",
                            item.undo_started.unwrap_or_default()
                        )
                    }
                    (Some(drift), _) => {
                        drifted += 1;
                        format!(
                            "drift: {} (expected {}, found {})",
                            drift.what, drift.expected, drift.actual
                        )
                    }
                    (None, true) => "ok".into(),
                    (None, false) => "checked when reached".into(),
                },
            })
            .collect();
        // The irreversible steps among them, which nothing undoes.
        rows.extend(plan.irreversible.iter().map(|item| DryItem {
            seq: item.seq,
            run: item.run.clone(),
            step: item.step,
            event: item.event.kind(),
            inverse: "none: irreversible".into(),
            dependent: item.dependent,
            precondition: if args.allow_irreversible {
                "left in place (--allow-irreversible)".into()
            } else {
                "refused without --allow-irreversible".into()
            },
        }));
        rows.sort_by_key(|row| std::cmp::Reverse(row.seq));
        if ctx.printer.json {
            ctx.printer.json(&rows)?;
        } else {
            let table_rows: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.seq.to_string(),
                        match (&r.run, r.step) {
                            (Some(run), Some(step)) => format!("{run}:{step}"),
                            (Some(run), None) => run.clone(),
                            _ => "-".into(),
                        },
                        r.event.to_owned(),
                        format!(
                            "{}{}",
                            // A `down` statement on one line; paths and
                            // commands as they are.
                            if r.event == "SchemaChanged" {
                                one_line(&r.inverse)
                            } else {
                                r.inverse.clone()
                            },
                            if r.dependent { " (dependent)" } else { "" }
                        ),
                        r.precondition.clone(),
                    ]
                })
                .collect();
            let mut text = format!(
                "rollback plan of {}: {} inverse(s), newest first{}\n",
                plan.target,
                plan.items.len(),
                if plan.already_compensated > 0 {
                    format!(" ({} already compensated)", plan.already_compensated)
                } else {
                    String::new()
                }
            );
            text.push_str(&table(
                &["SEQ", "STEP", "EVENT", "INVERSE", "PRECONDITION"],
                &table_rows,
            ));
            ctx.printer.data(&text)?;
            ctx.printer.note("dry run: nothing was changed");
        }
        // As the rollback itself would refuse, before it met any drift.
        if !args.allow_irreversible && !plan.irreversible.is_empty() {
            return Err(irreversible_error(&plan.irreversible));
        }
        if drifted > 0 {
            return Err(CliError::new(
                exit::DRIFT,
                anyhow::anyhow!("the rollback would meet drift at {drifted} item(s)"),
            )
            .hint("`--on-drift skip` records drift and goes on; or put the paths back as the plan expects"));
        }
        return Ok(());
    }
    if !args.yes
        && !confirm(
            &mut ctx.printer,
            &format!(
                "roll back {} ({} inverse(s))?",
                plan.target,
                plan.items.len()
            ),
        )?
    {
        return Err(CliError::new(
            exit::FAILED,
            anyhow::anyhow!("not confirmed; nothing was changed"),
        ));
    }
    let target_text = plan.target.to_string();
    let printer = &mut ctx.printer;
    let run = own_run(&target).map(str::to_owned);
    // On a terminal, one bar over the inverses instead of a line for each
    // (a rollback of a million rows undoes a thousand events), with drift
    // printed above it; anywhere else, a line for each inverse.
    let bar = (std::io::stderr().is_terminal() && !printer.json).then(|| {
        let bar = indicatif::ProgressBar::new(plan.items.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {wide_msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix("rolling back");
        bar
    });
    let report = undo::rollback(
        &recorder,
        run.as_deref(),
        target,
        args.cascade,
        &items(&plan, &resolutions),
        on_drift,
        &mut databases,
        &mut |progress| match (progress, &bar) {
            (RollbackProgress::Undone { seq, kind, subject }, Some(bar)) => {
                bar.inc(1);
                bar.set_message(undone_line(*seq, kind, subject));
            }
            (RollbackProgress::Drifted(_), Some(bar)) => {
                bar.suspend(|| print_progress(printer, progress))
            }
            (_, None) => print_progress(printer, progress),
        },
    );
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let report = report?;
    if ctx.printer.json {
        ctx.printer.json(&serde_json::json!({
            "target": target_text,
            "compensated": report.compensated,
            "in_part": report.in_part,
            "outcome": report.outcome.to_string(),
            "drift": report.drifted.iter().map(|d| serde_json::json!({
                "seq": d.seq, "path": d.path, "differs": d.what, "expected": d.expected, "found": d.actual,
            })).collect::<Vec<_>>(),
            "error": report.error,
            "in_doubt": report.in_doubt.as_ref().map(|d| serde_json::json!({
                "seq": d.seq, "started": d.started, "command": d.command,
            })),
        }))?;
    } else {
        let mut text = format!(
            "rolled back {target_text}: {} inverse(s) applied, {}{} drifted, outcome {}\n",
            report.compensated,
            if report.in_part > 0 {
                format!(
                    "{} in part (their rows restored but the drifted ones), ",
                    report.in_part
                )
            } else {
                String::new()
            },
            report.drifted.len(),
            report.outcome
        );
        if !report.drifted.is_empty() {
            text.push_str(&render_drift(&report.drifted));
        }
        ctx.printer.data(&text)?;
    }
    if let Some(error) = report.error {
        let stopped = CliError::new(
            exit::FAILED,
            anyhow::anyhow!("the rollback stopped: {error}"),
        );
        return Err(match report.in_doubt {
            Some(in_doubt) => stopped.hint(format!(
                "check whether `{}` took effect; then run the rollback again with `--mark-undone {seq}` if it did, or with `--retry-undo {seq}` to run it again",
                in_doubt.command,
                seq = in_doubt.seq
            )),
            None => stopped.hint(
                "fix the cause, then run the same rollback again; undone items are not undone twice",
            ),
        });
    }
    if !report.drifted.is_empty() {
        let stopped = on_drift == OnDrift::Stop;
        return Err(CliError::new(
            exit::DRIFT,
            anyhow::anyhow!(
                "drift: the world no longer matches {} item(s){}",
                report.drifted.len(),
                if stopped { "; stopped before touching it" } else { "; they were left as found" }
            ),
        )
        .hint(if stopped {
            "put the path or row back as expected and run the rollback again, or pass `--on-drift skip`"
        } else {
            "the skipped items are recorded as DriftFound; `rewind history --kind DriftFound` lists them"
        }));
    }
    Ok(())
}

/// The line of an inverse undone.
fn undone_line(seq: u64, kind: &str, subject: &str) -> String {
    format!("undid seq {seq} {kind} {subject}")
}

/// A rollback's progress as plain lines on stderr: each inverse undone,
/// each drift met.
pub fn print_progress(printer: &mut Printer, progress: &RollbackProgress) {
    match progress {
        RollbackProgress::Undone { seq, kind, subject } => {
            printer.status(&undone_line(*seq, kind, subject))
        }
        RollbackProgress::Drifted(drift) => printer.warning(&format!("drift at {drift}")),
    }
}
