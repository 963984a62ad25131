//! Properties of the file steps over random trees (names with spaces and
//! unicode, symlinks, empty directories, modes 600–777, small files) and
//! random sequences of steps:
//!
//! - apply then roll back restores a manifest identical in path, type,
//!   mode, owner, content sha256 and symlink target;
//! - drift introduced after the apply is reported, the rollback stops
//!   before touching the drifted item, and nothing older is undone.

mod harness;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use harness::{Harness, run};
use proptest::prelude::*;
use rewind_ledger::{Event, Outcome, Subject};
use rewind_migrations::undo::OnDrift;

const NAMES: &[&str] = &[
    "a",
    "b b",
    "ü",
    "日本",
    "x.txt",
    "dir one",
    "café ☕",
    ".hidden",
    "z-z",
];

#[derive(Debug, Clone)]
struct Entry {
    parent: usize,
    name: usize,
    kind: u8,
    mode: u32,
    size: usize,
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        0..8usize,
        0..NAMES.len(),
        0..4u8,
        0o600..=0o777u32,
        prop_oneof![16 => 0..300usize, 3 => 0..70_000usize, 1 => 0..=1_048_576usize],
    )
        .prop_map(|(parent, name, kind, mode, size)| Entry {
            parent,
            name,
            kind,
            mode,
            size,
        })
}

/// Builds the tree; returns the relative paths of everything and of the dirs.
fn build(root: &Path, entries: &[Entry]) -> (Vec<String>, Vec<String>) {
    let mut dirs = vec![String::new()];
    let mut all = Vec::new();
    for (index, e) in entries.iter().enumerate() {
        let parent = dirs[e.parent % dirs.len()].clone();
        let name = format!("{}{index}", NAMES[e.name]);
        let relative = if parent.is_empty() {
            name
        } else {
            format!("{parent}/{name}")
        };
        let path = root.join(&relative);
        match e.kind {
            0 => {
                let content: Vec<u8> = (0..e.size).map(|i| (i * 31 + index) as u8).collect();
                std::fs::write(&path, content).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(e.mode)).unwrap();
            }
            1 | 3 => {
                std::fs::create_dir(&path).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(e.mode | 0o700))
                    .unwrap();
                if e.kind == 1 {
                    dirs.push(relative.clone());
                }
            }
            _ => {
                let target = all.last().cloned().unwrap_or_else(|| "nowhere".to_string());
                std::os::unix::fs::symlink(target, &path).unwrap();
            }
        }
        all.push(relative);
    }
    (all, dirs)
}

#[derive(Debug, Clone)]
struct StepChoice {
    kind: u8,
    a: usize,
    b: usize,
    mode: u32,
}

fn step_choice() -> impl Strategy<Value = StepChoice> {
    (0..9u8, any::<usize>(), any::<usize>(), 0o600..=0o777u32)
        .prop_map(|(kind, a, b, mode)| StepChoice { kind, a, b, mode })
}

