//! The `rewind` command line as a child process of its own, for the crash
//! tests: they kill it in the middle of a step or of a rollback.

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(rewind::run_cli(
        std::env::args_os(),
        &rewind::Env::from_process(),
        Box::new(std::io::stdout()),
        Box::new(std::io::stderr()),
    ))
}
