//! The built-in account pages (`/account/reset-password`, `/account/verify-email`) that
//! emailed links open when `APP_BASE_URL` points at this server: served with their headers
//! over plain HTTP (`/account/passkeys` too, which `passkey_page` uses in Chromium), and
//! used in a real Chromium (`tests/browser/account.mjs`, through `crate::browser`) from the
//! emailed link to the changed account.
//!
//! The browser tests' server is its own front end: its listener is bound first so that its
//! `APP_BASE_URL` can be `http://127.0.0.1:{port}/account`, the emails go to a real SMTP
//! server (`jobpath_tests::smtp`), and the Rust test reads them between the browser's steps.

use jobpath_client::types;
use jobpath_server::config::{Config, Verification};
use jobpath_tests::smtp::{Mail, MailServer};
use reqwest::Method;

use crate::helpers::{
    MAIL_DELIVERY, PASSWORD, TestApp, TestDb, TestServer, emailed_code, emailed_token,
    expect_error, expect_raw_error, mail_to, spawn_app, test_config, unique_email,
};

const NEW_PASSWORD: &str = "a fresh and unguessable passphrase";
/// One of the most common passwords: the page must show the server's refusal.
const WEAK_PASSWORD: &str = "password1";

/// A server whose emailed links open its own pages, and the SMTP server it sends to; and
/// the pages' base address (`APP_BASE_URL`).
async fn app_with_its_own_pages(
    customise: impl FnOnce(&mut Config),
) -> (TestApp, MailServer, String) {
    let mail = MailServer::start().await;
    let db = TestDb::create().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pages = format!("http://{}/account", listener.local_addr().unwrap());
    let mut config = test_config(&db);
    mail_to(&mut config, &mail, &pages);
    customise(&mut config);
    let server = TestServer::start_on(listener, config).await;
    (TestApp { server, db }, mail, pages)
}

/// The one message to `email` whose subject contains `subject`, once it has arrived.
async fn mail_with_subject(mail: &MailServer, email: &str, n: usize, subject: &str) -> Mail {
    mail.wait_for_to(email, n, MAIL_DELIVERY)
        .await
        .into_iter()
        .find(|m| m.header("subject").unwrap_or_default().contains(subject))
        .unwrap_or_else(|| panic!("no \"{subject}\" email to {email}"))
}

