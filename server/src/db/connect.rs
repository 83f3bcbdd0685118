//! [`Target`]: the only form in which a connection configuration reaches tokio-postgres.
//!
//! Configurations are built in several places — parsed from `DATABASE_URL`, assembled by
//! the zero-configuration probe of the local PostgreSQL, or for the private cluster — and
//! each becomes a [`Target`] before anything connects with it. [`Target::new`] is where the
//! TLS rule of [`super::tls`] is applied, so no path can reach the verifying connector with
//! tokio-postgres's default `sslmode=prefer`, which it would take as "TLS, and verify":
//! against the self-signed certificate of a stock Debian PostgreSQL that fails with
//! `invalid peer certificate: UnknownIssuer`. (The zero-configuration path once built its
//! own configuration and did exactly that.) The pool, start-up's connection, the creation
//! of the database and cancel requests all take a [`Target`] or a connection made from one.
//!
//! Start-up's first connection is patient ([`with_retry`]): an orchestrator may start the
//! database and the server together, so an unreachable or still-starting database is
//! retried with backoff for `DB_STARTUP_TIMEOUT_SECONDS`; what waiting cannot fix (a bad
//! password, an unknown database, a certificate that does not verify) fails at once.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::tls::{self, Tls};

/// The most one start-up connection attempt may take, so that a database that accepts
/// connections but never answers is retried like one that refuses them.
const STARTUP_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest pause between start-up connection attempts.
const STARTUP_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A PostgreSQL connection configuration whose TLS mode is settled (`require` or
/// `disable`, never `prefer`). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Target {
    pg: tokio_postgres::Config,
}

impl Target {
    /// Wraps `pg`, applying the TLS rule of [`super::tls`].
    pub fn new(mut pg: tokio_postgres::Config) -> Target {
        tls::settle_ssl_mode(&mut pg);
        Target { pg }
    }

    /// The settled configuration, for building a pool or connecting.
    pub fn pg(&self) -> &tokio_postgres::Config {
        &self.pg
    }

    /// The same server and settings, another database (its TLS mode stays settled).
    pub fn with_dbname(&self, dbname: &str) -> Target {
        let mut pg = self.pg.clone();
        pg.dbname(dbname);
        Target { pg }
    }

    /// Opens one connection through `tls`, driving it on a task of its own.
    pub async fn connect(
        &self,
        tls: &Tls,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) = self.pg.connect(tls.clone()).await?;
        tokio::spawn(conn);
        Ok(client)
    }

    /// `host:port/dbname`, never the password.
    pub fn describe(&self) -> String {
        crate::config::describe(&self.pg)
    }
}

/// Connects, retrying with backoff for up to `wait` (`DB_STARTUP_TIMEOUT_SECONDS`) while
/// the database is unreachable, silent, or says it is starting up. Errors that waiting
/// cannot fix (bad password, unknown database) are final at once.
pub async fn with_retry(
    target: &Target,
    tls: &Tls,
    wait: Duration,
) -> anyhow::Result<tokio_postgres::Client> {
    let deadline = Instant::now() + wait;
    let mut delay = Duration::from_millis(250);
    let mut pg = target.pg().clone();
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(STARTUP_ATTEMPT_TIMEOUT);
    }
    let attempt = Target::new(pg);
    let describe = || target.describe();
    loop {
        let e = match tokio::time::timeout(STARTUP_ATTEMPT_TIMEOUT, attempt.connect(tls)).await {
            Ok(Ok(client)) => return Ok(client),
            // A certificate that does not verify is transient-looking (an I/O error) but
            // waiting will not fix it.
            Ok(Err(e)) if crate::errors::is_transient(&e) && !tls::is_tls_failure(&e) => {
                anyhow::Error::new(e)
            }
            Ok(Err(e)) => {
                return Err(e)
                    .with_context(|| format!("connecting to the database at {}", describe()));
            }
            Err(_) => anyhow::anyhow!("no answer within {STARTUP_ATTEMPT_TIMEOUT:?}"),
        };
        if Instant::now() + delay >= deadline {
            return Err(e).with_context(|| {
                format!(
                    "connecting to the database at {} (gave up after {wait:?}, \
                     DB_STARTUP_TIMEOUT_SECONDS)",
                    describe()
                )
            });
        }
        tracing::warn!(error = %format!("{e:#}"), retry_in = ?delay, database = %describe(),
            "database not reachable yet; retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(STARTUP_MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use tokio_postgres::config::SslMode;

    use super::*;

    #[test]
    fn a_target_never_keeps_sslmode_prefer_however_its_configuration_was_built() {
        // Built in code, as the zero-configuration path does: tokio-postgres's default.
        let mut built = tokio_postgres::Config::new();
        built.host("127.0.0.1").port(5432).user("postgres");
        assert_eq!(built.get_ssl_mode(), SslMode::Prefer);
        let target = Target::new(built);
        assert_eq!(target.pg().get_ssl_mode(), SslMode::Disable);
        assert_eq!(
            target.with_dbname("postgres").pg().get_ssl_mode(),
            SslMode::Disable
        );
        // Parsed, with TLS asked for: kept.
        let parsed = "postgres://u@h/db?sslmode=require".parse().unwrap();
        assert_eq!(Target::new(parsed).pg().get_ssl_mode(), SslMode::Require);
    }
}
