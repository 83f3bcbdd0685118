//! Password changes against logins, revocations and each other: the races that a
//! compare-and-set on the credential version (`users.credential_version`, recorded by every
//! session) closes. Each test repeats its race, since one run may miss the window.

use std::time::Duration;

use futures::future::join_all;
use jobpath_client::types;

use crate::helpers::{PASSWORD, TestServer, expect_error, spawn_app, unique_email};

const NEW_PASSWORD: &str = "an entirely new passphrase";

async fn change(
    app: &TestServer,
    token: &str,
    new: &str,
) -> Result<
    jobpath_client::ResponseValue<types::MessageResponse>,
    jobpath_client::Error<types::Error>,
> {
    app.authed(token)
        .change_password()
        .body(
            types::PasswordChange::builder()
                .current_password(PASSWORD)
                .new_password(new),
        )
        .send()
        .await
}

#[tokio::test]
async fn a_login_racing_a_password_change_never_keeps_a_session_on_the_old_password() {
    let app = spawn_app().await;
    for _ in 0..8 {
        let email = unique_email();
        app.signup(&email, PASSWORD).await;
        let changer = app.session(&email, PASSWORD).await;
        // Logins with the old password spread over the whole change, so that some verify
        // the old hash before it is replaced and open their session after.
        let logins = join_all((0..16u64).map(|i| {
            let email = email.clone();
            let app = &app;
            async move {
                tokio::time::sleep(Duration::from_micros(300 * i)).await;
                app.try_login(&email, PASSWORD).await
            }
        }));
        let (changed, logins) =
            tokio::join!(change(&app, &changer.access_token, NEW_PASSWORD), logins);
        changed.expect("the change succeeds");
        for login in logins.into_iter().filter_map(Result::ok) {
            let session = login.into_inner();
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
    }
}

#[tokio::test]
async fn a_password_change_through_a_session_being_revoked_and_the_revocation_never_both_succeed() {
    let app = spawn_app().await;
    for _ in 0..8 {
        let email = unique_email();
        app.signup(&email, PASSWORD).await;
        let stolen = app.session(&email, PASSWORD).await;
        let owner = app.session(&email, PASSWORD).await;
        let owner_client = app.authed(&owner.access_token);
        let revoke = async {
            // Lands while the change is hashing, after its guard has passed.
            tokio::time::sleep(Duration::from_millis(1)).await;
            owner_client
                .revoke_session()
                .session_id(stolen.session_id)
                .send()
                .await
        };
        let (changed, revoked) =
            tokio::join!(change(&app, &stolen.access_token, NEW_PASSWORD), revoke);
        assert!(
            changed.is_ok() != revoked.is_ok(),
            "exactly one of the two may win: change {changed:?}, revocation {revoked:?}"
        );
        if revoked.is_ok() {
            expect_error(changed, 401, "invalid_token");
            app.login(&email, PASSWORD).await;
            app.authed(&owner.access_token)
                .get_me()
                .send()
                .await
                .expect("the owner stays logged in");
        }
    }
}

#[tokio::test]
async fn of_two_concurrent_password_changes_exactly_one_succeeds_and_the_other_is_409() {
    let app = spawn_app().await;
    for _ in 0..4 {
        let email = unique_email();
        app.signup(&email, PASSWORD).await;
        let this = app.session(&email, PASSWORD).await;
        let (a, b) = tokio::join!(
            change(&app, &this.access_token, "first new passphrase"),
            change(&app, &this.access_token, "second new passphrase"),
        );
        let (winner, loser) = match (a.is_ok(), b.is_ok()) {
            (true, false) => ("first new passphrase", b),
            (false, true) => ("second new passphrase", a),
            _ => panic!("exactly one change may succeed: {a:?} / {b:?}"),
        };
        // The loser verified the old password before the winner committed (409), or read
        // the new hash already and so had the wrong current password (401).
        match &loser {
            Err(jobpath_client::Error::ErrorResponse(e)) if e.status().as_u16() == 401 => {
                expect_error(loser, 401, "invalid_credentials");
            }
            _ => {
                expect_error(loser, 409, "conflict");
            }
        }
        app.login(&email, winner).await;
        app.authed(&this.access_token)
            .get_me()
            .send()
            .await
            .expect("the session that changed the password lives on");
    }
}

#[tokio::test]
async fn concurrent_password_changes_from_two_sessions_leave_one_password_and_one_session() {
    let app = spawn_app().await;
    for _ in 0..4 {
        let email = unique_email();
        app.signup(&email, PASSWORD).await;
        let one = app.session(&email, PASSWORD).await;
        let two = app.session(&email, PASSWORD).await;
        let (a, b) = tokio::join!(
            change(&app, &one.access_token, "first new passphrase"),
            change(&app, &two.access_token, "second new passphrase"),
        );
        assert!(
            a.is_ok() != b.is_ok(),
            "exactly one change may succeed: {a:?} / {b:?}"
        );
        let (winner, survivor, lost) = if a.is_ok() {
            ("first new passphrase", &one, &two)
        } else {
            ("second new passphrase", &two, &one)
        };
        app.login(&email, winner).await;
        app.authed(&survivor.access_token)
            .get_me()
            .send()
            .await
            .unwrap();
        expect_error(
            app.authed(&lost.access_token).get_me().send().await,
            401,
            "invalid_token",
        );
    }
}
