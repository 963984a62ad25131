//! Bad input that needs a real process: a disk that fills up during a
//! backup (a 64 KiB tmpfs mounted in a private user and mount namespace by
//! `unshare`), and a directory the backup cannot read (as an unprivileged
//! user: `setpriv` drops to nobody when the tests run as root). Each checks
//! that the target tree is unchanged. Both need util-linux and user
//! namespaces, as on any current Linux.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use rewind_migrations::tree::manifest;

const REWIND: &str = env!("CARGO_BIN_EXE_rewind");

const SPEC: &str = r#"
[migration]
id = "backup-only"
[vars]
root = { required = true }
[[step]]
kind = "backup"
path = "{root}"
exclude = [".archive"]
into = "{root}/.archive"
[[step]]
kind = "remove"
path = "{root}/web"
"#;

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

#[test]
fn disk_full_during_backup_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().canonicalize().unwrap();
    let vhost = base.join("example.com");
    rewind_migrations::fixtures::build_vhost(&vhost).unwrap();
    // 1 MiB that does not compress, so the archive cannot fit in 64 KiB.
    let mut noise = Vec::with_capacity(1 << 20);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..(1 << 17) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(vhost.join("web/video.bin"), noise).unwrap();
    std::fs::create_dir(vhost.join(".archive")).unwrap();
    std::fs::write(base.join("spec.toml"), SPEC).unwrap();
    let ledger = base.join("ledger");
    let init = Command::new(REWIND)
        .arg("--ledger")
        .arg(&ledger)
        .arg("init")
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    let before = manifest(&vhost).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=64k tmpfs '{archive}' && exec '{REWIND}' --ledger '{ledger}' apply '{spec}' --target 'root={root}' --yes",
        archive = vhost.join(".archive").display(),
        ledger = ledger.display(),
        spec = base.join("spec.toml").display(),
        root = vhost.display(),
    );
    let output = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .env("REWIND_RUN_IDS", "sequential")
        .output()
        .expect("unshare (util-linux) runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(stderr.contains("r1 step 1 FAILED"), "{stderr}");
    assert_eq!(
        before.diff(&manifest(&vhost).unwrap()),
        vec![],
        "the tree changed"
    );
    assert!(vhost.join("web/index.html").exists(), "step 2 never ran");
}

#[test]
fn backup_of_an_unreadable_dir_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().canonicalize().unwrap();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o777)).unwrap();
    let vhost = base.join("example.com");
    rewind_migrations::fixtures::build_vhost(&vhost).unwrap();
    std::fs::create_dir(vhost.join(".archive")).unwrap();
    std::fs::set_permissions(
        vhost.join(".archive"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    // Only its owner may read this one.
    std::fs::set_permissions(vhost.join(".ssh"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(base.join("spec.toml"), SPEC).unwrap();
    let ledger = base.join("ledger");
    let rewind = |args: &[&str]| {
        let mut command = if is_root() {
            let mut command = Command::new("setpriv");
            command.args(["--reuid=65534", "--regid=65534", "--clear-groups", REWIND]);
            command
        } else {
            // Unprivileged already: make the directory unreadable to us.
            std::fs::set_permissions(vhost.join(".ssh"), std::fs::Permissions::from_mode(0o000))
                .unwrap();
            Command::new(REWIND)
        };
        command
            .arg("--ledger")
            .arg(&ledger)
            .args(args)
            .env("REWIND_RUN_IDS", "sequential");
        command.output().expect("rewind runs")
    };
    let init = rewind(&["init"]);
    assert!(init.status.success(), "{init:?}");
    let before = manifest(&vhost).unwrap();
    let spec = base.join("spec.toml").display().to_string();
    let target = format!("root={}", vhost.display());
    let output = rewind(&["apply", &spec, "--target", &target, "--yes"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Permission denied"), "{stderr}");
    assert!(
        stderr.contains(".ssh"),
        "the message names the path: {stderr}"
    );
    if !is_root() {
        std::fs::set_permissions(vhost.join(".ssh"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
    }
    assert_eq!(
        before.diff(&manifest(&vhost).unwrap()),
        vec![],
        "the tree changed"
    );
    assert_eq!(
        std::fs::read_dir(vhost.join(".archive")).unwrap().count(),
        0
    );
    let _ = Path::new(&ledger);
}
