//! The passkeys page (`/account/passkeys`) in a real Chromium with a virtual authenticator
//! (`tests/browser/passkeys.mjs`, through `crate::browser`): the discoverable sign-in that
//! webauthn-rs's `SoftPasskey` cannot play (`passkeys` tests the rest of the ceremonies).
//!
//! The page is opened on `http://localhost:{port}`, not on the server's `127.0.0.1`
//! address: WebAuthn refuses an IP address as the relying party, and the server's default
//! relying party is `localhost` on any port. After the browser's steps the test reads the
//! database: what the page did must be what the server recorded.

use jobpath_server::config::{Config, webauthn};
use url::Url;
use uuid::Uuid;

use crate::helpers::{PASSWORD, TestApp, spawn_app, spawn_app_with, unique_email};

/// The test server's address with `localhost` for its host, as the page must be opened.
fn on_localhost(app: &TestApp) -> String {
    let url = Url::parse(&app.base_url).unwrap();
    assert_eq!(url.host_str(), Some("127.0.0.1"), "{}", app.base_url);
    format!(
        "http://localhost:{}",
        url.port().expect("a test server's port")
    )
}

async fn passkeys_page(app: &TestApp, step: &str, email: &str) -> String {
    let base = on_localhost(app);
    crate::browser::drive("passkeys.mjs", &[&base, step, email, PASSWORD], &[]).await
}

/// How many passkeys the user has.
async fn passkeys_of(app: &TestApp, user_id: Uuid) -> i64 {
    app.db
        .count_with(
            "SELECT count(*) FROM passkeys WHERE user_id = $1",
            &[&user_id],
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passkey_added_on_the_page_in_chromium_signs_in_without_an_email_at_aal2() {
    let app = spawn_app().await;
    let email = unique_email();
    let user_id = app.signup(&email, PASSWORD).await.id;

    let report = passkeys_page(&app, "add-and-sign-in", &email).await;
    assert!(report.contains("one resident credential"), "{report}");
    assert!(report.contains("no email typed"), "{report}");
    assert!(report.contains("without WebAuthn is told so"), "{report}");

    assert_eq!(passkeys_of(&app, user_id).await, 1);
    let client = app.db.client().await;
    let sessions = client
        .query(
            "SELECT aal, amr, ended_at IS NULL AS live, end_reason FROM sessions \
             WHERE user_id = $1 ORDER BY created_at",
            &[&user_id],
        )
        .await
        .unwrap();
    let seen: Vec<(i16, Vec<String>, bool, Option<String>)> = sessions
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        seen,
        [
            // The password sign-in, ended by the page's "Sign out".
            (1, vec!["pwd".to_owned()], false, Some("logout".to_owned())),
            // The passkey sign-in: both factors at once (the authenticator verified its user).
            (2, vec!["webauthn".to_owned()], true, None),
        ],
    );
}

/// `WEBAUTHN_RP_ORIGINS` naming another origin than the page's: the browser makes the
/// credential (the relying party id is still `localhost`), the server refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_from_an_origin_not_allowed_is_refused_and_the_page_says_so() {
    let app = spawn_app_with(|c: &mut Config| {
        c.webauthn = webauthn::read(
            None,
            Some("http://localhost:1".to_owned()),
            None,
            &c.mail.app_base_url,
            "JobPath API",
        )
        .expect("a valid WEBAUTHN_RP_ORIGINS");
    })
    .await;
    let email = unique_email();
    let user_id = app.signup(&email, PASSWORD).await.id;

    let report = passkeys_page(&app, "wrong-origin", &email).await;
    assert!(report.contains("was refused"), "{report}");

    assert_eq!(passkeys_of(&app, user_id).await, 0);
    assert_eq!(
        app.db
            .count_with(
                "SELECT count(*) FROM auth_events WHERE user_id = $1 \
                 AND kind = 'passkey_failed' AND reason = 'registration_refused'",
                &[&user_id],
            )
            .await,
        1
    );
}
