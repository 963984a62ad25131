//! A child process for the crash tests: appends batches to a ledger forever
//! and prints each acknowledged head seq, until it is killed.

use std::io::Write;

use rewind_ledger::{Draft, Event, Ledger, Note, Origin};

fn main() {
    let dir = std::env::args()
        .nth(1)
        .expect("usage: append-forever LEDGER_DIR");
    let origin = Origin {
        actor: "crash@test".into(),
        host: "test".into(),
    };
    let mut ledger = Ledger::open(std::path::Path::new(&dir), origin).expect("open the ledger");
    let mut stdout = std::io::stdout();
    let mut round = 0u64;
    loop {
        round += 1;
        let size = 1 + (round % 50) as usize;
        let drafts = (0..size)
            .map(|i| {
                let text = format!(
                    "round {round} item {i} {}",
                    "x".repeat((round as usize * 7 + i) % 300)
                );
                Draft::new(
                    Some("crash-run"),
                    Event::Note(Note {
                        about_run: None,
                        about_seq: None,
                        text,
                    }),
                )
            })
            .collect();
        let entries = ledger.append_batch(drafts).expect("append");
        let head = entries.last().expect("not empty").seq();
        writeln!(stdout, "{head}").expect("stdout");
        stdout.flush().expect("stdout");
    }
}
