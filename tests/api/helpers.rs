//! The test harness: a fresh database and a real server per test.
//!
//! [`spawn_app`] creates a uniquely named database on the local PostgreSQL
//! (`TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`), starts the
//! real server in-process on port 0 against it (the server applies the migrations), and
//! returns clients for it. Its metrics listener is bound to port 0 too, unless the test
//! asks for `METRICS_PUBLIC`. The database is dropped (`WITH (FORCE)`) when the test ends,
//! whether it passed or panicked. Server logs are silent unless `TEST_LOG=1`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jobpath_client::{Client, ResponseValue, types};
use jobpath_server::config::{Config, Mailer, SmtpServer};
use jobpath_server::state::AppState;
use jobpath_tests::smtp::{Mail, MailServer};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

// One test database helper for every suite; re-exported so that the tests here name it as
// they always have.
pub use jobpath_tests::db::TestDb;

/// The secret every test server signs with, so tests can forge tokens on purpose.
pub const TEST_SECRET: &str = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz";
pub const PASSWORD: &str = "correct horse battery staple";

pub type ApiResult<T> = Result<ResponseValue<T>, jobpath_client::Error<types::Error>>;

/// Every test connects from 127.0.0.1: limits far above any test's traffic keep the
/// counting path exercised without tripping it. `tests/api/limits.rs` sets real ones.
pub const HIGH_LIMITS: [(&str, &str); 10] = [
    ("RATE_LIMIT_SIGNUP_PER_IP", "1000000"),
    ("RATE_LIMIT_LOGIN_PER_IP", "1000000"),
    ("RATE_LIMIT_REFRESH_PER_IP", "1000000"),
    ("RATE_LIMIT_PASSWORD_CHANGE_PER_IP", "1000000"),
    ("RATE_LIMIT_LOGIN_FAILURES_PER_ACCOUNT", "1000000"),
    ("RATE_LIMIT_FORGOT_PER_IP", "1000000"),
    ("RATE_LIMIT_RESET_PER_IP", "1000000"),
    ("RATE_LIMIT_VERIFY_PER_IP", "1000000"),
    ("RATE_LIMIT_RESEND_PER_IP", "1000000"),
    ("RATE_LIMIT_EMAILS_PER_RECIPIENT_PER_HOUR", "1000000"),
];

/// The configuration of a test server: low bcrypt cost, fixed secret, loopback, port 0.
pub fn test_config(db: &TestDb) -> Config {
    let mut vars: HashMap<&str, String> = HashMap::from([
        ("DATABASE_URL", db.url.clone()),
        ("JWT_SECRET_KEY", TEST_SECRET.to_owned()),
        ("BCRYPT_ROUNDS", "4".to_owned()),
        ("HOST", "127.0.0.1".to_owned()),
        ("PORT", "0".to_owned()),
        ("DB_POOL_SIZE", "4".to_owned()),
        ("DB_MAX_OVERFLOW", "4".to_owned()),
        ("HASH_THREADS", "2".to_owned()),
        ("SHUTDOWN_GRACE_SECONDS", "5".to_owned()),
        ("CORS_ORIGINS", "https://app.example.com".to_owned()),
    ]);
    vars.extend(HIGH_LIMITS.iter().map(|(k, v)| (*k, (*v).to_owned())));
    // The core suite's second run (`pooler::the_core_suite_passes_through_pgbouncer`): the
    // pools go through the PgBouncer it started, what needs a session of its own goes direct.
    if let Ok(pooler) = std::env::var(crate::pooler::PGBOUNCER_VAR) {
        let user = db.config.get_user().unwrap_or("postgres");
        vars.insert(
            "DATABASE_URL",
            format!("postgres://{user}@{pooler}/{}", db.name),
        );
        vars.insert("DATABASE_DIRECT_URL", db.url.clone());
        vars.insert("DB_POOLER", "transaction".to_owned());
    }
    Config::from_lookup(|k| vars.get(k).cloned()).expect("test configuration is valid")
}

/// The `From` of every message a test server sends.
pub const MAIL_FROM: &str = "JobPath <no-reply@jobpath.example>";
/// Long enough for a message to be queued, claimed, sent and stored on a loaded machine.
pub const MAIL_DELIVERY: Duration = Duration::from_secs(20);

/// Points `config`'s mailer at `mail`, with emailed links under `app_base_url`.
pub fn mail_to(config: &mut Config, mail: &MailServer, app_base_url: &str) {
    config.mail.mailer = Mailer::Smtp(SmtpServer::parse(&mail.url()).unwrap());
    config.mail.smtp_timeout = Duration::from_secs(2);
    config.mail.app_base_url = app_base_url.to_owned();
    config.mail.app_base_url_default = false;
    config.mail.from = MAIL_FROM.to_owned();
}

