//! PostgreSQL access: the connection pool and the SQL the server runs.
//!
//! - [`locate`]: where the database is (`DATABASE_URL`, or a local one found or started).
//! - [`connect`]: [`connect::Target`], the one form a connection configuration connects
//!   from, which settles its TLS mode.
//! - [`migrate`]: the numbered migrations of `sql/`, applied once under an advisory lock.
//! - [`users`]: accounts and their password hashes.
//! - [`accounts`]: deleting an account, and purging deleted accounts.
//! - [`sessions`]: sessions, refresh-token rotation, logout scopes.
//! - [`shared`]: the few connections all requests share for the hot read of `/auth/me`.
//! - [`owners`]: that read, the owner of an access token, batched across requests.
//! - [`events`]: the security event log.
//! - [`secrets`]: one-time secrets (password reset, email verification) and their changes.
//! - [`email_change`]: pending email changes: asking, confirming, cancelling.
//! - [`outbox`]: the email outbox as its sender sees it, and the `LISTEN` that wakes it.
//! - [`passkeys`]: passkeys, their single-use ceremonies and counters.
//! - [`api_keys`]: API keys: the cap per account, the look-up of a key and its owner, the
//!   once-a-minute `last_used_at`, revocation.
//! - [`admin`]: roles, deactivation and the admin API's reads, each change re-checking the
//!   acting admin at commit.
//! - [`mfa`]: second factors: enrolment, confirmation, step-up, attempts and locks,
//!   recovery codes, removal.
//! - [`limits`]: rate-limit counters and the login throttle, shared by all instances.
//! - [`tls`]: TLS to PostgreSQL (`sslmode=require`, `DB_SSL_ROOT_CERT`).
//!
//! - [`typed`]: the statement calls, each one round trip on the unnamed statement.
//!
//! Nothing the server sets on a connection outlives a transaction, so a connection pooler
//! in transaction mode (PgBouncer's `pool_mode = transaction`, or a managed pooler that
//! behaves like it) can hand each transaction to another server connection: statements are
//! unnamed ([`typed`]; the `/auth/me` lookup too with `DB_POOLER=transaction`, see
//! [`owners`]), the statement timeout is `SET LOCAL` in each transaction
//! ([`Conn::begin`]) rather than a start-up option (which PgBouncer refuses), and what needs
//! a session of its own — the migrations' lock, the outbox's `LISTEN` — connects to
//! `DATABASE_DIRECT_URL` (by default `DATABASE_URL`). `docs/scaling.md` is the operator's view.
//!
//! Every wait on the database is bounded, so that an outage answers 503 instead of hanging
//! a request:
//!
//! - getting a connection (queueing for a free one, or opening one) takes at most
//!   `DB_POOL_TIMEOUT_SECONDS`;
//! - a statement in a transaction is cancelled by PostgreSQL itself after
//!   `DB_POOL_TIMEOUT_SECONDS` (`SET LOCAL statement_timeout`), which rolls the transaction
//!   back: a 503 then never hides a committed write. A write that is one statement runs in
//!   a transaction of its own for that ([`Conn::bounded`], at no extra round trip);
//! - if the server does not answer at all (hung, or the network gone), or a read outside a
//!   transaction runs on, the request gives up [`UNANSWERED_GRACE`] later, asks PostgreSQL to
//!   cancel, and discards the connection.

pub mod accounts;
pub mod admin;
pub mod api_keys;
pub mod connect;
pub mod email_change;
pub mod events;
pub mod limits;
pub mod locate;
pub mod mfa;
pub mod migrate;
pub mod outbox;
pub mod owners;
pub mod passkeys;
pub mod secrets;
pub mod sessions;
pub mod shared;
pub mod signing_keys;
pub mod tls;
pub mod typed;
pub mod users;

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};

use crate::config::Config;
use crate::errors::ApiError;

/// How much longer than the statement timeout the server waits for PostgreSQL's own
/// cancellation before concluding that nothing answers.
pub const UNANSWERED_GRACE: Duration = Duration::from_secs(1);

/// The pool, with the time limits every use of it obeys. Cheap to clone.
#[derive(Clone)]
pub struct Database {
    pool: Pool,
    timeout: Duration,
    /// `SET LOCAL statement_timeout = …` for [`Conn::begin`].
    set_timeout: std::sync::Arc<str>,
    /// `BEGIN; ` and the same, for [`Conn::bounded`]: built once, not per write.
    begin_bounded: std::sync::Arc<str>,
    /// For cancel requests, which open a connection of their own.
    tls: tls::Tls,
}

impl Database {
    /// Runs `work` on a pooled connection, within the time limits described in the module
    /// documentation.
    pub async fn run<T>(
        &self,
        work: impl AsyncFnOnce(&mut Conn<'_>) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let mut client = match tokio::time::timeout(self.timeout, self.pool.get()).await {
            Ok(got) => got?,
            Err(_) => {
                return Err(ApiError::Unavailable(anyhow!(
                    "no database connection within {:?}",
                    self.timeout
                )));
            }
        };
        let cancel = client.cancel_token();
        let mut conn = Conn {
            client: &mut client,
            set_timeout: &self.set_timeout,
            begin_bounded: &self.begin_bounded,
        };
        let done = tokio::time::timeout(self.timeout + UNANSWERED_GRACE, work(&mut conn)).await;
        match done {
            Ok(result) => result,
            Err(_) => {
                // The connection still has a statement in flight: never hand it out again.
                drop(Object::take(client));
                let limit = self.timeout;
                let tls = self.tls.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(limit, cancel.cancel_query(tls)).await;
                });
                Err(ApiError::Unavailable(anyhow!(
                    "the database did not answer within {:?}",
                    self.timeout + UNANSWERED_GRACE
                )))
            }
        }
    }

    /// The deadpool pool underneath, for its status (metrics).
    pub fn deadpool(&self) -> &Pool {
        &self.pool
    }
}

