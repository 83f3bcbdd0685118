//! Where a request says it comes from: the client address behind trusted proxies
//! (`TRUSTED_PROXIES`, `TRUSTED_PROXY_HEADER`) and the request id stored in the event log.
//! Both are client-controlled headers, believed only from a trusted proxy.

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

/// Signs up through `client`; returns the response's `X-Request-Id` and the request id
/// stored with the `signup` event.
async fn signup_ids(app: &TestApp, client: &Client) -> (String, String) {
    let signup = client
        .signup()
        .body(
            types::Credentials::builder()
                .email(unique_email())
                .password(PASSWORD),
        )
        .send()
        .await
        .unwrap();
    let header = signup.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let user_id = signup.into_inner().id;
    let stored: String = app
        .db
        .client()
        .await
        .query_one(
            "SELECT request_id FROM auth_events WHERE kind = 'signup' AND user_id = $1",
            &[&user_id],
        )
        .await
        .unwrap()
        .get(0);
    (header, stored)
}

#[tokio::test]
async fn a_clients_own_request_id_is_not_stored_in_the_event_log() {
    let app = spawn_app_with(|_| {}).await;
    let client = sending(&app, &[("x-request-id", "forged-id-1")]);
    let (header, stored) = signup_ids(&app, &client).await;
    assert_ne!(stored, "forged-id-1");
    assert_ne!(header, "forged-id-1");
    assert_eq!(stored, header, "the event names the id the client was told");
}

#[tokio::test]
async fn a_trusted_proxys_request_id_is_kept_and_stored() {
    let app = spawn_app_with(|c| c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]).await;
    let client = sending(&app, &[("x-request-id", "edge-7f3a")]);
    let (header, stored) = signup_ids(&app, &client).await;
    assert_eq!(
        (header.as_str(), stored.as_str()),
        ("edge-7f3a", "edge-7f3a")
    );
}
