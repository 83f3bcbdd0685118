//! Passkeys through the generated client, against the real server, with webauthn-rs's own
//! software authenticator (`SoftPasskey`) playing the browser and its authenticator:
//! registration, sign-in, the list, rename and removal, the second factor, and the
//! refusals — a replayed assertion, a ceremony finished twice (also at the same moment),
//! another user's ceremony, another origin, a counter that did not advance, a removed
//! passkey — and the notice email, delivered to a real SMTP server.
//!
//! `SoftPasskey` holds no resident keys: it answers only requests that name its credential.
//! So these tests add the credential's id to a sign-in's options (`allowCredentials`), as a
//! browser that remembered it would; the assertion then carries no user handle and the
//! server finds the passkey by its credential id. The discoverable sign-in proper (options
//! that name nothing, a user handle in the answer) is proven in a real browser with a
//! virtual authenticator (`passkey_page`).

use base64::Engine as _;
use jobpath_client::types;
use jobpath_tests::smtp::MailServer;
use serde_json::{Value, json};
use url::Url;
use uuid::Uuid;
use webauthn_authenticator_rs::WebauthnAuthenticator as _;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs_proto::{CreationChallengeResponse, RequestChallengeResponse};

use crate::helpers::{
    ApiResult, MAIL_DELIVERY, PASSWORD, TestServer, claims, expect_error, mail_to, spawn_app,
    spawn_app_with, unique_email,
};
use crate::mfa::{self as totp, app_with, enrolled, pending};

/// The page's origin: the server's default relying party is `localhost`, any port.
fn origin() -> Url {
    Url::parse("http://localhost:5173").unwrap()
}

/// An authenticator that verifies its user (`true`: it sets the UV flag, as a PIN or a
/// fingerprint would).
fn authenticator() -> SoftPasskey {
    SoftPasskey::new(true)
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn credential_json<T: serde::de::DeserializeOwned>(credential: impl serde::Serialize) -> T {
    serde_json::from_value(serde_json::to_value(credential).unwrap()).unwrap()
}

/// A registration's options and ceremony, with the recent-login proof (`{}`).
async fn registration_options(app: &TestServer, token: &str) -> ApiResult<types::PasskeyCeremony> {
    app.authed(token)
        .start_passkey_registration()
        .body(types::PasskeyRegistrationRequest::builder())
        .send()
        .await
}

/// The authenticator's answer to a registration's options, from `origin`.
fn attest(
    key: &mut SoftPasskey,
    ceremony: &types::PasskeyCeremony,
    origin: Url,
) -> types::RegistrationCredential {
    let options: CreationChallengeResponse =
        serde_json::from_value(Value::Object(ceremony.options.clone())).unwrap();
    credential_json(
        key.do_registration(origin, options)
            .expect("the authenticator registers"),
    )
}

async fn finish_registration(
    app: &TestServer,
    token: &str,
    ceremony_id: Uuid,
    credential: types::RegistrationCredential,
) -> ApiResult<types::Passkey> {
    app.authed(token)
        .finish_passkey_registration()
        .body(
            types::PasskeyRegistrationFinish::builder()
                .ceremony_id(ceremony_id)
                .name("Laptop")
                .credential(credential),
        )
        .send()
        .await
}

/// Registers a passkey of `key` for the session `token`; its credential id.
async fn register(app: &TestServer, token: &str, key: &mut SoftPasskey) -> Vec<u8> {
    let ceremony = registration_options(app, token)
        .await
        .expect("200")
        .into_inner();
    let credential = attest(key, &ceremony, origin());
    let raw_id = credential_raw_id(&credential);
    finish_registration(app, token, ceremony.ceremony_id, credential)
        .await
        .expect("201");
    raw_id
}

fn credential_raw_id(credential: &types::RegistrationCredential) -> Vec<u8> {
    let value = serde_json::to_value(credential).unwrap();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value["rawId"].as_str().unwrap())
        .unwrap()
}

