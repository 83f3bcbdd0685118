//! Attacks on two-factor authentication that the first tests did not try: the account's
//! lock under parallel guesses from many sessions, a password-only session ending the
//! account's other sessions, what a successful removal does to the attempt counts, a
//! recovery code spent by a removal, and the header a browser needs to remove a factor.

use jobpath_client::types::LogoutScope;
use reqwest::Method;
use uuid::Uuid;

use crate::helpers::expect_error;
use crate::mfa::{app, code, confirm, enrol, enrolled, pending, status, verify};

/// Ten wrong codes in a row lock the account's second factor, also when they arrive all
/// at once from several sessions: no more than ten are ever compared before the lock.
#[tokio::test]
async fn parallel_wrong_codes_from_many_sessions_compare_at_most_ten_before_the_lock() {
    let (app, clock) = app().await;
    let user = enrolled(&app, &clock).await;
    let wrong = code(&user.secret, clock.step() + 9);
    let mut sessions = Vec::new();
    for _ in 0..6 {
        sessions.push(pending(&app, &user.email).await.access_token);
    }
    let attempts = sessions
        .iter()
        .flat_map(|t| (0..5).map(|_| verify(&app, t, &wrong)));
    let results = futures::future::join_all(attempts).await;
    let codes: Vec<u16> = results.iter().map(status).collect();
    // 403 and 401 were compared (the 401 is a session's fifth wrong code); 429 is the lock.
    let compared = codes.iter().filter(|c| **c != 429).count();
    assert!(
        compared <= 10,
        "{compared} codes compared before the lock: {codes:?}"
    );
    assert!(
        codes.iter().all(|c| [401, 403, 429].contains(c)),
        "{codes:?}"
    );
    // Locked now, for every session.
    let fresh = pending(&app, &user.email).await;
    expect_error(
        verify(&app, &fresh.access_token, &code(&user.secret, clock.step())).await,
        429,
        "rate_limited",
    );
}

/// A session opened with the password alone must not end the account's other sessions:
/// `revoke_session` is refused to it, and so must `logout` with `scope=global` or
/// `scope=others` be (the spec lists 403 `mfa_required` for logout).
#[tokio::test]
async fn a_session_owing_its_second_factor_cannot_log_the_account_out_everywhere() {
    let (app, clock) = app().await;
    let user = enrolled(&app, &clock).await;
    let owner = app.refresh(&user.session.refresh_token).await.access_token;
    let attacker = pending(&app, &user.email).await.access_token;
    for scope in [LogoutScope::Global, LogoutScope::Others] {
        expect_error(
            app.authed(&attacker).logout().scope(scope).send().await,
            403,
            "mfa_required",
        );
        app.authed(&owner)
            .get_me()
            .send()
            .await
            .expect("the owner's aal2 session is still live");
    }
    // Giving up its own session is still allowed.
    app.authed(&attacker)
        .logout()
        .send()
        .await
        .expect("local logout");
}

/// A correct code at `remove_mfa_factor` resets the counts as one at `verify_mfa` does:
/// the account's count is of consecutive *wrong* codes, and the session's fifth attempt
/// ends it only when the attempts were wrong.
#[tokio::test]
async fn correct_codes_that_remove_factors_are_not_counted_as_wrong_ones() {
    let (app, clock) = app().await;
    let user = enrolled(&app, &clock).await;
    let aal2 = app.refresh(&user.session.refresh_token).await.access_token;
    // Four more verified factors, each confirmed from the same aal2 session.
    let mut secrets = vec![(user.factor_id, user.secret.clone())];
    for _ in 0..4 {
        let e = enrol(&app, &aal2).await.unwrap().into_inner();
        confirm(&app, &aal2, e.factor_id, &code(&e.secret, clock.step()))
            .await
            .expect("confirmed");
        secrets.push((e.factor_id, e.secret));
    }
    clock.advance_steps(1);
    let remove = async |factor: Uuid, proof: &str| {
        app.authed(&aal2)
            .remove_mfa_factor()
            .factor_id(factor)
            .x_mfa_code(proof)
            .send()
            .await
    };
    for (id, secret) in &secrets[..4] {
        remove(*id, &code(secret, clock.step()))
            .await
            .expect("removed with a current code");
    }
    // The first wrong code of this session: refused, and the session lives on.
    let (last, secret) = &secrets[4];
    expect_error(
        remove(*last, &code(secret, clock.step() + 7)).await,
        403,
        "invalid_mfa_code",
    );
    app.authed(&aal2).get_me().send().await.expect("still live");
    let failed: i32 = app
        .db
        .client()
        .await
        .query_one(
            "SELECT mfa_failed_count FROM users WHERE id = $1",
            &[&user.user_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(failed, 1, "one wrong code in a row");
}

/// A recovery code spent to remove a lost phone is a recovery code used: an event, and
/// (docs/mfa.md) "each recovery code used is emailed to you with how many remain".
#[tokio::test]
async fn a_recovery_code_spent_by_a_removal_is_recorded_as_used() {
    let (app, clock) = app().await;
    let user = enrolled(&app, &clock).await;
    let login = pending(&app, &user.email).await;
    let aal2 = crate::mfa::verify_recovery(&app, &login.access_token, &user.recovery_codes[0])
        .await
        .unwrap()
        .into_inner()
        .access_token;
    // A second verified factor, so that the recovery codes outlive the removal.
    let e = enrol(&app, &aal2).await.unwrap().into_inner();
    // (Confirming it replaced the recovery codes: these are the account's now.)
    let codes = confirm(&app, &aal2, e.factor_id, &code(&e.secret, clock.step()))
        .await
        .unwrap()
        .into_inner()
        .recovery_codes;
    app.authed(&aal2)
        .remove_mfa_factor()
        .factor_id(user.factor_id)
        .x_mfa_code(codes[0].as_str())
        .send()
        .await
        .expect("removed with a recovery code");
    let used = app
        .db
        .count_with(
            "SELECT count(*) FROM auth_events WHERE kind = 'recovery_code_used' AND user_id = $1",
            &[&user.user_id],
        )
        .await;
    assert_eq!(used, 2, "the step-up's code and the removal's");
    let notices = app
        .db
        .count_with(
            "SELECT count(*) FROM email_outbox WHERE kind = 'recovery_code_used' AND user_id = $1",
            &[&user.user_id],
        )
        .await;
    assert_eq!(notices, 2, "a notice for each");
}

/// A browser front end removes a verified factor with `X-MFA-Code`: the preflight must
/// allow that header, or the browser never sends the request.
#[tokio::test]
async fn cors_preflight_allows_the_mfa_code_header() {
    let (app, _clock) = app().await;
    let ok = app
        .raw(
            Method::OPTIONS,
            &format!("/auth/mfa/factors/{}", Uuid::new_v4()),
        )
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "DELETE")
        .header(
            "access-control-request-headers",
            "authorization, x-mfa-code",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 204);
    let allowed = ok
        .headers()
        .get("access-control-allow-headers")
        .expect("an allowed origin")
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed.split(',').any(|h| h.trim() == "x-mfa-code"),
        "{allowed}"
    );
}
