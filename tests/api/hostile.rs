//! The hostile-input table of docs/security.md, one test per row: each input gets its documented
//! status and the standard error body (checked here and, for every response, against the
//! spec by `spec_check`), never a 500, and nothing is written when a request is refused.

use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use jobpath_client::types;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{
    PASSWORD, TestApp, expect_error, expect_raw_error, spawn_app, spawn_app_with, unique_email,
};

/// POSTs raw bytes to signup with an optional content type; asserts the error and that no
/// account was written.
async fn refused_signup(
    app: &TestApp,
    body: Vec<u8>,
    content_type: Option<&str>,
    status: u16,
    code: &str,
) -> serde_json::Value {
    let mut req = app.raw(Method::POST, "/auth/signup").body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let body = expect_raw_error(req.send().await.unwrap(), status, code).await;
    let text = body.to_string();
    assert!(
        !text.contains("SELECT") && !text.contains("panicked") && !text.contains(".rs:"),
        "{text}"
    );
    assert_eq!(
        app.db.count("SELECT count(*) FROM users").await,
        0,
        "nothing written"
    );
    body
}

const JSON: Option<&str> = Some("application/json");

fn signup_json(email: serde_json::Value, password: serde_json::Value) -> Vec<u8> {
    json!({"email": email, "password": password})
        .to_string()
        .into_bytes()
}

// --- bodies -------------------------------------------------------------------------------

#[tokio::test]
async fn malformed_json_is_400_invalid_json() {
    let app = spawn_app().await;
    for body in [
        &b"{\"email\":"[..],
        b"{'email': 'a@b.co'}",
        b"not json",
        b"{\"a\":1}}",
    ] {
        refused_signup(&app, body.to_vec(), JSON, 400, "invalid_json").await;
    }
}

#[tokio::test]
async fn invalid_utf8_is_400_invalid_json() {
    let app = spawn_app().await;
    let body = b"{\"email\":\"ada\xff\xfe@example.com\",\"password\":\"12345678\"}".to_vec();
    refused_signup(&app, body, JSON, 400, "invalid_json").await;
}

#[tokio::test]
async fn an_empty_body_is_400_invalid_json() {
    let app = spawn_app().await;
    refused_signup(&app, Vec::new(), JSON, 400, "invalid_json").await;
    refused_signup(&app, b"  \n".to_vec(), JSON, 400, "invalid_json").await;
}

#[tokio::test]
async fn a_json_array_string_or_number_instead_of_an_object_is_422() {
    let app = spawn_app().await;
    for body in [
        &b"[]"[..],
        b"[\"a@b.co\", \"12345678\"]",
        b"\"text\"",
        b"12",
        b"null",
        b"true",
    ] {
        refused_signup(&app, body.to_vec(), JSON, 422, "validation_error").await;
    }
}

#[tokio::test]
async fn json_nested_deeper_than_32_levels_is_400() {
    let app = spawn_app().await;
    let deep = format!("{}{}", "[".repeat(33), "]".repeat(33));
    refused_signup(&app, deep.into_bytes(), JSON, 400, "invalid_json").await;
    let hidden = format!(
        r#"{{"email":"{}","password":"12345678","x":{}1{}}}"#,
        unique_email(),
        "[".repeat(5_000),
        "]".repeat(5_000)
    );
    refused_signup(&app, hidden.into_bytes(), JSON, 400, "invalid_json").await;
}

