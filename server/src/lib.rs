//! JobPath API: the authentication backend of the JobPath job-search service.
//!
//! A map of the modules, in the order a request meets them:
//!
//! - [`http`]: transport only — accept loop and graceful shutdown (`http::serve`), the
//!   request wrapper that assigns ids, logs, counts and turns errors into JSON
//!   (`http::service`), the route table with each operation's declared security, checked
//!   against `openapi.yaml` (`http::router`), bodies, responses and CORS.
//! - [`call`]: where a request comes from (id, client address, user agent).
//! - [`handlers`]: `dispatch`, the match from route to handler; one function per
//!   `operationId`; the documentation pages and the metrics scrape.
//! - [`auth`]: the guard of every protected operation (`auth::guard`), the login decision,
//!   email/password types, bcrypt on a bounded thread pool, JWTs, refresh tokens.
//! - [`limits`]: per-IP rate limits and the per-account login throttle (shared through
//!   PostgreSQL by every instance).
//! - [`db`]: locating the database, migrations, the pool, the SQL.
//! - [`errors`]: [`errors::ApiError`], the one error type of the request path.
//! - [`metrics`]: the Prometheus registry of one server.
//! - [`cli`]: the binary's commands (`serve`, `migrate`, `check-config`, `healthcheck`).
//! - [`config`], [`telemetry`], [`spec`], [`state`]: start-up and shared state.
//!
//! Embedding: [`App::build`] connects and migrates, [`run`] serves an already-bound
//! listener until a shutdown future completes — so a test binds port 0 in one line. The
//! metrics listener, when there is one, is handed over the same way
//! ([`App::serve_metrics_on`]).

pub mod auth;
pub mod call;
pub mod cli;
pub mod config;
pub mod db;
pub mod errors;
pub mod handlers;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod spec;
pub mod state;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::auth::hasher::Hasher;
use crate::auth::refresh::RefreshKeys;
use crate::auth::token::TokenKeys;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::state::AppState;

/// The most one start-up connection attempt may take, so that a database that accepts
/// connections but never answers is retried like one that refuses them.
const STARTUP_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest pause between start-up connection attempts.
const STARTUP_MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often idle overflow connections are closed, and old sessions pruned (every 20th).
const MAINTENANCE_EVERY: Duration = Duration::from_secs(30);

/// A server ready to serve: database reachable and migrated, pools started.
pub struct App {
    state: Arc<AppState>,
    database: String,
    metrics_listener: Option<TcpListener>,
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let located = db::locate::locate(&config).await?;
        let tls = db::tls::connector(config.db_ssl_root_cert.as_deref())?;
        apply_migrations(&located.config, &tls, config.db_startup_timeout).await?;
        let shared_pool = db::pool_of(
            located.config.clone(),
            &config,
            db::shared::SHARED_CONNECTIONS,
            tls.clone(),
        )?;
        let pool = db::pool(located.config, &config, tls)?;
        let metrics = Metrics::new(&config.app_version);
        let hasher = Hasher::start(
            config.hash_threads,
            config.bcrypt_cost,
            config.db_pool_timeout,
            metrics.hash(),
        )?;
        hasher.warm_up();
        let tokens = TokenKeys::new(
            config.jwt_secret.expose().as_bytes(),
            config.access_token_ttl,
        );
        let refresh = RefreshKeys::new(config.jwt_secret.expose().as_bytes());
        let devices = auth::device::DeviceKeys::new(config.jwt_secret.expose().as_bytes());
        Ok(App {
            state: Arc::new(AppState {
                router: http::router::Router::new(config.metrics_public),
                config,
                owners: db::owners::OwnerLookups::start(db::shared::Shared::new(
                    shared_pool,
                    db::shared::SHARED_CONNECTIONS,
                )),
                db: pool,
                hasher,
                tokens,
                refresh,
                devices,
                metrics,
                observer: std::sync::OnceLock::new(),
            }),
            database: located.description,
            metrics_listener: None,
        })
    }

    /// Serves `/metrics` on `listener` (bound to `METRICS_PORT`) alongside the public port,
    /// from [`run`] until its shutdown.
    pub fn serve_metrics_on(&mut self, listener: TcpListener) {
        self.metrics_listener = Some(listener);
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// `host:port/dbname` of the database in use (no credentials).
    pub fn database(&self) -> &str {
        &self.database
    }
}