/// Sign-in options, with the credential named (see the module docs).
async fn sign_in_options(
    app: &TestServer,
    credential_id: &[u8],
) -> (Uuid, RequestChallengeResponse) {
    let ceremony = app
        .api
        .start_passkey_authentication()
        .send()
        .await
        .expect("200")
        .into_inner();
    let mut options = Value::Object(ceremony.options);
    assert_eq!(
        options["publicKey"]["allowCredentials"],
        json!([]),
        "a discoverable sign-in names no credential"
    );
    options["publicKey"]["allowCredentials"] =
        json!([{"type": "public-key", "id": b64url(credential_id)}]);
    (
        ceremony.ceremony_id,
        serde_json::from_value(options).unwrap(),
    )
}

fn assert_with(
    key: &mut SoftPasskey,
    options: RequestChallengeResponse,
    origin: Url,
) -> types::AssertionCredential {
    credential_json(
        key.do_authentication(origin, options)
            .expect("the authenticator signs"),
    )
}

async fn finish_sign_in(
    app: &TestServer,
    ceremony_id: Uuid,
    credential: types::AssertionCredential,
) -> ApiResult<types::TokenResponse> {
    app.api
        .finish_passkey_authentication()
        .body(
            types::PasskeySignIn::builder()
                .ceremony_id(ceremony_id)
                .credential(credential),
        )
        .send()
        .await
}

async fn sign_in(
    app: &TestServer,
    key: &mut SoftPasskey,
    credential_id: &[u8],
) -> ApiResult<types::TokenResponse> {
    let (ceremony_id, options) = sign_in_options(app, credential_id).await;
    let credential = assert_with(key, options, origin());
    finish_sign_in(app, ceremony_id, credential).await
}

async fn count(app: &crate::helpers::TestApp, sql: &str, id: Uuid) -> i64 {
    app.db
        .client()
        .await
        .query_one(sql, &[&id])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn register_then_sign_in_without_a_password_at_aal2() {
    let app = spawn_app().await;
    let email = unique_email();
    let user_id = app.signup(&email, PASSWORD).await.id;
    let token = app.login(&email, PASSWORD).await;
    let mut key = authenticator();

    let ceremony = registration_options(&app, &token)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ceremony.expires_in.get(), 300);
    let public_key = &ceremony.options["publicKey"];
    assert_eq!(public_key["rp"]["id"], "localhost");
    assert_eq!(public_key["user"]["name"], email.as_str());
    assert_ne!(
        public_key["user"]["id"],
        b64url(user_id.as_bytes()),
        "the user handle is not the account id"
    );
    assert_eq!(
        public_key["authenticatorSelection"]["residentKey"],
        "preferred"
    );
    assert_eq!(
        public_key["authenticatorSelection"]["userVerification"],
        "required"
    );
    let credential = attest(&mut key, &ceremony, origin());
    let credential_id = credential_raw_id(&credential);
    let added = finish_registration(&app, &token, ceremony.ceremony_id, credential)
        .await
        .expect("201");
    assert_eq!(added.status().as_u16(), 201);
    assert_eq!(added.name.as_str(), "Laptop");
    assert!(added.last_used_at.is_none());

    let listed = app
        .authed(&token)
        .list_passkeys()
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.passkeys.len(), 1);
    assert_eq!(listed.passkeys[0].id, added.id);

    let signed_in = sign_in(&app, &mut key, &credential_id)
        .await
        .expect("200")
        .into_inner();
    let c = claims(&signed_in.access_token);
    assert_eq!(c["amr"], json!(["webauthn"]));
    assert_eq!(c["aal"], 2);
    assert_eq!(signed_in.mfa_required, None);
    assert_eq!(signed_in.user.id, user_id);
    let me = app
        .authed(&signed_in.access_token)
        .get_me()
        .send()
        .await
        .unwrap();
    assert_eq!(me.email, email);
    // The session renews at aal2 with webauthn, as any session keeps its level.
    let renewed = app
        .refresh(signed_in.refresh_token.as_deref().unwrap())
        .await;
    assert_eq!(claims(&renewed.access_token)["amr"], json!(["webauthn"]));

    let listed = app
        .authed(&token)
        .list_passkeys()
        .send()
        .await
        .unwrap()
        .into_inner();
    assert!(listed.passkeys[0].last_used_at.is_some());
    let kinds: Vec<String> = app
        .db
        .client()
        .await
        .query(
            "SELECT kind FROM auth_events WHERE user_id = $1 AND kind LIKE 'passkey%' ORDER BY id",
            &[&user_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kinds, ["passkey_added", "passkey_used"]);
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM email_outbox WHERE user_id = $1 AND kind = 'passkey_added'",
            user_id
        )
        .await,
        1
    );
}