#[tokio::test]
async fn a_body_over_64_kib_is_413_whether_declared_or_streamed() {
    let app = spawn_app().await;
    let padding = "x".repeat(70 * 1024);
    let big = signup_json(json!(unique_email()), json!(padding));
    refused_signup(&app, big.clone(), JSON, 413, "payload_too_large").await;

    // Chunked, with no Content-Length: the cap applies while reading.
    let stream = futures::stream::iter(
        big.chunks(8 * 1024)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let resp = app
        .raw(Method::POST, "/auth/signup")
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    expect_raw_error(resp, 413, "payload_too_large").await;
    assert_eq!(app.db.count("SELECT count(*) FROM users").await, 0);
}

#[tokio::test]
async fn a_body_not_declared_as_json_is_415() {
    let app = spawn_app().await;
    let body = signup_json(json!(unique_email()), json!(PASSWORD));
    refused_signup(&app, body.clone(), None, 415, "unsupported_media_type").await;
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/jsonp",
        "multipart/form-data",
    ] {
        refused_signup(&app, body.clone(), Some(ct), 415, "unsupported_media_type").await;
    }
}

#[tokio::test]
async fn unknown_fields_are_ignored() {
    let app = spawn_app().await;
    let body = json!({"email": unique_email(), "password": PASSWORD, "confirm_password": PASSWORD, "is_active": false});
    let resp = app
        .raw(Method::POST, "/auth/signup")
        .header("content-type", "Application/JSON; charset=utf-8")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    // An unknown field cannot reach a column: the account is active.
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM users WHERE is_active")
            .await,
        1
    );
}

// --- emails -------------------------------------------------------------------------------

async fn refused_email(app: &TestApp, email: serde_json::Value) {
    let body = refused_signup(
        app,
        signup_json(email.clone(), json!(PASSWORD)),
        JSON,
        422,
        "validation_error",
    )
    .await;
    assert_eq!(body["detail"]["field"], "email", "{email}");
}

#[tokio::test]
async fn a_missing_email_is_422() {
    let app = spawn_app().await;
    let body = json!({"password": PASSWORD}).to_string().into_bytes();
    let err = refused_signup(&app, body, JSON, 422, "validation_error").await;
    assert_eq!(err["detail"]["field"], "email");
}

#[tokio::test]
async fn an_empty_email_is_422() {
    let app = spawn_app().await;
    refused_email(&app, json!("")).await;
    refused_email(&app, json!("   ")).await;
}

#[tokio::test]
async fn an_email_without_at_is_422() {
    let app = spawn_app().await;
    refused_email(&app, json!("ada.example.com")).await;
}

#[tokio::test]
async fn an_email_with_spaces_control_characters_or_nul_is_422() {
    let app = spawn_app().await;
    for email in [
        "ada lovelace@example.com",
        "ada@exa mple.com",
        "ada\t@example.com",
        "ada\u{7}@example.com",
        "ada\u{0}@example.com",
    ] {
        refused_email(&app, json!(email)).await;
    }
}

#[tokio::test]
async fn an_email_over_254_characters_is_422() {
    let app = spawn_app().await;
    let long = format!("{}@{}.example.com", "a".repeat(60), "b".repeat(190));
    assert!(long.len() > 254);
    refused_email(&app, json!(long)).await;
}

#[tokio::test]
async fn an_email_differing_only_in_case_or_spaces_is_409() {
    let app = spawn_app().await;
    app.signup("case@example.com", PASSWORD).await;
    let result = app
        .api
        .signup()
        .body(
            types::Credentials::builder()
                .email("  CASE@Example.com ")
                .password(PASSWORD),
        )
        .send()
        .await;
    expect_error(result, 409, "email_already_registered");
    assert_eq!(app.db.count("SELECT count(*) FROM users").await, 1);
}

/// Signs up `email` through the client; the result.
async fn try_signup(
    app: &TestApp,
    email: &str,
) -> Result<jobpath_client::ResponseValue<types::SignupResponse>, jobpath_client::Error<types::Error>>
{
    app.api
        .signup()
        .body(
            types::Credentials::builder()
                .email(email)
                .password(PASSWORD),
        )
        .send()
        .await
}

