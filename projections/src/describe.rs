//! One-line descriptions of events, for tables and reports.

use rewind_ledger::Event;

fn mode(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

/// What the event says, in one line.
pub fn summary(event: &Event) -> String {
    match event {
        Event::RunStarted(e) => match &e.target {
            Some(target) => format!("run of {} started on {target}", e.spec_id),
            None => format!("run of {} started", e.spec_id),
        },
        Event::RunFinished(e) => match &e.error {
            Some(error) => format!("run {}: {error}", e.outcome),
            None => format!("run {}", e.outcome),
        },
        Event::StepStarted(e) => format!("step {} ({}) started: {}", e.step, e.kind, e.operation),
        Event::StepFinished(e) => format!("step {} finished: {}", e.step, e.summary),
        Event::StepFailed(e) if e.interrupted => {
            format!("step {} interrupted: {}", e.step, e.error)
        }
        Event::StepFailed(e) => format!("step {} failed: {}", e.step, e.error),
        Event::BackupTaken(e) => {
            format!(
                "backup of {} ({} files, {} bytes) as {}",
                e.source,
                e.file_count,
                e.size,
                e.archive.short()
            )
        }
        Event::PathMoved(e) => format!("moved {} {} → {}", e.file_type, e.from, e.to),
        Event::ModeChanged(e) => format!("mode of {} {} → {}", e.path, mode(e.old), mode(e.new)),
        Event::OwnerChanged(e) => {
            format!(
                "owner of {} {}:{} → {}:{}",
                e.path, e.old_uid, e.old_gid, e.new_uid, e.new_gid
            )
        }
        Event::FileWritten(e) => match &e.old {
            Some(_) => format!("rewrote {}", e.path),
            None => format!("created {}", e.path),
        },
        Event::PathRemoved(e) => format!("removed {} {}", e.file_type, e.path),
        Event::DirCreated(e) => format!("created directory {}", e.path),
        Event::RowsChanged(e) => {
            let inserted = e.rows.iter().filter(|row| row.before.is_none()).count();
            let deleted = e.rows.iter().filter(|row| row.after.is_none()).count();
            let updated = e.rows.len() - inserted - deleted;
            format!(
                "{}: {updated} updated, {inserted} inserted, {deleted} deleted (chunk {})",
                e.table, e.chunk
            )
        }
        Event::RowsPacked(e) => {
            let (updated, inserted, deleted) = e.shape();
            format!(
                "{}: {updated} updated, {inserted} inserted, {deleted} deleted (chunk {})",
                e.table, e.chunk
            )
        }
        Event::SequenceMoved(e) => format!("sequence {} {} → {}", e.sequence, e.old, e.new),
        Event::SchemaChanged(e) => format!("schema: {}", first_line(&e.up)),
        Event::CommandRun(e) => match e.exit_code {
            _ if e.timed_out => format!("ran {} (timed out)", e.argv.join(" ")),
            Some(code) => format!("ran {} (exit {code})", e.argv.join(" ")),
            None => format!("ran {} (killed)", e.argv.join(" ")),
        },
        Event::CheckRecorded(e) => {
            let verdict = if e.passed { "passed" } else { "FAILED" };
            format!(
                "check {} {verdict}: expected {}, got {}",
                e.check, e.expected, e.actual
            )
        }
        Event::RollbackStarted(e) => format!("rollback of {} started", e.target),
        Event::Compensated(e) => format!("undid seq {}", e.undoes),
        Event::RollbackFinished(e) => {
            format!(
                "rollback {}: {} undone, {} drifted",
                e.outcome, e.compensated, e.drifted
            )
        }
        Event::DriftFound(e) => {
            format!(
                "drift at seq {} on {}: expected {}, found {}",
                e.seq, e.subject, e.expected, e.actual
            )
        }
        Event::Note(e) => match e.about_seq {
            Some(seq) => format!("note on seq {seq}: {}", first_line(&e.text)),
            None => format!("note: {}", first_line(&e.text)),
        },
        Event::Checkpoint(e) => format!("checkpoint of seq {} head {}", e.seq, e.head.short()),
        Event::UndoStarted(e) => format!("started undoing seq {}", e.undoes),
        Event::NeverHappened(e) => {
            format!("the effect of seq {} never happened: {}", e.seq, e.found)
        }
    }
}

fn first_line(text: &str) -> String {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    if lines.next().is_some() {
        format!("{first} …")
    } else {
        first.to_owned()
    }
}
