//! Sessions: refresh-token rotation and reuse detection, logout scopes, password change,
//! listing and ending sessions, rehash on login — including the races, and two instances.

use futures::future::join_all;
use jobpath_client::types::{self, LogoutScope};

use crate::helpers::{
    PASSWORD, TestDb, TestServer, expect_error, spawn_app, spawn_app_with, test_config,
    unique_email,
};

/// Both tokens of a session are refused: its access token and its refresh token.
async fn assert_ended(app: &TestServer, session: &types::TokenResponse) {
    expect_error(
        app.authed(&session.access_token).get_me().send().await,
        401,
        "invalid_token",
    );
    expect_error(
        app.try_refresh(&session.refresh_token).await,
        401,
        "invalid_token",
    );
}

/// Both tokens of a session work (the refresh token is spent in checking).
async fn assert_live(app: &TestServer, session: &types::TokenResponse) {
    app.authed(&session.access_token)
        .get_me()
        .send()
        .await
        .expect("access token accepted");
    app.try_refresh(&session.refresh_token)
        .await
        .expect("refresh token accepted");
}

#[tokio::test]
async fn refresh_rotates_both_tokens_and_keeps_the_session() {
    let app = spawn_app().await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    let first = app.session(&email, PASSWORD).await;

    let resp = app.try_refresh(&first.refresh_token).await.unwrap();
    assert_eq!(resp.headers().get("cache-control").unwrap(), "no-store");
    let second = resp.into_inner();
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_ne!(second.access_token, first.access_token);
    assert_eq!(second.session_id, first.session_id);
    assert_eq!(second.user.email, email);
    // Both access tokens name the same live session.
    app.authed(&second.access_token)
        .get_me()
        .send()
        .await
        .unwrap();
    app.authed(&first.access_token)
        .get_me()
        .send()
        .await
        .unwrap();
    // And the new refresh token rotates in turn.
    let third = app.refresh(&second.refresh_token).await;
    assert_eq!(third.session_id, first.session_id);
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM refresh_tokens WHERE spent_at IS NULL")
            .await,
        1
    );
}

#[tokio::test]
async fn reusing_a_spent_refresh_token_after_the_grace_window_ends_the_whole_session() {
    let app = spawn_app_with(|c| c.refresh_reuse_grace = std::time::Duration::ZERO).await;
    let (email, _) = app.user_with_token().await;
    let other_session = app.session(&email, PASSWORD).await;
    let stolen = app.session(&email, PASSWORD).await;
    let rotated = app.refresh(&stolen.refresh_token).await;

    // The thief (or the victim) presents the spent token again: theft.
    expect_error(
        app.try_refresh(&stolen.refresh_token).await,
        401,
        "invalid_token",
    );
    // The whole session is over: its successor and every access token of it.
    assert_ended(&app, &rotated).await;
    expect_error(
        app.authed(&stolen.access_token).get_me().send().await,
        401,
        "invalid_token",
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM sessions WHERE end_reason = 'refresh_reuse'")
            .await,
        1
    );
    // Other sessions of the user are untouched.
    app.authed(&other_session.access_token)
        .get_me()
        .send()
        .await
        .unwrap();
    app.try_refresh(&other_session.refresh_token).await.unwrap();
}

#[tokio::test]
async fn a_token_spent_several_rotations_ago_is_still_recognised_as_reuse() {
    let app = spawn_app_with(|c| c.refresh_reuse_grace = std::time::Duration::ZERO).await;
    let (email, _) = app.user_with_token().await;
    let first = app.session(&email, PASSWORD).await;
    let mut current = first.refresh_token.clone();
    for _ in 0..3 {
        current = app.refresh(&current).await.refresh_token;
    }
    expect_error(
        app.try_refresh(&first.refresh_token).await,
        401,
        "invalid_token",
    );
    expect_error(app.try_refresh(&current).await, 401, "invalid_token");
}

