//! Reliability: the database going away (stopped, restarted, hung), bursts larger than the
//! pool, races between sessions, restarts of every instance, and hostile connections.
//!
//! Tests that stop PostgreSQL run their own cluster (`faults::PgCluster`); a database that
//! stops answering is simulated by freezing a proxy in front of the shared one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::future::join_all;
use jobpath_client::{ResponseValue, types};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::faults::{FreezingProxy, PgCluster, config_for, eventually};
use crate::helpers::{
    PASSWORD, TestDb, TestServer, expect_error, spawn_app_with, test_config, unique_email,
};

type ApiResult<T> = Result<ResponseValue<T>, jobpath_client::Error<types::Error>>;

/// The most a request may take in the outage tests, whose `DB_POOL_TIMEOUT_SECONDS` is 2:
/// that limit, the server's one-second grace for a silent database, and room for a slow
/// machine.
const ANSWER_BOUND: Duration = Duration::from_secs(2 + 1 + 2);

/// The HTTP status of a result; 0 for a transport failure (no response at all).
fn status_of<T>(result: &ApiResult<T>) -> u16 {
    match result {
        Ok(resp) => resp.status().as_u16(),
        Err(jobpath_client::Error::ErrorResponse(err)) => err.status().as_u16(),
        Err(_) => 0,
    }
}

/// Asserts the standard 503 with `Retry-After`.
#[track_caller]
pub fn expect_unavailable<T: std::fmt::Debug>(result: ApiResult<T>) {
    let err = expect_error(result, 503, "service_unavailable");
    let retry = err
        .headers()
        .get("retry-after")
        .expect("Retry-After on 503");
    assert!(retry.to_str().unwrap().parse::<u32>().unwrap() >= 1);
}

/// Runs `request`, asserting it answers within [`ANSWER_BOUND`].
async fn bounded<T>(what: &str, request: impl std::future::Future<Output = T>) -> T {
    let started = Instant::now();
    let result = request.await;
    let took = started.elapsed();
    assert!(took < ANSWER_BOUND, "{what} took {took:?}");
    result
}

fn credentials(email: &str) -> types::builder::Credentials {
    types::Credentials::builder()
        .email(email)
        .password(PASSWORD)
}

#[tokio::test]
async fn while_postgres_is_down_requests_get_a_prompt_503_liveness_stays_up_and_it_recovers_alone()
{
    let test =
        "while_postgres_is_down_requests_get_a_prompt_503_liveness_stays_up_and_it_recovers_alone";
    let Some(pg) = PgCluster::start(test).await else {
        return;
    };
    let server = TestServer::start(config_for(
        &pg.url(),
        &[("DB_POOL_TIMEOUT_SECONDS", "2"), ("DB_POOL_SIZE", "4")],
    ))
    .await;
    let (email, token) = server.user_with_token().await;
    // Several pooled connections, every one of which the stop will break.
    let me = server.authed(&token);
    for r in join_all((0..8).map(|_| me.get_me().send())).await {
        r.unwrap();
    }

    pg.stop().await;
    let newcomer = unique_email();
    expect_unavailable(bounded("me", me.get_me().send()).await);
    expect_unavailable(
        bounded(
            "signup",
            server.api.signup().body(credentials(&newcomer)).send(),
        )
        .await,
    );
    expect_unavailable(bounded("login", server.try_login(&email, PASSWORD)).await);
    expect_unavailable(bounded("logout", me.logout().send()).await);
    expect_unavailable(bounded("readiness", server.api.readiness().send()).await);
    let live = server.api.liveness().send().await.unwrap();
    assert_eq!(live.status().as_u16(), 200);

    pg.start_again().await;
    // No retry loop: the first request after the database is back must succeed.
    server.api.readiness().send().await.expect("ready again");
    me.get_me().send().await.expect("the token still works");
    // What failed with 503 had no effect: the logout revoked nothing, the signup created
    // no account.
    me.logout().send().await.expect("logout now succeeds");
    expect_error(me.get_me().send().await, 401, "invalid_token");
    let created = server
        .api
        .signup()
        .body(credentials(&newcomer))
        .send()
        .await;
    assert_eq!(status_of(&created), 201, "{created:?}");
}

