//! `rewind demo`: a self-contained tour on temporary data. It builds a
//! NetServa 1.0-style vhost, then runs the vhost runbook
//! (`migrations/examples/ns3-vhost.toml`) through plan → apply → status →
//! history → rollback, and compares the tree with the original; then the
//! same for a small SQLite panel database and the teams-to-organizations
//! runbook (`rewind_migrations::fixtures::TEAMS_RUNBOOK`), ending with a
//! byte-identical dump. Needs nothing installed; leaves nothing behind
//! unless `--keep`.

use rewind_ledger::view::aftermath_in;
use rewind_ledger::{Ledger, RollbackTarget, Selector};
use rewind_migrations::Recorder;
use rewind_migrations::databases::Databases;
use rewind_migrations::db::Database;
use rewind_migrations::fixtures;
use rewind_migrations::tree::manifest;
use rewind_migrations::undo::OnDrift;
use rewind_projections::describe::summary;
use rewind_projections::history;
use rewind_projections::status::{Writer, runs};

use super::apply::{apply_all, render_results};
use super::rollback::{Rollback, print_progress, roll_back};
use super::spec_input::{all_entries, load, run_ids};
use crate::cli::{DemoArgs, SpecArgs};
use crate::context::Ctx;
use crate::error::{CliError, CliResult, exit};
use crate::printer::table;

const RUNBOOK: &str = include_str!("../../../migrations/examples/ns3-vhost.toml");

fn heading(text: &mut String, title: &str) {
    text.push_str(&format!("\n== {title}\n"));
}

