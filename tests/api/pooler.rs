//! Scale-out as it is deployed: instances over PgBouncer in transaction mode, behind HAProxy.
//!
//! - The e2e suite's core (signup, login, me, logout, sessions with refresh) runs a second
//!   time with every test server's pools going through a stock PgBouncer in transaction mode
//!   ([`the_core_suite_passes_through_pgbouncer_in_transaction_mode`]): this binary runs
//!   itself with those modules' names as the filter and [`PGBOUNCER_VAR`] set, which
//!   `helpers::test_config` reads.
//! - Under load, with fewer server connections than clients so that each transaction may
//!   land on another one, nothing fails and nothing is left set on a server connection.
//! - A transaction through the pooler, and a write that is a statement of its own, are still
//!   cut (and rolled back) by PostgreSQL's own statement timeout.
//! - The outbox's `LISTEN`, which a transaction-mode pooler would lose, is on a connection
//!   to `DATABASE_DIRECT_URL`.
//! - PgBouncer going away is a database outage: 503 with `Retry-After`, then service resumes
//!   by itself when it is back.
//! - Two instances behind HAProxy: the balancer's `X-Forwarded-For` decides the client
//!   address, so a per-IP limit holds per real client across instances, and stopping an
//!   instance under load costs no request.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::join_all;
use jobpath_client::{Client, types};
use jobpath_tests::haproxy::HaProxy;
use jobpath_tests::pgbouncer::PgBouncer;

use crate::helpers::{
    ApiResult, PASSWORD, TestDb, TestServer, expect_error, test_config, unique_email,
};

/// Set (to PgBouncer's `host:port`) for the core suite's run through it.
pub const PGBOUNCER_VAR: &str = "JOBPATH_TEST_PGBOUNCER";

/// The modules of the core suite, as test-name filters.
const CORE: &[&str] = &["signup::", "login::", "me::", "logout::", "sessions::"];

/// A configuration whose pools go through `bouncer` and whose direct connections do not.
fn through(bouncer: &PgBouncer, db: &TestDb) -> jobpath_server::config::Config {
    let mut config = test_config(db);
    config.database_url = Some(bouncer.url_for(&db.name).parse().unwrap());
    config.database_direct_url = Some(db.url.parse().unwrap());
    config.db_pooler = jobpath_server::config::Pooler::Transaction;
    config
}

