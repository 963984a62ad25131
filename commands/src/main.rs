//! The `rewind` binary.

use std::process::ExitCode;

fn main() -> ExitCode {
    let code = rewind::run_cli(
        std::env::args_os(),
        &rewind::Env::from_process(),
        Box::new(anstream::stdout()),
        Box::new(anstream::stderr()),
    );
    ExitCode::from(code)
}
