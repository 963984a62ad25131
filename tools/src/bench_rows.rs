//! Benchmark of the database half: a forward `update` of every row of a
//! 1M-row table with images captured into a real ledger, against the bare
//! set-based `UPDATE` on the same engine; and the rollback of 10k changed
//! rows against a set-based restore from a before-table. Each case runs in
//! its own child process so that its peak RSS (VmHWM) is its own.
//!
//! `cargo run --release -p rewind-tools --bin bench-rows -- [--rows N[,N…]] [--changed N] [--within N] [--chunk N] [--engine sqlite|postgres|both] [--cases a,b] [--repeat N] [--pg URL]`
//!
//! `--rows` may name several sizes (`--rows 1000000,10000000`): each round
//! then runs every case on every size, and the rollback's growth from the
//! first size to the last is reported from the same rounds.
//!
//! The rollback cases change `--changed` rows evenly spread over the
//! table's first `--within` ids (all of them by default): `--rows 10000000
//! --within 1000000` changes the very rows `--rows 1000000` does, so that
//! the two tables' times differ by their size alone, not also by how many
//! pages the same number of rows is spread over.
//!
//! Without `--chunk` the steps size their chunks as a spec that sets no
//! `chunk_size` does (on SQLite by time). Besides seconds and
//! peak RSS, each case reports its process's CPU time (on PostgreSQL the
//! server's is not in it), and the capture into the ledger reports the
//! ledger's journal bytes per captured row. `--repeat N` runs the cases in N
//! rounds (each case once per round, so that the cases compared share the
//! machine's moments) and reports each case's median round, with the
//! fastest and slowest; the ratios are of medians.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use rewind_ledger::{Digest, Draft, Event, Ledger, Origin, RunStarted};
use rewind_migrations::Recorder;
use rewind_migrations::databases::Databases;
use rewind_migrations::db::{DEFAULT_CHUNK_SIZE, Database, ROWS_PER_EVENT, Update};

mod run_rollback;
use run_rollback::roll_back_run;

const CASES: &[&str] = &[
    "bare-update",
    "capture-update",
    "capture-update-no-ledger",
    "bare-restore",
    "capture-rollback",
];

struct Options {
    /// The table's rows, in a child process: one of `sizes`.
    rows: u64,
    /// `--rows N[,N…]`: the table sizes, each run in every round.
    sizes: Vec<u64>,
    changed: u64,
    /// The changed rows are spread over ids `1..=within` (0: all).
    within: u64,
    engines: Vec<String>,
    pg: String,
    /// `--chunk N`: rows per chunk; `None`, rewind's default.
    chunk: Option<usize>,
    cases: Vec<String>,
    /// Rounds over the cases; each case reports its median round.
    repeat: usize,
}

impl Options {
    /// How many rows the rollback cases change in a table of `rows` rows:
    /// every `within_of(rows) / changed`-th id up to `within_of(rows)`.
    fn changed_of(&self, rows: u64) -> u64 {
        let within = self.within_of(rows);
        within / (within / self.changed).max(1)
    }

    /// The ids `1..=N` the changed rows of a table of `rows` rows are
    /// spread over.
    fn within_of(&self, rows: u64) -> u64 {
        if self.within == 0 {
            rows
        } else {
            self.within.min(rows)
        }
    }
}