/// The token of the message's link to `{app_base_url}/{page}`, from its text part; the
/// HTML part must link to the same address.
pub fn emailed_token(mail: &Mail, app_base_url: &str, page: &str) -> String {
    let text = mail.text().expect("a text part");
    let prefix = format!("{app_base_url}/{page}#token=");
    let start = text
        .find(&prefix)
        .unwrap_or_else(|| panic!("no {prefix} link in:\n{text}"))
        + prefix.len();
    let token: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    assert_eq!(token.len(), 43, "a 256-bit token, base64url");
    let html = mail.html().expect("an HTML part");
    assert!(
        html.contains(&format!("href=\"{prefix}{token}\"")),
        "the HTML part links to the same page:\n{html}"
    );
    token
}

/// The 8-digit code of the message, which both parts show.
pub fn emailed_code(mail: &Mail) -> String {
    let text = mail.text().unwrap();
    let at = text.find("code: ").expect("a code") + "code: ".len();
    let code: String = text[at..].chars().take(8).collect();
    assert!(code.bytes().all(|b| b.is_ascii_digit()), "{code}");
    assert!(mail.html().unwrap().contains(&code));
    code
}

/// One running server process-equivalent: its own pools, listener and shutdown switch.
pub struct TestServer {
    pub base_url: String,
    /// `http://127.0.0.1:<port>/metrics` of the separate metrics listener; `None` when the
    /// configuration has `metrics_public`.
    pub metrics_url: Option<String>,
    pub api: Client,
    pub state: Arc<AppState>,
    violations: crate::spec_check::Violations,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    pub async fn start(config: Config) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        TestServer::start_on(listener, config).await
    }

    /// A server on a listener the test bound itself, for a configuration that must know
    /// the server's address before it starts (an `APP_BASE_URL` of its own pages, say).
    pub async fn start_on(listener: tokio::net::TcpListener, config: Config) -> TestServer {
        crate::capture::init();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let metrics_listener = match config.metrics_public {
            true => None,
            false => Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
        };
        let metrics_url = metrics_listener
            .as_ref()
            .map(|l| format!("http://{}/metrics", l.local_addr().unwrap()));
        let mut app = jobpath_server::App::build(config)
            .await
            .expect("server starts");
        if let Some(l) = metrics_listener {
            app.serve_metrics_on(l);
        }
        let state = Arc::clone(app.state());
        let violations = crate::spec_check::Violations::default();
        let record = Arc::clone(&violations);
        let observer: jobpath_server::state::ResponseObserver = Arc::new(move |seen| {
            let problems = crate::spec_check::SPEC.check(seen);
            if !problems.is_empty() {
                record.lock().unwrap().extend(problems);
            }
        });
        let _ = state.observer.set(observer);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(jobpath_server::run(listener, app, async {
            let _ = rx.await;
        }));
        TestServer {
            api: Client::new(&base_url),
            base_url,
            metrics_url,
            state,
            violations,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Shuts the server down gracefully and waits for it to finish.
    pub async fn stop(mut self) {
        let _ = &self.violations; // checked on drop, below
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("server stops within its grace period")
                .unwrap();
        }
    }

    /// A client sending `Authorization: Bearer <token>`.
    pub fn authed(&self, token: &str) -> Client {
        jobpath_client::authenticated(&self.base_url, token).unwrap()
    }

    /// A client sending exactly this `Authorization` header value.
    pub fn with_authorization(&self, value: &str) -> Client {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, value.parse().unwrap());
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap();
        Client::new_with_client(&self.base_url, http)
    }

    pub async fn signup(&self, email: &str, password: &str) -> types::SignupResponse {
        self.api
            .signup()
            .body(
                types::Credentials::builder()
                    .email(email)
                    .password(password),
            )
            .send()
            .await
            .expect("signup succeeds")
            .into_inner()
    }

    pub async fn try_login(&self, email: &str, password: &str) -> ApiResult<types::TokenResponse> {
        self.api
            .login()
            .body(
                types::LoginRequest::builder()
                    .email(email)
                    .password(password),
            )
            .send()
            .await
    }

    /// Logs in and returns the access token.
    pub async fn login(&self, email: &str, password: &str) -> String {
        self.try_login(email, password)
            .await
            .expect("login succeeds")
            .into_inner()
            .access_token
    }

    /// Logs in and returns the whole answer (access and refresh tokens, session id).
    pub async fn session(&self, email: &str, password: &str) -> types::TokenResponse {
        self.try_login(email, password)
            .await
            .expect("login succeeds")
            .into_inner()
    }

    /// Refreshes and returns the new tokens.
    pub async fn refresh(
        &self,
        refresh_token: &(impl RefreshToken + ?Sized),
    ) -> types::TokenResponse {
        self.try_refresh(refresh_token)
            .await
            .expect("refresh succeeds")
            .into_inner()
    }

    pub async fn try_refresh(
        &self,
        refresh_token: &(impl RefreshToken + ?Sized),
    ) -> ApiResult<types::TokenResponse> {
        self.api
            .refresh()
            .body(
                types::RefreshRequest::builder().refresh_token(Some(
                    refresh_token
                        .token()
                        .parse::<types::RefreshRequestRefreshToken>()
                        .expect("1 to 512 characters"),
                )),
            )
            .send()
            .await
    }

    /// Signs up a fresh user and logs in; returns (email, token).
    pub async fn user_with_token(&self) -> (String, String) {
        let email = unique_email();
        self.signup(&email, PASSWORD).await;
        let token = self.login(&email, PASSWORD).await;
        (email, token)
    }

    /// Sends a raw request, for inputs the typed client cannot produce.
    pub fn raw(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new().request(method, format!("{}{path}", self.base_url))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let violations = std::mem::take(&mut *self.violations.lock().unwrap());
        // Never panic while already unwinding: that would abort and hide the first failure.
        if !violations.is_empty() && !std::thread::panicking() {
            panic!(
                "responses departed from openapi.yaml:\n  {}",
                violations.join("\n  ")
            );
        }
    }
}

