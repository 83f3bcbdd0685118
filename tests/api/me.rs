//! `GET /auth/me`, and every way a bearer token can be refused (the token rows of the
//! hostile-input table in docs/security.md).

use base64::Engine as _;
use jobpath_server::auth::token::{Claims, TokenKeys};
use jobpath_server::config::{DEFAULT_JWT_AUDIENCE, DEFAULT_JWT_ISSUER};
use uuid::Uuid;

use crate::helpers::{PASSWORD, TEST_SECRET, TestApp, expect_error, spawn_app, unique_email};

fn keys(secret: &str) -> TokenKeys {
    TokenKeys::new(
        secret.as_bytes(),
        DEFAULT_JWT_ISSUER,
        DEFAULT_JWT_AUDIENCE,
        std::time::Duration::from_secs(1800),
    )
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

/// A user with a valid token, and that token's claims.
async fn token_and_claims(app: &TestApp) -> (String, Claims) {
    let (_, token) = app.user_with_token().await;
    let claims = keys(TEST_SECRET).verify(&token).unwrap();
    (token, claims)
}

async fn refused(app: &TestApp, token: &str) {
    expect_error(
        app.authed(token).get_me().send().await,
        401,
        "invalid_token",
    );
}

#[tokio::test]
async fn me_returns_the_account_the_token_belongs_to() {
    let app = spawn_app().await;
    let email = unique_email();
    let account = app.signup(&email, PASSWORD).await;
    let token = app.login(&email, PASSWORD).await;
    let resp = app.authed(&token).get_me().send().await.unwrap();
    assert_eq!(resp.headers().get("cache-control").unwrap(), "no-store");
    let me = resp.into_inner();
    assert_eq!(me.id, account.id);
    assert_eq!(me.email, email);
    assert!(me.is_active);
    assert_eq!(me.created_at, account.created_at);
}

#[tokio::test]
async fn a_missing_authorization_header_is_401_missing_token() {
    let app = spawn_app().await;
    expect_error(app.api.get_me().send().await, 401, "missing_token");
    expect_error(
        app.with_authorization("Bearer ").get_me().send().await,
        401,
        "missing_token",
    );
}

#[tokio::test]
async fn another_authorization_scheme_is_401_missing_token() {
    let app = spawn_app().await;
    let (token, _) = token_and_claims(&app).await;
    for value in [
        "Basic dXNlcjpwYXNz".to_owned(),
        format!("Token {token}"),
        token.clone(),
    ] {
        expect_error(
            app.with_authorization(&value).get_me().send().await,
            401,
            "missing_token",
        );
    }
    // The scheme itself is case-insensitive (RFC 9110).
    app.with_authorization(&format!("bearer {token}"))
        .get_me()
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_malformed_token_is_401_invalid_token() {
    let app = spawn_app().await;
    let (token, _) = token_and_claims(&app).await;
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = b64(r#"{"sub":"x"}"#);
    let tampered = parts.join(".");
    for bad in ["not-a-jwt", "a.b.c", "..", &format!("{token}x"), &tampered] {
        refused(&app, bad).await;
    }
}

#[tokio::test]
async fn alg_none_in_any_casing_is_401_invalid_token() {
    let app = spawn_app().await;
    let (token, _) = token_and_claims(&app).await;
    let payload = token.split('.').nth(1).unwrap();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = b64(&format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
        refused(&app, &format!("{header}.{payload}.")).await;
        refused(&app, &format!("{header}.{payload}")).await;
    }
}

#[tokio::test]
async fn another_hmac_algorithm_with_the_right_secret_is_401_invalid_token() {
    let app = spawn_app().await;
    let (_, claims) = token_and_claims(&app).await;
    for alg in [
        jsonwebtoken::Algorithm::HS384,
        jsonwebtoken::Algorithm::HS512,
    ] {
        let forged = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(alg),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(TEST_SECRET.as_bytes()),
        )
        .unwrap();
        refused(&app, &forged).await;
    }
}

#[tokio::test]
async fn the_right_algorithm_with_the_wrong_key_is_401_invalid_token() {
    let app = spawn_app().await;
    let (_, claims) = token_and_claims(&app).await;
    let forged = keys("a-different-secret-that-is-also-32-bytes-long")
        .sign(&claims)
        .unwrap();
    refused(&app, &forged).await;
}

#[tokio::test]
async fn an_expired_token_is_401_invalid_token() {
    let app = spawn_app().await;
    let (_, claims) = token_and_claims(&app).await;
    let now = chrono::Utc::now().timestamp();
    let expired = Claims {
        iat: now - 7200,
        nbf: now - 7200,
        exp: now - 3600,
        jti: Uuid::new_v4(),
        ..claims
    };
    refused(&app, &keys(TEST_SECRET).sign(&expired).unwrap()).await;
}

#[tokio::test]
async fn a_token_not_yet_valid_is_401_invalid_token() {
    let app = spawn_app().await;
    let (_, claims) = token_and_claims(&app).await;
    let now = chrono::Utc::now().timestamp();
    // Lifetimes within the configured 30 minutes, so only the time claims are wrong.
    let early = Claims {
        iat: now,
        nbf: now + 600,
        exp: now + 1200,
        jti: Uuid::new_v4(),
        ..claims.clone()
    };
    refused(&app, &keys(TEST_SECRET).sign(&early).unwrap()).await;
    let from_the_future = Claims {
        iat: now + 3600,
        nbf: now,
        exp: now + 4200,
        jti: Uuid::new_v4(),
        ..claims
    };
    refused(&app, &keys(TEST_SECRET).sign(&from_the_future).unwrap()).await;
}

#[tokio::test]
async fn a_token_of_a_deleted_user_is_401_invalid_token() {
    let app = spawn_app().await;
    let (gone, token) = app.user_with_token().await;
    app.db
        .client()
        .await
        .execute("DELETE FROM users WHERE email = $1", &[&gone])
        .await
        .unwrap();
    refused(&app, &token).await;
}

#[tokio::test]
async fn a_token_of_an_inactive_user_is_401_invalid_token() {
    let app = spawn_app().await;
    let (off, token) = app.user_with_token().await;
    app.db
        .client()
        .await
        .execute(
            "UPDATE users SET is_active = false WHERE email = $1",
            &[&off],
        )
        .await
        .unwrap();
    refused(&app, &token).await;
    expect_error(
        app.authed(&token).logout().send().await,
        401,
        "invalid_token",
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM sessions WHERE ended_at IS NOT NULL")
            .await,
        0,
        "nothing written"
    );
}
/// `/auth/me` runs on a few connections shared by all requests (`db::shared`). When the
/// database drops them, requests may get a 503 until each shared connection has been found
/// closed and replaced — never a 500, and never for long.
#[tokio::test]
async fn me_recovers_when_the_database_drops_its_connections() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token().await;
    let api = app.authed(&token);
    for _ in 0..4 {
        api.get_me().send().await.expect("me before the drop");
    }
    let killed: i64 = app
        .db
        .client()
        .await
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
              WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(killed >= 1, "the server had no connection to drop");

    let mut outcomes = Vec::new();
    for _ in 0..10 {
        outcomes.push(match api.get_me().send().await {
            Ok(_) => 200,
            Err(jobpath_client::Error::ErrorResponse(e)) => {
                assert_eq!(e.error, "service_unavailable", "{e:?}");
                e.status().as_u16()
            }
            Err(other) => panic!("unexpected failure: {other:?}"),
        });
    }
    assert!(
        outcomes[6..].iter().all(|&s| s == 200),
        "still failing after the drop: {outcomes:?}"
    );
}

/// The token-owner lookups of concurrent requests are answered together, one statement per
/// batch (`db::owners`). Requests that pile up behind a held-up batch go out as one, and
/// each must still get its own account, or its own refusal when its session has ended.
#[tokio::test]
async fn lookups_answered_in_one_batch_each_get_their_own_account() {
    let app = spawn_app().await;
    let mut users = Vec::new();
    for i in 0..12 {
        let (email, token) = app.user_with_token().await;
        let ended = i % 3 == 0;
        if ended {
            app.authed(&token).logout().send().await.unwrap();
        }
        users.push((email, token, ended));
    }

    // Hold the first lookups on a lock, so that the others queue up behind them.
    let blocker = app.db.client().await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let requests: Vec<_> = (0..3)
        .flat_map(|_| users.iter().cloned())
        .map(|(email, token, ended)| {
            let client = app.authed(&token);
            tokio::spawn(async move { (email, ended, client.get_me().send().await) })
        })
        .collect();
    let observer = app.db.client().await;
    crate::faults::eventually(
        "a lookup waiting on the lock",
        std::time::Duration::from_secs(10),
        || async {
            let row = observer
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                      WHERE datname = current_database() AND wait_event_type = 'Lock'
                        AND query LIKE '%unnest%'",
                    &[],
                )
                .await
                .unwrap();
            row.get::<_, i64>(0) >= 1
        },
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let before = app.state.owners.stats();
    blocker.batch_execute("ROLLBACK").await.unwrap();

    for request in requests {
        let (email, ended, result) = request.await.unwrap();
        if ended {
            expect_error(result, 401, "invalid_token");
        } else {
            assert_eq!(result.expect("a live session's lookup").email, email);
        }
    }
    // The point of the test: the queued lookups really were answered together.
    let after = app.state.owners.stats();
    assert!(
        after.largest >= 8 && after.batches - before.batches <= 8,
        "no batch formed: {before:?} → {after:?}"
    );
}

/// HS256 over `claims` with `key` as given and header type `typ`.
fn signed_with(claims: &Claims, key: &[u8], typ: &str) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.typ = Some(typ.to_owned());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(key),
    )
    .unwrap()
}

