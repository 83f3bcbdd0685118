//! Stored password hashes: keyed with the pepper (`PASSWORD_PEPPER`), versioned, made of
//! the normalised password; hashes of before the pepper are wrapped under it at start-up,
//! still log in, and are replaced at that login; a server with another pepper does not
//! start.

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use jobpath_server::config::Secret;
use sha2::{Digest, Sha256};

use crate::helpers::{
    PASSWORD, TestDb, TestServer, expect_error, spawn_app, test_config, unique_email,
};

const PEPPER: &str = "the pepper of this test, thirty-two bytes or more";
const OTHER_PEPPER: &str = "another pepper, also thirty-two bytes long";

#[tokio::test]
async fn a_password_is_the_same_password_in_any_unicode_form() {
    let app = spawn_app().await;
    let email = unique_email();
    // Precomposed "é" and fullwidth "ｓ" at signup; "e" + combining acute and a plain "s"
    // at login: what two keyboards or input methods send for the same passphrase.
    let typed_at_signup = "cr\u{e8}me br\u{fb}l\u{e9}e \u{ff53}ept";
    let typed_at_login = "cre\u{300}me bru\u{302}le\u{301}e sept";
    app.signup(&email, typed_at_signup).await;
    app.login(&email, typed_at_login).await;
    app.login(&email, typed_at_signup).await;
    expect_error(
        app.try_login(&email, "creme brulee sept").await,
        401,
        "invalid_credentials",
    );
}

#[tokio::test]
async fn a_stored_hash_is_useless_without_the_pepper() {
    let db = TestDb::create().await;
    let mut config = test_config(&db);
    config.password_pepper = Secret::new(PEPPER);
    let peppered = TestServer::start(config).await;
    let email = unique_email();
    peppered.signup(&email, PASSWORD).await;
    let stored = stored_hash(&db).await;
    assert!(stored.starts_with("v2$$2b$04$"), "{}", &stored[..10]);
    // Not bcrypt of the unkeyed SHA-256 of the password, which other breaches' dumps hold.
    let unkeyed = bcrypt::verify(
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(PASSWORD)),
        &stored["v2$".len()..],
    )
    .unwrap();
    assert!(!unkeyed, "the hash is of the unkeyed pre-hash");

    // It is bcrypt of HMAC-SHA256 under this pepper, and under no other.
    let keyed = |pepper: &str| {
        let mut mac = Hmac::<Sha256>::new_from_slice(pepper.as_bytes()).unwrap();
        mac.update(PASSWORD.as_bytes());
        let input = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        bcrypt::verify(input, &stored["v2$".len()..]).unwrap()
    };
    assert!(keyed(PEPPER));
    assert!(!keyed(OTHER_PEPPER));
    peppered.login(&email, PASSWORD).await;
}

#[tokio::test]
async fn a_server_with_another_pepper_refuses_to_start_instead_of_refusing_every_password() {
    let db = TestDb::create().await;
    let mut config = test_config(&db);
    config.password_pepper = Secret::new(PEPPER);
    let first = TestServer::start(config.clone()).await;
    let email = unique_email();
    first.signup(&email, PASSWORD).await;
    let mut other = test_config(&db);
    other.password_pepper = Secret::new(OTHER_PEPPER);
    let refused = match jobpath_server::App::build(other).await {
        Ok(_) => panic!("a server with another pepper started"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        refused.starts_with("PASSWORD_PEPPER is not the pepper"),
        "{refused}"
    );
    assert!(!refused.contains(OTHER_PEPPER) && !refused.contains(PEPPER));
    // The recorded pepper still starts, and nothing was changed.
    let again = TestServer::start(config).await;
    again.login(&email, PASSWORD).await;
}

#[tokio::test]
async fn a_hash_from_before_the_pepper_logs_in_once_and_is_replaced() {
    let db = TestDb::create().await;
    let mut config = test_config(&db);
    config.password_pepper = Secret::new(PEPPER);
    let app = TestServer::start(config).await;
    let email = unique_email();
    app.signup(&email, "placeholder passphrase").await;
    // The format of before the pepper: bcrypt of base64(SHA-256(password as typed)).
    let legacy = legacy_hash();
    db.client()
        .await
        .execute("UPDATE users SET password_hash = $1", &[&legacy])
        .await
        .unwrap();

    expect_error(
        app.try_login(&email, "wrong password").await,
        401,
        "invalid_credentials",
    );
    app.login(&email, PASSWORD).await;
    // The replacement runs after the answer.
    let stored = stored_hash_once(&db, "v2$").await;
    assert!(
        stored.starts_with("v2$$2b$04$"),
        "not replaced: {}",
        &stored[..10]
    );
    app.login(&email, PASSWORD).await;
    expect_error(
        app.try_login(&email, "wrong password").await,
        401,
        "invalid_credentials",
    );
}

async fn stored_hash(db: &TestDb) -> String {
    db.client()
        .await
        .query_one("SELECT password_hash FROM users", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_dormant_hash_from_before_the_pepper_is_wrapped_without_a_login() {
    let db = TestDb::create().await;
    let mut config = test_config(&db);
    config.password_pepper = Secret::new(PEPPER);
    let email = unique_email();
    let first = TestServer::start(config.clone()).await;
    first.signup(&email, PASSWORD).await;
    let legacy = legacy_hash();
    db.client()
        .await
        .execute("UPDATE users SET password_hash = $1", &[&legacy])
        .await
        .unwrap();
    first.stop().await;

    // An upgraded server wraps it at start-up, before anyone logs in ...
    let app = TestServer::start(config).await;
    let stored = stored_hash_once(&db, "v1p$").await;
    assert!(
        stored.starts_with("v1p$$2b$04$"),
        "not wrapped: {}",
        &stored[..10]
    );
    // ... keeping bcrypt's salt but not its digest, so the row alone verifies nothing
    // (`hasher::tests` shows another pepper refused).
    assert_eq!(&stored[4..33], &legacy[..29]);
    assert!(!stored.contains(&legacy[29..]));

    expect_error(
        app.try_login(&email, "wrong password").await,
        401,
        "invalid_credentials",
    );
    app.login(&email, PASSWORD).await;
    let stored = stored_hash_once(&db, "v2$").await;
    assert!(
        stored.starts_with("v2$$2b$04$"),
        "not replaced: {}",
        &stored[..10]
    );
}

/// A hash in the format of before the pepper: bcrypt of base64(SHA-256(password as typed)).
fn legacy_hash() -> String {
    bcrypt::hash(
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(PASSWORD)),
        4,
    )
    .unwrap()
}

/// The stored hash once it starts with `prefix` (the server changes it in the background),
/// or as it is after 5 s, for the caller's assertion to show.
async fn stored_hash_once(db: &TestDb, prefix: &str) -> String {
    let mut stored = stored_hash(db).await;
    for _ in 0..100 {
        if stored.starts_with(prefix) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        stored = stored_hash(db).await;
    }
    stored
}
