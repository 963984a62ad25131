//! The command line, defined once with clap; `--help`, completions and the
//! man page are generated from it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// rewind: an event-sourced migration ledger
///
/// Every action a migration takes is appended as an immutable, hash-chained
/// event; status, history, audit trails and rollbacks are read from that log.
#[derive(Debug, Parser)]
#[command(
    name = "rewind",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Use the ledger in this directory
    #[arg(
        long,
        global = true,
        env = "REWIND_LEDGER",
        hide_env_values = true,
        default_value = ".rewind",
        value_name = "DIR"
    )]
    pub ledger: PathBuf,

    /// Record actions under this name [default: user@host]
    #[arg(
        long,
        global = true,
        env = "REWIND_ACTOR",
        hide_env_values = true,
        value_name = "NAME"
    )]
    pub actor: Option<String>,

    /// Print machine-readable JSON instead of tables
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new, empty ledger
    Init,

    /// Attach a reviewer's note to a seq or a run
    Note(NoteArgs),

    /// List events, filtered by run, target, path, row, kind or time
    History(HistoryArgs),

    /// Show one event in full
    Show(ShowArgs),

    /// Recompute the hash chain and compare the store with its journal
    Verify,

    /// Export the audit trail
    #[command(subcommand)]
    Audit(AuditCommand),

    /// Sign the head of the chain with a key kept elsewhere, and print it
    Checkpoint(CheckpointArgs),

    /// Rebuild the history indexes from the events
    Reindex,

    /// Rebuild a damaged store from the journal (after checking the journal's chain)
    Repair,

    /// Show what a migration would do to each target, changing nothing
    Plan(PlanArgs),

    /// Apply a migration to one or more targets, each as its own run
    Apply(ApplyArgs),

    /// Show runs, their steps and where each target stands
    Status(StatusArgs),

    /// Undo a run, one step of a run, or everything after a seq
    Rollback(RollbackArgs),

    /// Prove a migration's inverses on scratch copies: apply, roll back, compare, apply again
    Rehearse(RehearseArgs),

    /// Record what truly happened in runs and rollbacks whose process died
    ///
    /// Compares the world with the events of each unfinished step: an effect recorded ahead
    /// that never took place is recorded as never happened, drift is reported (exit 3) and
    /// recorded, and the step, run or rollback is recorded as interrupted. `apply` and `rollback`
    /// do this first by themselves.
    Recover(RecoverArgs),

    /// List, verify or restore the archives taken by backup steps
    #[command(subcommand)]
    Backups(BackupsCommand),

    /// Tour rewind on a temporary vhost: plan, apply, status, history, rollback
    Demo(DemoArgs),

    /// Print a shell completion script
    Completions(CompletionsArgs),

    /// Print the man page (roff)
    Man,
}

#[derive(Debug, Args)]
pub struct NoteArgs {
    /// The text of the note
    pub text: String,

    /// Attach the note to this run
    #[arg(long, value_name = "RUN")]
    pub run: Option<String>,

    /// Attach the note to this seq
    #[arg(long, value_name = "SEQ")]
    pub seq: Option<u64>,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only events of this run
    #[arg(long, value_name = "RUN")]
    pub run: Option<String>,

    /// Only events of runs on this target
    #[arg(long, value_name = "TARGET")]
    pub target: Option<String>,

    /// Only events that touched this path or anything below it
    #[arg(long, value_name = "PATH")]
    pub path: Option<String>,

    /// Only events that changed rows of this table, with the rollbacks
    /// that undid them (Compensated) or met their rows changed since and
    /// left them (DriftFound); --kind shows one kind alone
    #[arg(long, value_name = "TABLE")]
    pub table: Option<String>,

    /// With --table: only the row with this key, shown before and after: its values joined by commas, a comma or backslash inside a value written `\,` or `\\` (`--key 'Smith\, Jo,3'`)
    #[arg(long, value_name = "KEY", requires = "table")]
    pub key: Option<String>,

    /// Only events of this kind (e.g. PathMoved, RowsPacked, Note; row
    /// events of ledgers written before packed images are RowsChanged)
    #[arg(long, value_name = "KIND")]
    pub kind: Option<String>,

    /// Only events recorded at or after this time (RFC 3339, or YYYY-MM-DD)
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,

    /// Only events recorded at or before this time (RFC 3339, or YYYY-MM-DD for the end of that day)
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,

    /// Show only the newest N matching events
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The seq of the event
    pub seq: u64,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Write the events of a period or a run, with their hashes, for an auditor
    Export(ExportArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per line: seq, prev, hash, record (verifiable with tools/verify_chain.py)
    Jsonl,
    /// One row per event, with its prev, hash and canonical record (verifiable like JSONL)
    Csv,
    /// A Markdown report: a table of events, then the range's hashes and how to prove them
    Md,
    /// A self-contained HTML page with the same report as Markdown
    Html,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The output format
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: ExportFormat,

    /// Write to this file instead of standard output
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Export the contiguous range from the first to the last event of this run
    #[arg(long, value_name = "RUN")]
    pub run: Option<String>,

    /// Start at the first event recorded at or after this time
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,

    /// End at the last event recorded at or before this time
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,

    /// Start at this seq (with other filters, export only what they all cover)
    #[arg(long, value_name = "SEQ")]
    pub from_seq: Option<u64>,

    /// End at this seq, inclusive (with other filters, export only what they all cover)
    #[arg(long, value_name = "SEQ")]
    pub to_seq: Option<u64>,
}

#[derive(Debug, Args)]
pub struct CheckpointArgs {
    /// The signing key: a file holding a 32-byte ed25519 seed in hex
    #[arg(long, value_name = "FILE")]
    pub key: std::path::PathBuf,

