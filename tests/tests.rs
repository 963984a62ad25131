//! End-to-end tests of the `rewind` command line, one binary (ripgrep's
//! layout): each module a part of the product.

mod crash;
mod db_cli;
mod db_examples_cli;
mod fs_bad_input;
mod fs_cli;
mod ledger_cli;
mod recover_cli;
mod rehearse_cli;
mod tidy;
