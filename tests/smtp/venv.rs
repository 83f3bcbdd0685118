//! The Python environment of the SMTP server: a virtualenv holding exactly
//! `tests/mail/requirements.txt`, made on first use and reused while that file is unchanged.
//!
//! It lives under the target directory (`$CARGO_TARGET_DIR/test-tools/smtp-venv` when that
//! variable is set at run time, else `<repo>/target/test-tools/smtp-venv`), so that a
//! `cargo clean` removes it and every worktree with a target of its own has one of its own.
//! Test binaries run in parallel, and every test that starts a server asks for it at once,
//! so the install runs under an exclusive `flock(1)` on a file beside the venv: the first
//! installs, the others wait and then find the stamp. The stamp — a copy of the
//! requirements — is written last, so an interrupted install is redone, never trusted.
//!
//! There is no skip: python3 is on every machine of this project and PyPI reachable, so a
//! failed install fails the test, with pip's output.

use std::path::{Path, PathBuf};

/// The installer, run under the lock as `sh -c SCRIPT sh VENV REQUIREMENTS`. It checks the
/// stamp again: a waiter for the lock usually finds the install done by the holder.
const INSTALL: &str = r#"set -e
venv="$1"; requirements="$2"
if cmp -s "$requirements" "$venv/requirements.installed"; then exit 0; fi
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
cp "$requirements" "$venv/requirements.installed"
"#;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `tests/mail/smtp_server.py`.
pub(super) fn server_script() -> PathBuf {
    repo_root().join("tests/mail/smtp_server.py")
}

/// Where the venv lives; see the module documentation.
fn location(cargo_target_dir: Option<&std::ffi::OsStr>) -> PathBuf {
    let target = match cargo_target_dir {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => repo_root().join("target"),
    };
    target.join("test-tools/smtp-venv")
}

/// The venv's `python`, after installing the requirements if the venv lacks them.
pub(super) async fn python() -> PathBuf {
    let venv = location(std::env::var_os("CARGO_TARGET_DIR").as_deref());
    let requirements = repo_root().join("tests/mail/requirements.txt");
    let python = venv.join("bin/python");
    let wanted = std::fs::read(&requirements)
        .unwrap_or_else(|e| panic!("reading {}: {e}", requirements.display()));
    // The common case, without waiting for the lock of a concurrent install.
    if std::fs::read(venv.join("requirements.installed")).ok() == Some(wanted) {
        return python;
    }
    let parent = venv.parent().unwrap();
    std::fs::create_dir_all(parent)
        .unwrap_or_else(|e| panic!("creating {}: {e}", parent.display()));
    let output = tokio::process::Command::new("flock")
        .arg(parent.join("smtp-venv.lock"))
        .args(["sh", "-c", INSTALL, "sh"])
        .arg(&venv)
        .arg(&requirements)
        .output()
        .await
        .unwrap_or_else(|e| panic!("running flock(1) to install the SMTP server's venv: {e}"));
    assert!(
        output.status.success(),
        "installing {} into {} failed ({}):\n{}\n{}",
        requirements.display(),
        venv.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    python
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn the_venv_follows_cargo_target_dir_when_it_is_set() {
        assert_eq!(
            location(Some(OsStr::new("/elsewhere"))),
            Path::new("/elsewhere/test-tools/smtp-venv")
        );
        assert_eq!(
            location(None),
            repo_root().join("target/test-tools/smtp-venv")
        );
        assert_eq!(location(Some(OsStr::new(""))), location(None));
    }
}
