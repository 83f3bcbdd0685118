//! `POST /auth/login`.

use jobpath_client::types;
use jobpath_server::auth::token::TokenKeys;

use crate::helpers::{PASSWORD, TEST_SECRET, expect_error, spawn_app, unique_email};

#[tokio::test]
async fn login_returns_a_bearer_token_that_is_never_cached() {
    let app = spawn_app().await;
    let email = unique_email();
    let account = app.signup(&email, PASSWORD).await;
    let resp = app.try_login(&email, PASSWORD).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers().get("cache-control").unwrap(), "no-store");
    let body = resp.into_inner();
    assert_eq!(body.token_type, types::TokenResponseTokenType::Bearer);
    assert_eq!(body.expires_in.get(), 30 * 60);
    assert_eq!(body.user.id, account.id);
    assert_eq!(body.user.email, email);
    assert!(body.user.is_active);
    // The session's lifetime, less the moment it took to answer.
    let thirty_days = 30 * 24 * 3600;
    assert!((thirty_days - 5..=thirty_days).contains(&body.refresh_expires_in.get()));
    assert_eq!(body.refresh_token.unwrap().len(), 43);

    // The token carries the documented claims, signed with the configured secret.
    let keys = TokenKeys::new(
        TEST_SECRET.as_bytes(),
        jobpath_server::config::DEFAULT_JWT_ISSUER,
        jobpath_server::config::DEFAULT_JWT_AUDIENCE,
        std::time::Duration::from_secs(1800),
    );
    let claims = keys.verify(&body.access_token).unwrap();
    assert_eq!(claims.user_id, account.id);
    assert_eq!(claims.sub, account.id.to_string());
    assert_eq!(claims.email, email);
    assert_eq!(claims.exp - claims.iat, 30 * 60);
    assert_eq!(claims.sid, body.session_id);
}

#[tokio::test]
async fn login_ignores_case_and_surrounding_spaces_in_the_email() {
    let app = spawn_app().await;
    app.signup("mixed.case@example.com", PASSWORD).await;
    app.login("  MIXED.Case@EXAMPLE.com ", PASSWORD).await;
}

#[tokio::test]
async fn unknown_email_wrong_password_and_inactive_account_get_the_same_401() {
    let app = spawn_app().await;
    let email = unique_email();
    let inactive = unique_email();
    app.signup(&email, PASSWORD).await;
    app.signup(&inactive, PASSWORD).await;
    app.db
        .client()
        .await
        .execute(
            "UPDATE users SET is_active = false WHERE email = $1",
            &[&inactive],
        )
        .await
        .unwrap();

    let unknown = expect_error(
        app.try_login(&unique_email(), PASSWORD).await,
        401,
        "invalid_credentials",
    );
    let wrong = expect_error(
        app.try_login(&email, "not the password").await,
        401,
        "invalid_credentials",
    );
    let off = expect_error(
        app.try_login(&inactive, PASSWORD).await,
        401,
        "invalid_credentials",
    );
    // Identical bodies apart from the request id: nothing tells the cases apart.
    for err in [&wrong, &off] {
        assert_eq!(err.detail.message, unknown.detail.message);
        assert_eq!(err.detail.field, unknown.detail.field);
        assert_eq!(
            err.headers().get("www-authenticate"),
            unknown.headers().get("www-authenticate")
        );
    }
}

#[tokio::test]
async fn a_login_email_with_control_characters_is_a_plain_401() {
    let app = spawn_app().await;
    // Found by the contract run: an address of only (Unicode) white space is schema-valid.
    for email in [
        "ada\u{0}@example.com",
        "\u{1b}[31m@example.com",
        "\u{a0}",
        "   ",
    ] {
        expect_error(
            app.try_login(email, PASSWORD).await,
            401,
            "invalid_credentials",
        );
    }
}
