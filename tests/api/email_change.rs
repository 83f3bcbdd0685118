//! Changing the email address (`request_email_change`, `confirm_email_change`,
//! `cancel_email_change`) through the generated client, with the emails delivered to a real
//! SMTP server (`jobpath_tests::smtp`) and their links followed; the confirmation page in a
//! real Chromium (`tests/browser/email-change.mjs`).
//!
//! The races: two confirmations of one token, and a confirmation against a signup or
//! another account's confirmation for the same address (the unique index decides; the
//! loser gets 409, never a 500).

use jobpath_client::types;
use jobpath_server::config::{Config, Verification};
use jobpath_tests::smtp::{Mail, MailServer};

use crate::helpers::{
    ApiResult, MAIL_DELIVERY, PASSWORD, TestApp, TestDb, TestServer, emailed_token, expect_error,
    mail_to, spawn_app_with, test_config, unique_email,
};

/// Where links point: a front end of its own, as in production.
const FRONT_END: &str = "https://app.example.com";

async fn app_with_mail(customise: impl FnOnce(&mut Config)) -> (TestApp, MailServer) {
    let mail = MailServer::start().await;
    let app = spawn_app_with(|c| {
        mail_to(c, &mail, FRONT_END);
        // No verification emails: every message in these tests is an email-change one.
        c.mail.verification = Verification::Off;
        customise(c);
    })
    .await;
    (app, mail)
}

async fn request(
    app: &TestServer,
    access_token: &str,
    new_email: &str,
    password: &str,
) -> ApiResult<types::MessageResponse> {
    app.authed(access_token)
        .request_email_change()
        .body(
            types::EmailChangeRequest::builder()
                .new_email(new_email)
                .password(password),
        )
        .send()
        .await
}

async fn confirm(app: &TestServer, token: &str) -> ApiResult<types::EmailChanged> {
    app.api
        .confirm_email_change()
        .body(types::SecretToken::builder().token(token))
        .send()
        .await
}

async fn cancel(app: &TestServer, token: &str) -> ApiResult<types::MessageResponse> {
    app.api
        .cancel_email_change()
        .body(types::SecretToken::builder().token(token))
        .send()
        .await
}

/// The `n`th message (from 1) to `email` whose subject contains `subject`, once it has
/// arrived (the harness's wait panics if it does not within `MAIL_DELIVERY`).
async fn nth_mail(mail: &MailServer, email: &str, n: usize, subject: &str) -> Mail {
    // Other messages to the address may come first: wait for one more until enough match.
    for arrived in n.. {
        let matching: Vec<Mail> = mail
            .wait_for_to(email, arrived, MAIL_DELIVERY)
            .await
            .into_iter()
            .filter(|m| m.header("subject").unwrap_or_default().contains(subject))
            .collect();
        if let Some(m) = matching.into_iter().nth(n - 1) {
            return m;
        }
    }
    unreachable!("the wait panics first")
}

/// The confirmation token of the `n`th confirmation sent to `new_email`.
async fn confirm_token(mail: &MailServer, new_email: &str, n: usize) -> String {
    let m = nth_mail(mail, new_email, n, "Confirm your new email address").await;
    emailed_token(&m, FRONT_END, "confirm-email-change")
}

/// The cancel token of the `n`th notice sent to `email`, the current address.
async fn cancel_token(mail: &MailServer, email: &str, n: usize) -> String {
    let m = nth_mail(mail, email, n, "is about to change").await;
    emailed_token(&m, FRONT_END, "cancel-email-change")
}

async fn me(app: &TestServer, access_token: &str) -> ApiResult<types::User> {
    app.authed(access_token).get_me().send().await
}

async fn event_kinds(app: &TestServer, access_token: &str) -> Vec<String> {
    app.authed(access_token)
        .list_events()
        .send()
        .await
        .unwrap()
        .into_inner()
        .events
        .into_iter()
        .map(|e| e.kind.to_string())
        .collect()
}