#[tokio::test]
async fn a_replayed_assertion_or_a_ceremony_finished_twice_is_refused() {
    let app = spawn_app().await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    let token = app.login(&email, PASSWORD).await;
    let mut key = authenticator();
    let credential_id = register(&app, &token, &mut key).await;

    let (ceremony_id, options) = sign_in_options(&app, &credential_id).await;
    let credential = assert_with(&mut key, options, origin());
    finish_sign_in(&app, ceremony_id, credential.clone())
        .await
        .expect("the first use");
    expect_error(
        finish_sign_in(&app, ceremony_id, credential.clone()).await,
        401,
        "invalid_credentials",
    );
    // The same assertion with another (live) ceremony: its challenge is not this one's.
    let (other, _) = sign_in_options(&app, &credential_id).await;
    expect_error(
        finish_sign_in(&app, other, credential).await,
        401,
        "invalid_credentials",
    );

    // Registration: the ceremony is spent by its first answer.
    let mut second = authenticator();
    let ceremony = registration_options(&app, &token)
        .await
        .unwrap()
        .into_inner();
    let answer = attest(&mut second, &ceremony, origin());
    finish_registration(&app, &token, ceremony.ceremony_id, answer.clone())
        .await
        .expect("201");
    expect_error(
        finish_registration(&app, &token, ceremony.ceremony_id, answer).await,
        403,
        "invalid_secret",
    );
}

#[tokio::test]
async fn one_ceremony_finished_twice_at_the_same_moment_signs_in_once() {
    let app = spawn_app().await;
    let email = unique_email();
    let user_id = app.signup(&email, PASSWORD).await.id;
    let token = app.login(&email, PASSWORD).await;
    let mut key = authenticator();
    let credential_id = register(&app, &token, &mut key).await;
    let sessions_before = count(
        &app,
        "SELECT count(*) FROM sessions WHERE user_id = $1",
        user_id,
    )
    .await;
    for _ in 0..5 {
        let (ceremony_id, options) = sign_in_options(&app, &credential_id).await;
        let credential = assert_with(&mut key, options, origin());
        let attempts: Vec<_> = (0..4)
            .map(|_| finish_sign_in(&app, ceremony_id, credential.clone()))
            .collect();
        let results = futures::future::join_all(attempts).await;
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "exactly one of 4 concurrent finishes: {results:?}");
        for r in results.into_iter().filter(|r| r.is_err()) {
            expect_error(r, 401, "invalid_credentials");
        }
    }
    let sessions_after = count(
        &app,
        "SELECT count(*) FROM sessions WHERE user_id = $1",
        user_id,
    )
    .await;
    assert_eq!(sessions_after - sessions_before, 5);
}