fn quote(relative: &str) -> String {
    let text = if relative.is_empty() {
        "{root}".to_string()
    } else {
        format!("{{root}}/{relative}")
    };
    serde_json::to_string(&text).unwrap()
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// The TOML of one step, or `None` when the choice does not fit the tree.
fn step_toml(choice: &StepChoice, index: usize, all: &[String], dirs: &[String]) -> Option<String> {
    if all.is_empty() {
        return None;
    }
    let path = &all[choice.a % all.len()];
    let dir = &dirs[choice.b % dirs.len()];
    Some(match choice.kind {
        0 => format!(
            "kind = \"move\"\nfrom = {}\nto = {}\n",
            quote(path),
            quote(&join(dir, &format!("mv{index} ü")))
        ),
        1 => format!(
            "kind = \"move\"\nfrom = {}\nto = {}\n",
            quote(&format!("{}/*", &dirs[choice.a % dirs.len()])).replace("{root}//*", "{root}/*"),
            quote(&format!("{}/", join(dir, &format!("kids {index}"))))
        ),
        2 => {
            if choice.b.is_multiple_of(2) {
                format!(
                    "kind = \"chmod\"\npath = {}\nmode = \"{:04o}\"\n",
                    quote(path),
                    choice.mode
                )
            } else {
                format!(
                    "kind = \"chmod\"\npath = {}\nrecursive = true\ndirs = \"{:04o}\"\nfiles = \"{:04o}\"\n",
                    quote(path),
                    choice.mode | 0o700,
                    choice.mode
                )
            }
        }
        3 => format!(
            "kind = \"mkdir\"\npath = {}\nmode = \"{:04o}\"\n",
            quote(&join(dir, &format!("new {index}/deep"))),
            choice.mode | 0o700
        ),
        4 => {
            let target = if choice.b.is_multiple_of(2) {
                path.clone()
            } else {
                join(dir, &format!("w{index}.txt"))
            };
            format!(
                "kind = \"write\"\npath = {}\ncontent = \"content {}\\n\"\n",
                quote(&target),
                choice.b % 1000
            )
        }
        5 => format!("kind = \"remove\"\npath = {}\n", quote(path)),
        7 => format!(
            "kind = \"backup\"\npath = {}\ninto = {}\n",
            quote(dir),
            quote(&join(dir, &format!(".backups {index}/copies")))
        ),
        8 => "kind = \"exec\"\nargv = [\"true\"]\nundo = [\"true\"]\ntimeout = 5\n".to_string(),
        _ => {
            if !rewind_migrations::steps::archive::is_root() {
                return None;
            }
            format!(
                "kind = \"chown\"\npath = {}\nuser = \"1\"\ngroup = \"2\"\nrecursive = {}\n",
                quote(path),
                choice.b.is_multiple_of(2)
            )
        }
    })
}

const HEAD: &str = "[migration]\nid = \"prop\"\n[vars]\nroot = { required = true }\n";

/// Keeps the steps that plan (in the world as earlier kept steps leave it).
fn spec_for(h: &Harness, choices: &[StepChoice], all: &[String], dirs: &[String]) -> String {
    let mut kept: Vec<String> = Vec::new();
    for (index, choice) in choices.iter().enumerate() {
        let Some(step) = step_toml(choice, index, all, dirs) else {
            continue;
        };
        let mut candidate = kept.clone();
        candidate.push(step);
        let text = format!(
            "{HEAD}{}",
            candidate
                .iter()
                .map(|s| format!("[[step]]\n{s}"))
                .collect::<String>()
        );
        let Ok(spec) = rewind_migrations::spec::Spec::parse("prop.toml", &text) else {
            continue;
        };
        let Ok(resolved) = spec.resolve(&h.vars()) else {
            continue;
        };
        if rewind_migrations::plan::plan(&resolved).is_ok() {
            kept = candidate;
        }
    }
    format!(
        "{HEAD}{}",
        kept.iter()
            .map(|s| format!("[[step]]\n{s}"))
            .collect::<String>()
    )
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn apply_then_rollback_restores_an_identical_tree(
        entries in prop::collection::vec(entry(), 1..18),
        choices in prop::collection::vec(step_choice(), 1..8),
    ) {
        let mut h = Harness::new();
        let (all, dirs) = build(&h.root, &entries);
        let before = h.manifest();
        let spec = spec_for(&h, &choices, &all, &dirs);
        let report = h.apply(&spec).unwrap();
        prop_assert_eq!(report.outcome, Outcome::Succeeded, "{:#?}\n{}", report, spec);
        match h.rollback(run(1), false, OnDrift::Stop) {
            Ok(rolled) => prop_assert_eq!(rolled.outcome, Outcome::Succeeded, "{:#?}\n{}", rolled, spec),
            Err(refusal) => prop_assert!(
                matches!(refusal, rewind_projections::inverse::PlanRefusal::NothingToUndo { .. }),
                "{refusal}"
            ),
        }
        let differences = before.diff(&h.manifest());
        prop_assert!(differences.is_empty(), "{:?}\n{}", differences, spec);
    }

    #[test]
    fn drift_is_reported_and_nothing_older_is_touched(
        entries in prop::collection::vec(entry(), 1..18),
        choices in prop::collection::vec(step_choice(), 1..8),
        pick in any::<usize>(),
    ) {
        let mut h = Harness::new();
        let (all, dirs) = build(&h.root, &entries);
        let spec = spec_for(&h, &choices, &all, &dirs);
        h.apply(&spec).unwrap();
        let Ok(items) = h.plan_rollback(&run(1), false) else {
            return Ok(());
        };
        // Items whose path is where the event left it, so that drift can be
        // made there, and such that no newer item names that path or one
        // above it: a newer inverse could then remove or move what carries
        // the drift (a directory a later move created where the item's path
        // was) before the item's turn comes.
        let drifted_path = |event: &Event| match event {
            Event::PathMoved(e) => Some(e.to.clone()),
            Event::ModeChanged(e) => Some(e.path.clone()),
            Event::FileWritten(e) => Some(e.path.clone()),
            Event::DirCreated(e) => Some(e.path.clone()),
            Event::PathRemoved(e) => Some(e.path.clone()),
            Event::OwnerChanged(e) => Some(e.path.clone()),
            _ => None,
        };
        // `other` is `path` or one of the directories above it.
        let overlaps = |path: &str, other: &str| path == other || path.starts_with(&format!("{other}/"));
        let untouched_by_newer = |index: usize| {
            let Some(path) = drifted_path(&items[index].event) else {
                return false;
            };
            items[..index].iter().all(|newer| {
                newer.event.subjects().iter().all(|subject| match subject {
                    Subject::Path(other) => !overlaps(&path, other),
                    Subject::Row(..) => true,
                })
            })
        };
        let candidates: Vec<_> = items
            .iter()
            .enumerate()
            .filter(|(index, _)| untouched_by_newer(*index))
            .map(|(_, item)| item)
            .filter(|item| match &item.event {
                Event::PathMoved(e) => std::fs::symlink_metadata(&e.to).is_ok(),
                Event::ModeChanged(e) => std::fs::symlink_metadata(&e.path).is_ok(),
                Event::FileWritten(e) => Path::new(&e.path).is_file(),
                Event::DirCreated(e) => Path::new(&e.path).is_dir(),
                Event::PathRemoved(e) => {
                    std::fs::symlink_metadata(&e.path).is_err() && Path::new(&e.path).parent().is_some_and(Path::is_dir)
                }
                Event::OwnerChanged(e) => std::fs::symlink_metadata(&e.path).is_ok(),
                _ => false,
            })
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let chosen = candidates[pick % candidates.len()];
        let stray = "rewind-proptest-stray";
        match &chosen.event {
            Event::PathMoved(e) => {
                let to = Path::new(&e.to);
                let metadata = std::fs::symlink_metadata(to).unwrap();
                if metadata.is_dir() {
                    std::fs::write(to.join(stray), "stray").unwrap();
                } else if metadata.is_file() {
                    let mut content = std::fs::read(to).unwrap();
                    content.extend_from_slice(b"drift");
                    std::fs::write(to, content).unwrap();
                } else {
                    std::fs::remove_file(to).unwrap();
                    std::os::unix::fs::symlink("elsewhere", to).unwrap();
                }
            }
            Event::ModeChanged(e) => {
                // Neither the new mode nor the old one (that would be an undo).
                let drifted = [0o001, 0o002, 0o004].map(|bit| e.new ^ bit).into_iter().find(|m| *m != e.old).unwrap();
                std::fs::set_permissions(&e.path, std::fs::Permissions::from_mode(drifted)).unwrap();
            }
            Event::FileWritten(e) => {
                let mut content = std::fs::read(&e.path).unwrap();
                content.extend_from_slice(b"drift");
                std::fs::write(&e.path, content).unwrap();
            }
            Event::DirCreated(e) => std::fs::write(Path::new(&e.path).join(stray), "stray").unwrap(),
            Event::PathRemoved(e) => std::fs::write(&e.path, "in the way").unwrap(),
            Event::OwnerChanged(e) => {
                std::os::unix::fs::lchown(&e.path, Some(e.new_uid + 7), None).unwrap();
            }
            _ => unreachable!(),
        }
        let report = h.rollback(run(1), false, OnDrift::Stop).unwrap();
        prop_assert_eq!(report.outcome, Outcome::Drifted, "{:#?}\n{}", report, spec);
        prop_assert_eq!(report.drifted.len(), 1);
        let drift_seq = report.drifted[0].seq;
        prop_assert!(drift_seq >= chosen.seq, "drift at {} before the change at {}", drift_seq, chosen.seq);
        let undone: BTreeSet<u64> = h
            .entries()
            .iter()
            .filter_map(|e| match &e.record.event {
                Event::Compensated(c) => Some(c.undoes),
                _ => None,
            })
            .collect();
        let expected: BTreeSet<u64> = items.iter().map(|i| i.seq).filter(|seq| *seq > drift_seq).collect();
        prop_assert_eq!(undone, expected, "exactly the items newer than the drift are undone");
    }
}
