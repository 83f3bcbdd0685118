//! Email that arrives: password reset and email verification through the generated client,
//! against a real SMTP server (`jobpath_tests::smtp`, aiosmtpd) that stores what it
//! receives, whose messages the tests open, follow and check.
//!
//! The outbox's delivery rules (the SMTP server down, two instances draining one outbox) are
//! here too; the crash between claim and send needs a process to kill and lives with the
//! binary's own tests (`server/tests/cli/outbox.rs`).

use std::str::FromStr;
use std::time::{Duration, Instant};

use jobpath_client::types;
use jobpath_server::config::{Config, Verification};
use jobpath_tests::smtp::{Mail, MailServer};

use crate::helpers::{
    ApiResult, MAIL_DELIVERY, MAIL_FROM, PASSWORD, TestApp, TestDb, TestServer, claims,
    emailed_code, emailed_token, expect_error, mail_to, spawn_app_with, test_config, unique_email,
};

/// Where links point in these tests: a front end of its own, as in production.
const FRONT_END: &str = "https://app.example.com";
const FROM: &str = MAIL_FROM;
const DELIVERY: Duration = MAIL_DELIVERY;
const NEW_PASSWORD: &str = "a fresh and unguessable passphrase";

async fn app_with_mail(customise: impl FnOnce(&mut Config)) -> (TestApp, MailServer) {
    let mail = MailServer::start().await;
    let app = spawn_app_with(|c| {
        mail_to(c, &mail, FRONT_END);
        customise(c);
    })
    .await;
    (app, mail)
}

fn opt<T: FromStr>(value: &str) -> Option<T>
where
    T::Err: std::fmt::Debug,
{
    Some(value.parse().unwrap())
}

/// The 8-digit code of the message.
fn code(mail: &Mail) -> String {
    emailed_code(mail)
}

/// The token of the message's link to `page` of the front end.
fn link_token(mail: &Mail, page: &str) -> String {
    emailed_token(mail, FRONT_END, page)
}

async fn forgot(app: &TestServer, email: &str) -> ApiResult<types::MessageResponse> {
    app.api
        .forgot_password()
        .body(types::EmailAddress::builder().email(email))
        .send()
        .await
}

async fn reset_with_token(
    app: &TestServer,
    token: &str,
    new_password: &str,
) -> ApiResult<types::MessageResponse> {
    app.api
        .reset_password()
        .body(types::PasswordReset::Variant0 {
            token: token.parse().unwrap(),
            new_password: new_password.parse().unwrap(),
        })
        .send()
        .await
}

async fn reset_with_code(
    app: &TestServer,
    email: &str,
    code: &str,
    new_password: &str,
) -> ApiResult<types::MessageResponse> {
    app.api
        .reset_password()
        .body(types::PasswordReset::Variant1 {
            email: email.parse().unwrap(),
            code: code.parse().unwrap(),
            new_password: new_password.parse().unwrap(),
        })
        .send()
        .await
}

/// Signs up `email` and asks for a reset; returns the reset email.
async fn reset_mail(app: &TestServer, mail: &MailServer, email: &str) -> Mail {
    app.signup(email, PASSWORD).await;
    forgot(app, email).await.expect("202");
    let got = mail.wait_for_to(email, 1, DELIVERY).await;
    got.into_iter()
        .find(|m| m.header("subject").unwrap_or_default().contains("Reset"))
        .expect("a reset email")
}