pub fn run(ctx: &mut Ctx, args: DemoArgs) -> CliResult {
    let temp = tempfile::Builder::new().prefix("rewind-demo-").tempdir()?;
    let base = temp.path().canonicalize()?;
    let vhost = base.join("example.com");
    rewind_migrations::fixtures::build_vhost(&vhost)?;
    let spec_path = base.join("ns3-vhost.toml");
    fs_err::write(&spec_path, RUNBOOK)?;
    let mut ledger = Ledger::init(
        &base.join("ledger"),
        ctx.ledger_id.as_deref().unwrap_or("demo"),
        ctx.origin.clone(),
    )?;
    if let Some(now) = ctx.now {
        ledger.set_clock(move || now);
    }
    let before = manifest(&vhost)?;

    let mut text =
        String::from("rewind demo: the NetServa vhost runbook, recorded and rolled back exactly\n");
    heading(&mut text, "1. a NetServa 1.0 vhost");
    let rows: Vec<Vec<String>> = before
        .nodes
        .iter()
        .skip(1)
        .map(|n| {
            vec![
                format!("{:04o}", n.mode),
                rewind_migrations::tree::type_word(n.file_type).to_owned(),
                match &n.link {
                    Some(link) => format!("{} -> {link}", n.path),
                    None => n.path.clone(),
                },
            ]
        })
        .collect();
    text.push_str(&table(&["MODE", "TYPE", "PATH"], &rows));

    heading(
        &mut text,
        "2. rewind plan ns3-vhost.toml --target root=example.com",
    );
    let spec_args = SpecArgs {
        spec: spec_path.clone(),
        vars: Vec::new(),
        targets: vec![format!("root={}", vhost.display())],
        targets_file: None,
    };
    let (spec, targets) = load(&spec_args)?;
    for planned in &targets {
        text.push_str(&super::plan::render(&spec.header.id, planned));
    }
    ctx.printer.data(&text)?;
    text.clear();

    heading(&mut text, "3. rewind apply --yes (progress on stderr)");
    ctx.printer.data(&text)?;
    text.clear();
    let ids = run_ids(true, &ledger, targets.len());
    let run = ids[0].clone();
    let recorder = Recorder::new(ledger);
    let results = apply_all(&mut ctx.printer, &recorder, spec, targets, ids, 1, false)?;
    text.push_str(&render_results(&results));
    let after_apply = manifest(&vhost)?;
    text.push_str(&format!(
        "the vhost now has {} entries; web/app/public/index.html exists: {}\n",
        after_apply.nodes.len(),
        vhost.join("web/app/public/index.html").exists()
    ));

    heading(&mut text, "4. rewind status");
    let entries = all_entries(&recorder.lock())?;
    let statuses = runs(&entries, Writer::Holding);
    text.push_str(&super::status::render_runs(&statuses));
    if let Some(status) = statuses.first() {
        text.push_str(&super::status::render_run(status));
    }

    heading(&mut text, &format!("5. rewind history --run {run}"));
    let rows: Vec<Vec<String>> = entries
        .iter()
        .filter(|e| e.record.run.as_deref() == Some(run.as_str()))
        .map(|e| vec![e.seq().to_string(), summary(&e.record.event)])
        .collect();
    text.push_str(&table(&["SEQ", "EVENT"], &rows));
    ctx.printer.data(&text)?;
    text.clear();

    heading(&mut text, &format!("6. rewind rollback {run}"));
    ctx.printer.data(&text)?;
    text.clear();
    let printer = &mut ctx.printer;
    let outcome = roll_back(
        &recorder,
        RollbackTarget::Run(run.clone()),
        false,
        OnDrift::Stop,
        false,
        &mut Databases::default(),
        &mut |progress| print_progress(printer, progress),
    )?;
    match outcome {
        Rollback::Done(report) => text.push_str(&format!(
            "rolled back run {run}: {} inverse(s) applied, {} drifted, outcome {}\n",
            report.compensated,
            report.drifted.len(),
            report.outcome
        )),
        Rollback::Refused(refusal) => text.push_str(&format!("rollback refused: {refusal}\n")),
        Rollback::Irreversible(items) => text.push_str(&format!(
            "rollback refused: {} irreversible step(s)\n",
            items.len()
        )),
    }

    heading(
        &mut text,
        "7. the vhost compared with the original (path, type, mode, owner, sha256, link)",
    );
    let after = manifest(&vhost)?;
    let differences = before.diff(&after);
    if differences.is_empty() {
        text.push_str(&format!(
            "identical: {} entries, tree digest {} before and after\n",
            after.nodes.len(),
            after.digest().short()
        ));
    } else {
        for difference in &differences {
            text.push_str(&format!("{difference}\n"));
        }
    }
    ctx.printer.data(&text)?;
    let database_identical = teams_tour(ctx, &base, &recorder)?;
    if args.keep {
        let kept = temp.keep();
        ctx.printer.note(&format!(
            "kept {}: `rewind --ledger {}/ledger history` explores it",
            kept.display(),
            kept.display()
        ));
    }
    if !differences.is_empty() {
        return Err(CliError::new(
            exit::FAILED,
            anyhow::anyhow!(
                "the rolled-back vhost differs from the original in {} place(s)",
                differences.len()
            ),
        ));
    }
    if !database_identical {
        return Err(CliError::new(
            exit::FAILED,
            anyhow::anyhow!("the rolled-back teams database differs from the original"),
        ));
    }
    Ok(())
}