#[tokio::test]
async fn an_assertion_whose_counter_did_not_advance_is_refused() {
    let app = spawn_app().await;
    let email = unique_email();
    let user_id = app.signup(&email, PASSWORD).await.id;
    let token = app.login(&email, PASSWORD).await;
    let mut key = authenticator();
    let credential_id = register(&app, &token, &mut key).await;
    // Two ceremonies signed in order (counters n and n+1), finished in the other order:
    // the older one arrives after a higher counter was stored, as a clone's would.
    let (first_id, first) = sign_in_options(&app, &credential_id).await;
    let first = assert_with(&mut key, first, origin());
    let (second_id, second) = sign_in_options(&app, &credential_id).await;
    let second = assert_with(&mut key, second, origin());
    finish_sign_in(&app, second_id, second)
        .await
        .expect("the newer counter");
    expect_error(
        finish_sign_in(&app, first_id, first).await,
        401,
        "invalid_credentials",
    );

    // Two requests racing: both read the passkey before either wrote it, so both pass the
    // library's own counter check; the stored counter's conditional UPDATE decides. The
    // stale read is reproduced by putting back the record as it was before the newer use.
    let db = app.db.client().await;
    let (first_id, first) = sign_in_options(&app, &credential_id).await;
    let first = assert_with(&mut key, first, origin());
    let (second_id, second) = sign_in_options(&app, &credential_id).await;
    let second = assert_with(&mut key, second, origin());
    let before: String = db
        .query_one(
            "SELECT passkey::text FROM passkeys WHERE user_id = $1",
            &[&user_id],
        )
        .await
        .unwrap()
        .get(0);
    finish_sign_in(&app, second_id, second)
        .await
        .expect("the newer counter");
    db.execute(
        "UPDATE passkeys SET passkey = $2::text::jsonb WHERE user_id = $1",
        &[&user_id, &before],
    )
    .await
    .unwrap();
    expect_error(
        finish_sign_in(&app, first_id, first).await,
        401,
        "invalid_credentials",
    );
    let reasons: Vec<Option<String>> = app
        .db
        .client()
        .await
        .query(
            "SELECT reason FROM auth_events WHERE user_id = $1 AND kind = 'passkey_failed' ORDER BY id",
            &[&user_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        reasons,
        [
            Some("assertion_refused".to_owned()),
            Some("counter_not_advanced".to_owned())
        ]
    );
}

#[tokio::test]
async fn another_origin_and_another_users_ceremony_are_refused() {
    let app = spawn_app().await;
    let (alice, bob) = (unique_email(), unique_email());
    app.signup(&alice, PASSWORD).await;
    app.signup(&bob, PASSWORD).await;
    let alice_token = app.login(&alice, PASSWORD).await;
    let bob_token = app.login(&bob, PASSWORD).await;
    let mut key = authenticator();

    // An answer made on another site: the relying party id matches, the origin does not.
    let ceremony = registration_options(&app, &alice_token)
        .await
        .unwrap()
        .into_inner();
    let phished = attest(
        &mut key,
        &ceremony,
        Url::parse("https://evil.localhost:8443").unwrap(),
    );
    let refused = expect_error(
        finish_registration(&app, &alice_token, ceremony.ceremony_id, phished).await,
        422,
        "validation_error",
    );
    assert_eq!(refused.detail.field.as_deref(), Some("credential"));

    // Bob cannot finish (nor spend) Alice's ceremony; Alice still can.
    let ceremony = registration_options(&app, &alice_token)
        .await
        .unwrap()
        .into_inner();
    let answer = attest(&mut key, &ceremony, origin());
    expect_error(
        finish_registration(&app, &bob_token, ceremony.ceremony_id, answer.clone()).await,
        403,
        "invalid_secret",
    );
    finish_registration(&app, &alice_token, ceremony.ceremony_id, answer.clone())
        .await
        .expect("Alice's own ceremony is intact");
    // Alice's answer replayed into Bob's own ceremony: another challenge.
    let bobs = registration_options(&app, &bob_token)
        .await
        .unwrap()
        .into_inner();
    expect_error(
        finish_registration(&app, &bob_token, bobs.ceremony_id, answer).await,
        422,
        "validation_error",
    );

    // A sign-in assertion from another origin.
    let credential_id = {
        let listed = app
            .authed(&alice_token)
            .list_passkeys()
            .send()
            .await
            .unwrap();
        assert_eq!(listed.passkeys.len(), 1);
        let row = app
            .db
            .client()
            .await
            .query_one("SELECT credential_id FROM passkeys", &[])
            .await
            .unwrap();
        row.get::<_, Vec<u8>>(0)
    };
    let (ceremony_id, options) = sign_in_options(&app, &credential_id).await;
    let phished = assert_with(
        &mut key,
        options,
        Url::parse("https://evil.localhost:8443").unwrap(),
    );
    expect_error(
        finish_sign_in(&app, ceremony_id, phished).await,
        401,
        "invalid_credentials",
    );
    sign_in(&app, &mut key, &credential_id)
        .await
        .expect("from the right origin");
}

#[tokio::test]
async fn registering_needs_a_recent_login_or_the_password_and_aal2_with_an_app() {
    let (app, clock) = app_with(|_| {}).await;
    let email = unique_email();
    let user_id = app.signup(&email, PASSWORD).await.id;
    let token = app.login(&email, PASSWORD).await;
    app.db
        .client()
        .await
        .execute(
            "UPDATE sessions SET authenticated_at = now() - interval '11 minutes' WHERE user_id = $1",
            &[&user_id],
        )
        .await
        .unwrap();
    expect_error(
        registration_options(&app, &token).await,
        403,
        "reauthentication_required",
    );
    let authed = app.authed(&token);
    let with_password = |password: &'static str| {
        authed
            .start_passkey_registration()
            .body(
                types::PasskeyRegistrationRequest::builder()
                    .password(Some(password.parse().unwrap())),
            )
            .send()
    };
    expect_error(
        with_password("not the password").await,
        401,
        "invalid_credentials",
    );
    with_password(PASSWORD)
        .await
        .expect("the password re-check");

    // An account with an authenticator app: a password session (aal1) may not add one.
    let user = enrolled(&app, &clock).await;
    let login = pending(&app, &user.email).await;
    expect_error(
        registration_options(&app, &login.access_token).await,
        403,
        "mfa_required",
    );
    clock.advance_steps(1);
    let up = totp::verify(
        &app,
        &login.access_token,
        &totp::code(&user.secret, clock.step()),
    )
    .await
    .unwrap();
    registration_options(&app, &up.access_token)
        .await
        .expect("at aal2");
}

