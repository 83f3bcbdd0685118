//! The `jobpath-server` binary itself, run as an operator or a container runtime runs it:
//! its commands and exit codes, its start-up line and logs (complete, never a password),
//! request ids in the log lines, the separate metrics port, `healthcheck` against a live
//! and a stopped server — plus static checks of the container files (`container`).
//!
//! Each test runs the binary with a cleared environment in an empty working directory, so no
//! `.env` or variable of the developer's leaks in. Servers use a fresh database on the local
//! PostgreSQL (`TEST_DATABASE_URL`, as for the end-to-end suite) and port 0.

mod admin;
mod container;
mod outbox;
mod production;
mod variables;
mod zero_config;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use jobpath_tests::db::TestDb;
use jobpath_tests::process::ServerProcess;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_jobpath-server");
const JWT_SECRET: &str = "cli-test-secret-5Qm9Xw2Lp8Rt4Zk7Nv3Bh6Jd";
const PEPPER: &str = "cli-test-pepper-8Hs2Kd7Wq4Lm9Zx3Cv6Bn1Tr";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The binary with only `PATH` and `vars` in its environment, run from an empty directory.
fn jobpath(args: &[&str], vars: &[(&str, &str)]) -> Command {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-cwd");
    std::fs::create_dir_all(&dir).unwrap();
    jobpath_in(&dir, args, vars)
}

/// The binary with only `PATH`, `HOME` and `vars` in its environment, run from `dir`.
fn jobpath_in(dir: &Path, args: &[&str], vars: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .envs(vars.iter().copied())
        .current_dir(dir);
    cmd
}

