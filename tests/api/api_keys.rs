//! API keys through the generated client, against the real server: made once and shown
//! once, listed without their secret, accepted only where their scopes say (walked from
//! the spec), refused when mistyped (before any database read), expired, revoked, or of a
//! deactivated, deleted or reset account; at most 20 live per account under concurrent
//! creation; `last_used_at` written at most once a minute; the recent login or password,
//! and the second factor, that making one needs; the notice through the SMTP server.

use std::time::{Duration, Instant};

use futures::future::join_all;
use jobpath_client::types;
use jobpath_server::config::Verification;
use jobpath_tests::smtp::MailServer;
use reqwest::Method;
use uuid::Uuid;

use crate::helpers::{
    ApiResult, MAIL_DELIVERY, PASSWORD, TestApp, TestServer, emailed_token, expect_error,
    expect_raw_error, mail_to, spawn_app, spawn_app_with, test_config, unique_email,
};

pub(crate) const ALL_SCOPES: [types::ApiKeyScope; 2] = [
    types::ApiKeyScope::AccountRead,
    types::ApiKeyScope::Introspect,
];

/// Asks for a key with a recent login (no password).
pub(crate) async fn try_create(
    app: &TestServer,
    token: &str,
    scopes: &[types::ApiKeyScope],
    days: u32,
) -> ApiResult<types::ApiKeyCreated> {
    app.authed(token)
        .create_api_key()
        .body(
            types::ApiKeyCreate::builder()
                .name("ci")
                .scopes(scopes.to_vec())
                .expires_in_days(std::num::NonZeroU32::new(days).expect("at least 1")),
        )
        .send()
        .await
}

/// A new key of the session `token`, with `scopes`.
pub(crate) async fn create(
    app: &TestServer,
    token: &str,
    scopes: &[types::ApiKeyScope],
) -> types::ApiKeyCreated {
    try_create(app, token, scopes, 30)
        .await
        .expect("201")
        .into_inner()
}

/// A new account and a key of it with `scopes`: (email, user id, key).
pub(crate) async fn user_with_key(
    app: &TestServer,
    scopes: &[types::ApiKeyScope],
) -> (String, Uuid, String) {
    let email = unique_email();
    let id = app.signup(&email, PASSWORD).await.id;
    let token = app.login(&email, PASSWORD).await;
    (email, id, create(app, &token, scopes).await.key.to_string())
}

async fn me_status(app: &TestServer, key: &str) -> u16 {
    match app.authed(key).get_me().send().await {
        Ok(r) => r.status().as_u16(),
        Err(jobpath_client::Error::ErrorResponse(e)) => e.status().as_u16(),
        Err(other) => panic!("{other:?}"),
    }
}

async fn events(app: &TestApp, user_id: Uuid) -> Vec<(String, Option<String>)> {
    let client = app.db.client().await;
    client
        .query(
            "SELECT kind, reason FROM auth_events
              WHERE user_id = $1 AND kind LIKE 'api_key_%' ORDER BY id",
            &[&user_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn a_key_is_shown_once_listed_without_its_secret_and_revoked_by_its_owner() {
    let app = spawn_app().await;
    let email = unique_email();
    let user_id = app.signup(&email, PASSWORD).await.id;
    let token = app.login(&email, PASSWORD).await;
    let made = create(&app, &token, &[types::ApiKeyScope::AccountRead]).await;

    // The documented form: greppable, with its checksum; the prefix is the key's start.
    assert_eq!(made.key.len(), 57, "{:?}", made.key);
    assert!(made.key.starts_with("jp_pat_"));
    assert_eq!(made.prefix, made.key[..15]);
    assert!(made.expires_at > chrono::Utc::now() + chrono::Duration::days(29));
    assert!(made.expires_at < chrono::Utc::now() + chrono::Duration::days(31));

    // The key reads the account, as the account's own session does.
    let me = app.authed(&made.key).get_me().send().await.unwrap();
    assert_eq!(me.id, user_id);
    assert_eq!(me.email, email);

    // Listed by its prefix; nothing in the answer or the table is the key.
    let list = app
        .authed(&token)
        .list_api_keys()
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.api_keys.len(), 1);
    let listed = &list.api_keys[0];
    assert_eq!((listed.id, &listed.prefix), (made.id, &made.prefix));
    assert_eq!(listed.scopes, [types::ApiKeyScope::AccountRead]);
    assert!(listed.last_used_at.is_some(), "the get_me above used it");
    let raw = app
        .raw(Method::GET, "/auth/api-keys")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!raw.contains(&made.key[15..]), "{raw}");
    let stored: String = app
        .db
        .client()
        .await
        .query_one("SELECT row_to_json(k)::text FROM api_keys k", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        !stored.contains(&made.key[15..]),
        "the key is stored: {stored}"
    );

    // Revoked by its owner: refused at once, gone from the list, not revocable twice.
    let deleted = app
        .authed(&token)
        .delete_api_key()
        .key_id(made.id)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 204);
    expect_error(
        app.authed(&made.key).get_me().send().await,
        401,
        "invalid_token",
    );
    let list = app.authed(&token).list_api_keys().send().await.unwrap();
    assert!(list.api_keys.is_empty());
    expect_error(
        app.authed(&token)
            .delete_api_key()
            .key_id(made.id)
            .send()
            .await,
        404,
        "not_found",
    );

    // The log names the key by its prefix only.
    let events = events(&app, user_id).await;
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        ["api_key_created", "api_key_revoked", "api_key_refused"]
    );
    for (_, reason) in &events {
        let reason = reason.as_deref().unwrap_or_default();
        assert!(reason.contains(&made.prefix), "{reason}");
        assert!(!reason.contains(&made.key[15..]), "{reason}");
    }
}

