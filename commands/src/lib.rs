//! The `rewind` command line as a library: [`run_cli`] takes the arguments,
//! the environment and two writers, and returns the exit code, so that tests
//! run it in-process with a pinned world. Only this crate prints, owns clap,
//! anyhow, colours, progress bars and exit codes.

pub mod cli;
mod cmd;
pub mod context;
pub mod error;
pub mod printer;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;

use clap::Parser;

use crate::cli::Cli;
use crate::context::Ctx;
use crate::printer::Printer;

/// The environment variables rewind reads, captured once.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    /// The process environment.
    pub fn from_process() -> Env {
        Env {
            vars: std::env::vars().collect(),
        }
    }

    /// A given environment (tests pin clock, host, user and ids with it).
    pub fn pinned<'a>(vars: impl IntoIterator<Item = (&'a str, &'a str)>) -> Env {
        Env {
            vars: vars
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
}

/// Runs one command line and returns its exit code. Output goes to `out`
/// (data) and `err` (messages); colour is up to the writers (anstream's
/// strip it when not on a terminal or when `NO_COLOR` is set).
pub fn run_cli(
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
    env: &Env,
    out: Box<dyn Write>,
    err: Box<dyn Write>,
) -> u8 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() {
                error::exit::USAGE
            } else {
                0
            };
            let text = error.render().ansi().to_string();
            let mut sink = if error.use_stderr() { err } else { out };
            let _ = sink.write_all(text.as_bytes());
            return code;
        }
    };
    let printer = Printer::new(cli.global.json, out, err);
    let (result, mut printer) = match Ctx::new(&cli.global, env, printer) {
        Ok(mut ctx) => {
            let result = cmd::run(cli.command, &mut ctx);
            (result, ctx.printer)
        }
        Err((error, printer)) => (Err(error), printer),
    };
    match result {
        Ok(()) => 0,
        Err(error) => {
            let causes: Vec<String> = error
                .error
                .chain()
                .skip(1)
                .map(ToString::to_string)
                .collect();
            printer.error(&error.error.to_string(), &causes, &error.hints);
            error.code
        }
    }
}
