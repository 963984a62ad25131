//! placeholder

pub mod db;
