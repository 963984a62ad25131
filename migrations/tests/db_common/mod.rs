//! Helpers shared by the database tests: a real ledger as the recorder,
//! scratch SQLite files, scratch PostgreSQL databases (skipped without a
//! server, except under `CI=true`), and dumps to compare.

#![allow(dead_code, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use rewind_ledger::{Draft, Event, Ledger, Origin};
use rewind_migrations::db::dump::PgDumpPart;
use rewind_migrations::db::{Database, UndoOptions, UndoReport};

/// A ledger in a temp directory, used as the recorder, like `apply` does.
pub struct TestLedger {
    pub ledger: Ledger,
    _dir: tempfile::TempDir,
}

impl TestLedger {
    pub fn new() -> TestLedger {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::init(
            &dir.path().join("ledger"),
            "test-ledger",
            Origin {
                actor: "tester".into(),
                host: "testhost".into(),
            },
        )
        .unwrap();
        TestLedger { ledger, _dir: dir }
    }

    /// A recorder closure appending one batch per call.
    pub fn recorder(
        &mut self,
    ) -> impl FnMut(Vec<Event>) -> Result<(), rewind_ledger::LedgerError> + '_ {
        |events: Vec<Event>| {
            self.ledger
                .append_batch(
                    events
                        .into_iter()
                        .map(|event| Draft::new(Some("run-1"), event))
                        .collect(),
                )
                .map(|_| ())
        }
    }

    /// Every event, read back from the store (so images go through the codec).
    pub fn events(&self) -> Vec<(u64, Event)> {
        let (head, _) = self.ledger.head();
        if head == 0 {
            return Vec::new();
        }
        self.ledger
            .range(1..=head)
            .map(|entry| {
                let entry = entry.unwrap();
                (entry.seq(), entry.record.event)
            })
            .collect()
    }

    /// Undoes every database event newest first; returns the reports.
    pub fn roll_back(&self, database: &mut Database, options: UndoOptions) -> Vec<UndoReport> {
        let mut reports = Vec::new();
        for (_, event) in self.events().into_iter().rev() {
            if matches!(
                event,
                Event::RowsChanged(_)
                    | Event::RowsPacked(_)
                    | Event::SequenceMoved(_)
                    | Event::SchemaChanged(_)
            ) {
                reports.push(database.undo(&event, options).unwrap());
            }
        }
        reports
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A scratch SQLite file.
pub struct SqliteFile {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SqliteFile {
    /// A new empty database file.
    pub fn new() -> SqliteFile {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.db");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let options: sqlx::sqlite::SqliteConnectOptions = url.parse().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            use sqlx::Connection;
            let connection = sqlx::SqliteConnection::connect_with(&options)
                .await
                .unwrap();
            connection.close().await.unwrap();
        });
        SqliteFile { path, _dir: dir }
    }

    /// A copy of an existing file; the original is never written.
    pub fn copy_of(original: &Path) -> SqliteFile {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copy.db");
        std::fs::copy(original, &path).unwrap();
        let mut permissions = std::fs::metadata(&path).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        permissions.set_readonly(false);
        std::fs::set_permissions(&path, permissions).unwrap();
        SqliteFile { path, _dir: dir }
    }

    pub fn url(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }

    pub fn connect(&self) -> Database {
        Database::connect(&self.url()).unwrap()
    }
}

/// A scratch PostgreSQL database, dropped at the end of the test.
pub struct PgDatabase {
    pub url: String,
    pub name: String,
    admin_url: String,
}

fn admin_url() -> String {
    std::env::var("REWIND_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn with_database(admin: &str, name: &str) -> String {
    let (base, query) = match admin.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (admin, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    format!("{}/{name}{query}", &base[..path_start])
}

impl PgDatabase {
    /// Creates a database, or returns `None` (and says why) when no server
    /// answers; under `CI=true` a missing server fails the test instead.
    pub fn create(prefix: &str) -> Option<PgDatabase> {
        let admin_url = admin_url();
        let mut admin = match Database::connect(&admin_url) {
            Ok(admin) => admin,
            Err(error) => {
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("CI=true but PostgreSQL is not reachable at {admin_url}: {error}");
                }
                eprintln!(
                    "skipped: PostgreSQL is not reachable at {admin_url} ({error}); set REWIND_TEST_PG or start the server"
                );
                return None;
            }
        };
        let name = unique(prefix);
        admin
            .execute_script(&format!("CREATE DATABASE \"{name}\""))
            .unwrap();
        let url = with_database(&admin_url, &name);
        Some(PgDatabase {
            url,
            name,
            admin_url,
        })
    }

    pub fn connect(&self) -> Database {
        Database::connect(&self.url).unwrap()
    }

    /// A connection to the admin database (roles are the cluster's).
    pub fn admin(&self) -> Database {
        Database::connect(&self.admin_url).unwrap()
    }

    /// A connection to this database as another user.
    pub fn connect_as(&self, user: &str, password: &str) -> Database {
        let scheme_end = self.url.find("://").map_or(0, |i| i + 3);
        let rest = &self.url[scheme_end..];
        let host = rest.rfind('@').map_or(rest, |at| &rest[at + 1..]);
        Database::connect(&format!(
            "{}{user}:{password}@{host}",
            &self.url[..scheme_end]
        ))
        .unwrap()
    }

    /// `pg_dump` of the schema, or of the data (with sequence values),
    /// rows sorted within each COPY block (see `db::dump::postgres`).
    pub fn dump(&self, data_only: bool) -> String {
        let part = if data_only {
            PgDumpPart::Data
        } else {
            PgDumpPart::Schema
        };
        rewind_migrations::db::dump::postgres(&self.url, part).unwrap()
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if let Ok(mut admin) = Database::connect(&self.admin_url) {
            let _ = admin.execute_script(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// The Chinook dataset shared by the team (`shared/` beside the checkout, or
/// `REWIND_DATASETS`); never written in place.
pub fn chinook_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("REWIND_DATASETS") {
        return PathBuf::from(dir).join("chinook");
    }
    let beside =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets/chinook");
    if beside.is_dir() {
        return beside;
    }
    PathBuf::from("/work/shared/datasets/chinook")
}

/// The Chinook PostgreSQL script without its DROP/CREATE DATABASE and `\c` lines.
pub fn chinook_pg_script() -> String {
    let text =
        std::fs::read_to_string(chinook_dir().join("Chinook_PostgreSql_SerialPKs.sql")).unwrap();
    text.lines()
        .filter(|line| {
            let trimmed = line.trim_start();
            !(trimmed.starts_with("DROP DATABASE")
                || trimmed.starts_with("CREATE DATABASE")
                || trimmed.starts_with("\\c"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts two dumps are identical, showing the first differing line.
pub fn assert_same_dump(before: &str, after: &str, what: &str) {
    if before != after {
        let (line, (expected, actual)) = before
            .lines()
            .zip(after.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .map(|(i, pair)| (i + 1, pair))
            .unwrap_or((0, ("<length differs>", "<length differs>")));
        panic!(
            "{what}: dumps differ at line {line}\n before: {expected}\n after:  {actual}\n (before {} lines, after {} lines)",
            before.lines().count(),
            after.lines().count()
        );
    }
}

/// Undo options that restore what did not drift and report the rest.
pub fn skip_drift() -> rewind_migrations::db::UndoOptions {
    rewind_migrations::db::UndoOptions {
        on_drift: rewind_migrations::db::OnDrift::Skip,
        allow_irreversible: false,
        allow_triggers: false,
    }
}