#[tokio::test]
async fn a_confirmed_change_moves_the_login_to_the_new_verified_address_and_ends_other_sessions() {
    let (app, mail) = app_with_mail(|_| {}).await;
    let (old, new) = (unique_email(), unique_email());
    app.signup(&old, PASSWORD).await;
    let mine = app.login(&old, PASSWORD).await;
    let other = app.login(&old, PASSWORD).await;
    // A reset link issued before the change must die with it.
    app.api
        .forgot_password()
        .body(types::EmailAddress::builder().email(old.as_str()))
        .send()
        .await
        .unwrap();
    let reset = nth_mail(&mail, &old, 1, "Reset").await;
    let reset_token = emailed_token(&reset, FRONT_END, "reset-password");

    let accepted = request(&app, &mine, &new, PASSWORD).await.expect("202");
    assert_eq!(accepted.status().as_u16(), 202);
    let token = confirm_token(&mail, &new, 1).await;
    cancel_token(&mail, &old, 1).await;
    // Nothing has changed yet.
    assert_eq!(me(&app, &mine).await.unwrap().email, old);
    expect_error(
        app.try_login(&new, PASSWORD).await,
        401,
        "invalid_credentials",
    );

    let changed = confirm(&app, &token).await.expect("200").into_inner();
    assert_eq!(changed.email, new);
    assert!(changed.email_verified);

    expect_error(
        app.try_login(&old, PASSWORD).await,
        401,
        "invalid_credentials",
    );
    let session = app.session(&new, PASSWORD).await;
    assert!(
        session.user.email_verified,
        "the new address counts as verified"
    );
    expect_error(me(&app, &other).await, 401, "invalid_token");
    let still = me(&app, &mine).await.expect("the asking session goes on");
    assert_eq!(still.email, new);
    assert!(still.email_verified);

    // Both addresses are told, and the old reset link is dead.
    nth_mail(&mail, &old, 1, "was changed").await;
    nth_mail(&mail, &new, 1, "was changed").await;
    let reset = app
        .api
        .reset_password()
        .body(types::PasswordReset::Variant0 {
            token: reset_token.parse().unwrap(),
            new_password: "a fresh and unguessable passphrase".parse().unwrap(),
        })
        .send()
        .await;
    expect_error(reset, 403, "invalid_secret");
    // The token works once.
    expect_error(confirm(&app, &token).await, 403, "invalid_secret");

    let kinds = event_kinds(&app, &mine).await;
    assert!(
        kinds.contains(&"email_change_requested".to_owned()),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&"email_change_confirmed".to_owned()),
        "{kinds:?}"
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM sessions WHERE end_reason = 'email_changed'")
            .await,
        1
    );
    assert_eq!(
        app.db.count("SELECT count(*) FROM email_changes").await,
        0,
        "the new address is not kept once the change is done"
    );
}

#[tokio::test]
async fn the_notices_cancel_link_kills_the_change_and_ends_every_session() {
    let (app, mail) = app_with_mail(|_| {}).await;
    let (old, new) = (unique_email(), unique_email());
    app.signup(&old, PASSWORD).await;
    let mine = app.login(&old, PASSWORD).await;
    let other = app.login(&old, PASSWORD).await;
    request(&app, &mine, &new, PASSWORD).await.expect("202");
    let confirmation = confirm_token(&mail, &new, 1).await;
    let token = cancel_token(&mail, &old, 1).await;

    cancel(&app, &token).await.expect("200");
    expect_error(me(&app, &mine).await, 401, "invalid_token");
    expect_error(me(&app, &other).await, 401, "invalid_token");
    expect_error(confirm(&app, &confirmation).await, 403, "invalid_secret");
    expect_error(cancel(&app, &token).await, 403, "invalid_secret");
    expect_error(
        app.try_login(&new, PASSWORD).await,
        401,
        "invalid_credentials",
    );
    let fresh = app.login(&old, PASSWORD).await;
    assert!(
        event_kinds(&app, &fresh)
            .await
            .contains(&"email_change_cancelled".to_owned())
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM sessions WHERE end_reason = 'email_change_cancelled'")
            .await,
        2
    );
    assert_eq!(app.db.count("SELECT count(*) FROM email_changes").await, 0);
}