#[tokio::test]
async fn the_core_suite_passes_through_pgbouncer_in_transaction_mode() {
    if std::env::var_os(PGBOUNCER_VAR).is_some() {
        return; // this is the second run itself
    }
    let probe = TestDb::create().await;
    let Some(bouncer) = PgBouncer::start("pooler::core_suite", &probe.server(), 5).await else {
        return;
    };
    let exe = std::env::current_exe().unwrap();
    let listed = Command::new(&exe)
        .args(CORE)
        .args(["--list", "--format", "terse"])
        .output()
        .unwrap();
    let expected = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter(|l| l.ends_with(": test"))
        .count();
    assert!(expected >= 40, "only {expected} core tests listed");
    // Two threads, as `cargo test` on this machine's two cores: it runs beside the rest of
    // the suite, within the shared PostgreSQL's connection limit.
    let run = tokio::task::spawn_blocking(move || {
        Command::new(exe)
            .args(CORE)
            .args(["--test-threads", "2"])
            .env(PGBOUNCER_VAR, bouncer.address())
            .output()
            .map(|out| (out, bouncer))
    })
    .await
    .unwrap()
    .unwrap();
    let (out, bouncer) = run;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The tests' databases were reached through PgBouncer (not directly, as they would be
    // if the routing of `helpers::test_config` broke).
    let through = bouncer.databases_used("jobpath_test_").await;
    assert!(
        through >= expected / 2,
        "only {through} test databases went through PgBouncer for {expected} tests"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary = format!("test result: ok. {expected} passed; 0 failed");
    assert!(
        out.status.success() && stdout.contains(&summary),
        "the core suite through PgBouncer did not pass ({summary} expected):\n{stdout}\n{stderr}\n\
         PgBouncer printed:\n{}",
        bouncer.output()
    );
    eprintln!("pooler: {summary} through PgBouncer in transaction mode");
}

#[tokio::test]
async fn under_load_through_pgbouncer_nothing_fails_and_nothing_stays_set_on_a_connection() {
    let db = TestDb::create().await;
    // Two server connections for ten client connections (the pools' 4 + 4 + 2): consecutive
    // transactions of one pooled connection run on different server connections.
    let Some(bouncer) = PgBouncer::start("pooler::under_load", &db.server(), 2).await else {
        return;
    };
    let server = Arc::new(TestServer::start(through(&bouncer, &db)).await);
    let rounds = join_all((0..24).map(|_| {
        let server = Arc::clone(&server);
        async move {
            let email = unique_email();
            server.signup(&email, PASSWORD).await;
            let session = server.session(&email, PASSWORD).await;
            let me = server.authed(&session.access_token);
            me.get_me().send().await.expect("me through PgBouncer");
            let next = server
                .refresh(session.refresh_token.as_deref().unwrap())
                .await;
            let me = server.authed(&next.access_token);
            me.get_me().send().await.expect("me after refresh");
            me.list_sessions().send().await.expect("sessions");
            me.logout().send().await.expect("logout through PgBouncer");
            expect_error(me.get_me().send().await, 401, "invalid_token");
        }
    }))
    .await;
    assert_eq!(rounds.len(), 24);

    // The control: this PgBouncer does hand one client's transactions to different server
    // connections, so a named prepared statement — what the server no longer sends — fails.
    let (named, conn) = tokio_postgres::connect(&bouncer.url_for(&db.name), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut lost = 0;
    for _ in 0..10 {
        if let Ok(stmt) = named.prepare("SELECT count(*) FROM users").await
            && let Err(e) = named.query(&stmt, &[]).await
        {
            let message = e.as_db_error().map(|d| d.message().to_owned());
            assert!(
                message
                    .as_deref()
                    .is_some_and(|m| m.contains("does not exist")),
                "{e:?}"
            );
            lost += 1;
        }
    }
    assert!(
        lost > 0,
        "every named statement survived: the test would not catch one"
    );

    // Each fresh client of PgBouncer gets some server connection: none of them may carry a
    // statement timeout (or anything else) that the server set outside a transaction.
    for _ in 0..6 {
        let (client, conn) =
            tokio_postgres::connect(&bouncer.url_for(&db.name), tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(conn);
        let rows = client.simple_query("SHOW statement_timeout").await.unwrap();
        let value = rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        });
        assert_eq!(
            value.as_deref(),
            Some("0"),
            "a server connection kept a setting"
        );
    }
}

#[tokio::test]
async fn behind_an_undeclared_transaction_pooler_the_token_lookup_goes_unnamed_and_says_so() {
    let db = TestDb::create().await;
    let Some(bouncer) = PgBouncer::start("pooler::undeclared", &db.server(), 2).await else {
        return;
    };
    let mut config = through(&bouncer, &db);
    // DB_POOLER left at `none`: the lookup is prepared, and vanishes on the next rotation.
    config.db_pooler = jobpath_server::config::Pooler::None;
    let server = Arc::new(TestServer::start(config).await);
    let tokens = join_all((0..8).map(|_| {
        let server = Arc::clone(&server);
        async move { server.user_with_token().await.1 }
    }))
    .await;
    let capture = crate::capture::Capture::start();
    for _ in 0..5 {
        let checks = join_all(tokens.iter().map(|t| {
            let me = server.authed(t);
            async move { me.get_me().send().await.map(|_| ()) }
        }))
        .await;
        for check in checks {
            check.expect("no lookup fails, not even the one that found the statement gone");
        }
    }
    let logs = capture.text();
    assert!(
        logs.contains("set DB_POOLER=transaction"),
        "the vanished statement was not reported:\n{logs}"
    );
}

#[tokio::test]
async fn a_transaction_through_pgbouncer_is_cut_by_postgresqls_own_statement_timeout() {
    let db = TestDb::create().await;
    let Some(bouncer) = PgBouncer::start("pooler::statement_timeout", &db.server(), 3).await else {
        return;
    };
    let mut config = through(&bouncer, &db);
    config.db_pool_timeout = Duration::from_secs(1);
    let server = TestServer::start(config).await;
    let email = unique_email();
    server.signup(&email, PASSWORD).await;

    let blocker = db.client().await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let capture = crate::capture::Capture::start();
    let login = server.try_login(&email, PASSWORD).await;
    let logs = capture.text();
    drop(capture);
    match login {
        Err(jobpath_client::Error::ErrorResponse(e)) => {
            assert_eq!(e.status().as_u16(), 503);
        }
        other => panic!("expected a 503, got {other:?}"),
    }
    // PostgreSQL cancelled the statement (57014) at the transaction's own limit: the
    // server did not have to give up on it and cancel it itself.
    assert!(
        logs.contains("statement timeout"),
        "no statement timeout in the logs:\n{logs}"
    );
    blocker.batch_execute("ROLLBACK").await.unwrap();
    server
        .try_login(&email, PASSWORD)
        .await
        .expect("login once the lock is gone");
}

#[tokio::test]
async fn a_single_statement_write_through_pgbouncer_is_cut_by_postgresql_and_rolled_back() {
    let db = TestDb::create().await;
    let Some(bouncer) = PgBouncer::start("pooler::single_write", &db.server(), 3).await else {
        return;
    };
    let mut config = through(&bouncer, &db);
    config.db_pool_timeout = Duration::from_secs(1);
    let server = TestServer::start(config).await;

    // EXCLUSIVE lets plain reads through and holds the signup's INSERT, a statement of its
    // own (no transaction around it in the code).
    let blocker = db.client().await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE users IN EXCLUSIVE MODE")
        .await
        .unwrap();
    let email = unique_email();
    let capture = crate::capture::Capture::start();
    let signup = server
        .api
        .signup()
        .body(
            types::Credentials::builder()
                .email(email.as_str())
                .password(PASSWORD),
        )
        .send()
        .await;
    let logs = capture.text();
    drop(capture);
    crate::reliability::expect_unavailable(signup);
    assert!(
        logs.contains("statement timeout"),
        "PostgreSQL did not cut the write itself:\n{logs}"
    );
    blocker.batch_execute("ROLLBACK").await.unwrap();
    // Cut by PostgreSQL means rolled back: the 503 hides no account.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        db.count_with("SELECT count(*) FROM users WHERE email = $1", &[&email])
            .await,
        0
    );
}

