//! Pure folds over rewind events: history queries, one-line descriptions,
//! run/step/target status, inverse plans and unfinished work for recovery
//! (audit rendering to come).
//!
//! Nothing here prints, reads the environment or touches a target; every
//! function takes the entries it needs and returns data.

pub mod describe;
pub mod history;
pub mod inverse;
pub mod recovery;
pub mod status;