async fn account(app: &TestApp, args: &[&str]) -> String {
    let mut all = vec![app.base_url.as_str()];
    all.extend_from_slice(args);
    crate::browser::drive("account.mjs", &all, &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_password_is_reset_in_chromium_from_the_forgot_form_through_the_emailed_link() {
    let (app, mail, pages) =
        app_with_its_own_pages(|c| c.mail.verification = Verification::Off).await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;

    let report = account(&app, &["forgot", &email]).await;
    assert!(report.contains("a reset email was asked for"), "{report}");
    let message = mail_with_subject(&mail, &email, 1, "Reset").await;
    let token = emailed_token(&message, &pages, "reset-password");
    let link = format!("{pages}/reset-password#token={token}");

    let report = account(&app, &["reset", &link, WEAK_PASSWORD, NEW_PASSWORD]).await;
    assert!(report.contains("the new one set"), "{report}");
    expect_error(
        app.try_login(&email, PASSWORD).await,
        401,
        "invalid_credentials",
    );
    expect_error(
        app.try_login(&email, WEAK_PASSWORD).await,
        401,
        "invalid_credentials",
    );
    let session = app.session(&email, NEW_PASSWORD).await;
    assert!(session.user.email_verified, "a reset proves the mailbox");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emailed_verification_link_confirms_the_address_in_chromium_after_a_click() {
    let (app, mail, pages) = app_with_its_own_pages(|_| {}).await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    let session = app.session(&email, PASSWORD).await;
    let me = || async {
        app.authed(&session.access_token)
            .get_me()
            .send()
            .await
            .unwrap()
            .into_inner()
    };
    assert!(!me().await.email_verified);

    let message = mail_with_subject(&mail, &email, 1, "Confirm your email").await;
    let token = emailed_token(&message, &pages, "verify-email");
    let link = format!("{pages}/verify-email#token={token}");
    let report = account(&app, &["verify", &link]).await;
    assert!(report.contains("confirmed by the click"), "{report}");
    assert!(me().await.email_verified);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_code_forms_in_chromium_confirm_the_address_and_reset_the_password() {
    let (app, mail, _) = app_with_its_own_pages(|_| {}).await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    let verification = mail_with_subject(&mail, &email, 1, "Confirm your email").await;
    app.api
        .forgot_password()
        .body(types::EmailAddress::builder().email(email.as_str()))
        .send()
        .await
        .expect("202");
    let reset = mail_with_subject(&mail, &email, 2, "Reset").await;

    let report = account(
        &app,
        &[
            "codes",
            &email,
            &emailed_code(&verification),
            &emailed_code(&reset),
            NEW_PASSWORD,
        ],
    )
    .await;
    assert!(report.contains("reset by code"), "{report}");
    expect_error(
        app.try_login(&email, PASSWORD).await,
        401,
        "invalid_credentials",
    );
    assert!(app.session(&email, NEW_PASSWORD).await.user.email_verified);
}

/// The committed file an asset URL (`assets/<file>`, relative to a page) serves.
fn committed_file(asset: &str) -> Vec<u8> {
    let file = asset.strip_prefix("assets/").unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../server/assets/account")
        .join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What a browser gets before it runs anything: HTML with nothing inline and no outside
/// reference, under a CSP that allows neither, never stored, sending no `Referer`; and the
/// assets with their types.
#[tokio::test]
async fn the_account_pages_are_served_never_stored_under_a_strict_csp_with_their_assets() {
    let app = spawn_app().await;
    for page in [
        "/account/reset-password",
        "/account/verify-email",
        "/account/confirm-email-change",
        "/account/cancel-email-change",
        "/account/passkeys",
    ] {
        let resp = app.raw(Method::GET, page).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{page}");
        let headers = resp.headers().clone();
        assert_eq!(headers["content-type"], "text/html; charset=utf-8");
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        let csp = headers["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{directive} in {csp}");
        }
        assert!(
            !csp.contains("unsafe") && !csp.contains("http") && !csp.contains('*'),
            "nothing inline and no other origin in {csp}"
        );
        let html = resp.text().await.unwrap();
        assert!(!html.contains("://"), "an absolute URL in {page}:\n{html}");
        assert!(!html.contains("style="), "a style attribute in {page}");
        assert_eq!(
            html.matches("<script").count(),
            html.matches("<script src=\"assets/").count(),
            "an inline script in {page}"
        );
        let assets: Vec<&str> = html
            .split('"')
            .filter(|s| s.starts_with("assets/"))
            .collect();
        assert_eq!(assets.len(), 3, "a stylesheet and two scripts:\n{html}");
        for asset in assets {
            let resp = app
                .raw(Method::GET, &format!("/account/{asset}"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 200, "{asset}");
            let expected_type = match asset.ends_with(".css") {
                true => "text/css; charset=utf-8",
                false => "text/javascript; charset=utf-8",
            };
            assert_eq!(resp.headers()["content-type"], expected_type, "{asset}");
            assert_eq!(resp.headers()["cache-control"], "no-cache", "{asset}");
            assert_eq!(
                resp.bytes().await.unwrap(),
                committed_file(asset),
                "{asset} is the committed file"
            );
        }
    }
    for missing in [
        "/account/assets/nope.js",
        "/account/assets/reset-password.html",
        "/account",
        "/account/",
    ] {
        let resp = app.raw(Method::GET, missing).send().await.unwrap();
        expect_raw_error(resp, 404, "not_found").await;
    }
    let wrong_method = app
        .raw(Method::POST, "/account/reset-password")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.headers()["allow"], "GET, OPTIONS");
    expect_raw_error(wrong_method, 405, "method_not_allowed").await;
}
