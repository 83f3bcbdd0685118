//! Where a request says it comes from: the client address behind trusted proxies
//! (`TRUSTED_PROXIES`, `TRUSTED_PROXY_HEADER`), a client-controlled header believed only
//! from a trusted proxy.

use jobpath_client::{Client, types};
use jobpath_server::config::ProxyHeader;

use crate::helpers::{PASSWORD, TestApp, spawn_app_with, unique_email};

/// A client that sends `headers` with every request.
fn sending(app: &TestApp, headers: &[(&'static str, &str)]) -> Client {
    let mut map = reqwest::header::HeaderMap::new();
    for (name, value) in headers {
        map.append(*name, value.parse().unwrap());
    }
    let http = reqwest::Client::builder()
        .default_headers(map)
        .build()
        .unwrap();
    Client::new_with_client(&app.base_url, http)
}

/// Logs in through `client`; returns the `ip` its new session records.
async fn session_ip(app: &TestApp, client: &Client, email: &str) -> Option<String> {
    let login = client
        .login()
        .body(
            types::LoginRequest::builder()
                .email(email)
                .password(PASSWORD),
        )
        .send()
        .await
        .unwrap()
        .into_inner();
    let list = app
        .authed(&login.access_token)
        .list_sessions()
        .send()
        .await
        .unwrap()
        .into_inner();
    list.sessions.into_iter().find(|s| s.current).unwrap().ip
}

#[tokio::test]
async fn behind_a_forwarded_proxy_a_clients_own_x_forwarded_for_is_ignored() {
    let app = spawn_app_with(|c| {
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        c.trusted_proxy_header = ProxyHeader::Forwarded;
    })
    .await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    // The proxy writes `Forwarded`; the client added an `X-Forwarded-For` of its choosing.
    let client = sending(
        &app,
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=203.0.113.7"),
        ],
    );
    assert_eq!(
        session_ip(&app, &client, &email).await.as_deref(),
        Some("203.0.113.7")
    );
}

#[tokio::test]
async fn behind_an_x_forwarded_for_proxy_a_clients_own_forwarded_header_is_ignored() {
    let app = spawn_app_with(|c| {
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    // No fallback: a request the proxy did not annotate is the proxy's own.
    let client = sending(&app, &[("forwarded", "for=6.6.6.6")]);
    assert_eq!(
        session_ip(&app, &client, &email).await.as_deref(),
        Some("127.0.0.1")
    );
    let client = sending(
        &app,
        &[
            ("forwarded", "for=6.6.6.6"),
            ("x-forwarded-for", "203.0.113.8"),
        ],
    );
    assert_eq!(
        session_ip(&app, &client, &email).await.as_deref(),
        Some("203.0.113.8")
    );
}
