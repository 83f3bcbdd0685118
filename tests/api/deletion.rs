//! Deleting an account (`POST /auth/me/delete`, and `db::accounts::delete`, which the admin's
//! deletion calls too) and the purge of deleted accounts: tokens refused at once, the old
//! credentials refused like an unknown address, the final notice through the real SMTP
//! server, the address reusable, every emailed secret dead, a wrong password, races with a
//! second deletion, a password change and logins, and the purge — after the period, waiting
//! for the notice, once across instances — after which nothing of the account is left in
//! any table but its anonymised events (`docs/administration.md#deleting-an-account`).
//!
//! The purge period is made to pass by moving `deleted_at` back in the test's own database,
//! or with `ACCOUNT_PURGE_DAYS=0` for the maintenance task, which purges at its first pass,
//! when an instance starts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jobpath_client::{Client, types};
use jobpath_server::call::Call;
use jobpath_server::config::{Config, Verification};
use jobpath_server::db::accounts::{self, DeletedBy, Deletion};
use jobpath_tests::smtp::MailServer;
use uuid::Uuid;

use crate::helpers::{
    ApiResult, MAIL_DELIVERY, PASSWORD, TestApp, TestDb, TestServer, emailed_code, emailed_token,
    expect_error, mail_to, spawn_app, spawn_app_with, test_config, unique_email,
};

const FRONT_END: &str = "https://app.example.com";
const NEW_PASSWORD: &str = "a fresh and unguessable passphrase";
const DAY: Duration = Duration::from_secs(24 * 3600);

async fn app_with_mail(customise: impl FnOnce(&mut Config)) -> (TestApp, MailServer) {
    let mail = MailServer::start().await;
    let app = spawn_app_with(|c| {
        mail_to(c, &mail, FRONT_END);
        customise(c);
    })
    .await;
    (app, mail)
}

async fn delete_me(client: &Client, password: &str) -> ApiResult<types::MessageResponse> {
    client
        .delete_me()
        .body(types::AccountDeletion::builder().password(password))
        .send()
        .await
}

async fn change_password(client: &Client) -> ApiResult<types::MessageResponse> {
    client
        .change_password()
        .body(
            types::PasswordChange::builder()
                .current_password(PASSWORD)
                .new_password(NEW_PASSWORD),
        )
        .send()
        .await
}

fn status<T>(result: &ApiResult<T>) -> u16 {
    match result {
        Ok(r) => r.status().as_u16(),
        Err(jobpath_client::Error::ErrorResponse(e)) => e.status().as_u16(),
        Err(other) => panic!("no HTTP answer: {other:?}"),
    }
}

fn error_code<T: std::fmt::Debug>(result: &ApiResult<T>) -> Option<String> {
    match result {
        Err(jobpath_client::Error::ErrorResponse(e)) => Some(e.error.clone()),
        _ => None,
    }
}

/// The id of the account of `email`.
async fn user_id(db: &TestDb, email: &str) -> Uuid {
    db.client()
        .await
        .query_one("SELECT id FROM users WHERE email = $1", &[&email])
        .await
        .unwrap()
        .get(0)
}

/// Moves the deletion of `user_id` `by` into the past.
async fn deleted_ago(db: &TestDb, user_id: Uuid, by: Duration) {
    db.client()
        .await
        .execute(
            "UPDATE users SET deleted_at = deleted_at - make_interval(secs => $2) WHERE id = $1",
            &[&user_id, &by.as_secs_f64()],
        )
        .await
        .unwrap();
}