/// The SQLite half of the tour: a small panel database, the teams runbook
/// through plan → apply → status → history of one row → rollback, and the
/// dump compared with the original. Returns whether it is identical.
fn teams_tour(ctx: &mut Ctx, base: &std::path::Path, recorder: &Recorder) -> CliResult<bool> {
    let database = base.join("panel.db");
    let url = fixtures::build_teams_sqlite(&database, 5)?;
    let spec_path = base.join("teams-to-organizations.toml");
    fs_err::write(&spec_path, fixtures::TEAMS_RUNBOOK)?;
    let dump = || -> CliResult<String> { Ok(Database::connect(&url)?.dump_sqlite()?) };
    let before = dump()?;

    let mut text = String::new();
    heading(
        &mut text,
        "8. a hosting panel database (SQLite): 5 teams, their users, licences and applications",
    );
    text.push_str(&format!(
        "{} rows in {} tables\n",
        before.matches("\nINSERT INTO").count(),
        before.matches("-- table ").count()
    ));
    heading(
        &mut text,
        "9. rewind plan teams-to-organizations.toml --target db=sqlite://panel.db",
    );
    let spec_args = SpecArgs {
        spec: spec_path,
        vars: Vec::new(),
        targets: vec![format!("db={url}")],
        targets_file: None,
    };
    let (spec, targets) = load(&spec_args)?;
    for planned in &targets {
        text.push_str(&super::plan::render(&spec.header.id, planned));
    }
    heading(&mut text, "10. rewind apply --yes (progress on stderr)");
    ctx.printer.data(&text)?;
    text.clear();
    let ids = run_ids(true, &recorder.lock(), targets.len());
    let run = ids[0].clone();
    let results = apply_all(&mut ctx.printer, recorder, spec, targets, ids, 1, false)?;
    text.push_str(&render_results(&results));

    heading(&mut text, &format!("11. rewind status {run}"));
    let entries = all_entries(&recorder.lock())?;
    let statuses = runs(&entries, Writer::Holding);
    if let Some(status) = statuses.iter().find(|status| status.run == run) {
        text.push_str(&super::status::render_run(status));
    }

    heading(
        &mut text,
        "12. rewind history --table applications --key 10 (before and after, side by side)",
    );
    for entry in entries
        .iter()
        .filter(|e| e.record.run.as_deref() == Some(run.as_str()))
    {
        let changes = history::row_changes(&entry.record.event, "applications", "10");
        if changes.is_empty() {
            continue;
        }
        text.push_str(&format!(
            "seq {} {}\n",
            entry.seq(),
            summary(&entry.record.event)
        ));
        let rows: Vec<Vec<String>> = changes
            .into_iter()
            .map(|change| {
                vec![
                    format!("    {}", change.column),
                    change.before.unwrap_or_else(|| "(no row)".into()),
                    change.after.unwrap_or_else(|| "(no row)".into()),
                ]
            })
            .collect();
        text.push_str(&table(&["    COLUMN", "BEFORE", "AFTER"], &rows));
    }

    heading(&mut text, &format!("13. rewind rollback {run}"));
    ctx.printer.data(&text)?;
    text.clear();
    let printer = &mut ctx.printer;
    let outcome = roll_back(
        recorder,
        RollbackTarget::Run(run.clone()),
        false,
        OnDrift::Stop,
        false,
        &mut Databases::new([url.clone()]),
        &mut |progress| print_progress(printer, progress),
    )?;
    match outcome {
        Rollback::Done(report) => text.push_str(&format!(
            "rolled back run {run}: {} inverse(s) applied, {} drifted, outcome {}\n",
            report.compensated,
            report.drifted.len(),
            report.outcome
        )),
        Rollback::Refused(refusal) => text.push_str(&format!("rollback refused: {refusal}\n")),
        Rollback::Irreversible(items) => text.push_str(&format!(
            "rollback refused: {} irreversible step(s)\n",
            items.len()
        )),
    }

    heading(
        &mut text,
        "14. rewind history --table applications --key 10, after the rollback (the change, then its undo)",
    );
    let entries = all_entries(&recorder.lock())?;
    let row = history::Query {
        selector: Selector {
            table: Some("applications".into()),
            key: Some("10".into()),
            ..Selector::default()
        },
        ..history::Query::default()
    };
    let history = history::row_history(
        &row,
        "applications",
        &[],
        |_| Ok::<_, rewind_ledger::LedgerError>(entries.clone()),
        |seqs| Ok(aftermath_in(&entries, seqs)),
    )?;
    for entry in history {
        text.push_str(&format!(
            "seq {} {}\n",
            entry.seq(),
            summary(&entry.record.event)
        ));
    }

    heading(
        &mut text,
        "15. the database dump compared with the original",
    );
    let after = dump()?;
    let identical = before == after;
    if identical {
        text.push_str(&format!(
            "identical: {} bytes of schema and rows (storage classes, rowids) before and after\n",
            after.len()
        ));
    } else {
        text.push_str("the dump differs from the original\n");
    }
    ctx.printer.data(&text)?;
    Ok(identical)
}