#[tokio::test]
async fn a_forgotten_password_is_reset_through_the_emailed_link() {
    let (app, mail) = app_with_mail(|c| c.mail.verification = Verification::Off).await;
    let email = unique_email();
    let message = reset_mail(&app, &mail, &email).await;

    // Headers of a transactional mail, and nobody's address but the recipient's.
    assert_eq!(message.envelope_to, vec![email.clone()]);
    assert_eq!(message.header("to").as_deref(), Some(email.as_str()));
    assert_eq!(message.header("from").as_deref(), Some(FROM));
    assert_eq!(
        message.header("auto-submitted").as_deref(),
        Some("auto-generated")
    );
    let id = message.message_id().expect("a Message-ID");
    assert!(id.ends_with("@jobpath.example"), "{id}");
    let raw = String::from_utf8_lossy(&message.raw).to_lowercase();
    for other in raw.split(|c: char| c.is_whitespace() || "<>\"'(),;:=".contains(c)) {
        if other.contains('@') && other.contains('.') && !other.starts_with("http") {
            assert!(
                other == email || other.ends_with("@jobpath.example"),
                "an address that is not the recipient's: {other}"
            );
        }
    }
    assert!(!raw.contains("<img"), "no images, no tracking pixels");

    let token = link_token(&message, "reset-password");
    emailed_code(&message);
    let status = app
        .api
        .check_password_reset()
        .body(types::SecretToken::builder().token(token.as_str()))
        .send()
        .await
        .expect("the link is usable")
        .into_inner();
    assert!(status.valid);
    let left = status.expires_at - chrono::Utc::now();
    assert!(
        left > chrono::Duration::minutes(28) && left <= chrono::Duration::minutes(30),
        "{left}"
    );

    reset_with_token(&app, &token, NEW_PASSWORD)
        .await
        .expect("reset");
    expect_error(
        app.try_login(&email, PASSWORD).await,
        401,
        "invalid_credentials",
    );
    let user = app.session(&email, NEW_PASSWORD).await.user;
    assert!(user.email_verified, "a reset proves the mailbox");
    // Used once: the link is dead now, for checking and for resetting.
    expect_error(
        reset_with_token(&app, &token, "yet another fine passphrase").await,
        403,
        "invalid_secret",
    );
    expect_error(
        app.api
            .check_password_reset()
            .body(types::SecretToken::builder().token(token.as_str()))
            .send()
            .await,
        403,
        "invalid_secret",
    );
    // And the account is told.
    let all = mail.wait_for_to(&email, 2, DELIVERY).await;
    assert!(
        all.iter().any(|m| m
            .header("subject")
            .unwrap_or_default()
            .contains("password was changed")),
        "a notice"
    );
    let kinds = app
        .db
        .count_with(
            "SELECT count(*) FROM auth_events e JOIN users u ON u.id = e.user_id
              WHERE u.email = $1 AND e.kind IN ('password_reset_requested', 'password_reset_completed')",
            &[&email],
        )
        .await;
    assert_eq!(kinds, 2);
}

#[tokio::test]
async fn the_emailed_code_resets_too_and_allows_five_attempts_counted_first() {
    let (app, mail) = app_with_mail(|c| c.mail.verification = Verification::Off).await;
    let email = unique_email();
    let message = reset_mail(&app, &mail, &email).await;
    let right = emailed_code(&message);
    let wrong = if right == "00000000" {
        "11111111"
    } else {
        "00000000"
    };
    // Five wrong attempts at once: every one is counted before it is compared.
    let attempts = futures::future::join_all(
        (0..5).map(|_| reset_with_code(&app, &email, wrong, NEW_PASSWORD)),
    )
    .await;
    for attempt in attempts {
        expect_error(attempt, 403, "invalid_secret");
    }
    // The right code now finds the secret spent.
    expect_error(
        reset_with_code(&app, &email, &right, NEW_PASSWORD).await,
        403,
        "invalid_secret",
    );
    app.login(&email, PASSWORD).await;

    // A new secret, and its code typed with a space, works once.
    forgot(&app, &email).await.unwrap();
    let all = mail.wait_for_to(&email, 2, DELIVERY).await;
    let fresh = emailed_code(all.last().unwrap());
    let typed = format!("{} {}", &fresh[..4], &fresh[4..]);
    reset_with_code(&app, &email, &typed, NEW_PASSWORD)
        .await
        .expect("the right code resets");
    app.login(&email, NEW_PASSWORD).await;
    expect_error(
        reset_with_code(&app, &email, &fresh, "yet another fine passphrase").await,
        403,
        "invalid_secret",
    );
}

