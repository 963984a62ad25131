//! Benchmark of the filesystem half: a backup (tar + zstd into the blob
//! store with the per-file sha256 manifest) against `tar cf - | zstd -T0 -3`
//! on the same generated tree in the same run, then apply and rollback of
//! the vhost runbook on that tree, and the peak memory (VmHWM).
//!
//! ```text
//! cargo run --release -p rewind-tools --bin bench-backup -- [--files 10000] [--megabytes 200] [--rounds 3] [--dir DIR]
//! ```

#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use rewind_ledger::{Ledger, Origin};
use rewind_migrations::Recorder;
use rewind_migrations::apply::{RunRequest, apply};
use rewind_migrations::databases::Databases;
use rewind_migrations::spec::Spec;
use rewind_migrations::steps::archive::{Exclude, write_archive};

mod run_rollback;
use run_rollback::roll_back_run;

const RUNBOOK: &str = include_str!("../../migrations/examples/ns3-vhost.toml");

const USAGE: &str =
    "usage: bench-backup [--files 10000] [--megabytes 200] [--rounds 3] [--dir DIR]";

/// Refuses an argument this benchmark does not take, rather than running
/// with its defaults; `--help` prints the usage.
fn check_args() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        match pair {
            [flag, ..] if flag == "--help" || flag == "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            [flag, value] if matches!(flag.as_str(), "--files" | "--megabytes" | "--rounds") => {
                if value.parse::<u64>().is_err() {
                    panic!("{flag} takes a number, not {value:?}; {USAGE}");
                }
            }
            [flag, _] if flag == "--dir" => {}
            other => panic!("unknown argument {:?}; {USAGE}", other[0]),
        }
    }
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds used so far by this process (all threads) and by its
/// waited-for children, from /proc/self/stat (clock ticks of 1/100 s).
fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<f64> = after_name
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // After the name: state is field 3, utime 14, stime 15, cutime 16, cstime 17.
    let tick = |index: usize| fields.get(index - 3).copied().unwrap_or(0.0) / 100.0;
    (tick(14) + tick(15), tick(16) + tick(17))
}

