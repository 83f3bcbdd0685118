//! Two-factor authentication through the generated client: enrolment and confirmation,
//! login at aal1 and the 403s it meets, step-up, replays (also concurrent), clock skew,
//! attempt limits and the account lock, recovery codes, removal, the admin's reset,
//! `MFA_REQUIRED_FOR_ROLES`, and the notices, delivered to a real SMTP server.
//!
//! The server's TOTP clock is the test's ([`TestClock`]), so a test decides which 30 s step
//! "now" is; codes are computed here with totp-rs from the enrolment's base32 secret, not
//! with the server's own code.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use jobpath_client::types;
use jobpath_server::auth::mfa::Clock;
use jobpath_server::cli::AdminCommand;
use jobpath_server::config::{Config, Verification};
use jobpath_tests::smtp::MailServer;
use uuid::Uuid;

use crate::helpers::{
    ApiResult, MAIL_DELIVERY, PASSWORD, TestApp, TestServer, claims, expect_error, mail_to,
    spawn_app_with, test_config, unique_email,
};

/// A moment well inside a step (5 s after its start), so `step ± n` is unambiguous.
const T0: i64 = 1_900_000_005;

/// The server's TOTP clock, set by the test.
#[derive(Clone)]
pub(crate) struct TestClock(Arc<AtomicI64>);

impl TestClock {
    pub(crate) fn step(&self) -> i64 {
        self.0.load(Ordering::SeqCst).div_euclid(30)
    }
    pub(crate) fn advance_steps(&self, steps: i64) {
        self.0.fetch_add(30 * steps, Ordering::SeqCst);
    }
}

pub(crate) async fn app_with(customise: impl FnOnce(&mut Config)) -> (TestApp, TestClock) {
    let clock = TestClock(Arc::new(AtomicI64::new(T0)));
    let read = Arc::clone(&clock.0);
    let app = spawn_app_with(|c| {
        c.mfa_clock = Clock::from_fn(move || read.load(Ordering::SeqCst));
        customise(c);
    })
    .await;
    (app, clock)
}

pub(crate) async fn app() -> (TestApp, TestClock) {
    app_with(|_| {}).await
}

/// The code of the base32 `secret` for `step`, as an authenticator app computes it.
pub(crate) fn code(secret: &str, step: i64) -> String {
    let bytes = base32::decode(base32::Alphabet::Rfc4648 { padding: false }, secret)
        .expect("a base32 secret");
    assert_eq!(bytes.len(), 20, "160 bits");
    totp_rs::TOTP::new_unchecked(totp_rs::Algorithm::SHA1, 6, 0, 30, bytes)
        .generate((step * 30) as u64)
}

pub(crate) async fn enrol(app: &TestServer, token: &str) -> ApiResult<types::TotpEnrolment> {
    app.authed(token)
        .enrol_totp()
        .body(
            types::TotpEnrolmentRequest::builder()
                .password(PASSWORD)
                .label("Phone"),
        )
        .send()
        .await
}

pub(crate) async fn confirm(
    app: &TestServer,
    token: &str,
    factor: Uuid,
    code: &str,
) -> ApiResult<types::TotpConfirmed> {
    app.authed(token)
        .confirm_totp()
        .factor_id(factor)
        .body(types::MfaCode::builder().code(code))
        .send()
        .await
}

pub(crate) async fn verify(
    app: &TestServer,
    token: &str,
    code: &str,
) -> ApiResult<types::TokenResponse> {
    app.authed(token)
        .verify_mfa()
        .body(types::MfaVerification::CodeProof(types::CodeProof {
            code: code.parse().unwrap(),
        }))
        .send()
        .await
}

pub(crate) async fn verify_recovery(
    app: &TestServer,
    token: &str,
    recovery: &str,
) -> ApiResult<types::TokenResponse> {
    app.authed(token)
        .verify_mfa()
        .body(types::MfaVerification::RecoveryCodeProof(
            types::RecoveryCodeProof {
                recovery_code: recovery.parse().unwrap(),
            },
        ))
        .send()
        .await
}

/// An account with a verified factor.
pub(crate) struct Enrolled {
    pub(crate) email: String,
    pub(crate) user_id: Uuid,
    /// The session that enrolled (aal2 in the database; refresh for a token saying so).
    pub(crate) session: types::TokenResponse,
    pub(crate) secret: String,
    pub(crate) factor_id: Uuid,
    pub(crate) recovery_codes: Vec<String>,
}