#[tokio::test]
async fn another_accounts_key_cannot_be_revoked_and_is_not_found_like_an_unknown_one() {
    let app = spawn_app().await;
    let (_, _, token_a) = {
        let email = unique_email();
        let id = app.signup(&email, PASSWORD).await.id;
        (email.clone(), id, app.login(&email, PASSWORD).await)
    };
    let made = create(&app, &token_a, &[types::ApiKeyScope::AccountRead]).await;
    let (_, token_b) = app.user_with_token().await;
    for id in [made.id, Uuid::new_v4()] {
        expect_error(
            app.authed(&token_b)
                .delete_api_key()
                .key_id(id)
                .send()
                .await,
            404,
            "not_found",
        );
    }
    assert_eq!(me_status(&app, &made.key).await, 200, "still live");
    let list = app.authed(&token_b).list_api_keys().send().await.unwrap();
    assert!(list.api_keys.is_empty(), "B sees none of A's keys");
}

/// (method, path, operationId) of every operation that takes a bearer token but not an
/// API key, from the spec.
fn operations_without_keys() -> Vec<(Method, String, String)> {
    let spec = crate::spec_check::SPEC.spec();
    let mut ops = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let reqs = op["security"].as_array().cloned().unwrap_or_default();
            let bearer = reqs.iter().any(|r| r.get("bearerAuth").is_some());
            let keys = reqs.iter().any(|r| r.get("apiKeyAuth").is_some());
            if !bearer || keys {
                continue;
            }
            let mut filled = path.clone();
            while let (Some(start), Some(end)) = (filled.find('{'), filled.find('}')) {
                filled.replace_range(start..=end, &Uuid::new_v4().to_string());
            }
            ops.push((
                Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                filled,
                op["operationId"].as_str().unwrap().to_owned(),
            ));
        }
    }
    ops
}

#[tokio::test]
async fn a_live_key_is_refused_403_insufficient_scope_by_every_operation_that_takes_no_keys() {
    let app = spawn_app().await;
    let (_, user_id, key) = user_with_key(&app, &ALL_SCOPES).await;
    let ops = operations_without_keys();
    assert!(ops.len() >= 30, "the walk found only {ops:?}");
    assert!(ops.iter().any(|(_, _, id)| id == "create_api_key"));
    for (method, path, id) in &ops {
        let mut req = app.raw(method.clone(), path).bearer_auth(&key);
        if *method != Method::GET && *method != Method::DELETE {
            req = req.header("content-type", "application/json").body("{}");
        }
        let resp = req.send().await.unwrap();
        assert_eq!(
            resp.headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned())
                .as_deref(),
            Some(r#"Bearer error="insufficient_scope""#),
            "{id}"
        );
        expect_raw_error(resp, 403, "insufficient_scope").await;
    }
    // Each refusal is in the owner's log, naming the key by its prefix.
    let refused = events(&app, user_id)
        .await
        .into_iter()
        .filter(|(k, r)| k == "api_key_refused" && r.as_deref().unwrap().starts_with("scope "))
        .count();
    assert_eq!(refused, ops.len());
    // The key itself still works where its scopes say.
    assert_eq!(me_status(&app, &key).await, 200);
}

