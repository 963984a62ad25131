//! `rewind status [RUN]`: every run with its target and lifecycle
//! (running → migrated / failed / interrupted → rolled back), or one run's
//! steps. An unfinished run is running only while a writer holds the
//! ledger; with none, it is shown as interrupted, with the command that
//! recovers it.

use rewind_ledger::{Entry, View};
use rewind_projections::status::{RunStatus, Writer, runs};
use serde::Serialize;

use crate::cli::StatusArgs;
use crate::context::Ctx;
use crate::error::{CliError, CliResult};
use crate::printer::table;

#[derive(Serialize)]
struct JsonStep<'a> {
    step: u32,
    kind: &'a str,
    state: String,
    operation: &'a str,
    detail: &'a str,
    effects: u64,
    compensated: u64,
}

#[derive(Serialize)]
struct JsonRun<'a> {
    run: &'a str,
    spec_id: &'a str,
    target: Option<&'a str>,
    actor: &'a str,
    state: String,
    outcome: Option<String>,
    error: Option<&'a str>,
    started_at: String,
    effects: u64,
    compensated: u64,
    never_happened: u64,
    /// Drift that rollbacks or recovery found and left alone (`DriftFound`).
    drift_found: u64,
    steps: Vec<JsonStep<'a>>,
}

fn json_run(run: &RunStatus) -> JsonRun<'_> {
    JsonRun {
        run: &run.run,
        spec_id: &run.spec_id,
        target: run.target.as_deref(),
        actor: &run.actor,
        state: run.lifecycle.to_string(),
        outcome: run.outcome.map(|o| o.to_string()),
        error: run.error.as_deref(),
        started_at: run.started_at.to_string(),
        effects: run.effects,
        compensated: run.compensated,
        never_happened: run.never_happened,
        drift_found: run.drift_found,
        steps: run
            .steps
            .iter()
            .map(|s| JsonStep {
                step: s.step,
                kind: &s.kind,
                state: s.state.to_string(),
                operation: &s.operation,
                detail: &s.detail,
                effects: s.effects,
                compensated: s.compensated,
            })
            .collect(),
    }
}

/// The table of runs.
pub fn render_runs(runs: &[RunStatus]) -> String {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            // Steps that finished, rolled back since or not, as apply
            // counts them: a failed or interrupted step is not done.
            let done = r
                .steps
                .iter()
                .filter(|s| {
                    matches!(
                        s.state,
                        rewind_projections::status::StepState::Finished
                            | rewind_projections::status::StepState::RolledBack
                    )
                })
                .count();
            vec![
                r.run.clone(),
                r.spec_id.clone(),
                r.target.clone().unwrap_or_else(|| "-".into()),
                r.lifecycle.to_string(),
                format!("{done}/{}", r.steps.len()),
                format!("{}/{}", r.compensated, r.effects),
                r.started_at
                    .as_datetime()
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string(),
            ]
        })
        .collect();
    table(
        &[
            "RUN", "SPEC", "TARGET", "STATE", "STEPS", "UNDONE", "STARTED",
        ],
        &rows,
    )
}

/// One run in detail.
pub fn render_run(run: &RunStatus) -> String {
    let mut text = format!(
        "run {} of {} on {}: {}\n",
        run.run,
        run.spec_id,
        run.target.as_deref().unwrap_or("-"),
        run.lifecycle
    );
    text.push_str(&format!(
        "started {} by {}, seqs {}–{}, {} effect(s), {} undone{}\n",
        run.started_at,
        run.actor,
        run.first_seq,
        run.last_seq,
        run.effects,
        run.compensated,
        if run.never_happened > 0 {
            format!(
                " ({} recorded effect(s) found never to have happened)",
                run.never_happened
            )
        } else {
            String::new()
        }
    ));
    if run.drift_found > 0 {
        text.push_str(&format!(
            "{} row(s) or path(s) found changed since and left alone by a rollback or recovery (`rewind history --kind DriftFound --run {}`)\n",
            run.drift_found, run.run
        ));
    }
    if let Some(error) = &run.error {
        text.push_str(&format!("error: {error}\n"));
    }
    let rows: Vec<Vec<String>> = run
        .steps
        .iter()
        .map(|s| {
            vec![
                s.step.to_string(),
                s.kind.clone(),
                s.state.to_string(),
                format!("{}/{}", s.compensated, s.effects),
                if s.detail.is_empty() {
                    s.operation.clone()
                } else {
                    s.detail.clone()
                },
            ]
        })
        .collect();
    text.push_str(&table(
        &["STEP", "KIND", "STATE", "UNDONE", "DETAIL"],
        &rows,
    ));
    text
}

pub fn run(ctx: &mut Ctx, args: StatusArgs) -> CliResult {
    let view = ctx.open_read()?;
    let (head, _) = view.head();
    let mut entries: Vec<Entry> = Vec::new();
    view.for_each_in(1, head, |entry| {
        entries.push(entry.clone());
        Ok(())
    })?;
    // Reading from the store means no process holds the ledger to write.
    let writer = match view {
        View::Store(_) => Writer::Absent,
        View::Journal(..) => Writer::Holding,
    };
    let all = runs(&entries, writer);
    match &args.run {
        Some(wanted) => {
            let Some(run) = all.iter().find(|r| &r.run == wanted) else {
                return Err(
                    CliError::usage(format!("there is no run {wanted} in this ledger"))
                        .hint("`rewind status` lists the runs"),
                );
            };
            if ctx.printer.json {
                ctx.printer.json(&json_run(run))?;
            } else {
                ctx.printer.data(&render_run(run))?;
            }
        }
        None => {
            if ctx.printer.json {
                ctx.printer
                    .json(&all.iter().map(json_run).collect::<Vec<_>>())?;
            } else if all.is_empty() {
                ctx.printer
                    .note("no runs yet; `rewind apply SPEC` starts one");
            } else {
                ctx.printer.data(&render_runs(&all))?;
            }
        }
    }
    Ok(())
}
