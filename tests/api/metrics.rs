//! `/metrics`: where it is served, and that its numbers follow what the server did.

use reqwest::Method;

use crate::helpers::{PASSWORD, expect_error, expect_raw_error, spawn_app, spawn_app_with};

/// The value of the sample written exactly as `series` (name plus labels), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

async fn scrape(url: &str) -> String {
    let resp = reqwest::get(url).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        jobpath_server::metrics::CONTENT_TYPE
    );
    resp.text().await.unwrap()
}

#[tokio::test]
async fn metrics_are_served_on_their_own_port_and_not_on_the_public_one() {
    let app = spawn_app().await;
    let public = app.raw(Method::GET, "/metrics").send().await.unwrap();
    expect_raw_error(public, 404, "not_found").await;

    let url = app.metrics_url.clone().expect("a metrics listener");
    let text = scrape(&url).await;
    assert!(text.ends_with("# EOF\n"), "{text}");
    let other = reqwest::get(url.replace("/metrics", "/auth/me"))
        .await
        .unwrap();
    expect_raw_error(other, 404, "not_found").await;
}

#[tokio::test]
async fn metrics_public_serves_them_on_the_api_port_and_counts_the_scrape_in_flight() {
    let app = spawn_app_with(|c| c.metrics_public = true).await;
    assert!(app.metrics_url.is_none());
    let text = scrape(&format!("{}/metrics", app.base_url)).await;
    // The scrape itself is the one request in flight while it is rendered.
    assert_eq!(sample(&text, "jobpath_http_requests_in_flight"), Some(1.0));
}

/// A signup, a good and a bad login, a logout and a 404, then a scrape: each shows up once,
/// per operation and status class, and nothing personal is in a label.
#[tokio::test]
async fn requests_logins_signups_revocations_and_the_pool_are_counted() {
    let app = spawn_app().await;
    let email = "metrics-person@example.com";
    let user = app.signup(email, PASSWORD).await;
    let token = app.login(email, PASSWORD).await;
    expect_error(
        app.try_login(email, "not the password").await,
        401,
        "invalid_credentials",
    );
    app.authed(&token).logout().send().await.unwrap();
    app.raw(Method::GET, "/no/such/page").send().await.unwrap();

    let text = scrape(app.metrics_url.as_ref().unwrap()).await;
    let exact = [
        (
            r#"http_requests_total{operation="signup",status_class="2xx"}"#,
            1.0,
        ),
        (
            r#"http_requests_total{operation="login",status_class="2xx"}"#,
            1.0,
        ),
        (
            r#"http_requests_total{operation="login",status_class="4xx"}"#,
            1.0,
        ),
        (
            r#"http_requests_total{operation="logout",status_class="2xx"}"#,
            1.0,
        ),
        (
            r#"http_requests_total{operation="unmatched",status_class="4xx"}"#,
            1.0,
        ),
        (
            r#"http_request_duration_seconds_count{operation="login",status_class="4xx"}"#,
            1.0,
        ),
        (
            r#"http_request_duration_seconds_bucket{le="+Inf",operation="signup",status_class="2xx"}"#,
            1.0,
        ),
        ("http_requests_in_flight", 0.0),
        (r#"logins_total{outcome="succeeded"}"#, 1.0),
        (r#"logins_total{outcome="failed"}"#, 1.0),
        ("signups_total", 1.0),
        ("tokens_revoked_total", 1.0),
        ("password_hash_queue_depth", 0.0),
        // The test configuration: DB_POOL_SIZE 4 + DB_MAX_OVERFLOW 4.
        ("db_pool_max_connections", 8.0),
        ("db_pool_connections_in_use", 0.0),
        ("db_pool_waiting", 0.0),
    ];
    for (series, value) in exact {
        let series = format!("jobpath_{series}");
        assert_eq!(sample(&text, &series), Some(value), "{series} in\n{text}");
    }
    // Signup hashed once; the two logins verified once each (the warm-up's dummy hash may
    // add one of each).
    let hashes = sample(
        &text,
        r#"jobpath_password_hash_duration_seconds_count{operation="hash"}"#,
    )
    .unwrap();
    let verifies = sample(
        &text,
        r#"jobpath_password_hash_duration_seconds_count{operation="verify"}"#,
    )
    .unwrap();
    assert!((1.0..=2.0).contains(&hashes), "{hashes} hashes\n{text}");
    assert!(
        (2.0..=3.0).contains(&verifies),
        "{verifies} verifies\n{text}"
    );
    let open = sample(&text, "jobpath_db_pool_connections").unwrap();
    assert!(open >= 1.0, "the requests opened connections\n{text}");

    for personal in [email, &user.id.to_string(), &token] {
        assert!(!text.contains(personal), "{personal} in\n{text}");
    }
}
