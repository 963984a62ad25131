//! Benchmark of the ledger, printed as one table whose ratios come from
//! this one run: durable batched append against raw sled inserts of the same
//! bytes, opening, full verification, and history by run and by row key.
//!
//! ```text
//! cargo run --release -p rewind-tools --bin bench-ledger -- [--events N] [--batch N] [--run-size N] [--dir DIR] [--skip-raw] [--row-images N]
//! ```
//!
//! Defaults: 1,000,000 events, 1,000 per batch, 10,000 events per run, in a
//! temporary directory (give `--dir` to put it on another filesystem).
//! `--skip-raw` leaves out the raw sled baselines (and so the ratios), to
//! profile the ledger's own append. `--row-images N` also appends N row
//! images as database steps record them (`RowsChanged` events of 1000 rows,
//! ten to a batch) and reports the ledger's cost per row.

// A command-line tool: its output is the point.
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rewind_ledger::canonical::{link, record_json};
use rewind_ledger::codec::encode_stored;
use rewind_ledger::{
    Bytes, Column, Compensated, Digest, Draft, Event, FileWritten, Ledger, ModeChanged, Origin,
    Record, RowImage, RowsChanged, Selector, SqlValue, Timestamp,
};

struct Options {
    events: u64,
    batch: u64,
    run_size: u64,
    dir: Option<PathBuf>,
    skip_raw: bool,
    row_images: u64,
}

fn parse_options() -> Options {
    let mut options = Options {
        events: 1_000_000,
        batch: 1_000,
        run_size: 10_000,
        dir: None,
        skip_raw: false,
        row_images: 0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| panic!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--events" => options.events = value().replace('_', "").parse().expect("--events N"),
            "--batch" => options.batch = value().parse().expect("--batch N"),
            "--run-size" => options.run_size = value().parse().expect("--run-size N"),
            "--dir" => options.dir = Some(PathBuf::from(value())),
            "--skip-raw" => options.skip_raw = true,
            "--row-images" => {
                options.row_images = value().replace('_', "").parse().expect("--row-images N")
            }
            other => panic!(
                "unknown argument {other}; usage: bench-ledger [--events N] [--batch N] [--run-size N] [--dir DIR] [--skip-raw] [--row-images N]"
            ),
        }
    }
    options
}

/// Rows are keyed 0..ROWS; each key is changed by a few events over the ledger.
const ROWS: u64 = 50_000;

/// The i-th event (from 0): 60% files written, 20% modes changed, 20% rows
/// changed, with payloads of roughly 300 bytes of canonical JSON.
fn event(index: u64) -> Event {
    let vhost = index % 500;
    let path =
        format!("/srv/www/vhost-{vhost:03}.example.com/web/app/public/assets/img/{index:07}.png");
    let step = (index % 12) as u32;
    match index % 10 {
        0..=5 => Event::FileWritten(FileWritten {
            mode: 0o644,
            new: Digest::of(&index.to_le_bytes()),
            old: Some(Digest::of(&(index + 1).to_le_bytes())),
            old_mode: Some(0o600),
            path,
            step,
        }),
        6 | 7 => Event::ModeChanged(ModeChanged {
            new: 0o750,
            old: 0o755,
            path,
            step,
        }),
        _ => {
            let row = (index / 10 * 7919) % ROWS;
            Event::RowsChanged(RowsChanged {
                chunk: (index / 1000) as u32,
                columns: vec![
                    Column {
                        name: "id".into(),
                        sql_type: "bigint".into(),
                    },
                    Column {
                        name: "owner".into(),
                        sql_type: "text".into(),
                    },
                    Column {
                        name: "licence".into(),
                        sql_type: "bytea".into(),
                    },
                ],
                database: "postgres://app@db/app".into(),
                key_columns: vec!["id".into()],
                rows: vec![RowImage {
                    after: Some(vec![
                        SqlValue::Integer(row as i64),
                        SqlValue::Text(format!("organization-{row}")),
                        SqlValue::Blob(Bytes(index.to_le_bytes().to_vec())),
                    ]),
                    before: Some(vec![
                        SqlValue::Integer(row as i64),
                        SqlValue::Text(format!("team-{row}")),
                        SqlValue::Null,
                    ]),
                    key: vec![SqlValue::Integer(row as i64)],
                }],
                step,
                table: "organizations".into(),
            })
        }
    }
}

