//! TLS to PostgreSQL (`db::tls`): with `sslmode=require` every connection of the server is
//! encrypted and the database's certificate is verified against `DB_SSL_ROOT_CERT`; a
//! certificate signed by anyone else is refused at start-up, at once.
//!
//! Runs on a private cluster (`faults::PgCluster`) with a certificate made for the test by
//! the `openssl` command line (`jobpath_tests::certificates`): a CA, and a server
//! certificate it signs for 127.0.0.1.

use std::path::Path;
use std::time::{Duration, Instant};

use jobpath_tests::certificates::Certificates;

use crate::faults::{PgCluster, config_for};
use crate::helpers::TestServer;

async fn cluster_with_tls(test: &str) -> Option<(PgCluster, Certificates)> {
    let certs = Certificates::make(test)?;
    let pg = PgCluster::start(test).await?;
    pg.enable_tls(&certs.path("server.crt"), &certs.path("server.key"))
        .await;
    Some((pg, certs))
}

fn require(pg: &PgCluster) -> String {
    format!("{}?sslmode=require", pg.url())
}

fn root(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

#[tokio::test]
async fn with_sslmode_require_every_connection_is_encrypted_and_verified() {
    let test = "with_sslmode_require_every_connection_is_encrypted_and_verified";
    let Some((pg, certs)) = cluster_with_tls(test).await else {
        return;
    };
    let app_name = "jobpath-tls-test";
    let server = TestServer::start(config_for(
        &require(&pg),
        &[
            ("DB_SSL_ROOT_CERT", &root(&certs.path("ca.pem"))),
            ("APP_NAME", app_name),
        ],
    ))
    .await;
    let (email, token) = server.user_with_token().await;
    let me = server.authed(&token).get_me().send().await.unwrap();
    assert_eq!(me.into_inner().email, email);

    // The pool's connections and the shared ones of the token check are all there, and
    // all encrypted.
    let (admin, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let row = admin
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE s.ssl)
               FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
              WHERE a.application_name = $1",
            &[&app_name],
        )
        .await
        .unwrap();
    let (all, encrypted): (i64, i64) = (row.get(0), row.get(1));
    assert!(all >= 2, "expected the server's connections, found {all}");
    assert_eq!(encrypted, all, "connections without TLS");
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_at_start_up_at_once() {
    let test = "a_certificate_from_another_ca_is_refused_at_start_up_at_once";
    let Some((pg, certs)) = cluster_with_tls(test).await else {
        return;
    };
    for roots in [Some(root(&certs.path("other-ca.pem"))), None] {
        let mut extra = vec![("DB_STARTUP_TIMEOUT_SECONDS", "30".to_owned())];
        extra.extend(roots.clone().map(|r| ("DB_SSL_ROOT_CERT", r)));
        let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let started = Instant::now();
        let result = jobpath_server::App::build(config_for(&require(&pg), &extra)).await;
        let took = started.elapsed();
        let err = result.err().expect("start-up refuses the certificate");
        let text = format!("{err:#}");
        assert!(text.contains("TLS"), "roots {roots:?}: {text}");
        // Final at once, not retried until DB_STARTUP_TIMEOUT_SECONDS.
        assert!(
            took < Duration::from_secs(10),
            "roots {roots:?}: took {took:?}"
        );
    }
}
