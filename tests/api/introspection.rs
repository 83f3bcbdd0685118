//! Token introspection (RFC 7662) through the generated client (its form-encoded body),
//! against the real server: live, logged-out, expired, forged and deactivated-account
//! access tokens, a session owing its second factor, live, revoked, expired and mistyped
//! API keys; who may ask (an API key with `introspect` only); the per-key limit.

use jobpath_client::types;
use reqwest::Method;
use serde_json::{Value, json};

use crate::api_keys::{ALL_SCOPES, create, user_with_key};
use crate::helpers::{
    ApiResult, PASSWORD, TEST_SECRET, TestServer, claims, expect_error, expect_raw_error,
    spawn_app, spawn_app_with, test_config, unique_email,
};

async fn introspect(
    app: &TestServer,
    caller_key: &str,
    token: &str,
) -> ApiResult<types::IntrospectionResponse> {
    app.authed(caller_key)
        .introspect_token()
        .body(types::IntrospectionRequest::builder().token(token))
        .send()
        .await
}

/// The answer as JSON, exactly as sent.
async fn answer(app: &TestServer, caller_key: &str, token: &str) -> Value {
    let resp = app
        .raw(Method::POST, "/auth/introspect")
        .bearer_auth(caller_key)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("token", token),
            ("token_type_hint", "access_token"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()
            .get("cache-control")
            .unwrap()
            .to_str()
            .unwrap(),
        "no-store"
    );
    resp.json().await.unwrap()
}

/// A form-encoded body.
fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

async fn introspector(app: &TestServer) -> String {
    user_with_key(app, &[types::ApiKeyScope::Introspect])
        .await
        .2
}

#[tokio::test]
async fn a_live_access_token_is_active_with_what_is_true_of_it() {
    let app = spawn_app().await;
    let caller = introspector(&app).await;
    let (_, token) = app.user_with_token().await;
    let claimed = claims(&token);

    let got = introspect(&app, &caller, &token)
        .await
        .unwrap()
        .into_inner();
    assert!(got.active);
    assert_eq!(
        got.token_type,
        Some(types::IntrospectionResponseTokenType::AccessToken)
    );
    let body = answer(&app, &caller, &token).await;
    assert_eq!(body["sub"], claimed["sub"]);
    assert_eq!(body["sid"], claimed["sid"]);
    assert_eq!(body["jti"], claimed["jti"]);
    assert_eq!(body["exp"], claimed["exp"]);
    assert_eq!(body["iat"], claimed["iat"]);
    assert_eq!(body["iss"], claimed["iss"]);
    assert_eq!(body["aud"], claimed["aud"]);
    assert_eq!(body["aal"], 1);
    assert_eq!(body["amr"], json!(["pwd"]));
    assert_eq!(body["email_verified"], false);
    assert!(
        body.get("roles").is_none(),
        "no roles, none claimed: {body}"
    );
    assert!(body.get("scope").is_none(), "{body}");
}

#[tokio::test]
async fn logged_out_expired_forged_and_malformed_tokens_are_exactly_inactive() {
    let app = spawn_app().await;
    let caller = introspector(&app).await;
    let inactive = json!({"active": false});

    let (_, token) = app.user_with_token().await;
    app.authed(&token).logout().send().await.unwrap();
    assert_eq!(answer(&app, &caller, &token).await, inactive, "logged out");

    // An expired token, signed with the server's own key.
    let (_, live) = app.user_with_token().await;
    let mut expired = claims(&live);
    let now = chrono::Utc::now().timestamp();
    expired["iat"] = json!(now - 3600);
    expired["nbf"] = json!(now - 3600);
    expired["exp"] = json!(now - 600);
    let key = jobpath_server::auth::keys::derive(
        TEST_SECRET.as_bytes(),
        jobpath_server::auth::keys::Purpose::AccessToken,
    );
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.typ = Some("at+jwt".to_owned());
    let sign = |claims: &Value, key: &[u8]| {
        jsonwebtoken::encode(
            &header,
            claims,
            &jsonwebtoken::EncodingKey::from_secret(key),
        )
        .unwrap()
    };
    assert_eq!(
        answer(&app, &caller, &sign(&expired, &key)).await,
        inactive,
        "expired"
    );
    // The same claims as a live token, signed with another key.
    assert_eq!(
        answer(&app, &caller, &sign(&claims(&live), b"not the key")).await,
        inactive,
        "forged"
    );
    assert_eq!(
        answer(&app, &caller, &sign(&claims(&live), &key)).await["active"],
        true
    );
    for junk in ["x", "eyJ.eyJ.x", "jp_pat_short", &"a".repeat(4096)] {
        assert_eq!(answer(&app, &caller, junk).await, inactive, "{junk}");
    }
}

