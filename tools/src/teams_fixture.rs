//! The fixture of the teams-to-organizations and organizational-model
//! examples: a hosting panel's users, teams, memberships, licences and
//! resources, as one SQL script for SQLite or PostgreSQL. Deterministic
//! for a seed. It has what the runbooks trip over: users in several teams,
//! duplicate team names, names with quotes and unicode, empty teams,
//! sponsor chains, and more than 1000 resources.
//!
//! Shared by `gen-teams` and, through `#[path]`, by the example tests in
//! `migrations/tests/`.

/// A small deterministic generator (xorshift64*), so fixtures need no crate.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

const TEAM_NAMES: &[&str] = &[
    "Platform",
    "O'Brien & Sons",
    "Zürich Ops 🚀",
    "\"Quoted\" Team",
    "Platform",
    "Data; DROP TABLE teams; --",
    "Ünïcødé Ωmega",
    "Support",
    "Marketing",
    "Platform",
];

const PROFILES: &[&str] = &["admin", "coach", "member", "member", "member"];

fn timestamp(random: &mut Random) -> String {
    format!(
        "'20{:02}-{:02}-{:02} {:02}:{:02}:{:02}'",
        15 + random.below(10),
        1 + random.below(12),
        1 + random.below(28),
        random.below(24),
        random.below(60),
        random.below(60)
    )
}

fn inserts(out: &mut String, table: &str, columns: &str, rows: &[String]) {
    for chunk in rows.chunks(500) {
        out.push_str(&format!(
            "INSERT INTO {table} ({columns}) VALUES\n  {};\n",
            chunk.join(",\n  ")
        ));
    }
}

/// The whole fixture as SQL: schema, then rows. `teams` sets the scale:
/// 3 users, 2 servers, 3 applications and 2 databases per team.
pub fn script(postgres: bool, teams: usize, seed: u64) -> String {
    let mut random = Random(seed.max(1));
    let boolean = |value: bool| if value { "TRUE" } else { "FALSE" };
    let timestamp_type = if postgres {
        "TIMESTAMP(0)"
    } else {
        "TIMESTAMP"
    };
    let mut out = format!(
        "CREATE TABLE users (id BIGINT PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL, profile TEXT NOT NULL, \
sponsor_id BIGINT REFERENCES users (id), created_at {timestamp_type} NOT NULL);
CREATE TABLE teams (id BIGINT PRIMARY KEY, name TEXT NOT NULL, created_at {timestamp_type} NOT NULL);
CREATE TABLE team_members (team_id BIGINT NOT NULL REFERENCES teams (id), user_id BIGINT NOT NULL REFERENCES users (id), \
is_owner BOOLEAN NOT NULL, PRIMARY KEY (team_id, user_id));
CREATE TABLE licences (id BIGINT PRIMARY KEY, team_id BIGINT NOT NULL REFERENCES teams (id), product TEXT NOT NULL, seats INTEGER NOT NULL);
CREATE TABLE servers (id BIGINT PRIMARY KEY, team_id BIGINT REFERENCES teams (id), hostname TEXT NOT NULL);
CREATE TABLE applications (id BIGINT PRIMARY KEY, team_id BIGINT REFERENCES teams (id), server_id BIGINT REFERENCES servers (id), name TEXT NOT NULL);
CREATE TABLE databases (id BIGINT PRIMARY KEY, team_id BIGINT REFERENCES teams (id), application_id BIGINT REFERENCES applications (id), name TEXT NOT NULL);
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO settings (key, value) VALUES ('feature.organizations', 'off'), ('panel.name', 'hosting ''panel''');
"
    );
    let user_count = teams * 3;
    let mut rows = Vec::new();
    for id in 1..=user_count {
        let profile = PROFILES[random.below(PROFILES.len() as u64) as usize];
        let sponsor = if id > 3 && random.below(3) == 0 {
            (1 + random.below(id as u64 - 1)).to_string()
        } else {
            "NULL".to_owned()
        };
        let name = match id % 7 {
            0 => format!("Zoë O'Connor {id}"),
            1 => format!("José \"Pepe\" Núñez {id}"),
            2 => format!("李小龍 {id}"),
            _ => format!("User {id}"),
        };
        rows.push(format!(
            "({id}, {}, {}, {}, {sponsor}, {})",
            quote(&name),
            quote(&format!("user{id}@example.test")),
            quote(profile),
            timestamp(&mut random)
        ));
    }
    inserts(
        &mut out,
        "users",
        "id, name, email, profile, sponsor_id, created_at",
        &rows,
    );
    rows.clear();
    for id in 1..=teams {
        let name = TEAM_NAMES[(id - 1) % TEAM_NAMES.len()];
        rows.push(format!(
            "({id}, {}, {})",
            quote(name),
            timestamp(&mut random)
        ));
    }
    inserts(&mut out, "teams", "id, name, created_at", &rows);
    // Every fifth team is empty: no members, no licences, no resources.
    let empty = |team: usize| team.is_multiple_of(5);
    rows.clear();
    let mut members = std::collections::BTreeSet::new();
    for user in 1..=user_count {
        // Most users are in one or more teams; some in none.
        let memberships = random.below(4);
        for _ in 0..memberships {
            let team = 1 + random.below(teams as u64) as usize;
            if !empty(team) && members.insert((team, user)) {
                rows.push(format!(
                    "({team}, {user}, {})",
                    boolean(random.below(4) == 0)
                ));
            }
        }
    }
    inserts(
        &mut out,
        "team_members",
        "team_id, user_id, is_owner",
        &rows,
    );
    rows.clear();
    let mut licence = 0;
    for team in (1..=teams).filter(|team| !empty(*team)) {
        for product in ["panel", "backup"]
            .iter()
            .take(1 + random.below(2) as usize)
        {
            licence += 1;
            rows.push(format!(
                "({licence}, {team}, {}, {})",
                quote(product),
                1 + random.below(50)
            ));
        }
    }
    inserts(&mut out, "licences", "id, team_id, product, seats", &rows);
    let owner = |random: &mut Random| -> String {
        // A few resources belong to no team at all.
        let team = 1 + random.below(teams as u64) as usize;
        if empty(team) || random.below(20) == 0 {
            "NULL".to_owned()
        } else {
            team.to_string()
        }
    };
    rows.clear();
    let servers = teams * 2;
    for id in 1..=servers {
        rows.push(format!(
            "({id}, {}, {})",
            owner(&mut random),
            quote(&format!("srv{id}.example.test"))
        ));
    }
    inserts(&mut out, "servers", "id, team_id, hostname", &rows);
    rows.clear();
    let applications = teams * 3;
    for id in 1..=applications {
        rows.push(format!(
            "({id}, {}, {}, {})",
            owner(&mut random),
            1 + random.below(servers as u64),
            quote(&format!("app-{id} «prod»"))
        ));
    }
    inserts(
        &mut out,
        "applications",
        "id, team_id, server_id, name",
        &rows,
    );
    rows.clear();
    for id in 1..=teams * 2 {
        rows.push(format!(
            "({id}, {}, {}, {})",
            owner(&mut random),
            1 + random.below(applications as u64),
            quote(&format!("db_{id}"))
        ));
    }
    inserts(
        &mut out,
        "databases",
        "id, team_id, application_id, name",
        &rows,
    );
    out
}