    /// Create the key file first (it must not exist); keep it off this host afterwards
    #[arg(long)]
    pub generate_key: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Clone, Args)]
pub struct SpecArgs {
    /// The migration spec (TOML)
    pub spec: PathBuf,

    /// Set a variable of the spec (repeatable)
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,

    /// Run on this target: `name=value …`, or a bare value for the spec's one required variable (repeatable)
    #[arg(long = "target", value_name = "TARGET")]
    pub targets: Vec<String>,

    /// Read targets from this file, one per line
    #[arg(long, value_name = "FILE")]
    pub targets_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub spec: SpecArgs,

    /// Do not ask for confirmation on a terminal
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Run this many targets at once
    #[arg(long, short = 'j', value_name = "N", default_value_t = 1)]
    pub jobs: usize,

    /// Start no further target once one fails
    #[arg(long)]
    pub fail_fast: bool,

    /// Apply even though the spec's text changed since an earlier run of the same id
    #[arg(long)]
    pub allow_changed_spec: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Each target's roots are copied (modes, owners, links kept), its SQLite databases copied with VACUUM INTO and its PostgreSQL databases with CREATE DATABASE … TEMPLATE (which needs nobody else connected to them). The rehearsal records into a ledger of its own beside the copies; the real targets and the ledger of --ledger are never touched. Every root and database must reach the spec through a variable, so that it can be pointed at its copy."
)]
pub struct RehearseArgs {
    #[command(flatten)]
    pub spec: SpecArgs,

    /// Run the spec's commands (exec steps) too; they act outside the copies
    #[arg(long)]
    pub run_commands: bool,

    /// Keep the copies and the rehearsal's ledgers, and say where
    #[arg(long)]
    pub keep: bool,

    /// Make the scratch directory inside this one (default: the system's temporary directory)
    #[arg(long, value_name = "DIR")]
    pub scratch: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Show this run in detail
    pub run: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnDriftArg {
    /// Stop before the drifted item and exit with 3
    Stop,
    /// Record the drift, leave the item and go on
    Skip,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The run to roll back, or RUN:STEP for one step
    #[arg(required_unless_present = "after", conflicts_with = "after")]
    pub target: Option<String>,

    /// Roll back everything recorded after this seq
    #[arg(long, value_name = "SEQ")]
    pub after: Option<u64>,

    /// Print the plan and the drift it would meet, changing nothing
    #[arg(long)]
    pub dry_run: bool,

    /// What to do when the world no longer matches an event
    #[arg(long, value_enum, default_value = "stop")]
    pub on_drift: OnDriftArg,

    /// With RUN:STEP, also undo later events that depend on the step
    #[arg(long)]
    pub cascade: bool,

    /// Roll back past irreversible steps, leaving what they did in place
    #[arg(long)]
    pub allow_irreversible: bool,

    /// Restore rows of SQLite tables that have triggers, letting the triggers fire (what they write is not recorded)
    #[arg(long)]
    pub allow_triggers: bool,

    /// Connect with this database url (with its password) where events name it without
    #[arg(long = "database", value_name = "URL")]
    pub databases: Vec<String>,

    /// Record the undo command of seq SEQ, in doubt after an interrupted rollback, as done without running it
    #[arg(long, value_name = "SEQ")]
    pub mark_undone: Vec<u64>,

    /// Run the undo command of seq SEQ, in doubt after an interrupted rollback, again
    #[arg(long, value_name = "SEQ")]
    pub retry_undo: Vec<u64>,

    /// Do not ask for confirmation on a terminal
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// Print what recovery would record, changing nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Connect with this database url (with its password) where events name it without
    #[arg(long = "database", value_name = "URL")]
    pub databases: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum BackupsCommand {
    /// List the backups (rollback points) of every target
    List(BackupsListArgs),

    /// Re-read archives and check them against their manifests
    Verify(BackupsSelectArgs),

    /// Unpack the archive taken at a seq into a directory
    Restore(BackupsRestoreArgs),
}

#[derive(Debug, Args)]
pub struct BackupsListArgs {
    /// Only backups of runs on this target
    #[arg(long, value_name = "TARGET")]
    pub target: Option<String>,
}

#[derive(Debug, Args)]
pub struct BackupsSelectArgs {
    /// The seq of a BackupTaken event [default: every backup]
    pub seq: Option<u64>,
}

#[derive(Debug, Args)]
pub struct BackupsRestoreArgs {
    /// The seq of the BackupTaken event
    pub seq: u64,

    /// The directory to restore into (created; must be new or empty)
    #[arg(long, value_name = "DIR")]
    pub into: PathBuf,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the temporary vhost and ledger and print where they are
    #[arg(long)]
    pub keep: bool,
}