/// Signs up, logs in, enrols and confirms with the code of the clock's current step.
pub(crate) async fn enrolled(app: &TestServer, clock: &TestClock) -> Enrolled {
    let email = unique_email();
    let user_id = app.signup(&email, PASSWORD).await.id;
    let session = app.session(&email, PASSWORD).await;
    assert_eq!(session.mfa_required, None, "no factor yet: no step-up owed");
    let enrolment = enrol(app, &session.access_token)
        .await
        .expect("201")
        .into_inner();
    let confirmed = confirm(
        app,
        &session.access_token,
        enrolment.factor_id,
        &code(&enrolment.secret, clock.step()),
    )
    .await
    .expect("confirmed")
    .into_inner();
    Enrolled {
        email,
        user_id,
        session,
        secret: enrolment.secret,
        factor_id: enrolment.factor_id,
        recovery_codes: confirmed.recovery_codes.to_vec(),
    }
}

/// A new password login of an account with 2FA: at aal1, owing its second factor.
pub(crate) async fn pending(app: &TestServer, email: &str) -> types::TokenResponse {
    let session = app.session(email, PASSWORD).await;
    assert_eq!(session.mfa_required, Some(true));
    session
}

pub(crate) fn status<T: std::fmt::Debug>(r: &ApiResult<T>) -> u16 {
    match r {
        Ok(v) => v.status().as_u16(),
        Err(jobpath_client::Error::ErrorResponse(e)) => e.status().as_u16(),
        Err(other) => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn enrol_confirm_log_in_at_aal1_meet_the_403s_and_step_up() {
    let (app, clock) = app().await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    let first = app.session(&email, PASSWORD).await;
    let token = first.access_token.clone();
    assert_eq!(claims(&token)["aal"], 1);
    assert_eq!(claims(&token)["amr"], serde_json::json!(["pwd"]));

    let enrolment = enrol(&app, &token).await.unwrap();
    assert_eq!(enrolment.status().as_u16(), 201);
    let enrolment = enrolment.into_inner();
    assert_eq!(enrolment.secret.len(), 32, "160 bits as base32");
    assert!(
        enrolment.otpauth_uri.starts_with(&format!(
            "otpauth://totp/JobPath%20API:{}?",
            email.replace('@', "%40")
        )) && enrolment
            .otpauth_uri
            .contains(&format!("secret={}", enrolment.secret))
            && enrolment
                .otpauth_uri
                .ends_with("&algorithm=SHA1&digits=6&period=30"),
        "{}",
        enrolment.otpauth_uri
    );
    assert!(enrolment.qr_svg.contains("<svg"), "an SVG document");
    let factors = app.authed(&token).list_mfa_factors().send().await.unwrap();
    assert_eq!(factors.factors.len(), 1);
    assert_eq!(factors.factors[0].status.to_string(), "pending");
    // A pending factor changes nothing: the next login owes no second factor.
    let before_confirm = app.session(&email, PASSWORD).await;
    assert_eq!(before_confirm.mfa_required, None);

    // A wrong code does not confirm it.
    let wrong = code(&enrolment.secret, clock.step() + 5);
    expect_error(
        confirm(&app, &token, enrolment.factor_id, &wrong).await,
        403,
        "invalid_mfa_code",
    );
    let confirmed = confirm(
        &app,
        &token,
        enrolment.factor_id,
        &code(&enrolment.secret, clock.step()),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(confirmed.factor.status.to_string(), "verified");
    assert_eq!(confirmed.recovery_codes.len(), 10);
    // The other session below aal2 ended; the enrolling one is aal2 after a refresh.
    expect_error(
        app.authed(&before_confirm.access_token)
            .get_me()
            .send()
            .await,
        401,
        "invalid_token",
    );
    let raised = app.refresh(&first.refresh_token).await;
    assert_eq!(raised.mfa_required, None);
    assert_eq!(claims(&raised.access_token)["aal"], 2);
    assert_eq!(
        claims(&raised.access_token)["amr"],
        serde_json::json!(["pwd", "otp"])
    );

    // A password login now owes the second factor.
    let login = pending(&app, &email).await;
    let aal1 = &login.access_token;
    assert_eq!(claims(aal1)["aal"], 1);
    assert_eq!(claims(aal1)["mfa_required"], true);
    // What such a session may do ...
    assert_eq!(app.authed(aal1).get_me().send().await.unwrap().email, email);
    app.authed(aal1).list_mfa_factors().send().await.unwrap();
    // ... and what it may not.
    expect_error(
        app.authed(aal1).list_sessions().send().await,
        403,
        "mfa_required",
    );
    expect_error(
        app.authed(aal1).list_events().send().await,
        403,
        "mfa_required",
    );
    expect_error(
        app.authed(aal1)
            .change_password()
            .body(
                types::PasswordChange::builder()
                    .current_password(PASSWORD)
                    .new_password("another long passphrase"),
            )
            .send()
            .await,
        403,
        "mfa_required",
    );
    expect_error(
        app.authed(aal1).get_recovery_codes_status().send().await,
        403,
        "mfa_required",
    );
    // Enrolling another factor with the password alone would be a way around the first.
    expect_error(enrol(&app, aal1).await, 403, "mfa_required");
    // Refresh keeps the level: still owing.
    let renewed = app.refresh(&login.refresh_token).await;
    assert_eq!(renewed.mfa_required, Some(true));

    clock.advance_steps(1);
    let stepped = verify(
        &app,
        &renewed.access_token,
        &code(&enrolment.secret, clock.step()),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(stepped.session_id, login.session_id, "the same session");
    assert_eq!(stepped.mfa_required, None);
    let aal2 = &stepped.access_token;
    assert_eq!(claims(aal2)["aal"], 2);
    assert!(claims(aal2).get("mfa_required").is_none());
    let sessions = app
        .authed(aal2)
        .list_sessions()
        .send()
        .await
        .unwrap()
        .into_inner()
        .sessions;
    let current = sessions.iter().find(|s| s.current).unwrap();
    assert_eq!(i32::from(current.aal.clone()), 2);
    assert_eq!(current.amr, ["pwd", "otp"]);
    // The step-up hands out no refresh token: the session keeps its own, which now
    // renews it at aal2 (and keeps doing so).
    assert_eq!(stepped.refresh_token, None);
    let kept = app.refresh(&renewed.refresh_token).await;
    assert_eq!(claims(&kept.access_token)["aal"], 2);
    assert_eq!(kept.mfa_required, None);
    assert_eq!(
        app.authed(&kept.access_token)
            .get_recovery_codes_status()
            .send()
            .await
            .unwrap()
            .remaining,
        10
    );
    let kinds: Vec<String> = app
        .authed(&kept.access_token)
        .list_events()
        .send()
        .await
        .unwrap()
        .into_inner()
        .events
        .into_iter()
        .map(|e| e.kind.to_string())
        .collect();
    for kind in ["mfa_enrolled", "mfa_verified", "mfa_failed"] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }
}

#[tokio::test]
async fn the_code_that_confirmed_a_factor_never_logs_in() {
    let (app, clock) = app().await;
    let user = enrolled(&app, &clock).await;
    let login = pending(&app, &user.email).await;
    // Same step as the confirmation: the code is spent.
    expect_error(
        verify(&app, &login.access_token, &code(&user.secret, clock.step())).await,
        403,
        "invalid_mfa_code",
    );
    clock.advance_steps(1);
    verify(&app, &login.access_token, &code(&user.secret, clock.step()))
        .await
        .expect("the next step's code works");
}

#[tokio::test]
async fn a_code_is_accepted_once_also_when_sent_twice_at_the_same_moment() {
    let (app, clock) = app().await;
    let user = enrolled(&app, &clock).await;
    clock.advance_steps(1);
    let now = code(&user.secret, clock.step());
    // One after the other, from two sessions.
    let a = pending(&app, &user.email).await;
    let b = pending(&app, &user.email).await;
    verify(&app, &a.access_token, &now)
        .await
        .expect("first use");
    expect_error(
        verify(&app, &b.access_token, &now).await,
        403,
        "invalid_mfa_code",
    );
    // At once, from eight sessions: exactly one wins.
    clock.advance_steps(1);
    let now = code(&user.secret, clock.step());
    let mut sessions = Vec::new();
    for _ in 0..8 {
        sessions.push(pending(&app, &user.email).await.access_token);
    }
    let results = futures::future::join_all(sessions.iter().map(|t| verify(&app, t, &now))).await;
    let codes: Vec<u16> = results.iter().map(status).collect();
    assert_eq!(
        codes.iter().filter(|c| **c == 200).count(),
        1,
        "exactly one success: {codes:?}"
    );
    assert!(codes.iter().all(|c| *c == 200 || *c == 403), "{codes:?}");
    // An older step than the one used is refused too (within the skew window).
    let older = code(&user.secret, clock.step() - 1);
    expect_error(
        verify(&app, &sessions[0], &older).await,
        403,
        "invalid_mfa_code",
    );
}

#[tokio::test]
async fn one_step_of_skew_each_way_is_accepted_and_two_are_refused() {
    let (app, clock) = app().await;
    let user = enrolled(&app, &clock).await;
    clock.advance_steps(10);
    let s = clock.step();
    let try_step = async |step: i64| {
        let login = pending(&app, &user.email).await;
        status(&verify(&app, &login.access_token, &code(&user.secret, step)).await)
    };
    // In increasing order, so that no refusal is a replay of a later step.
    assert_eq!(try_step(s - 2).await, 403, "two steps behind");
    assert_eq!(try_step(s - 1).await, 200, "one step behind");
    assert_eq!(try_step(s + 1).await, 200, "one step ahead");
    assert_eq!(try_step(s + 2).await, 403, "two steps ahead");
}

#[tokio::test]
async fn the_fifth_wrong_code_ends_the_session_and_ten_lock_the_account_past_a_new_login() {
    let (app, clock) = app().await;
    let user = enrolled(&app, &clock).await;
    clock.advance_steps(1);
    let wrong = code(&user.secret, clock.step() + 7);
    let first = pending(&app, &user.email).await;
    for n in 1..=4 {
        expect_error(
            verify(&app, &first.access_token, &wrong).await,
            403,
            "invalid_mfa_code",
        );
        let _ = n;
    }
    expect_error(
        verify(&app, &first.access_token, &wrong).await,
        401,
        "invalid_token",
    );
    expect_error(
        app.authed(&first.access_token).get_me().send().await,
        401,
        "invalid_token",
    );
    // Five more from a second session: ten in a row lock the account's second factor ...
    let second = pending(&app, &user.email).await;
    for _ in 1..=4 {
        expect_error(
            verify(&app, &second.access_token, &wrong).await,
            403,
            "invalid_mfa_code",
        );
    }
    expect_error(
        verify(&app, &second.access_token, &wrong).await,
        401,
        "invalid_token",
    );
    // ... so that even the right code is refused, from a brand new login.
    let third = pending(&app, &user.email).await;
    let locked = expect_error(
        verify(&app, &third.access_token, &code(&user.secret, clock.step())).await,
        429,
        "rate_limited",
    );
    let retry: u64 = locked.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((800..=900).contains(&retry), "about 15 minutes: {retry}");
    // Once the lock has run out, the right code works again.
    app.db
        .client()
        .await
        .execute(
            "UPDATE users SET mfa_locked_until = now() - interval '1 second' WHERE id = $1",
            &[&user.user_id],
        )
        .await
        .unwrap();
    verify(&app, &third.access_token, &code(&user.secret, clock.step()))
        .await
        .expect("unlocked");
    assert_eq!(
        app.db
            .count_with(
                "SELECT count(*) FROM auth_events WHERE kind = 'mfa_locked' AND user_id = $1",
                &[&user.user_id]
            )
            .await,
        1
    );
}

#[tokio::test]
async fn parallel_wrong_codes_all_count_before_the_comparison() {
    let (app, clock) = app().await;
    let user = enrolled(&app, &clock).await;
    let login = pending(&app, &user.email).await;
    let wrong = code(&user.secret, clock.step() + 9);
    let results =
        futures::future::join_all((0..12).map(|_| verify(&app, &login.access_token, &wrong))).await;
    let codes: Vec<u16> = results.iter().map(status).collect();
    // Five attempts are all a session gets, however many arrive together.
    assert_eq!(codes.iter().filter(|c| **c == 403).count(), 4, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 401).count(), 8, "{codes:?}");
    assert_eq!(
        app.db
            .count_with(
                "SELECT count(*) FROM auth_events WHERE kind = 'mfa_failed' AND user_id = $1",
                &[&user.user_id]
            )
            .await,
        5
    );
}

#[tokio::test]
async fn each_recovery_code_works_once_also_concurrently_and_a_new_set_voids_the_old() {
    let (app, clock) = app().await;
    let user = enrolled(&app, &clock).await;
    let codes = &user.recovery_codes;
    assert!(codes.iter().all(|c| c.len() == 27), "{codes:?}");
    // Typed loosely: upper case, spaces for dashes.
    let loose = codes[0].to_uppercase().replace('-', " ");
    let a = pending(&app, &user.email).await;
    let stepped = verify_recovery(&app, &a.access_token, &loose)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        claims(&stepped.access_token)["amr"],
        serde_json::json!(["pwd", "recovery"])
    );
    let b = pending(&app, &user.email).await;
    expect_error(
        verify_recovery(&app, &b.access_token, &codes[0]).await,
        403,
        "invalid_mfa_code",
    );
    // One code, several sessions at once: one wins.
    let mut sessions = Vec::new();
    for _ in 0..6 {
        sessions.push(pending(&app, &user.email).await.access_token);
    }
    let results =
        futures::future::join_all(sessions.iter().map(|t| verify_recovery(&app, t, &codes[1])))
            .await;
    let statuses: Vec<u16> = results.iter().map(status).collect();
    assert_eq!(
        statuses.iter().filter(|c| **c == 200).count(),
        1,
        "{statuses:?}"
    );
    let aal2 = &stepped.access_token;
    let left = app
        .authed(aal2)
        .get_recovery_codes_status()
        .send()
        .await
        .unwrap()
        .remaining;
    assert_eq!(left, 8);
    // A new set (aal2 only) voids the old.
    expect_error(
        app.authed(&b.access_token)
            .regenerate_recovery_codes()
            .send()
            .await,
        403,
        "mfa_required",
    );
    let fresh = app
        .authed(aal2)
        .regenerate_recovery_codes()
        .send()
        .await
        .unwrap()
        .into_inner()
        .recovery_codes;
    assert_eq!(fresh.len(), 10);
    expect_error(
        verify_recovery(&app, &b.access_token, &codes[2]).await,
        403,
        "invalid_mfa_code",
    );
    verify_recovery(&app, &b.access_token, &fresh[0])
        .await
        .expect("a new code works");
    // Stored as keyed hashes: no code appears in the table.
    let rows = app
        .db
        .client()
        .await
        .query("SELECT code_hash FROM mfa_recovery_codes", &[])
        .await
        .unwrap();
    for row in rows {
        let hash: Vec<u8> = row.get(0);
        assert_eq!(hash.len(), 32);
        for code in fresh.iter().chain(codes) {
            let plain = code.replace('-', "");
            assert!(!hash.windows(8).any(|w| w == &plain.as_bytes()[..8]));
        }
    }
}

#[tokio::test]
async fn the_totp_secret_is_kept_encrypted() {
    let (app, clock) = app().await;
    let user = enrolled(&app, &clock).await;
    let raw = base32::decode(base32::Alphabet::Rfc4648 { padding: false }, &user.secret).unwrap();
    let sealed: Vec<u8> = app
        .db
        .client()
        .await
        .query_one(
            "SELECT secret_enc FROM mfa_factors WHERE id = $1",
            &[&user.factor_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sealed.len(), 12 + 20 + 16, "nonce, ciphertext, tag");
    assert!(!sealed.windows(4).any(|w| raw.windows(4).any(|r| r == w)));
    let text = String::from_utf8_lossy(&sealed);
    assert!(!text.contains(&user.secret));
}

#[tokio::test]
async fn removing_factors_needs_aal2_and_a_current_code_and_the_last_takes_the_codes() {
    let (app, clock) = app().await;
    let user = enrolled(&app, &clock).await;
    let remove = async |token: &str, factor: Uuid, proof: Option<&str>| {
        let client = app.authed(token);
        let mut call = client.remove_mfa_factor().factor_id(factor);
        if let Some(proof) = proof {
            call = call.x_mfa_code(proof);
        }
        call.send().await
    };
    // A pending factor goes without a code, from any aal2 session.
    let login = pending(&app, &user.email).await;
    expect_error(
        remove(&login.access_token, user.factor_id, None).await,
        403,
        "mfa_required",
    );
    clock.advance_steps(1);
    let aal2 = verify(&app, &login.access_token, &code(&user.secret, clock.step()))
        .await
        .unwrap()
        .into_inner()
        .access_token;
    let second = enrol(&app, &aal2).await.unwrap().into_inner();
    remove(&aal2, second.factor_id, None)
        .await
        .expect("a pending factor needs no code");
    // A verified one needs proof, and a right one.
    expect_error(
        remove(&aal2, user.factor_id, None).await,
        403,
        "invalid_mfa_code",
    );
    expect_error(
        remove(
            &aal2,
            user.factor_id,
            Some(&code(&user.secret, clock.step() + 6)),
        )
        .await,
        403,
        "invalid_mfa_code",
    );
    // The code step-up just used is spent.
    expect_error(
        remove(
            &aal2,
            user.factor_id,
            Some(&code(&user.secret, clock.step())),
        )
        .await,
        403,
        "invalid_mfa_code",
    );
    expect_error(remove(&aal2, Uuid::new_v4(), None).await, 404, "not_found");
    // A session opened with the password alone, still owing the factor ...
    let lingering = pending(&app, &user.email).await;
    clock.advance_steps(1);
    remove(
        &aal2,
        user.factor_id,
        Some(&code(&user.secret, clock.step())),
    )
    .await
    .expect("removed with a current code");
    // ... does not become a full session now that the account is password-only: it ends.
    expect_error(
        app.try_refresh(&lingering.refresh_token).await,
        401,
        "invalid_token",
    );
    assert!(
        app.authed(&aal2)
            .list_mfa_factors()
            .send()
            .await
            .unwrap()
            .factors
            .is_empty()
    );
    assert_eq!(
        app.authed(&aal2)
            .get_recovery_codes_status()
            .send()
            .await
            .unwrap()
            .remaining,
        0
    );
    // Back to password only.
    assert_eq!(app.session(&user.email, PASSWORD).await.mfa_required, None);
}

#[tokio::test]
async fn a_lost_phone_is_removed_with_a_recovery_code() {
    let (app, clock) = app().await;
    let user = enrolled(&app, &clock).await;
    let login = pending(&app, &user.email).await;
    let aal2 = verify_recovery(&app, &login.access_token, &user.recovery_codes[0])
        .await
        .unwrap()
        .into_inner()
        .access_token;
    app.authed(&aal2)
        .remove_mfa_factor()
        .factor_id(user.factor_id)
        .x_mfa_code(user.recovery_codes[1].as_str())
        .send()
        .await
        .expect("removed with a recovery code");
    assert_eq!(app.session(&user.email, PASSWORD).await.mfa_required, None);
}

#[tokio::test]
async fn at_most_five_factors() {
    let (app, _clock) = app().await;
    let (_, token) = app.user_with_token().await;
    for _ in 0..5 {
        enrol(&app, &token).await.expect("201");
    }
    expect_error(enrol(&app, &token).await, 409, "conflict");
}

#[tokio::test]
async fn a_wrong_password_enrols_nothing() {
    let (app, _clock) = app().await;
    let (_, token) = app.user_with_token().await;
    expect_error(
        app.authed(&token)
            .enrol_totp()
            .body(
                types::TotpEnrolmentRequest::builder()
                    .password("not the password at all")
                    .label("Phone"),
            )
            .send()
            .await,
        401,
        "invalid_credentials",
    );
    assert_eq!(app.db.count("SELECT count(*) FROM mfa_factors").await, 0);
}

#[tokio::test]
async fn verify_needs_exactly_one_proof_and_an_enrolled_factor() {
    let (app, _clock) = app().await;
    let (_, token) = app.user_with_token().await;
    expect_error(verify(&app, &token, "123456").await, 409, "conflict");
    let both = app
        .raw(reqwest::Method::POST, "/auth/mfa/verify")
        .bearer_auth(&token)
        .json(&serde_json::json!({"code": "123456", "recovery_code": "abc"}))
        .send()
        .await
        .unwrap();
    crate::helpers::expect_raw_error(both, 422, "validation_error").await;
    let neither = app
        .raw(reqwest::Method::POST, "/auth/mfa/verify")
        .bearer_auth(&token)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    crate::helpers::expect_raw_error(neither, 422, "validation_error").await;
}

#[tokio::test]
async fn a_role_named_in_mfa_required_for_roles_must_enrol_and_step_up_first() {
    let (app, clock) = app_with(|c| c.mfa_required_for_roles = vec!["admin".to_owned()]).await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    jobpath_server::admin(&test_config(&app.db), &AdminCommand::Grant(email.clone()))
        .await
        .expect("grant");
    let login = pending(&app, &email).await;
    expect_error(
        app.authed(&login.access_token)
            .admin_list_users()
            .send()
            .await,
        403,
        "mfa_required",
    );
    // No factor yet: the pending session may enrol, and confirming is its step-up.
    let enrolment = enrol(&app, &login.access_token).await.unwrap().into_inner();
    confirm(
        &app,
        &login.access_token,
        enrolment.factor_id,
        &code(&enrolment.secret, clock.step()),
    )
    .await
    .unwrap();
    let raised = app.refresh(&login.refresh_token).await;
    assert_eq!(raised.mfa_required, None);
    app.authed(&raised.access_token)
        .admin_list_users()
        .send()
        .await
        .expect("an admin at aal2");
}

/// Notices, with a real SMTP server: enrolment, a recovery code used (with the count
/// left), the lock, removal, and an admin's reset (which also ends the sessions).
#[tokio::test]
async fn every_second_factor_change_is_noticed_by_email() {
    let mail = MailServer::start().await;
    let (app, clock) = app_with(|c| {
        mail_to(c, &mail, "https://app.example.com");
        c.mail.verification = Verification::Off;
    })
    .await;
    let user = enrolled(&app, &clock).await;
    let subjects = async |n: usize| -> Vec<(String, String)> {
        mail.wait_for_to(&user.email, n, MAIL_DELIVERY)
            .await
            .into_iter()
            .map(|m| (m.header("Subject").unwrap(), m.text().unwrap()))
            .collect()
    };
    assert!(
        subjects(1).await[0]
            .0
            .contains("Two-factor authentication was turned on")
    );
    let login = pending(&app, &user.email).await;
    verify_recovery(&app, &login.access_token, &user.recovery_codes[3])
        .await
        .unwrap();
    let seen = subjects(2).await;
    assert!(seen[1].0.contains("recovery code"), "{seen:?}");
    assert!(seen[1].1.contains("9 codes are left"), "{}", seen[1].1);

    // Ten wrong codes from two sessions lock it.
    let wrong = code(&user.secret, clock.step() + 8);
    for _ in 0..2 {
        let s = pending(&app, &user.email).await;
        for _ in 0..5 {
            let _ = verify(&app, &s.access_token, &wrong).await;
        }
    }
    let seen = subjects(3).await;
    assert!(seen[2].0.contains("Too many wrong codes"), "{seen:?}");

    // The admin's reset: factors gone, sessions ended, the owner told.
    let admin_email = unique_email();
    app.signup(&admin_email, PASSWORD).await;
    jobpath_server::admin(
        &test_config(&app.db),
        &AdminCommand::Grant(admin_email.clone()),
    )
    .await
    .unwrap();
    let admin = app.login(&admin_email, PASSWORD).await;
    let victim_session = pending(&app, &user.email).await;
    let reset = app
        .authed(&admin)
        .admin_reset_mfa()
        .user_id(user.user_id)
        .send()
        .await
        .unwrap();
    assert_eq!(reset.factors_removed, 1);
    expect_error(
        app.authed(&victim_session.access_token)
            .get_me()
            .send()
            .await,
        401,
        "invalid_token",
    );
    let seen = subjects(4).await;
    assert!(seen[3].1.contains("an administrator removed"), "{seen:?}");
    assert_eq!(app.session(&user.email, PASSWORD).await.mfa_required, None);
    let events = app
        .authed(&admin)
        .admin_list_user_events()
        .user_id(user.user_id)
        .send()
        .await
        .unwrap()
        .into_inner()
        .events;
    let reset_event = events
        .iter()
        .find(|e| e.kind.to_string() == "mfa_removed")
        .expect("the reset is an event");
    assert!(reset_event.actor_id.is_some(), "{reset_event:?}");
    // A second reset finds nothing, and tells no one.
    assert_eq!(
        app.authed(&admin)
            .admin_reset_mfa()
            .user_id(user.user_id)
            .send()
            .await
            .unwrap()
            .factors_removed,
        0
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        mail.wait_for_to(&user.email, 4, MAIL_DELIVERY).await.len(),
        4
    );
}

#[tokio::test]
async fn removing_a_verified_factor_is_noticed() {
    let mail = MailServer::start().await;
    let (app, clock) = app_with(|c| {
        mail_to(c, &mail, "https://app.example.com");
        c.mail.verification = Verification::Off;
    })
    .await;
    let user = enrolled(&app, &clock).await;
    let aal2 = app.refresh(&user.session.refresh_token).await.access_token;
    clock.advance_steps(1);
    app.authed(&aal2)
        .remove_mfa_factor()
        .factor_id(user.factor_id)
        .x_mfa_code(code(&user.secret, clock.step()).as_str())
        .send()
        .await
        .unwrap();
    let seen = mail.wait_for_to(&user.email, 2, MAIL_DELIVERY).await;
    assert!(
        seen[1]
            .header("Subject")
            .unwrap()
            .contains("second factor was removed"),
        "{:?}",
        seen[1].header("Subject")
    );
}

/// A session that enrolled holds an aal1 token until it refreshes: the operations that
/// re-check the password want aal2 from an account with 2FA.
#[tokio::test]
async fn a_password_change_of_an_account_with_2fa_needs_an_aal2_token() {
    let (app, clock) = app().await;
    let user = enrolled(&app, &clock).await;
    let change = async |token: &str| {
        app.authed(token)
            .change_password()
            .body(
                types::PasswordChange::builder()
                    .current_password(PASSWORD)
                    .new_password("a different long passphrase"),
            )
            .send()
            .await
    };
    expect_error(
        change(&user.session.access_token).await,
        403,
        "mfa_required",
    );
    let aal2 = app.refresh(&user.session.refresh_token).await.access_token;
    change(&aal2).await.expect("changed at aal2");
}

/// The enrolment's QR code as a front end shows it: Chromium renders the SVG as it came,
/// and a QR decoder (jsqr) reads the same `otpauth://` URI back from the pixels.
#[tokio::test]
async fn the_qr_code_renders_in_chromium_and_reads_back_as_the_otpauth_uri() {
    let (app, _clock) = app().await;
    let (_, token) = app.user_with_token().await;
    let enrolment = enrol(&app, &token).await.unwrap().into_inner();
    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("qr-{}.svg", enrolment.factor_id));
    std::fs::write(&file, &enrolment.qr_svg).unwrap();
    let out = crate::browser::drive(
        "qr.mjs",
        &[file.to_str().unwrap(), &enrolment.otpauth_uri],
        &[],
    )
    .await;
    assert!(out.contains("decoded to the otpauth URI"), "{out}");
    let _ = std::fs::remove_file(&file);
}

/// Cookie mode (the refresh token in an HttpOnly cookie): a session that steps up keeps its
/// cookie, and the cookie then renews the session at aal2.
#[tokio::test]
async fn a_cookie_mode_session_steps_up_and_its_cookie_renews_it_at_aal2() {
    const ORIGIN: &str = "https://app.example.com"; // listed in the test servers' CORS_ORIGINS
    const COOKIE: &str = "__Secure-jobpath_refresh=";
    let (app, clock) = app().await;
    let user = enrolled(&app, &clock).await;
    let cookie_of = |resp: &reqwest::Response| -> Option<String> {
        let value = resp.headers().get("set-cookie")?.to_str().unwrap();
        let token = value.strip_prefix(COOKIE)?.split(';').next().unwrap();
        Some(token.to_owned())
    };
    let login = app
        .raw(reqwest::Method::POST, "/auth/login")
        .header("origin", ORIGIN)
        .json(&serde_json::json!({
            "email": user.email,
            "password": PASSWORD,
            "refresh_token_transport": "cookie",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let cookie = cookie_of(&login).expect("the login sets the cookie");
    let body: serde_json::Value = login.json().await.unwrap();
    assert_eq!(body["mfa_required"], true);
    assert!(body.get("refresh_token").is_none());

    clock.advance_steps(1);
    let code = code(&user.secret, clock.step());
    let stepped = app
        .raw(reqwest::Method::POST, "/auth/mfa/verify")
        .bearer_auth(body["access_token"].as_str().unwrap())
        .header("origin", ORIGIN)
        .json(&serde_json::json!({ "code": code }))
        .send()
        .await
        .unwrap();
    assert_eq!(stepped.status(), 200);
    assert_eq!(cookie_of(&stepped), None, "the cookie is left as it is");
    let stepped: serde_json::Value = stepped.json().await.unwrap();
    assert!(stepped.get("refresh_token").is_none());
    assert_eq!(claims(stepped["access_token"].as_str().unwrap())["aal"], 2);

    let renewed = app
        .raw(reqwest::Method::POST, "/auth/refresh")
        .header("origin", ORIGIN)
        .header("cookie", format!("{COOKIE}{cookie}"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(renewed.status(), 200, "the cookie still renews the session");
    assert!(cookie_of(&renewed).is_some_and(|c| c != cookie), "rotated");
    let renewed: serde_json::Value = renewed.json().await.unwrap();
    assert_eq!(claims(renewed["access_token"].as_str().unwrap())["aal"], 2);
    assert!(renewed.get("mfa_required").is_none());
}