/// Waits until no email of `user_id` is waiting in the outbox (the log mailer and the test
/// SMTP server both finish them within moments).
async fn outbox_drained(db: &TestDb, user_id: Uuid) {
    let deadline = Instant::now() + MAIL_DELIVERY;
    while db
        .count_with(
            "SELECT count(*) FROM email_outbox
              WHERE user_id = $1 AND status IN ('queued', 'sending')",
            &[&user_id],
        )
        .await
        > 0
    {
        assert!(
            Instant::now() < deadline,
            "the outbox was not drained in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The origin a direct call of `db::accounts::delete` records, as an admin request's would.
fn admin_call() -> Call {
    Call {
        peer: "127.0.0.1:40000".parse().unwrap(),
        client_ip: "127.0.0.1".parse().unwrap(),
        user_agent: Some("admin console".to_owned()),
        request_id: Arc::from("admin-request"),
    }
}

#[tokio::test]
async fn a_deletion_refuses_every_token_of_the_account_at_once_on_every_instance() {
    let db = TestDb::create().await;
    let (a, b) = tokio::join!(
        TestServer::start(test_config(&db)),
        TestServer::start(test_config(&db))
    );
    let email = unique_email();
    a.signup(&email, PASSWORD).await;
    let first = a.session(&email, PASSWORD).await;
    let second = b.session(&email, PASSWORD).await;
    let id = user_id(&db, &email).await;

    let done = delete_me(&a.authed(&first.access_token), PASSWORD)
        .await
        .expect("deleted");
    assert_eq!(done.status().as_u16(), 200);
    assert_eq!(done.into_inner().message, "Account deleted");

    for server in [&a, &b] {
        for session in [&first, &second] {
            expect_error(
                server.authed(&session.access_token).get_me().send().await,
                401,
                "invalid_token",
            );
            expect_error(
                server.try_refresh(&session.refresh_token).await,
                401,
                "invalid_token",
            );
        }
    }
    // The row that stays until the purge is scrubbed.
    let row = db
        .client()
        .await
        .query_one(
            "SELECT email, password_hash, is_active, email_verified_at IS NULL,
                    deleted_at IS NOT NULL
               FROM users WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), format!("deleted+{id}@invalid"));
    assert_eq!(row.get::<_, String>(1), "!");
    assert!(!row.get::<_, bool>(2));
    assert!(row.get::<_, bool>(3) && row.get::<_, bool>(4));
    let ended = db
        .count_with(
            "SELECT count(*) FROM sessions WHERE user_id = $1 AND end_reason = 'account_deleted'",
            &[&id],
        )
        .await;
    assert_eq!(ended, 2);
    let deleted_events = db
        .count_with(
            "SELECT count(*) FROM auth_events
              WHERE user_id = $1 AND kind = 'account_deleted' AND reason = 'self'
                AND session_id = $2",
            &[&id, &first.session_id],
        )
        .await;
    assert_eq!(deleted_events, 1);
    assert_eq!(
        db.count_with(
            "SELECT count(*) FROM login_devices WHERE user_id = $1",
            &[&id]
        )
        .await,
        0,
        "device tokens go at once"
    );
}

/// The visible parts of an error answer: status, code, message, `WWW-Authenticate`.
fn visible<T: std::fmt::Debug>(result: ApiResult<T>) -> (u16, String, String, Option<String>) {
    let err = expect_error(result, 401, "invalid_credentials");
    let challenge = err
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        err.status().as_u16(),
        err.error.clone(),
        err.detail.message.clone(),
        challenge,
    )
}

#[tokio::test]
async fn the_old_credentials_are_refused_exactly_like_an_unknown_address() {
    let app = spawn_app().await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    let id = user_id(&app.db, &email).await;
    let token = app.login(&email, PASSWORD).await;
    delete_me(&app.authed(&token), PASSWORD).await.unwrap();

    let unknown = visible(app.try_login(&unique_email(), PASSWORD).await);
    assert_eq!(visible(app.try_login(&email, PASSWORD).await), unknown);
    // Nor can the placeholder the address became be logged in with.
    let placeholder = format!("deleted+{id}@invalid");
    assert_eq!(visible(app.try_login(&placeholder, "!").await), unknown);
    assert_eq!(
        visible(app.try_login(&placeholder, PASSWORD).await),
        unknown
    );
    // Recorded as attempts at an unknown address: linked to no account.
    let linked = app
        .db
        .count_with(
            "SELECT count(*) FROM auth_events WHERE kind = 'login_failed' AND user_id = $1",
            &[&id],
        )
        .await;
    assert_eq!(linked, 0);
    let unknown_events = app
        .db
        .count(
            "SELECT count(*) FROM auth_events
              WHERE kind = 'login_failed' AND reason = 'unknown_email' AND user_id IS NULL",
        )
        .await;
    assert_eq!(unknown_events, 4);
}

#[tokio::test]
async fn the_final_notice_reaches_the_old_address_through_the_smtp_server() {
    let (app, mail) = app_with_mail(|c| c.mail.verification = Verification::Off).await;
    let email = unique_email();
    let id = app.signup(&email, PASSWORD).await.id;
    let token = app.login(&email, PASSWORD).await;
    delete_me(&app.authed(&token), PASSWORD).await.unwrap();
    let notice = mail.wait_for_to(&email, 1, MAIL_DELIVERY).await.remove(0);
    // The SMTP server stores the message before the sender records its 250: wait for
    // the record too.
    outbox_drained(&app.db, id).await;
    assert_eq!(notice.envelope_to, vec![email.clone()]);
    assert_eq!(notice.header("to").as_deref(), Some(email.as_str()));
    assert_eq!(
        notice.header("subject").as_deref(),
        Some("Your JobPath API account was deleted")
    );
    let text = notice.text().unwrap();
    assert!(text.contains("free to sign up with again"), "{text}");
    assert!(!text.contains("http"), "a notice carries no link");
    // Recorded as sent once the SMTP server has accepted it: a moment after it is stored.
    jobpath_tests::cluster::eventually(
        "the notice recorded as sent",
        std::time::Duration::from_secs(10),
        || async {
            app.db
                .count(
                    "SELECT count(*) FROM email_outbox
                      WHERE kind = 'account_deleted' AND status = 'sent'",
                )
                .await
                == 1
        },
    )
    .await;
}

#[tokio::test]
async fn every_emailed_link_and_code_of_the_account_dies_with_it() {
    let (app, mail) = app_with_mail(|c| c.mail.verification = Verification::Soft).await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    app.api
        .forgot_password()
        .body(types::EmailAddress::builder().email(email.as_str()))
        .send()
        .await
        .unwrap();
    let got = mail.wait_for_to(&email, 2, MAIL_DELIVERY).await;
    let subject = |m: &jobpath_tests::smtp::Mail| m.header("subject").unwrap_or_default();
    let reset = got.iter().find(|m| subject(m).contains("Reset")).unwrap();
    let verify = got.iter().find(|m| subject(m).contains("Confirm")).unwrap();
    let reset_token = emailed_token(reset, FRONT_END, "reset-password");
    let reset_code = emailed_code(reset);
    let verify_token = emailed_token(verify, FRONT_END, "verify-email");

    let token = app.login(&email, PASSWORD).await;
    delete_me(&app.authed(&token), PASSWORD).await.unwrap();

    expect_error(
        app.api
            .check_password_reset()
            .body(types::SecretToken::builder().token(reset_token.as_str()))
            .send()
            .await,
        403,
        "invalid_secret",
    );
    expect_error(
        app.api
            .reset_password()
            .body(types::PasswordReset::Variant0 {
                token: reset_token.parse().unwrap(),
                new_password: NEW_PASSWORD.parse().unwrap(),
            })
            .send()
            .await,
        403,
        "invalid_secret",
    );
    expect_error(
        app.api
            .reset_password()
            .body(types::PasswordReset::Variant1 {
                email: email.parse().unwrap(),
                code: reset_code.parse().unwrap(),
                new_password: NEW_PASSWORD.parse().unwrap(),
            })
            .send()
            .await,
        403,
        "invalid_secret",
    );
    expect_error(
        app.api
            .verify_email()
            .body(types::EmailVerificationRequest::Variant0 {
                token: verify_token.parse().unwrap(),
            })
            .send()
            .await,
        403,
        "invalid_secret",
    );
    let live = app
        .db
        .count("SELECT count(*) FROM one_time_secrets WHERE consumed_at IS NULL")
        .await;
    assert_eq!(live, 0);
    // And nothing more is sent for it than the notice, whatever is asked.
    app.api
        .forgot_password()
        .body(types::EmailAddress::builder().email(email.as_str()))
        .send()
        .await
        .unwrap();
    mail.wait_for_to(&email, 3, MAIL_DELIVERY).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let to_old: Vec<_> = mail
        .messages()
        .into_iter()
        .filter(|m| m.envelope_to == vec![email.clone()])
        .map(|m| m.header("subject").unwrap_or_default())
        .collect();
    assert_eq!(to_old.len(), 3, "{to_old:?}");
    assert_eq!(to_old[2], "Your JobPath API account was deleted");
}

#[tokio::test]
async fn unsent_emails_of_the_account_are_dropped_with_their_secrets_and_only_the_notice_goes() {
    let (app, mut mail) = app_with_mail(|c| c.mail.verification = Verification::Soft).await;
    mail.stop().await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    let id = user_id(&app.db, &email).await;
    app.api
        .forgot_password()
        .body(types::EmailAddress::builder().email(email.as_str()))
        .send()
        .await
        .unwrap();
    let token = app.login(&email, PASSWORD).await;
    delete_me(&app.authed(&token), PASSWORD).await.unwrap();
    let dropped = app
        .db
        .count(
            "SELECT count(*) FROM email_outbox
              WHERE kind IN ('verify_email', 'password_reset') AND status = 'abandoned'
                AND secret_seed IS NULL AND last_error = 'account deleted'",
        )
        .await;
    assert_eq!(dropped, 2);
    mail.restart().await;
    let got = mail.wait_for_to(&email, 1, Duration::from_secs(60)).await;
    assert_eq!(
        got[0].header("subject").as_deref(),
        Some("Your JobPath API account was deleted")
    );
    outbox_drained(&app.db, id).await;
    assert_eq!(mail.messages().len(), 1, "only the notice was sent");
}

#[tokio::test]
async fn the_freed_address_signs_up_again_as_a_new_account_that_sees_nothing_of_the_old() {
    let app = spawn_app().await;
    let email = unique_email();
    let old = app.signup(&email, PASSWORD).await;
    let token = app.login(&email, PASSWORD).await;
    delete_me(&app.authed(&token), PASSWORD).await.unwrap();

    let new = app.signup(&email, NEW_PASSWORD).await;
    assert_ne!(new.id, old.id);
    assert_eq!(new.email, email);
    expect_error(
        app.try_login(&email, PASSWORD).await,
        401,
        "invalid_credentials",
    );
    let session = app.session(&email, NEW_PASSWORD).await;
    let me_now = app.authed(&session.access_token);
    let me = me_now.get_me().send().await.unwrap().into_inner();
    assert_eq!((me.id, me.email.as_str()), (new.id, email.as_str()));
    assert!(me.is_active && !me.email_verified);
    let sessions = me_now.list_sessions().send().await.unwrap().into_inner();
    assert_eq!(sessions.sessions.len(), 1);
    assert_eq!(sessions.sessions[0].id, session.session_id);
    let events = me_now.list_events().send().await.unwrap().into_inner();
    let kinds: Vec<String> = events.events.iter().map(|e| e.kind.to_string()).collect();
    // The new account's own: the old password, tried above, is a wrong one for it.
    assert_eq!(
        kinds,
        [
            "login_succeeded",
            "login_failed",
            "email_verification_sent",
            "signup"
        ]
    );
}

#[tokio::test]
async fn a_wrong_password_is_401_invalid_credentials_recorded_and_deletes_nothing() {
    let app = spawn_app().await;
    let (email, token) = app.user_with_token().await;
    let authed = app.authed(&token);
    expect_error(
        delete_me(&authed, "not the password").await,
        401,
        "invalid_credentials",
    );
    let me = authed
        .get_me()
        .send()
        .await
        .expect("still there")
        .into_inner();
    assert!(me.is_active);
    app.login(&email, PASSWORD).await;
    let events = authed.list_events().send().await.unwrap().into_inner();
    assert_eq!(events.events[1].kind.to_string(), "account_deletion_failed");
    let reason = app
        .db
        .count("SELECT count(*) FROM auth_events WHERE kind = 'account_deletion_failed' AND reason = 'wrong_password'")
        .await;
    assert_eq!(reason, 1);
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM users WHERE deleted_at IS NOT NULL")
            .await,
        0
    );
}