/// A client whose connections come from `ip` (any 127.x address is this machine), with
/// `token` as its bearer token if given.
fn client_from(base_url: &str, ip: Ipv4Addr, token: Option<&str>) -> Client {
    client_with(base_url, ip, token, reqwest::header::HeaderMap::new())
}

fn client_with(
    base_url: &str,
    ip: Ipv4Addr,
    token: Option<&str>,
    mut headers: reqwest::header::HeaderMap,
) -> Client {
    if let Some(token) = token {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
    }
    let http = reqwest::Client::builder()
        .local_address(IpAddr::V4(ip))
        .default_headers(headers)
        .build()
        .unwrap();
    Client::new_with_client(base_url, http)
}

async fn login_through(client: &Client, email: &str) -> ApiResult<types::TokenResponse> {
    client
        .login()
        .body(
            types::LoginRequest::builder()
                .email(email)
                .password(PASSWORD),
        )
        .send()
        .await
}

/// Two instances over one PgBouncer, behind one HAProxy.
async fn balanced(
    test: &str,
    db: &TestDb,
    customise: impl Fn(&mut jobpath_server::config::Config),
) -> Option<(PgBouncer, Vec<TestServer>, HaProxy)> {
    let bouncer = PgBouncer::start(test, &db.server(), 4).await?;
    let mut servers = Vec::new();
    for _ in 0..2 {
        let mut config = through(&bouncer, db);
        config.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        customise(&mut config);
        servers.push(TestServer::start(config).await);
    }
    let addresses: Vec<String> = servers
        .iter()
        .map(|s| s.base_url.trim_start_matches("http://").to_owned())
        .collect();
    let proxy = HaProxy::start(test, &addresses).await?;
    Some((bouncer, servers, proxy))
}