#[tokio::test]
async fn a_passkey_is_a_second_factor_for_a_password_login() {
    let (app, clock) = app_with(|_| {}).await;
    let user = enrolled(&app, &clock).await;
    // The enrolling session is at aal2 (its refreshed token says so).
    let aal2 = app
        .refresh(user.session.refresh_token.as_deref().unwrap())
        .await;
    let mut key = authenticator();
    register(&app, &aal2.access_token, &mut key).await;

    let login = pending(&app, &user.email).await;
    let client = app.authed(&login.access_token);
    let ceremony = client
        .start_mfa_passkey()
        .send()
        .await
        .unwrap()
        .into_inner();
    let options: RequestChallengeResponse =
        serde_json::from_value(Value::Object(ceremony.options)).unwrap();
    assert_eq!(
        options.public_key.allow_credentials.len(),
        1,
        "the account's passkey"
    );
    let credential = assert_with(&mut key, options, origin());
    let proof = |credential: types::AssertionCredential, ceremony_id: Uuid| {
        client
            .verify_mfa()
            .body(types::MfaVerification::PasskeyProof(types::PasskeyProof {
                ceremony_id,
                credential,
            }))
            .send()
    };
    let up = proof(credential.clone(), ceremony.ceremony_id)
        .await
        .expect("200");
    let c = claims(&up.access_token);
    assert_eq!(c["aal"], 2);
    assert_eq!(c["amr"], json!(["pwd", "webauthn"]));
    // Replayed: the ceremony is spent.
    expect_error(
        proof(credential, ceremony.ceremony_id).await,
        403,
        "invalid_secret",
    );

    // Someone else's session cannot use this session's ceremony.
    let other = pending(&app, &user.email).await;
    let ceremony = client
        .start_mfa_passkey()
        .send()
        .await
        .unwrap()
        .into_inner();
    let options: RequestChallengeResponse =
        serde_json::from_value(Value::Object(ceremony.options)).unwrap();
    let credential = assert_with(&mut key, options, origin());
    expect_error(
        app.authed(&other.access_token)
            .verify_mfa()
            .body(types::MfaVerification::PasskeyProof(types::PasskeyProof {
                ceremony_id: ceremony.ceremony_id,
                credential,
            }))
            .send()
            .await,
        403,
        "invalid_secret",
    );

    // No passkey: 409.
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    let plain = app.login(&email, PASSWORD).await;
    expect_error(
        app.authed(&plain).start_mfa_passkey().send().await,
        409,
        "conflict",
    );
}

