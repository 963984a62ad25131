//! Errors as the operator sees them: a message, its causes, hints with the
//! command to run next, and the exit code.

use rewind_ledger::LedgerError;

/// Exit codes of DESIGN.md.
pub mod exit {
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    #[allow(dead_code, reason = "rollback reports drift with it")]
    pub const DRIFT: u8 = 3;
    pub const VERIFY: u8 = 4;
}

#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub error: anyhow::Error,
    pub hints: Vec<String>,
}

impl CliError {
    pub fn new(code: u8, error: impl Into<anyhow::Error>) -> CliError {
        CliError {
            code,
            error: error.into(),
            hints: Vec::new(),
        }
    }

    /// A usage error (exit 2) with a message.
    pub fn usage(message: impl Into<String>) -> CliError {
        CliError::new(exit::USAGE, anyhow::anyhow!(message.into()))
    }

    pub fn hint(mut self, hint: impl Into<String>) -> CliError {
        self.hints.push(hint.into());
        self
    }
}

impl From<anyhow::Error> for CliError {
    fn from(error: anyhow::Error) -> CliError {
        match error.downcast::<LedgerError>() {
            Ok(ledger) => ledger.into(),
            Err(error) => CliError::new(exit::FAILED, error),
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(error: std::io::Error) -> CliError {
        CliError::new(exit::FAILED, error)
    }
}

const REPAIR: &str = "run `rewind verify` to find the first damaged seq; `rewind repair` rebuilds the store from the journal when the journal is intact (copy the ledger directory first)";

impl From<LedgerError> for CliError {
    fn from(error: LedgerError) -> CliError {
        let (code, hint): (u8, String) = match &error {
            LedgerError::NotALedger { dir } => {
                let empty = std::fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none());
                let hint = if empty {
                    format!(
                        "run `rewind init --ledger {}` to create one there, or point --ledger (or REWIND_LEDGER) at an existing ledger",
                        dir.display()
                    )
                } else {
                    format!(
                        "{} holds other files: point --ledger (or REWIND_LEDGER) at the ledger's own directory (`rewind init` makes ./.rewind by default)",
                        dir.display()
                    )
                };
                (exit::USAGE, hint)
            }
            LedgerError::AlreadyInitialized { .. } => (
                exit::USAGE,
                "use it as it is, or pass --ledger with another directory".into(),
            ),
            LedgerError::DirNotEmpty { .. } => (
                exit::USAGE,
                "pass --ledger with a new or empty directory; nothing was written".into(),
            ),
            LedgerError::NewerFormat { found, .. } => (
                exit::FAILED,
                format!("use a rewind that reads ledger format {found}; nothing was written"),
            ),
            LedgerError::NewerRecord { found, .. } => (
                exit::FAILED,
                format!("use a rewind that reads record format {found}; nothing was written"),
            ),
            LedgerError::Locked { holder, .. } => (
                exit::FAILED,
                format!(
                    "wait for the other rewind{} to finish; history, show and verify still answer from its journal meanwhile",
                    holder
                        .map(|pid| format!(" (pid {pid})"))
                        .unwrap_or_default()
                ),
            ),
            LedgerError::BadMarker { .. } => (
                exit::VERIFY,
                "restore the LEDGER file from a backup of the ledger directory".into(),
            ),
            LedgerError::Corrupt { .. } | LedgerError::Diverged { .. } | LedgerError::Sled(_) => {
                (exit::VERIFY, REPAIR.into())
            }
            LedgerError::Journal { path, .. } => (
                exit::VERIFY,
                format!(
                    "`python3 tools/verify_chain.py {}` shows the first bad line; restore the ledger directory from a backup",
                    path.display()
                ),
            ),
            LedgerError::UnknownSeq { .. } => (
                exit::USAGE,
                "`rewind history` lists the seqs there are".into(),
            ),
            LedgerError::BlobMissing { .. } | LedgerError::BlobCorrupt { .. } => (
                exit::VERIFY,
                "restore the ledger's blobs/ directory from a backup".into(),
            ),
            LedgerError::Broken { .. } => (
                exit::FAILED,
                "everything acknowledged is in the journal: run the command again (opening the ledger catches the store up), and check the disk".into(),
            ),
            LedgerError::Io(_) => (
                exit::FAILED,
                "check the path and its permissions, then run the command again".into(),
            ),
        };
        CliError::new(code, error).hint(hint)
    }
}

pub type CliResult<T = ()> = Result<T, CliError>;