fn parse() -> (Options, Option<(String, String, String)>) {
    let mut options = Options {
        rows: 1_000_000,
        sizes: vec![1_000_000],
        changed: 10_000,
        within: 0,
        engines: vec!["sqlite".into(), "postgres".into()],
        pg: std::env::var("REWIND_TEST_PG")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        chunk: None,
        cases: CASES.iter().map(|case| (*case).to_owned()).collect(),
        repeat: 1,
    };
    let mut child = None;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut index = 0;
    while index < args.len() {
        let value = args.get(index + 1).cloned().unwrap_or_default();
        match args[index].as_str() {
            "--rows" => {
                options.sizes = value
                    .split(',')
                    .map(|rows| rows.parse().expect("--rows N[,N…]"))
                    .collect();
                options.rows = options.sizes[0];
            }
            "--changed" => options.changed = value.parse().expect("--changed N"),
            "--within" => options.within = value.parse().expect("--within N"),
            "--chunk" => options.chunk = Some(value.parse().expect("--chunk N")),
            "--engine" if value == "both" => {}
            "--engine" => options.engines = vec![value],
            "--pg" => options.pg = value,
            "--cases" => options.cases = value.split(',').map(str::to_owned).collect(),
            "--repeat" => options.repeat = value.parse::<usize>().expect("--repeat N").max(1),
            "--case" => {
                let parts: Vec<&str> = value.splitn(3, '|').collect();
                child = Some((
                    parts[0].to_owned(),
                    parts[1].to_owned(),
                    parts[2].to_owned(),
                ));
            }
            other => panic!("unknown argument {other}"),
        }
        index += 2;
    }
    let smallest = options.sizes.iter().copied().min().unwrap_or(0);
    assert!(
        options.within <= smallest,
        "--within {} is more rows than the smallest table ({smallest}): the sizes would not change the same rows",
        options.within
    );
    let mut sizes = options.sizes.clone();
    sizes.sort_unstable();
    sizes.dedup();
    assert_eq!(
        sizes.len(),
        options.sizes.len(),
        "--rows names a size twice"
    );
    (options, child)
}

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// CPU seconds of this process, every thread, from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks = |i: usize| -> f64 { fields.get(i).and_then(|n| n.parse().ok()).unwrap_or(0.0) };
    (ticks(11) + ticks(12)) / 100.0
}

/// The size of the ledger's journal, the export lines of every event.
fn journal_bytes(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("ledger").join("journal.jsonl")).map_or(0, |meta| meta.len())
}

fn ledger_in(dir: &Path) -> Ledger {
    Ledger::init(
        &dir.join("ledger"),
        "bench",
        Origin {
            actor: "bench".into(),
            host: "bench".into(),
        },
    )
    .expect("ledger")
}

fn capture_update(
    database: &mut Database,
    ledger: &mut Ledger,
    filter: Option<String>,
    chunk: Option<usize>,
) -> u64 {
    let mut recorder = |events: Vec<Event>| {
        ledger
            .append_batch_seqs(
                events
                    .into_iter()
                    .map(|event| Draft::new(Some("bench"), event))
                    .collect(),
            )
            .map(|_| ())
    };
    let report = database
        .update(&the_update(filter, chunk), &mut recorder)
        .expect("update");
    report.rows
}

/// The update every capture case runs: `a = a + 1, b = b || 'x'` on the
/// rows `filter` picks (all without one).
fn the_update(filter: Option<String>, chunk: Option<usize>) -> Update {
    Update {
        step: 1,
        table: "t".into(),
        key: None,
        filter,
        set: BTreeMap::from([
            ("a".to_owned(), "a + 1".to_owned()),
            ("b".to_owned(), "b || 'x'".to_owned()),
        ]),
        chunk_size: chunk,
    }
}

/// Before a case's clock starts: on PostgreSQL, a checkpoint, so that no
/// case is timed while the server writes back what the copy of the
/// template database or the case's own setup left dirty (the bare
/// statements' times moved by half from round to round without it).
fn quiesce(database: &mut Database, url: &str) {
    if url.starts_with("postgres") {
        database.execute_script("CHECKPOINT").expect("checkpoint");
    }
}

