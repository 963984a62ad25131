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
//!
//! A command stays in rewind's process group, so that Ctrl-C at the
//! terminal reaches it and what it started. At the timeout, the command and
//! every process it started (found through `/proc`) are stopped, then
//! killed; a process that detached itself (a double fork, whose parent is
//! then init) is beyond reach, as a daemon should be. Its output
//! is what it wrote until it, and anything it left holding its output, were
//! done; a process left running in the background with the output still
//! open (a daemon that did not close it) is waited for at most
//! [`OUTPUT_GRACE`], and not killed: it may be the service the command
//! started.

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

/// How long the output of a command that has ended is read, for processes
/// it left running with the output still open.
pub const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// Runs `argv`, killing it (and what it started) after `timeout`.
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
    let stdout = read_behind(child.stdout.take().expect("piped"));
    let stderr = read_behind(child.stderr.take().expect("piped"));
    let started = Instant::now();
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() >= timeout {
            timed_out = true;
            kill_tree(child.id());
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let grace_ends = Instant::now() + OUTPUT_GRACE;
    let mut output = stdout.collect(grace_ends);
    output.extend(stderr.collect(grace_ends));
    Ok(Ran {
        exit_code: status.code(),
        output,
        timed_out,
    })
}

/// Output read on a thread of its own as it comes.
struct Behind {
    /// What was read; `None` once collected, after which the thread reads
    /// on (so that the writer never blocks) and keeps nothing.
    buffer: std::sync::Arc<std::sync::Mutex<Option<Vec<u8>>>>,
    done: std::sync::mpsc::Receiver<()>,
}

fn read_behind(mut pipe: impl Read + Send + 'static) -> Behind {
    let buffer = std::sync::Arc::new(std::sync::Mutex::new(Some(Vec::new())));
    let (sender, done) = std::sync::mpsc::channel();
    let filled = std::sync::Arc::clone(&buffer);
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) => break,
                Ok(read) => {
                    if let Some(buffer) = filled.lock().unwrap_or_else(|e| e.into_inner()).as_mut()
                    {
                        buffer.extend_from_slice(&chunk[..read]);
                    }
                }
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = sender.send(());
    });
    Behind { buffer, done }
}

impl Behind {
    /// What was read once the pipe closed, or by `deadline` if it did not.
    fn collect(self, deadline: Instant) -> Vec<u8> {
        let _ = self
            .done
            .recv_timeout(deadline.saturating_duration_since(Instant::now()));
        self.buffer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_default()
    }
}

/// Kills `pid` and every process descended from it (its children, theirs,
/// …, read from `/proc`). Each is stopped first, parents before children,
/// so that none forks while the tree is walked and none reaps a child
/// whose pid could then be reused; then all are killed.
fn kill_tree(pid: u32) {
    use rustix::process::{Pid, Signal, kill_process};
    let signal = |process: u32, signal: Signal| {
        if let Some(pid) = Pid::from_raw(process as i32) {
            let _ = kill_process(pid, signal);
        }
    };
    signal(pid, Signal::STOP);
    let mut stopped = vec![pid];
    loop {
        let children = children();
        let mut found = false;
        let mut index = 0;
        while index < stopped.len() {
            for &child in children.get(&stopped[index]).into_iter().flatten() {
                if !stopped.contains(&child) {
                    signal(child, Signal::STOP);
                    stopped.push(child);
                    found = true;
                }
            }
            index += 1;
        }
        if !found {
            break;
        }
    }
    for process in stopped.into_iter().rev() {
        signal(process, Signal::KILL);
    }
}

/// Each process's children, from `/proc/*/stat`.
fn children() -> BTreeMap<u32, Vec<u32>> {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return children;
    };
    for entry in entries.flatten() {
        let Some(process) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // The parent is the second field after the command name, which is
        // in parentheses and may hold spaces.
        let parent = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|stat| {
                let (_, rest) = stat.rsplit_once(") ")?;
                rest.split_whitespace().nth(1)?.parse::<u32>().ok()
            });
        if let Some(parent) = parent {
            children.entry(parent).or_default().push(process);
        }
    }
    children
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

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|word| word.to_string()).collect()
    }

    /// Whether a process runs with exactly this command line.
    fn running(command_line: &str) -> bool {
        std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
            std::fs::read(entry.path().join("cmdline")).is_ok_and(|line| {
                line.split(|&b| b == 0)
                    .filter(|w| !w.is_empty())
                    .collect::<Vec<_>>()
                    .join(&b' ')
                    == command_line.as_bytes()
            })
        })
    }

    #[test]
    fn a_timeout_kills_what_the_command_started_too() {
        // The shell forks `sleep`, which holds the output pipes: killing the
        // shell alone would leave rewind waiting on them for ten minutes.
        let ran = run(
            &argv(&["sh", "-c", "sleep 601; true"]),
            None,
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(ran.timed_out);
        assert!(!running("sleep 601"), "the shell's child is killed too");
    }

    #[test]
    fn a_process_left_running_with_the_output_open_is_not_waited_for_nor_killed() {
        // A daemon started in the background that keeps the output open.
        let ran = run(
            &argv(&["sh", "-c", "sleep 602 & echo started $!"]),
            None,
            Duration::from_secs(60),
        )
        .unwrap();
        assert!(!ran.timed_out);
        assert_eq!(ran.exit_code, Some(0));
        let text = String::from_utf8(ran.output).unwrap();
        let pid: i32 = text
            .trim()
            .strip_prefix("started ")
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("{text:?}"));
        assert!(running("sleep 602"), "the background process is left alone");
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid).unwrap(),
            rustix::process::Signal::KILL,
        );
    }
}
