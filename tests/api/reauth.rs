//! Ending other sessions needs a recent authentication (ASVS 7.5.2): the caller's session
//! must have logged in within `REAUTH_WINDOW_MINUTES`; refreshing does not renew that.

use jobpath_client::types::LogoutScope;

use crate::helpers::{PASSWORD, expect_error, spawn_app, unique_email};

#[tokio::test]
async fn ending_other_sessions_from_a_session_authenticated_long_ago_is_403_and_ends_nothing() {
    let app = spawn_app().await; // REAUTH_WINDOW_MINUTES default: 10
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    let other = app.session(&email, PASSWORD).await;
    let old = app.session(&email, PASSWORD).await;
    app.db
        .client()
        .await
        .execute(
            "UPDATE sessions SET authenticated_at = now() - interval '11 minutes' WHERE id = $1",
            &[&old.session_id],
        )
        .await
        .unwrap();
    let client = app.authed(&old.access_token);
    for scope in [LogoutScope::Others, LogoutScope::Global] {
        expect_error(
            client.logout().scope(scope).send().await,
            403,
            "reauthentication_required",
        );
    }
    expect_error(
        client
            .revoke_session()
            .session_id(other.session_id)
            .send()
            .await,
        403,
        "reauthentication_required",
    );
    app.authed(&other.access_token)
        .get_me()
        .send()
        .await
        .unwrap();
    // A fresh login may; and ending one's own session is always free.
    let fresh = app.session(&email, PASSWORD).await;
    app.authed(&fresh.access_token)
        .revoke_session()
        .session_id(other.session_id)
        .send()
        .await
        .unwrap();
    client
        .revoke_session()
        .session_id(old.session_id)
        .send()
        .await
        .unwrap();
}