fn output(args: &[&str], vars: &[(&str, &str)]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = jobpath(args, vars).output().expect("the binary runs");
    (
        status.code().expect("exited, not killed"),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

// --- a database per test ------------------------------------------------------------------

/// A fresh database, dropped when the value is dropped, with a URL for it.
struct Database {
    db: TestDb,
    /// Its URL with a password in it. The local PostgreSQL trusts loopback connections and
    /// ignores the password; it is there so the tests can show it is never printed.
    url: String,
    password: String,
}

impl Database {
    async fn create() -> Database {
        let db = TestDb::with_prefix("jobpath_cli").await;
        let password = match db.config.get_password() {
            Some(p) => String::from_utf8(p.to_vec()).unwrap(),
            None => format!("db-pw-{}", uuid::Uuid::new_v4().simple()),
        };
        let url = db.url_via(&db.server(), &password);
        Database { db, url, password }
    }

    fn name(&self) -> &str {
        &self.db.name
    }

    async fn count(&self, sql: &str) -> i64 {
        self.db.count(sql).await
    }
}

// --- a running server ---------------------------------------------------------------------

/// `jobpath-server serve` on port 0 as production runs it, with `vars` on top.
fn serve(db: &Database, vars: &[(&str, &str)]) -> ServerProcess {
    let mut all = vec![
        ("DATABASE_URL", db.url.as_str()),
        ("APP_ENV", "production"),
        ("JWT_SECRET_KEY", JWT_SECRET),
        ("PASSWORD_PEPPER", PEPPER),
        // Nothing listens there: these tests send no email, and a message that is queued
        // just waits.
        ("SMTP_URL", "smtp://127.0.0.1:9?tls=none"),
        ("APP_BASE_URL", "https://app.example.com"),
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("METRICS_PORT", "0"),
        // The lowest cost production accepts.
        ("BCRYPT_ROUNDS", "10"),
        ("DB_POOL_SIZE", "3"),
        ("CORS_ORIGINS", "https://app.example.com"),
    ];
    all.extend_from_slice(vars);
    ServerProcess::spawn(jobpath(&["serve"], &all))
}

/// A bare HTTP/1.1 request (the server crate has no HTTP client, and needs none); returns
/// (status, the whole response as text).
fn request(addr: &str, head: &str, request_id: Option<&str>, json: Option<&str>) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    // Only a guard against a hung server, not a speed check: these servers hash at the
    // production cost 12 on threads that yield to every other process (`auth::hasher`),
    // so a signup waits as long as the machine is busy with the rest of the suite.
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let id = request_id.map_or(String::new(), |id| format!("X-Request-Id: {id}\r\n"));
    let body = json.map_or(String::new(), |b| {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )
    });
    let end = if json.is_some() { "" } else { "\r\n" };
    write!(
        stream,
        "{head} HTTP/1.1\r\nHost: {addr}\r\n{id}Connection: close\r\n{end}{body}"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    (status, response)
}

fn get(addr: &str, path: &str, request_id: Option<&str>) -> (u16, String) {
    request(addr, &format!("GET {path}"), request_id, None)
}

fn json_line(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"))
}

// --- the tests ----------------------------------------------------------------------------

#[test]
fn version_and_help_describe_the_binary_and_strays_exit_2() {
    let (code, stdout, _) = output(&["--version"], &[]);
    assert_eq!(code, 0);
    assert_eq!(
        stdout.trim(),
        format!("jobpath-server {}", env!("CARGO_PKG_VERSION"))
    );
    for help in ["--help", "-h", "help"] {
        let (code, stdout, _) = output(&[help], &[]);
        assert_eq!(code, 0);
        for command in [
            "serve",
            "migrate",
            "check-config",
            "healthcheck",
            "--version",
        ] {
            assert!(
                stdout.contains(command),
                "{help} lists {command}:\n{stdout}"
            );
        }
    }
    for stray in [&["frobnicate"][..], &["serve", "--port=1"][..]] {
        let (code, _, stderr) = output(stray, &[]);
        assert_eq!(code, 2, "{stray:?}");
        assert!(stderr.contains("Usage:"), "{stray:?}: {stderr}");
    }
}

#[test]
fn check_config_prints_the_effective_configuration_with_secrets_redacted() {
    let db_password = "s3cret-db-password-7781";
    let url = format!("postgres://app:{db_password}@db.internal:5433/jobs");
    let (code, stdout, stderr) = output(
        &["check-config"],
        &[
            ("APP_ENV", "production"),
            ("DATABASE_URL", &url),
            ("JWT_SECRET_KEY", JWT_SECRET),
            ("PASSWORD_PEPPER", PEPPER),
            ("BCRYPT_ROUNDS", "11"),
            ("METRICS_PORT", "9200"),
            (
                "SMTP_URL",
                "smtps://mailer:s3cret-smtp-password@mail.example.com",
            ),
            ("APP_BASE_URL", "https://app.example.com"),
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    for line in [
        "APP_ENV=production",
        "DATABASE_URL=postgres://app:<redacted>@db.internal:5433/jobs",
        "JWT_SECRET_KEY=<set, redacted>",
        "PASSWORD_PEPPER=<set, redacted>",
        "BCRYPT_ROUNDS=11",
        "METRICS_PUBLIC=false",
        "METRICS_PORT=9200",
        "MAILER=smtp",
        "SMTP_URL=smtps://mailer:***@mail.example.com:465",
        "APP_BASE_URL=https://app.example.com",
        "configuration is valid",
    ] {
        assert!(stdout.lines().any(|l| l == line), "{line:?} in\n{stdout}");
    }
    for secret in [db_password, JWT_SECRET, PEPPER, "s3cret-smtp-password"] {
        assert!(!stdout.contains(secret) && !stderr.contains(secret));
    }
}

#[test]
fn check_config_fails_naming_the_variable_and_without_echoing_secrets() {
    let (code, _, stderr) = output(&["check-config"], &[("APP_ENV", "production")]);
    assert_eq!(code, 1);
    assert!(stderr.contains("JWT_SECRET_KEY"), "{stderr}");

    let (code, _, stderr) = output(
        &["check-config"],
        &[
            ("BCRYPT_ROUNDS", "99"),
            ("DATABASE_URL", "postgres://app:pw-0451@db/jobs"),
        ],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("BCRYPT_ROUNDS"), "{stderr}");
    assert!(!stderr.contains("pw-0451"), "{stderr}");
}

#[tokio::test]
async fn migrate_applies_every_migration_and_exits_and_is_idempotent() {
    let db = Database::create().await;
    let migrations = std::fs::read_dir(repo_root().join("sql"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "sql")
        })
        .count() as i64;
    for _ in 0..2 {
        let (code, stdout, stderr) = output(
            &["migrate"],
            &[("DATABASE_URL", &db.url), ("LOG_FORMAT", "json")],
        );
        assert_eq!(code, 0, "{stdout}{stderr}");
        assert!(stdout.contains("migrations up to date"), "{stdout}");
        assert!(!stdout.contains(&db.password) && !stderr.contains(&db.password));
    }
    assert_eq!(
        db.count("SELECT count(*) FROM schema_migrations").await,
        migrations
    );
}

/// JSON logs: the start-up line has every field an operator needs, a request's lines carry
/// its id, `/metrics` is on the metrics port only, `healthcheck` passes while the server runs
/// and fails once it has stopped — and no password or secret is ever printed.
#[tokio::test]
async fn serve_logs_a_complete_start_up_line_and_request_ids_and_healthcheck_follows_it() {
    let db = Database::create().await;
    let server = serve(
        &db,
        &[
            // The test's own X-Request-Id is kept only from a trusted proxy.
            ("TRUSTED_PROXIES", "127.0.0.1"),
            ("LOG_FORMAT", "json"),
        ],
    );
    let startup = json_line(&server.wait_for("listening").await);
    assert_eq!(startup["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(startup["database"], format!("127.0.0.1:5432/{}", db.name()));
    assert_eq!(startup["pool_size"], 3);
    assert_eq!(startup["bcrypt_cost"], 10);
    assert_eq!(startup["token_ttl_minutes"], 30);
    assert_eq!(startup["cors_origins"], "https://app.example.com");
    let address = startup["address"].as_str().unwrap().to_owned();
    let metrics = startup["metrics"].as_str().unwrap().to_owned();
    assert!(address.starts_with("127.0.0.1:"), "{startup}");
    let metrics_addr = metrics
        .strip_prefix("http://")
        .and_then(|m| m.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("metrics address in {startup}"))
        .to_owned();

    let (status, _) = get(&address, "/health/live", Some("cli-rid-live-01"));
    assert_eq!(status, 200);
    let (status, body) = get(&address, "/no/such/path", Some("cli-rid-404-02"));
    assert_eq!(status, 404);
    assert!(body.contains(r#""request_id":"cli-rid-404-02""#), "{body}");
    for (id, status) in [("cli-rid-live-01", 200), ("cli-rid-404-02", 404)] {
        let line = json_line(&server.wait_for(id).await);
        assert_eq!(line["span"]["id"], id, "{line}");
        assert_eq!(line["status"], status, "{line}");
    }

    let (status, exposition) = get(&metrics_addr, "/metrics", None);
    assert_eq!(status, 200);
    assert!(
        exposition
            .contains(r#"jobpath_http_requests_total{operation="liveness",status_class="2xx"} 1"#),
        "{exposition}"
    );
    let (status, _) = get(&address, "/metrics", None);
    assert_eq!(status, 404, "no metrics on the public port by default");

    let port = address.rsplit(':').next().unwrap().to_owned();
    let check = [
        ("HOST", "127.0.0.1"),
        ("PORT", port.as_str()),
        ("DATABASE_URL", db.url.as_str()),
    ];
    let (code, stdout, stderr) = output(&["healthcheck"], &check);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.starts_with("healthy"), "{stdout}");

    let logs = server.stop().await;
    assert!(logs.contains("stopped"), "{logs}");
    let (code, stdout, stderr) = output(&["healthcheck"], &check);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains("unhealthy"), "{stderr}");

    for secret in [db.password.as_str(), JWT_SECRET] {
        assert!(!logs.contains(secret), "{secret} in the logs:\n{logs}");
    }
}

/// Text logs, as a person reads them: the start-up line names everything in one line (and,
/// written to a pipe, has no colour codes between the words), a signup's lines carry its
/// request id, and the password is nowhere.
#[tokio::test]
async fn text_logs_name_the_setup_and_each_requests_id_but_never_the_password() {
    let db = Database::create().await;
    let server = serve(
        &db,
        &[
            // The test's own X-Request-Id is kept only from a trusted proxy.
            ("TRUSTED_PROXIES", "127.0.0.1"),
            ("LOG_FORMAT", "text"),
            ("DB_POOL_SIZE", "5"),
        ],
    );
    let startup = server.wait_for("listening").await;
    for field in [
        format!("version={}", env!("CARGO_PKG_VERSION")),
        "address=127.0.0.1:".to_owned(),
        format!("database=127.0.0.1:5432/{}", db.name()),
        "pool_size=5".to_owned(),
        "bcrypt_cost=10".to_owned(),
        "token_ttl_minutes=30".to_owned(),
        "cors_origins=https://app.example.com".to_owned(),
        "metrics=http://127.0.0.1:".to_owned(),
    ] {
        assert!(startup.contains(&field), "{field:?} in {startup}");
    }
    let address = startup
        .split("address=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_owned();

    let password = "text-log-password-9931";
    let body = format!(r#"{{"email":"cli-operator@example.com","password":"{password}"}}"#);
    let (status, response) = request(
        &address,
        "POST /auth/signup",
        Some("cli-rid-signup-03"),
        Some(&body),
    );
    assert_eq!(status, 201, "{response}");
    for event in ["account created", "status=201"] {
        let line = server.wait_for(event).await;
        assert!(line.contains("id=cli-rid-signup-03"), "{line}");
    }

    let logs = server.stop().await;
    for secret in [password, db.password.as_str(), JWT_SECRET] {
        assert!(!logs.contains(secret), "{secret} in the logs:\n{logs}");
    }
}
