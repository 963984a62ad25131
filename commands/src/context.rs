//! What every subcommand needs: the ledger directory, who is acting, the
//! clock, and the printer. The only place that reads the environment.

use std::path::PathBuf;

use chrono::{NaiveDate, NaiveTime, TimeZone, Utc};
use rewind_ledger::{Ledger, Origin, Timestamp, View};

use crate::Env;
use crate::cli::GlobalArgs;
use crate::error::{CliError, CliResult};
use crate::printer::Printer;

pub struct Ctx {
    pub ledger_dir: PathBuf,
    pub origin: Origin,
    /// A pinned clock (`REWIND_NOW`), for tests and reproducible demos.
    pub now: Option<Timestamp>,
    pub printer: Printer,
    /// A pinned id for `init` (`REWIND_LEDGER_ID`), for tests.
    pub ledger_id: Option<String>,
    /// Run ids `r<N>` numbered from the ledger's head instead of random
    /// (`REWIND_RUN_IDS=sequential`), for tests and reproducible demos.
    pub sequential_run_ids: bool,
}

/// The name of the current user from /etc/passwd, when USER is not set.
fn user_name() -> String {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix("Uid:")
                    .and_then(|rest| rest.split_whitespace().next().map(str::to_owned))
            })
        });
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    uid.and_then(|uid| {
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.len() > 2 && fields[2] == uid).then(|| fields[0].to_owned())
        })
    })
    .unwrap_or_else(|| "unknown".into())
}

fn host_name(env: &Env) -> String {
    if let Some(host) = env.get("REWIND_HOST") {
        return host.to_owned();
    }
    for path in ["/proc/sys/kernel/hostname", "/etc/hostname"] {
        if let Ok(name) = std::fs::read_to_string(path) {
            let name = name.trim();
            if !name.is_empty() {
                return name.to_owned();
            }
        }
    }
    "localhost".into()
}

impl Ctx {
    /// Gathers the settings; on error hands the printer back to report it.
    pub fn new(
        global: &GlobalArgs,
        env: &Env,
        printer: Printer,
    ) -> Result<Ctx, (CliError, Printer)> {
        let host = host_name(env);
        let actor = match &global.actor {
            Some(actor) => actor.clone(),
            None => {
                let user = env
                    .get("USER")
                    .or_else(|| env.get("LOGNAME"))
                    .map(str::to_owned)
                    .unwrap_or_else(user_name);
                format!("{user}@{host}")
            }
        };
        let now = match env.get("REWIND_NOW") {
            Some(text) => match text.parse() {
                Ok(now) => Some(now),
                Err(error) => {
                    let error = CliError::usage(format!(
                        "REWIND_NOW={text:?} is not an RFC 3339 time: {error}"
                    ))
                    .hint("set it like REWIND_NOW=2026-01-01T00:00:00Z, or unset it");
                    return Err((error, printer));
                }
            },
            None => None,
        };
        Ok(Ctx {
            ledger_dir: global.ledger.clone(),
            origin: Origin { actor, host },
            now,
            printer,
            ledger_id: env.get("REWIND_LEDGER_ID").map(str::to_owned),
            sequential_run_ids: env.get("REWIND_RUN_IDS") == Some("sequential"),
        })
    }

    fn pin(&self, ledger: &mut Ledger) {
        if let Some(now) = self.now {
            ledger.set_clock(move || now);
        }
    }

    /// Opens the ledger as its one writer.
    pub fn open_write(&mut self) -> CliResult<Ledger> {
        let mut ledger = Ledger::open(&self.ledger_dir, self.origin.clone())?;
        self.pin(&mut ledger);
        self.report_catch_up(&ledger);
        Ok(ledger)
    }

    /// Creates a ledger.
    pub fn init(&mut self, ledger_id: &str) -> CliResult<Ledger> {
        let mut ledger = Ledger::init(&self.ledger_dir, ledger_id, self.origin.clone())?;
        self.pin(&mut ledger);
        Ok(ledger)
    }

    /// Opens the ledger for reading: the store, or the journal while another
    /// rewind holds the ledger.
    pub fn open_read(&mut self) -> CliResult<View> {
        let view = View::open(&self.ledger_dir, self.origin.clone())?;
        match &view {
            View::Store(ledger) => self.report_catch_up(ledger),
            View::Journal(_, holder) => {
                let (head, _) = view.head();
                self.printer.note(&format!(
                    "the ledger is held by another rewind{}; answering from its journal (up to seq {head})",
                    holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
                ));
            }
        }
        Ok(view)
    }

    fn report_catch_up(&mut self, ledger: &Ledger) {
        if ledger.caught_up() > 0 {
            self.printer.note(&format!(
                "took over {} journalled event(s) the store had not received (an earlier process stopped mid-write)",
                ledger.caught_up()
            ));
        }
        // A few events are indexed on many opens (after a crash); a large
        // number means the whole index was rebuilt, which took a while.
        if ledger.indexed_on_open() >= 10_000 {
            self.printer.note(&format!(
                "indexed {} event(s) on opening the ledger (its index was behind, or of an older layout)",
                ledger.indexed_on_open()
            ));
        }
    }
}

/// Parses a time filter: RFC 3339, or a date (the start of that day, or its
/// end when `end_of_day`).
pub fn parse_time(flag: &str, text: &str, end_of_day: bool) -> CliResult<Timestamp> {
    if let Ok(time) = text.parse::<Timestamp>() {
        return Ok(time);
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let time = if end_of_day {
            NaiveTime::from_hms_micro_opt(23, 59, 59, 999_999).expect("valid time")
        } else {
            NaiveTime::MIN
        };
        return Ok(Timestamp::new(Utc.from_utc_datetime(&date.and_time(time))));
    }
    Err(
        CliError::usage(format!("{flag} {text:?} is not a time")).hint(format!(
            "use RFC 3339 like {flag} 2026-11-21T09:30:00Z, or a date like {flag} 2026-11-21"
        )),
    )
}

/// Parses `--since` (start of a day when a date) and `--until` (end of a day).
pub fn parse_window(
    since: Option<&str>,
    until: Option<&str>,
) -> CliResult<(Option<Timestamp>, Option<Timestamp>)> {
    Ok((
        since
            .map(|text| parse_time("--since", text, false))
            .transpose()?,
        until
            .map(|text| parse_time("--until", text, true))
            .transpose()?,
    ))
}
