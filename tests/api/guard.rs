//! The guard and the transport around it: every operation the contract protects refuses a
//! request without a token, and with a token whose session has ended — found by walking
//! `openapi.yaml`, so a new protected operation is covered the day it is added. Also the
//! transport's promises that every route relies on: CORS preflights and bare `OPTIONS`
//! answer with the path's own methods, every listener finishes its responses the same way,
//! and each refusal's internal reason reaches the completion log line (and nothing secret).

use reqwest::Method;
use uuid::Uuid;

use crate::capture::Capture;
use crate::helpers::{expect_raw_error, spawn_app, spawn_app_with, unique_email};

/// (method, path with its parameters filled in, operationId) of every operation whose
/// `security:` accepts `bearerAuth` — with `optional`, also those that accept no
/// credentials instead (`security: [{}, {bearerAuth: []}]`).
fn bearer_operations_with(optional: bool) -> Vec<(Method, String, String)> {
    let spec = crate::spec_check::SPEC.spec();
    let mut ops = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let reqs = op["security"].as_array().cloned().unwrap_or_default();
            let bearer = reqs.iter().any(|r| r.get("bearerAuth").is_some());
            let anonymous_too = reqs
                .iter()
                .any(|r| r.as_object().is_some_and(|o| o.is_empty()));
            if !bearer || (anonymous_too && !optional) {
                continue;
            }
            // Path parameters of this API are UUIDs; any well-formed one will do, since the
            // guard must refuse before the handler looks at it.
            let mut filled = path.clone();
            while let (Some(start), Some(end)) = (filled.find('{'), filled.find('}')) {
                filled.replace_range(start..=end, &Uuid::new_v4().to_string());
            }
            ops.push((
                Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                filled,
                op["operationId"].as_str().unwrap().to_owned(),
            ));
        }
    }
    ops
}

fn request(app: &crate::helpers::TestApp, method: &Method, path: &str) -> reqwest::RequestBuilder {
    let builder = app.raw(method.clone(), path);
    if *method == Method::POST {
        // A body the operation could accept, so that only the missing credential is wrong.
        builder
            .header("content-type", "application/json")
            .body(r#"{"current_password":"x","new_password":"y"}"#)
    } else {
        builder
    }
}

#[tokio::test]
async fn every_bearer_operation_without_a_token_is_401_missing_token_with_a_challenge() {
    let app = spawn_app().await;
    // An operation that also takes no credentials answers without a token as its own
    // contract says; with a dead one it is refused like the others (below).
    let ops = bearer_operations_with(false);
    assert!(ops.len() >= 6, "the walk found only {ops:?}");
    for (method, path, id) in &ops {
        let resp = request(&app, method, path).send().await.unwrap();
        assert_eq!(
            resp.headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned())
                .as_deref(),
            Some("Bearer"),
            "{id}: WWW-Authenticate"
        );
        let body = expect_raw_error(resp, 401, "missing_token").await;
        assert!(body["detail"]["request_id"].is_string(), "{id}: {body}");
    }
}

#[tokio::test]
async fn every_bearer_operation_refuses_the_token_of_an_ended_session() {
    let app = spawn_app().await;
    let email = unique_email();
    app.signup(&email, "correct horse battery staple").await;
    let token = app.login(&email, "correct horse battery staple").await;
    // A second session ends the first one (`others`), so the token under test is refused
    // because of the database, not because of anything in the token itself.
    let other = app.login(&email, "correct horse battery staple").await;
    app.raw(Method::POST, "/auth/logout?scope=others")
        .bearer_auth(&other)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let ops = bearer_operations_with(true);
    assert!(
        ops.iter().any(|(_, _, id)| id == "resend_verification"),
        "{ops:?}"
    );
    for (method, path, id) in ops {
        let resp = request(&app, &method, &path)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let challenge = resp.headers().get("www-authenticate").cloned();
        let body = expect_raw_error(resp, 401, "invalid_token").await;
        assert_eq!(
            challenge.unwrap().to_str().unwrap(),
            r#"Bearer error="invalid_token""#,
            "{id}: {body}"
        );
    }
}

