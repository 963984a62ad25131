//! Pure folds over rewind events: history queries and one-line descriptions
//! (later: status, audit rendering, the inverse plan).
//!
//! Nothing here does I/O besides reading the entries it is given.

pub mod describe;
pub mod history;
