//! `rewind rehearse SPEC`: proves a migration's inverses on scratch copies
//! of each target (`rewind_migrations::rehearse`): apply, roll back and
//! compare with the original, apply again and compare with the first apply.
//! The real targets and the operator's ledger are never touched: each
//! rehearsal records into a ledger of its own in the scratch directory,
//! which is removed afterwards unless `--keep`.
//!
//! Exit 0 when every target's rollback came back identical; 1 when a phase
//! failed or a rollback left differences. A second apply that differs from
//! the first is reported as a warning: a migration that writes the time or
//! a random value is not wrong for it.

use rewind_ledger::{Ledger, Outcome, RollbackTarget};
use rewind_migrations::Recorder;
use rewind_migrations::apply::{Progress, RunRequest, apply};
use rewind_migrations::databases::Databases;
use rewind_migrations::plan::plan;
use rewind_migrations::rehearse::{Copied, Found, Planned, Scratch};
use rewind_migrations::undo::OnDrift;
use serde::Serialize;

use super::rollback::{Rollback, roll_back};
use super::spec_input::resolve_all;
use crate::cli::RehearseArgs;
use crate::context::Ctx;
use crate::error::{CliError, CliResult, exit};
use crate::printer::table;

/// One phase of a rehearsal.
#[derive(Debug, Serialize)]
pub struct Phase {
    pub phase: &'static str,
    /// `succeeded`, `failed`, `skipped`.
    pub outcome: String,
    pub detail: String,
}

/// The rehearsal of one target.
#[derive(Debug, Serialize)]
pub struct Rehearsed {
    pub target: Option<String>,
    pub copies: Vec<CopiedItem>,
    pub skipped: Vec<String>,
    pub phases: Vec<Phase>,
    /// What the rollback did not bring back, against the original.
    pub after_rollback: Vec<FoundItem>,
    /// What the second apply did differently from the first.
    pub after_reapply: Vec<FoundItem>,
    /// Where the copies were kept, with `--keep`.
    pub kept: Option<String>,
    #[serde(skip)]
    pub exact: bool,
}

#[derive(Debug, Serialize)]
pub struct CopiedItem {
    pub what: &'static str,
    pub original: String,
    pub copy: String,
    /// Absolute links in a copied root pointed at the copy.
    pub relinked: usize,
}

#[derive(Debug, Serialize)]
pub struct FoundItem {
    pub place: String,
    pub difference: String,
}

fn found(items: Vec<Found>) -> Vec<FoundItem> {
    items
        .into_iter()
        .map(|f| FoundItem {
            place: f.place,
            difference: f.difference,
        })
        .collect()
}

fn copied(items: &[Copied]) -> Vec<CopiedItem> {
    items
        .iter()
        .map(|c| CopiedItem {
            what: c.what,
            original: c.original.clone(),
            copy: c.copy.clone(),
            relinked: c.relinked,
        })
        .collect()
}

