//! `POST /auth/logout`: durable revocation.

use futures::future::join_all;

use crate::helpers::{expect_error, spawn_app};

#[tokio::test]
async fn logout_revokes_the_token_and_records_it_in_the_database() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token().await;
    let client = app.authed(&token);
    let resp = client.logout().send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.into_inner().message, "Logged out successfully");
    expect_error(client.get_me().send().await, 401, "invalid_token");
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM sessions WHERE end_reason = 'logout'")
            .await,
        1
    );
}

#[tokio::test]
async fn logging_out_twice_is_401_and_other_sessions_are_unaffected() {
    let app = spawn_app().await;
    let (email, first) = app.user_with_token().await;
    let second = app.login(&email, crate::helpers::PASSWORD).await;
    app.authed(&first).logout().send().await.unwrap();
    expect_error(
        app.authed(&first).logout().send().await,
        401,
        "invalid_token",
    );
    app.authed(&second)
        .get_me()
        .send()
        .await
        .expect("the other token still works");
}

#[tokio::test]
async fn concurrent_logouts_of_one_token_give_exactly_one_success() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token().await;
    let client = app.authed(&token);
    let results = join_all((0..10).map(|_| client.logout().send())).await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    for r in results.into_iter().filter(Result::is_err) {
        expect_error(r, 401, "invalid_token");
    }
}

#[tokio::test]
async fn logout_without_a_token_is_401_and_writes_nothing() {
    let app = spawn_app().await;
    expect_error(app.api.logout().send().await, 401, "missing_token");
    expect_error(
        app.authed("garbage").logout().send().await,
        401,
        "invalid_token",
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM sessions WHERE ended_at IS NOT NULL")
            .await,
        0
    );
}

#[tokio::test]
async fn sessions_ended_or_expired_over_a_day_ago_are_pruned_and_live_ones_kept() {
    let app = spawn_app().await;
    let (_, live) = app.user_with_token().await;
    let (_, ended) = app.user_with_token().await;
    app.authed(&ended).logout().send().await.unwrap();
    let db = app.db.client().await;
    // Age the ended session past the retention day, and add one that expired long ago.
    db.batch_execute(
        "UPDATE sessions SET ended_at = now() - interval '2 days' WHERE ended_at IS NOT NULL;
         INSERT INTO sessions (user_id, expires_at, created_at)
         SELECT user_id, now() - interval '3 days', now() - interval '40 days' FROM sessions LIMIT 1;",
    )
    .await
    .unwrap();
    let pruned = jobpath_server::db::sessions::prune(&app.state.db)
        .await
        .unwrap();
    assert_eq!(pruned, 2);
    assert_eq!(app.db.count("SELECT count(*) FROM sessions").await, 1);
    app.authed(&live)
        .get_me()
        .send()
        .await
        .expect("the live session is kept");
    expect_error(
        app.authed(&ended).get_me().send().await,
        401,
        "invalid_token",
    );
}