#[tokio::test]
async fn rename_remove_and_the_notice_email() {
    let mail = MailServer::start().await;
    let app = spawn_app_with(|c| mail_to(c, &mail, "https://app.example.com")).await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    let token = app.login(&email, PASSWORD).await;
    let mut key = authenticator();
    let credential_id = register(&app, &token, &mut key).await;
    let passkey = app
        .authed(&token)
        .list_passkeys()
        .send()
        .await
        .unwrap()
        .passkeys[0]
        .clone();

    let renamed = app
        .authed(&token)
        .rename_passkey()
        .passkey_id(passkey.id)
        .body(types::PasskeyRename::builder().name("Work laptop"))
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.name.as_str(), "Work laptop");
    expect_error(
        app.authed(&token)
            .rename_passkey()
            .passkey_id(Uuid::new_v4())
            .body(types::PasskeyRename::builder().name("x"))
            .send()
            .await,
        404,
        "not_found",
    );

    // Another account cannot remove it.
    let stranger = unique_email();
    app.signup(&stranger, PASSWORD).await;
    let stranger = app.login(&stranger, PASSWORD).await;
    expect_error(
        app.authed(&stranger)
            .remove_passkey()
            .passkey_id(passkey.id)
            .send()
            .await,
        404,
        "not_found",
    );
    // A session the passkey opened, to end with it; the password's session stays.
    let via_passkey = sign_in(&app, &mut key, &credential_id)
        .await
        .expect("200")
        .into_inner();
    app.authed(&token)
        .remove_passkey()
        .passkey_id(passkey.id)
        .send()
        .await
        .expect("removed");
    expect_error(
        app.authed(&via_passkey.access_token).get_me().send().await,
        401,
        "invalid_token",
    );
    app.authed(&token)
        .get_me()
        .send()
        .await
        .expect("the password's session is left");
    expect_error(
        sign_in(&app, &mut key, &credential_id).await,
        401,
        "invalid_credentials",
    );

    let subjects: Vec<String> = mail
        .wait_for_to(&email, 3, MAIL_DELIVERY)
        .await
        .iter()
        .map(|m| m.header("Subject").unwrap())
        .collect();
    assert!(
        subjects.iter().any(|s| s.contains("A passkey was added")),
        "{subjects:?}"
    );
    assert!(
        subjects.iter().any(|s| s.contains("A passkey was removed")),
        "{subjects:?}"
    );
}

#[tokio::test]
async fn a_deactivated_account_cannot_sign_in_with_its_passkey() {
    let app = spawn_app().await;
    let email = unique_email();
    let user_id = app.signup(&email, PASSWORD).await.id;
    let token = app.login(&email, PASSWORD).await;
    let mut key = authenticator();
    let credential_id = register(&app, &token, &mut key).await;
    app.db
        .client()
        .await
        .execute(
            "UPDATE users SET is_active = false WHERE id = $1",
            &[&user_id],
        )
        .await
        .unwrap();
    expect_error(
        sign_in(&app, &mut key, &credential_id).await,
        401,
        "invalid_credentials",
    );
    // And a credential nobody registered.
    let mut unknown = authenticator();
    let other = unique_email();
    app.signup(&other, PASSWORD).await;
    let other_token = app.login(&other, PASSWORD).await;
    let ceremony = registration_options(&app, &other_token)
        .await
        .unwrap()
        .into_inner();
    let never_finished = attest(&mut unknown, &ceremony, origin());
    let id = credential_raw_id(&never_finished);
    expect_error(
        sign_in(&app, &mut unknown, &id).await,
        401,
        "invalid_credentials",
    );
}

/// The resolver must not fall back to webauthn-rs 0.5, which links OpenSSL: the lock file
/// holds 0.6 and no OpenSSL crate at all.
#[test]
fn the_lock_file_has_webauthn_rs_0_6_and_no_openssl() {
    let lock =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock")).unwrap();
    let packages: Vec<(&str, &str)> = lock
        .split("[[package]]")
        .filter_map(|block| {
            let field = |key: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .map(|v| v.trim().trim_matches('"'))
            };
            Some((field("name = ")?, field("version = ")?))
        })
        .collect();
    let webauthn: Vec<_> = packages
        .iter()
        .filter(|(n, _)| *n == "webauthn-rs")
        .collect();
    assert_eq!(webauthn.len(), 1, "{webauthn:?}");
    assert!(webauthn[0].1.starts_with("0.6."), "{webauthn:?}");
    let openssl: Vec<_> = packages
        .iter()
        .filter(|(n, _)| *n == "openssl" || *n == "openssl-sys")
        .collect();
    assert!(openssl.is_empty(), "OpenSSL in the tree: {openssl:?}");
}

