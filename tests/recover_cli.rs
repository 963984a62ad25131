//! `rewind recover` on a ledger a process left unfinished: a chmod step
//! whose first effect took place, whose second never did and whose third
//! path someone changed since. Recovery records the second as never
//! happened and the third as drift (exit 3), closes the step and the run
//! as interrupted, and the rollback then undoes only what took place.
//! While another rewind holds the ledger, the run is running, and
//! recovery waits for it.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use insta::assert_snapshot;
use rewind_ledger::{
    Digest, Event, Ledger, ModeChanged, Origin, RunStarted, StepStarted, Timestamp,
};
use rewind_tests::{NOW, TestEnv};

fn origin() -> Origin {
    Origin {
        actor: "tester@testhost".into(),
        host: "testhost".into(),
    }
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Files a, b and c under `[TEMP]/srv`, and run r1 of a chmod to 0600 of
/// all three, recorded ahead and left unfinished: a was changed, b never
/// was, c was set to 0700 by someone else.
fn interrupted_chmod() -> TestEnv {
    let env = TestEnv::with_ledger();
    let root = env.root().join("srv");
    std::fs::create_dir(&root).unwrap();
    let mut ledger = Ledger::open(&env.ledger, origin()).unwrap();
    let now: Timestamp = NOW.parse().unwrap();
    ledger.set_clock(move || now);
    let run = Some("r1");
    ledger
        .append(
            run,
            Event::RunStarted(RunStarted {
                description: String::new(),
                spec_id: "modes".into(),
                spec_path: "modes.toml".into(),
                spec_sha256: Digest::of(b"spec"),
                spec_text: "[migration]".into(),
                target: None,
                vars: BTreeMap::new(),
            }),
        )
        .unwrap();
    ledger
        .append(
            run,
            Event::StepStarted(StepStarted {
                kind: "chmod".into(),
                operation: "chmod 0600 srv/*".into(),
                params: BTreeMap::new(),
                step: 1,
            }),
        )
        .unwrap();
    for (name, now) in [("a", 0o600), ("b", 0o644), ("c", 0o700)] {
        let path = root.join(name);
        std::fs::write(&path, name).unwrap();
        set_mode(&path, now);
        ledger
            .append(
                run,
                Event::ModeChanged(ModeChanged {
                    new: 0o600,
                    old: 0o644,
                    path: path.display().to_string(),
                    step: 1,
                }),
            )
            .unwrap();
    }
    env
}

#[test]
fn recover_records_effects_that_never_happened_and_drift() {
    let env = interrupted_chmod();
    let root = env.root().join("srv");
    assert_snapshot!(env.snapshot(&["status"]), @r"
    exit: 0
    ----- stdout -----
    RUN  SPEC   TARGET  STATE                               STEPS  UNDONE  STARTED
    r1   modes  -       interrupted (run `rewind recover`)  0/1    0/3     2026-01-02 03:04:05
    ----- stderr -----
    ");
    let head = env.run(&["verify"]).stdout;
    assert_snapshot!(env.snapshot(&["recover", "--dry-run"]), @r"
    exit: 3
    ----- stdout -----
    would recover run r1: step 1 (chmod) interrupted; 1 recorded effect(s) done, 1 never done, 1 drifted
    SEQ  PATH                   DIFFERS  EXPECTED  FOUND
    5    [TEMP]/srv/c  mode     0600      0700
    ----- stderr -----
    note: dry run: nothing was changed
    error: the world matches neither what 1 recorded effect(s) left behind nor what was there before
    hint: `rewind recover` records the drift as DriftFound and the runs as interrupted
    ");
    assert_eq!(
        env.run(&["verify"]).stdout,
        head,
        "a dry run appends nothing"
    );
    assert_snapshot!(env.snapshot(&["recover"]), @r"
    exit: 3
    ----- stdout -----
    recovered run r1: step 1 (chmod) interrupted; 1 recorded effect(s) done, 1 never done, 1 drifted
    SEQ  PATH                   DIFFERS  EXPECTED  FOUND
    5    [TEMP]/srv/c  mode     0600      0700
    ----- stderr -----
    error: the world matches neither what 1 recorded effect(s) left behind nor what was there before
    hint: the drift is recorded as DriftFound; put the paths or rows back as expected, then `rewind rollback RUN` undoes the rest
    ");
    assert_snapshot!(env.snapshot(&["status", "r1"]), @r"
    exit: 0
    ----- stdout -----
    run r1 of modes on -: interrupted
    started 2026-01-02T03:04:05.000000Z by tester@testhost, seqs 1–9, 2 effect(s), 0 undone (1 recorded effect(s) found never to have happened)
    1 row(s) or path(s) found changed since and left alone by a rollback or recovery (`rewind history --kind DriftFound --run r1`)
    error: step 1 (chmod) interrupted: the process died during the step (chmod 0600 srv/*); recovery found 1 recorded effect(s) done and 1 never done, and 1 drifted
    STEP  KIND   STATE        UNDONE  DETAIL
    1     chmod  interrupted  0/2     interrupted: the process died during the step (chmod 0600 srv/*); recovery found 1 recorded effect(s) done and 1 never done, and 1 drifted
    ----- stderr -----
    ");
    let b = root.join("b").display().to_string();
    assert_snapshot!(env.snapshot(&["history", "--path", &b]), @r"
    exit: 0
    ----- stdout -----
    SEQ  RECORDED AT          ACTOR            RUN  EVENT
    4    2026-01-02 03:04:05  tester@testhost  r1   mode of [TEMP]/srv/b 0644 → 0600
    6    2026-01-02 03:04:05  tester@testhost  r1   the effect of seq 4 never happened: [TEMP]/srv/b still has mode 0644
    ----- stderr -----
    ");
    // c is put back as the event left it; the rollback undoes a and c.
    set_mode(&root.join("c"), 0o600);
    assert_snapshot!(env.snapshot(&["rollback", "r1", "--yes"]), @r"
    exit: 0
    ----- stdout -----
    rolled back run r1: 2 inverse(s) applied, 0 drifted, outcome succeeded
    ----- stderr -----
    undid seq 5 ModeChanged [TEMP]/srv/c
    undid seq 3 ModeChanged [TEMP]/srv/a
    ");
    for name in ["a", "b", "c"] {
        assert_eq!(mode_of(&root.join(name)), 0o644, "{name}");
    }
    assert_snapshot!(env.snapshot(&["status"]), @r"
    exit: 0
    ----- stdout -----
    RUN  SPEC   TARGET  STATE        STEPS  UNDONE  STARTED
    r1   modes  -       rolled back  1/1    2/2     2026-01-02 03:04:05
    ----- stderr -----
    ");
}

#[test]
fn a_run_of_a_rewind_that_holds_the_ledger_is_running_and_not_recovered() {
    let env = interrupted_chmod();
    let holder = Ledger::open(&env.ledger, origin()).unwrap();
    assert_snapshot!(env.snapshot(&["status"]), @r"
    exit: 0
    ----- stdout -----
    RUN  SPEC   TARGET  STATE    STEPS  UNDONE  STARTED
    r1   modes  -       running  0/1    0/3     2026-01-02 03:04:05
    ----- stderr -----
    note: the ledger is held by another rewind (pid [PID]); answering from its journal (up to seq 5)
    ");
    assert_snapshot!(env.snapshot(&["recover"]), @r"
    exit: 1
    ----- stdout -----
    ----- stderr -----
    error: the ledger at [TEMP]/ledger is held by another rewind (pid [PID])
    hint: wait for the other rewind (pid [PID]) to finish; history, show and verify still answer from its journal meanwhile
    ");
    drop(holder);
    assert_eq!(env.run(&["recover"]).code, 3);
}

#[test]
fn apply_recovers_a_dead_run_first_and_says_so() {
    let env = interrupted_chmod();
    let spec = env.root().join("mkdir.toml");
    std::fs::write(
        &spec,
        "[migration]\nid = \"made\"\n[vars]\nroot = { required = true }\n[[step]]\nkind = \"mkdir\"\npath = \"{root}/made\"\n",
    )
    .unwrap();
    let target = format!("root={}", env.root().join("srv").display());
    assert_snapshot!(
        env.snapshot(&["apply", spec.to_str().unwrap(), "--target", &target, "--yes"]),
        @r"
    exit: 0
    ----- stdout -----
    TARGET                    RUN  OUTCOME    STEPS  ERROR
    root=[TEMP]/srv  r10  succeeded  1/1
    ----- stderr -----
    note: recovered what a rewind that died left unfinished, recording it interrupted: run r1 (step 1, 1 effect(s) never happened); `rewind status` shows it
    warning: recovery found drift at seq 5: [TEMP]/srv/c: mode (expected 0600, found 0700)
    r10 step 1 mkdir: create directory [TEMP]/srv/made (0755)
    r10 step 1 done: created 1 directory(ies)
    "
    );
    assert_snapshot!(env.snapshot(&["status"]), @r"
    exit: 0
    ----- stdout -----
    RUN  SPEC   TARGET                    STATE        STEPS  UNDONE  STARTED
    r1   modes  -                         interrupted  0/1    0/2     2026-01-02 03:04:05
    r10  made   root=[TEMP]/srv  migrated     1/1    0/1     2026-01-02 03:04:05
    ----- stderr -----
    ");
}

#[test]
fn recover_help() {
    assert_snapshot!(
        "recover_help",
        TestEnv::new().snapshot(&["recover", "--help"])
    );
}

/// A rollback that died is closed before recovery records any drift of an
/// open run, so that history never reads that drift as one the rollback
/// met (and, had it skipped drift, the event's other rows as restored).
#[test]
fn recover_closes_a_dead_rollback_before_it_records_drift() {
    use rewind_ledger::{RollbackStarted, RollbackTarget};
    let env = interrupted_chmod();
    {
        let mut ledger = Ledger::open(&env.ledger, origin()).unwrap();
        ledger
            .append(
                None,
                Event::RollbackStarted(RollbackStarted {
                    cascade: false,
                    skip_drift: true,
                    target: RollbackTarget::Run("r0".into()),
                }),
            )
            .unwrap();
    }
    let recovered = env.run(&["recover"]);
    assert_eq!(recovered.code, 3, "{recovered:?}");
    let seqs = |kind: &str| crate::ledger_cli::history_seqs(&env, &["--kind", kind]);
    let (finished, drift) = (seqs("RollbackFinished"), seqs("DriftFound"));
    assert_eq!(
        (finished.len(), drift.len()),
        (1, 1),
        "{finished:?} {drift:?}"
    );
    assert!(finished[0] < drift[0], "{finished:?} {drift:?}");
}
