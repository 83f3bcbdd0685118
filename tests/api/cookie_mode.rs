//! Cookie mode, for browser front ends: the refresh token in an HttpOnly cookie instead of
//! the body (`server/src/http/refresh_cookie.rs`). The login goes through the generated
//! client (with an `Origin` header, as a browser sends it); the refreshes are raw requests,
//! since the typed client has no cookie jar and the tests must choose which cookie, origin
//! and content type each request carries.

use std::time::Duration;

use jobpath_client::{Client, types};
use jobpath_server::config::CorsOrigins;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{
    PASSWORD, TestApp, expect_raw_error, spawn_app, spawn_app_with, unique_email,
};

const APP_ORIGIN: &str = "https://app.example.com";
const COOKIE: &str = "__Secure-jobpath_refresh";
const CLEARED: &str =
    "__Secure-jobpath_refresh=; Path=/auth/refresh; Max-Age=0; Secure; HttpOnly; SameSite=Strict";

/// A generated client whose requests carry `Origin: origin`.
fn from_origin(app: &TestApp, origin: &str) -> Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("origin", origin.parse().unwrap());
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    Client::new_with_client(&app.base_url, http)
}

/// The single `Set-Cookie` of a response, if any.
fn set_cookie(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let all: Vec<_> = headers.get_all("set-cookie").iter().collect();
    assert!(all.len() <= 1, "one Set-Cookie at most: {all:?}");
    all.first().map(|v| v.to_str().unwrap().to_owned())
}

/// The token a `Set-Cookie` stores, after checking every attribute.
fn stored_token(set_cookie: &str) -> String {
    let (pair, attributes) = set_cookie.split_once("; ").expect("attributes");
    let token = pair
        .strip_prefix(&format!("{COOKIE}="))
        .unwrap_or_else(|| panic!("named {COOKIE}: {set_cookie}"));
    assert_eq!(token.len(), 43, "a refresh token: {set_cookie}");
    let mut attributes: Vec<&str> = attributes.split("; ").collect();
    let max_age = attributes
        .iter()
        .position(|a| a.starts_with("Max-Age="))
        .unwrap();
    let seconds: i64 = attributes.remove(max_age)["Max-Age=".len()..]
        .parse()
        .unwrap();
    assert!(
        (30 * 24 * 3600 - 60..=30 * 24 * 3600).contains(&seconds),
        "Max-Age is the session's lifetime: {seconds}"
    );
    attributes.sort_unstable();
    assert_eq!(
        attributes,
        [
            "HttpOnly",
            "Path=/auth/refresh",
            "SameSite=Strict",
            "Secure"
        ],
        "{set_cookie}"
    );
    token.to_owned()
}

/// Signs up and logs in in cookie mode from `APP_ORIGIN`; returns the access token and the
/// cookie's refresh token.
async fn cookie_login(app: &TestApp) -> (String, String) {
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    let login = from_origin(app, APP_ORIGIN)
        .login()
        .body(
            types::LoginRequest::builder()
                .email(email.as_str())
                .password(PASSWORD)
                .refresh_token_transport(types::LoginRequestRefreshTokenTransport::Cookie),
        )
        .send()
        .await
        .expect("a cookie-mode login from a listed origin succeeds");
    let token = stored_token(&set_cookie(login.headers()).expect("the login sets the cookie"));
    let login = login.into_inner();
    assert_eq!(
        login.refresh_token, None,
        "the body carries no refresh token"
    );
    (login.access_token, token)
}