/// Serves `listener` (and the metrics listener, if any) until `shutdown` completes, then
/// finishes in-flight requests (within `SHUTDOWN_GRACE_SECONDS`) and returns.
pub async fn run(listener: TcpListener, app: App, shutdown: impl Future<Output = ()>) {
    let App {
        state,
        metrics_listener,
        ..
    } = app;
    let maintenance = tokio::spawn(maintenance(Arc::clone(&state)));
    let (stop_metrics, metrics_stop) = tokio::sync::oneshot::channel::<()>();
    let metrics = metrics_listener.map(|l| {
        tokio::spawn(http::serve(
            l,
            Arc::clone(&state),
            http::Port::Metrics,
            handlers::dispatch,
            async {
                let _ = metrics_stop.await;
            },
        ))
    });
    http::serve(
        listener,
        state,
        http::Port::Public,
        handlers::dispatch,
        shutdown,
    )
    .await;
    let _ = stop_metrics.send(());
    if let Some(task) = metrics {
        let _ = task.await;
    }
    maintenance.abort();
}

/// Locates the database and applies pending migrations; the `migrate` command.
pub async fn migrate(config: &Config) -> anyhow::Result<Vec<i64>> {
    let located = db::locate::locate(config).await?;
    let tls = db::tls::connector(config.db_ssl_root_cert.as_deref())?;
    apply_migrations(&located.config, &tls, config.db_startup_timeout).await
}

async fn apply_migrations(
    pg: &tokio_postgres::Config,
    tls: &db::tls::Tls,
    wait: Duration,
) -> anyhow::Result<Vec<i64>> {
    let mut client = connect_with_retry(pg, tls, wait).await?;
    let applied = db::migrate::run(&mut client).await?;
    if !applied.is_empty() {
        tracing::info!(?applied, "applied migrations");
    }
    Ok(applied)
}

/// Connects, retrying with backoff for up to `wait` (`DB_STARTUP_TIMEOUT_SECONDS`) while
/// the database is unreachable, silent, or says it is starting up. Errors that waiting
/// cannot fix (bad password, unknown database) are final at once.
async fn connect_with_retry(
    pg: &tokio_postgres::Config,
    tls: &db::tls::Tls,
    wait: Duration,
) -> anyhow::Result<tokio_postgres::Client> {
    let deadline = Instant::now() + wait;
    let mut delay = Duration::from_millis(250);
    let mut attempt = pg.clone();
    if pg.get_connect_timeout().is_none() {
        attempt.connect_timeout(STARTUP_ATTEMPT_TIMEOUT);
    }
    let describe = || db::locate::describe(pg);
    loop {
        let e = match tokio::time::timeout(STARTUP_ATTEMPT_TIMEOUT, attempt.connect(tls.clone()))
            .await
        {
            Ok(Ok((client, conn))) => {
                tokio::spawn(conn);
                return Ok(client);
            }
            // A certificate that does not verify is transient-looking (an I/O error) but
            // waiting will not fix it.
            Ok(Err(e)) if errors::is_transient(&e) && !db::tls::is_tls_failure(&e) => {
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

async fn maintenance(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(MAINTENANCE_EVERY);
    for n in 0u64.. {
        tick.tick().await;
        db::trim_overflow(&state.db, state.config.db_pool_size, MAINTENANCE_EVERY);
        if n % 20 == 0 {
            match db::sessions::prune(&state.db).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "pruned ended sessions"),
                Err(e) => tracing::warn!(error = %e, "pruning sessions failed"),
            }
            match db::events::prune(&state.db, state.config.event_retention).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "pruned old security events"),
                Err(e) => tracing::warn!(error = %e, "pruning security events failed"),
            }
        }
        // Counters of ended windows are dead weight: drop them about once a minute.
        if n % 2 == 0 {
            let window = state.config.rate_limits.window;
            if let Err(e) = db::limits::prune(&state.db, window).await {
                tracing::warn!(error = %e, "pruning rate-limit counters failed");
            }
        }
    }
}