#[tokio::test]
async fn behind_haproxy_a_per_ip_login_limit_holds_per_real_client_across_instances() {
    let db = TestDb::create().await;
    let Some((_bouncer, servers, proxy)) = balanced("pooler::per_client_limit", &db, |c| {
        c.rate_limits.window = Duration::from_secs(300);
        c.rate_limits.login_per_ip = 4;
    })
    .await
    else {
        return;
    };
    let email = unique_email();
    servers[0].signup(&email, PASSWORD).await;

    let first = client_from(&proxy.base_url(), Ipv4Addr::new(127, 0, 0, 2), None);
    let second = client_from(&proxy.base_url(), Ipv4Addr::new(127, 0, 0, 3), None);
    let mut token = String::new();
    for _ in 0..4 {
        token = login_through(&first, &email)
            .await
            .expect("within the limit")
            .into_inner()
            .access_token;
    }
    // Round robin sent them to both instances; the limit is the client's, not an instance's.
    expect_error(login_through(&first, &email).await, 429, "rate_limited");
    login_through(&second, &email)
        .await
        .expect("another client is not limited by the first");
    // A client's own X-Forwarded-For reaches the instance ahead of the one HAProxy adds;
    // it is not believed.
    let mut forged = reqwest::header::HeaderMap::new();
    forged.insert("x-forwarded-for", "127.0.0.2".parse().unwrap());
    let forger = client_with(&proxy.base_url(), Ipv4Addr::new(127, 0, 0, 3), None, forged);
    login_through(&forger, &email)
        .await
        .expect("the forger is 127.0.0.3, which is within its limit");

    // The session records the client's address, as HAProxy forwarded it.
    let sessions = servers[1]
        .authed(&token)
        .list_sessions()
        .send()
        .await
        .unwrap()
        .into_inner();
    let ips: Vec<_> = sessions
        .sessions
        .iter()
        .filter_map(|s| s.ip.clone())
        .collect();
    assert!(
        ips.iter().all(|ip| ip == "127.0.0.2" || ip == "127.0.0.3"),
        "{ips:?}"
    );
    assert_eq!(
        ips.iter().filter(|ip| *ip == "127.0.0.2").count(),
        4,
        "{ips:?}"
    );
}