#[tokio::test]
async fn wrong_passwords_are_throttled_per_account_like_failed_logins() {
    let app = spawn_app_with(|c| {
        c.rate_limits.login_failures_per_account = 2;
        c.rate_limits.login_max_delay = Duration::from_secs(60);
    })
    .await;
    let (_, token) = app.user_with_token().await;
    let authed = app.authed(&token);
    let guesses = (0..10).map(|i| {
        let authed = &authed;
        async move { delete_me(authed, &format!("guess number {i}")).await }
    });
    let results = futures::future::join_all(guesses).await;
    let statuses: Vec<u16> = results.iter().map(status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        7,
        "{statuses:?}"
    );
    authed.get_me().send().await.expect("nothing was deleted");
}

#[tokio::test]
async fn the_operation_refuses_a_missing_token_and_a_malformed_body() {
    let app = spawn_app().await;
    expect_error(delete_me(&app.api, PASSWORD).await, 401, "missing_token");
    let (_, token) = app.user_with_token().await;
    let resp = app
        .raw(reqwest::Method::POST, "/auth/me/delete")
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(r#"{"password": ""}"#)
        .send()
        .await
        .unwrap();
    crate::helpers::expect_raw_error(resp, 422, "validation_error").await;
    let resp = app
        .raw(reqwest::Method::POST, "/auth/me/delete")
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    crate::helpers::expect_raw_error(resp, 400, "invalid_json").await;
    app.authed(&token)
        .get_me()
        .send()
        .await
        .expect("still there");
}

#[tokio::test]
async fn concurrent_deletions_of_one_account_succeed_exactly_once() {
    let app = spawn_app().await;
    for _ in 0..3 {
        let email = unique_email();
        app.signup(&email, PASSWORD).await;
        let id = user_id(&app.db, &email).await;
        // Two with one token, two with another session's.
        let one = app.authed(&app.login(&email, PASSWORD).await);
        let other = app.authed(&app.login(&email, PASSWORD).await);
        let (a, b, c, d) = tokio::join!(
            delete_me(&one, PASSWORD),
            delete_me(&one, PASSWORD),
            delete_me(&other, PASSWORD),
            delete_me(&other, PASSWORD)
        );
        let results = [a, b, c, d];
        let statuses: Vec<u16> = results.iter().map(status).collect();
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            1,
            "{statuses:?}"
        );
        for r in results.iter().filter(|r| r.is_err()) {
            assert_eq!(status(r), 401, "{statuses:?}");
            assert_eq!(error_code(r).as_deref(), Some("invalid_token"));
        }
        let deleted = app
            .db
            .count_with(
                "SELECT count(*) FROM auth_events WHERE user_id = $1 AND kind = 'account_deleted'",
                &[&id],
            )
            .await;
        assert_eq!(deleted, 1);
        let notices = app
            .db
            .count_with(
                "SELECT count(*) FROM email_outbox WHERE user_id = $1 AND kind = 'account_deleted'",
                &[&id],
            )
            .await;
        assert_eq!(notices, 1);
    }
}