pub fn run(ctx: &mut Ctx, args: RehearseArgs) -> CliResult {
    // Resolved only: planning would run the preflight on the real targets.
    let (spec, targets) = resolve_all(&args.spec)?;
    let parent = match &args.scratch {
        Some(dir) => tempfile::Builder::new()
            .prefix("rewind-rehearse-")
            .tempdir_in(dir)?,
        None => tempfile::Builder::new()
            .prefix("rewind-rehearse-")
            .tempdir()?,
    };
    let base = parent.path().canonicalize()?;
    // Every target is checked before any is copied.
    let mut checked = Vec::new();
    for (index, target) in targets.iter().enumerate() {
        let dir = base.join(format!("target-{}", index + 1));
        checked.push(Planned::check(
            &spec,
            &target.resolved.vars,
            &dir,
            args.run_commands,
        )?);
    }
    let mut rehearsals = Vec::new();
    for (index, (target, planned)) in targets.iter().zip(checked).enumerate() {
        let label = target.target.as_deref().unwrap_or("its variables");
        let mut scratch = planned.make()?;
        ctx.printer.status(&format!(
            "rehearsing {} on {label}: copies in {}",
            spec.header.id,
            scratch.dir().display()
        ));
        let mut ledger = Ledger::init(
            &base.join(format!("ledger-{}", index + 1)),
            ctx.ledger_id.as_deref().unwrap_or("rehearsal"),
            ctx.origin.clone(),
        )?;
        if let Some(now) = ctx.now {
            ledger.set_clock(move || now);
        }
        let recorder = Recorder::new(ledger);
        let mut rehearsed = Rehearsed {
            target: target.target.clone(),
            copies: copied(&scratch.copies),
            skipped: scratch
                .skipped
                .iter()
                .map(|(step, kind, why)| format!("step {step} ({kind}): {why}"))
                .collect(),
            phases: Vec::new(),
            after_rollback: Vec::new(),
            after_reapply: Vec::new(),
            kept: None,
            exact: false,
        };
        rehearse_one(ctx, &spec, &scratch, &recorder, &mut rehearsed)?;
        drop(recorder);
        if args.keep {
            scratch.keep();
            rehearsed.kept = Some(base.display().to_string());
        }
        for left in scratch.clean_up() {
            ctx.printer
                .warning(&format!("could not remove {left}; remove it by hand"));
        }
        rehearsals.push(rehearsed);
    }
    if args.keep {
        // The scratch directory outlives the command.
        let _ = parent.keep();
    }
    if ctx.printer.json {
        ctx.printer.json(&rehearsals)?;
    } else {
        ctx.printer.data(&render(&spec.header.id, &rehearsals))?;
    }
    let failed = rehearsals.iter().filter(|r| !r.exact).count();
    for rehearsed in &rehearsals {
        if rehearsed.exact && !rehearsed.after_reapply.is_empty() {
            ctx.printer.warning(&format!(
                "{}: applying again after the rollback did not give the same result as the first apply",
                rehearsed.target.as_deref().unwrap_or(&spec.header.id)
            ));
        }
    }
    if failed == 0 {
        return Ok(());
    }
    Err(CliError::new(
        exit::FAILED,
        anyhow::anyhow!(
            "{failed} of {} rehearsal(s) did not come back to the original",
            rehearsals.len()
        ),
    )
    .hint("the differences above say what the rollback left; fix the spec (a `down`, an `undo`) and rehearse again")
    .hint("nothing outside the scratch copies was changed"))
}

/// Apply, roll back, apply again; each compared with the state before.
fn rehearse_one(
    ctx: &mut Ctx,
    spec: &rewind_migrations::spec::Spec,
    scratch: &Scratch,
    recorder: &Recorder,
    rehearsed: &mut Rehearsed,
) -> CliResult {
    let original = scratch.snapshot()?;
    if apply_phase(
        ctx,
        spec,
        scratch,
        recorder,
        "apply",
        "rehearsal-1",
        rehearsed,
    )?
    .is_none()
    {
        return Ok(());
    }
    let applied_snapshot = scratch.snapshot()?;
    let mut databases = Databases::new(scratch.resolved.database_urls());
    let rolled = roll_back(
        recorder,
        RollbackTarget::Run("rehearsal-1".into()),
        false,
        OnDrift::Stop,
        true,
        &mut databases,
        &mut |_| {},
    )?;
    let (outcome, detail) = match rolled {
        Rollback::Done(report) if report.outcome == Outcome::Succeeded => (
            "succeeded".to_owned(),
            format!("{} inverse(s) applied", report.compensated),
        ),
        Rollback::Done(report) => (
            "failed".to_owned(),
            format!(
                "{}{}",
                report.outcome,
                report
                    .drifted
                    .first()
                    .map(|d| format!(" at {d}"))
                    .unwrap_or_default()
            ),
        ),
        // A run that changed nothing is rolled back by doing nothing.
        Rollback::Refused(rewind_projections::inverse::PlanRefusal::NothingToUndo { .. }) => {
            ("succeeded".to_owned(), "nothing to undo".to_owned())
        }
        Rollback::Refused(refusal) => ("failed".to_owned(), refusal.to_string()),
        Rollback::Irreversible(items) => (
            "failed".to_owned(),
            format!("{} irreversible step(s)", items.len()),
        ),
    };
    let rolled_back = outcome == "succeeded";
    rehearsed.phases.push(Phase {
        phase: "rollback",
        outcome,
        detail,
    });
    rehearsed.after_rollback = found(original.differences(&scratch.snapshot()?));
    rehearsed.exact = rolled_back && rehearsed.after_rollback.is_empty();
    if let Some(last) = rehearsed.phases.last_mut()
        && rolled_back
    {
        last.detail
            .push_str(&if rehearsed.after_rollback.is_empty() {
                "; identical to the original".to_owned()
            } else {
                format!(
                    "; {} difference(s) from the original",
                    rehearsed.after_rollback.len()
                )
            });
    }
    if !rolled_back {
        return Ok(());
    }
    if apply_phase(
        ctx,
        spec,
        scratch,
        recorder,
        "apply again",
        "rehearsal-2",
        rehearsed,
    )?
    .is_some()
    {
        rehearsed.after_reapply = found(applied_snapshot.differences(&scratch.snapshot()?));
        if let Some(last) = rehearsed.phases.last_mut() {
            last.detail
                .push_str(&if rehearsed.after_reapply.is_empty() {
                    "; identical to the first apply".to_owned()
                } else {
                    format!(
                        "; {} difference(s) from the first apply",
                        rehearsed.after_reapply.len()
                    )
                });
        }
    } else {
        rehearsed.exact = false;
    }
    Ok(())
}