/// Builds the pool. Connections are opened lazily, on first use.
pub fn pool(target: &connect::Target, config: &Config, tls: tls::Tls) -> anyhow::Result<Database> {
    pool_of(target, config, config.db_max_connections(), tls)
}

/// A pool of at most `max_size` connections with the bounds described above; the shared
/// connections of `/auth/me` ([`shared`]) have their own, so they never starve the others.
pub fn pool_of(
    target: &connect::Target,
    config: &Config,
    max_size: usize,
    tls: tls::Tls,
) -> anyhow::Result<Database> {
    let mut pg = target.pg().clone();
    let timeout = config.db_pool_timeout;
    pg.connect_timeout(timeout);
    pg.application_name(&config.app_name);
    // A peer that vanished without closing (network loss, a killed VM) is noticed by the
    // kernel instead of holding an idle pooled connection for the default two hours.
    pg.keepalives(true);
    pg.keepalives_idle(Duration::from_secs(30));
    // No start-up `options`: a pooler in transaction mode refuses them (PgBouncer:
    // "unsupported startup parameter: options"). The statement timeout is per transaction.
    let set_timeout = format!(
        "SET LOCAL statement_timeout = {}",
        timeout.as_millis().max(1)
    );
    // `Fast` trusts a connection that is not closed. A restart of PostgreSQL terminates every
    // session (the server says so, then closes the socket), the connection's task ends, and
    // the pool replaces the connection on its next checkout; the restart tests in
    // `tests/api/reliability.rs` hold it to that.
    let manager = Manager::from_config(
        pg,
        tls.clone(),
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .build()
        .context("building the database pool")?;
    Ok(Database {
        pool,
        timeout,
        begin_bounded: format!("BEGIN; {set_timeout}").into(),
        set_timeout: set_timeout.into(),
        tls,
    })
}

/// A pooled connection lent to [`Database::run`]'s work: the connection (through `Deref`),
/// and [`Conn::begin`], the only way the server starts a transaction on it.
pub struct Conn<'a> {
    client: &'a mut Object,
    set_timeout: &'a str,
    begin_bounded: &'a str,
}

impl Conn<'_> {
    /// `BEGIN`, then `SET LOCAL statement_timeout`: every statement of the transaction is
    /// cancelled by PostgreSQL after `DB_POOL_TIMEOUT_SECONDS`, and the setting ends with
    /// the transaction, so nothing is left on a server connection that a pooler hands on.
    pub async fn begin(
        &mut self,
    ) -> Result<deadpool_postgres::Transaction<'_>, tokio_postgres::Error> {
        let tx = self.client.transaction().await?;
        tx.batch_execute(self.set_timeout).await?;
        Ok(tx)
    }

    /// Runs one write `statement` (a call on this connection) in a transaction of its own
    /// with the statement timeout, so that PostgreSQL cancels it — and rolls it back — at the
    /// limit, as in [`Conn::begin`]: a 503 then never hides a committed write. `BEGIN; SET
    /// LOCAL …`, the statement and `COMMIT` are pipelined (tokio-postgres sends each request
    /// when it is first polled, and a biased `join!` polls them in order), so this costs no round
    /// trip more than the bare statement. If the statement fails, PostgreSQL answers the
    /// `COMMIT` with a rollback, and the connection is left idle either way.
    pub async fn bounded<T>(
        &self,
        statement: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, tokio_postgres::Error> {
        // `biased`: polled in the order written, so the requests leave in that order.
        let (began, done, committed) = tokio::join!(
            biased;
            self.client.batch_execute(self.begin_bounded),
            statement,
            self.client.batch_execute("COMMIT")
        );
        began?;
        let value = done?;
        committed?;
        Ok(value)
    }
}

impl Deref for Conn<'_> {
    type Target = Object;
    fn deref(&self) -> &Object {
        self.client
    }
}

impl DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Object {
        self.client
    }
}

/// Closes idle connections above `DB_POOL_SIZE` (the `DB_MAX_OVERFLOW` ones opened under
/// load) once they have been idle for `idle`.
pub fn trim_overflow(db: &Database, keep: usize, idle: Duration) {
    let size = db.pool.status().size;
    if size <= keep {
        return;
    }
    let mut excess = size - keep;
    db.pool.retain(|_, metrics| {
        if excess > 0 && metrics.last_used() >= idle {
            excess -= 1;
            false
        } else {
            true
        }
    });
}

/// `SELECT 1` through the pool: readiness.
pub async fn ping(db: &Database) -> Result<(), ApiError> {
    db.run(async |client| {
        client.simple_query("SELECT 1").await?;
        Ok(())
    })
    .await
}
