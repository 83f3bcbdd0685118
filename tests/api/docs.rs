//! The interactive documentation: served correctly, and working in a real browser.
//!
//! The browser tests run Chromium through the shared machinery of `crate::browser`.

use std::path::Path;

use reqwest::Method;

use crate::helpers::{TestApp, spawn_app, unique_email};

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
    let (_, operations) = operations();
    let mut args = vec![app.base_url.as_str(), mode];
    args.extend(email);
    crate::browser::drive(
        "docs.mjs",
        &args,
        &[("JOBPATH_OPERATIONS", operations.as_str())],
    )
    .await
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
/// served: clients and the generated client's users still fetch it. The account pages
/// emailed links open are part of the product and stay.
#[tokio::test]
async fn with_docs_disabled_the_docs_are_404_and_the_spec_and_account_pages_are_served() {
    let db = crate::helpers::TestDb::create().await;
    let config = crate::faults::config_for(&db.url, &[("DOCS_ENABLED", "false")]);
    let server = crate::helpers::TestServer::start(config).await;
    for page in ["/docs", "/redoc", "/docs/assets/jobpath/spec.js"] {
        let resp = server.raw(Method::GET, page).send().await.unwrap();
        crate::helpers::expect_raw_error(resp, 404, "not_found").await;
    }
    for kept in [
        "/openapi.json",
        "/openapi.yaml",
        "/account/reset-password",
        "/account/verify-email",
        "/account/assets/account.js",
    ] {
        let resp = server.raw(Method::GET, kept).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{kept}");
    }
    server.stop().await;
}