#[tokio::test]
async fn an_address_that_has_an_account_gets_nothing_and_the_answer_does_not_tell() {
    let (app, mail) = app_with_mail(|_| {}).await;
    let (old, taken, free) = (unique_email(), unique_email(), unique_email());
    app.signup(&old, PASSWORD).await;
    app.signup(&taken, PASSWORD).await;
    let mine = app.login(&old, PASSWORD).await;

    let to_taken = request(&app, &mine, &taken, PASSWORD).await.expect("202");
    // The notice to the current address still goes.
    cancel_token(&mail, &old, 1).await;
    let to_own = request(&app, &mine, &old.to_uppercase(), PASSWORD)
        .await
        .expect("202");
    cancel_token(&mail, &old, 2).await;
    let to_free = request(&app, &mine, &free, PASSWORD).await.expect("202");
    confirm_token(&mail, &free, 1).await;
    assert_eq!(to_taken.status(), to_free.status());
    assert_eq!(to_taken.message, to_free.message);
    assert_eq!(to_own.message, to_free.message);

    // Every message was queued by its request's transaction: none was ever meant for the
    // taken address, and none reached it.
    assert_eq!(
        app.db
            .count_with(
                "SELECT count(*) FROM email_outbox WHERE recipient = $1",
                &[&taken]
            )
            .await,
        0
    );
    mail.wait_for(4, MAIL_DELIVERY).await;
    assert!(
        mail.messages().iter().all(|m| !m
            .envelope_to
            .iter()
            .any(|to| to.eq_ignore_ascii_case(&taken))),
        "nothing is sent to an address that has an account"
    );
    // The events say the same for all three.
    let kinds = event_kinds(&app, &mine).await;
    assert_eq!(
        kinds
            .iter()
            .filter(|k| *k == "email_change_requested")
            .count(),
        3,
        "{kinds:?}"
    );
}

#[tokio::test]
async fn a_wrong_password_is_refused_as_a_password_change_refuses_it_and_sends_nothing() {
    let (app, _mail) = app_with_mail(|_| {}).await;
    let (old, new) = (unique_email(), unique_email());
    app.signup(&old, PASSWORD).await;
    let mine = app.login(&old, PASSWORD).await;
    let refused = expect_error(
        request(&app, &mine, &new, "not the password").await,
        401,
        "invalid_credentials",
    );
    let change = app
        .authed(&mine)
        .change_password()
        .body(
            types::PasswordChange::builder()
                .current_password("not the password")
                .new_password("a fresh and unguessable passphrase"),
        )
        .send()
        .await;
    let by_password_change = expect_error(change, 401, "invalid_credentials");
    assert_eq!(refused.detail.message, by_password_change.detail.message);
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM email_outbox WHERE kind LIKE 'email_change%'")
            .await,
        0
    );
    assert!(
        event_kinds(&app, &mine)
            .await
            .contains(&"email_change_failed".to_owned())
    );
    // Without a token it is the guard's refusal.
    let anonymous = app
        .api
        .request_email_change()
        .body(
            types::EmailChangeRequest::builder()
                .new_email(new.as_str())
                .password(PASSWORD),
        )
        .send()
        .await;
    expect_error(anonymous, 401, "missing_token");
}

