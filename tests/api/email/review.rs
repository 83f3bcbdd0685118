//! Security review of the email feature (branch email-review). Each test asserts what the
//! spec or docs/email.md promise; a failing one is a finding.

use std::time::{Duration, Instant};

use jobpath_server::config::{Mailer, SmtpServer, Verification};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

use super::{
    DELIVERY, NEW_PASSWORD, app_with_mail, code, forgot, link_token, reset_mail, reset_with_code,
    reset_with_token,
};
use crate::helpers::{
    PASSWORD, TestDb, TestServer, expect_error, spawn_app_with, test_config, unique_email,
};

fn wrong_code(right: &str) -> &'static str {
    if right == "00000000" {
        "11111111"
    } else {
        "00000000"
    }
}

async fn verify_code(app: &TestServer, email: &str, code: &str) -> Result<(), u16> {
    let resp = app
        .raw(reqwest::Method::POST, "/auth/email/verify")
        .json(&serde_json::json!({ "email": email, "code": code }))
        .send()
        .await
        .unwrap();
    match resp.status().as_u16() {
        200 => Ok(()),
        s => Err(s),
    }
}

/// docs/email.md and the spec: "a code allows 5 attempts". For a verification code the 5th
/// attempt, with the right code, is refused: `count_code_attempt` raises `attempts` to 5 and
/// `db::secrets::verify` then requires `attempts < 5`. (A reset by code has no such check, so
/// its 5th attempt works: the two flows disagree.)
#[tokio::test]
async fn review_the_fifth_attempt_at_a_verification_code_counts_like_a_resets() {
    let (app, mail) = app_with_mail(|_| {}).await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    let message = mail.wait_for_to(&email, 1, DELIVERY).await.remove(0);
    let right = code(&message);
    for _ in 0..4 {
        assert_eq!(
            verify_code(&app, &email, wrong_code(&right)).await,
            Err(403)
        );
    }
    assert_eq!(
        verify_code(&app, &email, &right).await,
        Ok(()),
        "the 5th attempt, with the right code, must verify"
    );
}

/// The reset flow, for comparison: the 5th attempt with the right code succeeds.
#[tokio::test]
async fn review_the_fifth_attempt_at_a_reset_code_works() {
    let (app, mail) = app_with_mail(|c| c.mail.verification = Verification::Off).await;
    let email = unique_email();
    let right = code(&reset_mail(&app, &mail, &email).await);
    for _ in 0..4 {
        expect_error(
            reset_with_code(&app, &email, wrong_code(&right), NEW_PASSWORD).await,
            403,
            "invalid_secret",
        );
    }
    reset_with_code(&app, &email, &right, NEW_PASSWORD)
        .await
        .expect("5th attempt resets");
}

/// Someone who knows only the victim's address spends the victim's emailed *link* with five
/// wrong codes (`find_reset` requires `attempts < 5`): password recovery can be denied to any
/// account, within the default per-IP limit (20 resets a minute).
#[tokio::test]
async fn review_wrong_codes_from_a_stranger_do_not_kill_the_victims_link() {
    let (app, mail) = app_with_mail(|c| c.mail.verification = Verification::Off).await;
    let victim = unique_email();
    let token = link_token(&reset_mail(&app, &mail, &victim).await, "reset-password");
    for _ in 0..5 {
        // The attacker has no code: any 8 digits.
        let _ = reset_with_code(&app, &victim, "12345678", NEW_PASSWORD).await;
    }
    reset_with_token(&app, &token, NEW_PASSWORD)
        .await
        .expect("the victim's link still resets");
}

