//! One module per subcommand; `run` dispatches.

mod apply;
mod audit;
mod backups;
mod checkpoint;
mod demo;
mod history;
mod init;
mod maintenance;
mod note;
mod plan;
mod recover;
mod rehearse;
mod rollback;
mod show;
mod spec_input;
mod status;
mod verify;

use clap::CommandFactory;

use crate::cli::{AuditCommand, BackupsCommand, Cli, Command};
use crate::context::Ctx;
use crate::error::CliResult;

pub fn run(command: Command, ctx: &mut Ctx) -> CliResult {
    match command {
        Command::Init => init::run(ctx),
        Command::Note(args) => note::run(ctx, args),
        Command::History(args) => history::run(ctx, args),
        Command::Show(args) => show::run(ctx, args),
        Command::Verify => verify::run(ctx),
        Command::Audit(AuditCommand::Export(args)) => audit::export(ctx, args),
        Command::Checkpoint(args) => checkpoint::run(ctx, args),
        Command::Reindex => maintenance::reindex(ctx),
        Command::Repair => maintenance::repair(ctx),
        Command::Completions(args) => {
            let mut out = Vec::new();
            clap_complete::generate(args.shell, &mut Cli::command(), "rewind", &mut out);
            ctx.printer.data(&String::from_utf8_lossy(&out))?;
            Ok(())
        }
        Command::Plan(args) => plan::run(ctx, args),
        Command::Apply(args) => apply::run(ctx, args),
        Command::Status(args) => status::run(ctx, args),
        Command::Rollback(args) => rollback::run(ctx, args),
        Command::Rehearse(args) => rehearse::run(ctx, args),
        Command::Recover(args) => recover::run(ctx, args),
        Command::Backups(BackupsCommand::List(args)) => backups::list(ctx, args),
        Command::Backups(BackupsCommand::Verify(args)) => backups::verify(ctx, args),
        Command::Backups(BackupsCommand::Restore(args)) => backups::restore(ctx, args),
        Command::Demo(args) => demo::run(ctx, args),
        Command::Man => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut out)?;
            ctx.printer.data(&String::from_utf8_lossy(&out))?;
            Ok(())
        }
    }
}
