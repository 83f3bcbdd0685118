//! The `jobpath-server` binary as an orchestrator runs it: start-up with and without a
//! database, a malformed `DATABASE_URL`, and SIGTERM with a request in flight.
//!
//! The end-to-end suite (`tests/api`) runs the server in-process, where signals, exit codes
//! and start-up logs cannot be seen; these tests start the real process. They use the shared
//! PostgreSQL (`TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`)
//! with a database of their own, and raw HTTP, since the server crate has no HTTP client.

use std::time::{Duration, Instant};

use jobpath_tests::db::TestDb;
use jobpath_tests::process::ServerProcess;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const SECRET: &str = "process-test-secret-0123456789-abcdefghijklmnop";
const PASSWORD: &str = "correct horse battery staple";

/// Starts the binary as an orchestrator would, with `vars` on top of a small, fast setup.
fn spawn(vars: &[(&str, &str)]) -> ServerProcess {
    // An empty working directory: no developer `.env` may leak into the test.
    let cwd = std::env::temp_dir().join(format!("jobpath-proc-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&cwd).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_jobpath-server"));
    cmd.current_dir(&cwd)
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        // Port 0 for metrics too: several of these servers run at once.
        .env("METRICS_PORT", "0")
        .env("LOG_FORMAT", "json")
        .env("JWT_SECRET_KEY", SECRET)
        .env("BCRYPT_ROUNDS", "4")
        .env("HASH_THREADS", "1")
        .env("DB_POOL_SIZE", "2")
        .env("DB_MAX_OVERFLOW", "0")
        .envs(vars.iter().copied());
    let server = ServerProcess::spawn(cmd);
    let _ = std::fs::remove_dir(&cwd);
    server
}

/// Sends `GET path` on a keep-alive connection and returns the status code.
async fn get(stream: &mut TcpStream, path: &str) -> u16 {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await
        .unwrap();
    read_response(stream).await.0
}