#[tokio::test]
async fn one_secret_used_by_two_concurrent_resets_succeeds_once() {
    let (app, mail) = app_with_mail(|c| c.mail.verification = Verification::Off).await;
    for via_code in [false, true] {
        let email = unique_email();
        let message = reset_mail(&app, &mail, &email).await;
        let token = link_token(&message, "reset-password");
        let code = emailed_code(&message);
        let passwords = [
            "first concurrent passphrase",
            "second concurrent passphrase",
        ];
        let results = futures::future::join_all(passwords.iter().map(|p| {
            let (app, token, code, email) = (&app, &token, &code, &email);
            async move {
                match via_code {
                    true => reset_with_code(app, email, code, p).await,
                    false => reset_with_token(app, token, p).await,
                }
            }
        }))
        .await;
        let ok: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
        assert_eq!(ok.len(), 1, "via code {via_code}: {results:?}");
        let winner = passwords[results.iter().position(|r| r.is_ok()).unwrap()];
        for r in results {
            if let Err(e) = r {
                expect_error::<()>(Err(e), 403, "invalid_secret");
            }
        }
        app.login(&email, winner).await;
    }
}

#[tokio::test]
async fn a_refused_new_password_leaves_the_link_usable() {
    let (app, mail) = app_with_mail(|c| c.mail.verification = Verification::Off).await;
    let email = unique_email();
    let token = link_token(&reset_mail(&app, &mail, &email).await, "reset-password");
    expect_error(
        reset_with_token(&app, &token, "password1").await,
        422,
        "weak_password",
    );
    let local = email.split('@').next().unwrap();
    expect_error(
        reset_with_token(&app, &token, &format!("{local} is my passphrase")).await,
        422,
        "weak_password",
    );
    reset_with_token(&app, &token, NEW_PASSWORD)
        .await
        .expect("still usable");
}

#[tokio::test]
async fn expired_and_superseded_secrets_are_refused_alike() {
    let (app, mail) = app_with_mail(|c| c.mail.verification = Verification::Off).await;
    let email = unique_email();
    let first = link_token(&reset_mail(&app, &mail, &email).await, "reset-password");
    // A second request kills the first link.
    forgot(&app, &email).await.unwrap();
    let all = mail.wait_for_to(&email, 2, DELIVERY).await;
    let second = link_token(all.last().unwrap(), "reset-password");
    assert_ne!(first, second);
    let refused = expect_error(
        reset_with_token(&app, &first, NEW_PASSWORD).await,
        403,
        "invalid_secret",
    );
    // Expired: the same answer, word for word.
    app.db
        .client()
        .await
        .execute(
            "UPDATE one_time_secrets SET expires_at = now() - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    let expired = expect_error(
        reset_with_token(&app, &second, NEW_PASSWORD).await,
        403,
        "invalid_secret",
    );
    assert_eq!(refused.detail.message, expired.detail.message);
    let unknown = expect_error(
        reset_with_token(&app, "not-a-token-at-all", NEW_PASSWORD).await,
        403,
        "invalid_secret",
    );
    assert_eq!(unknown.detail.message, expired.detail.message);
    app.login(&email, PASSWORD).await;
}