#[tokio::test]
async fn a_deletion_racing_a_password_change_lets_exactly_one_win() {
    let app = spawn_app().await;
    let mut winners = (0, 0);
    for round in 0..8 {
        let email = unique_email();
        app.signup(&email, PASSWORD).await;
        let deleter = app.authed(&app.login(&email, PASSWORD).await);
        // Half the rounds change the password from the deleting session itself.
        let changer = match round % 2 {
            0 => app.authed(&app.login(&email, PASSWORD).await),
            _ => deleter.clone(),
        };
        let (deletion, change) =
            tokio::join!(delete_me(&deleter, PASSWORD), change_password(&changer));
        let (d, c) = (status(&deletion), status(&change));
        match (d, c) {
            (200, 401) => {
                winners.0 += 1;
                assert_eq!(error_code(&change).as_deref(), Some("invalid_token"));
                expect_error(
                    app.try_login(&email, PASSWORD).await,
                    401,
                    "invalid_credentials",
                );
                expect_error(
                    app.try_login(&email, NEW_PASSWORD).await,
                    401,
                    "invalid_credentials",
                );
            }
            (401 | 409, 200) => {
                winners.1 += 1;
                let code = error_code(&deletion).unwrap();
                // Refused by the guard or at commit (its session ended), by the password
                // check (the new one was in), or at commit (the version moved).
                assert!(
                    matches!(
                        (d, code.as_str()),
                        (401, "invalid_token" | "invalid_credentials") | (409, "conflict")
                    ),
                    "{d} {code}"
                );
                app.login(&email, NEW_PASSWORD).await;
                assert_eq!(
                    app.db
                        .count_with(
                            "SELECT count(*) FROM users WHERE email = $1 AND deleted_at IS NULL",
                            &[&email],
                        )
                        .await,
                    1
                );
            }
            other => panic!("round {round}: deletion and change answered {other:?}"),
        }
    }
    println!(
        "deletion won {} rounds, the change {}",
        winners.0, winners.1
    );
}