/// docs/email.md: "Clicking the link twice is fine (200 again)". Two concurrent clicks: the
/// loser's statement snapshot predates the winner's commit, so it sees the secret consumed
/// (after the row lock) but the address still unverified, and answers 403.
#[tokio::test]
async fn review_concurrent_clicks_on_one_verification_link_all_succeed() {
    let (app, mail) = app_with_mail(|_| {}).await;
    let mut refused = 0;
    for _ in 0..10 {
        let email = unique_email();
        app.signup(&email, PASSWORD).await;
        let message = mail.wait_for_to(&email, 1, DELIVERY).await.remove(0);
        let token = link_token(&message, "verify-email");
        let results = futures::future::join_all((0..4).map(|_| {
            app.raw(reqwest::Method::POST, "/auth/email/verify")
                .json(&serde_json::json!({ "token": token }))
                .send()
        }))
        .await;
        refused += results
            .into_iter()
            .filter(|r| r.as_ref().unwrap().status().as_u16() != 200)
            .count();
    }
    assert_eq!(
        refused, 0,
        "concurrent clicks refused with 403: {refused} of 40"
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn time_post(app: &TestServer, path: &str, body: serde_json::Value) -> f64 {
    let started = Instant::now();
    let resp = app
        .raw(reqwest::Method::POST, path)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let _ = resp.bytes().await;
    assert!(status == 202 || status == 403, "{path}: {status}");
    started.elapsed().as_secs_f64() * 1000.0
}

/// docs/email.md: "'this account exists' takes as long as 'it does not'". It does not: for an
/// existing account the issue transaction writes (secret, outbox row, event, NOTIFY) and its
/// commit waits for a WAL flush; for an unknown address (or one over its per-recipient limit)
/// the transaction is read-only and commits without one. Interleaved samples, medians.
#[tokio::test]
async fn review_forgot_password_takes_as_long_for_an_account_as_for_none() {
    let app = spawn_app_with(|c| {
        c.mail.mailer = Mailer::Log;
        c.mail.verification = Verification::Off;
    })
    .await;
    let known: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..20 {
            let e = unique_email();
            app.signup(&e, PASSWORD).await;
            v.push(e);
        }
        v
    };
    let (mut k, mut u) = (Vec::new(), Vec::new());
    for i in 0..120 {
        let a = time_post(
            &app,
            "/auth/password/forgot",
            serde_json::json!({"email": known[i % known.len()]}),
        )
        .await;
        let b = time_post(
            &app,
            "/auth/password/forgot",
            serde_json::json!({"email": unique_email()}),
        )
        .await;
        if i >= 20 {
            k.push(a);
            u.push(b);
        }
    }
    let (k, u) = (median(k), median(u));
    println!("forgot_password medians: existing account {k:.2} ms, unknown address {u:.2} ms");
    assert!(k < u * 1.2 + 0.3, "existing {k:.2} ms vs unknown {u:.2} ms");
}

/// The same oracle through a code: a typed code for an address with a live secret commits the
/// attempt (a write) before comparing; for an unknown address nothing is written. Every signup
/// leaves a live verification secret for 24 hours, so this tells which addresses signed up.
#[tokio::test]
async fn review_a_wrong_verification_code_takes_as_long_for_an_account_as_for_none() {
    let app = spawn_app_with(|c| c.mail.mailer = Mailer::Log).await;
    let mut known = Vec::new();
    for _ in 0..30 {
        let e = unique_email();
        app.signup(&e, PASSWORD).await;
        known.push(e);
    }
    let (mut k, mut u) = (Vec::new(), Vec::new());
    // Four wrong attempts per account: each one finds the live secret.
    for i in 0..120 {
        let a = time_post(
            &app,
            "/auth/email/verify",
            serde_json::json!({"email": known[i % known.len()], "code": "00000000"}),
        )
        .await;
        let b = time_post(
            &app,
            "/auth/email/verify",
            serde_json::json!({"email": unique_email(), "code": "00000000"}),
        )
        .await;
        k.push(a);
        u.push(b);
    }
    let (k, u) = (median(k), median(u));
    println!(
        "verify_email wrong-code medians: existing account {k:.2} ms, unknown address {u:.2} ms"
    );
    assert!(k < u * 1.2 + 0.3, "existing {k:.2} ms vs unknown {u:.2} ms");
}

/// A minimal SMTP server that refuses every recipient as Postfix does, echoing the address:
/// `550 5.1.1 <addr>: Recipient address rejected: User unknown in virtual mailbox table`.
async fn postfix_like_refusal() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut lines = BufReader::new(r).lines();
                w.write_all(b"220 mx.example ESMTP\r\n").await.unwrap();
                while let Ok(Some(line)) = lines.next_line().await {
                    let upper = line.to_ascii_uppercase();
                    let reply = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                        "250-mx.example\r\n250 8BITMIME\r\n".to_owned()
                    } else if upper.starts_with("RCPT TO:") {
                        let addr = line[8..].trim().to_owned();
                        format!(
                            "550 5.1.1 {addr}: Recipient address rejected: User unknown in virtual mailbox table\r\n"
                        )
                    } else if upper.starts_with("QUIT") {
                        let _ = w.write_all(b"221 bye\r\n").await;
                        return;
                    } else {
                        "250 ok\r\n".to_owned()
                    };
                    if w.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("smtp://127.0.0.1:{port}?tls=none")
}