#[tokio::test]
async fn concurrent_refreshes_inside_the_grace_window_all_get_the_same_successor() {
    let app = spawn_app().await; // default grace: 10 s
    let (email, _) = app.user_with_token().await;
    let session = app.session(&email, PASSWORD).await;
    let results = join_all((0..8).map(|_| app.try_refresh(&session.refresh_token))).await;
    let successors: Vec<Option<String>> = results
        .into_iter()
        .map(|r| {
            r.expect("no refresh in the race is refused")
                .into_inner()
                .refresh_token
        })
        .collect();
    assert!(
        successors.windows(2).all(|w| w[0] == w[1]),
        "one successor, not {successors:?}"
    );
    // Exactly one successor was minted, and the session lives on.
    let minted = format!(
        "SELECT count(*) FROM refresh_tokens WHERE session_id = '{}'",
        session.session_id
    );
    assert_eq!(app.db.count(&minted).await, 2);
    let next = app.refresh(&successors[0]).await;
    app.authed(&next.access_token)
        .get_me()
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_retry_inside_the_grace_window_gets_the_same_successor_but_one_outside_ends_the_session()
{
    let app = spawn_app_with(|c| c.refresh_reuse_grace = std::time::Duration::from_secs(1)).await;
    let (email, _) = app.user_with_token().await;
    let session = app.session(&email, PASSWORD).await;
    let first = app.refresh(&session.refresh_token).await;
    let retry = app.refresh(&session.refresh_token).await;
    assert_eq!(retry.refresh_token, first.refresh_token);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    expect_error(
        app.try_refresh(&session.refresh_token).await,
        401,
        "invalid_token",
    );
    expect_error(
        app.try_refresh(&first.refresh_token).await,
        401,
        "invalid_token",
    );
}

#[tokio::test]
async fn a_spent_token_whose_successor_is_spent_too_is_reuse_even_inside_the_grace_window() {
    let app = spawn_app().await; // default grace: 10 s
    let (email, _) = app.user_with_token().await;
    let a = app.session(&email, PASSWORD).await;
    let b = app.refresh(&a.refresh_token).await;
    let c = app.refresh(&b.refresh_token).await;
    // A thief holding A must not walk forward to C: B is spent, so A is reuse.
    expect_error(
        app.try_refresh(&a.refresh_token).await,
        401,
        "invalid_token",
    );
    assert_ended(&app, &c).await;
    let reuse = format!(
        "SELECT count(*) FROM auth_events WHERE kind = 'refresh_reuse_detected' AND session_id = '{}'",
        a.session_id
    );
    assert_eq!(app.db.count(&reuse).await, 1);
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM sessions WHERE end_reason = 'refresh_reuse'")
            .await,
        1
    );
}

#[tokio::test]
async fn unknown_and_malformed_refresh_tokens_are_refused_and_write_nothing() {
    let app = spawn_app().await;
    let (email, _) = app.user_with_token().await;
    let before = app.db.count("SELECT count(*) FROM refresh_tokens").await;
    expect_error(
        app.try_refresh("not-a-refresh-token").await,
        401,
        "invalid_token",
    );
    expect_error(app.try_refresh(&"x".repeat(43)).await, 401, "invalid_token");
    let resp = app
        .raw(reqwest::Method::POST, "/auth/refresh")
        .json(&serde_json::json!({"refresh_token": ""}))
        .send()
        .await
        .unwrap();
    crate::helpers::expect_raw_error(resp, 422, "validation_error").await;
    assert_eq!(
        app.db.count("SELECT count(*) FROM refresh_tokens").await,
        before
    );
    let _ = email;
}

#[tokio::test]
async fn refresh_after_logout_or_a_global_logout_is_refused() {
    let app = spawn_app().await;
    let (email, _) = app.user_with_token().await;
    let a = app.session(&email, PASSWORD).await;
    let b = app.session(&email, PASSWORD).await;
    app.authed(&a.access_token).logout().send().await.unwrap();
    expect_error(
        app.try_refresh(&a.refresh_token).await,
        401,
        "invalid_token",
    );
    app.try_refresh(&b.refresh_token)
        .await
        .expect("another session is unaffected by a local logout");

    let c = app.session(&email, PASSWORD).await;
    app.authed(&c.access_token)
        .logout()
        .scope(LogoutScope::Global)
        .send()
        .await
        .unwrap();
    for s in [&b, &c] {
        expect_error(
            app.authed(&s.access_token).get_me().send().await,
            401,
            "invalid_token",
        );
    }
    let b_now = app
        .db
        .count("SELECT count(*) FROM sessions WHERE ended_at IS NULL")
        .await;
    assert_eq!(b_now, 0, "every session ended");
    expect_error(
        app.try_refresh(&c.refresh_token).await,
        401,
        "invalid_token",
    );
}

