//! The reference front end (`client/typescript/examples/spa`) in a real Chromium, in cookie
//! mode, from another origin than the API: sign up, log in, survive a reload through the
//! refresh cookie, end another session, log out (`tests/browser/spa.mjs` drives it, with
//! the browser tests' machinery, `browser`). The package it imports is the one `typescript`
//! builds.

use crate::helpers::{spawn_app_with, unique_email};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_spa_in_chromium_keeps_its_session_in_the_cookie_across_a_reload_and_logs_out()
 {
    let package = crate::typescript::built().await;
    // The page is served by the driver from another origin (another port of localhost: the
    // same site, as app.example.com and api.example.com are), which must be listed.
    let page_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let page_origin = format!("http://localhost:{page_port}");
    let origin = page_origin.clone();
    let app = spawn_app_with(move |c| {
        c.cors_origins = jobpath_server::config::CorsOrigins::List(vec![origin]);
    })
    .await;
    let api = app.base_url.replace("127.0.0.1", "localhost");
    let spa = package.dir.join("examples/spa");
    let dist = package.dir.join("dist");
    let vendor = package.dir.join("node_modules/openapi-fetch/dist");
    let report = crate::browser::drive(
        "spa.mjs",
        &[&page_origin, &api, &unique_email()],
        &[
            ("SPA_DIR", spa.to_str().unwrap()),
            ("CLIENT_DIST", dist.to_str().unwrap()),
            ("OPENAPI_FETCH_DIST", vendor.to_str().unwrap()),
        ],
    )
    .await;
    assert!(report.contains("logged out"), "{report}");
    // What the page did, as the server recorded it: a login, the refresh after the reload,
    // the other session ended, and the logout.
    let kinds: Vec<String> = app
        .db
        .client()
        .await
        .query("SELECT kind FROM auth_events ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    for kind in [
        "signup",
        "login_succeeded",
        "refresh",
        "session_revoked",
        "logout",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }
}