#[tokio::test]
async fn behind_haproxy_stopping_an_instance_under_load_costs_no_request() {
    let db = TestDb::create().await;
    let Some((_bouncer, mut servers, proxy)) = balanced("pooler::instance_stop", &db, |_| {}).await
    else {
        return;
    };
    // Logins on one account, `/auth/me` with another's token: the logins' new sessions
    // must not push the token's session out (`SESSIONS_PER_USER_MAX`).
    let email = unique_email();
    servers[0].signup(&email, PASSWORD).await;
    let (_, token) = servers[0].user_with_token().await;

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let resent = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..8)
        .map(|i| {
            let (stop, served, resent) =
                (Arc::clone(&stop), Arc::clone(&served), Arc::clone(&resent));
            let base = proxy.base_url();
            let (email, token) = (email.clone(), token.clone());
            tokio::spawn(async move {
                let client = client_from(&base, Ipv4Addr::new(127, 0, 1, i), Some(&token));
                let mut failures = Vec::new();
                let once = async || -> Result<(), jobpath_client::Error<types::Error>> {
                    if i % 2 == 0 {
                        login_through(&client, &email).await.map(|_| ())
                    } else {
                        client.get_me().send().await.map(|_| ())
                    }
                };
                while !stop.load(Ordering::Relaxed) {
                    let mut result = once().await;
                    // A request the balancer wrote on a kept-alive connection just as the
                    // stopping instance closed it gets no response at all; HAProxy closes
                    // the client's connection so that the client resends it, as browsers
                    // do (HAProxy's `http-reuse safe`). Resent once, like them; any answer
                    // that is an HTTP error still fails the test.
                    if let Err(jobpath_client::Error::CommunicationError(_)) = &result {
                        resent.fetch_add(1, Ordering::Relaxed);
                        result = once().await;
                    }
                    match result {
                        Ok(()) => {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => failures.push(format!("{e:?}")),
                    }
                }
                failures
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before = served.load(Ordering::Relaxed);
    servers.pop().unwrap().stop().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for worker in workers {
        failures.extend(worker.await.unwrap());
    }
    let total = served.load(Ordering::Relaxed);
    eprintln!(
        "pooler: {total} requests served, {} resent once after no response",
        resent.load(Ordering::Relaxed)
    );
    assert!(
        before > 0 && total > before,
        "served {before}, then {total}"
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        total + failures.len(),
        &failures[..failures.len().min(5)]
    );
}

#[tokio::test]
async fn the_listen_connections_use_the_direct_url_not_the_pooler() {
    let db = TestDb::create().await;
    let Some(bouncer) = PgBouncer::start("pooler::direct_url", &db.server(), 2).await else {
        return;
    };
    let tag = format!("jobpath-direct-{}", uuid::Uuid::new_v4().simple());
    let mut config = through(&bouncer, &db);
    // The URL's own application_name marks the direct connections (the pools set theirs).
    let separator = if db.url.contains('?') { '&' } else { '?' };
    config.database_direct_url = Some(
        format!("{}{separator}application_name={tag}", db.url)
            .parse()
            .unwrap(),
    );
    let _server = TestServer::start(config).await;
    let observer = db.client().await;
    // The outbox's and the signing keys' (`keyring`), one connection each.
    jobpath_tests::cluster::eventually(
        "both LISTENs on direct connections",
        Duration::from_secs(10),
        || async {
            observer
                .query_one(
                    "SELECT count(*) FILTER (WHERE query = 'LISTEN email_outbox'),
                            count(*) FILTER (WHERE query = 'LISTEN signing_keys')
                       FROM pg_stat_activity WHERE application_name = $1",
                    &[&tag],
                )
                .await
                .map(|row| (row.get::<_, i64>(0), row.get::<_, i64>(1)))
                .unwrap()
                == (1, 1)
        },
    )
    .await;
}

#[tokio::test]
async fn pgbouncer_going_away_is_an_outage_503_with_retry_after_and_service_resumes_by_itself() {
    let db = TestDb::create().await;
    let Some(mut bouncer) = PgBouncer::start("pooler::restart", &db.server(), 3).await else {
        return;
    };
    let mut config = through(&bouncer, &db);
    config.db_pool_timeout = Duration::from_secs(1);
    let server = TestServer::start(config).await;
    let (email, token) = server.user_with_token().await;
    let me = server.authed(&token);
    me.get_me().send().await.expect("me before");

    bouncer.kill();
    crate::reliability::expect_unavailable(me.get_me().send().await);
    crate::reliability::expect_unavailable(server.try_login(&email, PASSWORD).await);
    crate::reliability::expect_unavailable(server.api.readiness().send().await);

    bouncer.start_again().await;
    jobpath_tests::cluster::eventually(
        "service back through PgBouncer",
        Duration::from_secs(10),
        || async { me.get_me().send().await.is_ok() },
    )
    .await;
    server
        .try_login(&email, PASSWORD)
        .await
        .expect("login after PgBouncer is back");
    server.api.readiness().send().await.expect("ready again");
}