#[tokio::test]
async fn an_assertion_naming_another_user_handle_is_refused() {
    let app = spawn_app().await;
    let email = unique_email();
    let user_id = app.signup(&email, PASSWORD).await.id;
    let token = app.login(&email, PASSWORD).await;
    let mut key = authenticator();
    let credential_id = register(&app, &token, &mut key).await;
    // The signature does not cover the user handle: the server must compare it with the
    // credential's owner's.
    let (ceremony_id, options) = sign_in_options(&app, &credential_id).await;
    let credential = assert_with(&mut key, options, origin());
    let mut forged = serde_json::to_value(&credential).unwrap();
    forged["response"]["userHandle"] = json!(b64url(Uuid::new_v4().as_bytes()));
    expect_error(
        finish_sign_in(&app, ceremony_id, serde_json::from_value(forged).unwrap()).await,
        401,
        "invalid_credentials",
    );
    // The owner's own handle is accepted.
    let handle: Uuid = app
        .db
        .client()
        .await
        .query_one(
            "SELECT passkey_handle FROM users WHERE id = $1",
            &[&user_id],
        )
        .await
        .unwrap()
        .get(0);
    let (ceremony_id, options) = sign_in_options(&app, &credential_id).await;
    let credential = assert_with(&mut key, options, origin());
    let mut named = serde_json::to_value(&credential).unwrap();
    named["response"]["userHandle"] = json!(b64url(handle.as_bytes()));
    finish_sign_in(&app, ceremony_id, serde_json::from_value(named).unwrap())
        .await
        .expect("the owner's handle");
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM auth_events WHERE user_id = $1 AND reason = 'user_handle_mismatch'",
            user_id
        )
        .await,
        1
    );
}

#[tokio::test]
async fn the_admins_reset_removes_passkeys_with_the_factors() {
    let app = spawn_app().await;
    let email = unique_email();
    let user_id = app.signup(&email, PASSWORD).await.id;
    let token = app.login(&email, PASSWORD).await;
    let mut key = authenticator();
    let credential_id = register(&app, &token, &mut key).await;
    let admin_email = unique_email();
    app.signup(&admin_email, PASSWORD).await;
    jobpath_server::admin(
        &crate::helpers::test_config(&app.db),
        &jobpath_server::cli::AdminCommand::Grant(admin_email.clone()),
    )
    .await
    .unwrap();
    let admin = app.login(&admin_email, PASSWORD).await;
    let reset = app
        .authed(&admin)
        .admin_reset_mfa()
        .user_id(user_id)
        .send()
        .await
        .unwrap();
    assert_eq!(reset.factors_removed, 1, "the passkey");
    expect_error(
        sign_in(&app, &mut key, &credential_id).await,
        401,
        "invalid_credentials",
    );
    expect_error(
        app.authed(&token).get_me().send().await,
        401,
        "invalid_token",
    );
}

#[tokio::test]
async fn a_password_reset_removes_the_accounts_passkeys() {
    let mail = MailServer::start().await;
    let base = "https://app.example.com";
    let app = spawn_app_with(|c| {
        mail_to(c, &mail, base);
        c.mail.verification = jobpath_server::config::Verification::Off;
    })
    .await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    let token = app.login(&email, PASSWORD).await;
    let mut key = authenticator();
    let credential_id = register(&app, &token, &mut key).await;
    sign_in(&app, &mut key, &credential_id)
        .await
        .expect("before the reset");

    app.api
        .forgot_password()
        .body(types::EmailAddress::builder().email(email.as_str()))
        .send()
        .await
        .expect("202");
    let reset = mail
        .wait_for_to(&email, 2, MAIL_DELIVERY)
        .await
        .into_iter()
        .find(|m| m.header("Subject").unwrap_or_default().contains("Reset"))
        .expect("the reset email");
    let secret = crate::helpers::emailed_token(&reset, base, "reset-password");
    app.api
        .reset_password()
        .body(types::PasswordReset::Variant0 {
            token: secret.parse().unwrap(),
            new_password: "a brand new passphrase".parse().unwrap(),
        })
        .send()
        .await
        .expect("reset");
    // Whoever added a passkey before the owner took the account back is out.
    expect_error(
        sign_in(&app, &mut key, &credential_id).await,
        401,
        "invalid_credentials",
    );
    let fresh = app.login(&email, "a brand new passphrase").await;
    let listed = app.authed(&fresh).list_passkeys().send().await.unwrap();
    assert!(listed.passkeys.is_empty());
}
