//! Realistic trees for `rewind demo`, tests and benchmarks: a NetServa
//! 1.0-style vhost with the awkward parts real ones have (names with
//! spaces and unicode, a symlink, an empty directory, mixed modes).

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
