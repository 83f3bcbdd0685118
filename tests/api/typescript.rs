//! The TypeScript client (`client/typescript`, `@jobpath/client`) under `cargo test`: its
//! generated types checked against `openapi.yaml`, its build (ESM with declarations), and
//! its Node tests against a real server. The reference page that uses it is tested in
//! `spa`.
//!
//! The package is copied into the target directory with the spec two levels above it, as
//! in the repository, so its own `npm run generate` and `npm run build` run unchanged;
//! `npm ci` installs its lockfile there, only when the lockfile changed (as the browser
//! tests install playwright-core). Needs `node` ≥ 20 and `npm`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use jobpath_server::cli::AdminCommand;

use crate::browser::{npm_ci, run};
use crate::helpers::{PASSWORD, spawn_app, test_config, unique_email};

fn sources() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../client/typescript")
}

/// The package, built, and the types `npm run generate` made from the current spec.
pub(crate) struct Package {
    pub(crate) dir: PathBuf,
    generated: String,
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        // A developer's own install and build stay where they are.
        if ["node_modules", "dist"]
            .map(std::ffi::OsString::from)
            .contains(&entry.file_name())
        {
            continue;
        }
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Installs, regenerates and builds the package once per test process.
fn package() -> &'static Package {
    static READY: OnceLock<Package> = OnceLock::new();
    READY.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("typescript");
        let dir = root.join("client/typescript");
        std::fs::create_dir_all(&dir).unwrap();
        npm_ci(
            &sources(),
            &dir,
            "npm ci in client/typescript (needs node >= 20 and npm)",
        );
        // Ours, and changing with the tests: copied afresh every run.
        for stale in ["src", "test", "examples", "dist"] {
            let _ = std::fs::remove_dir_all(dir.join(stale));
        }
        copy_tree(&sources(), &dir);
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi.yaml"),
            root.join("openapi.yaml"),
        )
        .unwrap();
        run(
            Command::new("npm")
                .args(["run", "--silent", "generate"])
                .current_dir(&dir),
            "npm run generate (openapi-typescript)",
        );
        let generated = std::fs::read_to_string(dir.join("src/generated/openapi.ts")).unwrap();
        run(
            Command::new("npm")
                .args(["run", "--silent", "build"])
                .current_dir(&dir),
            "npm run build (tsc)",
        );
        Package { dir, generated }
    })
}

/// The package, built (once per test process).
pub(crate) async fn built() -> &'static Package {
    tokio::task::spawn_blocking(package).await.unwrap()
}

#[tokio::test]
async fn the_committed_typescript_types_are_what_the_spec_generates_and_the_package_builds_to_esm()
{
    let package = built().await;
    let committed = std::fs::read_to_string(sources().join("src/generated/openapi.ts")).unwrap();
    assert!(
        committed == package.generated,
        "client/typescript/src/generated/openapi.ts is stale against openapi.yaml: run \
         `npm run generate` in client/typescript and commit the result"
    );
    let dist = package.dir.join("dist");
    for file in ["index.js", "index.d.ts", "session.d.ts", "errors.d.ts"] {
        assert!(dist.join(file).is_file(), "dist/{file} is built");
    }
    let index = std::fs::read_to_string(dist.join("index.js")).unwrap();
    assert!(
        index.contains("export {") && !index.contains("require("),
        "ESM, not CommonJS:\n{index}"
    );
    let types = std::fs::read_to_string(dist.join("index.d.ts")).unwrap();
    assert!(types.contains("ErrorCode") && types.contains("Session"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_client_passes_its_node_tests_against_the_real_server() {
    let package = built().await;
    let app = spawn_app().await;
    let admin = unique_email();
    app.signup(&admin, PASSWORD).await;
    jobpath_server::admin(&test_config(&app.db), &AdminCommand::Grant(admin.clone()))
        .await
        .expect("admin grant");
    // Named one by one: Node 20 takes no glob, and `test/` would run the helpers too.
    let mut files: Vec<_> = std::fs::read_dir(package.dir.join("test"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".test.mjs"))
        .map(|name| format!("test/{name}"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    let output = tokio::process::Command::new("node")
        .args(["--test", "--test-reporter=spec", "--test-concurrency=1"])
        .args(&files)
        .env("JOBPATH_API_URL", &app.base_url)
        .env("JOBPATH_ADMIN_EMAIL", &admin)
        .env("JOBPATH_ADMIN_PASSWORD", PASSWORD)
        .current_dir(&package.dir)
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "node --test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("ℹ fail 0"), "{stdout}");
}