/// A refresh token as the tests hold it: a string, or the `refresh_token` of a body-mode
/// `TokenResponse` (optional in the spec, as cookie mode leaves it out), which every login
/// of these tests but cookie mode's has.
pub trait RefreshToken {
    fn token(&self) -> &str;
}

impl RefreshToken for str {
    fn token(&self) -> &str {
        self
    }
}

impl RefreshToken for String {
    fn token(&self) -> &str {
        self
    }
}

impl RefreshToken for Option<String> {
    fn token(&self) -> &str {
        self.as_deref()
            .expect("a body-mode login or refresh answers with its refresh token")
    }
}

/// A database plus one server on it: what most tests need.
pub struct TestApp {
    pub server: TestServer,
    // Declared last: dropped after the server has been told to stop.
    pub db: TestDb,
}

impl std::ops::Deref for TestApp {
    type Target = TestServer;
    fn deref(&self) -> &TestServer {
        &self.server
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(customise: impl FnOnce(&mut Config)) -> TestApp {
    let db = TestDb::create().await;
    let mut config = test_config(&db);
    customise(&mut config);
    let server = TestServer::start(config).await;
    TestApp { server, db }
}

/// The claims of a JWT, decoded without verifying it (tests read what a token says).
pub fn claims(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

pub fn unique_email() -> String {
    format!("user-{}@example.com", Uuid::new_v4().simple())
}

/// Asserts an error response with this status and code, in the standard body, and returns it.
#[track_caller]
pub fn expect_error<T: std::fmt::Debug>(
    result: ApiResult<T>,
    status: u16,
    code: &str,
) -> ResponseValue<types::Error> {
    match result {
        Err(jobpath_client::Error::ErrorResponse(err)) => {
            assert_eq!(err.status().as_u16(), status, "status of {err:?}");
            assert_eq!(err.error, code, "error code of {err:?}");
            assert_eq!(
                err.status_code,
                i32::from(status),
                "status_code in the body"
            );
            assert!(!err.detail.message.is_empty());
            let header_id = err
                .headers()
                .get("x-request-id")
                .expect("x-request-id header");
            assert_eq!(header_id.to_str().unwrap(), err.detail.request_id);
            if status == 401 {
                let challenge = err
                    .headers()
                    .get("www-authenticate")
                    .expect("WWW-Authenticate on 401");
                assert!(challenge.to_str().unwrap().starts_with("Bearer"));
            }
            err
        }
        other => panic!("expected {status} {code}, got {other:?}"),
    }
}

/// Asserts a raw response is the standard error with this status and code; returns the body.
pub async fn expect_raw_error(
    resp: reqwest::Response,
    status: u16,
    code: &str,
) -> serde_json::Value {
    assert_eq!(resp.status().as_u16(), status, "status");
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let body: serde_json::Value = resp.json().await.expect("a JSON error body");
    assert_eq!(body["error"], code, "{body}");
    assert_eq!(body["status_code"], status, "{body}");
    assert!(body["detail"]["message"].is_string(), "{body}");
    body
}
