//! Real-browser tests' machinery, shared by the documentation pages (`docs`) and the account
//! pages (`account_pages`): Debian's `chromium` driven by playwright-core (`tests/browser/`,
//! pinned in its package-lock.json; playwright downloads no browser of its own).
//!
//! The first browser test of a run installs what is missing: chromium through
//! `tests/browser/install-chromium.sh` (as root; otherwise it fails saying how to install
//! it), and playwright-core with `npm ci` into the target directory. Nothing is skipped. The
//! driver scripts (`tests/browser/*.mjs`) share their launch flags and their watch for
//! other origins and browser errors in `tests/browser/chromium.mjs`. [`npm_ci`] and [`run`]
//! also install and build the TypeScript client for its tests (`typescript`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn browser_sources() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// Runs `cmd` to success, or panics with what it printed (`what` names it).
pub(crate) fn run(cmd: &mut Command, what: &str) {
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {:?}: {e}", cmd.get_program()));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Chromium installed and playwright-core unpacked next to the driver scripts; the
/// directory to run them in. Done once per test process; `npm ci` only when the lock file
/// changed.
fn browser_driver() -> &'static Path {
    static READY: OnceLock<PathBuf> = OnceLock::new();
    READY.get_or_init(|| {
        run(
            Command::new("bash").arg(browser_sources().join("install-chromium.sh")),
            "installing chromium (tests/browser/install-chromium.sh)",
        );
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
        std::fs::create_dir_all(&dir).unwrap();
        npm_ci(
            &browser_sources(),
            &dir,
            "npm ci for playwright-core (needs node and npm: apt-get install nodejs npm)",
        );
        // Copied every run: the scripts are ours and change with the tests.
        for entry in std::fs::read_dir(browser_sources()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "mjs") {
                std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
            }
        }
        dir
    })
}

/// Installs the `package.json` and `package-lock.json` of `sources` into `dir` with
/// `npm ci` (`what` names it in a failure), only when the lock file changed since the last
/// install there.
pub(crate) fn npm_ci(sources: &Path, dir: &Path, what: &str) {
    let lock = std::fs::read_to_string(sources.join("package-lock.json")).unwrap();
    let stamp = dir.join("package-lock.installed");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(lock.as_str()) {
        return;
    }
    for file in ["package.json", "package-lock.json"] {
        std::fs::copy(sources.join(file), dir.join(file)).unwrap();
    }
    run(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(dir),
        what,
    );
    std::fs::write(&stamp, lock).unwrap();
}

/// Runs the driver `script` (a file of `tests/browser/`) with `args` and `env`; its
/// standard output, or a panic with its report if it failed.
pub async fn drive(script: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tokio::task::spawn_blocking(browser_driver).await.unwrap();
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(script).args(args).current_dir(dir);
    for (name, value) in env {
        cmd.env(name, value);
    }
    let output = cmd.output().await.expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the browser check `{script} {}` failed:\n{stdout}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}