/// Runs one case in this (child) process; prints `seconds rss_kb cpu_seconds
/// journal_bytes`.
fn run_case(case: &str, url: &str, options: &Options) {
    let mut database = Database::connect(url).expect("connect");
    let within = options.within_of(options.rows);
    let every = (within / options.changed).max(1);
    let changed_filter = format!("id <= {within} AND id % {every} = 0");
    let changed_rows = options.changed_of(options.rows);
    let dir = tempfile::tempdir().expect("tempdir");
    let cpu_before = cpu_seconds();
    let seconds = match case {
        "bare-update" => {
            quiesce(&mut database, url);
            let start = Instant::now();
            database
                .execute_script("UPDATE t SET a = a + 1, b = b || 'x'")
                .expect("update");
            start.elapsed().as_secs_f64()
        }
        "capture-update" => {
            let mut ledger = ledger_in(dir.path());
            quiesce(&mut database, url);
            let start = Instant::now();
            let rows = capture_update(&mut database, &mut ledger, None, options.chunk);
            // The store is written behind the journal: the capture is done
            // once it holds the last chunk's events too.
            ledger.wait_for_store().expect("store");
            assert_eq!(rows, options.rows);
            start.elapsed().as_secs_f64()
        }
        "capture-update-no-ledger" => {
            quiesce(&mut database, url);
            let start = Instant::now();
            let report = database
                .update(&the_update(None, options.chunk), &mut |_events: Vec<
                    Event,
                >| {
                    Ok::<(), std::io::Error>(())
                })
                .expect("update");
            assert_eq!(report.rows, options.rows);
            start.elapsed().as_secs_f64()
        }
        "bare-restore" => {
            database
                .execute_script(&format!(
                    "CREATE TABLE before_t AS SELECT * FROM t WHERE {changed_filter}; \
                     CREATE UNIQUE INDEX before_t_id ON before_t (id)"
                ))
                .expect("setup");
            // The rows are changed as in capture-rollback, by rewind's
            // update, so that both restores start from the same table and
            // the same cache (on PostgreSQL at 10M rows the step's scan
            // through the key index leaves other pages in the server's
            // buffers than a bare UPDATE's sequential scan does).
            let mut ledger = ledger_in(dir.path());
            let rows = capture_update(
                &mut database,
                &mut ledger,
                Some(changed_filter.clone()),
                options.chunk,
            );
            assert_eq!(rows, changed_rows);
            quiesce(&mut database, url);
            let start = Instant::now();
            database
                .execute_script(
                    "UPDATE t SET a = b.a, b = b.b, c = b.c FROM before_t AS b WHERE t.id = b.id",
                )
                .expect("restore");
            start.elapsed().as_secs_f64()
        }
        "capture-rollback" => {
            let mut ledger = ledger_in(dir.path());
            // A run for the rollback to name.
            ledger
                .append(
                    Some("bench"),
                    Event::RunStarted(RunStarted {
                        description: "bench-rows".into(),
                        spec_id: "bench-rows".into(),
                        spec_path: "bench-rows".into(),
                        spec_sha256: Digest::of(b"bench-rows"),
                        spec_text: String::new(),
                        target: None,
                        vars: BTreeMap::new(),
                    }),
                )
                .expect("append");
            let rows = capture_update(
                &mut database,
                &mut ledger,
                Some(changed_filter),
                options.chunk,
            );
            assert_eq!(rows, changed_rows);
            // As `rewind rollback` does it: its own connection, the
            // inverse plan, and each undo recorded (`Compensated`).
            quiesce(&mut database, url);
            drop(database);
            let recorder = Recorder::new(ledger);
            let mut databases = Databases::new([url.to_owned()]);
            let start = Instant::now();
            let rolled = roll_back_run(&recorder, "bench", &mut databases);
            assert_eq!(
                rolled.compensated as usize,
                rows.div_ceil(ROWS_PER_EVENT as u64) as usize
            );
            start.elapsed().as_secs_f64()
        }
        other => panic!("unknown case {other}"),
    };
    println!(
        "{seconds:.3} {} {:.2} {}",
        peak_rss_kb(),
        cpu_seconds() - cpu_before,
        journal_bytes(dir.path())
    );
}

fn with_database(admin: &str, name: &str) -> String {
    let scheme_end = admin.find("://").map_or(0, |i| i + 3);
    let path_start = admin[scheme_end..]
        .find('/')
        .map_or(admin.len(), |i| scheme_end + i);
    format!("{}/{name}", &admin[..path_start])
}

fn populate_sql(engine: &str, rows: u64) -> String {
    match engine {
        "sqlite" => format!(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, a INTEGER NOT NULL, b TEXT NOT NULL, c REAL); \
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {rows}) \
             INSERT INTO t SELECT i, i * 7, 'name-' || i, i * 0.5 FROM s"
        ),
        _ => format!(
            "CREATE TABLE t (id bigint PRIMARY KEY, a bigint NOT NULL, b text NOT NULL, c float8); \
             INSERT INTO t SELECT i, i * 7, 'name-' || i, i * 0.5 FROM generate_series(1, {rows}) AS i"
        ),
    }
}