#[tokio::test]
async fn an_email_differing_only_in_unicode_normal_form_or_width_is_409() {
    let app = spawn_app().await;
    // NFC: a precomposed é.
    app.signup("jos\u{e9}@example.com", PASSWORD).await;
    for variant in [
        // NFD: e + combining acute accent.
        "jose\u{301}@example.com",
        // Fullwidth letters, at sign and full stop.
        "\u{ff4a}\u{ff4f}\u{ff53}\u{e9}\u{ff20}\u{ff45}\u{ff58}\u{ff41}\u{ff4d}\u{ff50}\u{ff4c}\u{ff45}\u{ff0e}\u{ff43}\u{ff4f}\u{ff4d}",
        "JOSE\u{301}@EXAMPLE.COM",
    ] {
        let result = try_signup(&app, variant).await;
        expect_error(result, 409, "email_already_registered");
    }
    assert_eq!(app.db.count("SELECT count(*) FROM users").await, 1);
    // Login normalises the same way.
    app.login("jose\u{301}@example.com", PASSWORD).await;
}

#[tokio::test]
async fn an_email_with_invisible_characters_is_422() {
    let app = spawn_app().await;
    for email in [
        "ada\u{200b}@example.com",       // zero-width space
        "a\u{200d}da@example.com",       // zero-width joiner
        "ada\u{ad}lovelace@example.com", // soft hyphen
        "ada@exam\u{ad}ple.com",         // soft hyphen in the domain
        "\u{202e}moc.elpmaxe@ada",       // right-to-left override
        "ada\u{2066}@example.com",       // left-to-right isolate
        "ada\u{200f}@example.com",       // right-to-left mark
        "\u{feff}ada@example.com",       // byte order mark
        "ada\u{2060}@example.com",       // word joiner
        "ada\u{fe0f}@example.com",       // variation selector
    ] {
        refused_email(&app, json!(email)).await;
    }
}