#[tokio::test]
async fn a_token_signed_with_the_configured_secret_itself_is_401_invalid_token() {
    // The secret is only the input of key derivation: a token it signs directly (as one
    // made for another purpose with the same secret would be) is no access token.
    let app = spawn_app().await;
    let (token, claims) = token_and_claims(&app).await;
    app.authed(&token).get_me().send().await.unwrap();
    refused(
        &app,
        &signed_with(&claims, TEST_SECRET.as_bytes(), "at+jwt"),
    )
    .await;
}

#[tokio::test]
async fn another_issuer_audience_or_type_or_a_longer_lifetime_is_401_invalid_token() {
    let app = spawn_app().await;
    let (_, claims) = token_and_claims(&app).await;
    let k = keys(TEST_SECRET);
    for (iss, aud) in [
        ("another-issuer", DEFAULT_JWT_AUDIENCE),
        (DEFAULT_JWT_ISSUER, "another-service"),
    ] {
        let forged = Claims {
            iss: iss.to_owned(),
            aud: aud.to_owned(),
            jti: Uuid::new_v4(),
            ..claims.clone()
        };
        refused(&app, &k.sign(&forged).unwrap()).await;
    }
    // A correctly signed token of another JWT type.
    let key = jobpath_server::auth::keys::derive(
        TEST_SECRET.as_bytes(),
        jobpath_server::auth::keys::Purpose::AccessToken,
    );
    app.authed(&signed_with(&claims, &key, "at+jwt"))
        .get_me()
        .send()
        .await
        .expect("the derived key and type make an access token");
    refused(&app, &signed_with(&claims, &key, "JWT")).await;
    // A year-long token, as a forger with the key would make, outlives the 30 minutes
    // this server issues.
    let long = Claims {
        exp: claims.iat + 365 * 24 * 3600,
        jti: Uuid::new_v4(),
        ..claims
    };
    refused(&app, &k.sign(&long).unwrap()).await;
}
