//! Bounded growth of sessions: the per-user cap (least recently used evicted), the idle
//! timeout, and the pruning of spent refresh-token rows.

use futures::future::join_all;

use crate::helpers::{PASSWORD, expect_error, spawn_app, unique_email};

#[tokio::test]
async fn the_fifty_first_login_evicts_the_least_recently_used_session() {
    let app = spawn_app().await; // SESSIONS_PER_USER_MAX default: 50
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    let used = app.session(&email, PASSWORD).await;
    let idle = app.session(&email, PASSWORD).await;
    for _ in 0..47 {
        app.session(&email, PASSWORD).await;
    }
    // Used since, so no longer the least recently used.
    let used = app.refresh(&used.refresh_token).await;
    app.session(&email, PASSWORD).await; // the 50th
    app.authed(&idle.access_token)
        .get_me()
        .send()
        .await
        .unwrap();
    app.session(&email, PASSWORD).await; // the 51st
    let live = "SELECT count(*) FROM sessions WHERE ended_at IS NULL";
    assert_eq!(app.db.count(live).await, 50);
    expect_error(
        app.authed(&idle.access_token).get_me().send().await,
        401,
        "invalid_token",
    );
    app.authed(&used.access_token)
        .get_me()
        .send()
        .await
        .unwrap();
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM sessions WHERE end_reason = 'evicted'")
            .await,
        1
    );
    // The owner's event log says where it went.
    let evicted_event = format!(
        "SELECT count(*) FROM auth_events WHERE kind = 'session_evicted' AND session_id = '{}'",
        idle.session_id
    );
    assert_eq!(app.db.count(&evicted_event).await, 1);
}

#[tokio::test]
async fn concurrent_logins_at_the_cap_never_leave_more_than_the_cap_live() {
    let app = spawn_app_with_cap(5).await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    for _ in 0..5 {
        app.session(&email, PASSWORD).await;
    }
    let logins = join_all((0..8).map(|_| app.try_login(&email, PASSWORD))).await;
    assert!(logins.iter().all(Result::is_ok), "{logins:?}");
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM sessions WHERE ended_at IS NULL")
            .await,
        5
    );
}

async fn spawn_app_with_cap(cap: u32) -> crate::helpers::TestApp {
    crate::helpers::spawn_app_with(|c| c.sessions_per_user_max = cap).await
}

#[tokio::test]
async fn a_session_unused_for_the_idle_timeout_cannot_be_refreshed() {
    let app = spawn_app().await; // REFRESH_IDLE_TIMEOUT_DAYS default: 14
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    let stale = app.session(&email, PASSWORD).await;
    let fresh = app.session(&email, PASSWORD).await;
    app.db
        .client()
        .await
        .execute(
            "UPDATE sessions SET last_used_at = now() - interval '15 days' WHERE id = $1",
            &[&stale.session_id],
        )
        .await
        .unwrap();
    expect_error(
        app.try_refresh(&stale.refresh_token).await,
        401,
        "invalid_token",
    );
    let listed = app
        .authed(&fresh.access_token)
        .list_sessions()
        .send()
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = listed.sessions.iter().map(|s| s.id).collect();
    assert_eq!(ids, [fresh.session_id], "the idle session is not listed");
    app.refresh(&fresh.refresh_token).await;
}

#[tokio::test]
async fn only_the_last_spent_refresh_tokens_of_a_session_are_kept() {
    let app = spawn_app().await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    let session = app.session(&email, PASSWORD).await;
    let mut token = session.refresh_token.clone();
    for _ in 0..12 {
        token = app.refresh(&token).await.refresh_token;
    }
    let rows = format!(
        "SELECT count(*) FROM refresh_tokens WHERE session_id = '{}'",
        session.session_id
    );
    // The live one and the last 8 spent: enough to recognise the reuse of any recent token.
    assert_eq!(app.db.count(&rows).await, 9);
    app.refresh(&token).await;
}
