//! Rate limits and the login throttle: they trip at the configured count, reset after the
//! window, are shared by instances on one database, key on the real client address (a
//! spoofed `X-Forwarded-For` changes nothing unless it comes from a trusted proxy), and
//! answer 429 `rate_limited` with `Retry-After`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jobpath_client::{Client, types};
use jobpath_server::config::Config;

use crate::helpers::{
    ApiResult, PASSWORD, TestApp, TestDb, TestServer, expect_error, spawn_app_with, test_config,
    unique_email,
};

const WINDOW: u64 = 3;
const DAY: u64 = 24 * 3600;

fn limited(config: &mut Config, per_ip: u32) {
    config.rate_limits.window = Duration::from_secs(WINDOW);
    config.rate_limits.signup_per_ip = per_ip;
    config.rate_limits.login_per_ip = per_ip;
    config.rate_limits.refresh_per_ip = per_ip;
    config.rate_limits.password_change_per_ip = per_ip;
}

/// Waits for the start of a fresh fixed window (windows are aligned to the epoch), so a
/// test's requests all fall in one.
async fn at_window_start() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let into = now.as_millis() % u128::from(WINDOW * 1000);
    let wait = u64::try_from(u128::from(WINDOW * 1000) - into).unwrap() + 50;
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

fn login_body(email: &str, password: &str) -> types::builder::LoginRequest {
    types::LoginRequest::builder()
        .email(email)
        .password(password)
}

/// A client whose every request carries this `X-Forwarded-For`.
fn forwarded_for(app: &TestServer, xff: &str) -> Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-forwarded-for", xff.parse().unwrap());
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    Client::new_with_client(&app.base_url, http)
}