#[tokio::test]
async fn a_deletion_racing_logins_leaves_no_live_session() {
    let app = spawn_app().await;
    for _ in 0..4 {
        let email = unique_email();
        app.signup(&email, PASSWORD).await;
        let id = user_id(&app.db, &email).await;
        let deleter = app.authed(&app.login(&email, PASSWORD).await);
        let logins = futures::future::join_all((0..6).map(|_| app.try_login(&email, PASSWORD)));
        let (deletion, logins) = tokio::join!(delete_me(&deleter, PASSWORD), logins);
        assert_eq!(status(&deletion), 200);
        for login in logins {
            match login {
                // A login that got in before the deletion: its session ended with it.
                Ok(tokens) => {
                    expect_error(
                        app.authed(&tokens.access_token).get_me().send().await,
                        401,
                        "invalid_token",
                    );
                }
                Err(_) => assert_eq!(error_code(&login).as_deref(), Some("invalid_credentials")),
            }
        }
        let live = app
            .db
            .count_with(
                "SELECT count(*) FROM sessions WHERE user_id = $1 AND ended_at IS NULL",
                &[&id],
            )
            .await;
        assert_eq!(live, 0);
    }
}

#[tokio::test]
async fn a_deletion_racing_reset_requests_leaves_no_live_secret() {
    let app = spawn_app_with(|c| c.mail.verification = Verification::Off).await;
    for _ in 0..10 {
        let (email, token) = app.user_with_token().await;
        let id = user_id(&app.db, &email).await;
        let forgot = || {
            app.api
                .forgot_password()
                .body(types::EmailAddress::builder().email(email.as_str()))
                .send()
        };
        let requests = futures::future::join_all((0..8).map(|_| forgot()));
        let owner = app.authed(&token);
        let (deletion, requests) = tokio::join!(delete_me(&owner, PASSWORD), requests);
        assert_eq!(status(&deletion), 200);
        assert!(requests.iter().all(|r| status(r) == 202));
        let live = app
            .db
            .count_with(
                "SELECT count(*) FROM one_time_secrets WHERE user_id = $1 AND consumed_at IS NULL",
                &[&id],
            )
            .await;
        assert_eq!(live, 0, "a reset secret outlived the deletion");
    }
}

#[tokio::test]
async fn an_admin_deletes_an_account_through_the_admin_api() {
    let app = spawn_app().await;
    let (admin_email, _) = app.user_with_token().await;
    let admin_id = user_id(&app.db, &admin_email).await;
    jobpath_server::admin(
        &crate::helpers::test_config(&app.db),
        &jobpath_server::cli::AdminCommand::Grant(admin_email.clone()),
    )
    .await
    .unwrap();
    let admin = app.login(&admin_email, PASSWORD).await;
    let (email, token) = app.user_with_token().await;
    let id = user_id(&app.db, &email).await;
    let delete = |id: Uuid| {
        let client = app.authed(&admin);
        async move { client.admin_delete_user().user_id(id).send().await }
    };
    delete(id).await.unwrap();
    expect_error(
        app.authed(&token).get_me().send().await,
        401,
        "invalid_token",
    );
    let event = app
        .db
        .count_with(
            "SELECT count(*) FROM auth_events
              WHERE user_id = $1 AND kind = 'account_deleted' AND reason = 'admin'
                AND session_id IS NULL AND actor_id = $2",
            &[&id, &admin_id],
        )
        .await;
    assert_eq!(event, 1);
    // Deleted already, or never there: 404; and an admin's own account is not theirs to
    // delete here.
    expect_error(delete(id).await, 404, "not_found");
    expect_error(delete(Uuid::new_v4()).await, 404, "not_found");
    expect_error(delete(admin_id).await, 409, "self_lockout");
    // A deleted account is gone from the admin API (its scrubbed row only waits for the
    // purge): no read, no change brings it back.
    expect_error(
        app.authed(&admin).admin_get_user().user_id(id).send().await,
        404,
        "not_found",
    );
    expect_error(
        app.authed(&admin)
            .admin_reactivate_user()
            .user_id(id)
            .send()
            .await,
        404,
        "not_found",
    );
    let listed = app
        .authed(&admin)
        .admin_list_users()
        .q("deleted+".to_owned())
        .send()
        .await
        .unwrap()
        .into_inner()
        .users;
    assert!(listed.is_empty(), "{listed:?}");
    // A deactivated account can be deleted too.
    let (other, _) = app.user_with_token().await;
    let other = user_id(&app.db, &other).await;
    app.authed(&admin)
        .admin_deactivate_user()
        .user_id(other)
        .body(jobpath_client::types::Deactivation {
            reason: "fraud".parse().unwrap(),
        })
        .send()
        .await
        .unwrap();
    delete(other).await.unwrap();
}

