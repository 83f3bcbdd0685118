//! Revocation across restarts and across instances sharing one database.

use crate::helpers::{TestDb, TestServer, expect_error, test_config};

#[tokio::test]
async fn a_revoked_token_stays_revoked_after_a_server_restart() {
    let db = TestDb::create().await;
    let first = TestServer::start(test_config(&db)).await;
    let (_, revoked) = first.user_with_token().await;
    let (_, kept) = first.user_with_token().await;
    first.authed(&revoked).logout().send().await.unwrap();
    first.stop().await;

    let second = TestServer::start(test_config(&db)).await;
    expect_error(
        second.authed(&revoked).get_me().send().await,
        401,
        "invalid_token",
    );
    second
        .authed(&kept)
        .get_me()
        .send()
        .await
        .expect("unrevoked token survives the restart");
}

#[tokio::test]
async fn two_instances_on_one_database_refuse_a_token_revoked_through_either() {
    let db = TestDb::create().await;
    let (a, b) = tokio::join!(
        TestServer::start(test_config(&db)),
        TestServer::start(test_config(&db))
    );
    let (email, token) = a.user_with_token().await;
    // Accounts and tokens are shared...
    b.login(&email, crate::helpers::PASSWORD).await;
    b.authed(&token).get_me().send().await.unwrap();
    // ...and so is revocation, at once.
    b.authed(&token).logout().send().await.unwrap();
    expect_error(a.authed(&token).get_me().send().await, 401, "invalid_token");
    expect_error(a.authed(&token).logout().send().await, 401, "invalid_token");
}

#[tokio::test]
async fn instances_starting_together_apply_each_migration_once() {
    let db = TestDb::create().await;
    let servers =
        futures::future::join_all((0..4).map(|_| TestServer::start(test_config(&db)))).await;
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../sql"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "sql")
        })
        .count() as i64;
    assert_eq!(
        db.count("SELECT count(*) FROM schema_migrations").await,
        migrations
    );
    drop(servers);
}