/// Reads one response with a Content-Length body: (status, body).
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + length {
                let status = head[9..12].parse().unwrap();
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into_owned();
                return (status, body);
            }
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed mid-response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn signup_request(email: &str) -> (String, String) {
    let body = format!(r#"{{"email":"{email}","password":"{PASSWORD}"}}"#);
    let head = format!(
        "POST /auth/signup HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    (head, body)
}

/// Opens a connection, proves it is being served, and starts a signup whose body is only
/// half sent: a request the server is in the middle of.
async fn signup_in_flight(address: &str, email: &str) -> (TcpStream, String) {
    let mut conn = TcpStream::connect(address).await.unwrap();
    assert_eq!(get(&mut conn, "/health/live").await, 200);
    let (head, body) = signup_request(email);
    let (first, rest) = body.split_at(body.len() / 2);
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(first.as_bytes()).await.unwrap();
    // Lets the server read the head and enter the handler before the signal arrives;
    // an ordering aid, not a measurement.
    tokio::time::sleep(Duration::from_millis(300)).await;
    (conn, rest.to_owned())
}

#[tokio::test]
async fn sigterm_stops_accepting_lets_an_in_flight_signup_finish_and_exits_0() {
    let db = TestDb::with_prefix("jobpath_proc").await;
    let url = db.url_via(&db.server(), "db-password-never-logged");
    let mut server = spawn(&[
        ("DATABASE_URL", url.as_str()),
        ("SHUTDOWN_GRACE_SECONDS", "10"),
    ]);
    let address = server.address().await;
    let email = format!("inflight-{}@example.com", uuid::Uuid::new_v4().simple());
    let (mut conn, rest) = signup_in_flight(&address, &email).await;

    server.sigterm();
    // New connections are refused while the signup is still open...
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(&address).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...and the signup, once its body is complete, still succeeds.
    conn.write_all(rest.as_bytes()).await.unwrap();
    let (status, body) = read_response(&mut conn).await;
    assert_eq!(status, 201, "{body}");
    assert!(body.contains(&email), "{body}");

    let exit = server.exit_within(Duration::from_secs(10)).await;
    assert_eq!(exit.code(), Some(0), "{}", server.output());
    assert_eq!(
        db.count_with("SELECT count(*) FROM users WHERE email = $1", &[&email])
            .await,
        1
    );
    server
        .wait_for_within("SIGTERM received", Duration::from_secs(1))
        .await;
    server.assert_no_secret_printed(&["db-password-never-logged", SECRET, PASSWORD]);
}

#[tokio::test]
async fn sigterm_exits_0_when_the_grace_period_ends_even_if_a_request_never_completes() {
    let db = TestDb::with_prefix("jobpath_proc").await;
    let url = db.url_via(&db.server(), "x");
    let mut server = spawn(&[
        ("DATABASE_URL", url.as_str()),
        ("SHUTDOWN_GRACE_SECONDS", "1"),
    ]);
    let address = server.address().await;
    let email = format!("stalled-{}@example.com", uuid::Uuid::new_v4().simple());
    let (_conn, _never_sent) = signup_in_flight(&address, &email).await;

    server.sigterm();
    // The grace period (1 s) ends it, well before the 10 s body read timeout would.
    let exit = server.exit_within(Duration::from_secs(1 + 4)).await;
    assert_eq!(exit.code(), Some(0), "{}", server.output());
    assert_eq!(
        db.count_with("SELECT count(*) FROM users WHERE email = $1", &[&email])
            .await,
        0
    );
}

/// Forwards every connection on `listener` to `target`.
async fn forward(listener: TcpListener, target: String) {
    while let Ok((mut inbound, _)) = listener.accept().await {
        let target = target.clone();
        tokio::spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(&target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

#[tokio::test]
async fn without_a_database_start_up_retries_saying_why_and_serves_once_it_appears() {
    let db = TestDb::with_prefix("jobpath_proc").await;
    // A port where nothing listens yet; the database "appears" there later.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = db.url_via(&format!("127.0.0.1:{port}"), "db-password-never-logged");
    let mut server = spawn(&[("DATABASE_URL", url.as_str())]);

    let warning = server
        .wait_for_within("database not reachable yet", Duration::from_secs(10))
        .await;
    assert!(
        warning.contains("refused"),
        "the reason is logged: {warning}"
    );
    assert!(warning.contains(&format!("127.0.0.1:{port}")), "{warning}");

    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(forward(listener, db.server()));
    let address = server.address().await;
    let mut conn = TcpStream::connect(&address).await.unwrap();
    assert_eq!(get(&mut conn, "/health/ready").await, 200);
    drop(conn);

    server.sigterm();
    assert_eq!(
        server.exit_within(Duration::from_secs(10)).await.code(),
        Some(0)
    );
    server.assert_no_secret_printed(&["db-password-never-logged", SECRET]);
}

#[tokio::test]
async fn start_up_gives_up_after_db_startup_timeout_seconds_with_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://postgres:db-password-never-logged@127.0.0.1:{port}/x");
    let mut server = spawn(&[
        ("DATABASE_URL", url.as_str()),
        ("DB_STARTUP_TIMEOUT_SECONDS", "1"),
    ]);
    let exit = server.exit_within(Duration::from_secs(1 + 9)).await;
    assert_eq!(exit.code(), Some(1));
    let output = server.output();
    assert!(
        output.contains("jobpath-server: error: connecting to the database")
            && output.contains("DB_STARTUP_TIMEOUT_SECONDS"),
        "{output}"
    );
    server.assert_no_secret_printed(&["db-password-never-logged"]);
}

#[tokio::test]
async fn a_malformed_database_url_is_an_immediate_clear_error_without_the_password() {
    let mut server = spawn(&[(
        "DATABASE_URL",
        "postgres://app:db-password-never-logged@db.internal:not-a-port/app",
    )]);
    // Immediate: no connection is attempted, so no retry either.
    let exit = server.exit_within(Duration::from_secs(5)).await;
    assert_eq!(exit.code(), Some(1));
    let output = server.output();
    assert!(
        output.contains("DATABASE_URL is not a valid PostgreSQL URL"),
        "{output}"
    );
    assert!(!output.contains("not reachable"), "{output}");
    server.assert_no_secret_printed(&["db-password-never-logged"]);
}