#[tokio::test]
async fn a_key_without_account_read_cannot_read_the_account() {
    let app = spawn_app().await;
    let (_, _, key) = user_with_key(&app, &[types::ApiKeyScope::Introspect]).await;
    let refused = expect_error(
        app.authed(&key).get_me().send().await,
        403,
        "insufficient_scope",
    );
    assert!(refused.detail.message.contains("account:read"));
}

#[tokio::test]
async fn a_mistyped_key_is_refused_without_reading_the_database() {
    let app = spawn_app_with(|c| c.db_pool_timeout = Duration::from_secs(1)).await;
    let (_, _, key) = user_with_key(&app, &[types::ApiKeyScope::AccountRead]).await;
    let mut typo = key.clone().into_bytes();
    typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    // An unknown key of the right form: it must be looked up.
    let unknown = app.state.api_keys.fresh();

    // Nothing can read `api_keys` while this transaction holds it.
    let blocker = app.db.client().await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let started = Instant::now();
    expect_error(
        app.authed(&typo).get_me().send().await,
        401,
        "invalid_token",
    );
    expect_error(
        app.authed(&key[..56]).get_me().send().await,
        401,
        "invalid_token",
    );
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "refused at once, without waiting for the table: {:?}",
        started.elapsed()
    );
    // The well-formed key waits for the table, and gets the outage's 503.
    expect_error(
        app.authed(&unknown).get_me().send().await,
        503,
        "service_unavailable",
    );
    blocker.batch_execute("ROLLBACK").await.unwrap();
    expect_error(
        app.authed(&unknown).get_me().send().await,
        401,
        "invalid_token",
    );
    assert_eq!(me_status(&app, &key).await, 200);
}

#[tokio::test]
async fn a_key_needs_known_scopes_and_an_expiry_of_1_to_365_days_and_names_no_owner() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token().await;
    for days in [1, 365] {
        try_create(&app, &token, &ALL_SCOPES, days)
            .await
            .expect("201");
    }
    let send = |body: &'static str| {
        app.raw(Method::POST, "/auth/api-keys")
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for body in [
        r#"{"name":"x","scopes":["introspect"],"expires_in_days":0}"#,
        r#"{"name":"x","scopes":["introspect"],"expires_in_days":366}"#,
        r#"{"name":"x","scopes":["introspect"]}"#,
        r#"{"name":"x","scopes":["admin"],"expires_in_days":30}"#,
        r#"{"name":"x","scopes":[],"expires_in_days":30}"#,
        r#"{"name":"x","scopes":["introspect","introspect"],"expires_in_days":30}"#,
        r#"{"name":" ","scopes":["introspect"],"expires_in_days":30}"#,
        r#"{"name":"x","scopes":["introspect"],"expires_in_days":30,"user_id":"6f1c2a4e-8a7b-4c1d-9e2f-3a4b5c6d7e8f"}"#,
    ] {
        let resp = send(body).await.unwrap();
        expect_raw_error(resp, 422, "validation_error").await;
    }
    let list = app.authed(&token).list_api_keys().send().await.unwrap();
    assert_eq!(list.api_keys.len(), 2, "only the two valid ones");
}

#[tokio::test]
async fn twenty_live_keys_at_most_also_when_thirty_creations_race() {
    let app = spawn_app().await;
    let email = unique_email();
    let user_id = app.signup(&email, PASSWORD).await.id;
    let token = app.login(&email, PASSWORD).await;
    let results = join_all((0..30).map(|_| try_create(&app, &token, &ALL_SCOPES, 30))).await;
    let mut created = 0;
    for r in results {
        match r {
            Ok(_) => created += 1,
            Err(e) => {
                expect_error::<types::ApiKeyCreated>(Err(e), 409, "conflict");
            }
        }
    }
    assert_eq!(created, 20);
    let live = app
        .db
        .count(&format!(
            "SELECT count(*) FROM api_keys WHERE user_id = '{user_id}' AND revoked_at IS NULL"
        ))
        .await;
    assert_eq!(live, 20);
    // A revoked key makes room for one more.
    let list = app.authed(&token).list_api_keys().send().await.unwrap();
    app.authed(&token)
        .delete_api_key()
        .key_id(list.api_keys[0].id)
        .send()
        .await
        .unwrap();
    try_create(&app, &token, &ALL_SCOPES, 30)
        .await
        .expect("201");
    expect_error(
        try_create(&app, &token, &ALL_SCOPES, 30).await,
        409,
        "conflict",
    );
}

