//! `rewind apply`: every target its own run, `--jobs N` at once on tokio's
//! blocking pool; the one recorder serialises appends. One failing target
//! does not stop the others unless `--fail-fast`. Progress goes to stderr
//! as plain lines, the summary table to stdout.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rewind_ledger::{Outcome, RollbackTarget};
use rewind_migrations::Recorder;
use rewind_migrations::apply::{Progress, RunReport, RunRequest, apply, check_spec_unchanged};
use rewind_migrations::databases::Databases;
use rewind_migrations::spec::Spec;
use rewind_migrations::undo::OnDrift;
use serde::Serialize;

use super::rollback::{Rollback, roll_back};
use super::spec_input::{TargetPlan, load, run_ids};
use crate::cli::ApplyArgs;
use crate::context::Ctx;
use crate::error::{CliError, CliResult, exit};
use crate::printer::{Printer, table};

/// How one target ended.
#[derive(Debug, Serialize)]
pub struct TargetResult {
    pub target: Option<String>,
    pub run: String,
    /// `succeeded`, `failed`, `rolled back`, `not started`.
    pub outcome: String,
    pub steps_done: usize,
    pub steps: usize,
    pub error: Option<String>,
    #[serde(skip)]
    pub hint: Option<String>,
}

enum Message {
    Progress(String, Progress),
    Note(String),
}

/// Applies every planned target; returns one result per target, in order.
pub fn apply_all(
    printer: &mut Printer,
    recorder: &Recorder,
    spec: Spec,
    targets: Vec<TargetPlan>,
    ids: Vec<String>,
    jobs: usize,
    fail_fast: bool,
) -> CliResult<Vec<TargetResult>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(jobs.clamp(1, 16))
        .enable_all()
        .build()?;
    let spec = Arc::new(spec);
    let stop = Arc::new(AtomicBool::new(false));
    let semaphore = Arc::new(tokio::sync::Semaphore::new(jobs.max(1)));
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<Message>();
    // A progress bar per target on a terminal; plain lines anywhere else.
    let bars =
        (std::io::stderr().is_terminal() && !printer.json).then(indicatif::MultiProgress::new);
    let mut bar_of: std::collections::BTreeMap<String, indicatif::ProgressBar> =
        std::collections::BTreeMap::new();
    if let Some(multi) = &bars {
        let style = indicatif::ProgressStyle::with_template(
            "{prefix:>14} [{bar:30}] {pos}/{len} {wide_msg}",
        )
        .expect("a valid template")
        .progress_chars("=> ");
        for (planned, run) in targets.iter().zip(&ids) {
            let bar = multi.add(indicatif::ProgressBar::new(planned.plan.steps.len() as u64));
            bar.set_style(style.clone());
            bar.set_prefix(run.clone());
            bar_of.insert(run.clone(), bar);
        }
    }
    let results = runtime.block_on(async {
        let mut handles = Vec::new();
        for (planned, run) in targets.into_iter().zip(ids) {
            let spec = Arc::clone(&spec);
            let stop = Arc::clone(&stop);
            let semaphore = Arc::clone(&semaphore);
            let sender = sender.clone();
            let recorder = recorder.clone();
            handles.push(tokio::spawn(async move {
                let _permit = semaphore.acquire_owned().await.expect("never closed");
                let steps = planned.plan.steps.len();
                if stop.load(Ordering::SeqCst) {
                    return TargetResult {
                        target: planned.target.clone(),
                        run,
                        outcome: "not started".into(),
                        steps_done: 0,
                        steps,
                        error: Some("an earlier target failed and --fail-fast was given".into()),
                        hint: None,
                    };
                }
                let target = planned.target.clone();
                let task_run = run.clone();
                let joined = tokio::task::spawn_blocking(move || {
                    run_one(&recorder, &spec, &planned, &task_run, &sender)
                })
                .await;
                let result = match joined {
                    Ok(result) => result,
                    Err(error) => TargetResult {
                        target,
                        run,
                        outcome: "failed".into(),
                        steps_done: 0,
                        steps,
                        error: Some(format!("the task running the target stopped: {error}")),
                        hint: None,
                    },
                };
                if fail_fast && result.outcome != "succeeded" {
                    stop.store(true, Ordering::SeqCst);
                }
                result
            }));
        }
        drop(sender);
        let mut advanced: std::collections::BTreeMap<String, Instant> =
            std::collections::BTreeMap::new();
        while let Some(message) = receiver.recv().await {
            match (message, bars.as_ref()) {
                (Message::Progress(run, progress), Some(_)) => {
                    if let Some(bar) = bar_of.get(&run) {
                        match &progress {
                            Progress::StepStarted { step, kind, .. } => {
                                bar.set_message(format!("step {step} {kind}"))
                            }
                            Progress::StepAdvanced { step, done } => {
                                bar.set_message(format!("step {step}: {done}"))
                            }
                            Progress::StepFinished { .. } => bar.inc(1),
                            Progress::StepFailed { step, error } => {
                                bar.abandon_with_message(format!("step {step} FAILED: {error}"));
                            }
                        }
                    }
                }
                (Message::Progress(run, progress), None) => {
                    // A step's advances at most once a second a run, the
                    // first after a second: a short step prints none.
                    if let Progress::StepAdvanced { .. } = progress {
                        let last = advanced.entry(run.clone()).or_insert_with(Instant::now);
                        if last.elapsed() < ADVANCE_EVERY {
                            continue;
                        }
                        *last = Instant::now();
                    } else {
                        advanced.remove(&run);
                    }
                    printer.status(&progress_line(&run, &progress))
                }
                (Message::Note(text), _) => printer.note(&text),
            }
        }
        for bar in bar_of.values() {
            if !bar.is_finished() {
                bar.finish_with_message("done");
            }
        }
        if bars.is_some() {
            // Leave the finished bars in place and start the table below them.
            printer.status("");
        }
        let mut results = Vec::new();
        for handle in handles {
            results.push(handle.await.expect("target tasks do not panic"));
        }
        results
    });
    Ok(results)
}

