//! The test world: a temporary directory with a ledger path, a pinned
//! environment (clock, host, user, ledger id), and one helper that runs the
//! `rewind` command line in-process and renders exit code, stdout and stderr
//! into one string for snapshots.

use std::cell::RefCell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rewind::Env;

/// The pinned clock of every test.
pub const NOW: &str = "2026-01-02T03:04:05Z";
/// The pinned ledger id of every test.
pub const LEDGER_ID: &str = "00000000-0000-4000-8000-000000000001";

/// The pinned environment of every test, in-process or in a child.
pub const PINNED: [(&str, &str); 6] = [
    ("REWIND_NOW", NOW),
    ("REWIND_HOST", "testhost"),
    ("USER", "tester"),
    ("REWIND_LEDGER_ID", LEDGER_ID),
    ("COLUMNS", "100"),
    ("REWIND_RUN_IDS", "sequential"),
];

pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub ledger: PathBuf,
    env: Env,
}

/// What a command did.
#[derive(Debug, Clone)]
pub struct Output {
    pub code: u8,
    pub stdout: String,
    pub stderr: String,
}

#[derive(Clone, Default)]
struct Buffer(Rc<RefCell<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    fn text(&self) -> String {
        anstream::adapter::strip_str(&String::from_utf8_lossy(&self.0.borrow())).to_string()
    }
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl TestEnv {
    /// A fresh world with no ledger yet.
    pub fn new() -> TestEnv {
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = dir.path().join("ledger");
        let env = Env::pinned(PINNED);
        TestEnv { dir, ledger, env }
    }

    /// A world with an initialised ledger.
    pub fn with_ledger() -> TestEnv {
        let env = TestEnv::new();
        let output = env.run(&["init"]);
        assert_eq!(output.code, 0, "{output:?}");
        env
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `rewind --ledger <ledger> ARGS…` in-process (without the
    /// `--ledger` when ARGS name one).
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with(&self.env, args)
    }

    /// As [`TestEnv::run`], with the clock pinned at `now` instead.
    pub fn run_at(&self, now: &str, args: &[&str]) -> Output {
        let env = Env::pinned(
            PINNED.map(|(name, value)| (name, if name == "REWIND_NOW" { now } else { value })),
        );
        self.run_with(&env, args)
    }

    /// `rewind history --json ARGS…`, which must succeed, parsed: one
    /// value for each entry.
    pub fn history(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let mut argv = vec!["--json", "history"];
        argv.extend_from_slice(args);
        let output = self.run(&argv);
        assert_eq!(output.code, 0, "{output:?}");
        serde_json::from_str(&output.stdout).expect("history --json prints a list")
    }

    fn run_with(&self, env: &Env, args: &[&str]) -> Output {
        let out = Buffer::default();
        let err = Buffer::default();
        let mut argv: Vec<String> = vec!["rewind".into()];
        if !args.contains(&"--ledger") {
            argv.extend(["--ledger".into(), self.ledger.display().to_string()]);
        }
        argv.extend(args.iter().map(|arg| arg.to_string()));
        let code = rewind::run_cli(argv, env, Box::new(out.clone()), Box::new(err.clone()));
        Output {
            code,
            stdout: self.filter(&out.text()),
            stderr: self.filter(&err.text()),
        }
    }

    /// Runs and renders everything for a snapshot.
    pub fn snapshot(&self, args: &[&str]) -> String {
        let output = self.run(args);
        format!(
            "exit: {}\n----- stdout -----\n{}----- stderr -----\n{}",
            output.code, output.stdout, output.stderr
        )
    }

    fn filter(&self, text: &str) -> String {
        let root = self.root().display().to_string();
        let text = text.replace(&root, "[TEMP]");
        // Process ids vary from run to run.
        let mut out = String::with_capacity(text.len());
        let mut rest = text.as_str();
        while let Some(pos) = rest.find("pid ") {
            out.push_str(&rest[..pos + 4]);
            rest = &rest[pos + 4..];
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            if digits > 0 {
                out.push_str("[PID]");
            }
            rest = &rest[digits..];
        }
        out.push_str(rest);
        out
    }
}