fn main() {
    let (options, child) = parse();
    if let Some((_engine, case, url)) = child {
        run_case(&case, &url, &options);
        return;
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = tempfile::tempdir().expect("tempdir");
    println!(
        "chunk_size {}\n| engine | rows | case | seconds | CPU (s) | peak RSS (MB) |\n| --- | --- | --- | --- | --- | --- |",
        options.chunk.map_or_else(
            || format!("rewind's default ({DEFAULT_CHUNK_SIZE} rows; on SQLite timed)"),
            |rows| rows.to_string()
        )
    );
    let cases: Vec<&str> = CASES
        .iter()
        .copied()
        .filter(|case| options.cases.iter().any(|wanted| wanted == case))
        .collect();
    for engine in &options.engines {
        let mut admin = None;
        if engine != "sqlite" {
            match Database::connect(&options.pg) {
                Ok(connection) => admin = Some(connection),
                Err(error) => {
                    eprintln!("skipping postgres: {error}");
                    continue;
                }
            }
        }
        // One template database for each table size.
        let templates: Vec<String> = options
            .sizes
            .iter()
            .map(|&rows| {
                let sql = populate_sql(engine, rows);
                match admin.as_mut() {
                    None => {
                        let path = dir.path().join(format!("template-{rows}.db"));
                        std::fs::write(&path, b"").expect("create file");
                        let url = format!("sqlite://{}?mode=rwc", path.display());
                        let mut database = Database::connect(&url).expect("sqlite");
                        database.execute_script(&sql).expect("populate");
                        path.display().to_string()
                    }
                    Some(admin) => {
                        let name = format!("rewind_bench_template_{rows}_{}", std::process::id());
                        admin
                            .execute_script(&format!("CREATE DATABASE {name}"))
                            .expect("create");
                        let mut database =
                            Database::connect(&with_database(&options.pg, &name)).expect("connect");
                        database.execute_script(&sql).expect("populate");
                        database.execute_script("VACUUM ANALYZE t").expect("vacuum");
                        name
                    }
                }
            })
            .collect();
        // Each round runs every case on every size, so that the times
        // compared share the machine's moments.
        let mut rounds: BTreeMap<(u64, &str), Vec<Measured>> = BTreeMap::new();
        let mut failed = None;
        'rounds: for _ in 0..options.repeat {
            for (&rows, template) in options.sizes.iter().zip(&templates) {
                for &case in &cases {
                    match run_child(&exe, &options, engine, rows, case, template, &mut admin) {
                        Ok(measured) => rounds.entry((rows, case)).or_default().push(measured),
                        Err(error) => {
                            failed = Some(error);
                            break 'rounds;
                        }
                    }
                }
            }
        }
        // The templates go, even when a case failed (at 10M rows each is
        // about a gigabyte).
        if let Some(admin) = admin.as_mut() {
            for template in &templates {
                admin
                    .execute_script(&format!("DROP DATABASE {template}"))
                    .expect("drop template");
            }
        }
        if let Some(error) = failed {
            panic!("{error}");
        }
        let mut rollbacks = Vec::new();
        for &rows in &options.sizes {
            let results = report_size(engine, rows, &options, &cases, &mut rounds);
            if let Some(rollback) = results.get("capture-rollback") {
                rollbacks.push((rows, *rollback));
            }
        }
        if let (Some(&(small_rows, small)), Some(&(large_rows, large))) =
            (rollbacks.first(), rollbacks.last())
            && large_rows != small_rows
        {
            let spread = if options.within == 0 {
                "spread over each whole table".to_owned()
            } else {
                format!("among the first {}", options.within_of(small_rows))
            };
            println!(
                "| {engine} | {large_rows} ÷ {small_rows} | growth of the rollback ({} rows {spread}) | {:.2} | | |",
                options.changed_of(small_rows),
                large / small
            );
        }
    }
}

/// One case's run: seconds, CPU seconds, peak RSS (kB), journal bytes.
#[derive(Debug, Clone, Copy)]
struct Measured {
    seconds: f64,
    cpu: f64,
    rss: f64,
    journal: f64,
}