#[tokio::test]
async fn logout_others_ends_every_session_but_this_one() {
    let app = spawn_app().await;
    let (email, first) = app.user_with_token().await;
    let second = app.session(&email, PASSWORD).await;
    let keep = app.session(&email, PASSWORD).await;
    app.authed(&keep.access_token)
        .logout()
        .scope(LogoutScope::Others)
        .send()
        .await
        .unwrap();
    expect_error(
        app.authed(&first).get_me().send().await,
        401,
        "invalid_token",
    );
    assert_ended(&app, &second).await;
    assert_live(&app, &keep).await;
}

#[tokio::test]
async fn an_unknown_logout_scope_is_422_and_ends_nothing() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token().await;
    let resp = app
        .raw(reqwest::Method::POST, "/auth/logout?scope=everything")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let body = crate::helpers::expect_raw_error(resp, 422, "validation_error").await;
    assert_eq!(body["detail"]["field"], "scope");
    app.authed(&token).get_me().send().await.unwrap();
}

#[tokio::test]
async fn a_login_racing_with_the_logout_of_another_session_is_unaffected() {
    let app = spawn_app().await;
    let (email, old) = app.user_with_token().await;
    let old_client = app.authed(&old);
    let (logout, login) = tokio::join!(old_client.logout().send(), app.try_login(&email, PASSWORD));
    logout.unwrap();
    let fresh = login.unwrap().into_inner();
    app.authed(&fresh.access_token)
        .get_me()
        .send()
        .await
        .expect("the new session is live");
    app.try_refresh(&fresh.refresh_token).await.unwrap();
}

#[tokio::test]
async fn changing_the_password_ends_every_other_session_and_keeps_this_one() {
    let app = spawn_app().await;
    let (email, other) = app.user_with_token().await;
    let other_session = app.session(&email, PASSWORD).await;
    let this = app.session(&email, PASSWORD).await;
    let new_password = "an entirely new passphrase";
    let resp = app
        .authed(&this.access_token)
        .change_password()
        .body(
            types::PasswordChange::builder()
                .current_password(PASSWORD)
                .new_password(new_password),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.into_inner().message, "Password changed");
    expect_error(
        app.authed(&other).get_me().send().await,
        401,
        "invalid_token",
    );
    assert_ended(&app, &other_session).await;
    assert_live(&app, &this).await;
    expect_error(
        app.try_login(&email, PASSWORD).await,
        401,
        "invalid_credentials",
    );
    app.login(&email, new_password).await;
}

#[tokio::test]
async fn a_wrong_current_password_is_401_and_a_weak_new_one_422_and_nothing_changes() {
    let app = spawn_app().await;
    let (email, other) = app.user_with_token().await;
    let this = app.session(&email, PASSWORD).await;
    let this_client = app.authed(&this.access_token);
    let change = |current: &'static str, new: &'static str| {
        this_client
            .change_password()
            .body(
                types::PasswordChange::builder()
                    .current_password(current)
                    .new_password(new),
            )
            .send()
    };
    expect_error(
        change("not my password", "a fine new passphrase").await,
        401,
        "invalid_credentials",
    );
    let resp = app
        .raw(reqwest::Method::POST, "/auth/password")
        .bearer_auth(&this.access_token)
        .json(&serde_json::json!({"current_password": PASSWORD, "new_password": "short"}))
        .send()
        .await
        .unwrap();
    let body = crate::helpers::expect_raw_error(resp, 422, "validation_error").await;
    assert_eq!(body["detail"]["field"], "new_password");
    // Nothing changed: the old password works and the other session lives.
    app.login(&email, PASSWORD).await;
    app.authed(&other).get_me().send().await.unwrap();
    expect_error(
        app.api
            .change_password()
            .body(
                types::PasswordChange::builder()
                    .current_password(PASSWORD)
                    .new_password("whatever long"),
            )
            .send()
            .await,
        401,
        "missing_token",
    );
}