#[tokio::test]
async fn a_deactivated_accounts_tokens_and_keys_are_inactive() {
    let app = spawn_app().await;
    let caller = introspector(&app).await;
    let email = unique_email();
    let user_id = app.signup(&email, PASSWORD).await.id;
    let token = app.login(&email, PASSWORD).await;
    let key = create(&app, &token, &ALL_SCOPES).await.key.to_string();
    assert_eq!(answer(&app, &caller, &token).await["active"], true);
    assert_eq!(answer(&app, &caller, &key).await["active"], true);

    let admin_email = unique_email();
    app.signup(&admin_email, PASSWORD).await;
    jobpath_server::admin(
        &test_config(&app.db),
        &jobpath_server::cli::AdminCommand::Grant(admin_email.clone()),
    )
    .await
    .unwrap();
    let admin = app.login(&admin_email, PASSWORD).await;
    // The admin's own token says its roles.
    assert_eq!(
        answer(&app, &caller, &admin).await["roles"],
        json!(["admin"])
    );
    app.authed(&admin)
        .admin_deactivate_user()
        .user_id(user_id)
        .body(types::Deactivation::builder().reason("abuse"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer(&app, &caller, &token).await,
        json!({"active": false})
    );
    assert_eq!(answer(&app, &caller, &key).await, json!({"active": false}));
}

#[tokio::test]
async fn a_session_owing_its_second_factor_is_not_active() {
    let (app, clock) = crate::mfa::app().await;
    let caller = introspector(&app).await;
    let enrolled = crate::mfa::enrolled(&app, &clock).await;
    let pending = crate::mfa::pending(&app, &enrolled.email).await;
    assert_eq!(
        answer(&app, &caller, &pending.access_token).await,
        json!({"active": false})
    );
    let stepped = app.refresh(&enrolled.session.refresh_token).await;
    let body = answer(&app, &caller, &stepped.access_token).await;
    assert_eq!(body["active"], true);
    assert_eq!(body["aal"], 2);
}

#[tokio::test]
async fn api_keys_are_active_while_live_and_introspecting_one_is_not_a_use_of_it() {
    let app = spawn_app().await;
    let caller = introspector(&app).await;
    let email = unique_email();
    let user_id = app.signup(&email, PASSWORD).await.id;
    let token = app.login(&email, PASSWORD).await;
    let made = create(&app, &token, &ALL_SCOPES).await;

    let body = answer(&app, &caller, &made.key).await;
    assert_eq!(body["active"], true, "{body}");
    assert_eq!(body["token_type"], "api_key");
    assert_eq!(body["sub"], user_id.to_string());
    assert_eq!(body["client_id"], made.id.to_string());
    assert_eq!(body["scope"], "account:read introspect");
    assert_eq!(body["exp"], made.expires_at.timestamp());
    assert!(body.get("sid").is_none(), "{body}");
    let used: Option<chrono::DateTime<chrono::Utc>> = app
        .db
        .client()
        .await
        .query_one(
            "SELECT last_used_at FROM api_keys WHERE id = $1",
            &[&made.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(used, None, "introspection is not a use of the key");

    let mut typo = made.key.as_bytes().to_vec();
    typo[30] = if typo[30] == b'Q' { b'R' } else { b'Q' };
    let typo = String::from_utf8(typo).unwrap();
    assert_eq!(answer(&app, &caller, &typo).await, json!({"active": false}));
    assert_eq!(
        answer(&app, &caller, &app.state.api_keys.fresh()).await,
        json!({"active": false}),
        "unknown"
    );

    app.authed(&token)
        .delete_api_key()
        .key_id(made.id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer(&app, &caller, &made.key).await,
        json!({"active": false})
    );

    let other = create(&app, &token, &ALL_SCOPES).await;
    app.db
        .client()
        .await
        .execute(
            "UPDATE api_keys SET created_at = now() - interval '2 days',
                                 expires_at = now() - interval '1 day' WHERE id = $1",
            &[&other.id],
        )
        .await
        .unwrap();
    assert_eq!(
        answer(&app, &caller, &other.key).await,
        json!({"active": false})
    );
}

#[tokio::test]
async fn only_an_api_key_with_the_introspect_scope_may_ask() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token().await;
    let send = |authorization: Option<String>| {
        let mut req = app
            .raw(Method::POST, "/auth/introspect")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[("token", token.as_str())]));
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        req.send()
    };
    expect_raw_error(send(None).await.unwrap(), 401, "missing_token").await;
    expect_raw_error(
        send(Some("Bearer not-a-token".into())).await.unwrap(),
        401,
        "invalid_token",
    )
    .await;
    // An access token, even a live one, is not a caller of this operation.
    expect_raw_error(
        send(Some(format!("Bearer {token}"))).await.unwrap(),
        403,
        "insufficient_scope",
    )
    .await;
    let (_, _, reader) = user_with_key(&app, &[types::ApiKeyScope::AccountRead]).await;
    let refused = expect_error(
        introspect(&app, &reader, &token).await,
        403,
        "insufficient_scope",
    );
    assert!(refused.detail.message.contains("introspect"));
    let caller = introspector(&app).await;
    // The body is form-encoded, as RFC 7662 has it; JSON is refused.
    let json_body = app
        .raw(Method::POST, "/auth/introspect")
        .bearer_auth(&caller)
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap();
    expect_raw_error(json_body, 415, "unsupported_media_type").await;
    let no_token = app
        .raw(Method::POST, "/auth/introspect")
        .bearer_auth(&caller)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("token_type_hint", "access_token")]))
        .send()
        .await
        .unwrap();
    expect_raw_error(no_token, 422, "validation_error").await;
    assert!(introspect(&app, &caller, &token).await.unwrap().active);
}

#[tokio::test]
async fn introspection_is_limited_per_calling_key() {
    let app = spawn_app_with(|c| c.rate_limits.introspect_per_key = 3).await;
    let first = introspector(&app).await;
    let second = introspector(&app).await;
    let (_, token) = app.user_with_token().await;
    for _ in 0..3 {
        assert!(introspect(&app, &first, &token).await.unwrap().active);
    }
    let refused = expect_error(introspect(&app, &first, &token).await, 429, "rate_limited");
    let retry: u64 = refused
        .headers()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Another caller from the same address has its own allowance.
    assert!(introspect(&app, &second, &token).await.unwrap().active);
}
