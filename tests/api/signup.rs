//! `POST /auth/signup`.

use futures::future::join_all;
use jobpath_client::types;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{PASSWORD, expect_error, expect_raw_error, spawn_app, unique_email};

#[tokio::test]
async fn signup_returns_201_with_the_normalised_email_id_and_creation_time() {
    let app = spawn_app().await;
    let resp = app
        .api
        .signup()
        .body(
            types::Credentials::builder()
                .email("  Ada.Lovelace@Example.COM ")
                .password(PASSWORD),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let user = resp.into_inner();
    assert_eq!(user.email, "ada.lovelace@example.com");
    assert!((chrono::Utc::now() - user.created_at).num_seconds().abs() < 60);

    let client = app.db.client().await;
    let row = client
        .query_one(
            "SELECT email, password_hash FROM users WHERE id = $1",
            &[&user.id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "ada.lovelace@example.com");
    let hash: String = row.get(1);
    assert!(
        hash.starts_with("v2$$2b$04$"),
        "stored as a version-2 bcrypt hash"
    );
    assert!(!hash.contains(PASSWORD));
}

#[tokio::test]
async fn signup_returns_409_when_the_email_is_taken_in_any_case_or_spacing() {
    let app = spawn_app().await;
    app.signup("grace@example.com", PASSWORD).await;
    for variant in [
        "grace@example.com",
        "GRACE@example.com",
        "  Grace@Example.com  ",
    ] {
        let result = app
            .api
            .signup()
            .body(
                types::Credentials::builder()
                    .email(variant)
                    .password(PASSWORD),
            )
            .send()
            .await;
        expect_error(result, 409, "email_already_registered");
    }
    assert_eq!(app.db.count("SELECT count(*) FROM users").await, 1);
}

#[tokio::test]
async fn concurrent_signups_of_one_email_give_one_201_and_the_rest_409() {
    let app = spawn_app().await;
    let email = unique_email();
    let attempts = (0..12).map(|i| {
        // Mixed case on purpose: the database, not the handler, must decide.
        let variant = if i % 2 == 0 {
            email.clone()
        } else {
            email.to_uppercase()
        };
        let api = app.api.clone();
        async move {
            api.signup()
                .body(
                    types::Credentials::builder()
                        .email(variant)
                        .password(PASSWORD),
                )
                .send()
                .await
        }
    });
    let results = join_all(attempts).await;
    let created = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(created, 1, "{results:?}");
    for r in results.into_iter().filter(Result::is_err) {
        expect_error(r, 409, "email_already_registered");
    }
    assert_eq!(app.db.count("SELECT count(*) FROM users").await, 1);
}

#[tokio::test]
async fn signup_returns_422_for_malformed_emails_and_writes_nothing() {
    let app = spawn_app().await;
    for email in [
        "no-at-sign",
        "two@@example.com",
        "ada@localhost",
        "a b@example.com",
        "ada@exa\u{0}mple.com",
    ] {
        let result = app
            .api
            .signup()
            .body(
                types::Credentials::builder()
                    .email(email)
                    .password(PASSWORD),
            )
            .send()
            .await;
        let err = expect_error(result, 422, "validation_error");
        assert_eq!(err.detail.field.as_deref(), Some("email"), "{email:?}");
    }
    assert_eq!(app.db.count("SELECT count(*) FROM users").await, 0);
}

#[tokio::test]
async fn signup_returns_422_for_passwords_outside_the_policy() {
    let app = spawn_app().await;
    // The typed client enforces the spec's length limits itself, so send these raw.
    for password in [json!(""), json!("short"), json!("x".repeat(257))] {
        let resp = app
            .raw(Method::POST, "/auth/signup")
            .json(&json!({"email": unique_email(), "password": password}))
            .send()
            .await
            .unwrap();
        let body = expect_raw_error(resp, 422, "validation_error").await;
        assert_eq!(body["detail"]["field"], "password");
    }
    let resp = app
        .raw(Method::POST, "/auth/signup")
        .json(&json!({"email": unique_email()}))
        .send()
        .await
        .unwrap();
    let body = expect_raw_error(resp, 422, "validation_error").await;
    assert_eq!(body["detail"]["field"], "password");
    assert_eq!(app.db.count("SELECT count(*) FROM users").await, 0);
}

#[tokio::test]
async fn a_unicode_passphrase_of_64_characters_signs_up_and_logs_in() {
    let app = spawn_app().await;
    let email = unique_email();
    // 64 characters, 2 to 4 bytes each: far beyond bcrypt's 72-byte input.
    let passphrase: String = "пароль-密码-🔑-".chars().cycle().take(64).collect();
    assert_eq!(passphrase.chars().count(), 64);
    assert!(passphrase.len() > 72);
    app.signup(&email, &passphrase).await;
    app.login(&email, &passphrase).await;
}

#[tokio::test]
async fn passwords_longer_than_72_bytes_are_not_truncated() {
    let app = spawn_app().await;
    let email = unique_email();
    let prefix = "a".repeat(72);
    app.signup(&email, &format!("{prefix}-the-real-tail")).await;
    app.login(&email, &format!("{prefix}-the-real-tail")).await;
    let result = app
        .try_login(&email, &format!("{prefix}-another-tail"))
        .await;
    expect_error(result, 401, "invalid_credentials");
}