#[tokio::test]
async fn an_owners_deletion_is_refused_once_its_session_ended_or_the_password_moved() {
    let app = spawn_app().await;
    let (email, _) = app.user_with_token().await;
    let id = user_id(&app.db, &email).await;
    let session = app.session(&email, PASSWORD).await;
    let version: i64 = app
        .db
        .client()
        .await
        .query_one("SELECT credential_version FROM users WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    // The password changes (from another session) after this deletion checked it.
    let kept = app.session(&email, PASSWORD).await;
    change_password(&app.authed(&kept.access_token))
        .await
        .unwrap();
    let stale = DeletedBy::Owner {
        session_id: kept.session_id,
        verified: version,
    };
    assert_eq!(
        accounts::delete(&app.state.db, &admin_call(), id, stale)
            .await
            .unwrap(),
        Deletion::Conflict
    );
    // A session the change ended.
    let ended = DeletedBy::Owner {
        session_id: session.session_id,
        verified: version + 1,
    };
    assert_eq!(
        accounts::delete(&app.state.db, &admin_call(), id, ended)
            .await
            .unwrap(),
        Deletion::CallerEnded
    );
    app.login(&email, NEW_PASSWORD).await;
}

/// Every column of every table, and how many of its rows hold one of `ids` (uuid columns)
/// or contain one of `texts` (text columns): `table.column: n` for each that does.
async fn traces(db: &TestDb, ids: &[Uuid], texts: &[String]) -> Vec<String> {
    let client = db.client().await;
    let columns = client
        .query(
            "SELECT c.table_name, c.column_name, c.data_type
               FROM information_schema.columns c
               JOIN information_schema.tables t
                 ON t.table_schema = c.table_schema AND t.table_name = c.table_name
              WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
                AND c.data_type IN ('uuid', 'text', 'character varying')
              ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap();
    assert!(columns.len() > 20, "the walk sees the schema");
    let mut found = Vec::new();
    for column in columns {
        let (table, name, kind): (String, String, String) =
            (column.get(0), column.get(1), column.get(2));
        let sql = match kind.as_str() {
            "uuid" => format!(
                "SELECT count(*) FROM \"{table}\"
                  WHERE \"{name}\" = ANY($1) AND $2::text[] IS NOT NULL"
            ),
            _ => format!(
                "SELECT count(*) FROM \"{table}\"
                  WHERE $1::uuid[] IS NOT NULL
                    AND EXISTS (SELECT 1 FROM unnest($2::text[]) AS n
                                 WHERE strpos(\"{name}\"::text, n) > 0)"
            ),
        };
        let n: i64 = client
            .query_one(&sql, &[&ids, &texts])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0);
        if n > 0 {
            found.push(format!("{table}.{name}: {n}"));
        }
    }
    found
}

/// `(id, kind, occurred_at, reason)` of the events of `user_id`, or of the anonymised ones.
async fn event_facts(
    db: &TestDb,
    user_id: Option<Uuid>,
) -> Vec<(i64, String, chrono::DateTime<chrono::Utc>, Option<String>)> {
    let sql = match user_id {
        Some(_) => {
            "SELECT id, kind, occurred_at, reason FROM auth_events WHERE user_id = $1 ORDER BY id"
        }
        None => {
            "SELECT id, kind, occurred_at, reason FROM auth_events
                  WHERE anonymised_at IS NOT NULL AND $1::uuid IS NULL ORDER BY id"
        }
    };
    db.client()
        .await
        .query(sql, &[&user_id])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

#[tokio::test]
async fn after_the_period_the_purge_leaves_nothing_of_the_account_but_its_anonymised_events() {
    let (app, mail) = app_with_mail(|c| c.mail.verification = Verification::Soft).await;
    // A bystander, whose rows the purge must leave alone.
    let (bystander, bystander_token) = app.user_with_token().await;
    let bystander_id = user_id(&app.db, &bystander).await;

    // An account with a bit of everything: sessions, a device token, a failed login, a
    // verification and a reset secret and their emails, a refused deletion — every request
    // from a user agent of its own, to be looked for afterwards.
    let marker = format!("deletion-marker-{}", Uuid::new_v4().simple());
    let client = |token: Option<&str>| {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {token}").parse().unwrap(),
            );
        }
        let http = reqwest::Client::builder()
            .user_agent(marker.as_str())
            .default_headers(headers)
            .build()
            .unwrap();
        Client::new_with_client(&app.base_url, http)
    };
    let anonymous = client(None);
    let email = unique_email();
    anonymous
        .signup()
        .body(
            types::Credentials::builder()
                .email(email.as_str())
                .password(PASSWORD),
        )
        .send()
        .await
        .unwrap();
    let id = user_id(&app.db, &email).await;
    let login = |password: &'static str| {
        anonymous
            .login()
            .body(
                types::LoginRequest::builder()
                    .email(email.as_str())
                    .password(password),
            )
            .send()
    };
    expect_error(login("a wrong guess").await, 401, "invalid_credentials");
    let session = login(PASSWORD).await.unwrap().into_inner();
    let _second = login(PASSWORD).await.unwrap();
    anonymous
        .forgot_password()
        .body(types::EmailAddress::builder().email(email.as_str()))
        .send()
        .await
        .unwrap();
    mail.wait_for_to(&email, 2, MAIL_DELIVERY).await;
    let owner = client(Some(&session.access_token));
    owner
        .refresh()
        .body(
            types::RefreshRequest::builder()
                .refresh_token(session.refresh_token.as_deref().map(|t| t.parse().unwrap())),
        )
        .send()
        .await
        .unwrap();
    expect_error(
        delete_me(&owner, "a wrong password").await,
        401,
        "invalid_credentials",
    );
    // The refresh rotated the session's tokens; the access token still names it.
    delete_me(&owner, PASSWORD).await.expect("deleted");
    outbox_drained(&app.db, id).await;

    // What identifies the account anywhere: its ids, its sessions', secrets' and emails'
    // ids, its address (and the placeholder), its user agent, its requests' ids.
    let client_db = app.db.client().await;
    let mut ids = vec![id];
    for sql in [
        "SELECT id FROM sessions WHERE user_id = $1",
        "SELECT id FROM one_time_secrets WHERE user_id = $1",
        "SELECT id FROM email_outbox WHERE user_id = $1",
    ] {
        let rows = client_db.query(sql, &[&id]).await.unwrap();
        assert!(!rows.is_empty(), "{sql}: the account has some");
        ids.extend(rows.iter().map(|r| r.get::<_, Uuid>(0)));
    }
    let request_ids: Vec<String> = client_db
        .query(
            "SELECT request_id FROM auth_events WHERE user_id = $1 AND request_id IS NOT NULL",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut texts = vec![
        email.clone(),
        format!("deleted+{id}@invalid"),
        marker.clone(),
    ];
    texts.extend(ids.iter().map(Uuid::to_string));
    texts.extend(request_ids);
    let before = traces(&app.db, &ids, &texts).await;
    for expected in [
        "users.id",
        "sessions.user_id",
        "refresh_tokens.session_id",
        "one_time_secrets.user_id",
        "email_outbox.recipient",
        "auth_events.user_id",
        "auth_events.user_agent",
        "auth_events.request_id",
        "sessions.user_agent",
    ] {
        assert!(
            before
                .iter()
                .any(|t| t.starts_with(&format!("{expected}:"))),
            "{expected} before the purge, in {before:?}"
        );
    }
    let events = event_facts(&app.db, Some(id)).await;
    assert!(events.len() >= 8, "{events:?}");

    // Not before the period (30 days by default) is over.
    let period = app.state.config.account_purge;
    assert_eq!(period, 30 * DAY);
    assert_eq!(accounts::purge(&app.state.db, period).await.unwrap(), 0);
    deleted_ago(&app.db, id, 29 * DAY).await;
    assert_eq!(accounts::purge(&app.state.db, period).await.unwrap(), 0);
    deleted_ago(&app.db, id, 2 * DAY).await;
    assert_eq!(accounts::purge(&app.state.db, period).await.unwrap(), 1);
    assert_eq!(accounts::purge(&app.state.db, period).await.unwrap(), 0);

    let after = traces(&app.db, &ids, &texts).await;
    assert!(after.is_empty(), "left after the purge: {after:?}");
    // The events stay, anonymised: kind, time and reason, nothing else.
    assert_eq!(event_facts(&app.db, None).await, events);
    let bare = app
        .db
        .count(
            "SELECT count(*) FROM auth_events
              WHERE anonymised_at IS NOT NULL AND user_id IS NULL AND session_id IS NULL
                AND ip IS NULL AND user_agent IS NULL AND request_id IS NULL",
        )
        .await;
    assert_eq!(bare, events.len() as i64);
    // The bystander is untouched.
    app.authed(&bystander_token).get_me().send().await.unwrap();
    let theirs = event_facts(&app.db, Some(bystander_id)).await;
    assert_eq!(
        theirs.len(),
        3,
        "signup, verification sent, login: {theirs:?}"
    );
    // And pruned like every event once EVENT_RETENTION_DAYS have passed.
    app.db
        .client()
        .await
        .execute(
            "UPDATE auth_events SET occurred_at = occurred_at - interval '91 days'
              WHERE anonymised_at IS NOT NULL",
            &[],
        )
        .await
        .unwrap();
    let pruned = jobpath_server::db::events::prune(&app.state.db, app.state.config.event_retention)
        .await
        .unwrap();
    assert_eq!(pruned, events.len() as u64);
}

#[tokio::test]
async fn the_purge_waits_for_the_final_notice_to_leave_the_outbox() {
    let (app, mut mail) = app_with_mail(|c| c.mail.verification = Verification::Off).await;
    mail.stop().await;
    let (email, token) = app.user_with_token().await;
    let id = user_id(&app.db, &email).await;
    delete_me(&app.authed(&token), PASSWORD).await.unwrap();
    deleted_ago(&app.db, id, 31 * DAY).await;
    let period = app.state.config.account_purge;
    assert_eq!(accounts::purge(&app.state.db, period).await.unwrap(), 0);
    mail.restart().await;
    mail.wait_for_to(&email, 1, Duration::from_secs(60)).await;
    outbox_drained(&app.db, id).await;
    assert_eq!(accounts::purge(&app.state.db, period).await.unwrap(), 1);
}

/// Deletes `n` accounts through the API; returns their ids.
async fn deleted_accounts(app: &TestServer, db: &TestDb, n: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let (email, token) = app.user_with_token().await;
        ids.push(user_id(db, &email).await);
        delete_me(&app.authed(&token), PASSWORD).await.unwrap();
    }
    for id in &ids {
        outbox_drained(db, *id).await;
    }
    ids
}

#[tokio::test]
async fn two_instances_purging_at_once_purge_each_account_once() {
    let db = TestDb::create().await;
    let (a, b) = tokio::join!(
        TestServer::start(test_config(&db)),
        TestServer::start(test_config(&db))
    );
    let ids = deleted_accounts(&a, &db, 24).await;
    for id in &ids {
        deleted_ago(&db, *id, 31 * DAY).await;
    }
    let events = db
        .count("SELECT count(*) FROM auth_events WHERE user_id IS NOT NULL")
        .await;
    // Small batches, so that the two interleave.
    let purge = |server: &TestServer| {
        let state = Arc::clone(&server.state);
        async move {
            let mut total = 0;
            loop {
                let n = accounts::purge_batch(&state.db, 30 * DAY, 3).await.unwrap();
                total += n;
                if n == 0 {
                    return total;
                }
            }
        }
    };
    let (on_a, on_b) = tokio::join!(purge(&a), purge(&b));
    println!("purged by a: {on_a}, by b: {on_b}");
    assert_eq!(on_a + on_b, ids.len() as u64);
    assert_eq!(db.count("SELECT count(*) FROM users").await, 0);
    let anonymised = db
        .count("SELECT count(*) FROM auth_events WHERE anonymised_at IS NOT NULL")
        .await;
    assert_eq!(anonymised, events);
}

#[tokio::test]
async fn instances_starting_together_with_a_zero_period_purge_at_their_first_pass_once() {
    let db = TestDb::create().await;
    let a = TestServer::start(test_config(&db)).await;
    let ids = deleted_accounts(&a, &db, 5).await;
    let capture = crate::capture::Capture::start();
    let at_once = || {
        let mut c = test_config(&db);
        c.account_purge = Duration::ZERO;
        c
    };
    let (b, c) = tokio::join!(TestServer::start(at_once()), TestServer::start(at_once()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while db.count("SELECT count(*) FROM users").await > 0 {
        assert!(Instant::now() < deadline, "not purged in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut purged = 0;
    let json = capture.json();
    for line in json.lines() {
        let line: serde_json::Value = serde_json::from_str(line).unwrap();
        let fields = &line["fields"];
        assert_ne!(
            fields["message"], "purging deleted accounts failed",
            "{line}"
        );
        if fields["message"] == "purged deleted accounts" {
            purged += fields["purged"].as_u64().unwrap();
        }
    }
    assert_eq!(purged, ids.len() as u64, "{json}");
    drop((b, c, a));
}

/// An admin who acted on others and is then deleted and purged: the events of their
/// actions on other accounts stay whole but for `actor_id`; and a deactivated account's
/// purge erases the admin's free-text reason from its own events.
#[tokio::test]
async fn the_purge_of_an_admin_erases_their_id_from_what_they_did_and_of_a_deactivated_account_the_reason()
 {
    let app = spawn_app().await;
    let (admin_email, _) = app.user_with_token().await;
    let admin_id = user_id(&app.db, &admin_email).await;
    jobpath_server::admin(
        &crate::helpers::test_config(&app.db),
        &jobpath_server::cli::AdminCommand::Grant(admin_email.clone()),
    )
    .await
    .unwrap();
    let admin = app.login(&admin_email, PASSWORD).await;
    let (kept_email, _) = app.user_with_token().await;
    let kept = user_id(&app.db, &kept_email).await;
    let (gone_email, _) = app.user_with_token().await;
    let gone = user_id(&app.db, &gone_email).await;
    let reason = "reported by jane.doe@example.com";
    for target in [kept, gone] {
        app.authed(&admin)
            .admin_deactivate_user()
            .user_id(target)
            .body(types::Deactivation {
                reason: reason.parse().unwrap(),
            })
            .send()
            .await
            .unwrap();
    }
    app.authed(&admin)
        .admin_delete_user()
        .user_id(gone)
        .send()
        .await
        .unwrap();
    delete_me(&app.authed(&admin), PASSWORD).await.unwrap();
    for id in [gone, admin_id] {
        deleted_ago(&app.db, id, 31 * DAY).await;
        outbox_drained(&app.db, id).await;
    }
    let period = app.state.config.account_purge;
    assert_eq!(accounts::purge(&app.state.db, period).await.unwrap(), 2);

    assert!(
        traces(&app.db, &[admin_id, gone], &[admin_email, gone_email])
            .await
            .is_empty()
    );
    // The kept account's deactivation is still whole, but for who did it.
    let client = app.db.client().await;
    let row = client
        .query_one(
            "SELECT actor_id, reason, anonymised_at FROM auth_events
              WHERE user_id = $1 AND kind = 'account_deactivated'",
            &[&kept],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<Uuid>>(0), None);
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some(reason));
    assert!(
        row.get::<_, Option<chrono::DateTime<chrono::Utc>>>(2)
            .is_none()
    );
    // The purged account's own deactivation keeps its kind and time, not the reason.
    let reasons: Vec<Option<String>> = client
        .query(
            "SELECT reason FROM auth_events
              WHERE anonymised_at IS NOT NULL AND kind = 'account_deactivated'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(reasons, [None]);
}