/// Plans and applies on the copies; the number of events, or `None` if it failed.
fn apply_phase(
    ctx: &mut Ctx,
    spec: &rewind_migrations::spec::Spec,
    scratch: &Scratch,
    recorder: &Recorder,
    phase: &'static str,
    run: &str,
    rehearsed: &mut Rehearsed,
) -> CliResult<Option<u64>> {
    let failed = |detail: String| Phase {
        phase,
        outcome: "failed".into(),
        detail,
    };
    let planned = match plan(&scratch.resolved) {
        Ok(planned) => planned,
        Err(error) => {
            rehearsed.phases.push(failed(error.to_string()));
            return Ok(None);
        }
    };
    let request = RunRequest {
        run: run.to_owned(),
        spec,
        resolved: &scratch.resolved,
        plan: &planned,
        target: rehearsed.target.clone(),
    };
    let printer = &mut ctx.printer;
    let mut progress = |p: &Progress| {
        if let Progress::StepFailed { step, error } = p {
            printer.status(&format!("{phase}: step {step} failed: {error}"));
        }
    };
    match apply(recorder, &request, &mut progress) {
        Ok(report) if report.outcome == Outcome::Succeeded => {
            let events: u64 = report.steps.iter().map(|s| s.effects).sum();
            rehearsed.phases.push(Phase {
                phase,
                outcome: "succeeded".into(),
                detail: format!("{} step(s), {events} effect event(s)", report.steps.len()),
            });
            Ok(Some(events))
        }
        Ok(report) => {
            rehearsed.phases.push(failed(
                report.error.unwrap_or_else(|| report.outcome.to_string()),
            ));
            Ok(None)
        }
        Err(error) => {
            rehearsed.phases.push(failed(error.to_string()));
            Ok(None)
        }
    }
}

fn render(spec_id: &str, rehearsals: &[Rehearsed]) -> String {
    let mut out = String::new();
    for rehearsed in rehearsals {
        out.push_str(&format!(
            "rehearsal of {spec_id} on {}\n",
            rehearsed.target.as_deref().unwrap_or("its variables")
        ));
        for copy in &rehearsed.copies {
            out.push_str(&format!(
                "  copied {} {} → {}{}\n",
                copy.what,
                copy.original,
                copy.copy,
                match copy.relinked {
                    0 => String::new(),
                    links => format!(" ({links} absolute link(s) into it pointed at the copy)"),
                }
            ));
        }
        for skipped in &rehearsed.skipped {
            out.push_str(&format!("  skipped {skipped}\n"));
        }
        let rows: Vec<Vec<String>> = rehearsed
            .phases
            .iter()
            .map(|p| vec![p.phase.to_owned(), p.outcome.clone(), p.detail.clone()])
            .collect();
        out.push_str(&table(&["PHASE", "OUTCOME", "DETAIL"], &rows));
        for (title, items) in [
            ("left by the rollback", &rehearsed.after_rollback),
            ("different after applying again", &rehearsed.after_reapply),
        ] {
            if items.is_empty() {
                continue;
            }
            out.push_str(&format!("{title}:\n"));
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|f| vec![f.place.clone(), f.difference.clone()])
                .collect();
            out.push_str(&table(&["WHERE", "DIFFERENCE"], &rows));
        }
        if let Some(kept) = &rehearsed.kept {
            out.push_str(&format!("copies and ledgers kept in {kept}\n"));
        }
    }
    out
}