#[tokio::test]
async fn a_postgres_restart_under_load_answers_only_200_or_503_and_pooled_connections_recover() {
    let test =
        "a_postgres_restart_under_load_answers_only_200_or_503_and_pooled_connections_recover";
    let Some(pg) = PgCluster::start(test).await else {
        return;
    };
    let server = Arc::new(
        TestServer::start(config_for(
            &pg.url(),
            &[
                ("DB_POOL_TIMEOUT_SECONDS", "2"),
                ("DB_POOL_SIZE", "4"),
                ("DB_MAX_OVERFLOW", "4"),
            ],
        ))
        .await,
    );
    let mut users = Vec::new();
    for _ in 0..4 {
        users.push(server.user_with_token().await);
    }

    // (started at, status) of every request; `restarted` marks when PostgreSQL is back.
    let log: Arc<Mutex<Vec<(Instant, u16)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = users
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, (email, token))| {
            let (server, log, stop) = (Arc::clone(&server), Arc::clone(&log), Arc::clone(&stop));
            tokio::spawn(async move {
                let me = server.authed(&token);
                let mut n = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let status = if (n + i).is_multiple_of(3) {
                        status_of(&server.try_login(&email, PASSWORD).await)
                    } else {
                        status_of(&me.get_me().send().await)
                    };
                    log.lock().await.push((started, status));
                    n += 1;
                }
            })
        })
        .collect();
    let count = |pred: fn(u16) -> bool| {
        let log = Arc::clone(&log);
        async move { log.lock().await.iter().filter(|(_, s)| pred(*s)).count() }
    };
    eventually("load running", Duration::from_secs(10), || async {
        count(|s| s == 200).await >= 40
    })
    .await;
    pg.stop().await;
    eventually(
        "the outage seen as 503",
        Duration::from_secs(10),
        || async { count(|s| s == 503).await >= 8 },
    )
    .await;
    pg.start_again().await;
    let restarted = Instant::now();
    eventually(
        "load after the restart",
        Duration::from_secs(10),
        || async {
            let log = log.lock().await;
            log.iter().filter(|(t, _)| *t > restarted).count() >= 40
        },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }

    let log = log.lock().await;
    let unexpected: Vec<_> = log
        .iter()
        .filter(|(_, s)| ![200, 503].contains(s))
        .collect();
    assert!(
        unexpected.is_empty(),
        "statuses other than 200/503: {unexpected:?}"
    );
    let failed_after: Vec<_> = log
        .iter()
        .filter(|(t, s)| *t > restarted && *s != 200)
        .collect();
    assert!(
        failed_after.is_empty(),
        "requests started after PostgreSQL was back still failed: {failed_after:?}"
    );
}

