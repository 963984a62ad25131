//! Applying a planned spec to one target as one run: `RunStarted`, then
//! for each step its intent (`StepStarted`, durable before any effect),
//! the effect events, and `StepFinished` or `StepFailed`; `RunFinished`.
//!
//! Durability costs one batch per step: the previous step's last events
//! and its `StepFinished` travel with this step's `StepStarted`, which
//! must be durable before this step's effect, and the last step's with
//! `RunFinished`. A step with effects on files adds one batch per 1000
//! effects: their events are durable before the effects happen
//! ([`StepContext::record_ahead`]).
//!
//! A failing step stops the run and leaves what earlier steps did in
//! place, recorded, for `rewind rollback RUN`; a verify step with
//! `on_fail = "rollback"` asks the caller to roll the run back.

use rewind_ledger::{
    Event, Ledger, Outcome, RunFinished, RunStarted, StepFailed, StepFinished, StepStarted,
};

use crate::databases::Databases;
use crate::db::redact_url;
use crate::error::MigrateError;
use crate::plan::{Plan, PlannedStep};
use crate::recorder::Recorder;
use crate::spec::{Resolved, Spec};
use crate::steps::{StepContext, StepOutcome};

/// One target's run, ready to go.
#[derive(Debug, Clone)]
pub struct RunRequest<'a> {
    pub run: String,
    pub spec: &'a Spec,
    pub resolved: &'a Resolved,
    pub plan: &'a Plan,
    pub target: Option<String>,
}

/// Progress of a run, for the printer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    StepStarted {
        step: u32,
        kind: &'static str,
        operation: String,
    },
    /// A long step's work so far (rows recorded by a database step, after
    /// each chunk); a step may send none.
    StepAdvanced {
        step: u32,
        done: String,
    },
    StepFinished {
        step: u32,
        summary: String,
    },
    StepFailed {
        step: u32,
        error: String,
    },
}

/// How one step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepReport {
    pub step: u32,
    pub kind: &'static str,
    pub operation: String,
    pub outcome: Outcome,
    pub summary: String,
    pub effects: u64,
}

/// How a run ended. Failure is a value here; `error` says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    pub run: String,
    pub target: Option<String>,
    pub outcome: Outcome,
    pub steps: Vec<StepReport>,
    pub error: Option<String>,
    pub hint: Option<String>,
    /// A verify step with `on_fail = "rollback"` failed.
    pub rollback_requested: bool,
}

/// Refuses to apply a spec id whose text changed since an earlier run,
/// naming that run.
pub fn check_spec_unchanged(ledger: &Ledger, spec: &Spec) -> Result<(), MigrateError> {
    let Some(seqs) = ledger.seqs_of_kind("RunStarted")? else {
        return Ok(());
    };
    for seq in seqs.into_iter().rev() {
        let entry = ledger.get(seq)?;
        if let Event::RunStarted(started) = &entry.record.event
            && started.spec_id == spec.header.id
        {
            if started.spec_sha256 != spec.sha256 {
                return Err(MigrateError::ChangedSpec {
                    id: spec.header.id.clone(),
                    run: entry.record.run.clone().unwrap_or_default(),
                    previous: started.spec_sha256.short(),
                    current: spec.sha256.short(),
                });
            }
            return Ok(());
        }
    }
    Ok(())
}

/// A target's text (`name=value` words) with passwords removed from urls.
pub fn redact_words(text: &str) -> String {
    text.split(' ')
        .map(|word| match word.split_once('=') {
            Some((name, value)) => format!("{name}={}", redact_url(value)),
            None => redact_url(word),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs every step of the plan against the world, recording as it goes.
pub fn apply(
    recorder: &Recorder,
    request: &RunRequest<'_>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<RunReport, MigrateError> {
    let run = request.run.as_str();
    // Passwords never reach the ledger: variables and targets holding a
    // database url are recorded without it, and so is a url written
    // into the spec text itself.
    let mut spec_text = request.spec.text.clone();
    for url in request.resolved.database_urls() {
        spec_text = spec_text.replace(&url, &redact_url(&url));
    }
    let mut carry: Vec<Event> = vec![Event::RunStarted(RunStarted {
        description: request.spec.header.description.clone(),
        spec_id: request.spec.header.id.clone(),
        spec_path: request.spec.file.clone(),
        spec_sha256: request.spec.sha256,
        spec_text,
        target: request.target.as_deref().map(redact_words),
        vars: request
            .resolved
            .vars
            .iter()
            .map(|(name, value)| (name.clone(), redact_url(value)))
            .collect(),
    })];
    let mut databases = Databases::new(request.resolved.database_urls());
    let mut report = RunReport {
        run: request.run.clone(),
        target: request.target.clone(),
        outcome: Outcome::Succeeded,
        steps: Vec::new(),
        error: None,
        hint: None,
        rollback_requested: false,
    };
    for (planned, step) in request.plan.steps.iter().zip(&request.resolved.steps) {
        let PlannedStep {
            index,
            kind,
            operation,
            params,
        } = planned;
        carry.push(Event::StepStarted(StepStarted {
            kind: (*kind).to_owned(),
            operation: operation.clone(),
            params: params.clone(),
            step: *index,
        }));
        recorder.record(Some(run), std::mem::take(&mut carry))?;
        progress(&Progress::StepStarted {
            step: *index,
            kind,
            operation: operation.clone(),
        });
        let mut cx = StepContext::new(recorder, run, *index, &mut databases, &mut *progress);
        let result = step
            .spec
            .apply(&mut cx)
            .and_then(|outcome| cx.finish_effects().map(|()| outcome));
        carry.extend(cx.take_pending());
        let effects = cx.recorded;
        let (outcome, summary, error) = match result {
            Ok(StepOutcome::Done { summary }) => (Outcome::Succeeded, summary, None),
            Ok(StepOutcome::ChecksFailed { summary, rollback }) => {
                report.rollback_requested = rollback;
                (Outcome::Failed, summary.clone(), Some((summary, None)))
            }
            Err(error) => (
                Outcome::Failed,
                error.to_string(),
                Some((error.to_string(), error.hint())),
            ),
        };
        match &error {
            None => {
                carry.push(Event::StepFinished(StepFinished {
                    step: *index,
                    summary: summary.clone(),
                }));
                progress(&Progress::StepFinished {
                    step: *index,
                    summary: summary.clone(),
                });
            }
            Some((message, _)) => {
                carry.push(Event::StepFailed(StepFailed {
                    error: message.clone(),
                    interrupted: false,
                    step: *index,
                }));
                progress(&Progress::StepFailed {
                    step: *index,
                    error: message.clone(),
                });
            }
        }
        report.steps.push(StepReport {
            step: *index,
            kind,
            operation: operation.clone(),
            outcome,
            summary,
            effects,
        });
        if let Some((message, hint)) = error {
            report.outcome = Outcome::Failed;
            // Most errors already name their step; the rest get it here.
            report.error = Some(if message.starts_with(&format!("step {index} ")) {
                message
            } else {
                format!("step {index} ({kind}): {message}")
            });
            report.hint = hint;
            break;
        }
    }
    carry.push(Event::RunFinished(RunFinished {
        error: report.error.clone(),
        outcome: report.outcome,
    }));
    recorder.record(Some(run), carry)?;
    Ok(report)
}
