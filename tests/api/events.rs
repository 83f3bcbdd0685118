//! The security event log: each kind of event is recorded exactly once, in the request
//! that caused it, and `GET /auth/events` shows a user their own events, newest first,
//! paged; old events are pruned.

use std::collections::BTreeMap;
use std::time::Duration;

use jobpath_client::types;

use crate::helpers::{PASSWORD, TestApp, expect_error, spawn_app, spawn_app_with, unique_email};

async fn counts(app: &TestApp) -> BTreeMap<String, i64> {
    app.db
        .client()
        .await
        .query(
            "SELECT kind || coalesce('/' || reason, ''), count(*) FROM auth_events GROUP BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn each_event_type_is_recorded_exactly_once() {
    let app = spawn_app_with(|c| {
        c.refresh_reuse_grace = Duration::ZERO;
        c.rate_limits.password_change_per_ip = 2;
    })
    .await;
    let email = unique_email();
    let signup = app
        .api
        .signup()
        .body(
            types::Credentials::builder()
                .email(email.as_str())
                .password(PASSWORD),
        )
        .send()
        .await
        .unwrap();
    let signup_request = signup.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    expect_error(
        app.try_login(&email, "wrong password").await,
        401,
        "invalid_credentials",
    );
    expect_error(
        app.try_login(&unique_email(), PASSWORD).await,
        401,
        "invalid_credentials",
    );

    let first = app.session(&email, PASSWORD).await;
    let rotated = app.refresh(&first.refresh_token).await;
    expect_error(
        app.try_refresh(&first.refresh_token).await,
        401,
        "invalid_token",
    );
    drop(rotated);

    let second = app.session(&email, PASSWORD).await;
    let third = app.session(&email, PASSWORD).await;
    let me = app.authed(&third.access_token);
    me.revoke_session()
        .session_id(second.session_id)
        .send()
        .await
        .unwrap();
    let change = |current: &'static str| {
        me.change_password()
            .body(
                types::PasswordChange::builder()
                    .current_password(current)
                    .new_password("an entirely new passphrase"),
            )
            .send()
    };
    change(PASSWORD).await.unwrap();
    expect_error(change("not the password").await, 401, "invalid_credentials");
    expect_error(change("not the password").await, 429, "rate_limited");
    // Only the first refusal of a window is an event: a flood cannot flood the log.
    expect_error(change("not the password").await, 429, "rate_limited");
    me.logout().send().await.unwrap();

    let (inactive, _) = app.user_with_token().await;
    app.db
        .client()
        .await
        .execute(
            "UPDATE users SET is_active = false WHERE email = $1",
            &[&inactive],
        )
        .await
        .unwrap();
    expect_error(
        app.try_login(&inactive, PASSWORD).await,
        401,
        "invalid_credentials",
    );

    let expected: BTreeMap<String, i64> = [
        ("signup", 2),
        // Each signup queues its verification email (EMAIL_VERIFICATION=soft).
        ("email_verification_sent", 2),
        ("login_failed/wrong_password", 1),
        ("login_failed/unknown_email", 1),
        ("login_failed/inactive", 1),
        ("login_succeeded", 4),
        ("refresh", 1),
        ("refresh_reuse_detected", 1),
        ("session_revoked", 1),
        ("password_changed", 1),
        ("password_change_failed/wrong_current_password", 1),
        ("rate_limited/password_change", 1),
        ("logout/logout", 1),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_owned(), n))
    .collect();
    assert_eq!(counts(&app).await, expected);

    // Who, from where, in which request; an unknown email's failure belongs to no one.
    let db = app.db.client().await;
    let row = db
        .query_one(
            "SELECT u.email, e.ip, e.request_id FROM auth_events e JOIN users u ON u.id = e.user_id
              WHERE e.kind = 'signup' AND u.email = $1",
            &[&email],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(1), "127.0.0.1");
    assert_eq!(row.get::<_, String>(2), signup_request);
    let anonymous = db
        .query_one(
            "SELECT count(*) FROM auth_events WHERE user_id IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(anonymous, 1);
}

#[tokio::test]
async fn events_are_listed_newest_first_in_pages_and_only_to_their_owner() {
    let app = spawn_app().await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    expect_error(
        app.try_login(&email, "wrong password").await,
        401,
        "invalid_credentials",
    );
    let session = app.session(&email, PASSWORD).await;
    let rotated = app.refresh(&session.refresh_token).await;
    // Someone else's events are not shown.
    app.user_with_token().await;

    let me = app.authed(&rotated.access_token);
    let mut kinds = Vec::new();
    let mut ids = Vec::new();
    let mut before = None;
    loop {
        let mut call = me
            .list_events()
            .limit(std::num::NonZeroU32::new(2).unwrap());
        if let Some(b) = before {
            call = call.before(std::num::NonZeroU64::new(u64::try_from(b).unwrap()).unwrap());
        }
        let page = call.send().await.unwrap().into_inner();
        assert!(page.events.len() <= 2);
        for e in &page.events {
            kinds.push(e.kind.to_string());
            ids.push(e.id);
            assert_eq!(e.ip.as_deref(), Some("127.0.0.1"));
        }
        match page.next_before {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(
        kinds,
        [
            "refresh",
            "login_succeeded",
            "login_failed",
            "email_verification_sent",
            "signup"
        ],
        "newest first"
    );
    assert!(ids.windows(2).all(|w| w[0] > w[1]));

    let all = me.list_events().send().await.unwrap().into_inner();
    assert_eq!(all.events.len(), 5);
    assert!(all.next_before.is_none());

    for query in ["limit=0", "limit=101", "limit=x", "before=0", "before=-3"] {
        let resp = app
            .raw(reqwest::Method::GET, &format!("/auth/events?{query}"))
            .bearer_auth(&rotated.access_token)
            .send()
            .await
            .unwrap();
        crate::helpers::expect_raw_error(resp, 422, "validation_error").await;
    }
    expect_error(app.api.list_events().send().await, 401, "missing_token");
}

#[tokio::test]
async fn events_older_than_the_retention_are_pruned() {
    let app = spawn_app().await;
    let (email, _) = app.user_with_token().await;
    app.db
        .client()
        .await
        .execute(
            "INSERT INTO auth_events (kind, user_id, occurred_at)
             SELECT 'login_succeeded', id, now() - interval '91 days' FROM users WHERE email = $1",
            &[&email],
        )
        .await
        .unwrap();
    // signup, email_verification_sent, login_succeeded, and the old one.
    assert_eq!(app.db.count("SELECT count(*) FROM auth_events").await, 4);
    let pruned = jobpath_server::db::events::prune(&app.state.db, app.state.config.event_retention)
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    assert_eq!(app.db.count("SELECT count(*) FROM auth_events").await, 3);
}