#[tokio::test]
async fn a_statement_running_when_postgres_shuts_down_answers_503_and_has_no_effect() {
    let test = "a_statement_running_when_postgres_shuts_down_answers_503_and_has_no_effect";
    let Some(pg) = PgCluster::start(test).await else {
        return;
    };
    // A long statement limit, so that it is the shutdown that ends the statement.
    let server = Arc::new(
        TestServer::start(config_for(&pg.url(), &[("DB_POOL_TIMEOUT_SECONDS", "20")])).await,
    );
    let (_, token) = server.user_with_token().await;

    let (blocker, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    // The lock is held by a prepared transaction, not by a session: a fast shutdown ends
    // every session at once, and a lock held by one of them could be released (its
    // transaction rolled back) a moment before the logout's own backend is told to stop,
    // letting the logout commit. A prepared transaction keeps the lock through the
    // shutdown, so the only way the logout's statement ends is the shutdown itself.
    // EXCLUSIVE mode lets plain reads through (the guard's look-up of the token's session)
    // and holds the logout's own statement, which locks the session row.
    blocker
        .batch_execute(
            "BEGIN; LOCK TABLE sessions IN EXCLUSIVE MODE; \
             PREPARE TRANSACTION 'hold_sessions'",
        )
        .await
        .unwrap();
    let logout = tokio::spawn({
        let client = server.authed(&token);
        async move { client.logout().send().await }
    });
    let (observer, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    eventually(
        "the logout waiting on the lock",
        Duration::from_secs(10),
        || async {
            let row = observer
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                  WHERE wait_event_type = 'Lock' AND query LIKE 'WITH me AS%'",
                    &[],
                )
                .await
                .unwrap();
            row.get::<_, i64>(0) == 1
        },
    )
    .await;

    pg.stop().await;
    let result = bounded("the interrupted logout", async { logout.await.unwrap() }).await;
    expect_unavailable(result);

    pg.start_again().await;
    let (admin, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    admin
        .batch_execute("ROLLBACK PREPARED 'hold_sessions'")
        .await
        .unwrap();
    let me = server.authed(&token);
    me.get_me()
        .send()
        .await
        .expect("the interrupted logout revoked nothing");
    me.logout().send().await.unwrap();
}

/// `db.url` with its server replaced by `127.0.0.1:port`.
fn via_port(db: &TestDb, port: u16) -> (String, String) {
    let pg: tokio_postgres::Config = db.url.parse().unwrap();
    let target = match pg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => {
            format!("{host}:{}", pg.get_ports().first().copied().unwrap_or(5432))
        }
        other => panic!("the proxy test needs a TCP TEST_DATABASE_URL, got {other:?}"),
    };
    let password = pg
        .get_password()
        .map(|p| format!(":{}", String::from_utf8_lossy(p)))
        .unwrap_or_default();
    let url = format!(
        "postgres://{}{password}@127.0.0.1:{port}/{}",
        pg.get_user().unwrap_or("postgres"),
        pg.get_dbname().unwrap()
    );
    (target, url)
}

#[tokio::test]
async fn a_database_that_stops_answering_gets_a_bounded_503_and_the_service_recovers() {
    let db = TestDb::create().await;
    let (target, _) = via_port(&db, 0);
    let proxy = FreezingProxy::start(target).await;
    let (_, url) = via_port(&db, proxy.port);
    let server = TestServer::start(config_for(&url, &[("DB_POOL_TIMEOUT_SECONDS", "2")])).await;
    let (email, token) = server.user_with_token().await;
    let me = server.authed(&token);

    proxy.freeze();
    expect_unavailable(bounded("me", me.get_me().send()).await);
    expect_unavailable(bounded("login", server.try_login(&email, PASSWORD)).await);
    expect_unavailable(bounded("readiness", server.api.readiness().send()).await);
    let live = server.api.liveness().send().await.unwrap();
    assert_eq!(live.status().as_u16(), 200);

    proxy.thaw();
    server.api.readiness().send().await.expect("ready again");
    me.get_me().send().await.expect("serving again");
    server.login(&email, PASSWORD).await;
}

#[tokio::test]
async fn a_burst_larger_than_the_pool_queues_then_gets_503_never_500_and_is_healthy_right_after() {
    let app = spawn_app_with(|c| {
        c.db_pool_size = 2;
        c.db_max_overflow = 0;
        c.db_pool_timeout = Duration::from_secs(1);
    })
    .await;
    let mut tokens = Vec::new();
    for _ in 0..6 {
        tokens.push(app.user_with_token().await.1);
    }

    // Thirty requests on two connections: they queue, and all are served.
    let me = app.authed(&tokens[0]);
    let burst = join_all((0..30).map(|_| me.get_me().send())).await;
    for r in burst {
        r.expect("a queued request is served");
    }

    // Now hold every connection longer than the pool lets anyone wait: the logouts that
    // get a connection block on a lock until their statement limit, the rest wait for a
    // connection until the pool's. All must end as 503, promptly.
    let blocker = app.db.client().await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let clients: Vec<_> = tokens.iter().map(|t| app.authed(t)).collect();
    let started = Instant::now();
    let results = join_all(clients.iter().map(|c| c.logout().send())).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1 + 1 + 1 + 2),
        "the burst took {took:?}"
    );
    for r in results {
        expect_unavailable(r);
    }
    blocker.batch_execute("ROLLBACK").await.unwrap();

    // Healthy at once, and the refused logouts changed nothing.
    app.api.readiness().send().await.expect("ready right after");
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM sessions WHERE ended_at IS NOT NULL")
            .await,
        0
    );
    for c in &clients {
        c.get_me()
            .send()
            .await
            .expect("a 503 logout revoked nothing");
        c.logout().send().await.expect("logout succeeds now");
    }
}

#[tokio::test]
async fn a_login_racing_with_a_logout_of_another_session_of_the_same_user_is_unaffected() {
    let app = spawn_app_with(|_| {}).await;
    let (email, mut doomed) = app.user_with_token().await;
    for _ in 0..5 {
        let logout_client = app.authed(&doomed);
        let logout = logout_client.logout().send();
        let logins = join_all((0..6).map(|_| app.try_login(&email, PASSWORD)));
        let (logout, logins) = tokio::join!(logout, logins);
        assert_eq!(status_of(&logout), 200, "{logout:?}");
        let fresh: Vec<String> = logins
            .into_iter()
            .map(|r| {
                r.expect("a racing login succeeds")
                    .into_inner()
                    .access_token
            })
            .collect();
        for token in &fresh {
            app.authed(token)
                .get_me()
                .send()
                .await
                .expect("a token from a racing login works");
        }
        expect_error(logout_client.get_me().send().await, 401, "invalid_token");
        doomed = fresh[0].clone();
    }
}