#[tokio::test]
async fn expired_replaced_and_unknown_tokens_are_refused_alike_and_expired_addresses_are_erased() {
    let (app, mail) = app_with_mail(|_| {}).await;
    let (old, first, second) = (unique_email(), unique_email(), unique_email());
    app.signup(&old, PASSWORD).await;
    let mine = app.login(&old, PASSWORD).await;
    request(&app, &mine, &first, PASSWORD).await.unwrap();
    let replaced = confirm_token(&mail, &first, 1).await;
    let replaced_cancel = cancel_token(&mail, &old, 1).await;
    request(&app, &mine, &second, PASSWORD).await.unwrap();
    let live = confirm_token(&mail, &second, 1).await;
    cancel_token(&mail, &old, 2).await;
    assert_eq!(
        app.db.count("SELECT count(*) FROM email_changes").await,
        1,
        "one pending change: the new request replaced the first"
    );
    let by_replaced = expect_error(confirm(&app, &replaced).await, 403, "invalid_secret");
    expect_error(cancel(&app, &replaced_cancel).await, 403, "invalid_secret");

    app.db
        .client()
        .await
        .execute(
            "UPDATE one_time_secrets SET expires_at = now() - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    let by_expired = expect_error(confirm(&app, &live).await, 403, "invalid_secret");
    let by_unknown = expect_error(
        confirm(&app, "not-a-token-anyone-was-sent").await,
        403,
        "invalid_secret",
    );
    assert_eq!(by_replaced.detail.message, by_expired.detail.message);
    assert_eq!(by_unknown.detail.message, by_expired.detail.message);
    assert_eq!(me(&app, &mine).await.unwrap().email, old);

    // The maintenance prune erases the expired change's address.
    assert_eq!(app.db.count("SELECT count(*) FROM email_changes").await, 1);
    let erased = jobpath_server::db::email_change::prune(&app.state.db)
        .await
        .unwrap();
    assert_eq!(erased, 1);
    assert_eq!(app.db.count("SELECT count(*) FROM email_changes").await, 0);
}

#[tokio::test]
async fn consuming_a_users_live_secrets_ends_their_pending_change_and_erases_its_address() {
    // What account deletion and deactivation do: the change dies with its secret.
    let (app, mail) = app_with_mail(|_| {}).await;
    let (old, new) = (unique_email(), unique_email());
    app.signup(&old, PASSWORD).await;
    let mine = app.login(&old, PASSWORD).await;
    request(&app, &mine, &new, PASSWORD).await.unwrap();
    let token = confirm_token(&mail, &new, 1).await;
    app.db
        .client()
        .await
        .execute(
            "UPDATE one_time_secrets SET consumed_at = now() WHERE consumed_at IS NULL",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(app.db.count("SELECT count(*) FROM email_changes").await, 0);
    expect_error(confirm(&app, &token).await, 403, "invalid_secret");
}

#[tokio::test]
async fn two_concurrent_confirmations_of_one_token_change_the_address_once() {
    let (app, mail) = app_with_mail(|_| {}).await;
    let old = unique_email();
    app.signup(&old, PASSWORD).await;
    let mine = app.login(&old, PASSWORD).await;
    for round in 0..3 {
        let new = unique_email();
        request(&app, &mine, &new, PASSWORD).await.unwrap();
        let token = confirm_token(&mail, &new, 1).await;
        let (a, b) = tokio::join!(confirm(&app, &token), confirm(&app, &token));
        let statuses = [&a, &b].map(|r| match r {
            Ok(v) => v.status().as_u16(),
            Err(jobpath_client::Error::ErrorResponse(e)) => e.status().as_u16(),
            Err(e) => panic!("{e:?}"),
        });
        let mut sorted = statuses;
        sorted.sort();
        assert_eq!(
            sorted,
            [200, 403],
            "round {round}: exactly one confirmation wins"
        );
        assert_eq!(
            app.db
                .count("SELECT count(*) FROM auth_events WHERE kind = 'email_change_confirmed'")
                .await,
            round + 1,
            "one change recorded per token"
        );
        assert_eq!(me(&app, &mine).await.unwrap().email, new);
    }
    // One "was changed" notice to each new address, never two.
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM email_outbox WHERE kind = 'email_changed'")
            .await,
        6
    );
}

fn status<T: std::fmt::Debug>(r: &ApiResult<T>) -> (u16, String) {
    match r {
        Ok(v) => (v.status().as_u16(), String::new()),
        Err(jobpath_client::Error::ErrorResponse(e)) => (e.status().as_u16(), e.error.clone()),
        Err(e) => panic!("{e:?}"),
    }
}

#[tokio::test]
async fn a_confirmation_racing_a_signup_or_another_confirmation_for_one_address_lets_one_win() {
    let (app, mail) = app_with_mail(|_| {}).await;
    // Against a signup.
    let old = unique_email();
    app.signup(&old, PASSWORD).await;
    let mine = app.login(&old, PASSWORD).await;
    for _ in 0..3 {
        let contested = unique_email();
        request(&app, &mine, &contested, PASSWORD).await.unwrap();
        let token = confirm_token(&mail, &contested, 1).await;
        let signup = app
            .api
            .signup()
            .body(
                types::Credentials::builder()
                    .email(contested.as_str())
                    .password(PASSWORD),
            )
            .send();
        let (c, s) = tokio::join!(confirm(&app, &token), signup);
        let outcomes = (status(&c), status(&s));
        assert!(
            matches!(
                (&outcomes.0, &outcomes.1),
                ((200, _), (409, _)) | ((409, _), (201, _))
            ),
            "exactly one wins: {outcomes:?}"
        );
        if outcomes.0.0 == 409 {
            assert_eq!(outcomes.0.1, "email_already_registered");
        }
        assert_eq!(
            app.db
                .count_with("SELECT count(*) FROM users WHERE email = $1", &[&contested])
                .await,
            1
        );
    }

    // Against another account's confirmation.
    let (a, b) = (unique_email(), unique_email());
    app.signup(&a, PASSWORD).await;
    app.signup(&b, PASSWORD).await;
    let (ta, tb) = (app.login(&a, PASSWORD).await, app.login(&b, PASSWORD).await);
    let contested = unique_email();
    request(&app, &ta, &contested, PASSWORD).await.unwrap();
    let token_a = confirm_token(&mail, &contested, 1).await;
    request(&app, &tb, &contested, PASSWORD).await.unwrap();
    let token_b = confirm_token(&mail, &contested, 2).await;
    let (ra, rb) = tokio::join!(confirm(&app, &token_a), confirm(&app, &token_b));
    let mut outcomes = [status(&ra), status(&rb)];
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            (200, String::new()),
            (409, "email_already_registered".to_owned())
        ]
    );
    assert_eq!(
        app.db
            .count_with("SELECT count(*) FROM users WHERE email = $1", &[&contested])
            .await,
        1
    );
    assert!(
        event_kinds(&app, if ra.is_err() { &ta } else { &tb })
            .await
            .contains(&"email_change_failed".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emailed_confirmation_link_changes_the_address_in_chromium_after_a_click() {
    let mail = MailServer::start().await;
    let db = TestDb::create().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pages = format!("http://{}/account", listener.local_addr().unwrap());
    let mut config = test_config(&db);
    mail_to(&mut config, &mail, &pages);
    config.mail.verification = Verification::Off;
    let app = TestApp {
        server: TestServer::start_on(listener, config).await,
        db,
    };
    let (old, new) = (unique_email(), unique_email());
    app.signup(&old, PASSWORD).await;
    let mine = app.login(&old, PASSWORD).await;
    request(&app, &mine, &new, PASSWORD).await.unwrap();
    let message = nth_mail(&mail, &new, 1, "Confirm your new email address").await;
    let token = emailed_token(&message, &pages, "confirm-email-change");
    let link = format!("{pages}/confirm-email-change#token={token}");

    let report =
        crate::browser::drive("email-change.mjs", &[&app.base_url, &link, &new], &[]).await;
    assert!(report.contains("changed by the click"), "{report}");
    assert_eq!(me(&app, &mine).await.unwrap().email, new);
}

/// How many "is about to change" notices `email` has been sent so far.
fn notices_to(mail: &MailServer, email: &str) -> usize {
    mail.messages()
        .iter()
        .filter(|m| {
            m.header("subject")
                .unwrap_or_default()
                .contains("is about to change")
        })
        .filter(|m| {
            m.envelope_to
                .iter()
                .any(|to| to.eq_ignore_ascii_case(email))
        })
        .count()
}

#[tokio::test]
async fn a_cancellation_racing_a_confirmation_or_another_cancellation_lets_one_act() {
    let (app, mail) = app_with_mail(|_| {}).await;
    let mut current = unique_email();
    app.signup(&current, PASSWORD).await;
    for round in 1..=3 {
        let mine = app.login(&current, PASSWORD).await;
        let new = unique_email();
        let before = notices_to(&mail, &current);
        request(&app, &mine, &new, PASSWORD).await.unwrap();
        let confirmation = confirm_token(&mail, &new, 1).await;
        let cancellation = cancel_token(&mail, &current, before + 1).await;
        let (c, x) = tokio::join!(confirm(&app, &confirmation), cancel(&app, &cancellation));
        let outcomes = (status(&c).0, status(&x).0);
        assert!(
            matches!(outcomes, (200, 403) | (403, 200)),
            "round {round}: the change is confirmed or cancelled, never both: {outcomes:?}"
        );
        let email: String = app
            .db
            .client()
            .await
            .query_one("SELECT email FROM users", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(email == new, outcomes.0 == 200, "round {round}");
        current = email;
    }

    // Two concurrent cancellations with one token: one ends the sessions, the other is 403.
    let mine = app.login(&current, PASSWORD).await;
    let before = notices_to(&mail, &current);
    request(&app, &mine, &unique_email(), PASSWORD)
        .await
        .unwrap();
    let token = cancel_token(&mail, &current, before + 1).await;
    let (a, b) = tokio::join!(cancel(&app, &token), cancel(&app, &token));
    let mut outcomes = [status(&a).0, status(&b).0];
    outcomes.sort();
    assert_eq!(outcomes, [200, 403]);
    expect_error(me(&app, &mine).await, 401, "invalid_token");
}

#[tokio::test]
async fn concurrent_requests_of_one_account_leave_one_pending_change() {
    let (app, mail) = app_with_mail(|_| {}).await;
    let old = unique_email();
    app.signup(&old, PASSWORD).await;
    let mine = app.login(&old, PASSWORD).await;
    let (first, second) = (unique_email(), unique_email());
    let (a, b) = tokio::join!(
        request(&app, &mine, &first, PASSWORD),
        request(&app, &mine, &second, PASSWORD)
    );
    a.unwrap();
    b.unwrap();
    assert_eq!(app.db.count("SELECT count(*) FROM email_changes").await, 1);
    assert_eq!(
        app.db
            .count(
                "SELECT count(*) FROM one_time_secrets
                  WHERE consumed_at IS NULL AND purpose LIKE 'email_change%'"
            )
            .await,
        2,
        "one confirmation and one cancel secret are live"
    );
    let (t1, t2) = (
        confirm_token(&mail, &first, 1).await,
        confirm_token(&mail, &second, 1).await,
    );
    let (r1, r2) = (confirm(&app, &t1).await, confirm(&app, &t2).await);
    let mut outcomes = [status(&r1).0, status(&r2).0];
    outcomes.sort();
    assert_eq!(
        outcomes,
        [200, 403],
        "only the later request can be confirmed"
    );
}

#[tokio::test]
async fn the_per_ip_and_per_recipient_limits_hold_email_changes() {
    let (app, mail) = app_with_mail(|c| {
        c.mail.per_recipient_per_hour = 2;
        c.rate_limits.password_change_per_ip = 3;
        c.rate_limits.verify_per_ip = 1;
    })
    .await;
    let old = unique_email();
    app.signup(&old, PASSWORD).await;
    let mine = app.login(&old, PASSWORD).await;
    // Past two notices in the hour, a request is answered alike and issues nothing.
    for n in 1..=3 {
        let answer = request(&app, &mine, &unique_email(), PASSWORD)
            .await
            .expect("202");
        assert_eq!(answer.status().as_u16(), 202, "request {n}");
    }
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM email_outbox WHERE kind = 'email_change_notice'")
            .await,
        2
    );
    cancel_token(&mail, &old, 2).await;
    // The fourth from this IP is over the per-IP limit.
    let refused = expect_error(
        request(&app, &mine, &unique_email(), PASSWORD).await,
        429,
        "rate_limited",
    );
    assert!(refused.headers().contains_key("retry-after"));
    // Confirm and cancel share their own per-IP limit.
    expect_error(confirm(&app, "not-a-token").await, 403, "invalid_secret");
    expect_error(cancel(&app, "not-a-token").await, 429, "rate_limited");
}