#[tokio::test]
async fn a_cors_preflight_allows_the_methods_of_its_path() {
    let app = spawn_app().await;
    let preflight = |path: String, method: &'static str| {
        app.raw(Method::OPTIONS, &path)
            .header("origin", "https://app.example.com")
            .header("access-control-request-method", method)
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let session = format!("/auth/sessions/{}", Uuid::new_v4());
    let resp = preflight(session, "DELETE").await.unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(
        resp.headers().get("access-control-allow-methods").unwrap(),
        "DELETE, OPTIONS"
    );
    let resp = preflight("/auth/me".into(), "GET").await.unwrap();
    assert_eq!(
        resp.headers().get("access-control-allow-methods").unwrap(),
        "GET, OPTIONS"
    );
    let unknown = preflight("/nope".into(), "GET").await.unwrap();
    expect_raw_error(unknown, 404, "not_found").await;
}

#[tokio::test]
async fn a_bare_options_answers_with_the_paths_allow_as_a_405_would() {
    let app = spawn_app().await;
    let resp = app
        .raw(Method::OPTIONS, "/auth/login")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(resp.headers().get("allow").unwrap(), "POST, OPTIONS");
    let wrong = app.raw(Method::PUT, "/auth/login").send().await.unwrap();
    assert_eq!(wrong.headers().get("allow").unwrap(), "POST, OPTIONS");
    expect_raw_error(wrong, 405, "method_not_allowed").await;
    let unknown = app.raw(Method::OPTIONS, "/nope").send().await.unwrap();
    expect_raw_error(unknown, 404, "not_found").await;
}

#[tokio::test]
async fn metrics_port_responses_carry_a_request_id_and_nosniff() {
    // As on the public port, an incoming id is kept only from a trusted proxy.
    let app = spawn_app_with(|c| c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]).await;
    let url = app.metrics_url.clone().expect("a metrics listener");
    for url in [url.clone(), url.replace("/metrics", "/other")] {
        let resp = reqwest::Client::new()
            .get(&url)
            .header("x-request-id", "scrape-1")
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.headers().get("x-request-id").unwrap(),
            "scrape-1",
            "{url}"
        );
        assert_eq!(
            resp.headers().get("x-content-type-options").unwrap(),
            "nosniff",
            "{url}"
        );
    }
}

#[tokio::test]
async fn the_completion_line_of_a_refusal_names_its_internal_reason_and_nothing_secret() {
    let capture = Capture::start();
    let app = spawn_app().await;
    let email = unique_email();
    let password = "a-recognisable-password-9131";
    app.signup(&email, password).await;
    let token = app.login(&email, password).await;

    // One character of the signature changed, not its last: the last holds unused bits,
    // and a change there can make the base64 non-canonical (refused as malformed, not as a
    // bad signature).
    let at = token.rfind('.').unwrap() + 1;
    let mut forged = token.clone();
    let was = forged.remove(at);
    forged.insert(at, if was == 'A' { 'B' } else { 'A' });
    let resp = app
        .raw(Method::GET, "/auth/me")
        .bearer_auth(&forged)
        .send()
        .await
        .unwrap();
    expect_raw_error(resp, 401, "invalid_token").await;
    let resp = app
        .raw(Method::POST, "/auth/login")
        .json(&serde_json::json!({"email": email, "password": "wrong-password-7777"}))
        .send()
        .await
        .unwrap();
    expect_raw_error(resp, 401, "invalid_credentials").await;
    let resp = app
        .raw(Method::POST, "/auth/logout?scope=sideways")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    expect_raw_error(resp, 422, "validation_error").await;

    let text = capture.text();
    let completion = |reason: &str| {
        text.lines().any(|l| {
            l.contains("request") && l.contains("error=") && l.contains(&format!("reason={reason}"))
        })
    };
    assert!(completion("bad signature"), "{text}");
    assert!(completion("wrong_password"), "{text}");
    assert!(completion("scope: scope must be one of"), "{text}");
    let json = capture.json();
    for secret in [
        token.as_str(),
        forged.as_str(),
        password,
        "wrong-password-7777",
        email.as_str(),
    ] {
        assert!(!text.contains(secret), "log holds {secret}");
        assert!(!json.contains(secret), "JSON log holds {secret}");
    }
}