/// `POST /auth/refresh` with an empty JSON body, the cookie `token` and `origin`.
async fn cookie_refresh(app: &TestApp, token: &str, origin: Option<&str>) -> reqwest::Response {
    let mut req = app
        .raw(Method::POST, "/auth/refresh")
        .header("cookie", format!("theme=dark; {COOKIE}={token}"))
        .json(&json!({}));
    if let Some(origin) = origin {
        req = req.header("origin", origin);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn a_cookie_mode_login_sets_a_secure_httponly_strict_cookie_for_the_refresh_path_only() {
    let app = spawn_app().await;
    let (access, _) = cookie_login(&app).await;
    app.authed(&access).get_me().send().await.unwrap();
    // A body-mode login sets no cookie and keeps the token in the body.
    let (email, _) = app.user_with_token().await;
    let plain = app
        .api
        .login()
        .body(
            types::LoginRequest::builder()
                .email(email.as_str())
                .password(PASSWORD),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(set_cookie(plain.headers()), None);
    assert!(plain.into_inner().refresh_token.is_some());
}

#[tokio::test]
async fn a_refresh_by_cookie_rotates_the_cookie_and_a_spent_one_ends_the_session() {
    let app = spawn_app_with(|c| c.refresh_reuse_grace = Duration::ZERO).await;
    let (_, first) = cookie_login(&app).await;
    let resp = cookie_refresh(&app, &first, Some(APP_ORIGIN)).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()["access-control-allow-credentials"],
        "true",
        "a listed origin may send credentials"
    );
    assert_eq!(resp.headers()["access-control-allow-origin"], APP_ORIGIN);
    let second = stored_token(&set_cookie(resp.headers()).expect("the successor is set"));
    assert_ne!(second, first, "rotated");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body.get("refresh_token").is_none(), "{body}");
    let access = body["access_token"].as_str().unwrap();
    app.authed(access).get_me().send().await.unwrap();

    // The successor renews again; the spent first one is reuse: refused, the cookie
    // cleared, and the whole session ended (the live successor with it).
    let third = cookie_refresh(&app, &second, Some(APP_ORIGIN)).await;
    let third = stored_token(&set_cookie(third.headers()).unwrap());
    let reused = cookie_refresh(&app, &first, Some(APP_ORIGIN)).await;
    assert_eq!(set_cookie(reused.headers()).as_deref(), Some(CLEARED));
    expect_raw_error(reused, 401, "invalid_token").await;
    let after = cookie_refresh(&app, &third, Some(APP_ORIGIN)).await;
    assert_eq!(set_cookie(after.headers()).as_deref(), Some(CLEARED));
    expect_raw_error(after, 401, "invalid_token").await;
    // No cookie at all: nothing to use.
    let none = app
        .raw(Method::POST, "/auth/refresh")
        .header("origin", APP_ORIGIN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    expect_raw_error(none, 401, "invalid_token").await;
}

#[tokio::test]
async fn a_cookie_refresh_inside_the_grace_window_gets_the_same_successor() {
    let app = spawn_app().await; // default grace: 10 s
    let (_, first) = cookie_login(&app).await;
    let a = cookie_refresh(&app, &first, Some(APP_ORIGIN)).await;
    let b = cookie_refresh(&app, &first, Some(APP_ORIGIN)).await;
    assert_eq!(
        stored_token(&set_cookie(a.headers()).unwrap()),
        stored_token(&set_cookie(b.headers()).unwrap()),
        "two tabs racing with one cookie are given the same successor"
    );
}

#[tokio::test]
async fn a_forged_cross_site_refresh_is_refused_and_leaves_the_cookie_unspent() {
    let app = spawn_app().await;
    let (_, token) = cookie_login(&app).await;
    for origin in [Some("https://evil.example.com"), Some("null"), None] {
        let forged = cookie_refresh(&app, &token, origin).await;
        assert_eq!(
            set_cookie(forged.headers()),
            None,
            "{origin:?}: cookie left alone"
        );
        assert!(
            forged
                .headers()
                .get("access-control-allow-credentials")
                .is_none()
        );
        expect_raw_error(forged, 403, "origin_not_allowed").await;
    }
    // A form post (no preflight) cannot send JSON: refused before anything is read.
    let form = app
        .raw(Method::POST, "/auth/refresh")
        .header("cookie", format!("{COOKIE}={token}"))
        .header("origin", APP_ORIGIN)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    expect_raw_error(form, 415, "unsupported_media_type").await;
    // A cross-site page's preflight is given no permission.
    let preflight = app
        .raw(Method::OPTIONS, "/auth/refresh")
        .header("origin", "https://evil.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(
        preflight
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    assert!(
        preflight
            .headers()
            .get("access-control-allow-credentials")
            .is_none()
    );
    // None of it spent the token: the front end's own refresh still works.
    let own = cookie_refresh(&app, &token, Some(APP_ORIGIN)).await;
    assert_eq!(own.status().as_u16(), 200);
}

#[tokio::test]
async fn a_cookie_mode_login_from_another_site_is_refused_before_the_password_is_checked() {
    let app = spawn_app().await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    let forged = app
        .raw(Method::POST, "/auth/login")
        .header("origin", "https://evil.example.com")
        .json(&json!({"email": email, "password": "wrong", "refresh_token_transport": "cookie"}))
        .send()
        .await
        .unwrap();
    assert_eq!(set_cookie(forged.headers()), None);
    expect_raw_error(forged, 403, "origin_not_allowed").await;
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM auth_events WHERE kind = 'login_failed'")
            .await,
        0,
        "no password was checked"
    );
}

#[tokio::test]
async fn with_any_origin_allowed_credentials_are_never_allowed_and_only_the_apis_own_origin_uses_the_cookie()
 {
    let app = spawn_app_with(|c| c.cors_origins = CorsOrigins::Any).await;
    let preflight = app
        .raw(Method::OPTIONS, "/auth/refresh")
        .header("origin", APP_ORIGIN)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    assert!(
        preflight
            .headers()
            .get("access-control-allow-credentials")
            .is_none()
    );
    let own = app.base_url.clone();
    let (_, token) = {
        let email = unique_email();
        app.signup(&email, PASSWORD).await;
        let resp = app
            .raw(Method::POST, "/auth/login")
            .header("origin", &own)
            .json(
                &json!({"email": email, "password": PASSWORD, "refresh_token_transport": "cookie"}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "the API's own origin may");
        ((), stored_token(&set_cookie(resp.headers()).unwrap()))
    };
    let listed_nowhere = cookie_refresh(&app, &token, Some(APP_ORIGIN)).await;
    expect_raw_error(listed_nowhere, 403, "origin_not_allowed").await;
    let same_origin = cookie_refresh(&app, &token, Some(&own)).await;
    assert_eq!(same_origin.status().as_u16(), 200);
}

#[tokio::test]
async fn logout_clears_the_cookie_for_local_and_global_scope_but_not_for_others() {
    let app = spawn_app().await;
    for (scope, clears) in [
        (types::LogoutScope::Local, true),
        (types::LogoutScope::Global, true),
        (types::LogoutScope::Others, false),
    ] {
        let (access, token) = cookie_login(&app).await;
        let out = app
            .authed(&access)
            .logout()
            .scope(scope)
            .send()
            .await
            .unwrap();
        let cookie = set_cookie(out.headers());
        if clears {
            assert_eq!(cookie.as_deref(), Some(CLEARED), "{scope:?}");
            let after = cookie_refresh(&app, &token, Some(APP_ORIGIN)).await;
            expect_raw_error(after, 401, "invalid_token").await;
        } else {
            assert_eq!(cookie, None, "{scope:?}: the caller's session lives on");
            let after = cookie_refresh(&app, &token, Some(APP_ORIGIN)).await;
            assert_eq!(after.status().as_u16(), 200);
        }
    }
}