#[tokio::test]
async fn an_idn_domain_is_stored_as_its_a_label() {
    let app = spawn_app().await;
    let created = app.signup("ada@B\u{fc}cher.example", PASSWORD).await;
    assert_eq!(created.email, "ada@xn--bcher-kva.example");
    let stored: String = app
        .db
        .client()
        .await
        .query_one("SELECT email FROM users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, "ada@xn--bcher-kva.example");
    expect_error(
        try_signup(&app, "ada@xn--bcher-kva.example").await,
        409,
        "email_already_registered",
    );
    app.login("ada@b\u{fc}cher.example", PASSWORD).await;
    app.login("ADA@xn--bcher-kva.example", PASSWORD).await;
}

#[tokio::test]
async fn an_email_that_lengthens_when_lower_cased_is_422_not_500() {
    let app = spawn_app().await;
    // 249 characters, 489 once lower-cased: each İ becomes i + U+0307.
    let domain_labels = format!("a@{}com", format!("{}.", "\u{130}".repeat(60)).repeat(4));
    assert_eq!(domain_labels.chars().count(), 249);
    // A local part of 40 characters that is 80 once lower-cased.
    let local = format!("{}@example.com", "\u{130}".repeat(40));
    for email in [domain_labels, local] {
        refused_email(&app, json!(email)).await;
    }
}

#[tokio::test]
async fn a_value_a_check_constraint_refuses_is_422_naming_the_field_not_500() {
    let app = spawn_app().await;
    // A constraint the server's own checks do not know of, as a future migration might add.
    app.db
        .client()
        .await
        .batch_execute(
            "ALTER TABLE users ADD CONSTRAINT users_email_not_forbidden \
             CHECK (email NOT LIKE 'forbidden%')",
        )
        .await
        .unwrap();
    let body = refused_signup(
        &app,
        signup_json(json!("forbidden@example.com"), json!(PASSWORD)),
        JSON,
        422,
        "validation_error",
    )
    .await;
    assert_eq!(body["detail"]["field"], "email");
}

// --- passwords ----------------------------------------------------------------------------

async fn refused_password(app: &TestApp, password: Option<serde_json::Value>) {
    let body = match password {
        Some(p) => signup_json(json!(unique_email()), p),
        None => json!({"email": unique_email()}).to_string().into_bytes(),
    };
    let err = refused_signup(app, body, JSON, 422, "validation_error").await;
    assert_eq!(err["detail"]["field"], "password");
}

#[tokio::test]
async fn a_missing_password_is_422() {
    refused_password(&spawn_app().await, None).await;
}

#[tokio::test]
async fn an_empty_password_is_422() {
    refused_password(&spawn_app().await, Some(json!(""))).await;
}

#[tokio::test]
async fn a_password_shorter_than_8_characters_is_422() {
    let app = spawn_app().await;
    refused_password(&app, Some(json!("1234567"))).await;
    // Characters, not bytes: 7 characters of 4 bytes each are still too short.
    refused_password(&app, Some(json!("🔑".repeat(7)))).await;
}

#[tokio::test]
async fn a_password_over_256_characters_is_422() {
    refused_password(&spawn_app().await, Some(json!("p".repeat(257)))).await;
}

// --- tokens -------------------------------------------------------------------------------
// (missing header, other schemes, malformed, alg none, other HMAC algorithms, wrong key,
// expired, not yet valid, deleted and inactive users: see me.rs; revoked: see logout.rs)

// --- HTTP ---------------------------------------------------------------------------------

#[tokio::test]
async fn oversized_headers_are_431_headers_too_large() {
    let app = spawn_app().await;
    let resp = app
        .raw(Method::GET, "/health/live")
        .header("x-filler", "a".repeat(20 * 1024))
        .send()
        .await
        .unwrap();
    expect_raw_error(resp, 431, "headers_too_large").await;

    let mut req = app
        .raw(Method::POST, "/auth/signup")
        .json(&json!({"email": unique_email(), "password": PASSWORD}));
    for i in 0..70 {
        req = req.header(format!("x-field-{i}"), "v");
    }
    expect_raw_error(req.send().await.unwrap(), 431, "headers_too_large").await;

    // Past hyper's own limit of 100 fields the parser refuses the head itself: a bare 431
    // (docs/security.md), and still nothing is written.
    let mut req = app
        .raw(Method::POST, "/auth/signup")
        .json(&json!({"email": unique_email(), "password": PASSWORD}));
    for i in 0..120 {
        req = req.header(format!("x-field-{i}"), "v");
    }
    assert_eq!(req.send().await.unwrap().status().as_u16(), 431);
    assert_eq!(app.db.count("SELECT count(*) FROM users").await, 0);
}

/// Reads until the server closes the connection; returns what it sent and when it closed.
fn wait_for_close(mut stream: std::net::TcpStream) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut received = Vec::new();
    let _ = stream.read_to_end(&mut received);
    (received, started.elapsed())
}

async fn app_with_one_second_header_timeout() -> TestApp {
    spawn_app_with(|c| c.header_read_timeout = Duration::from_secs(1)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_headers_slowly_is_disconnected_at_the_header_timeout() {
    let app = app_with_one_second_header_timeout().await;
    let addr = app.base_url.trim_start_matches("http://").to_owned();
    let (received, waited) = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"POST /auth/signup HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        // Still trickling, but the head is never finished.
        let _ = stream.write_all(b"X-Slow: 1\r\n");
        wait_for_close(stream)
    })
    .await
    .unwrap();
    assert!(
        received.is_empty(),
        "no response to an unfinished request: {received:?}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "closed by the 1 s header timeout, took {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_closed_at_the_header_timeout() {
    let app = app_with_one_second_header_timeout().await;
    let addr = app.base_url.trim_start_matches("http://").to_owned();
    let (received, waited) = tokio::task::spawn_blocking(move || {
        wait_for_close(std::net::TcpStream::connect(addr).unwrap())
    })
    .await
    .unwrap();
    assert!(received.is_empty());
    assert!(
        waited < Duration::from_secs(5),
        "closed by the 1 s header timeout, took {waited:?}"
    );
    // The server is still serving.
    app.api.liveness().send().await.unwrap();
}