fn retry_after(err: &jobpath_client::ResponseValue<types::Error>) -> u64 {
    err.headers()
        .get("retry-after")
        .expect("Retry-After on 429")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn the_login_limit_trips_at_the_configured_count_and_resets_after_the_window() {
    let app = spawn_app_with(|c| limited(c, 3)).await;
    let email = unique_email();
    at_window_start().await;
    app.signup(&email, PASSWORD).await;
    for _ in 0..3 {
        expect_error(
            app.try_login(&email, "wrong password").await,
            401,
            "invalid_credentials",
        );
    }
    let err = expect_error(app.try_login(&email, PASSWORD).await, 429, "rate_limited");
    let wait = retry_after(&err);
    assert!((1..=WINDOW).contains(&wait), "Retry-After {wait}");
    tokio::time::sleep(Duration::from_secs(wait) + Duration::from_millis(100)).await;
    app.login(&email, PASSWORD).await;
}

#[tokio::test]
async fn signup_refresh_and_password_change_are_limited_per_ip() {
    let app = spawn_app_with(|c| limited(c, 2)).await;
    at_window_start().await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    app.signup(&unique_email(), PASSWORD).await;
    let result = app
        .api
        .signup()
        .body(
            types::Credentials::builder()
                .email(unique_email())
                .password(PASSWORD),
        )
        .send()
        .await;
    expect_error(result, 429, "rate_limited");

    let session = app.session(&email, PASSWORD).await;
    let next = app.refresh(&session.refresh_token).await;
    let next = app.refresh(&next.refresh_token).await;
    expect_error(
        app.try_refresh(&next.refresh_token).await,
        429,
        "rate_limited",
    );

    let authed = app.authed(&next.access_token);
    let change = || {
        authed
            .change_password()
            .body(
                types::PasswordChange::builder()
                    .current_password("not the password")
                    .new_password("a brand new passphrase"),
            )
            .send()
    };
    expect_error(change().await, 401, "invalid_credentials");
    expect_error(change().await, 401, "invalid_credentials");
    expect_error(change().await, 429, "rate_limited");
    // Reading the account is not limited.
    for _ in 0..5 {
        app.authed(&next.access_token)
            .get_me()
            .send()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn two_instances_on_one_database_share_the_count() {
    let db = TestDb::create().await;
    let config = || {
        let mut c = test_config(&db);
        limited(&mut c, 4);
        c
    };
    let (a, b) = tokio::join!(TestServer::start(config()), TestServer::start(config()));
    let email = unique_email();
    at_window_start().await;
    for server in [&a, &b, &a, &b] {
        expect_error(
            server.try_login(&email, PASSWORD).await,
            401,
            "invalid_credentials",
        );
    }
    expect_error(a.try_login(&email, PASSWORD).await, 429, "rate_limited");
    expect_error(b.try_login(&email, PASSWORD).await, 429, "rate_limited");
}

#[tokio::test]
async fn a_spoofed_x_forwarded_for_from_an_untrusted_peer_does_not_evade_the_limit() {
    // No TRUSTED_PROXIES: the test client's own address, 127.0.0.1, is what counts.
    let app = spawn_app_with(|c| limited(c, 2)).await;
    let email = unique_email();
    at_window_start().await;
    for xff in ["198.51.100.1", "198.51.100.2"] {
        let result = forwarded_for(&app, xff)
            .login()
            .body(login_body(&email, PASSWORD))
            .send()
            .await;
        expect_error(result, 401, "invalid_credentials");
    }
    let result = forwarded_for(&app, "198.51.100.3")
        .login()
        .body(login_body(&email, PASSWORD))
        .send()
        .await;
    expect_error(result, 429, "rate_limited");
}

#[tokio::test]
async fn a_trusted_proxys_forwarded_address_is_the_client() {
    let app: TestApp = spawn_app_with(|c| {
        limited(c, 2);
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let email = unique_email();
    at_window_start().await;
    app.signup(&email, PASSWORD).await;
    // The left-most entry is the client's own claim; the proxy appended the real address.
    let alice = forwarded_for(&app, "10.9.9.9, 203.0.113.1");
    for _ in 0..2 {
        let result = alice
            .login()
            .body(login_body(&email, "wrong password"))
            .send()
            .await;
        expect_error(result, 401, "invalid_credentials");
    }
    let result = alice
        .login()
        .body(login_body(&email, PASSWORD))
        .send()
        .await;
    expect_error(result, 429, "rate_limited");
    // Another client behind the same proxy has its own count, and its session records it.
    let bob = forwarded_for(&app, "203.0.113.2");
    let session = bob
        .login()
        .body(login_body(&email, PASSWORD))
        .send()
        .await
        .unwrap()
        .into_inner();
    let list = app
        .authed(&session.access_token)
        .list_sessions()
        .send()
        .await
        .unwrap()
        .into_inner();
    let current = list.sessions.iter().find(|s| s.current).unwrap();
    assert_eq!(current.ip.as_deref(), Some("203.0.113.2"));
}

#[tokio::test]
async fn failed_logins_delay_the_account_boundedly_and_a_success_clears_it() {
    let app = spawn_app_with(|c| {
        c.rate_limits.login_failures_per_account = 2;
        c.rate_limits.login_max_delay = Duration::from_secs(2);
    })
    .await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    for _ in 0..3 {
        expect_error(
            app.try_login(&email, "wrong password").await,
            401,
            "invalid_credentials",
        );
    }
    // The third failure blocked the account for a second; even the right password waits.
    let err = expect_error(app.try_login(&email, PASSWORD).await, 429, "rate_limited");
    assert_eq!(retry_after(&err), 1);
    // Other accounts, and unknown addresses, are throttled separately.
    let (other, _) = app.user_with_token().await;
    app.login(&other, PASSWORD).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    app.login(&email, PASSWORD).await;
    assert_eq!(
        app.db.count("SELECT count(*) FROM login_throttle").await,
        0,
        "a successful login clears the account's failures"
    );

    // However many failures pile up, the delay never exceeds the bound.
    app.db
        .client()
        .await
        .execute(
            "INSERT INTO login_throttle (email, key, failures) VALUES ($1, 'net:127.0.0.1', 60)",
            &[&email],
        )
        .await
        .unwrap();
    expect_error(
        app.try_login(&email, "wrong password").await,
        401,
        "invalid_credentials",
    );
    let blocked_for: f64 = app
        .db
        .client()
        .await
        .query_one(
            "SELECT extract(epoch FROM blocked_until - now())::float8 FROM login_throttle WHERE email = $1 AND key = 'net:127.0.0.1'",
            &[&email],
        )
        .await
        .unwrap()
        .get(0);
    assert!(blocked_for > 0.0 && blocked_for <= 2.0, "{blocked_for}");
}

#[tokio::test]
async fn counters_of_ended_windows_are_pruned() {
    // A window of a day: the server's own pruning (at start-up, then every minute, with the
    // configured window) runs concurrently with this test, and with a window of seconds it
    // could take the login's own counter once that window ended on a loaded machine.
    let app = spawn_app_with(|c| {
        limited(c, 100);
        c.rate_limits.window = Duration::from_secs(DAY);
    })
    .await;
    expect_error(
        app.try_login(&unique_email(), PASSWORD).await,
        401,
        "invalid_credentials",
    );
    app.db
        .client()
        .await
        .execute(
            "INSERT INTO rate_limits (scope, key, window_start) VALUES ('login', '192.0.2.1', now() - interval '3 days')",
            &[],
        )
        .await
        .unwrap();
    jobpath_server::db::limits::prune(&app.state.db, Duration::from_secs(DAY))
        .await
        .unwrap();
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM rate_limits WHERE key = '192.0.2.1'")
            .await,
        0
    );
    assert_eq!(app.db.count("SELECT count(*) FROM rate_limits").await, 1);
}

#[tokio::test]
async fn ipv6_clients_are_limited_per_prefix_and_their_full_address_is_recorded() {
    let app: TestApp = spawn_app_with(|c| {
        limited(c, 2);
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let email = unique_email();
    let login = |xff: &str, password: &str| {
        let client = forwarded_for(&app, xff);
        let body = login_body(&email, password);
        async move { client.login().body(body).send().await }
    };
    at_window_start().await;
    app.signup(&email, PASSWORD).await;
    for xff in ["2001:db8:1:2::1", "2001:db8:1:2:ffff::2"] {
        expect_error(login(xff, "guess").await, 401, "invalid_credentials");
    }
    // A third address of the same /64 is the same client.
    expect_error(
        login("2001:db8:1:2::3", PASSWORD).await,
        429,
        "rate_limited",
    );
    // Another /64 is another client, and its session and events keep the whole address.
    let session = login("2001:db8:1:3::abcd", PASSWORD)
        .await
        .unwrap()
        .into_inner();
    let authed = app.authed(&session.access_token);
    let list = authed.list_sessions().send().await.unwrap().into_inner();
    let current = list.sessions.iter().find(|s| s.current).unwrap();
    assert_eq!(current.ip.as_deref(), Some("2001:db8:1:3::abcd"));
    let events = authed.list_events().send().await.unwrap().into_inner();
    assert_eq!(events.events[0].ip.as_deref(), Some("2001:db8:1:3::abcd"));
}

/// A server that believes the loopback proxy's `X-Forwarded-For`, so a test can speak from
/// any client address, with the account throttle at `free` failures.
async fn behind_proxy(free: u32) -> TestApp {
    spawn_app_with(|c| {
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        c.rate_limits.login_failures_per_account = free;
        c.rate_limits.login_max_delay = Duration::from_secs(60);
    })
    .await
}

async fn login_from(
    client: &Client,
    email: &str,
    password: &str,
    device_token: Option<&str>,
) -> ApiResult<types::TokenResponse> {
    client
        .login()
        .body(login_body(email, password).device_token(device_token.map(|t| t.parse().unwrap())))
        .send()
        .await
}

/// The status of each answer, for failure messages.
fn statuses<T>(results: &[ApiResult<T>]) -> Vec<u16> {
    results
        .iter()
        .map(|r| match r {
            Ok(_) => 200,
            Err(jobpath_client::Error::ErrorResponse(e)) => e.status().as_u16(),
            Err(_) => 0,
        })
        .collect()
}

/// How many of `results` are errors with this status.
fn with_status<T>(results: &[ApiResult<T>], status: u16) -> usize {
    results
        .iter()
        .filter(|r| match r {
            Err(jobpath_client::Error::ErrorResponse(e)) => e.status().as_u16() == status,
            _ => false,
        })
        .count()
}

#[tokio::test]
async fn concurrent_wrong_logins_past_the_threshold_get_exactly_the_allowed_401s_and_the_rest_429()
{
    let app = spawn_app_with(|c| {
        c.rate_limits.login_failures_per_account = 3;
        c.rate_limits.login_max_delay = Duration::from_secs(60);
    })
    .await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    let burst = (0..20).map(|_| app.try_login(&email, "wrong password"));
    let results = futures::future::join_all(burst).await;
    // Three free failures, and the fourth (which starts the first block) is evaluated too.
    assert_eq!(
        with_status(&results, 401),
        4,
        "statuses {:?}",
        statuses(&results)
    );
    assert_eq!(
        with_status(&results, 429),
        16,
        "statuses {:?}",
        statuses(&results)
    );
}

#[tokio::test]
async fn an_attacker_failing_from_another_network_cannot_keep_the_owner_out() {
    let app = behind_proxy(2).await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    let attacker = forwarded_for(&app, "203.0.113.66");
    let owner = forwarded_for(&app, "198.51.100.7");
    for _ in 0..3 {
        expect_error(
            login_from(&attacker, &email, "guess", None).await,
            401,
            "invalid_credentials",
        );
    }
    for _ in 0..3 {
        expect_error(
            login_from(&attacker, &email, "guess", None).await,
            429,
            "rate_limited",
        );
        login_from(&owner, &email, PASSWORD, None)
            .await
            .expect("the owner logs in while the attacker is blocked");
    }
}

#[tokio::test]
async fn a_device_token_from_an_earlier_login_lets_the_owner_through_a_blocked_network() {
    let app = behind_proxy(2).await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    // The owner and the attacker share an address (one NAT, one café).
    let shared = forwarded_for(&app, "192.0.2.10");
    let device = login_from(&shared, &email, PASSWORD, None)
        .await
        .unwrap()
        .into_inner()
        .device_token
        .expect("a successful login returns a device token");
    for _ in 0..3 {
        expect_error(
            login_from(&shared, &email, "guess", None).await,
            401,
            "invalid_credentials",
        );
    }
    expect_error(
        login_from(&shared, &email, PASSWORD, None).await,
        429,
        "rate_limited",
    );
    let again = login_from(&shared, &email, PASSWORD, Some(&device))
        .await
        .expect("the device token lets the owner through")
        .into_inner();
    assert_eq!(again.device_token.as_deref(), Some(device.as_str()));
    // Someone else's token, or a made-up one, proves nothing.
    let (other, _) = app.user_with_token().await;
    let others_device = login_from(&app.api, &other, PASSWORD, None)
        .await
        .unwrap()
        .into_inner()
        .device_token
        .unwrap();
    for token in [others_device.as_str(), "made-up"] {
        expect_error(
            login_from(&shared, &email, PASSWORD, Some(token)).await,
            429,
            "rate_limited",
        );
    }
}

#[tokio::test]
async fn retry_after_of_a_blocked_account_is_the_blocks_length_not_its_exact_end() {
    let app = spawn_app_with(|c| {
        c.rate_limits.login_failures_per_account = 1;
        c.rate_limits.login_max_delay = Duration::from_secs(60);
    })
    .await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    for _ in 0..2 {
        expect_error(
            app.try_login(&email, "wrong password").await,
            401,
            "invalid_credentials",
        );
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The third failure blocks for two seconds.
    expect_error(
        app.try_login(&email, "wrong password").await,
        401,
        "invalid_credentials",
    );
    let err = expect_error(app.try_login(&email, PASSWORD).await, 429, "rate_limited");
    assert_eq!(retry_after(&err), 2);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let err = expect_error(app.try_login(&email, PASSWORD).await, 429, "rate_limited");
    assert_eq!(retry_after(&err), 2, "not the exact second the block ends");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    app.login(&email, PASSWORD).await;
}

#[tokio::test]
async fn wrong_current_passwords_are_throttled_per_account_and_recorded() {
    let app = spawn_app_with(|c| {
        c.rate_limits.login_failures_per_account = 2;
        c.rate_limits.login_max_delay = Duration::from_secs(60);
    })
    .await;
    let (_, token) = app.user_with_token().await;
    let authed = app.authed(&token);
    let guesses = (0..10).map(|i| {
        authed
            .change_password()
            .body(
                types::PasswordChange::builder()
                    .current_password(format!("guess number {i}"))
                    .new_password("a brand new passphrase"),
            )
            .send()
    });
    let results = futures::future::join_all(guesses).await;
    assert_eq!(
        with_status(&results, 401),
        3,
        "statuses {:?}",
        statuses(&results)
    );
    assert_eq!(
        with_status(&results, 429),
        7,
        "statuses {:?}",
        statuses(&results)
    );
    let events = authed
        .list_events()
        .limit(100)
        .send()
        .await
        .unwrap()
        .into_inner();
    let failed = events
        .events
        .iter()
        .filter(|e| e.kind.to_string() == "password_change_failed")
        .count();
    assert_eq!(failed, 3);
}

#[tokio::test]
async fn a_blocked_account_gets_one_rate_limited_event_per_block_however_many_attempts() {
    let app = spawn_app_with(|c| {
        c.rate_limits.login_failures_per_account = 1;
        c.rate_limits.login_max_delay = Duration::from_secs(60);
    })
    .await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    for _ in 0..2 {
        expect_error(
            app.try_login(&email, "wrong password").await,
            401,
            "invalid_credentials",
        );
    }
    let attempts = (0..8).map(|_| app.try_login(&email, "wrong password"));
    let results = futures::future::join_all(attempts).await;
    assert_eq!(
        with_status(&results, 429),
        8,
        "statuses {:?}",
        statuses(&results)
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM auth_events WHERE kind = 'rate_limited'")
            .await,
        1
    );
}

#[tokio::test]
async fn an_account_wide_ceiling_stops_guesses_spread_over_networks_but_not_a_known_device() {
    let app = spawn_app_with(|c| {
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        c.rate_limits.login_failures_per_account = 1;
        c.rate_limits.login_account_ceiling = 4;
        c.rate_limits.login_max_delay = Duration::from_secs(60);
    })
    .await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    let device = login_from(&forwarded_for(&app, "198.51.100.7"), &email, PASSWORD, None)
        .await
        .unwrap()
        .into_inner()
        .device_token
        .unwrap();
    // Two networks spend their allowance (two each); the fifth failure, from a third
    // network, passes the account-wide ceiling of four.
    for xff in [
        "203.0.113.1",
        "203.0.113.1",
        "203.0.113.2",
        "203.0.113.2",
        "203.0.113.3",
    ] {
        expect_error(
            login_from(&forwarded_for(&app, xff), &email, "guess", None).await,
            401,
            "invalid_credentials",
        );
    }
    for xff in ["203.0.113.3", "203.0.113.4", "198.51.100.99"] {
        expect_error(
            login_from(&forwarded_for(&app, xff), &email, PASSWORD, None).await,
            429,
            "rate_limited",
        );
    }
    login_from(
        &forwarded_for(&app, "198.51.100.99"),
        &email,
        PASSWORD,
        Some(&device),
    )
    .await
    .expect("a known device is held to its own allowance, not the account's");
}

#[tokio::test]
async fn concurrent_correct_logins_of_one_account_all_succeed() {
    // Each login charges the account's throttle rows and a success deletes them again; a
    // refund racing another attempt's charge once deadlocked (answered 503).
    let app = spawn_app_with(|_| {}).await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    for round in 0..12 {
        let burst = (0..8).map(|_| app.try_login(&email, PASSWORD));
        let results = futures::future::join_all(burst).await;
        let statuses = statuses(&results);
        assert_eq!(statuses, [200; 8], "round {round}");
    }
}

#[tokio::test]
async fn a_user_keeps_the_newest_20_device_tokens_and_the_newest_still_works() {
    let app = spawn_app_with(|_| {}).await;
    let email = unique_email();
    app.signup(&email, PASSWORD).await;
    let mut newest = None;
    for _ in 0..25 {
        newest = app
            .try_login(&email, PASSWORD)
            .await
            .unwrap()
            .into_inner()
            .device_token;
    }
    assert_eq!(app.db.count("SELECT count(*) FROM login_devices").await, 20);
    let newest = newest.unwrap();
    let again = login_from(&app.api, &email, PASSWORD, Some(&newest))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.device_token.as_deref(), Some(newest.as_str()));
    assert_eq!(app.db.count("SELECT count(*) FROM login_devices").await, 20);
}
