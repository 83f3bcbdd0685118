//! The interactive documentation: served correctly, and working in a real browser.
//!
//! The browser tests drive Debian's `chromium` with playwright-core (`tests/browser/`,
//! pinned in its package-lock.json; playwright downloads no browser of its own). The first
//! browser test of a run installs what is missing: chromium through
//! `tests/browser/install-chromium.sh` (as root; otherwise it fails saying how to install
//! it), and playwright-core with `npm ci` into the target directory. Nothing is skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use reqwest::Method;

use crate::helpers::{TestApp, spawn_app, unique_email};

fn browser_sources() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

fn run(cmd: &mut Command, what: &str) {
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

/// Chromium installed and playwright-core unpacked next to the driver script; the directory
/// to run the script in. Done once per test process; `npm ci` only when the lock file
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
        let lock = std::fs::read_to_string(browser_sources().join("package-lock.json")).unwrap();
        let stamp = dir.join("package-lock.installed");
        if std::fs::read_to_string(&stamp).ok().as_deref() != Some(lock.as_str()) {
            for file in ["package.json", "package-lock.json"] {
                std::fs::copy(browser_sources().join(file), dir.join(file)).unwrap();
            }
            run(
                Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                    .current_dir(&dir),
                "npm ci for playwright-core (needs node and npm: apt-get install nodejs npm)",
            );
            std::fs::write(&stamp, lock).unwrap();
        }
        // Copied every run: the script is ours and changes with the tests.
        std::fs::copy(browser_sources().join("docs.mjs"), dir.join("docs.mjs")).unwrap();
        dir
    })
}

/// Every operation of `openapi.yaml`, as the driver script wants them.
fn operations() -> (usize, String) {
    let spec = crate::spec_check::SPEC.spec();
    let mut ops = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            ops.push(serde_json::json!({
                "method": method,
                "path": path,
                "operationId": op["operationId"],
                "tag": op["tags"][0],
                "summary": op["summary"],
            }));
        }
    }
    (ops.len(), serde_json::Value::Array(ops).to_string())
}

/// Runs the driver script against `app`; panics with its report if it fails.
async fn browse(app: &TestApp, mode: &str, email: Option<&str>) -> String {
    let dir = tokio::task::spawn_blocking(browser_driver).await.unwrap();
    let (_, operations) = operations();
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg("docs.mjs")
        .arg(&app.base_url)
        .arg(mode)
        .args(email)
        .env("JOBPATH_OPERATIONS", operations)
        .current_dir(dir);
    let output = cmd.output().await.expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the browser check of {mode} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swagger_ui_in_chromium_lists_every_operation_and_try_it_out_signs_up() {
    let app = spawn_app().await;
    let email = unique_email();
    let report = browse(&app, "swagger", Some(&email)).await;
    let (count, _) = operations();
    assert!(
        report.contains(&format!("swagger: {count} operations listed")),
        "{report}"
    );
    assert!(
        report.contains("try it out on signup showed 201"),
        "{report}"
    );
    let rows = app
        .db
        .client()
        .await
        .query("SELECT is_active FROM users WHERE email = $1", &[&email])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "the account made through the page exists");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redoc_in_chromium_lists_every_operation() {
    let app = spawn_app().await;
    let report = browse(&app, "redoc", None).await;
    let (count, _) = operations();
    assert!(
        report.contains(&format!("redoc: {count} operations listed")),
        "{report}"
    );
}

/// The file under `server/assets/` that an asset URL serves: `<package>-<version>/<file>`
/// is a vendored bundle in `server/assets/<package>/`, `jobpath/<file>` one of ours in
/// `server/assets/pages/`.
fn committed_file(url: &str) -> Vec<u8> {
    let (dir, file) = url
        .strip_prefix("docs/assets/")
        .and_then(|rest| rest.split_once('/'))
        .unwrap();
    let folder = match dir.rsplit_once('-') {
        Some((package, _version)) => package,
        None => "pages",
    };
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../server/assets")
        .join(folder)
        .join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What a browser gets before it runs anything: HTML with no outside reference and a CSP
/// that forbids other origins, and assets with their types and cache lifetimes.
#[tokio::test]
async fn the_pages_and_their_assets_are_served_with_types_caching_and_a_strict_csp() {
    let app = spawn_app().await;
    for page in ["/docs", "/redoc"] {
        let resp = app.raw(Method::GET, page).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{page}");
        let headers = resp.headers().clone();
        assert_eq!(headers["content-type"], "text/html; charset=utf-8");
        assert_eq!(headers["cache-control"], "no-cache");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'none'"), "{csp}");
        assert!(
            !csp.contains("http") && !csp.contains('*'),
            "no other origin in {csp}"
        );
        let html = resp.text().await.unwrap();
        assert!(!html.contains("://"), "an absolute URL in {page}:\n{html}");
        let assets: Vec<&str> = html
            .split('"')
            .filter(|s| s.starts_with("docs/assets/"))
            .collect();
        assert_eq!(assets.len(), if page == "/docs" { 4 } else { 3 }, "{html}");
        for asset in assets {
            let resp = app
                .raw(Method::GET, &format!("/{asset}"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 200, "{asset}");
            let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
            let cache = resp.headers()["cache-control"].to_str().unwrap().to_owned();
            let expected_type = if asset.ends_with(".css") {
                "text/css; charset=utf-8"
            } else {
                "text/javascript; charset=utf-8"
            };
            assert_eq!(content_type, expected_type, "{asset}");
            // Vendored bundles have their version in the URL and never change under it.
            let versioned = !asset.starts_with("docs/assets/jobpath/");
            let expected_cache = match versioned {
                true => "public, max-age=31536000, immutable",
                false => "no-cache",
            };
            assert_eq!(cache, expected_cache, "{asset}");
            assert_eq!(
                resp.bytes().await.unwrap(),
                committed_file(asset),
                "{asset} is the committed file"
            );
        }
    }
    let missing = app
        .raw(Method::GET, "/docs/assets/swagger-ui-0.0.0/swagger-ui.css")
        .send()
        .await
        .unwrap();
    crate::helpers::expect_raw_error(missing, 404, "not_found").await;
    let wrong_method = app.raw(Method::POST, "/docs").send().await.unwrap();
    assert_eq!(wrong_method.headers()["allow"], "GET, OPTIONS");
    crate::helpers::expect_raw_error(wrong_method, 405, "method_not_allowed").await;
}

/// `DOCS_ENABLED=false` (the production default) takes the pages and their assets away —
/// they are not there at all, so a 404 like any unknown path — and leaves the contract
/// served: clients and the generated client's users still fetch it.
#[tokio::test]
async fn with_docs_disabled_the_pages_and_assets_are_404_and_the_spec_is_still_served() {
    let db = crate::helpers::TestDb::create().await;
    let config = crate::faults::config_for(&db.url, &[("DOCS_ENABLED", "false")]);
    let server = crate::helpers::TestServer::start(config).await;
    for page in ["/docs", "/redoc", "/docs/assets/jobpath/spec.js"] {
        let resp = server.raw(Method::GET, page).send().await.unwrap();
        crate::helpers::expect_raw_error(resp, 404, "not_found").await;
    }
    for spec in ["/openapi.json", "/openapi.yaml"] {
        let resp = server.raw(Method::GET, spec).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{spec}");
    }
    server.stop().await;
}