#[tokio::test]
async fn sessions_are_listed_with_their_origin_and_the_current_one_marked() {
    let app = spawn_app().await;
    let (email, _) = app.user_with_token().await;
    let this = app.session(&email, PASSWORD).await;
    let list = app
        .authed(&this.access_token)
        .list_sessions()
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.sessions.len(), 2);
    let current: Vec<_> = list.sessions.iter().filter(|s| s.current).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].id, this.session_id);
    assert_eq!(current[0].ip.as_deref(), Some("127.0.0.1"));
    assert!(
        current[0].user_agent.is_none(),
        "the generated client sends no User-Agent"
    );
    assert!(current[0].expires_at > current[0].created_at);

    // A browser-like client: its User-Agent is recorded.
    let resp = app
        .raw(reqwest::Method::POST, "/auth/login")
        .header("user-agent", "JobPathTest/1.0 (X11; Linux)")
        .json(&serde_json::json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let list = app
        .authed(&this.access_token)
        .list_sessions()
        .send()
        .await
        .unwrap()
        .into_inner();
    assert!(
        list.sessions
            .iter()
            .any(|s| s.user_agent.as_deref() == Some("JobPathTest/1.0 (X11; Linux)"))
    );
}

#[tokio::test]
async fn ending_one_of_my_sessions_by_id_works_and_another_users_session_is_404() {
    let app = spawn_app().await;
    let (email, _) = app.user_with_token().await;
    let this = app.session(&email, PASSWORD).await;
    let other = app.session(&email, PASSWORD).await;
    let resp = app
        .authed(&this.access_token)
        .revoke_session()
        .session_id(other.session_id)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    expect_error(
        app.authed(&other.access_token).get_me().send().await,
        401,
        "invalid_token",
    );
    expect_error(
        app.try_refresh(&other.refresh_token).await,
        401,
        "invalid_token",
    );
    // Again: it is no longer a live session.
    expect_error(
        app.authed(&this.access_token)
            .revoke_session()
            .session_id(other.session_id)
            .send()
            .await,
        404,
        "not_found",
    );

    let (stranger_email, _) = app.user_with_token().await;
    let stranger = app.session(&stranger_email, PASSWORD).await;
    expect_error(
        app.authed(&this.access_token)
            .revoke_session()
            .session_id(stranger.session_id)
            .send()
            .await,
        404,
        "not_found",
    );
    app.authed(&stranger.access_token)
        .get_me()
        .send()
        .await
        .expect("the stranger's session is untouched");

    let resp = app
        .raw(reqwest::Method::DELETE, "/auth/sessions/not-a-uuid")
        .bearer_auth(&this.access_token)
        .send()
        .await
        .unwrap();
    crate::helpers::expect_raw_error(resp, 422, "validation_error").await;
}

#[tokio::test]
async fn a_login_after_bcrypt_rounds_change_upgrades_the_stored_hash() {
    let db = TestDb::create().await;
    let old = TestServer::start(test_config(&db)).await; // cost 4
    let email = unique_email();
    old.signup(&email, PASSWORD).await;
    old.stop().await;

    let mut config = test_config(&db);
    config.bcrypt_cost = 5;
    let new = TestServer::start(config).await;
    new.login(&email, PASSWORD).await;
    let client = db.client().await;
    let mut stored = String::new();
    // The upgrade runs after the login answer; give it a moment.
    for _ in 0..50 {
        stored = client
            .query_one("SELECT password_hash FROM users", &[])
            .await
            .unwrap()
            .get(0);
        if stored.starts_with("v2$$2b$05$") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        stored.starts_with("v2$$2b$05$"),
        "hash not upgraded: {}",
        &stored[..10]
    );
    new.login(&email, PASSWORD).await;
    expect_error(
        new.try_login(&email, "wrong password").await,
        401,
        "invalid_credentials",
    );
}

