//! The quick start, `cargo run -p jobpath-server` with no configuration at all, against the
//! two machines a developer has: one whose PostgreSQL answers — with TLS on and a
//! certificate nobody signed, as every stock Debian cluster is (`ssl = on`, the snakeoil
//! certificate) — and one where nothing answers, so the server starts a private cluster of
//! its own.
//!
//! The binary gets nothing but `PATH`, `HOME`, the listening ports (port 0, so runs cannot
//! collide) and `PGPORT`, in a fresh working directory. `PGPORT` is the port of "the
//! machine's own PostgreSQL" (libpq's variable, which the zero-configuration start honours
//! as psql does): it points the probe at a cluster of the test's own, or at a port where
//! nothing listens, without touching the shared PostgreSQL on 5432.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jobpath_tests::certificates::Certificates;
use jobpath_tests::cluster::{PgCluster, free_port, pg_tools, stop_data_dir};

use jobpath_tests::process::ServerProcess;

use super::{get, jobpath_in, json_line, request};

/// A fresh, empty working directory; on drop, the private cluster the server may have
/// started in it is stopped, and the directory removed.
struct FreshDir(PathBuf);

impl FreshDir {
    fn new() -> FreshDir {
        let dir = std::env::temp_dir().join(format!("jobpath-zc-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        FreshDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn private_cluster(&self) -> PathBuf {
        self.0.join(".jobpath").join("postgres")
    }
}

impl Drop for FreshDir {
    fn drop(&mut self) {
        if self.private_cluster().join("PG_VERSION").exists() {
            stop_data_dir(&self.private_cluster());
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `serve` with no configuration but the listening ports and `PGPORT`.
fn unconfigured(dir: &FreshDir, pgport: u16) -> ServerProcess {
    let pgport = pgport.to_string();
    ServerProcess::spawn(jobpath_in(
        dir.path(),
        &["serve"],
        &[
            ("HOST", "127.0.0.1"),
            ("PORT", "0"),
            ("METRICS_PORT", "0"),
            ("LOG_FORMAT", "json"),
            ("PGPORT", &pgport),
        ],
    ))
}

/// Waits for the start-up line (`limit`: a first start may run initdb), then checks that
/// the server is ready and that an account can sign up and log in; returns the start-up
/// line.
async fn serves_signup_and_login(server: &ServerProcess, limit: Duration) -> serde_json::Value {
    let startup = json_line(&server.wait_for_within("listening", limit).await);
    let address = startup["address"].as_str().unwrap().to_owned();
    let (status, body) = get(&address, "/health/ready", None);
    assert_eq!(status, 200, "{body}");
    let credentials =
        r#"{"email":"quick-start@example.com","password":"correct horse battery staple"}"#;
    let (status, body) = request(&address, "POST /auth/signup", None, Some(credentials));
    assert_eq!(status, 201, "{body}");
    let (status, body) = request(&address, "POST /auth/login", None, Some(credentials));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("access_token"), "{body}");
    startup
}

/// The quick-start failure this guards against: the database was created, then start-up
/// died with "error performing TLS handshake: invalid peer certificate: UnknownIssuer",
/// because the zero-configuration path kept tokio-postgres's default `sslmode=prefer`.
#[tokio::test]
async fn with_no_configuration_it_serves_from_a_local_postgresql_whose_certificate_it_cannot_verify()
 {
    let test = "with_no_configuration_it_serves_from_a_local_postgresql_whose_certificate_it_cannot_verify";
    let Some(certs) = Certificates::make(test) else {
        return;
    };
    let Some(pg) = PgCluster::start(test).await else {
        return;
    };
    pg.enable_tls(
        &certs.path("self-signed.crt"),
        &certs.path("self-signed.key"),
    )
    .await;
    let dir = FreshDir::new();
    let server = unconfigured(&dir, pg.port);
    let startup = serves_signup_and_login(&server, Duration::from_secs(30)).await;
    assert_eq!(
        startup["database"],
        format!("127.0.0.1:{}/jobpath", pg.port),
        "{startup}"
    );
    server.stop().await;
}

#[tokio::test]
async fn with_no_configuration_and_no_local_postgresql_it_starts_a_private_cluster_and_serves() {
    let test =
        "with_no_configuration_and_no_local_postgresql_it_starts_a_private_cluster_and_serves";
    if pg_tools(test).is_none() {
        return;
    }
    let dir = FreshDir::new();
    let server = unconfigured(&dir, free_port());
    // initdb, then the first start of the cluster: allow for a slow machine.
    let startup = serves_signup_and_login(&server, Duration::from_secs(120)).await;
    server.wait_for("starting a private PostgreSQL").await;
    // Reached through its Unix socket in the data directory, which only the owner of the
    // data can open: the cluster trusts whoever connects, so it listens on no TCP address
    // (the sixth line of postmaster.pid is the first one it listens on).
    let cluster = dir.private_cluster();
    assert_eq!(
        startup["database"],
        format!("{}:54329/jobpath", cluster.display()),
        "{startup}"
    );
    let pid_file = std::fs::read_to_string(cluster.join("postmaster.pid")).unwrap();
    let listening = pid_file.lines().nth(5).unwrap_or("");
    assert_eq!(
        listening.trim(),
        "",
        "the private cluster listens on TCP:\n{pid_file}"
    );
    server.stop().await;
}