/// Runs `case` in a child process on a fresh copy of `template`, which it
/// drops again; the child's failure is an error.
fn run_child(
    exe: &Path,
    options: &Options,
    engine: &str,
    rows: u64,
    case: &str,
    template: &str,
    admin: &mut Option<Database>,
) -> Result<Measured, String> {
    let (url, cleanup) = match admin.as_mut() {
        None => {
            let path = format!("{template}.{case}.db");
            std::fs::copy(template, &path).expect("copy");
            (format!("sqlite://{path}"), path)
        }
        Some(admin) => {
            let name = format!(
                "rewind_bench_{}_{}",
                case.replace('-', "_"),
                std::process::id()
            );
            // A copy of the files, not of every page through the WAL (the
            // default since PostgreSQL 15): a 10M-row copy writes no
            // gigabyte of WAL whose checkpoints would run into the cases.
            admin
                .execute_script(&format!(
                    "CREATE DATABASE {name} TEMPLATE {template} STRATEGY FILE_COPY"
                ))
                .or_else(|error| {
                    eprintln!(
                        "copying {template} by file failed ({error}); copying it through the WAL, \
                         whose checkpoints may run into the cases"
                    );
                    admin.execute_script(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
                })
                .expect("copy database");
            (with_database(&options.pg, &name), name)
        }
    };
    let output = Command::new(exe)
        .args([
            "--rows",
            &rows.to_string(),
            "--changed",
            &options.changed.to_string(),
            "--within",
            &options.within.to_string(),
            "--case",
            &format!("{engine}|{case}|{url}"),
        ])
        .args(
            options
                .chunk
                .iter()
                .flat_map(|rows| ["--chunk".to_owned(), rows.to_string()]),
        )
        .output()
        .expect("child");
    match admin.as_mut() {
        Some(admin) => admin
            .execute_script(&format!("DROP DATABASE {cleanup}"))
            .expect("drop"),
        None => {
            let _ = std::fs::remove_file(cleanup);
        }
    }
    if !output.status.success() {
        return Err(format!(
            "{case}: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut parts = text.split_whitespace();
    let mut next = |what: &str| -> Result<f64, String> {
        parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{case}: no {what} in {text:?}"))
    };
    Ok(Measured {
        seconds: next("seconds")?,
        rss: next("rss")?,
        cpu: next("cpu")?,
        journal: next("journal")?,
    })
}

/// Prints one table size's median rounds and ratios; returns each case's
/// median seconds.
fn report_size<'c>(
    engine: &str,
    rows: u64,
    options: &Options,
    cases: &[&'c str],
    rounds: &mut BTreeMap<(u64, &'c str), Vec<Measured>>,
) -> BTreeMap<&'c str, f64> {
    let mut results = BTreeMap::new();
    let mut cpus = BTreeMap::new();
    let mut journal_per_row = None;
    for &case in cases {
        let mut runs = rounds.remove(&(rows, case)).unwrap_or_default();
        runs.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
        let median = runs[runs.len() / 2];
        let rss = runs.iter().map(|run| run.rss).fold(0.0, f64::max);
        let spread = if runs.len() > 1 {
            format!(
                " ({:.3}–{:.3})",
                runs[0].seconds,
                runs[runs.len() - 1].seconds
            )
        } else {
            String::new()
        };
        if median.journal > 0.0 && case == "capture-update" {
            journal_per_row = Some(median.journal / rows as f64);
        }
        println!(
            "| {engine} | {rows} | {case} | {:.3}{spread} | {:.2} | {:.0} |",
            median.seconds,
            median.cpu,
            rss / 1024.0
        );
        results.insert(case, median.seconds);
        cpus.insert(case, median.cpu);
    }
    let ratio = |what: &str, numerator: &str, denominator: &str| {
        if let (Some(numerator), Some(denominator)) =
            (results.get(numerator), results.get(denominator))
        {
            println!(
                "| {engine} | {rows} | {what} | {:.2} | | |",
                numerator / denominator
            );
        }
    };
    ratio("ratio capture/bare update", "capture-update", "bare-update");
    ratio(
        "ratio capture without ledger/bare update",
        "capture-update-no-ledger",
        "bare-update",
    );
    if let (Some(capture), Some(discarding)) = (
        results.get("capture-update"),
        results.get("capture-update-no-ledger"),
    ) {
        let per_row = |seconds: f64| seconds * 1e6 / rows as f64;
        let cpu = match (
            cpus.get("capture-update"),
            cpus.get("capture-update-no-ledger"),
        ) {
            (Some(with), Some(without)) => per_row(with - without),
            _ => 0.0,
        };
        println!(
            "| {engine} | {rows} | ledger per captured row: µs wall, µs CPU, journal bytes | {:.2} | {cpu:.2} | {:.0} |",
            per_row(capture - discarding),
            journal_per_row.unwrap_or(0.0)
        );
    }
    ratio(
        &format!(
            "ratio rollback/bare restore ({} rows among the first {})",
            options.changed_of(rows),
            options.within_of(rows)
        ),
        "capture-rollback",
        "bare-restore",
    );
    results
}