/// How often a run's plain progress lines tell how far a long step got.
const ADVANCE_EVERY: Duration = Duration::from_secs(1);

fn progress_line(run: &str, progress: &Progress) -> String {
    match progress {
        Progress::StepStarted {
            step,
            kind,
            operation,
        } => format!("{run} step {step} {kind}: {operation}"),
        Progress::StepAdvanced { step, done } => format!("{run} step {step}: {done}"),
        Progress::StepFinished { step, summary } => format!("{run} step {step} done: {summary}"),
        Progress::StepFailed { step, error } => format!("{run} step {step} FAILED: {error}"),
    }
}

fn run_one(
    recorder: &Recorder,
    spec: &Spec,
    planned: &TargetPlan,
    run: &str,
    sender: &tokio::sync::mpsc::UnboundedSender<Message>,
) -> TargetResult {
    let request = RunRequest {
        run: run.to_owned(),
        spec,
        resolved: &planned.resolved,
        plan: &planned.plan,
        target: planned.target.clone(),
    };
    let mut progress = |p: &Progress| {
        let _ = sender.send(Message::Progress(run.to_owned(), p.clone()));
    };
    let steps = planned.plan.steps.len();
    let report: RunReport = match apply(recorder, &request, &mut progress) {
        Ok(report) => report,
        Err(error) => {
            return TargetResult {
                target: planned.target.clone(),
                run: run.to_owned(),
                outcome: "failed".into(),
                steps_done: 0,
                steps,
                hint: error.hint(),
                error: Some(error.to_string()),
            };
        }
    };
    let steps_done = report
        .steps
        .iter()
        .filter(|s| s.outcome == Outcome::Succeeded)
        .count();
    let mut result = TargetResult {
        target: planned.target.clone(),
        run: run.to_owned(),
        outcome: report.outcome.to_string(),
        steps_done,
        steps,
        error: report.error.clone(),
        hint: report.hint.clone().or_else(|| {
            (report.outcome != Outcome::Succeeded).then(|| format!("`rewind status {run}` shows each step; `rewind rollback {run}` undoes what was done"))
        }),
    };
    if report.rollback_requested {
        let _ = sender.send(Message::Note(format!(
            "{run}: a check failed with on_fail = \"rollback\"; rolling the run back"
        )));
        let mut databases = Databases::new(planned.resolved.database_urls());
        match roll_back(
            recorder,
            RollbackTarget::Run(run.to_owned()),
            false,
            OnDrift::Stop,
            false,
            &mut databases,
            &mut |_| {},
        ) {
            Ok(Rollback::Done(rolled)) if rolled.outcome == Outcome::Succeeded => {
                result.outcome = "rolled back".into();
                result.error = Some(format!(
                    "{}; rolled back: {} inverse(s) applied",
                    result.error.unwrap_or_default(),
                    rolled.compensated
                ));
                result.hint = None;
            }
            Ok(Rollback::Irreversible(items)) => {
                result.error = Some(format!(
                    "{}; the automatic rollback was refused: it would pass {} irreversible step(s)",
                    result.error.unwrap_or_default(),
                    items.len()
                ));
            }
            Ok(Rollback::Done(rolled)) => {
                result.error = Some(format!(
                    "{}; the automatic rollback ended {}{}",
                    result.error.unwrap_or_default(),
                    rolled.outcome,
                    rolled
                        .drifted
                        .first()
                        .map(|d| format!(" at {d}"))
                        .unwrap_or_default()
                ));
            }
            Ok(Rollback::Refused(refusal)) => {
                result.error = Some(format!(
                    "{}; the automatic rollback was refused: {refusal}",
                    result.error.unwrap_or_default()
                ));
            }
            Err(error) => {
                result.error = Some(format!(
                    "{}; the automatic rollback failed: {}",
                    result.error.unwrap_or_default(),
                    error.error
                ));
            }
        }
    }
    result
}

