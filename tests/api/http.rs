//! Transport-level behaviour: routing errors, body rules, health, CORS, the served contract.

use reqwest::Method;

use crate::helpers::{expect_raw_error, spawn_app, spawn_app_with};

#[tokio::test]
async fn an_unknown_path_is_a_404_json_error() {
    let app = spawn_app().await;
    let resp = app.raw(Method::GET, "/no/such/thing").send().await.unwrap();
    expect_raw_error(resp, 404, "not_found").await;
}

#[tokio::test]
async fn a_wrong_method_is_405_with_allow() {
    let app = spawn_app().await;
    let resp = app.raw(Method::GET, "/auth/login").send().await.unwrap();
    assert_eq!(resp.headers().get("allow").unwrap(), "POST, OPTIONS");
    expect_raw_error(resp, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn liveness_and_readiness_answer() {
    let app = spawn_app().await;
    let live = app.api.liveness().send().await.unwrap().into_inner();
    assert_eq!(live.status, jobpath_client::types::HealthStatusStatus::Ok);
    let ready = app.api.readiness().send().await.unwrap().into_inner();
    assert_eq!(
        ready.status,
        jobpath_client::types::HealthStatusStatus::Ready
    );
}

#[tokio::test]
async fn the_server_serves_its_own_contract() {
    let app = spawn_app().await;
    let source =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi.yaml")).unwrap();
    let json = app
        .api
        .get_openapi_json()
        .send()
        .await
        .unwrap()
        .into_inner();
    let expected: serde_json::Value = serde_yaml::from_str(&source).unwrap();
    assert_eq!(serde_json::Value::Object(json), expected);
    let yaml = app.raw(Method::GET, "/openapi.yaml").send().await.unwrap();
    assert_eq!(
        yaml.headers().get("content-type").unwrap(),
        "application/yaml"
    );
    assert_eq!(yaml.text().await.unwrap(), source);
}

#[tokio::test]
async fn every_response_has_a_request_id_and_nosniff_and_a_sane_incoming_id_is_kept() {
    // Only a trusted proxy's id is kept (`origin::a_clients_own_request_id_is_not_stored_…`).
    let app = spawn_app_with(|c| c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]).await;
    let resp = app
        .raw(Method::GET, "/health/live")
        .header("x-request-id", "trace-abc.123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers().get("x-request-id").unwrap(), "trace-abc.123");
    assert_eq!(
        resp.headers().get("x-content-type-options").unwrap(),
        "nosniff"
    );
    let forged = app
        .raw(Method::GET, "/nope")
        .header("x-request-id", "evil\" id")
        .send()
        .await
        .unwrap();
    let id = forged
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(id, "evil\" id");
    let body = expect_raw_error(forged, 404, "not_found").await;
    assert_eq!(body["detail"]["request_id"], id);
}

#[tokio::test]
async fn cors_preflight_allows_configured_origins_only() {
    let app = spawn_app().await;
    let preflight = |origin: &'static str| {
        app.raw(Method::OPTIONS, "/auth/login")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let ok = preflight("https://app.example.com").await.unwrap();
    assert_eq!(ok.status().as_u16(), 204);
    assert_eq!(
        ok.headers().get("access-control-allow-origin").unwrap(),
        "https://app.example.com"
    );
    assert!(
        ok.headers()
            .get("access-control-allow-methods")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("POST")
    );
    let denied = preflight("https://evil.example.com").await.unwrap();
    assert!(
        denied
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );

    let actual = app
        .raw(Method::GET, "/health/live")
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        actual.headers().get("access-control-allow-origin").unwrap(),
        "https://app.example.com"
    );
}