/// Peak resident memory of this process, in KiB.
fn peak_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// A vhost with `files` files of text-like content totalling about `bytes`:
/// web/ holds most of it in 100 directories, var/log some logs.
fn generate(root: &Path, files: u64, bytes: u64) {
    let words = [
        "GET",
        "POST",
        "/index.php",
        "200",
        "404",
        "Mozilla/5.0",
        "<div>",
        "</div>",
        "class=\"row\"",
        "function",
        "return",
        "$this->",
        "SELECT",
        "FROM",
        "users",
        "WHERE",
        "id",
        "=",
        "\n",
        "  ",
        "2026-11-21T13:00:00Z",
        "example.com",
        "session",
        "cache",
        "true",
        "false",
        "null",
        "{",
        "}",
    ];
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // A pool of text to slice files from: generated once, 4 MiB.
    let mut pool = Vec::with_capacity(4 << 20);
    while pool.len() < 4 << 20 {
        let r = next();
        pool.extend_from_slice(words[(r % words.len() as u64) as usize].as_bytes());
        if r % 3 == 0 {
            pool.extend_from_slice(format!("{:x}", r >> 40).as_bytes());
        }
        pool.push(b' ');
    }
    let average = bytes / files.max(1);
    for dir in ["web", "var/log", "var/run", "var/tmp", "etc", "msg", ".ssh"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    for index in 0..files {
        let relative = if index % 50 == 0 {
            format!("var/log/access-{index}.log")
        } else {
            format!("web/site{:02}/page {index}.html", index % 100)
        };
        let path = root.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let size = (average / 2 + next() % average.max(1)) as usize;
        let start = (next() as usize) % (pool.len() - size.min(pool.len() - 1));
        let end = (start + size).min(pool.len());
        std::fs::write(&path, &pool[start..end]).unwrap();
        std::fs::set_permissions(
            &path,
            std::fs::Permissions::from_mode(if index % 7 == 0 { 0o600 } else { 0o664 }),
        )
        .unwrap();
    }
    std::fs::write(root.join("web/index.html"), "<h1>bench</h1>\n").unwrap();
    std::fs::write(root.join("var/run/php-fpm.pid"), "4242\n").unwrap();
}

fn main() {
    check_args();
    let files = arg("--files", 10_000);
    let megabytes = arg("--megabytes", 200);
    let base = match std::env::args().skip_while(|a| a != "--dir").nth(1) {
        Some(dir) => tempfile::tempdir_in(dir).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let root = base.path().join("example.com");
    let started = Instant::now();
    generate(&root, files, megabytes << 20);
    let generated = started.elapsed();
    let tree_bytes: u64 = walk_bytes(&root);
    println!(
        "tree: {files} files, {:.1} MiB, generated in {:.2} s",
        tree_bytes as f64 / (1 << 20) as f64,
        generated.as_secs_f64()
    );
    // Warm the page cache evenly for both contenders.
    let _ = Command::new("tar")
        .arg("cf")
        .arg("/dev/null")
        .arg("-C")
        .arg(&root)
        .arg(".")
        .status();

    // The reference and rewind's backup run in pairs, round after round, so
    // that a shared machine's changing load falls on both alike.
    let rounds = arg("--rounds", 3).max(1) as usize;
    let mut reference_runs = Vec::new();
    let mut our_runs = Vec::new();
    let mut sizes = (0, 0, 0);
    let run_reference = |round: usize| {
        let tar_out = base.path().join(format!("reference-{round}.tar.zst"));
        let (_, children_before) = cpu_seconds();
        let started = Instant::now();
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "tar cf - -C '{}' . | zstd -T0 -3 -q -o '{}'",
                root.display(),
                tar_out.display()
            ))
            .stdout(Stdio::null())
            .status()
            .expect("tar and zstd are installed");
        assert!(status.success());
        let run = (
            started.elapsed().as_secs_f64(),
            cpu_seconds().1 - children_before,
        );
        let size = std::fs::metadata(&tar_out).unwrap().len();
        std::fs::remove_file(&tar_out).unwrap();
        (run, size)
    };
    let run_ours = |round: usize| {
        // A fresh blob store each round, so that no round finds the
        // archive already stored.
        let dir = base.path().join(format!("blobs-{round}"));
        let blobs = rewind_ledger::BlobStore::new(dir.clone());
        let (own_before, _) = cpu_seconds();
        let started = Instant::now();
        let archived = write_archive(&blobs, &root, None, &Exclude::default()).unwrap();
        let run = (
            started.elapsed().as_secs_f64(),
            cpu_seconds().0 - own_before,
        );
        std::fs::remove_dir_all(&dir).unwrap();
        (run, archived)
    };
    for round in 0..rounds {
        // Which goes first alternates, so that neither always meets the
        // page cache or the other's writeback as the other left them.
        let (reference_run, ours_run) = if round % 2 == 0 {
            let reference = run_reference(round);
            (reference, run_ours(round))
        } else {
            let ours = run_ours(round);
            (run_reference(round), ours)
        };
        reference_runs.push(reference_run.0);
        our_runs.push(ours_run.0);
        sizes = (reference_run.1, ours_run.1.size, ours_run.1.files);
    }
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let (reference, reference_cpu) = (
        median(reference_runs.iter().map(|r| r.0).collect()),
        median(reference_runs.iter().map(|r| r.1).collect()),
    );
    let (ours, ours_cpu) = (
        median(our_runs.iter().map(|r| r.0).collect()),
        median(our_runs.iter().map(|r| r.1).collect()),
    );
    // Each round's pair shared the machine's moment: the ratio is the
    // median of the rounds' ratios.
    let ratio = |part: fn(&(f64, f64)) -> f64| {
        median(
            our_runs
                .iter()
                .zip(&reference_runs)
                .map(|(ours, reference)| part(ours) / part(reference).max(0.01))
                .collect(),
        )
    };
    let seconds = |runs: &[(f64, f64)]| {
        runs.iter()
            .map(|(wall, _)| format!("{wall:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "backup (tar + zstd -3 into the blob store, per-file sha256 manifest): {ours:.2} s (rounds: {}), {:.1} MiB, {} files",
        seconds(&our_runs),
        sizes.1 as f64 / (1 << 20) as f64,
        sizes.2
    );
    println!(
        "tar cf - | zstd -T0 -3:                                               {reference:.2} s (rounds: {}), {:.1} MiB",
        seconds(&reference_runs),
        sizes.0 as f64 / (1 << 20) as f64
    );
    println!(
        "ratio backup / reference, median of {rounds} rounds' ratios: {:.2} wall clock, {:.2} CPU time (medians {ours_cpu:.2} s vs {reference_cpu:.2} s of CPU)",
        ratio(|r| r.0),
        ratio(|r| r.1),
    );

    let ledger_dir = base.path().join("ledger");
    let ledger = Ledger::init(
        &ledger_dir,
        "bench",
        Origin {
            actor: "bench".into(),
            host: "bench".into(),
        },
    )
    .unwrap();
    let recorder = Recorder::new(ledger);

    // The runbook, whose step 2 is the same backup (plus a copy into .archive).
    let spec = Spec::parse("ns3-vhost.toml", RUNBOOK).unwrap();
    let vars = BTreeMap::from([("root".to_string(), root.display().to_string())]);
    let resolved = spec.resolve(&vars).unwrap();
    let plan = rewind_migrations::plan::plan(&resolved).unwrap();
    let mut step_times: Vec<(u32, Instant)> = Vec::new();
    let mut backup_step = std::time::Duration::ZERO;
    let mut per_step: Vec<String> = Vec::new();
    let started = Instant::now();
    let report = apply(
        &recorder,
        &RunRequest {
            run: "bench".into(),
            spec: &spec,
            resolved: &resolved,
            plan: &plan,
            target: Some(root.display().to_string()),
        },
        &mut |progress| match progress {
            rewind_migrations::apply::Progress::StepStarted { step, .. } => {
                step_times.push((*step, Instant::now()))
            }
            rewind_migrations::apply::Progress::StepFinished { step, .. } => {
                let took = step_times
                    .last()
                    .map(|(_, t)| t.elapsed())
                    .unwrap_or_default();
                if *step == 2 {
                    backup_step = took;
                }
                per_step.push(format!("{step}:{:.2}", took.as_secs_f64()));
            }
            rewind_migrations::apply::Progress::StepAdvanced { .. }
            | rewind_migrations::apply::Progress::StepFailed { .. } => {}
        },
    )
    .unwrap();
    let applied = started.elapsed();
    assert_eq!(
        report.outcome,
        rewind_ledger::Outcome::Succeeded,
        "{report:?}"
    );
    let effects: u64 = report.steps.iter().map(|s| s.effects).sum();
    println!(
        "apply of the runbook: {:.2} s in all, backup step {:.2} s, the rest {:.2} s ({effects} events)",
        applied.as_secs_f64(),
        backup_step.as_secs_f64(),
        (applied - backup_step).as_secs_f64()
    );
    println!("  seconds per step: {}", per_step.join(" "));

    let started = Instant::now();
    let rolled = roll_back_run(&recorder, "bench", &mut Databases::default());
    let rolled_time = started.elapsed();
    println!(
        "rollback of the run: {:.2} s ({} inverses)",
        rolled_time.as_secs_f64(),
        rolled.compensated
    );
    println!("peak memory (VmHWM): {} MiB", peak_kib() / 1024);
    let _ = std::io::stdout().flush();
}

fn walk_bytes(root: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let metadata = entry.metadata().unwrap();
            if metadata.is_dir() {
                stack.push(entry.path());
            } else {
                total += metadata.len();
            }
        }
    }
    total
}