/// The summary table.
pub fn render_results(results: &[TargetResult]) -> String {
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            vec![
                r.target.clone().unwrap_or_else(|| "-".into()),
                r.run.clone(),
                r.outcome.clone(),
                format!("{}/{}", r.steps_done, r.steps),
                r.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(&["TARGET", "RUN", "OUTCOME", "STEPS", "ERROR"], &rows)
}

/// Asks on a terminal; anywhere else `--yes` is implied by not asking.
pub fn confirm(printer: &mut Printer, question: &str) -> CliResult<bool> {
    if !std::io::stdin().is_terminal() {
        return Ok(true);
    }
    printer.status(&format!("{question} [y/N]"));
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

pub fn run(ctx: &mut Ctx, args: ApplyArgs) -> CliResult {
    let (spec, targets) = load(&args.spec)?;
    if !args.yes {
        let mut text = String::new();
        for planned in &targets {
            text.push_str(&super::plan::render(&spec.header.id, planned));
        }
        if std::io::stdin().is_terminal() {
            ctx.printer.status(&text);
        }
        if !confirm(
            &mut ctx.printer,
            &format!("apply {} to {} target(s)?", spec.header.id, targets.len()),
        )? {
            return Err(CliError::new(
                exit::FAILED,
                anyhow::anyhow!("not confirmed; nothing was changed"),
            ));
        }
    }
    let recorder = Recorder::new(ctx.open_write()?);
    // What a rewind that died left unfinished is recorded before any new run.
    let mut databases = Databases::new(
        targets
            .iter()
            .flat_map(|planned| planned.resolved.database_urls()),
    );
    super::recover::recover_first(&mut ctx.printer, &recorder, &mut databases)?;
    drop(databases);
    if !args.allow_changed_spec {
        check_spec_unchanged(&recorder.lock(), &spec)?;
    }
    let ids = run_ids(ctx.sequential_run_ids, &recorder.lock(), targets.len());
    let total = targets.len();
    let results = apply_all(
        &mut ctx.printer,
        &recorder,
        spec,
        targets,
        ids,
        args.jobs,
        args.fail_fast,
    )?;
    if ctx.printer.json {
        ctx.printer.json(&results)?;
    } else {
        ctx.printer.data(&render_results(&results))?;
    }
    let failed: Vec<&TargetResult> = results
        .iter()
        .filter(|r| r.outcome != "succeeded")
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    let mut error = CliError::new(
        exit::FAILED,
        anyhow::anyhow!("{} of {total} target(s) did not succeed", failed.len()),
    );
    for result in failed {
        if let Some(hint) = &result.hint {
            error = error.hint(hint.clone());
        }
    }
    Err(error)
}
