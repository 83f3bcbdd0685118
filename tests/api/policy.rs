//! The password policy: common breached passwords and passwords containing the email's
//! local part are refused with 422 `weak_password`, at signup and at password change.

use jobpath_client::types;

use crate::helpers::{PASSWORD, expect_error, spawn_app, unique_email};

#[tokio::test]
async fn signup_refuses_the_most_common_passwords_with_422_weak_password() {
    let app = spawn_app().await;
    for weak in [
        "12345678",
        "password",
        "Password1",
        "P@ssw0rd",
        "qwertyuiop",
    ] {
        let result = app
            .api
            .signup()
            .body(
                types::Credentials::builder()
                    .email(unique_email())
                    .password(weak),
            )
            .send()
            .await;
        let err = expect_error(result, 422, "weak_password");
        assert!(err.detail.message.contains("common"), "{:?}", err.detail);
    }
    assert_eq!(app.db.count("SELECT count(*) FROM users").await, 0);
}

#[tokio::test]
async fn signup_refuses_a_password_containing_the_email_local_part() {
    let app = spawn_app().await;
    let result = app
        .api
        .signup()
        .body(
            types::Credentials::builder()
                .email("Grace.Hopper@example.com")
                .password("my GRACE.HOPPER password"),
        )
        .send()
        .await;
    let err = expect_error(result, 422, "weak_password");
    assert!(err.detail.message.contains("email"), "{:?}", err.detail);
    assert_eq!(app.db.count("SELECT count(*) FROM users").await, 0);
}

#[tokio::test]
async fn a_password_change_to_a_weak_password_is_422_and_changes_nothing() {
    let app = spawn_app().await;
    let email = format!("margaret-{}@example.com", uuid::Uuid::new_v4().simple());
    app.signup(&email, PASSWORD).await;
    let token = app.login(&email, PASSWORD).await;
    let local = email.split('@').next().unwrap().to_owned();
    for weak in ["iloveyou".to_owned(), format!("{local}!2024")] {
        let result = app
            .authed(&token)
            .change_password()
            .body(
                types::PasswordChange::builder()
                    .current_password(PASSWORD)
                    .new_password(weak),
            )
            .send()
            .await;
        expect_error(result, 422, "weak_password");
    }
    app.login(&email, PASSWORD).await;
}
