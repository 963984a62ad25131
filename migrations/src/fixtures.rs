//! Realistic trees for `rewind demo`, tests and benchmarks: a NetServa
//! 1.0-style vhost with the awkward parts real ones have (names with
//! spaces and unicode, a symlink, an empty directory, mixed modes); and a
//! small hosting panel database (users, teams, memberships, licences,
//! servers, applications, databases) for the teams-to-organizations
//! runbook, with duplicate names, quotes, unicode and an empty team.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Builds a NetServa 1.0-style vhost at `root` (created if absent).
pub fn build_vhost(root: &Path) -> std::io::Result<()> {
    let dir = |relative: &str, mode: u32| -> std::io::Result<()> {
        let path = root.join(relative);
        fs_err::create_dir_all(&path)?;
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(mode))
    };
    let file = |relative: &str, mode: u32, content: &[u8]| -> std::io::Result<()> {
        let path = root.join(relative);
        fs_err::write(&path, content)?;
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(mode))
    };
    fs_err::create_dir_all(root)?;
    dir(".ssh", 0o700)?;
    file(
        ".ssh/authorized_keys",
        0o600,
        b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ1c3lib3hfZGVtb19rZXk admin@example.com\n",
    )?;
    dir("bin", 0o755)?;
    let mut busybox = b"\x7fELF\x02\x01\x01\x00busybox-demo".to_vec();
    busybox.extend((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    file("bin/busybox", 0o755, &busybox)?;
    dir("etc", 0o755)?;
    file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nu1001:x:1001:1001:example.com:/srv/example.com:/bin/sh\n",
    )?;
    dir("var", 0o755)?;
    dir("var/log", 0o755)?;
    file(
        "var/log/access.log",
        0o644,
        b"203.0.113.7 - - [21/Nov/2026:09:14:02 +0000] \"GET / HTTP/1.1\" 200 612\n",
    )?;
    file("var/log/error.log", 0o640, b"")?;
    dir("var/log/archive", 0o750)?;
    dir("var/run", 0o755)?;
    file("var/run/php-fpm.pid", 0o644, b"4242\n")?;
    dir("var/tmp", 0o1777)?;
    dir("web", 0o750)?;
    file(
        "web/index.html",
        0o644,
        b"<!doctype html>\n<title>example.com</title>\n<h1>It works</h1>\n",
    )?;
    file("web/phpinfo.php", 0o640, b"<?php phpinfo();\n")?;
    file("web/about us.html", 0o644, b"<h1>About us</h1>\n")?;
    file(
        "web/caf\u{e9} \u{2615}.txt",
        0o664,
        "menu: café crème, 3 €\n".as_bytes(),
    )?;
    dir("web/uploads", 0o775)?;
    dir("web/assets", 0o755)?;
    file(
        "web/assets/style.css",
        0o600,
        b"body { font-family: sans-serif }\n",
    )?;
    std::os::unix::fs::symlink("index.html", root.join("web/home.html"))?;
    dir("msg", 0o750)?;
    file(
        "msg/Welcome message.txt",
        0o640,
        b"Welcome to your new vhost.\n",
    )?;
    Ok(())
}

