//! Pure folds over rewind events: history queries, one-line descriptions,
//! run/step/target status, inverse plans, unfinished work for recovery and
//! audit reports.
//!
//! Nothing here prints, reads the environment or touches a target; every
//! function takes the entries it needs and returns data.

pub mod audit;
pub mod describe;
pub mod history;
pub mod inverse;
pub mod recovery;
pub mod status;
