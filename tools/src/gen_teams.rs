//! Writes the teams fixture (see `teams_fixture.rs`) into a new SQLite file
//! or an existing PostgreSQL database, or prints its SQL.
//!
//! `gen-teams --teams N [--seed S] (--sqlite FILE | --postgres URL | --sql)`

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod teams_fixture;

use rewind_migrations::db::Database;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut teams = 200;
    let mut seed = 42;
    let mut target = None;
    let mut index = 0;
    while index < args.len() {
        let value = args.get(index + 1).cloned();
        match (args[index].as_str(), value) {
            ("--teams", Some(value)) => teams = value.parse().expect("--teams N"),
            ("--seed", Some(value)) => seed = value.parse().expect("--seed S"),
            ("--sqlite", Some(value)) => target = Some(("sqlite", value)),
            ("--postgres", Some(value)) => target = Some(("postgres", value)),
            ("--sql", _) => {
                target = Some(("sql", String::new()));
                index -= 1;
            }
            (other, _) => {
                eprintln!(
                    "error: unexpected argument {other}\nusage: gen-teams --teams N [--seed S] (--sqlite FILE | --postgres URL | --sql)"
                );
                std::process::exit(2);
            }
        }
        index += 2;
    }
    let Some((kind, place)) = target else {
        eprintln!("usage: gen-teams --teams N [--seed S] (--sqlite FILE | --postgres URL | --sql)");
        std::process::exit(2);
    };
    let script = teams_fixture::script(kind == "postgres", teams, seed);
    let url = match kind {
        "sql" => {
            print!("{script}");
            return;
        }
        "sqlite" => {
            if std::path::Path::new(&place).exists() {
                eprintln!("error: {place} exists; the generator only writes new files");
                std::process::exit(1);
            }
            format!("sqlite://{place}?mode=rwc")
        }
        _ => place,
    };
    let result = Database::connect(&url).and_then(|mut database| database.execute_script(&script));
    if let Err(error) = result {
        eprintln!("error: {error}");
        if let Some(hint) = error.hint() {
            eprintln!("hint: {hint}");
        }
        std::process::exit(1);
    }
    eprintln!(
        "wrote {teams} teams to {}",
        rewind_migrations::db::redact_url(&url)
    );
}