fn run_of(index: u64, run_size: u64) -> String {
    format!("run-{:05}", index / run_size)
}

fn origin() -> Origin {
    Origin {
        actor: "ops@bench-01".into(),
        host: "bench-01".into(),
    }
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

/// CPU time of this process so far, all threads (user + system), from
/// `/proc/self/stat` (clock ticks of 10 ms). On a shared machine the wall
/// time of a stage depends on the others' load; its CPU time much less.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |index: usize| fields.get(index).and_then(|v| v.parse::<u64>().ok());
    // utime and stime are fields 14 and 15 of stat(5): 12 and 13 after ')'.
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => Duration::from_millis((user + system) * 10),
        _ => Duration::ZERO,
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn millis(elapsed: Duration) -> String {
    format!("{:.1} ms", elapsed.as_secs_f64() * 1000.0)
}

fn thousands(value: f64) -> String {
    format!("{:.0}k/s", value / 1000.0)
}

fn size_of_dir(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(items) = std::fs::read_dir(dir) {
        for item in items.flatten() {
            let Ok(metadata) = item.metadata() else {
                continue;
            };
            total += if metadata.is_dir() {
                size_of_dir(&item.path())
            } else {
                metadata.len()
            };
        }
    }
    total
}

struct Table {
    rows: Vec<[String; 4]>,
}

impl Table {
    fn row(&mut self, measure: &str, result: String, target: &str, verdict: String) {
        println!("  {measure}: {result}");
        self.rows
            .push([measure.to_owned(), result, target.to_owned(), verdict]);
    }

    fn print(&self) {
        println!();
        println!("| measure | result | target | |");
        println!("| --- | ---: | --- | --- |");
        for [measure, result, target, verdict] in &self.rows {
            println!("| {measure} | {result} | {target} | {verdict} |");
        }
    }
}

fn verdict(ok: bool) -> String {
    if ok { "met".into() } else { "MISSED".into() }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let options = parse_options();
    let temp = match &options.dir {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .expect("creating a temporary directory");
    let ledger_dir = temp.path().join("ledger");
    let raw_dir = temp.path().join("raw-sled");
    let n = options.events;
    let batch = options.batch;
    let clock_base: Timestamp = "2026-01-01T00:00:00.000000Z".parse().unwrap();
    println!(
        "bench-ledger: {n} events, {batch} per batch, {} per run, in {}; {} cores, load average {}",
        options.run_size,
        temp.path().display(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        load_average()
    );
    let mut table = Table { rows: Vec::new() };

    // 1. Durable batched append through the one appender, and 2. the same
    // stored bytes into bare sled trees: one flush per batch, and once more
    // with an fsync of sled's data file per batch (durability on Linux, where
    // sled's flush does not fsync). The three alternate batch by batch, so
    // that the load of a shared machine falls on all of them alike.
    let mut ledger = Ledger::init(&ledger_dir, "bench-ledger", origin()).unwrap();
    ledger.set_clock(move || clock_base);
    let raw = RawSled::open(&raw_dir.join("flush"));
    let raw_synced = RawSled::open(&raw_dir.join("fsync"));
    let (mut append_time, mut raw_time, mut raw_synced_time) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut append_cpu, mut raw_cpu) = (Duration::ZERO, Duration::ZERO);
    let mut stored_bytes = 0;
    // The ledger writes its store behind each acknowledged batch (overlapped
    // with the caller's next batch), so the three alternate in blocks of
    // BLOCK batches, and each ledger block ends by waiting for its store:
    // every byte the ledger writes is inside its own timed region.
    const BLOCK: u64 = 10;
    let mut next = 0;
    while next < n {
        let block_end = (next + batch * BLOCK).min(n);
        // The events are the caller's, built before the clock starts, as the
        // raw baseline's bytes are built before its clock.
        let mut drafts_block: Vec<Vec<Draft>> = Vec::new();
        let mut cursor = next;
        while cursor < block_end {
            let end = (cursor + batch).min(block_end);
            drafts_block.push(
                (cursor..end)
                    .map(|index| Draft {
                        run: Some(run_of(index, options.run_size)),
                        event: event(index),
                    })
                    .collect(),
            );
            cursor = end;
        }
        // The recorder's way in: the records go to the store writer, which
        // encodes them behind the journal.
        let mut seqs_block = Vec::with_capacity(drafts_block.len());
        let (started, cpu) = (Instant::now(), cpu_time());
        for drafts in drafts_block {
            seqs_block.push(ledger.append_batch_seqs(drafts).unwrap());
        }
        ledger.wait_for_store().unwrap();
        append_time += started.elapsed();
        append_cpu += cpu_time() - cpu;
        // The raw baseline inserts the same stored bytes, read back.
        let stored_block: Vec<Vec<(u64, Vec<u8>)>> = seqs_block
            .into_iter()
            .map(|seqs| {
                ledger
                    .range(seqs)
                    .map(|entry| {
                        let entry = entry.unwrap();
                        (entry.seq(), encode_stored(&entry.hash, &entry.record))
                    })
                    .collect()
            })
            .collect();
        // Building the raw baseline's bytes is not the ledger's work.
        for stored in &stored_block {
            stored_bytes += stored.iter().map(|(_, value)| value.len()).sum::<usize>();
        }
        if options.skip_raw {
            next = block_end;
            continue;
        }
        let cpu = cpu_time();
        for stored in &stored_block {
            raw_time += raw.insert_batch(stored, false);
        }
        raw_cpu += cpu_time() - cpu;
        for stored in &stored_block {
            raw_synced_time += raw_synced.insert_batch(stored, true);
        }
        next = block_end;
    }
    drop((raw, raw_synced));
    let append_rate = per_second(n, append_time);
    let journal_bytes = std::fs::metadata(ledger_dir.join("journal.jsonl"))
        .unwrap()
        .len();
    println!(
        "  journal {:.0} bytes per event, stored value {:.0} bytes per event, store {:.0} MB",
        journal_bytes as f64 / n as f64,
        stored_bytes as f64 / n as f64,
        size_of_dir(&ledger_dir.join("store")) as f64 / 1e6
    );
    let raw_rate = per_second(n, raw_time);
    let raw_synced_rate = per_second(n, raw_synced_time);
    let ratio = append_rate / raw_rate;
    let cpu_per_event =
        |cpu: Duration| format!("{:.1} µs CPU/event", cpu.as_secs_f64() * 1e6 / n as f64);
    table.row(
        &format!("durable append, {batch} per batch"),
        format!("{} ({})", thousands(append_rate), cpu_per_event(append_cpu)),
        "≥ 100k/s",
        verdict(append_rate >= 100_000.0),
    );
    if !options.skip_raw {
        table.row(
            "raw sled insert + flush per batch",
            format!("{} ({})", thousands(raw_rate), cpu_per_event(raw_cpu)),
            "",
            String::new(),
        );
        table.row(
            "raw sled insert + flush + fsync per batch",
            thousands(raw_synced_rate),
            "",
            String::new(),
        );
        table.row(
            "append ÷ raw sled (flush)",
            format!("{ratio:.2}×"),
            "≥ 0.75×",
            verdict(ratio >= 0.75),
        );
        table.row(
            "append ÷ raw sled (flush + fsync)",
            format!("{:.2}×", append_rate / raw_synced_rate),
            "",
            String::new(),
        );
    }

    // 3. What one event costs on the CPU alone: JSON, hash, bincode.
    let started = Instant::now();
    let mut prev = Digest::default();
    for index in 0..n.min(200_000) {
        let record = Record {
            actor: "ops@bench-01".into(),
            event: event(index),
            host: "bench-01".into(),
            ledger_id: "bench-ledger".into(),
            recorded_at: clock_base,
            run: Some(run_of(index, options.run_size)),
            seq: index + 1,
        };
        let json = record_json(&record);
        prev = link(&prev, &json);
        std::hint::black_box(encode_stored(&prev, &record));
    }
    let cpu_rate = per_second(n.min(200_000), started.elapsed());
    table.row(
        "build + canonical JSON + sha256 + bincode (CPU only)",
        thousands(cpu_rate),
        "",
        String::new(),
    );

    // 4. Reopen, verify the whole chain, history.
    // The first open after a long append session replays sled's log since
    // its last snapshot; later opens are quicker. Both are shown.
    drop(ledger);
    let started = Instant::now();
    let ledger = Ledger::open(&ledger_dir, origin()).unwrap();
    table.row(
        &format!("first open after appending {n} events"),
        millis(started.elapsed()),
        "",
        String::new(),
    );
    drop(ledger);
    let started = Instant::now();
    let mut ledger = Ledger::open(&ledger_dir, origin()).unwrap();
    table.row("open again", millis(started.elapsed()), "", String::new());

    let (started, cpu) = (Instant::now(), cpu_time());
    let report = ledger.verify_chain().unwrap();
    let verify_time = started.elapsed();
    let verify_cpu = cpu_time() - cpu;
    assert_eq!(report.problem, None, "the benchmark ledger does not verify");
    assert_eq!(report.verified, n);
    table.row(
        &format!("verify_chain, {n} events"),
        format!(
            "{:.2} s ({}; {:.2} s CPU)",
            verify_time.as_secs_f64(),
            thousands(per_second(n, verify_time)),
            verify_cpu.as_secs_f64()
        ),
        "≤ 4 s for 1M",
        verdict(verify_time.as_secs_f64() * 1_000_000.0 / n as f64 <= 4.0),
    );

    let middle_run = run_of(n / 2, options.run_size);
    let run_selector = Selector {
        run: Some(middle_run),
        ..Selector::default()
    };
    // Each query's first run comes first after opening the ledger: nothing
    // of its index is in sled's cache yet.
    let queries = [
        ("history by run", run_selector, true),
        (
            "history by row key",
            Selector {
                table: Some("organizations".into()),
                key: Some(((n / 2 / 10 * 7919) % ROWS).to_string()),
                ..Selector::default()
            },
            true,
        ),
        (
            "history by path, one file",
            Selector {
                path: Some(format!(
                    "/srv/www/vhost-{:03}.example.com/web/app/public/assets/img/{:07}.png",
                    (n / 2 + 1) % 500,
                    n / 2 + 1
                )),
                ..Selector::default()
            },
            false,
        ),
        (
            "history by path, one vhost directory",
            Selector {
                path: Some("/srv/www/vhost-007.example.com".into()),
                ..Selector::default()
            },
            false,
        ),
    ];
    for (name, selector, targeted) in queries {
        let (first, median, count) = history(&ledger, &selector);
        table.row(
            &format!("{name} ({count} events): first query, then median of 5"),
            format!("{}, {}", millis(first), millis(median)),
            if targeted { "≤ 50 ms" } else { "" },
            if targeted {
                verdict(first.max(median) <= Duration::from_millis(50))
            } else {
                String::new()
            },
        );
    }

    aftermath(&mut ledger, n, &mut table);

    if options.row_images > 0 {
        row_images(
            &temp.path().join("row-images"),
            options.row_images,
            &mut table,
        );
    }

    println!("  load average at the end: {}", load_average());
    table.print();
}

/// A bare sled tree, as the baseline.
struct RawSled {
    db: sled::Db,
    tree: sled::Tree,
    data_file: std::fs::File,
}

impl RawSled {
    fn open(dir: &Path) -> RawSled {
        let db = sled::Config::new()
            .path(dir)
            .flush_every_ms(None)
            .open()
            .unwrap();
        let tree = db.open_tree("events").unwrap();
        let data_file = std::fs::File::open(dir.join("db")).unwrap();
        RawSled {
            db,
            tree,
            data_file,
        }
    }

    /// Inserts one batch of values, flushes (and fsyncs the data file if
    /// asked); returns the time taken.
    fn insert_batch(&self, stored: &[(u64, Vec<u8>)], fsync: bool) -> Duration {
        let started = Instant::now();
        for (seq, value) in stored {
            self.tree
                .insert(seq.to_be_bytes(), value.as_slice())
                .unwrap();
        }
        self.db.flush().unwrap();
        if fsync {
            self.data_file.sync_data().unwrap();
        }
        started.elapsed()
    }
}

/// A row's aftermath (`rewind history --table --key` shows the rollbacks
/// that undid its changes) among 100,000 later compensations of other
/// events: through the index by the seq an event is about, against
/// reading every compensation recorded after the row's first event.
fn aftermath(ledger: &mut Ledger, n: u64, table: &mut Table) {
    let selector = Selector {
        table: Some("organizations".into()),
        key: Some(((n / 2 / 10 * 7919) % ROWS).to_string()),
        ..Selector::default()
    };
    let found: std::collections::BTreeSet<u64> = ledger
        .candidates(&selector)
        .unwrap()
        .expect("an index applies")
        .into_iter()
        .collect();
    let first = *found.first().expect("the row has events");
    let compensated =
        |undoes| Draft::new(Some("bench"), Event::Compensated(Compensated { undoes }));
    for batch in 0..100u64 {
        let drafts = (0..1000)
            .map(|i| compensated(n + 1_000_000 + batch * 1000 + i))
            .collect();
        ledger.append_batch_seqs(drafts).unwrap();
    }
    ledger.append_batch_seqs(vec![compensated(first)]).unwrap();
    ledger.wait_for_store().unwrap();
    let time = |read: &dyn Fn() -> usize| {
        let mut samples = Vec::new();
        let mut count = 0;
        for _ in 0..5 {
            let started = Instant::now();
            count = read();
            samples.push(started.elapsed());
        }
        (median(samples), count)
    };
    let (indexed, found_indexed) = time(&|| {
        let entries: Vec<_> = ledger
            .about(&found)
            .unwrap()
            .into_iter()
            .map(|seq| ledger.get(seq).unwrap())
            .collect();
        std::hint::black_box(entries).len()
    });
    let (scanned, found_scanned) = time(&|| {
        ledger
            .seqs_of_kind("Compensated")
            .unwrap()
            .unwrap_or_default()
            .into_iter()
            .filter(|seq| *seq > first)
            .map(|seq| ledger.get(seq).unwrap())
            .filter(|entry| {
                matches!(&entry.record.event, Event::Compensated(c) if found.contains(&c.undoes))
            })
            .count()
    });
    assert_eq!((found_indexed, found_scanned), (1, 1));
    table.row(
        "a row's aftermath among 100k later compensations: by the index, reading them all",
        format!("{}, {}", millis(indexed), millis(scanned)),
        "",
        format!(
            "{:.0}×",
            scanned.as_secs_f64() / indexed.as_secs_f64().max(1e-9)
        ),
    );
}

/// Times a history query: the index narrows, then each entry is read.
/// Returns the first run, the median of five runs and the number of entries.
fn history(ledger: &Ledger, selector: &Selector) -> (Duration, Duration, usize) {
    let mut samples = Vec::new();
    let mut count = 0;
    for _ in 0..5 {
        let started = Instant::now();
        let seqs = ledger
            .candidates(selector)
            .unwrap()
            .expect("an index applies");
        let entries: Vec<_> = seqs.iter().map(|&seq| ledger.get(seq).unwrap()).collect();
        samples.push(started.elapsed());
        count = entries.len();
        std::hint::black_box(entries);
    }
    (samples[0], median(samples), count)
}

/// Appends `count` row images of a four-column table, as an `update` step
/// records them: `RowsChanged` events of 1000 rows, ten events (one
/// 10,000-row transaction) to a durable batch.
fn row_images(dir: &Path, count: u64, table: &mut Table) {
    let mut ledger = Ledger::init(dir, "bench-rows", origin()).unwrap();
    let columns = ["id", "a", "b", "c"]
        .iter()
        .zip(["integer", "integer", "text", "real"])
        .map(|(name, sql_type)| Column {
            name: (*name).into(),
            sql_type: sql_type.into(),
        })
        .collect::<Vec<_>>();
    let image = |id: u64, step: u64| {
        vec![
            SqlValue::Integer(id as i64),
            SqlValue::Integer((id * 7 + step) as i64),
            SqlValue::Text(format!("row {id} {}", "x".repeat(step as usize))),
            SqlValue::Real(format!("{:#018x}", (id as f64 * 1.5).to_bits())),
        ]
    };
    let batches: Vec<Vec<Draft>> = (0..count.div_ceil(10_000))
        .map(|batch| {
            (0..10)
                .map(|chunk| {
                    let first = batch * 10_000 + chunk * 1000;
                    let rows = (first..(first + 1000).min(count))
                        .map(|id| RowImage {
                            after: Some(image(id, 1)),
                            before: Some(image(id, 0)),
                            key: vec![SqlValue::Integer(id as i64)],
                        })
                        .collect::<Vec<_>>();
                    Draft {
                        run: Some("rows".into()),
                        event: Event::RowsChanged(RowsChanged {
                            chunk: (batch * 10 + chunk) as u32,
                            columns: columns.clone(),
                            database: "sqlite:///srv/panel.db".into(),
                            key_columns: vec!["id".into()],
                            rows,
                            step: 1,
                            table: "t".into(),
                        }),
                    }
                })
                .filter(|draft| matches!(&draft.event, Event::RowsChanged(e) if !e.rows.is_empty()))
                .collect()
        })
        .collect();
    // The canonical JSON of the row images alone: the ledger's writer
    // (`RowsChanged` by hand) against serde_json's of the same records.
    let records: Vec<Record> = batches
        .iter()
        .flatten()
        .take(100)
        .enumerate()
        .map(|(index, draft)| Record {
            actor: "ops@bench-01".into(),
            event: draft.event.clone(),
            host: "bench-01".into(),
            ledger_id: "bench-rows".into(),
            recorded_at: "2026-01-01T00:00:00.000000Z".parse().unwrap(),
            run: draft.run.clone(),
            seq: index as u64 + 1,
        })
        .collect();
    let rows_in: usize = records
        .iter()
        .map(|record| match &record.event {
            Event::RowsChanged(rows) => rows.rows.len(),
            _ => 0,
        })
        .sum();
    let time_json = |json: &dyn Fn(&Record) -> Vec<u8>| {
        let started = Instant::now();
        for record in &records {
            std::hint::black_box(json(record));
        }
        started.elapsed().as_secs_f64() * 1e6 / rows_in as f64
    };
    let by_hand = time_json(&|record| record_json(record));
    let by_serde = time_json(&|record| serde_json::to_vec(record).unwrap());
    table.row(
        "canonical JSON of a row image: the ledger's writer, serde_json",
        format!("{by_hand:.3} µs, {by_serde:.3} µs"),
        "",
        String::new(),
    );
    let (started, cpu) = (Instant::now(), cpu_time());
    for drafts in batches {
        ledger.append_batch_seqs(drafts).unwrap();
    }
    ledger.wait_for_store().unwrap();
    let (wall, cpu) = (started.elapsed(), cpu_time() - cpu);
    let journal = std::fs::metadata(dir.join("journal.jsonl")).unwrap().len();
    table.row(
        &format!("append {count} row images (RowsChanged of 1000 rows, 10 a batch)"),
        format!(
            "{:.2} s ({:.2} µs/row, {:.2} µs CPU/row, {:.0} journal bytes/row)",
            wall.as_secs_f64(),
            wall.as_secs_f64() * 1e6 / count as f64,
            cpu.as_secs_f64() * 1e6 / count as f64,
            journal as f64 / count as f64
        ),
        "",
        String::new(),
    );
}
