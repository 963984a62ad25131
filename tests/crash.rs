//! Crash tests: a child process appends batches and is killed at random
//! points; every batch it acknowledged must survive, and the ledger must
//! verify after the next open.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rewind_ledger::{Ledger, Origin};

fn origin() -> Origin {
    Origin {
        actor: "tester@testhost".into(),
        host: "testhost".into(),
    }
}

#[test]
fn killed_appenders_lose_nothing_they_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger");
    drop(Ledger::init(&path, "crash-ledger", origin()).unwrap());
    // A fixed pseudo-random sequence of kill points, different lengths of life.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut acknowledged = 0u64;
    for round in 0..12 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let lines_before_kill = 1 + seed % 40;
        let mut child = Command::new(env!("CARGO_BIN_EXE_append-forever"))
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut line = String::new();
        for _ in 0..lines_before_kill {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 || Instant::now() > deadline {
                break;
            }
            acknowledged = acknowledged.max(line.trim().parse().unwrap());
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let ledger = Ledger::open(&path, origin()).unwrap();
        let (head, _) = ledger.head();
        assert!(
            head >= acknowledged,
            "round {round}: head {head} lost acknowledged seq {acknowledged}"
        );
        let report = ledger.verify_chain().unwrap();
        assert_eq!(report.problem, None, "round {round}: {report:?}");
        assert_eq!(report.verified, head);
    }
    assert!(
        acknowledged > 12,
        "the child appended too little to test anything: {acknowledged}"
    );
}
