//! Tidy: the house rules that a compiler does not check, as a test. Each
//! failure names the file and what to do.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path.is_dir() {
            if name != "target"
                && !name.starts_with('.')
                && name != "fixtures"
                && name != "snapshots"
            {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

fn sources(crates: &[&str]) -> Vec<(PathBuf, String)> {
    let root = workspace();
    let mut files = Vec::new();
    for krate in crates {
        rust_files(&root.join(krate), &mut files);
    }
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("readable source");
            (
                path.strip_prefix(&root).expect("inside").to_path_buf(),
                text,
            )
        })
        .collect()
}

#[test]
fn every_module_has_a_header() {
    let missing: Vec<String> = sources(&[
        "ledger",
        "projections",
        "migrations",
        "commands",
        "tests",
        "tools",
    ])
    .into_iter()
    .filter(|(_, text)| !text.trim_start().starts_with("//!"))
    .map(|(path, _)| path.display().to_string())
    .collect();
    assert!(
        missing.is_empty(),
        "add a `//!` header saying what the module is for to: {missing:?}"
    );
}

#[test]
fn only_commands_print() {
    let offenders: Vec<String> = sources(&["ledger/src", "projections/src", "migrations/src"])
        .into_iter()
        .filter(|(_, text)| {
            ["println!", "eprintln!", "print!(", "eprint!(", "dbg!("]
                .iter()
                .any(|m| text.contains(m))
        })
        .map(|(path, _)| path.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "library crates return data; move the output to commands/ (through the printer): {offenders:?}"
    );
}

#[test]
fn only_commands_use_anyhow_and_clap() {
    let offenders: Vec<String> = sources(&["ledger/src", "projections/src", "migrations/src"])
        .into_iter()
        .filter(|(_, text)| text.contains("anyhow::") || text.contains("clap::"))
        .map(|(path, _)| path.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "library crates use thiserror enums, not anyhow or clap: {offenders:?}"
    );
}

#[test]
fn only_the_codec_calls_bincode() {
    let offenders: Vec<String> = sources(&[
        "ledger/src",
        "projections/src",
        "migrations/src",
        "commands/src",
    ])
    .into_iter()
    .filter(|(path, text)| text.contains("bincode::") && !path.ends_with("ledger/src/codec.rs"))
    .map(|(path, _)| path.display().to_string())
    .collect();
    assert!(
        offenders.is_empty(),
        "encode and decode through rewind_ledger::codec: {offenders:?}"
    );
}

#[test]
fn projections_do_no_io() {
    let offenders: Vec<String> = sources(&["projections/src"])
        .into_iter()
        .filter(|(_, text)| {
            ["std::fs", "fs_err", "std::env", "std::net", "std::process"]
                .iter()
                .any(|m| text.contains(m))
        })
        .map(|(path, _)| path.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "projections are pure folds over entries; move the I/O to commands/ or migrations/: {offenders:?}"
    );
}
