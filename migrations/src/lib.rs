//! Migration specs, step kinds and their executors against the world.
//!
//! This is the only crate with effects on filesystems (and, in its database
//! modules, on databases). It never prints and never reads the environment:
//! `commands` passes in variables, run ids and the ledger. Executors never
//! write the ledger directly; they hand events to the [`Recorder`], which is
//! the one appender shared by every concurrent target.
//!
//! Entry points: [`spec::Spec::parse`] → [`plan::plan`] → [`apply::apply`];
//! [`undo::check_drift`] and [`undo::undo`] for rollback;
//! [`recover::recover`] for runs and rollbacks whose process died; [`tree`]
//! for manifests and digests of file trees.

// Errors carry the spec location and the path an operator needs; they are
// built once, on the way out, so their size costs nothing that matters.
#![allow(clippy::result_large_err)]

pub mod apply;
pub mod databases;
pub mod db;
pub mod error;
pub mod fixtures;
pub mod paths;
pub mod plan;
pub mod recorder;
pub mod recover;
pub mod rehearse;
pub mod spec;
pub mod steps;
pub mod tree;
pub mod undo;

pub use error::{MigrateError, SpecError};
pub use recorder::Recorder;