#[tokio::test]
async fn two_instances_agree_on_rotation_reuse_and_logout() {
    let db = TestDb::create().await;
    let mut config = test_config(&db);
    config.refresh_reuse_grace = std::time::Duration::ZERO;
    let (a, b) = tokio::join!(TestServer::start(config.clone()), TestServer::start(config));
    let email = unique_email();
    a.signup(&email, PASSWORD).await;
    let s = a.session(&email, PASSWORD).await;
    let rotated = b.refresh(&s.refresh_token).await;
    // Reuse through the other instance is detected and ends the session everywhere.
    expect_error(a.try_refresh(&s.refresh_token).await, 401, "invalid_token");
    expect_error(
        b.authed(&rotated.access_token).get_me().send().await,
        401,
        "invalid_token",
    );

    let t = b.session(&email, PASSWORD).await;
    a.authed(&t.access_token)
        .logout()
        .scope(LogoutScope::Global)
        .send()
        .await
        .unwrap();
    expect_error(b.try_refresh(&t.refresh_token).await, 401, "invalid_token");
}

#[tokio::test]
async fn sessions_are_paged_newest_first_and_using_one_between_pages_moves_nothing() {
    let app = spawn_app().await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    // Logged in one after another, so their start times are ordered.
    let mut started = Vec::new();
    for _ in 0..5 {
        started.push(app.session(&email, PASSWORD).await);
    }
    let newest_first: Vec<_> = started.iter().rev().map(|s| s.session_id).collect();
    let me = app.authed(&started[4].access_token);

    let mut seen = Vec::new();
    let mut before = None;
    for page in 0.. {
        assert!(page < 5, "paging does not end");
        let mut request = me
            .list_sessions()
            .limit(std::num::NonZeroU32::new(2).unwrap());
        if let Some(cursor) = before {
            request = request.before(cursor);
        }
        let list = request.send().await.unwrap().into_inner();
        assert!(list.sessions.len() <= 2);
        seen.extend(list.sessions.iter().map(|s| s.id));
        if page == 0 {
            // The oldest session refreshes: by last use it would now be first, and a page
            // ordered that way would show it twice or never.
            app.refresh(&started[0].refresh_token).await;
        }
        match list.next_before {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, newest_first);

    // The default page holds them all; a cursor of someone else's session matches nothing.
    let all = me.list_sessions().send().await.unwrap().into_inner();
    assert_eq!(all.sessions.len(), 5);
    assert_eq!(all.next_before, None);
    let (_, stranger) = app.user_with_token().await;
    let theirs = app
        .authed(&stranger)
        .list_sessions()
        .send()
        .await
        .unwrap()
        .into_inner();
    let foreign = me
        .list_sessions()
        .before(theirs.sessions[0].id)
        .send()
        .await
        .unwrap()
        .into_inner();
    assert!(foreign.sessions.is_empty() && foreign.next_before.is_none());
}

#[tokio::test]
async fn a_bad_sessions_limit_or_cursor_is_422() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token().await;
    for query in ["limit=0", "limit=101", "limit=two", "before=not-a-uuid"] {
        let resp = app
            .raw(reqwest::Method::GET, &format!("/auth/sessions?{query}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        crate::helpers::expect_raw_error(resp, 422, "validation_error").await;
    }
}

#[tokio::test]
async fn a_retry_reaching_an_instance_with_other_keys_is_refused_without_ending_the_session() {
    // A rolling deploy that changes how keys are made: the instance that rotated the token
    // and the one the retry reaches compute different successors. A successor that does
    // not exist is no sign of theft (a spent one is), so the session survives.
    let db = TestDb::create().await;
    let old = TestServer::start(test_config(&db)).await;
    let mut config = test_config(&db);
    config.jwt_secret =
        jobpath_server::config::Secret::new("another secret, thirty-two bytes long");
    let new = TestServer::start(config).await;
    let email = unique_email();
    old.signup(&email, PASSWORD).await;
    let first = old.session(&email, PASSWORD).await;
    let second = old.refresh(&first.refresh_token).await;
    expect_error(
        new.try_refresh(&first.refresh_token).await,
        401,
        "invalid_token",
    );
    old.refresh(&second.refresh_token).await;
    assert_eq!(
        db.count("SELECT count(*) FROM auth_events WHERE kind = 'refresh_reuse_detected'")
            .await,
        0
    );
}
