//! Pure folds over rewind events: status, history, audit rendering and
//! inverse plans. Nothing here prints, reads the environment or touches a
//! target; every function takes the entries it needs and returns data.

pub mod inverse;
pub mod status;
