//! No user enumeration and no secrets in logs.

use std::time::{Duration, Instant};

use crate::capture::Capture;
use crate::helpers::{PASSWORD, expect_error, spawn_app, spawn_app_with, unique_email};

/// The median of `samples` (odd count).
fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// How many password verifications the server's hasher has run (its own metric).
async fn verifications(app: &crate::helpers::TestApp) -> f64 {
    let url = app.metrics_url.as_ref().expect("a metrics listener");
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|line| {
            line.strip_prefix(
                r#"jobpath_password_hash_duration_seconds_count{operation="verify"} "#,
            )
        })
        .map_or(0.0, |v| v.parse().unwrap())
}

/// A login for an unknown email must cost what a wrong password costs: both spend exactly
/// one bcrypt verification (against a dummy hash when there is no account), as the hasher's
/// own count of verifications shows for each login, one at a time. That is the verdict; the
/// medians of both are printed as information only, since wall-clock time on a shared
/// machine proves nothing either way. Cost 10, so the printed figures are meaningful (a
/// verification takes ~50 ms, the rest of a login ~1 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_email_and_wrong_password_each_cost_exactly_one_verification() {
    let app = spawn_app_with(|c| c.bcrypt_cost = 10).await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    // Warm up both paths (the dummy hash is made on first use).
    let _ = app.try_login(&unique_email(), "warm-up").await;
    let _ = app.try_login(&email, "warm-up").await;
    // The server verifies against the dummy hash once by itself at start-up
    // (`Hasher::warm_up`), in the background, on threads that yield to everything else: on a
    // busy machine that verification can land inside the first measured login. Wait for it
    // and the two above before counting.
    let deadline = Instant::now() + Duration::from_secs(60);
    while verifications(&app).await < 3.0 {
        assert!(
            Instant::now() < deadline,
            "the warm-up verifications never finished"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (mut unknown, mut wrong) = (Vec::new(), Vec::new());
    let mut bodies = Vec::new();
    for _ in 0..5 {
        let before = verifications(&app).await;
        let started = Instant::now();
        let err = expect_error(
            app.try_login(&unique_email(), PASSWORD).await,
            401,
            "invalid_credentials",
        );
        unknown.push(started.elapsed());
        assert_eq!(
            verifications(&app).await - before,
            1.0,
            "an unknown-email login verifies exactly once"
        );
        bodies.push((err.status(), err.detail.message.clone()));

        let before = verifications(&app).await;
        let started = Instant::now();
        let err = expect_error(
            app.try_login(&email, "wrong password").await,
            401,
            "invalid_credentials",
        );
        wrong.push(started.elapsed());
        assert_eq!(
            verifications(&app).await - before,
            1.0,
            "a wrong-password login verifies exactly once"
        );
        bodies.push((err.status(), err.detail.message.clone()));
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "identical status and message: {bodies:?}"
    );
    let (unknown, wrong) = (median(unknown), median(wrong));
    println!(
        "median login (information only): unknown email {unknown:?}, wrong password {wrong:?}, \
         ratio {:.2}",
        unknown.as_secs_f64() / wrong.as_secs_f64()
    );
}

/// Captures everything the server logs, at the most verbose level and in both formats,
/// over a full signup / login / me / logout / failed-login cycle (see `capture`).
#[tokio::test]
async fn logs_never_contain_a_password_or_a_token() {
    let capture = Capture::start();
    let app = spawn_app().await;
    let email = unique_email();
    let password = "a-very-recognisable-password-4242";
    app.signup(&email, password).await;
    let token = app.login(&email, password).await;
    app.authed(&token).get_me().send().await.unwrap();
    app.authed(&token).logout().send().await.unwrap();
    expect_error(
        app.authed(&token).get_me().send().await,
        401,
        "invalid_token",
    );
    expect_error(
        app.try_login(&email, "a-wrong-password-4242").await,
        401,
        "invalid_credentials",
    );
    drop(app);

    let signature = token.rsplit('.').next().unwrap();
    for logs in [capture.text(), capture.json()] {
        // The capture really saw the cycle, so the absence checks below mean something.
        for expected in [
            "account created",
            "login succeeded",
            "logged out",
            // The failed login's completion line, with its internal reason.
            "wrong_password",
        ] {
            assert!(
                logs.contains(expected),
                "missing {expected:?} in captured logs:\n{logs}"
            );
        }
        for secret in [
            password,
            "a-wrong-password-4242",
            &token,
            signature,
            crate::helpers::TEST_SECRET,
            "$2b$",
        ] {
            assert!(!logs.contains(secret), "logs contain {secret:?}:\n{logs}");
        }
    }
}

/// A PostgreSQL error's `DETAIL` quotes the row (a unique violation names the duplicate
/// key; a check violation the whole failing row, hash included): what the server logs of a
/// database error (`errors::redacted_chain`, used for every completion line's `reason`)
/// keeps its SQLSTATE, message and constraint and drops the rest.
#[tokio::test]
async fn database_errors_reach_the_log_without_their_detail() {
    let db = crate::helpers::TestDb::create().await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE t (email text CONSTRAINT t_email_key UNIQUE);
             INSERT INTO t VALUES ('secret-address@example.com')",
        )
        .await
        .unwrap();
    let err = client
        .execute("INSERT INTO t VALUES ('secret-address@example.com')", &[])
        .await
        .unwrap_err();
    let full = format!("{:#}", anyhow::Error::from(err));
    let err = client
        .execute("INSERT INTO t VALUES ('secret-address@example.com')", &[])
        .await
        .unwrap_err();
    let logged = jobpath_server::errors::redacted_chain(&anyhow::Error::from(err));
    // The point: the unredacted form does hold the value, the logged one does not.
    assert!(full.contains("secret-address"), "{full}");
    assert!(!logged.contains("secret-address"), "{logged}");
    assert!(
        logged.contains("23505") && logged.contains("t_email_key"),
        "{logged}"
    );
}