/// The teams fixture as one SQL script (SQLite and PostgreSQL alike):
/// `teams` teams, three users and a few resources per team. Deterministic.
pub fn teams_script(teams: usize) -> String {
    let quote = |text: &str| format!("'{}'", text.replace('\'', "''"));
    let names = [
        "Platform",
        "O'Brien & Sons",
        "Zürich Ops 🚀",
        "Platform",
        "\"Quoted\" Team",
    ];
    let mut out = String::from(
        "CREATE TABLE users (id BIGINT PRIMARY KEY, name TEXT NOT NULL, profile TEXT NOT NULL, created_at TIMESTAMP NOT NULL);\n\
         CREATE TABLE teams (id BIGINT PRIMARY KEY, name TEXT NOT NULL, created_at TIMESTAMP NOT NULL);\n\
         CREATE TABLE team_members (team_id BIGINT NOT NULL REFERENCES teams (id), user_id BIGINT NOT NULL REFERENCES users (id), is_owner BOOLEAN NOT NULL, PRIMARY KEY (team_id, user_id));\n\
         CREATE TABLE licences (id BIGINT PRIMARY KEY, team_id BIGINT NOT NULL REFERENCES teams (id), product TEXT NOT NULL, seats INTEGER NOT NULL);\n\
         CREATE TABLE applications (id BIGINT PRIMARY KEY, team_id BIGINT REFERENCES teams (id), name TEXT NOT NULL);\n",
    );
    let stamp = |n: usize| {
        format!(
            "'2024-{:02}-{:02} 10:{:02}:00'",
            1 + n % 12,
            1 + n % 28,
            n % 60
        )
    };
    for team in 1..=teams {
        out.push_str(&format!(
            "INSERT INTO teams (id, name, created_at) VALUES ({team}, {}, {});\n",
            quote(names[(team - 1) % names.len()]),
            stamp(team)
        ));
    }
    for user in 1..=teams * 3 {
        let name = match user % 3 {
            0 => format!("Zoë O'Connor {user}"),
            1 => format!("李小龍 {user}"),
            _ => format!("User {user}"),
        };
        out.push_str(&format!(
            "INSERT INTO users (id, name, profile, created_at) VALUES ({user}, {}, {}, {});\n",
            quote(&name),
            quote(if user % 4 == 0 { "admin" } else { "member" }),
            stamp(user)
        ));
    }
    // The last team is empty: no members, licences or applications.
    for team in 1..teams {
        for offset in 0..3 {
            let user = (team - 1) * 3 + 1 + offset;
            out.push_str(&format!(
                "INSERT INTO team_members (team_id, user_id, is_owner) VALUES ({team}, {user}, {});\n",
                if offset == 0 { "TRUE" } else { "FALSE" }
            ));
        }
        out.push_str(&format!(
            "INSERT INTO licences (id, team_id, product, seats) VALUES ({team}, {team}, 'panel', {});\n",
            5 + team
        ));
        for offset in 0..2 {
            let id = team * 10 + offset;
            out.push_str(&format!(
                "INSERT INTO applications (id, team_id, name) VALUES ({id}, {team}, {});\n",
                quote(&format!(
                    "app {id} — \"{}\"",
                    names[(team - 1) % names.len()]
                ))
            ));
        }
    }
    out.push_str("INSERT INTO applications (id, team_id, name) VALUES (9999, NULL, 'unowned');\n");
    out
}

/// Creates a SQLite teams database at `path` (which must not exist) and
/// returns its url.
pub fn build_teams_sqlite(path: &Path, teams: usize) -> Result<String, crate::db::DbError> {
    fs_err::write(path, b"").map_err(|error| crate::db::DbError::Unreachable {
        database: path.display().to_string(),
        message: error.to_string(),
    })?;
    let url = format!("sqlite://{}", path.display());
    crate::db::Database::connect(&url)?.execute_script(&teams_script(teams))?;
    Ok(url)
}

/// A short teams-to-organizations runbook over [`teams_script`]'s schema,
/// for `rewind demo` and the CLI tests: snapshot counts, a new table, the
/// organizations inserted from teams, applications re-owned, checks.
pub const TEAMS_RUNBOOK: &str = r#"[migration]
id = "teams-to-organizations-demo"
description = "Turn teams into organizations and re-own applications"
database = "{db}"

[vars]
db = { required = true, help = "the panel database, like sqlite://panel.db" }

[[step]]
kind = "verify"
record = { teams = "SELECT count(*) FROM teams", owned = "SELECT count(*) FROM applications WHERE team_id IS NOT NULL" }
checks = [{ query = "SELECT count(*) FROM teams", at_least = 1 }]

[[step]]
kind = "ddl"
up = "CREATE TABLE organizations (id BIGINT PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL, created_at TIMESTAMP NOT NULL); ALTER TABLE applications ADD COLUMN organization_id BIGINT"
down = "ALTER TABLE applications DROP COLUMN organization_id; DROP TABLE organizations"

[[step]]
kind = "insert"
table = "organizations"
key = ["id"]
select = "SELECT id, name, 'top_branch' AS type, created_at FROM teams"

[[step]]
kind = "update"
table = "applications"
where = "team_id IS NOT NULL AND organization_id IS NULL"
set = { organization_id = "team_id" }

[[step]]
kind = "delete"
table = "licences"
where = "seats > 6"

[[step]]
kind = "verify"
checks = [
  { query = "SELECT count(*) FROM organizations", equals_recorded = "teams" },
  { query = "SELECT count(*) FROM applications WHERE organization_id IS NOT NULL", equals_recorded = "owned" },
  { query_returns_no_rows = "SELECT a.id FROM applications a LEFT JOIN organizations o ON o.id = a.organization_id WHERE a.organization_id IS NOT NULL AND o.id IS NULL" },
]
on_fail = "rollback"
"#;