/// docs/email.md: "Logs name a message by its outbox id and kind ... never by address". A
/// real SMTP server's refusal usually quotes the recipient; it goes whole into the log line
/// and into `email_outbox.last_error`.
#[tokio::test]
async fn review_an_smtp_refusal_puts_no_address_in_the_log_or_last_error() {
    let capture = crate::capture::Capture::start();
    let url = postfix_like_refusal().await;
    let app = spawn_app_with(|c| {
        c.mail.mailer = Mailer::Smtp(SmtpServer::parse(&url).unwrap());
        c.mail.smtp_timeout = Duration::from_secs(2);
        c.mail.verification = Verification::Off;
    })
    .await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    forgot(&app, &email).await.unwrap();
    let deadline = Instant::now() + DELIVERY;
    while app
        .db
        .count("SELECT count(*) FROM email_outbox WHERE status = 'abandoned'")
        .await
        != 1
    {
        assert!(Instant::now() < deadline, "not abandoned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let in_db = app
        .db
        .count_with(
            "SELECT count(*) FROM email_outbox WHERE position($1 in last_error) > 0",
            &[&email],
        )
        .await;
    let text = capture.text();
    assert!(
        !text.contains(&email) && in_db == 0,
        "the address is in the log ({}) / last_error ({in_db})",
        text.contains(&email)
    );
}

/// EMAIL_VERIFICATION=required only gates login: a session of an unverified account opened
/// before the switch (soft → required) keeps refreshing and calling the API. Reported as a
/// question of policy; the test shows the behaviour.
#[tokio::test]
#[ignore = "policy question for the maintainers: run with --ignored to see it fail"]
async fn review_required_verification_leaves_earlier_unverified_sessions_alive() {
    let db = TestDb::create().await;
    let soft = TestServer::start({
        let mut c = test_config(&db);
        c.mail.mailer = Mailer::Log;
        c
    })
    .await;
    let email = unique_email();
    soft.signup(&email, PASSWORD).await;
    let session = soft.session(&email, PASSWORD).await;
    soft.stop().await;
    let required = TestServer::start({
        let mut c = test_config(&db);
        c.mail.mailer = Mailer::Log;
        c.mail.verification = Verification::Required;
        c
    })
    .await;
    expect_error(
        required.try_login(&email, PASSWORD).await,
        403,
        "email_not_verified",
    );
    let refreshed = required.try_refresh(&session.refresh_token).await;
    let me = required.authed(&session.access_token).get_me().send().await;
    assert!(
        refreshed.is_err() && me.is_err(),
        "unverified session still usable under required: refresh ok {}, me ok {}",
        refreshed.is_ok(),
        me.is_ok()
    );
}
