//! `rewind plan`: the concrete operations a spec would carry out on each
//! target, after variables, root checks and a simulated run. Changes nothing
//! and needs no ledger.

use serde::Serialize;

use super::spec_input::{TargetPlan, load};
use crate::cli::PlanArgs;
use crate::context::Ctx;
use crate::error::CliResult;
use crate::printer::table;

#[derive(Serialize)]
struct JsonStep<'a> {
    step: u32,
    kind: &'a str,
    operation: &'a str,
    params: &'a std::collections::BTreeMap<String, String>,
}

#[derive(Serialize)]
struct JsonPlan<'a> {
    spec_id: &'a str,
    spec_sha256: String,
    target: Option<&'a str>,
    vars: &'a std::collections::BTreeMap<String, String>,
    steps: Vec<JsonStep<'a>>,
}

/// Renders one target's plan as text.
pub fn render(spec_id: &str, planned: &TargetPlan) -> String {
    let mut text = format!(
        "plan of {spec_id} for {}\n",
        planned.target.as_deref().unwrap_or("the given variables")
    );
    let rows: Vec<Vec<String>> = planned
        .plan
        .steps
        .iter()
        .map(|step| {
            vec![
                step.index.to_string(),
                step.kind.to_owned(),
                step.operation.clone(),
            ]
        })
        .collect();
    for line in table(&["STEP", "KIND", "OPERATION"], &rows).lines() {
        text.push_str("  ");
        text.push_str(line);
        text.push('\n');
    }
    text
}

pub fn run(ctx: &mut Ctx, args: PlanArgs) -> CliResult {
    let (spec, targets) = load(&args.spec)?;
    if ctx.printer.json {
        let plans: Vec<JsonPlan> = targets
            .iter()
            .map(|planned| JsonPlan {
                spec_id: &spec.header.id,
                spec_sha256: spec.sha256.to_hex(),
                target: planned.target.as_deref(),
                vars: &planned.plan.vars,
                steps: planned
                    .plan
                    .steps
                    .iter()
                    .map(|step| JsonStep {
                        step: step.index,
                        kind: step.kind,
                        operation: &step.operation,
                        params: &step.params,
                    })
                    .collect(),
            })
            .collect();
        ctx.printer.json(&plans)?;
        return Ok(());
    }
    let mut text = String::new();
    for planned in &targets {
        text.push_str(&render(&spec.header.id, planned));
    }
    ctx.printer.data(&text)?;
    ctx.printer.note(&format!(
        "nothing was changed; `rewind apply {}` carries this out",
        args.spec.spec.display()
    ));
    Ok(())
}