#[tokio::test]
async fn a_reset_ends_every_session_at_once_on_every_instance() {
    let mail = MailServer::start().await;
    let db = TestDb::create().await;
    let config = || {
        let mut c = test_config(&db);
        mail_to(&mut c, &mail, FRONT_END);
        c.mail.verification = Verification::Off;
        c
    };
    let (a, b) = tokio::join!(TestServer::start(config()), TestServer::start(config()));
    let email = unique_email();
    a.signup(&email, PASSWORD).await;
    let on_a = a.session(&email, PASSWORD).await;
    let on_b = b.session(&email, PASSWORD).await;
    forgot(&a, &email).await.unwrap();
    let message = mail.wait_for_to(&email, 1, DELIVERY).await;
    reset_with_token(&b, &link_token(&message[0], "reset-password"), NEW_PASSWORD)
        .await
        .unwrap();
    for (server, session) in [(&a, &on_a), (&b, &on_b), (&a, &on_b), (&b, &on_a)] {
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
    let ended = db
        .count_with(
            "SELECT count(*) FROM sessions WHERE end_reason = 'password_reset'",
            &[],
        )
        .await;
    assert_eq!(ended, 2);
}

/// What a client can see of an answer: status, body, and headers but the per-request ones.
async fn visible(resp: reqwest::Response) -> (u16, Vec<(String, String)>, String) {
    let status = resp.status().as_u16();
    let mut headers: Vec<(String, String)> = resp
        .headers()
        .iter()
        .filter(|(k, _)| !["x-request-id", "date"].contains(&k.as_str()))
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    headers.sort();
    (status, headers, resp.text().await.unwrap())
}

#[tokio::test]
async fn forgot_password_answers_alike_for_every_address_and_sends_only_what_it_may() {
    let (app, mail) = app_with_mail(|c| {
        c.mail.verification = Verification::Off;
        c.mail.per_recipient_per_hour = 2;
    })
    .await;
    let known = unique_email();
    let inactive = unique_email();
    let limited = unique_email();
    for email in [&known, &inactive, &limited] {
        app.signup(email, PASSWORD).await;
    }
    app.db
        .client()
        .await
        .execute(
            "UPDATE users SET is_active = false WHERE email = $1",
            &[&inactive],
        )
        .await
        .unwrap();
    for _ in 0..2 {
        forgot(&app, &limited).await.unwrap();
    }
    let unknown = unique_email();
    let ask = |email: String| {
        app.raw(reqwest::Method::POST, "/auth/password/forgot")
            .json(&serde_json::json!({ "email": email }))
            .send()
    };
    let reference = visible(ask(known.clone()).await.unwrap()).await;
    assert_eq!(reference.0, 202);
    for email in [&unknown, &inactive, &limited, &known.to_uppercase()] {
        assert_eq!(
            visible(ask(email.clone()).await.unwrap()).await,
            reference,
            "{email}"
        );
    }
    // Delivered: the known address's two, the limited one's two; nothing else.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let delivered = mail.wait_for(4, DELIVERY).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let delivered = mail.messages().len().max(delivered.len());
    assert_eq!(delivered, 4);
    for (email, n) in [(&known, 2), (&limited, 2), (&inactive, 0), (&unknown, 0)] {
        let got = mail
            .messages()
            .iter()
            .filter(|m| m.envelope_to.contains(email))
            .count();
        assert_eq!(got, n, "{email}");
    }

    // The same order of latency: a figure, printed, not a verdict (timing belongs in bench/).
    let mut figures = Vec::new();
    for (name, email) in [
        ("known", &known),
        ("unknown", &unknown),
        ("inactive", &inactive),
    ] {
        let mut times = Vec::new();
        for _ in 0..20 {
            let started = Instant::now();
            ask(email.clone()).await.unwrap();
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        figures.push(format!("{name} median {:.2} ms", times[times.len() / 2]));
    }
    println!("forgot_password latency: {}", figures.join(", "));
}

#[tokio::test]
async fn only_the_per_ip_limit_of_forgot_password_answers_429() {
    let (app, _mail) = app_with_mail(|c| c.rate_limits.forgot_per_ip = 3).await;
    for _ in 0..3 {
        forgot(&app, &unique_email()).await.unwrap();
    }
    let refused = expect_error(forgot(&app, &unique_email()).await, 429, "rate_limited");
    assert!(refused.headers().get("retry-after").is_some());
}

#[tokio::test]
async fn signup_sends_a_verification_that_proves_the_address_once_and_never_logs_in() {
    let (app, mail) = app_with_mail(|_| {}).await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    let session = app.session(&email, PASSWORD).await;
    assert!(
        !session.user.email_verified,
        "soft: login works, unverified"
    );
    assert_eq!(claims(&session.access_token)["email_verified"], false);
    let message = mail.wait_for_to(&email, 1, DELIVERY).await.remove(0);
    assert!(
        message
            .header("subject")
            .unwrap()
            .contains("Confirm your email")
    );
    let token = link_token(&message, "verify-email");
    emailed_code(&message);
    let verify = |token: String| {
        app.api
            .verify_email()
            .body(types::EmailVerificationRequest::Variant0 {
                token: token.parse().unwrap(),
            })
            .send()
    };
    let answer = verify(token.clone()).await.expect("verified").into_inner();
    assert!(answer.email_verified);
    // A second click (a mail scanner, say) changes nothing and is no error.
    verify(token.clone()).await.expect("idempotent");
    let me = app
        .authed(&session.access_token)
        .get_me()
        .send()
        .await
        .unwrap()
        .into_inner();
    assert!(me.email_verified);
    let again = app.session(&email, PASSWORD).await;
    assert!(again.user.email_verified);
    assert_eq!(claims(&again.access_token)["email_verified"], true);
    let refreshed = app.refresh(&session.refresh_token).await;
    assert_eq!(claims(&refreshed.access_token)["email_verified"], true);
    // Verifying started no session: the two logins' are all there are.
    let sessions = app
        .db
        .count_with(
            "SELECT count(*) FROM sessions s JOIN users u ON u.id = s.user_id WHERE u.email = $1",
            &[&email],
        )
        .await;
    assert_eq!(sessions, 2);
    expect_error(verify("nonsense".to_owned()).await, 403, "invalid_secret");
}

#[tokio::test]
async fn a_resend_replaces_the_code_and_the_code_verifies() {
    let (app, mail) = app_with_mail(|_| {}).await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    let first = mail.wait_for_to(&email, 1, DELIVERY).await.remove(0);
    // Without a token: by address, answered alike for an unknown one.
    let resend = |email: Option<&str>| {
        let body = match email {
            Some(e) => types::ResendVerification::builder().email(opt(e)),
            None => types::ResendVerification::builder(),
        };
        app.api.resend_verification().body(body).send()
    };
    resend(Some(&email)).await.expect("202");
    resend(Some(&unique_email())).await.expect("202 for anyone");
    expect_error(resend(None).await, 401, "missing_token");
    let both = mail.wait_for_to(&email, 2, DELIVERY).await;
    let verify_code = |code: String| {
        app.api
            .verify_email()
            .body(types::EmailVerificationRequest::Variant1 {
                email: email.parse().unwrap(),
                code: code.parse().unwrap(),
            })
            .send()
    };
    // The first email's code died with the resend.
    expect_error(
        verify_code(emailed_code(&first)).await,
        403,
        "invalid_secret",
    );
    verify_code(emailed_code(&both[1]))
        .await
        .expect("verified by code");
    // With a bearer token, for the caller; nothing is sent to a verified address.
    let token = app.login(&email, PASSWORD).await;
    app.authed(&token)
        .resend_verification()
        .body(types::ResendVerification::builder())
        .send()
        .await
        .expect("202");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(mail.messages().len(), 2, "nothing for a verified address");
    let verified_events = app
        .db
        .count_with(
            "SELECT count(*) FROM auth_events e JOIN users u ON u.id = e.user_id
              WHERE u.email = $1 AND e.kind = 'email_verified'",
            &[&email],
        )
        .await;
    assert_eq!(verified_events, 1);
}

#[tokio::test]
async fn required_verification_refuses_login_only_after_the_right_password() {
    let (app, mail) = app_with_mail(|c| c.mail.verification = Verification::Required).await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    expect_error(
        app.try_login(&email, "not the password at all").await,
        401,
        "invalid_credentials",
    );
    expect_error(
        app.try_login(&email, PASSWORD).await,
        403,
        "email_not_verified",
    );
    let message = mail.wait_for_to(&email, 1, DELIVERY).await.remove(0);
    app.api
        .verify_email()
        .body(types::EmailVerificationRequest::Variant0 {
            token: link_token(&message, "verify-email").parse().unwrap(),
        })
        .send()
        .await
        .unwrap();
    app.login(&email, PASSWORD).await;
}

#[tokio::test]
async fn a_password_change_sends_its_notice() {
    let (app, mail) = app_with_mail(|c| c.mail.verification = Verification::Off).await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    let token = app.login(&email, PASSWORD).await;
    app.authed(&token)
        .change_password()
        .body(
            types::PasswordChange::builder()
                .current_password(PASSWORD)
                .new_password(NEW_PASSWORD),
        )
        .send()
        .await
        .unwrap();
    let notice = mail.wait_for_to(&email, 1, DELIVERY).await.remove(0);
    assert!(
        notice
            .header("subject")
            .unwrap()
            .contains("password was changed")
    );
    assert!(
        !notice.text().unwrap().contains("http"),
        "a notice carries no link"
    );
}

/// Seeds `n` accounts asking for a reset, with the SMTP server in whatever state it is.
async fn ask_resets(app: &TestServer, n: usize) -> Vec<String> {
    let mut emails = Vec::new();
    for _ in 0..n {
        let email = unique_email();
        app.signup(&email, PASSWORD).await;
        emails.push(email);
    }
    futures::future::join_all(emails.iter().map(|e| forgot(app, e))).await;
    emails
}

#[tokio::test]
async fn with_the_smtp_server_down_requests_still_answer_and_every_email_waits_for_it() {
    let (app, mut mail) = app_with_mail(|c| c.mail.verification = Verification::Off).await;
    mail.stop().await;
    let started = Instant::now();
    let emails = ask_resets(&app, 5).await;
    let took = started.elapsed();
    println!("5 signups and resets with the SMTP server down: {took:?}");
    // Waiting, not lost: the sender has tried and will try again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let waiting = app
        .db
        .count("SELECT count(*) FROM email_outbox WHERE status IN ('queued', 'sending')")
        .await;
    assert_eq!(waiting, 5);
    let tried = app
        .db
        .count("SELECT count(*) FROM email_outbox WHERE attempts >= 1 AND last_error IS NOT NULL")
        .await;
    assert!(tried >= 1, "the sender tried while the server was down");
    mail.restart().await;
    // Retries come after 5 s, then 10 s (±25 %): within a minute all are through.
    let delivered = mail.wait_for(5, Duration::from_secs(60)).await;
    let mut to: Vec<_> = delivered
        .iter()
        .flat_map(|m| m.envelope_to.clone())
        .collect();
    to.sort();
    let mut want = emails.clone();
    want.sort();
    assert_eq!(to, want, "each exactly once");
    // The sender records a delivery (and erases its secret) once the SMTP server has
    // accepted it: a moment after the message is in the store.
    jobpath_tests::cluster::eventually(
        "nothing secret outlives delivery",
        Duration::from_secs(10),
        || async {
            app.db
                .count("SELECT count(*) FROM email_outbox WHERE secret_seed IS NOT NULL")
                .await
                == 0
        },
    )
    .await;
}

#[tokio::test]
async fn two_instances_draining_one_outbox_deliver_each_message_once() {
    let mail = MailServer::start().await;
    let db = TestDb::create().await;
    let config = || {
        let mut c = test_config(&db);
        mail_to(&mut c, &mail, FRONT_END);
        c.mail.verification = Verification::Off;
        c
    };
    let (a, b) = tokio::join!(TestServer::start(config()), TestServer::start(config()));
    let mut emails = ask_resets(&a, 20).await;
    emails.extend(ask_resets(&b, 20).await);
    let delivered = mail.wait_for(40, DELIVERY * 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = mail.messages();
    assert_eq!(all.len(), 40, "no duplicates: {} delivered", all.len());
    let mut ids: Vec<_> = all.iter().map(|m| m.message_id().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40);
    drop(delivered);
    let sent = db
        .count("SELECT count(*) FROM email_outbox WHERE status = 'sent'")
        .await;
    assert_eq!(sent, 40);
}

#[tokio::test]
async fn a_permanent_refusal_abandons_the_message_and_erases_its_secret() {
    let (app, mail) = app_with_mail(|c| c.mail.verification = Verification::Off).await;
    let email = format!("reject-{}@example.com", uuid::Uuid::new_v4().simple());
    app.signup(&email, PASSWORD).await;
    forgot(&app, &email).await.unwrap();
    let deadline = Instant::now() + DELIVERY;
    loop {
        let abandoned = app
            .db
            .count("SELECT count(*) FROM email_outbox WHERE status = 'abandoned' AND secret_seed IS NULL")
            .await;
        if abandoned == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "not abandoned in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(mail.messages().is_empty());
}

#[tokio::test]
async fn no_log_line_holds_a_token_a_link_a_code_or_the_address_and_the_metrics_count() {
    let capture = crate::capture::Capture::start();
    let (app, mail) = app_with_mail(|c| c.mail.verification = Verification::Off).await;
    let email = unique_email();
    let tempfail = format!("tempfail-{}@example.com", uuid::Uuid::new_v4().simple());
    app.signup(&tempfail, PASSWORD).await;
    forgot(&app, &tempfail).await.unwrap();
    let message = reset_mail(&app, &mail, &email).await;
    let token = link_token(&message, "reset-password");
    let code = code(&message);
    reset_with_token(&app, &token, NEW_PASSWORD).await.unwrap();
    mail.wait_for_to(&email, 2, DELIVERY).await;

    let text = capture.text();
    let json = capture.json();
    assert!(
        text.contains("email sent"),
        "the sender logs its work:\n{text}"
    );
    for secret in [
        token.as_str(),
        code.as_str(),
        email.as_str(),
        tempfail.as_str(),
        "#token=",
    ] {
        assert!(!text.contains(secret), "the log holds {secret}");
        assert!(!json.contains(secret), "the JSON log holds {secret}");
    }

    let url = app.metrics_url.as_ref().expect("a metrics listener");
    let deadline = Instant::now() + DELIVERY;
    loop {
        let scrape = reqwest::get(url).await.unwrap().text().await.unwrap();
        let has = |line: &str| scrape.lines().any(|l| l.starts_with(line));
        if has(r#"jobpath_emails_sent_total{kind="password_reset"} 1"#)
            && has(r#"jobpath_emails_sent_total{kind="password_changed"} 1"#)
            && has(r#"jobpath_email_failures_total{kind="password_reset",class="transient"}"#)
            && has("jobpath_email_outbox_depth 1")
            && has("jobpath_email_outbox_oldest_due_age_seconds")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed it:\n{scrape}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn concurrent_requests_for_one_address_leave_one_live_secret() {
    let (app, mail) = app_with_mail(|c| c.mail.verification = Verification::Off).await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    let asked = futures::future::join_all((0..6).map(|_| forgot(&app, &email))).await;
    assert!(asked.iter().all(Result::is_ok));
    let live = app
        .db
        .count("SELECT count(*) FROM one_time_secrets WHERE consumed_at IS NULL")
        .await;
    assert_eq!(live, 1, "one live reset secret, whatever the interleaving");
    // Only the newest email's link works.
    let all = mail.wait_for_to(&email, 6, DELIVERY).await;
    let mut usable = 0;
    for message in &all {
        let token = link_token(message, "reset-password");
        let status = app
            .api
            .check_password_reset()
            .body(types::SecretToken::builder().token(token.as_str()))
            .send()
            .await;
        usable += usize::from(status.is_ok());
    }
    assert_eq!(usable, 1, "{} emails", all.len());
}

/// Findings of the security review of the email feature: each test states what should hold.
mod review;