#[tokio::test]
async fn an_expired_key_is_refused_and_leaves_the_list() {
    let app = spawn_app().await;
    let email = unique_email();
    let user_id = app.signup(&email, PASSWORD).await.id;
    let token = app.login(&email, PASSWORD).await;
    let made = create(&app, &token, &[types::ApiKeyScope::AccountRead]).await;
    app.db
        .client()
        .await
        .execute(
            "UPDATE api_keys SET created_at = now() - interval '31 days',
                                 expires_at = now() - interval '1 second' WHERE id = $1",
            &[&made.id],
        )
        .await
        .unwrap();
    expect_error(
        app.authed(&made.key).get_me().send().await,
        401,
        "invalid_token",
    );
    let list = app.authed(&token).list_api_keys().send().await.unwrap();
    assert!(list.api_keys.is_empty());
    let events = events(&app, user_id).await;
    assert_eq!(
        events.last().unwrap(),
        &(
            "api_key_refused".to_owned(),
            Some(format!("api key expired {}", made.prefix))
        )
    );
}

#[tokio::test]
async fn last_used_at_is_written_at_most_once_a_minute() {
    let app = spawn_app().await;
    let (_, _, key) = user_with_key(&app, &[types::ApiKeyScope::AccountRead]).await;
    let last_used = || async {
        let row = app
            .db
            .client()
            .await
            .query_one("SELECT last_used_at FROM api_keys", &[])
            .await
            .unwrap();
        row.get::<_, Option<chrono::DateTime<chrono::Utc>>>(0)
    };
    assert_eq!(last_used().await, None, "never used yet");
    assert_eq!(me_status(&app, &key).await, 200);
    let first = last_used().await.expect("written on first use");
    // Many uses within the minute, some at the same moment: no further write.
    for r in join_all((0..10).map(|_| me_status(&app, &key))).await {
        assert_eq!(r, 200);
    }
    assert_eq!(last_used().await, Some(first));
    // A minute later, the next use writes it again.
    app.db
        .client()
        .await
        .execute(
            "UPDATE api_keys SET last_used_at = last_used_at - interval '61 seconds'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(me_status(&app, &key).await, 200);
    let again = last_used().await.unwrap();
    assert!(
        again > first - chrono::Duration::seconds(1),
        "{again} vs {first}"
    );
    assert_ne!(again, first - chrono::Duration::seconds(61));
}

#[tokio::test]
async fn making_a_key_needs_a_recent_login_or_the_password_and_never_an_api_key() {
    let app = spawn_app().await;
    let email = unique_email();
    let user_id = app.signup(&email, PASSWORD).await.id;
    let token = app.login(&email, PASSWORD).await;
    let key = create(&app, &token, &ALL_SCOPES).await.key.to_string();
    // A key cannot make its own successors.
    expect_error(
        try_create(&app, &key, &ALL_SCOPES, 30).await,
        403,
        "insufficient_scope",
    );
    // A login older than the window needs the password.
    app.db
        .client()
        .await
        .execute(
            "UPDATE sessions SET authenticated_at = now() - interval '1 hour' WHERE user_id = $1",
            &[&user_id],
        )
        .await
        .unwrap();
    expect_error(
        try_create(&app, &token, &ALL_SCOPES, 30).await,
        403,
        "reauthentication_required",
    );
    let client = app.authed(&token);
    let with_password = |password: &str| {
        client
            .create_api_key()
            .body(
                types::ApiKeyCreate::builder()
                    .name("ci")
                    .scopes(ALL_SCOPES.to_vec())
                    .expires_in_days(std::num::NonZeroU32::new(30).unwrap())
                    .password(Some(password.parse().unwrap())),
            )
            .send()
    };
    expect_error(
        with_password("not the password").await,
        401,
        "invalid_credentials",
    );
    with_password(PASSWORD).await.expect("201");
}

#[tokio::test]
async fn an_account_with_a_second_factor_makes_keys_only_at_aal2() {
    let (app, clock) = crate::mfa::app().await;
    let enrolled = crate::mfa::enrolled(&app, &clock).await;
    let pending = crate::mfa::pending(&app, &enrolled.email).await;
    expect_error(
        try_create(&app, &pending.access_token, &ALL_SCOPES, 30).await,
        403,
        "mfa_required",
    );
    // The enrolling session's token from before its factor owes nothing, but says aal1:
    // a password alone does not make keys for an account with a second factor.
    expect_error(
        try_create(&app, &enrolled.session.access_token, &ALL_SCOPES, 30).await,
        403,
        "mfa_required",
    );
    // The enrolling session was raised to aal2: a refreshed token says so.
    let stepped = app.refresh(&enrolled.session.refresh_token).await;
    try_create(&app, &stepped.access_token, &ALL_SCOPES, 30)
        .await
        .expect("201 at aal2");
}

#[tokio::test]
async fn deactivation_and_deletion_revoke_the_keys() {
    let app = spawn_app().await;
    // Deactivation, by an admin; reactivation does not bring the keys back.
    let admin_email = unique_email();
    app.signup(&admin_email, PASSWORD).await;
    jobpath_server::admin(
        &test_config(&app.db),
        &jobpath_server::cli::AdminCommand::Grant(admin_email.clone()),
    )
    .await
    .unwrap();
    let admin = app.login(&admin_email, PASSWORD).await;
    let (_, user_id, key) = user_with_key(&app, &ALL_SCOPES).await;
    assert_eq!(me_status(&app, &key).await, 200);
    app.authed(&admin)
        .admin_deactivate_user()
        .user_id(user_id)
        .body(types::Deactivation::builder().reason("abuse"))
        .send()
        .await
        .unwrap();
    assert_eq!(me_status(&app, &key).await, 401);
    app.authed(&admin)
        .admin_reactivate_user()
        .user_id(user_id)
        .send()
        .await
        .unwrap();
    assert_eq!(me_status(&app, &key).await, 401, "revoked, not suspended");
    let reason: String = app
        .db
        .client()
        .await
        .query_one(
            "SELECT revoke_reason FROM api_keys WHERE user_id = $1",
            &[&user_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(reason, "deactivated");

    // An account made inactive by any other path (no revocation ran) is refused too: the
    // guard reads the owner's state with the key.
    let (_, user_id, key) = user_with_key(&app, &ALL_SCOPES).await;
    app.db
        .client()
        .await
        .execute(
            "UPDATE users SET is_active = false WHERE id = $1",
            &[&user_id],
        )
        .await
        .unwrap();
    assert_eq!(me_status(&app, &key).await, 401);

    // Deletion by the owner: the keys are gone with the account.
    let (email, user_id, key) = user_with_key(&app, &ALL_SCOPES).await;
    let token = app.login(&email, PASSWORD).await;
    app.authed(&token)
        .delete_me()
        .body(types::AccountDeletion::builder().password(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(me_status(&app, &key).await, 401);
    let left = app
        .db
        .count(&format!(
            "SELECT count(*) FROM api_keys WHERE user_id = '{user_id}'"
        ))
        .await;
    assert_eq!(left, 0);
}

async fn reset_through_email(app: &TestServer, mail: &MailServer, email: &str) {
    app.api
        .forgot_password()
        .body(types::EmailAddress::builder().email(email))
        .send()
        .await
        .unwrap();
    let got = mail.wait_for_to(email, 2, MAIL_DELIVERY).await;
    let reset = got
        .iter()
        .find(|m| m.header("subject").unwrap_or_default().contains("Reset"))
        .expect("a reset email");
    let token = emailed_token(reset, FRONT_END, "reset-password");
    app.api
        .reset_password()
        .body(types::PasswordReset::Variant0 {
            token: token.parse().unwrap(),
            new_password: "a fresh and unguessable passphrase".parse().unwrap(),
        })
        .send()
        .await
        .expect("reset");
}

const FRONT_END: &str = "https://app.example.com";

#[tokio::test]
async fn a_password_reset_revokes_the_keys_unless_configured_not_to_and_creation_is_notified() {
    for revoke in [true, false] {
        let mail = MailServer::start().await;
        let app = spawn_app_with(|c| {
            mail_to(c, &mail, FRONT_END);
            c.mail.verification = Verification::Off;
            c.api_keys_revoke_on_password_reset = revoke;
        })
        .await;
        let (email, _, key) = user_with_key(&app, &ALL_SCOPES).await;
        // The notice of the new key, naming it by its prefix only.
        let notice = mail.wait_for_to(&email, 1, MAIL_DELIVERY).await;
        let notice = &notice[0];
        assert!(
            notice
                .header("subject")
                .unwrap_or_default()
                .contains("API key"),
            "{:?}",
            notice.header("subject")
        );
        let text = notice.text().unwrap();
        assert!(text.contains(&key[..15]), "{text}");
        assert!(!text.contains(&key[15..]), "{text}");

        reset_through_email(&app, &mail, &email).await;
        let expected = if revoke { 401 } else { 200 };
        assert_eq!(me_status(&app, &key).await, expected, "revoke: {revoke}");
    }
}