#[tokio::test]
async fn a_revocation_through_one_instance_holds_on_every_instance_after_all_of_them_restart() {
    let db = TestDb::create().await;
    let (a, b) = tokio::join!(
        TestServer::start(test_config(&db)),
        TestServer::start(test_config(&db))
    );
    let (_, revoked) = a.user_with_token().await;
    let (_, kept) = b.user_with_token().await;
    b.authed(&revoked).logout().send().await.unwrap();
    tokio::join!(a.stop(), b.stop());

    let (c, d) = tokio::join!(
        TestServer::start(test_config(&db)),
        TestServer::start(test_config(&db))
    );
    for server in [&c, &d] {
        expect_error(
            server.authed(&revoked).get_me().send().await,
            401,
            "invalid_token",
        );
        server
            .authed(&kept)
            .get_me()
            .send()
            .await
            .expect("an unrevoked token works everywhere");
    }
}

/// Reads from `stream` until the server closes it; returns what it sent.
async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(limit, stream.read_to_end(&mut out))
        .await
        .expect("the server closes the connection in time")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_body_that_stops_arriving_gets_408_and_the_connection_is_closed() {
    // BODY_READ_TIMEOUT_SECONDS=1, so the test waits one second, not the default ten.
    let app = spawn_app_with(|c| c.body_read_timeout = Duration::from_secs(1)).await;
    let addr = app.base_url.trim_start_matches("http://").to_owned();
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    let body = format!(
        r#"{{"email":"{}","password":"{PASSWORD}"}}"#,
        unique_email()
    );
    let head = format!(
        "POST /auth/signup HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&body.as_bytes()[..10]).await.unwrap();
    // The rest never comes. The answer is due after the one second, not before: a 408 that
    // came at once would mean the timeout was not the one configured.
    let started = Instant::now();
    let answer = read_to_close(&mut conn, Duration::from_secs(1 + 5)).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "408 after {waited:?}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""error":"request_timeout""#), "{answer}");
    assert_eq!(app.db.count("SELECT count(*) FROM users").await, 0);
}

#[tokio::test]
async fn headers_that_stop_arriving_and_idle_connections_are_closed_by_the_server() {
    let app = spawn_app_with(|_| {}).await;
    let addr = app.base_url.trim_start_matches("http://").to_owned();
    let mut partial = TcpStream::connect(&addr).await.unwrap();
    partial
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    // The header read timeout is 10 s, and counts for an idle keep-alive connection too.
    let (a, b) = tokio::join!(
        read_to_close(&mut partial, Duration::from_secs(10 + 5)),
        read_to_close(&mut idle, Duration::from_secs(10 + 5))
    );
    assert!(!a.contains("200 OK"), "{a}");
    assert!(b.is_empty(), "{b}");
}

/// Sends one keep-alive request on `stream` and reads the status line of its response.
async fn request_on(stream: &mut TcpStream, path: &str) -> String {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    // Liveness bodies are small and carry a Content-Length; the whole response comes in
    // once the head has.
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") || !buf.ends_with(b"}") {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf)
        .lines()
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn connections_over_max_connections_get_a_clean_503_and_capacity_returns_when_one_closes() {
    let app = spawn_app_with(|c| c.max_connections = 2).await;
    let addr = app.base_url.trim_start_matches("http://").to_owned();
    let mut first = TcpStream::connect(&addr).await.unwrap();
    let mut second = TcpStream::connect(&addr).await.unwrap();
    assert_eq!(
        request_on(&mut first, "/health/live").await,
        "HTTP/1.1 200 OK"
    );
    assert_eq!(
        request_on(&mut second, "/health/live").await,
        "HTTP/1.1 200 OK"
    );

    // A third connection, through the generated client.
    expect_unavailable(app.api.liveness().send().await);
    expect_unavailable(app.api.readiness().send().await);
    // The connections within the limit are unaffected.
    assert_eq!(
        request_on(&mut first, "/health/live").await,
        "HTTP/1.1 200 OK"
    );

    drop(second);
    eventually(
        "a slot freed by the closed connection",
        Duration::from_secs(5),
        || async { status_of(&app.api.liveness().send().await) == 200 },
    )
    .await;
}
