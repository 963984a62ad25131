//! `exec`: runs a command (an argv, no shell) with a timeout, such as a
//! service reload. Its exit code and combined output (as a blob) are
//! recorded in `CommandRun`; a non-zero exit or a timeout fails the step
//! after the event is recorded.
//!
//! Inverse: the declared `undo` argv, if any, in the step's `cwd` and with
//! its `timeout` (both read back from the step's `StepStarted` params); a
//! command without one has no inverse and a rollback passes over it. The
//! world does not show whether an undo command ran, so it runs at most
//! once: the rollback records `UndoStarted` durably before it starts
//! ([`crate::undo::rollback`]).

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rewind_ledger::{CommandRun, Event};
use serde::Deserialize;

use super::{KindInfo, Planned, StepContext, StepOutcome};
use crate::error::{Location, MigrateError, SpecError};
use crate::plan::Sim;

pub const INFO: KindInfo = KindInfo {
    name: "exec",
    docs: "Runs `argv` (a list, no shell) in `cwd` (default /) with a `timeout` in seconds (default 60); the exit code and output are recorded. A non-zero exit or a timeout fails the step. `undo` is the argv a rollback runs.",
    inverse: Some("runs the declared `undo` argv; without one the command has no inverse"),
    fixture: "argv = [\"true\"]\nundo = [\"true\"]\ntimeout = 5",
};

fn default_timeout() -> u64 {
    60
}

/// Where a command runs without `cwd`.
const DEFAULT_CWD: &str = "/";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exec {
    pub argv: Vec<String>,
    #[serde(default)]
    pub undo: Option<Vec<String>>,
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    #[serde(default)]
    pub cwd: Option<String>,
}

/// What a finished (or killed) command left.
#[derive(Debug, Clone)]
pub struct Ran {
    pub exit_code: Option<i32>,
    pub output: Vec<u8>,
    pub timed_out: bool,
}

/// Runs `argv`, killing it after `timeout`.
pub fn run(argv: &[String], cwd: Option<&str>, timeout: Duration) -> std::io::Result<Ran> {
    let mut command = Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .current_dir(cwd.unwrap_or(DEFAULT_CWD))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|error| {
        std::io::Error::new(error.kind(), format!("cannot run `{}`: {error}", argv[0]))
    })?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out_thread = std::thread::spawn(move || {
        let mut buffer = Vec::new();
        let _ = stdout.read_to_end(&mut buffer);
        buffer
    });
    let err_thread = std::thread::spawn(move || {
        let mut buffer = Vec::new();
        let _ = stderr.read_to_end(&mut buffer);
        buffer
    });
    let started = Instant::now();
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() >= timeout {
            timed_out = true;
            let _ = child.kill();
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut output = out_thread.join().unwrap_or_default();
    output.extend(err_thread.join().unwrap_or_default());
    Ok(Ran {
        exit_code: status.code(),
        output,
        timed_out,
    })
}

impl Exec {
    pub fn strings(&self) -> Vec<String> {
        let mut all = self.argv.clone();
        all.extend(self.undo.iter().flatten().cloned());
        all.extend(self.cwd.iter().cloned());
        all
    }

    pub fn substitute(&self, sub: &dyn Fn(&str) -> String) -> Exec {
        Exec {
            argv: self.argv.iter().map(|a| sub(a)).collect(),
            undo: self
                .undo
                .as_ref()
                .map(|u| u.iter().map(|a| sub(a)).collect()),
            timeout: self.timeout,
            cwd: self.cwd.as_deref().map(sub),
        }
    }

    pub fn validate(&self, at: &Location) -> Result<(), SpecError> {
        if self.argv.is_empty() || self.undo.as_ref().is_some_and(Vec::is_empty) {
            return Err(SpecError::BadValue {
                at: at.clone(),
                field: "argv".into(),
                value: "[]".into(),
                reason: "a command needs at least a program name".into(),
            });
        }
        if self.timeout == 0 {
            return Err(SpecError::BadValue {
                at: at.clone(),
                field: "timeout".into(),
                value: "0".into(),
                reason: "the timeout is in seconds and must be at least 1".into(),
            });
        }
        Ok(())
    }

    /// Commands are not confined to the roots; their paths are not checked.
    pub fn paths(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    pub fn plan(&self, _step: u32, _sim: &mut Sim) -> Result<Planned, MigrateError> {
        let mut operation = format!("run `{}` (timeout {} s)", self.argv.join(" "), self.timeout);
        if let Some(undo) = &self.undo {
            operation.push_str(&format!(", undo `{}`", undo.join(" ")));
        }
        Ok(Planned::new(operation)
            .param("argv", self.argv.join(" "))
            .param("cwd", self.cwd.as_deref().unwrap_or(DEFAULT_CWD))
            .param("timeout", self.timeout.to_string()))
    }

    pub fn apply(&self, cx: &mut StepContext<'_>) -> Result<StepOutcome, MigrateError> {
        let ran = run(
            &self.argv,
            self.cwd.as_deref(),
            Duration::from_secs(self.timeout),
        )?;
        let output = cx.blobs().put(&ran.output)?;
        cx.record(Event::CommandRun(CommandRun {
            argv: self.argv.clone(),
            exit_code: ran.exit_code,
            output,
            step: cx.step,
            timed_out: ran.timed_out,
            undo: self.undo.clone(),
        }))?;
        cx.flush()?;
        let command = self.argv.join(" ");
        if ran.timed_out {
            return Err(MigrateError::TimedOut {
                step: cx.step,
                command,
                seconds: self.timeout,
            });
        }
        match ran.exit_code {
            Some(0) => Ok(StepOutcome::Done {
                summary: format!("`{command}` exited with 0"),
            }),
            code => Err(MigrateError::CommandFailed {
                step: cx.step,
                command,
                code: code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "a signal".into()),
            }),
        }
    }
}

/// Runs the declared undo command of `event` in the `cwd` and with the
/// `timeout` of its step's parameters (`params` of its `StepStarted`; a
/// ledger from before they were recorded gives none: `/` and 60 s).
pub fn undo(
    seq: u64,
    event: &CommandRun,
    params: &BTreeMap<String, String>,
) -> Result<(), MigrateError> {
    let Some(argv) = &event.undo else {
        return Ok(());
    };
    let cwd = params.get("cwd").map(String::as_str);
    let seconds = params
        .get("timeout")
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(default_timeout);
    let ran = run(argv, cwd, Duration::from_secs(seconds))?;
    let ended = match ran.exit_code {
        _ if ran.timed_out => format!("did not finish within {seconds} s and was killed"),
        Some(0) => return Ok(()),
        Some(code) => format!("exited with {code}"),
        None => "was killed by a signal".to_string(),
    };
    Err(MigrateError::CannotUndo {
        seq,
        kind: "CommandRun".into(),
        reason: format!("the undo command `{}` {ended}", argv.join(" ")),
    })
}
